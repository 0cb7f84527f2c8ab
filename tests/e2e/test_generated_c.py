"""Generated C hygiene: strict warnings with gcc and clang, clean under ASan/UBSan,
byte-identical across builds, and a bundle that builds from its own Makefile."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from faustgen import zoo  # noqa: E402
from faustgen.backend import CompiledModel  # noqa: E402
from faustgen.codegen.render import RUNTIME_SOURCES  # noqa: E402
from faustgen.compiler import BuildOptions, build_bundle  # noqa: E402
from tests.conftest import asan_harness  # noqa: E402

STRICT = [
    "-std=c99",
    "-Wall",
    "-Wextra",
    "-Wcast-qual",
    "-Wdouble-promotion",
    "-Wfloat-conversion",
    "-Wshadow",
    "-Werror",
]


@pytest.fixture(scope="module")
def lenet_bundle(tmp_path_factory):
    d = tmp_path_factory.mktemp("lenet")
    model = zoo.lenet5()
    zoo.randomize_batchnorm(model)
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    path = zoo.export(model, x[:1], d / "lenet.onnx")
    build_bundle(path, d / "out", BuildOptions(dense=True, compile=False))
    return d / "out", x, zoo.torch_predict(model, x)


@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_strict_warnings(cc, lenet_bundle, tmp_path):
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} is not installed")
    out, _, _ = lenet_bundle
    for src in ["model.c", "main.c", *RUNTIME_SOURCES]:
        proc = subprocess.run(
            [cc, *STRICT, "-O2", "-c", str(out / src), "-o", str(tmp_path / "x.o")],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, f"{cc} {src}:\n{proc.stderr}"


def test_sanitizers_report_nothing(lenet_bundle, tmp_path):
    out, x, ref = lenet_bundle
    exe = tmp_path / "model_asan"
    asan_harness(out, exe, STRICT)
    x.tofile(tmp_path / "in.bin")
    run = subprocess.run(
        [str(exe), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "runtime error" not in run.stderr and "AddressSanitizer" not in run.stderr
    y = np.fromfile(tmp_path / "out.bin", np.float32).reshape(ref.shape)
    assert np.max(np.abs(y - ref)) <= 1e-5 * np.max(np.abs(ref))


def test_builds_are_byte_identical(tmp_path):
    model = zoo.mlp()
    x = np.zeros((1, 1, 28, 28), np.float32)
    path = zoo.export(model, x, tmp_path / "mlp.onnx")
    texts = []
    for i in range(2):
        out = tmp_path / f"o{i}"
        build_bundle(
            path, out, BuildOptions(dense=True, compile=False, command="faustgen build mlp.onnx")
        )
        texts.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert texts[0] == texts[1]


def test_bundle_makefile_builds_the_harness(lenet_bundle, tmp_path):
    out, x, ref = lenet_bundle
    work = tmp_path / "bundle"
    shutil.copytree(out, work)
    proc = subprocess.run(
        ["make", "-s", "CFLAGS=-O2 -std=c99"], cwd=work, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    x.tofile(work / "in.bin")
    subprocess.run([str(work / "model"), "in.bin", "out.bin"], cwd=work, check=True)
    y = np.fromfile(work / "out.bin", np.float32).reshape(ref.shape)
    assert np.max(np.abs(y - ref)) <= 1e-5 * np.max(np.abs(ref))


def test_host_build_loads_and_matches(lenet_bundle, tmp_path):
    """The normal build path (faustgen's own compile at -O3 -march=native)."""
    out, x, ref = lenet_bundle
    src = out.parent / "lenet.onnx"
    build_bundle(src, tmp_path / "full", BuildOptions(dense=True))
    y = CompiledModel(tmp_path / "full").predict(x)
    assert np.max(np.abs(y - ref)) <= 1e-5 * np.max(np.abs(ref))
