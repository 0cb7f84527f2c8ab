"""Data movement: Transpose, Expand, Slice (strided copies), Gather, Concat, Split (block
copies), and the strided-copy helpers binary.py and reduce.py share."""

from __future__ import annotations

import numpy as np

from faustgen.ops.base import (
    Op,
    fail,
    ints,
    norm_axis,
    prod,
    register_op,
)


def collapse(shape: list[int], *strides: list[int]) -> tuple[list[int], list[list[int]]]:
    """Merge adjacent axes that are contiguous in every operand; drop size-1 axes."""
    axes = [i for i, d in enumerate(shape) if d != 1]
    shape = [shape[i] for i in axes]
    strides = [[s[i] for i in axes] for s in strides]
    if not shape:
        return [1], [[0] for _ in strides]
    out_shape = [shape[-1]]
    out_strides = [[s[-1]] for s in strides]
    for i in range(len(shape) - 2, -1, -1):
        if all(
            s[i] == s_out[0] * out_shape[0] for s, s_out in zip(strides, out_strides, strict=True)
        ):
            out_shape[0] *= shape[i]
        else:
            out_shape.insert(0, shape[i])
            for s, s_out in zip(strides, out_strides, strict=True):
                s_out.insert(0, s[i])
    return out_shape, out_strides


def contiguous_strides(shape) -> list[int]:
    strides = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        strides[i] = strides[i + 1] * shape[i + 1]
    return strides


def emit_strided_copy(
    em, out_shape, src_strides, src_offset: int = 0, inp: int = 0, dest=None
) -> None:
    """dest (contiguous, out_shape; default output 0) = input `inp` viewed with `src_strides`
    from `src_offset`."""
    dest = em.y() if dest is None else dest
    shape, (strides,) = collapse(list(out_shape), list(src_strides))
    if len(shape) > 8:
        em.fail(f"tensor of rank {len(shape)} after axis merging; at most 8 are supported")
    if len(shape) == 1 and strides[0] == 1:
        em.call("fg_copy", em.x(inp, src_offset), dest, shape[0])
        return
    p = em.struct("fg_perm", "perm", ndim=len(shape), shape=shape, stride=strides)
    em.call("fg_transpose", p, em.x(inp, src_offset), dest)


@register_op("Transpose")
class Transpose(Op):
    def parse(self, ctx):
        rank = len(ctx.shape(0))
        perm = ctx.attr("perm")
        perm = list(range(rank))[::-1] if perm is None else ints(perm)
        if sorted(perm) != list(range(rank)):
            ctx.fail(f"perm {perm} is not a permutation of {rank} axes")
        return ctx.node({"perm": tuple(perm)})

    def infer(self, node, ins):
        return [(tuple(ins[0].shape[p] for p in node.attrs["perm"]), ins[0].dtype)]

    def compute(self, node, ins):
        return [np.transpose(ins[0], node.attrs["perm"])]

    def compute_torch(self, node, ins, t):
        return [ins[0].permute(*node.attrs["perm"])]

    def batch_axes_ok(self, node, ins):
        return node.attrs["perm"][0] == 0

    def lower(self, node, em):
        perm = node.attrs["perm"]
        st = contiguous_strides(em.shape_in(0))
        emit_strided_copy(em, em.shape_out(), [st[p] for p in perm])


@register_op("Expand")
class Expand(Op):
    def parse(self, ctx):
        shape = ints(ctx.const_input(1, "shape"))
        out = np.broadcast_shapes(tuple(ctx.shape(0)), tuple(shape))
        return ctx.node({"shape": tuple(int(d) for d in out)}, inputs=[ctx.input(0)])

    def infer(self, node, ins):
        return [(node.attrs["shape"], ins[0].dtype)]

    def compute(self, node, ins):
        return [np.broadcast_to(ins[0], node.attrs["shape"])]  # read-only, as ConstantOfShape

    def compute_torch(self, node, ins, t):
        shape = list(node.attrs["shape"])
        if ins[0].dim() == len(shape):
            shape[0] = ins[0].shape[0]  # the batch
        return [ins[0].expand(shape)]

    def lower(self, node, em):
        out = node.attrs["shape"]
        ins = (1,) * (len(out) - len(em.shape_in(0))) + tuple(em.shape_in(0))
        st = contiguous_strides(ins)
        emit_strided_copy(em, out, [0 if d == 1 else s for d, s in zip(ins, st, strict=True)])


