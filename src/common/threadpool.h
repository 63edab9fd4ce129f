/* The project's one way to run work on threads.
 *
 * m2o_run_workers() runs one function on several threads at once (the calling thread being one
 * of them): the workers share their work through the context, claiming items until none is
 * left, so the result is complete however many threads could be started.
 *
 * Parallel work with an ordered, single-threaded consumer:
 *
 * m2o_ordered_run() runs produce(job) for jobs 0..n_jobs-1 on worker threads and hands each result
 * to commit(job) on the calling thread strictly in job order. At most `window` jobs are produced
 * but not yet committed at any time, so memory stays bounded by the results in flight whatever
 * the number of jobs. The committed sequence is therefore identical for any thread count. */
#ifndef M2O_THREADPOOL_H
#define M2O_THREADPOOL_H

#include <stdint.h>

#include "common/err.h"

/* Number of online CPUs (at least 1). */
int m2o_cpu_count(void);

/* Runs fn(ctx) on `workers` threads (the caller included; workers <= 1 runs it once, here) and
 * returns when all have returned. A thread that cannot be started is simply not there: fn must
 * claim its items from ctx, never count on a number of workers. */
void m2o_run_workers(int workers, void (*fn)(void *ctx), void *ctx);

/* Produces job's result into *result (worker thread; may run concurrently with other jobs). */
typedef int (*m2o_produce_fn)(void *ctx, int64_t job, void **result, m2o_err *err);
/* Consumes job's result (calling thread, in job order). Ownership of result passes to commit,
 * whether it succeeds or not. */
typedef int (*m2o_commit_fn)(void *ctx, int64_t job, void *result, m2o_err *err);
/* Releases a produced result that will never be committed because the run stopped early. */
typedef void (*m2o_discard_fn)(void *ctx, int64_t job, void *result);

/* threads <= 0 means m2o_cpu_count(); threads == 1 runs everything on the calling thread.
 * window <= 0 means 2 × threads. The first failure (a produce error, reported for the lowest
 * failing job, or a commit error) stops the run: no further job starts, in-flight jobs finish
 * and are discarded, and the error is returned. */
int m2o_ordered_run(int threads, int window, int64_t n_jobs, m2o_produce_fn produce,
                    m2o_commit_fn commit, m2o_discard_fn discard, void *ctx, m2o_err *err);

#endif
