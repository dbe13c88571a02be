/* Process grid (world = DP x SP) and the communication primitives the layers use.
 *
 * World rank w = dp_rank * sp + sp_rank: an SP group is a block of consecutive ranks, so on a
 * cluster it usually stays inside one node where sequence-parallel traffic is heaviest. */
#ifndef STRAND_DIST_H
#define STRAND_DIST_H

#include "strand/common.h"

typedef struct {
    MPI_Comm world;   /* duplicate of the caller's communicator, MPI_ERRORS_RETURN */
    MPI_Comm sp_comm; /* ranks sharing one window, ordered along the sequence */
    MPI_Comm dp_comm; /* ranks with the same sp_rank in different DP groups */
    int world_rank, world_size;
    int sp_rank, sp_size;
    int dp_rank, dp_size;
} strand_grid;

/* The grid's shape for `size` ranks: sp or dp may be 0 (derived from the other); refuses shapes
 * that do not multiply to size, with strand train's message. Pure. */
int strand_grid_shape(int size, int sp, int dp, int *sp_out, int *dp_out);
/* Build the grid. sp or dp may be 0 (derived from the world size). Refuses shapes that do not
 * multiply to the world size. Collective over `world`. */
int strand_grid_init(strand_grid *grid, MPI_Comm world, int sp, int dp);
void strand_grid_free(strand_grid *grid);

/* Time spent inside communication calls since start (seconds), for the progress line. */
double strand_comm_seconds(void);
void strand_comm_add_seconds(double seconds);
/* Bytes this process handed to MPI for other ranks since start: point-to-point payloads, the
 * off-rank parts of all-to-alls and all-gathers, and 2 (p-1)/p of an all-reduce's array (what
 * the ring algorithm sends); for metrics and benchmarks. */
int64_t strand_comm_bytes(void);
void strand_comm_add_bytes(int64_t bytes);

/* Sum a real array over a communicator in place (one call). */
/* ||a - b|| / ||b|| (or ||a - b|| when b = 0) over the n values of every rank of comm, for tests
 * and benchmarks; NaN when the all-reduce fails. Collective. */
double strand_relative_error(MPI_Comm comm, const real_t *a, const real_t *b, int64_t n);
int strand_allreduce_sum(MPI_Comm comm, real_t *data, int64_t count);
int strand_allreduce_sum_double(MPI_Comm comm, double *data, int count);

#endif
