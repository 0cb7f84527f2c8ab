/* ref_kernels.c - naive reference kernels (see ref_kernels.h). */
#include "ref_kernels.h"

#include <math.h>
#include <string.h>

float ref_act(float v, int act, float a, float b)
{
    switch (act) {
    case FG_ACT_RELU:
        return v < 0.0f ? 0.0f : v;
    case FG_ACT_LEAKY:
        return v >= 0.0f ? v : a * v;
    case FG_ACT_CLIP:
        return v < a ? a : (v > b ? b : v);
    case FG_ACT_SILU: /* in double: the reference does not share fg_exp_poly */
        return (float)((double)v / (1.0 + exp(-(double)v)));
    default:
        return v;
    }
}

void ref_dense(const float *x, float *y, int M, int K, int N, const float *B, const float *bias,
               int act, float a, float b)
{
    int m, n, k;
    for (m = 0; m < M; ++m) {
        for (n = 0; n < N; ++n) {
            float s = 0.0f;
            for (k = 0; k < K; ++k)
                s += x[(size_t)m * K + k] * B[(size_t)k * N + n];
            if (bias)
                s += bias[n];
            y[(size_t)m * N + n] = ref_act(s, act, a, b);
        }
    }
}

void ref_gemm(const float *A, const float *B, float *C, int M, int K, int N, const float *bias,
              int act, float a, float b)
{
    int m, n, k;
    for (m = 0; m < M; ++m) {
        for (n = 0; n < N; ++n) {
            float s = 0.0f;
            for (k = 0; k < K; ++k)
                s += A[(size_t)m * K + k] * B[(size_t)k * N + n];
            if (bias)
                s += bias[m];
            C[(size_t)m * N + n] = ref_act(s, act, a, b);
        }
    }
}

void ref_matmul(const float *a, const float *b, float *y, int batch, int M, int K, int N,
                size_t stride_a, size_t stride_b)
{
    int i;
    for (i = 0; i < batch; ++i)
        ref_gemm(a + i * stride_a, b + i * stride_b, y + (size_t)i * M * N, M, K, N, NULL,
                 FG_ACT_NONE, 0.0f, 0.0f);
}

void ref_conv(const fg_conv_shape *s, const float *x, float *y, const float *w, const float *bias,
              int act, float a, float b)
{
    const int Cg = s->C / s->group, Kg = s->K / s->group;
    int k, od, oh, ow, c, kz, ky, kx;
    for (k = 0; k < s->K; ++k) {
        const int g = k / Kg;
        for (od = 0; od < s->OD; ++od)
            for (oh = 0; oh < s->OH; ++oh)
                for (ow = 0; ow < s->OW; ++ow) {
                    float acc = 0.0f;
                    for (c = 0; c < Cg; ++c)
                        for (kz = 0; kz < s->kd; ++kz)
                            for (ky = 0; ky < s->kh; ++ky)
                                for (kx = 0; kx < s->kw; ++kx) {
                                    const int iz = od * s->sd - s->pd + kz * s->dd;
                                    const int iy = oh * s->sh - s->ph + ky * s->dh;
                                    const int ix = ow * s->sw - s->pw + kx * s->dw;
                                    const int ci = g * Cg + c;
                                    if (iz < 0 || iz >= s->D || iy < 0 || iy >= s->H || ix < 0 ||
                                        ix >= s->W)
                                        continue;
                                    acc += x[(((size_t)ci * s->D + iz) * s->H + iy) * s->W + ix] *
                                           w[((((size_t)k * Cg + c) * s->kd + kz) * s->kh + ky) *
                                                 s->kw +
                                             kx];
                                }
                    if (bias)
                        acc += bias[k];
                    y[(((size_t)k * s->OD + od) * s->OH + oh) * s->OW + ow] =
                        ref_act(acc, act, a, b);
                }
    }
}

