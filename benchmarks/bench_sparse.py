"""Benchmark of the sparse-factor kernels (runtime_c/fg_sparse.c); feeds the cost model.

For each flag set (default: -O3 -march=native, -O3, -O2; never -ffast-math) a C harness
is compiled together with runtime_c/fg_sparse.c and fg_dense.c and timed in C
(clock_gettime around batches of >= 0.1 ms, median of 101 batches; per case the lowest
median of --repeat runs, since other jobs only ever add time), so no Python overhead is
included. Caches are warm (the same factor is applied over and over, as when a small
model runs in a loop). Batch 1 (rows = 1) unless a case says otherwise.

Cases (random supports, uint16 indices as the code generator emits for n <= 65536, and
int32 copies for the _i32 rows):
  - 300x784 layer at RCG 4 and 8: two factors 300x392 and 392x784, the nonzeros split
    evenly (29400 / 14700 per factor); each factor in CSR (unstructured random support),
    ELL (fixed k = nnz/m per row), BSR16 and BSR8 (random 16x1 / 8x1 blocks, same number
    of stored entries), plus the two-factor chain and fg_dense on the same dense shapes; one batch
    of 8 vectors;
  - 1024x1024 at RCG 8: two 1024x1024 factors of 65536 nonzeros each, same formats;
  - conv: fg_conv (the dense layer, per multiply-add) against fg_im2col (per float of the
    patch matrix) + fg_csr_spmm with a K x C*k*k factor of 25 % density (per nonzero per
    column), for LeNet-5's second convolution (6x14x14, 5x5, 16 filters) and a 32x28x28
    3x3 one with 64 filters;
  - call overhead: tiny calls of every kernel.

Per-entry costs are (t - call) / entries; the [cost] table printed at the end uses the
median over the factor shapes, measured with the first flag set (default
-O3 -march=native, the host target's flags). With --qemu the harness is also
cross-compiled for rpi64 (aarch64-linux-gnu-gcc -O3 -mcpu=cortex-a72) and run once
under qemu-aarch64 in quick mode as a check that it builds and runs; emulated timings
mean nothing and are not printed. --vec-report counts packed / scalar float
multiply(-add) instructions per kernel in fg_sparse.c's assembly for gcc, clang and the
ARM targets. Results and the [cost] table: benchmarks/README_sparse.md.

    .venv/bin/python benchmarks/bench_sparse.py [--cc clang] [--flags="-O3 -march=native,-O2"]
                                                 [--repeat 5] [--qemu] [--vec-report] [--quick]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "runtime_c"
BENCH = ROOT / "benchmarks"  # bench_timing.h
DEFAULT_FLAGS = ["-O3 -march=native", "-O3", "-O2"]
RPI64 = (
    "aarch64-linux-gnu-gcc",
    "-O3 -mcpu=cortex-a72",
    ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"],
)

HARNESS = r"""
#include "bench_timing.h"
#include <stdint.h>
#include "fg_runtime.h"

static volatile float g_sink;

/* ---- random factors -------------------------------------------------------- */

typedef struct {
    int m, n, nnz, k, nblocks;
    /* CSR */
    int32_t *ptr, *idx32;
    uint16_t *idx16;
    float *data;
    /* ELL (slot-major, k per row) */
    uint16_t *eidx;
    int32_t *eidx32;
    float *edata;
    /* BSR16, and BSR8 (8x1 blocks) in the *8 fields */
    int32_t *pptr, *pptr8;
    uint16_t *bcols, *bcols8;
    int32_t *bcols32, *bcols328;
    float *bvals, *bvals8;
    int nblocks8;
    /* dense, packed for fg_dense (y = x B with B = S^T, K = n, N = m) */
    float *Bp, *bias;
} factor;

