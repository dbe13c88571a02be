/* Counter-based randomness: every random number is a pure function of (seed, stream, counter),
 * so results never depend on the number of ranks, the order of calls, or a resume. */
#ifndef STRAND_RNG_H
#define STRAND_RNG_H

#include <stdint.h>

/* A 64-bit mixing function (splitmix64 finaliser): a bijection with good avalanche. */
static inline uint64_t strand_mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* Streams keep independent uses of one seed apart. */
enum strand_rng_stream {
    STRAND_STREAM_INIT = 1,   /* parameter initialisation: counter = (param index, element) */
    STRAND_STREAM_WINDOW = 2, /* training window choice: counter = (step, window index) */
    STRAND_STREAM_RC = 3,     /* reverse-complement choice per window */
    STRAND_STREAM_SAMPLE = 4, /* generation: counter = position */
};

uint64_t strand_rng_u64(uint64_t seed, uint64_t stream, uint64_t counter_hi, uint64_t counter_lo);
/* Uniform in [0, 1) with 53 random bits. */
double strand_rng_uniform(uint64_t seed, uint64_t stream, uint64_t counter_hi, uint64_t counter_lo);
/* Standard normal (Box-Muller on two derived uniforms). */
double strand_rng_normal(uint64_t seed, uint64_t stream, uint64_t counter_hi, uint64_t counter_lo);
/* Uniform integer in [0, n) without modulo bias worth noticing (128-bit multiply). */
uint64_t strand_rng_below(uint64_t n, uint64_t seed, uint64_t stream, uint64_t counter_hi,
                          uint64_t counter_lo);

#endif
