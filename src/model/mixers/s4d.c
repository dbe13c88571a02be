/* Mixer "s4d": diagonal state-space layer computed as a distributed long convolution (s4d.mode =
 * conv) or through its recurrence and the distributed linear scan (s4d.mode = scan).
 * Formulas, parameter layout, the kernel's error bound and the scan's truncation are in s4d.h.
 *
 * Backward. With k_l = dL/dK_l (this rank's lags) and, per mode, p_l = Abar^l,
 *   S0 = sum_l k_l p_l,   S1 = sum_l k_l l p_l,
 * the kernel's share of the loss is 2 Re h with h = sum_n C B dt phi1(x) S0(x), holomorphic in
 * C, B, A and dt (x = dt A, phi1(x) = (e^x - 1)/x, phi1 + x phi1' = e^x, d p_l/dx = l p_l):
 *   dh/dC  = B dt phi1 S0            dh/dB = C dt phi1 S0
 *   dh/dA  = C B dt^2 phi1'(x) S0 + W dt S1          (W = C B dt phi1)
 *   dh/ddt = C B e^x S0 + W A S1
 * and for a real parameter r of a complex w: d(2 Re h)/d(Re w) = 2 Re h', d/d(Im w) = -2 Im h'.
 * Chain rules: dA/dlog_a_re = Re A (= -exp(log_a_re)), dA/da_im = i, ddt/dlog_dt = dt.
 *
 * Scan mode (s4d.h). Complex gradients follow the convention g_w = dL/dRe w + i dL/dIm w; for
 * q = a w, g_w = conj(a) g_q and g_a = g_q conj(w). The adjoint lam_t = g of x_t then runs in
 * reverse order,
 *   lam_t = conj(z) lam_{t+1} + 2 dy_t conj(C)            (dy = dL/dy_t, from y = 2 Re C x)
 *   du_t += Re sum_n conj(lam_t,n) Bbar_n,   g_z = sum_t lam_t conj(x_{t-1}),
 *   g_Bbar = sum_t lam_t u_t,   g_C = sum_t 2 dy_t conj(x_t),
 * and to the real parameters through z = e^{dt A}, Bbar = B dt phi1(x): g_B = conj(dt phi1) g_Bbar,
 *   g_A = conj(dt z) g_z + conj(B dt^2 phi1'(x)) g_Bbar,
 *   dL/ddt = Re(conj(g_z) A z + conj(g_Bbar) B e^x),
 * dL/dlog_a_re = Re A Re g_A, dL/da_im = Im g_A, dL/dC_re + i dL/dC_im = g_C.
 * Across ranks the adjoint is the same scan in the other direction: a piece [s, e) acts on the
 * adjoint lam_e entering it from the piece after it as lam_s -> conj(z)^len lam_e + lam_s(0), the
 * summary (conj(z^len), lam_s from lam_e = 0) of scan.h. Backward computes that summary first, in
 * a pass of its own over dy alone (S_t = conj(z) S_{t+1} + dy_t, lam_s(0) = 2 conj(C) S_s: one
 * complex multiply-add per mode and row), exchanges, then runs the one full reverse pass from the
 * true lam_e. The alternative, a fix-up after a pass from zero (Delta lam_t = conj(z)^(e-t) lam_e
 * into du, g_z and g_Bbar), needs the states x_{t-1} again over every row it reaches: a second
 * recomputation from the checkpoints, 18 of the full pass's 22 multiply-adds per mode and row,
 * over every row of a channel whose slowest mode outlives the piece (dt = 1e-3, Re A = -1/2: 83000
 * rows before |z|^j < 2^-60), on every rank but the one holding the window's end. The summary
 * pass costs a fifth of the full pass (measured) on every rank, needs no truncation, and keeps the
 * ranks balanced. The forward keeps the fix-up: its summary needs the same pass as y. */
#include "model/mixers/s4d.h"

#include "kernels/fftconv.h"
#include "kernels/layers.h"
#include "core/rng.h"
#include "parallel/scan.h"

#include <complex.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* LAPACK (OpenBLAS): eigenvalues of a complex Hermitian matrix. Trailing lengths: gfortran ABI. */
void zheev_(const char *jobz, const char *uplo, const int *n, double _Complex *a, const int *lda, double *w,
            double _Complex *work, const int *lwork, double *rwork, int *info, size_t jobz_len,
            size_t uplo_len);

/* Modes are processed in lanes of this many doubles (one AVX-512 vector, two AVX2). */
enum { S4D_LANES = 8 };

/* Scan mode (its section below): lanes and rows of a chunk, the fields of a channel block's
 * workspace, and the workspace bytes of the blocks that go through a chunk together. */
enum { LANES = S4D_LANES, CHUNK = S4D_SCAN_CHUNK };
enum { ZR, ZI, BR, BI, CR, CI, LR, LI, GZR, GZI, GBR, GBI, GCR, GCI, FIELDS };
enum { SCAN_GROUP_BYTES = 256 * 1024, SCAN_GROUP_MAX = SCAN_GROUP_BYTES / ((FIELDS + 2) * LANES * 8) };

typedef struct {
    int state;
    int init; /* enum s4d_init_kind: the index in s4d_init_values */
    double dt_min, dt_max;
    int mode;  /* enum s4d_mode_kind: the index in s4d_mode_values */
    int carry; /* scan mode: carry the state into the next window */
} s4d_options;

static const char *const s4d_init_values[] = {"lin", "inv", "legs", NULL}; /* enum s4d_init_kind */
static const char *const s4d_mode_values[] = {"conv", "scan", NULL};       /* enum s4d_mode_kind */

static const strand_config_key s4d_keys[] = {
    {.section = "s4d",
     .name = "state",
     .type = STRAND_KEY_INT,
     STRAND_KEY_FIELD(s4d_options, state),
     .def = "64",
     .imin = 2,
     .imax = 4096,
     .help = "State size N per channel (N/2 complex modes; even)."},
    {.section = "s4d",
     .name = "init",
     .type = STRAND_KEY_ENUM,
     STRAND_KEY_FIELD(s4d_options, init),
     .def = "lin",
     .values = s4d_init_values,
     .help = "Initialisation of A: S4D-Lin, S4D-Inv, or the HiPPO-LegS normal-part eigenvalues."},
    {.section = "s4d",
     .name = "dt_min",
     .type = STRAND_KEY_DOUBLE,
     STRAND_KEY_FIELD(s4d_options, dt_min),
     .def = "1e-3",
     .dmin = 0,
     .dmax = 1,
     .flags = STRAND_KEY_MIN_OPEN,
     .help = "Smallest initial step size (log-uniform between dt_min and dt_max)."},
    {.section = "s4d",
     .name = "dt_max",
     .type = STRAND_KEY_DOUBLE,
     STRAND_KEY_FIELD(s4d_options, dt_max),
     .def = "1e-1",
     .dmin = 0,
     .dmax = 10,
     .flags = STRAND_KEY_MIN_OPEN,
     .help = "Largest initial step size."},
    {.section = "s4d",
     .name = "mode",
     .type = STRAND_KEY_ENUM,
     STRAND_KEY_FIELD(s4d_options, mode),
     .def = "conv",
     .values = s4d_mode_values,
     .help = "conv: kernel and distributed FFT convolution; scan: the same layer through its recurrence "
             "and the distributed linear scan (same parameters)."},
    {.section = "s4d",
     .name = "carry",
     .type = STRAND_KEY_BOOL,
     STRAND_KEY_FIELD(s4d_options, carry),
     .def = "false",
     .help = "Scan mode: carry the last state of a window into the next (no gradient across windows)."},
};

static int s4d_validate(const strand_config *config, const void *options, int used) {
    (void)config, (void)used;
    const s4d_options *o = options;
    if (o->state % 2 != 0)
        STRAND_FAIL(STRAND_ERR_CONFIG, "s4d.state = %d: must be even (N/2 complex modes per channel)",
                    o->state);
    if (!(o->dt_min <= o->dt_max))
        STRAND_FAIL(STRAND_ERR_CONFIG,
                    "s4d.dt_min = %g must not exceed s4d.dt_max = %g (initial step sizes are drawn "
                    "log-uniformly between them)",
                    o->dt_min, o->dt_max);
    if (o->carry && o->mode != S4D_MODE_SCAN)
        STRAND_FAIL(STRAND_ERR_CONFIG,
                    "s4d.carry = true needs s4d.mode = scan: the FFT convolution keeps no state to carry "
                    "into the next window");
    return STRAND_OK;
}

static unsigned s4d_capabilities(const void *options) {
    const s4d_options *o = options;
    if (o->mode == S4D_MODE_SCAN) return STRAND_MIXER_STEP | (o->carry ? STRAND_MIXER_CARRIES_STATE : 0);
    return STRAND_MIXER_LONG_CONV | STRAND_MIXER_STEP;
}

static const char *const s4d_test_configs[] = {"",
                                               "s4d.state=8;s4d.init=legs",
                                               "fft.strategy=fftw-mpi",
                                               "s4d.mode=scan;s4d.state=8",
                                               "s4d.mode=scan;s4d.carry=true;s4d.state=4",
                                               NULL};

/* Floating-point operations of forward over T rows (scan mode; 0 = not counted, conv mode): per
 * row, channel and mode the state update and output (14), then the output linear (4 C^2 per row). */
static double s4d_flops(const void *options, int C, int64_t T) {
    const s4d_options *o = options;
    if (o->mode != S4D_MODE_SCAN) return 0;
    return (double)T * C * (14.0 * (o->state / 2) + 4.0 * C);
}

