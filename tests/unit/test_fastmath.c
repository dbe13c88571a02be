/* fastmath.h against libm in double: the error bounds its header states, over dense grids that
 * cover every octant of the sine reduction up to STRAND_SINCOS_MAX, exp's whole range (and its
 * clamps), and tanh's saturation. In the double build the functions are libm's own: the checks
 * still run (and pass trivially tight). */
#include "kernels/fastmath.h"

#include "test_util.h"

#include <math.h>
#include <stdio.h>

#ifdef STRAND_REAL_DOUBLE
#define SINCOS_TOL 1e-15
#define TANH_TOL 1e-15
#define EXP_ULP 1e-15
#else
#define SINCOS_TOL 2e-7 /* absolute, as the header states */
#define TANH_TOL 2e-7
#define EXP_ULP 4.0 * 5.96e-8 /* relative: a few float ulp */
#endif

static void check_sincos(void) {
    double worst = 0, worst_x = 0;
    const int64_t n = 4000000;
    for (int64_t i = 0; i <= n; i++) {
        /* -MAX..MAX in steps that are not multiples of pi/4, plus the small range densely */
        const double x = i % 2 ? -STRAND_SINCOS_MAX + 2.0 * STRAND_SINCOS_MAX * (double)i / (double)n
                               : -8.0 + 16.0 * (double)i / (double)n;
        const real_t xr = (real_t)x;
        real_t s, c;
        strand_sincos(xr, &s, &c);
        const double es = fabs((double)s - sin((double)xr)), ec = fabs((double)c - cos((double)xr));
        const double e = es > ec ? es : ec;
        if (e > worst) {
            worst = e;
            worst_x = (double)xr;
        }
    }
    /* exact multiples of pi/4 and the octant edges */
    for (int k = -64; k <= 64; k++) {
        const real_t xr = (real_t)(k * 0.78539816339744830962);
        real_t s, c;
        strand_sincos(xr, &s, &c);
        const double e = fmax(fabs((double)s - sin((double)xr)), fabs((double)c - cos((double)xr)));
        if (e > worst) {
            worst = e;
            worst_x = (double)xr;
        }
    }
    printf("sincos: worst absolute error %.3g at x = %.9g (bound %.3g)\n", worst, worst_x, SINCOS_TOL);
    CHECK_MSG(worst <= SINCOS_TOL, "sincos error %.3g at %.9g above %.3g", worst, worst_x, SINCOS_TOL);
}

static void check_exp(void) {
    double worst = 0, worst_x = 0;
    const int64_t n = 2000000;
    for (int64_t i = 0; i <= n; i++) {
        const real_t xr = (real_t)(-87.0 + 175.0 * (double)i / (double)n);
        const double ref = exp((double)xr), got = (double)strand_exp(xr);
        const double e = fabs(got - ref) / ref;
        if (e > worst) {
            worst = e;
            worst_x = (double)xr;
        }
    }
    printf("exp: worst relative error %.3g at x = %.9g (bound %.3g)\n", worst, worst_x, EXP_ULP);
    CHECK_MSG(worst <= EXP_ULP, "exp error %.3g at %.9g above %.3g", worst, worst_x, EXP_ULP);
#ifndef STRAND_REAL_DOUBLE
    CHECK(strand_exp(-100.0f) == 0.0f);
    CHECK(strand_exp(-INFINITY) == 0.0f);
#endif
#if defined(__AVX512F__) && !defined(STRAND_REAL_DOUBLE)
    /* The 16-lane version over the same grid, 16 points per call. */
    double worst16 = 0, worst16_x = 0;
    for (int64_t i = 0; i <= n; i += 16) {
        float x[16], y[16];
        for (int k = 0; k < 16; k++)
            x[k] = (float)(-87.0 + 175.0 * (double)(i + k < n ? i + k : n) / (double)n);
        _mm512_storeu_ps(y, strand_exp16(_mm512_loadu_ps(x)));
        for (int k = 0; k < 16; k++) {
            const double ref = exp((double)x[k]), e = fabs((double)y[k] - ref) / ref;
            if (e > worst16) {
                worst16 = e;
                worst16_x = (double)x[k];
            }
        }
    }
    printf("exp16: worst relative error %.3g at x = %.9g (bound %.3g)\n", worst16, worst16_x, EXP_ULP);
    CHECK_MSG(worst16 <= EXP_ULP, "exp16 error %.3g at %.9g above %.3g", worst16, worst16_x, EXP_ULP);
    float low[16];
    _mm512_storeu_ps(low, strand_exp16(_mm512_set_ps(-INFINITY, -100.0f, -87.5f, -1000.0f, -INFINITY, -88.0f,
                                                     -200.0f, -90.0f, -INFINITY, -100.0f, -87.5f, -1000.0f,
                                                     -INFINITY, -88.0f, -200.0f, -90.0f)));
    for (int k = 0; k < 16; k++)
        CHECK(low[k] == 0.0f);
#endif
}

static void check_tanh(void) {
    double worst = 0, worst_x = 0;
    const int64_t n = 2000000;
    for (int64_t i = 0; i <= n; i++) {
        const real_t xr = (real_t)(-20.0 + 40.0 * (double)i / (double)n);
        const double e = fabs((double)strand_tanh(xr) - tanh((double)xr));
        if (e > worst) {
            worst = e;
            worst_x = (double)xr;
        }
    }
    printf("tanh: worst absolute error %.3g at x = %.9g (bound %.3g)\n", worst, worst_x, TANH_TOL);
    CHECK_MSG(worst <= TANH_TOL, "tanh error %.3g at %.9g above %.3g", worst, worst_x, TANH_TOL);
}

int main(void) {
    check_sincos();
    check_exp();
    check_tanh();
    return test_finish("test_fastmath");
}
