"""Every `faustgen build` flag combination on both demo models: a bundle, or one clear
line on stderr and exit 2 (never a traceback)."""

from __future__ import annotations

import numpy as np
import pytest

from faustgen.cli import main

torch = pytest.importorskip("torch")

from faustgen import zoo  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("flag_models")
    x = np.zeros((1, 1, 28, 28), np.float32)
    lenet = zoo.lenet5(seed=1)
    zoo.randomize_batchnorm(lenet)
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((48, 1, 28, 28)).astype(np.float32)
    np.save(d / "x.npy", calib)
    np.save(d / "y.npy", rng.integers(0, 10, 48).astype(np.int64))
    np.save(d / "yf.npy", rng.standard_normal(48).astype(np.float32))
    return {
        "mlp": zoo.export(zoo.mlp((784, 300, 100, 10)), x, d / "mlp.onnx"),
        "lenet": zoo.export(lenet, x, d / "lenet.onnx"),
        "dir": d,
    }


WORKS = [
    [],
    ["--dense"],
    ["--dense", "--target", "rpi64", "--no-compile", "--name", "net"],
    ["--rcg", "8", "--convs", "--unstructured", "--factors", "2"],
    ["--max-error", "0.6", "--keep-dense", "/1/Gemm", "/9/Gemm"],
    ["--rcg", "4", "--no-convs", "--min-size", "100", "--seed", "3"],
    ["--input-shape", "1,1,28,28", "--rcg", "2", "--no-compile"],
    ["--weights", "file", "--no-cache", "--jobs", "1", "--max-params", "300000"],
    ["--dense", "--weights", "blob", "--input-shape", "2,1,28,28"],
    ["--calib", "{x}", "--rcg", "8", "--convs", "--finetune", "1"],
    ["--calib", "{x}", "--labels", "{y}", "--max-accuracy-drop", "50", "--finetune", "1"],
    ["--calib", "{x}", "--labels", "{y}", "--max-error", "0.4", "--factors", "2", "--no-compile"],
]

FAILS = [
    (["--finetune", "1"], "--finetune needs calibration inputs"),
    (["--labels", "{y}"], "--labels needs"),
    (["--calib", "{x}", "--max-accuracy-drop", "1"], "needs --labels"),
    (["--calib", "{x}", "--labels", "{yf}"], "--labels must hold one integer class"),
    (["--dense", "--rcg", "4"], "--dense builds without factorization: drop --rcg"),
    (["--dense", "--calib", "{x}", "--finetune", "2"], "drop --calib --finetune"),
    (["--rcg", "0.5"], "--rcg must be at least 1"),
    (["--max-accuracy-drop", "-1", "--calib", "{x}"], "must be positive"),
    (["--factors", "0"], "--factors must be positive"),
    (["--calib", "{y}"], "calibration inputs have dtype int64"),
    (["--target", "nope"], "nope"),
    (["--name", "9x"], "not a valid C identifier"),
    (["--max-params", "10"], "above the --max-params limit of 10"),
    (["--min-size", "-1"], "--min-size must not be negative"),
    (["--calib", "{x}", "--finetune", "-1"], "--finetune must not be negative"),
    (["--dense", "--min-size", "10", "--no-convs"], "drop --convs/--no-convs --min-size"),
]


def _args(flags, d):
    return [f.format(x=d / "x.npy", y=d / "y.npy", yf=d / "yf.npy") for f in flags]


@pytest.mark.parametrize("model", ["mlp", "lenet"])
@pytest.mark.parametrize("flags", WORKS, ids=lambda f: " ".join(f) or "default")
def test_flag_combination_builds(models, tmp_path, model, flags, capsys):
    out = tmp_path / "out"
    code = main(["build", str(models[model]), "-o", str(out), *_args(flags, models["dir"])])
    err = capsys.readouterr().err
    assert code == 0, err
    assert (out / "report.json").is_file()


@pytest.mark.parametrize("model", ["mlp", "lenet"])
@pytest.mark.parametrize(
    "flags,message", FAILS, ids=lambda v: " ".join(v) if isinstance(v, list) else None
)
def test_flag_combination_errors(models, tmp_path, model, flags, message, capsys):
    out = tmp_path / "out"
    code = main(["build", str(models[model]), "-o", str(out), *_args(flags, models["dir"])])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()  # no half-written output directory
