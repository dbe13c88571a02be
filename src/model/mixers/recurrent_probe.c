/* strand probe jacobian on the recurrent driver: the step Jacobians J_j = d state_j / d state_{j-1}
 * at the states the last forward kept, multiplied along a span of positions (see recurrent.h).
 *
 * Distribution. The span [t+1, t+k] crosses pieces of the window, which live on different ranks
 * (and, in zigzag, on the same rank but far apart). Each piece's part of the span is a run of
 * consecutive positions whose Jacobians the piece's owner multiplies alone: P = J_hi ... J_lo.
 * SP rank 0 gathers every partial product with its first position and multiplies them in global
 * order, later ones on the left (matrix products do not commute). All in double. */
#include "model/mixers/recurrent.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <string.h>

/* |phi'(a_c)| of the Elman cell at channel c, from the saved pre-activation a and the output. */
static double elman_slope(const strand_recurrent *r, const real_t *params, const real_t *next,
                          const real_t *saved, int c) {
    if (r->activation == REC_ACT_TANH) return 1.0 - (double)next[c] * (double)next[c];
    if (r->activation == REC_ACT_MODRELU) {
        /* phi = a + sign(a) b where |a| + b > 0, else 0: phi' is 1 or 0 (as in backward) */
        const double a = (double)saved[c];
        return fabs(a) + (double)params[r->extra_off[1] + c] > 0 ? 1.0 : 0.0;
    }
    return 1.0;
}

// jac (C,C) = diag(phi'(a)) W
void strand_recurrent_elman_jacobian(const strand_recurrent *r, const real_t *params, const real_t *w,
                                     const real_t *prev, const real_t *next, const real_t *saved,
                                     double *jac) {
    (void)prev;
    const int C = r->C;
    for (int i = 0; i < C; i++) {
        const double s = elman_slope(r, params, next, saved, i);
        for (int j = 0; j < C; j++)
            jac[(int64_t)i * C + j] = s * (double)w[(int64_t)i * C + j];
    }
}

double strand_recurrent_elman_mean_slope(const strand_recurrent *r, const real_t *params, const real_t *next,
                                         const real_t *saved) {
    double sum = 0;
    for (int c = 0; c < r->C; c++)
        sum += elman_slope(r, params, next, saved, c);
    return sum / r->C;
}

double strand_recurrent_elman_max_slope(const strand_recurrent *r, const real_t *params, const real_t *next,
                                        const real_t *saved) {
    double m = 0;
    for (int c = 0; c < r->C; c++)
        m = fmax(m, elman_slope(r, params, next, saved, c));
    return m;
}

int strand_recurrent_probeable(const strand_mixer *mixer) {
    /* the driver's mixers are exactly those whose forward is the driver's */
    if (!mixer->ops || mixer->ops->forward != strand_recurrent_forward || !mixer->state) return 0;
    const strand_recurrent *r = mixer->state;
    return r->cell->step_jacobian != NULL;
}

/* This rank's partial products: for each local piece that holds part of the span, P (n,n) =
 * J_hi ... J_lo (the sub-block [first, first + n) of each step's S x S Jacobian). Returns the
 * number of them; their first positions in lo_out, the matrices in products (pieces, n, n). */
static int local_products(const strand_recurrent *r, const real_t *params, const strand_shard *shard,
                          int64_t t, int64_t k, int first, int n, double *step, double *tmp, double *products,
                          double *lo_out, double decay[2]) {
    const int S = r->S, K = r->K;
    const real_t *w = r->cell->custom_w ? r->w_eff : params + r->w_off;
    const int64_t nn = (int64_t)n * n;
    int count = 0;
    for (int p = 0; p < r->n_pieces; p++) {
        const int64_t start = shard->piece_start[p], len = r->len[p];
        const int64_t lo = start > t + 1 ? start : t + 1;
        const int64_t hi = start + len - 1 < t + k ? start + len - 1 : t + k;
        if (lo > hi) continue;
        double *acc = products + count * nn;
        for (int64_t j = lo; j <= hi; j++) {
            const int64_t row = r->row0[p] + (j - start);
            const real_t *prev = j == start ? r->h0 + (int64_t)p * S : r->states + (row - 1) * S;
            const real_t *next = r->states + row * S, *saved = r->saved + row * K;
            r->cell->step_jacobian(r, params, w, prev, next, saved, step);
            decay[0] += r->cell->step_decay(r, params, next, saved);
            decay[1] += 1;
            /* the sub-block, contiguous, into tmp; then acc = tmp acc (the first step: acc = tmp) */
            for (int i = 0; i < n; i++)
                memcpy(tmp + (int64_t)i * n, step + (int64_t)(first + i) * S + first,
                       sizeof(double) * (size_t)n);
            if (j == lo) {
                memcpy(acc, tmp, sizeof(double) * (size_t)nn);
            } else {
                double *out = tmp + nn;
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, tmp, n, acc, n, 0, out, n);
                memcpy(acc, out, sizeof(double) * (size_t)nn);
            }
        }
        lo_out[count++] = (double)lo;
    }
    return count;
}

/* Root: multiply the gathered partials (count, n, n) with first positions lo in global order into
 * jac; checks that they tile [t+1, t+k] (what the layout promises). */
