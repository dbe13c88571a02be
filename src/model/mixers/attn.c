/* Mixer "attn": multi-head causal self-attention, exact, over the sequence-sharded window.
 *
 *   q (T,H*E) = x W_q^T, [k | v] (T,2*G*E) = x W_kv^T, RoPE on q and k at global positions,
 *   y (T,H*E) = ring attention (src/kernels/ring_attn.c), out (T,C) = y W_o^T
 * with E = C/H and G key/value heads shared by H/G query heads each (GQA). attn.window bounds the
 * span; attn.segment_memory adds the previous window's keys and values (see ring_attn.h). */
#include "kernels/layers.h"
#include "strand/model.h"
#include "kernels/ring_attn.h"

#include <math.h>
#include <string.h>

typedef struct {
    int heads, kv_heads;
    int64_t window;
    int segment_memory;
    double rope_base;
} attn_options;

static const strand_config_key attn_keys[] = {
    {.section = "attn",
     .name = "heads",
     .type = STRAND_KEY_INT,
     STRAND_KEY_FIELD(attn_options, heads),
     .def = "4",
     .imin = 1,
     .imax = 1024,
     .help = "Attention heads (must divide model.d_model)."},
    {.section = "attn",
     .name = "kv_heads",
     .type = STRAND_KEY_INT,
     STRAND_KEY_FIELD(attn_options, kv_heads),
     .def = "0",
     .imin = 0,
     .imax = 1024,
     .help = "Key/value heads for grouped-query attention; 0 = attn.heads. Must divide attn.heads."},
    {.section = "attn",
     .name = "window",
     .type = STRAND_KEY_INT64,
     STRAND_KEY_FIELD(attn_options, window),
     .def = "0",
     .imin = 0,
     .imax = INT64_C(1) << 40,
     .help = "Sliding-window attention span in tokens; 0 = full causal attention."},
    {.section = "attn",
     .name = "segment_memory",
     .type = STRAND_KEY_BOOL,
     STRAND_KEY_FIELD(attn_options, segment_memory),
     .def = "false",
     .help = "Transformer-XL memory: attend to the previous window's keys and values (no gradient). Holds "
             "only while each window starts where the previous one ended; otherwise it is reset."},
    {.section = "attn",
     .name = "rope_base",
     .type = STRAND_KEY_DOUBLE,
     STRAND_KEY_FIELD(attn_options, rope_base),
     .def = "10000",
     .dmin = 1,
     .dmax = 1e12,
     .help = "Base of the rotary position embedding's frequencies."},
};

static int attn_validate(const strand_config *config, const void *options, int used) {
    const attn_options *o = options;
    const int H = o->heads, G = o->kv_heads > 0 ? o->kv_heads : H, C = config->d_model;
    if (G > H || H % G != 0)
        STRAND_FAIL(STRAND_ERR_CONFIG, "attn.kv_heads = %d must divide attn.heads = %d", G, H);
    if (!used) return STRAND_OK;
    if (C % H != 0) STRAND_FAIL(STRAND_ERR_CONFIG, "attn.heads = %d must divide model.d_model = %d", H, C);
    if ((C / H) % 2 != 0)
        STRAND_FAIL(
            STRAND_ERR_CONFIG,
            "attn: head dimension model.d_model / attn.heads = %d must be even (rotary embedding pairs)",
            C / H);
    return STRAND_OK;
}

/* Full causal attention does more work late in the window (zigzag balances it); a sliding window
 * is already balanced on contiguous pieces, where the ring also stops after the blocks it reaches. */
static unsigned attn_capabilities(const void *options) {
    const attn_options *o = options;
    return STRAND_MIXER_STEP | (o->window == 0 ? STRAND_MIXER_BALANCED_LAYOUT : 0) |
           (o->segment_memory ? STRAND_MIXER_CARRIES_STATE : 0);
}

static const char *const attn_test_configs[] = {
    "", "attn.window=5;attn.kv_heads=2", "attn.heads=2;attn.kv_heads=1", "attn.segment_memory=true", NULL};

