/* Mixer "hyena": the HyenaDNA order-2 operator (Poli et al. 2023; Nguyen et al. 2023).
 *
 *   (x0 | x1 | v) = short_causal_dwconv(W_in u + b_in)                       // (T,3C)
 *   y = W_out [x0 * (h (*) (x1 v) + bias_c x1 v)] + b_out                     // (T,C)
 *
 * where (*) is the causal long convolution over the whole window (distributed, fftconv.h) and h
 * the implicit filter, evaluated at this rank's positions l only (h is indexed by lag, and lag
 * l's row sits on the rank that holds position l):
 *
 *   z_l = [t_l, cos(2 pi f_k l / Lmax), -sin(2 pi f_k l / Lmax)]   k = 1..K     // (1+2K)
 *   h_l = FFN(z_l) * exp(-|delta_c| t_l)                                       // (C)
 *   FFN = Linear(1+2K -> W) -> Sin -> [Linear(W -> W) -> Sin] x (depth-1) -> Linear(W -> C, no bias)
 *   Sin(a) = sin(w * a), w (W) trainable
 *
 * Choices, checked against HazyResearch/hyena-dna src/models/sequence/hyena.py:
 *  - Position grid fixed by Lmax = hyena.max_len (0 = train.seq_len): t_l = l / (Lmax - 1)
 *    (torch.linspace(0, 1, Lmax)); the angle uses l / Lmax as PositionalEmbedding does. A window
 *    longer than Lmax is refused; shorter windows use the first rows of the same grid.
 *  - Frequencies f_k = linspace(1e-4, K-1, K) (PositionalEmbedding's "bands"; K = 1 gives 1e-4).
 *  - One sine frequency vector shared by every Sin layer: HyenaFilter builds one Sin module and
 *    appends that same module after each Linear, so its `freq` parameter is shared.
 *  - Decay (ExponentialModulation, target 1e-2, shift 0, not trained):
 *    delta_c = linspace(ln(1e-2)/decay_slow, ln(1e-2)/decay_fast, C), i.e. channel 0 decays
 *    slowest and channel C-1 fastest, in the reference's order.
 *  - Gating order of HyenaOperator's non-flash path: the first chunk gates the output, the
 *    second multiplies v before the long convolution.
 *  - bias_c ~ normal(0, 1) (torch.randn in HyenaFilter), trainable.
 *  - Initialisation as HyenaDNA's LMBackbone leaves it: its _init_weights re-initialises EVERY
 *    nn.Linear (in/out projections and the filter FFN) to normal(0, initializer_range) with
 *    zero biases, and out_proj to normal(0, initializer_range / sqrt(2 n_layer)); nn.Conv1d (the
 *    short conv) keeps PyTorch's default uniform(+-1/sqrt(K)) for weight and bias. Here
 *    initializer_range = model.init_std. The sine frequencies start at hyena.sine_freq.
 *  - No weight decay on the filter (HyenaFilter's wd = 0) nor on vectors and the short conv.
 *
 * Gradients of the filter parameters are partial sums over this rank's positions; the trainer's
 * all-reduce over the world completes them (the mixer does not all-reduce).
 *
 * Memory per layer, in rows of T (values per local row), besides fftconv's own (about 16-20 C):
 *   saved for backward: proj 3C + conv output 3C + long conv output C + gated C = 8C,
 *                       filter pre-activations and sines 2*depth*W, positional features 1+2K;
 *   scratch:            3C (h and x1 v in forward, gradients in backward) + 2W (filter gradients).
 *   Total 11C + (2 depth + 2) W + 1 + 2K, e.g. C = 256, W = 64, depth 2, K = 8: 3217 values.
 * Backward overwrites the saved conv output with its gradient, so it runs once per forward. */
#include "kernels/fftconv.h"
#include "kernels/fastmath.h"
#include "kernels/layers.h"
#include "strand/model.h"
#include "core/rng.h"
#include "kernels/shortconv.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { HYENA_MAX_DEPTH = 8 };

typedef struct {
    int filter_width, filter_depth, frequencies;
    double sine_freq;
    int64_t max_len;
    int short_kernel;
    double decay_fast, decay_slow;
} hyena_options;

