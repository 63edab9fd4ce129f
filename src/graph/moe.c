/* Mixture-of-experts block: router (float, never quantized) → MoE / QMoE with fused SwiGLU. */
#include "graph/blocks.h"
#include "onnx/ort_rules.h"

#include <stdlib.h>
#include <string.h>

typedef struct moe_encoding {
    const char *op;          /* "MoE" or "QMoE" */
    expert_enc weights, scales; /* scales unused for MoE */
    int bits, block_size;    /* int: block_size 0 = per channel (no block_size attribute) */
    bool fp4;
    bool asymmetric, search; /* uint4/uint8 zero points; scale_search (int only) */
} moe_encoding;

/* Re-checks what the command line resolved against this layer's dims (defensive: a bad
 * combination must be an error here, never a model that runs wrong). */
static int choose_encoding(const gb *b, const moe_desc *m, moe_encoding *enc, m2o_err *err)
{
    const export_opts *o = b->o;
    int64_t H = m->hidden, I = m->inter;
    bool cuda = o->ep == EP_CUDA;
    if (o->precision != PREC_INT4) {
        *enc = (moe_encoding){.op = "MoE", .weights = ENC_FLOAT};
        return 0;
    }
    if (cuda && b->io == ONNX_FLOAT)
        return m2o_fail(err, "QMoE on CUDA runs float16/bfloat16 only, but the io dtype is "
                             "float32; export with -e cuda's default io dtype");
    if (o->moe_quant_type == MOE_QUANT_MXFP4) {
        if (!cuda)
            return m2o_fail(err, "moe_quant_type=mxfp4: ONNX Runtime's CPU QMoE has no fp4 "
                                 "kernel; use -e cuda or moe_quant_type=int4|int8");
        if (H % ORT_MXFP4_BLOCK || I % ORT_MXFP4_BLOCK)
            return m2o_fail(err, "moe_quant_type=mxfp4 needs hidden_size %lld and expert "
                                 "intermediate size %lld to be multiples of %d",
                            (long long)H, (long long)I, ORT_MXFP4_BLOCK);
        *enc = (moe_encoding){.op = "QMoE", .weights = ENC_FP4, .scales = ENC_FP4_SCALES,
                              .bits = 4, .block_size = ORT_MXFP4_BLOCK, .fp4 = true};
        return 0;
    }
    int bits = o->moe_quant_type == MOE_QUANT_INT8 ? 8 : 4;
    bool per_channel = o->quant.moe_per_channel;
    int bs = per_channel ? 0 : o->qmoe_block_size;
    bool asym = o->quant.moe_type == QTYPE_UINT4 || o->quant.moe_type == QTYPE_UINT8;
    if (!per_channel && ort_qmoe_int_rule(cuda, bs, H, I, err))
        return -1;
    if (per_channel && cuda && (H % ORT_QMOE_CUDA_WIDTH_MULTIPLE || I % ORT_QMOE_CUDA_WIDTH_MULTIPLE))
        return m2o_fail(err, "ONNX Runtime's CUDA QMoE needs hidden_size %lld and expert intermediate "
                             "size %lld to be multiples of %d", (long long)H, (long long)I,
                        ORT_QMOE_CUDA_WIDTH_MULTIPLE);
    if (asym && ort_qmoe_zero_point_rule(cuda, bits, bs, H, I, err))
        return -1;
    bool prepacked = cuda && o->qmoe_weights_prepacked != 0;
    *enc = (moe_encoding){.op = "QMoE", .weights = prepacked ? ENC_INT_SM80 : ENC_INT_RAW,
                          .scales = ENC_INT_SCALES, .bits = bits, .block_size = bs,
                          .asymmetric = asym, .search = o->quant.scale_search};
    return 0;
}

static int check_expert_dims(const expert_src *s, int64_t E, int64_t N, int64_t K, m2o_err *err)
{
    if (s->E != E || s->N != N || s->K != K)
        return m2o_fail(err, "%s: experts are [%lld, %lld, %lld], expected [%lld, %lld, %lld]",
                        s->what, (long long)s->E, (long long)s->N, (long long)s->K,
                        (long long)E, (long long)N, (long long)K);
    return 0;
}

