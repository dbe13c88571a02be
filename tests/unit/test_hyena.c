/* Mixer "hyena" across ranks (the window sharded over every rank of the job):
 *  - finite differences of the global loss (all-reduced) for every parameter and the input, for
 *    both long-convolution strategies;
 *  - the output against a direct O(L^2) implementation written here, at every rank count;
 *  - the filter on a rank's positions against the test's own filter and against the slice of the
 *    filter of a longer window on one rank (the position grid is fixed by hyena.max_len), and the
 *    output on a window's prefix against the output of a longer window;
 *  - setup refuses windows longer than hyena.max_len; zigzag matches the reference;
 *  - a whole model with a hyena block, by finite differences (registration and init). */
#include "gradcheck.h"
#include "model_loss.h"
#include "test_util.h"

#include "strand/config.h"
#include "strand/dist.h"
#include "strand/layout.h"
#include "strand/model.h"
#include "core/rng.h"

#include <stdlib.h>
#include <string.h>

/* Test hook defined in src/model/mixers/hyena.c: the filter h (T,C) at this rank's positions. */
int strand_hyena_filter(strand_mixer *mixer, real_t *h, const real_t *params);

#ifdef STRAND_REAL_DOUBLE
#define HYENA_OK(res) gradcheck_ok((res), GRADCHECK_TOL)
#define REF_TOL 1e-10
#define SLICE_TOL 1e-12
#else
/* Float: per-element central differences are noisy; the norm-wise error still exposes a wrong
 * backward (it is then O(1)). */
#define HYENA_OK(res) ((res).checked > 0 && (res).norm_rel < 2e-2)
#define REF_TOL 2e-4
#define SLICE_TOL 1e-6
#endif

enum { TEST_C = 4 };

typedef struct {
    strand_config config;
    strand_grid grid;
    strand_shard shard;
    strand_param_table table;
    strand_mixer mixer;
    strand_plan plan; /* the mixer's buffers */
    int ready;        /* setup succeeded */
    int C;
    int64_t L, T;
    real_t *params, *grads;
    real_t *u_global, *r_global; /* (L,C), the same on every rank */
    real_t *u, *r, *out, *din;   /* (T,C) */
} fixture;

/* Layer name used by the fixture's parameters. */
static const char *const LAYER = "block0.mixer";

static void config_init(strand_config *config, const char *const *overrides, int n) {
    strand_config_defaults(config);
    const char *common[] = {"hyena.filter_width=6", "hyena.filter_depth=2", "hyena.frequencies=2",
                            "hyena.short_kernel=3", "hyena.max_len=12",     "model.init_std=0.3",
                            "fft.planner=estimate", "hyena.sine_freq=3"};
    for (size_t i = 0; i < sizeof common / sizeof *common; i++)
        CHECK(strand_config_set(config, common[i]) == STRAND_OK);
    for (int i = 0; i < n; i++)
        CHECK_MSG(strand_config_set(config, overrides[i]) == STRAND_OK, "%s", overrides[i]);
}

/* Parameters as strand_model_init_params leaves them, then the mixer's own, then a perturbation
 * so that zeros and constants are checked away from their special values. */
static void init_params(fixture *f, uint64_t seed) {
    for (int i = 0; i < f->table.count; i++) {
        const strand_param_info *p = &f->table.items[i];
        for (int64_t j = 0; j < p->size; j++) {
            real_t *w = f->params + p->offset + j;
            if (p->init == STRAND_INIT_NORMAL)
                *w = (real_t)(p->init_std *
                              strand_rng_normal(seed, STRAND_STREAM_INIT, (uint64_t)i, (uint64_t)j));
            else if (p->init == STRAND_INIT_ONES)
                *w = 1;
            else if (p->init == STRAND_INIT_ZEROS)
                *w = 0;
        }
    }
    f->mixer.ops->init_params(&f->mixer, f->params, seed);
    uint64_t rng = seed * 7919 + 1;
    for (int64_t i = 0; i < f->table.total; i++)
        f->params[i] += (real_t)gradcheck_uniform(&rng, -0.1, 0.1);
}

