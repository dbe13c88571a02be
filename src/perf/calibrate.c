/* strand calibrate: measure the constants of strand_machine on this machine (perf.h).
 *
 * Every timing is the median of `repeats` runs after one warm-up run. Rates of one rank are
 * measured on rank 0 of comm while the other ranks wait; the ones that need ranks (ping-pong,
 * all-to-all, parallel HDF5) run on them all. Rank 0's struct is broadcast at the end, so every
 * rank returns the same machine. Every failure is agreed before the next collective. */
#define _DEFAULT_SOURCE /* gethostname, sysconf pages */
#include "strand/perf.h"

#include "strand/dataset.h"
#include "strand/dist.h"
#include "strand/layout.h"
#include "kernels/ring_attn.h"
#include "core/rng.h"
#include "perf/calibrate_formulas.h"

#include <cblas.h>
#include <errno.h>
#include <fftw3.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef STRAND_REAL_DOUBLE
#define FFTW(name) fftw_##name
#define R_GEMM cblas_dgemm
#define R_GEMV cblas_dgemv
#define R_EXP exp
#define R_SIN sin
#define R_TANH tanh
#else
#define FFTW(name) fftwf_##name
#define R_GEMM cblas_sgemm
#define R_GEMV cblas_sgemv
#define R_EXP expf
#define R_SIN sinf
#define R_TANH tanhf
#endif

/* Point-to-point tag on calibrate's own duplicate of comm (so no other exchange can match it). */
enum { CAL_TAG_PINGPONG = 9101 };
enum { MAX_REPEATS = 16, GEMV_M = 4096, GEMV_N = 1024, ATTN_HEADS = 2 };

/* ---- the formulas (calibrate_formulas.h) ---- */

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double strand_cal_node_factor(double alone, double together) {
    if (!(alone > 0) || !(together > 0)) return 1;
    return together < alone ? together / alone : 1;
}

double strand_cal_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double strand_cal_gemm_gflops(double m, double n, double k, double seconds) {
    return 2.0 * m * n * k / seconds / 1e9;
}

double strand_cal_gemv_gflops(double m, double n, double repeats, double seconds) {
    return 2.0 * m * n * repeats / seconds / 1e9;
}

double strand_cal_fft_s_per_point(double seconds, double n, double pairs) {
    return seconds / (2.0 * pairs * n);
}

double strand_cal_attn_flops(int64_t length, int heads, int head_dim) {
    const double pairs = 0.5 * (double)length * (double)(length + 1);
    return 3.5 * 4.0 * pairs * heads * head_dim;
}

double strand_cal_triad_bytes_per_s(double n, double element_bytes, double seconds) {
    return 3.0 * n * element_bytes / seconds;
}

double strand_cal_alltoall_bytes_per_s(double bytes_per_peer, int ranks, double seconds) {
    return bytes_per_peer * (ranks - 1) / seconds;
}

void strand_cal_pingpong_fit(double small_bytes, double small_rtt_s, double large_bytes, double large_rtt_s,
                             double *latency_s, double *bytes_per_s) {
    const double t_small = 0.5 * small_rtt_s, t_large = 0.5 * large_rtt_s;
    if (t_large <= t_small || large_bytes <= small_bytes) {
        *latency_s = t_small;
        *bytes_per_s = large_bytes / t_large;
        return;
    }
    *bytes_per_s = (large_bytes - small_bytes) / (t_large - t_small);
    /* The small message's own transfer time is not latency; a negative rest is noise. */
    const double rest = t_small - small_bytes / *bytes_per_s;
    *latency_s = rest > 0 ? rest : t_small;
}

double strand_cal_interp_log(const double *x, const double *y, int n, double at) {
    if (!(at > x[0])) return y[0]; /* also NaN and non-positive sizes */
    if (at >= x[n - 1]) return y[n - 1];
    int i = 1;
    while (x[i] < at)
        i++;
    const double f = (log(at) - log(x[i - 1])) / (log(x[i]) - log(x[i - 1]));
    return y[i - 1] + f * (y[i] - y[i - 1]);
}

/* ---- timing ---- */

/* Seconds of one run of `stmt`: the median of `repeats` after `warmups` untimed runs (never 0, so
 * rates stay finite on a coarse clock). */
#define TIMED_MEDIAN(seconds, warmups, repeats, stmt)                                                        \
    do {                                                                                                     \
        double t_[MAX_REPEATS];                                                                              \
        for (int r_ = -(warmups); r_ < (repeats); r_++) {                                                    \
            const double t0_ = strand_now();                                                                 \
            stmt;                                                                                            \
            const double dt_ = strand_now() - t0_;                                                           \
            if (r_ >= 0) t_[r_] = fmax(dt_, 1e-9);                                                           \
        }                                                                                                    \
        (seconds) = strand_cal_median(t_, (repeats));                                                        \
    } while (0)

