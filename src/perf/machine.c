/* The machine file: defaults, JSON read and write (cJSON), and the table lookups. */
#include "strand/perf.h"
#include "core/atomic_file.h"
#include "perf/calibrate_formulas.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MACHINE_FORMAT = 1, MACHINE_FILE_MAX = 1 << 20 };

/* One core of a 2020s x86 server (AVX2/AVX-512, DDR4/5, a shared-memory MPI and a local SSD).
 * Round numbers, not a measurement: `strand calibrate` replaces them. */
void strand_machine_default(strand_machine *m) {
    static const double widths[STRAND_MACHINE_GEMM_WIDTHS] = {16, 32, 64, 128, 256, 512, 1024};
    /* Thin GEMMs run far below peak: the narrow operand's reuse is small. */
    static const double gemm[STRAND_MACHINE_GEMM_WIDTHS] = {8, 15, 25, 35, 42, 46, 48};
    static const double fft_n[STRAND_MACHINE_FFT_SIZES] = {1 << 10, 1 << 13, 1 << 16, 1 << 19, 1 << 22};
    /* Per point grows with log n, then steps up once the transform leaves the caches. */
    static const double fft_real[STRAND_MACHINE_FFT_SIZES] = {1.0e-9, 1.3e-9, 1.7e-9, 2.5e-9, 4.0e-9};
    static const double fft_complex[STRAND_MACHINE_FFT_SIZES] = {2.0e-9, 2.6e-9, 3.4e-9, 5.0e-9, 8.0e-9};
    static const double dims[STRAND_MACHINE_ATTN_DIMS] = {32, 64, 128};
    static const double attn[STRAND_MACHINE_ATTN_DIMS] = {15, 22, 28};
    memset(m, 0, sizeof *m);
    snprintf(m->host, sizeof m->host, "default");
    snprintf(m->precision, sizeof m->precision, "%s", STRAND_REAL_NAME);
    m->ranks = 1, m->nodes = 1, m->cores_per_node = 32;
    m->memory_per_node_bytes = 256e9;
    m->sgemm_gflops = 50, m->sgemv_gflops = 5;
    for (int i = 0; i < STRAND_MACHINE_GEMM_WIDTHS; i++)
        m->gemm_width[i] = widths[i], m->gemm_gflops[i] = gemm[i];
    for (int i = 0; i < STRAND_MACHINE_FFT_SIZES; i++)
        m->fft_size[i] = fft_n[i], m->fft_real_s_per_point[i] = fft_real[i],
        m->fft_complex_s_per_point[i] = fft_complex[i];
    for (int i = 0; i < STRAND_MACHINE_ATTN_DIMS; i++)
        m->attn_head_dim[i] = dims[i], m->attn_gflops[i] = attn[i];
    m->memory_bytes_per_s = 10e9, m->transcendentals_per_s = 2e8;
    m->memory_node_bytes_per_s = 10e9, m->memory_node_ranks = 1; /* no sharing measured */
    m->compute_node_factor = 1;
    m->p2p_latency_s = 1e-6, m->p2p_bytes_per_s = 5e9;
    m->p2p_inter_latency_s = 0, m->p2p_inter_bytes_per_s = 0; /* one node */
    m->alltoall_bytes_per_s = 2e9, m->alltoall_ranks = 1;
    m->hdf5_write_bytes_per_s = 1e9, m->hdf5_read_bytes_per_s = 1e9;
    snprintf(m->io_dir, sizeof m->io_dir, ".");
}

/* ---- the fields, in file order ---- */

enum field_kind { F_STRING, F_INT, F_RATE, F_RATE0, F_TABLE, F_SIZES };

typedef struct {
    const char *name;
    int kind;
    size_t offset;
    int count; /* tables: entries; strings: capacity */
} field;

