/* fg_tensor.c - broadcasting binary ops, data movement, reductions, LRN
 * (C99, no heap, no stdio).
 *
 * N-d kernels iterate the outer axes with an odometer and run a specialized
 * inner loop over the innermost axis. Inner loops over contiguous data work
 * in fixed blocks of FG_TB elements read into a local array before the
 * result is written (correct when y aliases an operand, vectorizable at -O2).
 *
 * Reductions have a fixed summation order: along a contiguous axis
 * (inner == 1) FG_TB interleaved partial results combined pairwise; along a
 * strided axis, in increasing index order (vectorized across `inner`).
 * Max / Min propagate NaN (as numpy / the ONNX reference).
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "fg_runtime.h"

#define FG_TB 16

/* ---- broadcasting binary ops --------------------------------------------- */

static float fg_max_nan(float a, float b)
{
    return (a > b || a != a) ? a : b;
}

static float fg_min_nan(float a, float b)
{
    return (a < b || a != a) ? a : b;
}

static float fg_prelu1(float a, float b)
{
    const float t = a * b;
    return a >= 0.0f ? a : t;
}

/* Inner loop over n elements: a at stride sa, b at stride sb, y contiguous.
 * The (1, 1), (1, 0), (0, 1) stride cases get fixed-size blocks. */
#define FG_BIN_INNER(EXPR)                                                                       \
    do {                                                                                         \
        int i_ = 0, j_;                                                                          \
        if (sa == 1 && sb == 1) {                                                                \
            for (; i_ + FG_TB <= n; i_ += FG_TB) {                                               \
                float ta_[FG_TB], tb_[FG_TB];                                                    \
                for (j_ = 0; j_ < FG_TB; ++j_) {                                                 \
                    ta_[j_] = a[i_ + j_];                                                        \
                    tb_[j_] = b[i_ + j_];                                                        \
                }                                                                                \
                for (j_ = 0; j_ < FG_TB; ++j_) {                                                 \
                    const float u = ta_[j_], v = tb_[j_];                                        \
                    ta_[j_] = (EXPR);                                                            \
                }                                                                                \
                for (j_ = 0; j_ < FG_TB; ++j_)                                                   \
                    y[i_ + j_] = ta_[j_];                                                        \
            }                                                                                    \
        } else if (sa == 1 && sb == 0) {                                                         \
            const float v = b[0];                                                                \
            for (; i_ + FG_TB <= n; i_ += FG_TB) {                                               \
                float ta_[FG_TB];                                                                \
                for (j_ = 0; j_ < FG_TB; ++j_)                                                   \
                    ta_[j_] = a[i_ + j_];                                                        \
                for (j_ = 0; j_ < FG_TB; ++j_) {                                                 \
                    const float u = ta_[j_];                                                     \
                    ta_[j_] = (EXPR);                                                            \
                }                                                                                \
                for (j_ = 0; j_ < FG_TB; ++j_)                                                   \
                    y[i_ + j_] = ta_[j_];                                                        \
            }                                                                                    \
        } else if (sa == 0 && sb == 1) {                                                         \
            const float u = a[0];                                                                \
            for (; i_ + FG_TB <= n; i_ += FG_TB) {                                               \
                float tb_[FG_TB];                                                                \
                for (j_ = 0; j_ < FG_TB; ++j_)                                                   \
                    tb_[j_] = b[i_ + j_];                                                        \
                for (j_ = 0; j_ < FG_TB; ++j_) {                                                 \
                    const float v = tb_[j_];                                                     \
                    tb_[j_] = (EXPR);                                                            \
                }                                                                                \
                for (j_ = 0; j_ < FG_TB; ++j_)                                                   \
                    y[i_ + j_] = tb_[j_];                                                        \
            }                                                                                    \
        }                                                                                        \
        for (; i_ < n; ++i_) {                                                                   \
            const float u = a[(ptrdiff_t)i_ * sa], v = b[(ptrdiff_t)i_ * sb];                    \
            y[i_] = (EXPR);                                                                      \
        }                                                                                        \
    } while (0)

