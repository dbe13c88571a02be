/* Run configuration. One static key table drives defaults, parsing, validation, formatting and the
 * Markdown reference, so a new key is one table row plus its struct field.
 *
 * File syntax (libinih): [section] headers, `key = value` lines, `;` or `#` comments at the start of a
 * line and ` ;` inline comments. Leading whitespace is ignored and values never span lines. A key given
 * twice takes the last value; --set overrides are applied after the file, so they win over it. A failed
 * load or set leaves the configuration unchanged. */
#define _POSIX_C_SOURCE 200809L
#include "strand/config.h"
#include "strand/dataset.h" /* the nucleotide vocabulary */
#include "strand/model.h"   /* the mixer registry, for model.layers */

#include <ini.h>

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef strand_config_key key_def;

#define FIELD(f) STRAND_KEY_FIELD(strand_config, f)

static const char *const norm_values[] = {"rmsnorm", "layernorm", NULL};
static const char *const norm_position_values[] = {"pre", "post", NULL};
static const char *const mlp_values[] = {"gelu", "swiglu", NULL};
static const char *const layout_values[] = {"auto", "contiguous", "zigzag", NULL};
static const char *const strategy_values[] = {"auto", "fftw-mpi", "alltoall", NULL};
static const char *const planner_values[] = {"estimate", "measure", "auto",
                                             NULL}; /* enum strand_fft_planner */
static const char *const recompute_values[] = {"none", "block", NULL};

