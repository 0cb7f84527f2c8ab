"""Progress lines: every step on a terminal; rate-limited elsewhere (CI logs, nohup); a
heartbeat while one step runs long."""

from __future__ import annotations

import io
import time

from faustgen.cli import main
from faustgen.progress import Progress
from tests.unit.test_resource_errors import _model as tiny_model


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_terminal_shows_every_step():
    s = io.StringIO()
    with Progress(s, interval=60, tty=True) as p:
        for i in range(5):
            p(f"step {i}")
    assert _lines(s) == [f"faustgen: step {i}" for i in range(5)]


def test_log_is_silent_for_short_work():
    s = io.StringIO()
    with Progress(s, interval=60, tty=False) as p:
        for i in range(100):
            p(f"step {i}")
    assert _lines(s) == []


def test_log_rate_is_bounded_and_long_steps_get_a_heartbeat():
    s = io.StringIO()
    interval = 0.2
    start = time.monotonic()
    with Progress(s, interval=interval, tty=False) as p:
        for i in range(40):  # many quick steps
            p(f"step {i}")
            time.sleep(0.02)
        p("a long step")
        time.sleep(5 * interval)
    elapsed = time.monotonic() - start
    lines = _lines(s)
    assert 1 <= len(lines) <= elapsed / interval + 1
    assert any(ln.startswith("faustgen: a long step: still running") for ln in lines)


def test_build_in_a_log_prints_compile_progress(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FAUSTGEN_PROGRESS_SECONDS", "0.01")
    path = tiny_model(tmp_path)
    assert main(["build", str(path), "-o", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "faustgen: compiling model.c" in err
