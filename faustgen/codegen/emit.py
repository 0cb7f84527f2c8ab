"""Lowering a Graph to a straight-line list of kernel calls (the Program).

Each op's `lower` talks to an Emitter: it asks for buffer references of its
inputs and outputs, registers constant arrays and parameter structs, and emits
calls. Buffers stay symbolic (Buf) until the memory planner has placed them;
the renderer then turns them into C expressions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from faustgen.codegen.literals import c_comment, c_float, sanitize_identifier
from faustgen.errors import FaustgenError
from faustgen.ir import Graph, Node, Shape


@dataclass(frozen=True)
class Buf:
    """A tensor's storage, plus an offset in floats; resolved after memory planning."""

    tensor: str
    offset: int = 0
    write: bool = False


@dataclass(frozen=True)
class Scratch:
    """Temporary floats (im2col matrix, intermediate of a factor chain, ...) placed in the
    arena; live from the first to the last call that mentions it."""

    id: int
    floats: int
    offset: int = 0

    def at(self, offset: int) -> Scratch:
        return Scratch(self.id, self.floats, self.offset + offset)


@dataclass
class Call:
    func: str
    args: list[Any]
    node: str  # index into Program.node_notes
    note: str = ""


@dataclass
class ConstArray:
    ident: str
    ctype: str  # float, int32_t, uint16_t, uint8_t
    values: np.ndarray  # flat, contiguous
    comment: str
    digest: str = ""  # sha256 of the bytes (deduplication; the weights file's fingerprint)
    fill: float | None = None  # every element is this value: filled at run time, not stored


@dataclass
class ConstStruct:
    ident: str
    ctype: str
    fields: list[tuple[str, Any]]
    comment: str


@dataclass
class Program:
    graph: Graph
    prefix: str
    calls: list[Call] = field(default_factory=list)
    arrays: list[ConstArray] = field(default_factory=list)
    structs: list[ConstStruct] = field(default_factory=list)
    aliases: dict[str, tuple[str, int]] = field(default_factory=dict)  # view -> (base, offset)
    inplace: list[tuple[int, str, str]] = field(default_factory=list)  # (call, out, in)
    scratch: dict[int, int] = field(default_factory=dict)  # scratch id -> floats
    node_notes: dict[str, str] = field(default_factory=dict)  # node name -> comment text
    # Each graph output k has its own caller buffer out<k>. An output whose root buffer
    # a call writes is computed in place there (root -> k); the others (constants, views
    # of an input, Boolean outputs, ...) are copied or converted at the end.
    direct_outputs: dict[str, int] = field(default_factory=dict)


_CTYPES = {
    "float": np.float32,
    "int32_t": np.int32,
    "uint16_t": np.uint16,
    "uint8_t": np.uint8,
    "int": np.int32,
}


