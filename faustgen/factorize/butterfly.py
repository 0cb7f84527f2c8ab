"""Hierarchical butterfly factorization (non-iterative).

Zheng, Riccietti & Gribonval, "Efficient identification of butterfly sparse matrix
factorizations", SIAM J. Math. Data Sci. 2023; Le et al., ICASSP 2022.

For ``n = 2^L`` the ℓ-th butterfly factor (ℓ = 1…L) has the support
``I_{2^{ℓ-1}} ⊗ 1_{2×2} ⊗ I_{n/2^ℓ}``, and the product of factors ``s…t`` has the support
``I_{2^{s-1}} ⊗ 1_{2^{t-s+1}} ⊗ I_{n/2^t}``. Splitting such a product into its ``s…p`` and
``p+1…t`` parts decouples into independent rank-one problems on small dense blocks, solved
exactly by batched SVDs; recursing on both halves (a balanced tree) gives all factors.
Consecutive factors may be kept merged (``n_factors < L``): a merged group has the support of
the product, hence at least the same accuracy for the same nonzero count.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import scipy.sparse as sps

from .palm4msa import as_matrix
from .result import FactorizationError, FactorizedMatrix

__all__ = ["butterfly", "butterfly_groups", "butterfly_nnz", "butterfly_support"]


def log2_exact(n: int) -> int | None:
    return n.bit_length() - 1 if n > 0 and n & (n - 1) == 0 else None


def butterfly_support(n: int, s: int, t: int) -> np.ndarray:
    """Boolean support of the product of butterfly factors ``s…t`` (1-based, inclusive)."""
    L = log2_exact(n)
    if L is None or not 1 <= s <= t <= L:
        raise FactorizationError(f"No butterfly factors {s}..{t} for size {n}.")
    c, m, e = 2 ** (s - 1), 2 ** (t - s + 1), n // 2**t
    return np.kron(np.kron(np.eye(c), np.ones((m, m))), np.eye(e)).astype(bool)


def butterfly_groups(n_levels: int, n_factors: int) -> list[tuple[int, int]]:
    """Split levels 1…L into ``n_factors`` contiguous groups of near-equal length."""
    if not 1 <= n_factors <= n_levels:
        raise FactorizationError(
            f"A butterfly of {n_levels} levels can have 1 to {n_levels} factors, not {n_factors}."
        )
    bounds = np.linspace(0, n_levels, n_factors + 1).round().astype(int)
    return [(int(bounds[i]) + 1, int(bounds[i + 1])) for i in range(n_factors)]


def butterfly_nnz(n: int, n_factors: int | None = None) -> int:
    """Total nonzeros of a butterfly factorization of size ``n`` with that many factors."""
    L = log2_exact(n)
    if L is None:
        raise FactorizationError(f"Butterfly needs a power-of-two size, got {n}.")
    groups = butterfly_groups(max(L, 1), n_factors or max(L, 1))
    return int(sum(n * 2 ** (t - s + 1) for s, t in groups)) if L > 0 else 1


def _top_singular(
    B: np.ndarray, n_power: int = 8, tol: float = 1e-12
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top singular triplet of every matrix in the batch ``B`` (..., p, q).

    LAPACK's batched SVD costs a call per tiny block, which made it ten times slower than
    the rest of the factorization. A few batched power iterations started from each block's
    largest row settle rank-one blocks (the exact case) in one step; only the blocks still
    moving after that get a true SVD.
    """
    shape = B.shape
    B = B.reshape(-1, shape[-2], shape[-1])
    rows = np.einsum("bij,bij->bi", B, B)
    v = B[np.arange(B.shape[0]), np.argmax(rows, axis=-1)]
    v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-300)
    moving = np.ones(B.shape[0], dtype=bool)
    for _ in range(n_power):
        nv = np.einsum("bij,bi->bj", B, np.einsum("bij,bj->bi", B, v))
        nv = nv / np.maximum(np.linalg.norm(nv, axis=-1, keepdims=True), 1e-300)
        moving = np.max(np.abs(nv - v), axis=-1) > tol
        v = nv
        if not moving.any():
            break
    if moving.any():
        idx = np.flatnonzero(moving)
        _, _, vt = np.linalg.svd(B[idx], full_matrices=False)
        top = vt[:, 0, :]
        # Keep the sign of the power iterate so the result is continuous in the data.
        top = top * np.where(np.einsum("bj,bj->b", top, v[idx]) < 0, -1.0, 1.0)[:, None]
        v[idx] = top
    w = np.einsum("bij,bj->bi", B, v)
    sigma = np.linalg.norm(w, axis=-1)
    u = w / np.maximum(sigma, 1e-300)[:, None]
    lead = shape[:-2]
    return u.reshape(*lead, -1), sigma.reshape(lead), v.reshape(*lead, -1)


