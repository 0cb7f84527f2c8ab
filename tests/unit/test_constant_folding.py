"""Sub-graphs whose inputs are all constants fold whatever their ops (onnx.reference), before
op support is checked, within the size limit."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper as nh

from faustgen.errors import FaustgenError
from faustgen.frontend import import_model
from faustgen.tune.reference import compare, ort_predict, ort_session


def _cls_token_model() -> onnx.ModelProto:
    """The pattern TorchScript writes for a ViT's cls_token.expand(B, -1, -1) at a fixed
    batch: Equal/Where on constant shapes, then Expand and a Concat with the activations.
    Mod and Einsum (no faustgen kernels either) act on constants as well."""
    token = np.random.default_rng(0).standard_normal((1, 1, 4)).astype(np.float32)
    nodes = [
        h.make_node("Constant", [], ["shape"], value=nh.from_array(np.array([1, -1, -1]))),
        h.make_node("Constant", [], ["neg1"], value=nh.from_array(np.array(-1))),
        h.make_node("Mul", ["neg1", "one"], ["m"]),
        h.make_node("Equal", ["shape", "m"], ["eq"]),
        h.make_node("ConstantOfShape", ["three"], ["ones"], value=nh.from_array(np.array([1]))),
        h.make_node("Where", ["eq", "ones", "shape"], ["target"]),
        h.make_node("Expand", ["token", "target"], ["cls"]),
        h.make_node("Mod", ["seven", "four"], ["r"]),
        h.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
        h.make_node("Einsum", ["token", "rf3"], ["scaled"], equation="abc,d->abc"),
        h.make_node("Mul", ["scaled", "rf"], ["cls2"]),
        h.make_node("Add", ["cls", "cls2"], ["cls3"]),
        h.make_node("Concat", ["cls3", "x"], ["y"], axis=1),
    ]
    inits = {
        "one": np.array(1),
        "three": np.array([3]),
        "token": token,
        "seven": np.array([7]),
        "four": np.array([4]),
        "rf3": np.array([1.0], np.float32),
    }
    g = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4])],
        [nh.from_array(v, k) for k, v in inits.items()],
    )
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def test_constant_subgraph_of_unsupported_ops_folds_and_matches_onnxruntime(quick_build, tmp_path):
    model = _cls_token_model()
    graph = import_model(model)
    assert {n.op for n in graph.nodes} <= {"Concat", "Identity"}
    path = tmp_path / "cls.onnx"
    onnx.save(model, path)
    compiled = quick_build(path)
    x = np.random.default_rng(1).standard_normal((1, 3, 4)).astype(np.float32)
    ref = ort_predict(ort_session(path), x, compiled.layout)
    assert compare(compiled.predict(x), ref)["max_abs"] == 0.0


def _tile_model(repeats: int) -> onnx.ModelProto:
    g = h.make_graph(
        [
            h.make_node("Tile", ["w", "reps"], ["big"]),
            h.make_node("ReduceSum", ["big"], ["s"], keepdims=1),
            h.make_node("Add", ["x", "s"], ["y"]),
        ],
        "g",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        [
            nh.from_array(np.ones((1, 1000), np.float32), "w"),
            nh.from_array(np.array([repeats, 1]), "reps"),
        ],
    )
    return h.make_model(g, opset_imports=[h.make_opsetid("", 12)])


def test_folding_is_bounded_before_anything_is_computed():
    """A constant Tile of 10^9 values is refused from its inferred shape, not allocated."""
    with pytest.raises(
        FaustgenError,
        match=r"\(Tile\) brings .* to 1000001002 weights, above the --max-params",
    ):
        import_model(_tile_model(10**6), max_params=50_000_000)
    graph = import_model(_tile_model(3))
    assert graph.const("s").item() == 3000.0


def test_nondeterministic_ops_are_not_folded():
    g = h.make_graph(
        [
            h.make_node("RandomNormal", [], ["r"], shape=[1, 2]),
            h.make_node("Add", ["x", "r"], ["y"]),
        ],
        "g",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
    )
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    with pytest.raises(FaustgenError, match="unsupported op 'RandomNormal'"):
        import_model(model)


def test_vit_cls_token_subgraph_no_longer_blocks_the_import(tmp_path):
    """timm's ViT exported by TorchScript: its Equal/Where constant sub-graph folds (whatever
    else the model needs is named by the error, never Equal or Where)."""
    pytest.importorskip("torch")
    from faustgen import zoo

    model = zoo.timm().create_model("vit_tiny_patch16_224", img_size=32, depth=1).eval()
    path = zoo.export(model, np.zeros((1, 3, 32, 32), np.float32), tmp_path / "vit.onnx")
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert {"Equal", "Where"} <= ops
    try:
        graph = import_model(onnx.load(path))
    except FaustgenError as e:
        assert "'Equal'" not in str(e) and "'Where'" not in str(e), e
    else:
        assert not {"Equal", "Where"} & {n.op for n in graph.nodes}
