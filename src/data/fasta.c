/* Streaming FASTA(.gz) parser: block reads, SHA-256 of the raw bytes, zlib inflate, and a
 * line-at-a-time state machine with a 256-entry token table. */
#define _POSIX_C_SOURCE 200809L
#include "data/fasta.h"

#include "strand/common.h"
#include "strand/dataset.h"
#include "data/sha256.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

enum { BLOCK_BYTES = 1 << 20, BAD_TOKEN = 0xFF };

/* Byte -> token (A C G T = 0..3, IUPAC ambiguity codes = N = 4, either case); X marks a byte that
 * is not a nucleotide code (high bit set, so one OR over a line detects it). */
// clang-format off
#define X BAD_TOKEN
static const uint8_t token_table[256] = {
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, 0, 4, 1, 4, X, X, 2, 4, X, X, 4, X, 4, 4, X,
    X, X, 4, 4, 3, X, 4, 4, X, 4, X, X, X, X, X, X,
    X, 0, 4, 1, 4, X, X, 2, 4, X, X, 4, X, 4, 4, X,
    X, X, 4, 4, 3, X, 4, 4, X, 4, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
};
#undef X
// clang-format on
/* prep's limit on names and the reader's name buffers are one constant. */
_Static_assert(STRAND_FASTA_NAME_MAX == STRAND_RECORD_NAME_MAX, "one limit on record names");
_Static_assert(STRAND_TOKEN_A == 0 && STRAND_TOKEN_C == 1 && STRAND_TOKEN_G == 2 && STRAND_TOKEN_T == 3 &&
                   STRAND_TOKEN_N == 4,
               "token_table assumes these token ids");

uint8_t strand_fasta_token_of(unsigned char c) {
    return token_table[c];
}

/* ---- byte source: plain or gzip ---- */

typedef struct {
    const char *path;
    FILE *file;
    uint8_t *raw;       /* bytes as read from disk */
    uint8_t *text;      /* inflated bytes (gzip only) */
    size_t first_bytes; /* plain: bytes of the first block not yet handed out */
    int raw_eof;
    int gzip, z_ready, member_done, finished;
    z_stream z;
    strand_sha256 sha;
    int64_t file_bytes, text_bytes;
    int members;
} byte_source;

static int source_fill(byte_source *src, size_t *got) {
    size_t n = fread(src->raw, 1, BLOCK_BYTES, src->file);
    if (n < BLOCK_BYTES) {
        if (ferror(src->file)) STRAND_FAIL(STRAND_ERR_IO, "%s: read error: %s", src->path, strerror(errno));
        src->raw_eof = 1;
    }
    strand_sha256_update(&src->sha, src->raw, n);
    src->file_bytes += (int64_t)n;
    *got = n;
    return STRAND_OK;
}

static void source_close(byte_source *src) {
    if (src->z_ready) inflateEnd(&src->z);
    if (src->file) fclose(src->file);
    free(src->raw);
    free(src->text);
    src->file = NULL;
    src->raw = src->text = NULL;
    src->z_ready = 0;
}

static int source_open(byte_source *src, const char *path) {
    memset(src, 0, sizeof *src);
    src->path = path;
    strand_sha256_init(&src->sha);
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) STRAND_FAIL(STRAND_ERR_INPUT, "%s: no such file", path);
        STRAND_FAIL(STRAND_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode)) STRAND_FAIL(STRAND_ERR_INPUT, "%s: is a directory, not a FASTA file", path);
    src->file = fopen(path, "rb");
    if (!src->file) STRAND_FAIL(STRAND_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    src->raw = malloc(BLOCK_BYTES);
    if (!src->raw) {
        source_close(src);
        STRAND_FAIL(STRAND_ERR_NOMEM, "%s: out of memory for the read buffer", path);
    }
    size_t n = 0;
    int status = source_fill(src, &n);
    if (status != STRAND_OK) {
        source_close(src);
        return status;
    }
    if (n >= 2 && src->raw[0] == 0x1f && src->raw[1] == 0x8b) {
        src->gzip = 1;
        src->members = 1;
        src->text = malloc(BLOCK_BYTES);
        if (!src->text) {
            source_close(src);
            STRAND_FAIL(STRAND_ERR_NOMEM, "%s: out of memory for the inflate buffer", path);
        }
        /* 15 + 32: maximum window, gzip or zlib header detected automatically. */
        if (inflateInit2(&src->z, 15 + 32) != Z_OK) {
            source_close(src);
            STRAND_FAIL(STRAND_ERR_NOMEM, "%s: cannot initialise zlib", path);
        }
        src->z_ready = 1;
        src->z.next_in = src->raw;
        src->z.avail_in = (uInt)n;
    } else {
        src->first_bytes = n;
    }
    return STRAND_OK;
}

