"""Views: Identity, Dropout (inference), Reshape, Flatten, Squeeze, Unsqueeze.

On activations they cost nothing: the output is the input's storage under another shape.
"""

from __future__ import annotations

import numpy as np

from faustgen.ops.base import (
    Op,
    ints,
    norm_axis,
    prod,
    register_op,
)


class _View(Op):
    """Ops whose output is the input's data under another shape."""

    def compute_torch(self, node, ins, t):
        return [ins[0].reshape(t.batched(node))]

    def lower(self, node, em):
        em.alias()


@register_op("Identity")
class Identity(_View):
    def compute(self, node, ins):
        return [ins[0]]


@register_op("Dropout")
class Dropout(_View):
    """Inference: identity. The optional mask output is all ones."""

    def parse(self, ctx):
        training = ctx.graph.const(ctx.input(2)) if ctx.opset >= 12 else None
        ratio = ctx.graph.const(ctx.input(1)) if ctx.opset >= 12 else ctx.attr("ratio", 0.5)
        random = ratio is None or float(np.asarray(ratio).reshape(-1)[0]) != 0.0
        if training is not None and bool(np.asarray(training).reshape(-1)[0]) and random:
            ctx.fail("training_mode=true (random dropout) is not supported")
        if ctx.input(2) and training is None:
            ctx.fail("training_mode must be a constant")
        return ctx.node({}, inputs=[ctx.input(0)])

    def infer(self, node, ins):
        out = [(ins[0].shape, ins[0].dtype)]
        return out + [(ins[0].shape, "bool")] * (len(node.outputs) - 1)

    def compute(self, node, ins):
        return [ins[0]] + [np.ones(ins[0].shape, bool)] * (len(node.outputs) - 1)

    def compute_torch(self, node, ins, t):
        mask = t.torch.ones(ins[0].shape, dtype=t.torch.bool)
        return [ins[0]] + [mask] * (len(node.outputs) - 1)

    def lower(self, node, em):
        em.alias()
        if len(node.outputs) > 1 and node.outputs[1]:
            # the mask: all true, a Boolean activation held as floats 0 / 1
            size = em.graph.tensors[node.outputs[1]].size
            ones = em.weight(np.ones(size, np.float32), node.name + "_mask")
            em.call("fg_copy", ones, em.y(1), size)


@register_op("Reshape")
class Reshape(_View):
    def parse(self, ctx):
        if ctx.opset < 5:
            shape = ctx.attr("shape")
            if shape is None:
                ctx.fail("the shape attribute is missing")
        else:
            shape = ctx.const_input(1, "shape")
        shape = ints(shape)
        in_shape = ctx.shape(0)
        allowzero = int(ctx.attr("allowzero", 0))
        out = []
        for i, d in enumerate(shape):
            if d == 0 and not allowzero:
                if i >= len(in_shape):
                    ctx.fail(f"shape {shape} copies axis {i} of an input of rank {len(in_shape)}")
                d = in_shape[i]
            out.append(d)
        total = prod(in_shape)
        if out.count(-1) > 1:
            ctx.fail(f"shape {shape} has more than one -1")
        if -1 in out:
            known = prod([d for d in out if d != -1])
            if known == 0 or total % known:
                ctx.fail(f"cannot reshape {tuple(in_shape)} to {shape}")
            out[out.index(-1)] = total // known
        if prod(out) != total or any(d < 0 for d in out):
            ctx.fail(f"cannot reshape {tuple(in_shape)} to {shape}")
        return ctx.node({"shape": tuple(out)}, inputs=[ctx.input(0)])

    def infer(self, node, ins):
        return [(node.attrs["shape"], ins[0].dtype)]

    def compute(self, node, ins):
        return [ins[0].reshape(node.attrs["shape"])]

    def batch_axes_ok(self, node, ins):
        return True  # checked globally by comparing shapes at two batch sizes


@register_op("Flatten")
class Flatten(_View):
    def parse(self, ctx):
        rank = len(ctx.shape(0))
        axis = ctx.attr("axis", 1)
        axis = axis + rank if axis < 0 else axis
        if not 0 <= axis <= rank:
            ctx.fail(f"axis {ctx.attr('axis')} is out of range for rank {rank}")
        s = ctx.shape(0)
        return ctx.node({"shape": (prod(s[:axis]), prod(s[axis:]))})

    def infer(self, node, ins):
        return [(node.attrs["shape"], ins[0].dtype)]

    def compute(self, node, ins):
        return [ins[0].reshape(node.attrs["shape"])]


@register_op("Squeeze")
class Squeeze(_View):
    def parse(self, ctx):
        shape = ctx.shape(0)
        axes = ctx.attr("axes") if ctx.opset < 13 else ctx.const_input(1, "axes", required=False)
        if axes is None:
            axes = [i for i, d in enumerate(shape) if d == 1]
        axes = sorted({norm_axis(a, len(shape), ctx) for a in ints(axes)})
        for a in axes:
            if shape[a] != 1:
                ctx.fail(f"cannot squeeze axis {a} of shape {tuple(shape)}")
        out = tuple(d for i, d in enumerate(shape) if i not in axes)
        return ctx.node({"shape": out, "axes": tuple(axes)}, inputs=[ctx.input(0)])

    def infer(self, node, ins):
        return [(node.attrs["shape"], ins[0].dtype)]

    def compute(self, node, ins):
        return [ins[0].reshape(node.attrs["shape"])]


@register_op("Unsqueeze")
class Unsqueeze(_View):
    def parse(self, ctx):
        shape = list(ctx.shape(0))
        axes = ctx.attr("axes") if ctx.opset < 13 else ctx.const_input(1, "axes")
        rank = len(shape) + len(ints(axes))
        axes = sorted(norm_axis(a, rank, ctx) for a in ints(axes))
        if len(set(axes)) != len(axes):
            ctx.fail("repeated axes")
        for a in axes:
            shape.insert(a, 1)
        return ctx.node({"shape": tuple(shape)}, inputs=[ctx.input(0)])

    def infer(self, node, ins):
        return [(node.attrs["shape"], ins[0].dtype)]

    def compute(self, node, ins):
        return [ins[0].reshape(node.attrs["shape"])]
