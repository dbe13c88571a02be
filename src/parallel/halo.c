/* Layout-aware halo exchange (see halo.h). */
#include "parallel/halo.h"
#include "parallel/tags.h"

#include <string.h>

int strand_halo_plan(strand_halo *halo, const strand_shard *shard, int H, int C, strand_plan *plan) {
    memset(halo, 0, sizeof *halo);
    halo->H = H;
    halo->C = C;
    const int sp = shard->grid->sp_size;
    int64_t shortest = INT64_MAX;
    for (int r = 0; r < sp; r++) {
        int64_t starts[STRAND_MAX_PIECES], lengths[STRAND_MAX_PIECES];
        const int n = strand_shard_pieces(shard, r, starts, lengths);
        for (int p = 0; p < n; p++)
            if (lengths[p] < shortest) shortest = lengths[p];
    }
    halo->shift = shard->layout == STRAND_LAYOUT_CONTIGUOUS && shortest >= H;
    const int64_t block = (int64_t)STRAND_MAX_PIECES * H * C;
    if (block > INT32_MAX / (sp > 0 ? sp : 1))
        STRAND_FAIL(STRAND_ERR_CONFIG, "halo of %d rows x %d channels is too large to exchange", H, C);
    STRAND_PLAN_ADD(plan, halo->starts, sp * STRAND_MAX_PIECES, STRAND_LIFE_PERSISTENT, "halo table");
    STRAND_PLAN_ADD(plan, halo->lengths, sp * STRAND_MAX_PIECES, STRAND_LIFE_PERSISTENT, "halo table");
    STRAND_PLAN_ADD(plan, halo->send, block, STRAND_LIFE_PERSISTENT, "halo send buffer");
    if (!halo->shift)
        STRAND_PLAN_ADD(plan, halo->gathered, block * sp, STRAND_LIFE_PERSISTENT, "halo gather buffer");
    return STRAND_OK;
}

int strand_halo_setup(strand_halo *halo, const strand_shard *shard) {
    const int sp = shard->grid->sp_size;
    for (int r = 0; r < sp; r++) {
        const int n = strand_shard_pieces(shard, r, halo->starts + r * STRAND_MAX_PIECES,
                                          halo->lengths + r * STRAND_MAX_PIECES);
        for (int p = n; p < STRAND_MAX_PIECES; p++)
            halo->lengths[r * STRAND_MAX_PIECES + p] = 0;
    }
    return STRAND_OK;
}

/* Which gathered row holds global position pos: the tail block of the piece that contains it
 * (the last min(H, length) rows of every piece are sent). Returns NULL when pos < 0. */
static const real_t *find_row(const strand_halo *halo, int sp, int64_t pos) {
    if (pos < 0) return NULL;
    const int H = halo->H, C = halo->C;
    for (int r = 0; r < sp; r++)
        for (int p = 0; p < STRAND_MAX_PIECES; p++) {
            const int64_t s = halo->starts[r * STRAND_MAX_PIECES + p],
                          n = halo->lengths[r * STRAND_MAX_PIECES + p];
            if (n == 0 || pos < s || pos >= s + n) continue;
            const int64_t m = n < H ? n : H, first = s + n - m;
            STRAND_ASSERT(pos >= first); /* halo positions are always within a piece's last H rows */
            return halo->gathered + ((int64_t)(r * STRAND_MAX_PIECES + p) * H + (pos - first)) * C;
        }
    return NULL;
}

