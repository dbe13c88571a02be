/* Distributed dense algebra (parallel/dense.h) against LAPACK on one process: singular values of
 * random square and rectangular matrices, of orthogonal, diagonal and rank-one matrices, on the
 * near-square grid of the job and on every smaller grid shape (idle ranks, an idle root), with
 * forced small blocks; errors seen by one rank (a NaN on the root, a failed allocation on one
 * rank) returned on every rank; and the distributed random orthogonal matrix against LAPACK's QR
 * of the same Gaussian matrix. Every rank computes the LAPACK reference itself and checks its own
 * copy of the result. TEST_DENSE_TRACE=1 prints each case before it runs (to find a hang). */
#include "test_util.h"

#include "core/rng.h"
#include "parallel/dense.h"

#include <stdlib.h>

void dgesvd_(const char *jobu, const char *jobvt, const int *m, const int *n, double *a, const int *lda,
             double *s, double *u, const int *ldu, double *vt, const int *ldvt, double *work,
             const int *lwork, int *info, size_t jobu_length, size_t jobvt_length);
void dgeqrf_(const int *m, const int *n, double *a, const int *lda, double *tau, double *work,
             const int *lwork, int *info);
void dorgqr_(const int *m, const int *n, const int *k, double *a, const int *lda, const double *tau,
             double *work, const int *lwork, int *info);

/* PBLAS's process-wide topology (see dense.c): read with top = '!'. */
char *PB_Ctop(int *context, char *op, char *scope, char *top);

enum { STREAM = 77, SEED = 20261201 };

static int world_rank, world_size;

/* a (m, n) row-major, standard normal from the counters (case, element). */
static void random_matrix(double *a, int64_t m, int64_t n, uint64_t which) {
    for (int64_t i = 0; i < m * n; i++)
        a[i] = strand_rng_normal(SEED, STREAM, which, (uint64_t)i);
}

/* LAPACK's singular values of the row-major a (m, n), from its column-major copy. */
static void lapack_singular_values(const double *a, int64_t m, int64_t n, double *s) {
    double *c = malloc(sizeof(double) * (size_t)(m * n));
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++)
            c[j * m + i] = a[i * n + j];
    const int im = (int)m, in = (int)n, lda = (int)m, one = 1;
    int lwork = -1, info = 0;
    double query = 0.0, dummy = 0.0;
    dgesvd_("N", "N", &im, &in, c, &lda, s, &dummy, &one, &dummy, &one, &query, &lwork, &info, 1, 1);
    lwork = (int)query;
    double *work = malloc(sizeof(double) * (size_t)lwork);
    dgesvd_("N", "N", &im, &in, c, &lda, s, &dummy, &one, &dummy, &one, work, &lwork, &info, 1, 1);
    CHECK_MSG(info == 0, "dgesvd_ INFO = %d", info);
    free(work);
    free(c);
}

/* max |got - want| / max(want[0], tiny): singular values are accurate to eps times the largest. */
static double relative_difference(const double *got, const double *want, int64_t k) {
    double worst = 0.0;
    for (int64_t i = 0; i < k; i++) {
        const double d = fabs(got[i] - want[i]);
        if (!(d <= worst)) worst = d; /* NaN wins */
    }
    return worst / (want[0] > 1e-300 ? want[0] : 1e-300);
}

