/* The training loop. Collective over the world: every early return is preceded by an agreement,
 * so a condition one rank sees (bad file, NaN) stops all ranks with the same message. */
#define _POSIX_C_SOURCE 200809L
#include "strand/train.h"

#include "strand/dataset.h"
#include "strand/dist.h"
#include "strand/loader.h"
#include "strand/metrics.h"
#include "strand/model.h"
#include "strand/optim.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const double LN2 = 0.69314718055994530942;

typedef struct {
    strand_config config;
    strand_grid grid;
    strand_dataset dataset;
    strand_loader loader;
    strand_model model;
    strand_adamw opt;
    strand_metrics metrics;
    strand_shard shard;
    uint8_t *inputs, *targets; /* T each: tokens and their next tokens */
    uint8_t *read_buffer;      /* one piece + 1 */
    int rank0;
} trainer;

static int make_dirs(const char *path) {
    char buffer[1024];
    snprintf(buffer, sizeof buffer, "%s", path);
    for (char *p = buffer + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buffer, 0775) != 0 && errno != EEXIST)
            STRAND_FAIL(STRAND_ERR_IO, "cannot create directory %s: %s", buffer, strerror(errno));
        *p = '/';
    }
    if (mkdir(buffer, 0775) != 0 && errno != EEXIST)
        STRAND_FAIL(STRAND_ERR_IO, "cannot create directory %s: %s", buffer, strerror(errno));
    return STRAND_OK;
}

/* Write text to path atomically (temporary file, then rename). */
static int write_text_file(const char *dir, const char *name, const char *text) {
    char path[1200], tmp[1210];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) STRAND_FAIL(STRAND_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    int ok = fputs(text, f) >= 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) STRAND_FAIL(STRAND_ERR_IO, "cannot write %s", path);
    return STRAND_OK;
}

/* Set-up steps that only rank 0 performs (run directory, resolved config). */
static int prepare_run_dir(trainer *t, const strand_train_options *options) {
    if (!t->rank0 || options->no_run_dir) return STRAND_OK;
    STRAND_CALL(make_dirs(t->config.run_dir));
    char text[16384];
    size_t n = strand_config_format(&t->config, text, sizeof text);
    if (n >= sizeof text) STRAND_FAIL(STRAND_ERR_INTERNAL, "resolved config does not fit its buffer");
    STRAND_CALL(write_text_file(t->config.run_dir, "config.ini", text));
    if (!options->quiet) {
        printf("# resolved configuration (saved to %s/config.ini)\n%s", t->config.run_dir, text);
        fflush(stdout);
    }
    return STRAND_OK;
}

/* zigzag balances causal attention; other models keep contiguous pieces (cheaper halos). */
static int layout_for(const strand_config *c) {
    if (strcmp(c->layout, "zigzag") == 0) return STRAND_LAYOUT_ZIGZAG;
    if (strcmp(c->layout, "contiguous") == 0) return STRAND_LAYOUT_CONTIGUOUS;
    return strstr(c->layers, "attn") ? STRAND_LAYOUT_ZIGZAG : STRAND_LAYOUT_CONTIGUOUS;
}

static int setup(trainer *t, const strand_train_options *options) {
    const strand_config *c = &t->config;
    STRAND_CALL(strand_shard_init(&t->shard, &t->grid, c->seq_len, layout_for(c)));
    STRAND_ALLOC(t->inputs, t->shard.T, "token buffer");
    STRAND_ALLOC(t->targets, t->shard.T, "target buffer");
    STRAND_ALLOC(t->read_buffer, t->shard.T + 1, "read buffer");
    STRAND_CALL(strand_loader_init(&t->loader, &t->dataset, c->seq_len, c->seed, c->rc_augment));
    STRAND_CALL(strand_model_create(&t->model, c, &t->shard));
    strand_model_init_params(&t->model, c->seed);
    STRAND_CALL(strand_adamw_create(&t->opt, t->model.table.total));
    STRAND_CALL(prepare_run_dir(t, options));
    STRAND_CALL(strand_metrics_open(&t->metrics, t->rank0 && !options->no_run_dir ? c->run_dir : NULL,
                                    options->progress));
    return STRAND_OK;
}

