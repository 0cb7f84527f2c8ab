/* fg_conv.c - convolution (C99, no heap, no stdio).
 *
 * fg_conv, per group, with AVX-512 or AArch64 NEON (FG_CONV_PGEMM): the
 * packed-panel GEMM of fg_convgemm.c on the input (pointwise), on the row
 * matrix below (vertical stride 1; with vertical stride 2, its 2-phase form,
 * in bands) or on the im2col matrix (in bands of output rows when it is
 * large). Otherwise (the plain-C path, as fast as
 * the packed GEMM's plain-C micro-kernel with SSE2, measured):
 *   - vertical stride 1 (most convolutions): the row-shifted direct path
 *     below; a small "row matrix" (the im2col of the height-1 convolution,
 *     about kh times smaller than the im2col matrix) is built in the scratch
 *     per output plane, and register tiles of output channels x consecutive
 *     output positions read it at shifted offsets, one per filter row;
 *   - otherwise im2col into the caller's scratch (skipped for pointwise
 *     convolutions, whose input already is the column matrix), then the
 *     packed register-tiled GEMM fg_gemm_a (fg_dense.c).
 *   Bias and activation are fused into the tile epilogues. Both paths compute
 *   each output as acc = sum of the taps in packed-column order (c, z, y, x),
 *   then act(acc + bias).
 * fg_conv_depthwise, AVX-512: small stride-1 "same" planes as one flat row with
 * masked taps read straight from the input (fg_dw_flat); other 2-D strides 1
 * and 2 in register blocks of output rows on aligned, zero-padded copies of
 * the input rows, split by column phase (fg_dw_rows); otherwise (strides 1
 * and 2 along W) blocks of 16 outputs of a row accumulate every tap in a
 * register before one store (fg_dw_avx512).
 * Otherwise: direct form; each output row is initialized with the bias
 * and then updated tap after tap with an axpy over the output row (contiguous
 * input when the stride is 1), in fixed blocks of FG_CB columns that the
 * compiler vectorizes at -O2. Summation order per output: bias, then the taps
 * in (z, y, x) order.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "fg_kernel.h"
#include "fg_runtime.h"


/* gcc -O3 unroll-and-jams the tap loop of the tiles (two taps per iteration:
 * twice the broadcasts, accumulators spilled; 10-15% slower with SSE2 and on
 * 32-bit ARM); the tile functions opt out (same code as -fno-loop-unroll-and-jam). */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8
#define FG_NOJAM __attribute__((optimize("no-loop-unroll-and-jam")))
#else
#define FG_NOJAM
#endif

/* FG_VL: floats per SIMD register the compiler uses without special flags
 * (as in fg_dense.c). Tile: FG_CROWS (2 or 4) output channels x FG_CV vectors.
 *   AVX: 2 x 6 ymm accumulators + 2 broadcasts + 1 B vector (+ the FG_BREG
 *        zero) = 16 registers; a 4-row tile would need 4 broadcasts, leaving
 *        too few registers for 12 accumulators and an unfolded B.
 *   AArch64: 32 q registers, 4 x 4 tile.
 *   32-bit ARM: scalar VFP (see fg_dense.c), 4 x 4 tile in 32 s registers. */
#if defined(__arm__) && !defined(__aarch64__) && !(defined(__ARM_NEON) && defined(__FAST_MATH__))
#define FG_VL 1
#define FG_CROWS 4
#define FG_CV 4
#elif defined(__AVX__)
#define FG_VL 8
#define FG_CROWS 2
#define FG_CV 6
#elif defined(__aarch64__)
#define FG_VL 4
#define FG_CROWS 4
#define FG_CV 4
#else /* SSE2 and other 128-bit SIMD */
#define FG_VL 4
#ifndef FG_CROWS
#define FG_CROWS 2
#endif
#ifndef FG_CV
#define FG_CV 6
#endif
#endif

/* fg_conv through the packed-panel GEMM (fg_convgemm.c): with AVX-512 and
 * with AArch64 NEON, whose micro-kernels it is written for; -DFG_CONV_PGEMM=1
 * selects it with the plain-C micro-kernel elsewhere (tests). */
#if !defined(FG_CONV_PGEMM)
#if defined(__AVX512F__) || (defined(__aarch64__) && defined(__ARM_NEON))
#define FG_CONV_PGEMM 1
#else
#define FG_CONV_PGEMM 0
#endif
#endif

/* most filter rows (kd * kh) of the AVX-512 depthwise kernel */
#define FG_DW_MAXROWS 64

/* columns per fixed-size block of the depthwise row updates */
#define FG_CB 16

static int fg_conv_is_pointwise(const fg_conv_shape *s)
{
    return s->kd == 1 && s->kh == 1 && s->kw == 1 && s->sd == 1 && s->sh == 1 && s->sw == 1 &&
           s->pd == 0 && s->ph == 0 && s->pw == 0 && s->OD == s->D && s->OH == s->H &&
           s->OW == s->W;
}

/* floats of the im2col matrix of one group (0 when pointwise) */
static size_t fg_conv_cols(const fg_conv_shape *s)
{
    if (fg_conv_is_pointwise(s))
        return 0;
    return (size_t)(s->C / s->group) * (size_t)s->kd * (size_t)s->kh * (size_t)s->kw *
           (size_t)s->OD * (size_t)s->OH * (size_t)s->OW;
}

size_t fg_conv_scratch(const fg_conv_shape *s)
{
    const size_t R = (size_t)(s->C / s->group) * (size_t)s->kd * (size_t)s->kh * (size_t)s->kw;
    return fg_conv_cols(s) + R * FG_CONV_PANEL_MAX;
}

/* Short row copies / fills (im2col rows are often 5..30 floats): inline
 * fixed-size blocks instead of loops that gcc would turn into libc calls. */
FG_INLINE void fg_copy8(float *restrict o, const float *restrict xs)
{
    /* straight-line (SLP-vectorized): a copy loop would be turned into a
     * memmove call by gcc's loop distribution, slow for 32 bytes */
    const float t0 = xs[0], t1 = xs[1], t2 = xs[2], t3 = xs[3];
    const float t4 = xs[4], t5 = xs[5], t6 = xs[6], t7 = xs[7];
    o[0] = t0;
    o[1] = t1;
    o[2] = t2;
    o[3] = t3;
    o[4] = t4;
    o[5] = t5;
    o[6] = t6;
    o[7] = t7;
}

FG_INLINE void fg_copy_short(float *restrict o, const float *restrict xs, int n)
{
    int i;
    if (n >= 8) {
        for (i = 0; i + 8 <= n; i += 8)
            fg_copy8(o + i, xs + i);
        if (i < n) /* last block overlaps the previous one: same values */
            fg_copy8(o + n - 8, xs + n - 8);
        return;
    }
    if (n & 4) {
        o[0] = xs[0];
        o[1] = xs[1];
        o[2] = xs[2];
        o[3] = xs[3];
        o += 4;
        xs += 4;
    }
    if (n & 2) {
        o[0] = xs[0];
        o[1] = xs[1];
        o += 2;
        xs += 2;
    }
    if (n & 1)
        o[0] = xs[0];
}

FG_INLINE void fg_zero_short(float *o, int n)
{
    int i;
    if (n >= 8) {
        memset(o, 0, (size_t)n * sizeof(float));
        return;
    }
    for (i = 0; i < n; ++i)
        o[i] = 0.0f;
}

FG_INLINE void fg_zero8(float *o)
{
    o[0] = 0.0f;
    o[1] = 0.0f;
    o[2] = 0.0f;
    o[3] = 0.0f;
    o[4] = 0.0f;
    o[5] = 0.0f;
    o[6] = 0.0f;
    o[7] = 0.0f;
}

/* nr rows of OW floats at o (row stride OW): o[ow] = xs[(ow - lo)*sw] for ow in
 * [lo, hi) and 0 elsewhere, xs advancing by ldx per row. */
/* o[i] = xs[2*i] for i < n (the stride-2 rows of im2col and of the row
 * matrix); with AVX-512, 16 at a time from two masked loads (only elements
 * up to xs[2*(n-1)] are read) and a deinterleave */
FG_INLINE void fg_gather2(float *restrict o, const float *restrict xs, int n)
{
    int i = 0;
#if defined(__AVX512F__)
    const __m512i even =
        _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    for (; i + 16 <= n; i += 16) {
        const int left = 2 * (n - 1 - i) + 1; /* readable floats from xs + 2i */
        const __mmask16 mhi = (__mmask16)(left >= 32 ? 0xFFFF : (1u << (left - 16)) - 1u);
        const __m512 a = _mm512_loadu_ps(xs + 2 * i);
        const __m512 b = _mm512_maskz_loadu_ps(mhi, xs + 2 * i + 16);
        _mm512_storeu_ps(o + i, _mm512_permutex2var_ps(a, even, b));
    }
    if (i < n) { /* the last n - i < 16: masked (rows of 7..15 are common) */
        const int left = 2 * (n - 1 - i) + 1;
        const __mmask16 mlo = (__mmask16)(left >= 16 ? 0xFFFF : (1u << left) - 1u);
        const __mmask16 mhi = (__mmask16)(left > 16 ? (1u << (left - 16)) - 1u : 0u);
        const __m512 a = _mm512_maskz_loadu_ps(mlo, xs + 2 * i);
        const __m512 b = _mm512_maskz_loadu_ps(mhi, xs + 2 * i + 16);
        _mm512_mask_storeu_ps(o + i, (__mmask16)((1u << (n - i)) - 1u),
                              _mm512_permutex2var_ps(a, even, b));
    }
#else
    for (; i < n; ++i)
        o[i] = xs[2 * i];
#endif
}

