/* fg_act.c - elementwise activations (C99, no heap, no stdio).
 *
 * In place allowed (x == y). Every kernel walks the data in fixed blocks of
 * FG_EB elements: the block is first read into a local array and then
 * written, which is correct when x == y and lets gcc/clang vectorize both
 * loops at -O2 (fixed trip count, no runtime alias check needed); a scalar
 * loop handles the last n % FG_EB elements. Kernels built on libm
 * transcendentals (expf, tanhf, erff, logf, sqrtf...) stay scalar unless the
 * user's flags allow vector math; Sigmoid, on the critical path of the
 * EfficientNet-class models (SiLU = x * sigmoid(x)), has its own branch-free
 * exponential (fg_exp_poly) that vectorizes.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fg_kernel.h"
#include "fg_runtime.h"

#define FG_EB 16

/* y[i] = EXPR(v) with v = x[i]; EXPR may use the names v and the kernel's
 * parameters. */
#define FG_MAP(EXPR)                                                                             \
    do {                                                                                         \
        size_t i_ = 0;                                                                           \
        int j_;                                                                                  \
        for (; i_ + FG_EB <= n; i_ += FG_EB) {                                                   \
            float t_[FG_EB];                                                                     \
            for (j_ = 0; j_ < FG_EB; ++j_)                                                       \
                t_[j_] = x[i_ + (size_t)j_];                                                     \
            for (j_ = 0; j_ < FG_EB; ++j_) {                                                     \
                const float v = t_[j_];                                                          \
                t_[j_] = (EXPR);                                                                 \
            }                                                                                    \
            for (j_ = 0; j_ < FG_EB; ++j_)                                                       \
                y[i_ + (size_t)j_] = t_[j_];                                                     \
        }                                                                                        \
        for (; i_ < n; ++i_) {                                                                   \
            const float v = x[i_];                                                               \
            y[i_] = (EXPR);                                                                      \
        }                                                                                        \
    } while (0)

/* v >= 0 ? v : neg, with both operands computed unconditionally (a
 * conditional multiply is not if-converted under -ftrapping-math) */
static float fg_select_nonneg(float v, float neg)
{
    return v >= 0.0f ? v : neg;
}

/* min(max(t, 0), 1) with compares (vectorizes; fmaxf/fminf may not) */
static float fg_unit_clamp(float t)
{
    const float u = t < 0.0f ? 0.0f : t;
    return u > 1.0f ? 1.0f : u;
}

static float fg_softplusf(float v)
{
    /* log(1 + e^v) = max(v, 0) + log1p(e^-|v|) */
    const float m = v > 0.0f ? v : 0.0f;
    return m + log1pf(expf(-fabsf(v)));
}

void fg_relu(const float *x, float *y, size_t n)
{
    FG_MAP(v < 0.0f ? 0.0f : v);
}

void fg_leaky_relu(const float *x, float *y, size_t n, float alpha)
{
    FG_MAP(fg_select_nonneg(v, alpha * v));
}

void fg_clip(const float *x, float *y, size_t n, float lo, float hi)
{
    FG_MAP((v < lo ? lo : v) > hi ? hi : (v < lo ? lo : v));
}

void fg_elu(const float *x, float *y, size_t n, float alpha)
{
    FG_MAP(v >= 0.0f ? v : alpha * expm1f(v));
}

void fg_selu(const float *x, float *y, size_t n, float alpha, float gamma)
{
    FG_MAP(v > 0.0f ? gamma * v : gamma * (alpha * expm1f(v)));
}

void fg_sigmoid(const float *x, float *y, size_t n)
{
    FG_MAP(fg_sigmoidf(v));
}

void fg_hard_sigmoid(const float *x, float *y, size_t n, float alpha, float beta)
{
    FG_MAP(fg_unit_clamp(alpha * v + beta));
}

