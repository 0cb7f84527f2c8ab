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
* at RCG ≥ 3 (``factors`` not given), three sparse factors refitted from a two-factor
  solution with an identity inserted between its factors (see :func:`.twofactor.split_three`;
  for heavy-tailed matrices, e.g. trained layers, from a converged run at a wide inner
  dimension that the short probes rank too low);
* with ``factors=J ≥ 3``, hierarchical palm4MSA with an even nonzero split.

``block=bh`` restricts every factor to blocks of bh rows × 1 column and counts bh stored
entries per block (see :mod:`.blocked` for its candidates).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable

import numpy as np

from .blocked import block_candidates
from .butterfly import butterfly, butterfly_nnz, log2_exact
from .hierarchical import default_hierarchical_constraints, hadamard_constraints, hierarchical
from .large import (
    is_large,
    large_two_factor,
    partial_svd_error,
    randomized_svd,
)
from .palm4msa import as_matrix, chain_shapes, palm4msa
from .projections import proj_sp, sp
from .result import FactorizationError, FactorizedMatrix
from .search import search_max_error
from .twofactor import (
    _FINAL_FLOPS,
    heavy_tailed,
    palm_two_factor,
    split_three,
    two_factor_at,
    wide_inner_dim,
)
from .twofactor import Candidate as _Candidate

__all__ = ["factorize"]

Progress = Callable[[int, int, str], None] | None
_METHODS = ("auto", "palm4msa", "hierarchical", "butterfly")
_EXACT = 1e-10  # relative error treated as an exact factorization


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
    if len(s) < r:
        return None
    root = np.sqrt(s[:r])
    fm = FactorizedMatrix([U[:, :r] * root, root[:, None] * Vt[:r]], 1.0, {"method": "svd"})
    if len(s) < min(D, d):  # a partial (randomized) SVD
        err = partial_svd_error(W, svd, r)
    else:
        tail = float(np.sum(s[r:] ** 2))
        err = math.sqrt(tail / max(float(np.sum(s**2)), 1e-300))
    return _Candidate(f"svd(r={r})", fm, err)


def _butterflies(W: np.ndarray, budget: int, factors: int | None) -> list[_Candidate]:
    n = W.shape[0]
    L = log2_exact(n) if W.shape[0] == W.shape[1] else None
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
    if d == D and log2_exact(D) == J and J >= 2 and budget >= 2 * D * J:
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
        if not (d == D and log2_exact(D) and D >= 2):
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
        three = factors is None and method == "auto" and 3 * budget <= D * d
        cands.extend(_sparse_products(W, budget, seed, effort, progress, three))
    if method == "palm4msa" and factors not in (None, 2):
        cands.append(_palm_chain(W, budget, int(factors), effort))
    if method == "hierarchical" or (method == "auto" and factors is not None and factors >= 3):
        J = factors or 3
        if J >= 2:
            cands.extend(_hierarchical(W, budget, J, effort, progress))
    return [c for c in cands if c.result.nnz <= budget]


def _sparse_products(
    W: np.ndarray, budget: int, seed: int, effort: float, progress: Progress, three: bool
) -> list[_Candidate]:
    """Two sparse factors (searched inner dimension) and, with ``three`` (RCG ≥ 3), three
    refitted from the best of them. Progress runs once from 0 to the end over all stages."""
    D, d = W.shape
    large = is_large(W.shape)
    phase = _phase(progress, 0, 600 if three else 1000)
    if large:
        two = large_two_factor(W, budget, seed, effort, phase, refit=three)
    else:
        two = palm_two_factor(W, budget, seed, effort, phase)
    cands = list(two)
    if not (two and three):
        return cands
    base = min(two, key=lambda c: c.error)
    k = base.result.factors[0].shape[1]
    if large:
        # The share of the budget the two-factor run left for the refit (0: none).
        flops = base.result.info.get("refit_flops", 0.0) / effort
        if not flops:
            return cands
    else:
        kw = wide_inner_dim(D, d, budget)
        heavy = heavy_tailed(W)
        if heavy and kw > k:
            # Heavy-tailed (trained) matrices: three factors from a wide inner dimension,
            # which the short two-factor probes rank too low (see twofactor.heavy_tailed);
            # its converged run replaces its probe, if there was one.
            wide = two_factor_at(W, budget, kw, seed, effort, _phase(progress, 600, 800))
            if wide is not None:
                cands = [c for c in cands if c.name != wide.name]
                cands.append(wide)
                base = wide
        # Light-tailed matrices gain less from the third factor (1-3 % relative on the
        # benchmark's Gaussian and trained-like ones): a third of the refit arithmetic.
        flops = _FINAL_FLOPS if heavy else _FINAL_FLOPS / 3
    c3 = split_three(W, base, budget, effort, flops, _phase(progress, 800, 1000))
    if c3 is not None:
        cands.append(c3)
    return cands


