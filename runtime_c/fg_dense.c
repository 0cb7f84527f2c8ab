/* fg_dense.c - fully connected layers and GEMM (C99, no heap, no stdio).
 *
 * How this gets fast without -ffast-math or -march
 * -------------------------------------------------
 * Every hot loop is a fixed-trip-count loop over FG_PANEL / FG_NR contiguous
 * columns updating a small local accumulator array (axpy form):
 *     for (j = 0; j < FG_NR; ++j) c[i][j] = fma(a_i, b[j], c[i][j]);
 * No reduction is ever reassociated: each output is a fixed sequence of
 * multiply-adds, so the compiler may vectorize across columns without
 * -ffast-math. Register blocking:
 *   - fg_gemm_a / fg_matmul / fg_dense with >= 4 rows: a 4 x FG_NR tile
 *     (FG_NR = 16: 8 ymm accumulators with AVX, 16 q registers on AArch64,
 *     16 xmm with SSE2), each loaded vector of B shared by 4 rows; a last
 *     block of 1 or 2 rows uses a 2 x FG_NR tile.
 *   - fg_dense with M == 1 (GEMV, memory bound): FG_KSPLIT = 4 interleaved
 *     partial sums per column to hide the add/FMA latency.
 * Compiler specifics (measured with gcc 12 and clang 14, see the report in
 * benchmarks/bench_kernels.py):
 *   - gcc: the loops over the vectors of a row / over rows carry
 *     `#pragma GCC unroll 16` (FG_UNROLL) and the FG_VL-long column loops
 *     `#pragma GCC unroll 1` (FG_NOUNROLL). So at -O2 and -O3 alike the column
 *     loop is what the loop vectorizer sees (one vector iteration, the
 *     accumulator arrays become registers), and the k loop is never the
 *     innermost loop when it runs: otherwise gcc -O3 without FMA hardware
 *     "vectorizes" k as an in-order (fold-left) reduction, 5x slower.
 *   - clang: no pragmas; its unroller and loop vectorizer handle these loops.
 *   - gcc tuned for AMD Zen (-march=native on Zen, -mtune=znverN) folds the B
 *     load into every FMA of the tile (4 loads instead of 1, halving speed);
 *     FG_BREG materializes the B vector once with a `+ 0.0f` (not an IEEE
 *     identity, so it is kept; it only turns -0.0f into +0.0f).
 *   - fmaf() is used explicitly when the target has a hardware FMA, because
 *     gcc in ISO mode (-std=c99) does not contract a*b+c. clang contracts
 *     a*b+c itself (-ffp-contract=on), so plain a*b+c is used there.
 *
 * Summation order (deterministic for a given target configuration):
 *   - 4-row tiles (fg_gemm_a, fg_matmul, fg_dense rows m < M - M % 4):
 *     acc = sum_k a[m][k] * b[k][n] in increasing k, then y = act(acc + bias).
 *   - fg_dense single rows (M == 1, and the last M % 4 rows):
 *     with K4 = K - K % FG_KSPLIT, s_r = sum_{k < K4, k % FG_KSPLIT == r} x[k] B[k][n]
 *     (increasing k), t = sum_{K4 <= k < K} x[k] B[k][n];
 *     y = act(((((s_0 + s_1) + s_2) + s_3) + t) + bias)   (FG_KSPLIT = 4;
 *     FG_KSPLIT = 1 on 32-bit ARM, whose float math is scalar VFP unless the
 *     user enables -funsafe-math-optimizations).
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "fg_kernel.h"
#include "fg_runtime.h"

/* ---- compiler / target configuration ----------------------------------- */


/* Register blocking. FG_VL = floats per SIMD register the compiler will use
 * for float math without special flags; FG_NR = columns of the GEMM tile.
 * Every inner loop runs exactly FG_VL iterations over independent columns,
 * so it vectorizes into exactly one vector iteration (no loop, no epilogue:
 * fine even for gcc -O2's very-cheap cost model) and the accumulator arrays
 * become vector registers; the loops over the FG_NR / FG_VL vectors of a row
 * and over rows are unrolled by FG_UNROLL before vectorization.
 * 32-bit ARM: gcc does not vectorize float math without
 * -funsafe-math-optimizations (NEON is not IEEE), so the blocks are sized
 * for the 32 scalar VFP registers there. */
