/* Mixer "gru": the GRU recurrence in PyTorch's convention, position by position across the
 * sharded window:
 *   r = sig(U_r x + b_ir + W_r h + b_hr),  z = sig(U_z x + b_iz + W_z h + b_hz)
 *   n = tanh(U_n x + b_in + r * (W_n h + b_hn)),  h_t = (1 - z) * n + z * h_{t-1}
 *   out (T,C) = h Wo^T
 * Gate blocks in the order r z n (U, W (3C,C); b = b_i, b_h (3C)). The reset gate multiplies
 * W_n h + b_hn (PyTorch, cuDNN), not h before W_n (Cho et al. 2014). W ~ U(-1/sqrt(C), 1/sqrt(C)),
 * biases 0. The state h crosses rank boundaries (recurrent.c). */
#include "model/mixers/recurrent.h"

#include <math.h>

typedef struct {
    int carry;
} gru_options;

static const strand_config_key gru_keys[] = {
    {.section = "gru",
     .name = "carry",
     .type = STRAND_KEY_BOOL,
     STRAND_KEY_FIELD(gru_options, carry),
     .def = "false",
     .help = "Carry the last hidden state of a window into the next (no gradient across windows)."},
};

static unsigned gru_capabilities(const void *options) {
    return strand_recurrent_capabilities(((const gru_options *)options)->carry);
}

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

static const strand_recurrent_cell gru_cell = {
    .gates = 3,
    .state_blocks = 1,
    .saved_blocks = 4,
    .hidden_bias = 1,
    .cell_forward = gru_cell_forward,
    .cell_backward = gru_cell_backward,
};

static int gru_create(strand_mixer *mixer, const strand_config *config, strand_param_table *table,
                      const char *layer) {
    const gru_options *o = mixer->options;
    return strand_recurrent_create(mixer, config, table, layer, &gru_cell, "gru", o->carry,
                                   STRAND_INIT_ZEROS);
}

static void gru_init_params(strand_mixer *mixer, real_t *params, uint64_t seed) {
    const strand_recurrent *r = mixer->state;
    strand_recurrent_init_uniform(params + r->w_off, 3 * (int64_t)r->C, r->C, seed, r->w);
}

static double gru_flops(const void *options, int C, int64_t T) {
    (void)options;
    return strand_recurrent_flops(3, C, T);
}

const strand_mixer_ops strand_mixer_gru = {
    .name = "gru",
    .flops = gru_flops,
    .forward_cost = "O(L C^2) (sequential along the window)",
    .step_cost = "O(C^2)",
    .summary = "GRU (PyTorch convention: reset gate on W_n h + b_hn), its state passed across the SP ranks",
    .options_size = sizeof(gru_options),
    .keys = gru_keys,
    .key_count = sizeof gru_keys / sizeof gru_keys[0],
    .capabilities = gru_capabilities,
    .test_configs = gru_test_configs,
    .create = gru_create,
    .plan = strand_recurrent_plan,
    .init_params = gru_init_params,
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
