/* Error recording, cross-rank agreement, aligned allocation and clocks. */
#define _POSIX_C_SOURCE 200809L
#include "strand/common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

enum { ERROR_MESSAGE_BYTES = 1024 };

static _Thread_local char error_message[ERROR_MESSAGE_BYTES];

size_t strand_one_line(char *out, size_t size, const char *text) {
    static const char hex[] = "0123456789abcdef";
    size_t end = strlen(text);
    /* A trailing line break (HDF5's messages end with one) carries nothing. */
    while (end > 0 && (text[end - 1] == '\n' || text[end - 1] == '\r'))
        end--;
    size_t n = 0;
    for (size_t i = 0; i < end && n + 1 < size; i++) {
        const unsigned char c = (unsigned char)text[i];
        char escape[5] = {c, '\0'};
        if (c == '\n' || c == '\r' || c == '\t') {
            escape[0] = '\\';
            escape[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
            escape[2] = '\0';
        } else if (c < 0x20 || c == 0x7f) {
            escape[0] = '\\', escape[1] = 'x', escape[2] = hex[c >> 4], escape[3] = hex[c & 15];
            escape[4] = '\0';
        }
        const size_t length = strlen(escape);
        if (n + length >= size) break; /* cut whole escapes only */
        memcpy(out + n, escape, length);
        n += length;
    }
    if (size) out[n] = '\0';
    return n;
}

int strand_error_set(int code, const char *file, int line, const char *fmt, ...) {
    char text[ERROR_MESSAGE_BYTES];
    va_list args;
    va_start(args, fmt);
    vsnprintf(text, sizeof text, fmt, args);
    va_end(args);
    /* Every error is printed as one line: quoted values and library texts may hold line breaks. */
    strand_one_line(error_message, sizeof error_message, text);
    return code;
}

const char *strand_error_message(void) {
    return error_message;
}

void strand_error_clear(void) {
    error_message[0] = '\0';
}

int strand_mpi_error(int mpi_code, const char *call, const char *file, int line) {
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    if (MPI_Error_string(mpi_code, text, &length) != MPI_SUCCESS)
        snprintf(text, sizeof text, "code %d", mpi_code);
    return strand_error_set(STRAND_ERR_MPI, file, line, "MPI call failed: %s: %s", call, text);
}

void strand_abort_internal(const char *file, int line, const char *expr) {
    int rank = -1, initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    fprintf(stderr, "strand: internal error on rank %d at %s:%d: assertion '%s' failed\n", rank, file, line,
            expr);
    fflush(stderr);
    if (initialized) MPI_Abort(MPI_COMM_WORLD, 70);
    abort();
}

int strand_world_rank_of(MPI_Comm comm, int rank) {
    MPI_Group group, world_group;
    int world_rank = rank;
    if (MPI_Comm_group(comm, &group) != MPI_SUCCESS) return rank;
    if (MPI_Comm_group(MPI_COMM_WORLD, &world_group) == MPI_SUCCESS) {
        MPI_Group_translate_ranks(group, 1, &rank, world_group, &world_rank);
        MPI_Group_free(&world_group);
    }
    MPI_Group_free(&group);
    return world_rank;
}

int strand_agree(MPI_Comm comm, int status) {
    int rank = 0, size = 1;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    /* Lowest failing rank: encode as (failed ? rank : size) and take the minimum. */
    int mine = status != STRAND_OK ? rank : size, first = size;
    if (MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm) != MPI_SUCCESS) {
        /* The agreement itself failed: nothing safe is left but to abort. */
        strand_abort_internal(__FILE__, __LINE__, "MPI_Allreduce in strand_agree");
    }
    if (first == size) return STRAND_OK;
    /* Send the failing rank's code and message to everyone. */
    char buffer[ERROR_MESSAGE_BYTES + 8];
    int code = status;
    if (rank == first) {
        memcpy(buffer, &code, sizeof code);
        snprintf(buffer + sizeof code, ERROR_MESSAGE_BYTES, "%s", error_message);
    }
    if (MPI_Bcast(buffer, (int)sizeof buffer, MPI_CHAR, first, comm) != MPI_SUCCESS)
        strand_abort_internal(__FILE__, __LINE__, "MPI_Bcast in strand_agree");
    if (rank != first) {
        memcpy(&code, buffer, sizeof code);
        buffer[sizeof buffer - 1] = '\0';
        memcpy(error_message, buffer + sizeof code, sizeof error_message);
        error_message[sizeof error_message - 1] = '\0';
        if (code == STRAND_OK) code = STRAND_ERR_PEER;
    }
    return code;
}

