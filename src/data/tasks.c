/* strand prep --task: synthetic long-range tasks with a loss mask (README "Task datasets").
 *
 * Each example is one record of L tokens. Token j of an example is an "answer" when the model
 * must predict it; the loss mask is stored per position, so /loss_mask[i] = 1 when the target of
 * position i (token i + 1) is an answer. The last position of a record never counts (its target
 * would be the next example). Every token is a pure function of (seed, example, position) through
 * the counter-based rng, so a dataset does not depend on how it was generated. */
#include "strand/dataset.h"
#include "core/atomic_file.h"
#include "core/filesum.h"
#include "core/rng.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
    TASK_STREAM = 0x7a5c, /* rng stream of the generators (apart from training's streams) */
    TASK_CHUNK = 1 << 20, /* /tokens and /loss_mask chunk (tokens) */
    /* copy: K symbols from an alphabet of COPY_SYMBOLS, then filler, a cue, the K again */
    COPY_K = 8,
    COPY_SYMBOLS = 8,
    COPY_FILL = 8,
    COPY_CUE = 9,
    COPY_VOCAB = 10,
    /* adding: digits 0-9, marked digits 10-19 (digit + 10), query 20; answers are digits */
    ADD_MARKED = 10,
    ADD_QUERY = 20,
    ADD_VOCAB = 21,
    /* parity: input bits 0/1 and output bits 2/3 interleaved, 4 where no output is defined */
    PARITY_OUT = 2,
    PARITY_NONE = 4,
    PARITY_VOCAB = 5,
    /* recall: RECALL_PAIRS pairs of distinct keys 0-15 and values 16-31, filler, query, key, value */
    RECALL_KEYS = 16,
    RECALL_VALUE = 16,
    RECALL_PAIRS = 8,
    RECALL_FILL = 32,
    RECALL_QUERY = 33,
    RECALL_VOCAB = 34,
};

typedef struct {
    const char *name;
    int vocab;
    const char *symbols; /* the symbol table attribute */
} task_info;

static const task_info tasks[] = {
    {"copy", COPY_VOCAB, "0-7=symbol,8=filler,9=cue; answers: the 8 symbols after the cue"},
    {"adding", ADD_VOCAB,
     "0-9=digit,10-19=marked digit (digit+10),20=query; answers: tens and units of the marked sum"},
    {"parity", PARITY_VOCAB,
     "0-1=input bit x,2-3=output bit (2+y),4=no output; tokens x_0 y_0 x_1 y_1 ..., "
     "answers: y_i = x_i XOR x_(i-D) for i >= D"},
    {"recall", RECALL_VOCAB,
     "0-15=key,16-31=value (16+v),32=filler,33=query; answer: the queried key's value"},
};

static const task_info *find_task(const char *name) {
    for (size_t k = 0; k < sizeof tasks / sizeof tasks[0]; k++)
        if (strcmp(tasks[k].name, name) == 0) return &tasks[k];
    return NULL;
}

static uint64_t draw(const strand_task_options *o, int64_t example, int64_t what, uint64_t n) {
    return strand_rng_below(n, o->seed, TASK_STREAM, (uint64_t)example, (uint64_t)what);
}

