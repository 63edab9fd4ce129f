/* Which weights verify decodes, through which layout, against which checkpoint source: one
 * plan per QMoE/MoE expert tensor, MatMulNBits weight and named float MatMul weight, with the
 * shape, dtype and attribute checks that must hold before any byte is decoded. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx/graph.h"
#include "onnx/ort_rules.h"
#include "quant/quant.h"
#include "verify/names.h"
#include "verify/weight_plan.h"

static const char *type_name(int t)
{
    return t == ONNX_FLOAT16 ? "fp16" : t == ONNX_BFLOAT16 ? "bf16" : t == ONNX_FLOAT ? "fp32" : "?";
}

static bool is_float_type(int t)
{
    return t == ONNX_FLOAT || t == ONNX_FLOAT16 || t == ONNX_BFLOAT16;
}

/* ------------------------------------------------------------------ planning */

static vplan *plans_add(vplans *ps, m2o_err *err)
{
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? 2 * ps->cap : 32;
        vplan *np = realloc(ps->p, cap * sizeof *np);
        if (!np) {
            m2o_fail(err, "out of memory planning verify");
            return NULL;
        }
        ps->p = np;
        ps->cap = cap;
    }
    vplan *p = &ps->p[ps->n++];
    memset(p, 0, sizeof *p);
    vstats_init(&p->st);
    p->first_diff_expert = -1;
    return p;
}

static void dims_str(const onnx_tensor *t, char *buf, size_t len)
{
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < onnx_tensor_ndim(t) && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? ", " : "",
                              (long long)onnx_tensor_dims(t)[i]);
    if (o < len)
        snprintf(buf + o, len - o, "]");
}

static bool dims_are(const onnx_tensor *t, int ndim, const int64_t *d)
{
    if (onnx_tensor_ndim(t) != ndim)
        return false;
    for (int i = 0; i < ndim; i++)
        if (onnx_tensor_dims(t)[i] != d[i])
            return false;
    return true;
}


/* The initializer feeding input i of node n; records a fault when absent. */
static const onnx_tensor *input_init(vctx *c, const onnx_node *n, size_t i, const char *what,
                                     bool required)
{
    const char *name = i < onnx_node_input_count(n) ? onnx_node_input(n, i) : "";
    if (!name[0]) {
        if (required)
            verify_add_fault(c->r, VF_MISSING, onnx_node_name(n), "node %s has no %s (input %zu)",
                             onnx_node_name(n), what, i);
        return NULL;
    }
    const onnx_tensor *t = onnx_model_find_initializer(c->m, name);
    vmark_initializer(c, t);
    if (!t && required)
        verify_add_fault(c->r, VF_MISSING, name,
                         "%s %s of node %s is not an initializer: nothing to verify", what, name,
                         onnx_node_name(n));
    return t;
}

static int tensor_bytes(vctx *c, const onnx_tensor *t, const uint8_t **p, size_t *len,
                        m2o_err *err)
{
    const void *d;
    if (onnx_model_tensor_data(c->m, t, &d, len, err))
        return -1;
    *p = d;
    return 0;
}

static void shape_fault(vctx *c, const onnx_tensor *t, const char *role, const char *want,
                        bool swapped)
{
    char got[96];
    dims_str(t, got, sizeof got);
    if (swapped)
        verify_add_fault(c->r, VF_NK_SWAPPED, onnx_tensor_name(t),
                         "%s %s is %s %s: N and K are swapped (expected %s)", role,
                         onnx_tensor_name(t), onnx_dtype_name(onnx_tensor_elem_type(t)), got,
                         want);
    else
        verify_add_fault(c->r, VF_SHAPE, onnx_tensor_name(t), "%s %s is %s %s, expected %s",
                         role, onnx_tensor_name(t), onnx_dtype_name(onnx_tensor_elem_type(t)),
                         got, want);
}

static size_t new_row(vctx *c, const char *tensor, const char *node, const char *source,
                      const char *format)
{
    vtensor t;
    memset(&t, 0, sizeof t);
    snprintf(t.name, sizeof t.name, "%s", tensor);
    snprintf(t.node, sizeof t.node, "%s", node);
    snprintf(t.source, sizeof t.source, "%s", source);
    snprintf(t.format, sizeof t.format, "%s", format);
    return verify_add_tensor(c->r, &t);
}

