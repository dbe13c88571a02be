/* The sequence model: parameter table (one flat allocation), mixer interface, blocks, head and
 * loss, with a hand-written backward pass over this rank's shard of the window.
 *
 * A block is x + mixer(norm(x)) then x + mlp(norm(x)) (pre-norm), or norm(x + mixer(x)) then
 * norm(x + mlp(x)) (post-norm). Mixers are the only layers that talk across the SP group. */
#ifndef STRAND_MODEL_H
#define STRAND_MODEL_H

#include "strand/common.h"
#include "strand/config.h"
#include "strand/dist.h"
#include "strand/layout.h"
#include "strand/perf.h"
#include "strand/plan.h"

#include <stdint.h>

/* ---- parameter table ---- */
enum strand_init { STRAND_INIT_NORMAL, STRAND_INIT_ONES, STRAND_INIT_ZEROS, STRAND_INIT_BY_LAYER };

typedef struct {
    char layer[48]; /* e.g. "block3.mixer"; a checkpoint stores /params/<layer>/<name> */
    char name[32];  /* e.g. "weight" */
    int ndim;
    int64_t shape[2];
    int64_t offset, size; /* in elements of the flat array */
    int init;             /* enum strand_init */
    double init_std;
    int decay; /* AdamW weight decay applies (matrices yes, norms and biases no) */
} strand_param_info;

typedef struct {
    strand_param_info *items;
    int count, capacity;
    int64_t total;
} strand_param_table;

/* Declare a parameter; returns its index in *index. Shapes: d1 = 0 for vectors. */
int strand_params_declare(strand_param_table *table, const char *layer, const char *name, int64_t d0,
                          int64_t d1, int init, double init_std, int decay, int *index);
/* strand_params_declare that also gives the parameter's offset in the flat array (index: NULL
 * when not wanted). */
int strand_params_declare_at(strand_param_table *table, const char *layer, const char *name, int64_t d0,
                             int64_t d1, int init, double init_std, int decay, int64_t *offset, int *index);
void strand_params_free(strand_param_table *table);

/* ---- mixer interface ----
 * A mixer is one file (src/model/mixers/<name>.c) that defines a strand_mixer_ops and one line in
 * the registry (src/model/model.c). Its ops table carries everything the rest of strand asks about
 * it: its configuration keys, what it needs of the layout, its memory, and its passes. */

/* Capability flags (strand_mixer_ops.capabilities, given the mixer's options). */
enum {
    /* Causal work grows along the window (full attention): prefers the zigzag layout. */
    STRAND_MIXER_BALANCED_LAYOUT = 1u << 0,
    /* A distributed FFT long convolution (uses the [fft] keys; --dry-run shows the strategy). */
    STRAND_MIXER_LONG_CONV = 1u << 1,
    /* Carries state from one window into the next (reset when the next does not continue it);
     * a recomputed forward would advance it twice, so train.recompute = block is refused. */
    STRAND_MIXER_CARRIES_STATE = 1u << 2,
    /* Has an incremental (one position at a time) mode: step_init, step, step_free. */
    STRAND_MIXER_STEP = 1u << 3,
    /* Needs the window in contiguous global order on each rank (a recurrence along positions). */
    STRAND_MIXER_CONTIGUOUS = 1u << 4,
};

