/* Model assembly: parameter table, blocks of (norm, mixer, norm, MLP), head and loss, with the
 * backward pass written by hand in reverse order of the forward. */
#include "strand/model.h"

#include "model/model_internal.h"

#include "strand/dataset.h"
#include "kernels/layers.h"
#include "parallel/offload.h"
#include "core/rng.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- parameter table ---- */

int strand_params_declare(strand_param_table *table, const char *layer, const char *name, int64_t d0,
                          int64_t d1, int init, double init_std, int decay, int *index) {
    if (table->count == table->capacity) {
        int capacity = table->capacity ? 2 * table->capacity : 32;
        strand_param_info *items = strand_alloc(sizeof *items * (size_t)capacity, "parameter table");
        if (!items) return STRAND_ERR_NOMEM;
        if (table->items) memcpy(items, table->items, sizeof *items * (size_t)table->count);
        strand_free(table->items);
        table->items = items;
        table->capacity = capacity;
    }
    strand_param_info *p = &table->items[table->count];
    memset(p, 0, sizeof *p);
    snprintf(p->layer, sizeof p->layer, "%s", layer);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = d1 > 0 ? 2 : 1;
    p->shape[0] = d0;
    p->shape[1] = d1 > 0 ? d1 : 1;
    p->size = d0 * (d1 > 0 ? d1 : 1);
    /* Keep every tensor 64-byte aligned inside the flat array. */
    int64_t align = 64 / (int64_t)sizeof(real_t);
    p->offset = (table->total + align - 1) / align * align;
    p->init = init;
    p->init_std = init_std;
    p->decay = decay;
    table->total = p->offset + p->size;
    if (index) *index = table->count;
    table->count++;
    return STRAND_OK;
}

int strand_params_declare_at(strand_param_table *table, const char *layer, const char *name, int64_t d0,
                             int64_t d1, int init, double init_std, int decay, int64_t *offset, int *index) {
    int i = 0;
    STRAND_CALL(strand_params_declare(table, layer, name, d0, d1, init, init_std, decay, &i));
    *offset = table->items[i].offset;
    if (index) *index = i;
    return STRAND_OK;
}

double strand_model_residual_std(const strand_config *config) {
    int depth = 1;
    for (const char *p = config->layers; *p; p++)
        depth += *p == ',';
    return config->init_std / sqrt(2.0 * depth);
}

void strand_params_free(strand_param_table *table) {
    strand_free(table->items);
    memset(table, 0, sizeof *table);
}

/* ---- mixer registry ---- */

extern const strand_mixer_ops strand_mixer_conv, strand_mixer_attn, strand_mixer_hyena, strand_mixer_s4d,
    strand_mixer_rnn, strand_mixer_lstm, strand_mixer_gru, strand_mixer_ornn, strand_mixer_mingru,
    strand_mixer_minlstm, strand_mixer_mamba, strand_mixer_dilated;

/* The registry: a new mixer is its file plus one entry here. The order is the options' place in
 * strand_config.mixer_options and the order of their sections in a written configuration. */
static const strand_mixer_ops *const mixer_registry[] = {
    &strand_mixer_conv,   &strand_mixer_attn,    &strand_mixer_hyena, &strand_mixer_s4d,
    &strand_mixer_rnn,    &strand_mixer_lstm,    &strand_mixer_gru,   &strand_mixer_ornn,
    &strand_mixer_mingru, &strand_mixer_minlstm, &strand_mixer_mamba, &strand_mixer_dilated};
enum { MIXER_COUNT = sizeof mixer_registry / sizeof *mixer_registry };
_Static_assert((int)MIXER_COUNT <= (int)STRAND_MAX_MIXERS, "raise STRAND_MAX_MIXERS");

const strand_mixer_ops *strand_mixer_at(int index) {
    return index >= 0 && index < MIXER_COUNT ? mixer_registry[index] : NULL;
}

const char *strand_mixer_name(int index) {
    return index >= 0 && index < MIXER_COUNT ? mixer_registry[index]->name : NULL;
}

const strand_mixer_ops *strand_mixer_find(const char *name) {
    for (int i = 0; i < MIXER_COUNT; i++)
        if (strcmp(mixer_registry[i]->name, name) == 0) return mixer_registry[i];
    return NULL;
}

const void *strand_mixer_options(const strand_config *config, const strand_mixer_ops *ops) {
    for (int i = 0; i < MIXER_COUNT; i++)
        if (mixer_registry[i] == ops) return config->mixer_options[i].bytes;
    return NULL;
}

int strand_mixer_create(strand_mixer *mixer, const strand_mixer_ops *ops, int C, const strand_config *config,
                        strand_param_table *table, const char *layer) {
    memset(mixer, 0, sizeof *mixer);
    mixer->ops = ops;
    mixer->C = C;
    mixer->options = strand_mixer_options(config, ops);
    return ops->create(mixer, config, table, layer);
}

