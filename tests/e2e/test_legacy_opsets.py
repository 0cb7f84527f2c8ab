"""Opset-6 models as old exporters wrote them import unedited: Gemm/Add `broadcast`,
BatchNormalization `is_test`/`spatial`, per-channel PRelu slopes, initializers listed
as graph inputs. onnxruntime no longer runs some of these (BatchNormalization-6),
so the reference is PyTorch's functional ops."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper as nh

from faustgen.tune.reference import compare

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _legacy_model(rng):
    w = {
        "W": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "s": rng.uniform(0.5, 1.5, 4).astype(np.float32),
        "b": rng.uniform(-0.5, 0.5, 4).astype(np.float32),
        "m": rng.uniform(-0.5, 0.5, 4).astype(np.float32),
        "v": rng.uniform(0.5, 1.5, 4).astype(np.float32),
        "slope": rng.uniform(0, 0.3, 4).astype(np.float32),
        "bias": rng.standard_normal(4).astype(np.float32),
        "G": rng.standard_normal((5, 64)).astype(np.float32),
        "gc": rng.standard_normal(5).astype(np.float32),
    }
    nodes = [
        h.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        h.make_node(
            "BatchNormalization",
            ["c", "s", "b", "m", "v"],
            ["bn"],
            is_test=1,
            spatial=1,
            epsilon=1e-3,
        ),
        h.make_node("PRelu", ["bn", "slope"], ["p"]),
        h.make_node("Add", ["p", "bias"], ["a"], broadcast=1, axis=1),
        h.make_node("Flatten", ["a"], ["f"]),
        h.make_node("Gemm", ["f", "G", "gc"], ["g"], broadcast=1, transB=1),
        h.make_node("Softmax", ["g"], ["y"]),
    ]
    inits = [nh.from_array(v, k) for k, v in w.items()]
    inputs = [h.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])]
    inputs += [h.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in w.items()]
    graph = h.make_graph(
        nodes, "legacy", inputs, [h.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 6)])
    model.ir_version = 3
    onnx.checker.check_model(model)
    return model, w


def _torch_reference(x, w):
    t = {k: torch.from_numpy(v) for k, v in w.items()}
    y = F.conv2d(torch.from_numpy(x), t["W"], padding=1)
    y = F.batch_norm(y, t["m"], t["v"], t["s"], t["b"], training=False, eps=1e-3)
    y = F.prelu(y, t["slope"])
    y = y + t["bias"].reshape(1, 4, 1, 1)
    y = y.flatten(1) @ t["G"].T + t["gc"]
    return torch.softmax(y, dim=1).numpy()


def test_opset6_model_imports_unedited(tmp_path, quick_build):
    rng = np.random.default_rng(0)
    model, w = _legacy_model(rng)
    path = tmp_path / "legacy6.onnx"
    onnx.save(model, path)
    x = rng.standard_normal((3, 3, 4, 4)).astype(np.float32)
    y = quick_build(path).predict(x)
    assert compare(y, _torch_reference(x, w))["max_rel"] < 1e-5
