/* What a run reports: one JSON line per step in <run>/metrics.jsonl and a progress line on
 * rank 0 (a live bar on a terminal, plain lines in a SLURM log). */
#ifndef STRAND_METRICS_H
#define STRAND_METRICS_H

#include "strand/common.h"

#include <stdio.h>

typedef struct {
    int64_t step, total_steps;
    double loss, bpb, lr, grad_norm;
    double bits_per_token;            /* bpb is per base: the loss in bits over the bases the targets cover */
    double answer_accuracy;           /* argmax == target on the loss mask's positions; NaN: no mask */
    const double *grad_norm_by_block; /* n_blocks values (before clipping), or NULL */
    int n_blocks;
    double tokens_per_s;
    double step_seconds, compute_seconds, comm_seconds, io_seconds;
    double offload_seconds; /* rank 0's offload thread, overlapped with compute (train.offload) */
    int64_t tokens_seen;
    int64_t peak_rss_bytes; /* maximum over ranks */
    int64_t bytes_sent;     /* handed to MPI for other ranks by rank 0 in this step (strand_comm_bytes) */
    double elapsed_seconds;
} strand_step_metrics;

typedef struct {
    FILE *jsonl;
    char path[1200]; /* of jsonl, for messages */
    int terminal;    /* stdout is a terminal: redraw one live line */
    int pending_newline;
} strand_metrics;

enum strand_progress_mode { STRAND_PROGRESS_AUTO = 0, STRAND_PROGRESS_PLAIN = 1, STRAND_PROGRESS_BAR = 2 };

/* Open <run_dir>/metrics.jsonl for writing, truncated or, with append, for appending (rank 0
 * only; other ranks pass run_dir NULL). AUTO draws the bar when stdout is a terminal. mpirun
 * gives ranks a pseudo-terminal even when its own output goes to a file, so scripts that log
 * should ask for PLAIN. */
int strand_metrics_open(strand_metrics *metrics, const char *run_dir, int progress_mode, int append);
/* Append one line and flush it; a failure names the file and the reason (strerror). */
int strand_metrics_write(strand_metrics *metrics, const strand_step_metrics *m);
/* Print the progress line; `log_line` forces a permanent line (else only the live bar moves). */
void strand_metrics_progress(strand_metrics *metrics, const strand_step_metrics *m, int log_line);
void strand_metrics_close(strand_metrics *metrics);
/* "1h02m", "3m05s", "12s" */
void strand_format_duration(char *out, size_t size, double seconds);
/* "512 KiB", "1.2 GiB" */
void strand_format_bytes(char *out, size_t size, double bytes);

#endif
