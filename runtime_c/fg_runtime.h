/* fg_runtime.h - faustgen runtime kernels (C99, no heap, no stdio).
 *
 * These files are copied verbatim into every generated bundle. Layout is NCHW
 * (ONNX order), float32, row-major. Spatial kernels take three spatial dims
 * (D, H, W): a 2-D op passes D = 1, a 1-D op passes D = H = 1.
 *
 * Kernels never allocate: callers pass scratch memory when one is needed.
 * Input and output buffers of the same call never overlap, except where a
 * kernel says "in place allowed" (elementwise kernels).
 *
 * Speed without special flags: inner loops are written axpy-style over
 * contiguous memory with fixed-size blocks and independent accumulators, so
 * gcc/clang vectorize them at plain -O2/-O3 without -ffast-math.
 */
#ifndef FG_RUNTIME_H
#define FG_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#define FG_RUNTIME_VERSION 1

/* Columns per packed panel of a constant right-hand matrix (fg_dense). */
#define FG_PANEL 16
/* Rows per packed block of a constant left-hand matrix (fg_gemm_a, fg_conv). */
#define FG_MBLOCK 4
/* Widest panel of output positions fg_conv's packed GEMM uses on any target
 * (fg_conv_scratch reserves (C/group)*kd*kh*kw times this many floats). */
#define FG_CONV_PANEL_MAX 48
/* Maximum tensor rank handled by the N-d kernels (broadcast, transpose, pad). */
#define FG_MAXDIM 8

#if defined(__GNUC__) || defined(__clang__)
#define FG_ALIGNED(n) __attribute__((aligned(n)))
#else
#define FG_ALIGNED(n)
#endif

/* Activation fused into the epilogue of fg_dense / fg_gemm_a / fg_conv /
 * fg_conv_depthwise. a, b are its parameters. */
enum {
    FG_ACT_NONE = 0,  /* y = x                                  */
    FG_ACT_RELU = 1,  /* y = max(x, 0)                          */
    FG_ACT_LEAKY = 2, /* y = x >= 0 ? x : a * x                 */
    FG_ACT_CLIP = 3,  /* y = min(max(x, a), b)  (Relu6: a=0,b=6) */
    FG_ACT_SILU = 4   /* y = x * sigmoid(x)  (Sigmoid + Mul)      */
};

/* ---- dense / GEMM (fg_dense.c) ------------------------------------------ */

/* Fully connected with a constant right-hand matrix B (K x N):
 *   y[m*N + n] = act(bias[n] + sum_k x[m*K + k] * B[k][n]),  m < M, n < N.
 * Bp is B packed in panels of FG_PANEL columns, panel p holding columns
 * p*FG_PANEL .. p*FG_PANEL+FG_PANEL-1, zero padded past N:
 *   Bp[((size_t)p*K + k)*FG_PANEL + j] = B[k][p*FG_PANEL + j].
 * Length of Bp: ceil(N / FG_PANEL) * K * FG_PANEL. bias may be NULL. */
void fg_dense(const float *x, float *y, int M, int K, int N, const float *Bp, const float *bias,
              int act, float a, float b);

/* GEMM with a constant left-hand matrix A (M x K) and an activation B (K x N):
 *   C[m*N + n] = act(bias[m] + sum_k A[m][k] * B[k*N + n]).
 * Ap is A packed in blocks of FG_MBLOCK rows, zero padded past M:
 *   Ap[((size_t)mb*K + k)*FG_MBLOCK + i] = A[mb*FG_MBLOCK + i][k].
 * Length of Ap: ceil(M / FG_MBLOCK) * K * FG_MBLOCK. bias may be NULL. */
void fg_gemm_a(const float *Ap, const float *B, float *C, int M, int K, int N, const float *bias,
               int act, float a, float b);

/* Batched product of two activations: for each of `batch` matrices,
 *   Y[i] (M x N) = A[i] (M x K) @ B[i] (K x N),
 * with A[i] = a + i*stride_a and B[i] = b + i*stride_b (a stride 0 broadcasts). */
void fg_matmul(const float *a, const float *b, float *y, int batch, int M, int K, int N,
               size_t stride_a, size_t stride_b);

