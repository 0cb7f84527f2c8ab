"""Every registered op has a numpy reference (`compute`: constant folding, calibration, the
interpreter) and a PyTorch form (`compute_torch`: fine-tuning), so a new op cannot skip
fine-tuning. tests/ops/test_onnx_node_cases.py checks both against the ONNX cases."""

from __future__ import annotations

import pytest

from faustgen.ops import REGISTRY, Op

# The zoo ops landed without a PyTorch form (fine-tuning a model that uses one stops with
# "no PyTorch form for this op"). Listed here so the gap is visible; strict, so adding a
# form fails this list until the op is removed from it, and any new op must have both.
NO_TORCH_FORM_YET = {
    "And",
    "Einsum",
    "Equal",
    "GRU",
    "Greater",
    "GreaterOrEqual",
    "LSTM",
    "LayerNormalization",
    "Less",
    "LessOrEqual",
    "Not",
    "Or",
    "RNN",
    "Tile",
    "Where",
    "Xor",
}


def _case(op_type):
    if op_type in NO_TORCH_FORM_YET:
        return pytest.param(
            op_type, marks=pytest.mark.xfail(strict=True, reason="no PyTorch form yet")
        )
    return op_type


@pytest.mark.parametrize("op_type", [_case(o) for o in sorted(REGISTRY)])
def test_every_op_has_both_forms(op_type):
    cls = type(REGISTRY[op_type])
    assert cls.compute is not Op.compute, f"{op_type} has no numpy reference"
    assert cls.compute_torch is not Op.compute_torch, f"{op_type} has no PyTorch form"
