/* Mixer "mamba": the Mamba-1 block (Gu and Dao 2023), its selective scan distributed over the SP
 * ranks by the exchange of scan.h.
 *
 * Shapes: T local rows, C = model.d_model, D = expand C, N = d_state, R = dt_rank (0: ceil(C/16)),
 * K = conv_kernel, E = R + 2N. Row-major (T, .) arrays as everywhere in strand.
 *   xin (T,D) = u W_in[0:D]^T,  z (T,D) = u W_in[D:2D]^T         in_proj.weight (2D,C), no bias
 *   xc (T,D) = conv1d_causal_K(xin) + conv_b                       conv1d.weight (D,K), bias (D);
 *                                                                  strand_shortconv, halo across ranks
 *   x = silu(xc)
 *   xdbl (T,E) = x W_x^T = [dt_raw (R) | B (N) | Cm (N)]           x_proj.weight (E,D), no bias
 *   dt (T,D) = softplus(dt_raw W_dt^T + b_dt)                      dt_proj.weight (D,R), bias (D)
 *   A = -exp(A_log)                                                A_log (D,N), init log(n+1)
 *   per channel d, state n:  a_t = exp(dt_t,d A_d,n),  b_t = dt_t,d x_t,d B_t,n
 *       h_t,d,n = a_t h_t-1,d,n + b_t
 *       y_t,d = sum_n Cm_t,n h_t,d,n + Dskip_d x_t,d                 D (D), init 1
 *   out (T,C) = (y * silu(z)) W_out^T                              out_proj.weight (C,D), no bias
 * Initialisation as the reference Mamba leaves it: x_proj and the conv keep PyTorch's default
 * U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (fan_in D, resp. K); dt_proj.weight ~ U(-R^-1/2, R^-1/2);
 * dt_proj.bias = softplus^-1(dt), dt = exp(U[ln dt_min, ln dt_max]) clamped below at 1e-4;
 * A_log_d,n = log(n+1) (S4D-real); D = 1. in_proj is normal(0, model.init_std) and out_proj
 * normal(0, init_std / sqrt(2 n_layers)) (feeds the residual stream, as recurrent.c's Wo). Weight
 * decay on the four matrices only (not the conv, A_log, D nor the biases: the reference's
 * _no_weight_decay on A_log and D).
 *
 * The scan is fused: a_t, b_t and h are never stored for all (T, D, N) (that is T D N values).
 * Internally the state h, A, the checkpoints and dA are n-major, (N,D): the passes go position by
 * position and their innermost loops run over the channels d, contiguous, so they vectorise with
 * no sum across lanes (except dB and dC); B_t,n and Cm_t,n are scalars there. (An n-innermost
 * loop needs a horizontal sum per (t, d) for y and two for the gradients: measured 2-3 times
 * slower at N = 16.) exp is strand_exp (vectorised in float builds).
 *
 * Forward, per local piece (1 contiguous, 2 in zigzag: local rows are piece 0 then piece 1):
 *   1. run the recurrence from h = 0 over the piece, writing y, and save h (N,D) entering every
 *      chunk of Q = mamba.chunk (32) positions: ck, ceil(T/Q) + pieces checkpoints;
 *      the piece's summary is (A_piece = exp(A_n,d sum_piece dt_t,d), B_piece = its final h), in
 *      double.
 *   2. strand_scan_exchange(FORWARD, summaries, initial = carried h or NULL, entering h_in (N,D)
 *      per piece, window_final = the next window's carried h);
 *   3. fix up each piece with h_in: y_t,d += sum_n Cm_t,n P_t,n,d h_in,n,d and the checkpoints
 *      += P h_in, with P_t = exp(A_n,d S_t,d), S_t,d the cumulative dt within the piece through t.
 *      A piece whose h_in is exactly zero (the window's first without carry) is skipped.
 * Truncation of the fix-ups: every term whose multiplier P is below 2^-60 is dropped (flushed to
 * zero, which also keeps float denormals out), and channel d stops once all of its are:
 * max_n P_t,n,d < 2^-60, i.e. S_t,d min_n exp(A_log_d,n) > 60 ln 2 (dt > 0, so S only grows). The
 * dropped terms are below 2^-60 sum_n |Cm_t,n h_in,n,d| in y_t,d and 2^-60 |h_in,n,d| in a
 * checkpoint. This bounds the ranks' extra work by the memory of the recurrence (about
 * 42 / (dt min|A|) positions per channel: 1.7% of a 2^19-row shard at the default dt range), not by
 * the shard length. The stops are found first, the channels sorted by stop (longest first) and the
 * fix-up run row by row on permuted copies, so the channels still active form a prefix: the work
 * is the sum of the stops, with contiguous loops.
 * Backward, given dy = d loss / d y:
 *   1. per piece, chunks in reverse order: recompute h and a of the chunk from its checkpoint
 *      (Q N D values of scratch, never the piece's), and run the adjoint g_t = a_t+1 g_t+1 +
 *      Cm_t dy_t in reverse from a zero adjoint after the piece, accumulating
 *        dCm_t,n += sum_d dy_t,d h_t,n,d
 *        dx_t,d  += dt_t,d sum_n g B_t,n + Dskip_d dy_t,d             (through b and the skip)
 *        ddt_t,d += x_t,d sum_n g B_t,n + sum_n g a_t h_t-1 A_n,d     (from b and from a)
 *        dB_t,n  += sum_d g dt_t,d x_t,d,   dA_n,d += sum_t g a_t h_t-1 dt_t,d,   dDskip_d += dy x
 *      and dA_log = dA * A. The state passed backward is the pre-multiplied adjoint a_s g_s at the
 *      piece's first position s; the piece's backward summary is (A_piece, the same product as
 *      forward; B = a_s g_s from a zero incoming adjoint).
 *   2. strand_scan_exchange(BACKWARD, ...) gives each piece the adjoint `in` entering it from the
 *      positions after it (zero after the window: no gradient flows past it nor into the carried
 *      state, truncated BPTT).
 *   3. the correction Delta g_t = (prod_{t<u<=e-1} a_u) in, from the piece's last position e-1
 *      backwards, adds its share of dx, ddt, dB and dA (h_t-1 recomputed from the checkpoints),
 *      truncated as the forward fix-up (terms with prod a < 2^-60 dropped, channels stopped).
 * Then ddt goes through softplus (sigmoid = 1 - exp(-dt)), dt_proj, x_proj, silu, the short conv
 * (its halo gradient back across ranks) and in_proj.
 *
 * Carried state (mamba.carry = true): the window's final h, delivered by the exchange to the rank
 * holding position 0, starts the next window's scan; the last K-1 conv inputs xin of the window
 * (gathered by an all-reduce over the SP group and kept by every rank, since a short piece's halo
 * may reach before position 0) are the conv's rows before position 0 of the next window. Each rank
 * counts D N + (K-1) D carried values (h (N,D), then the conv rows (K-1,D)); the h is used only on
 * position 0's rank.
 *
 * Step mode: per token the projections plus O(D N) for the scan (the forward's row kernel),
 * keeping h (N,D) and the last K-1 conv inputs.
 *
 * Memory per local row (values): saved 6D + E (xin, z, xc, x, dt, y, xdbl) + D N / Q
 * (checkpoints); scratch 5D + E; plus O(Q D N) per block of scan scratch. */
#include "core/rng.h"
#include "kernels/fastmath.h"
#include "kernels/layers.h"
#include "kernels/shortconv.h"
#include "parallel/scan.h"
#include "strand/model.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef STRAND_REAL_DOUBLE
#define M_GEMM cblas_dgemm
#else
#define M_GEMM cblas_sgemm
#endif

/* The fix-ups drop every term whose multiplier (a product of a) is below 2^-60, and stop a channel
 * once all of its are: S min_n |A_n| > 60 ln 2. */
#define MAMBA_TINY ((real_t)8.67361737988403547206e-19) /* 2^-60 */
#define MAMBA_CUTOFF (60.0 * 0.693147180559945309417)

typedef struct {
    int d_state, expand, dt_rank;
    double dt_min, dt_max;
    int conv_kernel, carry, chunk;
} mamba_options;