typedef struct {
    int C, H, N, init_kind;
    double dt_min, dt_max;
    /* parameter indices (the init's random counter) and offsets */
    int log_dt, log_a_re, a_im, b_re, b_im, c_re, c_im, d, out_weight, out_bias;
    int64_t o_log_dt, o_log_a_re, o_a_im, o_b_re, o_b_im, o_c_re, o_c_im, o_d, o_out_weight, o_out_bias;
    double *a_im_init; /* (H) */
    strand_fftconv_options conv_options;
    char wisdom[1100];
    strand_fftconv *conv;
    int64_t T;
    /* per-channel mode workspace (Hp each): x = dt A, z = e^x, W = C Bbar, the recurrence q,
     * S0, S1 and their per-block parts a0, a1 */
    int Hp; /* H rounded up to S4D_LANES */
    double *xr, *xi, *zr, *zi, *wr, *wi, *qr, *qi, *s0r, *s0i, *s1r, *s1i, *a0r, *a0i, *a1r, *a1i;
    double *zRr, *zRi, *ar, *ai; /* e^{x R} and the current anchor e^{x anchor} */
    int64_t anchor;              /* position of ar/ai, -1 = none */
    /* activations (T,C) unless noted */
    real_t *K, *y, *g, *z /* (T,2C) */, *dK, *dy, *dg, *dz /* (T,2C) */;
    double *ws; /* the 20 mode arrays above, Hp each */
    /* ---- scan mode ---- */
    int mode, carry, scan_planned;
    strand_scan scan;
    int n_pieces, n_blocks; /* local pieces; channel blocks of S4D_LANES */
    int64_t row0[STRAND_MAX_PIECES], len[STRAND_MAX_PIECES], ck0[STRAND_MAX_PIECES]; /* first checkpoint */
    double *ckpt;                   /* (checkpoints, n_blocks, H, 2, S4D_LANES): x before every Q-th row */
    double *pairs, *enter;          /* (n_pieces, 4 C H) summaries, (n_pieces, 2 C H) entering states */
    double *final_state, *carry_in; /* (2 C H): the window's last state; the carried one in double */
    real_t *carry_state;            /* (2 C H) as (C,H) re/im pairs, persistent */
    int group_blocks;               /* channel blocks that go through a chunk of rows together */
    double *bw;   /* (group_blocks, H, 14, S4D_LANES): the blocks' workspaces (scan mode section) */
    double *xs;   /* (group_blocks, H, 2, S4D_LANES): their states */
    double *xbuf; /* (Q + 1, H, 2, S4D_LANES): one chunk's states of a block in backward */
} s4d_state;

/* ---- complex helpers (hot loops use split re/im doubles: no __muldc3 calls) ---- */

/* e^x - 1 without cancellation for small |x|. */
static double complex cexpm1_(double complex x) {
    const double a = creal(x), b = cimag(x), h = sin(0.5 * b);
    return CMPLX(expm1(a) * cos(b) - 2.0 * h * h, exp(a) * sin(b));
}

/* phi1(x) = (e^x - 1)/x and its derivative (x e^x - e^x + 1)/x^2; Taylor series below |x| = 1e-2
 * (first dropped term ~|x|^6/5040 relative), the closed forms above (cancellation ~u/|x|). */
static void phi1(double complex x, double complex *f, double complex *df) {
    if (cabs(x) < 1e-2) {
        *f =
            1 + x * (1.0 / 2 + x * (1.0 / 6 + x * (1.0 / 24 + x * (1.0 / 120 + x * (1.0 / 720 + x / 5040)))));
        *df = 1.0 / 2 + x * (1.0 / 3 + x * (1.0 / 8 + x * (1.0 / 30 + x * (1.0 / 144 + x / 840))));
    } else {
        const double complex em1 = cexpm1_(x);
        *f = em1 / x;
        *df = (x * cexp(x) - em1) / (x * x);
    }
}

/* The discretised mode (c, n). */
typedef struct {
    double complex A, x, z, bd, B, Cc;
    double dt;
} s4d_mode;

static s4d_mode mode_at(const s4d_state *s, const real_t *params, int c, int n) {
    s4d_mode m;
    const int64_t i = (int64_t)c * s->H + n;
    m.dt = exp((double)params[s->o_log_dt + c]);
    m.A = CMPLX(-exp((double)params[s->o_log_a_re + i]), (double)params[s->o_a_im + i]);
    m.B = CMPLX((double)params[s->o_b_re + i], (double)params[s->o_b_im + i]);
    m.Cc = CMPLX((double)params[s->o_c_re + i], (double)params[s->o_c_im + i]);
    m.x = m.dt * m.A;
    m.z = cexp(m.x);
    double complex f, df;
    phi1(m.x, &f, &df);
    m.bd = m.dt * f;
    return m;
}

/* Fill the channel workspace: x, z, W = C B dt phi1(x); padding modes H..Hp-1 stay zero (they
 * contribute exact zeros). */
static void channel_modes(s4d_state *s, const real_t *params, int c) {
    for (int n = 0; n < s->H; n++) {
        const s4d_mode m = mode_at(s, params, c, n);
        const double complex w = m.Cc * m.B * m.bd;
        s->xr[n] = creal(m.x), s->xi[n] = cimag(m.x);
        s->zr[n] = creal(m.z), s->zi[n] = cimag(m.z);
        s->wr[n] = creal(w), s->wi[n] = cimag(w);
        const double complex zR = cexp(m.x * (double)S4D_ANCHOR_EVERY);
        s->zRr[n] = creal(zR), s->zRi[n] = cimag(zR);
    }
    s->anchor = -1; /* no valid anchor for this channel yet */
}

/* p *= z for every mode: independent across modes, so the loop vectorises. */
static inline void step_modes(int Hp, double *restrict pr, double *restrict pi, const double *restrict zr,
                              const double *restrict zi) {
    for (int n = 0; n < Hp; n++) {
        const double t = pr[n] * zr[n] - pi[n] * zi[n];
        pi[n] = pr[n] * zi[n] + pi[n] * zr[n];
        pr[n] = t;
    }
}

/* Anchors e^{x a} at global multiples a of R = S4D_ANCHOR_EVERY, in two levels: exact cexp at
 * multiples of S = R * S4D_ANCHOR_EVERY, then multiplications by e^{x R}. Reaching an anchor
 * always takes the same operations (exact at a / S * S, then (a mod S) / R steps), whether it
 * continues the previous anchor or starts afresh, so kernels stay bit-identical at any SP. */
static void anchor_exact(s4d_state *s, int64_t l) {
    for (int n = 0; n < s->H; n++) {
        const double complex e = cexp(CMPLX(s->xr[n] * (double)l, s->xi[n] * (double)l));
        s->ar[n] = creal(e), s->ai[n] = cimag(e);
    }
}

/* Anchors below 2^-500 become exact zeros. Decayed modes would otherwise step through subnormal
 * numbers, which measured 60x slower; the dropped terms are below 2^-500 * 2 sum_n |W_n|. */
static void anchor_flush(int Hp, double *restrict ar, double *restrict ai) {
    for (int n = 0; n < Hp; n++) {
        const int tiny = fabs(ar[n]) + fabs(ai[n]) < 0x1p-500;
        ar[n] = tiny ? 0.0 : ar[n];
        ai[n] = tiny ? 0.0 : ai[n];
    }
}

static void anchor_move(s4d_state *s, int64_t anchor) {
    enum { R = S4D_ANCHOR_EVERY, S = S4D_ANCHOR_EVERY * S4D_ANCHOR_EVERY };
    int64_t from = anchor / S * S;
    if (s->anchor >= from && s->anchor <= anchor) {
        from = s->anchor; /* continue inside the same super-interval */
    } else {
        anchor_exact(s, from);
        anchor_flush(s->Hp, s->ar, s->ai);
    }
    for (int64_t a = from; a < anchor; a += R) {
        step_modes(s->Hp, s->ar, s->ai, s->zRr, s->zRi);
        anchor_flush(s->Hp, s->ar, s->ai);
    }
    s->anchor = anchor;
}

/* a0 += k p, a1 += kl p, then p *= z, over the modes. A function so that restrict (honoured on
 * parameters) lets the loop vectorise without alias checks. */
static inline void accumulate_step(int Hp, double k, double kl, double *restrict pr, double *restrict pi,
                                   double *restrict a0r, double *restrict a0i, double *restrict a1r,
                                   double *restrict a1i, const double *restrict zr,
                                   const double *restrict zi) {
    for (int n = 0; n < Hp; n++) {
        const double xr = pr[n], xi = pi[n];
        a0r[n] += k * xr;
        a0i[n] += k * xi;
        a1r[n] += kl * xr;
        a1i[n] += kl * xi;
        pr[n] = xr * zr[n] - xi * zi[n];
        pi[n] = xr * zi[n] + xi * zr[n];
    }
}

/* ---- kernel ---- */

void s4d_kernel_forward(strand_mixer *mixer, real_t *K, const real_t *params, int n_pieces,
                        const int64_t *starts, const int64_t *lengths) {
    s4d_state *s = mixer->state;
    STRAND_ASSERT(s->ws); /* conv mode */
    const int C = s->C, Hp = s->Hp;
    enum { R = S4D_ANCHOR_EVERY, V = S4D_LANES };
    double acc[R][V];
    double *qr = s->qr, *qi = s->qi;
    for (int c = 0; c < C; c++) {
        channel_modes(s, params, c);
        int64_t row = 0;
        for (int piece = 0; piece < n_pieces; piece++) {
            const int64_t end = starts[piece] + lengths[piece];
            for (int64_t l = starts[piece]; l < end;) {
                /* Block [l, block_end) inside the anchor interval [anchor, anchor + R). */
                const int64_t anchor = l / R * R;
                const int64_t block_end = anchor + R < end ? anchor + R : end;
                const int cnt = (int)(block_end - l), skip = (int)(l - anchor);
                /* q = W e^{x anchor}, stepped to l: the same operations as the whole-window
                 * kernel makes, so the rows are bit-identical at any SP. */
                anchor_move(s, anchor);
                for (int n = 0; n < Hp; n++) {
                    qr[n] = s->wr[n] * s->ar[n] - s->wi[n] * s->ai[n];
                    qi[n] = s->wr[n] * s->ai[n] + s->wi[n] * s->ar[n];
                }
                for (int j = 0; j < skip; j++)
                    step_modes(Hp, qr, qi, s->zr, s->zi);
                /* V partial sums per row (lanes of modes) keep the mode loop free of a serial
                 * reduction, so it vectorises without reassociation flags. */
                memset(acc, 0, sizeof(double) * V * (size_t)cnt);
                for (int j = 0; j < cnt; j++) {
                    for (int n0 = 0; n0 < Hp; n0 += V)
                        for (int v = 0; v < V; v++)
                            acc[j][v] += qr[n0 + v];
                    step_modes(Hp, qr, qi, s->zr, s->zi);
                }
                for (int j = 0; j < cnt; j++) {
                    double sum = 0;
                    for (int v = 0; v < V; v++)
                        sum += acc[j][v];
                    K[(row + j) * C + c] = (real_t)(2.0 * sum);
                }
                row += cnt;
                l = block_end;
            }
        }
    }
}

