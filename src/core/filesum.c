/* Whole-file checksums in the HDF5 user block (see filesum.h). */
#define _POSIX_C_SOURCE 200809L
#include "core/filesum.h"

#include "core/crc32.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum {
    HEADER_VERSION = 1,
    CRC_FIELD = 36,       /* offset of the header's own CRC */
    READ_PIECE = 4 << 20, /* bytes per pread while checksumming */
    MAX_USER_BLOCK = 1 << 24,
};
static const char MAGIC[8] = {'S', 'T', 'R', 'A', 'N', 'D', 'F', 'S'};
static const unsigned char HDF5_SIGNATURE[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* The header's CRC covers every byte of the block but its own 4. */
static uint32_t header_crc(const unsigned char *block) {
    uint32_t crc = strand_crc32(0, block, CRC_FIELD);
    return strand_crc32(crc, block + CRC_FIELD + 4, STRAND_FILESUM_BLOCK - CRC_FIELD - 4);
}

static void encode_header(unsigned char *block, int64_t user_block, int64_t length, uint32_t crc) {
    memset(block, 0, STRAND_FILESUM_BLOCK);
    memcpy(block, MAGIC, sizeof MAGIC);
    put_u32(block + 8, HEADER_VERSION);
    put_u64(block + 16, (uint64_t)user_block);
    put_u64(block + 24, (uint64_t)length);
    put_u32(block + 32, crc);
    put_u32(block + CRC_FIELD, header_crc(block));
}

/* Parse a header block of a file of `size` bytes. */
static int decode_header(const char *path, const unsigned char *block, int64_t size,
                         strand_filesum_info *info) {
    memset(info, 0, sizeof *info);
    if (size >= 8 && memcmp(block, HDF5_SIGNATURE, sizeof HDF5_SIGNATURE) == 0) return STRAND_OK;
    if (size < STRAND_FILESUM_BLOCK || memcmp(block, MAGIC, sizeof MAGIC) != 0)
        STRAND_FAIL(STRAND_ERR_INPUT,
                    "%s: not an HDF5 file or corrupt (neither a strand checksum header nor an HDF5 "
                    "signature at its start)",
                    path);
    if (get_u32(block + CRC_FIELD) != header_crc(block))
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: its checksum header is corrupt (the file is damaged)", path);
    if (get_u32(block + 8) != HEADER_VERSION)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: checksum header version %u, this strand reads %d", path,
                    get_u32(block + 8), HEADER_VERSION);
    const uint64_t user_block = get_u64(block + 16);
    if (user_block < STRAND_FILESUM_BLOCK || user_block > MAX_USER_BLOCK || (user_block & (user_block - 1)))
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: checksum header names a user block of %llu bytes (corrupt)", path,
                    (unsigned long long)user_block);
    info->present = 1;
    info->block = (int64_t)user_block;
    info->length = (int64_t)get_u64(block + 24);
    info->crc = get_u32(block + 32);
    if (info->length != size - STRAND_FILESUM_BLOCK || info->block > size)
        STRAND_FAIL(STRAND_ERR_INPUT,
                    "%s: the file has %" PRId64 " bytes, its checksum header says %" PRId64
                    " (truncated or appended to)",
                    path, size, info->length + STRAND_FILESUM_BLOCK);
    return STRAND_OK;
}

