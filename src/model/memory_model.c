/* Per-rank memory model (see memory_model.h). Each function below mirrors one module's
 * allocations; when that module's allocations change, change its mirror here (the test
 * tests/memory/test_memory_model.sh compares the prediction with measured peaks). */
#define _POSIX_C_SOURCE 200809L
#include "strand/memory_model.h"

#include "strand/ckpt.h"
#include "strand/dataset.h"
#include "kernels/fftconv.h"
#include "strand/layout.h"
#include "strand/model.h"
#include "kernels/ring_attn.h"
#include "strand/train.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RB ((int64_t)sizeof(real_t))
#define MAX_LAYERS 256

/* Bytes of one strand_alloc of `count` elements of `size` bytes (rounded up to 64 bytes). */
static int64_t buf(int64_t count, int64_t size) {
    const int64_t bytes = (count * size + 63) / 64 * 64;
    return bytes > 0 ? bytes : 64;
}

static int64_t max64(int64_t a, int64_t b) {
    return a > b ? a : b;
}

/* The shape every mirror below needs. */
typedef struct {
    const strand_config *c;
    int sp, layout;
    int64_t L, T; /* window (train.seq_len), rows of the most loaded rank */
    int C;
    int strategy; /* resolved long-convolution strategy */
} shape;

/* ---- layout (layout.c) ---- */

/* The largest shard of the SP group (strand_shard_init's max_T): contiguous pieces of
 * split_range(L, sp), the first L % sp one longer; or zigzag chunks r and 2 sp - 1 - r of
 * split_range(L, 2 sp), the first L % 2sp one longer, so some rank holds two long chunks exactly
 * when more than sp chunks are long. */
static int64_t largest_shard(int64_t L, int sp, int layout) {
    if (layout != STRAND_LAYOUT_ZIGZAG) return (L + sp - 1) / sp;
    const int64_t chunks = 2 * (int64_t)sp, q = L / chunks, rem = L % chunks;
    return 2 * q + (rem > sp ? 2 : rem > 0 ? 1 : 0);
}

/* The shortest piece of the SP group (the halo takes the shift path when it is >= K - 1). */
static int64_t shortest_piece(int64_t L, int sp, int layout) {
    return layout == STRAND_LAYOUT_ZIGZAG ? L / (2 * (int64_t)sp) : L / sp;
}

/* ---- model.c: parameter table and the model's own buffers ---- */

static int declare_norm(strand_param_table *t, const char *layer, int C, int layer_norm) {
    STRAND_CALL(strand_params_declare(t, layer, "weight", C, 0, STRAND_INIT_ONES, 0, 0, NULL));
    if (layer_norm) STRAND_CALL(strand_params_declare(t, layer, "bias", C, 0, STRAND_INIT_ZEROS, 0, 0, NULL));
    return STRAND_OK;
}

/* One block's parameters in strand_model_create's order; the mixer's through its own create, so
 * its option checks and messages are those of training. */
static int declare_block(strand_param_table *t, const strand_config *c, const char *name, int l, int F,
                         int H) {
    const int C = c->d_model, layer_norm = strcmp(c->norm, "layernorm") == 0;
    char layer[48];
    snprintf(layer, sizeof layer, "block%d.norm1", l);
    STRAND_CALL(declare_norm(t, layer, C, layer_norm));
    strand_mixer mixer = {strand_mixer_find(name), C, NULL};
    if (!mixer.ops) STRAND_FAIL(STRAND_ERR_CONFIG, "model.layers: unknown mixer '%s' for block %d", name, l);
    snprintf(layer, sizeof layer, "block%d.mixer", l);
    int status = mixer.ops->create(&mixer, c, t, layer);
    if (mixer.ops->destroy) mixer.ops->destroy(&mixer);
    STRAND_CALL(status);
    snprintf(layer, sizeof layer, "block%d.norm2", l);
    STRAND_CALL(declare_norm(t, layer, C, layer_norm));
    snprintf(layer, sizeof layer, "block%d.mlp.fc", l);
    STRAND_CALL(strand_params_declare(t, layer, "weight", F, C, STRAND_INIT_NORMAL, 0, 1, NULL));
    STRAND_CALL(strand_params_declare(t, layer, "bias", F, 0, STRAND_INIT_ZEROS, 0, 0, NULL));
    snprintf(layer, sizeof layer, "block%d.mlp.proj", l);
    STRAND_CALL(strand_params_declare(t, layer, "weight", C, H, STRAND_INIT_NORMAL, 0, 1, NULL));
    STRAND_CALL(strand_params_declare(t, layer, "bias", C, 0, STRAND_INIT_ZEROS, 0, 0, NULL));
    return STRAND_OK;
}

