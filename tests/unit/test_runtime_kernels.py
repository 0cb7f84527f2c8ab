"""The C runtime kernels (runtime_c/*.c) against independent oracles.

A session fixture compiles every runtime_c/*.c into a shared library with the strict
warning flags and loads it through cffi (ABI mode, declarations taken from
fg_runtime.h). Oracles: numpy / scipy, and onnx.reference.ReferenceEvaluator on
one-node models for Conv, pooling and LRN (onnxruntime where the reference
evaluator's ceil-mode padding quirk would apply, and for RNN / GRU / LSTM). The C self-test
(runtime_c/tests) is also built and run, plainly and under ASan/UBSan.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import scipy.special
from hypothesis import given, settings
from hypothesis import strategies as st

from faustgen.backend.toolchain import load_target
from faustgen.layout.pack import (
    conv_scratch_floats,
    pack_conv_weight,
    pack_mblocks,
    pack_panels,
)

cffi = pytest.importorskip("cffi")

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "runtime_c"
HEADER = RUNTIME / "fg_runtime.h"
CC = shutil.which("gcc") or shutil.which("cc")
STRICT = [
    "-std=c99",
    "-Wall",
    "-Wextra",
    "-Wcast-qual",
    "-Wdouble-promotion",
    "-Wfloat-conversion",
    "-Wshadow",
    "-Werror",
]
ACT = {"none": 0, "relu": 1, "leaky": 2, "clip": 3}
FG_OPS = {"add": 0, "sub": 1, "mul": 2, "div": 3, "prelu": 4, "max": 5, "min": 6, "pow": 7}

pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler")


def _cdef_from_header(text: str) -> str:
    """fg_runtime.h without preprocessor lines, integer #defines substituted."""
    consts = dict(re.findall(r"^#define\s+(\w+)\s+(\d+)\s*$", text, flags=re.M))
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for name, value in consts.items():
        body = re.sub(rf"\b{name}\b", value, body)
    return body


@pytest.fixture(scope="session")
def rt(tmp_path_factory):
    out = tmp_path_factory.mktemp("fgrt") / "libfgrt.so"
    sources = sorted(str(p) for p in RUNTIME.glob("*.c"))
    cmd = [CC, "-O2", *STRICT, "-shared", "-fPIC", *sources, "-o", str(out), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ffi = cffi.FFI()
    ffi.cdef(_cdef_from_header(HEADER.read_text()))
    lib = ffi.dlopen(str(out))
    return ffi, lib


def f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def ptr(ffi, a: np.ndarray | None):
    if a is None:
        return ffi.NULL
    assert a.dtype == np.float32 and a.flags.c_contiguous
    return ffi.from_buffer("float[]", a)


def act_ref(y: np.ndarray, act: str, a: float, b: float) -> np.ndarray:
    if act == "relu":
        return np.maximum(y, 0)
    if act == "leaky":
        return np.where(y >= 0, y, a * y)
    if act == "clip":
        return np.clip(y, a, b)
    return y


ACT_PARAMS = {"none": (0.0, 0.0), "relu": (0.0, 0.0), "leaky": (0.1, 0.0), "clip": (-0.5, 0.7)}


def assert_close(got, want, length: int = 1, rtol: float = 1e-5):
    """Relative 1e-5 with an absolute floor growing with the dot-product length."""
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-6 * (length + 1) * 2)


# ---- dense / GEMM ---------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 9),
    k=st.integers(0, 300),
    n=st.integers(1, 70),
    act=st.sampled_from(list(ACT)),
    use_bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_dense(rt, m, k, n, act, use_bias, seed):
    ffi, lib = rt
    rng = np.random.default_rng(seed)
    x, w = f32(rng.uniform(-1, 1, (m, k))), f32(rng.uniform(-1, 1, (k, n)))
    bias = f32(rng.uniform(-1, 1, n)) if use_bias else None
    a, b = ACT_PARAMS[act]
    bp = pack_panels(w)
    y = np.full((m, n), np.nan, dtype=np.float32)
    lib.fg_dense(ptr(ffi, x), ptr(ffi, y), m, k, n, ptr(ffi, bp), ptr(ffi, bias), ACT[act], a, b)
    want = x.astype(np.float64) @ w + (0 if bias is None else bias)
    assert_close(y, act_ref(want, act, a, b), k)


@pytest.mark.parametrize("k,n", [(784, 300), (300, 100), (100, 10), (400, 120), (120, 84)])
@pytest.mark.parametrize("m", [1, 4, 7])
def test_dense_model_shapes(rt, m, k, n):
    ffi, lib = rt
    rng = np.random.default_rng(k + n)
    x, w = f32(rng.standard_normal((m, k))), f32(rng.standard_normal((k, n)))
    bias = f32(rng.standard_normal(n))
    y = np.empty((m, n), dtype=np.float32)
    lib.fg_dense(
        ptr(ffi, x),
        ptr(ffi, y),
        m,
        k,
        n,
        ptr(ffi, pack_panels(w)),
        ptr(ffi, bias),
        ACT["relu"],
        0.0,
        0.0,
    )
    want = np.maximum(x.astype(np.float64) @ w + bias, 0)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5 * np.sqrt(k))


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 13),
    k=st.integers(0, 200),
    n=st.integers(1, 100),
    act=st.sampled_from(list(ACT)),
    use_bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_gemm_a(rt, m, k, n, act, use_bias, seed):
    ffi, lib = rt
    rng = np.random.default_rng(seed)
    am, bm = f32(rng.uniform(-1, 1, (m, k))), f32(rng.uniform(-1, 1, (k, n)))
    bias = f32(rng.uniform(-1, 1, m)) if use_bias else None
    a, b = ACT_PARAMS[act]
    c = np.full((m, n), np.nan, dtype=np.float32)
    lib.fg_gemm_a(
        ptr(ffi, pack_mblocks(am)),
        ptr(ffi, bm),
        ptr(ffi, c),
        m,
        k,
        n,
        ptr(ffi, bias),
        ACT[act],
        a,
        b,
    )
    want = am.astype(np.float64) @ bm + (0 if bias is None else bias[:, None])
    assert_close(c, act_ref(want, act, a, b), k)


