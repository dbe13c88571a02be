/* Incremental decoding, one position at a time (see model_step.h). Each block runs the training
 * forward's block code (strand_block_forward) on one row, with the mixer's step in place of its
 * forward. */
#include "strand/model_step.h"

#include "model/model_internal.h"

#include "kernels/layers.h"

#include <string.h>

int strand_model_step_init(strand_model_step *step, const strand_model *model, int64_t max_len) {
    memset(step, 0, sizeof *step);
    step->model = model;
    step->max_len = max_len;
    if (max_len < 1)
        STRAND_FAIL(STRAND_ERR_INPUT, "incremental decoding: max_len %lld < 1", (long long)max_len);
    for (int l = 0; l < model->n_layers; l++) {
        const strand_mixer_ops *ops = model->blocks[l].mixer.ops;
        if (!ops->step_init || !ops->step || !ops->step_free)
            STRAND_FAIL(STRAND_ERR_CONFIG, "mixer '%s' (block %d) has no incremental mode", ops->name, l);
    }
    const int C = model->C;
    STRAND_ALLOC(step->mixers, model->n_layers, "mixer step states");
    STRAND_ALLOC(step->x, C, "step activations");
    STRAND_ALLOC(step->y, C, "step activations");
    STRAND_ALLOC(step->norm, C, "step activations");
    STRAND_ALLOC(step->mix, C, "step activations");
    STRAND_ALLOC(step->h, C, "step activations");
    STRAND_ALLOC(step->b, C, "step activations");
    STRAND_ALLOC(step->fc, model->F, "step activations");
    STRAND_ALLOC(step->act, model->H, "step activations");
    STRAND_ALLOC(step->mean, 1, "step activations");
    STRAND_ALLOC(step->rstd, 1, "step activations");
    STRAND_ALLOC(step->logits, model->V, "step logits");
    for (int l = 0; l < model->n_layers; l++) {
        const strand_mixer *mixer = &model->blocks[l].mixer;
        STRAND_CALL(mixer->ops->step_init(mixer, model->params, max_len, &step->mixers[l]));
    }
    return STRAND_OK;
}

void strand_model_step_free(strand_model_step *step) {
    if (step->mixers) {
        for (int l = 0; l < step->model->n_layers; l++)
            if (step->mixers[l]) step->model->blocks[l].mixer.ops->step_free(step->mixers[l]);
        strand_free(step->mixers);
    }
    real_t *bufs[] = {step->x,  step->y,   step->norm, step->mix,  step->h,     step->b,
                      step->fc, step->act, step->mean, step->rstd, step->logits};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        strand_free(bufs[i]);
    memset(step, 0, sizeof *step);
}

static void norm_row(const strand_model *model, real_t *out, real_t *mean, real_t *rstd, const real_t *in,
                     int weight, int bias) {
    const real_t eps = (real_t)model->config.norm_eps;
    if (model->layer_norm)
        layernorm_forward(out, mean, rstd, in, PARAM(model, weight), PARAM(model, bias), 1, model->C, eps);
    else
        rmsnorm_forward(out, rstd, in, PARAM(model, weight), 1, model->C, eps);
}

/* A block's mixer at one position. */
typedef struct {
    const strand_mixer *mixer;
    void *state;
    const real_t *params;
    int64_t position;
} step_mixer;

static int step_mixer_apply(void *context, real_t *out, const real_t *in) {
    step_mixer *m = context;
    return m->mixer->ops->step(m->mixer, m->state, m->params, in, out, m->position);
}

int strand_model_step_forward(strand_model_step *step, strand_token_t token) {
    const strand_model *model = step->model;
    const int C = model->C;
    const int64_t t = step->position;
    if (t >= step->max_len)
        STRAND_FAIL(STRAND_ERR_INPUT, "incremental decoding: position %lld is past max_len %lld",
                    (long long)t, (long long)step->max_len);
    if ((int64_t)token >= (int64_t)model->V)
        STRAND_FAIL(STRAND_ERR_INPUT, "incremental decoding: token %d is not in the vocabulary", token);
    embedding_forward(step->x, &token, PARAM(model, model->wte), 1, C); // (1,C)
    for (int l = 0; l < model->n_layers; l++) {
        const strand_block *b = &model->blocks[l];
        step_mixer m = {&b->mixer, step->mixers[l], model->params, t};
        /* One row: norm1 and norm2 share a buffer, post-norm's a lives in y. */
        strand_block_rows r = {.x = step->x,
                               .norm1 = step->norm,
                               .norm1_mean = step->mean,
                               .norm1_rstd = step->rstd,
                               .mix = step->mix,
                               .a = step->y,
                               .h = step->h,
                               .norm2 = step->norm,
                               .norm2_mean = step->mean,
                               .norm2_rstd = step->rstd,
                               .fc = step->fc,
                               .act = step->act,
                               .b = step->b,
                               .hidden_chunk = 1};
        STRAND_CALL(strand_block_forward(model, b, &r, 1, step_mixer_apply, &m, step->y, NULL));
        real_t *swap = step->x; // the block's output is the next block's input
        step->x = step->y;
        step->y = swap;
    }
    const real_t *head_in = step->x;
    if (model->pre_norm) {
        norm_row(model, step->norm, step->mean, step->rstd, step->x, model->final_weight, model->final_bias);
        head_in = step->norm;
    }
    linear_forward(step->logits, head_in, PARAM(model, model->head), NULL, 1, C, model->V); // (1,V)
    step->position++;
    return STRAND_OK;
}
