"""Many factorizations at once: local processes or a Ray cluster, with a result cache.

A model's layers are independent factorization problems. :func:`run_jobs` runs a list of
:class:`LayerJob` on ``n_jobs`` local worker processes (or on Ray tasks, ``ray_address``),
answers the jobs it has already seen from a cache on disk, and returns one
:class:`LayerOutcome` per job, in order.

Results do not depend on where a job ran: every job runs with one BLAS thread (a BLAS that
splits a dot product over threads sums in another order) and the engine is seeded, so any
``n_jobs``, Ray, or a cache hit give the same factors bit for bit.

The cache key is a SHA-256 of the matrix (shape, dtype, bytes), the options that change the
result, and :data:`ENGINE_VERSION`; entries are ``FactorizedMatrix.save`` files written
atomically, so an interrupted build leaves only complete entries behind and the next build
resumes from them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from .policy import factorize
from .result import FactorizationError, FactorizedMatrix

__all__ = [
    "ENGINE_VERSION",
    "LayerJob",
    "LayerOutcome",
    "default_cache_dir",
    "run_job",
    "run_jobs",
]

# Part of every cache key: change it whenever the engine's results change.
ENGINE_VERSION = "2026-12-07.2"
# Below this many matrix entries in all, the jobs run in this process: starting worker
# processes (about a second each: a fresh interpreter importing numpy and scipy) would cost
# more than the factorizations of a small model.
PARALLEL_ENTRIES = 1 << 20


@dataclass
class LayerJob:
    """One factorization: the matrix and the ``factorize`` options, all plain picklable data
    (a job travels to a worker process or a Ray task as it is; arrays may be added, e.g.
    calibration activations, as long as :meth:`key` hashes them)."""

    name: str
    matrix: np.ndarray
    rcg: float | None = None
    max_error: float | None = None
    factors: int | None = None
    block: int | None = None
    seed: int = 0
    effort: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)  # more factorize keyword arguments

    def key(self) -> str:
        """Hash of everything the result depends on (the name is not part of it)."""
        h = hashlib.sha256()
        m = np.ascontiguousarray(self.matrix)
        options = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("name", "matrix", "extra")
        }
        options["extra"] = {k: _describe(v, h) for k, v in sorted(self.extra.items())}
        header = {"engine": ENGINE_VERSION, "shape": m.shape, "dtype": m.dtype.str, **options}
        h.update(json.dumps(header, sort_keys=True, default=str).encode())
        h.update(m.tobytes())
        return h.hexdigest()


def _describe(value: Any, h: Any) -> Any:
    """A JSON-able stand-in for an option; arrays go into the hash by content."""
    if isinstance(value, np.ndarray):
        a = np.ascontiguousarray(value)
        h.update(a.tobytes())
        return {"array": list(a.shape), "dtype": a.dtype.str}
    return value


@dataclass
class LayerOutcome:
    """A job's result (``result``) or the reason it failed (``error``, one sentence)."""

    name: str
    shape: tuple[int, int]
    result: FactorizedMatrix | None
    error: str | None
    seconds: float  # engine time (0 for a cache hit)
    cached: bool = False


def default_cache_dir() -> Path:
    """``$FAUSTGEN_CACHE`` (else ``~/.cache/faustgen``), the build's cache root."""
    root = os.environ.get("FAUSTGEN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "faustgen"
    )
    return Path(root)


def run_job(job: LayerJob) -> tuple[FactorizedMatrix | None, str | None, float]:
    """Factorize one job with a single BLAS thread; returns (result, error, seconds)."""
    t0 = time.perf_counter()
    with threadpool_limits(limits=1):
        try:
            res = factorize(
                job.matrix,
                rcg=job.rcg,
                max_error=job.max_error,
                factors=job.factors,
                block=job.block,
                seed=job.seed,
                effort=job.effort,
                **job.extra,
            )
        except FactorizationError as exc:
            return None, str(exc), time.perf_counter() - t0
    # The run's diagnostics hold per-candidate tuples and error histories: keep the summary.
    res.info = {k: res.info[k] for k in ("chosen", "relative_error") if k in res.info}
    return res, None, time.perf_counter() - t0


