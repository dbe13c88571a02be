/* The training loop. Collective over the world: every early return is preceded by an agreement,
 * so a condition one rank sees (bad file, NaN) stops all ranks with the same message.
 *
 * State that a checkpoint must restore for a bit-identical continuation: parameters, AdamW
 * moments and t, and the step (the learning rate and the data windows are pure functions of the
 * step; all randomness is counter-based on the seed). */
#define _POSIX_C_SOURCE 200809L
#include "strand/train.h"

#include "strand/ckpt.h"
#include "core/atomic_file.h"
#include "parallel/consistency.h"
#include "strand/dataset.h"
#include "strand/dist.h"
#include "data/loader.h"
#include "train/metrics.h"
#include "strand/model.h"
#include "parallel/offload.h"
#include "train/optim.h"
#include "train/run_lock.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const double LN2 = STRAND_LN2;

/* Set by the signal handler, read once per step and agreed through the step's loss all-reduce,
 * and once before and once after the final validation. Later signals land here too: they are
 * absorbed, never fatal. */
static volatile sig_atomic_t preempt_requested = 0;

static void on_preempt_signal(int signal_number) {
    preempt_requested = signal_number;
}

void strand_train_catch_signals(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_preempt_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART; /* MPI and file I/O carry on; the flag is read at step ends */
    sigaction(SIGUSR1, &action, NULL);
    sigaction(SIGTERM, &action, NULL);
}

typedef struct {
    strand_config config;
    strand_grid grid;
    strand_dataset dataset;
    strand_loader loader;
    strand_model model;
    strand_adamw opt;
    strand_metrics metrics;
    strand_shard shard;
    strand_token_t *inputs, *targets; /* T each: tokens and their next tokens */
    strand_token_t *read_buffer;      /* one piece + 1 */
    real_t *weights;                  /* T loss weights from the dataset's /loss_mask, or NULL: no mask */
    strand_train_buffers buffers;
    strand_window last_window; /* the window of the model's last forward, when have_last_window */
    int have_last_window;
    strand_plan plan; /* the buffers above, the optimizer's moments and the metadata */
    int rank0;
    strand_ckpt_meta *meta; /* scratch for reading and writing checkpoints (large) */
    int64_t start_step;     /* steps already done (resume) */
    int64_t tokens_before;  /* tokens seen before start_step */
    double elapsed_before;  /* training seconds before start_step */
    double first_loss, last_loss;
    double first_bpb, last_bpb;   /* the same in bits per base */
    double bases_per_token;       /* the dataset's mean */
    int64_t last_checkpoint_step; /* -1: none written or loaded */
    char ckpt_dir[STRAND_CKPT_PATH_BYTES];
    int handle_signals;   /* options->handle_signals: preempt_requested counts */
    strand_run_lock lock; /* rank 0's lock on run.dir, held until training ends */
} trainer;

static int preempt_pending(const trainer *t) {
    return t->handle_signals && preempt_requested != 0;
}

/* Finish a temporary file and publish it as `path`: flush and close, then fsync, rename and fsync
 * the directory (strand_atomic_publish). Closes f. On any failure (write_error: the errno of a failed
 * write before, or 0) the temporary file is removed and the message names the failing call and its
 * reason. */
static int commit_file(FILE *f, int write_error, const char *tmp, const char *path) {
    const char *call = write_error ? "write" : NULL;
    int error = write_error;
    if (!call && fflush(f) != 0) call = "fflush", error = errno;
    if (fclose(f) != 0 && !call) call = "fclose", error = errno;
    if (!call) return strand_atomic_publish(tmp, path);
    unlink(tmp);
    STRAND_FAIL(STRAND_ERR_IO, "cannot write %s: %s (%s of %s)", path, strerror(error ? error : EIO), call,
                tmp);
}

/* Write text to path atomically (temporary file, then rename). */
static int write_text_file(const char *dir, const char *name, const char *text) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return strand_atomic_write_text(path, text, strlen(text));
}

