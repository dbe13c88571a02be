/* The learning-test harness (learning_util.h). */
#include "learning_util.h"
#include "test_util.h"

#include "strand/config.h"
#include "strand/dataset.h"
#include "strand/model.h"
#include "train/optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The window's tokens at this rank's positions: inputs[i] = tokens[pos[i]], and their targets. */
static void gather(const learning_task *task, const strand_token_t *window, const int64_t *pos, int64_t T,
                   strand_token_t *inputs, strand_token_t *targets) {
    for (int64_t i = 0; i < T; i++) {
        inputs[i] = window[pos[i]];
        targets[i] = task->target ? task->target(window, pos[i]) : window[pos[i] + 1];
    }
}

enum { SUMS = 5 }; /* answer loss, answer count, all loss, all count, correct answers */

/* sums += the last forward's SUMS */
static void add_losses(const strand_model *model, const learning_task *task, const int64_t *pos,
                       const strand_token_t *targets, int64_t T, double sums[SUMS]) {
    for (int64_t i = 0; i < T; i++) {
        if (task->is_answer(pos[i])) {
            sums[0] += model->losses[i], sums[1] += 1;
            const real_t *l = model->logits + i * model->V;
            int best = 0;
            for (int v = 1; v < model->V; v++)
                best = l[v] > l[best] ? v : best;
            sums[4] += best == (int)targets[i];
        }
        sums[2] += model->losses[i], sums[3] += 1;
    }
}

int learning_train_and_score(const strand_grid *grid, const learning_task *task, const learning_run *run,
                             learning_result *res) {
    const int64_t L = task->length;
    const int batch = run->batch, steps = run->steps;
    strand_config config;
    strand_config_defaults(&config);
    for (int s = 0; s < LEARNING_MAX_SETS && run->sets[s]; s++)
        for (const char *const *set = run->sets[s]; *set; set++)
            STRAND_CALL(strand_config_set(&config, *set));
    snprintf(config.layers, sizeof config.layers, "%s", run->layers);
    config.seq_len = L;
    config.steps = steps;
    strand_shard shard;
    STRAND_CALL(strand_shard_init(&shard, grid, L, run->layout));
    strand_model model;
    int status = strand_model_create(&model, &config, &shard);
    if (status != STRAND_OK) {
        strand_shard_free(&shard);
        return status;
    }
    strand_model_init_params(&model, config.seed);
    if (run->after_init) run->after_init(&model, run->user);
    strand_adamw opt;
    status = strand_adamw_create(&opt, model.table.total);
    if (status != STRAND_OK) {
        strand_model_free(&model);
        strand_shard_free(&shard);
        return status;
    }
    res->params = model.table.total;

    const int64_t T = shard.T;
    strand_token_t *window = malloc(sizeof(strand_token_t) * ((size_t)L + 1)),
                   *inputs = malloc(sizeof(strand_token_t) * ((size_t)T + 1)),
                   *targets = malloc(sizeof(strand_token_t) * ((size_t)T + 1));
    int64_t *pos = malloc(sizeof(int64_t) * ((size_t)T + 1));
    real_t *weights = malloc(sizeof(real_t) * ((size_t)T + 1));
    if (!window || !inputs || !targets || !pos || !weights) status = STRAND_ERR_NOMEM;
    status = strand_agree(grid->world, status); /* no rank trains while another could not */
    for (int64_t i = 0; i < T && status == STRAND_OK; i++) {
        pos[i] = strand_shard_position(&shard, i);
        weights[i] = task->is_answer(pos[i]) ? 1 : 0;
    }
    /* every window's loss is the mean over what counts: its answers (masked) or all L targets */
    int64_t counted = L;
    if (task->masked) {
        model.loss_weights = weights;
        counted = 0;
        for (int64_t t = 0; t < L; t++)
            counted += task->is_answer(t) != 0;
    }
    const real_t loss_scale = (real_t)(1.0 / ((double)batch * (double)(counted > 0 ? counted : 1)));
    const double t0 = strand_now();
    double log_sums[SUMS] = {0};
    for (int step = 0; step < steps && status == STRAND_OK; step++) {
        memset(model.grads, 0, sizeof(real_t) * (size_t)model.table.total);
        for (int b = 0; b < batch && status == STRAND_OK; b++) {
            task->make_window(window, 1, (uint64_t)step * (uint64_t)batch + (uint64_t)b);
            gather(task, window, pos, T, inputs, targets);
            double loss = 0;
            status = strand_model_forward(&model, inputs, targets, &shard, &loss);
            if (status == STRAND_OK && run->log_every > 0)
                add_losses(&model, task, pos, targets, T, log_sums);
            if (status == STRAND_OK) status = strand_model_backward(&model, inputs, &shard, loss_scale);
        }
        if (status != STRAND_OK) break;
        status = strand_allreduce_sum(grid->world, model.grads, model.table.total);
        if (status != STRAND_OK) break;
        const double norm = strand_grad_norm(model.grads, model.table.total);
        strand_clip_grads(model.grads, model.table.total, norm, config.grad_clip);
        strand_adamw_update(&opt, &model.table, model.params, model.grads, strand_lr_at(&config, step),
                            &config);
        if (run->log_every > 0 && (step + 1) % run->log_every == 0) {
            status = strand_allreduce_sum_double(grid->world, log_sums, SUMS);
            if (status == STRAND_OK && grid->world_rank == 0)
                fprintf(
                    stderr,
                    "  %s step %d: answer %.4f bits, accuracy %.4f, all %.4f bits, grad norm %.3g, %.1f s\n",
                    run->layers, step + 1, log_sums[0] / fmax(log_sums[1], 1) / log(2.0),
                    log_sums[4] / fmax(log_sums[1], 1), log_sums[2] / fmax(log_sums[3], 1) / log(2.0), norm,
                    strand_now() - t0);
            memset(log_sums, 0, sizeof log_sums);
        }
    }
    res->seconds = strand_now() - t0;
    /* Held-out windows (another stream): mean loss over the answer part and over everything. */
    double sums[SUMS] = {0};
    const int eval_windows = run->eval_windows > 0 ? run->eval_windows : 16;
    for (int w = 0; w < eval_windows && status == STRAND_OK; w++) {
        task->make_window(window, 2, (uint64_t)w);
        gather(task, window, pos, T, inputs, targets);
        double loss = 0;
        status = strand_model_forward(&model, inputs, targets, &shard, &loss);
        if (status == STRAND_OK) add_losses(&model, task, pos, targets, T, sums);
    }
    if (status == STRAND_OK) status = strand_allreduce_sum_double(grid->world, sums, SUMS);
    res->answer_bits = sums[0] / fmax(sums[1], 1) / log(2.0);
    res->answer_accuracy = sums[4] / fmax(sums[1], 1);
    res->all_bits = sums[2] / fmax(sums[3], 1) / log(2.0);
    free(window), free(inputs), free(targets), free(pos), free(weights);
    strand_adamw_free(&opt);
    strand_model_free(&model);
    strand_shard_free(&shard);
    return status;
}

