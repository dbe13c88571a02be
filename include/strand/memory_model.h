/* Predicted peak memory of one rank for a configuration and a DP x SP grid, without training and
 * without a communicator of that size (`strand train --dry-run`).
 *
 * The estimate mirrors the allocations of strand_model_create and the mixers' setup (including
 * train.recompute = block, where blocks share one set of activations and blocks with the same
 * mixer share that mixer's buffers), fftconv.c for the strategy conv.strategy resolves to,
 * ring_attn.c, train.c (token buffers, optimizer) and the loader. Every buffer is zeroed when it is
 * allocated, so allocated bytes are resident bytes. The rank modelled is the most loaded one: the
 * largest shard of the window (train.seq_len tokens) under the layout strand train uses. What is
 * not strand's own allocation (MPI, HDF5, BLAS, FFTW plans, program text) is the baseline. */
#ifndef STRAND_MEMORY_MODEL_H
#define STRAND_MEMORY_MODEL_H

#include "strand/config.h"

#include <stdint.h>

enum strand_memory_component {
    STRAND_MEM_PARAMS,       /* the flat parameter array */
    STRAND_MEM_GRADS,        /* the flat gradient array and MPI_Allreduce's scratch for it */
    STRAND_MEM_OPTIMIZER,    /* AdamW m and v */
    STRAND_MEM_ACTIVATIONS,  /* saved block activations (norms, mixer output, MLP) */
    STRAND_MEM_BLOCK_INPUTS, /* each block's input x (3 rotating buffers with train.offload) */
    STRAND_MEM_HEAD,         /* final norm, logits, probabilities, losses */
    STRAND_MEM_GRAD_SCRATCH, /* the model's backward scratch (residual, MLP and logits gradients) */
    STRAND_MEM_MIXERS,       /* mixers' own activations, scratch, tables and halo rows */
    STRAND_MEM_FFT,          /* long-convolution (fftconv) spectra, channel blocks, exchange staging */
    STRAND_MEM_RING,         /* ring-attention K/V and dK/dV buffers, tiles, accumulators */
    STRAND_MEM_DATA,         /* token windows, read buffer, checkpoint metadata scratch */
    STRAND_MEM_BASELINE,     /* the process without strand's buffers: libraries, MPI, HDF5, BLAS */
    STRAND_MEM_COMPONENTS
};

typedef struct {
    int sp, dp;
    int layout;         /* enum strand_layout_kind */
    int64_t rows;       /* rows of the most loaded rank's shard */
    int64_t parameters; /* elements of the flat parameter array (as strand_model_create) */
    int conv_strategy;  /* enum strand_conv_strategy of the long convolution; AUTO when none */
    int shared_mixers;  /* train.recompute = block: one buffer set per mixer type */
    int64_t bytes[STRAND_MEM_COMPONENTS];
    int64_t total; /* sum of bytes[] */
} strand_memory_report;

/* Baseline assumed by strand_memory_estimate until strand_memory_set_baseline replaces it: the
 * strand binary's resident memory after MPI_Init at 1 rank (23 MiB) plus what training touches
 * later (11 MiB, see memory_model.c). */
enum { STRAND_MEMORY_BASELINE_DEFAULT = 34 * 1024 * 1024 };

/* Predict the peak bytes of the most loaded rank of an sp x dp grid. A pure function: no MPI, no
 * files, no model-sized allocation. Refuses, with the message strand train would give, a
 * configuration that training would refuse (unknown mixer, a window shorter than the SP group, a
 * mixer option out of range, an exchange too large for MPI counts). */
int strand_memory_estimate(const strand_config *config, int sp, int dp, strand_memory_report *out);

/* Replace the report's baseline (and total) by `bytes`. */
void strand_memory_set_baseline(strand_memory_report *report, int64_t bytes);

/* This process's baseline as training will see it: its resident memory now (VmRSS, from
 * /proc/self/status) plus what training touches later outside strand's buffers. Call it after
 * MPI_Init and before any model-sized allocation. */
int strand_memory_process_baseline(int64_t *bytes);

/* Short column name of a component ("params", "grads", ...). */
const char *strand_memory_component_name(int component);

#endif