/* nnz distinct positions of an m x n matrix, uniformly at random */
static void make_csr(factor *f)
{
    unsigned char *mark = calloc((size_t)f->m * f->n, 1);
    int c = 0, i, j, p = 0;
    while (c < f->nnz) {
        const size_t pos = ((size_t)rnd_u() << 12 ^ rnd_u()) % ((size_t)f->m * f->n);
        if (!mark[pos]) {
            mark[pos] = 1;
            ++c;
        }
    }
    f->ptr = xmalloc((size_t)(f->m + 1) * sizeof(int32_t));
    f->idx32 = xmalloc((size_t)f->nnz * sizeof(int32_t));
    f->idx16 = xmalloc((size_t)f->nnz * sizeof(uint16_t));
    f->data = rnd_buf((size_t)f->nnz);
    f->ptr[0] = 0;
    for (i = 0; i < f->m; ++i) {
        for (j = 0; j < f->n; ++j)
            if (mark[(size_t)i * f->n + j]) {
                f->idx32[p] = j;
                f->idx16[p] = (uint16_t)j;
                ++p;
            }
        f->ptr[i + 1] = p;
    }
    free(mark);
}

/* k = round(nnz / m) distinct random columns per row, slot-major */
static void make_ell(factor *f)
{
    unsigned char *mark = xmalloc((size_t)f->n);
    int i, s;
    f->k = (f->nnz + f->m / 2) / f->m;
    f->eidx = xmalloc((size_t)f->k * f->m * sizeof(uint16_t));
    f->eidx32 = xmalloc((size_t)f->k * f->m * sizeof(int32_t));
    f->edata = rnd_buf((size_t)f->k * f->m);
    for (i = 0; i < f->m; ++i) {
        memset(mark, 0, (size_t)f->n);
        for (s = 0; s < f->k; ++s) {
            int j;
            do
                j = (int)(rnd_u() % (unsigned)f->n);
            while (mark[j]);
            mark[j] = 1;
            f->eidx[(size_t)s * f->m + i] = (uint16_t)j;
            f->eidx32[(size_t)s * f->m + i] = j;
        }
    }
    free(mark);
}

/* round(nnz / br) distinct random (panel, column) blocks of br rows, columns sorted */
static void make_bsr(const factor *f, int br, int *nblocks, int32_t **pptr, uint16_t **bcols,
                     int32_t **bcols32, float **bvals)
{
    const int np = (f->m + br - 1) / br;
    unsigned char *mark = calloc((size_t)np * f->n, 1);
    int c = 0, p, j, q = 0, r;
    *nblocks = (f->nnz + br / 2) / br;
    while (c < *nblocks) {
        const size_t pos = ((size_t)rnd_u() << 12 ^ rnd_u()) % ((size_t)np * f->n);
        if (!mark[pos]) {
            mark[pos] = 1;
            ++c;
        }
    }
    *pptr = xmalloc((size_t)(np + 1) * sizeof(int32_t));
    *bcols = xmalloc((size_t)*nblocks * sizeof(uint16_t));
    *bcols32 = xmalloc((size_t)*nblocks * sizeof(int32_t));
    *bvals = rnd_buf((size_t)*nblocks * br);
    (*pptr)[0] = 0;
    for (p = 0; p < np; ++p) {
        for (j = 0; j < f->n; ++j)
            if (mark[(size_t)p * f->n + j]) {
                (*bcols)[q] = (uint16_t)j;
                (*bcols32)[q] = j;
                for (r = 0; r < br; ++r)
                    if (p * br + r >= f->m)
                        (*bvals)[(size_t)q * br + r] = 0.0f;
                ++q;
            }
        (*pptr)[p + 1] = q;
    }
    free(mark);
}

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

static factor make_factor(int m, int n, int nnz)
{
    factor f;
    float *B = rnd_buf((size_t)m * n);
    memset(&f, 0, sizeof f);
    f.m = m;
    f.n = n;
    f.nnz = nnz;
    make_csr(&f);
    make_ell(&f);
    make_bsr(&f, FG_BSR_ROWS, &f.nblocks, &f.pptr, &f.bcols, &f.bcols32, &f.bvals);
    make_bsr(&f, FG_BSR8_ROWS, &f.nblocks8, &f.pptr8, &f.bcols8, &f.bcols328, &f.bvals8);
    f.Bp = xmalloc((size_t)(m + 15) / 16 * 16 * n * sizeof(float));
    pack_panels(B, n, m, f.Bp);
    f.bias = rnd_buf((size_t)m);
    free(B);
    return f;
}

