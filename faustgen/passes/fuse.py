"""Fold and fuse into Conv / Dense: BatchNormalization, a constant bias Add, an activation.

Each rewrite needs the intermediate tensor to have exactly one reader and not
be the graph output, so no other node can observe the difference.
"""

from __future__ import annotations

import numpy as np

from faustgen.ir import Graph, Node
from faustgen.ops.activation import FUSABLE, SILU, fused_act

_LINEAR = ("Conv", "Dense")


def _single_reader(g: Graph, name: str) -> Node | None:
    if name in g.outputs:
        return None
    readers = g.consumers().get(name, [])
    return readers[0] if len(readers) == 1 else None


def _absorb(g: Graph, producer: Node, follower: Node, label: str) -> None:
    """The producer now computes the follower's output; the follower disappears."""
    producer.outputs = list(follower.outputs[:1])
    producer.attrs["fused"] = [*producer.attrs.get("fused", []), f"{label} '{follower.name}'"]
    g.nodes.remove(follower)


def _channel_count(g: Graph, node: Node) -> int:
    return (
        g.tensors[node.outputs[0]].shape[1]
        if node.op == "Conv"
        else g.const(node.inputs[1]).shape[1]
    )


def _set_weights(g: Graph, node: Node, w: np.ndarray, bias: np.ndarray) -> None:
    w_name = g.add_const(f"{node.name}_W", w.astype(np.float32))
    b_name = g.add_const(f"{node.name}_bias", bias.astype(np.float32))
    node.inputs = [node.inputs[0], w_name, b_name]


def _bias(g: Graph, node: Node) -> np.ndarray:
    b = g.const(node.input(2))
    return np.zeros(_channel_count(g, node), np.float64) if b is None else b.astype(np.float64)


def fold_batchnorm(graph: Graph) -> Graph:
    """Conv/Dense -> BatchNormalization  ==>  Conv/Dense with W*scale, b*scale + shift."""
    g = graph.copy()
    for node in list(g.nodes):
        if node.op not in _LINEAR or node.attrs.get("act") or node not in g.nodes:
            continue
        bn = _single_reader(g, node.outputs[0])
        if bn is None or bn.op != "BatchNormalization" or g.const(node.inputs[1]) is None:
            continue
        if node.op == "Dense" and g.tensors[node.outputs[0]].rank != 2:
            continue  # BN normalizes axis 1, which is Dense's output column only for 2-D
        scale = bn.attrs["scale"].astype(np.float64)
        shift = bn.attrs["shift"].astype(np.float64)
        w = g.const(node.inputs[1]).astype(np.float64)
        if node.op == "Conv":
            w = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
        else:
            w = w * scale.reshape(1, -1)
        _set_weights(g, node, w, _bias(g, node) * scale + shift)
        _absorb(g, node, bn, "BatchNormalization")
    g.prune_tensors()
    return g


def _per_channel(g: Graph, node: Node, const: np.ndarray) -> np.ndarray | None:
    """The constant as a per-output-channel vector, if adding it is a bias add."""
    n = _channel_count(g, node)
    out_rank = g.tensors[node.outputs[0]].rank
    s = const.shape
    if len(s) > out_rank:
        return None
    full = (1,) * (out_rank - len(s)) + tuple(s)
    if node.op == "Conv":
        ok = all(d == 1 for i, d in enumerate(full) if i != 1) and full[1] in (1, n)
        vec = const.reshape(-1) if full[1] == n else np.full(n, const.reshape(-1)[0])
    else:
        ok = all(d == 1 for d in full[:-1]) and full[-1] in (1, n)
        vec = const.reshape(-1) if full[-1] == n else np.full(n, const.reshape(-1)[0])
    return vec.astype(np.float64) if ok else None


def fuse_bias(graph: Graph) -> Graph:
    """Conv/Dense -> Add(constant per channel)  ==>  Conv/Dense with that bias."""
    g = graph.copy()
    for node in list(g.nodes):
        if node.op not in _LINEAR or node.attrs.get("act") or node not in g.nodes:
            continue
        add = _single_reader(g, node.outputs[0])
        if add is None or add.op != "Add" or add.attrs.get("b_view"):
            continue
        other = [i for i in add.inputs if i != node.outputs[0]]
        if len(other) != 1 or g.const(other[0]) is None:
            continue
        if g.tensors[add.outputs[0]].shape != g.tensors[node.outputs[0]].shape:
            continue
        vec = _per_channel(g, node, g.const(other[0]))
        if vec is None:
            continue
        _set_weights(g, node, g.const(node.inputs[1]), _bias(g, node) + vec)
        _absorb(g, node, add, "Add")
    g.prune_tensors()
    return g


def _silu_mul(g: Graph, y: str) -> tuple[Node, Node] | None:
    """(Sigmoid, Mul) when y's only readers compute y * Sigmoid(y) (SiLU / Swish)."""
    readers = g.consumers().get(y, [])
    if y in g.outputs or len(readers) != 2:
        return None
    sig = next((n for n in readers if n.op == "Sigmoid"), None)
    mul = next((n for n in readers if n.op == "Mul"), None)
    if sig is None or mul is None or _single_reader(g, sig.outputs[0]) is not mul:
        return None
    if sorted(mul.inputs) != sorted([y, sig.outputs[0]]):
        return None
    return sig, mul


def fuse_activation(graph: Graph) -> Graph:
    """Conv/Dense -> Relu / LeakyRelu / Clip, or y * Sigmoid(y)  ==>  Conv/Dense applying
    it in its epilogue."""
    g = graph.copy()
    for node in list(g.nodes):
        if node.op not in _LINEAR or node.attrs.get("act") or node not in g.nodes:
            continue
        silu = _silu_mul(g, node.outputs[0])
        if silu is not None:
            node.attrs["act"] = SILU
            g.nodes.remove(silu[0])
            _absorb(g, node, silu[1], f"Sigmoid '{silu[0].name}' + Mul")
            continue
        act = _single_reader(g, node.outputs[0])
        if act is None or act.op not in FUSABLE:
            continue
        node.attrs["act"] = fused_act(act)
        _absorb(g, node, act, act.op)
    return g
