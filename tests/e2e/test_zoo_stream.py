"""Streaming recurrent models (issue 15): `faustgen build --stream` adds PREFIX_step(x_t, y_t)
/ PREFIX_reset(); fed a sequence step by step, y_t equals the whole-sequence output at step
t (PyTorch on the sequence x_0 ... x_t, and the C's own PREFIX_infer)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from faustgen import compile_onnx, zoo  # noqa: E402
from faustgen.errors import FaustgenError  # noqa: E402

T, F = 10, 16


def _seq(seed=0):
    return np.random.default_rng(seed).standard_normal((1, T, F)).astype(np.float32)


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.mark.parametrize("cell, layers", [("lstm", 1), ("gru", 2), ("rnn", 1)])
def test_step_by_step_equals_the_whole_sequence(cell, layers, tmp_path):
    model = zoo.keyword_spotter(cell, features=F, hidden=24, layers=layers)
    x = _seq()
    path = zoo.export(model, x, tmp_path / "kws.onnx", dynamic_batch=False)
    c = compile_onnx(path, tmp_path / "out", dense=True, stream=True)
    ys = [c.step(x[:, t]) for t in range(T)]
    for t in range(T):  # the classifier on the last step of x_0 ... x_t
        assert _rel(ys[t], zoo.torch_predict(model, x[:, : t + 1])) < 1e-5
    np.testing.assert_array_equal(ys[-1], c.predict(x))
    # the state carries over: a new sequence starts only after reset
    x2 = _seq(1)
    assert _rel(c.step(x2[:, 0]), zoo.torch_predict(model, x2[:, :1])) > 1e-3
    c.reset()
    assert _rel(c.step(x2[:, 0]), zoo.torch_predict(model, x2[:, :1])) < 1e-5
    c.reset()
    np.testing.assert_array_equal(c.step(x[:, 0]), ys[0])


class _Tagger(torch.nn.Module):
    """A per-step output: (1, T, F) -> LSTM -> Linear on every step -> (1, T, 3)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.rnn = torch.nn.LSTM(F, 20, batch_first=True)
        self.fc = torch.nn.Linear(20, 3)

    def forward(self, x):
        return self.fc(self.rnn(x)[0])


def test_per_step_outputs_stream(tmp_path):
    model = _Tagger().eval()
    x = _seq(2)
    path = zoo.export(model, x, tmp_path / "tagger.onnx", dynamic_batch=False)
    c = compile_onnx(path, tmp_path / "out", dense=True, stream=True)
    full = c.predict(x)
    steps = np.concatenate([c.step(x[:, t]).reshape(1, 1, 3) for t in range(T)], axis=1)
    assert _rel(steps, full) < 1e-6  # the head runs on 1 row instead of T: float rounding
    assert _rel(steps, zoo.torch_predict(model, x)) < 1e-5
    header = (tmp_path / "out" / "model.h").read_text()
    assert "int model_step(const float *x_t, float *y_t);" in header
    assert f"#define MODEL_STEP_INPUT_SIZE {F}" in header


def test_factorized_step_runs_the_same_factors(tmp_path):
    model = zoo.keyword_spotter("lstm", features=40, hidden=64)
    x = np.random.default_rng(3).standard_normal((1, T, 40)).astype(np.float32)
    path = zoo.export(model, x, tmp_path / "kws.onnx", dynamic_batch=False)
    c = compile_onnx(path, tmp_path / "out", dense=False, rcg=4, stream=True)
    # one copy of the factors serves PREFIX_infer and PREFIX_step
    assert (tmp_path / "out" / "model_weights.c").read_text().count("_chain_val[") == 1
    ys = [c.step(x[:, t]) for t in range(T)]
    np.testing.assert_array_equal(ys[-1], c.predict(x))


def test_stream_refuses_what_cannot_stream(tmp_path):
    x = _seq()
    bi = zoo.keyword_spotter("gru", features=F, bidirectional=True)
    path = zoo.export(bi, x, tmp_path / "bi.onnx", dynamic_batch=False)
    with pytest.raises(FaustgenError, match="backwards"):
        compile_onnx(path, tmp_path / "o1", dense=True, stream=True)
    mlp = zoo.mlp((F, 8, 2))
    path = zoo.export(mlp, x[0, :1], tmp_path / "mlp.onnx")
    with pytest.raises(FaustgenError, match="RNN, GRU or LSTM"):
        compile_onnx(path, tmp_path / "o2", dense=True, stream=True)
    c = compile_onnx(path, tmp_path / "o3", dense=True)
    with pytest.raises(FaustgenError, match="without --stream"):
        c.step(x[0, :1])
