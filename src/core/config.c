/* Run configuration. One static key table drives defaults, parsing, validation, formatting and the
 * Markdown reference, so a new key is one table row plus its struct field.
 *
 * File syntax (libinih): [section] headers, `key = value` lines, `;` or `#` comments at the start of a
 * line and ` ;` inline comments. Leading whitespace is ignored and values never span lines. A key given
 * twice takes the last value; --set overrides are applied after the file, so they win over it. A failed
 * load or set leaves the configuration unchanged. */
#define _POSIX_C_SOURCE 200809L
#include "strand/config.h"
#include "strand/model.h" /* the mixer registry, for model.layers */

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

enum key_type { T_INT, T_INT64, T_UINT64, T_DOUBLE, T_BOOL, T_STRING, T_ENUM, T_LAYERS };

enum {
    MIN_OPEN = 1u << 0, /* double minimum is exclusive */
    MAX_OPEN = 1u << 1, /* double maximum is exclusive */
};

typedef struct {
    const char *section;
    const char *name;
    enum key_type type;
    size_t offset;
    size_t size;     /* field bytes (string capacity for strings) */
    const char *def; /* default, as it would be written in the file */
    int64_t imin, imax;
    double dmin, dmax;
    unsigned flags;
    const char *const *values; /* T_ENUM: allowed values, NULL-terminated */
    const char *help;
} key_def;

#define FIELD(f) .offset = offsetof(strand_config, f), .size = sizeof(((strand_config *)0)->f)

static const char *const norm_values[] = {"rmsnorm", "layernorm", NULL};
static const char *const norm_position_values[] = {"pre", "post", NULL};
static const char *const mlp_values[] = {"gelu", "swiglu", NULL};
static const char *const layout_values[] = {"auto", "contiguous", "zigzag", NULL};
static const char *const strategy_values[] = {"auto", "fftw-mpi", "alltoall", NULL};
static const char *const planner_values[] = {"auto", "estimate", "measure", NULL};
static const char *const s4d_init_values[] = {"lin", "inv", "legs", NULL};
static const char *const recompute_values[] = {"none", "block", NULL};

