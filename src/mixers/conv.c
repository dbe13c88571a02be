/* Mixer "conv": causal depthwise short convolution whose window crosses rank boundaries.
 * Forward takes the K-1 rows before each local piece from whichever rank holds them (halo);
 * backward sends their gradient back. Works for contiguous and zigzag layouts. */
#include "strand/halo.h"
#include "strand/layers.h"
#include "strand/model.h"

#include <math.h>
#include <string.h>

typedef struct {
    int K;
    int weight, bias; /* parameter indices */
    int64_t weight_offset, bias_offset;
    strand_halo halo;
    real_t *rows, *drows; /* (n_pieces, K-1, C) */
} conv_state;

static int conv_create(strand_mixer *mixer, const strand_config *config, strand_param_table *table,
                       const char *layer) {
    conv_state *s = strand_alloc(sizeof *s, "conv mixer");
    if (!s) return STRAND_ERR_NOMEM;
    mixer->state = s;
    s->K = config->conv_kernel;
    /* Normal with std 1/sqrt(K) keeps the output variance close to the input's. */
    STRAND_CALL(strand_params_declare(table, layer, "weight", mixer->C, s->K, STRAND_INIT_NORMAL,
                                      1.0 / sqrt((double)s->K), 0, &s->weight));
    STRAND_CALL(strand_params_declare(table, layer, "bias", mixer->C, 0, STRAND_INIT_ZEROS, 0, 0, &s->bias));
    s->weight_offset = table->items[s->weight].offset;
    s->bias_offset = table->items[s->bias].offset;
    return STRAND_OK;
}

static int conv_setup(strand_mixer *mixer, const strand_shard *shard) {
    conv_state *s = mixer->state;
    const int64_t rows = (int64_t)STRAND_MAX_PIECES * (s->K - 1) * mixer->C;
    STRAND_CALL(strand_halo_create(&s->halo, shard, s->K - 1, mixer->C));
    STRAND_ALLOC(s->rows, rows, "conv halo");
    STRAND_ALLOC(s->drows, rows, "conv halo gradient");
    return STRAND_OK;
}

static int conv_forward(strand_mixer *mixer, real_t *out, const real_t *in, const real_t *params,
                        const strand_shard *shard) {
    conv_state *s = mixer->state;
    const int C = mixer->C;
    const int64_t HC = (int64_t)(s->K - 1) * C;
    STRAND_CALL(strand_halo_gather(&s->halo, shard, s->rows, in));
    int64_t row = 0;
    for (int p = 0; p < shard->n_pieces; p++) {
        const int64_t n = shard->piece_length[p];
        conv1d_causal_forward(out + row * C, s->rows + p * HC, in + row * C, params + s->weight_offset,
                              params + s->bias_offset, n, C, s->K);
        row += n;
    }
    return STRAND_OK;
}

static int conv_backward(strand_mixer *mixer, real_t *din, real_t *dparams, const real_t *dout,
                         const real_t *in, const real_t *params, const strand_shard *shard) {
    conv_state *s = mixer->state;
    const int C = mixer->C;
    const int64_t HC = (int64_t)(s->K - 1) * C;
    memset(s->drows, 0, sizeof(real_t) * (size_t)(shard->n_pieces * HC));
    int64_t row = 0;
    for (int p = 0; p < shard->n_pieces; p++) {
        const int64_t n = shard->piece_length[p];
        conv1d_causal_backward(din + row * C, s->drows + p * HC, dparams + s->weight_offset,
                               dparams + s->bias_offset, dout + row * C, s->rows + p * HC, in + row * C,
                               params + s->weight_offset, n, C, s->K);
        row += n;
    }
    STRAND_CALL(strand_halo_scatter_add(&s->halo, shard, din, s->drows));
    return STRAND_OK;
}

static void conv_destroy(strand_mixer *mixer) {
    conv_state *s = mixer->state;
    if (!s) return;
    strand_halo_free(&s->halo);
    strand_free(s->rows);
    strand_free(s->drows);
    strand_free(s);
    mixer->state = NULL;
}

const strand_mixer_ops strand_mixer_conv = {
    .name = "conv",
    .create = conv_create,
    .setup = conv_setup,
    .forward = conv_forward,
    .backward = conv_backward,
    .destroy = conv_destroy,
};
