"""Benchmark of the hot runtime kernels against naive scalar C, per compiler flag set.

For each flag set (default: -O2, -O3, -O3 -march=native; never -ffast-math) a small C
harness is compiled together with runtime_c/*.c and the naive references of
runtime_c/tests/ref_kernels.c, so both sides get exactly the same flags. Timing happens
in C (clock_gettime around batches of calls; the median batch is reported), so no
Python call overhead is included.

Cases: fg_dense with M = 1 for the MLP 784-300-100-10 layers, fg_conv for the LeNet-5
convolutions and for a 3x3 "same" convolution with stride 1 (the row-shifted direct
path) and stride 2 (im2col + GEMM), the 2x2 max pools, and two whole models chained
from the kernels (MLP 784-300-100-10 and LeNet-5, ReLU fused). The "naive" column is the scalar
code peers generate: one dot product per output (for dense, over contiguous
transposed-weight rows, the naive code's best case), direct 7-loop convolution.
With --ort (default when onnxruntime is installed) the two models also run in
onnxruntime with one thread, timed from Python around session.run.

    .venv/bin/python benchmarks/bench_kernels.py [--cc clang] [--flags="-O2,-O3 -march=native"]
                                                  [--no-ort]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "runtime_c"
BENCH = ROOT / "benchmarks"  # bench_timing.h
DEFAULT_FLAGS = ["-O2", "-O3", "-O3 -march=native"]

HARNESS = r"""
#include "bench_timing.h"
#include "fg_runtime.h"
#include "tests/ref_kernels.h"

static void pack_panels(const float *B, int K, int N, float *Bp)
{
    int np = (N + FG_PANEL - 1) / FG_PANEL, p, k, j;
    for (p = 0; p < np; ++p)
        for (k = 0; k < K; ++k)
            for (j = 0; j < FG_PANEL; ++j) {
                int n = p * FG_PANEL + j;
                Bp[((size_t)p * K + k) * FG_PANEL + j] = n < N ? B[(size_t)k * N + n] : 0.0f;
            }
}
static void pack_mblocks(const float *A, int M, int K, float *Ap)
{
    int nb = (M + FG_MBLOCK - 1) / FG_MBLOCK, b, k, i;
    for (b = 0; b < nb; ++b)
        for (k = 0; k < K; ++k)
            for (i = 0; i < FG_MBLOCK; ++i) {
                int m = b * FG_MBLOCK + i;
                Ap[((size_t)b * K + k) * FG_MBLOCK + i] = m < M ? A[(size_t)m * K + k] : 0.0f;
            }
}

/* the scalar dense peers emit: one dot product per output over a contiguous
 * weight row (transposed weights, i.e. the naive code's best case) */
static void naive_dense(const float *x, float *y, int K, int N, const float *Wt,
                        const float *bias, int relu)
{
    int n, k;
    for (n = 0; n < N; ++n) {
        float s = bias[n];
        for (k = 0; k < K; ++k)
            s += x[k] * Wt[(size_t)n * K + k];
        y[n] = relu && s < 0.0f ? 0.0f : s;
    }
}

typedef struct {
    int K, N;
    float *B, *Bt, *Bp, *bias;
} dense_layer;

static dense_layer make_dense(int K, int N)
{
    dense_layer L;
    int k, n;
    L.K = K;
    L.N = N;
    L.B = rnd_buf((size_t)K * N);
    L.Bt = malloc((size_t)K * N * sizeof(float));
    for (k = 0; k < K; ++k)
        for (n = 0; n < N; ++n)
            L.Bt[(size_t)n * K + k] = L.B[(size_t)k * N + n];
    L.Bp = malloc((size_t)((N + 15) / 16) * 16 * K * sizeof(float));
    pack_panels(L.B, K, N, L.Bp);
    L.bias = rnd_buf((size_t)N);
    return L;
}

typedef struct {
    fg_conv_shape s;
    float *w, *wp, *bias, *scratch;
} conv_layer;

