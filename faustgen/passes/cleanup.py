"""Constant folding and dead-node elimination."""

from __future__ import annotations

import numpy as np

from faustgen.ir import Graph, Tensor
from faustgen.ops import REGISTRY


def fold_constants(graph: Graph) -> Graph:
    """Evaluate nodes whose inputs are all constant (numpy reference semantics)."""
    g = graph.copy()
    kept = []
    for node in g.nodes:
        ins = [g.tensors[i] for i in node.inputs if i]
        if ins and all(t.is_const for t in ins):
            values = REGISTRY[node.op].compute(node, [t.value for t in ins])
            for name, v in zip(node.outputs, values, strict=False):
                if name:
                    v = np.asarray(v)
                    g.tensors[name] = Tensor(name, tuple(v.shape), str(v.dtype), v)
        else:
            kept.append(node)
    g.nodes = kept
    return g


def eliminate_dead_nodes(graph: Graph) -> Graph:
    """Drop nodes none of whose outputs reach the graph output, then unused tensors."""
    g = graph.copy()
    live = set(g.outputs)
    kept = []
    for node in reversed(g.nodes):
        if any(o in live for o in node.outputs if o):
            kept.append(node)
            live.update(i for i in node.inputs if i)
    g.nodes = kept[::-1]
    g.prune_tensors()
    return g
