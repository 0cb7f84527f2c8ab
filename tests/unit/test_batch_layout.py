"""The batch rule (ir.BatchLayout), which CompiledModel, the calibration inputs, verify, bench
and the onnxruntime reference all use."""

from __future__ import annotations

from faustgen.ir import BatchLayout


def test_own_shape_is_one_call_and_keeps_output_shapes():
    layout = BatchLayout((1, 3, 8, 8), symbolic=False)
    assert layout.calls((1, 3, 8, 8)) == 1
    assert layout.output_shape(1, (1, 10), exact=True) == (1, 10)


def test_batch_fixed_at_one_takes_b_samples():
    layout = BatchLayout((1, 3, 8, 8), symbolic=False)
    assert layout.batched
    assert layout.calls((5, 3, 8, 8)) == 5
    assert layout.output_shape(5, (1, 10), exact=False) == (5, 10)
    assert layout.output_shape(5, (10,), exact=False) == (5, 10)  # no batch axis: one added
    assert layout.example(7) == (7, 3, 8, 8)
    assert layout.expected() == "(B, 3, 8, 8)"


def test_fixed_batch_above_one_takes_only_its_own_shape():
    layout = BatchLayout((2, 4), symbolic=False)
    assert not layout.batched
    assert layout.calls((2, 4)) == 1
    assert layout.calls((3, 4)) is None
    assert layout.example(7) == (2, 4)
    assert layout.expected() == "(2, 4)"


def test_rejects_other_ranks_and_sizes():
    layout = BatchLayout((1, 4), symbolic=True)
    assert layout.calls((3, 5)) is None
    assert layout.calls((3, 4, 1)) is None
    assert layout.calls((0, 4)) is None
