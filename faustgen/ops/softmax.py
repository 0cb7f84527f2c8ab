"""Softmax and LogSoftmax.

Opset < 13 flattens the input to 2-D at `axis` (default 1) and normalizes each
row of that matrix; opset >= 13 normalizes along the single axis `axis`
(default -1). The parser records which, so the rest never sees the opset.
"""

from __future__ import annotations

import numpy as np

from faustgen.ops.base import Op, norm_axis, prod, register_op


def _split(shape, axis: int, flatten: bool) -> tuple[int, int, int]:
    if flatten:
        return prod(shape[:axis]), prod(shape[axis:]), 1
    return prod(shape[:axis]), shape[axis], prod(shape[axis + 1 :])


@register_op("Softmax", "LogSoftmax")
class Softmax(Op):
    def parse(self, ctx):
        rank = len(ctx.shape(0))
        flatten = ctx.opset < 13
        axis = ctx.attr("axis", 1 if flatten else -1)
        return ctx.node({"axis": norm_axis(axis, rank, ctx), "flatten": flatten})

    def compute(self, node, ins):
        x = ins[0]
        outer, n, inner = _split(x.shape, node.attrs["axis"], node.attrs["flatten"])
        v = x.reshape(outer, n, inner).astype(np.float64)
        v = v - v.max(axis=1, keepdims=True)
        if node.op == "LogSoftmax":
            y = v - np.log(np.exp(v).sum(axis=1, keepdims=True))
        else:
            e = np.exp(v)
            y = e / e.sum(axis=1, keepdims=True)
        return [y.astype(x.dtype).reshape(x.shape)]

    def compute_torch(self, node, ins, t):
        x, axis = ins[0], node.attrs["axis"]
        if node.attrs["flatten"]:
            x = x.reshape(*x.shape[:axis], -1)
            axis = x.dim() - 1
        fn = t.torch.log_softmax if node.op == "LogSoftmax" else t.torch.softmax
        return [fn(x, axis).reshape(ins[0].shape)]

    def batch_axes_ok(self, node, ins):
        return node.attrs["axis"] != 0

    def lower(self, node, em):
        outer, n, inner = _split(em.shape_in(0), node.attrs["axis"], node.attrs["flatten"])
        kernel = "fg_log_softmax" if node.op == "LogSoftmax" else "fg_softmax"
        em.call(kernel, em.x(0), em.y(), outer, n, inner)
