"""Targets (data files in targets/) and the compiler invocations that use them."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
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


def run_compiler(cmd: list[str], cwd: Path, what: str) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    except FileNotFoundError:
        raise FaustgenError(f"compiler '{cmd[0]}' not found") from None
    except subprocess.TimeoutExpired:
        raise FaustgenError(f"compiling {what} timed out") from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        detail = " | ".join(lines[:3]) if lines else f"exit code {proc.returncode}"
        raise FaustgenError(f"compiling {what} failed: {detail}")


def compile_shared(
    out_dir: Path,
    sources: list[str],
    library: str,
    target: Target,
    extra_flags: tuple[str, ...] = (),
) -> Path:
    """Build a shared library from sources in out_dir (host targets: loaded with cffi)."""
    cmd = [
        target.cc,
        *target.cflags,
        *extra_flags,
        "-fPIC",
        "-shared",
        "-o",
        library,
        *sources,
        *target.ldlibs,
    ]
    run_compiler(cmd, out_dir, library)
    return out_dir / library


def compile_executable(
    out_dir: Path, sources: list[str], exe: str, target: Target, extra_flags: tuple[str, ...] = ()
) -> Path:
    cmd = [
        target.cc,
        *target.cflags,
        *extra_flags,
        *target.ldflags,
        "-o",
        exe,
        *sources,
        *target.ldlibs,
    ]
    run_compiler(cmd, out_dir, exe)
    return out_dir / exe


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