/* ---- convolution (fg_conv.c) -------------------------------------------- */

typedef struct {
    int C, D, H, W;     /* input channels and spatial dims                      */
    int K, OD, OH, OW;  /* output channels and spatial dims                     */
    int kd, kh, kw;     /* kernel                                               */
    int sd, sh, sw;     /* strides                                              */
    int dd, dh, dw;     /* dilations                                            */
    int pd, ph, pw;     /* leading pads (trailing pads follow from OD, OH, OW)  */
    int group;          /* C % group == 0 and K % group == 0                    */
} fg_conv_shape;

/* Floats of scratch fg_conv needs: (C/group)*kd*kh*kw * OD*OH*OW for the
 * im2col matrix of one group (none when the convolution is pointwise: 1x1x1
 * kernel, unit strides, no pads, where the input is used directly), then
 * (C/group)*kd*kh*kw * FG_CONV_PANEL_MAX for the packed-panel GEMM. */
size_t fg_conv_scratch(const fg_conv_shape *s);

/* y (K x OD x OH x OW) = act(conv(x) + bias), x is (C x D x H x W).
 * wp holds, group after group, the (K/group) x ((C/group)*kd*kh*kw) filter
 * matrix of that group packed as fg_gemm_a's Ap (blocks of FG_MBLOCK rows);
 * each group's block is ceil((K/group)/FG_MBLOCK)*FG_MBLOCK*(C/group)*kd*kh*kw
 * floats. Columns are ordered (c, z, y, x) as in the ONNX weight layout.
 * bias may be NULL. scratch: fg_conv_scratch(s) floats (may be NULL when 0). */
void fg_conv(const fg_conv_shape *s, const float *x, float *y, const float *wp, const float *bias,
             int act, float a, float b, float *scratch);

/* The algorithm fg_conv (depthwise: fg_conv_depthwise) runs for this shape
 * with this build's flags, as a static string (for benchmarks and reports). */
const char *fg_conv_algorithm(const fg_conv_shape *s, int depthwise);

/* Depthwise convolution (group == C, K == m*C for a channel multiplier m):
 * direct form, no scratch. w is the ONNX weight (K x 1 x kd x kh x kw), unpacked. */
void fg_conv_depthwise(const fg_conv_shape *s, const float *x, float *y, const float *w,
                       const float *bias, int act, float a, float b);

/* im2col for one group: cols ((C/group)*kd*kh*kw x OD*OH*OW), row r = (c, z, y, x)
 * of the filter, column = output position; out-of-input taps are 0.
 * x points at the group's first input channel. Exposed for tests and for the
 * factorized conv path. */
void fg_im2col(const fg_conv_shape *s, const float *x, float *cols);

/* ---- pooling (fg_pool.c) ------------------------------------------------ */

typedef struct {
    int C, D, H, W;          /* input (per sample: C = channels)                */
    int OD, OH, OW;          /* output spatial dims                             */
    int kd, kh, kw;
    int sd, sh, sw;
    int dd, dh, dw;          /* dilations                                       */
    int pd, ph, pw;          /* leading pads                                    */
    int pd_end, ph_end, pw_end; /* trailing pads (explicit or from auto_pad)    */
    int count_include_pad;   /* AveragePool: divide by taps inside the padded
                                input (1) or by taps inside the input (0)       */
} fg_pool_shape;

/* Windows may extend past the padded input (ceil_mode): taps outside the
 * padded extent are ignored by both pools; taps in the padding are ignored by
 * MaxPool and by AveragePool with count_include_pad = 0, and count as zeros for
 * AveragePool with count_include_pad = 1. */
void fg_maxpool(const fg_pool_shape *s, const float *x, float *y);
void fg_avgpool(const fg_pool_shape *s, const float *x, float *y);

/* x (C x S) -> y (C): mean / max over the S spatial positions of each channel. */
void fg_global_avgpool(const float *x, float *y, int C, int S);
void fg_global_maxpool(const float *x, float *y, int C, int S);

/* ---- elementwise (fg_act.c), in place allowed (x == y) ------------------- */

