"""Unary elementwise ops (activations and math functions), table-driven.

Each entry: ONNX attributes with defaults, the numpy reference, and the kernel
call. Relu, LeakyRelu and Clip are also fusable into the epilogue of Dense and
Conv (see passes/fuse.py and FUSABLE).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import erf

from faustgen.ops.base import Op, ParseContext, TorchContext, float_like, prod, register_op


@dataclass(frozen=True)
class Unary:
    attrs: dict[str, float]
    ref: Callable[..., np.ndarray]
    kernel: str
    args: tuple[str, ...] = ()  # attribute names passed to the kernel after n
    torch: Callable[..., Any] | None = None  # (torch module, x, **attrs) -> y


def _f32(fn):
    return lambda x, **a: np.asarray(fn(x.astype(float_like(x)), **a), dtype=float_like(x))


SELU_ALPHA = 1.67326319217681884765625
SELU_GAMMA = 1.05070102214813232421875

UNARY: dict[str, Unary] = {
    "Relu": Unary(
        {}, _f32(lambda x: np.maximum(x, 0)), "fg_relu", torch=lambda t, x: t.nn.functional.relu(x)
    ),
    "LeakyRelu": Unary(
        {"alpha": 0.01},
        _f32(lambda x, alpha: np.where(x >= 0, x, alpha * x)),
        "fg_leaky_relu",
        ("alpha",),
        lambda t, x, alpha: t.nn.functional.leaky_relu(x, alpha),
    ),
    "Elu": Unary(
        {"alpha": 1.0},
        _f32(lambda x, alpha: np.where(x > 0, x, alpha * (np.exp(x) - 1))),
        "fg_elu",
        ("alpha",),
        lambda t, x, alpha: t.nn.functional.elu(x, alpha),
    ),
    "Selu": Unary(
        {"alpha": SELU_ALPHA, "gamma": SELU_GAMMA},
        _f32(lambda x, alpha, gamma: gamma * np.where(x > 0, x, alpha * (np.exp(x) - 1))),
        "fg_selu",
        ("alpha", "gamma"),
        lambda t, x, alpha, gamma: (
            t.nn.functional.selu(x)
            if (alpha, gamma) == (SELU_ALPHA, SELU_GAMMA)
            else gamma * t.where(x > 0, x, alpha * t.expm1(x))
        ),
    ),
    "Sigmoid": Unary(
        {}, _f32(lambda x: 1 / (1 + np.exp(-x))), "fg_sigmoid", torch=lambda t, x: t.sigmoid(x)
    ),
    "HardSigmoid": Unary(
        {"alpha": 0.2, "beta": 0.5},
        _f32(lambda x, alpha, beta: np.clip(alpha * x + beta, 0, 1)),
        "fg_hard_sigmoid",
        ("alpha", "beta"),
        lambda t, x, alpha, beta: t.clamp(alpha * x + beta, 0, 1),
    ),
    "HardSwish": Unary(
        {},
        _f32(lambda x: x * np.clip(x / 6 + 0.5, 0, 1)),
        "fg_hard_swish",
        torch=lambda t, x: t.nn.functional.hardswish(x),
    ),
    "Tanh": Unary({}, _f32(np.tanh), "fg_tanh", torch=lambda t, x: t.tanh(x)),
    "Softplus": Unary(
        {},
        _f32(lambda x: np.log1p(np.exp(x))),
        "fg_softplus",
        torch=lambda t, x: t.nn.functional.softplus(x),
    ),
    "Exp": Unary({}, _f32(np.exp), "fg_exp", torch=lambda t, x: t.exp(x)),
    "Log": Unary({}, _f32(np.log), "fg_log", torch=lambda t, x: t.log(x)),
    "Sqrt": Unary({}, _f32(np.sqrt), "fg_sqrt", torch=lambda t, x: t.sqrt(x)),
    "Abs": Unary({}, _f32(np.abs), "fg_abs", torch=lambda t, x: t.abs(x)),
    "Neg": Unary({}, _f32(np.negative), "fg_neg", torch=lambda t, x: t.neg(x)),
    "Reciprocal": Unary(
        {}, _f32(np.reciprocal), "fg_reciprocal", torch=lambda t, x: t.reciprocal(x)
    ),
    "Erf": Unary({}, _f32(erf), "fg_erf", torch=lambda t, x: t.erf(x)),
    "Gelu": Unary(
        {},
        _f32(lambda x: 0.5 * x * (1 + erf(x / math.sqrt(2)))),
        "fg_gelu",
        torch=lambda t, x: t.nn.functional.gelu(x),
    ),
    "Mish": Unary(
        {},
        _f32(lambda x: x * np.tanh(np.logaddexp(0, x))),
        "fg_mish",
        torch=lambda t, x: t.nn.functional.mish(x),
    ),
    "Softsign": Unary(
        {},
        _f32(lambda x: x / (1 + np.abs(x))),
        "fg_softsign",
        torch=lambda t, x: t.nn.functional.softsign(x),
    ),
    "ThresholdedRelu": Unary(
        {"alpha": 1.0},
        _f32(lambda x, alpha: np.where(x > alpha, x, 0)),
        "fg_thresholded_relu",
        ("alpha",),
        lambda t, x, alpha: t.where(x > alpha, x, t.zeros_like(x)),
    ),
    "Sign": Unary({}, _f32(np.sign), "fg_sign", torch=lambda t, x: t.sign(x)),
    "Floor": Unary({}, _f32(np.floor), "fg_floor", torch=lambda t, x: t.floor(x)),
    "Ceil": Unary({}, _f32(np.ceil), "fg_ceil", torch=lambda t, x: t.ceil(x)),
    "Round": Unary({}, _f32(np.round), "fg_round", torch=lambda t, x: t.round(x)),
    # Gelu with approximate="tanh" parses into this entry (not an ONNX op type).
    "GeluTanh": Unary(
        {},
        _f32(lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))),
        "fg_gelu_tanh",
        torch=lambda t, x: t.nn.functional.gelu(x, approximate="tanh"),
    ),
}

# Activations the Dense / Conv kernels can apply in their epilogue: (FG_ACT_*, a, b).
# SiLU has no ONNX op: passes/fuse.py recognizes it as Sigmoid(y) followed by Mul(y, .).
FUSABLE = ("Relu", "LeakyRelu", "Clip")
SILU = ("FG_ACT_SILU", 0.0, 0.0)


def fused_act(node) -> tuple[str, float, float]:
    """Epilogue code of a fusable activation node (or of a node's `act` attribute)."""
    if node.op == "Relu":
        return ("FG_ACT_RELU", 0.0, 0.0)
    if node.op == "LeakyRelu":
        return ("FG_ACT_LEAKY", node.attrs["alpha"], 0.0)
    if node.op == "Clip":
        return ("FG_ACT_CLIP", node.attrs["min"], node.attrs["max"])
    raise KeyError(node.op)


def apply_act(y: np.ndarray, act: tuple[str, float, float] | None) -> np.ndarray:
    if act is None or act[0] == "FG_ACT_NONE":
        return y
    kind, a, b = act
    if kind == "FG_ACT_RELU":
        return np.maximum(y, 0).astype(y.dtype)
    if kind == "FG_ACT_LEAKY":
        return np.where(y >= 0, y, np.float32(a) * y).astype(y.dtype)
    if kind == "FG_ACT_SILU":
        return y * UNARY["Sigmoid"].ref(y)
    return np.minimum(np.maximum(y, np.float32(a)), np.float32(b)).astype(y.dtype)


def apply_act_torch(t: TorchContext, y, act: tuple[str, float, float] | None):
    """apply_act on a torch tensor."""
    if not act or act[0] == "FG_ACT_NONE":
        return y
    kind, a, b = act
    if kind == "FG_ACT_RELU":
        return t.F.relu(y)
    if kind == "FG_ACT_LEAKY":
        return t.F.leaky_relu(y, a)
    if kind == "FG_ACT_SILU":
        return y * t.torch.sigmoid(y)
    return t.torch.clamp(y, min=a, max=b)


def register_unary() -> None:
    for op_type, spec in UNARY.items():

        @register_op(op_type, onnx=op_type != "GeluTanh")
        class _U(Op):
            elementwise = True
            _spec = spec

            def parse(self, ctx: ParseContext):
                attrs = {k: float(ctx.attr(k, v)) for k, v in self._spec.attrs.items()}
                if ctx.op_type == "Gelu":
                    approx = ctx.attr("approximate", "none")
                    if approx not in ("none", "tanh"):
                        ctx.fail(f"approximate='{approx}' is not supported")
                    if approx == "tanh":
                        return ctx.node(attrs, inputs=[ctx.input(0)], op="GeluTanh")
                return ctx.node(attrs, inputs=[ctx.input(0)])

            def compute(self, node, ins):
                return [self._spec.ref(ins[0], **{k: node.attrs[k] for k in self._spec.attrs})]

            def compute_torch(self, node, ins, t):
                return [
                    self._spec.torch(
                        t.torch, ins[0], **{k: node.attrs[k] for k in self._spec.attrs}
                    )
                ]

            def lower(self, node, em):
                n = prod(em.shape_in(0))
                extra = [em.f(node.attrs[k]) for k in self._spec.args]
                em.call(self._spec.kernel, em.x(0), em.y(), n, *extra)
                em.allow_inplace()


register_unary()


@register_op("Clip")
class Clip(Op):
    elementwise = True

    def parse(self, ctx):
        if ctx.opset < 11:
            lo = ctx.attr("min", -math.inf)
            hi = ctx.attr("max", math.inf)
        else:
            lo_v = ctx.const_input(1, "min", required=False)
            hi_v = ctx.const_input(2, "max", required=False)
            lo = -math.inf if lo_v is None else float(np.asarray(lo_v).reshape(-1)[0])
            hi = math.inf if hi_v is None else float(np.asarray(hi_v).reshape(-1)[0])
        return ctx.node({"min": float(lo), "max": float(hi)}, inputs=[ctx.input(0)])

    def compute(self, node, ins):
        x = ins[0]
        lo, hi = node.attrs["min"], node.attrs["max"]
        if np.issubdtype(x.dtype, np.integer):
            return [np.minimum(np.maximum(x, lo), hi).astype(x.dtype)]
        return [np.minimum(np.maximum(x, np.float32(lo)), np.float32(hi)).astype(x.dtype)]

    def compute_torch(self, node, ins, t):
        return [t.torch.clamp(ins[0], min=node.attrs["min"], max=node.attrs["max"])]

    def lower(self, node, em):
        em.call(
            "fg_clip",
            em.x(0),
            em.y(),
            prod(em.shape_in(0)),
            em.f(node.attrs["min"]),
            em.f(node.attrs["max"]),
        )
        em.allow_inplace()
