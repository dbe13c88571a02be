/* Mixer "rnn": the Elman recurrence, position by position across the sharded window.
 *
 *   h_t = phi(W h_{t-1} + U x_t + b),  out (T,C) = h Wo^T,  phi = tanh or identity
 * with hidden width C = model.d_model. W is initialised as rho G / spectral_radius(G), G with
 * i.i.d. N(0,1) entries and its spectral radius computed exactly (LAPACK dgeev), so the initial
 * spectral radius is exactly rnn.spectral_radius (rho). The driver (recurrent.c) passes the state
 * between ranks and runs BPTT. */
#include "model/mixers/recurrent.h"

typedef struct {
    STRAND_RECURRENT_OPTIONS;
    int activation;
    double spectral_radius;
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
    STRAND_RECURRENT_CARRY_KEY("rnn", rnn_options, "hidden state"),
};

static const char *const rnn_test_configs[] = {"", "rnn.activation=identity", "rnn.carry=true", NULL};

static const strand_recurrent_cell rnn_cell = {
    .gates = 1,
    .state_blocks = 1,
    .saved_blocks = 1,
    .cell_forward = strand_recurrent_elman_forward,
    .cell_backward = strand_recurrent_elman_backward,
    .step_jacobian = strand_recurrent_elman_jacobian,
    /* ||J_j|| ~ rho(W) |phi'|: Pascanu et al. 2013's bound with the spectral radius for the norm */
    .step_decay = strand_recurrent_elman_mean_slope,
    .decay_times_radius = 1,
    .decay_formula = "rho(W) x mean |phi'|",
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

STRAND_RECURRENT_FLOPS(rnn_flops, 1)

const strand_mixer_ops strand_mixer_rnn = {
    .name = "rnn",
    .flops = rnn_flops,
    .cost = rnn_flops_cost,
    .forward_cost = "O(L C^2) (sequential along the window)",
    .summary = "Elman RNN h = phi(W h + U x + b) (tanh or identity), its state passed across the SP ranks",
    .options_size = sizeof(rnn_options),
    .keys = rnn_keys,
    .key_count = sizeof rnn_keys / sizeof rnn_keys[0],
    .test_configs = rnn_test_configs,
    .create = rnn_create,
    .init_params = rnn_init_params,
    STRAND_RECURRENT_PASSES,
};