void fg_relu(const float *x, float *y, size_t n);
void fg_leaky_relu(const float *x, float *y, size_t n, float alpha);
void fg_clip(const float *x, float *y, size_t n, float lo, float hi);
void fg_elu(const float *x, float *y, size_t n, float alpha);
void fg_selu(const float *x, float *y, size_t n, float alpha, float gamma);
void fg_sigmoid(const float *x, float *y, size_t n);
void fg_hard_sigmoid(const float *x, float *y, size_t n, float alpha, float beta);
void fg_hard_swish(const float *x, float *y, size_t n);
void fg_tanh(const float *x, float *y, size_t n);
void fg_softplus(const float *x, float *y, size_t n);
void fg_exp(const float *x, float *y, size_t n);
void fg_log(const float *x, float *y, size_t n);
void fg_sqrt(const float *x, float *y, size_t n);
void fg_abs(const float *x, float *y, size_t n);
void fg_neg(const float *x, float *y, size_t n);
void fg_reciprocal(const float *x, float *y, size_t n);
void fg_erf(const float *x, float *y, size_t n);
void fg_gelu(const float *x, float *y, size_t n); /* exact: 0.5 x (1 + erf(x / sqrt 2)) */
void fg_gelu_tanh(const float *x, float *y, size_t n); /* Gelu approximate="tanh":
                       0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
void fg_mish(const float *x, float *y, size_t n);     /* x tanh(softplus(x)) */
void fg_softsign(const float *x, float *y, size_t n); /* x / (1 + |x|) */
void fg_thresholded_relu(const float *x, float *y, size_t n, float alpha); /* x > alpha ? x : 0 */
void fg_sign(const float *x, float *y, size_t n);
void fg_floor(const float *x, float *y, size_t n);
void fg_ceil(const float *x, float *y, size_t n);
void fg_round(const float *x, float *y, size_t n); /* halves to even */
void fg_copy(const float *x, float *y, size_t n);
void fg_fill(float *y, size_t n, float value);

/* y[o][c][i] = x[o][c][i] * scale[c] + shift[c]  (standalone BatchNormalization,
 * per-channel affine). o < outer, c < C, i < inner. In place allowed. */
void fg_channel_affine(const float *x, float *y, int outer, int C, int inner, const float *scale,
                       const float *shift);

/* ---- broadcasting binary ops (fg_tensor.c) ------------------------------ */

enum {
    FG_ADD = 0,
    FG_SUB = 1,
    FG_MUL = 2,
    FG_DIV = 3,
    FG_PRELU = 4, /* y = a >= 0 ? a : a * b   (b is the slope)   */
    FG_MAX = 5,
    FG_MIN = 6,
    FG_POW = 7,
    /* comparisons and Boolean logic: Boolean tensors are stored as floats 0 / 1, and
     * a logical operand counts as true when it is nonzero */
    FG_EQUAL = 8,
    FG_LESS = 9,
    FG_LESS_EQUAL = 10,
    FG_GREATER = 11,
    FG_GREATER_EQUAL = 12,
    FG_AND = 13,
    FG_OR = 14,
    FG_XOR = 15,
    FG_NOT_EQUAL = 16
};

/* Output shape and element strides of both operands (stride 0 = broadcast
 * along that axis), outermost axis first. The caller collapses axes, so the
 * innermost axis is normally long and contiguous (stride 1) or broadcast. */
typedef struct {
    int ndim;
    int shape[FG_MAXDIM];
    ptrdiff_t sa[FG_MAXDIM];
    ptrdiff_t sb[FG_MAXDIM];
} fg_bcast;

/* y = a OP b elementwise over s->shape; y is contiguous. y may equal a or b
 * when that operand is not broadcast (its strides are the contiguous ones). */
void fg_binary(int op, const fg_bcast *s, const float *a, const float *b, float *y);

/* Where: y = c != 0 ? a : b elementwise over s->shape with three broadcast operands
 * (strides sc, sa, sb as in fg_bcast); y is contiguous and overlaps none of them. */
