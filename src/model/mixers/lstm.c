/* Mixer "lstm": the LSTM recurrence, position by position across the sharded window.
 *
 *   [i f o g] = [sig sig sig tanh](W h_{t-1} + U x_t + b)     gates in this order, C each
 *   c_t = f * c_{t-1} + i * g,  h_t = o * tanh(c_t),  out (T,C) = h Wo^T
 * State [h c] (2C) crosses rank boundaries (recurrent.c). W ~ U(-1/sqrt(C), 1/sqrt(C)) (PyTorch's
 * init), b = 0 except the forget gate's lstm.forget_bias (Jozefowicz et al. 2015) and the input
 * gate's lstm.input_bias. For memory over k positions the forget gate must start near 1 (the cell
 * keeps f^k of a value) and, with a constant input, the input gate near 0: with i = 1/2 the
 * input's writes i g pile up to i g / (1 - f) and saturate tanh(c) (chrono initialisation, Tallec
 * and Ollivier 2018, sets input_bias = -forget_bias). */
#include "model/mixers/recurrent.h"

#include <math.h>

typedef struct {
    STRAND_RECURRENT_OPTIONS;
    double forget_bias, input_bias;
} lstm_options;

static const strand_config_key lstm_keys[] = {
    {.section = "lstm",
     .name = "forget_bias",
     .type = STRAND_KEY_DOUBLE,
     STRAND_KEY_FIELD(lstm_options, forget_bias),
     .def = "1",
     .dmin = -100,
     .dmax = 100,
     .help = "Initial bias of the forget gate (sig(b)^k of the cell survives k positions)."},
    {.section = "lstm",
     .name = "input_bias",
     .type = STRAND_KEY_DOUBLE,
     STRAND_KEY_FIELD(lstm_options, input_bias),
     .def = "0",
     .dmin = -100,
     .dmax = 100,
     .help = "Initial bias of the input gate (chrono initialisation: minus the forget bias)."},
    STRAND_RECURRENT_CARRY_KEY("lstm", lstm_options, "(h, c)"),
};

static const char *const lstm_test_configs[] = {"", "lstm.carry=true;lstm.input_bias=-1", NULL};

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

/* jac (2C,2C) = d (h_t, c_t) / d (h_{t-1}, c_{t-1}), state order [h c]. The gates see h_{t-1} only,
 * through W (rows i f o g), so with dz_X = sig'(X) W_X or tanh'(g) W_g:
 *   dc/dh = c_{t-1} dz_f + g dz_i + i dz_g,  dc/dc = diag(f)
 *   dh/dh = tanh(c) dz_o + o tanh'(c) dc/dh,  dh/dc = diag(o tanh'(c) f) */
static void lstm_step_jacobian(const strand_recurrent *r, const real_t *params, const real_t *w,
                               const real_t *prev, const real_t *next, const real_t *saved, double *jac) {
    (void)params;
    const int C = r->C, S = 2 * C;
    for (int k = 0; k < C; k++) {
        const double i = saved[k], f = saved[C + k], o = saved[2 * C + k], g = saved[3 * C + k];
        const double tc = tanh((double)next[C + k]), dtc = o * (1 - tc * tc);
        const double si = g * i * (1 - i), sf = (double)prev[C + k] * f * (1 - f), so = tc * o * (1 - o),
                     sg = i * (1 - g * g);
        const real_t *wi = w + (int64_t)k * C, *wf = w + (int64_t)(C + k) * C,
                     *wo = w + (int64_t)(2 * C + k) * C, *wg = w + (int64_t)(3 * C + k) * C;
        double *hrow = jac + (int64_t)k * S, *crow = jac + (int64_t)(C + k) * S;
        for (int j = 0; j < C; j++) {
            const double dc = sf * (double)wf[j] + si * (double)wi[j] + sg * (double)wg[j];
            crow[j] = dc;
            hrow[j] = so * (double)wo[j] + dtc * dc;
            crow[C + j] = hrow[C + j] = 0;
        }
        crow[C + k] = f;
        hrow[C + k] = dtc * f;
    }
}

/* the constant-error carousel: d c_t / d c_{t-1} = diag(f) (Hochreiter and Schmidhuber 1997) */
static double lstm_step_decay(const strand_recurrent *r, const real_t *params, const real_t *next,
                              const real_t *saved) {
    (void)params, (void)next;
    return strand_recurrent_saved_mean(r, saved, r->C);
}

static const strand_recurrent_cell lstm_cell = {
    .gates = 4,
    .state_blocks = 2,
    .saved_blocks = 4,
    .cell_forward = lstm_cell_forward,
    .cell_backward = lstm_cell_backward,
    .step_jacobian = lstm_step_jacobian,
    .step_decay = lstm_step_decay,
    .decay_formula = "mean forget gate f",
};

static int lstm_create(strand_mixer *mixer, const strand_config *config, strand_param_table *table,
                       const char *layer) {
    const lstm_options *o = mixer->options;
    STRAND_CALL(strand_recurrent_create(mixer, config, table, layer, &lstm_cell, "lstm", o->carry,
                                        STRAND_INIT_BY_LAYER));
    strand_recurrent *r = mixer->state;
    r->keep_bias = o->forget_bias;
    r->input_bias = o->input_bias;
    return STRAND_OK;
}

static void lstm_init_params(strand_mixer *mixer, real_t *params, uint64_t seed) {
    const strand_recurrent *r = mixer->state;
    const int C = r->C;
    strand_recurrent_init_uniform(params + r->w_off, 4 * (int64_t)C, C, seed, r->w);
    for (int k = 0; k < 4 * C; k++) /* gates i f o g */
        params[r->b_off + k] = (real_t)(k < C ? r->input_bias : k < 2 * C ? r->keep_bias : 0);
}

STRAND_RECURRENT_FLOPS(lstm_flops, 4)

const strand_mixer_ops strand_mixer_lstm = {
    .name = "lstm",
    .flops = lstm_flops,
    .cost = lstm_flops_cost,
    .forward_cost = "O(L C^2) (sequential along the window)",
    .summary =
        "LSTM (gates i f o g, forget bias lstm.forget_bias), its state (h, c) passed across the SP ranks",
    .options_size = sizeof(lstm_options),
    .keys = lstm_keys,
    .key_count = sizeof lstm_keys / sizeof lstm_keys[0],
    .test_configs = lstm_test_configs,
    .create = lstm_create,
    .init_params = lstm_init_params,
    STRAND_RECURRENT_PASSES,
};
