/* strand prep: FASTA(.gz) inputs -> one HDF5 dataset (schema in README.md, "Dataset format").
 *
 * Tokens stream from the FASTA parser into 1 MiB chunks that are compressed (by worker threads)
 * and appended to the extendible /tokens dataset, so memory does not depend on the genome size. Only
 * the record table (one entry per FASTA record) is kept in memory. Everything is written to
 * "<output>.tmp", which is renamed over the output only once the file is complete and closed. */
#define _XOPEN_SOURCE 700 /* POSIX 2008 with realpath() */
#include "strand/dataset.h"
#include "data/fasta.h"
#include "core/atomic_file.h"
#include "core/filesum.h"

#include <inttypes.h>
#include <pthread.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

enum {
    CHUNK_TOKENS = 1 << 20, /* /tokens chunk: 1 Mi tokens */
    N_SLOTS = 8,            /* chunks in flight between the parser and the compressors */
    MAX_WORKERS = 4,
};

/* /tokens chunks are compressed here, not by HDF5's filter pipeline, and stored with
 * H5Dwrite_chunk: this lets worker threads compress while the main thread parses (HDF5 itself is
 * called from the main thread only), and lets us choose zlib's Huffman-only strategy, which on
 * DNA is both faster and smaller than deflate level 1 (single-letter statistics are nearly all
 * there is to gain). Each chunk is a standard zlib stream followed by its Fletcher32 checksum,
 * exactly what HDF5's deflate and fletcher32 filters write, so any HDF5 reader verifies and
 * inflates it. */
typedef enum { SLOT_FREE, SLOT_FILLED, SLOT_BUSY, SLOT_DONE } slot_state;

typedef struct {
    /* CHUNK_TOKENS tokens of token_bytes bytes as HDF5's shuffle filter leaves them: the low
     * bytes, then the next byte of each, and so on (byte planes). Nucleotide codes fit in the low
     * byte, so the parser's bytes are copied as they come and the high plane is zero, which
     * deflate all but removes. The last chunk is padded with the fill value. */
    uint8_t *raw;
    uint8_t *packed; /* its zlib stream and Fletcher32 checksum */
    size_t valid;    /* tokens of raw that belong to the dataset */
    size_t packed_bytes;
    int64_t index; /* chunk number */
    slot_state state;
    int failed; /* zlib failed on this chunk */
    /* deflate_nucleotide_chunk's table of the codes of byte pairs */
    uint32_t *pair_code;
    uint8_t *pair_length;
} chunk_slot;

typedef struct {
    chunk_slot slots[N_SLOTS];
    int token_bytes; /* 2, or 4 for a vocabulary above 65535 */
    size_t packed_capacity;
    pthread_t threads[MAX_WORKERS];
    int n_threads;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int sync_ready; /* lock and changed initialised */
    int stopping;
    z_stream inline_z; /* used when no thread could be started */
    int inline_z_ready;
} compressor;

typedef struct {
    char *name;
    int64_t offset, length; /* in tokens */
    int64_t bases;          /* bases of the record */
    int64_t train_tokens;   /* tokens of its training part (tokenized datasets; -1: by val_fraction) */
    int32_t source;
} prep_record;

typedef struct {
    const char *path;  /* "<output>.tmp" */
    const char *input; /* the FASTA being read, for messages */
    int32_t source;    /* its index */
    int verbose;
    hid_t file, tokens;
    compressor zip;
    int64_t fill_chunk;  /* chunk being filled */
    size_t fill;         /* tokens in it */
    int64_t write_chunk; /* next chunk to store, in order */
    int64_t n_tokens;    /* tokens received so far */
    prep_record *records;
    int64_t n_records, cap_records;
    /* A tokenizer other than nucleotide: bases gather in `piece` and are encoded at the record's
     * split point, at its end and whenever STRAND_TOKENIZER_PIECE_BASES have gathered. */
    strand_tokenizer *codec;
    const strand_prep_options *options;
    const int64_t *record_bases; /* from the counting pass, in record order */
    uint8_t *piece;
    strand_token_t *piece_tokens;
    int64_t piece_fill;
    int64_t record_done;  /* bases of the current record already encoded or in the piece */
    int64_t record_split; /* bases of the current record's training part */
} prep_writer;

/* ---- chunk compression ---- */

enum { CHECKSUM_BYTES = 4 };

/* HDF5's Fletcher32 (H5_checksum_fletcher32 in H5checksum.c): 16-bit words read big-endian, both
 * sums start at 0 and are folded (end-around carry) every 360 words, before they can overflow; an
 * odd last byte is the high byte of one more word. */
static uint32_t fletcher32(const uint8_t *data, size_t bytes) {
    uint32_t sum1 = 0, sum2 = 0;
    for (size_t words = bytes / 2; words > 0;) {
        size_t run = words < 360 ? words : 360;
        words -= run;
        for (size_t k = 0; k < run; k++, data += 2) {
            sum1 += (uint32_t)data[0] << 8 | data[1];
            sum2 += sum1;
        }
        sum1 = (sum1 & 0xffff) + (sum1 >> 16);
        sum2 = (sum2 & 0xffff) + (sum2 >> 16);
    }
    if (bytes % 2) {
        sum1 += (uint32_t)data[0] << 8;
        sum2 += sum1;
        sum1 = (sum1 & 0xffff) + (sum1 >> 16);
        sum2 = (sum2 & 0xffff) + (sum2 >> 16);
    }
    sum1 = (sum1 & 0xffff) + (sum1 >> 16);
    sum2 = (sum2 & 0xffff) + (sum2 >> 16);
    return sum2 << 16 | sum1;
}

static int deflate_nucleotide_chunk(chunk_slot *slot, size_t capacity, int token_bytes, size_t *bytes);

/* Compress a chunk and append its checksum as HDF5's fletcher32 filter stores it: little-endian
 * (UINT32ENCODE in H5Zfletcher32.c). `capacity` includes the checksum's 4 bytes. */
static int deflate_chunk(z_stream *z, chunk_slot *slot, size_t capacity, int token_bytes) {
    size_t fast_bytes = 0;
    if (deflate_nucleotide_chunk(slot, capacity, token_bytes, &fast_bytes)) {
        uint32_t sum = fletcher32(slot->packed, fast_bytes);
        for (int k = 0; k < CHECKSUM_BYTES; k++)
            slot->packed[fast_bytes + (size_t)k] = (uint8_t)(sum >> (8 * k));
        slot->packed_bytes = fast_bytes + CHECKSUM_BYTES;
        return 0;
    }
    /* One zlib stream in two parts: Huffman codes for the low bytes (single-letter statistics are
     * what DNA offers), then run-length matches for the high bytes, all zero for nucleotides:
     * Huffman alone would spend a bit on each of them. */
    if (deflateReset(z) != Z_OK || deflateParams(z, 1, Z_HUFFMAN_ONLY) != Z_OK) return -1;
    z->next_in = slot->raw;
    z->avail_in = CHUNK_TOKENS;
    z->next_out = slot->packed;
    z->avail_out = (uInt)(capacity - CHECKSUM_BYTES);
    if (deflate(z, Z_NO_FLUSH) != Z_OK || z->avail_in != 0) return -1;
    if (deflateParams(z, 1, Z_RLE) != Z_OK) return -1;
    z->next_in = slot->raw + CHUNK_TOKENS;
    z->avail_in = (uInt)(CHUNK_TOKENS * (size_t)(token_bytes - 1));
    if (deflate(z, Z_FINISH) != Z_STREAM_END) return -1;
    size_t bytes = capacity - CHECKSUM_BYTES - z->avail_out;
    uint32_t sum = fletcher32(slot->packed, bytes);
    for (int k = 0; k < CHECKSUM_BYTES; k++)
        slot->packed[bytes + (size_t)k] = (uint8_t)(sum >> (8 * k));
    slot->packed_bytes = bytes + CHECKSUM_BYTES;
    return 0;
}

