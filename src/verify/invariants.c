/* Graph and genai_config.json invariants: unique names, every value produced once, router and
 * shared-expert gate kept in float, QMoE/MoE attributes consistent with config.json and with the
 * provider the folder targets, attention heads, and genai_config.json consistent with both. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx/genai_config.h"
#include "onnx/graph.h"
#include "verify/names.h"
#include "onnx/ort_rules.h"
#include "verify/verify_internal.h"

/* ------------------------------------------------------------------ name sets */

typedef struct nameset {
    const char **names;
    size_t *owner; /* index of the node (or SIZE_MAX) that introduced it */
    size_t n;
} nameset;

typedef struct named {
    const char *name;
    size_t owner;
} named;

static int cmp_named(const void *a, const void *b)
{
    const named *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->owner < y->owner ? -1 : x->owner > y->owner);
}

/* Sorts and reports each duplicate once. */
static int report_duplicates(vctx *c, named *v, size_t n, vfault_code code, const char *what)
{
    qsort(v, n, sizeof *v, cmp_named);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(v[i].name, v[i - 1].name))
            continue;
        if (i >= 2 && !strcmp(v[i].name, v[i - 2].name))
            continue;
        verify_add_fault(c->r, code, v[i].name, "%s \"%s\" is used twice (%s)", what, v[i].name,
                         code == VF_DUPLICATE_NODE ? "node names must be unique"
                                                   : "every value must be produced once");
    }
    return 0;
}

/* The producer of `name` in v (sorted, owner = producing node, SIZE_MAX - i for initializers
 * and graph inputs), or NULL. */
