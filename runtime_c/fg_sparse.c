/* fg_sparse.c - sparse factor kernels (C99, no heap, no stdio).
 *
 * A factorized layer applies a chain of sparse factors S (m x n); each kernel
 * comes with uint16_t (_u16) and int32_t (_i32) column indices. Both variants
 * share one always-inlined body that takes a literal `wide` flag, so each
 * exported function is specialized for its index type.
 *
 * How this gets fast without -ffast-math or -march
 * -------------------------------------------------
 * No floating-point reduction is ever reassociated by the compiler: every
 * output is a fixed, documented sequence of multiply-adds (below); what gets
 * vectorized are independent outputs (the 16 rows of a BSR panel, the rows of
 * an ELL block, the columns of an spmm chunk).
 *   - Fixed-size register blocks, fully unrolled (FG_UNROLL_WIDE): the accumulator
 *     arrays are scalarized and gcc's SLP vectorizer (on at -O2 since gcc 12)
 *     packs them into vector registers, following the def-use chains back from
 *     the stores of the results. Those stores therefore go straight to the
 *     output (bias added in the same expression); a partial last BSR panel
 *     goes through a local buffer whose stores play the same role. The
 *     activation follows in place as a short rolled loop (fg_act_vec) that
 *     the loop vectorizer if-converts; SLP does not vectorize branches.
 *     fg_dense.c's style (FG_VL-long loops left rolled for the loop vectorizer)
 *     measured 20-60 % slower here with gcc 12 -O3: loop distribution turns the
 *     accumulator zeroing into memset calls, unroll-and-jam fuses the short
 *     tail loops into half-width code with accumulators in memory, and the
 *     accumulators round-trip through the stack between loops.
 *   - Loops over nonzeros / blocks hide their induction variable or bound from
 *     the loop vectorizer with an empty asm (FG_OPAQUE, no instruction): without
 *     -ffast-math and without FMA hardware, gcc -O3 would otherwise "vectorize"
 *     them as in-order (fold-left) reductions, several times slower (seen with
 *     int32 indices). CSR rows stay scalar with 4 independent partial sums.
 *   - fmaf() where the target has a hardware FMA (gcc does not contract a*b+c
 *     in ISO mode); plain a*b+c with clang, which contracts it itself.
 *   - Offsets are size_t; column indices are read as ints (they are < n).
 * The assembly can be checked with benchmarks/bench_sparse.py --vec-report.
 *
 * Kernels and summation orders (deterministic for a given target config; all
 * sums start from +0.0f, bias is added last, then the activation):
 *   fg_bsr16_matvec: per panel of 16 rows, FG_KSPLIT interleaved 16-wide
 *     partial accumulators, each block one broadcast x value times 16
 *     contiguous values. With nb blocks q0 .. q0+nb-1 and Q = nb - nb % FG_KSPLIT,
 *       s_r = sum_{i < Q, i % FG_KSPLIT == r} values[q0+i] x[cols[q0+i]]  (increasing i)
 *       t   = sum_{Q <= i < nb} values[q0+i] x[cols[q0+i]]
 *       y   = act(((s_0 + s_1 + ... + s_{FG_KSPLIT-1}) + t) + bias)   (left to right)
 *     FG_KSPLIT = 4 with AVX + FMA and on AArch64, 2 with SSE2 (16 xmm
 *     registers) or AVX without FMA (whose separate multiply and add need more
 *     registers: with 4, gcc -O3 left 3/4 of the panel scalar), 1 on 32-bit ARM
 *     without NEON float math (scalar VFP). A partial last panel is computed
 *     16 rows wide (values are 0 past m) and stored for rows < m.
 *   fg_bsr8_matvec: the same with panels of 8 rows (blocks of 8x1).
 *   fg_csr_matvec: FG_CSR_SPLIT = 4 partial sums per row, same formula with
 *     the row's nonzeros in place of blocks; rows of the vectors outermost.
 *   fg_ell_matvec: blocks of FG_ER rows kept in registers across all k slots;
 *     y = act(sum_{s<k} data[s*m+i] x[idx[s*m+i]] (increasing s) + bias).
 *     When m % FG_ER != 0 the last block is shifted to end at m (a few rows are
 *     recomputed with the identical operation sequence); m < FG_ER goes row by
 *     row in the same order.
 *   fg_csr_spmm: Y[i][c] = act(sum_p data[p] X[idx[p]][c] (increasing p) + bias[i]);
 *     columns in chunks of FG_SW held in registers across the row's whole
 *     nonzero list, then chunks of 16, the last one shifted to end at ncols;
 *     ncols < 16 uses a variable-width loop in the same order. Chunks are the
 *     outer loop so that all rows reuse one chunk of X from cache.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "fg_kernel.h"
#include "fg_runtime.h"

/* ---- compiler / target configuration ----------------------------------- */