static void fg_binary_inner(int op, const float *a, ptrdiff_t sa, const float *b, ptrdiff_t sb,
                            float *y, int n)
{
    switch (op) {
    case FG_ADD:
        FG_BIN_INNER(u + v);
        break;
    case FG_SUB:
        FG_BIN_INNER(u - v);
        break;
    case FG_MUL:
        FG_BIN_INNER(u * v);
        break;
    case FG_DIV:
        FG_BIN_INNER(u / v);
        break;
    case FG_PRELU:
        FG_BIN_INNER(fg_prelu1(u, v));
        break;
    case FG_MAX:
        FG_BIN_INNER(fg_max_nan(u, v));
        break;
    case FG_MIN:
        FG_BIN_INNER(fg_min_nan(u, v));
        break;
    case FG_POW:
        FG_BIN_INNER(powf(u, v));
        break;
    case FG_EQUAL:
        FG_BIN_INNER(u == v ? 1.0f : 0.0f);
        break;
    case FG_LESS:
        FG_BIN_INNER(u < v ? 1.0f : 0.0f);
        break;
    case FG_LESS_EQUAL:
        FG_BIN_INNER(u <= v ? 1.0f : 0.0f);
        break;
    case FG_GREATER:
        FG_BIN_INNER(u > v ? 1.0f : 0.0f);
        break;
    case FG_GREATER_EQUAL:
        FG_BIN_INNER(u >= v ? 1.0f : 0.0f);
        break;
    case FG_AND:
        FG_BIN_INNER((u != 0.0f && v != 0.0f) ? 1.0f : 0.0f);
        break;
    case FG_OR:
        FG_BIN_INNER((u != 0.0f || v != 0.0f) ? 1.0f : 0.0f);
        break;
    case FG_XOR:
        FG_BIN_INNER((u != 0.0f) != (v != 0.0f) ? 1.0f : 0.0f);
        break;
    case FG_NOT_EQUAL:
        FG_BIN_INNER(u != v ? 1.0f : 0.0f);
        break;
    default:
        break;
    }
}

void fg_binary(int op, const fg_bcast *s, const float *a, const float *b, float *y)
{
    const int nd = s->ndim;
    int idx[FG_MAXDIM];
    int k, n;
    ptrdiff_t sa, sb, oa = 0, ob = 0;
    size_t oy = 0;
    if (nd <= 0) {
        fg_binary_inner(op, a, 0, b, 0, y, 1);
        return;
    }
    for (k = 0; k < nd; ++k) {
        if (s->shape[k] <= 0)
            return;
        idx[k] = 0;
    }
    n = s->shape[nd - 1];
    sa = s->sa[nd - 1];
    sb = s->sb[nd - 1];
    for (;;) {
        fg_binary_inner(op, a + oa, sa, b + ob, sb, y + oy, n);
        oy += (size_t)n;
        /* odometer over axes 0 .. nd-2 */
        for (k = nd - 2; k >= 0; --k) {
            oa += s->sa[k];
            ob += s->sb[k];
            if (++idx[k] < s->shape[k])
                break;
            oa -= s->sa[k] * (ptrdiff_t)s->shape[k];
            ob -= s->sb[k] * (ptrdiff_t)s->shape[k];
            idx[k] = 0;
        }
        if (k < 0)
            return;
    }
}

