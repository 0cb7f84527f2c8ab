"""Constants, shape queries and Cast: Constant, ConstantOfShape, Shape, Size, Range, Cast.

Most of these only ever run at compile time (constant folding of the shape sub-graphs
exporters write). Views (Reshape & co.) are in view.py, data movement in movement.py.
"""

from __future__ import annotations

import numpy as np

from faustgen.ir import Node
from faustgen.ops.base import (
    Op,
    ParseContext,
    fail,
    ints,
    prod,
    register_op,
)

# ------------------------------------------------------------------ constants


@register_op("Constant")
class Constant(Op):
    def parse(self, ctx: ParseContext) -> Node:
        for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            if key in ctx.attrs:
                v = ctx.attrs[key]
                dtype = np.float32 if "float" in key else np.int64
                value = np.asarray(v) if key == "value" else np.asarray(v, dtype=dtype)
                return ctx.node({"value": value}, inputs=[])
        ctx.fail("only dense tensor, float(s) and int(s) values are supported")

    def infer(self, node, ins):
        v = node.attrs["value"]
        return [(v.shape, str(v.dtype))]

    def compute(self, node, ins):
        return [node.attrs["value"]]

    def compute_torch(self, node, ins, t):
        return [t.const(node.attrs["value"])]


@register_op("ConstantOfShape")
class ConstantOfShape(Op):
    def parse(self, ctx):
        value = ctx.attr("value")
        value = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
        shape = ctx.const_input(0, "shape")
        return ctx.node({"value": value[:1], "shape": tuple(ints(shape))}, inputs=[])

    def infer(self, node, ins):
        return [(node.attrs["shape"], str(node.attrs["value"].dtype))]

    def compute(self, node, ins):
        # A read-only broadcast view: no memory until a consumer (weight packing) copies it.
        return [np.broadcast_to(node.attrs["value"][:1].reshape(()), node.attrs["shape"])]

    def compute_torch(self, node, ins, t):
        return [t.const(self.compute(node, ins)[0])]


@register_op("Shape")
class Shape(Op):
    def parse(self, ctx):
        return ctx.node({"start": ctx.attr("start", 0), "end": ctx.attr("end")})

    def _value(self, node, shape):
        end = node.attrs["end"]
        return np.array(shape[node.attrs["start"] : end if end is not None else None], np.int64)

    def infer(self, node, ins):
        return [((len(self._value(node, ins[0].shape)),), "int64")]

    def static_outputs(self, node, ins):
        return [self._value(node, ins[0].shape)]

    def compute(self, node, ins):
        return [self._value(node, ins[0].shape)]

    def compute_torch(self, node, ins, t):  # of the per-call shape, as in the C
        return [t.const(self._value(node, t.graph.tensors[node.inputs[0]].shape))]


@register_op("Size")
class Size(Op):
    def infer(self, node, ins):
        return [((), "int64")]

    def static_outputs(self, node, ins):
        return [np.array(ins[0].size, np.int64)]

    def compute(self, node, ins):
        return [np.array(ins[0].size, np.int64)]

    def compute_torch(self, node, ins, t):  # of the per-call shape, as in the C
        return [t.const(np.array(t.graph.tensors[node.inputs[0]].size, np.int64))]


@register_op("Range")
class Range(Op):
    def parse(self, ctx):
        for i in range(3):
            ctx.const_input(i, ("start", "limit", "delta")[i])
        return ctx.node({})

    def infer(self, node, ins):  # only ever folded: the length, before arange builds it
        start, limit, delta = (np.asarray(t.value).item() for t in ins)
        if delta == 0:
            fail(node, "Range with delta 0")
        return [((max(int(np.ceil((limit - start) / delta)), 0),), ins[0].dtype)]

    def compute(self, node, ins):
        start, limit, delta = (np.asarray(v).item() for v in ins)
        return [np.arange(start, limit, delta).astype(ins[0].dtype)]

    def compute_torch(self, node, ins, t):  # only ever folded: the inputs are constants
        return [t.const(self.compute(node, [v.numpy() for v in ins])[0])]


# ONNX TensorProto element types -> numpy dtype names (the ones faustgen handles)
ONNX_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
}


@register_op("Cast")
class Cast(Op):
    def parse(self, ctx):
        to = int(ctx.attr("to", 1))
        if to not in ONNX_DTYPES:
            ctx.fail(f"cast to ONNX type {to} is not supported")
        return ctx.node({"to": ONNX_DTYPES[to]})

    def infer(self, node, ins):
        return [(ins[0].shape, node.attrs["to"])]

    def compute(self, node, ins):
        return [ins[0].astype(node.attrs["to"])]

    def compute_torch(self, node, ins, t):
        return [ins[0].to(getattr(t.torch, node.attrs["to"]))]

    def lower(self, node, em):
        # Boolean activations are stored as floats 0 / 1 (see ops/logical.py).
        src, to = em.graph.tensors[node.inputs[0]].dtype, node.attrs["to"]
        if src in ("int64", "int32") and to == "float32":
            n = prod(em.shape_in(0))
            em.call(f"fg_{'i64' if src == 'int64' else 'i32'}_to_float", em.x_int(0), em.y(), n)
            return
        if src not in ("float32", "bool") or to not in ("float32", "bool"):
            em.fail(f"cast of a {src} activation to {to} is not supported")
        if to == "bool" and src != "bool":
            n = prod(em.shape_in(0))
            zero = em.weight(np.zeros(1, np.float32), "zero")
            p = em.struct("fg_bcast", "ne0", ndim=1, shape=[n], sa=[1], sb=[0])
            em.call("fg_binary", "FG_NOT_EQUAL", p, em.x(0), zero, em.y())
            return
        em.alias()