/* Next block of FASTA text; *count == 0 at the end of the file. */
static int source_next(byte_source *src, const uint8_t **text, size_t *count) {
    *count = 0;
    if (!src->gzip) {
        size_t n = src->first_bytes;
        src->first_bytes = 0;
        if (n == 0 && !src->raw_eof) STRAND_CALL(source_fill(src, &n));
        *text = src->raw;
        *count = n;
        src->text_bytes += (int64_t)n;
        return STRAND_OK;
    }
    for (;;) {
        if (src->finished) return STRAND_OK;
        if (src->z.avail_in == 0 && !src->raw_eof) {
            size_t n = 0;
            STRAND_CALL(source_fill(src, &n));
            src->z.next_in = src->raw;
            src->z.avail_in = (uInt)n;
        }
        if (src->member_done) {
            /* Concatenated members (bgzip, cat a.gz b.gz) continue after each stream end. */
            if (src->z.avail_in == 0) {
                src->finished = 1;
                continue;
            }
            inflateReset(&src->z);
            src->member_done = 0;
            src->members++;
        }
        src->z.next_out = src->text;
        src->z.avail_out = BLOCK_BYTES;
        int ret = inflate(&src->z, Z_NO_FLUSH);
        size_t produced = BLOCK_BYTES - src->z.avail_out;
        if (ret == Z_STREAM_END) {
            src->member_done = 1;
        } else if (ret == Z_OK || ret == Z_BUF_ERROR) {
            if (produced == 0 && src->z.avail_in == 0 && src->raw_eof)
                STRAND_FAIL(STRAND_ERR_INPUT, "%s: truncated gzip stream (the file ends inside member %d)",
                            src->path, src->members);
        } else if (ret == Z_MEM_ERROR) {
            STRAND_FAIL(STRAND_ERR_NOMEM, "%s: out of memory in zlib", src->path);
        } else {
            STRAND_FAIL(STRAND_ERR_INPUT, "%s: corrupt gzip data in member %d: %s", src->path, src->members,
                        src->z.msg ? src->z.msg : "unknown zlib error");
        }
        if (produced > 0) {
            *text = src->text;
            *count = produced;
            src->text_bytes += (int64_t)produced;
            return STRAND_OK;
        }
    }
}

/* ---- parser ---- */

enum parse_state { AT_LINE_START, IN_NAME, IN_HEADER_REST, IN_SEQUENCE, IN_COMMENT };

typedef struct {
    const char *path;
    const strand_fasta_callbacks *cb;
    void *user;
    enum parse_state state;
    int64_t line;    /* 1-based line number of the current byte */
    int64_t column0; /* bytes of the current line seen in earlier blocks */
    int pending_cr;  /* the previous block ended in '\r' (inside a sequence, header or comment line) */
    int in_record;
    int64_t record_line;
    int64_t record_tokens;
    char name[STRAND_RECORD_NAME_MAX + 1];
    size_t name_len;
    uint8_t *tokens; /* tokens of the current block not yet passed on */
    size_t n_tokens;
    int64_t total_records, total_tokens;
} parser;

static void describe_byte(unsigned char c, char out[8]) {
    if (c == '\r')
        snprintf(out, 8, "\\r");
    else if (c == '\t')
        snprintf(out, 8, "\\t");
    else if (c >= 0x20 && c < 0x7f)
        snprintf(out, 8, "%c", c);
    else
        snprintf(out, 8, "?");
}

static int flush_tokens(parser *p) {
    if (p->n_tokens == 0) return STRAND_OK;
    if (p->cb && p->cb->tokens) STRAND_CALL(p->cb->tokens(p->user, p->tokens, p->n_tokens));
    p->n_tokens = 0;
    return STRAND_OK;
}

