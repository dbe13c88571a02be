/* Checkpoints in parallel HDF5: collective writes of row slices, atomic publication, validation
 * that names the exact mismatch, resharding reads and the scan for the latest checkpoint. */
#define _GNU_SOURCE /* sync_file_range */
#include "strand/ckpt.h"
#include "core/atomic_file.h"
#include "core/crc32.h"

#include "strand/dataset.h"
#include "core/filesum.h"
#include "train/optim.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#ifdef STRAND_REAL_DOUBLE
#define FILE_REAL H5T_IEEE_F64LE
#define MEMORY_REAL H5T_NATIVE_DOUBLE
#else
#define FILE_REAL H5T_IEEE_F32LE
#define MEMORY_REAL H5T_NATIVE_FLOAT
#endif

/* The HDF5 user block holds the whole-file checksum; HDF5 wants it no smaller than the file's
 * alignment (1 MiB, see file_access). */
enum { MAX_SETS = 3, CKPT_USER_BLOCK = 1 << 20 };
static const char *const CKPT_GROUPS[MAX_SETS] = {"/params", "/optim/m", "/optim/v"};

/* One group of tensors in a file: "/params" with the parameter array, etc. */
typedef struct {
    const char *group;
    real_t *data;
} tensor_set;

/* ---- small helpers ---- */

/* An MPI call inside a function with cleanup: record the failure (with the file) and jump. */
#define STRAND_CALL_MPI_GOTO(status, label, expr, path)                                                      \
    do {                                                                                                     \
        if ((expr) != MPI_SUCCESS) {                                                                         \
            (status) = strand_error_set(STRAND_ERR_MPI, __FILE__, __LINE__, "%s: %s failed", (path), #expr); \
            goto label;                                                                                      \
        }                                                                                                    \
    } while (0)

static int comm_info(MPI_Comm comm, int *rank, int *size) {
    STRAND_CALL_MPI(MPI_Comm_rank(comm, rank));
    STRAND_CALL_MPI(MPI_Comm_size(comm, size));
    return STRAND_OK;
}

static int tensor_dims(const strand_param_info *p, hsize_t dims[2]) {
    dims[0] = (hsize_t)p->shape[0];
    dims[1] = (hsize_t)p->shape[1];
    return p->ndim;
}

static void format_shape(char *out, size_t size, int ndim, const hsize_t *dims) {
    if (ndim == 1)
        snprintf(out, size, "(%llu)", (unsigned long long)dims[0]);
    else if (ndim == 2)
        snprintf(out, size, "(%llu,%llu)", (unsigned long long)dims[0], (unsigned long long)dims[1]);
    else
        snprintf(out, size, "(%d dimensions)", ndim);
}

/* "/params" + "block0.mixer" + "weight" -> "/params/block0.mixer/weight" */
static void tensor_path(char *out, size_t size, const char *group, const strand_param_info *p) {
    snprintf(out, size, "%s/%s/%s", group, p->layer, p->name);
}

/* Rows [row0, row0 + rows) of a tensor belong to `rank` of `world`; cols values per row. */
static void tensor_slice(const strand_param_info *p, int world, int rank, int64_t *row0, int64_t *rows,
                         int64_t *cols) {
    strand_split_range(p->shape[0], world, rank, row0, rows);
    *cols = p->size / p->shape[0];
}

/* The CRC of a whole tensor from the CRCs of its rank slices, in rank order. */
static uint32_t combine_crcs(const uint32_t *crcs, int stride, const strand_param_info *p, int world) {
    uint32_t crc = 0;
    for (int r = 0; r < world; r++) {
        int64_t row0, rows, cols;
        tensor_slice(p, world, r, &row0, &rows, &cols);
        crc = (uint32_t)crc32_combine(crc, crcs[(size_t)r * (size_t)stride],
                                      (z_off_t)(rows * cols * (int64_t)sizeof(real_t)));
    }
    return crc;
}

static int write_scalar_attribute(hid_t object, const char *name, hid_t file_type, hid_t memory_type,
                                  const void *value, const char *path) {
    hid_t space = H5Screate(H5S_SCALAR), attribute = H5I_INVALID_HID;
    int status = STRAND_OK;
    if (space < 0) goto fail;
    attribute = H5Acreate2(object, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (attribute < 0 || H5Awrite(attribute, memory_type, value) < 0) goto fail;
    goto done;
fail:;
    char what[128];
    snprintf(what, sizeof what, "cannot write attribute '%s'", name);
    status = strand_h5_error(__FILE__, __LINE__, path, what);
done:
    strand_h5_close(&attribute);
    strand_h5_close(&space);
    return status;
}

static int read_scalar_attribute(hid_t object, const char *name, hid_t memory_type, void *value, int *found,
                                 const char *path) {
    *found = 0;
    htri_t exists = H5Aexists(object, name);
    if (exists < 0) STRAND_H5_FAIL(path, "cannot look up an attribute");
    if (!exists) return STRAND_OK;
    hid_t attribute = H5Aopen(object, name, H5P_DEFAULT);
    if (attribute < 0 || H5Aread(attribute, memory_type, value) < 0) {
        strand_h5_close(&attribute);
        char what[128];
        snprintf(what, sizeof what, "cannot read attribute '%s'", name);
        STRAND_H5_FAIL(path, what);
    }
    strand_h5_close(&attribute);
    *found = 1;
    return STRAND_OK;
}

/* ---- writing ---- */

static int file_access(MPI_Comm comm, const char *path, hid_t *fapl) {
    *fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (*fapl < 0 || H5Pset_fapl_mpio(*fapl, comm, MPI_INFO_NULL) < 0 ||
        H5Pset_all_coll_metadata_ops(*fapl, 1) < 0 || H5Pset_coll_metadata_write(*fapl, 1) < 0 ||
        H5Pset_fclose_degree(*fapl, H5F_CLOSE_STRONG) < 0) {
        strand_h5_close(fapl);
        STRAND_H5_FAIL(path, "cannot set up MPI-IO file access");
    }
    /* Large tensors start on 1 MiB boundaries: whole file-system blocks and stripes per rank. */
    if (H5Pset_alignment(*fapl, 1 << 20, 1 << 20) < 0) {
        strand_h5_close(fapl);
        STRAND_H5_FAIL(path, "cannot set the file alignment");
    }
    return STRAND_OK;
}

static int create_tensor(hid_t file, const char *path, const char *name, const strand_param_info *p,
                         hid_t lcpl, hid_t dcpl, hid_t *dataset) {
    hsize_t dims[2];
    const int ndim = tensor_dims(p, dims);
    hid_t space = H5Screate_simple(ndim, dims, NULL);
    *dataset =
        space < 0 ? H5I_INVALID_HID : H5Dcreate2(file, name, FILE_REAL, space, lcpl, dcpl, H5P_DEFAULT);
    strand_h5_close(&space);
    if (*dataset < 0) {
        char what[400];
        snprintf(what, sizeof what, "cannot create dataset %s", name);
        STRAND_H5_FAIL(path, what);
    }
    return STRAND_OK;
}

/* Select rows [first, first + count) of a tensor in its file space and a matching memory space;
 * count 0 selects nothing (the rank still takes part in the collective transfer). */
static int select_rows(hid_t space, const strand_param_info *p, int64_t first, int64_t count, hid_t *memory) {
    hsize_t dims[2];
    tensor_dims(p, dims);
    const int64_t cols = p->size / p->shape[0];
    hsize_t n = count > 0 ? (hsize_t)(count * cols) : 1;
    *memory = H5Screate_simple(1, &n, NULL);
    if (*memory < 0) return -1;
    if (count == 0) return H5Sselect_none(*memory) < 0 || H5Sselect_none(space) < 0 ? -1 : 0;
    hsize_t start[2] = {(hsize_t)first, 0}, block[2] = {(hsize_t)count, dims[1]};
    return H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, block, NULL) < 0 ? -1 : 0;
}

/* Rows per transfer. Writes go in pieces of about 1 MiB per rank: single 32-64 MiB writes ran at
 * a third of the speed on ext4 (the page cache takes large writes badly). Reads go in one piece
 * per tensor slice, which measured faster than 1 MiB pieces (tests/bench/bench_ckpt.sh). */
enum { WRITE_PIECE_BYTES = 1 << 20 };
static int64_t rows_per_transfer(const strand_param_info *p, int writing) {
    const int64_t row_bytes = p->size / p->shape[0] * (int64_t)sizeof(real_t);
    if (!writing) return p->shape[0];
    return row_bytes >= WRITE_PIECE_BYTES ? 1 : WRITE_PIECE_BYTES / row_bytes;
}

/* This rank's rows of one tensor, written (or read) in pieces; every transfer is collective, so
 * all ranks make the same number of calls: as many as rank 0, which has the most rows. *crc is
 * continued over this rank's rows piece by piece, while each piece is in the cache anyway. When
 * writing with fd >= 0, the kernel is asked to start writing each piece back at once (Linux), so
 * that the disk works while the CPUs go on instead of all at the final flush. */
static int transfer_rows(hid_t dataset, const char *path, const char *name, const strand_param_info *p,
                         real_t *data, int world, int rank, hid_t dxpl, int writing, uint32_t *crc, int fd,
                         int64_t file_offset) {
    int64_t row0, rows, cols, first_rows, unused;
    tensor_slice(p, world, rank, &row0, &rows, &cols);
    tensor_slice(p, world, 0, &unused, &first_rows, &cols);
    const int64_t step = rows_per_transfer(p, writing);
    const size_t row_bytes = (size_t)cols * sizeof(real_t);
    int status = STRAND_OK;
    *crc = 0;
    for (int64_t done = 0; done < first_rows && status == STRAND_OK; done += step) {
        const int64_t count = done >= rows ? 0 : (rows - done < step ? rows - done : step);
        hid_t space = H5Dget_space(dataset), memory = H5I_INVALID_HID;
        real_t *at = data + p->offset + (row0 + (count ? done : 0)) * cols;
        if (writing) *crc = strand_crc32(*crc, at, (size_t)count * row_bytes);
        if (space < 0 || select_rows(space, p, row0 + done, count, &memory) < 0 ||
            (writing ? H5Dwrite(dataset, MEMORY_REAL, memory, space, dxpl, at)
                     : H5Dread(dataset, MEMORY_REAL, memory, space, dxpl, at)) < 0) {
            char what[400];
            snprintf(what, sizeof what, "cannot %s %s", writing ? "write" : "read", name);
            status = strand_h5_error(__FILE__, __LINE__, path, what);
        }
        strand_h5_close(&memory);
        strand_h5_close(&space);
        if (!writing) *crc = strand_crc32(*crc, at, (size_t)count * row_bytes);
#ifdef SYNC_FILE_RANGE_WRITE
        if (writing && fd >= 0 && count > 0 && file_offset >= 0)
            sync_file_range(fd, (off_t)file_offset + (off_t)((row0 + done) * (int64_t)row_bytes),
                            (off_t)((size_t)count * row_bytes), SYNC_FILE_RANGE_WRITE);
#else
        (void)fd, (void)file_offset;
#endif
    }
    return status;
}

/* Every tensor of every set, in two collective phases: create every dataset (so that their
 * places in the file are fixed), then write every rank's rows, checksumming them on the way, and
 * attach each tensor's CRC, combined from one all-gather of the slices' CRCs. */
static int write_tensor_sets(hid_t file, const char *path, const strand_param_table *table,
                             const tensor_set *sets, int n_sets, MPI_Comm comm) {
    int rank, world;
    STRAND_CALL(comm_info(comm, &rank, &world));
    const int n = table->count * n_sets;
    uint32_t *local = strand_alloc((size_t)n * sizeof *local, "checksums");
    uint32_t *all = strand_alloc((size_t)n * (size_t)world * sizeof *all, "checksums");
    hid_t *datasets = strand_alloc(sizeof *datasets * (size_t)n, "dataset handles");
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE), dcpl = H5Pcreate(H5P_DATASET_CREATE),
          dxpl = H5Pcreate(H5P_DATASET_XFER);
    int status = STRAND_OK;
    /* A second, plain descriptor of the file for early write-back hints (best effort). */
    int fd = open(path, O_RDONLY);
    for (int k = 0; datasets && k < n; k++)
        datasets[k] = H5I_INVALID_HID;
    if (!local || !all || !datasets) {
        status =
            strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__, "%s: out of memory for checksums", path);
    } else if (lcpl < 0 || dcpl < 0 || dxpl < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0 ||
               H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY) < 0 ||
               H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0 ||
               H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE) < 0) {
        status = strand_h5_error(__FILE__, __LINE__, path, "cannot set up dataset properties");
    }
    STRAND_CALL_GOTO(status, done, strand_agree(comm, status));
    char name[256];
    for (int k = 0; k < n && status == STRAND_OK; k++) {
        tensor_path(name, sizeof name, sets[k / table->count].group, &table->items[k % table->count]);
        status = strand_agree(
            comm, create_tensor(file, path, name, &table->items[k % table->count], lcpl, dcpl, &datasets[k]));
    }
    for (int k = 0; k < n && status == STRAND_OK; k++) {
        const strand_param_info *p = &table->items[k % table->count];
        tensor_path(name, sizeof name, sets[k / table->count].group, p);
        const haddr_t offset = H5Dget_offset(datasets[k]); /* contiguous and allocated: known */
        status = transfer_rows(datasets[k], path, name, p, sets[k / table->count].data, world, rank, dxpl, 1,
                               &local[k], fd, offset == HADDR_UNDEF ? -1 : (int64_t)offset);
        /* A failed collective write on one rank must not leave the others in the next one. */
        status = strand_agree(comm, status);
    }
    if (status != STRAND_OK) goto done;
    STRAND_CALL_MPI_GOTO(status, done, MPI_Allgather(local, n, MPI_UINT32_T, all, n, MPI_UINT32_T, comm),
                         path);
    for (int k = 0; k < n && status == STRAND_OK; k++) {
        const uint32_t crc = combine_crcs(all + k, n, &table->items[k % table->count], world);
        status = strand_agree(
            comm, write_scalar_attribute(datasets[k], "crc32", H5T_STD_U32LE, H5T_NATIVE_UINT32, &crc, path));
    }
