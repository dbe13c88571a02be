/* strand probe jacobian and gradient from a checkpoint: the model built for one window on this world
 * (DP = 1, the window sharded over every rank as in training), the checkpoint's parameters, then
 * one forward over a window of the dataset (or of given bases) and the span Jacobian, or the
 * gradient signal g(k) averaged over windows of the dataset (strand/probe.h). */
#define _POSIX_C_SOURCE 200809L /* popen, pclose */
#include "strand/probe.h"

#include "parallel/consistency.h"

#include "strand/ckpt.h"
#include "strand/dataset.h"
#include "strand/train.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    strand_grid grid;
    strand_shard shard;
    strand_model model;
    strand_dataset dataset;
    real_t *m, *v;
    strand_token_t *window, *inputs, *targets;
} prober;

static int bases_to_tokens(const char *bases, strand_token_t *tokens) {
    static const char letters[] = "ACGTN";
    static const strand_token_t ids[] = {STRAND_TOKEN_A, STRAND_TOKEN_C, STRAND_TOKEN_G, STRAND_TOKEN_T,
                                         STRAND_TOKEN_N};
    for (int64_t i = 0; bases[i]; i++) {
        const char *at = strchr(letters, toupper((unsigned char)bases[i]));
        if (!at || !*at)
            STRAND_FAIL(STRAND_ERR_INPUT, "--tokens: character %lld is '%c'; give A, C, G, T or N",
                        (long long)i + 1, bases[i]);
        tokens[i] = ids[at - letters];
    }
    return STRAND_OK;
}

/* The window [offset, offset + L) of /tokens, inside one training or validation range. Every rank
 * reads all of it (L tokens: small next to the model). Collective over world. */
static int read_window(prober *p, const char *path, int64_t *offset, int64_t L, MPI_Comm world) {
    STRAND_CALL(strand_dataset_open(&p->dataset, path, world));
    const strand_dataset *d = &p->dataset;
    if (*offset < 0) {
        if (d->n_train < 1 || d->train[0].length < L)
            STRAND_FAIL(STRAND_ERR_INPUT,
                        "%s: the first training range holds %lld tokens, fewer than the window of %lld (give "
                        "--window or --offset)",
                        path, d->n_train > 0 ? (long long)d->train[0].length : 0LL, (long long)L);
        *offset = d->train[0].offset;
    }
    int inside = 0;
    for (int s = 0; s < 2 && !inside; s++) {
        const strand_token_range *ranges = s == 0 ? d->train : d->val;
        const int64_t count = s == 0 ? d->n_train : d->n_val;
        for (int64_t i = 0; i < count && !inside; i++)
            inside = *offset >= ranges[i].offset && *offset + L <= ranges[i].offset + ranges[i].length;
    }
    if (!inside)
        STRAND_FAIL(STRAND_ERR_INPUT,
                    "--offset %lld --window %lld: tokens %lld to %lld of %s are not inside one training or "
                    "validation range",
                    (long long)*offset, (long long)L, (long long)*offset, (long long)(*offset + L - 1), path);
    /* every rank checks the same tokens: the refusal is the same everywhere */
    STRAND_CALL(strand_dataset_read(&p->dataset, *offset, L, p->window));
    for (int64_t i = 0; i < L; i++)
        if (p->window[i] >= STRAND_VOCAB_SIZE)
            STRAND_FAIL(STRAND_ERR_INPUT, "%s: token %lld is %d, not a token", path, (long long)(*offset + i),
                        p->window[i]);
    return STRAND_OK;
}

