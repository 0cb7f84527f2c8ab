/* test_kernels.c - self-test: every optimized fg_* kernel against the naive
 * reference (ref_kernels.c) on many random shapes, including tails (N not a
 * multiple of 16, M not a multiple of 4), odd strides / dilations / pads,
 * groups, depthwise multipliers, ceil-mode pooling windows past the padded
 * input, count_include_pad both ways, broadcasting, transposes and negative
 * pads, and the sparse factor kernels (CSR / ELL / BSR16 matvec, CSR spmm) with
 * u16 and i32 indices, empty rows and panels, partial last panels, rows > 1
 * and ncols tails, and the recurrent layers (RNN / GRU / LSTM, both directions,
 * dense and with factorized gate matrices). Output buffers carry guard zones that
 * must stay untouched; the inputs of the sparse and recurrent kernels are exact-size
 * allocations (ASan catches overreads).
 *
 * Build and run (see Makefile):
 *   gcc -O2 -std=c99 -I.. ../fg_*.c ref_kernels.c test_kernels.c -lm -o test_kernels
 *   ./test_kernels [iterations-scale]
 * Prints "N passed, M failed" and exits non-zero on failure.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../fg_runtime.h"
#include "ref_kernels.h"

static int g_pass, g_fail;
static unsigned g_rng = 0x9e3779b9u;

static unsigned rnd_u32(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 17;
    g_rng ^= g_rng << 5;
    return g_rng;
}

/* uniform integer in [lo, hi] */
static int rnd_int(int lo, int hi)
{
    return lo + (int)(rnd_u32() % (unsigned)(hi - lo + 1));
}

/* uniform float in [-1, 1) */
static float rnd_f(void)
{
    return (float)(rnd_u32() >> 8) * (2.0f / 16777216.0f) - 1.0f;
}

static void fill_rand(float *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; ++i)
        p[i] = rnd_f();
}

#define GUARD 19
static const float GUARD_VAL = 12345.678f;

/* malloc n floats plus GUARD guard floats on each side; returns the inside */
static float *alloc_g(size_t n)
{
    float *p = (float *)malloc((n + 2 * GUARD) * sizeof(float));
    size_t i;
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    for (i = 0; i < n + 2 * GUARD; ++i)
        p[i] = GUARD_VAL;
    return p + GUARD;
}

static void free_g(float *p)
{
    if (p)
        free(p - GUARD);
}

static int guards_ok(const float *p, size_t n)
{
    size_t i;
    for (i = 1; i <= GUARD; ++i)
        if (p[-(ptrdiff_t)i] != GUARD_VAL || p[n + i - 1] != GUARD_VAL)
            return 0;
    return 1;
}

/* |got - want| <= rtol |want| + atol, NaN matches NaN, inf matches inf */
static int compare(const char *what, const float *got, const float *want, size_t n, float rtol,
                   float atol, const char *ctx)
{
    size_t i;
    for (i = 0; i < n; ++i) {
        const float g = got[i], w = want[i];
        if (g != g || w != w) {
            if (g != g && w != w)
                continue;
        } else if (isinf(w) || isinf(g)) {
            if (g == w)
                continue;
        } else if (fabsf(g - w) <= rtol * fabsf(w) + atol) {
            continue;
        }
        printf("FAIL %s [%s]: index %zu got %.9g want %.9g\n", what, ctx, i, (double)g,
               (double)w);
        return 0;
    }
    return 1;
}

static void record(int ok)
{
    if (ok)
        ++g_pass;
    else
        ++g_fail;
}

/* tolerance for a dot product of length L with |terms| <= 1 */
static float atol_dot(int L)
{
    return 1e-6f * (float)(L + 1);
}

/* ---- packing helpers (same layouts as faustgen/codegen/pack.py) --------- */

static float *pack_panels(const float *B, int K, int N)
{
    const int np = (N + FG_PANEL - 1) / FG_PANEL;
    float *Bp = alloc_g((size_t)np * K * FG_PANEL + 1);
    int p, k, j;
    for (p = 0; p < np; ++p)
        for (k = 0; k < K; ++k)
            for (j = 0; j < FG_PANEL; ++j) {
                const int n = p * FG_PANEL + j;
                Bp[((size_t)p * K + k) * FG_PANEL + j] = n < N ? B[(size_t)k * N + n] : 0.0f;
            }
    return Bp;
}

static void pack_mblocks_into(const float *A, int M, int K, float *Ap)
{
    const int nb = (M + FG_MBLOCK - 1) / FG_MBLOCK;
    int b, k, i;
    for (b = 0; b < nb; ++b)
        for (k = 0; k < K; ++k)
            for (i = 0; i < FG_MBLOCK; ++i) {
                const int m = b * FG_MBLOCK + i;
                Ap[((size_t)b * K + k) * FG_MBLOCK + i] = m < M ? A[(size_t)m * K + k] : 0.0f;
            }
}

static int rnd_act(float *a, float *b)
{
    const int act = rnd_int(0, FG_ACT_SILU);
    *a = 0.0f;
    *b = 0.0f;
    if (act == FG_ACT_LEAKY)
        *a = 0.1f;
    if (act == FG_ACT_CLIP) {
        *a = -0.5f;
        *b = 0.7f;
    }
    return act;
}

/* ---- dense / gemm / matmul ---------------------------------------------- */

static void test_dense(int iters)
{
    int it;
    for (it = 0; it < iters; ++it) {
        const int M = it < 8 ? 1 : rnd_int(1, 11);
        const int K = it == 0 ? 0 : rnd_int(1, it % 5 == 0 ? 800 : 150);
        const int N = rnd_int(1, it % 7 == 0 ? 310 : 70);
        const int use_bias = rnd_int(0, 3) != 0;
        float a, b;
        const int act = rnd_act(&a, &b);
        float *x = alloc_g((size_t)M * K + 1), *B = alloc_g((size_t)K * N + 1);
        float *bias = alloc_g((size_t)N), *y = alloc_g((size_t)M * N), *yr = alloc_g((size_t)M * N);
        float *Bp;
        char ctx[128];
        fill_rand(x, (size_t)M * K);
        fill_rand(B, (size_t)K * N);
        fill_rand(bias, (size_t)N);
        Bp = pack_panels(B, K, N);
        fg_dense(x, y, M, K, N, Bp, use_bias ? bias : NULL, act, a, b);
        ref_dense(x, yr, M, K, N, B, use_bias ? bias : NULL, act, a, b);
        snprintf(ctx, sizeof ctx, "M=%d K=%d N=%d bias=%d act=%d", M, K, N, use_bias, act);
        record(compare("fg_dense", y, yr, (size_t)M * N, 1e-5f, atol_dot(K), ctx) &&
               guards_ok(y, (size_t)M * N));
        free_g(x);
        free_g(B);
        free_g(bias);
        free_g(y);
        free_g(yr);
        free_g(Bp);
    }
}

static void test_gemm_a(int iters)
{
    int it;
    for (it = 0; it < iters; ++it) {
        const int M = rnd_int(1, 13);
        const int K = it == 0 ? 0 : rnd_int(1, it % 4 == 0 ? 300 : 60);
        const int N = it % 3 == 0 ? rnd_int(1, 15) : rnd_int(1, 140);
        const int use_bias = rnd_int(0, 1);
        const int nb = (M + FG_MBLOCK - 1) / FG_MBLOCK;
        float a, b;
        const int act = rnd_act(&a, &b);
        float *A = alloc_g((size_t)M * K + 1), *Ap = alloc_g((size_t)nb * FG_MBLOCK * K + 1);
        float *B = alloc_g((size_t)K * N + 1), *bias = alloc_g((size_t)M);
        float *C = alloc_g((size_t)M * N), *Cr = alloc_g((size_t)M * N);
        char ctx[128];
        fill_rand(A, (size_t)M * K);
        fill_rand(B, (size_t)K * N);
        fill_rand(bias, (size_t)M);
        pack_mblocks_into(A, M, K, Ap);
        fg_gemm_a(Ap, B, C, M, K, N, use_bias ? bias : NULL, act, a, b);
        ref_gemm(A, B, Cr, M, K, N, use_bias ? bias : NULL, act, a, b);
        snprintf(ctx, sizeof ctx, "M=%d K=%d N=%d bias=%d act=%d", M, K, N, use_bias, act);
        record(compare("fg_gemm_a", C, Cr, (size_t)M * N, 1e-5f, atol_dot(K), ctx) &&
               guards_ok(C, (size_t)M * N));
        free_g(A);
        free_g(Ap);
        free_g(B);
        free_g(bias);
        free_g(C);
        free_g(Cr);
    }
}

static void test_matmul(int iters)
{
    int it;
    for (it = 0; it < iters; ++it) {
        const int batch = rnd_int(1, 3), M = rnd_int(1, 9), K = rnd_int(1, 70);
        const int N = rnd_int(1, 40);
        const int bcast_a = rnd_int(0, 3) == 0, bcast_b = rnd_int(0, 3) == 0;
        const size_t sa = bcast_a ? 0 : (size_t)M * K + (size_t)rnd_int(0, 3);
        const size_t sb = bcast_b ? 0 : (size_t)K * N + (size_t)rnd_int(0, 3);
        const size_t na = sa * (size_t)(batch - 1) + (size_t)M * K;
        const size_t nbb = sb * (size_t)(batch - 1) + (size_t)K * N;
        const size_t ny = (size_t)batch * M * N;
        float *A = alloc_g(na), *B = alloc_g(nbb), *Y = alloc_g(ny), *Yr = alloc_g(ny);
        char ctx[128];
        fill_rand(A, na);
        fill_rand(B, nbb);
        fg_matmul(A, B, Y, batch, M, K, N, sa, sb);
        ref_matmul(A, B, Yr, batch, M, K, N, sa, sb);
        snprintf(ctx, sizeof ctx, "batch=%d M=%d K=%d N=%d sa=%zu sb=%zu", batch, M, K, N, sa,
                 sb);
        record(compare("fg_matmul", Y, Yr, ny, 1e-5f, atol_dot(K), ctx) && guards_ok(Y, ny));
        free_g(A);
        free_g(B);
        free_g(Y);
        free_g(Yr);
    }
}

/* ---- convolution ---------------------------------------------------------- */

/* output size with leading pad p, trailing pad pe */
static int conv_out(int n, int k, int s, int d, int p, int pe)
{
    const int span = d * (k - 1) + 1;
    if (n + p + pe < span)
        return 0;
    return (n + p + pe - span) / s + 1;
}

