/* Mixer conformance suite, in the spirit of ggml's test-backend-ops: one program walks the mixer
 * registry (strand_mixer_at) and, for every mixer and every entry of its test_configs, builds small
 * models whose blocks are all that mixer and checks them in every layout the mixer accepts
 * (contiguous; zigzag unless STRAND_MIXER_CONTIGUOUS). A mixer added to the registry, with its
 * test_configs, is covered without writing a test.
 *
 *   sp         loss and every parameter gradient at the world's SP (dp = 1, uneven shards) equal
 *              the SP = 1 reference each rank computes over MPI_COMM_SELF with the same parameters
 *   gradcheck  (double build) central differences of the global loss for a deterministic sample of
 *              every parameter tensor (the embedding included) against the analytic gradient, at
 *              the world's SP, collectively (gradcheck.h's step, floor and tolerance; the floor at
 *              the model's scale, and Richardson extrapolation: see check_gradcheck)
 *   recompute  train.recompute = block and train.offload (4 blocks, so one input goes through the
 *   offload    file): loss and gradients bit-identical to keeping everything; with
 *              STRAND_MIXER_CARRIES_STATE, strand_model_create must refuse both (STRAND_ERR_CONFIG)
 *   step       (STRAND_MIXER_STEP; rank 0, SP = 1) step mode over the window equals the forward's
 *              logits row by row
 *   carry      (STRAND_MIXER_CARRIES_STATE) the state carried out of window A goes through a real
 *              checkpoint file into a fresh model; window B then gives bit-identical losses
 *   reset      (STRAND_MIXER_CARRIES_STATE) after strand_model_reset window B's loss equals a fresh
 *              model's (no stale memory), and the carried state did change it
 *   plan       the model's memory plan is not empty and the dry run (strand_memory_estimate_here)
 *              predicts exactly the model's plan plus the trainer's for every component the model's
 *              plan holds, on the most loaded rank (grads: plus MPI's allreduce scratch)
 *
 * Carried state: window A is run first and the state it leaves is saved; every measured forward of
 * window B starts from that state (strand_model_carry_load), so finite differences and repeated
 * passes see the same function (the carried state is a constant of it) and window B really uses
 * the memory in every check.
 *
 * Every check prints one line on rank 0:
 *   mixer=NAME config="..." layout=L sp=N check=X ok (err=...)     or  ... check=X FAIL (err=...; ...)
 * and the program exits 1 when any check failed (after running the others). */
#define _POSIX_C_SOURCE 200809L
#include "gradcheck.h"
#include "test_tmpdir.h"

#include "strand/ckpt.h"
#include "strand/config.h"
#include "strand/dataset.h"
#include "strand/dist.h"
#include "strand/layout.h"
#include "strand/model.h"
#include "strand/model_step.h"
#include "parallel/offload.h"
#include "train/optim.h"
#include "strand/memory_model.h"
#include "strand/plan.h"
#include "strand/train.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The models: BLOCKS blocks of the mixer (MEMORY_BLOCKS for recompute/offload: offload keeps the
 * last 3 inputs in memory), a window that leaves uneven shards at 2, 3 and 4 ranks (also in
 * zigzag, which needs 2 * SP chunks), and SAMPLES finite-difference indices per tensor. */
enum { WINDOW = 23, BLOCKS = 2, MEMORY_BLOCKS = 4, SAMPLES = 6, PARAM_SEED = 7 };

#ifdef STRAND_REAL_DOUBLE
#define SP_TOL 1e-12
#define STEP_TOL 1e-10
#else
/* Not 1e-5: hyena's gradients at SP = 2..4 differ from SP = 1 by up to 1.07e-5 of a tensor's
 * largest in float (measured; its filter gradients are float sums in another order). A 1% error
 * is still 200 times over. */
#define SP_TOL 5e-5
#define STEP_TOL 1e-4
#endif

static int world_rank = 0, world_size = 1;
static int checks = 0, failures = 0;

typedef struct {
    const strand_mixer_ops *ops;
    const char *overrides; /* one entry of ops->test_configs */
    int layout;            /* enum strand_layout_kind */
    unsigned caps;         /* ops->capabilities for these options */
    int index;             /* running number of the (mixer, config, layout), for file names */
} conf_case;

static const char *layout_name(int layout) {
    return layout == STRAND_LAYOUT_ZIGZAG ? "zigzag" : "contiguous";
}

/* One result line (rank 0 prints; every rank that calls counts). */
__attribute__((format(printf, 6, 7))) static void report(const conf_case *c, int sp, const char *check,
                                                         int ok, double err, const char *fmt, ...) {
    checks++;
    if (!ok) failures++;
    if (world_rank != 0) return;
    char detail[768] = "";
    if (fmt) {
        va_list args;
        va_start(args, fmt);
        vsnprintf(detail, sizeof detail, fmt, args);
        va_end(args);
    }
    printf("mixer=%s config=\"%s\" layout=%s sp=%d check=%s %s (err=%.3e%s%s)\n", c->ops->name, c->overrides,
           layout_name(c->layout), sp, check, ok ? "ok" : "FAIL", err, detail[0] ? "; " : "", detail);
    fflush(stdout);
}

/* NaN compares as a failure and reduces as the worst value. */
static double worst_of(double a, double b) {
    if (isnan(a) || isnan(b)) return INFINITY;
    return a > b ? a : b;
}

