/* fg_kernel.h - compiler configuration shared by the kernel sources (private:
 * not part of the API in fg_runtime.h; only fg_*.c include it). */
#ifndef FG_KERNEL_H
#define FG_KERNEL_H

#include <math.h>

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

#endif /* FG_KERNEL_H */
