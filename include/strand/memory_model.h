/* Predicted peak memory of one rank for a configuration and a DP x SP grid, without training and
 * without a communicator of that size (`strand train --dry-run`).
 *
 * The estimate is the memory plan (plan.h) that strand_model_create and the trainer allocate, built
 * by the same declarations (including train.recompute = block, where blocks share one set of
 * activations and blocks with the same mixer share that mixer's buffers). Every buffer is zeroed
 * when it is allocated, so allocated bytes are resident bytes. For a grid that does not exist,
 * FFTW-MPI's local sizes are estimated; at the grid's own size (strand_memory_estimate_here) the
 * plan is exactly the allocated one. The rank modelled is the most loaded one: the
 * largest shard of the window (train.seq_len tokens) under the layout strand train uses. What is
 * not strand's own allocation (MPI, HDF5, BLAS, FFTW plans, program text) is the baseline. */
#ifndef STRAND_MEMORY_MODEL_H
#define STRAND_MEMORY_MODEL_H

#include "strand/config.h"
#include "strand/layout.h"
#include "strand/plan.h"

#include <stdint.h>

typedef struct {
    int sp, dp;
    int layout;         /* enum strand_layout_kind */
    int64_t rows;       /* rows of the most loaded rank's shard */
    int64_t parameters; /* elements of the flat parameter array (as strand_model_create) */
    int conv_strategy;  /* enum strand_conv_strategy of the long convolution; AUTO when none */
    int shared_mixers;  /* train.recompute = block: one buffer set per mixer type */
    int64_t bytes[STRAND_MEM_COMPONENTS];
    int64_t planned; /* bytes of the memory plan alone (what strand allocates) */
    int64_t total;   /* sum of bytes[] */
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

/* The same for this rank of a grid that exists (collective over the SP group): the plan strand
 * train would allocate here, exactly. *plan, when not NULL, receives the plan (free it). */
int strand_memory_estimate_here(const strand_config *config, const strand_shard *shard,
                                strand_memory_report *out, strand_plan *plan);

/* Replace the report's baseline (and total) by `bytes`. */
void strand_memory_set_baseline(strand_memory_report *report, int64_t bytes);

/* This process's baseline as training will see it: its resident memory now (VmRSS, from
 * /proc/self/status) plus what training touches later outside strand's buffers. Call it after
 * MPI_Init and before any model-sized allocation. */
int strand_memory_process_baseline(int64_t *bytes);

/* Short column name of a component ("params", "grads", ...). */
const char *strand_memory_component_name(int component);

#endif
