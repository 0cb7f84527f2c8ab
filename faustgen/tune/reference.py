"""onnxruntime as the reference: run a model file with the same batch semantics as the C."""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from faustgen.errors import FaustgenError
from faustgen.ir import BatchLayout


def ort_session(model_path: str | os.PathLike, threads: int = 1):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FaustgenError(f"{model_path}: onnxruntime cannot load the model: {first}") from None


def ort_predict(session, x, layout: BatchLayout) -> np.ndarray | list[np.ndarray]:
    """Outputs for x (an array, or a list with one array per graph input; a list of outputs
    when the model has several), with faustgen's batch semantics: onnxruntime is called once
    per sample when the model's batch is fixed at 1 (the layout is that of input 0)."""
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    names = [i.name for i in session.get_inputs()][: len(xs)]
    if layout.symbolic or tuple(xs[0].shape) == layout.per_call:
        outs = session.run(None, dict(zip(names, xs, strict=True)))
    else:
        calls = [
            session.run(None, {n: v[i : i + 1] for n, v in zip(names, xs, strict=True)})
            for i in range(xs[0].shape[0])
        ]
        outs = [
            np.stack([c[k][0] if c[k].shape and c[k].shape[0] == 1 else c[k] for c in calls])
            for k in range(len(calls[0]))
        ]
    return outs[0] if len(outs) == 1 else outs


def compare(y, ref) -> dict[str, float]:
    """Error of y against ref: max absolute, and max absolute relative to the largest |ref|.
    Lists of outputs are compared as one (each shape must match)."""
    if isinstance(y, list) or isinstance(ref, list):
        ys, refs = list(y), list(ref)
        if len(ys) != len(refs):
            raise FaustgenError(f"{len(ys)} outputs, the reference has {len(refs)}")
        for a, b in zip(ys, refs, strict=True):
            if a.shape != b.shape:
                raise FaustgenError(f"output shape {a.shape} differs from the reference {b.shape}")
        y = np.concatenate([a.reshape(-1) for a in ys])
        ref = np.concatenate([b.reshape(-1) for b in refs])
    if y.shape != ref.shape:
        raise FaustgenError(f"output shape {y.shape} differs from the reference {ref.shape}")
    diff = np.abs(y.astype(np.float64) - ref.astype(np.float64))
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    return {
        "max_abs": max_abs,
        "max_rel": max_abs / scale if scale > 0 else max_abs,
        "ref_scale": scale,
    }
