/* Generation from a checkpoint's model. */
#ifndef STRAND_SAMPLE_H
#define STRAND_SAMPLE_H

#include "strand/config.h"

typedef struct {
    const char *checkpoint; /* resolved checkpoint file */
    const char *prompt;     /* A/C/G/T/N letters (either case) */
    int64_t length;         /* tokens to generate */
    uint64_t seed;
    double temperature; /* > 0 */
} strand_sample_options;

/* Generate options->length bases after the prompt with the model of a checkpoint, the window of
 * prompt + length positions sharded over the SP ranks of `world` (dp = 1). Each new token re-runs
 * the causal forward over the whole window (positions after the current one hold padding, which a
 * causal model never sees), so the cost per token is one forward pass: O(L) for conv and s4d in
 * convolution mode, O(L log L) for hyena, O(L^2) for attention. The draw for position t is a pure
 * function of (seed, t), so the output does not depend on the number of ranks beyond rounding.
 * out receives prompt + generated letters (length + prompt length + 1 bytes). Collective. */
int strand_sample(const strand_config *config, MPI_Comm world, const strand_sample_options *options,
                  char *out);

#endif
