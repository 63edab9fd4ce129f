/* Every initializer of the graph is accounted for. tensors.c verifies the weights its nodes
 * quantize (and the float MatMul weights); this file verifies the rest against what the
 * checkpoint or config.json implies, and fails any initializer that no check knows:
 *   float copies (embedding, norms, biases, sinks, Gated DeltaNet parameters): each element must
 *     equal the checkpoint value (plus the architecture's norm offset) rounded to the stored type;
 *     -exp(A_log) within 2 float32 ulps; a QMoE expert bias either copied or, element for
 *     element, the checkpoint's bias through the experts' int quantization and back
 *     (qmoe_quantize_bias; quant/'s reference kernels);
 *   constants: QMoE global scales (1), the L2-norm weights (1/sqrt(dk)), int64 shape constants
 *     (their value is their name);
 *   rotary caches: recomputed in float64 from config.json (rope_theta, partial rotary, linear and
 *     YaRN scaling) and compared within float32's phase rounding plus the stored type's rounding.
 * Large copies (the embedding) are compared in chunks, dropping the pages read. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/half.h"
#include "common/threadpool.h"
#include "onnx/graph.h"
#include "quant/quant.h"
#include "verify/compare.h"
#include "verify/verify_internal.h"

#define CHUNK_ELEMS ((int64_t)1 << 20)

typedef enum vxform {
    VX_COPY,        /* parts concatenated */
    VX_NORM,        /* + the architecture's RMSNorm offset (Qwen3.5: 1) */
    VX_NEG_EXP,     /* -exp(x) in float32 */
    VX_EXPERT_BIAS, /* copy, or int-quantized and back like the experts (qmoe_quantize_bias) */
} vxform;

typedef struct vinit_rule {
    const char *pattern; /* initializer name, one %d = layer */
    vxform xf;
    const char *parts[3]; /* checkpoint names, {p} prefix, {L} layer */
} vinit_rule;

static const vinit_rule kRules[] = {
    {"model.embed_tokens.weight", VX_COPY, {"{p}embed_tokens.weight"}},
    {"model.layers.%d.input_layernorm.weight", VX_NORM, {"{p}layers.{L}.input_layernorm.weight"}},
    {"model.layers.%d.post_attention_layernorm.weight", VX_NORM,
     {"{p}layers.{L}.post_attention_layernorm.weight"}},
    {"model.layers.%d.final_norm_layernorm.weight", VX_NORM, {"{p}norm.weight"}},
    {"model.layers.%d.attn.qkv_proj.Add.bias", VX_COPY,
     {"{p}layers.{L}.self_attn.q_proj.bias", "{p}layers.{L}.self_attn.k_proj.bias",
      "{p}layers.{L}.self_attn.v_proj.bias"}},
    {"model.layers.%d.attn.q_proj.Add.bias", VX_COPY, {"{p}layers.{L}.self_attn.q_proj.bias"}},
    {"model.layers.%d.attn.k_proj.Add.bias", VX_COPY, {"{p}layers.{L}.self_attn.k_proj.bias"}},
    {"model.layers.%d.attn.v_proj.Add.bias", VX_COPY, {"{p}layers.{L}.self_attn.v_proj.bias"}},
    {"model.layers.%d.attn.o_proj.Add.bias", VX_COPY, {"{p}layers.{L}.self_attn.o_proj.bias"}},
    {"model.layers.%d.attn.sinks", VX_COPY, {"{p}layers.{L}.self_attn.sinks"}},
    {"model.layers.%d.attn.q_norm.layernorm.weight", VX_NORM,
     {"{p}layers.{L}.self_attn.q_norm.weight"}},
    {"model.layers.%d.attn.k_norm.layernorm.weight", VX_NORM,
     {"{p}layers.{L}.self_attn.k_norm.weight"}},
    {"model.layers.%d.moe.router.Add.bias", VX_COPY, {"{p}layers.{L}.mlp.router.bias"}},
    {"model.layers.%d.moe.experts.gate_up_proj.bias", VX_EXPERT_BIAS,
     {"{p}layers.{L}.mlp.experts.gate_up_proj_bias"}},
    {"model.layers.%d.moe.experts.down_proj.bias", VX_EXPERT_BIAS,
     {"{p}layers.{L}.mlp.experts.down_proj_bias"}},
    {"model.layers.%d.linear_attn.conv1d.weight", VX_COPY,
     {"{p}layers.{L}.linear_attn.conv1d.weight"}},
    {"model.layers.%d.linear_attn.conv1d.bias", VX_COPY, {"{p}layers.{L}.linear_attn.conv1d.bias"}},
    {"model.layers.%d.linear_attn.dt_bias", VX_COPY, {"{p}layers.{L}.linear_attn.dt_bias"}},
    {"model.layers.%d.linear_attn.norm.weight", VX_COPY, {"{p}layers.{L}.linear_attn.norm.weight"}},
    {"model.layers.%d.linear_attn.neg_exp_A_log", VX_NEG_EXP, {"{p}layers.{L}.linear_attn.A_log"}},
};

