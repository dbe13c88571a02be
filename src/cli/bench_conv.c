/* strand bench fftconv: time the distributed long convolution (bare, or inside a long-convolution mixer)
 * forward and backward under mpirun, with FFTW's own time for the same transforms measured in the
 * same run, and print one JSON line on rank 0. */
#include "cli.h"

#include "strand/config.h"
#include "strand/dist.h"
#include "kernels/fftconv.h"
#include "strand/layout.h"
#include "strand/model.h"
#include "strand/perf.h"
#include "core/rng.h"

#include <cblas.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef STRAND_REAL_DOUBLE
#define R_BENCH_GEMM cblas_dgemm
#else
#define R_BENCH_GEMM cblas_sgemm
#endif

static const char bench_conv_usage[] =
    "usage: mpirun -n N strand bench fftconv --length L --channels D [options]\n"
    "\n"
    "Time the causal long convolution over a window of L tokens sharded across the N ranks:\n"
    "forward, backward and both, median over --repeat runs after one warm-up, the slowest rank\n"
    "each time. Prints one JSON line: length, channels, ranks, strategy, layer, forward_s,\n"
    "backward_s, fwd_bwd_s, bytes_sent_per_rank (max over ranks), fft_s (inside FFTW execute),\n"
    "fftw_ref_s (the same FFTW transforms back to back without strand's packing and exchange),\n"
    "plan_s, and max_rel_error against the O(L^2) direct sum (bare conv with L <= 8192, else null).\n"
    "With --layer a mixer, also where its time goes (filter_s: the implicit filter network,\n"
    "projection_s: its position-wise GEMMs, fft_s, exchange_s: packing, exchange and spectral\n"
    "products, pointwise_s: the rest), its floors measured in the same run (fftw_ref_s: the six\n"
    "transforms; gemm_floor_s: sgemm alone at every GEMM shape of the layer, forward and backward,\n"
    "on OpenBLAS's own threads) and over_floor = fwd_bwd_s / (fftw_ref_s + gemm_floor_s).\n"
    "\n"
    "options:\n"
    "  --length L             window length in tokens (required)\n"
    "  --channels D           channels (required)\n"
    "  --strategy S           auto | fftw-mpi | alltoall (default auto)\n"
    "  --layer NAME           bare (the convolution alone, random kernel), or a long-convolution mixer\n"
    "                         (any with the long-convolution capability; default bare)\n"
    "  --layout NAME          contiguous | zigzag (default contiguous)\n"
    "  --repeat N             timed repetitions (default 5)\n"
    "  --measure              plan with FFTW_MEASURE (slow to plan, faster to run)\n"
    "  --wisdom FILE          FFTW wisdom file to read and update\n"
    "  --threads N            threads of the rank (parallel.threads: OpenMP, OpenBLAS, FFTW; default 1)\n"
    "  --no-check             skip the comparison with the direct sum\n";

typedef struct {
    int64_t length;
    int channels, repeat, measure, check, layout, threads;
    const char *strategy, *layer, *wisdom;
} bench_args;

static int parse_int64(const char *text, int64_t *value) {
    char *end = NULL;
    long long v = strtoll(text, &end, 10);
    if (!end || *end || end == text || v <= 0) return -1;
    *value = v;
    return 0;
}

static int strategy_code(const char *name, int *code) {
    if (strcmp(name, "auto") == 0)
        *code = STRAND_CONV_AUTO;
    else if (strcmp(name, "fftw-mpi") == 0)
        *code = STRAND_CONV_FFTW_MPI;
    else if (strcmp(name, "alltoall") == 0)
        *code = STRAND_CONV_ALLTOALL;
    else
        return -1;
    return 0;
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

/* Counter-based values in [-1, 1) at global positions, so the data do not depend on the rank count. */
static void fill_random(real_t *x, const strand_shard *shard, int C, uint64_t stream) {
    for (int64_t i = 0; i < shard->T; i++) {
        const uint64_t pos = (uint64_t)strand_shard_position(shard, i);
        for (int c = 0; c < C; c++)
            x[i * C + c] = (real_t)(2.0 * strand_rng_uniform(1234, 100 + stream, pos, (uint64_t)c) - 1.0);
    }
}

typedef struct {
    double forward, backward, both, fft, ref, plan, error;
    int64_t bytes, N;
    int strategy;
    double section[STRAND_SECTION_COUNT], gemm_floor, gemm_flops;
} bench_result;

/* Slowest rank's value. */
static int max_over(MPI_Comm comm, double *values, int n) {
    STRAND_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, values, n, MPI_DOUBLE, MPI_MAX, comm));
    return STRAND_OK;
}

