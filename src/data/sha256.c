/* SHA-256 after FIPS 180-4 section 6.2: a portable implementation, and on x86-64 CPUs with the
 * SHA extensions (chosen at run time by CPUID) one with the sha256rnds2 instructions, several
 * times faster, so that hashing the input is not the bottleneck of strand prep. */
#include "data/sha256.h"

#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define STRAND_SHA256_X86 1
#include <cpuid.h>
#include <stdatomic.h>
#include <immintrin.h>
#endif

static const uint32_t round_constants[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline uint32_t rotr(uint32_t x, int n) {
    return (x >> n) | (x << (32 - n));
}

static inline uint32_t load_be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static void compress_blocks(uint32_t state[8], const uint8_t *data, size_t n_blocks) {
    for (size_t b = 0; b < n_blocks; b++, data += 64) {
        uint32_t w[64];
        for (int i = 0; i < 16; i++)
            w[i] = load_be32(data + 4 * i);
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = state[0], bb = state[1], c = state[2], d = state[3];
        uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
        for (int i = 0; i < 64; i++) {
            uint32_t s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
            uint32_t ch = (e & f) ^ (~e & g);
            uint32_t t1 = h + s1 + ch + round_constants[i] + w[i];
            uint32_t s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
            uint32_t maj = (a & bb) ^ (a & c) ^ (bb & c);
            uint32_t t2 = s0 + maj;
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = bb;
            bb = a;
            a = t1 + t2;
        }
        state[0] += a;
        state[1] += bb;
        state[2] += c;
        state[3] += d;
        state[4] += e;
        state[5] += f;
        state[6] += g;
        state[7] += h;
    }
}

#ifdef STRAND_SHA256_X86
/* The 64 rounds in 16 groups of four with the SHA extensions; the message schedule in a ring of
 * four vectors (W[g..g+3] of group g). State kept as ABEF and CDGH, the instructions' order. */
__attribute__((target("sha,sse4.1"))) static void
compress_blocks_shani(uint32_t state[8], const uint8_t *data, size_t n_blocks) {
    const __m128i byte_swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&state[0]), 0xB1);    /* CDAB */
    __m128i state1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&state[4]), 0x1B); /* EFGH */
    __m128i state0 = _mm_alignr_epi8(tmp, state1, 8);                                      /* ABEF */
    state1 = _mm_blend_epi16(state1, tmp, 0xF0);                                           /* CDGH */
    for (size_t b = 0; b < n_blocks; b++, data += 64) {
        const __m128i abef = state0, cdgh = state1;
        __m128i w[4];
        for (int i = 0; i < 4; i++)
            w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 16 * i)), byte_swap);
        for (int g = 0; g < 16; g++) {
            __m128i msg = _mm_add_epi32(w[g & 3], _mm_loadu_si128((const __m128i *)&round_constants[4 * g]));
            state1 = _mm_sha256rnds2_epu32(state1, state0, msg);
            state0 = _mm_sha256rnds2_epu32(state0, state1, _mm_shuffle_epi32(msg, 0x0E));
            if (g < 12) {
                /* W[g+4..g+7] from W[g..g+3], W[g+4..], W[g+8..] and W[g+12..g+15] (groups g..g+3). */
                __m128i next = _mm_add_epi32(_mm_sha256msg1_epu32(w[g & 3], w[(g + 1) & 3]),
                                             _mm_alignr_epi8(w[(g + 3) & 3], w[(g + 2) & 3], 4));
                w[g & 3] = _mm_sha256msg2_epu32(next, w[(g + 3) & 3]);
            }
        }
        state0 = _mm_add_epi32(state0, abef);
        state1 = _mm_add_epi32(state1, cdgh);
    }
    tmp = _mm_shuffle_epi32(state0, 0x1B);       /* FEBA */
    state1 = _mm_shuffle_epi32(state1, 0xB1);    /* DCHG */
    state0 = _mm_blend_epi16(tmp, state1, 0xF0); /* DCBA */
    state1 = _mm_alignr_epi8(state1, tmp, 8);    /* HGFE */
    _mm_storeu_si128((__m128i *)&state[0], state0);
    _mm_storeu_si128((__m128i *)&state[4], state1);
}

/* CPUID leaf 7: EBX bit 29 is SHA; the code above also needs SSSE3 and SSE4.1 (leaf 1, ECX bits 9
 * and 19). */
static int cpu_has_sha(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 9)) || !(c & (1u << 19))) return 0;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b >> 29) & 1;
}
#endif

static void compress_any(uint32_t state[8], const uint8_t *data, size_t n_blocks) {
    if (n_blocks == 0) return;
#ifdef STRAND_SHA256_X86
    /* Racing first calls compute the same answer. */
    static _Atomic int has_sha = -1;
    if (has_sha < 0) has_sha = cpu_has_sha();
    if (has_sha) {
        compress_blocks_shani(state, data, n_blocks);
        return;
    }
#endif
    compress_blocks(state, data, n_blocks);
}

void strand_sha256_init(strand_sha256 *ctx) {
    static const uint32_t initial[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(ctx->state, initial, sizeof initial);
    ctx->total_bytes = 0;
    ctx->block_fill = 0;
}

void strand_sha256_update(strand_sha256 *ctx, const void *data, size_t bytes) {
    const uint8_t *p = data;
    ctx->total_bytes += bytes;
    if (ctx->block_fill > 0) {
        size_t take = 64 - ctx->block_fill;
        if (take > bytes) take = bytes;
        memcpy(ctx->block + ctx->block_fill, p, take);
        ctx->block_fill += take;
        p += take;
        bytes -= take;
        if (ctx->block_fill < 64) return;
        compress_any(ctx->state, ctx->block, 1);
        ctx->block_fill = 0;
    }
    /* Whole blocks straight from the caller's buffer: no copy on the hot path. */
    size_t whole = bytes / 64;
    compress_any(ctx->state, p, whole);
    p += whole * 64;
    bytes -= whole * 64;
    memcpy(ctx->block, p, bytes);
    ctx->block_fill = bytes;
}

void strand_sha256_final(strand_sha256 *ctx, uint8_t digest[32]) {
    uint64_t bit_length = ctx->total_bytes * 8;
    uint8_t pad[72] = {0x80};
    /* Pad to 56 mod 64, then the 64-bit big-endian message length. */
    size_t pad_bytes = (ctx->block_fill < 56 ? 56 : 120) - ctx->block_fill;
    for (int i = 0; i < 8; i++)
        pad[pad_bytes + i] = (uint8_t)(bit_length >> (56 - 8 * i));
    uint64_t total = ctx->total_bytes;
    strand_sha256_update(ctx, pad, pad_bytes + 8);
    ctx->total_bytes = total;
    for (int i = 0; i < 8; i++) {
        digest[4 * i] = (uint8_t)(ctx->state[i] >> 24);
        digest[4 * i + 1] = (uint8_t)(ctx->state[i] >> 16);
        digest[4 * i + 2] = (uint8_t)(ctx->state[i] >> 8);
        digest[4 * i + 3] = (uint8_t)ctx->state[i];
    }
}

void strand_sha256_hex(const uint8_t digest[32], char hex[65]) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[digest[i] >> 4];
        hex[2 * i + 1] = digits[digest[i] & 15];
    }
    hex[64] = '\0';
}
