/* common/threadpool: the ordered produce/commit pipeline under the graph writer. */
#include <stdatomic.h>
#include <stdbool.h>

#include "test.h"

#include "common/threadpool.h"

typedef struct run_log {
    int64_t fail_a, fail_b;    /* produce fails for these jobs (-1 = none) */
    int64_t commit_fail;       /* commit fails for this job */
    int64_t committed[4096];
    int n_committed;
    bool in_order;
    atomic_int produced, discarded;
} run_log;

static int produce(void *ctx, int64_t job, void **result, m2o_err *err)
{
    run_log *l = ctx;
    volatile int spin = 0; /* uneven work: finish out of order */
    for (int i = 0; i < (int)(job * 2654435761u % 17) * 500; i++)
        spin += i;
    if (job == l->fail_a || job == l->fail_b)
        return m2o_fail(err, "job %lld failed", (long long)job);
    int64_t *r = malloc(sizeof *r);
    *r = job * 3;
    *result = r;
    atomic_fetch_add(&l->produced, 1);
    return 0;
}

static int commit(void *ctx, int64_t job, void *result, m2o_err *err)
{
    run_log *l = ctx;
    int64_t v = *(int64_t *)result;
    free(result);
    if (v != job * 3 || (l->n_committed > 0 && l->committed[l->n_committed - 1] != job - 1))
        l->in_order = false;
    l->committed[l->n_committed++] = job;
    if (job == l->commit_fail)
        return m2o_fail(err, "commit of %lld failed", (long long)job);
    return 0;
}

static void discard(void *ctx, int64_t job, void *result)
{
    run_log *l = ctx;
    free(result);
    atomic_fetch_add(&l->discarded, 1);
}

static void init_log(run_log *l)
{
    memset(l, 0, sizeof *l);
    l->fail_a = l->fail_b = l->commit_fail = -1;
    l->in_order = true;
}

TEST(commits_every_job_in_order)
{
    int threads[] = {1, 2, 3, 8};
    for (int t = 0; t < 4; t++) {
        static run_log l;
        init_log(&l);
        m2o_err err;
        int rc = m2o_ordered_run(threads[t], 0, 3000, produce, commit, discard, &l, &err);
        CHECK_MSG(rc == 0, "%s", err.msg);
        CHECK_EQ(l.n_committed, 3000);
        CHECK(l.in_order);
        CHECK_EQ(l.committed[2999], 2999);
        CHECK_EQ(atomic_load(&l.discarded), 0);
    }
}

TEST(lowest_failing_job_is_reported)
{
    for (int t = 1; t <= 4; t++) {
        static run_log l;
        init_log(&l);
        l.fail_a = 40;
        l.fail_b = 37;
        m2o_err err;
        int rc = m2o_ordered_run(t, 6, 200, produce, commit, discard, &l, &err);
        CHECK_EQ(rc, -1);
        CHECK_STR_CONTAINS(err.msg, "job 37 failed");
        CHECK_EQ(l.n_committed, 37); /* 0..36 committed, nothing after */
        CHECK(l.in_order);
        /* every produced result was either committed or discarded */
        CHECK_EQ(atomic_load(&l.produced), l.n_committed + atomic_load(&l.discarded));
    }
}

TEST(commit_failure_stops_the_run)
{
    static run_log l;
    init_log(&l);
    l.commit_fail = 10;
    m2o_err err;
    int rc = m2o_ordered_run(4, 8, 1000, produce, commit, discard, &l, &err);
    CHECK_EQ(rc, -1);
    CHECK_STR_CONTAINS(err.msg, "commit of 10 failed");
    CHECK_EQ(l.n_committed, 11);
    CHECK(atomic_load(&l.produced) <= 11 + 8); /* the window bounds the wasted work */
    CHECK_EQ(atomic_load(&l.produced), l.n_committed + atomic_load(&l.discarded));
}

TEST(no_jobs_is_success)
{
    static run_log l;
    init_log(&l);
    m2o_err err;
    CHECK_EQ(m2o_ordered_run(4, 0, 0, produce, commit, discard, &l, &err), 0);
    CHECK_EQ(l.n_committed, 0);
    CHECK(m2o_cpu_count() >= 1);
}