/* ---- the nucleotide chunk's own deflate encoder ----
 *
 * zlib's Huffman-only deflate goes symbol by symbol through its block buffer and costs more than
 * all the rest of prep. A nucleotide chunk is simpler: its low plane holds a few byte values and
 * its high plane is zero. Such a chunk is written here as one zlib stream of one dynamic-Huffman
 * block (RFC 1950, 1951): the low plane as literals, the high plane as a literal 0 and length-258
 * matches at distance 1. Any inflater reads it back to the same bytes; a chunk that does not fit
 * (a tokenizer's wide tokens, the padded last chunk) goes through zlib as before. */

enum {
    LITLEN_CODES = 286, /* literals, end of block (256), lengths up to code 285 (length 258) */
    DIST_CODES = 2,     /* distance 1 (code 0); code 1 makes the distance code complete */
    CL_CODES = 19,
    FAST_MAX_SYMBOLS = 16, /* distinct low bytes: Huffman depth stays within 15 bits */
    FAST_BLOCK = 1 << 15,  /* low-plane bytes per deflate block */
    MAX_MATCH = 258,
    ADLER_BASE = 65521,
};

typedef struct {
    uint8_t *out;
    size_t pos;
    uint64_t bits;
    int count;
} bit_writer;

static inline void put_bits(bit_writer *bw, uint32_t value, int count) {
    bw->bits |= (uint64_t)value << bw->count;
    bw->count += count;
    if (bw->count >= 32) {
        for (int k = 0; k < 4; k++)
            bw->out[bw->pos++] = (uint8_t)(bw->bits >> (8 * k));
        bw->bits >>= 32;
        bw->count -= 32;
    }
}

static void flush_bits(bit_writer *bw) {
    while (bw->count > 0) {
        bw->out[bw->pos++] = (uint8_t)bw->bits;
        bw->bits >>= 8;
        bw->count -= 8;
    }
    bw->bits = 0;
    bw->count = 0;
}

/* Huffman code lengths of n (2..32) symbols of weight > 0; 0 when one would exceed max_length. */
static int huffman_lengths(const uint64_t *weight_in, int n, uint8_t *length, int max_length) {
    uint64_t weight[64];
    int parent[64], alive[64], nodes = n;
    for (int i = 0; i < n; i++)
        weight[i] = weight_in[i], alive[i] = 1;
    for (int merged = 0; merged < n - 1; merged++) {
        int a = -1, b = -1;
        for (int i = 0; i < nodes; i++) {
            if (!alive[i]) continue;
            if (a < 0 || weight[i] < weight[a])
                b = a, a = i;
            else if (b < 0 || weight[i] < weight[b])
                b = i;
        }
        weight[nodes] = weight[a] + weight[b];
        alive[nodes] = 1;
        alive[a] = alive[b] = 0;
        parent[a] = parent[b] = nodes;
        nodes++;
    }
    for (int i = 0; i < n; i++) {
        int depth = 0;
        for (int j = i; j != nodes - 1; j = parent[j])
            depth++;
        if (depth > max_length) return 0;
        length[i] = (uint8_t)depth;
    }
    return 1;
}

/* Canonical codes (RFC 1951 3.2.2), bit-reversed: deflate sends a code's first bit first into the
 * low end of each byte. */
static void canonical_codes(const uint8_t *length, int n, uint16_t *code) {
    int bl_count[16] = {0}, next_code[16] = {0};
    for (int i = 0; i < n; i++)
        bl_count[length[i]]++;
    bl_count[0] = 0;
    for (int bits = 1, c = 0; bits < 16; bits++) {
        c = (c + bl_count[bits - 1]) << 1;
        next_code[bits] = c;
    }
    for (int i = 0; i < n; i++) {
        code[i] = 0;
        if (length[i] == 0) continue;
        unsigned c = (unsigned)next_code[length[i]]++, reversed = 0;
        for (int b = 0; b < length[i]; b++, c >>= 1)
            reversed = reversed << 1 | (c & 1);
        code[i] = (uint16_t)reversed;
    }
}

/* One dynamic-Huffman block of `count` low-plane bytes; the last block (`last`) also holds the
 * zero plane and sets BFINAL. 0 when its code would be too long or it might not fit in `limit`
 * bytes of output. */
static int deflate_block(bit_writer *bw, chunk_slot *slot, const uint8_t *low, size_t count, int last,
                         size_t limit) {
    uint32_t counts[4][256] = {{0}};
    for (size_t i = 0; i < count; i += 4) {
        counts[0][low[i]]++;
        counts[1][low[i + 1]]++;
        counts[2][low[i + 2]]++;
        counts[3][low[i + 3]]++;
    }
    /* The zero plane: literal zeros and matches of 258 at distance 1 (the first zero a literal). */
    const uint64_t matches = last ? (CHUNK_TOKENS - 1) / MAX_MATCH : 0;
    const uint64_t zeros = last ? CHUNK_TOKENS - matches * MAX_MATCH : 0;
    uint64_t weight[FAST_MAX_SYMBOLS + 2];
    int symbol[FAST_MAX_SYMBOLS + 2], n = 0;
    for (int v = 0; v < 256; v++) {
        uint64_t weight_v = (uint64_t)counts[0][v] + counts[1][v] + counts[2][v] + counts[3][v];
        if (v == 0) weight_v += zeros;
        if (weight_v == 0) continue;
        if (n == FAST_MAX_SYMBOLS) return 0;
        symbol[n] = v, weight[n++] = weight_v;
    }
    const int n_bytes = n;
    symbol[n] = 256, weight[n++] = 1;
    if (matches > 0) symbol[n] = 285, weight[n++] = matches;
    uint8_t used_length[FAST_MAX_SYMBOLS + 2];
    if (!huffman_lengths(weight, n, used_length, 15)) return 0;
    uint8_t length[LITLEN_CODES + DIST_CODES] = {0};
    uint64_t data_bits = matches; /* one bit of distance code per match */
    for (int k = 0; k < n; k++) {
        length[symbol[k]] = used_length[k];
        data_bits += weight[k] * used_length[k];
    }
    length[LITLEN_CODES] = length[LITLEN_CODES + 1] = 1;
    /* Header: 17 bits, 19 * 3 code length code lengths and at most 288 * 12 bits of lengths; 8
     * bytes of slack for the last store of the low plane's loop. */
    const size_t header_bytes = (17 + CL_CODES * 3 + (LITLEN_CODES + DIST_CODES) * 12) / 8 + 1;
    if (bw->pos + header_bytes + data_bits / 8 + 16 > limit) return 0;
    uint16_t code[LITLEN_CODES], dist_code[DIST_CODES];
    canonical_codes(length, LITLEN_CODES, code);
    canonical_codes(length + LITLEN_CODES, DIST_CODES, dist_code);
    /* The code length code: fixed lengths 4 (lengths 0-12) and 5 (13-15, repeats), complete. */
    uint8_t cl_length[CL_CODES];
    uint16_t cl_code[CL_CODES];
    for (int k = 0; k < CL_CODES; k++)
        cl_length[k] = k <= 12 ? 4 : 5;
    canonical_codes(cl_length, CL_CODES, cl_code);
    static const uint8_t cl_order[CL_CODES] = {16, 17, 18, 0, 8,  7, 9,  6, 10, 5,
                                               11, 4,  12, 3, 13, 2, 14, 1, 15};

    put_bits(bw, last ? 1 : 0, 1); /* BFINAL */
    put_bits(bw, 2, 2);            /* dynamic Huffman */
    put_bits(bw, LITLEN_CODES - 257, 5);
    put_bits(bw, DIST_CODES - 1, 5);
    put_bits(bw, CL_CODES - 4, 4);
    for (int k = 0; k < CL_CODES; k++)
        put_bits(bw, cl_length[cl_order[k]], 3);
    for (int k = 0; k < LITLEN_CODES + DIST_CODES;) {
        int run = 1;
        if (length[k] == 0)
            while (k + run < LITLEN_CODES + DIST_CODES && length[k + run] == 0 && run < 138)
                run++;
        if (run >= 11) {
            put_bits(bw, cl_code[18], cl_length[18]);
            put_bits(bw, (uint32_t)(run - 11), 7);
        } else if (run >= 3) {
            put_bits(bw, cl_code[17], cl_length[17]);
            put_bits(bw, (uint32_t)(run - 3), 3);
        } else {
            run = 1;
            put_bits(bw, cl_code[length[k]], cl_length[length[k]]);
        }
        k += run;
    }
    /* The low plane from a table of the codes of pairs of its bytes. */
    uint32_t *pair_code = slot->pair_code;
    uint8_t *pair_length = slot->pair_length;
    int longest_pair = 0;
    for (int x = 0; x < n_bytes; x++)
        for (int y = 0; y < n_bytes; y++) {
            const int p = symbol[x], q = symbol[y], pair = p | q << 8;
            pair_code[pair] = code[p] | (uint32_t)code[q] << length[p];
            pair_length[pair] = (uint8_t)(length[p] + length[q]);
            if (pair_length[pair] > longest_pair) longest_pair = pair_length[pair];
        }
    if (2 * longest_pair <= 56) {
        /* Four bytes per step and no branch: under 8 bits wait in the buffer, up to 56 join them
         * and all 8 bytes are stored (the size check leaves room), of which the whole ones count. */
        while (bw->count >= 8) {
            bw->out[bw->pos++] = (uint8_t)bw->bits;
            bw->bits >>= 8;
            bw->count -= 8;
        }
        uint64_t bits = bw->bits;
        unsigned filled = (unsigned)bw->count;
        uint8_t *out = bw->out + bw->pos;
        for (size_t i = 0; i < count; i += 4) {
            const unsigned p0 = low[i] | (unsigned)low[i + 1] << 8,
                           p1 = low[i + 2] | (unsigned)low[i + 3] << 8;
            bits |= ((uint64_t)pair_code[p0] | (uint64_t)pair_code[p1] << pair_length[p0]) << filled;
            filled += (unsigned)pair_length[p0] + pair_length[p1];
            for (int k = 0; k < 8; k++)
                out[k] = (uint8_t)(bits >> (8 * k));
            out += filled >> 3;
            bits >>= filled & ~7u;
            filled &= 7;
        }
        bw->pos = (size_t)(out - bw->out);
        bw->bits = bits;
        bw->count = (int)filled;
    } else {
        /* Two per step: 30 bits at most, into a buffer holding under 32. */
        for (size_t i = 0; i < count; i += 2) {
            const unsigned pair = low[i] | (unsigned)low[i + 1] << 8;
            put_bits(bw, pair_code[pair], pair_length[pair]);
        }
    }
    for (uint64_t k = 0; k < zeros; k++)
        put_bits(bw, code[0], length[0]);
    if (matches > 0) {
        const uint32_t match = code[285] | (uint32_t)dist_code[0] << length[285];
        const int match_bits = length[285] + 1;
        for (uint64_t k = 0; k < matches; k++)
            put_bits(bw, match, match_bits);
    }
    put_bits(bw, code[256], length[256]);
    return 1;
}

