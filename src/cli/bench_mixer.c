/* strand bench mixer | rnn | scan: time a registered mixer's forward and backward over a window
 * sharded across the ranks, next to a same-run sgemm and sgemv (the rates a dense and a
 * matrix-vector bound kernel reach on these cores), and print one JSON line on rank 0.
 *   mixer  any mixer (--layer NAME)
 *   rnn    a nonlinear recurrent cell (--cell rnn|lstm|gru|ornn)
 *   scan   a mixer computed by the distributed linear scan (--layer mamba|mingru|minlstm|s4d, s4d
 *          in scan mode; --state N), adding the bytes the scan's exchange sent per rank, the time
 *          in the local scan kernels, and the floor of reading the recurrence's inputs a_t and b_t
 *          once at a same-run read bandwidth. */
#include "cli.h"

#include "core/rng.h"
#include "parallel/scan.h"
#include "strand/config.h"
#include "strand/dist.h"
#include "strand/layout.h"
#include "strand/model.h"
#include "strand/train.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char bench_mixer_usage[] =
    "usage: mpirun -n N strand bench mixer --layer NAME --length L --channels C [options]\n"
    "\n"
    "Time one block's mixer NAME (any registered mixer, with its default options and --set\n"
    "overrides) over a window of L tokens sharded across the N ranks: forward, backward and both,\n"
    "median over --repeat runs after one warm-up, the slowest rank each time. Prints one JSON line:\n"
    "layer, length, channels, ranks, threads (OpenBLAS), forward_s, backward_s, fwd_bwd_s, comm_s\n"
    "(inside MPI calls) and bytes_sent (handed to MPI for other ranks) of forward + backward, both\n"
    "the largest over ranks, peak_rss_bytes (the largest over ranks), and when\n"
    "the mixer counts its operations gflops (forward + backward, per rank), with sgemm_gflops\n"
    "(an (L/N x C) by (C x 4C) product) and sgemv_gflops (a 4C x C matrix times a vector, L/N times)\n"
    "measured in the same run, and their ratios.\n"
    "\n"
    "options:\n"
    "  --layer NAME           the mixer (required)\n"
    "  --length L             window length in tokens (required)\n"
    "  --channels C           model.d_model (required)\n"
    "  --repeat N             timed repetitions (default 3)\n"
    "  --set KEY=VALUE        a configuration key, e.g. --set lstm.forget_bias=2\n";

static const char bench_rnn_usage[] =
    "usage: mpirun -n N strand bench rnn --cell rnn|lstm|gru|ornn --length L --channels C [options]\n"
    "\n"
    "'strand bench mixer' for a recurrent cell: forward+backward time and GFLOP/s next to same-run\n"
    "sgemm and sgemv (the recurrence is a chain of matrix-vector products). tests/bench/torch_rnn.py\n"
    "times torch.nn.RNN, LSTM and GRU at the same size for the ratio.\n"
    "\n"
    "options: --cell NAME (required), --length, --channels (required), --repeat N, --set KEY=VALUE\n";

static const char bench_scan_usage[] =
    "usage: mpirun -n N strand bench scan --layer mamba|mingru|minlstm|s4d --length L --channels C\n"
    "                                    [--state N] [options]\n"
    "\n"
    "'strand bench mixer' for a mixer computed by the distributed linear scan (s4d in s4d.mode =\n"
    "scan), adding: scan_bytes_sent (the bytes each rank's scan exchanges handed to MPI in one\n"
    "forward and backward, the largest over ranks: it does not grow with L), scan_kernel_forward_s\n"
    "and scan_kernel_backward_s (time in the local scan kernels, slowest rank), and read_floor_s: the\n"
    "time to read the recurrence's inputs a_t and b_t (L/N positions x the state width, in the\n"
    "build's precision) once at the read bandwidth measured in the same run (read_gbs).\n"
    "tests/bench/torch_mamba.py runs the same selective scan in PyTorch for the ratio.\n"
    "\n"
    "options: --layer NAME (required), --length, --channels (required), --state N (mamba.d_state or\n"
    "s4d.state), --repeat N, --set KEY=VALUE\n";

