/* The exchange of the distributed linear scan (see scan.h). */
#include "parallel/scan.h"

#include "parallel/tags.h"

#include <string.h>

/* every scan's payload on this process, for the bench */
static int64_t bytes_sent_here;

int64_t strand_scan_bytes_sent_total(void) {
    return bytes_sent_here;
}

/* and the seconds the mixers spent in their local scan kernels */
static double kernel_seconds_here;

void strand_scan_kernel_time_add(double seconds) {
    kernel_seconds_here += seconds;
}

double strand_scan_kernel_time_total(void) {
    return kernel_seconds_here;
}

int64_t strand_scan_values(const strand_scan *scan) {
    return scan->complex_values ? 2 * scan->width : scan->width;
}

/* (A, B) = (A1, B1) then (A2, B2) = (A2 A1, A2 B1 + B2) over n values; the output may be either
 * input (each element is read before it is written). */
static void compose_into(double *A, double *B, const double *A1, const double *B1, const double *A2,
                         const double *B2, int64_t n, int complex_values) {
    if (!complex_values) {
        for (int64_t i = 0; i < n; i++) {
            const double a1 = A1[i], b1 = B1[i], a2 = A2[i], b2 = B2[i];
            B[i] = a2 * b1 + b2;
            A[i] = a2 * a1;
        }
        return;
    }
    for (int64_t i = 0; i < n; i += 2) {
        const double pr = A1[i], pi = A1[i + 1], br = B1[i], bi = B1[i + 1];
        const double ar = A2[i], ai = A2[i + 1], cr = B2[i], ci = B2[i + 1];
        B[i] = ar * br - ai * bi + cr;
        B[i + 1] = ar * bi + ai * br + ci;
        A[i] = ar * pr - ai * pi;
        A[i + 1] = ar * pi + ai * pr;
    }
}

void strand_scan_compose(double *pair, const double *second, int64_t width, int complex_values) {
    const int64_t n = complex_values ? 2 * width : width;
    compose_into(pair, pair + n, pair, pair + n, second, second + n, n, complex_values);
}

void strand_scan_apply(double *state, const double *pair, int64_t width, int complex_values) {
    const int64_t n = complex_values ? 2 * width : width;
    const double *A = pair, *B = pair + n;
    if (!complex_values) {
        for (int64_t i = 0; i < n; i++)
            state[i] = A[i] * state[i] + B[i];
        return;
    }
    for (int64_t i = 0; i < n; i += 2) {
        const double hr = state[i], hi = state[i + 1];
        state[i] = A[i] * hr - A[i + 1] * hi + B[i];
        state[i + 1] = A[i] * hi + A[i + 1] * hr + B[i + 1];
    }
}

void strand_scan_local(double *h, const double *a, const double *b, int64_t T, int64_t width,
                       int complex_values, const double *h0, double *pair) {
    const int64_t n = complex_values ? 2 * width : width;
    if (pair) {
        for (int64_t i = 0; i < n; i++)
            pair[i] = complex_values && i % 2 ? 0.0 : 1.0; /* A = 1 */
        memset(pair + n, 0, sizeof(double) * (size_t)n);
    }
    for (int64_t t = 0; t < T; t++) {
        const double *prev = t > 0 ? h + (t - 1) * n : h0;
        double *cur = h + t * n;
        const double *at = a + t * n, *bt = b + t * n;
        if (!complex_values) {
            for (int64_t i = 0; i < n; i++)
                cur[i] = (prev ? at[i] * prev[i] : 0.0) + bt[i];
        } else {
            for (int64_t i = 0; i < n; i += 2) {
                const double pr = prev ? prev[i] : 0.0, pi = prev ? prev[i + 1] : 0.0;
                cur[i] = at[i] * pr - at[i + 1] * pi + bt[i];
                cur[i + 1] = at[i] * pi + at[i + 1] * pr + bt[i + 1];
            }
        }
        /* the summary from zero: (A, B) then (a_t, b_t) */
        if (pair) compose_into(pair, pair + n, pair, pair + n, at, bt, n, complex_values);
    }
}

/* MPI's reduction order: inout = in (from the lower ranks) then inout, for len pairs of the
 * type's size. */
