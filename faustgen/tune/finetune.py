"""Fine-tune the factors of a factorized graph (`--finetune N`, needs the torch extra).

The nonzero values of every factor are trained, supports fixed, so that the
factorized model reproduces the dense model's outputs on the calibration inputs
(distillation, no labels), as the PSM-nets follow-up of the seed does. The graph is
run by a small torch interpreter of the IR; biases and every other weight stay fixed.

Recipe (measured on Fashion-MNIST, see `faustgen demo`): Adam, each factor's step size
scaled by its mean |value|, base lr 1e-2 decayed to 0 on a cosine, batch 64, MSE on the
outputs normalized by the teacher's mean square. Fine-tuning needs no labels, so the more
inputs the better: an MLP/LeNet-5 at RCG 8 lost 1.3/12 points tuned on 10000 images and
0.7/0.7 points on all 60000 (2 epochs each). The part of the graph in front of the first
factorized layer is fixed; its outputs are computed once and cached when they fit.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sps

from faustgen.errors import FaustgenError
from faustgen.ir import Graph
from faustgen.ops.activation import SELU_ALPHA, SELU_GAMMA
from faustgen.ops.factorized import Factor
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
        for node in self.live if start is not None else self.graph.nodes:
            ins = [self.consts[i] if i in self.consts else vals[i] for i in node.inputs if i]
            vals[node.outputs[0]] = self._op(node, ins)
        return [vals[o] for o in self.graph.outputs]

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
        for node in self.fixed:
            ins = [self.consts[i] if i in self.consts else vals[i] for i in node.inputs if i]
            vals[node.outputs[0]] = self._op(node, ins)
        return [vals[n] for n in self.reads]

    # ------------------------------------------------------------------ ops
    def _act(self, y, act):
        F = self.torch.nn.functional
        if not act or act[0] == "FG_ACT_NONE":
            return y
        kind, a, b = act
        if kind == "FG_ACT_RELU":
            return F.relu(y)
        if kind == "FG_ACT_LEAKY":
            return F.leaky_relu(y, a)
        return self.torch.clamp(y, min=a, max=b)

    def _chain(self, params, t):
        """t: (batch, n) -> (batch, m) through S_0 ... S_{J-1}."""
        for p in reversed(params):
            t = t @ p.dense(self.torch).T
        return t

    def _conv(self, x, w, bias, node):
        torch, F = self.torch, self.torch.nn.functional
        win = node.attrs["window"]
        r = win.rank
        pads = []
        for b, e in zip(
            reversed(win.pads_begin[3 - r :]), reversed(win.pads_end[3 - r :]), strict=True
        ):
            pads += [b, e]
        x = F.pad(x, pads)
        w = w.reshape(w.shape[0], w.shape[1], *win.kernel[3 - r :]).to(torch.float32)
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[r]
        y = conv(
            x,
            w,
            bias,
            stride=win.strides[3 - r :],
            dilation=win.dilations[3 - r :],
            groups=node.attrs["group"],
        )
        return self._act(y, node.attrs.get("act"))

    def _pool(self, x, node):
        torch, F = self.torch, self.torch.nn.functional
        win = node.attrs["window"]
        r = win.rank
        k, s, d = win.kernel[3 - r :], win.strides[3 - r :], win.dilations[3 - r :]
        begin, end = win.pads_begin[3 - r :], win.pads_end[3 - r :]
        # Trailing padding that makes every window fit (ceil_mode may need more than the
        # model's pads, a large pad may need less: F.pad crops with negative values).
        need = [
            (o - 1) * st + (kk - 1) * dd + 1 - i - b
            for o, st, kk, dd, i, b in zip(
                win.out_size[3 - r :], s, k, d, win.in_size[3 - r :], begin, strict=True
            )
        ]

        def pairs(lo, hi):
            out = []
            for a, b in zip(reversed(lo), reversed(hi), strict=True):
                out += [a, b]
            return out

        if node.op == "MaxPool":
            pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[r]
            return pool(F.pad(x, pairs(begin, need), value=-math.inf), k, s, dilation=d)
        if any(dd != 1 for dd in d):
            raise FaustgenError(f"--finetune: dilated AveragePool '{node.name}' is not supported")
        avg = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[r]
        taps = float(np.prod(k))
        total = avg(F.pad(x, pairs(begin, need)), k, s) * taps
        mask = torch.ones((1, 1, *x.shape[2:]))
        if node.attrs["count_include_pad"]:  # the model's own padding counts, ceil's does not
            mask = F.pad(mask, pairs(begin, end), value=1.0)
            mask = F.pad(mask, pairs([0] * r, [n - e for n, e in zip(need, end, strict=True)]))
        else:
            mask = F.pad(mask, pairs(begin, need))
        return total / (avg(mask, k, s) * taps)

    def _op(self, node, ins):
        torch, F = self.torch, self.torch.nn.functional
        op, a = node.op, node.attrs
        batched_shape = (-1, *self.graph.tensors[node.outputs[0]].shape[1:])
        if op == "Dense":
            y = ins[0].reshape(-1, ins[1].shape[0]) @ ins[1]
            y = y + ins[2] if len(ins) > 2 else y
            return self._act(y, a.get("act")).reshape(batched_shape)
        if op == "FactorizedDense":
            n = a["factors"][-1].shape[1]
            y = self._chain(self.params[id(node)], ins[0].reshape(-1, n))
            y = y + ins[1] if len(ins) > 1 else y
            return self._act(y, a.get("act")).reshape(batched_shape)
        if op == "Conv":
            return self._conv(ins[0], ins[1], ins[2] if len(ins) > 2 else None, node)
        if op == "FactorizedConv":
            params, j = self.params[id(node)], len(a["factors"][0])
            blocks = [
                self._chain(params[g * j : (g + 1) * j], torch.eye(a["factors"][g][-1].shape[1])).T
                for g in range(a["group"])
            ]
            w = torch.cat([b.T for b in blocks], dim=0)
            cg = ins[0].shape[1] // a["group"]
            return self._conv(
                ins[0], w.reshape(w.shape[0], cg, -1), ins[1] if len(ins) > 1 else None, node
            )
        if op in ("MaxPool", "AveragePool"):
            return self._pool(ins[0], node)
        if op == "GlobalAveragePool":
            return ins[0].mean(dim=tuple(range(2, ins[0].dim())), keepdim=True)
        if op == "GlobalMaxPool":
            return ins[0].amax(dim=tuple(range(2, ins[0].dim())), keepdim=True)
        if op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Cast"):
            return ins[0].reshape(batched_shape)
        if op == "BatchNormalization":
            shape = (1, -1) + (1,) * (ins[0].dim() - 2)
            return ins[0] * torch.from_numpy(a["scale"]).reshape(shape) + torch.from_numpy(
                a["shift"]
            ).reshape(shape)
        unary = {
            "Relu": F.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Exp": torch.exp,
            "Log": torch.log, "Sqrt": torch.sqrt, "Abs": torch.abs, "Neg": torch.neg,
            "Reciprocal": torch.reciprocal, "Erf": torch.erf, "Softplus": F.softplus,
            "HardSwish": F.hardswish, "Gelu": F.gelu,
        }  # fmt: skip
        if op in unary:
            return unary[op](ins[0])
        if op == "LeakyRelu":
            return F.leaky_relu(ins[0], a["alpha"])
        if op == "Elu":
            return F.elu(ins[0], a["alpha"])
        if op == "Selu" and a["alpha"] == SELU_ALPHA and a["gamma"] == SELU_GAMMA:
            return F.selu(ins[0])
        if op == "HardSigmoid":
            return torch.clamp(a["alpha"] * ins[0] + a["beta"], 0, 1)
        if op == "Clip":
            return torch.clamp(ins[0], min=a["min"], max=a["max"])
        if op in ("Add", "Sub", "Mul", "Div", "PRelu", "Max", "Min", "Sum", "Mean"):
            b = (
                ins[1].reshape(a["b_view"])
                if a.get("b_view")
                else (ins[1] if len(ins) > 1 else None)
            )
            fn = {
                "Add": torch.add,
                "Sub": torch.sub,
                "Mul": torch.mul,
                "Div": torch.div,
                "Max": torch.maximum,
                "Min": torch.minimum,
                "Sum": torch.add,
                "Mean": torch.add,
            }.get(op)
            if op == "PRelu":
                return torch.where(ins[0] >= 0, ins[0], ins[0] * b)
            y = ins[0]
            for other in [b, *ins[2:]] if b is not None else []:
                y = fn(y, other)
            return y / len(ins) if op == "Mean" else y
        if op in ("Softmax", "LogSoftmax"):
            x = ins[0]
            axis = a["axis"]
            if a["flatten"]:
                x = x.reshape(*x.shape[:axis], -1)
                axis = x.dim() - 1
            y = torch.log_softmax(x, axis) if op == "LogSoftmax" else torch.softmax(x, axis)
            return y.reshape(ins[0].shape)
        if op == "Transpose":
            return ins[0].permute(*a["perm"])
        if op == "Concat":
            return torch.cat(ins, dim=a["axis"])
        raise FaustgenError(f"--finetune: {op} node '{node.name}' is not supported")


def finetune(
    dense: Graph,
    fact: Graph,
    xs: np.ndarray,
    epochs: int,
    batch: int = 64,
    lr: float = 1e-2,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Train fact's factor values to match dense's outputs on xs; updates fact in place.

    lr is the base step size (times each factor's mean |value|), decayed to 0 on a cosine
    over the epochs * ceil(len(xs) / batch) steps.
    """
    torch = _torch()
    from tqdm import tqdm

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
