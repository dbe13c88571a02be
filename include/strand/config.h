/* Run configuration: INI file (libinih) in sections, every key overridable from the command line
 * with --set section.key=value. The key rows (config.c for the generic sections, each mixer's file
 * for its own) are the single source of truth: names, types, defaults, ranges, help text and
 * whether a key may change on resume (README's config reference is generated from them by
 * `strand train --help-config`). Unknown keys are errors that suggest the nearest valid key. */
#ifndef STRAND_CONFIG_H
#define STRAND_CONFIG_H

#include "strand/common.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum { STRAND_CONFIG_STRING_BYTES = 256 };

/* Enumerated keys are parsed once into these (the index of the value in the key's list). */
enum strand_norm_kind { STRAND_NORM_RMSNORM, STRAND_NORM_LAYERNORM };
enum strand_norm_position { STRAND_NORM_PRE, STRAND_NORM_POST };
enum strand_mlp_kind { STRAND_MLP_GELU, STRAND_MLP_SWIGLU };
enum strand_recompute_kind { STRAND_RECOMPUTE_NONE, STRAND_RECOMPUTE_BLOCK };
enum strand_layout_choice {
    STRAND_LAYOUT_CHOICE_AUTO,
    STRAND_LAYOUT_CHOICE_CONTIGUOUS,
    STRAND_LAYOUT_CHOICE_ZIGZAG
};
/* fft.strategy: the values of enum strand_conv_strategy (kernels/fftconv.h). */
enum strand_fft_strategy {
    STRAND_FFT_STRATEGY_AUTO,
    STRAND_FFT_STRATEGY_FFTW_MPI,
    STRAND_FFT_STRATEGY_ALLTOALL
};
/* fft.planner: 0 estimate, 1 measure, 2 auto (measure up to a size), as fftconv's `measure`. */
enum strand_fft_planner { STRAND_FFT_PLAN_ESTIMATE, STRAND_FFT_PLAN_MEASURE, STRAND_FFT_PLAN_AUTO };

/* ---- key rows ----
 * One row per key: the generic sections' rows live in config.c, each mixer's in its own file (its
 * ops table, model.h), with offsets into that mixer's options struct. Every consumer (parsing,
 * validation, formatting, --help-config, the resume check) reads these rows. */
typedef enum {
    STRAND_KEY_INT,    /* int */
    STRAND_KEY_INT64,  /* int64_t */
    STRAND_KEY_UINT64, /* uint64_t */
    STRAND_KEY_DOUBLE, /* double */
    STRAND_KEY_BOOL,   /* int, 0 or 1 */
    STRAND_KEY_STRING, /* char[size] */
    STRAND_KEY_ENUM,   /* int: index into values */
    STRAND_KEY_LAYERS, /* char[size]: comma-separated mixer names */
} strand_key_type;

enum {
    STRAND_KEY_MIN_OPEN = 1u << 0,  /* double minimum is exclusive */
    STRAND_KEY_MAX_OPEN = 1u << 1,  /* double maximum is exclusive */
    STRAND_KEY_RESUMABLE = 1u << 2, /* may differ from the checkpoint's value on resume */
    /* 0 means "the window" (train.seq_len): code that changes seq_len for another purpose
     * (sampling) pins such keys first with strand_config_pin_window_keys. */
    STRAND_KEY_ZERO_IS_WINDOW = 1u << 3,
    STRAND_KEY_PATH = 1u << 4, /* STRAND_KEY_STRING naming a file or directory (--help-config says so) */
};

typedef struct {
    const char *section;
    const char *name;
    strand_key_type type;
    size_t offset;   /* in strand_config, or in the mixer's options struct for a mixer's row */
    size_t size;     /* field bytes (string capacity for strings) */
    const char *def; /* default, as it would be written in the file */
    int64_t imin, imax;
    double dmin, dmax;
    unsigned flags;
    const char *const *values; /* STRAND_KEY_ENUM: allowed values, NULL-terminated */
    const char *help;
} strand_config_key;

#define STRAND_KEY_FIELD(type, field) .offset = offsetof(type, field), .size = sizeof(((type *)0)->field)

/* Each registered mixer keeps its options (its own struct, declared in its file) in one of these
 * blocks, indexed by its place in the registry; plain bytes, so the configuration stays one value
 * that copies with `=`. */
enum { STRAND_MAX_MIXERS = 24, STRAND_MIXER_OPTION_BYTES = 192 };
typedef union {
    max_align_t align;
    unsigned char bytes[STRAND_MIXER_OPTION_BYTES];
} strand_mixer_options_block;

