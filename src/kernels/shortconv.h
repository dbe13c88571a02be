/* Short causal depthwise convolution over a sharded window: the local conv1d_causal on each
 * piece plus the halo rows that cross rank boundaries (any layout). Used by the conv mixer and by
 * the short convolutions inside other mixers. */
#ifndef STRAND_SHORTCONV_H
#define STRAND_SHORTCONV_H

#include "parallel/halo.h"

typedef struct {
    int K, C;
    strand_halo halo;
    real_t *rows, *drows; /* (n_pieces, K-1, C): the rows before each piece and their gradient */
    strand_plan own;      /* the buffers, when made by strand_shortconv_create */
} strand_shortconv;

/* Declare the buffers (halo tables and rows; persistent: a block's halo rows are its own) into a
 * plan, then after the plan is allocated, set up. */
int strand_shortconv_plan(strand_shortconv *conv, const strand_shard *shard, int C, int K, strand_plan *plan);
int strand_shortconv_setup(strand_shortconv *conv, const strand_shard *shard);
/* Both with a plan of its own (for use outside a model). */
int strand_shortconv_create(strand_shortconv *conv, const strand_shard *shard, int C, int K);
void strand_shortconv_free(strand_shortconv *conv);
/* out (T,C) = causal conv of in (T,C) with weight (C,K), bias (C). Keeps the halo for backward. */
int strand_shortconv_forward(strand_shortconv *conv, const strand_shard *shard, real_t *out, const real_t *in,
                             const real_t *weight, const real_t *bias);
/* din, dweight, dbias += gradients for dout (T,C) of the last forward (NULL = not needed, except
 * din, which receives the halo gradient of the next pieces). */
int strand_shortconv_backward(strand_shortconv *conv, const strand_shard *shard, real_t *din, real_t *dweight,
                              real_t *dbias, const real_t *dout, const real_t *in, const real_t *weight);
/* The same with din (T,C) assigned (din must not be NULL): the caller need not zero it. */
int strand_shortconv_backward_assign(strand_shortconv *conv, const strand_shard *shard, real_t *din,
                                     real_t *dweight, real_t *dbias, const real_t *dout, const real_t *in,
                                     const real_t *weight);

#endif
