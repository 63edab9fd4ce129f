/* Weight checks: every expert tensor of a QMoE / MoE node and every MatMulNBits (and named float
 * MatMul) weight is decoded through the layout its node declares and compared, element by
 * element, with the matrix rebuilt from the checkpoint (source.c).
 *
 * Streaming: one job per expert (or per row chunk of a linear weight) on the ordered thread
 * pool, so memory holds only the jobs in flight; each job drops the checkpoint and model pages
 * it read. A failing job is diagnosed: the known exporter bugs are tried one by one (each is a
 * cheap test that stops at the first element out of bounds) and the one that explains the bytes
 * is named. */
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
#include "verify/compare.h"
#include "verify/names.h"
#include "verify/source.h"
#include "verify/verify_internal.h"

/* Row chunk of a linear weight: bounded staging whatever the vocabulary size. */
#define LINEAR_CHUNK_ELEMS ((int64_t)1 << 22)
/* Scratch of all jobs in flight together (gpt-oss-120b fc1: 166 MB per expert job). */
#define VERIFY_INFLIGHT_BYTES ((int64_t)2 << 30)

typedef enum vlayout {
    VL_FLOAT,     /* [E][N][K] float */
    VL_FLOAT_KN,  /* MatMul weight [K][N] float */
    VL_INT_RAW,   /* [E][N][K*bits/8] */
    VL_INT_SM80,  /* per expert, CUTLASS SM80 prepacked */
    VL_FP4_CUDA,  /* per expert [K][N/2] nibble-transposed MXFP4 codes */
} vlayout;

typedef struct vplan {
    size_t row; /* report tensor */
    bool experts, fc1;
    vexperts src;
    vlinear lin;
    int64_t E, N, K;
    vlayout layout;
    int bits, block_size;
    int elem_type;            /* float weights: their type; int: the scales' type */
    const uint8_t *w, *scales, *zp;
    size_t w_stride, s_stride, zp_stride; /* bytes per expert */
    size_t w_len, s_len, zp_len;          /* whole tensors (for page release) */
    bool passthrough;         /* MXFP4 checkpoint -> fp4: codes and scales must be identical */
    int prepacked_attr;
    int64_t rows_per_job, first_job, n_jobs;

    /* accumulated in job order */
    vstats st;
    int64_t diff_code_bytes, diff_scale_bytes, first_diff_expert;
    bool diagnosed;
    vfault_code diag;
    char diag_msg[640];
} vplan;

typedef struct vplans {
    vplan *p;
    size_t n, cap;
} vplans;

typedef struct vjob_res {
    size_t plan;
    vstats st;
    int64_t diff_codes, diff_scales;
    bool has_diag;
    vfault_code diag;
    char msg[640];
} vjob_res;

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

