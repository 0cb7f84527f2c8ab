"""Factorized layers: a Dense or Conv whose weight matrix is a product of sparse factors.

FactorizedDense computes y = act(S_0 (S_1 (... (S_{J-1} x))) + bias) for each row x
(the seed's W ~ S_0 ... S_{J-1}, W = out x in). FactorizedConv applies the same chain
to the im2col patch matrix of each group: out_g = S_0 ... S_{J-1} R(X_g), i.e. the
seed's Z = T(R(X) F) with F^T ~ S_0 ... S_{J-1}. The scale is already folded into
the factors (balanced, so every factor has entries of the same magnitude).

Each factor carries the storage the cost model chose: dense, csr, ell (fixed count
per row, slot-major) or bsr16 (blocks of 16 rows x 1 column).
"""

from __future__ import annotations

import numpy as np

from faustgen.layout.factor import Factor, chain_dense
from faustgen.ops.activation import apply_act, apply_act_torch
from faustgen.ops.base import Op, float_like, prod, register_op
from faustgen.ops.conv import conv_reference, conv_shape_fields, conv_torch, im2col_floats
from faustgen.ops.sparse import emit_factor_chain
from faustgen.ops.spatial import Window


def chain_torch(factors: list, x):
    """x (batch, n) -> (batch, m) through the dense torch factors S_0 ... S_{J-1}."""
    for f in reversed(factors):
        x = x @ f.T
    return x


@register_op("FactorizedDense", onnx=False)
class FactorizedDense(Op):
    """inputs [x, bias or '']; attrs: factors (list[Factor]), act, out_shape."""

    def infer(self, node, ins):
        return [(tuple(node.attrs["out_shape"]), "float32")]

    def compute(self, node, ins):
        factors: list[Factor] = node.attrs["factors"]
        x = ins[0].reshape(-1, factors[-1].shape[1]).astype(np.float64)
        t = x.T
        for f in reversed(factors):
            t = f.matrix.astype(np.float64) @ t
        y = np.asarray(t).T
        if len(ins) > 1:
            y = y + ins[1]
        y = apply_act(y.astype(float_like(ins[0])), node.attrs.get("act"))
        return [y.reshape(node.attrs["out_shape"])]

    def compute_torch(self, node, ins, t):
        n = node.attrs["factors"][-1].shape[1]
        y = chain_torch(t.factors(node), ins[0].reshape(-1, n))
        y = y + ins[1] if len(ins) > 1 else y
        return [apply_act_torch(t, y, node.attrs.get("act")).reshape(t.batched(node))]

    def lower(self, node, em):
        factors: list[Factor] = node.attrs["factors"]
        rows = prod(em.shape_in(0)) // factors[-1].shape[1]
        bias = em.x(1) if node.input(1) else "NULL"
        emit_factor_chain(
            em, factors, em.x(0), em.y(), rows, bias, node.attrs.get("act"), mode="matvec"
        )


@register_op("FactorizedConv", onnx=False)
class FactorizedConv(Op):
    """inputs [x, bias or '']; attrs: window, group, factors (list per group), act, out_shape."""

    def infer(self, node, ins):
        return [(tuple(node.attrs["out_shape"]), "float32")]

    def effective_weight(self, node) -> np.ndarray:
        win: Window = node.attrs["window"]
        blocks = [chain_dense(fs) for fs in node.attrs["factors"]]  # each Kg x (Cg*k)
        kg, ck = blocks[0].shape
        w = np.concatenate(blocks, axis=0)
        return w.reshape(kg * len(blocks), ck // prod(win.kernel), *win.kernel)

    def compute(self, node, ins):
        bias = ins[1] if len(ins) > 1 else None
        w = self.effective_weight(node)  # K x C/group x kd x kh x kw
        y = conv_reference(
            ins[0], w, bias, node.attrs["window"], node.attrs["group"], node.attrs.get("act")
        )
        return [y.reshape(node.attrs["out_shape"])]

    def compute_torch(self, node, ins, t):
        factors, group = node.attrs["factors"], node.attrs["group"]
        params, j = t.factors(node), len(factors[0])
        # Each group's filter matrix (K/group x C/group*kernel) = S_0 ... S_{J-1}.
        blocks = [
            chain_torch(params[g * j : (g + 1) * j], t.torch.eye(factors[g][-1].shape[1])).T
            for g in range(group)
        ]
        w = t.torch.cat(blocks, dim=0)
        cg = ins[0].shape[1] // group
        bias = ins[1] if len(ins) > 1 else None
        return [conv_torch(t, ins[0], w.reshape(w.shape[0], cg, -1), bias, node)]

    def lower(self, node, em):
        win: Window = node.attrs["window"]
        group = node.attrs["group"]
        x_shape = em.shape_in(0)
        n, c = x_shape[0], x_shape[1]
        k = node.attrs["out_shape"][1]
        s = em.struct("fg_conv_shape", "conv", **conv_shape_fields(c, k, group, win))
        cg, kg, p = c // group, k // group, prod(win.out_size)
        spatial_in = prod(win.in_size)
        cols_floats = im2col_floats(cg, win)
        in_size, out_size = prod(x_shape[1:]), k * p
        for i in range(n):
            for g in range(group):
                x_off = i * in_size + g * cg * spatial_in
                if cols_floats:
                    cols = em.scratch(cols_floats)
                    em.call("fg_im2col", s, em.x(0, x_off), cols)
                else:
                    cols = em.x(0, x_off)
                bias = em.x(1, g * kg) if node.input(1) else "NULL"
                emit_factor_chain(
                    em,
                    node.attrs["factors"][g],
                    cols,
                    em.y(0, i * out_size + g * kg * p),
                    p,
                    bias,
                    node.attrs.get("act"),
                    mode="spmm",
                )
