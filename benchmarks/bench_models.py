"""Generated C vs onnxruntime at batch 1, one thread, on the models of ../shared/BENCHMARKS.md.

Rows: MLP 784-300-100-10, LeNet-5 (28x28) and a single 1024x1024 fully connected layer.
Columns: onnxruntime (1 thread), faustgen dense C for the `host` target (-O3 -march=native),
dense C for the portable `x86_64` target (-O3, SSE2), and factorized C (RCG 4 for the
networks, RCG 8 for the 1024 layer, 16x1 block-sparse factors). Every contender is timed
through its Python API in the same loop, rounds interleaved; also the time inside the C
harness (no Python call overhead).

    .venv/bin/python benchmarks/bench_models.py [--repeat 300] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_fc_layer import fc_model

from faustgen import zoo
from faustgen.backend import CompiledModel
from faustgen.compiler import BuildOptions, build_bundle
from faustgen.tune.bench import interleaved, ort_runner


def trained_like_weights(model, seed: int = 0) -> None:
    """Give every Linear layer a trained-like spectrum (what factorizes as trained layers do)."""
    import torch
    from make_fc_layer import trained_like

    with torch.no_grad():
        for i, layer in enumerate(m for m in model.modules() if isinstance(m, torch.nn.Linear)):
            w = trained_like(*layer.weight.shape, seed + i)
            layer.weight.copy_(torch.from_numpy(w))


def models(tmp: Path) -> list[tuple[str, Path, float]]:
    import onnx

    x = np.zeros((1, 1, 28, 28), np.float32)
    mlp = zoo.mlp()
    trained_like_weights(mlp)
    lenet = zoo.lenet5()
    trained_like_weights(lenet)
    zoo.randomize_batchnorm(lenet)
    onnx.save(fc_model(1024, 1024), tmp / "fc1024.onnx")
    return [
        ("MLP 784-300-100-10", zoo.export(mlp, x, tmp / "mlp.onnx"), 4.0),
        ("LeNet-5", zoo.export(lenet, x, tmp / "lenet.onnx"), 4.0),
        ("FC 1024x1024", tmp / "fc1024.onnx", 8.0),
    ]


def bench(repeat: int, rounds: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="faustgen-bench-") as t:
        tmp = Path(t)
        for name, path, rcg in models(tmp):
            builds = {
                "dense C (host)": BuildOptions(dense=True),
                "dense C (x86_64)": BuildOptions(dense=True, target="x86_64"),
                f"factorized C, RCG {rcg:g}": BuildOptions(dense=False, rcg=rcg),
            }
            compiled = {
                k: CompiledModel(build_bundle(path, tmp / f"{path.stem}{i}", o).out_dir)
                for i, (k, o) in enumerate(builds.items())
            }
            first = next(iter(compiled.values()))
            x = (
                np.random.default_rng(0)
                .standard_normal((1, *first.input_shape[1:]))
                .astype(np.float32)
            )
            contenders = {
                "onnxruntime": ort_runner(path, x, first.input_shape, first.batch_symbolic)
            }
            contenders |= {k: (lambda c=c, x=x: c.predict(x)) for k, c in compiled.items()}
            times = interleaved(contenders, repeat=repeat, rounds=rounds)
            in_c = {k: c.run_timed(x, repeat * rounds) for k, c in compiled.items()}
            fact = list(compiled.values())[-1]
            rows.append(
                {"model": name, "us": times, "us_in_c": in_c, "rcg": fact.report["totals"]["rcg"]}
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rows = bench(a.repeat, a.rounds)
    if a.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        ort = r["us"]["onnxruntime"]
        print(f"\n{r['model']} (batch 1, one thread; factorized model RCG {r['rcg']:.2f})")
        print(f"  {'':28} {'µs, Python loop':>16} {'× ORT':>7} {'µs inside C':>12}")
        for k, v in r["us"].items():
            c = r["us_in_c"].get(k)
            print(f"  {k:28} {v:16.1f} {v / ort:7.2f} {'' if c is None else f'{c:.1f}':>12}")


if __name__ == "__main__":
    main()
