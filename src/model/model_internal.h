/* Private to the model's files (model.c, the incremental decoder model_step.c and the memory plan
 * of the dry run): the block record, the one block forward both passes run, and parameter access. */
#ifndef STRAND_MODEL_INTERNAL_H
#define STRAND_MODEL_INTERNAL_H

#include "strand/model.h"

/* The rows a block's forward writes (T rows each; see block_forward for which norm position uses
 * which). Training keeps them for backward; incremental decoding points them at one-row scratch. */
typedef struct {
    real_t *x, *norm1, *norm1_mean, *norm1_rstd, *mix, *a, *h, *norm2, *norm2_mean, *norm2_rstd, *fc, *act,
        *b;
    /* fc and act hold one chunk of mlp_chunk_rows rows (recompute rebuilds them per chunk; one row
     * when decoding), not every row. */
    int hidden_chunk;
} strand_block_rows;

struct strand_block {
    int norm1_weight, norm1_bias, norm2_weight, norm2_bias;
    int fc_weight, fc_bias, proj_weight, proj_bias;
    int64_t param_begin, param_end; /* the block's parameters in the flat array */
    strand_mixer mixer;
    strand_block_rows rows; /* saved activations, max_T rows each */
};

/* The mixer of a block applied to T rows: out (T,C) = mixer(in (T,C)). Training calls the mixer's
 * forward over the shard, decoding its step at one position. */
typedef int (*strand_mixer_apply)(void *context, real_t *out, const real_t *in);

/* One block's forward over T rows from r->x into y (T,C). y = NULL: only what backward needs (a
 * recomputed block): pre-norm then skips the MLP, post-norm writes its output to `scratch`. */
int strand_block_forward(const strand_model *model, const strand_block *b, strand_block_rows *r, int64_t T,
                         strand_mixer_apply mixer, void *context, real_t *y, real_t *scratch);

#define PARAM(model, index) ((model)->params + (model)->table.items[(index)].offset)
#define GRAD(model, index) ((model)->grads + (model)->table.items[(index)].offset)

#endif
