/* strand probe jacobian (strand_probe_jacobian) against what must hold:
 *  1. every cell's step Jacobian equals central finite differences of its own forward step;
 *  2. the span Jacobian over the world's SP group (uneven shards at 2 and 3 ranks, spans inside one
 *     rank and across several, both layouts) equals the one rank's (MPI_COMM_SELF) to 1e-10;
 *  3. ornn with phi = identity: every singular value of the span Jacobian is 1 (to 1e-6);
 *  4. rnn with phi = identity: J = W^k (a direct power of W); with W = rho Q (Q orthogonal) every
 *     singular value is rho^k, and rho(W) from dgeev is the init's spectral radius;
 *  5. a wrong block, a non-recurrent block, a span past the window and --lstm-path cell on an rnn
 *     are refused with one line. */
#include "test_util.h"

#include "core/rng.h"
#include "model/mixers/recurrent.h"
#include "model/model_internal.h"
#include "strand/probe.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef STRAND_REAL_DOUBLE
#define TOL_SP 1e-10 /* distributed vs one rank */
#define TOL_EXACT 1e-12
#define TOL_ONE 1e-6
#define FD_EPS 1e-6
#define TOL_FD 1e-6
#else
#define TOL_SP 1e-4
#define TOL_EXACT 1e-4
#define TOL_ONE 1e-4
#define FD_EPS 1e-2
#define TOL_FD 2e-2
#endif

enum { L = 23, C = 8 };
static int world_rank = 0;

typedef struct {
    strand_grid grid;
    strand_shard shard;
    strand_model model;
} probed;

/* A two-block model "conv,<mixer>" over a window of L random bases on comm; block 1 is probed. */
static int build(probed *p, MPI_Comm comm, const char *mixer, const char *extra, int layout) {
    memset(p, 0, sizeof *p);
    strand_config config;
    strand_config_defaults(&config);
    CONFIG_SET(&config, "model.d_model=%d", C);
    CONFIG_SET(&config, "model.mlp_hidden=16");
    CONFIG_SET(&config, "train.seq_len=%d", L);
    CONFIG_SET(&config, "model.layers=conv,%s", mixer);
    if (extra && *extra) {
        char text[256];
        snprintf(text, sizeof text, "%s", extra);
        for (char *item = strtok(text, ";"); item; item = strtok(NULL, ";"))
            CONFIG_SET(&config, "%s", item);
    }
    if (strand_grid_init(&p->grid, comm, 0, 1) != STRAND_OK ||
        strand_shard_init(&p->shard, &p->grid, L, layout) ||
        strand_model_create(&p->model, &config, &p->shard) != STRAND_OK) {
        CHECK_MSG(0, "%s model: %s", mixer, strand_error_message());
        return -1;
    }
    strand_model_init_params(&p->model, 11);
    strand_token_t inputs[L], targets[L];
    for (int64_t i = 0; i < p->shard.T; i++) {
        const uint64_t at = (uint64_t)strand_shard_position(&p->shard, i);
        inputs[i] = (strand_token_t)strand_rng_below(4, 7, at, 0, 0);
        targets[i] = (strand_token_t)strand_rng_below(4, 7, at + 1, 0, 0);
    }
    double loss = 0;
    CHECK(strand_model_forward(&p->model, inputs, targets, &p->shard, &loss) == STRAND_OK);
    return 0;
}

static void release(probed *p) {
    strand_model_free(&p->model);
    strand_shard_free(&p->shard);
    strand_grid_free(&p->grid);
}

static double max_abs(const double *a, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs(a[i]));
    return m;
}

/* 1. The step Jacobian at every position of a one-rank model against finite differences of the
 * cell's forward from the same xp and W. */