#if defined(__AVX512F__)
/* o[i] = xs[i] for i < n: whole and masked vectors (memcpy's call costs more
 * than the short rows of the depthwise planes) */
FG_INLINE void fg_copy16(float *o, const float *xs, int n)
{
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(xs + i);
#if defined(__GNUC__)
        /* opaque to gcc's loop distribution, which would make the loop a
         * memcpy call (a call per short row, and vzeroupper) */
        __asm__("" : "+v"(v));
#endif
        _mm512_storeu_ps(o + i, v);
    }
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(o + i, m, _mm512_maskz_loadu_ps(m, xs + i));
    }
}
#endif

static void fg_rows_copy(float *restrict o, const float *restrict xs, size_t ldx, int nr,
                         int OW, int lo, int hi, int sw)
{
    const int n = hi - lo;
    int r, i;
    for (r = 0; r < nr; ++r, o += OW, xs += ldx) {
        for (i = 0; i < lo; ++i)
            o[i] = 0.0f;
        if (sw == 1) {
            fg_copy_short(o + lo, xs, n);
        } else if (sw == 2) {
            fg_gather2(o + lo, xs, n);
        } else {
            for (i = 0; i < n; ++i)
                o[lo + i] = xs[(ptrdiff_t)i * sw];
        }
        for (i = hi; i < OW; ++i)
            o[i] = 0.0f;
    }
}

/* fg_rows_copy for sw == 1, 8 <= hi - lo <= 8*NB, lo <= 8, OW - hi <= 8, in
 * fixed blocks of 8 floats (no inner loop: its exit costs more than a row):
 * the pads by two (overlapping) zero blocks, then NB copy blocks, the last
 * one ending at hi. NB is a compile-time constant. */
FG_INLINE void fg_rows_copy8(float *restrict o, const float *restrict xs, size_t ldx, int nr,
                             int OW, int lo, int hi, int NB)
{
    const int n = hi - lo;
    int r, i;
    for (r = 0; r < nr; ++r, o += OW, xs += ldx) {
        if (lo > 0)
            fg_zero8(o);
        if (hi < OW)
            fg_zero8(o + OW - 8);
        FG_UNROLL
        for (i = 0; i < NB - 1; ++i)
            fg_copy8(o + lo + 8 * i, xs + 8 * i);
        fg_copy8(o + hi - 8, xs + n - 8);
    }
}

/* kept out of line: inlined into fg_rowmat_build, gcc loses the restrict
 * information and copies element by element */
FG_NOINLINE void fg_rows_copy8_2(float *restrict o, const float *restrict xs, size_t ldx, int nr,
                                 int OW, int lo, int hi)
{
    fg_rows_copy8(o, xs, ldx, nr, OW, lo, hi, 2);
}
FG_NOINLINE void fg_rows_copy8_3(float *restrict o, const float *restrict xs, size_t ldx, int nr,
                                 int OW, int lo, int hi)
{
    fg_rows_copy8(o, xs, ldx, nr, OW, lo, hi, 3);
}
FG_NOINLINE void fg_rows_copy8_4(float *restrict o, const float *restrict xs, size_t ldx, int nr,
                                 int OW, int lo, int hi)
{
    fg_rows_copy8(o, xs, ldx, nr, OW, lo, hi, 4);
}

/* nr rows of OW floats at o (row stride OW): o[ow] = xs[(ow - lo)*sw] for ow in
 * [lo, hi) and 0 elsewhere, xs advancing by ldx per row (lo < hi). */
static void fg_rows_fill(float *o, const float *xs, size_t ldx, int nr, int OW, int lo, int hi,
                         int sw)
{
    const int n = hi - lo;
    if (sw != 1 || n < 8 || n > 32 || lo > 8 || OW - hi > 8)
        fg_rows_copy(o, xs, ldx, nr, OW, lo, hi, sw);
    else if (n <= 16)
        fg_rows_copy8_2(o, xs, ldx, nr, OW, lo, hi);
    else if (n <= 24)
        fg_rows_copy8_3(o, xs, ldx, nr, OW, lo, hi);
    else
        fg_rows_copy8_4(o, xs, ldx, nr, OW, lo, hi);
}

/* fg_im2col restricted to the output rows [oh0, oh1) of every plane: columns
 * (od, oh - oh0, ow), OD * (oh1 - oh0) * OW per row */
static void fg_im2col_rows(const fg_conv_shape *s, const float *x, float *cols, int oh0, int oh1)
{
    const int Cg = s->C / s->group;
    const int OW = s->OW, OH = s->OH, OB = oh1 - oh0;
    const size_t HW = (size_t)s->H * (size_t)s->W;
    const size_t DHW = (size_t)s->D * HW;
    const size_t OHW = (size_t)OB * (size_t)OW;
    const size_t S = (size_t)s->OD * OHW;
    /* unit strides and as wide as the input: consecutive output rows read
     * consecutive input rows at a constant offset, so the valid rows of a
     * filter tap are one contiguous copy (plus zeroing of the pad columns) */
    const int flat = s->sw == 1 && s->sh == 1 && OW == s->W;
    int c, kz, ky, kx, od, oh;
    float *out = cols;
    for (c = 0; c < Cg; ++c) {
        const float *xc = x + (size_t)c * DHW;
        for (kz = 0; kz < s->kd; ++kz) {
            for (ky = 0; ky < s->kh; ++ky) {
                const int offy = ky * s->dh - s->ph;
                int ylo, yhi;
                fg_valid_range(OH, s->sh, offy, s->H, &ylo, &yhi);
                /* band rows, relative to oh0 */
                ylo = (ylo > oh0 ? ylo : oh0) - oh0;
                yhi = (yhi < oh1 ? yhi : oh1) - oh0;
                for (kx = 0; kx < s->kw; ++kx) {
                    const int offx = kx * s->dw - s->pw;
                    int lo, hi;
                    fg_valid_range(OW, s->sw, offx, s->W, &lo, &hi);
                    for (od = 0; od < s->OD; ++od) {
                        const int iz = od * s->sd + kz * s->dd - s->pd;
                        float *o = out + (size_t)od * OHW;
                        const float *xz = xc + (size_t)iz * HW;
                        if (iz < 0 || iz >= s->D || ylo >= yhi || lo >= hi) {
                            memset(o, 0, OHW * sizeof(float));
                            continue;
                        }
                        /* output rows whose input row is outside: zero */
                        if (ylo > 0)
                            memset(o, 0, (size_t)ylo * (size_t)OW * sizeof(float));
                        if (yhi < OB)
                            memset(o + (size_t)yhi * (size_t)OW, 0,
                                   (size_t)(OB - yhi) * (size_t)OW * sizeof(float));
                        if (flat) {
                            /* rows ylo..yhi-1, columns lo..hi-1 of the last
                             * row: one copy, then re-zero the pad columns */
                            const size_t first = (size_t)ylo * (size_t)OW + (size_t)lo;
                            const size_t last = (size_t)(yhi - 1) * (size_t)OW + (size_t)hi;
                            const float *src = xz + (size_t)(ylo + oh0 + offy) * (size_t)s->W +
                                               (size_t)(lo + offx);
                            memcpy(o + first, src, (last - first) * sizeof(float));
                            if (lo > 0 || hi < OW) {
                                for (oh = ylo; oh < yhi; ++oh) {
                                    float *orow = o + (size_t)oh * (size_t)OW;
                                    if (lo > 0)
                                        fg_zero_short(orow, lo);
                                    if (hi < OW)
                                        fg_zero_short(orow + hi, OW - hi);
                                }
                            }
                            continue;
                        }
                        /* rows ylo..yhi-1: zero pads, copy (or gather) */
                        fg_rows_fill(o + (size_t)ylo * (size_t)OW,
                                     xz + (size_t)((ylo + oh0) * s->sh + offy) * (size_t)s->W +
                                         ((ptrdiff_t)lo * s->sw + offx),
                                     (size_t)s->sh * (size_t)s->W, yhi - ylo, OW, lo, hi, s->sw);
                    }
                    out += S;
                }
            }
        }
    }
}

void fg_im2col(const fg_conv_shape *s, const float *x, float *cols)
{
    fg_im2col_rows(s, x, cols, 0, s->OH);
}

/* ---- row-shifted implicit GEMM (unit vertical stride) ---------------------
 *
 * With sh == 1, the im2col row of tap (c, z, y, x) restricted to output plane
 * od is, position for position, the im2col row of tap (c, z, 0, x) of the
 * height-1 convolution with Hp = OH + (kh-1)*dh output rows, shifted by y*dh
 * output rows (y*dh*OW floats). So per output plane only that height-1 im2col
 * is built (the row matrix: (C/group)*kd*kw rows of Hp*OW floats, which
 * fits in fg_conv_scratch(s) unless dh > OD*OH), and the GEMM tile reads its
 * B rows at the shifted offsets. A tile is FG_CROWS output channels x nv <=
 * FG_CV vectors of consecutive output positions of the plane; the taps are
 * visited in packed-column order (c, z, y, x), as by fg_gemm_a.
 */

