/* Sampling: incremental decoding on rank 0 (model_step.h), or re-running the causal forward
 * over a fixed window on every rank (see sample.h). */
#define _POSIX_C_SOURCE 200809L /* nanosleep */
#include "strand/sample.h"

#include "parallel/consistency.h"

#include "strand/ckpt.h"
#include "strand/dataset.h"
#include "data/fasta.h"
#include "strand/model.h"
#include "strand/model_step.h"
#include "core/rng.h"
#include "strand/train.h"

#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The prompt's letters as bases (codes 0..4), encoded with the checkpoint's tokenizer. */
static int prompt_tokens(const char *prompt, strand_tokenizer *codec, strand_token_t *tokens, int64_t *n) {
    const int64_t length = (int64_t)strlen(prompt);
    uint8_t *codes = strand_alloc((size_t)length + 1, "prompt bases");
    if (!codes) return STRAND_ERR_NOMEM;
    int status = STRAND_OK;
    for (int64_t i = 0; i < length && status == STRAND_OK; i++) {
        const char c = (char)toupper((unsigned char)prompt[i]);
        codes[i] = strand_fasta_token_of((unsigned char)c);
        if (!strchr("ACGTN", c) || codes[i] > STRAND_TOKEN_N)
            status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                      "--prompt: character %lld is '%c'; a prompt holds A, C, G, T or N",
                                      (long long)i + 1, prompt[i]);
    }
    if (status == STRAND_OK) status = strand_tokenizer_encode(codec, codes, length, tokens, n);
    strand_free(codes);
    return status;
}

/* May position t draw `token`? Bases of A, C, G and T: the nucleotide tokenizer's four, every
 * token of the others but N and the specials. */
static int drawable(const strand_tokenizer *codec, int token) {
    if (token >= codec->vocab_size || codec->token_bases[token] == 0 || token == STRAND_TOKEN_N) return 0;
    return codec->kind != STRAND_TOKENIZER_NUCLEOTIDE || token < STRAND_TOKEN_N;
}

/* Draw a token from the softmax of logits / temperature over the drawable tokens. */
static strand_token_t draw(const strand_tokenizer *codec, const real_t *logits, double temperature,
                           uint64_t seed, int64_t position) {
    double max = -INFINITY, total = 0;
    int last = 0;
    for (int v = 0; v < codec->vocab_size; v++)
        if (drawable(codec, v)) max = fmax(max, (double)logits[v] / temperature), last = v;
    for (int v = 0; v < codec->vocab_size; v++)
        if (drawable(codec, v)) total += exp((double)logits[v] / temperature - max);
    double u = strand_rng_uniform(seed, STRAND_STREAM_SAMPLE, (uint64_t)position, 0) * total;
    for (int v = 0; v < last; v++) {
        if (!drawable(codec, v)) continue;
        const double p = exp((double)logits[v] / temperature - max);
        if (u < p) return (strand_token_t)v;
        u -= p;
    }
    return (strand_token_t)last;
}

/* The tokenizer a checkpoint stored (older checkpoints: nucleotide). Serial read on each rank. */
static int checkpoint_tokenizer(const char *path, strand_tokenizer *codec) {
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) STRAND_H5_FAIL(path, "cannot open the checkpoint");
    char name[128];
    int found = 0;
    int status = strand_h5_read_string_attribute(file, "tokenizer", name, sizeof name, &found, path);
    if (status == STRAND_OK && found &&
        strncmp(name, STRAND_TASK_TOKENIZER_PREFIX, strlen(STRAND_TASK_TOKENIZER_PREFIX)) == 0)
        status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                  "%s: trained on task tokens (%s), which are not bases: nothing to sample",
                                  path, name);
    else if (status == STRAND_OK)
        status =
            found ? strand_tokenizer_read(file, codec, path) : strand_tokenizer_parse(codec, "nucleotide");
    strand_h5_close(&file);
    return status;
}

typedef struct {
    strand_grid grid;
    strand_shard shard;
    strand_model model;
    strand_model_step step;
    real_t *m, *v;
    strand_token_t *window, *inputs, *targets;
    strand_tokenizer codec;
    strand_token_t *prompt; /* the prompt's tokens */
} sampler;

static int alloc_buffers(sampler *s, int64_t L) {
    STRAND_ALLOC(s->m, s->model.table.total, "optimizer state (read, unused)");
    STRAND_ALLOC(s->v, s->model.table.total, "optimizer state (read, unused)");
    STRAND_ALLOC(s->window, L + 1, "window");
    STRAND_ALLOC(s->inputs, s->shard.T + 1, "inputs");
    STRAND_ALLOC(s->targets, s->shard.T + 1, "targets");
    return STRAND_OK;
}

