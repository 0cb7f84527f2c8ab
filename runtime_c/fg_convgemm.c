/* fg_convgemm.c - the packed-panel GEMM of fg_conv (C99, no heap, no stdio).
 *
 *   y[m*ldy + n] = act(bias[m] + sum_r A[m][r] * B(r, n)),  m < M, n < N,
 *
 * A: the constant filter matrix packed in blocks of FG_MBLOCK rows at compile
 * time (fg_gemm_a's layout); B: the patch matrix, whose row r = (cz, y, x)
 * starts at b + cz*czstep + y*ystep + x*xstep (fg_taps: the im2col matrix,
 * the input itself for a pointwise convolution, or fg_conv's row-shifted row
 * matrix). Blocking: for each block of FG_PNR consecutive output positions
 * (the panel: R x FG_PNR floats, which stays in L2 while every block of output
 * channels streams over it), register tiles of FG_PMR output channels x the
 * panel's width run down the whole reduction. With AVX-512 a full panel is
 * read in place, through a table of the R row offsets (FG_PDIRECT: copying it
 * cost more than the scattered rows, measured); otherwise, and for the last,
 * narrower block, the panel is first copied into contiguous, zero-padded
 * rows.
 *
 * Micro-kernels (the same operation sequence in each, so the same results
 * wherever both use fused multiply-adds):
 *   - AVX-512F: 8 channels (two packed blocks) x 3 zmm = 24 accumulators,
 *     3 panel loads and 8 broadcasts per 24 FMAs; 4-channel tiles for the
 *     last block, 1..3 vectors for the last positions (masked stores);
 *     the last block of 1..4 positions as channel-lane matrix-vector
 *     products (fg_coln);
 *   - NEON (AArch64): 8 channels x 3 q registers = 24 accumulators, the
 *     channels multiplied by lane (fmla by element) from one 4-channel load;
 *   - plain C (every other target): 4 channels x FG_GNV vectors of FG_VL,
 *     fixed-trip loops the compiler vectorizes without -ffast-math.
 * Summation order per output: acc = sum of A[m][r] * B(r, n) in increasing r
 * (one accumulator, fused when the target has FMA), then act(acc + bias[m]);
 * fg_conv's other paths use the same order, except fg_coln (4 partial sums).
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "fg_kernel.h"
#include "fg_runtime.h"

#if defined(__AVX512F__)
#define FG_GVL 16
#define FG_GNV 3
#elif defined(__arm__) && !defined(__aarch64__) && !(defined(__ARM_NEON) && defined(__FAST_MATH__))
#define FG_GVL 1 /* scalar VFP (see fg_dense.c): 4 x 4 tile in 32 s registers */
#define FG_GNV 4
#elif defined(__AVX__)
#define FG_GVL 8 /* 4 x 3 ymm accumulators + 3 B + 1 broadcast = 16 registers */
#define FG_GNV 3
#elif defined(__aarch64__) && defined(__ARM_NEON)
#define FG_GVL 4 /* 32 q registers: 8 x 3 accumulators + 2 A + 3 B (fg_pkn) */
#define FG_GNV 3
#elif defined(__aarch64__)
#define FG_GVL 4 /* 32 q registers: 4 x 4 tile */
#define FG_GNV 4
#else
#define FG_GVL 4 /* SSE2: 4 x 3 xmm accumulators + 3 B + 1 broadcast */
#define FG_GNV 3
#endif
#define FG_PNR (FG_GVL * FG_GNV) /* positions per panel */

#if FG_PNR > FG_CONV_PANEL_MAX
#error "panel wider than FG_CONV_PANEL_MAX"
#endif

/* ---- panel packing ------------------------------------------------------ */