static const named *find_named(const named *v, size_t k, const char *name)
{
    size_t lo = 0, hi = k;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (strcmp(v[mid].name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < k && !strcmp(v[lo].name, name) ? &v[lo] : NULL;
}

/* Node names must be unique (ONNX Runtime refuses a model whose names repeat). */
static int check_unique_node_names(vctx *c, m2o_err *err)
{
    onnx_model *m = c->m;
    size_t nn = onnx_model_node_count(m);
    named *v = m2o_malloc((nn + 1) * sizeof *v, err);
    if (!v)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < nn; i++) {
        const char *name = onnx_node_name(onnx_model_node(m, i));
        if (name[0])
            v[k++] = (named){name, i};
    }
    c->r->n_checks++;
    report_duplicates(c, v, k, VF_DUPLICATE_NODE, "node name");
    free(v);
    return 0;
}

/* Every value the graph defines, with its producer: node outputs (owner = node index),
 * initializers (nn + i) and graph inputs (SIZE_MAX - i); *k is the count. */
static named *defined_values(onnx_model *m, size_t *k, m2o_err *err)
{
    size_t nn = onnx_model_node_count(m), total = 0;
    for (size_t i = 0; i < nn; i++)
        total += onnx_node_output_count(onnx_model_node(m, i));
    total += onnx_model_initializer_count(m) + onnx_model_input_count(m);
    named *v = m2o_malloc((total + 1) * sizeof *v, err);
    if (!v)
        return NULL;
    *k = 0;
    for (size_t i = 0; i < nn; i++) {
        const onnx_node *n = onnx_model_node(m, i);
        for (size_t j = 0; j < onnx_node_output_count(n); j++)
            if (onnx_node_output(n, j)[0])
                v[(*k)++] = (named){onnx_node_output(n, j), i};
    }
    for (size_t i = 0; i < onnx_model_initializer_count(m); i++)
        v[(*k)++] = (named){onnx_tensor_name(onnx_model_initializer(m, i)), nn + i};
    for (size_t i = 0; i < onnx_model_input_count(m); i++)
        v[(*k)++] = (named){onnx_value_name(onnx_model_input(m, i)), (size_t)-1 - i};
    return v;
}

/* Every value is produced once, and every node input is produced by something. */
static int check_unique_names(vctx *c, m2o_err *err)
{
    onnx_model *m = c->m;
    if (check_unique_node_names(c, err))
        return -1;
    size_t k;
    named *v = defined_values(m, &k, err);
    if (!v)
        return -1;
    c->r->n_checks++;
    report_duplicates(c, v, k, VF_DUPLICATE_VALUE, "value name"); /* sorts v */
    c->r->n_checks++;
    for (size_t i = 0; i < onnx_model_node_count(m); i++) {
        const onnx_node *n = onnx_model_node(m, i);
        for (size_t j = 0; j < onnx_node_input_count(n); j++) {
            const char *in = onnx_node_input(n, j);
            if (in[0] && !find_named(v, k, in))
                verify_add_fault(c->r, VF_GRAPH, onnx_node_name(n),
                                 "input \"%s\" of node %s is produced by no node, initializer or "
                                 "graph input", in, onnx_node_name(n));
        }
    }
    free(v);
    return 0;
}

/* ONNX Runtime needs the nodes in topological order: a node reading a value that a later node
 * produces is out of order, and when no order exists the graph has a cycle. */
void vcheck_graph_order(vctx *c)
{
    onnx_model *m = c->m;
    size_t nn = onnx_model_node_count(m), total = 0;
    for (size_t i = 0; i < nn; i++)
        total += onnx_node_output_count(onnx_model_node(m, i));
    named *v = malloc((total + 1) * sizeof *v);
    if (!v) {
        verify_add_fault(c->r, VF_GRAPH_ORDER, "", "out of memory checking the node order");
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < nn; i++) {
        const onnx_node *n = onnx_model_node(m, i);
        for (size_t j = 0; j < onnx_node_output_count(n); j++)
            if (onnx_node_output(n, j)[0])
                v[k++] = (named){onnx_node_output(n, j), i};
    }
    qsort(v, k, sizeof *v, cmp_named);
    c->r->n_checks++;
    for (size_t i = 0; i < nn; i++) {
        const onnx_node *n = onnx_model_node(m, i);
        for (size_t j = 0; j < onnx_node_input_count(n); j++) {
            const char *in = onnx_node_input(n, j);
            if (!in[0] || onnx_model_find_initializer(m, in) || onnx_model_find_input(m, in))
                continue;
            const named *p = find_named(v, k, in);
            if (p && p->owner >= i) {
                verify_add_fault(c->r, VF_GRAPH_ORDER, onnx_node_name(n),
                                 "node %s (#%zu) reads \"%s\", which node %s (#%zu) produces "
                                 "%s: the nodes are not in topological order (a cycle when no "
                                 "order exists); ONNX Runtime refuses the model",
                                 onnx_node_name(n), i, in,
                                 onnx_node_name(onnx_model_node(m, p->owner)), p->owner,
                                 p->owner == i ? "itself" : "later");
                free(v);
                return;
            }
        }
    }
    free(v);
}

/* ------------------------------------------------------------------ router */

static const onnx_node *producer(onnx_model *m, const char *value)
{
    for (size_t i = 0; i < onnx_model_node_count(m); i++) {
        const onnx_node *n = onnx_model_node(m, i);
        for (size_t j = 0; j < onnx_node_output_count(n); j++)
            if (!strcmp(onnx_node_output(n, j), value))
                return n;
    }
    return NULL;
}

/* Walks back from the router logits through shape/elementwise ops to the projection. */
static const onnx_node *router_projection(onnx_model *m, const char *value)
{
    static const char *const pass[] = {"Reshape", "Add", "Cast", "Softmax", "Identity",
                                       "Squeeze", "Unsqueeze", "Flatten"};
    for (int depth = 0; depth < 16; depth++) {
        const onnx_node *n = producer(m, value);
        if (!n)
            return NULL;
        const char *op = onnx_node_op(n);
        bool through = false;
        for (size_t i = 0; i < sizeof pass / sizeof pass[0]; i++)
            through |= !strcmp(op, pass[i]);
        if (!through || onnx_node_input_count(n) == 0)
            return n;
        /* Add(x, bias): follow the non-initializer side */
        value = onnx_node_input(n, 0);
        if (onnx_model_find_initializer(m, value) && onnx_node_input_count(n) > 1)
            value = onnx_node_input(n, 1);
    }
    return NULL;
}

static void check_router(vctx *c, const onnx_node *moe)
{
    c->r->n_checks++;
    if (onnx_node_input_count(moe) < 2)
        return;
    const onnx_node *p = router_projection(c->m, onnx_node_input(moe, 1));
    if (!p)
        return;
    const char *op = onnx_node_op(p);
    if (!strcmp(op, "MatMulNBits")) {
        verify_add_fault(c->r, VF_ROUTER_QUANTIZED, onnx_node_name(p),
                         "the router of %s is quantized (%s is MatMulNBits): router logits must "
                         "stay a float MatMul, 4-bit rounding flips the top-k expert choice",
                         onnx_node_name(moe), onnx_node_name(p));
        return;
    }
    if (!strcmp(op, "MatMul") || !strcmp(op, "Gemm")) {
        const onnx_tensor *w = onnx_node_input_count(p) > 1
                                   ? onnx_model_find_initializer(c->m, onnx_node_input(p, 1))
                                   : NULL;
        int t = w ? onnx_tensor_elem_type(w) : 0;
        if (w && t != ONNX_FLOAT && t != ONNX_FLOAT16 && t != ONNX_BFLOAT16)
            verify_add_fault(c->r, VF_ROUTER_QUANTIZED, onnx_node_name(p),
                             "the router weight %s of %s is %s, not a float type",
                             onnx_tensor_name(w), onnx_node_name(moe), onnx_dtype_name(t));
    }
}

/* Name-based: the router, shared_expert_gate and other must-stay-float projections. */
static void check_float_only_linears(vctx *c)
{
    c->r->n_checks++;
    for (size_t i = 0; i < onnx_model_node_count(c->m); i++) {
        const onnx_node *n = onnx_model_node(c->m, i);
        if (strcmp(onnx_node_op(n), "MatMulNBits"))
            continue;
        vrole role;
        int64_t N = 0;
        onnx_node_attr_int(n, "N", &N);
        bool named_float = vnames_linear(onnx_node_name(n), c->md, NULL, &role, NULL, NULL, 0) &&
                           role != VROLE_LINEAR;
        /* a [1, H] projection is a gate whatever its name */
        if (named_float || N == 1)
            verify_add_fault(c->r, VF_ROUTER_QUANTIZED, onnx_node_name(n),
                             "%s is quantized (MatMulNBits, N=%lld): the %s must stay a float "
                             "MatMul",
                             onnx_node_name(n), (long long)N,
                             named_float && role == VROLE_ROUTER ? "router"
                                                                 : "shared-expert / gate projection");
    }
}

/* ------------------------------------------------------------------ QMoE / MoE attributes */

static void attr_fault(vctx *c, const onnx_node *n, const char *fmt, const char *attr,
                       double got, double want)
{
    char msg[256];
    snprintf(msg, sizeof msg, fmt, attr, got, want);
    verify_add_fault(c->r, VF_QMOE_ATTR, onnx_node_name(n), "%s: %s", onnx_node_name(n), msg);
}

static void check_float_attr(vctx *c, const onnx_node *n, const char *attr, float want,
                             bool absent_ok_if_zero)
{
    float v;
    c->r->n_checks++;
    if (!onnx_node_attr_float(n, attr, &v)) {
        if (absent_ok_if_zero && want == 0.0f)
            return;
        verify_add_fault(c->r, VF_QMOE_ATTR, onnx_node_name(n),
                         "%s: attribute %s is missing, config.json needs %g", onnx_node_name(n),
                         attr, (double)want);
        return;
    }
    if (fabsf(v - want) > 1e-6f * (fabsf(want) + 1.0f))
        attr_fault(c, n, "attribute %s is %g, config.json needs %g", attr, v, want);
}

/* The exporter's way around ONNX Runtime's float MoE bug with normalize_routing_weights=0: the
 * renormalised output times the top-k probability mass, a Mul named .../moe/topk_mass/Mul in
 * the same layer whose inputs are the MoE output and that mass. */
static bool has_topk_mass_scale(const vctx *c, const onnx_node *moe)
{
    char want[512];
    const char *name = onnx_node_name(moe), *slash = strrchr(name, '/');
    if (!slash || (size_t)(slash - name) + 20 >= sizeof want)
        return false;
    snprintf(want, sizeof want, "%.*s/topk_mass/Mul", (int)(slash - name), name);
    const onnx_node *mul = onnx_model_find_node(c->m, want);
    if (!mul || onnx_node_input_count(mul) != 2)
        return false;
    return !strcmp(onnx_node_input(mul, 0), onnx_node_output(moe, 0));
}

/* k, activation, fusion and the SwiGLU constants from config.json (gpt-oss: clamped, alpha
 * 1.702, beta 1; plain SwiGLU: no limit, alpha 1, beta 0 — which the op's defaults give, so beta 0
 * may be absent). */
static void check_expert_activation(vctx *c, const onnx_node *n)
{
    const model_desc *md = c->md;
    int64_t k = -1, fusion = -1;
    const char *act = "";
    onnx_node_attr_int(n, "k", &k);
    onnx_node_attr_string(n, "activation_type", &act);
    onnx_node_attr_int(n, "swiglu_fusion", &fusion);
    c->r->n_checks += 5; /* k, activation, fusion, the SwiGLU constants */
    if (k != md->top_k)
        attr_fault(c, n, "attribute %s is %g, config.json num_experts_per_tok is %g", "k",
                   (double)k, md->top_k);
    if (strcmp(act, "swiglu"))
        verify_add_fault(c->r, VF_QMOE_ATTR, onnx_node_name(n),
                         "%s: activation_type is \"%s\", the experts are SwiGLU (\"swiglu\")",
                         onnx_node_name(n), act);
    if (fusion != 1)
        attr_fault(c, n, "attribute %s is %g, expected %g (interleaved gate/up rows)",
                   "swiglu_fusion", (double)fusion, 1);
    if (md->swiglu_limit != 0.0f) {
        check_float_attr(c, n, "swiglu_limit", md->swiglu_limit, false);
    } else {
        float lim;
        if (onnx_node_attr_float(n, "swiglu_limit", &lim) && lim != 0.0f && !isinf(lim))
            attr_fault(c, n, "attribute %s is %g, plain SwiGLU has no limit (%g)",
                       "swiglu_limit", lim, 0);
    }
    check_float_attr(c, n, "activation_alpha", md->swiglu_alpha, false);
    check_float_attr(c, n, "activation_beta", md->swiglu_beta, md->swiglu_beta == 0.0f);
}

/* norm_topk_prob (always set for gpt-oss and Qwen3.5) renormalises over the top k; without it,
 * QMoE needs router_weights and the float MoE either attribute 0 or the top-k mass scale. */
static void check_routing(vctx *c, const onnx_node *n, bool q)
{
    int64_t norm = 0;
    onnx_node_attr_int(n, "normalize_routing_weights", &norm);
    c->r->n_checks++;
    bool renorm = c->md->norm_topk_prob;
    bool router_weights = q && onnx_node_input_count(n) > QMOE_IN_ROUTER_WEIGHTS &&
                          onnx_node_input(n, QMOE_IN_ROUTER_WEIGHTS)[0];
    if (renorm && norm != 1)
        attr_fault(c, n, "attribute %s is %g, the model renormalises the top-k weights (%g)",
                   "normalize_routing_weights", (double)norm, 1);
    if (!renorm && norm != 0 && !(norm == 1 && !q && has_topk_mass_scale(c, n)))
        attr_fault(c, n, "attribute %s is %g, norm_topk_prob=false needs %g (or 1 with the "
                   "output scaled by the top-k mass)", "normalize_routing_weights", (double)norm, 0);
    if (!renorm && q && !router_weights)
        verify_add_fault(c->r, VF_QMOE_ATTR, onnx_node_name(n),
                         "%s: norm_topk_prob=false needs router_weights (input 14): the QMoE "
                         "kernel renormalises the top-k weights without them",
                         onnx_node_name(n));
}

static void check_qmoe_fp4(vctx *c, const onnx_node *n, int64_t bs)
{
    if (!c->cuda)
        verify_add_fault(c->r, VF_QMOE_ATTR, onnx_node_name(n),
                         "%s: quant_type fp4 in a CPU folder: ONNX Runtime's CPU QMoE has no "
                         "fp4 kernel", onnx_node_name(n));
    if (bs != ORT_MXFP4_BLOCK && bs != 0)
        attr_fault(c, n, "attribute %s is %g, MXFP4 blocks are %g", "block_size", (double)bs,
                   ORT_MXFP4_BLOCK);
    if (onnx_node_input_count(n) < QMOE_N_INPUTS ||
        !onnx_node_input(n, QMOE_IN_FC1_GLOBAL_SCALE)[0] ||
        !onnx_node_input(n, QMOE_IN_FC2_GLOBAL_SCALE)[0])
        verify_add_fault(c->r, VF_QMOE_ATTR, onnx_node_name(n),
                         "%s: quant_type fp4 needs fc1/fc2 global scales (inputs 15, 16)",
                         onnx_node_name(n));
}

static void check_qmoe_int(vctx *c, const onnx_node *n, int64_t bits, int64_t bs)
{
    const model_desc *md = c->md;
    if (bits != 4 && bits != 8)
        attr_fault(c, n, "attribute %s is %g, QMoE supports 4 or 8 (%g)", "expert_weight_bits",
                   (double)bits, 4);
    int64_t I = md->moe_intermediate_size > 0 ? md->moe_intermediate_size : md->intermediate_size;
    m2o_err why;
    /* no block_size (or <= 0): per-channel scales [E, N]; only the CUDA width rule applies */
    int rule = 0;
    if (bs > 0)
        rule = ort_qmoe_int_rule(c->cuda, (int)bs, md->hidden_size, I, &why);
    else if (c->cuda && (md->hidden_size % ORT_QMOE_CUDA_WIDTH_MULTIPLE || I % ORT_QMOE_CUDA_WIDTH_MULTIPLE))
        rule = m2o_fail(&why, "the CUDA QMoE needs widths multiple of %d", ORT_QMOE_CUDA_WIDTH_MULTIPLE);
    bool zp = (onnx_node_input_count(n) > QMOE_IN_FC1_ZERO_POINTS && onnx_node_input(n, QMOE_IN_FC1_ZERO_POINTS)[0]) ||
              (onnx_node_input_count(n) > QMOE_IN_FC2_ZERO_POINTS && onnx_node_input(n, QMOE_IN_FC2_ZERO_POINTS)[0]);
    if (!rule && zp)
        rule = ort_qmoe_zero_point_rule(c->cuda, (int)bits, (int)bs, md->hidden_size, I, &why);
    if (rule)
        verify_add_fault(c->r, VF_QMOE_ATTR, onnx_node_name(n), "%s: block_size %lld: %s",
                         onnx_node_name(n), (long long)bs, why.msg);
    int64_t prepacked = -1;
    if (!c->cuda && onnx_node_attr_int(n, "weights_prepacked", &prepacked) && prepacked == 1)
        verify_add_note(c->r, "%s: weights_prepacked=1 in a CPU folder (the CPU kernel ignores "
                              "it and reads the raw layout; verified as raw)", onnx_node_name(n));
    const onnx_tensor *s = onnx_node_input_count(n) > QMOE_IN_FC1_SCALES
                               ? onnx_model_find_initializer(c->m, onnx_node_input(n, QMOE_IN_FC1_SCALES))
                               : NULL;
    if (c->cuda && s && onnx_tensor_elem_type(s) == ONNX_FLOAT)
        verify_add_fault(c->r, VF_QMOE_ATTR, onnx_node_name(n),
                         "%s: float32 scales in a CUDA folder: the CUDA QMoE runs float16 or "
                         "bfloat16 only", onnx_node_name(n));
}

static void check_moe_attrs(vctx *c, const onnx_node *n)
{
    bool q = !strcmp(onnx_node_op(n), "QMoE");
    check_expert_activation(c, n);
    check_routing(c, n, q);
    if (!q)
        return;
    const vqmoe_attrs a = vqmoe_attrs_read(n);
    c->r->n_checks += 3;
    if (!strcmp(a.quant_type, "fp4"))
        check_qmoe_fp4(c, n, a.block_size);
    else if (!strcmp(a.quant_type, "int"))
        check_qmoe_int(c, n, a.bits, a.block_size);
    else
        verify_add_fault(c->r, VF_QMOE_ATTR, onnx_node_name(n),
                         "%s: quant_type \"%s\" is neither \"int\" nor \"fp4\"",
                         onnx_node_name(n), a.quant_type);
}

/* Exactly one MoE/QMoE per sparse layer. */
static void check_moe_coverage(vctx *c)
{
    const model_desc *md = c->md;
    int count[MD_MAX_LAYERS] = {0};
    for (size_t i = 0; i < onnx_model_node_count(c->m); i++) {
        const onnx_node *n = onnx_model_node(c->m, i);
        const char *op = onnx_node_op(n);
        if (strcmp(op, "QMoE") && strcmp(op, "MoE"))
            continue;
        int L = vnames_layer(onnx_node_name(n));
        if (L >= 0 && L < md->num_layers && L < MD_MAX_LAYERS)
            count[L]++;
        check_moe_attrs(c, n);
        check_router(c, n);
    }
    c->r->n_checks++;
    for (int L = 0; L < md->num_layers && L < MD_MAX_LAYERS; L++) {
        bool sparse = md->sparse_layer[L];
        if (sparse && count[L] != 1)
            verify_add_fault(c->r, VF_GRAPH, "", "layer %d is a mixture-of-experts layer in "
                             "config.json but the graph has %d MoE/QMoE nodes for it", L,
                             count[L]);
        else if (!sparse && count[L])
            verify_add_fault(c->r, VF_GRAPH, "", "layer %d is dense in config.json but the "
                             "graph has %d MoE/QMoE nodes for it", L, count[L]);
    }
}

/* What ONNX Runtime checks only when the node runs (onnx/ort_rules.h): head size and the
 * rotary width its cos_cache (input 7) implies. */
static void check_gqa_run_rules(vctx *c, const onnx_node *n, int64_t heads, int64_t kv_heads)
{
    int64_t rotary = 0;
    onnx_node_attr_int(n, "do_rotary", &rotary);
    m2o_err why;
    c->r->n_checks++;
    if (!rotary) {
        if (ort_gqa_rule((int)heads, (int)kv_heads, c->md->head_dim, 0, &why))
            verify_add_fault(c->r, VF_GRAPH, onnx_node_name(n),
                             "%s: ONNX Runtime would refuse it at run time: %s",
                             onnx_node_name(n), why.msg);
        return;
    }
    const onnx_tensor *cos = onnx_node_input_count(n) > 7
                                 ? onnx_model_find_initializer(c->m, onnx_node_input(n, 7))
                                 : NULL;
    if (!cos || onnx_tensor_ndim(cos) != 2) {
        verify_add_fault(c->r, VF_GRAPH, onnx_node_name(n),
                         "%s: cos_cache (input 7) is not a 2-D initializer", onnx_node_name(n));
        return;
    }
    if (ort_gqa_rule((int)heads, (int)kv_heads, c->md->head_dim,
                     (int)(2 * onnx_tensor_dims(cos)[1]), &why))
        verify_add_fault(c->r, VF_GRAPH, onnx_node_name(n),
                         "%s: ONNX Runtime would refuse it at run time: %s", onnx_node_name(n),
                         why.msg);
}

static void check_attention(vctx *c)
{
    const model_desc *md = c->md;
    for (size_t i = 0; i < onnx_model_node_count(c->m); i++) {
        const onnx_node *n = onnx_model_node(c->m, i);
        if (strcmp(onnx_node_op(n), "GroupQueryAttention"))
            continue;
        int64_t h = -1, kv = -1, win = -1;
        onnx_node_attr_int(n, "num_heads", &h);
        onnx_node_attr_int(n, "kv_num_heads", &kv);
        onnx_node_attr_int(n, "local_window_size", &win);
        c->r->n_checks += 2;
        if (h != md->num_heads || kv != md->num_kv_heads)
            verify_add_fault(c->r, VF_GRAPH, onnx_node_name(n),
                             "%s: num_heads %lld / kv_num_heads %lld, config.json has %d / %d",
                             onnx_node_name(n), (long long)h, (long long)kv, md->num_heads,
                             md->num_kv_heads);
        check_gqa_run_rules(c, n, h, kv);
        int L = vnames_layer(onnx_node_name(n));
        if (L < 0 || L >= md->num_layers)
            continue;
        bool sliding = md->layer_type[L] == LAYER_SLIDING_ATTENTION && md->sliding_window > 0;
        if (sliding ? win <= 0 : win > 0)
            verify_add_fault(c->r, VF_GRAPH, onnx_node_name(n),
                             "%s: local_window_size %lld but layer %d is %s in config.json",
                             onnx_node_name(n), (long long)win, L,
                             sliding ? "sliding_attention" : "full attention");
    }
}

static void check_opsets(vctx *c)
{
    bool contrib = false, e8m0 = false;
    for (size_t i = 0; i < onnx_model_node_count(c->m); i++)
        contrib |= !strcmp(onnx_node_domain(onnx_model_node(c->m, i)), "com.microsoft");
    for (size_t i = 0; i < onnx_model_initializer_count(c->m); i++)
        e8m0 |= onnx_tensor_elem_type(onnx_model_initializer(c->m, i)) == ONNX_FLOAT8E8M0;
    c->r->n_checks += 2;
    if (contrib && onnx_model_opset(c->m, "com.microsoft") < 1)
        verify_add_fault(c->r, VF_GRAPH, "", "the graph uses com.microsoft operators but does "
                         "not import the com.microsoft opset");
    if (e8m0 && onnx_model_ir_version(c->m) < 11)
        verify_add_fault(c->r, VF_GRAPH, "", "FLOAT8E8M0 tensors need IR version 11, the model "
                         "declares %lld", (long long)onnx_model_ir_version(c->m));
}

/* ONNX Runtime refuses TopK on bfloat16 at load: in a bfloat16 graph every TopK must read a
 * float32 value (the exporter casts the top-k mass branch: Cast(to float) → Softmax → TopK). */
static void check_topk_dtype(vctx *c)
{
    bool bf16 = false;
    for (size_t i = 0; i < onnx_model_input_count(c->m) && !bf16; i++)
        bf16 = onnx_value_elem_type(onnx_model_input(c->m, i)) == ONNX_BFLOAT16;
    if (!bf16)
        return;
    for (size_t i = 0; i < onnx_model_node_count(c->m); i++) {
        const onnx_node *n = onnx_model_node(c->m, i);
        if (strcmp(onnx_node_op(n), "TopK"))
            continue;
        c->r->n_checks++;
        const onnx_node *p = producer(c->m, onnx_node_input(n, 0));
        while (p && !strcmp(onnx_node_op(p), "Softmax"))
            p = producer(c->m, onnx_node_input(p, 0));
        int64_t to = 0;
        if (!p || strcmp(onnx_node_op(p), "Cast") || !onnx_node_attr_int(p, "to", &to) ||
            to != ONNX_FLOAT)
            verify_add_fault(c->r, VF_GRAPH, onnx_node_name(n),
                             "%s: TopK in a bfloat16 graph must read float32 (ONNX Runtime has "
                             "no bfloat16 TopK and refuses the model at load)", onnx_node_name(n));
    }
}

int vcheck_graph(vctx *c, m2o_err *err)
{
    if (check_unique_names(c, err))
        return -1;
    check_float_only_linears(c);
    check_moe_coverage(c);
    check_attention(c);
    check_topk_dtype(c);
    check_opsets(c);
    return 0;
}

/* ------------------------------------------------------------------ genai_config.json */

static const cJSON *path(const cJSON *root, const char *a, const char *b, const char *d)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(root, a);
    if (x && b)
        x = cJSON_GetObjectItemCaseSensitive(x, b);
    if (x && d)
        x = cJSON_GetObjectItemCaseSensitive(x, d);
    return x;
}

