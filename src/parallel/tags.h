/* Tags of strand's point-to-point MPI messages, all in one place so no two exchanges share one.
 * A tag only matters within a communicator, but distinct values keep a message that lands on the
 * wrong exchange from matching silently. The values are those the exchanges have always used. */
#ifndef STRAND_TAGS_H
#define STRAND_TAGS_H

enum strand_mpi_tag {
    /* strand bench ring: gathering the ranks' sequence positions, then their output rows, on SP
     * rank 0 for the check against naive attention (bench_attn.c) */
    STRAND_TAG_BENCH_POS = 1,
    STRAND_TAG_BENCH_ROWS = 2,
    /* halo exchange with a contiguous layout (halo.c): the last H rows to the next SP rank
     * (gather), and their gradient back to the previous one (scatter-add) */
    STRAND_TAG_HALO_ROWS = 21,
    STRAND_TAG_HALO_GRAD = 22,
    /* ring attention (ring_attn.c): the K/V block and its positions passed to the next SP rank at
     * every step, the dK/dV accumulators that travel with them in backward, and the final dK/dV
     * sent back to the rank that owns the block */
    STRAND_TAG_RING_KV = 3101,
    STRAND_TAG_RING_POS = 3102,
    STRAND_TAG_RING_DKV = 3103,
    STRAND_TAG_RING_DKV_HOME = 3104,
    /* recurrent mixers (src/model/mixers/recurrent.c): a piece's last state to the owner of the
     * next piece, the gradient of a piece's initial state back to the previous piece's owner, and
     * the window's last state to the rank holding position 0 (carried state) */
    STRAND_TAG_RECURRENT_STATE = 4101,
    STRAND_TAG_RECURRENT_GRAD = 4102,
    STRAND_TAG_RECURRENT_CARRY = 4103,
    /* distributed linear scan (parallel/scan.c): the state after a window's last piece to the rank
     * holding its first (carried state) */
    STRAND_TAG_SCAN_FINAL = 4201,
};

#endif
