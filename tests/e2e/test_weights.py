"""Where the weights live: C literals, a .incbin blob linked into .rodata, or a file read by
PREFIX_load() — every mode built by faustgen, by the bundle's Makefile, for every target
(ARM under qemu-user), strict-warning clean, deterministic, and matching PyTorch."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from onnx import helper as h

from faustgen.backend import CompiledModel, load_target
from faustgen.codegen.weights import LITERAL_LIMIT_BYTES
from faustgen.compiler import BuildOptions, build_bundle
from faustgen.errors import FaustgenError
from tests.conftest import STRICT as CONFTEST_STRICT
from tests.conftest import asan_harness

torch = pytest.importorskip("torch")

from faustgen import zoo  # noqa: E402

STRICT = [*CONFTEST_STRICT, "-Wshadow"]


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    d = tmp_path_factory.mktemp("lenet_weights")
    model = zoo.lenet5()
    x = np.random.default_rng(1).standard_normal((3, 1, 28, 28)).astype(np.float32)
    path = zoo.export(model, x[:1], d / "lenet.onnx")
    return path, x, zoo.torch_predict(model, x)


def _close(y, ref):
    assert np.max(np.abs(y - ref)) <= 1e-5 * np.max(np.abs(ref))


@pytest.mark.parametrize("mode", ["c", "blob", "file"])
def test_host_build_matches_torch(lenet, tmp_path, mode):
    path, x, ref = lenet
    build_bundle(path, tmp_path / "out", BuildOptions(dense=True, weights=mode))
    out = tmp_path / "out"
    assert (out / "model_weights.bin").exists() == (mode != "c")
    assert (out / "model_weights.s").exists() == (mode == "blob")
    report = CompiledModel(out).report
    assert report["model"]["weights"] == mode
    _close(CompiledModel(out).predict(x), ref)  # cffi (file: model_load first)
    x.tofile(tmp_path / "in.bin")
    subprocess.run([str(out / "model"), "in.bin", "y.bin"], cwd=tmp_path, check=True)
    _close(np.fromfile(tmp_path / "y.bin", np.float32).reshape(ref.shape), ref)


def test_blob_is_aligned_and_written_from_the_arrays(lenet, tmp_path):
    path, _, _ = lenet
    build_bundle(path, tmp_path / "out", BuildOptions(dense=True, weights="blob"))
    blob = (tmp_path / "out" / "model_weights.bin").read_bytes()
    asm = (tmp_path / "out" / "model_weights.s").read_text()
    assert blob[:8] == b"FGWEIGHT" and int(blob[24:40], 16) == len(blob)
    spans = [
        tuple(int(v) for v in line.split(",")[1:]) for line in asm.splitlines() if ".incbin" in line
    ]
    assert spans and all(off % 64 == 0 for off, _ in spans)
    assert "\n    .balign 64\n" in asm
    # the first array is the first conv's bias, in the blob exactly as float32
    w = onnx.load(str(path))
    first = (tmp_path / "out" / "model_weights.c").read_text().split("extern const float ")[1]
    n = int(first.split("[")[1].split("]")[0])
    biases = [
        onnx.numpy_helper.to_array(t).reshape(-1) for t in w.graph.initializer if t.dims == [n]
    ]
    off, nbytes = spans[0]
    got = np.frombuffer(blob[off : off + nbytes], np.float32)
    assert any(np.array_equal(got, b) for b in biases)


def test_blob_builds_are_byte_identical(lenet, tmp_path):
    path, _, _ = lenet
    trees = []
    for i in range(2):
        out = tmp_path / f"o{i}"
        build_bundle(
            path, out, BuildOptions(dense=True, weights="blob", compile=False, command="c")
        )
        trees.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert trees[0] == trees[1]


@pytest.mark.parametrize("cc", ["gcc", "clang"])
@pytest.mark.parametrize("mode", ["blob", "file"])
def test_strict_warnings_and_plain_make(lenet, tmp_path, cc, mode):
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed")
    path, x, ref = lenet
    out = tmp_path / "out"
    build_bundle(path, out, BuildOptions(dense=True, weights=mode, compile=False))
    for src in ("model.c", "main.c"):
        proc = subprocess.run(
            [cc, *STRICT, "-O2", "-c", src, "-o", str(tmp_path / "x.o")],
            cwd=out,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, f"{cc} {src}:\n{proc.stderr}"
    # the bundle's own Makefile, as on the device (CC given on the command line)
    proc = subprocess.run(
        ["make", "-s", f"CC={cc}", "CFLAGS=-O2 -std=c99"], cwd=out, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    x.tofile(out / "in.bin")
    subprocess.run([str(out / "model"), "in.bin", "y.bin"], cwd=out, check=True)
    _close(np.fromfile(out / "y.bin", np.float32).reshape(ref.shape), ref)


def test_file_mode_under_sanitizers(lenet, tmp_path):
    path, x, ref = lenet
    out = tmp_path / "out"
    build_bundle(path, out, BuildOptions(dense=True, weights="file", compile=False))
    exe = out / "model_asan"
    asan_harness(out, exe, STRICT)
    x.tofile(out / "in.bin")
    run = subprocess.run([str(exe), "in.bin", "y.bin"], cwd=out, capture_output=True, text=True)
    assert run.returncode == 0 and "runtime error" not in run.stderr, run.stderr
    _close(np.fromfile(out / "y.bin", np.float32).reshape(ref.shape), ref)
    # a truncated weights file: the harness names it and exits 2, nothing leaks
    blob = (out / "model_weights.bin").read_bytes()
    (out / "model_weights.bin").write_bytes(blob[: len(blob) // 2])
    run = subprocess.run([str(exe), "in.bin", "y.bin"], cwd=out, capture_output=True, text=True)
    assert run.returncode == 2 and "model_load returned -3" in run.stderr, run.stderr


@pytest.mark.parametrize("target", ["rpi", "rpi64", "rpi0"])
@pytest.mark.parametrize("mode", ["blob", "file"])
def test_arm_targets_under_qemu(lenet, tmp_path, target, mode):
    t = load_target(target)
    if not t.can_run():
        pytest.skip(f"{target}: toolchain or qemu missing ({t.install_hint})")
    path, x, ref = lenet
    build_bundle(path, tmp_path / "out", BuildOptions(dense=True, weights=mode, target=target))
    _close(CompiledModel(tmp_path / "out").predict(x), ref)


def test_load_errors_are_clear(lenet, tmp_path):
    path, x, _ = lenet
    a, b = tmp_path / "a", tmp_path / "b"
    build_bundle(path, a, BuildOptions(dense=True, weights="file"))
    build_bundle(path, b, BuildOptions(dense=True, weights="file", prefix="other"))
    lib_ffi = CompiledModel(a)
    lib_ffi.predict(x)
    lib, ffi = lib_ffi._load()
    y = np.zeros(10, np.float32)
    xb, yb = ffi.from_buffer("float[]", x[:1].copy()), ffi.from_buffer("float[]", y)
    assert lib.model_load(str(tmp_path / "missing.bin").encode()) == -1
    assert lib.model_infer(xb, yb, 1) == -2  # a failed load leaves the model unusable
    assert lib.model_load(str(b / "other_weights.bin").encode()) == -2
    blob = (a / "model_weights.bin").read_bytes()
    (tmp_path / "short.bin").write_bytes(blob[:-100])
    assert lib.model_load(str(tmp_path / "short.bin").encode()) == -3
    assert lib.model_load(str(a / "model_weights.bin").encode()) == 0
    assert lib.model_infer(xb, yb, 1) == 0
    (a / "model_weights.bin").unlink()
    with pytest.raises(FaustgenError, match="model_load failed: the file cannot be opened"):
        CompiledModel(a).predict(x)


def _gemm_model(n_out: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((1024, n_out)).astype(np.float32)
    g = h.make_graph(
        [h.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, n_out])],
        [onnx.numpy_helper.from_array(w, "W")],
    )
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def test_auto_keeps_literals_up_to_the_limit(tmp_path):
    limit_cols = LITERAL_LIMIT_BYTES // (4 * 1024)
    for cols, expected in ((limit_cols, "c"), (limit_cols + 16, "blob")):
        p = tmp_path / f"m{cols}.onnx"
        onnx.save(_gemm_model(cols), p)
        build_bundle(p, tmp_path / f"o{cols}", BuildOptions(dense=True, compile=False))
        assert CompiledModel(tmp_path / f"o{cols}").report["model"]["weights"] == expected


@pytest.mark.parametrize("mode", ["c", "blob", "file"])
def test_uniform_weights_are_filled_not_stored(tmp_path, mode):
    """A weight of one value throughout (ConstantOfShape: the onnx package's light_* models)
    is filled on the first call instead of stored; an empty blob still loads."""
    import onnxruntime as ort

    g = h.make_graph(
        [
            h.make_node(
                "ConstantOfShape",
                ["shape"],
                ["W"],
                value=h.make_tensor("v", TensorProto.FLOAT, [1], [0.25]),
            ),
            h.make_node("MatMul", ["x", "W"], ["y"]),
        ],
        "g",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])],
        [onnx.numpy_helper.from_array(np.array([64, 64], np.int64), "shape")],
    )
    path = tmp_path / "m.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    out = tmp_path / "out"
    build_bundle(path, out, BuildOptions(dense=True, weights=mode))
    c_text = (out / "model_weights.c").read_text()
    assert "every element 0.25f" in c_text and "0.25f, 0.25f" not in c_text
    if mode != "c":
        assert (out / "model_weights.bin").stat().st_size == 64  # the header only
    for src in ("model.c", "main.c"):
        proc = subprocess.run(
            ["gcc", *STRICT, "-O2", "-c", src, "-o", str(tmp_path / "x.o")],
            cwd=out,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    ref = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    np.testing.assert_allclose(CompiledModel(out).predict(x), ref, rtol=1e-5, atol=1e-5)