static const key_def keys[] = {
    {.section = "model",
     .name = "d_model",
     .type = STRAND_KEY_INT,
     FIELD(d_model),
     .def = "128",
     .imin = 8,
     .imax = 65536,
     .help = "Model width (embedding and residual stream)."},
    {.section = "model",
     .name = "layers",
     .type = STRAND_KEY_LAYERS,
     FIELD(layers),
     .def = "conv,conv,conv,conv",
     .help = "Mixer of each block, comma-separated; the number of entries is the depth."},
    {.section = "model",
     .name = "norm",
     .type = STRAND_KEY_ENUM,
     FIELD(norm),
     .def = "rmsnorm",
     .values = norm_values,
     .help = "Normalization layer."},
    {.section = "model",
     .name = "norm_position",
     .type = STRAND_KEY_ENUM,
     FIELD(norm_position),
     .def = "pre",
     .values = norm_position_values,
     .help = "Normalize each sublayer's input (pre) or its residual sum (post)."},
    {.section = "model",
     .name = "mlp",
     .type = STRAND_KEY_ENUM,
     FIELD(mlp),
     .def = "gelu",
     .values = mlp_values,
     .help = "Feed-forward block."},
    {.section = "model",
     .name = "mlp_hidden",
     .type = STRAND_KEY_INT,
     FIELD(mlp_hidden),
     .def = "0",
     .imin = 0,
     .imax = 1 << 20,
     .help =
         "MLP hidden width; 0 = 4*d_model for gelu, 8/3*d_model rounded up to a multiple of 8 for swiglu."},
    {.section = "model",
     .name = "tie_embeddings",
     .type = STRAND_KEY_BOOL,
     FIELD(tie_embeddings),
     .def = "true",
     .help = "Share the input embedding with the output projection."},
    {.section = "model",
     .name = "vocab",
     .type = STRAND_KEY_INT,
     FIELD(vocab),
     .def = "0",
     .imin = 0,
     .imax = 65535,
     .help = "Vocabulary size (embedding and output rows); 0 = the dataset's tokenizer's, which a "
             "set value must equal. --dry-run without a dataset takes 8 (nucleotides) for 0."},
    {.section = "model",
     .name = "init_std",
     .type = STRAND_KEY_DOUBLE,
     FIELD(init_std),
     .def = "0.02",
     .dmin = 0,
     .dmax = 1,
     .flags = STRAND_KEY_MIN_OPEN,
     .help = "Standard deviation of the normal weight initialization."},
    {.section = "model",
     .name = "norm_eps",
     .type = STRAND_KEY_DOUBLE,
     FIELD(norm_eps),
     .def = "1e-5",
     .dmin = 0,
     .dmax = 0.1,
     .flags = STRAND_KEY_MIN_OPEN,
     .help = "Epsilon inside the normalization."},

    {.section = "train",
     .name = "seq_len",
     .type = STRAND_KEY_INT64,
     FIELD(seq_len),
     .def = "1024",
     .imin = 2,
     .imax = INT64_C(1) << 40,
     .help = "Tokens per training sequence, split across the sp ranks."},
    {.section = "train",
     .name = "steps",
     .type = STRAND_KEY_INT64,
     FIELD(steps),
     .def = "300",
     .imin = 1,
     .imax = INT64_MAX,
     .help = "Optimizer steps."},
    {.section = "train",
     .name = "accum_steps",
     .type = STRAND_KEY_INT,
     FIELD(accum_steps),
     .def = "1",
     .imin = 1,
     .imax = 65536,
     .flags = STRAND_KEY_RESUMABLE,
     .help = "Micro-batches accumulated per optimizer step."},
    {.section = "train",
     .name = "lr",
     .type = STRAND_KEY_DOUBLE,
     FIELD(lr),
     .def = "3e-3",
     .dmin = 0,
     .dmax = 10,
     .flags = STRAND_KEY_MIN_OPEN,
     .help = "Peak learning rate (AdamW)."},
    {.section = "train",
     .name = "min_lr_ratio",
     .type = STRAND_KEY_DOUBLE,
     FIELD(min_lr_ratio),
     .def = "0.1",
     .dmin = 0,
     .dmax = 1,
     .help = "The cosine schedule decays to lr * min_lr_ratio."},
    {.section = "train",
     .name = "warmup_steps",
     .type = STRAND_KEY_INT64,
     FIELD(warmup_steps),
     .def = "20",
     .imin = 0,
     .imax = INT64_MAX,
     .help = "Linear warmup steps (a warmup longer than train.steps covers the whole run)."},
    {.section = "train",
     .name = "weight_decay",
     .type = STRAND_KEY_DOUBLE,
     FIELD(weight_decay),
     .def = "0.1",
     .dmin = 0,
     .dmax = 10,
     .help = "AdamW decoupled weight decay."},
    {.section = "train",
     .name = "beta1",
     .type = STRAND_KEY_DOUBLE,
     FIELD(beta1),
     .def = "0.9",
     .dmin = 0,
     .dmax = 1,
     .flags = STRAND_KEY_MAX_OPEN,
     .help = "AdamW first-moment decay."},
    {.section = "train",
     .name = "beta2",
     .type = STRAND_KEY_DOUBLE,
     FIELD(beta2),
     .def = "0.95",
     .dmin = 0,
     .dmax = 1,
     .flags = STRAND_KEY_MAX_OPEN,
     .help = "AdamW second-moment decay."},
    {.section = "train",
     .name = "adam_eps",
     .type = STRAND_KEY_DOUBLE,
     FIELD(adam_eps),
     .def = "1e-8",
     .dmin = 0,
     .dmax = 1,
     .flags = STRAND_KEY_MIN_OPEN,
     .help = "AdamW epsilon."},
    {.section = "train",
     .name = "grad_clip",
     .type = STRAND_KEY_DOUBLE,
     FIELD(grad_clip),
     .def = "1.0",
     .dmin = 0,
     .dmax = 1e6,
     .help = "Clip the global gradient norm to this value; 0 = off."},
    {.section = "train",
     .name = "seed",
     .type = STRAND_KEY_UINT64,
     FIELD(seed),
     .def = "1234",
     .help = "Seed for initialization and data sampling."},
    {.section = "train",
     .name = "rc_augment",
     .type = STRAND_KEY_BOOL,
     FIELD(rc_augment),
     .def = "false",
     .help = "Reverse-complement training windows at random."},
    {.section = "train",
     .name = "log_every",
     .type = STRAND_KEY_INT64,
     FIELD(log_every),
     .def = "10",
     .imin = 1,
     .imax = INT64_MAX,
     .flags = STRAND_KEY_RESUMABLE,
     .help = "Log training metrics every N steps."},
    {.section = "train",
     .name = "eval_windows",
     .type = STRAND_KEY_INT64,
     FIELD(eval_windows),
     .def = "8",
     .imin = 0,
     .imax = 1000000,
     .flags = STRAND_KEY_RESUMABLE,
     .help = "Validation windows evaluated at the end of training; 0 = none."},
    {.section = "train",
     .name = "recompute",
     .type = STRAND_KEY_ENUM,
     FIELD(recompute),
     .def = "none",
     .values = recompute_values,
     .flags = STRAND_KEY_RESUMABLE,
     .help = "Activation memory: keep everything (none), or keep only block inputs and re-run each block's "
             "forward before its backward (block; blocks with the same mixer also share its buffers)."},
    {.section = "train",
     .name = "offload",
     .type = STRAND_KEY_STRING,
     FIELD(offload),
     .def = "",
     .flags = STRAND_KEY_RESUMABLE | STRAND_KEY_PATH,
     .help = "Directory on local scratch for per-rank HDF5 offload of block inputs, moved by a "
             "background thread during forward and backward; implies recompute = block. Empty = off."},

    {.section = "fft",
     .name = "strategy",
     .type = STRAND_KEY_ENUM,
     FIELD(fft_strategy),
     .def = "auto",
     .values = strategy_values,
     .flags = STRAND_KEY_RESUMABLE,
     .help = "Distributed long convolution: fftw-mpi (distributed FFT), alltoall (channel transpose + local "
             "FFT), or auto by shape."},
    {.section = "fft",
     .name = "planner",
     .type = STRAND_KEY_ENUM,
     FIELD(fft_planner),
     .def = "auto",
     .values = planner_values,
     .flags = STRAND_KEY_RESUMABLE,
     .help = "FFTW planning effort; measured plans are cached in fft.wisdom. auto measures transforms up "
             "to 2^20 points and estimates longer ones (measuring a genome-length transform takes many "
             "minutes)."},
    {.section = "fft",
     .name = "wisdom",
     .type = STRAND_KEY_STRING,
     FIELD(fft_wisdom),
     .def = "",
     .flags = STRAND_KEY_RESUMABLE | STRAND_KEY_PATH,
     .help = "FFTW wisdom file; empty = $HOME/.cache/strand/fftw-<precision>.wisdom."},

    /* every registered mixer's rows go here, in registry order */
    {.section = NULL},

    {.section = "checkpoint",
     .name = "every",
     .type = STRAND_KEY_INT64,
     FIELD(ckpt_every),
     .def = "0",
     .imin = 0,
     .imax = INT64_MAX,
     .flags = STRAND_KEY_RESUMABLE,
     .help = "Steps between checkpoints; 0 = only at the end and on preemption."},
    {.section = "checkpoint",
     .name = "keep",
     .type = STRAND_KEY_INT,
     FIELD(ckpt_keep),
     .def = "3",
     .imin = 1,
     .imax = 1000000,
     .flags = STRAND_KEY_RESUMABLE,
     .help = "Complete checkpoints kept in the run directory (older ones are removed)."},

    {.section = "data",
     .name = "path",
     .type = STRAND_KEY_STRING,
     FIELD(data_path),
     .def = "data/lambda.h5",
     .flags = STRAND_KEY_RESUMABLE | STRAND_KEY_PATH,
     .help = "HDF5 dataset file."},

    {.section = "parallel",
     .name = "sp",
     .type = STRAND_KEY_INT,
     FIELD(sp),
     .def = "0",
     .imin = 0,
     .imax = 1 << 20,
     .flags = STRAND_KEY_RESUMABLE,
     .help = "Sequence-parallel ranks per replica; 0 = world size / dp."},
    {.section = "parallel",
     .name = "dp",
     .type = STRAND_KEY_INT,
     FIELD(dp),
     .def = "0",
     .imin = 0,
     .imax = 1 << 20,
     .flags = STRAND_KEY_RESUMABLE,
     .help = "Data-parallel replicas; 0 = world size / sp."},
    {.section = "parallel",
     .name = "threads",
     .type = STRAND_KEY_INT,
     FIELD(threads),
     .def = "1",
     .imin = 1,
     .imax = 1024,
     .flags = STRAND_KEY_RESUMABLE,
     .help = "Threads per rank, e.g. one rank per socket with a thread per core: one OpenMP pool runs "
             "strand's loops, FFTW's threaded plans and the GEMMs (rows cut into one single-threaded "
             "OpenBLAS call per thread); results are bit-identical to 1 thread except where FFTW's "
             "threaded plans round differently (long convolutions: about 1e-8 relative in float)."},
    {.section = "parallel",
     .name = "layout",
     .type = STRAND_KEY_ENUM,
     FIELD(layout),
     .def = "auto",
     .values = layout_values,
     .flags = STRAND_KEY_RESUMABLE,
     .help = "Positions per rank: contiguous pieces, or zigzag (chunks r and 2*SP-1-r, balanced causal "
             "attention); auto = zigzag when the model has full (unwindowed) attention."},

    {.section = "run",
     .name = "dir",
     .type = STRAND_KEY_STRING,
     FIELD(run_dir),
     .def = "runs/default",
     .flags = STRAND_KEY_RESUMABLE | STRAND_KEY_PATH,
     .help = "Run directory: resolved config.ini, metrics.jsonl and summary.json."},
};

/* The generic rows, with every registered mixer's rows at the NULL marker (their offsets moved
 * into the mixer's block of strand_config.mixer_options). Built once; the registry is static. */
enum { MAX_KEYS = 512 };
static key_def flat_keys[MAX_KEYS];
static int flat_count;

static void build_keys(void) {
    int n = 0;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (keys[i].section) {
            flat_keys[n++] = keys[i];
            continue;
        }
        for (int m = 0; strand_mixer_at(m); m++) {
            const strand_mixer_ops *ops = strand_mixer_at(m);
            /* A bad registry line is a bug: caught by the first test that reads a configuration. */
            STRAND_ASSERT(m < STRAND_MAX_MIXERS && ops->options_size <= STRAND_MIXER_OPTION_BYTES);
            const size_t base =
                offsetof(strand_config, mixer_options) + (size_t)m * sizeof(strand_mixer_options_block);
            for (int k = 0; k < ops->key_count; k++) {
                STRAND_ASSERT(n < MAX_KEYS && ops->keys[k].offset + ops->keys[k].size <= ops->options_size);
                flat_keys[n] = ops->keys[k];
                flat_keys[n].offset += base;
                n++;
            }
        }
    }
    flat_count = n;
}

