/* Mixer s4d: initialisations (LegS eigenvalues against closed forms), kernel generation against
 * the direct cexp formula (recurrence drift bound), a rank's kernel rows against the whole-window
 * kernel, finite differences of the kernel's backward and of the whole mixer across ranks (every
 * parameter and the input, both conv strategies, both layouts, and scan mode), the recurrent step
 * mode against the convolution mode, and scan mode (s4d.mode = scan) against conv mode on the same
 * parameters: outputs, din and every gradient over a window whose pieces outlast the fast channels'
 * fix-up truncation, and the carried state (s4d.carry) against conv over both windows. Runs at any
 * number of ranks (one SP group over the world). */
#include "gradcheck.h"
#include "model_loss.h"
#include "test_util.h"

#include "strand/config.h"
#include "strand/dist.h"
#include "kernels/fftconv.h"
#include "strand/model.h"
#include "model/mixers/s4d.h"

#include <complex.h>
#include <stdlib.h>
#include <string.h>

#ifdef STRAND_REAL_DOUBLE
#define S4D_OK(res) gradcheck_ok((res), GRADCHECK_TOL)
#define RECURRENT_TOL 1e-10
#define KERNEL_EPS GRADCHECK_EPS
/* The model's loss is a mean of O(1) terms: gradients below 1% of a tensor's largest are
 * compared absolutely against that 1% (as test_model.c). */
#define MODEL_FLOOR 1e-2
#define MODEL_OK(res) gradcheck_ok((res), GRADCHECK_TOL)
#else
/* Float: central differences are noisy per element; a wrong backward still gives an O(1)
 * norm-wise error. */
#define S4D_OK(res) ((res).checked > 0 && (res).norm_rel < 1e-2)
#define RECURRENT_TOL 1e-4
/* The kernel's phase x l makes its derivatives grow like (x l)^k: float's large default step
 * would measure truncation error, not the backward. */
#define KERNEL_EPS 1e-3
#define MODEL_FLOOR GRADCHECK_FLOOR
#define MODEL_OK(res) ((res).checked > 0 && (res).norm_rel < 1e-2)
#endif

#define S4D_TEST_PI 3.14159265358979323846

static int world_rank = 0;

/* ---- fixture: one s4d mixer, its parameters and gradients ---- */

typedef struct {
    strand_config config;
    strand_param_table table;
    strand_mixer mixer;
    strand_plan plan; /* the mixer's buffers, after setup */
    real_t *params, *grads;
    int setup_done;
} fixture;

/* extra: ';'-separated further settings (NULL: none), e.g. "s4d.mode=scan". */
static int fixture_create_with(fixture *f, int C, int N, const char *init, const char *strategy,
                               double perturb, const char *extra) {
    memset(f, 0, sizeof *f);
    strand_config_defaults(&f->config);
    char set[128];
    /* The mixer's width comes from mixer.C (model.d_model has a minimum of 8). */
    snprintf(set, sizeof set, "s4d.state=%d", N);
    int ok = strand_config_set(&f->config, set) == STRAND_OK;
    snprintf(set, sizeof set, "s4d.init=%s", init);
    ok = ok && strand_config_set(&f->config, set) == STRAND_OK;
    snprintf(set, sizeof set, "fft.strategy=%s", strategy);
    ok = ok && strand_config_set(&f->config, set) == STRAND_OK;
    /* Step sizes large enough that the kernel decays inside a short test window. */
    ok = ok && strand_config_set(&f->config, "fft.planner=estimate") == STRAND_OK;
    ok = ok && strand_config_set(&f->config, "s4d.dt_min=0.05") == STRAND_OK;
    ok = ok && strand_config_set(&f->config, "s4d.dt_max=0.5") == STRAND_OK;
    for (const char *p = extra; ok && p && *p;) {
        const char *end = strchr(p, ';');
        const size_t n = end ? (size_t)(end - p) : strlen(p);
        snprintf(set, sizeof set, "%.*s", (int)n, p);
        ok = strand_config_set(&f->config, set) == STRAND_OK;
        p = end ? end + 1 : p + n;
    }
    CHECK_MSG(ok, "config: %s", strand_error_message());
    if (!ok) return STRAND_ERR_CONFIG;
    int status = strand_mixer_create(&f->mixer, strand_mixer_find("s4d"), C, &f->config, &f->table, "s4d");
    CHECK_MSG(status == STRAND_OK, "create: %s", strand_error_message());
    if (status != STRAND_OK) return status;
    f->params = calloc((size_t)f->table.total, sizeof(real_t));
    f->grads = calloc((size_t)f->table.total, sizeof(real_t));
    /* Table-initialised tensors (the output linear) get small normals, then the mixer's init. */
    uint64_t rng = 4242;
    for (int64_t i = 0; i < f->table.total; i++)
        f->params[i] = (real_t)gradcheck_uniform(&rng, -0.5, 0.5);
    f->mixer.ops->init_params(&f->mixer, f->params, 11);
    for (int64_t i = 0; i < f->table.total; i++)
        f->params[i] += (real_t)gradcheck_uniform(&rng, -perturb, perturb);
    return STRAND_OK;
}

static int fixture_create(fixture *f, int C, int N, const char *init, const char *strategy, double perturb) {
    return fixture_create_with(f, C, N, init, strategy, perturb, NULL);
}

/* s4d.init's values in the order of enum s4d_init_kind. */
static int init_kind(const char *name) {
    return strcmp(name, "legs") == 0 ? S4D_INIT_LEGS : strcmp(name, "inv") == 0 ? S4D_INIT_INV : S4D_INIT_LIN;
}

static void fixture_free(fixture *f) {
    if (f->mixer.ops && f->mixer.state) f->mixer.ops->destroy(&f->mixer);
    strand_plan_free(&f->plan);
    strand_params_free(&f->table);
    free(f->params);
    free(f->grads);
}

