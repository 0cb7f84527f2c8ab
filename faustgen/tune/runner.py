"""Run graph nodes over many calibration samples, every activation kept (N × per-call shape).

The data-aware fit and the calibration report read every layer's inputs on up to a
thousand samples, many times over (once per rung of each layer's sensitivity ladder).
Run one sample at a time, as the numpy reference forms (Op.compute) do, the Python
overhead of a call per node per sample dominated the build (`make demo`: 13.7 min). With a
symbolic batch axis (Graph.batch_symbolic) and PyTorch present, each node instead runs once
per chunk of samples through its batched torch form (Op.compute_torch, what fine-tuning
runs), in float32 without autograd. Otherwise, or when an op's output does not keep the
batch on axis 0, the per-sample numpy loop remains.

The torch forms accumulate in float32 where the numpy forms of Conv and the factor chains
accumulate in float64: activations agree to float32 rounding (tests/unit/test_runner.py).
"""

from __future__ import annotations

import math

import numpy as np

from faustgen.errors import FaustgenError
from faustgen.ir import Graph, Node
from faustgen.ops import REGISTRY, TorchContext

CHUNK = 256  # samples per batched call: bounds the temporaries, keeps the BLAS calls large


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


class _NotBatched(Exception):
    """An op's output lost the batch axis: this graph runs one sample at a time."""


class Runner:
    """Executes nodes of `graph` for the samples `xs` (first axis); `values` maps a tensor
    name to its values for every sample, shape (N, *per-call shape)."""

    def __init__(self, graph: Graph, xs: np.ndarray, batched: bool | None = None):
        self.graph = graph
        self.shape = graph.tensors[graph.inputs[0]].shape
        self.values: dict[str, np.ndarray] = {graph.inputs[0]: xs.reshape(len(xs), *self.shape)}
        self.n = len(xs)
        if batched is None:
            batched = graph.batch_symbolic
        self.torch = _torch() if batched else None

    def run(
        self,
        nodes: list[Node],
        values: dict[str, np.ndarray] | None = None,
        keep: set[str] | None = None,
    ) -> dict:
        """Runs `nodes` in order, reading and adding to `values` (default: the runner's
        own); with `keep`, of the tensors they make only those are kept (memory: a
        thousand samples of every activation of a large model do not fit)."""
        vals = self.values if values is None else values
        if self.torch is not None:
            try:
                vals.update(self._run_torch(nodes, vals, keep))
                return vals
            except (_NotBatched, FaustgenError, RuntimeError):
                # An op whose torch form does not take this batch (or has none): the numpy
                # reference forms, one sample at a time, as before.
                self.torch = None
        self._run_numpy(nodes, vals, keep)
        return vals

    def _run_numpy(self, nodes: list[Node], vals: dict, keep: set[str] | None) -> None:
        g = self.graph
        last = {i: k for k, node in enumerate(nodes) for i in node.inputs if i}
        made: set[str] = set()
        for at, node in enumerate(nodes):
            n = len(next(iter(vals.values())))
            ins = [g.const(i) if g.is_const(i) else vals[i] for i in node.inputs if i]
            consts = [g.is_const(i) for i in node.inputs if i]
            outs = [
                REGISTRY[node.op].compute(
                    node, [a if c else a[k] for a, c in zip(ins, consts, strict=True)]
                )
                for k in range(n)
            ]
            for j, name in enumerate(node.outputs):
                if name:
                    vals[name] = np.stack([np.asarray(o[j]) for o in outs])
                    made.add(name)
            if keep is not None:
                for name in [m for m in made if m not in keep and last.get(m, -1) <= at]:
                    del vals[name]
                    made.discard(name)

    def _run_torch(
        self, nodes: list[Node], vals: dict, keep: set[str] | None
    ) -> dict[str, np.ndarray]:
        torch, g = self.torch, self.graph
        n = len(next(iter(vals.values())))
        ctx = TorchContext(torch, g, lambda node: _factor_tensors(torch, node))
        consts: dict[str, object] = {}
        chunks: dict[str, list[np.ndarray]] = {}
        with torch.inference_mode():
            for a in range(0, n, CHUNK):
                b = min(n, a + CHUNK)
                local: dict[str, object] = {}
                for node in nodes:
                    ins = []
                    for i in node.inputs:
                        if not i:
                            continue
                        if g.is_const(i):
                            if i not in consts:
                                consts[i] = torch.from_numpy(np.array(g.const(i), copy=True))
                            ins.append(consts[i])
                        elif i in local:
                            ins.append(local[i])
                        else:
                            v = vals[i][a:b]
                            ins.append(torch.from_numpy(v.reshape(-1, *v.shape[2:])))
                    outs = REGISTRY[node.op].compute_torch(node, ins, ctx)
                    for name, v in zip(node.outputs, outs, strict=False):
                        if name:
                            local[name] = v
                for name, v in local.items():
                    if keep is not None and name not in keep:
                        continue
                    shape = g.tensors[name].shape
                    arr = v.detach().numpy() if hasattr(v, "detach") else np.asarray(v)
                    if arr.size != (b - a) * math.prod(shape):
                        raise _NotBatched(name)
                    chunks.setdefault(name, []).append(arr.reshape(b - a, *shape))
        return {k: np.concatenate(v) if len(v) > 1 else v[0] for k, v in chunks.items()}


def _factor_tensors(torch, node: Node) -> list:
    """A factorized node's factors as dense float32 tensors, S_0 first (groups in order)."""
    fs = node.attrs["factors"]
    flat = [f for group in fs for f in group] if node.op == "FactorizedConv" else fs
    return [torch.from_numpy(f.matrix.toarray().astype(np.float32)) for f in flat]
