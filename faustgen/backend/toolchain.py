"""Targets (data files in targets/) and the compiler invocations that use them."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from faustgen.errors import FaustgenError
from faustgen.resources import data_dir


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    cc: str  # "" for a source-only target
    device_cc: str  # the compiler the bundle's Makefile uses when built on the device
    cflags: tuple[str, ...]
    ldflags: tuple[str, ...]
    ldlibs: tuple[str, ...]
    size: str
    emulator: tuple[str, ...]  # command prefix to run a binary; () = native
    sysroot: str
    native: bool  # binaries run on this machine without emulation (cffi can load them)
    install_hint: str
    cost: tuple[tuple[str, float], ...] = ()  # per-entry kernel costs for the cost model

    @property
    def compiler_path(self) -> str | None:
        return shutil.which(self.cc) if self.cc else None

    @property
    def emulator_path(self) -> str | None:
        return shutil.which(self.emulator[0]) if self.emulator else None

    def can_compile(self) -> bool:
        return self.compiler_path is not None

    def can_run(self) -> bool:
        return self.can_compile() and (self.native or self.emulator_path is not None)

    def run_prefix(self) -> list[str]:
        """Command prefix that runs a binary built for this target here."""
        if self.native:
            return []
        cmd = [*self.emulator]
        if self.sysroot:
            cmd += ["-L", self.sysroot]
        return cmd


def target_names() -> list[str]:
    return sorted(p.stem for p in data_dir("targets").glob("*.toml"))


def load_target(name: str) -> Target:
    path = data_dir("targets") / f"{name}.toml"
    if not name.replace("_", "").isalnum() or not path.is_file():
        raise FaustgenError(f"unknown target '{name}'; available: {', '.join(target_names())}")
    with open(path, "rb") as f:
        d = tomllib.load(f)
    return Target(
        name=d["name"],
        description=d.get("description", ""),
        cc=d.get("cc", ""),
        device_cc=d.get("device_cc", "cc"),
        cflags=tuple(d.get("cflags", [])),
        ldflags=tuple(d.get("ldflags", [])),
        ldlibs=tuple(d.get("ldlibs", ["-lm"])),
        size=d.get("size", ""),
        emulator=tuple(d.get("emulator", [])),
        sysroot=d.get("sysroot", ""),
        native=bool(d.get("native", False)),
        install_hint=d.get("install_hint", ""),
        cost=tuple(sorted((k, float(v)) for k, v in d.get("cost", {}).items())),
    )


def run_compiler(
    cmd: list[str], cwd: Path, what: str, progress: Callable[[str], None] | None = None
) -> None:
    if progress is not None:
        progress(f"compiling {what}")
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    except FileNotFoundError:
        raise FaustgenError(f"compiler '{cmd[0]}' not found") from None
    except subprocess.TimeoutExpired:
        raise FaustgenError(f"compiling {what} timed out") from None
    if proc.returncode < 0:
        raise FaustgenError(f"compiling {what}: {killed_message(cmd[0], -proc.returncode)}")
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        detail = " | ".join(lines[:3]) if lines else f"exit code {proc.returncode}"
        if "No space left on device" in proc.stderr:
            detail += " (free disk space in the output directory and in $TMPDIR)"
        raise FaustgenError(f"compiling {what} failed: {detail}")


def killed_message(program: str, signum: int) -> str:
    """What a child killed by `signum` means and what to do about it."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    if signum == signal.SIGKILL:
        return (
            f"{program} was killed ({name}), most likely by the out-of-memory killer: free "
            "memory, or build fewer weights at a time (--max-params, a smaller model)"
        )
    return f"{program} was killed by {name}"


def cache_dir() -> Path:
    """Where compiled runtime objects are kept ($FAUSTGEN_CACHE, else ~/.cache/faustgen)."""
    root = os.environ.get("FAUSTGEN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "faustgen"
    )
    return Path(root)


@functools.cache
def _compiler_id(cc: str) -> str:
    try:
        proc = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60)
        return proc.stdout.splitlines()[0] if proc.stdout else cc
    except (OSError, subprocess.TimeoutExpired):
        return cc