typedef struct {
    int H, G, E;
    int64_t window; /* attention span (0 = full causal) */
    int memory;     /* attn.segment_memory */
    double rope_base;
    int wq, wkv, wo; /* parameter indices */
    int64_t wq_offset, wkv_offset, wo_offset;
    strand_ring_attn *ring, own_ring; /* ring points to own_ring */
    int64_t T, L;                     /* local rows, window length */
    int64_t *pos, *mem_pos;
    real_t *cos_t, *sin_t, *mem_cos, *mem_sin; /* (T, E/2) RoPE tables */
    /* saved for backward */
    real_t *q, *kv, *y, *lse; /* (T,HE) rotated, (T,2GE) K rotated, (T,HE), (H,T) */
    real_t *dy, *dq, *dkv;    /* scratch */
    /* segment memory: mem_kv (T,2GE) K rotated at positions - L; pending_kv raw K/V of the last forward */
    real_t *mem_kv, *pending_kv;
    int mem_valid, pending_valid, frozen;
} attn_state;

static int attn_create(strand_mixer *mixer, const strand_config *config, strand_param_table *table,
                       const char *layer) {
    attn_state *s = strand_alloc(sizeof *s, "attn mixer");
    if (!s) return STRAND_ERR_NOMEM;
    mixer->state = s;
    const int C = mixer->C;
    const attn_options *o = mixer->options;
    STRAND_CALL(attn_validate(config, o, 1)); /* also when built from a hand-made configuration */
    s->H = o->heads;
    s->G = o->kv_heads > 0 ? o->kv_heads : s->H;
    s->E = C / s->H;
    s->window = o->window;
    s->memory = o->segment_memory;
    s->rope_base = o->rope_base;
    const int HE = s->H * s->E, GE = s->G * s->E;
    const double std = config->init_std;
    /* W_o feeds the residual stream: scaled down with depth like the MLP's projection. */
    const double out_std = strand_model_residual_std(config);
    STRAND_CALL(strand_params_declare(table, layer, "wq", HE, C, STRAND_INIT_NORMAL, std, 1, &s->wq));
    STRAND_CALL(strand_params_declare(table, layer, "wkv", 2 * GE, C, STRAND_INIT_NORMAL, std, 1, &s->wkv));
    STRAND_CALL(strand_params_declare(table, layer, "wo", C, HE, STRAND_INIT_NORMAL, out_std, 1, &s->wo));
    s->wq_offset = table->items[s->wq].offset;
    s->wkv_offset = table->items[s->wkv].offset;
    s->wo_offset = table->items[s->wo].offset;
    return STRAND_OK;
}

static void rope_table(real_t *cos_t, real_t *sin_t, const int64_t *pos, int64_t T, int E, double base) {
    const int half = E / 2;
    for (int64_t i = 0; i < T; i++)
        for (int j = 0; j < half; j++) {
            const double angle = (double)pos[i] * pow(base, -2.0 * j / E);
            cos_t[i * half + j] = (real_t)cos(angle);
            sin_t[i * half + j] = (real_t)sin(angle);
        }
}

/* Rotate pairs (x[2j], x[2j+1]) of `heads` heads of width E in rows of stride ld; sign -1 applies
 * the inverse rotation (the backward of the forward rotation). */
static void rope_apply(real_t *x, int64_t ld, int heads, int E, const real_t *cos_t, const real_t *sin_t,
                       int64_t T, real_t sign) {
    const int half = E / 2;
    for (int64_t i = 0; i < T; i++) {
        const real_t *c = cos_t + i * half, *sn = sin_t + i * half;
        for (int h = 0; h < heads; h++) {
            real_t *v = x + i * ld + (int64_t)h * E;
            for (int j = 0; j < half; j++) {
                const real_t a = v[2 * j], b = v[2 * j + 1], si = sign * sn[j];
                v[2 * j] = a * c[j] - b * si;
                v[2 * j + 1] = a * si + b * c[j];
            }
        }
    }
}

/* Positions, RoPE tables, activations and the ring's workspaces are the same for every attn block of
 * a model (same shard and options): shared under train.recompute = block. The segment memory is
 * each block's own (and recompute is refused with it). */
