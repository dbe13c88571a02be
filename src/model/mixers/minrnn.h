/* The shared driver of the minimal RNNs mingru and minlstm (Feng et al. 2024, "Were RNNs all we
 * needed?"): gates from the block input only, so the recurrence is linear and runs as a scan.
 *
 * With G gate blocks of width C (= model.d_model, the hidden width; the last block is h~):
 *   xp (T,GC) = in W^T + b_w                      one GEMM over all local rows
 *   (a_t, b_t) = gates(xp_t)                      the mixer's own gates (C each)
 *   h_t = a_t h_{t-1} + b_t                       elementwise, a distributed scan (parallel/scan.h)
 *   out (T,C) = h Wo^T                            one GEMM (Wo's init scaled with depth)
 * mingru: a = 1 - z, b = z h~; minlstm: a = f / (f + i), b = i / (f + i) h~.
 *
 * Forward: each local piece is scanned from h = 0 in place (h holds b first), its summary
 * (A = prod a, B = its last h) goes to strand_scan_exchange FORWARD (initial: the carried state),
 * and every piece whose entering state h_in is not zero is fixed up, h_t += P_t h_in with P_t the
 * running product of a from the piece's start (a is saved: one multiply per value, in double).
 *
 * Backward: the adjoint g_t = d loss / d h_t = dh_t + a_{t+1} g_{t+1} runs in reverse; what crosses
 * a piece boundary backward is u_s = a_s g_s at the piece's first position s (u obeys
 * u_t = a_t u_{t+1} + a_t dh_t: the same scan, reversed). Each piece runs its reverse pass from a
 * zero incoming value, its summary (A = prod a, B = a_s g_s) goes to strand_scan_exchange BACKWARD,
 * and the incoming value `in` is folded in afterwards: g_t += (prod_{t<u<=e} a_u) in, e the piece's
 * last position (the fix-up, like the forward's; no second reverse pass). Then the gates turn
 * (d a_t = g_t h_{t-1}, d b_t = g_t) into d xp_t, and one GEMM gives din and dW.
 *
 * Saved per position: xp (GC), a (C), h (C); b is never stored (backward does not need it).
 * Carried state (<name>.carry): the window's final h (strand_scan_exchange's window_final, on the
 * rank holding position 0) starts the next window; no gradient flows into it (truncated BPTT at
 * window boundaries). Every rank counts C carried values; only that rank's are used.
 * Step mode: h (C) and one position's scratch, O(G C^2) per token. */
#ifndef STRAND_MINRNN_H
#define STRAND_MINRNN_H

#include "parallel/scan.h"
#include "strand/model.h"

#include <stdint.h>

enum { MINRNN_MAX_GATES = 4 };

typedef struct {
    int gates; /* G: blocks of C in xp, the last one h~ */
    /* a, b (C) of one position from its projection xp (GC). */
    void (*forward)(const real_t *xp, real_t *a, real_t *b, int C);
    /* dxp (GC) = d loss / d xp of one position, given g (C) = d loss / d h_t (so d loss / d a_t =
     * g h_{t-1} and d loss / d b_t = g), the forward's xp and h_{t-1} (C). */
    void (*backward)(const real_t *xp, const real_t *hprev, const real_t *g, real_t *dxp, int C);
} strand_minrnn_gates;

typedef struct {
    const strand_minrnn_gates *gates;
    const char *name;
    int C, G, carry;
    double bias_init[MINRNN_MAX_GATES]; /* of each gate block of b_w */
    int w, b, wo;                       /* parameter indices */
    int64_t w_off, b_off, wo_off;
    int n_pieces;
    int64_t T, row0[STRAND_MAX_PIECES], len[STRAND_MAX_PIECES];
    strand_scan scan;
    /* saved (shared under recompute): (T,GC), (T,C), (T,C), (pieces,C) entering states */
    real_t *xp, *a, *h, *h0;
    /* scratch (shared): the adjoint g (T,C), dxp (T,GC); work (9C doubles): summaries, entering
     * states, running products, the window's final state, the initial state */
    real_t *g, *dxp;
    double *work;
    real_t *carry_state; /* (C), persistent */
} strand_minrnn;

/* Create the driver state (mixer->state) and declare w (GC,C), b_w (GC, bias_init[k] on gate
 * block k) and wo (C,C). */
int strand_minrnn_create(strand_mixer *mixer, const strand_config *config, strand_param_table *table,
                         const char *layer, const strand_minrnn_gates *gates, const char *name, int carry,
                         const double *bias_init);
unsigned strand_minrnn_capabilities(int carry);
/* Forward operations over T rows: the projections 2 T C (G + 1) C plus the scan's 3 T C. */
double strand_minrnn_flops(int G, int C, int64_t T);

int strand_minrnn_plan(strand_mixer *mixer, const strand_shard *shard, strand_plan *plan);
int strand_minrnn_setup(strand_mixer *mixer, const strand_shard *shard);
void strand_minrnn_init_params(strand_mixer *mixer, real_t *params, uint64_t seed);
int strand_minrnn_forward(strand_mixer *mixer, real_t *out, const real_t *in, const real_t *params,
                          const strand_shard *shard);
int strand_minrnn_backward(strand_mixer *mixer, real_t *din, real_t *dparams, const real_t *dout,
                           const real_t *in, const real_t *params, const strand_shard *shard);
void strand_minrnn_destroy(strand_mixer *mixer);
int strand_minrnn_step_init(const strand_mixer *mixer, const real_t *params, int64_t max_len, void **state);
int strand_minrnn_step(const strand_mixer *mixer, void *state, const real_t *params, const real_t *in,
                       real_t *out, int64_t position);
void strand_minrnn_step_free(void *state);
int64_t strand_minrnn_carry_count(const strand_mixer *mixer);
void strand_minrnn_carry_save(const strand_mixer *mixer, real_t *out);
void strand_minrnn_carry_load(strand_mixer *mixer, const real_t *in);
void strand_minrnn_reset(strand_mixer *mixer);

/* The ops every minimal RNN takes as they are (inside its strand_mixer_ops initialiser). */
#define STRAND_MINRNN_PASSES                                                                                 \
    .forward_cost = "O(L C^2) (the scan: O(L C) locally, 2 C values per piece across the ranks)",            \
    .step_cost = "O(C^2)", .plan = strand_minrnn_plan, .setup = strand_minrnn_setup,                         \
    .init_params = strand_minrnn_init_params, .forward = strand_minrnn_forward,                              \
    .backward = strand_minrnn_backward, .destroy = strand_minrnn_destroy,                                    \
    .step_init = strand_minrnn_step_init, .step = strand_minrnn_step, .step_free = strand_minrnn_step_free,  \
    .carry_count = strand_minrnn_carry_count, .carry_save = strand_minrnn_carry_save,                        \
    .carry_load = strand_minrnn_carry_load, .reset = strand_minrnn_reset

#endif
