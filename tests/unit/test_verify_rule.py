"""The verify rule on synthetic outputs, the float64 evaluation of ONNX models, and the
no-signal warnings."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper as nh

from faustgen.tune import verify as V


def _truth(n=(8, 10), seed=0):
    return np.random.default_rng(seed).standard_normal(n)


def _perturbed(truth, ulps, seed=1):
    """truth rounded to float32, then moved by up to `ulps` ulps of its scale."""
    ulp = float(np.spacing(np.float32(np.abs(truth).max())))
    noise = np.random.default_rng(seed).uniform(-1, 1, truth.shape) * ulps * ulp
    return (truth + noise).astype(np.float32)


def test_c_as_accurate_as_onnxruntime_passes():
    t = _truth()
    v = V.judge(["y"], [_perturbed(t, 50, 1)], [_perturbed(t, 40, 2)], [t])
    assert v.ok and v.decided_by == "float64"
    (o,) = v.outputs
    assert o.ort_error is not None and 20 < o.ulps(o.ort_error) <= 40
    assert o.bound == pytest.approx(V.K_PEER * o.ort_error + V.FLOOR_ULPS * o.ulp)


def test_c_much_worse_than_onnxruntime_fails():
    t = _truth()
    v = V.judge(["y"], [_perturbed(t, 2000, 1)], [_perturbed(t, 40, 2)], [t])
    assert not v.ok
    assert "4 x max|onnxruntime - float64|" in v.rule


def test_floor_when_onnxruntime_is_exact():
    """onnxruntime exact to float32 rounding: a few ulps of difference in the C still pass."""
    t = _truth().astype(np.float32).astype(np.float64)
    v = V.judge(["y"], [_perturbed(t, 8)], [t.astype(np.float32)], [t])
    assert v.outputs[0].ort_error == 0.0
    assert v.ok
    assert not V.judge(["y"], [_perturbed(t, 64)], [t.astype(np.float32)], [t]).ok


def test_user_tolerance_replaces_the_rule():
    t = _truth()
    c, peer = _perturbed(t, 2000, 1), _perturbed(t, 40, 2)
    v = V.judge(["y"], [c], [peer], [t], rtol=1e-3)
    assert v.ok and v.decided_by == "tolerance" and "--rtol/--atol" in v.rule
    assert not V.judge(["y"], [c], [peer], [t], rtol=1e-6).ok
    assert V.judge(["y"], [c], [peer], [t], atol=1.0).ok


def test_untrusted_float64_falls_back_to_onnxruntime():
    """A float64 result far from onnxruntime (a bug in the reference evaluator) is not used:
    the C is then compared with onnxruntime directly, and the verdict says so."""
    t = _truth()
    wrong = t + 0.5
    peer = _perturbed(t, 40, 2)
    v = V.judge(["y"], [_perturbed(t, 50, 1)], [peer], [wrong])
    assert v.decided_by == "fallback" and v.ok
    assert any("not trusted" in n for n in v.notes)
    v = V.judge(["y"], [peer + 0.01], [peer], None, why_no_truth="no evaluator")
    assert v.decided_by == "fallback" and not v.ok
    assert any("no evaluator" in n for n in v.notes)


def test_each_output_judged_on_its_own_scale():
    big, small = _truth(seed=3) * 1e3, _truth(seed=4) * 1e-3
    c = [_perturbed(big, 10, 1), _perturbed(small, 10, 2) + np.float32(1e-4)]
    peer = [_perturbed(big, 10, 3), _perturbed(small, 10, 4)]
    v = V.judge(["a", "b"], c, peer, [big, small])
    assert [o.ok for o in v.outputs] == [True, False]
    assert v.as_dict()["outputs"][1]["name"] == "b" and not v.as_dict()["ok"]


def test_signal_warnings():
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    constant = np.tile(np.arange(5.0), (4, 1))
    (w,) = V.signal_warnings(["y"], [constant], x, weight_scale=0.1)
    assert "same for every sample" in w
    (w,) = V.signal_warnings(["y"], [_truth((4, 5)) * 1e-14], x, weight_scale=0.1)
    assert "tiny" in w
    assert V.signal_warnings(["y"], [_truth((4, 5))], x, weight_scale=0.1) == []
    # identical inputs: a constant output is expected, not a warning
    assert V.signal_warnings(["y"], [constant], np.zeros((4, 3)), weight_scale=0.1) == []


def _model(nodes, inits, x_shape, y_shape, opset=17):
    g = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        [nh.from_array(v, k) for k, v in inits.items()],
    )
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])


def test_float64_session_computes_in_double_and_agrees_with_onnxruntime():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    nodes = [
        h.make_node("MatMul", ["x", "W"], ["h"]),
        h.make_node("Constant", [], ["c"], value_float=0.5),
        h.make_node("Mul", ["h", "c"], ["m"]),
        h.make_node("Cast", ["m"], ["y"], to=TensorProto.FLOAT),
    ]
    model = _model(nodes, {"W": w}, [4, 64], [4, 32])
    x = rng.standard_normal((4, 64)).astype(np.float32)
    (y64,) = V.Float64Session(model).run(None, {"x": x})
    assert y64.dtype == np.float64
    np.testing.assert_allclose(y64, 0.5 * (x.astype(np.float64) @ w.astype(np.float64)))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y32,) = sess.run(None, {"x": x})
    assert np.abs(y32 - y64).max() < 1e-5 * np.abs(y64).max()


def test_float64_session_stride_one_ceil_mode_maxpool_matches_onnxruntime():
    """googlenet's 3x3/1 ceil-mode pools: onnx.reference's own stride-1 path gets their shape
    wrong; the float64 session must give onnxruntime's result."""
    node = h.make_node(
        "MaxPool",
        ["x"],
        ["y"],
        kernel_shape=[3, 3],
        strides=[1, 1],
        pads=[1, 1, 1, 1],
        ceil_mode=1,
    )
    model = _model([node], {}, [1, 2, 8, 8], [1, 2, 8, 8])
    x = np.random.default_rng(0).standard_normal((1, 2, 8, 8)).astype(np.float32)
    (y64,) = V.Float64Session(model).run(None, {"x": x})
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y32,) = sess.run(None, {"x": x})
    np.testing.assert_array_equal(y64, y32)


