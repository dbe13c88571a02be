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

/* ---- strand probe gradient ----
 * The gradient signal g(k) = || d loss_T / d x_(T-k) ||_2 (x: the block-0 input, the embedding's
 * output; loss_T: the loss at position T alone), k = 0 .. T, for one window. */

/* One forward and backward of this rank's rows (inputs, targets: shard->T each) with
 * model->loss_weights one-hot at global position `position` (restored afterwards; carried state is
 * reset first), then g (position + 1 values, on every rank of the SP group): row p's gradient
 * norm at k = position - p. Refuses a position outside the window. Collective over the SP group;
 * the status is agreed. model->grads is overwritten. */
int strand_probe_gradient(strand_model *model, const strand_shard *shard, const strand_token_t *inputs,
                          const strand_token_t *targets, int64_t position, double *g);
/* Least-squares decay fits of g (n values) over k >= 1 where g(k) > 0: *per_step = r from
 * ln g = a + k ln r (the factor per position back), *power = s from log10 g = b + s log10 k (the
 * decades of g per decade of k). Returns the points used (the fits are NaN below 2). */
int64_t strand_probe_gradient_fit(const double *g, int64_t n, double *per_step, double *power);

/* strand probe gradient from a checkpoint: the model at `config` (DP = 1), g(k) over `windows`
 * windows of train.seq_len (or `window`) tokens plus their next tokens: consecutive windows of the
 * validation ranges, or of the training ranges when the dataset has no validation range that
 * holds one. */
typedef struct {
    const char *checkpoint; /* a checkpoint file (resolved) */
    int64_t windows;        /* n >= 1 */
    int64_t window;         /* tokens in each window; 0: train.seq_len */
    int64_t position;       /* T; -1: the window's last position */
    const char *csv;        /* NULL, or k,mean,std,min,max (rank 0) */
    const char *plot;       /* NULL, or a PNG by gnuplot (rank 0): log g against log k */
} strand_probe_gradient_options;

typedef struct {
    int64_t window, position, windows; /* windows: how many were averaged */
    int from_validation;               /* 1: validation windows; 0: training windows */
    int sp;
    int64_t checkpoint_step;
    double *mean, *std, *min, *max; /* (position + 1) each, on every rank, over the windows */
    double per_step, power;         /* strand_probe_gradient_fit of mean */
    int64_t fit_points;
} strand_probe_gradient_result;

/* Collective over world; the status is agreed. Free with strand_probe_gradient_free either way. */
int strand_probe_gradient_run(const strand_config *config, MPI_Comm world,
                              const strand_probe_gradient_options *o, strand_probe_gradient_result *result);
void strand_probe_gradient_free(strand_probe_gradient_result *result);

#endif
