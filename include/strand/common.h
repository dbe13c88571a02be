/* Types, status codes and the error-propagation macros every strand module uses.
 *
 * Library functions return an int status (STRAND_OK == 0). A failure records one message
 * (file:line and reason) in a per-thread buffer and returns its code up the stack with
 * STRAND_CALL. Conditions that only some ranks see are agreed with strand_agree() before any
 * collective that would otherwise hang. Library code never calls exit(); internal bugs that
 * cannot be recovered use STRAND_ASSERT, which aborts the whole job with rank and location. */
#ifndef STRAND_COMMON_H
#define STRAND_COMMON_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

/* A token id in memory (strand/dataset.h: the vocabulary). Datasets store 16-bit tokens; 8-bit
 * ones, from earlier versions, are read as they are. */
/* ln 2: nats per bit, for losses reported in bits */
#define STRAND_LN2 0.69314718055994530942
typedef uint32_t strand_token_t; /* kmer:8 has 65544 tokens */
#define STRAND_MPI_TOKEN MPI_UINT32_T

#ifdef STRAND_REAL_DOUBLE
typedef double real_t;
#define STRAND_MPI_REAL MPI_DOUBLE
#define STRAND_REAL_NAME "double"
#else
typedef float real_t;
#define STRAND_MPI_REAL MPI_FLOAT
#define STRAND_REAL_NAME "float"
#endif

#ifndef STRAND_VERSION
#define STRAND_VERSION "0.0.0"
#endif

enum strand_status {
    STRAND_OK = 0,
    STRAND_ERR_INPUT = 1,   /* bad user input: file content, argument, config value */
    STRAND_ERR_CONFIG = 2,  /* unknown key or out-of-range config value */
    STRAND_ERR_IO = 3,      /* file system or HDF5 failure */
    STRAND_ERR_MPI = 4,     /* an MPI call failed */
    STRAND_ERR_NOMEM = 5,   /* allocation failed */
    STRAND_ERR_NUMERIC = 6, /* NaN or Inf where a finite number is required */
    STRAND_ERR_PEER = 7,    /* another rank failed; its message was received */
    STRAND_ERR_INTERNAL = 8,
};

/* Record an error message (printf-style) and return `code`. file and line (STRAND_FAIL passes them)
 * are not kept: messages are for users and carry no source location. */