static bool float_dtype_ok(vctx *c, const onnx_tensor *t, const char *role)
{
    if (is_float_type(onnx_tensor_elem_type(t)))
        return true;
    verify_add_fault(c->r, VF_SHAPE, onnx_tensor_name(t), "%s %s is %s, expected a float type",
                     role, onnx_tensor_name(t), onnx_dtype_name(onnx_tensor_elem_type(t)));
    return false;
}

/* Scales [E, N, K/bs] (or [N * K/bs], [N, K/bs] for MatMulNBits: E = 0). */
static bool scales_ok(vctx *c, const onnx_tensor *s, int64_t E, int64_t N, int64_t nb)
{
    if (!float_dtype_ok(c, s, "scales"))
        return false;
    char want[96];
    int64_t d3[3] = {E, N, nb}, d2[2] = {N, nb}, d1[1] = {N * nb};
    bool ok = E ? dims_are(s, 3, d3) : (dims_are(s, 1, d1) || dims_are(s, 2, d2));
    if (E && !ok && nb == 1) { /* per-row scales may drop the last axis */
        int64_t d2e[2] = {E, N};
        ok = dims_are(s, 2, d2e);
    }
    if (ok)
        return true;
    if (E)
        snprintf(want, sizeof want, "[%lld, %lld, %lld]", (long long)E, (long long)N,
                 (long long)nb);
    else
        snprintf(want, sizeof want, "[%lld] or [%lld, %lld]", (long long)(N * nb), (long long)N,
                 (long long)nb);
    int64_t sw[3] = {E, nb, N};
    shape_fault(c, s, "scales", want, E && nb != N && dims_are(s, 3, sw));
    return false;
}

static void source_text(const vplan *p, char *buf, size_t len)
{
    if (p->experts) {
        snprintf(buf, len, "%s", p->src.what);
        return;
    }
    if (p->lin.n_parts > 1)
        snprintf(buf, len, "%s +%d", p->lin.w[0]->name, p->lin.n_parts - 1);
    else
        snprintf(buf, len, "%s", p->lin.w[0]->name);
}

static void finish_plan_row(vctx *c, vplan *p, const char *tensor, const char *node,
                            const char *format)
{
    char src[256];
    source_text(p, src, sizeof src);
    p->row = new_row(c, tensor, node, src, format);
    c->r->tensors[p->row].bit_exact_required = p->passthrough;
}

/* An expert weight's encoding as its QMoE node declares it (MoE: float, the defaults). */
typedef struct expert_enc {
    int64_t bits, bs, prepacked;
    bool fp4;
} expert_enc;

/* Reads the QMoE attributes; false when they cannot describe a K-column weight, which the
 * attribute check (invariants.c) reports, so no plan is made. */
static bool expert_encoding(const onnx_node *n, bool qmoe, int64_t K, expert_enc *q)
{
    const vqmoe_attrs a = vqmoe_attrs_read(qmoe ? n : NULL);
    *q = (expert_enc){.bits = a.bits, .bs = a.block_size, .prepacked = a.prepacked};
    q->fp4 = qmoe && !strcmp(a.quant_type, "fp4");
    if (q->fp4) {
        q->bits = 4;
        q->bs = 32;
    }
    if (q->bs <= 0)
        q->bs = K; /* block_size 0: one scale per row */
    if (qmoe && !q->fp4 && (q->bits != 4 && q->bits != 8))
        return false;
    if (qmoe && (K % q->bs || q->bs <= 0))
        return false;
    return true;
}

/* One expert weight being checked: the checks below share its node, tensors, encoding and the
 * report row's format text they build. */
typedef struct expert_check {
    vctx *c;
    vplan *p;
    const onnx_node *n;
    const onnx_tensor *W, *S;
    const char *role;
    expert_enc q;
    char fmt[64];
} expert_check;

