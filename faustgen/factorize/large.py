"""Two sparse factors for large matrices (network layers of millions of weights).

The small-matrix search (:func:`.twofactor.palm_two_factor`) probes four or more inner
dimensions for 20 sweeps each and runs the winner for 100 or more: at 25088×4096 that is
hours, since one sweep costs a few D·d·k products. Here:

* the inner dimension is chosen by the same ladder search on a seeded random submatrix of
  about ``_SUB_ENTRIES`` entries (rows and columns sampled alike, same RCG): the winning
  factor density transfers (measured on 2048×1024 Gaussian and heavy-tailed matrices: the
  same ladder rung wins at scale 1, 1/2 and 1/4);
* only densities whose full-size sweeps fit ``_MIN_SWEEPS`` times into the arithmetic budget
  are probed, so the inner dimension is capped as the layer grows;
* the full-size run uses the Gram form of the sweep (:class:`.engine._GramSweep`, two
  D·d·k products per sweep instead of four) and as many sweeps as its arithmetic budget
  (:func:`flops_budget`, graded by the matrix's size) allows (between ``_MIN_SWEEPS`` and
  the small path's 100 · effort);
* the truncated SVD (baseline and block start) is a randomized range finder with power
  iterations in float32 (:func:`randomized_svd`), at the ranks actually used.

Everything is seeded: a given seed reproduces the result bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .engine import accelerated_two_factor, start_state
from .palm4msa import SpectralNorm
from .result import FactorizedMatrix
from .twofactor import (
    _BLOCK_LADDER,
    _LADDER,
    _WORK_DTYPE,
    Candidate,
    _inner_dim,
    _svd_init,
    _two_factor_init,
    factor_constraints,
    palm_two_factor,
)

__all__ = [
    "flops_budget",
    "is_large",
    "large_two_factor",
    "partial_svd_error",
    "randomized_svd",
    "refit_sweep_flops",
    "sweep_flops",
]

Progress = Callable[[int, int, str], None] | None

# Matrices with more than this many entries take the large path (VGG's 512×2304 convolutions
# and up); every BENCHMARKS.md matrix and demo layer (1024×1024 at most) stays on the small
# path, unchanged.
LARGE_ENTRIES = 1 << 20
# Entries of the submatrix the inner dimension is searched on: about 1024×1024, at most a
# quarter of the matrix (a probe sweep then costs at most 1/8 of a full-size one).
_SUB_ENTRIES = 1 << 20
# Arithmetic of the full-size run at effort 1: _LARGE_FLOPS (about 100 s of single-core
# float32 BLAS here) for a layer of _REF_ENTRIES (VGG's 25088×4096) or more, and
# entries^_BUDGET_EXP less below: 4096×4096 gets 0.4 of it, 512×4608 0.15. The small path,
# which has no budget, spent twice that on VGG-11's 512×4608 convolutions at RCG 4 (51 s of
# CPU against 28 s, relative error 0.416 against 0.422).
_LARGE_FLOPS = 1.0e13
_REF_ENTRIES = 25088 * 4096
_BUDGET_EXP = 0.5
_MIN_SWEEPS = 15
# Share of the budget the three-factor refit may take (when ten of its sweeps fit in it).
_REFIT_SHARE = 1.0 / 3.0
# Oversampling and power iterations of the randomized SVD.
_OVERSAMPLE = 16
_POWER_ITERS = 2


def is_large(shape: tuple[int, int]) -> bool:
    return shape[0] * shape[1] > LARGE_ENTRIES


def flops_budget(D: int, d: int, effort: float) -> float:
    """Arithmetic allowed for a D×d matrix's full-size runs (two factors and the refit)."""
    return _LARGE_FLOPS * min(1.0, D * d / _REF_ENTRIES) ** _BUDGET_EXP * effort


def refit_sweep_flops(D: int, d: int, k: int) -> float:
    """Floating-point operations of one three-factor refit sweep (about 10·D·k·d)."""
    return 10.0 * D * k * d