static int attn_plan(strand_mixer *mixer, const strand_shard *shard, strand_plan *plan) {
    attn_state *s = mixer->state;
    const int64_t T = shard->T, HE = (int64_t)s->H * s->E, KVW = 2 * (int64_t)s->G * s->E;
    const int64_t rows = T > 0 ? T : 1, half = rows * (s->E / 2);
    const int shared_table = STRAND_LIFE_PERSISTENT | STRAND_PLAN_SHARED;
    s->T = T;
    s->L = shard->window;
    s->ring = &s->own_ring;
    STRAND_CALL(strand_ring_attn_plan(s->ring, shard, s->H, s->G, s->E, s->window, s->memory, 0, 0,
                                      STRAND_LIFE_SCRATCH | STRAND_PLAN_SHARED, plan));
    STRAND_PLAN_ADD(plan, s->pos, rows, shared_table, "attn positions");
    STRAND_PLAN_ADD(plan, s->mem_pos, rows, shared_table, "attn positions");
    STRAND_PLAN_ADD(plan, s->cos_t, half, shared_table, "attn rope table");
    STRAND_PLAN_ADD(plan, s->sin_t, half, shared_table, "attn rope table");
    if (s->memory) {
        STRAND_PLAN_ADD(plan, s->mem_cos, half, STRAND_LIFE_PERSISTENT, "attn rope table");
        STRAND_PLAN_ADD(plan, s->mem_sin, half, STRAND_LIFE_PERSISTENT, "attn rope table");
        STRAND_PLAN_ADD(plan, s->mem_kv, rows * KVW, STRAND_LIFE_PERSISTENT, "attn segment memory");
        STRAND_PLAN_ADD(plan, s->pending_kv, rows * KVW, STRAND_LIFE_PERSISTENT, "attn segment memory");
    }
    const int saved = STRAND_LIFE_SAVED | STRAND_PLAN_SHARED,
              scratch = STRAND_LIFE_SCRATCH | STRAND_PLAN_SHARED;
    STRAND_PLAN_ADD(plan, s->q, rows * HE, saved, "attn activations");
    STRAND_PLAN_ADD(plan, s->kv, rows * KVW, saved, "attn activations");
    STRAND_PLAN_ADD(plan, s->y, rows * HE, saved, "attn activations");
    STRAND_PLAN_ADD(plan, s->lse, rows * s->H, saved, "attn activations");
    STRAND_PLAN_ADD(plan, s->dy, rows * HE, scratch, "attn gradient scratch");
    STRAND_PLAN_ADD(plan, s->dq, rows * HE, scratch, "attn gradient scratch");
    STRAND_PLAN_ADD(plan, s->dkv, rows * KVW, scratch, "attn gradient scratch");
    return STRAND_OK;
}

static int attn_setup(strand_mixer *mixer, const strand_shard *shard) {
    attn_state *s = mixer->state;
    STRAND_CALL(strand_ring_attn_setup(s->ring, shard));
    for (int64_t i = 0; i < s->T; i++) {
        s->pos[i] = strand_shard_position(shard, i);
        s->mem_pos[i] = s->pos[i] - s->L; /* the previous window, just before position 0 */
    }
    rope_table(s->cos_t, s->sin_t, s->pos, s->T, s->E, s->rope_base);
    if (s->memory) rope_table(s->mem_cos, s->mem_sin, s->mem_pos, s->T, s->E, s->rope_base);
    return STRAND_OK;
}

/* The last forward's keys and values become the memory: K rotated at its positions one window
 * earlier, so q.k keeps depending on the true distance. */
static void memory_commit(attn_state *s) {
    if (!s->pending_valid) return;
    const int64_t KVW = 2 * (int64_t)s->G * s->E;
    memcpy(s->mem_kv, s->pending_kv, sizeof(real_t) * (size_t)(s->T * KVW));
    rope_apply(s->mem_kv, KVW, s->G, s->E, s->mem_cos, s->mem_sin, s->T, 1);
    s->mem_valid = 1;
    s->pending_valid = 0;
}