/* Router logits reshaped to [tokens, E]. */
static int router(gb *b, const moe_desc *m, const char *input, gname *out, m2o_err *err)
{
    gname base = gname_fmt("/model/layers.%d/moe/router", m->layer);
    gname init = gname_fmt("model.layers.%d.moe.router", m->layer);
    gname logits;
    if (gb_linear(b, base.s, init.s, &m->router, "router", m->layer, input, &logits, err))
        return -1;
    int64_t shape[2] = {-1, m->num_experts};
    gname c = gb_const_i64(b, 1, 2, shape);
    gname node = gname_fmt("%s/Reshape", base.s);
    const char *in[2] = {logits.s, c.s};
    gb_node(b, "Reshape", NULL, node.s, 2, in, 1);
    *out = gname_out(node.s, 0);
    return 0;
}

static int add_global_scales(gb *b, const char *name, int64_t E, m2o_err *err)
{
    float *ones = m2o_malloc((size_t)E * sizeof(float), err);
    if (!ones)
        return -1;
    for (int64_t e = 0; e < E; e++)
        ones[e] = 1.0f;
    graph_add_initializer(b->g, name, ONNX_FLOAT, 1, &E, ones, (size_t)E * sizeof(float));
    free(ones);
    return 0;
}

/* ONNX Runtime 1.30's float MoE CPU kernel with normalize_routing_weights=0 accumulates into its
 * output buffer without clearing it: when the memory planner hands it a reused buffer the result
 * is garbage (measured: relative error 1.0; QMoE is not affected). So un-renormalised routing
 * (norm_topk_prob=false) runs the kernel renormalised and scales each token by the top-k mass of
 * the full softmax: (p_i / sum_topk p) * sum_topk p = p_i. Returns the [.., 1] scale to multiply. */
static gname topk_mass(gb *b, const moe_desc *m, const char *probs, const char *input)
{
    int L = m->layer;
    /* In float32 whatever the io dtype: ONNX Runtime refuses TopK on bfloat16 at load, and the
     * top-k mass is a sum of probabilities that float16 would round. */
    gname p32 = {{0}};
    if (b->io != ONNX_FLOAT) {
        gname c = gname_fmt("/model/layers.%d/moe/topk_mass/Cast", L);
        p32 = gb_cast(b, c.s, probs, ONNX_FLOAT);
        probs = p32.s;
    }
    gname sm = gname_fmt("/model/layers.%d/moe/topk_mass/Softmax", L);
    const char *in_sm[1] = {probs};
    node_attr_int(gb_node(b, "Softmax", NULL, sm.s, 1, in_sm, 1), "axis", -1);
    gname tk = gname_fmt("/model/layers.%d/moe/topk_mass/TopK", L), sm_out = gname_out(sm.s, 0);
    gname k = gb_const_i64(b, 1, 1, &m->top_k);
    const char *in_tk[2] = {sm_out.s, k.s};
    graph_node *n = gb_node(b, "TopK", NULL, tk.s, 2, in_tk, 2);
    node_attr_int(n, "axis", -1);
    gname rs = gname_fmt("/model/layers.%d/moe/topk_mass/ReduceSum", L), tk_out = gname_out(tk.s, 0);
    int64_t minus1 = -1;
    gname axes = gb_const_i64(b, 1, 1, &minus1);
    const char *in_rs[2] = {tk_out.s, axes.s};
    node_attr_int(gb_node(b, "ReduceSum", NULL, rs.s, 2, in_rs, 1), "keepdims", 1);
    /* [tokens, 1] → the input's leading dims + [1], so it broadcasts over the hidden axis */
    gname shp = gname_fmt("/model/layers.%d/moe/topk_mass/Shape", L);
    const char *in_shp[1] = {input};
    node_attr_int(gb_node(b, "Shape", NULL, shp.s, 1, in_shp, 1), "end", -1);
    gname cat = gname_fmt("/model/layers.%d/moe/topk_mass/Concat", L), shp_out = gname_out(shp.s, 0);
    int64_t one = 1;
    gname c1 = gb_const_i64(b, 1, 1, &one);
    const char *in_cat[2] = {shp_out.s, c1.s};
    node_attr_int(gb_node(b, "Concat", NULL, cat.s, 2, in_cat, 1), "axis", 0);
    gname rsh = gname_fmt("/model/layers.%d/moe/topk_mass/Reshape", L);
    gname rs_out = gname_out(rs.s, 0), cat_out = gname_out(cat.s, 0);
    const char *in_rsh[2] = {rs_out.s, cat_out.s};
    gb_node(b, "Reshape", NULL, rsh.s, 2, in_rsh, 1);
    gname mass = gname_out(rsh.s, 0);
    if (b->io == ONNX_FLOAT)
        return mass;
    gname c = gname_fmt("/model/layers.%d/moe/topk_mass/Cast_1", L);
    return gb_cast(b, c.s, mass.s, b->io);
}

