/* Mixer "dilated": causal depthwise dilated convolution, as in WaveNet's residual blocks.
 *
 *   pre_f (T,C)[t,c] = b_c + sum_{j<K} w_{c,j} x_{t - j d, c}      (x = 0 before position 0)
 *   z = pre_f, or with dilated.gated z = tanh(pre_f) * sigmoid(pre_g) (a second conv, g)
 *   out (T,C) = z Wo^T                                               (WaveNet's 1x1 output conv)
 *
 * Block i among the model's dilated blocks has dilation d = dilated.dilations[i] (the list
 * repeats), or 2^i when the list is empty. Each local piece needs the H = (K-1) d rows before it:
 * strand_halo fetches them by global position, from as many earlier ranks as they span (H may be
 * longer than a shard). Taps that reach before the window's start for every position are dropped
 * from the sharded passes (they only ever meet zeros), so H stays below the window length. */
#include "kernels/fastmath.h"
#include "kernels/layers.h"
#include "parallel/halo.h"
#include "strand/model.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

enum { DILATED_LIST_BYTES = 128 };

typedef struct {
    int kernel;
    int gated;
    char dilations[DILATED_LIST_BYTES];
} dilated_options;

/* Bounded so that (K-1) d fits comfortably in 64 bits and the halo's int row counts. */
#define DILATED_MAX_DILATION (INT64_C(1) << 30)

static const strand_config_key dilated_keys[] = {
    {.section = "dilated",
     .name = "kernel",
     .type = STRAND_KEY_INT,
     STRAND_KEY_FIELD(dilated_options, kernel),
     .def = "2",
     .imin = 1,
     .imax = 64,
     .help = "Taps K of each dilated causal convolution (WaveNet: 2); a block sees (K-1)*dilation "
             "positions back."},
    {.section = "dilated",
     .name = "dilations",
     .type = STRAND_KEY_STRING,
     STRAND_KEY_FIELD(dilated_options, dilations),
     .def = "",
     .help = "Dilation of each dilated block, comma-separated (\"1,2,4,8\"), counting only the dilated "
             "blocks of model.layers in order; the list repeats when there are more (WaveNet's stacks). "
             "Empty: 2^i for the i-th dilated block."},
    {.section = "dilated",
     .name = "gated",
     .type = STRAND_KEY_BOOL,
     STRAND_KEY_FIELD(dilated_options, gated),
     .def = "false",
     .help = "WaveNet's gate: tanh(conv_f(x)) * sigmoid(conv_g(x)) with two dilated convolutions; false: "
             "conv(x). A C x C output projection follows either way."},
};

/* The list's entries into values (at most max); returns the count, or fails naming the bad entry. */
static int parse_dilations(const char *list, int64_t *values, int max, int *count) {
    *count = 0;
    if (!*list) return STRAND_OK;
    const char *p = list;
    for (int i = 0;; i++) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len && *p == ' ')
            p++, len--;
        while (len && p[len - 1] == ' ')
            len--;
        if (len == 0)
            STRAND_FAIL(STRAND_ERR_CONFIG, "dilated.dilations = '%s': entry %d is empty", list, i + 1);
        int64_t value = 0;
        for (size_t k = 0; k < len; k++) {
            if (p[k] < '0' || p[k] > '9')
                STRAND_FAIL(STRAND_ERR_CONFIG,
                            "dilated.dilations = '%s': entry %d '%.*s' is not a whole number", list, i + 1,
                            (int)len, p);
            value = value * 10 + (p[k] - '0');
            if (value > DILATED_MAX_DILATION)
                STRAND_FAIL(STRAND_ERR_CONFIG, "dilated.dilations = '%s': entry %d '%.*s' is over %lld", list,
                            i + 1, (int)len, p, (long long)DILATED_MAX_DILATION);
        }
        if (value < 1)
            STRAND_FAIL(STRAND_ERR_CONFIG, "dilated.dilations = '%s': entry %d is %lld; a dilation is >= 1",
                        list, i + 1, (long long)value);
        if (i >= max)
            STRAND_FAIL(STRAND_ERR_CONFIG, "dilated.dilations = '%s': more than %d entries", list, max);
        values[i] = value;
        *count = i + 1;
        if (!end) return STRAND_OK;
        p = end + 1;
    }
}

