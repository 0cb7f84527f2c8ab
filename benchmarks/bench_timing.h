/* bench_timing.h - the C timing harness of benchmarks/bench_kernels.py and
 * bench_sparse.py (clock_gettime around batches of calls, median per call), the
 * seeded random numbers their cases use, and an allocator that fails loudly.
 * Include it first: it sets _POSIX_C_SOURCE for clock_gettime. */
#ifndef BENCH_TIMING_H
#define BENCH_TIMING_H
#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static unsigned rng = 12345u;
static unsigned rnd_u(void)
{
    rng = rng * 1664525u + 1013904223u;
    return rng >> 4;
}
static float rnd(void)
{
    return (float)(rnd_u() >> 4) * (2.0f / 16777216.0f) - 1.0f;
}
static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}
static float *rnd_buf(size_t n)
{
    float *p = xmalloc(n * sizeof(float) + 64);
    size_t i;
    for (i = 0; i < n; ++i)
        p[i] = rnd() * 0.5f;
    return p;
}

/* TIME(label, count, BODY): runs BODY in batches of about g_target ns, prints
 * "label<TAB>median ns per call<TAB>count<TAB>fastest ns per call" over g_samples
 * batches (label may hold a tab: "case<TAB>implementation"). */
#define BENCH_MAX_SAMPLES 101
static int g_samples = BENCH_MAX_SAMPLES;
static double g_target = 100000.0; /* ns per batch */
#define TIME(label, entries, BODY)                                               \
    do {                                                                         \
        double ts_[BENCH_MAX_SAMPLES], t0_;                                      \
        int s_, r_, reps_ = 1;                                                   \
        t0_ = now_ns();                                                          \
        BODY;                                                                    \
        t0_ = now_ns() - t0_;                                                    \
        reps_ = t0_ > 0 ? (int)(g_target / t0_) : 1000;                          \
        if (reps_ < 1) reps_ = 1;                                                \
        if (reps_ > 100000) reps_ = 100000;                                      \
        for (r_ = 0; r_ < reps_; ++r_) { BODY; }                                 \
        for (s_ = 0; s_ < g_samples; ++s_) {                                     \
            t0_ = now_ns();                                                      \
            for (r_ = 0; r_ < reps_; ++r_) { BODY; }                             \
            ts_[s_] = (now_ns() - t0_) / reps_;                                  \
        }                                                                        \
        qsort(ts_, (size_t)g_samples, sizeof ts_[0], cmp_d);                     \
        printf("%s\t%.2f\t%.0f\t%.2f\n", label, ts_[g_samples / 2], (double)(entries), ts_[0]); \
        fflush(stdout);                                                          \
    } while (0)

#endif /* BENCH_TIMING_H */
