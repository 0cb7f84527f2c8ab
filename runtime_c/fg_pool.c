/* fg_pool.c - max / average / global pooling (C99, no heap, no stdio).
 *
 * Windowed pools work row by row: each output row (fixed od, oh) is
 * initialized, then updated once per valid input row of the window and per
 * kernel column kx over the range of outputs whose tap lies inside the input
 * (computed in closed form, so the inner loops have no bounds checks). The
 * stride-1 updates run in fixed blocks of FG_PB contiguous columns, which
 * gcc/clang vectorize at -O2 (maxps / addps); the common 2-wide, stride-2
 * window has its own pairwise path.
 *
 * MaxPool: taps outside the input are ignored; a window without any input tap
 * yields -FLT_MAX (as onnxruntime). NaN inputs are not propagated.
 * AveragePool: sum of the taps inside the input divided by the number of taps
 * inside the padded input (count_include_pad = 1) or inside the input (0);
 * taps past the padded input (ceil_mode windows) never count. Summation order:
 * window rows in (z, y) order, kernel columns in x order (for 2-wide,
 * stride-2 windows the two taps of a row are added first); the unpadded
 * 2x2 / stride-2 pool computes ((x00 + x01) + (x10 + x11)) * 0.25.
 * Global pools: FG_PB interleaved partial sums / maxima per channel, combined
 * pairwise in a fixed order.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "fg_kernel.h"
#include "fg_runtime.h"

#define FG_PB 16
#define FG_POOL_KX 8 /* kernel columns whose valid range is computed once */
#define FG_NEG_FLT_MAX (-3.40282346638528859812e+38f)

/* Number of taps t in [0, k) with a <= start + t*d < b. */
static int fg_tap_count(int start, int k, int d, int a, int b)
{
    int tlo, thi;
    if (b <= a)
        return 0;
    tlo = a - start <= 0 ? 0 : (a - start + d - 1) / d;
    thi = fg_floordiv(b - 1 - start, d) + 1;
    if (thi > k)
        thi = k;
    return thi > tlo ? thi - tlo : 0;
}

static float fg_maxf(float a, float b)
{
    return b > a ? b : a;
}

/* o[i] = max(o[i], xs[i*sw]) for i < n */
static void fg_row_max(float *restrict o, const float *restrict xs, int n, int sw)
{
    int i = 0, j;
    if (sw == 1) {
        for (; i + FG_PB <= n; i += FG_PB) {
            for (j = 0; j < FG_PB; ++j)
                o[i + j] = fg_maxf(o[i + j], xs[i + j]);
        }
        for (; i < n; ++i)
            o[i] = fg_maxf(o[i], xs[i]);
    } else if (sw == 2) { /* a constant stride: vectorized with permutes */
        for (; i + FG_PB <= n; i += FG_PB) {
            for (j = 0; j < FG_PB; ++j)
                o[i + j] = fg_maxf(o[i + j], xs[2 * (i + j)]);
        }
        for (; i < n; ++i)
            o[i] = fg_maxf(o[i], xs[2 * i]);
    } else {
        for (; i < n; ++i)
            o[i] = fg_maxf(o[i], xs[(ptrdiff_t)i * sw]);
    }
}

/* o[i] += xs[i*sw] for i < n */
static void fg_row_add(float *restrict o, const float *restrict xs, int n, int sw)
{
    int i = 0, j;
    if (sw == 1) {
        for (; i + FG_PB <= n; i += FG_PB) {
            for (j = 0; j < FG_PB; ++j)
                o[i + j] += xs[i + j];
        }
        for (; i < n; ++i)
            o[i] += xs[i];
    } else {
        for (; i < n; ++i)
            o[i] += xs[(ptrdiff_t)i * sw];
    }
}

/* o[i] = op(o[i], op(xs[2i], xs[2i+1])) for i < n: the 2-wide stride-2 window */
static void fg_row_pair(float *restrict o, const float *restrict xs, int n, int is_max)
{
    int i;
    if (is_max) {
        for (i = 0; i < n; ++i)
            o[i] = fg_maxf(o[i], fg_maxf(xs[2 * i], xs[2 * i + 1]));
    } else {
        for (i = 0; i < n; ++i)
            o[i] += xs[2 * i] + xs[2 * i + 1];
    }
}