static const strand_config_key hyena_keys[] = {
    {.section = "hyena",
     .name = "filter_width",
     .type = STRAND_KEY_INT,
     STRAND_KEY_FIELD(hyena_options, filter_width),
     .def = "64",
     .imin = 2,
     .imax = 4096,
     .help = "Hidden width of the implicit long filter's FFN."},
    {.section = "hyena",
     .name = "filter_depth",
     .type = STRAND_KEY_INT,
     STRAND_KEY_FIELD(hyena_options, filter_depth),
     .def = "2",
     .imin = 1,
     .imax = 8,
     .help = "Hidden sine layers in the implicit filter's FFN."},
    {.section = "hyena",
     .name = "frequencies",
     .type = STRAND_KEY_INT,
     STRAND_KEY_FIELD(hyena_options, frequencies),
     .def = "8",
     .imin = 1,
     .imax = 1024,
     .help = "Positional features of the filter: t plus cos and sin of this many frequencies."},
    {.section = "hyena",
     .name = "sine_freq",
     .type = STRAND_KEY_DOUBLE,
     STRAND_KEY_FIELD(hyena_options, sine_freq),
     .def = "10",
     .dmin = 0,
     .dmax = 1000,
     .flags = STRAND_KEY_MIN_OPEN,
     .help = "Initial frequency w of the filter's sin(w x) activations (trainable)."},
    {.section = "hyena",
     .name = "max_len",
     .type = STRAND_KEY_INT64,
     STRAND_KEY_FIELD(hyena_options, max_len),
     .def = "0",
     .imin = 0,
     .imax = INT64_C(1) << 40,
     .flags = STRAND_KEY_ZERO_IS_WINDOW,
     .help =
         "Length of the filter's position grid; 0 = train.seq_len. Set it to the longest window ever used."},
    {.section = "hyena",
     .name = "short_kernel",
     .type = STRAND_KEY_INT,
     STRAND_KEY_FIELD(hyena_options, short_kernel),
     .def = "3",
     .imin = 2,
     .imax = 8,
     .help = "Short causal depthwise conv after the input projection."},
    {.section = "hyena",
     .name = "decay_fast",
     .type = STRAND_KEY_DOUBLE,
     STRAND_KEY_FIELD(hyena_options, decay_fast),
     .def = "0.3",
     .dmin = 0,
     .dmax = 100,
     .flags = STRAND_KEY_MIN_OPEN,
     .help = "Fastest decay of the filter's exponential window (fraction of the grid)."},
    {.section = "hyena",
     .name = "decay_slow",
     .type = STRAND_KEY_DOUBLE,
     STRAND_KEY_FIELD(hyena_options, decay_slow),
     .def = "1.5",
     .dmin = 0,
     .dmax = 100,
     .flags = STRAND_KEY_MIN_OPEN,
     .help = "Slowest decay of the filter's exponential window (fraction of the grid)."},
};

static int hyena_validate(const strand_config *config, const void *options, int used) {
    (void)config, (void)used;
    const hyena_options *o = options;
    if (!(o->decay_fast <= o->decay_slow))
        STRAND_FAIL(STRAND_ERR_CONFIG,
                    "hyena.decay_fast = %g must not exceed hyena.decay_slow = %g (the fastest decay is the "
                    "smaller fraction of the grid)",
                    o->decay_fast, o->decay_slow);
    return STRAND_OK;
}

static unsigned hyena_capabilities(const void *options) {
    (void)options;
    return STRAND_MIXER_LONG_CONV | STRAND_MIXER_STEP;
}

static const char *const hyena_test_configs[] = {
    "", "hyena.filter_depth=1;hyena.short_kernel=2;hyena.max_len=64", "fft.strategy=fftw-mpi", NULL};

typedef struct {
    /* configuration */
    int K;     /* short conv kernel */
    int W;     /* filter FFN width */
    int depth; /* sine layers of the filter FFN */
    int n_freq;
    int E; /* positional features 1 + 2 n_freq */
    double sine_freq, decay_fast, decay_slow;
    int64_t max_len; /* Lmax, resolved at create */
    strand_fftconv_options conv_options;
    char wisdom[1024];

    /* parameter offsets in the flat array (indices kept for the counter-based init) */
    int short_weight, short_bias;
    int64_t in_w, in_b, short_w, short_b, ffn_w[HYENA_MAX_DEPTH], ffn_b[HYENA_MAX_DEPTH], sine_w, ffn_out,
        bias_c, out_w, out_b;

    /* made in setup for shard->T rows */
    strand_fftconv *conv;
    int64_t T;
    real_t *pos;   /* (T,E) positional features z_l */
    real_t *decay; /* (T,C) exp(-|delta_c| t_l): no parameter in it, so made once at setup */
    real_t *proj;  /* (T,3C) W_in u + b_in, the short conv's input */
    real_t *uc;    /* (T,3C) short conv output (x0 | x1 | v); backward puts its gradient here */
    real_t *y1;    /* (T,C) h (*) (x1 v) */
    real_t *gated; /* (T,C) x0 * (y1 + bias_c x1 v), the output projection's input */
    real_t *pre[HYENA_MAX_DEPTH]; /* (T,W) filter pre-activations */
    real_t *act[HYENA_MAX_DEPTH]; /* (T,W) sin(w * pre) */
    real_t *work;                 /* (T,3C) scratch */
    real_t *ds[2];                /* (T,W) filter gradient ping-pong */
    double *acc; /* (1 + blocks, max(C,W)) reductions over T: the total, then one partial per block of
                  * HYENA_ROWS rows, summed in block order (the same for any thread count) */
    strand_shortconv short_conv; /* over the 3C projected channels */
} hyena_state;

