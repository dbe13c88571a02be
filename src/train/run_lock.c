/* The run directory's lock (see run_lock.h). */
#define _GNU_SOURCE /* O_CLOEXEC, flock */
#include "train/run_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

void strand_run_lock_init(strand_run_lock *lock) {
    memset(lock, 0, sizeof *lock);
    lock->fd = -1;
}

/* The holder's "<host> <pid>" as a phrase for the refusal. The holder writes it just after
 * locking, so an empty file is read again for a moment before giving up. */
static void describe_holder(int fd, char *out, size_t size) {
    char text[320] = "";
    for (int attempt = 0; attempt < 20; attempt++) {
        const ssize_t got = pread(fd, text, sizeof text - 1, 0);
        text[got > 0 ? got : 0] = '\0';
        if (strchr(text, '\n')) break;
        struct timespec pause = {0, 25 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    char host[256];
    long pid = 0;
    if (sscanf(text, "%255s %ld", host, &pid) == 2 && pid > 0)
        snprintf(out, size, "strand train on host %s, pid %ld", host, pid);
    else if (text[0])
        snprintf(out, size, "another job (the lock file says '%.200s')", text);
    else
        snprintf(out, size, "another strand train (it has not recorded its host and pid)");
}

static int unsupported(int error) {
    return error == ENOSYS || error == EOPNOTSUPP || error == ENOLCK;
}

int strand_run_lock_acquire(strand_run_lock *lock, const char *run_dir) {
    strand_run_lock_init(lock);
    STRAND_CALL(strand_make_dirs(run_dir));
    if (snprintf(lock->path, sizeof lock->path, "%s/.lock", run_dir) >= (int)sizeof lock->path)
        STRAND_FAIL(STRAND_ERR_INPUT, "run.dir %s: path too long for its lock file", run_dir);
    const int fd = open(lock->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) STRAND_FAIL(STRAND_ERR_IO, "cannot open the lock file %s: %s", lock->path, strerror(errno));
    int status = 0, error = 0;
    const char *fault = getenv("STRAND_FAULT_LOCK_ERRNO");
    if (fault && atoi(fault) > 0) {
        status = -1, error = atoi(fault);
    } else {
        while ((status = flock(fd, LOCK_EX | LOCK_NB)) != 0 && errno == EINTR) {
        }
        error = errno;
    }
    if (status != 0 && error == EWOULDBLOCK) {
        char holder[400];
        describe_holder(fd, holder, sizeof holder);
        close(fd);
        STRAND_FAIL(STRAND_ERR_INPUT,
                    "run.dir %s is in use by %s (lock %s); wait for it or use another run.dir", run_dir,
                    holder, lock->path);
    }
    if (status != 0 && !unsupported(error)) {
        close(fd);
        STRAND_FAIL(STRAND_ERR_IO, "cannot lock %s: %s", lock->path, strerror(error));
    }
    if (status != 0) {
        /* Refusing would make strand unusable on such a file system; the risk is said once. */
        fprintf(stderr,
                "strand train: warning: cannot lock %s: flock is not supported here (%s); a second job on "
                "this run.dir would not be refused (mount the file system with -o flock, or use a run.dir "
                "on one that supports it)\n",
                lock->path, strerror(error));
        fflush(stderr);
    }
    lock->fd = fd;
    lock->locked = status == 0;
    /* Who holds it, for a refused job's message. Not fatal: a full disk only loses the name. */
    char host[256] = "unknown";
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "unknown");
    host[sizeof host - 1] = '\0';
    char text[320];
    const int length = snprintf(text, sizeof text, "%s %ld\n", host, (long)getpid());
    if (lock->locked && ftruncate(fd, 0) == 0) {
        const ssize_t written = pwrite(fd, text, (size_t)length, 0);
        (void)written;
    }
    return STRAND_OK;
}

void strand_run_lock_release(strand_run_lock *lock) {
    if (lock->fd < 0) return;
    if (lock->locked && ftruncate(lock->fd, 0) != 0) {
        /* The next holder overwrites it anyway. */
    }
    close(lock->fd); /* drops the flock */
    lock->fd = -1;
    lock->locked = 0;
}
