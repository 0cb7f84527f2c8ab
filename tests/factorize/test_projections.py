"""Projections: each keeps exactly the entries a naive sort-based reference keeps."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from faustgen.factorize import (
    Constraint,
    proj_sp,
    proj_spcol,
    proj_splin,
    proj_splincol,
    proj_support,
    sp,
    spcol,
    splin,
    splincol,
    support,
)

# Small integer values create many ties, which is where tie-breaking bugs hide.
matrices = st.tuples(st.integers(1, 7), st.integers(1, 7)).flatmap(
    lambda shape: arrays(
        np.float64,
        shape,
        elements=st.one_of(
            st.integers(-3, 3).map(float),
            st.floats(-10, 10, allow_nan=False, allow_infinity=False),
        ),
    )
)


def naive_topk(values: list[float], k: int) -> set[int]:
    """Positions of the k largest |values|, lowest position first among equal magnitudes."""
    order = sorted(range(len(values)), key=lambda i: (-abs(values[i]), i))
    return set(order[: max(k, 0)])


def naive_mask(x: np.ndarray, kind: str, k: int) -> np.ndarray:
    m, n = x.shape
    mask = np.zeros((m, n), dtype=bool)
    if kind in ("sp",):
        for flat in naive_topk(list(x.ravel()), k):
            mask[flat // n, flat % n] = True
    if kind in ("splin", "splincol"):
        for i in range(m):
            for j in naive_topk(list(x[i]), k):
                mask[i, j] = True
    if kind in ("spcol", "splincol"):
        for j in range(n):
            for i in naive_topk(list(x[:, j]), k):
                mask[i, j] = True
    return mask


PROJ = {"sp": proj_sp, "splin": proj_splin, "spcol": proj_spcol, "splincol": proj_splincol}
CONS = {"sp": sp, "splin": splin, "spcol": spcol, "splincol": splincol}


@settings(max_examples=150, deadline=None)
@given(x=matrices, k=st.integers(0, 12), kind=st.sampled_from(sorted(PROJ)))
def test_projection_matches_naive_reference(x: np.ndarray, k: int, kind: str) -> None:
    expected_mask = naive_mask(x, kind, k)
    got = PROJ[kind](x, k)
    np.testing.assert_array_equal(got, np.where(expected_mask, x, 0.0))
    # The constraint object selects the same support and normalizes the result.
    c = CONS[kind](k)
    np.testing.assert_array_equal(c.support_of(x), expected_mask)
    y = c.project(x)
    kept = np.where(expected_mask, x, 0.0)
    if np.any(kept):
        assert np.linalg.norm(y) == pytest.approx(1.0)
        np.testing.assert_allclose(
            y,
            kept / np.max(np.abs(kept)) / np.linalg.norm(kept / np.max(np.abs(kept))),
            rtol=1e-12,
            atol=1e-300,
        )
    else:
        assert not np.any(y)


@settings(max_examples=100, deadline=None)
@given(x=matrices, k=st.integers(0, 12))
def test_projections_satisfy_their_constraint(x: np.ndarray, k: int) -> None:
    m, n = x.shape
    assert np.count_nonzero(proj_sp(x, k)) <= k
    assert np.all(np.count_nonzero(proj_splin(x, k), axis=1) <= k)
    assert np.all(np.count_nonzero(proj_spcol(x, k), axis=0) <= k)
    y = proj_splincol(x, k)
    assert np.count_nonzero(y) <= min(m * n, m * min(k, n) + n * min(k, m))
    for kind, c in CONS.items():
        assert np.count_nonzero(c(k).project(x)) <= c(k).max_nnz(x.shape), kind


@settings(max_examples=60, deadline=None)
@given(x=matrices, k=st.integers(1, 12))
def test_sp_is_the_best_k_sparse_approximation(x: np.ndarray, k: int) -> None:
    # Keeping the k largest magnitudes minimizes ‖x − y‖ over k-sparse y.
    y = proj_sp(x, k)
    dropped = np.sort(np.abs(x).ravel())[: max(x.size - k, 0)]
    assert np.linalg.norm(x - y) == pytest.approx(np.linalg.norm(dropped), abs=1e-12)


def test_ties_break_towards_lowest_index() -> None:
    x = np.array([[1.0, -1.0, 1.0], [1.0, 1.0, -1.0]])
    np.testing.assert_array_equal(proj_sp(x, 2), [[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(proj_splin(x, 1), [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(proj_spcol(x, 1), [[1.0, -1.0, 1.0], [0.0, 0.0, 0.0]])


def test_support_and_transpose() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6))
    mask = rng.random((4, 6)) < 0.5
    np.testing.assert_array_equal(proj_support(x, mask), np.where(mask, x, 0.0))
    c = support(mask)
    assert np.linalg.norm(c.project(x)) == pytest.approx(1.0)
    np.testing.assert_array_equal(c.transpose().support_of(x.T), mask.T)
    assert splin(2).transpose() == spcol(2)
    assert spcol(2).transpose() == splin(2)
    assert sp(5).transpose() == sp(5)
    np.testing.assert_array_equal(splin(2).transpose().support_of(x.T), splin(2).support_of(x).T)
    with pytest.raises(ValueError):
        support(mask).support_of(x.T)
    with pytest.raises(ValueError):
        Constraint("nope", 1)


def test_vectorized_projection_is_fast_enough_for_large_factors() -> None:
    # 1M entries: a Python loop over entries would take seconds; the vectorized path ~0.1 s.
    import time

    x = np.random.default_rng(0).standard_normal((1000, 1000))
    t0 = time.perf_counter()
    y = proj_sp(x, 100_000)
    proj_splin(x, 50)
    assert time.perf_counter() - t0 < 2.0
    assert np.count_nonzero(y) == 100_000