/* Elements of the flat parameter array, with the 64-byte alignment padding of the real table. */
static int count_parameters(const strand_config *c, char names[][32], int n_layers, int64_t *total) {
    const int C = c->d_model, H = strand_config_mlp_hidden(c);
    const int F = strcmp(c->mlp, "swiglu") == 0 ? 2 * H : H;
    strand_param_table t;
    memset(&t, 0, sizeof t);
    int status = strand_params_declare(&t, "embedding", "weight", STRAND_VOCAB_SIZE, C, 0, 0, 1, NULL);
    for (int l = 0; l < n_layers && status == STRAND_OK; l++)
        status = declare_block(&t, c, names[l], l, F, H);
    if (status == STRAND_OK && strcmp(c->norm_position, "post") != 0)
        status = declare_norm(&t, "final_norm", C, strcmp(c->norm, "layernorm") == 0);
    if (status == STRAND_OK && !c->tie_embeddings)
        status = strand_params_declare(&t, "head", "weight", STRAND_VOCAB_SIZE, C, 0, 0, 1, NULL);
    *total = t.total;
    strand_params_free(&t);
    return status;
}

/* Saved activations, block inputs, head and backward scratch of strand_model_create. */
static void model_buffers(const shape *s, int n_layers, int recompute, int offload, int64_t *bytes) {
    const strand_config *c = s->c;
    const int64_t T = s->T, TC = T * s->C, V = STRAND_VOCAB_SIZE;
    const int64_t H = strand_config_mlp_hidden(c), F = strcmp(c->mlp, "swiglu") == 0 ? 2 * H : H;
    const int pre_norm = strcmp(c->norm_position, "post") != 0;
    /* norm1, mix, h, four (T) norm statistics, fc, act, then norm2 (pre-norm) or a and b (post) */
    const int64_t mlp_rows = T < MLP_CHUNK_ROWS ? (T > 0 ? T : 1) : MLP_CHUNK_ROWS; /* model.c */
    const int64_t hidden_rows = recompute ? mlp_rows : T; /* recompute rebuilds them per chunk */
    const int64_t set = 3 * buf(TC, RB) + 4 * buf(T, RB) + buf(hidden_rows * F, RB) +
                        buf(hidden_rows * H, RB) + (pre_norm ? 1 : 2) * buf(TC, RB);
    bytes[STRAND_MEM_ACTIVATIONS] = (recompute ? 1 : n_layers) * set;
    /* train.offload keeps three rotating block inputs (OFFLOAD_SLOTS of model.c, fewer with
     * fewer blocks); the rest live in the offload file. Two tables of tickets per block. */
    const int inputs = offload ? (n_layers < 3 ? n_layers : 3) : n_layers;
    bytes[STRAND_MEM_BLOCK_INPUTS] = inputs * buf(TC, RB) + (offload ? 2 * buf(n_layers, 8) : 0);
    bytes[STRAND_MEM_HEAD] = 2 * buf(TC, RB) + 3 * buf(T, RB) + 2 * buf(T * V, RB);
    bytes[STRAND_MEM_GRAD_SCRATCH] =
        3 * buf(TC, RB) + buf(mlp_rows * F, RB) + buf(mlp_rows * H, RB) + buf(T * V, RB);
}

/* ---- halo.c / shortconv.c ---- */