int strand_mixer_setup_alone(strand_mixer *mixer, const strand_shard *shard, strand_plan *plan) {
    strand_plan_init(plan, 0, 0);
    STRAND_CALL(strand_agree(shard->grid->sp_comm, mixer->ops->plan(mixer, shard, plan)));
    STRAND_CALL(strand_agree(shard->grid->sp_comm, strand_plan_allocate(plan)));
    return mixer->ops->setup ? mixer->ops->setup(mixer, shard) : STRAND_OK;
}

unsigned strand_model_capabilities(const strand_config *config) {
    char names[256][32];
    const int n = strand_model_split_layers(config->layers, names, 256);
    unsigned caps = 0;
    for (int l = 0; l < n; l++) {
        const strand_mixer_ops *ops = strand_mixer_find(names[l]);
        if (ops && ops->capabilities) caps |= ops->capabilities(strand_mixer_options(config, ops));
    }
    return caps;
}

/* ---- blocks ---- */

static int declare_norm(strand_model *model, const char *layer, int *weight, int *bias) {
    STRAND_CALL(
        strand_params_declare(&model->table, layer, "weight", model->C, 0, STRAND_INIT_ONES, 0, 0, weight));
    *bias = -1;
    if (model->layer_norm)
        STRAND_CALL(
            strand_params_declare(&model->table, layer, "bias", model->C, 0, STRAND_INIT_ZEROS, 0, 0, bias));
    return STRAND_OK;
}

static void norm_forward(const strand_model *model, real_t *out, real_t *mean, real_t *rstd, const real_t *in,
                         int weight, int bias, int64_t T) {
    const real_t eps = (real_t)model->config.norm_eps;
    if (model->layer_norm)
        layernorm_forward(out, mean, rstd, in, PARAM(model, weight), PARAM(model, bias), T, model->C, eps);
    else
        rmsnorm_forward(out, rstd, in, PARAM(model, weight), T, model->C, eps);
}

static void norm_backward(strand_model *model, real_t *dinp, const real_t *dout, const real_t *in,
                          const real_t *mean, const real_t *rstd, int weight, int bias, int64_t T) {
    if (model->layer_norm)
        layernorm_backward(dinp, GRAD(model, weight), GRAD(model, bias), dout, in, PARAM(model, weight), mean,
                           rstd, T, model->C);
    else
        rmsnorm_backward(dinp, GRAD(model, weight), dout, in, PARAM(model, weight), rstd, T, model->C);
}

int strand_model_split_layers(const char *list, char names[][32], int max) {
    int n = 0;
    const char *p = list;
    while (*p && n < max) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len && (*p == ' '))
            p++, len--;
        while (len && p[len - 1] == ' ')
            len--;
        if (len == 0 || len >= 32) return -1;
        memcpy(names[n], p, len);
        names[n][len] = '\0';
        n++;
        if (!end) break;
        p = end + 1;
    }
    return n;
}

/* train.offload: three rotating input buffers are enough to overlap the transfers with compute.
 * In forward, block l's input goes out while block l runs, and must be out before block l + 2
 * writes its output over it; in backward, block l - 3's input comes back into block l's buffer
 * while blocks l - 1 and l - 2 run. The last three inputs never leave memory. */
enum { OFFLOAD_SLOTS = 3 };

/* Whether block l's input goes to the file (the last OFFLOAD_SLOTS stay in their buffers). */
static int offloaded(const strand_model *model, int l) {
    return model->offload && l < model->n_layers - OFFLOAD_SLOTS;
}

/* Remember the first failure of a pass; the pass goes on so every rank reaches the agreement. */
static void keep_first(int *status, int next) {
    if (*status == STRAND_OK) *status = next;
}

/* The model's own buffers: parameters, gradients, each block's input and activations (one set
 * of activations under recompute: the plan shares the "block" group's), head and scratch. */
