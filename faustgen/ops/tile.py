"""Tile: the input repeated along each axis, lowered to one strided copy (the repeat
axes read with stride 0)."""

from __future__ import annotations

import numpy as np

from faustgen.ops.base import Op, ints, register_op
from faustgen.ops.movement import contiguous_strides, emit_strided_copy


@register_op("Tile")
class Tile(Op):
    def parse(self, ctx):
        shape = ctx.shape(0)
        if ctx.opset < 6:
            ctx.fail("Tile before opset 6 (tiles/axis inputs) is not supported")
        repeats = ints(ctx.const_input(1, "repeats"))
        if len(repeats) != len(shape) or any(r < 1 for r in repeats):
            ctx.fail(f"repeats {repeats} do not fit an input of shape {tuple(shape)}")
        return ctx.node({"repeats": tuple(repeats)}, inputs=[ctx.input(0)])

    def infer(self, node, ins):
        return [
            (
                tuple(d * r for d, r in zip(ins[0].shape, node.attrs["repeats"], strict=True)),
                ins[0].dtype,
            )
        ]

    def compute(self, node, ins):
        return [np.tile(ins[0], node.attrs["repeats"])]

    def compute_torch(self, node, ins, t):
        return [ins[0].repeat(*node.attrs["repeats"])]

    def batch_axes_ok(self, node, ins):
        return node.attrs["repeats"][0] == 1

    def lower(self, node, em):
        # Output axis k of size r*d viewed as (r, d): r reads with stride 0.
        st = contiguous_strides(em.shape_in(0))
        shape, strides = [], []
        for d, r, s in zip(em.shape_in(0), node.attrs["repeats"], st, strict=True):
            shape += [r, d]
            strides += [0, s]
        emit_strided_copy(em, shape, strides)