/* p[r*w + j] = B(r, j) for j < nr, 0 for nr <= j < w, b already at column n0 */
static void fg_panel_pack(const float *b, const fg_taps *t, int nr, int w, float *restrict p)
{
    int cz, ky, kx, j;
#if defined(__AVX512F__)
    const __mmask16 lm[3] = {
        (__mmask16)(nr >= 16 ? 0xFFFF : (1u << nr) - 1u),
        (__mmask16)(nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (1u << (nr - 16)) - 1u),
        (__mmask16)(nr >= 48 ? 0xFFFF : nr <= 32 ? 0 : (1u << (nr - 32)) - 1u)};
    const int nv = w / 16;
    (void)j;
    for (cz = 0; cz < t->ncz; ++cz) {
        size_t yo = 0;
        int ph = 0;
        for (ky = 0; ky < t->kh; ++ky, yo = fg_taps_next_y(t, yo, &ph))
            for (kx = 0; kx < t->kw; ++kx, p += w) {
                const float *q = b + (size_t)cz * t->czstep + yo + (size_t)kx * t->xstep;
                int v;
                /* masked lanes are not read (no fault past the row's end) */
                for (v = 0; v < nv; ++v)
                    _mm512_storeu_ps(p + 16 * v, _mm512_maskz_loadu_ps(lm[v], q + 16 * v));
            }
    }
#else
    for (cz = 0; cz < t->ncz; ++cz) {
        size_t yo = 0;
        int ph = 0;
        for (ky = 0; ky < t->kh; ++ky, yo = fg_taps_next_y(t, yo, &ph))
            for (kx = 0; kx < t->kw; ++kx, p += w) {
                const float *restrict q = b + (size_t)cz * t->czstep + yo + (size_t)kx * t->xstep;
                if (nr == FG_PNR) {
                    for (j = 0; j < FG_PNR; ++j)
                        p[j] = q[j];
                } else {
                    for (j = 0; j < nr; ++j)
                        p[j] = q[j];
                    for (; j < w; ++j)
                        p[j] = 0.0f;
                }
            }
    }
#endif
}

/* ---- AVX-512 micro-kernel ------------------------------------------------ */
#if defined(__AVX512F__)

/* entry k of the row-offset table (stored bytewise in the float scratch) */
FG_INLINE size_t fg_off(const unsigned char *offs, int k)
{
    size_t o;
    memcpy(&o, offs + (size_t)k * sizeof o, sizeof o);
    return o;
}

/* MR (4 or 8) channels x NV (1..3) vectors; a: first packed block, ab: floats
 * between blocks (FG_MBLOCK * R); p: panel of row stride 16*NV. Stores rows <
 * MR of y (row stride ldy), the first nr columns. */
FG_INLINE void fg_pk16(const float *restrict a, size_t ab, const float *restrict p,
                       const unsigned char *offs, int R, int MR, int NV, int rows, int nr, float *y,
                       size_t ldy, const float *bias, int act, float pa, float pb)
{
    __m512 c[8][3];
    const float *restrict a1 = a + ab;
    const __m512 va = _mm512_set1_ps(pa), vb = _mm512_set1_ps(pb);
    __mmask16 last;
    int i, v, k;
    FG_UNROLL
    for (i = 0; i < MR; ++i) {
        FG_UNROLL
        for (v = 0; v < NV; ++v)
            c[i][v] = _mm512_setzero_ps();
    }
    for (k = 0; k < R; ++k) {
        __m512 bv[3];
        FG_UNROLL
        for (v = 0; v < NV; ++v)
            bv[v] = _mm512_loadu_ps((offs ? p + fg_off(offs, k) : p + 16 * NV * k) + 16 * v);
        FG_UNROLL
        for (i = 0; i < 4; ++i) {
            const __m512 ai = _mm512_set1_ps(a[i]);
            FG_UNROLL
            for (v = 0; v < NV; ++v)
                c[i][v] = _mm512_fmadd_ps(ai, bv[v], c[i][v]);
        }
        if (MR == 8) {
            FG_UNROLL
            for (i = 0; i < 4; ++i) {
                const __m512 ai = _mm512_set1_ps(a1[i]);
                FG_UNROLL
                for (v = 0; v < NV; ++v)
                    c[4 + i][v] = _mm512_fmadd_ps(ai, bv[v], c[4 + i][v]);
            }
            a1 += FG_MBLOCK;
        }
        a += FG_MBLOCK;
    }
    last = (__mmask16)(nr - 16 * (NV - 1) >= 16 ? 0xFFFF : (1u << (nr - 16 * (NV - 1))) - 1u);
    FG_UNROLL
    for (i = 0; i < MR; ++i) {
        float *o = y + (size_t)i * ldy;
        __m512 br;
        if (i >= rows)
            break;
        br = _mm512_set1_ps(bias ? bias[i] : 0.0f);
        FG_UNROLL
        for (v = 0; v < NV - 1; ++v)
            _mm512_storeu_ps(o + 16 * v, fg_act16(_mm512_add_ps(c[i][v], br), act, va, vb));
        _mm512_mask_storeu_ps(o + 16 * (NV - 1), last,
                              fg_act16(_mm512_add_ps(c[i][NV - 1], br), act, va, vb));
    }
}

