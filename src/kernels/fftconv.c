/* Distributed causal long convolution over the SP group (see fftconv.h): two strategies behind one
 * interface, plus an O(L^2) reference.
 *
 * Transforms: F(x)[j] = sum_n x[n] e^{-2 pi i jn/N}, FFTW's inverse is unnormalised (we scale by 1/N).
 * The transform size N >= 2L makes circular convolution and correlation equal to the linear ones on
 * lags 0..L-1 (every wrapped index lands in the zero padding).
 *
 * FFTW_MPI strategy: FFTW-MPI has no distributed real transform, so channels go in pairs (a, b), and
 * with FFTW_MPI_SCRAMBLED_OUT the frequency j and its partner N-j live on unknown ranks, so the usual
 * "split a packed spectrum with X[N-j]" trick is unavailable. Instead every real pair is transformed
 * twice, as z = a + ib and as its time-domain conjugate zc = a - ib, giving Z and Zc = conj(Z[N-j])
 * with no reversal. With A = F(a) = (Z + Zc)/2 and B = F(b) = (Z - Zc)/(2i), all three products are
 * then packed into ONE inverse transform per pair (verified numerically against direct sums):
 *   forward  (u pair Z,Zc; kernel pair W,Wc; K1 = (W+Wc)/2, K2 = (W-Wc)/(2i)):
 *            F(y1 + i y2) = Z * Ka + Zc * Kb,             Ka = (K1+K2)/2, Kb = (K1-K2)/2
 *   backward (dy pair G,Gc):
 *            F(du1 + i du2) = G * conj(Ka) + Gc * conj(Kb)
 *            F(dk1 + i dk2) = [(G+Gc)(S+Sc) + i (G-Gc)(S-Sc)] / 4,   S = conj(Z), Sc = conj(Zc)
 * Cost per channel pair, in distributed complex transforms of length N: forward 2 (u) + 2 (k) + 1
 * (y), backward 2 (dy) + 2 (du, dk): 9 per pair, versus 11 for the scheme that inverts y1, y2, du1,
 * du2 separately (Re/Im of IFFT(Z K1), IFFT(Z K2), ...). Every operand goes through the same forward
 * plan, so the scrambled frequency order never matters. Columns are transformed one at a time
 * (see plan_fftw_mpi for why not one plan with howmany = 2P).
 *
 * ALLTOALL strategy: sequence shards -> channel shards (rank r owns channels split_range(C, SP, r),
 * all L positions in natural order), local r2c/c2r FFTW, and back.
 *
 * Memory (N ~ 2L, T ~ L/SP): the saved spectra of u and k (kept so backward needs no forward
 * transform of u and k again) take about 8 T C reals per rank on both paths; with the work buffers
 * and the exchange staging the total is about 16-20 T C reals per rank, independent of SP. */
#include "kernels/fftconv.h"

#include "core/atomic_file.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fftw3-mpi.h>

#ifdef STRAND_REAL_DOUBLE
#define FFTW(name) fftw_##name
#define FFTW_MPI(name) fftw_mpi_##name
#else
#define FFTW(name) fftwf_##name
#define FFTW_MPI(name) fftwf_mpi_##name
#endif

typedef FFTW(complex) cplx; /* real_t[2]: re, im */
typedef FFTW(plan) fft_plan;

/* A run of consecutive positions held by one rank: local row, global position, length. */
typedef struct {
    int64_t local, pos, len;
} run_t;

struct strand_fftconv {
    MPI_Comm comm;   /* duplicate of the SP communicator (MPI_COMM_NULL in a dry run's plan) */
    int flags;       /* lifetime and sharing of the planned buffers */
    strand_plan own; /* the buffers, when made by strand_fftconv_create */
    const strand_fftconv_options *options;
    strand_fftconv_options options_copy;
    int sp, rank, C, strategy;
    int64_t L, N, T;
    int64_t *piece_start, *piece_length;    /* (sp, STRAND_MAX_PIECES) of every rank */
    int *n_pieces;                          /* (sp) */
    int64_t *shard_T;                       /* (sp) */
    int *scount, *sdispl, *rcount, *rdispl; /* (sp) each, filled per exchange */
    int64_t bytes_sent;
    double fft_seconds;
    int have_forward;
    real_t *stage_send, *stage_recv;

    /* FFTW_MPI: P channel pairs, 2P complex columns (z, zc of each pair), each column its own
     * contiguous block of col_stride values, transformed one at a time by the same two plans. */
    int P;
    int64_t col_stride;
    MPI_Datatype row;         /* C reals: exchange counts are rows, so they fit in int */
    int64_t in_start, in_n;   /* forward input rows (natural order) */
    int64_t spec_n;           /* rows of the scrambled spectrum */
    int64_t out_start, out_n; /* inverse output rows (natural order) */
    int64_t *all_in_start, *all_in_n, *all_out_start, *all_out_n; /* (sp) */
    int64_t *tb_send, *tb_recv, *fb_send, *fb_recv;               /* rows per peer, per set of C channels */
    fft_plan fwd, inv;
    cplx *spec_u, *spec_k, *work, *row_tmp;

    /* ALLTOALL: this rank's channels [c_start[rank], + c_count[rank]) over all positions. */
    int64_t *c_start, *c_count; /* (sp) */
    int cc;
    int64_t Nh;
    real_t *chan_in, *chan_out;    /* (cc, N) */
    cplx *a_u, *a_k, *a_g, *a_tmp; /* (cc, Nh) */
    fft_plan r2c, c2r;
};

/* ---- small helpers ---- */

static int fftw_initialised = 0;

/* Rows per tile in the (rows, channels) <-> (channels, rows) copies: a tile of the row-major side
 * stays in cache while every channel's contiguous run is written. */
enum { TILE = 64 };

static int64_t fast_size_at_least(int64_t n);

int64_t strand_fftconv_size_for(int64_t L) {
    return fast_size_at_least(2 * L);
}

static int64_t fast_size_at_least(int64_t n) {
    if (n < 4) n = 4; /* 2, 3, 5 are prime: FFTW-MPI cannot distribute them */
    for (int64_t m = n;; m++) {
        int64_t r = m;
        while (r % 2 == 0)
            r /= 2;
        while (r % 3 == 0)
            r /= 3;
        while (r % 5 == 0)
            r /= 5;
        if (r == 1 && m != 5) return m;
    }
}

/* Runs of rank r's rows whose global positions fall in [a, b), in r's local row order. */
static int rank_runs(const strand_fftconv *cv, int r, int64_t a, int64_t b, run_t runs[STRAND_MAX_PIECES]) {
    int n = 0;
    int64_t local = 0;
    for (int p = 0; p < cv->n_pieces[r]; p++) {
        const int64_t s = cv->piece_start[r * STRAND_MAX_PIECES + p];
        const int64_t e = s + cv->piece_length[r * STRAND_MAX_PIECES + p];
        const int64_t lo = a > s ? a : s, hi = b < e ? b : e;
        if (lo < hi) runs[n++] = (run_t){local + lo - s, lo, hi - lo};
        local += e - s;
    }
    return n;
}

static int64_t runs_total(const strand_fftconv *cv, int r, int64_t a, int64_t b) {
    run_t runs[STRAND_MAX_PIECES];
    int n = rank_runs(cv, r, a, b, runs);
    int64_t total = 0;
    for (int i = 0; i < n; i++)
        total += runs[i].len;
    return total;
}

static int64_t min64(int64_t a, int64_t b) {
    return a < b ? a : b;
}

/* Fill counts and displacements (units of the exchange's datatype) from per-peer sizes times m;
 * returns the bytes sent to other ranks. */
static int fill_counts(strand_fftconv *cv, const int64_t *send, const int64_t *recv, int64_t m,
                       int64_t unit_bytes) {
    int64_t so = 0, ro = 0, bytes = 0;
    for (int r = 0; r < cv->sp; r++) {
        const int64_t sc = m * send[r], rc = m * recv[r];
        if (sc > INT_MAX || rc > INT_MAX || so > INT_MAX || ro > INT_MAX)
            STRAND_FAIL(STRAND_ERR_INTERNAL, "fftconv: exchange count exceeds INT_MAX (checked at create)");
        cv->scount[r] = (int)sc;
        cv->sdispl[r] = (int)so;
        cv->rcount[r] = (int)rc;
        cv->rdispl[r] = (int)ro;
        so += sc;
        ro += rc;
        if (r != cv->rank) bytes += sc * unit_bytes;
    }
    cv->bytes_sent += bytes;
    strand_comm_add_bytes(bytes);
    return STRAND_OK;
}

