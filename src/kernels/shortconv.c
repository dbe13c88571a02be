/* Short causal depthwise convolution across rank boundaries (see shortconv.h). */
#include "kernels/shortconv.h"

#include "kernels/layers.h"

#include <string.h>

int strand_shortconv_plan(strand_shortconv *conv, const strand_shard *shard, int C, int K,
                          strand_plan *plan) {
    memset(conv, 0, sizeof *conv);
    conv->K = K;
    conv->C = C;
    /* +1: a kernel of 1 has no halo */
    const int64_t rows = (int64_t)STRAND_MAX_PIECES * (K - 1) * C + 1;
    STRAND_CALL(strand_halo_plan(&conv->halo, shard, K - 1, C, plan));
    STRAND_PLAN_ADD(plan, conv->rows, rows, STRAND_LIFE_PERSISTENT, "short conv halo");
    STRAND_PLAN_ADD(plan, conv->drows, rows, STRAND_LIFE_PERSISTENT, "short conv halo gradient");
    return STRAND_OK;
}

int strand_shortconv_setup(strand_shortconv *conv, const strand_shard *shard) {
    return strand_halo_setup(&conv->halo, shard);
}

int strand_shortconv_create(strand_shortconv *conv, const strand_shard *shard, int C, int K) {
    strand_plan plan;
    strand_plan_init(&plan, 0, 0);
    int status = strand_shortconv_plan(conv, shard, C, K, &plan);
    if (status == STRAND_OK) status = strand_plan_allocate(&plan);
    conv->own = plan; /* freed by strand_shortconv_free whatever happened */
    if (status == STRAND_OK) status = strand_shortconv_setup(conv, shard);
    return status;
}

void strand_shortconv_free(strand_shortconv *conv) {
    strand_plan_free(&conv->own);
    memset(conv, 0, sizeof *conv);
}

int strand_shortconv_forward(strand_shortconv *conv, const strand_shard *shard, real_t *out, const real_t *in,
                             const real_t *weight, const real_t *bias) {
    const int C = conv->C, K = conv->K;
    const int64_t HC = (int64_t)(K - 1) * C;
    STRAND_CALL(strand_halo_gather(&conv->halo, shard, conv->rows, in));
    int64_t row = 0;
    for (int p = 0; p < shard->n_pieces; p++) {
        const int64_t n = shard->piece_length[p];
        conv1d_causal_forward(out + row * C, conv->rows + p * HC, in + row * C, weight, bias, n, C, K);
        row += n;
    }
    return STRAND_OK;
}

static int shortconv_backward(strand_shortconv *conv, const strand_shard *shard, real_t *din, int assign,
                              real_t *dweight, real_t *dbias, const real_t *dout, const real_t *in,
                              const real_t *weight) {
    const int C = conv->C, K = conv->K;
    const int64_t HC = (int64_t)(K - 1) * C;
    memset(conv->drows, 0, sizeof(real_t) * (size_t)(shard->n_pieces * HC));
    int64_t row = 0;
    for (int p = 0; p < shard->n_pieces; p++) {
        const int64_t n = shard->piece_length[p];
        (assign ? conv1d_causal_backward_assign
                : conv1d_causal_backward)(din + row * C, conv->drows + p * HC, dweight, dbias, dout + row * C,
                                          conv->rows + p * HC, in + row * C, weight, n, C, K);
        row += n;
    }
    return strand_halo_scatter_add(&conv->halo, shard, din, conv->drows);
}

int strand_shortconv_backward(strand_shortconv *conv, const strand_shard *shard, real_t *din, real_t *dweight,
                              real_t *dbias, const real_t *dout, const real_t *in, const real_t *weight) {
    return shortconv_backward(conv, shard, din, 0, dweight, dbias, dout, in, weight);
}

int strand_shortconv_backward_assign(strand_shortconv *conv, const strand_shard *shard, real_t *din,
                                     real_t *dweight, real_t *dbias, const real_t *dout, const real_t *in,
                                     const real_t *weight) {
    return shortconv_backward(conv, shard, din, 1, dweight, dbias, dout, in, weight);
}
