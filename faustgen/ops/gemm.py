"""Gemm, MatMul, and the internal Dense op they become when the weight is constant.

Dense: y = act(x @ W + bias) over the last axis of x, W constant (K x N).
The canonicalize pass rewrites Gemm (any transA/transB/alpha/beta/C) and
MatMul-with-constant-weight into Dense (plus Transpose / Add where needed), so
bias and activation fusion have one form to look at.
"""

from __future__ import annotations

import numpy as np

from faustgen.layout.pack import pack_mblocks, pack_panels
from faustgen.ops.activation import apply_act, apply_act_torch
from faustgen.ops.base import Op, fail, float_like, prod, register_op


@register_op("Gemm")
class Gemm(Op):
    def parse(self, ctx):
        attrs = {
            "alpha": float(ctx.attr("alpha", 1.0)),
            "beta": float(ctx.attr("beta", 1.0)),
            "transA": int(ctx.attr("transA", 0)),
            "transB": int(ctx.attr("transB", 0)),
        }
        for i in (0, 1):
            if len(ctx.shape(i)) != 2:
                ctx.fail(f"input {i} has shape {ctx.shape(i)}; Gemm takes matrices")
        return ctx.node(attrs)

    def _mkn(self, node, a_shape, b_shape):
        at = node.attrs
        m, k = a_shape[::-1] if at["transA"] else a_shape
        k2, n = b_shape[::-1] if at["transB"] else b_shape
        if k != k2:
            fail(
                node,
                f"inner dimensions differ: A is {tuple(a_shape)} "
                f"(transA={at['transA']}), B is {tuple(b_shape)} (transB={at['transB']})",
            )
        return m, k, n

    def infer(self, node, ins):
        m, _, n = self._mkn(node, ins[0].shape, ins[1].shape)
        if len(ins) > 2:
            try:
                np.broadcast_shapes(ins[2].shape, (m, n))
            except ValueError:
                fail(node, f"C of shape {ins[2].shape} does not broadcast to ({m}, {n})")
        return [((m, n), ins[0].dtype)]

    def compute(self, node, ins):
        at = node.attrs
        a = ins[0].T if at["transA"] else ins[0]
        b = ins[1].T if at["transB"] else ins[1]
        t = float_like(ins[0])
        y = t(at["alpha"]) * (a.astype(t) @ b.astype(t))
        if len(ins) > 2:
            y = y + t(at["beta"]) * ins[2]
        return [y.astype(t)]

    def compute_torch(self, node, ins, t):
        at = node.attrs
        a = ins[0].T if at["transA"] else ins[0]
        b = ins[1].T if at["transB"] else ins[1]
        y = at["alpha"] * (a @ b)
        return [y + at["beta"] * ins[2] if len(ins) > 2 else y]

    def batch_axes_ok(self, node, ins):
        return not node.attrs["transA"] and ins[1].is_const


def matmul_shape(node, a, b) -> tuple[int, ...]:
    a1, b1 = len(a) == 1, len(b) == 1
    a2 = (1, *a) if a1 else tuple(a)
    b2 = (*b, 1) if b1 else tuple(b)
    if a2[-1] != b2[-2]:
        fail(node, f"cannot multiply shapes {tuple(a)} and {tuple(b)}")
    try:
        batch = np.broadcast_shapes(a2[:-2], b2[:-2])
    except ValueError:
        fail(node, f"batch dimensions of {tuple(a)} and {tuple(b)} do not broadcast")
    out = (*batch, a2[-2], b2[-1])
    if a1:
        out = out[:-2] + out[-1:]
    if b1:
        out = out[:-1]
    return tuple(int(d) for d in out)


