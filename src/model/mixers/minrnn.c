/* The shared driver of mingru and minlstm: projections, the distributed scan and its adjoint, step
 * mode and the carried state (see minrnn.h). */
#include "model/mixers/minrnn.h"

#include "kernels/layers.h"

#include <math.h>
#include <string.h>

int strand_minrnn_create(strand_mixer *mixer, const strand_config *config, strand_param_table *table,
                         const char *layer, const strand_minrnn_gates *gates, const char *name, int carry,
                         const double *bias_init) {
    strand_minrnn *r = strand_alloc(sizeof *r, "minimal rnn mixer");
    if (!r) return STRAND_ERR_NOMEM;
    mixer->state = r;
    r->scan.comm = r->scan.reversed = MPI_COMM_NULL;
    r->scan.pair = MPI_DATATYPE_NULL;
    r->scan.op = MPI_OP_NULL;
    const int C = mixer->C, G = gates->gates;
    if (G < 2 || G > MINRNN_MAX_GATES) STRAND_FAIL(STRAND_ERR_INTERNAL, "%s: %d gate blocks", name, G);
    r->gates = gates;
    r->name = name;
    r->C = C, r->G = G, r->carry = carry;
    for (int k = 0; k < G; k++)
        r->bias_init[k] = bias_init ? bias_init[k] : 0.0;
    /* Wo feeds the residual stream: scaled down with depth like attn's output projection. */
    const double std = config->init_std, out_std = strand_model_residual_std(config);
    const int64_t GC = (int64_t)G * C;
    STRAND_CALL(strand_params_declare(table, layer, "w", GC, C, STRAND_INIT_NORMAL, std, 1, &r->w));
    STRAND_CALL(strand_params_declare(table, layer, "b", GC, 0, STRAND_INIT_BY_LAYER, 0, 0, &r->b));
    STRAND_CALL(strand_params_declare(table, layer, "wo", C, C, STRAND_INIT_NORMAL, out_std, 1, &r->wo));
    r->w_off = table->items[r->w].offset;
    r->b_off = table->items[r->b].offset;
    r->wo_off = table->items[r->wo].offset;
    return STRAND_OK;
}

unsigned strand_minrnn_capabilities(int carry) {
    return STRAND_MIXER_STEP | (carry ? STRAND_MIXER_CARRIES_STATE : 0);
}

double strand_minrnn_flops(int G, int C, int64_t T) {
    return 2.0 * (double)T * C * C * (G + 1.0) + 3.0 * (double)T * C;
}

void strand_minrnn_init_params(strand_mixer *mixer, real_t *params, uint64_t seed) {
    (void)seed;
    const strand_minrnn *r = mixer->state;
    for (int k = 0; k < r->G; k++)
        for (int c = 0; c < r->C; c++)
            params[r->b_off + (int64_t)k * r->C + c] = (real_t)r->bias_init[k];
}

int strand_minrnn_plan(strand_mixer *mixer, const strand_shard *shard, strand_plan *plan) {
    strand_minrnn *r = mixer->state;
    const int64_t T = shard->T, rows = T > 0 ? T : 1, C = r->C, GC = (int64_t)r->G * r->C;
    r->T = T;
    r->n_pieces = shard->n_pieces;
    int64_t row = 0;
    for (int p = 0; p < shard->n_pieces; p++) {
        r->row0[p] = row, r->len[p] = shard->piece_length[p];
        row += shard->piece_length[p];
    }
    const int saved = STRAND_LIFE_SAVED | STRAND_PLAN_SHARED,
              scratch = STRAND_LIFE_SCRATCH | STRAND_PLAN_SHARED;
    STRAND_PLAN_ADD(plan, r->xp, rows * GC, saved, "minrnn gate projections");
    STRAND_PLAN_ADD(plan, r->a, rows * C, saved, "minrnn multipliers");
    STRAND_PLAN_ADD(plan, r->h, rows * C, saved, "minrnn states");
    STRAND_PLAN_ADD(plan, r->h0, STRAND_MAX_PIECES * C, saved, "minrnn entering states");
    STRAND_PLAN_ADD(plan, r->g, rows * C, scratch, "minrnn adjoint");
    STRAND_PLAN_ADD(plan, r->dxp, rows * GC, scratch, "minrnn gradient scratch");
    STRAND_PLAN_ADD(plan, r->work, 9 * C, scratch, "minrnn scan summaries");
    STRAND_CALL(strand_scan_plan(&r->scan, shard, C, 0, STRAND_PLAN_SHARED, plan));
    STRAND_PLAN_ADD(plan, r->carry_state, C, STRAND_LIFE_PERSISTENT, "minrnn carried state");
    return STRAND_OK;
}

