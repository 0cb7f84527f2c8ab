"""ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceL1, ReduceL2, ReduceSumSquare,
ReduceLogSum and ReduceLogSumExp over a contiguous block of axes (e.g. the spatial mean
that exporters write for global average pooling); scattered axes are moved last first."""

from __future__ import annotations

import numpy as np

from faustgen.ops.base import Op, ints, norm_axis, prod, register_op
from faustgen.ops.movement import contiguous_strides, emit_strided_copy

_KERNEL = {
    "ReduceSum": "FG_REDUCE_SUM",
    "ReduceMean": "FG_REDUCE_MEAN",
    "ReduceMax": "FG_REDUCE_MAX",
    "ReduceMin": "FG_REDUCE_MIN",
    "ReduceL1": "FG_REDUCE_L1",
    "ReduceL2": "FG_REDUCE_L2",
    "ReduceSumSquare": "FG_REDUCE_SUMSQ",
    "ReduceLogSum": "FG_REDUCE_LOGSUM",
    "ReduceLogSumExp": "FG_REDUCE_LOGSUMEXP",
}


def _logsumexp(x, axis, keepdims):
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    y = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return y if keepdims else np.squeeze(y, axis=axis)


_NUMPY = {
    "ReduceSum": np.sum,
    "ReduceMean": np.mean,
    "ReduceMax": np.max,
    "ReduceMin": np.min,
    "ReduceL1": lambda x, axis, keepdims: np.sum(np.abs(x), axis=axis, keepdims=keepdims),
    "ReduceL2": lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims)),
    "ReduceSumSquare": lambda x, axis, keepdims: np.sum(x * x, axis=axis, keepdims=keepdims),
    "ReduceLogSum": lambda x, axis, keepdims: np.log(np.sum(x, axis=axis, keepdims=keepdims)),
    "ReduceLogSumExp": _logsumexp,
}
# Opset from which `axes` is an input rather than an attribute.
_AXES_INPUT_FROM = {"ReduceSum": 13, **{op: 18 for op in _KERNEL if op != "ReduceSum"}}


@register_op(*_KERNEL)
class Reduce(Op):
    def parse(self, ctx):
        rank = len(ctx.shape(0))
        if ctx.opset >= _AXES_INPUT_FROM[ctx.op_type]:
            axes = ctx.const_input(1, "axes", required=False)
        else:
            axes = ctx.attr("axes")
        axes = [] if axes is None else ints(axes)
        if not axes:
            if ctx.attr("noop_with_empty_axes", 0):
                return ctx.node({"axes": (), "keepdims": 1}, inputs=[ctx.input(0)], op="Identity")
            axes = list(range(rank))
        axes = tuple(sorted({norm_axis(a, rank, ctx) for a in axes}))
        return ctx.node(
            {"axes": axes, "keepdims": int(ctx.attr("keepdims", 1))}, inputs=[ctx.input(0)]
        )

    def infer(self, node, ins):
        s, axes = ins[0].shape, node.attrs["axes"]
        if node.attrs["keepdims"]:
            out = tuple(1 if i in axes else d for i, d in enumerate(s))
        else:
            out = tuple(d for i, d in enumerate(s) if i not in axes)
        return [(out, ins[0].dtype)]

    def compute(self, node, ins):
        x = ins[0]
        y = _NUMPY[node.op](
            x.astype(np.float64) if x.dtype == np.float32 else x,
            axis=node.attrs["axes"],
            keepdims=bool(node.attrs["keepdims"]),
        )
        return [np.asarray(y).astype(x.dtype)]

    def compute_torch(self, node, ins, t):
        fn = {"ReduceSum": "sum", "ReduceMean": "mean", "ReduceMax": "amax", "ReduceMin": "amin"}
        keep = bool(node.attrs["keepdims"])
        return [getattr(t.torch, fn[node.op])(ins[0], dim=node.attrs["axes"], keepdim=keep)]

    def batch_axes_ok(self, node, ins):
        return 0 not in node.attrs["axes"]

    def lower(self, node, em):
        s, axes = em.shape_in(0), node.attrs["axes"]
        real = [a for a in axes if s[a] != 1]  # size-1 axes do not matter for contiguity
        if not real:
            em.call("fg_copy", em.x(0), em.y(), prod(s))
            return
        lo, hi = real[0], real[-1]
        if all(a in real or s[a] == 1 for a in range(lo, hi + 1)):
            em.call(
                "fg_reduce",
                _KERNEL[node.op],
                em.x(0),
                em.y(),
                prod(s[:lo]),
                prod(s[lo : hi + 1]),
                prod(s[hi + 1 :]),
            )
            return
        # Scattered axes: move the reduced axes last, then reduce the trailing block.
        kept = [a for a in range(len(s)) if a not in real]
        order = kept + real
        st = contiguous_strides(s)
        tmp = em.scratch(prod(s))
        emit_strided_copy(em, [s[a] for a in order], [st[a] for a in order], dest=tmp)
        em.call(
            "fg_reduce",
            _KERNEL[node.op],
            tmp,
            em.y(),
            prod([s[a] for a in kept]),
            prod([s[a] for a in real]),
            1,
        )