def _compile_object(
    src: Path, obj: Path, target: Target, flags: list[str], include: Path, progress=None
) -> None:
    run_compiler(
        [target.cc, *target.cflags, *flags, "-I", str(include), "-c", str(src), "-o", str(obj)],
        src.parent,
        src.name,
        progress,
    )


def runtime_objects(
    runtime_dir: Path, sources: list[str], target: Target, flags: list[str], progress=None
) -> list[Path]:
    """Object files of the runtime kernels for this compiler and these flags, compiled once
    and kept in the cache (the kernels are the same in every bundle; only the model changes)."""
    key = hashlib.sha256()
    key.update("\0".join([_compiler_id(target.cc), *target.cflags, *flags]).encode())
    # The kernels and their headers only: the bundle's own files (model.c, model_weights.c,
    # main.c, ...) sit in the same directory and change with every model.
    kernel_files = (
        p.name
        for p in runtime_dir.iterdir()
        if p.suffix in (".c", ".h") and (p.name in sources or p.name.startswith("fg_"))
    )
    for name in sorted(kernel_files):
        key.update(name.encode() + b"\0" + (runtime_dir / name).read_bytes())
    d = cache_dir() / "runtime" / f"{target.name}-{key.hexdigest()[:20]}"
    objs = [d / (Path(s).stem + ".o") for s in sources]
    if all(o.is_file() for o in objs):
        return objs
    d.mkdir(parents=True, exist_ok=True)
    for src, obj in zip(sources, objs, strict=True):
        if obj.is_file():
            continue
        fd, tmp = tempfile.mkstemp(suffix=".o", dir=d)
        os.close(fd)
        try:
            _compile_object(runtime_dir / src, Path(tmp), target, flags, runtime_dir, progress)
            os.replace(tmp, obj)  # atomic: concurrent builds never see half an object
        finally:
            Path(tmp).unlink(missing_ok=True)
    return objs


def compile_bundle(
    out_dir: Path,
    prefix: str,
    runtime: list[str],
    target: Target,
    extra_flags: tuple[str, ...] = (),
    progress: Callable[[str], None] | None = None,
    asm: str = "",
) -> Path:
    """The bundle's harness executable (and, for native targets, lib<prefix>.so for cffi).

    `asm` names an assembler file of the bundle (the weights' .incbin) linked in as well."""
    pic = ["-fPIC"] if target.native else []
    flags = [*extra_flags, *pic]
    objs = runtime_objects(out_dir, runtime, target, flags, progress)
    model_o = out_dir / f"{prefix}.o"
    main_o = out_dir / "main.o"
    _compile_object(out_dir / f"{prefix}.c", model_o, target, flags, out_dir, progress)
    _compile_object(out_dir / "main.c", main_o, target, flags, out_dir, progress)
    own = [model_o]
    if asm:
        # Data only: no CFLAGS (clang rejects C options for assembler input).
        own.append(out_dir / (Path(asm).stem + "_bin.o"))
        run_compiler([target.cc, "-c", asm, "-o", str(own[-1])], out_dir, asm, progress)
    exe = out_dir / prefix
    run_compiler(
        [
            target.cc,
            *target.cflags,
            *flags,
            *target.ldflags,
            "-o",
            str(exe),
            str(main_o),
            *map(str, own),
            *map(str, objs),
            *target.ldlibs,
        ],
        out_dir,
        prefix,
        progress,
    )
    if target.native:
        lib = f"lib{prefix}.so"
        run_compiler(
            [
                target.cc,
                *target.cflags,
                *flags,
                "-shared",
                "-o",
                lib,
                *map(str, own),
                *map(str, objs),
                *target.ldlibs,
            ],
            out_dir,
            lib,
            progress,
        )
    for o in (*own, main_o):
        o.unlink()
    return exe


def section_sizes(binary: Path, target: Target) -> dict[str, int] | None:
    """`size -A` of a binary: .text, .rodata, .data, .bss in bytes (None if no size tool)."""
    tool = shutil.which(target.size) if target.size else None
    if tool is None or not binary.exists():
        return None
    proc = subprocess.run([tool, "-A", str(binary)], capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    sizes = {".text": 0, ".rodata": 0, ".data": 0, ".bss": 0}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in sizes and parts[1].isdigit():
            sizes[parts[0]] += int(parts[1])
    return sizes
