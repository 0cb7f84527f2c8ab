"""Shared fixtures: fast host builds for the many small models the tests compile.

Tests build bundles with faustgen itself (compile=False) and link them against
the runtime compiled once per session at -O1 with the strict warning flags, so
hundreds of operator cases stay fast. Full builds (faustgen's own compile step
at -O3) are exercised by the end-to-end tests.
"""

from __future__ import annotations

import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from faustgen.backend import CompiledModel
from faustgen.codegen.render import RUNTIME_SOURCES
from faustgen.compiler import BuildOptions, build_bundle
from faustgen.resources import data_dir

STRICT = [
    "-std=c99",
    "-Wall",
    "-Wextra",
    "-Wcast-qual",
    "-Wdouble-promotion",
    "-Wfloat-conversion",
    "-Werror",
]


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Builds under test keep their caches (compiled kernels, factorized layers) in a
    temporary directory, never in the user's $FAUSTGEN_CACHE or ~/.cache/faustgen."""
    patch = pytest.MonkeyPatch()
    patch.setenv("FAUSTGEN_CACHE", str(tmp_path_factory.mktemp("faustgen-cache")))
    yield
    patch.undo()


@contextmanager
def factorized_regardless():
    """The host's convolution costs as they were before the dense convolution got faster and
    the patch matrix was counted, where a small factorized convolution looked faster than
    the dense one (with this machine's measured costs its im2col alone takes about as long
    as the dense convolution, so the builder keeps it dense). For tests of the factorized
    path itself (numerics, fine-tuning, the runner, the whole-model split);
    tests/e2e/test_factorized.py tests the speed decision."""
    from faustgen.passes.costmodel import CostModel

    from_target = CostModel.from_target.__func__
    old = {"gemm_mac": 0.0205, "spmm_entry": 0.0272, "im2col_float": 0.0}

    def costs_before(cls, table=None):
        return from_target(cls, {**(table or {}), **old})

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CostModel, "from_target", classmethod(costs_before))
        yield


@pytest.fixture
def factorize_regardless():
    with factorized_regardless():
        yield


@pytest.fixture(scope="session")
def runtime_objects(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("runtime")
    src = data_dir("runtime_c")
    objs = []
    for name in RUNTIME_SOURCES:
        obj = d / name.replace(".c", ".o")
        subprocess.run(
            ["gcc", *STRICT, "-O1", "-fPIC", "-I", str(src), "-c", str(src / name), "-o", str(obj)],
            check=True,
        )
        objs.append(obj)
    return objs


@pytest.fixture
def quick_build(tmp_path, runtime_objects):
    """build(model_path, **BuildOptions fields) -> CompiledModel linked to the prebuilt runtime."""
    counter = iter(range(10**6))

    def build(model_path, **kw) -> CompiledModel:
        out = tmp_path / f"build{next(counter)}"
        opts = BuildOptions(**{"dense": True, "compile": False, **kw})
        build_bundle(model_path, out, opts)
        cmd = [
            "gcc",
            *STRICT,
            "-O1",
            "-fPIC",
            "-shared",
            "-o",
            str(out / f"lib{opts.prefix}.so"),
            str(out / f"{opts.prefix}.c"),
            *map(str, runtime_objects),
            "-lm",
        ]
        subprocess.run(cmd, check=True, cwd=out)
        return CompiledModel(out)

    return build


@pytest.fixture(scope="session")
def target_runtime(tmp_path_factory):
    """target name -> runtime object files compiled once with that target's compiler."""
    cache: dict[str, list[Path]] = {}

    def get(target) -> list[Path]:
        if target.name not in cache:
            d = tmp_path_factory.mktemp(f"runtime_{target.name}")
            src = data_dir("runtime_c")
            objs = []
            for name in RUNTIME_SOURCES:
                obj = d / name.replace(".c", ".o")
                subprocess.run(
                    [
                        target.cc,
                        *target.cflags,
                        "-I",
                        str(src),
                        "-c",
                        str(src / name),
                        "-o",
                        str(obj),
                    ],
                    check=True,
                )
                objs.append(obj)
            cache[target.name] = objs
        return cache[target.name]

    return get


@pytest.fixture
def target_build(tmp_path, target_runtime):
    """build(model_path, target_name) -> CompiledModel with a harness for that target, linked
    against the runtime compiled once per session (the model itself at the target's flags)."""
    from faustgen.backend import load_target

    counter = iter(range(10**6))

    def build(model_path, target_name: str, **kw) -> CompiledModel:
        target = load_target(target_name)
        out = tmp_path / f"{target_name}{next(counter)}"
        opts = BuildOptions(**{"target": target_name, "dense": True, "compile": False, **kw})
        build_bundle(model_path, out, opts)
        cmd = [
            target.cc,
            *target.cflags,
            *target.ldflags,
            "-o",
            str(out / opts.prefix),
            str(out / "main.c"),
            str(out / f"{opts.prefix}.c"),
            *map(str, target_runtime(target)),
            *target.ldlibs,
        ]
        subprocess.run(cmd, check=True, cwd=out)
        return CompiledModel(out)

    return build


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def asan_harness(out: Path, exe: Path, strict: list[str]) -> None:
    """Compile the bundle's harness in `out` with ASan/UBSan (skips when the runtime is absent)."""
    sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    sources = ["main.c", "model.c", *RUNTIME_SOURCES]
    proc = subprocess.run(
        ["gcc", *strict, "-O1", "-g", *sanitize, "-o", str(exe), *sources, "-lm"],
        cwd=out,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 and "asan" in proc.stderr.lower():
        pytest.skip(f"sanitizer runtime unavailable: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