/* FG_KSPLIT: partial accumulators of a BSR panel. FG_SW: columns of the wide
 * spmm chunk (8 vector accumulators; 16 of AArch64's 32 registers). FG_ER:
 * rows of an ELL block. 32-bit ARM: float math stays scalar (NEON is not IEEE
 * and gcc does not use it without -funsafe-math-optimizations), so the blocks
 * are sized for the 32 single-precision VFP registers. */
#if defined(__arm__) && !defined(__aarch64__) && !(defined(__ARM_NEON) && defined(__FAST_MATH__))
#define FG_KSPLIT 1
#define FG_SW 16
#define FG_ER 16
#elif (defined(__AVX__) && defined(__FMA__)) || defined(__aarch64__)
#define FG_KSPLIT 4
#define FG_SW 64
#define FG_ER 32
#elif defined(__AVX__) /* without FMA: mul + add per update */
#define FG_KSPLIT 2
#define FG_SW 64
#define FG_ER 32
#else /* SSE2, other 128-bit SIMD */
#define FG_KSPLIT 2
#define FG_SW 32
#define FG_ER 32
#endif
#define FG_BR FG_BSR_ROWS /* rows per BSR panel (16)       */
#define FG_CSR_SPLIT 4    /* partial sums per CSR row      */
#define FG_SN 16          /* columns of the narrow spmm chunk */

/* column index p of either index array; `wide` is a literal at every call */
FG_INLINE int fg_ix(int wide, const uint16_t *i16, const int32_t *i32, size_t p)
{
    return wide ? (int)i32[p] : (int)i16[p];
}

/* BSR: one inlined copy of the panel loop for full and partial panels, writing
 * through a pointer to y or to the local buffer (gcc: with two copies, -O3 left
 * the partial panel's copy scalar), or two copies (clang: faster there). */
#if defined(__clang__)
#define FG_BSR_ONE_SITE 0
#else
#define FG_BSR_ONE_SITE 1
#endif

/* ELL's gathered loads: clang builds vectors of them from scalar loads and
 * shuffles without AVX2 gathers, slower than its scalar code */
#if defined(__clang__) && !defined(__AVX2__)
#define FG_GATHER _Pragma("clang loop vectorize(disable) unroll(full)")
#else
#define FG_GATHER
#endif

/* zeros standing in for a NULL bias (BSR panels, ELL blocks) */
static const float fg_zeros[FG_ER > FG_BR ? FG_ER : FG_BR];

/* ---- epilogue -------------------------------------------------------------- */

static float fg_act1(float v, int act, float a, float b)
{
    switch (act) {
    case FG_ACT_RELU:
        return v < 0.0f ? 0.0f : v;
    case FG_ACT_LEAKY:
        return v >= 0.0f ? v : a * v;
    case FG_ACT_CLIP: {
        const float t = v < a ? a : v;
        return t > b ? b : t;
    }
    case FG_ACT_SILU:
        return fg_siluf(v);
    default:
        return v;
    }
}

/* ---- BSR matvec (16x1 and 8x1 blocks) -------------------------------------- */

/* out[0..br) = sum over blocks q0..q1-1 of values[q] x[cols[q]] + bias16[0..br);
 * br (16 or 8, <= FG_BR) is a literal at every call, so the register blocks stay
 * fixed-size after inlining */
