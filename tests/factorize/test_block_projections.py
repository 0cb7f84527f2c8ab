"""Block projections (bh rows × 1 column): each keeps exactly the blocks a naive reference
keeps, whole, and is the best approximation with that many blocks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from faustgen.factorize import (
    Constraint,
    block_energy,
    proj_spblock,
    proj_splinblock,
    spblock,
    splinblock,
)

# Small integers make many equal blocks (ties); heights up to 11 with bh up to 4 give short
# last panels.
matrices = st.tuples(st.integers(1, 11), st.integers(1, 6)).flatmap(
    lambda shape: arrays(
        np.float64,
        shape,
        elements=st.one_of(
            st.integers(-2, 2).map(float),
            st.floats(-10, 10, allow_nan=False, allow_infinity=False),
        ),
    )
)


def naive_blocks(x: np.ndarray, bh: int) -> dict[tuple[int, int], float]:
    """Energy of every block (p, j), summing squares top row first."""
    m, n = x.shape
    out = {}
    for p in range(-(-m // bh)):
        for j in range(n):
            e = 0.0
            for i in range(p * bh, min(p * bh + bh, m)):
                e += float(x[i, j]) * float(x[i, j])
            out[(p, j)] = e
    return out


def naive_mask(x: np.ndarray, kind: str, k: int, bh: int) -> np.ndarray:
    m, n = x.shape
    energy = naive_blocks(x, bh)
    keys = sorted(energy, key=lambda b: (-energy[b], b))  # row-major index breaks ties
    if kind == "spblock":
        kept = keys[: max(k, 0)]
    else:
        kept = []
        for p in range(-(-m // bh)):
            kept += [b for b in keys if b[0] == p][: max(k, 0)]
    mask = np.zeros((m, n), dtype=bool)
    for p, j in kept:
        mask[p * bh : p * bh + bh, j] = True
    return mask


PROJ = {"spblock": proj_spblock, "splinblock": proj_splinblock}
CONS = {"spblock": spblock, "splinblock": splinblock}


@settings(max_examples=150, deadline=None)
@given(
    x=matrices,
    k=st.integers(0, 14),
    bh=st.integers(1, 4),
    kind=st.sampled_from(sorted(PROJ)),
)
def test_block_projection_matches_naive_reference(x, k, bh, kind) -> None:
    expected = naive_mask(x, kind, k, bh)
    np.testing.assert_array_equal(PROJ[kind](x, k, bh), np.where(expected, x, 0.0))
    c = CONS[kind](k, bh)
    np.testing.assert_array_equal(c.support_of(x), expected)
    # The transposed constraint (1 × bh blocks) selects the transposed support.
    np.testing.assert_array_equal(c.transpose().support_of(x.T), expected.T)
    assert c.transpose().transpose() == c
    y = c.project(x)
    kept = np.where(expected, x, 0.0)
    if np.any(kept):
        assert np.linalg.norm(y) == pytest.approx(1.0)
        np.testing.assert_allclose(y * np.linalg.norm(kept), kept, rtol=1e-12, atol=1e-12)
    else:
        assert not np.any(y)


@settings(max_examples=100, deadline=None)
@given(x=matrices, k=st.integers(0, 14), bh=st.integers(1, 4))
def test_block_projections_satisfy_their_constraint(x, k, bh) -> None:
    m, n = x.shape
    P = -(-m // bh)
    for kind, proj in PROJ.items():
        y = proj(x, k, bh)
        c = CONS[kind](k, bh)
        # Kept blocks are whole: every entry of x inside a kept block survives.
        kept_blocks = block_energy(np.where(c.support_of(x), 1.0, 0.0), bh) > 0
        full = np.repeat(kept_blocks, bh, axis=0)[:m]
        np.testing.assert_array_equal(y, np.where(full, x, 0.0))
        per_panel = kept_blocks.sum(axis=1)
        if kind == "spblock":
            assert kept_blocks.sum() <= k
        else:
            assert np.all(per_panel <= k)
        assert np.count_nonzero(y) <= c.max_nnz(x.shape) <= c.block_nnz(x.shape)
        assert c.block_nnz(x.shape) <= P * n * bh
        assert c.max_nnz(x.shape) == c.transpose().max_nnz(x.T.shape)


@settings(max_examples=60, deadline=None)
@given(x=matrices, k=st.integers(1, 14), bh=st.integers(1, 4))
def test_spblock_is_the_best_k_block_approximation(x, k, bh) -> None:
    y = proj_spblock(x, k, bh)
    dropped = np.sort(block_energy(x, bh).ravel())[: max(block_energy(x, bh).size - k, 0)]
    assert np.linalg.norm(x - y) == pytest.approx(np.sqrt(dropped.sum()), abs=1e-9)


def test_block_projection_examples_and_ties() -> None:
    x = np.array(
        [
            [1.0, 0.0, 3.0],
            [1.0, 2.0, 0.0],
            [0.0, 2.0, 5.0],  # a short last panel of one row
        ]
    )
    # Blocks (bh = 2): panel 0 energies [2, 4, 9], panel 1 energies [0, 4, 25].
    np.testing.assert_array_equal(
        proj_spblock(x, 2, 2), [[0.0, 0.0, 3.0], [0.0, 0.0, 0.0], [0.0, 0.0, 5.0]]
    )
    # Three blocks: the tie at energy 4 goes to panel 0 (lowest row-major block index).
    np.testing.assert_array_equal(
        proj_spblock(x, 3, 2), [[0.0, 0.0, 3.0], [0.0, 2.0, 0.0], [0.0, 0.0, 5.0]]
    )
    np.testing.assert_array_equal(
        proj_splinblock(x, 1, 2), [[0.0, 0.0, 3.0], [0.0, 0.0, 0.0], [0.0, 0.0, 5.0]]
    )
    assert spblock(3, 2).max_nnz((3, 3)) == 6  # three full blocks fit in panel 0
    assert spblock(4, 2).max_nnz((3, 3)) == 7  # the fourth is in the short panel
    assert spblock(4, 2).block_nnz((3, 3)) == 8  # stored padded
    assert splinblock(1, 2).max_nnz((3, 3)) == 3
    assert splinblock(1, 2).block_nnz((3, 3)) == 4
    with pytest.raises(ValueError):
        Constraint("spblock", 1, bh=0)
    with pytest.raises(ValueError):
        block_energy(x, 0)


def test_block_projection_is_vectorized() -> None:
    import time

    x = np.random.default_rng(0).standard_normal((1000, 1000))
    t0 = time.perf_counter()
    y = proj_spblock(x, 5000, 16)
    proj_splinblock(x, 80, 16)
    spblock(5000, 16).transpose().support_of(x)
    assert time.perf_counter() - t0 < 2.0
    # 1000 rows: 62 full panels of 16 and a short one of 8.
    assert np.count_nonzero(y) <= 5000 * 16
    assert np.count_nonzero(block_energy(y, 16)) == 5000