static conv_layer make_conv_s(int C, int H, int W, int K, int k, int pad, int stride)
{
    conv_layer L;
    int R = C * k * k, Kp = (K + 3) / 4 * 4;
    memset(&L.s, 0, sizeof L.s);
    L.s.C = C; L.s.D = 1; L.s.H = H; L.s.W = W; L.s.K = K;
    L.s.kd = 1; L.s.kh = k; L.s.kw = k;
    L.s.sd = 1; L.s.sh = L.s.sw = stride; L.s.dd = L.s.dh = L.s.dw = 1;
    L.s.pd = 0; L.s.ph = pad; L.s.pw = pad; L.s.group = 1;
    L.s.OD = 1; L.s.OH = (H + 2 * pad - k) / stride + 1; L.s.OW = (W + 2 * pad - k) / stride + 1;
    L.w = rnd_buf((size_t)K * R);
    L.wp = calloc((size_t)Kp * R, sizeof(float));
    pack_mblocks(L.w, K, R, L.wp);
    L.bias = rnd_buf((size_t)K);
    L.scratch = malloc(fg_conv_scratch(&L.s) * sizeof(float) + 64);
    return L;
}

static conv_layer make_conv(int C, int H, int W, int K, int k, int pad)
{
    return make_conv_s(C, H, W, K, k, pad, 1);
}

static fg_pool_shape make_pool(int C, int H, int W)
{
    fg_pool_shape p;
    memset(&p, 0, sizeof p);
    p.C = C; p.D = 1; p.H = H; p.W = W;
    p.OD = 1; p.OH = H / 2; p.OW = W / 2;
    p.kd = 1; p.kh = 2; p.kw = 2; p.sd = 1; p.sh = 2; p.sw = 2;
    p.dd = p.dh = p.dw = 1;
    return p;
}

