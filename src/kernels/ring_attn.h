/* Ring attention: exact causal (optionally sliding-window) multi-head attention over a sequence
 * sharded across the ranks of an SP group, with grouped-query heads and an optional extra block
 * of keys and values without gradient (Transformer-XL segment memory).
 *
 * Shapes (T = rows of this rank, H query heads, G key/value heads, E head dimension):
 *   q (T, H*E), kv (T, 2*G*E) = [K | V] per row, out (T, H*E), lse (H, T)
 * Query head h reads key/value head h / (H/G). Every row carries a global position (int64); key j
 * is visible to query i when pos_j <= pos_i and, with a window W > 0, pos_j > pos_i - W.
 *
 * Schedule (P ranks, rank r, step s): rank r holds the block owned by rank (r - s) mod P, sends it
 * to r+1 and receives the next one from r-1 with MPI_Isend/MPI_Irecv posted before the step's
 * compute (double buffers), so communication overlaps computation. Blocks carry their positions.
 * The number of steps is the smallest that covers every visible block of every rank (P for full
 * causal attention; fewer with a window and the contiguous layout), agreed without communication
 * from the shard description. Backward: the K/V blocks go around again; the dK/dV accumulators
 * travel one step behind them (triple buffers) and a final message returns each to its owner.
 *
 * Tiles: rows are cut into runs of consecutive positions of at most tile_q / tile_k rows. A tile
 * pair is skipped when no key is visible, computed without mask when all are, and masked only
 * otherwise (then only over the keys up to its last query's position, in whole 64-key panels);
 * with the zigzag layout (and the contiguous one without window) only step 0 has masked
 * tiles, so every later step does the same work on every rank. Key tiles are the outer loop: a
 * key tile is packed once and serves every query tile. Softmax statistics are online per block
 * (running max and sum per row), then the block's (out_b, lse_b) is merged into (out, lse) with
 *   out <- out - sigmoid(lse_b - lse) (out - out_b),  lse <- lse - log sigmoid(lse - lse_b)
 * (a row with nothing visible yet takes the block's values; one with nothing visible in the block
 * is left alone, so -inf - -inf never occurs). Backward uses the saved lse and
 * delta = rowsum(dO * O); dQ stays local. The tile products run on a register-blocked AVX-512
 * kernel in float builds (BLAS otherwise). All arithmetic is in real_t (fp32 or fp64); no L x L
 * array exists: workspace is O(tile_q * tile_k + T * E) per rank. Each block copies the head it works
 * on (Q, dO, K, V) into contiguous (rows, E) arrays first: the tile products then read unit-stride
 * rows instead of rows H*E apart (whose power-of-two strides map onto few L1 sets). */
#ifndef STRAND_RING_ATTN_H
#define STRAND_RING_ATTN_H

#include "strand/common.h"
#include "strand/layout.h"
#include "strand/plan.h"

#include <stdint.h>

typedef struct {
    int64_t row, n, pos; /* first local row, rows, position of the first row (consecutive) */
} strand_attn_tile;