static int write_csv(const char *path, const strand_probe_jacobian_result *j) {
    FILE *f = fopen(path, "w");
    if (!f) STRAND_FAIL(STRAND_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    int bad = fprintf(f, "index,singular_value\n") < 0;
    for (int i = 0; i < j->n && !bad; i++)
        bad = fprintf(f, "%d,%.17g\n", i, j->sigma[i]) < 0;
    if (fclose(f) != 0) bad = 1;
    if (bad) STRAND_FAIL(STRAND_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    return STRAND_OK;
}

/* The model for a window of L tokens on this world (DP = 1), with the checkpoint's parameters,
 * and the window buffers (L + 1 tokens; T + 1 inputs and targets). Collective over world. */
static int prober_open(prober *p, strand_config *config, MPI_Comm world, const char *checkpoint, int64_t L,
                       int64_t *checkpoint_step) {
    if (L < 2) STRAND_FAIL(STRAND_ERR_INPUT, "the window holds %lld tokens: give at least 2", (long long)L);
    /* Keys whose 0 means the training window keep the training window's (as strand sample). The
     * probe only runs forward: no recompute (it would leave one block's states), no offload. */
    strand_config_pin_window_keys(config);
    config->seq_len = L;
    config->sp = 0, config->dp = 1;
    config->recompute = STRAND_RECOMPUTE_NONE;
    config->offload[0] = '\0';
    STRAND_CALL(strand_agree(world, strand_grid_init(&p->grid, world, 0, 1)));
    STRAND_CALL(strand_agree(world, strand_shard_init(&p->shard, &p->grid, L, strand_train_layout(config))));
    STRAND_CALL(strand_agree(world, strand_model_create(&p->model, config, &p->shard)));
    const int64_t T = p->shard.T;
    int status = STRAND_OK;
    p->m = strand_alloc(sizeof(real_t) * (size_t)p->model.table.total, "optimizer state (read, unused)");
    p->v = strand_alloc(sizeof(real_t) * (size_t)p->model.table.total, "optimizer state (read, unused)");
    p->window = strand_alloc(sizeof *p->window * ((size_t)L + 1), "probe window");
    p->inputs = strand_alloc(sizeof *p->inputs * ((size_t)T + 1), "probe inputs");
    p->targets = strand_alloc(sizeof *p->targets * ((size_t)T + 1), "probe targets");
    if (!p->m || !p->v || !p->window || !p->inputs || !p->targets) status = STRAND_ERR_NOMEM;
    STRAND_CALL(strand_agree(world, status));
    strand_ckpt_meta *meta = strand_alloc(sizeof *meta, "checkpoint metadata");
    status = strand_agree(world, meta ? STRAND_OK : STRAND_ERR_NOMEM);
    if (status != STRAND_OK) { /* the ranks that did allocate free theirs */
        strand_free(meta);
        return status;
    }
    status = strand_ckpt_check(checkpoint, &p->model.table, NULL, 0, world, meta);
    *checkpoint_step = meta->step;
    strand_free(meta);
    STRAND_CALL(status);
    strand_ckpt_state state = {.table = &p->model.table, .params = p->model.params, .m = p->m, .v = p->v};
    STRAND_CALL(strand_ckpt_read(checkpoint, &state, world));
    return STRAND_OK;
}

/* An empty prober that prober_close may be called on whatever step failed. */
static void prober_clear(prober *p) {
    memset(p, 0, sizeof *p);
    p->grid.world = p->grid.sp_comm = p->grid.dp_comm = MPI_COMM_NULL;
}

static void prober_close(prober *p) {
    strand_dataset_close(&p->dataset); /* safe when never opened */
    strand_free(p->m), strand_free(p->v), strand_free(p->window), strand_free(p->inputs),
        strand_free(p->targets);
    strand_model_free(&p->model);
    strand_shard_free(&p->shard);
    strand_grid_free(&p->grid);
}

static int probe_run(prober *p, strand_config *config, MPI_Comm world, const strand_probe_options *o,
                     strand_probe_result *result) {
    char text[5][64];
    snprintf(text[0], sizeof text[0], "%d", o->jacobian.block);
    snprintf(text[1], sizeof text[1], "%lld", (long long)o->jacobian.position);
    snprintf(text[2], sizeof text[2], "%lld", (long long)o->jacobian.span);
    snprintf(text[3], sizeof text[3], "%lld %lld", (long long)o->offset, (long long)o->window);
    snprintf(text[4], sizeof text[4], "%d", o->jacobian.lstm_path);
    STRAND_CALL(strand_consistency_config(world, config));
    STRAND_CALL(strand_consistency_value(world, "--checkpoint", o->checkpoint));
    STRAND_CALL(strand_consistency_value(world, "--tokens", o->tokens ? o->tokens : ""));
    STRAND_CALL(strand_consistency_value(world, "--block", text[0]));
    STRAND_CALL(strand_consistency_value(world, "--position", text[1]));
    STRAND_CALL(strand_consistency_value(world, "--span", text[2]));
    STRAND_CALL(strand_consistency_value(world, "--offset/--window", text[3]));
    STRAND_CALL(strand_consistency_value(world, "--lstm-path", text[4]));
    const int64_t L = o->tokens ? (int64_t)strlen(o->tokens) : o->window > 0 ? o->window : config->seq_len;
    STRAND_CALL(prober_open(p, config, world, o->checkpoint, L, &result->checkpoint_step));
    const int64_t T = p->shard.T;
    int64_t offset = o->offset;
    if (o->tokens)
        STRAND_CALL(strand_agree(world, bases_to_tokens(o->tokens, p->window)));
    else
        STRAND_CALL(strand_agree(world, read_window(p, config->data_path, &offset, L, world)));
    for (int64_t i = 0; i < T; i++) {
        const int64_t at = strand_shard_position(&p->shard, i);
        p->inputs[i] = p->window[at];
        p->targets[i] = at + 1 < L ? p->window[at + 1] : STRAND_TOKEN_PAD;
    }
    /* one window on its own: no state carried in from a previous one */
    strand_model_reset(&p->model);
    double loss = 0;
    STRAND_CALL(
        strand_agree(world, strand_model_forward(&p->model, p->inputs, p->targets, &p->shard, &loss)));
    STRAND_CALL(strand_probe_jacobian(&p->model, &p->shard, &o->jacobian, &result->jacobian));
    if (o->csv)
        STRAND_CALL(
            strand_agree(world, p->grid.world_rank == 0 ? write_csv(o->csv, &result->jacobian) : STRAND_OK));
    result->window = L;
    result->offset = o->tokens ? -1 : offset;
    result->sp = p->grid.sp_size;
    return STRAND_OK;
}

int strand_probe_run(const strand_config *config, MPI_Comm world, const strand_probe_options *o,
                     strand_probe_result *result) {
    prober p;
    prober_clear(&p);
    memset(result, 0, sizeof *result);
    strand_config c = *config;
    int status = probe_run(&p, &c, world, o, result);
    prober_close(&p);
    return status;
}

/* ---- strand probe gradient ---- */

void strand_probe_gradient_free(strand_probe_gradient_result *result) {
    strand_free(result->mean);
    result->mean = result->std = result->min = result->max = NULL;
}

static int gradient_write_csv(const char *path, const strand_probe_gradient_result *r) {
    FILE *f = fopen(path, "w");
    if (!f) STRAND_FAIL(STRAND_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    int bad = fprintf(f, "k,mean_norm,std,min,max\n") < 0;
    for (int64_t k = 0; k <= r->position && !bad; k++)
        bad = fprintf(f, "%lld,%.17g,%.17g,%.17g,%.17g\n", (long long)k, r->mean[k], r->std[k], r->min[k],
                      r->max[k]) < 0;
    if (fclose(f) != 0) bad = 1;
    if (bad) STRAND_FAIL(STRAND_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    return STRAND_OK;
}

static int gnuplot_missing(void) {
    return system("command -v gnuplot >/dev/null 2>&1") != 0;
}

/* log g against log k by gnuplot, from a CSV of gradient_write_csv (k = 0 and g = 0 left out:
 * the log axes cannot show them). Serial (rank 0). */
static int gradient_plot(const char *png, const char *csv, const strand_probe_gradient_result *r) {
    if (strpbrk(png, "'\n") || strpbrk(csv, "'\n"))
        STRAND_FAIL(STRAND_ERR_INPUT, "--plot %s: a path with a quote or a newline cannot go to gnuplot",
                    png);
    FILE *g = popen("gnuplot 2>&1", "w");
    if (!g) STRAND_FAIL(STRAND_ERR_IO, "cannot run gnuplot: %s", strerror(errno));
    fprintf(g,
            "set terminal png size 900,600\nset output '%s'\nset datafile separator ','\n"
            "set logscale xy\nset format x '%%g'\nset format y '10^{%%L}'\n"
            "set xlabel 'k, positions back from T = %lld (log scale)'\n"
            "set ylabel 'gradient norm ||d loss_T / d x_{T-k}|| (log scale)'\n"
            "set title 'gradient signal over %lld window%s (per step %.4g, slope %.3g per decade)'\n"
            "set grid\nplot '%s' every ::1 using ($1 >= 1 && $2 > 0 ? $1 : 1/0):2 with lines lw 2 "
            "title 'mean', '' every ::1 using ($1 >= 1 && $5 > 0 ? $1 : 1/0):5 with lines lc rgb 'gray' "
            "title 'max', '' every ::1 using ($1 >= 1 && $4 > 0 ? $1 : 1/0):4 with lines lc rgb 'gray' "
            "dt 2 title 'min'\n",
            png, (long long)r->position, (long long)r->windows, r->windows == 1 ? "" : "s", r->per_step,
            r->power, csv);
    const int rc = pclose(g);
    struct stat st;
    if (rc != 0 || stat(png, &st) != 0 || st.st_size == 0)
        STRAND_FAIL(STRAND_ERR_IO, "gnuplot could not write %s (exit status %d)", png, rc);
    return STRAND_OK;
}

/* The rank-0 outputs: the CSV (or a temporary one beside the plot) and the plot. */
static int gradient_outputs(const strand_probe_gradient_options *o, const strand_probe_gradient_result *r) {
    if (o->csv) STRAND_CALL(gradient_write_csv(o->csv, r));
    if (!o->plot) return STRAND_OK;
    char tmp[4096];
    const char *csv = o->csv;
    if (!csv) {
        if (snprintf(tmp, sizeof tmp, "%s.data.csv", o->plot) >= (int)sizeof tmp)
            STRAND_FAIL(STRAND_ERR_INPUT, "--plot: the path is too long");
        STRAND_CALL(gradient_write_csv(tmp, r));
        csv = tmp;
    }
    const int status = gradient_plot(o->plot, csv, r);
    if (!o->csv) remove(tmp);
    return status;
}

/* Consecutive windows of L + 1 tokens (stride L) in the validation ranges, or in the training
 * ranges when no validation range holds one: how many there are, and the i-th one's offset. */
static int64_t gradient_windows(const strand_dataset *d, int validation, int64_t L, int64_t want,
                                int64_t *offsets) {
    const strand_token_range *ranges = validation ? d->val : d->train;
    const int64_t count = validation ? d->n_val : d->n_train;
    int64_t n = 0;
    for (int64_t i = 0; i < count && n < want; i++)
        for (int64_t at = ranges[i].offset; at + L + 1 <= ranges[i].offset + ranges[i].length && n < want;
             at += L)
            offsets[n++] = at;
    return n;
}

static int gradient_run(prober *p, strand_config *config, MPI_Comm world,
                        const strand_probe_gradient_options *o, strand_probe_gradient_result *result) {
    char text[3][64];
    snprintf(text[0], sizeof text[0], "%lld", (long long)o->windows);
    snprintf(text[1], sizeof text[1], "%lld", (long long)o->window);
    snprintf(text[2], sizeof text[2], "%lld", (long long)o->position);
    STRAND_CALL(strand_consistency_config(world, config));
    STRAND_CALL(strand_consistency_value(world, "--checkpoint", o->checkpoint));
    STRAND_CALL(strand_consistency_value(world, "--windows", text[0]));
    STRAND_CALL(strand_consistency_value(world, "--window", text[1]));
    STRAND_CALL(strand_consistency_value(world, "--position", text[2]));
    if (o->windows < 1)
        STRAND_FAIL(STRAND_ERR_INPUT, "--windows %lld: give at least 1", (long long)o->windows);
    int rank = 0;
    MPI_Comm_rank(world, &rank);
    /* before the work: a missing gnuplot is refused at once, not after the windows */
    if (o->plot)
        STRAND_CALL(strand_agree(
            world, rank == 0 && gnuplot_missing()
                       ? strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                          "--plot needs gnuplot, which is not installed (Debian package "
                                          "gnuplot-nox: apt-get install gnuplot-nox)")
                       : STRAND_OK));
    const int64_t L = o->window > 0 ? o->window : config->seq_len;
    STRAND_CALL(prober_open(p, config, world, o->checkpoint, L, &result->checkpoint_step));
    const int64_t position = o->position < 0 ? L - 1 : o->position;
    if (position >= L)
        STRAND_FAIL(STRAND_ERR_INPUT, "--position %lld is past the window's last position %lld",
                    (long long)position, (long long)L - 1);
    const int64_t n = position + 1;
    double *sum = strand_alloc(sizeof(double) * (size_t)n * 5, "probe gradient curves");
    int64_t *offsets = strand_alloc(sizeof(int64_t) * (size_t)o->windows, "probe gradient windows");
    int status = sum && offsets ? STRAND_OK : STRAND_ERR_NOMEM;
    if (status == STRAND_OK) status = strand_dataset_open(&p->dataset, config->data_path, world);
    status = strand_agree(world, status);
    int64_t windows = 0;
    if (status == STRAND_OK) {
        result->from_validation = 1;
        windows = gradient_windows(&p->dataset, 1, L, o->windows, offsets);
        if (windows == 0)
            result->from_validation = 0, windows = gradient_windows(&p->dataset, 0, L, o->windows, offsets);
        if (windows == 0)
            status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                      "%s: no validation or training range holds a window of %lld tokens and "
                                      "its next token (give a shorter --window)",
                                      config->data_path, (long long)L);
    }
    result->mean = sum; /* owns the block: freed by strand_probe_gradient_free */
    result->std = sum ? sum + n : NULL, result->min = sum ? sum + 2 * n : NULL;
    result->max = sum ? sum + 3 * n : NULL;
    double *g = sum ? sum + 4 * n : NULL;
    for (int64_t k = 0; k < n && sum; k++)
        result->min[k] = INFINITY;
    for (int64_t w = 0; w < windows && status == STRAND_OK; w++) {
        status = strand_agree(world, strand_dataset_read(&p->dataset, offsets[w], L + 1, p->window));
        for (int64_t i = 0; i <= L && status == STRAND_OK; i++)
            if ((int64_t)p->window[i] >= (int64_t)p->model.V)
                status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                          "%s: token %lld is %d, not a token", config->data_path,
                                          (long long)(offsets[w] + i), p->window[i]);
        if (status != STRAND_OK) break;
        for (int64_t i = 0; i < p->shard.T; i++) {
            const int64_t at = strand_shard_position(&p->shard, i);
            p->inputs[i] = p->window[at], p->targets[i] = p->window[at + 1];
        }
        status = strand_probe_gradient(&p->model, &p->shard, p->inputs, p->targets, position, g);
        for (int64_t k = 0; k < n && status == STRAND_OK; k++) {
            result->mean[k] += g[k], result->std[k] += g[k] * g[k];
            result->min[k] = fmin(result->min[k], g[k]), result->max[k] = fmax(result->max[k], g[k]);
        }
    }
    strand_free(offsets);
    STRAND_CALL(status);
    for (int64_t k = 0; k < n; k++) {
        result->mean[k] /= (double)windows;
        /* the population std over the windows (0 for one window) */
        result->std[k] = sqrt(fmax(0, result->std[k] / (double)windows - result->mean[k] * result->mean[k]));
    }
    result->window = L, result->position = position, result->windows = windows;
    result->sp = p->grid.sp_size;
    result->fit_points = strand_probe_gradient_fit(result->mean, n, &result->per_step, &result->power);
    STRAND_CALL(strand_agree(world, rank == 0 ? gradient_outputs(o, result) : STRAND_OK));
    return STRAND_OK;
}

int strand_probe_gradient_run(const strand_config *config, MPI_Comm world,
                              const strand_probe_gradient_options *o, strand_probe_gradient_result *result) {
    prober p;
    prober_clear(&p);
    memset(result, 0, sizeof *result);
    strand_config c = *config;
    int status = gradient_run(&p, &c, world, o, result);
    prober_close(&p);
    return status;
}