static int declare_buffers(strand_model *model, strand_plan *plan) {
    const strand_config *config = &model->config;
    const int64_t max_T = model->max_T, TC = max_T * model->C;
    const int H = model->H, F = model->F;
    const int64_t mlp_rows = model->mlp_chunk_rows;
    strand_plan_group(plan, NULL, "model");
    strand_plan_component(plan, STRAND_MEM_PARAMS);
    STRAND_PLAN_ADD(plan, model->params, model->table.total, STRAND_LIFE_PERSISTENT, "parameters");
    strand_plan_component(plan, STRAND_MEM_GRADS);
    STRAND_PLAN_ADD(plan, model->grads, model->table.total, STRAND_LIFE_PERSISTENT, "gradients");
    strand_plan_component(plan, STRAND_MEM_BLOCK_INPUTS);
    if (config->offload[0]) {
        const int slots = model->n_layers < OFFLOAD_SLOTS ? model->n_layers : OFFLOAD_SLOTS;
        for (int i = 0; i < slots; i++)
            STRAND_PLAN_ADD(plan, model->offload_slots[i], TC, STRAND_LIFE_SAVED, "offload slot");
        STRAND_PLAN_ADD(plan, model->write_tickets, model->n_layers, STRAND_LIFE_PERSISTENT,
                        "offload tickets");
        STRAND_PLAN_ADD(plan, model->read_tickets, model->n_layers, STRAND_LIFE_PERSISTENT,
                        "offload tickets");
    } else {
        for (int l = 0; l < model->n_layers; l++)
            STRAND_PLAN_ADD(plan, model->blocks[l].rows.x, TC, STRAND_LIFE_SAVED, "block input");
    }
    strand_plan_component(plan, STRAND_MEM_ACTIVATIONS);
    const int saved = STRAND_LIFE_SAVED | STRAND_PLAN_SHARED;
    /* With recompute the MLP's hidden activations are rebuilt chunk by chunk in backward. */
    const int64_t hidden_rows = model->recompute ? mlp_rows : max_T;
    for (int l = 0; l < model->n_layers; l++) {
        strand_block_rows *r = &model->blocks[l].rows;
        char owner[48];
        snprintf(owner, sizeof owner, "block%d", l);
        STRAND_CALL(strand_plan_group(plan, "block", owner));
        r->hidden_chunk = model->recompute;
        STRAND_PLAN_ADD(plan, r->norm1, TC, saved, "norm1");
        STRAND_PLAN_ADD(plan, r->norm1_mean, max_T, saved, "norm1 mean");
        STRAND_PLAN_ADD(plan, r->norm1_rstd, max_T, saved, "norm1 rstd");
        STRAND_PLAN_ADD(plan, r->mix, TC, saved, "mixer output");
        STRAND_PLAN_ADD(plan, r->h, TC, saved, "block middle");
        STRAND_PLAN_ADD(plan, r->norm2_mean, max_T, saved, "norm2 mean");
        STRAND_PLAN_ADD(plan, r->norm2_rstd, max_T, saved, "norm2 rstd");
        STRAND_PLAN_ADD(plan, r->fc, hidden_rows * F, saved, "mlp fc");
        STRAND_PLAN_ADD(plan, r->act, hidden_rows * H, saved, "mlp activation");
        if (model->pre_norm) {
            STRAND_PLAN_ADD(plan, r->norm2, TC, saved, "norm2");
        } else {
            STRAND_PLAN_ADD(plan, r->a, TC, saved, "residual sum");
            STRAND_PLAN_ADD(plan, r->b, TC, saved, "mlp sum");
        }
    }
    strand_plan_group(plan, NULL, "head");
    strand_plan_component(plan, STRAND_MEM_HEAD);
    STRAND_PLAN_ADD(plan, model->final_in, TC, STRAND_LIFE_SAVED, "final input");
    STRAND_PLAN_ADD(plan, model->final_out, TC, STRAND_LIFE_SAVED, "final norm");
    STRAND_PLAN_ADD(plan, model->final_mean, max_T, STRAND_LIFE_SAVED, "final norm mean");
    STRAND_PLAN_ADD(plan, model->final_rstd, max_T, STRAND_LIFE_SAVED, "final norm rstd");
    STRAND_PLAN_ADD(plan, model->logits, max_T * model->V, STRAND_LIFE_SAVED, "logits");
    STRAND_PLAN_ADD(plan, model->probs, max_T * model->V, STRAND_LIFE_SAVED, "probabilities");
    STRAND_PLAN_ADD(plan, model->losses, max_T, STRAND_LIFE_SAVED, "losses");
    strand_plan_group(plan, NULL, "backward");
    strand_plan_component(plan, STRAND_MEM_GRAD_SCRATCH);
    STRAND_PLAN_ADD(plan, model->d_residual, TC, STRAND_LIFE_SCRATCH, "residual gradient");
    STRAND_PLAN_ADD(plan, model->d_tmp1, TC, STRAND_LIFE_SCRATCH, "gradient scratch");
    STRAND_PLAN_ADD(plan, model->d_tmp2, TC, STRAND_LIFE_SCRATCH, "gradient scratch");
    STRAND_PLAN_ADD(plan, model->d_fc, mlp_rows * F, STRAND_LIFE_SCRATCH, "mlp fc gradient");
    STRAND_PLAN_ADD(plan, model->d_act, mlp_rows * H, STRAND_LIFE_SCRATCH, "mlp activation gradient");
    STRAND_PLAN_ADD(plan, model->d_logits, max_T * model->V, STRAND_LIFE_SCRATCH, "logits gradient");
    strand_plan_component(plan, STRAND_MEM_MIXERS);
    return STRAND_OK;
}

/* Everything of strand_model_create that involves no other rank: the parameter table, the
 * mixers' create, and the model's own buffers in the plan. */