typedef float fg_cacc[FG_CROWS][FG_CV][FG_VL];

/* Geometry of the row matrix as seen by the tile (fg_taps, fg_kernel.h):
 * ncz = (C/group) * kd, czstep = kw * xstep, ystep = dh * OW (the shift of
 * one filter row), xstep = Hp * OW (one row-matrix row). */
typedef fg_taps fg_rowmat;

/* c[i][v] = sum over taps t of a[t*FG_MBLOCK + i] * b[offset(t) + v*FG_VL + 0..FG_VL)
 * for i < rows, v < nv (rows = 2 or 4 and nv are compile-time constants). */
FG_INLINE void fg_ctile(const float *restrict a, const float *restrict b, const fg_rowmat *m,
                        int rows, int nv, fg_cacc c)
{
    int i, j, v, cz, ky, kx;
    (void)rows; /* a compile-time constant; only 2 when FG_CROWS == 2 */
    /* fully unrolled: as a loop, gcc -O3 zeroes a stack copy of c with memset */
    FG_UNROLL
    for (i = 0; i < FG_CROWS; ++i) {
        FG_UNROLL
        for (v = 0; v < FG_CV; ++v) {
            FG_UNROLL
            for (j = 0; j < FG_VL; ++j)
                c[i][v][j] = 0.0f;
        }
    }
    /* every count is >= 1 */
    cz = 0;
    do {
        const float *restrict bc = b + (size_t)cz * m->czstep;
        ky = 0;
        do {
            const float *restrict q = bc + (size_t)ky * m->ystep;
            kx = 0;
            do {
#if FG_CROWS == 4
                if (rows == 4) {
                    const float x0 = a[0], x1 = a[1], x2 = a[2], x3 = a[3];
                    FG_NOUNROLL
                    for (j = 0; j < FG_VL; ++j) {
                        FG_UNROLL
                        for (v = 0; v < nv; ++v) {
                            const float bv = FG_BREG(q[v * FG_VL + j]);
                            c[0][v][j] = FG_FMA(x0, bv, c[0][v][j]);
                            c[1][v][j] = FG_FMA(x1, bv, c[1][v][j]);
                            c[2][v][j] = FG_FMA(x2, bv, c[2][v][j]);
                            c[3][v][j] = FG_FMA(x3, bv, c[3][v][j]);
                        }
                    }
                } else
#endif
                {
                    const float x0 = a[0], x1 = a[1];
                    FG_NOUNROLL
                    for (j = 0; j < FG_VL; ++j) {
                        FG_UNROLL
                        for (v = 0; v < nv; ++v) {
                            const float bv = FG_BREG(q[v * FG_VL + j]);
                            c[0][v][j] = FG_FMA(x0, bv, c[0][v][j]);
                            c[1][v][j] = FG_FMA(x1, bv, c[1][v][j]);
                        }
                    }
                }
                q += m->xstep;
                a += FG_MBLOCK;
            } while (++kx < m->kw);
        } while (++ky < m->kh);
    } while (++cz < m->ncz);
}

/* y[i*ldy + 0 .. nv*FG_VL) = act(c[i] + bias[i]) for i < rows */
FG_INLINE void fg_ctile_store(fg_cacc c, int rows, int nv, float *y, size_t ldy,
                              const float *bias, int act, float a, float b)
{
    int i, j, v;
    /* unrolled over FG_CROWS (constant row indices into c) */
    FG_UNROLL
    for (i = 0; i < FG_CROWS; ++i) {
        float *restrict o = y + (size_t)i * ldy;
        float br;
        if (i >= rows)
            break;
        br = bias ? bias[i] : 0.0f;
        switch (act) {
        case FG_ACT_RELU:
            for (v = 0; v < nv; ++v) {
                FG_NOUNROLL
                for (j = 0; j < FG_VL; ++j) {
                    const float t = c[i][v][j] + br;
                    o[v * FG_VL + j] = t < 0.0f ? 0.0f : t;
                }
            }
            break;
        case FG_ACT_LEAKY:
            for (v = 0; v < nv; ++v) {
                FG_NOUNROLL
                for (j = 0; j < FG_VL; ++j) {
                    const float t = c[i][v][j] + br;
                    const float u = a * t;
                    o[v * FG_VL + j] = t >= 0.0f ? t : u;
                }
            }
            break;
        case FG_ACT_CLIP:
            for (v = 0; v < nv; ++v) {
                FG_NOUNROLL
                for (j = 0; j < FG_VL; ++j) {
                    const float t = c[i][v][j] + br;
                    const float u = t < a ? a : t;
                    o[v * FG_VL + j] = u > b ? b : u;
                }
            }
            break;
        default:
            for (v = 0; v < nv; ++v) {
                FG_NOUNROLL
                for (j = 0; j < FG_VL; ++j)
                    o[v * FG_VL + j] = c[i][v][j] + br;
            }
            if (act == FG_ACT_SILU)
                fg_act_vec(o, nv * FG_VL, act, a, b);
            break;
        }
    }
}

/* One tile of `rows` (<= ROWS) output channels, NV vectors of positions. */
typedef void (*fg_ctile_fn)(const float *a, const float *b, const fg_rowmat *m, int rows,
                            float *y, size_t ldy, const float *bias, int act, float pa,
                            float pb);
#define FG_CTILE_FN(name, ROWS, NV)                                                              \
    FG_NOJAM static void name(const float *a, const float *b, const fg_rowmat *m, int rows,      \
                              float *y, size_t ldy, const float *bias, int act, float pa,        \
                              float pb)                                                          \
    {                                                                                            \
        fg_cacc c;                                                                               \
        fg_ctile(a, b, m, ROWS, NV, c);                                                          \
        fg_ctile_store(c, rows, NV, y, ldy, bias, act, pa, pb);                                  \
    }
FG_CTILE_FN(fg_ctile_r2v1, 2, 1)
FG_CTILE_FN(fg_ctile_r2v2, 2, 2)
FG_CTILE_FN(fg_ctile_r2v3, 2, 3)
FG_CTILE_FN(fg_ctile_r2v4, 2, 4)
#if FG_CV > 4
FG_CTILE_FN(fg_ctile_r2v5, 2, 5)
FG_CTILE_FN(fg_ctile_r2v6, 2, 6)
#endif
#if FG_CROWS == 4
FG_CTILE_FN(fg_ctile_r4v1, 4, 1)
FG_CTILE_FN(fg_ctile_r4v2, 4, 2)
FG_CTILE_FN(fg_ctile_r4v3, 4, 3)
FG_CTILE_FN(fg_ctile_r4v4, 4, 4)
#endif
#if FG_CV != 4 && FG_CV != 6
#error "FG_CV must be 4 or 6"
#endif

/* index nv - 1 */
static const fg_ctile_fn fg_ctile_r2[FG_CV] = {
    fg_ctile_r2v1, fg_ctile_r2v2, fg_ctile_r2v3, fg_ctile_r2v4,
#if FG_CV > 4
    fg_ctile_r2v5, fg_ctile_r2v6
#endif
};
#if FG_CROWS == 4
static const fg_ctile_fn fg_ctile_r4[FG_CV] = {fg_ctile_r4v1, fg_ctile_r4v2, fg_ctile_r4v3,
                                               fg_ctile_r4v4};
#endif

/* Floats of the row matrix of one output plane, or 0 when the row path does
 * not apply: vertical stride > 1, planes narrower than one vector, or a row
 * matrix larger than the im2col scratch (only with dilation dh > OD*OH).
 * Not used with clang: it compiles the tiles (nested tap loops around the
 * 12-accumulator block) with spills in the inner loop, slower than the im2col
 * path's fg_gemm_a (measured with clang 14). */
static size_t fg_rowmat_floats(const fg_conv_shape *s)
{
    const size_t Hp = (size_t)s->OH + (size_t)(s->kh - 1) * (size_t)s->dh;
    const size_t n =
        (size_t)(s->C / s->group) * (size_t)s->kd * (size_t)s->kw * Hp * (size_t)s->OW;
#if defined(__clang__)
    (void)n;
    return 0;
#else
    if (s->sh != 1 || (size_t)s->OH * (size_t)s->OW < FG_VL || n > fg_conv_cols(s))
        return 0;
    return n;
#endif
}

/* The row matrix of output plane od for the output rows from oh0 on, with
 * st vertical phases (st = sh, or 1): block ((c*kd + kz)*kw + kx)*st + a holds
 * Hq rows of OW floats, row i being input row st*(oh0 + i) + a - ph of plane
 * od*sd + kz*dd - pd of channel c at columns ow*sw + kx*dw - pw, with 0
 * outside the input. With st = 1 and oh0 = 0 it is the im2col of the
 * height-1 convolution; output row oh0 + r of filter row ky then reads row
 * r + ky*dh (st = 1) or row r + ky / st of phase ky % st (dh = 1). */
