/* Mixer "lstm": the LSTM recurrence, position by position across the sharded window.
 *
 *   [i f o g] = [sig sig sig tanh](W h_{t-1} + U x_t + b)     gates in this order, C each
 *   c_t = f * c_{t-1} + i * g,  h_t = o * tanh(c_t),  out (T,C) = h Wo^T
 * State [h c] (2C) crosses rank boundaries (recurrent.c). W ~ U(-1/sqrt(C), 1/sqrt(C)) (PyTorch's
 * init), b = 0 except the forget gate's lstm.forget_bias (Jozefowicz et al. 2015). */
#include "model/mixers/recurrent.h"

#include <math.h>

typedef struct {
    double forget_bias;
    int carry;
} lstm_options;

static const strand_config_key lstm_keys[] = {
    {.section = "lstm",
     .name = "forget_bias",
     .type = STRAND_KEY_DOUBLE,
     STRAND_KEY_FIELD(lstm_options, forget_bias),
     .def = "1",
     .dmin = -100,
     .dmax = 100,
     .help = "Initial bias of the forget gate."},
    {.section = "lstm",
     .name = "carry",
     .type = STRAND_KEY_BOOL,
     STRAND_KEY_FIELD(lstm_options, carry),
     .def = "false",
     .help = "Carry the last (h, c) of a window into the next (no gradient across windows)."},
};

static unsigned lstm_capabilities(const void *options) {
    return strand_recurrent_capabilities(((const lstm_options *)options)->carry);
}

static const char *const lstm_test_configs[] = {"", "lstm.carry=true", NULL};

/* saved (4C): the gates after their activations, i f o g */
static void lstm_cell_forward(const strand_recurrent *r, const real_t *params, const real_t *xp,
                              const real_t *rec, const real_t *prev, real_t *next, real_t *saved) {
    (void)params;
    const int C = r->C;
    const real_t *c_prev = prev + C;
    for (int k = 0; k < C; k++) {
        const real_t i = strand_recurrent_sigmoid(xp[k] + rec[k]);
        const real_t f = strand_recurrent_sigmoid(xp[C + k] + rec[C + k]);
        const real_t o = strand_recurrent_sigmoid(xp[2 * C + k] + rec[2 * C + k]);
        const real_t g = (real_t)tanh(xp[3 * C + k] + rec[3 * C + k]);
        const real_t c = f * c_prev[k] + i * g;
        saved[k] = i, saved[C + k] = f, saved[2 * C + k] = o, saved[3 * C + k] = g;
        next[C + k] = c;
        next[k] = o * (real_t)tanh(c);
    }
}

static void lstm_cell_backward(const strand_recurrent *r, real_t *dparams, const real_t *params,
                               const real_t *prev, const real_t *next, const real_t *saved,
                               const real_t *dnext, real_t *dxp, real_t *drec, real_t *dprev) {
    (void)dparams, (void)params;
    const int C = r->C;
    for (int k = 0; k < C; k++) {
        const real_t i = saved[k], f = saved[C + k], o = saved[2 * C + k], g = saved[3 * C + k];
        const real_t tc = (real_t)tanh(next[C + k]), dh = dnext[k];
        const real_t dc = dnext[C + k] + dh * o * (1 - tc * tc);
        // pre-activation gradients: sig' = s (1 - s), tanh' = 1 - t^2
        drec[k] = dxp[k] = dc * g * i * (1 - i);
        drec[C + k] = dxp[C + k] = dc * prev[C + k] * f * (1 - f);
        drec[2 * C + k] = dxp[2 * C + k] = dh * tc * o * (1 - o);
        drec[3 * C + k] = dxp[3 * C + k] = dc * i * (1 - g * g);
        dprev[k] = 0; /* h_{t-1} only through W */
        dprev[C + k] = dc * f;
    }
}

static const strand_recurrent_cell lstm_cell = {
    .gates = 4,
    .state_blocks = 2,
    .saved_blocks = 4,
    .cell_forward = lstm_cell_forward,
    .cell_backward = lstm_cell_backward,
};

static int lstm_create(strand_mixer *mixer, const strand_config *config, strand_param_table *table,
                       const char *layer) {
    const lstm_options *o = mixer->options;
    STRAND_CALL(strand_recurrent_create(mixer, config, table, layer, &lstm_cell, "lstm", o->carry,
                                        STRAND_INIT_BY_LAYER));
    ((strand_recurrent *)mixer->state)->forget_bias = o->forget_bias;
    return STRAND_OK;
}

static void lstm_init_params(strand_mixer *mixer, real_t *params, uint64_t seed) {
    const strand_recurrent *r = mixer->state;
    const int C = r->C;
    strand_recurrent_init_uniform(params + r->w_off, 4 * (int64_t)C, C, seed, r->w);
    for (int k = 0; k < 4 * C; k++)
        params[r->b_off + k] = (real_t)(k >= C && k < 2 * C ? r->forget_bias : 0);
}

static double lstm_flops(const void *options, int C, int64_t T) {
    (void)options;
    return strand_recurrent_flops(4, C, T);
}

const strand_mixer_ops strand_mixer_lstm = {
    .name = "lstm",
    .flops = lstm_flops,
    .forward_cost = "O(L C^2) (sequential along the window)",
    .step_cost = "O(C^2)",
    .summary =
        "LSTM (gates i f o g, forget bias lstm.forget_bias), its state (h, c) passed across the SP ranks",
    .options_size = sizeof(lstm_options),
    .keys = lstm_keys,
    .key_count = sizeof lstm_keys / sizeof lstm_keys[0],
    .capabilities = lstm_capabilities,
    .test_configs = lstm_test_configs,
    .create = lstm_create,
    .plan = strand_recurrent_plan,
    .init_params = lstm_init_params,
    .forward = strand_recurrent_forward,
    .backward = strand_recurrent_backward,
    .destroy = strand_recurrent_destroy,
    .step_init = strand_recurrent_step_init,
    .step = strand_recurrent_step,
    .step_free = strand_recurrent_step_free,
    .carry_count = strand_recurrent_carry_count,
    .carry_save = strand_recurrent_carry_save,
    .carry_load = strand_recurrent_carry_load,
    .reset = strand_recurrent_reset,
};