static int64_t shortconv_bytes(const shape *s, int64_t C, int K) {
    const int64_t HC = (int64_t)(K - 1) * C, sp = s->sp;
    const int shift =
        s->layout == STRAND_LAYOUT_CONTIGUOUS && shortest_piece(s->L, s->sp, s->layout) >= K - 1;
    int64_t b = 2 * buf(sp * STRAND_MAX_PIECES, 8) + buf(STRAND_MAX_PIECES * HC, RB); /* tables, send */
    if (!shift) b += buf(STRAND_MAX_PIECES * HC * sp, RB);                            /* all-gather rows */
    return b + 2 * buf(STRAND_MAX_PIECES * HC + 1, RB);                               /* rows, drows */
}

/* ---- fftconv.c ---- */

static int parse_strategy(const char *name) {
    if (strcmp(name, "fftw-mpi") == 0) return STRAND_CONV_FFTW_MPI;
    if (strcmp(name, "alltoall") == 0) return STRAND_CONV_ALLTOALL;
    return STRAND_CONV_AUTO;
}

static int alltoall_fits(int64_t T, int64_t L, int C, int sp) {
    return 2 * T * C <= INT_MAX && 2 * L * ((C + sp - 1) / sp) <= INT_MAX;
}

/* choose_strategy of fftconv.c for AUTO; an explicit strategy is kept. */
static int resolve_strategy(const strand_config *c, int64_t T, int64_t L, int sp) {
    const int asked = parse_strategy(c->conv_strategy);
    if (asked != STRAND_CONV_AUTO) return asked;
    if (sp == 1) return STRAND_CONV_ALLTOALL;
    if (c->d_model >= sp && alltoall_fits(T, L, c->d_model, sp)) return STRAND_CONV_ALLTOALL;
    return STRAND_CONV_FFTW_MPI;
}

/* ALLTOALL: channel blocks of ceil(C/sp) whole channels of length N on the most loaded rank. */
static int64_t fft_alltoall_bytes(const shape *s, int64_t N) {
    const int64_t cc = (s->C + s->sp - 1) / s->sp, Nh = N / 2 + 1;
    const int64_t stage = 2 * max64(s->T * s->C, s->L * cc);
    return 2 * buf(stage, RB) + 2 * buf(s->sp, 8) + 2 * cc * N * RB + 4 * cc * Nh * 2 * RB;
}

/* FFTW_MPI: three spectra of 2P columns of FFTW-MPI's local size. Without a communicator of this
 * size fftw_mpi_local_size_many_1d cannot be called, so the local size is estimated as ceil(N/sp)
 * complex values per column (FFTW's block distribution; its real allocation can be a little
 * larger). Rank 0's input block covers positions [0, ceil(N/sp)), so its exchange staging holds
 * min(ceil(N/sp), L) rows when that exceeds its shard. */
static int64_t fft_mpi_bytes(const shape *s, int64_t N) {
    const int64_t P = (s->C + 1) / 2, align = 64 / (2 * RB);
    const int64_t local = (N + s->sp - 1) / s->sp, stride = (local + align - 1) / align * align;
    const int64_t stage_rows = max64(s->T, local < s->L ? local : s->L);
    const int64_t tables = 8 * buf(s->sp, 8);
    return tables + 2 * buf(2 * stage_rows * s->C, RB) + buf(2 * P * 64, RB) + 3 * stride * 2 * P * 2 * RB;
}

static int fftconv_bytes(const shape *s, int64_t *bytes) {
    const int64_t N = strand_fftconv_size_for(s->L), sp = s->sp;
    const int64_t common = 2 * buf(sp * STRAND_MAX_PIECES, 8) + buf(sp, 8) + 5 * buf(sp, 4);
    if (s->strategy == STRAND_CONV_ALLTOALL) {
        if (!alltoall_fits(s->T, s->L, s->C, s->sp))
            STRAND_FAIL(STRAND_ERR_CONFIG,
                        "fftconv: the alltoall strategy would exchange more than INT_MAX values per rank "
                        "(L = %lld, C = %d, %d ranks); use conv.strategy = fftw-mpi or more ranks",
                        (long long)s->L, s->C, s->sp);
        *bytes = common + fft_alltoall_bytes(s, N);
        return STRAND_OK;
    }
    if (2 * N > INT_MAX)
        STRAND_FAIL(STRAND_ERR_CONFIG, "fftconv: transform size %lld is too large for MPI counts",
                    (long long)N);
    *bytes = common + fft_mpi_bytes(s, N);
    return STRAND_OK;
}

