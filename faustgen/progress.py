"""Progress lines on stderr for long work (factorizations, compiles), terminal or not.

On a terminal each step is shown as it starts. Elsewhere (CI logs, nohup, a pipe) the lines
are rate-limited: nothing for work that ends within `interval` seconds, then at most one
line per interval. In both cases a step that runs longer than the interval gets a heartbeat
line ("... still running, N s"), so a 15-minute factorization of one layer is never silent.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TextIO

DEFAULT_INTERVAL = 30.0  # seconds between lines when stderr is not a terminal


def default_interval() -> float:
    """$FAUSTGEN_PROGRESS_SECONDS, else DEFAULT_INTERVAL."""
    try:
        return max(float(os.environ.get("FAUSTGEN_PROGRESS_SECONDS", DEFAULT_INTERVAL)), 0.01)
    except ValueError:
        return DEFAULT_INTERVAL


class Progress:
    """`progress(message)` starts a step; `close()` (or leaving a `with`) ends the last one."""

    def __init__(
        self, stream: TextIO | None = None, interval: float | None = None, tty: bool | None = None
    ):
        self.stream = stream or sys.stderr
        self.interval = default_interval() if interval is None else interval
        self.tty = self.stream.isatty() if tty is None else tty
        self._lock = threading.Lock()
        self._step: str | None = None
        self._step_start = self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._step, self._step_start = message, now
            if self.tty or now - self._last >= self.interval:
                self._emit(message, now)
        if self._thread is None:
            self._thread = threading.Thread(target=self._heartbeat, daemon=True)
            self._thread.start()

    def _emit(self, text: str, now: float) -> None:
        print(f"faustgen: {text}", file=self.stream, flush=True)
        self._last = now

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.interval / 4):
            now = time.monotonic()
            with self._lock:
                if self._step is not None and now - self._last >= self.interval:
                    self._emit(f"{self._step}: still running, {now - self._step_start:.0f} s", now)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._step = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
