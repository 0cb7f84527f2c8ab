"""`faustgen bench MODEL.onnx`: latency of the generated dense C, the generated factorized C and
onnxruntime (one thread), measured side by side in one run."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from faustgen.backend import CompiledModel
from faustgen.compiler import BuildOptions, build_bundle
from faustgen.tune.bench import interleaved, ort_runner


def bench_model(
    model_path: str | Path,
    *,
    rcg: float | None = None,
    batch: int = 1,
    repeat: int = 200,
    rounds: int = 5,
    unstructured: bool = False,
    convs: bool | None = None,
    work_dir: str | Path | None = None,
) -> dict:
    with tempfile.TemporaryDirectory(prefix="faustgen-bench-") as tmp:
        root = Path(work_dir) if work_dir else Path(tmp)
        dense = CompiledModel(
            build_bundle(model_path, root / "dense", BuildOptions(dense=True)).out_dir
        )
        fact = CompiledModel(
            build_bundle(
                model_path,
                root / "factorized",
                BuildOptions(dense=False, rcg=rcg, unstructured=unstructured, convs=convs),
            ).out_dir
        )
        shape = dense.layout.example(batch)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        contenders = {
            "dense C": lambda: dense.predict(x),
            "factorized C": lambda: fact.predict(x),
            "onnxruntime": ort_runner(model_path, x, dense.layout),
        }
        times = interleaved(contenders, repeat=repeat, rounds=rounds)
        in_c = {
            "dense C": dense.run_timed(x, repeat * rounds),
            "factorized C": fact.run_timed(x, repeat * rounds),
        }
        t = fact.report["totals"]
        return {
            "model": Path(model_path).name,
            "batch": int(shape[0]),
            "rcg": t["rcg"],
            "parameters": {"dense": t["dense_parameters"], "factorized": t["parameters"]},
            "latency_us": times,
            "latency_in_c_us": in_c,
            "ratios": {
                "factorized / dense": times["factorized C"] / times["dense C"],
                "dense / onnxruntime": times["dense C"] / times["onnxruntime"],
                "factorized / onnxruntime": times["factorized C"] / times["onnxruntime"],
            },
            "layers": [
                (
                    lay["name"],
                    lay["factorization"].get("reason") or f"RCG {lay['factorization']['rcg']:.2f}",
                )
                for lay in fact.report["layers"]
                if "factorization" in lay
            ],
        }


def format_bench(r: dict) -> str:
    lines = [
        f"{r['model']}: batch {r['batch']}, one thread, median of interleaved rounds "
        f"(factorized RCG {r['rcg']:.2f}: {r['parameters']['factorized']} of "
        f"{r['parameters']['dense']} parameters)",
        f"{'':16} {'µs (Python loop)':>17} {'µs (inside C)':>14}",
    ]
    for k, v in r["latency_us"].items():
        c = r["latency_in_c_us"].get(k)
        lines.append(f"{k:16} {v:17.1f} {'' if c is None else f'{c:.1f}':>14}")
    lines.append("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in r["ratios"].items()))
    for name, what in r["layers"]:
        lines.append(f"  {name}: {what}")
    return "\n".join(lines)


def cmd_bench(args) -> int:
    r = bench_model(
        args.model,
        rcg=args.rcg,
        batch=args.batch,
        repeat=args.repeat,
        unstructured=args.unstructured,
        convs=args.convs,
    )
    print(json.dumps(r, indent=2) if args.json else format_bench(r))
    return 0