FG_INLINE void fg_bsr_panel(int wide, int br, const float *restrict x, const uint16_t *c16,
                            const int32_t *c32, const float *restrict values, int q0, int q1,
                            const float *restrict bias16, float *restrict out)
{
    float s[FG_KSPLIT][FG_BR];
    float t[FG_BR];
    const int nb = q1 > q0 ? q1 - q0 : 0;
    int qk = q0 + (nb - nb % FG_KSPLIT);
    int r, e, q;
    FG_UNROLL_WIDE
    for (r = 0; r < FG_KSPLIT; ++r) {
        FG_UNROLL_WIDE
        for (e = 0; e < br; ++e)
            s[r][e] = 0.0f;
    }
    FG_UNROLL_WIDE
    for (e = 0; e < br; ++e)
        t[e] = 0.0f;
    for (q = q0; q < qk; q += FG_KSPLIT) {
        const float *restrict w = values + (size_t)q * (size_t)br;
        float xr[FG_KSPLIT];
        FG_OPAQUE(qk);
        FG_UNROLL_WIDE
        for (r = 0; r < FG_KSPLIT; ++r)
            xr[r] = x[fg_ix(wide, c16, c32, (size_t)q + (size_t)r)];
        FG_UNROLL_WIDE
        for (r = 0; r < FG_KSPLIT; ++r) {
            FG_UNROLL_WIDE
            for (e = 0; e < br; ++e)
                s[r][e] = FG_FMA(xr[r], w[r * br + e], s[r][e]);
        }
    }
    for (q = qk; q < q1; ++q) {
        const float *restrict w = values + (size_t)q * (size_t)br;
        const float xq = x[fg_ix(wide, c16, c32, (size_t)q)];
        FG_OPAQUE(q1);
        FG_UNROLL_WIDE
        for (e = 0; e < br; ++e)
            t[e] = FG_FMA(xq, w[e], t[e]);
    }
    FG_UNROLL_WIDE
    for (e = 0; e < br; ++e) {
        float u = s[0][e];
        FG_UNROLL_WIDE
        for (r = 1; r < FG_KSPLIT; ++r)
            u += s[r][e];
        out[e] = (u + t[e]) + bias16[e];
    }
}

FG_INLINE void fg_bsr_body(int wide, int br, int rows, int m, int n, const int32_t *panel_ptr,
                             const uint16_t *c16, const int32_t *c32, const float *values,
                             const float *x, float *y, const float *bias, int act, float a,
                             float b)
{
    const int np = (m + br - 1) / br;
    int r, p, j;
    if (rows <= 0 || m <= 0)
        return;
    for (r = 0; r < rows; ++r) {
        const float *xr = x + (size_t)r * (size_t)(n > 0 ? n : 0);
        float *yr = y + (size_t)r * (size_t)m;
        for (p = 0; p < np; ++p) {
            const int i0 = p * br;
            const int cnt = m - i0 < br ? m - i0 : br;
            float v[FG_BR], bz[FG_BR]; /* a partial last panel goes through these */
#if FG_BSR_ONE_SITE
            float *dst = cnt == br ? yr + i0 : v;
            const float *bp = !bias ? fg_zeros : (cnt == br ? bias + i0 : bz);
            if (cnt < br && bias) {
                for (j = 0; j < br; ++j)
                    bz[j] = j < cnt ? bias[i0 + j] : 0.0f;
            }
            fg_bsr_panel(wide, br, xr, c16, c32, values, panel_ptr[p], panel_ptr[p + 1], bp, dst);
#else
            if (cnt == br) {
                fg_bsr_panel(wide, br, xr, c16, c32, values, panel_ptr[p], panel_ptr[p + 1],
                             bias ? bias + i0 : fg_zeros, yr + i0);
            } else {
                for (j = 0; j < br; ++j)
                    bz[j] = bias && j < cnt ? bias[i0 + j] : 0.0f;
                fg_bsr_panel(wide, br, xr, c16, c32, values, panel_ptr[p], panel_ptr[p + 1], bz,
                             v);
            }
#endif
            if (cnt == br) {
                fg_act_vec(yr + i0, br, act, a, b);
            } else {
                for (j = 0; j < cnt; ++j)
                    yr[i0 + j] = fg_act1(v[j], act, a, b);
            }
        }
    }
}

