/* int8_budget: measure, select, apply (graph/int8_budget.h). */
#include "graph/int8_budget.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/threadpool.h"
#include "quant/quant.h"
#include "weights/reader.h"

/* Rows of float32 compared at a time: 256 KiB, as the writer's bands. */
#define I8B_BAND_ELEMS ((int64_t)64 << 10)

/* ---------- selection ---------- */

/* a before b: larger gain per byte, then the smaller name. Compared as gain_a * extra_b against
 * gain_b * extra_a, so no division rounds two equal ratios apart. */
static int better(const i8b_option *a, const i8b_option *b)
{
    long double l = (long double)a->gain * (long double)b->extra;
    long double r = (long double)b->gain * (long double)a->extra;
    if (l != r)
        return l > r ? -1 : 1;
    return strcmp(a->name, b->name);
}

/* insertion sort of indices: n is the number of MatMuls (hundreds), and it is stable */
static void order_options(const i8b_option *opt, int n, int *idx)
{
    for (int i = 0; i < n; i++) {
        int v = idx[i] = i, j = i;
        for (; j > 0 && better(&opt[v], &opt[idx[j - 1]]) < 0; j--)
            idx[j] = idx[j - 1];
        idx[j] = v;
    }
}

int i8b_select(const i8b_option *opt, int n, int64_t budget, bool *take, int64_t *spent)
{
    *spent = 0;
    for (int i = 0; i < n; i++)
        take[i] = false;
    int *idx = n > 0 ? malloc((size_t)n * sizeof *idx) : NULL;
    if (n > 0 && !idx)
        return -1;
    order_options(opt, n, idx);
    int taken = 0;
    for (int k = 0; k < n; k++) {
        const i8b_option *o = &opt[idx[k]];
        if (!(o->gain > 0))
            break; /* the rest remove no error */
        if (o->extra > budget - *spent)
            continue; /* does not fit: a cheaper one further down may (greedy knapsack) */
        take[idx[k]] = true;
        *spent += o->extra;
        taken++;
    }
    free(idx);
    return taken;
}

/* ---------- the hook ---------- */

bool i8b_requested(const quant_config *q)
{
    return q->int8_budget_percent > 0 || q->int8_budget_bytes > 0;
}

static bool placed_int8(const tensor_quant *t)
{
    return t->kind == TQ_INT && t->bits == 8 && strcmp(t->why, "default") != 0;
}

static int record(i8b_plan *p, const char *node, const linear_src *s, const tensor_quant *t, m2o_err *err)
{
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 64;
        i8b_matmul *mm = realloc(p->mm, (size_t)cap * sizeof *mm);
        if (!mm)
            return m2o_fail(err, "out of memory recording the MatMuls for int8_budget");
        p->mm = mm;
        p->cap = cap;
    }
    i8b_matmul *m = &p->mm[p->n++];
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", node);
    m->src = *s;
    m->tq = *t;
    m->candidate = t->budget_candidate;
    return 0;
}

int i8b_on_matmul(i8b_plan *p, const char *node, const linear_src *s, tensor_quant *t, m2o_err *err)
{
    if (p->collecting)
        return t->budget_candidate || placed_int8(t) ? record(p, node, s, t, err) : 0;
    if (!t->budget_candidate)
        return 0;
    for (int i = 0; i < p->n; i++)
        if (!strcmp(p->mm[i].name, node)) {
            if (p->mm[i].upgrade)
                t->bits = 8;
            t->budget_candidate = false;
            return 0;
        }
    return m2o_fail(err, "internal: int8_budget did not measure MatMul %s (the two builds differ)", node);
}

void i8b_plan_free(i8b_plan *p)
{
    free(p->mm);
    p->mm = NULL;
    p->n = p->cap = 0;
}

/* ---------- measuring one tensor ---------- */

static qb_params params_of(const wt_nbits_spec *s, int io)
{
    return (qb_params){.bits = s->bits, .block_size = s->block_size, .symmetric = !wt_nbits_has_zero_points(s),
                       .scale_type = io == ONNX_FLOAT16 ? QSCALE_F16 : io == ONNX_BFLOAT16 ? QSCALE_BF16 : QSCALE_F32};
}

/* Bytes a MatMulNBits weight of this tensor takes at `bits`: codes + scales + zero points. */
static int64_t nbits_bytes(const i8b_matmul *m, int bits, int io)
{
    tensor_quant t = m->tq;
    t.bits = bits;
    wt_nbits_spec s = gb_nbits_spec(&t);
    qb_params q = params_of(&s, io);
    int64_t N = linear_src_n(&m->src), K = linear_src_k(&m->src);
    return (int64_t)(qb_codes_bytes(N, K, &q) + qb_scales_count(N, K, &q) * qscale_size(q.scale_type) +
                     qb_zero_points_bytes(N, K, &q));
}

