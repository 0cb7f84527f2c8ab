"""faustgen: compile ONNX neural networks to small, fast, dependency-free C."""

from __future__ import annotations

import os

__version__ = "0.1.0"


def compile_onnx(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    target: str = "host",
    dense: bool = True,
    name: str = "model",
    **options,
):
    """Build `path` into `out_dir` and return a CompiledModel whose .predict(x) runs the C.

    Extra keyword options are those of faustgen.backend.BuildOptions (input_shape, ...).
    """
    from faustgen.backend import BuildOptions, CompiledModel, build_bundle

    command = (
        f"faustgen.compile_onnx({os.path.basename(os.fspath(path))!r}, target={target!r}, "
        f"dense={dense!r}, name={name!r})"
    )
    opts = BuildOptions(target=target, dense=dense, prefix=name, command=command, **options)
    result = build_bundle(path, out_dir, opts)
    return CompiledModel(result.out_dir)


__all__ = ["__version__", "compile_onnx"]
