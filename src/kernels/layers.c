/* Position-wise layers: hand-written forward and backward passes (llm.c style).
 *
 * Shapes are given as comments, e.g. // (T,C). Backward passes add into their gradients and skip
 * NULL ones. Reductions over T (bias and weight gradients, norm statistics, softmax sums) are
 * accumulated in double so that float builds do not lose precision on long shards. */
#include "kernels/layers.h"

#include "kernels/fastmath.h"

#include <cblas.h>
#include <limits.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <math.h>
#include <string.h>

#ifdef STRAND_REAL_DOUBLE
#define R_EXP exp
#define R_GEMM cblas_dgemm
#else
#define R_EXP expf
#define R_GEMM cblas_sgemm
#endif

/* Loops over fewer values than this stay on one thread (the fork costs more). */
enum { PARALLEL_MIN = 65536 };
/* Cross-entropy's total: at most CE_BLOCKS partial sums of at least CE_ROWS rows each. */
enum { CE_BLOCKS = 1024, CE_ROWS = 256 };
/* Channel-block width for the column reductions in linear_backward (dbias). */
enum { BIAS_BLOCK = 256 };
/* Stack scratch for the conv: transposed weights (K x block) and their gradient accumulators. */
enum { CONV_SCRATCH = 2048 };

// ----------------------------------------------------------------------------
// embedding

void embedding_forward(real_t *out, const strand_token_t *tokens, const real_t *wte, int64_t T, int C) {
    // out (T,C), tokens (T), wte (V,C)
#pragma omp parallel for schedule(static) if (T * C > PARALLEL_MIN)
    for (int64_t t = 0; t < T; t++) {
        memcpy(out + t * C, wte + (int64_t)tokens[t] * C, (size_t)C * sizeof(real_t));
    }
}

void embedding_backward(real_t *dwte, const real_t *dout, const strand_token_t *tokens, int64_t T, int C) {
    // dwte (V,C) scatter-add of dout (T,C): repeated tokens accumulate
    if (!dwte) return;
    for (int64_t t = 0; t < T; t++) {
        real_t *restrict dw = dwte + (int64_t)tokens[t] * C;
        const real_t *restrict g = dout + t * C;
        for (int c = 0; c < C; c++)
            dw[c] += g[c];
    }
}

// ----------------------------------------------------------------------------
// rmsnorm

void rmsnorm_forward(real_t *out, real_t *rstd, const real_t *in, const real_t *weight, int64_t T, int C,
                     real_t eps) {
    // out (T,C), rstd (T), in (T,C), weight (C)
#pragma omp parallel for schedule(static) if (T * C > PARALLEL_MIN)
    for (int64_t t = 0; t < T; t++) {
        const real_t *restrict x = in + t * C;
        real_t *restrict o = out + t * C;
        double ss = 0.0;
        for (int c = 0; c < C; c++)
            ss += (double)x[c] * x[c];
        real_t s = (real_t)(1.0 / sqrt(ss / C + (double)eps));
        for (int c = 0; c < C; c++)
            o[c] = x[c] * s * weight[c];
        rstd[t] = s;
    }
}

void rmsnorm_backward(real_t *dinp, real_t *dweight, const real_t *dout, const real_t *in,
                      const real_t *weight, const real_t *rstd, int64_t T, int C) {
    // y = x * s * w with s = (mean(x^2) + eps)^-1/2, so ds/dx_i = -s^3 x_i / C:
    // dx_i = s * w_i g_i - s^3 / C * x_i * sum_j(w_j g_j x_j);  dw_i = g_i x_i s
    // Rows in parallel for dx; dw sums over rows, in row order, in a pass of its own.
    if (dinp) {
#pragma omp parallel for schedule(static) if (T * C > PARALLEL_MIN)
        for (int64_t t = 0; t < T; t++) {
            const real_t *restrict x = in + t * C;
            const real_t *restrict g = dout + t * C;
            const real_t s = rstd[t];
            double dot = 0.0;
            for (int c = 0; c < C; c++)
                dot += (double)weight[c] * g[c] * x[c];
            const real_t coef = (real_t)((double)s * s * s * dot / C);
            real_t *restrict dx = dinp + t * C;
            for (int c = 0; c < C; c++)
                dx[c] += s * weight[c] * g[c] - coef * x[c];
        }
    }
    for (int64_t t = 0; t < T && dweight; t++) {
        const real_t *restrict x = in + t * C;
        const real_t *restrict g = dout + t * C;
        const real_t s = rstd[t];
        {
            real_t *restrict dw = dweight;
            for (int c = 0; c < C; c++)
                dw[c] += g[c] * x[c] * s;
        }
    }
}

