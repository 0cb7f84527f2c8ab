/* fg_conv.c - convolution (C99, no heap, no stdio).
 *
 * fg_conv, per group:
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
 * fg_conv_depthwise: direct form; each output row is initialized with the bias
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

/* columns per fixed-size block of the depthwise row updates */
#define FG_CB 16

static int fg_conv_is_pointwise(const fg_conv_shape *s)
{
    return s->kd == 1 && s->kh == 1 && s->kw == 1 && s->sd == 1 && s->sh == 1 && s->sw == 1 &&
           s->pd == 0 && s->ph == 0 && s->pw == 0 && s->OD == s->D && s->OH == s->H &&
           s->OW == s->W;
}

size_t fg_conv_scratch(const fg_conv_shape *s)
{
    if (fg_conv_is_pointwise(s))
        return 0;
    return (size_t)(s->C / s->group) * (size_t)s->kd * (size_t)s->kh * (size_t)s->kw *
           (size_t)s->OD * (size_t)s->OH * (size_t)s->OW;
}

/* floor(a / b) for b > 0 */
static int fg_floordiv(int a, int b)
{
    const int q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* Outputs o in [*lo, *hi) whose tap i = o*stride + off lies in [0, n). */
static void fg_valid_range(int n_out, int stride, int off, int n, int *lo, int *hi)
{
    int l, h;
    if (stride == 1) { /* no divisions: they cost more than a short row */
        l = -off;
        h = n - off;
    } else {
        /* o*stride + off >= 0  <=>  o >= ceil(-off / stride) */
        l = -fg_floordiv(off, stride);
        /* o*stride + off <= n - 1  <=>  o <= floor((n - 1 - off) / stride) */
        h = fg_floordiv(n - 1 - off, stride) + 1;
    }
    if (l < 0)
        l = 0;
    if (h > n_out)
        h = n_out;
    if (h < l)
        h = l;
    *lo = l;
    *hi = h;
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

void fg_im2col(const fg_conv_shape *s, const float *x, float *cols)
{
    const int Cg = s->C / s->group;
    const int OW = s->OW, OH = s->OH;
    const size_t HW = (size_t)s->H * (size_t)s->W;
    const size_t DHW = (size_t)s->D * HW;
    const size_t OHW = (size_t)OH * (size_t)OW;
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
                        if (yhi < OH)
                            memset(o + (size_t)yhi * (size_t)OW, 0,
                                   (size_t)(OH - yhi) * (size_t)OW * sizeof(float));
                        if (flat) {
                            /* rows ylo..yhi-1, columns lo..hi-1 of the last
                             * row: one copy, then re-zero the pad columns */
                            const size_t first = (size_t)ylo * (size_t)OW + (size_t)lo;
                            const size_t last = (size_t)(yhi - 1) * (size_t)OW + (size_t)hi;
                            const float *src =
                                xz + (size_t)(ylo + offy) * (size_t)s->W + (size_t)(lo + offx);
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
                                     xz + (size_t)(ylo * s->sh + offy) * (size_t)s->W +
                                         ((ptrdiff_t)lo * s->sw + offx),
                                     (size_t)s->sh * (size_t)s->W, yhi - ylo, OW, lo, hi, s->sw);
                    }
                    out += S;
                }
            }
        }
    }
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

/* Geometry of the row matrix as seen by the tile. */
typedef struct {
    int ncz;       /* (C/group) * kd: outer tap loop           */
    int kh, kw;    /* inner tap loops                          */
    size_t czstep; /* floats between consecutive (c, z) blocks */
    size_t ystep;  /* dh * OW: shift of one filter row         */
    size_t xstep;  /* Hp * OW: one x tap (one row-matrix row)  */
} fg_rowmat;

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
    if (s->sh != 1 || (size_t)s->OH * (size_t)s->OW < FG_VL || n > fg_conv_scratch(s))
        return 0;
    return n;
#endif
}

/* The row matrix of output plane od: block (c*kd + kz)*kw + kx holds Hp rows
 * of OW floats, row r being input row r - ph of plane od*sd + kz*dd - pd of
 * channel c at columns ow*sw + kx*dw - pw, with 0 outside the input (the
 * im2col of the height-1 convolution, with sh = 1). */
static void fg_rowmat_build(const fg_conv_shape *s, const float *x, int od, int Hp, float *rm)
{
    const int Cg = s->C / s->group;
    const int OW = s->OW;
    const size_t HW = (size_t)s->H * (size_t)s->W;
    const size_t DHW = (size_t)s->D * HW;
    const size_t plane = (size_t)Hp * (size_t)OW;
    /* rows r whose input row r - ph is inside: [ylo, yhi) */
    int ylo, yhi, c, kz, kx;
    fg_valid_range(Hp, 1, -s->ph, s->H, &ylo, &yhi);
    for (c = 0; c < Cg; ++c) {
        for (kz = 0; kz < s->kd; ++kz) {
            const int iz = od * s->sd + kz * s->dd - s->pd;
            const float *xz = x + (size_t)c * DHW + (size_t)(iz < 0 ? 0 : iz) * HW;
            for (kx = 0; kx < s->kw; ++kx, rm += plane) {
                const int offx = kx * s->dw - s->pw;
                int lo, hi;
                fg_valid_range(OW, s->sw, offx, s->W, &lo, &hi);
                if (iz < 0 || iz >= s->D || lo >= hi || ylo >= yhi) {
                    memset(rm, 0, plane * sizeof(float));
                    continue;
                }
                if (ylo > 0)
                    memset(rm, 0, (size_t)ylo * (size_t)OW * sizeof(float));
                if (yhi < Hp)
                    memset(rm + (size_t)yhi * (size_t)OW, 0,
                           (size_t)(Hp - yhi) * (size_t)OW * sizeof(float));
                fg_rows_fill(rm + (size_t)ylo * (size_t)OW,
                             xz + (size_t)(ylo - s->ph) * (size_t)s->W +
                                 ((ptrdiff_t)lo * s->sw + offx),
                             (size_t)s->W, yhi - ylo, OW, lo, hi, s->sw);
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
    for (od = 0; od < s->OD; ++od) {
        fg_rowmat_build(s, x, od, Hp, rm);
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

/* y[0..n) = act(y[0..n)) */
static void fg_act_row(float *y, int n, int act, float a, float b)
{
    int i;
    switch (act) {
    case FG_ACT_RELU:
        for (i = 0; i < n; ++i)
            y[i] = y[i] < 0.0f ? 0.0f : y[i];
        break;
    case FG_ACT_LEAKY:
        for (i = 0; i < n; ++i) {
            const float t = a * y[i];
            y[i] = y[i] >= 0.0f ? y[i] : t;
        }
        break;
    case FG_ACT_CLIP:
        for (i = 0; i < n; ++i) {
            const float t = y[i] < a ? a : y[i];
            y[i] = t > b ? b : t;
        }
        break;
    default:
        break;
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

void fg_conv_depthwise(const fg_conv_shape *s, const float *x, float *y, const float *w,
                       const float *bias, int act, float a, float b)
{
    const int mult = s->C > 0 ? s->K / s->C : 0;
    const size_t HW = (size_t)s->H * (size_t)s->W;
    const size_t DHW = (size_t)s->D * HW;
    const size_t taps = (size_t)s->kd * (size_t)s->kh * (size_t)s->kw;
    int k, od, oh, kz, ky, kx, ow;
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
                fg_act_row(o, s->OW, act, a, b);
            }
        }
    }
}
