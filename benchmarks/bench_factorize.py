"""Benchmark of faustgen.factorize against pyfaust and the two baselines.

``--block`` runs the block-sparse table instead: ``factorize(W, rcg=R, block=16)`` next to
the unstructured engine, block pruning (the ⌊D·d/(16R)⌋ 16×1 blocks of largest norm) and
the truncated SVD whose two dense factors fit the same block storage.

Prints one table: relative error ‖W − Ŵ‖_F/‖W‖_F, achieved RCG and time for every case, with
magnitude pruning and truncated SVD at the same parameter count, and pyfaust (when it is
installed) run in the same process on the same matrices with the same nonzero budget.

Run single-threaded for comparable timings, e.g.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        MKL_NUM_THREADS=1 .venv/bin/python benchmarks/bench_factorize.py

Matrices (all seeded):

* Hadamard 256 (Sylvester), RCG 16 with 8 factors;
* Gaussian 256 × 256, standard normal entries;
* "trained-like" D × d: U·diag(s)·Vᵀ with Haar-random orthonormal U (D × r), V (d × r),
  r = min(D, d), s_i = 1/(1 + i/20), plus i.i.d. Gaussian noise whose standard deviation is
  1 % of the signal's RMS entry (noise std = 0.01·‖signal‖_F/√(D·d)).

pyfaust parametrizations (its defaults, with constraints chosen so the total nonzero count
equals ours, ⌊D·d/R⌋, split over the factors in proportion to their sizes, 'sp' constraints):

* palm4msa: 2 factors D × m and m × d, m = min(D, d), default stopping (500 iterations);
* hierarchical: 3 factors D × m, m × m, m × d, residual constraints 'sp' with the nonzeros
  of the remaining factors, default stopping (30 + 30 iterations per level), residual on
  the right, right-to-left updates;
* Hadamard: pyfaust's own 'hadamard' hierarchical parametrization and its butterfly.

Trained MLP layer: the first Linear weight (300 × 784 as torch stores it) of the MLP
784-300-100-10 trained with the repository's seeded code (``zoo.mlp``, ``train.train``, 10
epochs, ``datasets.default_dataset()``: Fashion-MNIST), cached under ``benchmarks/.cache/``.
Rows: faustgen unstructured and ``block=16``, pruning, truncated SVD, the reference figures of
BENCHMARKS.md (pyfaust hierarchical, pruning and SVD on its own trained layer), and pyfaust
hierarchical on this layer with ``--pyfaust-mlp`` (55–160 s per RCG).

Timing: every method runs once; a run shorter than 0.1 s (the Hadamard row) is repeated
until 0.5 s or 50 runs have passed and the median is reported, for faustgen and pyfaust
alike (a single run of a few milliseconds measures cold caches and scheduler noise).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.linalg import hadamard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faustgen.factorize import block_energy, factorize
from faustgen.factorize.blocked import block_svd_rank


def trained_like(D: int, d: int, seed: int = 0, noise: float = 0.01) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = min(D, d)
    U, _ = np.linalg.qr(rng.standard_normal((D, r)))
    V, _ = np.linalg.qr(rng.standard_normal((d, r)))
    s = 1.0 / (1.0 + np.arange(r) / 20.0)
    S = (U * s) @ V.T
    rms = np.linalg.norm(S) / np.sqrt(D * d)
    return S + noise * rms * rng.standard_normal((D, d))


CACHE = Path(__file__).resolve().parent / ".cache"
MLP_CACHE = CACHE / "mlp784-300-100-10_seed0_10ep_fc1.npy"
# BENCHMARKS.md, "The FAµST toolbox": trained MLP layer 784×300 (its own trained layer).
MLP_REFERENCE = {
    "pyfaust hierarchical (3 factors), 55-160 s": {2: 0.163, 4: 0.312, 8: 0.466, 16: 0.617},
    "magnitude pruning": {2: 0.227, 4: 0.459, 8: 0.634, 16: 0.758},
    "truncated SVD": {2: 0.297, 4: 0.443, 8: 0.595, 16: 0.743},
}


def trained_mlp_layer(log) -> np.ndarray:
    """First Linear weight (300 × 784) of the seeded MLP 784-300-100-10 after 10 epochs on
    the default dataset (Fashion-MNIST), trained once with one torch thread and cached."""
    if MLP_CACHE.exists():
        return np.load(MLP_CACHE)
    import torch

    from faustgen.demo import datasets, train, zoo

    data = datasets.default_dataset()
    log(f"training MLP 784-300-100-10 on {data.name}, 10 epochs, seed 0 (cached) ...")
    torch.set_num_threads(1)
    model = zoo.mlp((784, 300, 100, 10), seed=0)
    train.train(model, data, epochs=10, seed=0, progress=False)
    W = model[1].weight.detach().numpy().astype(np.float64)
    CACHE.mkdir(exist_ok=True)
    np.save(MLP_CACHE, W)
    return W


def gaussian(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, n))


def rel(W: np.ndarray, A: np.ndarray) -> float:
    return float(np.linalg.norm(W - A) / np.linalg.norm(W))


def prune_baseline(W: np.ndarray, budget: int) -> tuple[float, float]:
    a = np.sort((W * W).ravel())[::-1]
    return float(np.sqrt(a[budget:].sum() / a.sum())), W.size / budget


def svd_baseline(W: np.ndarray, budget: int) -> tuple[float, float]:
    D, d = W.shape
    r = budget // (D + d)
    s = np.linalg.svd(W, compute_uv=False)
    return float(np.sqrt(np.sum(s[r:] ** 2) / np.sum(s**2))), W.size / max(r * (D + d), 1)


@contextlib.contextmanager
def quiet_stdout():
    """pyfaust's C++ core prints progress on file descriptor 1: silence it."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def load_pyfaust():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pyfaust
            import pyfaust.fact
        return pyfaust
    except ImportError:
        return None


