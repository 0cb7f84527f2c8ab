"""Hostile model strings never become code; bad models get clear errors."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper as nh

from faustgen.cli import main
from faustgen.compiler import BuildOptions, build_bundle
from faustgen.errors import FaustgenError

PAYLOADS = [
    '*/ int evil(void) { return system("rm -rf /"); } /*',
    "\n#include </etc/passwd>\n#define model_infer evil_infer\n",
    'x"; evil(); char *s = "',
    "??/\nevil();",
    "\\\nevil();",
    "名前 ☃ \x00\x07\x1b[31m",
    "a" * 300,
    "int",
    "",
]


def _hostile_model() -> onnx.ModelProto:
    p = PAYLOADS
    w1 = nh.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, p[0])
    b1 = nh.from_array(np.ones(3, np.float32), p[1])
    w2 = nh.from_array(np.eye(3, dtype=np.float32), p[2])
    nodes = [
        h.make_node("MatMul", [p[3], p[0]], [p[4]], name=p[5]),
        h.make_node("Add", [p[4], p[1]], [p[6]], name=p[0]),
        h.make_node("Relu", [p[6]], [p[7]], name=p[1]),
        h.make_node("MatMul", [p[7], p[2]], [p[8] or "out"], name=p[2]),
    ]
    g = h.make_graph(
        nodes,
        p[0],
        [h.make_tensor_value_info(p[3], TensorProto.FLOAT, ["N", 4])],
        [h.make_tensor_value_info(p[8] or "out", TensorProto.FLOAT, ["N", 3])],
        [w1, b1, w2],
    )
    m = h.make_model(
        g,
        opset_imports=[h.make_opsetid("", 17)],
        producer_name=p[1],
        producer_version=p[0],
        doc_string=p[0],
    )
    return m


def _strip_comments(c_text: str) -> str:
    return re.sub(r"/\*.*?\*/", " ", c_text, flags=re.S)


def test_injection_payloads_stay_in_comments(tmp_path, quick_build):
    path = tmp_path / "evil.onnx"
    onnx.save(_hostile_model(), path)
    compiled = quick_build(path)
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    w1 = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    expected = np.maximum(x @ w1 + 1, 0)
    np.testing.assert_allclose(compiled.predict(x), expected, rtol=1e-6)
    for f in compiled.out_dir.iterdir():
        if f.suffix not in (".c", ".h") or f.name.startswith("fg_"):
            continue
        code = _strip_comments(f.read_text())
        for bad in ("evil(", "system(", "/etc", "rm -rf", '"', "??", "\\\n"):
            if bad == '"' and f.name in ("main.c", "model.h", "model.c"):
                continue  # the harness has its own string literals; model.c its includes
            assert bad not in code, (f.name, bad)
        directives = re.findall(r"^\s*#\s*(\w+)(.*)$", code, flags=re.M)
        for kind, rest in directives:
            assert kind in ("include", "ifndef", "define", "endif", "ifdef"), (f.name, kind)
            if kind == "include":
                assert re.fullmatch(r'\s*[<"][A-Za-z0-9_./]+[>"]\s*', rest), rest
            if kind == "define":
                assert re.fullmatch(r"\s*[A-Z0-9_]+(\s+.*)?", rest), rest
        assert all(ord(c) < 128 for c in f.read_text()), f.name


def _clean_failure(path, tmp_path, capsys, *needles):
    code = main(["build", str(path), "-o", str(tmp_path / "out"), "--no-compile"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("faustgen: error: ")
    for n in needles:
        assert n in err, (n, err)
    assert not (tmp_path / "out").exists()


def _single(op, attrs=None, inputs=("x",), shape=(1, 3, 8, 8), inits=(), opset=17, out_shape=None):
    node = h.make_node(op, list(inputs), ["y"], name="the_node", **(attrs or {}))
    g = h.make_graph(
        [node],
        "g",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        list(inits),
    )
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])


def test_pad_reflect_is_a_clear_error(tmp_path, capsys):
    pads = nh.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")
    m = _single("Pad", {"mode": "reflect"}, ("x", "pads"), inits=[pads], out_shape=[1, 3, 10, 10])
    onnx.save(m, tmp_path / "m.onnx")
    _clean_failure(tmp_path / "m.onnx", tmp_path, capsys, "m.onnx:", "Pad", "the_node", "reflect")


def test_nan_weight_names_the_initializer(tmp_path, capsys):
    w = np.ones((2, 3, 3, 3), np.float32)
    w[1, 1, 1, 1] = np.nan
    m = _single(
        "Conv",
        {},
        ("x", "conv.weight"),
        inits=[nh.from_array(w, "conv.weight")],
        out_shape=[1, 2, 6, 6],
    )
    onnx.save(m, tmp_path / "m.onnx")
    _clean_failure(tmp_path / "m.onnx", tmp_path, capsys, "conv.weight", "NaN")


def test_shape_mismatch_names_node_and_shapes(tmp_path, capsys):
    w = nh.from_array(np.ones((5, 7), np.float32), "W")
    m = _single("MatMul", {}, ("x", "W"), shape=(1, 6), inits=[w], out_shape=[1, 7])
    onnx.save(m, tmp_path / "m.onnx")
    _clean_failure(tmp_path / "m.onnx", tmp_path, capsys, "the_node", "(1, 6)", "(5, 7)")


def test_cycle_is_a_clear_error(tmp_path, capsys):
    n1 = h.make_node("Relu", ["x2"], ["x1"], name="a")
    n2 = h.make_node("Relu", ["x1"], ["x2"], name="b")
    n3 = h.make_node("Add", ["x", "x2"], ["y"], name="c")
    g = h.make_graph(
        [n1, n2, n3],
        "g",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    (tmp_path / "m.onnx").write_bytes(m.SerializeToString())
    code = main(["build", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and ("cycle" in err or "topologically" in err), err


def test_dangling_input_is_a_clear_error(tmp_path, capsys):
    m = _single("Add", {}, ("x", "nowhere"), shape=(2,), out_shape=[2])
    (tmp_path / "m.onnx").write_bytes(m.SerializeToString())
    code = main(["build", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "nowhere" in err, err


def _two_node_model(shapeless_output: bool = False, reversed_nodes: bool = False):
    w = nh.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "W")
    nodes = [
        h.make_node("MatMul", ["x", "W"], ["t"], name="mm"),
        h.make_node("Relu", ["t"], ["y"], name="relu"),
    ]
    g = h.make_graph(
        nodes[::-1] if reversed_nodes else nodes,
        "g",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, None if shapeless_output else ["N", 3])],
        [w],
    )
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


@pytest.mark.parametrize("variant", ["unsorted nodes", "output without shape"])
def test_models_onnxruntime_accepts_build(tmp_path, quick_build, variant):
    """The ONNX checker rejects these two forms; onnxruntime runs them, and so must we."""
    m = _two_node_model(
        shapeless_output=variant == "output without shape",
        reversed_nodes=variant == "unsorted nodes",
    )
    path = tmp_path / "m.onnx"
    path.write_bytes(m.SerializeToString())
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(m)
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    expected = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    np.testing.assert_allclose(quick_build(path).predict(x), expected, rtol=1e-6)


def test_escape_sequences_in_errors_are_neutralized(tmp_path, capsys):
    m = _two_node_model()
    m.graph.node[1].op_type = "Bogus\x1b[2J\nline"
    m.graph.node[1].name = "relu\x07\r"
    onnx.save(m, tmp_path / "m.onnx")
    _clean_failure(tmp_path / "m.onnx", tmp_path, capsys, "Bogus\\x1b[2J")
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err


def test_model_above_size_limit(tmp_path, capsys):
    w = nh.from_array(np.ones((64, 64), np.float32), "W")
    m = _single("MatMul", {}, ("x", "W"), shape=(1, 64), inits=[w], out_shape=[1, 64])
    onnx.save(m, tmp_path / "m.onnx")
    code = main(
        ["build", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out"), "--max-params", "1000"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "4096 weights" in err and "--max-params" in err


def test_run_guards_reject_bad_pointers_and_batch(tmp_path, quick_build):
    """model_infer returns -1 for NULL pointers or batch <= 0 (called through cffi)."""
    m = _single("Relu", shape=(1, 4), out_shape=[1, 4])
    onnx.save(m, tmp_path / "m.onnx")
    compiled = quick_build(tmp_path / "m.onnx")
    compiled.predict(np.zeros((1, 4), np.float32))
    lib, ffi = compiled._load()
    x = np.zeros(4, np.float32)
    y = np.zeros(4, np.float32)
    xb, yb = ffi.from_buffer("float[]", x), ffi.from_buffer("float[]", y)
    assert lib.model_infer(ffi.NULL, yb, 1) == -1
    assert lib.model_infer(xb, ffi.NULL, 1) == -1
    assert lib.model_infer(xb, yb, 0) == -1
    assert lib.model_infer(xb, yb, -3) == -1
    assert lib.model_infer(xb, yb, 1) == 0


def test_predict_checks_dtype_and_shape(tmp_path, quick_build):
    m = _single("Relu", shape=("N", 4), out_shape=["N", 4])
    onnx.save(m, tmp_path / "m.onnx")
    compiled = quick_build(tmp_path / "m.onnx")
    with pytest.raises(FaustgenError, match="float64"):
        compiled.predict(np.zeros((2, 4)))
    with pytest.raises(FaustgenError, match=r"\(2, 5\)"):
        compiled.predict(np.zeros((2, 5), np.float32))
    with pytest.raises(FaustgenError, match="numpy array"):
        compiled.predict([[0.0] * 4])


def test_factorized_builds_are_deterministic(tmp_path):
    w = nh.from_array(np.random.default_rng(0).standard_normal((128, 96)).astype(np.float32), "W")
    m = _single("MatMul", {}, ("x", "W"), shape=("N", 128), inits=[w], out_shape=["N", 96])
    onnx.save(m, tmp_path / "m.onnx")
    files = []
    for i in range(2):
        out = build_bundle(
            tmp_path / "m.onnx",
            tmp_path / f"o{i}",
            BuildOptions(
                dense=False, rcg=4, compile=False, command="faustgen build m.onnx --rcg 4"
            ),
        ).out_dir
        files.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert files[0] == files[1]
