/* Mixer "s4d": diagonal state-space layer (S4D, Gu et al. 2022) as a long convolution.
 *
 * Per channel c (C = d_model) there are H = N/2 complex modes n (N = s4d.state, even) with
 *   A = -exp(log_a_re) + i a_im,  dt = exp(log_dt),  x = dt A,
 *   Abar = e^x,  Bbar = B (e^x - 1) / A = B dt phi1(x)       (zero-order hold)
 *   K[l,c] = 2 Re sum_n C_n Bbar_n Abar_n^l                  (l = global lag)
 *   y = K * u + D u                                            (causal, fftconv.h)
 *   out = GLU(linear(GELU(y))): z = W g + b (2C), out = z[:C] * sigmoid(z[C:])
 * The SSM acts on the mixer's input directly (the block's norm output), as in S4D: no input
 * projection.
 *
 * Parameters of layer L (all in the model's flat array; shapes as declared):
 *   L/log_dt (C), L/log_a_re (C,H), L/a_im (C,H), L/B_re (C,H), L/B_im (C,H),
 *   L/C_re (C,H), L/C_im (C,H), L/D (C)   -- initialised by the mixer, no weight decay
 *   L.out/weight (2C,C), L.out/bias (2C)   -- table init (normal / zeros), weight decay on weight
 *
 * Kernel generation evaluates Abar^l for this rank's own lags only, in double, by the recurrence
 * p_{l+1} = p_l Abar from anchors e^{x a} at global multiples a of R = S4D_ANCHOR_EVERY; the
 * anchors themselves come from an exact cexp at multiples of R^2 followed by multiplications by
 * e^{x R} (one cexp per R^2 lags instead of per R). A complex multiplication adds at most
 * ~(sqrt(5)+1) u relative error (u = 2^-53), so |p - Abar^l| <= 2 R * 3.3 u |Abar^l| ~ 4.7e-14
 * |Abar^l|, plus the phase rounding of x l in the exact anchors (~u |x| l, inherent to any
 * evaluation); the kernel's error is bounded by that times 2 sum_n |C_n Bbar_n| |Abar_n|^l, plus
 * 2^-500 * 2 sum_n |C_n Bbar_n| from anchors flushed to zero once a mode has decayed below 2^-500
 * (stepping through subnormal numbers measured 60x slower).
 * Anchors sit on global multiples, so a rank's rows are bit-identical to the same rows of the
 * whole-window kernel at any SP.
 *
 * s4d.mode = scan computes the same layer, on the same parameters, through its recurrence and the
 * distributed linear scan (parallel/scan.h) instead of the kernel and the FFT:
 *   x_t = z x_{t-1} + Bbar u_t   (per channel c and mode n, complex; z = e^x)
 *   y_t = 2 Re sum_n C_n x_t,n + D u_t,  then the same GELU, linear and GLU.
 * The state is never stored for every position: the forward keeps x every S4D_SCAN_CHUNK positions
 * of each piece (checkpoints, C N doubles each) and backward recomputes a chunk at a time from
 * them. Each rank scans its pieces from x = 0; the summaries (z^len, final x) go through
 * strand_scan_exchange, and the state x_in entering a piece is added afterwards (the fix-up):
 * row j of the piece gets 2 Re sum_n C_n z_n^(j+1) x_in,n. The fix-up of a channel stops after
 * its row j once max_n |z_n|^(j+1) < 2^-60: every dropped term is below
 * 2^-60 * 2 sum_n |C_n x_in,n|, i.e. 2^-60 of the first row's correction scale (the checkpoints,
 * corrected by z^(kQ) x_in, are truncated alike: by at most 2^-60 |x_in,n| per mode). s4d.carry =
 * true (scan mode only) carries the window's last state into the next window (no gradient
 * crosses). The backward is derived in s4d.c. Cost O(L C N) per window, memory (T/Q) C N doubles
 * of checkpoints beyond the activations both modes save. */
#ifndef STRAND_S4D_H
#define STRAND_S4D_H

#include "strand/model.h"

#include <stdint.h>

extern const strand_mixer_ops strand_mixer_s4d;

enum { S4D_ANCHOR_EVERY = 64 };
enum s4d_init_kind { S4D_INIT_LIN = 0, S4D_INIT_INV = 1, S4D_INIT_LEGS = 2 };
enum s4d_mode_kind { S4D_MODE_CONV = 0, S4D_MODE_SCAN = 1 }; /* s4d.mode */
/* Scan mode: positions between two checkpoints of the state (Q). */
enum { S4D_SCAN_CHUNK = 64 };

/* ---- initialisation helpers ---- */

/* Imaginary parts of the H = N/2 initial A_n (all inits have Re A_n = -1/2):
 *   lin:  pi n;   inv: (N/pi) (N/(2n+1) - 1);
 *   legs: the positive imaginary parts of the eigenvalues of the normal part of HiPPO-LegS,
 *         -1/2 I + S (S skew-symmetric), ascending. Computed with LAPACK zheev on -iS. */
int s4d_init_a_imag(int kind, int N, double *a_im /* (N/2) */);

/* ---- kernel (for tests and other mixers) ---- */

/* K rows for the global lags of the given pieces (rows of piece 0, then piece 1, ...), K (rows,C).
 * The mixer must have been created in conv mode (scan mode makes no kernel workspace); its
 * workspace is used. */
void s4d_kernel_forward(strand_mixer *mixer, real_t *K, const real_t *params, int n_pieces,
                        const int64_t *starts, const int64_t *lengths);
/* dparams (log_dt, log_a_re, a_im, B, C of this layer) += d/dparams of sum(K * dK). */
void s4d_kernel_backward(strand_mixer *mixer, real_t *dparams, const real_t *dK, const real_t *params,
                         int n_pieces, const int64_t *starts, const int64_t *lengths);

/* ---- recurrent (step) mode for generation ---- */

typedef struct {
    int C, H;
    double *x;         /* (C,H,2): complex state, re/im pairs */
    real_t *y, *g, *z; /* scratch: y (C), gelu (C), linear (2C) */
} s4d_recurrent_state;

/* Allocate a state for a created s4d mixer, x = 0. */
int s4d_recurrent_init(s4d_recurrent_state *state, const strand_mixer *mixer);
void s4d_recurrent_reset(s4d_recurrent_state *state);
void s4d_recurrent_free(s4d_recurrent_state *state);
/* One token: x = Abar x + Bbar u_t; y = 2 Re(C x) + D u_t; y_t (C) = GLU(linear(GELU(y))).
 * The discretisation is recomputed from params at every call (params may change between calls). */
int s4d_recurrent_step(const strand_mixer *mixer, const real_t *params, s4d_recurrent_state *state,
                       const real_t *u_t, real_t *y_t);

#endif
