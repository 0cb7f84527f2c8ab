"""Elementwise binary and variadic ops with numpy broadcasting: Add, Sub, Mul, Div, Pow,
Max, Min, Sum, Mean, PRelu.

Opset < 7 wrote broadcasting explicitly (`broadcast=1`, `axis`): the parser turns
it into a view of the second operand that numpy broadcasting then handles.
"""

from __future__ import annotations

import numpy as np

from faustgen.ir import Node
from faustgen.ops.base import Op, ParseContext, broadcast_shapes, fail, register_op
from faustgen.ops.movement import collapse, contiguous_strides

_KERNEL_OP = {
    "Add": "FG_ADD",
    "Sub": "FG_SUB",
    "Mul": "FG_MUL",
    "Div": "FG_DIV",
    "Pow": "FG_POW",
    "Max": "FG_MAX",
    "Min": "FG_MIN",
    "PRelu": "FG_PRELU",
    "Sum": "FG_ADD",
    "Mean": "FG_ADD",
}


def _numpy(op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if op in ("Add", "Sum", "Mean"):
        return a + b
    if op == "Sub":
        return a - b
    if op == "Mul":
        return a * b
    if op == "Div":
        if np.issubdtype(a.dtype, np.integer):
            return np.trunc(a / b).astype(np.result_type(a, b))
        return a / b
    if op == "Pow":
        return np.power(a, b).astype(a.dtype)
    if op == "Max":
        return np.maximum(a, b)
    if op == "Min":
        return np.minimum(a, b)
    if op == "PRelu":
        return np.where(a >= 0, a, a * b).astype(a.dtype)
    raise KeyError(op)


def _torch(t, op: str, a, b):
    if op in ("Add", "Sum", "Mean"):
        return a + b
    if op == "PRelu":
        return t.torch.where(a >= 0, a, a * b)
    name = {
        "Sub": "sub",
        "Mul": "mul",
        "Div": "div",
        "Pow": "pow",
        "Max": "maximum",
        "Min": "minimum",
    }
    return getattr(t.torch, name[op])(a, b)


def _legacy_view(ctx: ParseContext, b_index: int, channel_axis: bool = False):
    """Shape under which operand b broadcasts numpy-style, for opset < 7 semantics."""
    a_shape, b_shape = ctx.shape(0), ctx.shape(b_index)
    if channel_axis:  # PRelu-6: a slope of size C applies along axis 1
        if len(b_shape) == 1 and b_shape[0] != 1 and len(a_shape) > 2:
            return (b_shape[0],) + (1,) * (len(a_shape) - 2)
        return None
    if not ctx.attr("broadcast", 0):
        return None
    axis = ctx.attr("axis")
    if axis is None:
        return None  # suffix-aligned: plain numpy broadcasting
    axis = axis + len(a_shape) if axis < 0 else axis
    view = (1,) * axis + tuple(b_shape) + (1,) * (len(a_shape) - axis - len(b_shape))
    if len(view) != len(a_shape):
        ctx.fail(
            f"legacy broadcast of shape {tuple(b_shape)} at axis {axis} does not fit "
            f"shape {tuple(a_shape)}"
        )
    return view


@register_op("Add", "Sub", "Mul", "Div", "Pow", "PRelu")
class Binary(Op):
    def parse(self, ctx: ParseContext) -> Node:
        if len([i for i in ctx.inputs if i]) != 2:
            ctx.fail("expects two inputs")
        view = None
        if ctx.opset < 7:
            view = _legacy_view(ctx, 1, channel_axis=ctx.op_type == "PRelu")
        return ctx.node({"b_view": view})

    def _shapes(self, node, ins):
        a = ins[0].shape
        b = node.attrs.get("b_view") or ins[1].shape
        return a, b

    def infer(self, node, ins):
        a, b = self._shapes(node, ins)
        out = broadcast_shapes(node, a, b)
        if node.op == "PRelu" and out != tuple(a):
            fail(node, f"slope shape {tuple(b)} does not broadcast to input shape {tuple(a)}")
        return [(out, ins[0].dtype)]

    def compute(self, node, ins):
        b = ins[1] if node.attrs.get("b_view") is None else ins[1].reshape(node.attrs["b_view"])
        return [np.asarray(_numpy(node.op, ins[0], b)).astype(ins[0].dtype, copy=False)]

    def compute_torch(self, node, ins, t):
        b = ins[1] if node.attrs.get("b_view") is None else ins[1].reshape(node.attrs["b_view"])
        return [_torch(t, node.op, ins[0], b)]

    def lower(self, node, em):
        emit_binary(
            em,
            _KERNEL_OP[node.op],
            0,
            em.shape_in(0),
            1,
            node.attrs.get("b_view") or em.shape_in(1),
        )


@register_op("Sum", "Mean", "Max", "Min")
class Variadic(Op):
    def parse(self, ctx):
        inputs = [i for i in ctx.inputs if i]
        if not inputs:
            ctx.fail("expects at least one input")
        return ctx.node({}, inputs=inputs)

    def infer(self, node, ins):
        return [(broadcast_shapes(node, *[t.shape for t in ins]), ins[0].dtype)]

    def compute(self, node, ins):
        acc = ins[0]
        for x in ins[1:]:
            acc = _numpy(node.op, acc, x)
        if node.op == "Mean":
            acc = acc / len(ins)
        return [np.asarray(acc).astype(ins[0].dtype)]

    def compute_torch(self, node, ins, t):
        acc = ins[0]
        for x in ins[1:]:
            acc = _torch(t, node.op, acc, x)
        return [acc / len(ins) if node.op == "Mean" else acc]

    def lower(self, node, em):
        out = em.shape_out()
        if len(node.inputs) == 1:
            em.call("fg_copy", em.x(0), em.y(), int(np.prod(out)))
        else:
            emit_binary(em, _KERNEL_OP[node.op], 0, em.shape_in(0), 1, em.shape_in(1))
        for i in range(2, len(node.inputs)):
            emit_binary(em, _KERNEL_OP[node.op], None, out, i, em.shape_in(i))
        if node.op == "Mean":
            k = em.weight(np.array([1.0 / len(node.inputs)], np.float32), "mean_scale")
            emit_binary(em, "FG_MUL", None, out, k, (1,))


def emit_binary(em, kop: str, a, a_shape, b, b_shape) -> None:
    """y = a OP b with broadcasting. a / b: input index, None for the output itself
    (accumulating in place), or a constant array identifier."""
    out = em.shape_out()

    def operand(ref, shape):
        shape = (1,) * (len(out) - len(shape)) + tuple(shape)
        st = contiguous_strides(shape)
        strides = [0 if d == 1 and o != 1 else s for d, o, s in zip(shape, out, st, strict=True)]
        if ref is None:  # reading the output we accumulate into
            return em.y(write=False), strides
        if isinstance(ref, str):
            return ref, strides
        return em.x(ref), strides

    pa, sa = operand(a, a_shape)
    pb, sb = operand(b, b_shape)
    shape, (sa, sb) = collapse(list(out), sa, sb)
    if len(shape) > 8:
        em.fail(f"broadcast over {len(shape)} axes after merging; at most 8 are supported")
    p = em.struct("fg_bcast", "bcast", ndim=len(shape), shape=shape, sa=sa, sb=sb)
    em.call("fg_binary", kop, p, pa, pb, em.y())
    if a is not None and not isinstance(a, str) and tuple(a_shape) == tuple(out):
        em.allow_inplace(0, a)