/* sigma is the same on every rank, bit for bit, and (ordered) descending. */
static void check_replicated(const double *sigma, int64_t k, int ordered, const char *what) {
    double *lo = malloc(sizeof(double) * (size_t)k), *hi = malloc(sizeof(double) * (size_t)k);
    MPI_Allreduce(sigma, lo, (int)k, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(sigma, hi, (int)k, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    int same = 1, descending = 1;
    for (int64_t i = 0; i < k; i++) {
        if (lo[i] != hi[i] || lo[i] != sigma[i]) same = 0;
        if (ordered && i > 0 && sigma[i] > sigma[i - 1]) descending = 0;
    }
    CHECK_MSG(same, "%s: singular values differ across ranks", what);
    CHECK_MSG(descending, "%s: singular values not in descending order", what);
    free(lo);
    free(hi);
}

/* Distributed against LAPACK for one matrix (read on root). Returns the relative difference. */
static double compare_case(const strand_dense_grid *g, const double *a, int64_t m, int64_t n, int root,
                           double tol, const char *what) {
    const int64_t k = m < n ? m : n;
    double *sigma = malloc(sizeof(double) * (size_t)k), *want = malloc(sizeof(double) * (size_t)k);
    for (int64_t i = 0; i < k; i++)
        sigma[i] = -1.0;
    const int status = strand_dense_singular_values(g, m, n, world_rank == root ? a : NULL, root, sigma);
    CHECK_MSG(status == STRAND_OK, "%s: %s", what, strand_error_message());
    lapack_singular_values(a, m, n, want);
    const double diff = relative_difference(sigma, want, k);
    CHECK_MSG(diff < tol, "%s (%lld x %lld, %d x %d grid, block %d, root %d): relative difference %.3g", what,
              (long long)m, (long long)n, g->nprow, g->npcol, strand_dense_block(g, n, m), root, diff);
    check_replicated(sigma, k, 1, what);
    free(sigma);
    free(want);
    return diff;
}

static void random_case(const strand_dense_grid *g, int64_t m, int64_t n, uint64_t which, int root) {
    double *a = malloc(sizeof(double) * (size_t)(m * n));
    if (getenv("TEST_DENSE_TRACE"))
        fprintf(stderr, "rank %d: %lld x %lld on %d x %d, block %d, root %d\n", world_rank, (long long)m,
                (long long)n, g->nprow, g->npcol, strand_dense_block(g, n, m), root);
    random_matrix(a, m, n, which);
    compare_case(g, a, m, n, root, 1e-10, "random");
    free(a);
}

/* Q = H_1 ... H_r (n, n), H = I - 2 v v^T / v^T v: orthogonal, built without any QR. */
static void householder_product(double *q, int64_t n, int reflectors, uint64_t which) {
    double *v = malloc(sizeof(double) * (size_t)n), *row = malloc(sizeof(double) * (size_t)n);
    memset(q, 0, sizeof(double) * (size_t)(n * n));
    for (int64_t i = 0; i < n; i++)
        q[i * n + i] = 1.0;
    for (int r = 0; r < reflectors; r++) {
        double vv = 0.0;
        for (int64_t i = 0; i < n; i++) {
            v[i] = strand_rng_normal(SEED, STREAM, which, (uint64_t)(r * n + i));
            vv += v[i] * v[i];
        }
        /* q <- q H: each row x becomes x - 2 (x . v / vv) v */
        for (int64_t i = 0; i < n; i++) {
            double dot = 0.0;
            for (int64_t j = 0; j < n; j++)
                dot += q[i * n + j] * v[j];
            for (int64_t j = 0; j < n; j++)
                row[j] = q[i * n + j] - 2.0 * dot / vv * v[j];
            memcpy(q + i * n, row, sizeof(double) * (size_t)n);
        }
    }
    free(v);
    free(row);
}

/* Every singular value of q (n, n) is 1 to tol. */
static void check_all_ones(const strand_dense_grid *g, const double *q, int64_t n, double tol,
                           const char *what) {
    double *sigma = malloc(sizeof(double) * (size_t)n);
    const int status = strand_dense_singular_values(g, n, n, q, 0, sigma);
    CHECK_MSG(status == STRAND_OK, "%s: %s", what, strand_error_message());
    double worst = 0.0;
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(sigma[i] - 1.0) <= worst)) worst = fabs(sigma[i] - 1.0);
    CHECK_MSG(worst < tol, "%s (n = %lld, %d x %d grid): max |sigma - 1| = %.3g", what, (long long)n,
              g->nprow, g->npcol, worst);
    free(sigma);
}

static int descending(const void *x, const void *y) {
    const double a = *(const double *)x, b = *(const double *)y;
    return (a < b) - (a > b);
}

