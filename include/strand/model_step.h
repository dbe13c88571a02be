/* Incremental decoding: the model one position at a time (embedding -> blocks -> final norm ->
 * head), each block's mixer through its step ops (strand_mixer_ops.step_init/step/step_free).
 *
 * Feeding tokens 0..t-1 then token t gives the logits that strand_model_forward computes for
 * row t of the window (up to rounding), without re-running the earlier positions. Per token the
 * position-wise layers cost O(C (C + F)) per block plus O(C V) for the head, and each mixer its
 * own (strand_mixer_ops.step_cost).
 * Single-rank: parameters are replicated, so no communication is needed; the model may have been
 * created for any shard (its forward buffers are not used). */
#ifndef STRAND_MODEL_STEP_H
#define STRAND_MODEL_STEP_H

#include "strand/model.h"

#include <stdint.h>

typedef struct {
    const strand_model *model;
    int64_t max_len;  /* positions the state can hold */
    int64_t position; /* the position the next token goes to */
    void **mixers;    /* (n_layers) each block's mixer step state */
    /* one row each: residual stream, norm output, mixer output, block middle, MLP */
    real_t *x, *y, *norm, *mix, *h, *b, *fc /* (F) */, *act /* (H) */, *mean, *rstd;
    real_t *logits; /* (V) next-token logits after the last step */
} strand_model_step;

/* Prepare to decode one sequence of at most max_len positions with the model's current
 * parameters (they must not change until strand_model_step_free). Fails with STRAND_ERR_CONFIG
 * when a mixer has no incremental mode or cannot hold max_len positions (a filter grid shorter
 * than max_len). Free with strand_model_step_free on success and on failure. */
int strand_model_step_init(strand_model_step *step, const strand_model *model, int64_t max_len);
/* Feed `token` at step->position (then advance it); step->logits (V) receive the logits for the
 * next position. */
int strand_model_step_forward(strand_model_step *step, strand_token_t token);
void strand_model_step_free(strand_model_step *step);

#endif
