"""The main job: train small seeded models on data shipped on the machine, export them to
ONNX, compile them to C dense and factorized, verify the C against PyTorch and
onnxruntime, time everything side by side, and print one table.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from faustgen.backend import CompiledModel, load_target
from faustgen.compiler import BuildOptions, BuildResult, build_bundle, build_graph
from faustgen.demo import zoo
from faustgen.demo.datasets import default_dataset
from faustgen.demo.experiment import METHODS, Settings, run_experiment
from faustgen.demo.experiment import print_table as print_experiment
from faustgen.demo.train import accuracy, train
from faustgen.errors import FaustgenError
from faustgen.tune.bench import interleaved, ort_runner, torch_runner
from faustgen.tune.interpret import run_batch
from faustgen.tune.reference import compare, ort_predict, ort_session


@dataclass
class Row:
    model: str
    build: str
    accuracy: float
    params: int
    rcg: float
    check: str  # what the C output was verified against, and the error
    us: float = float("nan")
    ort_us: float = float("nan")
    torch_us: float = float("nan")


def say(text: str = "") -> None:
    print(text, file=sys.stdout, flush=True)


def run_demo(
    out_dir: str | Path = "demo_out",
    epochs: int | None = None,
    quick: bool = False,
    progress: bool = True,
    rcgs: tuple[float, ...] = (4.0, 8.0),
    experiment_rcgs: tuple[float, ...] = (8.0,),
    models: tuple[str, ...] = ("mlp", "lenet5"),
) -> list[Row]:
    import torch

    torch.set_num_threads(2)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = default_dataset()
    if quick:
        data.x_train, data.y_train = data.x_train[:3000], data.y_train[:3000]
        data.x_test, data.y_test = data.x_test[:1000], data.y_test[:1000]
    # Fine-tuning distills the dense model's outputs and needs no labels: it uses every
    # training image (more inputs beat more epochs); the reported output errors are
    # measured on 1000 of them (calibrate.MAX_SAMPLES).
    calib = data.x_train[:1000] if quick else data.x_train
    say(
        f"data: {data.name}, {len(data.x_train)} training / {len(data.x_test)} test images; "
        f"calibration and fine-tuning: {len(calib)} training images (no labels)"
    )
    rows: list[Row] = []
    arm_rows: list[str] = []
    specs = (
        ("MLP 784-300-100-10", "mlp", zoo.mlp((784, 300, 100, data.classes)), 5),
        ("LeNet-5", "lenet5", zoo.lenet5(classes=data.classes), 4),
    )
    for name, slug, model, default_epochs in specs:
        if slug not in models:
            continue
        n_epochs = epochs if epochs is not None else (1 if quick else default_epochs)
        train(model, data, epochs=n_epochs, seed=0, progress=progress, desc=f"train {slug}")
        onnx_path = zoo.export(model, data.x_test[:1], out / f"{slug}.onnx")
        ref_torch = zoo.torch_predict(model, data.x_test)
        say(
            f"{name}: PyTorch test accuracy {accuracy(ref_torch, data.y_test):.4f} "
            f"after {n_epochs} epochs"
        )

        dense = CompiledModel(
            build_bundle(onnx_path, out / f"{slug}_dense", BuildOptions(dense=True)).out_dir
        )
        y = dense.predict(data.x_test)
        ref_ort = ort_predict(ort_session(onnx_path), data.x_test, dense.layout)
        err_t, err_o = compare(y, ref_torch)["max_rel"], compare(y, ref_ort)["max_rel"]
        if max(err_t, err_o) > 1e-5:
            raise FaustgenError(
                f"{name}: dense C differs from PyTorch/onnxruntime ({err_t:.2g} / {err_o:.2g})"
            )
        model_rows = [
            Row(
                name,
                "dense C",
                accuracy(y, data.y_test),
                dense.report["totals"]["parameters"],
                1.0,
                f"torch {err_t:.1e}, ORT {err_o:.1e}",
            )
        ]
        builds = {"dense C": dense}
        results: list[BuildResult] = []
        for rcg in rcgs:
            label = f"factorized RCG {rcg:g}"
            res = build_bundle(
                onnx_path,
                out / f"{slug}_rcg{rcg:g}",
                BuildOptions(
                    dense=False, rcg=rcg, calib=calib, finetune=0 if quick else 2, progress=progress
                ),
            )
            results.append(res)
            fact = CompiledModel(res.out_dir)
            y = fact.predict(data.x_test)
            # The C must equal the numpy product of its factors to float32 rounding.
            ref = run_batch(res.graph, data.x_test[:200])[res.graph.outputs[0]]
            err_f = compare(y[:200], ref.reshape(y[:200].shape))["max_rel"]
            if err_f > 1e-5:
                raise FaustgenError(
                    f"{name}: factorized C differs from its factor product ({err_f:.2g})"
                )
            comp = res.report["compression"]
            after = comp.get("calibration_after_finetune", comp["calibration"])
            model_rows.append(
                Row(
                    name,
                    label,
                    accuracy(y, data.y_test),
                    res.report["totals"]["parameters"],
                    res.report["totals"]["rcg"],
                    f"factors {err_f:.1e}, out.err {after['output_error']:.3f}",
                )
            )
            builds[label] = fact
        x1 = data.x_test[:1]
        contenders = {k: (lambda c=c, x=x1: c.predict(x)) for k, c in builds.items()}
        contenders["onnxruntime"] = ort_runner(onnx_path, x1, dense.layout)
        contenders["torch"] = torch_runner(model, x1)
        times = interleaved(contenders, repeat=100 if quick else 300, rounds=3)
        torch.set_num_threads(2)
        for r in model_rows:
            r.us, r.ort_us, r.torch_us = times[r.build], times["onnxruntime"], times["torch"]
        rows += model_rows
        arm_rows += _arm_check(results[0], out, slug, name, data.x_test[:50])
    print_table(rows, data.name)
    if arm_rows:
        say()
        say(
            "Raspberry Pi builds (factorized, cross-compiled, run under qemu-user; sizes of "
            "the harness from the target's `size`):"
        )
        for line in arm_rows:
            say("  " + line)
    if experiment_rcgs and "mlp" in models:
        say()
        say(
            "The seed's experiment on the MLP (`faustgen experiment`): data-aware sparse "
            "factors, magnitude pruning and truncated SVD at equal whole-model parameters "
            f"(RCG {', '.join(f'{r:g}' for r in experiment_rcgs)}), fitted on 1000 training "
            "images, no fine-tuning; accuracy of each C build on the test set:"
        )
        result = run_experiment(
            out / "mlp.onnx",
            data.x_test,
            data.y_test,
            data.x_train[:1000],
            out / "experiment",
            Settings(
                rcgs=experiment_rcgs,
                methods=METHODS,
                repeat=100 if quick else 200,
                progress=progress,
            ),
        )
        print_experiment(result)
    return rows


def _arm_check(host: BuildResult, out: Path, slug: str, name: str, x) -> list[str]:
    """The host's factorized graph (the same factors) cross-compiled for each Pi target."""
    lines = []
    for target in ("rpi64", "rpi"):
        t = load_target(target)
        if not t.can_run():
            lines.append(
                f"{name} [{target}]: skipped ({t.cc} or {t.emulator[0]} not installed;"
                f" {t.install_hint})"
            )
            continue
        res = build_graph(
            host.graph,
            out / f"{slug}_{target}",
            BuildOptions(target=target, dense=False),
            compression=host.report.get("compression"),
        )
        arm = CompiledModel(res.out_dir)
        ref = run_batch(res.graph, x)[res.graph.outputs[0]]
        err = compare(arm.predict(x), ref.reshape(len(x), -1))["max_rel"]
        s = res.report["target_sizes"] or {}
        lines.append(
            f"{name} [{target}]: max rel. error vs its factor product {err:.1e}; "
            f".text {s.get('.text', 0)} B, .rodata {s.get('.rodata', 0)} B, "
            f".bss {s.get('.bss', 0)} B (arena {res.report['totals']['arena_bytes']} B)"
        )
    return lines