static int hyena_create(strand_mixer *mixer, const strand_config *config, strand_param_table *table,
                        const char *layer) {
    hyena_state *s = strand_alloc(sizeof *s, "hyena mixer");
    if (!s) return STRAND_ERR_NOMEM;
    mixer->state = s;
    const int C = mixer->C;
    const hyena_options *o = mixer->options;
    s->K = o->short_kernel;
    s->W = o->filter_width;
    s->depth = o->filter_depth;
    s->n_freq = o->frequencies;
    s->E = 1 + 2 * s->n_freq;
    s->sine_freq = o->sine_freq;
    s->decay_fast = o->decay_fast;
    s->decay_slow = o->decay_slow;
    s->max_len = o->max_len > 0 ? o->max_len : config->seq_len;
    if (s->depth < 1 || s->depth > HYENA_MAX_DEPTH)
        STRAND_FAIL(STRAND_ERR_CONFIG, "hyena.filter_depth = %d: expected 1..%d", s->depth, HYENA_MAX_DEPTH);
    if (s->K < 1 || s->W < 1 || s->n_freq < 1 || s->max_len < 1)
        STRAND_FAIL(STRAND_ERR_CONFIG, "mixer hyena: short_kernel, filter_width, frequencies and max_len "
                                       "must be positive");
    strand_fftconv_options_from_config(config, &s->conv_options, s->wisdom, sizeof s->wisdom);

    const double std = config->init_std;
    const double proj_std = strand_model_residual_std(config);
    const int W = s->W;
    STRAND_CALL(strand_params_declare_at(table, layer, "in_proj.weight", 3 * (int64_t)C, C,
                                         STRAND_INIT_NORMAL, std, 1, &s->in_w, NULL));
    STRAND_CALL(strand_params_declare_at(table, layer, "in_proj.bias", 3 * (int64_t)C, 0, STRAND_INIT_ZEROS,
                                         0, 0, &s->in_b, NULL));
    STRAND_CALL(strand_params_declare_at(table, layer, "short_conv.weight", 3 * (int64_t)C, s->K,
                                         STRAND_INIT_BY_LAYER, 0, 0, &s->short_w, &s->short_weight));
    STRAND_CALL(strand_params_declare_at(table, layer, "short_conv.bias", 3 * (int64_t)C, 0,
                                         STRAND_INIT_BY_LAYER, 0, 0, &s->short_b, &s->short_bias));
    for (int i = 0; i < s->depth; i++) {
        char name[32];
        snprintf(name, sizeof name, "filter.fc%d.weight", i);
        STRAND_CALL(strand_params_declare_at(table, layer, name, W, i == 0 ? s->E : W, STRAND_INIT_NORMAL,
                                             std, 0, &s->ffn_w[i], NULL));
        snprintf(name, sizeof name, "filter.fc%d.bias", i);
        STRAND_CALL(
            strand_params_declare_at(table, layer, name, W, 0, STRAND_INIT_ZEROS, 0, 0, &s->ffn_b[i], NULL));
    }
    STRAND_CALL(strand_params_declare_at(table, layer, "filter.sine_freq", W, 0, STRAND_INIT_BY_LAYER, 0, 0,
                                         &s->sine_w, NULL));
    STRAND_CALL(strand_params_declare_at(table, layer, "filter.out.weight", C, W, STRAND_INIT_NORMAL, std, 0,
                                         &s->ffn_out, NULL));
    STRAND_CALL(strand_params_declare_at(table, layer, "filter.bias", C, 0, STRAND_INIT_NORMAL, 1.0, 0,
                                         &s->bias_c, NULL));
    STRAND_CALL(strand_params_declare_at(table, layer, "out_proj.weight", C, C, STRAND_INIT_NORMAL, proj_std,
                                         1, &s->out_w, NULL));
    STRAND_CALL(strand_params_declare_at(table, layer, "out_proj.bias", C, 0, STRAND_INIT_ZEROS, 0, 0,
                                         &s->out_b, NULL));
    return STRAND_OK;
}

static void hyena_init_params(strand_mixer *mixer, real_t *params, uint64_t seed) {
    hyena_state *s = mixer->state;
    const int64_t C3 = 3 * (int64_t)mixer->C;
    /* nn.Conv1d's default: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = K (depthwise). */
    const double bound = 1.0 / sqrt((double)s->K);
    for (int64_t j = 0; j < C3 * s->K; j++)
        params[s->short_w + j] =
            (real_t)(bound * (2.0 * strand_rng_uniform(seed, STRAND_STREAM_INIT, (uint64_t)s->short_weight,
                                                       (uint64_t)j) -
                              1.0));
    for (int64_t j = 0; j < C3; j++)
        params[s->short_b + j] =
            (real_t)(bound * (2.0 * strand_rng_uniform(seed, STRAND_STREAM_INIT, (uint64_t)s->short_bias,
                                                       (uint64_t)j) -
                              1.0));
    for (int j = 0; j < s->W; j++)
        params[s->sine_w + j] = (real_t)s->sine_freq;
}

/* Rows per block of the reductions over T (and of the threads' share of them). */
enum { HYENA_ROWS = 2048 };

static int64_t row_blocks(int64_t T) {
    return (T + HYENA_ROWS - 1) / HYENA_ROWS;
}

/* acc[0..n) = sum over blocks b of acc[(1 + b) n ..], in block order. */
static void sum_blocks(double *acc, int64_t blocks, int n) {
    for (int j = 0; j < n; j++) {
        double total = 0.0;
        for (int64_t b = 0; b < blocks; b++)
            total += acc[(1 + b) * n + j];
        acc[j] = total;
    }
}

/* Every shard-sized buffer and the long convolution's are the same for every hyena block of a
 * model (positions and decays too): shared under train.recompute = block. Only the short conv's
 * halo rows are each block's own. */