static const strand_config_key mamba_keys[] = {
    {.section = "mamba",
     .name = "d_state",
     .type = STRAND_KEY_INT,
     STRAND_KEY_FIELD(mamba_options, d_state),
     .def = "16",
     .imin = 1,
     .imax = 1024,
     .help = "State size N per channel of the selective scan."},
    {.section = "mamba",
     .name = "expand",
     .type = STRAND_KEY_INT,
     STRAND_KEY_FIELD(mamba_options, expand),
     .def = "2",
     .imin = 1,
     .imax = 16,
     .help = "Inner width D = expand * model.d_model."},
    {.section = "mamba",
     .name = "dt_rank",
     .type = STRAND_KEY_INT,
     STRAND_KEY_FIELD(mamba_options, dt_rank),
     .def = "0",
     .imin = 0,
     .imax = 65536,
     .help = "Rank of the dt projection; 0 = ceil(model.d_model / 16)."},
    {.section = "mamba",
     .name = "dt_min",
     .type = STRAND_KEY_DOUBLE,
     STRAND_KEY_FIELD(mamba_options, dt_min),
     .def = "0.001",
     .dmin = 0,
     .dmax = 100,
     .flags = STRAND_KEY_MIN_OPEN,
     .help = "Smallest initial step dt (dt_proj.bias: dt log-uniform in [dt_min, dt_max])."},
    {.section = "mamba",
     .name = "dt_max",
     .type = STRAND_KEY_DOUBLE,
     STRAND_KEY_FIELD(mamba_options, dt_max),
     .def = "0.1",
     .dmin = 0,
     .dmax = 100,
     .flags = STRAND_KEY_MIN_OPEN,
     .help = "Largest initial step dt."},
    {.section = "mamba",
     .name = "conv_kernel",
     .type = STRAND_KEY_INT,
     STRAND_KEY_FIELD(mamba_options, conv_kernel),
     .def = "4",
     .imin = 2,
     .imax = 8,
     .help = "Kernel width of the causal depthwise conv before the scan."},
    {.section = "mamba",
     .name = "carry",
     .type = STRAND_KEY_BOOL,
     STRAND_KEY_FIELD(mamba_options, carry),
     .def = "false",
     .help = "Carry the scan state and the conv's last inputs of a window into the next (no gradient "
             "across windows)."},
    {.section = "mamba",
     .name = "chunk",
     .type = STRAND_KEY_INT,
     STRAND_KEY_FIELD(mamba_options, chunk),
     .def = "32",
     .imin = 1,
     .imax = 4096,
     .help = "Positions per checkpoint of the scan state; backward recomputes each chunk from its "
             "checkpoint (saved D N / chunk values per row, scratch 2 chunk D N)."},
};

static int mamba_validate(const strand_config *config, const void *options, int used) {
    (void)config, (void)used;
    const mamba_options *o = options;
    if (!(o->dt_min <= o->dt_max))
        STRAND_FAIL(STRAND_ERR_CONFIG, "mamba.dt_min = %g must not exceed mamba.dt_max = %g", o->dt_min,
                    o->dt_max);
    return STRAND_OK;
}

static unsigned mamba_capabilities(const void *options) {
    return STRAND_MIXER_STEP | (((const mamba_options *)options)->carry ? STRAND_MIXER_CARRIES_STATE : 0);
}

static const char *const mamba_test_configs[] = {
    "", "mamba.d_state=4;mamba.expand=1;mamba.carry=true;mamba.chunk=4",
    /* large steps: the fix-ups' truncation acts inside the suite's short window */
    "mamba.d_state=3;mamba.expand=1;mamba.conv_kernel=2;mamba.dt_min=4;mamba.dt_max=8;mamba.chunk=5", NULL};

typedef struct {
    int C, D, N, R, K, E;
    int Q; /* positions per checkpoint (mamba.chunk) */
    int carry;
    double dt_min, dt_max;
    /* parameter offsets, and the indices of those initialised here (counter-based init) */
    int64_t in_w, conv_w, conv_b, xp_w, dt_w, dt_b, a_log, dskip, out_w;
    int i_conv_w, i_conv_b, i_xp_w, i_dt_w, i_dt_b, i_a_log;
    /* this rank's shard */
    int64_t T, window;
    int n_pieces, rank;
    int64_t row0[STRAND_MAX_PIECES], len[STRAND_MAX_PIECES], start[STRAND_MAX_PIECES];
    int64_t ck0[STRAND_MAX_PIECES]; /* first checkpoint of each piece */
    MPI_Comm comm;
    /* saved for backward (shared under recompute) */
    real_t *xin, *z, *xc, *x, *xdbl, *dt, *y; /* (T,D) except xdbl (T,E) */
    real_t *ck;                               /* (ceil(T/Q) + pieces, N, D) */
    double *stot;                             /* (pieces, D) sum of dt over each piece */
    /* scratch (shared) */
    real_t *s1, *s2, *s3, *s4, *s5, *dxdbl; /* (T,D) each, (T,E) */
    real_t *A, *h, *work, *tail;            /* (N,D), (N,D), scan work, (K-1,D) */
    double *amin, *pairs, *enter, *initial, *final, *dacc, *dD;
    /* the fix-ups' permuted copies (N,D), dt sums (D), channel order (D), (stop, channel) (D) */
    real_t *fA, *fh, *fpr, *fh0, *fdA;
    double *fS;
    int *fperm;
    int64_t *fsort;
    /* each block's own */
    real_t *carry_h, *carry_conv; /* (N,D), (K-1,D) */
    strand_shortconv conv;
    strand_scan scan;
} mamba_state;

/* ---- elementwise helpers ---- */

static inline real_t sigmoid_r(real_t v) {
    return (real_t)1 / ((real_t)1 + strand_exp(-v));
}

#ifdef STRAND_REAL_DOUBLE
static inline double softplus_r(double v) {
    return (v > 0.0 ? v : 0.0) + log1p(exp(-fabs(v)));
}
/* softplus'(v) = sigmoid(v) = 1 - exp(-softplus(v)), from dt = softplus(v) */
static inline double softplus_slope(double dt) {
    return -expm1(-dt);
}
#else
/* log(u) for u in [1, 2]: Cephes logf's polynomial after u = m 2^k, m in [sqrt(1/2), sqrt(2)). */
static inline float log_1_2(float u) {
    const float k = u > 1.41421356f ? 1.0f : 0.0f;
    const float x = (u > 1.41421356f ? 0.5f * u : u) - 1.0f;
    const float z = x * x;
    float p = 7.0376836292e-2f;
    p = p * x - 1.1514610310e-1f;
    p = p * x + 1.1676998740e-1f;
    p = p * x - 1.2420140846e-1f;
    p = p * x + 1.4249322787e-1f;
    p = p * x - 1.6668057665e-1f;
    p = p * x + 2.0000714765e-1f;
    p = p * x - 2.4999993993e-1f;
    p = p * x + 3.3333331174e-1f;
    const float y = p * x * z - 2.12194440e-4f * k - 0.5f * z;
    return x + y + 0.693359375f * k;
}
/* max(v, 0) + log1p(exp(-|v|)), branch-free (vectorises); log1p(e) = log(1+e) e / ((1+e)-1). */
static inline float softplus_r(float v) {
    const float e = strand_exp(-fabsf(v));
    const float u = 1.0f + e, d = u - 1.0f;
    const float l = d == 0.0f ? e : log_1_2(u) * (e / d);
    return (v > 0.0f ? v : 0.0f) + l; /* not fmaxf: that one does not vectorise */
}
/* -expm1(-dt): a series below 0.5 (no cancellation), 1 - exp(-dt) above. */
static inline float softplus_slope(float dt) {
    const float x = -dt;
    float s = 1.0f + x * (1.0f / 8);
    s = 1.0f + x * (1.0f / 7) * s;
    s = 1.0f + x * (1.0f / 6) * s;
    s = 1.0f + x * (1.0f / 5) * s;
    s = 1.0f + x * (1.0f / 4) * s;
    s = 1.0f + x * (1.0f / 3) * s;
    s = 1.0f + x * (1.0f / 2) * s;
    return dt < 0.5f ? -x * s : 1.0f - strand_exp(x);
}
#endif

#define MAMBA_INLINE static inline __attribute__((always_inline))

/* Sums over a contiguous index run in MAMBA_LANES lanes (lane j: index i0 + j of each block),
 * added at the end in a fixed tree: MAMBA_BLOCKS(M, BLOCK) calls BLOCK(i0, W) over [0, M) in
 * blocks of 16, then 8, then the rest, so every block is a loop of constant length (when M is a
 * constant, the last one too) that vectorises without reassociating: the order is fixed. */
