/* Mixer "conv": causal depthwise short convolution whose window crosses rank boundaries
 * (the halo exchange lives in shortconv.c). */
#include "kernels/layers.h"
#include "strand/model.h"
#include "kernels/shortconv.h"

#include <math.h>
#include <string.h>

/* [model] conv_kernel: kept in the model section, where it has always been. */
typedef struct {
    int kernel;
} conv_options;

static const strand_config_key conv_keys[] = {
    {.section = "model",
     .name = "conv_kernel",
     .type = STRAND_KEY_INT,
     STRAND_KEY_FIELD(conv_options, kernel),
     .def = "4",
     .imin = 2,
     .imax = 8,
     .help = "Kernel width of the short causal convolution (the conv mixer)."},
};

static unsigned conv_capabilities(const void *options) {
    (void)options;
    return STRAND_MIXER_STEP;
}

static const char *const conv_test_configs[] = {"", "model.conv_kernel=2", NULL};

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
    s->K = ((const conv_options *)mixer->options)->kernel;
    int weight = 0, bias = 0;
    /* Normal with std 1/sqrt(K) keeps the output variance close to the input's. */
    STRAND_CALL(strand_params_declare(table, layer, "weight", mixer->C, s->K, STRAND_INIT_NORMAL,
                                      1.0 / sqrt((double)s->K), 0, &weight));
    STRAND_CALL(strand_params_declare(table, layer, "bias", mixer->C, 0, STRAND_INIT_ZEROS, 0, 0, &bias));
    s->weight_offset = table->items[weight].offset;
    s->bias_offset = table->items[bias].offset;
    return STRAND_OK;
}

/* The halo rows are the only buffers (K-1 rows per piece, each block its own). */
static int conv_plan(strand_mixer *mixer, const strand_shard *shard, strand_plan *plan) {
    conv_state *s = mixer->state;
    return strand_shortconv_plan(&s->conv, shard, mixer->C, s->K, plan);
}

static int conv_setup(strand_mixer *mixer, const strand_shard *shard) {
    conv_state *s = mixer->state;
    return strand_shortconv_setup(&s->conv, shard);
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
    strand_free(s);
    mixer->state = NULL;
}

static int conv_step_init(const strand_mixer *mixer, const real_t *params, int64_t max_len, void **state);
static int conv_step(const strand_mixer *mixer, void *state, const real_t *params, const real_t *in,
                     real_t *out, int64_t position);
static void conv_step_free(void *state);

/* Work of forward + backward (strand plan): the depthwise taps and their halo. */
static void conv_cost(const void *options, const strand_cost_shape *shape, strand_cost *cost) {
    strand_cost_short_conv(cost, shape, shape->C, ((const conv_options *)options)->kernel);
}

const strand_mixer_ops strand_mixer_conv = {
    .cost = conv_cost,
    .name = "conv",
    .forward_cost = "O(L K C)",
    .step_cost = "O(K C)",
    .summary = "causal depthwise short convolution (model.conv_kernel taps), halo rows across ranks",
    .options_size = sizeof(conv_options),
    .keys = conv_keys,
    .key_count = sizeof conv_keys / sizeof conv_keys[0],
    .capabilities = conv_capabilities,
    .test_configs = conv_test_configs,
    .create = conv_create,
    .plan = conv_plan,
    .setup = conv_setup,
    .forward = conv_forward,
    .backward = conv_backward,
    .destroy = conv_destroy,
    .step_init = conv_step_init,
    .step = conv_step,
    .step_free = conv_step_free,
};

/* ---- incremental decoding ----
 * The state is the last K-1 inputs, used as the local conv's halo for a one-row shard: O(K C) per
 * token and (K-1) C values of memory, whatever the length. */

typedef struct {
    int64_t next, max_len; /* the position the next step must be */
    real_t *rows;          /* (K-1,C) inputs at next-K+1 .. next-1; zeros before position 0 */
} conv_step_state;

static void conv_step_free(void *state) {
    conv_step_state *st = state;
    if (!st) return;
    strand_free(st->rows);
    strand_free(st);
}

static int conv_step_init(const strand_mixer *mixer, const real_t *params, int64_t max_len, void **state) {
    (void)params;
    const conv_state *s = mixer->state;
    conv_step_state *st = strand_alloc(sizeof *st, "conv step state");
    if (!st) return STRAND_ERR_NOMEM;
    *state = st;
    st->max_len = max_len;
    /* +1: a kernel of 1 keeps no rows, and strand_alloc(0) is not an allocation */
    STRAND_ALLOC(st->rows, (int64_t)(s->K - 1) * mixer->C + 1, "conv step rows");
    return STRAND_OK;
}

static int conv_step(const strand_mixer *mixer, void *state, const real_t *params, const real_t *in,
                     real_t *out, int64_t position) {
    const conv_state *s = mixer->state;
    conv_step_state *st = state;
    const int C = mixer->C, K = s->K;
    if (position != st->next || position >= st->max_len)
        STRAND_FAIL(STRAND_ERR_INPUT, "conv step: position %lld, expected %lld (< %lld)", (long long)position,
                    (long long)st->next, (long long)st->max_len);
    // out (1,C): the same local kernel as forward, with the kept rows as its halo
    conv1d_causal_forward(out, st->rows, in, params + s->weight_offset, params + s->bias_offset, 1, C, K);
    if (K > 1) {
        memmove(st->rows, st->rows + C, sizeof(real_t) * (size_t)(K - 2) * (size_t)C);
        memcpy(st->rows + (int64_t)(K - 2) * C, in, sizeof(real_t) * (size_t)C);
    }
    st->next++;
    return STRAND_OK;
}