// ----------------------------------------------------------------------------
// layernorm

void layernorm_forward(real_t *out, real_t *mean, real_t *rstd, const real_t *in, const real_t *weight,
                       const real_t *bias, int64_t T, int C, real_t eps) {
    // out (T,C), mean (T), rstd (T), in (T,C), weight (C), bias (C)
#pragma omp parallel for schedule(static) if (T * C > PARALLEL_MIN)
    for (int64_t t = 0; t < T; t++) {
        const real_t *restrict x = in + t * C;
        real_t *restrict o = out + t * C;
        double m = 0.0;
        for (int c = 0; c < C; c++)
            m += x[c];
        m /= C;
        double v = 0.0; // two-pass variance: no cancellation
        for (int c = 0; c < C; c++) {
            double d = x[c] - m;
            v += d * d;
        }
        v /= C;
        const real_t mr = (real_t)m;
        const real_t s = (real_t)(1.0 / sqrt(v + (double)eps));
        for (int c = 0; c < C; c++)
            o[c] = (x[c] - mr) * s * weight[c] + bias[c];
        mean[t] = mr;
        rstd[t] = s;
    }
}

void layernorm_backward(real_t *dinp, real_t *dweight, real_t *dbias, const real_t *dout, const real_t *in,
                        const real_t *weight, const real_t *mean, const real_t *rstd, int64_t T, int C) {
    // n = (x - mean) * s; y = n * w + b
    // dx = s * (dn - mean(dn) - n * mean(dn * n)) with dn = w * g
    // Rows in parallel for dx; dw and db sum over rows, in row order, in a pass of their own.
#pragma omp parallel for schedule(static) if (dinp && T * C > PARALLEL_MIN)
    for (int64_t t = 0; t < T; t++) {
        const real_t *restrict x = in + t * C;
        const real_t *restrict g = dout + t * C;
        const real_t m = mean[t], s = rstd[t];
        if (dinp) {
            double sum_dn = 0.0, sum_dn_n = 0.0;
            for (int c = 0; c < C; c++) {
                double dn = (double)weight[c] * g[c];
                sum_dn += dn;
                sum_dn_n += dn * ((double)(x[c] - m) * s);
            }
            const real_t mdn = (real_t)(sum_dn / C), mdnn = (real_t)(sum_dn_n / C);
            real_t *restrict dx = dinp + t * C;
            for (int c = 0; c < C; c++) {
                real_t n = (x[c] - m) * s;
                dx[c] += s * (weight[c] * g[c] - mdn - n * mdnn);
            }
        }
    }
    for (int64_t t = 0; t < T && (dweight || dbias); t++) {
        const real_t *restrict x = in + t * C;
        const real_t *restrict g = dout + t * C;
        const real_t m = mean[t], s = rstd[t];
        if (dweight) {
            real_t *restrict dw = dweight;
            for (int c = 0; c < C; c++)
                dw[c] += g[c] * (x[c] - m) * s;
        }
        if (dbias) {
            real_t *restrict db = dbias;
            for (int c = 0; c < C; c++)
                db[c] += g[c];
        }
    }
}

// ----------------------------------------------------------------------------
// linear (BLAS)

/* GEMMs smaller than this many multiply-adds run as one call on the calling thread. */
enum { GEMM_PARALLEL_MIN = 1 << 22 };

/* Part `part` of `parts` of n items, [*lo, *hi), in whole runs of `align` items (the last part
 * takes what is left, and a part may be empty). */
static void part_span(int64_t n, int parts, int part, int align, int64_t *lo, int64_t *hi) {
    const int64_t share = ((n + parts - 1) / parts + align - 1) / align * align;
    *lo = part * share < n ? part * share : n;
    *hi = *lo + share < n ? *lo + share : n;
}