typedef struct {
    int quick, repeats;
} cal_plan;

static void fill_random(real_t *x, int64_t n, uint64_t stream) {
    for (int64_t i = 0; i < n; i++)
        x[i] = (real_t)(2.0 * strand_rng_uniform(2026, stream, 0, (uint64_t)i) - 1.0);
}

/* ---- one rank: BLAS ---- */

static int measure_blas(const cal_plan *p, strand_machine *m) {
    static const int widths[STRAND_MACHINE_GEMM_WIDTHS] = {16, 32, 64, 128, 256, 512, 1024};
    const int square = p->quick ? 256 : 1024, rows = p->quick ? 1024 : 8192, wmax = widths[6];
    /* A holds (rows, wmax) or the square or the GEMV matrix; B (wmax, 4 wmax); C (rows, 4 wmax). */
    const int64_t na =
        (int64_t)rows * wmax > (int64_t)GEMV_M * GEMV_N ? (int64_t)rows * wmax : (int64_t)GEMV_M * GEMV_N;
    real_t *a = strand_alloc(sizeof(real_t) * (size_t)na, "calibrate GEMM");
    real_t *b = strand_alloc(sizeof(real_t) * (size_t)wmax * 4 * wmax, "calibrate GEMM");
    real_t *c = strand_alloc(sizeof(real_t) * (size_t)rows * 4 * wmax, "calibrate GEMM");
    int status = a && b && c ? STRAND_OK : STRAND_ERR_NOMEM;
    if (status == STRAND_OK) {
        fill_random(a, na, 1);
        fill_random(b, (int64_t)wmax * 4 * wmax, 2);
        double t = 0;
        const int n = square;
        TIMED_MEDIAN(t, 1, p->repeats,
                     R_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n));
        m->sgemm_gflops = strand_cal_gemm_gflops(n, n, n, t);
        /* The square product warmed BLAS up; --quick times each shape once (they dominate its cost). */
        const int warm = p->quick ? 0 : 1, repeats = p->quick ? 1 : p->repeats;
        for (int i = 0; i < STRAND_MACHINE_GEMM_WIDTHS; i++) {
            const int w = widths[i];
            TIMED_MEDIAN(t, warm, repeats,
                         R_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, 4 * w, w, 1, a, w, b, 4 * w,
                                0, c, 4 * w));
            m->gemm_width[i] = w;
            m->gemm_gflops[i] = strand_cal_gemm_gflops(rows, 4 * w, w, t);
        }
        /* GEMV is memory-bound: repeat it so one timing covers many passes over the 16 MB matrix. */
        const int gemv_repeats = p->quick ? 10 : 40;
        TIMED_MEDIAN(t, 1, p->repeats,
                     for (int r = 0; r < gemv_repeats; r++)
                         R_GEMV(CblasRowMajor, CblasNoTrans, GEMV_M, GEMV_N, 1, a, GEMV_N, b, 1, 0, c, 1));
        m->sgemv_gflops = strand_cal_gemv_gflops(GEMV_M, GEMV_N, gemv_repeats, t);
    }
    strand_free(a), strand_free(b), strand_free(c);
    return status;
}

/* ---- one rank: FFTW ---- */

