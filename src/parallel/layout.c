/* Contiguous and zigzag assignments of window positions to the ranks of an SP group. */
#include "strand/layout.h"

#include <string.h>

int strand_shard_pieces(const strand_shard *shard, int rank, int64_t starts[STRAND_MAX_PIECES],
                        int64_t lengths[STRAND_MAX_PIECES]) {
    const int sp = shard->grid->sp_size;
    if (shard->layout == STRAND_LAYOUT_ZIGZAG) {
        strand_split_range(shard->window, 2 * sp, rank, &starts[0], &lengths[0]);
        strand_split_range(shard->window, 2 * sp, 2 * sp - 1 - rank, &starts[1], &lengths[1]);
        return 2;
    }
    strand_split_range(shard->window, sp, rank, &starts[0], &lengths[0]);
    return 1;
}

int strand_shard_init(strand_shard *shard, const strand_grid *grid, int64_t window, int layout) {
    memset(shard, 0, sizeof *shard);
    shard->grid = grid;
    shard->layout = layout;
    shard->window = window;
    const int sp = grid->sp_size;
    const int64_t minimum = layout == STRAND_LAYOUT_ZIGZAG ? 2 * (int64_t)sp : sp;
    if (window < minimum)
        STRAND_FAIL(STRAND_ERR_CONFIG,
                    "train.seq_len = %lld is smaller than the %d ranks of a sequence-parallel group%s",
                    (long long)window, sp, layout == STRAND_LAYOUT_ZIGZAG ? " times 2 (zigzag layout)" : "");
    STRAND_ALLOC(shard->shard_lengths, sp, "shard table");
    int64_t starts[STRAND_MAX_PIECES], lengths[STRAND_MAX_PIECES];
    for (int r = 0; r < sp; r++) {
        int n = strand_shard_pieces(shard, r, starts, lengths);
        int64_t total = 0;
        for (int p = 0; p < n; p++)
            total += lengths[p];
        shard->shard_lengths[r] = total;
        if (total > shard->max_T) shard->max_T = total;
    }
    shard->n_pieces = strand_shard_pieces(shard, grid->sp_rank, shard->piece_start, shard->piece_length);
    shard->T = shard->shard_lengths[grid->sp_rank];
    shard->start = shard->piece_start[0];
    return STRAND_OK;
}

void strand_shard_free(strand_shard *shard) {
    strand_free(shard->shard_lengths);
    shard->shard_lengths = NULL;
}

int64_t strand_shard_position(const strand_shard *shard, int64_t i) {
    for (int p = 0; p < shard->n_pieces; p++) {
        if (i < shard->piece_length[p]) return shard->piece_start[p] + i;
        i -= shard->piece_length[p];
    }
    return -1;
}
