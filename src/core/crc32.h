/* CRC-32 of strand's stored bytes: tensors in checkpoints and whole files (filesum.h). */
#ifndef STRAND_CRC32_H
#define STRAND_CRC32_H

#include <stddef.h>
#include <stdint.h>

/* zlib's CRC-32 (as Python's zlib.crc32) continued from `crc` (0 to start), with carry-less
 * multiplication where the CPU has it. */
uint32_t strand_crc32(uint32_t crc, const void *data, size_t bytes);

/* The CRC-32 of A followed by B from crc(A), crc(B) and the length of B (zlib's crc32_combine). */
uint32_t strand_crc32_combine(uint32_t crc_a, uint32_t crc_b, int64_t length_b);

#endif