void s4d_kernel_backward(strand_mixer *mixer, real_t *dparams, const real_t *dK, const real_t *params,
                         int n_pieces, const int64_t *starts, const int64_t *lengths) {
    s4d_state *s = mixer->state;
    STRAND_ASSERT(s->ws); /* conv mode */
    const int C = s->C, H = s->H, Hp = s->Hp;
    enum { R = S4D_ANCHOR_EVERY };
    double *pr = s->qr, *pi = s->qi;
    double *a0r = s->a0r, *a0i = s->a0i, *a1r = s->a1r, *a1i = s->a1i;
    const double *zr = s->zr, *zi = s->zi;
    for (int c = 0; c < C; c++) {
        channel_modes(s, params, c);
        for (int n = 0; n < Hp; n++)
            s->s0r[n] = s->s0i[n] = s->s1r[n] = s->s1i[n] = 0;
        int64_t row = 0;
        for (int piece = 0; piece < n_pieces; piece++) {
            const int64_t end = starts[piece] + lengths[piece];
            for (int64_t l = starts[piece]; l < end;) {
                /* The forward's blocks and anchors. */
                const int64_t anchor = l / R * R;
                const int64_t block_end = anchor + R < end ? anchor + R : end;
                const int cnt = (int)(block_end - l), skip = (int)(l - anchor);
                anchor_move(s, anchor);
                memcpy(pr, s->ar, sizeof(double) * (size_t)Hp);
                memcpy(pi, s->ai, sizeof(double) * (size_t)Hp);
                for (int j = 0; j < skip; j++)
                    step_modes(Hp, pr, pi, zr, zi);
                /* Per-block sums, added to S0/S1 after: shorter rounding chains. */
                for (int n = 0; n < Hp; n++)
                    a0r[n] = a0i[n] = a1r[n] = a1i[n] = 0;
                for (int j = 0; j < cnt; j++) {
                    const double k = (double)dK[(row + j) * C + c];
                    accumulate_step(Hp, k, k * (double)(l + j), pr, pi, a0r, a0i, a1r, a1i, zr, zi);
                }
                for (int n = 0; n < Hp; n++) {
                    s->s0r[n] += a0r[n], s->s0i[n] += a0i[n];
                    s->s1r[n] += a1r[n], s->s1i[n] += a1i[n];
                }
                row += cnt;
                l = block_end;
            }
        }
        double dlog_dt = 0;
        for (int n = 0; n < H; n++) {
            const s4d_mode m = mode_at(s, params, c, n);
            double complex f, df;
            phi1(m.x, &f, &df);
            const double complex S0 = CMPLX(s->s0r[n], s->s0i[n]), S1 = CMPLX(s->s1r[n], s->s1i[n]);
            const double complex W = m.Cc * m.B * m.bd;
            const double complex gC = m.B * m.bd * S0, gB = m.Cc * m.bd * S0;
            const double complex gA = m.Cc * m.B * m.dt * m.dt * df * S0 + W * m.dt * S1;
            const double complex gdt = m.Cc * m.B * m.z * S0 + W * m.A * S1;
            const int64_t i = (int64_t)c * H + n;
            dparams[s->o_c_re + i] += (real_t)(2 * creal(gC));
            dparams[s->o_c_im + i] += (real_t)(-2 * cimag(gC));
            dparams[s->o_b_re + i] += (real_t)(2 * creal(gB));
            dparams[s->o_b_im + i] += (real_t)(-2 * cimag(gB));
            dparams[s->o_log_a_re + i] += (real_t)(2 * creal(m.A) * creal(gA));
            dparams[s->o_a_im + i] += (real_t)(-2 * cimag(gA));
            dlog_dt += 2 * m.dt * creal(gdt);
        }
        dparams[s->o_log_dt + c] += (real_t)dlog_dt;
    }
}

/* ---- initialisation ---- */

/* Eigenvalues of the normal part of HiPPO-LegS: A + P P^T = -1/2 I + S with
 * S_nk = -1/2 sqrt((2n+1)(2k+1)) sign(n-k). -iS is Hermitian; its eigenvalues come in +-w pairs
 * (S is real skew-symmetric) and the top N/2, ascending, are the imaginary parts we keep. */
static int legs_eigenvalues(int N, double *a_im) {
    const int H = N / 2, lda = N;
    double complex *a = strand_alloc(sizeof *a * (size_t)N * (size_t)N, "s4d legs matrix");
    double *w = strand_alloc(sizeof *w * (size_t)N, "s4d legs eigenvalues");
    double *rwork = strand_alloc(sizeof *rwork * (size_t)(3 * N), "s4d legs workspace");
    double complex *work = NULL;
    int status = STRAND_OK;
    if (!a || !w || !rwork) {
        status = STRAND_ERR_NOMEM;
        goto done;
    }
    for (int k = 0; k < N; k++)
        for (int n = 0; n < N; n++) {
            const double snk = n == k ? 0.0 : -0.5 * sqrt((2.0 * n + 1) * (2.0 * k + 1)) * (n > k ? 1 : -1);
            a[n + (size_t)k * N] = CMPLX(0.0, -snk); /* column-major -i S */
        }
    int lwork = -1, info = 0;
    double complex query;
    zheev_("N", "U", &N, a, &lda, w, &query, &lwork, rwork, &info, 1, 1);
    lwork = info == 0 ? (int)creal(query) : 2 * N;
    if (lwork < 2 * N) lwork = 2 * N;
    work = strand_alloc(sizeof *work * (size_t)lwork, "s4d legs workspace");
    if (!work) {
        status = STRAND_ERR_NOMEM;
        goto done;
    }
    zheev_("N", "U", &N, a, &lda, w, work, &lwork, rwork, &info, 1, 1);
    if (info != 0) {
        status = strand_error_set(STRAND_ERR_NUMERIC, __FILE__, __LINE__,
                                  "s4d legs init: LAPACK zheev failed (info %d) for N = %d", info, N);
        goto done;
    }
    for (int n = 0; n < H; n++)
        a_im[n] = w[H + n]; /* ascending: the positive half */
done:
    strand_free(a);
    strand_free(w);
    strand_free(rwork);
    strand_free(work);
    return status;
}

int s4d_init_a_imag(int kind, int N, double *a_im) {
    if (N < 2 || N % 2 != 0) STRAND_FAIL(STRAND_ERR_CONFIG, "s4d.state = %d must be even and >= 2", N);
    const int H = N / 2;
    const double pi = 3.14159265358979323846;
    switch (kind) {
    case S4D_INIT_LIN:
        for (int n = 0; n < H; n++)
            a_im[n] = pi * n;
        return STRAND_OK;
    case S4D_INIT_INV:
        for (int n = 0; n < H; n++)
            a_im[n] = (N / pi) * ((double)N / (2.0 * n + 1) - 1);
        return STRAND_OK;
    case S4D_INIT_LEGS:
        return legs_eigenvalues(N, a_im);
    default:
        STRAND_FAIL(STRAND_ERR_CONFIG, "s4d.init: unknown kind %d", kind);
    }
}

/* The LegS eigenvalues need an O(N^3) solve: computed once and shared by every layer (all layers
 * have the same s4d.state). Freed when the last s4d mixer goes. */
static struct {
    double *a_im;
    int N, users;
} legs_cache;

static int legs_cached(int N, double *a_im) {
    if (legs_cache.a_im && legs_cache.N != N) {
        strand_free(legs_cache.a_im);
        legs_cache.a_im = NULL;
    }
    if (!legs_cache.a_im) {
        double *values = strand_alloc(sizeof *values * (size_t)(N / 2), "s4d legs cache");
        if (!values) return STRAND_ERR_NOMEM;
        int status = legs_eigenvalues(N, values);
        if (status != STRAND_OK) {
            strand_free(values);
            return status;
        }
        legs_cache.a_im = values;
        legs_cache.N = N;
    }
    memcpy(a_im, legs_cache.a_im, sizeof *a_im * (size_t)(N / 2));
    return STRAND_OK;
}

/* ---- mixer interface ---- */