static void fg_rowmat_build(const fg_conv_shape *s, const float *x, int od, int oh0, int Hq,
                            int st, float *rm)
{
    const int Cg = s->C / s->group;
    const int OW = s->OW;
    const size_t HW = (size_t)s->H * (size_t)s->W;
    const size_t DHW = (size_t)s->D * HW;
    const size_t plane = (size_t)Hq * (size_t)OW;
    int c, kz, kx, a;
    for (c = 0; c < Cg; ++c) {
        for (kz = 0; kz < s->kd; ++kz) {
            const int iz = od * s->sd + kz * s->dd - s->pd;
            const float *xz = x + (size_t)c * DHW + (size_t)(iz < 0 ? 0 : iz) * HW;
            for (kx = 0; kx < s->kw; ++kx) {
                const int offx = kx * s->dw - s->pw;
                int lo, hi;
                fg_valid_range(OW, s->sw, offx, s->W, &lo, &hi);
                for (a = 0; a < st; ++a, rm += plane) {
                    /* rows i whose input row st*(oh0 + i) + a - ph is inside */
                    const int off0 = st * oh0 + a - s->ph;
                    int ylo, yhi;
                    fg_valid_range(Hq, st, off0, s->H, &ylo, &yhi);
                    if (iz < 0 || iz >= s->D || lo >= hi || ylo >= yhi) {
                        memset(rm, 0, plane * sizeof(float));
                        continue;
                    }
                    if (ylo > 0)
                        memset(rm, 0, (size_t)ylo * (size_t)OW * sizeof(float));
                    if (yhi < Hq)
                        memset(rm + (size_t)yhi * (size_t)OW, 0,
                               (size_t)(Hq - yhi) * (size_t)OW * sizeof(float));
                    fg_rows_fill(rm + (size_t)ylo * (size_t)OW,
                                 xz + (size_t)(st * ylo + off0) * (size_t)s->W +
                                     ((ptrdiff_t)lo * s->sw + offx),
                                 (size_t)st * (size_t)s->W, yhi - ylo, OW, lo, hi, s->sw);
                }
            }
        }
    }
}

/* One tile of `rows` (<= FG_CROWS) output channels and nv vectors. */
static void fg_ctile_run(const float *a, const float *b, const fg_rowmat *m, int rows, int nv,
                         float *y, size_t ldy, const float *bias, int act, float pa, float pb)
{
#if FG_CROWS == 4
    if (rows > 2) {
        fg_ctile_r4[nv - 1](a, b, m, rows, y, ldy, bias, act, pa, pb);
        return;
    }
#endif
    fg_ctile_r2[nv - 1](a, b, m, rows, y, ldy, bias, act, pa, pb);
}

/* One group: x its input channels, y its output channels, wp its packed
 * filters; rm: fg_rowmat_floats(s) floats. The plane's nvec vectors of
 * positions are split as evenly as possible into tiles of at most FG_CV
 * vectors (a tile of few vectors has too few accumulators to hide the FMA
 * latency). Output channels are the outer loop (the row matrix is reread
 * per channel block; it is small). */
static void fg_conv_rows(const fg_conv_shape *s, const float *x, float *y, const float *wp,
                         const float *bias, int act, float a, float b, float *rm)
{
    const int Kg = s->K / s->group;
    const int R = (s->C / s->group) * s->kd * s->kh * s->kw;
    const int Hp = s->OH + (s->kh - 1) * s->dh;
    const int N = s->OH * s->OW;
    const int nvec = (N + FG_VL - 1) / FG_VL;
    const int ntile = (nvec + FG_CV - 1) / FG_CV;
    const size_t S = (size_t)s->OD * (size_t)N;
    fg_rowmat m;
    int od, m0;
    m.ncz = (s->C / s->group) * s->kd;
    m.kh = s->kh;
    m.kw = s->kw;
    m.xstep = (size_t)Hp * (size_t)s->OW;
    m.czstep = (size_t)s->kw * m.xstep;
    m.ystep = (size_t)s->dh * (size_t)s->OW;
    m.kph = 1;
    m.phstep = 0;
    for (od = 0; od < s->OD; ++od) {
        fg_rowmat_build(s, x, od, 0, Hp, 1, rm);
        for (m0 = 0; m0 < Kg; m0 += FG_CROWS) {
            const int rows = Kg - m0 < FG_CROWS ? Kg - m0 : FG_CROWS;
            /* channel m0 is row m0 % 4 of packed block m0 / 4 */
            const float *am =
                wp + (size_t)(m0 / FG_MBLOCK) * FG_MBLOCK * (size_t)R + m0 % FG_MBLOCK;
            const float *bm = bias ? bias + m0 : NULL;
            float *ym = y + (size_t)m0 * S + (size_t)od * (size_t)N;
            int t, q = 0;
            for (t = 0; t < ntile; ++t) {
                int nv = nvec / ntile + (t < nvec % ntile);
                if (q + nv * FG_VL > N) {
                    /* last tile: end at N, overlapping computed columns
                     * (same operation sequence, same values) */
                    if (nv * FG_VL > N) { /* one narrow tile: split off a vector */
                        fg_ctile_run(am, rm, &m, rows, nv - 1, ym, S, bm, act, a, b);
                        nv = 1;
                    }
                    q = N - nv * FG_VL;
                }
                fg_ctile_run(am, rm + q, &m, rows, nv, ym + q, S, bm, act, a, b);
                q += nv * FG_VL;
            }
        }
    }
}

/* An im2col matrix larger than FG_CONV_BAND floats (ResNet's 7x7/2 stem: 7 MB)
 * is built and multiplied a band of output rows at a time, so that it is read
 * back from L2 instead of memory. A band holds whole panels when it can (its
 * positions a multiple of FG_CONV_PANEL_MAX: a narrower last panel is slower,
 * and would recur in every band): the most such rows within FG_CONV_BAND
 * floats, or the smallest such band up to 4 FG_CONV_BAND; otherwise only a
 * matrix past 8 FG_CONV_BAND is banded, as many rows as fit. 0: the whole
 * matrix at once. */
#define FG_CONV_BAND 65536

static int fg_im2col_band(const fg_conv_shape *s, int R)
{
    const size_t row = (size_t)R * (size_t)s->OW; /* floats per output row */
    const size_t cols = fg_conv_cols(s);
    int unit = 1;
    if (s->OD != 1 || cols <= FG_CONV_BAND)
        return 0;
    while (unit <= s->OH && (unit * s->OW) % FG_CONV_PANEL_MAX != 0)
        ++unit;
    if (unit < s->OH && (size_t)unit * row <= 4 * (size_t)FG_CONV_BAND) {
        const int k = (int)(FG_CONV_BAND / ((size_t)unit * row));
        return k > 1 ? k * unit : unit;
    }
    if (cols <= 8 * (size_t)FG_CONV_BAND || row > FG_CONV_BAND)
        return 0;
    return (int)(FG_CONV_BAND / row);
}

/* Output rows per band of fg_conv_pgemm's row matrix with 2 vertical phases
 * (sh = 2): bands that hold whole panels and fit FG_CONV_BAND floats (the
 * halo of (kh-1)/2 rows is rebuilt per band), the whole plane when no band
 * of whole panels exists; 0 when it does not fit the im2col part of the
 * scratch. */
static int fg_rowmat_band(const fg_conv_shape *s)
{
    const size_t row = (size_t)(s->C / s->group) * (size_t)s->kd * (size_t)s->kw * 2u *
                       (size_t)s->OW; /* floats per row of both phases */
    const int ext = (s->kh - 1) / 2;
    int unit = 1, bh = s->OH;
    while (unit <= s->OH && (unit * s->OW) % FG_CONV_PANEL_MAX != 0)
        ++unit;
    if (unit < s->OH) {
        bh = (int)(FG_CONV_BAND / row) - ext;
        bh = bh / unit * unit;
        if (bh < unit)
            bh = unit;
        if (bh > s->OH)
            bh = s->OH;
    }
    return (size_t)(bh + ext) * row <= fg_conv_cols(s) ? bh : 0;
}

/* Vertical phases of the row matrix fg_conv_pgemm reads, 0 for the im2col
 * matrix: 1 with vertical stride 1 (it fits the im2col part of the scratch
 * unless dh > OD*OH); 2 with vertical stride 2, no vertical dilation and
 * filters of 2 rows or more (ResNet's 7x7/2 stem: 0.54 M floats instead of
 * an im2col matrix of 1.84 M, in bands). */
static int fg_pgemm_rowpath(const fg_conv_shape *s)
{
    const size_t Hp = (size_t)s->OH + (size_t)(s->kh - 1) * (size_t)s->dh;
    const size_t n = (size_t)(s->C / s->group) * (size_t)s->kd * (size_t)s->kw * Hp * (size_t)s->OW;
    if (fg_conv_is_pointwise(s))
        return 0;
    if (s->sh == 1)
        return n <= fg_conv_cols(s);
    if (s->sh == 2 && s->dh == 1 && s->kh >= 2 && fg_rowmat_band(s) > 0)
        return 2;
    return 0;
}

