"""Every supported op against the ONNX package's own operator test cases.

Each case (onnx.backend.test.case.node: model + inputs + expected outputs,
written by the ONNX authors) is built with faustgen, run through the C path,
and compared with the expected outputs. Extra graph inputs become constants
(faustgen models have one runtime input), as emx-onnx-cgen's harness does.

Cases faustgen rejects must be listed in UNSUPPORTED with the reason, and must
fail with a clean one-line FaustgenError, never a crash.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from faustgen.errors import FaustgenError
from faustgen.frontend.onnx_import import import_model
from faustgen.ops import supported_onnx_ops
from faustgen.passes import optimize
from faustgen.tune.interpret import run_batch, run_graph

# case name -> why faustgen does not build it
UNSUPPORTED = {
    "test_batchnorm_example_training_mode": "training mode (batch statistics)",
    "test_batchnorm_epsilon_training_mode": "training mode (batch statistics)",
    "test_maxpool_with_argmax_2d_precomputed_pads": "MaxPool Indices output",
    "test_maxpool_with_argmax_2d_precomputed_strides": "MaxPool Indices output",
    "test_identity_sequence": "sequence types",
    "test_identity_opt": "optional types",
    "test_training_dropout": "Dropout in training mode (random)",
    "test_training_dropout_default": "Dropout in training mode (random)",
    "test_training_dropout_mask": "Dropout in training mode (random)",
    "test_training_dropout_default_mask": "Dropout in training mode (random)",
    "test_reduce_max_empty_set_bool": "zero-size tensors",
    "test_reshape_allowzero_reordered": "zero-size tensors",
    "test_reduce_max_empty_set": "zero-size tensors",
    "test_reduce_min_empty_set": "zero-size tensors",
    "test_reduce_sum_empty_set": "zero-size tensors",
    "test_reduce_sum_empty_set_non_reduced_axis_zero": "zero-size tensors",
    "test_reduce_l1_empty_set_expanded": "zero-size tensors",
    "test_reduce_log_sum_empty_set_expanded": "zero-size tensors",
    "test_reduce_sum_square_empty_set_expanded": "zero-size tensors",
    "test_slice_start_out_of_bounds": "zero-size tensors",
    "test_split_zero_size_splits_opset13": "zero-size tensors",
    "test_split_zero_size_splits_opset18": "zero-size tensors",
    "test_reduce_l1_empty_set": "zero-size tensors",
    "test_reduce_l2_empty_set": "zero-size tensors",
    "test_reduce_l2_empty_set_expanded": "zero-size tensors",
    "test_reduce_log_sum_empty_set": "zero-size tensors",
    "test_reduce_log_sum_exp_empty_set": "zero-size tensors",
    "test_reduce_log_sum_exp_empty_set_expanded": "zero-size tensors",
    "test_reduce_sum_square_empty_set": "zero-size tensors",
    "test_causal_conv_with_state_kernel_size_one_expanded": "zero-size tensors",
}


# case name -> relative precision of its hand-written expected values
LOW_PRECISION_EXPECTED = {
    "test_averagepool_2d_ceil_last_window_starts_on_pad": 5e-4,  # 4 decimals
}


_DTYPES = (np.float32, np.bool_)


@functools.cache
def _cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    supported = set(supported_onnx_ops())
    out = {}
    for c in cases:
        ops = {n.op_type for n in c.model.graph.node}
        if not ops or not ops <= supported or not c.data_sets:
            continue
        inputs, outputs = c.data_sets[0]
        # the runtime input and the outputs: float32, or bool (comparisons, logic, Where)
        if not inputs or not isinstance(inputs[0], np.ndarray) or inputs[0].dtype not in _DTYPES:
            continue
        if not all(isinstance(o, np.ndarray) and o.dtype in _DTYPES for o in outputs):
            continue
        out[c.name] = c
    return out


def case_names() -> list[str]:
    return sorted(_cases())


def single_input_model(case) -> tuple[onnx.ModelProto, np.ndarray, list[np.ndarray]]:
    """The case's model with every graph input but the first turned into an initializer."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    inputs, outputs = case.data_sets[0]
    g = model.graph
    extra = list(g.input)[1:]
    for vi, value in zip(extra, inputs[1:], strict=False):
        g.initializer.append(numpy_helper.from_array(np.asarray(value), vi.name))
    if model.ir_version >= 4:  # before IR 4, initializers must also be listed as inputs
        del g.input[1:]
    # Inputs the data set leaves out are optional inputs the case omits.
    return model, inputs[0], outputs


