/* Whole-model gradient check across ranks: the window is sharded over all ranks of the job (uneven
 * shards, some shorter than the conv halo), the global loss is all-reduced, and every parameter's
 * analytic gradient is compared with central finite differences of that global loss. This checks
 * each layer in place and the halo gradient that crosses rank boundaries. */
#include "gradcheck.h"
#include "model_loss.h"
#include "test_util.h"

#include "strand/config.h"
#include "strand/dataset.h"
#include "strand/dist.h"
#include "strand/model.h"
#include "parallel/offload.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Gradients below 1% of a tensor's largest are compared absolutely against that 1%: the loss is a
 * mean of O(1) terms, so central differences carry ~1e-11 of rounding that would swamp the
 * relative error of a gradient near zero. */
#ifdef STRAND_REAL_DOUBLE
#define MODEL_FLOOR 1e-2
/* Norm-wise relative error below 1e-6 per tensor; per element a looser 1e-4, because a tensor
 * whose gradients are all tiny (s4d's log_a_re: ~1e-5) meets the ~1e-11 rounding of the loss. */
#define MODEL_OK(res) ((res).checked > 0 && (res).norm_rel < GRADCHECK_TOL && (res).max_rel < 1e-4)
#else
/* In float, central differences of a whole model are noisy per element, and the float step (1e-2)
 * moves hyena's sin(10 x) filter by 0.1 rad, a ~1% truncation error; the norm-wise error over a
 * tensor still exposes a wrong backward (it is then O(1)). The double build holds 1e-6. */
#define MODEL_FLOOR GRADCHECK_FLOOR
#define MODEL_OK(res) ((res).checked > 0 && (res).norm_rel < 5e-2)
#endif

/* Set by main: check_config trains through a loss mask (model->loss_weights), as strand train
 * does on a task dataset. Position p counts when p % 3 == 1. */
static int use_mask;

static int counted(int64_t position) {
    return position % 3 == 1;
}

/* The mask's promises: the weighted loss is the sum of the counted positions' own losses, and
 * a target the mask leaves out changes neither the loss nor any gradient. */
static void check_mask(const char *label, strand_model *model, strand_shard *shard, model_ctx *ctx,
                       strand_token_t *targets, const real_t *analytic) {
    double loss = 0, own = 0;
    CHECK(strand_model_forward(model, ctx->tokens, targets, shard, &loss) == STRAND_OK);
    for (int64_t i = 0; i < shard->T; i++)
        own += counted(strand_shard_position(shard, i)) ? (double)model->losses[i] : 0.0;
    CHECK_CLOSE(loss, own, 1e-6 * fmax(1.0, fabs(own)));
    for (int64_t i = 0; i < shard->T; i++)
        if (!counted(strand_shard_position(shard, i))) targets[i] = (strand_token_t)((targets[i] + 1) % 5);
    double changed = 0;
    CHECK(strand_model_forward(model, ctx->tokens, targets, shard, &changed) == STRAND_OK);
    CHECK_MSG(changed == loss, "%s: a masked-out target changed the loss (%.17g, %.17g)", label, loss,
              changed);
    memset(model->grads, 0, sizeof(real_t) * (size_t)model->table.total);
    CHECK(strand_model_backward(model, ctx->tokens, shard, (real_t)ctx->scale) == STRAND_OK);
    CHECK(strand_allreduce_sum(ctx->comm, model->grads, model->table.total) == STRAND_OK);
    int64_t differ = 0;
    for (int64_t j = 0; j < model->table.total; j++)
        differ += model->grads[j] != analytic[j];
    CHECK_MSG(differ == 0, "%s: masked-out targets changed %lld gradients", label, (long long)differ);
}