static int measure_fft(const cal_plan *p, strand_machine *m) {
    const int64_t nmax = 1 << 22, measured_max = p->quick ? 1 << 16 : nmax;
    /* Out of place, so the input never changes: the unnormalised round trips cannot overflow. */
    real_t *x = strand_alloc(sizeof(real_t) * (size_t)(2 * measured_max), "calibrate FFT");
    real_t *y = strand_alloc(sizeof(real_t) * (size_t)(2 * measured_max + 2), "calibrate FFT");
    real_t *z = strand_alloc(sizeof(real_t) * (size_t)(2 * measured_max), "calibrate FFT");
    int status = x && y && z ? STRAND_OK : STRAND_ERR_NOMEM;
    if (status == STRAND_OK) fill_random(x, 2 * measured_max, 3);
    for (int i = 0; i < STRAND_MACHINE_FFT_SIZES && status == STRAND_OK; i++) {
        const int64_t n = (int64_t)1 << (10 + 3 * i);
        m->fft_size[i] = (double)n;
        if (n > measured_max) { /* quick: the largest measured size stands in */
            m->fft_real_s_per_point[i] = m->fft_real_s_per_point[i - 1];
            m->fft_complex_s_per_point[i] = m->fft_complex_s_per_point[i - 1];
            continue;
        }
        /* Small transforms repeated so that one timing is long enough to trust. */
        const int pairs =
            (int)((p->quick ? 1 << 18 : 1 << 20) / n > 1 ? (p->quick ? 1 << 18 : 1 << 20) / n : 1);
        FFTW(complex) *yc = (FFTW(complex) *)(void *)y;
        FFTW(plan) r2c = FFTW(plan_dft_r2c_1d)((int)n, x, yc, FFTW_ESTIMATE);
        FFTW(plan) c2r = FFTW(plan_dft_c2r_1d)((int)n, yc, z, FFTW_ESTIMATE);
        FFTW(complex) *xc = (FFTW(complex) *)(void *)x, *zc = (FFTW(complex) *)(void *)z;
        FFTW(plan) fwd = FFTW(plan_dft_1d)((int)n, xc, yc, FFTW_FORWARD, FFTW_ESTIMATE);
        FFTW(plan) inv = FFTW(plan_dft_1d)((int)n, yc, zc, FFTW_BACKWARD, FFTW_ESTIMATE);
        if (!r2c || !c2r || !fwd || !inv) {
            status = strand_error_set(STRAND_ERR_INTERNAL, __FILE__, __LINE__,
                                      "calibrate: FFTW could not plan transforms of size %lld", (long long)n);
        } else {
            double t = 0;
            TIMED_MEDIAN(
                t, 1, p->repeats, for (int r = 0; r < pairs; r++) {
                    FFTW(execute)(r2c);
                    FFTW(execute)(c2r);
                });
            m->fft_real_s_per_point[i] = strand_cal_fft_s_per_point(t, (double)n, pairs);
            TIMED_MEDIAN(
                t, 1, p->repeats, for (int r = 0; r < pairs; r++) {
                    FFTW(execute)(fwd);
                    FFTW(execute)(inv);
                });
            m->fft_complex_s_per_point[i] = strand_cal_fft_s_per_point(t, (double)n, pairs);
        }
        FFTW(plan) plans[] = {r2c, c2r, fwd, inv};
        for (int k = 0; k < 4; k++)
            if (plans[k]) FFTW(destroy_plan)(plans[k]);
    }
    strand_free(x), strand_free(y), strand_free(z);
    return status;
}

/* ---- one rank: the attention tile kernel (ring attention on a one-rank grid) ---- */

typedef struct {
    strand_grid grid;
    strand_shard shard;
    strand_ring_attn ra;
    int64_t *pos;
    real_t *q, *kv, *dout, *out, *lse, *dq, *dkv;
} attn_bench;

static int attn_one(const cal_plan *p, attn_bench *b, int64_t L, int E, double *gflops) {
    const int H = ATTN_HEADS, HE = H * E, KVW = 2 * H * E;
    int status = strand_ring_attn_init(&b->ra, &b->shard, H, H, E, 0, 0, 0, 0);
    if (status != STRAND_OK) {
        strand_ring_attn_free(&b->ra); /* frees what a failed init made */
        return status;
    }
    fill_random(b->q, b->shard.T * HE, 11);
    fill_random(b->dout, b->shard.T * HE, 12);
    fill_random(b->kv, b->shard.T * KVW, 13);
    double t = 0;
    TIMED_MEDIAN(t, 1, p->repeats, {
        if (status == STRAND_OK)
            status =
                strand_ring_attn_forward(&b->ra, b->out, b->lse, b->q, b->pos, b->kv, b->pos, NULL, NULL);
        if (status == STRAND_OK)
            status = strand_ring_attn_backward(&b->ra, b->dq, b->dkv, b->dout, b->out, b->lse, b->q, b->pos,
                                               b->kv, b->pos, NULL, NULL);
    });
    strand_ring_attn_free(&b->ra);
    *gflops = strand_cal_attn_flops(L, H, E) / t / 1e9;
    return status;
}

static int attn_run(const cal_plan *p, attn_bench *b, strand_machine *m) {
    static const int dims[STRAND_MACHINE_ATTN_DIMS] = {32, 64, 128};
    const int64_t L = p->quick ? 1024 : 4096;
    const int E = dims[STRAND_MACHINE_ATTN_DIMS - 1], HE = ATTN_HEADS * E;
    STRAND_CALL(strand_grid_init(&b->grid, MPI_COMM_SELF, 1, 1));
    STRAND_CALL(strand_shard_init(&b->shard, &b->grid, L, STRAND_LAYOUT_ZIGZAG));
    const int64_t T = b->shard.T;
    STRAND_ALLOC(b->pos, T, "calibrate attention");
    STRAND_ALLOC(b->q, T * HE, "calibrate attention");
    STRAND_ALLOC(b->kv, T * 2 * HE, "calibrate attention");
    STRAND_ALLOC(b->dout, T * HE, "calibrate attention");
    STRAND_ALLOC(b->out, T * HE, "calibrate attention");
    STRAND_ALLOC(b->lse, T * ATTN_HEADS, "calibrate attention");
    STRAND_ALLOC(b->dq, T * HE, "calibrate attention");
    STRAND_ALLOC(b->dkv, T * 2 * HE, "calibrate attention");
    for (int64_t i = 0; i < T; i++)
        b->pos[i] = strand_shard_position(&b->shard, i);
    for (int i = 0; i < STRAND_MACHINE_ATTN_DIMS; i++) {
        m->attn_head_dim[i] = dims[i];
        STRAND_CALL(attn_one(p, b, L, dims[i], &m->attn_gflops[i]));
    }
    return STRAND_OK;
}