/* The chunk as one zlib stream, or 0 when the chunk is not of the simple kind (or might not fit).
 * Blocks of FAST_BLOCK bytes, each with its own code, follow changes in composition along the
 * genome. */
static int deflate_nucleotide_chunk(chunk_slot *slot, size_t capacity, int token_bytes, size_t *bytes) {
    if (token_bytes != 2) return 0;
    const uint8_t *low = slot->raw, *high = slot->raw + CHUNK_TOKENS;
    uint64_t any_high = 0;
    for (size_t i = 0; i < CHUNK_TOKENS; i += 8) {
        uint64_t word;
        memcpy(&word, high + i, 8);
        any_high |= word;
    }
    if (any_high) return 0;
    const size_t limit = capacity - CHECKSUM_BYTES - 4; /* room for the Adler-32 */
    bit_writer bw = {.out = slot->packed};
    bw.out[bw.pos++] = 0x78; /* zlib header: deflate, 32 KiB window, level 1's FLEVEL */
    bw.out[bw.pos++] = 0x01;
    for (size_t at = 0; at < CHUNK_TOKENS; at += FAST_BLOCK)
        if (!deflate_block(&bw, slot, low + at, FAST_BLOCK, at + FAST_BLOCK == CHUNK_TOKENS, limit)) return 0;
    flush_bits(&bw);
    /* Adler-32 of both planes: the zero plane leaves sum a and adds CHUNK_TOKENS * a to sum b. */
    uLong adler = adler32(1L, low, CHUNK_TOKENS);
    uint64_t a = adler & 0xffff, b = (adler >> 16) & 0xffff;
    b = (b + (uint64_t)(CHUNK_TOKENS % ADLER_BASE) * a) % ADLER_BASE;
    const uint32_t check = (uint32_t)(b << 16 | a);
    for (int k = 3; k >= 0; k--)
        bw.out[bw.pos++] = (uint8_t)(check >> (8 * k));
    *bytes = bw.pos;
    return 1;
}

static int init_z(z_stream *z) {
    memset(z, 0, sizeof *z);
    return deflateInit2(z, 1, Z_DEFLATED, 15, 8, Z_HUFFMAN_ONLY) == Z_OK ? 0 : -1;
}

static void *compress_worker(void *arg) {
    compressor *c = arg;
    z_stream z;
    int z_ok = init_z(&z) == 0;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        chunk_slot *next = NULL;
        for (int i = 0; i < N_SLOTS; i++)
            if (c->slots[i].state == SLOT_FILLED && (!next || c->slots[i].index < next->index))
                next = &c->slots[i];
        if (!next) {
            if (c->stopping) break;
            pthread_cond_wait(&c->changed, &c->lock);
            continue;
        }
        next->state = SLOT_BUSY;
        pthread_mutex_unlock(&c->lock);
        int failed = !z_ok || deflate_chunk(&z, next, c->packed_capacity, c->token_bytes) != 0;
        pthread_mutex_lock(&c->lock);
        next->failed = failed;
        next->state = SLOT_DONE;
        pthread_cond_broadcast(&c->changed);
    }
    pthread_mutex_unlock(&c->lock);
    if (z_ok) deflateEnd(&z);
    return NULL;
}

static int compressor_start(compressor *c, const char *path) {
    const size_t raw_bytes = (size_t)c->token_bytes * CHUNK_TOKENS;
    c->packed_capacity = compressBound((uLong)raw_bytes) + CHECKSUM_BYTES;
    for (int i = 0; i < N_SLOTS; i++) {
        c->slots[i].raw = calloc(raw_bytes, 1); /* the high planes start zero */
        c->slots[i].packed = malloc(c->packed_capacity);
        c->slots[i].pair_code = malloc(sizeof *c->slots[i].pair_code << 16);
        c->slots[i].pair_length = malloc(1 << 16);
        if (!c->slots[i].raw || !c->slots[i].packed || !c->slots[i].pair_code || !c->slots[i].pair_length)
            STRAND_FAIL(STRAND_ERR_NOMEM, "%s: out of memory for chunk buffers", path);
    }
    if (pthread_mutex_init(&c->lock, NULL) != 0) STRAND_FAIL(STRAND_ERR_INTERNAL, "cannot create a mutex");
    if (pthread_cond_init(&c->changed, NULL) != 0) {
        pthread_mutex_destroy(&c->lock);
        STRAND_FAIL(STRAND_ERR_INTERNAL, "cannot create a condition variable");
    }
    c->sync_ready = 1;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int wanted = cpus < 1 ? 1 : cpus > MAX_WORKERS ? MAX_WORKERS : (int)cpus;
    while (c->n_threads < wanted && pthread_create(&c->threads[c->n_threads], NULL, compress_worker, c) == 0)
        c->n_threads++;
    /* No thread at all: compress on the calling thread instead. */
    if (c->n_threads == 0) {
        if (init_z(&c->inline_z) != 0) STRAND_FAIL(STRAND_ERR_NOMEM, "%s: cannot initialise zlib", path);
        c->inline_z_ready = 1;
    }
    return STRAND_OK;
}