void fg_where(const fg_bcast3 *s, const float *c, const float *a, const float *b, float *y)
{
    const int nd = s->ndim;
    int idx[FG_MAXDIM];
    int k, i, n;
    ptrdiff_t sc, sa, sb, oc = 0, oa = 0, ob = 0;
    size_t oy = 0;
    if (nd <= 0) {
        y[0] = c[0] != 0.0f ? a[0] : b[0];
        return;
    }
    for (k = 0; k < nd; ++k) {
        if (s->shape[k] <= 0)
            return;
        idx[k] = 0;
    }
    n = s->shape[nd - 1];
    sc = s->sc[nd - 1];
    sa = s->sa[nd - 1];
    sb = s->sb[nd - 1];
    for (;;) {
        const float *cr = c + oc, *ar = a + oa, *br = b + ob;
        float *yr = y + oy;
        for (i = 0; i < n; ++i) {
            const float u = ar[(ptrdiff_t)i * sa], v = br[(ptrdiff_t)i * sb];
            yr[i] = cr[(ptrdiff_t)i * sc] != 0.0f ? u : v;
        }
        oy += (size_t)n;
        for (k = nd - 2; k >= 0; --k) {
            oc += s->sc[k];
            oa += s->sa[k];
            ob += s->sb[k];
            if (++idx[k] < s->shape[k])
                break;
            oc -= s->sc[k] * (ptrdiff_t)s->shape[k];
            oa -= s->sa[k] * (ptrdiff_t)s->shape[k];
            ob -= s->sb[k] * (ptrdiff_t)s->shape[k];
            idx[k] = 0;
        }
        if (k < 0)
            return;
    }
}

/* ---- transpose ------------------------------------------------------------ */

/* y (rows x cols, row stride ldy) = element (r, c) at x[r*sr + c*sc];
 * FG_TB x FG_TB tiles keep both sides cache friendly. */
static void fg_transpose2d(const float *x, ptrdiff_t sr, ptrdiff_t sc, float *y, size_t ldy,
                           int rows, int cols)
{
    int r0, c0, r, c;
    for (r0 = 0; r0 < rows; r0 += FG_TB) {
        const int r1 = r0 + FG_TB < rows ? r0 + FG_TB : rows;
        for (c0 = 0; c0 < cols; c0 += FG_TB) {
            const int c1 = c0 + FG_TB < cols ? c0 + FG_TB : cols;
            for (r = r0; r < r1; ++r) {
                const float *xr = x + (ptrdiff_t)r * sr;
                float *yr = y + (size_t)r * ldy;
                for (c = c0; c < c1; ++c)
                    yr[c] = xr[(ptrdiff_t)c * sc];
            }
        }
    }
}

void fg_transpose(const fg_perm *p, const float *x, float *y)
{
    const int nd = p->ndim;
    int idx[FG_MAXDIM];
    int k, n, rows, outer_nd;
    ptrdiff_t sl, ox = 0;
    size_t oy = 0;
    if (nd <= 0) {
        y[0] = x[0];
        return;
    }
    for (k = 0; k < nd; ++k) {
        if (p->shape[k] <= 0)
            return;
        idx[k] = 0;
    }
    n = p->shape[nd - 1];
    sl = p->stride[nd - 1];
    /* a strided innermost axis over a unit-stride second axis is a batch of
     * 2-D transposes: do them tile by tile */
    if (nd >= 2 && sl != 1 && p->stride[nd - 2] == 1) {
        rows = p->shape[nd - 2];
        outer_nd = nd - 2;
    } else {
        rows = 1;
        outer_nd = nd - 1;
    }
    for (;;) {
        if (rows > 1) {
            fg_transpose2d(x + ox, 1, sl, y + oy, (size_t)n, rows, n);
            oy += (size_t)rows * (size_t)n;
        } else if (sl == 1) {
            memcpy(y + oy, x + ox, (size_t)n * sizeof(float));
            oy += (size_t)n;
        } else {
            const float *xs = x + ox;
            float *ys = y + oy;
            int i;
            for (i = 0; i < n; ++i)
                ys[i] = xs[(ptrdiff_t)i * sl];
            oy += (size_t)n;
        }
        for (k = outer_nd - 1; k >= 0; --k) {
            ox += p->stride[k];
            if (++idx[k] < p->shape[k])
                break;
            ox -= p->stride[k] * (ptrdiff_t)p->shape[k];
            idx[k] = 0;
        }
        if (k < 0)
            return;
    }
}