static int hyena_plan(strand_mixer *mixer, const strand_shard *shard, strand_plan *plan) {
    hyena_state *s = mixer->state;
    const int C = mixer->C;
    if (shard->window > s->max_len)
        STRAND_FAIL(STRAND_ERR_CONFIG,
                    "mixer hyena: the window of %lld tokens is longer than the filter's position grid "
                    "(hyena.max_len = %lld); set hyena.max_len to the longest window ever used",
                    (long long)shard->window, (long long)s->max_len);
    const int64_t T = shard->T, TC = T * C;
    s->T = T;
    const int table = STRAND_LIFE_PERSISTENT | STRAND_PLAN_SHARED,
              saved = STRAND_LIFE_SAVED | STRAND_PLAN_SHARED,
              scratch = STRAND_LIFE_SCRATCH | STRAND_PLAN_SHARED;
    /* First: the long convolution's plan is collective, and nothing before it may fail alone. */
    STRAND_CALL(strand_fftconv_plan(&s->conv, shard, C, &s->conv_options, scratch, plan));
    STRAND_PLAN_ADD(plan, s->pos, T * s->E, table, "hyena positional features");
    STRAND_PLAN_ADD(plan, s->decay, TC, table, "hyena decay window");
    STRAND_PLAN_ADD(plan, s->proj, 3 * TC, saved, "hyena activations");
    STRAND_PLAN_ADD(plan, s->uc, 3 * TC, saved, "hyena activations");
    STRAND_PLAN_ADD(plan, s->y1, TC, saved, "hyena activations");
    STRAND_PLAN_ADD(plan, s->gated, TC, saved, "hyena activations");
    for (int i = 0; i < s->depth; i++) {
        STRAND_PLAN_ADD(plan, s->pre[i], T * s->W, saved, "hyena filter activations");
        STRAND_PLAN_ADD(plan, s->act[i], T * s->W, saved, "hyena filter activations");
    }
    STRAND_PLAN_ADD(plan, s->work, 3 * TC, scratch, "hyena scratch");
    STRAND_PLAN_ADD(plan, s->ds[0], T * s->W, scratch, "hyena filter scratch");
    STRAND_PLAN_ADD(plan, s->ds[1], T * s->W, scratch, "hyena filter scratch");
    STRAND_PLAN_ADD(plan, s->acc, (1 + row_blocks(T)) * (C > s->W ? C : s->W), scratch, "hyena accumulators");
    return strand_shortconv_plan(&s->short_conv, shard, 3 * C, s->K, plan);
}

/* Positional features z (E) and t_l of global position l on the grid fixed by Lmax. */
static void filter_features(const hyena_state *s, int64_t l, real_t *z, double *t_l) {
    const int64_t L = s->max_len;
    const int K = s->n_freq;
    const double two_pi = 6.283185307179586476925286766559;
    const double t = L > 1 ? (double)l / (double)(L - 1) : 0.0;
    *t_l = t;
    z[0] = (real_t)t;
    for (int k = 0; k < K; k++) {
        const double f = K > 1 ? 1e-4 + (double)k * ((double)(K - 1) - 1e-4) / (double)(K - 1) : 1e-4;
        /* f l / L cycles, reduced to [0, 1) before the 2 pi so long grids keep their accuracy */
        double cycles = f * ((double)l / (double)L);
        cycles -= floor(cycles);
        z[1 + k] = (real_t)cos(two_pi * cycles);
        z[1 + K + k] = (real_t)-sin(two_pi * cycles);
    }
}

/* |delta_c| of channel c of C in the exponential window. */
static double decay_rate(const hyena_state *s, int c, int C) {
    const double slow = log(1e-2) / s->decay_slow, fast = log(1e-2) / s->decay_fast;
    return fabs(C > 1 ? slow + (fast - slow) * (double)c / (double)(C - 1) : slow);
}

/* decay (n,C) = exp(-|delta_c| t_l) for n positions with t_l in t_pos. */
static void filter_window(const hyena_state *s, real_t *decay, const double *t_pos, int64_t n, int C) {
    for (int64_t i = 0; i < n; i++)
        for (int c = 0; c < C; c++)
            decay[i * C + c] = (real_t)exp(-decay_rate(s, c, C) * t_pos[i]);
}

static int hyena_setup(strand_mixer *mixer, const strand_shard *shard) {
    hyena_state *s = mixer->state;
    STRAND_CALL(strand_shortconv_setup(&s->short_conv, shard));
    /* Positional features and the decay window of this rank's positions on the grid fixed by Lmax. */
    for (int64_t i = 0; i < s->T; i++) {
        double t_l;
        filter_features(s, strand_shard_position(shard, i), s->pos + i * s->E, &t_l);
        filter_window(s, s->decay + i * mixer->C, &t_l, 1, mixer->C);
    }
    return strand_fftconv_setup(s->conv, shard);
}

/* sin_out and cos_out (T,W) = sin and cos of w_j pre (either may be NULL), by the vectorised
 * strand_sincos; a row holding an argument beyond its range is redone with libm. */