/* ---- mixers ---- */

/* Buffers a mixer owns (what a recompute donor lends) go to mixer/fft/ring; buffers every
 * instance keeps (halo rows, init tables) to `own`. */
typedef struct {
    int64_t mixer, fft, ring, own;
} mixer_bytes;

static int hyena_bytes(const shape *s, mixer_bytes *m) {
    const strand_config *c = s->c;
    const int64_t T = s->T, C = s->C, TC = T * C, W = c->hyena_filter_width;
    const int64_t E = 1 + 2 * (int64_t)c->hyena_frequencies,
                  max_len = c->hyena_max_len > 0 ? c->hyena_max_len : s->L;
    if (s->L > max_len)
        STRAND_FAIL(STRAND_ERR_CONFIG,
                    "mixer hyena: the window of %lld tokens is longer than the filter's position grid "
                    "(hyena.max_len = %lld); set hyena.max_len to the longest window ever used",
                    (long long)s->L, (long long)max_len);
    /* pos, t_pos, delta, proj, uc, y1, gated, pre and act per depth, work, ds[2], acc */
    m->mixer = buf(T * E, RB) + buf(T, 8) + buf(C, 8) + 2 * buf(3 * TC, RB) + 2 * buf(TC, RB) +
               2 * c->hyena_filter_depth * buf(T * W, RB) + buf(3 * TC, RB) + 2 * buf(T * W, RB) +
               buf(max64(C, W), 8);
    m->own = shortconv_bytes(s, 3 * C, c->hyena_short_kernel);
    return fftconv_bytes(s, &m->fft);
}

static int s4d_bytes(const shape *s, mixer_bytes *m) {
    const int64_t TC = s->T * s->C, Hm = s->c->s4d_state / 2, Hp = (Hm + 7) / 8 * 8;
    m->mixer = 6 * buf(TC, RB) + 2 * buf(2 * TC, RB); /* K y g dK dy dg, z dz */
    m->own = buf(Hm, 8) + buf(20 * Hp, 8);            /* a_im_init, mode workspace (create) */
    return fftconv_bytes(s, &m->fft);
}

/* strand_ring_attn_init: default tiles 128 x 512 (DEFAULT_TILE_Q/K of ring_attn.c), narrower
 * key tiles under a sliding window. */
static int ring_bytes(const shape *s, int heads, int64_t E, int64_t kvw, int64_t *bytes) {
    const strand_config *c = s->c;
    int64_t tile_q = 128, tile_k = 512;
    if (c->attn_window > 0) {
        const int64_t narrow = max64(c->attn_window / 4 / 64 * 64, 128);
        if (narrow < tile_k) tile_k = narrow;
    }
    const int64_t ld_s = (tile_k + 63) / 64 * 64, nr = max64(s->T, 1);
    const int64_t nb = max64(s->T * (c->attn_segment_memory ? 2 : 1), 1);
    if (nb * kvw > INT_MAX)
        STRAND_FAIL(STRAND_ERR_CONFIG,
                    "ring attention: a block of %lld rows x %lld values exceeds an MPI count", (long long)nb,
                    (long long)kvw);
    const int64_t tile = (int64_t)sizeof(strand_attn_tile);
    *bytes = 2 * buf(s->sp, 8) + 2 * buf(nb * kvw, RB) + 2 * buf(nb, 8) + 5 * buf(nr * kvw, RB) +
             2 * buf(tile_q * ld_s, RB) + 2 * buf(ld_s * E, RB) + buf(nr * E, RB) + 2 * buf(nr, RB) +
             buf(heads * nr, RB) + buf(nr, tile) + buf(nb, tile);
    return STRAND_OK;
}

