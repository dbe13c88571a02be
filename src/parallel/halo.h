/* Halo exchange for causal windows of H rows, for any layout.
 *
 * Each local piece (see layout.h) needs the H rows that precede its first position in the
 * global sequence (zeros before position 0). Contiguous pieces that are all at least H long take
 * them from the previous rank in one shift. Otherwise (zigzag, or pieces shorter than H) every
 * rank contributes the last H rows of each of its pieces to one all-gather and picks the rows it
 * needs by position: the volume is 2*H*C values per rank, small next to the activations.
 * Backward adds each halo gradient into the rows it came from, the same two ways. */
#ifndef STRAND_HALO_H
#define STRAND_HALO_H

#include "strand/layout.h"
#include "strand/plan.h"

typedef struct {
    int H, C;
    int shift;        /* contiguous layout with every piece >= H: one MPI_Sendrecv */
    real_t *send;     /* STRAND_MAX_PIECES * H * C */
    real_t *gathered; /* sp_size * STRAND_MAX_PIECES * H * C (all-gather path) */
    int64_t *starts;  /* sp_size * STRAND_MAX_PIECES piece starts and lengths of every rank */
    int64_t *lengths;
} strand_halo;

/* Declare the tables and exchange buffers into a plan (persistent); after allocation, fill the
 * tables with strand_halo_setup. The buffers belong to the plan. */
int strand_halo_plan(strand_halo *halo, const strand_shard *shard, int H, int C, strand_plan *plan);
int strand_halo_setup(strand_halo *halo, const strand_shard *shard);
/* rows (n_pieces, H, C): the H rows before each local piece. x (T, C). Collective. */
int strand_halo_gather(strand_halo *halo, const strand_shard *shard, real_t *rows, const real_t *x);
/* dx (T, C) += the halo gradients drows (n_pieces, H, C) of every rank that fall on local rows.
 * Collective. */
int strand_halo_scatter_add(strand_halo *halo, const strand_shard *shard, real_t *dx, const real_t *drows);

#endif
