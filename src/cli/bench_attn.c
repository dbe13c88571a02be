/* strand bench ring: time ring attention forward + backward on random Q, K, V sharded over the
 * MPI ranks, against a GEMM of the same precision measured in the same run, and (for L <= 4096)
 * check it against naive attention in double. Prints one JSON line on rank 0. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "cli.h"

#include "strand/dist.h"
#include "strand/layout.h"
#include "kernels/ring_attn.h"
#include "parallel/tags.h"
#include "core/rng.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef STRAND_REAL_DOUBLE
#define R_GEMM cblas_dgemm
#define GEMM_NAME "dgemm"
#else
#define R_GEMM cblas_sgemm
#define GEMM_NAME "sgemm"
#endif

enum { NAIVE_MAX_LENGTH = 4096, GEMM_N = 2048 };
enum { STREAM_Q = 101, STREAM_KV = 102, STREAM_DOUT = 103 };

typedef struct {
    int64_t length, window;
    int heads, kv_heads, head_dim, repeat, tile_q, tile_k, layout;
} bench_options;

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: mpirun -n P strand bench ring --length L --heads h --head-dim e [--kv-heads g]\n"
        "                [--window W] [--repeat n] [--layout zigzag|contiguous] [--tile-q n] [--tile-k n]\n"
        "Times exact causal ring attention (forward + backward) on random Q, K, V of L tokens sharded\n"
        "over P ranks and prints one JSON line: median fwd_bwd_s over n runs after a warm-up; GFLOP/s\n"
        "of the causal FLOPs (4 e h per visible query-key pair forward, i.e. 4 L^2 h e / 2 without a\n"
        "window, and 2.5x that backward); the median " GEMM_NAME " GFLOP/s of a %d^3 GEMM run on every\n"
        "rank after each attention run; communication wait and busy seconds per rank; and for\n"
        "L <= %d the relative error of out and of dQ, dK, dV against naive attention in double.\n"
        "The same ratio from CPU seconds (process CPU time, the slowest rank's for attention) is\n"
        "efficiency_vs_" GEMM_NAME "_cpu: on a shared machine it leaves out the time other jobs held\n"
        "the cores.\n"
        "Default layout: zigzag, or contiguous with a window.\n",
        GEMM_N, NAIVE_MAX_LENGTH);
}

static int parse_int64(const char *text, int64_t min, int64_t *value) {
    char *end = NULL;
    long long v = strtoll(text, &end, 10);
    if (!end || *end || end == text || v < min) return 0;
    *value = v;
    return 1;
}

static int parse(int argc, char **argv, bench_options *o) {
    memset(o, 0, sizeof *o);
    o->repeat = 3;
    o->layout = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            if (cli_world_rank() == 0) usage(stdout);
            return CLI_OK + 100;
        }
        static const char *const known[] = {"--length",   "--window", "--layout", "--heads",  "--kv-heads",
                                            "--head-dim", "--repeat", "--tile-q", "--tile-k", NULL};
        if (i + 1 >= argc) return cli_missing_value("bench ring", a, known);
        const char *v = argv[++i];
        int64_t x = 0;
        int ok = 1;
        if (strcmp(a, "--length") == 0)
            ok = parse_int64(v, 1, &o->length);
        else if (strcmp(a, "--window") == 0)
            ok = parse_int64(v, 0, &o->window);
        else if (strcmp(a, "--layout") == 0) {
            if (strcmp(v, "zigzag") == 0)
                o->layout = STRAND_LAYOUT_ZIGZAG;
            else if (strcmp(v, "contiguous") == 0)
                o->layout = STRAND_LAYOUT_CONTIGUOUS;
            else
                ok = 0;
        } else {
            ok = parse_int64(v, 1, &x) && x <= 1 << 20;
            if (strcmp(a, "--heads") == 0)
                o->heads = (int)x;
            else if (strcmp(a, "--kv-heads") == 0)
                o->kv_heads = (int)x;
            else if (strcmp(a, "--head-dim") == 0)
                o->head_dim = (int)x;
            else if (strcmp(a, "--repeat") == 0)
                o->repeat = (int)x;
            else if (strcmp(a, "--tile-q") == 0)
                o->tile_q = (int)x;
            else if (strcmp(a, "--tile-k") == 0)
                o->tile_k = (int)x;
            else {
                cli_error("bench ring", "unknown option '%s' (see --help)", a);
                return CLI_USAGE;
            }
        }
        if (!ok) {
            cli_error("bench ring", "bad value '%s' for %s", v, a);
            return CLI_USAGE;
        }
    }
    if (o->length <= 0 || o->heads <= 0 || o->head_dim <= 0) {
        cli_error("bench ring", "--length, --heads and --head-dim are required (see --help)");
        return CLI_USAGE;
    }
    if (o->kv_heads == 0) o->kv_heads = o->heads;
    if (o->heads % o->kv_heads != 0) {
        cli_error("bench ring", "--kv-heads %d must divide --heads %d", o->kv_heads, o->heads);
        return CLI_USAGE;
    }
    if (o->layout < 0) o->layout = o->window > 0 ? STRAND_LAYOUT_CONTIGUOUS : STRAND_LAYOUT_ZIGZAG;
    return CLI_OK;
}

static double value_at(uint64_t stream, int64_t row, int64_t col) {
    return 2.0 * strand_rng_uniform(2024, stream, (uint64_t)row, (uint64_t)col) - 1.0;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Query-key pairs inside the causal (windowed) mask. */