/* ------------------------------------------------------------------ helpers */


/* x rounded to type (nearest even), as a double. */
static double round_to(float x, int type)
{
    return type == ONNX_FLOAT16 ? f16_to_f32(f32_to_f16(x))
           : type == ONNX_BFLOAT16 ? bf16_to_f32(f32_to_bf16(x)) : x;
}

/* Half an ulp of |v| in type (at least half its smallest subnormal). */
static double half_ulp(double v, int type)
{
    int ex = 0;
    if (v != 0)
        frexp(fabs(v), &ex);
    double b = ldexp(vx_type_unit(type), ex - 1);
    double lo = type == ONNX_FLOAT16 ? ldexp(1.0, -25) : type == ONNX_BFLOAT16 ? ldexp(1.0, -134)
                                                                             : ldexp(1.0, -150);
    return b > lo ? b : lo;
}

static bool is_float(int t)
{
    return t == ONNX_FLOAT || t == ONNX_FLOAT16 || t == ONNX_BFLOAT16;
}

static int init_data(vctx *c, const onnx_tensor *t, const void **p, m2o_err *err)
{
    size_t len;
    if (onnx_model_tensor_data(c->m, t, p, &len, err))
        return -1;
    if (len != (size_t)vnumel(t) * onnx_dtype_size(onnx_tensor_elem_type(t)))
        return m2o_fail(err, "initializer %s: %zu data bytes for %lld elements",
                        onnx_tensor_name(t), len, (long long)vnumel(t));
    return 0;
}

/* The first element out of bounds, for the fault message. */
typedef struct vfirst {
    int64_t n_bad, index;
    double got, want, bound;
} vfirst;

static void note_bad(vfirst *f, int64_t i, double got, double want, double bound)
{
    if (f->n_bad++ == 0) {
        f->index = i;
        f->got = got;
        f->want = want;
        f->bound = bound;
    }
}

/* Equal within bound, NaN matching NaN (a NaN the checkpoint holds, kept by
 * --allow-nonfinite), Inf matching the same Inf. */
static bool close_enough(double got, double want, double bound)
{
    if (isnan(want) || isnan(got))
        return isnan(want) && isnan(got);
    if (isinf(want) || isinf(got))
        return got == want;
    return fabs(got - want) <= bound;
}

static void value_fault(vctx *c, const onnx_tensor *t, const char *what, int64_t total,
                        const vfirst *f)
{
    verify_add_fault(c->r, VF_VALUE, onnx_tensor_name(t),
                     "%s: %lld of %lld elements differ from %s (first: element %lld is %.9g, "
                     "expected %.9g, allowed error %.3g)",
                     onnx_tensor_name(t), (long long)f->n_bad, (long long)total, what,
                     (long long)f->index, f->got, f->want, f->bound);
}

/* ------------------------------------------------------------------ checkpoint copies */

static void expand(const char *spec, const model_desc *md, int layer, char *out, size_t len)
{
    size_t o = 0;
    for (const char *s = spec; *s && o + 1 < len;) {
        if (!strncmp(s, "{p}", 3)) {
            o += (size_t)snprintf(out + o, len - o, "%s", md->prefix);
            s += 3;
        } else if (!strncmp(s, "{L}", 3)) {
            o += (size_t)snprintf(out + o, len - o, "%d", layer);
            s += 3;
        } else {
            out[o++] = *s++;
        }
        if (o >= len)
            o = len - 1;
    }
    out[o] = 0;
}