/* Set-up steps that only rank 0 performs (run directory, resolved config). */
static int prepare_run_dir(trainer *t, const strand_train_options *options) {
    if (!t->rank0 || options->no_run_dir) return STRAND_OK;
    STRAND_CALL(strand_make_dirs(t->config.run_dir));
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

/* On resume: keep the metrics lines of steps 1..keep_steps once each (a killed run may have
 * logged steps past its last checkpoint), then append. Rank 0 only. */
static int rewrite_metrics(const char *run_dir, int64_t keep_steps) {
    char path[1200], tmp[1210];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *in = fopen(path, "r");
    if (!in && errno != ENOENT) STRAND_FAIL(STRAND_ERR_IO, "cannot read %s: %s", path, strerror(errno));
    FILE *out = fopen(tmp, "w");
    if (!out) {
        if (in) fclose(in);
        STRAND_FAIL(STRAND_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    }
    char *line = NULL;
    size_t capacity = 0;
    ssize_t length;
    int64_t last = 0;
    int write_error = 0;
    errno = 0;
    while (in && (length = getline(&line, &capacity, in)) > 0) {
        /* A torn last line (killed mid-write) has no newline: drop it. */
        if (line[length - 1] != '\n' || strncmp(line, "{\"step\":", 8) != 0) continue;
        int64_t step = strtoll(line + 8, NULL, 10);
        if (step <= last || step > keep_steps) continue;
        if (!write_error && fputs(line, out) < 0) write_error = errno ? errno : EIO;
        last = step;
    }
    free(line);
    const int read_error = in && ferror(in) ? (errno ? errno : EIO) : 0;
    if (in) fclose(in);
    if (read_error) {
        fclose(out);
        unlink(tmp);
        STRAND_FAIL(STRAND_ERR_IO, "cannot read %s: %s", path, strerror(read_error));
    }
    return commit_file(out, write_error, tmp, path);
}

static int open_metrics(trainer *t, const strand_train_options *options) {
    const char *dir = t->rank0 && !options->no_run_dir ? t->config.run_dir : NULL;
    if (!dir || t->start_step == 0) return strand_metrics_open(&t->metrics, dir, options->progress, 0);
    STRAND_CALL(rewrite_metrics(dir, t->start_step));
    return strand_metrics_open(&t->metrics, dir, options->progress, 1);
}

/* The layout from the mixers' capabilities: zigzag when one needs causally balanced work (full
 * attention) and none needs contiguous order; otherwise contiguous pieces (cheaper halos). */
int strand_train_layout(const strand_config *c) {
    if (c->layout == STRAND_LAYOUT_CHOICE_ZIGZAG) return STRAND_LAYOUT_ZIGZAG;
    if (c->layout == STRAND_LAYOUT_CHOICE_CONTIGUOUS) return STRAND_LAYOUT_CONTIGUOUS;
    const unsigned caps = strand_model_capabilities(c);
    return (caps & STRAND_MIXER_BALANCED_LAYOUT) && !(caps & STRAND_MIXER_CONTIGUOUS)
               ? STRAND_LAYOUT_ZIGZAG
               : STRAND_LAYOUT_CONTIGUOUS;
}

int strand_train_plan(strand_plan *plan, int64_t parameters, int64_t T, strand_train_buffers *b) {
    strand_plan_group(plan, NULL, "trainer");
    strand_plan_component(plan, STRAND_MEM_OPTIMIZER);
    STRAND_PLAN_ADD(plan, b->adam_m, parameters, STRAND_LIFE_PERSISTENT, "AdamW first moment");
    STRAND_PLAN_ADD(plan, b->adam_v, parameters, STRAND_LIFE_PERSISTENT, "AdamW second moment");
    strand_plan_component(plan, STRAND_MEM_DATA);
    STRAND_PLAN_ADD(plan, b->inputs, T, STRAND_LIFE_PERSISTENT, "token buffer");
    STRAND_PLAN_ADD(plan, b->targets, T, STRAND_LIFE_PERSISTENT, "target buffer");
    STRAND_PLAN_ADD(plan, b->read_buffer, T + 1, STRAND_LIFE_PERSISTENT, "read buffer");
    STRAND_PLAN_ADD(plan, b->meta, 1, STRAND_LIFE_PERSISTENT, "checkpoint metadata");
    return STRAND_OK;
}

/* Buffers, loader, model (initialised from the seed) and optimizer. */
static int setup(trainer *t) {
    const strand_config *c = &t->config;
    /* Local steps are agreed before strand_model_create, whose agreements are collective: a rank
     * that failed here must not wait in another collective than the others. */
    int status = strand_shard_init(&t->shard, &t->grid, c->seq_len, strand_train_layout(c));
    if (status == STRAND_OK)
        status = strand_loader_init(&t->loader, &t->dataset, c->seq_len, c->seed, c->rc_augment);
    STRAND_CALL(strand_agree(t->grid.world, status));
    STRAND_CALL(strand_model_create(&t->model, c, &t->shard));
    strand_model_init_params(&t->model, c->seed);
    strand_plan_init(&t->plan, 0, 0);
    status = strand_train_plan(&t->plan, t->model.table.total, t->shard.T, &t->buffers);
    if (status == STRAND_OK) status = strand_plan_allocate(&t->plan);
    STRAND_CALL(strand_agree(t->grid.world, status));
    t->inputs = t->buffers.inputs;
    t->targets = t->buffers.targets;
    t->read_buffer = t->buffers.read_buffer;
    t->meta = t->buffers.meta;
    /* A loss mask (task datasets): weights per row. Without one the model's weights stay NULL, so
     * unmasked training computes exactly what it did before masks existed. */
    if (t->dataset.mask > 0) {
        t->weights = strand_alloc(sizeof(real_t) * (size_t)(t->shard.T > 0 ? t->shard.T : 1), "loss weights");
        STRAND_CALL(strand_agree(t->grid.world, t->weights ? STRAND_OK : STRAND_ERR_NOMEM));
        t->model.loss_weights = t->weights;
    }
    t->opt.m = t->buffers.adam_m;
    t->opt.v = t->buffers.adam_v;
    t->opt.n = t->model.table.total;
    t->opt.t = 0;
    return STRAND_OK;
}

/* Seconds this rank's offload thread has spent moving block inputs (0 without train.offload). */
static double offload_seconds(const strand_model *model) {
    int64_t bytes = 0;
    double seconds = 0;
    if (model->offload) strand_offload_stats(model->offload, &bytes, &seconds);
    return seconds;
}

static strand_ckpt_state ckpt_state(trainer *t) {
    strand_ckpt_state state = {
        .table = &t->model.table, .params = t->model.params, .m = t->opt.m, .v = t->opt.v};
    return state;
}

/* The mixers' carried state comes back only onto the same grid and layout:
 * its rows belong to this rank's positions. Otherwise the first step after resuming runs
 * without it (said on stdout). */
static int load_carry(trainer *t, const char *path) {
    const int64_t count = strand_model_carry_count(&t->model);
    int64_t widest = count;
    STRAND_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &widest, 1, MPI_INT64_T, MPI_MAX, t->grid.world));
    if (widest == 0) return STRAND_OK;
    strand_config written;
    int restored = 0;
    STRAND_CALL(strand_ckpt_config(t->meta, &written));
    const int same_grid = t->meta->dp == t->grid.dp_size && t->meta->sp == t->grid.sp_size &&
                          strand_train_layout(&written) == strand_train_layout(&t->config);
    if (same_grid) {
        real_t *carry = strand_alloc(sizeof(real_t) * (size_t)(count > 0 ? count : 1), "carried state");
        STRAND_CALL(strand_agree(t->grid.world, carry ? STRAND_OK : STRAND_ERR_NOMEM));
        int status = strand_ckpt_read_carry(path, carry, count, t->grid.world, &restored);
        if (status == STRAND_OK && restored) strand_model_carry_load(&t->model, carry);
        strand_free(carry);
        STRAND_CALL(status);
    }
    if (!restored && t->rank0) {
        printf("note: the mixers' carried state from the window before step %lld %s; that step runs "
               "without it, so the continuation is not bit-identical\n",
               (long long)t->meta->step + 1, same_grid ? "is missing" : "belongs to another grid or layout");
        fflush(stdout);
    }
    return STRAND_OK;
}

static int64_t windows_per_step(const trainer *t) {
    return (int64_t)t->config.accum_steps * t->grid.dp_size;
}