/* Build the mixer over a window of L tokens; sp = 0 shards it over every rank, sp = 1 gives
 * every rank the whole window. Returns setup's status (the fixture is usable when STRAND_OK). */
static int fixture_init(fixture *f, const strand_config *config, int64_t L, int sp, int layout) {
    memset(f, 0, sizeof *f);
    f->config = *config;
    f->C = TEST_C;
    f->L = L;
    CHECK(strand_grid_init(&f->grid, MPI_COMM_WORLD, sp, 0) == STRAND_OK);
    CHECK(strand_shard_init(&f->shard, &f->grid, L, layout) == STRAND_OK);
    f->T = f->shard.T;
    const strand_mixer_ops *ops = strand_mixer_find("hyena");
    CHECK_MSG(ops != NULL, "mixer hyena is not registered");
    if (!ops) return STRAND_ERR_INTERNAL;
    CHECK(strand_mixer_create(&f->mixer, ops, f->C, &f->config, &f->table, LAYER) == STRAND_OK);
    int status = strand_mixer_setup_alone(&f->mixer, &f->shard, &f->plan);
    if (status != STRAND_OK) return status;
    f->ready = 1;
    const int64_t TC = f->T * f->C, LC = L * f->C;
    f->params = calloc((size_t)f->table.total, sizeof(real_t));
    f->grads = calloc((size_t)f->table.total, sizeof(real_t));
    f->u_global = calloc((size_t)LC, sizeof(real_t));
    f->r_global = calloc((size_t)LC, sizeof(real_t));
    f->u = calloc((size_t)TC, sizeof(real_t));
    f->r = calloc((size_t)TC, sizeof(real_t));
    f->out = calloc((size_t)TC, sizeof(real_t));
    f->din = calloc((size_t)TC, sizeof(real_t));
    init_params(f, 11);
    uint64_t rng = 2024;
    gradcheck_fill(f->u_global, LC, -1, 1, &rng);
    gradcheck_fill(f->r_global, LC, -1, 1, &rng);
    for (int64_t i = 0; i < f->T; i++) {
        const int64_t p = strand_shard_position(&f->shard, i);
        memcpy(f->r + i * f->C, f->r_global + p * f->C, sizeof(real_t) * (size_t)f->C);
    }
    return STRAND_OK;
}

static void fixture_free(fixture *f) {
    if (f->mixer.ops && f->mixer.state) f->mixer.ops->destroy(&f->mixer);
    strand_plan_free(&f->plan);
    strand_params_free(&f->table);
    real_t *buffers[] = {f->params, f->grads, f->u_global, f->r_global, f->u, f->r, f->out, f->din};
    for (size_t i = 0; i < sizeof buffers / sizeof *buffers; i++)
        free(buffers[i]);
    strand_shard_free(&f->shard);
    strand_grid_free(&f->grid);
    memset(f, 0, sizeof *f);
}

static const real_t *param(const fixture *f, const char *name) {
    for (int i = 0; i < f->table.count; i++)
        if (strcmp(f->table.items[i].name, name) == 0) return f->params + f->table.items[i].offset;
    fprintf(stderr, "no parameter %s\n", name);
    return NULL;
}

/* Local forward of the fixture's global input. */
static int run_forward(fixture *f) {
    for (int64_t i = 0; i < f->T; i++) {
        const int64_t p = strand_shard_position(&f->shard, i);
        memcpy(f->u + i * f->C, f->u_global + p * f->C, sizeof(real_t) * (size_t)f->C);
    }
    return f->mixer.ops->forward(&f->mixer, f->out, f->u, f->params, &f->shard);
}

/* loss = sum over the window of out * r, all-reduced over the SP group. */
static double global_loss(void *arg) {
    fixture *f = arg;
    if (run_forward(f) != STRAND_OK) return NAN;
    double loss = gradcheck_project(f->out, f->r, f->T * f->C);
    MPI_Allreduce(MPI_IN_PLACE, &loss, 1, MPI_DOUBLE, MPI_SUM, f->grid.sp_comm);
    return loss;
}

