"""The sparse-factor kernels (runtime_c/fg_sparse.c) against scipy.sparse.

Every kernel gets the arrays the code generator would emit and is compared with the
scipy product built from the very same arrays: csr_matrix((data, indices, indptr)) @ x
for CSR, a COO matrix of the slot-major ELL arrays (padding included), scipy's own
bsr_matrix with 16x1 blocks for BSR16, and csr @ X for the spmm. The runtime is loaded
through cffi exactly as in test_runtime_kernels.py (its `rt` fixture: every
runtime_c/*.c at -O2 with the strict warning flags); fg_sparse.c is additionally built
alone at -O3 and at -O3 -march=native (the host target's flags), whose vectorized
code differs.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess

import numpy as np
import pytest
import scipy.sparse as sps
from hypothesis import given, settings
from hypothesis import strategies as st
from test_runtime_kernels import (  # shared helpers and the session-scoped runtime
    ACT,
    ACT_PARAMS,
    CC,
    HEADER,
    RUNTIME,
    STRICT,
    _cdef_from_header,
    act_ref,
    assert_close,
    f32,
    ptr,
    rt,
)

cffi = pytest.importorskip("cffi")

pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler")

BR = 16  # FG_BSR_ROWS
BUILDS = ["rt -O2 (all runtime sources)", "-O3", "-O3 -march=native"]

__all__ = ["rt"]  # re-exported fixture


@pytest.fixture(scope="session")
def sparse_builds(tmp_path_factory):
    """fg_sparse.c alone, per extra flag set (compiled concurrently): {flags: (ffi, lib)}."""
    d = tmp_path_factory.mktemp("fgsparse")
    jobs = {}
    for i, flags in enumerate(BUILDS[1:]):
        so = d / f"libfgsparse{i}.so"
        cmd = [CC, *flags.split(), *STRICT, "-shared", "-fPIC", str(RUNTIME / "fg_sparse.c")]
        cmd += ["-o", str(so), "-lm"]
        jobs[flags] = (so, subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True))
    out = {}
    for flags, (so, proc) in jobs.items():
        _, err = proc.communicate()
        assert proc.returncode == 0, err
        ffi = cffi.FFI()
        ffi.cdef(_cdef_from_header(HEADER.read_text()))
        out[flags] = (ffi, ffi.dlopen(str(so)))
    return out


@pytest.fixture(scope="session", params=BUILDS)
def srt(request, sparse_builds):
    if request.param.startswith("rt "):
        return request.getfixturevalue("rt")
    return sparse_builds[request.param]


def iptr(ffi, a: np.ndarray):
    ctype = {np.dtype(np.int32): "int32_t[]", np.dtype(np.uint16): "uint16_t[]"}[a.dtype]
    assert a.flags.c_contiguous
    return ffi.from_buffer(ctype, a)


def index_variants(indices: np.ndarray, n: int) -> list[tuple[str, np.ndarray]]:
    """(suffix, index array) for i32 and, when n <= 65536, u16."""
    out = [("i32", np.ascontiguousarray(indices, dtype=np.int32))]
    if n <= 65536:
        out.append(("u16", np.ascontiguousarray(indices, dtype=np.uint16)))
    return out


def random_csr(rng, m: int, n: int, max_row: int, empty_share: float) -> sps.csr_matrix:
    """Unsorted column indices, duplicates allowed (they add up, in scipy too)."""
    lens = rng.integers(0, max_row + 1, m)
    lens[rng.random(m) < empty_share] = 0
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    indices = rng.integers(0, n, indptr[-1]).astype(np.int32)
    data = f32(rng.uniform(-1, 1, indptr[-1]))
    return sps.csr_matrix((data, indices, indptr), shape=(m, n))


def want_matvec(s, x: np.ndarray, bias, act: str) -> np.ndarray:
    """rows x m: act(x @ S^T + bias) in float64."""
    y = (s.astype(np.float64) @ x.astype(np.float64).T).T
    if bias is not None:
        y = y + bias
    a, b = ACT_PARAMS[act]
    return act_ref(y, act, a, b)


# ---- CSR matvec ----------------------------------------------------------------------


def csr_matvec(ffi, lib, s: sps.csr_matrix, x, bias, act, suffix_idx):
    m, n = s.shape
    suffix, idx = suffix_idx
    a, b = ACT_PARAMS[act]
    y = np.full((x.shape[0], m), np.nan, dtype=np.float32)
    fn = getattr(lib, f"fg_csr_matvec_{suffix}")
    fn(
        x.shape[0],
        m,
        n,
        iptr(ffi, s.indptr.astype(np.int32)),
        iptr(ffi, idx),
        ptr(ffi, f32(s.data)),
        ptr(ffi, x),
        ptr(ffi, y),
        ptr(ffi, bias),
        ACT[act],
        a,
        b,
    )
    return y


@settings(max_examples=25, deadline=None)
@given(
    rows=st.sampled_from([1, 1, 2, 5]),
    m=st.integers(1, 90),
    n=st.integers(1, 400),
    max_row=st.integers(0, 60),
    empty=st.sampled_from([0.0, 0.3]),
    act=st.sampled_from(list(ACT)),
    use_bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_csr_matvec(srt, rows, m, n, max_row, empty, act, use_bias, seed):
    ffi, lib = srt
    rng = np.random.default_rng(seed)
    s = random_csr(rng, m, n, max_row, empty)
    x = f32(rng.uniform(-1, 1, (rows, n)))
    bias = f32(rng.uniform(-1, 1, m)) if use_bias else None
    want = want_matvec(s, x, bias, act)
    outs = [csr_matvec(ffi, lib, s, x, bias, act, v) for v in index_variants(s.indices, n)]
    for y in outs:
        assert_close(y, want, max_row)
    np.testing.assert_array_equal(outs[0], outs[-1])


# ---- ELL matvec ----------------------------------------------------------------------


def ell_arrays(rng, m: int, n: int, k: int):
    """Slot-major (k x m) indices and data; row i uses its first len_i slots, the
    rest is padding: data 0 and any valid column (some at n - 1)."""
    idx = rng.integers(0, n, (k, m)).astype(np.int32)
    data = f32(rng.uniform(-1, 1, (k, m)))
    lens = np.where(rng.random(m) < 0.25, rng.integers(0, k + 1, m), k)
    pad = np.arange(k)[:, None] >= lens[None, :]
    data[pad] = 0.0
    idx[pad & (rng.random((k, m)) < 0.5)] = n - 1
    return idx, data


@settings(max_examples=25, deadline=None)
@given(
    rows=st.sampled_from([1, 1, 3]),
    m=st.one_of(st.integers(1, 40), st.sampled_from([16, 31, 32, 33, 64, 100, 300])),
    n=st.integers(1, 500),
    k=st.integers(0, 40),
    act=st.sampled_from(list(ACT)),
    use_bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_ell_matvec(srt, rows, m, n, k, act, use_bias, seed):
    ffi, lib = srt
    rng = np.random.default_rng(seed)
    idx, data = ell_arrays(rng, m, n, k)
    # scipy from the same arrays: entry (i, idx[s, i]) = data[s, i], padding included
    rows_of = np.broadcast_to(np.arange(m), (k, m))
    s = sps.coo_matrix((data.ravel(), (rows_of.ravel(), idx.ravel())), shape=(m, n)).tocsr()
    x = f32(rng.uniform(-1, 1, (rows, n)))
    bias = f32(rng.uniform(-1, 1, m)) if use_bias else None
    a, b = ACT_PARAMS[act]
    want = want_matvec(s, x, bias, act)
    outs = []
    for suffix, ix in index_variants(idx, n):
        y = np.full((rows, m), np.nan, dtype=np.float32)
        getattr(lib, f"fg_ell_matvec_{suffix}")(
            rows,
            m,
            n,
            k,
            iptr(ffi, ix),
            ptr(ffi, data),
            ptr(ffi, x),
            ptr(ffi, y),
            ptr(ffi, bias),
            ACT[act],
            a,
            b,
        )
        assert_close(y, want, k)
        outs.append(y)
    np.testing.assert_array_equal(outs[0], outs[-1])


# ---- BSR16 / BSR8 matvec -------------------------------------------------------------


def bsr_arrays(rng, m: int, n: int, max_blocks: int, empty: float, br: int = BR):
    """panel_ptr, block columns, values (blocks x br) with zeros past m."""
    npanel = -(-m // br)
    lens = rng.integers(0, max_blocks + 1, npanel)
    lens[rng.random(npanel) < empty] = 0
    panel_ptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    nb = int(panel_ptr[-1])
    cols = rng.integers(0, n, nb).astype(np.int32)
    values = f32(rng.uniform(-1, 1, (nb, br)))
    values[rng.random((nb, br)) < 0.1] = 0.0
    panel_of = np.repeat(np.arange(npanel), lens)
    values[(panel_of[:, None] * br + np.arange(br)[None, :]) >= m] = 0.0
    return panel_ptr, cols, values


@settings(max_examples=25, deadline=None)
@given(
    br=st.sampled_from([16, 8]),
    rows=st.sampled_from([1, 1, 4]),
    m=st.one_of(st.integers(1, 40), st.sampled_from([7, 8, 9, 15, 16, 17, 48, 100, 300])),
    n=st.integers(1, 500),
    max_blocks=st.integers(0, 40),
    empty=st.sampled_from([0.0, 0.3]),
    act=st.sampled_from(list(ACT)),
    use_bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_bsr_matvec(srt, br, rows, m, n, max_blocks, empty, act, use_bias, seed):
    """fg_bsr16_matvec (br = 16) and fg_bsr8_matvec (br = 8) against scipy's BSR."""
    ffi, lib = srt
    rng = np.random.default_rng(seed)
    panel_ptr, cols, values = bsr_arrays(rng, m, n, max_blocks, empty, br)
    npanel = len(panel_ptr) - 1
    # scipy's own BSR with br x 1 blocks, cut to m rows
    s = sps.bsr_matrix(
        (values.reshape(-1, br, 1), cols, panel_ptr), shape=(npanel * br, n), blocksize=(br, 1)
    ).tocsr()[:m]
    x = f32(rng.uniform(-1, 1, (rows, n)))
    bias = f32(rng.uniform(-1, 1, m)) if use_bias else None
    a, b = ACT_PARAMS[act]
    want = want_matvec(s, x, bias, act)
    outs = []
    for suffix, ix in index_variants(cols, n):
        y = np.full((rows, m), np.nan, dtype=np.float32)
        getattr(lib, f"fg_bsr{br}_matvec_{suffix}")(
            rows,
            m,
            n,
            iptr(ffi, panel_ptr),
            iptr(ffi, ix),
            ptr(ffi, values),
            ptr(ffi, x),
            ptr(ffi, y),
            ptr(ffi, bias),
            ACT[act],
            a,
            b,
        )
        assert_close(y, want, max_blocks)
        outs.append(y)
    np.testing.assert_array_equal(outs[0], outs[-1])