static const key_def keys[] = {
    {.section = "model",
     .name = "d_model",
     .type = T_INT,
     FIELD(d_model),
     .def = "128",
     .imin = 8,
     .imax = 65536,
     .help = "Model width (embedding and residual stream)."},
    {.section = "model",
     .name = "layers",
     .type = T_LAYERS,
     FIELD(layers),
     .def = "conv,conv,conv,conv",
     .help = "Mixer of each block, comma-separated; the number of entries is the depth."},
    {.section = "model",
     .name = "norm",
     .type = T_ENUM,
     FIELD(norm),
     .def = "rmsnorm",
     .values = norm_values,
     .help = "Normalization layer."},
    {.section = "model",
     .name = "norm_position",
     .type = T_ENUM,
     FIELD(norm_position),
     .def = "pre",
     .values = norm_position_values,
     .help = "Normalize each sublayer's input (pre) or its residual sum (post)."},
    {.section = "model",
     .name = "mlp",
     .type = T_ENUM,
     FIELD(mlp),
     .def = "gelu",
     .values = mlp_values,
     .help = "Feed-forward block."},
    {.section = "model",
     .name = "mlp_hidden",
     .type = T_INT,
     FIELD(mlp_hidden),
     .def = "0",
     .imin = 0,
     .imax = 1 << 20,
     .help =
         "MLP hidden width; 0 = 4*d_model for gelu, 8/3*d_model rounded up to a multiple of 8 for swiglu."},
    {.section = "model",
     .name = "conv_kernel",
     .type = T_INT,
     FIELD(conv_kernel),
     .def = "4",
     .imin = 2,
     .imax = 8,
     .help = "Kernel width of the short causal convolution."},
    {.section = "model",
     .name = "tie_embeddings",
     .type = T_BOOL,
     FIELD(tie_embeddings),
     .def = "true",
     .help = "Share the input embedding with the output projection."},
    {.section = "model",
     .name = "init_std",
     .type = T_DOUBLE,
     FIELD(init_std),
     .def = "0.02",
     .dmin = 0,
     .dmax = 1,
     .flags = MIN_OPEN,
     .help = "Standard deviation of the normal weight initialization."},
    {.section = "model",
     .name = "norm_eps",
     .type = T_DOUBLE,
     FIELD(norm_eps),
     .def = "1e-5",
     .dmin = 0,
     .dmax = 0.1,
     .flags = MIN_OPEN,
     .help = "Epsilon inside the normalization."},

    {.section = "train",
     .name = "seq_len",
     .type = T_INT64,
     FIELD(seq_len),
     .def = "1024",
     .imin = 2,
     .imax = INT64_C(1) << 40,
     .help = "Tokens per training sequence, split across the sp ranks."},
    {.section = "train",
     .name = "steps",
     .type = T_INT64,
     FIELD(steps),
     .def = "300",
     .imin = 1,
     .imax = INT64_MAX,
     .help = "Optimizer steps."},
    {.section = "train",
     .name = "accum_steps",
     .type = T_INT,
     FIELD(accum_steps),
     .def = "1",
     .imin = 1,
     .imax = 65536,
     .help = "Micro-batches accumulated per optimizer step."},
    {.section = "train",
     .name = "lr",
     .type = T_DOUBLE,
     FIELD(lr),
     .def = "3e-3",
     .dmin = 0,
     .dmax = 10,
     .flags = MIN_OPEN,
     .help = "Peak learning rate (AdamW)."},
    {.section = "train",
     .name = "min_lr_ratio",
     .type = T_DOUBLE,
     FIELD(min_lr_ratio),
     .def = "0.1",
     .dmin = 0,
     .dmax = 1,
     .help = "The cosine schedule decays to lr * min_lr_ratio."},
    {.section = "train",
     .name = "warmup_steps",
     .type = T_INT64,
     FIELD(warmup_steps),
     .def = "20",
     .imin = 0,
     .imax = INT64_MAX,
     .help = "Linear warmup steps (a warmup longer than train.steps covers the whole run)."},
    {.section = "train",
     .name = "weight_decay",
     .type = T_DOUBLE,
     FIELD(weight_decay),
     .def = "0.1",
     .dmin = 0,
     .dmax = 10,
     .help = "AdamW decoupled weight decay."},
    {.section = "train",
     .name = "beta1",
     .type = T_DOUBLE,
     FIELD(beta1),
     .def = "0.9",
     .dmin = 0,
     .dmax = 1,
     .flags = MAX_OPEN,
     .help = "AdamW first-moment decay."},
    {.section = "train",
     .name = "beta2",
     .type = T_DOUBLE,
     FIELD(beta2),
     .def = "0.95",
     .dmin = 0,
     .dmax = 1,
     .flags = MAX_OPEN,
     .help = "AdamW second-moment decay."},
    {.section = "train",
     .name = "adam_eps",
     .type = T_DOUBLE,
     FIELD(adam_eps),
     .def = "1e-8",
     .dmin = 0,
     .dmax = 1,
     .flags = MIN_OPEN,
     .help = "AdamW epsilon."},
    {.section = "train",
     .name = "grad_clip",
     .type = T_DOUBLE,
     FIELD(grad_clip),
     .def = "1.0",
     .dmin = 0,
     .dmax = 1e6,
     .help = "Clip the global gradient norm to this value; 0 = off."},
    {.section = "train",
     .name = "seed",
     .type = T_UINT64,
     FIELD(seed),
     .def = "1234",
     .help = "Seed for initialization and data sampling."},
    {.section = "train",
     .name = "rc_augment",
     .type = T_BOOL,
     FIELD(rc_augment),
     .def = "false",
     .help = "Reverse-complement training windows at random."},
    {.section = "train",
     .name = "log_every",
     .type = T_INT64,
     FIELD(log_every),
     .def = "10",
     .imin = 1,
     .imax = INT64_MAX,
     .help = "Log training metrics every N steps."},
    {.section = "train",
     .name = "eval_windows",
     .type = T_INT64,
     FIELD(eval_windows),
     .def = "8",
     .imin = 0,
     .imax = 1000000,
     .help = "Validation windows evaluated at the end of training; 0 = none."},
    {.section = "train",
     .name = "recompute",
     .type = T_ENUM,
     FIELD(recompute),
     .def = "none",
     .values = recompute_values,
     .help = "Activation memory: keep everything (none), or keep only block inputs and re-run each block's "
             "forward before its backward (block; blocks with the same mixer also share its buffers)."},
    {.section = "train",
     .name = "offload",
     .type = T_STRING,
     FIELD(offload),
     .def = "",
     .help = "Directory on local scratch for per-rank HDF5 offload of block inputs, moved by a "
             "background thread during forward and backward; implies recompute = block. Empty = off."},

    {.section = "conv",
     .name = "strategy",
     .type = T_ENUM,
     FIELD(conv_strategy),
     .def = "auto",
     .values = strategy_values,
     .help = "Distributed long convolution: fftw-mpi (distributed FFT), alltoall (channel transpose + local "
             "FFT), or auto by shape."},
    {.section = "conv",
     .name = "planner",
     .type = T_ENUM,
     FIELD(conv_planner),
     .def = "auto",
     .values = planner_values,
     .help = "FFTW planning effort; measured plans are cached in conv.wisdom. auto measures transforms up "
             "to 2^20 points and estimates longer ones (measuring a genome-length transform takes many "
             "minutes)."},
    {.section = "conv",
     .name = "wisdom",
     .type = T_STRING,
     FIELD(conv_wisdom),
     .def = "",
     .help = "FFTW wisdom file; empty = $HOME/.cache/strand/fftw-<precision>.wisdom."},

    {.section = "s4d",
     .name = "state",
     .type = T_INT,
     FIELD(s4d_state),
     .def = "64",
     .imin = 2,
     .imax = 4096,
     .help = "State size N per channel (N/2 complex modes; even)."},
    {.section = "s4d",
     .name = "init",
     .type = T_ENUM,
     FIELD(s4d_init),
     .def = "lin",
     .values = s4d_init_values,
     .help = "Initialisation of A: S4D-Lin, S4D-Inv, or the HiPPO-LegS normal-part eigenvalues."},
    {.section = "s4d",
     .name = "dt_min",
     .type = T_DOUBLE,
     FIELD(s4d_dt_min),
     .def = "1e-3",
     .dmin = 0,
     .dmax = 1,
     .flags = MIN_OPEN,
     .help = "Smallest initial step size (log-uniform between dt_min and dt_max)."},
    {.section = "s4d",
     .name = "dt_max",
     .type = T_DOUBLE,
     FIELD(s4d_dt_max),
     .def = "1e-1",
     .dmin = 0,
     .dmax = 10,
     .flags = MIN_OPEN,
     .help = "Largest initial step size."},

    {.section = "hyena",
     .name = "filter_width",
     .type = T_INT,
     FIELD(hyena_filter_width),
     .def = "64",
     .imin = 2,
     .imax = 4096,
     .help = "Hidden width of the implicit long filter's FFN."},
    {.section = "hyena",
     .name = "filter_depth",
     .type = T_INT,
     FIELD(hyena_filter_depth),
     .def = "2",
     .imin = 1,
     .imax = 8,
     .help = "Hidden sine layers in the implicit filter's FFN."},
    {.section = "hyena",
     .name = "frequencies",
     .type = T_INT,
     FIELD(hyena_frequencies),
     .def = "8",
     .imin = 1,
     .imax = 1024,
     .help = "Positional features of the filter: t plus cos and sin of this many frequencies."},
    {.section = "hyena",
     .name = "sine_freq",
     .type = T_DOUBLE,
     FIELD(hyena_sine_freq),
     .def = "10",
     .dmin = 0,
     .dmax = 1000,
     .flags = MIN_OPEN,
     .help = "Initial frequency w of the filter's sin(w x) activations (trainable)."},
    {.section = "hyena",
     .name = "max_len",
     .type = T_INT64,
     FIELD(hyena_max_len),
     .def = "0",
     .imin = 0,
     .imax = INT64_C(1) << 40,
     .help =
         "Length of the filter's position grid; 0 = train.seq_len. Set it to the longest window ever used."},
    {.section = "hyena",
     .name = "short_kernel",
     .type = T_INT,
     FIELD(hyena_short_kernel),
     .def = "3",
     .imin = 2,
     .imax = 8,
     .help = "Short causal depthwise conv after the input projection."},
    {.section = "hyena",
     .name = "decay_fast",
     .type = T_DOUBLE,
     FIELD(hyena_decay_fast),
     .def = "0.3",
     .dmin = 0,
     .dmax = 100,
     .flags = MIN_OPEN,
     .help = "Fastest decay of the filter's exponential window (fraction of the grid)."},
    {.section = "hyena",
     .name = "decay_slow",
     .type = T_DOUBLE,
     FIELD(hyena_decay_slow),
     .def = "1.5",
     .dmin = 0,
     .dmax = 100,
     .flags = MIN_OPEN,
     .help = "Slowest decay of the filter's exponential window (fraction of the grid)."},

    {.section = "attn",
     .name = "heads",
     .type = T_INT,
     FIELD(attn_heads),
     .def = "4",
     .imin = 1,
     .imax = 1024,
     .help = "Attention heads (must divide model.d_model)."},
    {.section = "attn",
     .name = "kv_heads",
     .type = T_INT,
     FIELD(attn_kv_heads),
     .def = "0",
     .imin = 0,
     .imax = 1024,
     .help = "Key/value heads for grouped-query attention; 0 = attn.heads. Must divide attn.heads."},
    {.section = "attn",
     .name = "window",
     .type = T_INT64,
     FIELD(attn_window),
     .def = "0",
     .imin = 0,
     .imax = INT64_C(1) << 40,
     .help = "Sliding-window attention span in tokens; 0 = full causal attention."},
    {.section = "attn",
     .name = "segment_memory",
     .type = T_BOOL,
     FIELD(attn_segment_memory),
     .def = "false",
     .help = "Transformer-XL memory: attend to the previous window's keys and values (no gradient)."},
    {.section = "attn",
     .name = "rope_base",
     .type = T_DOUBLE,
     FIELD(attn_rope_base),
     .def = "10000",
     .dmin = 1,
     .dmax = 1e12,
     .help = "Base of the rotary position embedding's frequencies."},

    {.section = "checkpoint",
     .name = "every",
     .type = T_INT64,
     FIELD(ckpt_every),
     .def = "0",
     .imin = 0,
     .imax = INT64_MAX,
     .help = "Steps between checkpoints; 0 = only at the end and on preemption."},
    {.section = "checkpoint",
     .name = "keep",
     .type = T_INT,
     FIELD(ckpt_keep),
     .def = "3",
     .imin = 1,
     .imax = 1000000,
     .help = "Complete checkpoints kept in the run directory (older ones are removed)."},

    {.section = "data",
     .name = "path",
     .type = T_STRING,
     FIELD(data_path),
     .def = "data/lambda.h5",
     .help = "HDF5 dataset file."},

    {.section = "parallel",
     .name = "sp",
     .type = T_INT,
     FIELD(sp),
     .def = "0",
     .imin = 0,
     .imax = 1 << 20,
     .help = "Sequence-parallel ranks per replica; 0 = world size / dp."},
    {.section = "parallel",
     .name = "dp",
     .type = T_INT,
     FIELD(dp),
     .def = "0",
     .imin = 0,
     .imax = 1 << 20,
     .help = "Data-parallel replicas; 0 = world size / sp."},
    {.section = "parallel",
     .name = "layout",
     .type = T_ENUM,
     FIELD(layout),
     .def = "auto",
     .values = layout_values,
     .help = "Positions per rank: contiguous pieces, or zigzag (chunks r and 2*SP-1-r, balanced causal "
             "attention); auto = zigzag when the model has full (unwindowed) attention."},

    {.section = "run",
     .name = "dir",
     .type = T_STRING,
     FIELD(run_dir),
     .def = "runs/default",
     .help = "Run directory: resolved config.ini, metrics.jsonl and summary.json."},
};
enum { KEY_COUNT = sizeof keys / sizeof keys[0] };

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
    for (int i = 0; i < KEY_COUNT; i++) {
        char name[128];
        full_name(&keys[i], name, sizeof name);
        size_t distance = levenshtein(typed, name);
        if (bare) {
            /* "lr" on its own most likely means train.lr. */
            size_t bare_distance = levenshtein(typed, keys[i].name);
            if (bare_distance < distance) distance = bare_distance;
        }
        if (distance < best_distance) {
            best_distance = distance;
            best = &keys[i];
        }
    }
    return best && close_enough(best_distance, typed) ? best : NULL;
}

