"""Write a bundle directory atomically and compile it for its target.

Everything is produced in a temporary sibling directory that replaces OUT only once the
build succeeded, so a failed build never leaves a half-written output directory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from faustgen.backend.toolchain import Target, compile_bundle, section_sizes
from faustgen.errors import FaustgenError
from faustgen.resources import data_dir


def check_out_dir(out: Path) -> None:
    """Fail before any work when OUT cannot become the bundle directory."""
    if out.exists() and not out.is_dir():
        raise FaustgenError(f"{out}: exists and is not a directory")


def write_bundle(
    out: Path,
    files: dict[str, str],
    runtime: Sequence[str],
    report: dict[str, Any],
    target: Target,
    *,
    prefix: str,
    compile: bool,
    extra_cflags: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
    binaries: dict[str, Callable[[Path], None]] | None = None,
    asm: str = "",
) -> list[str]:
    """Write `files`, the runtime kernels named in `runtime` and report.json (with the
    target's section sizes filled in once compiled) into OUT; returns messages for the user.

    `binaries` maps file names to functions that write them (the weights blob); `asm` names
    an assembler file of `files` compiled and linked in as well (the blob's .incbin)."""
    check_out_dir(out)
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    messages: list[str] = []
    try:
        for name, text in files.items():
            (tmp / name).write_text(text)
        for name, write in (binaries or {}).items():
            write(tmp / name)
        src = data_dir("runtime_c")
        for name in runtime:  # the hand-written kernels go into every bundle verbatim
            shutil.copyfile(src / name, tmp / name)
        sources = [name for name in runtime if name.endswith(".c")]
        if compile:
            report["target_sizes"] = _compile(
                tmp, prefix, sources, target, extra_cflags, messages, progress, asm
            )
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return messages


def _compile(
    tmp: Path,
    prefix: str,
    sources: list[str],
    target: Target,
    extra_cflags: Sequence[str],
    messages: list[str],
    progress: Callable[[str], None] | None,
    asm: str,
) -> dict[str, int] | None:
    if not target.cc:
        return None
    if not target.can_compile():
        messages.append(
            f"{target.cc} not found: wrote the source bundle only "
            f"(install it with: {target.install_hint}; then run make in the bundle)"
        )
        return None
    exe = compile_bundle(
        tmp, prefix, sources, target, tuple(extra_cflags), progress=progress, asm=asm
    )
    return section_sizes(exe, target)


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished build into place; an old OUT is replaced only at the very end."""
    os.chmod(tmp, 0o755)
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.resolve().parent))
        old.rmdir()
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
