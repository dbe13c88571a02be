/* The shared driver of the recurrent mixers: projections, the position-by-position recurrence over
 * this rank's pieces, the state passed between pieces across the SP group, BPTT, step mode and the
 * carried state (see recurrent.h). */
#include "model/mixers/recurrent.h"

#include "core/rng.h"
#include "kernels/layers.h"
#include "parallel/tags.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#ifdef STRAND_REAL_DOUBLE
#define R_GEMM cblas_dgemm
#define R_GEMV cblas_dgemv
#define R_GER cblas_dger
#define R_EXP exp
#else
#define R_GEMM cblas_sgemm
#define R_GEMV cblas_sgemv
#define R_GER cblas_sger
#define R_EXP expf
#endif

/* LAPACK (OpenBLAS): eigenvalues of a real general matrix. Trailing lengths: gfortran ABI. */
void dgeev_(const char *jobvl, const char *jobvr, const int *n, double *a, const int *lda, double *wr,
            double *wi, double *vl, const int *ldvl, double *vr, const int *ldvr, double *work,
            const int *lwork, int *info, size_t, size_t);

real_t strand_recurrent_sigmoid(real_t x) {
    /* the branch keeps exp's argument non-positive: no overflow for large |x| */
    if (x >= 0) return (real_t)1 / ((real_t)1 + R_EXP(-x));
    const real_t e = R_EXP(x);
    return e / ((real_t)1 + e);
}

double strand_recurrent_flops(int G, int C, int64_t T) {
    return 2.0 * (double)T * C * C * (2.0 * G + 1.0);
}

void strand_recurrent_cost(int G, const strand_cost_shape *shape, strand_cost *cost) {
    const double T = (double)shape->T, C = shape->C;
    strand_cost_linear(cost, T, C, G * C);
    strand_cost_linear(cost, T, C, C);
    cost->gemv_flops += 3 * 2.0 * T * G * C * C;
    cost->transcendentals += 2 * T * G * C; /* the gates' sigmoid and tanh, and their gradients */
    cost->serial_ranks = shape->sp - 1;
    if (shape->sp > 1) cost->p2p_messages += 2;
}

unsigned strand_recurrent_capabilities(const void *options) {
    const int carry = *(const int *)options; /* STRAND_RECURRENT_OPTIONS comes first */
    return STRAND_MIXER_STEP | (carry ? STRAND_MIXER_CARRIES_STATE : 0);
}

int strand_recurrent_create(strand_mixer *mixer, const strand_config *config, strand_param_table *table,
                            const char *layer, const strand_recurrent_cell *cell, const char *name, int carry,
                            int b_init) {
    strand_recurrent *r = strand_alloc(sizeof *r, "recurrent mixer");
    if (!r) return STRAND_ERR_NOMEM;
    mixer->state = r;
    const int C = mixer->C, G = cell->gates;
    r->cell = cell;
    r->name = name;
    r->C = C, r->G = G, r->S = cell->state_blocks * C, r->K = cell->saved_blocks * C;
    r->carry = carry;
    r->w = r->bh = r->extra[0] = r->extra[1] = -1;
    r->comm = MPI_COMM_NULL;
    for (int p = 0; p < STRAND_MAX_PIECES; p++)
        r->send_req[p] = r->dsend_req[p] = MPI_REQUEST_NULL;
    r->carry_req = MPI_REQUEST_NULL;
    const double std = config->init_std;
    /* Wo feeds the residual stream: scaled down with depth like attn's output projection. */
    const double out_std = strand_model_residual_std(config);
    const int64_t GC = (int64_t)G * C;
    STRAND_CALL(strand_params_declare(table, layer, "u", GC, C, STRAND_INIT_NORMAL, std, 1, &r->u));
    STRAND_CALL(strand_params_declare(table, layer, "b", GC, 0, b_init, 0, 0, &r->b));
    if (!cell->custom_w)
        STRAND_CALL(strand_params_declare(table, layer, "w", GC, C, STRAND_INIT_BY_LAYER, 0, 1, &r->w));
    if (cell->hidden_bias)
        STRAND_CALL(strand_params_declare(table, layer, "b_h", GC, 0, STRAND_INIT_ZEROS, 0, 0, &r->bh));
    STRAND_CALL(strand_params_declare(table, layer, "wo", C, C, STRAND_INIT_NORMAL, out_std, 1, &r->wo));
    r->u_off = table->items[r->u].offset;
    r->b_off = table->items[r->b].offset;
    r->w_off = r->w >= 0 ? table->items[r->w].offset : 0;
    r->bh_off = r->bh >= 0 ? table->items[r->bh].offset : 0;
    r->wo_off = table->items[r->wo].offset;
    return STRAND_OK;
}

