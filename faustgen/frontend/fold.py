"""Fold a node whose inputs are all constants, whatever its op, with onnx.reference.

Exporters write constant sub-graphs with ops faustgen has no kernel for (TorchScript's
export of a ViT's `cls_token.expand` is Shape/ConstantOfShape/Equal/Where on constants):
their values are known at compile time, so the op needs no kernel, only an evaluator. The
ONNX package's reference evaluator runs one node at a time on numpy arrays; the outputs'
sizes are inferred (ONNX shape inference with the inputs' values) and checked against the
limit before anything is computed.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from faustgen.errors import FaustgenError

# Ops whose value is not a function of their inputs: baking one draw would be wrong.
NONDETERMINISTIC = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
}
_DATA_FOR_INFERENCE = 4096  # inputs up to this size are given to shape inference as data


def foldable(proto: onnx.NodeProto) -> bool:
    """Whether the reference evaluator may fold this node (given constant inputs)."""
    return (
        proto.domain in ("", "ai.onnx")
        and proto.op_type not in NONDETERMINISTIC
        and not any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            for a in proto.attribute
        )
    )


def fold_node(
    proto: onnx.NodeProto, inputs: dict[str, np.ndarray], opset: int, limit: int, where: str
) -> list[np.ndarray | None]:
    """The node's outputs (None for an unnamed one), computed by onnx.reference."""
    sizes = _inferred_sizes(proto, inputs, opset)
    if sizes is not None and sum(sizes) > limit:
        raise FaustgenError(
            f"{where}: folding this constant node would create {sum(sizes)} values, above the "
            f"--max-params limit of {limit}"
        )
    try:
        evaluator = ReferenceEvaluator(proto, opsets={"": opset})
        outs = evaluator.run(None, {k: v for k, v in inputs.items()})
    except MemoryError:
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise FaustgenError(
            f"{where}: its inputs are constants but the ONNX reference evaluator cannot fold "
            f"it ({type(e).__name__}: {first})"
        ) from None
    values: list[np.ndarray | None] = []
    for name, v in zip(proto.output, outs, strict=False):
        v = np.asarray(v)
        if v.dtype.kind == "f" and v.dtype != np.float32:
            v = v.astype(np.float32)  # as the importer stores float initializers
        values.append(v if name else None)
    total = sum(v.size for v in values if v is not None)
    if total > limit:  # shape inference could not tell beforehand
        raise FaustgenError(
            f"{where}: folding this constant node created {total} values, above the "
            f"--max-params limit of {limit}"
        )
    return values


def _inferred_sizes(
    proto: onnx.NodeProto, inputs: dict[str, np.ndarray], opset: int
) -> list[int] | None:
    """Element counts of the node's outputs from ONNX shape inference, None when unknown."""
    try:
        schema = onnx.defs.get_schema(proto.op_type, opset, proto.domain)
        types = {
            k: helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for k, v in inputs.items()
        }
        data = {
            k: numpy_helper.from_array(v, k)
            for k, v in inputs.items()
            if v.size <= _DATA_FOR_INFERENCE
        }
        out = onnx.shape_inference.infer_node_outputs(
            schema, proto, types, data, opset_imports=[helper.make_opsetid("", opset)]
        )
    except Exception:  # unknown op or inference failure: the evaluator decides
        return None
    sizes = []
    for name in proto.output:
        t = out.get(name)
        if not name:
            continue
        if t is None or not t.tensor_type.HasField("shape"):
            return None
        dims = t.tensor_type.shape.dim
        if not all(d.HasField("dim_value") for d in dims):
            return None
        sizes.append(math.prod(d.dim_value for d in dims))
    return sizes
