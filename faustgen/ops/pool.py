"""MaxPool, AveragePool (pads, strides, dilations, ceil_mode, count_include_pad, auto_pad),
GlobalAveragePool, GlobalMaxPool."""

from __future__ import annotations

import itertools
import math

import numpy as np

from faustgen.ops.base import Op, fail, float_like, prod, register_op
from faustgen.ops.spatial import Window, parse_window


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

    def compute_torch(self, node, ins, t):
        return [pool_torch(t, ins[0], node)]

    def lower(self, node, em):
        win: Window = node.attrs["window"]
        x_shape = em.shape_in(0)
        fields = {"C": prod(x_shape[:2]), **win.fields()}  # fg_pool_shape's order
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
    """Reference pooling in float64: one vectorized step per kernel tap (the kernel is small,
    the planes are not). A tap counts towards count_include_pad's divisor when it lies in the
    input or its explicit padding; windows past the padding (ceil_mode) count only the rest."""
    n, c = x.shape[:2]
    x5 = x.reshape(n, c, *win.in_size).astype(np.float64)
    maxpool = op == "MaxPool"
    acc = np.full((n, c, *win.out_size), -np.inf if maxpool else 0.0)
    count = np.zeros(win.out_size)
    for k in itertools.product(*(range(win.kernel[ax]) for ax in range(3))):
        idx, inside, padded = [], [], []
        for ax in range(3):
            o = np.arange(win.out_size[ax])
            i = o * win.strides[ax] - win.pads_begin[ax] + k[ax] * win.dilations[ax]
            inside.append((i >= 0) & (i < win.in_size[ax]))
            padded.append(i < win.in_size[ax] + win.pads_end[ax])
            idx.append(np.clip(i, 0, win.in_size[ax] - 1))
        vals = x5[np.ix_(range(n), range(c), *idx)]
        mask = inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]
        if maxpool:
            acc = np.maximum(acc, np.where(mask, vals, -np.inf))
        else:
            acc += np.where(mask, vals, 0.0)
            counted = padded if count_include_pad else inside
            count += (
                counted[0][:, None, None] & counted[1][None, :, None] & counted[2][None, None, :]
            )
    y = acc if maxpool else acc / np.maximum(count, 1)
    return y.astype(float_like(x)).reshape(n, c, *win.out_size[3 - win.rank :])


def pool_torch(t, x, node):
    """pool_reference on torch tensors."""
    F = t.F
    win: Window = node.attrs["window"]
    r = win.rank
    k, s, d = win.kernel[3 - r :], win.strides[3 - r :], win.dilations[3 - r :]
    begin, end = win.pads_begin[3 - r :], win.pads_end[3 - r :]
    # Trailing padding that makes every window fit (ceil_mode may need more than the
    # model's pads, a large pad may need less: F.pad crops with negative values).
    need = [
        (o - 1) * st + (kk - 1) * dd + 1 - i - b
        for o, st, kk, dd, i, b in zip(
            win.out_size[3 - r :], s, k, d, win.in_size[3 - r :], begin, strict=True
        )
    ]

    def pairs(lo, hi):
        out = []
        for a, b in zip(reversed(lo), reversed(hi), strict=True):
            out += [a, b]
        return out

    if node.op == "MaxPool":
        pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[r]
        return pool(F.pad(x, pairs(begin, need), value=-math.inf), k, s, dilation=d)
    if any(dd != 1 for dd in d):
        fail(node, "dilated AveragePool has no PyTorch form")
    avg = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[r]
    taps = float(np.prod(k))
    total = avg(F.pad(x, pairs(begin, need)), k, s) * taps
    mask = t.torch.ones((1, 1, *x.shape[2:]))
    if node.attrs["count_include_pad"]:  # the model's own padding counts, ceil's does not
        mask = F.pad(mask, pairs(begin, end), value=1.0)
        mask = F.pad(mask, pairs([0] * r, [n - e for n, e in zip(need, end, strict=True)]))
    else:
        mask = F.pad(mask, pairs(begin, need))
    return total / (avg(mask, k, s) * taps)


@register_op("GlobalAveragePool", "GlobalMaxPool")
class GlobalPool(Op):
    def infer(self, node, ins):
        s = ins[0].shape
        return [((*s[:2], *([1] * (len(s) - 2))), "float32")]

    def compute(self, node, ins):
        x = ins[0]
        axes = tuple(range(2, x.ndim))
        f = np.mean if node.op == "GlobalAveragePool" else np.max
        return [f(x.astype(np.float64), axis=axes, keepdims=True).astype(float_like(x))]

    def compute_torch(self, node, ins, t):
        axes = tuple(range(2, ins[0].dim()))
        if node.op == "GlobalAveragePool":
            return [ins[0].mean(dim=axes, keepdim=True)]
        return [ins[0].amax(dim=axes, keepdim=True)]

    def lower(self, node, em):
        s = em.shape_in(0)
        kernel = "fg_global_avgpool" if node.op == "GlobalAveragePool" else "fg_global_maxpool"
        em.call(kernel, em.x(0), em.y(), prod(s[:2]), prod(s[2:]))
