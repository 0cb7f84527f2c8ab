"""Build a bundle: import -> optimize -> lower -> plan memory -> render -> compile.

The output directory is written atomically: everything is produced in a
temporary sibling directory that replaces OUT only once the build succeeded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faustgen import __version__
from faustgen.build.toolchain import (
    Target,
    compile_executable,
    compile_shared,
    load_target,
    section_sizes,
)
from faustgen.codegen.emit import lower_graph
from faustgen.codegen.memory import plan_memory
from faustgen.codegen.render import RUNTIME_SOURCES, copy_runtime, render
from faustgen.errors import FaustgenError
from faustgen.frontend import import_onnx
from faustgen.ir import Graph
from faustgen.passes import optimize

_PREFIX_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")


@dataclass
class BuildOptions:
    target: str = "host"
    prefix: str = "model"
    dense: bool = True
    input_shape: tuple[int, ...] | None = None
    command: str = "faustgen build"
    compile: bool = True
    extra_cflags: tuple[str, ...] = ()


@dataclass
class BuildResult:
    out_dir: Path
    report: dict[str, Any]
    graph: Graph
    messages: list[str] = field(default_factory=list)


def build_bundle(
    model_path: str | os.PathLike, out_dir: str | os.PathLike, options: BuildOptions | None = None
) -> BuildResult:
    opts = options or BuildOptions()
    if not _PREFIX_RE.fullmatch(opts.prefix):
        raise FaustgenError(
            f"--name '{opts.prefix}' is not a valid C identifier prefix "
            "(a letter, then up to 31 letters, digits or underscores)"
        )
    target = load_target(opts.target)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FaustgenError(f"{out}: exists and is not a directory")
    graph = optimize(import_onnx(model_path, opts.input_shape))
    program = lower_graph(graph, opts.prefix)
    plan = plan_memory(program)
    rendered = render(
        program,
        plan,
        command=opts.command,
        target=target.name,
        cc=target.cc or "cc",
        cflags=" ".join(target.cflags),
    )

    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    messages: list[str] = []
    try:
        for name, text in rendered.files.items():
            (tmp / name).write_text(text)
        copy_runtime(tmp)
        sizes = _compile(tmp, opts, target, messages) if opts.compile else None
        report = _report(graph, opts, target, rendered.weight_bytes, rendered.arena_bytes, sizes)
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BuildResult(out, report, graph, messages)


def _compile(
    tmp: Path, opts: BuildOptions, target: Target, messages: list[str]
) -> dict[str, int] | None:
    sources = [f"{opts.prefix}.c", *RUNTIME_SOURCES]
    if not target.cc:
        return None
    if not target.can_compile():
        messages.append(
            f"{target.cc} not found: wrote the source bundle only "
            f"(install it with: {target.install_hint}; then run make in the bundle)"
        )
        return None
    exe = compile_executable(tmp, ["main.c", *sources], opts.prefix, target, opts.extra_cflags)
    if target.native:
        compile_shared(tmp, sources, f"lib{opts.prefix}.so", target, opts.extra_cflags)
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


def _report(
    graph: Graph,
    opts: BuildOptions,
    target: Target,
    weight_bytes: int,
    arena_bytes: int,
    sizes: dict[str, int] | None,
) -> dict[str, Any]:
    (inp,) = graph.inputs
    layers = []
    for node in graph.nodes:
        params = sum(graph.tensors[i].size for i in node.inputs if i and graph.is_const(i))
        layers.append(
            {
                "name": node.name,
                "op": node.op,
                "fused": list(node.attrs.get("fused", [])),
                "output_shape": list(graph.tensors[node.outputs[0]].shape),
                "parameters": params,
            }
        )
    return {
        "faustgen_version": __version__,
        "command": opts.command,
        "model": {
            "source": Path(graph.meta.get("source", "")).name,
            "producer": graph.meta.get("producer", ""),
            "opset": graph.meta.get("opset"),
            "prefix": opts.prefix,
            "target": target.name,
            "input_shape": list(graph.tensors[inp].shape),
            "output_shapes": [list(graph.tensors[o].shape) for o in graph.outputs],
            "batch_symbolic": graph.batch_symbolic,
        },
        "totals": {
            "parameters": graph.parameter_count(),
            "weight_bytes": weight_bytes,
            "arena_bytes": arena_bytes,
        },
        "target_sizes": sizes,
        "layers": layers,
    }