/* The layer a name matches pattern with (0 when the pattern has none), or -1. */
static int match(const char *pattern, const char *name)
{
    const char *d = strstr(pattern, "%d");
    if (!d)
        return strcmp(pattern, name) ? -1 : 0;
    size_t pre = (size_t)(d - pattern);
    if (strncmp(pattern, name, pre))
        return -1;
    char *end;
    long v = strtol(name + pre, &end, 10);
    if (end == name + pre || v < 0 || v > 1000000 || strcmp(end, d + 2))
        return -1;
    return (int)v;
}

/* The QMoE node reading bias `name`: its bits and block size, when its biases may be quantized. */
static bool expert_bias_quant(vctx *c, const char *name, int *bits, int *block)
{
    for (size_t i = 0; i < onnx_model_node_count(c->m); i++) {
        const onnx_node *n = onnx_model_node(c->m, i);
        if (strcmp(onnx_node_op(n), "QMoE"))
            continue;
        for (size_t j = 0; j < onnx_node_input_count(n); j++) {
            if (strcmp(onnx_node_input(n, j), name))
                continue;
            const vqmoe_attrs a = vqmoe_attrs_read(n);
            *bits = (int)a.bits;
            *block = (int)a.block_size;
            return strcmp(a.quant_type, "fp4") != 0;
        }
    }
    return false;
}

typedef struct vcopy {
    vxform xf;
    float offset;
    int type;
    int qbits, qblock; /* VX_EXPERT_BIAS under an int QMoE: its bits and block size */
    int64_t row;       /* VX_EXPERT_BIAS: row length (the last axis) */
} vcopy;

/* Compares a chunk of expected (checkpoint, float32) with the stored values from index i0; qdq
 * (or NULL): the same values through the experts' int quantization, a second candidate tracked
 * in fq. */
/* True when the stored bytes are exactly x (+ offset) rounded to the stored type: the common
 * case, one memcmp instead of an element-by-element comparison. */
static bool chunk_identical(const vcopy *v, const float *x, int64_t n, const void *data,
                            int64_t i0)
{
    size_t es = onnx_dtype_size(v->type);
    const uint8_t *stored = (const uint8_t *)data + (size_t)i0 * es;
    if (v->xf == VX_NEG_EXP)
        return false;
    if (v->type == ONNX_FLOAT && v->offset == 0.0f)
        return !memcmp(stored, x, (size_t)n * 4);
    uint8_t *want = malloc((size_t)n * es + 4);
    if (!want)
        return false;
    for (int64_t i = 0; i < n; i++) {
        float y = x[i] + v->offset;
        uint16_t h = v->type == ONNX_FLOAT16 ? f32_to_f16(y) : f32_to_bf16(y);
        if (v->type == ONNX_FLOAT)
            memcpy(want + 4 * i, &y, 4);
        else
            memcpy(want + 2 * i, &h, 2);
    }
    bool same = !memcmp(stored, want, (size_t)n * es);
    free(want);
    return same;
}

static void compare_chunk(const vcopy *v, const float *x, const float *qdq, int64_t n,
                          const void *data, int64_t i0, vfirst *f, vfirst *fq)
{
    if (!qdq && chunk_identical(v, x, n, data, i0))
        return;
    for (int64_t i = 0; i < n; i++) {
        double got = vx_load_float(data, v->type, i0 + i), want, bound = 0;
        switch (v->xf) {
        case VX_NEG_EXP:
            want = (float)-exp((double)x[i]);
            bound = 2 * ldexp(half_ulp(want, ONNX_FLOAT), 1); /* expf: within 2 ulps */
            break;
        case VX_NORM:
            want = round_to(x[i] + v->offset, v->type);
            break;
        default:
            want = round_to(x[i], v->type);
            break;
        }
        if (!close_enough(got, want, bound))
            note_bad(f, i0 + i, got, want, bound);
        if (qdq && !close_enough(got, round_to(qdq[i], v->type), 0))
            note_bad(fq, i0 + i, got, round_to(qdq[i], v->type), 0);
    }
}

/* x [rows][row] through symmetric int quantization (the experts' bits and block size, scales
 * rounded to the stored type) and back, with quant/'s reference kernels; NULL on failure. */
