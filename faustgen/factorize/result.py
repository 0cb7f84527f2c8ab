"""The result type: ``W ≈ scale · f0 @ f1 @ … @ f{J-1}`` with sparse CSR factors."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sps

__all__ = ["FactorizationError", "FactorizedMatrix"]


class FactorizationError(ValueError):
    """Bad input or an unreachable target; the message is one complete sentence."""


class FactorizedMatrix:
    """A product of sparse factors times a scalar: ``scale · factors[0] @ … @ factors[-1]``.

    Factors are stored as float64 CSR matrices (explicit zeros removed); ``info`` carries
    diagnostics of the run that produced it (method, error history, timings) and is not saved.
    """

    def __init__(
        self,
        factors: Sequence[Any],
        scale: float = 1.0,
        info: dict[str, Any] | None = None,
        dtype: Any = np.float64,
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
        self._factors = csr
        self.scale = float(scale)
        self.info: dict[str, Any] = dict(info or {})

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
        """Total stored nonzeros over all factors (the scale is free)."""
        return int(sum(f.nnz for f in self._factors))

    @property
    def rcg(self) -> float:
        """Relative complexity gain: dense size divided by total nonzeros."""
        nnz = self.nnz
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
        return FactorizedMatrix(self._factors, self.scale, self.info, dtype=dtype)

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

    # --- persistence ----------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write an ``.npz`` with keys ``scale``, ``n_factors`` and ``f{q}_{data,indices,
        indptr,shape}`` (q = 0 leftmost). The file is written atomically."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {
            "scale": np.array(self.scale, dtype=np.float64),
            "n_factors": np.array(self.n_factors, dtype=np.int64),
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
        """Read a file written by :meth:`save`."""
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
        except (OSError, KeyError, ValueError) as exc:
            raise FactorizationError(
                f"Cannot read a factorized matrix from {path}: {exc}."
            ) from exc
        return cls(factors, scale, dtype=factors[0].dtype if factors else np.float64)

    def __repr__(self) -> str:
        shapes = " @ ".join(f"{f.shape[0]}x{f.shape[1]}" for f in self._factors)
        return (
            f"FactorizedMatrix(shape={self.shape}, scale={self.scale:.6g}, "
            f"factors=[{shapes}], nnz={self.nnz}, rcg={self.rcg:.3f})"
        )