/* ---- pad ------------------------------------------------------------------ */

static void fg_fill_n(float *y, size_t n, float value)
{
    size_t i = 0;
    int j;
    for (; i + FG_TB <= n; i += FG_TB) {
        for (j = 0; j < FG_TB; ++j)
            y[i + (size_t)j] = value;
    }
    for (; i < n; ++i)
        y[i] = value;
}

void fg_pad(const fg_padspec *p, const float *x, float *y, float value)
{
    const int nd = p->ndim;
    int idx[FG_MAXDIM];
    ptrdiff_t xstride[FG_MAXDIM];
    int k, n_out, n_in, beg, lo, hi;
    size_t oy = 0;
    if (nd <= 0) {
        y[0] = x[0];
        return;
    }
    for (k = 0; k < nd; ++k) {
        if (p->out_shape[k] <= 0)
            return;
        idx[k] = 0;
    }
    xstride[nd - 1] = 1;
    for (k = nd - 2; k >= 0; --k)
        xstride[k] = xstride[k + 1] * (ptrdiff_t)p->in_shape[k + 1];
    n_out = p->out_shape[nd - 1];
    n_in = p->in_shape[nd - 1];
    beg = p->begin[nd - 1];
    /* output columns [lo, hi) come from input columns [lo - beg, hi - beg) */
    lo = beg > 0 ? beg : 0;
    hi = beg + n_in < n_out ? beg + n_in : n_out;
    if (hi < lo)
        hi = lo;
    for (;;) {
        float *yr = y + oy;
        ptrdiff_t ox = 0;
        int inside = 1;
        for (k = 0; k < nd - 1; ++k) {
            const int i = idx[k] - p->begin[k];
            if (i < 0 || i >= p->in_shape[k]) {
                inside = 0;
                break;
            }
            ox += (ptrdiff_t)i * xstride[k];
        }
        if (!inside || hi == lo) {
            fg_fill_n(yr, (size_t)n_out, value);
        } else {
            fg_fill_n(yr, (size_t)lo, value);
            memcpy(yr + lo, x + ox + (lo - beg), (size_t)(hi - lo) * sizeof(float));
            fg_fill_n(yr + hi, (size_t)(n_out - hi), value);
        }
        oy += (size_t)n_out;
        for (k = nd - 2; k >= 0; --k) {
            if (++idx[k] < p->out_shape[k])
                break;
            idx[k] = 0;
        }
        if (k < 0)
            return;
    }
}

void fg_copy_blocks(const float *src, float *dst, int outer, int block, ptrdiff_t src_stride,
                    ptrdiff_t dst_stride)
{
    int o;
    if (block <= 0)
        return;
    for (o = 0; o < outer; ++o)
        memmove(dst + (ptrdiff_t)o * dst_stride, src + (ptrdiff_t)o * src_stride,
                (size_t)block * sizeof(float));
}

/* ---- reductions ----------------------------------------------------------- */

/* contiguous reductions: FG_TB interleaved partials, combined pairwise */
static float fg_sum_contig(const float *restrict x, int n)
{
    float acc[FG_TB];
    int i = 0, j;
    for (j = 0; j < FG_TB; ++j)
        acc[j] = 0.0f;
    for (; i + FG_TB <= n; i += FG_TB) {
        for (j = 0; j < FG_TB; ++j)
            acc[j] += x[i + j];
    }
    for (j = 0; i < n; ++i, ++j)
        acc[j] += x[i];
    for (j = FG_TB / 2; j > 0; j /= 2) {
        int q;
        for (q = 0; q < j; ++q)
            acc[q] += acc[q + j];
    }
    return acc[0];
}

