"""Static memory plan: where each activation lives during one model call.

Storage kinds: the caller's input buffer, the caller's output buffer, a weight
array (constants), or an offset in one static arena. Views (Reshape, Flatten,
...) share their base's storage. Arena buffers are placed by lifetime with a
greedy best-offset strategy (largest first), the way TFLite's and TVM's static
planners do; an elementwise op may write over its input when that input dies
at the op. Offsets are aligned to 16 floats (64 bytes, a cache line).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from faustgen.codegen.emit import Buf, Program, Scratch

ALIGN = 16  # floats


@dataclass
class Storage:
    kind: str  # "input" | "output" | "arena" | "const"
    offset: int = 0  # elements (arena: floats; or view offset into an input / output)
    ident: str = ""  # const array identifier
    index: int = 0  # which caller input / output buffer (in<index>, out<index>)


@dataclass
class MemoryPlan:
    storage: dict[str, Storage] = field(default_factory=dict)  # every activation tensor
    scratch: dict[int, int] = field(default_factory=dict)  # scratch id -> arena offset
    arena_floats: int = 0


def _root(program: Program, name: str) -> tuple[str, int]:
    offset = 0
    while name in program.aliases:
        name, off = program.aliases[name]
        offset += off
    return name, offset


def _round(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def plan_memory(program: Program) -> MemoryPlan:
    g = program.graph

    # Lifetimes of root buffers over call indices.
    first_write: dict[str, int] = {}
    last_read: dict[str, int] = {}
    for i, call in enumerate(program.calls):
        for a in call.args:
            if isinstance(a, Buf):
                root, _ = _root(program, a.tensor)
                if a.write:
                    first_write.setdefault(root, i)
                else:
                    last_read[root] = i

    plan = MemoryPlan()
    direct = program.direct_outputs  # root -> offset in the caller's output record
    # Buffer groups: a root buffer plus roots merged into it by in-place writes.
    group_of = {r: r for r in first_write}
    span = {
        r: [first_write[r], max(last_read.get(r, first_write[r]), first_write[r])]
        for r in first_write
    }
    for root in direct:
        span.pop(root)
        group_of.pop(root)
    for call_idx, out, inp in program.inplace:
        o, o_off = _root(program, out)
        i, i_off = _root(program, inp)
        if o_off or i_off or o not in group_of or i not in group_of or o == i:
            continue
        gi = group_of[i]
        if span[gi][1] != call_idx or gi in direct:
            continue
        if g.tensors[o].size != g.tensors[i].size:
            continue
        # o is written at call_idx exactly where i's group dies: o continues that buffer.
        go = group_of[o]
        span[gi][1] = max(span[gi][1], span[go][1])
        for r, grp in group_of.items():
            if grp == go:
                group_of[r] = gi
        del span[go]

    sizes: dict[str, int] = {}
    for r, grp in group_of.items():
        sizes[grp] = max(sizes.get(grp, 0), g.tensors[r].size)
    blocks = [(grp, _round(sizes[grp]), s[0], s[1]) for grp, s in span.items()]
    scratch_span: dict[int, list[int]] = {}
    for i, call in enumerate(program.calls):
        for a in call.args:
            if isinstance(a, Scratch):
                span_i = scratch_span.setdefault(a.id, [i, i])
                span_i[1] = i
    for sid, (first, last) in scratch_span.items():
        if program.scratch[sid]:
            blocks.append((f"#scratch{sid}", _round(program.scratch[sid]), first, last))

    offsets = _greedy_place(blocks)
    plan.arena_floats = max((offsets[b[0]] + b[1] for b in blocks), default=0)
    for r, grp in group_of.items():
        plan.storage[r] = Storage("arena", offsets[grp])
    for sid in program.scratch:
        plan.scratch[sid] = offsets.get(f"#scratch{sid}", 0)
    for k, name in enumerate(g.inputs):
        plan.storage[name] = Storage("input", index=k)
    for root, k in direct.items():
        plan.storage[root] = Storage("output", index=k)
    for name, t in g.tensors.items():
        if t.is_const:
            continue
        root, off = _root(program, name)
        if root in plan.storage and name != root:
            base = plan.storage[root]
            plan.storage[name] = Storage(base.kind, base.offset + off, base.ident, base.index)
    return plan


def _greedy_place(blocks: list[tuple[str, int, int, int]]) -> dict[str, int]:
    """Place blocks (name, size, start, end) so that overlapping lifetimes never share bytes."""
    placed: list[tuple[int, int, int, int]] = []  # offset, size, start, end
    offsets: dict[str, int] = {}
    for name, size, start, end in sorted(blocks, key=lambda b: (-b[1], b[2], b[0])):
        live = sorted((o, s) for o, s, a, b in placed if not (b < start or end < a))
        best = None
        cursor = 0
        for o, s in live:
            if o - cursor >= size and (best is None or o - cursor < best[1]):
                best = (cursor, o - cursor)
            cursor = max(cursor, o + s)
        offset = best[0] if best is not None else cursor
        offsets[name] = offset
        placed.append((offset, size, start, end))
    return offsets