static void filter_sines(real_t *sin_out, real_t *cos_out, const real_t *pre, const real_t *w, int64_t T,
                         int W) {
#pragma omp parallel for schedule(static) if (T * W > 65536)
    for (int64_t t = 0; t < T; t++) {
        const real_t *restrict p = pre + t * W;
        real_t *restrict so = sin_out ? sin_out + t * W : NULL, *restrict co =
                                                                    cos_out ? cos_out + t * W : NULL;
        int beyond = 0; /* an integer OR: a reduction the compiler vectorises, unlike a float max */
        if (so && co)
            for (int j = 0; j < W; j++) {
                const real_t x = w[j] * p[j];
                strand_sincos(x, &so[j], &co[j]);
                beyond |= (x < 0 ? -x : x) > (real_t)STRAND_SINCOS_MAX;
            }
        else if (so)
            for (int j = 0; j < W; j++) {
                const real_t x = w[j] * p[j];
                real_t cx;
                strand_sincos(x, &so[j], &cx);
                beyond |= (x < 0 ? -x : x) > (real_t)STRAND_SINCOS_MAX;
            }
        else
            for (int j = 0; j < W; j++) {
                const real_t x = w[j] * p[j];
                real_t sx;
                strand_sincos(x, &sx, &co[j]);
                beyond |= (x < 0 ? -x : x) > (real_t)STRAND_SINCOS_MAX;
            }
        if (beyond)
            for (int j = 0; j < W; j++) {
                const double x = (double)w[j] * (double)p[j];
                if (so) so[j] = (real_t)sin(x);
                if (co) co[j] = (real_t)cos(x);
            }
    }
}

/* h (T,C) = FFN(z) * decay for the T positions of features z (T,E) and their window decay (T,C),
 * any list of positions; pre[i], act[i] (T,W) receive the pre-activations and sines (what
 * backward needs). */
static void filter_eval(const hyena_state *s, real_t *h, const real_t *params, const real_t *z,
                        const real_t *decay, real_t *const *pre_i, real_t *const *act_i, int64_t T, int C) {
    const int W = s->W;
    const real_t *w = params + s->sine_w;
    const real_t *x = z;
    int in_dim = s->E;
    for (int i = 0; i < s->depth; i++) {
        real_t *pre = pre_i[i], *act = act_i[i];
        linear_forward(pre, x, params + s->ffn_w[i], params + s->ffn_b[i], T, in_dim, W); // (T,W)
        filter_sines(act, NULL, pre, w, T, W);                                            // (T,W)
        x = act;
        in_dim = W;
    }
    linear_forward(h, x, params + s->ffn_out, NULL, T, W, C); // (T,C)
    const int64_t n = T * C;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++)
        h[i] *= decay[i];
}

/* h (T,C) at this rank's positions; saves pre-activations and sines. */
static void filter_forward(hyena_state *s, real_t *h, const real_t *params, int64_t T, int C) {
    const double t0 = strand_section_begin();
    filter_eval(s, h, params, s->pos, s->decay, s->pre, s->act, T, C);
    strand_section_end(STRAND_SECTION_FILTER, t0);
}

/* Given dh (T,C) (overwritten), add the gradients of every filter parameter. */
static void filter_backward(hyena_state *s, real_t *dparams, real_t *dh, const real_t *params, int64_t T,
                            int C) {
    const double t0 = strand_section_begin();
    const int W = s->W, D = s->depth;
    const int64_t n = T * C, blocks = row_blocks(T);
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++)
        dh[i] *= s->decay[i];
    real_t *ds = s->ds[0], *cw; /* ping-pong: cos(w pre) goes in the other buffer, then d act[i-1] */
    linear_backward_assign(ds, dparams + s->ffn_out, NULL, dh, s->act[D - 1], params + s->ffn_out, T, W, C);
    const real_t *w = params + s->sine_w;
    for (int i = D - 1; i >= 0; i--) {
        /* act = sin(w pre): d pre = d act * w cos(w pre); d w += d act * pre cos(w pre) */
        const real_t *pre = s->pre[i];
        cw = ds == s->ds[0] ? s->ds[1] : s->ds[0];
        filter_sines(NULL, cw, pre, w, T, W); // (T,W)
#pragma omp parallel for schedule(static) if (T * W > 65536)
        for (int64_t b = 0; b < blocks; b++) {
            double *restrict part = s->acc + (1 + b) * W;
            for (int j = 0; j < W; j++)
                part[j] = 0.0;
            const int64_t t1 = (b + 1) * HYENA_ROWS < T ? (b + 1) * HYENA_ROWS : T;
            for (int64_t t = b * HYENA_ROWS; t < t1; t++) {
                for (int j = 0; j < W; j++) {
                    const double a = pre[t * W + j], g = ds[t * W + j], c = cw[t * W + j];
                    part[j] += g * a * c;
                    ds[t * W + j] = (real_t)(g * (double)w[j] * c);
                }
            }
        }
        sum_blocks(s->acc, blocks, W);
        for (int j = 0; j < W; j++)
            dparams[s->sine_w + j] += (real_t)s->acc[j];
        real_t *dprev = i > 0 ? cw : NULL; /* cos is used up: its buffer takes d act[i-1] */
        const real_t *in = i > 0 ? s->act[i - 1] : s->pos;
        linear_backward_assign(dprev, dparams + s->ffn_w[i], dparams + s->ffn_b[i], ds, in,
                               params + s->ffn_w[i], T, i > 0 ? W : s->E, W);
        ds = dprev;
    }
    strand_section_end(STRAND_SECTION_FILTER, t0);
}

/* For tests: the filter h (T,C) at this rank's positions (overwrites the saved filter activations,
 * so call it outside a forward/backward pair). */
int strand_hyena_filter(strand_mixer *mixer, real_t *h, const real_t *params);
int strand_hyena_filter(strand_mixer *mixer, real_t *h, const real_t *params) {
    hyena_state *s = mixer->state;
    if (!s || !s->pos) STRAND_FAIL(STRAND_ERR_INTERNAL, "mixer hyena: filter requested before setup");
    filter_forward(s, h, params, s->T, mixer->C);
    return STRAND_OK;
}