static void compressor_stop(compressor *c) {
    if (c->sync_ready) {
        pthread_mutex_lock(&c->lock);
        c->stopping = 1;
        pthread_cond_broadcast(&c->changed);
        pthread_mutex_unlock(&c->lock);
        for (int i = 0; i < c->n_threads; i++)
            pthread_join(c->threads[i], NULL);
        pthread_cond_destroy(&c->changed);
        pthread_mutex_destroy(&c->lock);
        c->sync_ready = 0;
    }
    c->n_threads = 0;
    if (c->inline_z_ready) deflateEnd(&c->inline_z);
    c->inline_z_ready = 0;
    for (int i = 0; i < N_SLOTS; i++) {
        free(c->slots[i].raw);
        free(c->slots[i].packed);
        free(c->slots[i].pair_code);
        free(c->slots[i].pair_length);
        c->slots[i].raw = c->slots[i].packed = NULL;
        c->slots[i].pair_code = NULL;
        c->slots[i].pair_length = NULL;
    }
}

/* Store a compressed chunk (main thread). */
static int store_chunk(prep_writer *w, chunk_slot *slot) {
    if (slot->failed) STRAND_FAIL(STRAND_ERR_INTERNAL, "%s: zlib failed to compress a chunk", w->path);
    hsize_t offset = (hsize_t)slot->index * CHUNK_TOKENS, extent = offset + slot->valid;
    if (H5Dset_extent(w->tokens, &extent) < 0 ||
        H5Dwrite_chunk(w->tokens, H5P_DEFAULT, 0, &offset, slot->packed_bytes, slot->packed) < 0)
        STRAND_H5_FAIL(w->path, "cannot append to /tokens (disk full?)");
    w->write_chunk++;
    return STRAND_OK;
}

/* Store every compressed chunk that is next in order; with `wait_for`, block until chunk
 * `wait_for` (and all before it) is stored. */
static int store_ready(prep_writer *w, int64_t wait_for) {
    compressor *c = &w->zip;
    for (;;) {
        chunk_slot *slot = &c->slots[w->write_chunk % N_SLOTS];
        pthread_mutex_lock(&c->lock);
        while (w->write_chunk <= wait_for && slot->index == w->write_chunk && slot->state != SLOT_DONE &&
               slot->state != SLOT_FREE)
            pthread_cond_wait(&c->changed, &c->lock);
        int ready = slot->index == w->write_chunk && slot->state == SLOT_DONE;
        pthread_mutex_unlock(&c->lock);
        if (!ready) return STRAND_OK;
        /* A DONE slot is not touched by the workers: store it without the lock. */
        int status = store_chunk(w, slot);
        pthread_mutex_lock(&c->lock);
        slot->state = SLOT_FREE;
        pthread_mutex_unlock(&c->lock);
        STRAND_CALL(status);
    }
}

/* The chunk being filled is complete (or is the last one): hand it to the compressors. */
static int submit_chunk(prep_writer *w) {
    compressor *c = &w->zip;
    chunk_slot *slot = &c->slots[w->fill_chunk % N_SLOTS];
    slot->valid = w->fill;
    /* Padding with the fill value: should /tokens ever grow past n_tokens, it reads as invalid. */
    if (w->fill < CHUNK_TOKENS)
        for (int b = 0; b < c->token_bytes; b++)
            memset(slot->raw + (size_t)b * CHUNK_TOKENS + w->fill, 0xff, CHUNK_TOKENS - w->fill);
    if (c->n_threads == 0) {
        slot->failed = deflate_chunk(&c->inline_z, slot, c->packed_capacity, c->token_bytes) != 0;
        slot->state = SLOT_DONE;
    } else {
        pthread_mutex_lock(&c->lock);
        slot->state = SLOT_FILLED;
        pthread_cond_broadcast(&c->changed);
        pthread_mutex_unlock(&c->lock);
    }
    w->fill_chunk++;
    w->fill = 0;
    /* The next chunk's slot must be free: store (in order) what is ready, waiting if needed. */
    STRAND_CALL(store_ready(w, w->fill_chunk - N_SLOTS));
    chunk_slot *next = &c->slots[w->fill_chunk % N_SLOTS];
    STRAND_ASSERT(next->state == SLOT_FREE);
    next->index = w->fill_chunk;
    return STRAND_OK;
}

/* Compress and store the partial last chunk and everything still in flight. */
static int finish_tokens(prep_writer *w) {
    if (w->fill > 0) STRAND_CALL(submit_chunk(w));
    return store_ready(w, w->fill_chunk - 1);
}

/* ---- parser callbacks ---- */

static int on_record_begin(void *user, const char *name) {
    prep_writer *w = user;
    if (w->n_records == w->cap_records) {
        int64_t cap = w->cap_records ? 2 * w->cap_records : 64;
        prep_record *grown = realloc(w->records, (size_t)cap * sizeof *grown);
        if (!grown)
            STRAND_FAIL(STRAND_ERR_NOMEM, "out of memory for the record table (%" PRId64 " records)", cap);
        w->records = grown;
        w->cap_records = cap;
    }
    prep_record *r = &w->records[w->n_records];
    r->name = strdup(name);
    if (!r->name) STRAND_FAIL(STRAND_ERR_NOMEM, "out of memory for record names");
    r->offset = w->n_tokens;
    r->length = 0;
    r->source = w->source;
    w->n_records++;
    return STRAND_OK;
}

static int on_tokens(void *user, const uint8_t *tokens, size_t count) {
    prep_writer *w = user;
    while (count > 0) {
        size_t take = CHUNK_TOKENS - w->fill;
        if (take > count) take = count;
        memcpy(w->zip.slots[w->fill_chunk % N_SLOTS].raw + w->fill, tokens, take);
        w->fill += take;
        w->n_tokens += (int64_t)take;
        tokens += take;
        count -= take;
        if (w->fill == CHUNK_TOKENS) STRAND_CALL(submit_chunk(w));
    }
    return STRAND_OK;
}

/* Tokens of any width into the chunk's byte planes. */
static int append_tokens(prep_writer *w, const strand_token_t *tokens, int64_t count) {
    const int planes = w->zip.token_bytes;
    while (count > 0) {
        int64_t take = CHUNK_TOKENS - (int64_t)w->fill;
        if (take > count) take = count;
        uint8_t *raw = w->zip.slots[w->fill_chunk % N_SLOTS].raw + w->fill;
        for (int b = 0; b < planes; b++)
            for (int64_t i = 0; i < take; i++)
                raw[(size_t)b * CHUNK_TOKENS + (size_t)i] = (uint8_t)(tokens[i] >> (8 * b));
        w->fill += (size_t)take;
        w->n_tokens += take;
        tokens += take;
        count -= take;
        if (w->fill == CHUNK_TOKENS) STRAND_CALL(submit_chunk(w));
    }
    return STRAND_OK;
}

/* Encode the bases gathered in the piece and store their tokens. At the record's split point the
 * training part's token count is noted: the split is in tokens, and no token crosses it. */
static int flush_piece(prep_writer *w) {
    prep_record *r = &w->records[w->n_records - 1];
    if (w->piece_fill > 0) {
        int64_t n = 0;
        STRAND_CALL(strand_tokenizer_encode(w->codec, w->piece, w->piece_fill, w->piece_tokens, &n));
        STRAND_CALL(append_tokens(w, w->piece_tokens, n));
        w->piece_fill = 0;
    }
    if (w->record_done == w->record_split && r->train_tokens < 0) r->train_tokens = w->n_tokens - r->offset;
    return STRAND_OK;
}