typedef void (*fg_pk_fn)(const float *a, size_t ab, const float *p, const unsigned char *offs, int R,
                         int rows, int nr, float *y, size_t ldy, const float *bias, int act,
                         float pa, float pb);
#define FG_PK_FN(name, MR, NV, OFFS)                                                             \
    static void name(const float *a, size_t ab, const float *p, const unsigned char *offs, int R,      \
                     int rows, int nr, float *y, size_t ldy, const float *bias, int act,         \
                     float pa, float pb)                                                         \
    {                                                                                            \
        fg_pk16(a, ab, p, OFFS ? offs : NULL, R, MR, NV, rows, nr, y, ldy, bias, act, pa, pb);   \
    }
FG_PK_FN(fg_pk_m8v1, 8, 1, 0)
FG_PK_FN(fg_pk_m8v2, 8, 2, 0)
FG_PK_FN(fg_pk_m8v3, 8, 3, 0)
FG_PK_FN(fg_pk_m4v1, 4, 1, 0)
FG_PK_FN(fg_pk_m4v2, 4, 2, 0)
FG_PK_FN(fg_pk_m4v3, 4, 3, 0)
FG_PK_FN(fg_pk_m8v3o, 8, 3, 1)
FG_PK_FN(fg_pk_m4v3o, 4, 3, 1)
/* index nv - 1 for packed panels, FG_GNV for a full panel read in place */
static const fg_pk_fn fg_pk8[4] = {fg_pk_m8v1, fg_pk_m8v2, fg_pk_m8v3, fg_pk_m8v3o};
static const fg_pk_fn fg_pk4[4] = {fg_pk_m4v1, fg_pk_m4v2, fg_pk_m4v3, fg_pk_m4v3o};
/* The last block when it holds 1..4 positions (N = 48q + 1 on 7x7 planes,
 * 48q + 4 on 14x14 ones): matrix-vector products with the channels in the
 * lanes instead of a 16-lane tile with 1..4 useful lanes. The NP columns
 * B(r, n) are first copied out (R floats each, zero padded to a multiple of
 * 4, into the panel); a packed block holds 4 channels x 4 consecutive taps in
 * 16 floats, so one vector FMA with a column's 4 taps (each repeated 4 times)
 * covers all of them; QB blocks x NP columns of accumulators. Order per
 * output: 4 partial sums (taps r = j mod 4, in increasing r), added as
 * (s0 + s1) + (s2 + s3); then act(sum + bias) as elsewhere. */