static const key_def *all_keys(void) {
    if (!flat_count) build_keys();
    return flat_keys;
}

static int flat_key_count(void) {
    if (!flat_count) build_keys();
    return flat_count;
}

/* Room for one error message before it is handed to strand_error_set (which keeps 1024 bytes). */
enum { ERR_BYTES = 1024, SHOWN_VALUE_BYTES = 80 };

/* ---------------------------------------------------------------------------------------------- */
/* Small string helpers */

static char *trim(char *s) {
    while (isspace((unsigned char)*s))
        s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

/* A value as it appears in messages: long ones are cut so the message keeps its point. */
static const char *shown(const char *value, char *buffer, size_t size) {
    size_t length = strlen(value);
    if (length < size) return value;
    snprintf(buffer, size, "%.*s...", (int)(size - 4), value);
    return buffer;
}

static void full_name(const key_def *key, char *buffer, size_t size) {
    snprintf(buffer, size, "%s.%s", key->section, key->name);
}

static size_t levenshtein(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    enum { MAX_LEN = 127 };
    if (la > MAX_LEN || lb > MAX_LEN) return SIZE_MAX;
    size_t row[MAX_LEN + 1];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diagonal = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t above = row[j];
            size_t best = diagonal + (a[i - 1] != b[j - 1]);
            if (above + 1 < best) best = above + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diagonal = above;
        }
    }
    return row[lb];
}

/* Close enough to be a typo: at most 3 edits and at most a third of the typed length. */
static bool close_enough(size_t distance, const char *typed) {
    return distance <= 3 && distance * 3 <= strlen(typed) + 2;
}

/* The key nearest to `typed` ("section.key", or a bare key name), or NULL when none is close. */
static const key_def *suggest_key(const char *typed) {
    const key_def *best = NULL;
    size_t best_distance = SIZE_MAX;
    bool bare = strchr(typed, '.') == NULL;
    for (int i = 0; i < flat_key_count(); i++) {
        char name[128];
        full_name(&all_keys()[i], name, sizeof name);
        size_t distance = levenshtein(typed, name);
        if (bare) {
            /* "lr" on its own most likely means train.lr. */
            size_t bare_distance = levenshtein(typed, all_keys()[i].name);
            if (bare_distance < distance) distance = bare_distance;
        }
        if (distance < best_distance) {
            best_distance = distance;
            best = &all_keys()[i];
        }
    }
    return best && close_enough(best_distance, typed) ? best : NULL;
}

/* Keys renamed since a checkpoint may have been written: the long convolution's section, which
 * never configured the short-conv mixer of the same name, became [fft]. Old names still load. */
static const struct {
    const char *was, *now; /* "section.key" */
} renamed_keys[] = {
    {"conv.strategy", "fft.strategy"},
    {"conv.planner", "fft.planner"},
    {"conv.wisdom", "fft.wisdom"},
};

/* Whether `section` is the section part of the old name `was`. */
static bool old_section(const char *was, const char *section) {
    const size_t n = strlen(section);
    return strncmp(was, section, n) == 0 && was[n] == '.';
}

static bool section_known(const char *section) {
    for (int i = 0; i < flat_key_count(); i++)
        if (strcmp(all_keys()[i].section, section) == 0) return true;
    for (size_t i = 0; i < sizeof renamed_keys / sizeof renamed_keys[0]; i++)
        if (old_section(renamed_keys[i].was, section)) return true;
    return false;
}

static const char *suggest_section(const char *typed) {
    const char *best = NULL;
    size_t best_distance = SIZE_MAX;
    for (int i = 0; i < flat_key_count(); i++) {
        size_t distance = levenshtein(typed, all_keys()[i].section);
        if (distance < best_distance) {
            best_distance = distance;
            best = all_keys()[i].section;
        }
    }
    return best && close_enough(best_distance, typed) ? best : NULL;
}

static const key_def *find_key(const char *section, const char *name) {
    for (int i = 0; i < flat_key_count(); i++)
        if (strcmp(all_keys()[i].section, section) == 0 && strcmp(all_keys()[i].name, name) == 0)
            return &all_keys()[i];
    for (size_t i = 0; i < sizeof renamed_keys / sizeof renamed_keys[0]; i++) {
        const char *was = renamed_keys[i].was;
        if (old_section(was, section) && strcmp(was + strlen(section) + 1, name) == 0)
            return strand_config_find_key(renamed_keys[i].now);
    }
    return NULL;
}

static void unknown_key_message(const char *typed, char *err, size_t size) {
    const key_def *near = suggest_key(typed);
    char name[128] = "";
    if (near) full_name(near, name, sizeof name);
    char cut[SHOWN_VALUE_BYTES];
    snprintf(err, size, "unknown config key '%s'%s%s%s", shown(typed, cut, sizeof cut),
             near ? " (did you mean '" : "", name, near ? "'?)" : "");
}

static void unknown_section_message(const char *typed, char *err, size_t size) {
    const char *near = suggest_section(typed);
    char cut[SHOWN_VALUE_BYTES];
    snprintf(err, size, "unknown config section [%s]%s%s%s", shown(typed, cut, sizeof cut),
             near ? " (did you mean [" : "", near ? near : "", near ? "]?)" : "");
}

/* ---------------------------------------------------------------------------------------------- */
/* Values: parsing, range checks and formatting */

static void range_text(const key_def *key, char *buffer, size_t size);

static void format_double(double value, char *buffer, size_t size) {
    /* Whole numbers in plain digits ("10", not "1e+01"); exact below 2^53, so they read back equal. */
    if (value == floor(value) && fabs(value) < 1e15) {
        snprintf(buffer, size, "%.0f", value);
        return;
    }
    /* Otherwise the shortest %g precision that reads back to the same double. */
    for (int precision = 1; precision <= 17; precision++) {
        snprintf(buffer, size, "%.*g", precision, value);
        if (strtod(buffer, NULL) == value) return;
    }
}

static int range_error(const key_def *key, const char *text, char *err, size_t size) {
    char name[128], range[128], cut[SHOWN_VALUE_BYTES];
    full_name(key, name, sizeof name);
    range_text(key, range, sizeof range);
    snprintf(err, size, "%s = %s: out of range (must be %s)", name, shown(text, cut, sizeof cut), range);
    return STRAND_ERR_CONFIG;
}

/* Message form of a key's range: "> 0 and <= 10", ">= 1". */
static void range_text(const key_def *key, char *buffer, size_t size) {
    char lo[48], hi[48];
    switch (key->type) {
    case STRAND_KEY_INT:
    case STRAND_KEY_INT64:
        if (key->imax == INT64_MAX)
            snprintf(buffer, size, ">= %" PRId64, key->imin);
        else
            snprintf(buffer, size, ">= %" PRId64 " and <= %" PRId64, key->imin, key->imax);
        return;
    case STRAND_KEY_UINT64:
        snprintf(buffer, size, ">= 0 and <= %" PRIu64, UINT64_MAX);
        return;
    case STRAND_KEY_DOUBLE:
        format_double(key->dmin, lo, sizeof lo);
        format_double(key->dmax, hi, sizeof hi);
        snprintf(buffer, size, "%s %s and %s %s", key->flags & STRAND_KEY_MIN_OPEN ? ">" : ">=", lo,
                 key->flags & STRAND_KEY_MAX_OPEN ? "<" : "<=", hi);
        return;
    default:
        snprintf(buffer, size, "valid");
        return;
    }
}

