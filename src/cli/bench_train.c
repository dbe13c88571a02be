/* strand bench train: tokens per second of whole training steps of a model (every block, the head
 * and loss, backward, the gradient all-reduce, clipping and AdamW: strand_train_step, the update
 * code strand train runs) on synthetic token windows, under mpirun. Prints one JSON line on rank 0.
 *
 * The windows are counter-based (seed, window index, position), so they do not depend on the
 * number of ranks; --dump writes them, the initial parameters and the resolved configuration, so
 * that tests/bench/torch_model.py trains the same model from the same start on the same windows
 * and compares its per-step losses and step time with strand's. */
#include "cli.h"

#include "core/rng.h"
#include "strand/config.h"
#include "strand/dist.h"
#include "strand/layout.h"
#include "strand/model.h"
#include "strand/train.h"

#include <errno.h>
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char bench_train_usage[] =
    "usage: mpirun -n N strand bench train --config FILE [--steps S] [--warmup W] [--dump DIR]\n"
    "                                      [--set KEY=VALUE ...]\n"
    "\n"
    "Time whole training steps of the model FILE configures ([model] and [train] keys; [data] is\n"
    "not read): the forward of every block, the head and loss, the backward, the gradient\n"
    "all-reduce over the world, clipping and AdamW (the update code strand train runs), on\n"
    "synthetic windows of train.seq_len + 1 tokens drawn uniformly from the vocabulary by a\n"
    "counter-based generator (train.seed, window, position), one window per DP group per step.\n"
    "The parameters start from train.seed as in strand train. train.steps is set to W + S, so the\n"
    "learning-rate schedule runs over the benchmark's steps. Token generation is outside the timed\n"
    "step (strand train's data reading is not timed here).\n"
    "\n"
    "Prints one JSON line on rank 0: config, layers, d_model, seq_len, vocab, parameters,\n"
    "precision, ranks, sp, dp, threads (parallel.threads), blas_core (OpenBLAS's kernels), warmup, steps, "
    "step_s (median of the\n"
    "timed steps, each the slowest rank's), step_min_s, step_max_s, step_spread ((max - min) /\n"
    "median), tokens_per_step, tokens_per_s (per median step), comm_s (median, inside MPI calls),\n"
    "peak_rss_bytes (the largest over ranks), losses and grad_norms (every step, warm-up\n"
    "included, the loss before that step's update) and final_loss.\n"
    "\n"
    "options:\n"
    "  --config FILE   model configuration (required)\n"
    "  --steps S       timed steps (default 5)\n"
    "  --warmup W      untimed steps before them (default 2)\n"
    "  --dump DIR      rank 0 writes DIR/config.ini (the resolved configuration), params.bin (the\n"
    "                  initial flat parameter array, little-endian in the build's precision),\n"
    "                  tokens.bin (uint32, (W + S) x dp x (seq_len + 1): step s, DP group d holds\n"
    "                  window s * dp + d), manifest.json (each parameter's name, shape, offset and\n"
    "                  decay flag) and strand.json (the JSON line); tests/bench/torch_model.py reads them\n"
    "  --set KEY=VALUE a configuration key after the file, e.g. --set train.seq_len=4096\n";

enum { TOKEN_STREAM = 103 }; /* the synthetic windows' counter stream (beside bench mixer's 101, 102) */

typedef struct {
    const char *config, *dump;
    int steps, warmup;
} train_args;