/* Which piece of the window (over every rank's pieces) starts at `position`: its owner, -1 none. */
static int owner_of(const strand_shard *shard, int64_t position, int end) {
    const int P = shard->grid->sp_size;
    for (int q = 0; q < P; q++) {
        int64_t starts[STRAND_MAX_PIECES], lengths[STRAND_MAX_PIECES];
        const int n = strand_shard_pieces(shard, q, starts, lengths);
        for (int k = 0; k < n; k++)
            if ((end ? starts[k] + lengths[k] : starts[k]) == position && lengths[k] > 0) return q;
    }
    return -1;
}

/* Neighbours from the layout alone (no communication: the dry run plans grids that do not
 * exist). Activations and scratch are shared between blocks under recompute; the send buffers, the
 * carried state and the requests are each block's own (a send may still be in flight while the
 * next block runs). */
int strand_recurrent_plan(strand_mixer *mixer, const strand_shard *shard, strand_plan *plan) {
    strand_recurrent *r = mixer->state;
    const int64_t T = shard->T, rows = T > 0 ? T : 1, GC = (int64_t)r->G * r->C, C = r->C;
    r->comm = shard->grid->sp_comm;
    r->rank = shard->grid->sp_rank;
    r->T = T;
    r->n_pieces = shard->n_pieces;
    int64_t row = 0;
    for (int p = 0; p < shard->n_pieces; p++) {
        const int64_t start = shard->piece_start[p], len = shard->piece_length[p];
        r->row0[p] = row, r->len[p] = len;
        row += len;
        r->prev_rank[p] = start == 0 ? -1 : owner_of(shard, start, 1);
        r->next_rank[p] = start + len >= shard->window ? -1 : owner_of(shard, start + len, 0);
    }
    r->first_owner = owner_of(shard, 0, 0);
    r->last_owner = owner_of(shard, shard->window, 1);
    const int saved = STRAND_LIFE_SAVED | STRAND_PLAN_SHARED,
              scratch = STRAND_LIFE_SCRATCH | STRAND_PLAN_SHARED;
    STRAND_PLAN_ADD(plan, r->xp, rows * GC, saved, "recurrent input projection");
    STRAND_PLAN_ADD(plan, r->states, rows * r->S, saved, "recurrent states");
    STRAND_PLAN_ADD(plan, r->saved, rows * (r->K > 0 ? r->K : 1), saved, "recurrent gates");
    STRAND_PLAN_ADD(plan, r->h0, STRAND_MAX_PIECES * r->S, saved, "recurrent initial states");
    STRAND_PLAN_ADD(plan, r->rec, GC, scratch, "recurrent scratch");
    STRAND_PLAN_ADD(plan, r->dh, rows * C, scratch, "recurrent gradient scratch");
    STRAND_PLAN_ADD(plan, r->dxp, rows * GC, scratch, "recurrent gradient scratch");
    STRAND_PLAN_ADD(plan, r->drec, rows * GC, scratch, "recurrent gradient scratch");
    STRAND_PLAN_ADD(plan, r->dstate, 2 * r->S, scratch, "recurrent gradient scratch");
    if (r->cell->custom_w) {
        STRAND_PLAN_ADD(plan, r->w_eff, GC * C, saved, "recurrent matrix");
        STRAND_PLAN_ADD(plan, r->dw_eff, GC * C, scratch, "recurrent matrix gradient");
        STRAND_PLAN_ADD(plan, r->work, 2 * C * C, scratch, "recurrent matrix solve");
        STRAND_PLAN_ADD(plan, r->ipiv, C, scratch, "recurrent matrix solve");
    }
    STRAND_PLAN_ADD(plan, r->send, STRAND_MAX_PIECES * r->S, STRAND_LIFE_PERSISTENT, "recurrent state send");
    STRAND_PLAN_ADD(plan, r->dsend, STRAND_MAX_PIECES * r->S, STRAND_LIFE_PERSISTENT, "recurrent state send");
    STRAND_PLAN_ADD(plan, r->carry_state, r->S, STRAND_LIFE_PERSISTENT, "recurrent carried state");
    return STRAND_OK;
}