static bool int_in_range(const key_def *key, int64_t value) {
    return value >= key->imin && value <= key->imax;
}

static bool double_in_range(const key_def *key, double value) {
    bool above = key->flags & STRAND_KEY_MIN_OPEN ? value > key->dmin : value >= key->dmin;
    bool below = key->flags & STRAND_KEY_MAX_OPEN ? value < key->dmax : value <= key->dmax;
    return above && below;
}

/* A message naming the key and the offending value: "train.lr = abc: <what>". */
static int value_error(int code, const key_def *key, const char *text, char *err, size_t size,
                       const char *what) {
    char name[128], cut[SHOWN_VALUE_BYTES];
    full_name(key, name, sizeof name);
    snprintf(err, size, "%s = %s: %s", name, shown(text, cut, sizeof cut), what);
    return code;
}

static bool parse_double_text(const char *text, double *out) {
    if (!*text) return false;
    char *end = NULL;
    errno = 0;
    double value = strtod(text, &end);
    if (*end != '\0' || end == text) return false;
    *out = value;
    return true;
}

static int parse_integer(const key_def *key, const char *text, int64_t *out, char *err, size_t size) {
    if (!*text)
        return value_error(STRAND_ERR_INPUT, key, text, err, size, "empty value (expected an integer)");
    char *end = NULL;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (*end != '\0' || end == text) {
        double as_double;
        if (parse_double_text(text, &as_double) && isfinite(as_double))
            return value_error(STRAND_ERR_INPUT, key, text, err, size,
                               "not an integer (write it in plain decimal digits)");
        return value_error(STRAND_ERR_INPUT, key, text, err, size, "not an integer");
    }
    if (errno == ERANGE || !int_in_range(key, (int64_t)value)) return range_error(key, text, err, size);
    *out = (int64_t)value;
    return STRAND_OK;
}

static int parse_unsigned(const key_def *key, const char *text, uint64_t *out, char *err, size_t size) {
    if (!*text)
        return value_error(STRAND_ERR_INPUT, key, text, err, size, "empty value (expected an integer)");
    /* strtoull would silently wrap "-1" around to 2^64 - 1. */
    if (text[0] == '-') {
        char *end = NULL;
        strtoll(text, &end, 10);
        if (*end == '\0' && end != text + 1) return range_error(key, text, err, size);
        return value_error(STRAND_ERR_INPUT, key, text, err, size, "not an integer");
    }
    char *end = NULL;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (*end != '\0' || end == text)
        return value_error(STRAND_ERR_INPUT, key, text, err, size, "not an integer");
    if (errno == ERANGE) return range_error(key, text, err, size);
    *out = (uint64_t)value;
    return STRAND_OK;
}

static int parse_double(const key_def *key, const char *text, double *out, char *err, size_t size) {
    if (!*text) return value_error(STRAND_ERR_INPUT, key, text, err, size, "empty value (expected a number)");
    double value;
    if (!parse_double_text(text, &value))
        return value_error(STRAND_ERR_INPUT, key, text, err, size, "not a number");
    if (!isfinite(value))
        return value_error(STRAND_ERR_INPUT, key, text, err, size, "must be a finite number");
    /* Underflow to zero: the value written is not the value that would be used. Subnormals are kept
     * (glibc flags them with ERANGE too) so that formatted configs read back exactly. */
    if (errno == ERANGE && value == 0) return range_error(key, text, err, size);
    if (!double_in_range(key, value)) return range_error(key, text, err, size);
    *out = value;
    return STRAND_OK;
}

static int parse_bool(const key_def *key, const char *text, int *out, char *err, size_t size) {
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *out = 1;
            return STRAND_OK;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *out = 0;
            return STRAND_OK;
        }
    }
    return value_error(STRAND_ERR_INPUT, key, text, err, size,
                       "not a boolean (use true/false, yes/no, on/off or 1/0)");
}

/* Strings must read back unchanged from the formatted INI text: no control characters (a line
 * break would end the value) and no " ;" (inih starts an inline comment there). */
static const char *string_problem(const char *text) {
    for (const char *p = text; *p; p++) {
        if (iscntrl((unsigned char)*p)) return "contains a control character";
        if (*p == ';' && p > text && isspace((unsigned char)p[-1]))
            return "contains ' ;', which starts a comment in the config file";
    }
    if (*text && (isspace((unsigned char)text[0]) || isspace((unsigned char)text[strlen(text) - 1])))
        return "has leading or trailing whitespace";
    return NULL;
}

static int check_string(const key_def *key, const char *text, char *err, size_t size) {
    const char *problem = string_problem(text);
    if (problem) return value_error(STRAND_ERR_INPUT, key, text, err, size, problem);
    size_t length = strlen(text);
    if (length >= key->size) {
        char what[96];
        snprintf(what, sizeof what, "too long (%zu bytes; at most %zu)", length, key->size - 1);
        return value_error(STRAND_ERR_CONFIG, key, text, err, size, what);
    }
    return STRAND_OK;
}

static int check_enum(const key_def *key, const char *text, int *index, char *err, size_t size) {
    char allowed[128] = "";
    for (const char *const *v = key->values; *v; v++) {
        if (strcasecmp(text, *v) == 0) {
            *index = (int)(v - key->values);
            return STRAND_OK;
        }
        size_t used = strlen(allowed);
        snprintf(allowed + used, sizeof allowed - used, "%s%s", v == key->values ? "" : ", ", *v);
    }
    char what[192];
    snprintf(what, sizeof what, "must be one of %s", allowed);
    return value_error(STRAND_ERR_CONFIG, key, text, err, size, what);
}

static int enum_count(const key_def *key) {
    int n = 0;
    while (key->values[n])
        n++;
    return n;
}

/* The mixers model.layers accepts are the model's registry (model.c), listed for messages. */
static void available_mixers(char *buffer, size_t size) {
    buffer[0] = '\0';
    for (int i = 0; strand_mixer_name(i); i++) {
        size_t used = strlen(buffer);
        snprintf(buffer + used, size - used, "%s%s", used ? ", " : "", strand_mixer_name(i));
    }
}

/* Check a comma-separated mixer list and write it without spaces ("conv, conv" -> "conv,conv") to
 * `normalized` (key->size bytes), so consumers can split on ',' alone. */