static int measure_attn(const cal_plan *p, strand_machine *m) {
    attn_bench b;
    memset(&b, 0, sizeof b);
    const int status = attn_run(p, &b, m);
    real_t *bufs[] = {b.q, b.kv, b.dout, b.out, b.lse, b.dq, b.dkv};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        strand_free(bufs[i]);
    strand_free(b.pos);
    strand_shard_free(&b.shard);
    strand_grid_free(&b.grid);
    return status;
}

/* ---- one rank: memory and libm ---- */

static volatile double cal_sink; /* keeps the results of loops nothing else reads */

static int measure_memory(const cal_plan *p, strand_machine *m) {
    const int64_t n = (int64_t)(p->quick ? 4 : 32) * 1024 * 1024, nt = p->quick ? 1 << 18 : 1 << 20;
    real_t *a = strand_alloc(sizeof(real_t) * (size_t)n, "calibrate triad");
    real_t *b = strand_alloc(sizeof(real_t) * (size_t)n, "calibrate triad");
    real_t *c = strand_alloc(sizeof(real_t) * (size_t)n, "calibrate triad");
    int status = a && b && c ? STRAND_OK : STRAND_ERR_NOMEM;
    if (status == STRAND_OK) {
        fill_random(b, n, 4);
        fill_random(c, n, 5);
        const real_t s = (real_t)0.5;
        double t = 0;
        TIMED_MEDIAN(t, 1, p->repeats, for (int64_t i = 0; i < n; i++) a[i] = b[i] + s * c[i]);
        cal_sink = a[n / 2];
        m->memory_bytes_per_s = strand_cal_triad_bytes_per_s((double)n, sizeof(real_t), t);
        /* Arguments in [-1, 1) (strand's activations); b holds them, a the results. */
        TIMED_MEDIAN(t, 1, p->repeats,
                     for (int64_t i = 0; i < nt; i++) a[i] = R_EXP(b[i]) + R_SIN(b[i]) + R_TANH(b[i]));
        cal_sink = a[nt / 2];
        m->transcendentals_per_s = 3.0 * (double)nt / t;
    }
    strand_free(a), strand_free(b), strand_free(c);
    return status;
}

/* The triad on every rank of rank 0's node at once (one per core, after a barrier): the node's
 * bandwidth as the sum of theirs; then the same for a GEMM against rank 0's alone. Collective over comm;
 * ranks on other nodes only take part in the sums. */
static int measure_node_memory(const cal_plan *p, MPI_Comm comm, int rank, int size, const int *node,
                               strand_machine *m) {
    /* At most one rank per core takes part: more would measure time-sharing, which strand plan
     * models on its own (ranks / cores). */
    const long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int index = 0; /* this rank's place among the ranks of rank 0's node */
    for (int r = 0; r < rank; r++)
        index += node[r] == node[0];
    const int mine = node[rank] == node[0] && (cores <= 0 || index < cores);
    const int64_t n = (int64_t)(p->quick ? 4 : 32) * 1024 * 1024;
    real_t *a = NULL, *b = NULL, *c = NULL;
    if (mine) {
        a = strand_alloc(sizeof(real_t) * (size_t)n, "calibrate node triad");
        b = strand_alloc(sizeof(real_t) * (size_t)n, "calibrate node triad");
        c = strand_alloc(sizeof(real_t) * (size_t)n, "calibrate node triad");
    }
    int status = strand_agree(comm, !mine || (a && b && c) ? STRAND_OK : STRAND_ERR_NOMEM);
    double bw = 0, total = 0;
    if (status == STRAND_OK && mine) {
        fill_random(b, n, 6);
        fill_random(c, n, 7);
    }
    if (status == STRAND_OK && MPI_Barrier(comm) != MPI_SUCCESS)
        status = strand_error_set(STRAND_ERR_MPI, __FILE__, __LINE__, "calibrate: MPI_Barrier failed");
    if (status == STRAND_OK && mine) {
        const real_t s = (real_t)0.5;
        double t = 0;
        TIMED_MEDIAN(t, 1, p->repeats, for (int64_t i = 0; i < n; i++) a[i] = b[i] + s * c[i]);
        cal_sink = a[n / 2];
        bw = strand_cal_triad_bytes_per_s((double)n, sizeof(real_t), t);
    }
    /* A GEMM of the MLP's shape at width 128: on rank 0 alone, then on every rank of the node at
     * once, back to back so that the machine's drift does not come between them. */
    const int rows = p->quick ? 1024 : 8192, w = 128;
    double alone = 0, together = 0, rate = 0;
    STRAND_ASSERT((int64_t)rows * 4 * w <= n); /* the triad's arrays hold the GEMM's operands */
    for (int phase = 0; phase < 2 && status == STRAND_OK; phase++) {
        if (MPI_Barrier(comm) != MPI_SUCCESS) {
            status = strand_error_set(STRAND_ERR_MPI, __FILE__, __LINE__, "calibrate: MPI_Barrier failed");
            break;
        }
        if (!mine || (phase == 0 && rank != 0)) continue;
        double t = 0;
        TIMED_MEDIAN(t, 1, p->repeats,
                     R_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, 4 * w, w, 1, b, w, c, 4 * w, 0,
                            a, 4 * w));
        rate = strand_cal_gemm_gflops(rows, 4 * w, w, t);
        if (phase == 0) alone = rate;
    }
    strand_free(a), strand_free(b), strand_free(c);
    STRAND_CALL(status);
    const double mine_values[2] = {bw, mine ? rate : 0};
    double sums[2] = {0, 0};
    STRAND_CALL_MPI(MPI_Allreduce(mine_values, sums, 2, MPI_DOUBLE, MPI_SUM, comm));
    total = sums[0], together = sums[1];
    m->memory_node_bytes_per_s = total;
    int taking_part = mine;
    STRAND_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &taking_part, 1, MPI_INT, MPI_SUM, comm));
    m->memory_node_ranks = taking_part;
    if (rank == 0) m->compute_node_factor = strand_cal_node_factor(alone, together / m->memory_node_ranks);
    return STRAND_OK;
}