typedef struct {
    real_t *u, *k, *dy, *y, *du, *dk, *y_ref, *du_ref, *dk_ref;
    double *t_fwd, *t_bwd, *t_both, *t_fft, *t_ref;
    double *t_section; /* (STRAND_SECTION_COUNT, repeat) */
} bench_buffers;

static void buffers_free(bench_buffers *b) {
    real_t *reals[] = {b->u, b->k, b->dy, b->y, b->du, b->dk, b->y_ref, b->du_ref, b->dk_ref};
    for (size_t i = 0; i < sizeof reals / sizeof *reals; i++)
        strand_free(reals[i]);
    double *doubles[] = {b->t_fwd, b->t_bwd, b->t_both, b->t_fft, b->t_ref, b->t_section};
    for (size_t i = 0; i < sizeof doubles / sizeof *doubles; i++)
        strand_free(doubles[i]);
}

static int buffers_alloc(bench_buffers *b, int64_t n, int repeat, int with_ref) {
    memset(b, 0, sizeof *b);
    real_t **reals[] = {&b->u, &b->k, &b->dy, &b->y, &b->du, &b->dk, &b->y_ref, &b->du_ref, &b->dk_ref};
    const size_t n_reals = with_ref ? 9 : 6;
    for (size_t i = 0; i < n_reals; i++)
        STRAND_ALLOC(*reals[i], n > 0 ? n : 1, "bench arrays");
    double **doubles[] = {&b->t_fwd, &b->t_bwd, &b->t_both, &b->t_fft, &b->t_ref};
    for (size_t i = 0; i < sizeof doubles / sizeof *doubles; i++)
        STRAND_ALLOC(*doubles[i], repeat, "bench timings");
    STRAND_ALLOC(b->t_section, STRAND_SECTION_COUNT * repeat, "bench timings");
    return STRAND_OK;
}

