/* The global loss of a sharded model for finite-difference checks: every rank runs the forward on
 * its rows and the losses are summed over the communicator, so every rank perturbs the same
 * parameter and sees the same loss. Tests only. */
#ifndef STRAND_TEST_MODEL_LOSS_H
#define STRAND_TEST_MODEL_LOSS_H

#include "strand/model.h"

#include <math.h>

typedef struct {
    strand_model *model;
    strand_shard *shard;
    const strand_token_t *tokens, *targets;
    MPI_Comm comm;
    double scale; /* 1 / tokens in the window: the mean loss */
} model_ctx;

static inline double model_loss(void *arg) {
    model_ctx *ctx = arg;
    double loss = 0;
    if (strand_model_forward(ctx->model, ctx->tokens, ctx->targets, ctx->shard, &loss) != STRAND_OK)
        return NAN;
    MPI_Allreduce(MPI_IN_PLACE, &loss, 1, MPI_DOUBLE, MPI_SUM, ctx->comm);
    return loss * ctx->scale;
}

#endif