/* ---- direct reference (double, whole window, no library code) ---- */

typedef struct {
    int C, K, W, depth, n_freq;
    double sine_freq, decay_fast, decay_slow;
    int64_t max_len;
} ref_dims;

static ref_dims ref_dims_of(const fixture *f) {
    const strand_config *c = &f->config;
    const int64_t max_len = (int64_t)config_value(c, "hyena.max_len");
    ref_dims d = {f->C,
                  (int)config_value(c, "hyena.short_kernel"),
                  (int)config_value(c, "hyena.filter_width"),
                  (int)config_value(c, "hyena.filter_depth"),
                  (int)config_value(c, "hyena.frequencies"),
                  config_value(c, "hyena.sine_freq"),
                  config_value(c, "hyena.decay_fast"),
                  config_value(c, "hyena.decay_slow"),
                  max_len > 0 ? max_len : c->seq_len};
    return d;
}

/* h (L,C) for lags 0..L-1 as HyenaDNA's HyenaFilter.filter computes it. */
static void ref_filter(const fixture *f, double *h, int64_t L) {
    const ref_dims d = ref_dims_of(f);
    const int E = 1 + 2 * d.n_freq, W = d.W;
    double *z = malloc(sizeof(double) * (size_t)(E > W ? E : W)), *a = malloc(sizeof(double) * (size_t)W);
    const real_t *w = param(f, "filter.sine_freq"), *wo = param(f, "filter.out.weight");
    const double pi = acos(-1.0);
    for (int64_t l = 0; l < L; l++) {
        const double t = (double)l / (double)(d.max_len - 1);
        z[0] = t;
        for (int k = 0; k < d.n_freq; k++) {
            /* torch.linspace(1e-4, bands - 1, bands) */
            const double fk = d.n_freq == 1 ? 1e-4 : 1e-4 + k * ((d.n_freq - 1) - 1e-4) / (d.n_freq - 1);
            const double angle = 2 * pi * fk * (double)l / (double)d.max_len;
            z[1 + k] = cos(angle);
            z[1 + d.n_freq + k] = -sin(angle);
        }
        int in_dim = E;
        for (int i = 0; i < d.depth; i++) {
            char name[32];
            snprintf(name, sizeof name, "filter.fc%d.weight", i);
            const real_t *wi = param(f, name);
            snprintf(name, sizeof name, "filter.fc%d.bias", i);
            const real_t *bi = param(f, name);
            for (int j = 0; j < W; j++) {
                double s = bi[j];
                for (int q = 0; q < in_dim; q++)
                    s += (double)wi[j * in_dim + q] * z[q];
                a[j] = sin((double)w[j] * s);
            }
            memcpy(z, a, sizeof(double) * (size_t)W);
            in_dim = W;
        }
        for (int c = 0; c < d.C; c++) {
            double s = 0;
            for (int q = 0; q < W; q++)
                s += (double)wo[c * W + q] * z[q];
            const double slow = log(1e-2) / d.decay_slow, fast = log(1e-2) / d.decay_fast;
            const double delta = d.C > 1 ? slow + (fast - slow) * c / (d.C - 1) : slow;
            h[l * d.C + c] = s * exp(-t * fabs(delta));
        }
    }
    free(z);
    free(a);
}