int strand_minrnn_setup(strand_mixer *mixer, const strand_shard *shard) {
    (void)shard;
    strand_minrnn *r = mixer->state;
    return strand_scan_setup(&r->scan);
}

void strand_minrnn_destroy(strand_mixer *mixer) {
    strand_minrnn *r = mixer->state;
    if (!r) return;
    strand_scan_free(&r->scan);
    strand_free(r); /* the buffers belong to the plan */
    mixer->state = NULL;
}

/* ---- the local scans ---- */

/* Forward over one piece of len rows from h = 0, in place: x holds b_t on entry and h_t on exit.
 * pair (2C): the summary (A = prod a, B = the last h). */
static void scan_forward(real_t *x, const real_t *a, int64_t len, int C, double *pair) {
    double *A = pair, *B = pair + C;
    for (int c = 0; c < C; c++)
        A[c] = len > 0 ? (double)a[c] : 1.0, B[c] = 0.0;
    for (int64_t t = 1; t < len; t++) {
        real_t *cur = x + t * C;
        const real_t *prev = cur - C, *at = a + t * C;
        for (int c = 0; c < C; c++) {
            cur[c] = at[c] * prev[c] + cur[c];
            A[c] *= (double)at[c];
        }
    }
    if (len > 0)
        for (int c = 0; c < C; c++)
            B[c] = (double)x[(len - 1) * C + c];
}

/* The adjoint over one piece from a zero incoming value, in place: x holds dh_t on entry and
 * g_t = dh_t + a_{t+1} g_{t+1} on exit. pair (2C): (A = prod a, B = a_s g_s, s the first row). */
static void scan_backward(real_t *x, const real_t *a, int64_t len, int C, double *pair) {
    double *A = pair, *B = pair + C;
    for (int c = 0; c < C; c++)
        A[c] = len > 0 ? (double)a[(len - 1) * C + c] : 1.0, B[c] = 0.0;
    for (int64_t t = len - 2; t >= 0; t--) {
        real_t *cur = x + t * C;
        const real_t *next = cur + C, *at = a + t * C, *anext = at + C;
        for (int c = 0; c < C; c++) {
            cur[c] += anext[c] * next[c];
            A[c] *= (double)at[c];
        }
    }
    if (len > 0)
        for (int c = 0; c < C; c++)
            B[c] = (double)a[c] * (double)x[c];
}

/* The entering state's share, x_t += run_t v. Forward: run_t = prod_{s<=t} a_s from the piece's
 * start; reverse (the adjoint): run_t = prod_{t<u<=e} a_u to its end e. run: C doubles of scratch.
 * Nothing to do when v is zero (the first piece without a carried state). */
static void fix_up(real_t *x, const real_t *a, int64_t len, int C, const double *v, double *run,
                   int reverse) {
    int any = 0;
    for (int c = 0; c < C; c++)
        any |= v[c] != 0.0;
    if (!any) return;
    for (int c = 0; c < C; c++)
        run[c] = 1.0;
    for (int64_t j = 0; j < len; j++) {
        const int64_t t = reverse ? len - 1 - j : j;
        real_t *xt = x + t * C;
        const real_t *at = a + t * C;
        for (int c = 0; c < C; c++) {
            if (!reverse) run[c] *= (double)at[c];
            xt[c] = (real_t)((double)xt[c] + run[c] * v[c]);
            if (reverse) run[c] *= (double)at[c];
        }
    }
}

