"""Reading an ONNX file and the checks that come before import.

Everything here works on the ModelProto as a whole (names, opset, node order, what the ONNX
checker is shown); the per-node translation into the IR is `onnx_import`'s.
"""

from __future__ import annotations

import heapq
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import version_converter

from faustgen.errors import FaustgenError
from faustgen.frontend.budget import ConstBudget
from faustgen.ops.tensor import ONNX_DTYPES

MIN_OPSET = 6
STUB_BYTES = 64 << 20  # initializers above this are stubbed for the checker (see checkable)


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file (and its external data) or raise a one-line FaustgenError."""
    p = Path(path)
    if not p.exists():
        raise FaustgenError(f"{p}: no such file")
    if not p.is_file():
        raise FaustgenError(f"{p}: not a file")
    try:
        with open(p, "rb") as f:
            data = f.read()
    except OSError as e:
        raise FaustgenError(f"{p}: cannot read ({e.strerror})") from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except MemoryError:
        raise
    except Exception:
        raise FaustgenError(f"{p}: not an ONNX model (protobuf parse failed)") from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise FaustgenError(f"{p}: not an ONNX model (no graph)")
    _check_names(model, p)
    try:
        onnx.load_external_data_for_model(model, str(p.parent))
    except (OSError, ValueError) as e:
        raise FaustgenError(f"{p}: cannot load external weight data ({e})") from None
    return model


def _check_names(model: onnx.ModelProto, source) -> None:
    """Every name must be text: protobuf hands corrupt (non UTF-8) strings back as bytes."""
    g = model.graph
    names = [g.name]
    for n in g.node:
        names += [n.name, n.op_type, n.domain, *n.input, *n.output, *(a.name for a in n.attribute)]
    for coll in (g.initializer, g.input, g.output, g.value_info):
        names += [x.name for x in coll]
    if not all(isinstance(x, str) for x in names):
        raise FaustgenError(f"{source}: corrupt model (a name is not valid UTF-8)")


def count_initializers(model: onnx.ModelProto, budget: ConstBudget) -> None:
    """Reserve the initializers from their dims, before any of their data is decoded."""
    total = nbytes = 0
    for init in model.graph.initializer:
        n = 1
        for d in init.dims:
            n *= max(int(d), 0)
        total += n
        nbytes += n * np.dtype(ONNX_DTYPES.get(init.data_type, "float32")).itemsize
    if budget.max_params is not None and total > budget.max_params:
        raise FaustgenError(
            f"{budget.source}: the model has {total} weights, above the --max-params limit "
            f"of {budget.max_params}"
        )
    budget.reserve(total, nbytes, "its initializers")


def topological_order(g: onnx.GraphProto, source: str) -> list[int]:
    """Indices of the graph's nodes in a dependency order (ONNX requires sorted files; onnxruntime
    accepts unsorted ones, so do we). Dangling inputs, tensors produced twice and cycles
    are errors naming the node."""

    def fail(message: str) -> None:
        raise FaustgenError(f"{source}: {message}")

    nodes = list(g.node)
    available = {i.name for i in g.initializer} | {i.name for i in g.input} | {""}
    producer = {}
    for idx, n in enumerate(nodes):
        for o in n.output:
            if o:
                if o in producer or o in available:
                    fail(f"tensor '{o}' is produced twice (node '{n.name or idx}')")
                producer[o] = idx
    for idx, n in enumerate(nodes):
        for i in n.input:
            if i not in available and i not in producer:
                fail(
                    f"node '{n.name or idx}' ({n.op_type}) reads '{i}', which no node, "
                    f"initializer or input provides"
                )
    # Kahn's algorithm, keeping the file's order among ready nodes (deterministic).
    deps = [{producer[i] for i in n.input if i in producer} for n in nodes]
    users: dict[int, list[int]] = {}
    for idx, d in enumerate(deps):
        for p in d:
            users.setdefault(p, []).append(idx)
    pending = [len(d) for d in deps]
    ready = sorted(i for i, c in enumerate(pending) if c == 0)
    order = []
    heapq.heapify(ready)
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users.get(i, []):
            pending[u] -= 1
            if pending[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        stuck = next(i for i, c in enumerate(pending) if c > 0)
        n = nodes[stuck]
        fail(f"the graph has a cycle through node '{n.name or stuck}' ({n.op_type})")
    return order


def checkable(model: onnx.ModelProto, order: list[int], stub: bool = False) -> onnx.ModelProto:
    """A copy for the checker without two of its complaints that onnxruntime does not
    share: nodes out of topological order (sorted here, after the structural errors the
    checker reports poorly), and graph inputs/outputs without a shape field (given an empty
    one: some exporters and hand-written graphs omit it; the importer infers shapes).

    With `stub`, the copy's initializers hold one element each (same name, type and rank):
    the checker serializes the whole model and parses it again in C++, two more copies of
    every weight and a 2 GB protobuf limit, only to check that each initializer's data fills
    its dims, which decoding them (numpy_helper.to_array) checks as well."""
    missing = [
        vi
        for vi in (*model.graph.input, *model.graph.output)
        if vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape")
    ]
    if not stub and not missing and order == list(range(len(order))):
        return model
    copy = onnx.ModelProto()
    if stub:
        _copy_fields(model, copy, skip="graph")
        _copy_fields(model.graph, copy.graph, skip="initializer")
        for init in model.graph.initializer:
            t = copy.graph.initializer.add()
            t.name, t.data_type = init.name, init.data_type
            t.dims.extend([1] * len(init.dims))
            if init.data_type == onnx.TensorProto.STRING:
                t.string_data.append(b"")
            else:
                t.raw_data = bytes(np.dtype(ONNX_DTYPES.get(init.data_type, "float32")).itemsize)
    else:
        copy.CopyFrom(model)
    nodes = list(model.graph.node)
    del copy.graph.node[:]
    copy.graph.node.extend(nodes[i] for i in order)
    for vi in (*copy.graph.input, *copy.graph.output):
        if vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape"):
            vi.type.tensor_type.shape.SetInParent()
    return copy


def _copy_fields(src, dst, skip: str) -> None:
    """dst = src without field `skip` (protobuf messages)."""
    for fd, value in src.ListFields():
        if fd.name == skip:
            continue
        if fd.is_repeated:
            getattr(dst, fd.name).extend(value)
        elif fd.type == fd.TYPE_MESSAGE:
            getattr(dst, fd.name).CopyFrom(value)
        else:
            setattr(dst, fd.name, value)


def normalize_opset(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    opset = default_opset(model)
    if opset is None:
        raise FaustgenError(f"{source}: the model imports no default-domain (ai.onnx) opset")
    if opset < MIN_OPSET:
        try:
            model = version_converter.convert_version(model, MIN_OPSET + 1)
        except Exception:
            raise FaustgenError(
                f"{source}: opset {opset} is older than {MIN_OPSET} and could not be upgraded"
            ) from None
    return model


def default_opset(model: onnx.ModelProto) -> int | None:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return None
