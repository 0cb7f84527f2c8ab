"""Einsum (the ONNX package's cases are float64, so not in the node-case sweep) and the
comparison / Where path on activations, built to C and compared with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from faustgen.errors import FaustgenError
from faustgen.tune.reference import ort_session


def _model(nodes, x_shape, out_shape, inits=()):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _check(model, x, tmp_path, quick_build):
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    ref = ort_session(path).run(None, {"x": x})[0]
    y = quick_build(path).predict(x)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "eq, w_shape",
    [
        ("bhid,bhjd->bhij", (1, 2, 5, 4)),  # attention scores
        ("bhij,bhjd->bhid", (1, 2, 3, 4)),  # attention-weighted values (x is bhij)
        ("...ij,...jk->...ik", (1, 2, 3, 6)),
        ("bij,jk->bik", (3, 6)),
        ("bhid,bhjd", (1, 2, 5, 4)),  # implicit output: bhij
        ("bhid->bhdi", None),
    ],
)
def test_einsum_against_onnxruntime(eq, w_shape, tmp_path, quick_build):
    rng = np.random.default_rng(0)
    x_shape = (1, 2, 5, 3) if eq.startswith("bhij") else (1, 2, 5, 4)
    if eq.startswith("...") or eq.startswith("bij"):
        x_shape = (1, 2, 5, 3) if eq.startswith("...") else (2, 5, 3)
    x = rng.standard_normal(x_shape).astype(np.float32)
    inits, inputs = [], ["x"]
    if w_shape is not None:
        inits = [("w", rng.standard_normal(w_shape).astype(np.float32))]
        inputs = ["x", "w"]
    node = helper.make_node("Einsum", inputs, ["y"], equation=eq)
    terms = eq.split("->")[0].split(",")
    ref = np.einsum(eq, x, *[v for _, v in inits])
    _check(_model([node], x_shape, ref.shape, inits), x, tmp_path, quick_build)
    assert len(terms) == len(inputs)


def test_einsum_of_two_activations(tmp_path, quick_build):
    """q @ k^T with q and k both computed from the input (the attention pattern)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 6, 8)).astype(np.float32)
    wq, wk = (rng.standard_normal((8, 8)).astype(np.float32) for _ in range(2))
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("Einsum", ["q", "k"], ["y"], equation="bid,bjd->bij"),
    ]
    _check(_model(nodes, (1, 6, 8), (1, 6, 6), [("wq", wq), ("wk", wk)]), x, tmp_path, quick_build)


def test_einsum_diagonal_is_refused(tmp_path, quick_build):
    node = helper.make_node("Einsum", ["x"], ["y"], equation="ii->i")
    path = tmp_path / "m.onnx"
    onnx.save(_model([node], (4, 4), (4,)), path)
    with pytest.raises(FaustgenError, match="diagonal"):
        quick_build(path)


def test_compare_where_on_activations(tmp_path, quick_build):
    """A causal mask built from activations: where(x > 0 and not (x == 1), x, -inf) + softmax."""
    x = np.random.default_rng(2).standard_normal((1, 4, 6)).astype(np.float32)
    x[0, 0, :2] = 1.0
    zero, one = np.zeros(1, np.float32), np.ones(1, np.float32)
    ninf = np.full(1, -np.inf, np.float32)
    nodes = [
        helper.make_node("Greater", ["x", "zero"], ["pos"]),
        helper.make_node("Equal", ["x", "one"], ["eq1"]),
        helper.make_node("Not", ["eq1"], ["ne1"]),
        helper.make_node("And", ["pos", "ne1"], ["keep"]),
        helper.make_node("Xor", ["keep", "pos"], ["flip"]),
        helper.make_node("Or", ["keep", "flip"], ["any"]),
        helper.make_node("Where", ["any", "x", "ninf"], ["m"]),
        helper.make_node("Cast", ["keep"], ["kf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["m", "kf"], ["s"]),
        helper.make_node("Softmax", ["s"], ["y"], axis=-1),
    ]
    x[0, 3, :] = -1.0
    x[0, 3, 0] = 2.0  # every row keeps one entry
    for row in range(3):
        x[0, row, 5] = 0.5
    inits = [("zero", zero), ("one", one), ("ninf", ninf)]
    _check(_model(nodes, (1, 4, 6), (1, 4, 6), inits), x, tmp_path, quick_build)
