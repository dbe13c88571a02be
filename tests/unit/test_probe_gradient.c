/* strand probe gradient (strand_probe_gradient) against what must hold:
 *  1. the curve g(k) over the world's SP group (uneven shards at 2, 3 and 4 ranks, both layouts)
 *     equals one rank's (MPI_COMM_SELF) to 1e-10 relative in double;
 *  2. one rnn block with phi = identity and W at spectral radius 0.9: the MLP and norms are
 *     position-wise, so from x_(T-k) to loss_T the only path for k >= 1 is W^k (the residual adds
 *     k = 0 only): the per-step fit over k >= 1 is 0.9 +- 0.02;
 *  3. d + 1 dilated blocks of kernel K with dilations 1, 2, ..., 2^d see R = (K-1)(2^(d+1)-1)+1
 *     positions: g(R-1) > 0 and g(k) is exactly 0 for every k >= R, at one rank and at the world's
 *     (the history then spans every rank);
 *  4. a position outside the window is refused. */
#include "test_util.h"

#include "core/rng.h"
#include "strand/probe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef STRAND_REAL_DOUBLE
#define TOL_SP 1e-10
#else
#define TOL_SP 1e-4
#endif

static int world_rank = 0;

typedef struct {
    strand_grid grid;
    strand_shard shard;
    strand_model model;
} probed;

/* A model of `layers` over a window of L tokens on comm, parameters from seed 11. */
static int build(probed *p, MPI_Comm comm, const char *layers, const char *extra, int64_t L, int C,
                 int layout) {
    memset(p, 0, sizeof *p);
    strand_config config;
    strand_config_defaults(&config);
    CONFIG_SET(&config, "model.d_model=%d", C);
    CONFIG_SET(&config, "model.mlp_hidden=16");
    CONFIG_SET(&config, "train.seq_len=%lld", (long long)L);
    CONFIG_SET(&config, "model.layers=%s", layers);
    if (extra && *extra) {
        char text[256];
        snprintf(text, sizeof text, "%s", extra);
        for (char *item = strtok(text, ";"); item; item = strtok(NULL, ";"))
            CONFIG_SET(&config, "%s", item);
    }
    if (strand_grid_init(&p->grid, comm, 0, 1) != STRAND_OK ||
        strand_shard_init(&p->shard, &p->grid, L, layout) != STRAND_OK ||
        strand_model_create(&p->model, &config, &p->shard) != STRAND_OK) {
        CHECK_MSG(0, "%s model: %s", layers, strand_error_message());
        return -1;
    }
    strand_model_init_params(&p->model, 11);
    return 0;
}

static void release(probed *p) {
    strand_model_free(&p->model);
    strand_shard_free(&p->shard);
    strand_grid_free(&p->grid);
}

/* g (position + 1) for random bases chosen by global position (the same window at any SP). */
static int curve(probed *p, int64_t position, double *g) {
    const int64_t T = p->shard.T;
    strand_token_t *inputs = calloc((size_t)T + 1, sizeof *inputs),
                   *targets = calloc((size_t)T + 1, sizeof *targets);
    for (int64_t i = 0; i < T; i++) {
        const uint64_t at = (uint64_t)strand_shard_position(&p->shard, i);
        inputs[i] = (strand_token_t)strand_rng_below(4, 7, at, 0, 0);
        targets[i] = (strand_token_t)strand_rng_below(4, 7, at + 1, 0, 0);
    }
    const int status = strand_probe_gradient(&p->model, &p->shard, inputs, targets, position, g);
    CHECK_MSG(status == STRAND_OK, "probe gradient: %s", strand_error_message());
    free(inputs), free(targets);
    return status;
}

/* 1. The world's curve against one rank's. */
static void check_distributed(const char *layers, const char *extra, int64_t L, int layout,
                              int64_t position) {
    probed world, self;
    if (build(&world, MPI_COMM_WORLD, layers, extra, L, 8, layout)) return;
    if (build(&self, MPI_COMM_SELF, layers, extra, L, 8, layout)) {
        release(&world);
        return;
    }
    const int64_t n = position + 1;
    double *a = calloc((size_t)n, sizeof *a), *b = calloc((size_t)n, sizeof *b);
    if (curve(&world, position, a) == STRAND_OK && curve(&self, position, b) == STRAND_OK) {
        double diff = 0, scale = 0;
        for (int64_t k = 0; k < n; k++)
            diff = fmax(diff, fabs(a[k] - b[k])), scale = fmax(scale, fabs(b[k]));
        CHECK_MSG(scale > 0 && diff <= TOL_SP * scale,
                  "%s [%s] %s T %lld: g differs from one rank's by %.3g (max %.3g)", layers, extra,
                  layout ? "zigzag" : "contiguous", (long long)position, diff, scale);
        /* causality: a curve that is all zeros past k = 0 would pass the comparison vacuously */
        double past = 0;
        for (int64_t k = 1; k < n; k++)
            past = fmax(past, b[k]);
        CHECK_MSG(past > 0, "%s: g(k) = 0 for every k >= 1", layers);
    }
    free(a), free(b);
    release(&world);
    release(&self);
}

