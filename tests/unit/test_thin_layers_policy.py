"""Filter matrices too thin to factorize (a 3x3 depthwise filter is a 1x9 vector) stay dense
under any --rcg, and the report says why."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper as nh

from faustgen.cli.report import format_report
from faustgen.compiler import BuildOptions, build_bundle


def _model(tmp_path) -> str:
    rng = np.random.default_rng(0)
    c = 512  # 4608 depthwise weights: above the 4096 minimum, so only the thin rule keeps it
    g = h.make_graph(
        [
            h.make_node("Conv", ["x", "dw"], ["d"], group=c, pads=[1, 1, 1, 1], name="depthwise"),
            h.make_node("Conv", ["d", "pw"], ["y"], name="pointwise"),
        ],
        "g",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 6, 6])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 6, 6])],
        [
            nh.from_array(rng.standard_normal((c, 1, 3, 3)).astype(np.float32), "dw"),
            nh.from_array(rng.standard_normal((64, c, 1, 1)).astype(np.float32), "pw"),
        ],
    )
    path = tmp_path / "dw.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    return str(path)


def test_depthwise_filters_stay_dense_with_the_reason(tmp_path):
    res = build_bundle(
        _model(tmp_path), tmp_path / "out", BuildOptions(dense=False, rcg=4, compile=False)
    )
    layers = {layer["name"]: layer for layer in res.report["layers"]}
    dw = layers["depthwise"]
    assert dw["op"] == "Conv" and not dw["factorization"]["factorized"]
    assert (
        "512 filter groups is a 1x9 matrix, too thin to factorize"
        in (dw["factorization"]["reason"])
    )
    assert not dw["factorization"]["fault"]  # a policy decision, not a failure: no warning
    assert layers["pointwise"]["op"] == "FactorizedConv"  # 64x512: a real matrix
    assert "too thin to factorize" in format_report(res.report)
    assert res.messages == []