static float *quantized_copy(const vcopy *v, const float *x, int64_t total)
{
    int64_t cols = v->row, rows = cols > 0 ? total / cols : 0;
    qb_params p = {.bits = v->qbits, .block_size = v->qblock > 0 ? v->qblock : (int)cols,
                   .symmetric = true,
                   .scale_type = v->type == ONNX_FLOAT16    ? QSCALE_F16
                                 : v->type == ONNX_BFLOAT16 ? QSCALE_BF16
                                                            : QSCALE_F32};
    if (rows <= 0 || rows * cols != total || qb_check(rows, cols, &p, NULL))
        return NULL;
    float *out = malloc((size_t)total * sizeof(float));
    uint8_t *codes = malloc(qb_codes_bytes(rows, cols, &p) + 1);
    void *scales = malloc(qb_scales_count(rows, cols, &p) * qscale_size(p.scale_type) + 4);
    bool ok = out && codes && scales && !qb_quantize_ref(x, rows, cols, &p, codes, scales, NULL,
                                                         NULL) &&
              !qb_dequantize(codes, scales, NULL, rows, cols, &p, out, NULL);
    free(codes);
    free(scales);
    if (!ok) {
        free(out);
        return NULL;
    }
    return out;
}

/* One copy check on the ordered pool: a job per chunk of a part, results merged in order, so
 * the first difference named is the same for any thread count. */
typedef struct copy_run {
    const vcopy *v;
    const st_tensor *parts[3];
    int np;
    int64_t first_job[4], total;
    const void *data;
    vfirst f, fq; /* merged */
    bool qdq;     /* a quantized candidate was compared (fq holds its differences) */
} copy_run;

typedef struct copy_res {
    vfirst f, fq;
    bool qdq;
} copy_res;

static int copy_produce(void *ctx, int64_t job, void **result, m2o_err *err)
{
    const copy_run *r = ctx;
    int p = 0;
    while (job >= r->first_job[p + 1])
        p++;
    const st_tensor *t = r->parts[p];
    int64_t at = 0;
    for (int i = 0; i < p; i++)
        at += r->parts[i]->numel;
    int64_t i0 = (job - r->first_job[p]) * CHUNK_ELEMS;
    int64_t n = t->numel - i0 < CHUNK_ELEMS ? t->numel - i0 : CHUNK_ELEMS;
    copy_res *res = m2o_calloc(1, sizeof *res, err);
    float *x = res ? m2o_malloc((size_t)n * sizeof(float) + 4, err) : NULL;
    int rc = x ? st_read_f32(t, i0, n, x, err) : -1;
    if (!rc) {
        /* quantized biases are one small tensor: a single chunk */
        float *qdq = r->v->qbits > 0 && n == r->total ? quantized_copy(r->v, x, n) : NULL;
        res->qdq = qdq != NULL;
        compare_chunk(r->v, x, qdq, n, r->data, at + i0, &res->f, &res->fq);
        free(qdq);
    }
    size_t es = st_dtype_size(t->dtype), os = onnx_dtype_size(r->v->type);
    st_release(t, (size_t)i0 * es, (size_t)n * es);
    vrelease_pages((const uint8_t *)r->data + (size_t)(at + i0) * os, (size_t)n * os);
    free(x);
    if (rc) {
        free(res);
        return -1;
    }
    *result = res;
    return 0;
}

static void merge_first(vfirst *into, const vfirst *f)
{
    if (f->n_bad && !into->n_bad) {
        into->index = f->index;
        into->got = f->got;
        into->want = f->want;
        into->bound = f->bound;
    }
    into->n_bad += f->n_bad;
}

static int copy_commit(void *ctx, int64_t job, void *result, m2o_err *err)
{
    (void)job;
    (void)err;
    copy_run *r = ctx;
    copy_res *res = result;
    merge_first(&r->f, &res->f);
    merge_first(&r->fq, &res->fq);
    r->qdq |= res->qdq;
    free(res);
    return 0;
}

static void copy_discard(void *ctx, int64_t job, void *result)
{
    (void)ctx;
    (void)job;
    free(result);
}

/* The checkpoint tensors the rule names for this layer, concatenated in order: fills
 * run->parts, np and total, and names ("a + b") for the messages; false (with a fault) when
 * one is missing. */