#define FIELD(kind, name, count)                                                                             \
    { #name, kind, offsetof(strand_machine, name), count }
static const field fields[] = {
    FIELD(F_STRING, host, 64),
    FIELD(F_STRING, precision, 8),
    FIELD(F_INT, ranks, 1),
    FIELD(F_INT, nodes, 1),
    FIELD(F_INT, cores_per_node, 1),
    FIELD(F_RATE, memory_per_node_bytes, 1),
    FIELD(F_RATE, sgemm_gflops, 1),
    FIELD(F_RATE, sgemv_gflops, 1),
    FIELD(F_SIZES, gemm_width, STRAND_MACHINE_GEMM_WIDTHS),
    FIELD(F_TABLE, gemm_gflops, STRAND_MACHINE_GEMM_WIDTHS),
    FIELD(F_SIZES, fft_size, STRAND_MACHINE_FFT_SIZES),
    FIELD(F_TABLE, fft_real_s_per_point, STRAND_MACHINE_FFT_SIZES),
    FIELD(F_TABLE, fft_complex_s_per_point, STRAND_MACHINE_FFT_SIZES),
    FIELD(F_SIZES, attn_head_dim, STRAND_MACHINE_ATTN_DIMS),
    FIELD(F_TABLE, attn_gflops, STRAND_MACHINE_ATTN_DIMS),
    FIELD(F_RATE, memory_bytes_per_s, 1),
    FIELD(F_RATE, transcendentals_per_s, 1),
    FIELD(F_RATE, memory_node_bytes_per_s, 1),
    FIELD(F_INT, memory_node_ranks, 1),
    FIELD(F_RATE, compute_node_factor, 1),
    FIELD(F_RATE, p2p_latency_s, 1),
    FIELD(F_RATE, p2p_bytes_per_s, 1),
    FIELD(F_RATE0, p2p_inter_latency_s, 1), /* 0: the calibration ran on one node */
    FIELD(F_RATE0, p2p_inter_bytes_per_s, 1),
    FIELD(F_RATE, alltoall_bytes_per_s, 1),
    FIELD(F_INT, alltoall_ranks, 1),
    FIELD(F_RATE, hdf5_write_bytes_per_s, 1),
    FIELD(F_RATE, hdf5_read_bytes_per_s, 1),
    FIELD(F_STRING, io_dir, 256),
};
#undef FIELD
enum { N_FIELDS = sizeof fields / sizeof *fields };

static double *field_doubles(strand_machine *m, const field *f) {
    return (double *)(void *)((char *)m + f->offset);
}

/* The checks a file must pass, applied to the struct (so a machine that could not be read back is
 * never written either). */
static int check_machine(const strand_machine *m, const char *path) {
    for (int i = 0; i < N_FIELDS; i++) {
        const field *f = &fields[i];
        const char *at = (const char *)m + f->offset;
        if (f->kind == F_INT) {
            int v;
            memcpy(&v, at, sizeof v);
            if (v < 1) STRAND_FAIL(STRAND_ERR_INPUT, "%s: %s must be >= 1, not %d", path, f->name, v);
            continue;
        }
        if (f->kind == F_STRING) continue;
        const int n = f->kind == F_TABLE || f->kind == F_SIZES ? f->count : 1;
        for (int j = 0; j < n; j++) {
            double v;
            memcpy(&v, at + (size_t)j * sizeof(double), sizeof v);
            const char *need = f->kind == F_RATE0 ? ">= 0" : "> 0";
            if (!isfinite(v) || v < 0 || (v == 0 && f->kind != F_RATE0)) {
                if (n > 1)
                    STRAND_FAIL(STRAND_ERR_INPUT, "%s: %s[%d] must be finite and %s, not %g", path, f->name,
                                j, need, v);
                STRAND_FAIL(STRAND_ERR_INPUT, "%s: %s must be finite and %s, not %g", path, f->name, need, v);
            }
            if (f->kind == F_SIZES && j > 0) {
                double prev;
                memcpy(&prev, at + (size_t)(j - 1) * sizeof(double), sizeof prev);
                if (v <= prev) STRAND_FAIL(STRAND_ERR_INPUT, "%s: %s must increase", path, f->name);
            }
        }
    }
    if ((m->p2p_inter_latency_s > 0) != (m->p2p_inter_bytes_per_s > 0))
        STRAND_FAIL(STRAND_ERR_INPUT,
                    "%s: p2p_inter_latency_s and p2p_inter_bytes_per_s must both be > 0 (several nodes) or "
                    "both 0 (one node)",
                    path);
    return STRAND_OK;
}

/* ---- reading ---- */

static int read_text(const char *path, char **text, size_t *length) {
    FILE *file = fopen(path, "rb");
    if (!file) STRAND_FAIL(STRAND_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    char *buffer = malloc(MACHINE_FILE_MAX + 1);
    if (!buffer) {
        fclose(file);
        STRAND_FAIL(STRAND_ERR_NOMEM, "%s: out of memory", path);
    }
    const size_t n = fread(buffer, 1, MACHINE_FILE_MAX + 1, file);
    const int failed = ferror(file);
    fclose(file);
    if (failed) {
        free(buffer);
        STRAND_FAIL(STRAND_ERR_IO, "cannot read %s", path);
    }
    if (n > MACHINE_FILE_MAX) {
        free(buffer);
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: not a machine file (larger than %d bytes)", path,
                    MACHINE_FILE_MAX);
    }
    buffer[n] = '\0';
    *text = buffer;
    *length = n;
    return STRAND_OK;
}

static int read_number(const cJSON *item, const char *path, const char *name, int index, double *value) {
    if (!cJSON_IsNumber(item)) {
        if (index >= 0) STRAND_FAIL(STRAND_ERR_INPUT, "%s: %s[%d] is not a number", path, name, index);
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: %s is not a number", path, name);
    }
    *value = item->valuedouble;
    return STRAND_OK;
}

static int read_field(const cJSON *root, const field *f, const char *path, strand_machine *m) {
    /* Case-sensitive: the keys are the struct's field names. */
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, f->name);
    if (!item) STRAND_FAIL(STRAND_ERR_INPUT, "%s: missing key %s", path, f->name);
    char *at = (char *)m + f->offset;
    if (f->kind == F_STRING) {
        if (!cJSON_IsString(item)) STRAND_FAIL(STRAND_ERR_INPUT, "%s: %s is not a string", path, f->name);
        if (strlen(item->valuestring) >= (size_t)f->count)
            STRAND_FAIL(STRAND_ERR_INPUT, "%s: %s is longer than %d characters", path, f->name, f->count - 1);
        snprintf(at, (size_t)f->count, "%s", item->valuestring);
        return STRAND_OK;
    }
    double v = 0;
    if (f->kind == F_INT) {
        STRAND_CALL(read_number(item, path, f->name, -1, &v));
        if (v != floor(v) || fabs(v) > 1e9)
            STRAND_FAIL(STRAND_ERR_INPUT, "%s: %s is not a whole number", path, f->name);
        const int i = (int)v;
        memcpy(at, &i, sizeof i);
        return STRAND_OK;
    }
    if (f->kind == F_TABLE || f->kind == F_SIZES) {
        if (!cJSON_IsArray(item) || cJSON_GetArraySize(item) != f->count)
            STRAND_FAIL(STRAND_ERR_INPUT, "%s: %s must be an array of %d numbers", path, f->name, f->count);
        double *values = field_doubles(m, f);
        int j = 0;
        const cJSON *entry = NULL;
        cJSON_ArrayForEach(entry, item) {
            STRAND_CALL(read_number(entry, path, f->name, j, &values[j]));
            j++;
        }
        return STRAND_OK;
    }
    STRAND_CALL(read_number(item, path, f->name, -1, &v));
    memcpy(at, &v, sizeof v);
    return STRAND_OK;
}