class Emitter:
    """What an op's `lower` uses to produce calls, arrays and structs."""

    def __init__(self, graph: Graph, prefix: str, shared: Program | None = None):
        self.graph = graph
        self.program = Program(graph, prefix)
        self.node: Node | None = None
        self._array_by_hash: dict[tuple[str, str], str] = {}
        if shared is not None:  # a second program of the same model: one set of constants
            self.program.arrays, self.program.structs = shared.arrays, shared.structs
            self._array_by_hash = {(a.ctype, a.digest): a.ident for a in shared.arrays}
        self._const_ident: dict[str, str] = {}
        self._scratch_ids = 0

    # ------------------------------------------------------------ node context
    def lower(self, node: Node, lowering) -> None:
        self.node = node
        note = f"{node.name} ({node.op}"
        if node.attrs.get("fused"):
            note += " + " + " + ".join(node.attrs["fused"])
        self.program.node_notes[node.name] = c_comment(note + ")")
        lowering(node, self)
        self.node = None

    @property
    def prefix(self) -> str:
        return self.program.prefix

    def shape_in(self, i: int) -> Shape:
        return self.graph.tensors[self.node.inputs[i]].shape

    def shape_out(self, i: int = 0) -> Shape:
        return self.graph.tensors[self.node.outputs[i]].shape

    def const_in(self, i: int) -> np.ndarray | None:
        return self.graph.const(self.node.input(i))

    def fail(self, message: str) -> None:
        raise FaustgenError(f"{self.node.op} node '{self.node.name}': {message}")

    # ------------------------------------------------------------ buffers
    def x(self, i: int = 0, offset: int = 0) -> Buf | str:
        """Input i: a Buf for an activation, the identifier of a weight array for a constant."""
        name = self.node.inputs[i]
        value = self.graph.const(name)
        if value is not None:
            ident = self.const_tensor(name)
            return f"{ident} + {offset}" if offset else ident
        dtype = self.graph.tensors[name].dtype
        if dtype not in FLOAT_STORED:
            self.fail(
                f"input '{name}' is a {dtype} activation; integer activations are read "
                "only by Gather (as indices) and Cast"
            )
        return Buf(name, offset)

    def x_int(self, i: int) -> Buf:
        """Input i, an integer activation (a graph input of ids), read as such."""
        return Buf(self.node.inputs[i])

    def y(self, i: int = 0, offset: int = 0, write: bool = True) -> Buf:
        """Output i; write=False to read what an earlier call wrote there."""
        return Buf(self.node.outputs[i], offset, write=write)

    def const_tensor(self, name: str) -> str:
        """Identifier of the float array holding constant tensor `name`."""
        if name not in self._const_ident:
            value = self.graph.const(name)
            self._const_ident[name] = self.weight(value, name)
        return self._const_ident[name]

    def scratch(self, floats: int) -> Scratch:
        self._scratch_ids += 1
        sc = Scratch(self._scratch_ids, int(floats))
        self.program.scratch[sc.id] = int(floats)
        return sc

    def alias(self, out: int = 0, inp: int = 0, offset: int = 0) -> None:
        """Output `out` is a view of input `inp` (Reshape, Flatten, ...): no call, no copy."""
        src = self.node.inputs[inp]
        dst = self.node.outputs[out]
        if self.graph.is_const(src):
            # A view of a constant is itself a constant array (folded upstream normally).
            self.call("fg_copy", self.x(inp), self.y(out), self.graph.tensors[dst].size)
            return
        self.program.aliases[dst] = (src, offset)

    def allow_inplace(self, out: int = 0, inp: int = 0) -> None:
        """The last call may write output `out` over input `inp` if the input dies there."""
        name = self.node.inputs[inp]
        if not self.graph.is_const(name):
            self.program.inplace.append((len(self.program.calls) - 1, self.node.outputs[out], name))

    # ------------------------------------------------------------ constants
    def weight(
        self, values: np.ndarray, hint: str, ctype: str = "float", comment: str | None = None
    ) -> str:
        """Register a static const array (deduplicated by content); returns its identifier."""
        arr = np.asarray(values).astype(_CTYPES[ctype], copy=False).reshape(-1)
        one = arr.size and not any(arr.strides)  # one value broadcast: checked once, not copied
        # Infinities are legitimate (attention masks of -inf); weights holding them were
        # refused at import.
        if ctype == "float" and np.isnan(arr[:1] if one else arr).any():
            self.fail(f"constant '{hint}' holds NaN values")
        fill = _uniform(arr) if ctype == "float" else None
        if fill is not None:
            # One value throughout (ConstantOfShape, ...): filled at run time, never stored.
            arr = np.broadcast_to(arr[:1], arr.shape)
            digest = f"fill:{arr[:1].view(np.uint32)[0]:08x}:{arr.size}"
        else:
            arr = np.ascontiguousarray(arr)
            digest = hashlib.sha256(memoryview(arr).cast("B") if arr.size else b"").hexdigest()
        key = (ctype, digest)
        if key in self._array_by_hash:
            return self._array_by_hash[key]
        ident = f"{self.prefix}_w{len(self.program.arrays)}_{sanitize_identifier(hint, 32)}"
        shape = "x".join(str(d) for d in np.shape(values)) or "scalar"
        text = comment or f"{hint}: {shape}"
        self.program.arrays.append(ConstArray(ident, ctype, arr, c_comment(text), digest, fill))
        self._array_by_hash[key] = ident
        return ident

    def struct(self, ctype: str, hint: str, **fields: Any) -> str:
        """Register a static const parameter struct; returns `&ident` for the call."""
        ident = f"{self.prefix}_p{len(self.program.structs)}_{sanitize_identifier(hint, 32)}"
        self.program.structs.append(
            ConstStruct(ident, ctype, list(fields.items()), c_comment(f"{self.node.name}"))
        )
        return f"&{ident}"

    # ------------------------------------------------------------ calls
    def call(self, func: str, *args: Any, note: str = "") -> None:
        self.program.calls.append(Call(func, list(args), self.node.name, c_comment(note)))

    @staticmethod
    def f(value: float) -> str:
        return c_float(value)


