"""faustgen's intermediate representation: a typed graph that knows neither ONNX nor C.

A Graph holds Tensors (every value has a static shape and a dtype; constants
carry their value) and Nodes in one topological order. Node attributes are the
op's canonical form (see faustgen.ops): the frontend has already resolved
opset differences, so passes and codegen never look at opset versions.

Shapes are those of one call of the model: when the model's first input axis
is a symbolic batch axis, the graph is built with batch 1 and the generated
code loops over samples (Graph.batch_symbolic).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Shape = tuple[int, ...]


@dataclass(eq=False)
class Tensor:
    name: str
    shape: Shape
    dtype: str = "float32"
    value: np.ndarray | None = None

    @property
    def is_const(self) -> bool:
        return self.value is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def rank(self) -> int:
        return len(self.shape)


@dataclass(eq=False)
class Node:
    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)

    def input(self, i: int) -> str:
        """Name of input i, or '' when the optional input is absent."""
        return self.inputs[i] if i < len(self.inputs) else ""


@dataclass(frozen=True)
class BatchLayout:
    """The batch rule, stated once. An input of the model's own shape (`per_call`) runs as
    one call; when the batch axis is symbolic or fixed at 1, an input (B, *rest) runs as B
    calls of one sample each, and each output gets the leading B."""

    per_call: tuple[int, ...]
    symbolic: bool  # axis 0 is a symbolic batch axis (the graph was built with batch 1)

    @classmethod
    def of(cls, graph: Graph) -> BatchLayout:
        return cls(tuple(graph.tensors[graph.inputs[0]].shape), graph.batch_symbolic)

    @property
    def batched(self) -> bool:
        """Whether inputs (B, *rest) are accepted."""
        return self.symbolic or self.per_call[0] == 1

    def calls(self, shape: Iterable[int]) -> int | None:
        """How many calls run an input of `shape`; None when the model does not take it."""
        shape = tuple(shape)
        if shape == self.per_call:
            return 1
        rest = self.per_call[1:]
        if self.batched and len(shape) == len(self.per_call) and shape[1:] == rest and shape[0]:
            return int(shape[0])
        return None

    def output_shape(self, calls: int, shape: tuple[int, ...], exact: bool) -> tuple[int, ...]:
        """The shape of an output (one call's `shape`) for `calls` calls; `exact`: the input
        had the model's own shape, so the output keeps its own too."""
        if exact:
            return tuple(shape)
        return (calls, *(shape[1:] if shape and shape[0] == 1 else shape))

    def expected(self) -> str:
        """The accepted input shapes, for error messages."""
        if self.batched:
            return f"(B, {', '.join(map(str, self.per_call[1:]))})"
        return str(self.per_call)

    def example(self, batch: int) -> tuple[int, ...]:
        """The input shape of `batch` samples (the model's own shape if it takes no batch)."""
        return (batch, *self.per_call[1:]) if self.batched else self.per_call


@dataclass
class Graph:
    name: str
    nodes: list[Node]
    tensors: dict[str, Tensor]
    inputs: list[str]
    outputs: list[str]
    batch_symbolic: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def copy(self) -> Graph:
        """A copy whose node list, node objects and tensor table can be edited freely."""
        return dataclasses.replace(
            self,
            nodes=[
                dataclasses.replace(
                    n, inputs=list(n.inputs), outputs=list(n.outputs), attrs=dict(n.attrs)
                )
                for n in self.nodes
            ],
            tensors=dict(self.tensors),
            inputs=list(self.inputs),
            outputs=list(self.outputs),
            meta=dict(self.meta),
        )

    def tensor(self, name: str) -> Tensor:
        return self.tensors[name]

    def const(self, name: str) -> np.ndarray | None:
        """Value of a constant tensor, None for an activation or an absent input."""
        if not name:
            return None
        t = self.tensors.get(name)
        return None if t is None else t.value

    def is_const(self, name: str) -> bool:
        return self.const(name) is not None

    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs if o}

    def consumers(self) -> dict[str, list[Node]]:
        users: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    users.setdefault(i, []).append(n)
        return users

    def activations(self) -> Iterator[Tensor]:
        """Non-constant tensors, graph inputs first, then in production order."""
        seen: set[str] = set()
        for name in [*self.inputs, *(o for n in self.nodes for o in n.outputs)]:
            if name and name not in seen and not self.is_const(name):
                seen.add(name)
                yield self.tensors[name]

    def parameter_count(self) -> int:
        """Float parameters held by constants that some node reads."""
        used = {i for n in self.nodes for i in n.inputs if i}
        return sum(t.size for t in self.tensors.values() if t.is_const and t.name in used)

    def replace_uses(self, old: str, new: str) -> None:
        """Make every reader of `old` (nodes and graph outputs) read `new` instead."""
        for n in self.nodes:
            n.inputs = [new if i == old else i for i in n.inputs]
        self.outputs = [new if o == old else o for o in self.outputs]

    def add_const(self, base: str, value: np.ndarray) -> str:
        """Add a constant tensor under a fresh name derived from `base`; returns the name."""
        name = unique_name(self.tensors, base)
        value = np.asarray(value)  # views stay views: big weights are copied once, when packed
        self.tensors[name] = Tensor(name, tuple(value.shape), str(value.dtype), value)
        return name

    def add_activation(self, base: str, shape: Shape, dtype: str = "float32") -> str:
        name = unique_name(self.tensors, base)
        self.tensors[name] = Tensor(name, tuple(shape), dtype)
        return name

    def prune_tensors(self) -> None:
        """Drop tensors no node or graph boundary refers to."""
        live = set(self.inputs) | set(self.outputs)
        for n in self.nodes:
            live.update(x for x in (*n.inputs, *n.outputs) if x)
        self.tensors = {k: v for k, v in self.tensors.items() if k in live}


def unique_name(existing: Iterable[str], base: str) -> str:
    """`base`, or `base_2`, `base_3`, ... whichever is not taken."""
    taken = set(existing)
    if base not in taken:
        return base
    k = 2
    while f"{base}_{k}" in taken:
        k += 1
    return f"{base}_{k}"
