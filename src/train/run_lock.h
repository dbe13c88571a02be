/* One job per run directory: an exclusive flock on "<run.dir>/.lock", taken by rank 0 before the
 * run directory is read (resume) or written, and held until training ends. Without it a second
 * job on the same run.dir would resume from the first one's checkpoints, rename a new
 * metrics.jsonl over the first one's open file and prune its temporary checkpoints.
 *
 * The file holds the holder's "<host> <pid>\n", written after locking, so that a refused job can
 * name it. The kernel drops the lock when the holder dies (kill -9 included), so a stale file
 * never blocks: the next holder overwrites its content. Serial (rank 0 only). */
#ifndef STRAND_RUN_LOCK_H
#define STRAND_RUN_LOCK_H

#include "strand/common.h"

typedef struct {
    int fd;     /* -1 when not held */
    int locked; /* flock succeeded (0 on a file system without flock: see below) */
    char path[1100];
} strand_run_lock;

void strand_run_lock_init(strand_run_lock *lock);

/* Create run_dir if needed and lock "<run_dir>/.lock". When another process holds it, fails with
 * STRAND_ERR_INPUT: "run.dir D is in use by strand train on host H, pid P (lock D/.lock); wait for
 * it or use another run.dir". On a file system without flock (Lustre mounted without -o flock:
 * ENOSYS; others: EOPNOTSUPP, ENOLCK) it prints one warning line on stderr and returns STRAND_OK
 * without a lock: training goes on, unprotected. Test hook: STRAND_FAULT_LOCK_ERRNO=N makes flock
 * fail with errno N. */
int strand_run_lock_acquire(strand_run_lock *lock, const char *run_dir);

/* Empty the file (a finished job names no holder) and drop the lock; safe on a lock not held. */
void strand_run_lock_release(strand_run_lock *lock);

#endif