void ref_im2col(const fg_conv_shape *s, const float *x, float *cols)
{
    const int Cg = s->C / s->group;
    const size_t S = (size_t)s->OD * s->OH * s->OW;
    int c, kz, ky, kx, od, oh, ow;
    size_t r = 0;
    for (c = 0; c < Cg; ++c)
        for (kz = 0; kz < s->kd; ++kz)
            for (ky = 0; ky < s->kh; ++ky)
                for (kx = 0; kx < s->kw; ++kx, ++r)
                    for (od = 0; od < s->OD; ++od)
                        for (oh = 0; oh < s->OH; ++oh)
                            for (ow = 0; ow < s->OW; ++ow) {
                                const int iz = od * s->sd - s->pd + kz * s->dd;
                                const int iy = oh * s->sh - s->ph + ky * s->dh;
                                const int ix = ow * s->sw - s->pw + kx * s->dw;
                                const size_t col = ((size_t)od * s->OH + oh) * s->OW + ow;
                                float v = 0.0f;
                                if (iz >= 0 && iz < s->D && iy >= 0 && iy < s->H && ix >= 0 &&
                                    ix < s->W)
                                    v = x[(((size_t)c * s->D + iz) * s->H + iy) * s->W + ix];
                                cols[r * S + col] = v;
                            }
}

static void ref_pool(const fg_pool_shape *s, const float *x, float *y, int is_max)
{
    int c, od, oh, ow, kz, ky, kx;
    for (c = 0; c < s->C; ++c)
        for (od = 0; od < s->OD; ++od)
            for (oh = 0; oh < s->OH; ++oh)
                for (ow = 0; ow < s->OW; ++ow) {
                    float acc = is_max ? -3.40282346638528859812e+38f : 0.0f;
                    int cnt_in = 0, cnt_pad = 0;
                    for (kz = 0; kz < s->kd; ++kz)
                        for (ky = 0; ky < s->kh; ++ky)
                            for (kx = 0; kx < s->kw; ++kx) {
                                const int iz = od * s->sd - s->pd + kz * s->dd;
                                const int iy = oh * s->sh - s->ph + ky * s->dh;
                                const int ix = ow * s->sw - s->pw + kx * s->dw;
                                const int in_pad = iz >= -s->pd && iz < s->D + s->pd_end &&
                                                   iy >= -s->ph && iy < s->H + s->ph_end &&
                                                   ix >= -s->pw && ix < s->W + s->pw_end;
                                const int in_x = iz >= 0 && iz < s->D && iy >= 0 && iy < s->H &&
                                                 ix >= 0 && ix < s->W;
                                cnt_pad += in_pad;
                                if (in_x) {
                                    const float v =
                                        x[(((size_t)c * s->D + iz) * s->H + iy) * s->W + ix];
                                    ++cnt_in;
                                    if (is_max)
                                        acc = v > acc ? v : acc;
                                    else
                                        acc += v;
                                }
                            }
                    if (!is_max) {
                        const int cnt = s->count_include_pad ? cnt_pad : cnt_in;
                        acc = cnt > 0 ? acc / (float)cnt : 0.0f;
                    }
                    y[(((size_t)c * s->OD + od) * s->OH + oh) * s->OW + ow] = acc;
                }
}

void ref_maxpool(const fg_pool_shape *s, const float *x, float *y)
{
    ref_pool(s, x, y, 1);
}

void ref_avgpool(const fg_pool_shape *s, const float *x, float *y)
{
    ref_pool(s, x, y, 0);
}

void ref_global_avgpool(const float *x, float *y, int C, int S)
{
    int c, i;
    for (c = 0; c < C; ++c) {
        float s = 0.0f;
        for (i = 0; i < S; ++i)
            s += x[(size_t)c * S + i];
        y[c] = s / (float)S;
    }
}

void ref_global_maxpool(const float *x, float *y, int C, int S)
{
    int c, i;
    for (c = 0; c < C; ++c) {
        float m = x[(size_t)c * S];
        for (i = 1; i < S; ++i)
            m = x[(size_t)c * S + i] > m ? x[(size_t)c * S + i] : m;
        y[c] = m;
    }
}