static int time_bare_conv(const bench_args *args, const strand_shard *shard, int strategy, bench_buffers *b,
                          bench_result *res) {
    MPI_Comm comm = shard->grid->sp_comm;
    const int C = args->channels;
    const int64_t n = shard->T * C;
    fill_random(b->u, shard, C, 1);
    fill_random(b->k, shard, C, 2);
    fill_random(b->dy, shard, C, 3);
    strand_fftconv_options options = {strategy, args->measure, args->wisdom, args->threads};
    strand_fftconv *conv = NULL;
    STRAND_CALL_MPI(MPI_Barrier(comm));
    double t0 = strand_now();
    STRAND_CALL(strand_fftconv_create(&conv, shard, C, &options));
    res->plan = strand_now() - t0;
    res->strategy = strand_fftconv_strategy(conv);
    res->N = strand_fftconv_transform_size(conv);
    int status = STRAND_OK;
    for (int r = -1; r < args->repeat && status == STRAND_OK; r++) { /* r = -1: warm-up */
        memset(b->du, 0, sizeof(real_t) * (size_t)n);
        memset(b->dk, 0, sizeof(real_t) * (size_t)n);
        STRAND_CALL_GOTO(status, done, MPI_Barrier(comm) == MPI_SUCCESS ? STRAND_OK : STRAND_ERR_MPI);
        const double a = strand_now();
        STRAND_CALL_GOTO(status, done, strand_fftconv_forward(conv, b->y, b->u, b->k));
        const double m = strand_now();
        STRAND_CALL_GOTO(status, done, strand_fftconv_backward(conv, b->du, b->dk, b->dy));
        const double e = strand_now();
        double t[4] = {m - a, e - m, e - a, strand_fftconv_fft_seconds(conv)};
        STRAND_CALL_GOTO(status, done, max_over(comm, t, 4));
        if (r >= 0) {
            b->t_fwd[r] = t[0];
            b->t_bwd[r] = t[1];
            b->t_both[r] = t[2];
            b->t_fft[r] = t[3];
        }
        /* FFTW alone, right after, so both see the same machine load (it overwrites the saved
         * spectra; the next repetition's forward recomputes them). */
        double ref = 0;
        STRAND_CALL_GOTO(status, done, strand_fftconv_fft_reference(conv, &ref));
        STRAND_CALL_GOTO(status, done, max_over(comm, &ref, 1));
        if (r >= 0) b->t_ref[r] = ref;
    }
    int64_t bytes = strand_fftconv_bytes_sent(conv); /* of the last forward + backward */
    STRAND_CALL_GOTO(status, done,
                     MPI_Allreduce(&bytes, &res->bytes, 1, MPI_INT64_T, MPI_MAX, comm) == MPI_SUCCESS
                         ? STRAND_OK
                         : STRAND_ERR_MPI);
    res->forward = median(b->t_fwd, args->repeat);
    res->backward = median(b->t_bwd, args->repeat);
    res->both = median(b->t_both, args->repeat);
    res->fft = median(b->t_fft, args->repeat);
    res->ref = median(b->t_ref, args->repeat);
    res->error = NAN;
    if (args->check && args->length <= 8192) {
        /* Recompute y, du, dk once (the reference run overwrote the saved spectra). */
        memset(b->du, 0, sizeof(real_t) * (size_t)n);
        memset(b->dk, 0, sizeof(real_t) * (size_t)n);
        STRAND_CALL_GOTO(status, done, strand_fftconv_forward(conv, b->y, b->u, b->k));
        STRAND_CALL_GOTO(status, done, strand_fftconv_backward(conv, b->du, b->dk, b->dy));
        STRAND_CALL_GOTO(status, done, strand_fftconv_direct(shard, C, b->y_ref, b->u, b->k));
        STRAND_CALL_GOTO(status, done,
                         strand_fftconv_direct_backward(shard, C, b->du_ref, b->dk_ref, b->dy, b->u, b->k));
        res->error = fmax(strand_relative_error(comm, b->y, b->y_ref, n),
                          fmax(strand_relative_error(comm, b->du, b->du_ref, n),
                               strand_relative_error(comm, b->dk, b->dk_ref, n)));
    }
done:
    strand_fftconv_free(conv);
    return status;
}

/* Parameters as strand_model_init_params fills them, then the mixer's own. */
static void init_params(const strand_param_table *table, real_t *params, strand_mixer *mixer, uint64_t seed) {
    for (int i = 0; i < table->count; i++) {
        const strand_param_info *p = &table->items[i];
        real_t *w = params + p->offset;
        for (int64_t j = 0; j < p->size; j++) {
            if (p->init == STRAND_INIT_ONES)
                w[j] = 1;
            else if (p->init == STRAND_INIT_NORMAL)
                w[j] = (real_t)(p->init_std *
                                strand_rng_normal(seed, STRAND_STREAM_INIT, (uint64_t)i, (uint64_t)j));
        }
    }
    if (mixer->ops->init_params) mixer->ops->init_params(mixer, params, seed);
}

/* sgemm (or dgemm) alone at every linear layer's shapes in the mixer's cost hook, as
 * linear_forward and linear_backward call it: forward (T,in) x (out,in)^T, dX (T,out) x (out,in),
 * dW (T,out)^T x (T,in). Median over the repeats of the sum; the slowest rank's. */
