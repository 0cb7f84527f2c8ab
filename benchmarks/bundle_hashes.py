"""Hash every generated C/H file of a fixed set of builds, to prove a refactoring left the
generated code byte-identical.

    python benchmarks/bundle_hashes.py > before.txt   # on the old tree
    python benchmarks/bundle_hashes.py > after.txt    # on the new tree
    diff before.txt after.txt                          # empty: byte-identical

The builds: the demo models (MLP and LeNet-5 from faustgen.zoo, seeded, exported with
zoo.export with and without dynamo) dense, factorized at the CLI defaults, with --rcg (convs
too), unstructured, and fine-tuned on seeded calibration inputs; and every ONNX operator case
(onnx.backend.test.case.node) faustgen supports, dense. Builds go through the CLI
(`faustgen build --no-compile`), the interface that stays put when modules move.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from faustgen import zoo
from faustgen.cli import main as faustgen_main
from faustgen.ops import supported_onnx_ops

# (label, extra build flags); "{calib}" is replaced by the calibration file.
VARIANTS = (
    ("dense", ["--dense"]),
    ("fact-default", []),
    ("fact-rcg4", ["--rcg", "4"]),
    ("fact-unstructured", ["--rcg", "3", "--unstructured"]),
    ("fact-maxerr", ["--max-error", "0.3", "--factors", "2"]),
    ("fact-finetune", ["--calib", "{calib}", "--finetune", "1"]),
)


def digest(out: Path) -> list[str]:
    """Hashes of the generated files (the runtime kernels, fg_*, are copied verbatim from
    runtime_c/ and left out: they are hand-written, not generated)."""
    return [
        f"{p.name} {hashlib.sha256(p.read_bytes()).hexdigest()[:16]}"
        for p in sorted(out.iterdir())
        if (p.suffix in (".c", ".h") or p.name == "Makefile") and not p.name.startswith("fg_")
    ]


def build(model: Path, out: Path, flags: list[str]) -> list[str]:
    """Build from inside the model's folder with relative paths: the command line is
    recorded in the generated files' header, so it must not name the temporary folder."""
    argv = ["build", model.name, "-o", out.name, "--no-compile", *flags]
    err = io.StringIO()
    saved = sys.argv, os.getcwd()
    sys.argv = ["faustgen", *argv]
    os.chdir(model.parent)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            code = faustgen_main(argv)
    finally:
        sys.argv = saved[0]
        os.chdir(saved[1])
    if code != 0:
        return [f"exit {code}: {err.getvalue().strip()}"]
    return digest(out)


def demo_models(tmp: Path) -> list[tuple[str, Path, Path]]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    calib = tmp / "calib.npy"
    np.save(calib, x)
    models = []
    for name, net in (("mlp", zoo.mlp()), ("lenet5", zoo.lenet5())):
        if name == "lenet5":
            zoo.randomize_batchnorm(net)
        for dynamo in (False, True):
            path = tmp / f"{name}-{'dynamo' if dynamo else 'ts'}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                zoo.export(net, x[:1], path, dynamo=dynamo)
            models.append((path.stem, path, calib))
    return models


def operator_cases(tmp: Path, every: int) -> list[tuple[str, Path]]:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    supported = set(supported_onnx_ops())
    picked = []
    for c in sorted(cases, key=lambda c: c.name):
        ops = {n.op_type for n in c.model.graph.node}
        if not ops or not ops <= supported or not c.data_sets:
            continue
        inputs, _ = c.data_sets[0]
        if not inputs or not isinstance(inputs[0], np.ndarray) or inputs[0].dtype != np.float32:
            continue
        picked.append(c)
    out = []
    for c in picked[::every]:
        model = onnx.ModelProto()
        model.CopyFrom(c.model)
        g = model.graph
        inputs, _ = c.data_sets[0]
        for vi, value in zip(list(g.input)[1:], inputs[1:], strict=False):
            g.initializer.append(numpy_helper.from_array(np.asarray(value), vi.name))
        del g.input[1:]
        path = tmp / f"{c.name}.onnx"
        onnx.save(model, path)
        out.append((c.name, path))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=int, default=1, help="build every N-th operator case")
    ap.add_argument("--no-cases", action="store_true", help="demo models only")
    ap.add_argument(
        "--only", default="", help="demo builds whose MODEL/VARIANT contains one of these (a,b)"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for stem, path, calib in demo_models(tmp):
            for label, flags in VARIANTS:
                if not any(o in f"{stem}/{label}" for o in args.only.split(",")):
                    continue
                flags = [f.replace("{calib}", calib.name) for f in flags]
                for line in build(path, tmp / "out", flags):
                    print(f"{stem}/{label} {line}", flush=True)
        if not args.no_cases:
            for name, path in operator_cases(tmp, args.every):
                for line in build(path, tmp / "out", ["--dense"]):
                    print(f"case/{name} {line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