float ref_unary(int op, float v, float p0, float p1)
{
    const double d = v;
    switch (op) {
    case REF_RELU:
        return v > 0.0f ? v : 0.0f;
    case REF_LEAKY:
        return v >= 0.0f ? v : p0 * v;
    case REF_CLIP:
        return v < p0 ? p0 : (v > p1 ? p1 : v);
    case REF_ELU:
        return v >= 0.0f ? v : (float)(p0 * (exp(d) - 1.0));
    case REF_SELU:
        return v > 0.0f ? p1 * v : (float)(p1 * (p0 * exp(d) - p0));
    case REF_SIGMOID:
        return (float)(1.0 / (1.0 + exp(-d)));
    case REF_HARD_SIGMOID: {
        const double t = p0 * d + p1;
        return (float)(t < 0.0 ? 0.0 : (t > 1.0 ? 1.0 : t));
    }
    case REF_HARD_SWISH: {
        const double t = d / 6.0 + 0.5;
        return (float)(d * (t < 0.0 ? 0.0 : (t > 1.0 ? 1.0 : t)));
    }
    case REF_TANH:
        return (float)tanh(d);
    case REF_SOFTPLUS:
        return (float)log(1.0 + exp(d));
    case REF_EXP:
        return (float)exp(d);
    case REF_LOG:
        return (float)log(d);
    case REF_SQRT:
        return (float)sqrt(d);
    case REF_ABS:
        return v < 0.0f ? -v : v;
    case REF_NEG:
        return -v;
    case REF_RECIPROCAL:
        return (float)(1.0 / d);
    case REF_ERF:
        return (float)erf(d);
    case REF_GELU:
        return (float)(0.5 * d * (1.0 + erf(d / sqrt(2.0))));
    case REF_GELU_TANH:
        return (float)(0.5 * d * (1.0 + tanh(sqrt(2.0 / 3.14159265358979323846) *
                                             (d + 0.044715 * d * d * d))));
    case REF_MISH:
        return (float)(d * tanh(log(1.0 + exp(d))));
    case REF_SOFTSIGN:
        return (float)(d / (1.0 + fabs(d)));
    case REF_THRESHOLDED_RELU:
        return v > p0 ? v : 0.0f;
    case REF_SIGN:
        return v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f);
    case REF_FLOOR:
        return (float)floor(d);
    case REF_CEIL:
        return (float)-floor(-d);
    case REF_ROUND: {
        const double r = floor(d), frac = d - r;
        if (frac > 0.5 || (frac == 0.5 && fmod(r, 2.0) != 0.0))
            return (float)(r + 1.0);
        return (float)r;
    }
    default:
        return v;
    }
}

void ref_channel_affine(const float *x, float *y, int outer, int C, int inner, const float *scale,
                        const float *shift)
{
    int o, c, i;
    for (o = 0; o < outer; ++o)
        for (c = 0; c < C; ++c)
            for (i = 0; i < inner; ++i) {
                const size_t t = ((size_t)o * C + c) * inner + i;
                y[t] = x[t] * scale[c] + shift[c];
            }
}

float ref_binary1(int op, float a, float b)
{
    switch (op) {
    case FG_ADD:
        return a + b;
    case FG_SUB:
        return a - b;
    case FG_MUL:
        return a * b;
    case FG_DIV:
        return a / b;
    case FG_PRELU:
        return a >= 0.0f ? a : a * b;
    case FG_MAX:
        return a != a ? a : (b != b ? b : (a > b ? a : b));
    case FG_MIN:
        return a != a ? a : (b != b ? b : (a < b ? a : b));
    case FG_POW:
        return (float)pow((double)a, (double)b);
    case FG_EQUAL:
        return (float)(a == b);
    case FG_LESS:
        return (float)(a < b);
    case FG_LESS_EQUAL:
        return (float)(a <= b);
    case FG_GREATER:
        return (float)(a > b);
    case FG_GREATER_EQUAL:
        return (float)(a >= b);
    case FG_AND:
        return (float)(a != 0.0f && b != 0.0f);
    case FG_OR:
        return (float)(a != 0.0f || b != 0.0f);
    case FG_XOR:
        return (float)((a != 0.0f) ^ (b != 0.0f));
    case FG_NOT_EQUAL:
        return (float)(a != b);
    default:
        return 0.0f;
    }
}

