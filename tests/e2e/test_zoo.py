"""The model zoo (issue 15): recurrent keyword spotters, vision transformers and ConvNeXt
from torch / timm / torchvision with random weights, exported with both exporters at small
sizes, built by faustgen and compared with onnxruntime (and PyTorch)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from faustgen import compile_onnx, zoo  # noqa: E402
from faustgen.tune.reference import compare, ort_predict, ort_session  # noqa: E402

RTOL = 1e-5  # max |y - ref| relative to max |ref|


def _check(model, x, path, tmp_path, rtol=RTOL, **build):
    compiled = compile_onnx(path, tmp_path / "out", **{"dense": True, **build})
    y = compiled.predict(x)
    ref = ort_predict(ort_session(path), x, compiled.layout)
    assert compare(y, ref)["max_rel"] < rtol
    assert compare(y, zoo.torch_predict(model, x))["max_rel"] < rtol
    return compiled


@pytest.mark.parametrize(
    "cell, layers, bidirectional, dynamo",
    [
        ("lstm", 1, False, False),
        ("lstm", 1, False, True),
        ("gru", 1, False, False),
        ("gru", 1, False, True),
        ("rnn", 1, False, False),
        ("lstm", 2, True, False),
        ("gru", 2, True, False),
    ],
)
def test_keyword_spotter(cell, layers, bidirectional, dynamo, tmp_path):
    model = zoo.keyword_spotter(cell, layers=layers, bidirectional=bidirectional)
    x = np.random.default_rng(0).standard_normal((3, 12, 10)).astype(np.float32)
    # batch_first RNNs transpose the batch axis away: exported at batch 1, run per sample
    path = zoo.export(model, x[:1], tmp_path / "kws.onnx", dynamo=dynamo, dynamic_batch=False)
    compiled = _check(model, x, path, tmp_path, dense=True)
    ops = {layer["op"] for layer in compiled.report["layers"]}
    assert cell.upper() in ops  # one recurrent node (the dynamo exporter unrolls only RNN)


@pytest.mark.parametrize(
    "name, dynamo",
    [
        ("vit_tiny_patch16_224", False),
        ("vit_tiny_patch16_224", True),
        ("deit_tiny_patch16_224", False),
    ],
)
def test_vision_transformer(name, dynamo, tmp_path):
    model = zoo.vision_transformer(name, img_size=32, depth=2)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    path = zoo.export(model, x[:1], tmp_path / "vit.onnx", dynamo=dynamo, dynamic_batch=False)
    _check(model, x, path, tmp_path, dense=True)


def test_convnext(tmp_path):
    tv = zoo.torchvision_models()
    torch.manual_seed(0)
    from torchvision.models.convnext import CNBlockConfig

    cfg = [CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)]
    model = tv.ConvNeXt(cfg, num_classes=10).eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    path = zoo.export(model, x[:1], tmp_path / "convnext.onnx")
    _check(model, x, path, tmp_path, dense=True)