typedef struct strand_mixer strand_mixer;
typedef struct {
    const char *name;
    const char *summary;      /* one line for --help-config and the README */
    const char *forward_cost; /* of forward over a window of L positions, e.g. "O(L log L C)" */
    const char *step_cost;    /* of one incremental step at position t, e.g. "O(K C)" (STRAND_MIXER_STEP) */
    /* Floating-point operations of forward over T local rows of C channels (NULL: not counted);
     * `strand bench mixer` reports GFLOP/s from it (backward counted as twice the forward). */
    double (*flops)(const void *options, int C, int64_t T);
    /* The work of forward + backward over a shard (strand plan, perf.h), added into *cost from
     * the helpers there (NULL: 3x flops at the matrix-vector rate, which the plan says). */
    void (*cost)(const void *options, const strand_cost_shape *shape, strand_cost *cost);
    /* ---- configuration ---- its options struct (at most STRAND_MIXER_OPTION_BYTES) and key rows
     * with offsets into it; the section of each row is its own (usually the mixer's name). */
    size_t options_size;
    const strand_config_key *keys;
    int key_count;
    /* Cross-key checks (NULL: none). Run by strand_config_validate for every registered mixer:
     * checks among its own keys always (a configuration is valid or not on its own), checks
     * against other sections (heads divide model.d_model) when `used` (model.layers names it). */
    int (*validate)(const strand_config *config, const void *options, int used);
    /* Capability flags (STRAND_MIXER_*) for these options. */
    unsigned (*capabilities)(const void *options);
    /* Test configurations for the conformance suite: NULL-terminated list of strings, each a
     * ';'-separated list of section.key=value overrides on top of the defaults ("" = defaults). */
    const char *const *test_configs;

    /* ---- passes ---- */
    /* Declare parameters in the table (layer name given) and size the state. */
    int (*create)(strand_mixer *mixer, const strand_config *config, strand_param_table *table,
                  const char *layer);
    /* Declare every buffer this shard shape needs into the plan (plan.h): saved activations and
     * scratch as STRAND_PLAN_SHARED (one set serves all blocks of this mixer under train.recompute
     * = block), tables and carried state not. No allocation, and no communication except a
     * long convolution's plan (strand_fftconv_plan), which must come first, before anything that
     * can fail on one rank alone. --dry-run also runs it for grids that do not exist
     * (shard->grid->sp_comm is MPI_COMM_NULL; nothing communicates then). The pointers it
     * declares are set when the plan is allocated, before setup. */
    int (*plan)(strand_mixer *mixer, const strand_shard *shard, strand_plan *plan);
    /* After allocation: fill tables, build plans, exchange what other ranks need (collective
     * over the SP group). NULL: nothing to do. */
    int (*setup)(strand_mixer *mixer, const strand_shard *shard);
    /* Fill the parameters declared with STRAND_INIT_BY_LAYER (NULL when there are none).
     * Must be a pure function of (seed, parameter values' positions), like the table's init. */
    void (*init_params)(strand_mixer *mixer, real_t *params, uint64_t seed);
    /* out (T,C) = mixer(in (T,C)); saves what backward needs. */
    int (*forward)(strand_mixer *mixer, real_t *out, const real_t *in, const real_t *params,
                   const strand_shard *shard);
    /* din (T,C) += d/d in; dparams += d/d params, given dout (T,C) and the forward's input. */
    int (*backward)(strand_mixer *mixer, real_t *din, real_t *dparams, const real_t *dout, const real_t *in,
                    const real_t *params, const strand_shard *shard);
    void (*destroy)(strand_mixer *mixer);
    /* ---- incremental decoding (generation; src/model/model_step.c). With STRAND_MIXER_STEP.
     * Single-rank, no communication; independent of the planned buffers (which may be shared
     * with another block under train.recompute = block). */
    /* A decoding state for one sequence of at most max_len positions. params are the values every
     * later step uses (a mixer may precompute from them, e.g. an implicit filter): do not change them
     * in between. *state is set before anything can fail: pass it to step_free either way. */
    int (*step_init)(const strand_mixer *mixer, const real_t *params, int64_t max_len, void **state);
    /* out (C) = row `position` of forward() over the sequence whose rows 0..position-1 were fed
     * earlier and whose row `position` is in (C). Positions come in order 0, 1, 2, ... < max_len
     * (anything else is refused). The cost per token is the mixer's (see each mixer's file). */
    int (*step)(const strand_mixer *mixer, void *state, const real_t *params, const real_t *in, real_t *out,
                int64_t position);
    void (*step_free)(void *state); /* NULL is accepted */
    /* ---- state carried from one window into the next (STRAND_MIXER_CARRIES_STATE), so that a
     * checkpoint resumes bit-exactly. NULL when a mixer carries nothing. Values on this rank. */
    int64_t (*carry_count)(const strand_mixer *mixer);
    void (*carry_save)(const strand_mixer *mixer, real_t *out);
    void (*carry_load)(strand_mixer *mixer, const real_t *in);
    /* Forget the carried state: the next window does not continue the previous one. */
    void (*reset)(strand_mixer *mixer);
} strand_mixer_ops;

struct strand_mixer {
    const strand_mixer_ops *ops;
    int C;
    const void *options; /* this mixer's options inside the model's configuration */
    void *state;         /* owned by the mixer */
};

/* The registry's index-th mixer, NULL past the end (for listing them). */
const strand_mixer_ops *strand_mixer_at(int index);
/* The registry's index-th mixer name, NULL past the end. */
const char *strand_mixer_name(int index);
/* Look a mixer up by name (NULL when unknown). */
const strand_mixer_ops *strand_mixer_find(const char *name);
/* A mixer's options inside a configuration (its block of config->mixer_options). */
const void *strand_mixer_options(const strand_config *config, const strand_mixer_ops *ops);
/* A mixer outside a model (tests, benchmarks): set it up as a model would and create it (its
 * parameters go to `table`), then plan, allocate (in `plan`, which the caller frees after
 * destroy) and set it up for the shard (collective over the SP group). */
int strand_mixer_create(strand_mixer *mixer, const strand_mixer_ops *ops, int C, const strand_config *config,
                        strand_param_table *table, const char *layer);
int strand_mixer_setup_alone(strand_mixer *mixer, const strand_shard *shard, strand_plan *plan);
/* The init std of a projection that feeds the residual stream: model.init_std / sqrt(2 depth), so
 * the stream's variance does not grow with the number of blocks (GPT-2's scheme). */