static int run_suite(const strand_grid *grid, const learning_suite *suite, int argc, char **argv,
                     learning_result *res, int *ran) {
    enum { MAX_EXTRA = 64 };
    const int steps = argc > 1 ? atoi(argv[1]) : suite->steps;
    const char *extra[MAX_EXTRA + 1];
    int n_extra = 0, only = 0;
    for (int m = 0; m < suite->n_models; m++)
        ran[m] = 0;
    for (int a = 2; a < argc; a++) {
        if (strchr(argv[a], '=')) {
            if (n_extra < MAX_EXTRA) extra[n_extra++] = argv[a];
            continue;
        }
        for (int m = 0; m < suite->n_models; m++)
            if (strcmp(argv[a], suite->models[m].name) == 0) ran[m] = 1, only = 1;
    }
    extra[n_extra] = NULL;
    const char *log = suite->log_env ? getenv(suite->log_env) : NULL;
    if (grid->world_size != 2 && grid->world_rank == 0)
        fprintf(stderr, "%s: meant for 2 ranks (running on %d)\n", suite->test, grid->world_size);
    for (int m = 0; m < suite->n_models; m++) {
        if (only && !ran[m]) continue;
        ran[m] = 0;
        learning_run run = {.layers = suite->models[m].layers,
                            .layout = suite->layout,
                            .steps = steps,
                            .batch = suite->batch,
                            .sets = {suite->defaults, suite->models[m].sets, extra},
                            .eval_windows = suite->eval_windows,
                            .log_every = log ? atoi(log) : 0};
        STRAND_CALL(learning_train_and_score(grid, suite->task, &run, &res[m]));
        ran[m] = 1;
    }
    if (grid->world_rank == 0) {
        fprintf(stderr, "%s, %d ranks, %d steps x %d windows of %lld: loss on the answer (bits)\n",
                suite->title, grid->world_size, steps, suite->batch, (long long)suite->task->length);
        for (int m = 0; m < suite->n_models; m++)
            if (ran[m])
                fprintf(stderr,
                        "  %-16s %.4f   accuracy %.4f   (all positions %.4f, %lld parameters, %.1f s)\n",
                        suite->models[m].name, res[m].answer_bits, res[m].answer_accuracy, res[m].all_bits,
                        (long long)res[m].params, res[m].seconds);
    }
    return STRAND_OK;
}

int learning_suite_main(const learning_suite *suite, int argc, char **argv) {
    enum { MAX_MODELS = 16 };
    MPI_Init(&argc, &argv);
    strand_grid grid;
    CHECK(strand_grid_init(&grid, MPI_COMM_WORLD, 0, 1) == STRAND_OK);
    learning_result res[MAX_MODELS] = {{0}};
    int ran[MAX_MODELS] = {0};
    CHECK(suite->n_models <= MAX_MODELS);
    if (suite->n_models <= MAX_MODELS) {
        const int status = run_suite(&grid, suite, argc, argv, res, ran);
        CHECK_MSG(status == STRAND_OK, "training: %s", strand_error_message());
    }
    for (int m = 0; m < suite->n_models && m < MAX_MODELS; m++) {
        const learning_model *model = &suite->models[m];
        if (!ran[m]) continue;
        if (model->max_bits > 0)
            CHECK_MSG(res[m].answer_bits < model->max_bits,
                      "%s did not learn the task: %.4f bits (must be < %g)", model->layers,
                      res[m].answer_bits, model->max_bits);
        if (model->min_bits > 0)
            CHECK_MSG(res[m].answer_bits > model->min_bits,
                      "%s solved what it should not be able to: %.4f bits (must stay > %g)", model->layers,
                      res[m].answer_bits, model->min_bits);
        if (model->min_accuracy > 0)
            CHECK_MSG(res[m].answer_accuracy > model->min_accuracy, "%s: answer accuracy %.4f (must be > %g)",
                      model->name, res[m].answer_accuracy, model->min_accuracy);
        if (model->max_accuracy > 0)
            CHECK_MSG(res[m].answer_accuracy < model->max_accuracy,
                      "%s: answer accuracy %.4f (must stay < %g)", model->name, res[m].answer_accuracy,
                      model->max_accuracy);
    }
    strand_grid_free(&grid);
    int failed = test_finish(suite->test), any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any;
}
