/* Reading strand datasets (HDF5): validation with clear messages, the record and split tables,
 * token hyperslabs, `strand info`, and the HDF5 helpers shared by strand's HDF5 code. */
#define _POSIX_C_SOURCE 200809L
#include "strand/dataset.h"

#include "core/filesum.h"
#include "data/fasta.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum {
    INFO_BLOCK = 1 << 20,        /* tokens per read when computing the composition */
    READ_CACHE_BYTES = 16 << 20, /* chunk cache per open dataset: 16 chunks of 1 MiB */
    READ_CACHE_SLOTS = 1031,     /* prime, well above the number of cached chunks */
    INFO_RECORDS_SHOWN = 20,
};

/* ---- tokens ---- */

strand_token_t strand_token_complement(strand_token_t token) {
    switch (token) {
    case STRAND_TOKEN_A:
        return STRAND_TOKEN_T;
    case STRAND_TOKEN_C:
        return STRAND_TOKEN_G;
    case STRAND_TOKEN_G:
        return STRAND_TOKEN_C;
    case STRAND_TOKEN_T:
        return STRAND_TOKEN_A;
    default:
        return token;
    }
}

char strand_token_char(strand_token_t token) {
    static const char chars[] = "ACGTN";
    return token < 5 ? chars[token] : '.';
}

/* ---- HDF5 helpers ---- */

void strand_h5_quiet(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static herr_t innermost_error(unsigned n, const H5E_error2_t *error, void *data) {
    /* H5E_WALK_UPWARD visits the innermost (most specific) entry first. */
    if (n == 0 && error->desc) snprintf(data, 256, "%s", error->desc);
    return 0;
}

int strand_h5_error(const char *file, int line, const char *path, const char *what) {
    char detail[256] = "";
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost_error, detail);
    H5Eclear2(H5E_DEFAULT);
    if (detail[0])
        return strand_error_set(STRAND_ERR_IO, file, line, "%s: %s (HDF5: %s)", path, what, detail);
    return strand_error_set(STRAND_ERR_IO, file, line, "%s: %s", path, what);
}

void strand_h5_close(hid_t *id) {
    if (*id < 0) return;
    if (H5Iis_valid(*id) > 0) {
        switch (H5Iget_type(*id)) {
        case H5I_FILE:
            H5Fclose(*id);
            break;
        case H5I_GROUP:
            H5Gclose(*id);
            break;
        case H5I_DATASET:
            H5Dclose(*id);
            break;
        case H5I_ATTR:
            H5Aclose(*id);
            break;
        case H5I_DATASPACE:
            H5Sclose(*id);
            break;
        case H5I_DATATYPE:
            H5Tclose(*id);
            break;
        case H5I_GENPROP_LST:
            H5Pclose(*id);
            break;
        default:
            break;
        }
    }
    *id = H5I_INVALID_HID;
}

static int write_attribute(hid_t object, const char *name, hid_t type, const void *value, const char *path) {
    int status = STRAND_OK;
    char what[160];
    hid_t space = H5Screate(H5S_SCALAR), attribute = H5I_INVALID_HID;
    snprintf(what, sizeof what, "cannot write attribute '%s'", name);
    if (space < 0) goto fail;
    attribute = H5Acreate2(object, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (attribute < 0 || H5Awrite(attribute, type, value) < 0) goto fail;
    goto done;
fail:
    status = strand_h5_error(__FILE__, __LINE__, path, what);
done:
    strand_h5_close(&attribute);
    strand_h5_close(&space);
    return status;
}

int strand_h5_write_string_attribute(hid_t object, const char *name, const char *value, const char *path) {
    hid_t type = H5Tcopy(H5T_C_S1);
    if (type < 0 || H5Tset_size(type, strlen(value) + 1) < 0 || H5Tset_strpad(type, H5T_STR_NULLTERM) < 0) {
        strand_h5_close(&type);
        STRAND_H5_FAIL(path, "cannot make a string type");
    }
    int status = write_attribute(object, name, type, value, path);
    strand_h5_close(&type);
    return status;
}

int strand_h5_write_int_attribute(hid_t object, const char *name, int64_t value, const char *path) {
    /* Small values as 32-bit ints: what h5dump and h5py users expect for versions and sizes. */
    if (value >= INT32_MIN && value <= INT32_MAX) {
        int32_t v32 = (int32_t)value;
        return write_attribute(object, name, H5T_NATIVE_INT32, &v32, path);
    }
    return write_attribute(object, name, H5T_NATIVE_INT64, &value, path);
}

int strand_h5_write_double_attribute(hid_t object, const char *name, double value, const char *path) {
    return write_attribute(object, name, H5T_NATIVE_DOUBLE, &value, path);
}

/* Open attribute `name` if it exists: *attribute < 0 when absent. */
static int open_attribute(hid_t object, const char *name, hid_t *attribute, const char *path) {
    *attribute = H5I_INVALID_HID;
    htri_t exists = H5Aexists(object, name);
    if (exists < 0) STRAND_H5_FAIL(path, "cannot look up an attribute");
    if (!exists) return STRAND_OK;
    *attribute = H5Aopen(object, name, H5P_DEFAULT);
    if (*attribute < 0) STRAND_H5_FAIL(path, "cannot open an attribute");
    return STRAND_OK;
}

int strand_h5_read_string_attribute(hid_t object, const char *name, char *value, size_t capacity, int *found,
                                    const char *path) {
    hid_t attribute, file_type = H5I_INVALID_HID, memory_type = H5I_INVALID_HID, space = H5I_INVALID_HID;
    *found = 0;
    if (capacity > 0) value[0] = '\0';
    STRAND_CALL(open_attribute(object, name, &attribute, path));
    if (attribute < 0) return STRAND_OK;
    int status = STRAND_OK;
    char what[160];
    snprintf(what, sizeof what, "cannot read attribute '%s'", name);
    file_type = H5Aget_type(attribute);
    space = H5Aget_space(attribute);
    if (file_type < 0 || space < 0) goto fail;
    if (H5Tget_class(file_type) != H5T_STRING || H5Sget_simple_extent_npoints(space) != 1) {
        status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__, "%s: attribute '%s' is not a string",
                                  path, name);
        goto done;
    }
    htri_t variable = H5Tis_variable_str(file_type);
    if (variable < 0) goto fail;
    memory_type = H5Tcopy(H5T_C_S1);
    if (memory_type < 0) goto fail;
    if (variable) {
        char *text = NULL;
        if (H5Tset_size(memory_type, H5T_VARIABLE) < 0 || H5Aread(attribute, memory_type, &text) < 0)
            goto fail;
        if (capacity > 0) snprintf(value, capacity, "%s", text ? text : "");
        H5free_memory(text);
    } else {
        size_t size = H5Tget_size(file_type);
        char *text = calloc(size + 1, 1);
        if (!text) {
            status =
                strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__, "out of memory reading '%s'", name);
            goto done;
        }
        if (H5Tset_size(memory_type, size + 1) < 0 || H5Tset_strpad(memory_type, H5T_STR_NULLTERM) < 0 ||
            H5Aread(attribute, memory_type, text) < 0) {
            free(text);
            goto fail;
        }
        if (capacity > 0) snprintf(value, capacity, "%s", text);
        free(text);
    }
    *found = 1;
    goto done;
