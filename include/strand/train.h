/* The training loop: grid, dataset, model, optimizer, metrics, checkpoints and preemption; every
 * failure agreed across ranks. */
#ifndef STRAND_TRAIN_H
#define STRAND_TRAIN_H

#include "strand/ckpt.h"
#include "strand/config.h"
#include "strand/layout.h"
#include "strand/model.h"
#include "strand/plan.h"

/* The trainer's own buffers beside the model's: AdamW's moments (mirroring the parameter array),
 * the token windows and the checkpoint metadata scratch. */
typedef struct {
    real_t *adam_m, *adam_v;
    strand_token_t *inputs, *targets; /* T each: tokens and their next tokens */
    strand_token_t *read_buffer;      /* one piece + 1 */
    strand_ckpt_meta *meta;
} strand_train_buffers;

/* Declare them into a plan (the dry run passes a dry plan and its own struct). */
int strand_train_plan(strand_plan *plan, int64_t parameters, int64_t T, strand_train_buffers *buffers);

typedef struct {
    int64_t steps;
    double first_bpb, final_bpb; /* training loss of the first and last step, bits per base */
    double val_bpb;              /* NaN when no validation windows were evaluated */
    double val_bits_per_token;   /* the same loss per token (equal to val_bpb for nucleotide tokens) */
    double val_answer_accuracy;  /* argmax == target on the loss mask's positions; NaN without a mask */
    int64_t val_windows;
    int64_t peak_rss_bytes; /* the largest peak resident memory of any rank, over the whole run */
    int64_t planned_bytes;  /* the largest memory plan of any rank (model and trainer) */
    double seconds;         /* training time, over all resumed runs */
    int64_t parameters;
    int64_t start_step;          /* steps already done when this run started (0 unless resumed) */
    int64_t end_step;            /* steps done when this run stopped */
    int preempted;               /* stopped early by SIGUSR1/SIGTERM after writing a checkpoint */
    int preempted_in_validation; /* ... after the last step: the final validation is redone on resume */
    char resumed_from[STRAND_CKPT_PATH_BYTES]; /* "" when the run started fresh */
    char checkpoint[STRAND_CKPT_PATH_BYTES];   /* the last checkpoint written ("" when none) */
} strand_train_result;

typedef struct {
    int quiet;            /* no progress lines (tests) */
    int no_run_dir;       /* do not write config.ini / metrics.jsonl / summary.json / checkpoints */
    int progress;         /* enum strand_progress_mode */
    double *loss_history; /* if set: the mean training loss (nats) of every step, config.steps values */
    /* A checkpoint file, or a run or checkpoints directory meaning its latest checkpoint. NULL:
     * resume from <run.dir>/checkpoints when a checkpoint is there (unless no_auto_resume). */
    const char *resume;
    int no_auto_resume;
    /* Catch SIGUSR1 and SIGTERM: all ranks agree at the next step boundary, write a checkpoint
     * and return with result->preempted set (strand train then exits STRAND_EXIT_PREEMPTED). A
     * signal after the last step's vote (during it, its checkpoint or the final validation) stops
     * the run as preempted too, before summary.json, so that the resumed run redoes the
     * validation from the last step's checkpoint. The handlers stay installed after strand_train
     * returns (strand_train_catch_signals): later signals are absorbed until the process exits. */
    int handle_signals;
} strand_train_options;

/* Install strand's SIGUSR1/SIGTERM handlers for the rest of the process: a signal is recorded,
 * never fatal. strand train calls it first thing, so that a signal during start-up is kept for
 * the first step boundary. Idempotent. */
void strand_train_catch_signals(void);

/* The layout (enum strand_layout_kind) a configuration runs with: parallel.layout, or for auto
 * zigzag when the model has full attention and contiguous otherwise. */
int strand_train_layout(const strand_config *config);

/* Train on `world` with the given configuration. Collective; returns the same status on every
 * rank. Every rank must be given the same configuration (train.offload's directory excepted) and
 * see the same dataset tables: checked before anything else, the first difference named. Unless
 * options->no_run_dir, rank 0 holds an exclusive lock on run.dir (run_lock.h) from before the
 * resume until the return; a second job on the same run.dir is refused. */
int strand_train(const strand_config *config, MPI_Comm world, const strand_train_options *options,
                 strand_train_result *result);

/* AdamW's moments (table.total values each, zero before the first update) and updates done. */
typedef struct {
    real_t *m, *v;
    int64_t t;
} strand_train_moments;

typedef struct {
    double loss;      /* mean over the step's tokens (all ranks' windows), nats */
    double grad_norm; /* of the reduced gradient, before clipping */
    double lr;        /* the learning rate of the update */
} strand_train_step_result;

/* One training step of `model` (its configuration: schedule, clipping, AdamW) on one window per
 * SP group whose rows on this rank are already in inputs/targets (shard->T each): zero the
 * gradient, forward and backward of the loss scaled by 1 / tokens_per_step, the gradient and
 * loss all-reduced over `world`, then the update strand_train's loop makes (the same code: stop
 * on a non-finite loss or norm, clip, AdamW at the learning rate of 0-based `step`). No loss
 * mask. strand bench train times it. Collective over world; the status is agreed. */
int strand_train_step(strand_model *model, const strand_shard *shard, MPI_Comm world,
                      strand_train_moments *moments, const strand_token_t *inputs,
                      const strand_token_t *targets, int64_t step, double tokens_per_step,
                      strand_train_step_result *result);

typedef struct {
    int64_t step; /* 1-based, as in metrics.jsonl */
    double loss, grad_norm;
    int64_t parameters;
    int64_t checkpoint_step;
    int accum_steps; /* micro-batches per rank used to take the checkpoint's windows per step */
} strand_grad_result;

/* The loss and the unclipped gradient of every parameter for the batch that step `step`
 * (1-based; 0 = the step after the checkpoint) uses, from the state in `checkpoint`, written to
 * `out` (/grads/<layer>/<name>). Any (DP, SP): train.accum_steps is derived so that the step
 * takes the checkpoint's windows. Collective. */
int strand_train_grad(const strand_config *config, MPI_Comm world, const char *checkpoint, int64_t step,
                      const char *out, strand_grad_result *result);

typedef struct {
    double val_bpb; /* the windows' loss in bits over the bases their targets cover */
    double val_bits_per_token;
    double bases_per_token; /* mean over the evaluated targets */
    int64_t windows;        /* validation windows evaluated */
    double answer_accuracy; /* argmax == target over the loss mask's positions; NaN without a mask */
    int64_t checkpoint_step;
    int64_t parameters;
} strand_eval_result;

/* Bits per base on the validation split for the model of a checkpoint: `windows` windows evenly
 * spread over the split (the same windows as training's final evaluation with eval_windows =
 * windows). With per_position (may be NULL), rank 0 writes a CSV of the loss by position in the
 * window, averaged over windows and over bins of `bin` positions. Collective. */
int strand_train_eval(const strand_config *config, MPI_Comm world, const char *checkpoint, int64_t windows,
                      const char *per_position, int64_t bin, strand_eval_result *result);

#endif
