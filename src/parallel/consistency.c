/* Cross-rank consistency of the configuration and the dataset tables. Rank 0's hash is
 * broadcast, every rank compares its own, and the lowest differing rank is found with one
 * all-reduce; only then are the two ranks' texts (or table summaries) broadcast, so that every
 * rank builds the same message naming the first difference. */
#define _POSIX_C_SOURCE 200809L
#include "parallel/consistency.h"

#include "core/crc32.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SHOWN_BYTES = 240 };

/* CRC-32 of a table's values: tables that differ are told apart (exactly, where the file has a
 * whole-file checksum: its header is compared first, see filesum.h). */
static uint64_t hash_int64(uint32_t crc, int64_t value) {
    return strand_crc32(crc, &value, sizeof value);
}

static uint64_t hash_ranges(const strand_token_range *ranges, int64_t n) {
    uint32_t hash = (uint32_t)hash_int64(0, n);
    for (int64_t i = 0; i < n; i++) {
        hash = (uint32_t)hash_int64(hash, ranges[i].offset);
        hash = (uint32_t)hash_int64(hash, ranges[i].length);
    }
    return hash;
}

static uint64_t hash_records(const strand_dataset *d) {
    uint32_t hash = (uint32_t)hash_int64(0, d->n_records);
    for (int64_t i = 0; i < d->n_records; i++) {
        /* With its terminating zero: "ab","c" differs from "a","bc". */
        const size_t length = strnlen(d->record_names[i], sizeof d->record_names[i] - 1) + 1;
        hash = strand_crc32(hash, d->record_names[i], length);
        hash = (uint32_t)hash_int64(hash, d->record_offsets[i]);
        hash = (uint32_t)hash_int64(hash, d->record_lengths[i]);
    }
    return hash;
}

static int64_t range_tokens(const strand_token_range *ranges, int64_t n) {
    int64_t total = 0;
    for (int64_t i = 0; i < n; i++)
        total += ranges[i].length;
    return total;
}

/* The dataset's tables in a few numbers: what is compared, and what the message shows. */
enum {
    D_TOKENS,
    D_RECORDS,
    D_RECORDS_HASH,
    D_TRAIN,
    D_TRAIN_TOKENS,
    D_TRAIN_HASH,
    D_VAL,
    D_VAL_TOKENS,
    D_VAL_HASH,
    D_N
};

static void dataset_summary(const strand_dataset *d, uint64_t s[D_N]) {
    s[D_TOKENS] = (uint64_t)d->n_tokens;
    s[D_RECORDS] = (uint64_t)d->n_records;
    s[D_RECORDS_HASH] = hash_records(d);
    s[D_TRAIN] = (uint64_t)d->n_train;
    s[D_TRAIN_TOKENS] = (uint64_t)range_tokens(d->train, d->n_train);
    s[D_TRAIN_HASH] = hash_ranges(d->train, d->n_train);
    s[D_VAL] = (uint64_t)d->n_val;
    s[D_VAL_TOKENS] = (uint64_t)range_tokens(d->val, d->n_val);
    s[D_VAL_HASH] = hash_ranges(d->val, d->n_val);
}

/* The text the configuration check compares (see consistency.h): the build, then the resolved
 * configuration with train.offload's directory normalised. strand_alloc'ed, or NULL. */
static char *config_text(const strand_config *config) {
    strand_config *normal = strand_alloc(sizeof *normal, "a configuration");
    if (!normal) return NULL;
    memcpy(normal, config, sizeof *normal);
    /* Per-rank: only on or off must agree (see consistency.h). */
    if (normal->offload[0]) snprintf(normal->offload, sizeof normal->offload, "<a directory>");
    char build[96];
    const int head =
        snprintf(build, sizeof build, "build = strand %s %s\n", STRAND_VERSION, STRAND_REAL_NAME);
    const size_t body = strand_config_format(normal, NULL, 0);
    char *text = strand_alloc((size_t)head + body + 1, "configuration text");
    if (text) {
        memcpy(text, build, (size_t)head);
        strand_config_format(normal, text + head, body + 1);
    }
    strand_free(normal);
    return text;
}

/* The lowest rank whose `count` values differ from rank 0's (size when none); rank 0's values are
 * left in zero[]. */
static int first_differing(MPI_Comm comm, const uint64_t *mine, uint64_t *zero, int count, int *first) {
    int rank = 0, size = 1;
    STRAND_CALL_MPI(MPI_Comm_rank(comm, &rank));
    STRAND_CALL_MPI(MPI_Comm_size(comm, &size));
    memcpy(zero, mine, sizeof *zero * (size_t)count);
    STRAND_CALL_MPI(MPI_Bcast(zero, count, MPI_UINT64_T, 0, comm));
    int differs = memcmp(zero, mine, sizeof *zero * (size_t)count) != 0 ? rank : size;
    STRAND_CALL_MPI(MPI_Allreduce(&differs, first, 1, MPI_INT, MPI_MIN, comm));
    return STRAND_OK;
}

