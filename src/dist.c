/* Process grid and point-to-point primitives along the SP group. */
#include "strand/dist.h"

#include <string.h>

static double comm_seconds_total = 0.0;

double strand_comm_seconds(void) {
    return comm_seconds_total;
}

void strand_comm_add_seconds(double seconds) {
    comm_seconds_total += seconds;
}

int strand_grid_init(strand_grid *grid, MPI_Comm world, int sp, int dp) {
    memset(grid, 0, sizeof *grid);
    grid->world = grid->sp_comm = grid->dp_comm = MPI_COMM_NULL;
    STRAND_CALL_MPI(MPI_Comm_dup(world, &grid->world));
    STRAND_CALL_MPI(MPI_Comm_set_errhandler(grid->world, MPI_ERRORS_RETURN));
    MPI_Comm_rank(grid->world, &grid->world_rank);
    MPI_Comm_size(grid->world, &grid->world_size);
    int size = grid->world_size;
    if (sp < 0 || dp < 0) STRAND_FAIL(STRAND_ERR_CONFIG, "parallel.sp and parallel.dp must be >= 0");
    if (sp == 0 && dp == 0)
        sp = size, dp = 1;
    else if (sp == 0) {
        if (size % dp != 0)
            STRAND_FAIL(STRAND_ERR_CONFIG, "parallel.dp = %d does not divide the %d ranks", dp, size);
        sp = size / dp;
    } else if (dp == 0) {
        if (size % sp != 0)
            STRAND_FAIL(STRAND_ERR_CONFIG, "parallel.sp = %d does not divide the %d ranks", sp, size);
        dp = size / sp;
    }
    if ((int64_t)sp * dp != size)
        STRAND_FAIL(STRAND_ERR_CONFIG, "parallel.sp x parallel.dp = %d x %d = %lld, but the job has %d ranks",
                    sp, dp, (long long)sp * dp, size);
    grid->sp_size = sp;
    grid->dp_size = dp;
    grid->sp_rank = grid->world_rank % sp;
    grid->dp_rank = grid->world_rank / sp;
    STRAND_CALL_MPI(MPI_Comm_split(grid->world, grid->dp_rank, grid->sp_rank, &grid->sp_comm));
    STRAND_CALL_MPI(MPI_Comm_split(grid->world, grid->sp_rank, grid->dp_rank, &grid->dp_comm));
    STRAND_CALL_MPI(MPI_Comm_set_errhandler(grid->sp_comm, MPI_ERRORS_RETURN));
    STRAND_CALL_MPI(MPI_Comm_set_errhandler(grid->dp_comm, MPI_ERRORS_RETURN));
    return STRAND_OK;
}

void strand_grid_free(strand_grid *grid) {
    if (grid->sp_comm != MPI_COMM_NULL) MPI_Comm_free(&grid->sp_comm);
    if (grid->dp_comm != MPI_COMM_NULL) MPI_Comm_free(&grid->dp_comm);
    if (grid->world != MPI_COMM_NULL) MPI_Comm_free(&grid->world);
}

static int64_t min_shard(const int64_t *shard_lengths, int n) {
    int64_t m = shard_lengths[0];
    for (int i = 1; i < n; i++)
        if (shard_lengths[i] < m) m = shard_lengths[i];
    return m;
}

