/* Runtime choice of the optimized code path, and the row-splitting thread helper. */
#include "quant/quant_internal.h"

#include "common/threadpool.h"

#if M2O_HAVE_X86
#include <cpuid.h>
#endif
#include <pthread.h>
#include <stdatomic.h>
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

typedef struct range_jobs {
    range_job *jobs;
    int n;
    atomic_int next; /* the next job to claim */
} range_jobs;

static void run_range_jobs(void *arg)
{
    range_jobs *rj = arg;
    for (int t; (t = atomic_fetch_add(&rj->next, 1)) < rj->n;) {
        range_job *j = &rj->jobs[t];
        j->err.msg[0] = 0;
        j->rc = j->fn(j->ctx, j->begin, j->end, &j->err);
    }
}

int quant_parallel_for(int64_t count, int64_t align, int nthreads, quant_range_fn fn, void *ctx,
                       m2o_err *err)
{
    if (!fn || count < 0 || align < 1)
        return m2o_fail(err, "quant_parallel_for: bad arguments (count %lld, align %lld)",
                        (long long)count, (long long)align);
    if (nthreads <= 0)
        nthreads = m2o_cpu_count();
    int64_t units = (count + align - 1) / align;
    if (nthreads > units)
        nthreads = (int)(units > 0 ? units : 1);
    if (nthreads <= 1)
        return fn(ctx, 0, count, err);

    range_jobs rj = {.jobs = m2o_calloc((size_t)nthreads, sizeof *rj.jobs, err), .n = nthreads};
    if (!rj.jobs)
        return -1;
    atomic_init(&rj.next, 0);
    /* Contiguous chunks of whole `align` units, sizes differing by at most one unit. */
    int64_t start = 0;
    for (int t = 0; t < nthreads; t++) {
        int64_t u = units / nthreads + (t < units % nthreads ? 1 : 0);
        int64_t end = start + u * align;
        rj.jobs[t] = (range_job){fn, ctx, start, end < count ? end : count, 0, {{0}}};
        start = rj.jobs[t].end;
    }
    m2o_run_workers(nthreads, run_range_jobs, &rj);
    int rc = 0;
    for (int t = 0; t < nthreads; t++) {
        if (rj.jobs[t].rc != 0) {
            if (err)
                memcpy(err->msg, rj.jobs[t].err.msg, sizeof err->msg);
            rc = -1;
            break;
        }
    }
    free(rj.jobs);
    return rc;
}
