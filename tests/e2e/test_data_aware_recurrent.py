"""--calib with recurrent layers: the gate matrices are factorized (data-free, said so in one
note line) instead of silently staying dense, and count in the whole-model budget."""

from __future__ import annotations

import numpy as np
import pytest

from faustgen.compiler import BuildOptions, build_bundle

torch = pytest.importorskip("torch")

from faustgen import zoo  # noqa: E402


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_recurrent_gates_factorized_with_calib(cell, tmp_path):
    model = zoo.keyword_spotter(cell=cell, features=40, hidden=128, classes=5)
    x = np.random.default_rng(0).standard_normal((64, 20, 40)).astype(np.float32)
    path = zoo.export(model, x[:1], tmp_path / "kws.onnx", dynamic_batch=False)
    opts = BuildOptions(rcg=4, calib=x, compile=False, jobs=1, cache=False)
    res = build_bundle(path, tmp_path / "out", opts)
    rnn = next(n for n in res.graph.nodes if n.op == cell.upper())
    assert rnn.attrs["factorization"]["factorized"]
    assert res.report["totals"]["rcg"] > 3.0  # was 1.0: the gates stayed dense
    split = res.report["compression"]["data_aware"]
    assert split["data_free"] == {rnn.name: "RCG 4"}
    notes = [m for m in res.messages if "data-free" in m]
    assert len(notes) == 1 and rnn.name in notes[0] and "\n" not in notes[0]