@register_op("MatMul")
class MatMul(Op):
    def infer(self, node, ins):
        return [(matmul_shape(node, ins[0].shape, ins[1].shape), ins[0].dtype)]

    def compute(self, node, ins):
        return [np.matmul(ins[0], ins[1]).astype(ins[0].dtype)]

    def compute_torch(self, node, ins, t):
        return [t.torch.matmul(ins[0], ins[1])]

    def batch_axes_ok(self, node, ins):
        if ins[1].is_const:
            return True
        return len(ins[1].shape) >= 3 and (ins[0].is_const or len(ins[0].shape) >= 3)

    def lower(self, node, em):
        a, b = em.shape_in(0), em.shape_in(1)
        a2 = (1, *a) if len(a) == 1 else tuple(a)
        b2 = (*b, 1) if len(b) == 1 else tuple(b)
        m, k, n = a2[-2], a2[-1], b2[-1]
        batch = tuple(np.broadcast_shapes(a2[:-2], b2[:-2]))
        if em.const_in(0) is not None and len(a) == 2 and len(b) >= 2:
            ap = em.weight(pack_mblocks(em.const_in(0)), node.inputs[0] + "_packed")
            for i in range(prod(batch)):
                em.call(
                    "fg_gemm_a",
                    ap,
                    em.x(1, i * k * n),
                    em.y(0, i * m * n),
                    m,
                    k,
                    n,
                    "NULL",
                    "FG_ACT_NONE",
                    "0.0f",
                    "0.0f",
                )
            return
        nb = prod(batch)
        a_batch, b_batch = prod(a2[:-2]), prod(b2[:-2])
        uniform = all(
            x in (1, nb) and (x == 1 or s[:-2] == batch) for x, s in ((a_batch, a2), (b_batch, b2))
        )
        if uniform:
            sa = m * k if a_batch == nb and nb > 1 else 0
            sb = k * n if b_batch == nb and nb > 1 else 0
            em.call("fg_matmul", em.x(0), em.x(1), em.y(), nb, m, k, n, sa, sb)
            return
        if nb > 256:
            em.fail(f"broadcasting {nb} batch matrices of {tuple(a)} @ {tuple(b)} is not supported")
        ia = np.broadcast_to(np.arange(a_batch).reshape(a2[:-2] or (1,)), batch).reshape(-1)
        ib = np.broadcast_to(np.arange(b_batch).reshape(b2[:-2] or (1,)), batch).reshape(-1)
        for i in range(nb):
            em.call(
                "fg_matmul",
                em.x(0, int(ia[i]) * m * k),
                em.x(1, int(ib[i]) * k * n),
                em.y(0, i * m * n),
                1,
                m,
                k,
                n,
                0,
                0,
            )


@register_op("Dense", onnx=False)
class Dense(Op):
    """y = act(x @ W + bias); inputs [x, W (K x N), bias (N,) or '']."""

    def infer(self, node, ins):
        shape = node.attrs.get("out_shape") or (*ins[0].shape[:-1], ins[1].shape[1])
        return [(tuple(shape), "float32")]

    def compute(self, node, ins):
        x, w = ins[0], ins[1]
        t = float_like(x)
        y = x.reshape(-1, w.shape[0]).astype(t) @ w.astype(t)
        if len(ins) > 2:
            y = y + ins[2]
        y = apply_act(y.astype(t), node.attrs.get("act"))
        return [y.reshape(node.attrs.get("out_shape") or (*x.shape[:-1], w.shape[1]))]

    def compute_torch(self, node, ins, t):
        y = ins[0].reshape(-1, ins[1].shape[0]) @ ins[1]
        y = y + ins[2] if len(ins) > 2 else y
        return [apply_act_torch(t, y, node.attrs.get("act")).reshape(t.batched(node))]

    def lower(self, node, em):
        w = em.const_in(1)
        k, n = w.shape
        rows = prod(em.shape_in(0)) // k
        wp = em.weight(
            pack_panels(w),
            node.inputs[1],
            comment=f"{node.inputs[1]}: {k}x{n} as {-(-n // 16)} panels of 16 columns",
        )
        bias = em.x(2) if node.input(2) else "NULL"
        act, a, b = node.attrs.get("act") or ("FG_ACT_NONE", 0.0, 0.0)
        em.call("fg_dense", em.x(0), em.y(), rows, k, n, wp, bias, act, em.f(a), em.f(b))