/* The bases of a record's training part: all but floor(val_fraction * bases), none for a named
 * validation record. */
static int64_t training_bases(const strand_prep_options *options, const char *name, int64_t bases) {
    for (int v = 0; v < options->n_val_records; v++)
        if (strcmp(name, options->val_records[v]) == 0) return 0;
    return bases - (int64_t)floor(options->val_fraction * (double)bases);
}

static int on_record_begin_tokenized(void *user, const char *name) {
    prep_writer *w = user;
    STRAND_CALL(on_record_begin(user, name));
    prep_record *r = &w->records[w->n_records - 1];
    r->train_tokens = -1;
    w->record_done = 0;
    w->record_split = training_bases(w->options, name, w->record_bases[w->n_records - 1]);
    return w->record_split == 0 ? flush_piece(w) : STRAND_OK;
}

static int on_bases_tokenized(void *user, const uint8_t *codes, size_t count) {
    prep_writer *w = user;
    while (count > 0) {
        /* Up to the split point, then up to a full piece. */
        int64_t room = STRAND_TOKENIZER_PIECE_BASES - w->piece_fill;
        if (w->record_done < w->record_split && w->record_split - w->record_done < room)
            room = w->record_split - w->record_done;
        const int64_t take = (int64_t)count < room ? (int64_t)count : room;
        memcpy(w->piece + w->piece_fill, codes, (size_t)take);
        w->piece_fill += take;
        w->record_done += take;
        codes += take;
        count -= (size_t)take;
        if (w->piece_fill == STRAND_TOKENIZER_PIECE_BASES || w->record_done == w->record_split)
            STRAND_CALL(flush_piece(w));
    }
    return STRAND_OK;
}

static int on_record_end_tokenized(void *user, const char *name, int64_t length) {
    prep_writer *w = user;
    STRAND_CALL(flush_piece(w));
    prep_record *r = &w->records[w->n_records - 1];
    r->length = w->n_tokens - r->offset;
    r->bases = length;
    if (w->verbose)
        printf("  %s: %s, %" PRId64 " bases, %" PRId64 " tokens\n", w->input, name, length, r->length);
    return STRAND_OK;
}

static int on_record_end(void *user, const char *name, int64_t length) {
    prep_writer *w = user;
    w->records[w->n_records - 1].length = length;
    w->records[w->n_records - 1].bases = length;
    w->records[w->n_records - 1].train_tokens = -1;
    /* The one place prep prints: strand_prep_options.verbose asks for a line per record. */
    if (w->verbose) printf("  %s: %s, %" PRId64 " tokens\n", w->input, name, length);
    return STRAND_OK;
}

/* ---- tables ---- */

static int write_table(hid_t parent, const char *name, hid_t type, int rank, const hsize_t *dims,
                       const void *data, const char *path) {
    hid_t space = H5Screate_simple(rank, dims, NULL), dataset = H5I_INVALID_HID;
    int status = STRAND_OK;
    hsize_t total = 1;
    for (int i = 0; i < rank; i++)
        total *= dims[i];
    char what[160];
    snprintf(what, sizeof what, "cannot write %s", name);
    if (space < 0 ||
        (dataset = H5Dcreate2(parent, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)) < 0 ||
        (total > 0 && H5Dwrite(dataset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0))
        status = strand_h5_error(__FILE__, __LINE__, path, what);
    strand_h5_close(&dataset);
    strand_h5_close(&space);
    return status;
}

static int write_strings(hid_t parent, const char *name, const char *const *values, int64_t n,
                         const char *path) {
    hid_t type = H5Tcopy(H5T_C_S1);
    if (type < 0 || H5Tset_size(type, H5T_VARIABLE) < 0) {
        strand_h5_close(&type);
        STRAND_H5_FAIL(path, "cannot make a string type");
    }
    hsize_t dims[1] = {(hsize_t)n};
    int status = write_table(parent, name, type, 1, dims, values, path);
    strand_h5_close(&type);
    return status;
}

static int write_int64s(hid_t parent, const char *name, const int64_t *values, int64_t n, const char *path) {
    hsize_t dims[1] = {(hsize_t)n};
    return write_table(parent, name, H5T_STD_I64LE, 1, dims, values, path);
}

static int make_group(hid_t file, const char *name, hid_t *group, const char *path) {
    *group = H5Gcreate2(file, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (*group < 0) STRAND_H5_FAIL(path, "cannot create a group");
    return STRAND_OK;
}

static int compare_names(const void *a, const void *b) {
    const prep_record *const *ra = a, *const *rb = b;
    return strcmp((*ra)->name, (*rb)->name);
}

/* Record names must be unique: --val-records and the training logs refer to records by name. */
static int check_unique_names(const prep_writer *w, const strand_prep_options *options) {
    if (w->n_records < 2) return STRAND_OK;
    const prep_record **sorted = malloc((size_t)w->n_records * sizeof *sorted);
    if (!sorted) STRAND_FAIL(STRAND_ERR_NOMEM, "out of memory checking record names");
    for (int64_t i = 0; i < w->n_records; i++)
        sorted[i] = &w->records[i];
    qsort(sorted, (size_t)w->n_records, sizeof *sorted, compare_names);
    int status = STRAND_OK;
    for (int64_t i = 1; i < w->n_records; i++) {
        if (strcmp(sorted[i - 1]->name, sorted[i]->name) == 0) {
            const prep_record *first = sorted[i - 1]->offset < sorted[i]->offset ? sorted[i - 1] : sorted[i];
            const prep_record *second = first == sorted[i] ? sorted[i - 1] : sorted[i];
            status = strand_error_set(
                STRAND_ERR_INPUT, __FILE__, __LINE__,
                "record name %s appears twice (in %s and in %s); record names must be unique", first->name,
                options->inputs[first->source], options->inputs[second->source]);
            break;
        }
    }
    free(sorted);
    return status;
}

/* Train and validation ranges: named records go wholly to val; of every other record the last
 * floor(val_fraction * length) tokens go to val and the rest to train. */
static int write_splits(hid_t file, const prep_writer *w, const strand_prep_options *options,
                        strand_prep_stats *stats) {
    for (int v = 0; v < options->n_val_records; v++) {
        int64_t i = 0;
        while (i < w->n_records && strcmp(w->records[i].name, options->val_records[v]) != 0)
            i++;
        if (i == w->n_records)
            STRAND_FAIL(STRAND_ERR_INPUT, "--val-records: no record named %s in the inputs",
                        options->val_records[v]);
    }
    int64_t(*train)[2] = malloc((size_t)(w->n_records + 1) * sizeof *train);
    int64_t(*val)[2] = malloc((size_t)(w->n_records + 1) * sizeof *val);
    int status = STRAND_OK;
    if (!train || !val) {
        status = strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__, "out of memory for the split tables");
        goto done;
    }
    int64_t n_train = 0, n_val = 0;
    stats->n_train_tokens = stats->n_val_tokens = 0;
    for (int64_t i = 0; i < w->n_records; i++) {
        const prep_record *r = &w->records[i];
        int named = 0;
        for (int v = 0; v < options->n_val_records && !named; v++)
            named = strcmp(r->name, options->val_records[v]) == 0;
        int64_t val_length = named ? r->length : (int64_t)floor(options->val_fraction * (double)r->length);
        if (r->train_tokens >= 0) val_length = r->length - r->train_tokens; /* split in bases */
        int64_t train_length = r->length - val_length;
        if (train_length > 0) {
            train[n_train][0] = r->offset;
            train[n_train][1] = train_length;
            n_train++;
        }
        if (val_length > 0) {
            val[n_val][0] = r->offset + train_length;
            val[n_val][1] = val_length;
            n_val++;
        }
        stats->n_train_tokens += train_length;
        stats->n_val_tokens += val_length;
    }
    if (stats->n_train_tokens == 0) {
        status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                  "no training tokens left: every record is in the validation split");
        goto done;
    }
    hid_t group;
    STRAND_CALL_GOTO(status, done, make_group(file, "/split", &group, w->path));
    hsize_t dims[2] = {(hsize_t)n_train, 2};
    status = write_table(group, "train", H5T_STD_I64LE, 2, dims, train, w->path);
    dims[0] = (hsize_t)n_val;
    if (status == STRAND_OK) status = write_table(group, "val", H5T_STD_I64LE, 2, dims, val, w->path);
    if (status == STRAND_OK)
        status = strand_h5_write_double_attribute(group, "val_fraction", options->val_fraction, w->path);
    if (status == STRAND_OK) {
        /* The named validation records, comma-separated ("" when none). */
        size_t bytes = 1;
        for (int v = 0; v < options->n_val_records; v++)
            bytes += strlen(options->val_records[v]) + 1;
        char *joined = calloc(bytes, 1);
        if (!joined) {
            status = strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__, "out of memory");
        } else {
            for (int v = 0; v < options->n_val_records; v++) {
                if (v > 0) strcat(joined, ",");
                strcat(joined, options->val_records[v]);
            }
            status = strand_h5_write_string_attribute(group, "val_records", joined, w->path);
            free(joined);
        }
    }
    strand_h5_close(&group);