done:
    if (fd >= 0) close(fd);
    for (int k = 0; datasets && k < n; k++)
        strand_h5_close(&datasets[k]);
    strand_free(datasets);
    strand_free(local);
    strand_free(all);
    strand_h5_close(&lcpl);
    strand_h5_close(&dcpl);
    strand_h5_close(&dxpl);
    return status;
}

static int write_string(hid_t file, const char *name, const char *value, const char *path) {
    return strand_h5_write_string_attribute(file, name, value, path);
}

static int write_ckpt_attributes(hid_t file, const char *path, const strand_ckpt_meta *meta) {
    const int64_t version = STRAND_CKPT_FORMAT_VERSION;
    char created[64];
    time_t now = time(NULL);
    struct tm tm;
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
    STRAND_CALL(write_string(file, "kind", STRAND_CKPT_KIND, path));
    STRAND_CALL(strand_h5_write_int_attribute(file, "format_version", version, path));
    STRAND_CALL(write_string(file, "strand_version", STRAND_VERSION, path));
    STRAND_CALL(write_string(file, "real_type", STRAND_REAL_NAME, path));
    STRAND_CALL(write_string(file, "created", created, path));
    STRAND_CALL(write_scalar_attribute(file, "step", H5T_STD_I64LE, H5T_NATIVE_INT64, &meta->step, path));
    STRAND_CALL(
        write_scalar_attribute(file, "data_cursor", H5T_STD_I64LE, H5T_NATIVE_INT64, &meta->step, path));
    STRAND_CALL(write_scalar_attribute(file, "total_steps", H5T_STD_I64LE, H5T_NATIVE_INT64,
                                       &meta->total_steps, path));
    STRAND_CALL(write_scalar_attribute(file, "tokens_seen", H5T_STD_I64LE, H5T_NATIVE_INT64,
                                       &meta->tokens_seen, path));
    STRAND_CALL(write_scalar_attribute(file, "adam_t", H5T_STD_I64LE, H5T_NATIVE_INT64, &meta->adam_t, path));
    STRAND_CALL(strand_h5_write_double_attribute(file, "lr", meta->lr, path));
    STRAND_CALL(
        write_scalar_attribute(file, "rng_seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, &meta->seed, path));
    STRAND_CALL(write_string(file, "rng",
                             "counter-based: every draw is a function of (rng_seed, step, index)", path));
    STRAND_CALL(strand_h5_write_double_attribute(file, "first_loss", meta->first_loss, path));
    STRAND_CALL(strand_h5_write_double_attribute(file, "last_loss", meta->last_loss, path));
    STRAND_CALL(strand_h5_write_double_attribute(file, "first_bpb", meta->first_bpb, path));
    STRAND_CALL(strand_h5_write_double_attribute(file, "last_bpb", meta->last_bpb, path));
    STRAND_CALL(strand_h5_write_double_attribute(file, "elapsed_s", meta->elapsed_s, path));
    STRAND_CALL(strand_h5_write_int_attribute(file, "written_dp", meta->dp, path));
    STRAND_CALL(strand_h5_write_int_attribute(file, "written_sp", meta->sp, path));
    STRAND_CALL(strand_h5_write_int_attribute(file, "written_world", meta->world, path));
    STRAND_CALL(strand_h5_write_int_attribute(file, "accum_steps", meta->accum_steps, path));
    STRAND_CALL(
        write_scalar_attribute(file, "parameters", H5T_STD_I64LE, H5T_NATIVE_INT64, &meta->parameters, path));
    STRAND_CALL(write_string(file, "config", meta->config_text, path));
    return STRAND_OK;
}

/* Before the collective create: rank 0 makes the temporary file with a token in it, and every
 * other rank must open that same file for writing and read the token back. A directory that is
 * missing, read-only or another file system on some node is refused here, naming the rank,
 * instead of hanging inside H5Fcreate (MPI-IO opens the file on every rank). */
static int probe_shared_file(const char *tmp, MPI_Comm comm) {
    int rank, world;
    STRAND_CALL(comm_info(comm, &rank, &world));
    char token[128] = "";
    int status = STRAND_OK;
    if (rank == 0) {
        char host[64] = "?";
        gethostname(host, sizeof host);
        host[sizeof host - 1] = '\0';
        snprintf(token, sizeof token, "strand probe %s %ld %.9f", host, (long)getpid(), strand_now());
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) {
            status = strand_error_set(STRAND_ERR_IO, __FILE__, __LINE__, "cannot create %s: %s", tmp,
                                      strerror(errno));
        } else {
            const size_t n = strlen(token);
            if (write(fd, token, n) != (ssize_t)n)
                status = strand_error_set(STRAND_ERR_IO, __FILE__, __LINE__, "cannot write %s: %s", tmp,
                                          strerror(errno));
            if (close(fd) != 0 && status == STRAND_OK)
                status = strand_error_set(STRAND_ERR_IO, __FILE__, __LINE__, "cannot write %s: %s", tmp,
                                          strerror(errno));
        }
    }
    STRAND_CALL(strand_agree(comm, status));
    STRAND_CALL_MPI(MPI_Bcast(token, (int)sizeof token, MPI_CHAR, 0, comm));
    if (rank != 0) {
        int world_rank = 0;
        MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
        char seen[128] = "";
        int fd = open(tmp, O_RDWR);
        if (fd < 0) {
            status =
                strand_error_set(STRAND_ERR_IO, __FILE__, __LINE__,
                                 "rank %d cannot open %s for writing: %s (the directory must be writable "
                                 "and shared by every rank)",
                                 world_rank, tmp, strerror(errno));
        } else {
            const ssize_t n = pread(fd, seen, sizeof seen - 1, 0);
            close(fd);
            if (n < 0 || strcmp(seen, token) != 0)
                status = strand_error_set(STRAND_ERR_IO, __FILE__, __LINE__,
                                          "rank %d sees another file at %s than rank 0 (the directory must "
                                          "be on a file system shared by every rank)",
                                          world_rank, tmp);
        }
    }
    status = strand_agree(comm, status);
    if (status != STRAND_OK && rank == 0) unlink(tmp);
    return status;
}

/* Reserve the file's disk space before any of it is written. A write that fails on one rank for
 * a full disk leaves HDF5's collective metadata flush (at flush or close) waiting on the others
 * forever; with the space reserved, a full disk is refused here, before HDF5 writes anything.
 * Where the file system cannot reserve (no fallocate), the free space is checked instead. */
static int reserve_space(const char *tmp, int64_t bytes) {
    int fd = open(tmp, O_RDWR);
    if (fd < 0) STRAND_FAIL(STRAND_ERR_IO, "cannot open %s: %s", tmp, strerror(errno));
    int status = STRAND_OK;
    if (fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, (off_t)bytes) != 0) {
        const int e = errno;
        struct statvfs fs;
        if (e == EOPNOTSUPP || e == ENOSYS) {
            if (fstatvfs(fd, &fs) == 0 && (double)fs.f_bavail * (double)fs.f_frsize < (double)bytes)
                status = strand_error_set(
                    STRAND_ERR_IO, __FILE__, __LINE__,
                    "%s: not enough space for a checkpoint of about %.1f MB (%.1f MB free)", tmp,
                    (double)bytes / 1e6, (double)fs.f_bavail * (double)fs.f_frsize / 1e6);
        } else {
            status = strand_error_set(STRAND_ERR_IO, __FILE__, __LINE__,
                                      "%s: cannot reserve %.1f MB for the file: %s", tmp, (double)bytes / 1e6,
                                      strerror(e));
        }
    }
    close(fd);
    return status;
}

