"""Factorized builds of the zoo (issue 15): the recurrent gate matrices and the vision
transformers' projections go through the factorize pass, the report lists them, and the C
equals the float64 evaluation of the factors' product."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

torch = pytest.importorskip("torch")

from faustgen import zoo  # noqa: E402
from faustgen.backend import CompiledModel  # noqa: E402
from faustgen.cli import main  # noqa: E402
from faustgen.cli.report import format_report  # noqa: E402
from faustgen.compiler import BuildOptions, build_bundle  # noqa: E402
from faustgen.tune.verify import judge_factorized  # noqa: E402


def _judged(path, res, x):
    y = CompiledModel(res.out_dir).predict(x)
    verdict = judge_factorized(str(path), res.graph, x, y)
    assert verdict.ok and verdict.decided_by == "float64", verdict.lines()
    return y


@pytest.mark.parametrize("cell, bidirectional", [("lstm", False), ("gru", True)])
def test_recurrent_gate_matrices_factorize(cell, bidirectional, tmp_path):
    model = zoo.keyword_spotter(cell, features=40, hidden=64, bidirectional=bidirectional)
    x = np.random.default_rng(0).standard_normal((3, 12, 40)).astype(np.float32)
    path = zoo.export(model, x[:1], tmp_path / "kws.onnx", dynamic_batch=False)
    res = build_bundle(path, tmp_path / "f", BuildOptions(dense=False, rcg=4))
    (node,) = [n for n in res.graph.nodes if n.op == cell.upper()]
    dirs = 2 if bidirectional else 1
    assert all(c is not None for c in node.attrs["chains"])  # every W_d and R_d
    y = _judged(path, res, x)

    report = json.loads((res.out_dir / "report.json").read_text())
    (layer,) = [lay for lay in report["layers"] if lay["op"] == cell.upper()]
    f = layer["factorization"]
    assert f["factorized"] and f["gates"] == [f"W{d}" for d in range(dirs)] + [
        f"R{d}" for d in range(dirs)
    ]
    assert f["dense_parameters"] == node.attrs["W"].size + node.attrs["R"].size
    assert 3.5 <= f["rcg"] <= 4.5
    # the layer's parameters: the stored factor entries, its biases, its constant inputs
    # (the exporter's zero initial states)
    states = sum(res.graph.tensors[i].size for i in node.inputs if i and res.graph.is_const(i))
    assert layer["parameters"] == f["stored"] + node.attrs["bias"].size + states
    text = format_report(report)
    assert "R0 " in text and "W0 " in text
    # verify compares with the dense model: it asks for the accepted error, as for any
    # factorized build, instead of failing on the factorization's error
    assert main(["verify", str(path), str(res.out_dir)]) == 2

    # the C follows the factors: the reference with one gate weight changed is far off
    w = node.attrs["R"]
    i = np.unravel_index(np.argmax(np.abs(w)), w.shape)
    w[i] = -w[i]
    y2 = CompiledModel(res.out_dir).predict(x)
    np.testing.assert_array_equal(y, y2)
    assert not judge_factorized(str(path), res.graph, x, y2).ok


def _gru_model(path, linear_before_reset: int, seed: int = 0):
    """x (1, T=6, I=24) -> Transpose -> ONNX GRU (H=32) with linear_before_reset as given;
    the torch exporter writes only linear_before_reset=1 (onnxruntime has no layout=1)."""
    rng = np.random.default_rng(seed)
    t, b, i, h = 6, 1, 24, 32
    w = (rng.standard_normal((1, 3 * h, i)) * 0.3).astype(np.float32)
    r = (rng.standard_normal((1, 3 * h, h)) * 0.3).astype(np.float32)
    bias = (rng.standard_normal((1, 6 * h)) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node(
            "GRU",
            ["xt", "W", "R", "B"],
            ["y", "y_h"],
            hidden_size=h,
            linear_before_reset=linear_before_reset,
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "gru",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [b, t, i])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [t, 1, b, h]),
            helper.make_tensor_value_info("y_h", TensorProto.FLOAT, [1, b, h]),
        ],
        [
            helper.make_tensor(n, TensorProto.FLOAT, a.shape, a.ravel())
            for n, a in (("W", w), ("R", r), ("B", bias))
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.save(model, path)
    return path, (t, i)


@pytest.mark.parametrize("linear_before_reset", [0, 1])
def test_gru_reset_gate_with_factorized_recurrence(linear_before_reset, tmp_path):
    # linear_before_reset=0 multiplies R_h by (r * h): the kernel applies the whole R chain
    path, shape = _gru_model(tmp_path / "gru.onnx", linear_before_reset)
    res = build_bundle(path, tmp_path / "f", BuildOptions(dense=False, rcg=2, min_size=0))
    (node,) = [n for n in res.graph.nodes if n.op == "GRU"]
    assert all(c is not None for c in node.attrs["chains"])
    x = np.random.default_rng(1).standard_normal((3, *shape)).astype(np.float32)
    _judged(path, res, x)


def test_vision_transformer_factorized(tmp_path):
    model = zoo.vision_transformer("vit_tiny_patch16_224", img_size=32, depth=2)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    path = zoo.export(model, x[:1], tmp_path / "vit.onnx", dynamic_batch=False)
    res = build_bundle(path, tmp_path / "f", BuildOptions(dense=False, rcg=4))
    # qkv, attention projection, MLP fc1 / fc2 of both blocks
    names = [n.name for n in res.graph.nodes if n.op == "FactorizedDense"]
    for part in ("attn/qkv", "attn/proj", "mlp/fc1", "mlp/fc2"):
        assert sum(part in n for n in names) == 2, names
    _judged(path, res, x)