static int check_layers(const key_def *key, const char *text, char *normalized, char *err, size_t size) {
    char copy[4096];
    if (strlen(text) >= sizeof copy) return check_string(key, text, err, size);
    strcpy(copy, text);
    if (!*trim(copy))
        return value_error(STRAND_ERR_CONFIG, key, text, err, size, "must name at least one mixer");
    char available[128];
    available_mixers(available, sizeof available);
    size_t used = 0;
    int position = 0;
    char *item = copy;
    for (;;) {
        char *comma = strchr(item, ',');
        if (comma) *comma = '\0';
        char *name = trim(item);
        position++;
        char what[256];
        if (!*name) {
            snprintf(what, sizeof what, "entry %d is empty", position);
            return value_error(STRAND_ERR_CONFIG, key, text, err, size, what);
        }
        if (!strand_mixer_find(name)) {
            snprintf(what, sizeof what, "unknown mixer '%.40s' (available: %s)", name, available);
            return value_error(STRAND_ERR_CONFIG, key, text, err, size, what);
        }
        size_t length = strlen(name);
        if (used + (used ? 1 : 0) + length >= key->size) {
            snprintf(what, sizeof what, "too long (at most %zu bytes)", key->size - 1);
            return value_error(STRAND_ERR_CONFIG, key, text, err, size, what);
        }
        if (used) normalized[used++] = ',';
        memcpy(normalized + used, name, length);
        used += length;
        normalized[used] = '\0';
        if (!comma) break;
        item = comma + 1;
    }
    return STRAND_OK;
}

static void write_string(strand_config *config, const key_def *key, const char *text) {
    char *field = (char *)config + key->offset;
    /* Zero the tail too, so equal configurations compare equal with memcmp. */
    memset(field, 0, key->size);
    memcpy(field, text, strlen(text));
}

/* Parse `text` (already trimmed) for `key` and store it; `config` is untouched on error. */
static int apply_value(strand_config *config, const key_def *key, const char *text, char *err, size_t size) {
    char *field = (char *)config + key->offset;
    int status = STRAND_OK;
    switch (key->type) {
    case STRAND_KEY_INT:
    case STRAND_KEY_INT64: {
        int64_t value = 0;
        status = parse_integer(key, text, &value, err, size);
        if (status != STRAND_OK) return status;
        if (key->type == STRAND_KEY_INT) {
            int narrow = (int)value;
            memcpy(field, &narrow, sizeof narrow);
        } else {
            memcpy(field, &value, sizeof value);
        }
        return STRAND_OK;
    }
    case STRAND_KEY_UINT64: {
        uint64_t value = 0;
        status = parse_unsigned(key, text, &value, err, size);
        if (status == STRAND_OK) memcpy(field, &value, sizeof value);
        return status;
    }
    case STRAND_KEY_DOUBLE: {
        double value = 0;
        status = parse_double(key, text, &value, err, size);
        if (status == STRAND_OK) memcpy(field, &value, sizeof value);
        return status;
    }
    case STRAND_KEY_BOOL: {
        int value = 0;
        status = parse_bool(key, text, &value, err, size);
        if (status == STRAND_OK) memcpy(field, &value, sizeof value);
        return status;
    }
    case STRAND_KEY_STRING:
        status = check_string(key, text, err, size);
        if (status == STRAND_OK) write_string(config, key, text);
        return status;
    case STRAND_KEY_ENUM: {
        int index = 0;
        status = check_enum(key, text, &index, err, size);
        if (status == STRAND_OK) memcpy(field, &index, sizeof index);
        return status;
    }
    case STRAND_KEY_LAYERS: {
        char normalized[STRAND_CONFIG_STRING_BYTES];
        status = check_string(key, text, err, size);
        if (status == STRAND_OK) status = check_layers(key, text, normalized, err, size);
        if (status == STRAND_OK) write_string(config, key, normalized);
        return status;
    }
    }
    return STRAND_ERR_INTERNAL;
}

/* The current value of `key` as it would be written in the file. */
static void format_value(const strand_config *config, const key_def *key, char *buffer, size_t size) {
    const char *field = (const char *)config + key->offset;
    switch (key->type) {
    case STRAND_KEY_INT: {
        int value;
        memcpy(&value, field, sizeof value);
        snprintf(buffer, size, "%d", value);
        return;
    }
    case STRAND_KEY_INT64: {
        int64_t value;
        memcpy(&value, field, sizeof value);
        snprintf(buffer, size, "%" PRId64, value);
        return;
    }
    case STRAND_KEY_UINT64: {
        uint64_t value;
        memcpy(&value, field, sizeof value);
        snprintf(buffer, size, "%" PRIu64, value);
        return;
    }
    case STRAND_KEY_DOUBLE: {
        double value;
        memcpy(&value, field, sizeof value);
        format_double(value, buffer, size);
        return;
    }
    case STRAND_KEY_BOOL: {
        int value;
        memcpy(&value, field, sizeof value);
        snprintf(buffer, size, "%s", value ? "true" : "false");
        return;
    }
    case STRAND_KEY_ENUM: {
        int index;
        memcpy(&index, field, sizeof index);
        snprintf(buffer, size, "%s", index >= 0 && index < enum_count(key) ? key->values[index] : "?");
        return;
    }
    case STRAND_KEY_STRING:
    case STRAND_KEY_LAYERS:
        /* Bounded: a programmatically filled field may lack its terminator (validate rejects it). */
        snprintf(buffer, size, "%.*s", (int)strnlen(field, key->size), field);
        return;
    }
}

/* Re-check the stored value of one key (it may have been set programmatically). */
static int check_stored(const strand_config *config, const key_def *key, char *err, size_t size) {
    const char *field = (const char *)config + key->offset;
    char text[STRAND_CONFIG_STRING_BYTES * 4 + 8];
    format_value(config, key, text, sizeof text);
    switch (key->type) {
    case STRAND_KEY_INT: {
        int value;
        memcpy(&value, field, sizeof value);
        return int_in_range(key, value) ? STRAND_OK : range_error(key, text, err, size);
    }
    case STRAND_KEY_INT64: {
        int64_t value;
        memcpy(&value, field, sizeof value);
        return int_in_range(key, value) ? STRAND_OK : range_error(key, text, err, size);
    }
    case STRAND_KEY_UINT64:
        return STRAND_OK;
    case STRAND_KEY_DOUBLE: {
        double value;
        memcpy(&value, field, sizeof value);
        if (!isfinite(value))
            return value_error(STRAND_ERR_CONFIG, key, text, err, size, "must be a finite number");
        return double_in_range(key, value) ? STRAND_OK : range_error(key, text, err, size);
    }
    case STRAND_KEY_BOOL: {
        int value;
        memcpy(&value, field, sizeof value);
        return value == 0 || value == 1
                   ? STRAND_OK
                   : value_error(STRAND_ERR_CONFIG, key, text, err, size, "must be 0 or 1");
    }
    case STRAND_KEY_ENUM: {
        int index;
        memcpy(&index, field, sizeof index);
        if (index >= 0 && index < enum_count(key)) return STRAND_OK;
        char what[64];
        snprintf(what, sizeof what, "has no value number %d", index);
        return value_error(STRAND_ERR_CONFIG, key, text, err, size, what);
    }
    case STRAND_KEY_STRING:
    case STRAND_KEY_LAYERS: {
        if (!memchr(field, '\0', key->size))
            return value_error(STRAND_ERR_CONFIG, key, text, err, size, "is not zero-terminated");
        if (key->type == STRAND_KEY_STRING) return check_string(key, field, err, size);
        char normalized[STRAND_CONFIG_STRING_BYTES];
        int status = check_string(key, field, err, size);
        return status != STRAND_OK ? status : check_layers(key, field, normalized, err, size);
    }
    }
    return STRAND_ERR_INTERNAL;
}

/* ---------------------------------------------------------------------------------------------- */
/* Public API */