static void expert_plan_init(vplan *p, const vexperts *src, bool fc1, const expert_enc *q)
{
    p->experts = true;
    p->fc1 = fc1;
    p->src = *src;
    p->E = src->E;
    p->N = src->N;
    p->K = src->K;
    p->bits = (int)q->bits;
    p->block_size = (int)q->bs;
    p->prepacked_attr = (int)q->prepacked;
}

/* MoE (float) experts: [E, N, K] of a float type. */
static bool check_float_experts(expert_check *x)
{
    vplan *p = x->p;
    int64_t E = p->E, N = p->N, K = p->K;
    int wt = onnx_tensor_elem_type(x->W);
    int64_t d[3] = {E, N, K}, sw[3] = {E, K, N};
    p->layout = VL_FLOAT;
    p->elem_type = wt;
    bool ok = float_dtype_ok(x->c, x->W, x->role);
    if (ok && !dims_are(x->W, 3, d)) {
        char want[96];
        snprintf(want, sizeof want, "[%lld, %lld, %lld]", (long long)E, (long long)N,
                 (long long)K);
        shape_fault(x->c, x->W, x->role, want, N != K && dims_are(x->W, 3, sw));
        ok = false;
    }
    snprintf(x->fmt, sizeof x->fmt, "%s (%s)", type_name(wt), onnx_node_op(x->n));
    p->w_stride = (size_t)(N * K) * onnx_dtype_size(wt);
    return ok;
}

/* fp4 experts (FORMATS §6, §7): uint8 codes [E, K, N/2] and E8M0 scales [E, N, K/32]; other
 * declared shapes of the right size and uint8-typed scales are noted, not faults. */
static bool check_fp4_experts(expert_check *x)
{
    vctx *c = x->c;
    vplan *p = x->p;
    int64_t E = p->E, N = p->N, K = p->K;
    char want[96];
    bool ok = true;
    p->layout = VL_FP4_CUDA;
    p->passthrough = p->src.kind == VSRC_MXFP4;
    int64_t d[3] = {E, K, N / 2}, ds[3] = {E, N, K / 32};
    if (onnx_tensor_elem_type(x->W) != ONNX_UINT8 || vnumel(x->W) != E * N * K / 2) {
        snprintf(want, sizeof want, "uint8 [%lld, %lld, %lld]", (long long)E, (long long)K,
                 (long long)(N / 2));
        shape_fault(c, x->W, x->role, want, false);
        ok = false;
    } else if (!dims_are(x->W, 3, d)) {
        verify_add_note(c->r, "%s declared %s-shaped, the fp4 CUDA layout is [E, K, N/2]",
                        onnx_tensor_name(x->W), "another");
    }
    int st = onnx_tensor_elem_type(x->S);
    if ((st != ONNX_FLOAT8E8M0 && st != ONNX_UINT8) || !dims_are(x->S, 3, ds)) {
        snprintf(want, sizeof want, "float8e8m0 [%lld, %lld, %lld]", (long long)E, (long long)N,
                 (long long)(K / 32));
        shape_fault(c, x->S, "fp4 scales", want, false);
        ok = false;
    } else if (st == ONNX_UINT8) {
        verify_add_note(c->r, "%s: E8M0 scales typed uint8, ONNX Runtime expects "
                              "FLOAT8E8M0", onnx_tensor_name(x->S));
    }
    p->elem_type = st;
    snprintf(x->fmt, sizeof x->fmt, "mxfp4%s", p->passthrough ? " passthrough" : "");
    p->w_stride = (size_t)(N * K / 2);
    p->s_stride = (size_t)(N * K / 32);
    return ok;
}

/* Optional asymmetric zero points of int experts: uint8, one row of packed block values per
 * expert row. Their bytes are mapped even when another check failed (the plan is then
 * dropped, so nothing reads them). */