/* C (M,N) = alpha op(A) op(B) + beta C (row-major; op(A) is (M,K)) with the rows of C cut into
 * one block per OpenMP thread, each block one BLAS call on its thread. OpenBLAS itself runs on one
 * thread (strand_threads_set): its own pool would spin against OpenMP's on the same cores. The
 * blocks are whole multiples of 32 rows; a row of C is computed the same way in any block. */
static void gemm_rows(int trans_a, int trans_b, int64_t M, int N, int K, real_t alpha, const real_t *A,
                      int lda, const real_t *B, int ldb, real_t beta, real_t *C, int ldc) {
    const enum CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans,
                               tb = trans_b ? CblasTrans : CblasNoTrans;
    int parts = 1;
#ifdef _OPENMP
    if ((double)M * N * K > GEMM_PARALLEL_MIN && !omp_in_parallel()) parts = omp_get_max_threads();
#endif
#pragma omp parallel for schedule(static) num_threads(parts) if (parts > 1)
    for (int p = 0; p < parts; p++) {
        int64_t r0, r1;
        part_span(M, parts, p, 32, &r0, &r1);
        if (r1 > r0)
            R_GEMM(CblasRowMajor, ta, tb, (int)(r1 - r0), N, K, alpha, trans_a ? A + r0 : A + r0 * lda, lda,
                   B, ldb, beta, C + r0 * ldc, ldc);
    }
}

void linear_forward(real_t *out, const real_t *in, const real_t *weight, const real_t *bias, int64_t T, int C,
                    int OC) {
    // out (T,OC) = in (T,C) @ weight^T (C,OC) + bias (OC)
    STRAND_ASSERT(T >= 0 && T <= INT_MAX); // BLAS dimensions are int
    if (T == 0 || OC == 0) return;
    real_t beta = 0;
    if (bias) {
#pragma omp parallel for schedule(static) if (T * OC > PARALLEL_MIN)
        for (int64_t t = 0; t < T; t++)
            memcpy(out + t * OC, bias, (size_t)OC * sizeof(real_t));
        beta = 1;
    }
    gemm_rows(0, 1, T, OC, C, 1, in, C, weight, C, beta, out, OC);
}

static void linear_backward_beta(real_t *dinp, real_t beta, real_t *dweight, real_t *dbias,
                                 const real_t *dout, const real_t *in, const real_t *weight, int64_t T, int C,
                                 int OC) {
    STRAND_ASSERT(T >= 0 && T <= INT_MAX);
    if (T == 0) return;
    // dinp (T,C) = beta dinp + dout (T,OC) @ weight (OC,C)
    if (dinp) gemm_rows(0, 0, T, C, OC, 1, dout, OC, weight, C, beta, dinp, C);
    // dweight (OC,C) += dout^T (OC,T) @ in (T,C)
    if (dweight) gemm_rows(1, 0, OC, C, (int)T, 1, dout, OC, in, C, 1, dweight, C);
    // dbias (OC) += column sums of dout, in double over blocks of columns; threads take whole
    // columns (in runs of 16, a cache line of floats), so every column sums its rows in order
    if (dbias) {
#pragma omp parallel if (T * OC > PARALLEL_MIN)
        {
            int64_t lo = 0, hi = OC;
#ifdef _OPENMP
            part_span(OC, omp_get_num_threads(), omp_get_thread_num(), 16, &lo, &hi);
#endif
            double acc[BIAS_BLOCK];
            for (int64_t o0 = lo; o0 < hi; o0 += BIAS_BLOCK) {
                const int n = (int)(hi - o0 < BIAS_BLOCK ? hi - o0 : BIAS_BLOCK);
                for (int i = 0; i < n; i++)
                    acc[i] = 0.0;
                for (int64_t t = 0; t < T; t++) {
                    const real_t *restrict g = dout + t * OC + o0;
                    for (int i = 0; i < n; i++)
                        acc[i] += g[i];
                }
                for (int i = 0; i < n; i++)
                    dbias[o0 + i] += (real_t)acc[i];
            }
        }
    }
}

