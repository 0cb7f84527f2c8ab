"""The streaming step of a recurrent model: the same ONNX graph imported for one time step.

`PREFIX_step(x_t, y_t)` runs the model on a sequence of length 1 whose recurrent layers
start from the state the previous step left (see faustgen.passes.stream). The step graph
is the model itself with the time axis of its input set to 1, so every op after the
recurrent layers (a classifier on the last step, a per-step head) is the model's own.
"""

from __future__ import annotations

import os

from faustgen.errors import FaustgenError
from faustgen.frontend.onnx_import import import_model
from faustgen.frontend.onnx_model import load_model
from faustgen.ir import Graph

RECURRENT = ("RNN", "GRU", "LSTM")


def import_step(path: str | os.PathLike, graph: Graph, max_params: int | None = None) -> Graph:
    """The per-call graph of `path` (imported as `graph`) for one time step."""
    layers = [n for n in graph.nodes if n.op in RECURRENT]
    if not layers:
        raise FaustgenError("--stream needs a model with an RNN, GRU or LSTM layer")
    for n in layers:
        if n.attrs["dirs"] != 1 or n.attrs["reverse"]:
            raise FaustgenError(
                f"--stream: layer '{n.name}' runs the sequence backwards "
                f"({'bidirectional' if n.attrs['dirs'] == 2 else 'reverse'}); only forward "
                "recurrent layers can run one step at a time"
            )
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise FaustgenError("--stream supports models with one input and one output")
    t_len = layers[0].attrs["T"]
    shape = graph.tensors[graph.inputs[0]].shape
    axes = [k for k, d in enumerate(shape) if d == t_len]
    first = None
    for axis in axes:
        model = load_model(path)
        dims = model.graph.input[_real_input(model)].type.tensor_type.shape.dim
        dims[axis].Clear()
        dims[axis].dim_value = 1
        try:
            step = import_model(model, source=str(path), max_params=max_params)
        except FaustgenError as e:
            first = first or e
            continue
        if all(n.attrs["T"] == 1 for n in step.nodes if n.op in RECURRENT):
            return step
    why = f": {str(first).split(': ', 1)[-1]}" if first else ""
    raise FaustgenError(
        f"--stream: the model does not import with its time axis (length {t_len}) set to 1{why}"
    )


def _real_input(model) -> int:
    inits = {i.name for i in model.graph.initializer}
    return next(k for k, vi in enumerate(model.graph.input) if vi.name not in inits)
