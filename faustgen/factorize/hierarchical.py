"""Hierarchical palm4MSA (Le Magoarou & Gribonval 2016, Algorithm 2).

J−1 successive two-factor splits of the residual, each followed by a global palm4MSA refit
of all the factors found so far. Splitting from the left peels ``S_0, S_1, …`` off the left
of ``W`` (``W ≈ S_0 T_1``, ``T_1 ≈ S_1 T_2``, …, the last residual becomes ``S_{J-1}``);
from the right it peels ``S_{J-1}, S_{J-2}, …`` off the right. The right side is run as the
left side on ``Wᵀ`` with transposed constraints, so both share one implementation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from .palm4msa import as_matrix, chain_shapes, default_init, run_palm
from .projections import Constraint, sp, splincol
from .result import FactorizationError, FactorizedMatrix

__all__ = ["default_hierarchical_constraints", "hierarchical"]


def default_hierarchical_constraints(
    shape: tuple[int, int], n_factors: int, factor_nnz: Sequence[int], inner_dims: Sequence[int]
) -> tuple[list[Constraint], list[Constraint]]:
    """Constraints for a left-side split with the given nonzeros per final factor.

    Each peeled factor gets ``sp(nnz)``; the residual after step l must still be factorable
    into the remaining factors, so it gets the nonzero count of their dense product bounded
    by the budget of the remaining factors times a fill factor that halves at each step (as
    the reference toolbox's Hadamard parametrization does), and finally the last factor's.
    """
    shapes = chain_shapes(shape, inner_dims)
    fact = [sp(int(factor_nnz[q])) for q in range(n_factors - 1)]
    res: list[Constraint] = []
    for q in range(n_factors - 1):
        rows, cols = shapes[q + 1][0], shape[1]
        if q == n_factors - 2:
            res.append(sp(int(factor_nnz[-1])))
        else:
            fill = rows * cols / 2.0 ** (q + 1)
            res.append(sp(int(max(fill, sum(factor_nnz[q + 1 :])))))
    return fact, res


def hadamard_constraints(n: int) -> tuple[list[Constraint], list[Constraint]]:
    """The paper's parametrization for an n × n Hadamard matrix (log2 n factors)."""
    L = n.bit_length() - 1
    fact = [splincol(2) for _ in range(L - 1)]
    res = [splincol(max(n // 2 ** (q + 1), 1)) for q in range(L - 1)]
    return fact, res


def hierarchical(
    W: np.ndarray,
    n_factors: int,
    fact_constraints: Sequence[Constraint] | None = None,
    res_constraints: Sequence[Constraint] | None = None,
    *,
    side: str = "left",
    inner_dims: Sequence[int] | None = None,
    n_iter_local: int = 30,
    n_iter_global: int = 30,
    update_order: str | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> FactorizedMatrix:
    """Hierarchical factorization ``W ≈ λ · S_0 @ … @ S_{J-1}``.

    ``fact_constraints[l]`` constrains the factor peeled at step l (l = 0…J−2, counted from
    the chosen ``side``) and ``res_constraints[l]`` the residual left after it (the last one
    constrains the final factor). Without constraints, a square power-of-two ``W`` gets the
    paper's Hadamard parametrization and anything else an even nonzero split at RCG 2.
    ``inner_dims`` are the J−1 inner dimensions, left to right (default ``min(D, d)``).
    ``update_order`` defaults to updating the residual first (right-to-left when splitting
    from the left): starting from the other end leaves the residual as an identity that the
    first sparse factor cannot move away from, and the Hadamard recovery fails.
    """
    t0 = time.perf_counter()
    W = as_matrix(W)
    J = int(n_factors)
    if J < 1:
        raise FactorizationError("The number of factors must be at least 1.")
    if side not in ("left", "right"):
        raise FactorizationError("side must be 'left' or 'right'.")
    if inner_dims is None:
        inner_dims = [min(W.shape)] * (J - 1)
    inner_dims = [int(k) for k in inner_dims]
    if len(inner_dims) != J - 1:
        raise FactorizationError("inner_dims must have one entry per pair of factors.")
    if fact_constraints is None or res_constraints is None:
        fact_constraints, res_constraints = _defaults(W.shape, J, inner_dims)
    if len(fact_constraints) != J - 1 or len(res_constraints) != J - 1:
        raise FactorizationError("Give J-1 factor constraints and J-1 residual constraints.")
    if side == "right":
        # Peeling from the right of W is peeling from the left of Wᵀ.
        res = hierarchical(
            W.T,
            J,
            [c.transpose() for c in fact_constraints],
            [c.transpose() for c in res_constraints],
            side="left",
            inner_dims=inner_dims[::-1],
            n_iter_local=n_iter_local,
            n_iter_global=n_iter_global,
            update_order=None if update_order is None else _flip(update_order),
            progress=progress,
        )
        factors = [f.T for f in reversed(res.factors)]
        res.info["side"] = "right"
        return FactorizedMatrix(factors, res.scale, res.info)
    if J == 1:
        fm = FactorizedMatrix([W], 1.0, {"method": "hierarchical", "errors": [0.0]})
        return fm
    update_order = update_order or "right-to-left"
    shapes = chain_shapes(W.shape, inner_dims)
    done: list[np.ndarray] = []
    lam = 1.0
    T = W
    errors: list[float] = []
    for step in range(J - 1):
        if progress is not None:
            progress(step, J - 1, f"hierarchical split {step + 1}/{J - 1}")
        local_shapes = [shapes[step], (shapes[step][1], W.shape[1])]
        first = 0 if update_order == "left-to-right" else 1
        local = default_init(local_shapes, first)
        cons = [fact_constraints[step], res_constraints[step]]
        local, lam_local, _ = run_palm(T, local, 1.0, cons, n_iter_local, update_order)
        # T was normalized (or is W itself), so the split's scale multiplies the current one.
        all_factors = [*done, local[0], local[1]]
        all_cons = [*fact_constraints[: step + 1], res_constraints[step]]
        all_factors, lam, errs = run_palm(
            W, all_factors, lam * lam_local, all_cons, n_iter_global, update_order
        )
        errors.extend(errs)
        done = all_factors[:-1]
        T = all_factors[-1]
    if progress is not None:
        progress(J - 1, J - 1, "hierarchical done")
    info = {
        "method": "hierarchical",
        "side": "left",
        "errors": errors,
        "time": time.perf_counter() - t0,
    }
    return FactorizedMatrix([*done, T], lam, info)


def _flip(order: str) -> str:
    return "left-to-right" if order == "right-to-left" else "right-to-left"


def _defaults(
    shape: tuple[int, int], J: int, inner_dims: Sequence[int]
) -> tuple[list[Constraint], list[Constraint]]:
    n = shape[0]
    square_pow2 = shape[0] == shape[1] and n & (n - 1) == 0 and n.bit_length() - 1 == J
    if square_pow2 and J >= 2 and all(k == n for k in inner_dims):
        return hadamard_constraints(n)
    shapes = chain_shapes(shape, inner_dims)
    sizes = np.array([a * b for a, b in shapes], dtype=float)
    budget = shape[0] * shape[1] / 2.0
    nnz = np.maximum(1, np.floor(budget * sizes / sizes.sum())).astype(int)
    return default_hierarchical_constraints(shape, J, list(nnz), inner_dims)