static int s4d_create(strand_mixer *mixer, const strand_config *config, strand_param_table *table,
                      const char *layer) {
    const s4d_options *o = mixer->options;
    STRAND_CALL(s4d_validate(config, o, 1)); /* also when built from a hand-made configuration */
    const int kind = o->init;
    s4d_state *s = strand_alloc(sizeof *s, "s4d mixer");
    if (!s) return STRAND_ERR_NOMEM;
    mixer->state = s;
    s->C = mixer->C;
    s->N = o->state;
    s->H = s->N / 2;
    s->init_kind = kind;
    s->dt_min = o->dt_min;
    s->dt_max = o->dt_max;
    s->mode = o->mode;
    s->carry = o->carry;
    const int C = s->C, H = s->H;

    if (s->mode == S4D_MODE_CONV)
        strand_fftconv_options_from_config(config, &s->conv_options, s->wisdom, sizeof s->wisdom);

    STRAND_ALLOC(s->a_im_init, H, "s4d init");
    if (kind == S4D_INIT_LEGS) {
        legs_cache.users++; /* counted before the solve so destroy balances it on failure too */
        STRAND_CALL(legs_cached(s->N, s->a_im_init));
    } else {
        STRAND_CALL(s4d_init_a_imag(kind, s->N, s->a_im_init));
    }

    STRAND_CALL(strand_params_declare(table, layer, "log_dt", C, 0, STRAND_INIT_BY_LAYER, 0, 0, &s->log_dt));
    STRAND_CALL(
        strand_params_declare(table, layer, "log_a_re", C, H, STRAND_INIT_BY_LAYER, 0, 0, &s->log_a_re));
    STRAND_CALL(strand_params_declare(table, layer, "a_im", C, H, STRAND_INIT_BY_LAYER, 0, 0, &s->a_im));
    STRAND_CALL(strand_params_declare(table, layer, "B_re", C, H, STRAND_INIT_BY_LAYER, 0, 0, &s->b_re));
    STRAND_CALL(strand_params_declare(table, layer, "B_im", C, H, STRAND_INIT_BY_LAYER, 0, 0, &s->b_im));
    STRAND_CALL(strand_params_declare(table, layer, "C_re", C, H, STRAND_INIT_BY_LAYER, 0, 0, &s->c_re));
    STRAND_CALL(strand_params_declare(table, layer, "C_im", C, H, STRAND_INIT_BY_LAYER, 0, 0, &s->c_im));
    STRAND_CALL(strand_params_declare(table, layer, "D", C, 0, STRAND_INIT_BY_LAYER, 0, 0, &s->d));
    char out_layer[64];
    snprintf(out_layer, sizeof out_layer, "%s.out", layer);
    STRAND_CALL(strand_params_declare(table, out_layer, "weight", 2 * (int64_t)C, C, STRAND_INIT_NORMAL,
                                      config->init_std, 1, &s->out_weight));
    STRAND_CALL(strand_params_declare(table, out_layer, "bias", 2 * (int64_t)C, 0, STRAND_INIT_ZEROS, 0, 0,
                                      &s->out_bias));
    s->o_log_dt = table->items[s->log_dt].offset;
    s->o_log_a_re = table->items[s->log_a_re].offset;
    s->o_a_im = table->items[s->a_im].offset;
    s->o_b_re = table->items[s->b_re].offset;
    s->o_b_im = table->items[s->b_im].offset;
    s->o_c_re = table->items[s->c_re].offset;
    s->o_c_im = table->items[s->c_im].offset;
    s->o_d = table->items[s->d].offset;
    s->o_out_weight = table->items[s->out_weight].offset;
    s->o_out_bias = table->items[s->out_bias].offset;

    s->Hp = (H + S4D_LANES - 1) / S4D_LANES * S4D_LANES;
    if (s->mode == S4D_MODE_SCAN) return STRAND_OK; /* no kernel: its workspace is not made */
    /* The kernel generator's mode workspace: twenty arrays of Hp modes in one block (zeroed:
     * padding modes stay 0). Made here, not in the plan: the kernel works without a shard (its
     * tests call it directly), and it is 160 Hp bytes whatever the window. */
    STRAND_ALLOC(s->ws, 20 * (int64_t)s->Hp, "s4d mode workspace");
    double **arrays[] = {&s->xr,  &s->xi,  &s->zr,  &s->zi,  &s->wr,  &s->wi,  &s->qr,
                         &s->qi,  &s->s0r, &s->s0i, &s->s1r, &s->s1i, &s->a0r, &s->a0i,
                         &s->a1r, &s->a1i, &s->zRr, &s->zRi, &s->ar,  &s->ai};
    for (int i = 0; i < 20; i++)
        *arrays[i] = s->ws + (int64_t)i * s->Hp;
    return STRAND_OK;
}

/* Scan mode: the activations both modes save, the checkpoints (saved) and the exchange's and
 * the channel block's workspaces (scratch), all shared under train.recompute = block; the carried
 * state is each block's own. No kernel and no FFT plan. */
static int s4d_plan_scan(s4d_state *s, const strand_shard *shard, strand_plan *plan) {
    const int C = s->C, H = s->H;
    const int64_t T = shard->T, TC = T * C, W = (int64_t)C * H, HV = (int64_t)H * S4D_LANES;
    const int saved = STRAND_LIFE_SAVED | STRAND_PLAN_SHARED,
              scratch = STRAND_LIFE_SCRATCH | STRAND_PLAN_SHARED;
    s->n_pieces = shard->n_pieces;
    s->n_blocks = (C + S4D_LANES - 1) / S4D_LANES;
    int64_t row = 0, checkpoints = 0;
    for (int p = 0; p < shard->n_pieces; p++) {
        s->row0[p] = row, s->len[p] = shard->piece_length[p], s->ck0[p] = checkpoints;
        row += s->len[p];
        checkpoints += (s->len[p] + S4D_SCAN_CHUNK - 1) / S4D_SCAN_CHUNK;
    }
    STRAND_ASSERT(row == T);
    STRAND_CALL(strand_scan_plan(&s->scan, shard, W, 1, STRAND_PLAN_SHARED, plan));
    s->scan_planned = 1;
    STRAND_PLAN_ADD(plan, s->y, TC, saved, "s4d activations");
    STRAND_PLAN_ADD(plan, s->g, TC, saved, "s4d activations");
    STRAND_PLAN_ADD(plan, s->z, 2 * TC, saved, "s4d activations");
    STRAND_PLAN_ADD(plan, s->ckpt, checkpoints * s->n_blocks * 2 * HV, saved, "s4d state checkpoints");
    STRAND_PLAN_ADD(plan, s->dy, TC, scratch, "s4d gradient scratch");
    STRAND_PLAN_ADD(plan, s->dg, TC, scratch, "s4d gradient scratch");
    STRAND_PLAN_ADD(plan, s->dz, 2 * TC, scratch, "s4d gradient scratch");
    STRAND_PLAN_ADD(plan, s->pairs, STRAND_MAX_PIECES * 4 * W, scratch, "s4d scan summaries");
    STRAND_PLAN_ADD(plan, s->enter, STRAND_MAX_PIECES * 2 * W, scratch, "s4d scan summaries");
    STRAND_PLAN_ADD(plan, s->final_state, 2 * W, scratch, "s4d scan summaries");
    STRAND_PLAN_ADD(plan, s->carry_in, 2 * W, scratch, "s4d scan summaries");
    /* as many blocks as fit SCAN_GROUP_BYTES of workspace and state (one at least) */
    const int64_t block_bytes = (int64_t)sizeof(double) * (FIELDS + 2) * HV;
    s->group_blocks = (int)(SCAN_GROUP_BYTES / block_bytes < 1 ? 1 : SCAN_GROUP_BYTES / block_bytes);
    if (s->group_blocks > s->n_blocks) s->group_blocks = s->n_blocks;
    STRAND_ASSERT(s->group_blocks <= SCAN_GROUP_MAX);
    STRAND_PLAN_ADD(plan, s->bw, s->group_blocks * FIELDS * HV, scratch, "s4d scan workspace");
    STRAND_PLAN_ADD(plan, s->xs, s->group_blocks * 2 * HV, scratch, "s4d scan workspace");
    STRAND_PLAN_ADD(plan, s->xbuf, (S4D_SCAN_CHUNK + 1) * 2 * HV, scratch, "s4d scan workspace");
    if (s->carry) STRAND_PLAN_ADD(plan, s->carry_state, 2 * W, STRAND_LIFE_PERSISTENT, "s4d carried state");
    return STRAND_OK;
}

/* The kernel, activations, scratch and the long convolution's buffers are refilled by every
 * forward: shared by every s4d block under train.recompute = block. */
static int s4d_plan(strand_mixer *mixer, const strand_shard *shard, strand_plan *plan) {
    s4d_state *s = mixer->state;
    const int64_t T = shard->T, TC = shard->T * s->C;
    s->T = T;
    const int saved = STRAND_LIFE_SAVED | STRAND_PLAN_SHARED,
              scratch = STRAND_LIFE_SCRATCH | STRAND_PLAN_SHARED;
    if (s->mode == S4D_MODE_SCAN) return s4d_plan_scan(s, shard, plan);
    /* First: the long convolution's plan is collective, and nothing before it may fail alone. */
    STRAND_CALL(strand_fftconv_plan(&s->conv, shard, s->C, &s->conv_options, scratch, plan));
    STRAND_PLAN_ADD(plan, s->K, TC, saved, "s4d kernel");
    STRAND_PLAN_ADD(plan, s->y, TC, saved, "s4d activations");
    STRAND_PLAN_ADD(plan, s->g, TC, saved, "s4d activations");
    STRAND_PLAN_ADD(plan, s->z, 2 * TC, saved, "s4d activations");
    STRAND_PLAN_ADD(plan, s->dK, TC, scratch, "s4d gradient scratch");
    STRAND_PLAN_ADD(plan, s->dy, TC, scratch, "s4d gradient scratch");
    STRAND_PLAN_ADD(plan, s->dg, TC, scratch, "s4d gradient scratch");
    STRAND_PLAN_ADD(plan, s->dz, 2 * TC, scratch, "s4d gradient scratch");
    return STRAND_OK;
}

static int s4d_setup(strand_mixer *mixer, const strand_shard *shard) {
    s4d_state *s = mixer->state;
    if (s->mode == S4D_MODE_CONV) return strand_fftconv_setup(s->conv, shard);
    return strand_scan_setup(&s->scan);
}

static void s4d_init_params(strand_mixer *mixer, real_t *params, uint64_t seed) {
    const s4d_state *s = mixer->state;
    const int C = s->C, H = s->H;
    const double lo = log(s->dt_min), hi = log(s->dt_max), c_std = sqrt(0.5);
    for (int c = 0; c < C; c++) {
        /* log dt ~ U[ln dt_min, ln dt_max]; counters (parameter index, element) as in the table. */
        params[s->o_log_dt + c] =
            (real_t)(lo + (hi - lo) * strand_rng_uniform(seed, STRAND_STREAM_INIT, (uint64_t)s->log_dt, c));
        params[s->o_d + c] = (real_t)strand_rng_normal(seed, STRAND_STREAM_INIT, (uint64_t)s->d, c);
        for (int n = 0; n < H; n++) {
            const int64_t i = (int64_t)c * H + n;
            params[s->o_log_a_re + i] = (real_t)log(0.5); /* Re A = -1/2 for every init */
            params[s->o_a_im + i] = (real_t)s->a_im_init[n];
            params[s->o_b_re + i] = 1;
            params[s->o_b_im + i] = 0;
            /* C ~ complex normal with variance 1/2 per part, as S4D. */
            params[s->o_c_re + i] =
                (real_t)(c_std * strand_rng_normal(seed, STRAND_STREAM_INIT, (uint64_t)s->c_re, (uint64_t)i));
            params[s->o_c_im + i] =
                (real_t)(c_std * strand_rng_normal(seed, STRAND_STREAM_INIT, (uint64_t)s->c_im, (uint64_t)i));
        }
    }
}

#ifdef STRAND_REAL_DOUBLE
#define S4D_EXP exp
#else
#define S4D_EXP expf
#endif