#if defined(__arm__) && !defined(__aarch64__) && !(defined(__ARM_NEON) && defined(__FAST_MATH__))
#define FG_VL 1
#define FG_NR 4
#define FG_KSPLIT 1
#elif defined(__AVX__)
#define FG_VL 8
#define FG_NR 16
#define FG_KSPLIT 4
#else /* SSE2, NEON (AArch64, or ARM with -ffast-math), other 128-bit SIMD */
#define FG_VL 4
#define FG_NR 16
#define FG_KSPLIT 4
#endif
#define FG_NV (FG_NR / FG_VL)      /* vectors per tile row        */
#define FG_PV (FG_PANEL / FG_VL)   /* vectors per fg_dense panel  */

/* k-chunk of the narrow (N < FG_NR) GEMM path, which copies B to the stack */
#define FG_KC 64

/* ---- epilogue ------------------------------------------------------------ */

typedef float fg_tile[4][FG_NV][FG_VL];

/* Store rows x cols of the tile c to C (row stride ldc), adding bias_row[i]
 * (per output row, may be NULL) or bias_col[j] (per output column, may be
 * NULL; only its first `cols` entries are read), then the activation. */
static void fg_store_tile(fg_tile c, int rows, int cols, float *C, size_t ldc,
                          const float *bias_row, const float *bias_col, int act, float a, float b)
{
    float bc[FG_NR];
    int i, j, v;
    for (j = 0; j < FG_NR; ++j)
        bc[j] = 0.0f;
    if (bias_col) {
        for (j = 0; j < cols; ++j)
            bc[j] = bias_col[j];
    }
    for (i = 0; i < rows; ++i) {
        float t[FG_NR];
        float *restrict out = C + (size_t)i * ldc;
        const float br = bias_row ? bias_row[i] : 0.0f;
        for (v = 0; v < FG_NV; ++v) {
            FG_NOUNROLL
            for (j = 0; j < FG_VL; ++j)
                t[v * FG_VL + j] = c[i][v][j] + (bc[v * FG_VL + j] + br);
        }
        fg_act_vec(t, FG_NR, act, a, b);
        if (cols == FG_NR) {
            for (j = 0; j < FG_NR; ++j)
                out[j] = t[j];
        } else {
            for (j = 0; j < cols; ++j)
                out[j] = t[j];
        }
    }
}

/* ---- 4 x FG_NR register tile --------------------------------------------- */

FG_INLINE void fg_tile_zero(fg_tile c)
{
    int i, j, v;
    FG_NOUNROLL
    for (j = 0; j < FG_VL; ++j) {
        FG_UNROLL
        for (i = 0; i < 4; ++i) {
            FG_UNROLL
            for (v = 0; v < FG_NV; ++v)
                c[i][v][j] = 0.0f;
        }
    }
}

/* c[i][.] += sum_{k < K} A(i, k) * b[k*ldb + 0 .. FG_NR), A(i, k) = a[i][k * aks],
 * in increasing k. Must be inlined into a caller whose c is a local array so
 * that the accumulators live in registers. */
/* Two-row version for the last block when it has at most 2 rows. */
FG_INLINE void fg_tile2(const float *const a[4], size_t aks, const float *restrict b, size_t ldb,
                        int K, fg_tile c)
{
    const float *restrict a0 = a[0];
    const float *restrict a1 = a[1];
    int j, k, v;
    for (k = 0; k < K; ++k) {
        const float *restrict q = b + (size_t)k * ldb;
        const size_t ka = (size_t)k * aks;
        const float x0 = a0[ka], x1 = a1[ka];
        FG_NOUNROLL
        for (j = 0; j < FG_VL; ++j) {
            FG_UNROLL
            for (v = 0; v < FG_NV; ++v) {
                const float bv = FG_BREG(q[v * FG_VL + j]);
                c[0][v][j] = FG_FMA(x0, bv, c[0][v][j]);
                c[1][v][j] = FG_FMA(x1, bv, c[1][v][j]);
            }
        }
    }
}