/* flat index -> multi-index of `shape` (row major) */
static void ref_unravel(size_t t, int nd, const int *shape, int *idx)
{
    int k;
    for (k = nd - 1; k >= 0; --k) {
        idx[k] = (int)(t % (size_t)shape[k]);
        t /= (size_t)shape[k];
    }
}

static size_t ref_numel(int nd, const int *shape)
{
    size_t n = 1;
    int k;
    for (k = 0; k < nd; ++k)
        n *= (size_t)shape[k];
    return n;
}

void ref_binary(int op, const fg_bcast *s, const float *a, const float *b, float *y)
{
    const size_t n = ref_numel(s->ndim, s->shape);
    size_t t;
    int idx[FG_MAXDIM], k;
    for (t = 0; t < n; ++t) {
        ptrdiff_t oa = 0, ob = 0;
        ref_unravel(t, s->ndim, s->shape, idx);
        for (k = 0; k < s->ndim; ++k) {
            oa += idx[k] * s->sa[k];
            ob += idx[k] * s->sb[k];
        }
        y[t] = ref_binary1(op, a[oa], b[ob]);
    }
}

void ref_transpose(const fg_perm *p, const float *x, float *y)
{
    const size_t n = ref_numel(p->ndim, p->shape);
    size_t t;
    int idx[FG_MAXDIM], k;
    for (t = 0; t < n; ++t) {
        ptrdiff_t o = 0;
        ref_unravel(t, p->ndim, p->shape, idx);
        for (k = 0; k < p->ndim; ++k)
            o += idx[k] * p->stride[k];
        y[t] = x[o];
    }
}

void ref_pad(const fg_padspec *p, const float *x, float *y, float value)
{
    const size_t n = ref_numel(p->ndim, p->out_shape);
    size_t t;
    int idx[FG_MAXDIM], k;
    for (t = 0; t < n; ++t) {
        size_t o = 0;
        int inside = 1;
        ref_unravel(t, p->ndim, p->out_shape, idx);
        for (k = 0; k < p->ndim; ++k) {
            const int i = idx[k] - p->begin[k];
            if (i < 0 || i >= p->in_shape[k])
                inside = 0;
            o = o * (size_t)p->in_shape[k] + (size_t)(inside ? i : 0);
        }
        y[t] = inside ? x[o] : value;
    }
}

void ref_copy_blocks(const float *src, float *dst, int outer, int block, ptrdiff_t src_stride,
                     ptrdiff_t dst_stride)
{
    int o, j;
    for (o = 0; o < outer; ++o)
        for (j = 0; j < block; ++j)
            dst[o * dst_stride + j] = src[o * src_stride + j];
}

void ref_softmax(const float *x, float *y, int outer, int n, int inner, int logsm)
{
    int o, i, r;
    for (o = 0; o < outer; ++o)
        for (i = 0; i < inner; ++i) {
            const float *xs = x + (size_t)o * n * inner + i;
            float *ys = y + (size_t)o * n * inner + i;
            double m = -INFINITY, s = 0.0;
            for (r = 0; r < n; ++r)
                m = xs[(size_t)r * inner] > m ? xs[(size_t)r * inner] : m;
            for (r = 0; r < n; ++r)
                s += exp(xs[(size_t)r * inner] - m);
            for (r = 0; r < n; ++r)
                ys[(size_t)r * inner] = logsm ? (float)(xs[(size_t)r * inner] - m - log(s))
                                              : (float)(exp(xs[(size_t)r * inner] - m) / s);
        }
}

void ref_reduce(int op, const float *x, float *y, int outer, int n, int inner)
{
    int o, i, r;
    for (o = 0; o < outer; ++o)
        for (i = 0; i < inner; ++i) {
            const float *xs = x + (size_t)o * n * inner + i;
            double acc = op == FG_REDUCE_MAX ? -INFINITY : (op == FG_REDUCE_MIN ? INFINITY : 0.0);
            for (r = 0; r < n; ++r) {
                const double v = xs[(size_t)r * inner];
                if (op == FG_REDUCE_MAX)
                    acc = v > acc ? v : acc;
                else if (op == FG_REDUCE_MIN)
                    acc = v < acc ? v : acc;
                else if (op == FG_REDUCE_L1)
                    acc += fabs(v);
                else if (op == FG_REDUCE_L2 || op == FG_REDUCE_SUMSQ)
                    acc += v * v;
                else if (op == FG_REDUCE_LOGSUMEXP)
                    acc += exp(v);
                else
                    acc += v;
            }
            if (op == FG_REDUCE_MEAN)
                acc /= n;
            if (op == FG_REDUCE_L2)
                acc = sqrt(acc);
            if (op == FG_REDUCE_LOGSUM || op == FG_REDUCE_LOGSUMEXP)
                acc = log(acc);
            y[(size_t)o * inner + i] = (float)acc;
        }
}