static void special_cases(const strand_dense_grid *g) {
    /* orthogonal: 7 reflectors over n = 50 */
    const int64_t n = 50;
    double *q = malloc(sizeof(double) * (size_t)(n * n));
    householder_product(q, n, 7, 901);
    check_all_ones(g, q, n, 1e-12, "householder product");
    free(q);

    /* diagonal, mixed signs and scales, one zero: its sorted |diagonal| */
    const int64_t d = 37;
    double *a = calloc((size_t)(d * d), sizeof(double)), want[37], sigma[37];
    for (int64_t i = 0; i < d; i++) {
        const double value =
            (i % 3 == 0 ? -1.0 : 1.0) * (0.5 + (double)((i * 17) % 37)) * (i % 5 == 0 ? 1e-3 : 1.0);
        a[i * d + i] = i == 11 ? 0.0 : value;
        want[i] = fabs(a[i * d + i]);
    }
    qsort(want, (size_t)d, sizeof(double), descending);
    CHECK_MSG(strand_dense_singular_values(g, d, d, a, 0, sigma) == STRAND_OK, "diagonal: %s",
              strand_error_message());
    CHECK_MSG(relative_difference(sigma, want, d) < 1e-14, "diagonal: relative difference %.3g",
              relative_difference(sigma, want, d));
    check_replicated(sigma, d, 1, "diagonal");
    free(a);

    /* rank one, u v^T (m x n = 21 x 34): one value |u| |v|, the rest zero to rounding */
    const int64_t m1 = 21, n1 = 34;
    double *r1 = malloc(sizeof(double) * (size_t)(m1 * n1)), s1[21], uu = 0.0, vv = 0.0;
    for (int64_t i = 0; i < m1; i++)
        uu += pow(strand_rng_normal(SEED, STREAM, 902, (uint64_t)i), 2);
    for (int64_t j = 0; j < n1; j++)
        vv += pow(strand_rng_normal(SEED, STREAM, 903, (uint64_t)j), 2);
    for (int64_t i = 0; i < m1; i++)
        for (int64_t j = 0; j < n1; j++)
            r1[i * n1 + j] = strand_rng_normal(SEED, STREAM, 902, (uint64_t)i) *
                             strand_rng_normal(SEED, STREAM, 903, (uint64_t)j);
    CHECK_MSG(strand_dense_singular_values(g, m1, n1, r1, 0, s1) == STRAND_OK, "rank one: %s",
              strand_error_message());
    CHECK_CLOSE(s1[0], sqrt(uu * vv), 1e-12);
    CHECK_MSG(s1[1] < 1e-12 * s1[0], "rank one: second singular value %.3g", s1[1]);
    free(r1);
}

/* The comparison has teeth: a perturbation of 1e-7 in one entry moves the singular values by far
 * more than the tolerance, and the check sees it. */
static void negative_control(const strand_dense_grid *g) {
    const int64_t n = 33;
    double *a = malloc(sizeof(double) * (size_t)(n * n)), *b = malloc(sizeof(double) * (size_t)(n * n));
    double sigma[33], want[33];
    random_matrix(a, n, n, 904);
    memcpy(b, a, sizeof(double) * (size_t)(n * n));
    b[5 * n + 7] += 1e-7;
    CHECK(strand_dense_singular_values(g, n, n, b, 0, sigma) == STRAND_OK);
    lapack_singular_values(a, n, n, want);
    const double diff = relative_difference(sigma, want, n);
    CHECK_MSG(diff > 1e-10, "a perturbed matrix passed the comparison (difference %.3g)", diff);
    free(a);
    free(b);
}

/* A failure one rank sees comes back on every rank, with the same message, and nothing hangs. */
static void error_cases(const strand_dense_grid *g) {
    const int64_t n = 9;
    double *a = malloc(sizeof(double) * (size_t)(n * n)), sigma[9];
    random_matrix(a, n, n, 905);
    a[4 * n + 2] = NAN;
    const int root = world_size - 1;
    int status = strand_dense_singular_values(g, n, n, world_rank == root ? a : NULL, root, sigma);
    CHECK_MSG(status == STRAND_ERR_NUMERIC, "NaN on the root: status %d", status);
    CHECK_MSG(strstr(strand_error_message(), "non-finite") && strstr(strand_error_message(), "(4, 2)"),
              "NaN on the root: message '%s'", strand_error_message());
    strand_error_clear();
    status = strand_dense_singular_values(g, n, n, NULL, 0, sigma);
    CHECK_MSG(status == STRAND_ERR_INPUT, "no matrix on the root: status %d", status);

    /* the last rank's first allocation fails (it is a grid rank on the job's grid) */
    random_matrix(a, n, n, 905);
    if (world_rank == world_size - 1) strand_fault_alloc_arm(1);
    status = strand_dense_singular_values(g, n, n, a, 0, sigma);
    strand_fault_alloc_arm(0);
    CHECK_MSG(status == STRAND_ERR_NOMEM, "a failed allocation on rank %d: status %d", world_size - 1,
              status);
    CHECK_MSG(strstr(strand_error_message(), "injected") != NULL, "failed allocation: message '%s'",
              strand_error_message());
    /* and the grid still works afterwards */
    compare_case(g, a, n, n, 0, 1e-10, "after the errors");

    strand_dense_grid bad;
    CHECK(strand_dense_grid_init(&bad, MPI_COMM_WORLD, world_size + 1, 1) == STRAND_ERR_CONFIG);
    strand_dense_grid_free(&bad);
    free(a);
}

