/* Private to the model's files (model.c, and the incremental decoder): the block record and
 * parameter access. */
#ifndef STRAND_MODEL_INTERNAL_H
#define STRAND_MODEL_INTERNAL_H

#include "strand/model.h"

struct strand_block {
    int norm1_weight, norm1_bias, norm2_weight, norm2_bias;
    int fc_weight, fc_bias, proj_weight, proj_bias;
    strand_mixer mixer;
    /* saved activations, max_T rows each (see forward for which layout uses which) */
    real_t *x, *norm1, *norm1_mean, *norm1_rstd, *mix, *a, *h, *norm2, *norm2_mean, *norm2_rstd, *fc, *act,
        *b;
};

#define PARAM(model, index) ((model)->params + (model)->table.items[(index)].offset)
#define GRAD(model, index) ((model)->grads + (model)->table.items[(index)].offset)

#endif