/* The scan mixers: the key that sets the state size, and the scan's state values per position. */
typedef struct {
    const char *layer, *state_key, *mode;
} scan_layer;

static const scan_layer scan_layers[] = {
    {"mamba", "mamba.d_state", NULL},
    {"mingru", NULL, NULL},
    {"minlstm", NULL, NULL},
    {"s4d", "s4d.state", "s4d.mode=scan"},
};

/* An integer key's value in a configuration, through its row (a row's offset is into the whole
 * configuration, mixers' options included). */
static int int_option(const strand_config *config, const char *name) {
    const strand_config_key *key = strand_config_find_key(name);
    int value = 0;
    if (key) memcpy(&value, (const char *)config + key->offset, sizeof value);
    return value;
}

/* State values per position of a scan layer (real values; a complex mode counts two). */
static int64_t scan_width(const strand_config *config, const char *layer, int C) {
    if (strcmp(layer, "mamba") == 0)
        return (int64_t)int_option(config, "mamba.expand") * C * int_option(config, "mamba.d_state");
    if (strcmp(layer, "s4d") == 0) return (int64_t)C * int_option(config, "s4d.state");
    return C;
}

/* Read bandwidth in GB/s: a sum over `bytes` of memory, best of three. */
static double read_bandwidth(size_t bytes) {
    const size_t n = bytes / sizeof(double);
    double *v = strand_alloc(n * sizeof(double), "bench bandwidth");
    if (!v) return 0;
    for (size_t i = 0; i < n; i++)
        v[i] = (double)(i % 7);
    double best = 0, sink = 0;
    for (int rep = 0; rep < 3; rep++) {
        const double t0 = strand_now();
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (size_t i = 0; i + 3 < n; i += 4)
            s0 += v[i], s1 += v[i + 1], s2 += v[i + 2], s3 += v[i + 3];
        sink += s0 + s1 + s2 + s3;
        best = fmax(best, (double)bytes / (strand_now() - t0) / 1e9);
    }
    strand_free(v);
    return sink >= 0 ? best : 0; /* sink keeps the sums */
}

static double median(double *v, int n) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* sgemm (m x k) by (k x n) and m matrix-vector products of an (n x k) matrix, in the build's
 * precision like the mixers: GFLOP/s of each, best of three. */
static int reference_rates(int64_t m, int k, int n, double *gemm, double *gemv) {
    real_t *a = strand_alloc(sizeof(real_t) * (size_t)(m * k + (int64_t)k * n + m * n + 2 * n + k), "bench");
    if (!a) return STRAND_ERR_NOMEM;
    real_t *b = a + m * k, *c = b + (int64_t)k * n, *x = c + m * n, *y = x + k;
    for (int64_t i = 0; i < m * k + (int64_t)k * n + k; i++)
        a[i] = (real_t)(0.001 * (double)(i % 97));
    *gemm = *gemv = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = strand_now();
#ifdef STRAND_REAL_DOUBLE
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, n, k, 1.0, a, k, b, n, 0.0, c, n);
#else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, n, k, 1.0f, a, k, b, n, 0.0f, c, n);
#endif
        double t1 = strand_now();
        for (int64_t i = 0; i < m; i++) {
#ifdef STRAND_REAL_DOUBLE
            cblas_dgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0, b, k, x, 1, 0.0, y, 1);
#else
            cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, b, k, x, 1, 0.0f, y, 1);
#endif
            x[i % k] += y[0] * (real_t)1e-9; /* a dependence between products, as a recurrence has */
        }
        double t2 = strand_now();
        *gemm = fmax(*gemm, 2.0 * (double)m * k * n / (t1 - t0) / 1e9);
        *gemv = fmax(*gemv, 2.0 * (double)m * k * n / (t2 - t1) / 1e9);
    }
    strand_free(a);
    return STRAND_OK;
}

enum bench_kind { BENCH_MIXER, BENCH_RNN, BENCH_SCAN };

typedef struct {
    const char *layer;
    int64_t length;
    int channels, repeat, kind, state;
} mixer_args;