static int hyena_forward(strand_mixer *mixer, real_t *out, const real_t *in, const real_t *params,
                         const strand_shard *shard) {
    hyena_state *s = mixer->state;
    const int C = mixer->C, C3 = 3 * C;
    const int64_t T = shard->T, TC = T * C;
    STRAND_ASSERT(T == s->T);
    double t0 = strand_section_begin();
    linear_forward(s->proj, in, params + s->in_w, params + s->in_b, T, C, C3); // (T,3C)
    strand_section_end(STRAND_SECTION_PROJECTION, t0);
    STRAND_CALL(strand_shortconv_forward(&s->short_conv, shard, s->uc, s->proj, params + s->short_w,
                                         params + s->short_b)); // (T,3C)

    real_t *h = s->work, *z = s->work + TC; // (T,C) each
    filter_forward(s, h, params, T, C);
#pragma omp parallel for schedule(static) if (TC > 65536)
    for (int64_t t = 0; t < T; t++) {
        const real_t *x1 = s->uc + t * C3 + C, *v = x1 + C;
        for (int c = 0; c < C; c++)
            z[t * C + c] = x1[c] * v[c];
    }
    STRAND_CALL(strand_fftconv_forward(s->conv, s->y1, z, h)); // (T,C)
    const real_t *bias = params + s->bias_c;
#pragma omp parallel for schedule(static) if (TC > 65536)
    for (int64_t t = 0; t < T; t++) {
        const real_t *x0 = s->uc + t * C3;
        for (int c = 0; c < C; c++)
            s->gated[t * C + c] = x0[c] * (s->y1[t * C + c] + bias[c] * z[t * C + c]);
    }
    t0 = strand_section_begin();
    linear_forward(out, s->gated, params + s->out_w, params + s->out_b, T, C, C); // (T,C)
    strand_section_end(STRAND_SECTION_PROJECTION, t0);
    return STRAND_OK;
}

/* Every intermediate gradient is assigned by the pass that makes it, so nothing is zeroed first. */
static int hyena_backward(strand_mixer *mixer, real_t *din, real_t *dparams, const real_t *dout,
                          const real_t *in, const real_t *params, const strand_shard *shard) {
    hyena_state *s = mixer->state;
    const int C = mixer->C, C3 = 3 * C;
    const int64_t T = shard->T, TC = T * C;
    STRAND_ASSERT(T == s->T);
    real_t *dg = s->work, *dz = s->work + TC, *dh = s->work + 2 * TC; // (T,C) each
    double t0 = strand_section_begin();
    linear_backward_assign(dg, dparams + s->out_w, dparams + s->out_b, dout, s->gated, params + s->out_w, T,
                           C, C);
    strand_section_end(STRAND_SECTION_PROJECTION, t0);

    /* gated = x0 * g with g = y1 + bias z, z = x1 v. dx0 replaces x0 in uc (x0 is not needed
     * after this loop); dg becomes dL/dg in place. dL/dz = bias dL/dg + the convolution's part,
     * summed in the dx1 dv loop below. */
    const real_t *bias = params + s->bias_c;
    const int64_t blocks = row_blocks(T);
#pragma omp parallel for schedule(static) if (TC > 65536)
    for (int64_t b = 0; b < blocks; b++) {
        double *restrict part = s->acc + (1 + b) * C;
        for (int c = 0; c < C; c++)
            part[c] = 0.0;
        const int64_t t1 = (b + 1) * HYENA_ROWS < T ? (b + 1) * HYENA_ROWS : T;
        for (int64_t t = b * HYENA_ROWS; t < t1; t++) {
            real_t *x0 = s->uc + t * C3;
            const real_t *x1 = x0 + C, *v = x0 + 2 * C;
            for (int c = 0; c < C; c++) {
                const real_t zc = x1[c] * v[c];
                const real_t dgated = dg[t * C + c];
                const real_t d = dgated * x0[c]; // dL/dg
                x0[c] = dgated * (s->y1[t * C + c] + bias[c] * zc);
                dg[t * C + c] = d;
                part[c] += (double)d * (double)zc;
            }
        }
    }
    sum_blocks(s->acc, blocks, C);
    for (int c = 0; c < C; c++)
        dparams[s->bias_c + c] += (real_t)s->acc[c];
    STRAND_CALL(strand_fftconv_backward_assign(s->conv, dz, dh, dg));
    filter_backward(s, dparams, dh, params, T, C);

    /* z = x1 v: dx1 = dz v, dv = dz x1, written over x1 and v. uc is now d(short conv output). */
#pragma omp parallel for schedule(static) if (TC > 65536)
    for (int64_t t = 0; t < T; t++) {
        real_t *x1 = s->uc + t * C3 + C, *v = x1 + C;
        for (int c = 0; c < C; c++) {
            const real_t a = x1[c], b = v[c], d = dz[t * C + c] + bias[c] * dg[t * C + c];
            x1[c] = d * b;
            v[c] = d * a;
        }
    }
    real_t *dproj = s->work; // (T,3C)
    STRAND_CALL(strand_shortconv_backward_assign(&s->short_conv, shard, dproj, dparams + s->short_w,
                                                 dparams + s->short_b, s->uc, s->proj, params + s->short_w));
    t0 = strand_section_begin();
    linear_backward(din, dparams + s->in_w, dparams + s->in_b, dproj, in, params + s->in_w, T, C, C3);
    strand_section_end(STRAND_SECTION_PROJECTION, t0);
    return STRAND_OK;
}