done:
    free(train);
    free(val);
    return status;
}

static int write_records(hid_t file, const prep_writer *w) {
    int64_t n = w->n_records;
    const char **names = malloc((size_t)(n + 1) * sizeof *names);
    int64_t *offsets = malloc((size_t)(n + 1) * sizeof *offsets);
    int64_t *lengths = malloc((size_t)(n + 1) * sizeof *lengths);
    int64_t *bases = malloc((size_t)(n + 1) * sizeof *bases);
    int32_t *sources = malloc((size_t)(n + 1) * sizeof *sources);
    int status = STRAND_OK;
    hid_t group = H5I_INVALID_HID;
    if (!names || !offsets || !lengths || !bases || !sources) {
        status = strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__, "out of memory for the record table");
        goto done;
    }
    for (int64_t i = 0; i < n; i++) {
        names[i] = w->records[i].name;
        offsets[i] = w->records[i].offset;
        lengths[i] = w->records[i].length;
        bases[i] = w->records[i].bases;
        sources[i] = w->records[i].source;
    }
    STRAND_CALL_GOTO(status, done, make_group(file, "/records", &group, w->path));
    STRAND_CALL_GOTO(status, done, write_strings(group, "name", names, n, w->path));
    STRAND_CALL_GOTO(status, done, write_int64s(group, "offset", offsets, n, w->path));
    STRAND_CALL_GOTO(status, done, write_int64s(group, "length", lengths, n, w->path));
    STRAND_CALL_GOTO(status, done, write_int64s(group, "bases", bases, n, w->path));
    hsize_t dims[1] = {(hsize_t)n};
    status = write_table(group, "source", H5T_STD_I32LE, 1, dims, sources, w->path);
done:
    strand_h5_close(&group);
    free(names);
    free(offsets);
    free(lengths);
    free(bases);
    free(sources);
    return status;
}

static const char *base_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static int write_sources(hid_t file, const strand_prep_options *options,
                         const strand_fasta_summary *summaries, const char *path) {
    int n = options->n_inputs;
    const char **names = malloc((size_t)n * sizeof *names), **hashes = malloc((size_t)n * sizeof *hashes);
    int64_t *sizes = malloc((size_t)n * sizeof *sizes), *text = malloc((size_t)n * sizeof *text);
    int64_t *records = malloc((size_t)n * sizeof *records);
    int status = STRAND_OK;
    hid_t group = H5I_INVALID_HID;
    if (!names || !hashes || !sizes || !text || !records) {
        status = strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__, "out of memory for the source table");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        names[i] = base_name(options->inputs[i]);
        hashes[i] = summaries[i].sha256_hex;
        sizes[i] = summaries[i].file_bytes;
        text[i] = summaries[i].text_bytes;
        records[i] = summaries[i].n_records;
    }
    STRAND_CALL_GOTO(status, done, make_group(file, "/sources", &group, path));
    STRAND_CALL_GOTO(status, done, write_strings(group, "name", names, n, path));
    STRAND_CALL_GOTO(status, done,
                     write_strings(group, "path", (const char *const *)options->inputs, n, path));
    STRAND_CALL_GOTO(status, done, write_strings(group, "sha256", hashes, n, path));
    STRAND_CALL_GOTO(status, done, write_int64s(group, "size", sizes, n, path));
    STRAND_CALL_GOTO(status, done, write_int64s(group, "text_bytes", text, n, path));
    STRAND_CALL_GOTO(status, done, write_int64s(group, "n_records", records, n, path));
done:
    strand_h5_close(&group);
    free(names);
    free(hashes);
    free(sizes);
    free(text);
    free(records);
    return status;
}

static int write_root_attributes(hid_t file, const strand_tokenizer *codec, const char *path) {
    char special[64];
    snprintf(special, sizeof special, "PAD=%d,BOS=%d,SEP=%d", STRAND_TOKEN_PAD, STRAND_TOKEN_BOS,
             STRAND_TOKEN_SEP);
    STRAND_CALL(strand_h5_write_int_attribute(file, "format_version", STRAND_DATASET_FORMAT_VERSION, path));
    STRAND_CALL(strand_tokenizer_write(file, codec, 1, path));
    STRAND_CALL(strand_h5_write_string_attribute(file, "alphabet", "ACGTN", path));
    STRAND_CALL(strand_h5_write_string_attribute(file, "special_tokens", special, path));
    STRAND_CALL(strand_h5_write_string_attribute(file, "created_by", "strand " STRAND_VERSION, path));
    return STRAND_OK;
}

/* ---- driver ---- */

/* `path` made absolute with its directory's symlinks and ".." resolved (malloc'd), for a file that
 * may not exist yet; NULL when even its directory cannot be resolved. */
static char *resolved_path(const char *path) {
    char *whole = realpath(path, NULL);
    if (whole) return whole;
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    char *real = dir ? realpath(dir, NULL) : NULL;
    free(dir);
    if (!real) return NULL;
    const char *base = slash ? slash + 1 : path;
    size_t bytes = strlen(real) + strlen(base) + 2;
    char *joined = malloc(bytes);
    if (joined) snprintf(joined, bytes, "%s%s%s", real, strcmp(real, "/") == 0 ? "" : "/", base);
    free(real);
    return joined;
}

/* Do `a` and `b` name one file? By device and inode when both exist (this sees through symlinks,
 * hard links and "dir/.."), else by resolved path (a file that prep is about to create). */
static int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    int has_a = stat(a, &sa) == 0, has_b = stat(b, &sb) == 0;
    if (has_a && has_b) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    if (has_a || has_b) return 0;
    char *ra = resolved_path(a), *rb = resolved_path(b);
    int same = ra && rb ? strcmp(ra, rb) == 0 : strcmp(a, b) == 0;
    free(ra);
    free(rb);
    return same;
}

/* prep truncates "<output>.tmp", renames it over the output and deletes it on failure: an input
 * that is either of them would be destroyed. Checked before anything is created. */
static int check_inputs_not_written(const strand_prep_options *options, const char *tmp_path) {
    for (int i = 0; i < options->n_inputs; i++) {
        const char *input = options->inputs[i];
        if (same_file(input, options->output))
            STRAND_FAIL(STRAND_ERR_INPUT,
                        "input %s and the output %s are the same file: prep would overwrite its input", input,
                        options->output);
        if (same_file(input, tmp_path))
            STRAND_FAIL(STRAND_ERR_INPUT,
                        "input %s and the temporary file %s (where prep writes the output until it is "
                        "complete) are the same file: prep would overwrite its input",
                        input, tmp_path);
    }
    return STRAND_OK;
}