def _split(budget: int, sizes: list[int]) -> list[int]:
    nn = [budget * s // sum(sizes) for s in sizes]
    nn[-1] += budget - sum(nn)
    return nn


def pyfaust_palm2(pf, W: np.ndarray, budget: int):
    from pyfaust.factparams import ConstraintInt, ParamsPalm4MSA, StoppingCriterion

    D, d = W.shape
    m = min(D, d)
    n0, n1 = _split(budget, [D * m, m * d])
    cons = [ConstraintInt("sp", D, m, n0), ConstraintInt("sp", m, d, n1)]
    return pf.fact.palm4msa(W, ParamsPalm4MSA(cons, StoppingCriterion()))


def pyfaust_hier3(pf, W: np.ndarray, budget: int):
    from pyfaust.factparams import ConstraintInt, ParamsHierarchical, StoppingCriterion

    D, d = W.shape
    m = min(D, d)
    shapes = [(D, m), (m, m), (m, d)]
    nn = _split(budget, [a * b for a, b in shapes])
    fact = [ConstraintInt("sp", *shapes[0], nn[0]), ConstraintInt("sp", *shapes[1], nn[1])]
    res = [ConstraintInt("sp", m, d, min(m * d, nn[1] + nn[2])), ConstraintInt("sp", m, d, nn[2])]
    p = ParamsHierarchical(
        fact,
        res,
        StoppingCriterion(num_its=30),
        StoppingCriterion(num_its=30),
        is_update_way_R2L=True,
        is_fact_side_left=False,
    )
    return pf.fact.hierarchical(W, p)


def timed(fn):
    """``fn()`` and its wall time; runs under 0.1 s are repeated (median of up to 50 runs
    within 0.5 s), the same rule for every method."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    if first >= 0.1:
        return out, first
    times = []
    start = time.perf_counter()
    while len(times) < 50 and time.perf_counter() - start < 0.5:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return out, float(np.median(times))


def run_case(name, W, R, rows, pf, pyfaust_methods, ours_kwargs, log, block=None, refs=None):
    D, d = W.shape
    budget = int(D * d // R)
    log(f"[{name} RCG {R}] faustgen ...")
    F, t = timed(lambda: factorize(W, rcg=R, seed=0, **ours_kwargs))
    rows.append(
        {
            "case": name,
            "target_rcg": R,
            "method": f"faustgen ({F.info['chosen']})",
            "error": F.relative_error(W),
            "rcg": F.rcg,
            "time": t,
        }
    )
    if block:
        log(f"[{name} RCG {R}] faustgen block={block} ...")
        B, t = timed(lambda: factorize(W, rcg=R, seed=0, block=block))
        rows.append(
            {
                "case": name,
                "target_rcg": R,
                "method": f"faustgen block={block} ({B.info['chosen']})",
                "error": B.relative_error(W),
                "rcg": W.size / B.stored_nnz,
                "time": t,
            }
        )
    e, r = prune_baseline(W, budget)
    rows.append(
        {
            "case": name,
            "target_rcg": R,
            "method": "baseline: prune",
            "error": e,
            "rcg": r,
            "time": None,
        }
    )
    e, r = svd_baseline(W, budget)
    rows.append(
        {
            "case": name,
            "target_rcg": R,
            "method": "baseline: truncated SVD",
            "error": e,
            "rcg": r,
            "time": None,
        }
    )
    for label, errs in (refs or {}).items():
        rows.append(
            {
                "case": name,
                "target_rcg": R,
                "method": f"BENCHMARKS.md: {label}",
                "error": errs[R],
                "rcg": None,
                "time": None,
            }
        )
    if pf is None:
        return
    for label, fn in pyfaust_methods:
        log(f"[{name} RCG {R}] pyfaust {label} ...")
        with quiet_stdout(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Fp, tp = timed(lambda fn=fn: fn(pf, W, budget))
        rows.append(
            {
                "case": name,
                "target_rcg": R,
                "method": f"pyfaust {label}",
                "error": rel(W, Fp.toarray()),
                "rcg": W.size / Fp.nnz_sum(),
                "time": tp,
            }
        )


def block_prune_baseline(W: np.ndarray, budget: int, bh: int) -> tuple[float, float]:
    e = np.sort(block_energy(W, bh).ravel())[::-1]
    k = budget // bh
    return float(np.sqrt(max(1.0 - e[:k].sum() / e.sum(), 0.0))), W.size / (k * bh)


def block_svd_baseline(W: np.ndarray, budget: int, bh: int) -> tuple[float, float, int]:
    D, d = W.shape
    r = block_svd_rank(W.shape, budget, bh)
    s = np.linalg.svd(W, compute_uv=False)
    stored = (-(-D // bh) * r + -(-r // bh) * d) * bh
    return float(np.sqrt(np.sum(s[r:] ** 2) / np.sum(s**2))), W.size / max(stored, 1), r


def run_block_case(name, W, R, rows, log, bh: int = 16) -> None:
    D, d = W.shape
    budget = int(D * d // R)

    def row(method, error, rcg, t):
        rows.append(
            {"case": name, "target_rcg": R, "method": method, "error": error, "rcg": rcg, "time": t}
        )

    log(f"[{name} RCG {R}] faustgen block={bh} ...")
    F, t = timed(lambda: factorize(W, rcg=R, seed=0, block=bh))
    row(f"faustgen block={bh} ({F.info['chosen']})", F.relative_error(W), F.rcg, t)
    log(f"[{name} RCG {R}] faustgen unstructured ...")
    U, t = timed(lambda: factorize(W, rcg=R, seed=0))
    row(f"faustgen unstructured ({U.info['chosen']})", U.relative_error(W), U.rcg, t)
    (e, r), t = timed(lambda: block_prune_baseline(W, budget, bh))
    row(f"baseline: block prune ({bh}x1)", e, r, t)
    e, r, rank = block_svd_baseline(W, budget, bh)
    row(f"baseline: truncated SVD r={rank}, block storage", e, r, None)
    e, r = prune_baseline(W, budget)
    row("baseline: prune (unstructured)", e, r, None)


def main_block(quick: bool, as_json: bool, log) -> int:
    rows: list[dict] = []
    if quick:
        cases = [(256, 784, 4), (300, 784, 4)]
    else:
        cases = [(D, d, R) for D, d in ((256, 784), (784, 256)) for R in (2, 4, 8)]
        cases += [(1024, 1024, 8), (300, 784, 4), (300, 784, 8)]
    for D, d, R in cases:
        run_block_case(f"trained-like {D}x{d}", trained_like(D, d), R, rows, log)
    if as_json:
        print(json.dumps(rows, indent=1))
    else:
        print_table(rows, ratio_column=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small subset of the cases")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--no-pyfaust", action="store_true", help="skip pyfaust even if installed")
    ap.add_argument(
        "--no-pyfaust-palm",
        action="store_true",
        help="skip pyfaust palm4msa on the trained-like cases (the slowest runs)",
    )
    ap.add_argument(
        "--pyfaust-mlp",
        action="store_true",
        help="run pyfaust hierarchical on the trained MLP layer too (55-160 s per RCG)",
    )
    ap.add_argument("--no-mlp", action="store_true", help="skip the trained MLP layer rows")
    ap.add_argument("--block", action="store_true", help="the block=16 table instead (no pyfaust)")
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.block:
        return main_block(args.quick, args.json, log)
    pf = None if args.no_pyfaust else load_pyfaust()

    rows: list[dict] = []
    H = hadamard(256).astype(float)
    ham = []
    if pf is not None:
        ham = [
            (
                "hierarchical (hadamard params)",
                lambda pf, W, b: pf.fact.hierarchical(W, "hadamard"),
            ),
            ("butterfly", lambda pf, W, b: pf.fact.butterfly(W, type="bbtree")),
        ]
    run_case("Hadamard 256", H, 16, rows, pf, ham, {"factors": 8}, log)
    palm = [("palm4msa (2 factors)", pyfaust_palm2)]
    hier = [("hierarchical (3 factors)", pyfaust_hier3)]
    trained_pf = hier if args.no_pyfaust_palm else hier + palm
    if args.quick:
        cases = [
            ("Gaussian 256x256", gaussian(256), 4, palm),
            ("trained-like 256x784", trained_like(256, 784), 4, hier),
        ]
    else:
        cases = [("Gaussian 256x256", gaussian(256), R, palm) for R in (2, 4)]
        for D, d in ((256, 784), (784, 256)):
            cases += [
                (f"trained-like {D}x{d}", trained_like(D, d), R, trained_pf) for R in (2, 4, 8)
            ]
        cases.append(("trained-like 1024x1024", trained_like(1024, 1024), 8, hier))
    for name, W, R, methods in cases:
        run_case(name, W, R, rows, pf, methods, {}, log)
    if not args.no_mlp and not args.quick:
        W = trained_mlp_layer(log)
        mlp_pf = hier if args.pyfaust_mlp else []
        for R in (2, 4, 8, 16):
            name = "trained MLP layer 300x784"
            run_case(name, W, R, rows, pf, mlp_pf, {}, log, block=16, refs=MLP_REFERENCE)

    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print_table(rows)
    return 0


def print_table(rows: list[dict], ratio_column: bool = True) -> None:
    head = (
        f"| {'case':<25} | {'RCG':>4} | {'method':<59} | {'rel. error':>10} | "
        f"{'achieved RCG':>12} | {'time (s)':>9} |"
    )
    if ratio_column:
        head += f" {'pyfaust time / ours':>19} |"
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    ours_time = {}
    for r in rows:
        if r["method"].startswith("faustgen ("):
            ours_time.setdefault((r["case"], r["target_rcg"]), r["time"])
    for r in rows:
        t = "" if r["time"] is None else f"{r['time']:.3f}"
        ratio = ""
        if r["method"].startswith("pyfaust"):
            ratio = f"{r['time'] / ours_time[(r['case'], r['target_rcg'])]:.1f}x"
        rcg = "" if r["rcg"] is None else f"{r['rcg']:.3f}"
        line = (
            f"| {r['case']:<25} | {r['target_rcg']:>4g} | {r['method']:<59} | "
            f"{r['error']:>10.4g} | {rcg:>12} | {t:>9} |"
        )
        print(line + (f" {ratio:>19} |" if ratio_column else ""))


if __name__ == "__main__":
    raise SystemExit(main())
