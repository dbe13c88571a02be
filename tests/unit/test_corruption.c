/* Corruption sweep: a few hundred random bit flips, byte overwrites, truncations and appended
 * bytes of a dataset (strand prep of the lambda phage genome) and of a checkpoint. Each damaged
 * file is opened and read in full as training would; it must be refused with a message that names
 * the file, or give exactly the undamaged file's result (same tables and tokens; same tensors and
 * training state). A damaged file accepted with a different result fails the test. Serial. */
#define _POSIX_C_SOURCE 200809L
#include "test_tmpdir.h"
#include "test_util.h"

#include "strand/ckpt.h"
#include "core/crc32.h"
#include "strand/config.h"
#include "strand/dataset.h"
#include "core/filesum.h"
#include "train/optim.h"

#include <stdlib.h>
#include <string.h>

enum { DATASET_CASES = 300, CHECKPOINT_CASES = 300 };

static char tmpdir[256];

typedef struct {
    unsigned char *bytes;
    size_t size;
} blob;

static int read_blob(const char *path, blob *b) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    b->size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    b->bytes = malloc(b->size + 4096);
    const int ok = b->bytes && fread(b->bytes, 1, b->size, f) == b->size;
    fclose(f);
    return ok ? 0 : -1;
}

static void write_bytes(const char *path, const unsigned char *bytes, size_t size) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    CHECK(fwrite(bytes, 1, size, f) == size);
    fclose(f);
}