/* Load a checkpoint that strand_ckpt_find/check accepted (t->meta holds its header). */
static int load_checkpoint(trainer *t, const char *path) {
    /* Two tokenizers of one vocabulary size (bpe:4096 learned on two corpora) give the same
     * shapes but different meanings to every token: the fingerprint tells them apart. */
    const strand_tokenizer *codec = &t->dataset.codec;
    if (!strand_dataset_is_task(&t->dataset) && t->meta->tokenizer_fingerprint >= 0 &&
        t->meta->tokenizer_fingerprint != (int64_t)codec->fingerprint)
        STRAND_FAIL(
            STRAND_ERR_INPUT,
            "%s was trained with tokenizer %s (fingerprint %08llx), but %s has %s (fingerprint %08llx): "
            "prep the dataset with --tokenizer-from a dataset of the checkpoint's tokenizer",
            path, t->meta->tokenizer, (unsigned long long)t->meta->tokenizer_fingerprint, t->config.data_path,
            codec->name, (unsigned long long)codec->fingerprint);
    strand_ckpt_state state = ckpt_state(t);
    STRAND_CALL(strand_ckpt_read(path, &state, t->grid.world));
    t->opt.t = t->meta->adam_t;
    t->start_step = t->meta->step;
    t->tokens_before = t->meta->tokens_seen;
    t->elapsed_before = t->meta->elapsed_s;
    t->first_loss = t->meta->first_loss;
    t->last_loss = t->meta->last_loss;
    t->first_bpb = t->meta->first_bpb;
    t->last_bpb = t->meta->last_bpb;
    t->last_checkpoint_step = t->meta->step;
    /* The window the checkpointed model saw last: the first step after resuming continues it or
     * not exactly as the uninterrupted run would. */
    if (t->start_step > 0) {
        t->last_window = strand_loader_train_window(&t->loader, t->start_step - 1,
                                                    (int64_t)(t->config.accum_steps - 1) * t->grid.dp_size +
                                                        t->grid.dp_rank);
        t->have_last_window = 1;
    }
    return STRAND_OK;
}

/* An explicit --resume, else the run directory's latest checkpoint, else a fresh start. */
static int maybe_resume(trainer *t, const strand_train_options *options, strand_train_result *result) {
    const char *source = options->resume;
    if (!source && (options->no_run_dir || options->no_auto_resume)) return STRAND_OK;
    int found = 0;
    char path[STRAND_CKPT_PATH_BYTES];
    STRAND_CALL(strand_ckpt_find(source ? source : t->ckpt_dir, source != NULL, &t->model.table, &t->config,
                                 windows_per_step(t), t->grid.world, path, sizeof path, t->meta, &found));
    if (!found) return STRAND_OK;
    if (t->meta->step > t->config.steps)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: checkpoint at step %lld is past train.steps = %lld", path,
                    (long long)t->meta->step, (long long)t->config.steps);
    STRAND_CALL(load_checkpoint(t, path));
    snprintf(result->resumed_from, sizeof result->resumed_from, "%s", path);
    if (t->rank0) {
        printf("resuming from %s: step %lld of %lld (written at dp %d x sp %d, now dp %d x sp %d)\n", path,
               (long long)t->meta->step, (long long)t->config.steps, t->meta->dp, t->meta->sp,
               t->grid.dp_size, t->grid.sp_size);
        fflush(stdout);
    }
    return load_carry(t, path);
}

/* Carried state (a mixer's memory of the previous window) holds only while each window starts
 * where the previous one ended; otherwise it is forgotten before the forward. */
static void continue_or_reset(trainer *t, strand_window window) {
    if (!strand_loader_continues(&t->loader, t->have_last_window ? &t->last_window : NULL, window))
        strand_model_reset(&t->model);
    t->last_window = window;
    t->have_last_window = 1;
}

/* Read this rank's piece of a window; returns its status (agreed by the caller). */
static int read_piece(trainer *t, strand_window window, double *io_seconds) {
    double t0 = strand_now();
    int status =
        strand_loader_read_shard(&t->loader, window, &t->shard, t->inputs, t->targets, t->read_buffer);
    if (status == STRAND_OK && t->weights)
        status = strand_loader_read_mask(&t->loader, window, &t->shard, t->weights);
    *io_seconds += strand_now() - t0;
    return status;
}

/* Bases the targets of this rank's rows cover (weighted by the loss mask): the denominator of
 * bits per base. One per target for nucleotide and task tokens. */
static double target_bases(const trainer *t) {
    const int32_t *bases = t->dataset.token_bases;
    double total = 0;
    for (int64_t i = 0; i < t->shard.T; i++)
        total += (t->weights ? (double)t->weights[i] : 1.0) * (double)bases[t->targets[i]];
    return total;
}

/* Answer positions of the last forward: answers[0] += their weight, answers[1] += the weight of
 * those where the most likely token (argmax of the logits) is the target. */
static void count_answers(const trainer *t, double answers[2]) {
    const strand_model *model = &t->model;
    if (!t->weights) return;
    for (int64_t i = 0; i < t->shard.T; i++) {
        if (t->weights[i] == 0) continue;
        const real_t *l = model->logits + i * model->V;
        int best = 0;
        for (int v = 1; v < model->V; v++)
            best = l[v] > l[best] ? v : best;
        answers[0] += (double)t->weights[i];
        if (best == (int)t->targets[i]) answers[1] += (double)t->weights[i];
    }
}

/* With a loss mask a step's loss is the mean over its counted positions, whose number is known
 * only after the all-reduce: the summed gradient is scaled by 1 / that count here (backward ran
 * with scale 1). Returns the divisor of the step's loss sum: the count, or `tokens` without a
 * mask (whose backward already scaled by 1 / tokens). No counted position: 1 (loss and gradient 0). */
static double normalise_by_count(trainer *t, double answer_weight, double tokens) {
    if (!t->weights) return tokens;
    const double counted = answer_weight > 0 ? answer_weight : 1.0;
    const real_t inverse = (real_t)(1.0 / counted);
    for (int64_t k = 0; k < t->model.table.total; k++)
        t->model.grads[k] *= inverse;
    return counted;
}

/* This rank's gradient contribution (into model->grads, zeroed first) and loss sum for 0-based
 * `step`; the caller all-reduces both. */
static int step_gradient(trainer *t, int64_t step, real_t loss_scale, double *loss_sum, double *io,
                         double answers[2], double *bases) {
    strand_model *model = &t->model;
    memset(model->grads, 0, sizeof(real_t) * (size_t)model->table.total);
    for (int micro = 0; micro < t->config.accum_steps; micro++) {
        /* Window index j = micro * dp + dp_rank: DP=2 x accum=1 and DP=1 x accum=2 see the same
         * windows, so the two runs compute the same gradient. */
        strand_window window =
            strand_loader_train_window(&t->loader, step, (int64_t)micro * t->grid.dp_size + t->grid.dp_rank);
        STRAND_CALL(strand_agree(t->grid.world, read_piece(t, window, io)));
        double loss = 0;
        continue_or_reset(t, window);
        /* Agreed over the world: a failure in one SP group (an offload disk) must not leave the
         * other groups waiting in the gradient all-reduce. */
        STRAND_CALL(strand_agree(t->grid.world,
                                 strand_model_forward(model, t->inputs, t->targets, &t->shard, &loss)));
        count_answers(t, answers);
        *bases += target_bases(t);
        STRAND_CALL(
            strand_agree(t->grid.world, strand_model_backward(model, t->inputs, &t->shard, loss_scale)));
        *loss_sum += loss;
    }
    return STRAND_OK;
}