def run_jobs(
    jobs: Sequence[LayerJob],
    n_jobs: int | None = None,
    ray_address: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[LayerOutcome, int, int], None] | None = None,
    parallel_entries: int | None = None,
) -> list[LayerOutcome]:
    """Run ``jobs`` and return their outcomes in order.

    ``n_jobs`` local worker processes (default: the machine's cores; 1 runs in this process),
    or Ray tasks when ``ray_address`` is given (``"auto"``, ``"local"`` or
    ``"ray://host:port"``). ``cache_dir`` (None: no cache) answers jobs seen before.
    ``progress(outcome, done, total)`` is called as each job finishes, cache hits first.
    Jobs of fewer than ``parallel_entries`` (default :data:`PARALLEL_ENTRIES`) matrix
    entries in all run in this process. Raises :class:`FactorizationError` when Ray is
    asked for and missing or unreachable.
    """
    if parallel_entries is None:
        parallel_entries = PARALLEL_ENTRIES
    cache = Path(cache_dir) / "factorize" if cache_dir is not None else None
    outcomes: list[LayerOutcome | None] = [None] * len(jobs)
    keys = [job.key() for job in jobs] if cache is not None else [None] * len(jobs)
    done = 0

    def finish(i: int, outcome: LayerOutcome) -> None:
        nonlocal done
        outcomes[i] = outcome
        done += 1
        if progress is not None:
            progress(outcome, done, len(jobs))

    pending = []
    for i, job in enumerate(jobs):
        hit = _cache_get(cache, keys[i])
        if hit is not None:
            finish(i, LayerOutcome(job.name, job.matrix.shape, hit, None, 0.0, cached=True))
        else:
            pending.append(i)

    def record(i: int, answer: tuple) -> None:
        res, err, seconds = answer
        if res is not None:
            _cache_put(cache, keys[i], res)
        finish(i, LayerOutcome(jobs[i].name, jobs[i].matrix.shape, res, err, seconds))

    if ray_address is not None:
        _run_ray(jobs, pending, ray_address, record)
    else:
        small = sum(jobs[i].matrix.size for i in pending) < parallel_entries
        _run_local(jobs, pending, 1 if small else n_jobs or os.cpu_count() or 1, record)
    return [o for o in outcomes if o is not None]


def _run_local(jobs: Sequence[LayerJob], pending: list[int], n_jobs: int, record: Callable) -> None:
    if n_jobs <= 1 or len(pending) <= 1:
        for i in pending:
            record(i, run_job(jobs[i]))
        return
    # Largest first, so the longest job does not start last.
    order = sorted(pending, key=lambda i: -jobs[i].matrix.size)
    workers = min(n_jobs, len(order))
    # fork where there is one: spawn re-runs the caller's main script in every worker, which
    # a script calling the compiler without an ``if __name__ == "__main__"`` guard does not
    # survive. The workers only run numpy/scipy on the pickled job.
    method = "fork" if "fork" in get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=get_context(method)) as pool:
        running = {pool.submit(run_job, jobs[i]): i for i in order}
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                record(running.pop(fut), fut.result())


def _run_ray(jobs: Sequence[LayerJob], pending: list[int], address: str, record: Callable) -> None:
    try:
        import ray
    except ImportError:
        raise FactorizationError(
            "--ray needs the ray package: pip install 'faustgen[cluster]'."
        ) from None
    if not ray.is_initialized():
        try:
            ray.init(address=None if address == "local" else address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise FactorizationError(
                f"Cannot connect to the Ray cluster at {address}: {exc}"
            ) from None
    task = ray.remote(num_cpus=1)(run_job)
    order = sorted(pending, key=lambda i: -jobs[i].matrix.size)
    running = {task.remote(jobs[i]): i for i in order}
    while running:
        finished, _ = ray.wait(list(running), num_returns=1)
        for ref in finished:
            record(running.pop(ref), ray.get(ref))


def _cache_get(cache: Path | None, key: str | None) -> FactorizedMatrix | None:
    if cache is None or key is None:
        return None
    path = cache / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        return FactorizedMatrix.load(path)
    except FactorizationError:
        return None  # a damaged entry is recomputed (and overwritten)


def _cache_put(cache: Path | None, key: str | None, res: FactorizedMatrix) -> None:
    if cache is None or key is None:
        return
    try:
        cache.mkdir(parents=True, exist_ok=True)
        res.save(cache / f"{key}.npz")
    except OSError:
        pass  # a read-only or full cache costs a refactorization next time, not the build
