/* fg_rnn.c - recurrent layers (ONNX RNN, GRU, LSTM) over a whole sequence
 * (C99, no heap, no stdio).
 *
 * The gate pre-activations of one step are two axpy sweeps over the transposed,
 * gate-concatenated weights (x_t W^T, then h_{t-1} R^T): the inner loops run over
 * the G*H gate outputs contiguously, so they vectorize at -O2 without -ffast-math.
 * A factorized gate matrix is instead a chain of sparse factors applied with the
 * fg_sparse.c kernels, one vector per step (see fg_rnn_chains).
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "fg_runtime.h"

static float fg_rnn_act(int kind, float v, float alpha, float beta)
{
    switch (kind) {
    case FG_RNN_SIGMOID:
        if (v >= 0.0f)
            return 1.0f / (1.0f + expf(-v));
        {
            const float e = expf(v);
            return e / (1.0f + e);
        }
    case FG_RNN_TANH:
        return tanhf(v);
    case FG_RNN_RELU:
        return v > 0.0f ? v : 0.0f;
    case FG_RNN_HARD_SIGMOID: {
        const float t = alpha * v + beta;
        return t < 0.0f ? 0.0f : (t > 1.0f ? 1.0f : t);
    }
    case FG_RNN_LEAKY_RELU:
        return v >= 0.0f ? v : alpha * v;
    case FG_RNN_THRESHOLDED_RELU:
        return v > alpha ? v : 0.0f;
    case FG_RNN_SCALED_TANH:
        return alpha * tanhf(beta * v);
    case FG_RNN_AFFINE:
        return alpha * v + beta;
    case FG_RNN_ELU:
        return v >= 0.0f ? v : alpha * expm1f(v);
    case FG_RNN_SOFTSIGN:
        return v / (1.0f + fabsf(v));
    case FG_RNN_SOFTPLUS:
        return v > 0.0f ? v + log1pf(expf(-v)) : log1pf(expf(v));
    default:
        return v;
    }
}

/* acc[j] += sum_i v[i] * mt[i*n + j], j < n */
static void fg_rnn_axpy(float *restrict acc, const float *v, const float *restrict mt, int m, int n)
{
    int i, j;
    for (i = 0; i < m; ++i) {
        const float s = v[i];
        const float *restrict row = mt + (size_t)i * (size_t)n;
        for (j = 0; j < n; ++j)
            acc[j] += s * row[j];
    }
}

static float fg_rnn_clip(float v, float clip)
{
    if (clip > 0.0f)
        return v < -clip ? -clip : (v > clip ? clip : v);
    return v;
}

/* Record of chain c in ch->meta, or NULL when that matrix is dense. */
static const int32_t *fg_rnn_chain_rec(const fg_rnn_chains *ch, int c)
{
    if (ch == NULL || ch->meta[c] < 0)
        return NULL;
    return ch->meta + ch->meta[c];
}

/* acc[0:m] += S_0 ... S_{J-1} v for the chain record `rec` (factors in the order they
 * apply: S_{J-1} first); t0 / t1 hold the intermediate vectors. */
static void fg_rnn_chain_apply(const fg_rnn_chains *ch, const int32_t *rec, const float *v,
                               float *acc, float *t0, float *t1)
{
    const int J = rec[0];
    const float *src = v;
    int q, j, m = 0;
    for (q = 0; q < J; ++q) {
        const int32_t *f = rec + 1 + 6 * q; /* kind, m, n, ptr, idx, val offsets */
        float *dst = (q & 1) ? t1 : t0;
        m = f[1];
        if (f[0] == FG_RNN_FACTOR_BSR16)
            fg_bsr16_matvec_i32(1, f[1], f[2], ch->ptr + f[3], ch->idx + f[4], ch->val + f[5],
                                src, dst, NULL, FG_ACT_NONE, 0.0f, 0.0f);
        else
            fg_csr_matvec_i32(1, f[1], f[2], ch->ptr + f[3], ch->idx + f[4], ch->val + f[5], src,
                              dst, NULL, FG_ACT_NONE, 0.0f, 0.0f);
        src = dst;
    }
    for (j = 0; j < m; ++j)
        acc[j] += src[j];
}

