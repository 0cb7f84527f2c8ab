"""The optimization pipeline: plain functions Graph -> Graph, in the order they run.

Reading PIPELINE is reading the compiler: everything between import and code generation
happens here. A factorizing build then runs `factorize_weights(graph, policy)` on the
optimized graph, which stays the dense reference for calibration and fine-tuning.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from faustgen.ir import Graph
from faustgen.passes.canonicalize import canonicalize_linear, remove_identities
from faustgen.passes.cleanup import eliminate_dead_nodes, fold_constants
from faustgen.passes.factorize import FactorizePolicy, factorize_weights
from faustgen.passes.fuse import fold_batchnorm, fuse_activation, fuse_bias

Pass = Callable[[Graph], Graph]

PIPELINE: list[Pass] = [
    fold_constants,  # anything left whose inputs are all constant
    remove_identities,  # Identity, Dropout, float->float Cast
    canonicalize_linear,  # Gemm / MatMul with a constant weight -> Dense (+ Transpose / Add)
    fold_batchnorm,  # BatchNormalization after Conv / Dense -> scaled weights and bias
    fuse_bias,  # Dense / Conv + Add(constant per-channel) -> bias
    fuse_activation,  # Dense / Conv + Relu / LeakyRelu / Clip / SiLU -> fused epilogue
    eliminate_dead_nodes,
]


def optimize(graph: Graph, passes: Sequence[Pass] = PIPELINE) -> Graph:
    for p in passes:
        graph = p(graph)
    return graph


__all__ = ["PIPELINE", "FactorizePolicy", "factorize_weights", "optimize"]