/* Broadcast root's text; *out is strand_alloc'ed on every rank (root's is a copy of text). */
static int broadcast_text(MPI_Comm comm, int root, const char *text, char **out) {
    int rank = 0;
    STRAND_CALL_MPI(MPI_Comm_rank(comm, &rank));
    uint64_t length = rank == root ? strlen(text) : 0;
    STRAND_CALL_MPI(MPI_Bcast(&length, 1, MPI_UINT64_T, root, comm));
    *out = strand_alloc(length + 1, "text compared across ranks");
    STRAND_CALL(strand_agree(comm, *out ? STRAND_OK : STRAND_ERR_NOMEM));
    if (rank == root) memcpy(*out, text, length);
    for (uint64_t done = 0; done < length;) {
        const int n = length - done < (1u << 30) ? (int)(length - done) : (1 << 30);
        STRAND_CALL_MPI(MPI_Bcast(*out + done, n, MPI_CHAR, root, comm));
        done += (uint64_t)n;
    }
    (*out)[length] = '\0';
    return STRAND_OK;
}

/* A value as messages show it: "" for empty, long ones cut. */
static void show_value(const char *value, size_t length, char *out, size_t size) {
    if (length == 0)
        snprintf(out, size, "\"\"");
    else if (length < size && length < SHOWN_BYTES)
        snprintf(out, size, "%.*s", (int)length, value);
    else
        snprintf(out, size, "%.*s...", (int)(SHOWN_BYTES - 4 < size - 4 ? SHOWN_BYTES - 4 : size - 4), value);
}

/* Next line of *p (without its newline) into [*line, *length); false at the end. */
static int next_line(const char **p, const char **line, size_t *length) {
    if (!**p) return 0;
    const char *end = strchr(*p, '\n');
    *line = *p;
    *length = end ? (size_t)(end - *p) : strlen(*p);
    *p = end ? end + 1 : *p + *length;
    return 1;
}

/* Record the message naming the first line where rank 0's text and rank `other`'s differ. */
static int config_difference(const char *zero, const char *theirs, int other) {
    char section[64] = "";
    const char *a = zero, *b = theirs;
    for (;;) {
        const char *la = NULL, *lb = NULL;
        size_t na = 0, nb = 0;
        const int more_a = next_line(&a, &la, &na), more_b = next_line(&b, &lb, &nb);
        if (!more_a && !more_b) break;
        if (more_a && na >= 2 && la[0] == '[' && na - 2 < sizeof section)
            snprintf(section, sizeof section, "%.*s", (int)na - 2, la + 1);
        if (more_a && more_b && na == nb && memcmp(la, lb, na) == 0) continue;
        /* Same key, another value: the usual case. */
        const char *ea = more_a ? memchr(la, '=', na) : NULL, *eb = more_b ? memchr(lb, '=', nb) : NULL;
        char va[SHOWN_BYTES + 8], vb[SHOWN_BYTES + 8];
        if (ea && eb && ea - la == eb - lb && memcmp(la, lb, (size_t)(ea - la)) == 0 && la[0] != '[') {
            const size_t key_length = (size_t)(ea - la) > 0 ? (size_t)(ea - la) - 1 : 0; /* "key = value" */
            const char *value_a = ea + 2 <= la + na ? ea + 2 : la + na;
            const char *value_b = eb + 2 <= lb + nb ? eb + 2 : lb + nb;
            show_value(value_a, na - (size_t)(value_a - la), va, sizeof va);
            show_value(value_b, nb - (size_t)(value_b - lb), vb, sizeof vb);
            if (strncmp(la, "build ", 6) == 0)
                STRAND_FAIL(
                    STRAND_ERR_INPUT,
                    "the strand build differs between ranks: %s on rank 0, %s on rank %d (every rank must "
                    "run the same strand binary)",
                    va, vb, other);
            STRAND_FAIL(
                STRAND_ERR_INPUT,
                "configuration differs between ranks: %s%s%.*s = %s on rank 0, %s on rank %d (every rank "
                "must be given the same configuration)",
                section, section[0] ? "." : "", (int)key_length, la, va, vb, other);
        }
        show_value(more_a ? la : "", more_a ? na : 0, va, sizeof va);
        show_value(more_b ? lb : "", more_b ? nb : 0, vb, sizeof vb);
        STRAND_FAIL(
            STRAND_ERR_INPUT,
            "configuration differs between ranks: '%s' on rank 0, '%s' on rank %d (every rank must run the "
            "same strand binary with the same configuration)",
            va, vb, other);
    }
    STRAND_FAIL(STRAND_ERR_INPUT,
                "configuration differs between ranks 0 and %d (every rank must be given the same "
                "configuration)",
                other);
}

/* Rank 0's text and the lowest rank whose text differs (size when none), compared exactly; when
 * one differs, its text too. Both strand_alloc'ed on every rank (free with strand_free). */
