"""Packing of constant weights into the layouts of runtime_c/fg_runtime.h."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faustgen.layout.pack import (
    FG_CONV_PANEL_MAX,
    FG_MBLOCK,
    FG_PANEL,
    conv_scratch_floats,
    im2col_floats,
    pack_conv_weight,
    pack_mblocks,
    pack_panels,
)

HEADER = Path(__file__).resolve().parents[2] / "runtime_c" / "fg_runtime.h"


def test_constants_match_header():
    text = HEADER.read_text()
    panel = re.search(r"#define\s+FG_PANEL\s+(\d+)", text)
    mblock = re.search(r"#define\s+FG_MBLOCK\s+(\d+)", text)
    assert panel and mblock
    assert int(panel.group(1)) == FG_PANEL
    assert int(mblock.group(1)) == FG_MBLOCK
    panel_max = re.search(r"#define\s+FG_CONV_PANEL_MAX\s+(\d+)", text)
    assert int(panel_max.group(1)) == FG_CONV_PANEL_MAX


def _rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@settings(max_examples=60, deadline=None)
@given(k=st.integers(0, 40), n=st.integers(1, 70))
def test_pack_panels_layout(k, n):
    b = _rand((k, n), seed=k * 100 + n)
    bp = pack_panels(b)
    npanel = -(-n // FG_PANEL)
    assert bp.dtype == np.float32 and bp.ndim == 1 and bp.flags.c_contiguous
    assert bp.shape == (npanel * k * FG_PANEL,)
    # Bp[((p*K + k)*FG_PANEL + j] = B[k][p*FG_PANEL + j], zero past N
    p, kk, j = np.meshgrid(np.arange(npanel), np.arange(k), np.arange(FG_PANEL), indexing="ij")
    col = p * FG_PANEL + j
    want = np.where(col < n, b[kk, np.minimum(col, n - 1)], 0.0)
    got = bp[(p * k + kk) * FG_PANEL + j]
    np.testing.assert_array_equal(got, want)


def test_pack_panels_small_example():
    b = np.arange(2 * 17, dtype=np.float64).reshape(2, 17)
    bp = pack_panels(b)
    assert bp.dtype == np.float32
    assert bp.shape == (2 * 2 * 16,)
    np.testing.assert_array_equal(bp[:16], b[0, :16])  # panel 0, row 0
    np.testing.assert_array_equal(bp[16:32], b[1, :16])  # panel 0, row 1
    np.testing.assert_array_equal(bp[32:48], [b[0, 16]] + [0] * 15)  # panel 1, row 0
    np.testing.assert_array_equal(bp[48:64], [b[1, 16]] + [0] * 15)


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 23), k=st.integers(0, 40))
def test_pack_mblocks_layout(m, k):
    a = _rand((m, k), seed=m * 100 + k)
    ap = pack_mblocks(a)
    nb = -(-m // FG_MBLOCK)
    assert ap.dtype == np.float32 and ap.ndim == 1
    assert ap.shape == (nb * k * FG_MBLOCK,)
    # Ap[((mb*K + k)*FG_MBLOCK + i] = A[mb*FG_MBLOCK + i][k], zero past M
    blk, kk, i = np.meshgrid(np.arange(nb), np.arange(k), np.arange(FG_MBLOCK), indexing="ij")
    row = blk * FG_MBLOCK + i
    want = np.where(row < m, a[np.minimum(row, m - 1), kk], 0.0)
    np.testing.assert_array_equal(ap[(blk * k + kk) * FG_MBLOCK + i], want)


def test_pack_mblocks_small_example():
    a = np.arange(5 * 2, dtype=np.float32).reshape(5, 2)
    ap = pack_mblocks(a)
    # block 0: k=0 -> rows 0..3 col 0, k=1 -> rows 0..3 col 1; block 1: row 4, then zeros
    np.testing.assert_array_equal(ap[:4], a[:4, 0])
    np.testing.assert_array_equal(ap[4:8], a[:4, 1])
    np.testing.assert_array_equal(ap[8:12], [a[4, 0], 0, 0, 0])
    np.testing.assert_array_equal(ap[12:16], [a[4, 1], 0, 0, 0])


@settings(max_examples=40, deadline=None)
@given(
    rank=st.integers(1, 3),
    group=st.integers(1, 3),
    kg=st.integers(1, 9),
    cg=st.integers(1, 3),
    kernel=st.lists(st.integers(1, 3), min_size=3, max_size=3),
)
def test_pack_conv_weight_layout(rank, group, kg, cg, kernel):
    kshape = tuple(kernel[3 - rank :])
    w = _rand((group * kg, cg, *kshape), seed=rank * 1000 + group * 100 + kg * 10 + cg)
    wp = pack_conv_weight(w, group)
    r = cg * int(np.prod(kshape))
    kgp = -(-kg // FG_MBLOCK) * FG_MBLOCK
    assert wp.dtype == np.float32 and wp.shape == (group * kgp * r,)
    for g in range(group):
        block = wp[g * kgp * r : (g + 1) * kgp * r]
        filt = w[g * kg : (g + 1) * kg].reshape(kg, r)  # columns (c, z, y, x)
        np.testing.assert_array_equal(block, pack_mblocks(filt))


def test_pack_conv_weight_column_order():
    # one filter, 2 channels, 2x3 kernel: columns must run c, then y, then x
    w = np.arange(12, dtype=np.float32).reshape(1, 2, 2, 3)
    wp = pack_conv_weight(w, 1).reshape(12, FG_MBLOCK)
    np.testing.assert_array_equal(wp[:, 0], np.arange(12))
    assert not wp[:, 1:].any()


def test_pack_rejects_bad_input():
    with pytest.raises(ValueError):
        pack_panels(np.zeros(3))
    with pytest.raises(ValueError):
        pack_mblocks(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError):
        pack_panels(np.array([["a"]]))
    with pytest.raises(ValueError):
        pack_conv_weight(np.zeros((4, 2)), 1)
    with pytest.raises(ValueError):
        pack_conv_weight(np.zeros((6, 1, 3, 3)), 4)
    with pytest.raises(ValueError):
        pack_conv_weight(np.zeros((6, 1, 3, 3)), 0)
    with pytest.raises(ValueError):
        conv_scratch_floats(C=3, W=4, OW=4, kw=1, group=2)


def test_im2col_floats():
    # LeNet conv1: 1 -> 6, 5x5, pad 2 on 28x28
    lenet1 = dict(C=1, H=28, W=28, K=6, OH=28, OW=28, kh=5, kw=5, ph=2, pw=2)
    assert im2col_floats(**lenet1) == 25 * 28 * 28
    # LeNet conv2: 6 -> 16, 5x5 on 14x14
    assert im2col_floats(C=6, H=14, W=14, K=16, OH=10, OW=10, kh=5, kw=5) == 150 * 100
    # pointwise: no scratch
    assert im2col_floats(C=8, H=7, W=9, OH=7, OW=9, kh=1, kw=1, K=4) == 0
    assert im2col_floats(C=8, D=2, H=7, W=9, OD=2, OH=7, OW=9, kw=1, group=2) == 0
    # 1x1 but strided or padded: im2col needed, per group
    assert im2col_floats(C=8, H=8, W=8, OH=4, OW=4, kh=1, kw=1, sh=2, sw=2) == 8 * 16
    assert im2col_floats(C=8, H=8, W=8, OH=10, OW=10, kh=1, kw=1, ph=1, pw=1) == 8 * 100
    assert im2col_floats(C=8, H=8, W=8, OH=8, OW=8, kh=3, kw=3, ph=1, pw=1, group=4) == (2 * 9 * 64)
    # 1-D and 3-D
    assert im2col_floats(C=3, W=10, OW=8, kw=3) == 3 * 3 * 8
    assert im2col_floats(C=2, D=4, H=4, W=4, OD=2, OH=2, OW=2, kd=3, kh=3, kw=3) == 2 * 27 * 8
    # trailing pad only (output larger than input): not pointwise
    assert im2col_floats(C=2, W=5, OW=6, kw=1) == 2 * 6


def test_conv_scratch_floats():
    # the im2col matrix, then FG_CONV_PANEL_MAX floats per filter-matrix row for the panels
    lenet1 = dict(C=1, H=28, W=28, K=6, OH=28, OW=28, kh=5, kw=5, ph=2, pw=2)
    assert conv_scratch_floats(**lenet1) == 25 * 28 * 28 + 25 * FG_CONV_PANEL_MAX
    pointwise = dict(C=8, D=2, H=7, W=9, OD=2, OH=7, OW=9, kw=1, group=2)
    assert conv_scratch_floats(**pointwise) == 4 * FG_CONV_PANEL_MAX
