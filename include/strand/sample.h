/* Generation from a checkpoint's model. */
#ifndef STRAND_SAMPLE_H
#define STRAND_SAMPLE_H

#include "strand/config.h"

enum strand_sample_mode {
    /* One position at a time through every mixer's step mode (model_step.h), on rank 0:
     * the prompt is fed through the steps too (prefill). Per generated token: each mixer's
     * step_cost (model.h), plus O(C (C + F)) per block and O(C V) for the head. */
    STRAND_SAMPLE_INCREMENTAL = 0,
    /* One whole-window causal forward per token, the window sharded over the ranks (positions
     * after the current one hold padding, which a causal model never sees): each mixer's
     * forward_cost per token. */
    STRAND_SAMPLE_RECOMPUTE = 1,
};

typedef struct {
    const char *checkpoint; /* resolved checkpoint file */
    const char *prompt;     /* A/C/G/T/N letters (either case) */
    int64_t length;         /* tokens to generate (each decodes to its bases) */
    uint64_t seed;
    double temperature; /* > 0 */
    int mode;           /* enum strand_sample_mode (0 = incremental) */
} strand_sample_options;

/* Generate options->length bases after the prompt with the model of a checkpoint (window of
 * L = prompt + length positions; a key where 0 means the window keeps the training window's). Incremental
 * mode decodes on rank 0 and broadcasts the result (every rank reads the parameters); recompute mode shards
 * the window over the SP ranks of `world` (dp = 1). The draw for position t is a pure function of (seed, t)
 * and of the logits at t-1, so the output depends neither on the number of ranks nor on the mode beyond
 * rounding. Carried state is reset before every forward: a sampled sequence is one window. The prompt is
 * encoded with the checkpoint's tokenizer; *out receives (malloc'd, the caller frees it) the prompt's
 * letters and the bases of the generated tokens, NUL-terminated, on every rank. Collective. */
int strand_sample(const strand_config *config, MPI_Comm world, const strand_sample_options *options,
                  char **out);

#endif
