/* Private to the library: branch-free exp and tanh for float builds. libm's expf and tanhf are
 * scalar calls; these vectorise in elementwise loops (GELU, SwiGLU, attention score tiles) with
 * errors of a few float ulp for exp and below 2e-7 absolute for tanh. Double builds call libm so
 * the finite-difference checks run against the exact functions. */
#ifndef STRAND_FASTMATH_H
#define STRAND_FASTMATH_H

#include "strand/common.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef STRAND_REAL_DOUBLE
static inline double strand_exp(double x) {
    return exp(x);
}
static inline double strand_tanh(double x) {
    return tanh(x);
}
#else
/* Cephes expf polynomial after x = n ln2 + r, |r| <= ln2/2; exactly 0 below -87 (and for -inf). */
static inline float strand_exp(float x) {
    const float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    const float t = xc * 1.44269504088896341f + shifter;
    const float n = t - shifter;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return x < -87.0f ? 0.0f : p * two_n;
}

static inline float strand_tanh(float x) {
    x = x < -9.0f ? -9.0f : x; /* tanh is +-1 in float beyond |x| = 9 */
    x = x > 9.0f ? 9.0f : x;
    const float e = strand_exp(2.0f * x);
    return (e - 1.0f) / (e + 1.0f);
}
#endif

#endif
