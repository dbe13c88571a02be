/* DNA tokenizers (strand/tokenizer.h): the token tables, k-mer and BPE encoding, BPE learning and
 * the tokenizer's record in an HDF5 file.
 *
 * BPE learning keeps the text as linked symbols (sym/prev/next over all pieces concatenated; a
 * deleted symbol is -1), a hash map from each pair to its record (count and the left positions
 * where it was made) and a max-heap of (count, left, right) with lazy deletion. A decrement only
 * lowers a count, so its entry is left as an upper bound and corrected when popped; the pairs a
 * merge increments are pushed once, after it. Encoding applies the merges lowest rank first and,
 * within a rank, leftmost first (as a min-heap of (rank, position) would), which is what learning
 * did to its own text. */
#include "strand/tokenizer.h"
#include "core/crc32.h"
#include "strand/dataset.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

enum { BASE_IDS = STRAND_TOKENIZER_BASE_IDS, CODE_N = 4, TOKENIZER_VERSION = 1 };
/* Letters of all tokens together: hostile merges (each token twice the last) stop here. */
#define TEXT_MAX ((int64_t)1 << 30)

/* ---- hash map: pair (left, right) -> int32 ---- */

typedef struct {
    uint64_t *keys; /* MAP_EMPTY where free */
    int32_t *values;
    int64_t capacity, count; /* capacity: a power of two */
} pair_map;

#define MAP_EMPTY UINT64_MAX

