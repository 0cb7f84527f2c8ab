"""Model importers (ONNX today)."""

from faustgen.frontend.onnx_import import import_model, import_onnx
from faustgen.frontend.onnx_model import load_model

__all__ = ["import_model", "import_onnx", "load_model"]