/* y (L,C) = the whole operator on the fixture's global input. */
static void ref_forward(const fixture *f, double *y) {
    const ref_dims d = ref_dims_of(f);
    const int C = d.C, C3 = 3 * C, K = d.K;
    const int64_t L = f->L;
    double *proj = calloc((size_t)(L * C3), sizeof(double)), *uc = calloc((size_t)(L * C3), sizeof(double));
    double *h = calloc((size_t)(L * C), sizeof(double)), *z = calloc((size_t)(L * C), sizeof(double));
    const real_t *wi = param(f, "in_proj.weight"), *bi = param(f, "in_proj.bias");
    const real_t *ws = param(f, "short_conv.weight"), *bs = param(f, "short_conv.bias");
    const real_t *bc = param(f, "filter.bias"), *wo = param(f, "out_proj.weight"),
                 *bo = param(f, "out_proj.bias");
    for (int64_t l = 0; l < L; l++)
        for (int o = 0; o < C3; o++) {
            double s = bi[o];
            for (int c = 0; c < C; c++)
                s += (double)wi[o * C + c] * f->u_global[l * C + c];
            proj[l * C3 + o] = s;
        }
    for (int64_t l = 0; l < L; l++)
        for (int o = 0; o < C3; o++) {
            double s = bs[o];
            for (int j = 0; j < K; j++)
                if (l - j >= 0) s += (double)ws[o * K + j] * proj[(l - j) * C3 + o];
            uc[l * C3 + o] = s;
        }
    ref_filter(f, h, L);
    for (int64_t l = 0; l < L; l++)
        for (int c = 0; c < C; c++)
            z[l * C + c] = uc[l * C3 + C + c] * uc[l * C3 + 2 * C + c];
    for (int64_t t = 0; t < L; t++) {
        double gated[TEST_C];
        for (int c = 0; c < C; c++) {
            double conv = 0;
            for (int64_t s = 0; s <= t; s++)
                conv += h[(t - s) * C + c] * z[s * C + c];
            gated[c] = uc[t * C3 + c] * (conv + (double)bc[c] * z[t * C + c]);
        }
        for (int o = 0; o < C; o++) {
            double s = bo[o];
            for (int c = 0; c < C; c++)
                s += (double)wo[o * C + c] * gated[c];
            y[t * C + o] = s;
        }
    }
    free(proj);
    free(uc);
    free(h);
    free(z);
}

/* Largest |a - b| / max(1, |b|) over this rank's rows against a global (L,C) reference,
 * maximised over the SP group. */
static double compare_rows(const fixture *f, const real_t *local, const double *global) {
    double worst = 0;
    for (int64_t i = 0; i < f->T; i++) {
        const int64_t p = strand_shard_position(&f->shard, i);
        for (int c = 0; c < f->C; c++) {
            const double b = global[p * f->C + c];
            worst = fmax(worst, fabs((double)local[i * f->C + c] - b) / fmax(1.0, fabs(b)));
        }
    }
    MPI_Allreduce(MPI_IN_PLACE, &worst, 1, MPI_DOUBLE, MPI_MAX, f->grid.sp_comm);
    return worst;
}

/* ---- checks ---- */