fail:
    status = strand_h5_error(__FILE__, __LINE__, path, what);
done:
    strand_h5_close(&memory_type);
    strand_h5_close(&file_type);
    strand_h5_close(&space);
    strand_h5_close(&attribute);
    return status;
}

int strand_h5_read_int_attribute(hid_t object, const char *name, int64_t *value, int *found,
                                 const char *path) {
    hid_t attribute, file_type = H5I_INVALID_HID, space = H5I_INVALID_HID;
    *found = 0;
    STRAND_CALL(open_attribute(object, name, &attribute, path));
    if (attribute < 0) return STRAND_OK;
    int status = STRAND_OK;
    file_type = H5Aget_type(attribute);
    space = H5Aget_space(attribute);
    if (file_type < 0 || space < 0) {
        status = strand_h5_error(__FILE__, __LINE__, path, "cannot read an attribute");
    } else if (H5Tget_class(file_type) != H5T_INTEGER || H5Sget_simple_extent_npoints(space) != 1) {
        status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                  "%s: attribute '%s' is not an integer", path, name);
    } else if (H5Aread(attribute, H5T_NATIVE_INT64, value) < 0) {
        status = strand_h5_error(__FILE__, __LINE__, path, "cannot read an integer attribute");
    } else {
        *found = 1;
    }
    strand_h5_close(&file_type);
    strand_h5_close(&space);
    strand_h5_close(&attribute);
    return status;
}

/* ---- opening and validating ---- */

/* Serial checks with a clear message before HDF5 sees the file. */
static int precheck(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) STRAND_FAIL(STRAND_ERR_INPUT, "%s: no such file", path);
        STRAND_FAIL(STRAND_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode)) STRAND_FAIL(STRAND_ERR_INPUT, "%s: is a directory, not a dataset file", path);
    FILE *file = fopen(path, "rb");
    if (!file) STRAND_FAIL(STRAND_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    fclose(file);
    strand_h5_quiet();
    htri_t is_hdf5 = H5Fis_hdf5(path);
    H5Eclear2(H5E_DEFAULT);
    if (is_hdf5 <= 0) STRAND_FAIL(STRAND_ERR_INPUT, "%s: not an HDF5 file or corrupt", path);
    return STRAND_OK;
}

static int open_file(const char *path, hid_t fapl, hid_t *file) {
    /* Strong close: closing the file also closes anything a failed path left open. */
    if (H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0)
        STRAND_H5_FAIL(path, "cannot set file access properties");
    *file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (*file < 0) {
        char detail[256] = "";
        H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost_error, detail);
        H5Eclear2(H5E_DEFAULT);
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: not an HDF5 file or corrupt (HDF5: %s)", path, detail);
    }
    return STRAND_OK;
}

/* Open dataset `name` with its extent; *rank and dims[2] are filled. */
static int open_table(hid_t file, const char *name, const char *path, hid_t *dataset, int *rank,
                      hsize_t dims[2], int want_integer) {
    *dataset = H5I_INVALID_HID;
    htri_t exists = H5Lexists(file, name, H5P_DEFAULT);
    if (exists < 0) STRAND_H5_FAIL(path, "cannot look up a dataset");
    if (!exists)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: missing dataset %s (not a complete strand dataset)", path, name);
    *dataset = H5Dopen2(file, name, H5P_DEFAULT);
    if (*dataset < 0) STRAND_H5_FAIL(path, "cannot open a dataset");
    hid_t space = H5Dget_space(*dataset), type = H5Dget_type(*dataset);
    int status = STRAND_OK;
    if (space < 0 || type < 0) {
        status = strand_h5_error(__FILE__, __LINE__, path, "cannot read the shape of a dataset");
    } else {
        *rank = H5Sget_simple_extent_ndims(space);
        if (*rank < 1 || *rank > 2 || H5Sget_simple_extent_dims(space, dims, NULL) < 0)
            status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                      "%s: dataset %s has an unexpected shape", path, name);
        else if (want_integer && H5Tget_class(type) != H5T_INTEGER)
            status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                      "%s: dataset %s is not an integer array", path, name);
        else if (!want_integer && H5Tget_class(type) != H5T_STRING)
            status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                      "%s: dataset %s is not a string array", path, name);
    }
    strand_h5_close(&space);
    strand_h5_close(&type);
    if (status != STRAND_OK) strand_h5_close(dataset);
    return status;
}

