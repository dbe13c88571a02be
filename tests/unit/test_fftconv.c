/* Distributed FFT long convolution against the O(L^2) reference, at any number of ranks: both
 * strategies, both layouts, uneven shards, odd channel counts and more ranks than channels. Also
 * causality (the zero padding), agreement of the strategies, backward accumulation and NULL
 * gradients, a finite-difference check of the FFT path's gradients, and the wisdom file. */
#include "gradcheck.h"
#include "test_util.h"

#include "strand/dist.h"
#include "kernels/fftconv.h"
#include "strand/layout.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef STRAND_REAL_DOUBLE
#define TOL 1e-10
#define CAUSAL_TOL 1e-12
#else
#define TOL 1e-4
#define CAUSAL_TOL 1e-5
#endif

static double worst_error = 0.0;
static const int strategies[2] = {STRAND_CONV_FFTW_MPI, STRAND_CONV_ALLTOALL};

/* Deterministic global (L,C) array; every rank takes the rows of its shard. */
static void fill_local(real_t *local, const strand_shard *shard, int C, uint64_t seed) {
    for (int64_t i = 0; i < shard->T; i++) {
        const int64_t pos = strand_shard_position(shard, i);
        for (int c = 0; c < C; c++) {
            uint64_t state =
                seed * 0x9E3779B97F4A7C15ull + (uint64_t)(pos * C + c) * 0xBF58476D1CE4E5B9ull + 1;
            gradcheck_rng_next(&state);
            local[i * C + c] = (real_t)gradcheck_uniform(&state, -1.0, 1.0);
        }
    }
}

typedef struct {
    real_t *u, *k, *dy, *y, *du, *dk, *y_ref, *du_ref, *dk_ref, *y_other, *du_other, *dk_other, *du_null,
        *dk_null, *y_changed;
} arrays;