static int exchange(strand_fftconv *cv, MPI_Datatype type) {
    const double t0 = strand_now();
    STRAND_CALL_MPI(MPI_Alltoallv(cv->stage_send, cv->scount, cv->sdispl, type, cv->stage_recv, cv->rcount,
                                  cv->rdispl, type, cv->comm));
    strand_comm_add_seconds(strand_now() - t0);
    return STRAND_OK;
}

#define TIMED_FFT(cv, stmt)                                                                                  \
    do {                                                                                                     \
        const double fft_t0_ = strand_now();                                                                 \
        stmt;                                                                                                \
        (cv)->fft_seconds += strand_now() - fft_t0_;                                                         \
    } while (0)

/* Bytes FFTW-MPI sends inside one execute of a scrambled 1-D plan: two transposes, each sending
 * (SP-1)/SP of the local array (measured with PMPI interposition for SP = 2, 3, 4 within 1%). */
static int64_t fftw_transpose_bytes(const strand_fftconv *cv, int64_t rows, int64_t howmany) {
    if (cv->sp == 1) return 0;
    return 2 * rows * howmany * (int64_t)sizeof(cplx) * (cv->sp - 1) / cv->sp;
}

/* ---- wisdom ---- */

static void make_parent_dirs(const char *path) {
    char dir[4096];
    if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir) return;
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return;
    *slash = '\0';
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        (void)mkdir(dir, 0755);
        *p = '/';
    }
    (void)mkdir(dir, 0755);
}

static void wisdom_import(MPI_Comm comm, int rank, const char *path) {
    /* A missing file is the normal first run; a corrupt one only costs planning time. */
    if (rank == 0) (void)FFTW(import_wisdom_from_filename)(path);
    FFTW_MPI(broadcast_wisdom)(comm);
}

/* Not fatal: failing to cache wisdom only makes the next start plan again. */
static void wisdom_export(MPI_Comm comm, int rank, const char *path) {
    FFTW_MPI(gather_wisdom)(comm);
    if (rank != 0) return;
    make_parent_dirs(path);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    if (!FFTW(export_wisdom_to_filename)(tmp)) {
        fprintf(stderr, "strand: warning: could not write FFTW wisdom to %s: %s\n", path, strerror(errno));
        (void)unlink(tmp);
    } else if (strand_atomic_publish(tmp, path) != STRAND_OK) {
        fprintf(stderr, "strand: warning: could not write FFTW wisdom: %s\n", strand_error_message());
        strand_error_clear(); /* a warning: no later failure may report this message as its own */
    }
}

/* ---- create / free ---- */

const char *strand_fftconv_strategy_name(int strategy) {
    switch (strategy) {
    case STRAND_CONV_FFTW_MPI:
        return "fftw-mpi";
    case STRAND_CONV_ALLTOALL:
        return "alltoall";
    case STRAND_CONV_AUTO:
        return "auto";
    default:
        return "unknown";
    }
}

int strand_fftconv_strategy(const strand_fftconv *conv) {
    return conv->strategy;
}

int64_t strand_fftconv_bytes_sent(const strand_fftconv *conv) {
    return conv->bytes_sent;
}

double strand_fftconv_fft_seconds(const strand_fftconv *conv) {
    return conv->fft_seconds;
}

int64_t strand_fftconv_transform_size(const strand_fftconv *conv) {
    return conv->N;
}

void strand_fftconv_free(strand_fftconv *cv) {
    if (!cv) return;
    if (cv->fwd) FFTW(destroy_plan)(cv->fwd);
    if (cv->inv) FFTW(destroy_plan)(cv->inv);
    if (cv->r2c) FFTW(destroy_plan)(cv->r2c);
    if (cv->c2r) FFTW(destroy_plan)(cv->c2r);
    strand_plan_free(&cv->own); /* planned buffers, when this conv made its own plan */
    int64_t *arrays64[] = {cv->piece_start,   cv->piece_length, cv->shard_T, cv->all_in_start, cv->all_in_n,
                           cv->all_out_start, cv->all_out_n,    cv->tb_send, cv->tb_recv,      cv->fb_send,
                           cv->fb_recv,       cv->c_start,      cv->c_count};
    for (size_t i = 0; i < sizeof arrays64 / sizeof *arrays64; i++)
        strand_free(arrays64[i]);
    int *arrays[] = {cv->n_pieces, cv->scount, cv->sdispl, cv->rcount, cv->rdispl};
    for (size_t i = 0; i < sizeof arrays / sizeof *arrays; i++)
        strand_free(arrays[i]);
    if (cv->row != MPI_DATATYPE_NULL) MPI_Type_free(&cv->row);
    if (cv->comm != MPI_COMM_NULL) MPI_Comm_free(&cv->comm);
    strand_free(cv);
}

/* Whether the alltoall exchanges' counts (in reals) fit in int on every rank: computed from
 * quantities every rank knows, so all ranks agree. */
static int alltoall_fits(const strand_fftconv *cv) {
    int64_t max_T = 0;
    for (int r = 0; r < cv->sp; r++)
        if (cv->shard_T[r] > max_T) max_T = cv->shard_T[r];
    const int64_t max_cc = (cv->C + cv->sp - 1) / cv->sp;
    return 2 * max_T * cv->C <= INT_MAX && 2 * cv->L * max_cc <= INT_MAX;
}

/* AUTO rule, from tests/bench/conv_sweep.sh (float, FFTW_ESTIMATE, 2 shared cores): per forward +
 * backward the all-to-all moves about 6 T C reals per rank, FFTW-MPI the same redistribution plus
 * two transposes inside every distributed complex transform (7x the bytes, measured), and does
 * 4.5 complex transforms per channel where the all-to-all does 6 real ones. At 2 ranks the
 * all-to-all won every measured shape with C >= SP, 1.4x-6x (L = 2^14..2^22, d = 8..256); even at
 * C = 1 < SP = 2 (one rank idle) it was 1.6x faster at L = 2^20. With C < SP it still leaves
 * SP - C ranks idle (time does not scale with SP) and holds whole channels of length N on one
 * rank, beyond that rank's share of memory: FFTW-MPI takes over there, and when an all-to-all count
 * would not fit in an int. At SP = 1 there is no exchange: local real transforms. */
static int choose_strategy(const strand_fftconv *cv) {
    if (cv->sp == 1) return STRAND_CONV_ALLTOALL; /* no exchange at all: plain local r2c */
    if (cv->C >= cv->sp && alltoall_fits(cv)) return STRAND_CONV_ALLTOALL;
    return STRAND_CONV_FFTW_MPI;
}

/* FFTW-MPI's local sizes. Without a communicator (a dry run for a grid that does not exist) they
 * are estimated as FFTW's block distribution, ceil(N/sp) complex values per rank; FFTW's real
 * allocation can be a little larger. */
