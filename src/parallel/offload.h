/* Activation offload (train.offload = DIR): block inputs go to a per-rank HDF5 file on local
 * scratch during forward and come back during backward, moved by one background thread so the
 * transfers overlap the blocks' compute.
 *
 * The file DIR/strand-offload-<host>-<pid>-r<rank>.h5 holds one dataset /x of n_slots x
 * slot_values reals (contiguous layout; slot l is block l's input). Requests are queued in order
 * and carried out by the thread; each returns a ticket to wait on. The caller must leave a
 * buffer alone (no write into a buffer being written out, no read of a buffer being filled)
 * until its ticket completes.
 *
 * HDF5 is not built thread-safe on Debian, so only one thread may be inside the library at a
 * time: the offload thread calls HDF5 only while a request is pending, and strand_offload_drain
 * returns only when none is, so callers drain before any other HDF5 call (datasets,
 * checkpoints). The model drains at the end of every forward and backward.
 *
 * I/O failures (a full disk, a removed directory) do not stop the thread: the first one is kept
 * and returned by every later wait/drain, so all ranks can finish the pass and agree on it. */
#ifndef STRAND_OFFLOAD_H
#define STRAND_OFFLOAD_H

#include "strand/common.h"

#include <stdint.h>

typedef struct strand_offload strand_offload;

/* Create DIR (and its parents) when missing, the rank's file and the thread. Local (no MPI). The file
 * is unlinked as soon as it is open: it needs no cleanup, even after kill -9. */
int strand_offload_create(strand_offload **offload, const char *dir, int rank, int n_slots,
                          int64_t slot_values);
/* Queue: write count values of x to slot, or read them from slot into x. */
int64_t strand_offload_write(strand_offload *offload, int slot, const real_t *x, int64_t count);
int64_t strand_offload_read(strand_offload *offload, int slot, real_t *x, int64_t count);
/* Wait until request `ticket` (and every earlier one) is done; returns the first I/O error. */
int strand_offload_wait(strand_offload *offload, int64_t ticket);
/* Wait for every queued request. */
int strand_offload_drain(strand_offload *offload);
/* Bytes moved and seconds the thread spent in I/O since creation. */
void strand_offload_stats(const strand_offload *offload, int64_t *bytes, double *seconds);
/* Stop the thread and close the file (it was unlinked at creation, so nothing is left behind). */
void strand_offload_free(strand_offload *offload);

#endif
