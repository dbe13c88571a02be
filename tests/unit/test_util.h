/* Minimal assertion helpers for strand's tests: every check counts failures, and a test's
 * main returns test_finish(), which is non-zero when any check failed. */
#ifndef STRAND_TEST_UTIL_H
#define STRAND_TEST_UTIL_H

#include <math.h>
#include <stdio.h>

static int test_failures = 0;
static int test_checks = 0;

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        test_checks++;                                                                                       \
        if (!(cond)) {                                                                                       \
            test_failures++;                                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                         \
        }                                                                                                    \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                                 \
    do {                                                                                                     \
        test_checks++;                                                                                       \
        if (!(cond)) {                                                                                       \
            test_failures++;                                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);                         \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fputc('\n', stderr);                                                                             \
        }                                                                                                    \
    } while (0)

/* |a - b| <= tol * max(1, |a|, |b|) */
#define CHECK_CLOSE(a, b, tol)                                                                               \
    do {                                                                                                     \
        double check_a_ = (double)(a), check_b_ = (double)(b);                                               \
        double check_scale_ = fmax(1.0, fmax(fabs(check_a_), fabs(check_b_)));                               \
        CHECK_MSG(fabs(check_a_ - check_b_) <= (tol)*check_scale_, "%.17g vs %.17g (tol %g)", check_a_,      \
                  check_b_, (double)(tol));                                                                  \
    } while (0)

static inline int test_finish(const char *name) {
    if (test_checks == 0) {
        fprintf(stderr, "%s: no checks ran\n", name);
        return 1;
    }
    fprintf(stderr, "%s: %d checks, %d failed\n", name, test_checks, test_failures);
    return test_failures ? 1 : 0;
}

#endif