static int model_build(strand_model *model, const strand_config *config, const strand_shard *shard) {
    const int64_t max_T = shard->T;
    model->config = *config;
    model->C = config->d_model;
    model->V = strand_config_vocab(config);
    model->pre_norm = config->norm_position != STRAND_NORM_POST;
    model->layer_norm = config->norm == STRAND_NORM_LAYERNORM;
    model->swiglu = config->mlp == STRAND_MLP_SWIGLU;
    model->max_T = max_T;
    const int C = model->C;
    const int H = strand_config_mlp_hidden(config);
    /* Offloaded block inputs come back only to be re-run: offload implies recompute. */
    model->recompute = config->recompute == STRAND_RECOMPUTE_BLOCK || config->offload[0];
    if (model->recompute && (strand_model_capabilities(config) & STRAND_MIXER_CARRIES_STATE))
        STRAND_FAIL(STRAND_ERR_CONFIG,
                    "train.recompute = block (or train.offload) cannot be combined with a mixer that carries "
                    "state between windows: a recomputed forward would advance that state twice");
    model->H = H;
    model->F = model->swiglu ? 2 * H : H;
    model->mlp_chunk_rows = max_T < MLP_CHUNK_ROWS ? (max_T > 0 ? max_T : 1) : MLP_CHUNK_ROWS;

    char names[STRAND_MAX_BLOCKS][32];
    model->n_layers = strand_model_split_layers(config->layers, names, STRAND_MAX_BLOCKS);
    if (model->n_layers <= 0)
        STRAND_FAIL(STRAND_ERR_CONFIG, "model.layers = '%s' is not a list of mixer names", config->layers);

    strand_param_table *table = &model->table;
    const double std = config->init_std;
    /* Residual projections are scaled down with depth (GPT-2), so the stream's variance stays flat. */
    const double proj_std = std / sqrt(2.0 * model->n_layers);
    STRAND_CALL(strand_params_declare(table, "embedding", "weight", model->V, C, STRAND_INIT_NORMAL, std, 1,
                                      &model->wte));
    model->blocks = strand_alloc(sizeof(strand_block) * (size_t)model->n_layers, "blocks");
    if (!model->blocks) return STRAND_ERR_NOMEM;
    for (int l = 0; l < model->n_layers; l++) {
        strand_block *block = &model->blocks[l];
        char layer[48];
        block->param_begin = table->total;
        snprintf(layer, sizeof layer, "block%d.norm1", l);
        STRAND_CALL(declare_norm(model, layer, &block->norm1_weight, &block->norm1_bias));
        const strand_mixer_ops *ops = strand_mixer_find(names[l]);
        if (!ops)
            STRAND_FAIL(STRAND_ERR_CONFIG, "model.layers: unknown mixer '%s' for block %d", names[l], l);
        block->mixer.ops = ops;
        block->mixer.C = C;
        block->mixer.options = strand_mixer_options(&model->config, ops);
        snprintf(layer, sizeof layer, "block%d.mixer", l);
        STRAND_CALL(ops->create(&block->mixer, &model->config, table, layer));
        snprintf(layer, sizeof layer, "block%d.norm2", l);
        STRAND_CALL(declare_norm(model, layer, &block->norm2_weight, &block->norm2_bias));
        snprintf(layer, sizeof layer, "block%d.mlp.fc", l);
        STRAND_CALL(strand_params_declare(table, layer, "weight", model->F, C, STRAND_INIT_NORMAL, std, 1,
                                          &block->fc_weight));
        STRAND_CALL(strand_params_declare(table, layer, "bias", model->F, 0, STRAND_INIT_ZEROS, 0, 0,
                                          &block->fc_bias));
        snprintf(layer, sizeof layer, "block%d.mlp.proj", l);
        STRAND_CALL(strand_params_declare(table, layer, "weight", C, H, STRAND_INIT_NORMAL, proj_std, 1,
                                          &block->proj_weight));
        STRAND_CALL(
            strand_params_declare(table, layer, "bias", C, 0, STRAND_INIT_ZEROS, 0, 0, &block->proj_bias));
        block->param_end = table->total;
    }
    model->final_weight = model->final_bias = -1;
    if (model->pre_norm)
        STRAND_CALL(declare_norm(model, "final_norm", &model->final_weight, &model->final_bias));
    model->head = model->wte;
    if (!config->tie_embeddings)
        STRAND_CALL(strand_params_declare(table, "head", "weight", model->V, C, STRAND_INIT_NORMAL, std, 1,
                                          &model->head));
    return declare_buffers(model, &model->plan);
}

/* The parameter table, the model's buffers and every mixer's in model->plan. Mixers plan block by
 * block, agreed: a long convolution's plan is collective when the grid exists. */