/* Give up a temporary file that every rank has open: free its space first (the close still
 * flushes HDF5's metadata collectively, which must not fail on one rank only), close it on every
 * rank, then remove it. The caller's status stays the first error. */
static int abandon_file(hid_t *file, const char *tmp, MPI_Comm comm, int status) {
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    char message[1024];
    snprintf(message, sizeof message, "%s", strand_error_message());
    if (rank == 0 && truncate(tmp, 0) != 0) { /* nothing more to free */
    }
    MPI_Barrier(comm);
    strand_h5_close(file);
    H5Eclear2(H5E_DEFAULT);
    if (rank == 0) unlink(tmp);
    return strand_error_set(status, __FILE__, __LINE__, "%s", message);
}

/* Collective create of the temporary file with room for `bytes`; the handle is valid on every
 * rank or on none. */
static int create_file(const char *tmp, int64_t bytes, MPI_Comm comm, hid_t *file) {
    int rank, world;
    STRAND_CALL(comm_info(comm, &rank, &world));
    hid_t fapl = H5I_INVALID_HID, fcpl = H5I_INVALID_HID;
    *file = H5I_INVALID_HID;
    strand_h5_quiet();
    STRAND_CALL(probe_shared_file(tmp, comm));
    int status = file_access(comm, tmp, &fapl);
    if (status == STRAND_OK) {
        fcpl = H5Pcreate(H5P_FILE_CREATE);
        status = fcpl < 0 ? strand_h5_error(__FILE__, __LINE__, tmp, "cannot create file properties")
                          : strand_filesum_reserve(fcpl, CKPT_USER_BLOCK, tmp);
    }
    status = strand_agree(comm, status);
    if (status == STRAND_OK) {
        *file = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, fapl);
        status = *file < 0 ? strand_h5_error(__FILE__, __LINE__, tmp, "cannot create the file") : STRAND_OK;
        status = strand_agree(comm, status);
    }
    strand_h5_close(&fapl);
    strand_h5_close(&fcpl);
    if (status != STRAND_OK) {
        strand_h5_close(file);
        if (rank == 0) unlink(tmp);
        return status;
    }
    status = strand_agree(comm, rank == 0 ? reserve_space(tmp, bytes) : STRAND_OK);
    return status == STRAND_OK ? status : abandon_file(file, tmp, comm, status);
}

/* Disk space a file of these tensor sets takes at most: the data, the 1 MiB alignment of large
 * tensors, the user block, and HDF5's object headers and attributes (well under 8 KiB a dataset). */
static int64_t file_bytes_bound(const strand_param_table *table, int n_sets, int64_t extra_bytes, int world) {
    int64_t bytes = CKPT_USER_BLOCK + 65536;
    for (int i = 0; i < table->count; i++) {
        const int64_t data = table->items[i].size * (int64_t)sizeof(real_t);
        bytes += (int64_t)n_sets * (data + (data >= (1 << 20) ? (1 << 20) : 0) + 8192);
    }
    return bytes + extra_bytes + (int64_t)world * 64;
}

/* Flush and close (collective), checksum the file into its header (collective), then on rank 0:
 * drop the unused reservation, the test hook's pause, rename, fsync of the directory. Only a
 * complete, sealed file ever carries the final name. */
static int publish_file(hid_t *file, const char *tmp, const char *final_path, int64_t step, MPI_Comm comm) {
    int rank, world;
    STRAND_CALL(comm_info(comm, &rank, &world));
    int status = H5Fflush(*file, H5F_SCOPE_GLOBAL) < 0
                     ? strand_h5_error(__FILE__, __LINE__, tmp, "cannot flush the file")
                     : STRAND_OK;
    status = strand_agree(comm, status);
    if (status != STRAND_OK) return abandon_file(file, tmp, comm, status);
    if (H5Fclose(*file) < 0) status = strand_h5_error(__FILE__, __LINE__, tmp, "cannot close the file");
    *file = H5I_INVALID_HID;
    status = strand_agree(comm, status);
    if (status == STRAND_OK && rank == 0) {
        /* The reservation past the end of the file is no longer needed. */
        struct stat st;
        if (stat(tmp, &st) == 0 && truncate(tmp, st.st_size) != 0) { /* best effort */
        }
    }
    if (status == STRAND_OK) status = strand_filesum_seal_parallel(tmp, CKPT_USER_BLOCK, comm);
    if (status != STRAND_OK) {
        if (rank == 0) unlink(tmp);
        return status;
    }
    if (rank == 0) {
        const char *sleep_env = getenv("STRAND_FAULT_CKPT_SLEEP");
        const char *step_env = getenv("STRAND_FAULT_CKPT_STEP");
        if (status == STRAND_OK && sleep_env && (!step_env || atoll(step_env) == step))
            strand_sleep(atof(sleep_env));
        /* Sealing synced the file: only the rename and the directory are left to make durable. */
        status = strand_atomic_rename(tmp, final_path);
    }
    return strand_agree(comm, status);
}

/* Parse "ckpt-<digits>.h5" exactly; returns the step or -1. */
static int64_t ckpt_step_of(const char *name) {
    if (strncmp(name, "ckpt-", 5) != 0) return -1;
    const char *p = name + 5;
    if (*p < '0' || *p > '9') return -1;
    int64_t step = 0;
    while (*p >= '0' && *p <= '9') {
        if (step > (INT64_MAX - 9) / 10) return -1;
        step = step * 10 + (*p++ - '0');
    }
    return strcmp(p, ".h5") == 0 ? step : -1;
}

/* Complete checkpoints in dir, sorted by step, newest first. */
static int list_checkpoints(const char *dir, int64_t **steps, int *count) {
    *steps = NULL;
    *count = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT || errno == ENOTDIR) return STRAND_OK;
        STRAND_FAIL(STRAND_ERR_IO, "cannot list %s: %s", dir, strerror(errno));
    }
    int capacity = 0;
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL) {
        int64_t step = ckpt_step_of(entry->d_name);
        if (step < 0) continue;
        if (*count == capacity) {
            capacity = capacity ? 2 * capacity : 16;
            int64_t *grown = strand_alloc(sizeof **steps * (size_t)capacity, "checkpoint list");
            if (!grown) {
                closedir(d);
                strand_free(*steps);
                *steps = NULL;
                STRAND_FAIL(STRAND_ERR_NOMEM, "out of memory listing %s", dir);
            }
            if (*count > 0) memcpy(grown, *steps, sizeof **steps * (size_t)*count);
            strand_free(*steps);
            *steps = grown;
        }
        (*steps)[(*count)++] = step;
    }
    closedir(d);
    for (int i = 1; i < *count; i++) /* insertion sort, descending: directories hold a few files */
        for (int j = i; j > 0 && (*steps)[j] > (*steps)[j - 1]; j--) {
            int64_t t = (*steps)[j];
            (*steps)[j] = (*steps)[j - 1];
            (*steps)[j - 1] = t;
        }
    return STRAND_OK;
}

/* Serial (rank 0): drop all but the newest `keep` checkpoints and any stale temporary file. */
static int prune(const char *dir, int keep) {
    DIR *d = opendir(dir);
    if (!d) STRAND_FAIL(STRAND_ERR_IO, "cannot list %s: %s", dir, strerror(errno));
    struct dirent *entry;
    char path[STRAND_CKPT_PATH_BYTES];
    while ((entry = readdir(d)) != NULL) {
        size_t len = strlen(entry->d_name);
        if (strncmp(entry->d_name, "ckpt-", 5) == 0 && len > 7 &&
            strcmp(entry->d_name + len - 7, ".h5.tmp") == 0) {
            snprintf(path, sizeof path, "%s/%s", dir, entry->d_name);
            unlink(path); /* leftover of a killed writer; never loadable */
        }
    }
    closedir(d);
    if (keep <= 0) return STRAND_OK;
    int64_t *steps;
    int count;
    STRAND_CALL(list_checkpoints(dir, &steps, &count));
    for (int i = keep; i < count; i++) {
        snprintf(path, sizeof path, "%s/ckpt-%" PRId64 ".h5", dir, steps[i]);
        if (unlink(path) != 0 && errno != ENOENT) {
            strand_free(steps);
            STRAND_FAIL(STRAND_ERR_IO, "cannot remove old checkpoint %s: %s", path, strerror(errno));
        }
    }
    strand_free(steps);
    return STRAND_OK;
}

void strand_ckpt_dir(const char *run_dir, char *out, size_t size) {
    snprintf(out, size, "%s/checkpoints", run_dir);
}

void strand_ckpt_meta_init(strand_ckpt_meta *meta, const strand_config *config,
                           const strand_param_table *table) {
    memset(meta, 0, sizeof *meta);
    meta->format_version = STRAND_CKPT_FORMAT_VERSION;
    snprintf(meta->strand_version, sizeof meta->strand_version, "%s", STRAND_VERSION);
    snprintf(meta->real_type, sizeof meta->real_type, "%s", STRAND_REAL_NAME);
    meta->first_loss = meta->last_loss = meta->first_bpb = meta->last_bpb = NAN;
    meta->tokenizer_fingerprint = -1;
    meta->seed = config->seed;
    meta->total_steps = config->steps;
    meta->accum_steps = config->accum_steps;
    meta->n_tensors = table->count;
    for (int i = 0; i < table->count; i++)
        meta->parameters += table->items[i].size;
    strand_config_format(config, meta->config_text, sizeof meta->config_text);
}