/* One example into tokens[L] and answer[L] (answer[j] = 1: token j is predicted). */
static void generate(const strand_task_options *o, int64_t e, uint16_t *tok, uint8_t *answer) {
    const int64_t L = o->length, D = o->distance;
    memset(answer, 0, (size_t)L);
    if (strcmp(o->task, "copy") == 0) {
        /* block [0, K), cue at K + D - 1, copy at [K + D, 2K + D): the answer D after the block */
        for (int64_t j = 0; j < L; j++)
            tok[j] = COPY_FILL;
        for (int64_t j = 0; j < COPY_K; j++) {
            tok[j] = (uint16_t)draw(o, e, j, COPY_SYMBOLS);
            tok[COPY_K + D + j] = tok[j];
            answer[COPY_K + D + j] = 1;
        }
        tok[COPY_K + D - 1] = COPY_CUE;
    } else if (strcmp(o->task, "adding") == 0) {
        /* digits [0, L - 3), marks at p and p + D, query at L - 3, tens and units after it */
        for (int64_t j = 0; j < L - 3; j++)
            tok[j] = (uint16_t)draw(o, e, j, 10);
        const int64_t p = (int64_t)draw(o, e, L, (uint64_t)(L - 3 - D));
        const int sum = tok[p] + tok[p + D];
        tok[p] += ADD_MARKED;
        tok[p + D] += ADD_MARKED;
        tok[L - 3] = ADD_QUERY;
        tok[L - 2] = (uint16_t)(sum / 10);
        tok[L - 1] = (uint16_t)(sum % 10);
        answer[L - 2] = answer[L - 1] = 1;
    } else if (strcmp(o->task, "parity") == 0) {
        /* L / 2 bits; the output of bit i sits right after it, so x_(i-D) is 2D tokens back */
        for (int64_t i = 0; i < L / 2; i++)
            tok[2 * i] = (uint16_t)draw(o, e, i, 2);
        for (int64_t i = 0; i < L / 2; i++) {
            tok[2 * i + 1] = i >= D ? (uint16_t)(PARITY_OUT + (tok[2 * i] ^ tok[2 * (i - D)])) : PARITY_NONE;
            answer[2 * i + 1] = i >= D;
        }
        if (L % 2) tok[L - 1] = PARITY_NONE;
    } else { /* recall */
        /* pairs [0, 2P) with distinct keys (a shuffle), filler, query at 2P + D - 1, key, value */
        uint16_t keys[RECALL_KEYS];
        for (int k = 0; k < RECALL_KEYS; k++)
            keys[k] = (uint16_t)k;
        for (int k = RECALL_KEYS - 1; k > 0; k--) { /* Fisher-Yates */
            int r = (int)draw(o, e, 1000 + k, (uint64_t)k + 1);
            uint16_t swap = keys[k];
            keys[k] = keys[r];
            keys[r] = swap;
        }
        for (int64_t j = 0; j < L; j++)
            tok[j] = RECALL_FILL;
        for (int k = 0; k < RECALL_PAIRS; k++) {
            tok[2 * k] = keys[k];
            tok[2 * k + 1] = (uint16_t)(RECALL_VALUE + draw(o, e, k, RECALL_KEYS));
        }
        const int q = (int)draw(o, e, 2000, RECALL_PAIRS);
        const int64_t at = 2 * RECALL_PAIRS + D;
        tok[at - 1] = RECALL_QUERY;
        tok[at] = tok[2 * q];
        tok[at + 1] = tok[2 * q + 1];
        answer[at + 1] = 1;
    }
}

/* Everything but the output path. */
static int check_task(const strand_task_options *o, const task_info **info) {
    *info = o->task ? find_task(o->task) : NULL;
    if (!*info)
        STRAND_FAIL(STRAND_ERR_INPUT, "--task: unknown task '%s' (copy, adding, parity or recall)",
                    o->task ? o->task : "");
    const int64_t L = o->length, D = o->distance;
    if (L < 2 || L > (int64_t)1 << 30)
        STRAND_FAIL(STRAND_ERR_INPUT, "--length %" PRId64 ": must be in 2..2^30", L);
    if (o->count < 1)
        STRAND_FAIL(STRAND_ERR_INPUT, "--count %" PRId64 ": need at least one example", o->count);
    if (o->count > ((int64_t)1 << 40) / L)
        STRAND_FAIL(STRAND_ERR_INPUT, "--count %" PRId64 " x --length %" PRId64 ": too many tokens", o->count,
                    L);
    if (D < 1) STRAND_FAIL(STRAND_ERR_INPUT, "--distance %" PRId64 ": must be at least 1", D);
    if (strcmp(o->task, "copy") == 0 && 2 * COPY_K + D > L)
        STRAND_FAIL(STRAND_ERR_INPUT,
                    "--distance %" PRId64 " does not fit in --length %" PRId64
                    ": copy needs length >= 2 * %d (the block and its copy) + distance",
                    D, L, COPY_K);
    if (strcmp(o->task, "adding") == 0 && D > L - 4)
        STRAND_FAIL(STRAND_ERR_INPUT,
                    "--distance %" PRId64 " does not fit in --length %" PRId64
                    ": adding needs length >= distance + 4 (digits, query, two answer tokens)",
                    D, L);
    if (strcmp(o->task, "parity") == 0 && D >= L / 2)
        STRAND_FAIL(STRAND_ERR_INPUT,
                    "--distance %" PRId64 " does not fit in --length %" PRId64
                    ": parity holds length / 2 bits and needs distance < length / 2",
                    D, L);
    if (strcmp(o->task, "recall") == 0 && 2 * RECALL_PAIRS + D + 2 > L)
        STRAND_FAIL(STRAND_ERR_INPUT,
                    "--distance %" PRId64 " does not fit in --length %" PRId64
                    ": recall needs length >= 2 * %d (the pairs) + distance + 2",
                    D, L, RECALL_PAIRS);
    if (!(o->val_fraction >= 0.0 && o->val_fraction < 1.0))
        STRAND_FAIL(STRAND_ERR_INPUT, "--val-fraction %g: outside [0, 1)", o->val_fraction);
    return STRAND_OK;
}