/* fg_conv through fg_pgemm: the patch matrix of each group is the input
 * itself (pointwise), the row matrix of each output plane (vertical stride 1),
 * or the im2col matrix, and its panels are packed after the scratch's first
 * fg_conv_cols(s) floats. */
static void fg_conv_pgemm(const fg_conv_shape *s, const float *x, float *y, const float *wp,
                          const float *bias, int act, float a, float b, float *scratch)
{
    const int G = s->group;
    const int Cg = s->C / G;
    const int Kg = s->K / G;
    const int R = Cg * s->kd * s->kh * s->kw;
    const int N = s->OH * s->OW;
    const size_t S = (size_t)s->OD * (size_t)N;
    const size_t in_group = (size_t)Cg * (size_t)s->D * (size_t)s->H * (size_t)s->W;
    const size_t w_group = (size_t)((Kg + FG_MBLOCK - 1) / FG_MBLOCK) * FG_MBLOCK * (size_t)R;
    const int pointwise = fg_conv_is_pointwise(s);
    const int st = fg_pgemm_rowpath(s);
    /* output rows per band: of the row matrix, or of the im2col matrix (0: all) */
    const int bh = st == 1   ? s->OH
                   : st == 2 ? fg_rowmat_band(s)
                   : pointwise ? 0
                               : fg_im2col_band(s, R);
    /* rows of each phase of the row matrix beyond a band's output rows */
    const int ext = st == 1 ? (s->kh - 1) * s->dh : (s->kh - 1) / 2;
    float *panel = scratch + fg_conv_cols(s);
    fg_taps t;
    int g, od, oh0;
    t.kph = 1;
    t.phstep = 0;
    if (st) {
        t.ncz = Cg * s->kd;
        t.kh = s->kh;
        t.kw = s->kw;
        t.kph = st;
        t.ystep = (size_t)s->dh * (size_t)s->OW; /* dh = 1 when st = 2 */
    } else {
        t.ncz = R;
        t.kh = t.kw = 1;
        t.czstep = S;
        t.ystep = t.xstep = 0;
    }
    for (g = 0; g < G; ++g) {
        const float *xg = x + (size_t)g * in_group;
        const float *wg = wp + (size_t)g * w_group;
        float *yg = y + (size_t)g * (size_t)Kg * S;
        const float *bg = bias ? bias + (size_t)g * (size_t)Kg : NULL;
        if (st) {
            for (od = 0; od < s->OD; ++od)
                for (oh0 = 0; oh0 < s->OH; oh0 += bh) {
                    const int nb = s->OH - oh0 < bh ? s->OH - oh0 : bh, Hq = nb + ext;
                    t.phstep = (size_t)Hq * (size_t)s->OW;
                    t.xstep = (size_t)st * t.phstep;
                    t.czstep = (size_t)s->kw * t.xstep;
                    fg_rowmat_build(s, xg, od, oh0, Hq, st, scratch);
                    fg_pgemm(wg, scratch, &t, Kg, nb * s->OW,
                             yg + (size_t)od * (size_t)N + (size_t)oh0 * (size_t)s->OW, S, bg,
                             act, a, b, panel);
                }
            continue;
        }
        if (bh > 0) {
            for (oh0 = 0; oh0 < s->OH; oh0 += bh) {
                const int oh1 = s->OH - oh0 < bh ? s->OH : oh0 + bh;
                fg_im2col_rows(s, xg, scratch, oh0, oh1);
                t.czstep = (size_t)(oh1 - oh0) * (size_t)s->OW;
                fg_pgemm(wg, scratch, &t, Kg, (oh1 - oh0) * s->OW, yg + (size_t)oh0 * s->OW, S,
                         bg, act, a, b, panel);
            }
            continue;
        }
        if (!pointwise)
            fg_im2col(s, xg, scratch);
        fg_pgemm(wg, pointwise ? xg : scratch, &t, Kg, (int)S, yg, S, bg, act, a, b, panel);
    }
}

void fg_conv(const fg_conv_shape *s, const float *x, float *y, const float *wp, const float *bias,
             int act, float a, float b, float *scratch)
{
    const int G = s->group;
    const int Cg = s->C / G;
    const int Kg = s->K / G;
    const int R = Cg * s->kd * s->kh * s->kw;
    const size_t S = (size_t)s->OD * (size_t)s->OH * (size_t)s->OW;
    const size_t in_group = (size_t)Cg * (size_t)s->D * (size_t)s->H * (size_t)s->W;
    const size_t w_group = (size_t)((Kg + FG_MBLOCK - 1) / FG_MBLOCK) * FG_MBLOCK * (size_t)R;
    const int pointwise = fg_conv_is_pointwise(s);
    const int rowpath = !pointwise && fg_rowmat_floats(s) > 0;
    int g;
    if (S == 0 || Kg <= 0)
        return;
    if (FG_CONV_PGEMM) {
        fg_conv_pgemm(s, x, y, wp, bias, act, a, b, scratch);
        return;
    }
    for (g = 0; g < G; ++g) {
        const float *xg = x + (size_t)g * in_group;
        const float *B = xg;
        float *yg = y + (size_t)g * (size_t)Kg * S;
        const float *bg = bias ? bias + (size_t)g * (size_t)Kg : NULL;
        if (rowpath) {
            fg_conv_rows(s, xg, yg, wp + (size_t)g * w_group, bg, act, a, b, scratch);
            continue;
        }
        if (!pointwise) {
            fg_im2col(s, xg, scratch);
            B = scratch;
        }
        fg_gemm_a(wp + (size_t)g * w_group, B, yg, Kg, R, (int)S, bg, act, a, b);
    }
}

/* o[ow] += w * xr[ow*sw + off] for ow in [lo, hi), all taps inside xr */
static void fg_row_axpy(float *restrict o, const float *restrict xr, float w, int lo, int hi,
                        int sw, int off)
{
    const int n = hi - lo;
    float *restrict os = o + lo;
    const float *restrict xs = xr + ((ptrdiff_t)lo * sw + off);
    int i = 0, j;
    if (sw == 1) {
        for (; i + FG_CB <= n; i += FG_CB) {
            for (j = 0; j < FG_CB; ++j)
                os[i + j] = FG_FMA(w, xs[i + j], os[i + j]);
        }
        for (; i < n; ++i)
            os[i] = FG_FMA(w, xs[i], os[i]);
    } else if (sw == 2) {
        for (; i + FG_CB <= n; i += FG_CB) {
            for (j = 0; j < FG_CB; ++j)
                os[i + j] = FG_FMA(w, xs[2 * (i + j)], os[i + j]);
        }
        for (; i < n; ++i)
            os[i] = FG_FMA(w, xs[2 * i], os[i]);
    } else {
        for (; i < n; ++i)
            os[i] = FG_FMA(w, xs[(ptrdiff_t)i * sw], os[i]);
    }
}

#if defined(__AVX512F__)
/* lanes i of [0, L) with 0 <= off + i*st < W, as a bit mask (L <= 32) */
FG_INLINE unsigned fg_lane_mask(int off, int W, int L)
{
    int lo = off < 0 ? -off : 0, hi = W - off;
    if (hi > L)
        hi = L;
    if (hi <= lo)
        return 0u;
    return (hi >= 32 ? 0xFFFFFFFFu : (1u << hi) - 1u) & ~((1u << lo) - 1u);
}

/* 16 inputs xr[off + i*sw], i < 16, 0 outside [0, W) (masked lanes are not
 * read); sw is 1 or 2 (deinterleaving two loads) */
FG_INLINE __m512 fg_dw_load(const float *xr, int off, int W, int sw, __m512i even)
{
    if (sw == 1) {
        if (off >= 0 && off + 16 <= W)
            return _mm512_loadu_ps(xr + off);
        return _mm512_maskz_loadu_ps((__mmask16)fg_lane_mask(off, W, 16), xr + off);
    }
    if (off >= 0 && off + 32 <= W)
        return _mm512_permutex2var_ps(_mm512_loadu_ps(xr + off), even,
                                      _mm512_loadu_ps(xr + off + 16));
    {
        const unsigned m = fg_lane_mask(off, W, 32);
        const __m512 lo = _mm512_maskz_loadu_ps((__mmask16)(m & 0xFFFFu), xr + off);
        const __m512 hi = _mm512_maskz_loadu_ps((__mmask16)(m >> 16), xr + off + 16);
        return _mm512_permutex2var_ps(lo, even, hi);
    }
}

/* NV (1..4) consecutive blocks of 16 outputs of one row from o0 on: bias, the
 * taps of the rows inside the input (rows[ky], NULL outside), act, store
 * (the last block: n16 outputs). Independent accumulators hide the FMA latency. */