typedef struct {
    int ndim;
    int shape[FG_MAXDIM];
    ptrdiff_t sc[FG_MAXDIM];
    ptrdiff_t sa[FG_MAXDIM];
    ptrdiff_t sb[FG_MAXDIM];
} fg_bcast3;
void fg_where(const fg_bcast3 *s, const float *c, const float *a, const float *b, float *y);

/* ---- data movement (fg_tensor.c) ---------------------------------------- */

/* y = transpose(x): y is contiguous with shape p->shape; element y[i0..in] is
 * x[sum_k i_k * p->stride[k]] (strides of x permuted into y's axis order). */
typedef struct {
    int ndim;
    int shape[FG_MAXDIM];
    ptrdiff_t stride[FG_MAXDIM];
} fg_perm;
void fg_transpose(const fg_perm *p, const float *x, float *y);

/* Constant-mode pad (negative pads crop): y has shape out_shape; the input
 * element at index i lands at output index i + begin (per axis); every other
 * output element is `value`. */
typedef struct {
    int ndim;
    int in_shape[FG_MAXDIM];
    int out_shape[FG_MAXDIM];
    int begin[FG_MAXDIM];
} fg_padspec;
void fg_pad(const fg_padspec *p, const float *x, float *y, float value);

/* Copy `outer` blocks of `block` floats: dst[o*dst_stride + j] = src[o*src_stride + j].
 * Used by Concat (and Split/Slice of contiguous blocks). */
void fg_copy_blocks(const float *src, float *dst, int outer, int block, ptrdiff_t src_stride,
                    ptrdiff_t dst_stride);

/* Graph boundaries of other dtypes: Boolean inputs / outputs are bytes 0 / 1 (the
 * kernels compute with floats 0 / 1); integer ids convert exactly below 2^24. */
void fg_bool_to_float(const uint8_t *x, float *y, size_t n);
void fg_float_to_bool(const float *x, uint8_t *y, size_t n);
void fg_i64_to_float(const int64_t *x, float *y, size_t n);
void fg_i32_to_float(const int32_t *x, float *y, size_t n);

/* Gather along an axis of a table viewed as (outer x rows x row) with integer ids
 * (an embedding lookup when outer == 1): y (outer x n_ids x row) gets row ids[k] of each
 * outer block; a negative id counts from the end, an id out of range gives zeros. */
void fg_gather_i64(const float *table, const int64_t *ids, float *y, int outer, int rows, int row,
                   int n_ids);
void fg_gather_i32(const float *table, const int32_t *ids, float *y, int outer, int rows, int row,
                   int n_ids);

/* ---- reductions along one axis (fg_tensor.c) ---------------------------- */

/* x viewed as (outer x n x inner); y is (outer x n x inner) for softmax,
 * (outer x inner) for the reductions. */
void fg_softmax(const float *x, float *y, int outer, int n, int inner);
void fg_log_softmax(const float *x, float *y, int outer, int n, int inner);

/* LayerNormalization of x viewed as (outer x n), each row on its own:
 *   y[o][i] = (x[o][i] - mean_o) / sqrt(var_o + eps) * scale[i] + bias[i]
 * (population variance). bias may be NULL; mean / invstd (outer floats each, the
 * optional ONNX outputs) may be NULL. In place allowed (x == y). */
void fg_layernorm(const float *x, float *y, int outer, int n, const float *scale,
                  const float *bias, float eps, float *mean, float *invstd);

enum {
    FG_REDUCE_SUM = 0,
    FG_REDUCE_MEAN = 1,
    FG_REDUCE_MAX = 2,
    FG_REDUCE_MIN = 3,
    FG_REDUCE_L1 = 4,       /* sum |x|                                        */
    FG_REDUCE_L2 = 5,       /* sqrt(sum x^2)                                  */
    FG_REDUCE_SUMSQ = 6,    /* sum x^2                                        */
    FG_REDUCE_LOGSUM = 7,   /* log(sum x)                                     */
    FG_REDUCE_LOGSUMEXP = 8 /* log(sum exp(x - m)) + m, m = max x (finite)    */
};
void fg_reduce(int op, const float *x, float *y, int outer, int n, int inner);

