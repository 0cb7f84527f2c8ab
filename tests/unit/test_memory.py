"""The static memory planner: buffers that are live at the same time never overlap."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from faustgen.codegen.emit import Buf, Call, Program
from faustgen.codegen.memory import ALIGN, plan_memory
from faustgen.ir import Graph, Tensor


def _program(sizes: list[int], reads: list[list[int]]) -> Program:
    """A chain of calls: call i writes t{i} and reads t{j} for j in reads[i] (j < i)."""
    tensors = {"x": Tensor("x", (4,))}
    for i, s in enumerate(sizes):
        tensors[f"t{i}"] = Tensor(f"t{i}", (s,))
    g = Graph("g", [], tensors, ["x"], [f"t{len(sizes) - 1}"])
    p = Program(g, "m")
    for i in range(len(sizes)):
        args = [Buf("x")] + [Buf(f"t{j}") for j in reads[i]] + [Buf(f"t{i}", write=True)]
        p.calls.append(Call("f", args, f"n{i}"))
    p.direct_outputs[f"t{len(sizes) - 1}"] = 0  # as lower_graph decides for a computed output
    return p


@st.composite
def chains(draw):
    n = draw(st.integers(2, 12))
    sizes = [draw(st.integers(1, 300)) for _ in range(n)]
    reads = [[]] + [
        sorted(set(draw(st.lists(st.integers(0, i - 1), max_size=3))) | {i - 1})
        for i in range(1, n)
    ]
    return sizes, reads


@given(chains())
@settings(max_examples=200)
def test_live_buffers_never_overlap(chain):
    sizes, reads = chain
    p = _program(sizes, reads)
    plan = plan_memory(p)
    last = {
        i: max([j for j in range(len(sizes)) if i in reads[j]] + [i]) for i in range(len(sizes))
    }
    arena = [
        (i, plan.storage[f"t{i}"].offset)
        for i in range(len(sizes))
        if plan.storage[f"t{i}"].kind == "arena"
    ]
    for i, off_i in arena:
        assert off_i % ALIGN == 0
        assert off_i + sizes[i] <= plan.arena_floats
        for j, off_j in arena:
            if i < j and not (last[i] < j):  # t_i still live when t_j is written
                assert off_i + sizes[i] <= off_j or off_j + sizes[j] <= off_i, (i, j)
    assert plan.storage[f"t{len(sizes) - 1}"].kind == "output"
    assert plan.storage["x"].kind == "input"


def test_chain_reuses_memory():
    # a -> b -> c -> d: only two buffers are ever live, so the arena holds two, not three.
    p = _program([64, 64, 64, 64], [[], [0], [1], [2]])
    plan = plan_memory(p)
    assert plan.arena_floats == 2 * 64


def test_inplace_shares_the_buffer():
    p = _program([64, 64, 64], [[], [0], [1]])
    p.inplace.append((1, "t1", "t0"))  # call 1 may write t1 over t0
    plan = plan_memory(p)
    assert plan.storage["t1"].offset == plan.storage["t0"].offset
    assert plan.arena_floats == 64