static void check_step_jacobians(probed *p, const char *what) {
    const strand_recurrent *r = p->model.blocks[1].mixer.state;
    const int S = r->S, GC = r->G * r->C;
    const real_t *params = p->model.params;
    const real_t *w = r->cell->custom_w ? r->w_eff : params + r->w_off;
    double jac[4 * C * C], fd[4 * C * C];
    real_t prev[2 * C], next[2 * C], saved[4 * C + 1], rec[4 * C];
    double worst = 0, scale = 0;
    for (int64_t row = 0; row < L; row++) {
        const real_t *state_prev = row == 0 ? r->h0 : r->states + (row - 1) * S;
        r->cell->step_jacobian(r, params, w, state_prev, r->states + row * S, r->saved + row * r->K, jac);
        for (int j = 0; j < S; j++) {
            double out[2][2 * C];
            for (int side = 0; side < 2; side++) {
                memcpy(prev, state_prev, sizeof(real_t) * (size_t)S);
                prev[j] += (real_t)(side ? FD_EPS : -FD_EPS);
                if (r->cell->hidden_bias)
                    memcpy(rec, params + r->bh_off, sizeof(real_t) * (size_t)GC);
                else
                    memset(rec, 0, sizeof(real_t) * (size_t)GC);
                for (int i = 0; i < GC; i++)
                    for (int c = 0; c < C; c++)
                        rec[i] += w[i * C + c] * prev[c];
                r->cell->cell_forward(r, params, r->xp + row * GC, rec, prev, next, saved);
                for (int i = 0; i < S; i++)
                    out[side][i] = next[i];
            }
            for (int i = 0; i < S; i++)
                fd[i * S + j] = (out[1][i] - out[0][i]) / (2 * FD_EPS);
        }
        for (int i = 0; i < S * S; i++) {
            worst = fmax(worst, fabs(fd[i] - jac[i]));
            scale = fmax(scale, fabs(jac[i]));
        }
    }
    CHECK_MSG(worst <= TOL_FD * fmax(scale, 1e-3),
              "%s: step Jacobian vs finite differences: %.3g (scale %.3g)", what, worst, scale);
}

/* 2. The world's span Jacobian and singular values against the one rank's. */
static void check_distributed(const char *mixer, const char *extra, int layout, int lstm_path) {
    probed world, self;
    if (build(&world, MPI_COMM_WORLD, mixer, extra, layout) ||
        build(&self, MPI_COMM_SELF, mixer, extra, layout))
        return;
    char what[160];
    snprintf(what, sizeof what, "%s [%s] %s%s", mixer, extra ? extra : "", layout ? "zigzag" : "contiguous",
             lstm_path ? " cell path" : "");
    if (world_rank == 0 && layout == STRAND_LAYOUT_CONTIGUOUS && !lstm_path)
        check_step_jacobians(&self, what);
    static const int64_t spans[][2] = {{0, 22}, {3, 7}, {10, 1}, {5, 12}, {21, 1}, {7, 15}};
    for (size_t s = 0; s < sizeof spans / sizeof *spans; s++) {
        const strand_probe_jacobian_options o = {
            .block = 1, .position = spans[s][0], .span = spans[s][1], .lstm_path = lstm_path};
        strand_probe_jacobian_result a, b;
        const int sa = strand_probe_jacobian(&world.model, &world.shard, &o, &a);
        CHECK_MSG(sa == STRAND_OK, "%s: %s", what, strand_error_message());
        const int sb = strand_probe_jacobian(&self.model, &self.shard, &o, &b);
        CHECK_MSG(sb == STRAND_OK, "%s (one rank): %s", what, strand_error_message());
        if (sa == STRAND_OK && sb == STRAND_OK) {
            const int n = a.n;
            CHECK(a.n == b.n);
            double sdiff = 0;
            for (int i = 0; i < n; i++)
                sdiff = fmax(sdiff, fabs(a.sigma[i] - b.sigma[i]));
            CHECK_MSG(sdiff <= TOL_SP * b.sigma[0],
                      "%s t %lld k %lld: singular values differ by %.3g (max %.3g)", what,
                      (long long)o.position, (long long)o.span, sdiff, b.sigma[0]);
            if (world_rank == 0) {
                double diff = 0;
                for (int64_t i = 0; i < (int64_t)n * n; i++)
                    diff = fmax(diff, fabs(a.jacobian[i] - b.jacobian[i]));
                const double scale = max_abs(b.jacobian, (int64_t)n * n);
                CHECK_MSG(diff <= TOL_SP * scale,
                          "%s t %lld k %lld: J differs from one rank's by %.3g (scale %.3g)", what,
                          (long long)o.position, (long long)o.span, diff, scale);
            }
            CHECK_CLOSE(a.predicted_decay, b.predicted_decay, TOL_SP);
            CHECK_CLOSE(a.measured_decay, b.measured_decay, TOL_SP);
        }
        strand_probe_jacobian_free(&a);
        strand_probe_jacobian_free(&b);
    }
    release(&world);
    release(&self);
}

