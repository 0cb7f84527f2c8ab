"""Generated C vs onnxruntime at batch 1, one thread, on the models of ../shared/BENCHMARKS.md.

Demo rows (--models demo): MLP 784-300-100-10, LeNet-5 (28x28) and a single 1024x1024
fully connected layer. Columns: onnxruntime (1 thread), faustgen dense C for the `host`
target (-O3 -march=native), dense C for the portable `x86_64` target (-O3, SSE2), and
factorized C (RCG 4 for the networks, RCG 8 for the 1024 layer, 16x1 block-sparse
factors). Every contender is timed through its Python API in the same loop, rounds
interleaved; also the time inside the C harness (no Python call overhead).

CNN rows (--models cnn): torchvision resnet18, mobilenet_v2, efficientnet_b0 and
squeezenet1_1 at 1x3x224x224 (random weights, BatchNorm statistics randomized),
onnxruntime against dense C for `host`, interleaved as above, both as wall time and as
the calling thread's CPU time (time.thread_time: on a shared machine the time other
processes take is left out). benchmarks/bench_conv_layers.py gives the per-layer table.

    .venv/bin/python benchmarks/bench_models.py [--models demo,cnn] [--repeat 300] [--json]
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
            contenders = {"onnxruntime": ort_runner(path, x, first.layout)}
            contenders |= {k: (lambda c=c, x=x: c.predict(x)) for k, c in compiled.items()}
            times = interleaved(contenders, repeat=repeat, rounds=rounds)
            in_c = {k: c.run_timed(x, repeat * rounds) for k, c in compiled.items()}
            fact = list(compiled.values())[-1]
            rows.append(
                {"model": name, "us": times, "us_in_c": in_c, "rcg": fact.report["totals"]["rcg"]}
            )
    return rows


CNNS = ["resnet18", "mobilenet_v2", "efficientnet_b0", "squeezenet1_1"]


def bench_cnn(names: list[str], repeat: int, rounds: int) -> list[dict]:
    import time

    from bench_conv_layers import cnn_onnx

    rows = []
    with tempfile.TemporaryDirectory(prefix="faustgen-bench-") as t:
        tmp = Path(t)
        for name in names:
            path, x = cnn_onnx(name, tmp)
            c = CompiledModel(build_bundle(path, tmp / name, BuildOptions(dense=True)).out_dir)
            contenders = {
                "onnxruntime": ort_runner(path, x, c.layout),
                "dense C (host)": lambda c=c, x=x: c.predict(x),
            }
            wall = interleaved(contenders, repeat=repeat, rounds=rounds, warmup=3)
            cpu = interleaved(
                contenders, repeat=repeat, rounds=rounds, clock=time.thread_time, warmup=3
            )
            rows.append({"model": name, "us": wall, "cpu_us": cpu})
    return rows


def print_cnn(rows: list[dict]) -> None:
    cols = ["model", "onnxruntime ms", "dense C ms", "× ORT", "ORT CPU ms", "dense C CPU ms"]
    print("\n| " + " | ".join([*cols, "× ORT (CPU)"]) + " |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        o, d = r["us"]["onnxruntime"], r["us"]["dense C (host)"]
        oc, dc = r["cpu_us"]["onnxruntime"], r["cpu_us"]["dense C (host)"]
        print(
            f"| {r['model']} | {o / 1e3:.2f} | {d / 1e3:.2f} | {d / o:.2f} | "
            f"{oc / 1e3:.2f} | {dc / 1e3:.2f} | {dc / oc:.2f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--models", default="demo", help="demo, cnn or demo,cnn")
    ap.add_argument("--cnn-repeat", type=int, default=20)
    ap.add_argument("--cnns", default=",".join(CNNS))
    a = ap.parse_args()
    which = a.models.split(",")
    rows = bench(a.repeat, a.rounds) if "demo" in which else []
    cnn = bench_cnn(a.cnns.split(","), a.cnn_repeat, a.rounds) if "cnn" in which else []
    if a.json:
        print(json.dumps({"demo": rows, "cnn": cnn}, indent=2))
        return
    if cnn:
        print_cnn(cnn)
    for r in rows:
        ort = r["us"]["onnxruntime"]
        print(f"\n{r['model']} (batch 1, one thread; factorized model RCG {r['rcg']:.2f})")
        print(f"  {'':28} {'µs, Python loop':>16} {'× ORT':>7} {'µs inside C':>12}")
        for k, v in r["us"].items():
            c = r["us_in_c"].get(k)
            print(f"  {k:28} {v:16.1f} {v / ort:7.2f} {'' if c is None else f'{c:.1f}':>12}")


if __name__ == "__main__":
    main()
