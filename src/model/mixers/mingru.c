/* Mixer "mingru": the minimal GRU of Feng et al. 2024, a linear recurrence run as a distributed scan
 * (the driver: minrnn.h).
 *
 *   [pz ph] = W x_t + b_w,  z = sig(pz),  h~ = ph,  h_t = (1 - z) h_{t-1} + z h~,  out = h Wo^T
 * so a = 1 - z and b = z h~. b_w starts at zero (z = 1/2). */
#include "model/mixers/minrnn.h"
#include "model/mixers/recurrent.h"

typedef struct {
    int carry;
} mingru_options;

static const strand_config_key mingru_keys[] = {
    {.section = "mingru",
     .name = "carry",
     .type = STRAND_KEY_BOOL,
     STRAND_KEY_FIELD(mingru_options, carry),
     .def = "false",
     .help = "Carry the last h of a window into the next (no gradient across windows)."},
};

static const char *const mingru_test_configs[] = {"", "mingru.carry=true", NULL};

static void mingru_gates_forward(const real_t *xp, real_t *a, real_t *b, int C) {
    for (int k = 0; k < C; k++) {
        const real_t z = strand_recurrent_sigmoid(xp[k]);
        a[k] = 1 - z;
        b[k] = z * xp[C + k];
    }
}

/* h = (1 - z) h_{t-1} + z h~: dh/dz = h~ - h_{t-1}, dh/dh~ = z; sig' = z (1 - z) */
static void mingru_gates_backward(const real_t *xp, const real_t *hprev, const real_t *g, real_t *dxp,
                                  int C) {
    for (int k = 0; k < C; k++) {
        const real_t z = strand_recurrent_sigmoid(xp[k]);
        dxp[k] = g[k] * (xp[C + k] - hprev[k]) * z * (1 - z);
        dxp[C + k] = g[k] * z;
    }
}

static const strand_minrnn_gates mingru_gates = {
    .gates = 2, .forward = mingru_gates_forward, .backward = mingru_gates_backward};

static unsigned mingru_capabilities(const void *options) {
    return strand_minrnn_capabilities(((const mingru_options *)options)->carry);
}

static int mingru_create(strand_mixer *mixer, const strand_config *config, strand_param_table *table,
                         const char *layer) {
    const mingru_options *o = mixer->options;
    return strand_minrnn_create(mixer, config, table, layer, &mingru_gates, "mingru", o->carry, NULL);
}

static double mingru_flops(const void *options, int C, int64_t T) {
    (void)options;
    return strand_minrnn_flops(2, C, T);
}

const strand_mixer_ops strand_mixer_mingru = {
    .name = "mingru",
    .summary =
        "minGRU (Feng et al. 2024): h = (1 - z) h + z W_h x, z = sig(W_z x), a scan across the SP ranks",
    .flops = mingru_flops,
    .options_size = sizeof(mingru_options),
    .keys = mingru_keys,
    .key_count = sizeof mingru_keys / sizeof mingru_keys[0],
    .capabilities = mingru_capabilities,
    .test_configs = mingru_test_configs,
    .create = mingru_create,
    STRAND_MINRNN_PASSES,
};
