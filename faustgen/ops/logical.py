"""Comparisons (Equal, Less, LessOrEqual, Greater, GreaterOrEqual), Boolean logic (Not,
And, Or, Xor), Where, and CastLike.

Exporters write these into the shape sub-graphs of transformers (e.g. TorchScript's
`Expand` of a dynamic shape: Equal -> Where), where the frontend folds them, and ONNX
function bodies use them on activations (Clip, LeakyRelu, Celu expanded). In the C code
a Boolean activation is stored as floats 0 / 1 (nonzero counts as true), so the
comparisons and logic are more fg_binary operations and Where one fg_where call.
"""

from __future__ import annotations

import numpy as np

from faustgen.ops.base import Op, broadcast_shapes, register_op
from faustgen.ops.binary import emit_binary
from faustgen.ops.movement import collapse, contiguous_strides
from faustgen.ops.tensor import Cast

_COMPARE = {
    "Equal": np.equal,
    "Less": np.less,
    "LessOrEqual": np.less_equal,
    "Greater": np.greater,
    "GreaterOrEqual": np.greater_equal,
}
_LOGIC = {"And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor}
_KERNEL_OP = {
    "Equal": "FG_EQUAL",
    "Less": "FG_LESS",
    "LessOrEqual": "FG_LESS_EQUAL",
    "Greater": "FG_GREATER",
    "GreaterOrEqual": "FG_GREATER_EQUAL",
    "And": "FG_AND",
    "Or": "FG_OR",
    "Xor": "FG_XOR",
}
_TORCH = {
    "Equal": "eq",
    "Less": "lt",
    "LessOrEqual": "le",
    "Greater": "gt",
    "GreaterOrEqual": "ge",
    "And": "logical_and",
    "Or": "logical_or",
    "Xor": "logical_xor",
}
_FLOAT_STORED = ("float32", "bool")  # dtypes whose activations the C code holds as floats


def _check_float_stored(node, em) -> None:
    for name in node.inputs:
        t = em.graph.tensors[name]
        if name and not t.is_const and t.dtype not in _FLOAT_STORED:
            em.fail(
                f"input '{name}' is a {t.dtype} activation; only float32 and bool are supported"
            )


@register_op(*_COMPARE, *_LOGIC)
class Compare(Op):
    def infer(self, node, ins):
        return [(broadcast_shapes(node, ins[0].shape, ins[1].shape), "bool")]

    def compute(self, node, ins):
        fn = _COMPARE.get(node.op) or _LOGIC[node.op]
        return [np.asarray(fn(ins[0], ins[1]), dtype=bool)]

    def compute_torch(self, node, ins, t):
        return [getattr(t.torch, _TORCH[node.op])(ins[0], ins[1])]

    def lower(self, node, em):
        _check_float_stored(node, em)
        emit_binary(em, _KERNEL_OP[node.op], 0, em.shape_in(0), 1, em.shape_in(1))


@register_op("Not")
class Not(Op):
    def infer(self, node, ins):
        return [(ins[0].shape, "bool")]

    def compute(self, node, ins):
        return [np.logical_not(ins[0])]

    def compute_torch(self, node, ins, t):
        return [t.torch.logical_not(ins[0])]

    def lower(self, node, em):
        _check_float_stored(node, em)
        zero = em.weight(np.zeros(1, np.float32), "zero")
        emit_binary(em, "FG_EQUAL", 0, em.shape_in(0), zero, (1,))


@register_op("Where")
class Where(Op):
    def infer(self, node, ins):
        shape = broadcast_shapes(node, *(t.shape for t in ins))
        return [(shape, ins[1].dtype)]

    def compute(self, node, ins):
        cond, a, b = ins
        return [np.where(cond.astype(bool), a, b).astype(np.result_type(a, b))]

    def compute_torch(self, node, ins, t):
        return [t.torch.where(ins[0].bool(), ins[1], ins[2])]

    def lower(self, node, em):
        _check_float_stored(node, em)
        out = em.shape_out()
        strides = []
        for i in range(3):
            shape = (1,) * (len(out) - len(em.shape_in(i))) + tuple(em.shape_in(i))
            st = contiguous_strides(shape)
            strides.append([0 if d == 1 else s for d, s in zip(shape, st, strict=True)])
        shape, (sc, sa, sb) = collapse(list(out), *strides)
        if len(shape) > 8:
            em.fail(f"broadcast over {len(shape)} axes after merging; at most 8 are supported")
        p = em.struct("fg_bcast3", "where", ndim=len(shape), shape=shape, sc=sc, sa=sa, sb=sb)
        em.call("fg_where", p, em.x(0), em.x(1), em.x(2), em.y())


@register_op("CastLike")
class CastLike(Cast):
    """Cast to the dtype of the second input."""

    def parse(self, ctx):
        target = ctx.graph.tensors[ctx.input(1)].dtype
        return ctx.node({"to": target}, inputs=[ctx.input(0)], op="Cast")