FG_INLINE void fg_tile4(const float *const a[4], size_t aks, const float *restrict b, size_t ldb,
                        int K, fg_tile c)
{
    const float *restrict a0 = a[0];
    const float *restrict a1 = a[1];
    const float *restrict a2 = a[2];
    const float *restrict a3 = a[3];
    int j, k, v;
    for (k = 0; k < K; ++k) {
        const float *restrict q = b + (size_t)k * ldb;
        const size_t ka = (size_t)k * aks;
        const float x0 = a0[ka], x1 = a1[ka], x2 = a2[ka], x3 = a3[ka];
        FG_NOUNROLL
        for (j = 0; j < FG_VL; ++j) {
            FG_UNROLL
            for (v = 0; v < FG_NV; ++v) {
                const float bv = FG_BREG(q[v * FG_VL + j]);
                c[0][v][j] = FG_FMA(x0, bv, c[0][v][j]);
                c[1][v][j] = FG_FMA(x1, bv, c[1][v][j]);
                c[2][v][j] = FG_FMA(x2, bv, c[2][v][j]);
                c[3][v][j] = FG_FMA(x3, bv, c[3][v][j]);
            }
        }
    }
}

/* One column strip of FG_NR columns for every block of 4 rows:
 *   C[m][j] = act(sum_k A(m, k) * b[k*ldb + j] + bias),  j < cols <= FG_NR,
 * where b has FG_NR readable columns. Row i of block mb of A starts at
 * A + mb*a_bs + min(i, rows-1)*a_rs, element stride aks (rows past M repeat
 * the last row; they are computed but not stored). */
static void fg_gemm_strip(const float *A, size_t a_bs, size_t a_rs, size_t aks, int M, int K,
                          const float *b, size_t ldb, int cols, float *C, size_t ldc,
                          const float *bias_row, const float *bias_col, int act, float a, float bb)
{
    int m0;
    for (m0 = 0; m0 < M; m0 += 4) {
        const int rows = M - m0 < 4 ? M - m0 : 4;
        const float *ablk = A + (size_t)(m0 / 4) * a_bs;
        const float *ap[4];
        fg_tile c;
        int i;
        for (i = 0; i < 4; ++i)
            ap[i] = ablk + (size_t)(i < rows ? i : rows - 1) * a_rs;
        fg_tile_zero(c);
        if (rows <= 2)
            fg_tile2(ap, aks, b, ldb, K, c);
        else
            fg_tile4(ap, aks, b, ldb, K, c);
        fg_store_tile(c, rows, cols, C + (size_t)m0 * ldc, ldc, bias_row ? bias_row + m0 : NULL,
                      bias_col, act, a, bb);
    }
}

/* Narrow right-hand side (N < FG_NR): B is copied, FG_KC rows at a time, into
 * a zero-padded FG_NR-wide stack buffer; same summation order as the strip. */
static void fg_gemm_narrow(const float *A, size_t a_bs, size_t a_rs, size_t aks, int M, int K,
                           const float *B, size_t ldb, int N, float *C, size_t ldc,
                           const float *bias_row, int act, float a, float bb)
{
    float bt[FG_KC * FG_NR];
    int m0, j;
    for (j = 0; j < FG_KC * FG_NR; ++j)
        bt[j] = 0.0f;
    for (m0 = 0; m0 < M; m0 += 4) {
        const int rows = M - m0 < 4 ? M - m0 : 4;
        const float *ablk = A + (size_t)(m0 / 4) * a_bs;
        const float *ap[4];
        fg_tile c;
        int i, k0;
        fg_tile_zero(c);
        for (k0 = 0; k0 < K; k0 += FG_KC) {
            const int kc = K - k0 < FG_KC ? K - k0 : FG_KC;
            int k;
            for (k = 0; k < kc; ++k)
                memcpy(bt + (size_t)k * FG_NR, B + (size_t)(k0 + k) * ldb,
                       (size_t)N * sizeof(float));
            for (i = 0; i < 4; ++i)
                ap[i] = ablk + (size_t)(i < rows ? i : rows - 1) * a_rs + (size_t)k0 * aks;
            if (rows <= 2)
                fg_tile2(ap, aks, bt, FG_NR, kc, c);
            else
                fg_tile4(ap, aks, bt, FG_NR, kc, c);
        }
        fg_store_tile(c, rows, N, C + (size_t)m0 * ldc, ldc, bias_row ? bias_row + m0 : NULL,
                      NULL, act, a, bb);
    }
}