enum { MAMBA_LANES = 16 };
#define MAMBA_BLOCKS(M, BLOCK)                                                                               \
    do {                                                                                                     \
        int i0_ = 0;                                                                                         \
        for (; i0_ + 16 <= (M); i0_ += 16)                                                                   \
            BLOCK(i0_, 16);                                                                                  \
        if (i0_ + 8 <= (M)) {                                                                                \
            BLOCK(i0_, 8);                                                                                   \
            i0_ += 8;                                                                                        \
        }                                                                                                    \
        if (i0_ < (M)) BLOCK(i0_, (M)-i0_);                                                                  \
    } while (0)

MAMBA_INLINE real_t lanes_total(real_t *acc) {
    for (int j = 0; j < 8; j++)
        acc[j] += acc[j + 8];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* One position over all channels, state h (N,D) (n-major: the loops over d are contiguous):
 *   h_n,d = exp(dt_d A_n,d) h_n,d + dt_d x_d B_n,   y_d = Dskip_d x_d + sum_n Cm_n h_n,d
 * (the sum in n order). bx: D values of scratch. Forward and step mode. */
static void scan_row(const real_t *restrict A, real_t *restrict h, const real_t *restrict dt,
                     const real_t *restrict x, const real_t *restrict B, const real_t *restrict Cm,
                     const real_t *restrict dskip, real_t *restrict y, real_t *restrict bx, int D, int N) {
    for (int d = 0; d < D; d++) {
        bx[d] = dt[d] * x[d];
        y[d] = dskip[d] * x[d];
    }
    for (int n = 0; n < N; n++) {
        const real_t b = B[n], c = Cm[n];
        const real_t *restrict An = A + (int64_t)n * D;
        real_t *restrict hn = h + (int64_t)n * D;
        for (int d = 0; d < D; d++) {
            hn[d] = strand_exp(dt[d] * An[d]) * hn[d] + bx[d] * b;
            y[d] += c * hn[d];
        }
    }
}

/* dt (rows,D) = softplus(xdbl[:, 0:R] W_dt^T + b_dt) */
static void dt_forward(const mamba_state *s, real_t *dt, const real_t *xdbl, const real_t *params,
                       int64_t rows) {
    const int D = s->D;
    if (rows <= 0) return;
    M_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, D, s->R, 1, xdbl, s->E, params + s->dt_w, s->R,
           0, dt, D);
    const real_t *restrict b = params + s->dt_b;
    for (int64_t t = 0; t < rows; t++) {
        real_t *restrict row = dt + t * D;
        for (int d = 0; d < D; d++)
            row[d] = softplus_r(row[d] + b[d]);
    }
}

/* A (N,D) = -exp(A_log) (A_log is (D,N)); amin (D) = min_n |A| */
static void decay_rates(const mamba_state *s, real_t *A, double *amin, const real_t *params) {
    const int D = s->D, N = s->N;
    for (int d = 0; d < D; d++) {
        double m = INFINITY;
        for (int n = 0; n < N; n++) {
            A[(int64_t)n * D + d] = (real_t)-exp((double)params[s->a_log + (int64_t)d * N + n]);
            m = fmin(m, -(double)A[(int64_t)n * D + d]);
        }
        if (amin) amin[d] = m;
    }
}

/* ---- create, plan, setup ---- */

static int mamba_create(strand_mixer *mixer, const strand_config *config, strand_param_table *table,
                        const char *layer) {
    const mamba_options *o = mixer->options;
    STRAND_CALL(mamba_validate(config, o, 1));
    mamba_state *s = strand_alloc(sizeof *s, "mamba mixer");
    if (!s) return STRAND_ERR_NOMEM;
    memset(s, 0, sizeof *s);
    mixer->state = s;
    s->comm = s->scan.comm = s->scan.reversed = MPI_COMM_NULL;
    s->scan.pair = MPI_DATATYPE_NULL;
    s->scan.op = MPI_OP_NULL;
    const int C = mixer->C;
    s->C = C;
    s->D = o->expand * C;
    s->N = o->d_state;
    s->R = o->dt_rank > 0 ? o->dt_rank : (C + 15) / 16;
    s->K = o->conv_kernel;
    s->Q = o->chunk;
    s->E = s->R + 2 * s->N;
    s->carry = o->carry;
    s->dt_min = o->dt_min;
    s->dt_max = o->dt_max;
    const int64_t D = s->D;
    const double std = config->init_std, out_std = strand_model_residual_std(config);
    STRAND_CALL(strand_params_declare_at(table, layer, "in_proj.weight", 2 * D, C, STRAND_INIT_NORMAL, std, 1,
                                         &s->in_w, NULL));
    STRAND_CALL(strand_params_declare_at(table, layer, "conv1d.weight", D, s->K, STRAND_INIT_BY_LAYER, 0, 0,
                                         &s->conv_w, &s->i_conv_w));
    STRAND_CALL(strand_params_declare_at(table, layer, "conv1d.bias", D, 0, STRAND_INIT_BY_LAYER, 0, 0,
                                         &s->conv_b, &s->i_conv_b));
    STRAND_CALL(strand_params_declare_at(table, layer, "x_proj.weight", s->E, D, STRAND_INIT_BY_LAYER, 0, 1,
                                         &s->xp_w, &s->i_xp_w));
    STRAND_CALL(strand_params_declare_at(table, layer, "dt_proj.weight", D, s->R, STRAND_INIT_BY_LAYER, 0, 1,
                                         &s->dt_w, &s->i_dt_w));
    STRAND_CALL(strand_params_declare_at(table, layer, "dt_proj.bias", D, 0, STRAND_INIT_BY_LAYER, 0, 0,
                                         &s->dt_b, &s->i_dt_b));
    STRAND_CALL(strand_params_declare_at(table, layer, "A_log", D, s->N, STRAND_INIT_BY_LAYER, 0, 0,
                                         &s->a_log, &s->i_a_log));
    STRAND_CALL(strand_params_declare_at(table, layer, "D", D, 0, STRAND_INIT_ONES, 0, 0, &s->dskip, NULL));
    STRAND_CALL(strand_params_declare_at(table, layer, "out_proj.weight", C, D, STRAND_INIT_NORMAL, out_std,
                                         1, &s->out_w, NULL));
    return STRAND_OK;
}

static double uniform_pm(uint64_t seed, int param, int64_t j, double bound) {
    return bound * (2.0 * strand_rng_uniform(seed, STRAND_STREAM_INIT, (uint64_t)param, (uint64_t)j) - 1.0);
}

static void mamba_init_params(strand_mixer *mixer, real_t *params, uint64_t seed) {
    const mamba_state *s = mixer->state;
    const int64_t D = s->D, N = s->N, R = s->R, K = s->K;
    const double conv_bound = 1.0 / sqrt((double)K);
    for (int64_t j = 0; j < D * K; j++)
        params[s->conv_w + j] = (real_t)uniform_pm(seed, s->i_conv_w, j, conv_bound);
    for (int64_t j = 0; j < D; j++)
        params[s->conv_b + j] = (real_t)uniform_pm(seed, s->i_conv_b, j, conv_bound);
    for (int64_t j = 0; j < (int64_t)s->E * D; j++)
        params[s->xp_w + j] = (real_t)uniform_pm(seed, s->i_xp_w, j, 1.0 / sqrt((double)D));
    for (int64_t j = 0; j < D * R; j++)
        params[s->dt_w + j] = (real_t)uniform_pm(seed, s->i_dt_w, j, 1.0 / sqrt((double)R));
    const double lo = log(s->dt_min), hi = log(s->dt_max);
    for (int64_t d = 0; d < D; d++) {
        const double u = strand_rng_uniform(seed, STRAND_STREAM_INIT, (uint64_t)s->i_dt_b, (uint64_t)d);
        const double dt = fmax(exp(lo + u * (hi - lo)), 1e-4);
        params[s->dt_b + d] = (real_t)(dt + log(-expm1(-dt))); /* softplus^-1 */
    }
    for (int64_t d = 0; d < D; d++)
        for (int64_t n = 0; n < N; n++)
            params[s->a_log + d * N + n] = (real_t)log((double)(n + 1));
}