int strand_error_set(int code, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Copy text into out[size] as one line: newline, CR and tab become the escapes \n, \r and \t,
 * other control characters \xHH, and trailing line breaks are dropped. Returns the length.
 * strand_error_set applies it to every message, so every error prints as one line. */
size_t strand_one_line(char *out, size_t size, const char *text);
/* The last recorded message ("" when none). */
const char *strand_error_message(void);
void strand_error_clear(void);

#define STRAND_FAIL(code, ...) return strand_error_set((code), __FILE__, __LINE__, __VA_ARGS__)

#define STRAND_CALL(expr)                                                                                    \
    do {                                                                                                     \
        int strand_call_status_ = (expr);                                                                    \
        if (strand_call_status_ != STRAND_OK) return strand_call_status_;                                    \
    } while (0)

/* Like STRAND_CALL but jumps to a cleanup label, storing the status in `status`. */
#define STRAND_CALL_GOTO(status, label, expr)                                                                \
    do {                                                                                                     \
        (status) = (expr);                                                                                   \
        if ((status) != STRAND_OK) goto label;                                                               \
    } while (0)

int strand_mpi_error(int mpi_code, const char *call, const char *file, int line);
#define STRAND_CALL_MPI(expr)                                                                                \
    do {                                                                                                     \
        int strand_mpi_status_ = (expr);                                                                     \
        if (strand_mpi_status_ != MPI_SUCCESS)                                                               \
            return strand_mpi_error(strand_mpi_status_, #expr, __FILE__, __LINE__);                          \
    } while (0)

/* Abort the whole job for an internal bug (never for user input). */
void strand_abort_internal(const char *file, int line, const char *expr);
#define STRAND_ASSERT(cond)                                                                                  \
    do {                                                                                                     \
        if (!(cond)) strand_abort_internal(__FILE__, __LINE__, #cond);                                       \
    } while (0)

/* Agree on a status across `comm` (collective). Returns STRAND_OK on every rank when all ranks
 * passed STRAND_OK. Otherwise every rank returns the lowest failing rank's code, and its message
 * becomes the message on every rank, unchanged: nothing says which rank it came from (the CLI
 * prints it once, on world rank 0, as "strand CMD: error: MESSAGE"). A failure only some ranks
 * can see should name its rank in the message itself. */
int strand_agree(MPI_Comm comm, int status);
/* `rank` of comm as a rank of MPI_COMM_WORLD: what messages name. */
int strand_world_rank_of(MPI_Comm comm, int rank);

/* Checked allocation: returns NULL and records STRAND_ERR_NOMEM on failure. Memory is zeroed and
 * 64-byte aligned. Free with strand_free. */
void *strand_alloc(size_t bytes, const char *what);
void strand_free(void *ptr);
/* Test hook (fault injection): make the n-th strand_alloc call from now on fail (n >= 1; 0
 * disarms), on this process only. The environment arms it at the first allocation:
 * STRAND_FAULT_ALLOC=n, on world rank STRAND_FAULT_RANK only when that is set. */
void strand_fault_alloc_arm(int64_t n);
/* strand_alloc calls since the hook was last armed (armed or not). */
int64_t strand_fault_alloc_calls(void);
/* For allocators other than strand_alloc (FFTW's aligned buffers): counts as one allocation of
 * the hook; returns 1, with the error recorded, when this one is to fail. */
int strand_fault_alloc_injected(size_t bytes, const char *what);
#define STRAND_ALLOC(ptr, count, what)                                                                       \
    do {                                                                                                     \
        (ptr) = strand_alloc((size_t)(count) * sizeof(*(ptr)), (what));                                      \
        if (!(ptr)) return STRAND_ERR_NOMEM;                                                                 \
    } while (0)

/* Threads of this process for OpenMP loops and the GEMMs' row blocks (FFTW's come with each plan,
 * see fftconv.h); n >= 1. strand_threads() is the current count. OpenBLAS runs on one thread;
 * strand_threads_blas_own(1) hands it all of them (a reference GEMM in a benchmark), (0) takes
 * them back. */
void strand_threads_set(int n);
int strand_threads(void);
void strand_threads_blas_own(int own);

/* Wall-clock seconds (monotonic). */
double strand_now(void);
/* Where a layer's time goes, for `strand bench fftconv --layer`: seconds per kind of work summed
 * since the last reset, while enabled (off by default: a section costs one branch). Kept per
 * process and added from the rank's main thread only. */
enum strand_section {
    STRAND_SECTION_FILTER,     /* implicit filter network, forward and backward */
    STRAND_SECTION_PROJECTION, /* the position-wise GEMMs (input and output projections) */
    STRAND_SECTION_FFT,        /* inside FFTW's execute */
    STRAND_SECTION_EXCHANGE,   /* the long convolution's packing, exchange and spectral products */
    STRAND_SECTION_COUNT
};
void strand_sections_enable(int on);
void strand_sections_reset(void);
double strand_section_seconds(int section);
/* strand_now() when enabled, else 0; strand_section_end adds now - t0 to the section. */
double strand_section_begin(void);
void strand_section_end(int section, double t0);
void strand_section_add(int section, double seconds);
/* Sleep `seconds`, all of them even when a signal arrives (test hooks that slow a run down). */
void strand_sleep(double seconds);
/* mkdir -p: create path and its missing parents (serial; existing directories are fine). */
int strand_make_dirs(const char *path);
/* Peak resident memory of this process in bytes (from getrusage). */
int64_t strand_peak_rss_bytes(void);

/* Contiguous, possibly uneven, split of n items into `parts`: the first n % parts pieces get one
 * extra item. */
void strand_split_range(int64_t n, int parts, int index, int64_t *start, int64_t *count);

#endif
