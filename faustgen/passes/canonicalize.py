"""Put linear layers in one form (Dense) and drop no-op nodes, so later passes match one pattern."""

from __future__ import annotations

import numpy as np

from faustgen.ir import Graph, Node


def remove_identities(graph: Graph) -> Graph:
    """Identity, Dropout and float->float Cast: readers use the input directly."""
    g = graph.copy()
    kept = []
    for node in g.nodes:
        noop = node.op in ("Identity", "Dropout") or (
            node.op == "Cast" and g.tensors[node.inputs[0]].dtype == node.attrs["to"]
        )
        extra_outputs = [o for o in node.outputs[1:] if o]
        if noop and not extra_outputs and node.inputs[0] not in g.inputs:
            g.replace_uses(node.outputs[0], node.inputs[0])
            continue
        kept.append(node)
    g.nodes = kept
    return g


def canonicalize_linear(graph: Graph) -> Graph:
    """Gemm and MatMul with a constant weight become Dense: y = x @ W + bias, W is K x N."""
    g = graph.copy()
    out: list[Node] = []
    for node in g.nodes:
        if node.op == "Gemm":
            out.extend(_gemm(g, node))
        elif node.op == "MatMul":
            out.extend(_matmul(g, node))
        else:
            out.append(node)
    g.nodes = out
    return g


def _dense(g: Graph, node: Node, x: str, w: np.ndarray, bias: str, y: str, out_shape=None) -> Node:
    attrs = {"act": None, "fused": [], "onnx_op": node.op}
    if out_shape is not None:
        attrs["out_shape"] = tuple(out_shape)
    # W may be a transposed view of the initializer: the kernels' packing copies it once.
    w_name = g.add_const(f"{node.name}_W", np.asarray(w, dtype=np.float32))
    return Node("Dense", node.name, [x, w_name, bias], [y], attrs)


def _gemm(g: Graph, node: Node) -> list[Node]:
    a, b, c = node.input(0), node.input(1), node.input(2)
    at = node.attrs
    nodes: list[Node] = []
    y = node.outputs[0]
    m, n = g.tensors[y].shape
    if at["transA"]:
        t = g.add_activation(f"{a}_T", g.tensors[a].shape[::-1])
        nodes.append(Node("Transpose", f"{node.name}_transA", [a], [t], {"perm": (1, 0)}))
        a = t
    c_val = g.const(c)
    bias = ""
    add_c = bool(c) and at["beta"] != 0
    bv = g.const(b)
    if bv is not None:
        w = bv.T if at["transB"] else bv
        if at["alpha"] != 1.0:
            # alpha is a float32 attribute: the float32 product is the correctly rounded one
            w = w.astype(np.float32) * np.float32(at["alpha"])
        if add_c and c_val is not None and _is_row_vector(c_val.shape, n):
            vec = np.broadcast_to(np.asarray(c_val, np.float64).reshape(-1), (n,)) * at["beta"]
            bias = g.add_const(f"{node.name}_bias", vec.astype(np.float32))
            add_c = False
        dense_out = g.add_activation(f"{y}_mm", (m, n)) if add_c else y
        nodes.append(_dense(g, node, a, w, bias, dense_out))
    else:
        if at["transB"]:
            t = g.add_activation(f"{b}_T", g.tensors[b].shape[::-1])
            nodes.append(Node("Transpose", f"{node.name}_transB", [b], [t], {"perm": (1, 0)}))
            b = t
        mm = g.add_activation(f"{y}_mm", (m, n))
        nodes.append(Node("MatMul", node.name, [a, b], [mm], {}))
        dense_out = mm
        if at["alpha"] != 1.0:
            scaled = g.add_activation(f"{y}_alpha", (m, n)) if add_c else y
            k = g.add_const(f"{node.name}_alpha", np.array(at["alpha"], np.float32))
            nodes.append(Node("Mul", f"{node.name}_alpha", [mm, k], [scaled], {"b_view": None}))
            dense_out = scaled
        elif not add_c:
            nodes[-1].outputs = [y]
            g.tensors.pop(mm)
    if add_c:
        if c_val is not None:
            c_in = g.add_const(
                f"{node.name}_C", (np.float32(at["beta"]) * c_val).astype(np.float32)
            )
        else:
            c_in = c
            if at["beta"] != 1.0:
                c_in = g.add_activation(f"{c}_beta", g.tensors[c].shape)
                k = g.add_const(f"{node.name}_beta", np.array(at["beta"], np.float32))
                nodes.append(Node("Mul", f"{node.name}_beta", [c, k], [c_in], {"b_view": None}))
        nodes.append(Node("Add", f"{node.name}_C", [dense_out, c_in], [y], {"b_view": None}))
    return nodes


def _is_row_vector(shape, n: int) -> bool:
    s = tuple(shape)
    while s and s[0] == 1 and len(s) > 1:
        s = s[1:]
    return s in ((), (1,), (n,))


def _matmul(g: Graph, node: Node) -> list[Node]:
    a, b = node.inputs
    y = node.outputs[0]
    out_shape = g.tensors[y].shape
    av, bv = g.const(a), g.const(b)
    if bv is not None and bv.ndim <= 2 and av is None:
        w = bv.reshape(-1, 1) if bv.ndim == 1 else bv
        return [_dense(g, node, a, w, "", y, out_shape)]
    if av is not None and av.ndim == 2 and bv is None and g.tensors[b].rank == 1:
        return [_dense(g, node, b, av.T, "", y, out_shape)]
    return [node]