/* out (T,C) = a * sigmoid(b) with [a | b] = z (T,2C) per row. exp overflow gives 0, not NaN. */
static void glu_forward(real_t *out, const real_t *z, int64_t T, int C) {
    for (int64_t t = 0; t < T; t++) {
        const real_t *a = z + t * 2 * C, *b = a + C;
        for (int c = 0; c < C; c++)
            out[t * C + c] = a[c] / (1 + S4D_EXP(-b[c]));
    }
}

/* dz (T,2C) = d/dz of GLU given dout (T,C) (overwrites). */
static void glu_backward(real_t *dz, const real_t *dout, const real_t *z, int64_t T, int C) {
    for (int64_t t = 0; t < T; t++) {
        const real_t *a = z + t * 2 * C, *b = a + C;
        real_t *da = dz + t * 2 * C, *db = da + C;
        for (int c = 0; c < C; c++) {
            const real_t sig = 1 / (1 + S4D_EXP(-b[c])), d = dout[t * C + c];
            da[c] = d * sig;
            db[c] = d * a[c] * sig * (1 - sig);
        }
    }
}

/* ---- scan mode (s4d.h; backward derived at the top of this file) ----
 * Channels go in blocks of S4D_LANES lanes (the last block padded with modes that are exact zeros:
 * z = Bbar = C = 0), so the innermost loops run over the lanes of one mode: a row's sum over the
 * modes stays a per-lane accumulation (no horizontal reduction), and the channels' input and
 * output rows are contiguous. A block's workspace holds, per mode n, FIELDS vectors of LANES values
 * (z, Bbar, C, the adjoint and the gradient sums: one base pointer with constant offsets in the
 * loops); a state is H pairs of vectors (re, im), also the layout of the checkpoints. Up to
 * group_blocks blocks (their workspaces within SCAN_GROUP_BYTES) go through a chunk of rows
 * before the next chunk, so the chunk's rows come from memory once, not once per block. States and
 * sums in double. */

#define FIELD(m, f, v) (m)[(f)*LANES + (v)]
/* a b + c, fused where the target has the instruction (without it fma() is a slow library call;
 * the build's ISO C mode does not contract a * b + c by itself). */
#ifdef __FMA__
#define FMA(a, b, c) fma((a), (b), (c))
#else
#define FMA(a, b, c) ((a) * (b) + (c))
#endif

/* x = z x + Bbar u; acc += Re(C x) per lane. m: a block's workspace, x: its state. */
static inline void scan_rows_forward(int H, const double *restrict m, double *restrict x,
                                     const double *restrict u, double *restrict acc) {
    for (int n = 0; n < H; n++, m += FIELDS * LANES, x += 2 * LANES)
        for (int v = 0; v < LANES; v++) {
            const double a = x[v], b = x[LANES + v];
            const double nr = FMA(FIELD(m, ZR, v), a, FMA(-FIELD(m, ZI, v), b, FIELD(m, BR, v) * u[v]));
            const double ni = FMA(FIELD(m, ZR, v), b, FMA(FIELD(m, ZI, v), a, FIELD(m, BI, v) * u[v]));
            x[v] = nr, x[LANES + v] = ni;
            acc[v] = FMA(FIELD(m, CR, v), nr, FMA(-FIELD(m, CI, v), ni, acc[v]));
        }
}

/* The fix-up's step: d = z d; acc += Re(C d) per lane. */
static inline void scan_rows_fixup(int H, const double *restrict m, double *restrict d,
                                   double *restrict acc) {
    for (int n = 0; n < H; n++, m += FIELDS * LANES, d += 2 * LANES)
        for (int v = 0; v < LANES; v++) {
            const double a = d[v], b = d[LANES + v];
            const double nr = FMA(FIELD(m, ZR, v), a, -FIELD(m, ZI, v) * b);
            const double ni = FMA(FIELD(m, ZR, v), b, FIELD(m, ZI, v) * a);
            d[v] = nr, d[LANES + v] = ni;
            acc[v] = FMA(FIELD(m, CR, v), nr, FMA(-FIELD(m, CI, v), ni, acc[v]));
        }
}

/* The next row's state from the previous one: x = z prev + Bbar u (backward's recomputation). */
static inline void scan_rows_recompute(int H, const double *restrict m, const double *restrict prev,
                                       double *restrict x, const double *restrict u) {
    for (int n = 0; n < H; n++, m += FIELDS * LANES, prev += 2 * LANES, x += 2 * LANES)
        for (int v = 0; v < LANES; v++) {
            const double a = prev[v], b = prev[LANES + v];
            x[v] = FMA(FIELD(m, ZR, v), a, FMA(-FIELD(m, ZI, v), b, FIELD(m, BR, v) * u[v]));
            x[LANES + v] = FMA(FIELD(m, ZR, v), b, FMA(FIELD(m, ZI, v), a, FIELD(m, BI, v) * u[v]));
        }
}

/* The adjoint summary's step: S = conj(z) S + dy. */
static inline void scan_rows_summary(int H, const double *restrict m, double *restrict S,
                                     const double *restrict dy) {
    for (int n = 0; n < H; n++, m += FIELDS * LANES, S += 2 * LANES)
        for (int v = 0; v < LANES; v++) {
            const double a = S[v], b = S[LANES + v];
            S[v] = FMA(FIELD(m, ZR, v), a, FMA(FIELD(m, ZI, v), b, dy[v]));
            S[LANES + v] = FMA(FIELD(m, ZR, v), b, -FIELD(m, ZI, v) * a);
        }
}

/* The reverse pass of one mode (its LANES lanes) over a chunk's rows count-1 down to 0, g = 2 dy:
 *   lam = conj(z) lam + g conj(C); du += Re(conj(lam) Bbar); g_z += lam conj(x_{t-1});
 *   g_Bbar += lam u_t; g_C += g conj(x_t).
 * m: the mode's fields (the adjoint and the sums are read at the start and written at the end:
 * in registers in between), row j of the chunk's states at xb + j stride (x_t = row j + 1,
 * x_{t-1} = row j). Mode by mode over the rows (not row by row over the modes): the sums stay in
 * registers, and only the states, g, u and du are loaded per row. */
static inline void scan_mode_backward(double *restrict m, const double *restrict xb, int64_t stride,
                                      int64_t count, const double *restrict g, const double *restrict u,
                                      double *restrict du) {
    double lr[LANES], li[LANES], gzr[LANES], gzi[LANES], gbr[LANES], gbi[LANES], gcr[LANES], gci[LANES];
    for (int v = 0; v < LANES; v++) {
        lr[v] = FIELD(m, LR, v), li[v] = FIELD(m, LI, v);
        gzr[v] = FIELD(m, GZR, v), gzi[v] = FIELD(m, GZI, v);
        gbr[v] = FIELD(m, GBR, v), gbi[v] = FIELD(m, GBI, v);
        gcr[v] = FIELD(m, GCR, v), gci[v] = FIELD(m, GCI, v);
    }
    for (int64_t j = count - 1; j >= 0; j--) {
        const double *x = xb + (j + 1) * stride, *prev = xb + j * stride;
        for (int v = 0; v < LANES; v++) {
            const double zr = FIELD(m, ZR, v), zi = FIELD(m, ZI, v), gv = g[j * LANES + v];
            const double nr = FMA(zr, lr[v], FMA(zi, li[v], gv * FIELD(m, CR, v)));
            const double ni = FMA(zr, li[v], FMA(-zi, lr[v], -gv * FIELD(m, CI, v)));
            lr[v] = nr, li[v] = ni;
            du[j * LANES + v] = FMA(nr, FIELD(m, BR, v), FMA(ni, FIELD(m, BI, v), du[j * LANES + v]));
            const double pr = prev[v], pi = prev[LANES + v];
            gzr[v] = FMA(nr, pr, FMA(ni, pi, gzr[v]));
            gzi[v] = FMA(ni, pr, FMA(-nr, pi, gzi[v]));
            gbr[v] = FMA(nr, u[j * LANES + v], gbr[v]);
            gbi[v] = FMA(ni, u[j * LANES + v], gbi[v]);
            gcr[v] = FMA(gv, x[v], gcr[v]);
            gci[v] = FMA(-gv, x[LANES + v], gci[v]);
        }
    }
    for (int v = 0; v < LANES; v++) {
        FIELD(m, LR, v) = lr[v], FIELD(m, LI, v) = li[v];
        FIELD(m, GZR, v) = gzr[v], FIELD(m, GZI, v) = gzi[v];
        FIELD(m, GBR, v) = gbr[v], FIELD(m, GBI, v) = gbi[v];
        FIELD(m, GCR, v) = gcr[v], FIELD(m, GCI, v) = gci[v];
    }
}

/* Channel block b inside the group starting at block b0: its channels, its workspace and state. */
typedef struct {
    int c0, lanes;
    double *m, *x;
} scan_block;

static scan_block scan_block_at(const s4d_state *s, int b, int b0) {
    const int64_t HV = (int64_t)s->H * LANES;
    scan_block k = {b * LANES, s->C - b * LANES < LANES ? s->C - b * LANES : LANES, NULL, NULL};
    k.m = s->bw + (int64_t)(b - b0) * FIELDS * HV;
    k.x = s->xs + (int64_t)(b - b0) * 2 * HV;
    return k;
}

/* The blocks of the group starting at b0. */
static int scan_group(const s4d_state *s, int b0) {
    return s->n_blocks - b0 < s->group_blocks ? s->n_blocks - b0 : s->group_blocks;
}

/* The discretised modes of a block into its workspace (the adjoint and the sums zeroed). */
static void scan_block_modes(const s4d_state *s, const real_t *params, const scan_block *k) {
    const int H = s->H;
    memset(k->m, 0, sizeof(double) * (size_t)H * FIELDS * LANES);
    for (int n = 0; n < H; n++) {
        double *m = k->m + (int64_t)n * FIELDS * LANES;
        for (int v = 0; v < k->lanes; v++) {
            const s4d_mode mode = mode_at(s, params, k->c0 + v, n);
            const double complex bbar = mode.B * mode.bd;
            FIELD(m, ZR, v) = creal(mode.z), FIELD(m, ZI, v) = cimag(mode.z);
            FIELD(m, BR, v) = creal(bbar), FIELD(m, BI, v) = cimag(bbar);
            FIELD(m, CR, v) = creal(mode.Cc), FIELD(m, CI, v) = cimag(mode.Cc);
        }
    }
}

