/* Activation offload to a per-rank HDF5 file, moved by one background thread (see offload.h). */
#define _DEFAULT_SOURCE /* gethostname */
#include "parallel/offload.h"

#include <hdf5.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef STRAND_REAL_DOUBLE
#define OFFLOAD_H5_REAL H5T_NATIVE_DOUBLE
#else
#define OFFLOAD_H5_REAL H5T_NATIVE_FLOAT
#endif

enum { QUEUE_CAPACITY = 8 };

typedef struct {
    int read; /* 1 = file -> memory */
    int slot;
    real_t *data;
    int64_t count;
} offload_request;

struct strand_offload {
    char path[4096];
    hid_t file, dataset;
    int n_slots;
    int64_t slot_values;
    pthread_t thread;
    int thread_started;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    offload_request queue[QUEUE_CAPACITY];
    int64_t queued, done; /* tickets issued and completed; request i sits at queue[i % capacity] */
    int stop;
    /* first failure, formatted by the thread; reported by the caller's thread */
    int failed;
    char failure[4800];
    int64_t bytes;
    double seconds;
    int fault; /* test hook STRAND_FAULT_OFFLOAD_RANK: every transfer on this rank fails */
};

/* One transfer between memory and the slot's hyperslab. Runs on the offload thread. */
static int transfer(strand_offload *off, const offload_request *request, char *message, size_t size) {
    hsize_t start = (hsize_t)request->slot * (hsize_t)off->slot_values, count = (hsize_t)request->count;
    hid_t file_space = H5Dget_space(off->dataset);
    hid_t memory_space = H5Screate_simple(1, &count, NULL);
    herr_t status = -1;
    if (!off->fault && file_space >= 0 && memory_space >= 0 &&
        H5Sselect_hyperslab(file_space, H5S_SELECT_SET, &start, NULL, &count, NULL) >= 0) {
        if (request->read)
            status =
                H5Dread(off->dataset, OFFLOAD_H5_REAL, memory_space, file_space, H5P_DEFAULT, request->data);
        else
            status =
                H5Dwrite(off->dataset, OFFLOAD_H5_REAL, memory_space, file_space, H5P_DEFAULT, request->data);
    }
    if (memory_space >= 0) H5Sclose(memory_space);
    if (file_space >= 0) H5Sclose(file_space);
    if (status < 0) {
        snprintf(message, size,
                 "train.offload: %s block %d's input (%lld bytes) %s %s failed (disk full or removed?)",
                 request->read ? "reading" : "writing", request->slot,
                 (long long)(request->count * (int64_t)sizeof(real_t)), request->read ? "from" : "to",
                 off->path);
        return STRAND_ERR_IO;
    }
    return STRAND_OK;
}

static void *offload_thread(void *arg) {
    strand_offload *off = arg;
    pthread_mutex_lock(&off->lock);
    for (;;) {
        while (!off->stop && off->done == off->queued)
            pthread_cond_wait(&off->changed, &off->lock);
        if (off->done == off->queued) break; /* stop requested and nothing left */
        offload_request request = off->queue[off->done % QUEUE_CAPACITY];
        pthread_mutex_unlock(&off->lock);
        char message[4800] = "";
        const double start = strand_now();
        /* After a failure the file is suspect: later requests are skipped, not retried. */
        const int status = off->failed ? STRAND_ERR_IO : transfer(off, &request, message, sizeof message);
        const double elapsed = strand_now() - start;
        pthread_mutex_lock(&off->lock);
        if (status != STRAND_OK && !off->failed) {
            off->failed = 1;
            snprintf(off->failure, sizeof off->failure, "%s", message);
        }
        off->bytes += request.count * (int64_t)sizeof(real_t);
        off->seconds += elapsed;
        off->done++;
        pthread_cond_broadcast(&off->changed);
    }
    pthread_mutex_unlock(&off->lock);
    return NULL;
}