FG_INLINE void fg_coln_blocks(const float *a0, size_t ab, const float *col, int R, size_t R4,
                              int nq, int QB, int NP, __m128 *sums)
{
    const size_t r4 = (size_t)(R & ~3);
    /* the last group of taps: A masked (past R is the next block, or the end) */
    const __mmask16 am = (__mmask16)((1u << (4 * (R & 3))) - 1u);
    const __m512i rep4 = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    __m512 acc[8][4];
    size_t r;
    int q, j;
    FG_UNROLL
    for (q = 0; q < QB; ++q) {
        FG_UNROLL
        for (j = 0; j < NP; ++j)
            acc[q][j] = _mm512_setzero_ps();
    }
    for (r = 0; r < R4; r += 4) {
        const __mmask16 m = r < r4 ? (__mmask16)0xFFFF : am;
        __m512 bv[4];
        FG_UNROLL
        for (j = 0; j < NP; ++j)
            bv[j] = _mm512_permutexvar_ps(
                rep4, _mm512_castps128_ps512(_mm_loadu_ps(col + (size_t)j * R4 + r)));
        FG_UNROLL
        for (q = 0; q < QB; ++q) {
            if (q < nq) {
                const __m512 av = _mm512_maskz_loadu_ps(m, a0 + (size_t)q * ab + 4 * r);
                FG_UNROLL
                for (j = 0; j < NP; ++j)
                    acc[q][j] = _mm512_fmadd_ps(av, bv[j], acc[q][j]);
            }
        }
    }
    FG_UNROLL
    for (q = 0; q < QB; ++q) {
        if (q >= nq)
            break;
        FG_UNROLL
        for (j = 0; j < NP; ++j) {
            const __m128 s01 = _mm_add_ps(_mm512_extractf32x4_ps(acc[q][j], 0),
                                          _mm512_extractf32x4_ps(acc[q][j], 1));
            const __m128 s23 = _mm_add_ps(_mm512_extractf32x4_ps(acc[q][j], 2),
                                          _mm512_extractf32x4_ps(acc[q][j], 3));
            sums[q * 4 + j] = _mm_add_ps(s01, s23);
        }
    }
}

/* col[j*R4 + r] = B(r, j) for j < np, r < R; 0 for R <= r < R4 (their A lanes are
 * masked to 0); b already at the first column */
static void fg_coln_cols(const float *b, const fg_taps *t, int np, size_t R4, float *col)
{
    int cz, ky, kx, j;
    size_t r;
    for (j = 0; j < np; ++j) {
        float *cj = col + (size_t)j * R4;
        r = 0;
        for (cz = 0; cz < t->ncz; ++cz) {
            size_t yo = 0;
            int ph = 0;
            for (ky = 0; ky < t->kh; ++ky, yo = fg_taps_next_y(t, yo, &ph))
                for (kx = 0; kx < t->kw; ++kx)
                    cj[r++] = b[(size_t)cz * t->czstep + yo + (size_t)kx * t->xstep + (size_t)j];
        }
        for (; r < R4; ++r)
            cj[r] = 0.0f;
    }
}

/* outputs of the np columns copied by fg_coln_cols for the packed blocks [blo, bhi)
 * (channels 4*blo .. min(4*bhi, M)) */
static void fg_coln_run(const float *Ap, const float *col, int R, int M, int blo, int bhi,
                        int np, float *y, size_t ldy, const float *bias, int act, float pa,
                        float pb)
{
    const size_t ab = (size_t)FG_MBLOCK * (size_t)R, R4 = (size_t)(R + 3) / 4 * 4;
    const __m512 va = _mm512_set1_ps(pa), vb = _mm512_set1_ps(pb);
    const int QB = np == 1 ? 8 : 4; /* QB x NP accumulators */
    int b0, q, i, j;
    for (b0 = blo; b0 < bhi; b0 += QB) {
        const int nq = bhi - b0 < QB ? bhi - b0 : QB;
        const float *a0 = Ap + (size_t)b0 * ab;
        __m128 sums[8 * 4];
        float sv[4];
        switch (np) {
        case 1:
            fg_coln_blocks(a0, ab, col, R, R4, nq, 8, 1, sums);
            break;
        case 2:
            fg_coln_blocks(a0, ab, col, R, R4, nq, 4, 2, sums);
            break;
        case 3:
            fg_coln_blocks(a0, ab, col, R, R4, nq, 4, 3, sums);
            break;
        default:
            fg_coln_blocks(a0, ab, col, R, R4, nq, 4, 4, sums);
            break;
        }
        for (q = 0; q < nq; ++q)
            for (j = 0; j < np; ++j) {
                _mm_storeu_ps(sv, sums[q * 4 + j]);
                for (i = 0; i < 4 && 4 * (b0 + q) + i < M; ++i) {
                    const int m = 4 * (b0 + q) + i;
                    const float v = sv[i] + (bias ? bias[m] : 0.0f);
                    y[(size_t)m * ldy + (size_t)j] =
                        _mm512_cvtss_f32(fg_act16(_mm512_set1_ps(v), act, va, vb));
                }
            }
    }
}

