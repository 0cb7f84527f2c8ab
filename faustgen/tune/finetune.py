"""Fine-tune the factors of a factorized graph (`--finetune N`, needs the torch extra).

The nonzero values of every factor are trained, supports fixed, so that the
factorized model reproduces the dense model's outputs on the calibration inputs
(distillation, no labels), as the PSM-nets follow-up of the seed does. The graph is
run by each op's PyTorch form (Op.compute_torch); biases and every other weight stay
fixed.

Recipe (why, and what it was measured against: DESIGN.md, "Fine-tuning is distillation"):
Adam, each factor's step size scaled by its mean |value|, base lr 1e-2 decayed to 0 on a
cosine, batch 64, MSE on the outputs normalized by the teacher's mean square. Fine-tuning
needs no labels, so the more inputs the better. The part of the graph in front of the
first factorized layer is fixed; its outputs are computed once and cached when they fit.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sps
from tqdm import tqdm

from faustgen.errors import FaustgenError
from faustgen.ir import Graph
from faustgen.layout.factor import Factor
from faustgen.ops import REGISTRY, TorchContext
from faustgen.tune.interpret import run_batch


def _torch():
    try:
        import torch
    except ImportError:
        raise FaustgenError("--finetune needs PyTorch: pip install 'faustgen[torch]'") from None
    return torch


class _FactorParam:
    """A factor's values as a trainable vector on its fixed support."""

    def __init__(self, torch, f: Factor):
        coo = f.matrix.tocoo()
        self.factor = f
        self.shape = f.shape
        self.rows = torch.from_numpy(coo.row.astype(np.int64))
        self.cols = torch.from_numpy(coo.col.astype(np.int64))
        self.values = torch.nn.Parameter(torch.from_numpy(coo.data.astype(np.float32)))
        self._coo = coo

    def dense(self, torch):
        s = torch.zeros(self.shape, dtype=torch.float32)
        return s.index_put((self.rows, self.cols), self.values)

    def write_back(self) -> None:
        data = self.values.detach().numpy().astype(np.float32)
        m = sps.coo_matrix((data, (self._coo.row, self._coo.col)), shape=self.shape).tocsr()
        m.sort_indices()
        self.factor.matrix = m


FACTORIZED = ("FactorizedDense", "FactorizedConv")
_VIEWS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout")
CACHE_BYTES = 512 << 20  # cache the fixed prefix's outputs for all inputs up to this size


class TorchGraph:
    """Differentiable forward pass of an IR graph over a batch (axis 0)."""

    def __init__(self, graph: Graph):
        torch = _torch()
        self.torch = torch
        self.graph = graph
        self.params: dict[int, list[_FactorParam]] = {}
        for node in graph.nodes:
            if node.op == "FactorizedDense":
                self.params[id(node)] = [_FactorParam(torch, f) for f in node.attrs["factors"]]
            elif node.op == "FactorizedConv":
                self.params[id(node)] = [
                    _FactorParam(torch, f) for fs in node.attrs["factors"] for f in fs
                ]
        self.consts = {
            k: torch.from_numpy(np.array(t.value, copy=True))
            for k, t in graph.tensors.items()
            if t.is_const
        }
        self.context = TorchContext(
            torch, graph, lambda node: [p.dense(torch) for p in self.params[id(node)]]
        )
        self._split()

    def parameters(self):
        return [p.values for ps in self.params.values() for p in ps]

    def write_back(self) -> None:
        for ps in self.params.values():
            for p in ps:
                p.write_back()

    def __call__(self, x, start: dict | None = None):
        """The outputs for input batch x, or from `start` (the fixed prefix's values)."""
        vals = dict(start) if start is not None else {self.graph.inputs[0]: x}
        self._run(self.live if start is not None else self.graph.nodes, vals)
        return [vals[o] for o in self.graph.outputs]

    def _run(self, nodes, vals: dict) -> None:
        """Each node's torch form, from the registry (the op modules hold them)."""
        for node in nodes:
            ins = [self.consts[i] if i in self.consts else vals[i] for i in node.inputs if i]
            outs = REGISTRY[node.op].compute_torch(node, ins, self.context)
            for name, v in zip(node.outputs, outs, strict=False):
                if name:
                    vals[name] = v

    def _split(self) -> None:
        """`fixed`: the nodes no trainable factor feeds; `live`: the others; `reads`: the
        fixed tensors the live nodes and the graph's outputs read."""
        live: set[str] = set()
        self.fixed, self.live = [], []
        for node in self.graph.nodes:
            if node.op in FACTORIZED or any(i in live for i in node.inputs if i):
                live.update(node.outputs)
                self.live.append(node)
            else:
                self.fixed.append(node)
        reads = [
            i
            for node in self.live
            for i in node.inputs
            if i and i not in live and i not in self.consts
        ]
        reads += [o for o in self.graph.outputs if o not in live]
        self.reads = list(dict.fromkeys(reads))

    def prefix_values(self, x) -> list:
        """The `reads` tensors for input batch x (runs the fixed nodes only)."""
        vals = {self.graph.inputs[0]: x}
        self._run(self.fixed, vals)
        return [vals[n] for n in self.reads]