@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 4),
    m=st.integers(1, 9),
    k=st.integers(1, 60),
    n=st.integers(1, 40),
    bcast=st.sampled_from(["none", "a", "b"]),
    seed=st.integers(0, 2**16),
)
def test_matmul(rt, batch, m, k, n, bcast, seed):
    ffi, lib = rt
    rng = np.random.default_rng(seed)
    a = f32(rng.uniform(-1, 1, (1 if bcast == "a" else batch, m, k)))
    b = f32(rng.uniform(-1, 1, (1 if bcast == "b" else batch, k, n)))
    y = np.full((batch, m, n), np.nan, dtype=np.float32)
    sa = 0 if bcast == "a" else m * k
    sb = 0 if bcast == "b" else k * n
    lib.fg_matmul(ptr(ffi, a), ptr(ffi, b), ptr(ffi, y), batch, m, k, n, sa, sb)
    assert_close(y, np.matmul(a.astype(np.float64), b), k)


# ---- convolution ----------------------------------------------------------------

CONV_FIELDS = (
    "C",
    "D",
    "H",
    "W",
    "K",
    "OD",
    "OH",
    "OW",
    "kd",
    "kh",
    "kw",
    "sd",
    "sh",
    "sw",
    "dd",
    "dh",
    "dw",
    "pd",
    "ph",
    "pw",
    "group",
)