static int dilated_validate(const strand_config *config, const void *options, int used) {
    const dilated_options *o = options;
    int64_t values[DILATED_LIST_BYTES];
    int count = 0;
    STRAND_CALL(parse_dilations(o->dilations, values, DILATED_LIST_BYTES, &count));
    if (!used || count > 0) return STRAND_OK;
    /* the default 2^i must stay within the largest dilation */
    char names[STRAND_MAX_BLOCKS][32];
    const int n = strand_model_split_layers(config->layers, names, STRAND_MAX_BLOCKS);
    int blocks = 0;
    for (int l = 0; l < n; l++)
        blocks += strcmp(names[l], "dilated") == 0;
    if (blocks > 31)
        STRAND_FAIL(STRAND_ERR_CONFIG,
                    "dilated: %d dilated blocks, but the default dilations 2^i end at 2^30 (31 blocks); "
                    "set dilated.dilations (the list repeats)",
                    blocks);
    return STRAND_OK;
}

static unsigned dilated_capabilities(const void *options) {
    (void)options;
    return STRAND_MIXER_STEP;
}

/* The suite's window is 23 rows (shards of 5-6 rows at 4 ranks, pieces of 2-3 in zigzag): the
 * third and fourth configurations have halos of 16 rows, which span several earlier ranks; the
 * fourth also drops taps that reach before the window (K = 4, d = 16: two of four). */
static const char *const dilated_test_configs[] = {
    "",
    "dilated.gated=true",
    "dilated.kernel=3;dilated.dilations=8,4,1",
    "dilated.kernel=4;dilated.dilations=16,3;dilated.gated=true",
    "dilated.kernel=1",
    NULL};

typedef struct {
    int C, K, gated;
    int64_t dilation;
    /* sharded passes: taps used (those within the window) and the halo rows they reach */
    int K_used;
    int H;
    int64_t T;
    int64_t wf_offset, bf_offset, wg_offset, bg_offset, wo_offset; /* wg, bg: -1 unless gated */
    strand_halo halo;
    real_t *rows, *drows;  /* (n_pieces, H, C) the rows before each piece, and their gradient */
    real_t *pre_f, *pre_g; /* (T,C) convolution outputs (pre_g: gated) */
    real_t *z;             /* (T,C) the gate's output (gated; else pre_f) */
    real_t *dz, *dpre_g;   /* (T,C) scratch; dz becomes d pre_f in place */
    real_t *taps;          /* (K,C) one convolution's weights by tap */
    double *dtaps, *dbias; /* (K,C), (C) weight and bias gradient accumulators */
} dilated_state;

/* The block's place among the model's dilated blocks, from its layer name "block<l>.mixer" and
 * model.layers; 0 outside a model (a benchmark's "bench.mixer"). */
static int dilated_index(const strand_config *config, const char *layer) {
    int l = -1, consumed = 0;
    if (sscanf(layer, "block%d.mixer%n", &l, &consumed) != 1 || layer[consumed] != '\0' || l < 0) return 0;
    char names[STRAND_MAX_BLOCKS][32];
    const int n = strand_model_split_layers(config->layers, names, STRAND_MAX_BLOCKS);
    if (l >= n || strcmp(names[l], "dilated") != 0) return 0;
    int index = 0;
    for (int i = 0; i < l; i++)
        index += strcmp(names[i], "dilated") == 0;
    return index;
}

