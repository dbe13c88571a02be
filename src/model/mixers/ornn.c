/* Mixer "ornn": an orthogonal RNN, position by position across the sharded window.
 *
 *   h_t = phi(W h_{t-1} + U x_t + b),  out (T,C) = h Wo^T
 *   W = (I + A)^{-1} (I - A),  A = S - S^T     (Cayley transform: W is exactly orthogonal)
 * with S (C,C) the free parameter and phi = identity, tanh, or modReLU phi(a) = sign(a) relu(|a| + b_mod)
 * (Arjovsky et al. 2016; b_mod (C) a parameter). I + A is never singular (A's eigenvalues are
 * imaginary); W comes from one LU solve (LAPACK dgesv, in double) per forward, and once in step_init.
 *
 * Gradient through the transform. With M = I + A, I - A = 2 I - M, so W = 2 M^{-1} - I and
 *   dW = -2 M^{-1} dA M^{-1},  hence  dL/dA = -2 M^{-T} G M^{-T}   (G = dL/dW),
 * and M^{-1} = (I + W) / 2 gives dL/dA = -(1/2) (I + W)^T G (I + W)^T: no further solve.
 * Then dL/dS = dL/dA - (dL/dA)^T. Checked by finite differences (tests/conformance). S is initialised
 * N(0, 0.25 / C) (a random rotation, angles spread by A's eigenvalues), b_mod = 0. */
#include "model/mixers/recurrent.h"

#include "core/rng.h"

#include <math.h>

/* LAPACK (OpenBLAS): solve A X = B by LU with partial pivoting, column-major. */
void dgesv_(const int *n, const int *nrhs, double *a, const int *lda, int *ipiv, double *b, const int *ldb,
            int *info);

typedef struct {
    STRAND_RECURRENT_OPTIONS;
    int activation;
} ornn_options;

static const char *const ornn_activation_values[] = {"identity", "tanh", "modrelu", NULL};

static const strand_config_key ornn_keys[] = {
    {.section = "ornn",
     .name = "activation",
     .type = STRAND_KEY_ENUM,
     STRAND_KEY_FIELD(ornn_options, activation),
     .def = "identity",
     .values = ornn_activation_values,
     .help = "Nonlinearity phi of h_t = phi(W h_{t-1} + U x_t + b), W orthogonal (modrelu: sign(a) relu(|a| "
             "+ b_mod))."},
    STRAND_RECURRENT_CARRY_KEY("ornn", ornn_options, "hidden state"),
};

static const char *const ornn_test_configs[] = {"", "ornn.activation=tanh", "ornn.activation=modrelu", NULL};

// w (C,C) = (I + A)^{-1} (I - A), A = S - S^T; work: M then the right-hand side, column-major
static int ornn_prepare(const strand_recurrent *r, const real_t *params, real_t *w, double *work, int *ipiv) {
    const int C = r->C;
    const real_t *s = params + r->extra_off[0];
    double *m = work, *rhs = work + (int64_t)C * C;
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++) {
            const double a = (double)s[i * C + j] - (double)s[j * C + i];
            m[i + (int64_t)j * C] = (i == j) + a;
            rhs[i + (int64_t)j * C] = (i == j) - a;
        }
    int info = 0;
    dgesv_(&C, &C, m, &C, ipiv, rhs, &C, &info);
    if (info != 0) STRAND_FAIL(STRAND_ERR_NUMERIC, "ornn: LAPACK dgesv failed (info %d) on I + A", info);
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++)
            w[i * C + j] = (real_t)rhs[i + (int64_t)j * C];
    return STRAND_OK;
}

