/* A small harness for learning tests: train a model with the model API and AdamW on synthetic
 * windows, then score it on held-out windows by the mean loss over the task's answer positions.
 *
 * A task is a window length L, a generator of its L + 1 tokens (inputs and next-token targets)
 * and the set of answer positions: position t is scored when is_answer(t), its target being
 * tokens[t + 1] (or target(tokens, t)). Training window b of step s is make_window(tokens, 1, s * batch + b),
 * held-out window w is make_window(tokens, 2, w). Each step sums the gradients of `batch` windows (each
 * scaled by 1 / (batch L)), all-reduces them over the world, clips them to train.grad_clip and
 * takes an AdamW step at strand_lr_at(step). Parameters come from strand_model_init_params with
 * train.seed. */
#ifndef STRAND_LEARNING_UTIL_H
#define STRAND_LEARNING_UTIL_H

#include "strand/dist.h"
#include "strand/model.h"

#include <stdint.h>

typedef struct {
    int64_t length; /* L */
    /* tokens[0..L]: window `index` of the stream `seed` (1: training, 2: held out) */
    void (*make_window)(strand_token_t *tokens, uint64_t seed, uint64_t index);
    /* whether the target at global position t is part of the answer */
    int (*is_answer)(int64_t t);
    /* The target at global position t (NULL: the next token, tokens[t + 1]). A task whose inputs
     * are noise gives the non-answer positions a constant target here: learnt within a few steps,
     * it leaves the answer's gradient alone, as a loss mask would. */
    strand_token_t (*target)(const strand_token_t *tokens, int64_t t);
    /* Non-zero: train through the model's loss mask (model->loss_weights = is_answer, the loss
     * normalised by the window's answer count), as strand train does on a task dataset. */
    int masked;
} learning_task;

enum { LEARNING_MAX_SETS = 4 };

typedef struct {
    const char *layers; /* model.layers */
    int layout;         /* STRAND_LAYOUT_CONTIGUOUS or STRAND_LAYOUT_ZIGZAG */
    int steps, batch;   /* optimiser steps, windows per step */
    /* Configuration overrides ("key=value"), NULL-terminated lists applied in order after the
     * defaults; a NULL list ends them. */
    const char *const *sets[LEARNING_MAX_SETS];
    /* Called after strand_model_init_params, before training (NULL: none): initialisations the
     * configuration has no key for. */
    void (*after_init)(strand_model *model, void *user);
    void *user;
    int eval_windows; /* held-out windows scored (0: 16) */
    int log_every;    /* > 0: rank 0 prints the training answer loss every this many steps */
} learning_run;

typedef struct {
    double answer_bits, all_bits; /* held-out mean loss, bits per token: answer part, everything */
    double answer_accuracy;       /* held-out answers whose argmax is the target */
    int64_t params;
    double seconds; /* training time */
} learning_result;

/* Train and score; collective over grid->world. Returns STRAND_OK or the first error. */
int learning_train_and_score(const strand_grid *grid, const learning_task *task, const learning_run *run,
                             learning_result *res);

/* A learning test's models, all trained on one task with the same budget and compared. */
typedef struct {
    const char *name, *layers; /* name: for the command line; layers: model.layers */
    const char *const sets[4]; /* its own overrides, after the suite's defaults */
    /* the check on its held-out answer loss: below max_bits (it learns the task) or above
     * min_bits (it cannot); 0: reported only */
    double max_bits, min_bits;
    /* the check on its held-out answer accuracy: above min_accuracy, below max_accuracy (0: none) */
    double min_accuracy, max_accuracy;
} learning_model;

typedef struct {
    const char *test, *title; /* the program's name; the table's heading */
    const learning_task *task;
    int layout, steps, batch, eval_windows;
    const char *const *defaults; /* overrides for every model */
    const learning_model *models;
    int n_models;
    const char *log_env; /* environment variable: log the training loss every that many steps */
} learning_suite;

/* A learning test's main: MPI_Init, train and score the suite's models, print one line per model
 * under the title (rank 0), check each against its bounds, MPI_Finalize. Returns the
 * exit status (0: every check passed on every rank). For exploring by hand, argv may hold
 * [steps [name ...] [key=value ...]]: the named models only, with the overrides applied to each
 * after its own. */
int learning_suite_main(const learning_suite *suite, int argc, char **argv);

#endif