static double world_max(double x) {
    if (isnan(x)) x = INFINITY;
    MPI_Allreduce(MPI_IN_PLACE, &x, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return x;
}

static int world_all(int ok) {
    MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    return ok;
}

/* ---- configurations ---- */

/* "a=1;b=2" applied with strand_config_set, items trimmed, empty items skipped. */
static int apply_overrides(strand_config *config, const char *list) {
    const char *p = list;
    while (*p) {
        const char *end = strchr(p, ';');
        size_t length = end ? (size_t)(end - p) : strlen(p);
        while (length && (*p == ' ' || *p == '\t'))
            p++, length--;
        while (length && (p[length - 1] == ' ' || p[length - 1] == '\t'))
            length--;
        if (length) {
            char item[512];
            if (length >= sizeof item)
                STRAND_FAIL(STRAND_ERR_CONFIG, "test config item longer than %zu bytes", sizeof item - 1);
            memcpy(item, p, length);
            item[length] = '\0';
            STRAND_CALL(strand_config_set(config, item));
        }
        if (!end) break;
        p = end + 1;
    }
    return STRAND_OK;
}

/* The configuration of case c with `blocks` blocks of its mixer: the suite's small model, then the
 * mixer's test overrides, then `extra` (may be NULL). validate = 0 leaves validation to the caller. */
static int case_config(strand_config *config, const conf_case *c, int blocks, const char *extra,
                       int validate) {
    strand_config_defaults(config);
    char setting[STRAND_CONFIG_STRING_BYTES + 32] = "model.layers=";
    for (int l = 0; l < blocks; l++) {
        if (l) strncat(setting, ",", sizeof setting - strlen(setting) - 1);
        strncat(setting, c->ops->name, sizeof setting - strlen(setting) - 1);
    }
    STRAND_CALL(strand_config_set(config, setting));
    /* fft.planner = estimate: FFTW's measuring planner would dominate the run time. */
    const char *base[] = {"model.d_model=16", "model.mlp_hidden=8", "train.seq_len=23",
                          "fft.planner=estimate"};
    for (size_t i = 0; i < sizeof base / sizeof *base; i++)
        STRAND_CALL(strand_config_set(config, base[i]));
    snprintf(setting, sizeof setting, "parallel.layout=%s", layout_name(c->layout));
    STRAND_CALL(strand_config_set(config, setting));
    STRAND_CALL(apply_overrides(config, c->overrides));
    if (extra) STRAND_CALL(strand_config_set(config, extra));
    if (config->seq_len != WINDOW)
        STRAND_FAIL(STRAND_ERR_CONFIG,
                    "a test config must not change train.seq_len (the suite's window is %d)", WINDOW);
    return validate ? strand_config_validate(config) : STRAND_OK;
}

/* ---- a model on one communicator with its two windows ---- */

typedef struct {
    strand_grid grid;
    strand_shard shard;
    strand_model model;
    int have_grid, have_shard, have_model;
    strand_token_t *tokens[2], *targets[2]; /* this rank's rows of window A (index 0) and window B */
    real_t *carry;                          /* state after window A (carry_count values); NULL when none */
    int64_t carry_count;
    double scale; /* 1 / window tokens: losses are means */
} harness;

/* Token at a global position of window w: the same on every rank and in every model. */
static strand_token_t token_at(int w, int64_t position) {
    uint64_t state =
        (uint64_t)(w + 1) * 0x9E3779B97F4A7C15ull ^ (uint64_t)(position + 1) * 0xBF58476D1CE4E5B9ull;
    gradcheck_rng_next(&state);
    return (strand_token_t)(gradcheck_rng_next(&state) % STRAND_VOCAB_SIZE);
}

/* Parameters from (seed), then moved off the ones/zeros initialisations so that norms and biases
 * take part: a pure function of the seed and the table, so every model of a case agrees. */
static void fill_params(strand_model *model, uint64_t seed) {
    strand_model_init_params(model, seed);
    uint64_t rng = seed * 0x9E3779B97F4A7C15ull + 12345;
    for (int p = 0; p < model->table.count; p++) {
        const strand_param_info *info = &model->table.items[p];
        for (int64_t j = info->offset; j < info->offset + info->size; j++)
            model->params[j] += (real_t)gradcheck_uniform(&rng, -0.3, 0.3);
    }
}

static void harness_close(harness *h) {
    if (h->have_model) strand_model_free(&h->model);
    if (h->have_shard) strand_shard_free(&h->shard);
    if (h->have_grid) strand_grid_free(&h->grid);
    for (int w = 0; w < 2; w++)
        free(h->tokens[w]), free(h->targets[w]);
    free(h->carry);
    memset(h, 0, sizeof *h);
}

/* Collective over comm; the status is the same on every rank of comm. On failure the harness is
 * closed. (A model whose create failed is not freed: its state is unspecified.) */
static int harness_open(harness *h, const strand_config *config, MPI_Comm comm, int layout, uint64_t seed) {
    memset(h, 0, sizeof *h);
    int status = strand_grid_init(&h->grid, comm, 0, 1);
    if (status != STRAND_OK) return status;
    h->have_grid = 1;
    status = strand_agree(h->grid.world, strand_shard_init(&h->shard, &h->grid, config->seq_len, layout));
    if (status != STRAND_OK) return harness_close(h), status;
    h->have_shard = 1;
    status = strand_model_create(&h->model, config, &h->shard);
    if (status != STRAND_OK) return harness_close(h), status;
    h->have_model = 1;
    fill_params(&h->model, seed);
    const int64_t T = h->shard.T;
    int ok = 1;
    for (int w = 0; w < 2; w++) {
        h->tokens[w] = malloc(sizeof(strand_token_t) * ((size_t)T + 1));
        h->targets[w] = malloc(sizeof(strand_token_t) * ((size_t)T + 1));
        if (!h->tokens[w] || !h->targets[w]) {
            ok = 0;
            continue;
        }
        for (int64_t i = 0; i < T; i++) {
            const int64_t p = strand_shard_position(&h->shard, i);
            h->tokens[w][i] = token_at(w, p);
            h->targets[w][i] = token_at(w, p + 1);
        }
    }
    h->scale = 1.0 / (double)config->seq_len;
    status = strand_agree(h->grid.world, ok ? STRAND_OK : STRAND_ERR_NOMEM);
    if (status != STRAND_OK) harness_close(h);
    return status;
}

/* Run window A when the model carries state, and keep the state it leaves. */
static int harness_prime(harness *h, unsigned caps) {
    int64_t widest = strand_model_carry_count(&h->model);
    MPI_Allreduce(MPI_IN_PLACE, &widest, 1, MPI_INT64_T, MPI_MAX, h->grid.world);
    if (!(caps & STRAND_MIXER_CARRIES_STATE) && widest == 0) return STRAND_OK;
    double loss = 0;
    STRAND_CALL(strand_agree(h->grid.world,
                             strand_model_forward(&h->model, h->tokens[0], h->targets[0], &h->shard, &loss)));
    h->carry_count = strand_model_carry_count(&h->model);
    h->carry = malloc(sizeof(real_t) * (size_t)(h->carry_count > 0 ? h->carry_count : 1));
    STRAND_CALL(strand_agree(h->grid.world, h->carry ? STRAND_OK : STRAND_ERR_NOMEM));
    if (h->carry_count > 0) strand_model_carry_save(&h->model, h->carry);
    return STRAND_OK;
}

/* Mean loss of window B over the whole window (every rank gets it), from the primed state. */
static int harness_forward(harness *h, double *loss) {
    if (h->carry && h->carry_count > 0) strand_model_carry_load(&h->model, h->carry);
    double local = 0;
    STRAND_CALL(strand_agree(
        h->grid.world, strand_model_forward(&h->model, h->tokens[1], h->targets[1], &h->shard, &local)));
    STRAND_CALL(strand_allreduce_sum_double(h->grid.world, &local, 1));
    *loss = local * h->scale;
    return STRAND_OK;
}

/* Loss and gradient of window B into model.grads; reduce: summed over the SP group. */
static int harness_gradient(harness *h, double *loss, int reduce) {
    memset(h->model.grads, 0, sizeof(real_t) * (size_t)h->model.table.total);
    STRAND_CALL(harness_forward(h, loss));
    STRAND_CALL(strand_agree(h->grid.world,
                             strand_model_backward(&h->model, h->tokens[1], &h->shard, (real_t)h->scale)));
    if (reduce) STRAND_CALL(strand_allreduce_sum(h->grid.world, h->model.grads, h->model.table.total));
    return STRAND_OK;
}

#ifdef STRAND_REAL_DOUBLE
static double fd_loss(void *ctx) {
    double loss = NAN;
    return harness_forward(ctx, &loss) == STRAND_OK ? loss : NAN;
}
#endif

/* A FAIL line for a step that could not run (status agreed over the world). */
static void report_setup(const conf_case *c, int sp, const char *check, const char *what) {
    report(c, sp, check, 0, NAN, "%s failed: %s", what, strand_error_message());
}

/* ---- a. SP = N against SP = 1 ---- */

static void check_sp(const conf_case *c) {
    strand_config config;
    if (strand_agree(MPI_COMM_WORLD, case_config(&config, c, BLOCKS, NULL, 1)) != STRAND_OK) {
        report_setup(c, world_size, "sp", "configuration");
        return;
    }
    harness h, ref;
    if (harness_open(&h, &config, MPI_COMM_WORLD, c->layout, PARAM_SEED) != STRAND_OK) {
        report_setup(c, world_size, "sp", "create (SP group)");
        return;
    }
    if (strand_agree(MPI_COMM_WORLD, harness_open(&ref, &config, MPI_COMM_SELF, STRAND_LAYOUT_CONTIGUOUS,
                                                  PARAM_SEED)) != STRAND_OK) {
        harness_close(&h);
        {
            report_setup(c, world_size, "sp", "create (SP = 1 reference)");
            return;
        }
    }
    const int sp = h.grid.sp_size;
    const int64_t total = h.model.table.total;
    if (ref.model.table.total != total || ref.model.table.count != h.model.table.count) {
        report(c, sp, "sp", 0, NAN, "parameter tables differ: %lld vs %lld values", (long long)total,
               (long long)ref.model.table.total);
        harness_close(&h), harness_close(&ref);
        return;
    }
    memcpy(ref.model.params, h.model.params, sizeof(real_t) * (size_t)total);
    double loss = NAN, ref_loss = NAN;
    int status = harness_prime(&h, c->caps);
    if (status == STRAND_OK) status = harness_gradient(&h, &loss, 1);
    int ref_status = harness_prime(&ref, c->caps);
    if (ref_status == STRAND_OK) ref_status = harness_gradient(&ref, &ref_loss, 1);
    if (strand_agree(MPI_COMM_WORLD, status == STRAND_OK ? ref_status : status) != STRAND_OK) {
        report_setup(c, sp, "sp", "forward/backward");
        harness_close(&h), harness_close(&ref);
        return;
    }
    /* Loss: relative. Gradients: per tensor, the largest difference relative to the tensor's largest
     * reference gradient (at least 1e-3 of the model's largest, so an all-but-zero tensor is held to
     * the model's scale). */
    struct {
        double value;
        int index; /* -1: the loss, else the tensor */
    } worst = {fabs(loss - ref_loss) / fmax(fabs(ref_loss), 1e-300), -1};
    if (isnan(worst.value)) worst.value = INFINITY;
    double model_scale = 0;
    for (int64_t i = 0; i < total; i++)
        model_scale = fmax(model_scale, fabs((double)ref.model.grads[i]));
    for (int p = 0; p < h.model.table.count; p++) {
        const strand_param_info *info = &h.model.table.items[p];
        double diff = 0, scale = 0;
        for (int64_t j = info->offset; j < info->offset + info->size; j++) {
            diff = worst_of(diff, fabs((double)h.model.grads[j] - (double)ref.model.grads[j]));
            scale = fmax(scale, fabs((double)ref.model.grads[j]));
        }
        const double err = diff == 0 ? 0 : diff / fmax(scale, 1e-3 * model_scale);
        if (worst_of(err, worst.value) > worst.value)
            worst.value = worst_of(err, worst.value), worst.index = p;
    }
    MPI_Allreduce(MPI_IN_PLACE, &worst, 1, MPI_DOUBLE_INT, MPI_MAXLOC, MPI_COMM_WORLD);
    const int ok = worst.value <= SP_TOL;
    const char *name = worst.index < 0 ? "loss" : h.model.table.items[worst.index].layer;
    const char *field = worst.index < 0 ? "" : h.model.table.items[worst.index].name;
    report(c, sp, "sp", ok, worst.value, ok ? NULL : "tol %.0e; worst %s%s%s; loss %.17g vs %.17g at SP = 1",
           SP_TOL, name, field[0] ? "/" : "", field, loss, ref_loss);
    harness_close(&h), harness_close(&ref);
}

/* ---- b. finite differences at the world's SP ---- */

#ifdef STRAND_REAL_DOUBLE
static void check_gradcheck(const conf_case *c) {
    strand_config config;
    if (strand_agree(MPI_COMM_WORLD, case_config(&config, c, BLOCKS, NULL, 1)) != STRAND_OK) {
        report_setup(c, world_size, "gradcheck", "configuration");
        return;
    }
    harness h;
    if (harness_open(&h, &config, MPI_COMM_WORLD, c->layout, PARAM_SEED) != STRAND_OK) {
        report_setup(c, world_size, "gradcheck", "create");
        return;
    }
    const int sp = h.grid.sp_size;
    const int64_t total = h.model.table.total;
    double loss = NAN;
    int status = harness_prime(&h, c->caps);
    if (status == STRAND_OK) status = harness_gradient(&h, &loss, 1);
    real_t *analytic = malloc(sizeof(real_t) * (size_t)total);
    if (strand_agree(MPI_COMM_WORLD, status == STRAND_OK && !analytic ? STRAND_ERR_NOMEM : status) !=
        STRAND_OK) {
        report_setup(c, sp, "gradcheck", "forward/backward");
        free(analytic);
        harness_close(&h);
        return;
    }
    memcpy(analytic, h.model.grads, sizeof(real_t) * (size_t)total);
    /* Every rank perturbs the same indices and sees the same (all-reduced) loss, so every rank
     * computes the same results; rank 0 prints the failing tensors.
     *
     * gradcheck.h's step, floor and tolerance, with two changes for a whole model:
     * - the floor is the model's: elements at least GRADCHECK_FLOOR times the model's largest
     *   gradient are held to a relative error, smaller ones to an absolute error against that
     *   floor. Per tensor it would compare rounding with rounding: the loss (~2) carries ~1e-16 of
     *   rounding, i.e. ~5e-11 in a central difference, and whole tensors (s4d's log_a_re, a_im, B,
     *   C) have gradients of 1e-7 .. 1e-5 here. The norm-wise error is required of tensors that
     *   reach the floor. A 1% error in any gradient above ~1e-8 still fails.
     * - Richardson extrapolation of the steps h and h/2 (4 D(h/2) - D(h)) / 3 removes the h^2
     *   truncation term, which alone is 1.4e-6 for s4d's log_dt (exp(log_dt) inside exp()).
     * Each element goes through gradcheck_run on its own (one index, no floor), so the metrics
     * below can use the model's floor. */
    double model_scale = 0;
    for (int64_t i = 0; i < total; i++)
        model_scale = fmax(model_scale, fabs((double)analytic[i]));
    const double floor_abs = GRADCHECK_FLOOR * model_scale;
    double worst = 0, worst_a = 0, worst_n = 0;
    int worst_index = -1, failed = 0;
    int64_t compared = 0;
    for (int p = 0; p < h.model.table.count; p++) {
        const strand_param_info *info = &h.model.table.items[p];
        const int64_t n = info->size, count = n < SAMPLES ? n : SAMPLES;
        real_t *x = h.model.params + info->offset;
        const real_t *a = analytic + info->offset;
        double max_rel = 0, diff2 = 0, a2 = 0, n2 = 0, scale = 0, at = 0, nt = 0;
        int complete = 1;
        for (int64_t k = 0; k < count; k++) {
            /* evenly spaced, as gradcheck_run samples */
            const int64_t i = count == n ? k : (int64_t)((double)k * (double)n / (double)count);
            const gradcheck_result coarse = gradcheck_run(x + i, 1, a + i, fd_loss, &h, GRADCHECK_EPS, 0, 0);
            const gradcheck_result fine =
                gradcheck_run(x + i, 1, a + i, fd_loss, &h, GRADCHECK_EPS / 2, 0, 0);
            complete &= coarse.checked == 1 && fine.checked == 1;
            const double an = (double)a[i], num = (4 * fine.worst_numeric - coarse.worst_numeric) / 3;
            const double err = fabs(an - num);
            const double rel = err == 0 ? 0 : err / fmax(floor_abs, fmax(fabs(an), fabs(num)));
            if (!(rel <= max_rel)) max_rel = isnan(rel) ? INFINITY : rel, at = an, nt = num;
            diff2 += err * err, a2 += an * an, n2 += num * num;
            scale = fmax(scale, fabs(an));
        }
        compared += count;
        const double norm_rel = diff2 == 0 ? 0 : sqrt(diff2) / sqrt(fmax(a2, n2));
        const int above_floor = scale >= floor_abs;
        const double err = above_floor ? worst_of(max_rel, norm_rel) : max_rel;
        if (!complete || !(err < GRADCHECK_TOL)) {
            failed++;
            if (world_rank == 0)
                fprintf(stderr,
                        "  gradcheck %s/%s: max_rel %.3e (analytic %.10g numeric %.10g) norm_rel %.3e%s\n",
                        info->layer, info->name, max_rel, at, nt, norm_rel,
                        above_floor ? "" : " (under the floor)");
        }
        if (worst_index < 0 || !(err <= worst)) worst = err, worst_index = p, worst_a = at, worst_n = nt;
    }
    const int ok = world_all(failed == 0);
    const strand_param_info *w = worst_index >= 0 ? &h.model.table.items[worst_index] : NULL;
    report(
        c, sp, "gradcheck", ok, worst,
        "%d tensors, %lld values, %d over tol %.0e, floor %.1e; worst %s/%s (analytic %.10g numeric %.10g)",
        h.model.table.count, (long long)compared, failed, GRADCHECK_TOL, floor_abs, w ? w->layer : "-",
        w ? w->name : "-", worst_a, worst_n);
    free(analytic);
    harness_close(&h);
}
#endif

/* ---- c. recompute and offload against keeping everything ---- */

static void check_memory_modes(const conf_case *c, const char *offload_setting) {
    const char *settings[2] = {"train.recompute=block", offload_setting};
    const char *checks_named[2] = {"recompute", "offload"};
    if (c->caps & STRAND_MIXER_CARRIES_STATE) {
        /* A recomputed forward would advance the carried state twice: create must refuse. */
        for (int m = 0; m < 2; m++) {
            strand_config config;
            if (strand_agree(MPI_COMM_WORLD, case_config(&config, c, MEMORY_BLOCKS, settings[m], 0)) !=
                STRAND_OK) {
                report_setup(c, world_size, checks_named[m], "configuration");
                continue;
            }
            strand_grid grid;
            strand_shard shard;
            if (strand_grid_init(&grid, MPI_COMM_WORLD, 0, 1) != STRAND_OK) {
                report_setup(c, world_size, checks_named[m], "grid");
                continue;
            }
            if (strand_agree(MPI_COMM_WORLD, strand_shard_init(&shard, &grid, config.seq_len, c->layout)) !=
                STRAND_OK) {
                report_setup(c, grid.sp_size, checks_named[m], "shard");
                strand_grid_free(&grid);
                continue;
            }
            strand_model model;
            const int status = strand_model_create(&model, &config, &shard);
            const int ok = world_all(status == STRAND_ERR_CONFIG);
            if (ok)
                report(c, grid.sp_size, checks_named[m], 1, 0, "refused with carried state: %s",
                       strand_error_message());
            else
                report(c, grid.sp_size, checks_named[m], 0, NAN,
                       "carried state, but strand_model_create returned %d on rank %d, not STRAND_ERR_CONFIG "
                       "(%s)",
                       status, world_rank, status == STRAND_OK ? "accepted" : strand_error_message());
            if (status == STRAND_OK) strand_model_free(&model);
            strand_shard_free(&shard);
            strand_grid_free(&grid);
        }
        return;
    }
    strand_config config;
    harness keep;
    if (strand_agree(MPI_COMM_WORLD, case_config(&config, c, MEMORY_BLOCKS, "train.recompute=none", 1)) !=
            STRAND_OK ||
        harness_open(&keep, &config, MPI_COMM_WORLD, c->layout, PARAM_SEED) != STRAND_OK) {
        report_setup(c, world_size, "recompute", "keep-everything model");
        return;
    }
    const int sp = keep.grid.sp_size;
    double keep_loss = NAN;
    /* Twice: a second pass must not see anything the first left behind (offload tickets, shared
     * buffers); its results are the ones compared. */
    int status = harness_prime(&keep, c->caps);
    for (int pass = 0; pass < 2 && status == STRAND_OK; pass++)
        status = harness_gradient(&keep, &keep_loss, 0);
    if (status != STRAND_OK) {
        report_setup(c, sp, "recompute", "keep-everything forward/backward");
        harness_close(&keep);
        return;
    }
    const int64_t total = keep.model.table.total;
    for (int m = 0; m < 2; m++) {
        harness alt;
        if (strand_agree(MPI_COMM_WORLD, case_config(&config, c, MEMORY_BLOCKS, settings[m], 1)) !=
                STRAND_OK ||
            harness_open(&alt, &config, MPI_COMM_WORLD, c->layout, PARAM_SEED) != STRAND_OK) {
            report_setup(c, sp, checks_named[m], "create");
            continue;
        }
        double loss = NAN;
        status = alt.model.table.total == total ? STRAND_OK : STRAND_ERR_INTERNAL;
        if (status == STRAND_OK) status = harness_prime(&alt, c->caps);
        for (int pass = 0; pass < 2 && status == STRAND_OK; pass++)
            status = harness_gradient(&alt, &loss, 0);
        if (strand_agree(MPI_COMM_WORLD, status) != STRAND_OK) {
            report_setup(c, sp, checks_named[m], "forward/backward");
            harness_close(&alt);
            continue;
        }
        double diff = fabs(loss - keep_loss);
        for (int64_t i = 0; i < total; i++)
            diff = worst_of(diff, fabs((double)alt.model.grads[i] - (double)keep.model.grads[i]));
        int same = memcmp(&loss, &keep_loss, sizeof loss) == 0 &&
                   memcmp(alt.model.grads, keep.model.grads, sizeof(real_t) * (size_t)total) == 0;
        /* The block inputs really went through the file: 2 passes x (blocks - 3) inputs x 2 ways. */
        int64_t bytes = 0, expect = 0;
        if (m == 1) {
            double seconds = 0;
            if (alt.model.offload) strand_offload_stats(alt.model.offload, &bytes, &seconds);
            expect = 2 * 2 * (alt.model.n_layers - 3) * alt.shard.T * alt.model.C * (int64_t)sizeof(real_t);
        }
        const int moved = world_all(bytes == expect);
        same = world_all(same);
        diff = world_max(diff);
        if (m == 0)
            report(c, sp, checks_named[m], same, diff,
                   same ? NULL : "not bit-identical (loss %.17g vs %.17g)", loss, keep_loss);
        else
            report(c, sp, checks_named[m], same && moved, diff,
                   same && moved ? NULL : "%s; offload moved %lld bytes on rank %d, expected %lld",
                   same ? "bit-identical" : "not bit-identical", (long long)bytes, world_rank,
                   (long long)expect);
        harness_close(&alt);
    }
    harness_close(&keep);
}

/* ---- d. step mode against the forward (rank 0, SP = 1) ---- */

static void check_step(const conf_case *c) {
    if (!(c->caps & STRAND_MIXER_STEP) || world_rank != 0) return;
    strand_config config;
    harness h;
    if (case_config(&config, c, BLOCKS, NULL, 1) != STRAND_OK ||
        harness_open(&h, &config, MPI_COMM_SELF, STRAND_LAYOUT_CONTIGUOUS, PARAM_SEED) != STRAND_OK) {
        report_setup(c, 1, "step", "create");
        return;
    }
    /* A fresh model: no carried state, like a sampled sequence. */
    const int64_t T = h.shard.T;
    const int V = h.model.V;
    double loss = 0;
    real_t *logits = malloc(sizeof(real_t) * (size_t)(T * V));
    int status = logits ? strand_model_forward(&h.model, h.tokens[1], h.targets[1], &h.shard, &loss)
                        : STRAND_ERR_NOMEM;
    if (status != STRAND_OK) {
        free(logits);
        harness_close(&h);
        {
            report_setup(c, 1, "step", "forward");
            return;
        }
    }
    memcpy(logits, h.model.logits, sizeof(real_t) * (size_t)(T * V));
    strand_model_step step;
    status = strand_model_step_init(&step, &h.model, T);
    double worst = 0;
    int64_t worst_t = -1, fed = 0;
    for (int64_t t = 0; t < T && status == STRAND_OK; t++) {
        status = strand_model_step_forward(&step, h.tokens[1][t]);
        if (status != STRAND_OK) break;
        fed++;
        double scale = 0, diff = 0;
        for (int v = 0; v < V; v++) {
            scale = fmax(scale, fabs((double)logits[t * V + v]));
            diff = worst_of(diff, fabs((double)step.logits[v] - (double)logits[t * V + v]));
        }
        const double rel = diff / fmax(scale, 1e-300);
        if (worst_t < 0 || worst_of(rel, worst) > worst) worst = worst_of(rel, worst), worst_t = t;
    }
    strand_model_step_free(&step);
    if (status != STRAND_OK)
        report(c, 1, "step", 0, worst, "step mode failed after %lld positions: %s", (long long)fed,
               strand_error_message());
    else
        report(c, 1, "step", worst <= STEP_TOL, worst,
               worst <= STEP_TOL ? NULL : "tol %.0e; worst position %lld of %lld", STEP_TOL,
               (long long)worst_t, (long long)T);
    free(logits);
    harness_close(&h);
}

/* ---- e. carried state through a checkpoint, and reset ---- */

static void check_carry(const conf_case *c, const char *tmpdir) {
    if (!(c->caps & STRAND_MIXER_CARRIES_STATE)) return;
    strand_config config;
    harness a, b, fresh;
    if (strand_agree(MPI_COMM_WORLD, case_config(&config, c, BLOCKS, NULL, 1)) != STRAND_OK ||
        harness_open(&a, &config, MPI_COMM_WORLD, c->layout, PARAM_SEED) != STRAND_OK) {
        report_setup(c, world_size, "carry", "create");
        return;
    }
    const int sp = a.grid.sp_size;
    const int64_t total = a.model.table.total;
    if (harness_prime(&a, c->caps) != STRAND_OK) {
        report_setup(c, sp, "carry", "window A");
        harness_close(&a);
        return;
    }
    /* A checkpoint at step 1 holding a's parameters (zero moments) and its carried state. */
    strand_ckpt_meta *meta = calloc(1, sizeof *meta);
    real_t *moments = calloc((size_t)(2 * total), sizeof(real_t));
    real_t *scratch = calloc((size_t)(2 * total), sizeof(real_t));
    int status = meta && moments && scratch ? STRAND_OK : STRAND_ERR_NOMEM;
    char dir[512], path[STRAND_CKPT_PATH_BYTES] = "";
    snprintf(dir, sizeof dir, "%s/carry-%d", tmpdir, c->index);
    if (status == STRAND_OK) {
        strand_ckpt_meta_init(meta, &config, &a.model.table);
        meta->step = meta->adam_t = 1;
        meta->tokens_seen = (int64_t)config.accum_steps * config.seq_len;
        meta->lr = strand_lr_at(&config, 0);
        meta->first_loss = meta->last_loss = 2.0;
        meta->dp = 1, meta->sp = sp, meta->world = world_size;
        strand_ckpt_state state = {.table = &a.model.table,
                                   .params = a.model.params,
                                   .m = moments,
                                   .v = moments + total,
                                   .carry = a.carry,
                                   .carry_count = a.carry_count};
        status = strand_ckpt_write(dir, meta, &state, 0, MPI_COMM_WORLD, path, sizeof path);
    }
    if (strand_agree(MPI_COMM_WORLD, status) != STRAND_OK) {
        report_setup(c, sp, "carry", "checkpoint write");
        free(meta), free(moments), free(scratch);
        harness_close(&a);
        return;
    }
    snprintf(path, sizeof path, "%s/ckpt-1.h5", dir);
    /* Another seed: the parameters must come from the file. */
    int restored = 0;
    real_t *carry = NULL;
    status = harness_open(&b, &config, MPI_COMM_WORLD, c->layout, PARAM_SEED + 100);
    if (status == STRAND_OK) {
        status = strand_ckpt_check(path, &b.model.table, &config, 0, MPI_COMM_WORLD, meta);
        strand_ckpt_state state = {
            .table = &b.model.table, .params = b.model.params, .m = scratch, .v = scratch + total};
        if (status == STRAND_OK) status = strand_ckpt_read(path, &state, MPI_COMM_WORLD);
        const int64_t count = strand_model_carry_count(&b.model);
        carry = malloc(sizeof(real_t) * (size_t)(count > 0 ? count : 1));
        if (status == STRAND_OK) status = strand_agree(MPI_COMM_WORLD, carry ? STRAND_OK : STRAND_ERR_NOMEM);
        if (status == STRAND_OK)
            status = strand_ckpt_read_carry(path, carry, count, MPI_COMM_WORLD, &restored);
        if (status == STRAND_OK && restored) strand_model_carry_load(&b.model, carry);
        if (status != STRAND_OK) harness_close(&b);
    }
    free(carry);
    free(meta), free(moments), free(scratch);
    if (strand_agree(MPI_COMM_WORLD, status) != STRAND_OK) {
        report_setup(c, sp, "carry", "checkpoint read");
        harness_close(&a);
        return;
    }
    restored = world_all(restored);
    /* Window B on both, from the state each holds (no harness restore). */
    double la = 0, lb = 0;
    status = strand_agree(MPI_COMM_WORLD,
                          strand_model_forward(&a.model, a.tokens[1], a.targets[1], &a.shard, &la));
    if (status == STRAND_OK)
        status = strand_agree(MPI_COMM_WORLD,
                              strand_model_forward(&b.model, b.tokens[1], b.targets[1], &b.shard, &lb));
    if (status != STRAND_OK) {
        report_setup(c, sp, "carry", "window B");
        harness_close(&a), harness_close(&b);
        return;
    }
    /* tensors only: the padding between them is not part of a checkpoint */
    int same_params = 1;
    for (int p = 0; p < a.model.table.count; p++) {
        const strand_param_info *info = &a.model.table.items[p];
        same_params &= memcmp(a.model.params + info->offset, b.model.params + info->offset,
                              sizeof(real_t) * (size_t)info->size) == 0;
    }
    same_params = world_all(same_params);
    int ok = world_all(memcmp(&la, &lb, sizeof la) == 0) && restored && same_params;
    double diff = world_max(fabs(la - lb));
    report(c, sp, "carry", ok, diff,
           ok ? NULL : "%s%s window B loss on rank %d: %.17g after the checkpoint, %.17g before",
           restored ? "" : "carry not restored by strand_ckpt_read_carry;",
           same_params ? "" : " parameters differ after strand_ckpt_read;", world_rank, lb, la);
    harness_close(&b);

    /* Reset: window B as a fresh model with the same parameters sees it. The carried run must
     * differ from that, or the state carried nothing. */
    double lr = 0, lf = 0;
    strand_model_reset(&a.model);
    status = strand_agree(MPI_COMM_WORLD,
                          strand_model_forward(&a.model, a.tokens[1], a.targets[1], &a.shard, &lr));
    if (status == STRAND_OK) status = harness_open(&fresh, &config, MPI_COMM_WORLD, c->layout, PARAM_SEED);
    if (status == STRAND_OK) {
        memcpy(fresh.model.params, a.model.params, sizeof(real_t) * (size_t)total);
        status = strand_agree(MPI_COMM_WORLD, strand_model_forward(&fresh.model, fresh.tokens[1],
                                                                   fresh.targets[1], &fresh.shard, &lf));
        harness_close(&fresh);
    }
    if (status != STRAND_OK) {
        report_setup(c, sp, "reset", "forward");
        harness_close(&a);
        return;
    }
    double sums[3] = {la, lr, lf};
    MPI_Allreduce(MPI_IN_PLACE, sums, 3, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    const int clean = world_all(memcmp(&lr, &lf, sizeof lr) == 0);
    const int effect = sums[0] != sums[2];
    diff = world_max(fabs(lr - lf));
    report(c, sp, "reset", clean && effect, diff,
           clean && effect ? NULL
                           : "%s; window B loss sums: carried %.17g, after reset %.17g, fresh model %.17g",
           !clean ? "stale state after strand_model_reset" : "the carried state did not change window B",
           sums[0], sums[1], sums[2]);
    harness_close(&a);
}

/* ---- f. the memory plan against the dry run's estimate ---- */

/* strand_memory_estimate_here (the dry run on the grid it runs on) is the model's plan
 * plus the trainer's (strand_train_plan: AdamW moments, token buffers) plus what is not a strand
 * allocation: MPI's allreduce scratch on the gradients (world > 1) and the layout's shard table
 * (data). So on the most loaded rank, for every component the model's plan holds:
 *   estimate = model plan + trainer plan, exactly (grads: plus MPI's scratch, none at 1 rank),
 * and the estimate's planned total = model plan total + trainer plan total, exactly. */
static void check_plan(const conf_case *c) {
    strand_config config;
    harness h;
    if (strand_agree(MPI_COMM_WORLD, case_config(&config, c, BLOCKS, NULL, 1)) != STRAND_OK ||
        harness_open(&h, &config, MPI_COMM_WORLD, c->layout, PARAM_SEED) != STRAND_OK) {
        report_setup(c, world_size, "plan", "create");
        return;
    }
    const int sp = h.grid.sp_size;
    int64_t model_bytes[STRAND_MEM_COMPONENTS] = {0}, expect[STRAND_MEM_COMPONENTS] = {0};
    const int64_t model_total = strand_plan_bytes(&h.model.plan, model_bytes);
    memcpy(expect, model_bytes, sizeof expect);
    strand_plan trainer;
    strand_train_buffers buffers;
    strand_plan_init(&trainer, 1, 0);
    int status = strand_train_plan(&trainer, h.model.table.total, h.shard.T, &buffers);
    const int64_t trainer_total = strand_plan_bytes(&trainer, expect);
    strand_plan_free(&trainer);
    strand_memory_report estimate;
    memset(&estimate, 0, sizeof estimate);
    /* The dry run on this grid (collective): the same declarations, on each rank's own shard. */
    status = strand_agree(MPI_COMM_WORLD, status);
    if (status == STRAND_OK) status = strand_memory_estimate_here(&config, &h.shard, &estimate, NULL);
    /* The estimate is of the most loaded rank: compare there (the lowest such rank). */
    int loaded = h.shard.T == h.shard.max_T ? world_rank : world_size;
    MPI_Allreduce(MPI_IN_PLACE, &loaded, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    /* bad: the first component that differs, -1 none, -2 the planned total, -3 the rows */
    int64_t v[8] = {status, -1, 0, 0,
                    0,      0,  0, 0}; /* status, bad, compared, expected, estimated, rows, scratch */
    double err = 0;
    if (world_rank == loaded && status == STRAND_OK) {
        for (int k = 0; k < STRAND_MEM_COMPONENTS; k++) {
            if (model_bytes[k] == 0) continue;
            v[2]++;
            const int64_t extra = estimate.bytes[k] - expect[k];
            /* MPI's allreduce scratch: not strand's, none at 1 rank, never negative */
            if (k == STRAND_MEM_GRADS && extra >= 0 && (extra == 0 || world_size > 1)) {
                v[6] = extra;
                continue;
            }
            err = fmax(err, fabs((double)extra) / (double)expect[k]);
            if (extra != 0 && v[1] == -1) v[1] = k, v[3] = expect[k], v[4] = estimate.bytes[k];
        }
        if (v[1] == -1 && estimate.planned != model_total + trainer_total)
            v[1] = -2, v[3] = model_total + trainer_total, v[4] = estimate.planned;
        if (v[1] == -1 && estimate.rows != h.shard.T) v[1] = -3, v[3] = h.shard.T, v[4] = estimate.rows;
        v[5] = estimate.rows;
    }
    MPI_Bcast(v, 8, MPI_INT64_T, loaded, MPI_COMM_WORLD);
    MPI_Bcast(&err, 1, MPI_DOUBLE, loaded, MPI_COMM_WORLD);
    const int nonempty = world_all(model_total > 0);
    if (v[0] != STRAND_OK)
        report(c, sp, "plan", 0, NAN, "strand_memory_estimate or strand_train_plan failed (status %d): %s",
               (int)v[0], strand_error_message());
    else if (!nonempty)
        report(c, sp, "plan", 0, NAN, "the model's plan is empty on some rank");
    else if (v[1] != -1)
        report(c, sp, "plan", 0, err, "rank %d: %s: expected %lld, estimated %lld", loaded,
               v[1] == -2   ? "planned total (model + trainer)"
               : v[1] == -3 ? "rows of the most loaded shard"
                            : strand_memory_component_name((int)v[1]),
               (long long)v[3], (long long)v[4]);
    else
        report(c, sp, "plan", 1, err,
               "%d components and the planned total equal on rank %d, %lld rows; grads +%lld of MPI scratch",
               (int)v[2], loaded, (long long)v[5], (long long)v[6]);
    harness_close(&h);
}

/* ---- the registry walk ---- */

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    const double t0 = MPI_Wtime();
    char tmpdir[256];
    test_tmpdir_make(tmpdir, sizeof tmpdir, "conformance");
    char offload_setting[512];
    snprintf(offload_setting, sizeof offload_setting, "train.offload=%s/offload", tmpdir);
    static const char *const defaults_only[] = {"", NULL};
    int index = 0, mixers = 0;
    for (int m = 0; strand_mixer_at(m); m++, mixers++) {
        const strand_mixer_ops *ops = strand_mixer_at(m);
        /* A mixer without test configurations is still covered, with its defaults. */
        const char *const *configs = ops->test_configs ? ops->test_configs : defaults_only;
        if (!ops->test_configs && world_rank == 0)
            printf("mixer=%s: no test_configs, checking its defaults only\n", ops->name);
        for (int k = 0; configs[k]; k++) {
            conf_case c = {ops, configs[k], STRAND_LAYOUT_CONTIGUOUS, 0, index};
            strand_config config;
            if (strand_agree(MPI_COMM_WORLD, case_config(&config, &c, BLOCKS, NULL, 1)) != STRAND_OK) {
                report_setup(&c, world_size, "config", "configuration");
                continue;
            }
            c.caps = ops->capabilities ? ops->capabilities(strand_mixer_options(&config, ops)) : 0;
            for (int layout = STRAND_LAYOUT_CONTIGUOUS; layout <= STRAND_LAYOUT_ZIGZAG; layout++) {
                if (layout == STRAND_LAYOUT_ZIGZAG && (c.caps & STRAND_MIXER_CONTIGUOUS)) continue;
                c.layout = layout;
                c.index = index++;
                check_sp(&c);
#ifdef STRAND_REAL_DOUBLE
                check_gradcheck(&c);
#endif
                check_memory_modes(&c, offload_setting);
                if (layout == STRAND_LAYOUT_CONTIGUOUS) check_step(&c); /* the layout plays no part */
                check_carry(&c, tmpdir);
                check_plan(&c);
            }
        }
    }
    if (mixers == 0) {
        checks++, failures++;
        if (world_rank == 0) printf("FAIL: the mixer registry is empty\n");
    }
    test_tmpdir_remove(tmpdir);
    int any = failures;
    MPI_Allreduce(MPI_IN_PLACE, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (world_rank == 0) {
        printf("test_mixers: %d mixers, %d checks, %d failed, %d ranks, %.1f s\n", mixers, checks, failures,
               world_size, MPI_Wtime() - t0);
        fflush(stdout);
    }
    MPI_Finalize();
    return any ? 1 : 0;
}
