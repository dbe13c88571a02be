/* The shared driver of the nonlinear recurrent mixers (rnn, lstm, gru, ornn).
 *
 * Every one of them is, with G gate blocks of width C (= model.d_model, the hidden width) and a
 * state of S = state_blocks * C values per position (h, or [h c] for the LSTM):
 *   xp (T,GC) = in U^T + b                       one GEMM over all local rows
 *   rec_t (GC) = W h_{t-1} (+ b_h)               gemv, position by position
 *   state_t = cell(xp_t, rec_t, state_{t-1})     the mixer's own cell (saves K C values per row)
 *   out (T,C) = h Wo^T                           one GEMM
 * The driver owns U, b, W (unless the cell computes W from other parameters: ornn), b_h (GRU), Wo,
 * the memory plan, the passes, step mode and the carried state; a mixer file gives its cell.
 *
 * Across shards: positions are in global order over the SP group. Each local piece (1, or 2 in
 * zigzag) takes its initial state from the piece that ends just before it (another rank: MPI_Recv;
 * its own other piece: a copy), or zeros / the carried state for the window's first piece, and
 * hands its last state on with MPI_Isend (completed at the start of the block's next forward,
 * before the send buffer is reused). Backward runs the other way: the gradient of a piece's
 * initial state goes back to the previous piece's owner, which adds it to the gradient of its last
 * state before its own BPTT. Local pieces run in global order (forward) and reverse (backward), so
 * with non-blocking sends the blocks of a model pipeline as a wavefront over the ranks.
 *
 * Carried state (carry = true): the window's last state goes to the rank holding position 0
 * (received lazily: the request completes at the next forward, carry_save/load or reset, so the
 * wavefront is not broken) and starts the next window. No gradient flows into it (truncated BPTT
 * at window boundaries). Every rank counts S carried values; only that rank's are used. */
#ifndef STRAND_RECURRENT_H
#define STRAND_RECURRENT_H

#include "strand/model.h"

#include <stdint.h>

enum strand_recurrent_activation { REC_ACT_TANH = 0, REC_ACT_IDENTITY = 1, REC_ACT_MODRELU = 2 };

typedef struct strand_recurrent strand_recurrent;

typedef struct {
    int gates;        /* G */
    int state_blocks; /* S / C: 1 (h) or 2 (h, c); h is always the first C values */
    int saved_blocks; /* K: values saved per position beyond the state, in units of C */
    int hidden_bias;  /* b_h (GC) inside rec_t (GRU's b_hr, b_hz, b_hn) */
    int custom_w;     /* W (GC,C) is computed by prepare from the cell's own parameters */
    /* next (S) = cell(xp (GC), rec (GC), prev (S)); saved (KC) for backward. */
    void (*cell_forward)(const strand_recurrent *r, const real_t *params, const real_t *xp, const real_t *rec,
                         const real_t *prev, real_t *next, real_t *saved);
    /* Given dnext (S, d loss / d state_t, read only), write dxp (GC) = d/d xp_t, drec (GC) = d/d rec_t,
     * dprev (S) = d/d state_{t-1} except through rec (the driver adds W^T drec); dparams += the
     * cell's own parameters' gradients. */
    void (*cell_backward)(const strand_recurrent *r, real_t *dparams, const real_t *params,
                          const real_t *prev, const real_t *next, const real_t *saved, const real_t *dnext,
                          real_t *dxp, real_t *drec, real_t *dprev);
    /* custom_w: w (GC,C) from params; work (2 C C doubles) and ipiv (C) are scratch. */
    int (*prepare)(const strand_recurrent *r, const real_t *params, real_t *w, double *work, int *ipiv);
    /* custom_w: dparams += d/d params given dw (GC,C) = d loss / d W and the forward's w. */
    void (*finish_backward)(const strand_recurrent *r, real_t *dparams, const real_t *params, const real_t *w,
                            const real_t *dw);
    /* strand probe jacobian (NULL: the cell cannot be probed). jac (S,S) row-major, in double:
     * d state_t / d state_{t-1} at one position (through W and directly), from what forward kept
     * there: prev, next, saved and the recurrent matrix w (GC,C) it used. */
    void (*step_jacobian)(const strand_recurrent *r, const real_t *params, const real_t *w,
                          const real_t *prev, const real_t *next, const real_t *saved, double *jac);
    /* The per-step factor the classic analysis predicts at this position (its mean over the span is
     * reported; times the spectral radius of W when decay_times_radius), and its formula. */
    double (*step_decay)(const strand_recurrent *r, const real_t *params, const real_t *next,
                         const real_t *saved);
    int decay_times_radius;
    const char *decay_formula;
} strand_recurrent_cell;

