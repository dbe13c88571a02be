/* Whole-file checksums for strand's HDF5 files (datasets, checkpoints, gradient files).
 *
 * HDF5 never reads or writes the first bytes of a file created with a user block
 * (H5Pset_userblock). strand keeps a header there with the length and the CRC-32 of everything
 * after it, so every stored byte is verified before HDF5 parses any of it: a flipped bit or a
 * truncation anywhere in the file is refused with the file and the reason, instead of reaching
 * HDF5's parsers (which read corrupt metadata as fill values, or crash).
 *
 * The user block is a power of two of at least STRAND_FILESUM_BLOCK bytes (HDF5 wants it no
 * smaller than the file's alignment); its first STRAND_FILESUM_BLOCK bytes are the header
 * (little-endian):
 *   0  "STRANDFS"  8  version (u32, 1)  12  reserved (u32, 0)  16  user block size (u64)
 *   24 length of the rest of the file after the header (u64)  32  its CRC-32 (u32)
 *   36 CRC-32 of the header with these 4 bytes left out (u32); everything else is zero.
 * A file that starts with HDF5's own signature has no header (written by an older strand, or
 * rewritten by h5repack): it is accepted and reported as unverified. */
#ifndef STRAND_FILESUM_H
#define STRAND_FILESUM_H

#include "strand/common.h"

#include <hdf5.h>
#include <stdint.h>

enum { STRAND_FILESUM_BLOCK = 512 };

typedef struct {
    int present;    /* the file has a strand checksum header (0: older file, unverified) */
    int64_t block;  /* user block bytes (HDF5's data starts there) */
    int64_t length; /* bytes after the header: the rest of the user block and HDF5's data */
    uint32_t crc;   /* their CRC-32 */
} strand_filesum_info;

/* Reserve a user block of `block` bytes (a power of two >= STRAND_FILESUM_BLOCK, and >= the
 * file's alignment) in a file creation property list, before H5Fcreate. */
int strand_filesum_reserve(hid_t fcpl, int64_t block, const char *path);

/* Serial: checksum everything after the user block (of `block` bytes, as reserved) of a closed
 * file and write the header, then fsync the file. */
int strand_filesum_seal(const char *path, int64_t block);

/* Collective over comm: every rank checksums a contiguous slice of the closed file, rank 0
 * writes the header and fsyncs. Agreed. */
int strand_filesum_seal_parallel(const char *path, int64_t block, MPI_Comm comm);

/* Serial: verify a file. A file without a header is fine (info->present = 0); a header that
 * does not verify, a length that does not match the file, or a content CRC that differs is
 * refused (STRAND_ERR_INPUT) with the path and what is wrong. */
int strand_filesum_verify(const char *path, strand_filesum_info *info);

/* Collective over comm: every rank opens the file itself (so a file missing or unreadable on one
 * node is reported, naming the rank), reads the header and checksums a slice; the slices' CRCs
 * are combined and compared. Also refuses when ranks see different headers (different copies of
 * the file on different nodes). Agreed: the same status on every rank. */
int strand_filesum_verify_parallel(const char *path, MPI_Comm comm, strand_filesum_info *info);

/* "CRC-32 of all N bytes verified" or that the file has none, for `strand info`. */
void strand_filesum_describe(const strand_filesum_info *info, char *out, size_t size);

/* Collective, cheap: every rank opens the file and reads its header; refuses (agreed) when some
 * rank cannot, or sees another size or header than rank 0. For a file verified just before
 * (the header carries the content's CRC, so the same header means the same verified file). */
int strand_filesum_same_everywhere(const char *path, MPI_Comm comm, strand_filesum_info *info);

#endif
