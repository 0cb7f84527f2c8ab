"""The main job: train small seeded models on data shipped on the machine, export them to
ONNX, compile them to C, verify the C against PyTorch and onnxruntime, and print one table.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from faustgen import compile_onnx, zoo
from faustgen.bench import interleaved, ort_runner, torch_runner
from faustgen.datasets import default_dataset
from faustgen.errors import FaustgenError
from faustgen.reference import compare, ort_predict, ort_session
from faustgen.train import accuracy, train


@dataclass
class Row:
    model: str
    build: str
    accuracy: float
    params: int
    rcg: float
    err_torch: float
    err_ort: float
    c_us: float
    ort_us: float
    torch_us: float


def run_demo(
    out_dir: str | Path = "demo_out",
    epochs: int | None = None,
    quick: bool = False,
    progress: bool = True,
) -> list[Row]:
    import torch

    torch.set_num_threads(2)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = default_dataset()
    if quick:
        data.x_train, data.y_train = data.x_train[:3000], data.y_train[:3000]
        data.x_test, data.y_test = data.x_test[:1000], data.y_test[:1000]
    n_epochs = epochs if epochs is not None else (1 if quick else 3)
    say(f"data: {data.name}, {len(data.x_train)} training / {len(data.x_test)} test images")

    rows: list[Row] = []
    for name, model in (
        ("MLP 784-300-100-10", zoo.mlp(classes_out(data))),
        ("LeNet-5", zoo.lenet5(classes=data.classes)),
    ):
        slug = name.split()[0].lower().replace("-", "")
        train(model, data, epochs=n_epochs, seed=0, progress=progress, desc=f"train {slug}")
        onnx_path = zoo.export(model, data.x_test[:1], out / f"{slug}.onnx")
        ref_torch = zoo.torch_predict(model, data.x_test)
        compiled = compile_onnx(onnx_path, out / f"{slug}_dense", dense=True)
        y = compiled.predict(data.x_test)
        sess = ort_session(onnx_path)
        ref_ort = ort_predict(sess, data.x_test, compiled.input_shape, compiled.batch_symbolic)
        err_t, err_o = compare(y, ref_torch)["max_rel"], compare(y, ref_ort)["max_rel"]
        if err_t > 1e-4:
            raise FaustgenError(f"{name}: C output differs from PyTorch (relative {err_t:.2g})")
        x1 = data.x_test[:1]
        times = interleaved(
            {
                "c": lambda c=compiled, x=x1: c.predict(x),
                "ort": ort_runner(onnx_path, x1, compiled.input_shape, compiled.batch_symbolic),
                "torch": torch_runner(model, x1),
            },
            repeat=100 if quick else 300,
            rounds=3,
        )
        rows.append(
            Row(
                name,
                "dense C",
                accuracy(y, data.y_test),
                compiled.report["totals"]["parameters"],
                1.0,
                err_t,
                err_o,
                times["c"],
                times["ort"],
                times["torch"],
            )
        )
        say(
            f"{name}: torch accuracy {accuracy(ref_torch, data.y_test):.4f}, "
            f"C accuracy {rows[-1].accuracy:.4f}"
        )
    print_table(rows, data.name)
    return rows


def classes_out(data) -> tuple[int, ...]:
    return (784, 300, 100, data.classes)


def print_table(rows: list[Row], dataset: str) -> None:
    say("")
    say(f"faustgen demo — {dataset}; latency: batch 1, one thread, median, measured side by side")
    head = (
        f"{'model':20} {'build':10} {'accuracy':>8} {'params':>8} {'RCG':>5} "
        f"{'err vs torch':>12} {'err vs ORT':>10} {'C µs':>8} {'ORT µs':>8} {'torch µs':>8} "
        f"{'C/ORT':>6}"
    )
    say(head)
    say("-" * len(head))
    for r in rows:
        say(
            f"{r.model:20} {r.build:10} {r.accuracy:8.4f} {r.params:8d} {r.rcg:5.1f} "
            f"{r.err_torch:12.2e} {r.err_ort:10.2e} {r.c_us:8.1f} {r.ort_us:8.1f} "
            f"{r.torch_us:8.1f} {r.c_us / r.ort_us:6.2f}"
        )
    say(
        "err: max |C - reference| / max |reference| over the test set; C µs timed through the "
        "Python binding (cffi), ORT and torch through their Python APIs, same loop"
    )


def say(text: str) -> None:
    print(text, file=sys.stdout, flush=True)


def main_demo(args) -> int:
    run_demo(args.out, epochs=args.epochs, quick=args.quick, progress=not args.no_progress)
    return 0