void fg_bsr16_matvec_u16(int rows, int m, int n, const int32_t *panel_ptr, const uint16_t *cols,
                         const float *values, const float *x, float *y, const float *bias,
                         int act, float a, float b)
{
    fg_bsr_body(0, FG_BR, rows, m, n, panel_ptr, cols, NULL, values, x, y, bias, act, a, b);
}

void fg_bsr16_matvec_i32(int rows, int m, int n, const int32_t *panel_ptr, const int32_t *cols,
                         const float *values, const float *x, float *y, const float *bias,
                         int act, float a, float b)
{
    fg_bsr_body(1, FG_BR, rows, m, n, panel_ptr, NULL, cols, values, x, y, bias, act, a, b);
}

void fg_bsr8_matvec_u16(int rows, int m, int n, const int32_t *panel_ptr, const uint16_t *cols,
                        const float *values, const float *x, float *y, const float *bias,
                        int act, float a, float b)
{
    fg_bsr_body(0, FG_BSR8_ROWS, rows, m, n, panel_ptr, cols, NULL, values, x, y, bias, act, a,
                b);
}

void fg_bsr8_matvec_i32(int rows, int m, int n, const int32_t *panel_ptr, const int32_t *cols,
                        const float *values, const float *x, float *y, const float *bias,
                        int act, float a, float b)
{
    fg_bsr_body(1, FG_BSR8_ROWS, rows, m, n, panel_ptr, NULL, cols, values, x, y, bias, act, a,
                b);
}

/* ---- CSR matvec ------------------------------------------------------------ */

/* sum_{p in [lo, hi)} d[p] x[idx[p]] with FG_CSR_SPLIT = 4 partial sums */
FG_INLINE float fg_csr_dot(int wide, const float *restrict x, const uint16_t *i16,
                           const int32_t *i32, const float *restrict d, size_t lo, size_t hi)
{
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f, t = 0.0f;
    size_t p = lo;
    if (hi > lo) {
        const size_t h4 = lo + (hi - lo) / FG_CSR_SPLIT * FG_CSR_SPLIT;
        for (; p < h4; p += FG_CSR_SPLIT) {
            FG_OPAQUE(p);
            s0 = FG_FMA(d[p], x[fg_ix(wide, i16, i32, p)], s0);
            s1 = FG_FMA(d[p + 1], x[fg_ix(wide, i16, i32, p + 1)], s1);
            s2 = FG_FMA(d[p + 2], x[fg_ix(wide, i16, i32, p + 2)], s2);
            s3 = FG_FMA(d[p + 3], x[fg_ix(wide, i16, i32, p + 3)], s3);
        }
        for (; p < hi; ++p) {
            FG_OPAQUE(p);
            t = FG_FMA(d[p], x[fg_ix(wide, i16, i32, p)], t);
        }
    }
    return (((s0 + s1) + s2) + s3) + t;
}

FG_INLINE void fg_csr_matvec_body(int wide, int rows, int m, int n, const int32_t *indptr,
                                  const uint16_t *i16, const int32_t *i32, const float *data,
                                  const float *x, float *y, const float *bias, int act, float a,
                                  float b)
{
    int r, i;
    if (rows <= 0 || m <= 0)
        return;
    for (r = 0; r < rows; ++r) {
        const float *xr = x + (size_t)r * (size_t)(n > 0 ? n : 0);
        float *yr = y + (size_t)r * (size_t)m;
        for (i = 0; i < m; ++i) {
            const float s = fg_csr_dot(wide, xr, i16, i32, data, (size_t)indptr[i],
                                       (size_t)indptr[i + 1]);
            yr[i] = fg_act1(bias ? s + bias[i] : s, act, a, b);
        }
    }
}

void fg_csr_matvec_u16(int rows, int m, int n, const int32_t *indptr, const uint16_t *indices,
                       const float *data, const float *x, float *y, const float *bias, int act,
                       float a, float b)
{
    fg_csr_matvec_body(0, rows, m, n, indptr, indices, NULL, data, x, y, bias, act, a, b);
}