/* Token at `position` (0..seq_len) of synthetic window `window`. */
static strand_token_t window_token(uint64_t seed, int64_t window, int64_t position, int V) {
    return (strand_token_t)strand_rng_below((uint64_t)V, seed, TOKEN_STREAM, (uint64_t)window,
                                            (uint64_t)position);
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

/* A JSON string's contents: quotes, backslashes and control characters escaped. */
static void json_string(FILE *out, const char *s) {
    for (; *s; s++) {
        const unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
}

/* Write n bytes to DIR/name (rank 0). */
static int write_file(const char *dir, const char *name, const void *data, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) STRAND_FAIL(STRAND_ERR_IO, "--dump: cannot create %s: %s", path, strerror(errno));
    const size_t written = n ? fwrite(data, 1, n, f) : 0;
    const int error = written != n ? errno : 0;
    if (fclose(f) != 0 || written != n)
        STRAND_FAIL(STRAND_ERR_IO, "--dump: cannot write %s: %s", path, strerror(error ? error : EIO));
    return STRAND_OK;
}

/* The start of a training run, rank 0: the resolved configuration, the initial parameters, every
 * step's windows and the manifest. */
static int dump_start(const char *dir, const strand_model *model, const strand_config *config, int dp,
                      int64_t total_steps, int warmup, int steps) {
    STRAND_CALL(strand_make_dirs(dir));
    char text[16384];
    const size_t n = strand_config_format(config, text, sizeof text);
    if (n >= sizeof text) STRAND_FAIL(STRAND_ERR_INTERNAL, "--dump: the resolved configuration is too long");
    STRAND_CALL(write_file(dir, "config.ini", text, n));
    STRAND_CALL(write_file(dir, "params.bin", model->params, sizeof(real_t) * (size_t)model->table.total));
    const int64_t L1 = config->seq_len + 1, count = total_steps * dp * L1;
    uint32_t *tokens = strand_alloc(sizeof *tokens * (size_t)count, "bench train tokens");
    if (!tokens) return STRAND_ERR_NOMEM;
    for (int64_t w = 0; w < total_steps * dp; w++)
        for (int64_t p = 0; p < L1; p++)
            tokens[w * L1 + p] = (uint32_t)window_token((uint64_t)config->seed, w, p, model->V);
    const int status = write_file(dir, "tokens.bin", tokens, sizeof *tokens * (size_t)count);
    strand_free(tokens);
    STRAND_CALL(status);
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) STRAND_FAIL(STRAND_ERR_IO, "--dump: cannot create %s: %s", path, strerror(errno));
    fprintf(f,
            "{\"precision\":\"%s\",\"dtype\":\"%s\",\"total\":%lld,\"seq_len\":%lld,\"vocab\":%d,\"dp\":%d,"
            "\"steps\":%lld,\"warmup\":%d,\"timed_steps\":%d,\"config\":\"config.ini\","
            "\"params_file\":\"params.bin\",\"tokens_file\":\"tokens.bin\",\"tokens_dtype\":\"uint32\","
            "\"tokens_shape\":[%lld,%d,%lld],\"layers\":\"",
            STRAND_REAL_NAME, sizeof(real_t) == 8 ? "float64" : "float32", (long long)model->table.total,
            (long long)config->seq_len, model->V, dp, (long long)total_steps, warmup, steps,
            (long long)total_steps, dp, (long long)L1);
    json_string(f, config->layers);
    fprintf(f, "\",\"params\":[");
    for (int i = 0; i < model->table.count; i++) {
        const strand_param_info *p = &model->table.items[i];
        fprintf(f, "%s\n{\"name\":\"", i ? "," : "");
        json_string(f, p->layer);
        fputc('.', f);
        json_string(f, p->name);
        if (p->ndim == 2)
            fprintf(f, "\",\"shape\":[%lld,%lld]", (long long)p->shape[0], (long long)p->shape[1]);
        else
            fprintf(f, "\",\"shape\":[%lld]", (long long)p->shape[0]);
        fprintf(f, ",\"offset\":%lld,\"size\":%lld,\"decay\":%d}", (long long)p->offset, (long long)p->size,
                p->decay);
    }
    fprintf(f, "]}\n");
    if (ferror(f) | (fclose(f) != 0)) STRAND_FAIL(STRAND_ERR_IO, "--dump: cannot write %s", path);
    return STRAND_OK;
}