static void check_gradients(const char *strategy) {
    char key[64];
    snprintf(key, sizeof key, "fft.strategy=%s", strategy);
    const char *overrides[] = {key};
    strand_config config;
    config_init(&config, overrides, 1);
    /* 7 tokens: at 3-4 ranks some shards are shorter than the short conv's halo (2 rows). */
    fixture f;
    CHECK(fixture_init(&f, &config, 7, 0, STRAND_LAYOUT_CONTIGUOUS) == STRAND_OK);
    if (!f.ready) {
        fixture_free(&f);
        return;
    }
    CHECK(run_forward(&f) == STRAND_OK);
    memset(f.din, 0, sizeof(real_t) * (size_t)(f.T * f.C));
    CHECK(f.mixer.ops->backward(&f.mixer, f.din, f.grads, f.r, f.u, f.params, &f.shard) == STRAND_OK);
    /* The trainer's all-reduce completes the partial sums of every rank. */
    CHECK(strand_allreduce_sum(f.grid.world, f.grads, f.table.total) == STRAND_OK);
    real_t *din_global = calloc((size_t)(f.L * f.C), sizeof(real_t));
    for (int64_t i = 0; i < f.T; i++) {
        const int64_t p = strand_shard_position(&f.shard, i);
        memcpy(din_global + p * f.C, f.din + i * f.C, sizeof(real_t) * (size_t)f.C);
    }
    CHECK(strand_allreduce_sum(f.grid.sp_comm, din_global, f.L * f.C) == STRAND_OK);

    /* Every parameter tensor, then the input (index table.count). */
    double worst_max = 0, worst_norm = 0;
    const char *worst_name = "";
    for (int p = 0; p <= f.table.count; p++) {
        const strand_param_info *info = p < f.table.count ? &f.table.items[p] : NULL;
        gradcheck_result res =
            info ? gradcheck_run(f.params + info->offset, info->size, f.grads + info->offset, global_loss, &f,
                                 GRADCHECK_EPS, GRADCHECK_FLOOR, 0)
                 : gradcheck_run(f.u_global, f.L * f.C, din_global, global_loss, &f, GRADCHECK_EPS,
                                 GRADCHECK_FLOOR, 0);
        char name[96];
        snprintf(name, sizeof name, "%s %s", strategy, info ? info->name : "input");
        if (f.grid.world_rank == 0 && (!HYENA_OK(res) || getenv("HYENA_VERBOSE")))
            gradcheck_print(stderr, name, res);
        CHECK_MSG(HYENA_OK(res), "%s (ranks %d)", name, f.grid.world_size);
        if (!(res.max_rel <= worst_max)) {
            worst_max = res.max_rel;
            worst_name = info ? info->name : "input";
        }
        worst_norm = fmax(worst_norm, res.norm_rel);
    }
    if (f.grid.world_rank == 0)
        fprintf(stderr, "  gradients %s: %d tensors + input, worst max_rel %.3e (%s), worst norm_rel %.3e\n",
                strategy, f.table.count, worst_max, worst_name, worst_norm);
    free(din_global);
    fixture_free(&f);
}

/* Output against the direct implementation, on the whole window at every rank count. */
static void check_reference(const char *strategy, const char *max_len, int64_t L, int layout) {
    char key[64], key_len[64], key_seq[64];
    snprintf(key, sizeof key, "fft.strategy=%s", strategy);
    snprintf(key_len, sizeof key_len, "hyena.max_len=%s", max_len);
    snprintf(key_seq, sizeof key_seq, "train.seq_len=%lld", (long long)L);
    const char *overrides[] = {key, key_len, key_seq};
    strand_config config;
    config_init(&config, overrides, 3);
    fixture f;
    CHECK(fixture_init(&f, &config, L, 0, layout) == STRAND_OK);
    if (!f.ready) {
        fixture_free(&f);
        return;
    }
    double *y = malloc(sizeof(double) * (size_t)(L * f.C));
    ref_forward(&f, y);
    CHECK(run_forward(&f) == STRAND_OK);
    const double err = compare_rows(&f, f.out, y);
    if (f.grid.world_rank == 0)
        fprintf(stderr, "  reference %s max_len=%s L=%lld %s: max error %.3e\n", strategy, max_len,
                (long long)L, layout == STRAND_LAYOUT_ZIGZAG ? "zigzag" : "contiguous", err);
    CHECK_MSG(err < REF_TOL, "output vs direct reference (%s, max_len %s): %.3e", strategy, max_len, err);

    /* The filter on this rank's positions against the test's own filter. */
    real_t *h = malloc(sizeof(real_t) * (size_t)(f.T * f.C));
    CHECK(strand_hyena_filter(&f.mixer, h, f.params) == STRAND_OK);
    ref_filter(&f, y, L);
    const double herr = compare_rows(&f, h, y);
    CHECK_MSG(herr < REF_TOL, "filter vs direct reference: %.3e", herr);
    free(h);
    free(y);
    fixture_free(&f);
}

/* The filter and the output do not depend on the window length: a window of L1 tokens sharded over
 * every rank against a window of L2 > L1 tokens held whole by each rank. */