static int setup_fftw_mpi_alloc(strand_fftconv *cv, int64_t *alloc_complex) {
    const int sp = cv->sp;
    const ptrdiff_t N = (ptrdiff_t)cv->N;
    if (cv->comm == MPI_COMM_NULL) {
        const int64_t block = (cv->N + sp - 1) / sp, start = min64(block * cv->rank, cv->N);
        cv->in_start = cv->out_start = start;
        cv->in_n = cv->out_n = cv->spec_n = min64(block, cv->N - start);
        const int64_t align = 64 / (int64_t)sizeof(cplx);
        cv->col_stride = (block + align - 1) / align * align;
        *alloc_complex = cv->col_stride * 2 * cv->P;
        return STRAND_OK;
    }
    const unsigned scr_out = sp > 1 ? FFTW_MPI_SCRAMBLED_OUT : 0, scr_in = sp > 1 ? FFTW_MPI_SCRAMBLED_IN : 0;
    ptrdiff_t ni, is, no, os, ni2, is2, no2, os2;
    ptrdiff_t a = FFTW_MPI(local_size_many_1d)(N, 1, cv->comm, FFTW_FORWARD, scr_out, &ni, &is, &no, &os);
    ptrdiff_t b = FFTW_MPI(local_size_many_1d)(N, 1, cv->comm, FFTW_BACKWARD, scr_in, &ni2, &is2, &no2, &os2);
    /* The products pair forward output rows with inverse input rows: FFTW documents that these
     * distributions match for SCRAMBLED_OUT / SCRAMBLED_IN; check rather than assume. */
    if (no != ni2 || os != is2)
        STRAND_FAIL(STRAND_ERR_INTERNAL,
                    "fftconv: FFTW-MPI forward output and inverse input distributions differ (N = %lld)",
                    (long long)N);
    cv->in_start = is;
    cv->in_n = ni;
    cv->spec_n = no;
    cv->out_start = os2;
    cv->out_n = no2;
    const int64_t alloc = a > b ? a : b;
    /* Columns start 64-byte aligned, so every column has the planning array's alignment. */
    const int64_t align = 64 / (int64_t)sizeof(cplx);
    cv->col_stride = (alloc + align - 1) / align * align;
    *alloc_complex = cv->col_stride * 2 * cv->P;
    return STRAND_OK;
}

static int setup_fftw_mpi(strand_fftconv *cv, strand_plan *plan) {
    const int sp = cv->sp;
    if (2 * cv->N > INT_MAX)
        STRAND_FAIL(STRAND_ERR_CONFIG, "fftconv: transform size %lld is too large for MPI counts",
                    (long long)cv->N);
    int64_t alloc = 0;
    cv->P = (cv->C + 1) / 2;
    STRAND_CALL(setup_fftw_mpi_alloc(cv, &alloc));
    STRAND_ALLOC(cv->all_in_start, sp, "fftconv table");
    STRAND_ALLOC(cv->all_in_n, sp, "fftconv table");
    STRAND_ALLOC(cv->all_out_start, sp, "fftconv table");
    STRAND_ALLOC(cv->all_out_n, sp, "fftconv table");
    int64_t mine[4] = {cv->in_start, cv->in_n, cv->out_start, cv->out_n}, *all = NULL;
    STRAND_ALLOC(all, 4 * sp, "fftconv table");
    int mpi = MPI_SUCCESS;
    if (cv->comm != MPI_COMM_NULL) {
        mpi = MPI_Allgather(mine, 4, MPI_INT64_T, all, 4, MPI_INT64_T, cv->comm);
    } else {
        /* the estimate of setup_fftw_mpi_alloc for every rank */
        const int64_t block = (cv->N + sp - 1) / sp;
        for (int r = 0; r < sp; r++) {
            const int64_t start = min64(block * r, cv->N), n = min64(block, cv->N - start);
            all[4 * r] = all[4 * r + 2] = start;
            all[4 * r + 1] = all[4 * r + 3] = n;
        }
    }
    if (mpi == MPI_SUCCESS)
        for (int r = 0; r < sp; r++) {
            cv->all_in_start[r] = all[4 * r];
            cv->all_in_n[r] = all[4 * r + 1];
            cv->all_out_start[r] = all[4 * r + 2];
            cv->all_out_n[r] = all[4 * r + 3];
        }
    strand_free(all);
    if (mpi != MPI_SUCCESS) return strand_mpi_error(mpi, "MPI_Allgather", __FILE__, __LINE__);

    /* Rows exchanged with every peer, per set of C channels. */
    STRAND_ALLOC(cv->tb_send, sp, "fftconv table");
    STRAND_ALLOC(cv->tb_recv, sp, "fftconv table");
    STRAND_ALLOC(cv->fb_send, sp, "fftconv table");
    STRAND_ALLOC(cv->fb_recv, sp, "fftconv table");
    const int me = cv->rank;
    int64_t stage_rows = 0, sums[4] = {0, 0, 0, 0};
    for (int r = 0; r < sp; r++) {
        const int64_t in_a = cv->all_in_start[r], in_b = min64(in_a + cv->all_in_n[r], cv->L);
        const int64_t out_a = cv->all_out_start[r], out_b = min64(out_a + cv->all_out_n[r], cv->L);
        cv->tb_send[r] = runs_total(cv, me, in_a, in_b);
        cv->tb_recv[r] = runs_total(cv, r, cv->in_start, min64(cv->in_start + cv->in_n, cv->L));
        cv->fb_send[r] = runs_total(cv, r, cv->out_start, min64(cv->out_start + cv->out_n, cv->L));
        cv->fb_recv[r] = runs_total(cv, me, out_a, out_b);
        sums[0] += cv->tb_send[r];
        sums[1] += cv->tb_recv[r];
        sums[2] += cv->fb_send[r];
        sums[3] += cv->fb_recv[r];
    }
    for (int i = 0; i < 4; i++)
        if (sums[i] > stage_rows) stage_rows = sums[i];
    /* Up to two sets (u and k forward; du and dk backward) per exchange. */
    const int f = cv->flags;
    STRAND_PLAN_ADD(plan, cv->stage_send, 2 * stage_rows * cv->C, f, "fftconv exchange buffer");
    STRAND_PLAN_ADD(plan, cv->stage_recv, 2 * stage_rows * cv->C, f, "fftconv exchange buffer");
    STRAND_PLAN_ADD(plan, cv->row_tmp, 2 * cv->P * TILE, f, "fftconv row tile");
    STRAND_PLAN_ADD(plan, cv->spec_u, alloc, f, "fftconv spectrum of u");
    STRAND_PLAN_ADD(plan, cv->spec_k, alloc, f, "fftconv spectrum of k");
    STRAND_PLAN_ADD(plan, cv->work, alloc, f, "fftconv work spectrum");
    return STRAND_OK;
}

/* One column per plan: FFTW-MPI's howmany > 1 interleaves the columns, and its local transforms
 * over that layout were 2-4x slower than one column at a time (2 ranks, N = 2^12..2^22, measured
 * with howmany = 1..256), which outweighs the extra message latency on a node. */
static int plan_fftw_mpi(strand_fftconv *cv, unsigned planner) {
    const ptrdiff_t N = (ptrdiff_t)cv->N;
    const unsigned scr_out = cv->sp > 1 ? FFTW_MPI_SCRAMBLED_OUT : 0,
                   scr_in = cv->sp > 1 ? FFTW_MPI_SCRAMBLED_IN : 0;
    cv->fwd = FFTW_MPI(plan_many_dft)(1, &N, 1, FFTW_MPI_DEFAULT_BLOCK, FFTW_MPI_DEFAULT_BLOCK, cv->work,
                                      cv->work, cv->comm, FFTW_FORWARD, planner | scr_out);
    cv->inv = FFTW_MPI(plan_many_dft)(1, &N, 1, FFTW_MPI_DEFAULT_BLOCK, FFTW_MPI_DEFAULT_BLOCK, cv->work,
                                      cv->work, cv->comm, FFTW_BACKWARD, planner | scr_in);
    if (!cv->fwd || !cv->inv)
        STRAND_FAIL(STRAND_ERR_INTERNAL,
                    "fftconv: FFTW-MPI could not plan a distributed transform of size %lld over %d ranks",
                    (long long)cv->N, cv->sp);
    return STRAND_OK;
}

static int setup_alltoall(strand_fftconv *cv, strand_plan *plan) {
    const int sp = cv->sp;
    if (!alltoall_fits(cv))
        STRAND_FAIL(STRAND_ERR_CONFIG,
                    "fftconv: the alltoall strategy would exchange more than INT_MAX values per rank "
                    "(L = %lld, C = %d, %d ranks); use fft.strategy = fftw-mpi or more ranks",
                    (long long)cv->L, cv->C, sp);
    STRAND_ALLOC(cv->c_start, sp, "fftconv table");
    STRAND_ALLOC(cv->c_count, sp, "fftconv table");
    for (int r = 0; r < sp; r++)
        strand_split_range(cv->C, sp, r, &cv->c_start[r], &cv->c_count[r]);
    cv->cc = (int)cv->c_count[cv->rank];
    cv->Nh = cv->N / 2 + 1;
    const int64_t stage = 2 * (cv->T * cv->C > cv->L * cv->cc ? cv->T * cv->C : cv->L * cv->cc);
    const int f = cv->flags;
    STRAND_PLAN_ADD(plan, cv->stage_send, stage, f, "fftconv exchange buffer");
    STRAND_PLAN_ADD(plan, cv->stage_recv, stage, f, "fftconv exchange buffer");
    const int64_t cc = cv->cc;
    STRAND_PLAN_ADD(plan, cv->chan_in, cc * cv->N, f, "fftconv channel block");
    STRAND_PLAN_ADD(plan, cv->chan_out, cc * cv->N, f, "fftconv channel block");
    STRAND_PLAN_ADD(plan, cv->a_u, cc * cv->Nh, f, "fftconv spectrum of u");
    STRAND_PLAN_ADD(plan, cv->a_k, cc * cv->Nh, f, "fftconv spectrum of k");
    STRAND_PLAN_ADD(plan, cv->a_g, cc * cv->Nh, f, "fftconv spectrum of dy");
    STRAND_PLAN_ADD(plan, cv->a_tmp, cc * cv->Nh, f, "fftconv product spectrum");
    return STRAND_OK;
}