static int check_options(const strand_prep_options *options) {
    if (!options->output || !options->output[0]) STRAND_FAIL(STRAND_ERR_INPUT, "no output file given");
    if (options->n_inputs < 1 || !options->inputs)
        STRAND_FAIL(STRAND_ERR_INPUT, "no input FASTA files given");
    if (!(options->val_fraction >= 0.0 && options->val_fraction < 1.0))
        STRAND_FAIL(STRAND_ERR_INPUT, "validation fraction %g is outside [0, 1)", options->val_fraction);
    if (options->n_val_records < 0 || (options->n_val_records > 0 && !options->val_records))
        STRAND_FAIL(STRAND_ERR_INPUT, "bad validation record list");
    /* Said now, not after reading every input: no record can have such a name. */
    for (int v = 0; v < options->n_val_records; v++) {
        size_t length = strlen(options->val_records[v]);
        if (length > STRAND_RECORD_NAME_MAX)
            STRAND_FAIL(STRAND_ERR_INPUT,
                        "--val-records: a name of %zu bytes is longer than the longest record name (%d "
                        "bytes): %.40s...",
                        length, STRAND_RECORD_NAME_MAX, options->val_records[v]);
    }
    return STRAND_OK;
}

static int create_output(prep_writer *w) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS), fcpl = H5Pcreate(H5P_FILE_CREATE);
    if (fapl < 0 || fcpl < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0) {
        strand_h5_close(&fapl);
        strand_h5_close(&fcpl);
        STRAND_H5_FAIL(w->path, "cannot set file access properties");
    }
    /* Room for the whole-file checksum header, written once the file is closed. */
    int status = strand_filesum_reserve(fcpl, STRAND_FILESUM_BLOCK, w->path);
    if (status == STRAND_OK) w->file = H5Fcreate(w->path, H5F_ACC_TRUNC, fcpl, fapl);
    strand_h5_close(&fapl);
    strand_h5_close(&fcpl);
    STRAND_CALL(status);
    if (w->file < 0) STRAND_H5_FAIL(w->path, "cannot create the output file (does its directory exist?)");
    if (H5Zfilter_avail(H5Z_FILTER_DEFLATE) <= 0)
        STRAND_FAIL(STRAND_ERR_IO, "%s: this HDF5 library has no deflate filter", w->path);
    if (H5Zfilter_avail(H5Z_FILTER_FLETCHER32) <= 0)
        STRAND_FAIL(STRAND_ERR_IO, "%s: this HDF5 library has no fletcher32 filter", w->path);
    /* The pipeline the chunk slots and deflate_chunk() reproduce: shuffle (byte planes), deflate,
     * then Fletcher32 over the compressed bytes. */
    hsize_t zero = 0, unlimited = H5S_UNLIMITED, chunk = CHUNK_TOKENS;
    const int wide = w->zip.token_bytes == 4;
    const uint32_t fill = wide ? STRAND_TOKEN_FILL_32BIT : STRAND_TOKEN_FILL;
    hid_t space = H5Screate_simple(1, &zero, &unlimited), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (space < 0 || dcpl < 0 || H5Pset_chunk(dcpl, 1, &chunk) < 0 || H5Pset_shuffle(dcpl) < 0 ||
        H5Pset_deflate(dcpl, 1) < 0 || H5Pset_fletcher32(dcpl) < 0 ||
        H5Pset_fill_value(dcpl, H5T_NATIVE_UINT32, &fill) < 0 ||
        (w->tokens = H5Dcreate2(w->file, "/tokens", wide ? H5T_STD_U32LE : H5T_STD_U16LE, space, H5P_DEFAULT,
                                dcpl, H5P_DEFAULT)) < 0)
        status = strand_h5_error(__FILE__, __LINE__, w->path, "cannot create /tokens");
    strand_h5_close(&dcpl);
    strand_h5_close(&space);
    return status;
}

/* ---- the tokenizer's passes over the inputs ---- */

/* First pass: every record's bases, and (bpe) the training bases to learn from. */
typedef struct {
    const strand_prep_options *options;
    int64_t *bases;
    int64_t n, capacity;
    int64_t train; /* training bases of all records */
} base_counter;

static int count_record_end(void *user, const char *name, int64_t length) {
    base_counter *c = user;
    c->train += training_bases(c->options, name, length);
    if (c->n == c->capacity) {
        int64_t capacity = c->capacity ? 2 * c->capacity : 64;
        int64_t *grown = realloc(c->bases, (size_t)capacity * sizeof *grown);
        if (!grown) STRAND_FAIL(STRAND_ERR_NOMEM, "out of memory for the record table");
        c->bases = grown, c->capacity = capacity;
    }
    c->bases[c->n++] = length;
    return STRAND_OK;
}

/* Second pass (bpe): the training bases, all of them up to `cap`, else every stride-th block of
 * SAMPLE_BLOCK bases, each block a piece of its own. */
enum { SAMPLE_BLOCK = 1 << 16 };
typedef struct {
    const strand_prep_options *options;
    const int64_t *record_bases;
    int64_t record, position, split; /* current record, bases seen in it, its training bases */
    int64_t stride, block;           /* keep block b of the training bases when b % stride == 0 */
    uint8_t *bases;
    int64_t n_bases, cap;
    int64_t *piece_ends; /* end of every piece in bases */
    int64_t n_pieces, cap_pieces;
} bpe_sampler;

static int sample_record_begin(void *user, const char *name) {
    bpe_sampler *s = user;
    s->position = 0;
    s->split = training_bases(s->options, name, s->record_bases[s->record]);
    return STRAND_OK;
}

static int sample_end_piece(bpe_sampler *s) {
    if (s->n_pieces > 0 && s->piece_ends[s->n_pieces - 1] == s->n_bases) return STRAND_OK;
    if (s->n_pieces == s->cap_pieces) {
        int64_t capacity = s->cap_pieces ? 2 * s->cap_pieces : 256;
        int64_t *grown = realloc(s->piece_ends, (size_t)capacity * sizeof *grown);
        if (!grown) STRAND_FAIL(STRAND_ERR_NOMEM, "out of memory for the BPE sample");
        s->piece_ends = grown, s->cap_pieces = capacity;
    }
    s->piece_ends[s->n_pieces++] = s->n_bases;
    return STRAND_OK;
}

static int sample_bases(void *user, const uint8_t *codes, size_t count) {
    bpe_sampler *s = user;
    for (size_t i = 0; i < count; i++, s->position++) {
        if (s->position >= s->split) break;
        const int64_t block = s->block + s->position / SAMPLE_BLOCK;
        if (block % s->stride != 0 || s->n_bases == s->cap) continue;
        if (s->stride > 1 && s->position % SAMPLE_BLOCK == 0) STRAND_CALL(sample_end_piece(s));
        s->bases[s->n_bases++] = codes[i];
    }
    return STRAND_OK;
}

static int sample_record_end(void *user, const char *name, int64_t length) {
    (void)name, (void)length;
    bpe_sampler *s = user;
    s->block += (s->split + SAMPLE_BLOCK - 1) / SAMPLE_BLOCK;
    s->record++;
    return sample_end_piece(s);
}

/* Learn the bpe tokenizer's merges from the training split of the inputs. */
/* The sample's non-empty pieces, handed to the learner. */
static int learn_from_sample(strand_tokenizer *codec, const bpe_sampler *s) {
    const uint8_t **pieces = malloc((size_t)s->n_pieces * sizeof *pieces);
    int64_t *lengths = malloc((size_t)s->n_pieces * sizeof *lengths);
    int status = STRAND_OK;
    int64_t begin = 0, n = 0;
    if (!pieces || !lengths)
        status = strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__, "out of memory for the BPE sample");
    for (int64_t p = 0; p < s->n_pieces && status == STRAND_OK; begin = s->piece_ends[p++])
        if (s->piece_ends[p] > begin) pieces[n] = s->bases + begin, lengths[n++] = s->piece_ends[p] - begin;
    if (status == STRAND_OK) status = strand_tokenizer_learn(codec, pieces, lengths, n);
    free(pieces);
    free(lengths);
    return status;
}