/* Mean validation loss (nats per token) over eval_windows windows spread over the DP groups. */
/* sums: loss, counted positions (every position without a mask), answer weight, correct answers,
 * positions evaluated, bases the counted targets cover. */
enum { EVAL_SUMS = 6 };
static int evaluate_windows(trainer *t, double sums[EVAL_SUMS], double *by_position) {
    const int64_t n = t->config.eval_windows;
    strand_window window;
    double io = 0;
    for (int64_t k = t->grid.dp_rank; k < n; k += t->grid.dp_size) {
        if (!strand_loader_val_window(&t->loader, k, n, &window)) break;
        /* Only this SP group shares the window, so it alone votes on the read. */
        STRAND_CALL(strand_agree(t->grid.sp_comm, read_piece(t, window, &io)));
        double loss = 0;
        continue_or_reset(t, window);
        STRAND_CALL(strand_model_forward(&t->model, t->inputs, t->targets, &t->shard, &loss));
        sums[0] += loss;
        if (t->weights) {
            for (int64_t i = 0; i < t->shard.T; i++)
                sums[1] += (double)t->weights[i];
            count_answers(t, sums + 2);
        } else {
            sums[1] += (double)t->shard.T;
        }
        sums[4] += (double)t->shard.T;
        sums[5] += target_bases(t);
        if (by_position)
            for (int64_t i = 0; i < t->shard.T; i++)
                by_position[strand_shard_position(&t->shard, i)] += (double)t->model.losses[i];
    }
    return STRAND_OK;
}

static int evaluate(trainer *t, double *val_loss, double *val_bpb, int64_t *windows,
                    double *answer_accuracy) {
    double sums[EVAL_SUMS] = {0};
    /* Test hook: a slow final validation, so that tests can signal during it. */
    const char *eval_sleep = getenv("STRAND_FAULT_EVAL_SLEEP");
    if (eval_sleep && t->rank0) strand_sleep(atof(eval_sleep));
    STRAND_CALL(strand_agree(t->grid.world, evaluate_windows(t, sums, NULL)));
    STRAND_CALL(strand_allreduce_sum_double(t->grid.world, sums, EVAL_SUMS));
    *val_loss = sums[1] > 0 ? sums[0] / sums[1] : NAN;
    *val_bpb = sums[5] > 0 ? sums[0] / LN2 / sums[5] : NAN;
    *windows = sums[4] > 0 ? (int64_t)llround(sums[4] / (double)t->config.seq_len) : 0;
    *answer_accuracy = sums[2] > 0 ? sums[3] / sums[2] : NAN;
    return STRAND_OK;
}

/* Checkpoint after `steps_done` steps (collective). */
static int save_checkpoint(trainer *t, const strand_train_options *options, int64_t steps_done,
                           int64_t tokens_seen, double elapsed, strand_train_result *result) {
    const strand_config *c = &t->config;
    strand_ckpt_meta *meta = t->meta;
    strand_ckpt_meta_init(meta, c, &t->model.table);
    meta->step = steps_done;
    meta->tokens_seen = tokens_seen;
    meta->adam_t = t->opt.t;
    meta->lr = steps_done > 0 ? strand_lr_at(c, steps_done - 1) : 0;
    meta->first_loss = t->first_loss;
    meta->last_loss = t->last_loss;
    meta->first_bpb = t->first_bpb;
    meta->last_bpb = t->last_bpb;
    meta->elapsed_s = elapsed;
    meta->dp = t->grid.dp_size;
    meta->sp = t->grid.sp_size;
    meta->world = t->grid.world_size;
    const double t0 = strand_now();
    strand_ckpt_state state = ckpt_state(t);
    state.codec = strand_dataset_is_task(&t->dataset) ? NULL : &t->dataset.codec;
    state.carry_count = strand_model_carry_count(&t->model);
    real_t *carry = NULL;
    if (state.carry_count > 0) {
        carry = strand_alloc(sizeof(real_t) * (size_t)state.carry_count, "carried state");
        if (carry) strand_model_carry_save(&t->model, carry);
    }
    STRAND_CALL(strand_agree(t->grid.world, state.carry_count > 0 && !carry ? STRAND_ERR_NOMEM : STRAND_OK));
    state.carry = carry;
    int status = strand_ckpt_write(t->ckpt_dir, meta, &state, c->ckpt_keep, t->grid.world, result->checkpoint,
                                   sizeof result->checkpoint);
    strand_free(carry);
    STRAND_CALL(status);
    t->last_checkpoint_step = steps_done;
    if (t->rank0 && !options->quiet) {
        const double seconds = strand_now() - t0;
        const double bytes = 3.0 * (double)meta->parameters * (double)sizeof(real_t);
        printf("checkpoint: %s (step %lld, %.2f s, %.0f MB/s)\n", result->checkpoint, (long long)steps_done,
               seconds, bytes / 1e6 / (seconds > 0 ? seconds : 1e-9));
        fflush(stdout);
    }
    return STRAND_OK;
}

/* The update that ends a step once every rank holds the reduced gradient and loss: stop on a
 * non-finite loss or gradient norm (every rank holds the same reduced numbers, so they stop
 * together without another vote), clip to train.grad_clip, AdamW at the step's learning rate. */
static int finish_step(strand_model *model, strand_adamw *opt, const strand_config *c, int64_t step,
                       double step_loss, double grad_norm, double *lr) {
    if (!isfinite(step_loss) || !isfinite(grad_norm))
        STRAND_FAIL(STRAND_ERR_NUMERIC,
                    "training diverged at step %lld: loss %g, gradient norm %g; stopping before the update "
                    "(lower train.lr or raise train.warmup_steps)",
                    (long long)step + 1, step_loss, grad_norm);
    strand_clip_grads(model->grads, model->table.total, grad_norm, c->grad_clip);
    *lr = strand_lr_at(c, step);
    strand_adamw_update(opt, &model->table, model->params, model->grads, *lr, c);
    return STRAND_OK;
}