static int plan_alltoall(strand_fftconv *cv, unsigned planner) {
    if (cv->cc == 0) return STRAND_OK; /* more ranks than channels: this rank only relays */
    const int n = (int)cv->N, nh = (int)cv->Nh;
    cv->r2c = FFTW(plan_many_dft_r2c)(1, &n, cv->cc, cv->chan_in, NULL, 1, n, cv->a_u, NULL, 1, nh,
                                      planner | FFTW_PRESERVE_INPUT);
    cv->c2r =
        FFTW(plan_many_dft_c2r)(1, &n, cv->cc, cv->a_tmp, NULL, 1, nh, cv->chan_out, NULL, 1, n, planner);
    if (!cv->r2c || !cv->c2r)
        STRAND_FAIL(STRAND_ERR_INTERNAL, "fftconv: FFTW could not plan a real transform of size %lld",
                    (long long)cv->N);
    /* The planner may have scribbled over the arrays; the zero padding must be zero. */
    memset(cv->chan_in, 0, sizeof(real_t) * (size_t)(cv->cc * cv->N));
    return STRAND_OK;
}

static int setup_common(strand_fftconv *cv, const strand_shard *shard, int C) {
    const int sp = shard->grid->sp_size;
    cv->sp = sp;
    cv->rank = shard->grid->sp_rank;
    cv->C = C;
    cv->L = shard->window;
    cv->T = shard->T;
    cv->N = strand_fftconv_size_for(cv->L);
    STRAND_ALLOC(cv->piece_start, sp * STRAND_MAX_PIECES, "fftconv table");
    STRAND_ALLOC(cv->piece_length, sp * STRAND_MAX_PIECES, "fftconv table");
    STRAND_ALLOC(cv->n_pieces, sp, "fftconv table");
    STRAND_ALLOC(cv->shard_T, sp, "fftconv table");
    STRAND_ALLOC(cv->scount, sp, "fftconv table");
    STRAND_ALLOC(cv->sdispl, sp, "fftconv table");
    STRAND_ALLOC(cv->rcount, sp, "fftconv table");
    STRAND_ALLOC(cv->rdispl, sp, "fftconv table");
    for (int r = 0; r < sp; r++) {
        cv->n_pieces[r] = strand_shard_pieces(shard, r, cv->piece_start + r * STRAND_MAX_PIECES,
                                              cv->piece_length + r * STRAND_MAX_PIECES);
        cv->shard_T[r] = 0;
        for (int p = 0; p < cv->n_pieces[r]; p++)
            cv->shard_T[r] += cv->piece_length[r * STRAND_MAX_PIECES + p];
    }
    return STRAND_OK;
}

void strand_fftconv_options_from_config(const strand_config *config, strand_fftconv_options *options,
                                        char *wisdom, size_t wisdom_size) {
    /* enum strand_fft_strategy and strand_fft_planner are the values of the options' fields. */
    options->strategy = config->fft_strategy;
    options->measure = config->fft_planner;
    options->wisdom = NULL;
    options->threads = config->threads;
    wisdom[0] = '\0';
    /* Wisdom only helps measured plans; "" means the per-user cache file. */
    if (options->measure == 0) return;
    const char *home = getenv("HOME");
    if (config->fft_wisdom[0])
        snprintf(wisdom, wisdom_size, "%s", config->fft_wisdom);
    else if (home && home[0])
        snprintf(wisdom, wisdom_size, "%s/.cache/strand/fftw-%s.wisdom", home, STRAND_REAL_NAME);
    if (wisdom[0]) options->wisdom = wisdom;
}

int strand_fftconv_plan(strand_fftconv **conv, const strand_shard *shard, int C,
                        const strand_fftconv_options *options, int flags, strand_plan *plan) {
    *conv = NULL;
    if (C < 1) STRAND_FAIL(STRAND_ERR_CONFIG, "fftconv: channel count %d must be positive", C);
    const int strategy = options ? options->strategy : STRAND_CONV_AUTO;
    if (strategy != STRAND_CONV_AUTO && strategy != STRAND_CONV_FFTW_MPI && strategy != STRAND_CONV_ALLTOALL)
        STRAND_FAIL(STRAND_ERR_CONFIG, "fftconv: unknown strategy %d", strategy);
    const MPI_Comm sp_comm = shard->grid->sp_comm;
    if (!fftw_initialised && sp_comm != MPI_COMM_NULL) {
        FFTW(init_threads)(); /* before the MPI init, as FFTW's manual asks */
        FFTW_MPI(init)();
        fftw_initialised = 1;
    }
    /* The communicator first, on every rank: a rank whose allocation below fails must not skip
     * this collective while the others wait in it. */
    MPI_Comm comm = MPI_COMM_NULL;
    int status = STRAND_OK;
    if (sp_comm != MPI_COMM_NULL)
        status = MPI_Comm_dup(sp_comm, &comm) == MPI_SUCCESS &&
                         MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN) == MPI_SUCCESS
                     ? STRAND_OK
                     : strand_error_set(STRAND_ERR_MPI, __FILE__, __LINE__, "fftconv: MPI_Comm_dup failed");
    strand_fftconv *cv = status == STRAND_OK ? strand_alloc(sizeof *cv, "fftconv") : NULL;
    if (status == STRAND_OK && !cv) status = STRAND_ERR_NOMEM;
    if (cv) {
        *conv = cv; /* the caller frees it whatever happens */
        cv->comm = comm;
        cv->row = MPI_DATATYPE_NULL;
        cv->flags = flags;
        if (options) cv->options_copy = *options;
        cv->options = options ? &cv->options_copy : NULL;
        status = setup_common(cv, shard, C);
    } else if (comm != MPI_COMM_NULL) {
        MPI_Comm_free(&comm);
    }
    /* The FFTW-MPI sizes below are collective: agree before, as some rank could fail alone. */
    if (sp_comm != MPI_COMM_NULL) status = strand_agree(sp_comm, status);
    STRAND_CALL(status);
    cv->strategy = strategy == STRAND_CONV_AUTO ? choose_strategy(cv) : strategy;
    plan->conv_strategy = cv->strategy;
    const int component = strand_plan_component(plan, STRAND_MEM_FFT);
    status = cv->strategy == STRAND_CONV_ALLTOALL ? setup_alltoall(cv, plan) : setup_fftw_mpi(cv, plan);
    strand_plan_component(plan, component);
    return status;
}

int strand_fftconv_setup(strand_fftconv *cv, const strand_shard *shard) {
    (void)shard;
    const strand_fftconv_options *options = cv->options;
    int status = STRAND_OK;
    if (cv->strategy == STRAND_CONV_FFTW_MPI) {
        status =
            MPI_Type_contiguous(cv->C, STRAND_MPI_REAL, &cv->row) == MPI_SUCCESS &&
                    MPI_Type_commit(&cv->row) == MPI_SUCCESS
                ? STRAND_OK
                : strand_error_set(STRAND_ERR_MPI, __FILE__, __LINE__, "fftconv: MPI_Type_commit failed");
        STRAND_CALL(strand_agree(cv->comm, status));
    }
    const int effort = options ? options->measure : 0;
    const int measure = effort == 1 || (effort == STRAND_PLAN_AUTO && cv->N <= STRAND_PLAN_AUTO_MEASURE_MAX);
    const unsigned planner = measure ? FFTW_MEASURE : FFTW_ESTIMATE;
    const char *wisdom = options && options->wisdom && options->wisdom[0] ? options->wisdom : NULL;
    if (wisdom) wisdom_import(cv->comm, cv->rank, wisdom);
    FFTW(plan_with_nthreads)(options && options->threads > 1 ? options->threads : 1);
    status = cv->strategy == STRAND_CONV_ALLTOALL ? plan_alltoall(cv, planner) : plan_fftw_mpi(cv, planner);
    status = strand_agree(cv->comm, status);
    if (status == STRAND_OK && wisdom) wisdom_export(cv->comm, cv->rank, wisdom);
    return status;
}