static int dilated_create(strand_mixer *mixer, const strand_config *config, strand_param_table *table,
                          const char *layer) {
    dilated_state *s = strand_alloc(sizeof *s, "dilated mixer");
    if (!s) return STRAND_ERR_NOMEM;
    mixer->state = s;
    const dilated_options *o = mixer->options;
    s->C = mixer->C;
    s->K = o->kernel;
    s->gated = o->gated;
    if (s->K < 1) STRAND_FAIL(STRAND_ERR_CONFIG, "dilated.kernel = %d must be >= 1", s->K);
    int64_t values[DILATED_LIST_BYTES];
    int count = 0;
    STRAND_CALL(parse_dilations(o->dilations, values, DILATED_LIST_BYTES, &count));
    const int index = dilated_index(config, layer);
    if (count > 0) {
        s->dilation = values[index % count];
    } else {
        if (index >= 31)
            STRAND_FAIL(STRAND_ERR_CONFIG,
                        "dilated block %d: the default dilation 2^%d is too large; set dilated.dilations",
                        index, index);
        s->dilation = INT64_C(1) << index;
    }
    const int C = s->C;
    /* Normal with std 1/sqrt(K) keeps the output variance close to the input's (as conv). */
    const double conv_std = 1.0 / sqrt((double)s->K);
    STRAND_CALL(strand_params_declare_at(table, layer, "weight", C, s->K, STRAND_INIT_NORMAL, conv_std, 0,
                                         &s->wf_offset, NULL));
    STRAND_CALL(
        strand_params_declare_at(table, layer, "bias", C, 0, STRAND_INIT_ZEROS, 0, 0, &s->bf_offset, NULL));
    s->wg_offset = s->bg_offset = -1;
    if (s->gated) {
        STRAND_CALL(strand_params_declare_at(table, layer, "gate_weight", C, s->K, STRAND_INIT_NORMAL,
                                             conv_std, 0, &s->wg_offset, NULL));
        STRAND_CALL(strand_params_declare_at(table, layer, "gate_bias", C, 0, STRAND_INIT_ZEROS, 0, 0,
                                             &s->bg_offset, NULL));
    }
    /* Wo feeds the residual stream: scaled down with depth like the other mixers' projections. */
    STRAND_CALL(strand_params_declare_at(table, layer, "wo", C, C, STRAND_INIT_NORMAL,
                                         strand_model_residual_std(config), 1, &s->wo_offset, NULL));
    return STRAND_OK;
}

/* Activations and scratch are shared across dilated blocks under recompute (their sizes do not
 * depend on the dilation); the halo rows are each block's own, as in shortconv. */
static int dilated_plan(strand_mixer *mixer, const strand_shard *shard, strand_plan *plan) {
    dilated_state *s = mixer->state;
    const int C = s->C;
    /* tap j matters for some position t < window only when j d <= window - 1 */
    const int64_t reach = shard->window > 0 ? (shard->window - 1) / s->dilation + 1 : 1;
    s->K_used = reach < s->K ? (int)reach : s->K;
    const int64_t H = (int64_t)(s->K_used - 1) * s->dilation;
    if (H > INT_MAX / 2)
        STRAND_FAIL(STRAND_ERR_CONFIG, "dilated: a halo of %lld rows is too long", (long long)H);
    s->H = (int)H;
    s->T = shard->T;
    const int64_t TC = (shard->T > 0 ? shard->T : 1) * (int64_t)C;
    const int saved = STRAND_LIFE_SAVED | STRAND_PLAN_SHARED,
              scratch = STRAND_LIFE_SCRATCH | STRAND_PLAN_SHARED;
    STRAND_CALL(strand_halo_plan(&s->halo, shard, s->H, C, plan));
    /* +1: a halo of 0 rows (K = 1) still gets a pointer */
    const int64_t rows = (int64_t)STRAND_MAX_PIECES * s->H * C + 1;
    STRAND_PLAN_ADD(plan, s->rows, rows, STRAND_LIFE_PERSISTENT, "dilated halo");
    STRAND_PLAN_ADD(plan, s->drows, rows, STRAND_LIFE_PERSISTENT, "dilated halo gradient");
    STRAND_PLAN_ADD(plan, s->pre_f, TC, saved, "dilated conv output");
    if (s->gated) {
        STRAND_PLAN_ADD(plan, s->pre_g, TC, saved, "dilated gate conv output");
        STRAND_PLAN_ADD(plan, s->z, TC, saved, "dilated gated output");
        STRAND_PLAN_ADD(plan, s->dpre_g, TC, scratch, "dilated gate gradient");
    }
    STRAND_PLAN_ADD(plan, s->dz, TC, scratch, "dilated output gradient");
    STRAND_PLAN_ADD(plan, s->taps, (int64_t)s->K * C, scratch, "dilated taps");
    STRAND_PLAN_ADD(plan, s->dtaps, (int64_t)s->K * C, scratch, "dilated tap gradient");
    STRAND_PLAN_ADD(plan, s->dbias, C, scratch, "dilated bias gradient");
    return STRAND_OK;
}