void strand_config_defaults(strand_config *config) {
    memset(config, 0, sizeof *config);
    for (int i = 0; i < flat_key_count(); i++) {
        char err[ERR_BYTES];
        int status = apply_value(config, &all_keys()[i], all_keys()[i].def, err, sizeof err);
        STRAND_ASSERT(status == STRAND_OK); /* a bad default is a bug in the table */
    }
}

int strand_config_set(strand_config *config, const char *assignment) {
    char cut[SHOWN_VALUE_BYTES];
    const char *equals = strchr(assignment, '=');
    if (!equals)
        STRAND_FAIL(STRAND_ERR_INPUT, "config override '%s': expected section.key=value",
                    shown(assignment, cut, sizeof cut));
    size_t name_length = (size_t)(equals - assignment);
    size_t value_length = strlen(equals + 1);
    char *copy = malloc(name_length + value_length + 2);
    if (!copy) STRAND_FAIL(STRAND_ERR_NOMEM, "out of memory parsing config override");
    memcpy(copy, assignment, name_length);
    copy[name_length] = '\0';
    memcpy(copy + name_length + 1, equals + 1, value_length + 1);
    char *name = trim(copy);
    char *value = trim(copy + name_length + 1);

    char err[ERR_BYTES];
    int status = STRAND_OK;
    const key_def *key = NULL;
    char *dot = strchr(name, '.');
    if (dot) {
        *dot = '\0';
        key = find_key(name, dot + 1);
        *dot = '.';
    }
    if (!*name) {
        snprintf(err, sizeof err, "config override '%s': expected section.key=value",
                 shown(assignment, cut, sizeof cut));
        status = STRAND_ERR_INPUT;
    } else if (!key) {
        unknown_key_message(name, err, sizeof err);
        status = STRAND_ERR_CONFIG;
    } else {
        status = apply_value(config, key, value, err, sizeof err);
    }
    free(copy);
    if (status != STRAND_OK) STRAND_FAIL(status, "%s", err);
    return STRAND_OK;
}

/* Loading a file. inih calls our reader once per line and the handler right after, for the line just
 * read, so the reader's line count is the handler's line number (Debian's inih is built without
 * INI_HANDLER_LINENO). The reader also lifts inih's fixed line length: a longer `key = value` line is
 * passed on with a placeholder value and the handler takes the real value from the reader. */
typedef struct {
    strand_config *config;
    const char *path;
    FILE *file;
    char *line;
    size_t line_capacity;
    int lineno;
    int error_line;   /* line of the first error recorded here */
    char *long_value; /* raw text after '=' of the current over-long line, or NULL */
    int status;
    char err[ERR_BYTES];
} load_context;

static const char long_placeholder[] = "\x1f";

static void load_error(load_context *ctx, int code, const char *message) {
    if (ctx->status != STRAND_OK) return; /* keep the first error, like inih */
    ctx->status = code;
    ctx->error_line = ctx->lineno;
    char cut[256];
    /* Long messages are cut at the buffer's end on purpose. */
    int n = snprintf(ctx->err, sizeof ctx->err, "%s:%d: ", shown(ctx->path, cut, sizeof cut), ctx->lineno);
    if (n > 0 && (size_t)n < sizeof ctx->err) {
        size_t room = sizeof ctx->err - (size_t)n - 1, length = strlen(message);
        if (length > room) length = room;
        memcpy(ctx->err + n, message, length);
        ctx->err[(size_t)n + length] = '\0';
    }
}

static char *load_reader(char *out, int capacity, void *stream) {
    load_context *ctx = stream;
    errno = 0;
    ssize_t got = getline(&ctx->line, &ctx->line_capacity, ctx->file);
    if (got < 0) {
        if (ferror(ctx->file)) {
            if (ctx->status == STRAND_OK) {
                char cut[256];
                ctx->status = STRAND_ERR_IO;
                ctx->error_line = ctx->lineno + 1;
                snprintf(ctx->err, sizeof ctx->err, "cannot read config file %s: %s",
                         shown(ctx->path, cut, sizeof cut), strerror(errno ? errno : EIO));
            }
        }
        return NULL;
    }
    ctx->lineno++;
    ctx->long_value = NULL;
    char *s = ctx->line;
    if (ctx->lineno == 1 && (unsigned char)s[0] == 0xEF && (unsigned char)s[1] == 0xBB &&
        (unsigned char)s[2] == 0xBF)
        s += 3;
    /* inih would take an indented line after a key as a continuation of that key's value. */
    s = trim(s);

    size_t room = (size_t)capacity - 2; /* text, '\n', '\0' */
    if (s[0] == '[') {
        char *close = strchr(s, ']');
        if (close) {
            /* Tolerate "[ model ]" and check the section here so that a header without keys is caught. */
            *close = '\0';
            char *section = trim(s + 1);
            if (!section_known(section)) {
                char message[ERR_BYTES];
                unknown_section_message(section, message, sizeof message);
                load_error(ctx, STRAND_ERR_CONFIG, message);
                snprintf(out, (size_t)capacity, "\n");
            } else {
                snprintf(out, (size_t)capacity, "[%s]\n", section);
            }
            return out;
        }
    }
    size_t length = strlen(s);
    if (length <= room) {
        snprintf(out, (size_t)capacity, "%s\n", s);
        return out;
    }
    if (s[0] == ';' || s[0] == '#') {
        snprintf(out, (size_t)capacity, "\n");
        return out;
    }
    size_t split = strcspn(s, "=:");
    if (s[split] != '\0' && s[0] != '[' && split + 1 + sizeof long_placeholder <= room) {
        ctx->long_value = s + split + 1;
        snprintf(out, (size_t)capacity, "%.*s=%s\n", (int)split, s, long_placeholder);
        return out;
    }
    char message[128];
    snprintf(message, sizeof message, "line too long (%zu characters)", length);
    load_error(ctx, STRAND_ERR_INPUT, message);
    snprintf(out, (size_t)capacity, "\n");
    return out;
}

/* The value of an over-long line, cut at an inline comment and trimmed the way inih does it. */
static char *long_value_text(char *raw) {
    for (char *p = raw; *p; p++) {
        if (*p == ';' && p > raw && isspace((unsigned char)p[-1])) {
            *p = '\0';
            break;
        }
    }
    return trim(raw);
}