static void bench_factor(const char *shape, const factor *f, const float *x, float *y)
{
    char label[128];
    const int m = f->m, n = f->n;
    snprintf(label, sizeof label, "%s\tcsr", shape);
    TIME(label, f->nnz,
         fg_csr_matvec_u16(1, m, n, f->ptr, f->idx16, f->data, x, y, f->bias, FG_ACT_RELU, 0.0f,
                           0.0f));
    snprintf(label, sizeof label, "%s\tcsr_i32", shape);
    TIME(label, f->nnz,
         fg_csr_matvec_i32(1, m, n, f->ptr, f->idx32, f->data, x, y, f->bias, FG_ACT_RELU, 0.0f,
                           0.0f));
    snprintf(label, sizeof label, "%s\tell", shape);
    TIME(label, (size_t)f->k * m,
         fg_ell_matvec_u16(1, m, n, f->k, f->eidx, f->edata, x, y, f->bias, FG_ACT_RELU, 0.0f,
                           0.0f));
    snprintf(label, sizeof label, "%s\tell_i32", shape);
    TIME(label, (size_t)f->k * m,
         fg_ell_matvec_i32(1, m, n, f->k, f->eidx32, f->edata, x, y, f->bias, FG_ACT_RELU, 0.0f,
                           0.0f));
    snprintf(label, sizeof label, "%s\tbsr16", shape);
    TIME(label, (size_t)f->nblocks * FG_BSR_ROWS,
         fg_bsr16_matvec_u16(1, m, n, f->pptr, f->bcols, f->bvals, x, y, f->bias, FG_ACT_RELU,
                             0.0f, 0.0f));
    snprintf(label, sizeof label, "%s\tbsr16_i32", shape);
    TIME(label, (size_t)f->nblocks * FG_BSR_ROWS,
         fg_bsr16_matvec_i32(1, m, n, f->pptr, f->bcols32, f->bvals, x, y, f->bias, FG_ACT_RELU,
                             0.0f, 0.0f));
    snprintf(label, sizeof label, "%s\tbsr8", shape);
    TIME(label, (size_t)f->nblocks8 * FG_BSR8_ROWS,
         fg_bsr8_matvec_u16(1, m, n, f->pptr8, f->bcols8, f->bvals8, x, y, f->bias, FG_ACT_RELU,
                            0.0f, 0.0f));
    snprintf(label, sizeof label, "%s\tdense", shape);
    TIME(label, (size_t)m * n, fg_dense(x, y, 1, n, m, f->Bp, f->bias, FG_ACT_RELU, 0.0f, 0.0f));
    g_sink = y[0];
}

/* a layer = S1 (m x h) S2 (h x n) applied to x (n) */
static void bench_chain(const char *shape, const factor *f1, const factor *f2, const float *x,
                        float *t, float *y)
{
    char label[128];
    const int m = f1->m, h = f1->n, n = f2->n;
    snprintf(label, sizeof label, "%s chain\tcsr", shape);
    TIME(label, f1->nnz + f2->nnz, {
        fg_csr_matvec_u16(1, h, n, f2->ptr, f2->idx16, f2->data, x, t, NULL, 0, 0.0f, 0.0f);
        fg_csr_matvec_u16(1, m, h, f1->ptr, f1->idx16, f1->data, t, y, f1->bias, 1, 0.0f, 0.0f);
    });
    snprintf(label, sizeof label, "%s chain\tell", shape);
    TIME(label, (size_t)f1->k * m + (size_t)f2->k * h, {
        fg_ell_matvec_u16(1, h, n, f2->k, f2->eidx, f2->edata, x, t, NULL, 0, 0.0f, 0.0f);
        fg_ell_matvec_u16(1, m, h, f1->k, f1->eidx, f1->edata, t, y, f1->bias, 1, 0.0f, 0.0f);
    });
    snprintf(label, sizeof label, "%s chain\tbsr16", shape);
    TIME(label, ((size_t)f1->nblocks + f2->nblocks) * FG_BSR_ROWS, {
        fg_bsr16_matvec_u16(1, h, n, f2->pptr, f2->bcols, f2->bvals, x, t, NULL, 0, 0.0f, 0.0f);
        fg_bsr16_matvec_u16(1, m, h, f1->pptr, f1->bcols, f1->bvals, t, y, f1->bias, 1, 0.0f,
                            0.0f);
    });
    g_sink = y[0];
}