static void fg_pool_generic(const fg_pool_shape *s, const float *x, float *y, int is_max)
{
    const size_t HW = (size_t)s->H * (size_t)s->W;
    const size_t DHW = (size_t)s->D * HW;
    const size_t OS = (size_t)s->OD * (size_t)s->OH * (size_t)s->OW;
    /* the 2-wide, stride-2, undilated window: both taps valid on [lo2, hi2) */
    const int pair = s->kw == 2 && s->sw == 2 && s->dw == 1;
    int c, od, oh, ow, kz, ky, kx;
    int lo2 = 0, hi2 = 0;
    /* the valid output columns of the first kernel columns, once (divisions
     * per row cost as much as the row itself) */
    int xlo[FG_POOL_KX], xhi[FG_POOL_KX];
    for (kx = 0; kx < s->kw && kx < FG_POOL_KX; ++kx)
        fg_valid_range(s->OW, s->sw, kx * s->dw - s->pw, s->W, &xlo[kx], &xhi[kx]);
    if (pair) {
        int l1, h1;
        fg_valid_range(s->OW, 2, -s->pw, s->W, &lo2, &hi2);
        fg_valid_range(s->OW, 2, 1 - s->pw, s->W, &l1, &h1);
        lo2 = lo2 > l1 ? lo2 : l1;
        hi2 = hi2 < h1 ? hi2 : h1;
        if (hi2 < lo2)
            hi2 = lo2;
    }
    for (c = 0; c < s->C; ++c) {
        const float *xc = x + (size_t)c * DHW;
        float *yc = y + (size_t)c * OS;
        for (od = 0; od < s->OD; ++od) {
            const int z0 = od * s->sd - s->pd;
            for (oh = 0; oh < s->OH; ++oh) {
                const int y0 = oh * s->sh - s->ph;
                float *restrict o = yc + ((size_t)od * (size_t)s->OH + (size_t)oh) * (size_t)s->OW;
                const float init = is_max ? FG_NEG_FLT_MAX : 0.0f;
                for (ow = 0; ow < s->OW; ++ow)
                    o[ow] = init;
                for (kz = 0; kz < s->kd; ++kz) {
                    const int iz = z0 + kz * s->dd;
                    if (iz < 0 || iz >= s->D)
                        continue;
                    for (ky = 0; ky < s->kh; ++ky) {
                        const int iy = y0 + ky * s->dh;
                        const float *xr;
                        if (iy < 0 || iy >= s->H)
                            continue;
                        xr = xc + (size_t)iz * HW + (size_t)iy * (size_t)s->W;
                        if (pair && hi2 > lo2) {
                            /* columns with both taps inside: pairwise; the
                             * (at most one-tap) edges: per tap below */
                            const int off0 = -s->pw;
                            fg_row_pair(o + lo2, xr + (2 * lo2 + off0), hi2 - lo2, is_max);
                            for (kx = 0; kx < 2; ++kx) {
                                const int off = kx - s->pw;
                                int lo, hi, l, h;
                                fg_valid_range(s->OW, 2, off, s->W, &lo, &hi);
                                /* [lo, hi) minus [lo2, hi2) */
                                l = lo;
                                h = hi < lo2 ? hi : lo2;
                                for (ow = l; ow < h; ++ow)
                                    o[ow] = is_max ? fg_maxf(o[ow], xr[2 * ow + off])
                                                   : o[ow] + xr[2 * ow + off];
                                l = lo > hi2 ? lo : hi2;
                                for (ow = l; ow < hi; ++ow)
                                    o[ow] = is_max ? fg_maxf(o[ow], xr[2 * ow + off])
                                                   : o[ow] + xr[2 * ow + off];
                            }
                            continue;
                        }
                        for (kx = 0; kx < s->kw; ++kx) {
                            const int off = kx * s->dw - s->pw;
                            int lo, hi;
                            if (kx < FG_POOL_KX) {
                                lo = xlo[kx];
                                hi = xhi[kx];
                            } else {
                                fg_valid_range(s->OW, s->sw, off, s->W, &lo, &hi);
                            }
                            if (lo >= hi)
                                continue;
                            if (is_max)
                                fg_row_max(o + lo, xr + ((ptrdiff_t)lo * s->sw + off), hi - lo,
                                           s->sw);
                            else
                                fg_row_add(o + lo, xr + ((ptrdiff_t)lo * s->sw + off), hi - lo,
                                           s->sw);
                        }
                    }
                }
                if (!is_max) {
                    int cdh;
                    if (s->count_include_pad) {
                        cdh = fg_tap_count(z0, s->kd, s->dd, -s->pd, s->D + s->pd_end) *
                              fg_tap_count(y0, s->kh, s->dh, -s->ph, s->H + s->ph_end);
                    } else {
                        cdh = fg_tap_count(z0, s->kd, s->dd, 0, s->D) *
                              fg_tap_count(y0, s->kh, s->dh, 0, s->H);
                    }
                    for (ow = 0; ow < s->OW; ++ow) {
                        const int x0 = ow * s->sw - s->pw;
                        const int cw = s->count_include_pad
                                           ? fg_tap_count(x0, s->kw, s->dw, -s->pw,
                                                          s->W + s->pw_end)
                                           : fg_tap_count(x0, s->kw, s->dw, 0, s->W);
                        const int cnt = cdh * cw;
                        o[ow] = cnt > 0 ? o[ow] / (float)cnt : 0.0f;
                    }
                }
            }
        }
    }
}

