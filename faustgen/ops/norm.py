"""BatchNormalization (inference), LRN and LayerNormalization.

BatchNormalization is parsed into a per-channel affine map (scale, shift); the
fold_batchnorm pass merges it into the preceding Conv or Dense when it can, and
what remains runs as fg_channel_affine.
"""

from __future__ import annotations

import math

import numpy as np

from faustgen.ops.base import Op, float_dtype_only, float_like, norm_axis, prod, register_op


@register_op("BatchNormalization")
class BatchNorm(Op):
    elementwise = True

    def parse(self, ctx):
        if ctx.attr("training_mode", 0):
            ctx.fail("training_mode=1 is not supported (export the model in eval mode)")
        if ctx.opset < 7 and ctx.attr("is_test", 1) == 0 and len(ctx.outputs) > 1:
            ctx.fail("training-mode outputs are not supported (export the model in eval mode)")
        if len([o for o in ctx.outputs if o]) > 1:
            ctx.fail("running mean/variance outputs are not supported (training mode)")
        x = ctx.shape(0)
        gamma, beta, mean, var = (
            ctx.const_input(i, w).astype(np.float64)
            for i, w in enumerate(("x", "scale", "B", "mean", "var"))
            if i > 0
        )
        eps = float(ctx.attr("epsilon", 1e-5))
        channels = x[1] if len(x) > 1 else 1
        if ctx.opset < 7 and ctx.attr("spatial", 1) == 0:
            ctx.fail("spatial=0 (per-activation statistics) is not supported")
        for v in (gamma, beta, mean, var):
            if v.size != channels:
                ctx.fail(f"statistics of size {v.size} do not match {channels} channels")
        scale = gamma.reshape(-1) / np.sqrt(var.reshape(-1) + eps)
        shift = beta.reshape(-1) - mean.reshape(-1) * scale
        return ctx.node(
            {"scale": scale.astype(np.float32), "shift": shift.astype(np.float32)},
            inputs=[ctx.input(0)],
        )

    def compute(self, node, ins):
        x = ins[0]
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return [
            (x * node.attrs["scale"].reshape(shape) + node.attrs["shift"].reshape(shape)).astype(
                float_like(x)
            )
        ]

    def compute_torch(self, node, ins, t):
        shape = (1, -1) + (1,) * (ins[0].dim() - 2)
        scale = t.torch.from_numpy(node.attrs["scale"]).reshape(shape)
        return [ins[0] * scale + t.torch.from_numpy(node.attrs["shift"]).reshape(shape)]

    def lower(self, node, em):
        s = em.shape_in(0)
        scale = em.weight(node.attrs["scale"], node.name + "_scale")
        shift = em.weight(node.attrs["shift"], node.name + "_shift")
        em.call(
            "fg_channel_affine",
            em.x(0),
            em.y(),
            s[0],
            s[1] if len(s) > 1 else 1,
            prod(s[2:]),
            scale,
            shift,
        )
        em.allow_inplace()


@register_op("LRN")
class LRN(Op):
    def parse(self, ctx):
        size = ctx.attr("size")
        if size is None or int(size) <= 0:
            ctx.fail("the size attribute must be a positive integer")
        if len(ctx.shape(0)) < 2:
            ctx.fail("input needs a channel axis")
        return ctx.node(
            {
                "size": int(size),
                "alpha": float(ctx.attr("alpha", 1e-4)),
                "beta": float(ctx.attr("beta", 0.75)),
                "bias": float(ctx.attr("bias", 1.0)),
            }
        )

    def compute(self, node, ins):
        t = float_like(ins[0])
        x = ins[0].astype(np.float64)
        a = node.attrs
        c = x.shape[1]
        lo, hi = (a["size"] - 1) // 2, math.ceil((a["size"] - 1) / 2)
        sq = np.zeros_like(x)
        for i in range(c):
            sq[:, i] = (x[:, max(0, i - lo) : min(c, i + hi + 1)] ** 2).sum(axis=1)
        y = x / (a["bias"] + a["alpha"] / a["size"] * sq) ** a["beta"]
        return [y.astype(t)]

    def compute_torch(self, node, ins, t):
        x, a = ins[0], node.attrs
        c = x.shape[1]
        lo, hi = (a["size"] - 1) // 2, math.ceil((a["size"] - 1) / 2)
        zeros = t.torch.zeros_like(x[:, :1])
        sq = t.torch.cat([zeros] * lo + [x * x] + [zeros] * hi, dim=1)
        total = sum(sq[:, j : j + c] for j in range(lo + hi + 1))
        return [x / (a["bias"] + a["alpha"] / a["size"] * total) ** a["beta"]]

    def lower(self, node, em):
        s = em.shape_in(0)
        a = node.attrs
        em.call(
            "fg_lrn",
            em.x(0),
            em.y(),
            s[0],
            s[1],
            prod(s[2:]),
            a["size"],
            em.f(a["alpha"]),
            em.f(a["beta"]),
            em.f(a["bias"]),
        )