def use_gram(D: int, d: int, k: int) -> bool:
    """The Gram sweep (2·D·d·k + 2·(D+d)·k² multiply-adds) beats the dense one (4·D·d·k)
    when k < D·d/(D + d); a margin keeps the dense one near the break-even point."""
    return k < 0.8 * D * d / (D + d)


def sweep_flops(D: int, d: int, k: int) -> float:
    """Floating-point operations of one two-factor sweep (matmuls only)."""
    if use_gram(D, d, k):
        return 4.0 * D * d * k + 4.0 * (D + d) * k * k
    return 8.0 * D * d * k


def randomized_svd(W: np.ndarray, rank: int, seed: int) -> tuple:
    """Rank-``rank`` truncated SVD by a randomized range finder (Halko, Martinsson & Tropp
    2011, Alg. 4.4: ``_POWER_ITERS`` subspace iterations, QR-orthonormalized), in the thin
    form of ``np.linalg.svd``. Its ``s`` has only ``rank`` values: errors are taken against
    ‖W‖_F² (see :func:`partial_svd_error`). Float64 throughout (about twice the float32
    time, a few seconds at 25088×4096), so that an exactly low-rank W is recognised as such.
    """
    D, d = W.shape
    rank = min(rank, D, d)
    ell = min(rank + _OVERSAMPLE, D, d)
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(W @ rng.standard_normal((d, ell)))[0]
    for _ in range(_POWER_ITERS):
        Z = np.linalg.qr(W.T @ Q)[0]
        Q = np.linalg.qr(W @ Z)[0]
    Ub, s, Vt = np.linalg.svd(Q.T @ W, full_matrices=False)
    return Q @ Ub[:, :rank], s[:rank], Vt[:rank]


def svd_tail_error(s: np.ndarray, r: int, total: float) -> float:
    """Relative error of the rank-r truncation, ``total`` = ‖W‖_F²: with a partial ``s``
    (randomized SVD) the tail is what the first r values leave of the total."""
    if total <= 0:
        return 0.0
    return math.sqrt(max(total - float(np.sum(s[:r] ** 2)), 0.0) / total)


def partial_svd_error(W: np.ndarray, svd: tuple, r: int) -> float:
    """Relative error of the rank-r truncation from a partial SVD. The tail formula loses
    the digits of a small error: ‖W‖² − Σs² cancels, and ‖W‖² summed over 10⁸ entries is
    itself off by ~1e-11 relative (a rank-1 25088×4096 matrix came out at 2e-6, not 0).
    Below 1e-3 the residual is formed instead (one more D·d·r product)."""
    U, s, Vt = svd
    err = svd_tail_error(s, r, float(np.vdot(W, W)))
    if err < 1e-3:
        err = product_error(W, U[:, :r] * s[:r], Vt[:r], 1.0, np.float64)
    return err