static int wait_all(MPI_Request *reqs, int n) {
    STRAND_CALL_MPI(MPI_Waitall(n, reqs, MPI_STATUSES_IGNORE));
    return STRAND_OK;
}

/* The carried state arrives lazily (see recurrent.h): complete its receive before it is read or
 * replaced. */
static int carry_complete(strand_recurrent *r) {
    return r->carry_req == MPI_REQUEST_NULL ? STRAND_OK : wait_all(&r->carry_req, 1);
}

static const real_t *recurrent_matrix(const strand_recurrent *r, const real_t *params) {
    return r->cell->custom_w ? r->w_eff : params + r->w_off;
}

/* One position: rec (GC) = W h_prev (+ b_h), then the cell. */
static void position_forward(const strand_recurrent *r, const real_t *params, const real_t *w,
                             const real_t *xp, const real_t *prev, real_t *next, real_t *saved, real_t *rec) {
    const int GC = r->G * r->C, C = r->C;
    if (r->cell->hidden_bias) memcpy(rec, params + r->bh_off, sizeof(real_t) * (size_t)GC);
    R_GEMV(CblasRowMajor, CblasNoTrans, GC, C, 1, w, C, prev, 1, r->cell->hidden_bias ? 1 : 0, rec, 1);
    r->cell->cell_forward(r, params, xp, rec, prev, next, saved);
}

