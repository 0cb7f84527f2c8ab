"""Cost model: estimated time and bytes of a layer in each storage, to choose between them.

Per-entry costs (nanoseconds) come from the target file's [cost] table, measured on the
target class of CPU by benchmarks/bench_sparse.py; only their ratios matter. A factor is
worth keeping sparse only when it moves fewer bytes and costs less time than the dense
layer it replaces (about 8 bytes per CSR nonzero against 4 per dense entry).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import scipy.sparse as sps

from faustgen.factorize.result import block_count
from faustgen.layout.factor import BSR_ROWS, BSR_STORAGES, Factor, ell_width

# x86-64 with AVX2, measured by benchmarks/bench_sparse.py; targets override these in their
# [cost] table (targets/*.toml).
DEFAULT_COSTS = {
    "call": 7.8,  # per kernel call
    "dense_mac": 0.0629,  # fg_dense, per multiply-add
    "csr_nnz": 0.399,  # fg_csr_matvec, per nonzero
    "ell_nnz": 0.385,  # fg_ell_matvec, per stored entry
    "bsr16_entry": 0.0514,  # fg_bsr16_matvec, per stored entry (16 per block)
    "bsr8_entry": 0.0668,  # fg_bsr8_matvec, per stored entry (8 per block)
    "gemm_mac": 0.0337,  # fg_conv, per multiply-add
    "spmm_entry": 0.0647,  # fg_csr_spmm, per nonzero per column
    "im2col_float": 0.140,  # fg_im2col, per float of a factorized conv's patch matrix (SSE2)
}

BSR8_OVER_BSR16 = 1.3


@dataclass
class CostModel:
    costs: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_COSTS))

    @classmethod
    def from_target(cls, table: dict[str, float] | None) -> CostModel:
        table = dict(table or {})
        if "bsr16_entry" in table and "bsr8_entry" not in table:
            # A target measured before 8x1 blocks existed: their ratio to 16x1 blocks on the
            # host (benchmarks/bench_sparse.py: 0.0411 / 0.0317 ns).
            table["bsr8_entry"] = BSR8_OVER_BSR16 * table["bsr16_entry"]
        return cls({**DEFAULT_COSTS, **table})

    # ---------------------------------------------------------------- time
    def dense_matvec(self, m: int, n: int, rows: int = 1) -> float:
        return self.costs["call"] + self.costs["dense_mac"] * m * n * rows

    def dense_spmm(self, m: int, n: int, cols: int) -> float:
        return self.costs["call"] + self.costs["gemm_mac"] * m * n * cols

    def im2col(self, rows: int, cols: int) -> float:
        """The patch matrix a factorized convolution builds before its chain (the dense
        convolution never materializes it)."""
        return self.costs["call"] + self.costs["im2col_float"] * rows * cols

    def factor_time(self, f: Factor, mode: str, count: int) -> float:
        m, n = f.shape
        c = self.costs
        if f.storage == "dense":
            return (
                self.dense_matvec(m, n, count) if mode == "matvec" else self.dense_spmm(m, n, count)
            )
        if mode == "spmm":
            return c["call"] + c["spmm_entry"] * f.nnz * count
        per = {
            "csr": c["csr_nnz"],
            "ell": c["ell_nnz"],
            "bsr16": c["bsr16_entry"],
            "bsr8": c["bsr8_entry"],
        }[f.storage]
        return c["call"] + per * f.stored_entries() * count

    # ---------------------------------------------------------------- bytes
    @staticmethod
    def factor_bytes(f: Factor) -> int:
        m, n = f.shape
        idx = 2 if f.index_type == "u16" else 4
        if f.storage == "dense":
            return 4 * m * n
        if f.storage == "csr":
            return (4 + idx) * f.nnz + 4 * (m + 1)
        if f.storage == "ell":
            return (4 + idx) * m * ell_width(f.matrix)
        br = BSR_STORAGES[f.storage]
        blocks = f.stored_entries() // br
        return blocks * (4 * br + idx) + 4 * (-(-m // br) + 1)

    # ---------------------------------------------------------------- choice
    def options(self, matrix: sps.csr_matrix, mode: str) -> list[Factor]:
        storages = ["csr", "dense"]
        if mode == "matvec":
            counts = matrix.getnnz(axis=1)
            if len(counts) and counts.min() == counts.max():
                storages.append("ell")
            storages += ["bsr16", "bsr8"]
        return [Factor(matrix, s) for s in storages]

    def choose_storages(
        self, matrices: list[sps.csr_matrix], mode: str, count: int, budget: int | None = None
    ) -> list[Factor]:
        """Storage for each factor of a chain: the fastest mix whose stored entries stay
        within `budget` (the parameter count the factorization promised), chosen greedily
        by time saved per extra stored entry. Without a budget, the fastest per factor."""
        # One set of options per factor, so each counts its stored entries once.
        options = [self.options(m, mode) for m in matrices]
        choice = []
        for opts in options:
            choice.append(
                min(
                    opts,
                    key=lambda f: (
                        f.stored_entries(),
                        self.factor_bytes(f),
                        self.factor_time(f, mode, count),
                    ),
                )
            )
        if budget is None:
            return [
                min(opts, key=lambda f: (self.factor_time(f, mode, count), self.factor_bytes(f)))
                for opts in options
            ]
        used = sum(f.stored_entries() for f in choice)
        while True:
            best = None
            for q, opts in enumerate(options):
                cur = choice[q]
                for f in opts:
                    gain = self.factor_time(cur, mode, count) - self.factor_time(f, mode, count)
                    extra = f.stored_entries() - cur.stored_entries()
                    if gain <= 0 or used + extra > budget:
                        continue
                    score = gain / max(extra, 1)
                    if best is None or score > best[0]:
                        best = (score, q, f, extra)
            if best is None:
                return choice
            _, q, f, extra = best
            choice[q] = f
            used += extra


def block_fill(matrix: sps.csr_matrix) -> float:
    """Fraction of the stored 16x1 blocks' entries that are nonzero (1.0 = perfectly blocked)."""
    return matrix.nnz / max(1, BSR_ROWS * block_count(matrix, BSR_ROWS))