/* Read a whole integer dataset of `count` elements (any shape) as int64. */
static int read_int64(hid_t file, const char *name, const char *path, int64_t *out, int64_t count) {
    hid_t dataset;
    int rank = 0;
    hsize_t dims[2];
    STRAND_CALL(open_table(file, name, path, &dataset, &rank, dims, 1));
    int status = STRAND_OK;
    if (count > 0 && H5Dread(dataset, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
        status = strand_h5_error(__FILE__, __LINE__, path, "cannot read a table");
    strand_h5_close(&dataset);
    return status;
}

/* from into to[width]: cut to fit, or with `whole` refused when it does not fit. */
static int copy_string(char *to, size_t width, const char *from, int whole, const char *path,
                       const char *name, int64_t index) {
    size_t length = strlen(from);
    if (whole && length >= width)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: %s entry %" PRId64 " is %zu bytes, longer than the %zu-byte limit",
                    path, name, index, length, width - 1);
    if (length >= width) length = width - 1;
    memcpy(to, from, length);
    to[length] = '\0';
    return STRAND_OK;
}

/* Read a 1-D string dataset of `count` strings into out, `width` bytes per string. Longer strings
 * are cut to width - 1 bytes, or, with `whole`, refused: record names must never be cut, or two
 * names sharing their first bytes would become one. */
static int read_strings(hid_t file, const char *name, const char *path, char *out, size_t width,
                        int64_t count, int whole) {
    hid_t dataset, file_type = H5I_INVALID_HID, memory_type = H5I_INVALID_HID, space = H5I_INVALID_HID;
    int rank = 0;
    hsize_t dims[2];
    STRAND_CALL(open_table(file, name, path, &dataset, &rank, dims, 0));
    int status = STRAND_OK;
    char *fixed = NULL;
    char **variable = NULL;
    if (count == 0) goto done;
    file_type = H5Dget_type(dataset);
    space = H5Dget_space(dataset);
    memory_type = H5Tcopy(H5T_C_S1);
    if (file_type < 0 || space < 0 || memory_type < 0) goto fail;
    htri_t is_variable = H5Tis_variable_str(file_type);
    if (is_variable < 0) goto fail;
    if (is_variable) {
        variable = calloc((size_t)count, sizeof *variable);
        if (!variable) goto nomem;
        if (H5Tset_size(memory_type, H5T_VARIABLE) < 0 ||
            H5Dread(dataset, memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, variable) < 0)
            goto fail;
        for (int64_t i = 0; i < count && status == STRAND_OK; i++)
            status = copy_string(out + (size_t)i * width, width, variable[i] ? variable[i] : "", whole, path,
                                 name, i);
        H5Dvlen_reclaim(memory_type, space, H5P_DEFAULT, variable);
    } else {
        size_t size = H5Tget_size(file_type) + 1;
        fixed = calloc((size_t)count, size);
        if (!fixed) goto nomem;
        if (H5Tset_size(memory_type, size) < 0 || H5Tset_strpad(memory_type, H5T_STR_NULLTERM) < 0 ||
            H5Dread(dataset, memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, fixed) < 0)
            goto fail;
        for (int64_t i = 0; i < count && status == STRAND_OK; i++)
            status =
                copy_string(out + (size_t)i * width, width, fixed + (size_t)i * size, whole, path, name, i);
    }
    goto done;
nomem:
    status =
        strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__, "%s: out of memory reading %s", path, name);
    goto done;
fail:
    status = strand_h5_error(__FILE__, __LINE__, path, "cannot read a table of strings");
done:
    free(fixed);
    free(variable);
    strand_h5_close(&memory_type);
    strand_h5_close(&file_type);
    strand_h5_close(&space);
    strand_h5_close(&dataset);
    return status;
}

static int check_ranges(const strand_dataset *ds, const char *name, const int64_t *offsets,
                        const int64_t *lengths, int64_t count, ptrdiff_t stride) {
    for (int64_t i = 0; i < count; i++) {
        int64_t offset = offsets[i * stride], length = lengths[i * stride];
        if (offset < 0 || length < 0 || offset > ds->n_tokens || length > ds->n_tokens - offset)
            STRAND_FAIL(STRAND_ERR_INPUT,
                        "%s: %s entry %" PRId64 " (offset %" PRId64 ", length %" PRId64
                        ") lies outside /tokens (%" PRId64 " tokens)",
                        ds->path, name, i, offset, length, ds->n_tokens);
    }
    return STRAND_OK;
}

static int load_split(strand_dataset *ds, const char *name, strand_token_range **ranges, int64_t *n) {
    hid_t dataset;
    int rank = 0;
    hsize_t dims[2] = {0, 0};
    STRAND_CALL(open_table(ds->file, name, ds->path, &dataset, &rank, dims, 1));
    strand_h5_close(&dataset);
    if (rank != 2 || dims[1] != 2)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: %s must have shape (n, 2) of (offset, length)", ds->path, name);
    *n = (int64_t)dims[0];
    STRAND_ALLOC(*ranges, *n, "a split table");
    _Static_assert(sizeof(strand_token_range) == 2 * sizeof(int64_t), "range is two int64");
    STRAND_CALL(read_int64(ds->file, name, ds->path, (int64_t *)*ranges, 2 * *n));
    return check_ranges(ds, name, &(*ranges)[0].offset, &(*ranges)[0].length, *n, 2);
}

/* What /tokens' storage says about its integrity: Fletcher32 in its filter pipeline (strand prep
 * writes it; older files have deflate alone) and its fill value, what HDF5 returns for data it
 * cannot find. */
static int load_tokens_storage(strand_dataset *ds) {
    hid_t dcpl = H5Dget_create_plist(ds->tokens);
    if (dcpl < 0) STRAND_H5_FAIL(ds->path, "cannot read the storage properties of /tokens");
    int status = STRAND_OK, n_filters = H5Pget_nfilters(dcpl);
    ds->tokens_checksummed = 0;
    ds->tokens_fill = -1;
    for (int k = 0; k < n_filters; k++) {
        unsigned flags = 0;
        size_t n_values = 0;
        if (H5Pget_filter2(dcpl, (unsigned)k, &flags, &n_values, NULL, 0, NULL, NULL) ==
            H5Z_FILTER_FLETCHER32)
            ds->tokens_checksummed = 1;
    }
    H5D_fill_value_t defined = H5D_FILL_VALUE_UNDEFINED;
    uint32_t fill = 0;
    if (n_filters < 0 || H5Pfill_value_defined(dcpl, &defined) < 0)
        status =
            strand_h5_error(__FILE__, __LINE__, ds->path, "cannot read the storage properties of /tokens");
    else if (defined != H5D_FILL_VALUE_UNDEFINED && H5Pget_fill_value(dcpl, H5T_NATIVE_UINT32, &fill) >= 0)
        ds->tokens_fill = fill;
    H5Eclear2(H5E_DEFAULT);
    strand_h5_close(&dcpl);
    return status;
}

