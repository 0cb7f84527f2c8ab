"""`faustgen verify` passes correct builds of torchvision networks and fails deliberately broken
ones: one filter tap with its sign flipped, one square weight transposed (the bundles are
built from a model edited that way, then verified against the original)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper as nh

torch = pytest.importorskip("torch")

from faustgen import zoo  # noqa: E402
from faustgen.cli import main  # noqa: E402

SIZE = 64  # the numbers were at 224x224; 64x64 keeps the builds fast


def _export(name, tmp_path, **kw):
    torch.manual_seed(0)
    model = getattr(zoo.torchvision_models(), name)(num_classes=10, **kw).eval()
    zoo.calibrate_batchnorm(model, (8, 3, SIZE, SIZE))
    x = np.zeros((1, 3, SIZE, SIZE), np.float32)
    return zoo.export(model, x, tmp_path / f"{name}.onnx")


def _verify(capsys, model, out, *extra):
    code = main(["verify", str(model), str(out), "--json", *extra])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def _edited(path, tmp_path, edit, pick):
    """A copy of the model with one Conv weight changed by edit(w); pick(weights) chooses it."""
    model = onnx.load(path)
    inits = {i.name: i for i in model.graph.initializer}
    convs = [n.input[1] for n in model.graph.node if n.op_type == "Conv"]
    name = pick([c for c in convs if c in inits], {c: nh.to_array(inits[c]) for c in convs})
    inits[name].CopyFrom(nh.from_array(edit(nh.to_array(inits[name]).copy()), name))
    out = tmp_path / f"edited_{name.replace('/', '_')}.onnx"
    onnx.save(model, out)
    return out


def _flip_one_tap(w):
    w[0, 0, 1, 1] = -w[0, 0, 1, 1]
    return w


def _middle(pred):
    def pick(names, arrays):
        chosen = [n for n in names if pred(arrays[n].shape)]
        return chosen[len(chosen) // 2]

    return pick


@pytest.fixture(scope="module")
def shufflenet(tmp_path_factory):
    return _export("shufflenet_v2_x0_5", tmp_path_factory.mktemp("shufflenet"))


def test_correct_build_passes_broken_builds_fail(shufflenet, quick_build, tmp_path, capsys):
    code, v, err = _verify(capsys, shufflenet, quick_build(shufflenet).out_dir)
    assert code == 0, err
    assert v["ok"] and v["decided_by"] == "float64" and not v["warnings"]
    (o,) = v["outputs"]
    assert o["ort_error"] is not None and o["c_error"] <= o["bound"]

    three_by_three = _middle(lambda s: s[2:] == (3, 3))
    square_1x1 = _middle(lambda s: s[2:] == (1, 1) and s[0] == s[1])
    broken = {
        "flipped tap": _edited(shufflenet, tmp_path, _flip_one_tap, three_by_three),
        "transposed": _edited(
            shufflenet, tmp_path, lambda w: w.transpose(1, 0, 2, 3).copy(), square_1x1
        ),
    }
    for what, path in broken.items():
        code, v, err = _verify(capsys, shufflenet, quick_build(path).out_dir)
        assert code == 1, what
        assert not v["ok"] and v["decided_by"] == "float64", what
        (o,) = v["outputs"]
        # a real bug is orders of magnitude beyond float32 rounding
        assert o["c_error"] > 100 * o["bound"], (what, o)
        assert "verification failed" in err


def test_depthwise_network_passes_and_user_tolerance_decides(quick_build, tmp_path, capsys):
    path = _export("mobilenet_v2", tmp_path, width_mult=0.35)
    out = quick_build(path).out_dir
    code, v, err = _verify(capsys, path, out)
    assert code == 0 and v["decided_by"] == "float64", err
    code, v, _ = _verify(capsys, path, out, "--rtol", "1e-12")
    assert code == 1 and v["decided_by"] == "tolerance"
    assert "--rtol/--atol" in v["rule"]


def test_text_report_names_reference_rule_and_errors(shufflenet, quick_build, capsys):
    out = quick_build(shufflenet).out_dir
    assert main(["verify", str(shufflenet), str(out), "--samples", "3"]) == 0
    text = capsys.readouterr().out
    assert "on 3 sample(s): OK" in text
    assert "reference: float64 (onnx.reference" in text
    assert "rule: max|C - float64| <= 4 x max|onnxruntime - float64|" in text
    assert "ulp; onnxruntime" in text


def test_output_without_signal_is_a_warning_not_a_silent_pass(quick_build, tmp_path, capsys):
    """An output equal for every sample (here: the input times zero, plus a bias, as a
    collapsed random-weight network gives) passes with a warning that it proves little."""
    from onnx import TensorProto
    from onnx import helper as h

    g = h.make_graph(
        [h.make_node("Mul", ["x", "zero"], ["m"]), h.make_node("Add", ["m", "b"], ["y"])],
        "g",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [
            nh.from_array(np.zeros(4, np.float32), "zero"),
            nh.from_array(np.array([0.1, -0.2, 0.3, 0.4], np.float32), "b"),
        ],
    )
    path = tmp_path / "flat.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    out = quick_build(path).out_dir
    assert main(["verify", str(path), str(out)]) == 0
    captured = capsys.readouterr()
    assert "carry no signal" in captured.out
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("faustgen: warning: output 'y' is the same for every sample")


def test_factorized_build_needs_an_explicit_tolerance(quick_build, tmp_path, capsys):
    from onnx import TensorProto
    from onnx import helper as h

    w = np.random.default_rng(0).standard_normal((128, 128)).astype(np.float32)
    g = h.make_graph(
        [h.make_node("MatMul", ["x", "W"], ["y"], name="fc")],
        "g",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 128])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 128])],
        [nh.from_array(w, "W")],
    )
    path = tmp_path / "fc.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    out = quick_build(path, dense=False, rcg=4).out_dir
    assert main(["verify", str(path), str(out)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "is a factorized build (1 layers)" in line and "--rtol/--atol" in line
    code, v, _ = _verify(capsys, path, out, "--rtol", "2")
    assert code == 0 and v["decided_by"] == "tolerance"
    code, v, _ = _verify(capsys, path, out, "--rtol", "1e-3")
    assert code == 1


def test_silu_network_fuses_and_passes(quick_build, tmp_path, capsys):
    """SiLU (exported as Sigmoid + Mul) after a convolution, a depthwise convolution and a
    Linear layer runs in their epilogues; a squeeze-excitation gate (Sigmoid of another
    tensor) stays a separate op."""
    nn = torch.nn
    zoo.torchvision_models()  # makes torchvision importable here
    from torchvision.ops import SqueezeExcitation

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.SiLU(),
        nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.BatchNorm2d(16), nn.SiLU(),
        SqueezeExcitation(16, 4, activation=nn.SiLU),
        nn.Conv2d(16, 24, 1), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(24, 32), nn.SiLU(), nn.Linear(32, 10),
    ).eval()  # fmt: skip
    zoo.calibrate_batchnorm(model, (8, 3, SIZE, SIZE))
    path = zoo.export(model, np.zeros((1, 3, SIZE, SIZE), np.float32), tmp_path / "silu.onnx")
    out = quick_build(path).out_dir
    c = (out / "model.c").read_text()
    assert c.count("FG_ACT_SILU") == 5 and c.count("fg_sigmoid(") == 1
    code, v, err = _verify(capsys, path, out)
    assert code == 0 and v["decided_by"] == "float64", err