static int end_record(parser *p) {
    if (!p->in_record) return STRAND_OK;
    STRAND_CALL(flush_tokens(p));
    if (p->record_tokens == 0)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s:%lld: record %s has no sequence", p->path,
                    (long long)p->record_line, p->name);
    if (p->cb && p->cb->record_end) STRAND_CALL(p->cb->record_end(p->user, p->name, p->record_tokens));
    p->in_record = 0;
    p->total_records++;
    return STRAND_OK;
}

static int begin_record(parser *p) {
    p->name[p->name_len] = '\0';
    if (p->name_len == 0)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s:%lld: record header without a name (nothing after '>')", p->path,
                    (long long)p->record_line);
    p->in_record = 1;
    p->record_tokens = 0;
    if (p->cb && p->cb->record_begin) STRAND_CALL(p->cb->record_begin(p->user, p->name));
    return STRAND_OK;
}

/* Old Mac files end lines with '\r' alone: said as such, wherever the first one is. */
static int lone_cr(const parser *p, int64_t column) {
    STRAND_FAIL(STRAND_ERR_INPUT,
                "%s:%lld:%lld: carriage return without a line feed: CR-only line ends are not supported "
                "(convert with tr '\\r' '\\n')",
                p->path, (long long)p->line, (long long)column);
}

static int bad_character(const parser *p, unsigned char c, int64_t column) {
    if (c == '\r') return lone_cr(p, column);
    char shown[8];
    describe_byte(c, shown);
    if (!p->in_record)
        STRAND_FAIL(STRAND_ERR_INPUT,
                    "%s:%lld:%lld: sequence text before the first '>' header line (found '%s' (0x%02X); is "
                    "this a FASTA file?)",
                    p->path, (long long)p->line, (long long)column, shown, c);
    STRAND_FAIL(STRAND_ERR_INPUT, "%s:%lld:%lld: unexpected character '%s' (0x%02X) in sequence of record %s",
                p->path, (long long)p->line, (long long)column, shown, c, p->name);
}

/* One segment of a sequence line: text[0, length) holds no '\n'. `line_ends` tells whether a
 * newline follows it in this block. */
static int sequence_segment(parser *p, const uint8_t *text, size_t length, int line_ends) {
    if (p->pending_cr) {
        /* A '\r' is only accepted directly before '\n'. */
        if (length > 0) return bad_character(p, '\r', p->column0);
        p->pending_cr = 0;
    }
    size_t body = length;
    if (body > 0 && text[body - 1] == '\r') {
        body--;
        if (!line_ends) p->pending_cr = 1;
    }
    if (body == 0) return STRAND_OK;
    if (!p->in_record) return bad_character(p, text[0], p->column0 + 1);
    uint8_t *out = p->tokens + p->n_tokens;
    unsigned bad = 0;
    for (size_t k = 0; k < body; k++) {
        uint8_t t = token_table[text[k]];
        out[k] = t;
        bad |= t;
    }
    if (bad & 0x80) {
        for (size_t k = 0; k < body; k++)
            if (token_table[text[k]] & 0x80) return bad_character(p, text[k], p->column0 + (int64_t)k + 1);
    }
    p->n_tokens += body;
    p->record_tokens += (int64_t)body;
    p->total_tokens += (int64_t)body;
    return STRAND_OK;
}

/* One segment of a header's rest or of a comment line: text[0, length) holds no '\n' and is
 * ignored, but a '\r' in it must end the line. Without this check a file with CR-only line ends
 * would be one long header line, refused as a record without sequence. */
static int skipped_segment(parser *p, const uint8_t *text, size_t length, int line_ends) {
    if (p->pending_cr) {
        if (length > 0) return lone_cr(p, p->column0);
        p->pending_cr = 0;
    }
    const uint8_t *cr = memchr(text, '\r', length);
    if (cr) {
        size_t k = (size_t)(cr - text);
        if (k + 1 < length) return lone_cr(p, p->column0 + (int64_t)k + 1);
        if (!line_ends) p->pending_cr = 1;
    }
    p->column0 += (int64_t)length;
    return STRAND_OK;
}

