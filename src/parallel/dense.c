/* Distributed singular values and orthogonal matrices with ScaLAPACK (see dense.h). */
#include "parallel/dense.h"

#include "core/rng.h"

#include <limits.h>
#include <math.h>
#include <string.h>

/* BLACS and ScaLAPACK, as Debian's libscalapack-openmpi exports them (no header ships). The
 * Fortran routines take every argument by reference; those with CHARACTER arguments also take
 * each one's length, by value, after the last argument (gfortran's convention): passed here
 * explicitly, since leaving them out is undefined and has broken LAPACK callers built with newer
 * gfortran. */
int Csys2blacs_handle(MPI_Comm comm);
void Cfree_blacs_system_handle(int handle);
void Cblacs_gridinit(int *context, const char *order, int nprow, int npcol);
void Cblacs_gridinfo(int context, int *nprow, int *npcol, int *myrow, int *mycol);
void Cblacs_gridexit(int context);
void descinit_(int *desc, const int *m, const int *n, const int *mb, const int *nb, const int *irsrc,
               const int *icsrc, const int *context, const int *lld, int *info);
void pdgesvd_(const char *jobu, const char *jobvt, const int *m, const int *n, double *a, const int *ia,
              const int *ja, const int *desca, double *s, double *u, const int *iu, const int *ju,
              const int *descu, double *vt, const int *ivt, const int *jvt, const int *descvt, double *work,
              const int *lwork, int *info, size_t jobu_length, size_t jobvt_length);
void pdgeqrf_(const int *m, const int *n, double *a, const int *ia, const int *ja, const int *desca,
              double *tau, double *work, const int *lwork, int *info);
/* PBLAS's broadcast and combine topologies: op 'B' or 'C', scope 'R', 'C' or 'A', top ' ' (the
 * default) or '!' (read). */
char *PB_Ctop(int *context, char *op, char *scope, char *top);
void pdorgqr_(const int *m, const int *n, const int *k, double *a, const int *ia, const int *ja,
              const int *desca, const double *tau, double *work, const int *lwork, int *info);

/* An MPI call in a stretch every rank runs with status OK (after an agreement): a failure is
 * recorded, and the next strand_agree makes every rank see it. */