/* 3. ornn with phi = identity: J is a product of orthogonal matrices. */
static void check_ornn_identity(int layout) {
    probed p;
    if (build(&p, MPI_COMM_WORLD, "ornn", "ornn.activation=identity", layout)) return;
    const strand_probe_jacobian_options o = {.block = 1, .position = 0, .span = L - 1};
    strand_probe_jacobian_result res;
    CHECK_MSG(strand_probe_jacobian(&p.model, &p.shard, &o, &res) == STRAND_OK, "ornn: %s",
              strand_error_message());
    double worst = 0;
    for (int i = 0; res.sigma && i < res.n; i++)
        worst = fmax(worst, fabs(res.sigma[i] - 1));
    CHECK_MSG(res.sigma && worst < TOL_ONE, "ornn identity: max |sigma - 1| = %.3g over k = %d", worst,
              L - 1);
    CHECK_CLOSE(res.radius[0], 1.0, TOL_ONE);
    CHECK_CLOSE(res.predicted_decay, 1.0, 1e-15);
    CHECK_CLOSE(res.measured_decay, 1.0, TOL_ONE);
    if (world_rank == 0) fprintf(stderr, "ornn identity, k = %d: max |sigma - 1| = %.2e\n", L - 1, worst);
    strand_probe_jacobian_free(&res);
    release(&p);
}

/* 4. rnn with phi = identity: J = W^k; with W = rho Q every singular value is rho^k. */
static void check_rnn_identity(double rho) {
    probed p;
    char extra[128];
    snprintf(extra, sizeof extra, "rnn.activation=identity;rnn.spectral_radius=%.17g", rho);
    if (build(&p, MPI_COMM_WORLD, "rnn", extra, STRAND_LAYOUT_CONTIGUOUS)) return;
    const strand_recurrent *r = p.model.blocks[1].mixer.state;
    real_t *w = p.model.params + r->w_off;
    const int k = 17;
    const strand_probe_jacobian_options o = {.block = 1, .position = 4, .span = k};
    strand_probe_jacobian_result res;
    CHECK(strand_probe_jacobian(&p.model, &p.shard, &o, &res) == STRAND_OK);
    CHECK_CLOSE(res.radius[0], rho, TOL_EXACT * 10);
    double power[C * C], tmp[C * C], wd[C * C];
    for (int i = 0; i < C * C; i++)
        wd[i] = power[i] = (double)w[i];
    for (int s = 1; s < k; s++) {
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, C, C, C, 1, wd, C, power, C, 0, tmp, C);
        memcpy(power, tmp, sizeof power);
    }
    if (world_rank == 0 && res.jacobian) {
        double diff = 0;
        for (int i = 0; i < C * C; i++)
            diff = fmax(diff, fabs(res.jacobian[i] - power[i]));
        CHECK_MSG(diff <= TOL_EXACT * max_abs(power, C * C), "rnn identity: J vs W^%d: %.3g", k, diff);
        fprintf(stderr,
                "rnn identity, rho %.2f, k = %d: |J - W^k| %.2e; sigma_max^(1/k) %.4f, predicted %.4f\n", rho,
                k, diff, res.measured_decay, res.predicted_decay);
    }
    CHECK_CLOSE(res.predicted_decay, rho, TOL_EXACT * 10);
    strand_probe_jacobian_free(&res);
    /* W = rho Q, Q a product of plane rotations (orthogonal): the same forward, then sigma = rho^k */
    for (int i = 0; i < C * C; i++)
        w[i] = 0;
    for (int b = 0; b < C; b += 2) {
        const double angle = 0.3 + 0.4 * b, c = cos(angle), s = sin(angle);
        w[b * C + b] = (real_t)(rho * c), w[b * C + b + 1] = (real_t)(-rho * s);
        w[(b + 1) * C + b] = (real_t)(rho * s), w[(b + 1) * C + b + 1] = (real_t)(rho * c);
    }
    strand_token_t inputs[L], targets[L];
    for (int64_t i = 0; i < p.shard.T; i++)
        inputs[i] = targets[i] = (strand_token_t)(i % 4);
    double loss = 0;
    CHECK(strand_model_forward(&p.model, inputs, targets, &p.shard, &loss) == STRAND_OK);
    CHECK(strand_probe_jacobian(&p.model, &p.shard, &o, &res) == STRAND_OK);
    const double want = pow(rho, k);
    double worst = 0;
    for (int i = 0; res.sigma && i < res.n; i++)
        worst = fmax(worst, fabs(res.sigma[i] / want - 1));
    CHECK_MSG(res.sigma && worst < TOL_ONE, "rnn W = rho Q: max |sigma / rho^k - 1| = %.3g", worst);
    CHECK_CLOSE(res.measured_decay, rho, TOL_ONE);
    CHECK_CLOSE(res.radius[0], rho, TOL_ONE);
    strand_probe_jacobian_free(&res);
    release(&p);
}