def test_float64_unavailable_names_the_reason():
    model = _model([h.make_node("Relu", ["x"], ["y"])], {}, [1, 4], [1, 4])
    sub = h.make_graph([], "b", [], [h.make_tensor_value_info("x", TensorProto.FLOAT, None)])
    model.graph.node.append(h.make_node("If", ["x"], ["z"], then_branch=sub, else_branch=sub))
    with pytest.raises(V.Float64Unavailable, match="sub-graphs"):
        V.Float64Session(model)


def test_weight_scale_is_the_median_rms():
    model = _model(
        [h.make_node("Relu", ["x"], ["y"])],
        {
            "a": np.full(4, 2.0, np.float32),
            "b": np.full(9, 0.5, np.float32),
            "c": np.full(3, 1.0, np.float32),
            "one": np.ones(1, np.float32),
        },
        [1, 4],
        [1, 4],
    )
    assert V.weight_scale(model) == pytest.approx(1.0)
    assert onnx.checker.check_model(model) is None


def test_float64_interpreter_matches_onnx_reference_in_double():
    """The interpreter's float64 mode (the factorized path's truth) agrees with the ONNX
    package's evaluator on a float64 copy, far below float32 rounding."""
    from faustgen.frontend import import_model
    from faustgen.tune.interpret import run_batch

    rng = np.random.default_rng(0)
    nodes = [
        h.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c"], ["r"]),
        h.make_node("MaxPool", ["r"], ["p"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
        h.make_node("Flatten", ["p"], ["f"]),
        h.make_node("Gemm", ["f", "g"], ["z"], transB=1),
        h.make_node("Sigmoid", ["z"], ["y"]),
    ]
    inits = {
        "w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "b": rng.standard_normal(8).astype(np.float32),
        "g": rng.standard_normal((5, 8 * 4 * 4)).astype(np.float32) * 0.1,
    }
    model = _model(nodes, inits, ["N", 3, 8, 8], ["N", 5])
    x = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    (ref,) = V.Float64Session(model).run(None, {"x": x})
    got = run_batch(import_model(model), x, float64=True)["y"].reshape(ref.shape)
    assert got.dtype == np.float64
    assert np.abs(got - ref).max() < 1e-12
    f32 = run_batch(import_model(model), x)["y"].reshape(ref.shape)
    assert f32.dtype == np.float32 and np.abs(f32 - ref).max() > 1e-12
