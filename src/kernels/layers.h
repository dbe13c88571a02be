/* Position-wise layers and the local part of the short convolution, as forward/backward pairs.
 *
 * Conventions (as in llm.c): T = tokens of this rank's shard, C = channels; arrays are row-major
 * (T, C). Every _backward ADDS into its gradient outputs (dinp, dweight, ...), so callers zero them
 * once per step; a NULL gradient pointer means "not needed". No layer communicates. */
#ifndef STRAND_LAYERS_H
#define STRAND_LAYERS_H

#include "strand/common.h"

#include <stdint.h>

/* out (T,C) = wte[tokens[t]] with wte (V,C) */
void embedding_forward(real_t *out, const strand_token_t *tokens, const real_t *wte, int64_t T, int C);
void embedding_backward(real_t *dwte, const real_t *dout, const strand_token_t *tokens, int64_t T, int C);

/* out = in * rstd * weight; rstd (T) saved for backward. */
void rmsnorm_forward(real_t *out, real_t *rstd, const real_t *in, const real_t *weight, int64_t T, int C,
                     real_t eps);
void rmsnorm_backward(real_t *dinp, real_t *dweight, const real_t *dout, const real_t *in,
                      const real_t *weight, const real_t *rstd, int64_t T, int C);

/* out = (in - mean) * rstd * weight + bias; mean, rstd (T) saved for backward. */
void layernorm_forward(real_t *out, real_t *mean, real_t *rstd, const real_t *in, const real_t *weight,
                       const real_t *bias, int64_t T, int C, real_t eps);
void layernorm_backward(real_t *dinp, real_t *dweight, real_t *dbias, const real_t *dout, const real_t *in,
                        const real_t *weight, const real_t *mean, const real_t *rstd, int64_t T, int C);

/* out (T,OC) = in (T,C) @ weight^T + bias, weight (OC,C), bias (OC) or NULL. BLAS GEMM.
 * Backward: dinp (T,C) += dout @ weight; dweight (OC,C) += dout^T @ in; dbias (OC) += sum_t dout. */
void linear_forward(real_t *out, const real_t *in, const real_t *weight, const real_t *bias, int64_t T, int C,
                    int OC);
void linear_backward(real_t *dinp, real_t *dweight, real_t *dbias, const real_t *dout, const real_t *in,
                     const real_t *weight, int64_t T, int C, int OC);
/* The same, but dinp (T,C) = dout @ weight is assigned: the caller need not zero it first. */
void linear_backward_assign(real_t *dinp, real_t *dweight, real_t *dbias, const real_t *dout,
                            const real_t *in, const real_t *weight, int64_t T, int C, int OC);

/* GELU, tanh approximation, elementwise over N values. */
void gelu_forward(real_t *out, const real_t *in, int64_t N);
void gelu_backward(real_t *dinp, const real_t *dout, const real_t *in, int64_t N);

/* SwiGLU: in (T, 2H) = [a | b] per row; out (T,H) = silu(a) * b. */
void swiglu_forward(real_t *out, const real_t *in, int64_t T, int H);
void swiglu_backward(real_t *dinp, const real_t *dout, const real_t *in, int64_t T, int H);

/* Causal depthwise convolution with kernel K:
 *   out[t,c] = bias[c] + sum_{j=0}^{K-1} weight[c*K + j] * x[t-j, c]
 * where x[-1..-(K-1)] are the K-1 rows of `halo` (K-1,C): halo row K-2 is position -1 (the
 * previous rank's last row), row 0 is position -(K-1). Zeros on the first rank.
 * Backward also produces dhalo (K-1,C), the gradient that goes back to the previous rank. */
void conv1d_causal_forward(real_t *out, const real_t *halo, const real_t *in, const real_t *weight,
                           const real_t *bias, int64_t T, int C, int K);
void conv1d_causal_backward(real_t *dinp, real_t *dhalo, real_t *dweight, real_t *dbias, const real_t *dout,
                            const real_t *halo, const real_t *in, const real_t *weight, int64_t T, int C,
                            int K);
/* The same with dinp (T,C) assigned instead of added (dhalo, dweight, dbias still add). */
void conv1d_causal_backward_assign(real_t *dinp, real_t *dhalo, real_t *dweight, real_t *dbias,
                                   const real_t *dout, const real_t *halo, const real_t *in,
                                   const real_t *weight, int64_t T, int C, int K);

/* Softmax cross-entropy over V classes. losses (T) in nats, every position's; probs (T,V) saved
 * for backward. Returns sum_t w_t loss_t (double accumulation), weights (T) w_t, or 1 when NULL
 * (a loss mask: the positions that count). */
double crossentropy_forward(real_t *losses, real_t *probs, const real_t *logits,
                            const strand_token_t *targets, const real_t *weights, int64_t T, int V);
/* dlogits (T,V) += scale * w_t * (probs - onehot(targets)): the gradient of scale * sum_t w_t loss_t. */
void crossentropy_backward(real_t *dlogits, const real_t *probs, const strand_token_t *targets,
                           const real_t *weights, int64_t T, int V, real_t scale);

#endif
