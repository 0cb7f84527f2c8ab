"""MaxPool, AveragePool (pads, strides, dilations, ceil_mode, count_include_pad, auto_pad),
GlobalAveragePool, GlobalMaxPool."""

from __future__ import annotations

import itertools

import numpy as np

from faustgen.ops.base import Op, prod, register_op
from faustgen.ops.spatial import Window, parse_window, window_taps

_POOL_FIELDS = (
    "C",
    "D",
    "H",
    "W",
    "OD",
    "OH",
    "OW",
    "kd",
    "kh",
    "kw",
    "sd",
    "sh",
    "sw",
    "dd",
    "dh",
    "dw",
    "pd",
    "ph",
    "pw",
)


@register_op("MaxPool", "AveragePool")
class Pool(Op):
    def parse(self, ctx):
        if len([o for o in ctx.outputs if o]) > 1:
            ctx.fail("the Indices output is not supported")
        ceil_mode = bool(ctx.attr("ceil_mode", 0))
        win = parse_window(
            ctx,
            None,
            ceil_mode=ceil_mode,
            allow_dilations=ctx.op_type == "MaxPool" or ctx.opset >= 19,
        )
        include = int(ctx.attr("count_include_pad", 0)) if ctx.op_type == "AveragePool" else 0
        return ctx.node(
            {"window": win, "count_include_pad": include},
            inputs=[ctx.input(0)],
        )

    def infer(self, node, ins):
        win: Window = node.attrs["window"]
        return [((*ins[0].shape[:2], *win.out_size[3 - win.rank :]), "float32")]

    def compute(self, node, ins):
        return [
            pool_reference(ins[0], node.op, node.attrs["window"], node.attrs["count_include_pad"])
        ]

    def lower(self, node, em):
        win: Window = node.attrs["window"]
        x_shape = em.shape_in(0)
        fields = {"C": prod(x_shape[:2]), **win.fields()}
        fields = {f: fields[f] for f in _POOL_FIELDS}
        fields.update(
            pd_end=win.pads_end[0],
            ph_end=win.pads_end[1],
            pw_end=win.pads_end[2],
            count_include_pad=node.attrs["count_include_pad"],
        )
        s = em.struct("fg_pool_shape", "pool", **fields)
        kernel = "fg_maxpool" if node.op == "MaxPool" else "fg_avgpool"
        em.call(kernel, s, em.x(0), em.y())


def pool_reference(x: np.ndarray, op: str, win: Window, count_include_pad: int) -> np.ndarray:
    """Direct loops over output positions (test-sized inputs only)."""
    n, c = x.shape[:2]
    x5 = x.reshape(n, c, *win.in_size).astype(np.float64)
    y = np.zeros((n, c, *win.out_size))
    for o in itertools.product(*(range(s) for s in win.out_size)):
        padded = [window_taps(win, ax, o[ax], padded_only=True) for ax in range(3)]
        inside = [[t for t in taps if 0 <= t < win.in_size[ax]] for ax, taps in enumerate(padded)]
        vals = x5[:, :, inside[0]][:, :, :, inside[1]][:, :, :, :, inside[2]].reshape(n, c, -1)
        if op == "MaxPool":
            y[(slice(None), slice(None), *o)] = vals.max(axis=2) if vals.shape[2] else -np.inf
        else:
            count = prod([len(p) for p in padded]) if count_include_pad else vals.shape[2]
            y[(slice(None), slice(None), *o)] = vals.sum(axis=2) / max(count, 1)
    return y.astype(np.float32).reshape(n, c, *win.out_size[3 - win.rank :])


@register_op("GlobalAveragePool", "GlobalMaxPool")
class GlobalPool(Op):
    def infer(self, node, ins):
        s = ins[0].shape
        return [((*s[:2], *([1] * (len(s) - 2))), "float32")]

    def compute(self, node, ins):
        x = ins[0]
        axes = tuple(range(2, x.ndim))
        f = np.mean if node.op == "GlobalAveragePool" else np.max
        return [f(x.astype(np.float64), axis=axes, keepdims=True).astype(np.float32)]

    def lower(self, node, em):
        s = em.shape_in(0)
        kernel = "fg_global_avgpool" if node.op == "GlobalAveragePool" else "fg_global_maxpool"
        em.call(kernel, em.x(0), em.y(), prod(s[:2]), prod(s[2:]))