static double visible_pairs(int64_t L, int64_t W) {
    double pairs = 0;
    for (int64_t i = 0; i < L; i++)
        pairs += (double)(W > 0 && W < i + 1 ? W : i + 1);
    return pairs;
}

/* Square GEMM of this build's precision: the reference rate, measured on every rank between the
 * attention iterations so that both see the same machine (other jobs, clocks). */
typedef struct {
    real_t *a, *b, *c;
} gemm_ref;

static int gemm_ref_init(gemm_ref *g) {
    const int64_t nn = (int64_t)GEMM_N * GEMM_N;
    STRAND_ALLOC(g->a, nn, "reference GEMM");
    STRAND_ALLOC(g->b, nn, "reference GEMM");
    STRAND_ALLOC(g->c, nn, "reference GEMM");
    for (int64_t i = 0; i < nn; i++)
        g->a[i] = (real_t)value_at(7, i, 0), g->b[i] = (real_t)value_at(8, i, 0);
    return STRAND_OK;
}

static void gemm_ref_free(gemm_ref *g) {
    strand_free(g->a), strand_free(g->b), strand_free(g->c);
}

/* CPU seconds of this process (all its threads). */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* GFLOP/s of one C = A B with n = GEMM_N, per wall second and per CPU second (*cpu_rate). */
static double gemm_ref_run(const gemm_ref *g, double *cpu_rate) {
    const int n = GEMM_N;
    const double t0 = strand_now(), c0 = cpu_now();
    R_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, g->a, n, g->b, n, 0, g->c, n);
    const double flop = 2.0 * n * n * (double)n;
    *cpu_rate = flop / (cpu_now() - c0) / 1e9;
    return flop / (strand_now() - t0) / 1e9;
}

/* Naive attention in double for the whole window (rank 0): errors of out and of [dq | dkv]
 * gathered by position. */
