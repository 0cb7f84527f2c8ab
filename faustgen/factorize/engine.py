"""Fast two-factor solver used by the target-driven front end.

It solves the same problem as two-factor palm4MSA (``W ≈ λ S_0 S_1``, projected gradient steps
of size 1/Lipschitz, unit-norm factors, closed-form λ) with two additions that make it reach
the same error in a fraction of the iterations:

* inertia (iPALM-style extrapolation of each factor before its gradient step) with an
  adaptive restart: whenever the error goes up the momentum is dropped, and the best iterate
  seen is what is returned, so the result is never worse than plain palm4MSA's first steps;
* step sizes above 1/Lipschitz, which the restart makes safe.

S_0's gradient is taken at the current point, not at the extrapolated one (iPALM with a
zero gradient-extrapolation parameter for that block, i.e. heavy-ball inertia): its product
``S_0 S_1`` is then the one the error check of the previous sweep formed, so a sweep costs
four matmuls instead of five. Measured on the benchmark matrices: equal or lower final
errors than the extrapolated gradient on all but one, at 15–20 % less time per sweep.
S_1 keeps the extrapolated gradient (its product with the new S_0 has to be formed anyway).

(An exact least-squares refit on the final supports was tried and dropped: after the
inertial sweeps it gained less than 0.1 % relative error for the cost of several sweeps.)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .palm4msa import SpectralNorm, suffix_products
from .projections import Constraint, normalize_fro

__all__ = ["TwoFactorState", "accelerated_two_factor", "start_state"]


class TwoFactorState:
    """Dense working copies of a two-factor approximation and its error history."""

    def __init__(self, S0: np.ndarray, S1: np.ndarray, lam: float, err: float) -> None:
        self.S0, self.S1, self.lam, self.err = S0, S1, lam, err
        self.errors: list[float] = [err]
        self.iterations = 0


def _fit_scale(W: np.ndarray, P: np.ndarray, w_norm: float) -> tuple[float, float]:
    """Optimal λ for ``W ≈ λP`` and the relative error there; ``P`` may be consumed."""
    den = float(np.vdot(P, P))
    wp = float(np.vdot(W, P))
    lam = wp / den if den > 0 else 0.0
    if P.dtype == np.float64:
        # ‖W − λP‖² = ‖W‖² − λ⟨W,P⟩ at the optimal λ: no residual matrix needed.
        err2 = max(w_norm * w_norm - lam * wp, 0.0)
        return lam, float(np.sqrt(err2)) / w_norm
    # Single precision: that difference would cancel most of float32's digits at small
    # errors, so form the residual (one cheap element-wise pass next to the matmuls).
    R = np.multiply(P, -lam)
    R += W
    return lam, float(np.sqrt(float(np.vdot(R, R)))) / w_norm


def start_state(W: np.ndarray, S0: np.ndarray, S1: np.ndarray) -> TwoFactorState:
    """Normalize the factors and fit λ. The working copies take ``W``'s floating dtype (the
    front end iterates in float32 on a unit-norm copy of W)."""
    dt = W.dtype if W.dtype in (np.float32, np.float64) else np.float64
    S0, S1 = normalize_fro(np.array(S0, dtype=dt)), normalize_fro(np.array(S1, dtype=dt))
    w_norm = float(np.linalg.norm(W)) or 1.0
    lam, err = _fit_scale(W, S0 @ S1, w_norm)
    if lam == 0.0:
        # The paper's start (S_0 = 0): λ = 1 makes the first step a projected copy of W Sᵀ_1.
        lam, err = 1.0, 1.0
    return TwoFactorState(S0, S1, lam, err)


def accelerated_two_factor(
    W: np.ndarray,
    state: TwoFactorState,
    c0: Constraint,
    c1: Constraint,
    n_iter: int,
    beta: float = 0.8,
    rel_tol: float = 1e-5,
    step: float = 1.0,
    norms: SpectralNorm | None = None,
    callback: Callable[[int], None] | None = None,
    give_up: Callable[[int, float], bool] | None = None,
    gram: bool = False,
) -> TwoFactorState:
    """Run up to ``n_iter`` inertial PALM sweeps (S_0 then S_1) from ``state``.

    ``beta`` is the inertia, ``step`` multiplies the 1/Lipschitz step (values above 1 are
    only safe because an error increase triggers a restart from the best point). Stops early
    once the best error improved by less than ``rel_tol`` (relative) over the last 10
    sweeps, or when ``give_up(sweeps done, best error)`` says so. Returns the best state
    seen (the input state is updated in place).

    ``gram=True`` never forms the D×d product: the gradients and the error go through
    ``W S_1ᵀ``, ``S_0ᵀ W`` and the k×k Gram matrices (see :class:`_GramSweep`), two D·d·k
    products per sweep instead of four, which is what makes large layers affordable when
    the inner dimension k is below min(D, d). Same iterates up to rounding.
    """
    w_norm = float(np.linalg.norm(W)) or 1.0
    norms = norms or SpectralNorm()
    ops = _GramSweep(W, w_norm) if gram else _DenseSweep(W, w_norm)
    S0, S1, lam = state.S0, state.S1, state.lam
    prev0, prev1 = S0, S1
    aux = ops.start(S0, S1)  # what S_0's gradient at the current point needs
    best = (state.err, S0, S1, lam, aux)
    mom = 0.0  # first sweep after a (re)start has no history to extrapolate from
    cur_step = step
    window: list[float] = []
    for it in range(n_iter):
        # In-place arithmetic throughout: at these sizes the element-wise passes cost about
        # as much as the matmuls when every one of them allocates.
        Y0 = _extrapolate(S0, prev0, mom)
        c = (1.0 + 1e-3) * lam * lam * norms.sq("S1", S1.T, 1e-4, 30) / cur_step
        new0 = _finish_step(Y0, ops.grad0(S0, S1, aux, lam), lam, c, c0)
        Y1 = _extrapolate(S1, prev1, mom)
        c = (1.0 + 1e-3) * lam * lam * norms.sq("S0", new0, 1e-4, 30) / cur_step
        new1 = _finish_step(Y1, ops.grad1(new0, Y1, lam), lam, c, c1)
        new_lam, err, new_aux = ops.fit(new0, new1)
        state.iterations += 1
        state.errors.append(err)
        if callback is not None:
            callback(it + 1)
        if give_up is not None and give_up(it + 1, min(err, best[0])):
            if err <= best[0]:
                best = (err, new0, new1, new_lam, new_aux)
            break
        if err > best[0]:
            # Restart: drop the momentum and go back to the best point. A failed step without
            # momentum means the long step overshot: fall back to 1/Lipschitz, which descends.
            if not mom:
                cur_step = 1.0
            _, S0, S1, lam, aux = best
            prev0, prev1 = S0, S1
            mom = 0.0
            continue
        prev0, prev1 = S0, S1
        S0, S1, lam, aux = new0, new1, new_lam, new_aux
        best = (err, S0, S1, lam, aux)
        mom = beta
        if _stalled(window, err, rel_tol):
            break
    state.err, state.S0, state.S1, state.lam, _ = best
    return state


class _DenseSweep:
    """Gradients through the D×d product P = S_0 S_1 (cheapest when k ≥ min(D, d))."""

    def __init__(self, W: np.ndarray, w_norm: float) -> None:
        self.W, self.w_norm = W, w_norm

    def start(self, S0: np.ndarray, S1: np.ndarray) -> np.ndarray:
        return S0 @ S1

    def grad0(self, S0: np.ndarray, S1: np.ndarray, P: np.ndarray, lam: float) -> np.ndarray:
        """(λP − W) S_1ᵀ, the left factor's gradient divided by λ."""
        E = np.multiply(P, lam)
        E -= self.W
        return E @ S1.T

    def grad1(self, S0: np.ndarray, Y1: np.ndarray, lam: float) -> np.ndarray:
        E = S0 @ Y1
        E *= lam
        E -= self.W
        return S0.T @ E

    def fit(self, S0: np.ndarray, S1: np.ndarray) -> tuple[float, float, np.ndarray]:
        P = S0 @ S1
        lam, err = _fit_scale(self.W, P, self.w_norm)
        return lam, err, P


