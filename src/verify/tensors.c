/* Weight checks: every expert tensor of a QMoE / MoE node and every MatMulNBits (and named float
 * MatMul) weight planned by weight_plan.c is decoded through the layout its node declares and
 * compared, element by element, with the matrix rebuilt from the checkpoint (source.c).
 *
 * Streaming: one job per expert (or per row chunk of a linear weight) on the ordered thread
 * pool, so memory holds only the jobs in flight; each job drops the checkpoint and model pages
 * it read. A failing job is diagnosed by weight_diagnose.c. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/threadpool.h"
#include "onnx/graph.h"
#include "quant/quant.h"
#include "verify/weight_plan.h"

/* Scratch of all jobs in flight together (gpt-oss-120b fc1: 166 MB per expert job). */
#define VERIFY_INFLIGHT_BYTES ((int64_t)2 << 30)

typedef struct vrun {
    vctx *c;
    vplans *ps;
} vrun;

static size_t plan_of_job(const vplans *ps, int64_t job)
{
    size_t lo = 0, hi = ps->n;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (ps->p[mid].first_job <= job)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static void scratch_free(vscratch *s)
{
    free(s->exp);
    free(s->alt);
    free(s->codes);
    free(s->alt_codes);
    free(s->scales_f32);
    free(s->signs);
    free(s->gather);
}

static int scratch_alloc(vscratch *s, int64_t nr, int64_t K, int64_t n_blocks, bool gather,
                         m2o_err *err)
{
    memset(s, 0, sizeof *s);
    if (gather && !(s->gather = m2o_malloc((size_t)(nr * K) * sizeof(float), err)))
        return -1;
    size_t nk = (size_t)(nr * K);
    s->exp = m2o_malloc(nk * sizeof(float), err);
    s->alt = s->exp ? m2o_malloc(nk * sizeof(float), err) : NULL;
    s->codes = s->alt ? m2o_malloc(nk, err) : NULL; /* up to 8 bits per element */
    s->alt_codes = s->codes ? m2o_malloc(nk, err) : NULL;
    s->scales_f32 = s->alt_codes ? m2o_malloc((size_t)n_blocks * sizeof(float) + 4, err) : NULL;
    s->signs = s->scales_f32 ? m2o_malloc((size_t)n_blocks + 1, err) : NULL;
    if (!s->signs) {
        scratch_free(s);
        return -1;
    }
    return 0;
}

/* Builds the canonical encoding of rows [r0, r0+nr) of expert e. */
static int unit_encoding(const vplan *p, int64_t e, int64_t r0, int64_t nr, vscratch *s,
                         venc *v, m2o_err *err)
{
    int64_t K = p->K, N = p->N;
    const uint8_t *w = p->w + (size_t)e * p->w_stride;
    memset(v, 0, sizeof *v);
    switch (p->layout) {
    case VL_FLOAT:
        *v = (venc){.kind = VENC_FLOAT, .elem_type = p->elem_type,
                    .w = w + (size_t)(r0 * K) * onnx_dtype_size(p->elem_type)};
        return 0;
    case VL_FLOAT_KN: {
        size_t es = onnx_dtype_size(p->elem_type);
        uint8_t *buf = s->gather; /* the weight's columns r0.. gathered as rows */
        for (int64_t n = 0; n < nr; n++)
            for (int64_t k = 0; k < K; k++)
                memcpy(buf + (size_t)(n * K + k) * es, w + (size_t)(k * N + r0 + n) * es, es);
        *v = (venc){.kind = VENC_FLOAT, .elem_type = p->elem_type, .w = buf};
        return 0;
    }
    case VL_INT_RAW:
    case VL_INT_SM80: {
        int64_t nb = K / p->block_size;
        size_t ssz = onnx_dtype_size(p->elem_type);
        const uint8_t *codes = w + (size_t)(r0 * K * p->bits / 8);
        if (p->layout == VL_INT_SM80) {
            if (cutlass_sm80_unpack(w, N, K, p->bits, s->codes, err))
                return -1;
            codes = s->codes;
        }
        *v = (venc){.kind = VENC_INT, .elem_type = p->elem_type, .codes = codes,
                    .scales = p->scales + (size_t)e * p->s_stride + (size_t)(r0 * nb) * ssz,
                    .bits = p->bits, .block_size = p->block_size,
                    .any_method = !p->experts};
        if (p->zp) {
            int64_t zrow = (int64_t)(p->zp_stride / (size_t)N);
            v->zero_points = p->zp + (size_t)e * p->zp_stride + (size_t)(r0 * zrow);
        }
        return 0;
    }
    case VL_FP4_CUDA:
        if (fp4_cuda_unpack(w, N, K, s->codes, err))
            return -1;
        *v = (venc){.kind = VENC_MXFP4, .codes = s->codes,
                    .scales = p->scales + (size_t)e * p->s_stride};
        return 0;
    }
    return m2o_fail(err, "verify: unknown layout");
}


/* Which unit a job checks: an expert whole (its N rows), or a band of a linear weight's rows. */
static void job_unit(const vplan *p, int64_t unit, int64_t *e, int64_t *r0, int64_t *nr)
{
    *e = p->experts ? unit : 0;
    *r0 = p->experts ? 0 : unit * p->rows_per_job;
    *nr = p->experts ? p->N : (p->N - *r0 < p->rows_per_job ? p->N - *r0 : p->rows_per_job);
}

/* MXFP4 passthrough: the written codes and scales must be the checkpoint's bytes. */
static void count_passthrough_diffs(const vplan *p, int64_t e, const venc *v, vjob_res *res)
{
    const uint8_t *ck_codes, *ck_scales;
    vexperts_mxfp4(&p->src, e, &ck_codes, &ck_scales);
    size_t nc = (size_t)(p->N * p->K / 2), ns = (size_t)(p->N * p->K / 32);
    const uint8_t *sc = p->scales + (size_t)e * p->s_stride;
    for (size_t i = 0; i < nc; i++)
        res->diff_codes += v->codes[i] != ck_codes[i];
    for (size_t i = 0; i < ns; i++)
        res->diff_scales += sc[i] != ck_scales[i];
}

/* A failing unit: values out of bounds are diagnosed; in-bound values whose passthrough bytes
 * differ are named as such. */
static void name_failure(const vplan *p, int64_t e, int64_t r0, int64_t nr, vscratch *s,
                         const venc *v, vjob_res *res)
{
    if (res->st.n_over > 0) {
        vdiagnose(p, e, r0, nr, s, v, &res->st, res);
        return;
    }
    res->has_diag = true;
    res->diag = VF_PASSTHROUGH;
    snprintf(res->msg, sizeof res->msg,
             "MXFP4 passthrough differs from the checkpoint in expert %lld: %lld code "
             "bytes and %lld scale bytes differ (the values stay within the MXFP4 "
             "bound, but the codes must pass through unchanged)",
             (long long)e, (long long)res->diff_codes, (long long)res->diff_scales);
}

/* Drops the checkpoint and model pages this unit read, so memory holds only the jobs in flight
 * (a float MatMul band reads scattered columns: its pages are left to the kernel). */
static void release_unit_pages(const vplan *p, int64_t e, int64_t r0, int64_t nr)
{
    if (p->experts)
        vexperts_release(&p->src, e);
    if (p->layout != VL_FLOAT_KN) {
        size_t wrow = p->experts ? p->w_stride : p->w_stride / (size_t)p->N;
        vrelease_pages(p->w + (size_t)e * p->w_stride + (size_t)r0 * (p->experts ? 0 : wrow),
                      p->experts ? p->w_stride : (size_t)nr * wrow);
    }
}

static int produce(void *vctx_, int64_t job, void **result, m2o_err *err)
{
    vrun *run = vctx_;
    size_t pi = plan_of_job(run->ps, job);
    const vplan *p = &run->ps->p[pi];
    int64_t e, r0, nr, K = p->K;
    job_unit(p, job - p->first_job, &e, &r0, &nr);
    int64_t n_blocks = nr * (K / (p->layout == VL_FP4_CUDA ? 32 : p->block_size > 0 ? p->block_size : K));

    vjob_res *res = m2o_calloc(1, sizeof *res, err);
    vscratch s;
    if (!res || scratch_alloc(&s, nr, K, n_blocks, p->layout == VL_FLOAT_KN, err)) {
        free(res);
        return -1;
    }
    res->plan = pi;
    vstats_init(&res->st);
    venc v;
    int rc = p->experts ? vexperts_read(&p->src, e, s.exp, s.alt, err)
                        : vlinear_read_rows(&p->lin, r0, nr, s.exp, err);
    if (!rc)
        rc = unit_encoding(p, e, r0, nr, &s, &v, err);
    if (!rc)
        rc = venc_compare(s.exp, nr, K, &v, &res->st, err);
    if (!rc && p->passthrough)
        count_passthrough_diffs(p, e, &v, res);
    if (!rc && (res->st.n_over > 0 || res->diff_codes || res->diff_scales))
        name_failure(p, e, r0, nr, &s, &v, res);
    release_unit_pages(p, e, r0, nr);
    scratch_free(&s);
    if (rc) {
        free(res);
        return -1;
    }
    *result = res;
    return 0;
}

static int commit(void *vctx_, int64_t job, void *result, m2o_err *err)
{
    (void)err;
    vrun *run = vctx_;
    vjob_res *res = result;
    vplan *p = &run->ps->p[res->plan];
    vstats_merge(&p->st, &res->st);
    p->diff_code_bytes += res->diff_codes;
    p->diff_scale_bytes += res->diff_scales;
    if ((res->diff_codes || res->diff_scales) && p->first_diff_expert < 0)
        p->first_diff_expert = job - p->first_job;
    if (res->has_diag && !p->diagnosed) {
        p->diagnosed = true;
        p->diag = res->diag;
        snprintf(p->diag_msg, sizeof p->diag_msg, "%s", res->msg);
    }
    free(res);
    return 0;
}

static void discard(void *vctx_, int64_t job, void *result)
{
    (void)vctx_;
    (void)job;
    free(result);
}

static void finish_plan(vctx *c, const vplan *p)
{
    vtensor *t = &c->r->tensors[p->row];
    t->elements = p->st.n;
    t->rel_rms = vstats_rel_rms(&p->st);
    t->rel_rms_bound = vstats_rel_rms_bound(&p->st);
    t->max_abs = p->st.max_abs;
    t->max_ratio = p->st.max_ratio;
    vtensor_set_qfmt(t, p);
    t->bit_exact = p->passthrough && p->diff_code_bytes == 0 && p->diff_scale_bytes == 0 &&
                   p->st.n_over == 0;
    t->pass = !p->diagnosed && p->st.n_over == 0 && (!p->passthrough || t->bit_exact);
    if (t->bit_exact)
        c->r->n_bit_exact++;
    if (p->diagnosed)
        verify_add_fault(c->r, p->diag, t->name, "%s: %s", t->name, p->diag_msg);
    if (p->st.n_nonfinite)
        verify_add_note(c->r, "%s: %lld non-finite checkpoint elements were not compared",
                        t->name, (long long)p->st.n_nonfinite);
}

int vcheck_tensors(vctx *c, m2o_err *err)
{
    vplans ps = {0};
    int rc = vplan_weights(c, &ps, err);
    int64_t jobs = 0;
    for (size_t i = 0; i < ps.n; i++) {
        ps.p[i].first_job = jobs;
        jobs += ps.p[i].n_jobs;
    }
    if (!rc && jobs > 0) {
        vrun run = {c, &ps};
        int threads = c->o->threads > 0 ? c->o->threads : m2o_cpu_count();
        /* each job in flight holds ~10 bytes per element of its unit (two float matrices, two
         * code buffers): keep the jobs in flight under VERIFY_INFLIGHT_BYTES */
        int64_t unit = 1;
        for (size_t i = 0; i < ps.n; i++)
            if (ps.p[i].rows_per_job * ps.p[i].K > unit)
                unit = ps.p[i].rows_per_job * ps.p[i].K;
        int64_t fit = VERIFY_INFLIGHT_BYTES / (unit * 10);
        int window = fit < 1 ? 1 : fit > 2 * threads ? 2 * threads : (int)fit;
        if (threads > window)
            threads = window;
        rc = m2o_ordered_run(threads, window, jobs, produce, commit, discard, &run, err);
    }
    for (size_t i = 0; i < ps.n && !rc; i++)
        finish_plan(c, &ps.p[i]);
    free(ps.p);
    return rc;
}
