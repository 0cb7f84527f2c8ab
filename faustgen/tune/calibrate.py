"""Data-aware checks of a factorized graph against its dense original (`--calib X.npy`).

Per factorized layer: the relative error of its output when fed the dense model's own
input activations (the layer's error in isolation); for the model: the relative error of
the final outputs, where the layers' errors compound.
"""

from __future__ import annotations

import numpy as np

from faustgen.ir import Graph
from faustgen.tune.runner import Runner

FACTORIZED = ("FactorizedDense", "FactorizedConv")


def rel_error(y, ref) -> float:
    y, ref = np.asarray(y, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(y - ref) / max(np.linalg.norm(ref), 1e-30))


MAX_SAMPLES = 1000  # the report's estimate needs far fewer inputs than fine-tuning


def spread(n: int, k: int = MAX_SAMPLES) -> np.ndarray:
    """Indices of at most k of n samples, evenly spread."""
    return np.linspace(0, n - 1, k).astype(int) if n > k else np.arange(n)


def calibration_report(dense: Graph, fact: Graph, xs: np.ndarray) -> dict:
    """Errors on (at most MAX_SAMPLES of) the calibration inputs, evenly spread."""
    xs = xs[spread(len(xs))]
    layers = [n for n in fact.nodes if n.op in FACTORIZED]
    keep = {n.inputs[0] for n in layers} | {n.outputs[0] for n in layers} | set(dense.outputs)
    ref = Runner(dense, xs).run(dense.nodes, keep=keep)
    per_layer = {}
    for node in layers:
        # The factorized layer alone, fed the dense model's own input activations.
        alone = Runner(fact, xs).run([node], {node.inputs[0]: ref[node.inputs[0]]})
        per_layer[node.name] = rel_error(alone[node.outputs[0]], ref[node.outputs[0]])
    got = Runner(fact, xs).run(fact.nodes, keep=set(fact.outputs))
    out_err = [rel_error(got[o], ref[o]) for o in fact.outputs]
    return {
        "samples": len(xs),
        "layer_output_error": per_layer,
        "output_error": float(max(out_err)),
    }