/* ---- carried mixer state ---- */

/* One row of a (world, width) dataset per rank: select row `rank`'s first `count` values, or
 * nothing when count is 0 (the rank still takes part in the collective transfer). */
static int select_row(hid_t space, int rank, int64_t count, hid_t *memory) {
    hsize_t n = count > 0 ? (hsize_t)count : 1;
    *memory = H5Screate_simple(1, &n, NULL);
    if (*memory < 0) return -1;
    if (count == 0) return H5Sselect_none(*memory) < 0 || H5Sselect_none(space) < 0 ? -1 : 0;
    hsize_t start[2] = {(hsize_t)rank, 0}, block[2] = {1, (hsize_t)count};
    return H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, block, NULL) < 0 ? -1 : 0;
}

/* Collective transfer of this rank's row of /carry/<name> (a (world, width) dataset). */
static int carry_transfer(hid_t file, const char *path, const char *name, hid_t memory_type, void *row,
                          int64_t count, int rank, int writing) {
    hid_t dataset = H5Dopen2(file, name, H5P_DEFAULT), space = H5I_INVALID_HID, memory = H5I_INVALID_HID;
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    int ok = dataset >= 0 && dxpl >= 0 && H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE) >= 0 &&
             (space = H5Dget_space(dataset)) >= 0 && select_row(space, rank, count, &memory) >= 0;
    if (ok)
        ok = (writing ? H5Dwrite(dataset, memory_type, memory, space, dxpl, row)
                      : H5Dread(dataset, memory_type, memory, space, dxpl, row)) >= 0;
    strand_h5_close(&memory);
    strand_h5_close(&space);
    strand_h5_close(&dxpl);
    strand_h5_close(&dataset);
    if (!ok) {
        char what[300];
        snprintf(what, sizeof what, "cannot %s %s", writing ? "write" : "read", name);
        STRAND_H5_FAIL(path, what);
    }
    return STRAND_OK;
}

static int carry_create(hid_t file, const char *path, const char *name, hid_t type, int world,
                        int64_t width) {
    hsize_t dims[2] = {(hsize_t)world, (hsize_t)(width > 0 ? width : 1)};
    hid_t space = H5Screate_simple(2, dims, NULL), lcpl = H5Pcreate(H5P_LINK_CREATE);
    hid_t dataset = H5I_INVALID_HID;
    if (space >= 0 && lcpl >= 0 && H5Pset_create_intermediate_group(lcpl, 1) >= 0)
        dataset = H5Dcreate2(file, name, type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    strand_h5_close(&space);
    strand_h5_close(&lcpl);
    if (dataset < 0) {
        char what[300];
        snprintf(what, sizeof what, "cannot create %s", name);
        STRAND_H5_FAIL(path, what);
    }
    strand_h5_close(&dataset);
    return STRAND_OK;
}

/* /carry/state (world, widest): each rank's carried mixer state (its row's first count values),
 * /carry/count and /carry/crc32 (world, 1). Written only when some rank carries anything. */
static int write_carry(hid_t file, const char *path, const strand_ckpt_state *state, MPI_Comm comm) {
    int rank, world;
    STRAND_CALL(comm_info(comm, &rank, &world));
    int64_t count = state->carry ? state->carry_count : 0, widest = count;
    STRAND_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &widest, 1, MPI_INT64_T, MPI_MAX, comm));
    if (widest == 0) return STRAND_OK;
    uint32_t crc = strand_crc32(0, state->carry, (size_t)count * sizeof(real_t));
    STRAND_CALL(strand_agree(comm, carry_create(file, path, "/carry/state", FILE_REAL, world, widest)));
    STRAND_CALL(strand_agree(comm, carry_create(file, path, "/carry/count", H5T_STD_I64LE, world, 1)));
    STRAND_CALL(strand_agree(comm, carry_create(file, path, "/carry/crc32", H5T_STD_U32LE, world, 1)));
    STRAND_CALL(strand_agree(
        comm, carry_transfer(file, path, "/carry/state", MEMORY_REAL, (void *)state->carry, count, rank, 1)));
    STRAND_CALL(
        strand_agree(comm, carry_transfer(file, path, "/carry/count", H5T_NATIVE_INT64, &count, 1, rank, 1)));
    STRAND_CALL(
        strand_agree(comm, carry_transfer(file, path, "/carry/crc32", H5T_NATIVE_UINT32, &crc, 1, rank, 1)));
    return STRAND_OK;
}

int strand_ckpt_read_carry(const char *path, real_t *carry, int64_t count, MPI_Comm comm, int *restored) {
    *restored = 0;
    int rank, world;
    STRAND_CALL(comm_info(comm, &rank, &world));
    hid_t fapl = H5I_INVALID_HID, file = H5I_INVALID_HID;
    strand_filesum_info sum;
    STRAND_CALL(strand_filesum_same_everywhere(path, comm, &sum));
    int status = strand_agree(comm, file_access(comm, path, &fapl));
    if (status == STRAND_OK) {
        strand_h5_quiet();
        file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
        status = strand_agree(
            comm,
            file < 0 ? strand_h5_error(__FILE__, __LINE__, path, "cannot open the checkpoint") : STRAND_OK);
    }
    strand_h5_close(&fapl);
    if (status != STRAND_OK) return status;
    /* Present, written by as many ranks, with this rank's count: every rank must agree to use it. */
    int usable =
        H5Lexists(file, "/carry", H5P_DEFAULT) > 0 && H5Lexists(file, "/carry/state", H5P_DEFAULT) > 0;
    if (!usable) H5Eclear2(H5E_DEFAULT);
    if (usable) {
        hid_t dataset = H5Dopen2(file, "/carry/state", H5P_DEFAULT), space = H5I_INVALID_HID;
        hsize_t dims[2] = {0, 0};
        usable = dataset >= 0 && (space = H5Dget_space(dataset)) >= 0 &&
                 H5Sget_simple_extent_ndims(space) == 2 &&
                 H5Sget_simple_extent_dims(space, dims, NULL) == 2 && dims[0] == (hsize_t)world &&
                 dims[1] >= (hsize_t)count;
        strand_h5_close(&space);
        strand_h5_close(&dataset);
    }
    STRAND_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &usable, 1, MPI_INT, MPI_MIN, comm));
    int64_t stored_count = -1;
    uint32_t stored_crc = 0;
    if (usable)
        status = carry_transfer(file, path, "/carry/count", H5T_NATIVE_INT64, &stored_count, 1, rank, 0);
    if (usable && status == STRAND_OK)
        status = carry_transfer(file, path, "/carry/crc32", H5T_NATIVE_UINT32, &stored_crc, 1, rank, 0);
    status = strand_agree(comm, status);
    usable = usable && status == STRAND_OK && stored_count == count;
    STRAND_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &usable, 1, MPI_INT, MPI_MIN, comm));
    if (usable) {
        status = strand_agree(comm,
                              carry_transfer(file, path, "/carry/state", MEMORY_REAL, carry, count, rank, 0));
        if (status == STRAND_OK && strand_crc32(0, carry, (size_t)count * sizeof(real_t)) != stored_crc)
            status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                      "%s: /carry/state: data does not match its crc32 (the file is corrupt)",
                                      path);
        status = strand_agree(comm, status);
        *restored = status == STRAND_OK;
    }
    strand_h5_close(&file);
    return status;
}

int strand_ckpt_write(const char *dir, const strand_ckpt_meta *meta, const strand_ckpt_state *state, int keep,
                      MPI_Comm comm, char *path_out, size_t path_size) {
    int rank, world;
    STRAND_CALL(comm_info(comm, &rank, &world));
    char final_path[STRAND_CKPT_PATH_BYTES], tmp[STRAND_CKPT_PATH_BYTES + 8];
    int status = STRAND_OK;
    if (snprintf(final_path, sizeof final_path, "%s/ckpt-%" PRId64 ".h5", dir, meta->step) >=
        (int)sizeof final_path)
        status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                  "checkpoint directory name too long: %s", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", final_path);
    if (status == STRAND_OK && rank == 0) status = strand_make_dirs(dir);
    STRAND_CALL(strand_agree(comm, status));

    int64_t carry_bytes = state->carry ? state->carry_count * (int64_t)sizeof(real_t) : 0;
    STRAND_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, &carry_bytes, 1, MPI_INT64_T, MPI_MAX, comm));
    const int64_t merge_bytes = state->codec ? 8 * (int64_t)state->codec->n_merges + 8192 : 0;
    const int64_t bytes = file_bytes_bound(
        state->table, MAX_SETS,
        (int64_t)world * (carry_bytes + 16) + (int64_t)sizeof meta->config_text + merge_bytes, world);
    hid_t file;
    STRAND_CALL(create_file(tmp, bytes, comm, &file));
    status = strand_agree(comm, write_ckpt_attributes(file, tmp, meta));
    /* Attributes are collective: every rank writes the same; rank 0 alone writes the merges. */
    if (status == STRAND_OK && state->codec)
        status = strand_agree(comm, strand_tokenizer_write(file, state->codec, rank == 0, tmp));
    if (status == STRAND_OK) {
        const tensor_set sets[MAX_SETS] = {
            {CKPT_GROUPS[0], state->params}, {CKPT_GROUPS[1], state->m}, {CKPT_GROUPS[2], state->v}};
        status = write_tensor_sets(file, tmp, state->table, sets, MAX_SETS, comm);
    }
    if (status == STRAND_OK) status = write_carry(file, tmp, state, comm);
    if (status != STRAND_OK) return abandon_file(&file, tmp, comm, status);
    STRAND_CALL(publish_file(&file, tmp, final_path, meta->step, comm));
    if (rank == 0) status = prune(dir, keep);
    STRAND_CALL(strand_agree(comm, status));
    if (path_out) snprintf(path_out, path_size, "%s", final_path);
    return STRAND_OK;
}

