/* strand prep -> strand_dataset_open/read round trip at any number of ranks: records, splits
 * (--val-fraction, --val-records), hyperslab reads on every rank compared with the expected
 * tokens, and refusals that every rank must report the same way (missing, corrupt, format
 * version 2, another tokenizer, missing pieces). Rank 0 writes the files; all ranks read. */
#define _POSIX_C_SOURCE 200809L
#include "strand/dataset.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

static char dir[256] = "/tmp/strand_test_dataset_XXXXXX";
static int rank = 0, size = 1;

typedef struct {
    const char *name;
    int64_t length;
    int line_width;
    int crlf;
} record_spec;

/* Records of the main corpus: chrA spans several 1 MiB chunks and the 4 MiB write buffer. */
static const record_spec records[] = {
    {"chrA", 3000007, 60, 0},
    {"chrB", 777, 61, 0},
    {"plasmid", 5000, 80, 0},
    {"chrC", 1300001, 80, 1},
};
enum { N_RECORDS = 4, N_FILE1 = 3 };

static char letter(int record, int64_t i) {
    uint64_t x = ((uint64_t)i + 1) * 0x9E3779B97F4A7C15ull + (uint64_t)record * 0xD1B54A32D192ED03ull;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    static const char alphabet[] = "ACGTACGTACGTACGTacgtacgtNnRy";
    return alphabet[x % (sizeof alphabet - 1)];
}

static uint8_t token_of(char c) {
    switch (c) {
    case 'A':
    case 'a':
        return 0;
    case 'C':
    case 'c':
        return 1;
    case 'G':
    case 'g':
        return 2;
    case 'T':
    case 't':
        return 3;
    default:
        return 4;
    }
}

static int64_t record_offset(int r) {
    int64_t offset = 0;
    for (int i = 0; i < r; i++)
        offset += records[i].length;
    return offset;
}

static int64_t total_tokens(void) {
    return record_offset(N_RECORDS);
}

/* Expected token at global position g of the main corpus. */
static uint8_t expected_token(int64_t g) {
    int r = 0;
    while (g >= records[r].length)
        g -= records[r++].length;
    return token_of(letter(r, g));
}

