"""The result type: ``W ≈ scale · f0 @ f1 @ … @ f{J-1}`` with sparse CSR factors, and the
block-sparse (BSR-like) layout a code generator prints for block-structured results."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sps

__all__ = [
    "BlockStructure",
    "FactorizationError",
    "FactorizedMatrix",
    "block_count",
    "block_structure",
]


class FactorizationError(ValueError):
    """Bad input or an unreachable target; the message is one complete sentence."""


@dataclass(frozen=True)
class BlockStructure:
    """One factor S (m × n) in blocks of ``bh`` consecutive rows × 1 column, row panel by row
    panel: for panel p (rows p·bh … p·bh+bh−1) its blocks are ``panel_ptr[p]:panel_ptr[p+1]``,
    block b sits in column ``block_cols[b]`` (ascending within a panel) and holds
    ``block_values[b]`` (bh values, top row first). ``y = S @ x`` is then, per block,
    ``y[p·bh : p·bh+bh] += block_values[b] * x[block_cols[b]]``. Entries of a block that are
    zero in S, and the rows of a short last panel beyond m, are stored as zeros.
    """

    shape: tuple[int, int]
    bh: int
    panel_ptr: np.ndarray  # int64, length n_panels + 1
    block_cols: np.ndarray  # int64, length n_blocks
    block_values: np.ndarray  # (n_blocks, bh), the factor's dtype

    @property
    def n_panels(self) -> int:
        return len(self.panel_ptr) - 1

    @property
    def n_blocks(self) -> int:
        return len(self.block_cols)

    @property
    def stored_entries(self) -> int:
        """Values the layout stores, padding included: ``n_blocks · bh``."""
        return self.n_blocks * self.bh

    def toarray(self) -> np.ndarray:
        """The dense factor reassembled from the blocks."""
        m, n = self.shape
        out = np.zeros((self.n_panels * self.bh, n), dtype=self.block_values.dtype)
        panel = np.repeat(np.arange(self.n_panels), np.diff(self.panel_ptr))
        rows = panel[:, None] * self.bh + np.arange(self.bh)[None, :]
        out[rows, self.block_cols[:, None]] = self.block_values
        return out[:m]


def block_count(f: Any, bh: int) -> int:
    """The number of ``bh × 1`` blocks of :func:`block_structure` (those holding a stored
    entry), without forming them: the nonzeros of (row-panel indicator) · (f's pattern), one
    sparse product instead of a sort of every entry (0.05 s instead of 2.4 s on a VGG
    factor of 15 M nonzeros, and the build counts each factor's blocks several times)."""
    f = sps.csr_matrix(f)
    m, n = f.shape
    pattern = sps.csr_matrix((np.ones(len(f.indices), np.float32), f.indices, f.indptr), (m, n))
    rows = np.arange(m)
    panels = sps.csr_matrix((np.ones(m, np.float32), (rows // bh, rows)), (-(-m // bh), m))
    return int((panels @ pattern).nnz)


def block_structure(f: Any, bh: int) -> BlockStructure:
    """Group the stored entries of a sparse (or dense) matrix into ``bh × 1`` blocks."""
    bh = int(bh)
    if bh < 1:
        raise FactorizationError(f"The block height must be a positive integer, got {bh}.")
    f = sps.csr_matrix(f, copy=True)
    f.sum_duplicates()
    m, n = f.shape
    n_panels = -(-m // bh)
    rows = np.repeat(np.arange(m, dtype=np.int64), np.diff(f.indptr))
    cols = f.indices.astype(np.int64)
    keys, inv = np.unique((rows // bh) * n + cols, return_inverse=True)
    values = np.zeros((len(keys), bh), dtype=f.dtype)
    values[inv, rows % bh] = f.data
    panels = keys // n if n else keys
    ptr = np.searchsorted(panels, np.arange(n_panels + 1), side="left").astype(np.int64)
    return BlockStructure((m, n), bh, ptr, keys - panels * n, values)


class FactorizedMatrix:
    """A product of sparse factors times a scalar: ``scale · factors[0] @ … @ factors[-1]``.

    Factors are stored as float64 CSR matrices (explicit zeros removed); ``info`` carries
    diagnostics of the run that produced it (method, error history, timings) and is not saved.
    ``block`` (None or a block height bh) marks a result meant for a block-sparse kernel: its
    factors are stored and counted in blocks of bh rows × 1 column (see
    :meth:`block_structure` and :attr:`stored_nnz`).
    """

    def __init__(
        self,
        factors: Sequence[Any],
        scale: float = 1.0,
        info: dict[str, Any] | None = None,
        dtype: Any = np.float64,
        block: int | None = None,
    ) -> None:
        if len(factors) == 0:
            raise FactorizationError("A factorized matrix needs at least one factor.")
        csr = []
        for f in factors:
            if sps.issparse(f) and f.format == "csr" and f.dtype == dtype:
                m = f.copy() if f.data.size and not f.data.all() else f
            else:
                m = sps.csr_matrix(f, dtype=dtype)
            if m.data.size and not m.data.all():
                m.eliminate_zeros()
            if not m.has_sorted_indices:
                m.sort_indices()
            csr.append(m)
        for a, b in itertools.pairwise(csr):
            if a.shape[1] != b.shape[0]:
                raise FactorizationError(
                    f"Factor shapes {a.shape} and {b.shape} cannot be multiplied."
                )
        if block is not None and (int(block) != block or block < 1):
            raise FactorizationError(f"The block height must be a positive integer, got {block}.")
        self._factors = csr
        self.scale = float(scale)
        self.info: dict[str, Any] = dict(info or {})
        self.block: int | None = None if block is None else int(block)

    # --- shape and size -------------------------------------------------------------------
    @property
    def factors(self) -> list[sps.csr_matrix]:
        """The CSR factors, leftmost first (without the scale)."""
        return list(self._factors)

    @property
    def n_factors(self) -> int:
        return len(self._factors)

    @property
    def shape(self) -> tuple[int, int]:
        return (self._factors[0].shape[0], self._factors[-1].shape[1])

    @property
    def dtype(self) -> np.dtype:
        return self._factors[0].dtype

    @property
    def nnz(self) -> int:
        """Total nonzeros over all factors (the scale is free)."""
        return int(sum(f.nnz for f in self._factors))

    @property
    def stored_nnz(self) -> int:
        """Values a kernel stores: :attr:`nnz` for an unstructured result; for a block result
        the blocks holding a nonzero times bh (zeros inside a block and the padding rows of a
        short last panel included)."""
        if self.block is None:
            return self.nnz
        return int(sum(block_count(f, self.block) * self.block for f in self._factors))

    @property
    def rcg(self) -> float:
        """Relative complexity gain: dense size divided by :attr:`stored_nnz` (the nonzero
        count of an unstructured result, the padded block storage of a block result)."""
        nnz = self.stored_nnz
        return float("inf") if nnz == 0 else self.shape[0] * self.shape[1] / nnz

    # --- arithmetic -----------------------------------------------------------------------
    def toarray(self) -> np.ndarray:
        """The dense product (computed right to left with dense accumulators)."""
        acc = self._factors[-1].toarray()
        for f in reversed(self._factors[:-1]):
            acc = f @ acc
        return self.scale * np.asarray(acc)

    def matvec(self, x: np.ndarray) -> np.ndarray:
        """``self @ x`` for a vector or a matrix ``x``, applying the sparse factors in turn."""
        x = np.asarray(x)
        if x.shape[0] != self.shape[1]:
            raise FactorizationError(
                f"Cannot multiply a {self.shape} matrix by an operand of shape {x.shape}."
            )
        y = x
        for f in reversed(self._factors):
            y = f @ y
        return self.scale * np.asarray(y)

    def __matmul__(self, x: np.ndarray) -> np.ndarray:
        return self.matvec(x)

    def relative_error(self, W: np.ndarray) -> float:
        """``‖W − self‖_F / ‖W‖_F``."""
        W = np.asarray(W, dtype=np.float64)
        nw = np.linalg.norm(W)
        diff = np.linalg.norm(W - self.toarray())
        return float(diff / nw) if nw > 0 else float(diff)

    def astype(self, dtype: Any) -> FactorizedMatrix:
        """A copy with factors cast to ``dtype`` (e.g. ``np.float32`` for code generation)."""
        return FactorizedMatrix(self._factors, self.scale, self.info, dtype=dtype, block=self.block)

    def balanced_factors(self) -> list[sps.csr_matrix]:
        """Factors with the scale folded in evenly: each gets ``|scale|**(1/J)``.

        The sign of the scale goes to the leftmost factor only, so the plain product of the
        returned factors equals ``self.toarray()`` and every factor has a comparable norm
        (unlike folding the whole scale into a single factor, which skews fine-tuning).
        """
        J = self.n_factors
        mag = abs(self.scale) ** (1.0 / J)
        out = [f * mag for f in self._factors]
        if self.scale < 0:
            out[0] = -out[0]
        return [sps.csr_matrix(f) for f in out]

    def block_structure(
        self, q: int, bh: int | None = None, *, balanced: bool = False
    ) -> BlockStructure:
        """Factor ``q`` (0 = leftmost) in the BSR-like layout of :class:`BlockStructure`.

        ``bh`` defaults to the result's :attr:`block`; an unstructured result needs it given
        and then just has its nonzeros grouped into blocks (for comparison). ``balanced``
        takes the factor from :meth:`balanced_factors` (scale folded in; same blocks).
        """
        bh = self.block if bh is None else bh
        if bh is None:
            raise FactorizationError("This result has no block size: pass bh explicitly.")
        if not -self.n_factors <= q < self.n_factors:
            raise FactorizationError(f"No factor {q} in a product of {self.n_factors}.")
        f = self.balanced_factors()[q] if balanced else self._factors[q]
        return block_structure(f, bh)

    # --- persistence ----------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write an ``.npz`` with keys ``scale``, ``n_factors``, ``block`` (the block height,
        0 for none) and ``f{q}_{data,indices,indptr,shape}`` (q = 0 leftmost). The file is
        written atomically."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {
            "scale": np.array(self.scale, dtype=np.float64),
            "n_factors": np.array(self.n_factors, dtype=np.int64),
            "block": np.array(self.block or 0, dtype=np.int64),
        }
        for q, f in enumerate(self._factors):
            arrays[f"f{q}_data"] = f.data
            arrays[f"f{q}_indices"] = f.indices
            arrays[f"f{q}_indptr"] = f.indptr
            arrays[f"f{q}_shape"] = np.array(f.shape, dtype=np.int64)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FactorizedMatrix:
        """Read a file written by :meth:`save` (files without a ``block`` key: no block)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                n = int(z["n_factors"])
                factors = [
                    sps.csr_matrix(
                        (z[f"f{q}_data"], z[f"f{q}_indices"], z[f"f{q}_indptr"]),
                        shape=tuple(int(s) for s in z[f"f{q}_shape"]),
                    )
                    for q in range(n)
                ]
                scale = float(z["scale"])
                block = int(z["block"]) if "block" in z.files else 0
        except (OSError, KeyError, ValueError) as exc:
            raise FactorizationError(
                f"Cannot read a factorized matrix from {path}: {exc}."
            ) from exc
        if block < 0:
            raise FactorizationError(f"Cannot read a factorized matrix from {path}: bad block.")
        dtype = factors[0].dtype if factors else np.float64
        return cls(factors, scale, dtype=dtype, block=block or None)

    def __repr__(self) -> str:
        shapes = " @ ".join(f"{f.shape[0]}x{f.shape[1]}" for f in self._factors)
        return (
            f"FactorizedMatrix(shape={self.shape}, scale={self.scale:.6g}, "
            f"factors=[{shapes}], nnz={self.nnz}, rcg={self.rcg:.3f}"
            + (f", block={self.block})" if self.block else ")")
        )