typedef struct {
    /* [model] */
    int d_model;
    char layers[STRAND_CONFIG_STRING_BYTES]; /* comma-separated mixer names, one per block */
    int norm;                                /* enum strand_norm_kind */
    int norm_position;                       /* enum strand_norm_position */
    int mlp;                                 /* enum strand_mlp_kind */
    int mlp_hidden;                          /* hidden width of the MLP (0 = 4*d_model, 8/3*d for swiglu) */
    int tie_embeddings;                      /* bool */
    int vocab;                               /* model.vocab: 0 = the dataset's tokenizer's */
    /* Not a key: the vocabulary in use, set from the dataset by whoever opens it (0: model.vocab,
     * or the nucleotide tokenizer's when that is 0 too). strand_config_vocab reads it. */
    int vocab_size;
    double init_std;
    double norm_eps;

    /* [train] */
    int64_t seq_len;
    int64_t steps;
    int accum_steps;
    double lr;
    double min_lr_ratio; /* cosine decays to lr * min_lr_ratio */
    int64_t warmup_steps;
    double weight_decay;
    double beta1, beta2, adam_eps;
    double grad_clip; /* 0 = off */
    uint64_t seed;
    int rc_augment; /* bool: reverse-complement augmentation */
    int64_t log_every;
    int64_t eval_windows; /* validation windows at the end of training (0 = none) */

    /* [fft]: the distributed FFT long convolution (mixers that are long convolutions) */
    int fft_strategy;      /* enum strand_fft_strategy */
    int fft_planner;       /* enum strand_fft_planner */
    char fft_wisdom[1024]; /* FFTW wisdom file ("" = $HOME/.cache/strand/fftw-<precision>.wisdom) */

    /* [checkpoint] */
    int64_t ckpt_every; /* steps between checkpoints (0 = only at the end and on preemption) */
    int ckpt_keep;      /* complete checkpoints kept */

    /* [train] activation memory */
    int recompute;      /* enum strand_recompute_kind */
    char offload[1024]; /* per-rank HDF5 offload directory ("" = off) */

    /* [data] */
    char data_path[1024];

    /* [parallel] */
    int sp;      /* 0 = world size / dp */
    int dp;      /* 0 = world size / sp */
    int layout;  /* enum strand_layout_choice */
    int threads; /* threads per rank: OpenMP loops, FFTW plans and row blocks of the GEMMs */

    /* [run] */
    char run_dir[1024];

    /* every registered mixer's options (strand_mixer_options in model.h) */
    strand_mixer_options_block mixer_options[STRAND_MAX_MIXERS];
} strand_config;

/* Defaults for every key. */
void strand_config_defaults(strand_config *config);
/* Load an INI file on top of the current values. Errors name file, line and key. */
int strand_config_load_file(strand_config *config, const char *path);
/* Load INI text held in memory (e.g. a checkpoint's resolved config); `name` appears in messages
 * in place of a file name. */
int strand_config_load_text(strand_config *config, const char *text, const char *name);
/* Apply one "section.key=value" override. */
int strand_config_set(strand_config *config, const char *assignment);
/* Check ranges, then the cross-key constraints that do not need the world size (the model's, then
 * each mixer's own validate, for every mixer whatever model.layers names, so a configuration is
 * valid or not on its own). */
int strand_config_validate(const strand_config *config);
/* Resolved configuration as INI text (every key, in sections); loading it back gives the same
 * values. snprintf-style: returns the length of the whole text (excluding the terminating zero)
 * whether or not it fit, so it fit when the result is < size. */
size_t strand_config_format(const strand_config *config, char *buffer, size_t size);
/* model.mlp_hidden resolved: the configured width, or for 0 the default of config->mlp (4*d_model
 * for gelu, 8/3*d_model rounded up to a multiple of 8 for swiglu). */
int strand_config_mlp_hidden(const strand_config *config);
/* The model's vocabulary: vocab_size, else model.vocab, else the nucleotide tokenizer's 8. */
int strand_config_vocab(const strand_config *config);
/* Take the vocabulary from a dataset's tokenizer (vocab_size tokens): refused, naming `path`, when
 * model.vocab is set to another size. */
int strand_config_take_vocab(strand_config *config, int vocab_size, const char *path);
/* Set every STRAND_KEY_ZERO_IS_WINDOW key that is 0 to train.seq_len (before seq_len changes). */
void strand_config_pin_window_keys(strand_config *config);
/* The row of "section.key" (NULL when there is none). */
const strand_config_key *strand_config_find_key(const char *full_name);
/* Print the reference of every key (name, type, default, range, meaning) as a Markdown table. */
void strand_config_print_reference(FILE *out);

#endif
