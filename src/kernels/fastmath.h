/* Private to the library: branch-free exp, tanh, sin and cos for float builds. libm's expf, tanhf
 * and sin are scalar calls; these vectorise in elementwise loops (GELU, SwiGLU, attention score
 * tiles, the hyena filter's sines) with errors of a few float ulp for exp, below 2e-7 absolute for
 * tanh, and below 2e-7 absolute for sin and cos on |x| <= STRAND_SINCOS_MAX (tests/unit/
 * test_fastmath.c checks each bound against libm in double). Double builds call libm so the
 * finite-difference checks run against the exact functions. strand_exp16 is strand_exp on 16
 * AVX-512 lanes, for kernels written with intrinsics (the attention softmax rows). */
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
static inline void strand_sincos(double x, double *sin_x, double *cos_x) {
    *sin_x = sin(x);
    *cos_x = cos(x);
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

/* Cephes sinf/cosf polynomials after x = j pi/4 + r, |r| <= pi/4, with pi/4 split in three parts
 * (Cody-Waite), so r keeps float accuracy while j pi/4 is exact: |x| <= STRAND_SINCOS_MAX. Past it
 * the reduction loses bits; callers check max |x| and redo such elements with libm. */
static inline void strand_sincos(float x, float *sin_x, float *cos_x) {
    const float ax = x < 0 ? -x : x;
    int32_t j = (int32_t)(ax * 1.27323954473516f); /* 4/pi */
    j = (j + 1) & ~1;                              /* even: r in [-pi/4, pi/4] */
    const float y = (float)j;
    const float r = ((ax - y * 0.78515625f) - y * 2.4187564849853515625e-4f) - y * 3.77489497744594108e-8f;
    const float z = r * r;
    const float s = ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f) * z * r + r;
    const float c =
        ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f) * z * z - 0.5f * z +
        1.0f;
    /* octant j (even): sin x = +-s or +-c by j mod 8 in {0, 2, 4, 6}; cos likewise, shifted by 2 */
    const int swap = (j & 2) != 0;
    const float sin_sign = ((j & 4) != 0) != (x < 0) ? -1.0f : 1.0f;
    const float cos_sign = (((j + 2) & 4) != 0) ? -1.0f : 1.0f;
    *sin_x = sin_sign * (swap ? c : s);
    *cos_x = cos_sign * (swap ? s : c);
}
#endif
#define STRAND_SINCOS_MAX 8192.0

#if defined(__AVX512F__) && !defined(STRAND_REAL_DOUBLE)
#include <immintrin.h>
/* strand_exp on 16 lanes: the same Cephes polynomial after x = n ln2 + r, with 2^n applied by
 * vscalefps instead of building its bits; exactly 0 below -87 (masked scores are -inf). */
static inline __m512 strand_exp16(__m512 x) {
    const __m512 xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
    const __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_NLT_UQ);
    return _mm512_maskz_scalef_ps(live, p, n);
}
#endif

#endif