/* /loss_mask, when present: one uint8 per token. Absent means every target counts. */
static int load_mask(strand_dataset *ds) {
    htri_t exists = H5Lexists(ds->file, "/loss_mask", H5P_DEFAULT);
    H5Eclear2(H5E_DEFAULT);
    if (exists <= 0) return STRAND_OK;
    int rank = 0;
    hsize_t dims[2] = {0, 0};
    STRAND_CALL(open_table(ds->file, "/loss_mask", ds->path, &ds->mask, &rank, dims, 1));
    if (rank != 1 || (int64_t)dims[0] != ds->n_tokens)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: /loss_mask must be 1-D with one entry per token (%" PRId64 ")",
                    ds->path, ds->n_tokens);
    return STRAND_OK;
}

/* Validate an open file and read its tables into `ds` (ds->file set, ds->path set). */
static int load(strand_dataset *ds) {
    const char *path = ds->path;
    int64_t version = 0, tokenizer_version = 0, vocab = 0;
    int found = 0;
    char tokenizer[128];
    STRAND_CALL(strand_h5_read_int_attribute(ds->file, "format_version", &version, &found, path));
    if (!found)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: missing root attribute 'format_version' (not a strand dataset)",
                    path);
    if (version != STRAND_DATASET_FORMAT_VERSION)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: dataset format version %" PRId64 ", this strand reads %d", path,
                    version, STRAND_DATASET_FORMAT_VERSION);
    STRAND_CALL(
        strand_h5_read_string_attribute(ds->file, "tokenizer", tokenizer, sizeof tokenizer, &found, path));
    if (!found) STRAND_FAIL(STRAND_ERR_INPUT, "%s: missing root attribute 'tokenizer'", path);
    STRAND_CALL(
        strand_h5_read_int_attribute(ds->file, "tokenizer_version", &tokenizer_version, &found, path));
    if (!found) STRAND_FAIL(STRAND_ERR_INPUT, "%s: missing root attribute 'tokenizer_version'", path);
    /* Task datasets (strand prep --task) name their own tokenizer "task:<name>" with its own
     * vocabulary; only its version is fixed. */
    const int is_task =
        strncmp(tokenizer, STRAND_TASK_TOKENIZER_PREFIX, strlen(STRAND_TASK_TOKENIZER_PREFIX)) == 0;
    if (is_task && tokenizer_version != STRAND_TASK_TOKENIZER_VERSION)
        STRAND_FAIL(STRAND_ERR_INPUT,
                    "%s: dataset tokenizer '%s' version %" PRId64 ", this strand reads version %d", path,
                    tokenizer, tokenizer_version, STRAND_TASK_TOKENIZER_VERSION);
    if (!is_task && tokenizer_version != STRAND_TOKENIZER_VERSION)
        STRAND_FAIL(STRAND_ERR_INPUT,
                    "%s: dataset tokenizer '%s' version %" PRId64 ", this strand uses version %d", path,
                    tokenizer, tokenizer_version, STRAND_TOKENIZER_VERSION);
    STRAND_CALL(strand_h5_read_int_attribute(ds->file, "vocab_size", &vocab, &found, path));
    if (!found) STRAND_FAIL(STRAND_ERR_INPUT, "%s: missing root attribute 'vocab_size'", path);
    if (vocab < 1 || vocab > STRAND_VOCAB_MAX)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: vocabulary size %" PRId64 " outside 1..%d", path, vocab,
                    STRAND_VOCAB_MAX);
    /* A DNA tokenizer checks its own name, vocabulary and merges; a task's tokens are one base each. */
    if (!is_task) STRAND_CALL(strand_tokenizer_read(ds->file, &ds->codec, path));
    ds->vocab_size = (int)vocab;
    snprintf(ds->tokenizer, sizeof ds->tokenizer, "%s", tokenizer);
    ds->token_bases = malloc(sizeof *ds->token_bases * (size_t)vocab);
    if (!ds->token_bases) STRAND_FAIL(STRAND_ERR_NOMEM, "%s: out of memory for the vocabulary", path);
    for (int64_t v = 0; v < vocab; v++)
        ds->token_bases[v] = is_task ? 1 : ds->codec.token_bases[v];

    int rank = 0;
    hsize_t dims[2] = {0, 0};
    STRAND_CALL(open_table(ds->file, "/tokens", path, &ds->tokens, &rank, dims, 1));
    hid_t type = H5Dget_type(ds->tokens);
    size_t type_size = type >= 0 ? H5Tget_size(type) : 0;
    strand_h5_close(&type);
    if (rank != 1 || (type_size != 1 && type_size != 2 && type_size != 4))
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: /tokens must be a 1-D array of 8-, 16- or 32-bit integers", path);
    ds->token_bytes = (int)type_size;
    ds->n_tokens = (int64_t)dims[0];
    STRAND_CALL(load_tokens_storage(ds));

    hid_t names;
    STRAND_CALL(open_table(ds->file, "/records/name", path, &names, &rank, dims, 0));
    strand_h5_close(&names);
    if (rank != 1) STRAND_FAIL(STRAND_ERR_INPUT, "%s: /records/name must be 1-D", path);
    ds->n_records = (int64_t)dims[0];
    STRAND_ALLOC(ds->record_names, ds->n_records, "record names");
    STRAND_ALLOC(ds->record_offsets, ds->n_records, "record offsets");
    STRAND_ALLOC(ds->record_lengths, ds->n_records, "record lengths");
    STRAND_CALL(read_strings(ds->file, "/records/name", path, ds->record_names[0], sizeof ds->record_names[0],
                             ds->n_records, 1));
    const char *columns[2] = {"/records/offset", "/records/length"};
    int64_t *targets[2] = {ds->record_offsets, ds->record_lengths};
    for (int c = 0; c < 2; c++) {
        hid_t column;
        STRAND_CALL(open_table(ds->file, columns[c], path, &column, &rank, dims, 1));
        strand_h5_close(&column);
        if (rank != 1 || (int64_t)dims[0] != ds->n_records)
            STRAND_FAIL(STRAND_ERR_INPUT, "%s: %s must have one entry per record (%" PRId64 ")", path,
                        columns[c], ds->n_records);
        STRAND_CALL(read_int64(ds->file, columns[c], path, targets[c], ds->n_records));
    }
    STRAND_CALL(check_ranges(ds, "/records", ds->record_offsets, ds->record_lengths, ds->n_records, 1));
    /* Bases per record: written since tokenizers other than nucleotide; before, one per token. */
    ds->n_bases = ds->n_tokens;
    htri_t has_bases = H5Lexists(ds->file, "/records/bases", H5P_DEFAULT);
    H5Eclear2(H5E_DEFAULT);
    if (has_bases > 0 && ds->n_records > 0) {
        int64_t *bases = malloc(sizeof *bases * (size_t)ds->n_records);
        if (!bases) STRAND_FAIL(STRAND_ERR_NOMEM, "%s: out of memory for /records/bases", path);
        int status = read_int64(ds->file, "/records/bases", path, bases, ds->n_records);
        ds->n_bases = 0;
        for (int64_t r = 0; r < ds->n_records && status == STRAND_OK; r++)
            ds->n_bases += bases[r];
        free(bases);
        STRAND_CALL(status);
    }
    STRAND_CALL(load_split(ds, "/split/train", &ds->train, &ds->n_train));
    STRAND_CALL(load_split(ds, "/split/val", &ds->val, &ds->n_val));
    STRAND_CALL(load_mask(ds));
    int64_t record_windows = 0;
    STRAND_CALL(strand_h5_read_int_attribute(ds->file, "record_windows", &record_windows, &found, path));
    ds->record_windows = found && record_windows != 0;
    return STRAND_OK;
}