FILL_MIN = 4096  # elements: smaller uniform arrays stay literals (readable, and cheap)
# Activation dtypes the C code holds as floats (Booleans as 0 / 1).
FLOAT_STORED = ("float32", "bool")
# C element type of each graph input / output dtype.
C_TYPES = {"float32": "float", "int64": "int64_t", "int32": "int32_t", "bool": "uint8_t"}


def _uniform(arr: np.ndarray) -> float | None:
    """The value of an array that holds one value (bit for bit) throughout, else None."""
    if arr.size < FILL_MIN:
        return None
    if not any(arr.strides):
        return float(arr[0])
    bits = arr.view(np.uint32)
    if bits[0] != bits[-1] or not (bits[:64] == bits[0]).all() or not (bits == bits[0]).all():
        return None
    return float(arr[0])


def lower_graph(
    graph: Graph, prefix: str, ops: Mapping[str, Any], shared: Program | None = None
) -> Program:
    """Run every node's lowering in graph order; `ops` is the op registry (op type -> an
    object whose .lower(node, emitter) emits the node's calls). With `shared` (the model's
    main program), constants are registered in, and deduplicated against, its arrays."""
    em = Emitter(graph, prefix, shared)
    _convert_bool_inputs(em)
    for node in em.graph.nodes:
        em.lower(node, ops[node.op].lower)
    _finish_output(em)
    return em.program


def _convert_bool_inputs(em: Emitter) -> None:
    """Boolean graph inputs (bytes 0 / 1) become float activations before the first node."""
    bools = [n for n in em.graph.inputs if em.graph.tensors[n].dtype == "bool"]
    if not bools:
        return
    g = em.graph = em.graph.copy()
    em.program.graph = g
    for name in bools:
        conv = g.add_activation(name + "_f", g.tensors[name].shape, "bool")
        g.replace_uses(name, conv)
        em.program.node_notes["(input)"] = "Boolean inputs: bytes 0 / 1 to floats"
        em.program.calls.append(
            Call(
                "fg_bool_to_float",
                [Buf(name), Buf(conv, write=True), g.tensors[name].size],
                "(input)",
            )
        )


def _finish_output(em: Emitter) -> None:
    g, program = em.graph, em.program
    written = {
        _root_of(program, a.tensor)
        for c in program.calls
        for a in c.args
        if isinstance(a, Buf) and a.write
    }
    copies = []
    for k, name in enumerate(g.outputs):
        root, view_offset = name, 0
        while root in program.aliases:
            root, off = program.aliases[root]
            view_offset += off
        direct = (
            root in written
            and view_offset == 0
            and root not in program.direct_outputs
            and g.tensors[root].size == g.tensors[name].size
            and g.tensors[name].dtype == "float32"
        )
        if direct:
            program.direct_outputs[root] = k
        else:
            copies.append((name, k))
    for name, k in copies:
        size = g.tensors[name].size
        src = em.const_tensor(name) if g.is_const(name) else Buf(name)
        if g.tensors[name].dtype == "bool":
            program.node_notes["(output)"] = "Boolean outputs: floats 0 / 1 to bytes"
            if g.is_const(name):
                src = em.weight(g.const(name).astype(np.float32), name)
            program.calls.append(Call("fg_float_to_bool", [src, f"out{k}", size], "(output)"))
            continue
        program.node_notes["(output)"] = "outputs that are constants or views: copied"
        program.calls.append(Call("fg_copy", [src, f"out{k}", size], "(output)"))


def _root_of(program: Program, name: str) -> str:
    while name in program.aliases:
        name = program.aliases[name][0]
    return name