static void check_case(const strand_grid *grid, int64_t L, int C, int layout) {
    strand_shard shard;
    if (strand_shard_init(&shard, grid, L, layout) != STRAND_OK) {
        CHECK_MSG(0, "shard init L=%lld", (long long)L);
        return;
    }
    const int64_t n = shard.T * C;
    arrays a;
    real_t **all[] = {&a.u,        &a.k,        &a.dy,      &a.y,       &a.du,
                      &a.dk,       &a.y_ref,    &a.du_ref,  &a.dk_ref,  &a.y_other,
                      &a.du_other, &a.dk_other, &a.du_null, &a.dk_null, &a.y_changed};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        *all[i] = calloc((size_t)(n > 0 ? n : 1), sizeof(real_t));
    fill_local(a.u, &shard, C, 1);
    fill_local(a.k, &shard, C, 2);
    fill_local(a.dy, &shard, C, 3);
    CHECK(strand_fftconv_direct(&shard, C, a.y_ref, a.u, a.k) == STRAND_OK);
    CHECK(strand_fftconv_direct_backward(&shard, C, a.du_ref, a.dk_ref, a.dy, a.u, a.k) == STRAND_OK);
    const char *lname = layout == STRAND_LAYOUT_ZIGZAG ? "zigzag" : "contiguous";

    for (int si = 0; si < 2; si++) {
        strand_fftconv_options opt = {strategies[si], 0, NULL, 1};
        strand_fftconv *conv = NULL;
        CHECK(strand_fftconv_create(&conv, &shard, C, &opt) == STRAND_OK);
        if (!conv) continue;
        CHECK(strand_fftconv_strategy(conv) == strategies[si]);
        CHECK(strand_fftconv_transform_size(conv) >= 2 * L);
        /* Backward adds: start the gradients at 1 and subtract it afterwards. */
        for (int64_t i = 0; i < n; i++)
            a.du[i] = a.dk[i] = 1;
        CHECK(strand_fftconv_forward(conv, a.y, a.u, a.k) == STRAND_OK);
        CHECK(strand_fftconv_backward(conv, a.du, a.dk, a.dy) == STRAND_OK);
        for (int64_t i = 0; i < n; i++) {
            a.du[i] -= 1;
            a.dk[i] -= 1;
        }
        const double ey = strand_relative_error(grid->sp_comm, a.y, a.y_ref, n);
        const double eu = strand_relative_error(grid->sp_comm, a.du, a.du_ref, n);
        const double ek = strand_relative_error(grid->sp_comm, a.dk, a.dk_ref, n);
        const double e = fmax(ey, fmax(eu, ek));
        if (e > worst_error) worst_error = e;
        CHECK_MSG(e < TOL, "%s %s L=%lld C=%d ranks=%d: rel errors y %.3g du %.3g dk %.3g",
                  strand_fftconv_strategy_name(strategies[si]), lname, (long long)L, C, grid->sp_size, ey, eu,
                  ek);
        CHECK(strand_fftconv_bytes_sent(conv) >= 0);
        if (grid->sp_size == 1 && strategies[si] == STRAND_CONV_ALLTOALL)
            CHECK(strand_fftconv_bytes_sent(conv) == 0);

        /* NULL gradients: each alone gives the same values. */
        memset(a.du_null, 0, sizeof(real_t) * (size_t)n);
        memset(a.dk_null, 0, sizeof(real_t) * (size_t)n);
        CHECK(strand_fftconv_backward(conv, a.du_null, NULL, a.dy) == STRAND_OK);
        CHECK(strand_fftconv_backward(conv, NULL, a.dk_null, a.dy) == STRAND_OK);
        CHECK(strand_relative_error(grid->sp_comm, a.du_null, a.du, n) < TOL);
        CHECK(strand_relative_error(grid->sp_comm, a.dk_null, a.dk, n) < TOL);

        if (si == 0) {
            memcpy(a.y_other, a.y, sizeof(real_t) * (size_t)n);
            memcpy(a.du_other, a.du, sizeof(real_t) * (size_t)n);
            memcpy(a.dk_other, a.dk, sizeof(real_t) * (size_t)n);
        } else {
            /* The two strategies agree with each other. */
            const double d = fmax(strand_relative_error(grid->sp_comm, a.y, a.y_other, n),
                                  fmax(strand_relative_error(grid->sp_comm, a.du, a.du_other, n),
                                       strand_relative_error(grid->sp_comm, a.dk, a.dk_other, n)));
            CHECK_MSG(d < TOL, "strategies disagree (%s L=%lld C=%d): %.3g", lname, (long long)L, C, d);
        }

        /* Causality: change u at global position p; y before p must not move (beyond rounding),
         * y at p must. A transform shorter than 2L would wrap the change into the past. */
        const int64_t p = L / 2;
        for (int64_t i = 0; i < shard.T; i++)
            if (strand_shard_position(&shard, i) == p)
                for (int c = 0; c < C; c++)
                    a.u[i * C + c] += 1;
        CHECK(strand_fftconv_forward(conv, a.y_changed, a.u, a.k) == STRAND_OK);
        double before = 0, at_or_after = 0, scale = 0;
        for (int64_t i = 0; i < shard.T; i++) {
            const int64_t pos = strand_shard_position(&shard, i);
            for (int c = 0; c < C; c++) {
                const double d = fabs((double)a.y_changed[i * C + c] - (double)a.y[i * C + c]);
                if (pos < p)
                    before = fmax(before, d);
                else
                    at_or_after = fmax(at_or_after, d);
                scale = fmax(scale, fabs((double)a.y[i * C + c]));
            }
        }
        double m[3] = {before, at_or_after, scale};
        MPI_Allreduce(MPI_IN_PLACE, m, 3, MPI_DOUBLE, MPI_MAX, grid->sp_comm);
        CHECK_MSG(m[0] <= CAUSAL_TOL * m[2], "causality (%s %s L=%lld C=%d): past moved by %.3g (scale %.3g)",
                  strand_fftconv_strategy_name(strategies[si]), lname, (long long)L, C, m[0], m[2]);
        CHECK_MSG(m[1] > 0.01, "the change at position %lld did not reach y", (long long)p);
        for (int64_t i = 0; i < shard.T; i++)
            if (strand_shard_position(&shard, i) == p)
                for (int c = 0; c < C; c++)
                    a.u[i * C + c] -= 1;
        strand_fftconv_free(conv);
    }
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        free(*all[i]);
    strand_shard_free(&shard);
}

/* ---- finite differences of the FFT path (global arrays replicated, loss all-reduced) ---- */

typedef struct {
    strand_fftconv *conv;
    const strand_shard *shard;
    int C;
    real_t *U, *K, *R;           /* global (L,C) */
    real_t *u, *k, *y, *r_local; /* local (T,C) */
} fd_ctx;