static int mamba_plan(strand_mixer *mixer, const strand_shard *shard, strand_plan *plan) {
    mamba_state *s = mixer->state;
    const int64_t T = shard->T, rows = T > 0 ? T : 1, D = s->D, N = s->N, DN = D * N, E = s->E;
    s->T = T;
    s->window = shard->window;
    s->n_pieces = shard->n_pieces;
    s->comm = shard->grid->sp_comm;
    s->rank = shard->grid->sp_rank;
    int64_t row = 0, ck = 0;
    for (int p = 0; p < shard->n_pieces; p++) {
        s->row0[p] = row, s->len[p] = shard->piece_length[p], s->start[p] = shard->piece_start[p];
        s->ck0[p] = ck;
        row += s->len[p];
        ck += (s->len[p] + s->Q - 1) / s->Q;
    }
    const int64_t checkpoints = (T + s->Q - 1) / s->Q + shard->n_pieces;
    const int saved = STRAND_LIFE_SAVED | STRAND_PLAN_SHARED,
              scratch = STRAND_LIFE_SCRATCH | STRAND_PLAN_SHARED;
    STRAND_PLAN_ADD(plan, s->xin, rows * D, saved, "mamba conv input");
    STRAND_PLAN_ADD(plan, s->z, rows * D, saved, "mamba gate input");
    STRAND_PLAN_ADD(plan, s->xc, rows * D, saved, "mamba conv output");
    STRAND_PLAN_ADD(plan, s->x, rows * D, saved, "mamba scan input");
    STRAND_PLAN_ADD(plan, s->xdbl, rows * E, saved, "mamba dt, B, C");
    STRAND_PLAN_ADD(plan, s->dt, rows * D, saved, "mamba dt");
    STRAND_PLAN_ADD(plan, s->y, rows * D, saved, "mamba scan output");
    STRAND_PLAN_ADD(plan, s->ck, checkpoints * DN, saved, "mamba scan checkpoints");
    STRAND_PLAN_ADD(plan, s->stot, STRAND_MAX_PIECES * D, saved, "mamba piece dt sums");
    STRAND_PLAN_ADD(plan, s->s1, rows * D, scratch, "mamba scratch");
    STRAND_PLAN_ADD(plan, s->s2, rows * D, scratch, "mamba scratch");
    STRAND_PLAN_ADD(plan, s->s3, rows * D, scratch, "mamba scratch");
    STRAND_PLAN_ADD(plan, s->s4, rows * D, scratch, "mamba scratch");
    STRAND_PLAN_ADD(plan, s->s5, rows * D, scratch, "mamba scratch");
    STRAND_PLAN_ADD(plan, s->dxdbl, rows * E, scratch, "mamba scratch");
    STRAND_PLAN_ADD(plan, s->A, DN, scratch, "mamba decay rates");
    STRAND_PLAN_ADD(plan, s->amin, D, scratch, "mamba decay rates");
    STRAND_PLAN_ADD(plan, s->h, DN, scratch, "mamba scan state");
    STRAND_PLAN_ADD(plan, s->work, 2 * s->Q * DN + DN + 4 * D, scratch, "mamba scan work");
    STRAND_PLAN_ADD(plan, s->fA, DN, scratch, "mamba fix-up decay rates");
    STRAND_PLAN_ADD(plan, s->fh, DN, scratch, "mamba fix-up entering state");
    STRAND_PLAN_ADD(plan, s->fpr, DN, scratch, "mamba fix-up products");
    STRAND_PLAN_ADD(plan, s->fh0, DN, scratch, "mamba fix-up checkpoint");
    STRAND_PLAN_ADD(plan, s->fdA, DN, scratch, "mamba fix-up A gradient");
    STRAND_PLAN_ADD(plan, s->fS, D, scratch, "mamba fix-up dt sums");
    STRAND_PLAN_ADD(plan, s->fperm, D, scratch, "mamba fix-up channel order");
    STRAND_PLAN_ADD(plan, s->fsort, 2 * D, scratch, "mamba fix-up stops");
    STRAND_PLAN_ADD(plan, s->pairs, STRAND_MAX_PIECES * 2 * DN, scratch, "mamba scan summaries");
    STRAND_PLAN_ADD(plan, s->enter, STRAND_MAX_PIECES * DN, scratch, "mamba entering states");
    STRAND_PLAN_ADD(plan, s->initial, DN, scratch, "mamba carried state (double)");
    STRAND_PLAN_ADD(plan, s->final, DN, scratch, "mamba carried state (double)");
    STRAND_PLAN_ADD(plan, s->dacc, DN, scratch, "mamba A gradient");
    STRAND_PLAN_ADD(plan, s->dD, D, scratch, "mamba D gradient");
    STRAND_PLAN_ADD(plan, s->tail, (s->K - 1) * D + 1, scratch, "mamba conv history");
    STRAND_CALL(strand_scan_plan(&s->scan, shard, DN, 0, STRAND_PLAN_SHARED, plan));
    STRAND_PLAN_ADD(plan, s->carry_h, DN, STRAND_LIFE_PERSISTENT, "mamba carried state");
    STRAND_PLAN_ADD(plan, s->carry_conv, (s->K - 1) * D + 1, STRAND_LIFE_PERSISTENT,
                    "mamba carried conv rows");
    return strand_shortconv_plan(&s->conv, shard, (int)D, s->K, plan);
}

static int mamba_setup(strand_mixer *mixer, const strand_shard *shard) {
    mamba_state *s = mixer->state;
    STRAND_CALL(strand_shortconv_setup(&s->conv, shard));
    return strand_scan_setup(&s->scan);
}

static void mamba_destroy(strand_mixer *mixer) {
    mamba_state *s = mixer->state;
    if (!s) return;
    strand_scan_free(&s->scan);
    strand_shortconv_free(&s->conv); /* its own plan, if any; the buffers belong to the model's plan */
    strand_free(s);
    mixer->state = NULL;
}

/* ---- the scan ----
 * Work buffer (s->work): hc, ac (Q,N,D) the recomputed h and a of one chunk, dA of one chunk
 * (N,D), four D-value rows. */

static real_t *work_drow(const mamba_state *s, int k) {
    const int64_t DN = (int64_t)s->D * s->N;
    return s->work + 2 * s->Q * DN + DN + (int64_t)k * s->D;
}

/* Piece p from h = 0: y, checkpoints, the dt sums and the summary pair (A_piece, B_piece). */
static void scan_piece_forward(mamba_state *s, int p, const real_t *params, double *pair) {
    const int D = s->D, N = s->N, E = s->E, R = s->R;
    const int64_t DN = (int64_t)D * N, r0 = s->row0[p], len = s->len[p];
    real_t *h = s->h, *ck = s->ck + s->ck0[p] * DN, *bx = work_drow(s, 0);
    double *stot = s->stot + (int64_t)p * D;
    memset(h, 0, sizeof(real_t) * (size_t)DN);
    for (int d = 0; d < D; d++)
        stot[d] = 0;
    for (int64_t i = 0; i < len; i++) {
        if (i % s->Q == 0) memcpy(ck + (i / s->Q) * DN, h, sizeof(real_t) * (size_t)DN);
        const int64_t t = r0 + i;
        const real_t *dt = s->dt + t * D, *B = s->xdbl + t * E + R;
        scan_row(s->A, h, dt, s->x + t * D, B, B + N, params + s->dskip, s->y + t * D, bx, D, N);
        for (int d = 0; d < D; d++)
            stot[d] += dt[d];
    }
    for (int n = 0; n < N; n++)
        for (int d = 0; d < D; d++) {
            pair[n * D + d] = exp((double)s->A[n * D + d] * stot[d]);
            pair[DN + n * D + d] = (double)h[n * D + d];
        }
}

static int all_zero(const double *v, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (v[i] != 0) return 0;
    return 1;
}

/* Row t recomputed over channels [d0, d1): a, h (N,D) from prev (N,D). */
static void recompute_range(const mamba_state *s, int64_t t, const real_t *restrict prev, real_t *restrict h,
                            real_t *restrict a, int d0, int d1) {
    const int D = s->D, N = s->N;
    const real_t *restrict dt = s->dt + t * D, *restrict x = s->x + t * D, *B = s->xdbl + t * s->E + s->R;
    for (int n = 0; n < N; n++) {
        const real_t b = B[n];
        const int64_t o = (int64_t)n * D;
        const real_t *restrict An = s->A + o, *restrict pn = prev + o;
        real_t *restrict hn = h + o, *restrict an = a + o;
        for (int d = d0; d < d1; d++) {
            an[d] = strand_exp(dt[d] * An[d]);
            hn[d] = an[d] * pn[d] + dt[d] * x[d] * b;
        }
    }
}

/* State n of row t over channels [d0, d0 + W): g = q + Cm_n dy, q becomes a g; the lanes
 * accC += dy h, accB += g bx (dC_n and dB_n); sgb += g B_n, swa += g a h_{t-1} A (for dx, ddt);
 * dA += g a h_{t-1} dt. */