static int64_t numel(const onnx_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < onnx_tensor_ndim(t); i++)
        n *= onnx_tensor_dims(t)[i];
    return n;
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
            if (wt != ONNX_UINT8 || numel(W) != E * N * K / 2) {
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
                if (onnx_tensor_elem_type(Z) != ONNX_UINT8 || numel(Z) != E * N * zrow) {
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
        if (onnx_tensor_elem_type(Z) != ONNX_UINT8 || numel(Z) != N * zrow) {
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

/* Drops the pages of [p, p + len) from this process (they are re-read if touched again). */
static void release_range(const void *p, size_t len)
{
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0 || !p || !len)
        return;
    uintptr_t a = ((uintptr_t)p + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    uintptr_t b = ((uintptr_t)p + len) & ~((uintptr_t)page - 1);
    if (b > a)
        madvise((void *)a, b - a, MADV_DONTNEED);
}

/* Scratch of one job. */
typedef struct vscratch {
    float *exp, *alt;      /* nr*K floats each */
    uint8_t *codes, *alt_codes;
    float *scales_f32;
    int8_t *signs;
    uint8_t *gather;       /* VL_FLOAT_KN: nr*K elements */
} vscratch;

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
                    .bits = p->bits, .block_size = p->block_size};
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

static void where_text(const vplan *p, int64_t e, int64_t row, int64_t col, char *buf,
                       size_t len)
{
    if (p->experts)
        snprintf(buf, len, "expert %lld row %lld col %lld", (long long)e, (long long)row,
                 (long long)col);
    else
        snprintf(buf, len, "row %lld col %lld", (long long)row, (long long)col);
}

/* Tries each known exporter bug against the failing unit; the first that explains the bytes
 * is named in res. exp holds the expected rows; v the encoding as declared. */
static void diagnose(const vplan *p, int64_t e, int64_t r0, int64_t nr, vscratch *s,
                     const venc *v, const vstats *st, vjob_res *res)
{
    int64_t N = p->N, K = p->K;
    bool whole = r0 == 0 && nr == N;
    const uint8_t *w = p->w + (size_t)e * p->w_stride;
    venc alt;
    res->has_diag = true;
    char at[96];
    snprintf(at, sizeof at, "%s%lld", p->experts ? "expert " : "rows from ",
             (long long)(p->experts ? e : r0));

    /* 1. layout: the bytes are in the other layout than the one the runtime reads */
    if (p->layout == VL_INT_SM80) {
        alt = *v;
        alt.codes = w;
        if (venc_passes(s->exp, nr, K, &alt)) {
            res->diag = VF_CUTLASS_MISSING;
            snprintf(res->msg, sizeof res->msg,
                     "CUTLASS SM80 layout missing: the CUDA QMoE reads prepacked weights "
                     "(weights_prepacked=%d) but the bytes of %s are in the raw [N][K/pack] "
                     "layout", p->prepacked_attr, at);
            return;
        }
    }
    if (p->layout == VL_INT_RAW && whole && K % 64 == 0 && (p->bits == 4 || p->bits == 8) &&
        !cutlass_sm80_unpack(w, N, K, p->bits, s->alt_codes, NULL)) {
        alt = *v;
        alt.codes = s->alt_codes;
        if (venc_passes(s->exp, nr, K, &alt)) {
            res->diag = VF_CUTLASS_UNEXPECTED;
            snprintf(res->msg, sizeof res->msg,
                     "the bytes of %s are in the CUTLASS SM80 prepacked layout but the node "
                     "reads the raw layout (CPU, or weights_prepacked=0)", at);
            return;
        }
    }
    if (p->layout == VL_FP4_CUDA) {
        alt = *v;
        alt.codes = w;
        if (venc_passes(s->exp, nr, K, &alt)) {
            res->diag = VF_FP4_TRANSPOSE;
            snprintf(res->msg, sizeof res->msg,
                     "fp4 CUDA transpose missing: the bytes of %s are raw [N][K/2] MXFP4 codes, "
                     "the CUDA QMoE reads [K][N/2]", at);
            return;
        }
    }
    /* 2. scales made positive: restore each block's sign from its anchor */
    if (v->kind == VENC_INT && !v->zero_points) {
        int64_t nb = K / p->block_size, n_blocks = nr * nb, wrong = 0;
        vx_scales_to_f32(v->scales, v->elem_type, (size_t)n_blocks, s->scales_f32);
        vx_anchor_scale_signs(s->exp, nr, K, p->block_size, s->signs);
        bool all_nonneg = true;
        for (int64_t i = 0; i < n_blocks; i++)
            all_nonneg &= s->scales_f32[i] >= 0;
        for (int64_t i = 0; i < n_blocks && all_nonneg; i++) {
            if (s->signs[i] < 0) {
                s->scales_f32[i] = -s->scales_f32[i];
                wrong++;
            }
        }
        alt = *v;
        alt.scales = s->scales_f32;
        alt.elem_type = ONNX_FLOAT;
        if (all_nonneg && wrong > 0 && venc_passes(s->exp, nr, K, &alt)) {
            res->diag = VF_SCALES_ABS;
            snprintf(res->msg, sizeof res->msg,
                     "signed scales were made positive (abs): in %s, %lld of %lld blocks have a "
                     "positive anchor and need a negative scale (docs/FORMATS.md §4); with their signs "
                     "restored every element decodes within bounds",
                     at, (long long)wrong, (long long)n_blocks);
            return;
        }
    }
    /* 3. nibble order */
    if ((v->kind == VENC_INT && v->bits == 4) || v->kind == VENC_MXFP4) {
        size_t nbytes = (size_t)(nr * K / 2);
        alt = *v;
        alt.codes = s->alt_codes;
        if (p->layout == VL_FP4_CUDA) { /* swapped in the transposed bytes the file holds */
            vx_swap_nibbles(w, nbytes, s->codes);
            if (fp4_cuda_unpack(s->codes, N, K, s->alt_codes, NULL))
                alt.codes = v->codes;
        } else {
            vx_swap_nibbles(v->codes, nbytes, s->alt_codes);
        }
        if (venc_passes(s->exp, nr, K, &alt)) {
            res->diag = VF_NIBBLE_ORDER;
            snprintf(res->msg, sizeof res->msg,
                     "4-bit nibble order swapped in %s: element 2j must sit in the low nibble "
                     "of byte j, 2j+1 in the high nibble", at);
            return;
        }
    }
    /* 4. gate/up halves instead of interleaved rows */
    if (p->experts && p->fc1 && whole) {
        vx_halves_from_interleaved(s->exp, N, K, s->alt);
        if (venc_passes(s->alt, N, K, v)) {
            res->diag = VF_GATE_UP_ORDER;
            snprintf(res->msg, sizeof res->msg,
                     "gate/up rows not interleaved in %s: the rows hold [gate; up] halves, "
                     "swiglu_fusion=1 needs even rows gate and odd rows up", at);
            return;
        }
    }
    /* 5. N and K swapped: an input-major source written without its transpose */
    if (whole) {
        vx_untransposed(s->exp, N, K, s->alt);
        if (venc_passes(s->alt, N, K, v)) {
            res->diag = VF_NK_SWAPPED;
            snprintf(res->msg, sizeof res->msg,
                     "N and K swapped in %s: the bytes hold the [K][N] (input-major) source "
                     "without its transpose to [N][K]", at);
            return;
        }
    }
    char where[128];
    where_text(p, e, st->first_row + r0, st->first_col, where, sizeof where);
    res->diag = VF_ERROR_BOUND;
    if (st->first_scale_ceiling > 0) {
        snprintf(res->msg, sizeof res->msg,
                 "%lld of %lld elements exceed the format's error bound (first at %s: expected "
                 "%.6g, decoded %.6g): its block's scale %.6g exceeds the %.6g the checkpoint "
                 "block allows", (long long)st->n_over, (long long)st->n, where,
                 st->first_expected, st->first_decoded, st->first_scale,
                 st->first_scale_ceiling);
        return;
    }
    snprintf(res->msg, sizeof res->msg,
             "%lld of %lld elements exceed the format's error bound (first at %s: expected %.6g, "
             "decoded %.6g, bound %.3g); no known layout or scale bug explains it",
             (long long)st->n_over, (long long)st->n, where, st->first_expected,
             st->first_decoded, st->first_bound);
}

static int produce(void *vctx_, int64_t job, void **result, m2o_err *err)
{
    vrun *run = vctx_;
    size_t pi = plan_of_job(run->ps, job);
    const vplan *p = &run->ps->p[pi];
    int64_t unit = job - p->first_job;
    int64_t e = p->experts ? unit : 0;
    int64_t r0 = p->experts ? 0 : unit * p->rows_per_job;
    int64_t nr = p->experts ? p->N : (p->N - r0 < p->rows_per_job ? p->N - r0 : p->rows_per_job);
    int64_t K = p->K;
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
    if (!rc && p->passthrough) {
        const uint8_t *ck_codes, *ck_scales;
        vexperts_mxfp4(&p->src, e, &ck_codes, &ck_scales);
        size_t nc = (size_t)(p->N * K / 2), ns = (size_t)(p->N * K / 32);
        const uint8_t *sc = p->scales + (size_t)e * p->s_stride;
        for (size_t i = 0; i < nc; i++)
            res->diff_codes += v.codes[i] != ck_codes[i];
        for (size_t i = 0; i < ns; i++)
            res->diff_scales += sc[i] != ck_scales[i];
    }
    if (!rc && (res->st.n_over > 0 || res->diff_codes || res->diff_scales)) {
        if (res->st.n_over > 0) {
            diagnose(p, e, r0, nr, &s, &v, &res->st, res);
        } else {
            res->has_diag = true;
            res->diag = VF_PASSTHROUGH;
            snprintf(res->msg, sizeof res->msg,
                     "MXFP4 passthrough differs from the checkpoint in expert %lld: %lld code "
                     "bytes and %lld scale bytes differ (the values stay within the MXFP4 "
                     "bound, but the codes must pass through unchanged)",
                     (long long)e, (long long)res->diff_codes, (long long)res->diff_scales);
        }
    }
    if (p->experts)
        vexperts_release(&p->src, e);
    if (p->layout != VL_FLOAT_KN) {
        size_t wrow = p->experts ? p->w_stride : p->w_stride / (size_t)p->N;
        release_range(p->w + (size_t)e * p->w_stride + (size_t)r0 * (p->experts ? 0 : wrow),
                      p->experts ? p->w_stride : (size_t)nr * wrow);
    }
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
    int rc = 0;
    for (size_t i = 0; i < onnx_model_node_count(c->m) && !rc; i++) {
        const onnx_node *n = onnx_model_node(c->m, i);
        const char *op = onnx_node_op(n);
        if (!strcmp(op, "QMoE") || !strcmp(op, "MoE"))
            rc = plan_moe_node(c, &ps, n, err);
        else if (!strcmp(op, "MatMulNBits"))
            rc = plan_nbits(c, &ps, n, err);
        else if (!strcmp(op, "MatMul"))
            rc = plan_matmul(c, &ps, n, err);
    }
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