/* 2. rnn, phi = identity, rho(W) = 0.9: per-step decay 0.9. */
static void check_rnn_decay(void) {
    const int64_t L = 160;
    probed p;
    if (build(&p, MPI_COMM_WORLD, "rnn", "rnn.activation=identity;rnn.spectral_radius=0.9", L, 8,
              STRAND_LAYOUT_CONTIGUOUS))
        return;
    double g[160], per_step = 0, power = 0;
    if (curve(&p, L - 1, g) == STRAND_OK) {
        const int64_t m = strand_probe_gradient_fit(g, L, &per_step, &power);
        CHECK_MSG(m == L - 1, "rnn fit over %lld points, want %lld", (long long)m, (long long)L - 1);
        CHECK_MSG(fabs(per_step - 0.9) <= 0.02, "rnn identity rho 0.9: fitted decay per step %.4f", per_step);
        if (world_rank == 0)
            fprintf(stderr,
                    "rnn identity rho 0.9: per step %.4f, per decade slope %.3f, g(1) %.3g, g(%lld) %.3g\n",
                    per_step, power, g[1], (long long)L - 1, g[L - 1]);
    }
    release(&p);
}

/* 3. The receptive field of a dilated stack, exactly. */
static void check_receptive_field(MPI_Comm comm, int K, int d) {
    const int64_t R = (int64_t)(K - 1) * ((INT64_C(1) << (d + 1)) - 1) + 1, L = R + 5;
    char layers[256] = "dilated", extra[64];
    for (int i = 0; i < d; i++)
        strcat(layers, ",dilated");
    snprintf(extra, sizeof extra, "dilated.kernel=%d", K);
    probed p;
    if (build(&p, comm, layers, extra, L, 8, STRAND_LAYOUT_CONTIGUOUS)) return;
    double *g = calloc((size_t)L, sizeof *g);
    if (curve(&p, L - 1, g) == STRAND_OK) {
        int64_t nonzero_past = -1;
        for (int64_t k = R; k < L; k++)
            if (g[k] != 0 && nonzero_past < 0) nonzero_past = k;
        CHECK_MSG(g[R - 1] > 0, "K %d d %d (R %lld): g(R-1) = %g, want > 0", K, d, (long long)R, g[R - 1]);
        CHECK_MSG(nonzero_past < 0, "K %d d %d (R %lld): g(%lld) = %g, want exactly 0", K, d, (long long)R,
                  (long long)nonzero_past, nonzero_past < 0 ? 0.0 : g[nonzero_past]);
    }
    free(g);
    release(&p);
}

static void check_refusal(void) {
    probed p;
    if (build(&p, MPI_COMM_WORLD, "conv", "", 12, 8, STRAND_LAYOUT_CONTIGUOUS)) return;
    double g[16];
    strand_token_t tokens[16] = {0};
    const int status = strand_probe_gradient(&p.model, &p.shard, tokens, tokens, 12, g);
    CHECK_MSG(status == STRAND_ERR_INPUT && strstr(strand_error_message(), "outside the window (0 to 11)"),
              "position 12 of 12: got %d: %s", status, strand_error_message());
    release(&p);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    check_distributed("conv,rnn", "", 41, STRAND_LAYOUT_CONTIGUOUS, 40);
    check_distributed("conv,rnn", "", 41, STRAND_LAYOUT_CONTIGUOUS, 17);
    check_distributed("dilated,dilated,dilated", "dilated.kernel=3", 37, STRAND_LAYOUT_CONTIGUOUS, 36);
    check_distributed("dilated,conv,dilated", "", 37, STRAND_LAYOUT_ZIGZAG, 30);
    check_distributed("lstm,gru", "", 29, STRAND_LAYOUT_CONTIGUOUS, 28);
    check_rnn_decay();
    for (int K = 2; K <= 4; K++)
        for (int d = 0; d <= 6; d++) {
            check_receptive_field(MPI_COMM_SELF, K, d);
            check_receptive_field(MPI_COMM_WORLD, K, d);
        }
    check_refusal();
    int failures = test_failures;
    MPI_Allreduce(MPI_IN_PLACE, &failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    test_failures = failures;
    const int status = test_finish("test_probe_gradient");
    MPI_Finalize();
    return status;
}
