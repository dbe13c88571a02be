/* Threads inside a rank (parallel.threads): OpenMP's pool runs strand's loops, FFTW's threaded
 * plans and the row blocks of the linear layers' GEMMs (one single-threaded OpenBLAS call per
 * thread). OpenBLAS keeps one thread: a second pool of spinning threads on the same cores made the
 * GEMMs and the loops between them slower than either alone. */
#include "strand/common.h"

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int thread_count = 1;

void strand_threads_set(int n) {
    thread_count = n < 1 ? 1 : n;
#ifdef _OPENMP
    omp_set_num_threads(thread_count);
#endif
    strand_threads_blas_own(0);
}

void strand_threads_blas_own(int own) {
    openblas_set_num_threads(own ? thread_count : 1);
}

int strand_threads(void) {
    return thread_count;
}