void linear_backward(real_t *dinp, real_t *dweight, real_t *dbias, const real_t *dout, const real_t *in,
                     const real_t *weight, int64_t T, int C, int OC) {
    linear_backward_beta(dinp, 1, dweight, dbias, dout, in, weight, T, C, OC);
}

void linear_backward_assign(real_t *dinp, real_t *dweight, real_t *dbias, const real_t *dout,
                            const real_t *in, const real_t *weight, int64_t T, int C, int OC) {
    linear_backward_beta(dinp, 0, dweight, dbias, dout, in, weight, T, C, OC);
}

// ----------------------------------------------------------------------------
// GELU (tanh approximation, as GPT-2)

#define GELU_SCALE 0.7978845608028654 // sqrt(2/pi)
#define GELU_CUBIC 0.044715

void gelu_forward(real_t *out, const real_t *in, int64_t N) {
    // out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    const real_t *restrict x = in;
    real_t *restrict o = out;
#pragma omp parallel for schedule(static) if (N > PARALLEL_MIN)
    for (int64_t i = 0; i < N; i++) {
        real_t v = x[i];
        real_t u = (real_t)GELU_SCALE * (v + (real_t)GELU_CUBIC * v * v * v);
        o[i] = (real_t)0.5 * v * (1 + strand_tanh(u));
    }
}

void gelu_backward(real_t *dinp, const real_t *dout, const real_t *in, int64_t N) {
    if (!dinp) return;
    const real_t *restrict x = in;
    const real_t *restrict g = dout;
    real_t *restrict dx = dinp;
#pragma omp parallel for schedule(static) if (N > PARALLEL_MIN)
    for (int64_t i = 0; i < N; i++) {
        real_t v = x[i];
        real_t u = (real_t)GELU_SCALE * (v + (real_t)GELU_CUBIC * v * v * v);
        real_t th = strand_tanh(u);
        real_t sech2 = 1 - th * th;
        real_t du = (real_t)GELU_SCALE * (1 + 3 * (real_t)GELU_CUBIC * v * v);
        dx[i] += g[i] * ((real_t)0.5 * (1 + th) + (real_t)0.5 * v * sech2 * du);
    }
}

// ----------------------------------------------------------------------------
// SwiGLU

void swiglu_forward(real_t *out, const real_t *in, int64_t T, int H) {
    // out (T,H) = silu(a) * b, in (T,2H) rows [a | b]
#pragma omp parallel for schedule(static) if (T * H > PARALLEL_MIN)
    for (int64_t t = 0; t < T; t++) {
        const real_t *restrict a = in + t * 2 * H;
        const real_t *restrict b = a + H;
        real_t *restrict o = out + t * H;
        for (int h = 0; h < H; h++) {
            real_t sig = 1 / (1 + strand_exp(-a[h])); // exp overflow gives sig = 0, not NaN
            o[h] = a[h] * sig * b[h];
        }
    }
}

void swiglu_backward(real_t *dinp, const real_t *dout, const real_t *in, int64_t T, int H) {
    // d silu(a)/da = sig(a) (1 + a (1 - sig(a)))
    if (!dinp) return;
#pragma omp parallel for schedule(static) if (T * H > PARALLEL_MIN)
    for (int64_t t = 0; t < T; t++) {
        const real_t *restrict a = in + t * 2 * H;
        const real_t *restrict b = a + H;
        const real_t *restrict g = dout + t * H;
        real_t *restrict da = dinp + t * 2 * H;
        real_t *restrict db = da + H;
        for (int h = 0; h < H; h++) {
            real_t sig = 1 / (1 + strand_exp(-a[h]));
            da[h] += g[h] * b[h] * sig * (1 + a[h] * (1 - sig));
            db[h] += g[h] * a[h] * sig;
        }
    }
}

// ----------------------------------------------------------------------------
// causal depthwise conv
//
// Position p < 0 lives in halo row K-1+p. Channels are processed in blocks whose weights are
// transposed to (K, block) on the stack, so every inner loop runs over contiguous channels.

/* Channels per block: within the stack scratch, and split across the rank's threads (in
 * multiples of 16). Channels are independent, so the block size never changes a result. */