static float fg_maxmin_contig(const float *restrict x, int n, int is_max)
{
    float acc[FG_TB];
    int i = 0, j;
    const float init = is_max ? -HUGE_VALF : HUGE_VALF;
    for (j = 0; j < FG_TB; ++j)
        acc[j] = init;
    if (is_max) {
        for (; i + FG_TB <= n; i += FG_TB) {
            for (j = 0; j < FG_TB; ++j)
                acc[j] = fg_max_nan(x[i + j], acc[j]);
        }
        for (j = 0; i < n; ++i, ++j)
            acc[j] = fg_max_nan(x[i], acc[j]);
        for (j = FG_TB / 2; j > 0; j /= 2) {
            int q;
            for (q = 0; q < j; ++q)
                acc[q] = fg_max_nan(acc[q + j], acc[q]);
        }
    } else {
        for (; i + FG_TB <= n; i += FG_TB) {
            for (j = 0; j < FG_TB; ++j)
                acc[j] = fg_min_nan(x[i + j], acc[j]);
        }
        for (j = 0; i < n; ++i, ++j)
            acc[j] = fg_min_nan(x[i], acc[j]);
        for (j = FG_TB / 2; j > 0; j /= 2) {
            int q;
            for (q = 0; q < j; ++q)
                acc[q] = fg_min_nan(acc[q + j], acc[q]);
        }
    }
    return acc[0];
}

/* y[o][i] = sum_r PRE(x[o][r][i]) for the composite reductions, rows in increasing r
 * (vectorized across inner); the caller applies the final map. */
#define FG_REDUCE_ROWS(PRE)                                                                      \
    do {                                                                                         \
        for (i = 0; i < inner; ++i)                                                              \
            yo[i] = 0.0f;                                                                        \
        for (r = 0; r < n; ++r) {                                                                \
            const float *restrict xr = xo + (size_t)r * (size_t)inner;                           \
            for (i = 0; i < inner; ++i) {                                                        \
                const float v = xr[i];                                                           \
                yo[i] += (PRE);                                                                  \
            }                                                                                    \
        }                                                                                        \
    } while (0)

static void fg_reduce_composite(int op, const float *x, float *y, int outer, int n, int inner)
{
    int o, r, i;
    for (o = 0; o < outer; ++o) {
        const float *xo = x + (size_t)o * (size_t)n * (size_t)inner;
        float *restrict yo = y + (size_t)o * (size_t)inner;
        if (op == FG_REDUCE_L1) {
            FG_REDUCE_ROWS(fabsf(v));
        } else if (op == FG_REDUCE_L2 || op == FG_REDUCE_SUMSQ) {
            FG_REDUCE_ROWS(v * v);
            if (op == FG_REDUCE_L2) {
                for (i = 0; i < inner; ++i)
                    yo[i] = sqrtf(yo[i]);
            }
        } else if (op == FG_REDUCE_LOGSUM) {
            FG_REDUCE_ROWS(v);
            for (i = 0; i < inner; ++i)
                yo[i] = logf(yo[i]);
        } else { /* FG_REDUCE_LOGSUMEXP: one output at a time (max, then the shifted sum) */
            for (i = 0; i < inner; ++i) {
                float m = -HUGE_VALF, acc = 0.0f;
                for (r = 0; r < n; ++r)
                    m = fg_max_nan(xo[(size_t)r * (size_t)inner + (size_t)i], m);
                if (!(m > -HUGE_VALF && m < HUGE_VALF))
                    m = 0.0f; /* all -inf, or +inf / NaN present: the unshifted sum says so */
                for (r = 0; r < n; ++r)
                    acc += expf(xo[(size_t)r * (size_t)inner + (size_t)i] - m);
                yo[i] = logf(acc) + m;
            }
        }
    }
}