static int dilated_setup(strand_mixer *mixer, const strand_shard *shard) {
    dilated_state *s = mixer->state;
    return strand_halo_setup(&s->halo, shard);
}

/* taps (K,C) = weight (C,K) transposed, for the first K taps: unit stride over channels. */
static void transpose_taps(real_t *taps, const real_t *weight, int C, int K_all, int K) {
    for (int j = 0; j < K; j++)
        for (int c = 0; c < C; c++)
            taps[(int64_t)j * C + c] = weight[(int64_t)c * K_all + j];
}

/* One piece: out (n,C) = bias + sum_j taps_j * x[t - j d], with x from in (n,C) at t >= 0 and
 * from halo (H,C) (positions -H..-1 relative to the piece) before it. */
static void conv_piece_forward(real_t *out, const real_t *halo, const real_t *in, const real_t *taps,
                               const real_t *bias, int64_t n, int C, int K, int64_t d, int H) {
    for (int64_t t = 0; t < n; t++) {
        real_t *restrict o = out + t * C;
        for (int c = 0; c < C; c++)
            o[c] = bias[c];
        for (int j = 0; j < K; j++) {
            const int64_t p = t - j * d;
            const real_t *restrict x = p >= 0 ? in + p * C : halo + (H + p) * C;
            const real_t *restrict w = taps + (int64_t)j * C;
            for (int c = 0; c < C; c++)
                o[c] += w[c] * x[c];
        }
    }
}

/* Its adjoint for g = d out (n,C): din (n,C) and dhalo (H,C) += w_j g[t] at t - j d;
 * dtaps (K,C) += g[t] x[t - j d]; dbias (C) += g[t] (double sums: long shards). */
static void conv_piece_backward(real_t *din, real_t *dhalo, double *dtaps, double *dbias, const real_t *g,
                                const real_t *halo, const real_t *in, const real_t *taps, int64_t n, int C,
                                int K, int64_t d, int H) {
    for (int64_t t = 0; t < n; t++) {
        const real_t *restrict gt = g + t * C;
        for (int c = 0; c < C; c++)
            dbias[c] += gt[c];
        for (int j = 0; j < K; j++) {
            const int64_t p = t - j * d;
            const real_t *restrict x = p >= 0 ? in + p * C : halo + (H + p) * C;
            real_t *restrict dx = p >= 0 ? din + p * C : dhalo + (H + p) * C;
            const real_t *restrict w = taps + (int64_t)j * C;
            double *restrict dw = dtaps + (int64_t)j * C;
            for (int c = 0; c < C; c++) {
                dw[c] += (double)gt[c] * x[c];
                dx[c] += w[c] * gt[c];
            }
        }
    }
}

/* pre (T,C) = the dilated conv of in with (weight, bias), over every local piece. */
static void conv_forward(dilated_state *s, const strand_shard *shard, real_t *pre, const real_t *in,
                         const real_t *weight, const real_t *bias) {
    const int C = s->C;
    const int64_t HC = (int64_t)s->H * C;
    transpose_taps(s->taps, weight, C, s->K, s->K_used);
    int64_t row = 0;
    for (int p = 0; p < shard->n_pieces; p++) {
        const int64_t n = shard->piece_length[p];
        conv_piece_forward(pre + row * C, s->rows + p * HC, in + row * C, s->taps, bias, n, C, s->K_used,
                           s->dilation, s->H);
        row += n;
    }
}

/* din (T,C), drows, dweight (C,K), dbias (C) += the adjoint of conv_forward for dpre (T,C). */
static void conv_backward(dilated_state *s, const strand_shard *shard, real_t *din, real_t *dweight,
                          real_t *dbias, const real_t *dpre, const real_t *in, const real_t *weight) {
    const int C = s->C, K = s->K_used;
    const int64_t HC = (int64_t)s->H * C;
    transpose_taps(s->taps, weight, C, s->K, K);
    memset(s->dtaps, 0, sizeof(double) * (size_t)K * (size_t)C);
    memset(s->dbias, 0, sizeof(double) * (size_t)C);
    int64_t row = 0;
    for (int p = 0; p < shard->n_pieces; p++) {
        const int64_t n = shard->piece_length[p];
        conv_piece_backward(din + row * C, s->drows + p * HC, s->dtaps, s->dbias, dpre + row * C,
                            s->rows + p * HC, in + row * C, s->taps, n, C, K, s->dilation, s->H);
        row += n;
    }
    for (int c = 0; c < C; c++) {
        dbias[c] += (real_t)s->dbias[c];
        for (int j = 0; j < K; j++)
            dweight[(int64_t)c * s->K + j] += (real_t)s->dtaps[(int64_t)j * C + c];
    }
}

