/* fg_kernel.h - compiler configuration and the fused activation epilogue shared
 * by the kernel sources (private: not part of the API in fg_runtime.h; only
 * fg_*.c include it). */
#ifndef FG_KERNEL_H
#define FG_KERNEL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fg_runtime.h" /* FG_ACT_* for the epilogue below */

/* fmaf only where it is one instruction: a libm call would be far slower than
 * the separate multiply and add. clang contracts a*b+c itself under its
 * default -ffp-contract=on, so it gets the plain expression. */
#if !defined(__clang__) && (defined(__FMA__) || defined(__FP_FAST_FMAF) || defined(__ARM_FEATURE_FMA))
#define FG_FMA(a, b, c) fmaf((a), (b), (c))
#else
#define FG_FMA(a, b, c) ((a) * (b) + (c))
#endif

/* Fixed-trip loops are unrolled before vectorization (gcc -O2 does not do it
 * by itself); FG_UNROLL_WIDE unrolls fg_sparse.c's register blocks completely. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8
#define FG_UNROLL _Pragma("GCC unroll 16")
#define FG_UNROLL_WIDE _Pragma("GCC unroll 64")
#define FG_NOUNROLL _Pragma("GCC unroll 1")
#else
#define FG_UNROLL
#define FG_UNROLL_WIDE
#define FG_NOUNROLL
#endif

/* gcc tuned for AMD Zen folds the B load into every FMA that uses it;
 * `+ 0.0f` (not an IEEE identity, so kept; it only turns -0.0f into +0.0f)
 * makes it load each B vector once. */
#if defined(__GNUC__) && !defined(__clang__) &&                                                  \
    (defined(__tune_znver1__) || defined(__tune_znver2__) || defined(__tune_znver3__) ||         \
     defined(__tune_znver4__) || defined(__tune_znver5__))
#define FG_BREG(v) ((v) + 0.0f)
#else
#define FG_BREG(v) (v)
#endif

#if defined(__GNUC__) || defined(__clang__)
#define FG_INLINE static inline __attribute__((always_inline))
#define FG_NOINLINE static __attribute__((noinline))
/* no instruction emitted: the compiler forgets what it knew about the value v */
#define FG_OPAQUE(v) __asm__("" : "+r"(v))
#else
#define FG_INLINE static inline
#define FG_NOINLINE static
#define FG_OPAQUE(v) ((void)0)
#endif

/* ---- window geometry of fg_conv.c and fg_pool.c ---- */

/* floor(a / b) for b > 0 */
FG_INLINE int fg_floordiv(int a, int b)
{
    const int q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* Outputs o in [*lo, *hi) whose tap i = o*stride + off lies in [0, n). */
FG_INLINE void fg_valid_range(int n_out, int stride, int off, int n, int *lo, int *hi)
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

/* e^v within about 2 ulp for v in [-87, 88] (v is clamped to that range: e^-87 ~ 1.6e-38;
 * NaN gives NaN),
 * branch-free so that loops vectorize it without a vector libm: v = n ln2 + r with
 * |r| <= ln2/2 (Cody-Waite: n * ln2_hi is exact), e^r by Cephes' expf polynomial, and 2^n
 * built in the exponent bits. Without FMA the same formula, with rounded products.
 * fg_exp16 below is the same sequence on 16 lanes. */
FG_INLINE float fg_exp_poly(float v)
{
    const float lo = v >= -87.0f ? v : -87.0f; /* NaN -> -87 (keeps the conversion defined) */
    const float c = lo > 88.0f ? 88.0f : lo;
    const float n = (c * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round(c/ln2) */
    const float r = FG_FMA(n, -1.42860677e-6f, FG_FMA(n, -0.693145752f, c));
    float p = 1.9875691500e-4f;
    const uint32_t bits = (uint32_t)((int32_t)n + 127) << 23; /* 2^n: n + 127 in [1, 254] */
    float scale;
    p = FG_FMA(p, r, 1.3981999507e-3f);
    p = FG_FMA(p, r, 8.3334519073e-3f);
    p = FG_FMA(p, r, 4.1665795894e-2f);
    p = FG_FMA(p, r, 1.6666665459e-1f);
    p = FG_FMA(p, r, 5.0000001201e-1f);
    p = FG_FMA(p * r, r, r) + 1.0f;
    memcpy(&scale, &bits, sizeof scale);
    return v == v ? p * scale : v; /* NaN stays NaN */
}

/* 1 / (1 + e^-v): accurate on both sides (e^-v large or small), no branch */
FG_INLINE float fg_sigmoidf(float v)
{
    return 1.0f / (1.0f + fg_exp_poly(-v));
}

/* SiLU as ONNX's Sigmoid followed by Mul computes it: v * sigmoid(v) */
FG_INLINE float fg_siluf(float v)
{
    return v * fg_sigmoidf(v);
}

/* v[i] = fg_siluf(v[i]) for i < n, in fixed blocks the compiler vectorizes at -O2;
 * kept out of line (its exponential inlined into every epilogue would put scalar code
 * into the kernels' hot functions), one copy per source that uses it */
#if defined(__GNUC__) || defined(__clang__)
static __attribute__((noinline, unused)) void fg_silu_row(float *v, int n)
#else
static void fg_silu_row(float *v, int n)
#endif
{
    int i = 0, j;
    for (; i + 16 <= n; i += 16) {
        float t[16];
        for (j = 0; j < 16; ++j)
            t[j] = v[i + j];
        for (j = 0; j < 16; ++j)
            t[j] = fg_siluf(t[j]);
        for (j = 0; j < 16; ++j)
            v[i + j] = t[j];
    }
    for (; i < n; ++i)
        v[i] = fg_siluf(v[i]);
}

/* The fused activation epilogue of fg_dense, fg_conv and the sparse kernels:
 * v[0..n) = act(v[0..n)) in place (act: FG_ACT_* of fg_runtime.h). Called right
 * after a block of outputs was stored (still in L1), as a separate loop: the
 * conditionals need the loop vectorizer's if-conversion (the SLP vectorizer
 * does not vectorize branches), and FG_NOUNROLL keeps gcc -O3 from unrolling
 * the loop into scalar code first. */
FG_INLINE void fg_act_vec(float *restrict v, int n, int act, float a, float b)
{
    int j;
    switch (act) {
    case FG_ACT_RELU:
        FG_NOUNROLL
        for (j = 0; j < n; ++j)
            v[j] = v[j] < 0.0f ? 0.0f : v[j];
        break;
    case FG_ACT_LEAKY:
        FG_NOUNROLL
        for (j = 0; j < n; ++j) {
            const float t = a * v[j]; /* unconditional: lets it if-convert */
            v[j] = v[j] >= 0.0f ? v[j] : t;
        }
        break;
    case FG_ACT_CLIP:
        FG_NOUNROLL
        for (j = 0; j < n; ++j) {
            const float t = v[j] < a ? a : v[j];
            v[j] = t > b ? b : t;
        }
        break;
    case FG_ACT_SILU:
        fg_silu_row(v, n);
        break;
    default:
        break;
    }
}


#if defined(__AVX512F__)
#include <immintrin.h>

/* fg_siluf on 16 lanes: e^-v as fg_exp_poly computes it (the clamps as max/min, NaN
 * going to -87 as there; the rounding to an integer n and the scaling by 2^n are the
 * same operations), then v / (1 + e): one rounding less than v * (1 / (1 + e)), and
 * faster than the reciprocal (vrcp14ps and a Newton step: measured). A NaN v gives NaN
 * through the division. */
FG_INLINE __m512 fg_silu16(__m512 v)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 t = _mm512_sub_ps(_mm512_setzero_ps(), v);
    const __m512 c =
        _mm512_min_ps(_mm512_max_ps(t, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(c, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-1.42860677e-6f),
                                     _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693145752f), c));
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), one);
    return _mm512_div_ps(v, _mm512_add_ps(one, _mm512_scalef_ps(p, n)));
}