static void take_rows(const fd_ctx *ctx, const real_t *global, real_t *local) {
    for (int64_t i = 0; i < ctx->shard->T; i++)
        memcpy(local + i * ctx->C, global + strand_shard_position(ctx->shard, i) * ctx->C,
               sizeof(real_t) * (size_t)ctx->C);
}

static double fd_loss(void *arg) {
    fd_ctx *ctx = arg;
    take_rows(ctx, ctx->U, ctx->u);
    take_rows(ctx, ctx->K, ctx->k);
    if (strand_fftconv_forward(ctx->conv, ctx->y, ctx->u, ctx->k) != STRAND_OK) return NAN;
    double loss = gradcheck_project(ctx->y, ctx->r_local, ctx->shard->T * ctx->C);
    MPI_Allreduce(MPI_IN_PLACE, &loss, 1, MPI_DOUBLE, MPI_SUM, ctx->shard->grid->sp_comm);
    return loss;
}

/* Local (T,C) rows -> global (L,C), summed over ranks (each position has one owner). */
static void to_global(const fd_ctx *ctx, const real_t *local, real_t *global) {
    const int64_t L = ctx->shard->window;
    memset(global, 0, sizeof(real_t) * (size_t)(L * ctx->C));
    for (int64_t i = 0; i < ctx->shard->T; i++)
        memcpy(global + strand_shard_position(ctx->shard, i) * ctx->C, local + i * ctx->C,
               sizeof(real_t) * (size_t)ctx->C);
    MPI_Allreduce(MPI_IN_PLACE, global, (int)(L * ctx->C), STRAND_MPI_REAL, MPI_SUM,
                  ctx->shard->grid->sp_comm);
}