int strand_recurrent_forward(strand_mixer *mixer, real_t *out, const real_t *in, const real_t *params,
                             const strand_shard *shard) {
    strand_recurrent *r = mixer->state;
    const int C = r->C, GC = r->G * r->C, S = r->S, K = r->K;
    const int64_t T = r->T;
    STRAND_ASSERT(T == shard->T);
    /* the previous forward's sends read these buffers */
    STRAND_CALL(wait_all(r->send_req, STRAND_MAX_PIECES));
    STRAND_CALL(carry_complete(r));
    if (r->cell->custom_w) STRAND_CALL(r->cell->prepare(r, params, r->w_eff, r->work, r->ipiv));
    const real_t *w = recurrent_matrix(r, params);
    // xp (T,GC) = in U^T + b
    linear_forward(r->xp, in, params + r->u_off, params + r->b_off, T, C, GC);
    for (int p = 0; p < r->n_pieces; p++) {
        real_t *h0 = r->h0 + (int64_t)p * S;
        if (r->prev_rank[p] < 0) {
            if (r->carry)
                memcpy(h0, r->carry_state, sizeof(real_t) * (size_t)S);
            else
                memset(h0, 0, sizeof(real_t) * (size_t)S);
        } else if (r->prev_rank[p] == r->rank) {
            /* zigzag: the other local piece, already run (local pieces are in global order) */
            STRAND_ASSERT(p > 0);
            memcpy(h0, r->states + (r->row0[p - 1] + r->len[p - 1] - 1) * S, sizeof(real_t) * (size_t)S);
        } else {
            STRAND_CALL_MPI(MPI_Recv(h0, S, STRAND_MPI_REAL, r->prev_rank[p], STRAND_TAG_RECURRENT_STATE,
                                     r->comm, MPI_STATUS_IGNORE));
        }
        const real_t *prev = h0;
        for (int64_t t = r->row0[p]; t < r->row0[p] + r->len[p]; t++) {
            real_t *next = r->states + t * S;
            position_forward(r, params, w, r->xp + t * GC, prev, next, r->saved + t * K, r->rec);
            prev = next;
        }
        real_t *send = r->send + (int64_t)p * S;
        if (r->next_rank[p] >= 0 && r->next_rank[p] != r->rank) {
            memcpy(send, prev, sizeof(real_t) * (size_t)S);
            STRAND_CALL_MPI(MPI_Isend(send, S, STRAND_MPI_REAL, r->next_rank[p], STRAND_TAG_RECURRENT_STATE,
                                      r->comm, &r->send_req[p]));
            strand_comm_add_bytes(S * (int64_t)sizeof(real_t));
        } else if (r->next_rank[p] < 0 && r->carry) {
            /* the window's last state starts the next window, on the rank holding position 0 */
            if (r->first_owner == r->rank) {
                memcpy(r->carry_state, prev, sizeof(real_t) * (size_t)S);
            } else {
                memcpy(send, prev, sizeof(real_t) * (size_t)S);
                STRAND_CALL_MPI(MPI_Isend(send, S, STRAND_MPI_REAL, r->first_owner,
                                          STRAND_TAG_RECURRENT_CARRY, r->comm, &r->send_req[p]));
                strand_comm_add_bytes(S * (int64_t)sizeof(real_t));
            }
        }
    }
    if (r->carry && r->first_owner == r->rank && r->last_owner != r->rank)
        STRAND_CALL_MPI(MPI_Irecv(r->carry_state, S, STRAND_MPI_REAL, r->last_owner,
                                  STRAND_TAG_RECURRENT_CARRY, r->comm, &r->carry_req));
    // out (T,C) = h (T,C; rows of stride S) Wo^T
    if (T > 0)
        R_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, C, C, 1, r->states, S, params + r->wo_off, C,
               0, out, C);
    return STRAND_OK;
}