#define FG_PMR 8
/* full panels are read in place through a row-offset table (no copy) */
#define FG_PDIRECT 1

/* ---- NEON micro-kernel (AArch64) ----------------------------------------- */
#elif defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>

/* MR (4 or 8) channels x NV (1..3) vectors of 4 positions from the packed
 * panel p (row stride 4*NV); a: first packed block, ab: floats between blocks.
 * Each step loads a block's 4 channels as one vector and multiplies by lane
 * (fmla by element): acc += a[i] * b, fused, in increasing k, as fg_pkc. */
#define FG_PKN_ROW(c, av, lane, bv, NV)                                                         \
    do {                                                                                         \
        int v_;                                                                                  \
        FG_UNROLL                                                                                \
        for (v_ = 0; v_ < NV; ++v_)                                                              \
            c[lane][v_] = vfmaq_laneq_f32(c[lane][v_], bv[v_], av, lane);                        \
    } while (0)

FG_INLINE void fg_pkn(const float *restrict a, size_t ab, const float *restrict p, int R, int MR,
                      int NV, int rows, int nr, float *y, size_t ldy, const float *bias, int act,
                      float pa, float pb)
{
    float32x4_t c0[4][3], c1[4][3];
    int i, v, k;
    FG_UNROLL
    for (i = 0; i < 4; ++i) {
        FG_UNROLL
        for (v = 0; v < 3; ++v) {
            c0[i][v] = vdupq_n_f32(0.0f);
            c1[i][v] = vdupq_n_f32(0.0f);
        }
    }
    for (k = 0; k < R; ++k) {
        float32x4_t bv[3];
        const float32x4_t a0 = vld1q_f32(a);
        FG_UNROLL
        for (v = 0; v < NV; ++v)
            bv[v] = vld1q_f32(p + 4 * v);
        FG_PKN_ROW(c0, a0, 0, bv, NV);
        FG_PKN_ROW(c0, a0, 1, bv, NV);
        FG_PKN_ROW(c0, a0, 2, bv, NV);
        FG_PKN_ROW(c0, a0, 3, bv, NV);
        if (MR == 8) {
            const float32x4_t a1 = vld1q_f32(a + ab);
            FG_PKN_ROW(c1, a1, 0, bv, NV);
            FG_PKN_ROW(c1, a1, 1, bv, NV);
            FG_PKN_ROW(c1, a1, 2, bv, NV);
            FG_PKN_ROW(c1, a1, 3, bv, NV);
        }
        a += FG_MBLOCK;
        p += 4 * NV;
    }
    /* unrolled: constant indices keep the accumulators in registers */
    FG_UNROLL
    for (i = 0; i < MR; ++i) {
        float t[FG_PNR];
        float32x4_t br;
        if (i >= rows)
            break;
        br = vdupq_n_f32(bias ? bias[i] : 0.0f);
        FG_UNROLL
        for (v = 0; v < NV; ++v)
            vst1q_f32(t + 4 * v, vaddq_f32(i < 4 ? c0[i & 3][v] : c1[i & 3][v], br));
        memcpy(y + (size_t)i * ldy, t, (size_t)nr * sizeof(float));
        fg_act_vec(y + (size_t)i * ldy, nr, act, pa, pb);
    }
}

typedef void (*fg_pk_fn)(const float *a, size_t ab, const float *p, const unsigned char *offs,
                         int R, int rows, int nr, float *y, size_t ldy, const float *bias,
                         int act, float pa, float pb);
