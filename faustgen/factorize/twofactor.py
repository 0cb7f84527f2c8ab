"""Two sparse factors ``W ≈ λ S_0 (D×k) · S_1 (k×d)`` with a searched inner dimension k.

Used by the front end for unstructured factors (``sp`` budgets, the paper's start) and for
block-sparse ones (``spblock`` budgets in blocks of bh rows × 1 column, k a multiple of bh,
a start from the truncated SVD). Both walk a ladder of factor densities with short probe
runs, then run the best inner dimension to convergence.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .engine import accelerated_multi_factor, accelerated_two_factor, start_state
from .palm4msa import SpectralNorm
from .projections import Constraint, sp, spblock
from .result import FactorizedMatrix

__all__ = [
    "Candidate",
    "factor_constraints",
    "heavy_tailed",
    "palm_two_factor",
    "split_three",
    "two_factor_at",
    "wide_inner_dim",
]

Progress = Callable[[int, int, str], None] | None


@dataclass
class Candidate:
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


def _svd_init(
    W: np.ndarray, k: int, rng: np.random.Generator, svd: tuple, c0: Constraint, c1: Constraint
) -> tuple:
    """Block start: the rank-k truncated SVD split as U√s, √sVᵀ (seeded random rows beyond
    the rank), projected onto the constraints so the starting point is feasible.

    Measured on trained-like matrices: the paper's start (S_0 = 0, S_1 = I) ends 5–15 %
    (relative) worse with block constraints, and a start from the block-projected
    unstructured solution worse still; the SVD start never ends above the block-projected
    truncated SVD it begins from."""
    U, s, Vt = svd
    D, d = W.shape
    r = min(k, len(s))
    root = np.sqrt(s[:r])
    S0 = np.zeros((D, k))
    S1 = np.zeros((k, d))
    S0[:, :r] = U[:, :r] * root
    S1[:r] = root[:, None] * Vt[:r]
    if k > r:
        tail = math.sqrt(s[r - 1]) if r else 1.0
        S1[r:] = rng.standard_normal((k - r, d)) * (tail / math.sqrt(d))
    return c0.project(S0), c1.project(S1)


def _split_budget(budget: int, D: int, d: int, k: int) -> tuple[int, int]:
    """Nonzeros for S_0 (D×k) and S_1 (k×d): between a size-proportional split and an even
    one, which measured best on both unstructured and low-rank-like matrices."""
    share = (D / (D + d) + 0.5) / 2.0
    n0 = int(min(max(round(budget * share), 1), D * k))
    n1 = int(min(budget - n0, k * d))
    return n0, max(n1, 0)


def _split_blocks(budget: int, D: int, d: int, k: int, bh: int) -> tuple[int, int]:
    """Blocks for S_0 (⌈D/bh⌉·k blocks) and S_1 ((k/bh)·d blocks), ``budget`` counted in
    stored entries. A size-proportional split: with blocks it measured best in both
    orientations (the unstructured split's pull towards 1/2 cost up to 30 % relative error on
    784×256, where the SVD start puts three quarters of the energy budget in S_0)."""
    n_blocks = budget // bh
    share = D / (D + d)
    n0 = int(min(max(round(n_blocks * share), 1), -(-D // bh) * k))
    n1 = int(min(n_blocks - n0, (k // bh) * d))
    return n0, max(n1, 0)


def factor_constraints(
    budget: int, D: int, d: int, k: int, bh: int | None = None
) -> tuple[Constraint, Constraint] | None:
    """The constraints of S_0 (D×k) and S_1 (k×d) sharing ``budget`` (``sp``, or ``spblock``
    with ``bh``); None when the split leaves a factor without a nonzero."""
    if bh:
        n0, n1 = _split_blocks(budget, D, d, k, bh)
        return (spblock(n0, bh), spblock(n1, bh)) if n0 >= 1 and n1 >= 1 else None
    n0, n1 = _split_budget(budget, D, d, k)
    return (sp(n0), sp(n1)) if n0 >= 1 and n1 >= 1 else None


def _inner_dim(D: int, d: int, budget: int, density: float, bh: int | None = None) -> int:
    """Inner dimension at which both factors have about the given density (a multiple of
    ``bh`` when blocked)."""
    r = budget / (D + d)  # the rank a truncated SVD can afford
    k = int(min(max(round(r / density), 1), 2 * max(D, d)))
    if bh:
        k = max(bh, round(k / bh) * bh)
    return k


# Factor densities on which the inner dimension is searched. Unstructured: the measured
# optimum lies between 9 % (flat spectrum, low compression) and 45 % (fast-decaying spectrum,
# high compression); the search starts at 30 % and 20 % and walks towards the better one.
# Blocked: the optimum is much denser (k between r and 3r, r the affordable SVD rank, on
# trained-like matrices): the search starts at 75 % and 45 %.
_LADDER = (0.6, 0.45, 0.3, 0.2, 0.13, 0.09, 0.06)
_BLOCK_LADDER = (1.0, 0.75, 0.6, 0.45, 0.3, 0.2, 0.13)

# The iterations run on float32 working copies of W/‖W‖ (unit norm, so no under- or
# overflow whatever W's scale): single-precision BLAS and element-wise passes are about twice
# as fast, and the PALM errors (> 1e-3 relative) are far above float32 rounding. Candidates
# are returned, and their errors measured, in float64.
_WORK_DTYPE = np.float32
# Arithmetic budget of the final run (see below); float32 sweeps cost half as much as the
# float64 ones the earlier 6e10 was set for, so 9e10 is both faster and ~1.5x the sweeps.
_FINAL_FLOPS = 9e10
# A probe whose best error after 12 sweeps (at effort 1) exceeds the best earlier probe's at
# the same sweep by this factor stops there (it would lose the comparison after 20 anyway:
# on the benchmark matrices, gaps between probes moved by at most ~5 % from sweep 12 to 20).
_GIVE_UP = 1.08


def palm_two_factor(
    W: np.ndarray,
    budget: int,
    seed: int,
    effort: float,
    progress: Progress,
    bh: int | None = None,
    svd: tuple | None = None,
    ladder: tuple[float, ...] | None = None,
) -> list[Candidate]:
    """Two sparse factors: a short run for a few inner dimensions, then the best one runs to
    convergence. The first iterations use a 1.5/Lipschitz step and light inertia (fast
    support discovery, measured to rank the inner dimensions reliably after ~20 sweeps), the
    later ones a 1.3/Lipschitz step with stronger inertia (measured faster than 1/Lipschitz
    on every benchmark matrix; any increase of the error triggers a restart).

    With ``bh``, both factors are ``spblock`` constrained (``budget`` counts stored entries,
    bh per block) and start from the truncated SVD ``svd`` (computed here if not given)."""
    D, d = W.shape
    w_norm = float(np.linalg.norm(W)) or 1.0
    Wk = (W / w_norm).astype(_WORK_DTYPE)
    rng = np.random.default_rng(seed)
    runs: dict[int, list] = {}
    n_probe = max(int(20 * effort), 3)
    n_final = max(int(100 * effort), 10)
    n_check = max(int(12 * effort), 2)
    total = n_probe * 4 + n_final
    done = 0
    full = _BLOCK_LADDER if bh else _LADDER
    ladder = full if ladder is None else tuple(ladder)
    if bh and svd is None:
        svd = np.linalg.svd(W, full_matrices=False)

    def launch(density: float) -> None:
        nonlocal done
        k = _inner_dim(D, d, budget, density, bh)
        if k in runs:
            return
        cons = factor_constraints(budget, D, d, k, bh)
        if cons is None:
            return
        c0, c1 = cons
        S0, S1 = _svd_init(W, k, rng, svd, c0, c1) if bh else _two_factor_init(D, d, k, rng)
        st = start_state(Wk, S0, S1)
        run = [k, st, c0, c1, SpectralNorm(seed), density]
        # A probe far behind the best earlier one at the same sweep stops early.
        ref = [min(r[1].errors[: n_check + 1]) for r in runs.values() if len(r[1].errors) > n_check]

        def give_up(j: int, err: float) -> bool:
            return j == n_check and bool(ref) and err > _GIVE_UP * min(ref)

        accelerated_two_factor(Wk, st, c0, c1, n_probe, 0.8, 0.0, 1.5, run[4], give_up=give_up)
        runs[k] = run
        done += n_probe
        if progress is not None:
            progress(done, total, f"two factors, inner dimension {k}")

    def err_at(i: int) -> float:
        k = _inner_dim(D, d, budget, ladder[i], bh)
        return runs[k][1].err if k in runs else math.inf

    lo, hi = (_nearest(ladder, x) for x in ((0.75, 0.45) if bh else (0.3, 0.2)))
    if lo == hi:
        lo, hi = max(hi - 1, 0), min(lo + 1, len(ladder) - 1)
    launch(ladder[lo])
    launch(ladder[hi])
    if not runs:
        return []
    # Walk down the ladder while the error keeps improving (a unimodal search: probes are
    # short, so only the winner's neighbours are ever tried).
    step, i = (1, hi) if err_at(hi) < err_at(lo) else (-1, lo)
    while 0 <= i + step < len(ladder):
        launch(ladder[i + step])
        if err_at(i + step) >= err_at(i):
            break
        i += step
    k, st, c0, c1, norms, _ = min(runs.values(), key=lambda r: r[1].err)
    # Small problems converge slowly but iterate fast: give them up to 400 sweeps within a
    # fixed amount of arithmetic (_FINAL_FLOPS at effort 1, a few seconds of BLAS).
    flops = 10.0 * D * d * k
    n_final = max(n_final, min(int(_FINAL_FLOPS * effort / flops), int(400 * effort)))

    def tick(_: int) -> None:
        if progress is not None:
            progress(min(done + st.iterations - n_probe, total), total, f"inner dimension {k}")

    accelerated_two_factor(Wk, st, c0, c1, n_probe, 0.8, 0.0, 1.5, norms, tick)
    accelerated_two_factor(Wk, st, c0, c1, n_final, 0.9, 3e-4, 1.3, norms, tick)
    out = []
    name = "palm4msa-2-block" if bh else "palm4msa-2"
    for k, st, _c0, _c1, _n, density in runs.values():
        S0, S1 = st.S0.astype(np.float64), st.S1.astype(np.float64)
        lam = st.lam * w_norm
        info = {"method": "palm4msa", "inner_dim": k, "iterations": st.iterations}
        info["density"] = density
        fm = FactorizedMatrix([S0, S1], lam, info, block=bh)
        # st.err was measured in float32 on W/‖W‖: recompute in float64 on W.
        err = float(np.linalg.norm(W - lam * (S0 @ S1))) / w_norm
        out.append(Candidate(f"{name}(k={k})", fm, err))
    return out


def _nearest(ladder: tuple[float, ...], density: float) -> int:
    return min(range(len(ladder)), key=lambda i: abs(math.log(ladder[i] / density)))


# Share of the nonzero budget given to the middle factor of the three-factor candidate
# (measured on the trained MLP layer 300x784 at RCG 4/8/16: 0.05-0.2 all help, 0.3 hurts).
_MIDDLE_SHARE = 0.1


def split_three(
    W: np.ndarray,
    cand: Candidate,
    budget: int,
    effort: float,
    flops: float = _FINAL_FLOPS,
    progress: Progress = None,
) -> Candidate | None:
    """Three sparse factors from a two-factor solution ``λ S_0 S_1``: an identity is inserted
    between them (``S_0 · I · S_1``, the same product), the budget is re-split with
    ``_MIDDLE_SHARE`` of it for the middle factor (S_0 and S_1 pruned in proportion to their
    nonzeros), and all three are refitted with inertial palm4MSA. The middle factor lets the
    refit mix inner columns that two factors at this budget cannot."""
    S0, S1 = (f.toarray() if hasattr(f, "toarray") else np.asarray(f) for f in cand.result.factors)
    D, d = W.shape
    k = S0.shape[1]
    nm = int(budget * _MIDDLE_SHARE)
    if nm < 1 or k < 2:
        return None
    z0, z1 = int(np.count_nonzero(S0)), int(np.count_nonzero(S1))
    m0 = round((budget - nm) * z0 / max(z0 + z1, 1))
    m1 = budget - nm - m0
    if m0 < 1 or m1 < 1:
        return None
    cons = [sp(m0), sp(nm), sp(m1)]
    w_norm = float(np.linalg.norm(W)) or 1.0
    Wk = (W / w_norm).astype(_WORK_DTYPE)
    start = [c.project(f) for c, f in zip(cons, (S0, np.eye(k), S1), strict=True)]
    # Sweeps within ``flops`` of arithmetic (a sweep costs about 10·D·k·d flops), at most
    # 150 (measured on the MLP layer: most of the gain is in the first 50-150).
    n_iter = min(int(150 * effort), max(int(flops * effort / (10.0 * D * k * d)), 10))

    def tick(it: int) -> None:
        if progress is not None:
            progress(it, n_iter, "three factors")

    _, factors, lam = accelerated_multi_factor(
        Wk, start, cons, n_iter, norms=SpectralNorm(0), callback=tick
    )
    factors = [f.astype(np.float64) for f in factors]
    lam *= w_norm
    P = factors[0] @ factors[1] @ factors[2]
    err = float(np.linalg.norm(W - lam * P)) / w_norm
    fm = FactorizedMatrix(factors, lam, {"method": "palm4msa", "inner_dims": [k, k]})
    return Candidate(f"palm4msa-3(k={k})", fm, err)


# Excess kurtosis of W's entries above which W counts as heavy-tailed. Trained layers are
# (the MLP layer 300x784: kurtosis 4.97); the synthetic trained-like matrices, with the same
# spectrum but Haar-random singular vectors, and Gaussian matrices are not (3.02-3.08).
_HEAVY_KURTOSIS = 4.0
# Factor density of the wide inner dimension of a heavy-tailed matrix's three-factor start.
_WIDE_DENSITY = 0.13


def heavy_tailed(W: np.ndarray) -> bool:
    """Whether W's entries are heavy-tailed (kurtosis above ``_HEAVY_KURTOSIS``): a few large
    entries carry much of the energy, which sparse factors with a wide inner dimension capture
    and the two-factor probes (short runs, which favour narrow inner dimensions) miss."""
    x = W.ravel() - W.mean()
    m2 = float(np.mean(x * x))
    return m2 > 0 and float(np.mean(x**4)) / (m2 * m2) > _HEAVY_KURTOSIS


def wide_inner_dim(D: int, d: int, budget: int) -> int:
    return _inner_dim(D, d, budget, _WIDE_DENSITY)


def two_factor_at(
    W: np.ndarray, budget: int, k: int, seed: int, effort: float, progress: Progress = None
) -> Candidate | None:
    """Two sparse factors at a given inner dimension k: the schedule of the searched run's
    winner (2 × the probe sweeps, then the converging ones), at most 100·effort final sweeps."""
    D, d = W.shape
    n0, n1 = _split_budget(budget, D, d, k)
    if n0 < 1 or n1 < 1:
        return None
    w_norm = float(np.linalg.norm(W)) or 1.0
    Wk = (W / w_norm).astype(_WORK_DTYPE)
    S0, S1 = _two_factor_init(D, d, k, np.random.default_rng(seed))
    st = start_state(Wk, S0, S1)
    c0, c1, norms = sp(n0), sp(n1), SpectralNorm(seed)
    n_probe = max(int(20 * effort), 3)
    n_final = max(int(100 * effort), 10)

    def tick(_: int) -> None:
        if progress is not None:
            progress(st.iterations, 2 * n_probe + n_final, f"inner dimension {k}")

    accelerated_two_factor(Wk, st, c0, c1, 2 * n_probe, 0.8, 0.0, 1.5, norms, tick)
    accelerated_two_factor(Wk, st, c0, c1, n_final, 0.9, 3e-4, 1.3, norms, tick)
    S0, S1 = st.S0.astype(np.float64), st.S1.astype(np.float64)
    lam = st.lam * w_norm
    fm = FactorizedMatrix(
        [S0, S1], lam, {"method": "palm4msa", "inner_dim": k, "iterations": st.iterations}
    )
    err = float(np.linalg.norm(W - lam * (S0 @ S1))) / w_norm
    return Candidate(f"palm4msa-2(k={k})", fm, err)