static const strand_param_info *param(const fixture *f, const char *layer, const char *name) {
    for (int i = 0; i < f->table.count; i++)
        if (strcmp(f->table.items[i].layer, layer) == 0 && strcmp(f->table.items[i].name, name) == 0)
            return &f->table.items[i];
    return NULL;
}

/* ---- initialisations ---- */

static void test_inits(void) {
    const char *inits[] = {"lin", "inv", "legs"};
    for (int k = 0; k < 3; k++) {
        fixture f;
        if (fixture_create(&f, 3, 16, inits[k], "auto", 0.0) != STRAND_OK) continue;
        const strand_param_info *re = param(&f, "s4d", "log_a_re"), *im = param(&f, "s4d", "a_im");
        const strand_param_info *dt = param(&f, "s4d", "log_dt"), *b = param(&f, "s4d", "B_re");
        CHECK(re && im && dt && b);
        if (!re || !im || !dt || !b) {
            fixture_free(&f);
            continue;
        }
        CHECK(re->shape[0] == 3 && re->shape[1] == 8 && dt->ndim == 1);
        double expect[8];
        CHECK(s4d_init_a_imag(init_kind(inits[k]), 16, expect) == STRAND_OK);
        for (int64_t i = 0; i < re->size; i++) {
            const double a_re = -exp((double)f.params[re->offset + i]);
            CHECK_MSG(a_re < 0 && fabs(a_re + 0.5) < 1e-6, "%s: Re A = %g", inits[k], a_re);
            CHECK_CLOSE(f.params[im->offset + i], expect[i % 8], 1e-6);
            CHECK(f.params[b->offset + i] == 1);
        }
        for (int c = 0; c < 3; c++) {
            const double v = exp((double)f.params[dt->offset + c]);
            CHECK_MSG(v >= 0.05 * (1 - 1e-6) && v <= 0.5 * (1 + 1e-6), "dt %g outside [0.05, 0.5]", v);
        }
        /* Pure function of the seed: a second init gives the same bits. */
        real_t *copy = malloc(sizeof(real_t) * (size_t)f.table.total);
        memcpy(copy, f.params, sizeof(real_t) * (size_t)f.table.total);
        f.mixer.ops->init_params(&f.mixer, f.params, 11);
        CHECK(memcmp(copy, f.params, sizeof(real_t) * (size_t)f.table.total) == 0);
        free(copy);
        fixture_free(&f);
    }
    /* lin and inv closed forms */
    double v[4];
    CHECK(s4d_init_a_imag(S4D_INIT_LIN, 8, v) == STRAND_OK);
    CHECK_CLOSE(v[3], 3 * S4D_TEST_PI, 1e-15);
    CHECK(s4d_init_a_imag(S4D_INIT_INV, 8, v) == STRAND_OK);
    CHECK_CLOSE(v[0], (8 / S4D_TEST_PI) * 7, 1e-14);
    CHECK_CLOSE(v[2], (8 / S4D_TEST_PI) * (8.0 / 5 - 1), 1e-14);

    /* LegS, N = 2: S = [[0, s], [-s, 0]] with s = sqrt(3)/2, eigenvalues +-i sqrt(3)/2. */
    double w2[1];
    CHECK(s4d_init_a_imag(S4D_INIT_LEGS, 2, w2) == STRAND_OK);
    CHECK_CLOSE(w2[0], sqrt(3.0) / 2, 1e-14);
    /* N = 4: eigenvalues i w with w^4 - p w^2 + Pf(S)^2 = 0, p = sum_{n<k} S_nk^2. */
    double s[4][4];
    for (int n = 0; n < 4; n++)
        for (int k = 0; k < 4; k++)
            s[n][k] = n == k ? 0 : -0.5 * sqrt((2.0 * n + 1) * (2.0 * k + 1)) * (n > k ? 1 : -1);
    double p = 0;
    for (int n = 0; n < 4; n++)
        for (int k = n + 1; k < 4; k++)
            p += s[n][k] * s[n][k];
    const double pf = s[0][1] * s[2][3] - s[0][2] * s[1][3] + s[0][3] * s[1][2];
    const double disc = sqrt(p * p - 4 * pf * pf);
    double w4[2];
    CHECK(s4d_init_a_imag(S4D_INIT_LEGS, 4, w4) == STRAND_OK);
    CHECK_CLOSE(w4[0], sqrt((p - disc) / 2), 1e-12);
    CHECK_CLOSE(w4[1], sqrt((p + disc) / 2), 1e-12);
    /* N = 32: positive, strictly increasing, and sum w^2 = ||S||_F^2 / 2 (each +-w pair gives 2 w^2). */
    double w32[16];
    CHECK(s4d_init_a_imag(S4D_INIT_LEGS, 32, w32) == STRAND_OK);
    double fro = 0, sum = 0;
    for (int n = 0; n < 32; n++)
        for (int k = 0; k < 32; k++)
            if (n != k) fro += 0.25 * (2.0 * n + 1) * (2.0 * k + 1);
    for (int n = 0; n < 16; n++) {
        CHECK(w32[n] > 0);
        if (n) CHECK(w32[n] > w32[n - 1]);
        sum += w32[n] * w32[n];
    }
    CHECK_CLOSE(sum / (fro / 2), 1.0, 1e-12);

    /* An odd state size is a config error naming the key. */
    strand_config config;
    strand_config_defaults(&config);
    CHECK(strand_config_set(&config, "s4d.state=7") == STRAND_OK);
    strand_param_table table = {0};
    strand_mixer mixer;
    const int status = strand_mixer_create(&mixer, strand_mixer_find("s4d"), 2, &config, &table, "s4d");
    CHECK(status == STRAND_ERR_CONFIG && strstr(strand_error_message(), "s4d.state"));
    if (mixer.state) mixer.ops->destroy(&mixer);
    strand_params_free(&table);
    strand_error_clear();
}