/* The summaries and entering states of each piece in r->work (see minrnn.h). */
static void work_pieces(const strand_minrnn *r, double *pairs[], double *entering[]) {
    for (int p = 0; p < STRAND_MAX_PIECES; p++) {
        pairs[p] = r->work + (int64_t)p * 2 * r->C;
        entering[p] = r->work + (int64_t)(2 * STRAND_MAX_PIECES + p) * r->C;
    }
}

/* ---- passes ---- */

int strand_minrnn_forward(strand_mixer *mixer, real_t *out, const real_t *in, const real_t *params,
                          const strand_shard *shard) {
    (void)shard;
    strand_minrnn *r = mixer->state;
    const int C = r->C, GC = r->G * r->C;
    const int64_t T = r->T;
    // xp (T,GC) = in W^T + b_w; a, b (T,C) from the gates (b into h, scanned in place)
    linear_forward(r->xp, in, params + r->w_off, params + r->b_off, T, C, GC);
    for (int64_t t = 0; t < T; t++)
        r->gates->forward(r->xp + t * GC, r->a + t * C, r->h + t * C, C);
    const double t0 = strand_now();
    double *pairs[STRAND_MAX_PIECES], *entering[STRAND_MAX_PIECES];
    work_pieces(r, pairs, entering);
    double *run = r->work + 6 * C, *final = r->work + 7 * C, *initial = r->work + 8 * C;
    for (int p = 0; p < r->n_pieces; p++)
        scan_forward(r->h + r->row0[p] * C, r->a + r->row0[p] * C, r->len[p], C, pairs[p]);
    double kernel = strand_now() - t0;
    if (r->carry)
        for (int c = 0; c < C; c++)
            initial[c] = (double)r->carry_state[c];
    STRAND_CALL(strand_scan_exchange(&r->scan, STRAND_SCAN_FORWARD, (const double *const *)pairs,
                                     r->carry ? initial : NULL, entering, r->carry ? final : NULL));
    const double t1 = strand_now();
    for (int p = 0; p < r->n_pieces; p++) {
        for (int c = 0; c < C; c++)
            r->h0[p * C + c] = (real_t)entering[p][c];
        fix_up(r->h + r->row0[p] * C, r->a + r->row0[p] * C, r->len[p], C, entering[p], run, 0);
    }
    strand_scan_kernel_time_add(kernel + strand_now() - t1);
    if (r->carry && r->scan.rank == r->scan.first_owner[STRAND_SCAN_FORWARD])
        for (int c = 0; c < C; c++)
            r->carry_state[c] = (real_t) final[c];
    // out (T,C) = h Wo^T
    linear_forward(out, r->h, params + r->wo_off, NULL, T, C, C);
    return STRAND_OK;
}

int strand_minrnn_backward(strand_mixer *mixer, real_t *din, real_t *dparams, const real_t *dout,
                           const real_t *in, const real_t *params, const strand_shard *shard) {
    (void)shard;
    strand_minrnn *r = mixer->state;
    const int C = r->C, GC = r->G * r->C;
    const int64_t T = r->T;
    // dh (T,C) = dout Wo into g; dWo (C,C) += dout^T h
    memset(r->g, 0, sizeof(real_t) * (size_t)(T * C));
    linear_backward(r->g, dparams + r->wo_off, NULL, dout, r->h, params + r->wo_off, T, C, C);
    const double t0 = strand_now();
    double *pairs[STRAND_MAX_PIECES], *entering[STRAND_MAX_PIECES];
    work_pieces(r, pairs, entering);
    double *run = r->work + 6 * C;
    for (int p = 0; p < r->n_pieces; p++)
        scan_backward(r->g + r->row0[p] * C, r->a + r->row0[p] * C, r->len[p], C, pairs[p]);
    double kernel = strand_now() - t0;
    /* no adjoint after the window's end, none into the carried state */
    STRAND_CALL(strand_scan_exchange(&r->scan, STRAND_SCAN_BACKWARD, (const double *const *)pairs, NULL,
                                     entering, NULL));
    const double t1 = strand_now();
    for (int p = 0; p < r->n_pieces; p++)
        fix_up(r->g + r->row0[p] * C, r->a + r->row0[p] * C, r->len[p], C, entering[p], run, 1);
    strand_scan_kernel_time_add(kernel + strand_now() - t1);
    // dxp (T,GC) from g and h_{t-1}; then din, dW, db_w
    for (int p = 0; p < r->n_pieces; p++)
        for (int64_t t = r->row0[p]; t < r->row0[p] + r->len[p]; t++) {
            const real_t *hprev = t == r->row0[p] ? r->h0 + p * C : r->h + (t - 1) * C;
            r->gates->backward(r->xp + t * GC, hprev, r->g + t * C, r->dxp + t * GC, C);
        }
    linear_backward(din, dparams + r->w_off, dparams + r->b_off, r->dxp, in, params + r->w_off, T, C, GC);
    return STRAND_OK;
}