static int check_expert_zero_points(expert_check *x, size_t zi, bool *ok, m2o_err *err)
{
    vplan *p = x->p;
    const onnx_tensor *Z = input_init(x->c, x->n, zi, "zero points", false);
    if (!Z)
        return 0;
    int64_t E = p->E, N = p->N, nb = p->K / x->q.bs;
    int64_t zrow = x->q.bits == 4 ? (nb + 1) / 2 : nb;
    if (onnx_tensor_elem_type(Z) != ONNX_UINT8 || vnumel(Z) != E * N * zrow) {
        char want[96];
        snprintf(want, sizeof want, "uint8 with %lld elements", (long long)(E * N * zrow));
        shape_fault(x->c, Z, "zero points", want, false);
        *ok = false;
    } else if (tensor_bytes(x->c, Z, &p->zp, &p->zp_len, err)) {
        return -1;
    }
    p->zp_stride = (size_t)(N * zrow);
    strncat(x->fmt, " asym", sizeof x->fmt - strlen(x->fmt) - 1);
    return 0;
}

/* int4/int8 experts (FORMATS §4, §5): uint8 codes [E, N, K/pack], or [E, K, N/pack] when the
 * CUDA node reads the CUTLASS SM80 prepacked layout; scales [E, N, K/bs]. */
static int check_int_experts(expert_check *x, size_t zi, bool *ok, m2o_err *err)
{
    vctx *c = x->c;
    vplan *p = x->p;
    int64_t E = p->E, N = p->N, K = p->K, bits = x->q.bits, bs = x->q.bs;
    int64_t pack = 8 / bits;
    int wt = onnx_tensor_elem_type(x->W);
    bool sm80 = c->cuda && x->q.prepacked != 0;
    p->layout = sm80 ? VL_INT_SM80 : VL_INT_RAW;
    int64_t d[3] = {E, N, K / pack}, dsm[3] = {E, K, N / pack}, sw[3] = {E, K, N / pack};
    bool dims_ok = wt == ONNX_UINT8 && (dims_are(x->W, 3, d) || (sm80 && dims_are(x->W, 3, dsm)));
    if (!dims_ok) {
        char want[96];
        snprintf(want, sizeof want, "uint8 [%lld, %lld, %lld]", (long long)E,
                 (long long)(sm80 ? K : N), (long long)(sm80 ? N / pack : K / pack));
        shape_fault(c, x->W, x->role, want,
                    !sm80 && wt == ONNX_UINT8 && N != K && dims_are(x->W, 3, sw));
        *ok = false;
    }
    if (!scales_ok(c, x->S, E, N, K / bs))
        *ok = false;
    p->elem_type = onnx_tensor_elem_type(x->S);
    snprintf(x->fmt, sizeof x->fmt, "int%lld %s bs%lld", (long long)bits, sm80 ? "sm80" : "raw",
             (long long)bs);
    p->w_stride = (size_t)(N * K / pack);
    p->s_stride = (size_t)(N * (K / bs)) * onnx_dtype_size(p->elem_type);
    return check_expert_zero_points(x, zi, ok, err);
}

/* QMoE experts: the scales must be there, then the encoding's own checks; the scale bytes are
 * mapped only when everything holds. */
static int check_quant_experts(expert_check *x, bool fc1, bool *ok, m2o_err *err)
{
    size_t si = fc1 ? 3 : 6, zi = fc1 ? 11 : 12;
    x->S = input_init(x->c, x->n, si, fc1 ? "fc1_scales" : "fc2_scales", true);
    *ok = x->S != NULL;
    if (!x->S)
        return 0;
    if (x->q.fp4)
        *ok = check_fp4_experts(x);
    else if (check_int_experts(x, zi, ok, err))
        return -1;
    if (*ok && tensor_bytes(x->c, x->S, &x->p->scales, &x->p->s_len, err))
        return -1;
    return 0;
}

