/* SHA-256 known-answer vectors and the FASTA(.gz) parser: folding, IUPAC, CRLF, blank and comment
 * lines, records and lines that straddle the reader's 1 MiB blocks, multi-member gzip, and every
 * refusal with its file:line:column message. */
#define _POSIX_C_SOURCE 200809L
#include "strand/dataset.h"
#include "data/fasta.h"
#include "data/sha256.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

enum { BLOCK = 1 << 20 };

static char dir[] = "/tmp/strand_test_fasta_XXXXXX";

/* ---- helpers ---- */

typedef struct {
    uint8_t *tokens;
    size_t n_tokens, cap;
    char names[16][64];
    int64_t lengths[16];
    int n_records;
    int fail_after_tokens; /* > 0: the tokens callback fails once this many tokens arrived */
} collected;

static int collect_begin(void *user, const char *name) {
    collected *c = user;
    if (c->n_records < 16) snprintf(c->names[c->n_records], 64, "%s", name);
    return STRAND_OK;
}

static int collect_tokens(void *user, const uint8_t *tokens, size_t count) {
    collected *c = user;
    if (c->n_tokens + count > c->cap) {
        c->cap = (c->n_tokens + count) * 2;
        c->tokens = realloc(c->tokens, c->cap);
    }
    memcpy(c->tokens + c->n_tokens, tokens, count);
    c->n_tokens += count;
    if (c->fail_after_tokens > 0 && c->n_tokens >= (size_t)c->fail_after_tokens)
        STRAND_FAIL(STRAND_ERR_INTERNAL, "stop requested by the test");
    return STRAND_OK;
}

static int collect_end(void *user, const char *name, int64_t length) {
    collected *c = user;
    if (c->n_records < 16) c->lengths[c->n_records] = length;
    c->n_records++;
    return STRAND_OK;
}

static const strand_fasta_callbacks collector = {collect_begin, collect_tokens, collect_end};

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    CHECK(fwrite(data, 1, n, f) == n);
    fclose(f);
}