static int compare_texts(MPI_Comm comm, const char *text, char **zero, char **other, int *first) {
    int rank = 0, size = 1;
    *zero = *other = NULL;
    STRAND_CALL_MPI(MPI_Comm_rank(comm, &rank));
    STRAND_CALL_MPI(MPI_Comm_size(comm, &size));
    STRAND_CALL(broadcast_text(comm, 0, text, zero));
    int differs = strcmp(*zero, text) != 0 ? rank : size;
    STRAND_CALL_MPI(MPI_Allreduce(&differs, first, 1, MPI_INT, MPI_MIN, comm));
    if (*first < size) STRAND_CALL(broadcast_text(comm, *first, text, other));
    return STRAND_OK;
}

int strand_consistency_config(MPI_Comm comm, const strand_config *config) {
    char *text = config_text(config);
    int status = strand_agree(comm, text ? STRAND_OK : STRAND_ERR_NOMEM);
    char *text_zero = NULL, *text_other = NULL;
    int first = 0;
    if (status == STRAND_OK) status = compare_texts(comm, text, &text_zero, &text_other, &first);
    /* Every rank holds both texts, so every rank records the same message. */
    if (status == STRAND_OK && text_other)
        status = config_difference(text_zero, text_other, strand_world_rank_of(comm, first));
    strand_free(text_zero);
    strand_free(text_other);
    strand_free(text);
    return status;
}

int strand_consistency_value(MPI_Comm comm, const char *name, const char *value) {
    char *value_zero = NULL, *value_other = NULL;
    int first = 0;
    int status = compare_texts(comm, value, &value_zero, &value_other, &first);
    if (status == STRAND_OK && value_other) {
        char a[SHOWN_BYTES + 8], b[SHOWN_BYTES + 8];
        show_value(value_zero, strlen(value_zero), a, sizeof a);
        show_value(value_other, strlen(value_other), b, sizeof b);
        status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                  "%s differs between ranks: %s on rank 0, %s on rank %d (every rank must be "
                                  "given the same command line)",
                                  name, a, b, strand_world_rank_of(comm, first));
    }
    strand_free(value_zero);
    strand_free(value_other);
    return status;
}

static void show_ranges(const uint64_t *s, int n_field, char *out, size_t size) {
    snprintf(out, size, "%" PRIu64 " range%s of %" PRIu64 " tokens", s[n_field], s[n_field] == 1 ? "" : "s",
             s[n_field + 1]);
}

int strand_consistency_dataset(MPI_Comm comm, const strand_dataset *dataset) {
    uint64_t mine[D_N], zero[D_N], other[D_N];
    dataset_summary(dataset, mine);
    int first = 0, size = 1;
    MPI_Comm_size(comm, &size);
    STRAND_CALL(first_differing(comm, mine, zero, D_N, &first));
    if (first == size) return STRAND_OK;
    memcpy(other, mine, sizeof other);
    STRAND_CALL_MPI(MPI_Bcast(other, D_N, MPI_UINT64_T, first, comm));
    const int r = strand_world_rank_of(comm, first);
    char what[160], a[96], b[96];
    if (zero[D_TOKENS] != other[D_TOKENS]) {
        snprintf(what, sizeof what, "n_tokens");
        snprintf(a, sizeof a, "%" PRIu64, zero[D_TOKENS]);
        snprintf(b, sizeof b, "%" PRIu64, other[D_TOKENS]);
    } else if (zero[D_RECORDS] != other[D_RECORDS] || zero[D_RECORDS_HASH] != other[D_RECORDS_HASH]) {
        /* The same count: names, offsets or lengths differ. */
        const int same = zero[D_RECORDS] == other[D_RECORDS];
        snprintf(what, sizeof what, "records");
        snprintf(a, sizeof a, "%" PRIu64 " record%s", zero[D_RECORDS], zero[D_RECORDS] == 1 ? "" : "s");
        snprintf(b, sizeof b, "%" PRIu64 " %srecord%s", other[D_RECORDS], same ? "other " : "",
                 other[D_RECORDS] == 1 ? "" : "s");
    } else if (zero[D_TRAIN_HASH] != other[D_TRAIN_HASH] || zero[D_TRAIN] != other[D_TRAIN]) {
        snprintf(what, sizeof what, "split/train");
        show_ranges(zero, D_TRAIN, a, sizeof a);
        show_ranges(other, D_TRAIN, b, sizeof b);
        if (strcmp(a, b) == 0) snprintf(b + strlen(b), sizeof b - strlen(b), " elsewhere");
    } else {
        snprintf(what, sizeof what, "split/val");
        show_ranges(zero, D_VAL, a, sizeof a);
        show_ranges(other, D_VAL, b, sizeof b);
        if (strcmp(a, b) == 0) snprintf(b + strlen(b), sizeof b - strlen(b), " elsewhere");
    }
    char cut[SHOWN_BYTES + 8];
    show_value(dataset->path, strlen(dataset->path), cut, sizeof cut);
    STRAND_FAIL(
        STRAND_ERR_INPUT,
        "dataset %s differs between ranks: %s = %s on rank 0, %s on rank %d (every rank must read the same "
        "dataset file: is one node's copy stale?)",
        cut, what, a, b, r);
}
