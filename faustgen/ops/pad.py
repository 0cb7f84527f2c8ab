"""Pad, constant mode (negative pads crop). Opset < 11 carries pads as attributes."""

from __future__ import annotations

import numpy as np

from faustgen.ops.base import Op, ints, norm_axis, register_op


@register_op("Pad")
class Pad(Op):
    def parse(self, ctx):
        mode = ctx.attr("mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "constant":
            ctx.fail(f"mode '{mode}' is not supported (only 'constant')")
        rank = len(ctx.shape(0))
        if ctx.opset < 11:
            pads = ctx.attr("pads", ctx.attr("paddings"))
            value = float(ctx.attr("value", 0.0))
            axes = list(range(rank))
        else:
            pads = ctx.const_input(1, "pads")
            v = ctx.const_input(2, "constant_value", required=False)
            value = 0.0 if v is None or np.size(v) == 0 else float(np.asarray(v).reshape(-1)[0])
            ax = ctx.const_input(3, "axes", required=False)
            axes = list(range(rank)) if ax is None else [norm_axis(a, rank, ctx) for a in ints(ax)]
        pads = ints(pads if pads is not None else [])
        if len(pads) != 2 * len(axes):
            ctx.fail(f"pads {pads} should hold {2 * len(axes)} values")
        begin, end = [0] * rank, [0] * rank
        for i, a in enumerate(axes):
            begin[a], end[a] = pads[i], pads[len(axes) + i]
        shape = ctx.shape(0)
        out = tuple(d + b + e for d, b, e in zip(shape, begin, end, strict=True))
        if any(d < 0 for d in out):
            ctx.fail(f"pads {pads} crop more than the input shape {tuple(shape)}")
        return ctx.node(
            {"begin": tuple(begin), "end": tuple(end), "value": value, "shape": out},
            inputs=[ctx.input(0)],
        )

    def infer(self, node, ins):
        return [(node.attrs["shape"], ins[0].dtype)]

    def compute(self, node, ins):
        x = ins[0]
        a = node.attrs
        crop = tuple(
            slice(max(0, -b), d - max(0, -e))
            for b, e, d in zip(a["begin"], a["end"], x.shape, strict=True)
        )
        widths = [(max(0, b), max(0, e)) for b, e in zip(a["begin"], a["end"], strict=True)]
        return [np.pad(x[crop], widths, constant_values=a["value"]).astype(x.dtype)]

    def compute_torch(self, node, ins, t):
        a = node.attrs
        pairs = []
        for b, e in zip(reversed(a["begin"]), reversed(a["end"]), strict=True):
            pairs += [b, e]
        return [t.F.pad(ins[0], pairs, value=a["value"])]

    def batch_axes_ok(self, node, ins):
        return node.attrs["begin"][0] == 0 and node.attrs["end"][0] == 0

    def lower(self, node, em):
        a = node.attrs
        shape_in, shape_out = list(em.shape_in(0)), list(a["shape"])
        begin, end = list(a["begin"]), list(a["end"])
        # Leading axes the pad leaves alone merge, which keeps the rank within FG_MAXDIM.
        while len(shape_in) > 1 and begin[0] == end[0] == begin[1] == end[1] == 0:
            shape_in[:2] = [shape_in[0] * shape_in[1]]
            shape_out[:2] = [shape_out[0] * shape_out[1]]
            begin, end = begin[1:], end[1:]
        if len(shape_in) > 8:
            em.fail(f"padding a rank-{len(shape_in)} tensor is not supported (at most 8 axes)")
        p = em.struct(
            "fg_padspec",
            "pad",
            ndim=len(shape_in),
            in_shape=shape_in,
            out_shape=shape_out,
            begin=begin,
        )
        em.call("fg_pad", p, em.x(0), em.y(), em.f(a["value"]))
