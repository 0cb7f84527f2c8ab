"""The wheel ships templates/, runtime_c/ and targets/, and faustgen finds them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from faustgen.resources import data_dir

ROOT = Path(__file__).resolve().parents[2]


def test_data_dirs_resolve():
    for name in ("templates", "runtime_c", "targets"):
        assert data_dir(name).is_dir()
    assert (data_dir("templates") / "model.c.j2").is_file()
    assert (data_dir("runtime_c") / "fg_runtime.h").is_file()
    assert (data_dir("targets") / "host.toml").is_file()


def test_wheel_contains_data(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("faustgen-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for rel in (
        "templates/model.c.j2",
        "templates/weights.c.j2",
        "runtime_c/fg_runtime.h",
        "runtime_c/fg_kernel.h",
        "runtime_c/fg_dense.c",
        "targets/host.toml",
        "targets/rpi.toml",
    ):
        assert f"faustgen/_data/{rel}" in names, rel
    for module in ("cli/main.py", "compiler.py", "tune/finetune.py", "demo/zoo.py"):
        assert f"faustgen/{module}" in names, module