/* ONNX Runtime's CUDA expert kernels are wrong in bfloat16, so in a bfloat16 graph the experts
 * run in float16: input and router logits cast in, weights (or QMoE scales) and biases stored
 * as float16, the output cast back. Measured with ONNX Runtime 1.29 on an H200 (tests/cuda):
 * the float MoE op alone is off by 1.1-1.3 of max|ref| in bfloat16 and 5e-4 in float16; int4
 * QMoE in bfloat16 is off by 5e-2 to 4e-1 in the models with a shared expert (qwen2-moe-tiny,
 * qwen3_5-moe-tiny) while float16 QMoE matches everywhere. Inside whole bfloat16 models the
 * float16 experts measure as close to the float32 reference as transformers' own bfloat16. */
static bool experts_in_float16(const gb *b)
{
    return b->io == ONNX_BFLOAT16;
}

/* Names of one layer's expert initializers; unused optional ones stay empty. */
typedef struct expert_inits {
    gname w1, s1, b1, w2, s2, b2, g1, g2, z1, z2;
} expert_inits;

/* Softmax of the router logits over all experts, QMoE's router_weights input (norm_topk_prob
 * false); empty when the layer does not pass them. */
static gname router_weights(gb *b, const moe_desc *m, const char *probs)
{
    gname weights = {{0}};
    if (!m->router_weights)
        return weights;
    gname sm = gname_fmt("/model/layers.%d/moe/router/Softmax", m->layer);
    const char *in[1] = {probs};
    graph_node *n = gb_node(b, "Softmax", NULL, sm.s, 1, in, 1);
    node_attr_int(n, "axis", -1);
    return gname_out(sm.s, 0);
}

/* fc1/fc2 weights (and scales: codes and scales of each expert come from one quantization, a
 * streamed group). */
static int add_expert_weights(gb *b, const moe_desc *m, const moe_encoding *enc, expert_inits *x,
                              m2o_err *err)
{
    int L = m->layer;
    const char *wsuffix = enc->weights == ENC_FLOAT ? "weight" : "qweight";
    x->w1 = gname_fmt("model.layers.%d.moe.experts.gate_up_proj.%s", L, wsuffix);
    x->w2 = gname_fmt("model.layers.%d.moe.experts.down_proj.%s", L, wsuffix);
    if (enc->weights == ENC_FLOAT) {
        if (gb_add_experts(b, x->w1.s, m->fc1, enc->weights, enc->bits, enc->block_size, err) ||
            gb_add_experts(b, x->w2.s, m->fc2, enc->weights, enc->bits, enc->block_size, err))
            return -1;
        return 0;
    }
    x->s1 = gname_fmt("model.layers.%d.moe.experts.gate_up_proj.scales", L);
    x->s2 = gname_fmt("model.layers.%d.moe.experts.down_proj.scales", L);
    if (!enc->fp4 && (enc->asymmetric || enc->search || enc->block_size <= 0)) {
        expert_qfmt f = {.bits = enc->bits, .block_size = enc->block_size,
                         .asymmetric = enc->asymmetric, .search = enc->search};
        if (enc->asymmetric) {
            x->z1 = gname_fmt("model.layers.%d.moe.experts.gate_up_proj.zero_points", L);
            x->z2 = gname_fmt("model.layers.%d.moe.experts.down_proj.zero_points", L);
        }
        if (gb_add_experts_int(b, x->w1.s, x->s1.s, x->z1.s, m->fc1, enc->weights, &f, err) ||
            gb_add_experts_int(b, x->w2.s, x->s2.s, x->z2.s, m->fc2, enc->weights, &f, err))
            return -1;
        return 0;
    }
    if (gb_add_experts_quantized(b, x->w1.s, x->s1.s, m->fc1, enc->weights, enc->bits,
                                 enc->block_size, err) ||
        gb_add_experts_quantized(b, x->w2.s, x->s2.s, m->fc2, enc->weights, enc->bits,
                                 enc->block_size, err))
        return -1;
    return 0;
}