class _GramSweep:
    """Gradients without the D×d product: with G = S_1 S_1ᵀ and A = S_0ᵀ S_0 (k×k),
    (λ S_0 S_1 − W) S_1ᵀ = λ S_0 G − W S_1ᵀ and S_0ᵀ (λ S_0 Y − W) = λ A Y − S_0ᵀ W, and
    ‖W − λ S_0 S_1‖² = ‖W‖² − 2λ⟨S_0ᵀW, S_1⟩ + λ²⟨A, G⟩. ``S_0ᵀ W`` serves both S_1's
    gradient and the error; ``W S_1ᵀ`` is formed once per accepted S_1. The inner products
    are taken in float64 (the error is a difference of near-equal terms)."""

    def __init__(self, W: np.ndarray, w_norm: float) -> None:
        self.W, self.w_norm = W, w_norm
        self.w2 = w_norm * w_norm
        self._last: tuple | None = None  # (S0, A, S0ᵀW) of the latest grad1

    def start(self, S0: np.ndarray, S1: np.ndarray) -> list:
        return [S1 @ S1.T, None]  # G and W S_1ᵀ (formed when first needed)

    def grad0(self, S0: np.ndarray, S1: np.ndarray, aux: list, lam: float) -> np.ndarray:
        G, WS1t = aux
        if WS1t is None:
            WS1t = aux[1] = self.W @ S1.T
        out = S0 @ G
        out *= lam
        out -= WS1t
        return out

    def grad1(self, S0: np.ndarray, Y1: np.ndarray, lam: float) -> np.ndarray:
        A = S0.T @ S0
        B = S0.T @ self.W
        self._last = (S0, A, B)
        out = A @ Y1
        out *= lam
        out -= B
        return out

    def fit(self, S0: np.ndarray, S1: np.ndarray) -> tuple[float, float, list]:
        last = self._last
        assert last is not None and last[0] is S0
        _, A, B = last
        G = S1 @ S1.T
        den = _dot64(A, G)
        wp = _dot64(B, S1)
        lam = wp / den if den > 0 else 0.0
        err2 = max(self.w2 - lam * wp, 0.0)
        return lam, float(np.sqrt(err2)) / self.w_norm, [G, None]