@register_op("Slice")
class Slice(Op):
    def parse(self, ctx):
        shape = ctx.shape(0)
        if ctx.opset < 10:
            starts, ends, axes = ctx.attr("starts"), ctx.attr("ends"), ctx.attr("axes")
            steps = None
        else:
            starts = ctx.const_input(1, "starts")
            ends = ctx.const_input(2, "ends")
            axes = ctx.const_input(3, "axes", required=False)
            steps = ctx.const_input(4, "steps", required=False)
        starts, ends = ints(starts), ints(ends)
        axes = list(range(len(starts))) if axes is None else ints(axes)
        steps = [1] * len(starts) if steps is None else ints(steps)
        begin = [0] * len(shape)
        step = [1] * len(shape)
        count = list(shape)
        for s, e, a, k in zip(starts, ends, axes, steps, strict=True):
            a = norm_axis(a, len(shape), ctx)
            if k == 0:
                ctx.fail("slice step 0")
            idx = range(shape[a])[slice(s, e, k)]
            begin[a], step[a], count[a] = (idx.start if len(idx) else 0), k, len(idx)
        return ctx.node(
            {"begin": tuple(begin), "step": tuple(step), "shape": tuple(count)},
            inputs=[ctx.input(0)],
        )

    def infer(self, node, ins):
        return [(node.attrs["shape"], ins[0].dtype)]

    def _index(self, node):
        a = node.attrs
        return tuple(
            slice(b, b + k * n, k) if n else slice(0, 0)
            for b, k, n in zip(a["begin"], a["step"], a["shape"], strict=True)
        )

    def compute(self, node, ins):
        a = node.attrs
        out = np.empty(a["shape"], ins[0].dtype)
        if out.size:
            idx = tuple(
                np.arange(n) * k + b
                for b, k, n in zip(a["begin"], a["step"], a["shape"], strict=True)
            )
            out = ins[0][np.ix_(*idx)]
        return [out]

    def compute_torch(self, node, ins, t):
        x, a = ins[0], node.attrs
        full = t.graph.tensors[node.inputs[0]].shape  # per call: axis 0 may be the batch
        for axis, (b, k, n) in enumerate(zip(a["begin"], a["step"], a["shape"], strict=True)):
            if (b, k, n) != (0, 1, full[axis]):
                x = x.index_select(axis, t.torch.arange(n) * k + b)
        return [x]

    def batch_axes_ok(self, node, ins):
        return node.attrs["shape"][0] == ins[0].shape[0]

    def lower(self, node, em):
        a = node.attrs
        st = contiguous_strides(em.shape_in(0))
        offset = sum(b * s for b, s in zip(a["begin"], st, strict=True))
        emit_strided_copy(
            em, a["shape"], [k * s for k, s in zip(a["step"], st, strict=True)], src_offset=offset
        )


@register_op("Gather")
class Gather(Op):
    def parse(self, ctx):
        axis = norm_axis(ctx.attr("axis", 0), len(ctx.shape(0)), ctx)
        idx = ctx.graph.const(ctx.input(1))
        if idx is not None and not ctx.graph.is_const(ctx.input(0)):
            n = ctx.shape(0)[axis]
            if np.any((idx < -n) | (idx >= n)):
                ctx.fail(f"indices out of range for an axis of size {n}")
        return ctx.node({"axis": axis})

    def infer(self, node, ins):
        s, axis = ins[0].shape, node.attrs["axis"]
        return [(s[:axis] + ins[1].shape + s[axis + 1 :], ins[0].dtype)]

    def compute(self, node, ins):
        return [np.take(ins[0], ins[1].astype(np.int64), axis=node.attrs["axis"])]

    def compute_torch(self, node, ins, t):
        x, axis = ins[0], node.attrs["axis"]
        idx = ins[1].to(t.torch.int64)
        y = x.index_select(axis, idx.reshape(-1) % x.shape[axis])
        return [y.reshape(*x.shape[:axis], *idx.shape, *x.shape[axis + 1 :])]

    def batch_axes_ok(self, node, ins):
        # a constant table looked up by per-sample ids (an embedding) keeps the ids' batch
        return node.attrs["axis"] != 0 or ins[0].is_const

    def lower(self, node, em):
        axis = node.attrs["axis"]
        s = em.shape_in(0)
        if em.const_in(1) is None:  # ids computed at run time: an embedding lookup
            dtype = em.graph.tensors[node.inputs[1]].dtype
            if dtype not in ("int64", "int32"):
                em.fail(f"indices of dtype {dtype}; int64 or int32 expected")
            em.call(
                f"fg_gather_{'i64' if dtype == 'int64' else 'i32'}",
                em.x(0),
                em.x_int(1),
                em.y(),
                prod(s[:axis]),
                s[axis],
                prod(s[axis + 1 :]),
                prod(em.shape_in(1)),
            )
            return
        idx = em.const_in(1).astype(np.int64).reshape(-1) % s[axis]
        outer, n, inner = prod(s[:axis]), s[axis], prod(s[axis + 1 :])
        if len(idx) > 64:
            em.fail("Gather of more than 64 slices of an activation is not supported")
        for j, i in enumerate(idx):
            em.call(
                "fg_copy_blocks",
                em.x(0, int(i) * inner),
                em.y(0, j * inner),
                outer,
                inner,
                n * inner,
                len(idx) * inner,
            )