static uint64_t pair_key(int32_t left, int32_t right) {
    return (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
}

/* splitmix64's finaliser: the keys are small ids, so spread their bits. */
static uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void map_free(pair_map *m) {
    free(m->keys);
    free(m->values);
    memset(m, 0, sizeof *m);
}

static int map_init(pair_map *m, int64_t expected) {
    int64_t capacity = 64;
    while (capacity < 2 * expected)
        capacity *= 2;
    m->keys = malloc((size_t)capacity * sizeof *m->keys);
    m->values = malloc((size_t)capacity * sizeof *m->values);
    m->capacity = capacity;
    m->count = 0;
    if (!m->keys || !m->values) {
        map_free(m);
        STRAND_FAIL(STRAND_ERR_NOMEM, "out of memory for a tokenizer pair table");
    }
    memset(m->keys, 0xff, (size_t)capacity * sizeof *m->keys);
    return STRAND_OK;
}

static int64_t map_slot(const pair_map *m, uint64_t key) {
    int64_t mask = m->capacity - 1, s = (int64_t)(mix(key) & (uint64_t)mask);
    while (m->keys[s] != MAP_EMPTY && m->keys[s] != key)
        s = (s + 1) & mask;
    return s;
}

static int32_t map_get(const pair_map *m, uint64_t key) {
    int64_t s = map_slot(m, key);
    return m->keys[s] == key ? m->values[s] : -1;
}

static int map_put(pair_map *m, uint64_t key, int32_t value) {
    if (2 * (m->count + 1) > m->capacity) {
        pair_map bigger;
        STRAND_CALL(map_init(&bigger, m->capacity));
        for (int64_t s = 0; s < m->capacity; s++) {
            if (m->keys[s] == MAP_EMPTY) continue;
            int64_t d = map_slot(&bigger, m->keys[s]);
            bigger.keys[d] = m->keys[s];
            bigger.values[d] = m->values[s];
        }
        bigger.count = m->count;
        map_free(m);
        *m = bigger;
    }
    int64_t s = map_slot(m, key);
    if (m->keys[s] == MAP_EMPTY) m->count++;
    m->keys[s] = key;
    m->values[s] = value;
    return STRAND_OK;
}

/* Grow *array (of `size`-byte items) to hold at least `need` of them. */
static int grow(void **array, int64_t *capacity, int64_t need, size_t size, const char *what) {
    if (need <= *capacity) return STRAND_OK;
    int64_t c = *capacity > 0 ? *capacity : 16;
    while (c < need)
        c *= 2;
    void *p = realloc(*array, (size_t)c * size);
    if (!p) STRAND_FAIL(STRAND_ERR_NOMEM, "out of memory for %s (%" PRId64 " items)", what, c);
    *array = p;
    *capacity = c;
    return STRAND_OK;
}

/* ---- tables ---- */

static void put_le32(uint8_t *out, uint32_t v) {
    out[0] = (uint8_t)v;
    out[1] = (uint8_t)(v >> 8);
    out[2] = (uint8_t)(v >> 16);
    out[3] = (uint8_t)(v >> 24);
}

/* CRC-32 of the name, vocab_size and the merges, integers as little-endian int32 (the same on
 * every machine). */
static uint32_t fingerprint_of(const strand_tokenizer *t) {
    uint8_t bytes[8];
    uint32_t crc = strand_crc32(0, t->name, strlen(t->name));
    put_le32(bytes, (uint32_t)t->vocab_size);
    crc = strand_crc32(crc, bytes, 4);
    for (int32_t m = 0; m < t->n_merges; m++) {
        put_le32(bytes, (uint32_t)t->merges[m][0]);
        put_le32(bytes + 4, (uint32_t)t->merges[m][1]);
        crc = strand_crc32(crc, bytes, 8);
    }
    return crc;
}

static void free_tables(strand_tokenizer *t) {
    free(t->token_bases);
    free(t->text_offset);
    free(t->text);
    free(t->complement);
    t->token_bases = NULL;
    t->text_offset = NULL;
    t->text = NULL;
    t->complement = NULL;
}

/* Tables for `vocab` tokens with `text_bytes` letters; the base ids 0..7 filled in. */
static int alloc_tables(strand_tokenizer *t, int vocab, int64_t text_bytes, int with_complement) {
    free_tables(t);
    t->token_bases = malloc((size_t)vocab * sizeof *t->token_bases);
    t->text_offset = malloc((size_t)(vocab + 1) * sizeof *t->text_offset);
    t->text = malloc((size_t)text_bytes + 1);
    t->complement = with_complement ? malloc((size_t)vocab * sizeof *t->complement) : NULL;
    if (!t->token_bases || !t->text_offset || !t->text || (with_complement && !t->complement)) {
        free_tables(t);
        STRAND_FAIL(STRAND_ERR_NOMEM, "out of memory for the tables of tokenizer %s", t->name);
    }
    t->vocab_size = vocab;
    for (int v = 0; v < BASE_IDS; v++) {
        t->token_bases[v] = v <= CODE_N;
        t->text_offset[v] = v <= CODE_N ? v : CODE_N + 1;
        if (v <= CODE_N) t->text[v] = strand_token_char((strand_token_t)v);
        if (with_complement) t->complement[v] = strand_token_complement((strand_token_t)v);
    }
    t->text_offset[BASE_IDS] = CODE_N + 1;
    return STRAND_OK;
}

static int build_kmer(strand_tokenizer *t) {
    const int k = t->k;
    const int64_t kmers = k == 1 ? 0 : (int64_t)1 << (2 * k);
    STRAND_CALL(alloc_tables(t, (int)(BASE_IDS + kmers), CODE_N + 1 + kmers * k, 1));
    int64_t offset = CODE_N + 1;
    for (int64_t value = 0; value < kmers; value++) {
        const int id = (int)(BASE_IDS + value);
        int64_t reverse = 0;
        for (int j = 0; j < k; j++) {
            /* base j from the left, first base most significant */
            t->text[offset + j] = strand_token_char((strand_token_t)((value >> (2 * (k - 1 - j))) & 3));
            /* the reverse complement reads the bases from the right, complemented */
            reverse = reverse * 4 + strand_token_complement((strand_token_t)((value >> (2 * j)) & 3));
        }
        t->token_bases[id] = k;
        t->text_offset[id] = offset;
        offset += k;
        t->text_offset[id + 1] = offset;
        t->complement[id] = (strand_token_t)(BASE_IDS + reverse);
    }
    t->text[offset] = '\0';
    t->fingerprint = fingerprint_of(t);
    return STRAND_OK;
}

/* ---- parsing ---- */

/* A decimal number of 1..6 digits (no sign, no spaces); -1 when `text` is not one. */
static int64_t parse_count(const char *text) {
    int64_t v = 0;
    int digits = 0;
    for (; *text; text++, digits++) {
        if (*text < '0' || *text > '9' || digits >= 6) return -1;
        v = v * 10 + (*text - '0');
    }
    return digits ? v : -1;
}

int strand_tokenizer_parse(strand_tokenizer *t, const char *spec) {
    memset(t, 0, sizeof *t);
    if (!spec) spec = "";
    if (strcmp(spec, "nucleotide") == 0) {
        t->kind = STRAND_TOKENIZER_NUCLEOTIDE;
        t->k = 1;
        snprintf(t->name, sizeof t->name, "nucleotide");
        return build_kmer(t);
    }
    if (strncmp(spec, "kmer:", 5) == 0) {
        int64_t k = parse_count(spec + 5);
        if (k < 1 || k > STRAND_KMER_MAX)
            STRAND_FAIL(STRAND_ERR_INPUT, "tokenizer '%s': K must be a whole number from 1 to %d", spec,
                        STRAND_KMER_MAX);
        t->kind = STRAND_TOKENIZER_KMER;
        t->k = (int)k;
        snprintf(t->name, sizeof t->name, "kmer:%d", t->k);
        return build_kmer(t);
    }
    if (strcmp(spec, "bpe") == 0 || strncmp(spec, "bpe:", 4) == 0) {
        int64_t v = spec[3] ? parse_count(spec + 4) : STRAND_BPE_DEFAULT_VOCAB;
        if (v < BASE_IDS + 1 || v > STRAND_VOCAB_MAX)
            STRAND_FAIL(STRAND_ERR_INPUT, "tokenizer '%s': V must be a whole number from %d to %d", spec,
                        BASE_IDS + 1, STRAND_VOCAB_MAX);
        t->kind = STRAND_TOKENIZER_BPE;
        t->requested = (int)v;
        snprintf(t->name, sizeof t->name, "bpe:%d", t->requested);
        /* no merges yet: the base ids alone, and no encoder */
        STRAND_CALL(alloc_tables(t, BASE_IDS, CODE_N + 1, 0));
        t->text[CODE_N + 1] = '\0';
        t->fingerprint = fingerprint_of(t);
        return STRAND_OK;
    }
    STRAND_FAIL(
        STRAND_ERR_INPUT,
        "unknown tokenizer '%s' (nucleotide, kmer:K with K from 1 to %d, or bpe:V with V from %d to %d)",
        spec, STRAND_KMER_MAX, BASE_IDS + 1, STRAND_VOCAB_MAX);
}

/* ---- the BPE encoder ---- */

static int compare_int32(const void *a, const void *b) {
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Merges apply rank by rank: a merge of rank r only makes pairs holding token 8 + r, whose ranks
 * are above r, so each rank is done once, after every lower one. Its positions gather in a bucket
 * (a linked list in a pool), and a small min-heap holds the ranks whose buckets are not empty.
 * Taking a bucket's positions in ascending order is what a min-heap of (rank, position) gives,
 * without a log(n) heap operation per pair of a piece of millions of bases. */
struct strand_bpe_encoder {
    pair_map ranks; /* (left, right) -> merge index */
    int32_t (*merges)[2];
    int32_t n_merges;
    int32_t *sym, *prev, *next; /* one piece's symbols; -1: merged into its left neighbour */
    int64_t capacity;
    int32_t *head, *tail; /* [n_merges] each rank's bucket in the pool (-1: empty) */
    int32_t *pool_position, *pool_next;
    int64_t pool_size, pool_capacity;
    int32_t *rank_heap; /* min-heap of the ranks with a bucket */
    int64_t rank_heap_size;
    int32_t *batch; /* one bucket's positions */
    int64_t batch_capacity;
};

static void encoder_free(strand_bpe_encoder *e) {
    if (!e) return;
    map_free(&e->ranks);
    free(e->merges);
    free(e->sym);
    free(e->prev);
    free(e->next);
    free(e->head);
    free(e->tail);
    free(e->pool_position);
    free(e->pool_next);
    free(e->rank_heap);
    free(e->batch);
    free(e);
}

static int encoder_make(const strand_tokenizer *t, strand_bpe_encoder **out) {
    strand_bpe_encoder *e = calloc(1, sizeof *e);
    if (!e) STRAND_FAIL(STRAND_ERR_NOMEM, "out of memory for the %s encoder", t->name);
    const size_t n = (size_t)t->n_merges + 1;
    e->n_merges = t->n_merges;
    e->merges = malloc(n * sizeof *e->merges);
    e->head = malloc(n * sizeof *e->head);
    e->tail = malloc(n * sizeof *e->tail);
    e->rank_heap = malloc(n * sizeof *e->rank_heap);
    int status = map_init(&e->ranks, t->n_merges);
    if (status == STRAND_OK && (!e->merges || !e->head || !e->tail || !e->rank_heap))
        status = strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__, "out of memory for the %s encoder",
                                  t->name);
    if (status == STRAND_OK) {
        if (t->n_merges > 0) memcpy(e->merges, t->merges, (size_t)t->n_merges * sizeof *e->merges);
        memset(e->head, 0xff, n * sizeof *e->head);
    }
    for (int32_t m = 0; status == STRAND_OK && m < t->n_merges; m++) {
        const uint64_t key = pair_key(t->merges[m][0], t->merges[m][1]);
        /* a repeated pair can never apply a second time: its first rank wins */
        if (map_get(&e->ranks, key) < 0) status = map_put(&e->ranks, key, m);
    }
    if (status != STRAND_OK) {
        encoder_free(e);
        return status;
    }
    *out = e;
    return STRAND_OK;
}

static void rank_heap_push(strand_bpe_encoder *e, int32_t rank) {
    int64_t i = e->rank_heap_size++;
    while (i > 0) {
        int64_t parent = (i - 1) / 2;
        if (e->rank_heap[parent] <= rank) break;
        e->rank_heap[i] = e->rank_heap[parent];
        i = parent;
    }
    e->rank_heap[i] = rank;
}

static int32_t rank_heap_pop(strand_bpe_encoder *e) {
    int32_t top = e->rank_heap[0], last = e->rank_heap[--e->rank_heap_size];
    int64_t i = 0, n = e->rank_heap_size;
    for (;;) {
        int64_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && e->rank_heap[child + 1] < e->rank_heap[child]) child++;
        if (last <= e->rank_heap[child]) break;
        e->rank_heap[i] = e->rank_heap[child];
        i = child;
    }
    if (n > 0) e->rank_heap[i] = last;
    return top;
}