#if INI_HANDLER_LINENO
static int load_handler(void *user, const char *section, const char *name, const char *value, int lineno) {
    (void)lineno; /* the reader's count is the same number */
#else
static int load_handler(void *user, const char *section, const char *name, const char *value) {
#endif
    load_context *ctx = user;
    if (ctx->status != STRAND_OK) return 1; /* only the first error is reported */
    if (ctx->long_value && strcmp(value, long_placeholder) == 0) value = long_value_text(ctx->long_value);

    char message[ERR_BYTES];
    if (!*section) {
        const key_def *near = suggest_key(name);
        char full[128] = "", cut[SHOWN_VALUE_BYTES];
        if (near) full_name(near, full, sizeof full);
        snprintf(message, sizeof message, "key '%s' is outside any [section]%s%s%s",
                 shown(name, cut, sizeof cut), near ? " (did you mean '" : "", full, near ? "'?)" : "");
        load_error(ctx, STRAND_ERR_CONFIG, message);
        return 0;
    }
    if (!section_known(section)) {
        unknown_section_message(section, message, sizeof message);
        load_error(ctx, STRAND_ERR_CONFIG, message);
        return 0;
    }
    const key_def *key = find_key(section, name);
    if (!key) {
        char typed[256];
        snprintf(typed, sizeof typed, "%s.%s", section, name);
        unknown_key_message(typed, message, sizeof message);
        load_error(ctx, STRAND_ERR_CONFIG, message);
        return 0;
    }
    int status = apply_value(ctx->config, key, value, message, sizeof message);
    if (status != STRAND_OK) {
        load_error(ctx, status, message);
        return 0;
    }
    return 1;
}

/* Load INI text from an open stream; `path` names it in messages. Closes the stream. */
static int load_stream(strand_config *config, FILE *file, const char *path) {
    strand_config *scratch = malloc(sizeof *scratch);
    if (!scratch) {
        fclose(file);
        STRAND_FAIL(STRAND_ERR_NOMEM, "out of memory loading config file %s", path);
    }
    memcpy(scratch, config, sizeof *scratch);
    load_context ctx = {.config = scratch, .path = path, .file = file, .status = STRAND_OK};
    int parsed = ini_parse_stream(load_reader, &ctx, load_handler, &ctx);
    free(ctx.line);
    fclose(file);
    /* inih reports the first line it could not parse (or whose handler failed): report it when it
     * comes before the first error recorded here. */
    if (parsed > 0 && (ctx.status == STRAND_OK || parsed < ctx.error_line)) {
        ctx.status = STRAND_OK;
        ctx.lineno = parsed;
        load_error(&ctx, STRAND_ERR_INPUT, "syntax error: expected '[section]' or 'key = value'");
    } else if (ctx.status == STRAND_OK && parsed < 0) {
        ctx.status = STRAND_ERR_NOMEM;
        snprintf(ctx.err, sizeof ctx.err, "out of memory parsing config file %s", path);
    }
    if (ctx.status == STRAND_OK) memcpy(config, scratch, sizeof *config);
    free(scratch);
    if (ctx.status != STRAND_OK) STRAND_FAIL(ctx.status, "%s", ctx.err);
    return STRAND_OK;
}

enum { CONFIG_FILE_MAX_BYTES = 16 << 20 };

/* Read a whole config file into memory, refusing a NUL byte: libinih would end the line there
 * and silently take "d_model = 16\0 99" as 16. Chunk by chunk, so that a stream of zeros is
 * refused at its first chunk. *text is malloc'ed and zero-terminated. */
static int read_config_file(const char *path, char **text) {
    enum { CHUNK = 4096 };
    char cut[256];
    FILE *file = fopen(path, "r");
    if (!file) STRAND_FAIL(STRAND_ERR_IO, "cannot open config file %s: %s", path, strerror(errno));
    size_t used = 0, capacity = 0;
    char *buffer = NULL;
    const char *nul = NULL;
    int status = STRAND_OK;
    for (;;) {
        if (capacity - used < CHUNK + 1) {
            capacity = capacity ? 2 * capacity : 2 * CHUNK;
            char *grown = realloc(buffer, capacity);
            if (!grown) {
                status =
                    strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__,
                                     "out of memory reading config file %s", shown(path, cut, sizeof cut));
                break;
            }
            buffer = grown;
        }
        errno = 0;
        const size_t got = fread(buffer + used, 1, CHUNK, file);
        nul = memchr(buffer + used, '\0', got);
        used += got;
        if (nul || got < CHUNK) {
            if (!nul && ferror(file))
                status = strand_error_set(STRAND_ERR_IO, __FILE__, __LINE__, "cannot read config file %s: %s",
                                          shown(path, cut, sizeof cut), strerror(errno ? errno : EIO));
            break;
        }
        if (used > CONFIG_FILE_MAX_BYTES) {
            status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__,
                                      "config file %s is larger than %d MiB: not a configuration file",
                                      shown(path, cut, sizeof cut), CONFIG_FILE_MAX_BYTES >> 20);
            break;
        }
    }
    fclose(file);
    if (status == STRAND_OK && nul) {
        int line = 1;
        const char *line_start = buffer;
        for (const char *p = buffer; p < nul; p++)
            if (*p == '\n') line++, line_start = p + 1;
        status =
            strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__, "%s:%d: contains a NUL byte (column %zu)",
                             shown(path, cut, sizeof cut), line, (size_t)(nul - line_start) + 1);
    }
    if (status != STRAND_OK) {
        free(buffer);
        return status;
    }
    buffer[used] = '\0';
    *text = buffer;
    return STRAND_OK;
}

int strand_config_load_file(strand_config *config, const char *path) {
    char *text = NULL;
    STRAND_CALL(read_config_file(path, &text));
    const int status = strand_config_load_text(config, text, path);
    free(text);
    return status;
}

int strand_config_load_text(strand_config *config, const char *text, const char *name) {
    if (!text[0]) return STRAND_OK; /* nothing to set (and fmemopen refuses a size of 0) */
    FILE *file = fmemopen((void *)text, strlen(text), "r");
    if (!file) STRAND_FAIL(STRAND_ERR_NOMEM, "cannot read the configuration text of %s", name);
    return load_stream(config, file, name);
}

/* Whether model.layers names this mixer. */
static int layers_name(const strand_config *config, const char *name) {
    const size_t n = strlen(name);
    for (const char *p = config->layers; *p;) {
        const char *end = strchr(p, ',');
        const size_t length = end ? (size_t)(end - p) : strlen(p);
        if (length == n && strncmp(p, name, n) == 0) return 1;
        if (!end) break;
        p = end + 1;
    }
    return 0;
}

/* Cross-key checks of the generic sections. */
static int validate_model(const strand_config *config) {
    if (config->layout == STRAND_LAYOUT_CHOICE_ZIGZAG &&
        (strand_model_capabilities(config) & STRAND_MIXER_CONTIGUOUS))
        STRAND_FAIL(
            STRAND_ERR_CONFIG,
            "parallel.layout = zigzag: model.layers = %s has a mixer that needs each rank's positions in "
            "contiguous order; use parallel.layout = contiguous or auto",
            config->layers);
    if (config->recompute == STRAND_RECOMPUTE_BLOCK || config->offload[0]) {
        /* A carried state would be advanced twice by the recomputed forward. */
        const unsigned caps = strand_model_capabilities(config);
        if (caps & STRAND_MIXER_CARRIES_STATE)
            STRAND_FAIL(STRAND_ERR_CONFIG,
                        "train.recompute = block (or train.offload) cannot be combined with a mixer that "
                        "carries state between windows (model.layers = %s): a recomputed forward would "
                        "advance that state twice",
                        config->layers);
    }
    return STRAND_OK;
}

int strand_config_validate(const strand_config *config) {
    char err[ERR_BYTES];
    for (int i = 0; i < flat_key_count(); i++) {
        int status = check_stored(config, &all_keys()[i], err, sizeof err);
        if (status != STRAND_OK) STRAND_FAIL(status, "%s", err);
    }
    STRAND_CALL(validate_model(config));
    for (int m = 0; strand_mixer_at(m); m++) {
        const strand_mixer_ops *ops = strand_mixer_at(m);
        if (ops->validate)
            STRAND_CALL(
                ops->validate(config, strand_mixer_options(config, ops), layers_name(config, ops->name)));
    }
    return STRAND_OK;
}

