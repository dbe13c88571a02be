/* SHA-256 (FIPS 180-4), used to fingerprint the input files of a dataset. Streaming: init, any
 * number of updates, final. */
#ifndef STRAND_SHA256_H
#define STRAND_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t state[8];
    uint64_t total_bytes;
    uint8_t block[64];
    size_t block_fill;
} strand_sha256;

void strand_sha256_init(strand_sha256 *ctx);
void strand_sha256_update(strand_sha256 *ctx, const void *data, size_t bytes);
void strand_sha256_final(strand_sha256 *ctx, uint8_t digest[32]);
/* Lowercase hex of a digest, NUL-terminated (65 bytes). */
void strand_sha256_hex(const uint8_t digest[32], char hex[65]);

#endif