// dS (C,C) += dA - dA^T,  dA = -(1/2) (I + W)^T G (I + W)^T  (derivation above)
static void ornn_finish_backward(const strand_recurrent *r, real_t *dparams, const real_t *params,
                                 const real_t *w, const real_t *dw) {
    (void)params;
    const int C = r->C;
    double *pg = r->work, *da = r->work + (int64_t)C * C;
    // pg = (I + W)^T G: pg[i][j] = sum_k P[k][i] G[k][j]
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++) {
            double acc = dw[i * C + j];
            for (int k = 0; k < C; k++)
                acc += (double)w[k * C + i] * (double)dw[k * C + j];
            pg[i * C + j] = acc;
        }
    // da = -(1/2) pg (I + W)^T: da[i][j] = -(1/2) sum_k pg[i][k] P[j][k]
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++) {
            double acc = pg[i * C + j];
            for (int k = 0; k < C; k++)
                acc += pg[i * C + k] * (double)w[j * C + k];
            da[i * C + j] = -0.5 * acc;
        }
    real_t *ds = dparams + r->extra_off[0];
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++)
            ds[i * C + j] += (real_t)(da[i * C + j] - da[j * C + i]);
}

static const strand_recurrent_cell ornn_cell = {
    .gates = 1,
    .state_blocks = 1,
    .saved_blocks = 1,
    .custom_w = 1,
    .cell_forward = strand_recurrent_elman_forward,
    .cell_backward = strand_recurrent_elman_backward,
    .prepare = ornn_prepare,
    .finish_backward = ornn_finish_backward,
    .step_jacobian = strand_recurrent_elman_jacobian,
    /* W orthogonal: ||diag(phi') W||_2 = max |phi'| exactly, so the span's sigma_max <= prod max |phi'| */
    .step_decay = strand_recurrent_elman_max_slope,
    .decay_formula = "mean over steps of max |phi'| (W orthogonal)",
};

static int ornn_create(strand_mixer *mixer, const strand_config *config, strand_param_table *table,
                       const char *layer) {
    const ornn_options *o = mixer->options;
    STRAND_CALL(strand_recurrent_create(mixer, config, table, layer, &ornn_cell, "ornn", o->carry,
                                        STRAND_INIT_ZEROS));
    strand_recurrent *r = mixer->state;
    static const int activations[] = {REC_ACT_IDENTITY, REC_ACT_TANH, REC_ACT_MODRELU};
    r->activation = activations[o->activation];
    const int C = mixer->C;
    STRAND_CALL(strand_params_declare(table, layer, "s", C, C, STRAND_INIT_BY_LAYER, 0, 0, &r->extra[0]));
    r->extra_off[0] = table->items[r->extra[0]].offset;
    if (r->activation == REC_ACT_MODRELU) {
        STRAND_CALL(
            strand_params_declare(table, layer, "b_mod", C, 0, STRAND_INIT_ZEROS, 0, 0, &r->extra[1]));
        r->extra_off[1] = table->items[r->extra[1]].offset;
    }
    return STRAND_OK;
}

static void ornn_init_params(strand_mixer *mixer, real_t *params, uint64_t seed) {
    const strand_recurrent *r = mixer->state;
    const int64_t n = (int64_t)r->C * r->C;
    const double std = 0.5 / sqrt((double)r->C);
    for (int64_t k = 0; k < n; k++)
        params[r->extra_off[0] + k] =
            (real_t)(std * strand_rng_normal(seed, STRAND_STREAM_INIT, (uint64_t)r->extra[0], (uint64_t)k));
}

STRAND_RECURRENT_FLOPS(ornn_flops, 1)

const strand_mixer_ops strand_mixer_ornn = {
    .name = "ornn",
    .flops = ornn_flops,
    .cost = ornn_flops_cost,
    .forward_cost = "O(L C^2 + C^3) (sequential along the window)",
    .summary =
        "orthogonal RNN: W = Cayley(S - S^T) exactly orthogonal, identity, tanh or modReLU, state passed "
        "across the SP ranks",
    .options_size = sizeof(ornn_options),
    .keys = ornn_keys,
    .key_count = sizeof ornn_keys / sizeof ornn_keys[0],
    .test_configs = ornn_test_configs,
    .create = ornn_create,
    .init_params = ornn_init_params,
    STRAND_RECURRENT_PASSES,
};