FG_INLINE void fg_dw_blocks(const float *const *rows, const float *wk, const fg_conv_shape *s,
                            int o0, int NV, int n16, __m512 b0, float *o, int act, float pa,
                            float pb, __m512i even)
{
    const __m512 va = _mm512_set1_ps(pa), vb = _mm512_set1_ps(pb);
    __m512 acc[4];
    int v, r, kx;
    const int sw = s->sw;
    FG_UNROLL
    for (v = 0; v < NV; ++v)
        acc[v] = b0;
    for (r = 0; r < s->kd * s->kh; ++r) {
        const float *xr = rows[r];
        if (!xr)
            continue;
        for (kx = 0; kx < s->kw; ++kx) {
            const __m512 wv = _mm512_set1_ps(wk[r * s->kw + kx]);
            const int off = o0 * sw + kx * s->dw - s->pw;
            FG_UNROLL
            for (v = 0; v < NV; ++v)
                acc[v] = _mm512_fmadd_ps(wv, fg_dw_load(xr, off + 16 * v * sw, s->W, sw, even),
                                         acc[v]);
        }
    }
    FG_UNROLL
    for (v = 0; v < NV - 1; ++v)
        _mm512_storeu_ps(o + o0 + 16 * v, fg_act16(acc[v], act, va, vb));
    _mm512_mask_storeu_ps(o + o0 + 16 * (NV - 1), (__mmask16)((1u << n16) - 1u),
                          fg_act16(acc[NV - 1], act, va, vb));
}

/* 2-D, stride 1, no dilation, output as wide as the input (OW == W: "same"
 * padding) and planes of at most FG_DW_FLAT outputs (the 7x7..28x28 planes of
 * MobileNet / EfficientNet): output m = oh*W + ow of tap (ky, kx) reads input
 * m + (ky - ph)*W + (kx - pw), so every tap is one masked load per 16 outputs
 * of the plane taken as one flat row, straight from x (no copy into phase
 * planes, no copy out: the per-channel row copies cost more than the taps on
 * such planes). The lane masks (taps outside the input: 0, as the zero
 * padding) depend only on the shape and are computed once per call. Same
 * order per output as fg_dw_rows: bias, then every tap in (y, x) order. */
#define FG_DW_FLAT 1024

static int fg_dw_flat_ok(const fg_conv_shape *s)
{
    return s->D == 1 && s->kd == 1 && s->sh == 1 && s->sw == 1 && s->dh == 1 && s->dw == 1 &&
           s->OW == s->W && s->kh * s->kw <= FG_DW_MAXROWS &&
           /* past 16x16, 5x5 filters ran faster on the phase planes (measured) */
           (s->OH * s->OW <= 256 || (s->OH * s->OW <= FG_DW_FLAT && s->kh * s->kw <= 9));
}

/* NV vectors of the plane from vector v0 on: acc = bias, then the taps */
FG_INLINE void fg_dw_flat_blk(const float *xc, const float *wk, const ptrdiff_t *off,
                              const __mmask16 *mask, int taps, int nvec, int v0, int NV,
                              __m512 b0, float *yk, __mmask16 last, int act, __m512 va,
                              __m512 vb)
{
    __m512 acc[8];
    int t, v;
    FG_UNROLL
    for (v = 0; v < NV; ++v)
        acc[v] = b0;
    for (t = 0; t < taps; ++t) {
        const __m512 wv = _mm512_set1_ps(wk[t]);
        const float *xt = xc + off[t] + 16 * v0;
        const __mmask16 *mt = mask + (size_t)t * (size_t)nvec + v0;
        FG_UNROLL
        for (v = 0; v < NV; ++v)
            acc[v] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(mt[v], xt + 16 * v), acc[v]);
    }
    FG_UNROLL
    for (v = 0; v < NV; ++v) {
        const __m512 r = fg_act16(acc[v], act, va, vb);
        if (v0 + v == nvec - 1)
            _mm512_mask_storeu_ps(yk + 16 * (v0 + v), last, r);
        else
            _mm512_storeu_ps(yk + 16 * (v0 + v), r);
    }
}

static void fg_dw_flat(const fg_conv_shape *s, const float *x, float *y, const float *w,
                       const float *bias, int act, float pa, float pb)
{
    __mmask16 mask[FG_DW_MAXROWS * (FG_DW_FLAT / 16)];
    ptrdiff_t off[FG_DW_MAXROWS];
    const int mult = s->K / s->C, taps = s->kh * s->kw, N = s->OH * s->OW;
    const int nvec = (N + 15) / 16;
    const size_t HW = (size_t)s->H * (size_t)s->W;
    const __mmask16 last = (__mmask16)(N % 16 ? (1u << (N % 16)) - 1u : 0xFFFFu);
    const __m512 va = _mm512_set1_ps(pa), vb = _mm512_set1_ps(pb);
    int t, v, i, k, v0;
    for (t = 0; t < taps; ++t) {
        const int dy = t / s->kw - s->ph, dx = t % s->kw - s->pw;
        off[t] = (ptrdiff_t)dy * s->W + dx;
        for (v = 0; v < nvec; ++v) {
            unsigned m = 0;
            for (i = 0; i < 16; ++i) {
                const int n = 16 * v + i, iy = n / s->OW + dy, ix = n % s->OW + dx;
                if (n < N && iy >= 0 && iy < s->H && ix >= 0 && ix < s->W)
                    m |= 1u << i;
            }
            mask[t * nvec + v] = (__mmask16)m;
        }
    }
    for (k = 0; k < s->K; ++k) {
        const float *xc = x + (size_t)(k / mult) * HW;
        const float *wk = w + (size_t)k * (size_t)taps;
        const __m512 b0 = _mm512_set1_ps(bias ? bias[k] : 0.0f);
        float *yk = y + (size_t)k * (size_t)N;
        for (v0 = 0; v0 + 8 <= nvec; v0 += 8)
            fg_dw_flat_blk(xc, wk, off, mask, taps, nvec, v0, 8, b0, yk, last, act, va, vb);
        /* the rest (1..7 vectors) in blocks of 4, 2 and 1 */
        if (nvec - v0 >= 4) {
            fg_dw_flat_blk(xc, wk, off, mask, taps, nvec, v0, 4, b0, yk, last, act, va, vb);
            v0 += 4;
        }
        if (nvec - v0 >= 2) {
            fg_dw_flat_blk(xc, wk, off, mask, taps, nvec, v0, 2, b0, yk, last, act, va, vb);
            v0 += 2;
        }
        if (nvec > v0)
            fg_dw_flat_blk(xc, wk, off, mask, taps, nvec, v0, 1, b0, yk, last, act, va, vb);
    }
}

/* 2-D, stride 1 or 2 in both directions, no dilation, output rows of at
 * most FG_DW_RV vectors. Per channel and band of output rows, the input rows
 * the band reads are copied once into a zero-padded plane of 64-byte aligned
 * rows, split by column phase for stride 2 (phase b, column j = x[st*j + b -
 * pw]), with the rows above and below the input zero. Then blocks of R output
 * rows x NV vectors (R*NV <= 8 independent accumulator chains) take every tap
 * in registers before one store straight into y (the lanes past OW dropped).
 * A tap kx reads phase kx % st at column offset kx / st: for 3x3 and 5x5 one
 * aligned load per vector and phase and the shifted taps by valignd (an
 * unaligned 64-byte load crosses two cache lines and runs at half the rate),
 * other filters by unaligned loads. Same order per output as fg_dw_flat:
 * bias, then every tap in (y, x) order (a tap outside the input adds w * 0). */
#define FG_DW_RV 16     /* most vectors per output row */
#define FG_DW_RK 11     /* most taps per filter row */
#define FG_DW_BAND 8192 /* floats of the band plane */

/* floats per phase row Wq and output rows per band BH */
static int fg_dw_rows_dims(const fg_conv_shape *s, int *Wq, int *BH)
{
    const int nvec = (s->OW + 15) / 16, st = s->sh;
    int bh;
    if (s->D != 1 || s->kd != 1 || s->sw != st || st > 2 || s->dh != 1 || s->dw != 1 ||
        s->kw > FG_DW_RK || nvec > FG_DW_RV)
        return 0;
    /* a tap reads up to vector nvec (valignd: the one past) or float
     * 16*nvec + (kw - 1)/st; the fill writes whole vectors up to float
     * (W + pw)/st + 16 */
    {
        int need = 16 * nvec + 16;
        if (16 * nvec + (s->kw - 1) / st > need)
            need = 16 * nvec + (s->kw - 1) / st;
        if ((s->W + s->pw + st - 1) / st + 16 > need)
            need = (s->W + s->pw + st - 1) / st + 16;
        *Wq = (need + 15) / 16 * 16;
    }
    if (s->pw > 16 || *Wq > 16 * FG_DW_RV + 32)
        return 0;
    for (bh = s->OH; bh > 0; bh = bh > 8 ? bh - bh / 8 : bh - 1) {
        const size_t rows = (size_t)(st * (bh - 1) + s->kh);
        if (rows * (size_t)st * (size_t)*Wq + 16 <= FG_DW_BAND) {
            *BH = bh;
            return 1;
        }
    }
    return 0;
}

/* the 16 floats from float d (0..4) of the pair (lo, hi); a switch, as
 * valignd takes an immediate (d is a constant where it is inlined) */
#define FG_DW_ALIGNR(d)                                                                          \
    _mm512_castsi512_ps(                                                                         \
        _mm512_alignr_epi32(_mm512_castps_si512(hi), _mm512_castps_si512(lo), d))