/* Read this rank's piece of a window; returns its status (agreed by the caller). */
static int read_piece(trainer *t, strand_window window, double *io_seconds) {
    double t0 = strand_now();
    int status =
        strand_loader_read_shard(&t->loader, window, &t->shard, t->inputs, t->targets, t->read_buffer);
    *io_seconds += strand_now() - t0;
    return status;
}

/* Mean validation loss (nats per token) over eval_windows windows spread over the DP groups. */
static int evaluate_windows(trainer *t, double sums[2]) {
    const int64_t n = t->config.eval_windows;
    strand_window window;
    double io = 0;
    for (int64_t k = t->grid.dp_rank; k < n; k += t->grid.dp_size) {
        if (!strand_loader_val_window(&t->loader, k, n, &window)) break;
        /* Only this SP group shares the window, so it alone votes on the read. */
        STRAND_CALL(strand_agree(t->grid.sp_comm, read_piece(t, window, &io)));
        double loss = 0;
        STRAND_CALL(strand_model_forward(&t->model, t->inputs, t->targets, &t->shard, &loss));
        sums[0] += loss;
        sums[1] += (double)t->shard.T;
    }
    return STRAND_OK;
}

static int evaluate(trainer *t, double *val_loss, int64_t *windows) {
    double sums[2] = {0, 0}; /* loss sum, tokens */
    STRAND_CALL(strand_agree(t->grid.world, evaluate_windows(t, sums)));
    STRAND_CALL(strand_allreduce_sum_double(t->grid.world, sums, 2));
    *val_loss = sums[1] > 0 ? sums[0] / sums[1] : NAN;
    *windows = sums[1] > 0 ? (int64_t)llround(sums[1] / (double)t->config.seq_len) : 0;
    return STRAND_OK;
}

