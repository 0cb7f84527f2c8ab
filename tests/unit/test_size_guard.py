"""The constant budget: folded constants are counted from their shapes before they exist, so a
few kilobytes of ONNX cannot take the machine down; real networks are not refused."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper as nh

from faustgen.cli import main
from faustgen.frontend import import_model
from faustgen.frontend.budget import ConstBudget
from faustgen.ops import REGISTRY


def _weights_from(nodes, inits, w_name="W", n_in=8, n_out=8, batch="N") -> onnx.ModelProto:
    """x (batch, n_in) @ W + 0, with W built by `nodes` from `inits`."""
    g = h.make_graph(
        [*nodes, h.make_node("MatMul", ["x", w_name], ["y"])],
        "g",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, [batch, n_in])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, [batch, n_out])],
        inits,
    )
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def _const_of_shape(shape, value=0.5):
    return (
        [
            h.make_node(
                "ConstantOfShape",
                ["shape"],
                ["W"],
                value=h.make_tensor("v", TensorProto.FLOAT, [1], [value]),
            )
        ],
        [nh.from_array(np.array(shape, np.int64), "shape")],
    )


def test_tiny_file_asking_for_terabytes_is_refused_before_allocation(tmp_path, capsys):
    nodes, inits = _const_of_shape([1_000_000, 1_000_000])
    m = _weights_from(nodes, inits, n_in=1_000_000, n_out=1_000_000)
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    assert path.stat().st_size < 1000
    code = main(["build", str(path), "-o", str(tmp_path / "out"), "--no-compile"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "ConstantOfShape" in err and "1000000000002 values" in err and "available" in err
    assert not (tmp_path / "out").exists()


def test_expand_and_range_are_counted_before_they_are_built():
    budget = ConstBudget("m", max_params=10_000, available=1 << 40)
    expand = [
        h.make_node("Expand", ["row", "shape"], ["W"]),
    ]
    inits = [
        nh.from_array(np.ones((1, 8), np.float32), "row"),
        nh.from_array(np.array([100_000, 8], np.int64), "shape"),
    ]
    m = _weights_from(expand, inits, n_in=100_000)
    with pytest.raises(Exception, match=r"node .* \(Expand\) brings .* above the --max-params"):
        import_model(m, source="m", max_params=budget.max_params)
    rng = [
        h.make_node("Range", ["a", "b", "c"], ["r"]),
        h.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
        h.make_node("Reshape", ["rf", "s"], ["W"]),
    ]
    inits = [
        nh.from_array(np.array(0, np.int64), "a"),
        nh.from_array(np.array(1 << 40, np.int64), "b"),
        nh.from_array(np.array(1, np.int64), "c"),
        nh.from_array(np.array([8, -1], np.int64), "s"),
    ]
    with pytest.raises(
        Exception, match=r"\(Range\) brings the model's constants to 10995116277[0-9][0-9] values"
    ):
        import_model(_weights_from(rng, inits), source="m")


def test_max_params_counts_folded_constants(tmp_path, capsys):
    nodes, inits = _const_of_shape([64, 64])
    m = _weights_from(nodes, inits, n_in=64, n_out=64)
    onnx.save(m, tmp_path / "m.onnx")
    code = main(
        ["build", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o"), "--max-params", "1000"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "4098 weights" in err and "--max-params limit of 1000" in err


def test_real_network_sizes_are_not_refused_and_stay_views():
    """A 67 M-weight layer (above the old fixed 50 M cap) imports; ConstantOfShape stays a
    broadcast view, so the import itself allocates nothing of that size."""
    nodes, inits = _const_of_shape([8192, 8192])
    g = import_model(_weights_from(nodes, inits, n_in=8192, n_out=8192), source="m")
    w = g.tensors["W"].value
    assert w.shape == (8192, 8192) and w.base is not None and w.strides == (0, 0)


def test_batch_probe_reuses_folded_constants(monkeypatch):
    """The batch axis is proved by importing at batch 1 and 3: constants are folded once."""
    op = REGISTRY["ConstantOfShape"]
    calls = []
    original = type(op).compute

    def counting(self, node, ins):
        calls.append(node.name)
        return original(self, node, ins)

    monkeypatch.setattr(type(op), "compute", counting)
    nodes, inits = _const_of_shape([8, 8])
    g = import_model(_weights_from(nodes, inits), source="m")
    assert g.batch_symbolic and len(calls) == 1


def test_checker_copy_of_a_big_model_holds_no_weights():
    """Big models are checked on a copy whose initializers hold one element each: the
    checker still sees every node (and still rejects a bad one), not the weights' bytes."""
    from faustgen.frontend.onnx_model import checkable as _checkable

    w = nh.from_array(np.ones((256, 256), np.float32), "W")
    m = _weights_from([], [w], n_in=256, n_out=256)
    stub = _checkable(m, [0], stub=True)
    onnx.checker.check_model(stub)
    assert stub.ByteSize() < 1000 < m.ByteSize() and len(m.graph.initializer[0].raw_data) == 1 << 18
    m.graph.node[0].attribute.append(h.make_attribute("bogus", 1))
    with pytest.raises(onnx.checker.ValidationError, match="bogus"):
        onnx.checker.check_model(_checkable(m, [0], stub=True))