static int measure_local(const cal_plan *p, strand_machine *m) {
    STRAND_CALL(measure_blas(p, m));
    STRAND_CALL(measure_fft(p, m));
    STRAND_CALL(measure_attn(p, m));
    return measure_memory(p, m);
}

/* ---- ranks: topology, ping-pong, all-to-all ---- */

/* A barrier that sleeps between polls instead of spinning. */
static int idle_barrier(MPI_Comm comm) {
    MPI_Request request = MPI_REQUEST_NULL;
    STRAND_CALL_MPI(MPI_Ibarrier(comm, &request));
    for (int done = 0; !done;) {
        STRAND_CALL_MPI(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
        if (!done) strand_sleep(1e-3);
    }
    return STRAND_OK;
}

/* node[r]: the lowest rank of comm on rank r's node. */
static int find_nodes(MPI_Comm comm, int rank, int *node, int *nodes) {
    MPI_Comm shared = MPI_COMM_NULL;
    STRAND_CALL_MPI(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &shared));
    int leader = rank;
    int code = MPI_Bcast(&leader, 1, MPI_INT, 0, shared);
    MPI_Comm_free(&shared);
    if (code != MPI_SUCCESS) return strand_mpi_error(code, "MPI_Bcast", __FILE__, __LINE__);
    STRAND_CALL_MPI(MPI_Allgather(&leader, 1, MPI_INT, node, 1, MPI_INT, comm));
    int size = 0;
    MPI_Comm_size(comm, &size);
    *nodes = 0;
    for (int r = 0; r < size; r++)
        *nodes += node[r] == r;
    return STRAND_OK;
}

/* Median round trip of `bytes` between rank 0 and `partner` (both call it; buf holds bytes). */
static int pingpong(MPI_Comm comm, int rank, int partner, char *buf, int bytes, int trips, int repeats,
                    double *rtt) {
    const int peer = rank == 0 ? partner : 0;
    double t = 0;
    int code = MPI_SUCCESS;
    TIMED_MEDIAN(
        t, 1, repeats, for (int k = 0; k < trips && code == MPI_SUCCESS; k++) {
            if (rank == 0) {
                code = MPI_Send(buf, bytes, MPI_BYTE, peer, CAL_TAG_PINGPONG, comm);
                if (code == MPI_SUCCESS)
                    code = MPI_Recv(buf, bytes, MPI_BYTE, peer, CAL_TAG_PINGPONG, comm, MPI_STATUS_IGNORE);
            } else {
                code = MPI_Recv(buf, bytes, MPI_BYTE, peer, CAL_TAG_PINGPONG, comm, MPI_STATUS_IGNORE);
                if (code == MPI_SUCCESS) code = MPI_Send(buf, bytes, MPI_BYTE, peer, CAL_TAG_PINGPONG, comm);
            }
        });
    if (code != MPI_SUCCESS)
        return strand_mpi_error(code, "MPI_Send/MPI_Recv (ping-pong)", __FILE__, __LINE__);
    *rtt = t / trips;
    return STRAND_OK;
}