# ---- CSR spmm ------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(1, 24),
    n=st.integers(1, 200),
    ncols=st.one_of(st.integers(1, 140), st.sampled_from([15, 16, 17, 64, 100, 784])),
    max_row=st.integers(0, 40),
    empty=st.sampled_from([0.0, 0.3]),
    act=st.sampled_from(list(ACT)),
    use_bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_csr_spmm(srt, m, n, ncols, max_row, empty, act, use_bias, seed):
    ffi, lib = srt
    rng = np.random.default_rng(seed)
    s = random_csr(rng, m, n, max_row, empty)
    xm = f32(rng.uniform(-1, 1, (n, ncols)))
    bias = f32(rng.uniform(-1, 1, m)) if use_bias else None
    a, b = ACT_PARAMS[act]
    want = s.astype(np.float64) @ xm.astype(np.float64)
    if bias is not None:
        want = want + bias[:, None]
    want = act_ref(want, act, a, b)
    outs = []
    for suffix, ix in index_variants(s.indices, n):
        y = np.full((m, ncols), np.nan, dtype=np.float32)
        getattr(lib, f"fg_csr_spmm_{suffix}")(
            m,
            ncols,
            iptr(ffi, s.indptr.astype(np.int32)),
            iptr(ffi, ix),
            ptr(ffi, f32(s.data)),
            ptr(ffi, xm),
            ptr(ffi, y),
            ptr(ffi, bias),
            ACT[act],
            a,
            b,
        )
        assert_close(y, want, max_row)
        outs.append(y)
    np.testing.assert_array_equal(outs[0], outs[-1])


