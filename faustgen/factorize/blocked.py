"""Block-sparse candidates for ``factorize(W, …, block=bh)``.

Every factor S_q (m × n) keeps its nonzeros in blocks of ``bh`` consecutive rows × 1 column
(row panels aligned at multiples of bh, as a ``y += S[panel, j] · x[j]`` kernel wants), and
the budget counts stored entries: bh per block, padding rows of a short last panel included,
so ``D·d / stored_nnz ≥ R`` holds however a kernel stores the short panel. Inner dimensions
are multiples of bh, so only the leftmost factor (D rows) can have a short panel.

Candidates: block pruning of W (one factor; the baseline), the truncated SVD as two dense
factors (a dense factor is block-sparse with every block kept, and runs as fast per entry),
two ``spblock`` factors by accelerated palm4MSA from the truncated SVD, and for J ≥ 3
hierarchical palm4MSA or a palm4MSA chain with ``spblock`` constraints.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .hierarchical import hierarchical
from .large import is_large, large_two_factor, partial_svd_error
from .palm4msa import chain_shapes, palm4msa
from .projections import Constraint, block_energy, proj_spblock, spblock
from .result import FactorizationError, FactorizedMatrix
from .twofactor import Candidate, palm_two_factor

__all__ = ["block_candidates", "block_prune_budget", "block_svd_budget", "block_svd_rank"]

Progress = Callable[[int, int, str], None] | None
_EXACT = 1e-10


def _panels(m: int, bh: int) -> int:
    return -(-m // bh)


def _rel_err(W: np.ndarray, A: np.ndarray) -> float:
    return float(np.linalg.norm(W - A) / (np.linalg.norm(W) or 1.0))


def block_prune(W: np.ndarray, budget: int, bh: int) -> Candidate:
    """The ``budget // bh`` blocks of W with the largest norm: one block-sparse factor."""
    S = proj_spblock(W, budget // bh, bh)
    fm = FactorizedMatrix([S], 1.0, {"method": "block-prune"}, block=bh)
    return Candidate("block-prune", fm, _rel_err(W, S))


def block_svd_rank(shape: tuple[int, int], budget: int, bh: int) -> int:
    """Largest rank r whose two dense factors (D×r and r×d, padded storage) fit the budget."""
    D, d = shape
    per = _panels(D, bh) * bh
    r = min(budget // (per + d), min(D, d))
    # The r×d factor stores ⌈r/bh⌉·bh rows: step back until the padding fits too.
    while r > 0 and per * r + _panels(r, bh) * bh * d > budget:
        r -= 1
    return r


def block_svd(W: np.ndarray, budget: int, bh: int, svd: tuple) -> Candidate | None:
    r = block_svd_rank(W.shape, budget, bh)
    if r < 1:
        return None
    U, s, Vt = svd
    if len(s) < r:
        return None
    root = np.sqrt(s[:r])
    fm = FactorizedMatrix(
        [U[:, :r] * root, root[:, None] * Vt[:r]], 1.0, {"method": "svd"}, block=bh
    )
    if len(s) < min(W.shape):  # a partial (randomized) SVD
        err = partial_svd_error(W, svd, r)
    else:
        err = float(np.sqrt(np.sum(s[r:] ** 2) / max(float(np.sum(s**2)), 1e-300)))
    return Candidate(f"svd-block(r={r})", fm, err)


def block_prune_budget(W: np.ndarray, max_error: float, bh: int) -> int:
    """Stored entries block pruning needs for relative error ≤ ``max_error``."""
    energy = np.sort(block_energy(W, bh).ravel())  # ascending: dropped blocks are a prefix
    total = float(energy.sum())
    if total == 0.0:
        return 0
    allowed = (max_error**2) * total * (1 + 1e-12)
    n_drop = int(np.searchsorted(np.cumsum(energy), allowed, side="right"))
    return (energy.size - n_drop) * bh


def block_svd_budget(shape: tuple[int, int], s: np.ndarray, max_error: float, bh: int) -> int:
    """Stored entries of the smallest block truncated SVD with error ≤ ``max_error`` (0 if
    none)."""
    total = float(np.sum(s**2))
    if total == 0.0:
        return 0
    tails = np.concatenate([np.cumsum((s**2)[::-1])[::-1], [0.0]])
    r = int(np.flatnonzero(tails <= (max_error**2) * total * (1 + 1e-12))[0])
    return (_panels(shape[0], bh) * r + _panels(r, bh) * shape[1]) * bh if r else 0


def _block_budgets(budget: int, shapes: list[tuple[int, int]], bh: int) -> list[int]:
    """Blocks per factor, at least one each, the rest proportional to each factor's number of
    blocks (a factor's own block count caps its share; any excess goes to the others in the
    same proportion). Fewer blocks than factors: one each, over budget (filtered later)."""
    caps = np.array([_panels(m, bh) * n for m, n in shapes], dtype=np.int64) - 1
    nb = np.zeros(len(caps), dtype=np.int64)
    left = budget // bh - len(caps)
    for _ in range(len(caps)):
        free = caps - nb
        if left <= 0 or not free.any():
            break
        nb += np.minimum(np.floor(left * free / free.sum()).astype(np.int64), free)
        left = budget // bh - len(caps) - int(nb.sum())
    return [int(v) + 1 for v in nb]


def _hierarchical_constraints(
    shapes: list[tuple[int, int]], nb: list[int], bh: int
) -> tuple[list[Constraint], list[Constraint]]:
    """The block analogue of ``default_hierarchical_constraints``: peeled factors get their
    blocks, each residual the blocks of the remaining factors (at least the block count of
    their dense product halved at each step), the last residual the last factor's."""
    J = len(shapes)
    fact = [spblock(nb[q], bh) for q in range(J - 1)]
    res = []
    for q in range(J - 1):
        if q == J - 2:
            res.append(spblock(nb[-1], bh))
        else:
            fill = _panels(shapes[q + 1][0], bh) * shapes[-1][1] / 2.0 ** (q + 1)
            res.append(spblock(int(max(fill, sum(nb[q + 1 :]))), bh))
    return fact, res


def _inner_dims(shape: tuple[int, int], budget: int, J: int, bh: int) -> list[int]:
    """Every inner dimension near the rank r a truncated SVD can afford (a multiple of bh).

    Measured on a trained-like 256×784 at RCG 4 with J = 3: inner dimensions 48 (≈ r) gave
    relative error 0.49 (the two-factor optimum is 0.485), 96 gave 0.60 and min(D, d) = 256,
    the unstructured default, 0.72: block factors cannot use a wide inner dimension."""
    r = budget / (shape[0] + shape[1])
    k = min(max(bh, round(r / bh) * bh), _panels(min(shape), bh) * bh)
    return [int(k)] * (J - 1)


def block_hierarchical(
    W: np.ndarray, budget: int, J: int, bh: int, effort: float, progress: Progress
) -> Candidate:
    inner = _inner_dims(W.shape, budget, J, bh)
    shapes = chain_shapes(W.shape, inner)
    fact, res = _hierarchical_constraints(shapes, _block_budgets(budget, shapes, bh), bh)
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
    fm.block = bh
    return Candidate(f"hierarchical-block(J={J})", fm, fm.relative_error(W))


def block_chain(W: np.ndarray, budget: int, J: int, bh: int, effort: float) -> Candidate:
    inner = _inner_dims(W.shape, budget, J, bh)
    shapes = chain_shapes(W.shape, inner)
    cons = [spblock(v, bh) for v in _block_budgets(budget, shapes, bh)]
    fm = palm4msa(W, cons, inner_dims=inner, n_iter=max(int(200 * effort), 10))
    fm.block = bh
    return Candidate(f"palm4msa-{J}-block", fm, fm.relative_error(W))


def block_candidates(
    W: np.ndarray,
    budget: int,
    factors: int | None,
    method: str,
    seed: int,
    effort: float,
    progress: Progress,
    svd: tuple | None,
    bh: int,
) -> list[Candidate]:
    """All block candidates within ``budget`` stored entries (bh per block)."""
    if method == "butterfly":
        raise FactorizationError("Butterfly factorizations have no block-sparse form.")
    cands: list[Candidate] = []
    if factors in (None, 1) and (method == "auto" or factors == 1):
        cands.append(block_prune(W, budget, bh))
    if method == "auto" and factors in (None, 2) and svd is not None:
        c = block_svd(W, budget, bh, svd)
        if c is not None:
            cands.append(c)
    cands = [c for c in cands if c.result.stored_nnz <= budget]
    if cands and min(c.error for c in cands) <= _EXACT:
        return cands
    if method in ("auto", "palm4msa") and factors in (None, 2):
        two = large_two_factor if is_large(W.shape) else palm_two_factor
        cands.extend(two(W, budget, seed, effort, progress, bh, svd))
    J = factors or 3
    if J >= 3 and method == "palm4msa":
        cands.append(block_chain(W, budget, J, bh, effort))
    if J >= 2 and (method == "hierarchical" or (method == "auto" and J >= 3 and factors)):
        cands.append(block_hierarchical(W, budget, J, bh, effort, progress))
    return [c for c in cands if c.result.stored_nnz <= budget]
