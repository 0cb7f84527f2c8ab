"""palm4MSA: PALM iterations for ``W ≈ λ · S_0 @ … @ S_{J-1}`` (Le Magoarou & Gribonval 2016).

Each factor takes a projected gradient step of size ``1/c`` with
``c = (1+α) λ² ‖L‖₂² ‖R‖₂²`` (L, R: products of the factors left and right of it), which is
the Lipschitz constant of that block's gradient, so every step decreases the objective; λ then
gets its closed-form least-squares value. Factors are dense float64 working copies: for the
sizes met in neural-network layers BLAS matmuls beat sparse products by a wide margin.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from .projections import Constraint
from .result import FactorizationError, FactorizedMatrix

__all__ = ["chain_shapes", "default_init", "palm4msa", "palm_core", "run_palm"]

_ALPHA = 1e-3


class SpectralNorm:
    """Squared spectral norms by power iteration, warm-started from the previous vector.

    Between two PALM sweeps a factor product changes little, so a few iterations from the
    last singular vector suffice; the cache is keyed by the block position.
    """

    def __init__(self, seed: int = 0) -> None:
        self._vecs: dict[object, np.ndarray] = {}
        self._rng = np.random.default_rng(seed)

    def sq(self, key: object, A: np.ndarray, tol: float = 1e-6, max_iter: int = 100) -> float:
        """Squared spectral norm of ``A`` (relative tolerance ``tol`` on the estimate)."""
        n = A.shape[1]
        v = self._vecs.get(key)
        if v is None or v.shape[0] != n:
            v = self._rng.standard_normal(n)
        # The iterate takes A's dtype: a float64 vector would make ``A @ v`` copy a float32 A.
        v = (v / (np.linalg.norm(v) or 1.0)).astype(A.dtype, copy=False)
        est = 0.0
        for _ in range(max_iter):
            w = A.T @ (A @ v)
            new = float(v @ w)
            nw = np.linalg.norm(w)
            if nw == 0.0:
                return 0.0
            v = w / nw
            if abs(new - est) <= tol * new:
                est = new
                break
            est = new
        self._vecs[key] = v
        # The Rayleigh quotient is a lower bound; ‖A^T A v‖ is an upper-side estimate.
        return max(est, float(nw))


def chain_shapes(shape: tuple[int, int], inner_dims: Sequence[int]) -> list[tuple[int, int]]:
    """Factor shapes of a chain ``D × k_1, k_1 × k_2, …, k_{J-1} × d``."""
    dims = [shape[0], *[int(k) for k in inner_dims], shape[1]]
    return [(dims[i], dims[i + 1]) for i in range(len(dims) - 1)]


def suffix_products(S: Sequence[np.ndarray]) -> list[np.ndarray | None]:
    """right[j] = S[j+1] @ ... @ S[-1] (None for the last factor), built right to left."""
    right: list[np.ndarray | None] = [None] * len(S)
    acc = None
    for j in range(len(S) - 1, 0, -1):
        acc = S[j] if acc is None else S[j] @ acc
        right[j - 1] = acc
    return right


def default_init(shapes: Sequence[tuple[int, int]], first_updated: int) -> list[np.ndarray]:
    """The paper's initialisation: the first factor to be updated is zero, the others are
    (rectangular) identities, so the first sweep starts from a projected ``W``."""
    out = [np.eye(m, n) for m, n in shapes]
    out[first_updated] = np.zeros(shapes[first_updated])
    return out


def palm_core(
    W: np.ndarray,
    factors: list[np.ndarray],
    lam: float,
    constraints: Sequence[Constraint],
    n_iter: int,
    target_error: float | None = None,
    rel_change_tol: float | None = None,
    norms: SpectralNorm | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> tuple[list[np.ndarray], float, list[float]]:
    """Left-to-right palm4MSA sweeps on dense working copies (modified in place).

    Returns the factors, λ and the relative error after each sweep.
    """
    J = len(factors)
    S = factors
    norms = norms or SpectralNorm()
    w_norm = float(np.linalg.norm(W)) or 1.0
    errors: list[float] = []
    for it in range(n_iter):
        # Suffix products use the factors as they are at the start of the sweep: in
        # left-to-right order no factor right of j has been touched yet when j is updated.
        right = suffix_products(S)
        left = None
        for j in range(J):
            R = right[j]
            nl = 1.0 if left is None else norms.sq(("L", j), left)
            nr = 1.0 if R is None else norms.sq(("R", j), R.T)
            c = (1.0 + _ALPHA) * lam * lam * nl * nr
            LS = S[j] if left is None else left @ S[j]
            P = LS if R is None else LS @ R
            E = lam * P - W
            ER = E if R is None else E @ R.T
            G = ER if left is None else left.T @ ER
            if c > 0.0 and np.isfinite(c):
                S[j] = constraints[j].project(S[j] - (lam / c) * G)
            else:
                S[j] = constraints[j].project(S[j] - G)
            left = S[j] if left is None else left @ S[j]
        den = float(np.vdot(left, left))
        lam = float(np.vdot(W, left)) / den if den > 0 else 0.0
        err = float(np.linalg.norm(W - lam * left)) / w_norm
        errors.append(err)
        if callback is not None:
            callback(it + 1, err)
        if target_error is not None and err <= target_error:
            break
        if rel_change_tol is not None and it > 0:
            prev = errors[-2]
            if abs(prev - err) <= rel_change_tol * max(prev, 1e-300):
                break
    return S, lam, errors


def run_palm(
    W: np.ndarray,
    factors: list[np.ndarray],
    lam: float,
    constraints: Sequence[Constraint],
    n_iter: int,
    update_order: str = "right-to-left",
    target_error: float | None = None,
    rel_change_tol: float | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> tuple[list[np.ndarray], float, list[float]]:
    """palm4MSA on dense factors in either update order; returns (factors, λ, errors)."""
    if update_order == "right-to-left":
        # Right-to-left on W is left-to-right on Wᵀ = S_{J-1}ᵀ … S_0ᵀ: one code path.
        St = [np.ascontiguousarray(f.T) for f in reversed(factors)]
        ct = [c.transpose() for c in reversed(constraints)]
        St, lam, errors = palm_core(
            np.ascontiguousarray(W.T),
            St,
            lam,
            ct,
            n_iter,
            target_error,
            rel_change_tol,
            callback=callback,
        )
        return [np.ascontiguousarray(f.T) for f in reversed(St)], lam, errors
    S, lam, errors = palm_core(
        W,
        list(factors),
        lam,
        list(constraints),
        n_iter,
        target_error,
        rel_change_tol,
        callback=callback,
    )
    return S, lam, errors


def palm4msa(
    W: np.ndarray,
    constraints: Sequence[Constraint],
    *,
    inner_dims: Sequence[int] | None = None,
    n_iter: int = 300,
    init_factors: Sequence[np.ndarray] | None = None,
    init_scale: float = 1.0,
    target_error: float | None = None,
    rel_change_tol: float | None = None,
    update_order: str = "right-to-left",
    callback: Callable[[int, float], None] | None = None,
) -> FactorizedMatrix:
    """Approximate ``W`` by ``λ · S_0 @ … @ S_{J-1}`` with ``S_q`` in ``constraints[q]``.

    ``inner_dims`` gives the J−1 inner dimensions (default ``min(D, d)`` each). Without
    ``init_factors`` the paper's initialisation is used (the first-updated factor zero, the
    others identity, λ = 1). Stops after ``n_iter`` sweeps, when the relative error reaches
    ``target_error``, or when it changes by less than ``rel_change_tol`` (relative).
    ``update_order`` is ``"left-to-right"`` or ``"right-to-left"``. The per-sweep relative
    errors are in ``result.info["errors"]``; they never increase.
    """
    t0 = time.perf_counter()
    W = as_matrix(W)
    J = len(constraints)
    if J < 1:
        raise FactorizationError("palm4msa needs at least one constraint (one factor).")
    if update_order not in ("left-to-right", "right-to-left"):
        raise FactorizationError("update_order must be 'left-to-right' or 'right-to-left'.")
    if init_factors is not None:
        S = [np.array(f, dtype=np.float64) for f in init_factors]
        shapes = [f.shape for f in S]
        if len(S) != J or shapes[0][0] != W.shape[0] or shapes[-1][1] != W.shape[1]:
            raise FactorizationError("init_factors do not match W and the constraints.")
    else:
        if inner_dims is None:
            inner_dims = [min(W.shape)] * (J - 1)
        if len(inner_dims) != J - 1:
            raise FactorizationError("inner_dims must have one entry per pair of factors.")
        shapes = chain_shapes(W.shape, inner_dims)
        first = 0 if update_order == "left-to-right" else J - 1
        S = default_init(shapes, first)
    S, lam, errors = run_palm(
        W, S, init_scale, constraints, n_iter, update_order, target_error, rel_change_tol, callback
    )
    info = {
        "method": "palm4msa",
        "errors": errors,
        "n_iter": len(errors),
        "time": time.perf_counter() - t0,
    }
    return FactorizedMatrix(S, lam, info)


def as_matrix(W: np.ndarray) -> np.ndarray:
    W = np.asarray(W)
    if W.ndim != 2:
        raise FactorizationError(f"Expected a 2-D matrix, got an array with {W.ndim} dimension(s).")
    if W.size == 0:
        raise FactorizationError("Cannot factorize an empty matrix.")
    if not np.issubdtype(W.dtype, np.number) or np.iscomplexobj(W):
        raise FactorizationError("Expected a real numeric matrix.")
    W = W.astype(np.float64, copy=False)
    if not np.all(np.isfinite(W)):
        raise FactorizationError("The matrix contains NaN or infinite values.")
    return W