static void genai_fault(vctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void genai_fault(vctx *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    verify_add_fault(c->r, VF_GENAI_CONFIG, "genai_config.json", "genai_config.json: %s", msg);
}

static void expect_number(vctx *c, const cJSON *dec, const char *key, double want,
                          const char *what)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(dec, key);
    c->r->n_checks++;
    if (!cJSON_IsNumber(v))
        genai_fault(c, "model.decoder.%s is missing (config.json %s is %g)", key, what, want);
    else if (v->valuedouble != want)
        genai_fault(c, "model.decoder.%s is %g, config.json %s is %g", key, v->valuedouble, what,
                    want);
}

static const char *string_at(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A per-layer name pattern ("past_key_values.%d.key") must name a graph input/output for every
 * attention layer, and nothing else. */
static void check_kv_names(vctx *c, const char *pattern, const char *key, bool input)
{
    c->r->n_checks++;
    if (!pattern || !strstr(pattern, "%d")) {
        genai_fault(c, "decoder.%s.%s is %s%s%s, expected a pattern with %%d",
                    input ? "inputs" : "outputs", key, pattern ? "\"" : "",
                    pattern ? pattern : "missing", pattern ? "\"" : "");
        return;
    }
    const model_desc *md = c->md;
    for (int L = 0; L < md->num_layers; L++) {
        char name[256];
        /* the pattern comes from the file: substitute %d by hand, never hand it to printf */
        const char *d = strstr(pattern, "%d");
        snprintf(name, sizeof name, "%.*s%d%s", (int)(d - pattern), pattern, L, d + 2);
        bool attn = md->layer_type[L] != LAYER_LINEAR_ATTENTION;
        const onnx_value *v = input ? onnx_model_find_input(c->m, name)
                                    : onnx_model_find_output(c->m, name);
        if (attn && !v) {
            genai_fault(c, "decoder.%s.%s names \"%s\" for attention layer %d, the graph has no "
                           "such %s", input ? "inputs" : "outputs", key, name, L,
                        input ? "input" : "output");
            return;
        }
        if (!attn || !v)
            continue;
        int64_t kvh = onnx_value_ndim(v) == 4 ? onnx_value_dim(v, 1) : -1;
        int64_t hd = onnx_value_ndim(v) == 4 ? onnx_value_dim(v, 3) : -1;
        if (onnx_value_ndim(v) != 4 || (kvh >= 0 && kvh != md->num_kv_heads) ||
            (hd >= 0 && hd != md->head_dim)) {
            genai_fault(c, "%s \"%s\" is not [batch, %d kv heads, seq, %d head_dim]",
                        input ? "input" : "output", name, md->num_kv_heads, md->head_dim);
            return;
        }
    }
}

static void check_io_name(vctx *c, const cJSON *o, const char *key, bool input)
{
    const char *name = string_at(o, key);
    c->r->n_checks++;
    if (!name) {
        genai_fault(c, "decoder.%s.%s is missing", input ? "inputs" : "outputs", key);
        return;
    }
    if (!(input ? onnx_model_find_input(c->m, name) : onnx_model_find_output(c->m, name)))
        genai_fault(c, "decoder.%s.%s is \"%s\", the graph has no such %s",
                    input ? "inputs" : "outputs", key, name, input ? "input" : "output");
}

/* True when layer L's GroupQueryAttention indexes its KV cache relative to a window-sized buffer. */
static bool gqa_indexes_window_cache(vctx *c, int L)
{
    for (size_t i = 0; i < onnx_model_node_count(c->m); i++) {
        const onnx_node *n = onnx_model_node(c->m, i);
        int64_t on = 0;
        if (!strcmp(onnx_node_op(n), "GroupQueryAttention") && vnames_layer(onnx_node_name(n)) == L)
            return onnx_node_attr_int(n, "sliding_window_cache", &on) && on == 1;
    }
    return false;
}

static void check_sliding(vctx *c, const cJSON *dec)
{
    const model_desc *md = c->md;
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(dec, "sliding_window");
    if (!sw)
        return;
    c->r->n_checks++;
    const cJSON *ws = cJSON_GetObjectItemCaseSensitive(sw, "window_size");
    if (!cJSON_IsNumber(ws) || ws->valuedouble != md->sliding_window)
        genai_fault(c, "decoder.sliding_window.window_size is %g, config.json sliding_window is %d",
                    cJSON_IsNumber(ws) ? ws->valuedouble : -1.0, md->sliding_window);
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(sw, "layers");
    if (!cJSON_IsArray(layers))
        return;
    int expect = 0;
    for (int L = 0; L < md->num_layers; L++)
        expect += md->layer_type[L] == LAYER_SLIDING_ATTENTION;
    int got = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, layers)
    {
        int L = cJSON_IsNumber(it) ? it->valueint : -1;
        got++;
        if (L < 0 || L >= md->num_layers || md->layer_type[L] != LAYER_SLIDING_ATTENTION) {
            genai_fault(c, "decoder.sliding_window.layers lists %d, which is not a "
                           "sliding_attention layer in config.json", L);
            return;
        }
        if (!gqa_indexes_window_cache(c, L)) {
            genai_fault(c, "decoder.sliding_window.layers lists %d, whose GroupQueryAttention has "
                           "no sliding_window_cache=1: onnxruntime-genai gives it a window-sized "
                           "cache the op would index as a whole-sequence one", L);
            return;
        }
    }
    if (got != expect)
        genai_fault(c, "decoder.sliding_window.layers lists %d layers, config.json has %d "
                       "sliding_attention layers", got, expect);
}