# ---- fixed cases -----------------------------------------------------------------------


@pytest.mark.parametrize("n", [65536, 70000])
def test_large_column_indices(srt, n):
    """The largest u16 index (n = 65536) and i32 indices past it, in all four kernels."""
    ffi, lib = srt
    rng = np.random.default_rng(n)
    m = 20
    s = random_csr(rng, m, n, 6, 0.0)
    s.indices[::3] = n - 1
    x = f32(rng.uniform(-1, 1, (1, n)))
    want = want_matvec(s, x, None, "none")
    for v in index_variants(s.indices, n):
        assert_close(csr_matvec(ffi, lib, s, x, None, "none", v), want, 6)
    panel_ptr = np.array([0, 3, 5], np.int32)
    cols = np.array([n - 1, 0, n - 2, n - 1, 7], np.int32)
    values = f32(rng.uniform(-1, 1, (5, BR)))
    values[3:, m - BR :] = 0.0
    sb = sps.bsr_matrix((values.reshape(-1, BR, 1), cols, panel_ptr), shape=(32, n)).tocsr()[:m]
    want_b = want_matvec(sb, x, None, "none")
    idx, data = ell_arrays(rng, m, n, 3)
    idx[0] = n - 1
    rows_of = np.broadcast_to(np.arange(m), (3, m))
    se = sps.coo_matrix((data.ravel(), (rows_of.ravel(), idx.ravel())), shape=(m, n)).tocsr()
    want_e = want_matvec(se, x, None, "none")
    xm = f32(rng.uniform(-1, 1, (n, 3)))
    want_s = s.astype(np.float64) @ xm
    for suffix, ix in index_variants(cols, n):
        y = np.empty((1, m), np.float32)
        getattr(lib, f"fg_bsr16_matvec_{suffix}")(
            1,
            m,
            n,
            iptr(ffi, panel_ptr),
            iptr(ffi, ix),
            ptr(ffi, values),
            ptr(ffi, x),
            ptr(ffi, y),
            ffi.NULL,
            0,
            0.0,
            0.0,
        )
        assert_close(y, want_b, 5)
    for suffix, ix in index_variants(idx, n):
        y = np.empty((1, m), np.float32)
        getattr(lib, f"fg_ell_matvec_{suffix}")(
            1,
            m,
            n,
            3,
            iptr(ffi, ix),
            ptr(ffi, data),
            ptr(ffi, x),
            ptr(ffi, y),
            ffi.NULL,
            0,
            0.0,
            0.0,
        )
        assert_close(y, want_e, 3)
    for suffix, ix in index_variants(s.indices, n):
        y = np.empty((m, 3), np.float32)
        getattr(lib, f"fg_csr_spmm_{suffix}")(
            m,
            3,
            iptr(ffi, s.indptr),
            iptr(ffi, ix),
            ptr(ffi, f32(s.data)),
            ptr(ffi, xm),
            ptr(ffi, y),
            ffi.NULL,
            0,
            0.0,
            0.0,
        )
        assert_close(y, want_s, 6)