int strand_halo_forward(const strand_grid *grid, real_t *halo, const real_t *x, int64_t T, int C, int H,
                        const int64_t *shard_lengths, real_t *scratch) {
    if (H <= 0) return STRAND_OK;
    double t0 = strand_now();
    const int rank = grid->sp_rank, size = grid->sp_size;
    const int prev = rank > 0 ? rank - 1 : MPI_PROC_NULL, next = rank < size - 1 ? rank + 1 : MPI_PROC_NULL;
    const int count = H * C;
    memset(halo, 0, sizeof(real_t) * (size_t)count);
    if (min_shard(shard_lengths, size) >= H) {
        /* Every shard holds a full halo: one simultaneous shift. */
        STRAND_CALL_MPI(MPI_Sendrecv(x + (T - H) * C, count, STRAND_MPI_REAL, next, 11, halo, count,
                                     STRAND_MPI_REAL, prev, 11, grid->sp_comm, MPI_STATUS_IGNORE));
    } else {
        /* Short shards: the halo is relayed rank by rank, each appending its own rows. Only happens
         * when a shard is shorter than the kernel, i.e. for tiny windows. */
        STRAND_CALL_MPI(MPI_Recv(halo, count, STRAND_MPI_REAL, prev, 12, grid->sp_comm, MPI_STATUS_IGNORE));
        if (next != MPI_PROC_NULL) {
            int64_t keep = H - T; /* rows of the incoming halo still inside the next rank's window */
            if (keep > 0) {
                memcpy(scratch, halo + (H - keep) * C, sizeof(real_t) * (size_t)(keep * C));
                memcpy(scratch + keep * C, x, sizeof(real_t) * (size_t)(T * C));
            } else {
                memcpy(scratch, x + (T - H) * C, sizeof(real_t) * (size_t)count);
            }
            STRAND_CALL_MPI(MPI_Send(scratch, count, STRAND_MPI_REAL, next, 12, grid->sp_comm));
        }
    }
    strand_comm_add_seconds(strand_now() - t0);
    return STRAND_OK;
}

int strand_halo_backward(const strand_grid *grid, real_t *dx, const real_t *dhalo, int64_t T, int C, int H,
                         const int64_t *shard_lengths, real_t *scratch) {
    if (H <= 0) return STRAND_OK;
    double t0 = strand_now();
    const int rank = grid->sp_rank, size = grid->sp_size;
    const int prev = rank > 0 ? rank - 1 : MPI_PROC_NULL, next = rank < size - 1 ? rank + 1 : MPI_PROC_NULL;
    const int count = H * C;
    real_t *incoming = scratch, *outgoing = scratch + count;
    memset(incoming, 0, sizeof(real_t) * (size_t)count);
    if (min_shard(shard_lengths, size) >= H) {
        STRAND_CALL_MPI(MPI_Sendrecv(dhalo, count, STRAND_MPI_REAL, prev, 13, incoming, count,
                                     STRAND_MPI_REAL, next, 13, grid->sp_comm, MPI_STATUS_IGNORE));
        real_t *tail = dx + (T - H) * C;
        for (int i = 0; i < count; i++)
            tail[i] += incoming[i];
    } else {
        /* Relay from the last rank down: each rank keeps the rows it owns and passes on the rest
         * together with its own halo gradient. */
        STRAND_CALL_MPI(
            MPI_Recv(incoming, count, STRAND_MPI_REAL, next, 14, grid->sp_comm, MPI_STATUS_IGNORE));
        int64_t own = T < H ? T : H; /* incoming rows H-own..H-1 are this rank's last `own` rows */
        real_t *tail = dx + (T - own) * C;
        const real_t *from = incoming + (H - own) * C;
        for (int64_t i = 0; i < own * C; i++)
            tail[i] += from[i];
        memcpy(outgoing, dhalo, sizeof(real_t) * (size_t)count);
        /* incoming rows 0..H-own-1 are positions before this shard: the last H-own rows of our halo */
        int64_t pass = H - own;
        for (int64_t i = 0; i < pass * C; i++)
            outgoing[(H - pass) * C + i] += incoming[i];
        if (prev != MPI_PROC_NULL)
            STRAND_CALL_MPI(MPI_Send(outgoing, count, STRAND_MPI_REAL, prev, 14, grid->sp_comm));
    }
    strand_comm_add_seconds(strand_now() - t0);
    return STRAND_OK;
}

int strand_allreduce_sum(MPI_Comm comm, real_t *data, int64_t count) {
    double t0 = strand_now();
    /* MPI counts are int: reduce in pieces for very large arrays. */
    const int64_t piece = (int64_t)1 << 30;
    for (int64_t offset = 0; offset < count; offset += piece) {
        int n = (int)(count - offset < piece ? count - offset : piece);
        STRAND_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, data + offset, n, STRAND_MPI_REAL, MPI_SUM, comm));
    }
    strand_comm_add_seconds(strand_now() - t0);
    return STRAND_OK;
}

int strand_allreduce_sum_double(MPI_Comm comm, double *data, int count) {
    double t0 = strand_now();
    STRAND_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, data, count, MPI_DOUBLE, MPI_SUM, comm));
    strand_comm_add_seconds(strand_now() - t0);
    return STRAND_OK;
}
