"""Conflicting, missing or malformed flags of every command: one line `faustgen: error: ...`
on stderr naming the flags, exit 2 (argparse's usage block would be many lines)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from faustgen.cli import main

CASES = [
    (["build", "m.onnx", "-o", "x", "--jobs", "2", "--ray", "auto"], ["--ray", "--jobs"]),
    (["build", "m.onnx", "-o", "x", "--rcg", "2", "--max-error", "0.1"], ["--max-error", "--rcg"]),
    (
        ["build", "m.onnx", "-o", "x", "--rcg", "2", "--max-accuracy-drop", "1"],
        ["--max-accuracy-drop", "--rcg"],
    ),
    (
        ["build", "m.onnx", "-o", "x", "--max-error", ".1", "--max-accuracy-drop", "1"],
        ["--max-accuracy-drop", "--max-error"],
    ),
    (["build", "m.onnx"], ["-o/--out", "build"]),
    (["build", "m.onnx", "-o", "x", "--weights", "zz"], ["--weights", "zz"]),
    (["build", "m.onnx", "-o", "x", "--rcg", "many"], ["--rcg", "many"]),
    (["build", "m.onnx", "-o", "x", "--input-shape", "1,0"], ["--input-shape"]),
    (["experiment", "m.onnx", "-o", "x"], ["--data", "--labels"]),
    (
        ["experiment", "m.onnx", "--data", "d", "--labels", "l", "-o", "x", "--rcg", "0.5"],
        ["--rcg"],
    ),
    (["factorize", "w.npy", "-o", "x", "--rcg", "2", "--max-error", ".1"], ["--max-error"]),
    (["factorize", "w.npy", "-o", "x", "--method", "qr"], ["--method", "qr"]),
    (["bench"], ["model"]),
    (["bench", "m.onnx", "--batch", "two"], ["--batch"]),
    (["bench", "m.onnx", "--repeat", "0"], ["--repeat", ">= 1"]),
    (["bench", "m.onnx", "--batch", "0"], ["--batch", ">= 1"]),
    (["experiment", "m.onnx", "--data", "d", "--labels", "l", "-o", "x", "--pue", ".5"], ["--pue"]),
    (
        ["experiment", "m.onnx", "--data", "d", "--labels", "l", "-o", "x", "--watts", "0"],
        ["--watts"],
    ),
    (
        ["experiment", "m.onnx", "--data", "d", "--labels", "l", "-o", "x", "--carbon", "-1"],
        ["--carbon"],
    ),
    (["nope"], ["nope"]),
    ([], ["COMMAND"]),
]


@pytest.mark.parametrize(("argv", "needles"), CASES, ids=lambda v: " ".join(v)[:40])
def test_flag_error_is_one_line(argv, needles, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("faustgen: error: ")
    assert "usage" not in err
    for needle in needles:
        assert needle in lines[0]


def test_flag_conflict_from_the_shell():
    """The installed entry point: exit status 2 and the one line, nothing else."""
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "faustgen.cli",
            "build",
            "m.onnx",
            "-o",
            "x",
            "--jobs",
            "1",
            "--ray",
            "auto",
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2
    assert p.stdout == ""
    assert p.stderr.count("\n") == 1
    assert p.stderr.startswith("faustgen: error: build: argument --ray: not allowed with")