static int gemm_floor(const bench_args *args, const strand_shard *shard, const strand_mixer_ops *ops,
                      const strand_config *config, bench_buffers *b, bench_result *res) {
    res->gemm_floor = NAN;
    if (!ops->cost) return STRAND_OK;
    strand_cost cost;
    memset(&cost, 0, sizeof cost);
    strand_cost_shape shape = {args->channels, shard->T,      args->length, shard->grid->sp_size,
                               args->layout,   res->strategy, res->N,       (int)sizeof(real_t)};
    ops->cost(strand_mixer_options(config, ops), &shape, &cost);
    int64_t most = 1;
    for (int i = 0; i < cost.linears; i++) {
        const int64_t rows = (int64_t)cost.linear_rows[i], in = (int64_t)cost.linear_in[i],
                      out = (int64_t)cost.linear_out[i];
        const int64_t need = rows * (in > out ? in : out);
        most = need > most ? need : most;
        if (in * out > most) most = in * out;
    }
    real_t *x = strand_alloc(sizeof(real_t) * (size_t)most, "bench gemm floor");
    real_t *y = strand_alloc(sizeof(real_t) * (size_t)most, "bench gemm floor");
    real_t *w = strand_alloc(sizeof(real_t) * (size_t)most, "bench gemm floor");
    int status = strand_agree(shard->grid->sp_comm, x && y && w ? STRAND_OK : STRAND_ERR_NOMEM);
    if (status == STRAND_OK) {
        for (int64_t i = 0; i < most; i++)
            x[i] = y[i] = w[i] = (real_t)((i % 7) - 3) * (real_t)0.1;
        res->gemm_flops = 0;
        /* OpenBLAS's own threads here (strand's GEMMs cut rows over OpenMP's): the library's best. */
        strand_threads_blas_own(1);
        for (int r = -1; r < args->repeat; r++) {
            const double t0 = strand_now();
            for (int i = 0; i < cost.linears; i++) {
                const int T = (int)cost.linear_rows[i], in = (int)cost.linear_in[i],
                          out = (int)cost.linear_out[i];
                R_BENCH_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, T, out, in, 1, x, in, w, in, 0, y, out);
                if (cost.linear_input_grad[i])
                    R_BENCH_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, in, out, 1, y, out, w, in, 0,
                                 x, in);
                R_BENCH_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, T, 1, y, out, x, in, 1, w, in);
                if (r < 0) res->gemm_flops += 2.0 * T * in * out * (cost.linear_input_grad[i] ? 3 : 2);
            }
            double t = strand_now() - t0;
            status = max_over(shard->grid->sp_comm, &t, 1);
            if (status != STRAND_OK) break;
            if (r >= 0) b->t_ref[r] = t;
        }
        strand_threads_blas_own(0);
        if (status == STRAND_OK) res->gemm_floor = median(b->t_ref, args->repeat);
    }
    strand_free(x);
    strand_free(y);
    strand_free(w);
    return status;
}