static int check_options(const strand_task_options *o, const task_info **info) {
    if (!o->output || !o->output[0]) STRAND_FAIL(STRAND_ERR_INPUT, "--out: no output file given");
    return check_task(o, info);
}

int strand_task_example(const strand_task_options *o, int64_t example, uint16_t *tokens, uint8_t *answer) {
    const task_info *info = NULL;
    STRAND_CALL(check_task(o, &info));
    generate(o, example, tokens, answer);
    return STRAND_OK;
}

/* A chunked, deflated, Fletcher32-checksummed 1-D dataset written whole. */

/* "cannot write NAME" with HDF5's innermost message, as STRAND_ERR_IO */
static int write_error(const char *path, const char *name) {
    char what[96];
    snprintf(what, sizeof what, "cannot write %s", name);
    return strand_h5_error(__FILE__, __LINE__, path, what);
}

static int write_chunked(hid_t file, const char *name, hid_t file_type, hid_t memory_type, const void *fill,
                         const void *data, int64_t n, const char *path) {
    hsize_t dims = (hsize_t)n, chunk = (hsize_t)(n < TASK_CHUNK ? n : TASK_CHUNK);
    hid_t space = H5Screate_simple(1, &dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE), set = -1;
    int failed = space < 0 || dcpl < 0 || H5Pset_chunk(dcpl, 1, &chunk) < 0 || H5Pset_shuffle(dcpl) < 0 ||
                 H5Pset_deflate(dcpl, 1) < 0 || H5Pset_fletcher32(dcpl) < 0 ||
                 H5Pset_fill_value(dcpl, memory_type, fill) < 0 ||
                 (set = H5Dcreate2(file, name, file_type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT)) < 0 ||
                 H5Dwrite(set, memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0;
    strand_h5_close(&set);
    strand_h5_close(&dcpl);
    strand_h5_close(&space);
    return failed ? write_error(path, name) : STRAND_OK;
}

static int write_plain(hid_t file, const char *name, hid_t type, int rank, const hsize_t *dims,
                       const void *data, const char *path) {
    hid_t space = H5Screate_simple(rank, dims, NULL), set = -1;
    int empty = dims[0] == 0;
    int failed = space < 0 ||
                 (set = H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)) < 0 ||
                 (!empty && H5Dwrite(set, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0);
    strand_h5_close(&set);
    strand_h5_close(&space);
    return failed ? write_error(path, name) : STRAND_OK;
}

static int write_records(hid_t file, const strand_task_options *o, int64_t n_train, const char *path) {
    const int64_t n = o->count, L = o->length;
    enum { NAME_BYTES = 32 }; /* "example-" and up to 20 digits */
    char *names = malloc((size_t)n * NAME_BYTES);
    const char **name_ptrs = malloc((size_t)n * sizeof *name_ptrs);
    int64_t *offsets = malloc((size_t)n * sizeof *offsets), *lengths = malloc((size_t)n * sizeof *lengths);
    int32_t *sources = calloc((size_t)n, sizeof *sources);
    hid_t group = -1, split = -1, string_type = H5Tcopy(H5T_C_S1);
    int status = STRAND_OK;
    if (!names || !name_ptrs || !offsets || !lengths || !sources) {
        status = strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__, "out of memory for the record table");
        goto done;
    }
    for (int64_t i = 0; i < n; i++) {
        snprintf(names + NAME_BYTES * i, NAME_BYTES, "example-%" PRId64, i);
        name_ptrs[i] = names + NAME_BYTES * i;
        offsets[i] = i * L;
        lengths[i] = L;
    }
    if (string_type < 0 || H5Tset_size(string_type, H5T_VARIABLE) < 0 ||
        (group = H5Gcreate2(file, "/records", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)) < 0 ||
        (split = H5Gcreate2(file, "/split", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)) < 0) {
        status = strand_h5_error(__FILE__, __LINE__, path, "cannot create the record and split tables");
        goto done;
    }
    hsize_t dims[2] = {(hsize_t)n, 2};
    STRAND_CALL_GOTO(status, done, write_plain(group, "name", string_type, 1, dims, name_ptrs, path));
    STRAND_CALL_GOTO(status, done, write_plain(group, "offset", H5T_STD_I64LE, 1, dims, offsets, path));
    STRAND_CALL_GOTO(status, done, write_plain(group, "length", H5T_STD_I64LE, 1, dims, lengths, path));
    STRAND_CALL_GOTO(status, done, write_plain(group, "source", H5T_STD_I32LE, 1, dims, sources, path));
    /* Splits by whole examples: one range of the first n_train, one of the rest. */
    int64_t train[2] = {0, n_train * L}, val[2] = {n_train * L, (n - n_train) * L};
    dims[0] = 1;
    STRAND_CALL_GOTO(status, done, write_plain(split, "train", H5T_STD_I64LE, 2, dims, train, path));
    dims[0] = n > n_train ? 1 : 0;
    STRAND_CALL_GOTO(status, done, write_plain(split, "val", H5T_STD_I64LE, 2, dims, val, path));
    STRAND_CALL_GOTO(status, done,
                     strand_h5_write_double_attribute(split, "val_fraction", o->val_fraction, path));
    STRAND_CALL_GOTO(status, done, strand_h5_write_string_attribute(split, "val_records", "", path));
done:
    strand_h5_close(&string_type);
    strand_h5_close(&split);
    strand_h5_close(&group);
    free(names);
    free(name_ptrs);
    free(offsets);
    free(lengths);
    free(sources);
    return status;
}

