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
void strand_params_free(strand_param_table *table);

/* ---- mixer interface ---- */
typedef struct strand_mixer strand_mixer;
typedef struct {
    const char *name;
    /* Declare parameters in the table (layer name given) and size the state. */
    int (*create)(strand_mixer *mixer, const strand_config *config, strand_param_table *table,
                  const char *layer);
    /* Allocate saved activations, plans and workspaces for this shard shape (the window, its
     * layout and every rank's piece are fixed for the model's lifetime). With a donor (a set-up
     * mixer of the same ops and configuration; train.recompute = block), borrow the donor's
     * activations, scratch and long-convolution plans instead of allocating them: the model
     * re-runs a block's forward right before its backward, so one set serves every such block.
     * The donor must outlive the borrower. */
    int (*setup)(strand_mixer *mixer, const strand_shard *shard, const strand_mixer *donor);
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
    /* ---- incremental decoding (generation; src/model/model_step.c). Optional: NULL when a mixer has
     * none. Single-rank, no communication; independent of setup's buffers (which may be borrowed
     * from, or lent to, another block under train.recompute = block). */
    /* A decoding state for one sequence of at most max_len positions. params are the values every
     * later step uses (a mixer may precompute from them, e.g. hyena's filter): do not change them
     * in between. *state is set before anything can fail: pass it to step_free either way. */
    int (*step_init)(const strand_mixer *mixer, const real_t *params, int64_t max_len, void **state);
    /* out (C) = row `position` of forward() over the sequence whose rows 0..position-1 were fed
     * earlier and whose row `position` is in (C). Positions come in order 0, 1, 2, ... < max_len
     * (anything else is refused). The cost per token is the mixer's (see each mixer's file). */
    int (*step)(const strand_mixer *mixer, void *state, const real_t *params, const real_t *in, real_t *out,
                int64_t position);
    void (*step_free)(void *state); /* NULL is accepted */
    /* ---- state carried from one forward to the next (attn.segment_memory), so that a checkpoint
     * resumes bit-exactly. Optional: NULL when a mixer carries nothing. Values on this rank. */
    int64_t (*carry_count)(const strand_mixer *mixer);
    void (*carry_save)(const strand_mixer *mixer, real_t *out);
    void (*carry_load)(strand_mixer *mixer, const real_t *in);
} strand_mixer_ops;

struct strand_mixer {
    const strand_mixer_ops *ops;
    int C;
    void *state; /* owned by the mixer */
};

/* The registry's index-th mixer name, NULL past the end (for listing them). */
const char *strand_mixer_name(int index);
/* Look a mixer up by name (NULL when unknown). */
const strand_mixer_ops *strand_mixer_find(const char *name);
extern const strand_mixer_ops strand_mixer_conv;
extern const strand_mixer_ops strand_mixer_s4d;
extern const strand_mixer_ops strand_mixer_hyena;
extern const strand_mixer_ops strand_mixer_attn;

/* ---- the model ---- */
/* Rows per chunk of the MLP's backward (its scratch is this many rows, not the shard's). */
enum { MLP_CHUNK_ROWS = 16384 };

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
    real_t *params, *grads; /* table.total each */
    int wte, head, final_weight, final_bias;
    strand_block *blocks;
    /* saved activations for the head (max_T rows) */
    real_t *final_in, *final_out, *final_mean, *final_rstd, *logits, *probs, *losses;
    /* gradient scratch */
    real_t *d_residual, *d_tmp1, *d_tmp2, *d_fc, *d_act, *d_logits;
    const uint8_t *targets; /* of the last forward */
} strand_model;

/* Split model.layers ("conv,conv,hyena") into at most max names; returns the count, or -1 when
 * an entry is empty or 32 characters or longer. */
int strand_model_split_layers(const char *list, char names[][32], int max);
/* Build the model for this shard shape. Parameters are not initialised. */
int strand_model_create(strand_model *model, const strand_config *config, const strand_shard *shard);
/* Initialise every parameter from (seed, parameter index, element index). */
void strand_model_init_params(strand_model *model, uint64_t seed);
/* Forward over this rank's shard: tokens (T) in, targets (T) next tokens. Returns the sum of the
 * per-token losses in nats over the local tokens in *loss_sum. */
int strand_model_forward(strand_model *model, const uint8_t *tokens, const uint8_t *targets,
                         const strand_shard *shard, double *loss_sum);
/* Backward of loss_scale * (sum of local losses); ADDS into model->grads. */
int strand_model_backward(strand_model *model, const uint8_t *tokens, const strand_shard *shard,
                          real_t loss_scale);
/* The mixers' carried state on this rank: its size in values, and a copy out or in (blocks in
 * order, each mixer's carry_save layout). */
int64_t strand_model_carry_count(const strand_model *model);
void strand_model_carry_save(const strand_model *model, real_t *out);
void strand_model_carry_load(strand_model *model, const real_t *in);
void strand_model_free(strand_model *model);

#endif
