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

_NP_DTYPES = {"float32": np.float32, "int64": np.int64, "int32": np.int32, "bool": np.bool_}
_C_TYPES = {"float32": "float", "int64": "int64_t", "int32": "int32_t", "bool": "uint8_t"}


class CompiledModel:
    """A built model directory; `predict(x)` (or `predict(x0, x1, ...)`, or
    `predict({name: x})` for a model with several inputs) runs the generated C."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)
        report_path = self.out_dir / "report.json"
        if not report_path.is_file():
            raise FaustgenError(f"{self.out_dir}: not a faustgen build (no report.json)")
        try:
            self.report = json.loads(report_path.read_text())
            m = self.report["model"]
            self.prefix: str = m["prefix"]
            self.inputs = [(i["name"], tuple(i["shape"]), i["dtype"]) for i in m["inputs"]]
            self.outputs = [(o["name"], tuple(o["shape"]), o["dtype"]) for o in m["outputs"]]
            self.batch_symbolic = bool(m["batch_symbolic"])
            self.layouts = [BatchLayout(shape, self.batch_symbolic) for _, shape, _ in self.inputs]
            self.target = load_target(m["target"])
            # "file": the weights are read by PREFIX_load() (older reports: literals)
            self.weights_file = m.get("weights_file", "") if m.get("weights") == "file" else ""
        except (ValueError, KeyError, TypeError):
            raise FaustgenError(f"{report_path}: unreadable build report") from None
        self.input_shape = self.inputs[0][1]
        self.output_shapes = [shape for _, shape, _ in self.outputs]
        self.layout = self.layouts[0]
        self._lib = None
        self._ffi = None
        self._infer = None
        self._sizes = [int(np.prod(o, dtype=np.int64)) for o in self.output_shapes]
        self._layouts: dict[tuple, tuple[int, list[tuple[int, ...]]]] = {}

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.output_shapes[0]

    @property
    def input_names(self) -> list[str]:
        return [name for name, _, _ in self.inputs]

    # ------------------------------------------------------------ batching
    def batch_layout(
        self, shape: tuple[int, ...], index: int = 0
    ) -> tuple[int, list[tuple[int, ...]]]:
        """(number of model calls, shape of each output) for input `index` of `shape`."""
        key = (index, tuple(shape))
        if key in self._layouts:
            return self._layouts[key]
        layout = self.layouts[index]
        calls = layout.calls(shape)
        if calls is None:
            raise FaustgenError(
                f"input has shape {tuple(shape)}; the model expects {layout.expected()}"
            )
        exact = tuple(shape) == layout.per_call
        outs = [layout.output_shape(calls, o, exact) for o in self.output_shapes]
        self._layouts[key] = calls, outs
        return calls, outs

    def _as_list(self, xs: tuple) -> list[np.ndarray]:
        """The inputs in graph order, from positional arrays, one list of them, or one
        {name: array} dict."""
        if len(xs) == 1 and isinstance(xs[0], (list, tuple)) and len(self.inputs) > 1:
            xs = tuple(xs[0])
        if len(xs) == 1 and isinstance(xs[0], dict):
            given = xs[0]
            unknown = sorted(set(given) - set(self.input_names))
            if unknown:
                raise FaustgenError(
                    f"unknown input name(s) {', '.join(unknown)}; the model's inputs are "
                    + ", ".join(self.input_names)
                )
            missing = [n for n in self.input_names if n not in given]
            if missing:
                raise FaustgenError(f"missing input(s) {', '.join(missing)}")
            return [given[n] for n in self.input_names]
        if len(xs) != len(self.inputs):
            raise FaustgenError(
                f"{len(xs)} input(s) given; the model takes {len(self.inputs)} ("
                + ", ".join(self.input_names)
                + ")"
            )
        return list(xs)

    def check_inputs(self, xs: list) -> tuple[int, list[tuple[int, ...]]]:
        layout = None
        for k, ((name, _, dtype), x) in enumerate(zip(self.inputs, xs, strict=True)):
            where = f"input '{name}'" if len(self.inputs) > 1 else "input"
            if not isinstance(x, np.ndarray):
                raise FaustgenError(f"{where} must be a numpy array, not {type(x).__name__}")
            if x.dtype != _NP_DTYPES[dtype]:
                raise FaustgenError(f"{where} has dtype {x.dtype}; the model expects {dtype}")
            try:
                this = self.batch_layout(x.shape, k)
            except FaustgenError as e:
                raise FaustgenError(f"{where}: {e}") from None
            if layout is not None and this[0] != layout[0]:
                raise FaustgenError(
                    f"{where} holds {this[0]} sample(s), the first input {layout[0]}"
                )
            layout = layout or this
        return layout

    def check_input(self, x: np.ndarray) -> tuple[int, list[tuple[int, ...]]]:
        return self.check_inputs([x])

    # ------------------------------------------------------------ running
    def predict(self, *xs) -> np.ndarray | list[np.ndarray]:
        """Outputs for the inputs: an array, or a list of arrays for a model with several
        outputs. Inputs: one array per graph input in the model's order, or one dict."""
        xs = self._as_list(xs)
        batch, out_shapes = self.check_inputs(xs)
        xs = [np.ascontiguousarray(x) for x in xs]
        if self.target.native:
            flats = self._predict_cffi(xs, batch)
        else:
            flats = self._predict_harness(xs, batch)
        outs = [f.reshape(shape) for f, shape in zip(flats, out_shapes, strict=True)]
        return outs[0] if len(outs) == 1 else outs

    __call__ = predict

    # ------------------------------------------------------------ streaming
    def step(self, x_t: np.ndarray) -> np.ndarray:
        """One time step of a build with --stream (PREFIX_step): x_t of the step's input
        shape; the state of the recurrent layers carries over to the next call."""
        stream = self.report["model"].get("stream")
        if stream is None:
            raise FaustgenError(f"{self.out_dir}: built without --stream (no {self.prefix}_step)")
        shape = tuple(stream["input_shape"])
        if not isinstance(x_t, np.ndarray) or x_t.dtype != np.float32:
            raise FaustgenError(f"x_t must be a float32 numpy array of shape {shape}")
        if x_t.size != int(np.prod(shape)):
            raise FaustgenError(f"x_t has shape {x_t.shape}; the step takes {shape}")
        lib, ffi = self._load()
        x_t = np.ascontiguousarray(x_t)
        y = np.empty(tuple(stream["output_shape"]), np.float32)
        rc = getattr(lib, f"{self.prefix}_step")(
            ffi.from_buffer("float[]", x_t), ffi.from_buffer("float[]", y)
        )
        if rc != 0:
            raise FaustgenError(f"{self.prefix}_step returned {rc}")
        return y

    def reset(self) -> None:
        """Start a new sequence (PREFIX_reset)."""
        if self.report["model"].get("stream") is None:
            raise FaustgenError(f"{self.out_dir}: built without --stream (no {self.prefix}_reset)")
        lib, _ = self._load()
        getattr(lib, f"{self.prefix}_reset")()

    def _signature(self) -> str:
        ins = [f"const {_C_TYPES[d]} *" for _, _, d in self.inputs]
        outs = [f"{_C_TYPES[d]} *" for _, _, d in self.outputs]
        return f"int {self.prefix}_infer({', '.join(ins + outs)}, int batch);"

    def _load(self):
        if self._lib is None:
            lib_path = self.out_dir / f"lib{self.prefix}.so"
            if not lib_path.is_file():
                raise FaustgenError(f"{self.out_dir}: no host library {lib_path.name} to load")
            ffi = cffi.FFI()
            ffi.cdef(self._signature())
            if self.report["model"].get("stream") is not None:
                ffi.cdef(
                    f"int {self.prefix}_step(const float *x_t, float *y_t);\n"
                    f"void {self.prefix}_reset(void);"
                )
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

    def _empty_outputs(self, batch) -> list[np.ndarray]:
        return [
            np.empty(batch * n, _NP_DTYPES[d])
            for n, (_, _, d) in zip(self._sizes, self.outputs, strict=True)
        ]

    def _predict_cffi(self, xs, batch) -> list[np.ndarray]:
        if self._infer is None:
            lib, _ = self._load()
            self._infer = getattr(lib, f"{self.prefix}_infer")
        ffi = self._ffi
        ys = self._empty_outputs(batch)
        ptrs = [
            ffi.from_buffer(f"{_C_TYPES[d]}[]", a.view(np.uint8) if d == "bool" else a)
            for a, d in zip(xs + ys, [d for *_, d in self.inputs + self.outputs], strict=True)
        ]
        rc = self._infer(*ptrs, batch)
        if rc != 0:
            raise FaustgenError(f"{self.prefix}_infer returned {rc}")
        return ys

    def _predict_harness(self, xs, batch) -> list[np.ndarray]:
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
            fins = self._write_inputs(xs, Path(tmp))
            fouts = [Path(tmp) / f"out{k}.bin" for k in range(len(self.outputs))]
            cmd = [*self.target.run_prefix(), str(exe), *map(str, fins + fouts)]
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
            ys = [
                np.fromfile(f, _NP_DTYPES[d])
                for f, (_, _, d) in zip(fouts, self.outputs, strict=True)
            ]
        for y, n in zip(ys, self._sizes, strict=True):
            if y.size != batch * n:
                raise FaustgenError(f"{exe.name} wrote {y.size} values, expected {batch * n}")
        return ys

    def _write_inputs(self, xs, tmp: Path) -> list[Path]:
        fins = []
        for k, x in enumerate(xs):
            fins.append(tmp / f"in{k}.bin")
            np.ascontiguousarray(x).tofile(fins[-1])
        return fins

    def run_timed(self, x, repeat: int) -> float:
        """Median microseconds of one predict() of x (an array, a list of arrays, or a dict),
        timed inside the C harness."""
        xs = self._as_list((x,))
        self.check_inputs(xs)
        exe = self.out_dir / self.prefix
        with tempfile.TemporaryDirectory(prefix="faustgen-bench-") as tmp:
            fins = self._write_inputs(xs, Path(tmp))
            fouts = [Path(tmp) / f"out{k}.bin" for k in range(len(self.outputs))]
            cmd = [*self.target.run_prefix(), str(exe), *map(str, fins + fouts), str(repeat)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
            if proc.returncode != 0:
                raise FaustgenError(f"timing {exe.name} failed: {proc.stderr.strip()[:200]}")
        return float(proc.stdout.strip().splitlines()[-1])