void ref_lrn(const float *x, float *y, int outer, int C, int inner, int size, float alpha,
             float beta, float bias)
{
    int o, c, i, cc;
    const int before = (size - 1) / 2, after = size / 2;
    for (o = 0; o < outer; ++o)
        for (c = 0; c < C; ++c)
            for (i = 0; i < inner; ++i) {
                double sq = 0.0;
                for (cc = c - before; cc <= c + after; ++cc) {
                    double v;
                    if (cc < 0 || cc >= C)
                        continue;
                    v = x[((size_t)o * C + cc) * inner + i];
                    sq += v * v;
                }
                y[((size_t)o * C + c) * inner + i] =
                    (float)(x[((size_t)o * C + c) * inner + i] /
                            pow(bias + alpha / size * sq, beta));
            }
}

/* ---- sparse factors -------------------------------------------------------- */

void ref_csr_matvec(int rows, int m, int n, const int32_t *indptr, const int32_t *indices,
                    const float *data, const float *x, float *y, const float *bias, int act,
                    float a, float b)
{
    int r, i, p;
    for (r = 0; r < rows; ++r)
        for (i = 0; i < m; ++i) {
            float s = 0.0f;
            for (p = indptr[i]; p < indptr[i + 1]; ++p)
                s += data[p] * x[(size_t)r * n + indices[p]];
            if (bias)
                s += bias[i];
            y[(size_t)r * m + i] = ref_act(s, act, a, b);
        }
}

void ref_ell_matvec(int rows, int m, int n, int k, const int32_t *indices, const float *data,
                    const float *x, float *y, const float *bias, int act, float a, float b)
{
    int r, i, s;
    for (r = 0; r < rows; ++r)
        for (i = 0; i < m; ++i) {
            float acc = 0.0f;
            for (s = 0; s < k; ++s) {
                const size_t e = (size_t)s * m + i;
                acc += data[e] * x[(size_t)r * n + indices[e]];
            }
            if (bias)
                acc += bias[i];
            y[(size_t)r * m + i] = ref_act(acc, act, a, b);
        }
}

void ref_bsr_matvec(int br, int rows, int m, int n, const int32_t *panel_ptr, const int32_t *cols,
                    const float *values, const float *x, float *y, const float *bias, int act,
                    float a, float b)
{
    int r, i, q;
    for (r = 0; r < rows; ++r)
        for (i = 0; i < m; ++i) {
            const int p = i / br, j = i % br;
            float acc = 0.0f;
            for (q = panel_ptr[p]; q < panel_ptr[p + 1]; ++q)
                acc += values[(size_t)q * br + j] * x[(size_t)r * n + cols[q]];
            if (bias)
                acc += bias[i];
            y[(size_t)r * m + i] = ref_act(acc, act, a, b);
        }
}

void ref_csr_spmm(int m, int ncols, const int32_t *indptr, const int32_t *indices,
                  const float *data, const float *X, float *Y, const float *bias, int act, float a,
                  float b)
{
    int i, c, p;
    for (i = 0; i < m; ++i)
        for (c = 0; c < ncols; ++c) {
            float s = 0.0f;
            for (p = indptr[i]; p < indptr[i + 1]; ++p)
                s += data[p] * X[(size_t)indices[p] * ncols + c];
            if (bias)
                s += bias[i];
            Y[(size_t)i * ncols + c] = ref_act(s, act, a, b);
        }
}