static void check_gradients(const strand_grid *grid, int strategy, int layout) {
    const int64_t L = 13;
    const int C = 3;
    strand_shard shard;
    if (strand_shard_init(&shard, grid, L, layout) != STRAND_OK) return; /* too many ranks for L */
    strand_fftconv_options opt = {strategy, 0, NULL, 1};
    fd_ctx ctx = {NULL, &shard, C, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    CHECK(strand_fftconv_create(&ctx.conv, &shard, C, &opt) == STRAND_OK);
    const size_t gbytes = sizeof(real_t) * (size_t)(L * C),
                 lbytes = sizeof(real_t) * (size_t)(shard.T * C + 1);
    ctx.U = malloc(gbytes);
    ctx.K = malloc(gbytes);
    ctx.R = malloc(gbytes);
    ctx.u = malloc(lbytes);
    ctx.k = malloc(lbytes);
    ctx.y = malloc(lbytes);
    ctx.r_local = malloc(lbytes);
    real_t *du = calloc(1, lbytes), *dk = calloc(1, lbytes), *dU = malloc(gbytes), *dK = malloc(gbytes);
    uint64_t rng = 2024;
    gradcheck_fill(ctx.U, L * C, -1, 1, &rng);
    gradcheck_fill(ctx.K, L * C, -1, 1, &rng);
    gradcheck_fill(ctx.R, L * C, -1, 1, &rng);
    take_rows(&ctx, ctx.R, ctx.r_local);
    if (ctx.conv) {
        (void)fd_loss(&ctx);
        CHECK(strand_fftconv_backward(ctx.conv, du, dk, ctx.r_local) == STRAND_OK);
        to_global(&ctx, du, dU);
        to_global(&ctx, dk, dK);
        gradcheck_result ru =
            gradcheck_run(ctx.U, L * C, dU, fd_loss, &ctx, GRADCHECK_EPS, GRADCHECK_FLOOR, 0);
        gradcheck_result rk =
            gradcheck_run(ctx.K, L * C, dK, fd_loss, &ctx, GRADCHECK_EPS, GRADCHECK_FLOOR, 0);
        if (grid->sp_rank == 0 && (!gradcheck_ok(ru, GRADCHECK_TOL) || !gradcheck_ok(rk, GRADCHECK_TOL))) {
            gradcheck_print(stderr, "du", ru);
            gradcheck_print(stderr, "dk", rk);
        }
        CHECK_MSG(gradcheck_ok(ru, GRADCHECK_TOL), "finite differences du (%s)",
                  strand_fftconv_strategy_name(strategy));
        CHECK_MSG(gradcheck_ok(rk, GRADCHECK_TOL), "finite differences dk (%s)",
                  strand_fftconv_strategy_name(strategy));
    }
    strand_fftconv_free(ctx.conv);
    real_t *bufs[] = {ctx.U, ctx.K, ctx.R, ctx.u, ctx.k, ctx.y, ctx.r_local, du, dk, dU, dK};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        free(bufs[i]);
    strand_shard_free(&shard);
}

/* AUTO picks a concrete strategy; a wisdom path in a missing directory is created and written. */
static void check_auto_and_wisdom(const strand_grid *grid) {
    strand_shard shard;
    CHECK(strand_shard_init(&shard, grid, 64, STRAND_LAYOUT_CONTIGUOUS) == STRAND_OK);
    char dir[256], path[300];
    snprintf(dir, sizeof dir, "/tmp/strand-fftconv-test-%ld", (long)getpid());
    /* Rank 0's pid names the directory for everyone. */
    long pid = (long)getpid();
    MPI_Bcast(&pid, 1, MPI_LONG, 0, grid->sp_comm);
    snprintf(dir, sizeof dir, "/tmp/strand-fftconv-test-%ld", pid);
    snprintf(path, sizeof path, "%s/sub/wisdom", dir);
    strand_fftconv_options opt = {STRAND_CONV_AUTO, 0, path, 1};
    for (int C = 1; C <= 4; C += 3) {
        strand_fftconv *conv = NULL;
        CHECK(strand_fftconv_create(&conv, &shard, C, &opt) == STRAND_OK);
        if (!conv) continue;
        const int s = strand_fftconv_strategy(conv);
        CHECK(s == STRAND_CONV_FFTW_MPI || s == STRAND_CONV_ALLTOALL);
        CHECK(strcmp(strand_fftconv_strategy_name(s), s == STRAND_CONV_ALLTOALL ? "alltoall" : "fftw-mpi") ==
              0);
        strand_fftconv_free(conv);
    }
    if (grid->sp_rank == 0) {
        struct stat st;
        CHECK_MSG(stat(path, &st) == 0 && S_ISREG(st.st_mode), "wisdom file %s was not written", path);
        char sub[320];
        snprintf(sub, sizeof sub, "%s/sub", dir);
        unlink(path);
        rmdir(sub);
        rmdir(dir);
    }
    /* A bad strategy is refused on every rank. */
    strand_fftconv_options bad = {7, 0, NULL, 1};
    strand_fftconv *conv = NULL;
    CHECK(strand_fftconv_create(&conv, &shard, 2, &bad) == STRAND_ERR_CONFIG && conv == NULL);
    strand_shard_free(&shard);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    strand_grid grid;
    CHECK(strand_grid_init(&grid, MPI_COMM_WORLD, 0, 1) == STRAND_OK);
    const int64_t lengths[] = {37, 64, 101};
    const int channels[] = {1, 3, 4, 7};
    for (int layout = 0; layout < 2; layout++)
        for (size_t li = 0; li < sizeof lengths / sizeof *lengths; li++)
            for (size_t ci = 0; ci < sizeof channels / sizeof *channels; ci++)
                check_case(&grid, lengths[li], channels[ci], layout);
    /* Shortest windows the layouts allow: some ranks hold a single row, FFTW blocks are tiny. */
    check_case(&grid, grid.sp_size * 2, 2, STRAND_LAYOUT_ZIGZAG);
    check_case(&grid, grid.sp_size, 5, STRAND_LAYOUT_CONTIGUOUS);
    /* Central differences of a bilinear map are exact up to rounding: run in both precisions. */
    for (int si = 0; si < 2; si++) {
        check_gradients(&grid, strategies[si], STRAND_LAYOUT_CONTIGUOUS);
        check_gradients(&grid, strategies[si], STRAND_LAYOUT_ZIGZAG);
    }
    check_auto_and_wisdom(&grid);
    if (grid.world_rank == 0)
        fprintf(stderr, "test_fftconv: worst relative error vs direct %.3g\n", worst_error);
    strand_grid_free(&grid);
    int status = test_finish("test_fftconv");
    int any = 0;
    MPI_Allreduce(&status, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any;
}
