/* Distributed causal long convolution over the SP group.
 *
 *   y[t,c] = sum_{s=0}^{t} k[t-s,c] * u[s,c]        for global positions t = 0..L-1
 *
 * u, k and y are sharded like every activation: this rank holds the rows of its shard (layout
 * contiguous or zigzag, see layout.h), row-major (T,C). The kernel k is indexed by lag and
 * sharded the same way: row i of the local k is lag strand_shard_position(shard, i), so a mixer
 * generates the kernel for its own positions only.
 *
 * The transform size N is a fast size (2^a 3^b 5^c) >= 2L, so no circular wrap-around lets
 * the future leak into the past. Two strategies:
 *  - STRAND_CONV_FFTW_MPI: one distributed 1-D complex FFT of all channels over the SP group
 *    (fftw(f)_mpi_plan_many_dft), forward with FFTW_MPI_SCRAMBLED_OUT and inverse with
 *    FFTW_MPI_SCRAMBLED_IN; two real channels share one complex transform. No rank ever holds a
 *    whole channel, so this path scales to lengths beyond one rank's memory.
 *  - STRAND_CONV_ALLTOALL: MPI_Alltoallv from sequence shards to channel shards (each rank gets
 *    about C/SP whole channels), local real-to-complex FFTW convolution, and back.
 * Plans and buffers are made in create; forward and backward allocate nothing. */
#ifndef STRAND_FFTCONV_H
#define STRAND_FFTCONV_H

#include "strand/config.h"
#include "strand/layout.h"
#include "strand/plan.h"

enum strand_conv_strategy { STRAND_CONV_AUTO = 0, STRAND_CONV_FFTW_MPI = 1, STRAND_CONV_ALLTOALL = 2 };
/* Planner effort AUTO measures up to this transform size and estimates beyond it: FFTW_MEASURE
 * took about 40 s at N = 2^21 and more than 15 minutes at N ~ 9.3M (a whole E. coli window), on 2
 * cores, the first time (later runs read the wisdom file). */
enum { STRAND_PLAN_AUTO = 2, STRAND_PLAN_AUTO_MEASURE_MAX = 1 << 20 };

typedef struct strand_fftconv strand_fftconv;

typedef struct {
    int strategy;       /* enum strand_conv_strategy; AUTO picks per shape */
    int measure;        /* FFTW_MEASURE (1), FFTW_ESTIMATE (0), or STRAND_PLAN_AUTO */
    const char *wisdom; /* wisdom file to read before planning and update after (NULL/"" = none) */
    int threads;        /* FFTW threads of the plans (parallel.threads; 0 or 1 = one) */
} strand_fftconv_options;

/* The options of the [fft] keys (strategy, planner, wisdom file; `wisdom` holds the resolved path). */
void strand_fftconv_options_from_config(const strand_config *config, strand_fftconv_options *options,
                                        char *wisdom, size_t wisdom_size);

/* Plan a convolution of C channels over the window described by shard. Collective over the SP
 * group. */
int strand_fftconv_create(strand_fftconv **conv, const strand_shard *shard, int C,
                          const strand_fftconv_options *options);
/* The same in two steps, with the buffers in a model's plan (flags: their lifetime and sharing):
 * declare (collective over the SP group when it exists; with sp_comm = MPI_COMM_NULL, a dry run,
 * FFTW-MPI's local sizes are estimated), then after the plan is allocated, make FFTW's plans
 * (collective). *conv is set as soon as it exists: strand_fftconv_free it whatever happens. The
 * O(SP) tables stay the conv's own allocations. */
int strand_fftconv_plan(strand_fftconv **conv, const strand_shard *shard, int C,
                        const strand_fftconv_options *options, int flags, strand_plan *plan);
int strand_fftconv_setup(strand_fftconv *conv, const strand_shard *shard);
void strand_fftconv_free(strand_fftconv *conv);
/* The strategy chosen (never AUTO) and its name ("fftw-mpi" / "alltoall"). */
int strand_fftconv_strategy(const strand_fftconv *conv);
const char *strand_fftconv_strategy_name(int strategy);
/* Bytes this rank sent in the last forward + backward (for benchmarks). */
int64_t strand_fftconv_bytes_sent(const strand_fftconv *conv);

/* y (T,C) = k * u. Keeps the transforms of u and k for backward. Collective. */
int strand_fftconv_forward(strand_fftconv *conv, real_t *y, const real_t *u, const real_t *k);
/* du (T,C) += dL/du and dk (T,C) += dL/dk given dy (T,C), for the last forward. Collective.
 * Either gradient may be NULL. */
int strand_fftconv_backward(strand_fftconv *conv, real_t *du, real_t *dk, const real_t *dy);
/* The same, but ASSIGNS du and dk (either may be NULL): no zeroing of outputs by the caller. */
int strand_fftconv_backward_assign(strand_fftconv *conv, real_t *du, real_t *dk, const real_t *dy);

/* Time this rank spent inside FFTW execute calls in the last forward + backward (seconds; for
 * fftw-mpi this includes the transposes' communication inside FFTW). */
double strand_fftconv_fft_seconds(const strand_fftconv *conv);
/* The transform size a window of L tokens gets: the smallest 2^a 3^b 5^c >= 2L (>= 4, never 5). */
int64_t strand_fftconv_size_for(int64_t L);
/* The padded transform size N (a 2^a 3^b 5^c number >= 2L). */
int64_t strand_fftconv_transform_size(const strand_fftconv *conv);
/* Benchmark helper: execute the FFTW transforms of one forward + backward back to back on this
 * conv's plans and buffers, with no packing or exchange, and return the wall time in *seconds.
 * Overwrites the saved spectra (call forward again before backward). Collective. */
int strand_fftconv_fft_reference(strand_fftconv *conv, double *seconds);

/* Reference: the same convolution computed directly (O(L^2)) by gathering the window on every
 * rank. For tests and benchmarks at small L only. */
int strand_fftconv_direct(const strand_shard *shard, int C, real_t *y, const real_t *u, const real_t *k);
/* Like strand_fftconv_backward: ADDS into du and dk (either may be NULL). */
int strand_fftconv_direct_backward(const strand_shard *shard, int C, real_t *du, real_t *dk, const real_t *dy,
                                   const real_t *u, const real_t *k);

#endif
