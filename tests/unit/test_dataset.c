/* strand prep -> strand_dataset_open/read round trip at any number of ranks: records, splits
 * (--val-fraction, --val-records), hyperslab reads on every rank compared with the expected
 * tokens, and refusals that every rank must report the same way (missing, corrupt, format
 * version 2, another tokenizer, missing pieces). Rank 0 writes the files; all ranks read.
 * Rank 0 also checks /tokens' integrity: Fletcher32 per chunk exactly as HDF5 computes it, a
 * flipped byte refused, the fill value and out-of-vocabulary tokens refused with their offset,
 * a dataset written by an older strand still read; record names of up to 255 bytes; and prep
 * refusing an input that is its output or its temporary file.
 * usage: test_dataset OLD_DATASET.h5.gz (tests/data/fixtures/old_strand_dataset.h5.gz) */
#define _POSIX_C_SOURCE 200809L
#include "strand/dataset.h"
#include "core/filesum.h"
#include "data/loader.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static char dir[256] = "/tmp/strand_test_dataset_XXXXXX";
static int rank = 0, size = 1;
static const char *old_dataset_gz = NULL; /* argv[1] */

enum { CHUNK = 1 << 20 }; /* prep's /tokens chunk */

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

static strand_token_t token_of(char c) {
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
static strand_token_t expected_token(int64_t g) {
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

/* A file the test changed (through HDF5 or byte by byte) gets a whole-file checksum that matches
 * again, so that the check under test, not the file checksum, is what sees the change. */
static void reseal(const char *path) {
    CHECK_MSG(strand_filesum_seal(path, STRAND_FILESUM_BLOCK) == STRAND_OK, "%s", strand_error_message());
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
    /* Sealed with a whole-file checksum in the user block before the rename. */
    strand_filesum_info sum;
    CHECK(strand_filesum_verify(path_in_dir("frac.h5"), &sum) == STRAND_OK);
    CHECK(sum.present == 1 && sum.block == STRAND_FILESUM_BLOCK);

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
    CHECK(strstr(strand_error_message(), "are the same file") != NULL);
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
        reseal(path_in_dir(variants[v].name));
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

/* ---- rank 0: /tokens integrity ---- */

static void copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    CHECK(in != NULL && out != NULL);
    char buffer[65536];
    size_t n;
    while (in && out && (n = fread(buffer, 1, sizeof buffer, in)) > 0)
        CHECK(fwrite(buffer, 1, n, out) == n);
    if (in) fclose(in);
    if (out) fclose(out);
}

/* The whole file (malloc'd); *n its size. */
static char *read_whole(const char *path, size_t *n) {
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = malloc((size_t)bytes + 1);
    *n = fread(data, 1, (size_t)bytes, f);
    data[*n] = '\0';
    fclose(f);
    return data;
}

static void xor_byte_at(const char *path, long offset, unsigned char mask) {
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL);
    if (!f) return;
    CHECK(fseek(f, offset, SEEK_SET) == 0);
    int c = fgetc(f);
    CHECK(c != EOF);
    CHECK(fseek(f, offset, SEEK_SET) == 0);
    fputc(c ^ mask, f);
    fclose(f);
}

/* Does any entry of HDF5's error stack mention `fragment`? (clears the stack) */
static herr_t find_in_entry(unsigned n, const H5E_error2_t *error, void *data) {
    (void)n;
    const char **fragment = data;
    if (*fragment && error->desc && strstr(error->desc, *fragment)) *fragment = NULL;
    return 0;
}

static int h5_error_mentions(const char *fragment) {
    const char *wanted = fragment;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, find_in_entry, &wanted);
    H5Eclear2(H5E_DEFAULT);
    return wanted == NULL;
}

/* The 4 bytes HDF5's own fletcher32 filter stores after data[0, n): the tail of the only chunk of a
 * dataset whose pipeline is that filter alone. The reference for prep's hand-made trailers. */