def factor_call(ffi, lib, storage: str, f: sps.csr_matrix, x, y, bias, act: int):
    """One factor applied as faustgen/ops/sparse.py emits it (u16 indices)."""
    from faustgen.layout.factor import bsr_blocks, ell_width

    m, n = f.shape
    rows = x.shape[0]
    args = (ptr(ffi, x), ptr(ffi, y), ptr(ffi, bias), act, 0.0, 0.0)
    if storage == "csr":
        lib.fg_csr_matvec_u16(
            rows,
            m,
            n,
            iptr(ffi, f.indptr.astype(np.int32)),
            iptr(ffi, f.indices.astype(np.uint16)),
            ptr(ffi, f32(f.data)),
            *args,
        )
    elif storage == "ell":
        k = ell_width(f)
        idx = np.zeros((k, m), np.uint16)
        val = np.zeros((k, m), np.float32)
        for i in range(m):
            lo, hi = f.indptr[i], f.indptr[i + 1]
            idx[: hi - lo, i] = f.indices[lo:hi]
            val[: hi - lo, i] = f.data[lo:hi]
        lib.fg_ell_matvec_u16(rows, m, n, k, iptr(ffi, idx), ptr(ffi, val), *args)
    else:
        br = {"bsr16": 16, "bsr8": 8}[storage]
        panel_ptr, cols, values = bsr_blocks(f, br)
        getattr(lib, f"fg_{storage}_matvec_u16")(
            rows,
            m,
            n,
            iptr(ffi, panel_ptr.astype(np.int32)),
            iptr(ffi, cols.astype(np.uint16)),
            ptr(ffi, f32(values)),
            *args,
        )


