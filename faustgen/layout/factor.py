"""A factor of a factorized layer as plain data: the sparse matrix and the storage the cost
model chose for it (dense, csr, ell, bsr16 or bsr8), with the facts about each storage that the
passes (cost model), the ops (lowering) and fine-tuning all need."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sps

from faustgen.factorize.result import block_count

BSR_ROWS = 16  # FG_BSR_ROWS in fg_runtime.h
# Rows per block of each block-sparse storage (FG_BSR_ROWS, FG_BSR8_ROWS in fg_runtime.h).
BSR_STORAGES = {"bsr16": BSR_ROWS, "bsr8": 8}


@dataclass
class Factor:
    """One factor S (m x n) and the storage chosen for it."""

    matrix: sps.csr_matrix  # float32
    storage: str  # dense | csr | ell | bsr16 | bsr8
    # (matrix, stored_entries()): counted once per matrix, the cost model asks many times.
    _stored: tuple | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    @property
    def nnz(self) -> int:
        return int(self.matrix.nnz)

    @property
    def index_type(self) -> str:
        return "u16" if self.matrix.shape[1] <= 65536 else "i32"

    def stored_entries(self) -> int:
        """Floats this storage keeps (a dense factor keeps every entry, a bsr16 / bsr8 one
        whole blocks)."""
        if self._stored is None or self._stored[0] is not self.matrix:
            m, n = self.shape
            if self.storage == "dense":
                count = m * n
            elif self.storage == "ell":
                count = m * ell_width(self.matrix)
            elif self.storage in BSR_STORAGES:
                br = BSR_STORAGES[self.storage]
                count = br * block_count(self.matrix, br)
            else:
                count = self.nnz
            self._stored = (self.matrix, count)
        return self._stored[1]


def chain_dense(factors: list[Factor]) -> np.ndarray:
    """The product S_0 ... S_{J-1} as a dense float64 matrix."""
    acc = factors[-1].matrix.astype(np.float64).toarray()
    for f in reversed(factors[:-1]):
        m = f.matrix
        # A sparse-times-dense product runs at a few GFLOP/s, BLAS at tens: a large factor
        # that is not very sparse goes through BLAS (minutes saved on a VGG-sized layer).
        if m.shape[0] * m.shape[1] >= 1 << 20 and m.nnz >= 0.05 * m.shape[0] * m.shape[1]:
            acc = m.toarray().astype(np.float64, copy=False) @ acc
        else:
            acc = m.astype(np.float64) @ acc
    return np.asarray(acc)


def ell_width(m: sps.csr_matrix) -> int:
    counts = np.diff(m.indptr)
    return int(counts.max()) if len(counts) else 0


def bsr_blocks(m: sps.csr_matrix, br: int = BSR_ROWS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group the nonzeros into br x 1 blocks: (panel_ptr, block_cols, values (n_blocks x br))."""
    rows, n = m.shape
    n_panels = -(-rows // br)
    coo = m.tocoo()
    panel = coo.row // br
    key = panel.astype(np.int64) * n + coo.col
    uniq, inverse = np.unique(key, return_inverse=True)
    values = np.zeros((len(uniq), br), np.float32)
    values[inverse, coo.row % br] = coo.data
    block_panel = uniq // n
    cols = (uniq % n).astype(np.int64)
    ptr = np.searchsorted(block_panel, np.arange(n_panels + 1)).astype(np.int64)
    return ptr, cols, values