def _subsample(W: np.ndarray, budget: int, seed: int, bh: int | None) -> tuple:
    D, d = W.shape
    scale = math.sqrt(min(_SUB_ENTRIES, D * d // 4) / (D * d))
    Ds = max(round(D * scale), bh or 1, 2)
    ds = max(round(d * scale), 2)
    rng = np.random.default_rng([seed, 1])
    rows = np.sort(rng.choice(D, Ds, replace=False))
    cols = np.sort(rng.choice(d, ds, replace=False))
    sub_budget = max(int(budget * (Ds * ds) / (D * d)), bh or 1)
    return np.ascontiguousarray(W[np.ix_(rows, cols)]), sub_budget


def large_two_factor(
    W: np.ndarray,
    budget: int,
    seed: int,
    effort: float,
    progress: Progress,
    bh: int | None = None,
    svd: tuple | None = None,
    refit: bool = False,
) -> list[Candidate]:
    """Two sparse (``bh``: block-sparse) factors of a large W within an arithmetic budget.

    Returns one candidate, the full-size run; ``svd`` (possibly partial, see
    :func:`randomized_svd`) is the block start and is computed here when needed. With
    ``refit`` (a three-factor refit follows, unstructured only), ``_REFIT_SHARE`` of the
    budget is kept for it when ten refit sweeps fit there; the share is the result's
    ``info["refit_flops"]`` (0: no refit).
    """
    D, d = W.shape
    flops = flops_budget(D, d, effort)
    ladder = _BLOCK_LADDER if bh else _LADDER
    fits = [
        x
        for x in ladder
        if sweep_flops(D, d, _inner_dim(D, d, budget, x, bh)) * _MIN_SWEEPS <= flops
    ]
    allowed = tuple(fits) or (ladder[0],)
    total_sweeps = 100  # progress units: 20 for the submatrix search, the rest full size
    if len(allowed) > 1:
        Ws, sub_budget = _subsample(W, budget, seed, bh)

        def sub_progress(done: int, total: int, msg: str) -> None:
            if progress is not None:
                progress(int(20 * done / max(total, 1)), total_sweeps, f"submatrix: {msg}")

        sub = palm_two_factor(Ws, sub_budget, seed, effort, sub_progress, bh, ladder=allowed)
        density = min(sub, key=lambda c: c.error).result.info["density"] if sub else allowed[0]
    else:
        density = allowed[0]
    k = _inner_dim(D, d, budget, density, bh)
    cons = factor_constraints(budget, D, d, k, bh)
    if cons is None:
        return []
    c0, c1 = cons
    refit_flops = 0.0
    if refit and not bh and 10 * refit_sweep_flops(D, d, k) <= _REFIT_SHARE * flops:
        refit_flops = _REFIT_SHARE * flops
        flops -= refit_flops
    rng = np.random.default_rng(seed)
    if bh:
        if svd is None or len(svd[1]) < min(k, D, d):
            svd = randomized_svd(W, min(k, D, d), seed)
        S0, S1 = _svd_init(W, k, rng, svd, c0, c1)
    else:
        S0, S1 = _two_factor_init(D, d, k, rng)
    w_norm = float(np.linalg.norm(W)) or 1.0
    Wk = (W / w_norm).astype(_WORK_DTYPE)
    st = start_state(Wk, S0, S1)
    n_sweeps = int(min(max(flops / sweep_flops(D, d, k), _MIN_SWEEPS), 100 * effort))
    n_sweeps = max(n_sweeps, 2)
    n_fast = max(min(20, n_sweeps // 3), 1)  # the probes' fast support discovery first
    gram = use_gram(D, d, k)
    norms = SpectralNorm(seed)

    def tick(_: int) -> None:
        if progress is not None:
            done = 20 + int(80 * st.iterations / n_sweeps)
            progress(min(done, total_sweeps), total_sweeps, f"inner dimension {k}")

    accelerated_two_factor(Wk, st, c0, c1, n_fast, 0.8, 0.0, 1.5, norms, tick, gram=gram)
    accelerated_two_factor(
        Wk, st, c0, c1, n_sweeps - n_fast, 0.9, 3e-4, 1.3, norms, tick, gram=gram
    )
    del Wk
    S0, S1 = st.S0.astype(np.float64), st.S1.astype(np.float64)
    lam = st.lam * w_norm
    info = {"method": "palm4msa", "inner_dim": k, "iterations": st.iterations}
    info["density"] = density
    info["refit_flops"] = refit_flops
    fm = FactorizedMatrix([S0, S1], lam, info, block=bh)
    name = "palm4msa-2-block" if bh else "palm4msa-2"
    return [Candidate(f"{name}(k={k})", fm, product_error(W, st.S0, st.S1, st.lam * w_norm))]


def product_error(
    W: np.ndarray, S0: np.ndarray, S1: np.ndarray, lam: float, dtype: type = np.float32
) -> float:
    """‖W − λ S_0 S_1‖_F / ‖W‖_F, the product formed in ``dtype`` blocks of rows (no D×d
    temporary), the squares summed in float64."""
    D = W.shape[0]
    step = max(1, (1 << 22) // max(W.shape[1], 1))
    S1f = S1.astype(dtype)
    acc = 0.0
    for i in range(0, D, step):
        R = (S0[i : i + step].astype(dtype) @ S1f).astype(np.float64)
        R *= -lam
        R += W[i : i + step]
        acc += float(np.vdot(R, R))
    return math.sqrt(acc) / (float(np.linalg.norm(W)) or 1.0)