void fg_reduce(int op, const float *x, float *y, int outer, int n, int inner)
{
    int o, r, i, j;
    if (op >= FG_REDUCE_L1) {
        fg_reduce_composite(op, x, y, outer, n, inner);
        return;
    }
    const int is_max = op == FG_REDUCE_MAX;
    for (o = 0; o < outer; ++o) {
        const float *xo = x + (size_t)o * (size_t)n * (size_t)inner;
        float *restrict yo = y + (size_t)o * (size_t)inner;
        if (inner == 1) {
            if (op == FG_REDUCE_SUM || op == FG_REDUCE_MEAN) {
                const float sum = fg_sum_contig(xo, n);
                yo[0] = op == FG_REDUCE_MEAN ? sum / (float)n : sum;
            } else {
                yo[0] = fg_maxmin_contig(xo, n, is_max);
            }
            continue;
        }
        /* strided axis: accumulate whole rows (vectorized across inner) */
        {
            const float init = op == FG_REDUCE_MAX   ? -HUGE_VALF
                               : op == FG_REDUCE_MIN ? HUGE_VALF
                                                     : 0.0f;
            for (i = 0; i < inner; ++i)
                yo[i] = init;
        }
        for (r = 0; r < n; ++r) {
            const float *restrict xr = xo + (size_t)r * (size_t)inner;
            i = 0;
            if (op == FG_REDUCE_SUM || op == FG_REDUCE_MEAN) {
                for (; i + FG_TB <= inner; i += FG_TB) {
                    for (j = 0; j < FG_TB; ++j)
                        yo[i + j] += xr[i + j];
                }
                for (; i < inner; ++i)
                    yo[i] += xr[i];
            } else if (is_max) {
                for (; i + FG_TB <= inner; i += FG_TB) {
                    for (j = 0; j < FG_TB; ++j)
                        yo[i + j] = fg_max_nan(xr[i + j], yo[i + j]);
                }
                for (; i < inner; ++i)
                    yo[i] = fg_max_nan(xr[i], yo[i]);
            } else {
                for (; i + FG_TB <= inner; i += FG_TB) {
                    for (j = 0; j < FG_TB; ++j)
                        yo[i + j] = fg_min_nan(xr[i + j], yo[i + j]);
                }
                for (; i < inner; ++i)
                    yo[i] = fg_min_nan(xr[i], yo[i]);
            }
        }
        if (op == FG_REDUCE_MEAN) {
            for (i = 0; i < inner; ++i)
                yo[i] = yo[i] / (float)n;
        }
    }
}

/* ---- layer normalization -------------------------------------------------- */

/* sum of (x[i] - mean)^2, FG_TB interleaved partial sums like fg_sum_contig */
static float fg_sqdev_contig(const float *restrict x, int n, float mean)
{
    float acc[FG_TB];
    int i = 0, j;
    for (j = 0; j < FG_TB; ++j)
        acc[j] = 0.0f;
    for (; i + FG_TB <= n; i += FG_TB) {
        for (j = 0; j < FG_TB; ++j) {
            const float d = x[i + j] - mean;
            acc[j] += d * d;
        }
    }
    for (j = 0; i < n; ++i, ++j) {
        const float d = x[i] - mean;
        acc[j] += d * d;
    }
    for (j = FG_TB / 2; j > 0; j /= 2) {
        int q;
        for (q = 0; q < j; ++q)
            acc[q] += acc[q + j];
    }
    return acc[0];
}

void fg_layernorm(const float *x, float *y, int outer, int n, const float *scale,
                  const float *bias, float eps, float *mean, float *invstd)
{
    int o, i, j;
    for (o = 0; o < outer; ++o) {
        const float *xo = x + (size_t)o * (size_t)n;
        float *yo = y + (size_t)o * (size_t)n;
        const float mu = fg_sum_contig(xo, n) / (float)n;
        const float r = 1.0f / sqrtf(fg_sqdev_contig(xo, n, mu) / (float)n + eps);
        i = 0;
        for (; i + FG_TB <= n; i += FG_TB) {
            float t[FG_TB];
            for (j = 0; j < FG_TB; ++j)
                t[j] = (xo[i + j] - mu) * r * scale[i + j];
            if (bias != NULL) {
                for (j = 0; j < FG_TB; ++j)
                    t[j] += bias[i + j];
            }
            for (j = 0; j < FG_TB; ++j)
                yo[i + j] = t[j];
        }
        for (; i < n; ++i)
            yo[i] = (xo[i] - mu) * r * scale[i] + (bias != NULL ? bias[i] : 0.0f);
        if (mean != NULL)
            mean[o] = mu;
        if (invstd != NULL)
            invstd[o] = r;
    }
}