int strand_grads_write(const char *path, const strand_grads_meta *meta, const strand_param_table *table,
                       const real_t *grads, const char *config_text, MPI_Comm comm) {
    char tmp[STRAND_CKPT_PATH_BYTES + 8];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        STRAND_FAIL(STRAND_ERR_INPUT, "output file name too long: %s", path);
    int rank, world;
    STRAND_CALL(comm_info(comm, &rank, &world));
    hid_t file;
    STRAND_CALL(create_file(tmp, file_bytes_bound(table, 1, (int64_t)strlen(config_text) + 65536, world),
                            comm, &file));
    const int64_t version = STRAND_CKPT_FORMAT_VERSION;
    int status = write_string(file, "kind", STRAND_GRADS_KIND, tmp);
    if (status == STRAND_OK) status = strand_h5_write_int_attribute(file, "format_version", version, tmp);
    if (status == STRAND_OK) status = write_string(file, "strand_version", STRAND_VERSION, tmp);
    if (status == STRAND_OK) status = write_string(file, "real_type", STRAND_REAL_NAME, tmp);
    if (status == STRAND_OK)
        status = write_scalar_attribute(file, "step", H5T_STD_I64LE, H5T_NATIVE_INT64, &meta->step, tmp);
    if (status == STRAND_OK) status = strand_h5_write_double_attribute(file, "loss", meta->loss, tmp);
    if (status == STRAND_OK)
        status = strand_h5_write_double_attribute(file, "grad_norm", meta->grad_norm, tmp);
    if (status == STRAND_OK)
        status = write_scalar_attribute(file, "tokens", H5T_STD_I64LE, H5T_NATIVE_INT64, &meta->tokens, tmp);
    if (status == STRAND_OK) status = write_string(file, "checkpoint", meta->checkpoint, tmp);
    if (status == STRAND_OK)
        status = write_scalar_attribute(file, "checkpoint_step", H5T_STD_I64LE, H5T_NATIVE_INT64,
                                        &meta->checkpoint_step, tmp);
    if (status == STRAND_OK) status = strand_h5_write_int_attribute(file, "written_dp", meta->dp, tmp);
    if (status == STRAND_OK) status = strand_h5_write_int_attribute(file, "written_sp", meta->sp, tmp);
    if (status == STRAND_OK) status = strand_h5_write_int_attribute(file, "written_world", meta->world, tmp);
    if (status == STRAND_OK) status = write_string(file, "config", config_text, tmp);
    status = strand_agree(comm, status);
    if (status == STRAND_OK) {
        const tensor_set sets[1] = {{"/grads", (real_t *)grads}};
        status = write_tensor_sets(file, tmp, table, sets, 1, comm);
    }
    if (status != STRAND_OK) return abandon_file(&file, tmp, comm, status);
    return publish_file(&file, tmp, path, -1, comm);
}

/* ---- validation (serial, rank 0) ---- */

static int open_serial(const char *path, hid_t *file) {
    *file = H5I_INVALID_HID;
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) STRAND_FAIL(STRAND_ERR_INPUT, "%s: no such file", path);
        STRAND_FAIL(STRAND_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode)) STRAND_FAIL(STRAND_ERR_INPUT, "%s: is a directory, not a checkpoint file", path);
    strand_h5_quiet();
    htri_t is_hdf5 = H5Fis_hdf5(path);
    H5Eclear2(H5E_DEFAULT);
    if (is_hdf5 <= 0) STRAND_FAIL(STRAND_ERR_INPUT, "%s: not an HDF5 file or corrupt", path);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0) {
        strand_h5_close(&fapl);
        STRAND_H5_FAIL(path, "cannot set file access properties");
    }
    *file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    strand_h5_close(&fapl);
    if (*file < 0) {
        /* A truncated file has a valid superblock: say what HDF5 found, as an input error. */
        char message[1024];
        strand_h5_error(__FILE__, __LINE__, path, "corrupt or truncated HDF5 file");
        snprintf(message, sizeof message, "%s", strand_error_message());
        STRAND_FAIL(STRAND_ERR_INPUT, "%s", message);
    }
    return STRAND_OK;
}

static int require_int(hid_t file, const char *path, const char *name, int64_t *value) {
    int found = 0;
    STRAND_CALL(strand_h5_read_int_attribute(file, name, value, &found, path));
    if (!found)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: missing root attribute '%s' (incomplete checkpoint)", path, name);
    return STRAND_OK;
}

static int require_double(hid_t file, const char *path, const char *name, double *value) {
    int found = 0;
    STRAND_CALL(read_scalar_attribute(file, name, H5T_NATIVE_DOUBLE, value, &found, path));
    if (!found)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: missing root attribute '%s' (incomplete checkpoint)", path, name);
    return STRAND_OK;
}

static int require_string(hid_t file, const char *path, const char *name, char *value, size_t size) {
    int found = 0;
    STRAND_CALL(strand_h5_read_string_attribute(file, name, value, size, &found, path));
    if (!found)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: missing root attribute '%s' (incomplete checkpoint)", path, name);
    return STRAND_OK;
}

/* kind, format version and real type: what must hold before anything else is read. */
static int read_header(hid_t file, const char *path, const char *want_kind, strand_ckpt_meta *meta) {
    char kind[64];
    int found = 0;
    STRAND_CALL(strand_h5_read_string_attribute(file, "kind", kind, sizeof kind, &found, path));
    if (!found || strcmp(kind, want_kind) != 0)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: not a %s (root attribute 'kind' is %s%s%s)", path, want_kind,
                    found ? "'" : "missing", found ? kind : "", found ? "'" : "");
    STRAND_CALL(require_int(file, path, "format_version", &meta->format_version));
    if (meta->format_version != STRAND_CKPT_FORMAT_VERSION)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: checkpoint format version %" PRId64 ", this strand reads %d", path,
                    meta->format_version, STRAND_CKPT_FORMAT_VERSION);
    STRAND_CALL(
        require_string(file, path, "strand_version", meta->strand_version, sizeof meta->strand_version));
    STRAND_CALL(require_string(file, path, "real_type", meta->real_type, sizeof meta->real_type));
    if (strcmp(meta->real_type, STRAND_REAL_NAME) != 0) {
        const int known = strcmp(meta->real_type, "float") == 0 || strcmp(meta->real_type, "double") == 0;
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: checkpoint real type %s, this strand is built for %s%s%s%s", path,
                    meta->real_type, STRAND_REAL_NAME, known ? " (a build with -DSTRAND_REAL=" : "",
                    known ? meta->real_type : "", known ? " reads it)" : "");
    }
    return STRAND_OK;
}

static int parse_config_text(const char *text, strand_config *config);

/* What must hold between the training state's numbers (a bit flipped in one of them, in a file
 * without a whole-file checksum, would otherwise change the continuation silently): AdamW has
 * made one update per step, every step consumed the same tokens, the schedule's learning rate is
 * the step's, the losses are finite once a step is done, the grid is a grid. */
static int check_meta_invariants(const char *path, const strand_ckpt_meta *meta) {
#define INVARIANT(cond, ...)                                                                                 \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__, __VA_ARGS__);                    \
            goto done;                                                                                       \
        }                                                                                                    \
    } while (0)
    strand_config *config = strand_alloc(sizeof *config, "checkpoint configuration");
    if (!config) return STRAND_ERR_NOMEM;
    int status = parse_config_text(meta->config_text, config);
    if (status != STRAND_OK) {
        char message[1024];
        snprintf(message, sizeof message, "%s", strand_error_message());
        status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__, "%s: %s", path, message);
        goto done;
    }
    const char *bad = "inconsistent training state (corrupt checkpoint)";
    INVARIANT(meta->dp >= 1 && meta->sp >= 1 && meta->world == meta->dp * meta->sp && meta->accum_steps >= 1,
              "%s: %s: grid written_dp %d x written_sp %d != written_world %d, or accum_steps %d < 1", path,
              bad, meta->dp, meta->sp, meta->world, meta->accum_steps);
    INVARIANT(meta->total_steps == config->steps && meta->seed == config->seed &&
                  meta->accum_steps == config->accum_steps,
              "%s: %s: total_steps %" PRId64 ", rng_seed %" PRIu64 " or accum_steps %d differ from its "
              "configuration (train.steps %" PRId64 ", train.seed %" PRIu64 ", train.accum_steps %d)",
              path, bad, meta->total_steps, meta->seed, meta->accum_steps, config->steps, config->seed,
              config->accum_steps);
    INVARIANT(meta->step <= meta->total_steps, "%s: %s: step %" PRId64 " is past total_steps %" PRId64, path,
              bad, meta->step, meta->total_steps);
    INVARIANT(meta->adam_t == meta->step,
              "%s: %s: adam_t %" PRId64 " != step %" PRId64 " (one AdamW update a step)", path, bad,
              meta->adam_t, meta->step);
    const int64_t tokens = meta->step * (int64_t)meta->dp * meta->accum_steps * config->seq_len;
    INVARIANT(
        meta->tokens_seen == tokens,
        "%s: %s: tokens_seen %" PRId64 " != step %" PRId64 " x %d windows x %" PRId64 " tokens = %" PRId64,
        path, bad, meta->tokens_seen, meta->step, meta->dp * meta->accum_steps, config->seq_len, tokens);
    const int done = meta->step > 0;
    INVARIANT(done ? isfinite(meta->first_loss) && isfinite(meta->last_loss)
                   : isnan(meta->first_loss) && isnan(meta->last_loss),
              "%s: %s: first_loss %g, last_loss %g after %" PRId64 " steps", path, bad, meta->first_loss,
              meta->last_loss, meta->step);
    INVARIANT(isfinite(meta->elapsed_s) && meta->elapsed_s >= 0, "%s: %s: elapsed_s %g", path, bad,
              meta->elapsed_s);
    if (done) {
        const double lr = strand_lr_at(config, meta->step - 1);
        INVARIANT(fabs(meta->lr - lr) <= 1e-12 * fabs(lr) + 1e-300,
                  "%s: %s: lr %.17g is not the schedule's %.17g at step %" PRId64, path, bad, meta->lr, lr,
                  meta->step);
    }
done:
    strand_free(config);
    return status;
#undef INVARIANT
}

