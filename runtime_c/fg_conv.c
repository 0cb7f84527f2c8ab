/* fg_conv.c - convolution (C99, no heap, no stdio).
 *
 * fg_conv: per group, im2col into the caller's scratch (skipped for pointwise
 * convolutions, whose input already is the column matrix), then the packed
 * 4 x 16 register-tiled GEMM fg_gemm_a (fg_dense.c) with bias and activation
 * fused into its epilogue.
 * fg_conv_depthwise: direct form; each output row is initialized with the bias
 * and then updated tap after tap with an axpy over the output row (contiguous
 * input when the stride is 1), in fixed blocks of FG_CB columns that the
 * compiler vectorizes at -O2. Summation order per output: bias, then the taps
 * in (z, y, x) order.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "fg_runtime.h"

#if !defined(__clang__) && (defined(__FMA__) || defined(__FP_FAST_FMAF) || defined(__ARM_FEATURE_FMA))
#define FG_FMA(a, b, c) fmaf((a), (b), (c))
#else
#define FG_FMA(a, b, c) ((a) * (b) + (c))
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
    /* o*stride + off >= 0  <=>  o >= ceil(-off / stride) */
    int l = -fg_floordiv(off, stride);
    /* o*stride + off <= n - 1  <=>  o <= floor((n - 1 - off) / stride) */
    int h = fg_floordiv(n - 1 - off, stride) + 1;
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
static void fg_copy8(float *restrict o, const float *restrict xs)
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

static void fg_copy_short(float *restrict o, const float *restrict xs, int n)
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

static void fg_zero_short(float *o, int n)
{
    int i;
    if (n >= 8) {
        memset(o, 0, (size_t)n * sizeof(float));
        return;
    }
    for (i = 0; i < n; ++i)
        o[i] = 0.0f;
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
                        if (s->sw == 1 && lo == 0 && hi == OW) {
                            /* whole rows inside the input: a tight copy loop */
                            const size_t step = (size_t)s->sh * (size_t)s->W;
                            const float *src =
                                xz + (size_t)(ylo * s->sh + offy) * (size_t)s->W + (size_t)offx;
                            float *dst = o + (size_t)ylo * (size_t)OW;
                            for (oh = ylo; oh < yhi; ++oh, src += step, dst += OW)
                                fg_copy_short(dst, src, OW);
                            continue;
                        }
                        for (oh = ylo; oh < yhi; ++oh) {
                            const int iy = oh * s->sh + offy;
                            const float *xr = xz + (size_t)iy * (size_t)s->W;
                            float *orow = o + (size_t)oh * (size_t)OW;
                            if (lo > 0)
                                fg_zero_short(orow, lo);
                            if (s->sw == 1) {
                                fg_copy_short(orow + lo, xr + (lo + offx), hi - lo);
                            } else {
                                const int sw = s->sw;
                                const float *xs = xr + ((ptrdiff_t)lo * sw + offx);
                                int i;
                                for (i = 0; i < hi - lo; ++i)
                                    orow[lo + i] = xs[(ptrdiff_t)i * sw];
                            }
                            if (hi < OW)
                                fg_zero_short(orow + hi, OW - hi);
                        }
                    }
                    out += S;
                }
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
    int g;
    if (S == 0 || Kg <= 0)
        return;
    for (g = 0; g < G; ++g) {
        const float *xg = x + (size_t)g * in_group;
        const float *B = xg;
        if (!pointwise) {
            fg_im2col(s, xg, scratch);
            B = scratch;
        }
        fg_gemm_a(wp + (size_t)g * w_group, B, y + (size_t)g * (size_t)Kg * S, Kg, R, (int)S,
                  bias ? bias + (size_t)g * (size_t)Kg : NULL, act, a, b);
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