static int train_loop(trainer *t, const strand_train_options *options, strand_train_result *result) {
    const strand_config *c = &t->config;
    strand_model *model = &t->model;
    const int64_t windows_per_step = (int64_t)c->accum_steps * t->grid.dp_size;
    const double tokens_per_step = (double)windows_per_step * (double)c->seq_len;
    const real_t loss_scale = (real_t)(1.0 / tokens_per_step);
    const double t_start = strand_now();
    double step_loss = NAN;
    long long last_peak_rss = 0;
    /* Tests make one rank's loss NaN at a given step to check that all ranks stop together. */
    const char *fault = getenv("STRAND_FAULT_NAN_STEP");
    const char *fault_rank = getenv("STRAND_FAULT_RANK");
    int64_t fault_nan_step = -1;
    if (fault && (!fault_rank || atoi(fault_rank) == t->grid.world_rank)) fault_nan_step = atoll(fault);
    for (int64_t step = 0; step < c->steps; step++) {
        const double t_step = strand_now(), comm_before = strand_comm_seconds();
        double io = 0, loss_sum = 0;
        if (step + 1 == fault_nan_step) loss_sum = NAN; /* fault injection: this rank alone sees a NaN */
        memset(model->grads, 0, sizeof(real_t) * (size_t)model->table.total);
        for (int micro = 0; micro < c->accum_steps; micro++) {
            /* Window index j = micro * dp + dp_rank: DP=2 x accum=1 and DP=1 x accum=2 see the same
             * windows, so the two runs compute the same gradient. */
            strand_window window = strand_loader_train_window(
                &t->loader, step, (int64_t)micro * t->grid.dp_size + t->grid.dp_rank);
            STRAND_CALL(strand_agree(t->grid.world, read_piece(t, window, &io)));
            double loss = 0;
            STRAND_CALL(strand_model_forward(model, t->inputs, t->targets, &t->shard, &loss));
            STRAND_CALL(strand_model_backward(model, t->inputs, &t->shard, loss_scale));
            loss_sum += loss;
        }
        /* One all-reduce for the whole gradient, one for the loss. */
        STRAND_CALL(strand_allreduce_sum(t->grid.world, model->grads, model->table.total));
        STRAND_CALL(strand_allreduce_sum_double(t->grid.world, &loss_sum, 1));
        step_loss = loss_sum / tokens_per_step;
        const double grad_norm = strand_grad_norm(model->grads, model->table.total);
        /* Every rank holds the same reduced numbers, so they stop together without another vote. */
        if (!isfinite(step_loss) || !isfinite(grad_norm))
            STRAND_FAIL(
                STRAND_ERR_NUMERIC,
                "training diverged at step %lld: loss %g, gradient norm %g; stopping before the update "
                "(lower train.lr or raise train.warmup_steps)",
                (long long)step + 1, step_loss, grad_norm);
        strand_clip_grads(model->grads, model->table.total, grad_norm, c->grad_clip);
        const double lr = strand_lr_at(c, step);
        strand_adamw_update(&t->opt, &model->table, model->params, model->grads, lr, c);
        if (step == 0) result->first_bpb = step_loss / LN2;
        if (options->loss_history) options->loss_history[step] = step_loss;

        strand_step_metrics m = {0};
        m.step = step + 1;
        m.total_steps = c->steps;
        m.loss = step_loss;
        m.bpb = step_loss / LN2;
        m.lr = lr;
        m.grad_norm = grad_norm;
        m.step_seconds = strand_now() - t_step;
        m.comm_seconds = strand_comm_seconds() - comm_before;
        m.io_seconds = io;
        m.compute_seconds = m.step_seconds - m.comm_seconds - m.io_seconds;
        m.tokens_per_s = tokens_per_step / m.step_seconds;
        m.tokens_seen = (int64_t)(tokens_per_step * (double)(step + 1));
        m.elapsed_seconds = strand_now() - t_start;
        const int log_line = (step + 1) % c->log_every == 0 || step == 0 || step + 1 == c->steps;
        if (log_line) {
            /* Peak memory is a maximum over ranks: a collective, so only on logging steps. */
            long long rss = (long long)strand_peak_rss_bytes();
            STRAND_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &rss, 1, MPI_LONG_LONG, MPI_MAX, t->grid.world));
            last_peak_rss = rss;
        }
        m.peak_rss_bytes = last_peak_rss;
        if (t->rank0) {
            int status = strand_metrics_write(&t->metrics, &m);
            if (status != STRAND_OK) return status; /* agreed by the caller at the next vote */
            if (!options->quiet) strand_metrics_progress(&t->metrics, &m, log_line);
        }
    }
    result->steps = c->steps;
    result->final_bpb = step_loss / LN2;
    result->seconds = strand_now() - t_start;
    return STRAND_OK;
}

static int write_summary(trainer *t, const strand_train_options *options, const strand_train_result *r) {
    if (!t->rank0 || options->no_run_dir) return STRAND_OK;
    char text[1024];
    char val[32];
    if (isfinite(r->val_bpb))
        snprintf(val, sizeof val, "%.9g", r->val_bpb);
    else
        snprintf(val, sizeof val, "null");
    snprintf(text, sizeof text,
             "{\"steps\":%lld,\"first_bpb\":%.9g,\"final_bpb\":%.9g,\"val_bpb\":%s,\"val_windows\":%lld,"
             "\"seconds\":%.3f,\"parameters\":%lld,\"world_size\":%d,\"sp\":%d,\"dp\":%d}\n",
             (long long)r->steps, r->first_bpb, r->final_bpb, val, (long long)r->val_windows, r->seconds,
             (long long)r->parameters, t->grid.world_size, t->grid.sp_size, t->grid.dp_size);
    return write_text_file(t->config.run_dir, "summary.json", text);
}