static int attn_bytes(const shape *s, mixer_bytes *m) {
    const strand_config *c = s->c;
    const int H = c->attn_heads, G = c->attn_kv_heads > 0 ? c->attn_kv_heads : H;
    const int64_t E = s->C / H, HE = H * E, KVW = 2 * (int64_t)G * E, rows = max64(s->T, 1);
    const int64_t half = rows * (E / 2);
    /* pos, mem_pos, cos/sin, q, kv, y, lse, dy, dq, dkv (+ memory tables and K/V) */
    m->mixer = 2 * buf(rows, 8) + 2 * buf(half, RB) + 4 * buf(rows * HE, RB) + 2 * buf(rows * KVW, RB) +
               buf(rows * H, RB);
    if (c->attn_segment_memory) m->mixer += 2 * buf(half, RB) + 2 * buf(rows * KVW, RB);
    return ring_bytes(s, H, E, KVW, &m->ring);
}

static int one_mixer(const shape *s, const char *name, mixer_bytes *m) {
    memset(m, 0, sizeof *m);
    if (strcmp(name, "conv") == 0) {
        m->own = shortconv_bytes(s, s->C, s->c->conv_kernel);
        return STRAND_OK;
    }
    if (strcmp(name, "hyena") == 0) return hyena_bytes(s, m);
    if (strcmp(name, "s4d") == 0) return s4d_bytes(s, m);
    if (strcmp(name, "attn") == 0) return attn_bytes(s, m);
    STRAND_FAIL(STRAND_ERR_INTERNAL, "memory model: no mirror for mixer '%s'", name);
}

/* Every block's mixer: its own buffers per block, or with recompute once per mixer type (the first
 * block of a type lends its buffers to the later ones, as strand_model_create's donors). */
static int mixers_bytes(const shape *s, char names[][32], int n_layers, int shared, int64_t *bytes) {
    for (int l = 0; l < n_layers; l++) {
        int lender = l;
        for (int k = 0; k < l && shared && lender == l; k++)
            if (strcmp(names[k], names[l]) == 0) lender = k;
        mixer_bytes m;
        STRAND_CALL(one_mixer(s, names[l], &m));
        bytes[STRAND_MEM_MIXERS] += m.own;
        if (lender != l) continue;
        bytes[STRAND_MEM_MIXERS] += m.mixer;
        bytes[STRAND_MEM_FFT] += m.fft;
        bytes[STRAND_MEM_RING] += m.ring;
    }
    return STRAND_OK;
}

/* Scratch Open MPI's MPI_Allreduce of the gradient takes beyond the array itself: measured (Open
 * MPI 4.1, 16.8M and 8.4M floats) as half the array at 2, 3 and 4 ranks, which is what the ring
 * algorithm's two blocks of count/world values take at 4; on larger worlds those blocks shrink. */
static int64_t allreduce_scratch(int64_t bytes, int64_t world) {
    if (world < 2) return 0;
    return world <= 4 ? bytes / 2 : 2 * bytes / world;
}

/* ---- the estimate ---- */

static int check_model(const strand_config *c, char names[][32], int *n_layers, int *recompute,
                       int *offload) {
    *offload = c->offload[0] != '\0';
    *recompute = strcmp(c->recompute, "block") == 0 || *offload; /* offload implies recompute */
    if (*recompute && c->attn_segment_memory)
        STRAND_FAIL(STRAND_ERR_CONFIG,
                    "train.recompute = block (or train.offload) cannot be combined with "
                    "attn.segment_memory: a recomputed forward would advance the attention memory twice");
    *n_layers = strand_model_split_layers(c->layers, names, MAX_LAYERS);
    if (*n_layers <= 0)
        STRAND_FAIL(STRAND_ERR_CONFIG, "model.layers = '%s' is not a list of mixer names", c->layers);
    return STRAND_OK;
}

static int check_grid(const strand_config *c, int sp, int dp, int layout) {
    if (sp < 1 || dp < 1)
        STRAND_FAIL(STRAND_ERR_CONFIG, "memory model: a grid of sp = %d x dp = %d ranks is empty", sp, dp);
    const int64_t minimum = layout == STRAND_LAYOUT_ZIGZAG ? 2 * (int64_t)sp : sp;
    if (c->seq_len < minimum)
        STRAND_FAIL(STRAND_ERR_CONFIG,
                    "train.seq_len = %lld is smaller than the %d ranks of a sequence-parallel group%s",
                    (long long)c->seq_len, sp,
                    layout == STRAND_LAYOUT_ZIGZAG ? " times 2 (zigzag layout)" : "");
    return STRAND_OK;
}

