"""Property-based fuzzing of the frontend: mutated valid models (attribute values, shapes, op
types, initializers, graph structure, truncations, random bytes) must give a clean one-line
error (exit 2) or a correct build (checked against onnxruntime when it runs the model) —
never a crash, a traceback or an internal error.

Bounded for `make test` (about a minute); `make fuzz` sets FAUSTGEN_FUZZ_EXAMPLES higher.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper as nh

from faustgen.cli import main

EXAMPLES = int(os.environ.get("FAUSTGEN_FUZZ_EXAMPLES", "100"))
OPS = [
    "Relu",
    "Sigmoid",
    "Conv",
    "MaxPool",
    "AveragePool",
    "Gemm",
    "MatMul",
    "Add",
    "Mul",
    "Softmax",
    "Flatten",
    "Reshape",
    "Transpose",
    "Concat",
    "Pad",
    "BatchNormalization",
    "Hardmax",
    "LSTM",
    "Resize",
    "Where",
    "Identity",
    "Clip",
    "LRN",
    "GlobalAveragePool",
]


def _base_cnn() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = {
        "w": rng.standard_normal((4, 2, 3, 3)).astype(np.float32),
        "b": rng.standard_normal(4).astype(np.float32),
        "s": np.ones(4, np.float32), "t": np.zeros(4, np.float32),
        "m": np.zeros(4, np.float32), "v": np.ones(4, np.float32),
        "g": rng.standard_normal((5, 36)).astype(np.float32),
        "gc": rng.standard_normal(5).astype(np.float32),
    }  # fmt: skip
    nodes = [
        h.make_node(
            "Conv",
            ["x", "w", "b"],
            ["c"],
            name="conv",
            pads=[1, 1, 1, 1],
            kernel_shape=[3, 3],
            strides=[1, 1],
        ),
        h.make_node(
            "BatchNormalization", ["c", "s", "t", "m", "v"], ["bn"], name="bn", epsilon=1e-5
        ),
        h.make_node("Relu", ["bn"], ["r"], name="relu"),
        h.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        h.make_node("Flatten", ["p"], ["f"], name="flat", axis=1),
        h.make_node("Gemm", ["f", "g", "gc"], ["gm"], name="fc", transB=1),
        h.make_node("Softmax", ["gm"], ["y"], name="softmax", axis=1),
    ]
    g = h.make_graph(
        nodes,
        "cnn",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        [nh.from_array(v, k) for k, v in inits.items()],
    )
    return h.make_model(g, opset_imports=[h.make_opsetid("", 13)])


BASE = _base_cnn()

ints = st.integers(-3, 9)
attr_values = st.one_of(
    ints,
    st.lists(ints, min_size=0, max_size=8),
    st.floats(-5, 5),
    st.sampled_from(["NOTSET", "SAME_UPPER", "VALID", "reflect", "bogus"]),
)


@st.composite
def mutated(draw) -> bytes:
    m = onnx.ModelProto()
    m.CopyFrom(BASE)
    g = m.graph
    kind = draw(
        st.sampled_from(
            ["attr", "attr", "shape", "op", "init", "drop", "rename", "truncate", "bytes", "opset"]
        )
    )
    if kind == "attr":
        node = g.node[draw(st.integers(0, len(g.node) - 1))]
        name = draw(
            st.sampled_from(
                [
                    "pads",
                    "kernel_shape",
                    "strides",
                    "axis",
                    "transB",
                    "auto_pad",
                    "group",
                    "dilations",
                    "epsilon",
                    "ceil_mode",
                    "mode",
                    "perm",
                ]
            )
        )
        value = draw(attr_values)
        for a in list(node.attribute):
            if a.name == name:
                node.attribute.remove(a)
        with contextlib.suppress(Exception):
            node.attribute.append(h.make_attribute(name, value))
    elif kind == "shape":
        dims = g.input[0].type.tensor_type.shape.dim
        for d in dims:
            choice = draw(st.one_of(st.integers(0, 12), st.sampled_from(["N", "H"])))
            if isinstance(choice, int):
                d.dim_value = choice
            else:
                d.dim_param = choice
    elif kind == "op":
        g.node[draw(st.integers(0, len(g.node) - 1))].op_type = draw(st.sampled_from(OPS))
    elif kind == "init":
        i = draw(st.integers(0, len(g.initializer) - 1))
        arr = nh.to_array(g.initializer[i]).copy()
        action = draw(st.sampled_from(["nan", "reshape", "scalar", "int"]))
        if action == "nan" and arr.size:
            arr.reshape(-1)[0] = np.nan
        elif action == "reshape":
            arr = arr.reshape(-1)
        elif action == "scalar":
            arr = np.array(1.5, np.float32)
        else:
            arr = arr.astype(np.int64)
        g.initializer[i].CopyFrom(nh.from_array(arr, g.initializer[i].name))
    elif kind == "drop":
        del g.node[draw(st.integers(0, len(g.node) - 1))]
    elif kind == "rename":
        node = g.node[draw(st.integers(0, len(g.node) - 1))]
        if node.input:
            node.input[draw(st.integers(0, len(node.input) - 1))] = draw(
                st.sampled_from(["", "ghost", "y", "x", "c"])
            )
    elif kind == "opset":
        m.opset_import[0].version = draw(st.integers(1, 25))
    data = m.SerializeToString()
    if kind == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif kind == "bytes":
        buf = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            buf[draw(st.integers(0, len(buf) - 1))] = draw(st.integers(0, 255))
        data = bytes(buf)
    return data


_RUNTIME: list[Path] = []


def _runtime_objects() -> list[Path]:
    """The runtime compiled once per session, for the builds that succeed."""
    if not _RUNTIME:
        from faustgen.codegen.render import RUNTIME_SOURCES
        from faustgen.resources import data_dir

        d = Path(tempfile.mkdtemp(prefix="faustgen-fuzz-rt-"))
        for name in RUNTIME_SOURCES:
            obj = d / name.replace(".c", ".o")
            subprocess.run(
                [
                    "gcc",
                    "-std=c99",
                    "-O1",
                    "-fPIC",
                    "-c",
                    str(data_dir("runtime_c") / name),
                    "-o",
                    str(obj),
                ],
                check=True,
            )
            _RUNTIME.append(obj)
    return _RUNTIME


def _check_against_ort(path: Path, out: Path) -> None:
    """A build that succeeded must compute what onnxruntime computes (when it can run it)."""
    import onnxruntime as ort

    from faustgen.backend import CompiledModel
    from faustgen.tune.reference import compare, ort_predict

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:
        return  # onnxruntime rejects the model: nothing to compare against
    subprocess.run(
        [
            "gcc",
            "-std=c99",
            "-O1",
            "-fPIC",
            "-shared",
            "-o",
            str(out / "libmodel.so"),
            str(out / "model.c"),
            *map(str, _runtime_objects()),
            "-lm",
        ],
        check=True,
        cwd=out,
    )
    compiled = CompiledModel(out)
    shape = compiled.input_shape
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    try:
        ref = ort_predict(sess, x, compiled.layout)
    except Exception:
        return
    assert compare(compiled.predict(x), ref)["max_rel"] < 1e-4


@settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
@given(mutated())
def test_mutated_models_fail_cleanly_or_build_correctly(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        path.write_bytes(data)
        out = Path(tmp) / "out"
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["build", str(path), "-o", str(out), "--no-compile", "--dense"])
        text = err.getvalue().strip()
        assert code in (0, 2), text
        if code == 2:
            assert len(text.splitlines()) == 1 and text.startswith("faustgen: error: "), text
            assert not out.exists()
        else:
            _check_against_ort(path, out)


def test_fuzz_budget_is_bounded():
    assert 0 < EXAMPLES <= 100_000
    if "FAUSTGEN_FUZZ_EXAMPLES" not in os.environ:
        assert EXAMPLES <= 200, "keep `make test` under its time budget"
    pytest.importorskip("hypothesis")