FG_INLINE __m512 fg_dw_shift(__m512 lo, __m512 hi, int d)
{
    switch (d) {
    case 1:
        return FG_DW_ALIGNR(1);
    case 2:
        return FG_DW_ALIGNR(2);
    case 3:
        return FG_DW_ALIGNR(3);
    case 4:
        return FG_DW_ALIGNR(4);
    default:
        return lo;
    }
}
#undef FG_DW_ALIGNR

/* R rows x NV vectors from vector v0 on of the output rows whose first tap
 * row is p + r*st*ld (ld: floats per plane row, all st phases); KW > 0: the
 * filter width as a constant (aligned loads and valignd), 0: kw taps by
 * unaligned loads. R, NV, ST and KW are constants at every call. */
FG_INLINE void fg_dw_rblk(const float *p, size_t ld, int Wq, const float *wk, int kh, int kw,
                          int nvec, int v0, int R, int NV, int ST, int KW, __m512 b0,
                          float *yo, int OW, __mmask16 last, int act, __m512 va, __m512 vb)
{
    __m512 acc[8];
    int r, v, ky, kx, b;
    FG_UNROLL
    for (v = 0; v < 8; ++v)
        acc[v] = b0;
    for (ky = 0; ky < kh; ++ky) {
        const float *pk = p + (size_t)ky * ld + 16 * v0;
        const float *wr = wk + ky * kw;
        if (KW > 0) {
            __m512 wv[FG_DW_RK];
            FG_UNROLL
            for (kx = 0; kx < KW; ++kx)
                wv[kx] = _mm512_set1_ps(wr[kx]);
            FG_UNROLL
            for (r = 0; r < R; ++r) {
                const float *pr = pk + (size_t)(r * ST) * ld;
                FG_UNROLL
                for (v = 0; v < NV; ++v) {
                    __m512 lo[2], hi[2];
                    FG_UNROLL
                    for (b = 0; b < ST; ++b) {
                        lo[b] = _mm512_load_ps(pr + (size_t)b * (size_t)Wq + 16 * v);
                        hi[b] = _mm512_load_ps(pr + (size_t)b * (size_t)Wq + 16 * v + 16);
                    }
                    FG_UNROLL
                    for (kx = 0; kx < KW; ++kx)
                        acc[r * NV + v] = _mm512_fmadd_ps(
                            wv[kx], fg_dw_shift(lo[kx % ST], hi[kx % ST], kx / ST),
                            acc[r * NV + v]);
                }
            }
        } else {
            for (kx = 0; kx < kw; ++kx) {
                const __m512 wv = _mm512_set1_ps(wr[kx]);
                const float *pt = pk + (size_t)(kx % ST) * (size_t)Wq + kx / ST;
                FG_UNROLL
                for (r = 0; r < R; ++r) {
                    FG_UNROLL
                    for (v = 0; v < NV; ++v)
                        acc[r * NV + v] = _mm512_fmadd_ps(
                            wv, _mm512_loadu_ps(pt + (size_t)(r * ST) * ld + 16 * v),
                            acc[r * NV + v]);
                }
            }
        }
    }
    FG_UNROLL
    for (r = 0; r < R; ++r) {
        float *o = yo + (size_t)r * (size_t)OW + 16 * v0;
        FG_UNROLL
        for (v = 0; v < NV; ++v) {
            const __m512 t = fg_act16(acc[r * NV + v], act, va, vb);
            if (v0 + v == nvec - 1)
                _mm512_mask_storeu_ps(o + 16 * v, last, t);
            else
                _mm512_storeu_ps(o + 16 * v, t);
        }
    }
}

/* the band's bh output rows; ST and KW are constants at every call, ST = 0: st */
FG_INLINE void fg_dw_band(const float *q, size_t ld, int Wq, const float *wk, int kh, int kw,
                          int nvec, int st, int ST, int KW, int bh, __m512 b0, float *yb, int OW,
                          __mmask16 last, int act, __m512 va, __m512 vb)
{
    const int S = ST ? ST : st;
    int r = 0, v0;
#define FG_DW_RB(R, NV)                                                                          \
    fg_dw_rblk(q + (size_t)(r * S) * ld, ld, Wq, wk, kh, kw, nvec, v0, R, NV, S, KW, b0,      \
               yb + (size_t)r * (size_t)OW, OW, last, act, va, vb)
    if (nvec > 4) {
        for (; r < bh; ++r) {
            for (v0 = 0; nvec - v0 >= 8; v0 += 8)
                FG_DW_RB(1, 8);
            if (nvec - v0 >= 4) {
                FG_DW_RB(1, 4);
                v0 += 4;
            }
            if (nvec - v0 >= 2) {
                FG_DW_RB(1, 2);
                v0 += 2;
            }
            if (nvec > v0)
                FG_DW_RB(1, 1);
        }
#undef FG_DW_RB
        return;
    }
    v0 = 0;
#define FG_DW_RB(R, NV)                                                                          \
    do {                                                                                         \
        fg_dw_rblk(q + (size_t)(r * S) * ld, ld, Wq, wk, kh, kw, nvec, 0, R, NV, S, KW, b0,   \
                   yb + (size_t)r * (size_t)OW, OW, last, act, va, vb);                         \
        r += R;                                                                                  \
    } while (0)
    /* blocks of 8 accumulators, then the rest of the rows in smaller blocks */
    if (nvec == 1) {
        while (bh - r >= 8)
            FG_DW_RB(8, 1);
        if (bh - r >= 4)
            FG_DW_RB(4, 1);
        if (bh - r >= 2)
            FG_DW_RB(2, 1);
        if (bh > r)
            FG_DW_RB(1, 1);
    } else if (nvec == 2) {
        while (bh - r >= 4)
            FG_DW_RB(4, 2);
        if (bh - r >= 2)
            FG_DW_RB(2, 2);
        if (bh > r)
            FG_DW_RB(1, 2);
    } else if (nvec == 3) {
        while (bh - r >= 2)
            FG_DW_RB(2, 3);
        if (bh > r)
            FG_DW_RB(1, 3);
    } else {
        while (bh - r >= 2)
            FG_DW_RB(2, 4);
        if (bh > r)
            FG_DW_RB(1, 4);
    }
#undef FG_DW_RB
}

/* input row xr (W floats) into the phase rows of a plane row: stride 1,
 * q[j] = xr[j - pw]; stride 2, q[b*Wq + j] = xr[2j + b - pw], by one pass
 * that splits 32 floats at a time into the even and odd columns (E[i] =
 * xr[2i] is column i + pw/2 of phase pw % 2, O[i] = xr[2i + 1] column
 * i + (pw + 1)/2 of the other). The lanes past the row are zero (masked
 * loads), as the padding they overwrite. */
static void fg_dw_fill(float *q, int Wq, const float *xr, int W, int st, int pw)
{
    int i;
    if (st == 1) {
        fg_copy16(q + pw, xr, W);
        return;
    }
    {
        const __m512i ie = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
        const __m512i io = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
        float *qe = q + (size_t)(pw % 2) * (size_t)Wq + pw / 2;
        float *qo = q + (size_t)((pw + 1) % 2) * (size_t)Wq + (pw + 1) / 2;
        for (i = 0; 2 * i < W; i += 16) {
            const int n = W - 2 * i;
            const __m512 a = n >= 16 ? _mm512_loadu_ps(xr + 2 * i)
                                     : _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), xr + 2 * i);
            const __m512 c = n >= 32   ? _mm512_loadu_ps(xr + 2 * i + 16)
                             : n > 16 ? _mm512_maskz_loadu_ps((__mmask16)((1u << (n - 16)) - 1u),
                                                               xr + 2 * i + 16)
                                      : _mm512_setzero_ps();
            _mm512_storeu_ps(qe + i, _mm512_permutex2var_ps(a, ie, c));
            _mm512_storeu_ps(qo + i, _mm512_permutex2var_ps(a, io, c));
        }
    }
}

