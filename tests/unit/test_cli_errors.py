"""Bad input gets one line `faustgen: error: ...` on stderr, exit 2, no traceback, no OUT."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper as nh

from faustgen.cli import main


def _mlp_model(input_dims=("N", 4), op="Relu") -> onnx.ModelProto:
    w = nh.from_array(np.ones((4, 3), np.float32), "W")
    nodes = [
        h.make_node("MatMul", ["x", "W"], ["h"], name="fc"),
        h.make_node(op, ["h"], ["y"], name="act"),
    ]
    g = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, list(input_dims))],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, [input_dims[0], 3])],
        [w],
    )
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def _run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_clean_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("faustgen: error: ")
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_missing_file(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = _run(["build", str(tmp_path / "nope.onnx"), "-o", str(out)], capsys)
    _assert_clean_error(code, err, "nope.onnx", "no such file")
    assert not out.exists()


def test_not_onnx(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\xffthis is not a protobuf" * 10)
    out = tmp_path / "out"
    code, _, err = _run(["build", str(bad), "-o", str(out)], capsys)
    _assert_clean_error(code, err, "bad.onnx", "not an ONNX model")
    assert not out.exists()


def test_truncated_model(tmp_path, capsys):
    data = _mlp_model().SerializeToString()
    bad = tmp_path / "trunc.onnx"
    bad.write_bytes(data[: len(data) // 2])
    code, _, err = _run(["build", str(bad), "-o", str(tmp_path / "out")], capsys)
    _assert_clean_error(code, err, "trunc.onnx")
    assert not (tmp_path / "out").exists()


def test_unsupported_op_names_op_node_and_supported_list(tmp_path, capsys):
    path = tmp_path / "hm.onnx"
    onnx.save(_mlp_model(op="Hardmax"), path)
    code, _, err = _run(["build", str(path), "-o", str(tmp_path / "out")], capsys)
    _assert_clean_error(code, err, "Hardmax", "'act'", "supported:", "Conv", "Gemm")
    assert not (tmp_path / "out").exists()


def test_unresolved_input_dimension(tmp_path, capsys):
    path = tmp_path / "dyn.onnx"
    onnx.save(_mlp_model(input_dims=("N", "features")), path)
    code, _, err = _run(["build", str(path), "-o", str(tmp_path / "out")], capsys)
    _assert_clean_error(code, err, "features", "--input-shape")


def test_input_shape_override_resolves_it(tmp_path, capsys):
    path = tmp_path / "dyn.onnx"
    onnx.save(_mlp_model(input_dims=("N", "features")), path)
    code, _out, err = _run(
        ["build", str(path), "-o", str(tmp_path / "out"), "--input-shape", "1,4", "--no-compile"],
        capsys,
    )
    assert code == 0, err


def test_failed_build_keeps_existing_output(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous build")
    path = tmp_path / "hm.onnx"
    onnx.save(_mlp_model(op="Hardmax"), path)
    code, _, _ = _run(["build", str(path), "-o", str(out)], capsys)
    assert code == 2
    assert (out / "keep.txt").read_text() == "previous build"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hm.onnx", "out"]


@pytest.fixture
def built(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(_mlp_model(), path)
    out = tmp_path / "out"
    code, _, err = _run(["build", str(path), "-o", str(out)], capsys)
    assert code == 0, err
    return path, out


def test_run_and_verify(built, tmp_path, capsys):
    path, out = built
    x = np.linspace(-1, 1, 20, dtype=np.float32).reshape(5, 4)
    np.save(tmp_path / "x.npy", x)
    code, _, err = _run(
        ["run", str(out), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")],
        capsys,
    )
    assert code == 0, err
    y = np.load(tmp_path / "y.npy")
    np.testing.assert_allclose(y, np.maximum(x @ np.ones((4, 3), np.float32), 0), rtol=1e-6)
    code, stdout, err = _run(["verify", str(path), str(out)], capsys)
    assert code == 0, err
    assert "OK" in stdout


def test_run_rejects_wrong_shape(built, tmp_path, capsys):
    _, out = built
    np.save(tmp_path / "x.npy", np.zeros((5, 7), np.float32))
    code, _, err = _run(
        ["run", str(out), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")],
        capsys,
    )
    _assert_clean_error(code, err, "(5, 7)", "(B, 4)")
    assert not (tmp_path / "y.npy").exists()


def test_run_rejects_wrong_dtype(built, tmp_path, capsys):
    _, out = built
    np.save(tmp_path / "x.npy", np.zeros((5, 4), np.float64))
    code, _, err = _run(
        ["run", str(out), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")],
        capsys,
    )
    _assert_clean_error(code, err, "float64", "float32")


def test_run_rejects_non_npy(built, tmp_path, capsys):
    _, out = built
    (tmp_path / "x.npy").write_text("hello")
    code, _, err = _run(
        ["run", str(out), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")],
        capsys,
    )
    _assert_clean_error(code, err, "x.npy")


def test_verify_fails_with_exit_1_when_outputs_differ(built, tmp_path, capsys):
    _path, out = built
    other = _mlp_model(op="Sigmoid")
    onnx.save(other, tmp_path / "other.onnx")
    code, stdout, _err = _run(["verify", str(tmp_path / "other.onnx"), str(out)], capsys)
    assert code == 1
    assert "FAILED" in stdout


def test_console_script_prints_no_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "faustgen.cli",
            "build",
            str(tmp_path / "missing.onnx"),
            "-o",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("faustgen: error: ")
    assert "Traceback" not in proc.stderr