/* One expert weight (fc1 or fc2) of a QMoE/MoE node. */
static int plan_experts(vctx *c, vplans *ps, const onnx_node *n, int layer, bool fc1, bool quant,
                        m2o_err *err)
{
    size_t wi = quant ? (fc1 ? 2 : 5) : (fc1 ? 2 : 4);
    expert_check x = {.c = c, .n = n,
                      .role = fc1 ? "fc1_experts_weights" : "fc2_experts_weights"};
    x.W = input_init(c, n, wi, x.role, true);
    if (!x.W)
        return 0;
    vexperts src;
    m2o_err serr = {{0}};
    if (vexperts_find(c->ck, c->md, layer, fc1, &src, &serr)) {
        verify_add_fault(c->r, VF_MISSING, onnx_tensor_name(x.W), "%s", serr.msg);
        return 0;
    }
    if (!expert_encoding(n, quant, src.K, &x.q))
        return 0; /* the attribute check reports it */
    if (!(x.p = plans_add(ps, err)))
        return -1;
    expert_plan_init(x.p, &src, fc1, &x.q);
    bool ok;
    if (!quant)
        ok = check_float_experts(&x);
    else if (check_quant_experts(&x, fc1, &ok, err))
        return -1;
    if (ok && tensor_bytes(c, x.W, &x.p->w, &x.p->w_len, err))
        return -1;
    if (!ok) { /* the fault is recorded; nothing to decode */
        ps->n--;
        return 0;
    }
    x.p->rows_per_job = x.p->N;
    x.p->n_jobs = x.p->E;
    finish_plan_row(c, x.p, onnx_tensor_name(x.W), onnx_node_name(n), x.fmt);
    return 0;
}

static int plan_moe_node(vctx *c, vplans *ps, const onnx_node *n, m2o_err *err)
{
    int layer = vnames_layer(onnx_node_name(n));
    if (layer < 0 && onnx_node_input_count(n) > 2)
        layer = vnames_layer(onnx_node_input(n, 2));
    if (layer < 0 || layer >= c->md->num_layers) {
        verify_add_fault(c->r, VF_UNMATCHED, onnx_node_name(n),
                         "cannot tell which layer node %s (%s) belongs to: its name and its "
                         "weights' names hold no layers.N in 0..%d",
                         onnx_node_name(n), onnx_node_op(n), c->md->num_layers - 1);
        return 0;
    }
    bool q = !strcmp(onnx_node_op(n), "QMoE");
    if (plan_experts(c, ps, n, layer, true, q, err) || plan_experts(c, ps, n, layer, false, q, err))
        return -1;
    return 0;
}

static bool linear_source(vctx *c, const onnx_node *n, vrole *role, vlinear *lin)
{
    char tried[768];
    if (!vnames_linear(onnx_node_name(n), c->md, c->ck, role, lin, tried, sizeof tried))
        return false;
    if (lin->n_parts == 0) {
        verify_add_fault(c->r, VF_MISSING, onnx_node_name(n),
                         "node %s reads a checkpoint weight that does not exist (looked for %s)",
                         onnx_node_name(n), tried);
        return true;
    }
    lin->K = lin->w[0]->ndim == 2 ? lin->w[0]->shape[1] : -1;
    lin->N = 0;
    for (int i = 0; i < lin->n_parts; i++) {
        if (lin->w[i]->ndim != 2 || lin->w[i]->shape[1] != lin->K) {
            verify_add_fault(c->r, VF_SHAPE, onnx_node_name(n),
                             "checkpoint weights of node %s do not stack: %s is not [N, %lld]",
                             onnx_node_name(n), lin->w[i]->name, (long long)lin->K);
            lin->n_parts = 0;
            return true;
        }
        lin->N += lin->w[i]->shape[0];
    }
    return true;
}

/* Linear weights are checked in bands of rows (LINEAR_CHUNK_ELEMS elements per job). */
static void split_rows_into_jobs(vplan *p)
{
    int64_t rpj = LINEAR_CHUNK_ELEMS / p->K;
    p->rows_per_job = rpj < 1 ? 1 : rpj > p->N ? p->N : rpj;
    p->n_jobs = (p->N + p->rows_per_job - 1) / p->rows_per_job;
}

/* MatMulNBits' attributes (FORMATS §4). */
typedef struct nbits_attrs {
    int64_t K, N, bits, bs;
} nbits_attrs;

/* Reads the attributes; false (with a fault) when N and K are not the checkpoint weight's or
 * bits and block_size cannot encode K. */