/* Latency and bandwidth between rank 0 and partner (collective: the others only agree). */
static int measure_p2p(const cal_plan *p, MPI_Comm comm, int rank, int partner, double *latency_s,
                       double *bytes_per_s) {
    const int small = 8, large = 4 * 1024 * 1024, pair = rank == 0 || rank == partner;
    char *buf = pair ? strand_alloc((size_t)large, "calibrate ping-pong") : NULL;
    int status = strand_agree(comm, !pair || buf ? STRAND_OK : STRAND_ERR_NOMEM);
    if (status != STRAND_OK) {
        strand_free(buf);
        return status;
    }
    if (pair) {
        double rtt_small = 0, rtt_large = 0;
        status = pingpong(comm, rank, partner, buf, small, p->quick ? 200 : 1000, p->repeats, &rtt_small);
        if (status == STRAND_OK)
            status = pingpong(comm, rank, partner, buf, large, p->quick ? 4 : 10, p->repeats, &rtt_large);
        if (status == STRAND_OK)
            strand_cal_pingpong_fit(small, rtt_small, large, rtt_large, latency_s, bytes_per_s);
    }
    strand_free(buf);
    /* The other ranks sleep meanwhile: spinning ranks would slow the pair on a full node. */
    const int waited = idle_barrier(comm);
    return strand_agree(comm, status != STRAND_OK ? status : waited);
}

static int measure_alltoall(const cal_plan *p, MPI_Comm comm, int size, double *bytes_per_s) {
    /* Per peer 1 MiB (quick 64 KiB), less on large jobs so the buffers stay within 256 MiB. */
    int64_t per_peer = p->quick ? 64 * 1024 : 1024 * 1024;
    if (per_peer * size > 256 * 1024 * 1024) per_peer = 256 * 1024 * 1024 / size;
    char *send = strand_alloc((size_t)(per_peer * size), "calibrate all-to-all");
    char *recv = strand_alloc((size_t)(per_peer * size), "calibrate all-to-all");
    int status = strand_agree(comm, send && recv ? STRAND_OK : STRAND_ERR_NOMEM);
    double t[MAX_REPEATS + 1];
    for (int r = -1; r < p->repeats && status == STRAND_OK; r++) {
        int code = MPI_Barrier(comm);
        const double t0 = strand_now();
        if (code == MPI_SUCCESS)
            code = MPI_Alltoall(send, (int)per_peer, MPI_BYTE, recv, (int)per_peer, MPI_BYTE, comm);
        if (r >= 0) t[r] = fmax(strand_now() - t0, 1e-9);
        if (code != MPI_SUCCESS) status = strand_mpi_error(code, "MPI_Alltoall", __FILE__, __LINE__);
    }
    /* An all-to-all takes as long as its slowest rank. */
    if (status == STRAND_OK) {
        const int code = MPI_Allreduce(MPI_IN_PLACE, t, p->repeats, MPI_DOUBLE, MPI_MAX, comm);
        if (code != MPI_SUCCESS) status = strand_mpi_error(code, "MPI_Allreduce", __FILE__, __LINE__);
    }
    if (status == STRAND_OK)
        *bytes_per_s =
            strand_cal_alltoall_bytes_per_s((double)per_peer, size, strand_cal_median(t, p->repeats));
    strand_free(send), strand_free(recv);
    return status;
}

/* ---- ranks: parallel HDF5 ---- */

/* Before MPI-IO opens the file on every rank: rank 0 creates it, then every rank must open it. A
 * missing, read-only or unshared directory is refused here, naming the rank, instead of failing
 * inside H5Fcreate on some ranks only. */
static int io_probe(MPI_Comm comm, int rank, const char *path) {
    int status = STRAND_OK;
    if (rank == 0) {
        FILE *f = fopen(path, "wb");
        if (!f || fclose(f) != 0)
            status = strand_error_set(STRAND_ERR_IO, __FILE__, __LINE__,
                                      "cannot create the HDF5 test file %s: %s", path, strerror(errno));
    }
    STRAND_CALL(strand_agree(comm, status));
    if (rank != 0 && access(path, R_OK | W_OK) != 0)
        status = strand_error_set(STRAND_ERR_IO, __FILE__, __LINE__,
                                  "rank %d cannot open %s: %s (the directory must be shared by every rank)",
                                  strand_world_rank_of(comm, rank), path, strerror(errno));
    return strand_agree(comm, status);
}

#define H5_TRY(ok, what)                                                                                     \
    do {                                                                                                     \
        if (status == STRAND_OK && !(ok)) status = strand_h5_error(__FILE__, __LINE__, path, (what));        \
    } while (0)

/* Collective write (closed and flushed inside the timing) and read of a (size * bytes) dataset,
 * each rank its hyperslab; seconds of this rank. */