static bool find_copy_sources(vctx *c, const onnx_tensor *t, const vinit_rule *rule, int layer,
                              copy_run *run, char *names, size_t names_len)
{
    names[0] = '\0';
    for (int i = 0; i < 3 && rule->parts[i]; i++) {
        char nm[256];
        expand(rule->parts[i], c->md, layer, nm, sizeof nm);
        const st_tensor *part = ckpt_find(c->ck, nm);
        size_t used = strlen(names);
        snprintf(names + used, names_len - used, "%s%s", used ? " + " : "", nm);
        if (!part) {
            verify_add_fault(c->r, VF_MISSING, onnx_tensor_name(t),
                             "%s has no checkpoint source: %s is missing", onnx_tensor_name(t),
                             nm);
            return false;
        }
        run->parts[run->np++] = part;
        run->total += part->numel;
    }
    return true;
}

/* Compares the initializer with its sources in CHUNK_ELEMS jobs on the ordered pool. */
static int run_copy_jobs(vctx *c, copy_run *run, m2o_err *err)
{
    int64_t jobs = 0;
    for (int p = 0; p < run->np; p++) {
        run->first_job[p] = jobs;
        jobs += (run->parts[p]->numel + CHUNK_ELEMS - 1) / CHUNK_ELEMS;
    }
    run->first_job[run->np] = jobs;
    int threads = c->o->threads > 0 ? c->o->threads : m2o_cpu_count();
    if (threads > jobs)
        threads = (int)(jobs > 0 ? jobs : 1);
    if (jobs > 0 && m2o_ordered_run(threads, 2 * threads, jobs, copy_produce, copy_commit,
                                    copy_discard, run, err))
        return -1;
    return 0;
}

static int check_copy(vctx *c, const onnx_tensor *t, const vinit_rule *rule, int layer,
                      m2o_err *err)
{
    copy_run run = {0};
    char names[800];
    if (!find_copy_sources(c, t, rule, layer, &run, names, sizeof names))
        return 0;
    int type = onnx_tensor_elem_type(t);
    if (!is_float(type) || vnumel(t) != run.total) {
        verify_add_fault(c->r, VF_SHAPE, onnx_tensor_name(t),
                         "%s is %s with %lld elements, the checkpoint's %s has %lld",
                         onnx_tensor_name(t), onnx_dtype_name(type), (long long)vnumel(t), names,
                         (long long)run.total);
        return 0;
    }
    vcopy v = {.xf = rule->xf, .type = type};
    if (rule->xf == VX_NORM)
        v.offset = c->md->norm_weight_offset; /* Qwen3.5 RMSNorms store w - 1 */
    if (rule->xf == VX_EXPERT_BIAS) {
        v.row = onnx_tensor_ndim(t) > 0 ? onnx_tensor_dims(t)[onnx_tensor_ndim(t) - 1]
                                        : run.total;
        if (!expert_bias_quant(c, onnx_tensor_name(t), &v.qbits, &v.qblock))
            v.qbits = 0;
    }
    run.v = &v;
    if (init_data(c, t, &run.data, err) || run_copy_jobs(c, &run, err))
        return -1;
    c->r->n_checks++;
    /* an expert bias is either copied or quantized like its experts (qmoe_quantize_bias) */
    if (run.f.n_bad && !(run.qdq && run.fq.n_bad == 0))
        value_fault(c, t, names, run.total, &run.f);
    return 0;
}

/* ------------------------------------------------------------------ constants */

static void check_fill(vctx *c, const onnx_tensor *t, double want, const char *why,
                       m2o_err *err)
{
    const void *data;
    int type = onnx_tensor_elem_type(t);
    if (!is_float(type)) {
        verify_add_fault(c->r, VF_SHAPE, onnx_tensor_name(t), "%s is %s, expected float32",
                         onnx_tensor_name(t), onnx_dtype_name(type));
        return;
    }
    if (init_data(c, t, &data, err)) {
        verify_add_fault(c->r, VF_MISSING, onnx_tensor_name(t), "%s", err->msg);
        return;
    }
    vfirst f = {0};
    double w = round_to((float)want, type);
    for (int64_t i = 0; i < vnumel(t); i++) {
        double got = vx_load_float(data, type, i);
        if (!(got == w))
            note_bad(&f, i, got, w, 0);
    }
    c->r->n_checks++;
    if (f.n_bad)
        value_fault(c, t, why, vnumel(t), &f);
}

