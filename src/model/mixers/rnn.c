/* Mixer "rnn": the Elman recurrence, position by position across the sharded window.
 *
 *   h_t = phi(W h_{t-1} + U x_t + b),  out (T,C) = h Wo^T,  phi = tanh or identity
 * with hidden width C = model.d_model. W is initialised as rho G / spectral_radius(G), G with
 * i.i.d. N(0,1) entries and its spectral radius computed exactly (LAPACK dgeev), so the initial
 * spectral radius is exactly rnn.spectral_radius (rho). The driver (recurrent.c) passes the state
 * between ranks and runs BPTT. */
#include "model/mixers/recurrent.h"

typedef struct {
    int activation;
    double spectral_radius;
    int carry;
} rnn_options;

static const char *const rnn_activation_values[] = {"tanh", "identity", NULL};

static const strand_config_key rnn_keys[] = {
    {.section = "rnn",
     .name = "activation",
     .type = STRAND_KEY_ENUM,
     STRAND_KEY_FIELD(rnn_options, activation),
     .def = "tanh",
     .values = rnn_activation_values,
     .help = "Nonlinearity phi of h_t = phi(W h_{t-1} + U x_t + b)."},
    {.section = "rnn",
     .name = "spectral_radius",
     .type = STRAND_KEY_DOUBLE,
     STRAND_KEY_FIELD(rnn_options, spectral_radius),
     .def = "0.9",
     .dmin = 0,
     .dmax = 10,
     .help = "Initial spectral radius of the recurrent matrix W (a scaled Gaussian matrix)."},
    {.section = "rnn",
     .name = "carry",
     .type = STRAND_KEY_BOOL,
     STRAND_KEY_FIELD(rnn_options, carry),
     .def = "false",
     .help = "Carry the last hidden state of a window into the next (no gradient across windows)."},
};

static unsigned rnn_capabilities(const void *options) {
    return strand_recurrent_capabilities(((const rnn_options *)options)->carry);
}

static const char *const rnn_test_configs[] = {"", "rnn.activation=identity", "rnn.carry=true", NULL};

static const strand_recurrent_cell rnn_cell = {
    .gates = 1,
    .state_blocks = 1,
    .saved_blocks = 1,
    .cell_forward = strand_recurrent_elman_forward,
    .cell_backward = strand_recurrent_elman_backward,
};

static int rnn_create(strand_mixer *mixer, const strand_config *config, strand_param_table *table,
                      const char *layer) {
    const rnn_options *o = mixer->options;
    STRAND_CALL(
        strand_recurrent_create(mixer, config, table, layer, &rnn_cell, "rnn", o->carry, STRAND_INIT_ZEROS));
    strand_recurrent *r = mixer->state;
    /* enum order tanh, identity: the driver's REC_ACT_TANH, REC_ACT_IDENTITY */
    r->activation = o->activation == 0 ? REC_ACT_TANH : REC_ACT_IDENTITY;
    r->spectral_radius = o->spectral_radius;
    return STRAND_OK;
}

static void rnn_init_params(strand_mixer *mixer, real_t *params, uint64_t seed) {
    const strand_recurrent *r = mixer->state;
    strand_recurrent_init_radius(params + r->w_off, r->C, r->spectral_radius, seed, r->w);
}

static double rnn_flops(const void *options, int C, int64_t T) {
    (void)options;
    return strand_recurrent_flops(1, C, T);
}

const strand_mixer_ops strand_mixer_rnn = {
    .name = "rnn",
    .flops = rnn_flops,
    .forward_cost = "O(L C^2) (sequential along the window)",
    .step_cost = "O(C^2)",
    .summary = "Elman RNN h = phi(W h + U x + b) (tanh or identity), its state passed across the SP ranks",
    .options_size = sizeof(rnn_options),
    .keys = rnn_keys,
    .key_count = sizeof rnn_keys / sizeof rnn_keys[0],
    .capabilities = rnn_capabilities,
    .test_configs = rnn_test_configs,
    .create = rnn_create,
    .plan = strand_recurrent_plan,
    .init_params = rnn_init_params,
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
