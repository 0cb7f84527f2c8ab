"""Cost of faustgen.factorize on network-sized matrices: time vs size and RCG, with error.

For every (matrix, RCG) it runs ``factorize(W, rcg=R)`` once (``--block 16``: the block-sparse
form the build uses for fully connected layers) and prints the engine's CPU time (this
process's user + system time: with single-threaded BLAS it is the one-core time whatever
else the machine runs), its wall time, peak RSS growth, the chosen candidate and its
relative error, next to two baselines at the same parameter count:

* truncated SVD, rank r with r(D + d) ≤ D·d/R: its exact error from the eigenvalues of
  WᵀW (or WWᵀ), i.e. from all the singular values;
* magnitude pruning: keep the ⌊D·d/R⌋ entries of largest |w|.

Matrices (seeded):

* ``gaussian``: i.i.d. standard normal entries;
* ``heavy``: a trained-like heavy-tailed matrix: a decaying low-rank signal A·B with A
  (D × r) and B (r × d) standard normal, r = min(D, d)/4, column i of A scaled by
  1/(1 + i/20), normalized to unit RMS entry, plus Student-t (3 degrees of freedom) noise
  of scale 0.5. Its entry kurtosis is above 4, like trained layers (the engine's
  ``heavy_tailed`` test), unlike Gaussian ones (3).

Run single-threaded:

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \\
        .venv/bin/python benchmarks/bench_factorize_scale.py --sizes 1024x1024 4096x1024

``--json`` prints one JSON object per row instead of the table.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faustgen.factorize import factorize


def gaussian(D: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((D, d))


def heavy(D: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = max(min(D, d) // 4, 1)
    s = (1.0 / (1.0 + np.arange(r) / 20.0)).astype(np.float32)
    A = rng.standard_normal((D, r), dtype=np.float32) * s
    B = rng.standard_normal((r, d), dtype=np.float32)
    S = (A @ B).astype(np.float64)
    S /= math.sqrt(float(np.mean(S * S)))
    S += 0.5 * rng.standard_t(3, size=(D, d))
    return S


MATRICES = {"gaussian": gaussian, "heavy": heavy}


def kurtosis(W: np.ndarray) -> float:
    x = W.ravel() - W.mean()
    m2 = float(np.mean(x * x))
    return float(np.mean(x**4)) / (m2 * m2)


def svd_baseline(W: np.ndarray, budget: int) -> tuple[float, int]:
    D, d = W.shape
    r = min(budget // (D + d), min(D, d))
    G = W.T @ W if d <= D else W @ W.T
    ev = np.clip(np.linalg.eigvalsh(G), 0.0, None)[::-1]  # squared singular values
    total = float(ev.sum())
    return math.sqrt(float(ev[r:].sum()) / total), r


def prune_baseline(W: np.ndarray, budget: int) -> float:
    e = (W * W).ravel()
    n_drop = e.size - budget
    dropped = np.partition(e, n_drop)[:n_drop] if n_drop > 0 else e[:0]
    return math.sqrt(float(dropped.sum()) / float(e.sum()))


def run(kind: str, D: int, d: int, rcg: float, block: int | None, seed: int) -> dict:
    W = MATRICES[kind](D, d, seed)
    budget = math.floor(D * d / rcg + 1e-9)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0, c0 = time.perf_counter(), time.process_time()
    F = factorize(W, rcg=rcg, block=block, seed=seed)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    svd_err, r = svd_baseline(W, budget)
    return {
        "matrix": kind,
        "shape": f"{D}x{d}",
        "rcg": rcg,
        "block": block,
        "kurtosis": round(kurtosis(W), 2),
        "cpu_s": round(cpu, 1),
        "wall_s": round(wall, 1),
        "peak_rss_growth_mb": round(max(rss - rss0, 0) / 1024),
        "chosen": F.info["chosen"],
        "error": round(float(F.info["relative_error"]), 4),
        "achieved_rcg": round(F.rcg, 3),
        "svd_error": round(svd_err, 4),
        "svd_rank": r,
        "prune_error": round(prune_baseline(W, budget), 4),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["1024x1024", "4096x1024", "4096x4096"])
    ap.add_argument("--rcg", nargs="+", type=float, default=[8.0])
    ap.add_argument("--matrices", nargs="+", default=list(MATRICES), choices=list(MATRICES))
    ap.add_argument("--block", type=int, default=None, help="block height (the build's 16)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = []
    if not args.json:
        print(
            "| matrix | shape | RCG | kurtosis | CPU (s) | wall (s) | RSS +MB | chosen "
            "| error | SVD error (rank) | pruning error |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        D, d = (int(x) for x in size.lower().split("x"))
        for rcg in args.rcg:
            for kind in args.matrices:
                row = run(kind, D, d, rcg, args.block, args.seed)
                rows.append(row)
                if args.json:
                    print(json.dumps(row), flush=True)
                else:
                    print(
                        f"| {kind} | {row['shape']} | {rcg:g}"
                        + (f" (block {args.block})" if args.block else "")
                        + f" | {row['kurtosis']} | {row['cpu_s']} | {row['wall_s']} "
                        f"| {row['peak_rss_growth_mb']} | {row['chosen']} | {row['error']} "
                        f"| {row['svd_error']} ({row['svd_rank']}) | {row['prune_error']} |",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
