"""Emit a chain of sparse factors as kernel calls (shared by FactorizedDense and FactorizedConv).

mode "matvec": `count` row vectors x (count x n) -> y (count x m) per factor S (m x n);
mode "spmm":   a patch matrix X (n x count) -> Y (m x count), contiguous rows of `count`.
The rightmost factor is applied first; bias and activation go to the last call.
"""

from __future__ import annotations

import numpy as np

from faustgen.layout.factor import BSR_STORAGES, Factor, bsr_blocks, ell_width
from faustgen.layout.pack import pack_mblocks, pack_panels

_INDEX_CTYPE = {"u16": "uint16_t", "i32": "int32_t"}


def emit_factor_chain(
    em,
    factors: list[Factor],
    src,
    dst,
    count: int,
    bias,
    act: tuple[str, float, float] | None,
    mode: str,
) -> None:
    node = em.node.name
    t = src
    for q in range(len(factors) - 1, -1, -1):
        f = factors[q]
        m = f.shape[0]
        last = q == 0
        out = dst if last else em.scratch(m * count)
        kind, a, b = (act or ("FG_ACT_NONE", 0.0, 0.0)) if last else ("FG_ACT_NONE", 0.0, 0.0)
        emit_factor(
            em, f, f"{node}_S{q}", t, out, count, bias if last else "NULL", (kind, a, b), mode
        )
        t = out


def emit_factor(em, f: Factor, hint: str, src, dst, count: int, bias, act, mode: str) -> None:
    m, n = f.shape
    kind, a, b = act
    tail = (bias, kind, em.f(a), em.f(b))
    s = f.matrix
    what = f"{hint}: {m}x{n}, {f.nnz} nonzeros, {f.storage}"
    if f.storage == "dense":
        dense = s.toarray().astype(np.float32)
        if mode == "matvec":
            w = em.weight(pack_panels(dense.T), hint, comment=f"{what}, as panels of 16 rows")
            em.call("fg_dense", src, dst, count, n, m, w, *tail)
        else:
            w = em.weight(pack_mblocks(dense), hint, comment=f"{what}, in blocks of 4 rows")
            em.call("fg_gemm_a", w, src, dst, m, n, count, *tail)
        return
    it = f.index_type
    ctype = _INDEX_CTYPE[it]
    if f.storage == "csr":
        ptr = em.weight(s.indptr, hint + "_indptr", "int32_t", comment=f"{what}: row pointers")
        idx = em.weight(s.indices, hint + "_indices", ctype, comment=f"{hint}: column indices")
        val = em.weight(s.data, hint + "_data", comment=f"{hint}: values")
        kernel = f"fg_csr_{'matvec' if mode == 'matvec' else 'spmm'}_{it}"
        if mode == "matvec":
            em.call(kernel, count, m, n, ptr, idx, val, src, dst, *tail)
        else:
            em.call(kernel, m, count, ptr, idx, val, src, dst, *tail)
        return
    if mode != "matvec":
        raise ValueError(f"{f.storage} storage is for matvec factors only")
    if f.storage == "ell":
        k = ell_width(s)
        indices = np.zeros((k, m), np.int64)
        values = np.zeros((k, m), np.float32)
        for i in range(m):
            lo, hi = s.indptr[i], s.indptr[i + 1]
            indices[: hi - lo, i] = s.indices[lo:hi]
            values[: hi - lo, i] = s.data[lo:hi]
        idx = em.weight(
            indices,
            hint + "_indices",
            ctype,
            comment=f"{what}: {k} per row, slot-major column indices",
        )
        val = em.weight(values, hint + "_data", comment=f"{hint}: values, slot-major")
        em.call(f"fg_ell_matvec_{it}", count, m, n, k, idx, val, src, dst, *tail)
        return
    if f.storage in BSR_STORAGES:
        br = BSR_STORAGES[f.storage]
        ptr, cols, values = bsr_blocks(s, br)
        p = em.weight(
            ptr,
            hint + "_panel_ptr",
            "int32_t",
            comment=f"{what}: {len(cols)} blocks of {br}x1, panel pointers",
        )
        c = em.weight(cols, hint + "_block_cols", ctype, comment=f"{hint}: block columns")
        v = em.weight(values, hint + "_blocks", comment=f"{hint}: {br} values per block")
        em.call(f"fg_{f.storage}_matvec_{it}", count, m, n, p, c, v, src, dst, *tail)
        return
    raise ValueError(f"unknown storage {f.storage}")
