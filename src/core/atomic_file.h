/* Atomic replacement of a file: it is written under a temporary name, made durable, renamed over
 * the final name, and the rename is made durable by an fsync of the directory. A reader, or a
 * crash at any moment, sees the old file or the complete new one, never a partial one.
 *
 * Every failure is STRAND_ERR_IO with one message form, for every step:
 *   "cannot write FINAL: REASON (STEP of PATH)"
 * where STEP is the call that failed (write, open, fsync, close, rename, directory open,
 * directory fsync) and PATH what it was applied to (the temporary file or the directory). A
 * failure before the rename removes the temporary file; after it, FINAL is the new file but
 * the rename may not survive a crash. fsync's EINVAL (a device, or a file system that cannot
 * sync) is not an error: there is nothing to make durable. Local calls: no MPI. */
#ifndef STRAND_ATOMIC_FILE_H
#define STRAND_ATOMIC_FILE_H

#include "strand/common.h"

#include <stddef.h>

/* Publish a complete, closed tmp_path as final_path: fsync it, rename it, fsync the directory. */
int strand_atomic_publish(const char *tmp_path, const char *final_path);

/* The same without the fsync of tmp_path, for files the caller has already synced (checkpoints
 * and datasets are synced when their checksum header is written). */
int strand_atomic_rename(const char *tmp_path, const char *final_path);

/* Write `length` bytes of text to "<path>.tmp" (created or truncated, mode 0644 less the umask)
 * and publish it as path. */
int strand_atomic_write_text(const char *path, const char *text, size_t length);

#endif