static void trainer_free(trainer *t) {
    strand_metrics_close(&t->metrics);
    strand_adamw_free(&t->opt);
    strand_model_free(&t->model);
    strand_loader_free(&t->loader);
    strand_dataset_close(&t->dataset);
    strand_free(t->inputs);
    strand_free(t->targets);
    strand_free(t->read_buffer);
    strand_shard_free(&t->shard);
    strand_grid_free(&t->grid);
}

static int run(trainer *t, MPI_Comm world, const strand_train_options *options, strand_train_result *result) {
    STRAND_CALL(strand_agree(world, strand_config_validate(&t->config)));
    STRAND_CALL(strand_agree(world, strand_grid_init(&t->grid, world, t->config.sp, t->config.dp)));
    t->rank0 = t->grid.world_rank == 0;
    STRAND_CALL(strand_dataset_open(&t->dataset, t->config.data_path, t->grid.world));
    STRAND_CALL(strand_agree(t->grid.world, setup(t, options)));
    result->parameters = t->model.table.total;
    if (t->rank0 && !options->quiet) {
        printf(
            "strand %s: %d ranks (dp %d x sp %d), %lld parameters, window %lld tokens (%lld per rank), %s\n",
            STRAND_VERSION, t->grid.world_size, t->grid.dp_size, t->grid.sp_size,
            (long long)t->model.table.total, (long long)t->config.seq_len, (long long)t->shard.max_T,
            t->config.data_path);
        fflush(stdout);
    }
    /* The loop's own failures are either agreed inside or identical on every rank (NaN); a local
     * metrics write failure on rank 0 is agreed here. */
    STRAND_CALL(strand_agree(t->grid.world, train_loop(t, options, result)));
    double val_loss = NAN;
    result->val_bpb = NAN;
    if (t->config.eval_windows > 0 && t->loader.val_starts == 0 && t->rank0 && !options->quiet) {
        int64_t longest = 0;
        for (int64_t i = 0; i < t->dataset.n_val; i++)
            if (t->dataset.val[i].length > longest) longest = t->dataset.val[i].length;
        printf("note: no validation: the longest validation range has %lld tokens, a window needs %lld "
               "(prep with a larger --val-fraction or use a shorter train.seq_len)\n",
               (long long)longest, (long long)t->config.seq_len + 1);
    }
    if (t->config.eval_windows > 0) {
        STRAND_CALL(evaluate(t, &val_loss, &result->val_windows));
        result->val_bpb = val_loss / LN2;
    }
    STRAND_CALL(strand_agree(t->grid.world, write_summary(t, options, result)));
    if (t->rank0 && !options->quiet) {
        char took[32];
        strand_format_duration(took, sizeof took, result->seconds);
        if (isfinite(result->val_bpb))
            printf("done: %lld steps in %s, bits/base %.4f -> %.4f (validation %.4f over %lld windows)\n",
                   (long long)result->steps, took, result->first_bpb, result->final_bpb, result->val_bpb,
                   (long long)result->val_windows);
        else
            printf("done: %lld steps in %s, bits/base %.4f -> %.4f (no validation split)\n",
                   (long long)result->steps, took, result->first_bpb, result->final_bpb);
        if (!options->no_run_dir)
            printf("metrics: %s/metrics.jsonl, summary: %s/summary.json\n", t->config.run_dir,
                   t->config.run_dir);
        fflush(stdout);
    }
    return STRAND_OK;
}

int strand_train(const strand_config *config, MPI_Comm world, const strand_train_options *options,
                 strand_train_result *result) {
    static const strand_train_options defaults = {0};
    if (!options) options = &defaults;
    trainer t;
    memset(&t, 0, sizeof t);
    t.grid.world = t.grid.sp_comm = t.grid.dp_comm = MPI_COMM_NULL;
    t.config = *config;
    memset(result, 0, sizeof *result);
    int status = run(&t, world, options, result);
    trainer_free(&t);
    return status;
}