static int run(const mixer_args *o, int argc, char **argv) {
    const strand_mixer_ops *ops = strand_mixer_find(o->layer);
    if (!ops) STRAND_FAIL(STRAND_ERR_INPUT, "--layer %s: no such mixer", o->layer);
    strand_config config;
    strand_config_defaults(&config);
    char text[128];
    snprintf(text, sizeof text, "model.d_model=%d", o->channels);
    STRAND_CALL(strand_config_set(&config, text));
    snprintf(text, sizeof text, "train.seq_len=%lld", (long long)o->length);
    STRAND_CALL(strand_config_set(&config, text));
    snprintf(text, sizeof text, "model.layers=%s", o->layer);
    STRAND_CALL(strand_config_set(&config, text));
    const scan_layer *scan = NULL;
    for (size_t i = 0; o->kind == BENCH_SCAN && i < sizeof scan_layers / sizeof *scan_layers; i++)
        if (strcmp(o->layer, scan_layers[i].layer) == 0) scan = &scan_layers[i];
    if (o->kind == BENCH_SCAN && !scan)
        STRAND_FAIL(STRAND_ERR_INPUT, "--layer %s: not a scan layer (mamba, mingru, minlstm, s4d)", o->layer);
    if (scan && scan->mode) STRAND_CALL(strand_config_set(&config, scan->mode));
    if (o->state > 0) {
        if (!scan || !scan->state_key)
            STRAND_FAIL(STRAND_ERR_INPUT, "--state: %s has no state size (its state is d_model)", o->layer);
        snprintf(text, sizeof text, "%s=%d", scan->state_key, o->state);
        STRAND_CALL(strand_config_set(&config, text));
    }
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) STRAND_CALL(strand_config_set(&config, argv[++i]));
    STRAND_CALL(strand_config_validate(&config));

    strand_grid grid;
    STRAND_CALL(strand_grid_init(&grid, MPI_COMM_WORLD, 0, 1));
    strand_shard shard;
    int status = strand_shard_init(&shard, &grid, o->length, strand_train_layout(&config));
    strand_param_table table;
    memset(&table, 0, sizeof table);
    strand_mixer mixer;
    memset(&mixer, 0, sizeof mixer);
    strand_plan plan;
    strand_plan_init(&plan, 0, 0);
    real_t *params = NULL, *grads = NULL, *u = NULL, *y = NULL, *dy = NULL, *du = NULL;
    double *t = NULL;
    const int C = o->channels;
    if (status == STRAND_OK) status = strand_mixer_create(&mixer, ops, C, &config, &table, "bench.mixer");
    if (status == STRAND_OK) status = strand_agree(grid.sp_comm, status);
    if (status == STRAND_OK) status = strand_mixer_setup_alone(&mixer, &shard, &plan);
    const int64_t n = (shard.T > 0 ? shard.T : 1) * C;
    if (status == STRAND_OK) {
        params = strand_alloc(sizeof(real_t) * (size_t)table.total, "bench parameters");
        grads = strand_alloc(sizeof(real_t) * (size_t)table.total, "bench gradients");
        u = strand_alloc(sizeof(real_t) * (size_t)n, "bench input");
        y = strand_alloc(sizeof(real_t) * (size_t)n, "bench output");
        dy = strand_alloc(sizeof(real_t) * (size_t)n, "bench output gradient");
        du = strand_alloc(sizeof(real_t) * (size_t)n, "bench input gradient");
        t = strand_alloc(sizeof(double) * 8 * (size_t)o->repeat, "bench timings");
        status = params && grads && u && y && dy && du && t ? STRAND_OK : STRAND_ERR_NOMEM;
    }
    status = strand_agree(grid.world, status);
    if (status == STRAND_OK) {
        for (int i = 0; i < table.count; i++) {
            const strand_param_info *p = &table.items[i];
            for (int64_t j = 0; j < p->size; j++)
                params[p->offset + j] =
                    p->init == STRAND_INIT_ONES
                        ? 1
                        : (real_t)(0.02 * strand_rng_normal(7, STRAND_STREAM_INIT, (uint64_t)i, (uint64_t)j));
        }
        if (ops->init_params) ops->init_params(&mixer, params, 7);
        for (int64_t i = 0; i < n; i++) {
            u[i] = (real_t)(2.0 * strand_rng_uniform(1, 101, (uint64_t)i, 0) - 1.0);
            dy[i] = (real_t)(2.0 * strand_rng_uniform(1, 102, (uint64_t)i, 0) - 1.0);
        }
    }
    for (int r = -1; r < o->repeat && status == STRAND_OK; r++) { /* r = -1: warm-up */
        memset(du, 0, sizeof(real_t) * (size_t)n);
        MPI_Barrier(grid.world);
        const int64_t bytes0 = strand_scan_bytes_sent_total(), comm_bytes0 = strand_comm_bytes();
        const double k0 = strand_scan_kernel_time_total(), comm0 = strand_comm_seconds();
        const double a = strand_now();
        status = strand_agree(grid.world, ops->forward(&mixer, y, u, params, &shard));
        const double m = strand_now(), k1 = strand_scan_kernel_time_total();
        if (status == STRAND_OK)
            status = strand_agree(grid.world, ops->backward(&mixer, du, grads, dy, u, params, &shard));
        const double e = strand_now(), k2 = strand_scan_kernel_time_total();
        double v[8] = {m - a,
                       e - m,
                       e - a,
                       k1 - k0,
                       k2 - k1,
                       (double)(strand_scan_bytes_sent_total() - bytes0),
                       strand_comm_seconds() - comm0,
                       (double)(strand_comm_bytes() - comm_bytes0)};
        MPI_Allreduce(MPI_IN_PLACE, v, 8, MPI_DOUBLE, MPI_MAX, grid.world);
        if (r >= 0)
            for (int k = 0; k < 8; k++)
                t[k * o->repeat + r] = v[k];
    }
    long long peak_rss = (long long)strand_peak_rss_bytes();
    if (status == STRAND_OK &&
        MPI_Allreduce(MPI_IN_PLACE, &peak_rss, 1, MPI_LONG_LONG, MPI_MAX, grid.world) != MPI_SUCCESS)
        status = strand_error_set(STRAND_ERR_MPI, __FILE__, __LINE__, "bench mixer: MPI_Allreduce failed");
    double gemm = 0, gemv = 0;
    if (status == STRAND_OK)
        status = strand_agree(grid.world, reference_rates(shard.T > 0 ? shard.T : 1, C, 4 * C, &gemm, &gemv));
    if (status == STRAND_OK && grid.world_rank == 0) {
        const double f = median(t, o->repeat), b = median(t + o->repeat, o->repeat),
                     fb = median(t + 2 * o->repeat, o->repeat);
        const double flops =
            ops->flops ? 3.0 * ops->flops(strand_mixer_options(&config, ops), C, shard.max_T) : 0;
        char rate[160] = "null,\"gflops_vs_sgemm\":null,\"gflops_vs_sgemv\":null";
        if (flops > 0)
            snprintf(rate, sizeof rate, "%.4g,\"gflops_vs_sgemm\":%.4g,\"gflops_vs_sgemv\":%.4g",
                     flops / fb / 1e9, flops / fb / 1e9 / gemm, flops / fb / 1e9 / gemv);
        const char *threads = getenv("OPENBLAS_NUM_THREADS");
        char extra[400] = "";
        if (o->kind == BENCH_SCAN) {
            /* a_t and b_t over this rank's positions, once; bandwidth over at least 256 MiB */
            const int64_t width = scan_width(&config, o->layer, C);
            const double bytes = 2.0 * (double)shard.max_T * (double)width * sizeof(real_t);
            const double gbs = read_bandwidth((size_t)1 << 28);
            const double kf = median(t + 3 * o->repeat, o->repeat), kb = median(t + 4 * o->repeat, o->repeat);
            snprintf(extra, sizeof extra,
                     ",\"state_width\":%lld,\"scan_bytes_sent\":%.0f,\"scan_kernel_forward_s\":%.6g,"
                     "\"scan_kernel_backward_s\":%.6g,\"read_gbs\":%.4g,\"read_floor_s\":%.6g,"
                     "\"scan_forward_vs_floor\":%.4g",
                     (long long)width, median(t + 5 * o->repeat, o->repeat), kf, kb, gbs, bytes / (gbs * 1e9),
                     kf / (bytes / (gbs * 1e9)));
        }
        static const char *const kind_names[] = {"mixer", "rnn", "scan"};
        printf("{\"bench\":\"%s\",\"layer\":\"%s\",\"precision\":\"%s\",\"length\":%lld,\"channels\":%d,"
               "\"ranks\":%d,\"threads\":\"%s\",\"forward_s\":%.6g,\"backward_s\":%.6g,\"fwd_bwd_s\":%.6g,"
               "\"comm_s\":%.6g,\"bytes_sent\":%.0f,\"peak_rss_bytes\":%lld,"
               "\"gflops\":%s,\"sgemm_gflops\":%.4g,\"sgemv_gflops\":%.4g%s}\n",
               kind_names[o->kind], o->layer, STRAND_REAL_NAME, (long long)o->length, C, grid.sp_size,
               threads ? threads : "default", f, b, fb, median(t + 6 * o->repeat, o->repeat),
               median(t + 7 * o->repeat, o->repeat), peak_rss, rate, gemm, gemv, extra);
        fflush(stdout);
    }
    if (mixer.state && ops->destroy) ops->destroy(&mixer);
    strand_plan_free(&plan);
    strand_params_free(&table);
    real_t *bufs[] = {params, grads, u, y, dy, du};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        strand_free(bufs[i]);
    strand_free(t);
    strand_shard_free(&shard);
    strand_grid_free(&grid);
    return status;
}