static int learn_bpe(strand_tokenizer *codec, const strand_prep_options *options,
                     const base_counter *counted) {
    bpe_sampler s = {.options = options, .record_bases = counted->bases, .stride = 1};
    const int64_t train = counted->train;
    s.cap = options->bpe_sample_bases > 0 ? options->bpe_sample_bases : STRAND_BPE_SAMPLE_BASES;
    int status = STRAND_OK;
    if (train > s.cap) s.stride = (train + s.cap - 1) / s.cap;
    s.bases = malloc((size_t)(train < s.cap ? train : s.cap) + 1);
    if (!s.bases) {
        status = strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__, "out of memory for the BPE sample");
        goto done;
    }
    const strand_fasta_callbacks callbacks = {sample_record_begin, sample_bases, sample_record_end};
    for (int i = 0; i < options->n_inputs; i++)
        STRAND_CALL_GOTO(status, done, strand_fasta_read(options->inputs[i], &callbacks, &s, NULL));
    if (s.n_bases < 2) {
        status =
            strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                             "%s: the training split has %" PRId64 " bases: too few to learn merges from",
                             codec->name, s.n_bases);
        goto done;
    }
    status = learn_from_sample(codec, &s);
done:
    free(s.bases);
    free(s.piece_ends);
    return status;
}

/* The tokenizer of `path`, another dataset (--tokenizer-from). */
static int tokenizer_from(strand_tokenizer *codec, const char *path) {
    strand_dataset ds;
    int status = strand_dataset_open_serial(&ds, path);
    if (status == STRAND_OK && strand_dataset_is_task(&ds))
        status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                  "--tokenizer-from %s: a task dataset (%s) has no DNA tokenizer", path,
                                  ds.tokenizer);
    if (status == STRAND_OK) status = strand_tokenizer_copy(codec, &ds.codec);
    strand_dataset_close(&ds);
    return status;
}

int strand_prep_run(const strand_prep_options *options, strand_prep_stats *stats) {
    strand_prep_stats local_stats;
    if (!stats) stats = &local_stats;
    memset(stats, 0, sizeof *stats);
    double start = strand_now();
    STRAND_CALL(check_options(options));
    strand_h5_quiet();

    size_t path_bytes = strlen(options->output) + 5;
    char *tmp_path = malloc(path_bytes);
    strand_fasta_summary *summaries = calloc((size_t)options->n_inputs, sizeof *summaries);
    prep_writer w = {
        .verbose = options->verbose, .file = H5I_INVALID_HID, .tokens = H5I_INVALID_HID, .options = options};
    strand_tokenizer codec = {0};
    base_counter counted = {.options = options};
    int status = STRAND_OK, created = 0;
    if (!tmp_path || !summaries) {
        status = strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__, "out of memory starting prep");
        goto done;
    }
    snprintf(tmp_path, path_bytes, "%s.tmp", options->output);
    w.path = tmp_path;
    STRAND_CALL_GOTO(status, done, check_inputs_not_written(options, tmp_path));
    /* The tokenizer: named, or another dataset's; bpe learns its merges from a first pass. */
    if (options->tokenizer_from)
        STRAND_CALL_GOTO(status, done, tokenizer_from(&codec, options->tokenizer_from));
    else
        STRAND_CALL_GOTO(
            status, done,
            strand_tokenizer_parse(&codec, options->tokenizer ? options->tokenizer : "nucleotide"));
    const int tokenized = codec.kind != STRAND_TOKENIZER_NUCLEOTIDE;
    if (tokenized) {
        /* Bases per record first: a record's split point must be known before its bases arrive. */
        const strand_fasta_callbacks counting = {NULL, NULL, count_record_end};
        for (int i = 0; i < options->n_inputs; i++)
            STRAND_CALL_GOTO(status, done, strand_fasta_read(options->inputs[i], &counting, &counted, NULL));
        if (codec.kind == STRAND_TOKENIZER_BPE && codec.n_merges == 0 && !options->tokenizer_from)
            STRAND_CALL_GOTO(status, done, learn_bpe(&codec, options, &counted));
        w.codec = &codec;
        w.record_bases = counted.bases;
        w.piece = malloc((size_t)STRAND_TOKENIZER_PIECE_BASES);
        w.piece_tokens = malloc(sizeof *w.piece_tokens * (size_t)STRAND_TOKENIZER_PIECE_BASES);
        if (!w.piece || !w.piece_tokens) {
            status =
                strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__, "out of memory for a piece of bases");
            goto done;
        }
    }
    w.zip.token_bytes = codec.vocab_size > 65535 ? 4 : 2;
    created = 1; /* from here a (partial) tmp file may exist */
    STRAND_CALL_GOTO(status, done, create_output(&w));
    STRAND_CALL_GOTO(status, done, compressor_start(&w.zip, w.path));

    const strand_fasta_callbacks callbacks =
        tokenized
            ? (strand_fasta_callbacks){on_record_begin_tokenized, on_bases_tokenized, on_record_end_tokenized}
            : (strand_fasta_callbacks){on_record_begin, on_tokens, on_record_end};
    for (int i = 0; i < options->n_inputs; i++) {
        w.input = options->inputs[i];
        w.source = i;
        STRAND_CALL_GOTO(status, done, strand_fasta_read(options->inputs[i], &callbacks, &w, &summaries[i]));
        stats->input_bytes += summaries[i].text_bytes;
    }
    STRAND_CALL_GOTO(status, done, finish_tokens(&w));
    STRAND_CALL_GOTO(status, done, check_unique_names(&w, options));
    STRAND_CALL_GOTO(status, done, write_splits(w.file, &w, options, stats));
    STRAND_CALL_GOTO(status, done, write_records(w.file, &w));
    STRAND_CALL_GOTO(status, done, write_sources(w.file, options, summaries, w.path));
    STRAND_CALL_GOTO(status, done, write_root_attributes(w.file, &codec, w.path));
    strand_h5_close(&w.tokens);
    /* Closing flushes the last chunks and metadata: its failure (disk full) is a failed prep. */
    hid_t file = w.file;
    w.file = H5I_INVALID_HID;
    if (H5Fclose(file) < 0) {
        status = strand_h5_error(__FILE__, __LINE__, w.path, "cannot finish writing the file (disk full?)");
        goto done;
    }
    STRAND_CALL_GOTO(status, done, strand_filesum_seal(tmp_path, STRAND_FILESUM_BLOCK));
    /* Sealing synced the file: the rename and its directory are left. */
    STRAND_CALL_GOTO(status, done, strand_atomic_rename(tmp_path, options->output));
    stats->n_records = w.n_records;
    stats->n_tokens = w.n_tokens;
    for (int64_t i = 0; i < w.n_records; i++)
        stats->n_bases += w.records[i].bases;
    snprintf(stats->tokenizer, sizeof stats->tokenizer, "%s", codec.name);
    stats->vocab_size = codec.vocab_size;
    stats->seconds = strand_now() - start;
done:
    compressor_stop(&w.zip);
    strand_h5_close(&w.tokens);
    strand_h5_close(&w.file);
    if (status != STRAND_OK && created) unlink(tmp_path);
    for (int64_t i = 0; i < w.n_records; i++)
        free(w.records[i].name);
    free(w.records);
    free(w.piece);
    free(w.piece_tokens);
    free(counted.bases);
    strand_tokenizer_free(&codec);
    free(summaries);
    free(tmp_path);
    return status;
}