static int attn_forward(strand_mixer *mixer, real_t *out, const real_t *in, const real_t *params,
                        const strand_shard *shard) {
    attn_state *s = mixer->state;
    const int C = mixer->C, HE = s->H * s->E, KVW = 2 * s->G * s->E;
    const int64_t T = s->T;
    STRAND_ASSERT(T == shard->T);
    if (s->memory && !s->frozen) memory_commit(s);
    // q (T,HE) = in W_q^T; kv (T,2GE) = in W_kv^T
    linear_forward(s->q, in, params + s->wq_offset, NULL, T, C, HE);
    linear_forward(s->kv, in, params + s->wkv_offset, NULL, T, C, KVW);
    if (s->memory && !s->frozen) {
        memcpy(s->pending_kv, s->kv, sizeof(real_t) * (size_t)(T * KVW));
        s->pending_valid = 1;
    }
    rope_apply(s->q, HE, s->H, s->E, s->cos_t, s->sin_t, T, 1);
    rope_apply(s->kv, KVW, s->G, s->E, s->cos_t, s->sin_t, T, 1);
    const int use_mem = s->memory && s->mem_valid;
    STRAND_CALL(strand_ring_attn_forward(s->ring, s->y, s->lse, s->q, s->pos, s->kv, s->pos,
                                         use_mem ? s->mem_kv : NULL, use_mem ? s->mem_pos : NULL));
    // out (T,C) = y W_o^T
    linear_forward(out, s->y, params + s->wo_offset, NULL, T, HE, C);
    return STRAND_OK;
}

static int attn_backward(strand_mixer *mixer, real_t *din, real_t *dparams, const real_t *dout,
                         const real_t *in, const real_t *params, const strand_shard *shard) {
    attn_state *s = mixer->state;
    const int C = mixer->C, HE = s->H * s->E, KVW = 2 * s->G * s->E;
    const int64_t T = s->T;
    memset(s->dy, 0, sizeof(real_t) * (size_t)(T * HE));
    linear_backward(s->dy, dparams + s->wo_offset, NULL, dout, s->y, params + s->wo_offset, T, HE, C);
    memset(s->dq, 0, sizeof(real_t) * (size_t)(T * HE));
    memset(s->dkv, 0, sizeof(real_t) * (size_t)(T * KVW));
    const int use_mem = s->memory && s->mem_valid;
    STRAND_CALL(strand_ring_attn_backward(s->ring, s->dq, s->dkv, s->dy, s->y, s->lse, s->q, s->pos, s->kv,
                                          s->pos, use_mem ? s->mem_kv : NULL, use_mem ? s->mem_pos : NULL));
    rope_apply(s->dq, HE, s->H, s->E, s->cos_t, s->sin_t, T, -1);
    rope_apply(s->dkv, KVW, s->G, s->E, s->cos_t, s->sin_t, T, -1);
    linear_backward(din, dparams + s->wq_offset, NULL, s->dq, in, params + s->wq_offset, T, C, HE);
    linear_backward(din, dparams + s->wkv_offset, NULL, s->dkv, in, params + s->wkv_offset, T, C, KVW);
    return STRAND_OK;
}

static void attn_destroy(strand_mixer *mixer) {
    strand_free(mixer->state); /* the buffers belong to the model's plan */
    mixer->state = NULL;
}

/* The next window does not continue the previous one: forget the memory. */
static void attn_reset(strand_mixer *mixer) {
    attn_state *s = mixer->state;
    if (s) s->mem_valid = s->pending_valid = 0;
}

static int attn_step_init(const strand_mixer *mixer, const real_t *params, int64_t max_len, void **state);
static int attn_step(const strand_mixer *mixer, void *state, const real_t *params, const real_t *in,
                     real_t *out, int64_t position);
static void attn_step_free(void *state);

/* attn.segment_memory is the one state carried from a forward to the next; a checkpoint keeps it
 * as [mem_valid, pending_valid, mem_kv (T,2GE), pending_kv (T,2GE)] so a resume is bit-exact. */
static int64_t attn_carry_count(const strand_mixer *mixer) {
    const attn_state *s = mixer->state;
    return s->memory ? 2 + 2 * s->T * 2 * (int64_t)s->G * s->E : 0;
}

static void attn_carry_save(const strand_mixer *mixer, real_t *out) {
    const attn_state *s = mixer->state;
    if (!s->memory) return;
    const size_t n = (size_t)(s->T * 2 * (int64_t)s->G * s->E);
    out[0] = (real_t)s->mem_valid;
    out[1] = (real_t)s->pending_valid;
    memcpy(out + 2, s->mem_kv, n * sizeof(real_t));
    memcpy(out + 2 + n, s->pending_kv, n * sizeof(real_t));
}