/* Block values (mode n, lane v: re at base[n stride + v], im LANES further) to and from the
 * exchange's layout: (C,H) complex, re/im pairs (also the carried state's). The padding lanes read
 * as zeros; the second returns whether any value is not zero. */
static void scan_block_to_flat(const s4d_state *s, const scan_block *k, const double *base, int64_t stride,
                               double *flat) {
    const int H = s->H;
    for (int v = 0; v < k->lanes; v++)
        for (int n = 0; n < H; n++) {
            const int64_t i = 2 * ((int64_t)(k->c0 + v) * H + n);
            flat[i] = base[n * stride + v], flat[i + 1] = base[n * stride + LANES + v];
        }
}

static int scan_flat_to_block(const s4d_state *s, const scan_block *k, const double *flat, double *base,
                              int64_t stride) {
    const int H = s->H;
    int any = 0;
    for (int n = 0; n < H; n++)
        for (int v = 0; v < LANES; v++) {
            double re = 0, im = 0;
            if (v < k->lanes) {
                const int64_t i = 2 * ((int64_t)(k->c0 + v) * H + n);
                re = flat[i], im = flat[i + 1];
            }
            base[n * stride + v] = re, base[n * stride + LANES + v] = im;
            any |= re != 0 || im != 0;
        }
    return any;
}

/* Checkpoint q (over the pieces) of channel block b: a state (2 H LANES). */
static double *scan_checkpoint(const s4d_state *s, int64_t q, int b) {
    return s->ckpt + (q * s->n_blocks + b) * 2 * (int64_t)s->H * LANES;
}

/* A = z^len (conj: conj(z)^len) of every mode, in the exchange's layout, exact: e^{len x}. */
static void scan_decay(const s4d_state *s, const real_t *params, int64_t len, int conj_, double *A) {
    const int C = s->C, H = s->H;
    for (int c = 0; c < C; c++) {
        const double dt = exp((double)params[s->o_log_dt + c]);
        for (int n = 0; n < H; n++) {
            const int64_t i = (int64_t)c * H + n;
            const double complex x =
                CMPLX(-exp((double)params[s->o_log_a_re + i]) * dt, (double)params[s->o_a_im + i] * dt);
            const double complex e = cexp((double)len * x);
            A[2 * i] = creal(e), A[2 * i + 1] = conj_ ? -cimag(e) : cimag(e);
        }
    }
}

/* Rows of a piece of len rows that channel c's fix-up reaches: row j is kept while its slowest
 * mode has |z|^(j+1) = e^{-(j+1) rate} >= 2^-60 (rate = min_n dt exp(log_a_re_n); 60 ln 2 =
 * 41.59); past that every dropped term of the correction is below 2^-60 of its first row's scale
 * (s4d.h). */
static int64_t scan_reach(const s4d_state *s, const real_t *params, int c, int64_t len) {
    const double dt = exp((double)params[s->o_log_dt + c]);
    double rate = INFINITY;
    for (int n = 0; n < s->H; n++)
        rate = fmin(rate, dt * exp((double)params[s->o_log_a_re + (int64_t)c * s->H + n]));
    const double rows = 60 * 0.69314718055994530942 / rate; /* rate 0: inf */
    return rows < (double)len ? (int64_t)rows : len;
}

/* Rows [r, r + count) of block k's lanes of a (T,C) array into buf (count, LANES), times scale;
 * padding lanes 0. The row loops work on such chunk buffers: one conversion per chunk, and vector
 * loads of values stored long before (not a row's scalar stores read back at once). */
static void scan_load_rows(const s4d_state *s, const scan_block *k, const real_t *src, int64_t r,
                           int64_t count, double scale, double *buf) {
    const int C = s->C;
    for (int64_t j = 0; j < count; j++)
        for (int v = 0; v < LANES; v++)
            buf[j * LANES + v] = v < k->lanes ? scale * (double)src[(r + j) * C + k->c0 + v] : 0.0;
}

/* dst rows [r, r + count) of block k's lanes += buf. */
static void scan_add_rows(const s4d_state *s, const scan_block *k, real_t *dst, int64_t r, int64_t count,
                          const double *buf) {
    const int C = s->C;
    for (int64_t j = 0; j < count; j++)
        for (int v = 0; v < k->lanes; v++)
            dst[(r + j) * C + k->c0 + v] += (real_t)buf[j * LANES + v];
}

/* Local scan of piece p from x = 0 for the group at b0: y (without the entering state) and D u,
 * the checkpoints, and the summary's B (the final state) into pair + 2W. */
static void scan_piece_forward(s4d_state *s, const real_t *in, const real_t *params, int b0, int p,
                               double *pair) {
    const int C = s->C, H = s->H, blocks = scan_group(s, b0);
    const int64_t HV = (int64_t)H * LANES, W = (int64_t)C * H, len = s->len[p];
    const real_t *D = params + s->o_d;
    memset(s->xs, 0, sizeof(double) * (size_t)(blocks * 2 * HV));
    double u[CHUNK * LANES], acc[CHUNK * LANES];
    for (int64_t a = 0; a < len; a += CHUNK) {
        const int64_t count = len - a < CHUNK ? len - a : CHUNK, r = s->row0[p] + a;
        for (int b = b0; b < b0 + blocks; b++) {
            const scan_block k = scan_block_at(s, b, b0);
            memcpy(scan_checkpoint(s, s->ck0[p] + a / CHUNK, b), k.x, sizeof(double) * (size_t)(2 * HV));
            scan_load_rows(s, &k, in, r, count, 1.0, u);
            memset(acc, 0, sizeof acc);
            for (int64_t j = 0; j < count; j++)
                scan_rows_forward(H, k.m, k.x, u + j * LANES, acc + j * LANES);
            for (int64_t j = 0; j < count; j++)
                for (int v = 0; v < k.lanes; v++)
                    s->y[(r + j) * C + k.c0 + v] =
                        (real_t)(2 * acc[j * LANES + v] + (double)D[k.c0 + v] * u[j * LANES + v]);
        }
    }
    for (int b = b0; b < b0 + blocks; b++) {
        const scan_block k = scan_block_at(s, b, b0);
        scan_block_to_flat(s, &k, k.x, 2 * LANES, pair + 2 * W);
    }
}

/* Add the entering state x_in of piece p to the group's rows and checkpoints: the state at row j
 * is the local one plus d_j = z^(j+1) x_in, so y_j += 2 Re sum_n C_n d_j,n (truncated per
 * channel: scan_reach) and checkpoint q (the state after row qQ - 1) += d_{qQ-1}. */
static void scan_piece_fixup(s4d_state *s, const real_t *params, int b0, int p) {
    const int C = s->C, H = s->H, blocks = scan_group(s, b0);
    const int64_t HV = (int64_t)H * LANES, W = (int64_t)C * H, len = s->len[p];
    int64_t reach[SCAN_GROUP_MAX][LANES], rows[SCAN_GROUP_MAX];
    int64_t most = 0;
    for (int b = b0; b < b0 + blocks; b++) {
        const scan_block k = scan_block_at(s, b, b0);
        rows[b - b0] = 0;
        if (len == 0 || !scan_flat_to_block(s, &k, s->enter + p * 2 * W, k.x, 2 * LANES)) continue;
        memcpy(scan_checkpoint(s, s->ck0[p], b), k.x, sizeof(double) * (size_t)(2 * HV));
        for (int v = 0; v < LANES; v++) {
            reach[b - b0][v] = v < k.lanes ? scan_reach(s, params, k.c0 + v, len) : 0;
            rows[b - b0] = reach[b - b0][v] > rows[b - b0] ? reach[b - b0][v] : rows[b - b0];
        }
        most = rows[b - b0] > most ? rows[b - b0] : most;
    }
    double acc[CHUNK * LANES];
    for (int64_t a = 0; a < most; a += CHUNK)
        for (int b = b0; b < b0 + blocks; b++) {
            if (a >= rows[b - b0]) continue; /* nothing enters, or all decayed */
            const scan_block k = scan_block_at(s, b, b0);
            const int64_t count = rows[b - b0] - a < CHUNK ? rows[b - b0] - a : CHUNK;
            memset(acc, 0, sizeof acc);
            for (int64_t j = 0; j < count; j++) {
                for (int v = 0; v < k.lanes; v++)
                    if (reach[b - b0][v] == a + j) /* this channel's correction is below 2^-60: drop it */
                        for (int n = 0; n < H; n++)
                            k.x[n * 2 * LANES + v] = k.x[n * 2 * LANES + LANES + v] = 0;
                scan_rows_fixup(H, k.m, k.x, acc + j * LANES);
            }
            for (int64_t i = 0; i < count * LANES; i++)
                acc[i] *= 2;
            scan_add_rows(s, &k, s->y, s->row0[p] + a, count, acc);
            /* the correction after the chunk's last row is the next checkpoint's */
            if (count == CHUNK && a + CHUNK < len) {
                double *next = scan_checkpoint(s, s->ck0[p] + (a + CHUNK) / CHUNK, b);
                for (int64_t i = 0; i < 2 * HV; i++)
                    next[i] += k.x[i];
            }
        }
}

/* y (T,C) = 2 Re C x + D u over this rank's pieces, the state entering each from the exchange;
 * the checkpoints hold the true states afterwards. */