static inline int conv_block(int C, int K) {
    STRAND_ASSERT(K >= 1 && K <= CONV_SCRATCH);
    int cb = CONV_SCRATCH / K;
    const int threads = strand_threads();
    if (threads > 1) {
        const int share = ((C + threads - 1) / threads + 15) / 16 * 16;
        cb = share < cb ? share : cb;
    }
    return cb < C ? cb : C;
}

static inline const real_t *conv_row(const real_t *in, const real_t *halo, int64_t p, int C, int K) {
    return p >= 0 ? in + p * C : halo + (K - 1 + p) * C;
}

void conv1d_causal_forward(real_t *out, const real_t *halo, const real_t *in, const real_t *weight,
                           const real_t *bias, int64_t T, int C, int K) {
    // out (T,C), halo (K-1,C), in (T,C), weight (C,K), bias (C) or NULL
    if (C == 0) return;
    const int cb_max = conv_block(C, K), n_blocks = (C + cb_max - 1) / cb_max;
#pragma omp parallel for schedule(static) if (n_blocks > 1 && T * C > 65536)
    for (int bi = 0; bi < n_blocks; bi++) {
        const int c0 = bi * cb_max;
        real_t wt[CONV_SCRATCH]; // (K, cb)
        const int cb = C - c0 < cb_max ? C - c0 : cb_max;
        for (int j = 0; j < K; j++)
            for (int i = 0; i < cb; i++)
                wt[j * cb + i] = weight[(int64_t)(c0 + i) * K + j];
        for (int64_t t = 0; t < T; t++) {
            real_t *restrict o = out + t * C + c0;
            if (bias) {
                for (int i = 0; i < cb; i++)
                    o[i] = bias[c0 + i];
            } else {
                for (int i = 0; i < cb; i++)
                    o[i] = 0;
            }
            for (int j = 0; j < K; j++) {
                const real_t *restrict x = conv_row(in, halo, t - j, C, K) + c0;
                const real_t *restrict w = wt + j * cb;
                for (int i = 0; i < cb; i++)
                    o[i] += w[i] * x[i];
            }
        }
    }
}

/* assign: row p of dinp is first reached at t = p with j = 0 (t ascends), so that term assigns. */
static void conv1d_backward_rows(real_t *dinp, int assign, real_t *dhalo, real_t *dweight, real_t *dbias,
                                 const real_t *dout, const real_t *halo, const real_t *in,
                                 const real_t *weight, int64_t T, int C, int K) {
    // out[t] depends on x[t-j]: dx[t-j] += w_j * g[t]; dw_j += g[t] * x[t-j]; db += g[t]
    if (C == 0) return;
    const int cb_max = conv_block(C, K), n_blocks = (C + cb_max - 1) / cb_max;
#pragma omp parallel for schedule(static) if (n_blocks > 1 && T * C > 65536)
    for (int bi = 0; bi < n_blocks; bi++) {
        const int c0 = bi * cb_max;
        real_t wt[CONV_SCRATCH];  // (K, cb) transposed weights
        double dwt[CONV_SCRATCH]; // (K, cb) weight-gradient accumulators
        double dbt[CONV_SCRATCH]; // (cb)
        const int cb = C - c0 < cb_max ? C - c0 : cb_max;
        for (int j = 0; j < K; j++) {
            for (int i = 0; i < cb; i++) {
                wt[j * cb + i] = weight[(int64_t)(c0 + i) * K + j];
                dwt[j * cb + i] = 0.0;
            }
        }
        for (int i = 0; i < cb; i++)
            dbt[i] = 0.0;
        for (int64_t t = 0; t < T; t++) {
            const real_t *restrict g = dout + t * C + c0;
            if (dbias) {
                for (int i = 0; i < cb; i++)
                    dbt[i] += g[i];
            }
            for (int j = 0; j < K; j++) {
                const int64_t p = t - j;
                if (dweight) {
                    const real_t *restrict x = conv_row(in, halo, p, C, K) + c0;
                    double *restrict dw = dwt + j * cb;
                    for (int i = 0; i < cb; i++)
                        dw[i] += (double)g[i] * x[i];
                }
                real_t *dxrow =
                    p >= 0 ? (dinp ? dinp + p * C : NULL) : (dhalo ? dhalo + (K - 1 + p) * C : NULL);
                if (dxrow) {
                    real_t *restrict dx = dxrow + c0;
                    const real_t *restrict w = wt + j * cb;
                    if (assign && j == 0)
                        for (int i = 0; i < cb; i++)
                            dx[i] = w[i] * g[i];
                    else
                        for (int i = 0; i < cb; i++)
                            dx[i] += w[i] * g[i];
                }
            }
        }
        if (dweight) {
            for (int j = 0; j < K; j++)
                for (int i = 0; i < cb; i++)
                    dweight[(int64_t)(c0 + i) * K + j] += (real_t)dwt[j * cb + i];
        }
        if (dbias) {
            for (int i = 0; i < cb; i++)
                dbias[c0 + i] += (real_t)dbt[i];
        }
    }
}

