"""Every registered op has a numpy reference (`compute`: constant folding, calibration, the
interpreter) and a PyTorch form (`compute_torch`: fine-tuning), so a new op cannot skip
fine-tuning. tests/ops/test_onnx_node_cases.py checks both against the ONNX cases."""

from __future__ import annotations

import pytest

from faustgen.ops import REGISTRY, Op


@pytest.mark.parametrize("op_type", sorted(REGISTRY))
def test_every_op_has_both_forms(op_type):
    cls = type(REGISTRY[op_type])
    assert cls.compute is not Op.compute, f"{op_type} has no numpy reference"
    assert cls.compute_torch is not Op.compute_torch, f"{op_type} has no PyTorch form"
