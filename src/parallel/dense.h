/* Distributed dense linear algebra on a BLACS process grid (ScaLAPACK): the singular values of a
 * matrix (strand probe jacobian: the span Jacobian of a recurrent block) and random orthogonal
 * matrices (the orthogonal RNN's initialisation at large C).
 *
 * A grid is built over an MPI communicator: nprow x npcol of its ranks, in row-major order (rank
 * r * npcol + c is grid process (r, c)); ranks beyond nprow * npcol are idle: they hold no part of
 * a matrix but take part in every call and receive every result. Matrices enter and leave whole
 * and row-major, as strand stores everything; inside, they are spread block-cyclically with square
 * blocks (pdgesvd and pdgebrd need MB = NB).
 *
 * Every function here is collective over the grid's communicator, with the same arguments on
 * every rank (the matrix itself is read on the root only). A failure that any rank sees (an
 * allocation, a non-finite input, a ScaLAPACK INFO) is agreed and returned on every rank. The
 * BLACS themselves abort the job on a communication failure: they have no error return.
 *
 * Double precision only: the float build converts on the caller's side (an n x n probe matrix is
 * small next to the model, and the singular values want the accuracy).
 *
 * Debian ships no ScaLAPACK or BLACS header: dense.c declares the prototypes it uses. */
#ifndef STRAND_DENSE_H
#define STRAND_DENSE_H

#include "strand/common.h"

#include <stdint.h>

enum { STRAND_DENSE_MAX_BLOCK = 64 }; /* the largest block chosen automatically */

typedef struct {
    MPI_Comm comm;     /* duplicate of the caller's communicator, MPI_ERRORS_RETURN (owned) */
    int rank, size;    /* this process in comm */
    int nprow, npcol;  /* the grid's shape: nprow * npcol <= size */
    int myrow, mycol;  /* this rank's grid coordinates; -1 on an idle rank */
    int context;       /* BLACS context; -1 on an idle rank */
    int system_handle; /* BLACS handle of comm; -1 before it is made */
    int *coords;       /* (size, 2): every rank's (row, col) as BLACS reports it, -1 if idle */
    int *rank_at;      /* (nprow, npcol): the rank of comm at each grid position (owned) */
    int root_of_grid;  /* the rank of comm that is grid process (0, 0) */
    int block;         /* block size of the distribution; 0 (the default): chosen per matrix */
} strand_dense_grid;

/* The near-square shape for `ranks` processes: nprow >= npcol, nprow * npcol = ranks, npcol the
 * largest divisor not above sqrt(ranks) (1 -> 1x1, 2 -> 2x1, 3 -> 3x1, 4 -> 2x2, 6 -> 3x2). */
void strand_dense_grid_shape(int ranks, int *nprow, int *npcol);
/* A grid over comm: nprow = npcol = 0 picks the near-square shape over all ranks; otherwise both
 * must be >= 1 with nprow * npcol <= the ranks of comm (the rest idle). Collective. On failure the
 * grid is still safe to free. */
int strand_dense_grid_init(strand_dense_grid *g, MPI_Comm comm, int nprow, int npcol);
/* Collective (BLACS frees its communicators). */
void strand_dense_grid_free(strand_dense_grid *g);

/* The block size used for a matrix of rows x cols (column-major, as ScaLAPACK sees it): g->block
 * when set, else the largest that still gives every grid row and column a block, at most
 * STRAND_DENSE_MAX_BLOCK. */
int strand_dense_block(const strand_dense_grid *g, int64_t rows, int64_t cols);

/* sigma (min(m, n)): the singular values of the m x n matrix a_root (row-major, read on rank root
 * of g->comm only; other ranks may pass NULL), in descending order, on every rank. */
int strand_dense_singular_values(const strand_dense_grid *g, int64_t m, int64_t n, const double *a_root,
                                 int root, double *sigma);

/* q (n, n), row-major, on every rank: the orthogonal factor Q of G = Q R with R's diagonal made
 * positive, G(i, j) = strand_rng_normal(seed, stream, counter_hi, i * n + j). Q is then Haar
 * distributed (uniform over the orthogonal group) and depends on (seed, stream, counter_hi) only,
 * not on the grid (up to rounding). */
int strand_dense_orthogonal(const strand_dense_grid *g, int64_t n, uint64_t seed, uint64_t stream,
                            uint64_t counter_hi, double *q);

#endif
