/* Incremental decoding (model_step.h, the mixers' step ops) against the full causal forward: small
 * models of every mixer alone and a hybrid, both norm positions, GQA with a sliding window for
 * attention, random (perturbed) parameters and a random token sequence. The logits of the step
 * after feeding token t must equal row t of strand_model_forward's logits (SP = 1). Also: the
 * position contract and length limits are enforced. */
#include "gradcheck.h"
#include "test_util.h"

#include "strand/config.h"
#include "strand/dataset.h"
#include "strand/dist.h"
#include "strand/model.h"
#include "strand/model_step.h"

#include <stdlib.h>
#include <string.h>

/* Relative to the largest logit of the row: the mixers' step paths sum in another order than the
 * forward (direct sums against FFT convolutions, one softmax pass against online tiles). */
#ifdef STRAND_REAL_DOUBLE
#define STEP_TOL 1e-9
#else
#define STEP_TOL 1e-3
#endif

enum { SEQ = 40, MAX_OVERRIDES = 16 };

/* Build the model of (base, extra) overrides for a window of SEQ tokens and compare every
 * position. Returns the largest relative error seen. */
static double check_step(const char *label, const char *const *base, int n_base, const char *const *extra,
                         int n_extra) {
    strand_config config;
    strand_config_defaults(&config);
    for (int i = 0; i < n_base; i++)
        CHECK(strand_config_set(&config, base[i]) == STRAND_OK);
    for (int i = 0; i < n_extra; i++)
        CHECK(strand_config_set(&config, extra[i]) == STRAND_OK);
    config.seq_len = SEQ;
    strand_grid grid;
    CHECK(strand_grid_init(&grid, MPI_COMM_WORLD, 1, 1) == STRAND_OK);
    strand_shard shard;
    CHECK(strand_shard_init(&shard, &grid, SEQ, STRAND_LAYOUT_CONTIGUOUS) == STRAND_OK);
    strand_model model;
    int status = strand_model_create(&model, &config, &shard);
    CHECK_MSG(status == STRAND_OK, "%s: create: %s", label, strand_error_message());
    if (status != STRAND_OK) return INFINITY;
    strand_model_init_params(&model, 21);
    /* Away from the ones/zeros initialisations, so norms and biases take part. */
    uint64_t rng = 777;
    for (int64_t i = 0; i < model.table.total; i++)
        model.params[i] += (real_t)gradcheck_uniform(&rng, -0.3, 0.3);

    strand_token_t tokens[SEQ + 1];
    uint64_t token_rng = 4242;
    for (int i = 0; i <= SEQ; i++)
        tokens[i] = (strand_token_t)(gradcheck_rng_next(&token_rng) % STRAND_VOCAB_SIZE);
    double loss = 0;
    CHECK(strand_model_forward(&model, tokens, tokens + 1, &shard, &loss) == STRAND_OK);
    const int V = model.V;
    real_t *logits = malloc(sizeof(real_t) * SEQ * (size_t)V);
    memcpy(logits, model.logits, sizeof(real_t) * SEQ * (size_t)V);

    strand_model_step step;
    status = strand_model_step_init(&step, &model, SEQ);
    CHECK_MSG(status == STRAND_OK, "%s: step init: %s", label, strand_error_message());
    double worst = 0;
    for (int t = 0; t < SEQ && status == STRAND_OK; t++) {
        status = strand_model_step_forward(&step, tokens[t]);
        CHECK_MSG(status == STRAND_OK, "%s: step %d: %s", label, t, strand_error_message());
        double scale = 0, diff = 0;
        for (int v = 0; v < V; v++) {
            scale = fmax(scale, fabs((double)logits[t * V + v]));
            diff = fmax(diff, fabs((double)step.logits[v] - (double)logits[t * V + v]));
        }
        const double rel = diff / fmax(scale, 1e-300);
        worst = fmax(worst, rel);
        CHECK_MSG(rel <= STEP_TOL,
                  "%s: position %d: step logits differ from the forward's by %.3e (relative)", label, t, rel);
    }
    /* Past max_len: refused, not written out of bounds. */
    if (status == STRAND_OK) CHECK(strand_model_step_forward(&step, tokens[0]) == STRAND_ERR_INPUT);
    strand_model_step_free(&step);
    fprintf(stderr, "%s: largest relative error %.3e over %d positions\n", label, worst, SEQ);

    free(logits);
    strand_model_free(&model);
    strand_shard_free(&shard);
    strand_grid_free(&grid);
    return worst;
}

/* Each mixer's position contract on its own: positions in order, below max_len. */
static void check_positions(const char *name, const char *const *keys, int n_keys) {
    strand_config config;
    strand_config_defaults(&config);
    for (int i = 0; i < n_keys; i++)
        CHECK(strand_config_set(&config, keys[i]) == STRAND_OK);
    config.seq_len = 8;
    strand_grid grid;
    CHECK(strand_grid_init(&grid, MPI_COMM_WORLD, 1, 1) == STRAND_OK);
    strand_shard shard;
    CHECK(strand_shard_init(&shard, &grid, 8, STRAND_LAYOUT_CONTIGUOUS) == STRAND_OK);
    strand_param_table table = {0};
    strand_mixer mixer;
    strand_plan plan;
    CHECK(strand_mixer_create(&mixer, strand_mixer_find(name), 8, &config, &table, "m") == STRAND_OK);
    CHECK(strand_mixer_setup_alone(&mixer, &shard, &plan) == STRAND_OK);
    real_t *params = calloc((size_t)table.total, sizeof(real_t));
    void *state = NULL;
    CHECK(mixer.ops->step_init(&mixer, params, 4, &state) == STRAND_OK);
    real_t in[8] = {0}, out[8];
    CHECK_MSG(mixer.ops->step(&mixer, state, params, in, out, 1) == STRAND_ERR_INPUT,
              "mixer %s accepted position 1 first", name);
    for (int t = 0; t < 4; t++)
        CHECK(mixer.ops->step(&mixer, state, params, in, out, t) == STRAND_OK);
    CHECK_MSG(mixer.ops->step(&mixer, state, params, in, out, 4) == STRAND_ERR_INPUT,
              "mixer %s accepted a position past max_len", name);
    mixer.ops->step_free(state);
    mixer.ops->destroy(&mixer);
    strand_plan_free(&plan);
    free(params);
    strand_params_free(&table);
    strand_shard_free(&shard);
    strand_grid_free(&grid);
}