void fg_csr_matvec_i32(int rows, int m, int n, const int32_t *indptr, const int32_t *indices,
                       const float *data, const float *x, float *y, const float *bias, int act,
                       float a, float b)
{
    fg_csr_matvec_body(1, rows, m, n, indptr, NULL, indices, data, x, y, bias, act, a, b);
}

/* ---- ELL matvec (slot-major) ---------------------------------------------- */

/* out[e] = sum_s data[s*m + i0+e] x[idx[s*m + i0+e]] + bias_blk[e], e < FG_ER */
FG_INLINE void fg_ell_block(int wide, const float *restrict x, const uint16_t *i16,
                            const int32_t *i32, const float *restrict data, size_t m, int k,
                            size_t i0, const float *restrict bias_blk, float *restrict out)
{
    float acc[FG_ER];
    int s, e;
    FG_UNROLL_WIDE
    for (e = 0; e < FG_ER; ++e)
        acc[e] = 0.0f;
    for (s = 0; s < k; ++s) {
        const size_t base = (size_t)s * m + i0;
        const float *restrict d = data + base;
        FG_UNROLL_WIDE FG_GATHER
        for (e = 0; e < FG_ER; ++e)
            acc[e] = FG_FMA(d[e], x[fg_ix(wide, i16, i32, base + (size_t)e)], acc[e]);
    }
    FG_UNROLL_WIDE
    for (e = 0; e < FG_ER; ++e)
        out[e] = acc[e] + bias_blk[e];
}

FG_INLINE void fg_ell_body(int wide, int rows, int m, int n, int k, const uint16_t *i16,
                           const int32_t *i32, const float *data, const float *x, float *y,
                           const float *bias, int act, float a, float b)
{
    const size_t mm = (size_t)(m > 0 ? m : 0);
    int r, i0, j, s;
    if (rows <= 0 || m <= 0)
        return;
    if (k < 0)
        k = 0;
    for (r = 0; r < rows; ++r) {
        const float *xr = x + (size_t)r * (size_t)(n > 0 ? n : 0);
        float *yr = y + (size_t)r * mm;
        if (m < FG_ER) {
            for (j = 0; j < m; ++j) {
                float acc = 0.0f;
                for (s = 0; s < k; ++s) {
                    const size_t e = (size_t)s * mm + (size_t)j;
                    FG_OPAQUE(s);
                    acc = FG_FMA(data[e], xr[fg_ix(wide, i16, i32, e)], acc);
                }
                yr[j] = fg_act1(bias ? acc + bias[j] : acc, act, a, b);
            }
            continue;
        }
        for (i0 = 0; i0 < m; i0 += FG_ER) {
            /* last block: shifted to end at m (identical sums for the overlap) */
            const int b0 = i0 + FG_ER <= m ? i0 : m - FG_ER;
            fg_ell_block(wide, xr, i16, i32, data, mm, k, (size_t)b0,
                         bias ? bias + b0 : fg_zeros, yr + b0);
            fg_act_vec(yr + b0, FG_ER, act, a, b);
        }
    }
}

void fg_ell_matvec_u16(int rows, int m, int n, int k, const uint16_t *indices, const float *data,
                       const float *x, float *y, const float *bias, int act, float a, float b)
{
    fg_ell_body(0, rows, m, n, k, indices, NULL, data, x, y, bias, act, a, b);
}

void fg_ell_matvec_i32(int rows, int m, int n, int k, const int32_t *indices, const float *data,
                       const float *x, float *y, const float *bias, int act, float a, float b)
{
    fg_ell_body(1, rows, m, n, k, NULL, indices, data, x, y, bias, act, a, b);
}

/* ---- CSR x dense (spmm) ----------------------------------------------------- */