def _onnx_model(op, inputs, attrs, opset=19):
    from onnx import TensorProto, helper

    vis = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node(op, [name for name, _ in inputs], ["y"], **attrs)
    graph = helper.make_graph([node], op.lower(), vis, [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def onnx_ref(op, feeds: dict[str, np.ndarray], **attrs) -> np.ndarray:
    from onnx.reference import ReferenceEvaluator

    model = _onnx_model(op, [(k, list(v.shape)) for k, v in feeds.items()], attrs)
    return ReferenceEvaluator(model).run(None, feeds)[0]


def ort_ref(op, feeds: dict[str, np.ndarray], **attrs) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    model = _onnx_model(op, [(k, list(v.shape)) for k, v in feeds.items()], attrs)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def numpy_conv(x, w, bias, strides, pads_b, pads_e, dil, group):
    """Direct N-d convolution of one sample x (C x spatial), float64."""
    rank = x.ndim - 1
    k, cg = w.shape[:2]
    xp = np.pad(x.astype(np.float64), [(0, 0), *zip(pads_b, pads_e, strict=True)])
    out_sz = [
        (xp.shape[1 + i] - dil[i] * (w.shape[2 + i] - 1) - 1) // strides[i] + 1 for i in range(rank)
    ]
    y = np.zeros((k, *out_sz))
    kg = k // group
    for tap in np.ndindex(*w.shape[2:]):
        sl = tuple(
            slice(tap[i] * dil[i], tap[i] * dil[i] + (out_sz[i] - 1) * strides[i] + 1, strides[i])
            for i in range(rank)
        )
        for g in range(group):
            xs = xp[(slice(g * cg, (g + 1) * cg), *sl)]
            wt = w[(slice(g * kg, (g + 1) * kg), slice(None), *tap)].astype(np.float64)
            y[g * kg : (g + 1) * kg] += np.tensordot(wt, xs, axes=([1], [0]))
    if bias is not None:
        y += bias.reshape(k, *([1] * rank))
    return y


def conv_case(rng, rank, depthwise=False, pointwise=False):
    if depthwise:
        c = int(rng.integers(1, 6))
        group, k = c, c * int(rng.integers(1, 4))
    else:
        group = int(rng.choice([1, 1, 2, 3]))
        c, k = group * int(rng.integers(1, 4)), group * int(rng.integers(1, 7))
    spatial = [int(rng.integers(3, 13)) for _ in range(rank)]
    if pointwise:
        kern, strides, dil = [1] * rank, [1] * rank, [1] * rank
        pads_b, pads_e = [0] * rank, [0] * rank
    else:
        kern = [int(rng.integers(1, 4)) for _ in range(rank)]
        strides = [int(rng.integers(1, 3)) for _ in range(rank)]
        dil = [int(rng.integers(1, 3)) for _ in range(rank)]
        pads_b = [int(rng.integers(0, kk)) for kk in kern]
        pads_e = [int(rng.integers(0, kk)) for kk in kern]
    for i in range(rank):  # keep the dilated kernel inside the padded input
        spatial[i] = max(spatial[i], dil[i] * (kern[i] - 1) + 1)
    x = f32(rng.uniform(-1, 1, (c, *spatial)))
    w = f32(rng.uniform(-1, 1, (k, c // group, *kern)))
    bias = f32(rng.uniform(-1, 1, k)) if rng.integers(0, 2) else None
    return x, w, bias, strides, pads_b, pads_e, dil, group


def conv_shape(ffi, x, w, y, strides, pads_b, dil, group):
    rank = x.ndim - 1
    pad3 = lambda v, fill: [fill] * (3 - rank) + list(v)  # noqa: E731
    d, h, wd = pad3(x.shape[1:], 1)
    od, oh, ow = pad3(y.shape[1:], 1)
    kd, kh, kw = pad3(w.shape[2:], 1)
    sd, sh, sw = pad3(strides, 1)
    dd, dh, dw = pad3(dil, 1)
    pd, ph, pw = pad3(pads_b, 0)
    fields = dict(
        C=x.shape[0],
        D=d,
        H=h,
        W=wd,
        K=w.shape[0],
        OD=od,
        OH=oh,
        OW=ow,
        kd=kd,
        kh=kh,
        kw=kw,
        sd=sd,
        sh=sh,
        sw=sw,
        dd=dd,
        dh=dh,
        dw=dw,
        pd=pd,
        ph=ph,
        pw=pw,
        group=group,
    )
    s = ffi.new("fg_conv_shape *")
    for name, value in fields.items():
        setattr(s, name, value)
    return s, fields


def run_fg_conv(ffi, lib, x, w, bias, strides, pads_b, pads_e, dil, group, act="none"):
    want = numpy_conv(x, w, bias, strides, pads_b, pads_e, dil, group)
    y = np.full(want.shape, np.nan, dtype=np.float32)
    s, fields = conv_shape(ffi, x, w, y, strides, pads_b, dil, group)
    nscr = lib.fg_conv_scratch(s)
    assert nscr == conv_scratch_floats(**fields)
    scratch = np.full(nscr + 8, 1234.5, dtype=np.float32)
    a, b = ACT_PARAMS[act]
    lib.fg_conv(
        s,
        ptr(ffi, x),
        ptr(ffi, y),
        ptr(ffi, pack_conv_weight(w, group)),
        ptr(ffi, bias),
        ACT[act],
        a,
        b,
        ptr(ffi, scratch) if nscr else ffi.NULL,
    )
    assert (scratch[nscr:] == 1234.5).all(), "fg_conv wrote past its scratch"
    return y, act_ref(want, act, a, b)


@pytest.mark.parametrize("seed", range(24))
def test_conv_vs_numpy(rt, seed):
    ffi, lib = rt
    rng = np.random.default_rng(seed)
    case = conv_case(rng, rank=1 + seed % 3, pointwise=seed % 6 == 5)
    act = list(ACT)[seed % 4]
    y, want = run_fg_conv(ffi, lib, *case, act=act)
    w = case[1]
    assert_close(y, want, int(np.prod(w.shape[1:])))


@pytest.mark.parametrize("seed", range(12))
def test_conv_vs_onnx_reference(rt, seed):
    ffi, lib = rt
    rng = np.random.default_rng(1000 + seed)
    x, w, bias, strides, pads_b, pads_e, dil, group = conv_case(rng, rank=1 + seed % 3)
    feeds = {"x": x[None], "w": w} | ({"b": bias} if bias is not None else {})
    want = onnx_ref(
        "Conv", feeds, strides=strides, pads=pads_b + pads_e, dilations=dil, group=group
    )[0]
    y, _ = run_fg_conv(ffi, lib, x, w, bias, strides, pads_b, pads_e, dil, group)
    assert_close(y, want, int(np.prod(w.shape[1:])))


def test_conv_lenet_shapes(rt):
    ffi, lib = rt
    rng = np.random.default_rng(5)
    x1, w1, b1 = (
        f32(rng.standard_normal((1, 28, 28))),
        f32(rng.standard_normal((6, 1, 5, 5))),
        f32(rng.standard_normal(6)),
    )
    y, want = run_fg_conv(ffi, lib, x1, w1, b1, [1, 1], [2, 2], [2, 2], [1, 1], 1, act="relu")
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-4)
    x2, w2, b2 = (
        f32(rng.standard_normal((6, 14, 14))),
        f32(rng.standard_normal((16, 6, 5, 5))),
        f32(rng.standard_normal(16)),
    )
    y, want = run_fg_conv(ffi, lib, x2, w2, b2, [1, 1], [0, 0], [0, 0], [1, 1], 1, act="relu")
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-4)


# fg_conv's two paths: row-shifted direct tiles (vertical stride 1) and im2col + GEMM
# (C, spatial, K, kernel, strides, dilations, pads_begin, pads_end, group)
CONV_PATH_CASES = {
    "lenet1": (1, (28, 28), 6, (5, 5), (1, 1), (1, 1), (2, 2), (2, 2), 1),
    "lenet2": (6, (14, 14), 16, (5, 5), (1, 1), (1, 1), (0, 0), (0, 0), 1),
    "1d-long-dilated": (3, (200,), 5, (7,), (1,), (2,), (3,), (2,), 1),
    "sw2": (2, (20, 50), 7, (3, 3), (1, 2), (1, 1), (1, 1), (1, 0), 1),
    "sw3-dilated": (4, (9, 11), 3, (3, 4), (1, 3), (2, 2), (2, 3), (0, 1), 1),
    "k1-out": (5, (12, 12), 1, (3, 3), (1, 1), (1, 1), (1, 1), (1, 1), 1),
    "group3-odd": (6, (10, 13), 9, (3, 3), (1, 1), (1, 1), (0, 1), (2, 0), 3),
    "group2-asym": (4, (8, 8), 10, (2, 2), (1, 1), (1, 1), (1, 0), (0, 1), 2),
    "1x1-padded": (3, (6, 8), 5, (1, 1), (1, 1), (1, 1), (1, 2), (1, 0), 1),
    "narrow-3x5": (2, (5, 7), 3, (3, 3), (1, 1), (1, 1), (0, 0), (0, 0), 1),
    "tiny-2x2": (2, (4, 4), 3, (3, 3), (1, 1), (1, 1), (0, 0), (0, 0), 1),
    "dh-gt-oh": (2, (7, 20), 4, (3, 3), (1, 1), (3, 1), (0, 0), (0, 0), 1),
    "sh2": (3, (15, 15), 8, (3, 3), (2, 1), (1, 1), (1, 1), (1, 1), 1),
    "big-pads": (2, (7, 9), 5, (4, 4), (1, 1), (1, 1), (3, 3), (3, 3), 1),
    "3d-sd2": (2, (5, 6, 7), 3, (3, 2, 3), (2, 1, 1), (1, 1, 1), (1, 1, 1), (0, 1, 2), 1),
    "3d-dd2": (3, (4, 5, 6), 5, (2, 3, 3), (1, 1, 1), (2, 1, 1), (1, 1, 1), (1, 1, 1), 1),
}


@pytest.mark.parametrize("name", list(CONV_PATH_CASES))
def test_conv_path_shapes(rt, name):
    ffi, lib = rt
    c, spatial, k, kern, strides, dil, pads_b, pads_e, group = CONV_PATH_CASES[name]
    rng = np.random.default_rng(len(name))
    x = f32(rng.uniform(-1, 1, (c, *spatial)))
    w = f32(rng.uniform(-1, 1, (k, c // group, *kern)))
    bias = f32(rng.uniform(-1, 1, k))
    for act in ACT:
        y, want = run_fg_conv(
            ffi, lib, x, w, bias, list(strides), list(pads_b), list(pads_e), list(dil), group, act
        )
        assert_close(y, want, int(np.prod(w.shape[1:])))


@pytest.mark.parametrize("seed", range(12))
def test_conv_depthwise_vs_onnx_reference(rt, seed):
    ffi, lib = rt
    rng = np.random.default_rng(2000 + seed)
    x, w, bias, strides, pads_b, pads_e, dil, group = conv_case(rng, 1 + seed % 3, depthwise=True)
    feeds = {"x": x[None], "w": w} | ({"b": bias} if bias is not None else {})
    want = onnx_ref(
        "Conv", feeds, strides=strides, pads=pads_b + pads_e, dilations=dil, group=group
    )[0]
    y = np.full(want.shape, np.nan, dtype=np.float32)
    s, _ = conv_shape(ffi, x, w, y, strides, pads_b, dil, group)
    act = list(ACT)[seed % 4]
    a, b = ACT_PARAMS[act]
    lib.fg_conv_depthwise(s, ptr(ffi, x), ptr(ffi, y), ptr(ffi, w), ptr(ffi, bias), ACT[act], a, b)
    assert_close(y, act_ref(want, act, a, b), int(np.prod(w.shape[2:])))


@pytest.mark.parametrize("seed", range(8))
def test_im2col(rt, seed):
    ffi, lib = rt
    rng = np.random.default_rng(3000 + seed)
    x, w, _, strides, pads_b, pads_e, dil, group = conv_case(rng, rank=1 + seed % 3)
    rank = x.ndim - 1
    want_y = numpy_conv(x, w, None, strides, pads_b, pads_e, dil, group)
    s, _ = conv_shape(ffi, x, w, want_y, strides, pads_b, dil, group)
    cg = x.shape[0] // group
    xp = np.pad(x[:cg].astype(np.float64), [(0, 0), *zip(pads_b, pads_e, strict=True)])
    rows = []
    for c in range(cg):
        for tap in np.ndindex(*w.shape[2:]):
            sl = tuple(
                slice(
                    tap[i] * dil[i],
                    tap[i] * dil[i] + (want_y.shape[1 + i] - 1) * strides[i] + 1,
                    strides[i],
                )
                for i in range(rank)
            )
            rows.append(xp[(c, *sl)].ravel())
    want = np.array(rows, dtype=np.float32)
    cols = np.full(want.size + 4, 99.0, dtype=np.float32)
    lib.fg_im2col(s, ptr(ffi, x), ptr(ffi, cols))
    np.testing.assert_array_equal(cols[: want.size].reshape(want.shape), want)
    assert (cols[want.size :] == 99.0).all()


# ---- pooling -------------------------------------------------------------------


def _extra_pad(n, k, s, d, pb, pe, out):
    return (out - 1) * s + (k - 1) * d + 1 - n - pb - pe


def pool_case(rng, rank):
    spatial, kern, strides, dil, pb, pe = [], [], [], [], [], []
    for _ in range(rank):
        k = int(rng.integers(1, 4))
        d = int(rng.choice([1, 1, 2]))
        kern.append(k)
        dil.append(d)
        strides.append(int(rng.integers(1, 4)))
        pb.append(int(rng.integers(0, k)))
        pe.append(int(rng.integers(0, k)))
        spatial.append(int(rng.integers(d * (k - 1) + 1, 12)))
    return spatial, kern, strides, dil, pb, pe


def pool_shape(ffi, c, spatial, out, kern, strides, dil, pb, pe, cip):
    rank = len(spatial)
    pad3 = lambda v, fill: [fill] * (3 - rank) + list(v)  # noqa: E731
    s = ffi.new("fg_pool_shape *")
    s.C = c
    s.D, s.H, s.W = pad3(spatial, 1)
    s.OD, s.OH, s.OW = pad3(out, 1)
    s.kd, s.kh, s.kw = pad3(kern, 1)
    s.sd, s.sh, s.sw = pad3(strides, 1)
    s.dd, s.dh, s.dw = pad3(dil, 1)
    s.pd, s.ph, s.pw = pad3(pb, 0)
    s.pd_end, s.ph_end, s.pw_end = pad3(pe, 0)
    s.count_include_pad = cip
    return s


def _reference_pool_trusted(spatial, kern, strides, dil, pb, pe, out) -> bool:
    """Cases where onnx.reference's pooling is right: it shifts ceil-mode windows by
    extra_pad // 2 and mishandles asymmetric pads (wrong values or an IndexError)."""
    extra = [
        _extra_pad(spatial[i], kern[i], strides[i], dil[i], pb[i], pe[i], out[i])
        for i in range(len(spatial))
    ]
    return max(extra) < 2 and pb == pe


@pytest.mark.parametrize("seed", range(40))
def test_pools_vs_onnx(rt, seed):
    """MaxPool / AveragePool with pads, strides, dilations, ceil_mode, count_include_pad,
    against onnxruntime and, where it is reliable, onnx.reference."""
    ffi, lib = rt
    rng = np.random.default_rng(4000 + seed)
    rank = 1 + seed % 3
    spatial, kern, strides, dil, pb, pe = pool_case(rng, rank)
    if seed % 4 == 0:
        pe = list(pb)  # symmetric pads: the reference evaluator applies
    ceil_mode = int(seed % 2)
    cip = int(rng.integers(0, 2))
    c = int(rng.integers(1, 4))
    x = f32(rng.uniform(-1, 1, (1, c, *spatial)))
    for op in ("MaxPool", "AveragePool"):
        attrs = dict(
            kernel_shape=kern, strides=strides, pads=pb + pe, dilations=dil, ceil_mode=ceil_mode
        )
        if op == "AveragePool":
            attrs["count_include_pad"] = cip
        want = ort_ref(op, {"x": x}, **attrs)
        out = want.shape[2:]
        y = np.full(want.shape, np.nan, dtype=np.float32)
        s = pool_shape(ffi, c, spatial, out, kern, strides, dil, pb, pe, cip)
        fn = lib.fg_maxpool if op == "MaxPool" else lib.fg_avgpool
        fn(s, ptr(ffi, x), ptr(ffi, y))
        np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6, err_msg=f"ORT {op} {attrs}")
        if _reference_pool_trusted(spatial, kern, strides, dil, pb, pe, out):
            try:
                ref = onnx_ref(op, {"x": x}, **attrs)
            except ValueError:  # a window without input taps: np.max of an empty array
                continue
            np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6, err_msg=f"ref {op} {attrs}")


@pytest.mark.parametrize("spatial", [(28, 28), (10, 10), (7, 7), (5, 9)])
@pytest.mark.parametrize("ceil_mode", [0, 1])
def test_pool_2x2_stride2(rt, spatial, ceil_mode):
    ffi, lib = rt
    rng = np.random.default_rng(sum(spatial))
    x = f32(rng.standard_normal((1, 6, *spatial)))
    for op in ("MaxPool", "AveragePool"):
        attrs = dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=ceil_mode)
        want = onnx_ref(op, {"x": x}, **attrs)
        y = np.empty_like(want)
        s = pool_shape(ffi, 6, spatial, want.shape[2:], [2, 2], [2, 2], [1, 1], [0, 0], [0, 0], 0)
        (lib.fg_maxpool if op == "MaxPool" else lib.fg_avgpool)(s, ptr(ffi, x), ptr(ffi, y))
        np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-7)


@settings(max_examples=25, deadline=None)
@given(c=st.integers(1, 8), s=st.integers(1, 300), seed=st.integers(0, 2**16))
def test_global_pools(rt, c, s, seed):
    ffi, lib = rt
    x = f32(np.random.default_rng(seed).uniform(-1, 1, (c, s)))
    y = np.empty(c, dtype=np.float32)
    lib.fg_global_avgpool(ptr(ffi, x), ptr(ffi, y), c, s)
    np.testing.assert_allclose(y, x.astype(np.float64).mean(axis=1), rtol=1e-5, atol=1e-6)
    lib.fg_global_maxpool(ptr(ffi, x), ptr(ffi, y), c, s)
    np.testing.assert_array_equal(y, x.max(axis=1))


# ---- elementwise ---------------------------------------------------------------

UNARY = {
    "fg_relu": ((), lambda x: np.maximum(x, 0)),
    "fg_leaky_relu": ((0.07,), lambda x: np.where(x >= 0, x, 0.07 * x)),
    "fg_clip": ((-0.4, 1.3), lambda x: np.clip(x, -0.4, 1.3)),
    "fg_elu": ((0.8,), lambda x: np.where(x >= 0, x, 0.8 * np.expm1(x))),
    "fg_selu": ((1.67, 1.05), lambda x: np.where(x > 0, 1.05 * x, 1.05 * 1.67 * np.expm1(x))),
    "fg_sigmoid": ((), scipy.special.expit),
    "fg_hard_sigmoid": ((0.2, 0.5), lambda x: np.clip(0.2 * x + 0.5, 0, 1)),
    "fg_hard_swish": ((), lambda x: x * np.clip(x / 6 + 0.5, 0, 1)),
    "fg_tanh": ((), np.tanh),
    "fg_softplus": ((), lambda x: np.logaddexp(0, x)),
    "fg_exp": ((), np.exp),
    "fg_log": ((), np.log),
    "fg_sqrt": ((), np.sqrt),
    "fg_abs": ((), np.abs),
    "fg_neg": ((), np.negative),
    "fg_reciprocal": ((), np.reciprocal),
    "fg_erf": ((), scipy.special.erf),
    "fg_gelu": ((), lambda x: 0.5 * x * (1 + scipy.special.erf(x / np.sqrt(2)))),
    "fg_gelu_tanh": (
        (),
        lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
    ),
    "fg_mish": ((), lambda x: x * np.tanh(np.logaddexp(0, x))),
    "fg_softsign": ((), lambda x: x / (1 + np.abs(x))),
    "fg_thresholded_relu": ((0.7,), lambda x: np.where(x > 0.7, x, 0)),
    "fg_sign": ((), np.sign),
    "fg_floor": ((), np.floor),
    "fg_ceil": ((), np.ceil),
    "fg_round": ((), np.round),  # halves to even, as ONNX Round
    "fg_copy": ((), lambda x: x),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 100, 1000])
@pytest.mark.parametrize("inplace", [False, True])
def test_unary(rt, name, n, inplace):
    ffi, lib = rt
    params, ref = UNARY[name]
    rng = np.random.default_rng(n)
    x = f32(rng.uniform(-8, 8, n))
    if name in ("fg_log", "fg_sqrt"):
        x = f32(np.abs(x) + 1e-3)
    if name == "fg_reciprocal":
        x[np.abs(x) < 1e-2] = 0.5
    if name == "fg_round":
        x[::2] = np.floor(x[::2] * 2) / 2  # exact halves
    want = ref(x.astype(np.float64))
    y = x.copy() if inplace else np.full(n, np.nan, dtype=np.float32)
    getattr(lib, name)(ptr(ffi, y if inplace else x), ptr(ffi, y), n, *params)
    np.testing.assert_allclose(y, want, rtol=4e-6, atol=1e-6)


def test_unary_special_values(rt):
    ffi, lib = rt
    x = f32([np.nan, np.inf, -np.inf, 0.0, -0.0, 100.0, -100.0, 1e-30])
    y = np.empty_like(x)
    lib.fg_relu(ptr(ffi, x), ptr(ffi, y), x.size)
    np.testing.assert_array_equal(y[1:], np.maximum(x[1:], 0))
    assert np.isnan(y[0])
    lib.fg_sigmoid(ptr(ffi, x), ptr(ffi, y), x.size)
    np.testing.assert_allclose(
        y[1:], scipy.special.expit(x[1:].astype(np.float64)), rtol=1e-6, atol=1e-38
    )
    assert np.isnan(y[0])
    lib.fg_softplus(ptr(ffi, x), ptr(ffi, y), x.size)
    np.testing.assert_allclose(
        y[1:], np.logaddexp(0, x[1:].astype(np.float64)), rtol=1e-6, atol=1e-38
    )
    assert np.isnan(y[0])
    lib.fg_tanh(ptr(ffi, x), ptr(ffi, y), x.size)
    np.testing.assert_allclose(y[1:], np.tanh(x[1:].astype(np.float64)), rtol=1e-6)
    assert np.isnan(y[0])


def test_fill_and_channel_affine(rt):
    ffi, lib = rt
    rng = np.random.default_rng(0)
    y = np.zeros(37, dtype=np.float32)
    lib.fg_fill(ptr(ffi, y), 37, 2.5)
    assert (y == 2.5).all()
    x = f32(rng.standard_normal((2, 5, 33)))
    sc, sh = f32(rng.standard_normal(5)), f32(rng.standard_normal(5))
    want = x.astype(np.float64) * sc[None, :, None] + sh[None, :, None]
    out = np.empty_like(x)
    lib.fg_channel_affine(ptr(ffi, x), ptr(ffi, out), 2, 5, 33, ptr(ffi, sc), ptr(ffi, sh))
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
    lib.fg_channel_affine(ptr(ffi, x), ptr(ffi, x), 2, 5, 33, ptr(ffi, sc), ptr(ffi, sh))
    np.testing.assert_allclose(x, want, rtol=1e-6, atol=1e-6)


# ---- broadcasting binary ops -----------------------------------------------------

NP_BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "prelu": lambda a, b: np.where(a >= 0, a, a * b),
    "max": np.maximum,
    "min": np.minimum,
    "pow": np.power,
}