void fg_hard_swish(const float *x, float *y, size_t n)
{
    /* ONNX HardSwish: x * max(0, min(1, x/6 + 1/2)) */
    FG_MAP(v * fg_unit_clamp(v * (1.0f / 6.0f) + 0.5f));
}

void fg_tanh(const float *x, float *y, size_t n)
{
    FG_MAP(tanhf(v));
}

void fg_softplus(const float *x, float *y, size_t n)
{
    FG_MAP(fg_softplusf(v));
}

void fg_exp(const float *x, float *y, size_t n)
{
    FG_MAP(expf(v));
}

void fg_log(const float *x, float *y, size_t n)
{
    FG_MAP(logf(v));
}

void fg_sqrt(const float *x, float *y, size_t n)
{
    FG_MAP(sqrtf(v));
}

void fg_abs(const float *x, float *y, size_t n)
{
    FG_MAP(fabsf(v));
}

void fg_neg(const float *x, float *y, size_t n)
{
    FG_MAP(-v);
}

void fg_reciprocal(const float *x, float *y, size_t n)
{
    FG_MAP(1.0f / v);
}

void fg_erf(const float *x, float *y, size_t n)
{
    FG_MAP(erff(v));
}

void fg_gelu(const float *x, float *y, size_t n)
{
    FG_MAP(0.5f * v * (1.0f + erff(v * 0.70710678118654752440f)));
}

void fg_gelu_tanh(const float *x, float *y, size_t n)
{
    FG_MAP(0.5f * v * (1.0f + tanhf(0.79788456080286535588f * (v + 0.044715f * v * v * v))));
}

void fg_mish(const float *x, float *y, size_t n)
{
    FG_MAP(v * tanhf(fg_softplusf(v)));
}

void fg_softsign(const float *x, float *y, size_t n)
{
    FG_MAP(v / (1.0f + fabsf(v)));
}

void fg_thresholded_relu(const float *x, float *y, size_t n, float alpha)
{
    FG_MAP(v > alpha ? v : 0.0f);
}

void fg_sign(const float *x, float *y, size_t n)
{
    /* 0 stays 0 (and NaN stays NaN): v is returned when it is neither > 0 nor < 0 */
    FG_MAP(v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : v));
}

void fg_floor(const float *x, float *y, size_t n)
{
    FG_MAP(floorf(v));
}

void fg_ceil(const float *x, float *y, size_t n)
{
    FG_MAP(ceilf(v));
}

void fg_round(const float *x, float *y, size_t n)
{
    /* ONNX Round: halves to even, which is the default rounding mode nearbyintf uses */
    FG_MAP(nearbyintf(v));
}

void fg_copy(const float *x, float *y, size_t n)
{
    if (x != y && n > 0)
        memmove(y, x, n * sizeof(float));
}

void fg_fill(float *y, size_t n, float value)
{
    size_t i = 0;
    int j;
    for (; i + FG_EB <= n; i += FG_EB) {
        for (j = 0; j < FG_EB; ++j)
            y[i + (size_t)j] = value;
    }
    for (; i < n; ++i)
        y[i] = value;
}

void fg_channel_affine(const float *x, float *y, int outer, int C, int inner, const float *scale,
                       const float *shift)
{
    int o, c;
    for (o = 0; o < outer; ++o) {
        for (c = 0; c < C; ++c) {
            const size_t off = ((size_t)o * (size_t)C + (size_t)c) * (size_t)inner;
            const float sc = scale[c], sh = shift[c];
            const float *xs = x + off;
            float *ys = y + off;
            size_t i = 0;
            int j;
            for (; i + FG_EB <= (size_t)inner; i += FG_EB) {
                float t[FG_EB];
                for (j = 0; j < FG_EB; ++j)
                    t[j] = xs[i + (size_t)j];
                for (j = 0; j < FG_EB; ++j)
                    ys[i + (size_t)j] = FG_FMA(t[j], sc, sh);
            }
            for (; i < (size_t)inner; ++i)
                ys[i] = FG_FMA(xs[i], sc, sh);
        }
    }
}