static void reset(strand_dataset *ds) {
    memset(ds, 0, sizeof *ds);
    ds->file = ds->tokens = ds->mask = H5I_INVALID_HID;
}

/* Open with `fapl` (owned: closed here) and load; on failure everything is released. */
static int open_with(strand_dataset *ds, const char *path, hid_t fapl) {
    int status = open_file(path, fapl, &ds->file);
    strand_h5_close(&fapl);
    if (status == STRAND_OK) status = load(ds);
    return status;
}

int strand_dataset_open(strand_dataset *ds, const char *path, MPI_Comm comm) {
    reset(ds);
    int rank = 0;
    STRAND_CALL_MPI(MPI_Comm_rank(comm, &rank));
    if (strlen(path) >= sizeof ds->path) {
        /* The same on every rank: no agreement needed. */
        STRAND_FAIL(STRAND_ERR_INPUT, "dataset path longer than %zu characters", sizeof ds->path - 1);
    }
    snprintf(ds->path, sizeof ds->path, "%s", path);
    strand_h5_quiet();
    /* Every rank opens the file itself before the collective H5Fopen: a file missing, unreadable
     * or another copy on one node is named here, and every byte is verified before HDF5 parses
     * it (each rank checksums a slice). */
    strand_filesum_info sum;
    STRAND_CALL(strand_filesum_verify_parallel(path, comm, &sum));
    STRAND_CALL(strand_agree(comm, precheck(path)));

    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    int status = STRAND_OK;
    if (fapl < 0 || H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL) < 0) {
        strand_h5_close(&fapl);
        status = strand_h5_error(__FILE__, __LINE__, path, "cannot set up MPI-IO file access");
    } else {
        status = open_file(path, fapl, &ds->file);
        strand_h5_close(&fapl);
    }
    /* H5Fopen is collective: agree before anyone reads, so a failure on one rank cannot strand
     * the others in a later collective call. */
    status = strand_agree(comm, status);
    if (status == STRAND_OK) status = strand_agree(comm, load(ds));
    ds->file_checksummed = sum.present;
    if (status != STRAND_OK) {
        strand_dataset_close(ds); /* collective H5Fclose on every rank that opened; keeps the message */
        return status;
    }
    /* A bigger chunk cache than HDF5's 1 MiB default: windows are read from several chunks. */
    hid_t dapl = H5Dget_access_plist(ds->tokens);
    if (dapl >= 0) {
        H5Pset_chunk_cache(dapl, READ_CACHE_SLOTS, READ_CACHE_BYTES, 1.0);
        hid_t reopened = H5Dopen2(ds->file, "/tokens", dapl);
        if (reopened >= 0) {
            strand_h5_close(&ds->tokens);
            ds->tokens = reopened;
        }
        strand_h5_close(&dapl);
        H5Eclear2(H5E_DEFAULT);
    }
    return STRAND_OK;
}

/* Tokens [offset, offset + count) into out. On failure returns -1 with HDF5's innermost message
 * in detail[256] (taken before the cleanup calls, which clear HDF5's error stack). */
static int read_span(const strand_dataset *ds, int64_t offset, int64_t count, strand_token_t *out,
                     char *detail) {
    hsize_t start = (hsize_t)offset, n = (hsize_t)count;
    hid_t file_space = H5Dget_space(ds->tokens);
    hid_t memory_space = H5Screate_simple(1, &n, NULL);
    /* Default transfer properties are independent I/O, also under the MPI-IO driver; they verify
     * Fletcher32 checksums. HDF5 widens the tokens of an 8-bit file. */
    int failed = file_space < 0 || memory_space < 0 ||
                 H5Sselect_hyperslab(file_space, H5S_SELECT_SET, &start, NULL, &n, NULL) < 0 ||
                 H5Dread(ds->tokens, H5T_NATIVE_UINT32, memory_space, file_space, H5P_DEFAULT, out) < 0;
    detail[0] = '\0';
    if (failed) H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost_error, detail);
    H5Eclear2(H5E_DEFAULT);
    strand_h5_close(&memory_space);
    strand_h5_close(&file_space);
    return failed ? -1 : 0;
}

/* A read failed with `detail`: name the first chunk that cannot be read on its own (a failed
 * checksum, a broken zlib stream), or the whole range when none does. */
static int read_failure(const strand_dataset *ds, int64_t offset, int64_t count, strand_token_t *out,
                        const char *detail) {
    hsize_t chunk = 0;
    hid_t dcpl = H5Dget_create_plist(ds->tokens);
    int chunked = dcpl >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_chunk(dcpl, 1, &chunk) == 1;
    strand_h5_close(&dcpl);
    H5Eclear2(H5E_DEFAULT);
    for (int64_t c = chunked && chunk > 0 ? offset / (int64_t)chunk : 0; chunked && chunk > 0; c++) {
        int64_t first = c * (int64_t)chunk, end = first + (int64_t)chunk;
        if (first >= offset + count) break;
        int64_t from = first > offset ? first : offset, to = end < offset + count ? end : offset + count;
        char why[256];
        if (read_span(ds, from, to - from, out + (from - offset), why) != 0)
            STRAND_FAIL(
                STRAND_ERR_IO,
                "%s: /tokens chunk %" PRId64 " (tokens [%" PRId64 ", %" PRId64 ")) cannot be read (HDF5: %s)",
                ds->path, c, first, end < ds->n_tokens ? end : ds->n_tokens, why[0] ? why : "no detail");
    }
    STRAND_FAIL(STRAND_ERR_IO, "%s: cannot read tokens [%" PRId64 ", %" PRId64 ") of /tokens (HDF5: %s)",
                ds->path, offset, offset + count, detail[0] ? detail : "no detail");
}