static void check_grid_fixed(void) {
    const char *overrides[] = {"fft.strategy=alltoall"};
    strand_config config;
    config_init(&config, overrides, 1);
    const int64_t L1 = 9, L2 = (int64_t)config_value(&config, "hyena.max_len");
    fixture a, b;
    CHECK(fixture_init(&a, &config, L1, 0, STRAND_LAYOUT_CONTIGUOUS) == STRAND_OK);
    CHECK(fixture_init(&b, &config, L2, 1, STRAND_LAYOUT_CONTIGUOUS) == STRAND_OK);
    if (a.ready && b.ready) {
        CHECK(a.table.total == b.table.total);
        memcpy(b.params, a.params, sizeof(real_t) * (size_t)a.table.total);
        /* The same input on the common prefix. */
        memcpy(b.u_global, a.u_global, sizeof(real_t) * (size_t)(L1 * a.C));
        real_t *ha = malloc(sizeof(real_t) * (size_t)(a.T * a.C)),
               *hb = malloc(sizeof(real_t) * (size_t)(L2 * b.C));
        CHECK(strand_hyena_filter(&a.mixer, ha, a.params) == STRAND_OK);
        CHECK(strand_hyena_filter(&b.mixer, hb, b.params) == STRAND_OK);
        double *full = malloc(sizeof(double) * (size_t)(L2 * b.C));
        for (int64_t i = 0; i < L2 * b.C; i++)
            full[i] = hb[i];
        const double herr = compare_rows(&a, ha, full);
        CHECK_MSG(herr < SLICE_TOL, "filter slice vs longer window: %.3e", herr);
        CHECK(run_forward(&a) == STRAND_OK);
        CHECK(run_forward(&b) == STRAND_OK);
        for (int64_t i = 0; i < L2 * b.C; i++)
            full[i] = b.out[i];
        const double yerr = compare_rows(&a, a.out, full);
        CHECK_MSG(yerr < REF_TOL, "output on a prefix vs longer window: %.3e", yerr);
        if (a.grid.world_rank == 0) fprintf(stderr, "  fixed grid: filter %.3e, output %.3e\n", herr, yerr);
        free(ha);
        free(hb);
        free(full);
    }
    fixture_free(&a);
    fixture_free(&b);
}

static void check_errors(void) {
    strand_config config;
    config_init(&config, NULL, 0);
    int size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    fixture f;
    /* A window longer than the position grid. */
    CHECK(fixture_init(&f, &config, (int64_t)config_value(&config, "hyena.max_len") + 1, 0,
                       STRAND_LAYOUT_CONTIGUOUS) == STRAND_ERR_CONFIG);
    CHECK(!f.ready);
    fixture_free(&f);
    /* max_len = 0 takes train.seq_len. */
    const char *seq[] = {"hyena.max_len=0", "train.seq_len=8"};
    config_init(&config, seq, 2);
    CHECK(fixture_init(&f, &config, 9, 0, STRAND_LAYOUT_CONTIGUOUS) == STRAND_ERR_CONFIG);
    fixture_free(&f);
    CHECK(fixture_init(&f, &config, 8, 0, STRAND_LAYOUT_CONTIGUOUS) == STRAND_OK);
    fixture_free(&f);
    (void)size;
    strand_error_clear();
}

/* ---- whole model ---- */