struct strand_recurrent {
    const strand_recurrent_cell *cell;
    const char *name;
    int C, G, S, K;
    int carry;
    /* the cell's options */
    int activation;
    double spectral_radius;
    /* initial biases: of the gate that keeps the state (the LSTM's forget gate, the GRU's update
     * gate) and of the LSTM's input gate */
    double keep_bias, input_bias;
    /* parameters: indices into the table and offsets into the flat array (-1 / 0 when absent) */
    int u, b, w, bh, wo, extra[2];
    int64_t u_off, b_off, w_off, bh_off, wo_off, extra_off[2];
    /* this rank's pieces and their neighbours along the window (-1: none) */
    MPI_Comm comm;
    int rank, first_owner, last_owner;
    int n_pieces;
    int64_t T, row0[STRAND_MAX_PIECES], len[STRAND_MAX_PIECES];
    int prev_rank[STRAND_MAX_PIECES], next_rank[STRAND_MAX_PIECES];
    /* saved for backward (shared under recompute) */
    real_t *xp, *states, *saved, *h0, *w_eff; /* (T,GC), (T,S), (T,KC), (pieces,S), (GC,C) */
    /* scratch (shared) */
    real_t *rec, *dh, *dxp, *drec, *dstate, *dw_eff; /* (GC), (T,C), (T,GC), (T,GC), (2S), (GC,C) */
    double *work;
    int *ipiv;
    /* per block: send buffers (pieces,S) each, carried state (S), requests */
    real_t *send, *dsend, *carry_state;
    MPI_Request send_req[STRAND_MAX_PIECES], dsend_req[STRAND_MAX_PIECES], carry_req;
};

/* Create the driver state for mixer (mixer->state = it) and declare U, b, W (unless custom_w), b_h,
 * Wo; then the mixer declares its own parameters (extra). b_init: STRAND_INIT_ZEROS or
 * STRAND_INIT_BY_LAYER; W is STRAND_INIT_BY_LAYER. */
int strand_recurrent_create(strand_mixer *mixer, const strand_config *config, strand_param_table *table,
                            const char *layer, const strand_recurrent_cell *cell, const char *name, int carry,
                            int b_init);
/* The ops every recurrent mixer uses as they are. */
int strand_recurrent_plan(strand_mixer *mixer, const strand_shard *shard, strand_plan *plan);
int strand_recurrent_forward(strand_mixer *mixer, real_t *out, const real_t *in, const real_t *params,
                             const strand_shard *shard);
int strand_recurrent_backward(strand_mixer *mixer, real_t *din, real_t *dparams, const real_t *dout,
                              const real_t *in, const real_t *params, const strand_shard *shard);
void strand_recurrent_destroy(strand_mixer *mixer);
int strand_recurrent_step_init(const strand_mixer *mixer, const real_t *params, int64_t max_len,
                               void **state);
int strand_recurrent_step(const strand_mixer *mixer, void *state, const real_t *params, const real_t *in,
                          real_t *out, int64_t position);
void strand_recurrent_step_free(void *state);
int64_t strand_recurrent_carry_count(const strand_mixer *mixer);
void strand_recurrent_carry_save(const strand_mixer *mixer, real_t *out);
void strand_recurrent_carry_load(strand_mixer *mixer, const real_t *in);
void strand_recurrent_reset(strand_mixer *mixer);
/* Every recurrent mixer's options struct starts with STRAND_RECURRENT_OPTIONS (its `carry` key),
 * so the shared ops read it there. */
#define STRAND_RECURRENT_OPTIONS int carry
unsigned strand_recurrent_capabilities(const void *options);
/* The `carry` key row of section SECTION in the options struct TYPE; WHAT names the state. */
#define STRAND_RECURRENT_CARRY_KEY(SECTION, TYPE, WHAT)                                                      \
    {                                                                                                        \
        .section = SECTION, .name = "carry", .type = STRAND_KEY_BOOL, STRAND_KEY_FIELD(TYPE, carry),         \
        .def = "false",                                                                                      \
        .help = "Carry the last " WHAT " of a window into the next (no gradient across windows)."            \
    }
/* The ops every recurrent mixer takes as they are (inside its strand_mixer_ops initialiser). */
#define STRAND_RECURRENT_PASSES                                                                              \
    .step_cost = "O(C^2)", .capabilities = strand_recurrent_capabilities, .plan = strand_recurrent_plan,     \
    .forward = strand_recurrent_forward, .backward = strand_recurrent_backward,                              \
    .destroy = strand_recurrent_destroy, .step_init = strand_recurrent_step_init,                            \
    .step = strand_recurrent_step, .step_free = strand_recurrent_step_free,                                  \
    .carry_count = strand_recurrent_carry_count, .carry_save = strand_recurrent_carry_save,                  \
    .carry_load = strand_recurrent_carry_load, .reset = strand_recurrent_reset