/* Tokens P..L-1 of s->window, one position at a time: the prompt is fed through the steps
 * (prefill), then each drawn token is fed to draw the next. Local (rank 0). */
static int decode_incremental(sampler *s, const strand_sample_options *o, int64_t P, int64_t L) {
    STRAND_CALL(strand_model_step_init(&s->step, &s->model, L));
    for (int64_t t = 0; t + 1 < L; t++) {
        STRAND_CALL(strand_model_step_forward(&s->step, s->window[t])); /* logits for position t+1 */
        if (t + 1 >= P) s->window[t + 1] = draw(&s->codec, s->step.logits, o->temperature, o->seed, t + 1);
    }
    return STRAND_OK;
}

/* Tokens P..L-1 of s->window by one whole-window forward per token, the window sharded over the
 * SP ranks. Collective. */
static int decode_recompute(sampler *s, const strand_sample_options *o, int64_t P, int64_t L) {
    for (int64_t t = P; t < L; t++)
        s->window[t] = STRAND_TOKEN_PAD;
    for (int64_t t = P; t < L; t++) {
        for (int64_t i = 0; i < s->shard.T; i++)
            s->inputs[i] = s->window[strand_shard_position(&s->shard, i)];
        double loss = 0;
        /* A sampled sequence is one window: no carried state from a previous one. */
        strand_model_reset(&s->model);
        STRAND_CALL(strand_model_forward(&s->model, s->inputs, s->targets, &s->shard, &loss));
        /* The rank holding position t-1 draws token t; the others contribute zero. */
        int token = 0;
        for (int64_t i = 0; i < s->shard.T; i++)
            if (strand_shard_position(&s->shard, i) == t - 1)
                token = draw(&s->codec, s->model.logits + i * s->model.V, o->temperature, o->seed, t);
        STRAND_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &token, 1, MPI_INT, MPI_MAX, s->grid.world));
        s->window[t] = (strand_token_t)token;
    }
    return STRAND_OK;
}

/* Everyone meets rank 0 after its decode. The other ranks poll a non-blocking barrier with 1 ms
 * sleeps instead of spinning in a blocking collective, which on a shared or oversubscribed node
 * would take CPU time from rank 0's decode. */