static int hdf5_pass(MPI_Comm comm, int rank, int size, const char *path, unsigned char *buf, int64_t bytes,
                     int writing, double *seconds) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS), dxpl = H5Pcreate(H5P_DATASET_XFER),
          dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hid_t file = H5I_INVALID_HID, dataset = H5I_INVALID_HID, space = H5I_INVALID_HID,
          memory = H5I_INVALID_HID;
    int status = STRAND_OK;
    H5_TRY(fapl >= 0 && dxpl >= 0 && dcpl >= 0 && H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL) >= 0 &&
               H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) >= 0 &&
               H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE) >= 0 &&
               H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) >= 0,
           "cannot set up MPI-IO file access");
    const hsize_t total = (hsize_t)bytes * (hsize_t)size, count = (hsize_t)bytes,
                  start = (hsize_t)bytes * (hsize_t)rank;
    /* The agreement lines the ranks up (a barrier) before the clock starts. */
    STRAND_CALL_GOTO(status, done, strand_agree(comm, status));
    const double t0 = strand_now();
    if (writing) {
        file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
        H5_TRY(file >= 0, "cannot create the file");
        STRAND_CALL_GOTO(status, done, strand_agree(comm, status));
        space = H5Screate_simple(1, &total, NULL);
        H5_TRY(space >= 0, "cannot create a dataspace");
        if (status == STRAND_OK)
            dataset = H5Dcreate2(file, "bytes", H5T_NATIVE_UCHAR, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
        H5_TRY(dataset >= 0, "cannot create the dataset");
    } else {
        file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
        H5_TRY(file >= 0, "cannot open the file");
        STRAND_CALL_GOTO(status, done, strand_agree(comm, status));
        dataset = H5Dopen2(file, "bytes", H5P_DEFAULT);
        H5_TRY(dataset >= 0, "cannot open the dataset");
        if (status == STRAND_OK) space = H5Dget_space(dataset);
        H5_TRY(space >= 0, "cannot read the dataspace");
    }
    if (status == STRAND_OK) memory = H5Screate_simple(1, &count, NULL);
    H5_TRY(memory >= 0 && H5Sselect_hyperslab(space, H5S_SELECT_SET, &start, NULL, &count, NULL) >= 0,
           "cannot select this rank's bytes");
    STRAND_CALL_GOTO(status, done, strand_agree(comm, status));
    if (writing)
        H5_TRY(H5Dwrite(dataset, H5T_NATIVE_UCHAR, memory, space, dxpl, buf) >= 0,
               "cannot write the dataset");
    else
        H5_TRY(H5Dread(dataset, H5T_NATIVE_UCHAR, memory, space, dxpl, buf) >= 0, "cannot read the dataset");
    STRAND_CALL_GOTO(status, done, strand_agree(comm, status));
    H5_TRY(H5Dclose(dataset) >= 0, "cannot close the dataset");
    dataset = H5I_INVALID_HID;
    if (writing) H5_TRY(H5Fflush(file, H5F_SCOPE_GLOBAL) >= 0, "cannot flush the file");
    STRAND_CALL_GOTO(status, done, strand_agree(comm, status));
    H5_TRY(H5Fclose(file) >= 0, "cannot close the file");
    file = H5I_INVALID_HID;
    *seconds = fmax(strand_now() - t0, 1e-9);
    status = strand_agree(comm, status);
done:
    strand_h5_close(&memory);
    strand_h5_close(&space);
    strand_h5_close(&dataset);
    strand_h5_close(&file);
    strand_h5_close(&fapl);
    strand_h5_close(&dxpl);
    strand_h5_close(&dcpl);
    return status;
}
#undef H5_TRY

static int measure_hdf5(MPI_Comm comm, int rank, int size, const char *path, int64_t bytes,
                        strand_machine *m) {
    unsigned char *buf = strand_alloc((size_t)bytes, "calibrate HDF5");
    const int allocated = strand_agree(comm, buf ? STRAND_OK : STRAND_ERR_NOMEM);
    if (allocated != STRAND_OK) {
        strand_free(buf);
        return allocated;
    }
    for (int64_t i = 0; i < bytes; i++)
        buf[i] = (unsigned char)(i * 131 + rank);
    double t[2] = {0, 0};
    /* The read follows the write, so it may come from the page cache: an upper bound for a
     * checkpoint read at resume, the rate of a dataset read again every epoch. */
    int status = hdf5_pass(comm, rank, size, path, buf, bytes, 1, &t[0]);
    if (status == STRAND_OK) status = hdf5_pass(comm, rank, size, path, buf, bytes, 0, &t[1]);
    strand_free(buf);
    STRAND_CALL(status);
    /* The job's bandwidth is set by its slowest rank. */
    STRAND_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, t, 2, MPI_DOUBLE, MPI_MAX, comm));
    const double total = (double)bytes * size;
    m->hdf5_write_bytes_per_s = total / t[0];
    m->hdf5_read_bytes_per_s = total / t[1];
    return STRAND_OK;
}

/* ---- the calibration ---- */