def bcast_struct(ffi, a_shape, b_shape):
    out = np.broadcast_shapes(a_shape, b_shape)
    nd = len(out)
    s = ffi.new("fg_bcast *")
    s.ndim = nd

    def strides(shape):
        shape = (1,) * (nd - len(shape)) + tuple(shape)
        st, acc = [0] * nd, 1
        for i in range(nd - 1, -1, -1):
            st[i] = 0 if shape[i] == 1 and out[i] != 1 else acc
            acc *= shape[i]
        return st

    for i in range(nd):
        s.shape[i] = out[i]
    for i, (x, y) in enumerate(zip(strides(a_shape), strides(b_shape), strict=True)):
        s.sa[i], s.sb[i] = x, y
    return s, out


shapes = st.lists(st.integers(1, 6), min_size=0, max_size=4)


@settings(max_examples=60, deadline=None)
@given(
    out=shapes,
    mask_a=st.integers(0, 15),
    mask_b=st.integers(0, 15),
    op=st.sampled_from(sorted(NP_BINARY)),
    inplace=st.sampled_from(["no", "a", "b"]),
    last=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_binary_broadcast(rt, out, mask_a, mask_b, op, inplace, last, seed):
    ffi, lib = rt
    rng = np.random.default_rng(seed)
    out = [*out, last] if out else out
    a_shape = tuple(1 if mask_a >> i & 1 else d for i, d in enumerate(out))
    b_shape = tuple(1 if mask_b >> i & 1 else d for i, d in enumerate(out))
    b_shape = b_shape[int(rng.integers(0, len(b_shape) + 1)) :]  # numpy-style rank broadcast
    a = f32(rng.uniform(-2, 2, a_shape))
    b = f32(rng.uniform(-2, 2, b_shape))
    if op == "pow":
        a = f32(np.abs(a) + 0.1)
    if op == "div":
        b = f32(np.where(b < 0, b - 0.1, b + 0.1))
    s, full = bcast_struct(ffi, a.shape, b.shape)
    want = NP_BINARY[op](a.astype(np.float64), b.astype(np.float64))
    if inplace == "a" and a.shape == full:
        lib.fg_binary(FG_OPS[op], s, ptr(ffi, a), ptr(ffi, b), ptr(ffi, a))
        y = a
    elif inplace == "b" and b.shape == full:
        lib.fg_binary(FG_OPS[op], s, ptr(ffi, a), ptr(ffi, b), ptr(ffi, b))
        y = b
    else:
        y = np.full(full, np.nan, dtype=np.float32)
        lib.fg_binary(FG_OPS[op], s, ptr(ffi, a), ptr(ffi, b), ptr(ffi, y))
    np.testing.assert_allclose(y, want, rtol=2e-6, atol=1e-7)


def test_binary_max_min_nan(rt):
    ffi, lib = rt
    a = f32([np.nan, 1.0, 2.0, np.nan])
    b = f32([1.0, np.nan, 3.0, np.nan])
    s, _ = bcast_struct(ffi, a.shape, b.shape)
    y = np.empty(4, dtype=np.float32)
    for op, ref in (("max", np.maximum), ("min", np.minimum)):
        lib.fg_binary(FG_OPS[op], s, ptr(ffi, a), ptr(ffi, b), ptr(ffi, y))
        np.testing.assert_array_equal(y, ref(a, b))


# ---- data movement -----------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=5), data=st.data())
def test_transpose(rt, shape, data):
    ffi, lib = rt
    perm = data.draw(st.permutations(range(len(shape))))
    x = f32(np.random.default_rng(len(shape)).standard_normal(shape))
    want = np.transpose(x, perm)
    p = ffi.new("fg_perm *")
    p.ndim = len(shape)
    xstrides = [s // 4 for s in x.strides]
    for i, ax in enumerate(perm):
        p.shape[i], p.stride[i] = shape[ax], xstrides[ax]
    y = np.full(want.shape, np.nan, dtype=np.float32)
    lib.fg_transpose(p, ptr(ffi, x), ptr(ffi, y))
    np.testing.assert_array_equal(y, want)


def test_transpose_large_2d(rt):
    ffi, lib = rt
    x = f32(np.arange(37 * 53).reshape(37, 53))
    p = ffi.new("fg_perm *")
    p.ndim = 2
    p.shape[0], p.shape[1], p.stride[0], p.stride[1] = 53, 37, 1, 53
    y = np.empty((53, 37), dtype=np.float32)
    lib.fg_transpose(p, ptr(ffi, x), ptr(ffi, y))
    np.testing.assert_array_equal(y, x.T)


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 7), min_size=1, max_size=4),
    pads=st.lists(st.tuples(st.integers(-3, 3), st.integers(-3, 3)), min_size=4, max_size=4),
    value=st.floats(-5, 5, width=32),
)
def test_pad(rt, shape, pads, value):
    ffi, lib = rt
    nd = len(shape)
    pads = pads[:nd]
    out_shape = [n + b + e for n, (b, e) in zip(shape, pads, strict=True)]
    if min(out_shape) <= 0:
        return
    x = f32(np.random.default_rng(nd).standard_normal(shape))
    # numpy oracle: input index i lands at i + begin where that is inside the output
    want = np.full(out_shape, value, dtype=np.float32)
    src, dst = [], []
    for n, o, (b, _) in zip(shape, out_shape, pads, strict=True):
        lo, hi = max(0, -b), min(n, o - b)
        if hi <= lo:
            break
        src.append(slice(lo, hi))
        dst.append(slice(lo + b, hi + b))
    else:
        want[tuple(dst)] = x[tuple(src)]
    p = ffi.new("fg_padspec *")
    p.ndim = nd
    for i in range(nd):
        p.in_shape[i], p.out_shape[i], p.begin[i] = shape[i], out_shape[i], pads[i][0]
    y = np.full(out_shape, np.nan, dtype=np.float32)
    lib.fg_pad(p, ptr(ffi, x), ptr(ffi, y), value)
    np.testing.assert_array_equal(y, want)


