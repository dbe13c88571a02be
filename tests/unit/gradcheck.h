/* Central finite-difference gradient checker for strand's tests.
 *
 * Usage: the caller owns a parameter (or input) array x of n reals and a loss function that
 * recomputes a scalar loss from the current contents of x, typically by running the forward pass
 * and projecting its output onto a fixed random array r:  loss = sum(out * r)  (gradcheck_project),
 * so that the analytic backward is run with dout = r. gradcheck_run() perturbs each checked x[i]
 * by +-h, with h = eps * max(1, |x[i]|), and compares
 *     numeric[i] = (loss(x + h e_i) - loss(x - h e_i)) / (x+ - x-)
 * with analytic[i]. The denominator uses the stored (rounded) perturbed values, which matters in
 * float builds. x is restored bit-exactly after each element.
 *
 * Metrics over the checked indices, with scale = max_j max(|a_j|, |n_j|) (the largest gradient):
 *   max_rel  = max_i |a_i - n_i| / max(|a_i|, |n_i|, floor * scale)   (worst index in `worst`)
 *   norm_rel = ||a - n||_2 / max(||a||_2, ||n||_2)
 * Elements at least `floor` times the largest gradient are held to a relative error; smaller ones
 * to an absolute error relative to floor * scale. Without a floor, gradients that are ~0 (tails of
 * GELU, sums that cancel) compare rounding noise with rounding noise. floor = 0 gives a plain
 * per-element relative error.
 *
 * With a distributed loss (collective forward), call gradcheck_run on every rank with the same
 * n and max_checks: the checked indices and the order of loss() calls are deterministic.
 *
 * Like test_util.h, this header holds static functions and is for tests only. */
#ifndef STRAND_GRADCHECK_H
#define STRAND_GRADCHECK_H

#include "strand/common.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Defaults per build for (eps, floor, tol). Double: measured layer errors are ~1e-7 against a
 * 1e-6 tolerance. Float: a larger step balances truncation (~eps^2) against rounding
 * (~1e-7 / eps); measured errors are ~1e-3, and 1% errors in a backward still fail. */
#ifdef STRAND_REAL_DOUBLE
#define GRADCHECK_EPS 1e-5
#define GRADCHECK_FLOOR 1e-3
#define GRADCHECK_TOL 1e-6
#else
#define GRADCHECK_EPS 1e-2
#define GRADCHECK_FLOOR 1e-2
#define GRADCHECK_TOL 1e-2
#endif

/* Returns the scalar loss for the current contents of the checked array(s). */
typedef double (*gradcheck_loss_fn)(void *ctx);

typedef struct gradcheck_result {
    double max_rel;        /* max per-element relative error (see above) */
    double norm_rel;       /* norm-wise relative error */
    int64_t worst;         /* index of max_rel, -1 when nothing was checked */
    double worst_analytic; /* analytic and numeric gradient at `worst` */
    double worst_numeric;
    double max_abs_grad; /* max |analytic| over the checked indices */
    int64_t checked;     /* number of elements compared */
} gradcheck_result;

/* Deterministic xorshift64* generator so tests do not depend on libc rand(). */
static inline uint64_t gradcheck_rng_next(uint64_t *state) {
    uint64_t x = *state ? *state : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [lo, hi). */
static inline double gradcheck_uniform(uint64_t *state, double lo, double hi) {
    return lo + (hi - lo) * (double)(gradcheck_rng_next(state) >> 11) * 0x1.0p-53;
}

static inline void gradcheck_fill(real_t *x, int64_t n, double lo, double hi, uint64_t *state) {
    for (int64_t i = 0; i < n; i++)
        x[i] = (real_t)gradcheck_uniform(state, lo, hi);
}

/* sum_i out[i] * r[i]: the scalar loss whose gradient wrt out is r. Compensated (Neumaier)
 * summation in double, so the rounding of a long sum does not swamp the small change that one
 * perturbed element makes. The product out[i] * r[i] is exact in double for float builds. */
static inline double gradcheck_project(const real_t *out, const real_t *r, int64_t n) {
    double s = 0.0, comp = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double term = (double)out[i] * (double)r[i];
        double t = s + term;
        comp += fabs(s) >= fabs(term) ? (s - t) + term : (term - t) + s;
        s = t;
    }
    return s + comp;
}

/* Compare analytic (n) with central differences of loss() wrt x (n). When max_checks > 0 and
 * n > max_checks, only max_checks evenly spaced indices are checked (whole-model checks).
 * A failed allocation returns checked = 0, which gradcheck_ok() rejects. */
static inline gradcheck_result gradcheck_run(real_t *x, int64_t n, const real_t *analytic,
                                             gradcheck_loss_fn loss, void *ctx, double eps, double floor_rel,
                                             int64_t max_checks) {
    gradcheck_result res = {0.0, 0.0, -1, 0.0, 0.0, 0.0, 0};
    const int64_t count = (max_checks > 0 && n > max_checks) ? max_checks : n;
    double *numeric = malloc((size_t)(count > 0 ? count : 1) * sizeof(double));
    if (!numeric) return res;
#define GRADCHECK_INDEX(k) (count == n ? (k) : (int64_t)((double)(k) * (double)n / (double)count))
    double scale = 0.0;
    for (int64_t k = 0; k < count; k++) {
        const int64_t i = GRADCHECK_INDEX(k);
        const real_t orig = x[i];
        const double h = eps * fmax(1.0, fabs((double)orig));
        const real_t xp = (real_t)((double)orig + h), xm = (real_t)((double)orig - h);
        x[i] = xp;
        const double lp = loss(ctx);
        x[i] = xm;
        const double lm = loss(ctx);
        x[i] = orig;
        numeric[k] = (lp - lm) / ((double)xp - (double)xm);
        scale = fmax(scale, fmax(fabs(numeric[k]), fabs((double)analytic[i])));
    }
    double diff2 = 0.0, a2 = 0.0, n2 = 0.0;
    for (int64_t k = 0; k < count; k++) {
        const int64_t i = GRADCHECK_INDEX(k);
        const double a = (double)analytic[i], num = numeric[k];
        const double err = fabs(a - num);
        const double denom = fmax(floor_rel * scale, fmax(fabs(a), fabs(num)));
        const double rel = err == 0.0 ? 0.0 : err / denom;
        /* The first NaN sticks as the worst element; otherwise track the maximum. */
        if (!isnan(res.max_rel) && (res.worst < 0 || isnan(rel) || rel > res.max_rel)) {
            res.max_rel = rel;
            res.worst = i;
            res.worst_analytic = a;
            res.worst_numeric = num;
        }
        res.max_abs_grad = fmax(res.max_abs_grad, fabs(a));
        diff2 += err * err;
        a2 += a * a;
        n2 += num * num;
    }
#undef GRADCHECK_INDEX
    free(numeric);
    res.checked = count;
    const double norm = sqrt(fmax(a2, n2));
    res.norm_rel = diff2 == 0.0 ? 0.0 : sqrt(diff2) / norm;
    return res;
}

/* True when both metrics are below tol (NaN fails). */
static inline int gradcheck_ok(gradcheck_result res, double tol) {
    return res.checked > 0 && res.max_rel < tol && res.norm_rel < tol;
}

static inline void gradcheck_print(FILE *f, const char *name, gradcheck_result res) {
    fprintf(f, "  %-28s max_rel %.3e (i=%lld: analytic %.10g numeric %.10g)  norm_rel %.3e  n=%lld\n", name,
            res.max_rel, (long long)res.worst, res.worst_analytic, res.worst_numeric, res.norm_rel,
            (long long)res.checked);
}

#endif