static int combine(int count, const double *lo, const double *products, int n, int64_t t, double *jac,
                   double *tmp) {
    const int64_t nn = (int64_t)n * n;
    int order[2 * 4096];
    if (count > (int)(sizeof order / sizeof *order))
        STRAND_FAIL(STRAND_ERR_INTERNAL, "probe jacobian: %d partial products", count);
    for (int i = 0; i < count; i++)
        order[i] = i;
    for (int i = 1; i < count; i++) /* insertion sort by first position: at most 2 per rank */
        for (int j = i; j > 0 && lo[order[j]] < lo[order[j - 1]]; j--) {
            const int s = order[j];
            order[j] = order[j - 1], order[j - 1] = s;
        }
    if (count == 0 || (int64_t)lo[order[0]] != t + 1)
        STRAND_FAIL(STRAND_ERR_INTERNAL, "probe jacobian: the span's first step is on no rank");
    memcpy(jac, products + order[0] * nn, sizeof(double) * (size_t)nn);
    for (int i = 1; i < count; i++) {
        // jac = P_i jac: the later part of the span on the left
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, products + order[i] * nn, n, jac,
                    n, 0, tmp, n);
        memcpy(jac, tmp, sizeof(double) * (size_t)nn);
    }
    return STRAND_OK;
}

int strand_recurrent_span_jacobian(const strand_mixer *mixer, const real_t *params, const strand_shard *shard,
                                   int64_t t, int64_t k, int first, int n, double *jac, double decay[2]) {
    const strand_recurrent *r = mixer->state;
    MPI_Comm comm = shard->grid->sp_comm;
    int rank = 0, size = 1;
    STRAND_CALL_MPI(MPI_Comm_rank(comm, &rank));
    STRAND_CALL_MPI(MPI_Comm_size(comm, &size));
    /* the same arguments everywhere: checked by the caller (strand_probe_jacobian) */
    STRAND_ASSERT(k >= 1 && t >= 0 && t + k < shard->window && first >= 0 && n >= 1 && first + n <= r->S);
    const int64_t S = r->S, nn = (int64_t)n * n;
    decay[0] = decay[1] = 0;
    int status = STRAND_OK;
    double *step = NULL, *tmp = NULL, *products = NULL, *all = NULL, *all_lo = NULL;
    int *counts = NULL, *displs = NULL, *lo_counts = NULL, *lo_displs = NULL;
    double lo[STRAND_MAX_PIECES];
    /* a partial product goes through MPI as one count of doubles */
    if (STRAND_MAX_PIECES * nn * (int64_t)size > INT_MAX)
        status = strand_error_set(
            STRAND_ERR_INPUT, __FILE__, __LINE__,
            "probe jacobian: %d x %d partial products from %d ranks exceed an MPI count", n, n, size);
    if (status == STRAND_OK) {
        step = strand_alloc(sizeof(double) * (size_t)(S * S), "probe step jacobian");
        tmp = strand_alloc(sizeof(double) * (size_t)(2 * nn), "probe jacobian scratch");
        products = strand_alloc(sizeof(double) * (size_t)(STRAND_MAX_PIECES * nn), "probe partial products");
        if (rank == 0) {
            all = strand_alloc(sizeof(double) * (size_t)(STRAND_MAX_PIECES * nn * size),
                               "probe gathered products");
            all_lo =
                strand_alloc(sizeof(double) * (size_t)(STRAND_MAX_PIECES * size), "probe gathered products");
            counts = strand_alloc(sizeof(int) * (size_t)size * 4, "probe gather counts");
        }
        if (!step || !tmp || !products || (rank == 0 && (!all || !all_lo || !counts)))
            status = STRAND_ERR_NOMEM;
    }
    status = strand_agree(comm, status);
    int mine = 0;
    if (status == STRAND_OK) {
        mine = local_products(r, params, shard, t, k, first, n, step, tmp, products, lo, decay);
        if (rank == 0) displs = counts + size, lo_counts = counts + 2 * size, lo_displs = counts + 3 * size;
        int m = mine;
        int err = MPI_Gather(&m, 1, MPI_INT, lo_counts, 1, MPI_INT, 0, comm);
        if (err == MPI_SUCCESS && rank == 0)
            for (int q = 0, at = 0; q < size; q++) {
                lo_displs[q] = at;
                displs[q] = at * (int)nn;
                counts[q] = lo_counts[q] * (int)nn;
                at += lo_counts[q];
            }
        if (err == MPI_SUCCESS)
            err = MPI_Gatherv(lo, mine, MPI_DOUBLE, all_lo, lo_counts, lo_displs, MPI_DOUBLE, 0, comm);
        if (err == MPI_SUCCESS)
            err = MPI_Gatherv(products, mine * (int)nn, MPI_DOUBLE, all, counts, displs, MPI_DOUBLE, 0, comm);
        if (err == MPI_SUCCESS) err = MPI_Allreduce(MPI_IN_PLACE, decay, 2, MPI_DOUBLE, MPI_SUM, comm);
        if (err != MPI_SUCCESS) status = strand_mpi_error(err, "probe jacobian gather", __FILE__, __LINE__);
    }
    if (status == STRAND_OK && rank == 0) {
        int total = 0;
        for (int q = 0; q < size; q++)
            total += lo_counts[q];
        status = combine(total, all_lo, all, n, t, jac, tmp);
    }
    status = strand_agree(comm, status);
    if (status == STRAND_OK && (int64_t)decay[1] != k)
        status = strand_error_set(STRAND_ERR_INTERNAL, __FILE__, __LINE__,
                                  "probe jacobian: %lld steps of a span of %lld on the ranks",
                                  (long long)decay[1], (long long)k);
    strand_free(step), strand_free(tmp), strand_free(products), strand_free(all), strand_free(all_lo);
    strand_free(counts);
    return status;
}

double strand_recurrent_saved_mean(const strand_recurrent *r, const real_t *saved, int offset) {
    double sum = 0;
    for (int k = 0; k < r->C; k++)
        sum += (double)saved[offset + k];
    return sum / r->C;
}
