/* Mixer "conv": causal depthwise short convolution whose window crosses rank boundaries.
 * Forward takes the K-1 rows before this shard from the previous rank(s) (halo); backward sends
 * their gradient back. */
#include "strand/layers.h"
#include "strand/model.h"

#include <math.h>
#include <string.h>

typedef struct {
    int K;
    int weight, bias; /* parameter indices */
    int64_t weight_offset, bias_offset;
    real_t *halo, *dhalo; /* (K-1, C) */
    real_t *scratch;      /* 2 (K-1) C for the halo exchange */
} conv_state;

static int conv_create(strand_mixer *mixer, const strand_config *config, strand_param_table *table,
                       const char *layer) {
    conv_state *s = strand_alloc(sizeof *s, "conv mixer");
    if (!s) return STRAND_ERR_NOMEM;
    mixer->state = s;
    s->K = config->conv_kernel;
    /* Kernel init: a unit tap at lag 0 plus small noise would be neutral; normal with 1/sqrt(K)
     * keeps the output variance close to the input's. */
    STRAND_CALL(strand_params_declare(table, layer, "weight", mixer->C, s->K, STRAND_INIT_NORMAL,
                                      1.0 / sqrt((double)s->K), 0, &s->weight));
    STRAND_CALL(strand_params_declare(table, layer, "bias", mixer->C, 0, STRAND_INIT_ZEROS, 0, 0, &s->bias));
    s->weight_offset = table->items[s->weight].offset;
    s->bias_offset = table->items[s->bias].offset;
    return STRAND_OK;
}

static int conv_setup(strand_mixer *mixer, const strand_shard *shard) {
    if (shard->layout != STRAND_LAYOUT_CONTIGUOUS)
        STRAND_FAIL(STRAND_ERR_CONFIG, "mixer conv: only the contiguous layout is supported");
    conv_state *s = mixer->state;
    const int64_t halo = (int64_t)(s->K - 1) * mixer->C;
    STRAND_ALLOC(s->halo, halo, "conv halo");
    STRAND_ALLOC(s->dhalo, halo, "conv halo gradient");
    STRAND_ALLOC(s->scratch, 2 * halo, "conv halo scratch");
    return STRAND_OK;
}

static int conv_forward(strand_mixer *mixer, real_t *out, const real_t *in, const real_t *params,
                        const strand_shard *shard) {
    conv_state *s = mixer->state;
    const int C = mixer->C;
    STRAND_CALL(strand_halo_forward(shard->grid, s->halo, in, shard->T, C, s->K - 1, shard->shard_lengths,
                                    s->scratch));
    conv1d_causal_forward(out, s->halo, in, params + s->weight_offset, params + s->bias_offset, shard->T, C,
                          s->K);
    return STRAND_OK;
}

static int conv_backward(strand_mixer *mixer, real_t *din, real_t *dparams, const real_t *dout,
                         const real_t *in, const real_t *params, const strand_shard *shard) {
    conv_state *s = mixer->state;
    const int C = mixer->C;
    memset(s->dhalo, 0, sizeof(real_t) * (size_t)((s->K - 1) * C));
    conv1d_causal_backward(din, s->dhalo, dparams + s->weight_offset, dparams + s->bias_offset, dout, s->halo,
                           in, params + s->weight_offset, shard->T, C, s->K);
    STRAND_CALL(strand_halo_backward(shard->grid, din, s->dhalo, shard->T, C, s->K - 1, shard->shard_lengths,
                                     s->scratch));
    return STRAND_OK;
}

static void conv_destroy(strand_mixer *mixer) {
    conv_state *s = mixer->state;
    if (!s) return;
    strand_free(s->halo);
    strand_free(s->dhalo);
    strand_free(s->scratch);
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