static void check_both_norms(const char *name, const char *const *base, int n_base) {
    const char *pre[] = {"model.norm_position=pre", "model.norm=rmsnorm", "model.mlp=gelu",
                         "model.tie_embeddings=true"};
    const char *post[] = {"model.norm_position=post", "model.norm=layernorm", "model.mlp=swiglu",
                          "model.tie_embeddings=false"};
    char label[96];
    snprintf(label, sizeof label, "%s-pre-rmsnorm-gelu", name);
    check_step(label, base, n_base, pre, 4);
    snprintf(label, sizeof label, "%s-post-layernorm-swiglu", name);
    check_step(label, base, n_base, post, 4);
}

/* A hyena block cannot decode past its filter's grid (hyena.max_len). */
static void check_hyena_limit(void) {
    strand_config config;
    strand_config_defaults(&config);
    const char *keys[] = {"model.d_model=8", "model.layers=hyena", "hyena.filter_width=4",
                          "hyena.max_len=16"};
    for (int i = 0; i < 4; i++)
        CHECK(strand_config_set(&config, keys[i]) == STRAND_OK);
    config.seq_len = 16;
    strand_grid grid;
    CHECK(strand_grid_init(&grid, MPI_COMM_WORLD, 1, 1) == STRAND_OK);
    strand_shard shard;
    CHECK(strand_shard_init(&shard, &grid, 16, STRAND_LAYOUT_CONTIGUOUS) == STRAND_OK);
    strand_model model;
    CHECK(strand_model_create(&model, &config, &shard) == STRAND_OK);
    strand_model_init_params(&model, 3);
    strand_model_step step;
    CHECK(strand_model_step_init(&step, &model, 16) == STRAND_OK);
    strand_model_step_free(&step);
    CHECK(strand_model_step_init(&step, &model, 17) == STRAND_ERR_CONFIG);
    CHECK(strstr(strand_error_message(), "hyena.max_len") != NULL);
    strand_model_step_free(&step);
    strand_model_free(&model);
    strand_shard_free(&shard);
    strand_grid_free(&grid);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    const char *conv[] = {"model.d_model=8", "model.layers=conv,conv,conv", "model.conv_kernel=4",
                          "model.mlp_hidden=12"};
    check_both_norms("conv", conv, 4);
    const char *s4d[] = {"model.d_model=8", "model.layers=s4d,s4d", "s4d.state=4", "model.mlp_hidden=8"};
    check_both_norms("s4d", s4d, 4);
    /* GQA (4 query heads over 2 K/V heads) with a window shorter than the sequence, so the cache
     * wraps; segment memory is on (the first window has none, like a sampled sequence). */
    const char *attn[] = {"model.d_model=8",   "model.layers=attn,attn", "attn.heads=4",
                          "attn.kv_heads=2",   "attn.window=7",          "attn.segment_memory=true",
                          "model.mlp_hidden=8"};
    check_both_norms("attn-gqa-window", attn, 7);
    const char *attn_full[] = {"model.d_model=8", "model.layers=attn,attn", "attn.heads=2", "attn.kv_heads=1",
                               "model.mlp_hidden=8"};
    check_both_norms("attn-full", attn_full, 5);
    /* A grid longer than the sequence (positions are t_l = l / (Lmax - 1) whatever the length). */
    const char *hyena[] = {"model.d_model=8",     "model.layers=hyena,hyena", "hyena.filter_width=4",
                           "hyena.frequencies=2", "hyena.max_len=64",         "hyena.short_kernel=3",
                           "model.mlp_hidden=8"};
    check_both_norms("hyena", hyena, 7);
    const char *hybrid[] = {"model.d_model=8",    "model.layers=hyena,attn,s4d,conv",
                            "model.mlp_hidden=8", "attn.heads=2",
                            "attn.kv_heads=1",    "attn.window=9",
                            "s4d.state=4",        "hyena.filter_width=4",
                            "hyena.frequencies=2"};
    check_both_norms("hybrid", hybrid, 9);
    /* train.recompute = block: blocks of one kind share forward buffers; steps must not care. */
    const char *shared[] = {"model.d_model=8",     "model.layers=hyena,attn,s4d,conv,hyena,attn,s4d,conv",
                            "model.mlp_hidden=8",  "attn.heads=2",
                            "s4d.state=4",         "hyena.filter_width=4",
                            "hyena.frequencies=2", "train.recompute=block"};
    check_both_norms("hybrid-recompute", shared, 8);
    check_hyena_limit();
    const char *small[] = {"model.d_model=8", "attn.heads=2", "s4d.state=4", "hyena.filter_width=4"};
    const char *names[] = {"conv", "s4d", "attn", "hyena"};
    for (int i = 0; i < 4; i++)
        check_positions(names[i], small, 4);
    const int status = test_finish("test_model_step");
    MPI_Finalize();
    return status;
}