int strand_fftconv_create(strand_fftconv **conv, const strand_shard *shard, int C,
                          const strand_fftconv_options *options) {
    strand_plan plan;
    strand_plan_init(&plan, 0, 0);
    int status = strand_fftconv_plan(conv, shard, C, options, STRAND_LIFE_SCRATCH, &plan);
    if (status == STRAND_OK) status = strand_agree(shard->grid->sp_comm, strand_plan_allocate(&plan));
    if (*conv)
        (*conv)->own = plan;
    else
        strand_plan_free(&plan);
    if (status == STRAND_OK) status = strand_fftconv_setup(*conv, shard);
    if (status != STRAND_OK) {
        strand_fftconv_free(*conv);
        *conv = NULL;
    }
    return status;
}

/* ---- FFTW_MPI path ---- */

#define COL(cv, base, j) ((base) + (int64_t)(j) * (cv)->col_stride)

/* Execute `plan` on columns [first, first + count) of base, in place. */
static void fm_execute(strand_fftconv *cv, fft_plan plan, cplx *base, int first, int count, int64_t rows) {
    for (int j = first; j < first + count; j++)
        TIMED_FFT(cv, FFTW_MPI(execute_dft)(plan, COL(cv, base, j), COL(cv, base, j)));
    cv->bytes_sent += count * fftw_transpose_bytes(cv, rows, 1);
    strand_comm_add_bytes(count * fftw_transpose_bytes(cv, rows, 1));
}

/* Shard rows of m arrays (T,C) -> FFTW input block rows, packed as columns 2p = a + ib and
 * 2p+1 = a - ib of each channel pair (a, b) into dst[j]; rows at positions >= L are zero. */
static int fm_to_block(strand_fftconv *cv, int m, const real_t *const *src, cplx *const *dst) {
    const int C = cv->C, P = cv->P, me = cv->rank;
    run_t runs[STRAND_MAX_PIECES];
    int64_t off = 0;
    for (int r = 0; r < cv->sp; r++) {
        const int64_t a = cv->all_in_start[r], b = min64(a + cv->all_in_n[r], cv->L);
        for (int j = 0; j < m; j++) {
            const int n = rank_runs(cv, me, a, b, runs);
            for (int q = 0; q < n; q++) {
                memcpy(cv->stage_send + off * C, src[j] + runs[q].local * C,
                       sizeof(real_t) * (size_t)(runs[q].len * C));
                off += runs[q].len;
            }
        }
    }
    STRAND_CALL(fill_counts(cv, cv->tb_send, cv->tb_recv, m, (int64_t)sizeof(real_t) * C));
    STRAND_CALL(exchange(cv, cv->row));
    const int64_t my_a = cv->in_start, my_b = min64(cv->in_start + cv->in_n, cv->L);
    off = 0;
    for (int s = 0; s < cv->sp; s++)
        for (int j = 0; j < m; j++) {
            const int n = rank_runs(cv, s, my_a, my_b, runs);
            for (int q = 0; q < n; q++) {
                const real_t *x = cv->stage_recv + off * C;
                const int64_t i0 = runs[q].pos - cv->in_start;
                for (int64_t t0 = 0; t0 < runs[q].len; t0 += TILE) {
                    const int64_t t1 = min64(t0 + TILE, runs[q].len);
                    for (int p = 0; p < P; p++) {
                        cplx *z = COL(cv, dst[j], 2 * p) + i0, *zc = COL(cv, dst[j], 2 * p + 1) + i0;
                        const int has_b = 2 * p + 1 < C;
                        for (int64_t t = t0; t < t1; t++) {
                            const real_t re = x[t * C + 2 * p], im = has_b ? x[t * C + 2 * p + 1] : 0;
                            z[t][0] = re;
                            z[t][1] = im;
                            zc[t][0] = re;
                            zc[t][1] = -im;
                        }
                    }
                }
                off += runs[q].len;
            }
        }
    const int64_t pad_from = (my_b > cv->in_start ? my_b : cv->in_start) - cv->in_start;
    for (int j = 0; j < m; j++)
        for (int c = 0; c < 2 * P; c++)
            memset(COL(cv, dst[j], c) + pad_from, 0, sizeof(cplx) * (size_t)(cv->in_n - pad_from));
    return STRAND_OK;
}

/* Inverse output rows (natural order) of columns first[j] + p (channel 2p = real part, 2p+1 =
 * imaginary part of column p) -> shard rows of out[j] (T,C), assigned or added. NULL outputs are
 * skipped. */
static int fm_from_block(strand_fftconv *cv, int m, const cplx *src, const int *first, real_t *const *out,
                         int accumulate) {
    const int C = cv->C, me = cv->rank;
    const real_t scale = (real_t)(1.0 / (double)cv->N);
    const int64_t my_a = cv->out_start, my_b = min64(cv->out_start + cv->out_n, cv->L);
    run_t runs[STRAND_MAX_PIECES];
    int64_t off = 0;
    for (int r = 0; r < cv->sp; r++)
        for (int j = 0; j < m; j++) {
            const int n = rank_runs(cv, r, my_a, my_b, runs);
            for (int q = 0; q < n; q++) {
                real_t *x = cv->stage_send + off * C;
                const int64_t i0 = runs[q].pos - cv->out_start;
                for (int64_t t0 = 0; t0 < runs[q].len; t0 += TILE) {
                    const int64_t t1 = min64(t0 + TILE, runs[q].len);
                    for (int c = 0; c < C; c++) {
                        const cplx *z = COL(cv, src, first[j] + c / 2) + i0;
                        const int part = c % 2;
                        for (int64_t t = t0; t < t1; t++)
                            x[t * C + c] = z[t][part] * scale;
                    }
                }
                off += runs[q].len;
            }
        }
    STRAND_CALL(fill_counts(cv, cv->fb_send, cv->fb_recv, m, (int64_t)sizeof(real_t) * C));
    STRAND_CALL(exchange(cv, cv->row));
    off = 0;
    for (int s = 0; s < cv->sp; s++) {
        const int64_t a = cv->all_out_start[s], b = min64(a + cv->all_out_n[s], cv->L);
        for (int j = 0; j < m; j++) {
            const int n = rank_runs(cv, me, a, b, runs);
            for (int q = 0; q < n; q++) {
                if (out[j]) {
                    real_t *y = out[j] + runs[q].local * C;
                    const real_t *x = cv->stage_recv + off * C;
                    const int64_t count = runs[q].len * C;
                    if (accumulate)
                        for (int64_t i = 0; i < count; i++)
                            y[i] += x[i];
                    else
                        memcpy(y, x, sizeof(real_t) * (size_t)count);
                }
                off += runs[q].len;
            }
        }
    }
    return STRAND_OK;
}