/* Gradient-checks the model and returns its initial global loss. */
static double check_config(const char *label, const char *overrides[], int n_overrides, int64_t seq_len,
                           int layout) {
    strand_config config;
    strand_config_defaults(&config);
    for (int i = 0; i < n_overrides; i++)
        CHECK(strand_config_set(&config, overrides[i]) == STRAND_OK);
    strand_grid grid;
    CHECK(strand_grid_init(&grid, MPI_COMM_WORLD, 0, 1) == STRAND_OK);
    strand_shard shard;
    CHECK(strand_shard_init(&shard, &grid, seq_len, layout) == STRAND_OK);

    strand_model model;
    CHECK(strand_model_create(&model, &config, &shard) == STRAND_OK);
    strand_model_init_params(&model, 7);
    /* Perturb the ones/zeros initialisations too, so norms and biases are checked away from
     * their special values. */
    uint64_t rng = 12345;
    for (int64_t i = 0; i < model.table.total; i++)
        model.params[i] += (real_t)gradcheck_uniform(&rng, -0.3, 0.3);

    /* The same global token sequence on every rank; each takes the rows of its layout. */
    strand_token_t *global = malloc(sizeof(strand_token_t) * ((size_t)seq_len + 1));
    uint64_t token_rng = 99;
    for (int64_t i = 0; i <= seq_len; i++)
        global[i] = (strand_token_t)(gradcheck_rng_next(&token_rng) % 5);
    strand_token_t *inputs = malloc(sizeof(strand_token_t) * ((size_t)shard.T + 1)),
                   *targets = malloc(sizeof(strand_token_t) * ((size_t)shard.T + 1));
    for (int64_t i = 0; i < shard.T; i++) {
        int64_t position = strand_shard_position(&shard, i);
        inputs[i] = global[position];
        targets[i] = global[position + 1];
    }
    model_ctx ctx = {&model, &shard, inputs, targets, grid.world, 1.0 / (double)seq_len};
    real_t *weights = malloc(sizeof(real_t) * ((size_t)shard.T + 1));
    if (use_mask) {
        int64_t n_counted = 0;
        for (int64_t p = 0; p < seq_len; p++)
            n_counted += counted(p);
        for (int64_t i = 0; i < shard.T; i++)
            weights[i] = counted(strand_shard_position(&shard, i)) ? 1 : 0;
        model.loss_weights = weights;
        ctx.scale = 1.0 / (double)n_counted;
    }

    double loss = 0;
    const double initial_loss = model_loss(&ctx);
    CHECK(strand_model_forward(&model, ctx.tokens, ctx.targets, &shard, &loss) == STRAND_OK);
    memset(model.grads, 0, sizeof(real_t) * (size_t)model.table.total);
    CHECK(strand_model_backward(&model, ctx.tokens, &shard, (real_t)ctx.scale) == STRAND_OK);
    CHECK(strand_allreduce_sum(grid.world, model.grads, model.table.total) == STRAND_OK);

    real_t *analytic = malloc(sizeof(real_t) * (size_t)model.table.total);
    memcpy(analytic, model.grads, sizeof(real_t) * (size_t)model.table.total);
    for (int p = 0; p < model.table.count; p++) {
        const strand_param_info *info = &model.table.items[p];
        gradcheck_result res = gradcheck_run(model.params + info->offset, info->size, analytic + info->offset,
                                             model_loss, &ctx, GRADCHECK_EPS, MODEL_FLOOR, 0);
        char name[128];
        snprintf(name, sizeof name, "%s %s/%s", label, info->layer, info->name);
        if (grid.world_rank == 0 && !MODEL_OK(res)) gradcheck_print(stderr, name, res);
        CHECK_MSG(MODEL_OK(res), "%s (ranks %d)", name, grid.world_size);
    }
    if (use_mask) check_mask(label, &model, &shard, &ctx, targets, analytic);
    if (grid.world_rank == 0)
        fprintf(stderr, "%s: %d tensors checked on %d ranks\n", label, model.table.count, grid.world_size);
    free(weights);
    free(analytic);
    free(global);
    free(inputs);
    free(targets);
    strand_model_free(&model);
    strand_shard_free(&shard);
    strand_grid_free(&grid);
    return initial_loss;
}

/* train.recompute = block keeps only block inputs and re-runs each block's forward before its
 * backward; train.offload also sends the inputs to a file and back. Loss and gradients must be
 * bit-identical to keeping everything. */