static void attn_carry_load(strand_mixer *mixer, const real_t *in) {
    attn_state *s = mixer->state;
    if (!s->memory) return;
    const size_t n = (size_t)(s->T * 2 * (int64_t)s->G * s->E);
    s->mem_valid = in[0] != 0;
    s->pending_valid = in[1] != 0;
    memcpy(s->mem_kv, in + 2, n * sizeof(real_t));
    memcpy(s->pending_kv, in + 2 + n, n * sizeof(real_t));
}

/* Work of forward + backward (strand plan): the q, kv and output projections and the ring (a
 * segment memory's extra block is not counted). */
static void attn_cost(const void *options, const strand_cost_shape *shape, strand_cost *cost) {
    const attn_options *o = options;
    const int H = o->heads, G = o->kv_heads > 0 ? o->kv_heads : H, E = shape->C / H;
    const double T = (double)shape->T;
    strand_cost_linear(cost, T, shape->C, (double)H * E);
    strand_cost_linear(cost, T, shape->C, 2.0 * G * E);
    strand_cost_linear(cost, T, (double)H * E, shape->C);
    strand_cost_ring_attention(cost, shape, H, G, E, o->window);
}

const strand_mixer_ops strand_mixer_attn = {
    .cost = attn_cost,
    .name = "attn",
    .forward_cost = "O(L^2 C) (O(L window C) with attn.window)",
    .step_cost = "O(min(t, window) C) (K/V cache)",
    .summary = "multi-head causal self-attention, exact, as ring attention over the SP group (sliding "
               "window, grouped K/V heads, Transformer-XL segment memory)",
    .options_size = sizeof(attn_options),
    .keys = attn_keys,
    .key_count = sizeof attn_keys / sizeof attn_keys[0],
    .validate = attn_validate,
    .capabilities = attn_capabilities,
    .test_configs = attn_test_configs,
    .create = attn_create,
    .plan = attn_plan,
    .setup = attn_setup,
    .forward = attn_forward,
    .backward = attn_backward,
    .destroy = attn_destroy,
    .step_init = attn_step_init,
    .step = attn_step,
    .step_free = attn_step_free,
    .carry_count = attn_carry_count,
    .carry_save = attn_carry_save,
    .carry_load = attn_carry_load,
    .reset = attn_reset,
};

void strand_attn_memory_freeze(strand_mixer *mixer, int frozen) {
    if (!mixer || mixer->ops != &strand_mixer_attn || !mixer->state) return;
    attn_state *s = mixer->state;
    if (frozen && s->memory) memory_commit(s);
    s->frozen = frozen != 0;
}

/* ---- incremental decoding: a K/V cache ----
 * Each token's keys (rotated at its global position, as forward does) and values are computed once
 * and kept; the new query row attends to the visible cached rows (the last attn.window positions,
 * or all of them) in one pass with an exact softmax. Per token: O(n C) for n = min(t + 1, window)
 * visible keys, plus the projections' O(C (2 H + 2 G) E); memory: (window or max_len) * 2 G E
 * values (with a window the cache is a ring of window rows). attn.segment_memory plays no part:
 * a sampled sequence is a single window with no previous one, which is what forward sees before
 * its memory is filled. */

typedef struct {
    int64_t next, max_len; /* the position the next step must be */
    int64_t rows;          /* cached rows: min(window, max_len), or max_len without a window */
    real_t *kv;            /* (rows, 2GE) [K rotated | V]; position p in row p % rows */
    real_t *q, *y;         /* (HE) this token's rotated query, attention output */
    real_t *cos_t, *sin_t; /* (E/2) RoPE at this position */
    double *p;             /* (rows) scores, then softmax weights */
    double *acc;           /* (E) weighted sum of values */
} attn_step_state;

static void attn_step_free(void *state) {
    attn_step_state *st = state;
    if (!st) return;
    real_t *bufs[] = {st->kv, st->q, st->y, st->cos_t, st->sin_t};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        strand_free(bufs[i]);
    strand_free(st->p);
    strand_free(st->acc);
    strand_free(st);
}