/* ---- kernel against the direct formula ---- */

/* Whole-window reference, independent of the mixer's code path: Bbar = B (e^x - 1)/A. */
static double direct_kernel(const fixture *f, int C, int H, int c, int64_t l, double *bound) {
    const real_t *p = f->params;
    const double dt = exp((double)p[param(f, "s4d", "log_dt")->offset + c]);
    double complex sum = 0;
    double mag = 0, lin = 0, wsum = 0;
    for (int n = 0; n < H; n++) {
        const int64_t i = (int64_t)c * H + n;
        const double complex A = CMPLX(-exp((double)p[param(f, "s4d", "log_a_re")->offset + i]),
                                       (double)p[param(f, "s4d", "a_im")->offset + i]);
        const double complex B =
            CMPLX(p[param(f, "s4d", "B_re")->offset + i], p[param(f, "s4d", "B_im")->offset + i]);
        const double complex Cc =
            CMPLX(p[param(f, "s4d", "C_re")->offset + i], p[param(f, "s4d", "C_im")->offset + i]);
        const double complex x = dt * A;
        const double complex term = Cc * B * (cexp(x) - 1) / A * cexp(x * (double)l);
        sum += term;
        mag += 2 * cabs(term);
        wsum += 2 * cabs(Cc * B * (cexp(x) - 1) / A);
        lin += 2 * cabs(term) * cabs(x) * (double)l;
    }
    (void)C;
    /* Recurrence: <= 2 * 64 steps (anchor, then lag) of ~3.3u each; both sides round the phase
     * x l (~u |x| l); anchors below 2^-500 are flushed to zero. */
    *bound = 128 * 4 * 0x1p-53 * mag + 4 * 0x1p-53 * lin + 0x1p-500 * wsum + 1e-300;
#ifndef STRAND_REAL_DOUBLE
    *bound += 0x1p-24 * mag + 0x1p-149; /* the kernel is rounded to float (or underflows) */
#endif
    return 2 * creal(sum);
}

static void test_kernel_direct(void) {
    const int C = 3, N = 8, H = N / 2;
    fixture f;
    if (fixture_create(&f, C, N, "lin", "auto", 0.3) != STRAND_OK) return;
    /* A piece from 0 (several anchors), one across the first exact super-anchor (64^2), one that
     * starts and ends mid-interval far out. */
    const int64_t starts[3] = {0, 4000, 100037}, lengths[3] = {300, 200, 150};
    real_t *K = malloc(sizeof(real_t) * 650 * C);
    s4d_kernel_forward(&f.mixer, K, f.params, 3, starts, lengths);
    double worst = 0;
    int64_t row = 0;
    for (int piece = 0; piece < 3; piece++)
        for (int64_t j = 0; j < lengths[piece]; j++, row++)
            for (int c = 0; c < C; c++) {
                double bound;
                const double ref = direct_kernel(&f, C, H, c, starts[piece] + j, &bound);
                const double err = fabs((double)K[row * C + c] - ref);
                worst = fmax(worst, err / bound);
                CHECK_MSG(err <= bound, "K[%lld,%d] = %.17g, direct %.17g, bound %g",
                          (long long)(starts[piece] + j), c, (double)K[row * C + c], ref, bound);
            }
    if (world_rank == 0) fprintf(stderr, "kernel vs direct cexp: worst error / bound = %.3g\n", worst);
    free(K);
    fixture_free(&f);
}

/* A rank's rows (its pieces) equal the same rows of the whole-window kernel, bit for bit. */
static void test_kernel_slice(const strand_grid *grid, int layout) {
    const int C = 2, N = 6;
    const int64_t L = 9000; /* across exact super-anchors at multiples of 64^2 */
    fixture f;
    if (fixture_create(&f, C, N, "inv", "auto", 0.3) != STRAND_OK) return;
    strand_shard shard;
    CHECK(strand_shard_init(&shard, grid, L, layout) == STRAND_OK);
    real_t *full = malloc(sizeof(real_t) * (size_t)(L * C)), *mine = malloc(sizeof(real_t) * (size_t)(L * C));
    const int64_t zero = 0;
    s4d_kernel_forward(&f.mixer, full, f.params, 1, &zero, &L);
    s4d_kernel_forward(&f.mixer, mine, f.params, shard.n_pieces, shard.piece_start, shard.piece_length);
    int same = 1;
    for (int64_t i = 0; i < shard.T; i++)
        for (int c = 0; c < C; c++)
            same &= mine[i * C + c] == full[strand_shard_position(&shard, i) * C + c];
    CHECK_MSG(same, "rank %d: kernel rows differ from the whole-window kernel (layout %d)", grid->world_rank,
              layout);
    /* A piece that starts past a super-anchor, whatever the rank count. */
    const int64_t start = 8190, length = 110;
    s4d_kernel_forward(&f.mixer, mine, f.params, 1, &start, &length);
    same = 1;
    for (int64_t i = 0; i < length * C; i++)
        same &= mine[i] == full[start * C + i];
    CHECK_MSG(same, "kernel rows [8190, 8300) differ from the whole-window kernel");
    free(full);
    free(mine);
    strand_shard_free(&shard);
    fixture_free(&f);
}

/* ---- kernel backward by finite differences (serial) ---- */

typedef struct {
    fixture *f;
    const int64_t *starts, *lengths;
    int n_pieces;
    int64_t rows;
    real_t *K, *r;
} kernel_ctx;

static double kernel_loss(void *arg) {
    kernel_ctx *k = arg;
    s4d_kernel_forward(&k->f->mixer, k->K, k->f->params, k->n_pieces, k->starts, k->lengths);
    return gradcheck_project(k->K, k->r, k->rows * k->f->mixer.C);
}