/* the fused activation on 16 floats, with the scalar epilogues' semantics
 * (NaN and -0.0 pass through Relu unchanged); va, vb: its parameters */
FG_INLINE __m512 fg_act16(__m512 t, int act, __m512 va, __m512 vb)
{
    const __m512 z = _mm512_setzero_ps();
    switch (act) {
    case FG_ACT_RELU: /* t < 0 ? 0 : t */
        return _mm512_max_ps(z, t);
    case FG_ACT_LEAKY: /* t >= 0 ? t : a*t */
        return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(t, z, _CMP_GE_OQ), _mm512_mul_ps(va, t),
                                    t);
    case FG_ACT_CLIP: /* u = t < a ? a : t; u > b ? b : u */
        return _mm512_min_ps(vb, _mm512_max_ps(va, t));
    case FG_ACT_SILU:
        return fg_silu16(t);
    default:
        return t;
    }
}
#endif

/* ---- fg_convgemm.c: fg_conv's packed-panel GEMM --------------------------- */

/* Where row r = (cz, y, x) of a patch matrix B starts, relative to its first
 * row (r = (cz*kh + y)*kw + x, R = ncz*kh*kw rows):
 * cz*czstep + (y / kph)*ystep + (y % kph)*phstep + x*xstep (kph > 1: the rows
 * of a vertical stride kph, split by phase y % kph; kph = 1: cz*czstep +
 * y*ystep + x*xstep). The im2col matrix (or a pointwise convolution's input)
 * is ncz = R, kh = kw = kph = 1, czstep = its row stride. */
typedef struct {
    int ncz;       /* outer tap loop ((C/group) * kd for a convolution) */
    int kh, kw;    /* inner tap loops                                   */
    int kph;       /* vertical phases (1, or the vertical stride)       */
    size_t czstep; /* floats between consecutive cz rows / blocks       */
    size_t ystep;  /* floats between consecutive y taps of one phase    */
    size_t phstep; /* floats between consecutive phases                 */
    size_t xstep;  /* floats between consecutive x taps                 */
} fg_taps;

/* the y part of the offset of tap y + 1, from tap y's (yo) and its phase *a
 * (updated): (y / kph)*ystep + (y % kph)*phstep without a division */
FG_INLINE size_t fg_taps_next_y(const fg_taps *t, size_t yo, int *a)
{
    if (t->kph == 1)
        return yo + t->ystep;
    if (++*a == t->kph) {
        *a = 0;
        return yo + t->ystep - (size_t)(t->kph - 1) * t->phstep;
    }
    return yo + t->phstep;
}

/* y[m*ldy + n] = act(bias[m] + sum_r A[m][r] * B(r, n)) for m < M, n < N, with
 * Ap packed as fg_gemm_a's (blocks of FG_MBLOCK rows, R columns), B(r, n) =
 * b[offset of row r (t) + n]; bias may be NULL; panel: R * FG_CONV_PANEL_MAX floats. */
void fg_pgemm(const float *Ap, const float *b, const fg_taps *t, int M, int N, float *y,
              size_t ldy, const float *bias, int act, float pa, float pb, float *panel);

#endif /* FG_KERNEL_H */
