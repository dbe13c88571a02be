/* Sampling by re-running the causal forward over a fixed window (see sample.h). */
#include "strand/sample.h"

#include "strand/ckpt.h"
#include "strand/dataset.h"
#include "strand/model.h"
#include "strand/rng.h"
#include "strand/train.h"

#include <ctype.h>
#include <math.h>
#include <string.h>

static int prompt_tokens(const char *prompt, uint8_t *tokens) {
    for (int64_t i = 0; prompt[i]; i++) {
        switch (toupper((unsigned char)prompt[i])) {
        case 'A':
            tokens[i] = STRAND_TOKEN_A;
            break;
        case 'C':
            tokens[i] = STRAND_TOKEN_C;
            break;
        case 'G':
            tokens[i] = STRAND_TOKEN_G;
            break;
        case 'T':
            tokens[i] = STRAND_TOKEN_T;
            break;
        case 'N':
            tokens[i] = STRAND_TOKEN_N;
            break;
        default:
            STRAND_FAIL(STRAND_ERR_INPUT, "--prompt: character %lld is '%c'; a prompt holds A, C, G, T or N",
                        (long long)i + 1, prompt[i]);
        }
    }
    return STRAND_OK;
}

/* Draw a base (A, C, G or T) from the softmax of logits / temperature. */
static uint8_t draw(const real_t *logits, double temperature, uint64_t seed, int64_t position) {
    double p[4], max = -INFINITY, total = 0;
    for (int v = 0; v < 4; v++)
        max = fmax(max, (double)logits[v] / temperature);
    for (int v = 0; v < 4; v++)
        total += p[v] = exp((double)logits[v] / temperature - max);
    double u = strand_rng_uniform(seed, STRAND_STREAM_SAMPLE, (uint64_t)position, 0) * total;
    for (int v = 0; v < 3; v++) {
        if (u < p[v]) return (uint8_t)v;
        u -= p[v];
    }
    return STRAND_TOKEN_T;
}

typedef struct {
    strand_grid grid;
    strand_shard shard;
    strand_model model;
    real_t *m, *v;
    uint8_t *window, *inputs, *targets;
} sampler;

static int alloc_buffers(sampler *s, int64_t L) {
    STRAND_ALLOC(s->m, s->model.table.total, "optimizer state (read, unused)");
    STRAND_ALLOC(s->v, s->model.table.total, "optimizer state (read, unused)");
    STRAND_ALLOC(s->window, L + 1, "window");
    STRAND_ALLOC(s->inputs, s->shard.T + 1, "inputs");
    STRAND_ALLOC(s->targets, s->shard.T + 1, "targets");
    return STRAND_OK;
}

static int sample_run(sampler *s, strand_config *config, MPI_Comm world, const strand_sample_options *o,
                      char *out) {
    const int64_t P = (int64_t)strlen(o->prompt), L = P + o->length;
    if (P < 1) STRAND_FAIL(STRAND_ERR_INPUT, "--prompt is empty: give at least one base");
    if (!(o->temperature > 0)) STRAND_FAIL(STRAND_ERR_INPUT, "--temperature must be > 0");
    config->seq_len = L;
    config->sp = 0, config->dp = 1;
    STRAND_CALL(strand_agree(world, strand_grid_init(&s->grid, world, 0, 1)));
    STRAND_CALL(strand_agree(world, strand_shard_init(&s->shard, &s->grid, L, strand_train_layout(config))));
    STRAND_CALL(strand_agree(world, strand_model_create(&s->model, config, &s->shard)));
    /* Allocation can fail on one rank only: agree before the collective reads. */
    STRAND_CALL(strand_agree(world, alloc_buffers(s, L)));
    strand_ckpt_meta *meta = strand_alloc(sizeof *meta, "checkpoint metadata");
    if (!meta) return strand_agree(world, STRAND_ERR_NOMEM);
    int status = strand_ckpt_check(o->checkpoint, &s->model.table, NULL, 0, world, meta);
    strand_free(meta);
    STRAND_CALL(status);
    strand_ckpt_state state = {&s->model.table, s->model.params, s->m, s->v};
    STRAND_CALL(strand_ckpt_read(o->checkpoint, &state, world));
    STRAND_CALL(strand_agree(world, prompt_tokens(o->prompt, s->window)));
    for (int64_t t = P; t < L; t++)
        s->window[t] = STRAND_TOKEN_PAD;
    for (int64_t t = P; t < L; t++) {
        for (int64_t i = 0; i < s->shard.T; i++)
            s->inputs[i] = s->window[strand_shard_position(&s->shard, i)];
        double loss = 0;
        STRAND_CALL(strand_model_forward(&s->model, s->inputs, s->targets, &s->shard, &loss));
        /* The rank holding position t-1 draws token t; the others contribute zero. */
        int token = 0;
        for (int64_t i = 0; i < s->shard.T; i++)
            if (strand_shard_position(&s->shard, i) == t - 1)
                token = draw(s->model.logits + i * s->model.V, o->temperature, o->seed, t);
        STRAND_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &token, 1, MPI_INT, MPI_MAX, s->grid.world));
        s->window[t] = (uint8_t)token;
    }
    for (int64_t t = 0; t < L; t++)
        out[t] = strand_token_char(s->window[t]);
    out[L] = '\0';
    return STRAND_OK;
}

int strand_sample(const strand_config *config, MPI_Comm world, const strand_sample_options *options,
                  char *out) {
    sampler s;
    memset(&s, 0, sizeof s);
    s.grid.world = s.grid.sp_comm = s.grid.dp_comm = MPI_COMM_NULL;
    strand_config c = *config;
    int status = sample_run(&s, &c, world, options, out);
    strand_free(s.window), strand_free(s.inputs), strand_free(s.targets), strand_free(s.m), strand_free(s.v);
    strand_model_free(&s.model);
    strand_shard_free(&s.shard);
    strand_grid_free(&s.grid);
    return status;
}