static int write_attributes(hid_t file, const strand_task_options *o, const task_info *info,
                            const char *path) {
    char tokenizer[64];
    snprintf(tokenizer, sizeof tokenizer, "%s%s", STRAND_TASK_TOKENIZER_PREFIX, info->name);
    STRAND_CALL(strand_h5_write_int_attribute(file, "format_version", STRAND_DATASET_FORMAT_VERSION, path));
    STRAND_CALL(strand_h5_write_string_attribute(file, "tokenizer", tokenizer, path));
    STRAND_CALL(
        strand_h5_write_int_attribute(file, "tokenizer_version", STRAND_TASK_TOKENIZER_VERSION, path));
    STRAND_CALL(strand_h5_write_int_attribute(file, "vocab_size", info->vocab, path));
    STRAND_CALL(strand_h5_write_string_attribute(file, "symbols", info->symbols, path));
    STRAND_CALL(strand_h5_write_string_attribute(file, "special_tokens", "", path));
    STRAND_CALL(strand_h5_write_int_attribute(file, "record_windows", 1, path));
    STRAND_CALL(strand_h5_write_string_attribute(file, "task", info->name, path));
    STRAND_CALL(strand_h5_write_int_attribute(file, "task_length", o->length, path));
    STRAND_CALL(strand_h5_write_int_attribute(file, "task_distance", o->distance, path));
    STRAND_CALL(strand_h5_write_int_attribute(file, "task_seed", (int64_t)o->seed, path));
    STRAND_CALL(strand_h5_write_string_attribute(file, "created_by", "strand " STRAND_VERSION, path));
    return STRAND_OK;
}