static bool nbits_attrs_ok(vctx *c, const onnx_node *n, const vlinear *lin, nbits_attrs *a)
{
    const char *name = onnx_node_name(n);
    *a = (nbits_attrs){.K = 0, .N = 0, .bits = 4, .bs = 0};
    onnx_node_attr_int(n, "K", &a->K);
    onnx_node_attr_int(n, "N", &a->N);
    onnx_node_attr_int(n, "bits", &a->bits);
    onnx_node_attr_int(n, "block_size", &a->bs);
    if (a->N != lin->N || a->K != lin->K) {
        bool swapped = a->N == lin->K && a->K == lin->N;
        verify_add_fault(c->r, swapped ? VF_NK_SWAPPED : VF_SHAPE, name,
                         "node %s declares N=%lld K=%lld, the checkpoint weight %s is [%lld, "
                         "%lld]%s", name, (long long)a->N, (long long)a->K, lin->w[0]->name,
                         (long long)lin->N, (long long)lin->K,
                         swapped ? ": N and K are swapped" : "");
        return false;
    }
    if ((a->bits != 4 && a->bits != 8 && a->bits != 2) || a->bs < 16 || a->K % a->bs) {
        verify_add_fault(c->r, VF_GRAPH, name,
                         "node %s: bits=%lld block_size=%lld cannot encode K=%lld (bits 2/4/8, "
                         "block_size >= 16 dividing K)", name, (long long)a->bits,
                         (long long)a->bs, (long long)a->K);
        return false;
    }
    return true;
}

/* B must be uint8 [N, K/bs, bs*bits/8] and the scales [N * K/bs] or [N, K/bs]. */
static bool nbits_tensors_ok(vctx *c, const nbits_attrs *a, const onnx_tensor *B,
                             const onnx_tensor *S)
{
    int64_t nb = a->K / a->bs;
    int64_t db[3] = {a->N, nb, a->bs * a->bits / 8};
    if (onnx_tensor_elem_type(B) != ONNX_UINT8 || !dims_are(B, 3, db)) {
        char want[96];
        snprintf(want, sizeof want, "uint8 [%lld, %lld, %lld]", (long long)a->N, (long long)nb,
                 (long long)(a->bs * a->bits / 8));
        shape_fault(c, B, "MatMulNBits B", want, false);
        return false;
    }
    return scales_ok(c, S, 0, a->N, nb);
}

static void nbits_plan_init(vplan *p, const vlinear *lin, const nbits_attrs *a, int scale_type)
{
    p->lin = *lin;
    p->E = 1;
    p->N = a->N;
    p->K = a->K;
    p->layout = VL_INT_RAW;
    p->bits = (int)a->bits;
    p->block_size = (int)a->bs;
    p->elem_type = scale_type;
}

/* Optional zero points: uint8, (K/bs * bits + 7) / 8 bytes per row. Returns 1 when they are
 * of another kind, which verify cannot decode (noted, the weight is not planned), -1 on a
 * read error. */
static int plan_nbits_zero_points(vctx *c, vplan *p, const nbits_attrs *a, const onnx_tensor *Z,
                                  char *fmt, size_t fmt_len, m2o_err *err)
{
    int64_t nb = a->K / a->bs, zrow = (nb * a->bits + 7) / 8;
    if (onnx_tensor_elem_type(Z) != ONNX_UINT8 || vnumel(Z) != p->N * zrow) {
        verify_add_note(c->r, "%s: zero points of type %s are not verified", onnx_tensor_name(Z),
                        onnx_dtype_name(onnx_tensor_elem_type(Z)));
        return 1;
    }
    if (tensor_bytes(c, Z, &p->zp, &p->zp_len, err))
        return -1;
    p->zp_stride = (size_t)(p->N * zrow);
    strncat(fmt, " asym", fmt_len - strlen(fmt) - 1);
    return 0;
}

