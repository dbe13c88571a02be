/* Checkpoint tests under MPI (1 to 4 ranks).
 *   test_ckpt unit                     strand_crc32 equals zlib's crc32; round trip bit for bit; reshard
 * (written at 2 ranks, read at 3; written at 4, read at 1, on sub-communicators); refusals (shape, missing
 * and extra tensors, format version, real type, configuration, truncated, random bytes, not HDF5), every one
 *                                      agreed by all ranks; latest-checkpoint scan and pruning
 *   test_ckpt bench DIR LAYERS D       write and read bandwidth of a d_model D model with LAYERS
 *                                      blocks (no training), one JSON line */
#define _POSIX_C_SOURCE 200809L
#include "test_tmpdir.h"
#include "test_util.h"

#include "strand/ckpt.h"
#include "core/crc32.h"
#include "train/optim.h"
#include "strand/config.h"
#include "strand/dataset.h"
#include "strand/dist.h"
#include "core/filesum.h"
#include "strand/layout.h"
#include "strand/model.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <zlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int world_rank, world_size;
static char tmpdir[256];

/* A small model-like table: shapes that do not divide evenly over 2, 3 or 4 ranks, vectors,
 * a single-row matrix and a tensor with fewer rows than ranks. */
typedef struct {
    strand_param_table table;
    real_t *params, *m, *v;
} tensors;

static void declare(tensors *t, int variant) {
    memset(t, 0, sizeof *t);
    strand_params_declare(&t->table, "embedding", "weight", 8, 6, STRAND_INIT_NORMAL, 0.02, 1, NULL);
    strand_params_declare(&t->table, "block0.norm1", "weight", 6, 0, STRAND_INIT_ONES, 0, 0, NULL);
    strand_params_declare(&t->table, "block0.mixer", "weight", 64, variant == 1 ? 3 : 4, STRAND_INIT_NORMAL,
                          0.02, 1, NULL);
    strand_params_declare(&t->table, "block0.mlp.fc", "weight", 13, 6, STRAND_INIT_NORMAL, 0.02, 1, NULL);
    strand_params_declare(&t->table, "block0.mlp.fc", "bias", 13, 0, STRAND_INIT_ZEROS, 0, 0, NULL);
    strand_params_declare(&t->table, "block0.mlp.proj", "weight", 1, 13, STRAND_INIT_NORMAL, 0.02, 1, NULL);
    strand_params_declare(&t->table, "final_norm", "weight", 2, 0, STRAND_INIT_ONES, 0, 0, NULL);
    if (variant != 2) /* variant 2 lacks a tensor the checkpoint has */
        strand_params_declare(&t->table, "head", "weight", 8, 6, STRAND_INIT_NORMAL, 0.02, 1, NULL);
    t->params = strand_alloc(sizeof(real_t) * (size_t)t->table.total, "params");
    t->m = strand_alloc(sizeof(real_t) * (size_t)t->table.total, "m");
    t->v = strand_alloc(sizeof(real_t) * (size_t)t->table.total, "v");
}

static void fill(tensors *t, uint64_t seed) {
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < t->table.total; i++) {
        /* xorshift: arbitrary bit patterns, including tiny and negative values */
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        t->params[i] = (real_t)((double)(int64_t)x / 9.2e18);
        t->m[i] = (real_t)((double)(x >> 11) * 1e-20);
        t->v[i] = (real_t)((double)(x & 0xffff) * 1.000001e-9);
    }
}

static void release(tensors *t) {
    strand_free(t->params);
    strand_free(t->m);
    strand_free(t->v);
    strand_params_free(&t->table);
}

static strand_ckpt_state state_of(tensors *t) {
    strand_ckpt_state s = {.table = &t->table, .params = t->params, .m = t->m, .v = t->v};
    return s;
}

static strand_config config;
static strand_ckpt_meta meta_out, meta_in;

static void make_meta(strand_ckpt_meta *meta, const strand_param_table *table, int64_t step, MPI_Comm comm) {
    int size;
    MPI_Comm_size(comm, &size);
    strand_ckpt_meta_init(meta, &config, table);
    meta->step = step;
    /* Consistent with the configuration: strand_ckpt_check refuses state that is not. */
    meta->tokens_seen = step * config.accum_steps * config.seq_len;
    meta->adam_t = step;
    meta->lr = step > 0 ? strand_lr_at(&config, step - 1) : 0;
    meta->first_loss = 2.5;
    meta->last_loss = 1.25;
    meta->elapsed_s = 3.5;
    meta->dp = 1;
    meta->sp = size;
    meta->world = size;
}