static int read_ckpt_meta(hid_t file, const char *path, strand_ckpt_meta *meta) {
    memset(meta, 0, sizeof *meta);
    STRAND_CALL(read_header(file, path, STRAND_CKPT_KIND, meta));
    int64_t v;
    STRAND_CALL(require_int(file, path, "step", &meta->step));
    STRAND_CALL(require_int(file, path, "data_cursor", &v));
    if (v != meta->step || meta->step < 0)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: data_cursor %" PRId64 " does not match step %" PRId64, path, v,
                    meta->step);
    STRAND_CALL(require_int(file, path, "total_steps", &meta->total_steps));
    STRAND_CALL(require_int(file, path, "tokens_seen", &meta->tokens_seen));
    STRAND_CALL(require_int(file, path, "adam_t", &meta->adam_t));
    STRAND_CALL(require_double(file, path, "lr", &meta->lr));
    int found = 0;
    STRAND_CALL(read_scalar_attribute(file, "rng_seed", H5T_NATIVE_UINT64, &meta->seed, &found, path));
    if (!found)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: missing root attribute 'rng_seed' (incomplete checkpoint)", path);
    STRAND_CALL(require_double(file, path, "first_loss", &meta->first_loss));
    STRAND_CALL(require_double(file, path, "last_loss", &meta->last_loss));
    /* Written since tokenizers other than nucleotide: older checkpoints count bases as tokens. */
    STRAND_CALL(read_scalar_attribute(file, "first_bpb", H5T_NATIVE_DOUBLE, &meta->first_bpb, &found, path));
    if (!found) meta->first_bpb = meta->first_loss / STRAND_LN2;
    STRAND_CALL(read_scalar_attribute(file, "last_bpb", H5T_NATIVE_DOUBLE, &meta->last_bpb, &found, path));
    if (!found) meta->last_bpb = meta->last_loss / STRAND_LN2;
    STRAND_CALL(strand_h5_read_string_attribute(file, "tokenizer", meta->tokenizer, sizeof meta->tokenizer,
                                                &found, path));
    if (!found) meta->tokenizer[0] = '\0';
    STRAND_CALL(strand_h5_read_int_attribute(file, "tokenizer_fingerprint", &meta->tokenizer_fingerprint,
                                             &found, path));
    if (!found) meta->tokenizer_fingerprint = -1;
    STRAND_CALL(require_double(file, path, "elapsed_s", &meta->elapsed_s));
    STRAND_CALL(require_int(file, path, "written_dp", &v));
    meta->dp = (int)v;
    STRAND_CALL(require_int(file, path, "written_sp", &v));
    meta->sp = (int)v;
    STRAND_CALL(require_int(file, path, "written_world", &v));
    meta->world = (int)v;
    STRAND_CALL(require_int(file, path, "accum_steps", &v));
    meta->accum_steps = (int)v;
    STRAND_CALL(require_int(file, path, "parameters", &meta->parameters));
    STRAND_CALL(require_string(file, path, "config", meta->config_text, sizeof meta->config_text));
    return check_meta_invariants(path, meta);
}

/* The dataset at `name` must exist, be a float of this build's size and have the tensor's shape. */
static int check_tensor(hid_t file, const char *path, const char *name, const char *shown,
                        const strand_param_info *p) {
    htri_t exists = H5Lexists(file, name, H5P_DEFAULT);
    if (exists < 0) {
        /* A missing intermediate group makes H5Lexists fail: that is also "missing". */
        H5Eclear2(H5E_DEFAULT);
        exists = 0;
    }
    if (!exists) STRAND_FAIL(STRAND_ERR_INPUT, "%s: missing dataset %s (incomplete checkpoint)", path, name);
    hid_t dataset = H5Dopen2(file, name, H5P_DEFAULT);
    if (dataset < 0) {
        char what[300];
        snprintf(what, sizeof what, "cannot open dataset %s (corrupt)", name);
        STRAND_H5_FAIL(path, what);
    }
    hid_t type = H5Dget_type(dataset), space = H5Dget_space(dataset);
    int status = STRAND_OK;
    hsize_t file_dims[8] = {0}, model_dims[2];
    const int model_ndim = tensor_dims(p, model_dims);
    int ndim = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    if (type < 0 || space < 0 || ndim < 0 || ndim > 8 ||
        H5Sget_simple_extent_dims(space, file_dims, NULL) < 0) {
        status = strand_h5_error(__FILE__, __LINE__, path, "cannot read a dataset's type and shape");
    } else if (H5Tget_class(type) != H5T_FLOAT || H5Tget_size(type) != sizeof(real_t)) {
        status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                  "%s: %s: checkpoint type is not %s (%zu-byte float)", path, shown,
                                  STRAND_REAL_NAME, sizeof(real_t));
    } else {
        int same = ndim == model_ndim;
        for (int d = 0; same && d < ndim; d++)
            same = file_dims[d] == model_dims[d];
        if (!same) {
            char have[64], want[64];
            format_shape(have, sizeof have, ndim, file_dims);
            format_shape(want, sizeof want, model_ndim, model_dims);
            status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                      "%s: %s: checkpoint shape %s, model %s", path, shown, have, want);
        }
    }
    strand_h5_close(&type);
    strand_h5_close(&space);
    strand_h5_close(&dataset);
    return status;
}

typedef struct {
    const strand_param_table *table;
    const char *group;
    char extra[256]; /* the first dataset the model lacks */
    int failed;
} visit_state;

static herr_t visit_dataset(hid_t group, const char *name, const H5L_info_t *info, void *data) {
    visit_state *state = data;
    if (info->type != H5L_TYPE_HARD) return 0;
    hid_t object = H5Oopen(group, name, H5P_DEFAULT);
    if (object < 0) {
        state->failed = 1;
        snprintf(state->extra, sizeof state->extra, "%s/%s", state->group, name);
        return 1;
    }
    int is_dataset = H5Iget_type(object) == H5I_DATASET;
    H5Oclose(object);
    if (!is_dataset) return 0;
    for (int i = 0; i < state->table->count; i++) {
        char want[256];
        snprintf(want, sizeof want, "%s/%s", state->table->items[i].layer, state->table->items[i].name);
        if (strcmp(want, name) == 0) return 0;
    }
    snprintf(state->extra, sizeof state->extra, "%s/%s", state->group, name);
    return 1; /* stop: one is enough to refuse */
}

static int check_no_extra(hid_t file, const char *path, const char *group_name,
                          const strand_param_table *table) {
    hid_t group = H5Gopen2(file, group_name, H5P_DEFAULT);
    if (group < 0) {
        char what[128];
        snprintf(what, sizeof what, "cannot open group %s", group_name);
        STRAND_H5_FAIL(path, what);
    }
    visit_state state = {.table = table, .group = group_name};
    herr_t visited = H5Lvisit(group, H5_INDEX_NAME, H5_ITER_INC, visit_dataset, &state);
    strand_h5_close(&group);
    if (visited < 0 || state.failed) {
        H5Eclear2(H5E_DEFAULT);
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: cannot list the datasets of %s (corrupt)", path, group_name);
    }
    if (state.extra[0])
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: checkpoint tensor %s is not in the model", path, state.extra);
    return STRAND_OK;
}

/* The configuration text of a checkpoint, on top of the defaults. */
static int parse_config_text(const char *text, strand_config *config) {
    strand_config_defaults(config);
    return strand_config_load_text(config, text, "the checkpoint's configuration");
}

int strand_ckpt_config(const strand_ckpt_meta *meta, strand_config *config) {
    return parse_config_text(meta->config_text, config);
}

/* Next "key = value" line of formatted config text: fills "section.key" and value. */
static const char *next_config_line(const char *p, char *section, size_t section_size, char *key,
                                    size_t key_size, char *value, size_t value_size) {
    while (p && *p) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *next = end ? end + 1 : p + len;
        if (len > 0 && p[0] == '[') {
            const char *close = memchr(p, ']', len);
            if (close) snprintf(section, section_size, "%.*s", (int)(close - p - 1), p + 1);
        } else {
            const char *eq = memchr(p, '=', len);
            if (eq) {
                size_t klen = (size_t)(eq - p);
                while (klen > 0 && p[klen - 1] == ' ')
                    klen--;
                snprintf(key, key_size, "%s.%.*s", section, (int)klen, p);
                const char *v = eq + 1;
                while (*v == ' ')
                    v++;
                snprintf(value, value_size, "%.*s", (int)(p + len - v), v);
                return next;
            }
        }
        p = next;
    }
    return NULL;
}

/* Keys that may differ between a checkpoint and the run that resumes it choose where and how the
 * same math runs, not the math: their rows say so (STRAND_KEY_RESUMABLE). */
static int resumable_key(const char *key) {
    const strand_config_key *row = strand_config_find_key(key);
    return row && (row->flags & STRAND_KEY_RESUMABLE);
}

/* Every key that changes the math must match (both sides formatted by this strand). */
static int check_config(const char *path, const strand_ckpt_meta *meta, const strand_config *config,
                        int64_t windows_per_step) {
    strand_config *theirs = strand_alloc(sizeof *theirs, "a configuration");
    char *a = strand_alloc(STRAND_CKPT_CONFIG_BYTES, "configuration text"),
         *b = strand_alloc(STRAND_CKPT_CONFIG_BYTES, "configuration text");
    int status = STRAND_OK;
    if (!theirs || !a || !b) {
        status =
            strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__, "out of memory comparing configurations");
        goto done;
    }
    status = parse_config_text(meta->config_text, theirs);
    if (status != STRAND_OK) {
        char message[1024];
        snprintf(message, sizeof message, "%s", strand_error_message());
        status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__, "%s: %s", path, message);
        goto done;
    }
    strand_config_format(theirs, a, STRAND_CKPT_CONFIG_BYTES);
    strand_config_format(config, b, STRAND_CKPT_CONFIG_BYTES);
    char section_a[64] = "", section_b[64] = "", key_a[160], key_b[160], value_a[4200], value_b[4200];
    const char *pa = a, *pb = b;
    for (;;) {
        pa = next_config_line(pa, section_a, sizeof section_a, key_a, sizeof key_a, value_a, sizeof value_a);
        pb = next_config_line(pb, section_b, sizeof section_b, key_b, sizeof key_b, value_b, sizeof value_b);
        if (!pa || !pb) break;
        if (strcmp(key_a, key_b) != 0) { /* cannot happen: one formatter, one key table */
            status = strand_error_set(STRAND_ERR_INTERNAL, __FILE__, __LINE__,
                                      "config keys out of step: %s, %s", key_a, key_b);
            goto done;
        }
        if (!resumable_key(key_a) && strcmp(value_a, value_b) != 0) {
            status = strand_error_set(
                STRAND_ERR_INPUT, __FILE__, __LINE__,
                "%s: configuration differs from the checkpoint's: %s = %s here, %s in the "
                "checkpoint (a resumed run keeps the math; only parallel.*, run.dir, "
                "data.path, logging, checkpoint.*, train.recompute/offload and FFT strategy keys may change)",
                path, key_a, value_b, value_a);
            goto done;
        }
    }
    if (windows_per_step > 0 && (int64_t)meta->dp * meta->accum_steps != windows_per_step) {
        status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                  "%s: the checkpoint takes %" PRId64
                                  " windows per step (dp %d x train.accum_steps %d), this run %" PRId64
                                  " (dp x train.accum_steps): set train.accum_steps so that they match",
                                  path, (int64_t)meta->dp * meta->accum_steps, meta->dp, meta->accum_steps,
                                  windows_per_step);
    }