static int rnd_conv_shape(fg_conv_shape *s, int nd, int depthwise)
{
    int g, mult;
    memset(s, 0, sizeof *s);
    s->D = s->H = 1;
    s->kd = s->kh = 1;
    s->sd = s->sh = s->dd = s->dh = 1;
    if (depthwise) {
        s->C = rnd_int(1, 6);
        mult = rnd_int(1, 3);
        s->group = s->C;
        s->K = s->C * mult;
    } else {
        g = rnd_int(0, 3) == 0 ? rnd_int(2, 3) : 1;
        s->group = g;
        s->C = g * rnd_int(1, 4);
        s->K = g * rnd_int(1, 9);
    }
    s->W = rnd_int(1, nd == 1 ? 40 : 17);
    s->kw = rnd_int(1, 5);
    s->sw = rnd_int(1, 3);
    s->dw = rnd_int(1, 3);
    s->pw = rnd_int(0, s->kw - 1);
    s->OW = conv_out(s->W, s->kw, s->sw, s->dw, s->pw, rnd_int(0, s->kw - 1));
    if (nd >= 2) {
        s->H = rnd_int(1, 13);
        s->kh = rnd_int(1, 4);
        s->sh = rnd_int(1, 2);
        s->dh = rnd_int(1, 2);
        s->ph = rnd_int(0, s->kh - 1);
    }
    s->OH = conv_out(s->H, s->kh, s->sh, s->dh, s->ph, nd >= 2 ? rnd_int(0, s->kh - 1) : 0);
    if (nd >= 3) {
        s->D = rnd_int(1, 6);
        s->kd = rnd_int(1, 3);
        s->sd = rnd_int(1, 2);
        s->dd = rnd_int(1, 2);
        s->pd = rnd_int(0, s->kd - 1);
    }
    s->OD = conv_out(s->D, s->kd, s->sd, s->dd, s->pd, nd >= 3 ? rnd_int(0, s->kd - 1) : 0);
    return s->OD > 0 && s->OH > 0 && s->OW > 0;
}

static void make_pointwise(fg_conv_shape *s)
{
    s->kd = s->kh = s->kw = 1;
    s->sd = s->sh = s->sw = 1;
    s->pd = s->ph = s->pw = 0;
    s->OD = s->D;
    s->OH = s->H;
    s->OW = s->W;
}

static void shape_ctx(char *ctx, size_t n, const fg_conv_shape *s)
{
    snprintf(ctx, n,
             "C=%d K=%d g=%d in=%dx%dx%d out=%dx%dx%d k=%dx%dx%d s=%d,%d,%d d=%d,%d,%d "
             "p=%d,%d,%d",
             s->C, s->K, s->group, s->D, s->H, s->W, s->OD, s->OH, s->OW, s->kd, s->kh, s->kw,
             s->sd, s->sh, s->sw, s->dd, s->dh, s->dw, s->pd, s->ph, s->pw);
}

static void test_conv(int iters)
{
    int it;
    for (it = 0; it < iters; ++it) {
        fg_conv_shape s;
        const int nd = 1 + it % 3;
        size_t nx, ny, nw, nwp, nscr, S;
        int Cg, Kg, R, Kgp, g, use_bias;
        float a, b;
        int act;
        float *x, *w, *wp, *bias, *y, *yr, *scr;
        char ctx[256];
        if (!rnd_conv_shape(&s, nd, 0))
            continue;
        if (it % 5 == 0)
            make_pointwise(&s);
        act = rnd_act(&a, &b);
        use_bias = rnd_int(0, 1);
        Cg = s.C / s.group;
        Kg = s.K / s.group;
        R = Cg * s.kd * s.kh * s.kw;
        Kgp = (Kg + FG_MBLOCK - 1) / FG_MBLOCK * FG_MBLOCK;
        S = (size_t)s.OD * s.OH * s.OW;
        nx = (size_t)s.C * s.D * s.H * s.W;
        ny = (size_t)s.K * S;
        nw = (size_t)s.K * R;
        nwp = (size_t)s.group * Kgp * R;
        nscr = fg_conv_scratch(&s);
        x = alloc_g(nx);
        w = alloc_g(nw);
        wp = alloc_g(nwp);
        bias = alloc_g((size_t)s.K);
        y = alloc_g(ny);
        yr = alloc_g(ny);
        scr = alloc_g(nscr + 1);
        fill_rand(x, nx);
        fill_rand(w, nw);
        fill_rand(bias, (size_t)s.K);
        for (g = 0; g < s.group; ++g)
            pack_mblocks_into(w + (size_t)g * Kg * R, Kg, R, wp + (size_t)g * Kgp * R);
        fg_conv(&s, x, y, wp, use_bias ? bias : NULL, act, a, b, nscr ? scr : NULL);
        ref_conv(&s, x, yr, w, use_bias ? bias : NULL, act, a, b);
        shape_ctx(ctx, sizeof ctx, &s);
        record(compare("fg_conv", y, yr, ny, 1e-5f, atol_dot(R), ctx) && guards_ok(y, ny) &&
               guards_ok(scr, nscr + 1));
        /* im2col of group 0, in the scratch's first R*S floats (none when
         * pointwise); then R * FG_CONV_PANEL_MAX for the packed panels */
        {
            const int pw = s.kd == 1 && s.kh == 1 && s.kw == 1 && s.sd == 1 && s.sh == 1 &&
                           s.sw == 1 && s.pd == 0 && s.ph == 0 && s.pw == 0 && s.OD == s.D &&
                           s.OH == s.H && s.OW == s.W;
            const size_t ncols = pw ? 0 : (size_t)R * S;
            if (nscr != ncols + (size_t)R * FG_CONV_PANEL_MAX)
                printf("FAIL fg_conv_scratch %zu, want %zu [%s]\n", nscr,
                       ncols + (size_t)R * FG_CONV_PANEL_MAX, ctx);
            record(nscr == ncols + (size_t)R * FG_CONV_PANEL_MAX);
            if (ncols) {
                float *cr = alloc_g(ncols);
                float *cols = alloc_g(ncols + 1);
                ref_im2col(&s, x, cr);
                fg_im2col(&s, x, cols);
                record(compare("fg_im2col", cols, cr, ncols, 0.0f, 0.0f, ctx) &&
                       guards_ok(cols, ncols + 1));
                free_g(cr);
                free_g(cols);
            }
        }
        free_g(x);
        free_g(w);
        free_g(wp);
        free_g(bias);
        free_g(y);
        free_g(yr);
        free_g(scr);
    }
}

/* fg_conv on one given shape (all activations, with and without bias), then
 * the scratch guards: the direct row path of fg_conv must stay inside
 * fg_conv_scratch(s) floats like the im2col path. */
static void check_conv_shape(fg_conv_shape s, const char *what)
{
    const int Cg = s.C / s.group, Kg = s.K / s.group;
    const int R = Cg * s.kd * s.kh * s.kw, Kgp = (Kg + FG_MBLOCK - 1) / FG_MBLOCK * FG_MBLOCK;
    const size_t nx = (size_t)s.C * s.D * s.H * s.W;
    const size_t ny = (size_t)s.K * s.OD * s.OH * s.OW;
    const size_t nscr = fg_conv_scratch(&s);
    float *x = alloc_g(nx), *w = alloc_g((size_t)s.K * R), *wp = alloc_g((size_t)s.group * Kgp * R);
    float *bias = alloc_g((size_t)s.K), *y = alloc_g(ny), *yr = alloc_g(ny);
    float *scr = alloc_g(nscr + 1);
    char ctx[300];
    int g, act;
    fill_rand(x, nx);
    fill_rand(w, (size_t)s.K * R);
    fill_rand(bias, (size_t)s.K);
    for (g = 0; g < s.group; ++g)
        pack_mblocks_into(w + (size_t)g * Kg * R, Kg, R, wp + (size_t)g * Kgp * R);
    shape_ctx(ctx, sizeof ctx - 40, &s);
    strcat(ctx, " ");
    strcat(ctx, what);
    for (act = 0; act <= FG_ACT_SILU; ++act) {
        const float a = act == FG_ACT_CLIP ? -0.5f : 0.1f, b = 0.5f;
        const float *bs = act % 2 ? bias : NULL;
        fg_conv(&s, x, y, wp, bs, act, a, b, nscr ? scr : NULL);
        ref_conv(&s, x, yr, w, bs, act, a, b);
        record(compare("fg_conv shape", y, yr, ny, 1e-5f, atol_dot(R), ctx) && guards_ok(y, ny) &&
               guards_ok(scr, nscr + 1));
    }
    free_g(x);
    free_g(w);
    free_g(wp);
    free_g(bias);
    free_g(y);
    free_g(yr);
    free_g(scr);
}

/* each row: C, D, H, W, K, kd, kh, kw, sd, sh, sw, dd, dh, dw, pd, ph, pw, trailing
 * pads (d, h, w), group */
static void check_conv_rows(const int (*t)[21], size_t n)
{
    size_t i;
    for (i = 0; i < n; ++i) {
        const int *v = t[i];
        fg_conv_shape s;
        memset(&s, 0, sizeof s);
        s.C = v[0];
        s.D = v[1];
        s.H = v[2];
        s.W = v[3];
        s.K = v[4];
        s.kd = v[5];
        s.kh = v[6];
        s.kw = v[7];
        s.sd = v[8];
        s.sh = v[9];
        s.sw = v[10];
        s.dd = v[11];
        s.dh = v[12];
        s.dw = v[13];
        s.pd = v[14];
        s.ph = v[15];
        s.pw = v[16];
        s.group = v[20];
        s.OD = conv_out(s.D, s.kd, s.sd, s.dd, s.pd, v[17]);
        s.OH = conv_out(s.H, s.kh, s.sh, s.dh, s.ph, v[18]);
        s.OW = conv_out(s.W, s.kw, s.sw, s.dw, s.pw, v[19]);
        check_conv_shape(s, "(given shape)");
    }
}

/* Given shapes for the two fg_conv paths (row-shifted direct tiles when the
 * vertical stride is 1, im2col + GEMM otherwise): planes of one to many tiles
 * with and without a vector-size tail, narrow planes, output channels not a
 * multiple of 2 or 4, groups, strides and dilations along W, asymmetric and
 * large pads, 1-D / 3-D, and the fallbacks (sh > 1, a plane narrower than a
 * vector, a row matrix larger than the im2col scratch). */
static void test_conv_shapes(void)
{
    /* C, D, H, W, K, kd, kh, kw, sd, sh, sw, dd, dh, dw, pd, ph, pw, trailing pads
     * (d, h, w), group */
    static const int t[][21] = {
        {1, 1, 28, 28, 6, 1, 5, 5, 1, 1, 1, 1, 1, 1, 0, 2, 2, 0, 2, 2, 1}, /* LeNet conv1 */
        {6, 1, 14, 14, 16, 1, 5, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1}, /* LeNet conv2 */
        {3, 1, 1, 200, 5, 1, 1, 7, 1, 1, 1, 1, 1, 2, 0, 0, 3, 0, 0, 2, 1}, /* 1-D, dilated */
        {2, 1, 20, 50, 7, 1, 3, 3, 1, 1, 2, 1, 1, 1, 0, 1, 1, 0, 1, 0, 1}, /* sw = 2 */
        {4, 1, 9, 11, 3, 1, 3, 4, 1, 1, 3, 1, 2, 2, 0, 2, 3, 0, 0, 1, 1}, /* sw = 3, dilated */
        {5, 1, 12, 12, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1}, /* K = 1 */
        {6, 1, 10, 13, 9, 1, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, 2, 0, 3}, /* group 3, Kg = 3 */
        {4, 1, 8, 8, 10, 1, 2, 2, 1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0, 1, 2}, /* group 2, Kg = 5 */
        {3, 1, 6, 8, 5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1}, /* pointwise */
        {3, 1, 6, 8, 5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 2, 0, 1, 0, 1}, /* 1x1, padded */
        {2, 1, 4, 4, 3, 1, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1}, /* 2x2 output */
        {2, 1, 5, 7, 3, 1, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1}, /* 3x5 output */
        {2, 1, 7, 20, 4, 1, 3, 3, 1, 1, 1, 1, 3, 1, 0, 0, 0, 0, 0, 0, 1}, /* dh > OH */
        {3, 1, 15, 15, 8, 1, 3, 3, 1, 2, 1, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1}, /* sh = 2 */
        {2, 1, 7, 9, 5, 1, 4, 4, 1, 1, 1, 1, 1, 1, 0, 3, 3, 0, 3, 3, 1}, /* pads >= kernel-1 */
        {2, 1, 8, 6, 4, 1, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1}, /* 6x4 = 24 output */
        {2, 1, 10, 8, 4, 1, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1}, /* 8x6 = 48 output */
        {2, 1, 10, 9, 4, 1, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1}, /* 8x7 = 56 output */
        {2, 5, 6, 7, 3, 3, 2, 3, 2, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 2, 1}, /* 3-D, sd = 2 */
        {3, 4, 5, 6, 5, 2, 3, 3, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1}, /* 3-D, dd = 2 */
        /* many position panels, 8-channel tiles and a 4-channel rest */
        {16, 1, 20, 30, 20, 1, 3, 3, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1},
        {24, 1, 14, 14, 13, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1}, /* pointwise, Kg 13 */
        {8, 1, 23, 23, 12, 1, 7, 7, 1, 2, 2, 1, 1, 1, 0, 3, 3, 0, 3, 3, 1}, /* 7x7 stride 2 */
    };
    check_conv_rows(t, sizeof t / sizeof t[0]);
}