static void test_kernel_grad(void) {
    const int C = 2, N = 8;
    fixture f;
    if (fixture_create(&f, C, N, "legs", "auto", 0.3) != STRAND_OK) return;
    const int64_t starts[2] = {5, 70}, lengths[2] = {60, 90};
    kernel_ctx k = {&f, starts, lengths, 2, 150, NULL, NULL};
    k.K = malloc(sizeof(real_t) * 150 * C);
    k.r = malloc(sizeof(real_t) * 150 * C);
    uint64_t rng = 77;
    gradcheck_fill(k.r, 150 * C, -1, 1, &rng);
    memset(f.grads, 0, sizeof(real_t) * (size_t)f.table.total);
    s4d_kernel_backward(&f.mixer, f.grads, k.r, f.params, 2, starts, lengths);
    const char *names[] = {"log_dt", "log_a_re", "a_im", "B_re", "B_im", "C_re", "C_im"};
    for (int i = 0; i < 7; i++) {
        const strand_param_info *info = param(&f, "s4d", names[i]);
        gradcheck_result res = gradcheck_run(f.params + info->offset, info->size, f.grads + info->offset,
                                             kernel_loss, &k, KERNEL_EPS, GRADCHECK_FLOOR, 0);
        char label[64];
        snprintf(label, sizeof label, "kernel %s", names[i]);
        if (world_rank == 0) gradcheck_print(stderr, label, res);
        CHECK_MSG(S4D_OK(res), "%s", label);
    }
    free(k.K);
    free(k.r);
    fixture_free(&f);
}

/* ---- the whole mixer across ranks ---- */

typedef struct {
    fixture *f;
    strand_shard *shard;
    MPI_Comm comm;
    int C;
    const real_t *u_global, *r_global; /* (L,C) on every rank */
    real_t *u, *r, *out;               /* this rank's rows */
    int failed;
} mixer_ctx;

static void take_rows(const strand_shard *shard, int C, real_t *local, const real_t *global) {
    for (int64_t i = 0; i < shard->T; i++)
        memcpy(local + i * C, global + strand_shard_position(shard, i) * C, sizeof(real_t) * (size_t)C);
}

static double mixer_loss(void *arg) {
    mixer_ctx *m = arg;
    take_rows(m->shard, m->C, m->u, m->u_global);
    int status = m->f->mixer.ops->forward(&m->f->mixer, m->out, m->u, m->f->params, m->shard);
    if (status != STRAND_OK) m->failed = 1;
    double loss = gradcheck_project(m->out, m->r, m->shard->T * m->C);
    MPI_Allreduce(MPI_IN_PLACE, &loss, 1, MPI_DOUBLE, MPI_SUM, m->comm);
    return loss;
}

static void test_mixer(const strand_grid *grid, const char *strategy, int layout, const char *init,
                       const char *extra) {
    const int C = 3, N = 4;
    const int64_t L = 13; /* uneven shards at 2-4 ranks */
    char label[128];
    snprintf(label, sizeof label, "mixer %s %s %s%s%s", strategy, layout ? "zigzag" : "contiguous", init,
             extra ? " " : "", extra ? extra : "");
    fixture f;
    if (fixture_create_with(&f, C, N, init, strategy, 0.3, extra) != STRAND_OK) return;
    strand_shard shard;
    CHECK(strand_shard_init(&shard, grid, L, layout) == STRAND_OK);
    int status = strand_mixer_setup_alone(&f.mixer, &shard, &f.plan);
    CHECK_MSG(status == STRAND_OK, "%s: setup: %s", label, strand_error_message());
    if (status != STRAND_OK) {
        strand_shard_free(&shard);
        fixture_free(&f);
        return;
    }
    const int64_t LC = L * C, TC = shard.T * C;
    real_t *u_global = malloc(sizeof(real_t) * (size_t)LC), *r_global = malloc(sizeof(real_t) * (size_t)LC);
    uint64_t rng = 2024;
    gradcheck_fill(u_global, LC, -1, 1, &rng);
    gradcheck_fill(r_global, LC, -1, 1, &rng);
    mixer_ctx m = {&f, &shard, grid->world, C, u_global, r_global, NULL, NULL, NULL, 0};
    m.u = malloc(sizeof(real_t) * (size_t)TC);
    m.r = malloc(sizeof(real_t) * (size_t)TC);
    m.out = malloc(sizeof(real_t) * (size_t)TC);
    take_rows(&shard, C, m.r, r_global);

    /* Analytic: backward with dout = r, gradients summed over ranks (as the trainer does). */
    mixer_loss(&m);
    real_t *din = calloc((size_t)TC, sizeof(real_t)), *din_global = calloc((size_t)LC, sizeof(real_t));
    memset(f.grads, 0, sizeof(real_t) * (size_t)f.table.total);
    CHECK(f.mixer.ops->backward(&f.mixer, din, f.grads, m.r, m.u, f.params, &shard) == STRAND_OK);
    CHECK(strand_allreduce_sum(grid->world, f.grads, f.table.total) == STRAND_OK);
    for (int64_t i = 0; i < shard.T; i++)
        memcpy(din_global + strand_shard_position(&shard, i) * C, din + i * C, sizeof(real_t) * (size_t)C);
    CHECK(strand_allreduce_sum(grid->world, din_global, LC) == STRAND_OK);

    for (int p = 0; p < f.table.count; p++) {
        const strand_param_info *info = &f.table.items[p];
        gradcheck_result res = gradcheck_run(f.params + info->offset, info->size, f.grads + info->offset,
                                             mixer_loss, &m, GRADCHECK_EPS, GRADCHECK_FLOOR, 0);
        char name[320];
        snprintf(name, sizeof name, "%s %s/%s", label, info->layer, info->name);
        if (world_rank == 0 && (!S4D_OK(res) || grid->world_size == 1)) gradcheck_print(stderr, name, res);
        CHECK_MSG(S4D_OK(res), "%s (ranks %d)", name, grid->world_size);
    }
    gradcheck_result res =
        gradcheck_run((real_t *)u_global, LC, din_global, mixer_loss, &m, GRADCHECK_EPS, GRADCHECK_FLOOR, 0);
    snprintf(label + strlen(label), sizeof label - strlen(label), " input");
    if (world_rank == 0 && (!S4D_OK(res) || grid->world_size == 1)) gradcheck_print(stderr, label, res);
    CHECK_MSG(S4D_OK(res), "%s (ranks %d)", label, grid->world_size);
    CHECK(!m.failed);

    free(din);
    free(din_global);
    free(m.u);
    free(m.r);
    free(m.out);
    free(u_global);
    free(r_global);
    strand_shard_free(&shard);
    fixture_free(&f);
}