/* True when name is one of o's string values, or matches one with "%d" standing for a layer. */
static bool named_by(const cJSON *o, const char *name)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, o)
    {
        const char *v = cJSON_IsString(it) ? it->valuestring : NULL;
        const char *d = v ? strstr(v, "%d") : NULL;
        if (v && !d && !strcmp(v, name))
            return true;
        if (!d || strncmp(name, v, (size_t)(d - v)))
            continue;
        const char *p = name + (d - v), *q = p;
        while (*q >= '0' && *q <= '9')
            q++;
        if (q > p && !strcmp(q, d + 2))
            return true;
    }
    return false;
}

/* onnxruntime-genai names linear-attention states after the KV template: the last ".key" of
 * past_key_names / present_key_names replaced by ".conv_state" and ".recurrent_state"
 * (src/models/recurrent_state.cpp). True when name is one of those for some layer. */
static bool named_as_state(const cJSON *o, const char *key_template_key, const char *name)
{
    const char *t = string_at(o, key_template_key);
    const char *dot = t ? strrchr(t, '.') : NULL;
    if (!dot)
        return false;
    static const char *const suffixes[] = {"conv_state", "recurrent_state"};
    for (size_t k = 0; k < 2; k++) {
        char buf[256];
        snprintf(buf, sizeof buf, "%.*s%s", (int)(dot - t + 1), t, suffixes[k]);
        cJSON *one = cJSON_CreateObject();
        cJSON_AddStringToObject(one, "t", buf);
        bool hit = named_by(one, name);
        cJSON_Delete(one);
        if (hit)
            return true;
    }
    return false;
}

