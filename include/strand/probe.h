/* Probes of a trained model (strand probe): the span Jacobian of a recurrent block.
 *
 * For block l with state s_j after position j, the end-to-end Jacobian over a span of k positions
 * after position t is
 *   J = d s_(t+k) / d s_t = J_(t+k) ... J_(t+1),   J_j = d s_j / d s_(j-1)
 * at the states of a real forward over one window (rnn and ornn: J_j = diag(phi'(a_j)) W). The
 * window is sharded as in training; each rank multiplies its part of the span and the parts are
 * combined in global order (src/model/mixers/recurrent_probe.c); the singular values come from
 * ScaLAPACK on a BLACS grid over the SP group (src/parallel/dense.h). Everything in double. */
#ifndef STRAND_PROBE_H
#define STRAND_PROBE_H

#include "strand/config.h"
#include "strand/model.h"

#include <stdint.h>

/* Which Jacobian of an LSTM block (state (h, c)). */
enum strand_probe_lstm_path {
    STRAND_PROBE_LSTM_FULL = 0, /* d (h, c)_(t+k) / d (h, c)_t, 2C x 2C */
    STRAND_PROBE_LSTM_CELL = 1, /* the c -> c block of each step, diag(f_j): the constant-error path */
};

typedef struct {
    int block;        /* 0-based index into model.layers */
    int64_t position; /* t: 0 <= t, t + span < window */
    int64_t span;     /* k >= 1 */
    int lstm_path;    /* enum strand_probe_lstm_path (lstm blocks only) */
} strand_probe_jacobian_options;

typedef struct {
    char mixer[32];
    const char *state; /* what J differentiates: "h", "(h, c)" or "c" */
    int n;             /* J is n x n */
    double *sigma;     /* (n) singular values, descending, on every rank */
    double *jacobian;  /* (n,n) row-major on SP rank 0; NULL elsewhere */
    double sigma_max, sigma_min;
    double measured_decay; /* sigma_max^(1/k) */
    /* spectral radius of each C x C gate block of W (one block for rnn and ornn), by LAPACK dgeev */
    int gates;
    double radius[4];
    const char *gate_names; /* e.g. "i f o g", one letter per block ("W" for rnn and ornn) */
    double mean_factor;     /* the cell's per-step factor averaged over the span */
    double predicted_decay; /* mean_factor, times radius[0] for rnn */
    const char *decay_formula;
} strand_probe_jacobian_result;

/* The span Jacobian of block o->block at the states of the model's last forward over shard, its
 * singular values, W's spectral radius and the predicted decay per step. Refuses (one line) a
 * block index out of range, a block that is not rnn, lstm, gru or ornn, a span outside the
 * window, and lstm_path on a block that is not an lstm. Collective over the SP group (DP = 1);
 * the status is agreed. Free the result with strand_probe_jacobian_free either way. */
int strand_probe_jacobian(const strand_model *model, const strand_shard *shard,
                          const strand_probe_jacobian_options *o, strand_probe_jacobian_result *result);
void strand_probe_jacobian_free(strand_probe_jacobian_result *result);

/* strand probe jacobian from a checkpoint: the model at `config` (the checkpoint's, placed on
 * this world with DP = 1), one forward over a window, then strand_probe_jacobian. */
typedef struct {
    const char *checkpoint; /* a checkpoint file (resolved) */
    const char *tokens;     /* the window as bases (A C G T N); NULL: from the dataset */
    int64_t offset;         /* the window's first token in /tokens; -1: the first training range's */
    int64_t window;         /* tokens in the window; 0: train.seq_len (ignored with tokens) */
    const char *csv;        /* NULL, or a CSV of every singular value (rank 0) */
    strand_probe_jacobian_options jacobian;
} strand_probe_options;

typedef struct {
    int64_t window, offset; /* offset -1: the window was given as bases */
    int sp;
    int64_t checkpoint_step;
    strand_probe_jacobian_result jacobian;
} strand_probe_result;

/* Collective over world; the status is agreed. Free result->jacobian with
 * strand_probe_jacobian_free either way. */
int strand_probe_run(const strand_config *config, MPI_Comm world, const strand_probe_options *o,
                     strand_probe_result *result);

#endif