/* Queue the pair starting at symbol i when it is a merge. */
static void encoder_offer(strand_bpe_encoder *e, int32_t i) {
    const int32_t j = e->next[i];
    if (j < 0) return;
    const int32_t rank = map_get(&e->ranks, pair_key(e->sym[i], e->sym[j]));
    if (rank < 0) return;
    const int32_t entry = (int32_t)e->pool_size++;
    e->pool_position[entry] = i;
    e->pool_next[entry] = -1;
    if (e->head[rank] < 0) {
        e->head[rank] = entry;
        rank_heap_push(e, rank);
    } else {
        e->pool_next[e->tail[rank]] = entry;
    }
    e->tail[rank] = entry;
}

static int bpe_encode(strand_tokenizer *t, const uint8_t *codes, int64_t n, strand_token_t *tokens,
                      int64_t *n_tokens) {
    strand_bpe_encoder *e = t->encoder;
    /* the pool holds n - 1 pairs and two more per merge (n - 1 merges at most) */
    if (n > INT32_MAX / 3)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: a piece of %" PRId64 " bases is too long", t->name, n);
    if (n > e->capacity) {
        int64_t c = e->capacity;
        STRAND_CALL(grow((void **)&e->sym, &c, n, sizeof *e->sym, "the BPE encoder"));
        c = e->capacity;
        STRAND_CALL(grow((void **)&e->prev, &c, n, sizeof *e->prev, "the BPE encoder"));
        c = e->capacity;
        STRAND_CALL(grow((void **)&e->next, &c, n, sizeof *e->next, "the BPE encoder"));
        e->capacity = c;
    }
    if (3 * n > e->pool_capacity) {
        int64_t c = e->pool_capacity;
        STRAND_CALL(grow((void **)&e->pool_position, &c, 3 * n, sizeof *e->pool_position, "the BPE encoder"));
        c = e->pool_capacity;
        STRAND_CALL(grow((void **)&e->pool_next, &c, 3 * n, sizeof *e->pool_next, "the BPE encoder"));
        e->pool_capacity = c;
    }
    for (int64_t i = 0; i < n; i++) {
        e->sym[i] = codes[i];
        e->prev[i] = (int32_t)i - 1;
        e->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    e->pool_size = 0;
    e->rank_heap_size = 0;
    for (int64_t i = 0; i + 1 < n; i++)
        encoder_offer(e, (int32_t)i);
    while (e->rank_heap_size > 0) {
        const int32_t rank = rank_heap_pop(e), left = e->merges[rank][0], right = e->merges[rank][1];
        int64_t count = 0;
        int sorted = 1;
        for (int32_t entry = e->head[rank]; entry >= 0; entry = e->pool_next[entry]) {
            /* a position holds a pair once (its tokens only get newer), so n suffice; grown anyway */
            if (count == e->batch_capacity)
                STRAND_CALL(grow((void **)&e->batch, &e->batch_capacity, count + 1, sizeof *e->batch,
                                 "the BPE encoder"));
            e->batch[count] = e->pool_position[entry];
            sorted &= count == 0 || e->batch[count - 1] < e->batch[count];
            count++;
        }
        e->head[rank] = -1;
        if (!sorted) qsort(e->batch, (size_t)count, sizeof *e->batch, compare_int32);
        for (int64_t k = 0; k < count; k++) {
            const int32_t i = e->batch[k], j = e->next[i];
            /* stale: the pair at i changed since it was queued */
            if (e->sym[i] != left || j < 0 || e->sym[j] != right) continue;
            e->sym[i] = BASE_IDS + rank;
            e->sym[j] = -1;
            e->next[i] = e->next[j];
            if (e->next[i] >= 0) e->prev[e->next[i]] = i;
            if (e->prev[i] >= 0) encoder_offer(e, e->prev[i]);
            encoder_offer(e, i);
        }
    }
    int64_t count = 0;
    for (int32_t i = n > 0 ? 0 : -1; i >= 0; i = e->next[i])
        tokens[count++] = (strand_token_t)e->sym[i];
    *n_tokens = count;
    return STRAND_OK;
}

/* ---- merges ---- */

int strand_tokenizer_set_merges(strand_tokenizer *t, const int32_t (*merges)[2], int32_t n_merges) {
    if (t->kind != STRAND_TOKENIZER_BPE) STRAND_FAIL(STRAND_ERR_INPUT, "tokenizer %s has no merges", t->name);
    if (n_merges < 0 || n_merges > t->requested - BASE_IDS)
        STRAND_FAIL(STRAND_ERR_INPUT, "tokenizer %s: %" PRId32 " merges, at most %d", t->name, n_merges,
                    t->requested - BASE_IDS);
    int64_t text_bytes = CODE_N + 1;
    int64_t *bases = malloc(((size_t)n_merges + BASE_IDS) * sizeof *bases);
    if (!bases) STRAND_FAIL(STRAND_ERR_NOMEM, "out of memory for the merges of %s", t->name);
    for (int v = 0; v < BASE_IDS; v++)
        bases[v] = v <= CODE_N;
    for (int32_t m = 0; m < n_merges; m++) {
        const int32_t left = merges[m][0], right = merges[m][1];
        const int bad_left = left < 0 || left >= BASE_IDS + m || (left > CODE_N && left < BASE_IDS);
        const int bad_right = right < 0 || right >= BASE_IDS + m || (right > CODE_N && right < BASE_IDS);
        if (bad_left || bad_right) {
            free(bases);
            STRAND_FAIL(STRAND_ERR_INPUT,
                        "tokenizer %s: merge %" PRId32 " (%" PRId32 ", %" PRId32
                        ") needs two earlier tokens other than PAD, BOS and SEP",
                        t->name, m, left, right);
        }
        bases[BASE_IDS + m] = bases[left] + bases[right];
        text_bytes += bases[BASE_IDS + m];
        if (text_bytes > TEXT_MAX) {
            free(bases);
            STRAND_FAIL(STRAND_ERR_INPUT,
                        "tokenizer %s: the tokens of %" PRId32 " merges spell over %" PRId64 " letters",
                        t->name, m + 1, TEXT_MAX);
        }
    }
    /* everything checked: replace the old definition */
    int32_t(*copy)[2] = malloc(((size_t)n_merges + 1) * sizeof *copy);
    if (!copy) {
        free(bases);
        STRAND_FAIL(STRAND_ERR_NOMEM, "out of memory for the merges of %s", t->name);
    }
    if (n_merges > 0) memcpy(copy, merges, (size_t)n_merges * sizeof *copy);
    free(t->merges);
    t->merges = copy;
    t->n_merges = n_merges;
    encoder_free(t->encoder);
    t->encoder = NULL;
    int status = alloc_tables(t, BASE_IDS + n_merges, text_bytes, 0);
    if (status == STRAND_OK) {
        int64_t offset = CODE_N + 1;
        for (int32_t m = 0; m < n_merges; m++) {
            const int id = BASE_IDS + m, left = t->merges[m][0], right = t->merges[m][1];
            const int64_t left_bases = bases[left], right_bases = bases[right];
            t->token_bases[id] = (int32_t)bases[id];
            t->text_offset[id] = offset;
            memcpy(t->text + offset, t->text + t->text_offset[left], (size_t)left_bases);
            memcpy(t->text + offset + left_bases, t->text + t->text_offset[right], (size_t)right_bases);
            offset += bases[id];
            t->text_offset[id + 1] = offset;
        }
        t->text[offset] = '\0';
        t->fingerprint = fingerprint_of(t);
        status = encoder_make(t, &t->encoder);
    }
    free(bases);
    return status;
}

/* ---- BPE learning ---- */

typedef struct {
    int32_t left, right;
    int32_t count;     /* adjacent occurrences now */
    int32_t touched;   /* the last merge that incremented count, + 1 */
    int32_t *position; /* left symbols where the pair was made (some no longer hold it) */
    int32_t n_position, cap_position;
} pair_record;

typedef struct {
    int32_t count, left, right, record;
} heap_entry;

typedef struct {
    int32_t *sym, *prev, *next;
    pair_map index; /* pair -> record */
    pair_record *records;
    int64_t n_records, cap_records;
    heap_entry *heap;
    int64_t heap_size, heap_capacity;
    int32_t *touched; /* records incremented by the current merge */
    int64_t n_touched, cap_touched;
    int32_t merge; /* index of the current merge */
} learner;

/* a before b in the max-heap: higher count, then smaller left, then smaller right */
static int entry_before(const heap_entry *a, const heap_entry *b) {
    if (a->count != b->count) return a->count > b->count;
    if (a->left != b->left) return a->left < b->left;
    return a->right < b->right;
}

static int max_heap_push(learner *l, int32_t record) {
    STRAND_CALL(
        grow((void **)&l->heap, &l->heap_capacity, l->heap_size + 1, sizeof *l->heap, "the BPE heap"));
    const pair_record *r = &l->records[record];
    const heap_entry entry = {r->count, r->left, r->right, record};
    int64_t i = l->heap_size++;
    while (i > 0) {
        int64_t parent = (i - 1) / 2;
        if (!entry_before(&entry, &l->heap[parent])) break;
        l->heap[i] = l->heap[parent];
        i = parent;
    }
    l->heap[i] = entry;
    return STRAND_OK;
}

static heap_entry max_heap_pop(learner *l) {
    heap_entry top = l->heap[0], last = l->heap[--l->heap_size];
    int64_t i = 0, n = l->heap_size;
    for (;;) {
        int64_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && entry_before(&l->heap[child + 1], &l->heap[child])) child++;
        if (!entry_before(&l->heap[child], &last)) break;
        l->heap[i] = l->heap[child];
        i = child;
    }
    if (n > 0) l->heap[i] = last;
    return top;
}

