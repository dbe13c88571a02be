/* The distributed linear scan's exchange (parallel/scan.h) against the sequential recurrence over
 * the whole window: real and complex states, both layouts, both directions, uneven pieces, with
 * and without an initial state, and the window's final state delivered for the carry. Every rank
 * builds the same window from counters, scans its own pieces from zero, exchanges the summaries,
 * rescans from the entering states and compares its rows with the reference. */
#include "test_util.h"

#include "core/rng.h"
#include "parallel/scan.h"
#include "strand/dist.h"

#include <stdlib.h>

enum { WIDTH = 5, STREAM = 91 };

/* a_t (|a| < 1, some exactly 0 to check that a reset inside a piece composes) and b_t. */
static void make_inputs(double *a, double *b, int64_t L, int64_t n, uint64_t seed) {
    for (int64_t t = 0; t < L; t++)
        for (int64_t i = 0; i < n; i++) {
            const int64_t k = t * n + i;
            const double u = strand_rng_uniform(seed, STREAM, 1, (uint64_t)k);
            a[k] = (t * 7 + i) % 23 == 0 ? 0.0 : 0.98 * (2 * u - 1) / (n > WIDTH ? 1.5 : 1.0);
            b[k] = strand_rng_normal(seed, STREAM, 2, (uint64_t)k);
        }
}

/* Rows [start, start + len) of the window in scan order: forward as they are, backward reversed
 * (the adjoint runs from the window's end). */
static void gather_piece(double *out, const double *x, int64_t start, int64_t len, int64_t n, int backward) {
    for (int64_t j = 0; j < len; j++) {
        const int64_t t = backward ? start + len - 1 - j : start + j;
        memcpy(out + j * n, x + t * n, sizeof(double) * (size_t)n);
    }
}

static int run_case(const strand_grid *grid, int64_t L, int layout, int complex_values, int direction,
                    int with_initial) {
    const int backward = direction == STRAND_SCAN_BACKWARD;
    const int64_t n = complex_values ? 2 * WIDTH : WIDTH;
    strand_shard shard;
    STRAND_CALL(strand_shard_init(&shard, grid, L, layout));
    strand_plan plan;
    strand_plan_init(&plan, 0, 0);
    strand_scan scan;
    STRAND_CALL(strand_scan_plan(&scan, &shard, WIDTH, complex_values, 0, &plan));
    STRAND_CALL(strand_plan_allocate(&plan));
    STRAND_CALL(strand_scan_setup(&scan));

    double *a = malloc(sizeof(double) * (size_t)(L * n)), *b = malloc(sizeof(double) * (size_t)(L * n));
    double *ra = malloc(sizeof(double) * (size_t)(L * n)), *rb = malloc(sizeof(double) * (size_t)(L * n));
    double *ref = malloc(sizeof(double) * (size_t)(L * n)), *h = malloc(sizeof(double) * (size_t)(L * n));
    double initial[2 * WIDTH], final_ref[2 * WIDTH], final_got[2 * WIDTH];
    make_inputs(a, b, L, n, 7 + (uint64_t)complex_values);
    for (int64_t i = 0; i < n; i++)
        initial[i] = with_initial ? strand_rng_normal(3, STREAM, 3, (uint64_t)i) : 0.0;
    /* the reference, in scan order */
    gather_piece(ra, a, 0, L, n, backward);
    gather_piece(rb, b, 0, L, n, backward);
    strand_scan_local(ref, ra, rb, L, WIDTH, complex_values, with_initial ? initial : NULL, NULL);
    memcpy(final_ref, ref + (L - 1) * n, sizeof(double) * (size_t)n);

    double pairs[STRAND_MAX_PIECES][4 * WIDTH], entering[STRAND_MAX_PIECES][2 * WIDTH];
    const double *summaries[STRAND_MAX_PIECES];
    double *enter[STRAND_MAX_PIECES];
    for (int p = 0; p < shard.n_pieces; p++) {
        const int64_t len = shard.piece_length[p];
        gather_piece(ra, a, shard.piece_start[p], len, n, backward);
        gather_piece(rb, b, shard.piece_start[p], len, n, backward);
        strand_scan_local(h, ra, rb, len, WIDTH, complex_values, NULL, pairs[p]);
        summaries[p] = pairs[p];
        enter[p] = entering[p];
    }
    int status =
        strand_scan_exchange(&scan, direction, summaries, with_initial ? initial : NULL, enter, final_got);
    double worst = 0;
    for (int p = 0; p < shard.n_pieces && status == STRAND_OK; p++) {
        const int64_t len = shard.piece_length[p], start = shard.piece_start[p];
        gather_piece(ra, a, start, len, n, backward);
        gather_piece(rb, b, start, len, n, backward);
        strand_scan_local(h, ra, rb, len, WIDTH, complex_values, entering[p], NULL);
        /* the piece's first row in scan order sits at this index of the reference */
        const int64_t first = backward ? L - (start + len) : start;
        for (int64_t k = 0; k < len * n; k++)
            worst = fmax(worst, fabs(h[k] - ref[first * n + k]) / (1 + fabs(ref[first * n + k])));
    }
    const int scan_first = scan.first_owner[direction];
    if (status == STRAND_OK && grid->sp_rank == scan_first)
        for (int64_t i = 0; i < n; i++)
            worst = fmax(worst, fabs(final_got[i] - final_ref[i]) / (1 + fabs(final_ref[i])));
    CHECK_MSG(status == STRAND_OK && worst < 1e-13,
              "L=%lld layout=%d complex=%d direction=%d initial=%d sp=%d rank %d: worst %.3g (%s)",
              (long long)L, layout, complex_values, direction, with_initial, grid->sp_size, grid->sp_rank,
              worst, status == STRAND_OK ? "ok" : strand_error_message());
    CHECK(grid->sp_size == 1 ? scan.bytes_sent == 0 : scan.bytes_sent > 0);
    free(a), free(b), free(ra), free(rb), free(ref), free(h);
    strand_scan_free(&scan);
    strand_plan_free(&plan);
    strand_shard_free(&shard);
    return status;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    strand_grid grid;
    CHECK(strand_grid_init(&grid, MPI_COMM_WORLD, 0, 1) == STRAND_OK);
    const int64_t lengths[] = {37, 64, 9};
    for (size_t i = 0; i < sizeof lengths / sizeof *lengths; i++)
        for (int layout = 0; layout < 2; layout++) {
            if (lengths[i] < 2 * grid.sp_size) continue;
            for (int cplx = 0; cplx < 2; cplx++)
                for (int direction = 0; direction < 2; direction++)
                    for (int init = 0; init < 2; init++)
                        CHECK(run_case(&grid, lengths[i], layout, cplx, direction, init) == STRAND_OK);
        }
    strand_grid_free(&grid);
    int failed = test_finish("test_scan"), any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any;
}