def _phase(progress: Progress, lo: int, hi: int) -> Progress:
    """A stage's ``progress(done, total, message)`` mapped onto [lo, hi] of 1000 units."""
    if progress is None:
        return None

    def report(done: int, total: int, message: str) -> None:
        frac = min(done, total) / max(total, 1)
        progress(lo + int((hi - lo) * frac), 1000, message)

    return report


def _palm_chain(W: np.ndarray, budget: int, J: int, effort: float) -> _Candidate:
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
    block: int | None = None,
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

    ``block=bh`` makes every factor block-sparse, its nonzeros in blocks of bh consecutive
    rows × 1 column (row panels at multiples of bh; inner dimensions are multiples of bh),
    for a kernel that adds ``S[panel, j] · x[j]`` a bh-vector at a time. The compression is
    then counted in stored entries, bh per block (``result.stored_nnz``, padding of a short
    last panel included), and the result has ``result.block == bh``. ``block=None`` (the
    default) is the unstructured engine, unchanged. Butterfly has no block form.
    """
    t0 = time.perf_counter()
    W = as_matrix(W)
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
    if block is not None:
        if isinstance(block, bool) or int(block) != block or block < 1:
            raise FactorizationError(f"The block height must be a positive integer, got {block}.")
        block = int(block)
        if method == "butterfly":
            raise FactorizationError("Butterfly factorizations have no block-sparse form.")
    D, d = W.shape
    if method == "butterfly" and not (d == D and log2_exact(D) and D >= 2):
        raise FactorizationError(
            f"Butterfly factorization needs a square power-of-two matrix, got {D}x{d}."
        )
    # The truncated-SVD baseline is a two-factor candidate (and bounds max_error searches).
    # With blocks it is also palm4MSA's starting point.
    use_svd = method == "auto" or (block is not None and method == "palm4msa")
    use_svd = use_svd and factors in (None, 2)
    if use_svd and max_error is None and is_large(W.shape):
        # Only the ranks the candidates use: the baseline's (and, with blocks, the start's).
        rank = math.floor(D * d / rcg + 1e-9) // (D + d)
        svd = randomized_svd(W, max(rank, 1), seed)
    else:
        svd = np.linalg.svd(W, full_matrices=False) if use_svd else None
    make = (
        _candidates_for_budget if block is None else functools.partial(block_candidates, bh=block)
    )
    if max_error is None:
        budget = math.floor(D * d / rcg + 1e-9)
        if budget < 1:
            raise FactorizationError(
                f"RCG {rcg} is unreachable for a {D}x{d} matrix (it allows no nonzero at all)."
            )
        if block is not None and budget < block:
            raise FactorizationError(
                f"RCG {rcg} is unreachable for a {D}x{d} matrix with blocks of {block} "
                f"(it allows {budget} stored entries, less than one block)."
            )
        cands = make(W, budget, factors, method, seed, effort, progress, svd)
        if not cands:
            raise FactorizationError(
                f"No {method} factorization of a {D}x{d} matrix meets RCG {rcg}."
            )
        best = min(cands, key=lambda c: (c.error, c.result.stored_nnz))
        return _finish(best, cands, t0, W)
    best, seen = search_max_error(
        W,
        max_error,
        lambda budget: make(W, budget, factors, method, seed, effort, None, svd),
        rcg=rcg,
        factors=factors,
        method=method,
        svd=svd,
        block=block,
        progress=progress,
    )
    return _finish(best, seen, t0, W)


def _finish(
    best: _Candidate, cands: list[_Candidate], t0: float, W: np.ndarray
) -> FactorizedMatrix:
    res = best.result
    res.info.update(
        {
            "chosen": best.name,
            "relative_error": best.error,
            "candidates": {c.name: (c.error, c.result.stored_nnz) for c in cands},
            "time": time.perf_counter() - t0,
        }
    )
    return res