/* The record of pair (left, right), made when new. */
static int record_of(learner *l, int32_t left, int32_t right, int32_t *record) {
    const uint64_t key = pair_key(left, right);
    int32_t r = map_get(&l->index, key);
    if (r < 0) {
        if (l->n_records >= INT32_MAX) STRAND_FAIL(STRAND_ERR_NOMEM, "too many distinct BPE pairs");
        STRAND_CALL(grow((void **)&l->records, &l->cap_records, l->n_records + 1, sizeof *l->records,
                         "the BPE pairs"));
        r = (int32_t)l->n_records++;
        memset(&l->records[r], 0, sizeof l->records[r]);
        l->records[r].left = left;
        l->records[r].right = right;
        STRAND_CALL(map_put(&l->index, key, r));
    }
    *record = r;
    return STRAND_OK;
}

/* One more occurrence of (left, right), at `position`. */
static int pair_add(learner *l, int32_t left, int32_t right, int32_t position) {
    int32_t record = -1;
    STRAND_CALL(record_of(l, left, right, &record));
    pair_record *r = &l->records[record];
    if (r->n_position == r->cap_position) {
        /* most pairs occur a few times only: start small */
        const int64_t c = r->cap_position ? 2 * (int64_t)r->cap_position : 2;
        const int32_t capacity = c < INT32_MAX ? (int32_t)c : INT32_MAX;
        int32_t *grown = realloc(r->position, (size_t)capacity * sizeof *grown);
        if (!grown) STRAND_FAIL(STRAND_ERR_NOMEM, "out of memory for the BPE pair positions");
        r->position = grown;
        r->cap_position = capacity;
    }
    r->position[r->n_position++] = position;
    r->count++;
    if (r->touched != l->merge + 1) {
        r->touched = l->merge + 1;
        STRAND_CALL(grow((void **)&l->touched, &l->cap_touched, l->n_touched + 1, sizeof *l->touched,
                         "the BPE pairs"));
        l->touched[l->n_touched++] = record;
    }
    return STRAND_OK;
}