typedef struct {
    MPI_Comm comm; /* the SP group (not owned) */
    int rank, size;
    int heads, kv_heads, head_dim;
    int64_t window;     /* 0 = full causal */
    int tile_q, tile_k; /* tile rows (queries, keys) */
    int64_t *rows;      /* current rows of every rank's block (size entries) */
    int64_t *mem_rows;  /* memory rows of every rank (size entries; zeros without memory) */
    int64_t max_rows, max_block_rows;
    int steps, steps_mem;        /* ring steps without / with the memory block */
    real_t *kv_buf[2];           /* (max_block_rows, 2GE) travelling K/V */
    int64_t *pos_buf[2];         /* (max_block_rows) their positions */
    real_t *dkv_buf[3];          /* (max_rows, 2GE) travelling dK/dV accumulators */
    real_t *dkv_local;           /* (max_rows, 2GE) one step's contribution */
    real_t *dkv_home;            /* (max_rows, 2GE) own accumulator on its way back */
    int ld_s;                    /* row stride of the score tiles: tile_k rounded up to 64, + 16 */
    real_t *s_tile, *p_tile;     /* (tile_q, ld_s) scores and their gradient */
    real_t *k_panel, *v_panel;   /* (ld_s, E) one key tile transposed in panels of 64 keys */
    real_t *q_head, *do_head;    /* (max_rows, E) one head of Q and dO, contiguous */
    real_t *k_head, *v_head;     /* (max_block_rows, E) one key/value head of the block, contiguous */
    real_t *acc, *row_m, *row_l; /* (max_rows, E), (max_rows) x2: one block's online softmax */
    real_t *delta;               /* (H, max_rows) rowsum(dO * O) */
    strand_attn_tile *q_tiles, *k_tiles;
    int memory;                /* a memory block of the same rows per rank */
    strand_plan own;           /* the buffers, when made by strand_ring_attn_init */
    double wait_s, busy_s;     /* accumulated: inside MPI_Wait*, and the rest of the calls */
    int64_t masked_tiles_late; /* forward tiles that needed an element mask after step 0 (zigzag: 0) */
} strand_ring_attn;

/* Prepare for the shard's layout (every rank's rows and positions); memory != 0 reserves room for a
 * memory block of the same rows per rank with positions shifted by -shard->window (the previous
 * window). tile_q, tile_k <= 0 choose defaults. Collective-free; allocates every workspace. */
int strand_ring_attn_init(strand_ring_attn *ra, const strand_shard *shard, int heads, int kv_heads,
                          int head_dim, int64_t window, int memory, int tile_q, int tile_k);
/* The same in two steps, with the buffers in a model's plan (flags: lifetime and sharing of every
 * buffer, plan.h): declare, then after the plan is allocated, fill the row tables. */
int strand_ring_attn_plan(strand_ring_attn *ra, const strand_shard *shard, int heads, int kv_heads,
                          int head_dim, int64_t window, int memory, int tile_q, int tile_k, int flags,
                          strand_plan *plan);
int strand_ring_attn_setup(strand_ring_attn *ra, const strand_shard *shard);
void strand_ring_attn_free(strand_ring_attn *ra);

/* out (T,H*E) and lse (H,T) of attention of q (T,H*E) over the K/V of every rank's block
 * (kv (T,2GE) with positions kv_pos) and, when mem_kv is not NULL, over every rank's memory block
 * (mem_kv (T,2GE) with positions mem_pos). Collective over the SP group; all ranks must pass a
 * memory block or none. q_pos are the queries' positions. */
int strand_ring_attn_forward(strand_ring_attn *ra, real_t *out, real_t *lse, const real_t *q,
                             const int64_t *q_pos, const real_t *kv, const int64_t *kv_pos,
                             const real_t *mem_kv, const int64_t *mem_pos);
/* dq (T,H*E) += dL/dq and dkv (T,2GE) += dL/d[K|V] given dout (T,H*E) and the forward's out and
 * lse (not recomputed) with the same inputs. The memory block gets no gradient. Collective. */
int strand_ring_attn_backward(strand_ring_attn *ra, real_t *dq, real_t *dkv, const real_t *dout,
                              const real_t *out, const real_t *lse, const real_t *q, const int64_t *q_pos,
                              const real_t *kv, const int64_t *kv_pos, const real_t *mem_kv,
                              const int64_t *mem_pos);

/* ---- test hook of the attn mixer's segment memory (src/model/mixers/attn.c) ----
 * With attn.segment_memory, every forward saves this window's keys and values (before RoPE) and the
 * next forward attends to them as the previous window (positions -L..-1, RoPE re-applied there, no
 * gradient). The model resets it (the mixer's reset) whenever a window does not continue the
 * previous one. frozen != 0: take the last forward's keys/values as the memory now and keep it fixed
 * through later forwards (gradient checks); 0: roll it forward again after every forward. Ignores
 * any other mixer. */
struct strand_mixer;
void strand_attn_memory_freeze(struct strand_mixer *mixer, int frozen);

#endif