/* Every value must be a token: anything else (corruption, or the fill value where HDF5 has no
 * data) would index past the model's embedding table. One max over the buffer, which the
 * compiler vectorises; the position is looked for only when something is wrong. */
static int check_tokens(const strand_dataset *ds, int64_t offset, const strand_token_t *tokens,
                        int64_t count) {
    strand_token_t largest = 0;
    for (int64_t i = 0; i < count; i++)
        largest = tokens[i] > largest ? tokens[i] : largest;
    if (largest < (strand_token_t)ds->vocab_size) return STRAND_OK;
    int64_t i = 0;
    while (tokens[i] < (strand_token_t)ds->vocab_size)
        i++;
    if ((int64_t)tokens[i] == ds->tokens_fill)
        STRAND_FAIL(STRAND_ERR_INPUT,
                    "%s: /tokens offset %" PRId64 ": value %u is not a token but the fill value of /tokens, "
                    "which HDF5 returns where it finds no data (a damaged chunk index, or /tokens grown past "
                    "what prep wrote): the dataset is corrupt",
                    ds->path, offset + i, tokens[i]);
    STRAND_FAIL(STRAND_ERR_INPUT,
                "%s: /tokens offset %" PRId64
                ": value %u is not a token (the vocabulary is 0..%d): the dataset is corrupt",
                ds->path, offset + i, tokens[i], ds->vocab_size - 1);
}

int strand_dataset_read(strand_dataset *ds, int64_t offset, int64_t count, strand_token_t *out) {
    if (offset < 0 || count < 0 || offset > ds->n_tokens || count > ds->n_tokens - offset)
        STRAND_FAIL(STRAND_ERR_INPUT,
                    "%s: read of tokens [%" PRId64 ", %" PRId64 ") outside [0, %" PRId64 ")", ds->path,
                    offset, offset + count, ds->n_tokens);
    if (count == 0) return STRAND_OK;
    char detail[256];
    if (read_span(ds, offset, count, out, detail) != 0) return read_failure(ds, offset, count, out, detail);
    return check_tokens(ds, offset, out, count);
}

int strand_dataset_is_task(const strand_dataset *ds) {
    return strncmp(ds->tokenizer, STRAND_TASK_TOKENIZER_PREFIX, strlen(STRAND_TASK_TOKENIZER_PREFIX)) == 0;
}

int strand_dataset_read_mask(strand_dataset *ds, int64_t offset, int64_t count, real_t *out) {
    if (offset < 0 || count < 0 || offset > ds->n_tokens || count > ds->n_tokens - offset)
        STRAND_FAIL(STRAND_ERR_INPUT,
                    "%s: read of /loss_mask [%" PRId64 ", %" PRId64 ") outside [0, %" PRId64 ")", ds->path,
                    offset, offset + count, ds->n_tokens);
    if (ds->mask <= 0 || count == 0) {
        for (int64_t i = 0; i < count; i++)
            out[i] = 1;
        return STRAND_OK;
    }
    uint8_t *bytes = strand_alloc((size_t)count, "a loss mask block");
    if (!bytes) return STRAND_ERR_NOMEM;
    hsize_t start = (hsize_t)offset, n = (hsize_t)count;
    hid_t file_space = H5Dget_space(ds->mask), memory_space = H5Screate_simple(1, &n, NULL);
    int failed = file_space < 0 || memory_space < 0 ||
                 H5Sselect_hyperslab(file_space, H5S_SELECT_SET, &start, NULL, &n, NULL) < 0 ||
                 H5Dread(ds->mask, H5T_NATIVE_UINT8, memory_space, file_space, H5P_DEFAULT, bytes) < 0;
    strand_h5_close(&memory_space);
    strand_h5_close(&file_space);
    int status = STRAND_OK;
    if (failed) {
        status = strand_h5_error(__FILE__, __LINE__, ds->path, "cannot read /loss_mask (a damaged chunk?)");
    } else {
        for (int64_t i = 0; i < count && status == STRAND_OK; i++) {
            if (bytes[i] > 1)
                status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                          "%s: /loss_mask offset %" PRId64
                                          ": value %u is not 0 or 1: the dataset is corrupt",
                                          ds->path, offset + i, bytes[i]);
            out[i] = (real_t)bytes[i];
        }
    }
    strand_free(bytes);
    return status;
}

void strand_dataset_close(strand_dataset *ds) {
    /* A zeroed struct has ids 0, which are never valid HDF5 ids. */
    if (ds->tokens > 0) strand_h5_close(&ds->tokens);
    if (ds->mask > 0) strand_h5_close(&ds->mask);
    if (ds->file > 0) strand_h5_close(&ds->file);
    strand_free(ds->record_names);
    strand_free(ds->record_offsets);
    strand_free(ds->record_lengths);
    strand_free(ds->train);
    strand_free(ds->val);
    free(ds->token_bases);
    strand_tokenizer_free(&ds->codec);
    reset(ds);
}

/* ---- strand info ---- */

int strand_dataset_probe(const char *path, int *is_dataset) {
    *is_dataset = 0;
    STRAND_CALL(precheck(path));
    hid_t file = H5I_INVALID_HID, fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) STRAND_H5_FAIL(path, "cannot create file access properties");
    int status = open_file(path, fapl, &file);
    strand_h5_close(&fapl);
    if (status != STRAND_OK) return status;
    htri_t has_version = H5Aexists(file, "format_version");
    htri_t has_tokens = H5Lexists(file, "/tokens", H5P_DEFAULT);
    H5Eclear2(H5E_DEFAULT);
    *is_dataset = has_version > 0 && has_tokens > 0;
    strand_h5_close(&file);
    return STRAND_OK;
}

