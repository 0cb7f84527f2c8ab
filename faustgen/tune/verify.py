"""`faustgen verify`: the C's outputs judged against a float64 evaluation of the same model.

A float32 network of fifty layers cannot match another float32 implementation to a fixed
relative tolerance: each rounds differently (summation order, FMA, blocking) and the
differences grow with depth. Both approximate the exact result, so the C is judged by its
distance to a float64 evaluation of the model ("the truth") next to onnxruntime's distance:

    pass  <=>  err_C <= K * err_ORT + F ulp        (K = 4, F = 16)

with err = max |y - y64| over one output and ulp the float32 spacing at max |y64| (the
output's scale). Why this is sound, and the fallbacks, are in README.md ("How verify
decides"); the numbers below are that rule's constants.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.ops.op_max_pool import MaxPool

from faustgen.backend import CompiledModel
from faustgen.errors import FaustgenError
from faustgen.frontend import load_model
from faustgen.ir import BatchLayout
from faustgen.tune.interpret import run_batch
from faustgen.tune.reference import ort_predict, ort_session

K_PEER = 4.0  # the C may be this many times further from float64 than onnxruntime...
FLOOR_ULPS = 16.0  # ...plus this many float32 ulps of the output's scale
TRUST_RTOL = 1e-3  # onnxruntime this far from the float64 result: the float64 result is suspect
FALLBACK_RTOL = 1e-4  # C vs onnxruntime directly, when no float64 result can be trusted
SIGNAL_RTOL = 1e-6  # outputs varying less than this (relative) across samples carry no signal
SCALE_RATIO = 1e-6  # outputs this far below the weights' typical magnitude carry no signal

RULE_FLOAT64 = (
    f"max|C - float64| <= {K_PEER:g} x max|onnxruntime - float64| + {FLOOR_ULPS:g} ulp of "
    "max|float64|"
)
RULE_FALLBACK = f"max|C - onnxruntime| <= {FALLBACK_RTOL:g} x max|onnxruntime|"


class Float64Unavailable(Exception):
    """The float64 evaluation could not run; the message says why."""


@dataclass
class OutputCheck:
    name: str
    scale: float  # max |reference|
    ulp: float  # float32 spacing at `scale`
    c_error: float  # max |C - reference|
    ort_error: float | None  # max |onnxruntime - reference| (None: onnxruntime is the reference)
    bound: float
    ok: bool

    def ulps(self, err: float | None) -> float | None:
        return None if err is None else err / self.ulp if self.ulp > 0 else math.inf * (err > 0)

    def rel(self, err: float | None) -> float | None:
        return None if err is None else err / self.scale if self.scale > 0 else err

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            c_error_ulps=self.ulps(self.c_error),
            c_error_rel=self.rel(self.c_error),
            ort_error_ulps=self.ulps(self.ort_error),
            ort_error_rel=self.rel(self.ort_error),
        )
        return d


@dataclass
class Verdict:
    reference: str  # what the outputs were compared with
    rule: str  # the rule that decided
    decided_by: str  # "float64", "tolerance" or "fallback"
    samples: int
    outputs: list[OutputCheck]
    notes: list[str] = field(default_factory=list)  # why a fallback was taken
    warnings: list[str] = field(default_factory=list)  # outputs that carry no signal

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reference": self.reference,
            "rule": self.rule,
            "decided_by": self.decided_by,
            "samples": self.samples,
            "outputs": [o.as_dict() for o in self.outputs],
            "notes": self.notes,
            "warnings": self.warnings,
        }

    def lines(self) -> list[str]:
        """The human-readable report: one line per output, then the rule."""
        out = []
        for o in self.outputs:
            text = f"  {o.name}: C {_err(o, o.c_error)}"
            if o.ort_error is not None:
                text += f"; onnxruntime {_err(o, o.ort_error)}"
            out.append(f"{text}; bound {o.bound:.3g}: {'ok' if o.ok else 'FAILED'}")
        return [f"reference: {self.reference}", f"rule: {self.rule}", *out]


def _err(o: OutputCheck, err: float) -> str:
    return f"{err:.3g} abs, {o.rel(err):.3g} rel, {o.ulps(err):.3g} ulp"


# ------------------------------------------------------------------ float64 evaluation
def float64_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` computing in float64: float initializers, constants and Cast
    targets, graph inputs, outputs and value_info all become double."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    if any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for n in g.node
        for a in n.attribute
    ):
        raise Float64Unavailable("the model has sub-graphs (If/Loop/Scan)")
    for t in g.initializer:
        _tensor_to_double(t)
    for vi in (*g.input, *g.output, *g.value_info):
        if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = onnx.TensorProto.DOUBLE
    for node in g.node:
        for a in list(node.attribute):
            if a.type == onnx.AttributeProto.TENSOR:
                _tensor_to_double(a.t)
            elif a.name in ("to", "dtype") and a.i == onnx.TensorProto.FLOAT:
                a.i = onnx.TensorProto.DOUBLE
            elif node.op_type == "Constant" and a.name in ("value_float", "value_floats"):
                value = np.asarray(a.f if a.name == "value_float" else list(a.floats), np.float64)
                node.attribute.remove(a)
                node.attribute.append(
                    onnx.helper.make_attribute("value", numpy_helper.from_array(value))
                )
    return m


def _tensor_to_double(t: onnx.TensorProto) -> None:
    if t.data_type == onnx.TensorProto.FLOAT:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))


def _reference_ops() -> list:
    class StrideOneCeilMaxPool(MaxPool):
        """onnx.reference's stride-1 MaxPool ignores ceil_mode's last-window rule (googlenet's
        3x3/1 ceil-mode pools come out 2 wider); its general path is right, so use it there."""

        def _run(self, x, **kw):
            strides = kw.get("strides")
            if kw.get("ceil_mode") and (strides is None or max(strides) == 1):
                args = ("auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads")
                return self._max_pool(
                    x, *(kw.get(k) for k in args), kw.get("storage_order"), strides
                )
            return super()._run(x, **kw)

    StrideOneCeilMaxPool.__name__ = "MaxPool"
    return [StrideOneCeilMaxPool]


class Float64Session:
    """onnx.reference.ReferenceEvaluator on the float64 copy, with onnxruntime's run() API."""

    def __init__(self, model: onnx.ModelProto):
        try:
            self._ev = ReferenceEvaluator(float64_model(model), new_ops=_reference_ops())
        except (Float64Unavailable, MemoryError):
            raise
        except Exception as e:
            raise Float64Unavailable(f"onnx.reference cannot load the model ({_first(e)})") from e
        self._inputs = [i for i in self._ev.input_names]

    def get_inputs(self):
        return [_Named(n) for n in self._inputs]

    def run(self, names, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        feeds = {
            k: np.asarray(v, np.float64) if np.asarray(v).dtype.kind == "f" else v
            for k, v in feeds.items()
        }
        try:
            outs = self._ev.run(names, feeds)
        except MemoryError:
            raise
        except Exception as e:
            raise Float64Unavailable(f"onnx.reference failed ({_first(e)})") from e
        for o in outs:
            if np.asarray(o).dtype != np.float64:
                raise Float64Unavailable(f"onnx.reference returned {np.asarray(o).dtype}")
        return outs


@dataclass
class _Named:
    name: str


def _first(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


# ------------------------------------------------------------------ the rule
def judge(
    names: list[str],
    c: list[np.ndarray],
    ort: list[np.ndarray],
    truth: list[np.ndarray] | None,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    truth_name: str = "float64 evaluation",
    peer_name: str = "onnxruntime",
    why_no_truth: str = "",
    peer_rel_errors: list[float] | None = None,
) -> Verdict:
    """Judge the C outputs `c` (one array per output) against `truth` (float64) and the
    float32 peer `ort`; `rtol`/`atol` given by the user replace the relative rule.
    `peer_rel_errors` gives the peer's relative errors directly when no float32 peer can
    run the same graph (the factorized path); `ort` is then unused."""
    notes: list[str] = []
    if truth is not None and peer_rel_errors is None:
        suspect = [
            n
            for n, o, t in zip(names, ort, truth, strict=True)
            if _max_abs(o, t) > TRUST_RTOL * _scale(t)
        ]
        if suspect:
            notes.append(
                f"{peer_name} differs from the {truth_name} by more than {TRUST_RTOL:g} of the "
                f"output's scale on {', '.join(suspect)}: the {truth_name} is not trusted"
            )
            truth = None
    elif why_no_truth:
        notes.append(f"no {truth_name}: {why_no_truth}")
    user = rtol is not None or atol is not None
    rtol_, atol_ = rtol or 0.0, atol or 0.0
    checks = []
    for n, yc, yo, yt in zip(names, c, ort, truth or [None] * len(c), strict=True):
        ref = yt if yt is not None else yo
        scale = _scale(ref)
        ulp = float(np.spacing(np.float32(scale)))
        c_err = _max_abs(yc, ref)
        if yt is None:
            ort_err = None
        elif peer_rel_errors is not None:
            ort_err = peer_rel_errors[len(checks)] * scale
        else:
            ort_err = _max_abs(yo, yt)
        if user:
            bound = atol_ + rtol_ * scale
        elif ort_err is not None:
            bound = K_PEER * ort_err + FLOOR_ULPS * ulp
        else:
            bound = FALLBACK_RTOL * scale
        checks.append(OutputCheck(n, scale, ulp, c_err, ort_err, bound, c_err <= bound))
    ref_name = truth_name if truth is not None else f"{peer_name} (float32)"
    if user:
        rule = f"max|C - {ref_name}| <= {atol_:g} + {rtol_:g} x max|{ref_name}| (--rtol/--atol)"
        decided = "tolerance"
    elif truth is not None:
        rule, decided = RULE_FLOAT64.replace("onnxruntime", peer_name), "float64"
    else:
        rule, decided = RULE_FALLBACK.replace("onnxruntime", peer_name), "fallback"
    return Verdict(
        reference=ref_name if truth is None else f"{truth_name}, next to {peer_name} (float32)",
        rule=rule,
        decided_by=decided,
        samples=0,
        outputs=checks,
        notes=notes,
    )


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise FaustgenError(f"output shape {a.shape} differs from the reference {b.shape}")
    if not a.size:
        return 0.0
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float(np.nanmax(d)) if not np.isnan(d).all() else math.inf


def _scale(y: np.ndarray) -> float:
    y = np.asarray(y)
    return float(np.max(np.abs(y))) if y.size else 0.0


# ------------------------------------------------------------------ no signal
def signal_warnings(
    names: list[str], ys: list[np.ndarray], x: np.ndarray, weight_scale: float | None
) -> list[str]:
    """Why the outputs prove little: constant across the samples, or far below the weights'
    magnitude (random-weight networks often collapse to the last bias, or to ~0)."""
    warnings = []
    inputs_vary = x.ndim > 0 and x.shape[0] > 1 and bool(np.ptp(x, axis=0).max() > 0)
    for n, y in zip(names, ys, strict=True):
        y = np.asarray(y, np.float64)
        scale = _scale(y)
        if weight_scale and scale < SCALE_RATIO * weight_scale:
            warnings.append(
                f"output '{n}' is tiny (max |y| {scale:.3g}, weights ~{weight_scale:.3g}): "
                "its errors say little about the C; verify with inputs the model was made for"
            )
        elif inputs_vary and y.ndim > 0 and y.shape[0] > 1:
            spread = float(np.ptp(y, axis=0).max()) if y.size else 0.0
            if spread <= SIGNAL_RTOL * scale:
                warnings.append(
                    f"output '{n}' is the same for every sample (spread {spread:.3g}, scale "
                    f"{scale:.3g}): it carries no signal from the input, so a small error proves "
                    "little; verify with inputs the model was made for"
                )
    return warnings


def weight_scale(model: onnx.ModelProto) -> float | None:
    """The typical magnitude of the model's weights: the median RMS of its float
    initializers of more than one element (None when it has none)."""
    rms = []
    for init in model.graph.initializer:
        if init.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
            continue
        n = math.prod(init.dims)
        if n > 1:
            w = numpy_helper.to_array(init).astype(np.float64)
            rms.append(float(np.sqrt(np.mean(w * w))))
    return float(np.median(rms)) if rms else None


# ------------------------------------------------------------------ the command
def verify_bundle(
    model_path: str,
    out_dir: str,
    x: np.ndarray | list[np.ndarray] | None = None,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    samples: int = 8,
) -> Verdict:
    """Run the bundle in OUT, onnxruntime and the float64 evaluation on x (one array per
    graph input for a model with several; default: `samples` seeded random samples) and
    judge the C."""

    model = CompiledModel(out_dir)
    factorized = [
        layer["name"]
        for layer in model.report.get("layers", [])
        if str(layer.get("op", "")).startswith("Factorized")
        or (layer.get("factorization") or {}).get("factorized")  # recurrent gate matrices
    ]
    if factorized and rtol is None and atol is None:
        raise FaustgenError(
            f"{out_dir} is a factorized build ({len(factorized)} layers): its outputs differ "
            f"from {model_path} by the factorization's error, not by rounding; give the error "
            "you accept with --rtol/--atol (faustgen report shows each layer's)"
        )
    proto = load_model(model_path)
    if x is None:
        x = _random_inputs(model, proto, samples)
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    model.check_inputs(xs)
    session = ort_session(model_path)
    names = [o.name for o in session.get_outputs()]

    def run(sess) -> list[np.ndarray]:
        y = ort_predict(sess, x, model.layout)
        return y if isinstance(y, list) else [y]

    c = model.predict(*xs)
    c = c if isinstance(c, list) else [c]
    ort = run(session)
    truth, why = None, ""
    try:
        truth = run(Float64Session(proto))
    except Float64Unavailable as e:
        why = str(e)
    verdict = judge(
        names,
        c,
        ort,
        truth,
        rtol=rtol,
        atol=atol,
        truth_name="float64 (onnx.reference on a float64 copy of the model)",
        why_no_truth=why,
    )
    verdict.samples = int(xs[0].shape[0]) if xs[0].ndim else 1
    verdict.warnings = signal_warnings(names, truth or ort, xs[0], weight_scale(proto))
    return verdict


def _random_inputs(model: CompiledModel, proto: onnx.ModelProto, samples: int):
    """Seeded samples for each graph input: standard normal floats, random Booleans, and
    ids below the size of the smallest table a Gather looks them up in."""
    rng = np.random.default_rng(0)
    xs = []
    for (name, _, dtype), layout in zip(model.inputs, model.layouts, strict=True):
        shape = layout.example(samples)
        if dtype == "float32":
            xs.append(rng.standard_normal(shape).astype(np.float32))
        elif dtype == "bool":
            xs.append(rng.random(shape) < 0.5)
        else:
            xs.append(rng.integers(0, _id_bound(proto, name), shape).astype(dtype))
    return xs if len(xs) > 1 else xs[0]


def _id_bound(proto: onnx.ModelProto, name: str) -> int:
    """Rows of the smallest initializer table a Gather indexes with `name` (1 if none)."""
    dims = {i.name: list(i.dims) for i in proto.graph.initializer}
    sizes = []
    for n in proto.graph.node:
        if n.op_type == "Gather" and len(n.input) > 1 and n.input[1] == name:
            axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
            table = dims.get(n.input[0])
            if table:
                sizes.append(table[axis])
    return min(sizes) if sizes else 1


def judge_factorized(
    model_path: str, graph, x: np.ndarray, c: np.ndarray | list[np.ndarray]
) -> Verdict:
    """A factorized build's outputs `c` against the float64 evaluation of its own factorized
    graph (the factors' product, weights as stored). No float32 implementation of that graph
    exists besides the C, so onnxruntime's relative error on the dense model (vs its own
    float64 evaluation) stands for float32 rounding on this network: the factor chains
    replace each product by shorter sparse ones, with rounding of the same order."""

    layout = BatchLayout.of(graph)
    c = c if isinstance(c, list) else [c]
    truth_runs = run_batch(graph, x, float64=True)
    truth = [truth_runs[o].reshape(y.shape) for o, y in zip(graph.outputs, c, strict=True)]

    def run(sess) -> list[np.ndarray]:
        y = ort_predict(sess, x, layout)
        return y if isinstance(y, list) else [y]

    dense_ort = run(ort_session(model_path))
    dense_truth = run(Float64Session(load_model(model_path)))
    peer = [
        _max_abs(o, t) / max(_scale(t), 1e-300) for o, t in zip(dense_ort, dense_truth, strict=True)
    ]
    verdict = judge(
        list(graph.outputs),
        c,
        c,
        truth,
        truth_name="float64 evaluation of the factorized graph",
        peer_name="onnxruntime on the dense model",
        peer_rel_errors=peer,
    )
    if verdict.decided_by == "float64":
        verdict.rule = (
            f"max|C - float64| <= {K_PEER:g} x (onnxruntime's relative error on the dense "
            f"model) x max|float64| + {FLOOR_ULPS:g} ulp of max|float64|"
        )
    verdict.samples = len(x)
    return verdict