static void check_refusal(probed *p, strand_probe_jacobian_options o, const char *needle) {
    strand_probe_jacobian_result res;
    const int status = strand_probe_jacobian(&p->model, &p->shard, &o, &res);
    CHECK_MSG(status == STRAND_ERR_INPUT && strstr(strand_error_message(), needle),
              "expected a refusal with '%s', got %d: %s", needle, status, strand_error_message());
    strand_probe_jacobian_free(&res);
}

static void check_refusals(void) {
    probed p;
    if (build(&p, MPI_COMM_WORLD, "rnn", "", STRAND_LAYOUT_CONTIGUOUS)) return;
    check_refusal(&p, (strand_probe_jacobian_options){.block = 2, .span = 3}, "the model has 2 blocks");
    check_refusal(&p, (strand_probe_jacobian_options){.block = 0, .span = 3}, "is a conv block");
    check_refusal(&p, (strand_probe_jacobian_options){.block = 1, .position = 10, .span = 13},
                  "past the window's last position 22");
    check_refusal(&p,
                  (strand_probe_jacobian_options){.block = 1, .span = 3, .lstm_path = STRAND_PROBE_LSTM_CELL},
                  "lstm blocks only");
    release(&p);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    static const struct {
        const char *mixer, *extra;
        int lstm_path;
    } cases[] = {
        {"rnn", "", 0},
        {"rnn", "rnn.activation=identity;rnn.spectral_radius=1.2", 0},
        {"ornn", "ornn.activation=tanh", 0},
        {"ornn", "ornn.activation=modrelu", 0},
        {"lstm", "", 0},
        {"lstm", "lstm.forget_bias=3", STRAND_PROBE_LSTM_CELL},
        {"gru", "gru.update_bias=1", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        for (int layout = 0; layout < 2; layout++)
            check_distributed(cases[i].mixer, cases[i].extra, layout, cases[i].lstm_path);
    for (int layout = 0; layout < 2; layout++)
        check_ornn_identity(layout);
    check_rnn_identity(0.9);
    check_rnn_identity(1.1);
    check_refusals();
    int failures = test_failures;
    MPI_Allreduce(MPI_IN_PLACE, &failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    test_failures = failures;
    const int status = test_finish("test_probe");
    MPI_Finalize();
    return status;
}
