/* A learning test that needs long range: each window starts with a random block X (16 tokens)
 * and a random gap (16 tokens), then repeats them: token t equals token t - 32 for t >= 32. The
 * repeated part is predictable only from tokens 32 positions back; at SP=2 (window 256, ranks
 * hold [0,128) and [128,256)) the sources of rank 1's first 32 positions sit on rank 0. Models of the
 * same width and depth are trained on the same windows; the loss on the repeated part must fall
 * near zero for a long-convolution mixer and stay near 2 bits for the short-conv model, whose
 * receptive field (two kernel-4 convolutions) is 7 tokens.
 *
 *   test_long_range MIXERS...   e.g. test_long_range hyena s4d */
#include "test_util.h"

#include "strand/config.h"
#include "strand/dataset.h"
#include "strand/dist.h"
#include "strand/model.h"
#include "train/optim.h"
#include "core/rng.h"

#include <stdlib.h>
#include <string.h>

enum { WINDOW = 256, DISTANCE = 32, EVAL_WINDOWS = 16 };

/* The window for (stream, index): the same on every rank. */
static void make_window(uint64_t stream, int64_t index, strand_token_t *tokens, int64_t *copy_start) {
    for (int i = 0; i <= WINDOW; i++)
        tokens[i] = i < DISTANCE
                        ? (strand_token_t)strand_rng_below(4, 7, stream, (uint64_t)index, (uint64_t)i)
                        : tokens[i - DISTANCE];
    *copy_start = DISTANCE;
}

/* Trains a model whose blocks are all `mixer` and returns the mean loss (bits) on the copied
 * positions of held-out windows. */
static double train_and_score(const char *mixer, strand_grid *grid) {
    strand_config config;
    strand_config_defaults(&config);
    char layers[64];
    snprintf(layers, sizeof layers, "model.layers=%s,%s", mixer, mixer);
    const char *settings[] = {"model.d_model=32",    layers,
                              "model.mlp_hidden=64", "train.seq_len=256",
                              "train.lr=1e-2",       "train.warmup_steps=20",
                              "train.steps=800",     "fft.planner=estimate",
                              "s4d.state=32",        "hyena.filter_width=32"};
    for (size_t i = 0; i < sizeof settings / sizeof *settings; i++)
        CHECK(strand_config_set(&config, settings[i]) == STRAND_OK);
    strand_shard shard;
    CHECK(strand_shard_init(&shard, grid, WINDOW, STRAND_LAYOUT_CONTIGUOUS) == STRAND_OK);
    strand_model model;
    int status = strand_model_create(&model, &config, &shard);
    CHECK_MSG(status == STRAND_OK, "%s: %s", mixer, strand_error_message());
    if (status != STRAND_OK) return NAN;
    strand_model_init_params(&model, config.seed);
    strand_adamw opt;
    CHECK(strand_adamw_create(&opt, model.table.total) == STRAND_OK);
    strand_token_t window[WINDOW + 1], inputs[WINDOW], targets[WINDOW];
    int64_t copy_start = 0;
    const real_t scale = (real_t)(1.0 / WINDOW);
    for (int64_t step = 0; step < config.steps; step++) {
        make_window(1, step, window, &copy_start);
        for (int64_t i = 0; i < shard.T; i++) {
            inputs[i] = window[shard.start + i];
            targets[i] = window[shard.start + i + 1];
        }
        double loss = 0;
        memset(model.grads, 0, sizeof(real_t) * (size_t)model.table.total);
        CHECK(strand_model_forward(&model, inputs, targets, &shard, &loss) == STRAND_OK);
        CHECK(strand_model_backward(&model, inputs, &shard, scale) == STRAND_OK);
        CHECK(strand_allreduce_sum(grid->world, model.grads, model.table.total) == STRAND_OK);
        double norm = strand_grad_norm(model.grads, model.table.total);
        strand_clip_grads(model.grads, model.table.total, norm, config.grad_clip);
        strand_adamw_update(&opt, &model.table, model.params, model.grads, strand_lr_at(&config, step),
                            &config);
    }
    /* Held-out windows: loss on the positions whose target lies in the copy. */
    double sums[2] = {0, 0};
    for (int64_t w = 0; w < EVAL_WINDOWS; w++) {
        make_window(2, w, window, &copy_start);
        for (int64_t i = 0; i < shard.T; i++) {
            inputs[i] = window[shard.start + i];
            targets[i] = window[shard.start + i + 1];
        }
        double loss = 0;
        CHECK(strand_model_forward(&model, inputs, targets, &shard, &loss) == STRAND_OK);
        for (int64_t i = 0; i < shard.T; i++) {
            const int64_t target_position = shard.start + i + 1;
            if (target_position >= copy_start) {
                sums[0] += model.losses[i];
                sums[1] += 1;
            }
        }
    }
    MPI_Allreduce(MPI_IN_PLACE, sums, 2, MPI_DOUBLE, MPI_SUM, grid->world);
    strand_adamw_free(&opt);
    strand_model_free(&model);
    strand_shard_free(&shard);
    return sums[0] / sums[1] / 0.69314718055994530942;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    strand_grid grid;
    CHECK(strand_grid_init(&grid, MPI_COMM_WORLD, 0, 1) == STRAND_OK);
    const double conv = train_and_score("conv", &grid);
    if (grid.world_rank == 0)
        fprintf(stderr, "copy at distance %d, SP=%d: conv loss on the copy %.3f bits\n", DISTANCE,
                grid.sp_size, conv);
    CHECK_MSG(conv > 1.5, "the short conv cannot see %d tokens back, yet reached %.3f bits", DISTANCE, conv);
    for (int i = 1; i < argc; i++) {
        const double loss = train_and_score(argv[i], &grid);
        if (grid.world_rank == 0)
            fprintf(stderr, "copy at distance %d, SP=%d: %s loss on the copy %.3f bits (conv %.3f)\n",
                    DISTANCE, grid.sp_size, argv[i], loss, conv);
        CHECK_MSG(loss < 0.5 && loss < 0.25 * conv, "%s: %.3f bits on the copy (conv %.3f)", argv[i], loss,
                  conv);
    }
    strand_grid_free(&grid);
    int status = test_finish("test_long_range");
    int any = 0;
    MPI_Allreduce(&status, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any;
}