static void fg_dw_rows(const fg_conv_shape *s, const float *x, float *y, const float *w,
                       const float *bias, int act, float pa, float pb, int Wq, int BH)
{
    float qbuf[FG_DW_BAND + 16];
    /* 64-byte aligned rows: aligned loads never cross a cache line */
    float *q = qbuf + (16 - ((size_t)((uintptr_t)qbuf / sizeof(float)) & 15)) % 16;
    const int st = s->sh, mult = s->K / s->C, taps = s->kh * s->kw;
    const int nvec = (s->OW + 15) / 16;
    const int kw = s->kw == 3 || s->kw == 5 ? s->kw : 0; /* valignd forms */
    const size_t HW = (size_t)s->H * (size_t)s->W, OHW = (size_t)s->OH * (size_t)s->OW;
    const size_t ld = (size_t)st * (size_t)Wq;
    const __mmask16 last = (__mmask16)(s->OW % 16 ? (1u << (s->OW % 16)) - 1u : 0xFFFFu);
    const __m512 va = _mm512_set1_ps(pa), vb = _mm512_set1_ps(pb);
    int k, oh0, i, written = 0;
    /* the zero columns are never written, the zero rows only where an earlier
     * band held an input row */
    memset(q, 0, FG_DW_BAND * sizeof(float));
    for (oh0 = 0; oh0 < s->OH; oh0 += BH) {
        const int bh = s->OH - oh0 < BH ? s->OH - oh0 : BH;
        const int nrow = st * (bh - 1) + s->kh;
        for (k = 0; k < s->K; ++k) {
            const float *xc = x + (size_t)(k / mult) * HW;
            const float *wk = w + (size_t)k * (size_t)taps;
            const __m512 b0 = _mm512_set1_ps(bias ? bias[k] : 0.0f);
            float *yb = y + (size_t)k * OHW + (size_t)oh0 * (size_t)s->OW;
            if (k % mult == 0) {
                for (i = 0; i < nrow; ++i) {
                    const int iy = st * oh0 + i - s->ph;
                    float *row = q + (size_t)i * ld;
                    if (iy < 0 || iy >= s->H) {
                        if (i < written)
                            memset(row, 0, ld * sizeof(float));
                        continue;
                    }
                    fg_dw_fill(row, Wq, xc + (size_t)iy * (size_t)s->W, s->W, st, s->pw);
                }
                if (nrow > written)
                    written = nrow;
            }
            if (st == 1 && kw == 3)
                fg_dw_band(q, ld, Wq, wk, s->kh, s->kw, nvec, st, 1, 3, bh, b0, yb, s->OW, last,
                           act, va, vb);
            else if (st == 1 && kw == 5)
                fg_dw_band(q, ld, Wq, wk, s->kh, s->kw, nvec, st, 1, 5, bh, b0, yb, s->OW, last,
                           act, va, vb);
            else if (st == 2 && kw == 3)
                fg_dw_band(q, ld, Wq, wk, s->kh, s->kw, nvec, st, 2, 3, bh, b0, yb, s->OW, last,
                           act, va, vb);
            else if (st == 2 && kw == 5)
                fg_dw_band(q, ld, Wq, wk, s->kh, s->kw, nvec, st, 2, 5, bh, b0, yb, s->OW, last,
                           act, va, vb);
            else
                fg_dw_band(q, ld, Wq, wk, s->kh, s->kw, nvec, st, 0, 0, bh, b0, yb, s->OW, last,
                           act, va, vb);
        }
    }
}

/* fg_conv_depthwise for horizontal strides 1 and 2 with AVX-512: blocks of 16
 * outputs of a row in one register each, all taps accumulated before one
 * store; the input row is read with masked loads (lanes outside the input
 * are 0: an out-of-input tap adds w * 0, which leaves the sum unchanged),
 * stride 2 by deinterleaving two loads. Order per output: bias, then the taps
 * of the rows inside the input in (z, y, x) order. */
static void fg_dw_avx512(const fg_conv_shape *s, const float *x, float *y, const float *w,
                         const float *bias, int act, float pa, float pb)
{
    const int mult = s->K / s->C;
    const size_t HW = (size_t)s->H * (size_t)s->W;
    const size_t DHW = (size_t)s->D * HW;
    const int taps = s->kd * s->kh * s->kw;
    const __m512i even =
        _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const float *rows[FG_DW_MAXROWS];
    int k, od, oh, kz, ky, o0;
    for (k = 0; k < s->K; ++k) {
        const float *xc = x + (size_t)(k / mult) * DHW;
        const float *wk = w + (size_t)k * (size_t)taps;
        const __m512 b0 = _mm512_set1_ps(bias ? bias[k] : 0.0f);
        float *yk = y + (size_t)k * (size_t)s->OD * (size_t)s->OH * (size_t)s->OW;
        for (od = 0; od < s->OD; ++od) {
            for (oh = 0; oh < s->OH; ++oh) {
                float *o = yk + ((size_t)od * (size_t)s->OH + (size_t)oh) * (size_t)s->OW;
                for (kz = 0; kz < s->kd; ++kz) {
                    const int iz = od * s->sd + kz * s->dd - s->pd;
                    for (ky = 0; ky < s->kh; ++ky) {
                        const int iy = oh * s->sh + ky * s->dh - s->ph;
                        rows[kz * s->kh + ky] =
                            iz < 0 || iz >= s->D || iy < 0 || iy >= s->H
                                ? NULL
                                : xc + (size_t)iz * HW + (size_t)iy * (size_t)s->W;
                    }
                }
                for (o0 = 0; o0 + 64 <= s->OW; o0 += 64)
                    fg_dw_blocks(rows, wk, s, o0, 4, 16, b0, o, act, pa, pb, even);
                if (o0 < s->OW) {
                    const int n = s->OW - o0, nv = (n + 15) / 16, n16 = n - 16 * (nv - 1);
                    if (nv == 1)
                        fg_dw_blocks(rows, wk, s, o0, 1, n16, b0, o, act, pa, pb, even);
                    else if (nv == 2)
                        fg_dw_blocks(rows, wk, s, o0, 2, n16, b0, o, act, pa, pb, even);
                    else if (nv == 3)
                        fg_dw_blocks(rows, wk, s, o0, 3, n16, b0, o, act, pa, pb, even);
                    else
                        fg_dw_blocks(rows, wk, s, o0, 4, n16, b0, o, act, pa, pb, even);
                }
            }
        }
    }
}
#endif

void fg_conv_depthwise(const fg_conv_shape *s, const float *x, float *y, const float *w,
                       const float *bias, int act, float a, float b)
{
    const int mult = s->C > 0 ? s->K / s->C : 0;
    const size_t HW = (size_t)s->H * (size_t)s->W;
    const size_t DHW = (size_t)s->D * HW;
    const size_t taps = (size_t)s->kd * (size_t)s->kh * (size_t)s->kw;
    int k, od, oh, kz, ky, kx, ow;
#if defined(__AVX512F__)
    if (fg_dw_flat_ok(s)) {
        fg_dw_flat(s, x, y, w, bias, act, a, b);
        return;
    }
    {
        int Wq, BH;
        if (fg_dw_rows_dims(s, &Wq, &BH)) {
            fg_dw_rows(s, x, y, w, bias, act, a, b, Wq, BH);
            return;
        }
    }
    if (s->sw <= 2 && s->kd * s->kh <= FG_DW_MAXROWS) {
        fg_dw_avx512(s, x, y, w, bias, act, a, b);
        return;
    }
#endif
    for (k = 0; k < s->K; ++k) {
        const float *xc = x + (size_t)(k / mult) * DHW;
        const float *wk = w + (size_t)k * taps;
        const float b0 = bias ? bias[k] : 0.0f;
        float *yk = y + (size_t)k * (size_t)s->OD * (size_t)s->OH * (size_t)s->OW;
        for (od = 0; od < s->OD; ++od) {
            for (oh = 0; oh < s->OH; ++oh) {
                float *restrict o =
                    yk + ((size_t)od * (size_t)s->OH + (size_t)oh) * (size_t)s->OW;
                for (ow = 0; ow < s->OW; ++ow)
                    o[ow] = b0;
                for (kz = 0; kz < s->kd; ++kz) {
                    const int iz = od * s->sd + kz * s->dd - s->pd;
                    if (iz < 0 || iz >= s->D)
                        continue;
                    for (ky = 0; ky < s->kh; ++ky) {
                        const int iy = oh * s->sh + ky * s->dh - s->ph;
                        const float *xr;
                        if (iy < 0 || iy >= s->H)
                            continue;
                        xr = xc + (size_t)iz * HW + (size_t)iy * (size_t)s->W;
                        for (kx = 0; kx < s->kw; ++kx) {
                            const int off = kx * s->dw - s->pw;
                            const float wv = wk[((size_t)kz * (size_t)s->kh + (size_t)ky) *
                                                    (size_t)s->kw +
                                                (size_t)kx];
                            int lo, hi;
                            fg_valid_range(s->OW, s->sw, off, s->W, &lo, &hi);
                            if (lo < hi)
                                fg_row_axpy(o, xr, wv, lo, hi, s->sw, off);
                        }
                    }
                }
                fg_act_vec(o, s->OW, act, a, b);
            }
        }
    }
}

const char *fg_conv_algorithm(const fg_conv_shape *s, int depthwise)
{
    const int pointwise = fg_conv_is_pointwise(s);
    if (depthwise) {
#if defined(__AVX512F__)
        int Wq, BH;
        if (fg_dw_flat_ok(s))
            return "depthwise, flat plane, masked taps (AVX-512)";
        if (fg_dw_rows_dims(s, &Wq, &BH))
            return "depthwise, row blocks on aligned phase rows (AVX-512)";
        if (s->sw <= 2 && s->kd * s->kh <= FG_DW_MAXROWS)
            return "depthwise, 16-wide register blocks (AVX-512)";
#endif
        return "depthwise, row axpy";
    }
    if (FG_CONV_PGEMM) {
        if (pointwise)
            return "packed GEMM on the input (1x1 direct)";
        if (fg_pgemm_rowpath(s) == 2)
            return "packed GEMM on the 2-phase row matrix";
        if (fg_pgemm_rowpath(s))
            return "packed GEMM on the row matrix";
        return "packed GEMM on im2col";
    }
    if (pointwise)
        return "GEMM on the input (1x1 direct)";
    if (fg_rowmat_floats(s) > 0)
        return "row-shifted direct tiles";
    return "im2col + GEMM";
}