static int fm_forward(strand_fftconv *cv, real_t *y, const real_t *u, const real_t *k) {
    const int P = cv->P;
    const real_t *src[2] = {u, k};
    cplx *dst[2] = {cv->spec_u, cv->spec_k};
    STRAND_CALL(fm_to_block(cv, 2, src, dst));
    fm_execute(cv, cv->fwd, cv->spec_u, 0, 2 * P, cv->in_n);
    fm_execute(cv, cv->fwd, cv->spec_k, 0, 2 * P, cv->in_n);
    /* (W, Wc) -> (Ka, Kb) in place, then Y = Z Ka + Zc Kb into work column p. */
    for (int p = 0; p < P; p++) {
        cplx *w = COL(cv, cv->spec_k, 2 * p), *wc = COL(cv, cv->spec_k, 2 * p + 1);
        const cplx *z = COL(cv, cv->spec_u, 2 * p), *zc = COL(cv, cv->spec_u, 2 * p + 1);
        cplx *yp = COL(cv, cv->work, p);
        for (int64_t i = 0; i < cv->spec_n; i++) {
            const real_t wr = w[i][0], wi = w[i][1], vr = wc[i][0], vi = wc[i][1];
            /* K1 = (W + Wc)/2, K2 = (W - Wc)/(2i); Ka = (K1 + K2)/2, Kb = (K1 - K2)/2 */
            const real_t k1r = (wr + vr) / 2, k1i = (wi + vi) / 2, k2r = (wi - vi) / 2, k2i = -(wr - vr) / 2;
            const real_t ar = (k1r + k2r) / 2, ai = (k1i + k2i) / 2, br = (k1r - k2r) / 2,
                         bi = (k1i - k2i) / 2;
            w[i][0] = ar;
            w[i][1] = ai;
            wc[i][0] = br;
            wc[i][1] = bi;
            yp[i][0] = z[i][0] * ar - z[i][1] * ai + zc[i][0] * br - zc[i][1] * bi;
            yp[i][1] = z[i][0] * ai + z[i][1] * ar + zc[i][0] * bi + zc[i][1] * br;
        }
    }
    fm_execute(cv, cv->inv, cv->work, 0, P, cv->spec_n);
    real_t *out[1] = {y};
    const int first[1] = {0};
    return fm_from_block(cv, 1, cv->work, first, out, 0);
}

static int fm_backward(strand_fftconv *cv, real_t *du, real_t *dk, const real_t *dy, int accumulate) {
    const int P = cv->P;
    const real_t *src[1] = {dy};
    cplx *dst[1] = {cv->work};
    STRAND_CALL(fm_to_block(cv, 1, src, dst));
    fm_execute(cv, cv->fwd, cv->work, 0, 2 * P, cv->in_n);
    /* TILE rows at a time through a copy: the outputs (du in column p, dk in column P + p)
     * overwrite columns that other pairs still read. */
    cplx *tmp = cv->row_tmp; /* (2P, TILE) */
    for (int64_t i0 = 0; i0 < cv->spec_n; i0 += TILE) {
        const int64_t nb = min64(TILE, cv->spec_n - i0);
        for (int c = 0; c < 2 * P; c++)
            memcpy(tmp + c * TILE, COL(cv, cv->work, c) + i0, sizeof(cplx) * (size_t)nb);
        for (int p = 0; p < P; p++) {
            const cplx *g = tmp + 2 * p * TILE, *gc = tmp + (2 * p + 1) * TILE;
            const cplx *ka = COL(cv, cv->spec_k, 2 * p) + i0, *kb = COL(cv, cv->spec_k, 2 * p + 1) + i0;
            const cplx *z = COL(cv, cv->spec_u, 2 * p) + i0, *zc = COL(cv, cv->spec_u, 2 * p + 1) + i0;
            cplx *dup = COL(cv, cv->work, p) + i0, *dkp = COL(cv, cv->work, P + p) + i0;
            for (int64_t i = 0; i < nb; i++) {
                const real_t gr = g[i][0], gi = g[i][1], hr = gc[i][0], hi = gc[i][1];
                /* dU = G conj(Ka) + Gc conj(Kb) */
                dup[i][0] = gr * ka[i][0] + gi * ka[i][1] + hr * kb[i][0] + hi * kb[i][1];
                dup[i][1] = gi * ka[i][0] - gr * ka[i][1] + hi * kb[i][0] - hr * kb[i][1];
                /* dK = [(G+Gc)(S+Sc) + i (G-Gc)(S-Sc)] / 4 with S = conj(Z), Sc = conj(Zc) */
                const real_t sr = z[i][0] + zc[i][0], si = -(z[i][1] + zc[i][1]);
                const real_t dr = z[i][0] - zc[i][0], di = -(z[i][1] - zc[i][1]);
                const real_t pr = (gr + hr) * sr - (gi + hi) * si, pi = (gr + hr) * si + (gi + hi) * sr;
                const real_t mr = (gr - hr) * dr - (gi - hi) * di, mi = (gr - hr) * di + (gi - hi) * dr;
                dkp[i][0] = (pr - mi) / 4;
                dkp[i][1] = (pi + mr) / 4;
            }
        }
    }
    fm_execute(cv, cv->inv, cv->work, 0, 2 * P, cv->spec_n);
    real_t *out[2] = {du, dk};
    const int first[2] = {0, P};
    return fm_from_block(cv, 2, cv->work, first, out, accumulate);
}

/* ---- ALLTOALL path ---- */

/* Counts and displacements of m sets in one all-to-all. To channels: rank r gets our T rows of its
 * c_count[r] channels, and we get its shard_T[r] rows of our cc; back to positions, the reverse. */
static void aa_counts(strand_fftconv *cv, int m, int to_channels) {
    int64_t off_s = 0, off_r = 0, bytes = 0;
    for (int r = 0; r < cv->sp; r++) {
        const int64_t ours = m * cv->T * cv->c_count[r], theirs = m * cv->shard_T[r] * cv->cc;
        const int64_t sc = to_channels ? ours : theirs, rc = to_channels ? theirs : ours;
        cv->scount[r] = (int)sc;
        cv->sdispl[r] = (int)off_s;
        cv->rcount[r] = (int)rc;
        cv->rdispl[r] = (int)off_r;
        off_s += sc;
        off_r += rc;
        if (r != cv->rank) bytes += sc * (int64_t)sizeof(real_t);
    }
    cv->bytes_sent += bytes;
    strand_comm_add_bytes(bytes);
}

/* m arrays (T,C) -> the stage buffer laid out per destination r as [set][local row][its channels],
 * exchanged; counts in reals. */
static int aa_to_channels(strand_fftconv *cv, int m, const real_t *const *src) {
    const int C = cv->C;
    int64_t off = 0;
    for (int r = 0; r < cv->sp; r++) {
        const int64_t cs = cv->c_start[r], cc = cv->c_count[r];
        for (int j = 0; j < m; j++)
            for (int64_t i = 0; i < cv->T; i++) {
                memcpy(cv->stage_send + off, src[j] + i * C + cs, sizeof(real_t) * (size_t)cc);
                off += cc;
            }
    }
    aa_counts(cv, m, 1);
    return exchange(cv, STRAND_MPI_REAL);
}

/* Set j of the received block -> chan_in (cc, N) at natural positions (padding stays zero). With
 * one rank there is no exchange: `direct` is the caller's (T,C) array itself. */
static void aa_unpack_channels(strand_fftconv *cv, int m, int j, const real_t *direct) {
    const int64_t cc = cv->cc, N = cv->N;
    run_t runs[STRAND_MAX_PIECES];
    int64_t off = 0;
    for (int s = 0; s < cv->sp; s++) {
        const int64_t seg = cv->shard_T[s] * cc;
        const real_t *base = direct ? direct : cv->stage_recv + off + j * seg;
        const int n = rank_runs(cv, s, 0, cv->L, runs);
        for (int q = 0; q < n; q++) {
            const int64_t tiles = (runs[q].len + TILE - 1) / TILE;
#pragma omp parallel for schedule(static) if (runs[q].len * cc > 65536)
            for (int64_t tile = 0; tile < tiles; tile++) {
                const int64_t t0 = tile * TILE, t1 = min64(t0 + TILE, runs[q].len);
                for (int64_t c = 0; c < cc; c++) {
                    real_t *dst = cv->chan_in + c * N + runs[q].pos;
                    const real_t *x = base + runs[q].local * cc + c;
                    for (int64_t t = t0; t < t1; t++)
                        dst[t] = x[t * cc];
                }
            }
        }
        off += m * seg;
    }
}

/* chan_out (cc, N) scaled by 1/N -> set j of the send stage, per destination [set][its rows][cc].
 * With one rank, `direct` is the caller's (T,C) output, assigned or (accumulate) added. */
