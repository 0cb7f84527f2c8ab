"""`make zoo`: the model zoo at full size (random weights), both exporters, each built dense
by faustgen and compared with onnxruntime: build time, bundle size, max error.

    python benchmarks/bench_zoo.py [--models NAME ...] [--exporters torchscript dynamo]
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+")
    ap.add_argument("--exporters", nargs="+", default=["torchscript", "dynamo"])
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    models = _models(rng)
    print(f"{'model':24} {'exporter':11} {'build s':>8} {'weights MB':>10} {'max rel err':>11}")
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
                    ref = ort_predict(ort_session(path), xs, c.input_shape, c.batch_symbolic)
                    err = compare(y, ref)["max_rel"]
                    mb = c.report["totals"]["weight_bytes"] / 1e6
                    print(
                        f"{name:24} {exporter:11} {build:8.1f} {mb:10.2f} {err:11.2e}", flush=True
                    )
                except Exception as e:  # one failing model must not hide the others
                    print(f"{name:24} {exporter:11} failed: {str(e).splitlines()[0][:80]}")


if __name__ == "__main__":
    main()