def _dot64(a: np.ndarray, b: np.ndarray) -> float:
    """⟨a, b⟩ accumulated in float64."""
    return float(np.dot(a.ravel().astype(np.float64), b.ravel().astype(np.float64)))


def _stalled(window: list[float], err: float, rel_tol: float) -> bool:
    """True once the error has improved by at most rel_tol (relative) over 10 sweeps."""
    window.append(err)
    if len(window) <= 10:
        return False
    old = window.pop(0)
    return old - err <= rel_tol * old


def _extrapolate(S: np.ndarray, prev: np.ndarray, mom: float) -> np.ndarray:
    if not mom:
        return S
    Y = np.subtract(S, prev)
    Y *= mom
    Y += S
    return Y


def _finish_step(
    Y: np.ndarray, G: np.ndarray, lam: float, c: float, cons: Constraint
) -> np.ndarray:
    """Projected gradient step ``Y − (λ/c)·G`` on one factor; ``G`` is the gradient divided
    by λ (consumed)."""
    if not c > 0:
        return cons.project(Y)
    G *= -lam / c
    G += Y
    if cons.kind in ("dense", "support") or not cons.normalize:
        return cons.project(G)
    G *= cons.support_of(G)
    return normalize_fro(G)


def accelerated_multi_factor(
    W: np.ndarray,
    factors: list[np.ndarray],
    constraints: list[Constraint],
    n_iter: int,
    beta: float = 0.9,
    step: float = 1.3,
    rel_tol: float = 1e-4,
    norms: SpectralNorm | None = None,
    callback: Callable[[int], None] | None = None,
) -> tuple[float, list[np.ndarray], float]:
    """Inertial PALM sweeps (left to right) on J ≥ 2 dense factors of ``W ≈ λ ∏ S_j``, the
    same scheme as :func:`accelerated_two_factor` (extrapolation, steps above 1/Lipschitz,
    restart from the best point when the error goes up). Returns (error, factors, λ) of the
    best point; the factors take ``W``'s dtype."""
    J = len(factors)
    w_norm = float(np.linalg.norm(W)) or 1.0
    norms = norms or SpectralNorm()
    S = [normalize_fro(np.array(f, dtype=W.dtype)) for f in factors]
    prev = list(S)

    def product(fs: list[np.ndarray]) -> np.ndarray:
        out = fs[0]
        for f in fs[1:]:
            out = out @ f
        return out

    lam, err = _fit_scale(W, product(S), w_norm)
    best = (err, list(S), lam)
    mom, cur_step = 0.0, step
    window: list[float] = []
    for it in range(n_iter):
        if callback is not None:
            callback(it)
        new = list(S)
        right = suffix_products(S)
        left = None
        for j in range(J):
            Y = _extrapolate(S[j], prev[j], mom)
            R = right[j]
            nl = 1.0 if left is None else norms.sq(("L", j), left, 1e-4, 30)
            nr = 1.0 if R is None else norms.sq(("R", j), R.T, 1e-4, 30)
            c = (1.0 + 1e-3) * lam * lam * nl * nr / cur_step
            LY = Y if left is None else left @ Y
            E = LY if R is None else LY @ R
            E *= lam
            E -= W
            ER = E if R is None else E @ R.T
            G = ER if left is None else left.T @ ER
            if not c > 0:
                new[j] = constraints[j].project(Y)
            else:
                G *= -lam / c
                G += Y
                new[j] = constraints[j].project(G)
            left = new[j] if left is None else left @ new[j]
        new_lam, err = _fit_scale(W, left, w_norm)
        if err > best[0]:
            if not mom:
                cur_step = 1.0
            _, S, lam = best
            S = list(S)
            prev = list(S)
            mom = 0.0
            continue
        prev, S, lam = S, new, new_lam
        best = (err, list(S), lam)
        mom = beta
        if _stalled(window, err, rel_tol):
            break
    return best
