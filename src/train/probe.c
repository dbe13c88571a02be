/* strand probe jacobian from a checkpoint: the model built for one window on this world (DP = 1,
 * the window sharded over every rank as in training), the checkpoint's parameters, one forward
 * over a window of the dataset (or of given bases), then the span Jacobian (strand/probe.h). */
#include "strand/probe.h"

#include "parallel/consistency.h"

#include "strand/ckpt.h"
#include "strand/dataset.h"
#include "strand/train.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

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
    STRAND_CALL(strand_agree(world, meta ? STRAND_OK : STRAND_ERR_NOMEM));
    status = strand_ckpt_check(o->checkpoint, &p->model.table, NULL, 0, world, meta);
    result->checkpoint_step = meta->step;
    strand_free(meta);
    STRAND_CALL(status);
    strand_ckpt_state state = {.table = &p->model.table, .params = p->model.params, .m = p->m, .v = p->v};
    STRAND_CALL(strand_ckpt_read(o->checkpoint, &state, world));
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
    memset(&p, 0, sizeof p);
    memset(result, 0, sizeof *result);
    p.grid.world = p.grid.sp_comm = p.grid.dp_comm = MPI_COMM_NULL;
    strand_config c = *config;
    int status = probe_run(&p, &c, world, o, result);
    strand_dataset_close(&p.dataset); /* safe when never opened */
    strand_free(p.m), strand_free(p.v), strand_free(p.window), strand_free(p.inputs), strand_free(p.targets);
    strand_model_free(&p.model);
    strand_shard_free(&p.shard);
    strand_grid_free(&p.grid);
    return status;
}
