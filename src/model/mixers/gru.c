/* Mixer "gru": the GRU recurrence in PyTorch's convention, position by position across the
 * sharded window:
 *   r = sig(U_r x + b_ir + W_r h + b_hr),  z = sig(U_z x + b_iz + W_z h + b_hz)
 *   n = tanh(U_n x + b_in + r * (W_n h + b_hn)),  h_t = (1 - z) * n + z * h_{t-1}
 *   out (T,C) = h Wo^T
 * Gate blocks in the order r z n (U, W (3C,C); b = b_i, b_h (3C)). The reset gate multiplies
 * W_n h + b_hn (PyTorch, cuDNN), not h before W_n (Cho et al. 2014). W ~ U(-1/sqrt(C), 1/sqrt(C)),
 * biases 0 except the update gate's b_iz = gru.update_bias: z near 1 keeps h (h_t = z h_{t-1} +
 * (1 - z) n), so a bias b starts the state with a memory of about 1 / (1 - sig(b)) positions
 * (b = 5: z = 0.9933, about 150; the forget bias of the LSTM plays the same part). The state h
 * crosses rank boundaries (recurrent.c). */
#include "model/mixers/recurrent.h"

#include <math.h>

typedef struct {
    STRAND_RECURRENT_OPTIONS;
    double update_bias;
} gru_options;

static const strand_config_key gru_keys[] = {
    {.section = "gru",
     .name = "update_bias",
     .type = STRAND_KEY_DOUBLE,
     STRAND_KEY_FIELD(gru_options, update_bias),
     .def = "0",
     .dmin = -100,
     .dmax = 100,
     .help = "Initial bias of the update gate z (z near 1 keeps h: memory over about 1/(1-z) positions)."},
    STRAND_RECURRENT_CARRY_KEY("gru", gru_options, "hidden state"),
};

static const char *const gru_test_configs[] = {"", "gru.carry=true", NULL};

/* rec = W h + b_h (the driver adds b_h); saved (4C): r, z, n, and W_n h + b_hn */
static void gru_cell_forward(const strand_recurrent *r, const real_t *params, const real_t *xp,
                             const real_t *rec, const real_t *prev, real_t *next, real_t *saved) {
    (void)params;
    const int C = r->C;
    for (int k = 0; k < C; k++) {
        const real_t rg = strand_recurrent_sigmoid(xp[k] + rec[k]);
        const real_t z = strand_recurrent_sigmoid(xp[C + k] + rec[C + k]);
        const real_t hn = rec[2 * C + k];
        const real_t n = (real_t)tanh(xp[2 * C + k] + rg * hn);
        saved[k] = rg, saved[C + k] = z, saved[2 * C + k] = n, saved[3 * C + k] = hn;
        next[k] = (1 - z) * n + z * prev[k];
    }
}

static void gru_cell_backward(const strand_recurrent *r, real_t *dparams, const real_t *params,
                              const real_t *prev, const real_t *next, const real_t *saved,
                              const real_t *dnext, real_t *dxp, real_t *drec, real_t *dprev) {
    (void)dparams, (void)params, (void)next;
    const int C = r->C;
    for (int k = 0; k < C; k++) {
        const real_t rg = saved[k], z = saved[C + k], n = saved[2 * C + k], hn = saved[3 * C + k];
        const real_t dh = dnext[k];
        const real_t dn_pre = dh * (1 - z) * (1 - n * n);
        const real_t dz_pre = dh * (prev[k] - n) * z * (1 - z);
        const real_t dr_pre = dn_pre * hn * rg * (1 - rg);
        dxp[k] = drec[k] = dr_pre;
        dxp[C + k] = drec[C + k] = dz_pre;
        dxp[2 * C + k] = dn_pre;
        drec[2 * C + k] = dn_pre * rg; /* W_n h + b_hn enters through r */
        dprev[k] = dh * z;
    }
}

/* jac (C,C) = d h_t / d h_{t-1}: with h = (1 - z) n + z h_{t-1},
 *   diag(z) + diag((h_{t-1} - n) z (1 - z)) W_z + diag((1 - z)(1 - n^2)) [diag(r) W_n + diag(hn r (1 - r))
 * W_r] (hn = W_n h_{t-1} + b_hn, saved by forward; gate rows r z n) */
static void gru_step_jacobian(const strand_recurrent *r, const real_t *params, const real_t *w,
                              const real_t *prev, const real_t *next, const real_t *saved, double *jac) {
    (void)params, (void)next;
    const int C = r->C;
    for (int k = 0; k < C; k++) {
        const double rg = saved[k], z = saved[C + k], n = saved[2 * C + k], hn = saved[3 * C + k];
        const double dn = (1 - z) * (1 - n * n);
        const double sz = ((double)prev[k] - n) * z * (1 - z), sn = dn * rg, sr = dn * hn * rg * (1 - rg);
        const real_t *wr = w + (int64_t)k * C, *wz = w + (int64_t)(C + k) * C,
                     *wn = w + (int64_t)(2 * C + k) * C;
        double *row = jac + (int64_t)k * C;
        for (int j = 0; j < C; j++)
            row[j] = sz * (double)wz[j] + sn * (double)wn[j] + sr * (double)wr[j];
        row[k] += z;
    }
}

/* the fraction of h_{t-1} the update gate keeps: d h_t / d h_{t-1} = diag(z) + terms through W */
static double gru_step_decay(const strand_recurrent *r, const real_t *params, const real_t *next,
                             const real_t *saved) {
    (void)params, (void)next;
    return strand_recurrent_saved_mean(r, saved, r->C);
}

static const strand_recurrent_cell gru_cell = {
    .gates = 3,
    .state_blocks = 1,
    .saved_blocks = 4,
    .hidden_bias = 1,
    .cell_forward = gru_cell_forward,
    .cell_backward = gru_cell_backward,
    .step_jacobian = gru_step_jacobian,
    .step_decay = gru_step_decay,
    .decay_formula = "mean update gate z (the kept fraction of h)",
};

static int gru_create(strand_mixer *mixer, const strand_config *config, strand_param_table *table,
                      const char *layer) {
    const gru_options *o = mixer->options;
    STRAND_CALL(strand_recurrent_create(mixer, config, table, layer, &gru_cell, "gru", o->carry,
                                        STRAND_INIT_BY_LAYER));
    ((strand_recurrent *)mixer->state)->keep_bias = o->update_bias;
    return STRAND_OK;
}

static void gru_init_params(strand_mixer *mixer, real_t *params, uint64_t seed) {
    const strand_recurrent *r = mixer->state;
    const int C = r->C;
    strand_recurrent_init_uniform(params + r->w_off, 3 * (int64_t)C, C, seed, r->w);
    for (int k = 0; k < 3 * C; k++) /* b_i in the order r z n */
        params[r->b_off + k] = (real_t)(k >= C && k < 2 * C ? r->keep_bias : 0);
}

STRAND_RECURRENT_FLOPS(gru_flops, 3)

const strand_mixer_ops strand_mixer_gru = {
    .name = "gru",
    .flops = gru_flops,
    .cost = gru_flops_cost,
    .forward_cost = "O(L C^2) (sequential along the window)",
    .summary = "GRU (PyTorch convention: reset gate on W_n h + b_hn; update bias gru.update_bias), its state "
               "passed across the SP ranks",
    .options_size = sizeof(gru_options),
    .keys = gru_keys,
    .key_count = sizeof gru_keys / sizeof gru_keys[0],
    .test_configs = gru_test_configs,
    .create = gru_create,
    .init_params = gru_init_params,
    STRAND_RECURRENT_PASSES,
};
