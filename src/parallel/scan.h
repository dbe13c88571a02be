/* The exchange of a distributed linear scan: diagonal first-order recurrences
 *   h_t = a_t * h_{t-1} + b_t        (elementwise over W state values, real or complex)
 * over a window sharded across the SP group (any layout, uneven pieces).
 *
 * A piece of consecutive positions acts on the state entering it as h -> A h + B, with A the
 * product of its a_t and B its final state from h = 0; pieces compose associatively,
 * (A1, B1) then (A2, B2) = (A2 A1, A2 B1 + B2). A mixer scans each local piece from zero (its own
 * fused kernel: a_t and b_t are usually never stored), hands the summaries (A, B) here, and gets
 * the state entering each piece; it then corrects its piece with that state (h_t += prod a h_in).
 * Only 2 W values per piece travel, whatever the window length.
 *
 * The combine is MPI_Exscan with a non-commutative user operation on the (A, B) pairs, so the MPI
 * library picks the algorithm for the machine and the group size (Open MPI's coll/base has a
 * linear chain and a log2(P)-round recursive doubling, MPICH uses recursive doubling), instead of
 * a hand-written tree that would fix one choice. Pieces follow the window's global order: contiguous, the
 * pieces are in rank order; zigzag, rank r holds chunks r and 2P-1-r, so the first pieces run in rank order
 * and the second pieces in reverse rank order, joined on rank P-1 (one scan over the SP group, a
 * second over the same ranks reversed). The adjoint of backward runs the window in reverse order:
 * the same exchange in the other direction. */
#ifndef STRAND_SCAN_H
#define STRAND_SCAN_H

#include "strand/layout.h"
#include "strand/plan.h"

#include <stdint.h>

enum strand_scan_direction {
    STRAND_SCAN_FORWARD = 0,  /* positions in increasing global order (h_{t-1} -> h_t) */
    STRAND_SCAN_BACKWARD = 1, /* decreasing (the adjoint: g_{t+1} -> g_t) */
};

typedef struct {
    int64_t width;      /* W: state values per summary (complex: W complex values) */
    int complex_values; /* a, b, h complex (interleaved re, im) */
    int n_pieces, rank, size, layout;
    int first_owner[2], last_owner[2]; /* by direction: the rank whose piece the scan starts / ends on */
    MPI_Comm comm;                     /* the SP group (not owned) */
    MPI_Comm reversed;                 /* the SP group in reverse rank order (owned) */
    MPI_Datatype pair;
    MPI_Op op;
    double *work;       /* (4 values per state value): a pair to send, a pair received */
    int64_t bytes_sent; /* by this rank's exchanges since setup (payload, for the bench) */
} strand_scan;

/* The summaries' bytes this process has handed to MPI in every scan so far (strand bench scan). */
int64_t strand_scan_bytes_sent_total(void);
/* Seconds spent in the mixers' local scan kernels (the recurrence passes and fix-ups, not their
 * projections): mixers add what they time, the bench reads the total. */
void strand_scan_kernel_time_add(double seconds);
double strand_scan_kernel_time_total(void);
/* The values one state holds (width, doubled when complex). */
int64_t strand_scan_values(const strand_scan *scan);
/* Declare the exchange buffer into a plan (scratch: used only inside an exchange). No
 * communication (the dry run plans grids that do not exist). */
int strand_scan_plan(strand_scan *scan, const strand_shard *shard, int64_t width, int complex_values,
                     int plan_flags, strand_plan *plan);
/* After the plan is allocated: the reversed group, the pair type and operation. Collective over
 * the SP group. */
int strand_scan_setup(strand_scan *scan);
void strand_scan_free(strand_scan *scan);

/* summaries[p] (2 values(W)): (A, B) of local piece p (local order), as defined above for the
 * direction (backward: A is the product of the adjoint's multipliers over the piece, B the adjoint
 * at the piece's first position from a zero adjoint after its last). initial (values(W)): the
 * state before the first position of the scan (forward: the carried state entering position 0;
 * backward: the adjoint after the window's last position); NULL = zeros; read on the rank that
 * holds that piece. entering[p] (values(W)): the state entering piece p. window_final (NULL: not
 * wanted): the state after the last piece of the scan, delivered on the rank holding the scan's
 * first piece (the carried state of the next window). Collective over the SP group. */
int strand_scan_exchange(strand_scan *scan, int direction, const double *const summaries[],
                         const double *initial, double *const entering[], double *window_final);

/* Compose in place: pair (A, B) = pair then (A2, B2), i.e. (A2 A, A2 B + B2), over W values. */
void strand_scan_compose(double *pair, const double *second, int64_t width, int complex_values);
/* state = A state + B for one summary (A, B). */
void strand_scan_apply(double *state, const double *pair, int64_t width, int complex_values);

/* The sequential reference (tests, and mixers whose a and b are stored): h (T, values(W)) of
 * h_t = a_t h_{t-1} + b_t from h0 (NULL = zeros), forward in t; pair (NULL: not wanted) = the
 * summary (A, B) of the T positions from zero. */
void strand_scan_local(double *h, const double *a, const double *b, int64_t T, int64_t width,
                       int complex_values, const double *h0, double *pair);

#endif
