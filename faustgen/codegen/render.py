"""Program + memory plan -> C source files, through the Jinja2 templates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from faustgen.codegen.emit import C_TYPES, Buf, Program, Scratch
from faustgen.codegen.literals import (
    c_comment,
    c_float,
    c_float_array,
    c_int,
    c_int_array,
)
from faustgen.codegen.memory import MemoryPlan
from faustgen.codegen.stream import StepCode
from faustgen.codegen.weights import ALIGN, WeightsBlob, choose_mode, layout
from faustgen.resources import data_dir
from faustgen.version import __version__

RUNTIME_SOURCES = (
    "fg_dense.c",
    "fg_conv.c",
    "fg_convgemm.c",
    "fg_pool.c",
    "fg_act.c",
    "fg_tensor.c",
    "fg_sparse.c",
    "fg_rnn.c",
)
RUNTIME_HEADERS = ("fg_runtime.h", "fg_kernel.h")


@dataclass
class Rendered:
    files: dict[str, str]  # file name -> text
    weight_bytes: int
    arena_bytes: int
    weights_mode: str  # c, blob or file (codegen/weights.py)
    blob: WeightsBlob | None = None  # the blob and file modes: written to blob_file
    blob_file: str = ""
    asm_file: str = ""  # the blob mode: the assembler file that links the blob


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("templates"))),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _shape_text(shape) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


class _ArgRenderer:
    def __init__(self, program: Program, plan: MemoryPlan):
        self.program = program
        self.plan = plan
        self.arena = f"{program.prefix}_arena"

    def buf(self, name: str, offset: int) -> str:
        st = self.plan.storage[name]
        base = {"input": f"in{st.index}", "output": f"out{st.index}", "arena": self.arena}[st.kind]
        off = st.offset + offset
        return f"{base} + {off}" if off else base

    def __call__(self, a: Any) -> str:
        if isinstance(a, Buf):
            return self.buf(a.tensor, a.offset)
        if isinstance(a, Scratch):
            off = self.plan.scratch[a.id] + a.offset
            return f"{self.arena} + {off}" if off else self.arena
        if isinstance(a, bool):
            return "1" if a else "0"
        if isinstance(a, (int, np.integer)):
            return c_int(a)
        if isinstance(a, (float, np.floating)):
            return c_float(a)
        return str(a)


def _body(program: Program, plan: MemoryPlan) -> list[str]:
    arg = _ArgRenderer(program, plan)
    lines: list[str] = []
    current = None
    for call in program.calls:
        if call.node != current:
            current = call.node
            if lines:
                lines.append("")
            lines.append(f"/* {program.node_notes.get(call.node, c_comment(call.node))} */")
        if call.note:
            lines.append(f"/* {call.note} */")
        lines.append(f"{call.func}({', '.join(arg(a) for a in call.args)});")
    used = set(" ".join(lines).replace("(", " ").replace(",", " ").replace(")", " ").split())
    g = program.graph
    params = [f"in{k}" for k in range(len(g.inputs))] + [f"out{k}" for k in range(len(g.outputs))]
    for name in reversed(params):
        if name not in used:
            lines.insert(0, f"(void){name};")
    return lines


def _io(g, names: list[str], kind: str) -> list[dict[str, Any]]:
    out = []
    for k, name in enumerate(names):
        t = g.tensors[name]
        ctype = C_TYPES[t.dtype]
        out.append(
            {
                "index": k,
                "name": c_comment(name, 60),
                "shape": _shape_text(t.shape),
                "size": t.size,
                "dtype": t.dtype,
                "ctype": ctype,
                "param": f"{'const ' if kind == 'in' else ''}{ctype} *{kind}{k}",
            }
        )
    return out


def render(
    program: Program,
    plan: MemoryPlan,
    *,
    command: str,
    target: str,
    cc: str,
    cflags: str,
    ldflags: str = "",
    weights: str = "auto",
    step: StepCode | None = None,
) -> Rendered:
    """The bundle's sources; `step` adds PREFIX_step / PREFIX_reset (lowered after
    `program`, into its constants)."""
    g = program.graph
    prefix = program.prefix
    inputs = _io(g, g.inputs, "in")
    outputs = _io(g, g.outputs, "out")
    weights_file = f"{prefix}_weights.c"
    mode = choose_mode(weights, program.arrays)
    blob = layout(program.arrays) if mode != "c" else None
    weight_bytes = sum(a.values.nbytes for a in program.arrays)
    arena_floats = max(plan.arena_floats, step.plan.arena_floats if step else 0)
    arena_bytes = arena_floats * 4
    ctx = {
        "version": __version__,
        "command": c_comment(command, max_len=400),
        "source": c_comment(Path(g.meta.get("source", "model")).name),
        "producer": c_comment(g.meta.get("producer", "")),
        "opset": g.meta.get("opset", "?"),
        "prefix": prefix,
        "PREFIX": prefix.upper(),
        "guard": f"{prefix.upper()}_H",
        "inputs": inputs,
        "outputs": outputs,
        # one input and one output: the two-pointer API PREFIX_infer(input, output, batch)
        "simple": len(inputs) == 1 and len(outputs) == 1,
        "batch_symbolic": g.batch_symbolic,
        "arena_floats": arena_floats,
        "step": _step_ctx(step),
        "arena_bytes": arena_bytes,
        "weight_bytes": weight_bytes,
        "weights_file": weights_file,
        "weights_mode": mode,
        "blob_file": f"{prefix}_weights.bin",
        "asm_file": f"{prefix}_weights.s",
        "asm_obj": f"{prefix}_weights_bin.o",
        "align": ALIGN,
        "n_arrays": sum(a.fill is None for a in program.arrays),
        "target": target,
        "cc": cc,
        "cflags": cflags,
        "ldflags": ldflags,
        "runtime_sources": list(RUNTIME_SOURCES),
    }
    if blob is None:
        arrays = [
            {
                "comment": a.comment,
                "ctype": a.ctype,
                "ident": a.ident,
                "length": max(len(a.values), 1),
                "body": (c_float_array(a.values) if a.ctype == "float" else c_int_array(a.values))
                if len(a.values)
                else "    0",
            }
            for a in program.arrays
            if a.fill is None
        ]
    else:
        arrays = [
            {
                "comment": e.array.comment,
                "ctype": e.array.ctype,
                "ident": e.array.ident,
                "length": max(len(e.array.values), 1),
                "offset": e.offset,
                "nbytes": e.nbytes,
            }
            for e in blob.entries
        ]
        ctx["header"] = blob.header.decode()
    fills = [
        {"comment": a.comment, "ident": a.ident, "length": len(a.values), "value": c_float(a.fill)}
        for a in program.arrays
        if a.fill is not None
    ]
    ctx["has_fills"] = bool(fills)
    structs = [
        {
            "comment": s.comment,
            "ctype": s.ctype,
            "ident": s.ident,
            "body": _struct_body([f".{k} = {_field(v)}" for k, v in s.fields]),
        }
        for s in program.structs
    ]
    env = _env()
    files = {
        f"{prefix}.h": env.get_template("model.h.j2").render(ctx),
        f"{prefix}.c": env.get_template("model.c.j2").render(ctx, body=_body(program, plan)),
        weights_file: env.get_template("weights.c.j2").render(
            ctx, arrays=arrays, structs=structs, fills=fills
        ),
        "main.c": env.get_template("main.c.j2").render(ctx),
        "Makefile": env.get_template("Makefile.j2").render(ctx),
    }
    if mode == "blob":
        files[ctx["asm_file"]] = env.get_template("weights.s.j2").render(ctx, arrays=arrays)
    return Rendered(
        files,
        weight_bytes,
        arena_bytes,
        mode,
        blob,
        ctx["blob_file"] if blob else "",
        ctx["asm_file"] if mode == "blob" else "",
    )


def _step_ctx(step: StepCode | None) -> dict[str, Any] | None:
    if step is None:
        return None
    g = step.program.graph
    x, y = (g.tensors[g.inputs[0]], g.tensors[g.outputs[0]])
    return {
        "body": _body(step.program, step.plan),
        "reset": step.reset,
        "state_floats": step.state_floats,
        "in_size": x.size,
        "out_size": y.size,
        "in_shape": _shape_text(x.shape),
        "out_shape": _shape_text(y.shape),
    }


def _struct_body(items: list[str], width: int = 92) -> str:
    lines, line = [], "   "
    for item in items:
        if len(line) + len(item) + 2 > width and line.strip():
            lines.append(line)
            line = "   "
        line += f" {item},"
    if line.strip():
        lines.append(line)
    return "\n".join(lines)


def _field(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "{" + ", ".join(_field(x) for x in v) + "}"
    if isinstance(v, (float, np.floating)):
        return c_float(v)
    if isinstance(v, str):  # an enum constant of fg_runtime.h or an array identifier
        return v
    return c_int(v)