/* Tensors only where the table lays them out: padding between them is not part of a checkpoint. */
static int same_tensors(const tensors *a, const tensors *b) {
    for (int i = 0; i < a->table.count; i++) {
        const strand_param_info *p = &a->table.items[i];
        size_t bytes = sizeof(real_t) * (size_t)p->size;
        if (memcmp(a->params + p->offset, b->params + p->offset, bytes) != 0 ||
            memcmp(a->m + p->offset, b->m + p->offset, bytes) != 0 ||
            memcmp(a->v + p->offset, b->v + p->offset, bytes) != 0)
            return 0;
    }
    return 1;
}

/* Every rank of comm returned the same status. */
static int agreed(MPI_Comm comm, int status) {
    int lo = status, hi = status;
    MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_INT, MPI_MIN, comm);
    MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_INT, MPI_MAX, comm);
    return lo == hi;
}

/* Write a checkpoint of `src` at step in dir over comm, then read it at `reader` (may be a
 * different communicator) and compare bit for bit. */
static void round_trip(const char *label, MPI_Comm writer, MPI_Comm reader, const char *dir, int64_t step) {
    tensors src, dst;
    declare(&src, 0);
    declare(&dst, 0);
    fill(&src, (uint64_t)step);
    fill(&dst, 999); /* garbage to be overwritten */
    char path[STRAND_CKPT_PATH_BYTES] = "";
    if (writer != MPI_COMM_NULL) {
        make_meta(&meta_out, &src.table, step, writer);
        strand_ckpt_state s = state_of(&src);
        int status = strand_ckpt_write(dir, &meta_out, &s, 0, writer, path, sizeof path);
        if (status) fprintf(stderr, "%s: write failed: %s\n", label, strand_error_message());
        CHECK(status == STRAND_OK);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    snprintf(path, sizeof path, "%s/ckpt-%lld.h5", dir, (long long)step);
    if (reader != MPI_COMM_NULL) {
        int status = strand_ckpt_check(path, &dst.table, &config, 0, reader, &meta_in);
        if (status == STRAND_OK) {
            strand_ckpt_state d = state_of(&dst);
            status = strand_ckpt_read(path, &d, reader);
        }
        if (status) fprintf(stderr, "%s: read failed: %s\n", label, strand_error_message());
        CHECK(status == STRAND_OK);
        CHECK_MSG(same_tensors(&src, &dst), "%s: tensors differ after the round trip", label);
        CHECK(meta_in.step == step);
        CHECK(meta_in.tokens_seen == step * config.seq_len);
        CHECK(meta_in.adam_t == step);
        CHECK(meta_in.lr == strand_lr_at(&config, step - 1));
        CHECK(meta_in.first_loss == 2.5 && meta_in.last_loss == 1.25 && meta_in.elapsed_s == 3.5);
        CHECK(meta_in.seed == config.seed);
        CHECK(strcmp(meta_in.real_type, STRAND_REAL_NAME) == 0);
        CHECK(strcmp(meta_in.config_text, meta_out.config_text) == 0 || writer == MPI_COMM_NULL);
    }
    release(&src);
    release(&dst);
}

static MPI_Comm first_ranks(int n) {
    MPI_Comm comm;
    MPI_Comm_split(MPI_COMM_WORLD, world_rank < n ? 0 : MPI_UNDEFINED, world_rank, &comm);
    return comm;
}

/* The fast CRC equals zlib's for every length around the 16/64-byte folding steps, any
 * alignment, and when continued piece by piece. */
static void test_crc(void) {
    enum { N = 5000 };
    static unsigned char bytes[N + 64];
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < N + 64; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        bytes[i] = (unsigned char)x;
    }
    int bad = 0;
    for (int offset = 0; offset < 8; offset++)
        for (int n = 0; n <= 300; n++)
            bad += strand_crc32(0, bytes + offset, (size_t)n) != (uint32_t)crc32(0, bytes + offset, (uInt)n);
    CHECK_MSG(bad == 0, "%d lengths differ from zlib", bad);
    uint32_t whole = (uint32_t)crc32(0, bytes, N), pieces = 0;
    for (int at = 0, n = 1; at < N; at += n, n = n * 3 + 7)
        pieces = strand_crc32(pieces, bytes + at, (size_t)(at + n <= N ? n : N - at));
    CHECK_MSG(pieces == whole, "continued CRC %08x, zlib %08x", pieces, whole);
    CHECK(strand_crc32(0, "123456789", 9) == 0xCBF43926u); /* the CRC-32 check value */
}