/* The common 2x2 window, stride 2, no padding, every window inside the
 * input (depth, if any, untouched): a direct loop over the outputs. */
static int fg_pool_is_2x2(const fg_pool_shape *s)
{
    return s->kd == 1 && s->sd == 1 && s->pd == 0 && s->pd_end == 0 && s->OD == s->D &&
           s->kh == 2 && s->kw == 2 && s->sh == 2 && s->sw == 2 && s->dh == 1 && s->dw == 1 &&
           s->ph == 0 && s->pw == 0 && 2 * s->OH <= s->H && 2 * s->OW <= s->W;
}

static void fg_pool_2x2(const fg_pool_shape *s, const float *x, float *y, int is_max)
{
    const size_t planes = (size_t)s->C * (size_t)s->D;
    const size_t W = (size_t)s->W;
    size_t p;
    int oh, ow;
    for (p = 0; p < planes; ++p) {
        const float *xp = x + p * (size_t)s->H * W;
        float *yp = y + p * (size_t)s->OH * (size_t)s->OW;
        for (oh = 0; oh < s->OH; ++oh) {
            const float *restrict r0 = xp + (size_t)(2 * oh) * W;
            const float *restrict r1 = r0 + W;
            float *restrict o = yp + (size_t)oh * (size_t)s->OW;
            if (is_max) {
                for (ow = 0; ow < s->OW; ++ow)
                    o[ow] = fg_maxf(fg_maxf(r0[2 * ow], r0[2 * ow + 1]),
                                    fg_maxf(r1[2 * ow], r1[2 * ow + 1]));
            } else {
                for (ow = 0; ow < s->OW; ++ow)
                    o[ow] = ((r0[2 * ow] + r0[2 * ow + 1]) + (r1[2 * ow] + r1[2 * ow + 1])) * 0.25f;
            }
        }
    }
}

/* MaxPool on 2-D planes, separably (ResNet's 3x3/2 stem pool, SqueezeNet's
 * ceil-mode 3x3/2 pools): each input row is reduced horizontally once,
 * h[ow] = max of its kw taps of output column ow (taps outside the input
 * ignored), into a ring of the kh most recent such rows; each output row is
 * then the max of its window's rows of h, which consecutive output rows share
 * (with stride 2, every row is reduced once instead of once per window that
 * holds it). Same result as fg_pool_generic: the maximum of the same taps,
 * started from -FLT_MAX, NaN inputs ignored. */