static const char *path_in_dir(const char *name) {
    static char buffers[8][512];
    static int next = 0;
    char *p = buffers[next++ % 8];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

static int file_exists(const char *path) {
    return access(path, F_OK) == 0;
}

/* Render records [first, last) as FASTA text (malloc'd). */
static char *fasta_text(int first, int last, size_t *n) {
    size_t cap = 0;
    for (int r = first; r < last; r++)
        cap += (size_t)records[r].length * 2 + 100;
    char *text = malloc(cap);
    size_t k = 0;
    for (int r = first; r < last; r++) {
        const char *eol = records[r].crlf ? "\r\n" : "\n";
        k += (size_t)sprintf(text + k, ">%s test record %d%s", records[r].name, r, eol);
        for (int64_t i = 0; i < records[r].length; i++) {
            text[k++] = letter(r, i);
            if ((i + 1) % records[r].line_width == 0 || i + 1 == records[r].length) {
                memcpy(text + k, eol, strlen(eol));
                k += strlen(eol);
            }
        }
    }
    *n = k;
    return text;
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    CHECK(fwrite(data, 1, n, f) == n);
    fclose(f);
}

static void write_text(const char *path, const char *text) {
    write_bytes(path, text, strlen(text));
}

/* Rank 0: the corpus as a plain file (chrA, chrB, plasmid) and a gzip file (chrC). */
static void write_corpus(void) {
    size_t n = 0;
    char *text = fasta_text(0, N_FILE1, &n);
    write_bytes(path_in_dir("part1.fa"), text, n);
    free(text);
    text = fasta_text(N_FILE1, N_RECORDS, &n);
    gzFile gz = gzopen(path_in_dir("part2.fa.gz"), "wb1");
    CHECK(gz != NULL);
    CHECK(gzwrite(gz, text, (unsigned)n) == (int)n);
    CHECK(gzclose(gz) == Z_OK);
    free(text);
    write_text(path_in_dir("small.fa"), ">s1\nACGTACGTNN\n>s2\nGGGG\n");
}

static int prep(const char *output, double val_fraction, const char *const *val_records, int n_val,
                strand_prep_stats *stats) {
    const char *inputs[2] = {path_in_dir("part1.fa"), path_in_dir("part2.fa.gz")};
    strand_prep_options options = {.inputs = inputs,
                                   .n_inputs = 2,
                                   .output = output,
                                   .val_fraction = val_fraction,
                                   .val_records = val_records,
                                   .n_val_records = n_val};
    return strand_prep_run(&options, stats);
}

static int prep_one(const char *input, const char *output) {
    const char *inputs[1] = {input};
    strand_prep_options options = {.inputs = inputs, .n_inputs = 1, .output = output};
    return strand_prep_run(&options, NULL);
}

/* ---- rank 0: prep ---- */

static void test_prep_serial(void) {
    strand_prep_stats stats;
    CHECK(prep(path_in_dir("frac.h5"), 0.1, NULL, 0, &stats) == STRAND_OK);
    CHECK(stats.n_records == N_RECORDS && stats.n_tokens == total_tokens());
    int64_t val = 0;
    for (int r = 0; r < N_RECORDS; r++)
        val += (int64_t)floor(0.1 * (double)records[r].length);
    CHECK(stats.n_val_tokens == val && stats.n_train_tokens == total_tokens() - val);
    CHECK(stats.input_bytes > total_tokens());
    CHECK(!file_exists(path_in_dir("frac.h5.tmp")));

    const char *named[2] = {"chrC", "chrB"};
    CHECK(prep(path_in_dir("named.h5"), 0.0, named, 2, &stats) == STRAND_OK);
    CHECK(stats.n_val_tokens == records[1].length + records[3].length);

    CHECK(prep_one(path_in_dir("small.fa"), path_in_dir("small.h5")) == STRAND_OK);

    /* Refusals leave neither the output nor the temporary file behind. */
    const char *unknown[1] = {"chrZ"};
    CHECK(prep(path_in_dir("bad.h5"), 0.0, unknown, 1, NULL) == STRAND_ERR_INPUT);
    CHECK(strstr(strand_error_message(), "--val-records: no record named chrZ") != NULL);
    CHECK(!file_exists(path_in_dir("bad.h5")) && !file_exists(path_in_dir("bad.h5.tmp")));
    CHECK(prep(path_in_dir("bad.h5"), 1.0, NULL, 0, NULL) == STRAND_ERR_INPUT);
    CHECK(prep(path_in_dir("bad.h5"), -0.5, NULL, 0, NULL) == STRAND_ERR_INPUT);
    write_text(path_in_dir("broken.fa"), ">x\nACGT\nAC!T\n");
    CHECK(prep_one(path_in_dir("broken.fa"), path_in_dir("bad.h5")) == STRAND_ERR_INPUT);
    CHECK(strstr(strand_error_message(), "broken.fa:3:3: unexpected character '!'") != NULL);
    CHECK(!file_exists(path_in_dir("bad.h5")) && !file_exists(path_in_dir("bad.h5.tmp")));
    const char *all[2] = {"s1", "s2"};
    const char *small_in[1] = {path_in_dir("small.fa")};
    strand_prep_options all_val = {.inputs = small_in,
                                   .n_inputs = 1,
                                   .output = path_in_dir("bad.h5"),
                                   .val_records = all,
                                   .n_val_records = 2};
    CHECK(strand_prep_run(&all_val, NULL) == STRAND_ERR_INPUT);
    CHECK(strstr(strand_error_message(), "no training tokens left") != NULL);
    /* Duplicate record names across inputs. */
    const char *twice[2] = {path_in_dir("small.fa"), path_in_dir("small.fa")};
    strand_prep_options dup = {.inputs = twice, .n_inputs = 2, .output = path_in_dir("bad.h5")};
    CHECK(strand_prep_run(&dup, NULL) == STRAND_ERR_INPUT);
    CHECK(strstr(strand_error_message(), "record name s1 appears twice") != NULL);
    /* Output into a missing directory; output that is an input. */
    CHECK(prep_one(path_in_dir("small.fa"), path_in_dir("no/such/dir/x.h5")) == STRAND_ERR_IO);
    CHECK(strstr(strand_error_message(), "x.h5.tmp") != NULL);
    CHECK(prep_one(path_in_dir("small.fa"), path_in_dir("small.fa")) == STRAND_ERR_INPUT);
    CHECK(strstr(strand_error_message(), "is also an input") != NULL);
    CHECK(!file_exists(path_in_dir("bad.h5")) && !file_exists(path_in_dir("bad.h5.tmp")));

    /* Damaged variants of small.h5 for the refusal tests. */
    struct {
        const char *name;
        const char *attribute; /* to rewrite (NULL: delete `link`) */
        int64_t int_value;
        const char *string_value;
        const char *link;
    } variants[] = {
        {"v2.h5", "format_version", 2, NULL, NULL},       {"bpe.h5", "tokenizer", 0, "bpe", NULL},
        {"tokv2.h5", "tokenizer_version", 2, NULL, NULL}, {"noversion.h5", NULL, 0, NULL, "format_version"},
        {"notokens.h5", NULL, 0, NULL, "/tokens"},        {"nosplit.h5", NULL, 0, NULL, "/split/val"},
    };
    for (size_t v = 0; v < sizeof variants / sizeof *variants; v++) {
        CHECK(prep_one(path_in_dir("small.fa"), path_in_dir(variants[v].name)) == STRAND_OK);
        hid_t file = H5Fopen(path_in_dir(variants[v].name), H5F_ACC_RDWR, H5P_DEFAULT);
        CHECK(file >= 0);
        if (variants[v].attribute) {
            CHECK(H5Adelete(file, variants[v].attribute) >= 0);
            if (variants[v].string_value)
                CHECK(strand_h5_write_string_attribute(file, variants[v].attribute, variants[v].string_value,
                                                       "test") == STRAND_OK);
            else
                CHECK(strand_h5_write_int_attribute(file, variants[v].attribute, variants[v].int_value,
                                                    "test") == STRAND_OK);
        } else if (variants[v].link[0] == '/') {
            CHECK(H5Ldelete(file, variants[v].link, H5P_DEFAULT) >= 0);
        } else {
            CHECK(H5Adelete(file, variants[v].link) >= 0);
        }
        CHECK(H5Fclose(file) >= 0);
    }

    /* Random bytes, and a real dataset cut short. */
    unsigned char junk[4096];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (unsigned char)((x = x * 1103515245u + 12345u) >> 24);
    write_bytes(path_in_dir("random.h5"), junk, sizeof junk);
    FILE *f = fopen(path_in_dir("frac.h5"), "rb");
    unsigned char head[2048];
    size_t got = f ? fread(head, 1, sizeof head, f) : 0;
    if (f) fclose(f);
    write_bytes(path_in_dir("cut.h5"), head, got);

    /* A plain HDF5 file that is not a strand dataset. */
    hid_t other = H5Fcreate(path_in_dir("other.h5"), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(other >= 0);
    H5Fclose(other);
    int is_dataset = -1;
    CHECK(strand_dataset_probe(path_in_dir("other.h5"), &is_dataset) == STRAND_OK && is_dataset == 0);
    CHECK(strand_dataset_probe(path_in_dir("small.h5"), &is_dataset) == STRAND_OK && is_dataset == 1);
    CHECK(strand_dataset_probe(path_in_dir("random.h5"), &is_dataset) == STRAND_ERR_INPUT);
    CHECK(strand_dataset_print_info(path_in_dir("frac.h5")) == STRAND_OK);
    CHECK(strand_dataset_print_info(path_in_dir("v2.h5")) == STRAND_ERR_INPUT);
}

/* ---- all ranks: reading ---- */

static void check_tables(const strand_dataset *ds, double fraction, int named) {
    CHECK(ds->n_tokens == total_tokens());
    CHECK(ds->n_records == N_RECORDS);
    int64_t n_train = 0, n_val = 0;
    for (int r = 0; r < N_RECORDS && ds->n_records == N_RECORDS; r++) {
        CHECK(strcmp(ds->record_names[r], records[r].name) == 0);
        CHECK(ds->record_offsets[r] == record_offset(r));
        CHECK(ds->record_lengths[r] == records[r].length);
        int whole = named && (r == 1 || r == 3);
        int64_t val = whole ? records[r].length : (int64_t)floor(fraction * (double)records[r].length);
        int64_t train = records[r].length - val;
        if (train > 0) {
            CHECK(n_train < ds->n_train && ds->train[n_train].offset == record_offset(r) &&
                  ds->train[n_train].length == train);
            n_train++;
        }
        if (val > 0) {
            CHECK(n_val < ds->n_val && ds->val[n_val].offset == record_offset(r) + train &&
                  ds->val[n_val].length == val);
            n_val++;
        }
    }
    CHECK(ds->n_train == n_train && ds->n_val == n_val);
}

static void check_reads(strand_dataset *ds) {
    /* Each rank reads its contiguous share in uneven blocks, like the loader's shards. */
    int64_t start = 0, count = 0;
    strand_split_range(ds->n_tokens, size, rank, &start, &count);
    enum { BLOCK = 300007 };
    uint8_t *buffer = malloc(BLOCK);
    int64_t mismatches = 0;
    for (int64_t done = 0; done < count; done += BLOCK) {
        int64_t n = count - done < BLOCK ? count - done : BLOCK;
        CHECK(strand_dataset_read(ds, start + done, n, buffer) == STRAND_OK);
        for (int64_t i = 0; i < n; i++)
            mismatches += buffer[i] != expected_token(start + done + i);
    }
    CHECK_MSG(mismatches == 0, "rank %d: %lld mismatching tokens", rank, (long long)mismatches);
    /* Windows across chunk and record boundaries, different on every rank. */
    int64_t starts[] = {(1 << 20) - 5 - rank, 3000007 - 100 + rank, 3000007 + 777 - 3, ds->n_tokens - 64};
    for (size_t s = 0; s < sizeof starts / sizeof *starts; s++) {
        CHECK(strand_dataset_read(ds, starts[s], 64, buffer) == STRAND_OK);
        int ok = 1;
        for (int64_t i = 0; i < 64; i++)
            ok &= buffer[i] == expected_token(starts[s] + i);
        CHECK_MSG(ok, "window at %lld", (long long)starts[s]);
    }
    CHECK(strand_dataset_read(ds, 10, 0, buffer) == STRAND_OK);
    CHECK(strand_dataset_read(ds, ds->n_tokens - 1, 2, buffer) == STRAND_ERR_INPUT);
    CHECK(strstr(strand_error_message(), "outside") != NULL);
    CHECK(strand_dataset_read(ds, -1, 1, buffer) == STRAND_ERR_INPUT);
    free(buffer);
}

static void expect_open_error(const char *name, const char *fragment) {
    strand_dataset ds;
    int status = strand_dataset_open(&ds, path_in_dir(name), MPI_COMM_WORLD);
    CHECK_MSG(status != STRAND_OK, "%s opened", name);
    CHECK_MSG(strstr(strand_error_message(), fragment) != NULL, "rank %d, %s: '%s' lacks '%s'", rank, name,
              strand_error_message(), fragment);
    CHECK(strstr(strand_error_message(), name) != NULL);
    CHECK(ds.file < 0 && ds.record_names == NULL);
    strand_dataset_close(&ds);
}

static void test_read_parallel(void) {
    strand_dataset ds;
    CHECK(strand_dataset_open(&ds, path_in_dir("frac.h5"), MPI_COMM_WORLD) == STRAND_OK);
    check_tables(&ds, 0.1, 0);
    check_reads(&ds);
    strand_dataset_close(&ds);
    strand_dataset_close(&ds); /* twice is harmless */

    CHECK(strand_dataset_open(&ds, path_in_dir("named.h5"), MPI_COMM_WORLD) == STRAND_OK);
    check_tables(&ds, 0.0, 1);
    strand_dataset_close(&ds);

    CHECK(strand_dataset_open(&ds, path_in_dir("small.h5"), MPI_COMM_WORLD) == STRAND_OK);
    CHECK(ds.n_tokens == 14 && ds.n_records == 2 && ds.n_train == 2 && ds.n_val == 0);
    uint8_t small[14];
    CHECK(strand_dataset_read(&ds, 0, 14, small) == STRAND_OK);
    const uint8_t expect[14] = {0, 1, 2, 3, 0, 1, 2, 3, 4, 4, 2, 2, 2, 2};
    CHECK(memcmp(small, expect, 14) == 0);
    strand_dataset_close(&ds);

    strand_dataset zeroed;
    memset(&zeroed, 0, sizeof zeroed);
    strand_dataset_close(&zeroed);

    expect_open_error("missing.h5", "missing.h5: no such file");
    expect_open_error("random.h5", "random.h5: not an HDF5 file or corrupt");
    expect_open_error("cut.h5", "not an HDF5 file or corrupt");
    expect_open_error("part1.fa", "part1.fa: not an HDF5 file or corrupt");
    expect_open_error("v2.h5", "v2.h5: dataset format version 2, this strand reads 1");
    expect_open_error("bpe.h5", "dataset tokenizer 'bpe' version 1, this strand uses 'nucleotide' version 1");
    expect_open_error("tokv2.h5",
                      "dataset tokenizer 'nucleotide' version 2, this strand uses 'nucleotide' version 1");
    expect_open_error("noversion.h5", "missing root attribute 'format_version'");
    expect_open_error("notokens.h5", "missing dataset /tokens");
    expect_open_error("nosplit.h5", "missing dataset /split/val");
    expect_open_error("other.h5", "missing root attribute 'format_version'");
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    strand_h5_quiet();
    int made = 1;
    if (rank == 0) made = mkdtemp(dir) != NULL;
    MPI_Bcast(&made, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (!made) {
        if (rank == 0) perror("mkdtemp");
        MPI_Finalize();
        return 1;
    }
    MPI_Bcast(dir, sizeof dir, MPI_CHAR, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        write_corpus();
        test_prep_serial();
    }
    MPI_Barrier(MPI_COMM_WORLD);
    test_read_parallel();
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        char command[600];
        snprintf(command, sizeof command, "rm -rf '%s'", dir);
        CHECK(system(command) == 0);
    }
    char name[32];
    snprintf(name, sizeof name, "test_dataset[rank %d]", rank);
    int result = test_finish(name);
    MPI_Finalize();
    return result;
}
