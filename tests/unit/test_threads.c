/* parallel.threads: a model's loss and every gradient after forward + backward with 2 threads
 * against 1 thread, on one rank, for windows long enough that every OpenMP loop, OpenBLAS and
 * FFTW split their work. strand's own loops keep their summation order (reductions over rows go
 * through fixed blocks of rows), so models without FFTs must match bit for bit; with FFTs,
 * FFTW's threaded plans may round differently, and the check is a tight relative one. */
#include "test_util.h"

#include "strand/config.h"
#include "strand/dist.h"
#include "strand/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef STRAND_REAL_DOUBLE
#define FFT_TOL 1e-12
#else
#define FFT_TOL 1e-5
#endif

enum { SEQ = 2048 };

/* Loss and gradients (copied into grads, table.total values) of the model of `keys` at `threads`. */
static int run_model(const char *const *keys, int n_keys, int threads, double *loss, real_t **grads,
                     int64_t *count) {
    strand_config config;
    strand_config_defaults(&config);
    for (int i = 0; i < n_keys; i++)
        CHECK(strand_config_set(&config, keys[i]) == STRAND_OK);
    config.seq_len = SEQ;
    config.threads = threads;
    strand_grid grid;
    CHECK(strand_grid_init(&grid, MPI_COMM_WORLD, 1, 1) == STRAND_OK);
    strand_shard shard;
    CHECK(strand_shard_init(&shard, &grid, SEQ, STRAND_LAYOUT_CONTIGUOUS) == STRAND_OK);
    strand_model model;
    int status = strand_model_create(&model, &config, &shard);
    CHECK_MSG(status == STRAND_OK, "create: %s", strand_error_message());
    if (status == STRAND_OK) {
        strand_model_init_params(&model, 5);
        strand_token_t *tokens = malloc(sizeof(strand_token_t) * (SEQ + 1));
        uint64_t x = 99;
        for (int i = 0; i <= SEQ; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            tokens[i] = (strand_token_t)((x >> 33) % 4);
        }
        status = strand_model_forward(&model, tokens, tokens + 1, &shard, loss);
        if (status == STRAND_OK) status = strand_model_backward(&model, tokens, &shard, (real_t)(1.0 / SEQ));
        CHECK_MSG(status == STRAND_OK, "step: %s", strand_error_message());
        *count = model.table.total;
        *grads = malloc(sizeof(real_t) * (size_t)*count);
        memcpy(*grads, model.grads, sizeof(real_t) * (size_t)*count);
        free(tokens);
        strand_model_free(&model);
    }
    strand_shard_free(&shard);
    strand_grid_free(&grid);
    return status;
}

static void check_model(const char *label, const char *const *keys, int n_keys, int has_fft) {
    double loss1 = 0, loss2 = 0;
    real_t *g1 = NULL, *g2 = NULL;
    int64_t n1 = 0, n2 = 0;
    if (run_model(keys, n_keys, 1, &loss1, &g1, &n1) != STRAND_OK ||
        run_model(keys, n_keys, 2, &loss2, &g2, &n2) != STRAND_OK || n1 != n2) {
        CHECK_MSG(0, "%s: the runs failed", label);
    } else if (!has_fft) {
        int64_t differ = 0;
        for (int64_t i = 0; i < n1; i++)
            differ += memcmp(&g1[i], &g2[i], sizeof(real_t)) != 0;
        printf("%s: loss %.17g vs %.17g, %lld of %lld gradients differ\n", label, loss1, loss2,
               (long long)differ, (long long)n1);
        CHECK_MSG(loss1 == loss2, "%s: loss %.17g with 1 thread, %.17g with 2", label, loss1, loss2);
        CHECK_MSG(differ == 0, "%s: %lld gradients differ between 1 and 2 threads", label, (long long)differ);
    } else {
        double num = 0, den = 0;
        for (int64_t i = 0; i < n1; i++) {
            num += ((double)g1[i] - g2[i]) * ((double)g1[i] - g2[i]);
            den += (double)g1[i] * g1[i];
        }
        const double rel = sqrt(num / (den > 0 ? den : 1));
        printf("%s: loss %.17g vs %.17g, gradients' relative difference %.3g\n", label, loss1, loss2, rel);
        CHECK_MSG(fabs(loss1 - loss2) <= FFT_TOL * fabs(loss1), "%s: loss %.17g vs %.17g", label, loss1,
                  loss2);
        CHECK_MSG(rel <= FFT_TOL, "%s: gradients differ by %.3g (bound %.3g)", label, rel, FFT_TOL);
    }
    free(g1);
    free(g2);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    const char *attn[] = {"model.d_model=64", "model.layers=attn,attn", "attn.heads=4", "attn.kv_heads=2"};
    const char *conv[] = {"model.d_model=64", "model.layers=conv,conv", "model.conv_kernel=4"};
    const char *hyena[] = {"model.d_model=64", "model.layers=hyena,hyena", "fft.planner=estimate"};
    const char *hybrid[] = {"model.d_model=64", "model.layers=conv,hyena,attn", "fft.planner=estimate"};
    check_model("attn", attn, 4, 0);
    check_model("conv", conv, 3, 0);
    check_model("hyena", hyena, 3, 1);
    check_model("hybrid", hybrid, 3, 1);
    const int status = test_finish("test_threads");
    MPI_Finalize();
    return status;
}