@register_op("LayerNormalization")
class LayerNorm(Op):
    """Normalizes over axes [axis, rank): y = (x - mean) / sqrt(var + eps) * scale + bias.
    Scale and bias are constants, broadcast at compile time to the normalized block."""

    def parse(self, ctx):
        shape = ctx.shape(0)
        axis = norm_axis(int(ctx.attr("axis", -1)), len(shape), ctx)
        block = tuple(shape[axis:])
        params = []
        for i, what in ((1, "scale"), (2, "bias")):
            v = ctx.const_input(i, what, required=i == 1)
            if v is not None:
                try:
                    v = np.broadcast_to(v.astype(np.float32), block)
                except ValueError:
                    ctx.fail(f"{what} of shape {v.shape} does not broadcast to {block}")
                v = np.ascontiguousarray(v).reshape(-1)
            params.append(v)
        attrs = {
            "axis": axis,
            "epsilon": float(ctx.attr("epsilon", 1e-5)),
            "scale": params[0],
            "bias": params[1],
        }
        return ctx.node(attrs, inputs=[ctx.input(0)])

    def infer(self, node, ins):
        float_dtype_only(node, ins)
        s, axis = ins[0].shape, node.attrs["axis"]
        stat = (*s[:axis], *(1,) * (len(s) - axis))
        return [(s, "float32"), (stat, "float32"), (stat, "float32")][: len(node.outputs)]

    def compute(self, node, ins):
        a = node.attrs
        x = ins[0].astype(np.float64)
        axes = tuple(range(a["axis"], x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        inv = 1.0 / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + a["epsilon"])
        block = x.shape[a["axis"] :]
        y = (x - mean) * inv * a["scale"].reshape(block)
        if a["bias"] is not None:
            y = y + a["bias"].reshape(block)
        t = float_like(ins[0])
        outs = [y.astype(t), mean.astype(t), inv.astype(t)]
        return outs[: len(node.outputs)]

    def compute_torch(self, node, ins, t):
        a, x = node.attrs, ins[0]
        dims = tuple(range(a["axis"], x.dim()))
        mean = x.mean(dim=dims, keepdim=True)
        inv = t.torch.rsqrt(((x - mean) ** 2).mean(dim=dims, keepdim=True) + a["epsilon"])
        block = tuple(x.shape[a["axis"] :])
        y = (x - mean) * inv * t.const(a["scale"]).to(x.dtype).reshape(block)
        if a["bias"] is not None:
            y = y + t.const(a["bias"]).to(x.dtype).reshape(block)
        return [y, mean, inv][: len(node.outputs)]

    def batch_axes_ok(self, node, ins):
        return node.attrs["axis"] > 0

    def lower(self, node, em):
        a = node.attrs
        s = em.shape_in(0)
        n = prod(s[a["axis"] :])
        scale = em.weight(a["scale"], node.name + "_scale")
        bias = "NULL" if a["bias"] is None else em.weight(a["bias"], node.name + "_bias")
        stats = [em.y(k) if k < len(node.outputs) and node.outputs[k] else "NULL" for k in (1, 2)]
        em.call(
            "fg_layernorm",
            em.x(0),
            em.y(),
            prod(s[: a["axis"]]),
            n,
            scale,
            bias,
            em.f(a["epsilon"]),
            *stats,
        )
        em.allow_inplace()