static int calibrate(MPI_Comm comm, const strand_calibrate_options *o, strand_machine *m, char *h5_path,
                     size_t h5_size, int *node) {
    int rank = 0, size = 1;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    cal_plan p = {o->quick, o->quick ? 3 : 5};
    const char *dir = o->io_dir && o->io_dir[0] ? o->io_dir : ".";
    const int64_t io_bytes =
        o->io_bytes_per_rank > 0 ? o->io_bytes_per_rank : (int64_t)(o->quick ? 4 : 64) * 1024 * 1024;
    if (io_bytes > (int64_t)1 << 30)
        STRAND_FAIL(STRAND_ERR_INPUT,
                    "calibrate: %lld HDF5 bytes per rank is more than 1 GiB (MPI-IO counts are int)",
                    (long long)io_bytes);
    if (strlen(dir) >= sizeof m->io_dir)
        STRAND_FAIL(STRAND_ERR_INPUT, "calibrate: the directory name is longer than %zu characters",
                    sizeof m->io_dir - 1);

    strand_machine_default(m);
    snprintf(m->io_dir, sizeof m->io_dir, "%s", dir);
    m->ranks = size;
    m->alltoall_ranks = size;
    long pid = (long)getpid();
    STRAND_CALL_MPI(MPI_Bcast(&pid, 1, MPI_LONG, 0, comm));
    snprintf(h5_path, h5_size, "%s/strand-calibrate-%ld.h5", dir, pid);
    strand_h5_quiet();
    /* The directory first: a bad --dir fails before minutes of measurements. */
    STRAND_CALL(io_probe(comm, rank, h5_path));

    if (rank == 0) {
        if (gethostname(m->host, sizeof m->host) != 0) snprintf(m->host, sizeof m->host, "unknown");
        m->host[sizeof m->host - 1] = '\0';
        const long cores = sysconf(_SC_NPROCESSORS_ONLN), pages = sysconf(_SC_PHYS_PAGES),
                   page = sysconf(_SC_PAGESIZE);
        m->cores_per_node = cores > 0 ? (int)cores : 1;
        if (pages > 0 && page > 0) m->memory_per_node_bytes = (double)pages * (double)page;
    }
    /* One rank's rates on rank 0; the others wait in a barrier, asleep so as not to take cores
     * from it (oversubscribed nodes), then the outcome is agreed. */
    const int local = rank == 0 ? measure_local(&p, m) : STRAND_OK;
    const int waited = idle_barrier(comm); /* every rank, failed or not */
    STRAND_CALL(strand_agree(comm, local != STRAND_OK ? local : waited));

    STRAND_CALL(find_nodes(comm, rank, node, &m->nodes));
    STRAND_CALL(measure_node_memory(&p, comm, rank, size, node, m));
    if (size == 1) {
        if (rank == 0)
            fprintf(stderr,
                    "strand calibrate: one rank: the point-to-point and all-to-all rates are defaults "
                    "(run on 2 or more ranks to measure them)\n");
    } else {
        int intra = -1, inter = -1;
        for (int r = size - 1; r > 0; r--) {
            if (node[r] == node[0])
                intra = r;
            else
                inter = r;
        }
        if (intra > 0)
            STRAND_CALL(measure_p2p(&p, comm, rank, intra, &m->p2p_latency_s, &m->p2p_bytes_per_s));
        else if (rank == 0)
            fprintf(stderr,
                    "strand calibrate: no second rank on rank 0's node: the intra-node point-to-point "
                    "rates are defaults\n");
        if (inter > 0)
            STRAND_CALL(
                measure_p2p(&p, comm, rank, inter, &m->p2p_inter_latency_s, &m->p2p_inter_bytes_per_s));
        STRAND_CALL(measure_alltoall(&p, comm, size, &m->alltoall_bytes_per_s));
    }
    STRAND_CALL(measure_hdf5(comm, rank, size, h5_path, io_bytes, m));
    /* Every rank returns rank 0's machine. */
    STRAND_CALL_MPI(MPI_Bcast(m, (int)sizeof *m, MPI_BYTE, 0, comm));
    return STRAND_OK;
}

int strand_calibrate(MPI_Comm comm, const strand_calibrate_options *options, strand_machine *machine) {
    MPI_Comm own = MPI_COMM_NULL;
    STRAND_CALL_MPI(MPI_Comm_dup(comm, &own));
    MPI_Comm_set_errhandler(own, MPI_ERRORS_RETURN);
    int rank = 0, size = 1;
    MPI_Comm_rank(own, &rank);
    MPI_Comm_size(own, &size);
    int *node = strand_alloc(sizeof(int) * (size_t)size, "calibrate nodes");
    char h5_path[512] = "";
    strand_machine m;
    int status = strand_agree(own, node ? STRAND_OK : STRAND_ERR_NOMEM);
    if (status == STRAND_OK) status = calibrate(own, options, &m, h5_path, sizeof h5_path, node);
    /* The test file goes whatever happened (it was created by rank 0, or not at all). */
    if (rank == 0 && h5_path[0]) unlink(h5_path);
    strand_free(node);
    MPI_Comm_free(&own);
    if (status == STRAND_OK) *machine = m;
    return status;
}