/* Run last (after every random case: the shapes draw random data, so cases added
 * here leave the other tests' random streams unchanged). */
static void test_conv_shapes_more(void)
{
    static const int t[][21] = {
        /* a last panel of one position (N = 48q + 1): R % 4 = 1, 2, 3, M past 32 */
        {13, 1, 7, 7, 37, 1, 3, 3, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1}, /* 7x7 output */
        {6, 1, 1, 1, 9, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1},   /* 1x1 output */
        {5, 1, 1, 97, 11, 1, 1, 3, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 1, 1}, /* 1-D, N = 97 */
        /* ... of 2, 3, 4 positions (N = 50, 51, 196) */
        {3, 1, 1, 50, 5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1},    /* pointwise */
        {10, 1, 3, 17, 6, 1, 3, 3, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1},   /* 3x17 output */
        {7, 1, 14, 14, 21, 1, 3, 3, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1},  /* 14x14 output */
        /* an im2col matrix past FG_CONV_BAND floats: bands of output rows */
        {3, 1, 60, 60, 10, 1, 7, 7, 1, 2, 2, 1, 1, 1, 0, 3, 3, 0, 2, 2, 1}, /* 7x7/2 stem */
        {9, 1, 101, 47, 6, 1, 5, 3, 1, 3, 2, 1, 1, 2, 0, 2, 1, 0, 1, 0, 1}, /* sh 3, dilated */
        /* filter matrices larger than the patch matrix (the channel-outer order):
         * row matrix with a last position, pointwise with a last 4 and a packed last
         * 16, im2col; K past one 32-channel block, not a multiple of 8 */
        {40, 1, 7, 7, 70, 1, 3, 3, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1},
        {16, 1, 14, 14, 250, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1},
        {32, 1, 8, 8, 99, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1},
        {24, 1, 15, 15, 90, 1, 3, 3, 1, 2, 2, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1},
        {12, 1, 7, 7, 100, 1, 3, 3, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 1, 2}, /* groups */
        /* vertical stride 2 on the 2-phase row matrix: bands of whole panels and a
         * last band, 2- and 4-row filters, dilation along W, groups, 3-D */
        {16, 1, 60, 60, 12, 1, 7, 7, 1, 2, 2, 1, 1, 1, 0, 3, 3, 0, 2, 2, 1},
        {5, 1, 13, 11, 9, 1, 2, 3, 1, 2, 1, 1, 1, 1, 0, 0, 1, 0, 1, 1, 1},
        {6, 1, 17, 19, 10, 1, 4, 3, 1, 2, 2, 1, 1, 2, 0, 1, 2, 0, 2, 1, 2},
        {3, 4, 9, 8, 5, 2, 3, 3, 1, 2, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1},
    };
    check_conv_rows(t, sizeof t / sizeof t[0]);
}

static void test_depthwise(int iters)
{
    int it;
    for (it = 0; it < iters; ++it) {
        fg_conv_shape s;
        const int nd = 1 + it % 3;
        size_t nx, ny, nw;
        int use_bias, act;
        float a, b;
        float *x, *w, *bias, *y, *yr;
        char ctx[256];
        if (!rnd_conv_shape(&s, nd, 1))
            continue;
        if (it % 4 == 0 && nd >= 2) { /* wide rows: exercise the vector blocks */
            s.W = rnd_int(30, 150);
            s.OW = conv_out(s.W, s.kw, s.sw, s.dw, s.pw, rnd_int(0, s.kw - 1));
        }
        act = rnd_act(&a, &b);
        use_bias = rnd_int(0, 1);
        nx = (size_t)s.C * s.D * s.H * s.W;
        ny = (size_t)s.K * s.OD * s.OH * s.OW;
        nw = (size_t)s.K * s.kd * s.kh * s.kw;
        x = alloc_g(nx);
        w = alloc_g(nw);
        bias = alloc_g((size_t)s.K);
        y = alloc_g(ny);
        yr = alloc_g(ny);
        fill_rand(x, nx);
        fill_rand(w, nw);
        fill_rand(bias, (size_t)s.K);
        fg_conv_depthwise(&s, x, y, w, use_bias ? bias : NULL, act, a, b);
        ref_conv(&s, x, yr, w, use_bias ? bias : NULL, act, a, b);
        shape_ctx(ctx, sizeof ctx, &s);
        record(compare("fg_conv_depthwise", y, yr, ny, 1e-5f, atol_dot(s.kd * s.kh * s.kw), ctx) &&
               guards_ok(y, ny));
        free_g(x);
        free_g(w);
        free_g(bias);
        free_g(y);
        free_g(yr);
    }
}

/* Given depthwise shapes: planes larger than one band of the AVX-512 plane
 * kernel (stride 1 and 2), 5x5, a channel multiplier, trailing pads. */
/* rows: C, H, W, mult, kh, kw, s, ph, pw, trailing pads (h, w) */
static void check_depthwise_rows(const int (*t)[11], size_t n)
{
    size_t i;
    for (i = 0; i < n; ++i) {
        const int *v = t[i];
        fg_conv_shape s;
        size_t nx, ny, nw;
        float *x, *w, *bias, *y, *yr;
        char ctx[256];
        int act;
        memset(&s, 0, sizeof s);
        s.C = v[0];
        s.group = v[0];
        s.K = v[0] * v[3];
        s.D = s.kd = s.sd = s.dd = s.dh = s.dw = 1;
        s.H = v[1];
        s.W = v[2];
        s.kh = v[4];
        s.kw = v[5];
        s.sh = s.sw = v[6];
        s.ph = v[7];
        s.pw = v[8];
        s.OD = 1;
        s.OH = conv_out(s.H, s.kh, s.sh, 1, s.ph, v[9]);
        s.OW = conv_out(s.W, s.kw, s.sw, 1, s.pw, v[10]);
        nx = (size_t)s.C * s.H * s.W;
        ny = (size_t)s.K * s.OH * s.OW;
        nw = (size_t)s.K * s.kh * s.kw;
        x = alloc_g(nx);
        w = alloc_g(nw);
        bias = alloc_g((size_t)s.K);
        y = alloc_g(ny);
        yr = alloc_g(ny);
        fill_rand(x, nx);
        fill_rand(w, nw);
        fill_rand(bias, (size_t)s.K);
        shape_ctx(ctx, sizeof ctx, &s);
        for (act = 0; act <= FG_ACT_SILU; ++act) {
            const float a = act == FG_ACT_CLIP ? -0.5f : 0.1f, b = 0.5f;
            const float *bs = act % 2 ? bias : NULL;
            fg_conv_depthwise(&s, x, y, w, bs, act, a, b);
            ref_conv(&s, x, yr, w, bs, act, a, b);
            record(compare("fg_conv_depthwise shape", y, yr, ny, 1e-5f,
                           atol_dot(s.kh * s.kw), ctx) &&
                   guards_ok(y, ny));
        }
        free_g(x);
        free_g(w);
        free_g(bias);
        free_g(y);
        free_g(yr);
    }
}

static void test_depthwise_shapes(void)
{
    static const int t[][11] = {
        {3, 112, 112, 1, 3, 3, 1, 1, 1, 1, 1}, {2, 111, 112, 1, 3, 3, 2, 1, 1, 1, 1},
        {2, 60, 70, 2, 5, 5, 1, 2, 2, 2, 2},   {3, 9, 9, 1, 5, 5, 2, 2, 2, 2, 2},
        {4, 7, 7, 1, 3, 3, 1, 1, 1, 1, 1},     {2, 20, 33, 1, 3, 2, 2, 0, 1, 1, 0},
    };
    check_depthwise_rows(t, sizeof t / sizeof t[0]);
}

/* The row-block kernel (fg_dw_rows): every block of rows (8, 4, 2, 1 rows of
 * one vector; 4, 2, 1 of two; 2, 1 of three and four) and of vectors (8, 4,
 * 2, 1 on rows of 5..16 vectors), 3x3 / 5x5 by valignd and 7x7 / 1x5 / 4x3
 * by unaligned loads, stride 2 with even, odd and no left pad and odd
 * widths, valid ("no pad") planes wider than the output, several bands. */
static void test_depthwise_shapes_rows(void)
{
    static const int t[][11] = {
        {2, 14, 14, 1, 5, 5, 2, 2, 2, 2, 2},  {2, 29, 27, 1, 3, 3, 2, 1, 1, 1, 1},
        {2, 30, 30, 1, 3, 3, 1, 0, 0, 0, 0},  {2, 11, 40, 2, 3, 3, 1, 1, 1, 1, 1},
        {2, 9, 60, 1, 5, 5, 1, 2, 2, 2, 2},   {2, 12, 99, 1, 3, 3, 2, 0, 0, 0, 0},
        {2, 6, 200, 1, 3, 3, 1, 1, 1, 1, 1},  {1, 5, 250, 1, 5, 5, 1, 2, 2, 2, 2},
        {2, 40, 120, 1, 7, 7, 1, 3, 3, 3, 3}, {2, 17, 70, 1, 1, 5, 2, 0, 2, 0, 2},
        {2, 23, 47, 1, 4, 3, 2, 1, 0, 2, 1},  {1, 150, 150, 1, 3, 3, 1, 1, 1, 1, 1},
        {2, 9, 9, 1, 3, 3, 2, 1, 1, 1, 1},    {2, 33, 46, 1, 5, 5, 2, 2, 2, 2, 2},
    };
    check_depthwise_rows(t, sizeof t / sizeof t[0]);
}

/* The flat-plane kernel (stride 1, output as wide as the input, small planes):
 * a last vector of 1 lane, whole vectors, blocks of 8 vectors and a rest, a
 * multiplier, 5x5 and 7x7, valid rows (OH < H), asymmetric pads, one row.
 * Run last (their random data leave the other tests' streams unchanged). */
