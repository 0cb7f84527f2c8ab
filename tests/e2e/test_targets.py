"""Raspberry Pi targets: cross-compiled bundles run under qemu-user and match the host build
and onnxruntime; the bundle builds from its own Makefile with the cross compiler as CC."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import onnx
import pytest

from faustgen.backend import CompiledModel, load_target
from faustgen.compiler import BuildOptions, build_bundle
from faustgen.ir import BatchLayout
from faustgen.tune.reference import compare, ort_predict, ort_session

ARM_TARGETS = ["rpi", "rpi64", "rpi0"]


def _need(target_name: str):
    t = load_target(target_name)
    if not t.can_run():
        pytest.skip(
            f"target {target_name}: {t.cc} or {t.emulator[0]} is not installed ({t.install_hint})"
        )
    return t


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch = pytest.importorskip("torch")
    del torch
    from faustgen import zoo

    d = tmp_path_factory.mktemp("models")
    x = np.random.default_rng(3).standard_normal((3, 1, 28, 28)).astype(np.float32)
    lenet = zoo.lenet5()
    zoo.randomize_batchnorm(lenet)
    return {
        "mlp": zoo.export(zoo.mlp(), x[:1], d / "mlp.onnx"),
        "lenet": zoo.export(lenet, x[:1], d / "lenet.onnx", dynamo=True),
    }, x


@pytest.mark.parametrize("target", ARM_TARGETS)
@pytest.mark.parametrize("name", ["mlp", "lenet"])
def test_model_under_qemu_matches_host_and_onnxruntime(target, name, models, tmp_path):
    _need(target)
    paths, x = models
    arm = CompiledModel(
        build_bundle(
            paths[name], tmp_path / target, BuildOptions(target=target, dense=True)
        ).out_dir
    )
    host = CompiledModel(
        build_bundle(paths[name], tmp_path / "host", BuildOptions(dense=True)).out_dir
    )
    y = arm.predict(x)
    ref = ort_predict(ort_session(paths[name]), x, arm.layout)
    assert compare(y, ref)["max_rel"] < 1e-5
    assert compare(y, host.predict(x))["max_rel"] < 1e-5
    sizes = arm.report["target_sizes"]
    assert sizes and sizes[".rodata"] > arm.report["totals"]["weight_bytes"] * 0.9
    assert sizes[".bss"] >= arm.report["totals"]["arena_bytes"]


@pytest.mark.parametrize("target", ARM_TARGETS)
def test_bundle_makefile_with_cross_compiler(target, models, tmp_path):
    t = _need(target)
    paths, x = models
    out = build_bundle(
        paths["lenet"], tmp_path / "b", BuildOptions(target=target, dense=True, compile=False)
    ).out_dir
    proc = subprocess.run(["make", "-s", f"CC={t.cc}"], cwd=out, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    x.tofile(out / "in.bin")
    subprocess.run([*t.run_prefix(), str(out / "model"), "in.bin", "out.bin"], cwd=out, check=True)
    y = np.fromfile(out / "out.bin", np.float32).reshape(3, 10)
    ref = ort_predict(ort_session(paths["lenet"]), x, BatchLayout((1, 1, 28, 28), True))
    assert compare(y, ref)["max_rel"] < 1e-5


# A representative slice of the ONNX operator cases, run on each ARM target.
OP_CASES = [
    "test_conv_with_strides_and_asymmetric_padding", "test_conv_with_autopad_same",
    "test_maxpool_2d_ceil", "test_maxpool_3d_dilations",
    "test_averagepool_2d_pads_count_include_pad",
    "test_averagepool_2d_ceil", "test_gemm_all_attributes", "test_matmul_4d",
    "test_softmax_axis_1", "test_logsoftmax_large_number", "test_batchnorm_epsilon",
    "test_lrn", "test_add_bcast", "test_div_bcast", "test_prelu_broadcast", "test_selu",
    "test_elu", "test_hardsigmoid", "test_tanh", "test_sigmoid", "test_softplus",
    "test_concat_3d_axis_1", "test_transpose_all_permutations_3", "test_globalaveragepool",
    "test_globalmaxpool", "test_clip_splitbounds", "test_leakyrelu", "test_gelu_tanh_1",
]  # fmt: skip


@pytest.mark.parametrize("target", ARM_TARGETS)
def test_operator_cases_under_qemu(target, tmp_path, target_build):
    _need(target)
    from tests.ops.test_onnx_node_cases import _cases, single_input_model

    cases = _cases()
    failures = []
    for name in OP_CASES:
        model, x, expected = single_input_model(cases[name])
        path = tmp_path / f"{name}.onnx"
        onnx.save(model, path)
        y = target_build(path, target).predict(x)
        ref = expected[0]
        err = float(np.max(np.abs(y - ref))) / max(float(np.max(np.abs(ref))), 1e-30)
        if err > 1e-5:
            failures.append(f"{name}: {err:.3g}")
    assert not failures, failures


def test_cross_compiler_missing_gives_source_bundle(models, tmp_path, monkeypatch):
    """Without the toolchain, build writes the bundle and says how to install it."""
    paths, _ = models
    real_which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name, *a, **k: None if "arm" in name else real_which(name, *a, **k)
    )
    result = build_bundle(paths["mlp"], tmp_path / "src", BuildOptions(target="rpi", dense=True))
    assert (result.out_dir / "model.c").is_file()
    assert not (result.out_dir / "model").exists()
    assert any("apt-get install gcc-arm-linux-gnueabihf" in m for m in result.messages)