def _split_blocks(T: np.ndarray, m1: int, m2: int) -> np.ndarray:
    """The rank-one problems of splitting compact blocks ``T`` (c, e, m, m), m = m1·m2, into
    two compact factors, as a batch of m1 × m2 matrices (see :func:`_split`)."""
    c, e = T.shape[:2]
    blocks = T.reshape(c, e, m1, m2, m1, m2).transpose(0, 1, 4, 3, 2, 5)  # γ ε α β α' β''
    return blocks.reshape(-1, m1, m2)


def _split_factors(
    T: np.ndarray, m1: int, m2: int, u: np.ndarray, sv: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """The two compact factors from the top singular triplets of :func:`_split_blocks`."""
    c, e = T.shape[:2]
    root = np.sqrt(sv)[:, None]
    xu = (u * root).reshape(c, e, m1, m2, m1)  # (γ, ε, α, β, α')
    yv = (v * root).reshape(c, e, m1, m2, m2)  # (γ, ε, α, β, β'')
    left = xu.transpose(0, 3, 1, 4, 2).reshape(c, m2 * e, m1, m1)
    right = yv.transpose(0, 2, 1, 3, 4).reshape(c * m1, e, m2, m2)
    residual = max(float(np.sum(T * T)) - float(np.sum(sv * sv)), 0.0)
    return left, right, residual


def _split(T: np.ndarray, m1: int, m2: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Split compact blocks ``T`` of shape (c, e, m, m), m = m1·m2, into two compact factors.

    ``T[γ, ε]`` is the dense m × m block of rows (γ, ·, ε) and columns (γ, ·, ε) of a matrix
    supported on ``I_c ⊗ 1_m ⊗ I_e``. With row index μ = (α', β) and column index
    μ' = (α, β''), the product term of inner index (α, β) touches only the m1 × m2 sub-block
    T[γ, ε][(·, β), (α, ·)], so its best rank-one approximation (top singular triplet) is the
    exact optimum for that term. The left factor is returned as (c, m2·e, m1, m1) blocks
    (support ``I_c ⊗ 1_{m1} ⊗ I_{m2·e}``) and the right one as (c·m1, e, m2, m2) blocks
    (support ``I_{c·m1} ⊗ 1_{m2} ⊗ I_e``), with the squared error of this split.
    """
    u, sv, v = _top_singular(_split_blocks(T, m1, m2))
    return _split_factors(T, m1, m2, u, sv, v)


@functools.lru_cache(maxsize=64)
def _csr_pattern(c: int, e: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and row pointers of the support ``I_c ⊗ 1_m ⊗ I_e`` (read-only)."""
    n = c * m * e
    g = np.arange(c)[:, None, None, None]
    nu = np.arange(m)[None, None, None, :]
    ep = np.arange(e)[None, None, :, None]
    cols = np.broadcast_to((g * m + nu) * e + ep, (c, m, e, m)).reshape(-1).astype(np.int32)
    indptr = np.arange(0, n * m + 1, m, dtype=np.int32)
    cols.flags.writeable = False
    indptr.flags.writeable = False
    return cols, indptr


def _blocks_to_csr(T: np.ndarray) -> sps.csr_matrix:
    """The n × n CSR matrix whose compact blocks are ``T`` (c, e, m, m).

    Row (γ, μ, ε) holds exactly the m columns (γ, ν, ε), ν = 0…m−1, already in increasing
    order, so the CSR arrays are written directly without a COO sort.
    """
    c, e, m, _ = T.shape
    n = c * m * e
    data = T.transpose(0, 2, 1, 3).reshape(-1)  # (γ, μ, ε, ν)
    cols, indptr = _csr_pattern(c, e, m)
    out = sps.csr_matrix((data, cols.copy(), indptr.copy()), shape=(n, n))
    out.has_sorted_indices = True
    return out


def _apply_blocks(T: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``F @ X`` for the factor F with compact blocks ``T`` (c, e, m, m) and dense X."""
    c, e, m, _ = T.shape
    Xr = X.reshape(c, m, e, -1)
    return np.einsum("gemn,gnej->gmej", T, Xr).reshape(X.shape)


def _factorize_tree(T: np.ndarray, groups: list[tuple[int, int]]) -> tuple[list, float]:
    """All factors of the balanced split tree of ``T`` (leftmost first) and the summed
    squared error of the splits.

    The tree is walked one depth at a time and the rank-one problems of all splits at a
    depth that have the same block shape go to :func:`_top_singular` as one batch (each
    block is solved independently, so batching changes nothing but the number of calls:
    3 instead of 7 for 8 factors). Residuals are summed in the recursive (pre-)order."""
    nodes: list[tuple[tuple[int, ...], np.ndarray, list[tuple[int, int]]]] = [((), T, groups)]
    residuals: list[tuple[tuple[int, ...], float]] = []
    while any(len(g) > 1 for _, _, g in nodes):
        todo = []  # (node index, m1, m2, blocks)
        for i, (_, node, g) in enumerate(nodes):
            if len(g) > 1:
                half = len(g) // 2
                m1 = 2 ** (g[half - 1][1] - g[0][0] + 1)
                m2 = 2 ** (g[-1][1] - g[half][0] + 1)
                todo.append((i, m1, m2, _split_blocks(node, m1, m2)))
        triplets: dict[int, tuple] = {}
        for shape in dict.fromkeys((m1, m2) for _, m1, m2, _ in todo):
            batch = [t for t in todo if (t[1], t[2]) == shape]
            sizes = [len(t[3]) for t in batch]
            stacked = batch[0][3] if len(batch) == 1 else np.concatenate([t[3] for t in batch])
            u, sv, v = _top_singular(stacked)
            bounds = np.cumsum([0, *sizes])
            for t, a, b in zip(batch, bounds[:-1], bounds[1:], strict=True):
                triplets[t[0]] = (u[a:b], sv[a:b], v[a:b])
        nxt = []
        for i, (path, node, g) in enumerate(nodes):
            if len(g) == 1:
                nxt.append((path, node, g))
                continue
            half = len(g) // 2
            m1 = 2 ** (g[half - 1][1] - g[0][0] + 1)
            m2 = 2 ** (g[-1][1] - g[half][0] + 1)
            left, right, residual = _split_factors(node, m1, m2, *triplets[i])
            residuals.append((path, residual))
            nxt.append(((*path, 0), left, g[:half]))
            nxt.append(((*path, 1), right, g[half:]))
        nodes = nxt
    total = 0.0
    for _, r in sorted(residuals, key=lambda x: x[0]):
        total += r
    return [node for _, node, _ in nodes], total


def butterfly(W: np.ndarray, n_factors: int | None = None) -> FactorizedMatrix:
    """Butterfly factorization of a square power-of-two matrix by hierarchical rank-one SVDs.

    ``n_factors`` defaults to ``log2(n)`` (2 nonzeros per row and column in every factor);
    fewer factors merge consecutive levels. Exact (to rounding) on matrices that admit an
    exact butterfly factorization such as the Hadamard matrix; otherwise the error is within
    a constant factor of the best butterfly approximation (Zheng et al. 2023).
    """
    t0 = time.perf_counter()
    W = as_matrix(W)
    n, n2 = W.shape
    L = log2_exact(n)
    if n != n2 or L is None or L == 0:
        raise FactorizationError(
            f"Butterfly factorization needs a square power-of-two matrix (at least 2x2), "
            f"got {n}x{n2}."
        )
    groups = butterfly_groups(L, n_factors or L)
    blocks, residual = _factorize_tree(W.reshape(1, 1, n, n), groups)
    # Unit-norm factors and a separate scale, as palm4MSA returns them.
    norms = [float(np.sqrt(np.sum(b * b))) for b in blocks]
    scale = float(np.prod(norms)) if all(v > 0 for v in norms) else 0.0
    if scale > 0:
        blocks = [b / v for b, v in zip(blocks, norms, strict=True)]
    w_norm = float(np.linalg.norm(W)) or 1.0
    if residual <= (1e-14 * w_norm) ** 2:
        # Every split was exact, so the product is W up to rounding: skip forming it.
        err = float(np.sqrt(residual)) / w_norm
    else:
        approx = np.eye(n)
        for b in reversed(blocks):
            approx = _apply_blocks(b, approx)
        err = float(np.linalg.norm(W - scale * approx)) / w_norm
    factors = [_blocks_to_csr(b) for b in blocks]
    info = {
        "method": "butterfly",
        "time": time.perf_counter() - t0,
        "groups": groups,
        "relative_error": err,
    }
    return FactorizedMatrix(factors, scale, info)