int strand_task_prep(const strand_task_options *o, strand_prep_stats *stats) {
    strand_prep_stats local;
    if (!stats) stats = &local;
    memset(stats, 0, sizeof *stats);
    const double start = strand_now();
    const task_info *info = NULL;
    STRAND_CALL(check_options(o, &info));
    strand_h5_quiet();
    const int64_t L = o->length, n = o->count * L;
    const int64_t n_val = (int64_t)floor(o->val_fraction * (double)o->count), n_train = o->count - n_val;
    if (n_train < 1)
        STRAND_FAIL(STRAND_ERR_INPUT, "--val-fraction %g leaves no training example", o->val_fraction);
    size_t path_bytes = strlen(o->output) + 5;
    char *tmp = malloc(path_bytes);
    uint16_t *tokens = malloc(sizeof *tokens * (size_t)n);
    uint8_t *mask = malloc((size_t)n), *answer = malloc((size_t)L);
    hid_t file = -1, fcpl = H5Pcreate(H5P_FILE_CREATE), fapl = H5Pcreate(H5P_FILE_ACCESS);
    int status = STRAND_OK, created = 0;
    if (!tmp || !tokens || !mask || !answer) {
        status =
            strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__, "out of memory for %" PRId64 " tokens", n);
        goto done;
    }
    snprintf(tmp, path_bytes, "%s.tmp", o->output);
    for (int64_t e = 0; e < o->count; e++) {
        generate(o, e, tokens + e * L, answer);
        /* position j's target is token j + 1; the record's last position never counts */
        for (int64_t j = 0; j + 1 < L; j++)
            mask[e * L + j] = answer[j + 1];
        mask[e * L + L - 1] = 0;
    }
    if (fcpl < 0 || fapl < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0) {
        status = strand_h5_error(__FILE__, __LINE__, tmp, "cannot set file properties");
        goto done;
    }
    STRAND_CALL_GOTO(status, done, strand_filesum_reserve(fcpl, STRAND_FILESUM_BLOCK, tmp));
    created = 1;
    if ((file = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, fapl)) < 0) {
        status = strand_h5_error(__FILE__, __LINE__, tmp,
                                 "cannot create the output file (does its directory exist?)");
        goto done;
    }
    const uint16_t token_fill = STRAND_TOKEN_FILL;
    const uint8_t mask_fill = 0;
    STRAND_CALL_GOTO(
        status, done,
        write_chunked(file, "/tokens", H5T_STD_U16LE, H5T_NATIVE_UINT16, &token_fill, tokens, n, tmp));
    STRAND_CALL_GOTO(
        status, done,
        write_chunked(file, "/loss_mask", H5T_STD_U8LE, H5T_NATIVE_UINT8, &mask_fill, mask, n, tmp));
    STRAND_CALL_GOTO(status, done, write_records(file, o, n_train, tmp));
    STRAND_CALL_GOTO(status, done, write_attributes(file, o, info, tmp));
    hid_t closing = file;
    file = -1;
    if (H5Fclose(closing) < 0) {
        status = strand_h5_error(__FILE__, __LINE__, tmp, "cannot finish writing the file (disk full?)");
        goto done;
    }
    STRAND_CALL_GOTO(status, done, strand_filesum_seal(tmp, STRAND_FILESUM_BLOCK));
    STRAND_CALL_GOTO(status, done, strand_atomic_rename(tmp, o->output));
    stats->n_records = o->count;
    stats->n_tokens = n;
    stats->n_train_tokens = n_train * L;
    stats->n_val_tokens = n_val * L;
    stats->seconds = strand_now() - start;
done:
    strand_h5_close(&file);
    strand_h5_close(&fcpl);
    strand_h5_close(&fapl);
    if (status != STRAND_OK && created) unlink(tmp);
    free(tmp);
    free(tokens);
    free(mask);
    free(answer);
    return status;
}