int strand_memory_estimate(const strand_config *config, int sp, int dp, strand_memory_report *out) {
    memset(out, 0, sizeof *out);
    char names[MAX_LAYERS][32];
    int n_layers = 0, recompute = 0, offload = 0;
    STRAND_CALL(check_model(config, names, &n_layers, &recompute, &offload));
    const int layout = strand_train_layout(config);
    STRAND_CALL(check_grid(config, sp, dp, layout));
    STRAND_CALL(count_parameters(config, names, n_layers, &out->parameters));
    shape s = {config, sp, layout, config->seq_len, 0, config->d_model, STRAND_CONV_AUTO};
    s.T = largest_shard(s.L, sp, layout);
    s.strategy = resolve_strategy(config, s.T, s.L, sp);
    out->sp = sp, out->dp = dp, out->layout = layout, out->rows = s.T, out->shared_mixers = recompute;
    out->conv_strategy =
        strstr(config->layers, "hyena") || strstr(config->layers, "s4d") ? s.strategy : STRAND_CONV_AUTO;

    int64_t *b = out->bytes;
    b[STRAND_MEM_PARAMS] = buf(out->parameters, RB);
    b[STRAND_MEM_GRADS] =
        buf(out->parameters, RB) + allreduce_scratch(out->parameters * RB, sp * (int64_t)dp);
    b[STRAND_MEM_OPTIMIZER] = 2 * buf(out->parameters, RB);
    model_buffers(&s, n_layers, recompute, offload, b);
    STRAND_CALL(mixers_bytes(&s, names, n_layers, recompute, b));
    /* train.c: inputs, targets, read buffer (T + 1), checkpoint metadata scratch, shard table */
    b[STRAND_MEM_DATA] = 2 * buf(s.T, 1) + buf(s.T + 1, 1) + buf(1, sizeof(strand_ckpt_meta)) + buf(sp, 8);
    strand_memory_set_baseline(out, STRAND_MEMORY_BASELINE_DEFAULT);
    return STRAND_OK;
}

void strand_memory_set_baseline(strand_memory_report *report, int64_t bytes) {
    report->bytes[STRAND_MEM_BASELINE] = bytes;
    report->total = 0;
    for (int i = 0; i < STRAND_MEM_COMPONENTS; i++)
        report->total += report->bytes[i];
}

/* ---- baseline ---- */

/* What training touches after the dry run's point (config parsed, MPI initialised) outside
 * strand's buffers: HDF5 and its MPI-IO driver on the first read, OpenBLAS's GEMM buffer, FFTW's
 * plans and twiddles, MPI's collective scratch and the pages of program text the step runs.
 * Calibrated as measured peak - (dry-run VmRSS + strand's buffers) over the nine configurations of
 * tests/memory/test_memory_model.sh (float, Open MPI 4.1, 1-4 ranks): 8.4 to 12.7 MB, median
 * 10.9 MB; a tiny 1-rank model (d_model 16, 256 tokens) gave 8 MB. */
enum { TOUCHED_LATER_BYTES = 11 * 1024 * 1024 };

int strand_memory_process_baseline(int64_t *bytes) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) STRAND_FAIL(STRAND_ERR_IO, "cannot read /proc/self/status: %s", strerror(errno));
    char line[256];
    long long kib = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kib = strtoll(line + 6, NULL, 10);
    fclose(f);
    if (kib < 0) STRAND_FAIL(STRAND_ERR_IO, "/proc/self/status has no VmRSS line");
    *bytes = (int64_t)kib * 1024 + TOUCHED_LATER_BYTES;
    return STRAND_OK;
}

const char *strand_memory_component_name(int component) {
    static const char *const names[STRAND_MEM_COMPONENTS] = {
        "params",       "grads",  "adamw", "activations", "block_inputs", "head",
        "grad_scratch", "mixers", "fft",   "ring",        "data",         "baseline"};
    return component >= 0 && component < STRAND_MEM_COMPONENTS ? names[component] : "?";
}