/* C (M x N, row stride N) = act(A B + bias_row) for A given by (a_bs, a_rs,
 * aks) as in fg_gemm_strip and B (K x N, row stride N). */
static void fg_gemm_rows(const float *A, size_t a_bs, size_t a_rs, size_t aks, int M, int K,
                         const float *B, int N, float *C, const float *bias_row, int act, float a,
                         float bb)
{
    int n0;
    if (M <= 0 || N <= 0)
        return;
    if (N < FG_NR) {
        fg_gemm_narrow(A, a_bs, a_rs, aks, M, K, B, (size_t)N, N, C, (size_t)N, bias_row, act, a,
                       bb);
        return;
    }
    for (n0 = 0; n0 < N; n0 += FG_NR) {
        /* last strip: shift it left to end at N (recomputes a few columns
         * with the identical operation sequence, so the result is the same) */
        const int s0 = n0 + FG_NR <= N ? n0 : N - FG_NR;
        fg_gemm_strip(A, a_bs, a_rs, aks, M, K, B + s0, (size_t)N, FG_NR, C + s0, (size_t)N,
                      bias_row, NULL, act, a, bb);
    }
}

void fg_gemm_a(const float *Ap, const float *B, float *C, int M, int K, int N, const float *bias,
               int act, float a, float b)
{
    if (K < 0)
        K = 0;
    /* packed: block mb at Ap + mb*K*4, row i at +i, element stride 4 */
    fg_gemm_rows(Ap, (size_t)K * FG_MBLOCK, 1, FG_MBLOCK, M, K, B, N, C, bias, act, a, b);
}

void fg_matmul(const float *a, const float *b, float *y, int batch, int M, int K, int N,
               size_t stride_a, size_t stride_b)
{
    int i;
    if (K < 0)
        K = 0;
    for (i = 0; i < batch; ++i) {
        const float *ai = a + (size_t)i * stride_a;
        const float *bi = b + (size_t)i * stride_b;
        float *yi = y + (size_t)i * (size_t)M * (size_t)N;
        fg_gemm_rows(ai, 4 * (size_t)K, (size_t)K, 1, M, K, bi, N, yi, NULL, FG_ACT_NONE, 0.0f,
                     0.0f);
    }
}

/* ---- fg_dense ------------------------------------------------------------ */

/* One row x against one packed panel: FG_KSPLIT interleaved partial sums and
 * a separate accumulator for the K % FG_KSPLIT leftover (keeping the leftover
 * out of the main accumulators lets gcc keep them in registers). */