done:
    strand_free(theirs);
    strand_free(a);
    strand_free(b);
    return status;
}

/* verified: the caller has just verified the whole file (in parallel); otherwise it is verified
 * here, serially, before HDF5 parses any of it. */
static int check_serial(const char *path, const strand_param_table *table, const strand_config *config,
                        int64_t windows_per_step, strand_ckpt_meta *meta,
                        const strand_filesum_info *verified) {
    strand_filesum_info sum;
    if (verified)
        sum = *verified;
    else
        STRAND_CALL(strand_filesum_verify(path, &sum));
    hid_t file;
    STRAND_CALL(open_serial(path, &file));
    int status = read_ckpt_meta(file, path, meta);
    if (status == STRAND_OK && table) {
        if (meta->n_tensors == 0) meta->n_tensors = table->count;
        for (int s = 0; s < MAX_SETS && status == STRAND_OK; s++) {
            for (int i = 0; i < table->count && status == STRAND_OK; i++) {
                const strand_param_info *p = &table->items[i];
                char name[256], shown[256];
                tensor_path(name, sizeof name, CKPT_GROUPS[s], p);
                /* Parameters by their table name, moments with their group in front. */
                snprintf(shown, sizeof shown, "%s%s%s/%s", s ? CKPT_GROUPS[s] + 1 : "", s ? "/" : "",
                         p->layer, p->name);
                status = check_tensor(file, path, name, shown, p);
            }
            if (status == STRAND_OK) status = check_no_extra(file, path, CKPT_GROUPS[s], table);
        }
    }
    if (status == STRAND_OK && config) status = check_config(path, meta, config, windows_per_step);
    strand_h5_close(&file);
    return status;
}

int strand_ckpt_check(const char *path, const strand_param_table *table, const strand_config *config,
                      int64_t windows_per_step, MPI_Comm comm, strand_ckpt_meta *meta) {
    int rank, world;
    STRAND_CALL(comm_info(comm, &rank, &world));
    /* Every rank checksums its slice of the file: the whole file is verified at the speed of all
     * ranks together before rank 0's HDF5 parses it (and a rank that cannot see it is named). */
    strand_filesum_info sum;
    STRAND_CALL(strand_filesum_verify_parallel(path, comm, &sum));
    int status = rank == 0 ? check_serial(path, table, config, windows_per_step, meta, &sum) : STRAND_OK;
    STRAND_CALL(strand_agree(comm, status));
    STRAND_CALL_MPI(MPI_Bcast(meta, (int)sizeof *meta, MPI_BYTE, 0, comm));
    return STRAND_OK;
}

/* ---- finding the latest ---- */

static int find_serial(const char *path, int required, const strand_param_table *table,
                       const strand_config *config, int64_t windows_per_step, char *path_out,
                       size_t path_size, strand_ckpt_meta *meta, int *found) {
    *found = 0;
    struct stat st;
    if (stat(path, &st) != 0) {
        if (!required && errno == ENOENT) return STRAND_OK;
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: %s", path, strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) {
        STRAND_CALL(check_serial(path, table, config, windows_per_step, meta, NULL));
        snprintf(path_out, path_size, "%s", path);
        *found = 1;
        return STRAND_OK;
    }
    char dir[STRAND_CKPT_PATH_BYTES];
    strand_ckpt_dir(path, dir, sizeof dir);
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) snprintf(dir, sizeof dir, "%s", path);
    int64_t *steps;
    int count;
    STRAND_CALL(list_checkpoints(dir, &steps, &count));
    if (count == 0) {
        strand_free(steps);
        if (required) STRAND_FAIL(STRAND_ERR_INPUT, "%s: no checkpoint (ckpt-<step>.h5) in %s", path, dir);
        return STRAND_OK;
    }
    char first_error[1024] = "";
    int first_code = STRAND_OK;
    for (int i = 0; i < count; i++) {
        char candidate[STRAND_CKPT_PATH_BYTES + 32];
        snprintf(candidate, sizeof candidate, "%s/ckpt-%" PRId64 ".h5", dir, steps[i]);
        int status = check_serial(candidate, table, config, windows_per_step, meta, NULL);
        if (status == STRAND_OK && meta->step != steps[i])
            status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                      "%s: step attribute %" PRId64 " does not match the file name",
                                      candidate, meta->step);
        if (status == STRAND_OK) {
            if (first_error[0]) fprintf(stderr, "strand: note: using %s\n", candidate);
            snprintf(path_out, path_size, "%s", candidate);
            *found = 1;
            strand_free(steps);
            return STRAND_OK;
        }
        if (!first_error[0]) {
            snprintf(first_error, sizeof first_error, "%s", strand_error_message());
            first_code = status;
        }
        fprintf(stderr, "strand: note: skipping %s\n", strand_error_message());
    }
    strand_free(steps);
    /* Never fall back to a fresh start over checkpoints that exist: it would prune them. */
    STRAND_FAIL(first_code, "%s (no checkpoint in %s loads)", first_error, dir);
}

int strand_ckpt_find(const char *path, int required, const strand_param_table *table,
                     const strand_config *config, int64_t windows_per_step, MPI_Comm comm, char *path_out,
                     size_t path_size, strand_ckpt_meta *meta, int *found) {
    int rank, world;
    STRAND_CALL(comm_info(comm, &rank, &world));
    int status = rank == 0 ? find_serial(path, required, table, config, windows_per_step, path_out, path_size,
                                         meta, found)
                           : STRAND_OK;
    STRAND_CALL(strand_agree(comm, status));
    STRAND_CALL_MPI(MPI_Bcast(found, 1, MPI_INT, 0, comm));
    if (!*found) return STRAND_OK;
    STRAND_CALL_MPI(MPI_Bcast(path_out, (int)path_size, MPI_CHAR, 0, comm));
    STRAND_CALL_MPI(MPI_Bcast(meta, (int)sizeof *meta, MPI_BYTE, 0, comm));
    return STRAND_OK;
}

/* ---- reading ---- */

/* This rank's rows of one tensor (collective read), then everyone's rows (all-gather). */
static int read_tensor(hid_t file, const char *path, const char *name, const strand_param_info *p,
                       real_t *data, int world, int rank, hid_t dxpl, uint32_t *crc_local,
                       uint32_t *crc_stored) {
    hid_t dataset = H5Dopen2(file, name, H5P_DEFAULT);
    int status = STRAND_OK, found = 0;
    if (dataset < 0) {
        char what[400];
        snprintf(what, sizeof what, "cannot open %s", name);
        STRAND_H5_FAIL(path, what);
    }
    status = read_scalar_attribute(dataset, "crc32", H5T_NATIVE_UINT32, crc_stored, &found, path);
    if (status != STRAND_OK) goto done;
    if (!found) {
        status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__, "%s: %s has no crc32 attribute", path,
                                  name);
        goto done;
    }
    status = transfer_rows(dataset, path, name, p, data, world, rank, dxpl, 0, crc_local, -1, -1);
done:
    strand_h5_close(&dataset);
    return status;
}

static int gather_rows(const strand_param_info *p, real_t *data, int world, int *counts, int *displs,
                       MPI_Comm comm, const char *path) {
    if (world == 1) return STRAND_OK;
    int64_t row0, rows, cols = p->size / p->shape[0];
    for (int r = 0; r < world; r++) {
        tensor_slice(p, world, r, &row0, &rows, &cols);
        counts[r] = (int)rows;
        displs[r] = (int)row0;
    }
    MPI_Datatype row;
    if (MPI_Type_contiguous((int)cols, STRAND_MPI_REAL, &row) != MPI_SUCCESS ||
        MPI_Type_commit(&row) != MPI_SUCCESS)
        STRAND_FAIL(STRAND_ERR_MPI, "%s: cannot make an MPI row type", path);
    int ok = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data + p->offset, counts, displs, row,
                            comm) == MPI_SUCCESS;
    MPI_Type_free(&row);
    if (!ok) STRAND_FAIL(STRAND_ERR_MPI, "%s: MPI_Allgatherv of %s/%s failed", path, p->layer, p->name);
    return STRAND_OK;
}