MAMBA_INLINE void adjoint_block(real_t *restrict q, real_t c, real_t b, const real_t *restrict dy,
                                const real_t *restrict hc, const real_t *restrict hp,
                                const real_t *restrict a, const real_t *restrict A, const real_t *restrict dt,
                                const real_t *restrict bx, real_t *restrict sgb, real_t *restrict swa,
                                real_t *restrict dA, real_t *restrict accC, real_t *restrict accB, int d0,
                                int W) {
    for (int j = 0; j < W; j++) {
        const int d = d0 + j;
        const real_t g = q[d] + c * dy[d];
        accC[j] += dy[d] * hc[d];
        accB[j] += g * bx[d];
        sgb[d] += g * b;
        const real_t w = g * a[d] * hp[d];
        swa[d] += w * A[d];
        dA[d] += w * dt[d];
        q[d] = a[d] * g;
    }
}

/* The adjoint at row t over all channels (h_t, h_{t-1}, a_t (N,D) given), from q (N,D) =
 * a_{t+1} g_{t+1}, which becomes a_t g_t; adds the row's gradients (dA into dA (N,D)). */
static void adjoint_row(mamba_state *s, int64_t t, const real_t *hcur, const real_t *hprev, const real_t *a,
                        real_t *q, real_t *dA, const real_t *dy, real_t *dx, real_t *ddt,
                        const real_t *dskip) {
    const int D = s->D, N = s->N;
    const real_t *restrict dt = s->dt + t * D, *restrict x = s->x + t * D, *restrict dyt = dy + t * D;
    const real_t *B = s->xdbl + t * s->E + s->R, *Cm = B + N;
    real_t *dB = s->dxdbl + t * s->E + s->R, *dC = dB + N;
    real_t *restrict bx = work_drow(s, 0), *restrict sgb = work_drow(s, 1), *restrict swa = work_drow(s, 2);
    for (int d = 0; d < D; d++) {
        bx[d] = dt[d] * x[d];
        sgb[d] = swa[d] = 0;
    }
    for (int n = 0; n < N; n++) {
        const int64_t o = (int64_t)n * D;
        real_t accC[MAMBA_LANES] = {0}, accB[MAMBA_LANES] = {0};
#define ADJOINT_BLOCK(d0, W)                                                                                 \
    adjoint_block(q + o, Cm[n], B[n], dyt, hcur + o, hprev + o, a + o, s->A + o, dt, bx, sgb, swa, dA + o,   \
                  accC, accB, d0, W)
        MAMBA_BLOCKS(D, ADJOINT_BLOCK);
#undef ADJOINT_BLOCK
        dC[n] += lanes_total(accC);
        dB[n] += lanes_total(accB);
    }
    real_t *restrict dxt = dx + t * D, *restrict ddtt = ddt + t * D;
    for (int d = 0; d < D; d++) {
        dxt[d] += dt[d] * sgb[d] + dskip[d] * dyt[d];
        ddtt[d] += x[d] * sgb[d] + swa[d];
        s->dD[d] += (double)dyt[d] * (double)x[d];
    }
}

/* Piece p's local backward from a zero adjoint after it, chunk by chunk in reverse: q (N,D) holds
 * the pre-multiplied adjoint a_{t+1} g_{t+1}; its backward summary into pair. */
static void scan_piece_backward(mamba_state *s, int p, const real_t *params, const real_t *dy, real_t *dx,
                                real_t *ddt, double *pair) {
    const int D = s->D, N = s->N;
    const int64_t DN = (int64_t)D * N, r0 = s->row0[p], len = s->len[p];
    const real_t *ck = s->ck + s->ck0[p] * DN;
    real_t *q = s->h, *hc = s->work, *ac = s->work + s->Q * DN, *dA = s->work + 2 * s->Q * DN;
    memset(q, 0, sizeof(real_t) * (size_t)DN);
    const int64_t chunks = (len + s->Q - 1) / s->Q;
    for (int64_t k = chunks - 1; k >= 0; k--) {
        const int64_t c0 = k * s->Q, m = (c0 + s->Q < len ? c0 + s->Q : len) - c0;
        const real_t *h0 = ck + k * DN;
        for (int64_t i = 0; i < m; i++)
            recompute_range(s, r0 + c0 + i, i > 0 ? hc + (i - 1) * DN : h0, hc + i * DN, ac + i * DN, 0, D);
        memset(dA, 0, sizeof(real_t) * (size_t)DN);
        for (int64_t i = m - 1; i >= 0; i--)
            adjoint_row(s, r0 + c0 + i, hc + i * DN, i > 0 ? hc + (i - 1) * DN : h0, ac + i * DN, q, dA, dy,
                        dx, ddt, params + s->dskip);
        for (int64_t j = 0; j < DN; j++)
            s->dacc[j] += (double)dA[j];
    }
    const double *stot = s->stot + (int64_t)p * D;
    for (int n = 0; n < N; n++)
        for (int d = 0; d < D; d++) {
            pair[n * D + d] = exp((double)s->A[n * D + d] * stot[d]);
            pair[DN + n * D + d] = (double)q[n * D + d];
        }
}

/* ---- the fix-ups ----
 * Every term whose multiplier (P = exp(A S) forward, the product of a after t backward) is below
 * 2^-60 is dropped (flushed to zero: no denormals); a channel stops once all of its are, i.e.
 * once S_t,d min_n |A_n,d| > 60 ln 2, and S only grows. The stops are found first (one pass over
 * dt), the channels sorted by stop, longest first, and the fix-up runs row by row on permuted
 * copies (A, h_in, ...; index k for channel perm[k]), so that the channels still active at a row
 * are a prefix [0, active) of them: the work is the sum of the stops and its loops over k are
 * contiguous; dt, x, y, dx, ddt and the checkpoints are read and written through perm. */

static int compare_stops(const void *a, const void *b) {
    const int64_t *x = a, *y = b; /* (stop, channel): stop descending, then channel */
    if (x[0] != y[0]) return x[0] > y[0] ? -1 : 1;
    return (x[1] > y[1]) - (x[1] < y[1]);
}

/* Stops of piece p's channels, in rows from its first position (forward) or its last (backward):
 * the first row past the truncation; then perm sorted by stop descending, stop[k] for perm[k].
 * Returns the longest stop. */
static int64_t channel_stops(mamba_state *s, int p, int backward) {
    const int D = s->D;
    const int64_t r0 = s->row0[p], len = s->len[p];
    double *restrict S = s->fS;
    const double *restrict amin = s->amin;
    int64_t *restrict stop = s->fsort; /* stop[d] first, then the (stop, channel) pairs */
    for (int d = 0; d < D; d++) {
        S[d] = 0;
        stop[d] = len;
    }
    for (int64_t i = 0; i < len; i++) {
        const real_t *restrict dt = s->dt + (backward ? r0 + len - 1 - i : r0 + i) * D;
        /* forward: row i counts with S through it; backward: with S after it */
        if (backward)
            for (int d = 0; d < D; d++) {
                stop[d] = stop[d] == len && S[d] * amin[d] > MAMBA_CUTOFF ? i : stop[d];
                S[d] += dt[d];
            }
        else
            for (int d = 0; d < D; d++) {
                S[d] += dt[d];
                stop[d] = stop[d] == len && S[d] * amin[d] > MAMBA_CUTOFF ? i : stop[d];
            }
        if (i % 16 == 15) {
            int open = 0;
            for (int d = 0; d < D; d++)
                open |= stop[d] == len;
            if (!open) break;
        }
    }
    for (int d = D - 1; d >= 0; d--) { /* in place: pair d lands at or after d */
        const int64_t v = stop[d];
        stop[2 * d] = v, stop[2 * d + 1] = d;
    }
    qsort(stop, (size_t)D, 2 * sizeof(int64_t), compare_stops);
    for (int k = 0; k < D; k++)
        s->fperm[k] = (int)stop[2 * k + 1];
    return D > 0 ? stop[0] : 0;
}

/* The channels (a prefix of perm) whose stop is past row i; *active only decreases with i. */
static void shrink_active(const mamba_state *s, int64_t i, int *active) {
    while (*active > 0 && s->fsort[2 * (*active - 1)] <= i)
        (*active)--;
}