int strand_train_step(strand_model *model, const strand_shard *shard, MPI_Comm world,
                      strand_train_moments *moments, const strand_token_t *inputs,
                      const strand_token_t *targets, int64_t step, double tokens_per_step,
                      strand_train_step_result *result) {
    const strand_config *c = &model->config;
    memset(model->grads, 0, sizeof(real_t) * (size_t)model->table.total);
    double loss_sum = 0;
    STRAND_CALL(strand_agree(world, strand_model_forward(model, inputs, targets, shard, &loss_sum)));
    STRAND_CALL(
        strand_agree(world, strand_model_backward(model, inputs, shard, (real_t)(1.0 / tokens_per_step))));
    STRAND_CALL(strand_allreduce_sum(world, model->grads, model->table.total));
    STRAND_CALL(strand_allreduce_sum_double(world, &loss_sum, 1));
    result->loss = loss_sum / tokens_per_step;
    result->grad_norm = strand_model_grad_norm(model, NULL);
    strand_adamw opt = {.m = moments->m, .v = moments->v, .n = model->table.total, .t = moments->t};
    const int status = finish_step(model, &opt, c, step, result->loss, result->grad_norm, &result->lr);
    moments->t = opt.t;
    return status;
}

static int train_loop(trainer *t, const strand_train_options *options, strand_train_result *result) {
    const strand_config *c = &t->config;
    strand_model *model = &t->model;
    const double tokens_per_step = (double)windows_per_step(t) * (double)c->seq_len;
    /* With a loss mask the mean is over the counted positions, known only after the step's
     * reduction: the backward runs unscaled and the reduced gradient is divided by their count. */
    const real_t loss_scale = t->weights ? (real_t)1 : (real_t)(1.0 / tokens_per_step);
    const double t_start = strand_now();
    const int checkpoints = !options->no_run_dir;
    long long last_peak_rss = 0;
    int pending = STRAND_OK; /* rank 0's metrics write failure, agreed at the next step's reduction */
    /* Tests make one rank's loss NaN at a given step to check that all ranks stop together. */
    const char *fault = getenv("STRAND_FAULT_NAN_STEP");
    const char *fault_rank = getenv("STRAND_FAULT_RANK");
    int64_t fault_nan_step = -1;
    if (fault && (!fault_rank || atoi(fault_rank) == t->grid.world_rank)) fault_nan_step = atoll(fault);
    /* Test hook: slow every step down so that tests can signal or kill a run mid-way. */
    const char *step_sleep_env = getenv("STRAND_FAULT_STEP_SLEEP");
    const double step_sleep = step_sleep_env ? atof(step_sleep_env) : 0;
    /* Test hook: behave as if SIGUSR1 arrived during step N (on STRAND_FAULT_RANK only, if set). */
    const char *preempt_env = getenv("STRAND_FAULT_PREEMPT_STEP");
    int64_t fault_preempt_step = -1;
    int fault_preempted = 0;
    if (preempt_env && (!fault_rank || atoi(fault_rank) == t->grid.world_rank))
        fault_preempt_step = atoll(preempt_env);
    for (int64_t step = t->start_step; step < c->steps; step++) {
        const double t_step = strand_now(), comm_before = strand_comm_seconds();
        const int64_t bytes_before = strand_comm_bytes();
        const double offload_before = offload_seconds(&t->model);
        double io = 0, loss_sum = 0, answers[2] = {0, 0}, bases = 0;
        if (step_sleep > 0 && t->rank0) strand_sleep(step_sleep);
        STRAND_CALL(step_gradient(t, step, loss_scale, &loss_sum, &io, answers, &bases));
        if (step + 1 == fault_nan_step) loss_sum = NAN; /* fault injection: this rank alone sees a NaN */
        if (step + 1 == fault_preempt_step) fault_preempted = 1;
        /* One all-reduce for the whole gradient, one for the loss; the latter also carries the
         * preemption vote and rank 0's pending failure, so stopping costs no extra collective. */
        STRAND_CALL(strand_allreduce_sum(t->grid.world, model->grads, model->table.total));
        double reduced[6] = {loss_sum,
                             preempt_pending(t) || fault_preempted ? 1.0 : 0.0,
                             pending != STRAND_OK ? 1.0 : 0.0,
                             answers[0],
                             answers[1],
                             bases};
        STRAND_CALL(strand_allreduce_sum_double(t->grid.world, reduced, 6));
        if (reduced[2] > 0) return strand_agree(t->grid.world, pending);
        const double counted = normalise_by_count(t, reduced[3], tokens_per_step);
        const double step_loss = reduced[0] / counted;
        /* Bits per base: the loss in bits over the bases its targets cover (exact per step). */
        const double step_bpb = reduced[5] > 0 ? reduced[0] / LN2 / reduced[5] : step_loss / LN2;
        /* Per block too, before clipping (rank 0 writes them; every rank holds the same gradient). */
        double block_norms[STRAND_MAX_BLOCKS];
        const double grad_norm = strand_model_grad_norm(model, t->rank0 ? block_norms : NULL);
        double lr = 0;
        STRAND_CALL(finish_step(model, &t->opt, c, step, step_loss, grad_norm, &lr));
        if (step == 0) t->first_loss = step_loss, t->first_bpb = step_bpb;
        t->last_loss = step_loss;
        t->last_bpb = step_bpb;
        if (options->loss_history) options->loss_history[step] = step_loss;

        const int64_t done = step + 1;
        strand_step_metrics m = {0};
        m.step = done;
        m.total_steps = c->steps;
        m.loss = step_loss;
        m.bpb = step_bpb;
        m.bits_per_token = step_loss / LN2;
        m.answer_accuracy = t->weights && reduced[3] > 0 ? reduced[4] / reduced[3] : NAN;
        m.lr = lr;
        m.grad_norm = grad_norm;
        m.grad_norm_by_block = t->rank0 ? block_norms : NULL;
        m.n_blocks = model->n_layers;
        m.step_seconds = strand_now() - t_step;
        m.comm_seconds = strand_comm_seconds() - comm_before;
        m.bytes_sent = strand_comm_bytes() - bytes_before;
        m.io_seconds = io;
        m.offload_seconds = offload_seconds(&t->model) - offload_before;
        m.compute_seconds = m.step_seconds - m.comm_seconds - m.io_seconds;
        m.tokens_per_s = tokens_per_step / m.step_seconds;
        m.tokens_seen = t->tokens_before + (int64_t)(tokens_per_step * (double)(done - t->start_step));
        m.elapsed_seconds = t->elapsed_before + (strand_now() - t_start);
        const int log_line = done % c->log_every == 0 || step == t->start_step || done == c->steps;
        if (log_line) {
            /* Peak memory is a maximum over ranks: a collective, so only on logging steps. */
            long long rss = (long long)strand_peak_rss_bytes();
            STRAND_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &rss, 1, MPI_LONG_LONG, MPI_MAX, t->grid.world));
            last_peak_rss = rss;
        }
        m.peak_rss_bytes = last_peak_rss;
        if (t->rank0 && pending == STRAND_OK) {
            pending = strand_metrics_write(&t->metrics, &m);
            if (!options->quiet) strand_metrics_progress(&t->metrics, &m, log_line);
        }
        result->end_step = done;
        const int periodic = c->ckpt_every > 0 && done % c->ckpt_every == 0;
        const int preempt = reduced[1] > 0 && done < c->steps;
        if (checkpoints && (periodic || preempt || done == c->steps))
            STRAND_CALL(save_checkpoint(t, options, done, m.tokens_seen, m.elapsed_seconds, result));
        if (preempt) {
            result->preempted = 1;
            break;
        }
    }
    STRAND_CALL(strand_agree(t->grid.world, pending));
    result->steps = c->steps;
    result->first_bpb = t->first_bpb;
    result->final_bpb = t->last_bpb;
    result->seconds = t->elapsed_before + (strand_now() - t_start);
    return STRAND_OK;
}