static int open_file(const char *path, int flags, int *fd, int64_t *size) {
    *size = 0;
    *fd = open(path, flags);
    if (*fd < 0) {
        if (errno == ENOENT) STRAND_FAIL(STRAND_ERR_INPUT, "%s: no such file", path);
        STRAND_FAIL(STRAND_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(*fd, &st) != 0) {
        const int e = errno;
        close(*fd);
        *fd = -1;
        STRAND_FAIL(STRAND_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(*fd);
        *fd = -1;
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: is a directory, not a file", path);
    }
    *size = (int64_t)st.st_size;
    return STRAND_OK;
}

/* Read exactly `bytes` at `offset` (short only at the end of the file: the rest is zeroed). */
static int read_at(int fd, const char *path, void *buffer, int64_t bytes, int64_t offset) {
    unsigned char *p = buffer;
    while (bytes > 0) {
        const ssize_t n = pread(fd, p, (size_t)bytes, (off_t)offset);
        if (n < 0) {
            if (errno == EINTR) continue;
            STRAND_FAIL(STRAND_ERR_IO, "%s: read failed at byte %" PRId64 ": %s", path, offset,
                        strerror(errno));
        }
        if (n == 0) {
            memset(p, 0, (size_t)bytes);
            return STRAND_OK;
        }
        p += n;
        bytes -= n;
        offset += n;
    }
    return STRAND_OK;
}

/* CRC-32 of bytes [first, first + count) of the file. */
static int checksum_range(int fd, const char *path, int64_t first, int64_t count, uint32_t *crc) {
    *crc = 0;
    if (count <= 0) return STRAND_OK;
    unsigned char *buffer =
        strand_alloc(count < READ_PIECE ? (size_t)count : READ_PIECE, "file checksum buffer");
    if (!buffer) return STRAND_ERR_NOMEM;
    int status = STRAND_OK;
    for (int64_t done = 0; done < count && status == STRAND_OK;) {
        const int64_t n = count - done < READ_PIECE ? count - done : READ_PIECE;
        status = read_at(fd, path, buffer, n, first + done);
        if (status == STRAND_OK) *crc = strand_crc32(*crc, buffer, (size_t)n);
        done += n;
    }
    strand_free(buffer);
    return status;
}

static int write_header(int fd, const char *path, int64_t user_block, int64_t length, uint32_t crc) {
    unsigned char block[STRAND_FILESUM_BLOCK];
    encode_header(block, user_block, length, crc);
    ssize_t n;
    do
        n = pwrite(fd, block, sizeof block, 0);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof block)
        STRAND_FAIL(STRAND_ERR_IO, "%s: cannot write the checksum header: %s", path,
                    n < 0 ? strerror(errno) : "short write");
    if (fsync(fd) != 0) STRAND_FAIL(STRAND_ERR_IO, "%s: fsync failed: %s", path, strerror(errno));
    return STRAND_OK;
}

int strand_filesum_reserve(hid_t fcpl, int64_t block, const char *path) {
    if (block < STRAND_FILESUM_BLOCK || block > MAX_USER_BLOCK || (block & (block - 1)))
        STRAND_FAIL(STRAND_ERR_INTERNAL, "%s: user block of %lld bytes is not a power of two >= %d", path,
                    (long long)block, STRAND_FILESUM_BLOCK);
    if (H5Pset_userblock(fcpl, (hsize_t)block) < 0)
        STRAND_FAIL(STRAND_ERR_IO, "%s: cannot reserve the HDF5 user block for the checksum header", path);
    return STRAND_OK;
}

int strand_filesum_seal(const char *path, int64_t block) {
    int fd;
    int64_t size = 0;
    STRAND_CALL(open_file(path, O_RDWR, &fd, &size));
    int status = STRAND_OK;
    uint32_t crc = 0;
    if (size < block)
        status = strand_error_set(STRAND_ERR_INTERNAL, __FILE__, __LINE__,
                                  "%s: %" PRId64 " bytes: no user block to seal", path, size);
    if (status == STRAND_OK)
        status = checksum_range(fd, path, STRAND_FILESUM_BLOCK, size - STRAND_FILESUM_BLOCK, &crc);
    if (status == STRAND_OK) status = write_header(fd, path, block, size - STRAND_FILESUM_BLOCK, crc);
    if (close(fd) != 0 && status == STRAND_OK)
        status = strand_error_set(STRAND_ERR_IO, __FILE__, __LINE__, "%s: close failed: %s", path,
                                  strerror(errno));
    return status;
}

int strand_filesum_verify(const char *path, strand_filesum_info *info) {
    memset(info, 0, sizeof *info);
    int fd;
    int64_t size = 0;
    STRAND_CALL(open_file(path, O_RDONLY, &fd, &size));
    unsigned char block[STRAND_FILESUM_BLOCK];
    int status = read_at(fd, path, block, sizeof block, 0);
    if (status == STRAND_OK) status = decode_header(path, block, size, info);
    uint32_t crc = 0;
    if (status == STRAND_OK && info->present)
        status = checksum_range(fd, path, STRAND_FILESUM_BLOCK, info->length, &crc);
    if (status == STRAND_OK && info->present && crc != info->crc)
        status =
            strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                             "%s: contents do not match the file's checksum (the file is corrupt)", path);
    close(fd);
    return status;
}

static int world_rank(void) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return rank;
}

/* Name the rank in a failure that only some ranks may see: the agreed line must say where. */
static int on_rank(int status) {
    if (status == STRAND_OK) return status;
    char message[900];
    snprintf(message, sizeof message, "%s", strand_error_message());
    return strand_error_set(status, __FILE__, __LINE__, "%s (on rank %d)", message, world_rank());
}

/* Every rank opens the file and reads its first block; they must see the same size and block. */
static int open_everywhere(const char *path, MPI_Comm comm, int flags, int *fd, int64_t *size,
                           unsigned char *block) {
    int rank;
    STRAND_CALL_MPI(MPI_Comm_rank(comm, &rank));
    *fd = -1;
    int status = open_file(path, flags, fd, size);
    if (status == STRAND_OK) status = read_at(*fd, path, block, STRAND_FILESUM_BLOCK, 0);
    status = strand_agree(comm, on_rank(status));
    if (status != STRAND_OK) {
        if (*fd >= 0) close(*fd);
        *fd = -1;
        return status;
    }
    unsigned char first[STRAND_FILESUM_BLOCK + 8];
    memcpy(first, block, STRAND_FILESUM_BLOCK);
    memcpy(first + STRAND_FILESUM_BLOCK, size, sizeof *size);
    status = MPI_Bcast(first, (int)sizeof first, MPI_BYTE, 0, comm) == MPI_SUCCESS
                 ? STRAND_OK
                 : strand_error_set(STRAND_ERR_MPI, __FILE__, __LINE__, "%s: MPI_Bcast failed", path);
    if (status == STRAND_OK && (memcmp(first, block, STRAND_FILESUM_BLOCK) != 0 ||
                                memcmp(first + STRAND_FILESUM_BLOCK, size, sizeof *size) != 0)) {
        int64_t size0;
        memcpy(&size0, first + STRAND_FILESUM_BLOCK, sizeof size0);
        status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                  "%s: rank %d sees a different file than rank 0 (%" PRId64
                                  " bytes, rank 0 %" PRId64
                                  "): every rank must read the same file (a stale copy on one node?)",
                                  path, world_rank(), *size, size0);
    }
    status = strand_agree(comm, status);
    if (status != STRAND_OK) {
        close(*fd);
        *fd = -1;
    }
    return status;
}

