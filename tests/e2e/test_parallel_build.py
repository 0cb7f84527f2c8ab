"""`faustgen build` factorizes its layers in parallel (--jobs), on Ray (--ray) and from the
cache: the bundle is byte-identical whichever way the layers were factorized."""

from __future__ import annotations

import numpy as np
import pytest

from faustgen.cli import main
from faustgen.compiler import BuildOptions, build_bundle
from faustgen.factorize import jobs as jobs_module

torch = pytest.importorskip("torch")

from faustgen import zoo  # noqa: E402


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    d = tmp_path_factory.mktemp("pmlp")
    torch.manual_seed(0)
    model = zoo.mlp((784, 96, 64, 10))
    return zoo.export(model, np.zeros((1, 1, 28, 28), np.float32), d / "mlp.onnx")


def _files(out) -> dict[str, bytes]:
    # report.json records the command line and timings; everything else must match.
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.name != "report.json"}


def _build(path, out, **kw):
    opts = BuildOptions(dense=False, rcg=4, compile=False, **kw)
    return build_bundle(path, out, opts)


@pytest.fixture
def always_parallel(monkeypatch):
    # Small models normally run in-process; make these ones use the worker processes.
    monkeypatch.setattr(jobs_module, "PARALLEL_ENTRIES", 0)


@pytest.mark.usefixtures("always_parallel")
def test_any_number_of_jobs_gives_a_byte_identical_bundle(mlp, tmp_path) -> None:
    one = _build(mlp, tmp_path / "j1", jobs=1, cache=False)
    two = _build(mlp, tmp_path / "j2", jobs=2, cache=False)
    assert [n.op for n in one.graph.nodes].count("FactorizedDense") == 2
    assert _files(one.out_dir) == _files(two.out_dir)


def test_a_rebuild_for_another_target_takes_every_layer_from_the_cache(
    mlp, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("FAUSTGEN_CACHE", str(tmp_path / "cache"))
    first = _build(mlp, tmp_path / "a")
    assert len(list((tmp_path / "cache" / "factorize").glob("*.npz"))) == 2

    def refactorized(job):
        raise AssertionError(f"{job.name} was factorized again")

    monkeypatch.setattr(jobs_module, "run_job", refactorized)
    again = _build(mlp, tmp_path / "b", target="c99")
    a = {n.name: n.attrs.get("factors") for n in first.graph.nodes}
    b = {n.name: n.attrs.get("factors") for n in again.graph.nodes}
    assert sum(f is not None for f in a.values()) == 2
    for name, fa in a.items():
        if fa is None:
            continue
        for x, y in zip(fa, b[name], strict=True):
            assert (x.matrix != y.matrix).nnz == 0 and x.storage == y.storage


def test_cli_jobs_and_ray_flags(mlp, tmp_path, capsys) -> None:
    assert main(["build", str(mlp), "-o", str(tmp_path / "x"), "--jobs", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("faustgen: error:") and "--jobs" in err[0]
    out = tmp_path / "y"
    assert main(["build", str(mlp), "-o", str(out), "--jobs", "2", "--no-cache", "--rcg", "4"]) == 0
    assert (out / "report.json").is_file()