static void check_model(void) {
    const char *overrides[] = {"model.d_model=8",         "model.layers=hyena,conv", "model.mlp_hidden=8",
                               "model.norm_position=pre", "train.seq_len=9",         "fft.strategy=fftw-mpi"};
    strand_config config;
    config_init(&config, overrides, 6);
    const int64_t L = config.seq_len;
    strand_grid grid;
    CHECK(strand_grid_init(&grid, MPI_COMM_WORLD, 0, 1) == STRAND_OK);
    strand_shard shard;
    CHECK(strand_shard_init(&shard, &grid, L, STRAND_LAYOUT_CONTIGUOUS) == STRAND_OK);
    strand_model model;
    int status = strand_model_create(&model, &config, &shard);
    CHECK_MSG(status == STRAND_OK, "model with a hyena block: %s", strand_error_message());
    if (status != STRAND_OK) {
        strand_shard_free(&shard);
        strand_grid_free(&grid);
        return;
    }
    strand_model_init_params(&model, 5);
    /* The model's init must run the mixer's own (STRAND_INIT_BY_LAYER) initialisation; without it
     * the short conv starts at zero and the mixer passes no signal, so the differences below would
     * only compare rounding noise. */
    int init_ok = 0;
    for (int p = 0; p < model.table.count; p++) {
        const strand_param_info *info = &model.table.items[p];
        if (strcmp(info->layer, "block0.mixer") == 0 && strcmp(info->name, "filter.sine_freq") == 0)
            init_ok = model.params[info->offset] == (real_t)config_value(&config, "hyena.sine_freq");
    }
    CHECK_MSG(init_ok, "strand_model_init_params does not run the mixer's init_params "
                       "(block0.mixer/filter.sine_freq is not hyena.sine_freq); model gradients not checked");
    if (!init_ok) {
        strand_model_free(&model);
        strand_shard_free(&shard);
        strand_grid_free(&grid);
        return;
    }
    uint64_t rng = 77;
    for (int64_t i = 0; i < model.table.total; i++)
        model.params[i] += (real_t)gradcheck_uniform(&rng, -0.3, 0.3);
    strand_token_t *global = malloc(sizeof(strand_token_t) * ((size_t)L + 1)),
                   *inputs = malloc(sizeof(strand_token_t) * ((size_t)shard.T)),
                   *targets = malloc(sizeof(strand_token_t) * ((size_t)shard.T));
    uint64_t token_rng = 3;
    for (int64_t i = 0; i <= L; i++)
        global[i] = (strand_token_t)(gradcheck_rng_next(&token_rng) % 5);
    for (int64_t i = 0; i < shard.T; i++) {
        const int64_t p = strand_shard_position(&shard, i);
        inputs[i] = global[p];
        targets[i] = global[p + 1];
    }
    model_ctx ctx = {&model, &shard, inputs, targets, grid.world, 1.0 / (double)L};
    double loss = 0;
    CHECK(strand_model_forward(&model, inputs, targets, &shard, &loss) == STRAND_OK);
    memset(model.grads, 0, sizeof(real_t) * (size_t)model.table.total);
    CHECK(strand_model_backward(&model, inputs, &shard, (real_t)ctx.scale) == STRAND_OK);
    CHECK(strand_allreduce_sum(grid.world, model.grads, model.table.total) == STRAND_OK);
    real_t *analytic = malloc(sizeof(real_t) * (size_t)model.table.total);
    memcpy(analytic, model.grads, sizeof(real_t) * (size_t)model.table.total);
    int checked = 0;
    for (int p = 0; p < model.table.count; p++) {
        const strand_param_info *info = &model.table.items[p];
        /* a few elements of every tensor: the mixer's own check covers each element */
        gradcheck_result res = gradcheck_run(model.params + info->offset, info->size, analytic + info->offset,
                                             model_loss, &ctx, GRADCHECK_EPS, 1e-2, 6);
        char name[128];
        snprintf(name, sizeof name, "model %s/%s", info->layer, info->name);
        if (grid.world_rank == 0 && !HYENA_OK(res)) gradcheck_print(stderr, name, res);
        CHECK_MSG(HYENA_OK(res), "%s (ranks %d)", name, grid.world_size);
        checked++;
    }
    if (grid.world_rank == 0) fprintf(stderr, "  model: %d tensors checked\n", checked);
    free(analytic);
    free(global);
    free(inputs);
    free(targets);
    strand_model_free(&model);
    strand_shard_free(&shard);
    strand_grid_free(&grid);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    const char *strategies[] = {"fftw-mpi", "alltoall"};
    for (int s = 0; s < 2; s++) {
        check_reference(strategies[s], "12", 9, STRAND_LAYOUT_CONTIGUOUS);
        check_reference(strategies[s], "0", 9, STRAND_LAYOUT_CONTIGUOUS);
        check_reference(strategies[s], "0", 11, STRAND_LAYOUT_ZIGZAG);
        check_gradients(strategies[s]);
    }
    check_grid_fixed();
    check_errors();
    check_model();
    int status = test_finish("test_hyena");
    int any = 0;
    MPI_Allreduce(&status, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any;
}
