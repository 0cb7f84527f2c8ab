"""`make zoo`: the model zoo at full size (random weights), both exporters, each built dense
by faustgen and compared with onnxruntime: build time, weight size, max error (relative to
the largest output, and in ulp of it). With --emx, the peer emx-onnx-cgen's own `verify`
(its C against onnxruntime, its max ULP verdict) on the same exported file, side by side.

    python benchmarks/bench_zoo.py [--models NAME ...] [--exporters torchscript dynamo]
                                   [--emx /path/to/scratch/venv/bin/emx-onnx-cgen]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from faustgen import compile_onnx, zoo
from faustgen.tune.reference import compare, ort_predict, ort_session


def _models(rng):
    tv = zoo.torchvision_models()
    img = rng.standard_normal((2, 3, 224, 224)).astype(np.float32)
    seq = rng.standard_normal((2, 49, 40)).astype(np.float32)  # 49 frames of 40 MFCCs
    pair = [rng.standard_normal((4, 128)).astype(np.float32) for _ in range(2)]
    ids = rng.integers(0, 1000, (4, 32)).astype(np.int64)
    return {
        "siamese_mlp": (lambda: zoo.siamese_mlp(128, 256), pair, True),
        "token_classifier": (lambda: zoo.token_classifier(1000, 64), ids, True),
        "kws_lstm": (lambda: zoo.keyword_spotter("lstm", 40, 128, 12), seq, False),
        "kws_gru": (lambda: zoo.keyword_spotter("gru", 40, 128, 12), seq, False),
        "vit_tiny_patch16_224": (
            lambda: zoo.vision_transformer("vit_tiny_patch16_224", 224),
            img,
            False,
        ),
        "deit_tiny_patch16_224": (
            lambda: zoo.vision_transformer("deit_tiny_patch16_224", 224),
            img,
            False,
        ),
        "convnext_tiny": (lambda: tv.convnext_tiny(num_classes=1000).eval(), img, True),
    }


def _emx(emx: str, path: Path, tmp: Path) -> str:
    """The peer's verdict on the same file: its `verify` line, or why it failed."""
    try:
        proc = subprocess.run(
            [emx, "verify", str(path), "--temp-dir-root", str(tmp)],
            capture_output=True,
            text=True,
            timeout=3600,
        )
    except subprocess.TimeoutExpired:
        return "timeout"
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    result = [ln for ln in lines if ln.startswith("Result:")]
    return (result or lines or ["no output"])[-1][:90]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+")
    ap.add_argument("--exporters", nargs="+", default=["torchscript", "dynamo"])
    ap.add_argument("--emx", help="emx-onnx-cgen executable (a scratch venv; never a dependency)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    models = _models(rng)
    print(
        f"{'model':24} {'exporter':11} {'build s':>8} {'weights MB':>10} {'max rel err':>11} "
        f"{'ulp@max':>9}  {'emx-onnx-cgen verify' if args.emx else ''}"
    )
    for name in args.models or models:
        make, x, dynamic = models[name]
        model = make()
        xs = x if isinstance(x, list) else [x]
        for exporter in args.exporters:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    path = zoo.export(
                        model,
                        tuple(v[:1] for v in xs),
                        Path(tmp) / "m.onnx",
                        dynamo=exporter == "dynamo",
                        dynamic_batch=dynamic,
                    )
                    t0 = time.perf_counter()
                    c = compile_onnx(path, Path(tmp) / "out", dense=True)
                    build = time.perf_counter() - t0
                    y = c.predict(*xs)
                    ref = ort_predict(ort_session(path), xs, c.layout)
                    cmp = compare(y, ref)
                    scale = max(
                        float(
                            np.max(
                                np.abs(
                                    np.concatenate(
                                        [
                                            r.reshape(-1)
                                            for r in (ref if isinstance(ref, list) else [ref])
                                        ]
                                    )
                                )
                            )
                        ),
                        1e-30,
                    )
                    ulp = cmp["max_abs"] / float(np.spacing(np.float32(scale)))
                    mb = c.report["totals"]["weight_bytes"] / 1e6
                    peer = _emx(args.emx, path, Path(tmp)) if args.emx else ""
                    print(
                        f"{name:24} {exporter:11} {build:8.1f} {mb:10.2f} {cmp['max_rel']:11.2e}"
                        f" {ulp:9.1f}  {peer}",
                        flush=True,
                    )
                except Exception as e:  # one failing model must not hide the others
                    print(f"{name:24} {exporter:11} failed: {str(e).splitlines()[0][:80]}")


if __name__ == "__main__":
    main()