static int scan_forward(s4d_state *s, const real_t *in, const real_t *params) {
    const int64_t W = (int64_t)s->C * s->H;
    const double t0 = strand_now();
    for (int b0 = 0; b0 < s->n_blocks; b0 += s->group_blocks) {
        for (int b = b0; b < b0 + scan_group(s, b0); b++) {
            const scan_block k = scan_block_at(s, b, b0);
            scan_block_modes(s, params, &k);
        }
        for (int p = 0; p < s->n_pieces; p++)
            scan_piece_forward(s, in, params, b0, p, s->pairs + p * 4 * W);
    }
    const double *summaries[STRAND_MAX_PIECES];
    double *entering[STRAND_MAX_PIECES];
    for (int p = 0; p < s->n_pieces; p++) {
        scan_decay(s, params, s->len[p], 0, s->pairs + p * 4 * W);
        summaries[p] = s->pairs + p * 4 * W;
        entering[p] = s->enter + p * 2 * W;
    }
    const double t1 = strand_now();
    const double *initial = NULL;
    if (s->carry) {
        for (int64_t i = 0; i < 2 * W; i++)
            s->carry_in[i] = (double)s->carry_state[i];
        initial = s->carry_in;
    }
    STRAND_CALL(strand_scan_exchange(&s->scan, STRAND_SCAN_FORWARD, summaries, initial, entering,
                                     s->carry ? s->final_state : NULL));
    /* The next window starts from this one's last state, rounded to real_t here so that a
     * checkpoint (which stores real_t) resumes bit-exactly. */
    if (s->carry && s->scan.rank == s->scan.first_owner[STRAND_SCAN_FORWARD])
        for (int64_t i = 0; i < 2 * W; i++)
            s->carry_state[i] = (real_t)s->final_state[i];
    const double t2 = strand_now();
    for (int b0 = 0; b0 < s->n_blocks; b0 += s->group_blocks) {
        for (int b = b0; b < b0 + scan_group(s, b0); b++) {
            const scan_block k = scan_block_at(s, b, b0);
            scan_block_modes(s, params, &k);
        }
        for (int p = 0; p < s->n_pieces; p++)
            scan_piece_fixup(s, params, b0, p);
    }
    strand_scan_kernel_time_add(t1 - t0 + strand_now() - t2);
    return STRAND_OK;
}

/* B of piece p's adjoint summary for the group at b0: lam_s from a zero adjoint after the piece. */
static void scan_piece_summary(s4d_state *s, int b0, int p, double *B) {
    const int H = s->H, blocks = scan_group(s, b0);
    const int64_t HV = (int64_t)H * LANES, len = s->len[p];
    memset(s->xs, 0, sizeof(double) * (size_t)(blocks * 2 * HV));
    double dy[CHUNK * LANES];
    for (int64_t a = (len - 1) / CHUNK * CHUNK; a >= 0 && len > 0; a -= CHUNK) {
        const int64_t count = len - a < CHUNK ? len - a : CHUNK;
        for (int b = b0; b < b0 + blocks; b++) {
            const scan_block k = scan_block_at(s, b, b0);
            scan_load_rows(s, &k, s->dy, s->row0[p] + a, count, 1.0, dy);
            for (int64_t j = count - 1; j >= 0; j--)
                scan_rows_summary(H, k.m, k.x, dy + j * LANES);
        }
    }
    for (int b = b0; b < b0 + blocks; b++) {
        const scan_block k = scan_block_at(s, b, b0);
        /* lam_s = 2 conj(C) S_s */
        for (int n = 0; n < H; n++) {
            const double *m = k.m + (int64_t)n * FIELDS * LANES;
            double *q = k.x + n * 2 * LANES;
            for (int v = 0; v < LANES; v++) {
                const double x = q[v], w = q[LANES + v], cr = FIELD(m, CR, v), ci = FIELD(m, CI, v);
                q[v] = 2 * (cr * x + ci * w);
                q[LANES + v] = 2 * (cr * w - ci * x);
            }
        }
        scan_block_to_flat(s, &k, k.x, 2 * LANES, B);
    }
}

/* The reverse pass over piece p for the group at b0 from the adjoint entering it: din, and the
 * blocks' gradient sums. The states come back a chunk at a time from the checkpoints. */
static void scan_piece_backward(s4d_state *s, real_t *din, const real_t *in, int b0, int p) {
    const int H = s->H, blocks = scan_group(s, b0);
    const int64_t HV = (int64_t)H * LANES, W = (int64_t)s->C * H, len = s->len[p];
    for (int b = b0; b < b0 + blocks; b++) {
        const scan_block k = scan_block_at(s, b, b0);
        scan_flat_to_block(s, &k, s->enter + p * 2 * W, k.m + LR * LANES, FIELDS * LANES);
    }
    double u[CHUNK * LANES], g[CHUNK * LANES], du[CHUNK * LANES];
    for (int64_t q = (len + CHUNK - 1) / CHUNK - 1; q >= 0; q--) {
        const int64_t a = q * CHUNK, count = len - a < CHUNK ? len - a : CHUNK, r = s->row0[p] + a;
        for (int b = b0; b < b0 + blocks; b++) {
            const scan_block k = scan_block_at(s, b, b0);
            scan_load_rows(s, &k, in, r, count, 1.0, u);
            scan_load_rows(s, &k, s->dy, r, count, 2.0, g); /* g = 2 dy */
            memset(du, 0, sizeof du);
            /* xbuf row j: the state before the chunk's row j (row 0: the checkpoint) */
            memcpy(s->xbuf, scan_checkpoint(s, s->ck0[p] + q, b), sizeof(double) * (size_t)(2 * HV));
            for (int64_t j = 0; j < count; j++)
                scan_rows_recompute(H, k.m, s->xbuf + j * 2 * HV, s->xbuf + (j + 1) * 2 * HV, u + j * LANES);
            for (int n = 0; n < H; n++)
                scan_mode_backward(k.m + (int64_t)n * FIELDS * LANES, s->xbuf + n * 2 * LANES, 2 * HV, count,
                                   g, u, du);
            scan_add_rows(s, &k, din, r, count, du);
        }
    }
}

/* A block's sums g_z, g_Bbar, g_C to the parameters (the chain rules at the top of the file). */
static void scan_block_gradients(const s4d_state *s, const scan_block *k, real_t *dparams,
                                 const real_t *params) {
    const int H = s->H;
    for (int v = 0; v < k->lanes; v++) {
        const int c = k->c0 + v;
        double dlog_dt = 0;
        for (int n = 0; n < H; n++) {
            const double *m = k->m + (int64_t)n * FIELDS * LANES;
            const int64_t i = (int64_t)c * H + n;
            const s4d_mode mode = mode_at(s, params, c, n);
            double complex f, df;
            phi1(mode.x, &f, &df);
            const double complex gz = CMPLX(FIELD(m, GZR, v), FIELD(m, GZI, v));
            const double complex gb = CMPLX(FIELD(m, GBR, v), FIELD(m, GBI, v));
            const double complex gB = conj(mode.bd) * gb;
            const double complex gA =
                conj(mode.dt * mode.z) * gz + conj(mode.B * mode.dt * mode.dt * df) * gb;
            dparams[s->o_c_re + i] += (real_t)FIELD(m, GCR, v);
            dparams[s->o_c_im + i] += (real_t)FIELD(m, GCI, v);
            dparams[s->o_b_re + i] += (real_t)creal(gB);
            dparams[s->o_b_im + i] += (real_t)cimag(gB);
            dparams[s->o_log_a_re + i] += (real_t)(creal(mode.A) * creal(gA));
            dparams[s->o_a_im + i] += (real_t)cimag(gA);
            dlog_dt += mode.dt * creal(conj(gz) * mode.A * mode.z + conj(gb) * mode.B * mode.z);
        }
        dparams[s->o_log_dt + c] += (real_t)dlog_dt;
    }
}

/* Given dy (s->dy): din += the recurrence's part, dparams += the SSM parameters' gradients. */
static int scan_backward(s4d_state *s, real_t *din, real_t *dparams, const real_t *in, const real_t *params) {
    const int64_t W = (int64_t)s->C * s->H;
    const double t0 = strand_now();
    for (int b0 = 0; b0 < s->n_blocks; b0 += s->group_blocks) {
        for (int b = b0; b < b0 + scan_group(s, b0); b++) {
            const scan_block k = scan_block_at(s, b, b0);
            scan_block_modes(s, params, &k);
        }
        for (int p = 0; p < s->n_pieces; p++)
            scan_piece_summary(s, b0, p, s->pairs + p * 4 * W + 2 * W);
    }
    const double *summaries[STRAND_MAX_PIECES];
    double *entering[STRAND_MAX_PIECES];
    for (int p = 0; p < s->n_pieces; p++) {
        scan_decay(s, params, s->len[p], 1, s->pairs + p * 4 * W);
        summaries[p] = s->pairs + p * 4 * W;
        entering[p] = s->enter + p * 2 * W;
    }
    const double t1 = strand_now();
    /* nothing flows back from past the window, nor into the carried state */
    STRAND_CALL(strand_scan_exchange(&s->scan, STRAND_SCAN_BACKWARD, summaries, NULL, entering, NULL));
    const double t2 = strand_now();
    for (int b0 = 0; b0 < s->n_blocks; b0 += s->group_blocks) {
        for (int b = b0; b < b0 + scan_group(s, b0); b++) {
            const scan_block k = scan_block_at(s, b, b0);
            scan_block_modes(s, params, &k); /* the sums start at zero */
        }
        for (int p = 0; p < s->n_pieces; p++)
            scan_piece_backward(s, din, in, b0, p);
        for (int b = b0; b < b0 + scan_group(s, b0); b++) {
            const scan_block k = scan_block_at(s, b, b0);
            scan_block_gradients(s, &k, dparams, params);
        }
    }
    strand_scan_kernel_time_add(t1 - t0 + strand_now() - t2);
    return STRAND_OK;
}

#undef FIELD
#undef FMA

static int s4d_forward(strand_mixer *mixer, real_t *out, const real_t *in, const real_t *params,
                       const strand_shard *shard) {
    s4d_state *s = mixer->state;
    const int C = s->C;
    const int64_t T = shard->T;
    STRAND_ASSERT(T == s->T);
    if (s->mode == S4D_MODE_SCAN) {
        STRAND_ASSERT(s->scan_planned && shard->n_pieces == s->n_pieces);
        STRAND_CALL(scan_forward(s, in, params)); /* y = 2 Re C x + D u */
    } else {
        STRAND_ASSERT(s->conv);
        s4d_kernel_forward(mixer, s->K, params, shard->n_pieces, shard->piece_start, shard->piece_length);
        STRAND_CALL(strand_fftconv_forward(s->conv, s->y, in, s->K));
        const real_t *D = params + s->o_d;
        for (int64_t t = 0; t < T; t++)
            for (int c = 0; c < C; c++)
                s->y[t * C + c] += D[c] * in[t * C + c];
    }
    gelu_forward(s->g, s->y, T * C);
    linear_forward(s->z, s->g, params + s->o_out_weight, params + s->o_out_bias, T, C, 2 * C);
    glu_forward(out, s->z, T, C);
    return STRAND_OK;
}