/* ---- carried state ---- */

int64_t strand_minrnn_carry_count(const strand_mixer *mixer) {
    const strand_minrnn *r = mixer->state;
    return r->carry ? r->C : 0;
}

void strand_minrnn_carry_save(const strand_mixer *mixer, real_t *out) {
    const strand_minrnn *r = mixer->state;
    if (r->carry) memcpy(out, r->carry_state, sizeof(real_t) * (size_t)r->C);
}

void strand_minrnn_carry_load(strand_mixer *mixer, const real_t *in) {
    strand_minrnn *r = mixer->state;
    if (r->carry) memcpy(r->carry_state, in, sizeof(real_t) * (size_t)r->C);
}

void strand_minrnn_reset(strand_mixer *mixer) {
    strand_minrnn *r = mixer->state;
    if (r && r->carry && r->carry_state) memset(r->carry_state, 0, sizeof(real_t) * (size_t)r->C);
}

/* ---- incremental decoding: h (C), O(G C^2) per token ---- */

typedef struct {
    int64_t next, max_len;
    real_t *h, *xp, *a, *b;
} minrnn_step_state;

void strand_minrnn_step_free(void *state) {
    minrnn_step_state *st = state;
    if (!st) return;
    strand_free(st->h);
    strand_free(st->xp);
    strand_free(st->a);
    strand_free(st->b);
    strand_free(st);
}

int strand_minrnn_step_init(const strand_mixer *mixer, const real_t *params, int64_t max_len, void **state) {
    (void)params;
    const strand_minrnn *r = mixer->state;
    minrnn_step_state *st = strand_alloc(sizeof *st, "minrnn step state");
    if (!st) return STRAND_ERR_NOMEM;
    *state = st;
    st->max_len = max_len;
    STRAND_ALLOC(st->h, r->C, "minrnn step state");
    STRAND_ALLOC(st->xp, (int64_t)r->G * r->C, "minrnn step scratch");
    STRAND_ALLOC(st->a, r->C, "minrnn step scratch");
    STRAND_ALLOC(st->b, r->C, "minrnn step scratch");
    return STRAND_OK;
}

int strand_minrnn_step(const strand_mixer *mixer, void *state, const real_t *params, const real_t *in,
                       real_t *out, int64_t position) {
    const strand_minrnn *r = mixer->state;
    minrnn_step_state *st = state;
    const int C = r->C;
    if (position != st->next || position >= st->max_len)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s step: position %lld, expected %lld (< %lld)", r->name,
                    (long long)position, (long long)st->next, (long long)st->max_len);
    // xp (1,GC) = in W^T + b_w; h = a h + b as in forward's scan (h = b at position 0)
    linear_forward(st->xp, in, params + r->w_off, params + r->b_off, 1, C, r->G * C);
    r->gates->forward(st->xp, st->a, st->b, C);
    for (int c = 0; c < C; c++)
        st->h[c] = position == 0 ? st->b[c] : st->a[c] * st->h[c] + st->b[c];
    // out (1,C) = h Wo^T
    linear_forward(out, st->h, params + r->wo_off, NULL, 1, C, C);
    st->next++;
    return STRAND_OK;
}