static void check_recompute(const char *label, const char *overrides[], int n_overrides, int64_t seq_len,
                            int layout, const char *memory_setting) {
    strand_grid grid;
    CHECK(strand_grid_init(&grid, MPI_COMM_WORLD, 0, 1) == STRAND_OK);
    strand_shard shard;
    CHECK(strand_shard_init(&shard, &grid, seq_len, layout) == STRAND_OK);
    strand_token_t *global = malloc(sizeof(strand_token_t) * ((size_t)seq_len + 1)),
                   *inputs = malloc(sizeof(strand_token_t) * ((size_t)shard.T + 1)),
                   *targets = malloc(sizeof(strand_token_t) * ((size_t)shard.T + 1));
    uint64_t token_rng = 5;
    for (int64_t i = 0; i <= seq_len; i++)
        global[i] = (strand_token_t)(gradcheck_rng_next(&token_rng) % 5);
    for (int64_t i = 0; i < shard.T; i++) {
        inputs[i] = global[strand_shard_position(&shard, i)];
        targets[i] = global[strand_shard_position(&shard, i) + 1];
    }
    double losses[2];
    real_t *grads[2] = {NULL, NULL};
    int64_t total = 0;
    for (int mode = 0; mode < 2; mode++) {
        strand_config config;
        strand_config_defaults(&config);
        for (int i = 0; i < n_overrides; i++)
            CHECK(strand_config_set(&config, overrides[i]) == STRAND_OK);
        CHECK(strand_config_set(&config, mode ? memory_setting : "train.recompute=none") == STRAND_OK);
        strand_model model;
        int status = strand_model_create(&model, &config, &shard);
        CHECK_MSG(status == STRAND_OK, "%s: create: %s", label, strand_error_message());
        strand_model_init_params(&model, 11);
        /* Twice: the second pass must not see anything the first left behind (offload tickets). */
        for (int pass = 0; pass < 2; pass++) {
            memset(model.grads, 0, sizeof(real_t) * (size_t)model.table.total);
            CHECK(strand_model_forward(&model, inputs, targets, &shard, &losses[mode]) == STRAND_OK);
            CHECK(strand_model_backward(&model, inputs, &shard, (real_t)(1.0 / (double)seq_len)) ==
                  STRAND_OK);
        }
        if (mode && model.offload) {
            /* The inputs really went through the file: 2 passes x (n_layers - 3) blocks x 2 ways. */
            int64_t bytes = 0;
            double seconds = 0;
            strand_offload_stats(model.offload, &bytes, &seconds);
            const int64_t expect = 2 * 2 * (model.n_layers - 3) * shard.T * model.C * (int64_t)sizeof(real_t);
            CHECK_MSG(bytes == expect, "%s: offload moved %lld bytes, expected %lld", label, (long long)bytes,
                      (long long)expect);
        }
        total = model.table.total;
        grads[mode] = malloc(sizeof(real_t) * (size_t)total);
        memcpy(grads[mode], model.grads, sizeof(real_t) * (size_t)total);
        strand_model_free(&model);
    }
    CHECK_MSG(losses[0] == losses[1], "%s: loss %.17g with recompute, %.17g without", label, losses[1],
              losses[0]);
    CHECK_MSG(memcmp(grads[0], grads[1], sizeof(real_t) * (size_t)total) == 0, "%s: gradients differ with %s",
              label, memory_setting);
    free(grads[0]), free(grads[1]), free(global), free(inputs), free(targets);
    strand_shard_free(&shard);
    strand_grid_free(&grid);
}

/* The MLP's backward runs in row chunks (genome-length shards would need 8 T C of scratch):
 * chunks of 3 rows must give the gradients of one chunk, up to summation order. */