static bool section_known(const char *section) {
    for (int i = 0; i < KEY_COUNT; i++)
        if (strcmp(keys[i].section, section) == 0) return true;
    return false;
}

static const char *suggest_section(const char *typed) {
    const char *best = NULL;
    size_t best_distance = SIZE_MAX;
    for (int i = 0; i < KEY_COUNT; i++) {
        size_t distance = levenshtein(typed, keys[i].section);
        if (distance < best_distance) {
            best_distance = distance;
            best = keys[i].section;
        }
    }
    return best && close_enough(best_distance, typed) ? best : NULL;
}

static const key_def *find_key(const char *section, const char *name) {
    for (int i = 0; i < KEY_COUNT; i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0) return &keys[i];
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
    case T_INT:
    case T_INT64:
        if (key->imax == INT64_MAX)
            snprintf(buffer, size, ">= %" PRId64, key->imin);
        else
            snprintf(buffer, size, ">= %" PRId64 " and <= %" PRId64, key->imin, key->imax);
        return;
    case T_UINT64:
        snprintf(buffer, size, ">= 0 and <= %" PRIu64, UINT64_MAX);
        return;
    case T_DOUBLE:
        format_double(key->dmin, lo, sizeof lo);
        format_double(key->dmax, hi, sizeof hi);
        snprintf(buffer, size, "%s %s and %s %s", key->flags & MIN_OPEN ? ">" : ">=", lo,
                 key->flags & MAX_OPEN ? "<" : "<=", hi);
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
    bool above = key->flags & MIN_OPEN ? value > key->dmin : value >= key->dmin;
    bool below = key->flags & MAX_OPEN ? value < key->dmax : value <= key->dmax;
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

static int check_enum(const key_def *key, const char *text, const char **canonical, char *err, size_t size) {
    char allowed[128] = "";
    for (const char *const *v = key->values; *v; v++) {
        if (strcasecmp(text, *v) == 0) {
            *canonical = *v;
            return STRAND_OK;
        }
        size_t used = strlen(allowed);
        snprintf(allowed + used, sizeof allowed - used, "%s%s", v == key->values ? "" : ", ", *v);
    }
    char what[192];
    snprintf(what, sizeof what, "must be one of %s", allowed);
    return value_error(STRAND_ERR_CONFIG, key, text, err, size, what);
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
    case T_INT:
    case T_INT64: {
        int64_t value = 0;
        status = parse_integer(key, text, &value, err, size);
        if (status != STRAND_OK) return status;
        if (key->type == T_INT) {
            int narrow = (int)value;
            memcpy(field, &narrow, sizeof narrow);
        } else {
            memcpy(field, &value, sizeof value);
        }
        return STRAND_OK;
    }
    case T_UINT64: {
        uint64_t value = 0;
        status = parse_unsigned(key, text, &value, err, size);
        if (status == STRAND_OK) memcpy(field, &value, sizeof value);
        return status;
    }
    case T_DOUBLE: {
        double value = 0;
        status = parse_double(key, text, &value, err, size);
        if (status == STRAND_OK) memcpy(field, &value, sizeof value);
        return status;
    }
    case T_BOOL: {
        int value = 0;
        status = parse_bool(key, text, &value, err, size);
        if (status == STRAND_OK) memcpy(field, &value, sizeof value);
        return status;
    }
    case T_STRING:
        status = check_string(key, text, err, size);
        if (status == STRAND_OK) write_string(config, key, text);
        return status;
    case T_ENUM: {
        const char *canonical = NULL;
        status = check_enum(key, text, &canonical, err, size);
        if (status == STRAND_OK) write_string(config, key, canonical);
        return status;
    }
    case T_LAYERS: {
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
    case T_INT: {
        int value;
        memcpy(&value, field, sizeof value);
        snprintf(buffer, size, "%d", value);
        return;
    }
    case T_INT64: {
        int64_t value;
        memcpy(&value, field, sizeof value);
        snprintf(buffer, size, "%" PRId64, value);
        return;
    }
    case T_UINT64: {
        uint64_t value;
        memcpy(&value, field, sizeof value);
        snprintf(buffer, size, "%" PRIu64, value);
        return;
    }
    case T_DOUBLE: {
        double value;
        memcpy(&value, field, sizeof value);
        format_double(value, buffer, size);
        return;
    }
    case T_BOOL: {
        int value;
        memcpy(&value, field, sizeof value);
        snprintf(buffer, size, "%s", value ? "true" : "false");
        return;
    }
    case T_STRING:
    case T_ENUM:
    case T_LAYERS:
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
    case T_INT: {
        int value;
        memcpy(&value, field, sizeof value);
        return int_in_range(key, value) ? STRAND_OK : range_error(key, text, err, size);
    }
    case T_INT64: {
        int64_t value;
        memcpy(&value, field, sizeof value);
        return int_in_range(key, value) ? STRAND_OK : range_error(key, text, err, size);
    }
    case T_UINT64:
        return STRAND_OK;
    case T_DOUBLE: {
        double value;
        memcpy(&value, field, sizeof value);
        if (!isfinite(value))
            return value_error(STRAND_ERR_CONFIG, key, text, err, size, "must be a finite number");
        return double_in_range(key, value) ? STRAND_OK : range_error(key, text, err, size);
    }
    case T_BOOL: {
        int value;
        memcpy(&value, field, sizeof value);
        return value == 0 || value == 1
                   ? STRAND_OK
                   : value_error(STRAND_ERR_CONFIG, key, text, err, size, "must be 0 or 1");
    }
    case T_STRING:
    case T_ENUM:
    case T_LAYERS: {
        if (!memchr(field, '\0', key->size))
            return value_error(STRAND_ERR_CONFIG, key, text, err, size, "is not zero-terminated");
        if (key->type == T_STRING) return check_string(key, field, err, size);
        if (key->type == T_LAYERS) {
            char normalized[STRAND_CONFIG_STRING_BYTES];
            int status = check_string(key, field, err, size);
            return status != STRAND_OK ? status : check_layers(key, field, normalized, err, size);
        }
        for (const char *const *v = key->values; *v; v++)
            if (strcmp(field, *v) == 0) return STRAND_OK;
        const char *canonical = NULL;
        int status = check_enum(key, field, &canonical, err, size);
        /* A different case of a valid name is still not what consumers compare against. */
        return status != STRAND_OK
                   ? status
                   : value_error(STRAND_ERR_CONFIG, key, text, err, size, "must be written in lower case");
    }
    }
    return STRAND_ERR_INTERNAL;
}

/* ---------------------------------------------------------------------------------------------- */
/* Public API */

void strand_config_defaults(strand_config *config) {
    memset(config, 0, sizeof *config);
    for (int i = 0; i < KEY_COUNT; i++) {
        char err[ERR_BYTES];
        int status = apply_value(config, &keys[i], keys[i].def, err, sizeof err);
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

/* Pairs of keys where the first is a minimum of the second. Checked whatever the mixers, so a
 * configuration is valid or not on its own. */
static const struct {
    size_t low, high;
    const char *low_name, *high_name, *why;
} ordered_pairs[] = {
    {offsetof(strand_config, s4d_dt_min), offsetof(strand_config, s4d_dt_max), "s4d.dt_min", "s4d.dt_max",
     "initial step sizes are drawn log-uniformly between them"},
    {offsetof(strand_config, hyena_decay_fast), offsetof(strand_config, hyena_decay_slow), "hyena.decay_fast",
     "hyena.decay_slow", "the fastest decay is the smaller fraction of the grid"},
};

int strand_config_validate(const strand_config *config) {
    char err[ERR_BYTES];
    for (int i = 0; i < KEY_COUNT; i++) {
        int status = check_stored(config, &keys[i], err, sizeof err);
        if (status != STRAND_OK) STRAND_FAIL(status, "%s", err);
    }
    for (size_t i = 0; i < sizeof ordered_pairs / sizeof ordered_pairs[0]; i++) {
        double low, high;
        memcpy(&low, (const char *)config + ordered_pairs[i].low, sizeof low);
        memcpy(&high, (const char *)config + ordered_pairs[i].high, sizeof high);
        if (low <= high) continue;
        char a[48], b[48];
        format_double(low, a, sizeof a);
        format_double(high, b, sizeof b);
        STRAND_FAIL(STRAND_ERR_CONFIG, "%s = %s must not exceed %s = %s (%s)", ordered_pairs[i].low_name, a,
                    ordered_pairs[i].high_name, b, ordered_pairs[i].why);
    }
    return STRAND_OK;
}

int strand_config_mlp_hidden(const strand_config *config) {
    if (config->mlp_hidden > 0) return config->mlp_hidden;
    if (strcmp(config->mlp, "swiglu") == 0) return 8 * ((config->d_model + 2) / 3); /* ceil(8d/3) up to 8 */
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
    const char *section = NULL;
    for (int i = 0; i < KEY_COUNT; i++) {
        if (!section || strcmp(section, keys[i].section) != 0) {
            sink_put(&sink, "%s[%s]\n", section ? "\n" : "", keys[i].section);
            section = keys[i].section;
        }
        char value[STRAND_CONFIG_STRING_BYTES * 4 + 8];
        format_value(config, &keys[i], value, sizeof value);
        sink_put(&sink, "%s = %s\n", keys[i].name, value);
    }
    return sink.length;
}

static const char *type_name(const key_def *key) {
    switch (key->type) {
    case T_INT:
    case T_INT64:
        return "int";
    case T_UINT64:
        return "uint64";
    case T_DOUBLE:
        return "float";
    case T_BOOL:
        return "bool";
    case T_STRING:
        return "string";
    case T_ENUM:
        return "enum";
    case T_LAYERS:
        return "list";
    }
    return "?";
}

void strand_config_print_reference(FILE *out) {
    fprintf(out, "| key | type | default | range / values | meaning |\n");
    fprintf(out, "|---|---|---|---|---|\n");
    for (int i = 0; i < KEY_COUNT; i++) {
        const key_def *key = &keys[i];
        char range[256] = "", lo[48], hi[48];
        switch (key->type) {
        case T_INT:
        case T_INT64:
            if (key->imax == INT64_MAX)
                snprintf(range, sizeof range, ">= %" PRId64, key->imin);
            else
                snprintf(range, sizeof range, "%" PRId64 " to %" PRId64, key->imin, key->imax);
            break;
        case T_UINT64:
            snprintf(range, sizeof range, "0 to 2^64 - 1");
            break;
        case T_DOUBLE:
            format_double(key->dmin, lo, sizeof lo);
            format_double(key->dmax, hi, sizeof hi);
            snprintf(range, sizeof range, "%s%s, %s%s", key->flags & MIN_OPEN ? "(" : "[", lo, hi,
                     key->flags & MAX_OPEN ? ")" : "]");
            break;
        case T_BOOL:
            snprintf(range, sizeof range, "true, false");
            break;
        case T_STRING:
            snprintf(range, sizeof range, "path");
            break;
        case T_ENUM:
            for (const char *const *v = key->values; *v; v++) {
                size_t used = strlen(range);
                snprintf(range + used, sizeof range - used, "%s`%s`", v == key->values ? "" : ", ", *v);
            }
            break;
        case T_LAYERS: {
            char available[128];
            available_mixers(available, sizeof available);
            snprintf(range, sizeof range, "comma-separated mixers: `%s`", available);
            break;
        }
        }
        fprintf(out, "| `%s.%s` | %s | `%s` | %s | %s |\n", key->section, key->name, type_name(key), key->def,
                range, key->help);
    }
    fprintf(out,
            "\nA key given twice in a file takes its last value; `--set section.key=value` overrides the "
            "file.\n");
}