int strand_halo_gather(strand_halo *halo, const strand_shard *shard, real_t *rows, const real_t *x) {
    const int H = halo->H, C = halo->C, sp = shard->grid->sp_size, rank = shard->grid->sp_rank;
    if (H == 0) return STRAND_OK;
    const int64_t HC = (int64_t)H * C;
    double t0 = strand_now();
    if (halo->shift) {
        const int prev = rank > 0 ? rank - 1 : MPI_PROC_NULL, next = rank < sp - 1 ? rank + 1 : MPI_PROC_NULL;
        memset(rows, 0, sizeof(real_t) * (size_t)HC);
        STRAND_CALL_MPI(MPI_Sendrecv(x + (shard->T - H) * C, (int)HC, STRAND_MPI_REAL, next,
                                     STRAND_TAG_HALO_ROWS, rows, (int)HC, STRAND_MPI_REAL, prev,
                                     STRAND_TAG_HALO_ROWS, shard->grid->sp_comm, MPI_STATUS_IGNORE));
        if (next != MPI_PROC_NULL) strand_comm_add_bytes(HC * (int64_t)sizeof(real_t));
    } else {
        /* Tail rows of each local piece, zero padded to a fixed block. */
        memset(halo->send, 0, sizeof(real_t) * (size_t)(STRAND_MAX_PIECES * HC));
        int64_t row = 0;
        for (int p = 0; p < shard->n_pieces; p++) {
            const int64_t n = shard->piece_length[p], m = n < H ? n : H;
            memcpy(halo->send + p * HC, x + (row + n - m) * C, sizeof(real_t) * (size_t)(m * C));
            row += n;
        }
        STRAND_CALL_MPI(MPI_Allgather(halo->send, (int)(STRAND_MAX_PIECES * HC), STRAND_MPI_REAL,
                                      halo->gathered, (int)(STRAND_MAX_PIECES * HC), STRAND_MPI_REAL,
                                      shard->grid->sp_comm));
        strand_comm_add_bytes(STRAND_MAX_PIECES * HC * (int64_t)sizeof(real_t) * (sp - 1));
        for (int p = 0; p < shard->n_pieces; p++)
            for (int j = 0; j < H; j++) {
                const real_t *src = find_row(halo, sp, shard->piece_start[p] - H + j);
                real_t *dst = rows + p * HC + (int64_t)j * C;
                if (src)
                    memcpy(dst, src, sizeof(real_t) * (size_t)C);
                else
                    memset(dst, 0, sizeof(real_t) * (size_t)C);
            }
    }
    strand_comm_add_seconds(strand_now() - t0);
    return STRAND_OK;
}

int strand_halo_scatter_add(strand_halo *halo, const strand_shard *shard, real_t *dx, const real_t *drows) {
    const int H = halo->H, C = halo->C, sp = shard->grid->sp_size, rank = shard->grid->sp_rank;
    if (H == 0) return STRAND_OK;
    const int64_t HC = (int64_t)H * C;
    double t0 = strand_now();
    if (halo->shift) {
        const int prev = rank > 0 ? rank - 1 : MPI_PROC_NULL, next = rank < sp - 1 ? rank + 1 : MPI_PROC_NULL;
        real_t *incoming = halo->send;
        memset(incoming, 0, sizeof(real_t) * (size_t)HC);
        STRAND_CALL_MPI(MPI_Sendrecv(drows, (int)HC, STRAND_MPI_REAL, prev, STRAND_TAG_HALO_GRAD, incoming,
                                     (int)HC, STRAND_MPI_REAL, next, STRAND_TAG_HALO_GRAD,
                                     shard->grid->sp_comm, MPI_STATUS_IGNORE));
        if (prev != MPI_PROC_NULL) strand_comm_add_bytes(HC * (int64_t)sizeof(real_t));
        real_t *tail = dx + (shard->T - H) * C;
        for (int64_t i = 0; i < HC; i++)
            tail[i] += incoming[i];
    } else {
        memset(halo->send, 0, sizeof(real_t) * (size_t)(STRAND_MAX_PIECES * HC));
        memcpy(halo->send, drows, sizeof(real_t) * (size_t)(shard->n_pieces * HC));
        STRAND_CALL_MPI(MPI_Allgather(halo->send, (int)(STRAND_MAX_PIECES * HC), STRAND_MPI_REAL,
                                      halo->gathered, (int)(STRAND_MAX_PIECES * HC), STRAND_MPI_REAL,
                                      shard->grid->sp_comm));
        strand_comm_add_bytes(STRAND_MAX_PIECES * HC * (int64_t)sizeof(real_t) * (sp - 1));
        /* Every rank's halo rows, by position: add those that fall on a local row. */
        for (int r = 0; r < sp; r++)
            for (int p = 0; p < STRAND_MAX_PIECES; p++) {
                if (halo->lengths[r * STRAND_MAX_PIECES + p] == 0) continue;
                const int64_t s = halo->starts[r * STRAND_MAX_PIECES + p];
                const real_t *block = halo->gathered + (int64_t)(r * STRAND_MAX_PIECES + p) * HC;
                for (int j = 0; j < H; j++) {
                    const int64_t pos = s - H + j;
                    if (pos < 0) continue;
                    int64_t row = 0;
                    for (int q = 0; q < shard->n_pieces; q++) {
                        const int64_t ps = shard->piece_start[q], pn = shard->piece_length[q];
                        if (pos >= ps && pos < ps + pn) {
                            real_t *target = dx + (row + pos - ps) * C;
                            const real_t *src = block + (int64_t)j * C;
                            for (int c = 0; c < C; c++)
                                target[c] += src[c];
                        }
                        row += pn;
                    }
                }
            }
    }
    strand_comm_add_seconds(strand_now() - t0);
    return STRAND_OK;
}