def test_copy_blocks(rt):
    ffi, lib = rt
    src = f32(np.arange(5 * 12).reshape(5, 12))
    dst = np.zeros((5, 20), dtype=np.float32)
    lib.fg_copy_blocks(ptr(ffi, src) + 3, ptr(ffi, dst) + 4, 5, 7, 12, 20)
    want = np.zeros((5, 20), dtype=np.float32)
    want[:, 4:11] = src[:, 3:10]
    np.testing.assert_array_equal(dst, want)


# ---- reductions ------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    outer=st.integers(1, 4),
    n=st.integers(1, 70),
    inner=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_softmax_and_reduce(rt, outer, n, inner, seed):
    ffi, lib = rt
    x = f32(np.random.default_rng(seed).uniform(-10, 10, (outer, n, inner)))
    xd = x.astype(np.float64)
    y = np.empty_like(x)
    lib.fg_softmax(ptr(ffi, x), ptr(ffi, y), outer, n, inner)
    np.testing.assert_allclose(y, scipy.special.softmax(xd, axis=1), rtol=1e-5, atol=1e-7)
    lib.fg_log_softmax(ptr(ffi, x), ptr(ffi, y), outer, n, inner)
    np.testing.assert_allclose(y, scipy.special.log_softmax(xd, axis=1), rtol=1e-5, atol=1e-5)
    r = np.empty((outer, inner), dtype=np.float32)
    for op, ref in enumerate((np.sum, np.mean, np.max, np.min)):
        lib.fg_reduce(op, ptr(ffi, x), ptr(ffi, r), outer, n, inner)
        np.testing.assert_allclose(r, ref(xd, axis=1), rtol=1e-5, atol=1e-5 * n)