int strand_ckpt_read(const char *path, const strand_ckpt_state *state, MPI_Comm comm) {
    int rank, world;
    STRAND_CALL(comm_info(comm, &rank, &world));
    const strand_param_table *table = state->table;
    for (int i = 0; i < table->count; i++) /* row counts and displacements are ints for MPI */
        if (table->items[i].shape[0] > INT_MAX || table->items[i].size / table->items[i].shape[0] > INT_MAX)
            STRAND_FAIL(STRAND_ERR_INPUT, "%s/%s: too large to read (rows or row length above 2^31)",
                        table->items[i].layer, table->items[i].name);
    const int n = table->count * MAX_SETS;
    uint32_t *local = strand_alloc((size_t)n * sizeof *local, "checksums"),
             *stored = strand_alloc((size_t)n * sizeof *stored, "checksums");
    uint32_t *all = strand_alloc((size_t)n * (size_t)world * sizeof *all, "checksums");
    int *counts = strand_alloc((size_t)world * sizeof *counts, "row counts"),
        *displs = strand_alloc((size_t)world * sizeof *displs, "row offsets");
    hid_t fapl = H5I_INVALID_HID, dxpl = H5Pcreate(H5P_DATASET_XFER), file = H5I_INVALID_HID;
    int status = STRAND_OK;
    if (!local || !stored || !all || !counts || !displs)
        status = strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__, "%s: out of memory", path);
    else if (dxpl < 0 || H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE) < 0)
        status = strand_h5_error(__FILE__, __LINE__, path, "cannot set up collective transfers");
    /* H5Pset_fapl_mpio duplicates the communicator: a collective every rank must reach. */
    STRAND_CALL_GOTO(status, done, strand_agree(comm, status));
    STRAND_CALL_GOTO(status, done, strand_agree(comm, file_access(comm, path, &fapl)));
    /* Every rank opens the file itself (collective H5Fopen): one that cannot, or that sees another
     * copy than the one strand_ckpt_check/find verified, is named here instead of leaving the
     * others inside HDF5. */
    strand_filesum_info sum;
    STRAND_CALL_GOTO(status, done, strand_filesum_same_everywhere(path, comm, &sum));
    file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    status = file < 0 ? strand_h5_error(__FILE__, __LINE__, path, "cannot open the checkpoint") : STRAND_OK;
    STRAND_CALL_GOTO(status, done, strand_agree(comm, status));
    real_t *arrays[MAX_SETS] = {state->params, state->m, state->v};
    for (int s = 0; s < MAX_SETS && status == STRAND_OK; s++)
        for (int i = 0; i < table->count && status == STRAND_OK; i++) {
            const strand_param_info *p = &table->items[i];
            char name[256];
            tensor_path(name, sizeof name, CKPT_GROUPS[s], p);
            const int k = s * table->count + i;
            status = read_tensor(file, path, name, p, arrays[s], world, rank, dxpl, &local[k], &stored[k]);
            status = strand_agree(comm, status);
            if (status == STRAND_OK) status = gather_rows(p, arrays[s], world, counts, displs, comm, path);
        }
    if (status != STRAND_OK) goto done;
    if (MPI_Allgather(local, n, MPI_UINT32_T, all, n, MPI_UINT32_T, comm) != MPI_SUCCESS) {
        status = strand_error_set(STRAND_ERR_MPI, __FILE__, __LINE__, "%s: MPI_Allgather of checksums failed",
                                  path);
        goto done;
    }
    for (int k = 0; k < n && status == STRAND_OK; k++) {
        const strand_param_info *p = &table->items[k % table->count];
        if (combine_crcs(all + k, n, p, world) != stored[k]) {
            char name[256];
            tensor_path(name, sizeof name, CKPT_GROUPS[k / table->count], p);
            status =
                strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                 "%s: %s: data does not match its crc32 (the file is corrupt)", path, name);
        }
    }
done:
    strand_h5_close(&file);
    strand_h5_close(&fapl);
    strand_h5_close(&dxpl);
    strand_free(local);
    strand_free(stored);
    strand_free(all);
    strand_free(counts);
    strand_free(displs);
    return strand_agree(comm, status);
}

/* ---- strand info ---- */

int strand_ckpt_probe(const char *path, int *kind) {
    *kind = 0;
    hid_t file;
    STRAND_CALL(open_serial(path, &file));
    char text[64];
    int found = 0;
    int status = strand_h5_read_string_attribute(file, "kind", text, sizeof text, &found, path);
    if (status == STRAND_OK && found) {
        if (strcmp(text, STRAND_CKPT_KIND) == 0) *kind = 1;
        if (strcmp(text, STRAND_GRADS_KIND) == 0) *kind = 2;
    }
    strand_h5_close(&file);
    return status;
}

typedef struct {
    int64_t elements;
    int count;
} listing;

static herr_t print_dataset(hid_t group, const char *name, const H5L_info_t *info, void *data) {
    listing *list = data;
    if (info->type != H5L_TYPE_HARD) return 0;
    hid_t dataset = H5Oopen(group, name, H5P_DEFAULT);
    if (dataset < 0) return -1;
    if (H5Iget_type(dataset) == H5I_DATASET) {
        hid_t space = H5Dget_space(dataset);
        hsize_t dims[8] = {0};
        int ndim = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
        if (ndim >= 0 && ndim <= 8 && H5Sget_simple_extent_dims(space, dims, NULL) >= 0) {
            char shape[64];
            format_shape(shape, sizeof shape, ndim, dims);
            int64_t n = 1;
            for (int d = 0; d < ndim; d++)
                n *= (int64_t)dims[d];
            printf("    %-40s %-16s %" PRId64 "\n", name, shape, n);
            list->elements += n;
            list->count++;
        }
        strand_h5_close(&space);
    }
    H5Oclose(dataset);
    return 0;
}

static int print_group(hid_t file, const char *path, const char *group_name, listing *list) {
    hid_t group = H5Gopen2(file, group_name, H5P_DEFAULT);
    if (group < 0) {
        char what[128];
        snprintf(what, sizeof what, "cannot open group %s", group_name);
        STRAND_H5_FAIL(path, what);
    }
    printf("  %s:\n", group_name);
    herr_t visited = H5Lvisit(group, H5_INDEX_NAME, H5_ITER_INC, print_dataset, list);
    strand_h5_close(&group);
    if (visited < 0) STRAND_H5_FAIL(path, "cannot list the tensors");
    return STRAND_OK;
}

/* A few configuration keys that say what the model is. */
static void print_config_summary(const char *text) {
    static const char *const shown[] = {"model.d_model", "model.layers", "model.norm", "model.mlp",
                                        "train.seq_len", "train.steps",  "train.lr",   "train.accum_steps",
                                        "train.seed",    "data.path"};
    char section[64] = "", key[160], value[4200];
    printf("  config:");
    const char *p = text;
    while ((p = next_config_line(p, section, sizeof section, key, sizeof key, value, sizeof value)) != NULL)
        for (size_t i = 0; i < sizeof shown / sizeof *shown; i++)
            if (strcmp(key, shown[i]) == 0) printf(" %s=%s", key, value);
    printf("\n");
}

int strand_ckpt_print_info(const char *path) {
    strand_filesum_info sum;
    STRAND_CALL(strand_filesum_verify(path, &sum));
    hid_t file;
    STRAND_CALL(open_serial(path, &file));
    strand_ckpt_meta *meta = strand_alloc(sizeof *meta, "checkpoint metadata");
    if (!meta) {
        strand_h5_close(&file);
        STRAND_FAIL(STRAND_ERR_NOMEM, "out of memory reading %s", path);
    }
    int kind = 0, status = strand_ckpt_probe(path, &kind);
    listing list = {0, 0};
    if (status == STRAND_OK && kind == 1) {
        status = read_ckpt_meta(file, path, meta);
        if (status == STRAND_OK) {
            printf("strand checkpoint: %s\n", path);
            printf("  format %" PRId64 ", written by strand %s, real type %s\n", meta->format_version,
                   meta->strand_version, meta->real_type);
            char checksum[160];
            strand_filesum_describe(&sum, checksum, sizeof checksum);
            printf("  file checksum: %s\n", checksum);
            printf("  step %" PRId64 " of %" PRId64 " (next step %" PRId64 "), tokens seen %" PRId64
                   ", AdamW t %" PRId64 ", lr %.6g\n",
                   meta->step, meta->total_steps, meta->step + 1, meta->tokens_seen, meta->adam_t, meta->lr);
            printf("  loss step 1 %.6g, step %" PRId64
                   " %.6g (nats/token; %.4f -> %.4f bits/base); %.1f s of "
                   "training\n",
                   meta->first_loss, meta->step, meta->last_loss, meta->first_bpb, meta->last_bpb,
                   meta->elapsed_s);
            if (meta->tokenizer[0])
                printf(
                    "  tokenizer %s (fingerprint %08llx)\n", meta->tokenizer,
                    (unsigned long long)(meta->tokenizer_fingerprint >= 0 ? meta->tokenizer_fingerprint : 0));
            printf("  written at world %d (dp %d x sp %d), train.accum_steps %d, rng seed %" PRIu64 "\n",
                   meta->world, meta->dp, meta->sp, meta->accum_steps, meta->seed);
            print_config_summary(meta->config_text);
            printf(
                "  tensors (name, shape, elements); AdamW moments mirror /params under /optim/m, /optim/v\n");
            status = print_group(file, path, "/params", &list);
            if (status == STRAND_OK)
                printf("  parameters: %" PRId64 " in %d tensors\n", list.elements, list.count);
            /* The shapes must add up to the recorded count: a damaged shape is not a summary. */
            if (status == STRAND_OK && list.elements != meta->parameters)
                status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                          "%s: the tensors' shapes add up to %" PRId64
                                          " parameters, the checkpoint records %" PRId64 " (corrupt)",
                                          path, list.elements, meta->parameters);
        }
    } else if (status == STRAND_OK && kind == 2) {
        status = read_header(file, path, STRAND_GRADS_KIND, meta);
        int64_t step = 0, cstep = 0;
        double loss = NAN, norm = NAN;
        char ckpt[STRAND_CKPT_PATH_BYTES] = "";
        if (status == STRAND_OK) status = require_int(file, path, "step", &step);
        if (status == STRAND_OK) status = require_int(file, path, "checkpoint_step", &cstep);
        if (status == STRAND_OK) status = require_double(file, path, "loss", &loss);
        if (status == STRAND_OK) status = require_double(file, path, "grad_norm", &norm);
        if (status == STRAND_OK) status = require_string(file, path, "checkpoint", ckpt, sizeof ckpt);
        if (status == STRAND_OK) {
            printf("strand gradients: %s\n", path);
            printf("  step %" PRId64 " from checkpoint %s (step %" PRId64
                   "), loss %.9g, gradient norm %.9g\n",
                   step, ckpt, cstep, loss, norm);
            status = print_group(file, path, "/grads", &list);
            if (status == STRAND_OK)
                printf("  elements: %" PRId64 " in %d tensors\n", list.elements, list.count);
        }
    } else if (status == STRAND_OK) {
        status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__, "%s: not a strand checkpoint", path);
    }
    strand_h5_close(&file);
    strand_free(meta);
    return status;
}
