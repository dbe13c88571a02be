/* Threads inside a rank: one count for strand's OpenMP loops and OpenBLAS (parallel.threads). */
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
    openblas_set_num_threads(thread_count);
}

int strand_threads(void) {
    return thread_count;
}