/* ---- softmax -------------------------------------------------------------- */

/* One softmax (or log-softmax) over n values at stride st. */
static void fg_softmax_line(const float *x, float *y, int n, size_t st, int logsm)
{
    float m = -HUGE_VALF, sum = 0.0f;
    int r;
    for (r = 0; r < n; ++r)
        m = fg_max_nan(x[(size_t)r * st], m);
    if (logsm) {
        /* (x - m) - log(sum): x - m is exact for nearby values, so large
         * inputs (e.g. 10000) keep full relative precision */
        float ls;
        for (r = 0; r < n; ++r)
            sum += expf(x[(size_t)r * st] - m);
        ls = logf(sum);
        for (r = 0; r < n; ++r)
            y[(size_t)r * st] = (x[(size_t)r * st] - m) - ls;
    } else {
        for (r = 0; r < n; ++r) {
            const float e = expf(x[(size_t)r * st] - m);
            y[(size_t)r * st] = e;
            sum += e;
        }
        for (r = 0; r < n; ++r)
            y[(size_t)r * st] = y[(size_t)r * st] / sum;
    }
}

/* FG_TB softmaxes side by side (strided axis, contiguous inner block). */
static void fg_softmax_block(const float *x, float *y, int n, size_t st, int logsm)
{
    float m[FG_TB], sum[FG_TB];
    int r, j;
    for (j = 0; j < FG_TB; ++j) {
        m[j] = -HUGE_VALF;
        sum[j] = 0.0f;
    }
    for (r = 0; r < n; ++r) {
        const float *xr = x + (size_t)r * st;
        for (j = 0; j < FG_TB; ++j)
            m[j] = fg_max_nan(xr[j], m[j]);
    }
    for (r = 0; r < n; ++r) {
        const float *xr = x + (size_t)r * st;
        float *yr = y + (size_t)r * st;
        for (j = 0; j < FG_TB; ++j) {
            const float e = expf(xr[j] - m[j]);
            sum[j] += e;
            if (!logsm)
                yr[j] = e;
        }
    }
    if (logsm) {
        float ls[FG_TB];
        for (j = 0; j < FG_TB; ++j)
            ls[j] = logf(sum[j]);
        for (r = 0; r < n; ++r) {
            const float *xr = x + (size_t)r * st;
            float *yr = y + (size_t)r * st;
            for (j = 0; j < FG_TB; ++j)
                yr[j] = (xr[j] - m[j]) - ls[j];
        }
    } else {
        for (r = 0; r < n; ++r) {
            float *yr = y + (size_t)r * st;
            for (j = 0; j < FG_TB; ++j)
                yr[j] = yr[j] / sum[j];
        }
    }
}

static void fg_softmax_any(const float *x, float *y, int outer, int n, int inner, int logsm)
{
    int o, i;
    for (o = 0; o < outer; ++o) {
        const size_t base = (size_t)o * (size_t)n * (size_t)inner;
        i = 0;
        for (; i + FG_TB <= inner; i += FG_TB)
            fg_softmax_block(x + base + (size_t)i, y + base + (size_t)i, n, (size_t)inner, logsm);
        for (; i < inner; ++i)
            fg_softmax_line(x + base + (size_t)i, y + base + (size_t)i, n, (size_t)inner, logsm);
    }
}

void fg_softmax(const float *x, float *y, int outer, int n, int inner)
{
    fg_softmax_any(x, y, outer, n, inner, 0);
}

void fg_log_softmax(const float *x, float *y, int outer, int n, int inner)
{
    fg_softmax_any(x, y, outer, n, inner, 1);
}