void ref_layernorm(const float *x, float *y, int outer, int n, const float *scale,
                   const float *bias, float eps, float *mean, float *invstd)
{
    int o, i;
    for (o = 0; o < outer; ++o) {
        const float *xo = x + (size_t)o * n;
        double mu = 0.0, var = 0.0, r;
        for (i = 0; i < n; ++i)
            mu += xo[i];
        mu /= n;
        for (i = 0; i < n; ++i)
            var += (xo[i] - mu) * (xo[i] - mu);
        r = 1.0 / sqrt(var / n + eps);
        for (i = 0; i < n; ++i)
            y[(size_t)o * n + i] = (float)((xo[i] - mu) * r * scale[i] + (bias ? bias[i] : 0.0f));
        mean[o] = (float)mu;
        invstd[o] = (float)r;
    }
}

void ref_where(const fg_bcast3 *s, const float *c, const float *a, const float *b, float *y)
{
    const size_t n = ref_numel(s->ndim, s->shape);
    size_t t;
    int idx[FG_MAXDIM], k;
    for (t = 0; t < n; ++t) {
        ptrdiff_t oc = 0, oa = 0, ob = 0;
        ref_unravel(t, s->ndim, s->shape, idx);
        for (k = 0; k < s->ndim; ++k) {
            oc += idx[k] * s->sc[k];
            oa += idx[k] * s->sa[k];
            ob += idx[k] * s->sb[k];
        }
        y[t] = c[oc] != 0.0f ? a[oa] : b[ob];
    }
}

/* ONNX RNN activation `kind` with its alpha / beta (the operator's table) */
static double ref_rnn_act(int kind, double v, double a, double b)
{
    switch (kind) {
    case FG_RNN_SIGMOID: return 1.0 / (1.0 + exp(-v));
    case FG_RNN_TANH: return tanh(v);
    case FG_RNN_RELU: return v > 0.0 ? v : 0.0;
    case FG_RNN_HARD_SIGMOID: return fmax(0.0, fmin(1.0, a * v + b));
    case FG_RNN_LEAKY_RELU: return v >= 0.0 ? v : a * v;
    case FG_RNN_THRESHOLDED_RELU: return v > a ? v : 0.0;
    case FG_RNN_SCALED_TANH: return a * tanh(b * v);
    case FG_RNN_AFFINE: return a * v + b;
    case FG_RNN_ELU: return v >= 0.0 ? v : a * (exp(v) - 1.0);
    case FG_RNN_SOFTSIGN: return v / (1.0 + fabs(v));
    case FG_RNN_SOFTPLUS: return log(1.0 + exp(v));
    default: return v;
    }
}

/* activation k of p (0: f, 1: g, 2: h) of the clipped pre-activation v */
static double ref_rnn_gate(const fg_rnn *p, int k, double v)
{
    if (p->clip > 0.0f)
        v = fmax(-(double)p->clip, fmin((double)p->clip, v));
    return ref_rnn_act(p->act[k], v, p->alpha[k], p->beta[k]);
}

/* bias[k] + M[k] . v, M row-major with n columns */
static double ref_rnn_row(const float *M, const float *bias, size_t k, const double *v, int n)
{
    double s = bias[k];
    int i;
    for (i = 0; i < n; ++i)
        s += M[k * n + i] * v[i];
    return s;
}

/* pre-activation of gate g, unit j: Wb + W x + Rb + R h (row g*H + j) */
#define REF_RNN_PRE(g)                                                                         \
    (ref_rnn_row(Wd, Wb, (size_t)(g) * H + j, xt, I) +                                         \
     ref_rnn_row(Rd, Rb, (size_t)(g) * H + j, h, H))