/* One expert bias [E, cols]: as stored, or quantized and dequantized like the weights
 * (qmoe_quantize_bias). */
static int add_expert_bias(gb *b, const moe_encoding *enc, bool qdq, const char *name,
                           const st_tensor *t, int64_t E, int64_t cols, m2o_err *err)
{
    int64_t d[2] = {E, cols};
    return qdq ? gb_add_small_qdq(b, name, t, E, cols, enc->bits, enc->block_size, err)
               : gb_add_small(b, name, 1, &t, 0.0f, 2, d, err);
}

/* Biases and (fp4) global scales. */
static int add_expert_extras(gb *b, const moe_desc *m, const moe_encoding *enc, expert_inits *x,
                             m2o_err *err)
{
    int L = m->layer;
    int64_t E = m->num_experts;
    bool qdq_bias = b->o->qmoe_quantize_bias && enc->weights != ENC_FLOAT && !enc->fp4;
    if (m->fc1_bias) {
        x->b1 = gname_fmt("model.layers.%d.moe.experts.gate_up_proj.bias", L);
        if (add_expert_bias(b, enc, qdq_bias, x->b1.s, m->fc1_bias, E, 2 * m->inter, err))
            return -1;
    }
    if (m->fc2_bias) {
        x->b2 = gname_fmt("model.layers.%d.moe.experts.down_proj.bias", L);
        if (add_expert_bias(b, enc, qdq_bias, x->b2.s, m->fc2_bias, E, m->hidden, err))
            return -1;
    }
    if (enc->fp4) {
        x->g1 = gname_fmt("model.layers.%d.moe.experts.gate_up_proj.global_scale", L);
        x->g2 = gname_fmt("model.layers.%d.moe.experts.down_proj.global_scale", L);
        if (add_global_scales(b, x->g1.s, E, err) || add_global_scales(b, x->g2.s, E, err))
            return -1;
    }
    return 0;
}

/* The QMoE node and its own attributes (input positions: FORMATS §11.5). */
static graph_node *qmoe_node(gb *b, const moe_desc *m, const moe_encoding *enc,
                             const expert_inits *x, const char *node, const char *input,
                             const char *probs, const char *weights)
{
    const char *in[QMOE_N_INPUTS] = {
        [QMOE_IN_INPUT] = input,           [QMOE_IN_ROUTER_PROBS] = probs,
        [QMOE_IN_FC1_WEIGHTS] = x->w1.s,   [QMOE_IN_FC1_SCALES] = x->s1.s,
        [QMOE_IN_FC1_BIAS] = x->b1.s,      [QMOE_IN_FC2_WEIGHTS] = x->w2.s,
        [QMOE_IN_FC2_SCALES] = x->s2.s,    [QMOE_IN_FC2_BIAS] = x->b2.s,
        [QMOE_IN_FC1_ZERO_POINTS] = x->z1.s, [QMOE_IN_FC2_ZERO_POINTS] = x->z2.s,
        [QMOE_IN_ROUTER_WEIGHTS] = weights, [QMOE_IN_FC1_GLOBAL_SCALE] = x->g1.s,
        [QMOE_IN_FC2_GLOBAL_SCALE] = x->g2.s};
    for (int i = 0; i < QMOE_N_INPUTS; i++)
        in[i] = in[i] ? in[i] : ""; /* unused optional inputs */
    int n_in = enc->fp4 ? QMOE_N_INPUTS
               : m->router_weights ? QMOE_IN_ROUTER_WEIGHTS + 1
               : enc->asymmetric ? QMOE_IN_FC2_ZERO_POINTS + 1 : QMOE_IN_FC2_BIAS + 1;
    graph_node *n = gb_node(b, "QMoE", "com.microsoft", node, n_in, in, 1);
    node_attr_int(n, "expert_weight_bits", enc->bits);
    if (enc->block_size > 0) /* per channel: no attribute, as the builder (scales [E, N]) */
        node_attr_int(n, "block_size", enc->block_size);
    if (enc->fp4)
        node_attr_string(n, "quant_type", "fp4");
    else
        node_attr_int(n, "weights_prepacked", enc->weights == ENC_INT_SM80 ? 1 : 0);
    return n;
}

