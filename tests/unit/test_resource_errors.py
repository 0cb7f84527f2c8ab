"""Resources that run out are one line `faustgen: error: ...` saying what ran out and what to
do (exit 2), never an internal error, and never leave a half-written output directory."""

from __future__ import annotations

import dataclasses
import errno
import pathlib

import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper as h
from onnx import numpy_helper as nh

from faustgen import compiler
from faustgen.backend import load_target
from faustgen.cli import main


def _model(tmp_path) -> pathlib.Path:
    g = h.make_graph(
        [h.make_node("MatMul", ["x", "W"], ["y"], name="fc")],
        "g",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [nh.from_array(np.ones((4, 3), np.float32), "W")],
    )
    path = tmp_path / "m.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    return path


def _build(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["build", str(_model(tmp_path)), "-o", str(out)])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("faustgen: error: "), err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []
    return lines[0]


def test_memory_error_is_one_line(tmp_path, capsys, monkeypatch):
    def exhausted(graph):
        raise MemoryError("Unable to allocate 17.0 GiB for an array")

    monkeypatch.setattr(compiler, "optimize", exhausted)
    line = _build(tmp_path, capsys)
    assert "out of memory during 'build'" in line and "--max-params" in line


def test_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    real = pathlib.Path.write_text

    def full(self, *args, **kw):
        if self.suffix == ".c":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *args, **kw)

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    line = _build(tmp_path, capsys)
    assert "no space left on the device" in line and "free disk space" in line


def _fake_compiler(tmp_path, monkeypatch, body: str) -> None:
    cc = tmp_path / "fakecc"
    cc.write_text("#!/bin/sh\n" + body + "\n")
    cc.chmod(0o755)
    host = dataclasses.replace(load_target("host"), cc=str(cc))
    monkeypatch.setattr(compiler, "load_target", lambda name: host)
    monkeypatch.setenv("FAUSTGEN_CACHE", str(tmp_path / "cache"))


def test_killed_compiler_is_one_line(tmp_path, capsys, monkeypatch):
    _fake_compiler(tmp_path, monkeypatch, 'case "$*" in *--version*) exit 0;; esac\nkill -9 $$')
    line = _build(tmp_path, capsys)
    assert "was killed (SIGKILL)" in line and "out-of-memory killer" in line


def test_compiler_out_of_disk_says_so(tmp_path, capsys, monkeypatch):
    _fake_compiler(
        tmp_path,
        monkeypatch,
        'case "$*" in *--version*) exit 0;; esac\n'
        'echo "fatal error: error writing to /tmp/ccX.s: No space left on device" >&2; exit 1',
    )
    line = _build(tmp_path, capsys)
    assert "No space left on device" in line and "free disk space" in line


def test_a_bug_is_still_an_internal_error_with_code_3(tmp_path, capsys, monkeypatch):
    def bug(graph):
        raise KeyError("oops")

    monkeypatch.setattr(compiler, "optimize", bug)
    code = main(["build", str(_model(tmp_path)), "-o", str(tmp_path / "out")])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert code == 3 and line.startswith("faustgen: internal error: KeyError")


def test_stdout_closed_early_stops_quietly():
    """`faustgen targets --json | head -1`: no traceback, no internal error, exit 141."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "faustgen.cli", "targets", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader went away before faustgen wrote
    err = proc.stderr.read().decode()
    assert proc.wait() == 141
    assert "error" not in err and "Traceback" not in err, err
