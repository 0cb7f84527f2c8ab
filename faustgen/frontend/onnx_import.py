"""ONNX ModelProto -> faustgen IR.

One sweep over the nodes in topological order: each op parses its attributes
(for the model's opset), then the node is either folded (all inputs constant,
or outputs known from shapes alone, as Shape is) or given static output shapes.
That single sweep folds the shape sub-graphs exporters write
(Shape -> Gather -> Unsqueeze -> Concat -> Reshape) before any op needs them.

A symbolic first input axis is the batch axis: the graph is built for one
sample, and built a second time for three samples to prove every activation
scales with the batch (else the model mixes samples and cannot run per sample).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from faustgen.errors import FaustgenError
from faustgen.frontend.budget import ConstBudget
from faustgen.frontend.fold import fold_node, foldable
from faustgen.frontend.onnx_model import (
    STUB_BYTES,
    checkable,
    count_initializers,
    default_opset,
    load_model,
    normalize_opset,
    topological_order,
)
from faustgen.ir import Graph, Node, Tensor, unique_name
from faustgen.ops import REGISTRY, ParseContext, supported_onnx_ops
from faustgen.ops.base import prod
from faustgen.ops.tensor import ONNX_DTYPES

# Graph input dtypes the generated C takes (integer ids feed Gather; Boolean inputs are
# converted to the floats 0 / 1 the C code computes with), and output dtypes it returns.
INPUT_DTYPES = ("float32", "int64", "int32", "bool")
OUTPUT_DTYPES = ("float32", "bool")
_PROBE_BATCH = 3
_WEIGHT_OPS = {"Conv", "Gemm", "MatMul", "BatchNormalization", "ConvTranspose"}


def import_onnx(
    path: str | os.PathLike,
    input_shape: Sequence[int] | None = None,
    max_params: int | None = None,
) -> Graph:
    """Load, check and import an ONNX file; the result is the per-call graph.

    `max_params` caps the constants (initializers and folded results, counted before
    they are built); without it only what would not fit in memory is refused."""
    model = load_model(path)
    try:
        return import_model(
            model, input_shape=input_shape, source=str(path), max_params=max_params, path=path
        )
    except UnicodeDecodeError:
        # protobuf decodes string fields lazily: a corrupt name surfaces only when read
        raise FaustgenError(f"{path}: corrupt model (a name is not valid UTF-8)") from None


def import_model(
    model: onnx.ModelProto,
    input_shape: Sequence[int] | None = None,
    source: str = "<model>",
    max_params: int | None = None,
    path: str | os.PathLike | None = None,
) -> Graph:
    """Import a loaded model. With `path` (the file `model` was read from, and nothing else
    holds `model`), initializer bytes are released from `model` as they are decoded."""
    budget = ConstBudget(source, max_params)
    count_initializers(model, budget)
    model = normalize_opset(model, source)
    order = topological_order(model.graph, source)
    try:
        onnx.checker.check_model(checkable(model, order, budget.bytes > STUB_BYTES))
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "invalid model"
        raise FaustgenError(f"{source}: the ONNX checker rejects the model: {first}") from None
    shared = _Shared(order, budget, release=path is not None)
    graph = _Importer(model, source, input_shape, 1, shared).run()
    if graph.batch_symbolic:
        # The probe shares the first import's initializers and folded constants (a node
        # whose constant inputs are the very same arrays is not folded again).
        probe = _Importer(model, source, input_shape, _PROBE_BATCH, shared).run()
        _check_batch_axis(graph, probe)
    return graph


class _Shared:
    """What the batch-1 import and the batch-3 probe share: the node order, the constant
    budget, the decoded initializers and the folded results keyed by node index."""

    def __init__(self, order: list[int], budget: ConstBudget, release: bool):
        self.order = order
        self.budget = budget
        self.release = release  # free each initializer's bytes in the proto once decoded
        self.initializers: dict[str, np.ndarray] = {}
        self.folded: dict[int, tuple[list[np.ndarray], list[np.ndarray], dict]] = {}


def _attr_value(attr: onnx.AttributeProto, where: str) -> Any:
    if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        raise FaustgenError(f"{where}: sub-graph attribute '{attr.name}' is not supported")
    if attr.type == onnx.AttributeProto.SPARSE_TENSOR:
        raise FaustgenError(f"{where}: sparse tensor attribute '{attr.name}' is not supported")
    v = helper.get_attribute_value(attr)
    if attr.type == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(v)
    if attr.type == onnx.AttributeProto.STRING:
        return v.decode("utf-8", "replace")
    if attr.type == onnx.AttributeProto.STRINGS:
        return [s.decode("utf-8", "replace") for s in v]
    if attr.type == onnx.AttributeProto.TENSORS:
        return [numpy_helper.to_array(t) for t in v]
    return v


class _Importer:
    def __init__(
        self,
        model: onnx.ModelProto,
        source: str,
        input_shape: Sequence[int] | None,
        batch: int,
        shared: _Shared,
    ):
        self.model = model
        self.shared = shared
        self.order = shared.order
        self.g = model.graph
        self.source = source
        self.input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self.batch = batch
        self.opset = default_opset(model)
        self.graph = Graph(
            name=self.g.name or "model",
            nodes=[],
            tensors={},
            inputs=[],
            outputs=[],
            meta={
                "source": source,
                "opset": self.opset,
                "producer": f"{model.producer_name} {model.producer_version}".strip(),
                "ir_version": model.ir_version,
            },
        )

    def fail(self, message: str) -> None:
        raise FaustgenError(f"{self.source}: {message}")

    def run(self) -> Graph:
        self._initializers()
        self._inputs()
        nodes = list(self.g.node)
        for index, i in enumerate(self.order):
            self._index = i
            self._node(index, nodes[i])
        self._outputs()
        return self.graph

    # ---------------------------------------------------------------- boundary
    def _initializers(self) -> None:
        consumers = {}
        for n in self.g.node:
            for i in n.input:
                consumers.setdefault(i, n)
        for init in self.g.initializer:
            value = self.shared.initializers.get(init.name)
            if value is not None:
                self.graph.tensors[init.name] = Tensor(
                    init.name, value.shape, str(value.dtype), value
                )
                continue
            try:
                value = numpy_helper.to_array(init)
            except MemoryError:
                raise
            except Exception as e:
                self.fail(f"initializer '{init.name}' cannot be read ({e})")
            if value.dtype.kind == "f":
                if not np.isfinite(value).all():  # one pass over the data; the rare case twice
                    user = consumers.get(init.name)
                    bad = np.isnan(value).any() or (
                        user is not None and user.op_type in _WEIGHT_OPS
                    )
                    if bad:
                        self.fail(f"initializer '{init.name}' holds NaN or Inf values")
                if value.dtype != np.float32:
                    value = value.astype(np.float32)
            self.shared.initializers[init.name] = value
            if self.shared.release:
                init.ClearField("raw_data")  # the decoded copy is the only one kept
            self.graph.tensors[init.name] = Tensor(init.name, value.shape, str(value.dtype), value)

    def _inputs(self) -> None:
        real = [i for i in self.g.input if i.name not in self.graph.tensors]
        if not real:
            self.fail("the model has no input")
        if self.input_shape is not None and len(real) != 1:
            self.fail(f"--input-shape applies to one-input models; this one has {len(real)}")
        symbolic = [self._input(vi) for vi in real]
        if any(symbolic) and not all(symbolic):
            named = ", ".join(f"'{vi.name}'" for vi, sym in zip(real, symbolic, strict=True) if sym)
            self.fail(
                f"inputs {named} have a symbolic first (batch) axis and the others do not; "
                "export every input with the same batch axis"
            )
        self.graph.batch_symbolic = all(symbolic)
        self.graph.inputs = [vi.name for vi in real]

    def _input(self, vi: onnx.ValueInfoProto) -> bool:
        """Add graph input `vi`; True when its first axis is a symbolic batch axis."""
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            self.fail(f"input '{vi.name}' is not a tensor")
        dtype = ONNX_DTYPES.get(tt.elem_type, f"type {tt.elem_type}")
        if dtype not in INPUT_DTYPES:
            self.fail(
                f"input '{vi.name}' has dtype {dtype}; supported input dtypes: "
                + ", ".join(INPUT_DTYPES)
            )
        dims: list[int | str] = []
        if tt.HasField("shape"):
            for d in tt.shape.dim:
                dims.append(
                    d.dim_value
                    if d.HasField("dim_value") and d.dim_value > 0
                    else (d.dim_param or "?")
                )
        elif self.input_shape is None:
            self.fail(f"input '{vi.name}' has no shape; pass --input-shape")
        symbolic_batch = bool(dims) and isinstance(dims[0], str)
        if self.input_shape is not None:
            if dims and len(dims) != len(self.input_shape):
                self.fail(
                    f"--input-shape {self.input_shape} has rank {len(self.input_shape)}, "
                    f"input '{vi.name}' has rank {len(dims)}"
                )
            for d, given in zip(dims, self.input_shape, strict=False):
                if isinstance(d, int) and d != given:
                    self.fail(
                        f"--input-shape {self.input_shape} contradicts the fixed shape "
                        f"{tuple(dims)} of input '{vi.name}'"
                    )
            shape = list(self.input_shape)
            if symbolic_batch:
                shape[0] = self.batch
        else:
            for axis, d in enumerate(dims):
                if isinstance(d, str) and axis > 0:
                    self.fail(
                        f"input '{vi.name}' has an unresolved dimension '{d}' at axis "
                        f"{axis}; pass --input-shape"
                    )
            shape = [self.batch if isinstance(d, str) else d for d in dims]
        if any(d <= 0 for d in shape):
            self.fail(f"input '{vi.name}' has an empty shape {tuple(shape)}")
        self.graph.tensors[vi.name] = Tensor(vi.name, tuple(shape), dtype)
        return symbolic_batch

    def _outputs(self) -> None:
        names = [o.name for o in self.g.output]
        if not names:
            self.fail("the model has no output")
        for name in names:
            if name not in self.graph.tensors:
                self.fail(f"output '{name}' is produced by no node")
            t = self.graph.tensors[name]
            if t.dtype not in OUTPUT_DTYPES:
                self.fail(
                    f"output '{name}' has dtype {t.dtype}; supported output dtypes: "
                    + ", ".join(OUTPUT_DTYPES)
                )
            if t.size == 0:
                self.fail(f"output '{name}' is empty (shape {t.shape})")
        self.graph.outputs = names

    # ---------------------------------------------------------------- nodes
    def _node(self, index: int, proto: onnx.NodeProto) -> None:
        name = unique_name(
            (n.name for n in self.graph.nodes), proto.name or f"{proto.op_type}_{index}"
        )
        where = f"{proto.op_type} node '{name}'"
        if proto.domain not in ("", "ai.onnx"):
            raise FaustgenError(
                f"{self.source}: unsupported op '{proto.domain}.{proto.op_type}' "
                f"(node '{name}'); faustgen supports the ai.onnx ops: "
                + ", ".join(supported_onnx_ops())
            )
        op = REGISTRY.get(proto.op_type)
        if (op is None or not op.onnx) and self._fold_unregistered(proto, where):
            return
        if op is None or not op.onnx:
            raise FaustgenError(
                f"{self.source}: unsupported op '{proto.op_type}' (node '{name}'); "
                "supported: " + ", ".join(supported_onnx_ops())
            )
        attrs = {a.name: _attr_value(a, where) for a in proto.attribute}
        ctx = ParseContext(
            proto.op_type,
            name,
            list(proto.input),
            list(proto.output),
            attrs,
            self.opset,
            self.graph,
        )
        try:
            node = op.parse(ctx)
            self._evaluate(op, node)
        except (FaustgenError, MemoryError):
            raise
        except Exception as e:  # a malformed model must not surface as a traceback
            raise FaustgenError(f"{where}: cannot import ({type(e).__name__}: {e})") from None

    def _fold_unregistered(self, proto: onnx.NodeProto, where: str) -> bool:
        """Fold a node of an op faustgen has no kernel for when all its inputs are constants."""
        tensors = self.graph.tensors
        names = [i for i in proto.input if i]
        if not foldable(proto) or not all(tensors[i].is_const for i in names):
            return False
        inputs = {i: tensors[i].value for i in names}
        budget = self.shared.budget
        values = fold_node(proto, inputs, self.opset, budget.room(), where)
        made = [v for v in values if v is not None]
        budget.reserve(sum(v.size for v in made), sum(v.nbytes for v in made), where)
        for name, v in zip(proto.output, values, strict=False):
            if name and v is not None:
                tensors[name] = Tensor(name, tuple(v.shape), str(v.dtype), v)
        return True

    def _evaluate(self, op, node: Node) -> None:
        tensors = self.graph.tensors
        ins = [tensors[i] for i in node.inputs if i]
        values = op.static_outputs(node, ins)
        if values is None and all(t.is_const for t in ins):
            values = self._fold(op, node, ins)
        if values is not None:
            for name, v in zip(node.outputs, values, strict=False):
                if name:
                    v = np.asarray(v)
                    tensors[name] = Tensor(name, tuple(v.shape), str(v.dtype), v)
            return
        for name, (shape, dtype) in zip(node.outputs, op.infer(node, ins), strict=False):
            if name:
                tensors[name] = Tensor(name, tuple(int(d) for d in shape), dtype)
        self.graph.nodes.append(node)

    def _fold(self, op, node: Node, ins: list[Tensor]) -> list[np.ndarray]:
        """The outputs of a node whose inputs are all constant: reserved in the budget from
        their inferred shapes before they are computed, and computed once for both imports."""
        args = [t.value for t in ins]
        done = self.shared.folded.get(self._index)
        if (
            done is not None
            and len(done[0]) == len(args)
            and all(a is b for a, b in zip(done[0], args, strict=True))
            and _same_attrs(done[2], node.attrs)
        ):
            return done[1]
        try:
            predicted = [(prod(shape), np.dtype(dtype)) for shape, dtype in op.infer(node, ins)]
        except Exception:  # e.g. an op whose shape rule needs activations: count it after
            predicted = None
        if predicted is not None:
            elements = sum(n for n, _ in predicted)
            nbytes = sum(n * dt.itemsize for n, dt in predicted)
            self.shared.budget.reserve(elements, nbytes, f"node '{node.name}' ({node.op})")
        values = [np.asarray(v) for v in op.compute(node, args)]
        if predicted is None:
            self.shared.budget.reserve(
                sum(v.size for v in values),
                sum(v.nbytes for v in values),
                f"node '{node.name}' ({node.op})",
            )
        self.shared.folded[self._index] = (args, values, node.attrs)
        return values


def _same_attrs(a: dict, b: dict) -> bool:
    """Whether two parses of one node gave the same attributes. Ops that take a constant
    input into their attributes (Expand's shape, Reshape's) differ between the batch-1
    import and the probe when that input was computed from the batch (Shape -> Expand)."""
    if a.keys() != b.keys():
        return False
    for k, x in a.items():
        y = b[k]
        if x is y:
            continue
        try:
            if not bool(np.all(np.asarray(x == y))):
                return False
        except (ValueError, TypeError):
            return False
    return True


def _check_batch_axis(g1: Graph, g3: Graph) -> None:
    """Every activation must scale with the batch along axis 0, and no op may mix along it."""
    producers = g1.producers()
    for t in g1.activations():
        t3 = g3.tensors.get(t.name)
        if t3 is None or t3.is_const:
            continue
        expected = (t.shape[0] * _PROBE_BATCH, *t.shape[1:]) if t.shape else None
        if t3.shape != expected:
            node = producers.get(t.name)
            where = f"node '{node.name}' ({node.op})" if node else f"tensor '{t.name}'"
            raise FaustgenError(
                f"{g1.meta['source']}: {where} mixes samples along the batch axis (shape "
                f"{t.shape} for 1 sample, {t3.shape} for {_PROBE_BATCH}); export the model with "
                "a fixed batch size or pass --input-shape"
            )
    for node in g1.nodes:
        ins = [g1.tensors[i] for i in node.inputs if i]
        if not REGISTRY[node.op].batch_axes_ok(node, ins):
            raise FaustgenError(
                f"{g1.meta['source']}: node '{node.name}' ({node.op}) works across the batch "
                "axis; export the model with a fixed batch size or pass --input-shape"
            )