@pytest.mark.parametrize("storage", ["csr", "ell", "bsr16", "bsr8"])
def test_factor_chain_layer_shapes(srt, storage):
    """A 300x784 layer as two factors (300x392, 392x784), batch 1 and 3, packed by the
    code generator's own helpers and chained as it emits them (bias + ReLU last)."""
    ffi, lib = srt
    rng = np.random.default_rng(7)
    s1 = sps.random(300, 392, density=0.25, format="csr", random_state=1, dtype=np.float32)
    s2 = sps.random(392, 784, density=0.1, format="csr", random_state=2, dtype=np.float32)
    bias = f32(rng.standard_normal(300))
    for rows in (1, 3):
        x = f32(rng.standard_normal((rows, 784)))
        want = np.maximum((s1.astype(np.float64) @ (s2.astype(np.float64) @ x.T)).T + bias, 0)
        t = np.empty((rows, 392), np.float32)
        y = np.empty((rows, 300), np.float32)
        factor_call(ffi, lib, storage, s2, x, t, None, ACT["none"])
        factor_call(ffi, lib, storage, s1, t, y, bias, ACT["relu"])
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-4)


# ---- vectorization guard ---------------------------------------------------------------

PACKED_OP = re.compile(r"^\s+(v?(mul|add|fn?madd\d*)ps|fmla\s+v\d+\.4s|fmul\s+v\d+\.4s)\b")
SCALAR_OP = re.compile(r"^\s+(v?(mul|add|fn?madd\d*)ss|fn?madd\s+s\d+|fmul\s+s\d+)\b")


def _function_asm(asm: str, fn: str) -> list[str]:
    lines = asm.splitlines()
    start = lines.index(fn + ":")
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("\t.size\t" + fn))
    return lines[start:end]


VEC_CASES = [
    ("gcc", "-O2"),
    ("gcc", "-O3"),
    ("gcc", "-O3 -march=x86-64-v3"),
    ("aarch64-linux-gnu-gcc", "-O2 -mcpu=cortex-a72"),
    ("aarch64-linux-gnu-gcc", "-O3 -mcpu=cortex-a72"),
]


@pytest.fixture(scope="module")
def vec_asm(tmp_path_factory):
    """fg_sparse.c's assembly for every installed VEC_CASES compiler (concurrently)."""
    d = tmp_path_factory.mktemp("fgsparse_asm")
    jobs = {}
    for i, (cc, flags) in enumerate(VEC_CASES):
        if shutil.which(cc) is None:
            continue
        asm = d / f"fg_sparse{i}.s"
        cmd = [cc, *flags.split(), *STRICT, "-S", str(RUNTIME / "fg_sparse.c"), "-o", str(asm)]
        jobs[(cc, flags)] = (asm, subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True))
    out = {}
    for key, (asm, proc) in jobs.items():
        _, err = proc.communicate()
        assert proc.returncode == 0, err
        out[key] = asm.read_text()
    return out


@pytest.mark.parametrize("cc,flags", VEC_CASES)
def test_bsr_and_spmm_vectorize(vec_asm, cc, flags):
    """The BSR16 panels and spmm chunks compile to packed multiply(-add)s, the scalar ones
    being only the few of the narrow / partial-block epilogues (the kernels rely on gcc's
    SLP vectorizer, see fg_sparse.c; a change that breaks it shows up here first)."""
    if (cc, flags) not in vec_asm:
        pytest.skip(f"{cc} not installed")
    if cc == "gcc" and platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86-64 instruction names")
    text = vec_asm[(cc, flags)]
    for fn, max_scalar in [
        ("fg_bsr16_matvec_u16", 4),
        ("fg_bsr16_matvec_i32", 4),
        ("fg_csr_spmm_u16", 8),
    ]:
        body = _function_asm(text, fn)
        packed = sum(1 for ln in body if PACKED_OP.match(ln))
        scalar = sum(1 for ln in body if SCALAR_OP.match(ln))
        assert packed >= 10 and scalar <= max_scalar, (fn, flags, packed, scalar)