int strand_recurrent_backward(strand_mixer *mixer, real_t *din, real_t *dparams, const real_t *dout,
                              const real_t *in, const real_t *params, const strand_shard *shard) {
    strand_recurrent *r = mixer->state;
    const int C = r->C, GC = r->G * r->C, S = r->S, K = r->K;
    const int64_t T = r->T;
    STRAND_ASSERT(T == shard->T);
    STRAND_CALL(wait_all(r->dsend_req, STRAND_MAX_PIECES));
    const real_t *w = recurrent_matrix(r, params);
    real_t *dw = r->cell->custom_w ? r->dw_eff : dparams + r->w_off;
    if (r->cell->custom_w) memset(r->dw_eff, 0, sizeof(real_t) * (size_t)GC * (size_t)C);
    if (T > 0) {
        // dh (T,C) = dout (T,C) Wo (C,C); dWo (C,C) += dout^T h
        R_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, C, C, 1, dout, C, params + r->wo_off, C, 0,
               r->dh, C);
        R_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, C, C, (int)T, 1, dout, C, r->states, S, 1,
               dparams + r->wo_off, C);
    }
    real_t *dnext = r->dstate, *dprev = r->dstate + S;
    for (int p = r->n_pieces - 1; p >= 0; p--) {
        /* d loss / d (this piece's last state) from the piece after it */
        if (r->next_rank[p] < 0) {
            memset(dnext, 0, sizeof(real_t) * (size_t)S); /* none past the window (nor into the carry) */
        } else if (r->next_rank[p] == r->rank) {
            STRAND_ASSERT(p + 1 < r->n_pieces);
            memcpy(dnext, r->dsend + (int64_t)(p + 1) * S, sizeof(real_t) * (size_t)S);
        } else {
            STRAND_CALL_MPI(MPI_Recv(dnext, S, STRAND_MPI_REAL, r->next_rank[p], STRAND_TAG_RECURRENT_GRAD,
                                     r->comm, MPI_STATUS_IGNORE));
        }
        const int64_t first = r->row0[p], last = r->row0[p] + r->len[p] - 1;
        const real_t *h0 = r->h0 + (int64_t)p * S;
        for (int64_t t = last; t >= first; t--) {
            for (int c = 0; c < C; c++)
                dnext[c] += r->dh[t * C + c];
            const real_t *prev = t == first ? h0 : r->states + (t - 1) * S;
            real_t *drec = r->drec + t * GC;
            r->cell->cell_backward(r, dparams, params, prev, r->states + t * S, r->saved + t * K, dnext,
                                   r->dxp + t * GC, drec, dprev);
            // dprev[0:C] += W^T drec
            R_GEMV(CblasRowMajor, CblasTrans, GC, C, 1, w, C, drec, 1, 1, dprev, 1);
            real_t *swap = dnext;
            dnext = dprev, dprev = swap;
        }
        /* dnext is now d loss / d h0 of this piece */
        real_t *dsend = r->dsend + (int64_t)p * S;
        memcpy(dsend, dnext, sizeof(real_t) * (size_t)S);
        if (r->prev_rank[p] >= 0 && r->prev_rank[p] != r->rank) {
            STRAND_CALL_MPI(MPI_Isend(dsend, S, STRAND_MPI_REAL, r->prev_rank[p], STRAND_TAG_RECURRENT_GRAD,
                                      r->comm, &r->dsend_req[p]));
            strand_comm_add_bytes(S * (int64_t)sizeof(real_t));
        }
        // dW (GC,C) += drec^T (GC,len) [h0; h_first .. h_{last-1}] (len,C)
        R_GER(CblasRowMajor, GC, C, 1, r->drec + first * GC, 1, h0, 1, dw, C);
        if (last > first)
            R_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, GC, C, (int)(last - first), 1,
                   r->drec + (first + 1) * GC, GC, r->states + first * S, S, 1, dw, C);
    }
    // db_h (GC) += column sums of drec; din, dU, db from dxp
    if (r->cell->hidden_bias) linear_backward(NULL, NULL, dparams + r->bh_off, r->drec, in, NULL, T, C, GC);
    linear_backward(din, dparams + r->u_off, dparams + r->b_off, r->dxp, in, params + r->u_off, T, C, GC);
    if (r->cell->custom_w) r->cell->finish_backward(r, dparams, params, r->w_eff, r->dw_eff);
    return STRAND_OK;
}

void strand_recurrent_destroy(strand_mixer *mixer) {
    strand_recurrent *r = mixer->state;
    if (!r) return;
    /* every send has its receive posted by the same forward or backward on its peer */
    MPI_Waitall(STRAND_MAX_PIECES, r->send_req, MPI_STATUSES_IGNORE);
    MPI_Waitall(STRAND_MAX_PIECES, r->dsend_req, MPI_STATUSES_IGNORE);
    MPI_Wait(&r->carry_req, MPI_STATUS_IGNORE);
    strand_free(r); /* the buffers belong to the model's plan */
    mixer->state = NULL;
}

/* ---- carried state ---- */

int64_t strand_recurrent_carry_count(const strand_mixer *mixer) {
    const strand_recurrent *r = mixer->state;
    return r->carry ? r->S : 0;
}

void strand_recurrent_carry_save(const strand_mixer *mixer, real_t *out) {
    strand_recurrent *r = mixer->state;
    if (!r->carry) return;
    carry_complete(r);
    memcpy(out, r->carry_state, sizeof(real_t) * (size_t)r->S);
}