static int s4d_backward(strand_mixer *mixer, real_t *din, real_t *dparams, const real_t *dout,
                        const real_t *in, const real_t *params, const strand_shard *shard) {
    s4d_state *s = mixer->state;
    const int C = s->C;
    const int64_t T = shard->T, TC = T * C;
    STRAND_ASSERT(T == s->T && (s->mode == S4D_MODE_SCAN ? s->scan_planned : s->conv != NULL));
    glu_backward(s->dz, dout, s->z, T, C);
    memset(s->dg, 0, sizeof(real_t) * (size_t)TC);
    linear_backward(s->dg, dparams + s->o_out_weight, dparams + s->o_out_bias, s->dz, s->g,
                    params + s->o_out_weight, T, C, 2 * C);
    memset(s->dy, 0, sizeof(real_t) * (size_t)TC);
    gelu_backward(s->dy, s->dg, s->y, TC);
    /* y = K * u + D u */
    const real_t *D = params + s->o_d;
    real_t *dD = dparams + s->o_d;
    for (int c = 0; c < C; c++) {
        double sum = 0;
        for (int64_t t = 0; t < T; t++)
            sum += (double)s->dy[t * C + c] * (double)in[t * C + c];
        dD[c] += (real_t)sum;
    }
    for (int64_t t = 0; t < T; t++)
        for (int c = 0; c < C; c++)
            din[t * C + c] += D[c] * s->dy[t * C + c];
    if (s->mode == S4D_MODE_SCAN) return scan_backward(s, din, dparams, in, params);
    memset(s->dK, 0, sizeof(real_t) * (size_t)TC);
    STRAND_CALL(strand_fftconv_backward(s->conv, din, s->dK, s->dy));
    s4d_kernel_backward(mixer, dparams, s->dK, params, shard->n_pieces, shard->piece_start,
                        shard->piece_length);
    return STRAND_OK;
}

static void s4d_destroy(strand_mixer *mixer) {
    s4d_state *s = mixer->state;
    if (!s) return;
    if (s->init_kind == S4D_INIT_LEGS && legs_cache.users > 0 && --legs_cache.users == 0) {
        strand_free(legs_cache.a_im);
        legs_cache.a_im = NULL;
        legs_cache.N = 0;
    }
    strand_free(s->a_im_init);
    strand_free(s->ws);
    strand_fftconv_free(s->conv); /* its plans; the buffers belong to the model's plan */
    if (s->scan_planned) strand_scan_free(&s->scan);
    strand_free(s);
    mixer->state = NULL;
}

static int s4d_step_init(const strand_mixer *mixer, const real_t *params, int64_t max_len, void **state);
static int s4d_step(const strand_mixer *mixer, void *state, const real_t *params, const real_t *in,
                    real_t *out, int64_t position);
static void s4d_step_free(void *state);

/* ---- carried state (scan mode with s4d.carry): x (C,H) re/im pairs, on the rank holding
 * position 0 (zeros elsewhere) ---- */

static int64_t s4d_carry_count(const strand_mixer *mixer) {
    const s4d_state *s = mixer->state;
    return s->carry ? 2 * (int64_t)s->C * s->H : 0;
}

static void s4d_carry_save(const strand_mixer *mixer, real_t *out) {
    const s4d_state *s = mixer->state;
    if (s->carry) memcpy(out, s->carry_state, sizeof(real_t) * (size_t)s4d_carry_count(mixer));
}

static void s4d_carry_load(strand_mixer *mixer, const real_t *in) {
    s4d_state *s = mixer->state;
    if (s->carry) memcpy(s->carry_state, in, sizeof(real_t) * (size_t)s4d_carry_count(mixer));
}

static void s4d_reset(strand_mixer *mixer) {
    s4d_state *s = mixer->state;
    if (s && s->carry && s->carry_state)
        memset(s->carry_state, 0, sizeof(real_t) * (size_t)s4d_carry_count(mixer));
}

/* Work of forward + backward (strand plan): the kernel's modes at this rank's positions (about
 * 8 FLOPs per mode and position, forward, twice that backward) and the long convolution, or the
 * scan; then GELU, the GLU projection and their passes. */
static void s4d_cost(const void *options, const strand_cost_shape *shape, strand_cost *cost) {
    const s4d_options *o = options;
    const double T = (double)shape->T, C = shape->C, TC = T * C;
    if (o->mode == S4D_MODE_SCAN) {
        cost->gemv_flops += 3 * s4d_flops(options, shape->C, shape->T);
        if (shape->sp > 1) cost->p2p_messages += 2 * ceil(log2((double)shape->sp)) + 2;
    } else {
        cost->gemv_flops += 3 * 8.0 * TC * (o->state / 2);
        strand_cost_long_conv(cost, shape, shape->C);
    }
    strand_cost_linear(cost, T, C, 2 * C);
    strand_cost_exp(cost, 2 * TC + 2 * TC); /* GELU's tanh, GLU's sigmoid */
    strand_cost_stream(cost, 20 * TC);
}

const strand_mixer_ops strand_mixer_s4d = {
    .cost = s4d_cost,
    .name = "s4d",
    .forward_cost = "O(L log L C) (conv), O(L C N) (scan)",
    .step_cost = "O(C N) (recurrent mode)",
    .summary = "diagonal state-space layer (S4D): its kernel generated per rank, applied by the distributed "
               "FFT long convolution, or (s4d.mode = scan) its recurrence by the distributed linear scan; "
               "recurrent in step mode",
    .flops = s4d_flops,
    .options_size = sizeof(s4d_options),
    .keys = s4d_keys,
    .key_count = sizeof s4d_keys / sizeof s4d_keys[0],
    .validate = s4d_validate,
    .capabilities = s4d_capabilities,
    .test_configs = s4d_test_configs,
    .create = s4d_create,
    .plan = s4d_plan,
    .setup = s4d_setup,
    .init_params = s4d_init_params,
    .forward = s4d_forward,
    .backward = s4d_backward,
    .destroy = s4d_destroy,
    .step_init = s4d_step_init,
    .step = s4d_step,
    .step_free = s4d_step_free,
    .carry_count = s4d_carry_count,
    .carry_save = s4d_carry_save,
    .carry_load = s4d_carry_load,
    .reset = s4d_reset,
};

/* ---- recurrent mode ---- */

int s4d_recurrent_init(s4d_recurrent_state *state, const strand_mixer *mixer) {
    const s4d_state *s = mixer->state;
    memset(state, 0, sizeof *state);
    state->C = s->C;
    state->H = s->H;
    STRAND_ALLOC(state->x, 2 * (int64_t)s->C * s->H, "s4d recurrent state");
    STRAND_ALLOC(state->y, s->C, "s4d recurrent scratch");
    STRAND_ALLOC(state->g, s->C, "s4d recurrent scratch");
    STRAND_ALLOC(state->z, 2 * (int64_t)s->C, "s4d recurrent scratch");
    return STRAND_OK;
}

void s4d_recurrent_reset(s4d_recurrent_state *state) {
    memset(state->x, 0, sizeof(double) * 2 * (size_t)state->C * (size_t)state->H);
}

void s4d_recurrent_free(s4d_recurrent_state *state) {
    strand_free(state->x);
    strand_free(state->y);
    strand_free(state->g);
    strand_free(state->z);
    memset(state, 0, sizeof *state);
}

int s4d_recurrent_step(const strand_mixer *mixer, const real_t *params, s4d_recurrent_state *state,
                       const real_t *u_t, real_t *y_t) {
    const s4d_state *s = mixer->state;
    const int C = s->C, H = s->H;
    if (state->C != C || state->H != H)
        STRAND_FAIL(STRAND_ERR_INPUT, "s4d recurrent state is (%d,%d), the mixer (%d,%d)", state->C, state->H,
                    C, H);
    for (int c = 0; c < C; c++) {
        const double u = (double)u_t[c];
        double y = (double)params[s->o_d + c] * u;
        for (int n = 0; n < H; n++) {
            const s4d_mode m = mode_at(s, params, c, n);
            double *x = state->x + 2 * ((int64_t)c * H + n);
            const double complex bbar = m.B * m.bd;
            const double complex xn = m.z * CMPLX(x[0], x[1]) + bbar * u;
            x[0] = creal(xn), x[1] = cimag(xn);
            y += 2 * creal(m.Cc * xn);
        }
        state->y[c] = (real_t)y;
    }
    gelu_forward(state->g, state->y, C);
    linear_forward(state->z, state->g, params + s->o_out_weight, params + s->o_out_bias, 1, C, 2 * C);
    glu_forward(y_t, state->z, 1, C);
    return STRAND_OK;
}

/* ---- incremental decoding: the recurrent mode above ----
 * Per token O(C N) (the N/2 complex modes of every channel, whose discretisation
 * s4d_recurrent_step recomputes: one cexp and phi1 per mode) plus the output linear's O(C^2); the
 * state is C N doubles, whatever the length. */

typedef struct {
    int64_t next, max_len; /* the position the next step must be */
    s4d_recurrent_state rec;
} s4d_step_state;

static void s4d_step_free(void *state) {
    s4d_step_state *st = state;
    if (!st) return;
    s4d_recurrent_free(&st->rec);
    strand_free(st);
}

static int s4d_step_init(const strand_mixer *mixer, const real_t *params, int64_t max_len, void **state) {
    (void)params;
    s4d_step_state *st = strand_alloc(sizeof *st, "s4d step state");
    if (!st) return STRAND_ERR_NOMEM;
    *state = st;
    st->max_len = max_len;
    return s4d_recurrent_init(&st->rec, mixer); /* x = 0: nothing before position 0 */
}

static int s4d_step(const strand_mixer *mixer, void *state, const real_t *params, const real_t *in,
                    real_t *out, int64_t position) {
    s4d_step_state *st = state;
    if (position != st->next || position >= st->max_len)
        STRAND_FAIL(STRAND_ERR_INPUT, "s4d step: position %lld, expected %lld (< %lld)", (long long)position,
                    (long long)st->next, (long long)st->max_len);
    STRAND_CALL(s4d_recurrent_step(mixer, params, &st->rec, in, out));
    st->next++;
    return STRAND_OK;
}
