/* strand bench mixer: time any registered mixer's forward and backward over a window sharded across
 * the ranks, next to a same-run sgemm and sgemv (the rates a dense and a matrix-vector bound kernel
 * reach on these cores), and print one JSON line on rank 0. */
#include "cli.h"

#include "core/rng.h"
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
    "layer, length, channels, ranks, threads (OpenBLAS), forward_s, backward_s, fwd_bwd_s, and when\n"
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

typedef struct {
    const char *layer;
    int64_t length;
    int channels, repeat;
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
        t = strand_alloc(sizeof(double) * 3 * (size_t)o->repeat, "bench timings");
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
        const double a = strand_now();
        status = strand_agree(grid.world, ops->forward(&mixer, y, u, params, &shard));
        const double m = strand_now();
        if (status == STRAND_OK)
            status = strand_agree(grid.world, ops->backward(&mixer, du, grads, dy, u, params, &shard));
        const double e = strand_now();
        double v[3] = {m - a, e - m, e - a};
        MPI_Allreduce(MPI_IN_PLACE, v, 3, MPI_DOUBLE, MPI_MAX, grid.world);
        if (r >= 0)
            for (int k = 0; k < 3; k++)
                t[k * o->repeat + r] = v[k];
    }
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
        printf("{\"bench\":\"mixer\",\"layer\":\"%s\",\"precision\":\"%s\",\"length\":%lld,\"channels\":%d,"
               "\"ranks\":%d,\"threads\":\"%s\",\"forward_s\":%.6g,\"backward_s\":%.6g,\"fwd_bwd_s\":%.6g,"
               "\"gflops\":%s,\"sgemm_gflops\":%.4g,\"sgemv_gflops\":%.4g}\n",
               o->layer, STRAND_REAL_NAME, (long long)o->length, C, grid.sp_size,
               threads ? threads : "default", f, b, fb, rate, gemm, gemv);
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

int bench_mixer(int argc, char **argv) {
    const char *name = "bench mixer";
    mixer_args o = {NULL, 0, 0, 3};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            if (cli_world_rank() == 0) fputs(bench_mixer_usage, stdout);
            return CLI_OK;
        }
        if (i + 1 >= argc) {
            cli_error(name, "option '%s' needs a value (see --help)", a);
            return CLI_USAGE;
        }
        const char *v = argv[++i];
        char *end = NULL;
        if (strcmp(a, "--layer") == 0) {
            o.layer = v;
        } else if (strcmp(a, "--length") == 0) {
            o.length = strtoll(v, &end, 10);
        } else if (strcmp(a, "--channels") == 0) {
            o.channels = (int)strtol(v, &end, 10);
        } else if (strcmp(a, "--repeat") == 0) {
            o.repeat = (int)strtol(v, &end, 10);
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
    if (!o.layer || o.length <= 0 || o.channels <= 0 || o.repeat <= 0) {
        cli_error(name, "--layer, --length and --channels are required, --repeat > 0 (see --help)");
        return CLI_USAGE;
    }
    return run(&o, argc, argv) == STRAND_OK ? CLI_OK : cli_report(name);
}