static void aa_pack_positions(strand_fftconv *cv, int m, int j, real_t *direct, int accumulate) {
    const int64_t cc = cv->cc, N = cv->N;
    const real_t scale = (real_t)(1.0 / (double)N);
    run_t runs[STRAND_MAX_PIECES];
    int64_t off = 0;
    for (int r = 0; r < cv->sp; r++) {
        const int64_t seg = cv->shard_T[r] * cc;
        real_t *base = direct ? direct : cv->stage_send + off + j * seg;
        const int add = direct && accumulate;
        const int n = rank_runs(cv, r, 0, cv->L, runs);
        for (int q = 0; q < n; q++) {
            const int64_t tiles = (runs[q].len + TILE - 1) / TILE;
#pragma omp parallel for schedule(static) if (runs[q].len * cc > 65536)
            for (int64_t tile = 0; tile < tiles; tile++) {
                const int64_t t0 = tile * TILE, t1 = min64(t0 + TILE, runs[q].len);
                for (int64_t c = 0; c < cc; c++) {
                    const real_t *src = cv->chan_out + c * N + runs[q].pos;
                    real_t *x = base + runs[q].local * cc + c;
                    if (add)
                        for (int64_t t = t0; t < t1; t++)
                            x[t * cc] += src[t] * scale;
                    else
                        for (int64_t t = t0; t < t1; t++)
                            x[t * cc] = src[t] * scale;
                }
            }
        }
        off += m * seg;
    }
}

/* Exchange the packed positions back and write (or add) set j into out[j] (T,C). */
static int aa_from_channels(strand_fftconv *cv, int m, real_t *const *out, int accumulate) {
    const int C = cv->C;
    aa_counts(cv, m, 0);
    STRAND_CALL(exchange(cv, STRAND_MPI_REAL));
    int64_t off = 0;
    for (int s = 0; s < cv->sp; s++) {
        const int64_t cs = cv->c_start[s], cc = cv->c_count[s], seg = cv->T * cc;
        for (int j = 0; j < m; j++) {
            if (!out[j]) continue;
            const real_t *x = cv->stage_recv + off + j * seg;
            for (int64_t i = 0; i < cv->T; i++) {
                real_t *y = out[j] + i * C + cs;
                if (accumulate)
                    for (int64_t c = 0; c < cc; c++)
                        y[c] += x[i * cc + c];
                else
                    memcpy(y, x + i * cc, sizeof(real_t) * (size_t)cc);
            }
        }
        off += m * seg;
    }
    return STRAND_OK;
}

/* a_tmp = x * y (conj_y: x * conj(y)) over this rank's (cc, Nh) spectra. */
static void aa_product(strand_fftconv *cv, const cplx *x, const cplx *y, int conj_y) {
    const int64_t n = cv->cc * cv->Nh;
    const real_t sign = conj_y ? -1 : 1;
    cplx *out = cv->a_tmp;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
        const real_t xr = x[i][0], xi = x[i][1], yr = y[i][0], yi = sign * y[i][1];
        out[i][0] = xr * yr - xi * yi;
        out[i][1] = xr * yi + xi * yr;
    }
}

/* One rank (no exchange): the transposes read the caller's arrays and write its outputs. */
static int aa_forward(strand_fftconv *cv, real_t *y, const real_t *u, const real_t *k) {
    const int alone = cv->sp == 1;
    if (!alone) {
        const real_t *src[2] = {u, k};
        STRAND_CALL(aa_to_channels(cv, 2, src));
    }
    if (cv->cc > 0) {
        aa_unpack_channels(cv, 2, 0, alone ? u : NULL);
        TIMED_FFT(cv, FFTW(execute_dft_r2c)(cv->r2c, cv->chan_in, cv->a_u));
        aa_unpack_channels(cv, 2, 1, alone ? k : NULL);
        TIMED_FFT(cv, FFTW(execute_dft_r2c)(cv->r2c, cv->chan_in, cv->a_k));
        aa_product(cv, cv->a_u, cv->a_k, 0);
        TIMED_FFT(cv, FFTW(execute_dft_c2r)(cv->c2r, cv->a_tmp, cv->chan_out));
        aa_pack_positions(cv, 1, 0, alone ? y : NULL, 0);
    }
    if (alone) return STRAND_OK;
    real_t *out[1] = {y};
    return aa_from_channels(cv, 1, out, 0);
}

static int aa_backward(strand_fftconv *cv, real_t *du, real_t *dk, const real_t *dy, int accumulate) {
    const int alone = cv->sp == 1;
    if (!alone) {
        const real_t *src[1] = {dy};
        STRAND_CALL(aa_to_channels(cv, 1, src));
    }
    if (cv->cc > 0) {
        aa_unpack_channels(cv, 1, 0, alone ? dy : NULL);
        TIMED_FFT(cv, FFTW(execute_dft_r2c)(cv->r2c, cv->chan_in, cv->a_g));
        /* du = correlation of dy with k; dk = correlation of dy with u. */
        if (du || !alone) {
            aa_product(cv, cv->a_g, cv->a_k, 1);
            TIMED_FFT(cv, FFTW(execute_dft_c2r)(cv->c2r, cv->a_tmp, cv->chan_out));
            aa_pack_positions(cv, 2, 0, alone ? du : NULL, accumulate);
        }
        if (dk || !alone) {
            aa_product(cv, cv->a_g, cv->a_u, 1);
            TIMED_FFT(cv, FFTW(execute_dft_c2r)(cv->c2r, cv->a_tmp, cv->chan_out));
            aa_pack_positions(cv, 2, 1, alone ? dk : NULL, accumulate);
        }
    }
    if (alone) return STRAND_OK;
    real_t *out[2] = {du, dk};
    return aa_from_channels(cv, 2, out, accumulate);
}

/* ---- public entry points ---- */

/* The call's FFTW time and the rest of it (packing, exchange, products) into the bench sections. */
static void add_sections(const strand_fftconv *conv, double t0, double fft_before) {
    if (t0 == 0) return; /* sections off */
    const double fft = conv->fft_seconds - fft_before;
    strand_section_add(STRAND_SECTION_FFT, fft);
    strand_section_add(STRAND_SECTION_EXCHANGE, strand_now() - t0 - fft);
}

int strand_fftconv_forward(strand_fftconv *conv, real_t *y, const real_t *u, const real_t *k) {
    const double t0 = strand_section_begin();
    conv->bytes_sent = 0;
    conv->fft_seconds = 0;
    conv->have_forward = 0;
    if (conv->strategy == STRAND_CONV_ALLTOALL)
        STRAND_CALL(aa_forward(conv, y, u, k));
    else
        STRAND_CALL(fm_forward(conv, y, u, k));
    conv->have_forward = 1;
    add_sections(conv, t0, 0);
    return STRAND_OK;
}

static int conv_backward(strand_fftconv *conv, real_t *du, real_t *dk, const real_t *dy, int accumulate) {
    if (!conv->have_forward)
        STRAND_FAIL(STRAND_ERR_INTERNAL, "fftconv: backward called without a preceding forward");
    const double t0 = strand_section_begin(), fft_before = conv->fft_seconds;
    if (conv->strategy == STRAND_CONV_ALLTOALL)
        STRAND_CALL(aa_backward(conv, du, dk, dy, accumulate));
    else
        STRAND_CALL(fm_backward(conv, du, dk, dy, accumulate));
    add_sections(conv, t0, fft_before);
    return STRAND_OK;
}

int strand_fftconv_backward(strand_fftconv *conv, real_t *du, real_t *dk, const real_t *dy) {
    return conv_backward(conv, du, dk, dy, 1);
}

int strand_fftconv_backward_assign(strand_fftconv *conv, real_t *du, real_t *dk, const real_t *dy) {
    return conv_backward(conv, du, dk, dy, 0);
}

/* The transforms of one forward + backward, executed back to back on this conv's plans and
 * buffers with no packing or exchange: FFTW's own time for the same work. Overwrites the saved
 * spectra (a following backward is refused). Collective for fftw-mpi. */