/* The JSON line (rank 0), to stdout and, with --dump, to DIR/strand.json. */
static void print_result(FILE *out, const train_args *o, const strand_config *c, const strand_grid *grid,
                         int64_t parameters, int V, double *step_s, double *comm_s, const double *losses,
                         const double *norms, long long peak_rss, double tokens_per_step) {
    const int S = o->steps, total = o->warmup + o->steps;
    double lo = step_s[0], hi = step_s[0];
    for (int i = 1; i < S; i++)
        lo = step_s[i] < lo ? step_s[i] : lo, hi = step_s[i] > hi ? step_s[i] : hi;
    const double med = median(step_s, S), comm = median(comm_s, S);
    fprintf(out, "{\"bench\":\"train\",\"config\":\"");
    json_string(out, o->config);
    fprintf(out, "\",\"layers\":\"");
    json_string(out, c->layers);
    fprintf(out,
            "\",\"d_model\":%d,\"seq_len\":%lld,\"vocab\":%d,\"parameters\":%lld,\"precision\":\"%s\","
            "\"ranks\":%d,\"sp\":%d,\"dp\":%d,\"threads\":%d,\"blas_core\":\"%s\",\"warmup\":%d,\"steps\":%d,"
            "\"step_s\":%.6g,\"step_min_s\":%.6g,\"step_max_s\":%.6g,\"step_spread\":%.4g,"
            "\"tokens_per_step\":%.0f,\"tokens_per_s\":%.6g,\"comm_s\":%.6g,\"peak_rss_bytes\":%lld,"
            "\"losses\":[",
            c->d_model, (long long)c->seq_len, V, (long long)parameters, STRAND_REAL_NAME, grid->world_size,
            grid->sp_size, grid->dp_size, c->threads, openblas_get_corename(), o->warmup, S, med, lo, hi,
            med > 0 ? (hi - lo) / med : 0, tokens_per_step, tokens_per_step / med, comm, peak_rss);
    for (int i = 0; i < total; i++)
        fprintf(out, "%s%.9g", i ? "," : "", losses[i]);
    fprintf(out, "],\"grad_norms\":[");
    for (int i = 0; i < total; i++)
        fprintf(out, "%s%.9g", i ? "," : "", norms[i]);
    fprintf(out, "],\"final_loss\":%.9g}\n", losses[total - 1]);
}