void strand_config_pin_window_keys(strand_config *config) {
    for (int i = 0; i < flat_key_count(); i++) {
        const key_def *key = &all_keys()[i];
        if (!(key->flags & STRAND_KEY_ZERO_IS_WINDOW)) continue;
        char *field = (char *)config + key->offset;
        if (key->type == STRAND_KEY_INT64) {
            int64_t value;
            memcpy(&value, field, sizeof value);
            if (value == 0) memcpy(field, &config->seq_len, sizeof value);
        } else if (key->type == STRAND_KEY_INT) {
            int value;
            memcpy(&value, field, sizeof value);
            const int window = config->seq_len > INT_MAX ? INT_MAX : (int)config->seq_len;
            if (value == 0) memcpy(field, &window, sizeof value);
        }
    }
}

const strand_config_key *strand_config_find_key(const char *full) {
    const char *dot = strchr(full, '.');
    if (!dot) return NULL;
    char section[64];
    if ((size_t)(dot - full) >= sizeof section) return NULL;
    memcpy(section, full, (size_t)(dot - full));
    section[dot - full] = '\0';
    return find_key(section, dot + 1);
}

int strand_config_vocab(const strand_config *config) {
    if (config->vocab_size > 0) return config->vocab_size;
    return config->vocab > 0 ? config->vocab : STRAND_VOCAB_SIZE;
}

int strand_config_take_vocab(strand_config *config, int vocab_size, const char *path) {
    if (config->vocab > 0 && config->vocab != vocab_size)
        STRAND_FAIL(STRAND_ERR_CONFIG, "model.vocab = %d, but the tokenizer of %s has %d tokens",
                    config->vocab, path, vocab_size);
    config->vocab_size = vocab_size;
    return STRAND_OK;
}

int strand_config_mlp_hidden(const strand_config *config) {
    if (config->mlp_hidden > 0) return config->mlp_hidden;
    if (config->mlp == STRAND_MLP_SWIGLU) return 8 * ((config->d_model + 2) / 3); /* ceil(8d/3) up to 8 */
    return 4 * config->d_model;
}

/* snprintf-style appending: counts every byte, writes what fits. */
typedef struct {
    char *buffer;
    size_t size, length;
} text_sink;

static void sink_put(text_sink *sink, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sink_put(text_sink *sink, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    size_t room = sink->length < sink->size ? sink->size - sink->length : 0;
    int n = vsnprintf(room ? sink->buffer + sink->length : NULL, room, fmt, args);
    va_end(args);
    if (n > 0) sink->length += (size_t)n;
}

size_t strand_config_format(const strand_config *config, char *buffer, size_t size) {
    text_sink sink = {.buffer = buffer, .size = size, .length = 0};
    if (buffer && size) buffer[0] = '\0';
    /* Sections in order of their first row; a mixer's row may sit in a generic section. */
    const key_def *K = all_keys();
    for (int i = 0; i < flat_key_count(); i++) {
        int first = 1;
        for (int j = 0; j < i && first; j++)
            if (strcmp(K[j].section, K[i].section) == 0) first = 0;
        if (!first) continue;
        sink_put(&sink, "%s[%s]\n", i ? "\n" : "", K[i].section);
        for (int j = i; j < flat_key_count(); j++) {
            if (strcmp(K[j].section, K[i].section) != 0) continue;
            char value[STRAND_CONFIG_STRING_BYTES * 4 + 8];
            /* The vocabulary as resolved from the dataset, which a checkpoint's configuration
             * records and a resumed run compares; except the nucleotide one from model.vocab = 0,
             * which stays 0 as every checkpoint before model.vocab has it (and a configuration
             * read back is the one written). */
            const int vocab = strand_config_vocab(config);
            if (strcmp(K[j].section, "model") == 0 && strcmp(K[j].name, "vocab") == 0 &&
                !(config->vocab == 0 && vocab == STRAND_VOCAB_SIZE))
                snprintf(value, sizeof value, "%d", vocab);
            else
                format_value(config, &K[j], value, sizeof value);
            sink_put(&sink, "%s = %s\n", K[j].name, value);
        }
    }
    return sink.length;
}

static const char *type_name(const key_def *key) {
    switch (key->type) {
    case STRAND_KEY_INT:
    case STRAND_KEY_INT64:
        return "int";
    case STRAND_KEY_UINT64:
        return "uint64";
    case STRAND_KEY_DOUBLE:
        return "float";
    case STRAND_KEY_BOOL:
        return "bool";
    case STRAND_KEY_STRING:
        return "string";
    case STRAND_KEY_ENUM:
        return "enum";
    case STRAND_KEY_LAYERS:
        return "list";
    }
    return "?";
}

void strand_config_print_reference(FILE *out) {
    fprintf(out, "| key | type | default | range / values | on resume | meaning |\n");
    fprintf(out, "|---|---|---|---|---|---|\n");
    for (int i = 0; i < flat_key_count(); i++) {
        const key_def *key = &all_keys()[i];
        char range[256] = "", lo[48], hi[48];
        switch (key->type) {
        case STRAND_KEY_INT:
        case STRAND_KEY_INT64:
            if (key->imax == INT64_MAX)
                snprintf(range, sizeof range, ">= %" PRId64, key->imin);
            else
                snprintf(range, sizeof range, "%" PRId64 " to %" PRId64, key->imin, key->imax);
            break;
        case STRAND_KEY_UINT64:
            snprintf(range, sizeof range, "0 to 2^64 - 1");
            break;
        case STRAND_KEY_DOUBLE:
            format_double(key->dmin, lo, sizeof lo);
            format_double(key->dmax, hi, sizeof hi);
            snprintf(range, sizeof range, "%s%s, %s%s", key->flags & STRAND_KEY_MIN_OPEN ? "(" : "[", lo, hi,
                     key->flags & STRAND_KEY_MAX_OPEN ? ")" : "]");
            break;
        case STRAND_KEY_BOOL:
            snprintf(range, sizeof range, "true, false");
            break;
        case STRAND_KEY_STRING:
            snprintf(range, sizeof range, "%s", key->flags & STRAND_KEY_PATH ? "path" : "text");
            break;
        case STRAND_KEY_ENUM:
            for (const char *const *v = key->values; *v; v++) {
                size_t used = strlen(range);
                snprintf(range + used, sizeof range - used, "%s`%s`", v == key->values ? "" : ", ", *v);
            }
            break;
        case STRAND_KEY_LAYERS: {
            char available[128];
            available_mixers(available, sizeof available);
            snprintf(range, sizeof range, "comma-separated mixers: `%s`", available);
            break;
        }
        }
        fprintf(out, "| `%s.%s` | %s | `%s` | %s | %s | %s |\n", key->section, key->name, type_name(key),
                key->def, range, key->flags & STRAND_KEY_RESUMABLE ? "may change" : "must match", key->help);
    }
    fprintf(out, "\nMixers (`model.layers`):\n\n");
    for (int m = 0; strand_mixer_at(m); m++)
        fprintf(out, "- `%s`: %s\n", strand_mixer_at(m)->name, strand_mixer_at(m)->summary);
    fprintf(out,
            "\nA key given twice in a file takes its last value; `--set section.key=value` overrides the "
            "file.\n");
}
