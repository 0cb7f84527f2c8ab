"""The calibration runner: batched torch forms equal the per-sample numpy reference forms."""

from __future__ import annotations

import numpy as np
import pytest

from faustgen.compiler import BuildOptions, build_bundle
from faustgen.tune.runner import CHUNK, Runner
from tests.conftest import factorized_regardless

torch = pytest.importorskip("torch")

from faustgen import zoo  # noqa: E402


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    d = tmp_path_factory.mktemp("runner")
    x1 = np.zeros((1, 1, 28, 28), np.float32)
    lenet = zoo.lenet5(seed=1)
    zoo.randomize_batchnorm(lenet)
    out = {}
    for name, model, kw in (
        ("mlp", zoo.mlp((784, 64, 32, 10), seed=2), {}),
        ("lenet", lenet, {}),
        ("lenet-fixed", lenet, {"dynamic_batch": False}),
    ):
        path = zoo.export(model, x1, d / f"{name}.onnx", **kw)
        out[name] = build_bundle(path, d / name, BuildOptions(dense=True, compile=False)).graph
    # A factorized graph: FactorizedDense and FactorizedConv nodes, fused activations.
    path = d / "lenet.onnx"
    opts = BuildOptions(rcg=4, convs=True, min_size=100, compile=False, cache=False, jobs=1)
    with factorized_regardless():
        out["lenet-factorized"] = build_bundle(path, d / "f", opts).graph
    return out


@pytest.mark.parametrize("name", ["mlp", "lenet", "lenet-factorized"])
def test_batched_equals_per_sample(graphs, name):
    g = graphs[name]
    assert g.batch_symbolic
    if name == "lenet-factorized":
        assert {"FactorizedDense", "FactorizedConv"} <= {n.op for n in g.nodes}
    # More samples than one chunk, and a partial last chunk.
    xs = np.random.default_rng(0).standard_normal((CHUNK + 37, 1, 28, 28)).astype(np.float32)
    batched = Runner(g, xs)
    assert batched.torch is not None
    fast = batched.run(g.nodes)
    slow = Runner(g, xs, batched=False).run(g.nodes)
    assert batched.torch is not None  # nothing fell back to the numpy loop
    assert set(fast) == set(slow)
    for k, v in slow.items():
        assert fast[k].shape == v.shape, k
        assert fast[k].dtype == v.dtype, k
        assert _rel(fast[k], v) < 2e-6, k


def test_partial_runs_and_a_sample_subset(graphs):
    """What the sensitivity pass does: the nodes after one layer, on a subset of samples,
    from the stored activations."""
    g = graphs["lenet"]
    xs = np.random.default_rng(1).standard_normal((40, 1, 28, 28)).astype(np.float32)
    full = Runner(g, xs, batched=False).run(g.nodes)
    pick = np.arange(0, 40, 3)
    cut = len(g.nodes) // 2
    sub = {k: v[pick] for k, v in full.items()}
    out = Runner(g, xs[pick]).run(g.nodes[cut:], sub)
    y = g.outputs[0]
    assert _rel(out[y], full[y][pick]) < 2e-6


def test_fixed_batch_graph_runs_per_sample(graphs):
    g = graphs["lenet-fixed"]
    assert not g.batch_symbolic
    xs = np.random.default_rng(2).standard_normal((5, 1, 28, 28)).astype(np.float32)
    r = Runner(g, xs)
    assert r.torch is None
    y = r.run(g.nodes)[g.outputs[0]]
    assert y.shape == (5, *g.tensors[g.outputs[0]].shape)


@pytest.mark.parametrize("batched", [True, False])
def test_keep_drops_the_other_activations(graphs, batched):
    g = graphs["lenet-factorized"]
    xs = np.random.default_rng(3).standard_normal((6, 1, 28, 28)).astype(np.float32)
    full = Runner(g, xs, batched=batched).run(g.nodes)
    y = g.outputs[0]
    kept = Runner(g, xs, batched=batched).run(g.nodes, keep={y})
    assert set(kept) == {g.inputs[0], y}
    assert _rel(kept[y], full[y]) < 2e-6


def test_an_op_without_a_batched_form_falls_back(graphs, monkeypatch):
    from faustgen.errors import FaustgenError
    from faustgen.ops import REGISTRY

    g = graphs["lenet"]
    xs = np.random.default_rng(4).standard_normal((7, 1, 28, 28)).astype(np.float32)
    ref = Runner(g, xs, batched=False).run(g.nodes)

    def refuse(self, node, ins, t):
        raise FaustgenError("no PyTorch form")

    monkeypatch.setattr(type(REGISTRY["MaxPool"]), "compute_torch", refuse)
    r = Runner(g, xs)
    out = r.run(g.nodes)
    assert r.torch is None
    y = g.outputs[0]
    assert np.array_equal(out[y], ref[y])
