"""Projections onto the sparsity constraint sets used by palm4MSA.

Every projection keeps the selected entries unchanged and zeroes the rest; palm4MSA then
rescales the factor to unit Frobenius norm (the paper's constraint sets are "k-sparse *and*
unit norm", whose Euclidean projection is exactly "keep the k largest, then normalize").

Ties are broken deterministically: among entries of equal magnitude the one with the lowest
(row-major) index wins, so the same input always yields the same support on every platform.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Constraint",
    "block_energy",
    "dense",
    "normalize_fro",
    "proj_sp",
    "proj_spblock",
    "proj_spcol",
    "proj_splin",
    "proj_splinblock",
    "proj_splincol",
    "proj_support",
    "sp",
    "spblock",
    "spcol",
    "splin",
    "splinblock",
    "splincol",
    "support",
    "topk_mask_rows",
]


def topk_mask_rows(mag: np.ndarray, k: int | np.ndarray) -> np.ndarray:
    """Boolean mask of the ``k`` largest entries of each row of ``mag`` (ties: lowest index).

    ``k`` may be a scalar or one count per row. Runs in O(size) via ``np.partition``: the
    k-th largest value is the per-row threshold, everything above it is kept, and ties at the
    threshold are filled left to right with a cumulative count.
    """
    mag = np.asarray(mag)
    n_rows, n_cols = mag.shape
    k_arr = np.clip(np.broadcast_to(np.asarray(k, dtype=np.int64), (n_rows,)), 0, n_cols)
    mask = np.zeros(mag.shape, dtype=bool)
    if n_cols == 0 or n_rows == 0:
        return mask
    full = k_arr >= n_cols
    mask[full] = True
    part = (k_arr > 0) & ~full
    if not part.any():
        return mask
    every = bool(part.all())
    # Fancy indexing copies: avoid it in the common case where every row is partial.
    rows = slice(None) if every else np.flatnonzero(part)
    sub = mag if every else mag[rows]
    kk = k_arr if every else k_arr[rows]
    n_sub = sub.shape[0]
    if np.all(kk == kk[0]):
        thr = np.partition(sub, n_cols - kk[0], axis=1)[:, n_cols - kk[0]]
    else:
        # Rows ask for different counts: a full sort per row is still vectorized and simple.
        srt = np.sort(sub, axis=1)
        thr = srt[np.arange(n_sub), n_cols - kk]
    keep = sub > thr[:, None]
    eq = sub == thr[:, None]
    need = kk - keep.sum(axis=1)
    n_eq = eq.sum(axis=1)
    if np.any(n_eq > need):
        # Too many ties at the threshold: the lowest column indices win.
        eq &= np.cumsum(eq, axis=1) <= need[:, None]
    keep |= eq
    mask[rows] = keep
    return mask


def normalize_fro(x: np.ndarray) -> np.ndarray:
    """Scale ``x`` to unit Frobenius norm (a zero matrix is returned unchanged)."""
    nrm = np.linalg.norm(x)
    if nrm > 0 and np.isfinite(nrm) and nrm > 1e-150:
        return x / nrm
    # Tiny (or huge) entries: the squared norm under- or overflows, so rescale first.
    big = np.max(np.abs(x), initial=0.0)
    if big == 0:
        return x
    y = x / big
    return y / np.linalg.norm(y)


def _mask_sp(x: np.ndarray, k: int) -> np.ndarray:
    """``topk_mask_rows`` on the flattened matrix, with fewer passes: it runs once per factor
    update in the two-factor engine. Same support, ties included (lowest index wins)."""
    a = np.abs(x).reshape(-1)
    n = a.size
    if k <= 0 or n == 0:
        return np.zeros(x.shape, dtype=bool)
    if k >= n:
        return np.ones(x.shape, dtype=bool)
    thr = np.partition(a, n - k)[n - k]
    mask = a >= thr
    extra = int(np.count_nonzero(mask)) - k
    if extra > 0:
        # Ties at the threshold: drop the highest-index ones.
        ties = np.flatnonzero(a == thr)
        mask[ties[len(ties) - extra :]] = False
    return mask.reshape(x.shape)


def _mask_splin(x: np.ndarray, k: int) -> np.ndarray:
    return topk_mask_rows(np.abs(x), k)


def _mask_spcol(x: np.ndarray, k: int) -> np.ndarray:
    return topk_mask_rows(np.abs(x).T, k).T


def block_energy(x: np.ndarray, bh: int) -> np.ndarray:
    """Squared Frobenius norms of the ``bh × 1`` blocks of ``x`` (m × n), shape ``(P, n)``
    with ``P = ⌈m / bh⌉`` row panels; block (p, j) is ``x[p·bh:(p+1)·bh, j]``.

    A short last panel (m not a multiple of bh) counts its missing rows as zeros. The squares
    are summed row by row in panel order, so the result does not depend on BLAS or on numpy's
    pairwise summation (and ties between equal blocks are exact).
    """
    bh = int(bh)
    if bh < 1:
        raise ValueError(f"the block height must be positive, got {bh}")
    m, n = x.shape
    n_panels = -(-m // bh)
    sq = np.square(x)
    out = np.zeros((n_panels, n), dtype=sq.dtype)
    full = m // bh
    if full:
        body = sq[: full * bh].reshape(full, bh, n)
        acc = out[:full]
        for r in range(bh):
            acc += body[:, r, :]
    for r in range(m - full * bh):
        out[full] += sq[full * bh + r]
    return out


def _expand_blocks(bmask: np.ndarray, bh: int, m: int) -> np.ndarray:
    """Entry mask from a (P, n) block mask: every block covers bh rows (cut at row m)."""
    return np.repeat(bmask, bh, axis=0)[:m]


def _mask_spblock(x: np.ndarray, k: int, bh: int) -> np.ndarray:
    e = block_energy(x, bh)
    return _expand_blocks(topk_mask_rows(e.reshape(1, -1), k).reshape(e.shape), bh, x.shape[0])


def _mask_splinblock(x: np.ndarray, k: int, bh: int) -> np.ndarray:
    return _expand_blocks(topk_mask_rows(block_energy(x, bh), k), bh, x.shape[0])


def _apply(x: np.ndarray, mask: np.ndarray, normalize: bool) -> np.ndarray:
    out = np.where(mask, x, 0.0)
    return normalize_fro(out) if normalize else out


def proj_sp(x: np.ndarray, k: int, normalize: bool = False) -> np.ndarray:
    """Keep the ``k`` entries of largest magnitude overall."""
    return _apply(x, _mask_sp(x, k), normalize)


def proj_splin(x: np.ndarray, k: int, normalize: bool = False) -> np.ndarray:
    """Keep the ``k`` entries of largest magnitude in every row."""
    return _apply(x, _mask_splin(x, k), normalize)


def proj_spcol(x: np.ndarray, k: int, normalize: bool = False) -> np.ndarray:
    """Keep the ``k`` entries of largest magnitude in every column."""
    return _apply(x, _mask_spcol(x, k), normalize)


def proj_splincol(x: np.ndarray, k: int, normalize: bool = False) -> np.ndarray:
    """Keep the union of the ``splin(k)`` and ``spcol(k)`` supports."""
    return _apply(x, _mask_splin(x, k) | _mask_spcol(x, k), normalize)


def proj_spblock(x: np.ndarray, k: int, bh: int, normalize: bool = False) -> np.ndarray:
    """Keep the ``k`` blocks of ``bh`` consecutive rows × 1 column with the largest Frobenius
    norm over the whole matrix (row panels start at multiples of bh; ties: the block with the
    lowest (panel, column) index in row-major order wins)."""
    return _apply(x, _mask_spblock(x, k, bh), normalize)


def proj_splinblock(x: np.ndarray, k: int, bh: int, normalize: bool = False) -> np.ndarray:
    """Keep the ``k`` largest ``bh × 1`` blocks in every row panel (the block ``splin``)."""
    return _apply(x, _mask_splinblock(x, k, bh), normalize)


def proj_support(x: np.ndarray, mask: np.ndarray, normalize: bool = False) -> np.ndarray:
    """Keep the entries where the fixed boolean ``mask`` is true."""
    return _apply(x, np.asarray(mask, dtype=bool), normalize)


_BLOCK_KINDS = ("spblock", "splinblock")
_KINDS = ("sp", "splin", "spcol", "splincol", "support", "dense", *_BLOCK_KINDS)


@dataclass(frozen=True)
class Constraint:
    """A sparsity constraint set: ``kind`` in {sp, splin, spcol, splincol, spblock,
    splinblock, support, dense}.

    ``normalize`` pairs the sparsity pattern with the unit-Frobenius-norm sphere, as palm4MSA
    does with a separate global scale. The block kinds count ``k`` in blocks of ``bh``
    consecutive rows × 1 column (``axis=0``); ``axis=1`` is the transposed form (1 row ×
    ``bh`` columns, panels of bh columns) that the right-to-left solvers use internally.
    """

    kind: str
    k: int = 0
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)
    normalize: bool = True
    bh: int = 1
    axis: int = 0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown constraint kind {self.kind!r}")
        if self.kind == "support" and self.mask is None:
            raise ValueError("a 'support' constraint needs a boolean mask")
        if self.kind in ("sp", "splin", "spcol", "splincol", *_BLOCK_KINDS) and self.k < 0:
            raise ValueError("the sparsity level k must be non-negative")
        if self.bh < 1 or self.axis not in (0, 1):
            raise ValueError("the block height must be positive and the axis 0 or 1")

    def support_of(self, x: np.ndarray) -> np.ndarray:
        """Boolean mask of the entries this projection keeps."""
        if self.kind == "sp":
            return _mask_sp(x, self.k)
        if self.kind == "splin":
            return _mask_splin(x, self.k)
        if self.kind == "spcol":
            return _mask_spcol(x, self.k)
        if self.kind == "splincol":
            return _mask_splin(x, self.k) | _mask_spcol(x, self.k)
        if self.kind in _BLOCK_KINDS:
            fn = _mask_spblock if self.kind == "spblock" else _mask_splinblock
            return fn(x, self.k, self.bh) if self.axis == 0 else fn(x.T, self.k, self.bh).T
        if self.kind == "support":
            if self.mask.shape != x.shape:
                raise ValueError(f"support mask shape {self.mask.shape} != factor {x.shape}")
            return np.asarray(self.mask, dtype=bool)
        return np.ones(x.shape, dtype=bool)

    def project(self, x: np.ndarray) -> np.ndarray:
        """Euclidean projection of ``x`` onto the constraint set."""
        if self.kind == "dense":
            return normalize_fro(x) if self.normalize else x.copy()
        return _apply(x, self.support_of(x), self.normalize)

    def transpose(self) -> Constraint:
        """The same constraint for the transposed factor (splin and spcol swap, block
        constraints change axis)."""
        swap = {"splin": "spcol", "spcol": "splin"}
        mask = None if self.mask is None else np.asarray(self.mask).T
        axis = 1 - self.axis if self.kind in _BLOCK_KINDS else self.axis
        return Constraint(
            swap.get(self.kind, self.kind), self.k, mask, self.normalize, self.bh, axis
        )

    def max_nnz(self, shape: tuple[int, int]) -> int:
        """Upper bound on the nonzeros a projected factor of ``shape`` can have.

        Block constraints count real entries: a block in a short last panel holds fewer than
        ``bh`` of them (a block-sparse storage format pads it to bh; see ``block_nnz``).
        """
        m, n = shape
        if self.kind in _BLOCK_KINDS:
            rows, cols = (m, n) if self.axis == 0 else (n, m)
            full, rest = divmod(rows, self.bh)
            if self.kind == "splinblock":
                return rows * min(self.k, cols)
            # The k blocks with the most real entries: full panels first.
            n_full = min(self.k, full * cols)
            n_short = min(self.k - n_full, cols) if rest else 0
            return n_full * self.bh + n_short * rest
        if self.kind == "sp":
            return min(self.k, m * n)
        if self.kind == "splin":
            return m * min(self.k, n)
        if self.kind == "spcol":
            return n * min(self.k, m)
        if self.kind == "splincol":
            return min(m * n, m * min(self.k, n) + n * min(self.k, m))
        if self.kind == "support":
            return int(np.count_nonzero(self.mask))
        return m * n

    def block_nnz(self, shape: tuple[int, int]) -> int:
        """Entries a block-sparse format stores for a projected factor (padded blocks of bh);
        the same as :meth:`max_nnz` for the unblocked kinds."""
        if self.kind not in _BLOCK_KINDS:
            return self.max_nnz(shape)
        m, n = shape
        rows, cols = (m, n) if self.axis == 0 else (n, m)
        n_panels = -(-rows // self.bh)
        per_panel = min(self.k, cols) if self.kind == "splinblock" else None
        n_blocks = n_panels * per_panel if per_panel is not None else min(self.k, n_panels * cols)
        return n_blocks * self.bh


def sp(k: int, normalize: bool = True) -> Constraint:
    """At most ``k`` nonzeros overall."""
    return Constraint("sp", int(k), normalize=normalize)


def splin(k: int, normalize: bool = True) -> Constraint:
    """At most ``k`` nonzeros per row."""
    return Constraint("splin", int(k), normalize=normalize)


def spcol(k: int, normalize: bool = True) -> Constraint:
    """At most ``k`` nonzeros per column."""
    return Constraint("spcol", int(k), normalize=normalize)


def splincol(k: int, normalize: bool = True) -> Constraint:
    """Union of the per-row and per-column ``k``-sparse supports."""
    return Constraint("splincol", int(k), normalize=normalize)


def spblock(k: int, bh: int, normalize: bool = True) -> Constraint:
    """At most ``k`` blocks of ``bh`` consecutive rows × 1 column (panels aligned at
    multiples of bh), chosen by largest Frobenius norm over the whole factor."""
    return Constraint("spblock", int(k), normalize=normalize, bh=int(bh))


def splinblock(k: int, bh: int, normalize: bool = True) -> Constraint:
    """At most ``k`` blocks of ``bh`` rows × 1 column in every row panel."""
    return Constraint("splinblock", int(k), normalize=normalize, bh=int(bh))


def support(mask: np.ndarray, normalize: bool = True) -> Constraint:
    """A fixed support given by a boolean mask."""
    return Constraint("support", 0, np.asarray(mask, dtype=bool), normalize=normalize)


def dense(normalize: bool = True) -> Constraint:
    """No sparsity constraint (only the optional normalization)."""
    return Constraint("dense", 0, normalize=normalize)