/* ---- recurrent mode equals convolution mode ---- */

static void test_recurrent(const strand_grid *grid, const char *strategy, int layout) {
    const int C = 4, N = 8;
    const int64_t L = 40;
    fixture f;
    if (fixture_create(&f, C, N, "lin", strategy, 0.2) != STRAND_OK) return;
    strand_shard shard;
    CHECK(strand_shard_init(&shard, grid, L, layout) == STRAND_OK);
    if (strand_mixer_setup_alone(&f.mixer, &shard, &f.plan) != STRAND_OK) {
        CHECK_MSG(0, "setup: %s", strand_error_message());
        strand_shard_free(&shard);
        fixture_free(&f);
        return;
    }
    real_t *u_global = malloc(sizeof(real_t) * (size_t)(L * C)),
           *u = malloc(sizeof(real_t) * (size_t)(shard.T * C));
    real_t *out = malloc(sizeof(real_t) * (size_t)(shard.T * C)),
           *step = malloc(sizeof(real_t) * (size_t)(L * C));
    uint64_t rng = 5;
    gradcheck_fill(u_global, L * C, -1, 1, &rng);
    take_rows(&shard, C, u, u_global);
    CHECK(f.mixer.ops->forward(&f.mixer, out, u, f.params, &shard) == STRAND_OK);
    /* Every rank steps through the whole window and compares its own rows. */
    s4d_recurrent_state state;
    CHECK(s4d_recurrent_init(&state, &f.mixer) == STRAND_OK);
    for (int64_t t = 0; t < L; t++)
        CHECK(s4d_recurrent_step(&f.mixer, f.params, &state, u_global + t * C, step + t * C) == STRAND_OK);
    double worst = 0;
    for (int64_t i = 0; i < shard.T; i++)
        for (int c = 0; c < C; c++) {
            const double a = out[i * C + c], b = step[strand_shard_position(&shard, i) * C + c];
            worst = fmax(worst, fabs(a - b) / fmax(1.0, fmax(fabs(a), fabs(b))));
            CHECK_CLOSE(a, b, RECURRENT_TOL);
        }
    /* Reset starts a new sequence. */
    s4d_recurrent_reset(&state);
    real_t first[4];
    CHECK(s4d_recurrent_step(&f.mixer, f.params, &state, u_global, first) == STRAND_OK);
    CHECK(memcmp(first, step, sizeof first) == 0);
    if (world_rank == 0)
        fprintf(stderr, "recurrent vs convolution (%s): worst relative %.3g\n", strategy, worst);
    s4d_recurrent_free(&state);
    free(u_global);
    free(u);
    free(out);
    free(step);
    strand_shard_free(&shard);
    fixture_free(&f);
}

/* ---- scan mode equals conv mode on the same parameters ---- */

#ifdef STRAND_REAL_DOUBLE
#define SCAN_TOL 1e-9
#else
#define SCAN_TOL 1e-4
#endif

/* max |a - b| / max |b| over the whole tensor, or 0 when both are zero (a tensor of values on
 * every rank: the caller reduces them first). */
static double tensor_rel(const real_t *a, const real_t *b, int64_t n) {
    double diff = 0, scale = 0;
    for (int64_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)a[i] - (double)b[i]));
        scale = fmax(scale, fabs((double)b[i]));
    }
    if (diff != diff) return INFINITY; /* NaN */
    return scale > 0 ? diff / scale : diff;
}

/* This rank's rows (T,C) into a (L,C) array summed over the world (zeros elsewhere). */
static void gather_rows(const strand_shard *shard, MPI_Comm comm, int C, int64_t L, const real_t *local,
                        real_t *global) {
    memset(global, 0, sizeof(real_t) * (size_t)(L * C));
    for (int64_t i = 0; i < shard->T; i++)
        memcpy(global + strand_shard_position(shard, i) * C, local + i * C, sizeof(real_t) * (size_t)C);
    CHECK(strand_allreduce_sum(comm, global, L * C) == STRAND_OK);
}

/* Step sizes from 1e-3 (a mode that outlives the window) to 8 (|z| = e^{-2.4} and faster: the
 * fix-up of such a channel stops after 17 rows, inside every piece), channels in scrambled order so
 * that both channel blocks mix slow and fast lanes; Re A from -0.3 to -1.3 across the modes. */
static void scan_test_params(fixture *f, int C, int H) {
    const strand_param_info *dt = param(f, "s4d", "log_dt"), *re = param(f, "s4d", "log_a_re");
    for (int c = 0; c < C; c++) {
        const double k = (double)((c * 7) % C) / (C - 1);
        f->params[dt->offset + c] = (real_t)(log(1e-3) + k * log(8000.0));
        for (int n = 0; n < H; n++)
            f->params[re->offset + (int64_t)c * H + n] = (real_t)(log(0.3) + 0.5 * n);
    }
}

