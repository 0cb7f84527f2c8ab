/* ref_kernels.h - naive reference implementations of the fg_runtime kernels.
 *
 * Plain, obvious loops (llm.c dev/cpu style): one output at a time, float
 * accumulation in the natural order, unpacked weights, no blocking. They are
 * the oracle of test_kernels.c and the "naive scalar" baseline of
 * benchmarks/bench_kernels.py. Same shape structs and enums as fg_runtime.h.
 */
#ifndef REF_KERNELS_H
#define REF_KERNELS_H

#include <stddef.h>

#include "../fg_runtime.h"

float ref_act(float v, int act, float a, float b);

/* y[m][n] = act(bias[n] + sum_k x[m][k] * B[k][n]); B unpacked (K x N). */
void ref_dense(const float *x, float *y, int M, int K, int N, const float *B, const float *bias,
               int act, float a, float b);
/* C[m][n] = act(bias[m] + sum_k A[m][k] * B[k][n]); A unpacked (M x K). */
void ref_gemm(const float *A, const float *B, float *C, int M, int K, int N, const float *bias,
              int act, float a, float b);
void ref_matmul(const float *a, const float *b, float *y, int batch, int M, int K, int N,
                size_t stride_a, size_t stride_b);

/* w: ONNX layout K x (C/group) x kd x kh x kw, unpacked. */
void ref_conv(const fg_conv_shape *s, const float *x, float *y, const float *w, const float *bias,
              int act, float a, float b);
void ref_im2col(const fg_conv_shape *s, const float *x, float *cols);

void ref_maxpool(const fg_pool_shape *s, const float *x, float *y);
void ref_avgpool(const fg_pool_shape *s, const float *x, float *y);
void ref_global_avgpool(const float *x, float *y, int C, int S);
void ref_global_maxpool(const float *x, float *y, int C, int S);

/* elementwise: op codes below, p0/p1 are the kernel's float parameters */
enum {
    REF_RELU, REF_LEAKY, REF_CLIP, REF_ELU, REF_SELU, REF_SIGMOID, REF_HARD_SIGMOID,
    REF_HARD_SWISH, REF_TANH, REF_SOFTPLUS, REF_EXP, REF_LOG, REF_SQRT, REF_ABS, REF_NEG,
    REF_RECIPROCAL, REF_ERF, REF_GELU, REF_GELU_TANH, REF_MISH, REF_SOFTSIGN, REF_THRESHOLDED_RELU, REF_SIGN, REF_FLOOR,
    REF_CEIL, REF_ROUND, REF_COPY, REF_NUM_UNARY
};
float ref_unary(int op, float v, float p0, float p1);
void ref_channel_affine(const float *x, float *y, int outer, int C, int inner, const float *scale,
                        const float *shift);

float ref_binary1(int op, float a, float b);
void ref_binary(int op, const fg_bcast *s, const float *a, const float *b, float *y);
void ref_transpose(const fg_perm *p, const float *x, float *y);
void ref_pad(const fg_padspec *p, const float *x, float *y, float value);
void ref_copy_blocks(const float *src, float *dst, int outer, int block, ptrdiff_t src_stride,
                     ptrdiff_t dst_stride);
void ref_softmax(const float *x, float *y, int outer, int n, int inner, int logsm);
void ref_layernorm(const float *x, float *y, int outer, int n, const float *scale,
                   const float *bias, float eps, float *mean, float *invstd);
void ref_where(const fg_bcast3 *s, const float *c, const float *a, const float *b, float *y);
void ref_reduce(int op, const float *x, float *y, int outer, int n, int inner);
void ref_lrn(const float *x, float *y, int outer, int C, int inner, int size, float alpha,
             float beta, float bias);

/* Sparse factors, int32 column indices (the tests widen u16 indices). Same
 * semantics as fg_runtime.h; one output at a time, float accumulation in the
 * order the entries are stored, bias added last. */
void ref_csr_matvec(int rows, int m, int n, const int32_t *indptr, const int32_t *indices,
                    const float *data, const float *x, float *y, const float *bias, int act,
                    float a, float b);
void ref_ell_matvec(int rows, int m, int n, int k, const int32_t *indices, const float *data,
                    const float *x, float *y, const float *bias, int act, float a, float b);
/* blocks of br rows x 1 column (fg_bsr16_matvec: br = 16, fg_bsr8_matvec: 8) */
void ref_bsr_matvec(int br, int rows, int m, int n, const int32_t *panel_ptr, const int32_t *cols,
                    const float *values, const float *x, float *y, const float *bias, int act,
                    float a, float b);
void ref_csr_spmm(int m, int ncols, const int32_t *indptr, const int32_t *indices,
                  const float *data, const float *X, float *Y, const float *bias, int act, float a,
                  float b);

/* The ONNX RNN / GRU / LSTM over a whole sequence, one gate output at a time, in
 * double. Unlike fg_rnn_seq the weights are in the ONNX layout: W (dirs x G*H x I),
 * R (dirs x G*H x H), gates in ONNX order (LSTM i o f c, GRU z r h); B (dirs x 2 G*H)
 * is Wb then Rb; P (dirs x 3 H) the peepholes i o f or NULL. seq_lens, h0, c0, y, yh,
 * yc and the layouts as for fg_rnn_seq (bias required; y, yh, yc not NULL; I and H
 * at most REF_RNN_MAX). */
#define REF_RNN_MAX 256
void ref_rnn_seq(const fg_rnn *p, const float *x, const float *W, const float *R, const float *B,
                 const float *P, const int32_t *seq_lens, const float *h0, const float *c0,
                 float *y, float *yh, float *yc);

#endif
