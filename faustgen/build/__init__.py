"""Toolchains, bundle building and the host binding."""

from faustgen.build.bundle import BuildOptions, BuildResult, build_bundle
from faustgen.build.host import CompiledModel
from faustgen.build.toolchain import Target, load_target, target_names

__all__ = [
    "BuildOptions",
    "BuildResult",
    "CompiledModel",
    "Target",
    "build_bundle",
    "load_target",
    "target_names",
]
