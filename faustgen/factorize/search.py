"""``max_error`` mode: the smallest nonzero budget whose best factorization meets the error.

Pruning and truncated SVD have closed-form errors for every budget, so they give an upper
bound on the budget at once; a bisection in log-budget then probes smaller budgets with the
full candidate set (sparse products usually need far fewer nonzeros than the baselines).
Error is not guaranteed monotone in the budget, so every probe's candidates are kept and the
answer is the lowest-nonzero candidate that met the bound, whichever probe produced it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .blocked import block_prune_budget, block_svd_budget
from .butterfly import log2_exact
from .result import FactorizationError

__all__ = ["prune_budget", "search_max_error", "svd_budget"]


def prune_budget(W: np.ndarray, max_error: float) -> int:
    """Fewest nonzeros that magnitude pruning needs for relative error ≤ ``max_error``."""
    energy = np.sort((W * W).ravel())  # ascending: the dropped entries are a prefix
    total = float(energy.sum())
    if total == 0.0:
        return 0
    dropped = np.cumsum(energy)
    allowed = (max_error**2) * total * (1 + 1e-12)
    n_drop = int(np.searchsorted(dropped, allowed, side="right"))
    return int(W.size - n_drop)


def svd_budget(shape: tuple[int, int], s: np.ndarray, max_error: float) -> int | None:
    """Nonzeros of the smallest truncated SVD with relative error ≤ ``max_error``."""
    total = float(np.sum(s**2))
    if total == 0.0:
        return None
    tails = np.concatenate([np.cumsum((s**2)[::-1])[::-1], [0.0]])  # tails[r] = Σ_{i≥r}
    ok = np.flatnonzero(tails <= (max_error**2) * total * (1 + 1e-12))
    r = int(ok[0])
    return r * (shape[0] + shape[1]) if r >= 1 else None


def search_max_error(
    W: np.ndarray,
    max_error: float,
    make: Callable[[int], list[Any]],
    *,
    rcg: float | None,
    factors: int | None,
    method: str,
    svd: tuple | None,
    block: int | None,
    progress: Callable[[int, int, str], None] | None,
) -> tuple[Any, list[Any]]:
    """Smallest stored-entry budget (nonzeros, or bh per block with ``block``) whose
    candidates ``make(budget)`` meet ``max_error``: (the best candidate, every candidate
    probed)."""
    D, d = W.shape
    cap = math.floor(D * d / rcg + 1e-9) if rcg is not None else D * d
    if cap < (block or 1):
        raise FactorizationError(
            f"RCG {rcg} is unreachable for a {D}x{d} matrix (it allows no "
            + ("nonzero at all)." if block is None else f"block of {block} at all).")
        )
    seen: list[Any] = []

    def probe(budget: int) -> list[Any]:
        cands = make(budget)
        seen.extend(cands)
        return [c for c in cands if c.error <= max_error]

    hi = cap
    if method == "auto" and factors in (None, 1, 2):
        bounds = []
        if factors in (None, 1):
            bounds.append(
                prune_budget(W, max_error)
                if block is None
                else block_prune_budget(W, max_error, block)
            )
        if svd is not None and factors in (None, 2):
            if block is None:
                b = svd_budget(W.shape, svd[1], max_error)
            else:
                b = block_svd_budget(W.shape, svd[1], max_error, block) or None
            if b is not None:
                bounds.append(b)
        bounds = [b for b in bounds if 1 <= b <= cap]
        if bounds:
            hi = min(bounds)
    is_butterfly = block is None and (
        method == "butterfly"
        or (method == "auto" and d == D and log2_exact(D) and factors not in (None, 1, 2))
    )
    n_probes = 1 if is_butterfly else 7
    ok = probe(hi)
    if not ok and hi < cap:
        ok = probe(cap)
        hi = cap
    if not ok:
        raise FactorizationError(
            f"No {method} factorization of the {D}x{d} matrix reaches relative error "
            f"{max_error:g}" + (f" with RCG at least {rcg:g}." if rcg is not None else ".")
        )
    best_nnz = min(c.result.stored_nnz for c in ok)
    hi = max(min(hi, best_nnz), 1)
    lo = max(hi // 32, 0)
    for step in range(n_probes - 1):
        if progress is not None:
            progress(step + 1, n_probes, f"max_error search, budget {hi}")
        if hi - lo <= max(1, int(0.03 * hi)):
            break
        mid = int(math.sqrt(max(lo, 1) * hi)) if lo > 0 else max(hi // 4, 1)
        mid = min(max(mid, lo + 1), hi - 1)
        found = probe(mid)
        if found:
            hi = min(mid, min(c.result.stored_nnz for c in found))
        else:
            lo = mid
    good = [c for c in seen if c.error <= max_error]
    best = min(good, key=lambda c: (c.result.stored_nnz, c.error))
    if progress is not None:
        progress(n_probes, n_probes, "max_error search done")
    return best, seen
