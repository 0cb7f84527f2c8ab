"""Code of the streaming step (PREFIX_step / PREFIX_reset, see faustgen.passes.stream):
the step graph lowered as a second program of the model, sharing its constants."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from faustgen.codegen.emit import Emitter, Program, lower_graph
from faustgen.codegen.memory import MemoryPlan, plan_memory
from faustgen.ir import Graph


@dataclass
class StepCode:
    program: Program
    plan: MemoryPlan
    state_floats: int
    reset: list[str]  # C statements of PREFIX_reset()


def lower_step(
    graph: Graph, prefix: str, ops: Mapping[str, Any], main: Program, slots: list
) -> StepCode:
    """`slots`: the recurrent state of the step graph (passes.stream.StateSlot)."""
    program = lower_graph(graph, prefix, ops, shared=main)
    em = Emitter(graph, prefix, shared=main)
    reset, total = [], 0
    for s in slots:
        for j, init in enumerate(s.init):
            dst = f"{prefix}_state + {s.offset + j * s.size}"
            if init is None or not init.any():
                reset.append(f"fg_fill({dst}, {s.size}, 0.0f);")
            else:
                src = em.weight(init, f"{s.node}_init{j}")
                reset.append(f"fg_copy({src}, {dst}, {s.size});")
        total = max(total, s.offset + s.size * len(s.init))
    return StepCode(program, plan_memory(program), total, reset)
