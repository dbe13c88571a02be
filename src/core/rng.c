/* Counter-based random numbers built on a 64-bit mixer. */
#include "core/rng.h"

#include <math.h>

uint64_t strand_rng_u64(uint64_t seed, uint64_t stream, uint64_t counter_hi, uint64_t counter_lo) {
    uint64_t h = strand_mix64(seed ^ strand_mix64(stream * 0xd1b54a32d192ed03ULL));
    h = strand_mix64(h ^ strand_mix64(counter_hi + 0x632be59bd9b4e019ULL));
    return strand_mix64(h ^ counter_lo);
}

double strand_rng_uniform(uint64_t seed, uint64_t stream, uint64_t counter_hi, uint64_t counter_lo) {
    return (double)(strand_rng_u64(seed, stream, counter_hi, counter_lo) >> 11) * 0x1.0p-53;
}

double strand_rng_normal(uint64_t seed, uint64_t stream, uint64_t counter_hi, uint64_t counter_lo) {
    uint64_t bits = strand_rng_u64(seed, stream, counter_hi, counter_lo);
    double u1 = ((double)(bits >> 11) + 0.5) * 0x1.0p-53; /* (0,1): log is finite */
    double u2 = (double)(strand_mix64(bits) >> 11) * 0x1.0p-53;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

uint64_t strand_rng_below(uint64_t n, uint64_t seed, uint64_t stream, uint64_t counter_hi,
                          uint64_t counter_lo) {
    unsigned __int128 product = (unsigned __int128)strand_rng_u64(seed, stream, counter_hi, counter_lo) * n;
    return (uint64_t)(product >> 64);
}