void ref_rnn_seq(const fg_rnn *p, const float *x, const float *W, const float *R, const float *B,
                 const float *P, const int32_t *seq_lens, const float *h0, const float *c0,
                 float *y, float *yh, float *yc)
{
    const int T = p->T, Bn = p->B, I = p->I, H = p->H, G = p->gates, D = p->dirs;
    const size_t GH = (size_t)G * H;
    double xt[REF_RNN_MAX], h[REF_RNN_MAX], c[REF_RNN_MAX], hn[REF_RNN_MAX], r[REF_RNN_MAX];
    int d, b, s, i, j;
    for (d = 0; d < D; ++d) {
        const float *Wd = W + (size_t)d * GH * I, *Rd = R + (size_t)d * GH * H;
        const float *Wb = B + (size_t)d * 2 * GH, *Rb = Wb + GH;
        const float *Pd = P != NULL ? P + (size_t)d * 3 * H : NULL;
        const int reverse = D == 2 ? d == 1 : p->reverse;
        for (b = 0; b < Bn; ++b) {
            const int len = seq_lens != NULL ? seq_lens[b] : T;
            const size_t st = p->layout ? ((size_t)b * D + d) * H : ((size_t)d * Bn + b) * H;
            for (j = 0; j < H; ++j) {
                h[j] = h0 != NULL ? h0[st + j] : 0.0;
                c[j] = c0 != NULL ? c0[st + j] : 0.0;
            }
            for (s = 0; s < T; ++s) {
                /* step s reads and writes time t; past the sample's length Y is 0 at s */
                const int t = s < len ? (reverse ? len - 1 - s : s) : s;
                float *yt = y + (p->layout ? (((size_t)b * T + t) * D + d) * H
                                           : (((size_t)t * D + d) * Bn + b) * H);
                if (s >= len) {
                    for (j = 0; j < H; ++j)
                        yt[j] = 0.0f;
                    continue;
                }
                for (i = 0; i < I; ++i)
                    xt[i] = x[(p->layout ? (size_t)b * T + t : (size_t)t * Bn + b) * I + i];
                if (p->cell == FG_CELL_GRU) /* reset gate r of every unit first */
                    for (j = 0; j < H; ++j)
                        r[j] = ref_rnn_gate(p, 0, REF_RNN_PRE(1));
                for (j = 0; j < H; ++j) {
                    if (p->cell == FG_CELL_RNN) {
                        hn[j] = ref_rnn_gate(p, 0, REF_RNN_PRE(0));
                    } else if (p->cell == FG_CELL_LSTM) { /* gates i o f c */
                        const double pi = Pd ? Pd[j] : 0.0, po = Pd ? Pd[H + j] : 0.0;
                        const double pf = Pd ? Pd[2 * H + j] : 0.0;
                        const double ig = ref_rnn_gate(p, 0, REF_RNN_PRE(0) + pi * c[j]);
                        const double fg = p->input_forget
                                              ? 1.0 - ig
                                              : ref_rnn_gate(p, 0, REF_RNN_PRE(2) + pf * c[j]);
                        const double cc = ref_rnn_gate(p, 1, REF_RNN_PRE(3));
                        const double cn = fg * c[j] + ig * cc;
                        const double og = ref_rnn_gate(p, 0, REF_RNN_PRE(1) + po * cn);
                        hn[j] = og * ref_rnn_act(p->act[2], cn, p->alpha[2], p->beta[2]);
                        c[j] = cn; /* c[j] is not read again in this step */
                    } else { /* GRU, gates z r h */
                        const double z = ref_rnn_gate(p, 0, REF_RNN_PRE(0));
                        const double xw = ref_rnn_row(Wd, Wb, 2 * (size_t)H + j, xt, I);
                        double rr[REF_RNN_MAX], hh;
                        if (p->linear_before_reset) { /* r . (R_h h + Rb_h) */
                            hh = xw + r[j] * ref_rnn_row(Rd, Rb, 2 * (size_t)H + j, h, H);
                        } else { /* R_h (r . h) + Rb_h */
                            for (i = 0; i < H; ++i)
                                rr[i] = r[i] * h[i];
                            hh = xw + ref_rnn_row(Rd, Rb, 2 * (size_t)H + j, rr, H);
                        }
                        hn[j] = (1.0 - z) * ref_rnn_gate(p, 1, hh) + z * h[j];
                    }
                }
                for (j = 0; j < H; ++j) {
                    h[j] = hn[j];
                    yt[j] = (float)h[j];
                }
            }
            for (j = 0; j < H; ++j) {
                yh[st + j] = (float)h[j];
                yc[st + j] = (float)c[j];
            }
        }
    }
}
#undef REF_RNN_PRE
