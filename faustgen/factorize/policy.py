"""Target-driven front end: ``factorize(W, rcg=R)`` or ``factorize(W, max_error=E)``.

The caller states what matters (compression or accuracy); this module picks the method, the
number of factors, the inner dimensions and the per-factor sparsity, tries the sensible
configurations and returns the best. The compression guarantee is hard: every candidate is
built with ``sp`` budgets whose sum is at most ``⌊D·d/R⌋`` nonzeros, so the returned RCG is
always ≥ R (the reference toolbox's rectangular defaults leave a factor dense and miss it).

Candidates, cheapest first:

* one sparse factor (magnitude pruning) and the truncated SVD as two dense factors (the
  baselines: a product of sparse factors must beat them to be chosen);
* butterfly factorizations for square power-of-two matrices (exact on Hadamard-like data);
* two sparse factors ``S_0 (D×k) · S_1 (k×d)`` by accelerated palm4MSA, for a few inner
  dimensions k (k may exceed min(D, d): a wide inner dimension is what lets two sparse
  factors beat pruning at low compression, a narrow one makes them a sparse low-rank model
  at high compression): a short probe run per k along a ladder of factor densities, then
  the best k runs to convergence, so iterations go where they matter;
* with ``factors=J ≥ 3``, hierarchical palm4MSA with an even nonzero split.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .butterfly import _log2_exact, butterfly, butterfly_nnz
from .engine import accelerated_two_factor, start_state
from .hierarchical import default_hierarchical_constraints, hadamard_constraints, hierarchical
from .palm4msa import _as_matrix, _SpectralNorm, chain_shapes
from .projections import proj_sp, sp
from .result import FactorizationError, FactorizedMatrix

__all__ = ["factorize"]

Progress = Callable[[int, int, str], None] | None
_METHODS = ("auto", "palm4msa", "hierarchical", "butterfly")
_EXACT = 1e-10  # relative error treated as an exact factorization


@dataclass
class _Candidate:
    name: str
    result: FactorizedMatrix
    error: float


def _two_factor_init(D: int, d: int, k: int, rng: np.random.Generator) -> tuple:
    """The paper's start (S_0 = 0, S_1 = identity), with seeded random rows in S_1 where the
    inner dimension exceeds d: all-zero rows would never receive a gradient."""
    S1 = np.eye(k, d)
    if k > d:
        S1[d:] = rng.standard_normal((k - d, d)) / math.sqrt(d)
    return np.zeros((D, k)), S1


def _split_budget(budget: int, D: int, d: int, k: int) -> tuple[int, int]:
    """Nonzeros for S_0 (D×k) and S_1 (k×d): between a size-proportional split and an even
    one, which measured best on both unstructured and low-rank-like matrices."""
    share = (D / (D + d) + 0.5) / 2.0
    n0 = int(min(max(round(budget * share), 1), D * k))
    n1 = int(min(budget - n0, k * d))
    return n0, max(n1, 0)


def _inner_dim(D: int, d: int, budget: int, density: float) -> int:
    """Inner dimension at which both factors have about the given density."""
    r = budget / (D + d)  # the rank a truncated SVD can afford
    return int(min(max(round(r / density), 1), 2 * max(D, d)))


# Factor densities on which the inner dimension is searched. The measured optimum lies
# between 9 % (flat spectrum, low compression) and 45 % (fast-decaying spectrum, high
# compression); the search starts at 30 % and 20 % and walks towards the better one.
_LADDER = (0.6, 0.45, 0.3, 0.2, 0.13, 0.09, 0.06)


def _palm_two_factor(
    W: np.ndarray,
    budget: int,
    seed: int,
    effort: float,
    progress: Progress,
) -> list[_Candidate]:
    """Two sparse factors: a short run for a few inner dimensions, then the best one runs to
    convergence. The first iterations use a 1.5/Lipschitz step and light inertia (fast
    support discovery, measured to rank the inner dimensions reliably after ~20 sweeps), the
    later ones a 1.3/Lipschitz step with stronger inertia (measured faster than 1/Lipschitz
    on every benchmark matrix; any increase of the error triggers a restart)."""
    D, d = W.shape
    rng = np.random.default_rng(seed)
    runs: dict[int, list] = {}
    n_probe = max(int(20 * effort), 3)
    n_final = max(int(100 * effort), 10)
    total = n_probe * 4 + n_final
    done = 0

    def launch(density: float) -> None:
        nonlocal done
        k = _inner_dim(D, d, budget, density)
        n0, n1 = _split_budget(budget, D, d, k)
        if k in runs or n0 < 1 or n1 < 1:
            return
        S0, S1 = _two_factor_init(D, d, k, rng)
        st = start_state(W, S0, S1)
        run = [k, st, sp(n0), sp(n1), _SpectralNorm(seed)]
        accelerated_two_factor(W, st, run[2], run[3], n_probe, 0.8, 0.0, 1.5, run[4])
        runs[k] = run
        done += n_probe
        if progress is not None:
            progress(done, total, f"two factors, inner dimension {k}")

    def err_at(i: int) -> float:
        k = _inner_dim(D, d, budget, _LADDER[i])
        return runs[k][1].err if k in runs else math.inf

    lo, hi = _LADDER.index(0.3), _LADDER.index(0.2)
    launch(_LADDER[lo])
    launch(_LADDER[hi])
    if not runs:
        return []
    # Walk down the ladder while the error keeps improving (a unimodal search: probes are
    # short, so only the winner's neighbours are ever tried).
    step, i = (1, hi) if err_at(hi) < err_at(lo) else (-1, lo)
    while 0 <= i + step < len(_LADDER):
        launch(_LADDER[i + step])
        if err_at(i + step) >= err_at(i):
            break
        i += step
    k, st, c0, c1, norms = min(runs.values(), key=lambda r: r[1].err)
    # Small problems converge slowly but iterate fast: give them up to 400 sweeps within a
    # fixed amount of arithmetic (~6e10 flops at effort 1, a few seconds of BLAS).
    flops = 10.0 * D * d * k
    n_final = max(n_final, min(int(6e10 * effort / flops), int(400 * effort)))

    def tick(_: int) -> None:
        if progress is not None:
            progress(min(done + st.iterations - n_probe, total), total, f"inner dimension {k}")

    accelerated_two_factor(W, st, c0, c1, n_probe, 0.8, 0.0, 1.5, norms, tick)
    accelerated_two_factor(W, st, c0, c1, n_final, 0.9, 3e-4, 1.3, norms, tick)
    out = []
    w_norm = float(np.linalg.norm(W)) or 1.0
    for k, st, _c0, _c1, _n in runs.values():
        fm = FactorizedMatrix(
            [st.S0, st.S1],
            st.lam,
            {"method": "palm4msa", "inner_dim": k, "iterations": st.iterations},
        )
        # st.err comes from ‖W‖² − λ⟨W,P⟩, which loses digits near zero: recompute.
        err = float(np.linalg.norm(W - st.lam * (st.S0 @ st.S1))) / w_norm
        out.append(_Candidate(f"palm4msa-2(k={k})", fm, err))
    return out


def _prune(W: np.ndarray, budget: int) -> _Candidate:
    S = proj_sp(W, budget)
    fm = FactorizedMatrix([S], 1.0, {"method": "prune"})
    err = float(np.linalg.norm(W - S) / (np.linalg.norm(W) or 1.0))
    return _Candidate("prune", fm, err)


def _svd(W: np.ndarray, budget: int, svd: tuple) -> _Candidate | None:
    D, d = W.shape
    r = min(budget // (D + d), min(D, d))
    if r < 1:
        return None
    U, s, Vt = svd
    root = np.sqrt(s[:r])
    fm = FactorizedMatrix([U[:, :r] * root, root[:, None] * Vt[:r]], 1.0, {"method": "svd"})
    tail = float(np.sum(s[r:] ** 2))
    err = math.sqrt(tail / max(float(np.sum(s**2)), 1e-300))
    return _Candidate(f"svd(r={r})", fm, err)


def _butterflies(W: np.ndarray, budget: int, factors: int | None) -> list[_Candidate]:
    n = W.shape[0]
    L = _log2_exact(n) if W.shape[0] == W.shape[1] else None
    if not L:
        return []
    Js = [factors] if factors else list(range(1, L + 1))
    fits = [J for J in Js if 1 <= J <= L and butterfly_nnz(n, J) <= budget]
    if not fits:
        return []
    # Fewer factors means merged levels: more nonzeros, never less accurate.
    J = min(fits)
    fm = butterfly(W, J)
    return [_Candidate(f"butterfly(J={J})", fm, fm.info["relative_error"])]


def _hierarchical(
    W: np.ndarray, budget: int, J: int, effort: float, progress: Progress
) -> list[_Candidate]:
    D, d = W.shape
    out = []
    if d == D and _log2_exact(D) == J and J >= 2 and budget >= 2 * D * J:
        # The paper's Hadamard parametrization (2 nonzeros per row and column per factor);
        # the final nonzero check drops it if the factors it finds are denser than that.
        fact, res = hadamard_constraints(D)
        fm = hierarchical(W, J, fact, res, progress=progress)
        out.append(_Candidate(f"hierarchical-hadamard(J={J})", fm, fm.relative_error(W)))
    inner = [min(D, d)] * (J - 1)
    shapes = chain_shapes(W.shape, inner)
    sizes = np.array([a * b for a, b in shapes], dtype=float)
    nnz = np.maximum(1, np.floor(budget * sizes / sizes.sum())).astype(int)
    fact, res = default_hierarchical_constraints(W.shape, J, list(nnz), inner)
    n_it = max(int(30 * effort), 5)
    fm = hierarchical(
        W,
        J,
        fact,
        res,
        inner_dims=inner,
        n_iter_local=n_it,
        n_iter_global=n_it,
        progress=progress,
    )
    out.append(_Candidate(f"hierarchical(J={J})", fm, fm.relative_error(W)))
    return out


def _candidates_for_budget(
    W: np.ndarray,
    budget: int,
    factors: int | None,
    method: str,
    seed: int,
    effort: float,
    progress: Progress,
    svd: tuple | None,
) -> list[_Candidate]:
    cands: list[_Candidate] = []
    D, d = W.shape
    if method == "butterfly":
        if not (d == D and _log2_exact(D) and D >= 2):
            raise FactorizationError(
                f"Butterfly factorization needs a square power-of-two matrix, got {D}x{d}."
            )
        return _butterflies(W, budget, factors)
    if method == "auto" and factors in (None, 1):
        cands.append(_prune(W, budget))
    if method == "auto" and factors in (None, 2) and svd is not None:
        c = _svd(W, budget, svd)
        if c is not None:
            cands.append(c)
    if method == "auto":
        cands.extend(_butterflies(W, budget, factors))
    cands = [c for c in cands if c.result.nnz <= budget]
    if method == "auto" and cands and min(c.error for c in cands) <= _EXACT:
        # A closed-form candidate is already exact (e.g. butterfly on Hadamard-like data):
        # no iterative method can do better.
        return cands
    if method in ("auto", "palm4msa") and factors in (None, 2):
        cands.extend(_palm_two_factor(W, budget, seed, effort, progress))
    if method == "palm4msa" and factors not in (None, 2):
        cands.append(_palm_chain(W, budget, int(factors), effort))
    if method == "hierarchical" or (method == "auto" and factors is not None and factors >= 3):
        J = factors or 3
        if J >= 2:
            cands.extend(_hierarchical(W, budget, J, effort, progress))
    return [c for c in cands if c.result.nnz <= budget]


def _palm_chain(W: np.ndarray, budget: int, J: int, effort: float) -> _Candidate:
    from .palm4msa import palm4msa

    if J == 1:
        return _prune(W, budget)
    D, d = W.shape
    inner = [min(D, d)] * (J - 1)
    sizes = np.array([a * b for a, b in chain_shapes(W.shape, inner)], dtype=float)
    nnz = np.maximum(1, np.floor(budget * sizes / sizes.sum())).astype(int)
    fm = palm4msa(W, [sp(int(v)) for v in nnz], inner_dims=inner, n_iter=int(200 * effort))
    return _Candidate(f"palm4msa-{J}", fm, fm.relative_error(W))


def factorize(
    W: np.ndarray,
    rcg: float | None = None,
    max_error: float | None = None,
    *,
    factors: int | None = None,
    method: str = "auto",
    seed: int = 0,
    progress: Progress = None,
    effort: float = 1.0,
) -> FactorizedMatrix:
    """Approximate ``W`` by a product of sparse factors meeting a target.

    ``rcg=R``: the most accurate factorization found with RCG ≥ R (at most ⌊D·d/R⌋
    nonzeros). ``max_error=E``: the highest-RCG factorization found with relative error ≤ E.
    Both may be given. ``factors`` fixes the number of factors, ``method`` restricts the
    algorithm, ``seed`` seeds the only random parts (the extra rows of a wide inner dimension
    and the power-iteration start vectors; a given seed reproduces the result bit for bit),
    ``progress(done, total, message)`` reports progress and ``effort`` scales the iteration
    counts (less effort: faster, less accurate). Raises :class:`FactorizationError` for bad
    input or unreachable targets.
    """
    t0 = time.perf_counter()
    W = _as_matrix(W)
    if method not in _METHODS:
        raise FactorizationError(f"Unknown method {method!r}; use one of {', '.join(_METHODS)}.")
    if rcg is None and max_error is None:
        raise FactorizationError("Give a target: rcg=R (compression) or max_error=E (accuracy).")
    if factors is not None and (int(factors) != factors or factors < 1):
        raise FactorizationError(
            f"The number of factors must be a positive integer, got {factors}."
        )
    if rcg is not None and not (math.isfinite(rcg) and rcg > 0):
        raise FactorizationError(f"The RCG target must be a positive number, got {rcg}.")
    if max_error is not None and not (math.isfinite(max_error) and max_error >= 0):
        raise FactorizationError(f"max_error must be a non-negative number, got {max_error}.")
    if effort <= 0:
        raise FactorizationError("effort must be positive.")
    D, d = W.shape
    if method == "butterfly" and not (d == D and _log2_exact(D) and D >= 2):
        raise FactorizationError(
            f"Butterfly factorization needs a square power-of-two matrix, got {D}x{d}."
        )
    # The truncated-SVD baseline is a two-factor candidate (and bounds max_error searches).
    svd = (
        np.linalg.svd(W, full_matrices=False) if method == "auto" and factors in (None, 2) else None
    )
    if max_error is None:
        budget = math.floor(D * d / rcg + 1e-9)
        if budget < 1:
            raise FactorizationError(
                f"RCG {rcg} is unreachable for a {D}x{d} matrix (it allows no nonzero at all)."
            )
        cands = _candidates_for_budget(W, budget, factors, method, seed, effort, progress, svd)
        if not cands:
            raise FactorizationError(
                f"No {method} factorization of a {D}x{d} matrix meets RCG {rcg}."
            )
        best = min(cands, key=lambda c: (c.error, c.result.nnz))
        return _finish(best, cands, t0, W)
    from .search import search_max_error

    return search_max_error(
        W,
        rcg,
        max_error,
        factors,
        method,
        seed,
        effort,
        progress,
        svd,
        t0,
        _candidates_for_budget,
        _finish,
    )


def _finish(
    best: _Candidate, cands: list[_Candidate], t0: float, W: np.ndarray
) -> FactorizedMatrix:
    res = best.result
    res.info.update(
        {
            "chosen": best.name,
            "relative_error": best.error,
            "candidates": {c.name: (c.error, c.result.nnz) for c in cands},
            "time": time.perf_counter() - t0,
        }
    )
    return res