static void check_mlp_chunks(const char *label, const char *overrides[], int n_overrides, int64_t seq_len) {
    strand_grid grid;
    CHECK(strand_grid_init(&grid, MPI_COMM_WORLD, 0, 1) == STRAND_OK);
    strand_shard shard;
    CHECK(strand_shard_init(&shard, &grid, seq_len, STRAND_LAYOUT_CONTIGUOUS) == STRAND_OK);
    strand_token_t *tokens = malloc(sizeof(strand_token_t) * ((size_t)shard.T + 1)),
                   *targets = malloc(sizeof(strand_token_t) * ((size_t)shard.T + 1));
    for (int64_t i = 0; i < shard.T; i++) {
        const int64_t p = strand_shard_position(&shard, i);
        tokens[i] = (strand_token_t)((p * 7 + 3) % 5);
        targets[i] = (strand_token_t)(((p + 1) * 7 + 3) % 5);
    }
    strand_config config;
    strand_config_defaults(&config);
    for (int i = 0; i < n_overrides; i++)
        CHECK(strand_config_set(&config, overrides[i]) == STRAND_OK);
    strand_model model;
    CHECK(strand_model_create(&model, &config, &shard) == STRAND_OK);
    strand_model_init_params(&model, 3);
    const int64_t total = model.table.total;
    real_t *whole = malloc(sizeof(real_t) * (size_t)total);
    double loss = 0, worst = 0, scale = 0;
    for (int pass = 0; pass < 2; pass++) {
        model.mlp_chunk_rows = pass == 0 ? shard.T : 3;
        memset(model.grads, 0, sizeof(real_t) * (size_t)total);
        CHECK(strand_model_forward(&model, tokens, targets, &shard, &loss) == STRAND_OK);
        CHECK(strand_model_backward(&model, tokens, &shard, (real_t)(1.0 / (double)seq_len)) == STRAND_OK);
        if (pass == 0) memcpy(whole, model.grads, sizeof(real_t) * (size_t)total);
    }
    for (int64_t i = 0; i < total; i++) {
        worst = fmax(worst, fabs((double)model.grads[i] - (double)whole[i]));
        scale = fmax(scale, fabs((double)whole[i]));
    }
    const double tolerance = sizeof(real_t) == sizeof(double) ? 1e-12 : 1e-5;
    CHECK_MSG(worst <= tolerance * scale, "%s: chunked MLP backward differs by %.3g (largest gradient %.3g)",
              label, worst, scale);
    free(whole), free(tokens), free(targets);
    strand_model_free(&model);
    strand_shard_free(&shard);
    strand_grid_free(&grid);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    const char *pre[] = {"model.d_model=8",     "model.layers=conv,conv",   "model.conv_kernel=4",
                         "model.norm=rmsnorm",  "model.norm_position=pre",  "model.mlp=gelu",
                         "model.mlp_hidden=12", "model.tie_embeddings=true"};
    const char *post[] = {"model.d_model=8",      "model.layers=conv,conv",    "model.conv_kernel=3",
                          "model.norm=layernorm", "model.norm_position=post",  "model.mlp=swiglu",
                          "model.mlp_hidden=8",   "model.tie_embeddings=false"};
    const char *wide[] = {"model.d_model=8", "model.layers=conv", "model.conv_kernel=8",
                          "model.mlp_hidden=8"};
    /* Window lengths chosen so that at 2-4 ranks some shards are shorter than the halo. */
    check_config("pre-rmsnorm-gelu-tied", pre, 8, 11, STRAND_LAYOUT_CONTIGUOUS);
    check_config("post-layernorm-swiglu-untied", post, 8, 10, STRAND_LAYOUT_CONTIGUOUS);
    check_config("kernel8-short-shards", wide, 4, 9, STRAND_LAYOUT_CONTIGUOUS);
    /* zigzag: pieces in two places per rank, halos from both neighbours (and from a rank's own
     * first piece on the last rank); 2*SP chunks shorter than the halo at 4 ranks */
    double zigzag = check_config("zigzag-pre", pre, 8, 19, STRAND_LAYOUT_ZIGZAG);
    double contiguous = check_config("contiguous-pre", pre, 8, 19, STRAND_LAYOUT_CONTIGUOUS);
    CHECK_CLOSE(zigzag, contiguous, 1e-5); /* the layout must not change the function */
    zigzag = check_config("zigzag-kernel8", wide, 4, 23, STRAND_LAYOUT_ZIGZAG);
    contiguous = check_config("contiguous-kernel8", wide, 4, 23, STRAND_LAYOUT_CONTIGUOUS);
    CHECK_CLOSE(zigzag, contiguous, 1e-5);
    /* A hybrid model: every mixer kind in one layer list, both conv strategies, both layouts. */
    const char *hybrid[] = {"model.d_model=8",      "model.layers=hyena,attn,s4d,conv",
                            "model.mlp_hidden=8",   "attn.heads=2",
                            "s4d.state=4",          "hyena.filter_width=4",
                            "hyena.frequencies=2",  "fft.planner=estimate",
                            "fft.strategy=alltoall"};
    zigzag = check_config("hybrid-zigzag-alltoall", hybrid, 9, 17, STRAND_LAYOUT_ZIGZAG);
    hybrid[8] = "fft.strategy=fftw-mpi";
    contiguous = check_config("hybrid-contiguous-fftw-mpi", hybrid, 9, 17, STRAND_LAYOUT_CONTIGUOUS);
    CHECK_CLOSE(zigzag, contiguous, 1e-5); /* neither layout nor strategy changes the function */
    /* The loss mask of task datasets: gradients of the masked mean at every rank count. */
    use_mask = 1;
    check_config("masked-hybrid-zigzag", hybrid, 9, 17, STRAND_LAYOUT_ZIGZAG);
    check_config("masked-pre-contiguous", pre, 8, 19, STRAND_LAYOUT_CONTIGUOUS);
    use_mask = 0;
    const char *recompute = "train.recompute=block";
    check_recompute("recompute-hybrid", hybrid, 9, 17, STRAND_LAYOUT_ZIGZAG, recompute);
    /* Repeated mixers share one set of buffers and plans under recompute (each borrows from the
     * first block of its kind): still bit-identical. */
    hybrid[1] = "model.layers=hyena,attn,s4d,hyena,conv,attn,s4d";
    check_recompute("recompute-shared-mixers", hybrid, 9, 17, STRAND_LAYOUT_ZIGZAG, recompute);
    /* Offload: with 7 blocks the first 4 inputs go through the file (the last 3 stay in memory). */
    char offload[512];
    const char *tmp = getenv("TMPDIR");
    snprintf(offload, sizeof offload, "train.offload=%s/strand-test-offload", tmp && tmp[0] ? tmp : "/tmp");
    check_recompute("offload-shared-mixers", hybrid, 9, 17, STRAND_LAYOUT_ZIGZAG, offload);
    post[1] = "model.layers=conv,conv,conv,conv,conv";
    check_recompute("offload-post", post, 8, 10, STRAND_LAYOUT_CONTIGUOUS, offload);
    post[1] = "model.layers=conv,conv";
    hybrid[1] = "model.layers=hyena,attn,s4d,conv";
    check_recompute("recompute-post", post, 8, 10, STRAND_LAYOUT_CONTIGUOUS, recompute);
    check_mlp_chunks("mlp-chunks-pre", pre, 8, 23);
    check_mlp_chunks("mlp-chunks-post-swiglu", post, 8, 23);
    /* With recompute the hidden activations are rebuilt chunk by chunk in backward. */
    const char *pre_recompute[9], *post_recompute[9];
    memcpy(pre_recompute, pre, sizeof pre);
    memcpy(post_recompute, post, sizeof post);
    pre_recompute[8] = post_recompute[8] = "train.recompute=block";
    pre_recompute[1] = post_recompute[1] = "model.layers=conv,conv,conv";
    check_mlp_chunks("mlp-chunks-pre-recompute", pre_recompute, 9, 23);
    check_mlp_chunks("mlp-chunks-post-recompute", post_recompute, 9, 23);
    CHECK_CLOSE(zigzag, contiguous, 1e-5);
    int status = test_finish("test_model");
    int any = 0;
    MPI_Allreduce(&status, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any;
}