void strand_recurrent_carry_load(strand_mixer *mixer, const real_t *in) {
    strand_recurrent *r = mixer->state;
    if (!r->carry) return;
    carry_complete(r);
    memcpy(r->carry_state, in, sizeof(real_t) * (size_t)r->S);
}

void strand_recurrent_reset(strand_mixer *mixer) {
    strand_recurrent *r = mixer->state;
    if (!r || !r->carry || !r->carry_state) return;
    carry_complete(r);
    memset(r->carry_state, 0, sizeof(real_t) * (size_t)r->S);
}

/* ---- incremental decoding ----
 * The state (S values) and one position's scratch: O(G C^2) per token, O(G C) memory whatever the
 * length (plus W (GC,C) for a cell that computes it, once, in step_init). */

typedef struct {
    int64_t next, max_len;
    real_t *state, *next_state, *xp, *rec, *saved, *w;
    double *work;
    int *ipiv;
} rec_step_state;

void strand_recurrent_step_free(void *state) {
    rec_step_state *st = state;
    if (!st) return;
    real_t *bufs[] = {st->state, st->next_state, st->xp, st->rec, st->saved, st->w};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        strand_free(bufs[i]);
    strand_free(st->work);
    strand_free(st->ipiv);
    strand_free(st);
}

int strand_recurrent_step_init(const strand_mixer *mixer, const real_t *params, int64_t max_len,
                               void **state) {
    const strand_recurrent *r = mixer->state;
    rec_step_state *st = strand_alloc(sizeof *st, "recurrent step state");
    if (!st) return STRAND_ERR_NOMEM;
    *state = st;
    const int64_t GC = (int64_t)r->G * r->C, C = r->C;
    st->max_len = max_len;
    STRAND_ALLOC(st->state, r->S, "recurrent step state");
    STRAND_ALLOC(st->next_state, r->S, "recurrent step state");
    STRAND_ALLOC(st->xp, GC, "recurrent step scratch");
    STRAND_ALLOC(st->rec, GC, "recurrent step scratch");
    STRAND_ALLOC(st->saved, r->K + 1, "recurrent step scratch");
    if (r->cell->custom_w) {
        STRAND_ALLOC(st->w, GC * C, "recurrent step matrix");
        STRAND_ALLOC(st->work, 2 * C * C, "recurrent step matrix");
        STRAND_ALLOC(st->ipiv, C, "recurrent step matrix");
        STRAND_CALL(r->cell->prepare(r, params, st->w, st->work, st->ipiv));
    }
    return STRAND_OK;
}

int strand_recurrent_step(const strand_mixer *mixer, void *state, const real_t *params, const real_t *in,
                          real_t *out, int64_t position) {
    const strand_recurrent *r = mixer->state;
    rec_step_state *st = state;
    const int C = r->C, GC = r->G * r->C;
    if (position != st->next || position >= st->max_len)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s step: position %lld, expected %lld (< %lld)", r->name,
                    (long long)position, (long long)st->next, (long long)st->max_len);
    // xp (1,GC) = in U^T + b; the same cell as forward from the kept state
    linear_forward(st->xp, in, params + r->u_off, params + r->b_off, 1, C, GC);
    const real_t *w = r->cell->custom_w ? st->w : params + r->w_off;
    position_forward(r, params, w, st->xp, st->state, st->next_state, st->saved, st->rec);
    real_t *swap = st->state;
    st->state = st->next_state, st->next_state = swap;
    // out (1,C) = h Wo^T
    linear_forward(out, st->state, params + r->wo_off, NULL, 1, C, C);
    st->next++;
    return STRAND_OK;
}

/* ---- initialisation ---- */

