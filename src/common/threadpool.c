#include "common/threadpool.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int m2o_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > 1024 ? 1024 : (int)n);
}

enum slot_state { SLOT_EMPTY, SLOT_RUNNING, SLOT_DONE, SLOT_FAILED };

typedef struct slot {
    enum slot_state state;
    int64_t job;
    void *result;
    m2o_err err;
} slot;

typedef struct pipeline {
    pthread_mutex_t mu;
    pthread_cond_t done_cv;  /* a slot finished (commit side waits) */
    pthread_cond_t space_cv; /* window space freed or stop (workers wait) */
    int64_t n_jobs, next_issue, next_commit;
    int window;
    int stop;
    slot *slots;
    m2o_produce_fn produce;
    void *ctx;
} pipeline;

static void *worker_main(void *arg)
{
    pipeline *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->next_issue < p->n_jobs &&
               p->next_issue >= p->next_commit + p->window)
            pthread_cond_wait(&p->space_cv, &p->mu);
        if (p->stop || p->next_issue >= p->n_jobs)
            break;
        int64_t job = p->next_issue++;
        slot *s = &p->slots[job % p->window];
        s->state = SLOT_RUNNING;
        s->job = job;
        s->result = NULL;
        pthread_mutex_unlock(&p->mu);

        void *result = NULL;
        int rc = p->produce(p->ctx, job, &result, &s->err);

        pthread_mutex_lock(&p->mu);
        s->result = result;
        s->state = rc ? SLOT_FAILED : SLOT_DONE;
        if (rc) {
            /* Jobs after this one are not started; earlier ones already were, so the commit
             * side reaches the lowest failing job and reports it. */
            p->stop = 1;
            pthread_cond_broadcast(&p->space_cv);
        }
        pthread_cond_broadcast(&p->done_cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static int run_inline(int64_t n_jobs, m2o_produce_fn produce, m2o_commit_fn commit,
                      m2o_discard_fn discard, void *ctx, m2o_err *err)
{
    for (int64_t j = 0; j < n_jobs; j++) {
        void *result = NULL;
        if (produce(ctx, j, &result, err)) {
            if (result && discard)
                discard(ctx, j, result);
            return -1;
        }
        if (commit(ctx, j, result, err))
            return -1;
    }
    return 0;
}

/* Commits jobs in order until all are done or something fails; returns 0 or -1. */
static int commit_loop(pipeline *p, m2o_commit_fn commit, m2o_err *err)
{
    for (int64_t j = 0; j < p->n_jobs; j++) {
        slot *s = &p->slots[j % p->window];
        pthread_mutex_lock(&p->mu);
        while (s->state != SLOT_DONE && s->state != SLOT_FAILED)
            pthread_cond_wait(&p->done_cv, &p->mu);
        pthread_mutex_unlock(&p->mu);
        if (s->state == SLOT_FAILED) {
            if (err)
                memcpy(err, &s->err, sizeof *err);
            return -1; /* its result, if any, is discarded with the others */
        }
        void *result = s->result;
        s->result = NULL;
        int rc = commit(p->ctx, j, result, err);
        pthread_mutex_lock(&p->mu);
        s->state = SLOT_EMPTY;
        p->next_commit = j + 1;
        pthread_cond_broadcast(&p->space_cv);
        pthread_mutex_unlock(&p->mu);
        if (rc)
            return -1;
    }
    return 0;
}

int m2o_ordered_run(int threads, int window, int64_t n_jobs, m2o_produce_fn produce,
                    m2o_commit_fn commit, m2o_discard_fn discard, void *ctx, m2o_err *err)
{
    if (n_jobs <= 0)
        return 0;
    if (threads <= 0)
        threads = m2o_cpu_count();
    if ((int64_t)threads > n_jobs)
        threads = (int)n_jobs;
    if (threads == 1)
        return run_inline(n_jobs, produce, commit, discard, ctx, err);
    if (window <= 0)
        window = 2 * threads;
    if (window < threads)
        window = threads;

    pipeline p = {.n_jobs = n_jobs, .window = window, .produce = produce, .ctx = ctx};
    p.slots = m2o_calloc((size_t)window, sizeof *p.slots, err);
    pthread_t *tids = m2o_calloc((size_t)threads, sizeof *tids, err);
    if (!p.slots || !tids) {
        free(p.slots);
        free(tids);
        return -1;
    }
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.done_cv, NULL);
    pthread_cond_init(&p.space_cv, NULL);

    int started = 0;
    while (started < threads && pthread_create(&tids[started], NULL, worker_main, &p) == 0)
        started++;
    int rc;
    if (started == 0) {
        rc = run_inline(n_jobs, produce, commit, discard, ctx, err);
    } else {
        rc = commit_loop(&p, commit, err);
        pthread_mutex_lock(&p.mu);
        p.stop = 1;
        pthread_cond_broadcast(&p.space_cv);
        pthread_mutex_unlock(&p.mu);
        for (int i = 0; i < started; i++)
            pthread_join(tids[i], NULL);
        for (int i = 0; i < window; i++)
            if (p.slots[i].result && discard)
                discard(ctx, p.slots[i].job, p.slots[i].result);
    }
    pthread_cond_destroy(&p.space_cv);
    pthread_cond_destroy(&p.done_cv);
    pthread_mutex_destroy(&p.mu);
    free(p.slots);
    free(tids);
    return rc;
}

typedef struct worker_call {
    void (*fn)(void *);
    void *ctx;
} worker_call;

static void *worker_trampoline(void *arg)
{
    const worker_call *w = arg;
    w->fn(w->ctx);
    return NULL;
}

void m2o_run_workers(int workers, void (*fn)(void *ctx), void *ctx)
{
    enum { MAX_HELPERS = 255 };
    pthread_t tids[MAX_HELPERS];
    worker_call call = {fn, ctx};
    int helpers = workers - 1 > MAX_HELPERS ? MAX_HELPERS : workers - 1, started = 0;
    while (started < helpers && pthread_create(&tids[started], NULL, worker_trampoline, &call) == 0)
        started++;
    fn(ctx);
    for (int i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
}
