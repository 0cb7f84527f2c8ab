"""Write a single fully connected layer (trained-like spectrum) as an ONNX model.

python benchmarks/make_fc_layer.py fc1024.onnx --size 1024
"""

from __future__ import annotations

import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def trained_like(d_out: int, d_in: int, seed: int = 0) -> np.ndarray:
    """U diag(s) V^T + noise, s_i = 1/(1+i/20): the spectrum of a trained layer."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((d_out, d_out)))
    v, _ = np.linalg.qr(rng.standard_normal((d_in, d_in)))
    r = min(d_out, d_in)
    s = 1.0 / (1.0 + np.arange(r) / 20.0)
    w = (u[:, :r] * s) @ v[:, :r].T + 0.01 * rng.standard_normal((d_out, d_in))
    return (w / np.abs(w).max() * 0.1).astype(np.float32)


def fc_model(d_out: int, d_in: int, seed: int = 0) -> onnx.ModelProto:
    w = trained_like(d_out, d_in, seed)
    b = np.random.default_rng(seed + 1).standard_normal(d_out).astype(np.float32) * 0.01
    node = helper.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1, name="fc")
    graph = helper.make_graph(
        [node],
        "fc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", d_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", d_out])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--inputs", type=int, help="input features (default: --size)")
    a = ap.parse_args()
    onnx.save(fc_model(a.size, a.inputs or a.size), a.out)
    print(f"wrote {a.out}")