def print_table(rows: list[Row], dataset: str) -> None:
    say()
    say(
        f"faustgen demo — {dataset}. Latency: batch 1, one thread, median µs of interleaved "
        "rounds, each through its Python API (C via cffi)"
    )
    head = (
        f"{'model':19} {'build':20} {'accuracy':>8} {'params':>7} {'RCG':>5} "
        f"{'C µs':>6} {'ORT µs':>7} {'torch µs':>8} {'C/ORT':>6}  verified against"
    )
    say(head)
    say("-" * len(head))
    for r in rows:
        say(
            f"{r.model:19} {r.build:20} {r.accuracy:8.4f} {r.params:7d} {r.rcg:5.2f} "
            f"{r.us:6.1f} {r.ort_us:7.1f} {r.torch_us:8.1f} {r.us / r.ort_us:6.2f}  {r.check}"
        )
    say(
        "accuracy: the C build on the test set. Factorized rows: a whole-model RCG split over "
        "the layers (convolutions included) by measured sensitivity, each layer fitted to its "
        "outputs on the calibration images as 16x1- or 8x1-block or unstructured sparse "
        "factors (the build's report names which), then fine-tuned on them; "
        "out.err = relative output error vs the dense model."
    )


def main_demo(args) -> int:
    run_demo(args.out, epochs=args.epochs, quick=args.quick, progress=not args.no_progress)
    return 0