static int read_root(const cJSON *root, const char *path, strand_machine *m) {
    if (!cJSON_IsObject(root))
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: not a machine file (not a JSON object)", path);
    const cJSON *format = cJSON_GetObjectItemCaseSensitive(root, "strand_machine");
    if (!format)
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: missing key strand_machine (not a file of strand calibrate)",
                    path);
    if (!cJSON_IsNumber(format) || format->valuedouble != MACHINE_FORMAT)
        STRAND_FAIL(STRAND_ERR_INPUT,
                    "%s: strand_machine format %s is not %d (written by another strand version)", path,
                    cJSON_IsNumber(format) ? "other" : "not a number", MACHINE_FORMAT);
    for (int i = 0; i < N_FIELDS; i++)
        STRAND_CALL(read_field(root, &fields[i], path, m));
    return check_machine(m, path);
}

int strand_machine_read(const char *path, strand_machine *machine) {
    char *text = NULL;
    size_t length = 0;
    STRAND_CALL(read_text(path, &text, &length));
    if (strlen(text) != length) {
        const long at = (long)strlen(text);
        free(text);
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: not JSON (a NUL byte at byte %ld)", path, at);
    }
    /* The length counts the terminating NUL: cJSON 1.7.15 refuses a text that ends at `length`
     * when a NUL terminator is required. */
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, length + 1, &end, 1);
    if (!root) {
        const long at = end ? (long)(end - text) : 0;
        free(text);
        STRAND_FAIL(STRAND_ERR_INPUT, "%s: not JSON (at byte %ld)", path, at);
    }
    strand_machine m;
    memset(&m, 0, sizeof m);
    const int status = read_root(root, path, &m);
    cJSON_Delete(root);
    free(text);
    if (status == STRAND_OK) *machine = m;
    return status;
}

