"""Op base class, registry and helpers shared by the op families."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from faustgen.errors import FaustgenError
from faustgen.ir import Graph, Node, Shape, Tensor

REGISTRY: dict[str, Op] = {}


def register_op(*op_types: str, onnx: bool = True):
    """Class decorator: register one instance of the class under each op type."""

    def wrap(cls: type[Op]) -> type[Op]:
        inst = cls()
        inst.onnx = onnx
        for t in op_types:
            if t in REGISTRY:
                raise RuntimeError(f"op {t} registered twice")
            REGISTRY[t] = inst
        return cls

    return wrap


def supported_onnx_ops() -> list[str]:
    return sorted(t for t, op in REGISTRY.items() if op.onnx)


@dataclass
class ParseContext:
    """What an op sees while the frontend parses one ONNX node."""

    op_type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    opset: int
    graph: Graph  # the graph built so far: shapes and constants of the inputs
    consumed: set[str] = field(default_factory=set)

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def input(self, i: int) -> str:
        return self.inputs[i] if i < len(self.inputs) else ""

    def shape(self, i: int) -> Shape:
        return self.graph.tensors[self.inputs[i]].shape

    def const_input(self, i: int, what: str, required: bool = True) -> np.ndarray | None:
        """Value of input i, which the op needs as a compile-time constant."""
        name = self.input(i)
        if not name:
            if required:
                self.fail(f"input {i} ({what}) is required")
            return None
        value = self.graph.const(name)
        if value is None:
            self.fail(f"input '{name}' ({what}) must be a constant known at compile time")
        return value

    def fail(self, message: str) -> None:
        raise FaustgenError(f"{self.op_type} node '{self.name}': {message}")

    def node(
        self, attrs: dict[str, Any], inputs: list[str] | None = None, op: str | None = None
    ) -> Node:
        return Node(
            op or self.op_type,
            self.name,
            list(self.inputs if inputs is None else inputs),
            list(self.outputs),
            attrs,
        )


class TorchContext:
    """What an op's `compute_torch` sees (fine-tuning runs the graph in PyTorch).

    `torch` is the torch module, handed in so that the ops never import the optional
    dependency; tensors carry a batch of calls along axis 0 (the graph's own axis 0 when
    the batch is fixed); `factors(node)` gives a factorized node's factors as trainable
    dense torch matrices, S_0 first (groups one after the other for a convolution)."""

    def __init__(self, torch: Any, graph: Graph, factors: Callable[[Node], list]):
        self.torch = torch
        self.F = torch.nn.functional
        self.graph = graph
        self.factors = factors

    def batched(self, node: Node, i: int = 0) -> tuple[int, ...]:
        """Output i's shape with axis 0 left to the batch."""
        return (-1, *self.graph.tensors[node.outputs[i]].shape[1:])

    def const(self, value: np.ndarray) -> Any:
        return self.torch.from_numpy(np.array(value, copy=True))


class Op:
    """Base op. Subclasses override what differs; defaults suit a unary elementwise op."""

    onnx: bool = True
    # Ops whose output may share the input's storage when the input dies here.
    elementwise: ClassVar[bool] = False

    def parse(self, ctx: ParseContext) -> Node:
        """Canonical attributes from ONNX attributes (opset-aware)."""
        return ctx.node({})

    def infer(self, node: Node, ins: list[Tensor]) -> list[tuple[Shape, str]]:
        return [(ins[0].shape, ins[0].dtype)]

    def compute(self, node: Node, ins: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError(f"{node.op} has no reference implementation")

    def compute_torch(self, node: Node, ins: list, t: TorchContext) -> list:
        """The same semantics on torch tensors, differentiable (fine-tuning)."""
        raise FaustgenError(f"{node.op} node '{node.name}': no PyTorch form for this op")

    def static_outputs(self, node: Node, ins: list[Tensor]) -> list[np.ndarray] | None:
        """Outputs known from shapes alone (Shape, Size), even for activation inputs."""
        return None

    def attr_weights(self, node: Node) -> int:
        """Weights the node holds in its attributes rather than as constant inputs (the
        recurrent gate matrices), less any the factorize pass replaced (the report counts
        those from the factorization)."""
        return 0

    def batch_axes_ok(self, node: Node, ins: list[Tensor]) -> bool:
        """False when the op mixes values along axis 0 (the batch axis when it is symbolic)."""
        return True

    def lower(self, node: Node, em: Any) -> None:
        """Emit the node's kernel calls through `em`, the code generator's Emitter
        (codegen.emit), which the code generator hands in: ops sit below it."""
        raise FaustgenError(f"{node.op} node '{node.name}': no C lowering for this op")


# ---------------------------------------------------------------- helpers


def fail(node: Node, message: str) -> None:
    raise FaustgenError(f"{node.op} node '{node.name}': {message}")


def norm_axis(axis: int, rank: int, node_or_ctx: Node | ParseContext) -> int:
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < rank:
        msg = f"axis {axis} is out of range for rank {rank}"
        if isinstance(node_or_ctx, ParseContext):
            node_or_ctx.fail(msg)
        fail(node_or_ctx, msg)
    return a


def broadcast_shapes(node: Node, *shapes: Sequence[int]) -> Shape:
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*[tuple(s) for s in shapes]))
    except ValueError:
        fail(node, "shapes " + " and ".join(str(tuple(s)) for s in shapes) + " do not broadcast")
        raise  # unreachable, for type checkers


def ints(values: Any) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1)]


def float_like(x: np.ndarray) -> type:
    """The float type a reference computes its result in: float64 for float64 inputs (the
    float64 evaluation that judges the C), else float32 (the C's type)."""
    return np.float64 if np.asarray(x).dtype == np.float64 else np.float32


def prod(values: Sequence[int]) -> int:
    return int(np.prod(values, dtype=np.int64))


def float_dtype_only(node: Node, ins: list[Tensor]) -> None:
    for t in ins:
        if t.dtype != "float32":
            fail(
                node,
                f"input '{t.name}' has dtype {t.dtype}; only float32 activations are supported",
            )