static void test_round_trip_and_reshard(void) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/rt", tmpdir);
    round_trip("same world", MPI_COMM_WORLD, MPI_COMM_WORLD, dir, 10);
    /* Written at 2 ranks, read at 3 (or at what this world has). */
    MPI_Comm two = first_ranks(2), three = first_ranks(3);
    round_trip("2 -> 3", two, three, dir, 20);
    /* Written at the whole world (4 in the np4 run), read by rank 0 alone. */
    MPI_Comm self = world_rank == 0 ? MPI_COMM_SELF : MPI_COMM_NULL;
    round_trip("world -> 1", MPI_COMM_WORLD, self, dir, 30);
    if (two != MPI_COMM_NULL) MPI_Comm_free(&two);
    if (three != MPI_COMM_NULL) MPI_Comm_free(&three);
}

/* Serial edits of a checkpoint (rank 0) to make refusals. */
static void edit_file(const char *path, const char *what) {
    if (world_rank == 0) {
        hid_t file = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
        CHECK(file >= 0);
        if (strcmp(what, "delete") == 0) {
            CHECK(H5Ldelete(file, "/optim/v/block0.mlp.fc/bias", H5P_DEFAULT) >= 0);
        } else if (strcmp(what, "version") == 0) {
            CHECK(H5Adelete(file, "format_version") >= 0);
            CHECK(strand_h5_write_int_attribute(file, "format_version", 2, path) == STRAND_OK);
        } else if (strcmp(what, "real") == 0) {
            CHECK(H5Adelete(file, "real_type") >= 0);
            CHECK(strand_h5_write_string_attribute(file, "real_type", "bfloat16", path) == STRAND_OK);
        }
        H5Fclose(file);
        /* As a tool that rewrites the file and its checksum would: the checks behind the
         * whole-file checksum must still refuse. */
        CHECK(strand_filesum_seal(path, 1 << 20) == STRAND_OK);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

static void copy_file(const char *from, const char *to) {
    if (world_rank == 0) {
        char command[1600];
        snprintf(command, sizeof command, "cp '%s' '%s'", from, to);
        CHECK(system(command) == 0);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

/* Overwrite `bytes` bytes at `offset` (negative: from the end; 0 bytes: truncate there). */
static void damage(const char *path, long offset, int bytes) {
    if (world_rank == 0) {
        struct stat st;
        CHECK(stat(path, &st) == 0);
        long at = offset >= 0 ? offset : (long)st.st_size + offset;
        if (bytes == 0) {
            CHECK(truncate(path, at) == 0);
        } else {
            int fd = open(path, O_WRONLY);
            CHECK(fd >= 0);
            unsigned char junk[4096];
            for (int i = 0; i < bytes && i < (int)sizeof junk; i++)
                junk[i] = (unsigned char)(i * 37 + 11);
            CHECK(pwrite(fd, junk, (size_t)bytes, at) == bytes);
            close(fd);
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

/* Check + read of path with a table of `variant`; expects a refusal matching `needle`, agreed by
 * every rank. */
static void expect_refusal(const char *label, const char *path, int variant, const strand_config *with,
                           int64_t windows, const char *needle) {
    tensors dst;
    declare(&dst, variant);
    int status = strand_ckpt_check(path, &dst.table, with, windows, MPI_COMM_WORLD, &meta_in);
    if (status == STRAND_OK) {
        strand_ckpt_state d = state_of(&dst);
        status = strand_ckpt_read(path, &d, MPI_COMM_WORLD);
    }
    CHECK_MSG(status != STRAND_OK, "%s: accepted", label);
    CHECK_MSG(agreed(MPI_COMM_WORLD, status), "%s: ranks disagree", label);
    CHECK_MSG(strstr(strand_error_message(), needle) != NULL, "%s: message '%s' lacks '%s'", label,
              strand_error_message(), needle);
    if (world_rank == 0) fprintf(stderr, "refused (%s): %s\n", label, strand_error_message());
    release(&dst);
}

/* Flip one bit of a scalar root attribute in place (its stored bytes, as a disk would), with or
 * without rewriting the whole-file checksum to match. first_loss becomes NaN (its sign and
 * exponent bits set) so that the invariants can see it. */
static void flip_attribute_bit(const char *path, const char *name, int reseal) {
    hid_t file = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t attribute = H5Aopen(file, name, H5P_DEFAULT);
    hid_t type = H5Aget_type(attribute);
    CHECK(file >= 0 && attribute >= 0 && type >= 0);
    unsigned char bytes[8] = {0};
    const size_t size = H5Tget_size(type);
    CHECK(size <= sizeof bytes && H5Aread(attribute, type, bytes) >= 0);
    if (strcmp(name, "first_loss") == 0)
        memset(bytes + 6, 0xff, 2);
    else
        bytes[0] ^= 0x04;
    CHECK(H5Awrite(attribute, type, bytes) >= 0);
    H5Tclose(type);
    H5Aclose(attribute);
    H5Fclose(file);
    if (reseal) CHECK(strand_filesum_seal(path, 1 << 20) == STRAND_OK);
}

/* The same edit without the new checksum: refused before HDF5 reads it. */
static void expect_unsealed_refusal(const char *label, const char *good, const char *path, const char *what) {
    copy_file(good, path);
    if (world_rank == 0) {
        hid_t file = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
        CHECK(file >= 0);
        CHECK(strand_h5_write_int_attribute(file, what, 12345, path) == STRAND_OK);
        H5Fclose(file);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    expect_refusal(label, path, 0, NULL, 0, "checksum");
}

static void test_refusals(void) {
    char dir[512], good[700], path[700];
    snprintf(dir, sizeof dir, "%s/bad", tmpdir);
    tensors src;
    declare(&src, 0);
    fill(&src, 5);
    make_meta(&meta_out, &src.table, 5, MPI_COMM_WORLD);
    strand_ckpt_state s = state_of(&src);
    CHECK(strand_ckpt_write(dir, &meta_out, &s, 0, MPI_COMM_WORLD, good, sizeof good) == STRAND_OK);
    release(&src);

    expect_refusal("shape", good, 1, NULL, 0, "block0.mixer/weight: checkpoint shape (64,4), model (64,3)");
    expect_refusal("extra tensor", good, 2, NULL, 0,
                   "checkpoint tensor /params/head/weight is not in the model");

    strand_config other = config;
    other.lr = config.lr * 2;
    expect_refusal("config", good, 0, &other, 0, "train.lr = ");
    expect_refusal("windows per step", good, 0, &config, 4, "windows per step");

    snprintf(path, sizeof path, "%s/missing.h5", dir);
    copy_file(good, path);
    edit_file(path, "delete");
    expect_refusal("missing dataset", path, 0, NULL, 0, "missing dataset /optim/v/block0.mlp.fc/bias");

    snprintf(path, sizeof path, "%s/version.h5", dir);
    copy_file(good, path);
    edit_file(path, "version");
    expect_refusal("format version", path, 0, NULL, 0, "checkpoint format version 2, this strand reads 1");

    snprintf(path, sizeof path, "%s/real.h5", dir);
    copy_file(good, path);
    edit_file(path, "real");
    expect_refusal("real type", path, 0, NULL, 0, "checkpoint real type bfloat16");

    snprintf(path, sizeof path, "%s/truncated.h5", dir);
    copy_file(good, path);
    struct stat st;
    if (world_rank == 0) stat(path, &st);
    long size = 0;
    if (world_rank == 0) size = (long)st.st_size;
    MPI_Bcast(&size, 1, MPI_LONG, 0, MPI_COMM_WORLD);
    damage(path, size / 2, 0);
    expect_refusal("truncated", path, 0, NULL, 0, "truncated.h5");

    /* Random bytes over a tensor's data: only the checksums can see this. */
    snprintf(path, sizeof path, "%s/bytes.h5", dir);
    copy_file(good, path);
    long offset = 0;
    if (world_rank == 0) {
        hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        hid_t dataset = H5Dopen2(file, "/optim/m/block0.mixer/weight", H5P_DEFAULT);
        haddr_t at = H5Dget_offset(dataset);
        CHECK(at != HADDR_UNDEF);
        offset = (long)at + 100; /* H5Dget_offset counts the user block */
        H5Dclose(dataset);
        H5Fclose(file);
    }
    MPI_Bcast(&offset, 1, MPI_LONG, 0, MPI_COMM_WORLD);
    damage(path, offset, 16);
    expect_refusal("random bytes in data", path, 0, NULL, 0, "do not match the file's checksum");
    if (world_rank == 0) CHECK(strand_filesum_seal(path, 1 << 20) == STRAND_OK);
    MPI_Barrier(MPI_COMM_WORLD);
    expect_refusal("random bytes in data, resealed", path, 0, NULL, 0, "does not match its crc32");

    snprintf(path, sizeof path, "%s/noise.h5", dir);
    copy_file(good, path);
    damage(path, 0, 4096);
    expect_refusal("random bytes in the header", path, 0, NULL, 0, "noise.h5");

    snprintf(path, sizeof path, "%s/unsealed.h5", dir);
    expect_unsealed_refusal("attribute added without a new checksum", good, path, "extra_attribute");

    /* One bit flipped in a training-state attribute: refused by the file's checksum, and, in a
     * file whose checksum was rewritten to match, by the invariants between the numbers. */
    static const struct {
        const char *name, *needle;
    } state_bits[] = {{"adam_t", "adam_t"},
                      {"tokens_seen", "tokens_seen"},
                      {"step", "data_cursor 5 does not match step 1"},
                      {"data_cursor", "data_cursor"},
                      {"total_steps", "total_steps"},
                      {"first_loss", "first_loss"}};
    for (size_t i = 0; i < sizeof state_bits / sizeof *state_bits; i++) {
        const char *name = state_bits[i].name;
        for (int resealed = 0; resealed < 2; resealed++) {
            char label[128];
            snprintf(path, sizeof path, "%s/bit-%s-%d.h5", dir, name, resealed);
            snprintf(label, sizeof label, "a bit of %s flipped%s", name,
                     resealed ? ", checksum rewritten" : "");
            copy_file(good, path);
            if (world_rank == 0) flip_attribute_bit(path, name, resealed);
            MPI_Barrier(MPI_COMM_WORLD);
            expect_refusal(label, path, 0, NULL, 0, resealed ? state_bits[i].needle : "checksum");
        }
    }

    snprintf(path, sizeof path, "%s/nothere.h5", dir);
    expect_refusal("missing file", path, 0, NULL, 0, "no such file");
}

static void test_latest_and_prune(void) {
    char dir[512], path[STRAND_CKPT_PATH_BYTES], tmp[700];
    snprintf(dir, sizeof dir, "%s/run/checkpoints", tmpdir);
    tensors src, dst;
    declare(&src, 0);
    declare(&dst, 0);
    for (int64_t step = 5; step <= 20; step += 5) {
        fill(&src, (uint64_t)step);
        make_meta(&meta_out, &src.table, step, MPI_COMM_WORLD);
        strand_ckpt_state s = state_of(&src);
        CHECK(strand_ckpt_write(dir, &meta_out, &s, 3, MPI_COMM_WORLD, path, sizeof path) == STRAND_OK);
    }
    /* keep = 3: 10, 15, 20 remain */
    if (world_rank == 0) {
        char p[700];
        for (int step = 5; step <= 20; step += 5) {
            snprintf(p, sizeof p, "%s/ckpt-%d.h5", dir, step);
            CHECK_MSG((access(p, F_OK) == 0) == (step >= 10), "ckpt-%d.h5 %s", step,
                      step >= 10 ? "missing" : "not pruned");
        }
    }
    /* A later, half-written file and a corrupt "complete" one: the scan takes step 20. */
    snprintf(tmp, sizeof tmp, "%s/ckpt-25.h5.tmp", dir);
    copy_file(path, tmp);
    snprintf(tmp, sizeof tmp, "%s/ckpt-30.h5", dir);
    copy_file(path, tmp);
    damage(tmp, 0, 2048);
    int found = 0;
    char latest[STRAND_CKPT_PATH_BYTES];
    char run[512];
    snprintf(run, sizeof run, "%s/run", tmpdir);
    int status = strand_ckpt_find(run, 1, &dst.table, &config, 0, MPI_COMM_WORLD, latest, sizeof latest,
                                  &meta_in, &found);
    CHECK(status == STRAND_OK && found);
    CHECK_MSG(strstr(latest, "ckpt-20.h5") != NULL, "latest is %s", latest);
    CHECK(meta_in.step == 20);
    strand_ckpt_state d = state_of(&dst);
    CHECK(strand_ckpt_read(latest, &d, MPI_COMM_WORLD) == STRAND_OK);
    fill(&src, 20);
    CHECK(same_tensors(&src, &dst));
    /* An empty directory: nothing found, fine unless required. */
    char empty[600];
    snprintf(empty, sizeof empty, "%s/empty", tmpdir);
    if (world_rank == 0) mkdir(empty, 0775);
    MPI_Barrier(MPI_COMM_WORLD);
    status = strand_ckpt_find(empty, 0, &dst.table, &config, 0, MPI_COMM_WORLD, latest, sizeof latest,
                              &meta_in, &found);
    CHECK(status == STRAND_OK && !found);
    status = strand_ckpt_find(empty, 1, &dst.table, &config, 0, MPI_COMM_WORLD, latest, sizeof latest,
                              &meta_in, &found);
    CHECK(status != STRAND_OK && strstr(strand_error_message(), "no checkpoint") != NULL);
    /* Only broken checkpoints: refused with the newest one's reason, never a fresh start. */
    char broken[600];
    snprintf(broken, sizeof broken, "%s/broken", tmpdir);
    if (world_rank == 0) mkdir(broken, 0775);
    snprintf(tmp, sizeof tmp, "%s/ckpt-7.h5", broken);
    copy_file(path, tmp);
    damage(tmp, 0, 2048);
    status = strand_ckpt_find(broken, 0, &dst.table, &config, 0, MPI_COMM_WORLD, latest, sizeof latest,
                              &meta_in, &found);
    CHECK_MSG(status != STRAND_OK && strstr(strand_error_message(), "ckpt-7.h5") != NULL,
              "a directory of broken checkpoints was accepted: %s", strand_error_message());
    CHECK(agreed(MPI_COMM_WORLD, status));
    /* The .tmp left behind was removed by the next write. */
    fill(&src, 21);
    make_meta(&meta_out, &src.table, 21, MPI_COMM_WORLD);
    strand_ckpt_state s = state_of(&src);
    CHECK(strand_ckpt_write(dir, &meta_out, &s, 3, MPI_COMM_WORLD, path, sizeof path) == STRAND_OK);
    if (world_rank == 0) {
        snprintf(tmp, sizeof tmp, "%s/ckpt-25.h5.tmp", dir);
        CHECK_MSG(access(tmp, F_OK) != 0, "stale %s not removed", tmp);
    }
    release(&src);
    release(&dst);
}

/* ---- bench ---- */

/* CPU seconds (user + system) of this process, summed over the world by the caller. */
static double cpu_seconds(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + 1e-6 * (double)u.ru_utime.tv_usec + (double)u.ru_stime.tv_sec +
           1e-6 * (double)u.ru_stime.tv_usec;
}

static int bench(const char *dir, int layers, int d_model) {
    strand_config c;
    strand_config_defaults(&c);
    c.d_model = d_model;
    char list[STRAND_CONFIG_STRING_BYTES] = "";
    for (int l = 0; l < layers; l++)
        strncat(list, l ? ",conv" : "conv", sizeof list - strlen(list) - 1);
    snprintf(c.layers, sizeof c.layers, "%s", list);
    c.seq_len = world_size < 2 ? 2 : world_size; /* a token per rank: only the parameters matter */
    strand_grid grid;
    strand_shard shard;
    strand_model model;
    if (strand_grid_init(&grid, MPI_COMM_WORLD, 0, 0) || strand_shard_init(&shard, &grid, c.seq_len, 0) ||
        strand_model_create(&model, &c, &shard)) {
        fprintf(stderr, "bench: set-up failed: %s\n", strand_error_message());
        return 1;
    }
    strand_model_init_params(&model, 1);
    /* Moments: the gradients array stands in for one, a fresh array for the other. */
    real_t *v = strand_alloc(sizeof(real_t) * (size_t)model.table.total, "v");
    if (!v) return 1;
    for (int64_t i = 0; i < model.table.total; i++)
        model.grads[i] = (real_t)(i % 1000) * (real_t)1e-6, v[i] = (real_t)(i % 777) * (real_t)1e-9;
    strand_ckpt_meta *meta = strand_alloc(sizeof *meta, "meta");
    strand_ckpt_meta_init(meta, &c, &model.table);
    /* A consistent training state after one step (the reader checks it). */
    meta->step = meta->adam_t = 1;
    meta->tokens_seen = (int64_t)c.accum_steps * c.seq_len;
    meta->lr = strand_lr_at(&c, 0);
    meta->first_loss = meta->last_loss = 2.0;
    meta->dp = 1, meta->sp = meta->world = world_size;
    strand_ckpt_state state = {.table = &model.table, .params = model.params, .m = model.grads, .v = v};
    char path[STRAND_CKPT_PATH_BYTES];
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime(), cpu[2] = {cpu_seconds(), 0};
    int status = strand_ckpt_write(dir, meta, &state, 1, MPI_COMM_WORLD, path, sizeof path);
    double write_s = MPI_Wtime() - t0;
    cpu[0] = cpu_seconds() - cpu[0];
    if (status) {
        fprintf(stderr, "bench: write failed: %s\n", strand_error_message());
        return 1;
    }
    /* Cold read: drop the file's pages from the page cache first (as after a node restart). */
    if (world_rank == 0) {
        int fd = open(path, O_RDONLY);
        if (fd >= 0) {
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            close(fd);
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);
    t0 = MPI_Wtime();
    cpu[1] = cpu_seconds();
    status = strand_ckpt_check(path, &model.table, &c, 0, MPI_COMM_WORLD, meta);
    if (status == STRAND_OK) status = strand_ckpt_read(path, &state, MPI_COMM_WORLD);
    double read_s = MPI_Wtime() - t0;
    cpu[1] = cpu_seconds() - cpu[1];
    MPI_Allreduce(MPI_IN_PLACE, cpu, 2, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    if (status) {
        fprintf(stderr, "bench: read failed: %s\n", strand_error_message());
        return 1;
    }
    struct stat st;
    stat(path, &st);
    if (world_rank == 0)
        printf(
            "{\"parameters\":%lld,\"file_bytes\":%lld,\"ranks\":%d,\"write_s\":%.3f,\"write_MBps\":%.1f,"
            "\"write_cpu_s\":%.3f,\"read_s\":%.3f,\"read_MBps\":%.1f,\"read_cpu_s\":%.3f,\"path\":\"%s\"}\n",
            (long long)meta->parameters, (long long)st.st_size, world_size, write_s,
            (double)st.st_size / 1e6 / write_s, cpu[0], read_s, (double)st.st_size / 1e6 / read_s, cpu[1],
            path);
    strand_free(meta);
    strand_free(v);
    strand_model_free(&model);
    strand_shard_free(&shard);
    strand_grid_free(&grid);
    return 0;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    strand_h5_quiet();
    const char *mode = argc > 1 ? argv[1] : "unit";
    int rc = 0;
    if (strcmp(mode, "bench") == 0) {
        if (argc < 5) {
            fprintf(stderr, "usage: test_ckpt bench DIR LAYERS D_MODEL\n");
            rc = 2;
        } else {
            rc = bench(argv[2], atoi(argv[3]), atoi(argv[4]));
        }
        MPI_Finalize();
        return rc;
    }
    strand_config_defaults(&config);
    test_tmpdir_make(tmpdir, (int)sizeof tmpdir, "ckpt");
    CHECK(tmpdir[0] != '\0');
    test_crc();
    test_round_trip_and_reshard();
    test_refusals();
    test_latest_and_prune();
    test_tmpdir_remove(tmpdir);
    int failures = test_failures;
    MPI_Allreduce(MPI_IN_PLACE, &failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (world_rank == 0) rc = test_finish("test_ckpt");
    rc = failures ? 1 : rc;
    MPI_Finalize();
    return rc;
}
