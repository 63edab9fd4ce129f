/* Runtime choice of the optimized code path, and the row-splitting thread helper. */
#include "quant/quant_internal.h"

#if M2O_HAVE_X86
#include <cpuid.h>
#endif
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_once_t g_cpu_once = PTHREAD_ONCE_INIT;
static bool g_cpu_avx2;
static volatile bool g_force_scalar;

static void detect_cpu(void)
{
#if M2O_HAVE_X86
    /* F16C through cpuid (leaf 1, ECX bit 29): clang's __builtin_cpu_supports has no "f16c". */
    unsigned a, b, c, d;
    bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
    __builtin_cpu_init();
    g_cpu_avx2 = __builtin_cpu_supports("avx2") && f16c;
#else
    g_cpu_avx2 = false;
#endif
}

bool quant_use_avx2(void)
{
    pthread_once(&g_cpu_once, detect_cpu);
    return g_cpu_avx2 && !g_force_scalar;
}

const char *quant_dispatch_name(void)
{
    return quant_use_avx2() ? "avx2" : "scalar";
}

void quant_force_scalar(bool on)
{
    g_force_scalar = on;
}

/* ---- quant_parallel_for ---- */

typedef struct range_job {
    quant_range_fn fn;
    void *ctx;
    int64_t begin, end;
    int rc;
    m2o_err err;
} range_job;

static void *run_range_job(void *arg)
{
    range_job *j = arg;
    j->err.msg[0] = 0;
    j->rc = j->fn(j->ctx, j->begin, j->end, &j->err);
    return NULL;
}

static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > 256 ? 256 : (int)n);
}

int quant_parallel_for(int64_t count, int64_t align, int nthreads, quant_range_fn fn, void *ctx,
                       m2o_err *err)
{
    if (!fn || count < 0 || align < 1)
        return m2o_fail(err, "quant_parallel_for: bad arguments (count %lld, align %lld)",
                        (long long)count, (long long)align);
    if (nthreads <= 0)
        nthreads = online_cpus();
    int64_t units = (count + align - 1) / align;
    if (nthreads > units)
        nthreads = (int)(units > 0 ? units : 1);
    if (nthreads <= 1)
        return fn(ctx, 0, count, err);

    range_job *jobs = m2o_calloc((size_t)nthreads, sizeof *jobs, err);
    pthread_t *tids = m2o_calloc((size_t)nthreads, sizeof *tids, err);
    if (!jobs || !tids) {
        free(jobs);
        free(tids);
        return -1;
    }
    /* Contiguous chunks of whole `align` units, sizes differing by at most one unit. */
    int64_t start = 0;
    for (int t = 0; t < nthreads; t++) {
        int64_t u = units / nthreads + (t < units % nthreads ? 1 : 0);
        int64_t end = start + u * align;
        jobs[t] = (range_job){fn, ctx, start, end < count ? end : count, 0, {{0}}};
        start = jobs[t].end;
    }
    int started = 0, rc = 0;
    for (int t = 1; t < nthreads; t++) {
        if (pthread_create(&tids[t], NULL, run_range_job, &jobs[t]) != 0) {
            /* Run what could not get a thread here, in order, so the result stays complete. */
            for (int r = t; r < nthreads; r++)
                run_range_job(&jobs[r]);
            break;
        }
        started = t;
    }
    run_range_job(&jobs[0]);
    for (int t = 1; t <= started; t++)
        pthread_join(tids[t], NULL);
    for (int t = 0; t < nthreads; t++) {
        if (jobs[t].rc != 0) {
            if (err)
                memcpy(err->msg, jobs[t].err.msg, sizeof err->msg);
            rc = -1;
            break;
        }
    }
    free(jobs);
    free(tids);
    return rc;
}