/* ---- LRN ------------------------------------------------------------------ */

void fg_lrn(const float *x, float *y, int outer, int C, int inner, int size, float alpha,
            float beta, float bias)
{
    const int before = (size - 1) / 2;
    const int after = size - 1 - before; /* ceil((size-1)/2) */
    const float scale = alpha / (float)size;
    int o, c, cc, i0, j;
    for (o = 0; o < outer; ++o) {
        const float *xo = x + (size_t)o * (size_t)C * (size_t)inner;
        float *yo = y + (size_t)o * (size_t)C * (size_t)inner;
        for (c = 0; c < C; ++c) {
            const int c_lo = c - before < 0 ? 0 : c - before;
            const int c_hi = c + after >= C ? C - 1 : c + after;
            for (i0 = 0; i0 < inner; i0 += FG_TB) {
                const int w = inner - i0 < FG_TB ? inner - i0 : FG_TB;
                float sq[FG_TB];
                const float *xc = xo + (size_t)c * (size_t)inner + (size_t)i0;
                float *yc = yo + (size_t)c * (size_t)inner + (size_t)i0;
                for (j = 0; j < FG_TB; ++j)
                    sq[j] = 0.0f;
                for (cc = c_lo; cc <= c_hi; ++cc) {
                    const float *xs = xo + (size_t)cc * (size_t)inner + (size_t)i0;
                    if (w == FG_TB) {
                        for (j = 0; j < FG_TB; ++j)
                            sq[j] += xs[j] * xs[j];
                    } else {
                        for (j = 0; j < w; ++j)
                            sq[j] += xs[j] * xs[j];
                    }
                }
                for (j = 0; j < w; ++j)
                    yc[j] = xc[j] / powf(bias + scale * sq[j], beta);
            }
        }
    }
}

/* ---- typed graph boundaries and integer ids -------------------------------- */

void fg_bool_to_float(const uint8_t *x, float *y, size_t n)
{
    size_t i;
    for (i = 0; i < n; ++i)
        y[i] = x[i] != 0 ? 1.0f : 0.0f;
}

void fg_float_to_bool(const float *x, uint8_t *y, size_t n)
{
    size_t i;
    for (i = 0; i < n; ++i)
        y[i] = (uint8_t)(x[i] != 0.0f);
}

void fg_i64_to_float(const int64_t *x, float *y, size_t n)
{
    size_t i;
    for (i = 0; i < n; ++i)
        y[i] = (float)x[i];
}

void fg_i32_to_float(const int32_t *x, float *y, size_t n)
{
    size_t i;
    for (i = 0; i < n; ++i)
        y[i] = (float)x[i];
}

/* one row per id; negative ids count from the end, ids out of range give a zero row */
#define FG_GATHER_ROWS                                                                           \
    do {                                                                                         \
        int k;                                                                                   \
        for (k = 0; k < n_ids; ++k) {                                                            \
            const long long id = (long long)ids[k] < 0 ? (long long)ids[k] + rows : ids[k];     \
            float *dst = y + ((size_t)o * (size_t)n_ids + (size_t)k) * (size_t)row;             \
            if (id < 0 || id >= rows)                                                            \
                memset(dst, 0, (size_t)row * sizeof(float));                                    \
            else                                                                                 \
                memcpy(dst, table + ((size_t)o * (size_t)rows + (size_t)id) * (size_t)row,      \
                       (size_t)row * sizeof(float));                                             \
        }                                                                                        \
    } while (0)

void fg_gather_i64(const float *table, const int64_t *ids, float *y, int outer, int rows, int row,
                   int n_ids)
{
    int o;
    for (o = 0; o < outer; ++o)
        FG_GATHER_ROWS;
}

void fg_gather_i32(const float *table, const int32_t *ids, float *y, int outer, int rows, int row,
                   int n_ids)
{
    int o;
    for (o = 0; o < outer; ++o)
        FG_GATHER_ROWS;
}