double strand_model_residual_std(const strand_config *config);
/* The capability flags of the mixers model.layers names, or-ed (unknown names are skipped). */
unsigned strand_model_capabilities(const strand_config *config);

/* ---- the model ---- */
/* Rows per chunk of the MLP's backward (its scratch is this many rows, not the shard's). */
enum { MLP_CHUNK_ROWS = 16384 };
/* Blocks in model.layers at most. */
enum { STRAND_MAX_BLOCKS = 256 };

typedef struct strand_block strand_block;

typedef struct {
    strand_config config;
    int C, V, F, H; /* channels, vocabulary, first MLP width (H or 2H), MLP hidden width */
    int n_layers;
    int pre_norm, layer_norm, swiglu;
    int recompute; /* train.recompute = block: blocks share one activation set (see model.c) */
    /* train.offload: block inputs live in OFFLOAD_SLOTS rotating buffers and a per-rank file */
    struct strand_offload *offload;
    real_t *offload_slots[3];
    int64_t *write_tickets, *read_tickets; /* (n_layers) pending transfer per block, -1 = none */
    int64_t max_T;
    int64_t mlp_chunk_rows; /* rows per MLP backward chunk (a test may lower it; never raise it) */
    strand_param_table table;
    strand_plan plan;       /* every buffer below, and the mixers', declared then allocated at once */
    real_t *params, *grads; /* table.total each */
    int wte, head, final_weight, final_bias;
    strand_block *blocks;
    /* saved activations for the head (max_T rows) */
    real_t *final_in, *final_out, *final_mean, *final_rstd, *logits, *probs, *losses;
    /* gradient scratch */
    real_t *d_residual, *d_tmp1, *d_tmp2, *d_fc, *d_act, *d_logits;
    const strand_token_t *targets; /* of the last forward */
    /* Per-position weights of the loss (this rank's T rows; NULL: every position counts once): a
     * task's loss mask, or a probe's single position. Set by the caller, not owned. */
    const real_t *loss_weights;
} strand_model;

/* Split model.layers ("a,b,b") into at most max names; returns the count, or -1 when
 * an entry is empty or 32 characters or longer. */
int strand_model_split_layers(const char *list, char names[][32], int max);
/* Build the model for this shard shape. Parameters are not initialised. Collective over the SP
 * group. */
int strand_model_create(strand_model *model, const strand_config *config, const strand_shard *shard);
/* The memory plan strand_model_create would allocate for this shard, without allocating it (the
 * dry run): the same declarations through the same code. With shard->grid->sp_comm =
 * MPI_COMM_NULL nothing communicates (FFTW-MPI's local sizes are then estimated); otherwise it is
 * collective over the SP group. *parameters: elements of the flat parameter array. The caller
 * frees *plan with strand_plan_free. */
int strand_model_plan(const strand_config *config, const strand_shard *shard, strand_plan *plan,
                      int64_t *parameters);
/* Initialise every parameter from (seed, parameter index, element index). */
void strand_model_init_params(strand_model *model, uint64_t seed);
/* Forward over this rank's shard: tokens (T) in, targets (T) next tokens. Returns the sum of the
 * per-token losses in nats over the local tokens in *loss_sum, weighted by model->loss_weights
 * when set (model->losses keeps every position's own loss). */
int strand_model_forward(strand_model *model, const strand_token_t *tokens, const strand_token_t *targets,
                         const strand_shard *shard, double *loss_sum);
/* Backward of loss_scale * (sum of local losses, weighted as in forward); ADDS into model->grads.
 * Afterwards strand_model_input_grad holds the gradient with respect to the block-0 input. */
int strand_model_backward(strand_model *model, const strand_token_t *tokens, const strand_shard *shard,
                          real_t loss_scale);
/* After strand_model_backward: d loss / d (block-0 input), (T, C) rows of this rank (the embedding
 * output's gradient). Valid until the next forward or backward. */
const real_t *strand_model_input_grad(const strand_model *model);
/* The mixers' carried state on this rank: its size in values, and a copy out or in (blocks in
 * order, each mixer's carry_save layout). */
int64_t strand_model_carry_count(const strand_model *model);
void strand_model_carry_save(const strand_model *model, real_t *out);
void strand_model_carry_load(strand_model *model, const real_t *in);
/* The L2 norm of the whole gradient (the same sum as strand_grad_norm), and of each block's in
 * block_norms (n_layers values, NULL: not wanted): vanishing or exploding gradients by depth. One
 * pass over the gradient. */
double strand_model_grad_norm(const strand_model *model, double *block_norms);
/* Forget every mixer's carried state: the next window does not continue the previous one. */
void strand_model_reset(strand_model *model);
void strand_model_free(strand_model *model);

#endif
