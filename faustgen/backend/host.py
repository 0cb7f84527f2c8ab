"""Running a built bundle: cffi on the host, the harness under qemu-user for other targets.

`CompiledModel` is the public Python binding: tests use the same path users do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import cffi
import numpy as np

from faustgen.backend.toolchain import killed_message, load_target
from faustgen.errors import FaustgenError
from faustgen.ir import BatchLayout

# PREFIX_load() return codes (templates/weights.c.j2)
_LOAD_ERRORS = {
    -1: "cannot be opened",
    -2: "is not the weights file of this build",
    -3: "is truncated",
}


class CompiledModel:
    """A built model directory; `predict(x)` runs the generated C."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)
        report_path = self.out_dir / "report.json"
        if not report_path.is_file():
            raise FaustgenError(f"{self.out_dir}: not a faustgen build (no report.json)")
        try:
            self.report = json.loads(report_path.read_text())
            m = self.report["model"]
            self.prefix: str = m["prefix"]
            self.input_shape = tuple(m["input_shape"])
            self.output_shapes = [tuple(o) for o in m["output_shapes"]]
            self.batch_symbolic = bool(m["batch_symbolic"])
            self.layout = BatchLayout(self.input_shape, self.batch_symbolic)
            self.target = load_target(m["target"])
            # "file": the weights are read by PREFIX_load() (older reports: literals)
            self.weights_file = m.get("weights_file", "") if m.get("weights") == "file" else ""
        except (ValueError, KeyError, TypeError):
            raise FaustgenError(f"{report_path}: unreadable build report") from None
        self._lib = None
        self._ffi = None
        self._infer = None
        self._sizes = [int(np.prod(o, dtype=np.int64)) for o in self.output_shapes]
        self._layouts: dict[tuple[int, ...], tuple[int, list[tuple[int, ...]]]] = {}

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.output_shapes[0]

    @property
    def output_size(self) -> int:
        """Floats of one call's output record (all outputs back to back)."""
        return sum(self._sizes)

    # ------------------------------------------------------------ batching
    def batch_layout(self, shape: tuple[int, ...]) -> tuple[int, list[tuple[int, ...]]]:
        """(number of model calls, shape of each output) for an input of `shape`."""
        calls = self.layout.calls(shape)
        if calls is None:
            raise FaustgenError(
                f"input has shape {tuple(shape)}; the model expects {self.layout.expected()}"
            )
        exact = tuple(shape) == self.input_shape
        return calls, [self.layout.output_shape(calls, o, exact) for o in self.output_shapes]

    def check_input(self, x: np.ndarray) -> tuple[int, list[tuple[int, ...]]]:
        if not isinstance(x, np.ndarray):
            raise FaustgenError(f"input must be a numpy array, not {type(x).__name__}")
        if x.dtype != np.float32:
            raise FaustgenError(f"input has dtype {x.dtype}; the model expects float32")
        layout = self._layouts.get(x.shape)
        if layout is None:
            layout = self._layouts[x.shape] = self.batch_layout(x.shape)
        return layout

    # ------------------------------------------------------------ running
    def predict(self, x: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """Outputs for x: an array, or a list of arrays for a model with several outputs."""
        batch, out_shapes = self.check_input(x)
        x = np.ascontiguousarray(x)
        if self.target.native:
            flat = self._predict_cffi(x, batch)
        else:
            flat = self._predict_harness(x, batch)
        if len(out_shapes) == 1:
            return flat.reshape(out_shapes[0])
        records = flat.reshape(batch, self.output_size)
        outs, pos = [], 0
        for shape, n in zip(out_shapes, self._sizes, strict=True):
            outs.append(np.ascontiguousarray(records[:, pos : pos + n]).reshape(shape))
            pos += n
        return outs

    __call__ = predict

    def _load(self):
        if self._lib is None:
            lib_path = self.out_dir / f"lib{self.prefix}.so"
            if not lib_path.is_file():
                raise FaustgenError(f"{self.out_dir}: no host library {lib_path.name} to load")
            ffi = cffi.FFI()
            ffi.cdef(f"int {self.prefix}_infer(const float *input, float *output, int batch);")
            if self.weights_file:
                ffi.cdef(f"int {self.prefix}_load(const char *path);")
            # dlopen caches by path: load a private copy so a rebuilt bundle is never stale.
            tmp = Path(tempfile.mkdtemp(prefix="faustgen-"))
            private = tmp / lib_path.name
            shutil.copyfile(lib_path, private)
            try:
                lib = ffi.dlopen(str(private))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            if self.weights_file:
                self._load_weights(lib)
            self._lib, self._ffi = lib, ffi
        return self._lib, self._ffi

    def _load_weights(self, lib) -> None:
        path = self.out_dir / self.weights_file
        rc = getattr(lib, f"{self.prefix}_load")(os.fsencode(path))
        if rc != 0:
            why = _LOAD_ERRORS.get(rc, f"returned {rc}")
            raise FaustgenError(f"{path}: {self.prefix}_load failed: the file {why}")

    def _predict_cffi(self, x, batch) -> np.ndarray:
        if self._infer is None:
            lib, _ = self._load()
            self._infer = getattr(lib, f"{self.prefix}_infer")
        ffi = self._ffi
        y = np.empty(batch * self.output_size, np.float32)
        rc = self._infer(ffi.from_buffer("float[]", x), ffi.from_buffer("float[]", y), batch)
        if rc != 0:
            raise FaustgenError(f"{self.prefix}_infer returned {rc}")
        return y

    def _predict_harness(self, x, batch) -> np.ndarray:
        exe = self.out_dir / self.prefix
        if not exe.is_file():
            raise FaustgenError(
                f"{self.out_dir}: no compiled harness '{self.prefix}' "
                f"(install the toolchain: {self.target.install_hint})"
            )
        if not self.target.can_run():
            raise FaustgenError(
                f"cannot run target '{self.target.name}' here (install: {self.target.install_hint})"
            )
        with tempfile.TemporaryDirectory(prefix="faustgen-run-") as tmp:
            fin, fout = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
            x.tofile(fin)
            cmd = [*self.target.run_prefix(), str(exe), str(fin), str(fout)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if proc.returncode < 0:
                raise FaustgenError(
                    f"running {exe.name}: {killed_message(exe.name, -proc.returncode)}"
                )
            if proc.returncode != 0:
                raise FaustgenError(
                    f"running {exe.name} under {' '.join(cmd[:1]) or 'the host'} "
                    f"failed: {proc.stderr.strip()[:200]}"
                )
            y = np.fromfile(fout, np.float32)
        if y.size != batch * self.output_size:
            raise FaustgenError(
                f"{exe.name} wrote {y.size} floats, expected {batch * self.output_size}"
            )
        return y

    def run_timed(self, x: np.ndarray, repeat: int) -> float:
        """Median microseconds of one predict() of x, timed inside the C harness."""
        self.check_input(x)
        exe = self.out_dir / self.prefix
        with tempfile.TemporaryDirectory(prefix="faustgen-bench-") as tmp:
            fin, fout = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
            np.ascontiguousarray(x).tofile(fin)
            cmd = [*self.target.run_prefix(), str(exe), str(fin), str(fout), str(repeat)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
            if proc.returncode != 0:
                raise FaustgenError(f"timing {exe.name} failed: {proc.stderr.strip()[:200]}")
        return float(proc.stdout.strip().splitlines()[-1])