static int write_summary(trainer *t, const strand_train_options *options, const strand_train_result *r) {
    if (!t->rank0 || options->no_run_dir) return STRAND_OK;
    char text[1024];
    char val[32] = "null", val_token[32] = "null", accuracy[64] = "";
    if (isfinite(r->val_bpb)) snprintf(val, sizeof val, "%.9g", r->val_bpb);
    if (isfinite(r->val_bits_per_token)) snprintf(val_token, sizeof val_token, "%.9g", r->val_bits_per_token);
    /* task datasets: the loss above is over the answers; their accuracy follows it */
    if (isfinite(r->val_answer_accuracy))
        snprintf(accuracy, sizeof accuracy, "\"val_answer_accuracy\":%.9g,", r->val_answer_accuracy);
    snprintf(text, sizeof text,
             "{\"steps\":%lld,\"first_bpb\":%.9g,\"final_bpb\":%.9g,\"val_bpb\":%s,%s\"val_windows\":%lld,"
             "\"val_bits_per_token\":%s,"
             "\"seconds\":%.3f,\"parameters\":%lld,\"world_size\":%d,\"sp\":%d,\"dp\":%d,"
             "\"peak_rss_bytes\":%lld,\"planned_bytes\":%lld}\n",
             (long long)r->steps, r->first_bpb, r->final_bpb, val, accuracy, (long long)r->val_windows,
             val_token, r->seconds, (long long)r->parameters, t->grid.world_size, t->grid.sp_size,
             t->grid.dp_size, (long long)r->peak_rss_bytes, (long long)r->planned_bytes);
    return write_text_file(t->config.run_dir, "summary.json", text);
}

static void trainer_free(trainer *t) {
    strand_metrics_close(&t->metrics);
    strand_model_free(&t->model);
    strand_loader_free(&t->loader);
    strand_free(t->weights);
    t->weights = NULL;
    strand_dataset_close(&t->dataset);
    strand_plan_free(&t->plan); /* token buffers, optimizer moments, metadata */
    strand_shard_free(&t->shard);
    strand_grid_free(&t->grid);
    strand_run_lock_release(&t->lock); /* last: the run directory is no longer touched */
}

/* Grid, dataset and model: what training, strand eval and strand grad share. Every rank must hold
 * the same configuration and dataset tables (agreed here, before the first collective that
 * depends on them). With lock_dir, rank 0 locks that run directory before the dataset opens. */
static int start(trainer *t, MPI_Comm world, const char *lock_dir) {
    STRAND_CALL(strand_agree(world, strand_config_validate(&t->config)));
    STRAND_CALL(strand_consistency_config(world, &t->config));
    STRAND_CALL(strand_agree(world, strand_grid_init(&t->grid, world, t->config.sp, t->config.dp)));
    t->rank0 = t->grid.world_rank == 0;
    if (lock_dir)
        STRAND_CALL(
            strand_agree(t->grid.world, t->rank0 ? strand_run_lock_acquire(&t->lock, lock_dir) : STRAND_OK));
    STRAND_CALL(strand_dataset_open(&t->dataset, t->config.data_path, t->grid.world));
    STRAND_CALL(strand_consistency_dataset(t->grid.world, &t->dataset));
    /* the same on every rank: the dataset's tables are agreed */
    STRAND_CALL(strand_config_take_vocab(&t->config, t->dataset.vocab_size, t->config.data_path));
    t->bases_per_token =
        t->dataset.n_tokens > 0 ? (double)t->dataset.n_bases / (double)t->dataset.n_tokens : 1.0;
    STRAND_CALL(strand_agree(t->grid.world, setup(t)));
    return STRAND_OK;
}

/* A preemption signal that arrived after the last step's vote (during that step, its checkpoint
 * or the final validation): every rank learns of it here. The run then stops as preempted, so
 * that the validation is redone on resume; only when the checkpoint of the last step exists
 * (otherwise stopping would lose the run, and it finishes instead). */
static int stop_for_signal(trainer *t, strand_train_result *result) {
    int any = preempt_pending(t);
    STRAND_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &any, 1, MPI_INT, MPI_MAX, t->grid.world));
    if (any && t->last_checkpoint_step == t->config.steps)
        result->preempted = result->preempted_in_validation = 1;
    return STRAND_OK;
}

