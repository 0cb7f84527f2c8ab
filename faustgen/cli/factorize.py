"""``faustgen factorize W.npy -o F.npz``: the sparse factorization engine on one matrix."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from faustgen.errors import FaustgenError
from faustgen.factorize import DEFAULT_RCG, FactorizationError, factorize


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``factorize`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "factorize",
        help="approximate a matrix (.npy) by a product of sparse factors (.npz)",
        description=(
            "Approximate a dense 2-D matrix by scale * S_0 @ S_1 @ ... with sparse factors, "
            "meeting a compression (--rcg) or accuracy (--max-error) target."
        ),
    )
    p.add_argument("matrix", help="input matrix, a 2-D .npy file")
    p.add_argument("-o", "--out", required=True, help="output .npz (written atomically)")
    target = p.add_mutually_exclusive_group()
    target.add_argument(
        "--rcg",
        type=float,
        help=f"required compression: dense size / total nonzeros (default {DEFAULT_RCG:g})",
    )
    target.add_argument(
        "--max-error", type=float, help="largest acceptable relative Frobenius error"
    )
    p.add_argument("--factors", type=int, help="number of factors (default: chosen)")
    p.add_argument(
        "--method",
        default="auto",
        choices=["auto", "palm4msa", "hierarchical", "butterfly"],
        help="algorithm (default auto: try the sensible ones, keep the best)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _load(path_text: str) -> np.ndarray:
    path = Path(path_text)
    if path.suffix.lower() != ".npy":
        raise FaustgenError(f"The input {path} is not a .npy file.")
    if not path.is_file():
        raise FaustgenError(f"The input file {path} does not exist.")
    try:
        W = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise FaustgenError(f"Cannot read {path} as a .npy array: {exc}.") from exc
    if W.ndim != 2:
        raise FaustgenError(f"The input {path} must be a 2-D matrix, not {W.ndim}-D.")
    if W.size == 0:
        raise FaustgenError(f"The input {path} is an empty matrix.")
    if not np.issubdtype(W.dtype, np.floating) and not np.issubdtype(W.dtype, np.integer):
        raise FaustgenError(f"The input {path} must hold real numbers, not {W.dtype}.")
    if not np.all(np.isfinite(W)):
        raise FaustgenError(f"The input {path} contains NaN or infinite values.")
    return W.astype(np.float64)


def _progress_bar(enabled: bool) -> tuple[Any, Any]:
    if not enabled:
        return None, None
    bar = tqdm(total=1, file=sys.stderr, leave=False, unit="it", dynamic_ncols=True)

    def update(done: int, total: int, message: str) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = min(done, total)
        bar.set_description(message, refresh=False)
        bar.refresh()

    return bar, update


def run(args: argparse.Namespace) -> int:
    """Run the subcommand; bad input raises :class:`FaustgenError` (exit code 2 upstream)."""
    out = Path(args.out)
    if out.suffix.lower() != ".npz":
        raise FaustgenError(f"The output {out} must have the .npz extension.")
    if not out.parent.exists():
        raise FaustgenError(f"The output directory {out.parent} does not exist.")
    W = _load(args.matrix)
    rcg = args.rcg
    if rcg is None and args.max_error is None:
        rcg = DEFAULT_RCG
    bar, update = _progress_bar(not getattr(args, "no_progress", False))
    t0 = time.perf_counter()
    try:
        F = factorize(
            W,
            rcg=rcg,
            max_error=args.max_error,
            factors=args.factors,
            method=args.method,
            seed=args.seed,
            progress=update,
        )
    except FactorizationError as exc:
        raise FaustgenError(str(exc)) from exc
    else:
        if update is not None:
            update(bar.total, bar.total, "done")
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - t0
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".npz", dir=out.parent)
    os.close(fd)
    try:
        F.save(tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    err = F.relative_error(W)
    print(
        f"factorized {W.shape[0]}x{W.shape[1]} into {F.n_factors} factor(s) "
        f"[{F.info.get('chosen', args.method)}]: RCG {F.rcg:.3f}, relative error {err:.4g}, "
        f"time {elapsed:.2f} s -> {out}"
    )
    return 0