static int time_mixer(const bench_args *args, const strand_shard *shard, const strand_mixer_ops *ops,
                      bench_buffers *b, bench_result *res) {
    MPI_Comm comm = shard->grid->sp_comm;
    const int C = args->channels;
    const int64_t n = shard->T * C;
    strand_config config;
    strand_config_defaults(&config);
    char setting[1200];
    snprintf(setting, sizeof setting, "fft.strategy=%s", args->strategy);
    STRAND_CALL(strand_config_set(&config, setting));
    STRAND_CALL(strand_config_set(&config, args->measure ? "fft.planner=measure" : "fft.planner=estimate"));
    if (args->wisdom) {
        snprintf(setting, sizeof setting, "fft.wisdom=%s", args->wisdom);
        STRAND_CALL(strand_config_set(&config, setting));
    }
    snprintf(setting, sizeof setting, "parallel.threads=%d", args->threads);
    STRAND_CALL(strand_config_set(&config, setting));
    snprintf(setting, sizeof setting, "model.d_model=%d", C);
    STRAND_CALL(strand_config_set(&config, setting));
    snprintf(setting, sizeof setting, "train.seq_len=%lld", (long long)args->length);
    STRAND_CALL(strand_config_set(&config, setting));

    strand_param_table table;
    memset(&table, 0, sizeof table);
    strand_mixer mixer;
    strand_plan plan;
    strand_plan_init(&plan, 0, 0);
    real_t *params = NULL, *grads = NULL;
    int status = STRAND_OK;
    STRAND_CALL_GOTO(status, done, strand_mixer_create(&mixer, ops, C, &config, &table, "bench.mixer"));
    STRAND_CALL_GOTO(status, done, MPI_Barrier(comm) == MPI_SUCCESS ? STRAND_OK : STRAND_ERR_MPI);
    double t0 = strand_now();
    STRAND_CALL_GOTO(status, done, strand_mixer_setup_alone(&mixer, shard, &plan));
    res->plan = strand_now() - t0;
    params = strand_alloc(sizeof(real_t) * (size_t)(table.total > 0 ? table.total : 1), "bench parameters");
    grads = strand_alloc(sizeof(real_t) * (size_t)(table.total > 0 ? table.total : 1), "bench gradients");
    STRAND_CALL_GOTO(status, done, params && grads ? STRAND_OK : STRAND_ERR_NOMEM);
    init_params(&table, params, &mixer, 7);
    fill_random(b->u, shard, C, 1);
    fill_random(b->dy, shard, C, 3);
    strand_sections_enable(1);
    for (int r = -1; r < args->repeat; r++) {
        memset(b->du, 0, sizeof(real_t) * (size_t)n);
        STRAND_CALL_GOTO(status, done, MPI_Barrier(comm) == MPI_SUCCESS ? STRAND_OK : STRAND_ERR_MPI);
        strand_sections_reset();
        const double a = strand_now();
        STRAND_CALL_GOTO(status, done, ops->forward(&mixer, b->y, b->u, params, shard));
        const double m = strand_now();
        STRAND_CALL_GOTO(status, done, ops->backward(&mixer, b->du, grads, b->dy, b->u, params, shard));
        const double e = strand_now();
        /* the slowest rank's total; each section its own slowest rank */
        double t[3 + STRAND_SECTION_COUNT] = {m - a, e - m, e - a};
        for (int i = 0; i < STRAND_SECTION_COUNT; i++)
            t[3 + i] = strand_section_seconds(i);
        STRAND_CALL_GOTO(status, done, max_over(comm, t, 3 + STRAND_SECTION_COUNT));
        if (r >= 0) {
            b->t_fwd[r] = t[0];
            b->t_bwd[r] = t[1];
            b->t_both[r] = t[2];
            for (int i = 0; i < STRAND_SECTION_COUNT; i++)
                b->t_section[i * args->repeat + r] = t[3 + i];
        }
    }
    res->forward = median(b->t_fwd, args->repeat);
    res->backward = median(b->t_bwd, args->repeat);
    res->both = median(b->t_both, args->repeat);
    for (int i = 0; i < STRAND_SECTION_COUNT; i++)
        res->section[i] = median(b->t_section + i * args->repeat, args->repeat);
    STRAND_CALL_GOTO(status, done, gemm_floor(args, shard, ops, &config, b, res));
done:
    strand_sections_enable(0);
    if (mixer.state && ops->destroy) ops->destroy(&mixer);
    strand_plan_free(&plan);
    strand_free(params);
    strand_free(grads);
    strand_params_free(&table);
    return status;
}

/* For a mixer: the strategy a bare conv of this shape resolves to, and FFTW's time for its transforms. */
static int conv_reference(const bench_args *args, const strand_shard *shard, int strategy, bench_buffers *b,
                          bench_result *res) {
    strand_fftconv_options options = {strategy, args->measure, args->wisdom, args->threads};
    strand_fftconv *conv = NULL;
    STRAND_CALL(strand_fftconv_create(&conv, shard, args->channels, &options));
    res->strategy = strand_fftconv_strategy(conv);
    res->N = strand_fftconv_transform_size(conv);
    int status = STRAND_OK;
    for (int r = 0; r < args->repeat && status == STRAND_OK; r++) {
        double t = 0;
        status = strand_fftconv_fft_reference(conv, &t);
        if (status == STRAND_OK) status = max_over(shard->grid->sp_comm, &t, 1);
        b->t_ref[r] = t;
    }
    if (status == STRAND_OK) res->ref = median(b->t_ref, args->repeat);
    strand_fftconv_free(conv);
    return status;
}

static void print_number(const char *key, double value) {
    if (isnan(value))
        printf(",\"%s\":null", key);
    else
        printf(",\"%s\":%.6g", key, value);
}