/* onnxruntime-genai feeds and reads only what genai_config.json names: a graph input it does not
 * know is never fed (the session fails), an output it does not know is computed for nothing. */
static void check_io_covered(vctx *c, const cJSON *in, const cJSON *out)
{
    c->r->n_checks += 2;
    for (size_t i = 0; i < onnx_model_input_count(c->m); i++) {
        const char *name = onnx_value_name(onnx_model_input(c->m, i));
        if (!named_by(in, name) && !named_as_state(in, "past_key_names", name)) {
            genai_fault(c, "graph input \"%s\" is not named in decoder.inputs: onnxruntime-genai "
                           "would not feed it", name);
            return;
        }
    }
    for (size_t i = 0; i < onnx_model_output_count(c->m); i++) {
        const char *name = onnx_value_name(onnx_model_output(c->m, i));
        if (!named_by(out, name) && !named_as_state(out, "present_key_names", name)) {
            genai_fault(c, "graph output \"%s\" is not named in decoder.outputs", name);
            return;
        }
    }
}

/* decoder.filename, the sizes, model.vocab_size and model.type against config.json. */
static void check_decoder_fields(vctx *c, const cJSON *model, const cJSON *dec,
                                 const char *model_filename)
{
    const model_desc *md = c->md;
    const char *fn = string_at(dec, "filename");
    if (!fn || strcmp(fn, model_filename))
        genai_fault(c, "decoder.filename is %s, expected \"%s\"", fn ? fn : "missing",
                    model_filename);
    expect_number(c, dec, "head_size", md->head_dim, "head_dim");
    expect_number(c, dec, "hidden_size", md->hidden_size, "hidden_size");
    expect_number(c, dec, "num_attention_heads", md->num_heads, "num_attention_heads");
    expect_number(c, dec, "num_key_value_heads", md->num_kv_heads, "num_key_value_heads");
    expect_number(c, dec, "num_hidden_layers", md->num_layers, "num_hidden_layers");
    const cJSON *vs = cJSON_GetObjectItemCaseSensitive(model, "vocab_size");
    c->r->n_checks++;
    if (!cJSON_IsNumber(vs) || vs->valuedouble != md->vocab_size)
        genai_fault(c, "model.vocab_size is %g, config.json vocab_size is %d",
                    cJSON_IsNumber(vs) ? vs->valuedouble : -1.0, md->vocab_size);
    const char *type = string_at(model, "type");
    c->r->n_checks++;
    if (!type)
        genai_fault(c, "model.type is missing");
    else if (strcmp(type, genai_model_type(md)))
        genai_fault(c, "model.type is \"%s\", onnxruntime-genai runs this text decoder as \"%s\"",
                    type, genai_model_type(md));
}

