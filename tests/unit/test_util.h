/* Minimal assertion helpers for strand's tests: every check counts failures, and a test's
 * main returns test_finish(), which is non-zero when any check failed. */
#ifndef STRAND_TEST_UTIL_H
#define STRAND_TEST_UTIL_H

#include "strand/config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

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

/* Set one configuration key with printf formatting ("attn.heads=%d"); a refused value fails the
 * test (keys of a mixer live in its own options, reached only through their names). */
#define CONFIG_SET(config, ...)                                                                              \
    do {                                                                                                     \
        char config_set_text_[1200];                                                                         \
        snprintf(config_set_text_, sizeof config_set_text_, __VA_ARGS__);                                    \
        CHECK_MSG(strand_config_set((config), config_set_text_) == STRAND_OK, "%s", config_set_text_);       \
    } while (0)

/* A key's value as a double, read through its row (int, int64, bool, enum index or double). */
static inline double config_value(const strand_config *config, const char *name) {
    const strand_config_key *key = strand_config_find_key(name);
    if (!key) {
        fprintf(stderr, "no config key %s\n", name);
        return NAN;
    }
    const char *field = (const char *)config + key->offset;
    int i;
    int64_t l;
    double d;
    switch (key->type) {
    case STRAND_KEY_INT64:
        memcpy(&l, field, sizeof l);
        return (double)l;
    case STRAND_KEY_DOUBLE:
        memcpy(&d, field, sizeof d);
        return d;
    default:
        memcpy(&i, field, sizeof i);
        return i;
    }
}

static inline int test_finish(const char *name) {
    if (test_checks == 0) {
        fprintf(stderr, "%s: no checks ran\n", name);
        return 1;
    }
    fprintf(stderr, "%s: %d checks, %d failed\n", name, test_checks, test_failures);
    return test_failures ? 1 : 0;
}

#endif
