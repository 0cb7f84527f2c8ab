"""Toolchains, bundle writing, the cffi binding and emulator runs: what happens to generated C.

The backend never imports the frontend or the passes; the driver (faustgen.compiler) hands
it the rendered files.
"""

from faustgen.backend.bundle import check_out_dir, write_bundle
from faustgen.backend.host import CompiledModel
from faustgen.backend.toolchain import Target, load_target, target_names

__all__ = [
    "CompiledModel",
    "Target",
    "check_out_dir",
    "load_target",
    "target_names",
    "write_bundle",
]
