"""Many factorizations at once: worker processes, Ray, and the cache give the same factors."""

from __future__ import annotations

import numpy as np
import pytest

from faustgen.factorize.jobs import LayerJob, run_jobs


def _jobs() -> list[LayerJob]:
    rng = np.random.default_rng(5)
    return [
        LayerJob("a", rng.standard_normal((48, 80)), rcg=4.0, effort=0.15),
        LayerJob("b", rng.standard_normal((96, 32)), rcg=3.0, effort=0.15),
        LayerJob("c", rng.standard_normal((64, 64)), rcg=2.0, block=16, effort=0.15),
        LayerJob("bad", rng.standard_normal((4, 4)), rcg=1e6),  # unreachable: an error
    ]


def _same(a, b) -> None:
    assert [o.name for o in a] == [o.name for o in b]
    for x, y in zip(a, b, strict=True):
        assert x.error == y.error
        if x.result is None:
            assert y.result is None
            continue
        assert x.result.scale == y.result.scale
        for f, g in zip(x.result.factors, y.result.factors, strict=True):
            assert f.shape == g.shape
            assert np.array_equal(f.indptr, g.indptr)
            assert np.array_equal(f.indices, g.indices)
            assert np.array_equal(f.data, g.data)  # bit for bit


def test_results_are_bit_identical_for_any_number_of_worker_processes() -> None:
    serial = run_jobs(_jobs(), n_jobs=1)
    parallel = run_jobs(_jobs(), n_jobs=2, parallel_entries=0)  # really in 2 processes
    _same(serial, parallel)
    assert serial[-1].result is None and "unreachable" in serial[-1].error
    assert all(o.result is not None and o.result.rcg >= 2.0 for o in serial[:-1])


def test_progress_is_reported_once_per_job() -> None:
    seen = []
    run_jobs(_jobs()[:2], n_jobs=1, progress=lambda o, done, total: seen.append((o.name, done)))
    assert sorted(seen) == [("a", 1), ("b", 2)] or sorted(seen) == [("a", 2), ("b", 1)]


def test_the_cache_answers_a_repeated_job_with_the_same_factors(tmp_path) -> None:
    first = run_jobs(_jobs(), n_jobs=1, cache_dir=tmp_path)
    assert not any(o.cached for o in first)
    entries = sorted((tmp_path / "factorize").glob("*.npz"))
    assert len(entries) == 3  # failures are not cached
    again = run_jobs(_jobs(), n_jobs=1, cache_dir=tmp_path)
    assert [o.cached for o in again] == [True, True, True, False]
    assert all(o.seconds == 0.0 for o in again[:3])
    _same(first, again)


def test_the_cache_key_follows_weights_options_and_engine_version(monkeypatch) -> None:
    from faustgen.factorize import jobs as jobs_module

    job = _jobs()[0]
    key = job.key()
    assert LayerJob("renamed", job.matrix.copy(), rcg=4.0, effort=0.15).key() == key
    changed = job.matrix.copy()
    changed[3, 7] += 1e-12
    assert LayerJob("a", changed, rcg=4.0, effort=0.15).key() != key
    assert LayerJob("a", job.matrix, rcg=4.5, effort=0.15).key() != key
    assert LayerJob("a", job.matrix, rcg=4.0, effort=0.15, seed=1).key() != key
    assert LayerJob("a", job.matrix.astype(np.float32), rcg=4.0, effort=0.15).key() != key
    monkeypatch.setattr(jobs_module, "ENGINE_VERSION", "another")
    assert job.key() != key


def test_an_interrupted_run_resumes_from_the_finished_jobs(tmp_path) -> None:
    jobs = _jobs()[:3]
    run_jobs(jobs[:2], n_jobs=1, cache_dir=tmp_path)  # "crashed" before the third job
    resumed = run_jobs(jobs, n_jobs=1, cache_dir=tmp_path)
    assert [o.cached for o in resumed] == [True, True, False]
    (next((tmp_path / "factorize").glob("*.npz"))).write_bytes(b"damaged")
    again = run_jobs(jobs, n_jobs=1, cache_dir=tmp_path)  # a damaged entry is recomputed
    assert sum(o.cached for o in again) == 2
    _same(resumed, again)


def test_ray_cluster_gives_the_local_results() -> None:
    ray = pytest.importorskip(
        "ray", reason="ray is not installed (pip install 'faustgen[cluster]')"
    )
    local = run_jobs(_jobs(), n_jobs=1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_jobs(_jobs(), ray_address="auto")
    finally:
        ray.shutdown()
    _same(local, remote)