/* The orthogonal factor of the Gaussian G from LAPACK, signs fixed as strand_dense_orthogonal's. */
static void lapack_orthogonal(double *q, int64_t n, uint64_t seed, uint64_t stream, uint64_t hi) {
    double *c = malloc(sizeof(double) * (size_t)(n * n)), *tau = malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
            c[j * n + i] = strand_rng_normal(seed, stream, hi, (uint64_t)(i * n + j));
    const int in = (int)n;
    int lwork = -1, info = 0;
    double query = 0.0;
    dgeqrf_(&in, &in, c, &in, tau, &query, &lwork, &info);
    lwork = (int)query + 64 * in;
    double *work = malloc(sizeof(double) * (size_t)lwork), *sign = malloc(sizeof(double) * (size_t)n);
    dgeqrf_(&in, &in, c, &in, tau, work, &lwork, &info);
    CHECK(info == 0);
    for (int64_t j = 0; j < n; j++)
        sign[j] = c[j * n + j] < 0.0 ? -1.0 : 1.0;
    dorgqr_(&in, &in, &in, c, &in, tau, work, &lwork, &info);
    CHECK(info == 0);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
            q[i * n + j] = c[j * n + i] * sign[j];
    free(c), free(tau), free(work), free(sign);
}

static void orthogonal_case(const strand_dense_grid *g, int64_t n, const double *reference_q) {
    double *q = malloc(sizeof(double) * (size_t)(n * n)), *want = malloc(sizeof(double) * (size_t)(n * n));
    const int status = strand_dense_orthogonal(g, n, SEED, STRAND_STREAM_INIT, 906, q);
    CHECK_MSG(status == STRAND_OK, "orthogonal: %s", strand_error_message());
    lapack_orthogonal(want, n, SEED, STRAND_STREAM_INIT, 906);
    double worst = 0.0, gram = 0.0;
    for (int64_t i = 0; i < n * n; i++)
        if (!(fabs(q[i] - want[i]) <= worst)) worst = fabs(q[i] - want[i]);
    for (int64_t a = 0; a < n; a++) /* Q^T Q = I */
        for (int64_t b = 0; b < n; b++) {
            double dot = 0.0;
            for (int64_t i = 0; i < n; i++)
                dot += q[i * n + a] * q[i * n + b];
            const double e = fabs(dot - (a == b ? 1.0 : 0.0));
            if (!(e <= gram)) gram = e;
        }
    CHECK_MSG(worst < 1e-12, "orthogonal (n = %lld, %d x %d grid): max difference from LAPACK %.3g",
              (long long)n, g->nprow, g->npcol, worst);
    CHECK_MSG(gram < 1e-12, "orthogonal (n = %lld): max |Q^T Q - I| = %.3g", (long long)n, gram);
    if (reference_q) {
        double grid_diff = 0.0;
        for (int64_t i = 0; i < n * n; i++)
            if (!(fabs(q[i] - reference_q[i]) <= grid_diff)) grid_diff = fabs(q[i] - reference_q[i]);
        CHECK_MSG(grid_diff < 1e-12, "orthogonal: %d x %d grid differs from 1 x 1 by %.3g", g->nprow,
                  g->npcol, grid_diff);
    }
    check_replicated(q, n * n, 0, "orthogonal (entries)");
    check_all_ones(g, q, n, 1e-12, "strand_dense_orthogonal");
    free(q);
    free(want);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    double t0 = MPI_Wtime();

    /* shapes */
    const int expect[][2] = {{1, 1}, {2, 1}, {3, 1}, {2, 2}, {5, 1},  {3, 2},
                             {7, 1}, {4, 2}, {3, 3}, {5, 2}, {11, 1}, {4, 3}};
    for (int r = 1; r <= 13; r++) {
        int pr = 0, pc = 0;
        strand_dense_grid_shape(r, &pr, &pc);
        if (r <= 11)
            CHECK_MSG(pr == expect[r - 1][0] && pc == expect[r - 1][1], "%d ranks: %d x %d", r, pr, pc);
        CHECK(pr * pc == r && pr >= pc);
    }

    /* the job's near-square grid: the shapes of the brief, square and not, roots 0 and last */
    strand_dense_grid g;
    CHECK_MSG(strand_dense_grid_init(&g, MPI_COMM_WORLD, 0, 0) == STRAND_OK, "grid: %s",
              strand_error_message());
    CHECK(g.nprow * g.npcol == world_size && g.myrow >= 0 && g.mycol >= 0);
    const int64_t shapes[][2] = {{1, 1},   {5, 5}, {33, 33}, {100, 100}, {130, 130}, {7, 12},
                                 {40, 17}, {1, 9}, {9, 1},   {130, 70},  {64, 65}};
    const int n_shapes = (int)(sizeof shapes / sizeof *shapes);
    for (int s = 0; s < n_shapes; s++)
        random_case(&g, shapes[s][0], shapes[s][1], (uint64_t)s, s % 2 ? world_size - 1 : 0);
    double t1 = MPI_Wtime();
    /* small blocks wrap around the grid many times */
    const int blocks[] = {1, 2, 3};
    for (int b = 0; b < 3; b++) {
        g.block = blocks[b];
        random_case(&g, 33, 33, 100 + (uint64_t)b, 0);
        random_case(&g, 7, 12, 110 + (uint64_t)b, world_size - 1);
        random_case(&g, 45, 20, 120 + (uint64_t)b, 0);
    }
    g.block = 0;
    special_cases(&g);
    negative_control(&g);
    error_cases(&g);
    double t2 = MPI_Wtime();

    /* every smaller explicit shape on this job: idle ranks, and root = last rank may be idle */
    double *q_ref = malloc(sizeof(double) * 40 * 40);
    {
        strand_dense_grid one;
        CHECK(strand_dense_grid_init(&one, MPI_COMM_WORLD, 1, 1) == STRAND_OK);
        CHECK(strand_dense_orthogonal(&one, 40, SEED, STRAND_STREAM_INIT, 906, q_ref) == STRAND_OK);
        strand_dense_grid_free(&one);
    }
    int grids = 0;
    for (int pr = 1; pr <= world_size; pr++)
        for (int pc = 1; pr * pc <= world_size; pc++) {
            strand_dense_grid e;
            const int status = strand_dense_grid_init(&e, MPI_COMM_WORLD, pr, pc);
            CHECK_MSG(status == STRAND_OK, "%d x %d grid: %s", pr, pc, strand_error_message());
            if (status != STRAND_OK) continue;
            const int idle = world_rank >= pr * pc;
            CHECK_MSG(idle == (e.context < 0) && idle == (e.myrow < 0),
                      "%d x %d grid: rank %d idle %d, context %d", pr, pc, world_rank, idle, e.context);
            random_case(&e, 33, 33, 200, world_size - 1);
            random_case(&e, 130, 100, 201, 0);
            random_case(&e, 12, 5, 202, world_size - 1);
            e.block = 2;
            random_case(&e, 19, 23, 203, world_size - 1);
            e.block = 0;
            orthogonal_case(&e, 40, q_ref);
            /* pdorgqr leaves the row broadcast at D-ring on the ranks that ran it; the module puts
             * the defaults back, so an idle rank and a grid rank agree on the next grid (when
             * they did not, the next pdgesvd deadlocked) */
            char ops[] = "BC", scopes[] = "RCA", get[] = "!";
            int context = 0, defaults = 1;
            for (int o = 0; o < 2; o++)
                for (int sc = 0; sc < 3; sc++)
                    if (*PB_Ctop(&context, &ops[o], &scopes[sc], get) != ' ') defaults = 0;
            CHECK_MSG(defaults, "%d x %d grid: PBLAS topologies not the defaults after the calls", pr, pc);
            strand_dense_grid_free(&e);
            grids++;
        }
    free(q_ref);
    double t3 = MPI_Wtime();
    orthogonal_case(&g, 130, NULL);
    orthogonal_case(&g, 1, NULL);
    strand_dense_grid_free(&g);
    double t4 = MPI_Wtime();

    if (world_rank == 0)
        fprintf(stderr,
                "test_dense: %d ranks, %d grids: %.2f s random shapes, %.2f s blocks/special/errors, "
                "%.2f s explicit grids, %.2f s orthogonal\n",
                world_size, grids + 1, t1 - t0, t2 - t1, t3 - t2, t4 - t3);
    int failed = test_finish("test_dense"), any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any;
}