/* exp(-x) may overflow to inf for very negative x: 1 / inf is the right 0. */
static real_t sigmoid(real_t x) {
    return (real_t)1 / ((real_t)1 + strand_exp(-x));
}

static int dilated_forward(strand_mixer *mixer, real_t *out, const real_t *in, const real_t *params,
                           const strand_shard *shard) {
    dilated_state *s = mixer->state;
    const int C = s->C;
    const int64_t T = s->T, TC = T * C;
    // rows (n_pieces,H,C): the H rows before each piece, from whichever ranks hold them
    STRAND_CALL(strand_halo_gather(&s->halo, shard, s->rows, in));
    // pre_f (T,C) = conv_f(in); gated: pre_g (T,C) = conv_g(in), z = tanh(pre_f) sigmoid(pre_g)
    conv_forward(s, shard, s->pre_f, in, params + s->wf_offset, params + s->bf_offset);
    const real_t *z = s->pre_f;
    if (s->gated) {
        conv_forward(s, shard, s->pre_g, in, params + s->wg_offset, params + s->bg_offset);
        for (int64_t i = 0; i < TC; i++)
            s->z[i] = strand_tanh(s->pre_f[i]) * sigmoid(s->pre_g[i]);
        z = s->z;
    }
    // out (T,C) = z Wo^T
    linear_forward(out, z, params + s->wo_offset, NULL, T, C, C);
    return STRAND_OK;
}

static int dilated_backward(strand_mixer *mixer, real_t *din, real_t *dparams, const real_t *dout,
                            const real_t *in, const real_t *params, const strand_shard *shard) {
    dilated_state *s = mixer->state;
    const int C = s->C;
    const int64_t T = s->T, TC = T * C;
    const real_t *z = s->gated ? s->z : s->pre_f;
    // dz (T,C) = dout Wo; dWo (C,C) += dout^T z
    memset(s->dz, 0, sizeof(real_t) * (size_t)TC);
    linear_backward(s->dz, dparams + s->wo_offset, NULL, dout, z, params + s->wo_offset, T, C, C);
    if (s->gated) {
        // z = a s with a = tanh(pre_f), s = sig(pre_g): d pre_f = dz s (1 - a^2), d pre_g = dz a s (1 - s)
        for (int64_t i = 0; i < TC; i++) {
            const real_t a = strand_tanh(s->pre_f[i]), g = sigmoid(s->pre_g[i]);
            s->dpre_g[i] = s->dz[i] * a * g * (1 - g);
            s->dz[i] = s->dz[i] * g * (1 - a * a);
        }
    }
    // din (T,C) += the convs' adjoints; their halo part goes back to the rows' owners
    memset(s->drows, 0, sizeof(real_t) * (size_t)shard->n_pieces * (size_t)s->H * (size_t)C);
    conv_backward(s, shard, din, dparams + s->wf_offset, dparams + s->bf_offset, s->dz, in,
                  params + s->wf_offset);
    if (s->gated)
        conv_backward(s, shard, din, dparams + s->wg_offset, dparams + s->bg_offset, s->dpre_g, in,
                      params + s->wg_offset);
    return strand_halo_scatter_add(&s->halo, shard, din, s->drows);
}

static void dilated_destroy(strand_mixer *mixer) {
    dilated_state *s = mixer->state;
    if (!s) return;
    strand_free(s); /* the buffers belong to the plan */
    mixer->state = NULL;
}

/* Each conv: 2 K C per row; the gate about 8 per value (tanh, sigmoid, product); the projection
 * 2 C^2 per row. */