/* ---- writing ---- */

static cJSON *build_root(const strand_machine *m) {
    cJSON *root = cJSON_CreateObject();
    if (!root || !cJSON_AddNumberToObject(root, "strand_machine", MACHINE_FORMAT)) goto fail;
    for (int i = 0; i < N_FIELDS; i++) {
        const field *f = &fields[i];
        const char *at = (const char *)m + f->offset;
        if (f->kind == F_STRING) {
            char text[256];
            snprintf(text, sizeof text, "%.*s", f->count - 1, at);
            if (!cJSON_AddStringToObject(root, f->name, text)) goto fail;
        } else if (f->kind == F_INT) {
            int v;
            memcpy(&v, at, sizeof v);
            if (!cJSON_AddNumberToObject(root, f->name, v)) goto fail;
        } else if (f->kind == F_TABLE || f->kind == F_SIZES) {
            _Static_assert(STRAND_MACHINE_GEMM_WIDTHS <= 8 && STRAND_MACHINE_FFT_SIZES <= 8 &&
                               STRAND_MACHINE_ATTN_DIMS <= 8,
                           "tables fit v");
            double v[8];
            memcpy(v, at, sizeof(double) * (size_t)f->count);
            cJSON *array = cJSON_CreateDoubleArray(v, f->count);
            if (!array || !cJSON_AddItemToObject(root, f->name, array)) {
                cJSON_Delete(array);
                goto fail;
            }
        } else {
            double v;
            memcpy(&v, at, sizeof v);
            if (!cJSON_AddNumberToObject(root, f->name, v)) goto fail;
        }
    }
    return root;
fail:
    cJSON_Delete(root);
    return NULL;
}

int strand_machine_write(const char *path, const strand_machine *machine) {
    STRAND_CALL(check_machine(machine, path));
    cJSON *root = build_root(machine);
    char *text = root ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) STRAND_FAIL(STRAND_ERR_NOMEM, "cannot write %s: out of memory", path);
    const size_t n = strlen(text);
    char *line = malloc(n + 2);
    if (!line) {
        cJSON_free(text);
        STRAND_FAIL(STRAND_ERR_NOMEM, "cannot write %s: out of memory", path);
    }
    memcpy(line, text, n);
    line[n] = '\n'; /* a text file ends with a newline */
    cJSON_free(text);
    const int status = strand_atomic_write_text(path, line, n + 1);
    free(line);
    return status;
}

/* ---- lookups ---- */

double strand_machine_gemm_flops_per_s(const strand_machine *m, double width) {
    return 1e9 * strand_cal_interp_log(m->gemm_width, m->gemm_gflops, STRAND_MACHINE_GEMM_WIDTHS, width);
}

double strand_machine_fft_seconds(const strand_machine *m, double n, int complex_points) {
    const double *per_point = complex_points ? m->fft_complex_s_per_point : m->fft_real_s_per_point;
    return n * strand_cal_interp_log(m->fft_size, per_point, STRAND_MACHINE_FFT_SIZES, n);
}

double strand_machine_attn_flops_per_s(const strand_machine *m, double head_dim) {
    return 1e9 * strand_cal_interp_log(m->attn_head_dim, m->attn_gflops, STRAND_MACHINE_ATTN_DIMS, head_dim);
}

int strand_machine_link(const strand_machine *m, int across_nodes, double *latency_s, double *bytes_per_s) {
    const int inter = across_nodes && m->p2p_inter_bytes_per_s > 0;
    *latency_s = inter ? m->p2p_inter_latency_s : m->p2p_latency_s;
    *bytes_per_s = inter ? m->p2p_inter_bytes_per_s : m->p2p_bytes_per_s;
    return inter;
}