void conv1d_causal_backward(real_t *dinp, real_t *dhalo, real_t *dweight, real_t *dbias, const real_t *dout,
                            const real_t *halo, const real_t *in, const real_t *weight, int64_t T, int C,
                            int K) {
    conv1d_backward_rows(dinp, 0, dhalo, dweight, dbias, dout, halo, in, weight, T, C, K);
}

void conv1d_causal_backward_assign(real_t *dinp, real_t *dhalo, real_t *dweight, real_t *dbias,
                                   const real_t *dout, const real_t *halo, const real_t *in,
                                   const real_t *weight, int64_t T, int C, int K) {
    conv1d_backward_rows(dinp, 1, dhalo, dweight, dbias, dout, halo, in, weight, T, C, K);
}

// ----------------------------------------------------------------------------
// softmax cross-entropy

double crossentropy_forward(real_t *losses, real_t *probs, const real_t *logits,
                            const strand_token_t *targets, const real_t *weights, int64_t T, int V) {
    // losses (T), probs (T,V), logits (T,V), targets (T), weights (T) or NULL
    // The total sums fixed blocks of rows (their partials in block order): any thread count
    // gives the same bits.
    const int64_t rows = T / CE_BLOCKS + 1 > CE_ROWS ? T / CE_BLOCKS + 1 : CE_ROWS;
    const int64_t blocks = (T + rows - 1) / rows;
    double partial[CE_BLOCKS + 1];
#pragma omp parallel for schedule(static) if (T * V > PARALLEL_MIN)
    for (int64_t b = 0; b < blocks; b++) {
        double block_total = 0.0;
        const int64_t t_end = (b + 1) * rows < T ? (b + 1) * rows : T;
        for (int64_t t = b * rows; t < t_end; t++) {
            const real_t *restrict l = logits + t * V;
            real_t *restrict p = probs + t * V;
            STRAND_ASSERT((int64_t)targets[t] < (int64_t)V);
            real_t maxv = l[0];
            for (int v = 1; v < V; v++)
                maxv = l[v] > maxv ? l[v] : maxv;
            double sum = 0.0;
            for (int v = 0; v < V; v++) {
                real_t e = R_EXP(l[v] - maxv);
                p[v] = e;
                sum += e;
            }
            const real_t inv = (real_t)(1.0 / sum);
            for (int v = 0; v < V; v++)
                p[v] *= inv;
            // -log softmax[target] = log(sum) - (l[target] - max), without log(0) for tiny probs
            double loss = log(sum) - ((double)l[targets[t]] - (double)maxv);
            losses[t] = (real_t)loss;
            block_total += weights ? (double)weights[t] * loss : loss;
        }
        partial[b] = block_total;
    }
    double total = 0.0;
    for (int64_t b = 0; b < blocks; b++)
        total += partial[b];
    return total;
}

void crossentropy_backward(real_t *dlogits, const real_t *probs, const strand_token_t *targets,
                           const real_t *weights, int64_t T, int V, real_t scale) {
    if (!dlogits) return;
#pragma omp parallel for schedule(static) if (T * V > PARALLEL_MIN)
    for (int64_t t = 0; t < T; t++) {
        const real_t *restrict p = probs + t * V;
        real_t *restrict d = dlogits + t * V;
        const real_t s = weights ? scale * weights[t] : scale;
        if (s == 0) continue; /* a masked position: nothing to add */
        for (int v = 0; v < V; v++)
            d[v] += s * p[v];
        d[targets[t]] -= s;
    }
}