@register_op("Concat")
class Concat(Op):
    def parse(self, ctx):
        rank = len(ctx.shape(0))
        axis = ctx.attr("axis", 1 if ctx.opset < 4 else None)
        if axis is None:
            ctx.fail("the axis attribute is missing")
        inputs = [i for i in ctx.inputs if i]
        return ctx.node({"axis": norm_axis(axis, rank, ctx)}, inputs=inputs)

    def infer(self, node, ins):
        axis = node.attrs["axis"]
        base = list(ins[0].shape)
        for t in ins[1:]:
            if len(t.shape) != len(base) or any(
                a != b for i, (a, b) in enumerate(zip(t.shape, base, strict=True)) if i != axis
            ):
                fail(
                    node,
                    f"cannot concatenate shapes {tuple(ins[0].shape)} and {t.shape} on axis {axis}",
                )
        base[axis] = sum(t.shape[axis] for t in ins)
        return [(tuple(base), ins[0].dtype)]

    def compute(self, node, ins):
        return [np.concatenate(ins, axis=node.attrs["axis"])]

    def compute_torch(self, node, ins, t):
        return [t.torch.cat(ins, dim=node.attrs["axis"])]

    def batch_axes_ok(self, node, ins):
        return node.attrs["axis"] != 0

    def lower(self, node, em):
        axis = node.attrs["axis"]
        out = em.shape_out()
        outer, inner, total = prod(out[:axis]), prod(out[axis + 1 :]), out[axis]
        pos = 0
        for i in range(len(node.inputs)):
            n = em.shape_in(i)[axis]
            if n:
                em.call(
                    "fg_copy_blocks",
                    em.x(i),
                    em.y(0, pos * inner),
                    outer,
                    n * inner,
                    n * inner,
                    total * inner,
                )
            pos += n


@register_op("Split")
class Split(Op):
    def parse(self, ctx):
        shape = ctx.shape(0)
        axis = norm_axis(ctx.attr("axis", 0), len(shape), ctx)
        split = ctx.attr("split") if ctx.opset < 13 else ctx.const_input(1, "split", False)
        n_out = len(ctx.outputs)
        if split is None:
            size = -(-shape[axis] // n_out)
            split = [min(size, shape[axis] - k * size) for k in range(n_out)]
        split = ints(split)
        if sum(split) != shape[axis] or len(split) != n_out:
            ctx.fail(f"split {split} does not fit axis {axis} of shape {tuple(shape)}")
        return ctx.node({"axis": axis, "split": tuple(split)}, inputs=[ctx.input(0)])

    def infer(self, node, ins):
        axis = node.attrs["axis"]
        out = []
        for n in node.attrs["split"]:
            s = list(ins[0].shape)
            s[axis] = n
            out.append((tuple(s), ins[0].dtype))
        return out

    def compute(self, node, ins):
        cuts = np.cumsum(node.attrs["split"])[:-1]
        return [np.ascontiguousarray(p) for p in np.split(ins[0], cuts, axis=node.attrs["axis"])]

    def compute_torch(self, node, ins, t):
        return list(t.torch.split(ins[0], list(node.attrs["split"]), dim=node.attrs["axis"]))

    def batch_axes_ok(self, node, ins):
        return node.attrs["axis"] != 0

    def lower(self, node, em):
        axis = node.attrs["axis"]
        s = em.shape_in(0)
        outer, inner, total = prod(s[:axis]), prod(s[axis + 1 :]), s[axis]
        pos = 0
        for k, n in enumerate(node.attrs["split"]):
            if n and node.outputs[k]:
                em.call(
                    "fg_copy_blocks",
                    em.x(0, pos * inner),
                    em.y(k),
                    outer,
                    n * inner,
                    total * inner,
                    n * inner,
                )
            pos += n
