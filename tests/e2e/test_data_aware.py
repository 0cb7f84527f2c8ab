"""Data-aware builds (`--calib`): a whole-model parameter budget, layers fitted to their
calibration activations, and the C equal to the numpy product of its factors."""

from __future__ import annotations

import numpy as np
import pytest

from faustgen.backend import CompiledModel
from faustgen.cli import main
from faustgen.compiler import BuildOptions, build_bundle
from faustgen.errors import FaustgenError
from faustgen.tune.interpret import run_batch

torch = pytest.importorskip("torch")

from faustgen import zoo  # noqa: E402


def _smooth_images(n, seed, size=28):
    """Spatially correlated inputs (as images are): what data-aware fitting exploits."""
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((n, 1, 7, 7))
    x = np.kron(coarse, np.ones((1, 1, size // 7, size // 7)))
    return (x + 0.05 * rng.standard_normal(x.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    d = tmp_path_factory.mktemp("lenet_data")
    model = zoo.lenet5(seed=3)
    zoo.randomize_batchnorm(model)
    return zoo.export(model, np.zeros((1, 1, 28, 28), np.float32), d / "lenet.onnx")


def _rel(y, ref):
    return float(np.linalg.norm(y - ref) / np.linalg.norm(ref))


def test_whole_model_budget_and_output_fit(lenet, tmp_path, factorize_regardless):
    calib, held = _smooth_images(300, 0), _smooth_images(100, 1)
    dense = build_bundle(lenet, tmp_path / "d", BuildOptions(dense=True))
    # RCG 5: at 4 the split may keep LeNet's one eligible conv dense on merit (its error
    # sum ties with the conv at RCG 2 to a fraction of a percent); 5 needs every layer.
    free = build_bundle(lenet, tmp_path / "f", BuildOptions(dense=False, rcg=5, convs=True))
    res = build_bundle(
        lenet, tmp_path / "a", BuildOptions(dense=False, rcg=5, convs=True, calib=calib)
    )
    totals = res.report["totals"]
    assert totals["rcg"] >= 5.0  # the whole model, small layers included, meets the target
    # ... and spends it: what a layer kept dense or fitted under its plan leaves goes to the
    # layers fitted after it.
    assert totals["rcg"] < 5.25
    assert free.report["totals"]["rcg"] < 5.0  # (per-layer RCG 5 leaves small layers dense)
    kinds = {n.op for n in res.graph.nodes}
    assert "FactorizedConv" in kinds and "FactorizedDense" in kinds
    ref = CompiledModel(dense.out_dir).predict(held)
    y = CompiledModel(res.out_dir).predict(held)
    y_free = CompiledModel(free.out_dir).predict(held)
    # Fewer parameters than the data-free build and a smaller error on unseen inputs.
    assert _rel(y, ref) < _rel(y_free, ref)
    # The C computes exactly the graph it was given (factors, refitted biases and weights).
    graph_out = run_batch(res.graph, held[:20])[res.graph.outputs[0]].reshape(20, -1)
    assert _rel(y[:20], graph_out) < 1e-5
    split = res.report["compression"]["data_aware"]["layer_rcg"]
    assert any(r > 1 for r in split.values())


def test_max_accuracy_drop_and_label_errors(lenet, tmp_path):
    calib = _smooth_images(120, 2)
    dense = run_batch(build_bundle(lenet, tmp_path / "d", BuildOptions()).graph, calib)
    labels = np.argmax(dense["y"].reshape(len(calib), -1), axis=1).astype(np.int64)
    res = build_bundle(
        lenet,
        tmp_path / "a",
        BuildOptions(dense=False, convs=True, calib=calib, labels=labels, max_accuracy_drop=5.0),
    )
    assert res.report["totals"]["rcg"] > 1.0
    with pytest.raises(FaustgenError, match="--labels"):
        build_bundle(
            lenet, tmp_path / "b", BuildOptions(dense=False, calib=calib, labels=labels[:5])
        )
    with pytest.raises(FaustgenError, match="needs --labels"):
        build_bundle(lenet, tmp_path / "c", BuildOptions(dense=False, max_accuracy_drop=1.0))


def test_cli_labels_need_calib(lenet, tmp_path, capsys):
    y = tmp_path / "y.npy"
    np.save(y, np.zeros(4, np.int64))
    assert main(["build", str(lenet), "-o", str(tmp_path / "o"), "--labels", str(y)]) == 2
    assert "--labels needs" in capsys.readouterr().err


def test_finetune_torch_form_of_factorized_convs(tmp_path, factorize_regardless):
    """The torch form fine-tuning trains equals the numpy reference for factorized convs,
    grouped ones included (a reshape of the factor chain once crashed there)."""
    from faustgen.tune import finetune as ft

    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(4, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, groups=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 6 * 6, 10),
    ).eval()
    x = np.random.default_rng(0).standard_normal((6, 4, 8, 8)).astype(np.float32)
    path = zoo.export(model, x[:1], tmp_path / "g.onnx")
    opts = BuildOptions(dense=False, rcg=3, convs=True, min_size=256, compile=False)
    graph = build_bundle(path, tmp_path / "f", opts).graph
    assert sum(n.op == "FactorizedConv" for n in graph.nodes) == 2
    got = ft.TorchGraph(graph)(torch.from_numpy(x))[0].detach().numpy()
    ref = run_batch(graph, x)[graph.outputs[0]].reshape(got.shape)
    assert _rel(got, ref) < 1e-5
    dense = build_bundle(path, tmp_path / "d", BuildOptions(compile=False)).graph
    labels = np.argmax(run_batch(dense, x)[dense.outputs[0]].reshape(6, -1), axis=1)
    info = ft.finetune(dense, graph, x, 3, batch=2, labels=labels)
    assert info["loss"][-1] < info["loss"][0]


def test_pruning_baseline_meets_the_budget_below_the_speed_floor(tmp_path):
    # At RCG 6 a CSR layer is slower than dense by the cost model (CSR pays above ~9.5):
    # the factors' split would floor it there, but the experiment compares the pruning
    # baseline at equal parameters, so it must spend exactly the budget, fast or not.
    model = zoo.mlp((784, 128, 10), seed=1)
    path = zoo.export(model, np.zeros((1, 1, 28, 28), np.float32), tmp_path / "m.onnx")
    opts = BuildOptions(
        dense=False, rcg=6, calib=_smooth_images(200, 0), method="prune", unstructured=True
    )
    res = build_bundle(path, tmp_path / "p", opts)
    assert 6.0 <= res.report["totals"]["rcg"] < 6.2
    layer = next(n for n in res.graph.nodes if n.op == "FactorizedDense")
    assert layer.attrs["factorization"]["est_speedup"] < 1.0  # slower, and still kept
