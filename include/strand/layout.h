/* Which positions of a window a rank holds.
 *
 * contiguous: the window is cut into SP consecutive pieces, one per rank (uneven allowed).
 * zigzag:     the window is cut into 2*SP chunks and rank r holds chunks r and 2*SP-1-r, so every
 *             rank does the same causal-attention work. Local rows are piece 0 then piece 1.
 * Position-wise layers ignore the layout; layers that mix positions read it from here. */
#ifndef STRAND_LAYOUT_H
#define STRAND_LAYOUT_H

#include "strand/dist.h"

enum strand_layout_kind { STRAND_LAYOUT_CONTIGUOUS = 0, STRAND_LAYOUT_ZIGZAG = 1 };

enum { STRAND_MAX_PIECES = 2 };

typedef struct {
    const strand_grid *grid;
    int layout;                             /* enum strand_layout_kind */
    int64_t window;                         /* tokens in the whole window (train.seq_len) */
    int64_t T;                              /* tokens on this rank */
    int n_pieces;                           /* 1 (contiguous) or 2 (zigzag) */
    int64_t piece_start[STRAND_MAX_PIECES]; /* global position of each local piece */
    int64_t piece_length[STRAND_MAX_PIECES];
    int64_t start;          /* piece_start[0] */
    int64_t *shard_lengths; /* T of every rank of the SP group (sp_size entries) */
    int64_t max_T;          /* largest T over the SP group */
} strand_shard;

/* Describe this rank's part of a window of `window` tokens. Refuses a window shorter than the
 * SP group (contiguous) or than 2*SP (zigzag). Allocates shard_lengths. */
int strand_shard_init(strand_shard *shard, const strand_grid *grid, int64_t window, int layout);
void strand_shard_free(strand_shard *shard);
/* Pieces of rank `rank` (any rank of the SP group): fills starts and lengths, returns the count. */
int strand_shard_pieces(const strand_shard *shard, int rank, int64_t starts[STRAND_MAX_PIECES],
                        int64_t lengths[STRAND_MAX_PIECES]);
/* Global position of local row i. */
int64_t strand_shard_position(const strand_shard *shard, int64_t i);

#endif