@pytest.mark.parametrize("name", case_names())
def test_onnx_node_case(name, tmp_path, quick_build):
    case = _cases()[name]
    model, x, expected = single_input_model(case)
    path = tmp_path / "case.onnx"
    onnx.save(model, path)
    if name in UNSUPPORTED:
        with pytest.raises(FaustgenError):
            quick_build(path)
        return
    compiled = quick_build(path)
    y = compiled.predict(x)
    if len(expected) > 1:  # several outputs: compare them as one record
        y = np.concatenate([v.reshape(-1).astype(np.float32) for v in y])
        expected = [np.concatenate([v.reshape(-1).astype(np.float32) for v in expected])]
    ref = expected[0]
    assert y.shape == ref.shape
    if ref.dtype == np.bool_:  # Boolean outputs must match exactly
        np.testing.assert_array_equal(y, ref)
        return
    # The ONNX backend runner's own check, with the case's tolerances...
    np.testing.assert_allclose(y, ref, rtol=case.rtol, atol=case.atol)
    # ...and ours: float32 rounding relative to the output's scale, unless the case's
    # expected values were written with fewer digits than that.
    scale = max(float(np.max(np.abs(ref))), 1e-30) if ref.size else 1.0
    err = float(np.max(np.abs(y.astype(np.float64) - ref))) if ref.size else 0.0
    bound = LOW_PRECISION_EXPECTED.get(name, 1e-5)
    assert err <= bound * scale + 1e-7, f"max abs error {err:.3g} (scale {scale:.3g})"


def test_case_selection_is_broad():
    """The harness must actually cover the CNN/MLP operator families."""
    names = case_names()
    for family in (
        "test_conv",
        "test_maxpool",
        "test_averagepool",
        "test_gemm",
        "test_matmul",
        "test_softmax",
        "test_logsoftmax",
        "test_batchnorm",
        "test_add",
        "test_concat",
        "test_transpose",
        "test_reshape",
        "test_relu",
        "test_lrn",
        "test_globalaverage",
    ):
        assert any(n.startswith(family) for n in names), family
    assert len(names) > 150


def test_helper_builds_single_input_model():
    case = _cases()["test_gemm_all_attributes"]
    model, x, _ = single_input_model(case)
    assert len(model.graph.input) == 1
    assert {i.name for i in model.graph.initializer} >= {"b", "c"}
    assert x.dtype == np.float32
    assert helper.get_attribute_value(model.graph.node[0].attribute[0]) is not None


@pytest.mark.parametrize("name", [n for n in case_names() if n not in UNSUPPORTED])
def test_interpreter_matches_case(name):
    """The numpy interpreter (calibration errors, fine-tuning's teacher) on the same cases,
    after the same passes as a build."""
    model, x, expected = single_input_model(_cases()[name])
    graph = optimize(import_model(model, source=name))
    if graph.batch_symbolic:
        out = run_batch(graph, x)
    else:
        out = run_graph(graph, x.reshape(graph.tensors[graph.inputs[0]].shape))
    for o, ref in zip(graph.outputs, expected, strict=True):
        y = out[o].reshape(ref.shape)
        scale = max(float(np.max(np.abs(ref))), 1e-30) if ref.size else 1.0
        err = float(np.max(np.abs(y.astype(np.float64) - ref))) if ref.size else 0.0
        bound = LOW_PRECISION_EXPECTED.get(name, 1e-5)
        assert err <= bound * scale + 1e-7, f"{o}: max abs error {err:.3g} (scale {scale:.3g})"


# Cases without a PyTorch form (fine-tuning refuses them with a one-line error), and why.
NO_TORCH_FORM = {
    n: "dilated AveragePool: torch's avg_pool has no dilations"
    for n in case_names()
    if n.startswith("test_averagepool") and "dilations" in n
}


def _has_torch_forms(name: str) -> bool:
    """False for cases using an op that has no PyTorch form yet (fine-tuning refuses those
    with a one-line error): the ops added for the model zoo."""
    from faustgen.ops import REGISTRY
    from faustgen.ops.base import Op

    ops = {n.op_type for n in _cases()[name].model.graph.node}
    composite = {"ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"}
    return not ops & composite and all(
        type(REGISTRY[op]).compute_torch is not Op.compute_torch for op in ops
    )


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in case_names()
        if n not in UNSUPPORTED and n not in NO_TORCH_FORM and _has_torch_forms(n)
    ],
)
def test_torch_form_matches_case(name):
    """Each op's PyTorch form (what fine-tuning runs) on the same cases, after the passes."""
    torch = pytest.importorskip("torch")
    from faustgen.tune.finetune import TorchGraph

    model, x, expected = single_input_model(_cases()[name])
    graph = optimize(import_model(model, source=name))
    if not graph.batch_symbolic:
        x = x.reshape(graph.tensors[graph.inputs[0]].shape)
    with torch.no_grad():
        outs = TorchGraph(graph)(torch.from_numpy(np.ascontiguousarray(x)))
    for o, y, ref in zip(graph.outputs, outs, expected, strict=True):
        y = y.numpy().reshape(ref.shape)
        scale = max(float(np.max(np.abs(ref))), 1e-30) if ref.size else 1.0
        err = float(np.max(np.abs(y.astype(np.float64) - ref))) if ref.size else 0.0
        bound = LOW_PRECISION_EXPECTED.get(name, 1e-5)
        assert err <= bound * scale + 1e-7, f"{o}: max abs error {err:.3g} (scale {scale:.3g})"