static void hyena_destroy(strand_mixer *mixer) {
    hyena_state *s = mixer->state;
    if (!s) return;
    strand_shortconv_free(&s->short_conv);
    strand_fftconv_free(s->conv); /* its plans; the buffers belong to the model's plan */
    strand_free(s);
    mixer->state = NULL;
}

static int hyena_step_init(const strand_mixer *mixer, const real_t *params, int64_t max_len, void **state);
static int hyena_step(const strand_mixer *mixer, void *state, const real_t *params, const real_t *in,
                      real_t *out, int64_t position);
static void hyena_step_free(void *state);

/* Work of forward + backward (strand plan): the projections, the filter FFN at this rank's
 * positions, the short conv, the long convolution and the gating passes. */
static void hyena_cost(const void *options, const strand_cost_shape *shape, strand_cost *cost) {
    const hyena_options *o = options;
    const double T = (double)shape->T, C = shape->C, TC = T * C, W = o->filter_width;
    const int E = 1 + 2 * o->frequencies;
    strand_cost_linear(cost, T, C, 3 * C);           // in projection
    strand_cost_linear(cost, T, C, C);               // out projection
    strand_cost_linear_no_input_grad(cost, T, E, W); // filter FFN (positions need no gradient)
    for (int i = 1; i < o->filter_depth; i++)
        strand_cost_linear(cost, T, W, W);
    strand_cost_linear(cost, T, W, C);
    /* sin per FFN value forward, cos backward (strand_sincos, vectorised in float builds) */
    strand_cost_exp(cost, 2 * T * W * o->filter_depth);
    strand_cost_short_conv(cost, shape, 3 * C, o->short_kernel);
    strand_cost_long_conv(cost, shape, shape->C);
    /* forward: z = x1 v (3 TC), gating (4 TC), the decay table (3 TC); backward: the gating
     * gradient (7 TC), dx1 dv (7 TC), the decay table (3 TC), the filter's sine gradients */
    strand_cost_stream(cost, 10 * TC + 17 * TC + 4 * T * W * o->filter_depth);
}

const strand_mixer_ops strand_mixer_hyena = {
    .cost = hyena_cost,
    .name = "hyena",
    .forward_cost = "O(L log L C)",
    .step_cost = "O(t C) (filter evaluated once, cached history)",
    .summary = "HyenaDNA order-2 operator: implicit long filter (sine FFN, exponential window) applied by "
               "the distributed FFT long convolution, short conv and gates",
    .options_size = sizeof(hyena_options),
    .keys = hyena_keys,
    .key_count = sizeof hyena_keys / sizeof hyena_keys[0],
    .validate = hyena_validate,
    .capabilities = hyena_capabilities,
    .test_configs = hyena_test_configs,
    .create = hyena_create,
    .plan = hyena_plan,
    .setup = hyena_setup,
    .init_params = hyena_init_params,
    .forward = hyena_forward,
    .backward = hyena_backward,
    .destroy = hyena_destroy,
    .step_init = hyena_step_init,
    .step = hyena_step,
    .step_free = hyena_step_free,
};

/* ---- incremental decoding: a cached long convolution ----
 * step_init evaluates the implicit filter once for lags 0..max_len-1 (the same filter_eval as
 * forward, in chunks of rows). Each step runs the input projection and the short conv on one row
 * (its last K-1 inputs kept), appends z_t = x1_t v_t to the history, and takes the long
 * convolution's output at t directly: y1_t = sum_{s<=t} h_{t-s} z_s. Per token O(t C) for the
 * convolution plus the projections' O(4 C^2); memory 2 max_len C values (filter and history) plus
 * (K-1) 3C. Recomputing the convolution by FFT at every token would cost O(t log t C), more than
 * the direct sum (accumulated in double) at any t; less than O(t C) per token would need an
 * online blocked FFT convolution, which is not done here. */

enum { HYENA_STEP_FILTER_ROWS = 1024 }; /* filter rows evaluated per chunk in step_init */

typedef struct {
    int64_t next, max_len; /* the position the next step must be */
    real_t *h;             /* (max_len,C) filter at lags 0..max_len-1 */
    real_t *z;             /* (max_len,C) x1 v at positions 0..next-1 */
    real_t *rows;          /* (K-1,3C) short conv inputs at next-K+1 .. next-1; zeros before 0 */
    real_t *proj, *uc;     /* (3C) this row's projection and short conv output (x0 | x1 | v) */
    real_t *gated;         /* (C) */
    double *acc;           /* (C) y1_t */
} hyena_step_state;

static void hyena_step_free(void *state) {
    hyena_step_state *st = state;
    if (!st) return;
    real_t *bufs[] = {st->h, st->z, st->rows, st->proj, st->uc, st->gated};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        strand_free(bufs[i]);
    strand_free(st->acc);
    strand_free(st);
}