static void naive_errors(const bench_options *o, const real_t *out, const real_t *dq, const real_t *dkv,
                         double *err_out, double *err_grad) {
    const int64_t L = o->length;
    const int H = o->heads, G = o->kv_heads, E = o->head_dim, HE = H * E, KVW = 2 * G * E;
    const double scale = 1.0 / sqrt((double)E);
    double *q = malloc(sizeof(double) * (size_t)(L * HE)), *kv = malloc(sizeof(double) * (size_t)(L * KVW));
    double *d_o = malloc(sizeof(double) * (size_t)(L * HE)), *rdq = calloc((size_t)(L * HE), sizeof(double));
    double *rdkv = calloc((size_t)(L * KVW), sizeof(double)), *p = malloc(sizeof(double) * (size_t)L);
    double *dp = malloc(sizeof(double) * (size_t)L), *o_row = malloc(sizeof(double) * (size_t)E);
    double max_out = 0, max_err_out = 0, max_grad = 0, max_err_grad = 0;
    if (!q || !kv || !d_o || !rdq || !rdkv || !p || !dp || !o_row) {
        *err_out = *err_grad = NAN;
        goto done;
    }
    for (int64_t i = 0; i < L; i++) {
        for (int k = 0; k < HE; k++)
            q[i * HE + k] = (double)(real_t)value_at(STREAM_Q, i, k),
                       d_o[i * HE + k] = (double)(real_t)value_at(STREAM_DOUT, i, k);
        for (int k = 0; k < KVW; k++)
            kv[i * KVW + k] = (double)(real_t)value_at(STREAM_KV, i, k);
    }
    for (int h = 0; h < H; h++) {
        const int g = h / (H / G);
        for (int64_t i = 0; i < L; i++) {
            const int64_t j0 = o->window > 0 && i - o->window + 1 > 0 ? i - o->window + 1 : 0;
            double m = -INFINITY, sum = 0, delta = 0;
            for (int64_t j = j0; j <= i; j++) {
                double s = 0;
                for (int e = 0; e < E; e++)
                    s += q[i * HE + h * E + e] * kv[j * KVW + g * E + e];
                p[j] = s * scale;
                if (p[j] > m) m = p[j];
            }
            for (int64_t j = j0; j <= i; j++)
                sum += (p[j] = exp(p[j] - m));
            memset(o_row, 0, sizeof(double) * (size_t)E);
            for (int64_t j = j0; j <= i; j++) {
                p[j] /= sum;
                double d = 0;
                for (int e = 0; e < E; e++) {
                    o_row[e] += p[j] * kv[j * KVW + G * E + g * E + e];
                    d += d_o[i * HE + h * E + e] * kv[j * KVW + G * E + g * E + e];
                }
                dp[j] = d;
                delta += p[j] * d;
            }
            for (int e = 0; e < E; e++) {
                max_out = fmax(max_out, fabs(o_row[e]));
                max_err_out = fmax(max_err_out, fabs(o_row[e] - (double)out[i * HE + h * E + e]));
            }
            for (int64_t j = j0; j <= i; j++) {
                const double ds = p[j] * (dp[j] - delta) * scale;
                for (int e = 0; e < E; e++) {
                    rdq[i * HE + h * E + e] += ds * kv[j * KVW + g * E + e];
                    rdkv[j * KVW + g * E + e] += ds * q[i * HE + h * E + e];
                    rdkv[j * KVW + G * E + g * E + e] += p[j] * d_o[i * HE + h * E + e];
                }
            }
        }
    }
    for (int64_t i = 0; i < L * HE; i++) {
        max_grad = fmax(max_grad, fabs(rdq[i]));
        max_err_grad = fmax(max_err_grad, fabs(rdq[i] - (double)dq[i]));
    }
    for (int64_t i = 0; i < L * KVW; i++) {
        max_grad = fmax(max_grad, fabs(rdkv[i]));
        max_err_grad = fmax(max_err_grad, fabs(rdkv[i] - (double)dkv[i]));
    }
    *err_out = max_err_out / fmax(max_out, 1e-300);
    *err_grad = max_err_grad / fmax(max_grad, 1e-300);
done:
    free(q), free(kv), free(d_o), free(rdq), free(rdkv), free(p), free(dp), free(o_row);
}

/* Gather a (T, width) local array into (L, width) by global position on rank 0. */
static int gather_rows(const strand_shard *shard, const real_t *local, int width, real_t *global,
                       const int64_t *pos) {
    const strand_grid *grid = shard->grid;
    const int P = grid->sp_size;
    const int64_t T = shard->T;
    if (grid->sp_rank == 0) {
        for (int64_t i = 0; i < T; i++)
            memcpy(global + pos[i] * width, local + i * width, sizeof(real_t) * (size_t)width);
        real_t *rows = strand_alloc(sizeof(real_t) * (size_t)(shard->max_T * width + 1), "gather");
        int64_t *p = strand_alloc(sizeof(int64_t) * (size_t)(shard->max_T + 1), "gather");
        if (!rows || !p) return STRAND_ERR_NOMEM;
        for (int r = 1; r < P; r++) {
            const int64_t n = shard->shard_lengths[r];
            STRAND_CALL_MPI(
                MPI_Recv(p, (int)n, MPI_INT64_T, r, STRAND_TAG_BENCH_POS, grid->sp_comm, MPI_STATUS_IGNORE));
            STRAND_CALL_MPI(MPI_Recv(rows, (int)(n * width), STRAND_MPI_REAL, r, STRAND_TAG_BENCH_ROWS,
                                     grid->sp_comm, MPI_STATUS_IGNORE));
            for (int64_t i = 0; i < n; i++)
                memcpy(global + p[i] * width, rows + i * width, sizeof(real_t) * (size_t)width);
        }
        strand_free(rows);
        strand_free(p);
    } else {
        STRAND_CALL_MPI(MPI_Send(pos, (int)T, MPI_INT64_T, 0, STRAND_TAG_BENCH_POS, grid->sp_comm));
        STRAND_CALL_MPI(
            MPI_Send(local, (int)(T * width), STRAND_MPI_REAL, 0, STRAND_TAG_BENCH_ROWS, grid->sp_comm));
    }
    return STRAND_OK;
}