static void test_scan_vs_conv(const strand_grid *grid, int layout) {
    const int C = 12, N = 8, H = N / 2; /* two channel blocks, the second padded */
    const int64_t L = 333;              /* pieces of 41-333 rows at SP 1-4 */
    const char *label = layout ? "zigzag" : "contiguous";
    fixture conv, scan;
    if (fixture_create_with(&conv, C, N, "lin", "auto", 0.3, NULL) != STRAND_OK) return;
    if (fixture_create_with(&scan, C, N, "lin", "auto", 0.3, "s4d.mode=scan") != STRAND_OK) {
        fixture_free(&conv);
        return;
    }
    CHECK(conv.table.total == scan.table.total);
    scan_test_params(&conv, C, H);
    memcpy(scan.params, conv.params, sizeof(real_t) * (size_t)conv.table.total);
    strand_shard shard;
    CHECK(strand_shard_init(&shard, grid, L, layout) == STRAND_OK);
    int status = strand_mixer_setup_alone(&conv.mixer, &shard, &conv.plan);
    if (status == STRAND_OK) status = strand_mixer_setup_alone(&scan.mixer, &shard, &scan.plan);
    CHECK_MSG(status == STRAND_OK, "scan vs conv %s: setup: %s", label, strand_error_message());
    if (status != STRAND_OK) {
        strand_shard_free(&shard);
        fixture_free(&conv);
        fixture_free(&scan);
        return;
    }
    /* Scan mode plans no kernel and no FFT buffers. */
    int fft_entries = 0;
    for (int i = 0; i < scan.plan.count; i++)
        fft_entries +=
            scan.plan.entries[i].component == STRAND_MEM_FFT || strstr(scan.plan.entries[i].name, "kernel");
    CHECK_MSG(fft_entries == 0, "scan mode planned %d kernel or FFT buffers", fft_entries);

    const int64_t LC = L * C, TC = shard.T * C;
    real_t *u_global = malloc(sizeof(real_t) * (size_t)LC), *r_global = malloc(sizeof(real_t) * (size_t)LC);
    real_t *u = malloc(sizeof(real_t) * (size_t)TC), *r = malloc(sizeof(real_t) * (size_t)TC);
    real_t *out[2], *din[2], *glob[2];
    for (int k = 0; k < 2; k++) {
        out[k] = malloc(sizeof(real_t) * (size_t)TC);
        din[k] = calloc((size_t)TC, sizeof(real_t));
        glob[k] = malloc(sizeof(real_t) * (size_t)LC);
    }
    uint64_t rng = 31337;
    gradcheck_fill(u_global, LC, -1, 1, &rng);
    gradcheck_fill(r_global, LC, -1, 1, &rng);
    take_rows(&shard, C, u, u_global);
    take_rows(&shard, C, r, r_global);
    fixture *fs[2] = {&conv, &scan};
    for (int k = 0; k < 2; k++) {
        fixture *f = fs[k];
        memset(f->grads, 0, sizeof(real_t) * (size_t)f->table.total);
        CHECK(f->mixer.ops->forward(&f->mixer, out[k], u, f->params, &shard) == STRAND_OK);
        CHECK(f->mixer.ops->backward(&f->mixer, din[k], f->grads, r, u, f->params, &shard) == STRAND_OK);
        CHECK(strand_allreduce_sum(grid->world, f->grads, f->table.total) == STRAND_OK);
    }
    double worst = 0;
    gather_rows(&shard, grid->world, C, L, out[0], glob[0]);
    gather_rows(&shard, grid->world, C, L, out[1], glob[1]);
    double rel = tensor_rel(glob[1], glob[0], LC);
    worst = fmax(worst, rel);
    CHECK_MSG(rel < SCAN_TOL, "scan vs conv %s sp %d: output relative %.3g", label, grid->sp_size, rel);
    gather_rows(&shard, grid->world, C, L, din[0], glob[0]);
    gather_rows(&shard, grid->world, C, L, din[1], glob[1]);
    rel = tensor_rel(glob[1], glob[0], LC);
    worst = fmax(worst, rel);
    CHECK_MSG(rel < SCAN_TOL, "scan vs conv %s sp %d: din relative %.3g", label, grid->sp_size, rel);
    for (int p = 0; p < conv.table.count; p++) {
        const strand_param_info *info = &conv.table.items[p];
        rel = tensor_rel(scan.grads + info->offset, conv.grads + info->offset, info->size);
        worst = fmax(worst, rel);
        CHECK_MSG(rel < SCAN_TOL, "scan vs conv %s sp %d: d %s/%s relative %.3g", label, grid->sp_size,
                  info->layer, info->name, rel);
    }
    if (world_rank == 0)
        fprintf(stderr,
                "scan vs conv (%s, sp %d, L %lld): worst relative %.3g over out, din and %d gradients\n",
                label, grid->sp_size, (long long)L, worst, conv.table.count);
    free(u_global), free(r_global), free(u), free(r);
    for (int k = 0; k < 2; k++)
        free(out[k]), free(din[k]), free(glob[k]);
    strand_shard_free(&shard);
    fixture_free(&conv);
    fixture_free(&scan);
}

/* s4d.carry: windows A then B of length L each, B from the state A leaves, equal the last L rows
 * of conv mode over the 2L positions; after reset, B alone equals conv over B. */