static int attn_step_init(const strand_mixer *mixer, const real_t *params, int64_t max_len, void **state) {
    (void)params;
    const attn_state *s = mixer->state;
    attn_step_state *st = strand_alloc(sizeof *st, "attn step state");
    if (!st) return STRAND_ERR_NOMEM;
    *state = st;
    if (max_len < 1) STRAND_FAIL(STRAND_ERR_INPUT, "attn step: max_len %lld < 1", (long long)max_len);
    const int64_t HE = (int64_t)s->H * s->E, KVW = 2 * (int64_t)s->G * s->E;
    st->max_len = max_len;
    st->rows = s->window > 0 && s->window < max_len ? s->window : max_len;
    STRAND_ALLOC(st->kv, st->rows * KVW, "attn K/V cache");
    STRAND_ALLOC(st->q, HE, "attn step scratch");
    STRAND_ALLOC(st->y, HE, "attn step scratch");
    STRAND_ALLOC(st->cos_t, s->E / 2, "attn step scratch");
    STRAND_ALLOC(st->sin_t, s->E / 2, "attn step scratch");
    STRAND_ALLOC(st->p, st->rows, "attn step scratch");
    STRAND_ALLOC(st->acc, s->E, "attn step scratch");
    return STRAND_OK;
}

static int attn_step(const strand_mixer *mixer, void *state, const real_t *params, const real_t *in,
                     real_t *out, int64_t position) {
    const attn_state *s = mixer->state;
    attn_step_state *st = state;
    const int C = mixer->C, E = s->E, HE = s->H * s->E, GE = s->G * s->E, KVW = 2 * GE, group = s->H / s->G;
    const int64_t t = position;
    if (t != st->next || t >= st->max_len)
        STRAND_FAIL(STRAND_ERR_INPUT, "attn step: position %lld, expected %lld (< %lld)", (long long)t,
                    (long long)st->next, (long long)st->max_len);
    // q (1,HE) = in W_q^T; this position's cache row (1,2GE) = in W_kv^T; RoPE at position t
    real_t *kv_t = st->kv + (t % st->rows) * KVW;
    linear_forward(st->q, in, params + s->wq_offset, NULL, 1, C, HE);
    linear_forward(kv_t, in, params + s->wkv_offset, NULL, 1, C, KVW);
    rope_table(st->cos_t, st->sin_t, &t, 1, E, s->rope_base);
    rope_apply(st->q, HE, s->H, E, st->cos_t, st->sin_t, 1, 1);
    rope_apply(kv_t, KVW, s->G, E, st->cos_t, st->sin_t, 1, 1);
    // visible keys: positions first..t (pos_j > t - window with a window)
    const int64_t first = s->window > 0 && t - s->window + 1 > 0 ? t - s->window + 1 : 0, n = t - first + 1;
    const double scale = 1.0 / sqrt((double)E);
    for (int h = 0; h < s->H; h++) {
        const int64_t k_col = (int64_t)(h / group) * E, v_col = GE + k_col;
        const real_t *qh = st->q + (int64_t)h * E;
        double max = -INFINITY;
        for (int64_t j = 0; j < n; j++) {
            const real_t *k = st->kv + ((first + j) % st->rows) * KVW + k_col;
            double dot = 0;
            for (int e = 0; e < E; e++)
                dot += (double)qh[e] * (double)k[e];
            st->p[j] = dot * scale;
            max = st->p[j] > max ? st->p[j] : max;
        }
        double sum = 0;
        for (int64_t j = 0; j < n; j++)
            sum += st->p[j] = exp(st->p[j] - max);
        for (int e = 0; e < E; e++)
            st->acc[e] = 0;
        for (int64_t j = 0; j < n; j++) {
            const real_t *v = st->kv + ((first + j) % st->rows) * KVW + v_col;
            for (int e = 0; e < E; e++)
                st->acc[e] += st->p[j] * (double)v[e];
        }
        for (int e = 0; e < E; e++)
            st->y[(int64_t)h * E + e] = (real_t)(st->acc[e] / sum);
    }
    // out (1,C) = y W_o^T
    linear_forward(out, st->y, params + s->wo_offset, NULL, 1, HE, C);
    st->next++;
    return STRAND_OK;
}