def test_log_softmax_large_inputs(rt):
    """ONNX test_logsoftmax_large_number: x - max must be formed before subtracting log(sum)."""
    ffi, lib = rt
    x = f32([[0, 1, 2, 3], [10000, 10001, 10002, 10003]])
    y = np.empty_like(x)
    lib.fg_log_softmax(ptr(ffi, x), ptr(ffi, y), 2, 4, 1)
    want = scipy.special.log_softmax(x.astype(np.float64), axis=1)
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)
    xt = np.ascontiguousarray(x.T)  # the same along a strided axis (inner = 2)
    lib.fg_log_softmax(ptr(ffi, xt), ptr(ffi, y), 1, 4, 2)
    np.testing.assert_allclose(y.reshape(4, 2), want.T, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
def test_lrn(rt, size):
    # onnx.reference's LRN loops over the batch axis instead of the channels (only
    # channel 0 gets its square sum), so the oracles are onnxruntime and the ONNX formula.
    ffi, lib = rt
    x = f32(np.random.default_rng(size).standard_normal((2, 7, 4, 5)))
    y = np.empty_like(x)
    lib.fg_lrn(ptr(ffi, x), ptr(ffi, y), 2, 7, 20, size, 1e-2, 0.75, 1.5)
    if size % 2:  # onnxruntime only implements odd sizes
        want = ort_ref("LRN", {"x": x}, size=size, alpha=1e-2, beta=0.75, bias=1.5)
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    xd = x.astype(np.float64)
    sq = np.zeros_like(xd)
    lo, hi = (size - 1) // 2, -(-(size - 1) // 2)
    for c in range(7):
        sq[:, c] = (xd[:, max(0, c - lo) : min(7, c + hi + 1)] ** 2).sum(axis=1)
    np.testing.assert_allclose(y, xd / (1.5 + 1e-2 / size * sq) ** 0.75, rtol=1e-5, atol=1e-6)


# ---- the C self-test -------------------------------------------------------------------


def _build_selftest(tmp_path, extra: list[str], name: str) -> tuple[int, str]:
    tests = RUNTIME / "tests"
    exe = tmp_path / name
    objs = []
    for src in sorted(RUNTIME.glob("*.c")):
        obj = tmp_path / (src.stem + ".o")
        subprocess.run(
            [CC, *extra, *STRICT, "-c", str(src), "-o", str(obj)], check=True, capture_output=True
        )
        objs.append(str(obj))
    cmd = [
        CC,
        *extra,
        "-std=c99",
        "-Wall",
        "-Wextra",
        "-Werror",
        f"-I{RUNTIME}",
        str(tests / "ref_kernels.c"),
        str(tests / "test_kernels.c"),
        *objs,
        "-lm",
        "-o",
        str(exe),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc.returncode, proc.stderr + str(exe)


@pytest.mark.parametrize(
    "flags",
    [["-O2"], ["-O2", "-DFG_CONV_PGEMM=1"]],
    ids=["O2", "O2-packed-gemm"],
)
def test_c_selftest(tmp_path, flags):
    """-DFG_CONV_PGEMM=1: fg_conv through the packed-panel GEMM with its plain-C
    micro-kernel (the default only with AVX-512)."""
    rc, info = _build_selftest(tmp_path, flags, "test_kernels")
    assert rc == 0, info
    run = subprocess.run(
        [str(tmp_path / "test_kernels")], capture_output=True, text=True, timeout=120
    )
    last = run.stdout.strip().splitlines()[-1]
    assert run.returncode == 0, run.stdout[-3000:]
    assert re.fullmatch(r"\d+ passed, 0 failed", last), last


def test_c_selftest_native(tmp_path):
    """The self-test at -O3 -march=native: the wider SIMD tiles (e.g. AVX) of fg_conv
    and fg_dense are other code than the -O2 build's."""
    rc, info = _build_selftest(tmp_path, ["-O3", "-march=native"], "test_kernels_native")
    if rc != 0 and "march" in info:
        pytest.skip(f"-march=native unsupported: {info[:200]}")
    assert rc == 0, info
    run = subprocess.run(
        [str(tmp_path / "test_kernels_native")], capture_output=True, text=True, timeout=120
    )
    last = run.stdout.strip().splitlines()[-1]
    assert run.returncode == 0, run.stdout[-3000:]
    assert re.fullmatch(r"\d+ passed, 0 failed", last), last


@pytest.mark.parametrize("isa", [[], ["-march=native"]], ids=["baseline", "native"])
def test_c_selftest_sanitizers(tmp_path, isa):
    """Under ASan/UBSan; "native" checks the ISA kernels (AVX-512 masked loads and
    stores of fg_conv here) too."""
    flags = [
        "-O1",
        "-g",
        "-fno-omit-frame-pointer",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all",
        *isa,
    ]
    probe = tmp_path / "probe.c"
    probe.write_text("int main(void) { return 0; }\n")
    p = subprocess.run(
        [CC, *flags, str(probe), "-o", str(tmp_path / "probe")], capture_output=True, text=True
    )
    if p.returncode != 0:
        pytest.skip(f"sanitizer runtime unavailable: {p.stderr.strip()[:200]}")
    rc, info = _build_selftest(tmp_path, flags, "test_kernels_asan")
    assert rc == 0, info
    env = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
    run = subprocess.run(
        [str(tmp_path / "test_kernels_asan")], capture_output=True, text=True, timeout=300, env=env
    )
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-3000:])
    assert run.stdout.strip().endswith("0 failed")
    assert "runtime error" not in run.stderr