static int parse_block(parser *p, const uint8_t *text, size_t n) {
    size_t i = 0;
    while (i < n) {
        switch (p->state) {
        case AT_LINE_START: {
            uint8_t c = text[i];
            if (c == '>') {
                STRAND_CALL(end_record(p));
                p->record_line = p->line;
                p->name_len = 0;
                p->state = IN_NAME;
                p->column0 = 1;
                i++;
            } else if (c == ';') {
                p->state = IN_COMMENT;
            } else if (c == '\n') {
                p->line++;
                i++;
            } else {
                p->state = IN_SEQUENCE;
            }
            break;
        }
        case IN_NAME: {
            while (i < n) {
                uint8_t c = text[i];
                if (c == ' ' || c == '\t' || c == '\r' || c == '\n') break;
                if (c < 0x20 || c == 0x7f) {
                    char shown[8];
                    describe_byte(c, shown);
                    STRAND_FAIL(STRAND_ERR_INPUT,
                                "%s:%lld:%lld: unexpected character '%s' (0x%02X) in record name", p->path,
                                (long long)p->line, (long long)(p->column0 + 1), shown, c);
                }
                if (p->name_len == STRAND_RECORD_NAME_MAX)
                    STRAND_FAIL(STRAND_ERR_INPUT, "%s:%lld: record name longer than %d characters", p->path,
                                (long long)p->line, STRAND_RECORD_NAME_MAX);
                p->name[p->name_len++] = (char)c;
                p->column0++;
                i++;
            }
            if (i < n) {
                STRAND_CALL(begin_record(p));
                p->state = IN_HEADER_REST;
            }
            break;
        }
        case IN_HEADER_REST:
        case IN_COMMENT: {
            const uint8_t *newline = memchr(text + i, '\n', n - i);
            size_t end = newline ? (size_t)(newline - text) : n;
            STRAND_CALL(skipped_segment(p, text + i, end - i, newline != NULL));
            i = end;
            if (newline) {
                p->line++;
                p->column0 = 0;
                p->state = AT_LINE_START;
                i = end + 1;
            }
            break;
        }
        case IN_SEQUENCE: {
            const uint8_t *newline = memchr(text + i, '\n', n - i);
            size_t end = newline ? (size_t)(newline - text) : n;
            STRAND_CALL(sequence_segment(p, text + i, end - i, newline != NULL));
            if (newline) {
                p->line++;
                p->column0 = 0;
                p->state = AT_LINE_START;
                i = end + 1;
            } else {
                p->column0 += (int64_t)(end - i);
                i = end;
            }
            break;
        }
        }
    }
    return flush_tokens(p);
}

static int parse_end(parser *p) {
    if (p->state == IN_NAME) STRAND_CALL(begin_record(p));
    p->pending_cr = 0; /* a final "\r" without "\n" is a line end too */
    STRAND_CALL(end_record(p));
    if (p->total_records == 0)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: no FASTA records (no line starts with '>')", p->path);
    return STRAND_OK;
}

int strand_fasta_read(const char *path, const strand_fasta_callbacks *callbacks, void *user,
                      strand_fasta_summary *summary) {
    byte_source src;
    STRAND_CALL(source_open(&src, path));
    parser p = {.path = path, .cb = callbacks, .user = user, .state = AT_LINE_START, .line = 1};
    p.tokens = malloc(BLOCK_BYTES);
    int status = STRAND_OK;
    if (!p.tokens) {
        status = strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__, "%s: out of memory for tokens", path);
        goto done;
    }
    for (;;) {
        const uint8_t *text = NULL;
        size_t count = 0;
        STRAND_CALL_GOTO(status, done, source_next(&src, &text, &count));
        if (count == 0) break;
        STRAND_CALL_GOTO(status, done, parse_block(&p, text, count));
    }
    STRAND_CALL_GOTO(status, done, parse_end(&p));
    if (summary) {
        memset(summary, 0, sizeof *summary);
        summary->file_bytes = src.file_bytes;
        summary->text_bytes = src.text_bytes;
        summary->n_records = p.total_records;
        summary->n_tokens = p.total_tokens;
        summary->gzip = src.gzip;
        summary->gzip_members = src.members;
        uint8_t digest[32];
        strand_sha256_final(&src.sha, digest);
        strand_sha256_hex(digest, summary->sha256_hex);
    }
done:
    free(p.tokens);
    source_close(&src);
    return status;
}