/* Y[i][c0 .. c0+W) for all rows i < m, W = FG_SW or FG_SN (a literal) */
FG_INLINE void fg_spmm_chunk(int W, int wide, int m, size_t ncols, size_t c0,
                             const int32_t *indptr, const uint16_t *i16, const int32_t *i32,
                             const float *restrict data, const float *restrict X,
                             float *restrict Y, const float *bias, int act, float a,
                             float b)
{
    int i, c;
    for (i = 0; i < m; ++i) {
        const size_t lo = (size_t)indptr[i], hi = (size_t)indptr[i + 1];
        float *restrict yo = Y + (size_t)i * ncols + c0;
        float acc[FG_SW], bi;
        size_t p;
        FG_UNROLL_WIDE
        for (c = 0; c < W; ++c)
            acc[c] = 0.0f;
        for (p = lo; p < hi; ++p) {
            const float d = data[p];
            const float *restrict xr = X + (size_t)fg_ix(wide, i16, i32, p) * ncols + c0;
            FG_UNROLL_WIDE
            for (c = 0; c < W; ++c)
                acc[c] = FG_FMA(d, xr[c], acc[c]);
        }
        bi = bias ? bias[i] : 0.0f; /* read late: one register less in the loop */
        FG_UNROLL_WIDE
        for (c = 0; c < W; ++c)
            yo[c] = acc[c] + bi;
        fg_act_vec(yo, W, act, a, b);
    }
}

/* ncols < 16: variable width, same summation order */
static void fg_spmm_narrow(int wide, int m, size_t ncols, const int32_t *indptr,
                           const uint16_t *i16, const int32_t *i32, const float *data,
                           const float *X, float *Y, const float *bias, int act, float a,
                           float b)
{
    int i;
    size_t c, p;
    for (i = 0; i < m; ++i) {
        const size_t lo = (size_t)indptr[i], hi = (size_t)indptr[i + 1];
        const float bi = bias ? bias[i] : 0.0f;
        float acc[FG_SN];
        for (c = 0; c < ncols; ++c)
            acc[c] = 0.0f;
        for (p = lo; p < hi; ++p) {
            const float d = data[p];
            const float *xr = X + (size_t)(wide ? (int)i32[p] : (int)i16[p]) * ncols;
            for (c = 0; c < ncols; ++c)
                acc[c] = FG_FMA(d, xr[c], acc[c]);
        }
        for (c = 0; c < ncols; ++c)
            Y[(size_t)i * ncols + c] = fg_act1(acc[c] + bi, act, a, b);
    }
}

FG_INLINE void fg_spmm_body(int wide, int m, int ncols, const int32_t *indptr,
                            const uint16_t *i16, const int32_t *i32, const float *data,
                            const float *X, float *Y, const float *bias, int act, float a, float b)
{
    size_t nc, c0 = 0;
    if (m <= 0 || ncols <= 0)
        return;
    nc = (size_t)ncols;
    if (nc < FG_SN) {
        fg_spmm_narrow(wide, m, nc, indptr, i16, i32, data, X, Y, bias, act, a, b);
        return;
    }
    for (; c0 + FG_SW <= nc; c0 += FG_SW)
        fg_spmm_chunk(FG_SW, wide, m, nc, c0, indptr, i16, i32, data, X, Y, bias, act, a, b);
    for (; c0 < nc; c0 += FG_SN) {
        /* last chunk: shifted to end at ncols (identical sums for the overlap) */
        const size_t s0 = c0 + FG_SN <= nc ? c0 : nc - FG_SN;
        fg_spmm_chunk(FG_SN, wide, m, nc, s0, indptr, i16, i32, data, X, Y, bias, act, a, b);
    }
}

void fg_csr_spmm_u16(int m, int ncols, const int32_t *indptr, const uint16_t *indices,
                     const float *data, const float *X, float *Y, const float *bias, int act,
                     float a, float b)
{
    fg_spmm_body(0, m, ncols, indptr, indices, NULL, data, X, Y, bias, act, a, b);
}

void fg_csr_spmm_i32(int m, int ncols, const int32_t *indptr, const int32_t *indices,
                     const float *data, const float *X, float *Y, const float *bias, int act,
                     float a, float b)
{
    fg_spmm_body(1, m, ncols, indptr, NULL, indices, data, X, Y, bias, act, a, b);
}