# ---- recurrent layers ----------------------------------------------------------------

RNN_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def ort_rnn(op, feeds: dict[str, np.ndarray], n_out: int, **attrs) -> list[np.ndarray]:
    """onnxruntime on one RNN / GRU / LSTM node (sequence_lens left out)."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    names = ["X", "W", "R", "B", "", "initial_h", "initial_c", "P"][: 8 if op == "LSTM" else 6]
    ins = [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape) for k, v in feeds.items()]
    outs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, None) for k in ("Y", "Y_h", "Y_c")]
    node = helper.make_node(op, names, ["Y", "Y_h", "Y_c"][:n_out], **attrs)
    graph = helper.make_graph([node], op.lower(), ins, outs[:n_out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


RNN_CASES = [
    (op, direction, lbr)
    for op in RNN_GATES
    for direction in ("forward", "reverse", "bidirectional")
    for lbr in ((0, 1) if op == "GRU" else (0,))
]


@pytest.mark.parametrize("op,direction,lbr", RNN_CASES)
def test_rnn_seq_vs_onnxruntime(rt, op, direction, lbr):
    """fg_rnn_seq (dense gate matrices) against onnxruntime, the independent oracle of the
    C self-test's naive reference (ref_rnn_seq)."""
    ffi, lib = rt
    g, d = RNN_GATES[op], 2 if direction == "bidirectional" else 1
    t, b, i, h = 5, 2, 7, 6
    rng = np.random.default_rng(len(op) * 7 + len(direction) + lbr)
    u = lambda *shape: f32(rng.uniform(-1, 1, shape))  # noqa: E731
    feeds = {"X": u(t, b, i), "W": u(d, g * h, i), "R": u(d, g * h, h), "B": u(d, 2 * g * h)}
    feeds["initial_h"] = u(d, b, h)
    if op == "LSTM":
        feeds |= {"initial_c": u(d, b, h), "P": u(d, 3 * h)}
    attrs = {"hidden_size": h, "direction": direction}
    if op == "GRU":
        attrs["linear_before_reset"] = lbr
    n_out = 3 if op == "LSTM" else 2
    want = ort_rnn(op, feeds, n_out, **attrs)

    p = ffi.new("fg_rnn *")
    p.cell = {"RNN": 0, "GRU": 1, "LSTM": 2}[op]
    p.T, p.B, p.I, p.H, p.dirs, p.gates = t, b, i, h, d, g
    p.reverse = direction == "reverse"
    p.linear_before_reset = lbr
    p.act = [1, 1, 1] if op == "RNN" else [0, 1, 1]  # RNN: tanh; GRU / LSTM: sigmoid, tanh, tanh
    wt = f32(feeds["W"].transpose(0, 2, 1))
    rt_ = f32(feeds["R"].transpose(0, 2, 1))
    y, yh, yc = (np.full(s, np.nan, dtype=np.float32) for s in ((t, d, b, h), (d, b, h), (d, b, h)))
    scratch = np.empty(lib.fg_rnn_scratch(p, ffi.NULL), dtype=np.float32)
    lib.fg_rnn_seq(
        p,
        ptr(ffi, feeds["X"]),
        ptr(ffi, wt),
        ptr(ffi, rt_),
        ptr(ffi, feeds["B"]),
        ptr(ffi, feeds.get("P")),
        ffi.NULL,
        ptr(ffi, feeds["initial_h"]),
        ptr(ffi, feeds.get("initial_c")),
        ptr(ffi, y),
        ptr(ffi, yh),
        ptr(ffi, yc),
        ffi.NULL,
        ptr(ffi, scratch),
    )
    for got, ref in zip((y, yh, yc), want, strict=False):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target", ["rpi64", "rpi"])
def test_c_selftest_arm_under_qemu(tmp_path, target):
    """The self-test built for the Pi targets (their compiler and flags) and run under
    qemu: the NEON micro-kernel of fg_convgemm.c (AArch64) and the scalar-VFP tiles."""
    t = load_target(target)
    if not t.can_run():
        pytest.skip(f"{target}: cross compiler or qemu missing")
    tests = RUNTIME / "tests"
    exe = tmp_path / f"test_kernels_{target}"
    sources = [str(tests / "ref_kernels.c"), str(tests / "test_kernels.c")]
    sources += [str(p) for p in sorted(RUNTIME.glob("*.c"))]
    cmd = [t.cc, *t.cflags, "-Wall", "-Wextra", "-Werror", f"-I{RUNTIME}", *sources, "-lm"]
    build = subprocess.run([*cmd, "-o", str(exe)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    run = subprocess.run([*t.run_prefix(), str(exe)], capture_output=True, text=True, timeout=600)
    last = run.stdout.strip().splitlines()[-1]
    assert run.returncode == 0, run.stdout[-3000:]
    assert re.fullmatch(r"\d+ passed, 0 failed", last), last