/* Local response normalization across channels (ONNX LRN), x is
 * (outer x C x inner): y = x / (bias + alpha/size * sum_{window} x^2)^beta,
 * window = channels [c - floor((size-1)/2), c + ceil((size-1)/2)]. */
void fg_lrn(const float *x, float *y, int outer, int C, int inner, int size, float alpha,
            float beta, float bias);

/* ---- recurrent layers (fg_rnn.c) ----------------------------------------- */

enum { FG_CELL_RNN = 0, FG_CELL_GRU = 1, FG_CELL_LSTM = 2 };
/* gate activations (ONNX `activations` names) */
enum {
    FG_RNN_SIGMOID = 0,
    FG_RNN_TANH = 1,
    FG_RNN_RELU = 2,
    FG_RNN_HARD_SIGMOID = 3,
    FG_RNN_LEAKY_RELU = 4,
    FG_RNN_THRESHOLDED_RELU = 5,
    FG_RNN_SCALED_TANH = 6,
    FG_RNN_AFFINE = 7,
    FG_RNN_ELU = 8,
    FG_RNN_SOFTSIGN = 9,
    FG_RNN_SOFTPLUS = 10
};

typedef struct {
    int cell;                /* FG_CELL_*                                          */
    int T, B, I, H;          /* sequence length, batch, input size, hidden size    */
    int dirs;                /* 1 or 2 (bidirectional: direction 1 runs reversed)   */
    int reverse;             /* dirs == 1: run the sequence backwards               */
    int gates;               /* G: 1 (RNN), 3 (GRU: z r h), 4 (LSTM: i o f c)        */
    int layout;              /* ONNX layout: 0 = X [T][B][I], 1 = X [B][T][I]        */
    int linear_before_reset; /* GRU                                                 */
    int input_forget;        /* LSTM: f = 1 - i                                     */
    float clip;              /* > 0: gate pre-activations clipped to [-clip, clip]  */
    int act[3];              /* f, g, h (unused ones ignored)                       */
    float alpha[3], beta[3];
} fg_rnn;

/* Factorized gate matrices: chain c (c = d: W_d, c = dirs + d: R_d) is a product of
 * sparse factors M ~ S_0 ... S_{J-1} (G*H x I or G*H x H). meta[c] is the offset in meta
 * of its record, or -1 when that matrix is dense (then wt / rt hold it): J, then per
 * factor in the order they apply (S_{J-1} first) six ints: kind (FG_RNN_FACTOR_*), m,
 * n, and the offsets of its row / panel pointers in ptr, its column indices in idx and
 * its values in val (CSR as for fg_csr_matvec_i32, 16x1 blocks as for
 * fg_bsr16_matvec_i32). max_dim: the largest factor dimension. */
enum { FG_RNN_FACTOR_CSR = 0, FG_RNN_FACTOR_BSR16 = 1 };
typedef struct {
    const int32_t *meta, *ptr, *idx;
    const float *val;
    int max_dim;
} fg_rnn_chains;

/* Floats of scratch fg_rnn_seq needs: (3 G + 3) H, plus 2 max_dim with chains. */
size_t fg_rnn_scratch(const fg_rnn *p, const fg_rnn_chains *chains);

/* The ONNX RNN / GRU / LSTM over the whole sequence. Per direction d: wt is W_d^T
 * (I x G*H), rt is R_d^T (H x G*H), bias holds Wb_d then Rb_d (2 G*H), peep the LSTM
 * peepholes p_i, p_o, p_f (3 H, may be NULL). seq_lens (B) may be NULL (all T);
 * steps past a sample's length leave Y at 0. h0 / c0 (initial states, laid out as
 * Y_h) may be NULL (zeros). y, yh, yc (Y, Y_h, Y_c) may each be NULL; h0 may equal
 * yh and c0 yc (a streaming step). chains (NULL: all dense) replaces the factorized
 * gate matrices; wt / rt may then be NULL when all their directions are factorized. */
void fg_rnn_seq(const fg_rnn *p, const float *x, const float *wt, const float *rt,
                const float *bias, const float *peep, const int32_t *seq_lens, const float *h0,
                const float *c0, float *y, float *yh, float *yc, const fg_rnn_chains *chains,
                float *scratch);