/* The CRC of bytes [block, size) from each rank's contiguous slice, in rank order. */
static int checksum_parallel(int fd, const char *path, int64_t block, int64_t size, MPI_Comm comm,
                             uint32_t *crc) {
    int rank, ranks;
    STRAND_CALL_MPI(MPI_Comm_rank(comm, &rank));
    STRAND_CALL_MPI(MPI_Comm_size(comm, &ranks));
    const int64_t length = size - block;
    int64_t first, count;
    strand_split_range(length, ranks, rank, &first, &count);
    uint32_t mine = 0;
    STRAND_CALL(strand_agree(comm, on_rank(checksum_range(fd, path, block + first, count, &mine))));
    uint32_t *all = strand_alloc(sizeof *all * (size_t)ranks, "slice checksums");
    int status = strand_agree(comm, all ? STRAND_OK : STRAND_ERR_NOMEM);
    if (status != STRAND_OK) {
        strand_free(all);
        return status;
    }
    if (MPI_Allgather(&mine, 1, MPI_UINT32_T, all, 1, MPI_UINT32_T, comm) != MPI_SUCCESS)
        status = strand_error_set(STRAND_ERR_MPI, __FILE__, __LINE__, "%s: MPI_Allgather of checksums failed",
                                  path);
    *crc = 0;
    for (int r = 0; r < ranks && status == STRAND_OK; r++) {
        strand_split_range(length, ranks, r, &first, &count);
        *crc = strand_crc32_combine(*crc, all[r], count);
    }
    strand_free(all);
    return status;
}

int strand_filesum_seal_parallel(const char *path, int64_t user_block, MPI_Comm comm) {
    int rank;
    STRAND_CALL_MPI(MPI_Comm_rank(comm, &rank));
    int fd;
    int64_t size = 0;
    unsigned char block[STRAND_FILESUM_BLOCK];
    STRAND_CALL(open_everywhere(path, comm, rank == 0 ? O_RDWR : O_RDONLY, &fd, &size, block));
    int status = size < user_block ? strand_error_set(STRAND_ERR_INTERNAL, __FILE__, __LINE__,
                                                      "%s: no user block to seal", path)
                                   : STRAND_OK;
    uint32_t crc = 0;
    if (status == STRAND_OK) status = checksum_parallel(fd, path, STRAND_FILESUM_BLOCK, size, comm, &crc);
    if (status == STRAND_OK && rank == 0)
        status = write_header(fd, path, user_block, size - STRAND_FILESUM_BLOCK, crc);
    close(fd);
    return strand_agree(comm, status);
}

/* Every rank opens the file and reads its header; with `content`, the ranks also checksum it. */
static int verify_everywhere(const char *path, MPI_Comm comm, strand_filesum_info *info, int content) {
    memset(info, 0, sizeof *info);
    int fd;
    int64_t size = 0;
    unsigned char block[STRAND_FILESUM_BLOCK];
    STRAND_CALL(open_everywhere(path, comm, O_RDONLY, &fd, &size, block));
    /* Same block and size everywhere: the decoding is the same on every rank. */
    int status = decode_header(path, block, size, info);
    uint32_t crc = 0;
    if (status == STRAND_OK && info->present && content)
        status = checksum_parallel(fd, path, STRAND_FILESUM_BLOCK, size, comm, &crc);
    if (status == STRAND_OK && info->present && content && crc != info->crc)
        status =
            strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                             "%s: contents do not match the file's checksum (the file is corrupt)", path);
    close(fd);
    return strand_agree(comm, status);
}

int strand_filesum_verify_parallel(const char *path, MPI_Comm comm, strand_filesum_info *info) {
    return verify_everywhere(path, comm, info, 1);
}

int strand_filesum_same_everywhere(const char *path, MPI_Comm comm, strand_filesum_info *info) {
    return verify_everywhere(path, comm, info, 0);
}

void strand_filesum_describe(const strand_filesum_info *info, char *out, size_t size) {
    if (info->present)
        snprintf(out, size, "CRC-32 of all %" PRId64 " bytes verified", info->length + STRAND_FILESUM_BLOCK);
    else
        snprintf(out, size, "none (written by an older strand, or rewritten by h5repack): not verified");
}