int main(void)
{
    static float x[784], h1[300], h2[100], out[10];
    static float c1[6 * 28 * 28], p1[6 * 14 * 14], c2[16 * 10 * 10], p2[400], f1[120], f2[84];
    dense_layer d1 = make_dense(784, 300), d2 = make_dense(300, 100), d3 = make_dense(100, 10);
    dense_layer l1 = make_dense(400, 120), l2 = make_dense(120, 84), l3 = make_dense(84, 10);
    conv_layer cv1 = make_conv(1, 28, 28, 6, 5, 2), cv2 = make_conv(6, 14, 14, 16, 5, 0);
    conv_layer cv3 = make_conv(16, 16, 16, 32, 3, 1), cv4 = make_conv_s(16, 16, 16, 32, 3, 1, 2);
    static float x3[16 * 16 * 16], y3[32 * 16 * 16];
    fg_pool_shape pl1 = make_pool(6, 28, 28), pl2 = make_pool(16, 10, 10);
    float *xin = rnd_buf(784), *x3in = rnd_buf(sizeof x3 / sizeof x3[0]);
    memcpy(x, xin, sizeof x);
    memcpy(x3, x3in, sizeof x3);

    g_target = 20000.0; /* ns per batch */
    TIME("dense 784x300\tfg", 2.0 * 784 * 300,
         fg_dense(x, h1, 1, 784, 300, d1.Bp, d1.bias, FG_ACT_RELU, 0.0f, 0.0f));
    TIME("dense 784x300\tnaive", 2.0 * 784 * 300, naive_dense(x, h1, 784, 300, d1.Bt, d1.bias, 1));
    TIME("dense 300x100\tfg", 2.0 * 300 * 100,
         fg_dense(h1, h2, 1, 300, 100, d2.Bp, d2.bias, FG_ACT_RELU, 0.0f, 0.0f));
    TIME("dense 300x100\tnaive", 2.0 * 300 * 100, naive_dense(h1, h2, 300, 100, d2.Bt, d2.bias, 1));
    TIME("dense 100x10\tfg", 2.0 * 100 * 10,
         fg_dense(h2, out, 1, 100, 10, d3.Bp, d3.bias, FG_ACT_NONE, 0.0f, 0.0f));
    TIME("dense 100x10\tnaive", 2.0 * 100 * 10, naive_dense(h2, out, 100, 10, d3.Bt, d3.bias, 0));

    TIME("conv 1->6 5x5 p2 28x28\tfg", 2.0 * 6 * 25 * 784,
         fg_conv(&cv1.s, x, c1, cv1.wp, cv1.bias, FG_ACT_RELU, 0.0f, 0.0f, cv1.scratch));
    TIME("conv 1->6 5x5 p2 28x28\tnaive", 2.0 * 6 * 25 * 784,
         ref_conv(&cv1.s, x, c1, cv1.w, cv1.bias, FG_ACT_RELU, 0.0f, 0.0f));
    TIME("conv 6->16 5x5 14x14\tfg", 2.0 * 16 * 150 * 100,
         fg_conv(&cv2.s, p1, c2, cv2.wp, cv2.bias, FG_ACT_RELU, 0.0f, 0.0f, cv2.scratch));
    TIME("conv 6->16 5x5 14x14\tnaive", 2.0 * 16 * 150 * 100,
         ref_conv(&cv2.s, p1, c2, cv2.w, cv2.bias, FG_ACT_RELU, 0.0f, 0.0f));
    TIME("conv 16->32 3x3 16x16\tfg", 2.0 * 32 * 144 * 256,
         fg_conv(&cv3.s, x3, y3, cv3.wp, cv3.bias, FG_ACT_RELU, 0.0f, 0.0f, cv3.scratch));
    TIME("conv 16->32 3x3 16x16\tnaive", 2.0 * 32 * 144 * 256,
         ref_conv(&cv3.s, x3, y3, cv3.w, cv3.bias, FG_ACT_RELU, 0.0f, 0.0f));
    TIME("conv 16->32 3x3 s2\tfg", 2.0 * 32 * 144 * 64,
         fg_conv(&cv4.s, x3, y3, cv4.wp, cv4.bias, FG_ACT_RELU, 0.0f, 0.0f, cv4.scratch));
    TIME("conv 16->32 3x3 s2\tnaive", 2.0 * 32 * 144 * 64,
         ref_conv(&cv4.s, x3, y3, cv4.w, cv4.bias, FG_ACT_RELU, 0.0f, 0.0f));
    TIME("maxpool 2x2 6x28x28\tfg", 6.0 * 196 * 3, fg_maxpool(&pl1, c1, p1));
    TIME("maxpool 2x2 6x28x28\tnaive", 6.0 * 196 * 3, ref_maxpool(&pl1, c1, p1));
    TIME("maxpool 2x2 16x10x10\tfg", 16.0 * 25 * 3, fg_maxpool(&pl2, c2, p2));
    TIME("maxpool 2x2 16x10x10\tnaive", 16.0 * 25 * 3, ref_maxpool(&pl2, c2, p2));

    TIME("MLP 784-300-100-10\tfg", 2.0 * (784 * 300 + 300 * 100 + 100 * 10), {
        fg_dense(x, h1, 1, 784, 300, d1.Bp, d1.bias, FG_ACT_RELU, 0.0f, 0.0f);
        fg_dense(h1, h2, 1, 300, 100, d2.Bp, d2.bias, FG_ACT_RELU, 0.0f, 0.0f);
        fg_dense(h2, out, 1, 100, 10, d3.Bp, d3.bias, FG_ACT_NONE, 0.0f, 0.0f);
    });
    TIME("MLP 784-300-100-10\tnaive", 2.0 * (784 * 300 + 300 * 100 + 100 * 10), {
        naive_dense(x, h1, 784, 300, d1.Bt, d1.bias, 1);
        naive_dense(h1, h2, 300, 100, d2.Bt, d2.bias, 1);
        naive_dense(h2, out, 100, 10, d3.Bt, d3.bias, 0);
    });
    TIME("LeNet-5\tfg", 2.0 * (6 * 25 * 784 + 16 * 150 * 100 + 400 * 120 + 120 * 84 + 84 * 10), {
        fg_conv(&cv1.s, x, c1, cv1.wp, cv1.bias, FG_ACT_RELU, 0.0f, 0.0f, cv1.scratch);
        fg_maxpool(&pl1, c1, p1);
        fg_conv(&cv2.s, p1, c2, cv2.wp, cv2.bias, FG_ACT_RELU, 0.0f, 0.0f, cv2.scratch);
        fg_maxpool(&pl2, c2, p2);
        fg_dense(p2, f1, 1, 400, 120, l1.Bp, l1.bias, FG_ACT_RELU, 0.0f, 0.0f);
        fg_dense(f1, f2, 1, 120, 84, l2.Bp, l2.bias, FG_ACT_RELU, 0.0f, 0.0f);
        fg_dense(f2, out, 1, 84, 10, l3.Bp, l3.bias, FG_ACT_NONE, 0.0f, 0.0f);
    });
    TIME("LeNet-5\tnaive", 2.0 * (6 * 25 * 784 + 16 * 150 * 100 + 400 * 120 + 120 * 84 + 84 * 10), {
        ref_conv(&cv1.s, x, c1, cv1.w, cv1.bias, FG_ACT_RELU, 0.0f, 0.0f);
        ref_maxpool(&pl1, c1, p1);
        ref_conv(&cv2.s, p1, c2, cv2.w, cv2.bias, FG_ACT_RELU, 0.0f, 0.0f);
        ref_maxpool(&pl2, c2, p2);
        naive_dense(p2, f1, 400, 120, l1.Bt, l1.bias, 1);
        naive_dense(f1, f2, 120, 84, l2.Bt, l2.bias, 1);
        naive_dense(f2, out, 84, 10, l3.Bt, l3.bias, 0);
    });
    return 0;
}
"""


def build(cc: str, flags: str, workdir: Path) -> Path:
    (workdir / "bench_main.c").write_text(HARNESS)
    exe = workdir / ("bench_" + "".join(c if c.isalnum() else "_" for c in flags))
    srcs = [str(p) for p in sorted(RUNTIME.glob("*.c"))]
    srcs.append(str(RUNTIME / "tests" / "ref_kernels.c"))
    cmd = [cc, "-std=c99", *flags.split(), f"-I{RUNTIME}", f"-I{BENCH}", *srcs]
    cmd.append(str(workdir / "bench_main.c"))
    cmd += ["-lm", "-o", str(exe)]
    subprocess.run(cmd, check=True)
    return exe


def run(exe: Path) -> dict[tuple[str, str], tuple[float, float]]:
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    res: dict[tuple[str, str], tuple[float, float]] = {}
    for line in out.splitlines():
        case, impl, ns, flops, _fastest = line.split("\t")
        res[(case, impl)] = (float(ns), float(flops))
    return res


def ort_times() -> dict[str, float]:
    """Median wall time (ns) of session.run for the two models, one thread."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return {}
    rng = np.random.default_rng(0)

    def init(name, shape):
        return numpy_helper.from_array(rng.uniform(-0.5, 0.5, shape).astype(np.float32), name)

    def gemm(x, y, k, n, relu, inits, nodes, i):
        inits += [init(f"W{i}", (n, k)), init(f"b{i}", (n,))]
        out = f"g{i}" if relu else y
        nodes.append(helper.make_node("Gemm", [x, f"W{i}", f"b{i}"], [out], transB=1))
        if relu:
            nodes.append(helper.make_node("Relu", [out], [y]))

    models = {}
    inits, nodes = [], []
    gemm("x", "h1", 784, 300, True, inits, nodes, 1)
    gemm("h1", "h2", 300, 100, True, inits, nodes, 2)
    gemm("h2", "y", 100, 10, False, inits, nodes, 3)
    models["MLP 784-300-100-10"] = (nodes, inits, [1, 784])
    inits, nodes = [init("cw1", (6, 1, 5, 5)), init("cb1", (6,))], []
    inits += [init("cw2", (16, 6, 5, 5)), init("cb2", (16,)), init("shape", (2,))]
    inits[-1] = numpy_helper.from_array(np.array([1, 400], dtype=np.int64), "shape")
    nodes += [
        helper.make_node("Conv", ["x", "cw1", "cb1"], ["c1"], pads=[2, 2, 2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "cw2", "cb2"], ["c2"]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["p2", "shape"], ["f"]),
    ]
    gemm("f", "f1", 400, 120, True, inits, nodes, 1)
    gemm("f1", "f2", 120, 84, True, inits, nodes, 2)
    gemm("f2", "y", 84, 10, False, inits, nodes, 3)
    models["LeNet-5"] = (nodes, inits, [1, 1, 28, 28])

    models["(call overhead: 1-node Relu)"] = (
        [helper.make_node("Relu", ["x"], ["y"])],
        [],
        [1, 784],
    )
    times = {}
    for name, (nodes, inits, shape) in models.items():
        graph = helper.make_graph(
            nodes,
            name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(
            model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        feed = {"x": rng.uniform(-1, 1, shape).astype(np.float32)}
        for _ in range(200):
            sess.run(None, feed)
        samples = []
        for _ in range(101):
            t0 = time.perf_counter_ns()
            for _ in range(50):
                sess.run(None, feed)
            samples.append((time.perf_counter_ns() - t0) / 50)
        times[name] = float(np.median(samples))
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cc", default="gcc", help="C compiler (default gcc)")
    ap.add_argument(
        "--flags",
        default=",".join(DEFAULT_FLAGS),
        help='comma-separated flag sets to compare (default "%(default)s")',
    )
    ap.add_argument("--no-ort", action="store_true", help="skip the onnxruntime comparison")
    args = ap.parse_args(argv)
    args.flags = [f.strip() for f in args.flags.split(",") if f.strip()]
    if shutil.which(args.cc) is None:
        print(f"compiler {args.cc!r} not found", file=sys.stderr)
        return 2
    version = subprocess.run([args.cc, "--version"], capture_output=True, text=True).stdout
    print(f"compiler: {version.splitlines()[0]}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for flags in args.flags:
            results[flags] = run(build(args.cc, flags, Path(tmp)))
    cases = list(dict.fromkeys(case for (case, _impl) in next(iter(results.values()))))
    print("\ntime per call (median), GFLOP/s, naive scalar C with the same flags, speedup")
    head = f"{'case':<24}{'flags':<20}{'fg us':>9}{'GFLOP/s':>9}{'naive us':>10}{'speedup':>9}"
    print(head)
    print("-" * len(head))
    for case in cases:
        for flags in args.flags:
            ns, flops = results[flags][(case, "fg")]
            naive_ns, _ = results[flags][(case, "naive")]
            print(
                f"{case:<24}{flags:<20}{ns / 1e3:9.2f}{flops / ns:9.1f}"
                f"{naive_ns / 1e3:10.2f}{naive_ns / ns:8.1f}x"
            )
    if not args.no_ort:
        ort = ort_times()
        if ort:
            print("\nonnxruntime, 1 thread, median session.run from Python (incl. call overhead)")
            for name, ns in ort.items():
                if (name, "fg") not in results[args.flags[0]]:
                    print(f"{name:<24}{ns / 1e3:9.2f} us")
                    continue
                best = min(results[f][(name, "fg")][0] for f in args.flags)
                worst = max(results[f][(name, "fg")][0] for f in args.flags)
                print(
                    f"{name:<24}{ns / 1e3:9.2f} us   faustgen kernels {best / 1e3:.2f}"
                    f"-{worst / 1e3:.2f} us"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
