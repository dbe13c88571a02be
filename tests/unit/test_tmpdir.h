/* A temporary directory shared by every rank of a test: rank 0 makes it under $TMPDIR (or /tmp)
 * and everyone learns its name; removing it waits for every rank first. The including file
 * defines _POSIX_C_SOURCE 200809L (mkdtemp) before any include. */
#ifndef STRAND_TEST_TMPDIR_H
#define STRAND_TEST_TMPDIR_H

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

/* dir (size bytes) = the new directory's name, or "" when it could not be made. */
static inline void test_tmpdir_make(char *dir, int size, const char *tag) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) {
        const char *base = getenv("TMPDIR");
        snprintf(dir, (size_t)size, "%s/strand_test_%s_XXXXXX", base && *base ? base : "/tmp", tag);
        if (!mkdtemp(dir)) dir[0] = '\0';
    }
    MPI_Bcast(dir, size, MPI_CHAR, 0, MPI_COMM_WORLD);
}

static inline void test_tmpdir_remove(const char *dir) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0 && dir[0]) {
        char command[512];
        snprintf(command, sizeof command, "rm -rf '%s'", dir);
        if (system(command) != 0) fprintf(stderr, "could not remove %s\n", dir);
    }
}

#endif