/* One occurrence of (left, right) fewer (its position is simply no longer valid). */
static void pair_remove(learner *l, int32_t left, int32_t right) {
    const int32_t record = map_get(&l->index, pair_key(left, right));
    STRAND_ASSERT(record >= 0 && l->records[record].count > 0);
    l->records[record].count--;
}

/* Apply merge `l->merge` of record `record` (made token `token`) at every position still holding it. */
static int apply_merge(learner *l, int32_t record, int32_t token) {
    pair_record *r = &l->records[record];
    const int32_t left = r->left, right = r->right;
    int32_t *position = r->position;
    const int32_t n_position = r->n_position;
    /* the pair is gone after this: no later merge can make it again (new pairs hold a new token) */
    r->position = NULL;
    r->n_position = r->cap_position = 0;
    int sorted = 1;
    for (int32_t p = 1; p < n_position && sorted; p++)
        sorted = position[p - 1] < position[p];
    if (!sorted) qsort(position, (size_t)n_position, sizeof *position, compare_int32);
    int status = STRAND_OK;
    for (int32_t p = 0; p < n_position && status == STRAND_OK; p++) {
        const int32_t i = position[p], j = l->next[i];
        if (l->sym[i] != left || j < 0 || l->sym[j] != right) continue;
        const int32_t before = l->prev[i], after = l->next[j];
        /* the pairs this occurrence was part of end; r may move when records grow, so by index */
        if (before >= 0) pair_remove(l, l->sym[before], left);
        if (after >= 0) pair_remove(l, right, l->sym[after]);
        l->records[record].count--;
        l->sym[i] = token;
        l->sym[j] = -1;
        l->next[i] = after;
        if (after >= 0) l->prev[after] = i;
        if (before >= 0) status = pair_add(l, l->sym[before], token, before);
        if (after >= 0 && status == STRAND_OK) status = pair_add(l, token, l->sym[after], i);
    }
    free(position);
    return status;
}

