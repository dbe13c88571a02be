/* Run configuration: INI file (libinih) in sections, every key overridable from the command line
 * with --set section.key=value. The key table in config.c is the single source of truth: names,
 * types, defaults, ranges and help text (README's config reference is generated from it by
 * `strand train --help-config`). Unknown keys are errors that suggest the nearest valid key. */
#ifndef STRAND_CONFIG_H
#define STRAND_CONFIG_H

#include "strand/common.h"

#include <stdint.h>
#include <stdio.h>

enum { STRAND_CONFIG_STRING_BYTES = 256 };

typedef struct {
    /* [model] */
    int d_model;
    char layers[STRAND_CONFIG_STRING_BYTES]; /* comma-separated mixer names, one per block */
    char norm[16];                           /* rmsnorm | layernorm */
    char norm_position[16];                  /* pre | post */
    char mlp[16];                            /* gelu | swiglu */
    int mlp_hidden;                          /* hidden width of the MLP (0 = 4*d_model, 8/3*d for swiglu) */
    int conv_kernel;                         /* short causal conv kernel, 2..8 */
    int tie_embeddings;                      /* bool */
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

    /* [conv]: distributed FFT long convolution (hyena, s4d) */
    char conv_strategy[16]; /* auto | fftw-mpi | alltoall */
    char conv_planner[16];  /* estimate | measure */
    char conv_wisdom[1024]; /* FFTW wisdom file ("" = $HOME/.cache/strand/fftw-<precision>.wisdom) */

    /* [s4d] */
    int s4d_state;     /* N: N/2 complex modes per channel */
    char s4d_init[16]; /* lin | inv | legs */
    double s4d_dt_min, s4d_dt_max;

    /* [hyena] */
    int hyena_filter_width; /* hidden width of the implicit filter FFN */
    int hyena_filter_depth; /* hidden sine layers of the filter FFN */
    int hyena_frequencies;  /* positional features: t plus cos/sin of this many frequencies */
    double hyena_sine_freq; /* initial frequency w of the sine activations */
    int64_t hyena_max_len;  /* filter position grid length (0 = train.seq_len) */
    int hyena_short_kernel; /* short causal conv after the input projection */
    double hyena_decay_fast, hyena_decay_slow; /* exponential window decay range */

    /* [attn] */
    int attn_heads;
    int attn_kv_heads;       /* 0 = attn.heads; must divide attn.heads */
    int64_t attn_window;     /* sliding window in tokens (0 = full causal) */
    int attn_segment_memory; /* bool: Transformer-XL memory of the previous window */
    double attn_rope_base;

    /* [checkpoint] */
    int64_t ckpt_every; /* steps between checkpoints (0 = only at the end and on preemption) */
    int ckpt_keep;      /* complete checkpoints kept */

    /* [train] activation memory */
    char recompute[16]; /* none | block */
    char offload[1024]; /* per-rank HDF5 offload directory ("" = off) */

    /* [data] */
    char data_path[1024];

    /* [parallel] */
    int sp;          /* 0 = world size / dp */
    int dp;          /* 0 = world size / sp */
    char layout[16]; /* auto | contiguous | zigzag */

    /* [run] */
    char run_dir[1024];
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
/* Check ranges and cross-key constraints that do not need the world size. */
int strand_config_validate(const strand_config *config);
/* Resolved configuration as INI text (every key, in sections); loading it back gives the same
 * values. snprintf-style: returns the length of the whole text (excluding the terminating zero)
 * whether or not it fit, so it fit when the result is < size. */
size_t strand_config_format(const strand_config *config, char *buffer, size_t size);
/* model.mlp_hidden resolved: the configured width, or for 0 the default of config->mlp (4*d_model
 * for gelu, 8/3*d_model rounded up to a multiple of 8 for swiglu). */
int strand_config_mlp_hidden(const strand_config *config);
/* Print the reference of every key (name, type, default, range, meaning) as a Markdown table. */
void strand_config_print_reference(FILE *out);

#endif