/* ---- sparse factors (fg_sparse.c) ---------------------------------------- */
/* A factorized layer applies a chain of sparse factors S (m x n). Arrays follow
 * scipy's CSR naming (indptr, indices, data). Each kernel exists with uint16_t
 * column indices (_u16, when n <= 65536) and int32_t ones (_i32). bias (length m)
 * may be NULL; act/a/b is the fused activation, as for fg_dense. */

/* Rows of 16 output rows x 1 input column per block (fg_bsr16_matvec); 8 for
 * fg_bsr8_matvec. */
#define FG_BSR_ROWS 16
#define FG_BSR8_ROWS 8

/* matvec: x holds `rows` vectors of n floats, y receives `rows` vectors of m:
 *   y[r*m + i] = act(bias[i] + sum_{p = indptr[i]}^{indptr[i+1]-1} data[p] * x[r*n + indices[p]]) */
void fg_csr_matvec_u16(int rows, int m, int n, const int32_t *indptr, const uint16_t *indices,
                       const float *data, const float *x, float *y, const float *bias, int act,
                       float a, float b);
void fg_csr_matvec_i32(int rows, int m, int n, const int32_t *indptr, const int32_t *indices,
                       const float *data, const float *x, float *y, const float *bias, int act,
                       float a, float b);

/* ELL, slot-major: k entries per row, entry s of row i at [s*m + i] (padding entries
 * have data 0 and any valid index):
 *   y[r*m + i] = act(bias[i] + sum_{s<k} data[s*m + i] * x[r*n + indices[s*m + i]]) */
void fg_ell_matvec_u16(int rows, int m, int n, int k, const uint16_t *indices, const float *data,
                       const float *x, float *y, const float *bias, int act, float a, float b);
void fg_ell_matvec_i32(int rows, int m, int n, int k, const int32_t *indices, const float *data,
                       const float *x, float *y, const float *bias, int act, float a, float b);

/* Block-sparse with blocks of FG_BSR_ROWS consecutive rows x 1 column. Row panel p
 * covers rows p*16 .. p*16+15 (the last panel may be partial: rows >= m are not
 * written); its blocks are q = panel_ptr[p] .. panel_ptr[p+1]-1, block q holding
 * column cols[q] and the 16 values values[q*16 .. q*16+15] (zero past m):
 *   y[r*m + p*16 + j] = act(bias[p*16+j] + sum_q values[q*16 + j] * x[r*n + cols[q]]) */
void fg_bsr16_matvec_u16(int rows, int m, int n, const int32_t *panel_ptr, const uint16_t *cols,
                         const float *values, const float *x, float *y, const float *bias,
                         int act, float a, float b);
void fg_bsr16_matvec_i32(int rows, int m, int n, const int32_t *panel_ptr, const int32_t *cols,
                         const float *values, const float *x, float *y, const float *bias,
                         int act, float a, float b);
/* The same with panels of FG_BSR8_ROWS = 8 rows: block q holds values[q*8 .. q*8+7]. */
void fg_bsr8_matvec_u16(int rows, int m, int n, const int32_t *panel_ptr, const uint16_t *cols,
                        const float *values, const float *x, float *y, const float *bias,
                        int act, float a, float b);
void fg_bsr8_matvec_i32(int rows, int m, int n, const int32_t *panel_ptr, const int32_t *cols,
                        const float *values, const float *x, float *y, const float *bias,
                        int act, float a, float b);

/* Sparse x dense (the conv patch matrix): X is (n x ncols) row-major, Y (m x ncols):
 *   Y[i*ncols + c] = act(bias[i] + sum_p data[p] * X[indices[p]*ncols + c])
 * (n, the row count of X, is implied by the indices). Inner loops run over c. */
void fg_csr_spmm_u16(int m, int ncols, const int32_t *indptr, const uint16_t *indices,
                     const float *data, const float *X, float *Y, const float *bias, int act,
                     float a, float b);
void fg_csr_spmm_i32(int m, int ncols, const int32_t *indptr, const int32_t *indices,
                     const float *data, const float *X, float *Y, const float *bias, int act,
                     float a, float b);

#endif /* FG_RUNTIME_H */