static int bench_main(int argc, char **argv, int kind) {
    static const char *const names[] = {"bench mixer", "bench rnn", "bench scan"};
    static const char *const usages[] = {bench_mixer_usage, bench_rnn_usage, bench_scan_usage};
    const char *name = names[kind];
    mixer_args o = {NULL, 0, 0, 3, kind, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            if (cli_world_rank() == 0) fputs(usages[kind], stdout);
            return CLI_OK;
        }
        static const char *const known[] = {"--layer",  "--cell",  "--length", "--channels",
                                            "--repeat", "--state", "--set",    NULL};
        if (i + 1 >= argc) return cli_missing_value(name, a, known);
        const char *v = argv[++i];
        char *end = NULL;
        if (strcmp(a, kind == BENCH_RNN ? "--cell" : "--layer") == 0) {
            o.layer = v;
        } else if (strcmp(a, "--length") == 0) {
            o.length = strtoll(v, &end, 10);
        } else if (strcmp(a, "--channels") == 0) {
            o.channels = (int)strtol(v, &end, 10);
        } else if (strcmp(a, "--repeat") == 0) {
            o.repeat = (int)strtol(v, &end, 10);
        } else if (kind == BENCH_SCAN && strcmp(a, "--state") == 0) {
            o.state = (int)strtol(v, &end, 10);
            if (!*end && o.state <= 0) end = (char *)v; /* refused below as a bad value */
        } else if (strcmp(a, "--set") == 0) {
            continue; /* applied in run() */
        } else {
            cli_error(name, "unknown option '%s' (see --help)", a);
            return CLI_USAGE;
        }
        if (end && (*end || end == v)) {
            cli_error(name, "bad value '%s' for %s", v, a);
            return CLI_USAGE;
        }
    }
    if (kind == BENCH_RNN && o.layer) {
        static const char *const cells[] = {"rnn", "lstm", "gru", "ornn"};
        int known = 0;
        for (int i = 0; i < 4; i++)
            known |= strcmp(o.layer, cells[i]) == 0;
        if (!known) {
            cli_error(name, "--cell %s: one of rnn, lstm, gru, ornn", o.layer);
            return CLI_USAGE;
        }
    }
    if (!o.layer || o.length <= 0 || o.channels <= 0 || o.repeat <= 0) {
        cli_error(name, "%s, --length and --channels are required, --repeat > 0 (see --help)",
                  kind == BENCH_RNN ? "--cell" : "--layer");
        return CLI_USAGE;
    }
    return run(&o, argc, argv) == STRAND_OK ? CLI_OK : cli_report(name);
}

int bench_mixer(int argc, char **argv) {
    return bench_main(argc, argv, BENCH_MIXER);
}

int bench_rnn(int argc, char **argv) {
    return bench_main(argc, argv, BENCH_RNN);
}

int bench_scan(int argc, char **argv) {
    return bench_main(argc, argv, BENCH_SCAN);
}