static int model_plan(strand_model *model, const strand_config *config, const strand_shard *shard, int dry) {
    memset(model, 0, sizeof *model);
    strand_plan_init(&model->plan, dry, config->recompute == STRAND_RECOMPUTE_BLOCK || config->offload[0]);
    const MPI_Comm comm = shard->grid->sp_comm;
    int status = model_build(model, config, shard);
    if (comm != MPI_COMM_NULL) status = strand_agree(comm, status);
    STRAND_CALL(status);
    for (int l = 0; l < model->n_layers; l++) {
        strand_mixer *mixer = &model->blocks[l].mixer;
        char owner[48];
        snprintf(owner, sizeof owner, "block%d.mixer", l);
        status = strand_plan_group(&model->plan, mixer->ops->name, owner);
        strand_plan_component(&model->plan, STRAND_MEM_MIXERS);
        /* Every rank enters the mixer's plan, whose collectives (if any) come first. */
        if (comm != MPI_COMM_NULL) status = strand_agree(comm, status);
        STRAND_CALL(status);
        status = mixer->ops->plan(mixer, shard, &model->plan);
        if (comm != MPI_COMM_NULL) status = strand_agree(comm, status);
        STRAND_CALL(status);
    }
    return STRAND_OK;
}

int strand_model_create(strand_model *model, const strand_config *config, const strand_shard *shard) {
    const MPI_Comm comm = shard->grid->sp_comm;
    strand_threads_set(config->threads); /* before the FFT plans, which take their threads too */
    STRAND_CALL(model_plan(model, config, shard, 0));
    /* A failed allocation on one rank must not leave the others inside a mixer's collective setup. */
    STRAND_CALL(strand_agree(comm, strand_plan_allocate(&model->plan)));
    if (config->offload[0])
        for (int l = 0; l < model->n_layers; l++) {
            model->blocks[l].rows.x = model->offload_slots[l % OFFLOAD_SLOTS];
            model->write_tickets[l] = model->read_tickets[l] = -1;
        }
    for (int l = 0; l < model->n_layers; l++) {
        strand_mixer *mixer = &model->blocks[l].mixer;
        /* Agreed block by block: a setup that fails on one rank after its own collectives must not
         * leave the others in the next block's. */
        if (mixer->ops->setup) STRAND_CALL(strand_agree(comm, mixer->ops->setup(mixer, shard)));
    }
    /* Last, after every collective of the mixers' setup: a full or missing scratch directory is
     * one node's problem, and the caller agrees on the status. */
    if (config->offload[0] && model->n_layers > OFFLOAD_SLOTS)
        STRAND_CALL(strand_offload_create(&model->offload, config->offload, shard->grid->world_rank,
                                          model->n_layers, model->max_T * model->C));
    return STRAND_OK;
}

int strand_model_plan(const strand_config *config, const strand_shard *shard, strand_plan *plan,
                      int64_t *parameters) {
    strand_model model;
    int status = model_plan(&model, config, shard, 1);
    *plan = model.plan; /* the model's copy is not freed below */
    memset(&model.plan, 0, sizeof model.plan);
    *parameters = model.table.total;
    strand_model_free(&model);
    return status;
}

void strand_model_init_params(strand_model *model, uint64_t seed) {
    for (int i = 0; i < model->table.count; i++) {
        const strand_param_info *p = &model->table.items[i];
        real_t *w = model->params + p->offset;
        for (int64_t j = 0; j < p->size; j++) {
            switch (p->init) {
            case STRAND_INIT_ONES:
                w[j] = 1;
                break;
            case STRAND_INIT_ZEROS:
                w[j] = 0;
                break;
            case STRAND_INIT_NORMAL:
                w[j] = (real_t)(p->init_std *
                                strand_rng_normal(seed, STRAND_STREAM_INIT, (uint64_t)i, (uint64_t)j));
                break;
            default:
                break; /* STRAND_INIT_BY_LAYER: the mixer fills it in its own init */
            }
        }
    }
    for (int l = 0; l < model->n_layers; l++) {
        strand_mixer *mixer = &model->blocks[l].mixer;
        if (mixer->ops->init_params) mixer->ops->init_params(mixer, model->params, seed);
    }
}

/* The MLP's hidden rows of chunk r0: their place in the saved (T,F) and (T,H) arrays, or the one
 * chunk-sized buffer that recompute (and decoding) keeps. */
static real_t *mlp_fc(const strand_model *model, const strand_block_rows *r, int64_t r0) {
    return r->hidden_chunk ? r->fc : r->fc + r0 * model->F;
}
static real_t *mlp_act(const strand_model *model, const strand_block_rows *r, int64_t r0) {
    return r->hidden_chunk ? r->act : r->act + r0 * model->H;
}

/* fc, act of rows [r0, r0 + n) from the MLP's input. */
static void mlp_hidden_forward(const strand_model *model, const strand_block *b, const strand_block_rows *r,
                               const real_t *in, int64_t r0, int64_t n) {
    real_t *fc = mlp_fc(model, r, r0), *act = mlp_act(model, r, r0);
    linear_forward(fc, in + r0 * model->C, PARAM(model, b->fc_weight), PARAM(model, b->fc_bias), n, model->C,
                   model->F);
    if (model->swiglu)
        swiglu_forward(act, fc, n, model->H);
    else
        gelu_forward(act, fc, n * model->H);
}