static int plan_nbits(vctx *c, vplans *ps, const onnx_node *n, m2o_err *err)
{
    vrole role;
    vlinear lin;
    const char *name = onnx_node_name(n);
    if (!linear_source(c, n, &role, &lin)) {
        verify_add_fault(c->r, VF_UNMATCHED, name,
                         "MatMulNBits node %s matches no known checkpoint weight: it cannot be "
                         "verified (the name table is src/verify/names.c)", name);
        return 0;
    }
    if (lin.n_parts == 0 || role != VROLE_LINEAR)
        return 0; /* missing source recorded; a quantized router is the graph check's fault */
    nbits_attrs a;
    if (!nbits_attrs_ok(c, n, &lin, &a))
        return 0;
    const onnx_tensor *B = input_init(c, n, 1, "B", true);
    const onnx_tensor *S = input_init(c, n, 2, "scales", true);
    const onnx_tensor *Z = input_init(c, n, 3, "zero_points", false);
    if (!B || !S || !nbits_tensors_ok(c, &a, B, S))
        return 0;
    vplan *p = plans_add(ps, err);
    if (!p)
        return -1;
    nbits_plan_init(p, &lin, &a, onnx_tensor_elem_type(S));
    char fmt[64];
    snprintf(fmt, sizeof fmt, "nbits int%lld bs%lld", (long long)a.bits, (long long)a.bs);
    if (Z) {
        int zrc = plan_nbits_zero_points(c, p, &a, Z, fmt, sizeof fmt, err);
        if (zrc < 0)
            return -1;
        if (zrc > 0) { /* noted: the weight is not verified */
            ps->n--;
            return 0;
        }
    }
    if (tensor_bytes(c, B, &p->w, &p->w_len, err) ||
        tensor_bytes(c, S, &p->scales, &p->s_len, err))
        return -1;
    p->w_stride = p->w_len;
    p->s_stride = p->s_len;
    split_rows_into_jobs(p);
    finish_plan_row(c, p, onnx_tensor_name(B), name, fmt);
    return 0;
}

static int plan_matmul(vctx *c, vplans *ps, const onnx_node *n, m2o_err *err)
{
    if (onnx_node_input_count(n) < 2)
        return 0;
    const onnx_tensor *W = onnx_model_find_initializer(c->m, onnx_node_input(n, 1));
    if (!W || onnx_tensor_ndim(W) != 2)
        return 0; /* activation x activation */
    vrole role;
    vlinear lin;
    if (!linear_source(c, n, &role, &lin)) {
        verify_add_note(c->r, "float MatMul %s (weight %s) matches no checkpoint weight: not "
                              "verified", onnx_node_name(n), onnx_tensor_name(W));
        return 0;
    }
    vmark_initializer(c, W); /* checked below, or a fault says why not */
    if (lin.n_parts == 0 || !float_dtype_ok(c, W, "MatMul weight"))
        return 0;
    int64_t d[2] = {lin.K, lin.N}, sw[2] = {lin.N, lin.K};
    if (!dims_are(W, 2, d)) {
        char want[96];
        snprintf(want, sizeof want, "[%lld, %lld] (K, N)", (long long)lin.K, (long long)lin.N);
        shape_fault(c, W, "MatMul weight", want, lin.N != lin.K && dims_are(W, 2, sw));
        return 0;
    }
    vplan *p = plans_add(ps, err);
    if (!p)
        return -1;
    p->lin = lin;
    p->E = 1;
    p->N = lin.N;
    p->K = lin.K;
    p->layout = VL_FLOAT_KN;
    p->elem_type = onnx_tensor_elem_type(W);
    if (tensor_bytes(c, W, &p->w, &p->w_len, err))
        return -1;
    p->w_stride = p->w_len;
    split_rows_into_jobs(p);
    char fmt[64];
    snprintf(fmt, sizeof fmt, "%s (MatMul)", type_name(p->elem_type));
    finish_plan_row(c, p, onnx_tensor_name(W), onnx_node_name(n), fmt);
    return 0;
}

/* ------------------------------------------------------------------ one job */

int vplan_weights(vctx *c, vplans *ps, m2o_err *err)
{
    int rc = 0;
    for (size_t i = 0; i < onnx_model_node_count(c->m) && !rc; i++) {
        const onnx_node *n = onnx_model_node(c->m, i);
        const char *op = onnx_node_op(n);
        if (!strcmp(op, "QMoE") || !strcmp(op, "MoE"))
            rc = plan_moe_node(c, ps, n, err);
        else if (!strcmp(op, "MatMulNBits"))
            rc = plan_nbits(c, ps, n, err);
        else if (!strcmp(op, "MatMul"))
            rc = plan_matmul(c, ps, n, err);
    }
    return rc;
}