static void test_depthwise_shapes_flat(void)
{
    static const int t[][11] = {
        {5, 7, 7, 1, 3, 3, 1, 1, 1, 1, 1},   {3, 14, 14, 2, 5, 5, 1, 2, 2, 2, 2},
        {2, 28, 28, 1, 3, 3, 1, 1, 1, 1, 1}, {3, 8, 8, 1, 3, 3, 1, 1, 1, 1, 1},
        {2, 9, 13, 1, 3, 4, 1, 0, 1, 0, 2},  {2, 16, 16, 1, 7, 7, 1, 3, 3, 3, 3},
        {3, 1, 40, 1, 1, 5, 1, 0, 2, 0, 2},
    };
    check_depthwise_rows(t, sizeof t / sizeof t[0]);
}

/* ---- pooling -------------------------------------------------------------- */

/* ONNX pooling output size (floor or ceil mode; a ceil-mode window must start
 * inside the input or the leading pad) */
static int pool_out(int n, int k, int s, int d, int p, int pe, int ceil_mode)
{
    const int span = d * (k - 1) + 1;
    int o;
    if (n + p + pe < span)
        return 0;
    o = (n + p + pe - span) / s + 1;
    if (ceil_mode && (n + p + pe - span) % s != 0) {
        ++o;
        if ((o - 1) * s >= n + p)
            --o;
    }
    return o;
}

static void rnd_pool_dim(int *n, int *k, int *st, int *d, int *p, int *pe, int *o, int big)
{
    const int ceil_mode = rnd_int(0, 1);
    *n = rnd_int(1, big ? 40 : 11);
    *k = rnd_int(1, 4);
    *st = rnd_int(1, 3);
    *d = rnd_int(0, 3) == 0 ? 2 : 1;
    *p = rnd_int(0, *k - 1);
    *pe = rnd_int(0, *k - 1);
    *o = pool_out(*n, *k, *st, *d, *p, *pe, ceil_mode);
}

static void test_pool(int iters)
{
    int it;
    for (it = 0; it < iters; ++it) {
        fg_pool_shape s;
        const int nd = 1 + it % 3;
        size_t nx, ny;
        float *x, *y, *yr;
        char ctx[256];
        memset(&s, 0, sizeof s);
        s.C = rnd_int(1, 4);
        s.D = s.H = s.kd = s.kh = s.sd = s.sh = s.dd = s.dh = s.OD = s.OH = 1;
        rnd_pool_dim(&s.W, &s.kw, &s.sw, &s.dw, &s.pw, &s.pw_end, &s.OW, nd == 1 || it % 4 == 0);
        if (it % 6 == 0) { /* the common 2x2 stride-2 window */
            s.kw = 2;
            s.sw = 2;
            s.dw = 1;
            s.pw = rnd_int(0, 1);
            s.pw_end = rnd_int(0, 1);
            s.OW = pool_out(s.W, 2, 2, 1, s.pw, s.pw_end, rnd_int(0, 1));
        }
        if (nd >= 2)
            rnd_pool_dim(&s.H, &s.kh, &s.sh, &s.dh, &s.ph, &s.ph_end, &s.OH, 0);
        if (nd >= 3)
            rnd_pool_dim(&s.D, &s.kd, &s.sd, &s.dd, &s.pd, &s.pd_end, &s.OD, 0);
        if (it % 6 == 0 && nd == 2) { /* the unpadded 2x2 stride-2 pool (fast path) */
            s.kh = s.kw = 2;
            s.sh = s.sw = 2;
            s.dh = s.dw = 1;
            s.ph = s.pw = s.ph_end = s.pw_end = 0;
            s.W = rnd_int(2, 30);
            s.H = rnd_int(2, 12);
            s.OW = pool_out(s.W, 2, 2, 1, 0, 0, rnd_int(0, 1));
            s.OH = pool_out(s.H, 2, 2, 1, 0, 0, rnd_int(0, 1));
        }
        if (s.OD <= 0 || s.OH <= 0 || s.OW <= 0)
            continue;
        s.count_include_pad = rnd_int(0, 1);
        nx = (size_t)s.C * s.D * s.H * s.W;
        ny = (size_t)s.C * s.OD * s.OH * s.OW;
        x = alloc_g(nx);
        y = alloc_g(ny);
        yr = alloc_g(ny);
        fill_rand(x, nx);
        snprintf(ctx, sizeof ctx,
                 "C=%d in=%dx%dx%d out=%dx%dx%d k=%dx%dx%d s=%d,%d,%d d=%d,%d,%d p=%d,%d,%d "
                 "pe=%d,%d,%d cip=%d",
                 s.C, s.D, s.H, s.W, s.OD, s.OH, s.OW, s.kd, s.kh, s.kw, s.sd, s.sh, s.sw, s.dd,
                 s.dh, s.dw, s.pd, s.ph, s.pw, s.pd_end, s.ph_end, s.pw_end, s.count_include_pad);
        fg_maxpool(&s, x, y);
        ref_maxpool(&s, x, yr);
        record(compare("fg_maxpool", y, yr, ny, 0.0f, 0.0f, ctx) && guards_ok(y, ny));
        fg_avgpool(&s, x, y);
        ref_avgpool(&s, x, yr);
        record(compare("fg_avgpool", y, yr, ny, 1e-5f, 1e-6f * (float)(s.kd * s.kh * s.kw), ctx) &&
               guards_ok(y, ny));
        free_g(x);
        free_g(y);
        free_g(yr);
    }
}

static void test_global_pool(int iters)
{
    int it;
    for (it = 0; it < iters; ++it) {
        const int C = rnd_int(1, 7), S = rnd_int(1, it % 2 ? 300 : 20);
        float *x = alloc_g((size_t)C * S), *y = alloc_g((size_t)C), *yr = alloc_g((size_t)C);
        char ctx[64];
        fill_rand(x, (size_t)C * S);
        snprintf(ctx, sizeof ctx, "C=%d S=%d", C, S);
        fg_global_avgpool(x, y, C, S);
        ref_global_avgpool(x, yr, C, S);
        record(compare("fg_global_avgpool", y, yr, (size_t)C, 1e-5f, atol_dot(S) / (float)S, ctx) &&
               guards_ok(y, (size_t)C));
        fg_global_maxpool(x, y, C, S);
        ref_global_maxpool(x, yr, C, S);
        record(compare("fg_global_maxpool", y, yr, (size_t)C, 0.0f, 0.0f, ctx) &&
               guards_ok(y, (size_t)C));
        free_g(x);
        free_g(y);
        free_g(yr);
    }
}

/* ---- elementwise ---------------------------------------------------------- */

static void run_unary(int op, const float *x, float *y, size_t n, float p0, float p1)
{
    switch (op) {
    case REF_RELU: fg_relu(x, y, n); break;
    case REF_LEAKY: fg_leaky_relu(x, y, n, p0); break;
    case REF_CLIP: fg_clip(x, y, n, p0, p1); break;
    case REF_ELU: fg_elu(x, y, n, p0); break;
    case REF_SELU: fg_selu(x, y, n, p0, p1); break;
    case REF_SIGMOID: fg_sigmoid(x, y, n); break;
    case REF_HARD_SIGMOID: fg_hard_sigmoid(x, y, n, p0, p1); break;
    case REF_HARD_SWISH: fg_hard_swish(x, y, n); break;
    case REF_TANH: fg_tanh(x, y, n); break;
    case REF_SOFTPLUS: fg_softplus(x, y, n); break;
    case REF_EXP: fg_exp(x, y, n); break;
    case REF_LOG: fg_log(x, y, n); break;
    case REF_SQRT: fg_sqrt(x, y, n); break;
    case REF_ABS: fg_abs(x, y, n); break;
    case REF_NEG: fg_neg(x, y, n); break;
    case REF_RECIPROCAL: fg_reciprocal(x, y, n); break;
    case REF_ERF: fg_erf(x, y, n); break;
    case REF_GELU: fg_gelu(x, y, n); break;
    case REF_GELU_TANH: fg_gelu_tanh(x, y, n); break;
    case REF_MISH: fg_mish(x, y, n); break;
    case REF_SOFTSIGN: fg_softsign(x, y, n); break;
    case REF_THRESHOLDED_RELU: fg_thresholded_relu(x, y, n, p0); break;
    case REF_SIGN: fg_sign(x, y, n); break;
    case REF_FLOOR: fg_floor(x, y, n); break;
    case REF_CEIL: fg_ceil(x, y, n); break;
    case REF_ROUND: fg_round(x, y, n); break;
    case REF_COPY: fg_copy(x, y, n); break;
    default: break;
    }
}

static void test_unary(int iters)
{
    static const char *names[REF_NUM_UNARY] = {
        "relu", "leaky_relu", "clip", "elu", "selu", "sigmoid", "hard_sigmoid", "hard_swish",
        "tanh", "softplus", "exp", "log", "sqrt", "abs", "neg", "reciprocal", "erf", "gelu",
        "gelu_tanh", "mish", "softsign", "thresholded_relu", "sign", "floor", "ceil", "round",
        "copy"};
    int it, op;
    for (op = 0; op < REF_NUM_UNARY; ++op) {
        for (it = 0; it < iters; ++it) {
            const size_t n = (size_t)rnd_int(0, it % 2 ? 300 : 40);
            const int inplace = it % 3 == 0;
            const float scale = op == REF_EXP || op == REF_SOFTPLUS ? 20.0f : 6.0f;
            float p0 = 0.3f, p1 = 1.7f;
            float *x = alloc_g(n + 1), *y = alloc_g(n + 1), *yr = alloc_g(n + 1);
            size_t i;
            char ctx[64];
            if (op == REF_CLIP) {
                p0 = -0.6f;
                p1 = 2.5f;
            }
            if (op == REF_HARD_SIGMOID) {
                p0 = 0.2f;
                p1 = 0.5f;
            }
            if (op == REF_SELU) {
                p0 = 1.6732632f;
                p1 = 1.0507009f;
            }
            for (i = 0; i < n; ++i) {
                x[i] = rnd_f() * scale;
                if (op == REF_LOG || op == REF_SQRT)
                    x[i] = fabsf(x[i]) + 1e-3f;
                if (op == REF_RECIPROCAL && fabsf(x[i]) < 1e-2f)
                    x[i] = 0.5f;
                if (op == REF_ROUND && i % 2) /* exact halves: ties go to even */
                    x[i] = floorf(x[i] * 2.0f) * 0.5f;
                yr[i] = ref_unary(op, x[i], p0, p1);
            }
            if (inplace) {
                memcpy(y, x, n * sizeof(float));
                run_unary(op, y, y, n, p0, p1);
            } else {
                run_unary(op, x, y, n, p0, p1);
            }
            snprintf(ctx, sizeof ctx, "n=%zu inplace=%d", n, inplace);
            record(compare(names[op], y, yr, n, 4e-6f, 1e-6f, ctx) && guards_ok(y, n + 1));
            free_g(x);
            free_g(y);
            free_g(yr);
        }
    }
    /* fill and channel affine */
    for (it = 0; it < iters; ++it) {
        const int outer = rnd_int(1, 3), C = rnd_int(1, 5), inner = rnd_int(1, 70);
        const size_t n = (size_t)outer * C * inner;
        float *x = alloc_g(n), *y = alloc_g(n), *yr = alloc_g(n), *sc = alloc_g((size_t)C),
              *sh = alloc_g((size_t)C);
        size_t i;
        char ctx[64];
        fill_rand(x, n);
        fill_rand(sc, (size_t)C);
        fill_rand(sh, (size_t)C);
        snprintf(ctx, sizeof ctx, "outer=%d C=%d inner=%d", outer, C, inner);
        ref_channel_affine(x, yr, outer, C, inner, sc, sh);
        if (it % 2) {
            memcpy(y, x, n * sizeof(float));
            fg_channel_affine(y, y, outer, C, inner, sc, sh);
        } else {
            fg_channel_affine(x, y, outer, C, inner, sc, sh);
        }
        record(compare("fg_channel_affine", y, yr, n, 1e-6f, 1e-7f, ctx) && guards_ok(y, n));
        fg_fill(y, n, 3.25f);
        for (i = 0; i < n; ++i)
            yr[i] = 3.25f;
        record(compare("fg_fill", y, yr, n, 0.0f, 0.0f, ctx) && guards_ok(y, n));
        free_g(x);
        free_g(y);
        free_g(yr);
        free_g(sc);
        free_g(sh);
    }
}

