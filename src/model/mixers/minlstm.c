/* Mixer "minlstm": the minimal LSTM of Feng et al. 2024, a linear recurrence run as a distributed
 * scan (the driver: minrnn.h).
 *
 *   [pf pi ph] = W x_t + b_w,  f = sig(pf),  i = sig(pi),  h~ = ph
 *   f' = f / (f + i),  i' = i / (f + i),  h_t = f' h_{t-1} + i' h~,  out = h Wo^T
 * so a = f' and b = i' h~. The normalised gates are computed in log space, f' = sig(log f - log i)
 * and i' = sig(log i - log f) (finite even where f and i both underflow). b_w starts at
 * minlstm.forget_bias on the forget block, zero elsewhere. */
#include "model/mixers/minrnn.h"
#include "model/mixers/recurrent.h"

#include <math.h>

typedef struct {
    double forget_bias;
    int carry;
} minlstm_options;

static const strand_config_key minlstm_keys[] = {
    {.section = "minlstm",
     .name = "forget_bias",
     .type = STRAND_KEY_DOUBLE,
     STRAND_KEY_FIELD(minlstm_options, forget_bias),
     .def = "1",
     .dmin = -100,
     .dmax = 100,
     .help = "Initial bias of the forget gate (1: f' about 0.6 at the start)."},
    {.section = "minlstm",
     .name = "carry",
     .type = STRAND_KEY_BOOL,
     STRAND_KEY_FIELD(minlstm_options, carry),
     .def = "false",
     .help = "Carry the last h of a window into the next (no gradient across windows)."},
};

static const char *const minlstm_test_configs[] = {"", "minlstm.carry=true", NULL};

/* log sig(x) = -softplus(-x), without overflow */
static double log_sigmoid(double x) {
    return fmin(x, 0.0) - log1p(exp(-fabs(x)));
}

/* f' = sig(d), i' = sig(-d), d = log f - log i */
static void minlstm_normalised(real_t pf, real_t pi, real_t *fn, real_t *in) {
    const double d = log_sigmoid((double)pf) - log_sigmoid((double)pi);
    *fn = strand_recurrent_sigmoid((real_t)d);
    *in = strand_recurrent_sigmoid((real_t)-d);
}

static void minlstm_gates_forward(const real_t *xp, real_t *a, real_t *b, int C) {
    for (int k = 0; k < C; k++) {
        real_t fn, in;
        minlstm_normalised(xp[k], xp[C + k], &fn, &in);
        a[k] = fn;
        b[k] = in * xp[2 * C + k];
    }
}

/* h = f' h_{t-1} + (1 - f') h~ with f' = sig(d): dh/dd = (h_{t-1} - h~) f' i';
 * dd/dpf = 1 - f, dd/dpi = -(1 - i); dh/dh~ = i' */
static void minlstm_gates_backward(const real_t *xp, const real_t *hprev, const real_t *g, real_t *dxp,
                                   int C) {
    for (int k = 0; k < C; k++) {
        real_t fn, in;
        minlstm_normalised(xp[k], xp[C + k], &fn, &in);
        const real_t dd = g[k] * (hprev[k] - xp[2 * C + k]) * fn * in;
        dxp[k] = dd * strand_recurrent_sigmoid(-xp[k]);
        dxp[C + k] = -dd * strand_recurrent_sigmoid(-xp[C + k]);
        dxp[2 * C + k] = g[k] * in;
    }
}

static const strand_minrnn_gates minlstm_gates = {
    .gates = 3, .forward = minlstm_gates_forward, .backward = minlstm_gates_backward};

static unsigned minlstm_capabilities(const void *options) {
    return strand_minrnn_capabilities(((const minlstm_options *)options)->carry);
}

static int minlstm_create(strand_mixer *mixer, const strand_config *config, strand_param_table *table,
                          const char *layer) {
    const minlstm_options *o = mixer->options;
    const double bias[] = {o->forget_bias, 0.0, 0.0};
    return strand_minrnn_create(mixer, config, table, layer, &minlstm_gates, "minlstm", o->carry, bias);
}

static double minlstm_flops(const void *options, int C, int64_t T) {
    (void)options;
    return strand_minrnn_flops(3, C, T);
}

const strand_mixer_ops strand_mixer_minlstm = {
    .name = "minlstm",
    .summary = "minLSTM (Feng et al. 2024): h = f' h + i' W_h x, gates normalised f' + i' = 1 (forget bias "
               "minlstm.forget_bias), a scan across the SP ranks",
    .flops = minlstm_flops,
    .options_size = sizeof(minlstm_options),
    .keys = minlstm_keys,
    .key_count = sizeof minlstm_keys / sizeof minlstm_keys[0],
    .capabilities = minlstm_capabilities,
    .test_configs = minlstm_test_configs,
    .create = minlstm_create,
    STRAND_MINRNN_PASSES,
};