void strand_recurrent_init_radius(real_t *w, int n, double rho, uint64_t seed, int param) {
    const int64_t nn = (int64_t)n * n;
    double *g = strand_alloc(sizeof(double) * (size_t)(3 * nn + 6 * n + 1), "rnn init");
    double radius = sqrt((double)n);
    for (int64_t k = 0; k < nn; k++) {
        const double v = strand_rng_normal(seed, STRAND_STREAM_INIT, (uint64_t)param, (uint64_t)k);
        w[k] = (real_t)v;
        if (g) g[k] = v;
    }
    if (g) {
        /* dgeev overwrites its input: g holds a copy; transposition does not change eigenvalues */
        double *wr = g + nn, *wi = wr + n, *work = wi + n;
        int lwork = 4 * n + (int)nn, info = 0, ld = 1;
        dgeev_("N", "N", &n, g, &n, wr, wi, NULL, &ld, NULL, &ld, work, &lwork, &info, 1, 1);
        if (info == 0) {
            double m = 0;
            for (int i = 0; i < n; i++)
                m = fmax(m, hypot(wr[i], wi[i]));
            if (m > 0) radius = m;
        }
        strand_free(g);
    }
    for (int64_t k = 0; k < nn; k++)
        w[k] = (real_t)(rho * (double)w[k] / radius);
}

void strand_recurrent_init_uniform(real_t *w, int64_t rows, int n, uint64_t seed, int param) {
    const double bound = 1.0 / sqrt((double)n);
    for (int64_t k = 0; k < rows * n; k++)
        w[k] = (real_t)(bound *
                        (2 * strand_rng_uniform(seed, STRAND_STREAM_INIT, (uint64_t)param, (uint64_t)k) - 1));
}

/* ---- the Elman cell (rnn, ornn): h = phi(a), a = xp + rec; saved: a (C) ----
 * modReLU: phi(a) = sign(a) relu(|a| + b_mod), b_mod (C) at extra_off[1]. */

void strand_recurrent_elman_forward(const strand_recurrent *r, const real_t *params, const real_t *xp,
                                    const real_t *rec, const real_t *prev, real_t *next, real_t *saved) {
    (void)prev;
    const int C = r->C;
    const real_t *b_mod = r->activation == REC_ACT_MODRELU ? params + r->extra_off[1] : NULL;
    for (int c = 0; c < C; c++) {
        const real_t a = xp[c] + rec[c];
        saved[c] = a;
        if (r->activation == REC_ACT_TANH) {
            next[c] = (real_t)tanh(a);
        } else if (r->activation == REC_ACT_MODRELU) {
            const real_t m = (a < 0 ? -a : a) + b_mod[c];
            next[c] = m > 0 ? (a > 0 ? m : a < 0 ? -m : 0) : 0;
        } else {
            next[c] = a;
        }
    }
}

void strand_recurrent_elman_backward(const strand_recurrent *r, real_t *dparams, const real_t *params,
                                     const real_t *prev, const real_t *next, const real_t *saved,
                                     const real_t *dnext, real_t *dxp, real_t *drec, real_t *dprev) {
    (void)prev;
    const int C = r->C;
    const real_t *b_mod = r->activation == REC_ACT_MODRELU ? params + r->extra_off[1] : NULL;
    real_t *db_mod = r->activation == REC_ACT_MODRELU ? dparams + r->extra_off[1] : NULL;
    for (int c = 0; c < C; c++) {
        const real_t dh = dnext[c], a = saved[c];
        real_t da = dh;
        if (r->activation == REC_ACT_TANH) {
            da = dh * (1 - next[c] * next[c]);
        } else if (r->activation == REC_ACT_MODRELU) {
            /* where |a| + b > 0: phi = a + sign(a) b, so phi' = 1 and d phi / d b = sign(a) */
            const real_t sign = a > 0 ? 1 : a < 0 ? -1 : 0;
            const int on = (a < 0 ? -a : a) + b_mod[c] > 0;
            da = on ? dh : 0;
            if (on) db_mod[c] += dh * sign;
        }
        dxp[c] = drec[c] = da;
        dprev[c] = 0; /* only through W */
    }
}