int bench_conv(int argc, char **argv) {
    const char *name = "bench fftconv";
    bench_args args = {0, 0, 5, 0, 1, STRAND_LAYOUT_CONTIGUOUS, 1, "auto", "bare", NULL};
    int rank = cli_world_rank();
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0) {
            if (rank == 0) fputs(bench_conv_usage, stdout);
            return CLI_OK;
        }
        if (strcmp(opt, "--measure") == 0) {
            args.measure = 1;
            continue;
        }
        if (strcmp(opt, "--no-check") == 0) {
            args.check = 0;
            continue;
        }
        const int takes_value = strcmp(opt, "--length") == 0 || strcmp(opt, "--channels") == 0 ||
                                strcmp(opt, "--strategy") == 0 || strcmp(opt, "--layer") == 0 ||
                                strcmp(opt, "--repeat") == 0 || strcmp(opt, "--layout") == 0 ||
                                strcmp(opt, "--wisdom") == 0 || strcmp(opt, "--threads") == 0;
        if (!takes_value) {
            cli_error(name, "unknown option '%s' (see strand bench fftconv --help)", opt);
            return CLI_USAGE;
        }
        if (i + 1 >= argc) {
            cli_error(name, "%s needs a value", opt);
            return CLI_USAGE;
        }
        const char *value = argv[++i];
        int64_t v = 0;
        if (strcmp(opt, "--length") == 0 || strcmp(opt, "--channels") == 0 || strcmp(opt, "--repeat") == 0 ||
            strcmp(opt, "--threads") == 0) {
            if (parse_int64(value, &v) != 0 || (strcmp(opt, "--length") != 0 && v > 1 << 20)) {
                cli_error(name, "%s '%s': expected a positive integer", opt, value);
                return CLI_USAGE;
            }
            if (strcmp(opt, "--length") == 0)
                args.length = v;
            else if (strcmp(opt, "--channels") == 0)
                args.channels = (int)v;
            else if (strcmp(opt, "--threads") == 0)
                args.threads = (int)v;
            else
                args.repeat = (int)v;
        } else if (strcmp(opt, "--strategy") == 0) {
            int code;
            if (strategy_code(value, &code) != 0) {
                cli_error(name, "--strategy '%s': expected auto, fftw-mpi or alltoall", value);
                return CLI_USAGE;
            }
            args.strategy = value;
        } else if (strcmp(opt, "--layer") == 0) {
            args.layer = value;
        } else if (strcmp(opt, "--layout") == 0) {
            if (strcmp(value, "contiguous") == 0)
                args.layout = STRAND_LAYOUT_CONTIGUOUS;
            else if (strcmp(value, "zigzag") == 0)
                args.layout = STRAND_LAYOUT_ZIGZAG;
            else {
                cli_error(name, "--layout '%s': expected contiguous or zigzag", value);
                return CLI_USAGE;
            }
        } else {
            args.wisdom = value;
        }
    }
    if (args.length <= 0 || args.channels <= 0) {
        cli_error(name, "--length and --channels are required (see strand bench fftconv --help)");
        return CLI_USAGE;
    }
    const int bare = strcmp(args.layer, "bare") == 0;
    const strand_mixer_ops *ops = NULL;
    if (!bare) {
        /* Any registered mixer that is a long convolution, with its default options. */
        ops = strand_mixer_find(args.layer);
        strand_config defaults;
        strand_config_defaults(&defaults);
        if (!ops || !ops->capabilities ||
            !(ops->capabilities(strand_mixer_options(&defaults, ops)) & STRAND_MIXER_LONG_CONV)) {
            char names[256] = "bare";
            for (int i = 0; strand_mixer_at(i); i++) {
                const strand_mixer_ops *m = strand_mixer_at(i);
                if (m->capabilities &&
                    (m->capabilities(strand_mixer_options(&defaults, m)) & STRAND_MIXER_LONG_CONV))
                    snprintf(names + strlen(names), sizeof names - strlen(names), ", %s", m->name);
            }
            cli_error(name, "--layer '%s': expected one of %s", args.layer, names);
            return CLI_USAGE;
        }
    }
    int strategy = STRAND_CONV_AUTO;
    (void)strategy_code(args.strategy, &strategy);

    strand_threads_set(args.threads);
    strand_grid grid;
    int status = strand_grid_init(&grid, MPI_COMM_WORLD, 0, 1);
    if (status != STRAND_OK) return cli_report(name);
    strand_shard shard;
    status = strand_shard_init(&shard, &grid, args.length, args.layout);
    if (status != STRAND_OK) {
        strand_grid_free(&grid);
        return cli_report(name);
    }
    bench_buffers b;
    bench_result res = {NAN, NAN, NAN, NAN, NAN, NAN, NAN, -1, 0, strategy, {0}, NAN, 0};
    status =
        buffers_alloc(&b, shard.T * args.channels, args.repeat, bare && args.check && args.length <= 8192);
    status = strand_agree(grid.sp_comm, status);
    if (status == STRAND_OK) {
        if (bare) {
            status = time_bare_conv(&args, &shard, strategy, &b, &res);
        } else {
            status = time_mixer(&args, &shard, ops, &b, &res);
            status = strand_agree(grid.sp_comm, status);
            if (status == STRAND_OK) status = conv_reference(&args, &shard, strategy, &b, &res);
        }
        status = strand_agree(grid.sp_comm, status);
    }
    int64_t rss = strand_peak_rss_bytes(), peak_rss = rss;
    if (status == STRAND_OK) MPI_Allreduce(&rss, &peak_rss, 1, MPI_INT64_T, MPI_MAX, grid.sp_comm);
    if (status == STRAND_OK && rank == 0) {
        printf("{\"bench\":\"fftconv\",\"length\":%lld,\"channels\":%d,\"ranks\":%d,\"precision\":\"%s\","
               "\"strategy\":\"%s\",\"layer\":\"%s\",\"layout\":\"%s\",\"transform_size\":%lld,\"repeat\":%d,"
               "\"planner\":\"%s\",\"threads\":%d,\"blas_core\":\"%s\"",
               (long long)args.length, args.channels, grid.sp_size, STRAND_REAL_NAME,
               strand_fftconv_strategy_name(res.strategy), args.layer,
               args.layout == STRAND_LAYOUT_ZIGZAG ? "zigzag" : "contiguous", (long long)res.N, args.repeat,
               args.measure ? "measure" : "estimate", args.threads, openblas_get_corename());
        print_number("forward_s", res.forward);
        print_number("backward_s", res.backward);
        print_number("fwd_bwd_s", res.both);
        if (res.bytes >= 0)
            printf(",\"bytes_sent_per_rank\":%lld", (long long)res.bytes);
        else
            printf(",\"bytes_sent_per_rank\":null");
        print_number("fft_s", res.fft);
        print_number("fftw_ref_s", res.ref);
        print_number("plan_s", res.plan);
        print_number("max_rel_error", res.error);
        if (!bare) {
            static const char *const section_keys[STRAND_SECTION_COUNT] = {"filter_s", "projection_s",
                                                                           "fft_s", "exchange_s"};
            double named = 0;
            printf(",\"breakdown\":{");
            for (int i = 0; i < STRAND_SECTION_COUNT; i++) {
                printf("%s\"%s\":%.6g", i ? "," : "", section_keys[i], res.section[i]);
                named += res.section[i];
            }
            printf(",\"pointwise_s\":%.6g}", res.both - named);
            print_number("gemm_floor_s", res.gemm_floor);
            print_number("gemm_floor_gflops", res.gemm_flops / res.gemm_floor * 1e-9);
            print_number("floor_s", res.ref + res.gemm_floor);
            print_number("over_floor", res.both / (res.ref + res.gemm_floor));
        }
        printf(",\"peak_rss_bytes_per_rank\":%lld}\n", (long long)peak_rss);
        fflush(stdout);
    }
    buffers_free(&b);
    strand_shard_free(&shard);
    strand_grid_free(&grid);
    return status == STRAND_OK ? CLI_OK : cli_report(name);
}