#define FG_PK_FN(name, MR, NV)                                                                   \
    static void name(const float *a, size_t ab, const float *p, const unsigned char *offs,      \
                     int R, int rows, int nr, float *y, size_t ldy, const float *bias, int act,  \
                     float pa, float pb)                                                         \
    {                                                                                            \
        (void)offs;                                                                              \
        fg_pkn(a, ab, p, R, MR, NV, rows, nr, y, ldy, bias, act, pa, pb);                        \
    }
FG_PK_FN(fg_pk_m8v1, 8, 1)
FG_PK_FN(fg_pk_m8v2, 8, 2)
FG_PK_FN(fg_pk_m8v3, 8, 3)
FG_PK_FN(fg_pk_m4v1, 4, 1)
FG_PK_FN(fg_pk_m4v2, 4, 2)
FG_PK_FN(fg_pk_m4v3, 4, 3)
static const fg_pk_fn fg_pk8[3] = {fg_pk_m8v1, fg_pk_m8v2, fg_pk_m8v3};
static const fg_pk_fn fg_pk4[3] = {fg_pk_m4v1, fg_pk_m4v2, fg_pk_m4v3};
#define FG_PMR 8
#define FG_PDIRECT 0

/* ---- plain-C micro-kernel ------------------------------------------------ */
#else

typedef float fg_gacc[4][FG_GNV][FG_GVL];

/* 4 channels (one packed block) x NV vectors of FG_GVL positions */
FG_INLINE void fg_pkc(const float *restrict a, const float *restrict p, int R, int NV, int rows,
                      int nr, float *y, size_t ldy, const float *bias, int act, float pa,
                      float pb)
{
    fg_gacc c;
    int i, j, v, k;
    FG_NOUNROLL
    for (j = 0; j < FG_GVL; ++j) {
        FG_UNROLL
        for (i = 0; i < 4; ++i) {
            FG_UNROLL
            for (v = 0; v < FG_GNV; ++v)
                c[i][v][j] = 0.0f;
        }
    }
    for (k = 0; k < R; ++k) {
        const float x0 = a[0], x1 = a[1], x2 = a[2], x3 = a[3];
        FG_NOUNROLL
        for (j = 0; j < FG_GVL; ++j) {
            FG_UNROLL
            for (v = 0; v < NV; ++v) {
                const float bv = FG_BREG(p[v * FG_GVL + j]);
                c[0][v][j] = FG_FMA(x0, bv, c[0][v][j]);
                c[1][v][j] = FG_FMA(x1, bv, c[1][v][j]);
                c[2][v][j] = FG_FMA(x2, bv, c[2][v][j]);
                c[3][v][j] = FG_FMA(x3, bv, c[3][v][j]);
            }
        }
        a += FG_MBLOCK;
        p += FG_GVL * NV;
    }
    for (i = 0; i < rows; ++i) {
        float t[FG_PNR];
        const float br = bias ? bias[i] : 0.0f;
        for (v = 0; v < NV; ++v) {
            FG_NOUNROLL
            for (j = 0; j < FG_GVL; ++j)
                t[v * FG_GVL + j] = c[i][v][j] + br;
        }
        memcpy(y + (size_t)i * ldy, t, (size_t)nr * sizeof(float));
        fg_act_vec(y + (size_t)i * ldy, nr, act, pa, pb);
    }
}

typedef void (*fg_pk_fn)(const float *a, size_t ab, const float *p, const unsigned char *offs,
                         int R, int rows, int nr, float *y, size_t ldy, const float *bias,
                         int act, float pa, float pb);
#define FG_PK_FN(name, NV)                                                                       \
    static void name(const float *a, size_t ab, const float *p, const unsigned char *offs,      \
                     int R, int rows, int nr, float *y, size_t ldy, const float *bias, int act,  \
                     float pa, float pb)                                                         \
    {                                                                                            \
        (void)ab;                                                                                \
        (void)offs;                                                                              \
        fg_pkc(a, p, R, NV, rows, nr, y, ldy, bias, act, pa, pb);                                \
    }