/* "/model/constants/INT64/[1, -1]" holds 1, -1; ".../INT64/1" is the scalar 1. */
static bool check_int64_const(vctx *c, const onnx_tensor *t, m2o_err *err)
{
    static const char pre[] = "/model/constants/INT64/";
    const char *name = onnx_tensor_name(t);
    if (strncmp(name, pre, sizeof pre - 1))
        return false;
    const char *s = name + sizeof pre - 1;
    bool list = *s == '[';
    int64_t want[64];
    int n = 0;
    s += list;
    while (*s && *s != ']' && n < 64) {
        char *end;
        want[n++] = strtoll(s, &end, 10);
        if (end == s)
            break;
        s = end;
        while (*s == ',' || *s == ' ')
            s++;
    }
    const void *data;
    bool ok = onnx_tensor_elem_type(t) == ONNX_INT64 && vnumel(t) == n &&
              onnx_tensor_ndim(t) == (list ? 1 : 0) && !init_data(c, t, &data, err) &&
              !memcmp(data, want, (size_t)n * sizeof(int64_t));
    c->r->n_checks++;
    if (!ok)
        verify_add_fault(c->r, VF_VALUE, name,
                         "int64 constant %s does not hold the %d value(s) its name states", name,
                         n);
    return true;
}

/* ------------------------------------------------------------------ rotary caches */

typedef struct vrope {
    int half;
    double inv_freq[1024];
    double factor; /* attention factor */
} vrope;

/* transformers' ROPE_INIT_FUNCTIONS in float64 (default, linear, YaRN). */
static bool rope_recompute(const model_desc *md, vrope *r)
{
    double prf = md->partial_rotary_factor > 0 ? md->partial_rotary_factor : 1.0;
    int dim = (int)(md->head_dim * prf);
    if (dim < 2 || dim % 2 || dim / 2 > 1024 || !(md->rope_theta > 0))
        return false;
    r->half = dim / 2;
    r->factor = 1.0;
    for (int i = 0; i < r->half; i++)
        r->inv_freq[i] = 1.0 / pow(md->rope_theta, 2.0 * i / dim);
    if (md->rope_type == ROPE_LINEAR)
        for (int i = 0; i < r->half; i++)
            r->inv_freq[i] /= md->rope_factor;
    if (md->rope_type != ROPE_YARN)
        return true;
    double f = md->rope_factor;
    double orig = md->rope_original_max_position > 0 ? md->rope_original_max_position
                                                     : md->max_position_embeddings;
    r->factor = md->yarn_attention_factor > 0 ? md->yarn_attention_factor
                : f <= 1                      ? 1.0
                                              : 0.1 * log(f) + 1.0;
    double fast = md->yarn_beta_fast > 0 ? md->yarn_beta_fast : 32;
    double slow = md->yarn_beta_slow > 0 ? md->yarn_beta_slow : 1;
    double lo = dim * log(orig / (fast * 2 * M_PI)) / (2 * log(md->rope_theta));
    double hi = dim * log(orig / (slow * 2 * M_PI)) / (2 * log(md->rope_theta));
    if (md->yarn_truncate) {
        lo = floor(lo);
        hi = ceil(hi);
    }
    lo = lo < 0 ? 0 : lo;
    hi = hi > dim - 1 ? dim - 1 : hi;
    if (lo == hi)
        hi += 0.001;
    for (int i = 0; i < r->half; i++) {
        double ramp = (i - lo) / (hi - lo);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        double extra = 1.0 - ramp, base = r->inv_freq[i];
        r->inv_freq[i] = base / f * (1 - extra) + base * extra;
    }
    return true;
}