static void test_scan_carry(const strand_grid *grid, int layout) {
    const int C = 5, N = 6, H = N / 2;
    const int64_t L = 120;
    fixture conv, scan;
    if (fixture_create_with(&conv, C, N, "inv", "auto", 0.3, NULL) != STRAND_OK) return;
    if (fixture_create_with(&scan, C, N, "inv", "auto", 0.3, "s4d.mode=scan;s4d.carry=true") != STRAND_OK) {
        fixture_free(&conv);
        return;
    }
    scan_test_params(&conv, C, H);
    memcpy(scan.params, conv.params, sizeof(real_t) * (size_t)conv.table.total);
    strand_shard shard, twice;
    CHECK(strand_shard_init(&shard, grid, L, layout) == STRAND_OK);
    CHECK(strand_shard_init(&twice, grid, 2 * L, layout) == STRAND_OK);
    int status = strand_mixer_setup_alone(&conv.mixer, &twice, &conv.plan);
    if (status == STRAND_OK) status = strand_mixer_setup_alone(&scan.mixer, &shard, &scan.plan);
    CHECK_MSG(status == STRAND_OK, "scan carry: setup: %s", strand_error_message());
    const unsigned caps = scan.mixer.ops->capabilities(scan.mixer.options);
    CHECK(caps == (STRAND_MIXER_STEP | STRAND_MIXER_CARRIES_STATE));
    CHECK(scan.mixer.ops->carry_count(&scan.mixer) == 2 * C * H &&
          conv.mixer.ops->carry_count(&conv.mixer) == 0);
    if (status == STRAND_OK) {
        real_t *u_global = malloc(sizeof(real_t) * (size_t)(2 * L * C));
        real_t *u = malloc(sizeof(real_t) * (size_t)(twice.T * C)),
               *y = malloc(sizeof(real_t) * (size_t)(twice.T * C));
        real_t *ref = malloc(sizeof(real_t) * (size_t)(2 * L * C)),
               *got = malloc(sizeof(real_t) * (size_t)(L * C));
        uint64_t rng = 8;
        gradcheck_fill(u_global, 2 * L * C, -1, 1, &rng);
        take_rows(&twice, C, u, u_global);
        CHECK(conv.mixer.ops->forward(&conv.mixer, y, u, conv.params, &twice) == STRAND_OK);
        gather_rows(&twice, grid->world, C, 2 * L, y, ref);
        for (int w = 0; w < 2; w++) {
            take_rows(&shard, C, u, u_global + w * L * C);
            CHECK(scan.mixer.ops->forward(&scan.mixer, y, u, scan.params, &shard) == STRAND_OK);
        }
        gather_rows(&shard, grid->world, C, L, y, got);
        double rel = tensor_rel(got, ref + L * C, L * C);
        CHECK_MSG(rel < SCAN_TOL, "scan carry %d sp %d: window B relative %.3g", layout, grid->sp_size, rel);
        if (world_rank == 0)
            fprintf(stderr, "scan carry (layout %d): window B vs conv over 2L: %.3g\n", layout, rel);
        /* reset: B alone, against conv over B's positions as a window of its own */
        scan.mixer.ops->reset(&scan.mixer);
        CHECK(scan.mixer.ops->forward(&scan.mixer, y, u, scan.params, &shard) == STRAND_OK);
        gather_rows(&shard, grid->world, C, L, y, got);
        fixture alone;
        if (fixture_create_with(&alone, C, N, "inv", "auto", 0.3, NULL) == STRAND_OK) {
            memcpy(alone.params, conv.params, sizeof(real_t) * (size_t)conv.table.total);
            CHECK(strand_mixer_setup_alone(&alone.mixer, &shard, &alone.plan) == STRAND_OK);
            real_t *y2 = malloc(sizeof(real_t) * (size_t)(shard.T * C));
            CHECK(alone.mixer.ops->forward(&alone.mixer, y2, u, alone.params, &shard) == STRAND_OK);
            gather_rows(&shard, grid->world, C, L, y2, ref);
            rel = tensor_rel(got, ref, L * C);
            CHECK_MSG(rel < SCAN_TOL, "scan carry %d sp %d: after reset relative %.3g", layout, grid->sp_size,
                      rel);
            free(y2);
            fixture_free(&alone);
        }
        free(u_global), free(u), free(y), free(ref), free(got);
    }
    strand_shard_free(&shard);
    strand_shard_free(&twice);
    fixture_free(&conv);
    fixture_free(&scan);
}

/* s4d.mode and s4d.carry: capabilities, and carry refused in conv mode naming both keys. */
static void test_scan_config(void) {
    strand_config config;
    strand_config_defaults(&config);
    const strand_mixer_ops *ops = strand_mixer_find("s4d");
    CHECK(ops->capabilities(strand_mixer_options(&config, ops)) ==
          (STRAND_MIXER_LONG_CONV | STRAND_MIXER_STEP));
    CHECK(strand_config_set(&config, "s4d.mode=scan") == STRAND_OK);
    CHECK(ops->capabilities(strand_mixer_options(&config, ops)) == STRAND_MIXER_STEP);
    CHECK(strand_config_validate(&config) == STRAND_OK);
    CHECK(strand_config_set(&config, "s4d.mode=conv") == STRAND_OK);
    CHECK(strand_config_set(&config, "s4d.carry=true") == STRAND_OK);
    const int status = strand_config_validate(&config);
    CHECK_MSG(status == STRAND_ERR_CONFIG && strstr(strand_error_message(), "s4d.carry") &&
                  strstr(strand_error_message(), "s4d.mode = scan"),
              "carry in conv mode: status %d, %s", status, strand_error_message());
    strand_error_clear();
}

/* ---- inside the model: every parameter of a two-block model (s4d, conv) across ranks ---- */