FG_INLINE void fg_dense_row_panel(const float *restrict x, const float *restrict p, int K,
                                  float *restrict out)
{
    float s[FG_KSPLIT][FG_PV][FG_VL];
    float t[FG_PV][FG_VL];
    const int K4 = K - K % FG_KSPLIT;
    int r, v, j, k;
    FG_NOUNROLL
    for (j = 0; j < FG_VL; ++j) {
        FG_UNROLL
        for (r = 0; r < FG_KSPLIT; ++r) {
            FG_UNROLL
            for (v = 0; v < FG_PV; ++v)
                s[r][v][j] = 0.0f;
        }
    }
    for (k = 0; k < K4; k += FG_KSPLIT) {
        const float *restrict q = p + (size_t)k * FG_PANEL;
        float xr[FG_KSPLIT];
        FG_UNROLL
        for (r = 0; r < FG_KSPLIT; ++r)
            xr[r] = x[k + r];
        FG_NOUNROLL
        for (j = 0; j < FG_VL; ++j) {
            FG_UNROLL
            for (r = 0; r < FG_KSPLIT; ++r) {
                FG_UNROLL
                for (v = 0; v < FG_PV; ++v)
                    s[r][v][j] = FG_FMA(xr[r], q[r * FG_PANEL + v * FG_VL + j], s[r][v][j]);
            }
        }
    }
    FG_NOUNROLL
    for (j = 0; j < FG_VL; ++j) {
        FG_UNROLL
        for (v = 0; v < FG_PV; ++v)
            t[v][j] = 0.0f;
    }
    for (k = K4; k < K; ++k) {
        const float *restrict q = p + (size_t)k * FG_PANEL;
        const float xk = x[k];
        FG_NOUNROLL
        for (j = 0; j < FG_VL; ++j) {
            FG_UNROLL
            for (v = 0; v < FG_PV; ++v)
                t[v][j] = FG_FMA(xk, q[v * FG_VL + j], t[v][j]);
        }
    }
    FG_NOUNROLL
    for (j = 0; j < FG_VL; ++j) {
        FG_UNROLL
        for (v = 0; v < FG_PV; ++v) {
            float u = s[0][v][j];
            FG_UNROLL
            for (r = 1; r < FG_KSPLIT; ++r)
                u += s[r][v][j];
            out[v * FG_VL + j] = u + t[v][j];
        }
    }
}

static void fg_dense_rows1(const float *x, float *y, int m0, int M, int K, int N, const float *Bp,
                           const float *bias, int act, float a, float b)
{
    const int npanel = (N + FG_PANEL - 1) / FG_PANEL;
    int m, p, j;
    for (m = m0; m < M; ++m) {
        const float *xm = x + (size_t)m * (size_t)K;
        float *ym = y + (size_t)m * (size_t)N;
        for (p = 0; p < npanel; ++p) {
            const int n0 = p * FG_PANEL;
            const int cols = N - n0 < FG_PANEL ? N - n0 : FG_PANEL;
            float v[FG_PANEL];
            fg_dense_row_panel(xm, Bp + (size_t)p * (size_t)K * FG_PANEL, K, v);
            if (bias) {
                if (cols == FG_PANEL) {
                    for (j = 0; j < FG_PANEL; ++j)
                        v[j] += bias[n0 + j];
                } else {
                    for (j = 0; j < cols; ++j)
                        v[j] += bias[n0 + j];
                }
            }
            fg_act_vec(v, FG_PANEL, act, a, b);
            if (cols == FG_PANEL) {
                for (j = 0; j < FG_PANEL; ++j)
                    ym[n0 + j] = v[j];
            } else {
                for (j = 0; j < cols; ++j)
                    ym[n0 + j] = v[j];
            }
        }
    }
}

void fg_dense(const float *x, float *y, int M, int K, int N, const float *Bp, const float *bias,
              int act, float a, float b)
{
    const int npanel = (N + FG_PANEL - 1) / FG_PANEL;
    const int M4 = M - M % 4;
    int p;
    if (M <= 0 || N <= 0)
        return;
    if (K < 0)
        K = 0;
    if (M4 > 0) {
        /* blocks of 4 rows: A = x rows (block stride 4K, row stride K, unit
         * element stride), each FG_NR-wide sub-strip of every panel */
        for (p = 0; p < npanel; ++p) {
            int j0;
            for (j0 = 0; j0 < FG_PANEL; j0 += FG_NR) {
                const int n0 = p * FG_PANEL + j0;
                int cols;
                if (n0 >= N)
                    break;
                cols = N - n0 < FG_NR ? N - n0 : FG_NR;
                fg_gemm_strip(x, 4 * (size_t)K, (size_t)K, 1, M4, K,
                              Bp + (size_t)p * (size_t)K * FG_PANEL + j0, FG_PANEL, cols, y + n0,
                              (size_t)N, NULL, bias ? bias + n0 : NULL, act, a, b);
            }
        }
    }
    if (M4 < M)
        fg_dense_rows1(x, y, M4, M, K, N, Bp, bias, act, a, b);
}