/* y and the checkpoints of piece p += the contribution of its entering state hin (N,D). */
static void fixup_forward(mamba_state *s, int p, const double *hin) {
    const int D = s->D, N = s->N;
    const int64_t DN = (int64_t)D * N, r0 = s->row0[p], len = s->len[p];
    if (len == 0 || all_zero(hin, DN)) return;
    real_t *ck = s->ck + s->ck0[p] * DN; /* checkpoint 0 is h_in */
    for (int64_t i = 0; i < DN; i++)
        ck[i] = (real_t)hin[i];
    const int64_t rows = channel_stops(s, p, 0);
    const int *perm = s->fperm;
    real_t *restrict Ap = s->fA, *restrict hp = s->fh, *restrict Sr = work_drow(s, 0),
                     *restrict acc = work_drow(s, 1);
    double *S = s->fS;
    for (int n = 0; n < N; n++)
        for (int k = 0; k < D; k++) {
            Ap[(int64_t)n * D + k] = s->A[(int64_t)n * D + perm[k]];
            hp[(int64_t)n * D + k] = ck[(int64_t)n * D + perm[k]];
        }
    for (int k = 0; k < D; k++)
        S[k] = 0;
    int active = D;
    for (int64_t i = 0; i < rows; i++) {
        shrink_active(s, i, &active);
        if (active == 0) break;
        const int64_t t = r0 + i;
        const real_t *dt = s->dt + t * D, *Cm = s->xdbl + t * s->E + s->R + N;
        for (int k = 0; k < active; k++) {
            S[k] += dt[perm[k]];
            Sr[k] = (real_t)S[k];
            acc[k] = 0;
        }
        const int with_ck = (i + 1) % s->Q == 0 && i + 1 < len;
        real_t *ckrow = ck + (with_ck ? (i + 1) / s->Q : 0) * DN;
        for (int n = 0; n < N; n++) {
            const real_t c = Cm[n];
            const real_t *restrict An = Ap + (int64_t)n * D, *restrict hn = hp + (int64_t)n * D;
            for (int k = 0; k < active; k++) {
                const real_t P = strand_exp(An[k] * Sr[k]);
                acc[k] += c * (P >= MAMBA_TINY ? P * hn[k] : 0);
            }
            if (with_ck) /* rarely: recomputed rather than kept */
                for (int k = 0; k < active; k++) {
                    const real_t P = strand_exp(An[k] * Sr[k]);
                    ckrow[(int64_t)n * D + perm[k]] += P >= MAMBA_TINY ? P * hn[k] : 0;
                }
        }
        real_t *y = s->y + t * D;
        for (int k = 0; k < active; k++)
            y[perm[k]] += acc[k];
    }
}

/* State n of one row of the correction over permuted channels [k0, k0 + W): g = pr in, pr
 * becomes pr a (0 below 2^-60); lanes += g bx (dB_n), sgb += g B_n, swa += g a h_{t-1} A,
 * dA += g a h_{t-1} dt. */
MAMBA_INLINE void correction_block(real_t *restrict pr, const real_t *restrict in, const real_t *restrict a,
                                   const real_t *restrict hp, const real_t *restrict A, real_t *restrict dA,
                                   const real_t *restrict dt, const real_t *restrict x, real_t *restrict sgb,
                                   real_t *restrict swa, real_t b, real_t *restrict lanes, int k0, int W) {
    for (int j = 0; j < W; j++) {
        const int k = k0 + j;
        const real_t g = pr[k] * in[k], next = pr[k] * a[k], w = g * a[k] * hp[k];
        lanes[j] += g * dt[k] * x[k];
        sgb[k] += g * b;
        swa[k] += w * A[k];
        dA[k] += w * dt[k];
        pr[k] = next >= MAMBA_TINY ? next : 0;
    }
}

/* Piece p's gradients += those of the adjoint `in` (N,D) entering it from after its end: the
 * correction Delta g_t = (prod_{t<u<=e-1} a_u) in from the last position backwards, h and a
 * recomputed from the checkpoints one chunk at a time for the channels still active. */
static void fixup_backward(mamba_state *s, int p, const double *in, real_t *dx, real_t *ddt) {
    const int D = s->D, N = s->N, E = s->E, R = s->R;
    const int64_t DN = (int64_t)D * N, r0 = s->row0[p], len = s->len[p];
    if (len == 0 || all_zero(in, DN)) return;
    const int64_t rows = channel_stops(s, p, 1);
    const int *perm = s->fperm;
    const real_t *ck = s->ck + s->ck0[p] * DN;
    real_t *restrict Ap = s->fA, *restrict inp = s->fh, *restrict pr = s->fpr, *restrict h0 = s->fh0,
                     *restrict dAp = s->fdA, *hc = s->work, *ac = s->work + s->Q * DN;
    real_t *restrict dtp = work_drow(s, 0), *restrict xp = work_drow(s, 1), *restrict sgb = work_drow(s, 2),
                     *restrict swa = work_drow(s, 3);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < D; k++) {
            const int64_t o = (int64_t)n * D;
            Ap[o + k] = s->A[o + perm[k]];
            inp[o + k] = (real_t)in[o + perm[k]];
            pr[o + k] = 1;
        }
    int active = D;
    /* rows from the end: i = len-1-(local row); chunks in reverse */
    for (int64_t k0 = (len - 1) / s->Q; k0 >= 0; k0--) {
        const int64_t c0 = k0 * s->Q, m = (c0 + s->Q < len ? c0 + s->Q : len) - c0;
        const int64_t first_i = len - 1 - (c0 + m - 1); /* rows from the end of the chunk's last row */
        if (first_i >= rows) break;
        shrink_active(s, first_i, &active);
        if (active == 0) break;
        const int na = active; /* the channels this chunk recomputes */
        for (int n = 0; n < N; n++)
            for (int k = 0; k < na; k++) {
                h0[(int64_t)n * D + k] = ck[k0 * DN + (int64_t)n * D + perm[k]];
                dAp[(int64_t)n * D + k] = 0;
            }
        for (int64_t j = 0; j < m; j++) {
            const int64_t t = r0 + c0 + j;
            const real_t *B = s->xdbl + t * E + R;
            for (int k = 0; k < na; k++) {
                dtp[k] = s->dt[t * D + perm[k]];
                xp[k] = dtp[k] * s->x[t * D + perm[k]]; /* bx */
            }
            const real_t *prev = j > 0 ? hc + (j - 1) * DN : h0;
            for (int n = 0; n < N; n++) {
                const real_t b = B[n];
                const int64_t o = (int64_t)n * D;
                const real_t *restrict An = Ap + o, *restrict pn = prev + o;
                real_t *restrict hn = hc + j * DN + o, *restrict an = ac + j * DN + o;
                for (int k = 0; k < na; k++) {
                    an[k] = strand_exp(dtp[k] * An[k]);
                    hn[k] = an[k] * pn[k] + xp[k] * b;
                }
            }
        }
        for (int64_t j = m - 1; j >= 0; j--) {
            shrink_active(s, len - 1 - (c0 + j), &active);
            if (active == 0) break;
            const int64_t t = r0 + c0 + j;
            const real_t *B = s->xdbl + t * E + R, *hprev = j > 0 ? hc + (j - 1) * DN : h0;
            for (int k = 0; k < active; k++) {
                dtp[k] = s->dt[t * D + perm[k]];
                xp[k] = s->x[t * D + perm[k]];
                sgb[k] = swa[k] = 0;
            }
            real_t *dB = s->dxdbl + t * E + R;
            for (int n = 0; n < N; n++) {
                const real_t b = B[n];
                const int64_t o = (int64_t)n * D;
                const real_t *restrict hn = hprev + o, *restrict an = ac + j * DN + o, *restrict An = Ap + o,
                                       *restrict inn = inp + o;
                real_t *restrict prn = pr + o, *restrict dAn = dAp + o;
                real_t lanes[MAMBA_LANES] = {0};
#define CORRECTION_BLOCK(k0, W)                                                                              \
    correction_block(prn, inn, an, hn, An, dAn, dtp, xp, sgb, swa, b, lanes, k0, W)
                MAMBA_BLOCKS(active, CORRECTION_BLOCK);
#undef CORRECTION_BLOCK
                dB[n] += lanes_total(lanes);
            }
            for (int k = 0; k < active; k++) {
                dx[t * D + perm[k]] += dtp[k] * sgb[k];
                ddt[t * D + perm[k]] += xp[k] * sgb[k] + swa[k];
            }
        }
        for (int n = 0; n < N; n++)
            for (int k = 0; k < na; k++)
                s->dacc[(int64_t)n * D + perm[k]] += (double)dAp[(int64_t)n * D + k];
    }
}