static int run(const train_args *o, int argc, char **argv) {
    strand_config config;
    strand_config_defaults(&config);
    /* The file may be missing on one node only: agreed before anything else. */
    int status = strand_config_load_file(&config, o->config);
    for (int i = 1; i < argc && status == STRAND_OK; i++)
        if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) status = strand_config_set(&config, argv[++i]);
    char text[64];
    const int64_t total_steps = (int64_t)o->warmup + o->steps;
    snprintf(text, sizeof text, "train.steps=%lld", (long long)total_steps);
    if (status == STRAND_OK) status = strand_config_set(&config, text);
    if (status == STRAND_OK) status = strand_config_validate(&config);
    if (status == STRAND_OK && config.accum_steps != 1)
        status = strand_error_set(
            STRAND_ERR_CONFIG, __FILE__, __LINE__,
            "train.accum_steps = %d: bench train takes one window per DP group per step", config.accum_steps);
    STRAND_CALL(strand_agree(MPI_COMM_WORLD, status));

    strand_grid grid;
    STRAND_CALL(strand_agree(MPI_COMM_WORLD, strand_grid_init(&grid, MPI_COMM_WORLD, config.sp, config.dp)));
    strand_shard shard;
    memset(&shard, 0, sizeof shard);
    strand_model model;
    memset(&model, 0, sizeof model);
    strand_train_moments moments = {NULL, NULL, 0};
    strand_token_t *inputs = NULL, *targets = NULL;
    double *t = NULL;
    status = strand_agree(grid.world,
                          strand_shard_init(&shard, &grid, config.seq_len, strand_train_layout(&config)));
    if (status == STRAND_OK) status = strand_agree(grid.world, strand_model_create(&model, &config, &shard));
    const int64_t rows = shard.T > 0 ? shard.T : 1;
    if (status == STRAND_OK) {
        strand_model_init_params(&model, (uint64_t)config.seed);
        moments.m = strand_alloc(sizeof(real_t) * (size_t)model.table.total, "AdamW first moment");
        moments.v = strand_alloc(sizeof(real_t) * (size_t)model.table.total, "AdamW second moment");
        inputs = strand_alloc(sizeof *inputs * (size_t)rows, "bench train tokens");
        targets = strand_alloc(sizeof *targets * (size_t)rows, "bench train targets");
        t = strand_alloc(sizeof *t * 4 * (size_t)total_steps, "bench train timings");
        status = moments.m && moments.v && inputs && targets && t ? STRAND_OK : STRAND_ERR_NOMEM;
        status = strand_agree(grid.world, status);
    }
    if (status == STRAND_OK && o->dump)
        status =
            strand_agree(grid.world, grid.world_rank == 0 ? dump_start(o->dump, &model, &config, grid.dp_size,
                                                                       total_steps, o->warmup, o->steps)
                                                          : STRAND_OK);
    double *step_s = t, *comm_s = t + total_steps, *losses = t + 2 * total_steps,
           *norms = t + 3 * total_steps;
    const double tokens_per_step = (double)grid.dp_size * (double)config.seq_len;
    for (int64_t step = 0; step < total_steps && status == STRAND_OK; step++) {
        const int64_t window = step * grid.dp_size + grid.dp_rank;
        for (int64_t i = 0; i < shard.T; i++) {
            const int64_t p = strand_shard_position(&shard, i);
            inputs[i] = window_token((uint64_t)config.seed, window, p, model.V);
            targets[i] = window_token((uint64_t)config.seed, window, p + 1, model.V);
        }
        if (MPI_Barrier(grid.world) != MPI_SUCCESS)
            status = strand_error_set(STRAND_ERR_MPI, __FILE__, __LINE__, "bench train: MPI_Barrier failed");
        status = strand_agree(grid.world, status);
        if (status != STRAND_OK) break;
        const double comm0 = strand_comm_seconds(), t0 = strand_now();
        strand_train_step_result r;
        status = strand_train_step(&model, &shard, grid.world, &moments, inputs, targets, step,
                                   tokens_per_step, &r);
        double v[2] = {strand_now() - t0, strand_comm_seconds() - comm0};
        if (status == STRAND_OK &&
            MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_DOUBLE, MPI_MAX, grid.world) != MPI_SUCCESS)
            status =
                strand_error_set(STRAND_ERR_MPI, __FILE__, __LINE__, "bench train: MPI_Allreduce failed");
        if (status != STRAND_OK) break;
        losses[step] = r.loss;
        norms[step] = r.grad_norm;
        if (step >= o->warmup) {
            step_s[step - o->warmup] = v[0];
            comm_s[step - o->warmup] = v[1];
        }
    }
    status = strand_agree(grid.world, status);
    long long peak_rss = (long long)strand_peak_rss_bytes();
    if (status == STRAND_OK &&
        MPI_Allreduce(MPI_IN_PLACE, &peak_rss, 1, MPI_LONG_LONG, MPI_MAX, grid.world) != MPI_SUCCESS)
        status = strand_error_set(STRAND_ERR_MPI, __FILE__, __LINE__, "bench train: MPI_Allreduce failed");
    int dump_status = STRAND_OK;
    if (status == STRAND_OK && grid.world_rank == 0) {
        print_result(stdout, o, &config, &grid, model.table.total, model.V, step_s, comm_s, losses, norms,
                     peak_rss, tokens_per_step);
        fflush(stdout);
        if (o->dump) {
            char path[4096];
            snprintf(path, sizeof path, "%s/strand.json", o->dump);
            FILE *f = fopen(path, "w");
            if (f) {
                /* the timings were sorted by the median above; the line is the same */
                print_result(f, o, &config, &grid, model.table.total, model.V, step_s, comm_s, losses, norms,
                             peak_rss, tokens_per_step);
                if (ferror(f) | (fclose(f) != 0)) f = NULL;
            }
            if (!f)
                dump_status =
                    strand_error_set(STRAND_ERR_IO, __FILE__, __LINE__, "--dump: cannot write %s", path);
        }
    }
    if (status == STRAND_OK) status = strand_agree(grid.world, dump_status);
    strand_free(moments.m);
    strand_free(moments.v);
    strand_free(inputs);
    strand_free(targets);
    strand_free(t);
    strand_model_free(&model);
    strand_shard_free(&shard);
    strand_grid_free(&grid);
    return status;
}

int bench_train(int argc, char **argv) {
    const char *name = "bench train";
    train_args o = {NULL, NULL, 5, 2};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            if (cli_world_rank() == 0) fputs(bench_train_usage, stdout);
            return CLI_OK;
        }
        static const char *const known[] = {"--config", "--dump", "--steps", "--warmup", "--set", NULL};
        if (i + 1 >= argc) return cli_missing_value(name, a, known);
        const char *v = argv[++i];
        char *end = NULL;
        if (strcmp(a, "--config") == 0) {
            o.config = v;
        } else if (strcmp(a, "--dump") == 0) {
            o.dump = v;
        } else if (strcmp(a, "--steps") == 0) {
            o.steps = (int)strtol(v, &end, 10);
            if (!*end && o.steps <= 0) end = (char *)v;
        } else if (strcmp(a, "--warmup") == 0) {
            o.warmup = (int)strtol(v, &end, 10);
            if (!*end && o.warmup < 0) end = (char *)v;
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
    if (!o.config) {
        cli_error(name, "--config is required (see --help)");
        return CLI_USAGE;
    }
    return run(&o, argc, argv) == STRAND_OK ? CLI_OK : cli_report(name);
}