#define FG_POOL_HR 8   /* rows of the ring: kh at most */
#define FG_POOL_HW 512 /* floats per ring row: OW at most */

static int fg_maxpool_sep_fits(const fg_pool_shape *s)
{
    return s->D == 1 && s->OD == 1 && s->kd == 1 && s->pd == 0 && s->dh == 1 &&
           s->kh <= FG_POOL_HR && s->OW <= FG_POOL_HW;
}

/* h[ow] for ow < OW from the input row xr; [lo, hi): the outputs whose taps are
 * all inside the row */
static void fg_hmax_row(const fg_pool_shape *s, const float *restrict xr, float *restrict h,
                        int lo, int hi)
{
    int i, kx;
    if (lo >= hi)
        lo = hi = s->OW; /* every output checks its taps */
    for (i = lo > 0 ? 0 : hi; i < s->OW; i = i + 1 == lo ? hi : i + 1) {
        float m = FG_NEG_FLT_MAX;
        for (kx = 0; kx < s->kw; ++kx) {
            const int ix = i * s->sw + kx * s->dw - s->pw;
            if (ix >= 0 && ix < s->W)
                m = fg_maxf(m, xr[ix]);
        }
        h[i] = m;
    }
    if (lo >= hi)
        return;
    if (s->sw == 2 && s->dw == 1 && s->kw == 3) {
        /* one loop, the three taps by stride-2 loads (vectorized with permutes) */
        const float *restrict xs = xr + (2 * lo - s->pw);
        float *restrict o = h + lo;
        const int n = hi - lo;
        for (i = 0; i < n; ++i)
            o[i] = fg_maxf(fg_maxf(fg_maxf(FG_NEG_FLT_MAX, xs[2 * i]), xs[2 * i + 1]),
                           xs[2 * i + 2]);
        return;
    }
    for (i = lo; i < hi; ++i)
        h[i] = FG_NEG_FLT_MAX;
    for (kx = 0; kx < s->kw; ++kx)
        fg_row_max(h + lo, xr + ((ptrdiff_t)lo * s->sw + kx * s->dw - s->pw), hi - lo, s->sw);
}

static void fg_maxpool_sep(const fg_pool_shape *s, const float *x, float *y)
{
    float ring[FG_POOL_HR][FG_POOL_HW];
    int tag[FG_POOL_HR];
    const size_t HW = (size_t)s->H * (size_t)s->W, OHW = (size_t)s->OH * (size_t)s->OW;
    int lo, hi, lo1, hi1, c, oh, ky, i;
    /* outputs whose first and last taps are inside the row */
    fg_valid_range(s->OW, s->sw, -s->pw, s->W, &lo, &hi);
    fg_valid_range(s->OW, s->sw, (s->kw - 1) * s->dw - s->pw, s->W, &lo1, &hi1);
    lo = lo > lo1 ? lo : lo1;
    hi = hi < hi1 ? hi : hi1;
    for (c = 0; c < s->C; ++c) {
        const float *xc = x + (size_t)c * HW;
        for (i = 0; i < s->kh; ++i)
            tag[i] = -1;
        for (oh = 0; oh < s->OH; ++oh) {
            float *restrict o = y + (size_t)c * OHW + (size_t)oh * (size_t)s->OW;
            const float *hr[FG_POOL_HR];
            int nr = 0;
            for (ky = 0; ky < s->kh; ++ky) {
                const int iy = oh * s->sh + ky - s->ph, slot = iy % s->kh;
                if (iy < 0 || iy >= s->H)
                    continue;
                if (tag[slot] != iy) { /* the window's rows are kh consecutive rows */
                    fg_hmax_row(s, xc + (size_t)iy * (size_t)s->W, ring[slot], lo, hi);
                    tag[slot] = iy;
                }
                hr[nr++] = ring[slot];
            }
            if (nr == 3) { /* one pass (the 3-row window inside the input) */
                const float *restrict h0 = hr[0], *restrict h1 = hr[1], *restrict h2 = hr[2];
                for (i = 0; i < s->OW; ++i)
                    o[i] = fg_maxf(fg_maxf(fg_maxf(FG_NEG_FLT_MAX, h0[i]), h1[i]), h2[i]);
                continue;
            }
            for (i = 0; i < s->OW; ++i)
                o[i] = FG_NEG_FLT_MAX;
            for (ky = 0; ky < nr; ++ky)
                fg_row_max(o, hr[ky], s->OW, 1);
        }
    }
}

