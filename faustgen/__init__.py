"""faustgen: compile ONNX neural networks to small, fast, dependency-free C."""

from faustgen.backend import CompiledModel
from faustgen.compiler import compile_onnx
from faustgen.demo import zoo
from faustgen.version import __version__

__all__ = ["CompiledModel", "__version__", "compile_onnx", "zoo"]
