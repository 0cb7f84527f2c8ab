"""`make zoo`: the model zoo at full size (random weights), both exporters, each built dense
by faustgen and compared with onnxruntime: build time, weight size, max error (relative to
the largest output, in ulp of it, and the largest elementwise ulp distance). With --rcg R,
factorized builds instead, judged against the float64 evaluation of their own factors'
product. With --emx, the peer
emx-onnx-cgen's own `verify` (its C against onnxruntime, its max ULP verdict) on the same
exported file, side by side.

    python benchmarks/bench_zoo.py [--models NAME ...] [--exporters torchscript dynamo]
                                   [--emx /path/to/scratch/venv/bin/emx-onnx-cgen] [--rcg 4]
                                   [--fixed-batch]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from faustgen import compile_onnx, zoo
from faustgen.backend import CompiledModel
from faustgen.compiler import BuildOptions, build_bundle
from faustgen.tune.reference import compare, ort_predict, ort_session
from faustgen.tune.verify import judge_factorized


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
            [
                emx,
                "verify",
                str(path),
                "--model-base-dir",
                str(path.parent),
                "--temp-dir-root",
                str(tmp),
            ],
            capture_output=True,
            text=True,
            timeout=3600,
            cwd=path.parent,  # it finds external weight data (dynamo exports) only from there
        )
    except subprocess.TimeoutExpired:
        return "timeout"
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    result = [ln for ln in lines if ln.startswith("Result:")]
    return (result or lines or ["no output"])[-1][:90]


def _ulps(err: float, ref) -> float:
    """err in float32 ulps of the largest |ref|."""
    refs = ref if isinstance(ref, list) else [ref]
    scale = max(max(float(np.max(np.abs(r))) for r in refs), 1e-30)
    return err / float(np.spacing(np.float32(scale)))


def _elem_ulps(y, ref) -> int:
    """Max over elements of the float32 ulp distance (ordered bit patterns), elements within
    one machine epsilon (absolute) counting 0: the measure emx-onnx-cgen's verify reports
    (its --atol-eps 1 default)."""
    ys, refs = (v if isinstance(v, list) else [v] for v in (y, ref))
    worst = 0
    for a, b in zip(ys, refs, strict=True):
        ia, ib = (
            np.where(v < 0, np.int64(-(2**31)) - v, v)
            for v in (
                np.ascontiguousarray(a, np.float32).view(np.int32).astype(np.int64),
                np.ascontiguousarray(b, np.float32).view(np.int32).astype(np.int64),
            )
        )
        d = np.abs(ia - ib)
        d[np.abs(a.astype(np.float64) - b) <= np.finfo(np.float32).eps] = 0
        worst = max(worst, int(np.max(d)) if d.size else 0)
    return worst


def _dense_row(path: Path, xs, tmp: Path, emx: str | None) -> str:
    t0 = time.perf_counter()
    c = compile_onnx(path, tmp / "out", dense=True)
    build = time.perf_counter() - t0
    ref = ort_predict(ort_session(path), xs, c.layout)
    y = c.predict(*xs)
    cmp = compare(y, ref)
    mb = c.report["totals"]["weight_bytes"] / 1e6
    peer = _emx(emx, path, tmp) if emx else ""
    return (
        f"{build:8.1f} {mb:10.2f} {cmp['max_rel']:11.2e} {_ulps(cmp['max_abs'], ref):9.1f} "
        f"{_elem_ulps(y, ref):9d}  {peer}"
    )


def _factorized_row(path: Path, xs, tmp: Path, rcg: float) -> str:
    """A factorized build judged against the float64 evaluation of its own factors."""
    t0 = time.perf_counter()
    res = build_bundle(path, tmp / "out", BuildOptions(dense=False, rcg=rcg))
    build = time.perf_counter() - t0
    c = CompiledModel(res.out_dir)
    v = judge_factorized(str(path), res.graph, xs if len(xs) > 1 else xs[0], c.predict(*xs))
    o = v.outputs[0]
    t = res.report["totals"]
    layers = sum(
        bool((lay.get("factorization") or {}).get("factorized")) for lay in res.report["layers"]
    )
    return (
        f"{build:8.1f} {t['weight_bytes'] / 1e6:10.2f} {t['rcg']:6.2f} {layers:6d}  "
        f"C {o.ulps(o.c_error):.1f} ulp, onnxruntime (dense) {o.ulps(o.ort_error):.1f} ulp: "
        f"{'ok' if v.ok else 'FAILED'}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+")
    ap.add_argument("--exporters", nargs="+", default=["torchscript", "dynamo"])
    ap.add_argument("--emx", help="emx-onnx-cgen executable (a scratch venv; never a dependency)")
    ap.add_argument(
        "--rcg", type=float, help="factorized builds at this RCG, judged against their factors"
    )
    ap.add_argument(
        "--fixed-batch", action="store_true", help="export every model with a batch of 1"
    )
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    models = _models(rng)
    if args.rcg:
        tail = f"{'RCG':>6} {'layers':>6}  C vs float64 of its factors' product"
    else:
        tail = (
            f"{'max rel err':>11} {'ulp@max':>9} {'max ULP':>9}  "
            f"{'emx-onnx-cgen verify' if args.emx else ''}"
        )
    print(f"{'model':24} {'exporter':11} {'build s':>8} {'weights MB':>10} {tail}")
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
                        dynamic_batch=dynamic and not args.fixed_batch,
                    )
                    if args.rcg:
                        row = _factorized_row(path, xs, Path(tmp), args.rcg)
                    else:
                        row = _dense_row(path, xs, Path(tmp), args.emx)
                    print(f"{name:24} {exporter:11} {row}", flush=True)
                except Exception as e:  # one failing model must not hide the others
                    print(f"{name:24} {exporter:11} failed: {str(e).splitlines()[0][:80]}")


if __name__ == "__main__":
    main()