/* ---- broadcasting binary ops ------------------------------------------- */

static void test_binary(int iters)
{
    static const char *names[17] = {"add",        "sub",  "mul",           "div",     "prelu",
                                    "max",        "min",  "pow",           "equal",   "less",
                                    "less_equal", "greater", "greater_equal", "and", "or",
                                    "xor",        "not_equal"};
    int it;
    for (it = 0; it < iters; ++it) {
        fg_bcast s;
        int ashape[FG_MAXDIM], bshape[FG_MAXDIM];
        const int op = it % 17;
        const int nd = rnd_int(it % 11 == 0 ? 0 : 1, 4);
        size_t na = 1, nb = 1, ny = 1;
        ptrdiff_t st;
        int k, inplace;
        float *a, *b, *y, *yr;
        char ctx[160];
        memset(&s, 0, sizeof s);
        s.ndim = nd;
        for (k = 0; k < nd; ++k) {
            s.shape[k] = rnd_int(1, k == nd - 1 ? 40 : 5);
            ashape[k] = rnd_int(0, 3) == 0 ? 1 : s.shape[k];
            bshape[k] = rnd_int(0, 2) == 0 ? 1 : s.shape[k];
        }
        /* contiguous strides of each operand, 0 on broadcast axes */
        for (st = 1, k = nd - 1; k >= 0; --k) {
            s.sa[k] = ashape[k] == 1 && s.shape[k] > 1 ? 0 : st;
            st *= ashape[k];
        }
        na = (size_t)st;
        for (st = 1, k = nd - 1; k >= 0; --k) {
            s.sb[k] = bshape[k] == 1 && s.shape[k] > 1 ? 0 : st;
            st *= bshape[k];
        }
        nb = (size_t)st;
        for (k = 0; k < nd; ++k)
            ny *= (size_t)s.shape[k];
        a = alloc_g(ny > na ? ny : na);
        b = alloc_g(ny > nb ? ny : nb);
        y = alloc_g(ny);
        yr = alloc_g(ny);
        fill_rand(a, na);
        fill_rand(b, nb);
        if (op == FG_POW) {
            size_t i;
            for (i = 0; i < na; ++i)
                a[i] = fabsf(a[i]) + 0.1f;
        }
        if (op == FG_DIV) {
            size_t i;
            for (i = 0; i < nb; ++i)
                b[i] = b[i] < 0.0f ? b[i] - 0.1f : b[i] + 0.1f;
        }
        if (op >= FG_EQUAL) { /* small integers: equal operands and zeros occur */
            size_t i;
            for (i = 0; i < na; ++i)
                a[i] = (float)rnd_int(-1, 1);
            for (i = 0; i < nb; ++i)
                b[i] = (float)rnd_int(-1, 1);
        }
        if (op == FG_EQUAL) { /* fg_where with condition a, values b (true) and a (false) */
            fg_bcast3 w;
            memset(&w, 0, sizeof w);
            w.ndim = nd;
            for (k = 0; k < nd; ++k) {
                w.shape[k] = s.shape[k];
                w.sc[k] = s.sa[k];
                w.sa[k] = s.sb[k];
                w.sb[k] = s.sa[k];
            }
            fg_where(&w, a, b, a, y);
            ref_where(&w, a, b, a, yr);
            snprintf(ctx, sizeof ctx, "nd=%d", nd);
            record(compare("where", y, yr, ny, 0.0f, 0.0f, ctx) && guards_ok(y, ny));
        }
        ref_binary(op, &s, a, b, yr);
        inplace = 0;
        if (it % 3 == 0 && na == ny) { /* y == a, a not broadcast */
            fg_binary(op, &s, a, b, a);
            memcpy(y, a, ny * sizeof(float));
            inplace = 1;
        } else if (it % 3 == 1 && nb == ny) {
            fg_binary(op, &s, a, b, b);
            memcpy(y, b, ny * sizeof(float));
            inplace = 2;
        } else {
            fg_binary(op, &s, a, b, y);
        }
        snprintf(ctx, sizeof ctx, "nd=%d shape=%d,%d,%d,%d sa_last=%td sb_last=%td inplace=%d",
                 nd, s.shape[0], s.shape[1], s.shape[2], s.shape[3], nd ? s.sa[nd - 1] : 0,
                 nd ? s.sb[nd - 1] : 0, inplace);
        record(compare(names[op], y, yr, ny, 2e-6f, 1e-7f, ctx) && guards_ok(y, ny));
        free_g(a);
        free_g(b);
        free_g(y);
        free_g(yr);
    }
}

/* ---- data movement ----------------------------------------------------- */

static void test_transpose(int iters)
{
    int it;
    for (it = 0; it < iters; ++it) {
        fg_perm p;
        int xshape[FG_MAXDIM], perm[FG_MAXDIM];
        ptrdiff_t xst[FG_MAXDIM];
        const int nd = rnd_int(1, 5);
        int k, j;
        size_t n = 1;
        float *x, *y, *yr;
        char ctx[96];
        memset(&p, 0, sizeof p);
        for (k = 0; k < nd; ++k) {
            xshape[k] = rnd_int(1, nd <= 2 ? 40 : 7);
            n *= (size_t)xshape[k];
            perm[k] = k;
        }
        for (k = nd - 1; k > 0; --k) { /* random permutation */
            const int r = rnd_int(0, k), t = perm[k];
            perm[k] = perm[r];
            perm[r] = t;
        }
        xst[nd - 1] = 1;
        for (k = nd - 2; k >= 0; --k)
            xst[k] = xst[k + 1] * xshape[k + 1];
        p.ndim = nd;
        for (j = 0; j < nd; ++j) {
            p.shape[j] = xshape[perm[j]];
            p.stride[j] = xst[perm[j]];
        }
        x = alloc_g(n);
        y = alloc_g(n);
        yr = alloc_g(n);
        fill_rand(x, n);
        fg_transpose(&p, x, y);
        ref_transpose(&p, x, yr);
        snprintf(ctx, sizeof ctx, "nd=%d perm=%d%d%d%d%d", nd, perm[0], nd > 1 ? perm[1] : 0,
                 nd > 2 ? perm[2] : 0, nd > 3 ? perm[3] : 0, nd > 4 ? perm[4] : 0);
        record(compare("fg_transpose", y, yr, n, 0.0f, 0.0f, ctx) && guards_ok(y, n));
        free_g(x);
        free_g(y);
        free_g(yr);
    }
}

static void test_pad(int iters)
{
    int it;
    for (it = 0; it < iters; ++it) {
        fg_padspec p;
        const int nd = rnd_int(1, 4);
        size_t nx = 1, ny = 1;
        int k, ok = 1;
        float *x, *y, *yr;
        char ctx[96];
        memset(&p, 0, sizeof p);
        p.ndim = nd;
        for (k = 0; k < nd; ++k) {
            const int n = rnd_int(1, k == nd - 1 ? 30 : 5);
            const int b = rnd_int(-2, 3), e = rnd_int(-2, 3);
            p.in_shape[k] = n;
            p.begin[k] = b;
            p.out_shape[k] = n + b + e;
            if (p.out_shape[k] <= 0)
                ok = 0;
            nx *= (size_t)n;
            ny *= (size_t)(p.out_shape[k] > 0 ? p.out_shape[k] : 1);
        }
        if (!ok)
            continue;
        x = alloc_g(nx);
        y = alloc_g(ny);
        yr = alloc_g(ny);
        fill_rand(x, nx);
        fg_pad(&p, x, y, -7.5f);
        ref_pad(&p, x, yr, -7.5f);
        snprintf(ctx, sizeof ctx, "nd=%d in_last=%d begin_last=%d out_last=%d", nd,
                 p.in_shape[nd - 1], p.begin[nd - 1], p.out_shape[nd - 1]);
        record(compare("fg_pad", y, yr, ny, 0.0f, 0.0f, ctx) && guards_ok(y, ny));
        free_g(x);
        free_g(y);
        free_g(yr);
    }
    for (it = 0; it < iters; ++it) {
        const int outer = rnd_int(1, 6), block = rnd_int(1, 40);
        const ptrdiff_t ss = block + rnd_int(0, 9), ds = block + rnd_int(0, 9);
        const size_t ns = (size_t)(outer * ss), nd2 = (size_t)(outer * ds);
        float *src = alloc_g(ns), *dst = alloc_g(nd2), *dr = alloc_g(nd2);
        char ctx[64];
        fill_rand(src, ns);
        fill_rand(dst, nd2);
        memcpy(dr, dst, nd2 * sizeof(float));
        fg_copy_blocks(src, dst, outer, block, ss, ds);
        ref_copy_blocks(src, dr, outer, block, ss, ds);
        snprintf(ctx, sizeof ctx, "outer=%d block=%d", outer, block);
        record(compare("fg_copy_blocks", dst, dr, nd2, 0.0f, 0.0f, ctx) && guards_ok(dst, nd2));
        free_g(src);
        free_g(dst);
        free_g(dr);
    }
}

/* ---- reductions ---------------------------------------------------------- */