static int run(trainer *t, MPI_Comm world, const strand_train_options *options, strand_train_result *result) {
    /* The lock comes before the resume: a second job must not read or write the first's files. */
    STRAND_CALL(start(t, world, options->no_run_dir ? NULL : t->config.run_dir));
    /* Another --resume (or --no-resume) on one rank would start the ranks at different steps. */
    char resume[STRAND_CKPT_PATH_BYTES + 16];
    snprintf(resume, sizeof resume, "%s%s", options->resume ? "--resume " : "",
             options->resume           ? options->resume
             : options->no_auto_resume ? "--no-resume"
                                       : "(neither)");
    STRAND_CALL(strand_consistency_value(t->grid.world, "--resume/--no-resume", resume));
    strand_ckpt_dir(t->config.run_dir, t->ckpt_dir, sizeof t->ckpt_dir);
    result->parameters = t->model.table.total;
    /* Resume before anything in the run directory changes: a refused checkpoint leaves it as it was. */
    STRAND_CALL(maybe_resume(t, options, result));
    result->start_step = result->end_step = t->start_step;
    STRAND_CALL(strand_agree(t->grid.world, prepare_run_dir(t, options)));
    STRAND_CALL(strand_agree(t->grid.world, open_metrics(t, options)));
    if (t->rank0 && !options->quiet) {
        printf(
            "strand %s: %d ranks (dp %d x sp %d), %lld parameters, window %lld tokens (%lld per rank), %s\n",
            STRAND_VERSION, t->grid.world_size, t->grid.dp_size, t->grid.sp_size,
            (long long)t->model.table.total, (long long)t->config.seq_len, (long long)t->shard.max_T,
            t->config.data_path);
        if (t->dataset.codec.kind != STRAND_TOKENIZER_NUCLEOTIDE && !strand_dataset_is_task(&t->dataset))
            printf("tokenizer %s (vocabulary %d): a window covers about %.0f bases (%.3f per token); bpb is "
                   "bits per base\n",
                   t->dataset.tokenizer, t->dataset.vocab_size,
                   (double)t->config.seq_len * t->bases_per_token, t->bases_per_token);
        fflush(stdout);
    }
    /* The loop's own failures are either agreed inside or identical on every rank (NaN). */
    STRAND_CALL(strand_agree(t->grid.world, train_loop(t, options, result)));
    if (result->preempted) return STRAND_OK; /* no evaluation, no summary: the run is not over */
    STRAND_CALL(stop_for_signal(t, result));
    if (result->preempted) return STRAND_OK;
    double val_loss = NAN;
    result->val_bpb = result->val_bits_per_token = NAN;
    result->val_answer_accuracy = NAN;
    if (t->config.eval_windows > 0 && t->loader.val_starts == 0 && t->rank0 && !options->quiet) {
        int64_t longest = 0;
        for (int64_t i = 0; i < t->dataset.n_val; i++)
            if (t->dataset.val[i].length > longest) longest = t->dataset.val[i].length;
        printf("note: no validation: the longest validation range has %lld tokens, a window needs %lld "
               "(prep with a larger --val-fraction or use a shorter train.seq_len)\n",
               (long long)longest, (long long)t->config.seq_len + 1);
    }
    if (t->config.eval_windows > 0) {
        STRAND_CALL(
            evaluate(t, &val_loss, &result->val_bpb, &result->val_windows, &result->val_answer_accuracy));
        result->val_bits_per_token = val_loss / LN2;
        STRAND_CALL(stop_for_signal(t, result));
        if (result->preempted) return STRAND_OK; /* the summary waits for a whole validation */
    }
    long long peak = (long long)strand_peak_rss_bytes();
    STRAND_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &peak, 1, MPI_LONG_LONG, MPI_MAX, t->grid.world));
    result->peak_rss_bytes = peak;
    /* What this rank allocated through the memory plans (the dry run's planned_bytes): the model's
     * and the trainer's, the most of any rank. */
    long long planned =
        (long long)(strand_plan_bytes(&t->model.plan, NULL) + strand_plan_bytes(&t->plan, NULL));
    STRAND_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &planned, 1, MPI_LONG_LONG, MPI_MAX, t->grid.world));
    result->planned_bytes = planned;
    STRAND_CALL(strand_agree(t->grid.world, write_summary(t, options, result)));
    if (t->rank0 && !options->quiet) {
        char took[32];
        strand_format_duration(took, sizeof took, result->seconds);
        if (isfinite(result->val_bpb))
            printf("done: %lld steps in %s, bits/base %.4f -> %.4f (validation %.4f over %lld windows)\n",
                   (long long)result->steps, took, result->first_bpb, result->final_bpb, result->val_bpb,
                   (long long)result->val_windows);
        else
            printf("done: %lld steps in %s, bits/base %.4f -> %.4f (no validation)\n",
                   (long long)result->steps, took, result->first_bpb, result->final_bpb);
        if (!isnan(result->val_answer_accuracy))
            printf("validation answer_accuracy %.4f\n", result->val_answer_accuracy);
        if (!options->no_run_dir)
            printf("metrics: %s/metrics.jsonl, summary: %s/summary.json\n", t->config.run_dir,
                   t->config.run_dir);
        fflush(stdout);
    }
    return STRAND_OK;
}

static void trainer_init(trainer *t, const strand_config *config) {
    memset(t, 0, sizeof *t);
    t->grid.world = t->grid.sp_comm = t->grid.dp_comm = MPI_COMM_NULL;
    t->config = *config;
    t->first_loss = t->last_loss = t->first_bpb = t->last_bpb = NAN;
    t->last_checkpoint_step = -1;
    strand_run_lock_init(&t->lock);
}

int strand_train(const strand_config *config, MPI_Comm world, const strand_train_options *options,
                 strand_train_result *result) {
    static const strand_train_options defaults = {0};
    if (!options) options = &defaults;
    trainer t;
    trainer_init(&t, config);
    memset(result, 0, sizeof *result);
    /* The handlers stay installed after the return: a second signal on the way out (or after a
     * successful end) must not kill the process and turn exit 75 or 0 into a death by signal. */
    t.handle_signals = options->handle_signals;
    if (options->handle_signals) strand_train_catch_signals();
    int status = run(&t, world, options, result);
    trainer_free(&t);
    return status;
}

/* ---- strand grad ---- */