/* The allocation fault hook: counts are per process; allocations come from the main thread and
 * the offload thread, hence atomics. */
static _Atomic int64_t fault_alloc_calls = 0, fault_alloc_fail_at = 0;
static _Atomic int fault_alloc_from_env = 0;

void strand_fault_alloc_arm(int64_t n) {
    fault_alloc_from_env = 1; /* an explicit arming wins over the environment */
    fault_alloc_calls = 0;
    fault_alloc_fail_at = n;
}

int64_t strand_fault_alloc_calls(void) {
    return fault_alloc_calls;
}

static int fault_alloc_now(void) {
    if (!fault_alloc_from_env) {
        fault_alloc_from_env = 1;
        const char *n = getenv("STRAND_FAULT_ALLOC"), *rank = getenv("STRAND_FAULT_RANK");
        int world_rank = 0, initialized = 0;
        MPI_Initialized(&initialized);
        if (initialized) MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
        if (n && (!rank || atoi(rank) == world_rank)) fault_alloc_fail_at = atoll(n);
    }
    const int64_t call = ++fault_alloc_calls;
    return fault_alloc_fail_at > 0 && call == fault_alloc_fail_at;
}

int strand_fault_alloc_injected(size_t bytes, const char *what) {
    if (!fault_alloc_now()) return 0;
    strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__,
                     "out of memory allocating %zu bytes for %s (injected fault)", bytes,
                     what ? what : "a buffer");
    return 1;
}

void *strand_alloc(size_t bytes, const char *what) {
    void *ptr = NULL;
    if (strand_fault_alloc_injected(bytes, what)) return NULL;
    size_t rounded = (bytes + 63) / 64 * 64;
    if (rounded == 0) rounded = 64;
    if (posix_memalign(&ptr, 64, rounded) != 0 || !ptr) {
        strand_error_set(STRAND_ERR_NOMEM, __FILE__, __LINE__, "out of memory allocating %zu bytes for %s",
                         bytes, what ? what : "a buffer");
        return NULL;
    }
    memset(ptr, 0, rounded);
    return ptr;
}

void strand_free(void *ptr) {
    free(ptr);
}

double strand_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int sections_on = 0;
static double section_seconds[STRAND_SECTION_COUNT];

void strand_sections_enable(int on) {
    sections_on = on;
}

void strand_sections_reset(void) {
    for (int i = 0; i < STRAND_SECTION_COUNT; i++)
        section_seconds[i] = 0;
}

double strand_section_seconds(int section) {
    return section >= 0 && section < STRAND_SECTION_COUNT ? section_seconds[section] : 0.0;
}

double strand_section_begin(void) {
    return sections_on ? strand_now() : 0.0;
}

void strand_section_end(int section, double t0) {
    if (sections_on && section >= 0 && section < STRAND_SECTION_COUNT)
        section_seconds[section] += strand_now() - t0;
}

void strand_section_add(int section, double seconds) {
    if (sections_on && section >= 0 && section < STRAND_SECTION_COUNT) section_seconds[section] += seconds;
}

void strand_sleep(double seconds) {
    struct timespec left = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
}

int64_t strand_peak_rss_bytes(void) {
    struct rusage usage;
    if (getrusage(RUSAGE_SELF, &usage) != 0) return 0;
    return (int64_t)usage.ru_maxrss * 1024;
}

void strand_split_range(int64_t n, int parts, int index, int64_t *start, int64_t *count) {
    int64_t base = n / parts, extra = n % parts;
    *count = base + (index < extra ? 1 : 0);
    *start = index * base + (index < extra ? index : extra);
}

int strand_make_dirs(const char *path) {
    char buffer[4096];
    if (!path[0]) STRAND_FAIL(STRAND_ERR_INPUT, "empty directory name");
    if (snprintf(buffer, sizeof buffer, "%s", path) >= (int)sizeof buffer)
        STRAND_FAIL(STRAND_ERR_INPUT, "directory name too long: %s", path);
    /* Each parent in turn, then the directory itself; existing ones are fine. */
    for (char *p = buffer + 1;; p++) {
        const char c = *p;
        if (c != '/' && c != '\0') continue;
        *p = '\0';
        if (mkdir(buffer, 0775) != 0 && errno != EEXIST)
            STRAND_FAIL(STRAND_ERR_IO, "cannot create directory %s: %s", buffer, strerror(errno));
        *p = c;
        if (c == '\0') return STRAND_OK;
    }
}