/* decoder.inputs / decoder.outputs name the graph's inputs, outputs and KV caches. */
static void check_decoder_io(vctx *c, const cJSON *dec, const cJSON *in, const cJSON *out)
{
    check_io_name(c, in, "input_ids", true);
    check_io_name(c, in, "attention_mask", true);
    /* exclude_lm_head=true exports (as onnxruntime-genai's builder) end in hidden_states */
    bool no_head = !string_at(out, "logits") && string_at(out, "hidden_states");
    check_io_name(c, out, no_head ? "hidden_states" : "logits", false);
    if (!no_head && string_at(out, "hidden_states"))
        check_io_name(c, out, "hidden_states", false);
    check_kv_names(c, string_at(in, "past_key_names"), "past_key_names", true);
    check_kv_names(c, string_at(in, "past_value_names"), "past_value_names", true);
    check_kv_names(c, string_at(out, "present_key_names"), "present_key_names", false);
    check_kv_names(c, string_at(out, "present_value_names"), "present_value_names", false);
    check_sliding(c, dec);
    check_io_covered(c, in, out);
}

/* The logits output (as decoder.outputs names it) has vocab_size columns. */
static void check_logits_width(vctx *c, const cJSON *out)
{
    const onnx_value *logits = onnx_model_find_output(c->m, string_at(out, "logits") ?
                                                                 string_at(out, "logits") : "logits");
    c->r->n_checks++;
    if (logits && onnx_value_ndim(logits) == 3 && onnx_value_dim(logits, 2) >= 0 &&
        onnx_value_dim(logits, 2) != c->md->vocab_size)
        genai_fault(c, "graph output logits has %lld columns, config.json vocab_size is %d",
                    (long long)onnx_value_dim(logits, 2), c->md->vocab_size);
}

int vcheck_genai(vctx *c, const cJSON *root, const char *model_filename, m2o_err *err)
{
    (void)err;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *dec = path(root, "model", "decoder", NULL);
    c->r->n_checks++;
    if (!cJSON_IsObject(model) || !cJSON_IsObject(dec)) {
        genai_fault(c, "model.decoder is missing");
        return 0;
    }
    check_decoder_fields(c, model, dec, model_filename);
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(dec, "inputs");
    const cJSON *out = cJSON_GetObjectItemCaseSensitive(dec, "outputs");
    if (!cJSON_IsObject(in) || !cJSON_IsObject(out)) {
        genai_fault(c, "decoder.inputs / decoder.outputs are missing");
        return 0;
    }
    check_decoder_io(c, dec, in, out);
    check_logits_width(c, out);
    return 0;
}