static void learner_free(learner *l) {
    free(l->sym);
    free(l->prev);
    free(l->next);
    map_free(&l->index);
    for (int64_t r = 0; r < l->n_records; r++)
        free(l->records[r].position);
    free(l->records);
    free(l->heap);
    free(l->touched);
}

static int learn_merges(learner *l, int64_t total, int32_t max_merges, int32_t (*merges)[2],
                        int32_t *n_merges) {
    *n_merges = 0;
    STRAND_CALL(map_init(&l->index, 1024));
    /* every adjacent pair of the text, in lists of the exact size */
    l->merge = -1;
    int64_t initial[CODE_N + 1][CODE_N + 1] = {{0}};
    for (int64_t i = 0; i + 1 < total; i++)
        if (l->next[i] >= 0) initial[l->sym[i]][l->sym[i + 1]]++;
    for (int32_t a = 0; a <= CODE_N; a++) {
        for (int32_t b = 0; b <= CODE_N; b++) {
            if (!initial[a][b]) continue;
            int32_t record = -1;
            STRAND_CALL(record_of(l, a, b, &record));
            l->records[record].position = malloc((size_t)initial[a][b] * sizeof(int32_t));
            if (!l->records[record].position)
                STRAND_FAIL(STRAND_ERR_NOMEM, "out of memory for the BPE pair positions");
            l->records[record].cap_position = (int32_t)initial[a][b];
        }
    }
    for (int64_t i = 0; i + 1 < total; i++)
        if (l->next[i] >= 0) STRAND_CALL(pair_add(l, l->sym[i], l->sym[i + 1], (int32_t)i));
    for (int64_t r = 0; r < l->n_records; r++)
        STRAND_CALL(max_heap_push(l, (int32_t)r));
    while (*n_merges < max_merges && l->heap_size > 0) {
        const heap_entry best = max_heap_pop(l);
        const int32_t count = l->records[best.record].count;
        if (count != best.count) {
            /* lowered since it was pushed: back in at its true count */
            if (count > 0) STRAND_CALL(max_heap_push(l, best.record));
            continue;
        }
        if (count < 2) break;
        const int32_t m = *n_merges;
        merges[m][0] = best.left;
        merges[m][1] = best.right;
        l->merge = m;
        l->n_touched = 0;
        STRAND_CALL(apply_merge(l, best.record, BASE_IDS + m));
        STRAND_ASSERT(l->records[best.record].count == 0);
        for (int64_t k = 0; k < l->n_touched; k++)
            if (l->records[l->touched[k]].count > 0) STRAND_CALL(max_heap_push(l, l->touched[k]));
        *n_merges = m + 1;
    }
    return STRAND_OK;
}

int strand_tokenizer_learn(strand_tokenizer *t, const uint8_t *const *pieces, const int64_t *lengths,
                           int64_t n_pieces) {
    if (t->kind != STRAND_TOKENIZER_BPE)
        STRAND_FAIL(STRAND_ERR_INPUT, "tokenizer %s does not learn merges", t->name);
    int64_t total = 0;
    for (int64_t p = 0; p < n_pieces; p++) {
        if (lengths[p] < 0) STRAND_FAIL(STRAND_ERR_INPUT, "%s: a piece of negative length", t->name);
        total += lengths[p];
        if (total >= INT32_MAX)
            STRAND_FAIL(STRAND_ERR_INPUT, "%s: over %d bases to learn from: sample fewer", t->name,
                        INT32_MAX - 1);
    }
    learner l = {0};
    const int32_t max_merges = t->requested - BASE_IDS;
    int32_t(*merges)[2] = malloc((size_t)max_merges * sizeof *merges);
    l.sym = malloc(((size_t)total + 1) * sizeof *l.sym);
    l.prev = malloc(((size_t)total + 1) * sizeof *l.prev);
    l.next = malloc(((size_t)total + 1) * sizeof *l.next);
    int status = STRAND_OK;
    if (!merges || !l.sym || !l.prev || !l.next) {
        status = strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__,
                                  "%s: out of memory to learn from %" PRId64 " bases", t->name, total);
        goto done;
    }
    int64_t at = 0;
    for (int64_t p = 0; p < n_pieces; p++) {
        for (int64_t i = 0; i < lengths[p]; i++, at++) {
            if (pieces[p][i] > CODE_N) {
                status =
                    strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                     "%s: base code %d in piece %" PRId64 " at %" PRId64 " (codes are 0..4)",
                                     t->name, pieces[p][i], p, i);
                goto done;
            }
            l.sym[at] = pieces[p][i];
            /* no pair spans two pieces */
            l.prev[at] = i > 0 ? (int32_t)at - 1 : -1;
            l.next[at] = i + 1 < lengths[p] ? (int32_t)at + 1 : -1;
        }
    }
    int32_t n_merges = 0;
    STRAND_CALL_GOTO(status, done, learn_merges(&l, total, max_merges, merges, &n_merges));
    status = strand_tokenizer_set_merges(t, (const int32_t(*)[2])merges, n_merges);
