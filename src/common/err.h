/* Error convention: every fallible function returns 0 on success or -1 on failure and fills an
 * m2o_err with one line saying what went wrong, where (file, tensor, option) and what to do.
 * Nothing on an input-dependent path asserts or aborts. */
#ifndef M2O_ERR_H
#define M2O_ERR_H

#include <stddef.h>

typedef struct m2o_err {
    char msg[1024];
} m2o_err;

/* Formats the message into err (if non-NULL) and returns -1, so callers can write
 * `return m2o_fail(err, "...", ...);`. */
int m2o_fail(m2o_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prefixes an existing message with context ("while reading X: " + old message). Returns -1. */
int m2o_wrap(m2o_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Allocation helpers that report out-of-memory through err instead of crashing. */
void *m2o_malloc(size_t n, m2o_err *err);
void *m2o_calloc(size_t count, size_t size, m2o_err *err);

#endif