static int open_file(strand_offload *off, const char *dir, int rank) {
    if (strand_make_dirs(dir) != STRAND_OK) {
        char reason[1024];
        snprintf(reason, sizeof reason, "%s", strand_error_message());
        STRAND_FAIL(STRAND_ERR_IO, "train.offload: %s", reason);
    }
    char host[256] = "host";
    gethostname(host, sizeof host - 1);
    int n = snprintf(off->path, sizeof off->path, "%s/strand-offload-%s-%ld-r%d.h5", dir, host,
                     (long)getpid(), rank);
    if (n < 0 || (size_t)n >= sizeof off->path)
        STRAND_FAIL(STRAND_ERR_CONFIG, "train.offload: directory name %s is too long", dir);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* errors are reported by us, with the path */
    off->file = H5Fcreate(off->path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (off->file < 0) STRAND_FAIL(STRAND_ERR_IO, "train.offload: cannot create %s", off->path);
    hsize_t size = (hsize_t)off->n_slots * (hsize_t)off->slot_values;
    hid_t space = H5Screate_simple(1, &size, NULL);
    /* Allocate the file's space at write time: no fill pass over gigabytes at creation. */
    hid_t create = H5Pcreate(H5P_DATASET_CREATE);
    if (create >= 0) H5Pset_fill_time(create, H5D_FILL_TIME_NEVER);
    off->dataset = space >= 0 && create >= 0
                       ? H5Dcreate2(off->file, "x", OFFLOAD_H5_REAL, space, H5P_DEFAULT, create, H5P_DEFAULT)
                       : -1;
    if (create >= 0) H5Pclose(create);
    if (space >= 0) H5Sclose(space);
    if (off->dataset < 0)
        STRAND_FAIL(STRAND_ERR_IO, "train.offload: cannot create a %lld-byte dataset in %s",
                    (long long)(size * sizeof(real_t)), off->path);
    /* The open file stays usable; unlinking now means a killed job leaves no scratch behind. */
    unlink(off->path);
    return STRAND_OK;
}

int strand_offload_create(strand_offload **offload, const char *dir, int rank, int n_slots,
                          int64_t slot_values) {
    *offload = NULL;
    strand_offload *off = strand_alloc(sizeof *off, "offload");
    if (!off) return STRAND_ERR_NOMEM;
    off->file = off->dataset = -1;
    off->n_slots = n_slots;
    off->slot_values = slot_values > 0 ? slot_values : 1;
    pthread_mutex_init(&off->lock, NULL);
    pthread_cond_init(&off->changed, NULL);
    const char *fault = getenv("STRAND_FAULT_OFFLOAD_RANK");
    off->fault = fault && atoi(fault) == rank;
    int status = open_file(off, dir, rank);
    if (status == STRAND_OK) {
        if (pthread_create(&off->thread, NULL, offload_thread, off) != 0)
            status = strand_error_set(STRAND_ERR_INTERNAL, __FILE__, __LINE__,
                                      "train.offload: cannot start the offload thread");
        else
            off->thread_started = 1;
    }
    if (status != STRAND_OK) {
        strand_offload_free(off);
        return status;
    }
    *offload = off;
    return STRAND_OK;
}

static int64_t enqueue(strand_offload *off, int read, int slot, real_t *data, int64_t count) {
    STRAND_ASSERT(slot >= 0 && slot < off->n_slots && count <= off->slot_values);
    pthread_mutex_lock(&off->lock);
    while (off->queued - off->done == QUEUE_CAPACITY)
        pthread_cond_wait(&off->changed, &off->lock);
    off->queue[off->queued % QUEUE_CAPACITY] = (offload_request){read, slot, data, count};
    const int64_t ticket = off->queued++;
    pthread_cond_broadcast(&off->changed);
    pthread_mutex_unlock(&off->lock);
    return ticket;
}

int64_t strand_offload_write(strand_offload *offload, int slot, const real_t *x, int64_t count) {
    /* The thread only reads from x for a write request. */
    return enqueue(offload, 0, slot, (real_t *)x, count);
}

int64_t strand_offload_read(strand_offload *offload, int slot, real_t *x, int64_t count) {
    return enqueue(offload, 1, slot, x, count);
}

int strand_offload_wait(strand_offload *offload, int64_t ticket) {
    strand_offload *off = offload;
    pthread_mutex_lock(&off->lock);
    while (off->done <= ticket)
        pthread_cond_wait(&off->changed, &off->lock);
    char failure[4800];
    const int failed = off->failed;
    if (failed) snprintf(failure, sizeof failure, "%s", off->failure);
    pthread_mutex_unlock(&off->lock);
    if (failed) STRAND_FAIL(STRAND_ERR_IO, "%s", failure);
    return STRAND_OK;
}

int strand_offload_drain(strand_offload *offload) {
    pthread_mutex_lock(&offload->lock);
    const int64_t last = offload->queued - 1;
    pthread_mutex_unlock(&offload->lock);
    return strand_offload_wait(offload, last);
}

void strand_offload_stats(const strand_offload *offload, int64_t *bytes, double *seconds) {
    strand_offload *off = (strand_offload *)offload;
    pthread_mutex_lock(&off->lock);
    *bytes = off->bytes;
    *seconds = off->seconds;
    pthread_mutex_unlock(&off->lock);
}

void strand_offload_free(strand_offload *offload) {
    strand_offload *off = offload;
    if (!off) return;
    if (off->thread_started) {
        pthread_mutex_lock(&off->lock);
        off->stop = 1;
        pthread_cond_broadcast(&off->changed);
        pthread_mutex_unlock(&off->lock);
        pthread_join(off->thread, NULL);
    }
    if (off->dataset >= 0) H5Dclose(off->dataset);
    if (off->file >= 0) H5Fclose(off->file);
    pthread_mutex_destroy(&off->lock);
    pthread_cond_destroy(&off->changed);
    strand_free(off);
}