static void compose_op(void *in, void *inout, int *len, MPI_Datatype *type, int complex_values) {
    int bytes = 0;
    MPI_Type_size(*type, &bytes);
    const int64_t n = (int64_t)bytes / (int64_t)(2 * sizeof(double));
    for (int k = 0; k < *len; k++) {
        const double *first = (const double *)in + (int64_t)k * 2 * n;
        double *second = (double *)inout + (int64_t)k * 2 * n;
        compose_into(second, second + n, first, first + n, second, second + n, n, complex_values);
    }
}

static void compose_real(void *in, void *inout, int *len, MPI_Datatype *type) {
    compose_op(in, inout, len, type, 0);
}

static void compose_complex(void *in, void *inout, int *len, MPI_Datatype *type) {
    compose_op(in, inout, len, type, 1);
}

/* Which local piece leads (runs in rank order over comm) and which trails (reverse rank order
 * over the reversed group) for a direction; -1: none (contiguous has no trailing piece). The
 * contiguous backward scan runs its one piece over the reversed group. */
static void scan_order(const strand_scan *scan, int direction, int *lead, int *tail, int *lead_reversed) {
    if (scan->n_pieces == 1) {
        *lead = 0, *tail = -1, *lead_reversed = direction == STRAND_SCAN_BACKWARD;
        return;
    }
    *lead_reversed = 0;
    *lead = direction == STRAND_SCAN_FORWARD ? 0 : 1;
    *tail = 1 - *lead;
}

int strand_scan_plan(strand_scan *scan, const strand_shard *shard, int64_t width, int complex_values,
                     int plan_flags, strand_plan *plan) {
    memset(scan, 0, sizeof *scan);
    scan->width = width;
    scan->complex_values = complex_values;
    scan->n_pieces = shard->n_pieces;
    scan->layout = shard->layout;
    scan->comm = shard->grid->sp_comm;
    scan->rank = shard->grid->sp_rank;
    scan->size = shard->grid->sp_size;
    scan->reversed = MPI_COMM_NULL;
    scan->pair = MPI_DATATYPE_NULL;
    scan->op = MPI_OP_NULL;
    const int P = scan->size;
    /* the ranks where each direction's scan starts and ends (scan.h's chunk order) */
    scan->first_owner[STRAND_SCAN_FORWARD] = 0;
    scan->last_owner[STRAND_SCAN_FORWARD] = shard->n_pieces == 1 ? P - 1 : 0;
    scan->first_owner[STRAND_SCAN_BACKWARD] = shard->n_pieces == 1 ? P - 1 : 0;
    scan->last_owner[STRAND_SCAN_BACKWARD] = 0;
    STRAND_PLAN_ADD(plan, scan->work, 4 * strand_scan_values(scan), STRAND_LIFE_SCRATCH | plan_flags,
                    "scan exchange");
    return STRAND_OK;
}

int strand_scan_setup(strand_scan *scan) {
    STRAND_CALL_MPI(MPI_Comm_split(scan->comm, 0, scan->size - 1 - scan->rank, &scan->reversed));
    const int64_t values = strand_scan_values(scan);
    if (2 * values > (int64_t)1 << 30)
        STRAND_FAIL(STRAND_ERR_CONFIG, "scan state of %lld values is too large for one MPI message",
                    (long long)values);
    STRAND_CALL_MPI(MPI_Type_contiguous((int)(2 * values), MPI_DOUBLE, &scan->pair));
    STRAND_CALL_MPI(MPI_Type_commit(&scan->pair));
    STRAND_CALL_MPI(MPI_Op_create(scan->complex_values ? compose_complex : compose_real, 0, &scan->op));
    return STRAND_OK;
}

void strand_scan_free(strand_scan *scan) {
    if (scan->op != MPI_OP_NULL) MPI_Op_free(&scan->op);
    if (scan->pair != MPI_DATATYPE_NULL) MPI_Type_free(&scan->pair);
    if (scan->reversed != MPI_COMM_NULL) MPI_Comm_free(&scan->reversed);
}

/* One ordered exclusive scan over `comm` (whose rank 0 starts the chain): entering = the state
 * before this rank's piece, given its summary and, on the chain's first rank, the state before
 * the chain (`before`, NULL = zeros). */