/* out (T,C) = mlp(in (T,C)), in chunks of mlp_chunk_rows rows (the same chunks as backward, so a
 * recomputed chunk equals the forward's bit for bit). */
static void mlp_forward(const strand_model *model, const strand_block *b, const strand_block_rows *r,
                        real_t *out, const real_t *in, int64_t T) {
    const int64_t chunk = model->mlp_chunk_rows;
    for (int64_t r0 = 0; r0 < T; r0 += chunk) {
        const int64_t n = T - r0 < chunk ? T - r0 : chunk;
        mlp_hidden_forward(model, b, r, in, r0, n);
        linear_forward(out + r0 * model->C, mlp_act(model, r, r0), PARAM(model, b->proj_weight),
                       PARAM(model, b->proj_bias), n, model->H, model->C);
    }
}

/* dinp += MLP backward of dout, in chunks of mlp_chunk_rows rows (16384): the (T,H) and (T,F)
 * gradients of a whole genome-length shard would be 8 T C values with a 4C MLP, the largest
 * scratch of all, and with recompute the hidden activations too are rebuilt one chunk at a time.
 * Chunks this long keep the GEMMs at full speed. */
static void mlp_backward(strand_model *model, strand_block *b, real_t *dinp, const real_t *dout,
                         const real_t *in, int64_t T) {
    const int C = model->C, H = model->H, F = model->F;
    const strand_block_rows *r = &b->rows;
    const int64_t chunk = model->mlp_chunk_rows;
    for (int64_t r0 = 0; r0 < T; r0 += chunk) {
        const int64_t n = T - r0 < chunk ? T - r0 : chunk;
        if (r->hidden_chunk) mlp_hidden_forward(model, b, r, in, r0, n);
        memset(model->d_act, 0, sizeof(real_t) * (size_t)(n * H));
        memset(model->d_fc, 0, sizeof(real_t) * (size_t)(n * F));
        linear_backward(model->d_act, GRAD(model, b->proj_weight), GRAD(model, b->proj_bias), dout + r0 * C,
                        mlp_act(model, r, r0), PARAM(model, b->proj_weight), n, H, C);
        if (model->swiglu)
            swiglu_backward(model->d_fc, model->d_act, mlp_fc(model, r, r0), n, H);
        else
            gelu_backward(model->d_fc, model->d_act, mlp_fc(model, r, r0), n * H);
        linear_backward(dinp + r0 * C, GRAD(model, b->fc_weight), GRAD(model, b->fc_bias), model->d_fc,
                        in + r0 * C, PARAM(model, b->fc_weight), n, C, F);
    }
}

int strand_block_forward(const strand_model *model, const strand_block *b, strand_block_rows *r, int64_t T,
                         strand_mixer_apply mixer, void *context, real_t *y, real_t *scratch) {
    const int C = model->C;
    if (model->pre_norm) {
        /* h = x + mixer(norm1(x)); y = h + mlp(norm2(h)) */
        norm_forward(model, r->norm1, r->norm1_mean, r->norm1_rstd, r->x, b->norm1_weight, b->norm1_bias, T);
        STRAND_CALL(mixer(context, r->mix, r->norm1));
#pragma omp parallel for schedule(static) if (T * C > 65536)
        for (int64_t i = 0; i < T * C; i++)
            r->h[i] = r->x[i] + r->mix[i];
        norm_forward(model, r->norm2, r->norm2_mean, r->norm2_rstd, r->h, b->norm2_weight, b->norm2_bias, T);
        if (!y) return STRAND_OK;
        mlp_forward(model, b, r, y, r->norm2, T);
#pragma omp parallel for schedule(static) if (T * C > 65536)
        for (int64_t i = 0; i < T * C; i++)
            y[i] += r->h[i];
    } else {
        /* a = x + mixer(x); h = norm1(a); b = h + mlp(h); y = norm2(b) */
        STRAND_CALL(mixer(context, r->mix, r->x));
#pragma omp parallel for schedule(static) if (T * C > 65536)
        for (int64_t i = 0; i < T * C; i++)
            r->a[i] = r->x[i] + r->mix[i];
        norm_forward(model, r->h, r->norm1_mean, r->norm1_rstd, r->a, b->norm1_weight, b->norm1_bias, T);
        if (!y) y = scratch;
        mlp_forward(model, b, r, r->b, r->h, T);
#pragma omp parallel for schedule(static) if (T * C > 65536)
        for (int64_t i = 0; i < T * C; i++)
            r->b[i] += r->h[i];
        norm_forward(model, y, r->norm2_mean, r->norm2_rstd, r->b, b->norm2_weight, b->norm2_bias, T);
    }
    return STRAND_OK;
}

/* The training forward's mixer: the whole shard, collective over the SP group. */
typedef struct {
    strand_mixer *mixer;
    const real_t *params;
    const strand_shard *shard;
} shard_mixer;

