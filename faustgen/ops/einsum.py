"""Einsum of one or two operands without repeated indices within an operand: the forms
transformers export (`bhid,bhjd->bhij`, `bhij,bhjd->bhid`, `...ij,...jk->...ik`,
`ij->ji`). Two operands become transposes around one batched matrix product
(batch indices, then free indices of A, contracted, free indices of B)."""

from __future__ import annotations

import string

import numpy as np

from faustgen.ops.base import Op, fail, prod, register_op
from faustgen.ops.movement import collapse, contiguous_strides


def parse_equation(eq: str, ranks: list[int]) -> tuple[list[str], str] | str:
    """(input terms, output term) with '...' expanded to capital letters, or an error."""
    eq = eq.replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        return f"equation '{eq}' names {len(terms)} operands, the node has {len(ranks)}"
    ell_rank = 0
    for t, r in zip(terms, ranks, strict=True):
        if "..." in t:
            ell_rank = max(ell_rank, r - (len(t) - 3))
    ell = string.ascii_uppercase[:ell_rank]
    expanded = []
    for t, r in zip(terms, ranks, strict=True):
        if "..." in t:
            k = r - (len(t) - 3)
            t = t.replace("...", ell[ell_rank - k :])
        if len(t) != r or not t.isalpha():
            return f"term '{t}' does not fit an operand of rank {r}"
        expanded.append(t)
    if not arrow:
        once = sorted(c for c in set("".join(expanded)) if "".join(expanded).count(c) == 1)
        out = ell + "".join(c for c in once if c.islower())
    else:
        out = out.replace("...", ell)
    return expanded, out


@register_op("Einsum")
class Einsum(Op):
    def parse(self, ctx):
        ranks = [len(ctx.shape(i)) for i in range(len(ctx.inputs))]
        parsed = parse_equation(str(ctx.attr("equation", "")), ranks)
        if isinstance(parsed, str):
            ctx.fail(parsed)
        terms, out = parsed
        return ctx.node({"terms": tuple(terms), "out": out})

    def _sizes(self, node, ins) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for term, t in zip(node.attrs["terms"], ins, strict=True):
            for c, d in zip(term, t.shape, strict=True):
                if sizes.setdefault(c, d) != d:
                    fail(node, f"index '{c}' has sizes {sizes[c]} and {d}")
        return sizes

    def infer(self, node, ins):
        sizes = self._sizes(node, ins)
        return [(tuple(sizes[c] for c in node.attrs["out"]), ins[0].dtype)]

    def compute(self, node, ins):
        eq = ",".join(node.attrs["terms"]) + "->" + node.attrs["out"]
        return [np.einsum(eq, *ins).astype(ins[0].dtype)]

    def compute_torch(self, node, ins, t):
        eq = ",".join(node.attrs["terms"]) + "->" + node.attrs["out"]
        return [t.torch.einsum(eq, *ins)]

    def batch_axes_ok(self, node, ins):
        out = node.attrs["out"]
        return bool(out) and all(t and t[0] == out[0] for t in node.attrs["terms"])

    def lower(self, node, em):
        terms, out = node.attrs["terms"], node.attrs["out"]
        for t in terms:
            if len(set(t)) != len(t):
                em.fail(f"repeated index in '{t}' (a diagonal) is not supported")
        sizes = self._sizes(node, [em.graph.tensors[i] for i in node.inputs])
        if len(terms) == 1:
            if sorted(terms[0]) != sorted(out):
                em.fail("a one-operand Einsum that sums indices is not supported")
            _permute(
                em, em.x(0), em.y(), [sizes[c] for c in terms[0]], [terms[0].index(c) for c in out]
            )
            return
        if len(terms) != 2:
            em.fail(f"Einsum of {len(terms)} operands is not supported")
        a, b = terms
        for c in a + b:
            if c not in out and (c in a) != (c in b):
                em.fail(f"index '{c}' is summed within one operand; not supported")
        batch = [c for c in out if c in a and c in b]
        left = [c for c in out if c in a and c not in b]
        right = [c for c in out if c in b and c not in a]
        contracted = [c for c in a if c in b and c not in out]
        order_a, order_b = batch + left + contracted, batch + contracted + right
        nb, m = prod([sizes[c] for c in batch]), prod([sizes[c] for c in left])
        k, n = prod([sizes[c] for c in contracted]), prod([sizes[c] for c in right])
        ops = []
        for i, (term, order) in enumerate(((a, order_a), (b, order_b))):
            if list(term) == order:
                ops.append(em.x(i))
            else:
                tmp = em.scratch(prod([sizes[c] for c in term]))
                _permute(em, em.x(i), tmp, [sizes[c] for c in term], [term.index(c) for c in order])
                ops.append(tmp)
        mm = batch + left + right
        dest = em.y() if mm == list(out) else em.scratch(nb * m * n)
        em.call("fg_matmul", ops[0], ops[1], dest, nb, m, k, n, m * k, k * n)
        if mm != list(out):
            _permute(em, dest, em.y(), [sizes[c] for c in mm], [mm.index(c) for c in out])


def _permute(em, src, dest, shape, perm) -> None:
    """dest (contiguous) = src (contiguous, `shape`) with its axes in the order `perm`."""
    st = contiguous_strides(shape)
    out_shape, (strides,) = collapse([shape[p] for p in perm], [st[p] for p in perm])
    if len(out_shape) == 1 and strides[0] == 1:
        em.call("fg_copy", src, dest, prod(shape))
        return
    if len(out_shape) > 8:
        em.fail(f"transpose of rank {len(out_shape)} after axis merging; at most 8 supported")
    p = em.struct("fg_perm", "perm", ndim=len(out_shape), shape=out_shape, stride=strides)
    em.call("fg_transpose", p, src, dest)