/* Rows [r0, r0 + nr) of the stacked source as float32. */
static int read_rows(const linear_src *s, int64_t r0, int64_t nr, float *out, m2o_err *err)
{
    int64_t base = 0, K = linear_src_k(s);
    for (int i = 0; i < s->n_parts && nr > 0; i++) {
        int64_t n_i = s->w[i]->shape[0];
        if (r0 < base + n_i) {
            int64_t lr = r0 - base, take = n_i - lr < nr ? n_i - lr : nr;
            if (tensor_read_f32(s->w[i], lr * K, take * K, out, err))
                return -1;
            wt_release_elems(s->w[i], lr * K, take * K); /* the pre-pass keeps no mapped pages */
            out += take * K;
            r0 += take;
            nr -= take;
        }
        base += n_i;
    }
    return 0;
}

typedef struct chunk_bufs {
    void *outs[3];
    float *band;
    int64_t band_rows;
} chunk_bufs;

/* Adds the error of chunk `c`'s rows, decoded from the bytes the producer made for them. */
static int chunk_error(const i8b_matmul *m, const qb_params *q, int64_t r0, int64_t rows,
                       const chunk_bufs *b, qb_error *acc, m2o_err *err)
{
    int64_t K = linear_src_k(&m->src);
    size_t ss = qscale_size(q->scale_type), zrow = qb_zero_points_bytes(1, K, q);
    for (int64_t i = 0; i < rows; i += b->band_rows) {
        int64_t n = rows - i < b->band_rows ? rows - i : b->band_rows;
        qb_error e;
        if (read_rows(&m->src, r0 + i, n, b->band, err) ||
            qb_quant_error(b->band, (const uint8_t *)b->outs[0] + qb_codes_bytes(i, K, q),
                           (const uint8_t *)b->outs[1] + qb_scales_count(i, K, q) * ss,
                           b->outs[2] ? (const uint8_t *)b->outs[2] + (size_t)i * zrow : NULL, n, K, q, &e, err))
            return -1;
        acc->sse += e.sse;
        acc->sum_sq += e.sum_sq;
    }
    return 0;
}

static void free_bufs(chunk_bufs *b)
{
    for (int i = 0; i < 3; i++)
        free(b->outs[i]);
    free(b->band);
}

/* The squared error of m written at `bits`: the writer's own producer makes the bytes, chunk by
 * chunk (one chunk's bytes in memory at a time), and each chunk is decoded against the source. */
static int measure(const i8b_matmul *m, int bits, const wt_opts *wo, qb_error *acc, m2o_err *err)
{
    tensor_quant t = m->tq;
    t.bits = bits;
    wt_nbits_spec spec = gb_nbits_spec(&t);
    qb_params q = params_of(&spec, wo->io);
    wt_producer p;
    if (wt_nbits(&m->src, &spec, wo, &p, err))
        return -1;
    int64_t N = linear_src_n(&m->src), K = linear_src_k(&m->src), rows = N / p.n_chunks;
    chunk_bufs b = {{NULL}, NULL, I8B_BAND_ELEMS / K < 1 ? 1 : I8B_BAND_ELEMS / K};
    int rc = 0;
    for (int i = 0; i < 3 && !rc; i++)
        if (p.chunk_bytes[i] && !(b.outs[i] = malloc(p.chunk_bytes[i])))
            rc = m2o_fail(err, "out of memory measuring %s for int8_budget", m->name);
    if (!rc && !(b.band = malloc((size_t)(b.band_rows * K) * sizeof(float))))
        rc = m2o_fail(err, "out of memory measuring %s for int8_budget", m->name);
    memset(acc, 0, sizeof *acc);
    for (int64_t c = 0; c < p.n_chunks && !rc; c++) {
        rc = p.group(p.ctx, c, b.outs, err);
        if (!rc)
            rc = chunk_error(m, &q, c * rows, rows, &b, acc, err);
    }
    free_bufs(&b);
    p.free_ctx(p.ctx);
    return rc;
}

/* ---------- measuring all candidates on the project's pool ---------- */

typedef struct measure_pool {
    i8b_plan *p;
    const wt_opts *wo;
    atomic_int next;
    atomic_bool stop;
    pthread_mutex_t mu;
    int fail_at; /* lowest failing MatMul, so the error named is the same for any thread count */
    m2o_err err;
} measure_pool;

