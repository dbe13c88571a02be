/* Process grid, halo exchange and error agreement at any rank count.
 * The halo a piece receives must equal the rows before it in the global array, for every window
 * length and both layouts (including pieces shorter than the halo); the backward exchange must
 * add each halo gradient into exactly the rows it came from. */
#include "test_util.h"

#include "strand/dist.h"
#include "parallel/halo.h"

#include <stdlib.h>
#include <string.h>

static void check_halo(const strand_grid *grid, int64_t L, int C, int H, int layout) {
    strand_shard shard;
    if (strand_shard_init(&shard, grid, L, layout) != STRAND_OK)
        return; /* window too short for this layout */
    const int64_t T = shard.T;
    /* Global value of row t, channel c: distinct and easy to recompute. */
    real_t *x = calloc((size_t)(T * C + 1), sizeof(real_t));
    for (int64_t i = 0; i < T; i++)
        for (int c = 0; c < C; c++)
            x[i * C + c] = (real_t)(1 + strand_shard_position(&shard, i) * C + c);
    strand_halo halo;
    strand_plan plan;
    strand_plan_init(&plan, 0, 0);
    CHECK(strand_halo_plan(&halo, &shard, H, C, &plan) == STRAND_OK);
    CHECK(strand_plan_allocate(&plan) == STRAND_OK);
    CHECK(strand_halo_setup(&halo, &shard) == STRAND_OK);
    real_t *rows = calloc((size_t)(STRAND_MAX_PIECES * H * C), sizeof(real_t));
    CHECK(strand_halo_gather(&halo, &shard, rows, x) == STRAND_OK);
    int bad = 0;
    for (int p = 0; p < shard.n_pieces; p++)
        for (int h = 0; h < H; h++) {
            int64_t t = shard.piece_start[p] - H + h;
            for (int c = 0; c < C; c++) {
                real_t expect = t < 0 ? 0 : (real_t)(1 + t * C + c);
                if (rows[(p * H + h) * C + c] != expect) bad++;
            }
        }
    CHECK_MSG(bad == 0, "halo gather L=%lld H=%d layout %d rank %d: %d wrong values", (long long)L, H, layout,
              grid->sp_rank, bad);

    /* Backward: every piece of every rank sends 1 for each of its halo rows; a row then receives
     * one unit per piece whose halo covers its position. */
    real_t *dx = calloc((size_t)(T * C + 1), sizeof(real_t));
    for (int i = 0; i < STRAND_MAX_PIECES * H * C; i++)
        rows[i] = 1;
    CHECK(strand_halo_scatter_add(&halo, &shard, dx, rows) == STRAND_OK);
    bad = 0;
    for (int64_t i = 0; i < T; i++) {
        const int64_t g = strand_shard_position(&shard, i);
        int64_t expect = 0, starts[STRAND_MAX_PIECES], lengths[STRAND_MAX_PIECES];
        for (int r = 0; r < grid->sp_size; r++) {
            int n = strand_shard_pieces(&shard, r, starts, lengths);
            for (int p = 0; p < n; p++)
                if (lengths[p] > 0 && g >= starts[p] - H && g < starts[p]) expect++;
        }
        for (int c = 0; c < C; c++)
            if (dx[i * C + c] != (real_t)expect) bad++;
    }
    CHECK_MSG(bad == 0, "halo scatter L=%lld H=%d layout %d rank %d: %d wrong values", (long long)L, H,
              layout, grid->sp_rank, bad);
    strand_plan_free(&plan);
    strand_shard_free(&shard);
    free(x), free(rows), free(dx);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    strand_grid grid;
    CHECK(strand_grid_init(&grid, MPI_COMM_WORLD, 0, 0) == STRAND_OK);
    CHECK(grid.sp_size * grid.dp_size == grid.world_size);
    /* Shapes that do not multiply to the world are refused. */
    strand_grid bad_grid;
    if (grid.world_size > 1) {
        CHECK(strand_grid_init(&bad_grid, MPI_COMM_WORLD, grid.world_size + 1, 1) == STRAND_ERR_CONFIG);
        strand_grid_free(&bad_grid);
    }
    const int64_t lengths[] = {4, 5, 7, 9, 64, 101};
    const int halos[] = {1, 3, 7};
    for (size_t i = 0; i < sizeof lengths / sizeof *lengths; i++)
        for (size_t j = 0; j < sizeof halos / sizeof *halos; j++)
            for (int layout = 0; layout < 2; layout++)
                check_halo(&grid, lengths[i], 3, halos[j], layout);

    /* A failure seen by the last rank alone reaches every rank with its message. */
    int failing = grid.world_size - 1;
    int status = STRAND_OK;
    strand_error_clear();
    if (grid.world_rank == failing)
        status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__, "only rank %d saw this", failing);
    int agreed = strand_agree(grid.world, status);
    CHECK(agreed == STRAND_ERR_INPUT);
    char expect[64];
    snprintf(expect, sizeof expect, "only rank %d saw this", failing);
    CHECK_MSG(strcmp(strand_error_message(), expect) == 0, "got '%s'", strand_error_message());
    CHECK(strand_agree(grid.world, STRAND_OK) == STRAND_OK);

    /* Uneven split covers the range exactly. */
    int64_t total = 0, prev_end = 0;
    for (int r = 0; r < 3; r++) {
        int64_t s = 0, n = 0;
        strand_split_range(10, 3, r, &s, &n);
        CHECK(s == prev_end);
        prev_end = s + n;
        total += n;
    }
    CHECK(total == 10);
    strand_grid_free(&grid);
    int result = test_finish("test_dist");
    int any = 0;
    MPI_Allreduce(&result, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any;
}
