/* zlib's CRC-32 with carry-less multiplication where the CPU has it. */
#include "core/crc32.h"

#include <zlib.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define STRAND_CRC_PCLMUL 1
#endif

/* ---- CRC-32 ----
 * The checksum of every tensor is zlib's CRC-32 so that anyone can check it (Python's
 * zlib.crc32). zlib computes it at about 2 GB/s, slower than the disk, so x86 CPUs with
 * carry-less multiply fold 64 bytes per step instead (the method of Intel's "Fast CRC
 * Computation Using PCLMULQDQ", constants for the reflected polynomial 0xEDB88320). */

static uint32_t crc32_zlib(uint32_t crc, const unsigned char *p, size_t bytes) {
    while (bytes > 0) {
        uInt n = bytes > (1u << 30) ? (1u << 30) : (uInt)bytes;
        crc = (uint32_t)crc32(crc, p, n);
        p += n;
        bytes -= n;
    }
    return crc;
}

#ifdef STRAND_CRC_PCLMUL
__attribute__((target("pclmul,sse4.1"))) static __m128i fold16(__m128i x, __m128i k) {
    return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11));
}

/* bytes >= 64 and a multiple of 16. */
__attribute__((target("pclmul,sse4.1"))) static uint32_t crc32_pclmul(uint32_t crc, const unsigned char *p,
                                                                      size_t bytes) {
    const __m128i k12 = _mm_set_epi64x(0x1c6e41596, 0x154442bd4),
                  k34 = _mm_set_epi64x(0xccaa009e, 0x1751997d0);
    const __m128i k5 = _mm_set_epi64x(0, 0x163cd6124), poly = _mm_set_epi64x(0x1f7011641, 0x1db710641);
    const __m128i low32 = _mm_set_epi32(0, 0, 0, -1);
    __m128i x1 = _mm_loadu_si128((const __m128i *)p), x2 = _mm_loadu_si128((const __m128i *)(p + 16));
    __m128i x3 = _mm_loadu_si128((const __m128i *)(p + 32)), x4 = _mm_loadu_si128((const __m128i *)(p + 48));
    x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128((int)~crc));
    for (p += 64, bytes -= 64; bytes >= 64; p += 64, bytes -= 64) {
        x1 = _mm_xor_si128(fold16(x1, k12), _mm_loadu_si128((const __m128i *)p));
        x2 = _mm_xor_si128(fold16(x2, k12), _mm_loadu_si128((const __m128i *)(p + 16)));
        x3 = _mm_xor_si128(fold16(x3, k12), _mm_loadu_si128((const __m128i *)(p + 32)));
        x4 = _mm_xor_si128(fold16(x4, k12), _mm_loadu_si128((const __m128i *)(p + 48)));
    }
    x1 = _mm_xor_si128(fold16(x1, k34), x2);
    x1 = _mm_xor_si128(fold16(x1, k34), x3);
    x1 = _mm_xor_si128(fold16(x1, k34), x4);
    for (; bytes >= 16; p += 16, bytes -= 16)
        x1 = _mm_xor_si128(fold16(x1, k34), _mm_loadu_si128((const __m128i *)p));
    /* 128 -> 64 bits, then 64 -> 32 with a Barrett reduction. */
    x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), _mm_clmulepi64_si128(k34, x1, 0x01));
    x1 = _mm_xor_si128(_mm_srli_si128(x1, 4), _mm_clmulepi64_si128(_mm_and_si128(x1, low32), k5, 0x00));
    __m128i t = _mm_and_si128(_mm_clmulepi64_si128(_mm_and_si128(x1, low32), poly, 0x10), low32);
    x1 = _mm_xor_si128(x1, _mm_clmulepi64_si128(t, poly, 0x00));
    return ~(uint32_t)_mm_extract_epi32(x1, 1);
}
#endif

uint32_t strand_crc32(uint32_t crc, const void *data, size_t bytes) {
    const unsigned char *p = data;
#ifdef STRAND_CRC_PCLMUL
    static int usable = -1;
    if (usable < 0) usable = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
    if (usable && bytes >= 64) {
        const size_t bulk = bytes & ~(size_t)15;
        crc = crc32_pclmul(crc, p, bulk);
        p += bulk;
        bytes -= bulk;
    }
#endif
    return crc32_zlib(crc, p, bytes);
}

uint32_t strand_crc32_combine(uint32_t crc_a, uint32_t crc_b, int64_t length_b) {
    return (uint32_t)crc32_combine(crc_a, crc_b, (z_off_t)length_b);
}
