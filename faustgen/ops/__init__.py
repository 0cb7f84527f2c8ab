"""Op registry: one module per op family, each op a small class registered by ONNX op type.

An op class answers four questions (see `_template.py` to add one):
  parse   ONNX attributes (any opset from 6 up) -> canonical attributes,
  infer   input tensors -> output shapes and dtypes,
  compute numpy reference semantics (used to fold constants and in tests),
  lower   emit kernel calls through the code generator's Emitter.

Internal ops produced by passes (Dense, ...) are registered the same way, with
`onnx=False` so the frontend does not accept them from a model file.
"""

from __future__ import annotations

# Importing the families registers their ops.
from faustgen.ops import (  # noqa: F401  (import for registration side effects)
    activation,
    binary,
    conv,
    einsum,
    factorized,
    gemm,
    logical,
    movement,
    norm,
    pad,
    pool,
    recurrent,
    reduce,
    softmax,
    tensor,
    tile,
    view,
)
from faustgen.ops.base import (
    REGISTRY,
    Op,
    ParseContext,
    TorchContext,
    register_op,
    supported_onnx_ops,
)

__all__ = ["REGISTRY", "Op", "ParseContext", "TorchContext", "register_op", "supported_onnx_ops"]