static int chain(strand_scan *scan, MPI_Comm comm, const double *summary, const double *before,
                 double *entering) {
    const int64_t n = strand_scan_values(scan);
    double *send = scan->work, *recv = scan->work + 2 * n;
    int rank = 0;
    STRAND_CALL_MPI(MPI_Comm_rank(comm, &rank));
    memcpy(send, summary, sizeof(double) * (size_t)(2 * n));
    if (rank == 0) {
        /* fold the state before the chain into the first summary: the others then read their
         * entering state as the B of the composition of everything before them */
        if (before) {
            memcpy(entering, before, sizeof(double) * (size_t)n);
            double *B = send + n;
            memcpy(B, before, sizeof(double) * (size_t)n);
            strand_scan_apply(B, summary, scan->width, scan->complex_values);
        } else {
            memset(entering, 0, sizeof(double) * (size_t)n);
        }
    }
    STRAND_CALL_MPI(MPI_Exscan(send, recv, 1, scan->pair, scan->op, comm));
    if (scan->size > 1) { /* one rank sends nothing */
        scan->bytes_sent += (int64_t)sizeof(double) * 2 * n;
        bytes_sent_here += (int64_t)sizeof(double) * 2 * n;
        strand_comm_add_bytes((int64_t)sizeof(double) * 2 * n);
    }
    if (rank != 0) memcpy(entering, recv + n, sizeof(double) * (size_t)n);
    return STRAND_OK;
}

int strand_scan_exchange(strand_scan *scan, int direction, const double *const summaries[],
                         const double *initial, double *const entering[], double *window_final) {
    const int64_t n = strand_scan_values(scan);
    const int P = scan->size;
    int lead, tail, lead_reversed;
    scan_order(scan, direction, &lead, &tail, &lead_reversed);
    MPI_Comm lead_comm = lead_reversed ? scan->reversed : scan->comm;
    const int lead_first = lead_reversed ? P - 1 : 0;
    STRAND_CALL(
        chain(scan, lead_comm, summaries[lead], scan->rank == lead_first ? initial : NULL, entering[lead]));
    if (tail >= 0) {
        /* the lead chain ends on rank P-1, which also holds the tail chain's first piece */
        double *joined = scan->work + 2 * n; /* chain() is done with its buffers */
        if (scan->rank == P - 1) {
            memcpy(joined, entering[lead], sizeof(double) * (size_t)n);
            strand_scan_apply(joined, summaries[lead], scan->width, scan->complex_values);
        }
        double *before = scan->work + 3 * n;
        if (scan->rank == P - 1) memcpy(before, joined, sizeof(double) * (size_t)n);
        STRAND_CALL(chain(scan, scan->reversed, summaries[tail], scan->rank == P - 1 ? before : NULL,
                          entering[tail]));
    }
    if (!window_final) return STRAND_OK;
    /* the state after the scan's last piece, to the rank holding its first piece */
    const int last = scan->last_owner[direction], first = scan->first_owner[direction];
    const int last_piece = tail >= 0 ? tail : lead;
    if (scan->rank == last) {
        double *final = scan->work;
        memcpy(final, entering[last_piece], sizeof(double) * (size_t)n);
        strand_scan_apply(final, summaries[last_piece], scan->width, scan->complex_values);
        if (first == last) {
            memcpy(window_final, final, sizeof(double) * (size_t)n);
        } else {
            STRAND_CALL_MPI(MPI_Send(final, (int)n, MPI_DOUBLE, first, STRAND_TAG_SCAN_FINAL, scan->comm));
            scan->bytes_sent += (int64_t)sizeof(double) * n;
            strand_comm_add_bytes((int64_t)sizeof(double) * n);
            bytes_sent_here += (int64_t)sizeof(double) * n;
        }
    } else if (scan->rank == first) {
        STRAND_CALL_MPI(MPI_Recv(window_final, (int)n, MPI_DOUBLE, last, STRAND_TAG_SCAN_FINAL, scan->comm,
                                 MPI_STATUS_IGNORE));
    }
    return STRAND_OK;
}