static char *path_in_dir(const char *name) {
    static char buffers[4][512];
    static int next = 0;
    char *p = buffers[next++ % 4];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

/* One gzip member of data[0, n). */
static size_t gzip_member(const void *data, size_t n, uint8_t *out, size_t cap) {
    z_stream z;
    memset(&z, 0, sizeof z);
    CHECK(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK);
    z.next_in = (Bytef *)(uintptr_t)data;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    CHECK(deflate(&z, Z_FINISH) == Z_STREAM_END);
    size_t produced = cap - z.avail_out;
    deflateEnd(&z);
    return produced;
}

/* Parse `text` written to `name`; returns the status, fills `c`. */
static int parse_text(const char *name, const char *text, size_t n, collected *c) {
    memset(c, 0, sizeof *c);
    write_bytes(path_in_dir(name), text, n);
    strand_error_clear();
    return strand_fasta_read(path_in_dir(name), &collector, c, NULL);
}

static void expect_error(const char *name, const char *text, const char *fragment) {
    collected c;
    int status = parse_text(name, text, strlen(text), &c);
    CHECK_MSG(status == STRAND_ERR_INPUT, "%s: status %d", name, status);
    CHECK_MSG(strstr(strand_error_message(), fragment) != NULL, "%s: message '%s' lacks '%s'", name,
              strand_error_message(), fragment);
    free(c.tokens);
}

static int tokens_equal(const uint8_t *tokens, const char *letters, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (tokens[i] != strand_fasta_token_of((unsigned char)letters[i])) return 0;
    return 1;
}

/* ---- SHA-256 ---- */

static void sha_hex(const void *data, size_t n, char hex[65]) {
    strand_sha256 ctx;
    uint8_t digest[32];
    strand_sha256_init(&ctx);
    strand_sha256_update(&ctx, data, n);
    strand_sha256_final(&ctx, digest);
    strand_sha256_hex(digest, hex);
}

static void test_sha256(void) {
    char hex[65];
    sha_hex("", 0, hex);
    CHECK(strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0);
    sha_hex("abc", 3, hex);
    CHECK(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
    const char *v448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha_hex(v448, strlen(v448), hex);
    CHECK(strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1") == 0);
    /* One million 'a', fed in uneven pieces to exercise the partial-block paths. */
    char *million = malloc(1000000);
    memset(million, 'a', 1000000);
    strand_sha256 ctx;
    uint8_t digest[32];
    strand_sha256_init(&ctx);
    for (size_t done = 0, step = 1; done < 1000000; step = step * 3 % 1000 + 1) {
        size_t take = done + step > 1000000 ? 1000000 - done : step;
        strand_sha256_update(&ctx, million + done, take);
        done += take;
    }
    strand_sha256_final(&ctx, digest);
    strand_sha256_hex(digest, hex);
    CHECK(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0);
    sha_hex(million, 1000000, hex);
    CHECK(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0);
    /* 55, 56 and 64 bytes: the padding boundaries. */
    sha_hex(million, 55, hex);
    CHECK(strcmp(hex, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318") == 0);
    sha_hex(million, 56, hex);
    CHECK(strcmp(hex, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a") == 0);
    sha_hex(million, 64, hex);
    CHECK(strcmp(hex, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb") == 0);
    free(million);
}

/* ---- parsing ---- */

static void test_basic_records(void) {
    collected c;
    const char *text =
        ";comment line\n\n>r1 first record\nacgtNRYSWKMBDHVnryswkmbdhv\nACGT\n\n>r2\tdesc\nTTGG";
    CHECK(parse_text("basic.fa", text, strlen(text), &c) == STRAND_OK);
    CHECK(c.n_records == 2);
    CHECK(strcmp(c.names[0], "r1") == 0 && strcmp(c.names[1], "r2") == 0);
    CHECK(c.lengths[0] == 30 && c.lengths[1] == 4);
    const uint8_t expect[] = {0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
                              4, 4, 4, 4, 4, 4, 4, 4, 4, 0, 1, 2, 3, 3, 3, 2, 2};
    CHECK(c.n_tokens == sizeof expect && memcmp(c.tokens, expect, sizeof expect) == 0);
    free(c.tokens);

    /* Every byte value: only the nucleotide and IUPAC letters map to tokens. */
    int mapped = 0;
    for (int b = 0; b < 256; b++)
        mapped += strand_fasta_token_of((unsigned char)b) != 0xFF;
    CHECK(mapped == 30);
    CHECK(strand_fasta_token_of('u') == 0xFF && strand_fasta_token_of('-') == 0xFF);

    const char *crlf = "\r\n>a x\r\nAC\r\nGt\r\n\r\n>b\r\nTT\r\n";
    CHECK(parse_text("crlf.fa", crlf, strlen(crlf), &c) == STRAND_OK);
    CHECK(c.n_records == 2 && c.lengths[0] == 4 && c.lengths[1] == 2);
    CHECK(c.n_tokens == 6 && tokens_equal(c.tokens, "ACGTTT", 6));
    free(c.tokens);

    const char *no_newline = ">only\nAC\nG\r";
    CHECK(parse_text("nonl.fa", no_newline, strlen(no_newline), &c) == STRAND_OK);
    CHECK(c.n_records == 1 && c.lengths[0] == 3);
    free(c.tokens);
}

static void test_summary(void) {
    const char *text = ">s\nACGTN\n";
    write_bytes(path_in_dir("summary.fa"), text, strlen(text));
    strand_fasta_summary summary;
    CHECK(strand_fasta_read(path_in_dir("summary.fa"), NULL, NULL, &summary) == STRAND_OK);
    char hex[65];
    sha_hex(text, strlen(text), hex);
    CHECK(strcmp(summary.sha256_hex, hex) == 0);
    CHECK(summary.file_bytes == (int64_t)strlen(text) && summary.text_bytes == (int64_t)strlen(text));
    CHECK(summary.n_records == 1 && summary.n_tokens == 5 && summary.gzip == 0);

    /* A callback failure stops the parse with its status. */
    collected c;
    memset(&c, 0, sizeof c);
    c.fail_after_tokens = 1;
    CHECK(strand_fasta_read(path_in_dir("summary.fa"), &collector, &c, NULL) == STRAND_ERR_INTERNAL);
    free(c.tokens);
}

/* Deterministic sequence letter i (mixed case, some IUPAC). */
static char letter(uint64_t i) {
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull;
    x ^= x >> 29;
    static const char alphabet[] = "ACGTACGTACGTacgtNn";
    return alphabet[x % (sizeof alphabet - 1)];
}

static void put_letter(char *text, size_t *n, char *letters, size_t *n_letters) {
    char l = letter(*n_letters);
    text[(*n)++] = l;
    letters[(*n_letters)++] = l;
}

/* Lines and headers straddling the 1 MiB read blocks, plain and as a two-member gzip. */
static void test_block_boundaries(void) {
    size_t cap = 3 * BLOCK + 4096, n = 0;
    char *text = malloc(cap);
    char *letters = malloc(cap);
    size_t n_letters = 0;
    n += (size_t)sprintf(text + n, ">first\n");
    /* A CRLF line whose '\r' is the last byte of block 0 and '\n' the first of block 1. */
    size_t first_line = BLOCK - n - 1;
    for (size_t i = 0; i < first_line; i++)
        put_letter(text, &n, letters, &n_letters);
    text[n++] = '\r';
    text[n++] = '\n';
    CHECK(text[BLOCK - 1] == '\r' && text[BLOCK] == '\n');
    /* 61-column lines until just before block 2, then a header split across the boundary. */
    while (n < 2 * BLOCK - 80) {
        for (int i = 0; i < 61; i++)
            put_letter(text, &n, letters, &n_letters);
        text[n++] = '\n';
    }
    size_t first_tokens = n_letters;
    while (n < 2 * BLOCK - 3)
        text[n++] = '\n'; /* blank lines */
    n += (size_t)sprintf(text + n, ">second_record_name description\n");
    for (int line = 0; line < 2000; line++) {
        for (int i = 0; i < 70; i++)
            put_letter(text, &n, letters, &n_letters);
        text[n++] = '\n';
    }
    collected c;
    CHECK(parse_text("blocks.fa", text, n, &c) == STRAND_OK);
    CHECK(c.n_records == 2);
    CHECK(strcmp(c.names[1], "second_record_name") == 0);
    CHECK(c.lengths[0] == (int64_t)first_tokens && c.lengths[1] == (int64_t)(n_letters - first_tokens));
    CHECK(c.n_tokens == n_letters && tokens_equal(c.tokens, letters, n_letters));
    free(c.tokens);

    /* The same text as two gzip members split mid-line (as `cat a.gz b.gz` or bgzip make). */
    size_t gz_cap = n + 65536, split = n / 3 + 7;
    uint8_t *gz = malloc(gz_cap);
    size_t gz_n = gzip_member(text, split, gz, gz_cap);
    gz_n += gzip_member(text + split, n - split, gz + gz_n, gz_cap - gz_n);
    write_bytes(path_in_dir("blocks.fa.gz"), gz, gz_n);
    memset(&c, 0, sizeof c);
    strand_fasta_summary summary;
    CHECK(strand_fasta_read(path_in_dir("blocks.fa.gz"), &collector, &c, &summary) == STRAND_OK);
    CHECK(c.n_records == 2 && c.n_tokens == n_letters && tokens_equal(c.tokens, letters, n_letters));
    CHECK(summary.gzip == 1 && summary.gzip_members == 2);
    CHECK(summary.file_bytes == (int64_t)gz_n && summary.text_bytes == (int64_t)n);
    char hex[65];
    sha_hex(gz, gz_n, hex);
    CHECK(strcmp(summary.sha256_hex, hex) == 0);
    free(c.tokens);

    /* Truncated: the last bytes of the second member are missing. */
    write_bytes(path_in_dir("truncated.fa.gz"), gz, gz_n - 100);
    memset(&c, 0, sizeof c);
    CHECK(strand_fasta_read(path_in_dir("truncated.fa.gz"), &collector, &c, NULL) == STRAND_ERR_INPUT);
    CHECK_MSG(strstr(strand_error_message(), "truncated gzip stream") != NULL, "%s", strand_error_message());
    CHECK(strstr(strand_error_message(), "truncated.fa.gz") != NULL);
    free(c.tokens);
    /* Cut inside the gzip header of the second member, too. */
    size_t first_member = gzip_member(text, split, gz, gz_cap);
    write_bytes(path_in_dir("truncated2.fa.gz"), gz, first_member + 5);
    memset(&c, 0, sizeof c);
    CHECK(strand_fasta_read(path_in_dir("truncated2.fa.gz"), &collector, &c, NULL) == STRAND_ERR_INPUT);
    CHECK_MSG(strstr(strand_error_message(), "truncated gzip stream") != NULL, "%s", strand_error_message());
    free(c.tokens);

    /* Corrupt: garbage in the middle of the deflate data. */
    gz_n = gzip_member(text, n, gz, gz_cap);
    for (size_t i = gz_n / 2; i < gz_n / 2 + 64; i++)
        gz[i] ^= 0x5A;
    write_bytes(path_in_dir("corrupt.fa.gz"), gz, gz_n);
    memset(&c, 0, sizeof c);
    CHECK(strand_fasta_read(path_in_dir("corrupt.fa.gz"), &collector, &c, NULL) == STRAND_ERR_INPUT);
    CHECK_MSG(strstr(strand_error_message(), "corrupt gzip data") != NULL, "%s", strand_error_message());
    free(c.tokens);
    free(gz);
    free(text);
    free(letters);
}

static void test_refusals(void) {
    char expected[600];
    snprintf(expected, sizeof expected, "%s:3:3: unexpected character 'X' (0x58) in sequence of record r1",
             path_in_dir("badchar.fa"));
    expect_error("badchar.fa", ">r1 d\nACGT\nACXT\n", expected);
    snprintf(expected, sizeof expected, "%s:2:3: carriage return without a line feed",
             path_in_dir("midcr.fa"));
    expect_error("midcr.fa", ">r\nAC\rGT\n", expected);
    snprintf(expected, sizeof expected, "%s:4:2: unexpected character '-' (0x2D)", path_in_dir("gap.fa"));
    expect_error("gap.fa", ">r\r\nAC\r\n\r\nA-GT\r\n", expected);
    expect_error("space.fa", ">r\nAC GT\n", ":2:3: unexpected character ' ' (0x20)");
    expect_error("rna.fa", ">r\nACGU\n", ":2:4: unexpected character 'U' (0x55)");
    expect_error("binary.fa", ">r\nAC\001\n", ":2:3: unexpected character '?' (0x01)");

    expect_error("empty.fa", "", "no FASTA records");
    expect_error("blank.fa", "\n\r\n;just a comment\n", "no FASTA records");
    snprintf(expected, sizeof expected, "%s:1: record a has no sequence", path_in_dir("emptyrec.fa"));
    expect_error("emptyrec.fa", ">a desc\n>b\nACGT\n", expected);
    expect_error("emptylast.fa", ">a\nAC\n>b\n\n", ":3: record b has no sequence");
    expect_error("headeronly.fa", ">a", ":1: record a has no sequence");
    snprintf(expected, sizeof expected, "%s:2:1: sequence text before the first '>' header",
             path_in_dir("before.fa"));
    expect_error("before.fa", "\nACGT\n>a\nAC\n", expected);
    expect_error("noname.fa", ">\nACGT\n", ":1: record header without a name");
    expect_error("noname2.fa", "> desc\nACGT\n", ":1: record header without a name");
    expect_error("ctrlname.fa", ">a\001b\nACGT\n", ":1:3: unexpected character '?' (0x01) in record name");
    char long_name[400] = ">";
    memset(long_name + 1, 'x', 300);
    strcpy(long_name + 301, "\nACGT\n");
    expect_error("longname.fa", long_name, "record name longer than 255 characters");

    collected c;
    memset(&c, 0, sizeof c);
    CHECK(strand_fasta_read(path_in_dir("does_not_exist.fa"), &collector, &c, NULL) == STRAND_ERR_INPUT);
    CHECK(strstr(strand_error_message(), "does_not_exist.fa: no such file") != NULL);
    CHECK(strand_fasta_read(dir, &collector, &c, NULL) == STRAND_ERR_INPUT);
    CHECK(strstr(strand_error_message(), "is a directory") != NULL);
}

/* CR-only line ends (classic Mac OS) are refused as such, wherever the first lone '\r' is: not as a
 * record without sequence because the header line seemed to run to the end of the file. */
static void test_cr_only(void) {
    char expected[600];
    snprintf(expected, sizeof expected,
             "%s:1:9: carriage return without a line feed: CR-only line ends are not supported (convert "
             "with tr '\\r' '\\n')",
             path_in_dir("mac.fa"));
    expect_error("mac.fa", ">r1 desc\rACGT\rACGT\r", expected);
    expect_error("macname.fa", ">r1\rACGT\r", ":1:4: carriage return without a line feed");
    expect_error("macnoend.fa", ">r1\rACGT", ":1:4: carriage return without a line feed");
    expect_error("maccomment.fa", ";note\r>r\rACGT\r", ":1:6: carriage return without a line feed");
    expect_error("macblank.fa", "\r\r>r\rAC\r", ":1:1: carriage return without a line feed");
    expect_error("macseq.fa", ">r\nACGT\rACGT\rAC\n", ":2:5: carriage return without a line feed");
    expect_error("maclater.fa", ">r\r\nAC\r\n>s two\rGG\r", ":3:7: carriage return without a line feed");
    /* CRLF is still fine in headers and comments, and a final '\r' ends the last line. */
    collected c;
    const char *crlf = ";c\r\n>r d\r\nAC\r\n>s\r\nG\r";
    CHECK(parse_text("crlfhead.fa", crlf, strlen(crlf), &c) == STRAND_OK);
    CHECK(c.n_records == 2 && c.n_tokens == 3 && tokens_equal(c.tokens, "ACG", 3));
    free(c.tokens);

    /* A header whose line end straddles the 1 MiB read blocks: CRLF parses, a lone CR is refused. */
    char *text = malloc(BLOCK + 64);
    size_t n = (size_t)sprintf(text, ">r ");
    while (n < BLOCK - 1)
        text[n++] = 'd';
    text[n++] = '\r';
    CHECK(n == BLOCK);
    memcpy(text + n, "\nACGT\n", 7);
    CHECK(parse_text("straddle.fa", text, n + 6, &c) == STRAND_OK);
    CHECK(c.n_records == 1 && c.n_tokens == 4 && tokens_equal(c.tokens, "ACGT", 4));
    free(c.tokens);
    memcpy(text + n, "ACGT\r", 6);
    CHECK(parse_text("straddlecr.fa", text, n + 5, &c) == STRAND_ERR_INPUT);
    CHECK_MSG(strstr(strand_error_message(), ":1:1048576: carriage return without a line feed") != NULL,
              "'%s'", strand_error_message());
    free(c.tokens);
    text[0] = ';'; /* the same as a comment line */
    CHECK(parse_text("straddlecomment.fa", text, n + 5, &c) == STRAND_ERR_INPUT);
    CHECK_MSG(strstr(strand_error_message(), ":1:1048576: carriage return without a line feed") != NULL,
              "'%s'", strand_error_message());
    free(c.tokens);
    free(text);
}

static void test_tokens(void) {
    CHECK(strand_token_complement(STRAND_TOKEN_A) == STRAND_TOKEN_T);
    CHECK(strand_token_complement(STRAND_TOKEN_C) == STRAND_TOKEN_G);
    CHECK(strand_token_complement(STRAND_TOKEN_N) == STRAND_TOKEN_N);
    CHECK(strand_token_complement(STRAND_TOKEN_PAD) == STRAND_TOKEN_PAD);
    CHECK(strand_token_char(STRAND_TOKEN_G) == 'G' && strand_token_char(STRAND_TOKEN_BOS) == '.');
}

int main(void) {
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_sha256();
    test_basic_records();
    test_summary();
    test_block_boundaries();
    test_refusals();
    test_cr_only();
    test_tokens();
    char command[600];
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    CHECK(system(command) == 0);
    return test_finish("test_fasta");
}