done:
    learner_free(&l);
    free(merges);
    return status;
}

/* ---- encoding and decoding ---- */

int strand_tokenizer_encode(strand_tokenizer *t, const uint8_t *codes, int64_t n, strand_token_t *tokens,
                            int64_t *n_tokens) {
    *n_tokens = 0;
    for (int64_t i = 0; i < n; i++)
        if (codes[i] > CODE_N)
            STRAND_FAIL(STRAND_ERR_INPUT, "%s: base code %d at %" PRId64 " (codes are 0..4)", t->name,
                        codes[i], i);
    if (t->kind == STRAND_TOKENIZER_BPE) {
        if (!t->encoder) STRAND_FAIL(STRAND_ERR_INPUT, "tokenizer %s has no merges yet", t->name);
        return bpe_encode(t, codes, n, tokens, n_tokens);
    }
    const int k = t->k;
    int64_t count = 0, i = 0;
    if (k >= 2) {
        for (; i + k <= n; i += k) {
            strand_token_t value = 0;
            int has_n = 0;
            for (int j = 0; j < k; j++) {
                has_n |= codes[i + j] == CODE_N;
                value = value * 4 + (codes[i + j] & 3);
            }
            if (!has_n) {
                tokens[count++] = BASE_IDS + value;
            } else {
                for (int j = 0; j < k; j++)
                    tokens[count++] = codes[i + j];
            }
        }
    }
    for (; i < n; i++)
        tokens[count++] = codes[i];
    *n_tokens = count;
    return STRAND_OK;
}

int64_t strand_tokenizer_bases(const strand_tokenizer *t, const strand_token_t *tokens, int64_t n) {
    int64_t bases = 0;
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < (strand_token_t)t->vocab_size) bases += t->token_bases[tokens[i]];
    return bases;
}

int64_t strand_tokenizer_decode(const strand_tokenizer *t, const strand_token_t *tokens, int64_t n,
                                char *out) {
    int64_t written = 0;
    for (int64_t i = 0; i < n; i++) {
        if (tokens[i] >= (strand_token_t)t->vocab_size) {
            out[written] = '\0';
            return -1;
        }
        const int64_t begin = t->text_offset[tokens[i]], end = t->text_offset[tokens[i] + 1];
        memcpy(out + written, t->text + begin, (size_t)(end - begin));
        written += end - begin;
    }
    out[written] = '\0';
    return written;
}

/* ---- HDF5 ---- */

int strand_tokenizer_write(hid_t file, const strand_tokenizer *t, int writer, const char *path) {
    STRAND_CALL(strand_h5_write_string_attribute(file, "tokenizer", t->name, path));
    STRAND_CALL(strand_h5_write_int_attribute(file, "tokenizer_version", TOKENIZER_VERSION, path));
    STRAND_CALL(strand_h5_write_int_attribute(file, "vocab_size", t->vocab_size, path));
    STRAND_CALL(strand_h5_write_int_attribute(file, "tokenizer_fingerprint", t->fingerprint, path));
    if (t->kind != STRAND_TOKENIZER_BPE) return STRAND_OK;
    hid_t group = H5I_INVALID_HID, space = H5I_INVALID_HID, memory = H5I_INVALID_HID, set = H5I_INVALID_HID;
    int status = STRAND_OK;
    const hsize_t dims[2] = {(hsize_t)t->n_merges, 2};
    const int32_t dummy[2] = {0, 0}; /* HDF5 wants a buffer even for nothing */
    group = H5Gcreate2(file, "/tokenizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (group < 0) {
        status = strand_h5_error(__FILE__, __LINE__, path, "cannot create group /tokenizer");
        goto done;
    }
    space = H5Screate_simple(2, dims, NULL);
    memory = H5Screate_simple(2, dims, NULL);
    if (space < 0 || memory < 0) {
        status = strand_h5_error(__FILE__, __LINE__, path, "cannot describe /tokenizer/merges");
        goto done;
    }
    set = H5Dcreate2(group, "merges", H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (set < 0) {
        status = strand_h5_error(__FILE__, __LINE__, path, "cannot create /tokenizer/merges");
        goto done;
    }
    /* every rank takes part in the write (collective under MPI-IO); only the writer brings data */
    if (!writer && (H5Sselect_none(space) < 0 || H5Sselect_none(memory) < 0)) {
        status = strand_h5_error(__FILE__, __LINE__, path, "cannot select /tokenizer/merges");
        goto done;
    }
    const void *data = t->n_merges > 0 && writer ? (const void *)t->merges : (const void *)dummy;
    if (H5Dwrite(set, H5T_NATIVE_INT32, memory, space, H5P_DEFAULT, data) < 0)
        status = strand_h5_error(__FILE__, __LINE__, path, "cannot write /tokenizer/merges");
done:
    strand_h5_close(&set);
    strand_h5_close(&memory);
    strand_h5_close(&space);
    strand_h5_close(&group);
    return status;
}

/* The merges stored in the file (malloc'd). */
static int read_merges(hid_t file, const strand_tokenizer *t, int32_t (**merges)[2], int32_t *n_merges,
                       const char *path) {
    *merges = NULL;
    *n_merges = 0;
    htri_t exists = H5Lexists(file, "/tokenizer", H5P_DEFAULT);
    if (exists > 0) exists = H5Lexists(file, "/tokenizer/merges", H5P_DEFAULT);
    if (exists < 0) STRAND_H5_FAIL(path, "cannot look up /tokenizer/merges");
    if (!exists) STRAND_FAIL(STRAND_ERR_INPUT, "%s: tokenizer %s without /tokenizer/merges", path, t->name);
    hid_t set = H5Dopen2(file, "/tokenizer/merges", H5P_DEFAULT);
    if (set < 0) STRAND_H5_FAIL(path, "cannot open /tokenizer/merges");
    hid_t space = H5Dget_space(set), type = H5Dget_type(set);
    int status = STRAND_OK;
    hsize_t dims[2] = {0, 0};
    if (space < 0 || type < 0) {
        status = strand_h5_error(__FILE__, __LINE__, path, "cannot inspect /tokenizer/merges");
        goto done;
    }
    if (H5Tget_class(type) != H5T_INTEGER || H5Sget_simple_extent_ndims(space) != 2 ||
        H5Sget_simple_extent_dims(space, dims, NULL) < 0 || dims[1] != 2) {
        status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                  "%s: /tokenizer/merges is not an integer table of n x 2", path);
        goto done;
    }
    if (dims[0] > (hsize_t)(t->requested - BASE_IDS)) {
        status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                  "%s: /tokenizer/merges holds %llu merges, tokenizer %s at most %d", path,
                                  (unsigned long long)dims[0], t->name, t->requested - BASE_IDS);
        goto done;
    }
    *merges = malloc(((size_t)dims[0] + 1) * sizeof **merges);
    if (!*merges) {
        status =
            strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__, "%s: out of memory for the merges", path);
        goto done;
    }
    if (dims[0] > 0 && H5Dread(set, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, *merges) < 0) {
        status = strand_h5_error(__FILE__, __LINE__, path, "cannot read /tokenizer/merges");
        goto done;
    }
    *n_merges = (int32_t)dims[0];