static int shard_mixer_apply(void *context, real_t *out, const real_t *in) {
    shard_mixer *m = context;
    return m->mixer->ops->forward(m->mixer, out, in, m->params, m->shard);
}

/* One block's forward from its input into y, filling its saved activations (y = NULL: see
 * strand_block_forward; d_tmp2 is free until this block's backward starts). */
static int block_forward(strand_model *model, int l, const strand_shard *shard, real_t *y) {
    strand_block *b = &model->blocks[l];
    shard_mixer m = {&b->mixer, model->params, shard};
    return strand_block_forward(model, b, &b->rows, shard->T, shard_mixer_apply, &m, y, model->d_tmp2);
}

int strand_model_forward(strand_model *model, const strand_token_t *tokens, const strand_token_t *targets,
                         const strand_shard *shard, double *loss_sum) {
    const int64_t T = shard->T;
    const int C = model->C;
    STRAND_ASSERT(T <= model->max_T);
    real_t *x = model->n_layers > 0 ? model->blocks[0].rows.x : model->final_in;
    embedding_forward(x, tokens, PARAM(model, model->wte), T, C);
    int io = STRAND_OK;
    for (int l = 0; l < model->n_layers; l++) {
        strand_block *b = &model->blocks[l];
        real_t *y = l + 1 < model->n_layers ? model->blocks[l + 1].rows.x : model->final_in;
        /* y's buffer held block l - 2's input: it must be in the file before we overwrite it. */
        if (model->offload && l >= 2 && model->write_tickets[l - 2] >= 0)
            keep_first(&io, strand_offload_wait(model->offload, model->write_tickets[l - 2]));
        if (offloaded(model, l))
            model->write_tickets[l] = strand_offload_write(model->offload, l, b->rows.x, T * C);
        STRAND_CALL(block_forward(model, l, shard, y));
    }
    if (model->offload) {
        keep_first(&io, strand_offload_drain(model->offload));
        for (int l = 0; l < model->n_layers; l++)
            model->write_tickets[l] = -1;
        STRAND_CALL(strand_agree(shard->grid->sp_comm, io));
    }
    const real_t *head_in = model->final_in;
    if (model->pre_norm) {
        norm_forward(model, model->final_out, model->final_mean, model->final_rstd, model->final_in,
                     model->final_weight, model->final_bias, T);
        head_in = model->final_out;
    }
    linear_forward(model->logits, head_in, PARAM(model, model->head), NULL, T, C, model->V);
    *loss_sum = crossentropy_forward(model->losses, model->probs, model->logits, targets, model->loss_weights,
                                     T, model->V);
    model->targets = targets;
    return STRAND_OK;
}

const real_t *strand_model_input_grad(const strand_model *model) {
    return model->d_residual;
}

