"""Toolchains, bundle building and the host binding."""

from faustgen.backend.bundle import BuildOptions, BuildResult, build_bundle
from faustgen.backend.host import CompiledModel
from faustgen.backend.toolchain import Target, load_target, target_names

__all__ = [
    "BuildOptions",
    "BuildResult",
    "CompiledModel",
    "Target",
    "build_bundle",
    "load_target",
    "target_names",
]