def finetune(
    dense: Graph,
    fact: Graph,
    xs: np.ndarray,
    epochs: int,
    batch: int = 64,
    lr: float = 1e-2,
    seed: int = 0,
    progress: bool = False,
    labels: np.ndarray | None = None,
) -> dict:
    """Train fact's factor values to match dense's outputs on xs; updates fact in place.

    With ``labels`` (one class per input) the task's cross-entropy on the first output is
    added to the distillation loss.

    lr is the base step size (times each factor's mean |value|), decayed to 0 on a cosine
    over the epochs * ceil(len(xs) / batch) steps.
    """
    torch = _torch()
    if not dense.batch_symbolic:
        batch = 1  # without a proven batch axis the graph runs one call at a time
    torch.manual_seed(seed)
    per_call = dense.tensors[dense.inputs[0]].shape
    x_all = xs.reshape(-1, *per_call[1:]) if dense.batch_symbolic else xs

    def chunked(fn, size=256):
        with torch.no_grad():
            return [
                fn(torch.from_numpy(np.ascontiguousarray(x_all[i : i + size])))
                for i in range(0, len(xs), size)
            ]

    if dense.batch_symbolic:  # the teacher runs batched in torch: much faster than numpy
        chunks = chunked(TorchGraph(dense))
        targets = [
            torch.cat([c[k].reshape(len(c[k]), -1) for c in chunks])
            for k in range(len(dense.outputs))
        ]
    else:
        teacher = run_batch(dense, xs)
        targets = [torch.from_numpy(teacher[o].reshape(len(xs), -1)) for o in dense.outputs]
    model = TorchGraph(fact)
    params = model.parameters()
    if not params:
        return {"epochs": 0}
    # The layers in front of the first factor never change: run them once over xs.
    cache = None
    if dense.batch_symbolic and any(n.op not in _VIEWS for n in model.fixed):
        per_sample = sum(int(np.prod(fact.tensors[r].shape[1:])) for r in model.reads)
        if per_sample * 4 * len(xs) <= CACHE_BYTES:
            chunks = chunked(model.prefix_values)
            cache = {r: torch.cat([c[k] for c in chunks]) for k, r in enumerate(model.reads)}
    base = [lr * float(p.detach().abs().mean() + 1e-12) for p in params]
    opt = torch.optim.Adam([{"params": [p], "lr": b} for p, b in zip(params, base, strict=True)])
    scale = [float(t.pow(2).mean()) + 1e-12 for t in targets]
    rng = np.random.default_rng(seed)
    y_all = None if labels is None else torch.from_numpy(np.asarray(labels, np.int64).reshape(-1))
    history = []
    steps = epochs * -(-len(xs) // batch)
    step = 0
    bar = tqdm(total=steps, desc="finetune", disable=not progress, leave=False, unit="step")
    for _ in range(epochs):
        order = rng.permutation(len(xs))
        total = 0.0
        for i in range(0, len(xs), batch):
            idx = order[i : i + batch]
            decay = 0.5 * (1.0 + math.cos(math.pi * step / steps))
            for group, b in zip(opt.param_groups, base, strict=True):
                group["lr"] = b * decay
            if cache is not None:
                t_idx = torch.from_numpy(idx)
                outs = model(None, start={r: v[t_idx] for r, v in cache.items()})
            else:
                xb = torch.from_numpy(
                    np.ascontiguousarray(
                        x_all[idx] if dense.batch_symbolic else x_all[idx[0]].reshape(per_call)
                    )
                )
                outs = model(xb)
            loss = sum(
                ((o.reshape(len(idx), -1) - t[idx]) ** 2).mean() / s
                for o, t, s in zip(outs, targets, scale, strict=True)
            )
            if y_all is not None:
                loss = loss + torch.nn.functional.cross_entropy(
                    outs[0].reshape(len(idx), -1), y_all[torch.from_numpy(idx)]
                )
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            step += 1
            bar.update(1)
        history.append(total / len(xs))
    bar.close()
    model.write_back()
    return {"epochs": epochs, "samples": len(xs), "loss": history}
