/* Mixer "conv": causal depthwise short convolution whose window crosses rank boundaries
 * (the halo exchange lives in shortconv.c). */
#include "strand/model.h"
#include "strand/shortconv.h"

#include <math.h>

typedef struct {
    int K;
    int64_t weight_offset, bias_offset;
    strand_shortconv conv;
} conv_state;

static int conv_create(strand_mixer *mixer, const strand_config *config, strand_param_table *table,
                       const char *layer) {
    conv_state *s = strand_alloc(sizeof *s, "conv mixer");
    if (!s) return STRAND_ERR_NOMEM;
    mixer->state = s;
    s->K = config->conv_kernel;
    int weight = 0, bias = 0;
    /* Normal with std 1/sqrt(K) keeps the output variance close to the input's. */
    STRAND_CALL(strand_params_declare(table, layer, "weight", mixer->C, s->K, STRAND_INIT_NORMAL,
                                      1.0 / sqrt((double)s->K), 0, &weight));
    STRAND_CALL(strand_params_declare(table, layer, "bias", mixer->C, 0, STRAND_INIT_ZEROS, 0, 0, &bias));
    s->weight_offset = table->items[weight].offset;
    s->bias_offset = table->items[bias].offset;
    return STRAND_OK;
}

/* The halo rows are the only buffers (K-1 rows per piece), so a donor has nothing worth borrowing. */
static int conv_setup(strand_mixer *mixer, const strand_shard *shard, const strand_mixer *donor) {
    (void)donor;
    conv_state *s = mixer->state;
    return strand_shortconv_create(&s->conv, shard, mixer->C, s->K);
}

static int conv_forward(strand_mixer *mixer, real_t *out, const real_t *in, const real_t *params,
                        const strand_shard *shard) {
    conv_state *s = mixer->state;
    return strand_shortconv_forward(&s->conv, shard, out, in, params + s->weight_offset,
                                    params + s->bias_offset);
}

static int conv_backward(strand_mixer *mixer, real_t *din, real_t *dparams, const real_t *dout,
                         const real_t *in, const real_t *params, const strand_shard *shard) {
    conv_state *s = mixer->state;
    return strand_shortconv_backward(&s->conv, shard, din, dparams + s->weight_offset,
                                     dparams + s->bias_offset, dout, in, params + s->weight_offset);
}

static void conv_destroy(strand_mixer *mixer) {
    conv_state *s = mixer->state;
    if (!s) return;
    strand_shortconv_free(&s->conv);
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