int strand_model_backward(strand_model *model, const strand_token_t *tokens, const strand_shard *shard,
                          real_t loss_scale) {
    const int64_t T = shard->T;
    const int C = model->C;
    const size_t TC_bytes = sizeof(real_t) * (size_t)(T * C);
    real_t *d_res = model->d_residual;
    memset(model->d_logits, 0, sizeof(real_t) * (size_t)(T * model->V));
    crossentropy_backward(model->d_logits, model->probs, model->targets, model->loss_weights, T, model->V,
                          loss_scale);
    const real_t *head_in = model->pre_norm ? model->final_out : model->final_in;
    real_t *d_head_in = model->pre_norm ? model->d_tmp1 : d_res;
    memset(d_head_in, 0, TC_bytes);
    linear_backward(d_head_in, GRAD(model, model->head), NULL, model->d_logits, head_in,
                    PARAM(model, model->head), T, C, model->V);
    if (model->pre_norm) {
        memset(d_res, 0, TC_bytes);
        norm_backward(model, d_res, model->d_tmp1, model->final_in, model->final_mean, model->final_rstd,
                      model->final_weight, model->final_bias, T);
    }
    /* d_res now holds the gradient of the last block's output. */
    int io = STRAND_OK;
    for (int l = model->n_layers - 1; l >= 0; l--) {
        strand_block *b = &model->blocks[l];
        const strand_block_rows *r = &b->rows;
        if (offloaded(model, l)) {
            keep_first(&io, strand_offload_wait(model->offload, model->read_tickets[l]));
            model->read_tickets[l] = -1;
        }
        /* The shared activations hold the last block's forward; refill them for earlier blocks.
         * The output itself is not needed again: writing it to the next block's input would also
         * race with the offload read into that buffer. */
        if (model->recompute && l + 1 < model->n_layers) STRAND_CALL(block_forward(model, l, shard, NULL));
        if (model->pre_norm) {
            /* dh = dy + norm2'(mlp'(dy)); dx = dh + norm1'(mixer'(dh)) */
            memset(model->d_tmp1, 0, TC_bytes);
            mlp_backward(model, b, model->d_tmp1, d_res, r->norm2, T);
            norm_backward(model, d_res, model->d_tmp1, r->h, r->norm2_mean, r->norm2_rstd, b->norm2_weight,
                          b->norm2_bias, T);
            memset(model->d_tmp1, 0, TC_bytes);
            STRAND_CALL(b->mixer.ops->backward(&b->mixer, model->d_tmp1, model->grads, d_res, r->norm1,
                                               model->params, shard));
            norm_backward(model, d_res, model->d_tmp1, r->x, r->norm1_mean, r->norm1_rstd, b->norm1_weight,
                          b->norm1_bias, T);
        } else {
            /* db = norm2'(dy); dh = db + mlp'(db); da = norm1'(dh); dx = da + mixer'(da) */
            memset(model->d_tmp1, 0, TC_bytes);
            norm_backward(model, model->d_tmp1, d_res, r->b, r->norm2_mean, r->norm2_rstd, b->norm2_weight,
                          b->norm2_bias, T);
            memcpy(model->d_tmp2, model->d_tmp1, TC_bytes);
            mlp_backward(model, b, model->d_tmp2, model->d_tmp1, r->h, T);
            memset(d_res, 0, TC_bytes);
            norm_backward(model, d_res, model->d_tmp2, r->a, r->norm1_mean, r->norm1_rstd, b->norm1_weight,
                          b->norm1_bias, T);
            memcpy(model->d_tmp1, d_res, TC_bytes);
            STRAND_CALL(b->mixer.ops->backward(&b->mixer, d_res, model->grads, model->d_tmp1, r->x,
                                               model->params, shard));
        }
        /* b->rows.x is free now: bring back the input of the block three earlier into it. */
        if (l >= OFFLOAD_SLOTS && offloaded(model, l - OFFLOAD_SLOTS))
            model->read_tickets[l - OFFLOAD_SLOTS] =
                strand_offload_read(model->offload, l - OFFLOAD_SLOTS, r->x, T * C);
    }
    embedding_backward(GRAD(model, model->wte), d_res, tokens, T, C);
    if (model->offload) STRAND_CALL(strand_agree(shard->grid->sp_comm, io));
    return STRAND_OK;
}

int64_t strand_model_carry_count(const strand_model *model) {
    int64_t count = 0;
    for (int l = 0; l < model->n_layers; l++) {
        const strand_mixer *mixer = &model->blocks[l].mixer;
        if (mixer->ops->carry_count) count += mixer->ops->carry_count(mixer);
    }
    return count;
}

void strand_model_carry_save(const strand_model *model, real_t *out) {
    for (int l = 0; l < model->n_layers; l++) {
        const strand_mixer *mixer = &model->blocks[l].mixer;
        if (!mixer->ops->carry_count) continue;
        mixer->ops->carry_save(mixer, out);
        out += mixer->ops->carry_count(mixer);
    }
}

void strand_model_carry_load(strand_model *model, const real_t *in) {
    for (int l = 0; l < model->n_layers; l++) {
        strand_mixer *mixer = &model->blocks[l].mixer;
        if (!mixer->ops->carry_count) continue;
        mixer->ops->carry_load(mixer, in);
        in += mixer->ops->carry_count(mixer);
    }
}

double strand_model_grad_norm(const strand_model *model, double *block_norms) {
    /* One pass in index order (the same sum as strand_grad_norm), blocks' shares on the way. */
    double total = 0;
    int64_t i = 0;
    for (int l = 0; l <= model->n_layers; l++) {
        const int64_t begin = l < model->n_layers ? model->blocks[l].param_begin : model->table.total;
        for (; i < begin; i++)
            total += (double)model->grads[i] * (double)model->grads[i];
        if (l == model->n_layers) break;
        double sum = 0; /* alignment padding between tensors holds zeros */
        for (; i < model->blocks[l].param_end; i++) {
            const double g2 = (double)model->grads[i] * (double)model->grads[i];
            sum += g2;
            total += g2;
        }
        if (block_norms) block_norms[l] = sqrt(sum);
    }
    return sqrt(total);
}

void strand_model_reset(strand_model *model) {
    for (int l = 0; l < model->n_layers; l++) {
        strand_mixer *mixer = &model->blocks[l].mixer;
        if (mixer->ops && mixer->ops->reset) mixer->ops->reset(mixer);
    }
}

void strand_model_free(strand_model *model) {
    strand_offload_free(model->offload); /* first: joins the thread that may use the slots */
    if (model->blocks) {
        for (int l = 0; l < model->n_layers; l++) {
            strand_block *b = &model->blocks[l];
            if (b->mixer.ops && b->mixer.ops->destroy) b->mixer.ops->destroy(&b->mixer);
        }
        strand_free(model->blocks);
    }
    strand_plan_free(&model->plan); /* every buffer */
    strand_params_free(&model->table);
    memset(model, 0, sizeof *model);
}