int strand_fftconv_fft_reference(strand_fftconv *cv, double *seconds) {
    cv->have_forward = 0;
    double t0;
    if (cv->strategy == STRAND_CONV_ALLTOALL) {
        const size_t spec = sizeof(cplx) * (size_t)(cv->cc * cv->Nh);
        memset(cv->a_tmp, 0, spec);
        memset(cv->chan_in, 0, sizeof(real_t) * (size_t)(cv->cc * cv->N));
        t0 = strand_now();
        if (cv->cc > 0) {
            FFTW(execute_dft_r2c)(cv->r2c, cv->chan_in, cv->a_u);
            FFTW(execute_dft_r2c)(cv->r2c, cv->chan_in, cv->a_k);
            FFTW(execute_dft_c2r)(cv->c2r, cv->a_tmp, cv->chan_out);
            FFTW(execute_dft_r2c)(cv->r2c, cv->chan_in, cv->a_g);
            FFTW(execute_dft_c2r)(cv->c2r, cv->a_tmp, cv->chan_out);
            FFTW(execute_dft_c2r)(cv->c2r, cv->a_tmp, cv->chan_out);
        }
        *seconds = strand_now() - t0;
        return STRAND_OK;
    }
    const size_t bytes = sizeof(cplx) * (size_t)(cv->col_stride * 2 * cv->P);
    memset(cv->spec_u, 0, bytes);
    memset(cv->spec_k, 0, bytes);
    memset(cv->work, 0, bytes);
    const int P = cv->P;
    STRAND_CALL_MPI(MPI_Barrier(cv->comm));
    t0 = strand_now();
    for (int j = 0; j < 2 * P; j++)
        FFTW_MPI(execute_dft)(cv->fwd, COL(cv, cv->spec_u, j), COL(cv, cv->spec_u, j));
    for (int j = 0; j < 2 * P; j++)
        FFTW_MPI(execute_dft)(cv->fwd, COL(cv, cv->spec_k, j), COL(cv, cv->spec_k, j));
    for (int j = 0; j < P; j++)
        FFTW_MPI(execute_dft)(cv->inv, COL(cv, cv->work, j), COL(cv, cv->work, j));
    for (int j = 0; j < 2 * P; j++)
        FFTW_MPI(execute_dft)(cv->fwd, COL(cv, cv->work, j), COL(cv, cv->work, j));
    for (int j = 0; j < 2 * P; j++)
        FFTW_MPI(execute_dft)(cv->inv, COL(cv, cv->work, j), COL(cv, cv->work, j));
    *seconds = strand_now() - t0;
    return STRAND_OK;
}

/* ---- direct reference ---- */

/* Every rank gets the whole window of `local` (T,C) in natural order: global (L,C). */
static int gather_window(const strand_shard *shard, int C, const real_t *local, real_t *global,
                         real_t *gathered, MPI_Datatype row, int *counts, int *displs) {
    const int sp = shard->grid->sp_size;
    STRAND_CALL_MPI(
        MPI_Allgatherv(local, (int)shard->T, row, gathered, counts, displs, row, shard->grid->sp_comm));
    for (int r = 0; r < sp; r++) {
        int64_t starts[STRAND_MAX_PIECES], lengths[STRAND_MAX_PIECES];
        const int n = strand_shard_pieces(shard, r, starts, lengths);
        int64_t row_off = displs[r];
        for (int p = 0; p < n; p++) {
            memcpy(global + starts[p] * C, gathered + row_off * C, sizeof(real_t) * (size_t)(lengths[p] * C));
            row_off += lengths[p];
        }
    }
    return STRAND_OK;
}

typedef struct {
    MPI_Datatype row;
    int *counts, *displs;
    real_t *gathered;
    real_t *global[3];
    double *acc;
} direct_ws;

static void direct_ws_free(direct_ws *ws) {
    if (ws->row != MPI_DATATYPE_NULL) MPI_Type_free(&ws->row);
    strand_free(ws->counts);
    strand_free(ws->displs);
    strand_free(ws->gathered);
    for (int i = 0; i < 3; i++)
        strand_free(ws->global[i]);
    strand_free(ws->acc);
}

static int direct_ws_init(direct_ws *ws, const strand_shard *shard, int C, int n_global) {
    memset(ws, 0, sizeof *ws);
    ws->row = MPI_DATATYPE_NULL;
    const int sp = shard->grid->sp_size;
    const int64_t L = shard->window;
    if (L > INT_MAX) STRAND_FAIL(STRAND_ERR_INPUT, "fftconv direct: window %lld is too long", (long long)L);
    STRAND_ALLOC(ws->counts, sp, "direct conv");
    STRAND_ALLOC(ws->displs, sp, "direct conv");
    int64_t off = 0;
    for (int r = 0; r < sp; r++) {
        ws->counts[r] = (int)shard->shard_lengths[r];
        ws->displs[r] = (int)off;
        off += shard->shard_lengths[r];
    }
    STRAND_ALLOC(ws->gathered, L * C, "direct conv");
    for (int i = 0; i < n_global; i++)
        STRAND_ALLOC(ws->global[i], L * C, "direct conv");
    STRAND_ALLOC(ws->acc, 2 * C, "direct conv");
    STRAND_CALL_MPI(MPI_Type_contiguous(C, STRAND_MPI_REAL, &ws->row));
    STRAND_CALL_MPI(MPI_Type_commit(&ws->row));
    return STRAND_OK;
}

static int direct_forward_body(direct_ws *ws, const strand_shard *shard, int C, real_t *y, const real_t *u,
                               const real_t *k) {
    real_t *U = ws->global[0], *K = ws->global[1];
    STRAND_CALL(gather_window(shard, C, u, U, ws->gathered, ws->row, ws->counts, ws->displs));
    STRAND_CALL(gather_window(shard, C, k, K, ws->gathered, ws->row, ws->counts, ws->displs));
    for (int64_t i = 0; i < shard->T; i++) {
        const int64_t t = strand_shard_position(shard, i);
        memset(ws->acc, 0, sizeof(double) * (size_t)C);
        for (int64_t s = 0; s <= t; s++) {
            const real_t *ur = U + s * C, *kr = K + (t - s) * C;
            for (int c = 0; c < C; c++)
                ws->acc[c] += (double)kr[c] * (double)ur[c];
        }
        for (int c = 0; c < C; c++)
            y[i * C + c] = (real_t)ws->acc[c];
    }
    return STRAND_OK;
}

int strand_fftconv_direct(const strand_shard *shard, int C, real_t *y, const real_t *u, const real_t *k) {
    direct_ws ws;
    int status = direct_ws_init(&ws, shard, C, 2);
    status = strand_agree(shard->grid->sp_comm, status);
    if (status == STRAND_OK) status = direct_forward_body(&ws, shard, C, y, u, k);
    direct_ws_free(&ws);
    return status;
}

static int direct_backward_body(direct_ws *ws, const strand_shard *shard, int C, real_t *du, real_t *dk,
                                const real_t *dy, const real_t *u, const real_t *k) {
    real_t *DY = ws->global[0], *U = ws->global[1], *K = ws->global[2];
    const int64_t L = shard->window;
    STRAND_CALL(gather_window(shard, C, dy, DY, ws->gathered, ws->row, ws->counts, ws->displs));
    STRAND_CALL(gather_window(shard, C, u, U, ws->gathered, ws->row, ws->counts, ws->displs));
    STRAND_CALL(gather_window(shard, C, k, K, ws->gathered, ws->row, ws->counts, ws->displs));
    double *au = ws->acc, *ak = ws->acc + C;
    for (int64_t i = 0; i < shard->T; i++) {
        const int64_t s = strand_shard_position(shard, i); /* input position for du, lag for dk */
        memset(ws->acc, 0, sizeof(double) * (size_t)(2 * C));
        for (int64_t t = s; t < L; t++) {
            const real_t *g = DY + t * C, *kr = K + (t - s) * C, *ur = U + (t - s) * C;
            for (int c = 0; c < C; c++) {
                au[c] += (double)g[c] * (double)kr[c];
                ak[c] += (double)g[c] * (double)ur[c];
            }
        }
        for (int c = 0; c < C; c++) {
            if (du) du[i * C + c] += (real_t)au[c];
            if (dk) dk[i * C + c] += (real_t)ak[c];
        }
    }
    return STRAND_OK;
}

int strand_fftconv_direct_backward(const strand_shard *shard, int C, real_t *du, real_t *dk, const real_t *dy,
                                   const real_t *u, const real_t *k) {
    direct_ws ws;
    int status = direct_ws_init(&ws, shard, C, 3);
    status = strand_agree(shard->grid->sp_comm, status);
    if (status == STRAND_OK) status = direct_backward_body(&ws, shard, C, du, dk, dy, u, k);
    direct_ws_free(&ws);
    return status;
}