static int measure_one(i8b_matmul *m, const wt_opts *wo, m2o_err *err)
{
    qb_error e4, e8;
    if (measure(m, 4, wo, &e4, err) || measure(m, 8, wo, &e8, err))
        return -1;
    m->sse4 = e4.sse;
    m->sse8 = e8.sse;
    m->sum_sq = e4.sum_sq;
    return 0;
}

static void measure_worker(void *vctx)
{
    measure_pool *w = vctx;
    for (;;) {
        int i = atomic_fetch_add(&w->next, 1);
        if (i >= w->p->n || atomic_load(&w->stop))
            return;
        if (!w->p->mm[i].candidate)
            continue;
        m2o_err e = {{0}};
        if (measure_one(&w->p->mm[i], w->wo, &e)) {
            pthread_mutex_lock(&w->mu);
            if (i < w->fail_at) {
                w->fail_at = i;
                w->err = e;
            }
            pthread_mutex_unlock(&w->mu);
            atomic_store(&w->stop, true);
        }
    }
}

static int measure_all(i8b_plan *p, const wt_opts *wo, int threads, m2o_err *err)
{
    measure_pool w = {.p = p, .wo = wo, .fail_at = p->n};
    atomic_init(&w.next, 0);
    atomic_init(&w.stop, false);
    pthread_mutex_init(&w.mu, NULL);
    int workers = threads > 0 ? threads : m2o_cpu_count();
    m2o_run_workers(workers < p->n ? workers : p->n, measure_worker, &w);
    pthread_mutex_destroy(&w.mu);
    if (w.fail_at < p->n) {
        if (err)
            *err = w.err;
        return m2o_wrap(err, "int8_budget: measuring %s", p->mm[w.fail_at].name);
    }
    return 0;
}

/* ---------- the decision ---------- */

/* Bytes, the budget and what the placed int8 MatMuls already spent of it. */
static void fill_costs(i8b_plan *p, const quant_config *q, int io)
{
    i8b_report *r = &p->report;
    int64_t base = 0;
    for (int i = 0; i < p->n; i++) {
        i8b_matmul *m = &p->mm[i];
        m->bytes4 = nbits_bytes(m, 4, io);
        m->bytes8 = nbits_bytes(m, 8, io);
        if (m->candidate) {
            r->n_candidates++;
            base += m->bytes4;
        } else {
            r->n_placed8++;
            r->placed8_bytes += m->bytes8 - m->bytes4;
        }
    }
    r->budget = q->int8_budget_bytes > 0 ? q->int8_budget_bytes
                                         : (int64_t)((long double)base * q->int8_budget_percent / 100.0L);
}

static int select_upgrades(i8b_plan *p, m2o_err *err)
{
    i8b_report *r = &p->report;
    i8b_option *opt = calloc((size_t)(p->n ? p->n : 1), sizeof *opt);
    bool *take = calloc((size_t)(p->n ? p->n : 1), sizeof *take);
    if (!opt || !take) {
        free(opt);
        free(take);
        return m2o_fail(err, "out of memory choosing the int8_budget upgrades");
    }
    int n = 0;
    for (int i = 0; i < p->n; i++)
        if (p->mm[i].candidate)
            opt[n++] = (i8b_option){p->mm[i].name, p->mm[i].sse4 - p->mm[i].sse8, p->mm[i].bytes8 - p->mm[i].bytes4};
    int64_t left = r->budget - r->placed8_bytes;
    r->n_upgraded = i8b_select(opt, n, left > 0 ? left : 0, take, &r->spent);
    if (r->n_upgraded < 0) {
        free(opt);
        free(take);
        return m2o_fail(err, "out of memory choosing the int8_budget upgrades");
    }
    const i8b_option *next = NULL; /* the best left out is the one that did not fit */
    for (int k = 0; k < n; k++)
        if (!take[k] && opt[k].gain > 0 && (!next || better(&opt[k], next) < 0))
            next = &opt[k];
    if (next) {
        snprintf(r->next, sizeof r->next, "%s", next->name);
        r->next_extra = next->extra;
    }
    for (int i = 0, k = 0; i < p->n; i++) {
        i8b_matmul *m = &p->mm[i];
        if (!m->candidate)
            continue;
        m->upgrade = take[k++];
        r->sse_before += m->sse4;
        r->sse_after += m->upgrade ? m->sse8 : m->sse4;
        r->sum_sq += m->sum_sq;
    }
    free(opt);
    free(take);
    return 0;
}

int i8b_decide(i8b_plan *p, const quant_config *q, const wt_opts *wo, int threads, m2o_err *err)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    memset(&p->report, 0, sizeof p->report);
    p->report.active = true;
    if (measure_all(p, wo, threads, err))
        return -1;
    fill_costs(p, q, wo->io);
    if (select_upgrades(p, err))
        return -1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    p->report.seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    return 0;
}
