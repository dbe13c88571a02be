/* Atomic file replacement (see atomic_file.h). */
#define _POSIX_C_SOURCE 200809L
#include "core/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { DIR_PATH_BYTES = 4096 };

static int step_failed(const char *final_path, const char *step, const char *path, int error) {
    return strand_error_set(STRAND_ERR_IO, __FILE__, __LINE__, "cannot write %s: %s (%s of %s)", final_path,
                            strerror(error ? error : EIO), step, path);
}

/* fsync that treats EINVAL (nothing that can be synced: a device, some file systems' directories)
 * as done. Returns 0 or the errno. */
static int sync_fd(int fd) {
    if (fsync(fd) == 0 || errno == EINVAL) return 0;
    return errno;
}

/* The directory that holds path ("." when it names none). 0, or ENAMETOOLONG. */
static int directory_of(const char *path, char *out, size_t size) {
    if (snprintf(out, size, "%s", path) >= (int)size) return ENAMETOOLONG;
    char *slash = strrchr(out, '/');
    if (!slash)
        snprintf(out, size, ".");
    else if (slash == out)
        out[1] = '\0';
    else
        *slash = '\0';
    return 0;
}

int strand_atomic_rename(const char *tmp_path, const char *final_path) {
    if (rename(tmp_path, final_path) != 0) {
        const int error = errno;
        unlink(tmp_path);
        return step_failed(final_path, "rename", tmp_path, error);
    }
    /* The rename lives in the directory: until it is synced, a crash may bring back the old file. */
    char dir[DIR_PATH_BYTES];
    int error = directory_of(final_path, dir, sizeof dir);
    if (error) return step_failed(final_path, "directory open", final_path, error);
    const int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return step_failed(final_path, "directory open", dir, errno);
    error = sync_fd(fd);
    close(fd);
    return error ? step_failed(final_path, "directory fsync", dir, error) : STRAND_OK;
}

int strand_atomic_publish(const char *tmp_path, const char *final_path) {
    /* Another descriptor than the writer's is enough: fsync syncs the file, not the descriptor. */
    const int fd = open(tmp_path, O_RDONLY | O_CLOEXEC);
    const char *step = fd < 0 ? "open" : NULL;
    int error = fd < 0 ? errno : 0;
    if (!step && (error = sync_fd(fd)) != 0) step = "fsync";
    if (fd >= 0 && close(fd) != 0 && !step) step = "close", error = errno;
    if (!step) return strand_atomic_rename(tmp_path, final_path);
    unlink(tmp_path);
    return step_failed(final_path, step, tmp_path, error);
}

int strand_atomic_write_text(const char *path, const char *text, size_t length) {
    char tmp[DIR_PATH_BYTES + 8];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return step_failed(path, "open", path, ENAMETOOLONG);
    const int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return step_failed(path, "open", tmp, errno);
    const char *step = NULL;
    int error = 0;
    for (size_t done = 0; done < length && !step;) {
        const ssize_t n = write(fd, text + done, length - done);
        if (n > 0)
            done += (size_t)n;
        else if (n < 0 && errno != EINTR)
            step = "write", error = errno;
        else if (n == 0)
            step = "write", error = EIO;
    }
    if (!step && (error = sync_fd(fd)) != 0) step = "fsync";
    if (close(fd) != 0 && !step) step = "close", error = errno;
    if (!step) return strand_atomic_rename(tmp, path);
    unlink(tmp);
    return step_failed(path, step, tmp, error);
}