static void test_reductions(int iters)
{
    int it;
    for (it = 0; it < iters; ++it) {
        const int outer = rnd_int(1, 4), n = rnd_int(1, it % 2 ? 100 : 12);
        const int inner = it % 3 == 0 ? 1 : rnd_int(1, 40);
        const size_t nx = (size_t)outer * n * inner, nr = (size_t)outer * inner;
        float *x = alloc_g(nx), *y = alloc_g(nx), *yr = alloc_g(nx);
        int op, logsm;
        char ctx[96];
        size_t i;
        for (i = 0; i < nx; ++i)
            x[i] = rnd_f() * 8.0f;
        snprintf(ctx, sizeof ctx, "outer=%d n=%d inner=%d", outer, n, inner);
        for (logsm = 0; logsm < 2; ++logsm) {
            if (logsm)
                fg_log_softmax(x, y, outer, n, inner);
            else
                fg_softmax(x, y, outer, n, inner);
            ref_softmax(x, yr, outer, n, inner, logsm);
            record(compare(logsm ? "fg_log_softmax" : "fg_softmax", y, yr, nx, 1e-5f, 1e-6f,
                           ctx) &&
                   guards_ok(y, nx));
        }
        for (op = 0; op < 9; ++op) {
            static const char *names[9] = {"reduce_sum", "reduce_mean",  "reduce_max",
                                           "reduce_min", "reduce_l1",    "reduce_l2",
                                           "reduce_sumsq", "reduce_logsum", "reduce_logsumexp"};
            if (op == FG_REDUCE_LOGSUM) { /* log of a positive sum */
                for (i = 0; i < nx; ++i)
                    x[i] = fabsf(x[i]) + 0.01f;
            }
            fg_reduce(op, x, y, outer, n, inner);
            ref_reduce(op, x, yr, outer, n, inner);
            record(compare(names[op], y, yr, nr, 1e-5f, 8.0f * atol_dot(n), ctx) &&
                   guards_ok(y, nx));
        }
        {
            const int C = n < 12 ? n : 12, size = rnd_int(1, 6);
            const size_t nl = (size_t)outer * C * inner;
            fg_lrn(x, y, outer, C, inner, size, 1e-3f, 0.75f, 2.0f);
            ref_lrn(x, yr, outer, C, inner, size, 1e-3f, 0.75f, 2.0f);
            record(compare("fg_lrn", y, yr, nl, 1e-5f, 1e-6f, ctx));
        }
        {
            /* layer normalization over rows of n (x viewed as (outer*inner) x n) */
            const int rows = outer * inner;
            float *sc = alloc_g((size_t)n), *bi = alloc_g((size_t)n);
            float *mu = alloc_g((size_t)rows), *rs = alloc_g((size_t)rows);
            float *mur = alloc_g((size_t)rows), *rsr = alloc_g((size_t)rows);
            fill_rand(sc, (size_t)n);
            fill_rand(bi, (size_t)n);
            ref_layernorm(x, yr, rows, n, sc, it % 2 ? bi : NULL, 1e-5f, mur, rsr);
            if (it % 4 == 0) { /* in place */
                memcpy(y, x, nx * sizeof(float));
                fg_layernorm(y, y, rows, n, sc, it % 2 ? bi : NULL, 1e-5f, mu, rs);
            } else {
                fg_layernorm(x, y, rows, n, sc, it % 2 ? bi : NULL, 1e-5f, mu, rs);
            }
            record(compare("fg_layernorm", y, yr, nx, 1e-4f, 1e-5f, ctx) && guards_ok(y, nx));
            record(compare("fg_layernorm mean", mu, mur, (size_t)rows, 1e-5f, 1e-5f, ctx));
            record(compare("fg_layernorm invstd", rs, rsr, (size_t)rows, 1e-4f, 1e-5f, ctx));
            free_g(sc);
            free_g(bi);
            free_g(mu);
            free_g(rs);
            free_g(mur);
            free_g(rsr);
        }
        free_g(x);
        free_g(y);
        free_g(yr);
    }
}

/* ---- sparse factors ---------------------------------------------------------- */

/* exact-size input buffers (no guard floats), so that ASan / valgrind catch any
 * read past an input array */