static void print_count(const char *label, int64_t value) {
    /* Thousands separators make genome lengths readable. */
    char digits[32], grouped[48];
    int n = snprintf(digits, sizeof digits, "%" PRId64, value < 0 ? -value : value), j = 0;
    if (value < 0) grouped[j++] = '-';
    for (int i = 0; i < n; i++) {
        if (i > 0 && (n - i) % 3 == 0) grouped[j++] = ',';
        grouped[j++] = digits[i];
    }
    grouped[j] = '\0';
    printf("%s%s", label, grouped);
}

static int64_t range_tokens(const strand_token_range *ranges, int64_t n) {
    int64_t total = 0;
    for (int64_t i = 0; i < n; i++)
        total += ranges[i].length;
    return total;
}

static int print_sources(const strand_dataset *ds) {
    htri_t exists = H5Lexists(ds->file, "/sources", H5P_DEFAULT);
    if (exists <= 0) {
        H5Eclear2(H5E_DEFAULT);
        printf("sources: (not recorded)\n");
        return STRAND_OK;
    }
    hid_t dataset;
    int rank = 0;
    hsize_t dims[2] = {0, 0};
    STRAND_CALL(open_table(ds->file, "/sources/path", ds->path, &dataset, &rank, dims, 0));
    strand_h5_close(&dataset);
    int64_t n = (int64_t)dims[0];
    char(*paths)[1024] = NULL, (*hashes)[128] = NULL;
    int64_t *sizes = NULL;
    int status = STRAND_OK;
    paths = strand_alloc((size_t)n * sizeof *paths, "source paths");
    hashes = strand_alloc((size_t)n * sizeof *hashes, "source hashes");
    sizes = strand_alloc((size_t)n * sizeof *sizes, "source sizes");
    if (!paths || !hashes || !sizes) {
        status = STRAND_ERR_NOMEM;
        goto done;
    }
    STRAND_CALL_GOTO(status, done,
                     read_strings(ds->file, "/sources/path", ds->path, paths[0], sizeof paths[0], n, 0));
    STRAND_CALL_GOTO(status, done,
                     read_strings(ds->file, "/sources/sha256", ds->path, hashes[0], sizeof hashes[0], n, 0));
    STRAND_CALL_GOTO(status, done, read_int64(ds->file, "/sources/size", ds->path, sizes, n));
    printf("sources: %" PRId64 "\n", n);
    for (int64_t i = 0; i < n; i++) {
        printf("  %s  ", paths[i]);
        print_count("", sizes[i]);
        printf(" bytes  sha256 %s\n", hashes[i]);
    }
done:
    strand_free(paths);
    strand_free(hashes);
    strand_free(sizes);
    return status;
}

static int print_composition(strand_dataset *ds) {
    strand_token_t *block = strand_alloc(sizeof *block * INFO_BLOCK, "a token block");
    if (!block) return STRAND_ERR_NOMEM;
    int64_t counts[5] = {0}, specials = 0;
    int status = STRAND_OK;
    const strand_tokenizer *codec = &ds->codec;
    for (int64_t offset = 0; offset < ds->n_tokens; offset += INFO_BLOCK) {
        int64_t count = ds->n_tokens - offset < INFO_BLOCK ? ds->n_tokens - offset : INFO_BLOCK;
        STRAND_CALL_GOTO(status, done, strand_dataset_read(ds, offset, count, block));
        /* Bases by letter: a token's letters are its text in the tokenizer's table. */
        for (int64_t i = 0; i < count; i++) {
            const strand_token_t token = block[i];
            specials += codec->token_bases[token] == 0;
            for (int64_t c = codec->text_offset[token]; c < codec->text_offset[token + 1]; c++)
                counts[strand_fasta_token_of((unsigned char)codec->text[c])]++;
        }
    }
    const int64_t bases = counts[0] + counts[1] + counts[2] + counts[3] + counts[4];
    print_count("bases: ", bases);
    printf(", mean %.4f bases per token (compression %.4fx against one token per base)\n",
           ds->n_tokens > 0 ? (double)bases / (double)ds->n_tokens : 0.0,
           ds->n_tokens > 0 ? (double)bases / (double)ds->n_tokens : 0.0);
    double total = bases > 0 ? (double)bases : 1.0;
    printf("composition: A %.4f  C %.4f  G %.4f  T %.4f  N %.4f", (double)counts[0] / total,
           (double)counts[1] / total, (double)counts[2] / total, (double)counts[3] / total,
           (double)counts[4] / total);
    if (specials > 0) print_count("  special tokens ", specials);
    printf("  GC %.4f\n", (double)(counts[1] + counts[2]) / total);
done:
    strand_free(block);
    return status;
}

/* The loss mask's share of positions (a task dataset's answers). */
static int print_mask(strand_dataset *ds) {
    real_t *block = strand_alloc(sizeof *block * INFO_BLOCK, "a mask block");
    if (!block) return STRAND_ERR_NOMEM;
    int64_t masked = 0;
    int status = STRAND_OK;
    for (int64_t offset = 0; offset < ds->n_tokens; offset += INFO_BLOCK) {
        int64_t count = ds->n_tokens - offset < INFO_BLOCK ? ds->n_tokens - offset : INFO_BLOCK;
        STRAND_CALL_GOTO(status, done, strand_dataset_read_mask(ds, offset, count, block));
        for (int64_t i = 0; i < count; i++)
            masked += block[i] != 0;
    }
    printf("loss mask: %s, ", ds->mask > 0 ? "/loss_mask" : "none (every target counts)");
    print_count("", masked);
    printf(" of ");
    print_count("", ds->n_tokens);
    printf(" positions count (masked fraction %.6f)%s\n",
           ds->n_tokens > 0 ? (double)masked / (double)ds->n_tokens : 0.0,
           ds->record_windows ? "; windows start at record starts" : "");
done:
    strand_free(block);
    return status;
}