static int meet_rank0(MPI_Comm world, int rank) {
    MPI_Request request;
    STRAND_CALL_MPI(MPI_Ibarrier(world, &request));
    int done = 0;
    while (!done) {
        STRAND_CALL_MPI(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
        if (!done && rank != 0) nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    return STRAND_OK;
}

static int sample_run(sampler *s, strand_config *config, MPI_Comm world, const strand_sample_options *o,
                      char **out) {
    /* Every rank must sample the same thing: a different option on one rank would leave the
     * ranks in different collectives. */
    char text[4][64];
    snprintf(text[0], sizeof text[0], "%lld", (long long)o->length);
    snprintf(text[1], sizeof text[1], "%llu", (unsigned long long)o->seed);
    snprintf(text[2], sizeof text[2], "%.17g", o->temperature);
    snprintf(text[3], sizeof text[3], "%d", o->mode);
    STRAND_CALL(strand_consistency_config(world, config));
    STRAND_CALL(strand_consistency_value(world, "--checkpoint", o->checkpoint));
    STRAND_CALL(strand_consistency_value(world, "--prompt", o->prompt));
    STRAND_CALL(strand_consistency_value(world, "--length", text[0]));
    STRAND_CALL(strand_consistency_value(world, "--seed", text[1]));
    STRAND_CALL(strand_consistency_value(world, "--temperature", text[2]));
    STRAND_CALL(strand_consistency_value(world, "--mode", text[3]));
    if (!o->prompt[0]) STRAND_FAIL(STRAND_ERR_INPUT, "--prompt is empty: give at least one base");
    STRAND_CALL(strand_agree(world, checkpoint_tokenizer(o->checkpoint, &s->codec)));
    /* Tokens of the prompt: at most one per base. */
    s->prompt = strand_alloc(sizeof *s->prompt * (strlen(o->prompt) + 1), "prompt tokens");
    int64_t P = 0;
    int status = s->prompt ? prompt_tokens(o->prompt, &s->codec, s->prompt, &P) : STRAND_ERR_NOMEM;
    STRAND_CALL(strand_agree(world, status));
    const int64_t L = P + o->length;
    if (!(o->temperature > 0)) STRAND_FAIL(STRAND_ERR_INPUT, "--temperature must be > 0");
    const int incremental = o->mode == STRAND_SAMPLE_INCREMENTAL;
    if (!incremental && o->mode != STRAND_SAMPLE_RECOMPUTE)
        STRAND_FAIL(STRAND_ERR_INPUT, "sample: unknown mode %d", o->mode);
    /* Keys whose 0 means the training window (a filter's position grid): pin them before seq_len
     * becomes the sampling window, or what they size (and so the model) would change. */
    strand_config_pin_window_keys(config);
    /* No backward ever runs, so block inputs need no offload file either. */
    config->offload[0] = '\0';
    config->seq_len = L;
    config->sp = 0, config->dp = 1;
    int rank = 0;
    STRAND_CALL_MPI(MPI_Comm_rank(world, &rank));
    if (incremental) {
        /* Every rank holds the parameters (the checkpoint read is collective); rank 0 decodes. The
         * model's forward buffers are unused, so it is built for a one-token window on one rank. */
        STRAND_CALL(strand_agree(world, strand_grid_init(&s->grid, MPI_COMM_SELF, 1, 1)));
        STRAND_CALL(strand_agree(world, strand_shard_init(&s->shard, &s->grid, 1, STRAND_LAYOUT_CONTIGUOUS)));
    } else {
        STRAND_CALL(strand_agree(world, strand_grid_init(&s->grid, world, 0, 1)));
        STRAND_CALL(
            strand_agree(world, strand_shard_init(&s->shard, &s->grid, L, strand_train_layout(config))));
    }
    STRAND_CALL(strand_agree(world, strand_model_create(&s->model, config, &s->shard)));
    /* Allocation can fail on one rank only: agree before the collective reads. */
    STRAND_CALL(strand_agree(world, alloc_buffers(s, L)));
    strand_ckpt_meta *meta = strand_alloc(sizeof *meta, "checkpoint metadata");
    if (!meta) return strand_agree(world, STRAND_ERR_NOMEM);
    status = strand_ckpt_check(o->checkpoint, &s->model.table, NULL, 0, world, meta);
    strand_free(meta);
    STRAND_CALL(status);
    strand_ckpt_state state = {.table = &s->model.table, .params = s->model.params, .m = s->m, .v = s->v};
    STRAND_CALL(strand_ckpt_read(o->checkpoint, &state, world));
    memcpy(s->window, s->prompt, sizeof *s->prompt * (size_t)P);
    if (incremental) {
        /* Only rank 0 can fail here; the others wait for it, agree, then take its tokens. */
        status = rank == 0 ? decode_incremental(s, o, P, L) : STRAND_OK;
        const int met = meet_rank0(world, rank);
        STRAND_CALL(strand_agree(world, status != STRAND_OK ? status : met));
        for (int64_t done = 0; done < L;) {
            const int n = L - done < INT_MAX ? (int)(L - done) : INT_MAX;
            STRAND_CALL_MPI(MPI_Bcast(s->window + done, n, STRAND_MPI_TOKEN, 0, world));
            done += n;
        }
    } else {
        STRAND_CALL(decode_recompute(s, o, P, L));
    }
    /* The prompt as given, then the bases of the drawn tokens. */
    const size_t prompt_bytes = strlen(o->prompt);
    const int64_t drawn = strand_tokenizer_bases(&s->codec, s->window + P, L - P);
    *out = malloc(prompt_bytes + (size_t)drawn + 1);
    STRAND_CALL(strand_agree(world, *out ? STRAND_OK : STRAND_ERR_NOMEM));
    for (size_t i = 0; i < prompt_bytes; i++)
        (*out)[i] = (char)toupper((unsigned char)o->prompt[i]);
    strand_tokenizer_decode(&s->codec, s->window + P, L - P, *out + prompt_bytes);
    return STRAND_OK;
}

int strand_sample(const strand_config *config, MPI_Comm world, const strand_sample_options *options,
                  char **out) {
    *out = NULL;
    sampler s;
    memset(&s, 0, sizeof s);
    s.grid.world = s.grid.sp_comm = s.grid.dp_comm = MPI_COMM_NULL;
    strand_config c = *config;
    int status = sample_run(&s, &c, world, options, out);
    strand_model_step_free(&s.step);
    strand_free(s.window), strand_free(s.inputs), strand_free(s.targets), strand_free(s.m), strand_free(s.v);
    strand_model_free(&s.model);
    strand_tokenizer_free(&s.codec);
    strand_free(s.prompt);
    if (status != STRAND_OK) free(*out), *out = NULL;
    strand_shard_free(&s.shard);
    strand_grid_free(&s.grid);
    return status;
}