static void hdf5_fletcher32_trailer(hid_t scratch, const uint8_t *data, size_t n, uint8_t trailer[4]) {
    static int serial = 0;
    char name[32];
    snprintf(name, sizeof name, "ref%d", serial++);
    hsize_t dims = n;
    hid_t space = H5Screate_simple(1, &dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    CHECK(H5Pset_chunk(dcpl, 1, &dims) >= 0 && H5Pset_fletcher32(dcpl) >= 0);
    hid_t dataset = H5Dcreate2(scratch, name, H5T_NATIVE_UINT8, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    CHECK(dataset >= 0 && H5Dwrite(dataset, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
    H5Dclose(dataset); /* flushes the chunk through the filter */
    dataset = H5Dopen2(scratch, name, H5P_DEFAULT);
    hsize_t origin = 0, stored = 0;
    CHECK(H5Dget_chunk_storage_size(dataset, &origin, &stored) >= 0 && stored == n + 4);
    uint8_t *raw = malloc(n + 4);
    uint32_t mask = 1;
    CHECK(H5Dread_chunk(dataset, H5P_DEFAULT, &origin, &mask, raw) >= 0 && mask == 0);
    memcpy(trailer, raw + n, 4);
    free(raw);
    H5Dclose(dataset);
    H5Pclose(dcpl);
    H5Sclose(space);
}

/* Where chunk `c` of /tokens is stored: file offset (user block included) and size. */
static void chunk_place(hid_t file, hid_t tokens, hsize_t c, long *where, hsize_t *bytes) {
    hid_t space = H5Dget_space(tokens), fcpl = H5Fget_create_plist(file);
    hsize_t origin[1], user_block = 0;
    unsigned mask = 1;
    haddr_t address = 0;
    CHECK(H5Dget_chunk_info(tokens, space, c, origin, &mask, &address, bytes) >= 0);
    CHECK(H5Pget_userblock(fcpl, &user_block) >= 0);
    *where = (long)(address + user_block);
    H5Pclose(fcpl);
    H5Sclose(space);
}

static void test_checksummed_tokens(void) {
    const char *path = path_in_dir("frac.h5");
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t tokens = H5Dopen2(file, "/tokens", H5P_DEFAULT);
    CHECK(file >= 0 && tokens >= 0);
    /* The pipeline is shuffle, deflate, then Fletcher32, so HDF5 checks each stored chunk before
     * inflating. The tokens are 16-bit. */
    hid_t type = H5Dget_type(tokens);
    CHECK(H5Tget_size(type) == 2 && H5Tget_sign(type) == H5T_SGN_NONE);
    H5Tclose(type);
    hid_t dcpl = H5Dget_create_plist(tokens);
    CHECK(H5Pget_nfilters(dcpl) == 3);
    unsigned flags = 0, values[4];
    size_t n_values = 4;
    CHECK(H5Pget_filter2(dcpl, 0, &flags, &n_values, values, 0, NULL, NULL) == H5Z_FILTER_SHUFFLE);
    n_values = 4;
    CHECK(H5Pget_filter2(dcpl, 1, &flags, &n_values, values, 0, NULL, NULL) == H5Z_FILTER_DEFLATE);
    n_values = 4;
    CHECK(H5Pget_filter2(dcpl, 2, &flags, &n_values, values, 0, NULL, NULL) == H5Z_FILTER_FLETCHER32);
    H5Eclear2(H5E_DEFAULT);
    /* A chunk HDF5 cannot find reads as the fill value, which must not be a token. */
    H5D_fill_value_t defined = H5D_FILL_VALUE_UNDEFINED;
    uint16_t fill = 0;
    CHECK(H5Pfill_value_defined(dcpl, &defined) >= 0 && defined == H5D_FILL_VALUE_USER_DEFINED);
    CHECK(H5Pget_fill_value(dcpl, H5T_NATIVE_UINT16, &fill) >= 0 && fill == STRAND_TOKEN_FILL);
    /* Vocabularies above the 16-bit fill value are stored in 32 bits, with their own fill. */
    CHECK(STRAND_TOKEN_FILL < STRAND_VOCAB_MAX && STRAND_TOKEN_FILL_32BIT > STRAND_VOCAB_MAX &&
          STRAND_VOCAB_MAX >= STRAND_VOCAB_SIZE);
    H5Pclose(dcpl);

    /* Every stored chunk ends in the 4 bytes HDF5's filter would have written for it. */
    hid_t space = H5Dget_space(tokens);
    hsize_t n_chunks = 0;
    CHECK(H5Dget_num_chunks(tokens, space, &n_chunks) >= 0);
    CHECK(n_chunks == (hsize_t)((total_tokens() + CHUNK - 1) / CHUNK));
    hid_t scratch = H5Fcreate(path_in_dir("fletcher_ref.h5"), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    int matched = 0, odd = 0, even = 0;
    for (hsize_t c = 0; c < n_chunks; c++) {
        long where = 0;
        hsize_t bytes = 0, origin = c * CHUNK;
        chunk_place(file, tokens, c, &where, &bytes);
        uint8_t *raw = malloc(bytes), *on_disk = malloc(bytes);
        uint32_t mask = 1;
        CHECK(H5Dread_chunk(tokens, H5P_DEFAULT, &origin, &mask, raw) >= 0 && mask == 0);
        /* chunk_place finds the bytes H5Dread_chunk returns (the flip tests below rely on it). */
        FILE *f = fopen(path, "rb");
        CHECK(f && fseek(f, where, SEEK_SET) == 0 && fread(on_disk, 1, bytes, f) == bytes);
        if (f) fclose(f);
        CHECK(memcmp(raw, on_disk, bytes) == 0);
        uint8_t reference[4];
        hdf5_fletcher32_trailer(scratch, raw, bytes - 4, reference);
        matched += memcmp(reference, raw + bytes - 4, 4) == 0;
        odd += (bytes - 4) % 2 == 1;
        even += (bytes - 4) % 2 == 0;
        free(raw);
        free(on_disk);
    }
    CHECK_MSG(matched == (int)n_chunks, "%d of %d chunk checksums match HDF5's", matched, (int)n_chunks);
    CHECK_MSG(odd > 0 && even > 0, "chunks of odd (%d) and even (%d) length", odd, even); /* both paths */
    H5Fclose(scratch);
    H5Sclose(space);

    /* HDF5 reads every chunk back with its checksum verification explicitly on. */
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    CHECK(H5Pset_edc_check(dxpl, H5Z_ENABLE_EDC) >= 0);
    strand_token_t *all = malloc(sizeof *all * (size_t)total_tokens());
    CHECK(H5Dread(tokens, H5T_NATIVE_UINT32, H5S_ALL, H5S_ALL, dxpl, all) >= 0); /* strand_token_t */
    int64_t wrong = 0;
    for (int64_t i = 0; i < total_tokens(); i++)
        wrong += all[i] != expected_token(i);
    CHECK(wrong == 0);

    /* One flipped byte inside chunk 2's compressed data, one in chunk 1's stored checksum. */
    long where2 = 0, where1 = 0;
    hsize_t bytes2 = 0, bytes1 = 0;
    chunk_place(file, tokens, 2, &where2, &bytes2);
    chunk_place(file, tokens, 1, &where1, &bytes1);
    H5Dclose(tokens);
    H5Fclose(file);
    const char *flipped = path_in_dir("flipped.h5");
    copy_file(path, flipped);
    xor_byte_at(flipped, where2 + (long)bytes2 / 2, 0x10);
    xor_byte_at(flipped, where1 + (long)bytes1 - 2, 0x01);
    reseal(flipped);
    file = H5Fopen(flipped, H5F_ACC_RDONLY, H5P_DEFAULT);
    tokens = H5Dopen2(file, "/tokens", H5P_DEFAULT);
    hid_t file_space = H5Dget_space(tokens);
    for (hsize_t c = 0; c < 3; c++) {
        hsize_t start = c * CHUNK, count = CHUNK;
        hid_t memory = H5Screate_simple(1, &count, NULL);
        H5Sselect_hyperslab(file_space, H5S_SELECT_SET, &start, NULL, &count, NULL);
        herr_t read = H5Dread(tokens, H5T_NATIVE_UINT8, memory, file_space, dxpl, all);
        if (c == 0) {
            CHECK_MSG(read >= 0, "undamaged chunk 0 refused");
        } else {
            CHECK_MSG(read < 0, "damaged chunk %d read", (int)c);
            CHECK_MSG(h5_error_mentions("Fletcher32"), "chunk %d: HDF5 did not name its Fletcher32 check",
                      (int)c);
        }
        H5Sclose(memory);
    }
    H5Eclear2(H5E_DEFAULT);
    H5Sclose(file_space);
    H5Dclose(tokens);
    H5Fclose(file);
    H5Pclose(dxpl);

    /* strand reports the first damaged chunk by number and token range, naming the file. */
    strand_dataset ds;
    CHECK(strand_dataset_open(&ds, flipped, MPI_COMM_SELF) == STRAND_OK);
    CHECK(ds.tokens_checksummed == 1);
    CHECK(strand_dataset_read(&ds, 0, 1000, all) == STRAND_OK);
    CHECK(strand_dataset_read(&ds, 100, ds.n_tokens - 200, all) == STRAND_ERR_IO);
    const char *message = strand_error_message();
    CHECK_MSG(strstr(message, "flipped.h5: /tokens chunk 1 (tokens [1048576, 2097152))") != NULL &&
                  strstr(message, "Fletcher32") != NULL,
              "'%s'", message);
    strand_dataset_close(&ds);
    free(all);
}

/* Tokens that are not in the vocabulary, from corruption or a chunk HDF5 cannot find, are
 * refused with the file and the offset of the first one: they would index past the embedding. */
static void test_invalid_tokens(void) {
    const char *small = path_in_dir("small.fa");
    /* Grown past its last chunk: the new range has no chunk and reads as the fill value; the last
     * chunk's padding beyond the 14 tokens must read as invalid as well. */
    const char *grown = path_in_dir("grown.h5");
    CHECK(prep_one(small, grown) == STRAND_OK);
    hid_t file = H5Fopen(grown, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t tokens = H5Dopen2(file, "/tokens", H5P_DEFAULT);
    hsize_t extent = 2 * CHUNK + 10;
    CHECK(tokens >= 0 && H5Dset_extent(tokens, &extent) >= 0);
    H5Dclose(tokens);
    H5Fclose(file);
    reseal(grown);
    strand_dataset ds;
    strand_token_t buffer[64];
    CHECK(strand_dataset_open(&ds, grown, MPI_COMM_SELF) == STRAND_OK);
    CHECK(ds.n_tokens == (int64_t)extent);
    CHECK(strand_dataset_read(&ds, 0, 14, buffer) == STRAND_OK);
    CHECK(strand_dataset_read(&ds, 10, 10, buffer) == STRAND_ERR_INPUT);
    CHECK_MSG(strstr(strand_error_message(), "grown.h5: /tokens offset 14: value 65535") != NULL, "'%s'",
              strand_error_message());
    CHECK(strand_dataset_read(&ds, CHUNK + 5, 8, buffer) == STRAND_ERR_INPUT);
    CHECK_MSG(strstr(strand_error_message(), "/tokens offset 1048581: value 65535") != NULL &&
                  strstr(strand_error_message(), "fill value") != NULL,
              "'%s'", strand_error_message());
    strand_dataset_close(&ds);

    /* Values written over good tokens: the first bad offset is named, in any read. */
    const char *bad = path_in_dir("badtoken.h5");
    copy_file(path_in_dir("frac.h5"), bad);
    file = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
    tokens = H5Dopen2(file, "/tokens", H5P_DEFAULT);
    const hsize_t spots[3] = {2500000, 2600000, 11};
    const uint16_t values[3] = {200, 9, 8};
    for (int k = 0; k < 3; k++) {
        hid_t space = H5Dget_space(tokens);
        hsize_t one = 1;
        hid_t memory = H5Screate_simple(1, &one, NULL);
        H5Sselect_hyperslab(space, H5S_SELECT_SET, &spots[k], NULL, &one, NULL);
        CHECK(H5Dwrite(tokens, H5T_NATIVE_UINT16, memory, space, H5P_DEFAULT, &values[k]) >= 0);
        H5Sclose(memory);
        H5Sclose(space);
    }
    H5Dclose(tokens);
    H5Fclose(file);
    reseal(bad);
    CHECK(strand_dataset_open(&ds, bad, MPI_COMM_SELF) == STRAND_OK);
    strand_token_t *all = malloc(sizeof *all * (size_t)ds.n_tokens);
    CHECK(strand_dataset_read(&ds, 1000, ds.n_tokens - 1000, all) == STRAND_ERR_INPUT);
    CHECK_MSG(strstr(strand_error_message(),
                     "badtoken.h5: /tokens offset 2500000: value 200 is not a token") != NULL,
              "'%s'", strand_error_message());
    CHECK(strand_dataset_read(&ds, 2500001, 200000, all) == STRAND_ERR_INPUT);
    CHECK(strstr(strand_error_message(), "offset 2600000: value 9 ") != NULL);
    CHECK(strand_dataset_read(&ds, 0, 12, all) == STRAND_ERR_INPUT);
    CHECK(strstr(strand_error_message(), "offset 11: value 8 ") != NULL);
    CHECK(strand_dataset_read(&ds, 0, 11, all) == STRAND_OK); /* the values before it are fine */
    CHECK(strand_dataset_read(&ds, 2500001, 99999, all) == STRAND_OK);
    /* The loader reads through the same check: training never sees the bad value. */
    strand_loader loader;
    CHECK(strand_loader_init(&loader, &ds, 64, 1, 0) == STRAND_OK);
    strand_window forward = {.offset = 2499990, .reverse = 0}, backward = {.offset = 2499990, .reverse = 1};
    CHECK(strand_loader_read(&loader, forward, 0, 64, all) == STRAND_ERR_INPUT);
    CHECK(strstr(strand_error_message(), "offset 2500000") != NULL);
    CHECK(strand_loader_read(&loader, backward, 0, 64, all) == STRAND_ERR_INPUT);
    strand_window clean = {.offset = 1000, .reverse = 1};
    CHECK(strand_loader_read(&loader, clean, 0, 64, all) == STRAND_OK);
    strand_loader_free(&loader);
    strand_dataset_close(&ds);
    free(all);
    /* strand info refuses too, instead of printing a composition. */
    CHECK(strand_dataset_print_info(bad) == STRAND_ERR_INPUT);
    CHECK(strstr(strand_error_message(), "offset 11: value 8 ") != NULL);
}

/* What strand_dataset_print_info prints for `path` (malloc'd). */
static char *info_text(const char *path, int *status) {
    const char *out = path_in_dir("info.txt");
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    FILE *f = fopen(out, "w");
    CHECK(saved >= 0 && f != NULL);
    dup2(fileno(f), STDOUT_FILENO);
    *status = strand_dataset_print_info(path);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    fclose(f);
    size_t n = 0;
    return read_whole(out, &n);
}

/* A dataset written by strand before /tokens had checksums (fixture) still opens and reads. */
static void test_old_dataset(void) {
    const char *old = path_in_dir("old.h5");
    gzFile gz = gzopen(old_dataset_gz, "rb");
    CHECK_MSG(gz != NULL, "cannot open %s", old_dataset_gz);
    if (!gz) return;
    static char bytes[1 << 20];
    int n = gzread(gz, bytes, sizeof bytes);
    gzclose(gz);
    CHECK(n > 0);
    write_bytes(old, bytes, (size_t)(n > 0 ? n : 0));
    strand_dataset ds;
    CHECK(strand_dataset_open(&ds, old, MPI_COMM_SELF) == STRAND_OK);
    CHECK(ds.tokens_checksummed == 0);
    CHECK(ds.n_records == 1 && strcmp(ds.record_names[0], "mixed") == 0 && ds.n_tokens == 25);
    strand_token_t tokens[25];
    CHECK(strand_dataset_read(&ds, 0, 25, tokens) == STRAND_OK);
    const char *letters = "acgtACGTRYSWKMBDHVNnnACGT";
    int wrong = 0;
    for (int i = 0; i < 25; i++)
        wrong += tokens[i] != token_of(letters[i]);
    CHECK(wrong == 0);
    strand_dataset_close(&ds);
    int status = -1;
    char *text = info_text(old, &status);
    CHECK(status == STRAND_OK && text != NULL);
    CHECK_MSG(text && strstr(text, "\ntokens: 8-bit, no per-chunk checksums (written by an older strand)\n"),
              "%s", text ? text : "");
    CHECK(text && strstr(text, "composition: A 0.1200  C 0.1200  G 0.1200  T 0.1200  N 0.5200"));
    free(text);
    CHECK(strand_dataset_open(&ds, path_in_dir("small.h5"), MPI_COMM_SELF) == STRAND_OK);
    CHECK(ds.tokens_checksummed == 1);
    strand_dataset_close(&ds);
    text = info_text(path_in_dir("small.h5"), &status);
    CHECK(status == STRAND_OK && text && strstr(text, "\ntokens: 16-bit, Fletcher32 checksums per chunk\n"));
    free(text);
}

/* ---- rank 0: record names, and inputs prep must not overwrite ---- */

/* Names of up to 255 bytes are kept whole: two that share their first 127 bytes stay apart. */
static void test_long_names(void) {
    char a[300], b[300], c[300], text[1200];
    memset(a, 'x', 127);
    memcpy(b, a, 127);
    snprintf(a + 127, sizeof a - 127, "_one");
    snprintf(b + 127, sizeof b - 127, "_two");
    memset(c, 'y', STRAND_RECORD_NAME_MAX);
    c[STRAND_RECORD_NAME_MAX] = '\0';
    snprintf(text, sizeof text, ">%s first\nACGT\n>%s\nGG\n>%s\nTTT\n", a, b, c);
    const char *input = path_in_dir("longnames.fa"), *output = path_in_dir("longnames.h5");
    write_text(input, text);
    const char *inputs[1] = {input}, *val[1] = {b};
    strand_prep_options options = {
        .inputs = inputs, .n_inputs = 1, .output = output, .val_records = val, .n_val_records = 1};
    strand_prep_stats stats;
    CHECK(strand_prep_run(&options, &stats) == STRAND_OK);
    CHECK(stats.n_val_tokens == 2 && stats.n_train_tokens == 7); /* b, and only b */
    strand_dataset ds;
    CHECK(strand_dataset_open(&ds, output, MPI_COMM_SELF) == STRAND_OK);
    CHECK(ds.n_records == 3);
    if (ds.n_records == 3) {
        CHECK(strcmp(ds.record_names[0], a) == 0 && strcmp(ds.record_names[1], b) == 0);
        CHECK(strcmp(ds.record_names[2], c) == 0 && strlen(ds.record_names[2]) == STRAND_RECORD_NAME_MAX);
        CHECK(ds.n_val == 1 && ds.val[0].offset == 4 && ds.val[0].length == 2);
    }
    strand_dataset_close(&ds);
    int status = -1;
    char *info = info_text(output, &status);
    CHECK(status == STRAND_OK && info && strstr(info, a) && strstr(info, b) && strstr(info, c));
    free(info);
    /* A --val-records name no record can have is refused as such, before reading any input. */
    char too_long[300];
    memset(too_long, 'y', STRAND_RECORD_NAME_MAX + 1);
    too_long[STRAND_RECORD_NAME_MAX + 1] = '\0';
    val[0] = too_long;
    CHECK(strand_prep_run(&options, NULL) == STRAND_ERR_INPUT);
    CHECK_MSG(strstr(strand_error_message(), "--val-records: a name of 256 bytes is longer than") != NULL,
              "'%s'", strand_error_message());
    /* A file whose names are longer than strand's limit (not from strand prep) is refused, not cut. */
    const char *foreign = path_in_dir("foreignnames.h5");
    copy_file(output, foreign);
    hid_t file = H5Fopen(foreign, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t names = H5Dopen2(file, "/records/name", H5P_DEFAULT), type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    char long_c[300];
    memset(long_c, 'z', 299);
    long_c[299] = '\0';
    const char *rewritten[3] = {a, b, long_c};
    CHECK(H5Dwrite(names, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, rewritten) >= 0);
    H5Tclose(type);
    H5Dclose(names);
    H5Fclose(file);
    reseal(foreign);
    CHECK(strand_dataset_open(&ds, foreign, MPI_COMM_SELF) == STRAND_ERR_INPUT);
    CHECK_MSG(strstr(strand_error_message(),
                     "foreignnames.h5: /records/name entry 2 is 299 bytes, longer than the 255") != NULL,
              "'%s'", strand_error_message());
}

/* prep writes "<output>.tmp" and then the output: neither may be an input, however it is named. */
static void test_input_is_output(void) {
    const char *original = path_in_dir("small.fa");
    size_t n_original = 0, n_now = 0;
    char *before = read_whole(original, &n_original);
    struct {
        const char *input, *output, *shown; /* names in dir */
    } cases[] = {
        {"g.tmp", "g", "temporary file"},
        {"g.tmp", "sub/../g", "temporary file"},
        {"link.fa", "g", "temporary file"}, /* link.fa -> g.tmp */
        {"g2.fa", "g2.fa", "output"},
        {"link2.fa", "g2.fa", "output"},            /* link2.fa -> g2.fa */
        {"absent.tmp", "absent", "temporary file"}, /* neither exists: compared by path */
    };
    mkdir(path_in_dir("sub"), 0755);
    copy_file(original, path_in_dir("g.tmp"));
    copy_file(original, path_in_dir("g2.fa"));
    CHECK(symlink(path_in_dir("g.tmp"), path_in_dir("link.fa")) == 0);
    CHECK(symlink("g2.fa", path_in_dir("link2.fa")) == 0);
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        char input[600], output[600];
        snprintf(input, sizeof input, "%s", path_in_dir(cases[k].input));
        snprintf(output, sizeof output, "%s", path_in_dir(cases[k].output));
        int existed = file_exists(input);
        CHECK_MSG(prep_one(input, output) == STRAND_ERR_INPUT, "case %d ran", (int)k);
        const char *message = strand_error_message();
        CHECK_MSG(strstr(message, input) && strstr(message, cases[k].shown) &&
                      strstr(message, "prep would overwrite its input"),
                  "case %d: '%s'", (int)k, message);
        if (existed) {
            char *after = read_whole(input, &n_now);
            CHECK_MSG(after && n_now == n_original && memcmp(before, after, n_now) == 0,
                      "case %d: the input changed", (int)k);
            free(after);
        } else {
            CHECK_MSG(!file_exists(input), "case %d: prep left its input behind", (int)k);
        }
    }
    CHECK(!file_exists(path_in_dir("g")) && !file_exists(path_in_dir("absent")));
    /* A second name for the output's directory, and the output through a symlink to an input. */
    CHECK(symlink(dir, path_in_dir("again")) == 0);
    char via_again[600];
    snprintf(via_again, sizeof via_again, "%s/again/g", dir);
    CHECK(prep_one(path_in_dir("g.tmp"), via_again) == STRAND_ERR_INPUT);
    CHECK(symlink(path_in_dir("g2.fa"), path_in_dir("out_link.h5")) == 0);
    CHECK(prep_one(path_in_dir("g2.fa"), path_in_dir("out_link.h5")) == STRAND_ERR_INPUT);
    char *after = read_whole(path_in_dir("g2.fa"), &n_now);
    CHECK(after && n_now == n_original && memcmp(before, after, n_now) == 0);
    free(after);
    /* An ordinary output next to them still works. */
    CHECK(prep_one(path_in_dir("g.tmp"), path_in_dir("fine.h5")) == STRAND_OK);
    free(before);
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
    strand_token_t *buffer = malloc(sizeof *buffer * BLOCK);
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
    strand_token_t small[14];
    CHECK(strand_dataset_read(&ds, 0, 14, small) == STRAND_OK);
    const strand_token_t expect[14] = {0, 1, 2, 3, 0, 1, 2, 3, 4, 4, 2, 2, 2, 2};
    CHECK(memcmp(small, expect, sizeof expect) == 0);
    strand_dataset_close(&ds);

    strand_dataset zeroed;
    memset(&zeroed, 0, sizeof zeroed);
    strand_dataset_close(&zeroed);

    expect_open_error("missing.h5", "missing.h5: no such file");
    expect_open_error("random.h5", "random.h5: not an HDF5 file or corrupt");
    /* Cut short: the whole-file checksum header, verified first, says so. */
    expect_open_error("cut.h5", "cut.h5: the file has 2048 bytes, its checksum header says");
    expect_open_error("part1.fa", "part1.fa: not an HDF5 file or corrupt");
    expect_open_error("v2.h5", "v2.h5: dataset format version 2, this strand reads 1");
    expect_open_error("bpe.h5", "tokenizer bpe:4096 without /tokenizer/merges");
    expect_open_error("tokv2.h5", "dataset tokenizer 'nucleotide' version 2, this strand uses version 1");
    expect_open_error("noversion.h5", "missing root attribute 'format_version'");
    expect_open_error("notokens.h5", "missing dataset /tokens");
    expect_open_error("nosplit.h5", "missing dataset /split/val");
    expect_open_error("other.h5", "missing root attribute 'format_version'");
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    old_dataset_gz = argc > 1 ? argv[1] : "tests/data/fixtures/old_strand_dataset.h5.gz";
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
        test_checksummed_tokens();
        test_invalid_tokens();
        test_old_dataset();
        test_long_names();
        test_input_is_output();
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
