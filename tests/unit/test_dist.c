/* Process grid, halo exchange and error agreement at any rank count.
 * The halo a rank receives must equal the rows before its shard in the global array, for every
 * window length (including shards shorter than the halo); the backward exchange must add each
 * halo gradient into exactly the rows it came from. */
#include "test_util.h"

#include "strand/dist.h"

#include <stdlib.h>
#include <string.h>

static void check_halo(const strand_grid *grid, int64_t L, int C, int H) {
    const int size = grid->sp_size, rank = grid->sp_rank;
    int64_t *lengths = calloc((size_t)size, sizeof *lengths);
    int64_t start = 0, T = 0, s = 0;
    for (int r = 0; r < size; r++)
        strand_split_range(L, size, r, &s, &lengths[r]);
    strand_split_range(L, size, rank, &start, &T);
    /* Global value of row t, channel c: distinct and easy to recompute. */
    real_t *x = calloc((size_t)(T * C + 1), sizeof(real_t));
    for (int64_t t = 0; t < T; t++)
        for (int c = 0; c < C; c++)
            x[t * C + c] = (real_t)(1 + (start + t) * C + c);
    real_t *halo = calloc((size_t)(H * C), sizeof(real_t));
    real_t *scratch = calloc((size_t)(2 * H * C), sizeof(real_t));
    CHECK(strand_halo_forward(grid, halo, x, T, C, H, lengths, scratch) == STRAND_OK);
    int bad = 0;
    for (int h = 0; h < H; h++) {
        int64_t t = start - H + h;
        for (int c = 0; c < C; c++) {
            real_t expect = t < 0 ? 0 : (real_t)(1 + t * C + c);
            if (halo[h * C + c] != expect) bad++;
        }
    }
    CHECK_MSG(bad == 0, "halo forward L=%lld H=%d rank %d: %d wrong values", (long long)L, H, rank, bad);

    /* Backward: every rank sends dhalo = 1 for its halo rows; row t then receives one unit from
     * each later rank whose halo covers it. */
    real_t *dx = calloc((size_t)(T * C + 1), sizeof(real_t));
    real_t *dhalo = calloc((size_t)(H * C), sizeof(real_t));
    for (int i = 0; i < H * C; i++)
        dhalo[i] = 1;
    CHECK(strand_halo_backward(grid, dx, dhalo, T, C, H, lengths, scratch) == STRAND_OK);
    bad = 0;
    for (int64_t t = 0; t < T; t++) {
        int64_t g = start + t, expect = 0, s2 = 0;
        for (int r = rank + 1; r < size; r++) {
            int64_t st = 0, n = 0;
            strand_split_range(L, size, r, &st, &n);
            (void)s2;
            if (g >= st - H && g < st) expect++;
        }
        for (int c = 0; c < C; c++)
            if (dx[t * C + c] != (real_t)expect) bad++;
    }
    CHECK_MSG(bad == 0, "halo backward L=%lld H=%d rank %d: %d wrong values", (long long)L, H, rank, bad);
    free(lengths), free(x), free(halo), free(scratch), free(dx), free(dhalo);
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
            if (lengths[i] >= grid.sp_size) check_halo(&grid, lengths[i], 3, halos[j]);

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