done:
    strand_h5_close(&type);
    strand_h5_close(&space);
    strand_h5_close(&set);
    if (status != STRAND_OK) {
        free(*merges);
        *merges = NULL;
    }
    return status;
}

/* Record "PATH: <the message so far>" with the same code. */
static int prefix_path(int status, const char *path) {
    char message[1024];
    snprintf(message, sizeof message, "%s", strand_error_message());
    return strand_error_set(status, __FILE__, __LINE__, "%s: %s", path, message);
}

static int read_checked(hid_t file, strand_tokenizer *t, const char *path) {
    char name[128];
    int64_t vocab = 0, version = 0, fingerprint = 0;
    int found = 0;
    STRAND_CALL(strand_h5_read_string_attribute(file, "tokenizer", name, sizeof name, &found, path));
    if (!found) STRAND_FAIL(STRAND_ERR_INPUT, "%s: missing root attribute 'tokenizer'", path);
    STRAND_CALL(strand_h5_read_int_attribute(file, "tokenizer_version", &version, &found, path));
    if (found && version != TOKENIZER_VERSION)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: tokenizer '%s' version %" PRId64 ", this strand reads version %d",
                    path, name, version, TOKENIZER_VERSION);
    if (strand_tokenizer_parse(t, name) != STRAND_OK) return prefix_path(STRAND_ERR_INPUT, path);
    if (t->kind == STRAND_TOKENIZER_BPE) {
        int32_t(*merges)[2] = NULL, n_merges = 0;
        STRAND_CALL(read_merges(file, t, &merges, &n_merges, path));
        int status = strand_tokenizer_set_merges(t, (const int32_t(*)[2])merges, n_merges);
        free(merges);
        if (status != STRAND_OK) return prefix_path(status, path);
    }
    STRAND_CALL(strand_h5_read_int_attribute(file, "vocab_size", &vocab, &found, path));
    if (!found) STRAND_FAIL(STRAND_ERR_INPUT, "%s: missing root attribute 'vocab_size'", path);
    if (vocab != t->vocab_size)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: vocab_size %" PRId64 " but tokenizer %s has %d tokens", path,
                    vocab, t->name, t->vocab_size);
    /* an older nucleotide dataset has no fingerprint; anything else that has one must match it */
    STRAND_CALL(strand_h5_read_int_attribute(file, "tokenizer_fingerprint", &fingerprint, &found, path));
    if (!found && t->kind != STRAND_TOKENIZER_NUCLEOTIDE)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: missing root attribute 'tokenizer_fingerprint'", path);
    if (found && fingerprint != (int64_t)t->fingerprint)
        STRAND_FAIL(STRAND_ERR_INPUT,
                    "%s: tokenizer_fingerprint %" PRId64 " does not match tokenizer %s (%" PRIu32
                    "): its definition is damaged",
                    path, fingerprint, t->name, t->fingerprint);
    return STRAND_OK;
}

int strand_tokenizer_read(hid_t file, strand_tokenizer *t, const char *path) {
    memset(t, 0, sizeof *t);
    int status = read_checked(file, t, path);
    if (status != STRAND_OK) strand_tokenizer_free(t);
    return status;
}

int strand_tokenizer_copy(strand_tokenizer *dst, const strand_tokenizer *src) {
    int status = strand_tokenizer_parse(dst, src->name);
    if (status == STRAND_OK && src->kind == STRAND_TOKENIZER_BPE && src->encoder)
        status = strand_tokenizer_set_merges(dst, (const int32_t(*)[2])src->merges, src->n_merges);
    if (status != STRAND_OK) strand_tokenizer_free(dst);
    return status;
}

void strand_tokenizer_free(strand_tokenizer *t) {
    free_tables(t);
    free(t->merges);
    encoder_free(t->encoder);
    memset(t, 0, sizeof *t);
}
