/* Process grid and point-to-point primitives along the SP group. */
#include "strand/dist.h"

#include <math.h>

#include <string.h>

static double comm_seconds_total = 0.0;

double strand_comm_seconds(void) {
    return comm_seconds_total;
}

void strand_comm_add_seconds(double seconds) {
    comm_seconds_total += seconds;
}

static int64_t comm_bytes_total = 0;

int64_t strand_comm_bytes(void) {
    return comm_bytes_total;
}

void strand_comm_add_bytes(int64_t bytes) {
    comm_bytes_total += bytes;
}

/* What an all-reduce of `bytes` sends per rank in the ring algorithm. */
static void add_allreduce_bytes(MPI_Comm comm, int64_t bytes) {
    int size = 1;
    MPI_Comm_size(comm, &size);
    if (size > 1) strand_comm_add_bytes(2 * bytes * (size - 1) / size);
}

int strand_grid_shape(int size, int sp, int dp, int *sp_out, int *dp_out) {
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
    *sp_out = sp, *dp_out = dp;
    return STRAND_OK;
}

int strand_grid_init(strand_grid *grid, MPI_Comm world, int sp, int dp) {
    memset(grid, 0, sizeof *grid);
    grid->world = grid->sp_comm = grid->dp_comm = MPI_COMM_NULL;
    STRAND_CALL_MPI(MPI_Comm_dup(world, &grid->world));
    STRAND_CALL_MPI(MPI_Comm_set_errhandler(grid->world, MPI_ERRORS_RETURN));
    MPI_Comm_rank(grid->world, &grid->world_rank);
    MPI_Comm_size(grid->world, &grid->world_size);
    STRAND_CALL(strand_grid_shape(grid->world_size, sp, dp, &sp, &dp));
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

int strand_allreduce_sum(MPI_Comm comm, real_t *data, int64_t count) {
    double t0 = strand_now();
    /* MPI counts are int: reduce in pieces for very large arrays. */
    const int64_t piece = (int64_t)1 << 30;
    for (int64_t offset = 0; offset < count; offset += piece) {
        int n = (int)(count - offset < piece ? count - offset : piece);
        STRAND_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, data + offset, n, STRAND_MPI_REAL, MPI_SUM, comm));
    }
    strand_comm_add_seconds(strand_now() - t0);
    add_allreduce_bytes(comm, count * (int64_t)sizeof(real_t));
    return STRAND_OK;
}

int strand_allreduce_sum_double(MPI_Comm comm, double *data, int count) {
    double t0 = strand_now();
    STRAND_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, data, count, MPI_DOUBLE, MPI_SUM, comm));
    strand_comm_add_seconds(strand_now() - t0);
    add_allreduce_bytes(comm, count * (int64_t)sizeof(double));
    return STRAND_OK;
}

double strand_relative_error(MPI_Comm comm, const real_t *a, const real_t *b, int64_t n) {
    double s[2] = {0.0, 0.0};
    for (int64_t i = 0; i < n; i++) {
        const double d = (double)a[i] - (double)b[i];
        s[0] += d * d;
        s[1] += (double)b[i] * (double)b[i];
    }
    if (MPI_Allreduce(MPI_IN_PLACE, s, 2, MPI_DOUBLE, MPI_SUM, comm) != MPI_SUCCESS) return NAN;
    return s[1] > 0 ? sqrt(s[0] / s[1]) : sqrt(s[0]);
}