/* acc[0:GH] += v M^T for gate matrix c (direction d: c = d for W, dirs + d for R), from
 * the dense transposed matrix mt (n x GH) or the chain. */
static void fg_rnn_project(const fg_rnn_chains *ch, int c, const float *mt, const float *v,
                           int n, int GH, float *acc, float *t0, float *t1)
{
    const int32_t *rec = fg_rnn_chain_rec(ch, c);
    if (rec != NULL)
        fg_rnn_chain_apply(ch, rec, v, acc, t0, t1);
    else
        fg_rnn_axpy(acc, v, mt, n, GH);
}

size_t fg_rnn_scratch(const fg_rnn *p, const fg_rnn_chains *ch)
{
    size_t n = (size_t)(3 * p->gates + 3) * (size_t)p->H;
    if (ch != NULL)
        n += 2 * (size_t)ch->max_dim;
    return n;
}

void fg_rnn_seq(const fg_rnn *p, const float *x, const float *wt, const float *rt,
                const float *bias, const float *peep, const int32_t *seq_lens, const float *h0,
                const float *c0, float *y, float *yh, float *yc, const fg_rnn_chains *chains,
                float *scratch)
{
    const int T = p->T, B = p->B, I = p->I, H = p->H, G = p->gates, D = p->dirs;
    const int GH = G * H;
    float *gx = scratch;          /* x_t W^T + Wb            (G*H) */
    float *gh = gx + GH;          /* h R^T + Rb              (G*H) */
    float *gr = gh + GH;          /* (r * h) R^T, GRU with a factorized R (G*H) */
    float *h = gr + GH, *c = h + H, *hn = c + H;
    float *t0 = hn + H, *t1 = t0 + (chains != NULL ? chains->max_dim : 0);
    int d, b, step, j;
    for (d = 0; d < D; ++d) {
        const int reverse = D == 2 ? d == 1 : p->reverse;
        /* wt / rt are NULL when every direction's matrix is factorized */
        const float *w = wt != NULL ? wt + (size_t)d * (size_t)I * (size_t)GH : NULL;
        const float *r = rt != NULL ? rt + (size_t)d * (size_t)H * (size_t)GH : NULL;
        const int32_t *r_chain = fg_rnn_chain_rec(chains, D + d);
        const float *wb = bias + (size_t)d * 2 * (size_t)GH, *rb = wb + GH;
        const float *pp = peep != NULL ? peep + (size_t)d * 3 * (size_t)H : NULL;
        for (b = 0; b < B; ++b) {
            const int len = seq_lens != NULL ? (int)seq_lens[b] : T;
            /* state index of (d, b): layout 0 is [D][B][H], layout 1 is [B][D][H] */
            const size_t st = p->layout ? ((size_t)b * D + d) * (size_t)H
                                        : ((size_t)d * B + b) * (size_t)H;
            for (j = 0; j < H; ++j) {
                h[j] = h0 != NULL ? h0[st + (size_t)j] : 0.0f;
                c[j] = c0 != NULL ? c0[st + (size_t)j] : 0.0f;
            }
            for (step = 0; step < T; ++step) {
                const int t = reverse ? len - 1 - step : step;
                /* Y is [T][D][B][H] (layout 0) or [B][T][D][H] (layout 1) */
                float *yt = NULL;
                if (y != NULL) {
                    const int tt = step < len ? t : step;
                    yt = y + (p->layout ? (((size_t)b * T + tt) * D + d) * (size_t)H
                                        : (((size_t)tt * D + d) * B + b) * (size_t)H);
                }
                if (step >= len) { /* past this sample's length: Y is 0 */
                    if (yt != NULL)
                        for (j = 0; j < H; ++j)
                            yt[j] = 0.0f;
                    continue;
                }
                {
                    const float *xt = x + (p->layout ? ((size_t)b * T + t) * (size_t)I
                                                     : ((size_t)t * B + b) * (size_t)I);
                    memcpy(gx, wb, (size_t)GH * sizeof(float));
                    memcpy(gh, rb, (size_t)GH * sizeof(float));
                    fg_rnn_project(chains, d, w, xt, I, GH, gx, t0, t1);
                    fg_rnn_project(chains, D + d, r, h, H, GH, gh, t0, t1);
                }
                if (p->cell == FG_CELL_RNN) {
                    for (j = 0; j < H; ++j)
                        hn[j] = fg_rnn_act(p->act[0], fg_rnn_clip(gx[j] + gh[j], p->clip),
                                           p->alpha[0], p->beta[0]);
                } else if (p->cell == FG_CELL_GRU) { /* gates z, r, h */
                    for (j = 0; j < 2 * H; ++j) /* z and r, kept in gx */
                        gx[j] = fg_rnn_act(p->act[0], fg_rnn_clip(gx[j] + gh[j], p->clip),
                                           p->alpha[0], p->beta[0]);
                    if (!p->linear_before_reset) {
                        /* h gate from (r * h) R_h^T + Rb_h instead of r * (h R_h^T + Rb_h) */
                        int k;
                        float *ghh = gh + 2 * H;
                        for (k = 0; k < H; ++k)
                            hn[k] = gx[H + k] * h[k];
                        memcpy(ghh, rb + 2 * H, (size_t)H * sizeof(float));
                        if (r_chain != NULL) { /* the whole chain, then its h-gate rows */
                            memset(gr, 0, (size_t)GH * sizeof(float));
                            fg_rnn_chain_apply(chains, r_chain, hn, gr, t0, t1);
                            for (j = 0; j < H; ++j)
                                ghh[j] += gr[2 * H + j];
                        } else {
                            for (k = 0; k < H; ++k) {
                                const float sk = hn[k];
                                const float *restrict row =
                                    r + (size_t)k * (size_t)GH + 2 * (size_t)H;
                                for (j = 0; j < H; ++j)
                                    ghh[j] += sk * row[j];
                            }
                        }
                    }
                    for (j = 0; j < H; ++j) {
                        const float z = gx[j], rr = gx[H + j];
                        const float pre = p->linear_before_reset ? gx[2 * H + j] + rr * gh[2 * H + j]
                                                                 : gx[2 * H + j] + gh[2 * H + j];
                        const float hh = fg_rnn_act(p->act[1], fg_rnn_clip(pre, p->clip),
                                                    p->alpha[1], p->beta[1]);
                        hn[j] = (1.0f - z) * hh + z * h[j];
                    }
                } else { /* LSTM, gates i, o, f, c */
                    for (j = 0; j < H; ++j) {
                        const float pi = pp != NULL ? pp[j] : 0.0f;
                        const float po = pp != NULL ? pp[H + j] : 0.0f;
                        const float pf = pp != NULL ? pp[2 * H + j] : 0.0f;
                        const float ig = fg_rnn_act(
                            p->act[0], fg_rnn_clip(gx[j] + gh[j] + pi * c[j], p->clip), p->alpha[0],
                            p->beta[0]);
                        const float fg =
                            p->input_forget
                                ? 1.0f - ig
                                : fg_rnn_act(p->act[0],
                                             fg_rnn_clip(gx[2 * H + j] + gh[2 * H + j] + pf * c[j],
                                                         p->clip),
                                             p->alpha[0], p->beta[0]);
                        const float cc =
                            fg_rnn_act(p->act[1], fg_rnn_clip(gx[3 * H + j] + gh[3 * H + j], p->clip),
                                       p->alpha[1], p->beta[1]);
                        const float cn = fg * c[j] + ig * cc;
                        const float og = fg_rnn_act(
                            p->act[0], fg_rnn_clip(gx[H + j] + gh[H + j] + po * cn, p->clip),
                            p->alpha[0], p->beta[0]);
                        hn[j] = og * fg_rnn_act(p->act[2], cn, p->alpha[2], p->beta[2]);
                        c[j] = cn;
                    }
                }
                memcpy(h, hn, (size_t)H * sizeof(float));
                if (yt != NULL)
                    memcpy(yt, h, (size_t)H * sizeof(float));
            }
            if (yh != NULL)
                memcpy(yh + st, h, (size_t)H * sizeof(float));
            if (yc != NULL)
                memcpy(yc + st, c, (size_t)H * sizeof(float));
        }
    }
}
