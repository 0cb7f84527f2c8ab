"""Run an IR graph in numpy with each op's reference semantics (calibration, tests, verify)."""

from __future__ import annotations

import numpy as np

from faustgen.ir import Graph
from faustgen.ops import REGISTRY


def run_graph(
    graph: Graph,
    x: np.ndarray | list[np.ndarray],
    keep: set[str] | None = None,
    overrides: dict[str, np.ndarray] | None = None,
    float64: bool = False,
) -> dict[str, np.ndarray]:
    """Values of the graph outputs (and of the tensors in `keep`) for one call's input x
    (a list with one array per graph input for a model with several).

    `overrides` replaces the inputs of the nodes that read them (to feed one layer the
    activations of another graph). `float64` evaluates every op in float64 (the weights
    exactly as stored): the truth the C's float32 rounding is measured against."""
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    if float64:
        xs = [v.astype(np.float64) if v.dtype.kind == "f" else v for v in xs]
    values: dict[str, np.ndarray] = dict(zip(graph.inputs, xs, strict=True))
    wanted = set(graph.outputs) | (keep or set())
    for node in graph.nodes:
        ins = []
        for name in node.inputs:
            if not name:
                continue
            if overrides and name in overrides:
                ins.append(overrides[name])
            elif graph.is_const(name):
                v = graph.const(name)
                ins.append(v.astype(np.float64) if float64 and v.dtype == np.float32 else v)
            else:
                ins.append(values[name])
        if float64 and node.op == "Cast" and node.attrs["to"] == "float32":
            outs = [ins[0]]  # activations are float64 throughout this run
        else:
            outs = REGISTRY[node.op].compute(node, ins)
        for name, v in zip(node.outputs, outs, strict=False):
            if name:
                values[name] = np.asarray(v)
    return {k: v for k, v in values.items() if k in wanted}


def run_batch(
    graph: Graph, xs: np.ndarray, keep: set[str] | None = None, float64: bool = False
) -> dict[str, np.ndarray]:
    """run_graph over the samples of xs (first axis), results stacked along a new axis 0."""
    runs = [
        run_graph(
            graph,
            xs[i : i + 1].reshape(graph.tensors[graph.inputs[0]].shape),
            keep,
            float64=float64,
        )
        for i in range(len(xs))
    ]
    return {k: np.stack([r[k] for r in runs]) for k in runs[0]}