/* The attributes MoE and QMoE share (FORMATS §11.4). */
static void moe_common_attrs(graph_node *n, const moe_desc *m, bool mass_fix)
{
    node_attr_int(n, "k", m->top_k);
    node_attr_string(n, "activation_type", "swiglu");
    node_attr_int(n, "swiglu_fusion", 1);
    if (m->swiglu_limit > 0)
        node_attr_float(n, "swiglu_limit", m->swiglu_limit);
    node_attr_float(n, "activation_alpha", m->alpha);
    node_attr_float(n, "activation_beta", m->beta);
    node_attr_int(n, "normalize_routing_weights", m->normalize_routing || mass_fix ? 1 : 0);
}

/* The experts' initializers and the MoE/QMoE node over input and router logits probs, both in
 * the io dtype b->io. */
static int experts_node(gb *b, const moe_desc *m, const moe_encoding *enc, const char *input,
                        const char *probs_in, gname *out, m2o_err *err)
{
    int L = m->layer;
    gname probs = gname_fmt("%s", probs_in);
    gname weights = router_weights(b, m, probs.s);
    expert_inits x;
    memset(&x, 0, sizeof x);
    if (add_expert_weights(b, m, enc, &x, err) || add_expert_extras(b, m, enc, &x, err))
        return -1;
    gname node = gname_fmt("/model/layers.%d/moe/%s", L, enc->op);
    bool mass_fix = enc->weights == ENC_FLOAT && !m->normalize_routing;
    graph_node *n;
    if (enc->weights == ENC_FLOAT) {
        const char *in[6] = {input, probs.s, x.w1.s, x.b1.s, x.w2.s, x.b2.s};
        if (m->router_weights)
            return m2o_fail(err, "layer %d: internal: the float MoE op takes no router_weights; "
                                 "use normalize_routing=false instead", L);
        n = gb_node(b, "MoE", "com.microsoft", node.s, m->fc2_bias ? 6 : 5, in, 1);
    } else {
        n = qmoe_node(b, m, enc, &x, node.s, input, probs.s, weights.s);
    }
    moe_common_attrs(n, m, mass_fix);
    *out = gname_out(node.s, 0);
    if (mass_fix) {
        gname scale = topk_mass(b, m, probs.s, input);
        gname mul = gname_fmt("/model/layers.%d/moe/topk_mass/Mul", L);
        const char *in[2] = {out->s, scale.s};
        gb_node(b, "Mul", NULL, mul.s, 2, in, 1);
        *out = gname_out(mul.s, 0);
    }
    return 0;
}

int gb_moe(gb *b, const moe_desc *m, const char *input, gname *out, m2o_err *err)
{
    int L = m->layer;
    int64_t E = m->num_experts, H = m->hidden, I = m->inter;
    moe_encoding enc = {0};
    if (choose_encoding(b, m, &enc, err) || check_expert_dims(m->fc1, E, 2 * I, H, err) ||
        check_expert_dims(m->fc2, E, H, I, err))
        return m2o_wrap(err, "layer %d experts", L);
    if (m->top_k < 1 || m->top_k > E)
        return m2o_fail(err, "layer %d: num_experts_per_tok %lld must be in 1..%lld experts", L,
                        (long long)m->top_k, (long long)E);

    gname probs;
    if (router(b, m, input, &probs, err))
        return -1;
    if (!experts_in_float16(b))
        return experts_node(b, m, &enc, input, probs.s, out, err);
    gname cx = gname_fmt("/model/layers.%d/moe/input/Cast", L);
    gname cp = gname_fmt("/model/layers.%d/moe/router/Cast", L);
    gname x16 = gb_cast(b, cx.s, input, ONNX_FLOAT16), p16 = gb_cast(b, cp.s, probs.s, ONNX_FLOAT16);
    int io = b->io;
    b->io = ONNX_FLOAT16;
    gname y16;
    int rc = experts_node(b, m, &enc, x16.s, p16.s, &y16, err);
    b->io = io;
    if (rc)
        return -1;
    gname co = gname_fmt("/model/layers.%d/moe/output/Cast", L);
    *out = gb_cast(b, co.s, y16.s, io);
    return 0;
}