static int grad_run(trainer *t, MPI_Comm world, const char *checkpoint, int64_t step, const char *out,
                    strand_grad_result *result) {
    char step_text[32];
    snprintf(step_text, sizeof step_text, "%lld", (long long)step);
    STRAND_CALL(strand_consistency_value(world, "--checkpoint", checkpoint));
    STRAND_CALL(strand_consistency_value(world, "--step", step_text));
    STRAND_CALL(strand_consistency_value(world, "--out", out));
    /* Nothing start() builds depends on train.accum_steps: the checkpoint is checked once, against
     * the model, and its windows per step then fix train.accum_steps at this grid. */
    STRAND_CALL(start(t, world, NULL));
    STRAND_CALL(strand_ckpt_check(checkpoint, &t->model.table, &t->config, 0, t->grid.world, t->meta));
    const int64_t windows = (int64_t)t->meta->dp * t->meta->accum_steps, ckpt_step = t->meta->step;
    if (windows % t->grid.dp_size != 0) /* the same on every rank */
        STRAND_FAIL(STRAND_ERR_INPUT,
                    "%s takes %lld windows per step, which dp = %d cannot split evenly (choose parallel.dp "
                    "dividing %lld)",
                    checkpoint, (long long)windows, t->grid.dp_size, (long long)windows);
    t->config.accum_steps = (int)(windows / t->grid.dp_size);
    STRAND_CALL(load_checkpoint(t, checkpoint));
    if (step == 0) step = ckpt_step + 1;
    if (step < 1 || step > t->config.steps)
        STRAND_FAIL(STRAND_ERR_INPUT, "--step %lld is outside the run's steps 1..%lld", (long long)step,
                    (long long)t->config.steps);
    const double tokens = (double)windows_per_step(t) * (double)t->config.seq_len;
    double loss_sum = 0, io = 0, answers[2] = {0, 0}, bases = 0;
    STRAND_CALL(step_gradient(t, step - 1, t->weights ? (real_t)1 : (real_t)(1.0 / tokens), &loss_sum, &io,
                              answers, &bases));
    STRAND_CALL(strand_allreduce_sum(t->grid.world, t->model.grads, t->model.table.total));
    STRAND_CALL(strand_allreduce_sum_double(t->grid.world, &loss_sum, 1));
    STRAND_CALL(strand_allreduce_sum_double(t->grid.world, answers, 2));
    const double counted = normalise_by_count(t, answers[0], tokens); /* as training does */
    strand_grads_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.step = step;
    meta.loss = loss_sum / counted;
    meta.grad_norm = strand_grad_norm(t->model.grads, t->model.table.total);
    meta.tokens = (int64_t)tokens;
    meta.dp = t->grid.dp_size;
    meta.sp = t->grid.sp_size;
    meta.world = t->grid.world_size;
    meta.checkpoint_step = ckpt_step;
    snprintf(meta.checkpoint, sizeof meta.checkpoint, "%s", checkpoint);
    STRAND_CALL(
        strand_grads_write(out, &meta, &t->model.table, t->model.grads, t->meta->config_text, t->grid.world));
    result->step = step;
    result->loss = meta.loss;
    result->grad_norm = meta.grad_norm;
    result->parameters = t->model.table.total;
    result->checkpoint_step = ckpt_step;
    result->accum_steps = t->config.accum_steps;
    return STRAND_OK;
}

int strand_train_grad(const strand_config *config, MPI_Comm world, const char *checkpoint, int64_t step,
                      const char *out, strand_grad_result *result) {
    trainer t;
    trainer_init(&t, config);
    memset(result, 0, sizeof *result);
    int status = grad_run(&t, world, checkpoint, step, out, result);
    trainer_free(&t);
    return status;
}

/* The per-position CSV: position bins, mean loss in nats and bits (rank 0). */
static int write_position_csv(const char *path, const double *by_position, int64_t length, int64_t windows,
                              int64_t bin) {
    char tmp[STRAND_CKPT_PATH_BYTES + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) STRAND_FAIL(STRAND_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    errno = 0;
    int write_error = 0;
    if (fprintf(f, "position_start,position_end,loss_nats,bits_per_base\n") < 0)
        write_error = errno ? errno : EIO;
    for (int64_t start = 0; start < length && !write_error; start += bin) {
        const int64_t end = start + bin < length ? start + bin : length;
        double sum = 0;
        for (int64_t p = start; p < end; p++)
            sum += by_position[p];
        const double mean = sum / ((double)(end - start) * (double)windows);
        if (fprintf(f, "%lld,%lld,%.9g,%.9g\n", (long long)start, (long long)end, mean, mean / LN2) < 0)
            write_error = errno ? errno : EIO;
    }
    return commit_file(f, write_error, tmp, path);
}

static int sum_over_world(MPI_Comm comm, double *values, int64_t n) {
    const int64_t piece = (int64_t)1 << 28; /* MPI counts are int */
    for (int64_t offset = 0; offset < n; offset += piece) {
        const int count = (int)(n - offset < piece ? n - offset : piece);
        STRAND_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, values + offset, count, MPI_DOUBLE, MPI_SUM, comm));
    }
    return STRAND_OK;
}

static int eval_run(trainer *t, MPI_Comm world, const char *checkpoint, int64_t windows,
                    const char *per_position, int64_t bin, strand_eval_result *result) {
    t->config.eval_windows = windows;
    STRAND_CALL(start(t, world, NULL));
    STRAND_CALL(strand_consistency_value(t->grid.world, "--checkpoint", checkpoint));
    STRAND_CALL(strand_ckpt_check(checkpoint, &t->model.table, &t->config, 0, t->grid.world, t->meta));
    STRAND_CALL(load_checkpoint(t, checkpoint));
    if (t->loader.val_starts == 0)
        STRAND_FAIL(STRAND_ERR_INPUT,
                    "%s has no validation range of %lld tokens (train.seq_len + 1); prep with --val-fraction "
                    "or --val-records",
                    t->config.data_path, (long long)t->config.seq_len + 1);
    const int64_t L = t->config.seq_len;
    double *by_position = NULL;
    if (per_position) {
        /* Agreed: the evaluation below is collective. */
        by_position = strand_alloc(sizeof *by_position * (size_t)L, "per-position losses");
        STRAND_CALL(strand_agree(t->grid.world, by_position ? STRAND_OK : STRAND_ERR_NOMEM));
    }
    double sums[EVAL_SUMS] = {0};
    int status = strand_agree(t->grid.world, evaluate_windows(t, sums, by_position));
    if (status == STRAND_OK) status = strand_allreduce_sum_double(t->grid.world, sums, EVAL_SUMS);
    if (status == STRAND_OK && by_position) {
        /* Positions are summed over windows (DP groups) and over the ranks that hold them. */
        status = strand_agree(t->grid.world, sum_over_world(t->grid.world, by_position, L));
        const int64_t n = (int64_t)llround(sums[4] / (double)L);
        if (status == STRAND_OK)
            status =
                strand_agree(t->grid.world,
                             t->rank0 ? write_position_csv(per_position, by_position, L, n, bin) : STRAND_OK);
    }
    strand_free(by_position);
    STRAND_CALL(status);
    result->val_bpb = sums[0] / LN2 / sums[5];
    result->val_bits_per_token = sums[0] / sums[1] / LN2;
    result->bases_per_token = sums[5] / sums[1];
    result->windows = (int64_t)llround(sums[4] / (double)L);
    result->answer_accuracy = sums[2] > 0 ? sums[3] / sums[2] : NAN;
    result->checkpoint_step = t->meta->step;
    result->parameters = t->model.table.total;
    return STRAND_OK;
}

int strand_train_eval(const strand_config *config, MPI_Comm world, const char *checkpoint, int64_t windows,
                      const char *per_position, int64_t bin, strand_eval_result *result) {
    trainer t;
    trainer_init(&t, config);
    memset(result, 0, sizeof *result);
    int status = eval_run(&t, world, checkpoint, windows, per_position, bin > 0 ? bin : 1, result);
    trainer_free(&t);
    return status;
}