/* st->h (max_len,C) for lags 0..max_len-1, through filter_eval on chunks of rows. */
static int step_filter(const hyena_state *s, hyena_step_state *st, const real_t *params, int C) {
    const int64_t n = st->max_len < HYENA_STEP_FILTER_ROWS ? st->max_len : HYENA_STEP_FILTER_ROWS;
    real_t *z = NULL, *pre[HYENA_MAX_DEPTH] = {NULL}, *act[HYENA_MAX_DEPTH] = {NULL};
    double *t_pos = NULL;
    real_t *decay = NULL;
    int status = STRAND_OK;
    z = strand_alloc(sizeof(real_t) * (size_t)(n * s->E), "hyena step filter scratch");
    t_pos = strand_alloc(sizeof(double) * (size_t)n, "hyena step filter scratch");
    decay = strand_alloc(sizeof(real_t) * (size_t)(n * C), "hyena step filter scratch");
    int ok = z && t_pos && decay;
    for (int i = 0; i < s->depth && ok; i++) {
        pre[i] = strand_alloc(sizeof(real_t) * (size_t)(n * s->W), "hyena step filter scratch");
        act[i] = strand_alloc(sizeof(real_t) * (size_t)(n * s->W), "hyena step filter scratch");
        ok = pre[i] && act[i];
    }
    if (!ok) {
        status = STRAND_ERR_NOMEM;
    } else {
        for (int64_t l0 = 0; l0 < st->max_len; l0 += n) {
            const int64_t rows = st->max_len - l0 < n ? st->max_len - l0 : n;
            for (int64_t i = 0; i < rows; i++)
                filter_features(s, l0 + i, z + i * s->E, &t_pos[i]);
            filter_window(s, decay, t_pos, rows, C);
            filter_eval(s, st->h + l0 * C, params, z, decay, pre, act, rows, C);
        }
    }
    for (int i = 0; i < s->depth; i++) {
        strand_free(pre[i]);
        strand_free(act[i]);
    }
    strand_free(z);
    strand_free(t_pos);
    strand_free(decay);
    return status;
}

static int hyena_step_init(const strand_mixer *mixer, const real_t *params, int64_t max_len, void **state) {
    const hyena_state *s = mixer->state;
    const int C = mixer->C;
    hyena_step_state *st = strand_alloc(sizeof *st, "hyena step state");
    if (!st) return STRAND_ERR_NOMEM;
    *state = st;
    if (max_len < 1 || max_len > s->max_len)
        STRAND_FAIL(STRAND_ERR_CONFIG,
                    "mixer hyena: %lld positions do not fit the filter's position grid (hyena.max_len = "
                    "%lld)",
                    (long long)max_len, (long long)s->max_len);
    st->max_len = max_len;
    STRAND_ALLOC(st->h, max_len * C, "hyena step filter");
    STRAND_ALLOC(st->z, max_len * C, "hyena step history");
    STRAND_ALLOC(st->rows, (int64_t)(s->K - 1) * 3 * C + 1, "hyena step short conv rows");
    STRAND_ALLOC(st->proj, 3 * (int64_t)C, "hyena step scratch");
    STRAND_ALLOC(st->uc, 3 * (int64_t)C, "hyena step scratch");
    STRAND_ALLOC(st->gated, C, "hyena step scratch");
    STRAND_ALLOC(st->acc, C, "hyena step scratch");
    return step_filter(s, st, params, C);
}

static int hyena_step(const strand_mixer *mixer, void *state, const real_t *params, const real_t *in,
                      real_t *out, int64_t position) {
    const hyena_state *s = mixer->state;
    hyena_step_state *st = state;
    const int C = mixer->C, C3 = 3 * C, K = s->K;
    const int64_t t = position;
    if (t != st->next || t >= st->max_len)
        STRAND_FAIL(STRAND_ERR_INPUT, "hyena step: position %lld, expected %lld (< %lld)", (long long)t,
                    (long long)st->next, (long long)st->max_len);
    linear_forward(st->proj, in, params + s->in_w, params + s->in_b, 1, C, C3); // (1,3C)
    conv1d_causal_forward(st->uc, st->rows, st->proj, params + s->short_w, params + s->short_b, 1, C3,
                          K); // (1,3C)
    if (K > 1) {
        memmove(st->rows, st->rows + C3, sizeof(real_t) * (size_t)(K - 2) * (size_t)C3);
        memcpy(st->rows + (int64_t)(K - 2) * C3, st->proj, sizeof(real_t) * (size_t)C3);
    }
    const real_t *x0 = st->uc, *x1 = st->uc + C, *v = st->uc + 2 * C;
    real_t *z_t = st->z + t * C;
    for (int c = 0; c < C; c++)
        z_t[c] = x1[c] * v[c];
    // y1_t (C) = sum_{s<=t} h_{t-s} z_s
    for (int c = 0; c < C; c++)
        st->acc[c] = 0;
    for (int64_t j = 0; j <= t; j++) {
        const real_t *h = st->h + (t - j) * C, *z = st->z + j * C;
        for (int c = 0; c < C; c++)
            st->acc[c] += (double)h[c] * (double)z[c];
    }
    const real_t *bias = params + s->bias_c;
    for (int c = 0; c < C; c++)
        st->gated[c] = x0[c] * ((real_t)st->acc[c] + bias[c] * z_t[c]);
    linear_forward(out, st->gated, params + s->out_w, params + s->out_b, 1, C, C); // (1,C)
    st->next++;
    return STRAND_OK;
}