void fg_maxpool(const fg_pool_shape *s, const float *x, float *y)
{
    if (fg_pool_is_2x2(s))
        fg_pool_2x2(s, x, y, 1);
    else if (fg_maxpool_sep_fits(s))
        fg_maxpool_sep(s, x, y);
    else
        fg_pool_generic(s, x, y, 1);
}

void fg_avgpool(const fg_pool_shape *s, const float *x, float *y)
{
    if (fg_pool_is_2x2(s))
        fg_pool_2x2(s, x, y, 0);
    else
        fg_pool_generic(s, x, y, 0);
}

#if defined(__AVX512F__)
/* the sum of xc[0 .. S) as the plain-C loop below computes it: lane j of acc
 * is its partial sum acc[j] (the tail added by a merge-masked add, so the
 * lanes past it keep their value exactly), then the same pairwise tree */
FG_INLINE float fg_sum16(const float *xc, int S)
{
    __m512 acc = _mm512_setzero_ps();
    __m256 h;
    __m128 q;
    int i = 0;
    for (; i + FG_PB <= S; i += FG_PB)
        acc = _mm512_add_ps(acc, _mm512_loadu_ps(xc + i));
    if (i < S) {
        const __mmask16 m = (__mmask16)((1u << (S - i)) - 1u);
        acc = _mm512_mask_add_ps(acc, m, acc, _mm512_maskz_loadu_ps(m, xc + i));
    }
    h = _mm256_add_ps(_mm512_castps512_ps256(acc),
                      _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)));
    q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
    return _mm_cvtss_f32(q);
}
#endif

void fg_global_avgpool(const float *x, float *y, int C, int S)
{
    int c, i, j;
    for (c = 0; c < C; ++c) {
        const float *restrict xc = x + (size_t)c * (size_t)S;
        float acc[FG_PB];
        float t;
#if defined(__AVX512F__) && FG_PB == 16
        if (S > 0) {
            y[c] = fg_sum16(xc, S) / (float)S;
            continue;
        }
#endif
        for (j = 0; j < FG_PB; ++j)
            acc[j] = 0.0f;
        for (i = 0; i + FG_PB <= S; i += FG_PB) {
            for (j = 0; j < FG_PB; ++j)
                acc[j] += xc[i + j];
        }
        for (j = 0; i < S; ++i, ++j)
            acc[j] += xc[i];
        for (j = FG_PB / 2; j > 0; j /= 2) {
            int q;
            for (q = 0; q < j; ++q)
                acc[q] += acc[q + j];
        }
        t = acc[0];
        y[c] = S > 0 ? t / (float)S : 0.0f;
    }
}

void fg_global_maxpool(const float *x, float *y, int C, int S)
{
    int c, i, j;
    for (c = 0; c < C; ++c) {
        const float *restrict xc = x + (size_t)c * (size_t)S;
        float acc[FG_PB];
        for (j = 0; j < FG_PB; ++j)
            acc[j] = FG_NEG_FLT_MAX;
        for (i = 0; i + FG_PB <= S; i += FG_PB) {
            for (j = 0; j < FG_PB; ++j)
                acc[j] = fg_maxf(acc[j], xc[i + j]);
        }
        for (j = 0; i < S; ++i, ++j)
            acc[j] = fg_maxf(acc[j], xc[i]);
        for (j = FG_PB / 2; j > 0; j /= 2) {
            int q;
            for (q = 0; q < j; ++q)
                acc[q] = fg_maxf(acc[q], acc[q + j]);
        }
        y[c] = acc[0];
    }
}