static void check_rotary(vctx *c, const onnx_tensor *t, bool sine, m2o_err *err)
{
    vrope r;
    int type = onnx_tensor_elem_type(t);
    const int64_t *d = onnx_tensor_dims(t);
    if (!rope_recompute(c->md, &r)) {
        verify_add_fault(c->r, VF_VALUE, onnx_tensor_name(t),
                         "%s: config.json's rotary parameters give no valid rotary dimension",
                         onnx_tensor_name(t));
        return;
    }
    if (!is_float(type) || onnx_tensor_ndim(t) != 2 || d[1] != r.half ||
        d[0] < c->md->max_position_embeddings) {
        verify_add_fault(c->r, VF_SHAPE, onnx_tensor_name(t),
                         "%s is %s [%lld, %lld], expected a float [>= %d, %d] cache",
                         onnx_tensor_name(t), onnx_dtype_name(type),
                         (long long)(onnx_tensor_ndim(t) > 0 ? d[0] : -1),
                         (long long)(onnx_tensor_ndim(t) > 1 ? d[1] : -1),
                         c->md->max_position_embeddings, r.half);
        return;
    }
    const void *data;
    if (init_data(c, t, &data, err)) {
        verify_add_fault(c->r, VF_MISSING, onnx_tensor_name(t), "%s", err->msg);
        return;
    }
    vfirst f = {0};
    for (int64_t p = 0; p < d[0]; p++) {
        for (int i = 0; i < r.half; i++) {
            double phase = (double)p * r.inv_freq[i];
            double want = (sine ? sin(phase) : cos(phase)) * r.factor;
            /* the exporter's float32 phase and inv_freq: 2^-20 of the phase (16 ulps), its
             * float32 cos/sin and factor, then the stored type's rounding */
            double bound = r.factor * (phase * ldexp(1.0, -20) + ldexp(1.0, -22)) +
                           half_ulp(want, type);
            double got = vx_load_float(data, type, p * r.half + i);
            if (!isfinite(got) || !(fabs(got - want) <= bound))
                note_bad(&f, p * r.half + i, got, want, bound);
        }
    }
    vrelease_pages(data, (size_t)(d[0] * r.half) * onnx_dtype_size(type));
    c->r->n_checks++;
    if (f.n_bad)
        value_fault(c, t, "the rotary cache config.json implies", d[0] * r.half, &f);
}

/* ------------------------------------------------------------------ the sweep */

static int check_one(vctx *c, const onnx_tensor *t, m2o_err *err)
{
    const char *name = onnx_tensor_name(t);
    if (check_int64_const(c, t, err))
        return 0;
    if (!strcmp(name, "cos_cache") || !strcmp(name, "sin_cache")) {
        check_rotary(c, t, name[0] == 's', err);
        return 0;
    }
    if (match("model.layers.%d.linear_attn.qk_l2norm.weight", name) >= 0) {
        check_fill(c, t, 1.0 / sqrt((double)c->md->linear_key_head_dim),
                   "1/sqrt(linear_key_head_dim)", err);
        return 0;
    }
    if (match("model.layers.%d.moe.experts.gate_up_proj.global_scale", name) >= 0 ||
        match("model.layers.%d.moe.experts.down_proj.global_scale", name) >= 0) {
        check_fill(c, t, 1.0, "1 (MXFP4 global scale)", err);
        return 0;
    }
    for (size_t i = 0; i < sizeof kRules / sizeof kRules[0]; i++) {
        int layer = match(kRules[i].pattern, name);
        if (layer < 0)
            continue;
        bool final = strstr(kRules[i].pattern, "final_norm") != NULL;
        if ((final && layer != c->md->num_layers) || (!final && layer >= c->md->num_layers))
            break;
        return check_copy(c, t, &kRules[i], layer, err);
    }
    verify_add_fault(c->r, VF_UNCHECKED, name,
                     "unchecked initializer %s (%s): no check knows what it must hold; verify "
                     "cannot vouch for it (the rules are src/verify/initializers.c)",
                     name, onnx_dtype_name(onnx_tensor_elem_type(t)));
    return 0;
}

int vcheck_initializers(vctx *c, m2o_err *err)
{
    for (size_t i = 0; i < onnx_model_initializer_count(c->m); i++) {
        if (c->covered && c->covered[i])
            continue;
        if (check_one(c, onnx_model_initializer(c->m, i), err))
            return -1;
    }
    return 0;
}

void vmark_initializer(vctx *c, const onnx_tensor *t)
{
    if (!c->covered || !t)
        return;
    for (size_t i = 0; i < onnx_model_initializer_count(c->m); i++) {
        if (onnx_model_initializer(c->m, i) == t) {
            c->covered[i] = true;
            return;
        }
    }
}
