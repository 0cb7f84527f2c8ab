"""`faustgen experiment` end to end on a tiny trained model: every point built and measured,
tables and plots written, and a second run served from the cache."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import faustgen.demo.experiment as ex
from faustgen.cli import main

torch = pytest.importorskip("torch")

from faustgen import zoo  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_exp")
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((10, 256)).astype(np.float32)
    y = rng.integers(0, 10, 600)
    x = (centers[y] + 1.5 * rng.standard_normal((600, 256))).astype(np.float32)
    x = x.reshape(-1, 1, 16, 16)
    model = zoo.mlp((256, 64, 10), seed=0)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    model.eval()
    np.save(d / "x.npy", x[300:])
    np.save(d / "y.npy", y[300:].astype(np.int64))
    np.save(d / "c.npy", x[:300])
    return zoo.export(model, x[:1], d / "tiny.onnx"), d


def test_experiment_end_to_end_and_resume(tiny, tmp_path, capsys, monkeypatch):
    path, d = tiny
    out = tmp_path / "exp"
    argv = [
        "experiment", str(path), "--data", str(d / "x.npy"), "--labels", str(d / "y.npy"),
        "--calib", str(d / "c.npy"), "--rcg", "4", "--methods", "factor",
        "--finetune", "1", "--targets", "host,rpi64", "--repeat", "5", "-o", str(out),
    ]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    result = json.loads((out / "results.json").read_text())
    rows = result["rows"]
    assert [(r["method"], r["fine-tune epochs"]) for r in rows] == [
        ("dense", 0), ("factor", 0), ("factor", 1),
    ]  # fmt: skip
    dense = rows[0]
    assert dense["accuracy"] > 0.9 and dense["RCG"] == 1.0
    for r in rows[1:]:
        assert r["RCG"] >= 4.0  # the whole model meets the target
        assert r["params"] < dense["params"] / 3.9
        assert r["C us"] > 0 and r["ORT us"] > 0 and r["PyTorch us"] > 0
        assert r["g CO2e / 1M"] > 0
    factor = rows[1]
    assert factor["accuracy"] >= dense["accuracy"] - 0.05
    # Energy follows the formula from the measured time.
    e = result["energy"]
    kwh = dense["C us"] * e["watts"] * e["pue"] / 3.6e6
    assert dense["kWh / 1M"] == pytest.approx(kwh)
    assert dense["g CO2e / 1M"] == pytest.approx(kwh * e["g_co2e_per_kwh"])
    if "rpi64_check" in dense and "skipped" not in dense["rpi64_check"]:
        assert all(r["instructions (estimate)"] > 0 for r in rows)
        for r in rows:  # the host's factors cross-built, so the board computes the same
            m = re.search(r"max rel. difference from the host build (\S+) on", r["rpi64_check"])
            assert m and float(m.group(1)) < 1e-4, r["rpi64_check"]
    for name in ("results.md", "accuracy.png", "latency.png", "energy.png"):
        assert (out / name).is_file()
    assert "| factor |" in printed and "| dense |" in printed

    # Resumed: every point comes from DIR/points, nothing is rebuilt.
    def no_build(*a, **k):
        raise AssertionError("rebuilt a cached point")

    monkeypatch.setattr(ex, "build_bundle", no_build)
    assert main(argv) == 0
    again = json.loads((out / "results.json").read_text())["rows"]
    assert [r["accuracy"] for r in again] == [r["accuracy"] for r in rows]


def test_experiment_bad_input(tiny, tmp_path, capsys):
    path, d = tiny
    base = ["experiment", str(path), "--labels", str(d / "y.npy"), "-o", str(tmp_path / "e")]
    assert (
        main([*base, "--data", str(d / "x.npy"), "--methods", "magic", "--calib", str(d / "c.npy")])
        == 2
    )
    assert "unknown method 'magic'" in capsys.readouterr().err
    assert main([*base, "--data", str(d / "x.npy")]) == 2  # 300 inputs, no --calib
    assert "give --calib" in capsys.readouterr().err
    assert main([*base, "--data", str(d / "y.npy"), "--calib", str(d / "c.npy")]) == 2
    assert "--data must be float32" in capsys.readouterr().err


def test_cached_points_belong_to_their_inputs(tmp_path):
    """Another model or data set in the same DIR starts over instead of resuming."""
    (tmp_path / "points").mkdir()
    (tmp_path / "points" / "dense.json").write_text("{}")
    ex._forget_other_inputs(tmp_path, "a")
    ex._forget_other_inputs(tmp_path, "a")
    assert (tmp_path / "points" / "dense.json").is_file()
    ex._forget_other_inputs(tmp_path, "b")
    assert not (tmp_path / "points").exists()
    assert (tmp_path / "inputs.sha256").read_text().strip() == "b"