FG_PK_FN(fg_pk_v1, 1)
FG_PK_FN(fg_pk_v2, 2)
FG_PK_FN(fg_pk_v3, 3)
#if FG_GNV > 3
FG_PK_FN(fg_pk_v4, 4)
static const fg_pk_fn fg_pk4[FG_GNV] = {fg_pk_v1, fg_pk_v2, fg_pk_v3, fg_pk_v4};
#else
static const fg_pk_fn fg_pk4[FG_GNV] = {fg_pk_v1, fg_pk_v2, fg_pk_v3};
#endif
#define FG_PMR 4
#define FG_PDIRECT 0
#endif

/* ---- driver --------------------------------------------------------------- */

/* one tile: rows (<= FG_PMR) channels from packed row am on, nr positions of the
 * panel p (fi: fg_pk8 / fg_pk4 index) */
FG_INLINE void fg_ptile(int fi, const float *am, size_t ab, const float *p,
                        const unsigned char *offs, int R, int rows, int nr, float *ym, size_t ldy,
                        const float *bm, int act, float pa, float pb)
{
#if FG_PMR == 8
    if (rows > 4) {
        fg_pk8[fi](am, ab, p, offs, R, rows, nr, ym, ldy, bm, act, pa, pb);
        return;
    }
#endif
    fg_pk4[fi](am, ab, p, offs, R, rows, nr, ym, ldy, bm, act, pa, pb);
}

#if FG_PDIRECT
/* offset of each of the R rows of B (bytewise, size_t) at offs (NULL: none);
 * returns the largest */
static size_t fg_offsets(const fg_taps *t, unsigned char *offs)
{
    int cz, ky, kx, r = 0;
    size_t o = 0;
    size_t last = 0;
    for (cz = 0; cz < t->ncz; ++cz) {
        size_t yo = 0;
        int ph = 0;
        for (ky = 0; ky < t->kh; ++ky, yo = fg_taps_next_y(t, yo, &ph))
            for (kx = 0; kx < t->kw; ++kx, ++r) {
                o = (size_t)cz * t->czstep + yo + (size_t)kx * t->xstep;
                if (offs)
                    memcpy(offs + (size_t)r * sizeof o, &o, sizeof o);
                if (o > last)
                    last = o;
            }
    }
    return last;
}

/* Channels per block of the channel-outer order: a multiple of FG_PMR and of
 * fg_coln_run's 4*QB channels. */
#define FG_PMB 32

/* The channel-outer order, for filter matrices larger than the patch matrix
 * (resnet18's 512x4608 filters on 7x7 planes: 9.4 MB, against a 0.4 MB row
 * matrix): each block of FG_PMB channels runs over every panel while its rows
 * of A are still in L2, so A is read from memory once instead of once per
 * panel (the position-outer order below rereads all of A for each panel,
 * and the last block of 1..4 positions, fg_coln, once more). Only with full
 * panels read in place (FG_PDIRECT); the last panel, if any, is copied once
 * (tail <= 32 positions: 32R floats, then the offset table at 46R). */
