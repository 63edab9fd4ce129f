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

/* One expert weight (fc1 or fc2) of a QMoE/MoE node. */
static int plan_experts(vctx *c, vplans *ps, const onnx_node *n, int layer, bool fc1, bool quant,
                        m2o_err *err)
{
    const char *op = onnx_node_op(n);
    bool qmoe = quant;
    size_t wi = qmoe ? (fc1 ? 2 : 5) : (fc1 ? 2 : 4), si = fc1 ? 3 : 6, zi = fc1 ? 11 : 12;
    const char *role = fc1 ? "fc1_experts_weights" : "fc2_experts_weights";
    const onnx_tensor *W = input_init(c, n, wi, role, true);
    if (!W)
        return 0;
    vexperts src;
    m2o_err serr = {{0}};
    if (vexperts_find(c->ck, c->md, layer, fc1, &src, &serr)) {
        verify_add_fault(c->r, VF_MISSING, onnx_tensor_name(W), "%s", serr.msg);
        return 0;
    }
    int64_t E = src.E, N = src.N, K = src.K;
    int64_t bits = 4, bs = 0, prepacked = -1;
    const char *qt = "int";
    if (qmoe) {
        onnx_node_attr_int(n, "expert_weight_bits", &bits);
        onnx_node_attr_int(n, "block_size", &bs);
        onnx_node_attr_int(n, "weights_prepacked", &prepacked);
        onnx_node_attr_string(n, "quant_type", &qt);
    }
    bool fp4 = qmoe && !strcmp(qt, "fp4");
    if (fp4) {
        bits = 4;
        bs = 32;
    }
    if (bs <= 0)
        bs = K; /* block_size 0: one scale per row */
    if (qmoe && !fp4 && (bits != 4 && bits != 8))
        return 0; /* the attribute check reports it */
    if (qmoe && (K % bs || bs <= 0))
        return 0; /* the attribute check reports it */

    vplan *p = plans_add(ps, err);
    if (!p)
        return -1;
    p->experts = true;
    p->fc1 = fc1;
    p->src = src;
    p->E = E;
    p->N = N;
    p->K = K;
    p->bits = (int)bits;
    p->block_size = (int)bs;
    p->prepacked_attr = (int)prepacked;
    int wt = onnx_tensor_elem_type(W);
    char want[96], fmt[64];
    bool ok = true;
    if (!qmoe) {
        int64_t d[3] = {E, N, K}, sw[3] = {E, K, N};
        p->layout = VL_FLOAT;
        p->elem_type = wt;
        ok = float_dtype_ok(c, W, role);
        if (ok && !dims_are(W, 3, d)) {
            snprintf(want, sizeof want, "[%lld, %lld, %lld]", (long long)E, (long long)N,
                     (long long)K);
            shape_fault(c, W, role, want, N != K && dims_are(W, 3, sw));
            ok = false;
        }
        snprintf(fmt, sizeof fmt, "%s (%s)", type_name(wt), op);
        p->w_stride = (size_t)(N * K) * onnx_dtype_size(wt);
    } else {
        const onnx_tensor *S = input_init(c, n, si, fc1 ? "fc1_scales" : "fc2_scales", true);
        if (!S) {
            ps->n--;
            return 0;
        }
        int64_t pack = 8 / bits;
        if (fp4) {
            p->layout = VL_FP4_CUDA;
            p->passthrough = src.kind == VSRC_MXFP4;
            int64_t d[3] = {E, K, N / 2}, ds[3] = {E, N, K / 32};
            if (wt != ONNX_UINT8 || vnumel(W) != E * N * K / 2) {
                snprintf(want, sizeof want, "uint8 [%lld, %lld, %lld]", (long long)E,
                         (long long)K, (long long)(N / 2));
                shape_fault(c, W, role, want, false);
                ok = false;
            } else if (!dims_are(W, 3, d)) {
                verify_add_note(c->r, "%s declared %s-shaped, the fp4 CUDA layout is [E, K, N/2]",
                                onnx_tensor_name(W), "another");
            }
            int st = onnx_tensor_elem_type(S);
            if ((st != ONNX_FLOAT8E8M0 && st != ONNX_UINT8) || !dims_are(S, 3, ds)) {
                snprintf(want, sizeof want, "float8e8m0 [%lld, %lld, %lld]", (long long)E,
                         (long long)N, (long long)(K / 32));
                shape_fault(c, S, "fp4 scales", want, false);
                ok = false;
            } else if (st == ONNX_UINT8) {
                verify_add_note(c->r, "%s: E8M0 scales typed uint8, ONNX Runtime expects "
                                      "FLOAT8E8M0", onnx_tensor_name(S));
            }
            p->elem_type = st;
            snprintf(fmt, sizeof fmt, "mxfp4%s", p->passthrough ? " passthrough" : "");
            p->w_stride = (size_t)(N * K / 2);
            p->s_stride = (size_t)(N * K / 32);
        } else {
            bool sm80 = c->cuda && prepacked != 0;
            p->layout = sm80 ? VL_INT_SM80 : VL_INT_RAW;
            int64_t d[3] = {E, N, K / pack}, dsm[3] = {E, K, N / pack}, sw[3] = {E, K, N / pack};
            bool dims_ok = wt == ONNX_UINT8 &&
                           (dims_are(W, 3, d) || (sm80 && dims_are(W, 3, dsm)));
            if (!dims_ok) {
                snprintf(want, sizeof want, "uint8 [%lld, %lld, %lld]", (long long)E,
                         (long long)(sm80 ? K : N), (long long)(sm80 ? N / pack : K / pack));
                shape_fault(c, W, role, want, !sm80 && wt == ONNX_UINT8 && N != K &&
                                                  dims_are(W, 3, sw));
                ok = false;
            }
            if (!scales_ok(c, S, E, N, K / bs))
                ok = false;
            p->elem_type = onnx_tensor_elem_type(S);
            snprintf(fmt, sizeof fmt, "int%lld %s bs%lld", (long long)bits,
                     sm80 ? "sm80" : "raw", (long long)bs);
            p->w_stride = (size_t)(N * K / pack);
            p->s_stride = (size_t)(N * (K / bs)) * onnx_dtype_size(p->elem_type);
            const onnx_tensor *Z = input_init(c, n, zi, "zero points", false);
            if (Z) {
                int64_t nb = K / bs, zrow = bits == 4 ? (nb + 1) / 2 : nb;
                if (onnx_tensor_elem_type(Z) != ONNX_UINT8 || vnumel(Z) != E * N * zrow) {
                    snprintf(want, sizeof want, "uint8 with %lld elements",
                             (long long)(E * N * zrow));
                    shape_fault(c, Z, "zero points", want, false);
                    ok = false;
                } else if (tensor_bytes(c, Z, &p->zp, &p->zp_len, err)) {
                    return -1;
                }
                p->zp_stride = (size_t)(N * zrow);
                strncat(fmt, " asym", sizeof fmt - strlen(fmt) - 1);
            }
        }
        if (ok && tensor_bytes(c, S, &p->scales, &p->s_len, err))
            return -1;
    }
    if (ok && tensor_bytes(c, W, &p->w, &p->w_len, err))
        return -1;
    if (!ok) { /* the shape fault is recorded; nothing to decode */
        ps->n--;
        return 0;
    }
    p->rows_per_job = N;
    p->n_jobs = E;
    finish_plan_row(c, p, onnx_tensor_name(W), onnx_node_name(n), fmt);
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
    int64_t K = 0, N = 0, bits = 4, bs = 0;
    onnx_node_attr_int(n, "K", &K);
    onnx_node_attr_int(n, "N", &N);
    onnx_node_attr_int(n, "bits", &bits);
    onnx_node_attr_int(n, "block_size", &bs);
    if (N != lin.N || K != lin.K) {
        bool swapped = N == lin.K && K == lin.N;
        verify_add_fault(c->r, swapped ? VF_NK_SWAPPED : VF_SHAPE, name,
                         "node %s declares N=%lld K=%lld, the checkpoint weight %s is [%lld, "
                         "%lld]%s", name, (long long)N, (long long)K, lin.w[0]->name,
                         (long long)lin.N, (long long)lin.K, swapped ? ": N and K are swapped" : "");
        return 0;
    }
    if ((bits != 4 && bits != 8 && bits != 2) || bs < 16 || K % bs) {
        verify_add_fault(c->r, VF_GRAPH, name,
                         "node %s: bits=%lld block_size=%lld cannot encode K=%lld (bits 2/4/8, "
                         "block_size >= 16 dividing K)", name, (long long)bits, (long long)bs,
                         (long long)K);
        return 0;
    }
    const onnx_tensor *B = input_init(c, n, 1, "B", true);
    const onnx_tensor *S = input_init(c, n, 2, "scales", true);
    const onnx_tensor *Z = input_init(c, n, 3, "zero_points", false);
    if (!B || !S)
        return 0;
    int64_t nb = K / bs;
    char want[96];
    int64_t db[3] = {N, nb, bs * bits / 8};
    if (onnx_tensor_elem_type(B) != ONNX_UINT8 || !dims_are(B, 3, db)) {
        snprintf(want, sizeof want, "uint8 [%lld, %lld, %lld]", (long long)N, (long long)nb,
                 (long long)(bs * bits / 8));
        shape_fault(c, B, "MatMulNBits B", want, false);
        return 0;
    }
    if (!scales_ok(c, S, 0, N, nb))
        return 0;
    vplan *p = plans_add(ps, err);
    if (!p)
        return -1;
    p->lin = lin;
    p->E = 1;
    p->N = N;
    p->K = K;
    p->layout = VL_INT_RAW;
    p->bits = (int)bits;
    p->block_size = (int)bs;
    p->elem_type = onnx_tensor_elem_type(S);
    char fmt[64];
    snprintf(fmt, sizeof fmt, "nbits int%lld bs%lld", (long long)bits, (long long)bs);
    if (Z) {
        int64_t zrow = (nb * bits + 7) / 8;
        if (onnx_tensor_elem_type(Z) != ONNX_UINT8 || vnumel(Z) != N * zrow) {
            verify_add_note(c->r, "%s: zero points of type %s are not verified",
                            onnx_tensor_name(Z), onnx_dtype_name(onnx_tensor_elem_type(Z)));
            ps->n--;
            return 0;
        }
        if (tensor_bytes(c, Z, &p->zp, &p->zp_len, err))
            return -1;
        p->zp_stride = (size_t)(N * zrow);
        strncat(fmt, " asym", sizeof fmt - strlen(fmt) - 1);
    }
    if (tensor_bytes(c, B, &p->w, &p->w_len, err) ||
        tensor_bytes(c, S, &p->scales, &p->s_len, err))
        return -1;
    p->w_stride = p->w_len;
    p->s_stride = p->s_len;
    int64_t rpj = LINEAR_CHUNK_ELEMS / K;
    p->rows_per_job = rpj < 1 ? 1 : rpj > N ? N : rpj;
    p->n_jobs = (N + p->rows_per_job - 1) / p->rows_per_job;
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
    int64_t rpj = LINEAR_CHUNK_ELEMS / p->K;
    p->rows_per_job = rpj < 1 ? 1 : rpj > p->N ? p->N : rpj;
    p->n_jobs = (p->N + p->rows_per_job - 1) / p->rows_per_job;
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
