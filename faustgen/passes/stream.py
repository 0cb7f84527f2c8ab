"""The step graph's recurrent state (see faustgen.frontend.stream).

Each recurrent layer of the step graph reads its initial state from, and writes its last
state back to, a static array of the generated C (`PREFIX_state`) that PREFIX_reset()
fills with the layer's initial state (its constant h0 / c0 inputs, else zeros). The step
graph takes over the main graph's factorized layers, so both run the same factors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faustgen.errors import FaustgenError
from faustgen.ir import Graph, Node

RECURRENT = ("RNN", "GRU", "LSTM")


@dataclass
class StateSlot:
    node: str
    offset: int  # floats into PREFIX_state
    size: int  # floats of one state (h, or c)
    init: list[np.ndarray | None]  # initial h (and c for an LSTM), None: zeros


def prepare_step(step: Graph, main: Graph) -> tuple[Graph, list[StateSlot]]:
    """The step graph with main's factorized layers and a state slot per recurrent layer."""
    g = step.copy()
    by_name = {n.name: n for n in main.nodes}
    slots: list[StateSlot] = []
    offset = 0
    for k, node in enumerate(g.nodes):
        m = by_name.get(node.name)
        if m is not None and m is not node:
            g.nodes[k] = node = _adopt(g, node, m)
        if node.op not in RECURRENT:
            continue
        a = node.attrs
        size = a["dirs"] * a["B"] * a["H"]
        init = []
        for i in (1, 2) if node.op == "LSTM" else (1,):
            name = node.input(i)
            if name and not g.is_const(name):
                raise FaustgenError(
                    f"--stream: layer '{node.name}' takes its initial state from "
                    f"'{name}', which is computed at run time; streaming needs a constant "
                    "initial state"
                )
            init.append(None if not name else np.asarray(g.const(name), np.float32).reshape(-1))
        node.attrs = {**a, "state": offset}
        slots.append(StateSlot(node.name, offset, size, init))
        offset += size * len(init)
    g.prune_tensors()
    return g, slots


def _adopt(g: Graph, node: Node, m: Node) -> Node:
    """`node` of the step graph computed as main's node `m` (its factors, if any)."""
    if m.op in RECURRENT and "chains" in m.attrs:
        keep = ("W", "R", "chains", "factorization")
        return Node(
            node.op,
            node.name,
            node.inputs,
            node.outputs,
            {**node.attrs, **{k: m.attrs[k] for k in keep}},
        )
    if m.op in ("FactorizedDense", "FactorizedConv") and node.op in ("Dense", "Conv"):
        attrs = {**m.attrs, "out_shape": g.tensors[node.outputs[0]].shape}
        if node.op == "Conv":
            attrs["window"] = node.attrs["window"]
        return Node(m.op, node.name, [node.inputs[0], node.input(2)], node.outputs, attrs)
    return node
