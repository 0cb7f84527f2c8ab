"""The large-matrix path (submatrix search, Gram sweeps, randomized SVD), run on small
matrices by lowering its size threshold."""

from __future__ import annotations

import numpy as np
import pytest

from faustgen.factorize import factorize, large, sp
from faustgen.factorize.engine import accelerated_two_factor, start_state
from faustgen.factorize.palm4msa import SpectralNorm
from faustgen.factorize.twofactor import _split_budget, _two_factor_init


def decaying(D: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((D, min(D, d))))
    V, _ = np.linalg.qr(rng.standard_normal((d, min(D, d))))
    s = 1.0 / (1.0 + np.arange(min(D, d)) / 10.0)
    return (U * s) @ V.T + 0.01 * rng.standard_normal((D, d)) / np.sqrt(max(D, d))


@pytest.fixture
def small_is_large(monkeypatch):
    monkeypatch.setattr(large, "LARGE_ENTRIES", 1)
    monkeypatch.setattr(large, "_SUB_ENTRIES", 96 * 96)


def test_randomized_svd_matches_the_exact_leading_singular_triplets() -> None:
    W = decaying(300, 200)
    U, s, Vt = large.randomized_svd(W, 20, seed=0)
    s_exact = np.linalg.svd(W, compute_uv=False)
    assert U.shape == (300, 20) and Vt.shape == (20, 200)
    np.testing.assert_allclose(s, s_exact[:20], rtol=1e-2)  # a slowly decaying spectrum
    np.testing.assert_allclose(U.T @ U, np.eye(20), atol=1e-5)
    exact_tail = np.sqrt(np.sum(s_exact[20:] ** 2) / np.sum(s_exact**2))
    approx = U * s @ Vt
    err = np.linalg.norm(W - approx) / np.linalg.norm(W)
    assert exact_tail <= err <= 1.01 * exact_tail
    # The tail against ‖W‖² is the error of the factors themselves (a projection of W).
    assert large.svd_tail_error(s, 20, float(np.vdot(W, W))) == pytest.approx(err, rel=1e-5)


@pytest.mark.parametrize("shape", [(160, 96), (96, 160)])
def test_gram_sweeps_follow_the_dense_sweeps(shape) -> None:
    D, d = shape
    W = decaying(D, d, seed=2)
    W = (W / np.linalg.norm(W)).astype(np.float32)
    k = 40
    n0, n1 = _split_budget(D * d // 4, D, d, k)
    errs = {}
    for gram in (False, True):
        S0, S1 = _two_factor_init(D, d, k, np.random.default_rng(0))
        st = start_state(W, S0, S1)
        accelerated_two_factor(W, st, sp(n0), sp(n1), 30, 0.8, 0.0, 1.5, SpectralNorm(0), gram=gram)
        true = np.linalg.norm(W - st.lam * (st.S0 @ st.S1)) / np.linalg.norm(W)
        assert st.err == pytest.approx(float(true), rel=1e-4)  # the Gram error is the error
        errs[gram] = st.err
    assert errs[True] == pytest.approx(errs[False], rel=0.02)


@pytest.mark.usefixtures("small_is_large")
@pytest.mark.parametrize(("rcg", "block"), [(4.0, None), (8.0, None), (4.0, 16)])
def test_large_path_meets_the_target_beats_the_svd_and_is_deterministic(rcg, block) -> None:
    W = decaying(256, 192, seed=1)
    F = factorize(W, rcg=rcg, block=block, effort=0.3)
    assert F.rcg >= rcg
    cands = F.info["candidates"]
    svd = [e for name, (e, _) in cands.items() if name.startswith("svd")]
    assert svd and F.info["relative_error"] <= min(svd)
    assert F.info["relative_error"] == pytest.approx(F.relative_error(W), rel=1e-6)
    assert any(name.startswith("palm4msa-2") for name in cands)
    if block is None:  # the budget keeps a share for the three-factor refit
        assert any(name.startswith("palm4msa-3") for name in cands)
    G = factorize(W, rcg=rcg, block=block, effort=0.3)
    for a, b in zip(F.factors, G.factors, strict=True):
        assert np.array_equal(a.toarray(), b.toarray())


@pytest.mark.usefixtures("small_is_large")
def test_large_path_progress_is_monotone_and_ends_after_the_work() -> None:
    calls = []
    W = decaying(200, 120, seed=4)
    factorize(W, rcg=4.0, effort=0.3, progress=lambda d, t, m: calls.append(d / t))
    assert calls and calls == sorted(calls)
    assert calls[-1] <= 1.0


def test_the_large_path_starts_above_1024_squared_with_a_budget_graded_by_size() -> None:
    assert not large.is_large((1024, 1024))  # the BENCHMARKS.md matrices and demo layers
    assert large.is_large((512, 2304))  # VGG's convolutions and up
    sizes = [(512, 2304), (1000, 4096), (4096, 4096), (25088, 4096), (50176, 4096)]
    budgets = [large.flops_budget(D, d, 1.0) for D, d in sizes]
    assert budgets == sorted(budgets) and budgets[-1] == budgets[-2]
    assert large.flops_budget(512, 2304, 0.5) == pytest.approx(budgets[0] / 2)