static void *alloc_x(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static float *alloc_rand_x(size_t n)
{
    float *p = (float *)alloc_x(n * sizeof(float));
    fill_rand(p, n);
    return p;
}

static uint16_t *narrow_u16(const int32_t *idx, size_t n)
{
    uint16_t *p = (uint16_t *)alloc_x(n * sizeof(uint16_t));
    size_t i;
    for (i = 0; i < n; ++i)
        p[i] = (uint16_t)idx[i];
    return p;
}

/* CSR m x n with row lengths in [0, maxrow], a share of rows forced empty;
 * column indices uniform in [0, n) (unsorted, duplicates allowed: they add). */
typedef struct {
    int m, n, nnz, maxlen;
    int32_t *indptr, *idx;
    uint16_t *idx16; /* NULL when n > 65536 */
    float *data;
} sp_csr;

static void rnd_csr(sp_csr *S, int m, int n, int maxrow, int empty_pct)
{
    int i, p;
    S->m = m;
    S->n = n;
    S->maxlen = 0;
    S->indptr = (int32_t *)alloc_x((size_t)(m + 1) * sizeof(int32_t));
    S->indptr[0] = 0;
    for (i = 0; i < m; ++i) {
        const int len = rnd_int(0, 99) < empty_pct ? 0 : rnd_int(0, maxrow);
        S->indptr[i + 1] = S->indptr[i] + len;
        if (len > S->maxlen)
            S->maxlen = len;
    }
    S->nnz = S->indptr[m];
    S->idx = (int32_t *)alloc_x((size_t)S->nnz * sizeof(int32_t));
    S->data = alloc_rand_x((size_t)S->nnz);
    for (p = 0; p < S->nnz; ++p)
        S->idx[p] = rnd_int(0, n - 1);
    S->idx16 = n <= 65536 ? narrow_u16(S->idx, (size_t)S->nnz) : NULL;
}

static void free_csr(sp_csr *S)
{
    free(S->indptr);
    free(S->idx);
    free(S->idx16);
    free(S->data);
}

static int same_bits(const float *p, const float *q, size_t n)
{
    return memcmp(p, q, n * sizeof(float)) == 0;
}

/* the three matvec families share this driver */
enum { SP_CSR, SP_ELL, SP_BSR, SP_BSR8 };

typedef struct {
    int kind, rows, m, n, k;
    const int32_t *ptr, *idx;
    const uint16_t *idx16;
    const float *vals, *bias;
    int act;
    float a, b;
} sp_call;

static void sp_run(const sp_call *c, int wide, int rows, const float *x, float *y)
{
    switch (c->kind) {
    case SP_CSR:
        if (wide)
            fg_csr_matvec_i32(rows, c->m, c->n, c->ptr, c->idx, c->vals, x, y, c->bias, c->act,
                              c->a, c->b);
        else
            fg_csr_matvec_u16(rows, c->m, c->n, c->ptr, c->idx16, c->vals, x, y, c->bias,
                              c->act, c->a, c->b);
        break;
    case SP_ELL:
        if (wide)
            fg_ell_matvec_i32(rows, c->m, c->n, c->k, c->idx, c->vals, x, y, c->bias, c->act,
                              c->a, c->b);
        else
            fg_ell_matvec_u16(rows, c->m, c->n, c->k, c->idx16, c->vals, x, y, c->bias, c->act,
                              c->a, c->b);
        break;
    case SP_BSR8:
        if (wide)
            fg_bsr8_matvec_i32(rows, c->m, c->n, c->ptr, c->idx, c->vals, x, y, c->bias, c->act,
                               c->a, c->b);
        else
            fg_bsr8_matvec_u16(rows, c->m, c->n, c->ptr, c->idx16, c->vals, x, y, c->bias,
                               c->act, c->a, c->b);
        break;
    default:
        if (wide)
            fg_bsr16_matvec_i32(rows, c->m, c->n, c->ptr, c->idx, c->vals, x, y, c->bias,
                                c->act, c->a, c->b);
        else
            fg_bsr16_matvec_u16(rows, c->m, c->n, c->ptr, c->idx16, c->vals, x, y, c->bias,
                                c->act, c->a, c->b);
        break;
    }
}

static void sp_ref(const sp_call *c, const float *x, float *y)
{
    switch (c->kind) {
    case SP_CSR:
        ref_csr_matvec(c->rows, c->m, c->n, c->ptr, c->idx, c->vals, x, y, c->bias, c->act, c->a,
                       c->b);
        break;
    case SP_ELL:
        ref_ell_matvec(c->rows, c->m, c->n, c->k, c->idx, c->vals, x, y, c->bias, c->act, c->a,
                       c->b);
        break;
    default:
        ref_bsr_matvec(c->kind == SP_BSR8 ? FG_BSR8_ROWS : FG_BSR_ROWS, c->rows, c->m, c->n,
                       c->ptr, c->idx, c->vals, x, y, c->bias, c->act, c->a, c->b);
        break;
    }
}

/* i32 and u16 variants against the reference; both variants bitwise equal;
 * each vector of a rows > 1 call bitwise equal to a rows = 1 call. */
static void sp_check(const char *name, const sp_call *c, int dot_len, const char *ctx)
{
    const size_t nx = (size_t)c->rows * c->n, ny = (size_t)c->rows * c->m;
    float *x = alloc_rand_x(nx);
    float *y = alloc_g(ny), *y16 = alloc_g(ny), *y1 = alloc_g(ny), *yr = alloc_g(ny);
    char what[64];
    int r, ok;
    sp_ref(c, x, yr);
    sp_run(c, 1, c->rows, x, y);
    snprintf(what, sizeof what, "%s_i32", name);
    record(compare(what, y, yr, ny, 1e-5f, atol_dot(dot_len), ctx) && guards_ok(y, ny));
    if (c->idx16) {
        sp_run(c, 0, c->rows, x, y16);
        snprintf(what, sizeof what, "%s_u16", name);
        ok = compare(what, y16, yr, ny, 1e-5f, atol_dot(dot_len), ctx) && guards_ok(y16, ny);
        if (ok && !same_bits(y16, y, ny)) {
            printf("FAIL %s [%s]: u16 and i32 results differ\n", what, ctx);
            ok = 0;
        }
        record(ok);
    }
    if (c->rows > 1) {
        for (r = 0; r < c->rows; ++r)
            sp_run(c, 1, 1, x + (size_t)r * c->n, y1 + (size_t)r * c->m);
        ok = same_bits(y1, y, ny) && guards_ok(y1, ny);
        if (!ok)
            printf("FAIL %s [%s]: rows=%d differs from %d calls with rows=1\n", name, ctx,
                   c->rows, c->rows);
        record(ok);
    }
    free(x);
    free_g(y);
    free_g(y16);
    free_g(y1);
    free_g(yr);
}

static int rnd_rows(int it)
{
    return it % 3 == 0 ? rnd_int(2, 5) : 1;
}

/* m: all small sizes, around multiples of 16 / 32, and large */
static int rnd_m(int it)
{
    switch (it % 5) {
    case 0: return rnd_int(1, 17);
    case 1: return 16 * rnd_int(1, 4) + rnd_int(-1, 1);
    case 2: return 32 * rnd_int(1, 4);
    case 3: return rnd_int(1, 300);
    default: return rnd_int(1, 70);
    }
}

static void test_csr_matvec(int iters)
{
    int it;
    for (it = 0; it < iters; ++it) {
        sp_csr S;
        sp_call c;
        char ctx[128];
        const int m = it == 0 ? 1 : rnd_m(it);
        const int n = it == 0 ? 1 : (it == 1 ? 70000 : rnd_int(1, it % 4 == 0 ? 900 : 80));
        const int maxrow = it % 6 == 0 ? rnd_int(0, 200) : rnd_int(0, 20);
        rnd_csr(&S, m, n, maxrow, it % 2 ? 25 : 0);
        memset(&c, 0, sizeof c);
        c.kind = SP_CSR;
        c.rows = rnd_rows(it);
        c.m = m;
        c.n = n;
        c.ptr = S.indptr;
        c.idx = S.idx;
        c.idx16 = S.idx16;
        c.vals = S.data;
        c.act = rnd_act(&c.a, &c.b);
        c.bias = rnd_int(0, 3) ? alloc_rand_x((size_t)m) : NULL;
        snprintf(ctx, sizeof ctx, "rows=%d m=%d n=%d nnz=%d bias=%d act=%d", c.rows, m, n, S.nnz,
                 c.bias != NULL, c.act);
        sp_check("fg_csr_matvec", &c, S.maxlen, ctx);
        free((void *)c.bias);
        free_csr(&S);
    }
}

static void test_ell_matvec(int iters)
{
    int it;
    for (it = 0; it < iters; ++it) {
        sp_call c;
        char ctx[128];
        const int m = it == 0 ? 1 : rnd_m(it);
        const int n = it == 1 ? 70000 : rnd_int(1, it % 4 == 0 ? 900 : 80);
        const int k = it == 2 ? 0 : rnd_int(1, it % 6 == 0 ? 120 : 12);
        const size_t ne = (size_t)k * m;
        int32_t *idx = (int32_t *)alloc_x(ne * sizeof(int32_t));
        float *data = alloc_rand_x(ne);
        uint16_t *idx16;
        int i, s;
        /* row i uses its first len slots; the rest is padding: data 0 and any
         * valid index (some at the last column) */
        for (i = 0; i < m; ++i) {
            const int len = rnd_int(0, 4) == 0 ? rnd_int(0, k) : k;
            for (s = 0; s < k; ++s) {
                const size_t e = (size_t)s * m + i;
                idx[e] = rnd_int(0, n - 1);
                if (s >= len) {
                    data[e] = 0.0f;
                    if (rnd_int(0, 1))
                        idx[e] = n - 1;
                }
            }
        }
        idx16 = n <= 65536 ? narrow_u16(idx, ne) : NULL;
        memset(&c, 0, sizeof c);
        c.kind = SP_ELL;
        c.rows = rnd_rows(it);
        c.m = m;
        c.n = n;
        c.k = k;
        c.idx = idx;
        c.idx16 = idx16;
        c.vals = data;
        c.act = rnd_act(&c.a, &c.b);
        c.bias = rnd_int(0, 3) ? alloc_rand_x((size_t)m) : NULL;
        snprintf(ctx, sizeof ctx, "rows=%d m=%d n=%d k=%d bias=%d act=%d", c.rows, m, n, k,
                 c.bias != NULL, c.act);
        sp_check("fg_ell_matvec", &c, k, ctx);
        free((void *)c.bias);
        free(idx);
        free(idx16);
        free(data);
    }
}

/* br: br (fg_bsr16_matvec) or FG_BSR8_ROWS (fg_bsr8_matvec) */
static void test_bsr_matvec(int br, int iters)
{
    int it;
    for (it = 0; it < iters; ++it) {
        sp_call c;
        char ctx[128];
        const int m = it == 0 ? 1 : rnd_m(it);
        const int n = it == 1 ? 70000 : rnd_int(1, it % 4 == 0 ? 900 : 80);
        const int np = (m + br - 1) / br;
        const int maxb = it % 6 == 0 ? rnd_int(0, 150) : rnd_int(0, 13);
        int32_t *ptr = (int32_t *)alloc_x((size_t)(np + 1) * sizeof(int32_t));
        int32_t *cols;
        uint16_t *cols16;
        float *vals;
        int p, q, j, nb, maxlen = 0;
        ptr[0] = 0;
        for (p = 0; p < np; ++p) {
            const int len = rnd_int(0, 3) == 0 ? 0 : rnd_int(0, maxb); /* empty panels */
            ptr[p + 1] = ptr[p] + len;
            if (len > maxlen)
                maxlen = len;
        }
        nb = ptr[np];
        cols = (int32_t *)alloc_x((size_t)nb * sizeof(int32_t));
        vals = alloc_rand_x((size_t)nb * br);
        for (p = 0; p < np; ++p)
            for (q = ptr[p]; q < ptr[p + 1]; ++q) {
                cols[q] = rnd_int(0, n - 1);
                for (j = 0; j < br; ++j)
                    if (p * br + j >= m) /* zero past m (contract) */
                        vals[(size_t)q * br + j] = 0.0f;
                    else if (rnd_int(0, 7) == 0) /* some explicit zeros inside */
                        vals[(size_t)q * br + j] = 0.0f;
            }
        cols16 = n <= 65536 ? narrow_u16(cols, (size_t)nb) : NULL;
        memset(&c, 0, sizeof c);
        c.kind = br == FG_BSR8_ROWS ? SP_BSR8 : SP_BSR;
        c.rows = rnd_rows(it);
        c.m = m;
        c.n = n;
        c.ptr = ptr;
        c.idx = cols;
        c.idx16 = cols16;
        c.vals = vals;
        c.act = rnd_act(&c.a, &c.b);
        c.bias = rnd_int(0, 3) ? alloc_rand_x((size_t)m) : NULL;
        snprintf(ctx, sizeof ctx, "rows=%d m=%d n=%d blocks=%d bias=%d act=%d", c.rows, m, n, nb,
                 c.bias != NULL, c.act);
        sp_check(br == FG_BSR8_ROWS ? "fg_bsr8_matvec" : "fg_bsr16_matvec", &c, maxlen,
                 ctx);
        free((void *)c.bias);
        free(ptr);
        free(cols);
        free(cols16);
        free(vals);
    }
}

static void test_csr_spmm(int iters)
{
    static const int wide_cols[] = {16, 32, 48, 64, 80, 96, 128, 784};
    int it;
    for (it = 0; it < iters; ++it) {
        sp_csr S;
        char ctx[128];
        const int m = it == 0 ? 1 : rnd_int(1, it % 4 == 0 ? 40 : 12);
        const int n = it == 1 ? 70000 : rnd_int(1, 160);
        const int ncols = it % 4 == 0   ? rnd_int(1, 15)
                          : it % 4 == 1 ? wide_cols[rnd_int(0, 7)]
                                        : rnd_int(1, 300) + (it % 4 == 2 ? 0 : 1);
        const int maxrow = it % 5 == 0 ? rnd_int(0, 60) : rnd_int(0, 12);
        const size_t nX = (size_t)(it == 1 ? 5 : n) * ncols, ny = (size_t)m * ncols;
        float *X, *Y, *Y16, *Yr, *bias;
        float a, b;
        int act, ok, p;
        rnd_csr(&S, m, n, maxrow, it % 2 ? 30 : 0);
        if (it == 1) /* large index values, small X: only rows 0..4 referenced */
            for (p = 0; p < S.nnz; ++p)
                S.idx[p] = rnd_int(0, 4);
        X = alloc_rand_x(nX);
        Y = alloc_g(ny);
        Y16 = alloc_g(ny);
        Yr = alloc_g(ny);
        act = rnd_act(&a, &b);
        bias = rnd_int(0, 3) ? alloc_rand_x((size_t)m) : NULL;
        snprintf(ctx, sizeof ctx, "m=%d n=%d ncols=%d nnz=%d bias=%d act=%d", m, n, ncols, S.nnz,
                 bias != NULL, act);
        ref_csr_spmm(m, ncols, S.indptr, S.idx, S.data, X, Yr, bias, act, a, b);
        fg_csr_spmm_i32(m, ncols, S.indptr, S.idx, S.data, X, Y, bias, act, a, b);
        record(compare("fg_csr_spmm_i32", Y, Yr, ny, 1e-5f, atol_dot(S.maxlen), ctx) &&
               guards_ok(Y, ny));
        if (S.idx16) {
            fg_csr_spmm_u16(m, ncols, S.indptr, S.idx16, S.data, X, Y16, bias, act, a, b);
            ok = compare("fg_csr_spmm_u16", Y16, Yr, ny, 1e-5f, atol_dot(S.maxlen), ctx) &&
                 guards_ok(Y16, ny);
            if (ok && !same_bits(Y16, Y, ny)) {
                printf("FAIL fg_csr_spmm_u16 [%s]: u16 and i32 results differ\n", ctx);
                ok = 0;
            }
            record(ok);
        }
        free(X);
        free(bias);
        free_g(Y);
        free_g(Y16);
        free_g(Yr);
        free_csr(&S);
    }
}

/* ---- recurrent layers ------------------------------------------------------- */

/* Factorized gate matrices for fg_rnn_seq, built one chain at a time; each array
 * grows to its exact size (ASan / valgrind catch reads past it). */
typedef struct {
    int32_t *meta, *ptr, *idx;
    float *val;
    int nmeta, nptr, nidx, nval, max_dim;
} rnn_chains;

static int grow(void **a, int *n, int k, size_t elem)
{
    const int at = *n;
    void *q = realloc(*a, (size_t)(at + k) * elem + 1);
    if (!q) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    *a = q;
    *n = at + k;
    return at;
}

/* a random chain S_0 ... S_{J-1} for matrix c (m x n, m = G*H) as chain record c of
 * ch, and its dense product M (m x n, row-major) by the reference kernels */
static void rnd_rnn_chain(rnn_chains *ch, int c, int m, int n, float *M)
{
    const int J = rnd_int(1, 3);
    int dims[4], q, k, i, rec, at;
    float *v0 = (float *)alloc_x((size_t)REF_RNN_MAX * sizeof(float));
    float *v1 = (float *)alloc_x((size_t)REF_RNN_MAX * sizeof(float));
    dims[0] = m; /* S_q is dims[q] x dims[q + 1] */
    dims[J] = n;
    for (q = 1; q < J; ++q)
        dims[q] = rnd_int(1, 40);
    for (q = 0; q <= J; ++q)
        if (dims[q] > ch->max_dim)
            ch->max_dim = dims[q];
    rec = grow((void **)&ch->meta, &ch->nmeta, 1 + 6 * J, sizeof(int32_t));
    ch->meta[c] = rec;
    ch->meta[rec] = J;
    for (q = J - 1; q >= 0; --q) { /* in the order they apply */
        const int fm = dims[q], fn = dims[q + 1], bsr = rnd_int(0, 1);
        const int np = bsr ? (fm + FG_BSR_ROWS - 1) / FG_BSR_ROWS : fm;
        int32_t *f = ch->meta + rec + 1 + 6 * (J - 1 - q);
        f[0] = bsr ? FG_RNN_FACTOR_BSR16 : FG_RNN_FACTOR_CSR;
        f[1] = fm;
        f[2] = fn;
        f[3] = grow((void **)&ch->ptr, &ch->nptr, np + 1, sizeof(int32_t));
        f[4] = ch->nidx;
        f[5] = ch->nval;
        ch->ptr[f[3]] = 0;
        for (i = 0; i < np; ++i) { /* 0..4 entries (blocks) per row (panel) */
            const int len = rnd_int(0, 4);
            ch->ptr[f[3] + i + 1] = ch->ptr[f[3] + i] + len;
            at = grow((void **)&ch->idx, &ch->nidx, len, sizeof(int32_t));
            for (k = 0; k < len; ++k)
                ch->idx[at + k] = rnd_int(0, fn - 1);
            at = grow((void **)&ch->val, &ch->nval, bsr ? len * FG_BSR_ROWS : len, sizeof(float));
            for (k = 0; k < (bsr ? len * FG_BSR_ROWS : len); ++k) /* zero past fm (contract) */
                ch->val[at + k] = bsr && i * FG_BSR_ROWS + k % FG_BSR_ROWS >= fm ? 0.0f : rnd_f();
        }
    }
    for (k = 0; k < n; ++k) { /* column k of M: the chain applied to e_k */
        const float *src = v0;
        memset(v0, 0, (size_t)n * sizeof(float));
        v0[k] = 1.0f;
        for (q = 0; q < J; ++q) {
            const int32_t *f = ch->meta + rec + 1 + 6 * q;
            float *dst = src == v0 ? v1 : v0;
            if (f[0] == FG_RNN_FACTOR_BSR16)
                ref_bsr_matvec(FG_BSR_ROWS, 1, f[1], f[2], ch->ptr + f[3], ch->idx + f[4],
                               ch->val + f[5], src, dst, NULL, FG_ACT_NONE, 0.0f, 0.0f);
            else
                ref_csr_matvec(1, f[1], f[2], ch->ptr + f[3], ch->idx + f[4], ch->val + f[5], src,
                               dst, NULL, FG_ACT_NONE, 0.0f, 0.0f);
            src = dst;
        }
        for (i = 0; i < m; ++i)
            M[(size_t)i * n + k] = src[i];
    }
    free(v0);
    free(v1);
}

/* fg_rnn_seq against ref_rnn_seq: each cell, forward / reverse / bidirectional,
 * GRU linear_before_reset both ways, both layouts, with and without initial states,
 * peepholes, sequence lengths, clip, input_forget and other activations, and (every
 * other iteration) some gate matrices as sparse factor chains. */
static void test_rnn(int iters)
{
    static const int G[3] = {1, 3, 4};
    int it;
    for (it = 0; it < iters; ++it) {
        fg_rnn p;
        fg_rnn_chains fc;
        rnn_chains ch;
        char ctx[200];
        int d, c, k, i, g, nfact[2] = {0, 0}, ok;
        size_t nx, nw, nr, nb, ny, ns, nscr;
        float *x, *W, *R, *B, *P, *h0, *c0, *wt, *rt, *y, *yh, *yc, *yr, *yhr, *ycr, *scr;
        int32_t *lens;
        memset(&p, 0, sizeof p);
        p.cell = it % 3;
        p.gates = G[p.cell];
        p.dirs = (it / 3) % 3 == 2 ? 2 : 1;
        p.reverse = (it / 3) % 3 == 1;
        p.linear_before_reset = (it / 9) % 2;
        p.layout = rnd_int(0, 1);
        p.T = rnd_int(1, 7);
        p.B = rnd_int(1, 3);
        p.I = rnd_int(1, it % 4 == 0 ? 70 : 12);
        p.H = rnd_int(1, it % 5 == 0 ? 40 : 12);
        p.act[0] = FG_RNN_SIGMOID;
        p.act[1] = p.act[2] = FG_RNN_TANH;
        if (p.cell == FG_CELL_RNN)
            p.act[0] = FG_RNN_TANH;
        if (it % 5 == 3)
            p.clip = 0.5f + rnd_f() * 0.25f;
        if (it % 7 == 6) { /* any activations; clipped and short, as unbounded gates (z > 1,
                              f > 1) make the state grow without limit */
            for (k = 0; k < 3; ++k) {
                p.act[k] = rnd_int(0, FG_RNN_SOFTPLUS);
                p.alpha[k] = 0.5f + 0.5f * rnd_f();
                p.beta[k] = 0.5f + 0.5f * rnd_f();
            }
            p.clip = 1.0f + 0.5f * rnd_f();
            p.T = rnd_int(1, 3);
        }
        p.input_forget = p.cell == FG_CELL_LSTM && it % 4 == 1;
        nx = (size_t)p.T * p.B * p.I;
        nw = (size_t)p.dirs * p.gates * p.H * p.I;
        nr = (size_t)p.dirs * p.gates * p.H * p.H;
        nb = (size_t)p.dirs * 2 * p.gates * p.H;
        ns = (size_t)p.dirs * p.B * p.H;
        ny = (size_t)p.T * ns;
        x = alloc_rand_x(nx);
        W = alloc_rand_x(nw);
        R = alloc_rand_x(nr);
        B = alloc_rand_x(nb);
        P = p.cell == FG_CELL_LSTM && rnd_int(0, 1) ? alloc_rand_x((size_t)p.dirs * 3 * p.H)
                                                    : NULL;
        h0 = rnd_int(0, 2) ? alloc_rand_x(ns) : NULL;
        c0 = rnd_int(0, 2) ? alloc_rand_x(ns) : NULL;
        lens = NULL;
        if (rnd_int(0, 2) == 0) {
            lens = (int32_t *)alloc_x((size_t)p.B * sizeof(int32_t));
            for (k = 0; k < p.B; ++k)
                lens[k] = rnd_int(1, p.T);
        }
        /* weights ~ U(-1, 1) / sqrt(fan-in): gates away from saturation */
        for (k = 0; k < (int)nw; ++k)
            W[k] /= sqrtf((float)p.I);
        for (k = 0; k < (int)nr; ++k)
            R[k] /= sqrtf((float)p.H);
        memset(&ch, 0, sizeof ch);
        if (it % 2) { /* chain records after the 2 dirs offsets; -1: dense */
            grow((void **)&ch.meta, &ch.nmeta, 2 * p.dirs, sizeof(int32_t));
            for (c = 0; c < 2 * p.dirs; ++c)
                ch.meta[c] = -1;
            for (c = 0; c < 2 * p.dirs; ++c)
                if (rnd_int(0, 2)) {
                    const int r = c >= p.dirs, dd = c % p.dirs, n = r ? p.H : p.I;
                    float *M = (r ? R : W) + (size_t)dd * p.gates * p.H * n;
                    rnd_rnn_chain(&ch, c, p.gates * p.H, n, M);
                    ++nfact[r];
                }
            fc.meta = ch.meta;
            fc.ptr = ch.ptr;
            fc.idx = ch.idx;
            fc.val = ch.val;
            fc.max_dim = ch.max_dim;
        }
        /* the kernel's transposed W_d^T / R_d^T; NaN where a chain replaces them, NULL
         * when every direction's matrix is factorized */
        wt = nfact[0] < p.dirs ? (float *)alloc_x(nw * sizeof(float)) : NULL;
        rt = nfact[1] < p.dirs ? (float *)alloc_x(nr * sizeof(float)) : NULL;
        for (d = 0; d < p.dirs; ++d)
            for (g = 0; g < p.gates * p.H; ++g) {
                const int fw = ch.meta && ch.meta[d] >= 0, fr = ch.meta && ch.meta[p.dirs + d] >= 0;
                const size_t o = (size_t)d * p.gates * p.H;
                for (i = 0; wt && i < p.I; ++i)
                    wt[(o * p.I) + (size_t)i * p.gates * p.H + g] =
                        fw ? NAN : W[(o + g) * p.I + i];
                for (i = 0; rt && i < p.H; ++i)
                    rt[(o * p.H) + (size_t)i * p.gates * p.H + g] =
                        fr ? NAN : R[(o + g) * p.H + i];
            }
        nscr = fg_rnn_scratch(&p, ch.meta ? &fc : NULL);
        scr = alloc_g(nscr);
        y = alloc_g(ny);
        yh = alloc_g(ns);
        yc = alloc_g(ns);
        yr = alloc_g(ny);
        yhr = alloc_g(ns);
        ycr = alloc_g(ns);
        fg_rnn_seq(&p, x, wt, rt, B, P, lens, h0, c0, y, yh, yc, ch.meta ? &fc : NULL, scr);
        ref_rnn_seq(&p, x, W, R, B, P, lens, h0, c0, yr, yhr, ycr);
        snprintf(ctx, sizeof ctx,
                 "cell=%d dirs=%d rev=%d lbr=%d layout=%d T=%d B=%d I=%d H=%d act=%d,%d,%d "
                 "clip=%g if=%d peep=%d h0=%d c0=%d lens=%d factorized=%d+%d",
                 p.cell, p.dirs, p.reverse, p.linear_before_reset, p.layout, p.T, p.B, p.I, p.H,
                 p.act[0], p.act[1], p.act[2], (double)p.clip, p.input_forget, P != NULL,
                 h0 != NULL, c0 != NULL, lens != NULL, nfact[0], nfact[1]);
        ok = compare("fg_rnn_seq Y", y, yr, ny, 1e-5f, 2e-6f, ctx) && guards_ok(y, ny);
        ok = compare("fg_rnn_seq Y_h", yh, yhr, ns, 1e-5f, 2e-6f, ctx) && guards_ok(yh, ns) && ok;
        if (p.cell == FG_CELL_LSTM)
            ok = compare("fg_rnn_seq Y_c", yc, ycr, ns, 1e-5f, 2e-6f, ctx) && guards_ok(yc, ns) &&
                 ok;
        if (!guards_ok(scr, nscr)) {
            printf("FAIL fg_rnn_seq [%s]: wrote past its scratch\n", ctx);
            ok = 0;
        }
        record(ok);
        if (h0 != NULL && c0 != NULL) { /* a streaming step: h0 == yh, c0 == yc, no Y */
            memcpy(yhr, h0, ns * sizeof(float));
            memcpy(ycr, c0, ns * sizeof(float));
            fg_rnn_seq(&p, x, wt, rt, B, P, lens, yhr, ycr, NULL, yhr, ycr,
                       ch.meta ? &fc : NULL, scr);
            ok = same_bits(yhr, yh, ns) && same_bits(ycr, yc, ns);
            if (!ok)
                printf("FAIL fg_rnn_seq [%s]: in place (h0 == yh) differs\n", ctx);
            record(ok);
        }
        free(x);
        free(W);
        free(R);
        free(B);
        free(P);
        free(h0);
        free(c0);
        free(lens);
        free(wt);
        free(rt);
        free(ch.meta);
        free(ch.ptr);
        free(ch.idx);
        free(ch.val);
        free_g(scr);
        free_g(y);
        free_g(yh);
        free_g(yc);
        free_g(yr);
        free_g(yhr);
        free_g(ycr);
    }
}

int main(int argc, char **argv)
{
    const int scale = argc > 1 ? atoi(argv[1]) : 1;
    const int n = 60 * (scale > 0 ? scale : 1);
    test_dense(n * 2);
    test_gemm_a(n * 2);
    test_matmul(n);
    test_conv(n * 3);
    test_conv_shapes();
    test_depthwise(n * 2);
    test_depthwise_shapes();
    test_pool(n * 4);
    test_global_pool(n);
    test_unary(n / 3 + 1);
    test_binary(n * 3);
    test_transpose(n * 2);
    test_pad(n);
    test_reductions(n);
    test_csr_matvec(n * 2);
    test_ell_matvec(n * 2);
    test_bsr_matvec(FG_BSR_ROWS, n * 2);
    test_bsr_matvec(FG_BSR8_ROWS, n * 2);
    test_csr_spmm(n * 2);
    test_rnn(n * 3);
    test_conv_shapes_more();
    test_depthwise_shapes_flat();
    test_depthwise_shapes_rows();
    printf("%d passed, %d failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