static void piece_pointers(mamba_state *s, double *pairs[], double *enter[]) {
    const int64_t DN = (int64_t)s->D * s->N;
    for (int p = 0; p < STRAND_MAX_PIECES; p++) {
        pairs[p] = s->pairs + (int64_t)p * 2 * DN;
        enter[p] = s->enter + (int64_t)p * DN;
    }
}

/* ---- passes ---- */

/* xc = conv(xin) + b over the pieces, the halo across ranks; with carry, the rows before position 0
 * are the previous window's last conv inputs. */
static int conv_forward(mamba_state *s, const strand_shard *shard, const real_t *params) {
    const int D = s->D, K = s->K;
    const int64_t HC = (int64_t)(K - 1) * D;
    strand_shortconv *cv = &s->conv;
    STRAND_CALL(strand_halo_gather(&cv->halo, shard, cv->rows, s->xin));
    for (int p = 0; p < s->n_pieces; p++) {
        real_t *rows = cv->rows + p * HC;
        if (s->carry)
            for (int j = 0; j < K - 1; j++) {
                const int64_t position = s->start[p] - (K - 1) + j;
                if (position < 0)
                    memcpy(rows + (int64_t)j * D, s->carry_conv + (K - 1 + position) * D,
                           sizeof(real_t) * (size_t)D);
            }
        conv1d_causal_forward(s->xc + s->row0[p] * D, rows, s->xin + s->row0[p] * D, params + s->conv_w,
                              params + s->conv_b, s->len[p], D, K);
    }
    return STRAND_OK;
}

/* The window's last K-1 conv inputs to every rank (the next window's rows before position 0). */
static int carry_conv_rows(mamba_state *s) {
    const int D = s->D, K = s->K;
    const int64_t H = K - 1, first = s->window - H;
    memset(s->tail, 0, sizeof(real_t) * (size_t)(H * D));
    for (int p = 0; p < s->n_pieces; p++)
        for (int64_t i = 0; i < s->len[p]; i++) {
            const int64_t position = s->start[p] + i;
            if (position >= first)
                memcpy(s->tail + (position - first) * D, s->xin + (s->row0[p] + i) * D,
                       sizeof(real_t) * (size_t)D);
        }
    /* a window shorter than K-1: the older rows come from the previous history (position 0's rank) */
    if (s->rank == s->scan.first_owner[STRAND_SCAN_FORWARD])
        for (int64_t j = 0; j < H; j++)
            if (first + j < 0)
                memcpy(s->tail + j * D, s->carry_conv + (H + first + j) * D, sizeof(real_t) * (size_t)D);
    STRAND_CALL_MPI(MPI_Allreduce(s->tail, s->carry_conv, (int)(H * D), STRAND_MPI_REAL, MPI_SUM, s->comm));
    return STRAND_OK;
}

static int mamba_forward(strand_mixer *mixer, real_t *out, const real_t *in, const real_t *params,
                         const strand_shard *shard) {
    mamba_state *s = mixer->state;
    const int C = s->C, D = s->D, N = s->N, E = s->E;
    const int64_t T = s->T, TD = T * D, DN = (int64_t)D * N;
    STRAND_ASSERT(T == shard->T);
    linear_forward(s->xin, in, params + s->in_w, NULL, T, C, D);
    linear_forward(s->z, in, params + s->in_w + (int64_t)D * C, NULL, T, C, D);
    STRAND_CALL(conv_forward(s, shard, params));
    for (int64_t i = 0; i < TD; i++)
        s->x[i] = s->xc[i] * sigmoid_r(s->xc[i]);
    linear_forward(s->xdbl, s->x, params + s->xp_w, NULL, T, D, E);
    dt_forward(s, s->dt, s->xdbl, params, T);
    decay_rates(s, s->A, s->amin, params);

    double *pairs[STRAND_MAX_PIECES], *enter[STRAND_MAX_PIECES];
    piece_pointers(s, pairs, enter);
    const double t0 = strand_now();
    for (int p = 0; p < s->n_pieces; p++)
        scan_piece_forward(s, p, params, pairs[p]);
    const double kernel = strand_now() - t0;
    if (s->carry)
        for (int64_t i = 0; i < DN; i++)
            s->initial[i] = (double)s->carry_h[i];
    STRAND_CALL(strand_scan_exchange(&s->scan, STRAND_SCAN_FORWARD, (const double *const *)pairs,
                                     s->carry ? s->initial : NULL, enter, s->carry ? s->final : NULL));
    const double t1 = strand_now();
    for (int p = 0; p < s->n_pieces; p++)
        fixup_forward(s, p, enter[p]);
    strand_scan_kernel_time_add(kernel + strand_now() - t1);
    if (s->carry) {
        if (s->rank == s->scan.first_owner[STRAND_SCAN_FORWARD])
            for (int64_t i = 0; i < DN; i++)
                s->carry_h[i] = (real_t)s->final[i];
        STRAND_CALL(carry_conv_rows(s));
    }
    // out (T,C) = (y * silu(z)) W_out^T
    for (int64_t i = 0; i < TD; i++)
        s->s1[i] = s->y[i] * s->z[i] * sigmoid_r(s->z[i]);
    linear_forward(out, s->s1, params + s->out_w, NULL, T, D, C);
    return STRAND_OK;
}

static int mamba_backward(strand_mixer *mixer, real_t *din, real_t *dparams, const real_t *dout,
                          const real_t *in, const real_t *params, const strand_shard *shard) {
    mamba_state *s = mixer->state;
    const int C = s->C, D = s->D, N = s->N, E = s->E, R = s->R;
    const int64_t T = s->T, TD = T * D, DN = (int64_t)D * N;
    STRAND_ASSERT(T == shard->T);
    real_t *dg = s->s1, *dy = s->s2, *dz = s->s3, *ddt = s->s4, *dx = s->s5;
    // dg (T,D) = dout W_out; dW_out += dout^T (y * silu(z)), the gate recomputed into dy
    for (int64_t i = 0; i < TD; i++)
        dy[i] = s->y[i] * s->z[i] * sigmoid_r(s->z[i]);
    memset(dg, 0, sizeof(real_t) * (size_t)TD);
    linear_backward(dg, dparams + s->out_w, NULL, dout, dy, params + s->out_w, T, D, C);
    // dy = dg silu(z); dz = dg y silu'(z), silu'(z) = sig (1 + z (1 - sig))
    for (int64_t i = 0; i < TD; i++) {
        const real_t zi = s->z[i], sg = sigmoid_r(zi);
        dy[i] = dg[i] * zi * sg;
        dz[i] = dg[i] * s->y[i] * sg * ((real_t)1 + zi * ((real_t)1 - sg));
    }
    // the scan: dx (through b and the skip), ddt, dB and dC (into dxdbl), dA, dD
    memset(ddt, 0, sizeof(real_t) * (size_t)TD);
    memset(dx, 0, sizeof(real_t) * (size_t)TD);
    memset(s->dxdbl, 0, sizeof(real_t) * (size_t)(T * E));
    memset(s->dacc, 0, sizeof(double) * (size_t)DN);
    memset(s->dD, 0, sizeof(double) * (size_t)D);
    decay_rates(s, s->A, s->amin, params);
    double *pairs[STRAND_MAX_PIECES], *enter[STRAND_MAX_PIECES];
    piece_pointers(s, pairs, enter);
    const double t0 = strand_now();
    for (int p = s->n_pieces - 1; p >= 0; p--)
        scan_piece_backward(s, p, params, dy, dx, ddt, pairs[p]);
    const double kernel = strand_now() - t0;
    STRAND_CALL(strand_scan_exchange(&s->scan, STRAND_SCAN_BACKWARD, (const double *const *)pairs, NULL,
                                     enter, NULL));
    const double t1 = strand_now();
    for (int p = 0; p < s->n_pieces; p++)
        fixup_backward(s, p, enter[p], dx, ddt);
    strand_scan_kernel_time_add(kernel + strand_now() - t1);
    for (int d = 0; d < D; d++) /* dA/dA_log = A; A_log is (D,N), dA (N,D) */
        for (int n = 0; n < N; n++)
            dparams[s->a_log + (int64_t)d * N + n] +=
                (real_t)(s->dacc[(int64_t)n * D + d] * (double)s->A[(int64_t)n * D + d]);
    for (int d = 0; d < D; d++)
        dparams[s->dskip + d] += (real_t)s->dD[d];
    // softplus: d pre = ddt sigmoid(pre); dt_proj: db, dW_dt, d dt_raw (dxdbl[:, 0:R])
    for (int64_t i = 0; i < TD; i++)
        ddt[i] *= softplus_slope(s->dt[i]);
    linear_backward(NULL, NULL, dparams + s->dt_b, ddt, NULL, NULL, T, R, D);
    if (T > 0) {
        M_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, D, R, (int)T, 1, ddt, D, s->xdbl, E, 1,
               dparams + s->dt_w, R);
        M_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, R, D, 1, ddt, D, params + s->dt_w, R, 1,
               s->dxdbl, E);
    }
    // x_proj: dx += dxdbl W_x, dW_x += dxdbl^T x; silu: dxc = dx silu'(xc), in place
    linear_backward(dx, dparams + s->xp_w, NULL, s->dxdbl, s->x, params + s->xp_w, T, D, E);
    for (int64_t i = 0; i < TD; i++) {
        const real_t v = s->xc[i], sg = sigmoid_r(v);
        dx[i] *= sg * ((real_t)1 + v * ((real_t)1 - sg));
    }
    // the short conv (its halo gradient to the ranks before), then in_proj
    real_t *dxin = dy;
    memset(dxin, 0, sizeof(real_t) * (size_t)TD);
    STRAND_CALL(strand_shortconv_backward(&s->conv, shard, dxin, dparams + s->conv_w, dparams + s->conv_b, dx,
                                          s->xin, params + s->conv_w));
    linear_backward(din, dparams + s->in_w, NULL, dxin, in, params + s->in_w, T, C, D);
    linear_backward(din, dparams + s->in_w + (int64_t)D * C, NULL, dz, in, params + s->in_w + (int64_t)D * C,
                    T, C, D);
    return STRAND_OK;
}

