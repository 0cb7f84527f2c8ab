"""Models exported by torch.onnx.export (both exporters), built by faustgen and compared with
PyTorch and onnxruntime through the public Python binding."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from faustgen import compile_onnx, zoo  # noqa: E402
from faustgen.tune.reference import compare, ort_predict, ort_session  # noqa: E402

RTOL = 1e-5  # max |y - ref| relative to max |ref|: float32 rounding


def _models():
    lenet = zoo.lenet5()
    zoo.randomize_batchnorm(lenet)
    return {"mlp": zoo.mlp(), "lenet5": lenet}


MODELS = _models()


@pytest.fixture(scope="module")
def samples():
    return np.random.default_rng(1).standard_normal((8, 1, 28, 28)).astype(np.float32)


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_exported_model_matches_torch_and_onnxruntime(name, dynamo, tmp_path, samples):
    model = MODELS[name]
    path = zoo.export(model, samples[:1], tmp_path / f"{name}.onnx", dynamo=dynamo)
    compiled = compile_onnx(path, tmp_path / "out", dense=True)
    y = compiled.predict(samples)
    ref_torch = zoo.torch_predict(model, samples)
    ref_ort = ort_predict(ort_session(path), samples, compiled.layout)
    assert y.shape == ref_torch.shape == (8, 10)
    assert compare(y, ref_torch)["max_rel"] < RTOL
    assert compare(y, ref_ort)["max_rel"] < RTOL
    # One sample at a time gives the same numbers as the batch (the C is per-sample).
    np.testing.assert_array_equal(compiled.predict(samples[3:4]), y[3:4])


def test_batchnorm_kept_by_exporter_is_folded(tmp_path, samples):
    """Without exporter constant folding, BatchNormalization reaches faustgen's own fold pass."""
    model = MODELS["lenet5"]
    path = zoo.export(model, samples[:1], tmp_path / "bn.onnx", do_constant_folding=False)
    import onnx

    assert any(n.op_type == "BatchNormalization" for n in onnx.load(path).graph.node)
    compiled = compile_onnx(path, tmp_path / "out", dense=True)
    ops = [layer["op"] for layer in compiled.report["layers"]]
    assert "BatchNormalization" not in ops
    assert compare(compiled.predict(samples), zoo.torch_predict(model, samples))["max_rel"] < RTOL


def test_fixed_batch_model_runs_per_sample(tmp_path, samples):
    model = MODELS["mlp"]
    path = zoo.export(model, samples[:1], tmp_path / "fixed.onnx", dynamic_batch=False)
    compiled = compile_onnx(path, tmp_path / "out", dense=True)
    assert not compiled.batch_symbolic and compiled.input_shape == (1, 1, 28, 28)
    y = compiled.predict(samples)
    assert y.shape == (8, 10)
    assert compare(y, zoo.torch_predict(model, samples))["max_rel"] < RTOL


@pytest.mark.parametrize("opset", [9, 11, 13])
def test_older_opsets_import(opset, tmp_path, samples):
    model = MODELS["lenet5"]
    path = zoo.export(model, samples[:1], tmp_path / f"o{opset}.onnx", opset=opset)
    compiled = compile_onnx(path, tmp_path / "out", dense=True)
    assert compare(compiled.predict(samples), zoo.torch_predict(model, samples))["max_rel"] < RTOL
