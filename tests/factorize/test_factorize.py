"""The target-driven front end: targets are met, results are reproducible, bad input fails."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import hadamard

from faustgen.factorize import FactorizationError, factorize


def trained_like(D: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = min(D, d)
    U, _ = np.linalg.qr(rng.standard_normal((D, r)))
    V, _ = np.linalg.qr(rng.standard_normal((d, r)))
    s = 1.0 / (1.0 + np.arange(r) / 20.0)
    S = (U * s) @ V.T
    return S + 0.01 * np.linalg.norm(S) / np.sqrt(D * d) * rng.standard_normal((D, d))


@pytest.mark.parametrize(
    ("shape", "rcg"),
    [((64, 200), 2.0), ((200, 64), 3.0), ((64, 200), 8.0), ((300, 784), 4.0), ((784, 300), 6.5)],
)
def test_rcg_target_is_met_in_both_orientations(shape, rcg) -> None:
    W = trained_like(*shape)
    F = factorize(W, rcg=rcg, effort=0.15)
    assert F.shape == shape
    assert F.rcg >= rcg
    assert F.nnz <= shape[0] * shape[1] / rcg
    # A product of sparse factors (or a baseline) never does worse than pruning alone.
    pruned = np.sort(np.abs(W).ravel())[::-1][: int(W.size // rcg)]
    prune_err = np.sqrt(1 - np.sum(pruned**2) / np.sum(W**2))
    assert F.relative_error(W) <= prune_err + 1e-12
    assert F.relative_error(W) == pytest.approx(F.info["relative_error"])


def test_two_sparse_factors_beat_the_baselines_on_a_trained_like_matrix() -> None:
    W = trained_like(128, 320, seed=1)
    F = factorize(W, rcg=4, effort=0.5)
    cands = F.info["candidates"]
    # Two factors, or three refitted from the best two (the auto front end at RCG >= 3).
    assert F.info["chosen"].startswith(("palm4msa-2", "palm4msa-3"))
    assert F.n_factors in (2, 3)
    assert any(name.startswith("palm4msa-3") for name in cands)
    baselines = [err for name, (err, _) in cands.items() if not name.startswith("palm")]
    assert F.relative_error(W) < min(baselines) - 0.02


def test_three_factor_candidate_meets_the_budget_and_is_deterministic() -> None:
    W = trained_like(96, 200, seed=3)
    budget = 96 * 200 // 8
    runs = [factorize(W, rcg=8, effort=0.3) for _ in range(2)]
    name = next(n for n in runs[0].info["candidates"] if n.startswith("palm4msa-3"))
    err, nnz = runs[0].info["candidates"][name]
    assert nnz <= budget
    assert runs[1].info["candidates"][name] == (err, nnz)
    two = min(e for n, (e, _) in runs[0].info["candidates"].items() if n.startswith("palm4msa-2"))
    assert err < two + 0.02


@pytest.mark.parametrize(("shape", "rcg"), [((3, 5), 2.0), ((1, 7), 3.0), ((2, 2), 4.0)])
def test_rcg_is_met_on_tiny_matrices(shape, rcg) -> None:
    W = np.random.default_rng(0).standard_normal(shape)
    F = factorize(W, rcg=rcg)
    assert F.rcg >= rcg


def test_rcg_too_high_to_keep_any_nonzero() -> None:
    with pytest.raises(FactorizationError, match="unreachable"):
        factorize(np.ones((3, 3)), rcg=10)


def test_max_error_returns_a_solution_within_the_bound_with_better_rcg_than_pruning() -> None:
    W = trained_like(64, 160, seed=2)
    E = 0.3
    F = factorize(W, max_error=E, effort=0.3)
    assert F.relative_error(W) <= E + 1e-12
    a = np.sort((W**2).ravel())
    prune_nnz = W.size - np.searchsorted(np.cumsum(a), E**2 * a.sum(), side="right")
    assert F.nnz <= prune_nnz
    assert F.rcg > 1.0


def test_max_error_zero_keeps_everything_and_tight_bound_with_rcg_fails() -> None:
    W = np.random.default_rng(3).standard_normal((8, 8))
    F = factorize(W, max_error=0.0)
    assert F.relative_error(W) == 0.0
    with pytest.raises(FactorizationError, match="reaches relative error"):
        factorize(W, max_error=0.01, rcg=4.0)


def test_unreachable_max_error_for_a_restricted_method() -> None:
    W = np.random.default_rng(4).standard_normal((32, 32))
    with pytest.raises(FactorizationError, match="reaches relative error"):
        factorize(W, max_error=1e-3, method="butterfly", factors=5)


def test_hadamard_through_the_front_end() -> None:
    H = hadamard(64).astype(float)
    F = factorize(H, rcg=64 / 12, factors=6)
    assert F.n_factors == 6 and F.relative_error(H) < 1e-10
    F = factorize(H, rcg=64 / 12, factors=6, method="hierarchical", effort=1.0)
    assert F.relative_error(H) < 1e-6 and F.rcg >= 64 / 12 - 1e-9
    F = factorize(H, max_error=1e-9)
    assert F.rcg >= 64 / 12 - 1e-9


def test_other_methods_and_factor_counts_meet_the_target() -> None:
    W = trained_like(48, 96, seed=5)
    for kwargs in (
        {"method": "palm4msa"},
        {"method": "palm4msa", "factors": 3},
        {"method": "hierarchical", "factors": 3},
        {"factors": 1},
        {"factors": 3},
    ):
        F = factorize(W, rcg=3.0, effort=0.2, **kwargs)
        assert F.rcg >= 3.0, kwargs
        if "factors" in kwargs:
            assert F.n_factors == kwargs["factors"], kwargs
        assert F.relative_error(W) < 1.0


def test_results_are_deterministic_bit_for_bit() -> None:
    W = trained_like(40, 90, seed=6)
    a = factorize(W, rcg=3.0, seed=7, effort=0.2)
    b = factorize(W, rcg=3.0, seed=7, effort=0.2)
    assert a.scale == b.scale and a.n_factors == b.n_factors
    for fa, fb in zip(a.factors, b.factors, strict=True):
        assert fa.shape == fb.shape
        np.testing.assert_array_equal(fa.indptr, fb.indptr)
        np.testing.assert_array_equal(fa.indices, fb.indices)
        np.testing.assert_array_equal(fa.data, fb.data)


def test_progress_callback_is_called() -> None:
    calls = []
    W = trained_like(32, 64, seed=8)
    factorize(W, rcg=2.0, effort=0.2, progress=lambda d, t, m: calls.append((d, t, m)))
    assert calls and all(0 <= d <= t for d, t, _ in calls)
    assert all(isinstance(m, str) and m for _, _, m in calls)


def test_progress_reaches_the_end_only_after_the_three_factor_refit() -> None:
    # The refit used to run after the bar had reached its total.
    calls = []
    W = trained_like(48, 96, seed=3)
    F = factorize(W, rcg=4.0, effort=0.2, progress=lambda d, t, m: calls.append((d, t, m)))
    assert F.info["candidates"] and any("palm4msa-3" in n for n in F.info["candidates"])
    fractions = [d / t for d, t, _ in calls]
    assert fractions == sorted(fractions), "progress went backwards"
    refit = [i for i, (_, _, m) in enumerate(calls) if m == "three factors"]
    assert refit, "the refit reported no progress"
    assert all(fractions[i] < 1.0 for i in range(refit[-1] + 1))


@pytest.mark.parametrize(
    ("W", "match"),
    [
        (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN"),
        (np.array([[1.0, np.inf], [0.0, 1.0]]), "NaN or infinite"),
        (np.ones(5), "2-D"),
        (np.ones((2, 2, 2)), "2-D"),
        (np.zeros((0, 4)), "empty"),
        (np.array([["a", "b"]]), "numeric"),
    ],
)
def test_bad_input_raises(W, match) -> None:
    with pytest.raises(FactorizationError, match=match):
        factorize(W, rcg=2.0)


def test_bad_arguments_raise() -> None:
    W = np.ones((4, 4))
    assert issubclass(FactorizationError, ValueError)
    with pytest.raises(FactorizationError, match="power-of-two"):
        factorize(np.ones((6, 6)), rcg=2.0, method="butterfly")
    with pytest.raises(FactorizationError, match="power-of-two"):
        factorize(np.ones((8, 4)), rcg=2.0, method="butterfly")
    with pytest.raises(FactorizationError, match="target"):
        factorize(W)
    with pytest.raises(FactorizationError, match="method"):
        factorize(W, rcg=2.0, method="magic")
    with pytest.raises(FactorizationError):
        factorize(W, rcg=-1.0)
    with pytest.raises(FactorizationError):
        factorize(W, max_error=-0.1)
    with pytest.raises(FactorizationError):
        factorize(W, rcg=2.0, factors=0)


def test_heavy_tailed_separates_trained_weights_from_gaussian_ones() -> None:
    from faustgen.factorize.twofactor import heavy_tailed

    rng = np.random.default_rng(0)
    assert not heavy_tailed(rng.standard_normal((64, 96)))
    assert not heavy_tailed(trained_like(64, 160, seed=1))
    assert heavy_tailed(rng.standard_t(4, size=(64, 96)))