static void test_model(const strand_grid *grid, const char *strategy, int layout) {
    const int64_t L = 11;
    char label[96], set[64];
    snprintf(label, sizeof label, "model s4d,conv %s %s", strategy, layout ? "zigzag" : "contiguous");
    strand_config config;
    strand_config_defaults(&config);
    const char *overrides[] = {"model.d_model=8",   "model.layers=s4d,conv", "model.mlp_hidden=8",
                               "s4d.state=4",       "s4d.init=legs",         "fft.planner=estimate",
                               "model.norm=rmsnorm"};
    int ok = 1;
    for (size_t i = 0; i < sizeof overrides / sizeof *overrides; i++)
        ok = ok && strand_config_set(&config, overrides[i]) == STRAND_OK;
    snprintf(set, sizeof set, "fft.strategy=%s", strategy);
    ok = ok && strand_config_set(&config, set) == STRAND_OK;
    CHECK_MSG(ok, "%s: config: %s", label, strand_error_message());
    strand_shard shard;
    CHECK(strand_shard_init(&shard, grid, L, layout) == STRAND_OK);
    strand_model model;
    int status = strand_model_create(&model, &config, &shard);
    CHECK_MSG(status == STRAND_OK, "%s: model: %s", label, strand_error_message());
    if (status != STRAND_OK) {
        strand_shard_free(&shard);
        return;
    }
    strand_model_init_params(&model, 7);
    /* The model's init runs the mixer's: B = 1, Re A = -1/2. */
    for (int p = 0; p < model.table.count; p++) {
        const strand_param_info *info = &model.table.items[p];
        const real_t *w = model.params + info->offset;
        for (int64_t j = 0; j < info->size; j++) {
            if (strcmp(info->name, "B_re") == 0) CHECK(w[j] == 1);
            if (strcmp(info->name, "log_a_re") == 0) CHECK(w[j] == (real_t)log(0.5));
        }
    }
    /* Then the s4d tensors at values where a short window sees the kernel decay (dt larger than
     * the default init's), and everything perturbed so ones/zeros are checked away from their
     * special values. */
    uint64_t rng = 12345;
    int s4d_tensors = 0;
    for (int p = 0; p < model.table.count; p++) {
        const strand_param_info *info = &model.table.items[p];
        if (info->init != STRAND_INIT_BY_LAYER) continue;
        s4d_tensors++;
        real_t *w = model.params + info->offset;
        for (int64_t j = 0; j < info->size; j++) {
            const int64_t n = j % (info->ndim == 2 ? info->shape[1] : 1);
            w[j] = strcmp(info->name, "log_dt") == 0     ? (real_t)log(0.2)
                   : strcmp(info->name, "log_a_re") == 0 ? (real_t)log(0.5)
                   : strcmp(info->name, "a_im") == 0     ? (real_t)(S4D_TEST_PI * (double)n)
                   : strcmp(info->name, "B_re") == 0     ? 1
                                                         : (real_t)gradcheck_uniform(&rng, -0.7, 0.7);
        }
    }
    CHECK(s4d_tensors == 8);
    for (int64_t i = 0; i < model.table.total; i++)
        model.params[i] += (real_t)gradcheck_uniform(&rng, -0.3, 0.3);

    strand_token_t global[12], inputs[12], targets[12];
    uint64_t token_rng = 99;
    for (int64_t i = 0; i <= L; i++)
        global[i] = (strand_token_t)(gradcheck_rng_next(&token_rng) % 5);
    for (int64_t i = 0; i < shard.T; i++) {
        const int64_t position = strand_shard_position(&shard, i);
        inputs[i] = global[position];
        targets[i] = global[position + 1];
    }
    model_ctx ctx = {&model, &shard, inputs, targets, grid->world, 1.0 / (double)L};
    double loss = 0;
    CHECK(strand_model_forward(&model, inputs, targets, &shard, &loss) == STRAND_OK);
    memset(model.grads, 0, sizeof(real_t) * (size_t)model.table.total);
    CHECK(strand_model_backward(&model, inputs, &shard, (real_t)ctx.scale) == STRAND_OK);
    CHECK(strand_allreduce_sum(grid->world, model.grads, model.table.total) == STRAND_OK);
    real_t *analytic = malloc(sizeof(real_t) * (size_t)model.table.total);
    memcpy(analytic, model.grads, sizeof(real_t) * (size_t)model.table.total);
    for (int p = 0; p < model.table.count; p++) {
        const strand_param_info *info = &model.table.items[p];
        gradcheck_result res = gradcheck_run(model.params + info->offset, info->size, analytic + info->offset,
                                             model_loss, &ctx, GRADCHECK_EPS, MODEL_FLOOR, 0);
        char name[256];
        snprintf(name, sizeof name, "%s %s/%s", label, info->layer, info->name);
        if (world_rank == 0 &&
            (!MODEL_OK(res) || (grid->world_size == 1 && strstr(info->layer, "block0.mixer"))))
            gradcheck_print(stderr, name, res);
        CHECK_MSG(MODEL_OK(res), "%s (ranks %d)", name, grid->world_size);
    }
    free(analytic);
    strand_model_free(&model);
    strand_shard_free(&shard);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    strand_grid grid;
    CHECK(strand_grid_init(&grid, MPI_COMM_WORLD, 0, 1) == STRAND_OK);

    test_inits();
    test_kernel_direct();
    test_kernel_grad();
    const char *strategies[] = {"fftw-mpi", "alltoall"};
    for (int layout = 0; layout < 2; layout++) {
        test_kernel_slice(&grid, layout);
        for (int s = 0; s < 2; s++) {
            test_mixer(&grid, strategies[s], layout, layout ? "inv" : "lin", NULL);
            test_recurrent(&grid, strategies[s], layout);
        }
        test_mixer(&grid, "auto", layout, layout ? "lin" : "legs", "s4d.mode=scan");
        test_scan_vs_conv(&grid, layout);
        test_scan_carry(&grid, layout);
    }
    test_scan_config();
    test_mixer(&grid, "auto", STRAND_LAYOUT_CONTIGUOUS, "legs", NULL);
    test_model(&grid, "fftw-mpi", STRAND_LAYOUT_CONTIGUOUS);
    test_model(&grid, "alltoall", STRAND_LAYOUT_ZIGZAG);

    strand_grid_free(&grid);
    int status = test_finish("test_s4d");
    int any = 0;
    MPI_Allreduce(&status, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any;
}