/* An MPI call inside run(): record the failure and jump to its cleanup label. */
#define MPI_GOTO(label, expr)                                                                                \
    do {                                                                                                     \
        int mpi_code_ = (expr);                                                                              \
        if (mpi_code_ != MPI_SUCCESS) {                                                                      \
            status = strand_mpi_error(mpi_code_, #expr, __FILE__, __LINE__);                                 \
            goto label;                                                                                      \
        }                                                                                                    \
    } while (0)

typedef struct {
    strand_grid grid;
    strand_shard shard;
    strand_ring_attn ra;
    int64_t *pos;
    real_t *q, *kv, *dout, *out, *lse, *dq, *dkv;
    real_t *g_out, *g_dq, *g_dkv;
} bench_state;

static void bench_free(bench_state *b) {
    strand_ring_attn_free(&b->ra);
    strand_free(b->pos);
    real_t *bufs[] = {b->q, b->kv, b->dout, b->out, b->lse, b->dq, b->dkv, b->g_out, b->g_dq, b->g_dkv};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        strand_free(bufs[i]);
    strand_shard_free(&b->shard);
    strand_grid_free(&b->grid);
}

static int run(bench_state *b, const bench_options *o) {
    STRAND_CALL(strand_grid_init(&b->grid, MPI_COMM_WORLD, 0, 1));
    STRAND_CALL(strand_shard_init(&b->shard, &b->grid, o->length, o->layout));
    STRAND_CALL(strand_ring_attn_init(&b->ra, &b->shard, o->heads, o->kv_heads, o->head_dim, o->window, 0,
                                      o->tile_q, o->tile_k));
    const int HE = o->heads * o->head_dim, KVW = 2 * o->kv_heads * o->head_dim;
    const int64_t T = b->shard.T, rows = T > 0 ? T : 1;
    STRAND_ALLOC(b->pos, rows, "positions");
    STRAND_ALLOC(b->q, rows * HE, "q");
    STRAND_ALLOC(b->kv, rows * KVW, "kv");
    STRAND_ALLOC(b->dout, rows * HE, "dout");
    STRAND_ALLOC(b->out, rows * HE, "out");
    STRAND_ALLOC(b->lse, rows * o->heads, "lse");
    STRAND_ALLOC(b->dq, rows * HE, "dq");
    STRAND_ALLOC(b->dkv, rows * KVW, "dkv");
    for (int64_t i = 0; i < T; i++) {
        const int64_t p = b->pos[i] = strand_shard_position(&b->shard, i);
        for (int k = 0; k < HE; k++)
            b->q[i * HE + k] = (real_t)value_at(STREAM_Q, p, k),
                          b->dout[i * HE + k] = (real_t)value_at(STREAM_DOUT, p, k);
        for (int k = 0; k < KVW; k++)
            b->kv[i * KVW + k] = (real_t)value_at(STREAM_KV, p, k);
    }
    const int P = b->grid.sp_size, n = o->repeat;
    double *fb = calloc((size_t)n, sizeof(double)), *fw = calloc((size_t)n, sizeof(double)),
           *bw = calloc((size_t)n, sizeof(double)), *gm = calloc((size_t)n, sizeof(double)),
           *fbc = calloc((size_t)n, sizeof(double)), *gmc = calloc((size_t)n, sizeof(double));
    gemm_ref ref = {NULL, NULL, NULL};
    int status = gemm_ref_init(&ref);
    if (!fb || !fw || !bw || !gm || !fbc || !gmc)
        status = strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__, "bench: out of memory");
    for (int it = -1; it < n && status == STRAND_OK; it++) { /* it = -1: warm-up */
        if (it == 0) b->ra.wait_s = b->ra.busy_s = 0;
        memset(b->dq, 0, sizeof(real_t) * (size_t)(T * HE));
        memset(b->dkv, 0, sizeof(real_t) * (size_t)(T * KVW));
        MPI_GOTO(fail, MPI_Barrier(b->grid.sp_comm));
        const double t0 = strand_now(), c0 = cpu_now();
        STRAND_CALL_GOTO(
            status, fail,
            strand_ring_attn_forward(&b->ra, b->out, b->lse, b->q, b->pos, b->kv, b->pos, NULL, NULL));
        const double t1 = strand_now();
        STRAND_CALL_GOTO(status, fail,
                         strand_ring_attn_backward(&b->ra, b->dq, b->dkv, b->dout, b->out, b->lse, b->q,
                                                   b->pos, b->kv, b->pos, NULL, NULL));
        const double t2 = strand_now(), c2 = cpu_now();
        /* A step takes as long as its slowest rank. */
        double t[4] = {t1 - t0, t2 - t1, t2 - t0, c2 - c0};
        MPI_GOTO(fail, MPI_Allreduce(MPI_IN_PLACE, t, 4, MPI_DOUBLE, MPI_MAX, b->grid.sp_comm));
        /* The reference GEMM right after, on all ranks at once like the attention. */
        double rate_cpu = 0;
        const double rate = gemm_ref_run(&ref, &rate_cpu);
        if (it >= 0)
            fw[it] = t[0], bw[it] = t[1], fb[it] = t[2], gm[it] = rate, fbc[it] = t[3], gmc[it] = rate_cpu;
    }
    if (status != STRAND_OK) goto fail;
    double wait = b->ra.wait_s / n, busy = b->ra.busy_s / n, gemm = median(gm, n), gemm_cpu = median(gmc, n);
    double *waits = calloc((size_t)P, sizeof(double)), *busys = calloc((size_t)P, sizeof(double)),
           *gemms = calloc((size_t)P, sizeof(double)), *gemms_cpu = calloc((size_t)P, sizeof(double));
    if (!waits || !busys || !gemms || !gemms_cpu) {
        status = strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__, "bench: out of memory");
        goto fail2;
    }
    MPI_GOTO(fail2, MPI_Gather(&wait, 1, MPI_DOUBLE, waits, 1, MPI_DOUBLE, 0, b->grid.sp_comm));
    MPI_GOTO(fail2, MPI_Gather(&busy, 1, MPI_DOUBLE, busys, 1, MPI_DOUBLE, 0, b->grid.sp_comm));
    MPI_GOTO(fail2, MPI_Gather(&gemm, 1, MPI_DOUBLE, gemms, 1, MPI_DOUBLE, 0, b->grid.sp_comm));
    MPI_GOTO(fail2, MPI_Gather(&gemm_cpu, 1, MPI_DOUBLE, gemms_cpu, 1, MPI_DOUBLE, 0, b->grid.sp_comm));
    double err_out = -1, err_grad = -1;
    if (o->length <= NAIVE_MAX_LENGTH) {
        const int64_t L = o->length;
        if (b->grid.sp_rank == 0) {
            b->g_out = strand_alloc(sizeof(real_t) * (size_t)(L * HE), "gather");
            b->g_dq = strand_alloc(sizeof(real_t) * (size_t)(L * HE), "gather");
            b->g_dkv = strand_alloc(sizeof(real_t) * (size_t)(L * KVW), "gather");
            if (!b->g_out || !b->g_dq || !b->g_dkv) status = STRAND_ERR_NOMEM;
        }
        STRAND_CALL_GOTO(status, fail2, strand_agree(b->grid.sp_comm, status));
        STRAND_CALL_GOTO(status, fail2, gather_rows(&b->shard, b->out, HE, b->g_out, b->pos));
        STRAND_CALL_GOTO(status, fail2, gather_rows(&b->shard, b->dq, HE, b->g_dq, b->pos));
        STRAND_CALL_GOTO(status, fail2, gather_rows(&b->shard, b->dkv, KVW, b->g_dkv, b->pos));
        if (b->grid.sp_rank == 0) naive_errors(o, b->g_out, b->g_dq, b->g_dkv, &err_out, &err_grad);
    }
    if (b->grid.world_rank == 0) {
        const double pairs = visible_pairs(o->length, o->window);
        const double flops_fwd = 4.0 * pairs * o->heads * o->head_dim, flops = 3.5 * flops_fwd;
        const double t_fb = median(fb, n), t_f = median(fw, n), t_b = median(bw, n);
        const double gflops = flops / t_fb / 1e9;
        const double t_fbc = median(fbc, n);
        double gemm_mean = 0, gemm_cpu_mean = 0, wait_max = 0;
        for (int r = 0; r < P; r++)
            gemm_mean += gemms[r] / P, gemm_cpu_mean += gemms_cpu[r] / P, wait_max = fmax(wait_max, waits[r]);
        printf(
            "{\"bench\":\"ring\",\"precision\":\"%s\",\"ranks\":%d,\"layout\":\"%s\",\"length\":%lld,"
            "\"heads\":%d,\"kv_heads\":%d,\"head_dim\":%d,\"window\":%lld,\"repeat\":%d,\"tile_q\":%d,"
            "\"tile_k\":%d,\"ring_steps\":%d,\"fwd_bwd_s\":%.6g,\"fwd_s\":%.6g,\"bwd_s\":%.6g,"
            "\"gflop\":%.6g,\"gflops\":%.6g,\"gflops_per_rank\":%.6g,\"" GEMM_NAME "_gflops_per_rank\":%.6g,"
            "\"efficiency_vs_" GEMM_NAME "\":%.4f,\"cpu_fwd_bwd_s\":%.6g,\"" GEMM_NAME
            "_gflops_cpu_per_rank\":%.6g,\"efficiency_vs_" GEMM_NAME "_cpu\":%.4f,"
            "\"comm_wait_s_max\":%.6g,\"comm_wait_s\":[",
            STRAND_REAL_NAME, P, o->layout == STRAND_LAYOUT_ZIGZAG ? "zigzag" : "contiguous",
            (long long)o->length, o->heads, o->kv_heads, o->head_dim, (long long)o->window, n, b->ra.tile_q,
            b->ra.tile_k, b->ra.steps, t_fb, t_f, t_b, flops / 1e9, gflops, gflops / P, gemm_mean,
            gflops / P / gemm_mean, t_fbc, gemm_cpu_mean, flops / t_fbc / 1e9 / P / gemm_cpu_mean, wait_max);
        for (int r = 0; r < P; r++)
            printf("%s%.6g", r ? "," : "", waits[r]);
        printf("],\"busy_s\":[");
        for (int r = 0; r < P; r++)
            printf("%s%.6g", r ? "," : "", busys[r]);
        printf("],\"" GEMM_NAME "_gflops\":[");
        for (int r = 0; r < P; r++)
            printf("%s%.4g", r ? "," : "", gemms[r]);
        printf("]");
        if (err_out >= 0)
            printf(",\"max_err_out\":%.3g,\"max_err_grad\":%.3g", err_out, err_grad);
        else
            printf(",\"max_err_out\":null,\"max_err_grad\":null");
        printf("}\n");
        fflush(stdout);
    }
fail2:
    free(waits), free(busys), free(gemms), free(gemms_cpu);
fail:
    free(fb), free(fw), free(bw), free(gm), free(fbc), free(gmc);
    gemm_ref_free(&ref);
    return status;
}

int bench_attn(int argc, char **argv) {
    bench_options o;
    int status = parse(argc, argv, &o);
    if (status == CLI_OK + 100) return CLI_OK;
    if (status != CLI_OK) return status;
    bench_state b;
    memset(&b, 0, sizeof b);
    status = run(&b, &o);
    bench_free(&b);
    return status == STRAND_OK ? CLI_OK : cli_report("bench ring");
}