/* Open on this process alone after verifying every byte; *sum says what the checksum covered. */
static int open_verified(strand_dataset *ds, const char *path, strand_filesum_info *sum) {
    reset(ds);
    if (strlen(path) >= sizeof ds->path) STRAND_FAIL(STRAND_ERR_INPUT, "dataset path too long");
    snprintf(ds->path, sizeof ds->path, "%s", path);
    /* every byte verified before HDF5 parses the file */
    STRAND_CALL(strand_filesum_verify(path, sum));
    STRAND_CALL(precheck(path));
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) STRAND_H5_FAIL(path, "cannot create file access properties");
    STRAND_CALL(open_with(ds, path, fapl));
    ds->file_checksummed = sum->present;
    return STRAND_OK;
}

int strand_dataset_open_serial(strand_dataset *ds, const char *path) {
    strand_filesum_info sum;
    return open_verified(ds, path, &sum);
}

int strand_dataset_print_info(const char *path) {
    strand_dataset ds;
    int status = STRAND_OK;
    strand_filesum_info sum;
    STRAND_CALL_GOTO(status, done, open_verified(&ds, path, &sum));
    char created_by[128], special[128], alphabet[64];
    int found = 0;
    STRAND_CALL_GOTO(
        status, done,
        strand_h5_read_string_attribute(ds.file, "created_by", created_by, sizeof created_by, &found, path));
    if (!found) snprintf(created_by, sizeof created_by, "(unknown)");
    STRAND_CALL_GOTO(
        status, done,
        strand_h5_read_string_attribute(ds.file, "special_tokens", special, sizeof special, &found, path));
    if (!found) snprintf(special, sizeof special, "(unknown)");
    STRAND_CALL_GOTO(
        status, done,
        strand_h5_read_string_attribute(ds.file, "alphabet", alphabet, sizeof alphabet, &found, path));
    if (!found) snprintf(alphabet, sizeof alphabet, "(unknown)");

    printf("%s: strand dataset, format version %d, created by %s\n", path, STRAND_DATASET_FORMAT_VERSION,
           created_by);
    if (strand_dataset_is_task(&ds)) {
        char symbols[512];
        STRAND_CALL_GOTO(
            status, done,
            strand_h5_read_string_attribute(ds.file, "symbols", symbols, sizeof symbols, &found, path));
        if (!found) snprintf(symbols, sizeof symbols, "(unknown)");
        printf("tokenizer: %s version %d, vocabulary %d, symbols %s\n", ds.tokenizer,
               STRAND_TASK_TOKENIZER_VERSION, ds.vocab_size, symbols);
    } else {
        printf("tokenizer: %s version %d, alphabet %s, vocabulary %d, special tokens %s\n", ds.tokenizer,
               STRAND_TOKENIZER_VERSION, alphabet, ds.vocab_size, special);
    }
    printf("tokens: %d-bit, %s\n", 8 * ds.token_bytes,
           ds.tokens_checksummed ? "Fletcher32 checksums per chunk"
                                 : "no per-chunk checksums (written by an older strand)");
    char checksum[160];
    strand_filesum_describe(&sum, checksum, sizeof checksum);
    printf("file checksum: %s\n", checksum);
    print_count("records: ", ds.n_records);
    print_count(", tokens: ", ds.n_tokens);
    printf("\n");
    int64_t train = range_tokens(ds.train, ds.n_train), val = range_tokens(ds.val, ds.n_val);
    print_count("split: train ", train);
    printf(" tokens in %" PRId64 " ranges, ", ds.n_train);
    print_count("val ", val);
    printf(" tokens in %" PRId64 " ranges\n", ds.n_val);
    for (int64_t i = 0; i < ds.n_records && i < INFO_RECORDS_SHOWN; i++) {
        printf("  %-32s ", ds.record_names[i]);
        print_count("", ds.record_lengths[i]);
        printf("\n");
    }
    if (ds.n_records > INFO_RECORDS_SHOWN)
        printf("  ... (%" PRId64 " more records)\n", ds.n_records - INFO_RECORDS_SHOWN);
    STRAND_CALL_GOTO(status, done, print_sources(&ds));
    if (strand_dataset_is_task(&ds))
        STRAND_CALL_GOTO(status, done, print_mask(&ds));
    else
        STRAND_CALL_GOTO(status, done, print_composition(&ds));
done:
    strand_dataset_close(&ds);
    return status;
}

/* Write every record's bases as FASTA (80 letters a line), decoding blocks of tokens. */
static int export_records(strand_dataset *ds, FILE *out) {
    const strand_tokenizer *codec = &ds->codec;
    int32_t longest = 1;
    for (int v = 0; v < codec->vocab_size; v++)
        longest = codec->token_bases[v] > longest ? codec->token_bases[v] : longest;
    strand_token_t *block = strand_alloc(sizeof *block * INFO_BLOCK, "a token block");
    char *letters = strand_alloc((size_t)INFO_BLOCK * (size_t)longest + 1, "decoded bases");
    int status = block && letters ? STRAND_OK : STRAND_ERR_NOMEM;
    for (int64_t r = 0; r < ds->n_records && status == STRAND_OK; r++) {
        if (fprintf(out, ">%s\n", ds->record_names[r]) < 0) break;
        int64_t column = 0;
        for (int64_t done = 0; done < ds->record_lengths[r] && status == STRAND_OK;) {
            const int64_t left = ds->record_lengths[r] - done, count = left < INFO_BLOCK ? left : INFO_BLOCK;
            status = strand_dataset_read(ds, ds->record_offsets[r] + done, count, block);
            const int64_t n = status == STRAND_OK ? strand_tokenizer_decode(codec, block, count, letters) : 0;
            for (int64_t i = 0; i < n; i++) {
                fputc(letters[i], out);
                if (++column == 80) fputc('\n', out), column = 0;
            }
            done += count;
        }
        if (column > 0) fputc('\n', out);
    }
    strand_free(block);
    strand_free(letters);
    STRAND_CALL(status);
    if (fflush(out) != 0 || ferror(out)) STRAND_FAIL(STRAND_ERR_IO, "cannot write the exported FASTA");
    return STRAND_OK;
}

int strand_dataset_export(const char *path, FILE *out) {
    strand_dataset ds;
    int status = strand_dataset_open_serial(&ds, path);
    if (status == STRAND_OK && strand_dataset_is_task(&ds))
        status =
            strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                             "%s holds task tokens (%s), not bases: nothing to export", path, ds.tokenizer);
    if (status == STRAND_OK) status = export_records(&ds, out);
    strand_dataset_close(&ds);
    return status;
}