static double dilated_flops(const void *options, int C, int64_t T) {
    const dilated_options *o = options;
    const double convs = o->gated ? 2.0 : 1.0;
    return (double)T * C * (convs * 2.0 * o->kernel + (o->gated ? 8.0 : 0.0) + 2.0 * C);
}

/* ---- incremental decoding ----
 * The state is a ring of the last R = min(H, max_len - 1) + 1 inputs (H = (K-1) d with every tap):
 * O(K C + C^2) per token and R C values of memory. */

typedef struct {
    int64_t next, max_len; /* the position the next step must be */
    int64_t R;             /* ring rows: position p lives in row p mod R */
    real_t *ring;          /* (R,C) */
    real_t *z;             /* (C) the conv (or gate) output before the projection */
} dilated_step_state;

static void dilated_step_free(void *state) {
    dilated_step_state *st = state;
    if (!st) return;
    strand_free(st->ring);
    strand_free(st->z);
    strand_free(st);
}

static int dilated_step_init(const strand_mixer *mixer, const real_t *params, int64_t max_len, void **state) {
    (void)params;
    const dilated_state *s = mixer->state;
    dilated_step_state *st = strand_alloc(sizeof *st, "dilated step state");
    if (!st) return STRAND_ERR_NOMEM;
    *state = st;
    st->max_len = max_len;
    const int64_t H = (int64_t)(s->K - 1) * s->dilation;
    st->R = (H < max_len - 1 ? H : (max_len > 1 ? max_len - 1 : 0)) + 1;
    STRAND_ALLOC(st->ring, st->R * s->C, "dilated step ring");
    STRAND_ALLOC(st->z, s->C, "dilated step output");
    return STRAND_OK;
}

/* One conv at position t over the ring: bias + sum of the taps that reach position >= 0. */
static real_t step_conv(const dilated_state *s, const dilated_step_state *st, const real_t *weight,
                        const real_t *bias, int c, int64_t t) {
    real_t acc = bias[c];
    for (int j = 0; j < s->K; j++) {
        const int64_t p = t - j * s->dilation;
        if (p < 0) break;
        acc += weight[(int64_t)c * s->K + j] * st->ring[(p % st->R) * s->C + c];
    }
    return acc;
}

static int dilated_step(const strand_mixer *mixer, void *state, const real_t *params, const real_t *in,
                        real_t *out, int64_t position) {
    const dilated_state *s = mixer->state;
    dilated_step_state *st = state;
    const int C = s->C;
    if (position != st->next || position >= st->max_len)
        STRAND_FAIL(STRAND_ERR_INPUT, "dilated step: position %lld, expected %lld (< %lld)",
                    (long long)position, (long long)st->next, (long long)st->max_len);
    memcpy(st->ring + (position % st->R) * C, in, sizeof(real_t) * (size_t)C);
    for (int c = 0; c < C; c++) {
        const real_t f = step_conv(s, st, params + s->wf_offset, params + s->bf_offset, c, position);
        st->z[c] = s->gated ? strand_tanh(f) * sigmoid(step_conv(s, st, params + s->wg_offset,
                                                                 params + s->bg_offset, c, position))
                            : f;
    }
    // out (1,C) = z Wo^T, the forward's projection on one row
    linear_forward(out, st->z, params + s->wo_offset, NULL, 1, C, C);
    st->next++;
    return STRAND_OK;
}

const strand_mixer_ops strand_mixer_dilated = {
    .name = "dilated",
    .forward_cost = "O(L (K C + C^2))",
    .step_cost = "O(K C + C^2)",
    .summary = "causal depthwise dilated convolution (WaveNet; optional tanh-sigmoid gate) and a C x C "
               "projection, halo rows from every rank the dilation spans",
    .flops = dilated_flops,
    .options_size = sizeof(dilated_options),
    .keys = dilated_keys,
    .key_count = sizeof dilated_keys / sizeof dilated_keys[0],
    .validate = dilated_validate,
    .capabilities = dilated_capabilities,
    .test_configs = dilated_test_configs,
    .create = dilated_create,
    .plan = dilated_plan,
    .setup = dilated_setup,
    .forward = dilated_forward,
    .backward = dilated_backward,
    .destroy = dilated_destroy,
    .step_init = dilated_step_init,
    .step = dilated_step,
    .step_free = dilated_step_free,
};
