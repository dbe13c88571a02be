/* The training loop: grid, dataset, model, optimizer, metrics; every failure agreed across ranks. */
#ifndef STRAND_TRAIN_H
#define STRAND_TRAIN_H

#include "strand/config.h"

typedef struct {
    int64_t steps;
    double first_bpb, final_bpb; /* training loss of the first and last step, bits per base */
    double val_bpb;              /* NaN when no validation windows were evaluated */
    int64_t val_windows;
    double seconds;
    int64_t parameters;
} strand_train_result;

typedef struct {
    int quiet;            /* no progress lines (tests) */
    int no_run_dir;       /* do not write config.ini / metrics.jsonl / summary.json */
    int progress;         /* enum strand_progress_mode */
    double *loss_history; /* if set: the mean training loss (nats) of every step, config.steps values */
} strand_train_options;

/* Train on `world` with the given configuration. Collective; returns the same status on every
 * rank. */
int strand_train(const strand_config *config, MPI_Comm world, const strand_train_options *options,
                 strand_train_result *result);

#endif
