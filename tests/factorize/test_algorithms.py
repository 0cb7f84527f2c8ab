"""palm4MSA, hierarchical palm4MSA and butterfly on problems with known answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.linalg import hadamard

from faustgen.factorize import (
    FactorizationError,
    butterfly,
    hierarchical,
    palm4msa,
    sp,
    spcol,
    splin,
)
from faustgen.factorize.butterfly import butterfly_nnz, butterfly_support


@pytest.mark.parametrize("order", ["left-to-right", "right-to-left"])
@pytest.mark.parametrize(
    ("shape", "cons", "inner"),
    [
        ((30, 40), [sp(300), sp(400)], [30]),
        ((40, 25), [splin(6), spcol(8)], [25]),
        ((32, 32), [spcol(4), sp(200), splin(5)], [32, 32]),
        ((20, 50), [sp(150), sp(500)], [35]),
    ],
)
def test_palm4msa_objective_never_increases(shape, cons, inner, order) -> None:
    # Holds for exact projections (sp, splin, spcol, support); splincol's union of supports
    # is a heuristic, not a projection onto a fixed set, so it is left out here.
    W = np.random.default_rng(1).standard_normal(shape)
    F = palm4msa(W, cons, inner_dims=inner, n_iter=60, update_order=order)
    errs = np.array(F.info["errors"])
    assert len(errs) == 60
    assert np.all(np.diff(errs) <= 1e-12 * errs[:-1]), np.diff(errs).max()
    assert errs[-1] < errs[0]
    assert F.relative_error(W) == pytest.approx(errs[-1], rel=1e-9)
    for f, c in zip(F.factors, cons, strict=True):
        assert f.nnz <= c.max_nnz(f.shape)
        # Unit-norm factors, scale kept apart (the paper's convention).
        assert np.linalg.norm(f.toarray()) == pytest.approx(1.0)


def test_palm4msa_recovers_an_exact_sparse_product() -> None:
    rng = np.random.default_rng(0)
    A = np.where(rng.random((24, 24)) < 0.2, rng.standard_normal((24, 24)), 0.0)
    B = np.where(rng.random((24, 24)) < 0.2, rng.standard_normal((24, 24)), 0.0)
    W = A @ B
    F = palm4msa(W, [sp(np.count_nonzero(A)), sp(np.count_nonzero(B))], n_iter=300)
    # Not necessarily exact (non-convex), but far better than the starting pruning.
    assert F.relative_error(W) < 0.5 * F.info["errors"][0]


def test_palm4msa_stopping_rules() -> None:
    W = np.random.default_rng(2).standard_normal((20, 20))
    F = palm4msa(W, [sp(200), sp(200)], n_iter=500, rel_change_tol=2e-2)
    assert F.info["n_iter"] < 500
    F = palm4msa(W, [sp(400), sp(400)], n_iter=500, target_error=0.5)
    assert F.info["errors"][-1] <= 0.5 and F.info["n_iter"] < 500
    with pytest.raises(FactorizationError):
        palm4msa(W, [sp(10)], update_order="sideways")
    with pytest.raises(FactorizationError):
        palm4msa(W, [sp(10), sp(10)], inner_dims=[3, 4])


def test_palm4msa_is_deterministic() -> None:
    W = np.random.default_rng(4).standard_normal((30, 50))
    a = palm4msa(W, [sp(300), sp(600)], n_iter=40)
    b = palm4msa(W, [sp(300), sp(600)], n_iter=40)
    assert a.scale == b.scale
    for fa, fb in zip(a.factors, b.factors, strict=True):
        assert (fa != fb).nnz == 0


@pytest.mark.parametrize("n", [32, 64])
@pytest.mark.parametrize("side", ["left", "right"])
def test_hierarchical_recovers_hadamard_exactly(n: int, side: str) -> None:
    H = hadamard(n).astype(float)
    J = n.bit_length() - 1
    F = hierarchical(H, J, side=side)
    assert F.n_factors == J
    assert F.relative_error(H) < 1e-6
    assert F.nnz == 2 * n * J  # two nonzeros per row in every factor: RCG n / (2 log2 n)


@pytest.mark.parametrize("n", [32, 64, 256])
def test_butterfly_recovers_hadamard_exactly(n: int) -> None:
    H = hadamard(n).astype(float)
    F = butterfly(H)
    assert F.relative_error(H) < 1e-12
    assert F.n_factors == n.bit_length() - 1
    assert F.rcg == pytest.approx(n / (2 * (n.bit_length() - 1)))


def test_butterfly_recovers_random_butterfly_products_and_respects_supports() -> None:
    rng = np.random.default_rng(5)
    n, L = 64, 6
    factors = [
        np.where(butterfly_support(n, q, q), rng.standard_normal((n, n)), 0.0)
        for q in range(1, L + 1)
    ]
    W = np.linalg.multi_dot(factors)
    for J in (L, 3, 2):
        F = butterfly(W, J)
        assert F.relative_error(W) < 1e-10
        assert F.nnz == butterfly_nnz(n, J)
    F = butterfly(W)
    for q, f in enumerate(F.factors, start=1):
        assert not np.any((f.toarray() != 0) & ~butterfly_support(n, q, q))


def test_butterfly_approximates_a_generic_matrix_reasonably() -> None:
    W = np.random.default_rng(6).standard_normal((64, 64))
    F = butterfly(W, 2)
    # Two merged groups of 3 levels: 8 nonzeros per row in each factor.
    assert F.nnz == 2 * 64 * 8
    assert 0.0 < F.relative_error(W) < 1.0


@pytest.mark.parametrize("shape", [(48, 48), (32, 64), (1, 1), (64, 32)])
def test_butterfly_rejects_non_power_of_two_or_rectangular(shape) -> None:
    with pytest.raises(FactorizationError, match="power-of-two"):
        butterfly(np.ones(shape))


@pytest.mark.parametrize("shape", [(30, 70), (70, 30)])
@pytest.mark.parametrize("side", ["left", "right"])
def test_hierarchical_on_rectangular_matrices(shape, side) -> None:
    rng = np.random.default_rng(8)
    W = rng.standard_normal(shape)
    m = min(shape)
    fact = [sp(m * 10), sp(m * 10)]
    res = [sp(m * max(shape) // 2), sp(m * max(shape) // 4)]
    F = hierarchical(W, 3, fact, res, side=side, n_iter_local=15, n_iter_global=15)
    assert F.shape == shape and F.n_factors == 3
    dims = [f.shape for f in F.factors]
    assert dims[0][0] == shape[0] and dims[-1][1] == shape[1]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(dims))
    # Each factor respects the constraint of its position (peeled factors, then residual).
    order = F.factors if side == "left" else F.factors[::-1]
    limits = [c.k for c in fact] + [res[-1].k]
    assert [f.nnz <= lim for f, lim in zip(order, limits, strict=True)] == [True] * 3
    assert F.relative_error(W) < 1.0
    # The last global refit (15 sweeps, exact projections) never increases the error.
    last = np.array(F.info["errors"][-15:])
    assert np.all(np.diff(last) <= 1e-12 * last[:-1])
    assert F.relative_error(W) == pytest.approx(last[-1], rel=1e-9)