real_t strand_recurrent_sigmoid(real_t x);
/* Forward operations over T rows with G gate blocks: the input projection (2 T C GC), the
 * recurrence (2 T GC C) and the output projection (2 T C C); the cells' pointwise work is left out. */
double strand_recurrent_flops(int G, int C, int64_t T);
/* A mixer's flops op for G gate blocks. */
#define STRAND_RECURRENT_FLOPS(NAME, G)                                                                      \
    static double NAME(const void *options, int C, int64_t T) {                                              \
        (void)options;                                                                                       \
        return strand_recurrent_flops((G), C, T);                                                            \
    }                                                                                                        \
    static void NAME##_cost(const void *options, const strand_cost_shape *shape, strand_cost *cost) {        \
        (void)options;                                                                                       \
        strand_recurrent_cost((G), shape, cost);                                                             \
    }
/* Work of forward + backward for strand plan: the projections as GEMMs, the recurrence one
 * position at a time (matrix-vector), waiting for every rank before this one (the wavefront). */
void strand_recurrent_cost(int G, const strand_cost_shape *shape, strand_cost *cost);

/* The Elman cell of rnn and ornn: h = phi(xp + rec) with r->activation (modReLU's b_mod (C) at
 * r->extra_off[1]); saved: the pre-activation (C). */
void strand_recurrent_elman_forward(const strand_recurrent *r, const real_t *params, const real_t *xp,
                                    const real_t *rec, const real_t *prev, real_t *next, real_t *saved);
void strand_recurrent_elman_backward(const strand_recurrent *r, real_t *dparams, const real_t *params,
                                     const real_t *prev, const real_t *next, const real_t *saved,
                                     const real_t *dnext, real_t *dxp, real_t *drec, real_t *dprev);

/* ---- strand probe jacobian (recurrent_probe.c) ----
 * The Elman cell's step Jacobian diag(phi'(a)) W, and its per-step factors: the mean |phi'| (rnn:
 * times rho(W)) and the largest |phi'| (ornn: ||J||_2 = max |phi'| when W is orthogonal). */
void strand_recurrent_elman_jacobian(const strand_recurrent *r, const real_t *params, const real_t *w,
                                     const real_t *prev, const real_t *next, const real_t *saved,
                                     double *jac);
double strand_recurrent_elman_mean_slope(const strand_recurrent *r, const real_t *params, const real_t *next,
                                         const real_t *saved);
double strand_recurrent_elman_max_slope(const strand_recurrent *r, const real_t *params, const real_t *next,
                                        const real_t *saved);
/* Is this mixer one of the driver's (rnn, lstm, gru, ornn), with a step Jacobian? */
int strand_recurrent_probeable(const strand_mixer *mixer);
/* The mean over the C channels of saved[offset .. offset + C): a gate's mean at one step (the
 * forget gate of lstm, the update gate of gru), for their step_decay. */
double strand_recurrent_saved_mean(const strand_recurrent *r, const real_t *saved, int offset);
/* The span Jacobian of the state rows and columns [first, first + n) (n = S, first = 0: the whole
 * state), d state_{t+k} / d state_t = J_{t+k} ... J_{t+1} at the states of the last forward over
 * shard (0 <= t, t + k < window, k >= 1). Each rank multiplies the steps of each of its pieces;
 * SP rank 0 gathers the partial products and multiplies them in global order into jac (n,n),
 * row-major (other ranks: NULL). decay (2) on every rank: the sum over the span of the cell's
 * step_decay and the count. Collective over the SP group; the status is agreed. */
int strand_recurrent_span_jacobian(const strand_mixer *mixer, const real_t *params, const strand_shard *shard,
                                   int64_t t, int64_t k, int first, int n, double *jac, double decay[2]);

/* Row-major W (n,n) = rho * G / spectral_radius(G), G_ij ~ N(0,1) from (seed, param index, i n + j);
 * the radius from LAPACK dgeev (exact); if it fails, the circular law's sqrt(n). */
void strand_recurrent_init_radius(real_t *w, int n, double rho, uint64_t seed, int param);
/* Uniform(-1/sqrt(n), 1/sqrt(n)) (PyTorch's LSTM/GRU init), rows x n. */
void strand_recurrent_init_uniform(real_t *w, int64_t rows, int n, uint64_t seed, int param);

#endif
