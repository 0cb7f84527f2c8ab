"""Unit tests of the passes one at a time: canonicalize, fuse and the cost model.

Each rewrite is checked for its structure (what the next stages rely on) and, through
the numpy interpreter, for leaving the model's outputs unchanged."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import scipy.sparse as sps
from onnx import TensorProto, helper, numpy_helper

from faustgen.frontend.onnx_import import import_model
from faustgen.layout.factor import Factor
from faustgen.passes import optimize
from faustgen.passes.canonicalize import canonicalize_linear, remove_identities
from faustgen.passes.cleanup import eliminate_dead_nodes, fold_constants
from faustgen.passes.costmodel import DEFAULT_COSTS, CostModel
from faustgen.passes.fuse import fold_batchnorm, fuse_activation, fuse_bias
from faustgen.tune.interpret import run_graph

RNG = np.random.default_rng(0)


def _model(nodes, x_shape, y_shape, inits) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _same_outputs(before, after, x):
    a = run_graph(before, x)[before.outputs[0]]
    b = run_graph(after, x)[after.outputs[0]]
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def _ops(graph) -> list[str]:
    return [n.op for n in graph.nodes]


def test_remove_identities_drops_identity_and_dropout():
    m = _model(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("Identity", ["r"], ["a"]),
            helper.make_node("Dropout", ["a"], ["b"]),
            helper.make_node("Sigmoid", ["b"], ["y"]),
        ],
        [1, 8],
        [1, 8],
        {},
    )
    g = import_model(m)
    out = remove_identities(g)
    assert _ops(out) == ["Relu", "Sigmoid"]
    assert out.nodes[1].inputs == ["r"]
    _same_outputs(g, out, RNG.standard_normal((1, 8)).astype(np.float32))


@pytest.mark.parametrize("trans_b", [0, 1])
def test_canonicalize_gemm_into_dense(trans_b):
    w = RNG.standard_normal((6, 5) if trans_b else (5, 6))
    c = RNG.standard_normal(6)
    m = _model(
        [helper.make_node("Gemm", ["x", "w", "c"], ["y"], alpha=0.5, beta=2.0, transB=trans_b)],
        [3, 5],
        [3, 6],
        {"w": w, "c": c},
    )
    g = fold_constants(import_model(m))
    out = canonicalize_linear(g)
    assert "Gemm" not in _ops(out)
    dense = next(n for n in out.nodes if n.op == "Dense")
    assert out.tensors[dense.inputs[1]].shape == (5, 6)  # K x N, whatever transB was
    _same_outputs(g, out, RNG.standard_normal((3, 5)).astype(np.float32))


def test_canonicalize_matmul_with_constant_weight():
    w = RNG.standard_normal((4, 7))
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [2, 3, 4], [2, 3, 7], {"w": w})
    g = import_model(m)
    out = canonicalize_linear(g)
    assert _ops(out) == ["Dense"]
    _same_outputs(g, out, RNG.standard_normal((2, 3, 4)).astype(np.float32))


def _conv_bn_relu():
    c, k = 3, 4
    inits = {
        "w": RNG.standard_normal((k, c, 3, 3)),
        "b": RNG.standard_normal(k),
        "gamma": RNG.random(k) + 0.5,
        "beta": RNG.standard_normal(k),
        "mean": RNG.standard_normal(k),
        "var": RNG.random(k) + 0.5,
        "shift": RNG.standard_normal((1, k, 1, 1)),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["n"]),
        helper.make_node("Add", ["n", "shift"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    return import_model(_model(nodes, [1, c, 6, 6], [1, k, 6, 6], inits))


def test_fold_batchnorm_into_conv():
    g = _conv_bn_relu()
    out = fold_batchnorm(g)
    assert "BatchNormalization" not in _ops(out)
    conv = next(n for n in out.nodes if n.op == "Conv")
    assert any("BatchNormalization" in f for f in conv.attrs["fused"])
    _same_outputs(g, out, RNG.standard_normal((1, 3, 6, 6)).astype(np.float32))


def test_fuse_bias_and_activation_into_the_epilogue():
    g = fold_batchnorm(_conv_bn_relu())
    biased = fuse_bias(g)
    assert "Add" not in _ops(biased)
    fused = fuse_activation(biased)
    assert _ops(fused) == ["Conv"]
    conv = fused.nodes[0]
    assert conv.attrs["act"] == ("FG_ACT_RELU", 0.0, 0.0)
    assert [f.split()[0] for f in conv.attrs["fused"]] == ["BatchNormalization", "Add", "Relu"]
    _same_outputs(g, fused, RNG.standard_normal((1, 3, 6, 6)).astype(np.float32))


def test_activation_with_two_readers_is_not_fused():
    w = RNG.standard_normal((4, 4))
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Add", ["a", "r"], ["y"]),  # reads the pre-activation value too
    ]
    g = canonicalize_linear(import_model(_model(nodes, [1, 4], [1, 4], {"w": w})))
    out = fuse_activation(g)
    assert "Relu" in _ops(out)
    assert next(n for n in out.nodes if n.op == "Dense").attrs.get("act") is None


def test_silu_is_fused_into_the_conv():
    w = RNG.standard_normal((4, 3, 3, 3))
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c"], ["s"]),
        helper.make_node("Mul", ["s", "c"], ["y"]),  # either operand order
    ]
    g = import_model(_model(nodes, [1, 3, 6, 6], [1, 4, 6, 6], {"w": w}))
    fused = fuse_activation(g)
    assert _ops(fused) == ["Conv"]
    assert fused.nodes[0].attrs["act"] == ("FG_ACT_SILU", 0.0, 0.0)
    _same_outputs(g, fused, RNG.standard_normal((1, 3, 6, 6)).astype(np.float32))


def test_sigmoid_gate_of_another_tensor_is_not_silu():
    w = RNG.standard_normal((4, 4))
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"]),
        helper.make_node("Sigmoid", ["a"], ["s"]),
        helper.make_node("Mul", ["x", "s"], ["y"]),  # gates x, not a
    ]
    g = canonicalize_linear(import_model(_model(nodes, [1, 4], [1, 4], {"w": w})))
    out = fuse_activation(g)
    assert _ops(out) == ["Dense", "Sigmoid", "Mul"]


def test_pipeline_leaves_no_dead_nodes():
    g = optimize(_conv_bn_relu())
    assert [n.name for n in eliminate_dead_nodes(g).nodes] == [n.name for n in g.nodes]


# ---------------------------------------------------------------- cost model


def _sparse(m, n, per_row, seed=0) -> sps.csr_matrix:
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(m), per_row)
    cols = np.concatenate([rng.choice(n, per_row, replace=False) for _ in range(m)])
    mat = sps.csr_matrix(
        (rng.standard_normal(len(rows)).astype(np.float32), (rows, cols)), shape=(m, n)
    )
    mat.sort_indices()
    return mat


def test_cost_model_without_budget_takes_the_fastest_storage():
    cm = CostModel()
    for mat in (
        sps.csr_matrix(RNG.standard_normal((64, 64)).astype(np.float32)),
        _sparse(64, 64, 3),
    ):
        for mode in ("matvec", "spmm"):
            (f,) = cm.choose_storages([mat], mode, 8)
            fastest = min(cm.factor_time(o, mode, 8) for o in cm.options(mat, mode))
            assert cm.factor_time(f, mode, 8) == fastest


def test_cost_model_keeps_a_very_sparse_factor_sparse():
    cm = CostModel()
    (s,) = cm.choose_storages([_sparse(256, 256, 2)], "matvec", 1)
    assert s.storage != "dense"
    assert cm.factor_time(s, "matvec", 1) < cm.dense_matvec(256, 256)


def test_cost_model_respects_the_budget():
    mats = [_sparse(64, 64, 4, seed=s) for s in range(2)]
    budget = sum(m.nnz for m in mats)
    chosen = CostModel().choose_storages(mats, "matvec", 1, budget)
    assert sum(f.stored_entries() for f in chosen) <= budget


def test_cost_model_bytes_per_storage():
    mat = _sparse(32, 40, 3)
    m, n = mat.shape
    assert CostModel.factor_bytes(Factor(mat, "dense")) == 4 * m * n
    assert CostModel.factor_bytes(Factor(mat, "csr")) == (4 + 2) * mat.nnz + 4 * (m + 1)
    assert CostModel.factor_bytes(Factor(mat, "ell")) == (4 + 2) * m * 3


def test_target_costs_override_the_defaults():
    cm = CostModel.from_target({"dense_mac": 1.0})
    assert cm.costs["dense_mac"] == 1.0
    assert cm.costs["csr_nnz"] == DEFAULT_COSTS["csr_nnz"]
    assert cm.dense_matvec(2, 3, 4) == DEFAULT_COSTS["call"] + 24.0