/* a stride-1, unpadded k x k convolution C x H x H -> K: fg_conv (random packed
 * filters: the values do not matter), its im2col matrix and fg_csr_spmm with a
 * K x C*k*k factor of 25 % density on it */
static void bench_conv(const char *shape, int C, int H, int k, int K)
{
    char label[128];
    fg_conv_shape s;
    const int O = H - k + 1, R = C * k * k, P = O * O;
    factor cf;
    float *x, *w, *y, *cols, *scr, *bias;
    memset(&s, 0, sizeof s);
    s.C = C, s.H = s.W = H, s.K = K, s.OH = s.OW = O, s.kh = s.kw = k, s.group = 1;
    s.D = s.OD = s.kd = s.sd = s.sh = s.sw = s.dd = s.dh = s.dw = 1;
    cf.m = K, cf.n = R, cf.nnz = K * R / 4;
    make_csr(&cf);
    x = rnd_buf((size_t)C * H * H), w = rnd_buf((size_t)(K + 4) * R), bias = rnd_buf((size_t)K);
    y = xmalloc((size_t)K * P * sizeof(float)), cols = xmalloc((size_t)R * P * sizeof(float));
    scr = xmalloc(fg_conv_scratch(&s) * sizeof(float) + 64);
    snprintf(label, sizeof label, "%s\tconv", shape);
    TIME(label, (size_t)K * R * P, fg_conv(&s, x, y, w, bias, FG_ACT_RELU, 0.0f, 0.0f, scr));
    snprintf(label, sizeof label, "%s\tim2col", shape);
    TIME(label, (size_t)R * P, fg_im2col(&s, x, cols));
    snprintf(label, sizeof label, "%s\tspmm", shape);
    TIME(label, (size_t)cf.nnz * P,
         fg_csr_spmm_u16(K, P, cf.ptr, cf.idx16, cf.data, cols, y, bias, FG_ACT_RELU, 0.0f,
                         0.0f));
    snprintf(label, sizeof label, "%s\tspmm_i32", shape);
    TIME(label, (size_t)cf.nnz * P,
         fg_csr_spmm_i32(K, P, cf.ptr, cf.idx32, cf.data, cols, y, bias, FG_ACT_RELU, 0.0f,
                         0.0f));
    g_sink = y[0];
    free(x), free(w), free(bias), free(y), free(cols), free(scr);
}

