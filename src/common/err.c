#include "common/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int m2o_fail(m2o_err *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int m2o_wrap(m2o_err *err, const char *fmt, ...)
{
    if (!err)
        return -1;
    char prefix[512], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t n = strlen(prefix);
    if (n > sizeof err->msg - 3)
        n = sizeof err->msg - 3;
    memcpy(err->msg, prefix, n);
    memcpy(err->msg + n, ": ", 2);
    size_t room = sizeof err->msg - n - 3;
    size_t m = strnlen(old, room);
    memcpy(err->msg + n + 2, old, m);
    err->msg[n + 2 + m] = 0;
    return -1;
}

void *m2o_malloc(size_t n, m2o_err *err)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        m2o_fail(err, "out of memory allocating %zu bytes", n);
    return p;
}

void *m2o_calloc(size_t count, size_t size, m2o_err *err)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        m2o_fail(err, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}