/* ---- carried state ---- */

static int64_t mamba_carry_count(const strand_mixer *mixer) {
    const mamba_state *s = mixer->state;
    return s->carry ? (int64_t)s->D * s->N + (int64_t)(s->K - 1) * s->D : 0;
}

static void mamba_carry_save(const strand_mixer *mixer, real_t *out) {
    const mamba_state *s = mixer->state;
    if (!s->carry) return;
    const int64_t DN = (int64_t)s->D * s->N;
    memcpy(out, s->carry_h, sizeof(real_t) * (size_t)DN);
    memcpy(out + DN, s->carry_conv, sizeof(real_t) * (size_t)((s->K - 1) * s->D));
}

static void mamba_carry_load(strand_mixer *mixer, const real_t *in) {
    mamba_state *s = mixer->state;
    if (!s->carry) return;
    const int64_t DN = (int64_t)s->D * s->N;
    memcpy(s->carry_h, in, sizeof(real_t) * (size_t)DN);
    memcpy(s->carry_conv, in + DN, sizeof(real_t) * (size_t)((s->K - 1) * s->D));
}

static void mamba_reset(strand_mixer *mixer) {
    mamba_state *s = mixer->state;
    if (!s || !s->carry || !s->carry_h) return;
    memset(s->carry_h, 0, sizeof(real_t) * (size_t)s->D * (size_t)s->N);
    memset(s->carry_conv, 0, sizeof(real_t) * (size_t)((s->K - 1) * s->D));
}

/* ---- incremental decoding ----
 * The state is h (N,D) and the last K-1 conv inputs: per token the projections (2 C 2D + 2 D E +
 * 2 R D + 2 D C) plus O(D N) for the scan, memory O(D N + K D) whatever the length. */

typedef struct {
    int64_t next, max_len;
    real_t *buf; /* everything below */
    real_t *rows, *h, *A, *xin, *z, *xc, *x, *xdbl, *dt, *g, *bx;
} mamba_step_state;

static void mamba_step_free(void *state) {
    mamba_step_state *st = state;
    if (!st) return;
    strand_free(st->buf);
    strand_free(st);
}

static int mamba_step_init(const strand_mixer *mixer, const real_t *params, int64_t max_len, void **state) {
    const mamba_state *s = mixer->state;
    mamba_step_state *st = strand_alloc(sizeof *st, "mamba step state");
    if (!st) return STRAND_ERR_NOMEM;
    memset(st, 0, sizeof *st);
    *state = st;
    st->max_len = max_len;
    const int64_t D = s->D, DN = D * s->N, H = (int64_t)(s->K - 1) * D;
    const int64_t values = H + 1 + 2 * DN + 7 * D + s->E;
    STRAND_ALLOC(st->buf, values, "mamba step state");
    memset(st->buf, 0, sizeof(real_t) * (size_t)values);
    st->rows = st->buf;
    st->h = st->rows + H + 1;
    st->A = st->h + DN;
    st->xin = st->A + DN;
    st->z = st->xin + D;
    st->xc = st->z + D;
    st->x = st->xc + D;
    st->dt = st->x + D;
    st->g = st->dt + D;
    st->bx = st->g + D;
    st->xdbl = st->bx + D;
    decay_rates(s, st->A, NULL, params);
    return STRAND_OK;
}

static int mamba_step(const strand_mixer *mixer, void *state, const real_t *params, const real_t *in,
                      real_t *out, int64_t position) {
    const mamba_state *s = mixer->state;
    mamba_step_state *st = state;
    const int C = s->C, D = s->D, N = s->N, K = s->K, R = s->R;
    if (position != st->next || position >= st->max_len)
        STRAND_FAIL(STRAND_ERR_INPUT, "mamba step: position %lld, expected %lld (< %lld)",
                    (long long)position, (long long)st->next, (long long)st->max_len);
    linear_forward(st->xin, in, params + s->in_w, NULL, 1, C, D);
    linear_forward(st->z, in, params + s->in_w + (int64_t)D * C, NULL, 1, C, D);
    conv1d_causal_forward(st->xc, st->rows, st->xin, params + s->conv_w, params + s->conv_b, 1, D, K);
    memmove(st->rows, st->rows + D, sizeof(real_t) * (size_t)(K - 2) * (size_t)D);
    memcpy(st->rows + (int64_t)(K - 2) * D, st->xin, sizeof(real_t) * (size_t)D);
    for (int d = 0; d < D; d++)
        st->x[d] = st->xc[d] * sigmoid_r(st->xc[d]);
    linear_forward(st->xdbl, st->x, params + s->xp_w, NULL, 1, D, s->E);
    dt_forward(s, st->dt, st->xdbl, params, 1);
    // the scan row as forward's (y into g), then the gate
    const real_t *B = st->xdbl + R;
    scan_row(st->A, st->h, st->dt, st->x, B, B + N, params + s->dskip, st->g, st->bx, D, N);
    for (int d = 0; d < D; d++)
        st->g[d] *= st->z[d] * sigmoid_r(st->z[d]);
    linear_forward(out, st->g, params + s->out_w, NULL, 1, D, C);
    st->next++;
    return STRAND_OK;
}

/* Forward operations over T rows: the four projections, the conv, and 6 per scan element (dt A,
 * a h + b x B, the C . h sum; the exp not counted). */
static double mamba_flops(const void *options, int C, int64_t T) {
    const mamba_options *o = options;
    const double D = (double)o->expand * C, N = o->d_state, R = o->dt_rank > 0 ? o->dt_rank : (C + 15) / 16;
    const double E = R + 2 * N;
    return (double)T * (2.0 * C * 2 * D + 2.0 * D * E + 2.0 * R * D + 2.0 * D * C + 2.0 * D * o->conv_kernel +
                        6.0 * D * N);
}

const strand_mixer_ops strand_mixer_mamba = {
    .name = "mamba",
    .summary = "Mamba-1 block: selective scan (input-dependent dt, B, C) after a short causal conv, gated; "
               "the scan distributed by the exchange of piece summaries",
    .forward_cost = "O(L D N + L C D) (D = expand C, N = d_state)",
    .step_cost = "O(D N + C D)",
    .flops = mamba_flops,
    .options_size = sizeof(mamba_options),
    .keys = mamba_keys,
    .key_count = sizeof mamba_keys / sizeof mamba_keys[0],
    .validate = mamba_validate,
    .capabilities = mamba_capabilities,
    .test_configs = mamba_test_configs,
    .create = mamba_create,
    .plan = mamba_plan,
    .setup = mamba_setup,
    .init_params = mamba_init_params,
    .forward = mamba_forward,
    .backward = mamba_backward,
    .destroy = mamba_destroy,
    .step_init = mamba_step_init,
    .step = mamba_step,
    .step_free = mamba_step_free,
    .carry_count = mamba_carry_count,
    .carry_save = mamba_carry_save,
    .carry_load = mamba_carry_load,
    .reset = mamba_reset,
};