static uint64_t rng_state = 0x243F6A8885A308D3ull;
static uint64_t next_random(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* One damaged copy of `good` at `path`; `what` describes the damage. HDF5's metadata sits at the
 * start of its data (after the user block) and at the end, so half the flips aim there. */
static void damage(const blob *good, int64_t user_block, const char *path, char *what, size_t what_size) {
    blob b = {malloc(good->size + 4096), good->size};
    memcpy(b.bytes, good->bytes, good->size);
    const uint64_t kind = next_random() % 8;
    size_t at = (size_t)(next_random() % good->size);
    if (kind == 1 || kind == 2) { /* near HDF5's superblock and root objects */
        const size_t span = good->size - (size_t)user_block < 65536 ? good->size - (size_t)user_block : 65536;
        at = (size_t)user_block + (size_t)(next_random() % span);
    } else if (kind == 3) { /* the tail: HDF5 writes late metadata at the end */
        at = good->size - 1 - (size_t)(next_random() % (good->size < 65536 ? good->size : 65536));
    } else if (kind == 4) { /* the checksum header itself */
        at = (size_t)(next_random() % STRAND_FILESUM_BLOCK);
    }
    if (kind == 5) {
        b.size = (size_t)(next_random() % good->size);
        snprintf(what, what_size, "truncated to %zu of %zu bytes", b.size, good->size);
    } else if (kind == 6) {
        const size_t extra = 1 + (size_t)(next_random() % 4096);
        for (size_t i = 0; i < extra; i++)
            b.bytes[good->size + i] = (unsigned char)next_random();
        b.size += extra;
        snprintf(what, what_size, "%zu bytes appended", extra);
    } else if (kind == 7) {
        const unsigned char value = (unsigned char)next_random();
        snprintf(what, what_size, "byte %zu set from 0x%02x to 0x%02x", at, b.bytes[at], value);
        b.bytes[at] = value;
    } else {
        const int bit = (int)(next_random() % 8);
        b.bytes[at] ^= (unsigned char)(1u << bit);
        snprintf(what, what_size, "bit %d of byte %zu flipped", bit, at);
    }
    write_bytes(path, b.bytes, b.size);
    free(b.bytes);
}

/* ---- the dataset ---- */

/* Everything training reads of a dataset, as one CRC. Fails when it cannot be read. */
static int dataset_digest(const char *path, uint32_t *digest) {
    strand_dataset ds;
    STRAND_CALL(strand_dataset_open(&ds, path, MPI_COMM_SELF));
    uint32_t crc = strand_crc32(0, &ds.n_tokens, sizeof ds.n_tokens);
    crc = strand_crc32(crc, ds.record_offsets, sizeof *ds.record_offsets * (size_t)ds.n_records);
    crc = strand_crc32(crc, ds.record_lengths, sizeof *ds.record_lengths * (size_t)ds.n_records);
    crc = strand_crc32(crc, ds.record_names, sizeof *ds.record_names * (size_t)ds.n_records);
    crc = strand_crc32(crc, ds.train, sizeof *ds.train * (size_t)ds.n_train);
    crc = strand_crc32(crc, ds.val, sizeof *ds.val * (size_t)ds.n_val);
    strand_token_t *tokens = strand_alloc(sizeof *tokens * ((size_t)ds.n_tokens + 1), "tokens");
    int status = tokens ? strand_dataset_read(&ds, 0, ds.n_tokens, tokens) : STRAND_ERR_NOMEM;
    if (status == STRAND_OK) crc = strand_crc32(crc, tokens, sizeof *tokens * (size_t)ds.n_tokens);
    strand_free(tokens);
    strand_dataset_close(&ds);
    *digest = crc;
    return status;
}

/* ---- the checkpoint ---- */

typedef struct {
    strand_param_table table;
    real_t *params, *m, *v;
} tensors;

static void declare(tensors *t) {
    memset(t, 0, sizeof *t);
    strand_params_declare(&t->table, "embedding", "weight", 8, 16, STRAND_INIT_NORMAL, 0.02, 1, NULL);
    strand_params_declare(&t->table, "block0.mixer", "weight", 16, 4, STRAND_INIT_NORMAL, 0.02, 1, NULL);
    strand_params_declare(&t->table, "block0.mlp.fc", "weight", 64, 16, STRAND_INIT_NORMAL, 0.02, 1, NULL);
    strand_params_declare(&t->table, "block0.mlp.fc", "bias", 64, 0, STRAND_INIT_ZEROS, 0, 0, NULL);
    strand_params_declare(&t->table, "final_norm", "weight", 16, 0, STRAND_INIT_ONES, 0, 0, NULL);
    t->params = strand_alloc(sizeof(real_t) * (size_t)t->table.total, "params");
    t->m = strand_alloc(sizeof(real_t) * (size_t)t->table.total, "m");
    t->v = strand_alloc(sizeof(real_t) * (size_t)t->table.total, "v");
}

static void release(tensors *t) {
    strand_free(t->params);
    strand_free(t->m);
    strand_free(t->v);
    strand_params_free(&t->table);
}

static strand_config config;
static strand_ckpt_meta meta;

/* The tensors and the training state a resume takes from a checkpoint, as one CRC. */
static int checkpoint_digest(const char *path, uint32_t *digest) {
    tensors t;
    declare(&t);
    int status = strand_ckpt_check(path, &t.table, &config, config.accum_steps, MPI_COMM_SELF, &meta);
    if (status == STRAND_OK) {
        strand_ckpt_state state = {.table = &t.table, .params = t.params, .m = t.m, .v = t.v};
        status = strand_ckpt_read(path, &state, MPI_COMM_SELF);
    }
    if (status == STRAND_OK) {
        const size_t bytes = sizeof(real_t) * (size_t)t.table.total;
        uint32_t crc = strand_crc32(0, t.params, bytes);
        crc = strand_crc32(crc, t.m, bytes);
        crc = strand_crc32(crc, t.v, bytes);
        const int64_t numbers[] = {meta.step, meta.total_steps, meta.tokens_seen, meta.adam_t,    meta.dp,
                                   meta.sp,   meta.world,       meta.accum_steps, meta.parameters};
        const double reals[] = {meta.lr, meta.first_loss, meta.last_loss, meta.elapsed_s};
        crc = strand_crc32(crc, numbers, sizeof numbers);
        crc = strand_crc32(crc, reals, sizeof reals);
        crc = strand_crc32(crc, &meta.seed, sizeof meta.seed);
        crc = strand_crc32(crc, meta.config_text, strlen(meta.config_text));
        *digest = crc;
    }
    release(&t);
    return status;
}

static int write_checkpoint(const char *dir, char *path, size_t size) {
    tensors t;
    declare(&t);
    for (int64_t i = 0; i < t.table.total; i++) {
        t.params[i] = (real_t)(0.01 * (double)((i * 7919) % 101) - 0.5);
        t.m[i] = (real_t)(1e-4 * (double)(i % 13));
        t.v[i] = (real_t)(1e-7 * (double)(i % 17 + 1));
    }
    strand_ckpt_meta_init(&meta, &config, &t.table);
    meta.step = 3;
    meta.tokens_seen = 3 * (int64_t)config.accum_steps * config.seq_len;
    meta.adam_t = 3;
    meta.lr = strand_lr_at(&config, 2);
    meta.first_loss = 2.0;
    meta.last_loss = 1.5;
    meta.elapsed_s = 1.25;
    meta.dp = meta.sp = meta.world = 1;
    strand_ckpt_state state = {.table = &t.table, .params = t.params, .m = t.m, .v = t.v};
    const int status = strand_ckpt_write(dir, &meta, &state, 0, MPI_COMM_SELF, path, size);
    release(&t);
    return status;
}

/* ---- the sweep ---- */

typedef int (*digest_fn)(const char *path, uint32_t *digest);

static void sweep(const char *label, const char *good_path, int64_t user_block, digest_fn digest, int cases) {
    uint32_t reference = 0;
    CHECK_MSG(digest(good_path, &reference) == STRAND_OK, "%s: the undamaged file fails: %s", label,
              strand_error_message());
    blob good = {0};
    CHECK(read_blob(good_path, &good) == 0);
    char path[512], what[128];
    snprintf(path, sizeof path, "%s/damaged-%s.h5", tmpdir, label);
    int refused = 0, harmless = 0, accepted_different = 0;
    for (int i = 0; i < cases && good.bytes; i++) {
        damage(&good, user_block, path, what, sizeof what);
        uint32_t result = 0;
        strand_error_clear();
        const int status = digest(path, &result);
        if (status != STRAND_OK) {
            refused++;
            CHECK_MSG(strstr(strand_error_message(), path) != NULL,
                      "%s: %s: refused without naming the file: %s", label, what, strand_error_message());
            CHECK_MSG(strchr(strand_error_message(), '\n') == NULL, "%s: %s: the message is not one line",
                      label, what);
        } else if (result == reference) {
            harmless++;
            fprintf(stderr, "%s: harmless: %s\n", label, what);
        } else {
            accepted_different++;
            CHECK_MSG(0, "%s: %s: accepted with a different result", label, what);
        }
    }
    fprintf(stderr,
            "%s: %d damaged copies: %d refused with a reason, %d harmless (same result), %d accepted "
            "with a different result\n",
            label, cases, refused, harmless, accepted_different);
    CHECK(refused + harmless == cases);
    free(good.bytes);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    strand_h5_quiet();
    if (argc < 2) {
        fprintf(stderr, "usage: test_corruption GENOME.fa.gz\n");
        MPI_Finalize();
        return 2;
    }
    test_tmpdir_make(tmpdir, (int)sizeof tmpdir, "corruption");
    CHECK(tmpdir[0] != '\0');
    strand_config_defaults(&config);

    char dataset[512];
    snprintf(dataset, sizeof dataset, "%s/lambda.h5", tmpdir);
    const char *inputs[1] = {argv[1]};
    strand_prep_options options = {.inputs = inputs, .n_inputs = 1, .output = dataset, .val_fraction = 0.05};
    strand_prep_stats stats;
    CHECK_MSG(strand_prep_run(&options, &stats) == STRAND_OK, "prep: %s", strand_error_message());
    strand_filesum_info sum;
    CHECK(strand_filesum_verify(dataset, &sum) == STRAND_OK && sum.present);
    sweep("dataset", dataset, sum.block, dataset_digest, DATASET_CASES);

    char dir[512], checkpoint[STRAND_CKPT_PATH_BYTES];
    snprintf(dir, sizeof dir, "%s/checkpoints", tmpdir);
    CHECK_MSG(write_checkpoint(dir, checkpoint, sizeof checkpoint) == STRAND_OK, "checkpoint: %s",
              strand_error_message());
    CHECK(strand_filesum_verify(checkpoint, &sum) == STRAND_OK && sum.present);
    sweep("checkpoint", checkpoint, sum.block, checkpoint_digest, CHECKPOINT_CASES);

    test_tmpdir_remove(tmpdir);
    const int rc = test_finish("test_corruption");
    MPI_Finalize();
    return rc;
}