static void fg_pgemm_mouter(const float *Ap, const float *b, const fg_taps *t, int M, int N,
                            float *y, size_t ldy, const float *bias, int act, float pa, float pb,
                            float *panel)
{
    const int R = t->ncz * t->kh * t->kw;
    const size_t ab = (size_t)FG_MBLOCK * (size_t)R, R4 = (size_t)(R + 3) / 4 * 4;
    const int nfull = N / FG_PNR, tail = N - nfull * FG_PNR, tv = (tail + FG_GVL - 1) / FG_GVL;
    unsigned char *offs = (unsigned char *)(panel + (size_t)(FG_CONV_PANEL_MAX - 2) * R);
    int m0, m, n0;
    fg_offsets(t, offs);
    if (tail > 4)
        fg_panel_pack(b + (size_t)nfull * FG_PNR, t, tail, tv * FG_GVL, panel);
    else if (tail > 0)
        fg_coln_cols(b + (size_t)nfull * FG_PNR, t, tail, R4, panel);
    for (m0 = 0; m0 < M; m0 += FG_PMB) {
        const int m1 = M - m0 < FG_PMB ? M : m0 + FG_PMB;
        for (n0 = 0; n0 < nfull * FG_PNR; n0 += FG_PNR)
            for (m = m0; m < m1; m += FG_PMR)
                fg_ptile(FG_GNV, Ap + (size_t)(m / FG_MBLOCK) * ab, ab, b + n0, offs, R,
                         m1 - m < FG_PMR ? m1 - m : FG_PMR, FG_PNR,
                         y + (size_t)m * ldy + (size_t)n0, ldy, bias ? bias + m : NULL, act, pa,
                         pb);
        n0 = nfull * FG_PNR;
        if (tail > 4) {
            for (m = m0; m < m1; m += FG_PMR)
                fg_ptile(tv - 1, Ap + (size_t)(m / FG_MBLOCK) * ab, ab, panel, offs, R,
                         m1 - m < FG_PMR ? m1 - m : FG_PMR, tail,
                         y + (size_t)m * ldy + (size_t)n0, ldy, bias ? bias + m : NULL, act, pa,
                         pb);
        } else if (tail > 0) {
            fg_coln_run(Ap, panel, R, M, m0 / FG_MBLOCK, (m1 + FG_MBLOCK - 1) / FG_MBLOCK, tail,
                        y + n0, ldy, bias, act, pa, pb);
        }
    }
}
#endif

void fg_pgemm(const float *Ap, const float *b, const fg_taps *t, int M, int N, float *y,
              size_t ldy, const float *bias, int act, float pa, float pb, float *panel)
{
    const int R = t->ncz * t->kh * t->kw;
    const size_t ab = (size_t)FG_MBLOCK * (size_t)R;
    unsigned char *offs = (unsigned char *)panel;
    int n0, m0;
#if FG_PDIRECT
    {
        /* A (packed, floats) against the span of B the panels read */
        const size_t afl = (size_t)((M + FG_MBLOCK - 1) / FG_MBLOCK) * ab;
        const size_t bfl = fg_offsets(t, NULL) + (size_t)N;
        const int tail = N % FG_PNR;
        if (N > FG_PNR && afl > bfl && tail <= 2 * FG_GVL) {
            fg_pgemm_mouter(Ap, b, t, M, N, y, ldy, bias, act, pa, pb, panel);
            return;
        }
    }
    fg_offsets(t, offs);
#endif
    for (n0 = 0; n0 < N; n0 += FG_PNR) {
        const int nr = N - n0 < FG_PNR ? N - n0 : FG_PNR;
        const int nv = (nr + FG_GVL - 1) / FG_GVL;
        const int direct = FG_PDIRECT && nr == FG_PNR;
        const int fi = direct ? FG_GNV : nv - 1;
        const float *p = direct ? b + n0 : panel;
#if FG_PDIRECT
        if (nr <= 4) {
            const size_t R4 = (size_t)(R + 3) / 4 * 4;
            fg_coln_cols(b + n0, t, nr, R4, panel);
            fg_coln_run(Ap, panel, R, M, 0, (M + FG_MBLOCK - 1) / FG_MBLOCK, nr, y + n0, ldy,
                        bias, act, pa, pb);
            continue;
        }
#endif
        if (!direct)
            fg_panel_pack(b + n0, t, nr, nv * FG_GVL, panel);
        for (m0 = 0; m0 < M; m0 += FG_PMR)
            fg_ptile(fi, Ap + (size_t)(m0 / FG_MBLOCK) * ab, ab, p, offs, R,
                     M - m0 < FG_PMR ? M - m0 : FG_PMR, nr, y + (size_t)m0 * ldy + (size_t)n0,
                     ldy, bias ? bias + m0 : NULL, act, pa, pb);
    }
}