int main(int argc, char **argv)
{
    static float x[1024], t[1024], y[1024];
    const int quick = argc > 1 && strcmp(argv[1], "quick") == 0;
    factor a4, b4, a8, b8, c8, d8, tiny;
    float *Bd, *Bpd, *biasd;
    int i;
    if (quick) {
        g_samples = 3;
        g_target = 1000.0;
    }
    for (i = 0; i < 1024; ++i)
        x[i] = rnd();

    /* call overhead: smallest calls of every kernel */
    tiny = make_factor(16, 16, 16);
    TIME("call\tcsr", 0, fg_csr_matvec_u16(1, 1, 16, tiny.ptr, tiny.idx16, tiny.data, x, y,
                                            tiny.bias, 1, 0.0f, 0.0f));
    TIME("call\tell", 0, fg_ell_matvec_u16(1, 1, 16, 1, tiny.eidx, tiny.edata, x, y, tiny.bias, 1,
                                            0.0f, 0.0f));
    TIME("call\tbsr16", 0, fg_bsr16_matvec_u16(1, 16, 16, tiny.pptr, tiny.bcols, tiny.bvals, x, y,
                                                tiny.bias, 1, 0.0f, 0.0f));
    TIME("call\tbsr8", 0, fg_bsr8_matvec_u16(1, 8, 16, tiny.pptr8, tiny.bcols8, tiny.bvals8, x, y,
                                              tiny.bias, 1, 0.0f, 0.0f));
    TIME("call\tspmm", 0, fg_csr_spmm_u16(1, 16, tiny.ptr, tiny.idx16, tiny.data, x, y, tiny.bias,
                                           1, 0.0f, 0.0f));
    TIME("call\tdense", 0, fg_dense(x, y, 1, 1, 16, tiny.Bp, tiny.bias, 1, 0.0f, 0.0f));

    a4 = make_factor(300, 392, 29400);
    b4 = make_factor(392, 784, 29400);
    bench_factor("300x392 rcg4", &a4, x, y);
    bench_factor("392x784 rcg4", &b4, x, y);
    bench_chain("300x784 rcg4", &a4, &b4, x, t, y);
    {   /* batch of 8 vectors: per-entry cost stays (about) the same */
        static float x8[8 * 784], y8[8 * 392];
        for (i = 0; i < 8 * 784; ++i)
            x8[i] = rnd();
        TIME("392x784 rcg4 rows=8\tcsr", (size_t)8 * b4.nnz,
             fg_csr_matvec_u16(8, 392, 784, b4.ptr, b4.idx16, b4.data, x8, y8, b4.bias, 1, 0.0f,
                               0.0f));
        TIME("392x784 rcg4 rows=8\tell", (size_t)8 * b4.k * 392,
             fg_ell_matvec_u16(8, 392, 784, b4.k, b4.eidx, b4.edata, x8, y8, b4.bias, 1, 0.0f,
                               0.0f));
        TIME("392x784 rcg4 rows=8\tbsr16", (size_t)8 * b4.nblocks * FG_BSR_ROWS,
             fg_bsr16_matvec_u16(8, 392, 784, b4.pptr, b4.bcols, b4.bvals, x8, y8, b4.bias, 1,
                                 0.0f, 0.0f));
        TIME("392x784 rcg4 rows=8\tdense", (size_t)8 * 392 * 784,
             fg_dense(x8, y8, 8, 784, 392, b4.Bp, b4.bias, 1, 0.0f, 0.0f));
        g_sink = y8[0];
    }
    a8 = make_factor(300, 392, 14700);
    b8 = make_factor(392, 784, 14700);
    bench_factor("300x392 rcg8", &a8, x, y);
    bench_factor("392x784 rcg8", &b8, x, y);
    bench_chain("300x784 rcg8", &a8, &b8, x, t, y);
    c8 = make_factor(1024, 1024, 65536);
    d8 = make_factor(1024, 1024, 65536);
    bench_factor("1024x1024 rcg8", &c8, x, y);
    bench_chain("1024x1024 rcg8", &c8, &d8, x, t, y);

    /* dense references of the whole layers */
    Bd = rnd_buf((size_t)784 * 300);
    Bpd = xmalloc((size_t)19 * 16 * 784 * sizeof(float));
    pack_panels(Bd, 784, 300, Bpd);
    biasd = rnd_buf(1024);
    TIME("300x784 layer\tdense", 784 * 300,
         fg_dense(x, y, 1, 784, 300, Bpd, biasd, FG_ACT_RELU, 0.0f, 0.0f));
    free(Bd);
    free(Bpd);
    Bd = rnd_buf((size_t)1024 * 1024);
    Bpd = xmalloc((size_t)1024 * 1024 * sizeof(float));
    pack_panels(Bd, 1024, 1024, Bpd);
    TIME("1024x1024 layer\tdense", 1024 * 1024,
         fg_dense(x, y, 1, 1024, 1024, Bpd, biasd, FG_ACT_RELU, 0.0f, 0.0f));
    free(Bd);
    free(Bpd);

    /* convolutions as the builder weighs them: fg_conv (the dense layer) against
     * fg_im2col + fg_csr_spmm (a factorized layer with one 25 % dense factor) */
    bench_conv("conv 6x14x14 5x5 16", 6, 14, 5, 16);
    bench_conv("conv 32x28x28 3x3 64", 32, 28, 3, 64);
    return 0;
}
"""

# factor shapes whose per-entry costs make up the [cost] table
FACTOR_SHAPES = ["300x392 rcg4", "392x784 rcg4", "300x392 rcg8", "392x784 rcg8", "1024x1024 rcg8"]
# convolutions whose per-entry costs make up gemm_mac, spmm_entry and im2col_float
CONV_SHAPES = ["conv 6x14x14 5x5 16", "conv 32x28x28 3x3 64"]
KERNEL = {
    "csr": "fg_csr_matvec_u16",
    "csr_i32": "fg_csr_matvec_i32",
    "ell": "fg_ell_matvec_u16",
    "ell_i32": "fg_ell_matvec_i32",
    "bsr16": "fg_bsr16_matvec_u16",
    "bsr16_i32": "fg_bsr16_matvec_i32",
    "bsr8": "fg_bsr8_matvec_u16",
    "dense": "fg_dense",
    "spmm": "fg_csr_spmm_u16",
    "spmm_i32": "fg_csr_spmm_i32",
    "conv": "fg_conv",
    "im2col": "fg_im2col",
}
SPARSE_FUNCS = [
    "fg_bsr16_matvec_i32",
    "fg_bsr16_matvec_u16",
    "fg_bsr8_matvec_u16",
    "fg_csr_matvec_u16",
    "fg_ell_matvec_u16",
    "fg_ell_matvec_i32",
    "fg_csr_spmm_u16",
]
# (target, compiler, flags) for --vec-report; the ARM ones are targets/*.toml's flags
VEC_CONFIGS = [
    ("x86-64", "gcc", "-O2"),
    ("x86-64", "gcc", "-O3"),
    ("x86-64", "gcc", "-O2 -march=native"),
    ("x86-64", "gcc", "-O3 -march=native"),
    ("x86-64", "clang", "-O2"),
    ("x86-64", "clang", "-O3 -march=native"),
    ("rpi64", "aarch64-linux-gnu-gcc", "-O2 -mcpu=cortex-a72"),
    ("rpi64", "aarch64-linux-gnu-gcc", "-O3 -mcpu=cortex-a72"),
    ("rpi", "arm-linux-gnueabihf-gcc", "-O3 -mcpu=cortex-a72 -mfpu=neon-fp-armv8 -mfloat-abi=hard"),
    ("rpi0", "arm-linux-gnueabihf-gcc", "-O3 -marm -mcpu=arm1176jzf-s -mfpu=vfp -mfloat-abi=hard"),
]
# packed / scalar float multiply(-add) instructions (SSE/AVX, AArch64 NEON, ARM VFP)
PACKED = re.compile(
    r"^\s+(v?(mul|add|fn?madd\d*|fmsub\d*)ps|fml[as]\s+v\d+\.4s|fmul\s+v\d+\.4s|fadd\s+v\d+\.4s)\b"
)
SCALAR = re.compile(
    r"^\s+(v?(mul|add|fn?madd\d*)ss|fn?madd\s+s\d+|fmul\s+s\d+|fadd\s+s\d+|"
    r"v(mla|mul|add|fma)\.f32\s+s\d+)\b"
)


def build(cc: str, flags: str, workdir: Path, tag: str = "", static: bool = False) -> Path:
    (workdir / "bench_sparse_main.c").write_text(HARNESS)
    exe = workdir / ("bench_" + tag + "".join(c if c.isalnum() else "_" for c in flags))
    srcs = [str(RUNTIME / f) for f in ("fg_dense.c", "fg_sparse.c", "fg_conv.c", "fg_convgemm.c")]
    cmd = [cc, "-std=c99", "-Wall", "-Werror", *flags.split(), f"-I{RUNTIME}", f"-I{BENCH}", *srcs]
    cmd += [str(workdir / "bench_sparse_main.c"), "-lm", "-o", str(exe)]
    if static:
        cmd.append("-static")
    subprocess.run(cmd, check=True)
    return exe


Results = dict[tuple[str, str], tuple[float, float]]


def run(cmd: list[str]) -> Results:
    """case -> (median ns per call, entries)."""
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    res: Results = {}
    for line in out.splitlines():
        case, impl, ns, entries, _fastest = line.split("\t")
        res[(case, impl)] = (float(ns), float(entries))
    return res


def run_repeated(cmd: list[str], repeat: int) -> Results:
    """Per case the lowest of `repeat` run medians (other processes only ever add time)."""
    best: Results = {}
    for _ in range(repeat):
        for key, (ns, entries) in run(cmd).items():
            if key not in best or ns < best[key][0]:
                best[key] = (ns, entries)
    return best


def call_overhead(res: Results) -> float:
    return statistics.median(ns for (case, _), (ns, _) in res.items() if case == "call")


def per_entry(res: Results, case: str, impl: str, call: float) -> float:
    ns, entries = res[(case, impl)]
    return max(ns - call, 0.0) / entries


def cost_table(res: Results) -> dict[str, float]:
    call = call_overhead(res)

    def med(impl: str) -> float:
        return statistics.median(per_entry(res, s, impl, call) for s in FACTOR_SHAPES)

    def conv(impl: str) -> float:
        return statistics.median(per_entry(res, s, impl, call) for s in CONV_SHAPES)

    return {
        "call": call,
        "dense_mac": med("dense"),
        "csr_nnz": med("csr"),
        "ell_nnz": med("ell"),
        "bsr16_entry": med("bsr16"),
        "bsr8_entry": med("bsr8"),
        "gemm_mac": conv("conv"),
        "spmm_entry": conv("spmm"),
        "im2col_float": conv("im2col"),
    }


def fmt_cost(v: float) -> str:
    return f"{v:.3g}" if v < 1 else f"{v:.1f}"


def vec_report(workdir: Path) -> list[str]:
    """Packed vs scalar float multiply(-add) instructions per sparse kernel, from the
    assembly of fg_sparse.c at each configuration (the fixed-size register blocks are
    fully unrolled, so a vectorized kernel shows only packed ones, apart from the scalar
    epilogue of partial blocks)."""
    lines = [
        "packed / scalar float multiply(-add) instructions in the assembly of each kernel",
        f"{'target':<8}{'compiler':<10}{'flags':<22}"
        + "".join(f"{f.removeprefix('fg_'):>19}" for f in SPARSE_FUNCS),
    ]
    for label, cc, flags in VEC_CONFIGS:
        shown = flags if len(flags) <= 21 else flags.split()[0] + " (targets/" + label + ")"
        ccname = cc.split("-")[-1] if "-" in cc else cc
        if shutil.which(cc) is None:
            lines.append(f"{label:<8}{ccname:<10}{shown:<22}  ({cc} not installed)")
            continue
        asm = workdir / "fg_sparse.s"
        cmd = [cc, "-std=c99", *flags.split(), "-S", str(RUNTIME / "fg_sparse.c"), "-o", str(asm)]
        subprocess.run(cmd, check=True)
        text = asm.read_text().splitlines()
        row = f"{label:<8}{ccname:<10}{shown:<22}"
        for fn in SPARSE_FUNCS:
            body, inside = [], False
            for ln in text:
                if ln.startswith(fn + ":"):
                    inside = True
                elif inside and (ln.startswith(".Lfunc_end") or ln.startswith("\t.size\t" + fn)):
                    break
                elif inside:
                    body.append(ln)
            packed = sum(1 for ln in body if PACKED.match(ln))
            scalar = sum(1 for ln in body if SCALAR.match(ln))
            row += f"{packed:>13} /{scalar:>4}"
        lines.append(row)
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cc", default="gcc", help="C compiler (default gcc)")
    ap.add_argument(
        "--flags",
        default=",".join(DEFAULT_FLAGS),
        help='comma-separated flag sets; the first one feeds [cost] (default "%(default)s")',
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs per flag set; per case the lowest run median is kept (default 3)",
    )
    ap.add_argument("--qemu", action="store_true", help="also check the rpi64 build under qemu")
    ap.add_argument("--vec-report", action="store_true", help="count packed/scalar FP ops")
    ap.add_argument("--quick", action="store_true", help="few samples, one run (smoke test)")
    args = ap.parse_args(argv)
    flag_sets = [f.strip() for f in args.flags.split(",") if f.strip()]
    if shutil.which(args.cc) is None:
        print(f"compiler {args.cc!r} not found", file=sys.stderr)
        return 2
    version = subprocess.run([args.cc, "--version"], capture_output=True, text=True).stdout
    print(f"compiler: {version.splitlines()[0]}")
    extra = ["quick"] if args.quick else []
    repeat = 1 if args.quick else max(1, args.repeat)
    results: dict[str, Results] = {}
    qemu_msg = None
    with tempfile.TemporaryDirectory() as tmp:
        exes = {f: build(args.cc, f, Path(tmp)) for f in flag_sets}
        for f in flag_sets:
            results[f] = run_repeated([str(exes[f]), *extra], repeat)
        if args.qemu:
            cc, flags, emu = RPI64
            if shutil.which(cc) and shutil.which(emu[0]):
                exe = build(cc, flags, Path(tmp), "rpi64_")
                n = len(run([*emu, str(exe), "quick"]))
                qemu_msg = f"rpi64 build ({cc} {flags}) under {emu[0]}: ran all {n} cases"
            else:
                qemu_msg = f"rpi64 check skipped: {cc} or {emu[0]} not installed"
        vec = vec_report(Path(tmp)) if args.vec_report else []

    calls = {f: call_overhead(r) for f, r in results.items()}
    print("\ncall overhead (median of the tiny calls of every kernel), ns:")
    for f, c in calls.items():
        tiny = ", ".join(
            f"{impl} {ns:.1f}" for (case, impl), (ns, _) in results[f].items() if case == "call"
        )
        print(f"  {f:<20}{c:6.1f}   ({tiny})")

    first = results[flag_sets[0]]
    print(
        f"\nns per stored entry ((t - call) / entries; dense, conv: per multiply-add; spmm:"
        f" per nonzero per column; im2col: per float), and us per call; median of"
        f" {g_samples_note(args)}"
    )
    head = f"{'case':<26}{'kernel':<21}{'entries':>9}"
    for f in flag_sets:
        head += f"  {f:>18} {'us':>8}"
    print(head)
    print("-" * len(head))
    for case, impl in first:
        if case == "call":
            continue
        entries = first[(case, impl)][1]
        line = f"{case:<26}{KERNEL.get(impl, impl):<21}{entries:9.0f}"
        for f in flag_sets:
            ns, _ = results[f][(case, impl)]
            line += f"  {per_entry(results[f], case, impl, calls[f]):18.4f} {ns / 1e3:8.2f}"
        print(line)

    print(f"\n# {args.cc} {flag_sets[0]}, benchmarks/bench_sparse.py (ns)")
    print("[cost]")
    for key, v in cost_table(first).items():
        print(f"{key} = {fmt_cost(v)}")
    if qemu_msg:
        print(f"\n{qemu_msg} (emulated timings are meaningless and not shown)")
    if vec:
        print()
        print("\n".join(vec))
    return 0


def g_samples_note(args) -> str:
    if args.quick:
        return "3 batches (quick mode, not for the cost model)"
    return f"101 batches of >= 0.1 ms, lowest of {max(1, args.repeat)} runs"


if __name__ == "__main__":
    sys.exit(main())