#define DENSE_MPI(status, expr)                                                                              \
    do {                                                                                                     \
        if ((status) == STRAND_OK) {                                                                         \
            int dense_mpi_code_ = (expr);                                                                    \
            if (dense_mpi_code_ != MPI_SUCCESS)                                                              \
                (status) = strand_mpi_error(dense_mpi_code_, #expr, __FILE__, __LINE__);                     \
        }                                                                                                    \
    } while (0)

/* Block-cyclic maps of one dimension of n items in blocks of nb over P processes, first block on
 * process 0 (what numroc_ and the descriptors' RSRC = CSRC = 0 mean). */
static int64_t local_count(int64_t n, int nb, int p, int P) {
    const int64_t blocks = n / nb, rest = n % nb, cycles = blocks / P, extra = blocks % P;
    return cycles * nb + (p < extra ? nb : p == extra ? rest : 0);
}

static int owner_of(int64_t i, int nb, int P) {
    return (int)((i / nb) % P);
}

static int64_t local_of(int64_t i, int nb, int P) {
    return i / ((int64_t)nb * P) * nb + i % nb;
}

static int64_t global_of(int64_t l, int nb, int p, int P) {
    return l / nb * nb * P + (int64_t)p * nb + l % nb;
}

/* PBLAS keeps its topologies in six process-wide variables, not per context, and ScaLAPACK does
 * not always put them back: after pdorgqr the row broadcast stays 'D' (D-ring) on the processes
 * that ran it (measured with ScaLAPACK 2.2.1). A rank idle on one grid then disagrees with the
 * others about how the next grid broadcasts, and pdgebrd deadlocks (one rank in a ring, another
 * in MPI_Bcast). Every call here therefore starts and ends from the defaults, on every rank. */
static void dense_reset_topologies(void) {
    char ops[] = "BC", scopes[] = "RCA", top[] = " ";
    int context = 0; /* unused by PB_Ctop */
    for (int o = 0; o < 2; o++)
        for (int s = 0; s < 3; s++)
            PB_Ctop(&context, &ops[o], &scopes[s], top);
}

void strand_dense_grid_shape(int ranks, int *nprow, int *npcol) {
    int c = 1;
    for (int d = 1; (int64_t)d * d <= ranks; d++)
        if (ranks % d == 0) c = d;
    *npcol = ranks >= 1 ? c : 0;
    *nprow = ranks >= 1 ? ranks / c : 0;
}

int strand_dense_grid_init(strand_dense_grid *g, MPI_Comm comm, int nprow, int npcol) {
    memset(g, 0, sizeof *g);
    g->comm = MPI_COMM_NULL;
    g->context = g->system_handle = -1;
    g->myrow = g->mycol = -1;
    STRAND_CALL_MPI(MPI_Comm_dup(comm, &g->comm));
    STRAND_CALL_MPI(MPI_Comm_set_errhandler(g->comm, MPI_ERRORS_RETURN));
    STRAND_CALL_MPI(MPI_Comm_rank(g->comm, &g->rank));
    STRAND_CALL_MPI(MPI_Comm_size(g->comm, &g->size));
    if (nprow == 0 && npcol == 0)
        strand_dense_grid_shape(g->size, &nprow, &npcol);
    else if (nprow < 1 || npcol < 1 || (int64_t)nprow * npcol > g->size)
        STRAND_FAIL(STRAND_ERR_CONFIG, "a %d x %d process grid does not fit %d ranks", nprow, npcol, g->size);
    g->nprow = nprow;
    g->npcol = npcol;
    g->coords = strand_alloc(sizeof(int) * 2 * (size_t)g->size, "the dense grid's coordinates");
    STRAND_CALL(strand_agree(g->comm, g->coords ? STRAND_OK : STRAND_ERR_NOMEM));

    /* Collective over comm, idle ranks included: BLACS splits its own communicators from it.
     * Ranks left out of the grid get context -1. */
    g->system_handle = Csys2blacs_handle(g->comm);
    g->context = g->system_handle;
    Cblacs_gridinit(&g->context, "Row", nprow, npcol);
    int mine[2] = {-1, -1}, status = STRAND_OK;
    if (g->context >= 0) {
        int rows = 0, cols = 0;
        Cblacs_gridinfo(g->context, &rows, &cols, &mine[0], &mine[1]);
        if (rows != nprow || cols != npcol || mine[0] < 0 || mine[1] < 0)
            status = strand_error_set(
                STRAND_ERR_INTERNAL, __FILE__, __LINE__,
                "BLACS made a %d x %d grid with rank %d at (%d, %d) for a %d x %d request", rows, cols,
                strand_world_rank_of(g->comm, g->rank), mine[0], mine[1], nprow, npcol);
        g->myrow = mine[0];
        g->mycol = mine[1];
    }
    STRAND_CALL(strand_agree(g->comm, status));
    /* Who holds which grid position, as BLACS numbered them (row-major over the first ranks, but
     * the scatter and gather rely on this table, not on that assumption). */
    STRAND_CALL_MPI(MPI_Allgather(mine, 2, MPI_INT, g->coords, 2, MPI_INT, g->comm));
    int in_grid = 0;
    g->root_of_grid = -1;
    for (int r = 0; r < g->size; r++) {
        if (g->coords[2 * r] < 0) continue;
        in_grid++;
        if (g->coords[2 * r] == 0 && g->coords[2 * r + 1] == 0) g->root_of_grid = r;
    }
    if (in_grid != nprow * npcol || g->root_of_grid < 0)
        STRAND_FAIL(STRAND_ERR_INTERNAL, "BLACS placed %d ranks on a %d x %d grid", in_grid, nprow, npcol);
    g->rank_at = strand_alloc(sizeof(int) * (size_t)in_grid, "the dense grid's ranks");
    STRAND_CALL(strand_agree(g->comm, g->rank_at ? STRAND_OK : STRAND_ERR_NOMEM));
    for (int r = 0; r < g->size; r++)
        if (g->coords[2 * r] >= 0) g->rank_at[g->coords[2 * r] * npcol + g->coords[2 * r + 1]] = r;
    return STRAND_OK;
}

void strand_dense_grid_free(strand_dense_grid *g) {
    if (g->context >= 0) Cblacs_gridexit(g->context);
    if (g->system_handle >= 0) Cfree_blacs_system_handle(g->system_handle);
    strand_free(g->coords);
    strand_free(g->rank_at);
    if (g->comm != MPI_COMM_NULL) MPI_Comm_free(&g->comm);
    g->context = g->system_handle = -1;
    g->coords = g->rank_at = NULL;
}

int strand_dense_block(const strand_dense_grid *g, int64_t rows, int64_t cols) {
    if (g->block > 0) return g->block;
    /* Big enough for BLAS 3 inside the factorisations, small enough that no grid row or column is
     * left without data on a small matrix (n = 5 on 2 x 2: blocks of 3). */
    int64_t nb = (rows + g->nprow - 1) / g->nprow;
    const int64_t by_cols = (cols + g->npcol - 1) / g->npcol;
    if (by_cols < nb) nb = by_cols;
    if (nb > STRAND_DENSE_MAX_BLOCK) nb = STRAND_DENSE_MAX_BLOCK;
    return nb < 1 ? 1 : (int)nb;
}

/* One distributed matrix: its global shape (column-major), block and this rank's local array. */
typedef struct {
    int rows, cols, nb;
    int64_t lrows, lcols; /* this rank's local block (0 x 0 on an idle rank) */
    int lld;
    int desc[9];
    double *local; /* (lld, lcols), column-major */
} dense_matrix;

/* Local shape, descriptor and storage (local, no communication). */
static int dense_matrix_init(dense_matrix *a, const strand_dense_grid *g, int64_t rows, int64_t cols,
                             const char *what) {
    memset(a, 0, sizeof *a);
    a->rows = (int)rows;
    a->cols = (int)cols;
    a->nb = strand_dense_block(g, rows, cols);
    if (g->context < 0) return STRAND_OK;
    a->lrows = local_count(rows, a->nb, g->myrow, g->nprow);
    a->lcols = local_count(cols, a->nb, g->mycol, g->npcol);
    a->lld = a->lrows > 1 ? (int)a->lrows : 1;
    const int zero = 0;
    int info = 0;
    descinit_(a->desc, &a->rows, &a->cols, &a->nb, &a->nb, &zero, &zero, &g->context, &a->lld, &info);
    if (info != 0)
        STRAND_FAIL(STRAND_ERR_INTERNAL, "descinit_ refused a %d x %d matrix in blocks of %d (INFO = %d)",
                    a->rows, a->cols, a->nb, info);
    a->local = strand_alloc(sizeof(double) * (size_t)(a->lld * (a->lcols > 0 ? a->lcols : 1)), what);
    return a->local ? STRAND_OK : STRAND_ERR_NOMEM;
}

/* Values each rank of comm holds of a (rows x cols, blocks of nb) and their offsets in a buffer of
 * all ranks' local arrays in rank order (idle ranks: 0). */
static void dense_counts(const strand_dense_grid *g, int64_t rows, int64_t cols, int nb, int *counts,
                         int *displs) {
    int64_t offset = 0;
    for (int r = 0; r < g->size; r++) {
        const int pr = g->coords[2 * r], pc = g->coords[2 * r + 1];
        const int64_t count =
            pr < 0 ? 0 : local_count(rows, nb, pr, g->nprow) * local_count(cols, nb, pc, g->npcol);
        counts[r] = (int)count;
        displs[r] = (int)offset;
        offset += count;
    }
}

/* Where global (i, j) of a sits in a buffer of all ranks' local arrays laid out by dense_counts
 * (each local array column-major with lld = its local rows: contiguous). */
static int64_t dense_offset(const strand_dense_grid *g, const dense_matrix *a, const int *displs, int64_t i,
                            int64_t j) {
    const int pr = owner_of(i, a->nb, g->nprow), pc = owner_of(j, a->nb, g->npcol);
    const int64_t lrows = local_count(a->rows, a->nb, pr, g->nprow);
    return displs[g->rank_at[pr * g->npcol + pc]] + local_of(i, a->nb, g->nprow) +
           local_of(j, a->nb, g->npcol) * lrows;
}

/* A ScaLAPACK INFO as a status (local: agree it afterwards). */
static int dense_info(int info, const char *routine, int64_t size) {
    if (info == 0) return STRAND_OK;
    if (info < 0)
        STRAND_FAIL(STRAND_ERR_INTERNAL, "%s: argument %d had an illegal value", routine,
                    info < -100 ? -info / 100 : -info);
    if (info == size + 1 && strcmp(routine, "pdgesvd_") == 0)
        STRAND_FAIL(STRAND_ERR_NUMERIC, "pdgesvd_: the singular values differ across the process grid "
                                        "(heterogeneous processes)");
    STRAND_FAIL(STRAND_ERR_NUMERIC, "%s did not converge (INFO = %d) on a %lld-value problem", routine, info,
                (long long)size);
}

/* A work array of the size a workspace query returned in query. */
static int dense_work(double **work, int *lwork, double query, const char *routine) {
    if (!(query >= 1.0)) query = 1.0;
    if (query > (double)INT_MAX)
        STRAND_FAIL(STRAND_ERR_NOMEM, "%s wants %.0f workspace values, more than an int counts", routine,
                    query);
    *lwork = (int)query;
    *work = strand_alloc(sizeof(double) * (size_t)*lwork, routine);
    return *work ? STRAND_OK : STRAND_ERR_NOMEM;
}

static int singular_values(const strand_dense_grid *g, int64_t m, int64_t n, const double *a_root, int root,
                           double *sigma) {
    if (m < 0 || n < 0)
        STRAND_FAIL(STRAND_ERR_INPUT, "singular values of a %lld x %lld matrix", (long long)m, (long long)n);
    if (root < 0 || root >= g->size)
        STRAND_FAIL(STRAND_ERR_INPUT, "root %d is not a rank of the dense grid's %d", root, g->size);
    const int64_t k = m < n ? m : n;
    if (k == 0) return STRAND_OK;
    if (m > INT_MAX || n > INT_MAX || m * n > INT_MAX)
        STRAND_FAIL(STRAND_ERR_INPUT, "a %lld x %lld matrix is too large to scatter from one rank",
                    (long long)m, (long long)n);

    /* ScaLAPACK is column-major: the row-major m x n array read column-major is A^T (n x m), whose
     * singular values are A's (A = U S V^T gives A^T = V S U^T). So the distributed matrix is
     * A^T, with rows = n and cols = m, and nothing is transposed. */
    dense_matrix a;
    int status = dense_matrix_init(&a, g, n, m, "the local block of the matrix");
    int *counts = NULL, *displs = NULL;
    double *packed = NULL, *work = NULL;
    if (g->rank == root && status == STRAND_OK) {
        if (!a_root) {
            status = strand_error_set(STRAND_ERR_INPUT, __FILE__, __LINE__, "no matrix on the root rank");
        } else {
            /* Non-finite input would only come back as a convergence failure, or as NaN values. */
            for (int64_t i = 0; i < m * n && status == STRAND_OK; i++)
                if (!isfinite(a_root[i]))
                    status = strand_error_set(STRAND_ERR_NUMERIC, __FILE__, __LINE__,
                                              "the matrix has a non-finite value %g at (%lld, %lld)",
                                              a_root[i], (long long)(i / n), (long long)(i % n));
        }
        counts = strand_alloc(sizeof(int) * (size_t)g->size, "scatter counts");
        displs = strand_alloc(sizeof(int) * (size_t)g->size, "scatter offsets");
        packed = strand_alloc(sizeof(double) * (size_t)(m * n), "the matrix in block-cyclic order");
        if (status == STRAND_OK && (!counts || !displs || !packed)) status = STRAND_ERR_NOMEM;
    }
    STRAND_CALL_GOTO(status, done, strand_agree(g->comm, status));

    /* The scatter is one MPI_Scatterv from root, each rank's blocks packed contiguously: the root
     * may be an idle rank (outside every BLACS context, where Cpdgemr2d would need one more
     * context spanning all ranks), MPI errors come back as codes (the BLACS abort), and the volume
     * is the same m n values either way. */
    if (g->rank == root) {
        dense_counts(g, a.rows, a.cols, a.nb, counts, displs);
        for (int64_t j = 0; j < a.cols; j++) /* A^T(i, j) = A(j, i) */
            for (int64_t i = 0; i < a.rows; i++)
                packed[dense_offset(g, &a, displs, i, j)] = a_root[j * n + i];
    }
    DENSE_MPI(status, MPI_Scatterv(packed, counts, displs, MPI_DOUBLE, a.local, (int)(a.lrows * a.lcols),
                                   MPI_DOUBLE, root, g->comm));
    STRAND_CALL_GOTO(status, done, strand_agree(g->comm, status));

    /* Singular values only: JOBU = JOBVT = 'N' leaves U, VT and their descriptors unreferenced
     * (A's are passed to keep every pointer valid). The workspace query is collective over the
     * grid; idle ranks go straight to the agreement (another communicator: no mismatch). */
    const int one = 1;
    int lwork = -1, info = 0;
    if (g->context >= 0) {
        double query = 0.0, dummy = 0.0;
        pdgesvd_("N", "N", &a.rows, &a.cols, a.local, &one, &one, a.desc, sigma, &dummy, &one, &one, a.desc,
                 &dummy, &one, &one, a.desc, &query, &lwork, &info, 1, 1);
        status = dense_info(info, "pdgesvd_", k);
        if (status == STRAND_OK) status = dense_work(&work, &lwork, query, "pdgesvd_ workspace");
    }
    STRAND_CALL_GOTO(status, done, strand_agree(g->comm, status));
    if (g->context >= 0) {
        double dummy = 0.0;
        pdgesvd_("N", "N", &a.rows, &a.cols, a.local, &one, &one, a.desc, sigma, &dummy, &one, &one, a.desc,
                 &dummy, &one, &one, a.desc, work, &lwork, &info, 1, 1);
        status = dense_info(info, "pdgesvd_", k);
    }
    STRAND_CALL_GOTO(status, done, strand_agree(g->comm, status));
    /* Every grid process holds all of S (descending, as dbdsqr leaves them): one copy goes to the
     * idle ranks too. */
    DENSE_MPI(status, MPI_Bcast(sigma, (int)k, MPI_DOUBLE, g->root_of_grid, g->comm));
    status = strand_agree(g->comm, status);
done:
    strand_free(work);
    strand_free(packed);
    strand_free(displs);
    strand_free(counts);
    strand_free(a.local);
    return status;
}

static int orthogonal(const strand_dense_grid *g, int64_t n, uint64_t seed, uint64_t stream,
                      uint64_t counter_hi, double *q) {
    if (n < 0) STRAND_FAIL(STRAND_ERR_INPUT, "an orthogonal matrix of size %lld", (long long)n);
    if (n == 0) return STRAND_OK;
    if (n > INT_MAX || n * n > INT_MAX)
        STRAND_FAIL(STRAND_ERR_INPUT, "a %lld x %lld orthogonal matrix is too large to gather on every rank",
                    (long long)n, (long long)n);
    /* The distributed matrix is G itself, column-major (global (i, j) = G(i, j)), each rank
     * drawing its own entries from the counters: nothing to scatter, and the same G whatever the
     * grid. */
    dense_matrix a;
    int status = dense_matrix_init(&a, g, n, n, "the local block of the orthogonal matrix");
    double *tau = NULL, *sign = NULL, *all = NULL, *work = NULL;
    int *counts = NULL, *displs = NULL;
    if (status == STRAND_OK) {
        tau = strand_alloc(sizeof(double) * (size_t)(a.lcols > 0 ? a.lcols : 1), "QR reflector scales");
        sign = strand_alloc(sizeof(double) * (size_t)n, "signs of R's diagonal");
        all = strand_alloc(sizeof(double) * (size_t)(n * n), "the gathered orthogonal matrix");
        counts = strand_alloc(sizeof(int) * (size_t)g->size, "gather counts");
        displs = strand_alloc(sizeof(int) * (size_t)g->size, "gather offsets");
        if (!tau || !sign || !all || !counts || !displs) status = STRAND_ERR_NOMEM;
    }
    STRAND_CALL_GOTO(status, done, strand_agree(g->comm, status));
    for (int64_t lj = 0; lj < a.lcols; lj++) {
        const int64_t j = global_of(lj, a.nb, g->mycol, g->npcol);
        for (int64_t li = 0; li < a.lrows; li++) {
            const int64_t i = global_of(li, a.nb, g->myrow, g->nprow);
            a.local[lj * a.lld + li] = strand_rng_normal(seed, stream, counter_hi, (uint64_t)(i * n + j));
        }
    }

    /* One work array for both routines: the larger of their queries. */
    const int one = 1;
    int lwork = -1, info = 0;
    if (g->context >= 0) {
        double query_qr = 0.0, query_q = 0.0;
        pdgeqrf_(&a.rows, &a.cols, a.local, &one, &one, a.desc, tau, &query_qr, &lwork, &info);
        status = dense_info(info, "pdgeqrf_", n);
        if (status == STRAND_OK) {
            pdorgqr_(&a.rows, &a.cols, &a.cols, a.local, &one, &one, a.desc, tau, &query_q, &lwork, &info);
            status = dense_info(info, "pdorgqr_", n);
        }
        if (status == STRAND_OK)
            status = dense_work(&work, &lwork, query_qr > query_q ? query_qr : query_q, "QR workspace");
    }
    STRAND_CALL_GOTO(status, done, strand_agree(g->comm, status));
    if (g->context >= 0) {
        pdgeqrf_(&a.rows, &a.cols, a.local, &one, &one, a.desc, tau, work, &lwork, &info);
        status = dense_info(info, "pdgeqrf_", n);
        /* R's diagonal is on A's diagonal now; each R(j, j) lives on exactly one process. */
        for (int64_t lj = 0; lj < a.lcols && status == STRAND_OK; lj++) {
            const int64_t j = global_of(lj, a.nb, g->mycol, g->npcol);
            if (owner_of(j, a.nb, g->nprow) == g->myrow)
                sign[j] = a.local[lj * a.lld + local_of(j, a.nb, g->nprow)] < 0.0 ? -1.0 : 1.0;
        }
    }
    STRAND_CALL_GOTO(status, done, strand_agree(g->comm, status));
    /* The other entries are zero: a sum hands every rank all n signs. */
    DENSE_MPI(status, MPI_Allreduce(MPI_IN_PLACE, sign, (int)n, MPI_DOUBLE, MPI_SUM, g->comm));
    STRAND_CALL_GOTO(status, done, strand_agree(g->comm, status));
    if (g->context >= 0) {
        pdorgqr_(&a.rows, &a.cols, &a.cols, a.local, &one, &one, a.desc, tau, work, &lwork, &info);
        status = dense_info(info, "pdorgqr_", n);
    }
    STRAND_CALL_GOTO(status, done, strand_agree(g->comm, status));
    /* G = Q R = (Q D)(D R) with D = diag(sign(R(j, j))): Q D is the factor whose R has a positive
     * diagonal, which makes it unique, and Haar distributed for Gaussian G. */
    for (int64_t lj = 0; lj < a.lcols; lj++) {
        const double s = sign[global_of(lj, a.nb, g->mycol, g->npcol)];
        for (int64_t li = 0; li < a.lrows; li++)
            a.local[lj * a.lld + li] *= s;
    }
    dense_counts(g, a.rows, a.cols, a.nb, counts, displs);
    /* lld = lrows wherever a block is non-empty, so each local array is contiguous. */
    DENSE_MPI(status, MPI_Allgatherv(a.local, (int)(a.lrows * a.lcols), MPI_DOUBLE, all, counts, displs,
                                     MPI_DOUBLE, g->comm));
    STRAND_CALL_GOTO(status, done, strand_agree(g->comm, status));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
            q[i * n + j] = all[dense_offset(g, &a, displs, i, j)];
done:
    strand_free(work);
    strand_free(displs);
    strand_free(counts);
    strand_free(all);
    strand_free(sign);
    strand_free(tau);
    strand_free(a.local);
    return status;
}

int strand_dense_singular_values(const strand_dense_grid *g, int64_t m, int64_t n, const double *a_root,
                                 int root, double *sigma) {
    dense_reset_topologies();
    const int status = singular_values(g, m, n, a_root, root, sigma);
    dense_reset_topologies();
    return status;
}

int strand_dense_orthogonal(const strand_dense_grid *g, int64_t n, uint64_t seed, uint64_t stream,
                            uint64_t counter_hi, double *q) {
    dense_reset_topologies();
    const int status = orthogonal(g, n, seed, stream, counter_hi, q);
    dense_reset_topologies();
    return status;
}
