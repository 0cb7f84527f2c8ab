"""Conv (1-D, 2-D, 3-D; pads, strides, dilations, groups, auto_pad), with a fusable
bias and activation.

Lowered to im2col + a register-blocked GEMM against the packed filter matrix
(the seed's Z = T(R(X) F) with F stored transposed), or to a direct kernel for
depthwise convolutions, where im2col would only add copies.
"""

from __future__ import annotations

import numpy as np

from faustgen.layout.pack import conv_scratch_floats as mirror
from faustgen.layout.pack import im2col_floats as im2col_mirror
from faustgen.layout.pack import pack_conv_weight
from faustgen.ops.activation import apply_act, apply_act_torch
from faustgen.ops.base import Op, float_like, prod, register_op
from faustgen.ops.spatial import Window, parse_window


@register_op("Conv")
class Conv(Op):
    def parse(self, ctx):
        x, w = ctx.shape(0), ctx.shape(1)
        kernel = ctx.attr("kernel_shape")
        kernel = list(w[2:]) if kernel is None else [int(k) for k in kernel]
        if list(w[2:]) != kernel:
            ctx.fail(f"kernel_shape {kernel} does not match weight shape {tuple(w)}")
        win = parse_window(ctx, kernel)
        group = int(ctx.attr("group", 1))
        if group <= 0 or x[1] % group or w[0] % group or w[1] * group != x[1]:
            ctx.fail(f"weight {tuple(w)} with group={group} does not fit input {tuple(x)}")
        if ctx.input(2) and tuple(ctx.shape(2)) != (w[0],):
            ctx.fail(f"bias shape {ctx.shape(2)} should be ({w[0]},)")
        return ctx.node({"window": win, "group": group, "act": None})

    def infer(self, node, ins):
        win: Window = node.attrs["window"]
        out = (ins[0].shape[0], ins[1].shape[0], *win.out_size[3 - win.rank :])
        return [(out, "float32")]

    def compute(self, node, ins):
        return [
            conv_reference(
                ins[0],
                ins[1],
                ins[2] if len(ins) > 2 else None,
                node.attrs["window"],
                node.attrs["group"],
                node.attrs.get("act"),
            )
        ]

    def compute_torch(self, node, ins, t):
        return [conv_torch(t, ins[0], ins[1], ins[2] if len(ins) > 2 else None, node)]

    def lower(self, node, em):
        w = em.const_in(1)
        if w is None:
            em.fail("the weight must be a constant")
        win: Window = node.attrs["window"]
        x_shape = em.shape_in(0)
        n, c, k, group = x_shape[0], x_shape[1], w.shape[0], node.attrs["group"]
        s = em.struct("fg_conv_shape", "conv", **conv_shape_fields(c, k, group, win))
        act, a, b = node.attrs.get("act") or ("FG_ACT_NONE", 0.0, 0.0)
        bias = em.x(2) if node.input(2) else "NULL"
        in_size, out_size = prod(x_shape[1:]), prod(em.shape_out()[1:])
        depthwise = group == c and group > 1
        if depthwise:
            wd = em.weight(w, node.inputs[1])
        else:
            wp = em.weight(
                pack_conv_weight(w, group),
                node.inputs[1],
                comment=f"{node.inputs[1]}: {'x'.join(map(str, w.shape))}, "
                f"group={group}, packed in blocks of 4 filters",
            )
            floats = conv_scratch_floats(c // group, win)
        for i in range(n):
            if depthwise:
                em.call(
                    "fg_conv_depthwise",
                    s,
                    em.x(0, i * in_size),
                    em.y(0, i * out_size),
                    wd,
                    bias,
                    act,
                    em.f(a),
                    em.f(b),
                )
            else:
                scratch = em.scratch(floats) if floats else "NULL"
                em.call(
                    "fg_conv",
                    s,
                    em.x(0, i * in_size),
                    em.y(0, i * out_size),
                    wp,
                    bias,
                    act,
                    em.f(a),
                    em.f(b),
                    scratch,
                )


def conv_shape_fields(c: int, k: int, group: int, win: Window) -> dict[str, int]:
    """The members of fg_conv_shape, in the struct's order."""
    f = win.fields()
    return {"C": c, "D": f["D"], "H": f["H"], "W": f["W"], "K": k, **f, "group": group}


def conv_reference(
    x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, win: Window, group: int, act=None
) -> np.ndarray:
    """Numpy convolution (float64 accumulation), N x C x spatial -> N x K x spatial."""
    n, c = x.shape[:2]
    k = w.shape[0]
    x5 = x.reshape(n, c, *win.in_size).astype(np.float64)
    w5 = w.reshape(k, w.shape[1], *win.kernel).astype(np.float64)
    pads = [(0, 0), (0, 0), *list(zip(win.pads_begin, win.pads_end, strict=True))]
    xp = np.pad(x5, pads)
    od, oh, ow = win.out_size
    y = np.zeros((n, k, od, oh, ow))
    cg, kg = c // group, k // group
    (sd, sh, sw), (dd, dh, dw) = win.strides, win.dilations
    for a in range(win.kernel[0]):
        for b in range(win.kernel[1]):
            for e in range(win.kernel[2]):
                xs = xp[:, :, a * dd : a * dd + (od - 1) * sd + 1 : sd,
                        b * dh : b * dh + (oh - 1) * sh + 1 : sh,
                        e * dw : e * dw + (ow - 1) * sw + 1 : sw]  # fmt: skip
                for g in range(group):
                    y[:, g * kg : (g + 1) * kg] += np.einsum(
                        "kc,ncdhw->nkdhw",
                        w5[g * kg : (g + 1) * kg, :, a, b, e],
                        xs[:, g * cg : (g + 1) * cg],
                    )
    if bias is not None:
        y += bias.reshape(1, k, 1, 1, 1)
    out_shape = (n, k, *win.out_size[3 - win.rank :])
    return apply_act(y.astype(float_like(x)), act).reshape(out_shape)


def conv_torch(t, x, w, bias, node):
    """conv_reference on torch tensors, with the node's window, group and activation."""
    F = t.F
    win: Window = node.attrs["window"]
    r = win.rank
    pads = []
    for b, e in zip(
        reversed(win.pads_begin[3 - r :]), reversed(win.pads_end[3 - r :]), strict=True
    ):
        pads += [b, e]
    x = F.pad(x, pads)
    w = w.reshape(w.shape[0], w.shape[1], *win.kernel[3 - r :]).to(t.torch.float32)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[r]
    y = conv(
        x,
        w,
        bias,
        stride=win.strides[3 - r :],
        dilation=win.dilations[3 - r :],
        groups=node.attrs["group"],
    )
    return apply_act_torch(t, y, node.attrs.get("act"))


def filter_matrix(w: np.ndarray, group: int, g: int) -> np.ndarray:
    """The seed's F for group g: (C/group * kernel) x (K/group), columns = filters."""
    kg = w.shape[0] // group
    return w[g * kg : (g + 1) * kg].reshape(kg, -1).T


def _scratch_fields(c_per_group: int, win: Window) -> dict[str, int]:
    (D, H, W), (OD, OH, OW) = win.in_size, win.out_size
    (kd, kh, kw), (sd, sh, sw), (pd, ph, pw) = win.kernel, win.strides, win.pads_begin
    return dict(
        C=c_per_group, D=D, H=H, W=W, OD=OD, OH=OH, OW=OW, kd=kd, kh=kh, kw=kw,
        sd=sd, sh=sh, sw=sw, pd=pd, ph=ph, pw=pw,
    )  # fmt: skip


def conv_scratch_floats(c_per_group: int, win: Window) -> int:
    """fg_conv_scratch for one group of this window (the C mirror lives in layout.pack)."""
    return mirror(**_scratch_fields(c_per_group, win))


def im2col_floats(c_per_group: int, win: Window) -> int:
    """Floats of fg_im2col's matrix for one group (0 for a pointwise convolution)."""
    return im2col_mirror(**_scratch_fields(c_per_group, win))
