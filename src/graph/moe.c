/* Mixture-of-experts block: router (float, never quantized) → MoE / QMoE with fused SwiGLU. */
#include "graph/blocks.h"

#include <stdlib.h>

typedef struct moe_encoding {
    const char *op;          /* "MoE" or "QMoE" */
    expert_enc weights, scales; /* scales unused for MoE */
    int bits, block_size;
    bool fp4;
} moe_encoding;

static bool block_in(int bs, const int *allowed, int n)
{
    for (int i = 0; i < n; i++)
        if (bs == allowed[i])
            return true;
    return false;
}

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
        if (H % 32 || I % 32)
            return m2o_fail(err, "moe_quant_type=mxfp4 needs hidden_size %lld and expert "
                                 "intermediate size %lld to be multiples of 32",
                            (long long)H, (long long)I);
        *enc = (moe_encoding){.op = "QMoE", .weights = ENC_FP4, .scales = ENC_FP4_SCALES,
                              .bits = 4, .block_size = 32, .fp4 = true};
        return 0;
    }
    int bits = o->moe_quant_type == MOE_QUANT_INT8 ? 8 : 4, bs = o->qmoe_block_size;
    static const int cpu_blocks[] = {16, 32, 64, 128}, cuda_blocks[] = {32, 64, 128};
    if (cuda ? !block_in(bs, cuda_blocks, 3) : !block_in(bs, cpu_blocks, 4))
        return m2o_fail(err, "qmoe_block_size=%d is not supported by ONNX Runtime's %s QMoE "
                             "(allowed: %s)",
                        bs, cuda ? "CUDA" : "CPU", cuda ? "32, 64, 128" : "16, 32, 64, 128");
    if (H % bs || I % bs)
        return m2o_fail(err, "qmoe_block_size=%d must divide hidden_size %lld and the expert "
                             "intermediate size %lld; pick a block size that divides both",
                        bs, (long long)H, (long long)I);
    bool prepacked = cuda && o->qmoe_weights_prepacked != 0;
    if (cuda && (H % 64 || I % 64))
        return m2o_fail(err, "ONNX Runtime's CUDA QMoE needs hidden_size %lld and the expert "
                             "intermediate size %lld to be multiples of 64",
                        (long long)H, (long long)I);
    *enc = (moe_encoding){.op = "QMoE", .weights = prepacked ? ENC_INT_SM80 : ENC_INT_RAW,
                          .scales = ENC_INT_SCALES, .bits = bits, .block_size = bs};
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

/* Router logits reshaped to [tokens, E] (*out); *logits keeps them shaped like the input. */
static int router(gb *b, const moe_desc *m, const char *input, gname *out, gname *logits,
                  m2o_err *err)
{
    gname base = gname_fmt("/model/layers.%d/moe/router", m->layer);
    gname init = gname_fmt("model.layers.%d.moe.router", m->layer);
    if (gb_linear(b, base.s, init.s, &m->router, false, input, logits, err))
        return -1;
    int64_t shape[2] = {-1, m->num_experts};
    gname c = gb_const_i64(b, 1, 2, shape);
    gname node = gname_fmt("%s/Reshape", base.s);
    const char *in[2] = {logits->s, c.s};
    gb_node(b, "Reshape", NULL, node.s, 2, in, 1);
    *out = gname_out(node.s, 0);
    return 0;
}

/* moe_out (routed with the top-k renormalised) times ReduceSum(TopK(Softmax(logits), k)): the
 * weights become the plain softmax probabilities of the chosen experts. logits keep the input's
 * leading dims, so the [.., 1] mass broadcasts over the MoE output. */
static void scale_by_topk_mass(gb *b, const moe_desc *m, const char *logits, gname *moe_out)
{
    int L = m->layer;
    gname sm = gname_fmt("/model/layers.%d/moe/topk_mass/Softmax", L);
    gname tk = gname_fmt("/model/layers.%d/moe/topk_mass/TopK", L);
    gname rs = gname_fmt("/model/layers.%d/moe/topk_mass/ReduceSum", L);
    gname mul = gname_fmt("/model/layers.%d/moe/topk_mass/Mul", L);
    const char *in_sm[1] = {logits};
    graph_node *n = gb_node(b, "Softmax", NULL, sm.s, 1, in_sm, 1);
    node_attr_int(n, "axis", -1);
    gname probs = gname_out(sm.s, 0);
    int64_t k = m->top_k, axis = -1;
    gname kc = gb_const_i64(b, 1, 1, &k), ac = gb_const_i64(b, 1, 1, &axis);
    const char *in_tk[2] = {probs.s, kc.s};
    n = gb_node(b, "TopK", NULL, tk.s, 2, in_tk, 2);
    node_attr_int(n, "axis", -1);
    gname top = gname_out(tk.s, 0);
    const char *in_rs[2] = {top.s, ac.s};
    n = gb_node(b, "ReduceSum", NULL, rs.s, 2, in_rs, 1);
    node_attr_int(n, "keepdims", 1);
    gname mass = gname_out(rs.s, 0);
    const char *in_mul[2] = {moe_out->s, mass.s};
    gb_node(b, "Mul", NULL, mul.s, 2, in_mul, 1);
    *moe_out = gname_out(mul.s, 0);
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

/* moe_out + sigmoid(x Wg^T) * shared_mlp(x). The gate MatMul stays float like the router: it is
 * one output column, and rounding it scales every token's shared expert. */
static int add_shared_expert(gb *b, const moe_desc *m, const char *input, gname *moe_out,
                             m2o_err *err)
{
    int L = m->layer;
    gname base = gname_fmt("/model/layers.%d/moe/shared_expert", L);
    gname init = gname_fmt("model.layers.%d.moe.shared_expert", L);
    gname shared;
    if (gb_mlp(b, base.s, init.s, m->shared, gb_quantize_linears(b), input, &shared, err))
        return -1;
    if (m->shared_gate.n_parts) {
        if (linear_src_n(&m->shared_gate) != 1 || linear_src_k(&m->shared_gate) != m->hidden)
            return m2o_fail(err, "tensor %s: expected shape [1, %lld] (shared_expert_gate)",
                            m->shared_gate.w[0]->name, (long long)m->hidden);
        base = gname_fmt("/model/layers.%d/moe/shared_expert_gate", L);
        init = gname_fmt("model.layers.%d.moe.shared_expert_gate", L);
        gname logit;
        if (gb_linear(b, base.s, init.s, &m->shared_gate, false, input, &logit, err))
            return -1;
        gname sig = gname_fmt("%s/Sigmoid", base.s), mul = gname_fmt("%s/Mul", base.s);
        const char *in_sig[1] = {logit.s};
        gb_node(b, "Sigmoid", NULL, sig.s, 1, in_sig, 1);
        gname gate = gname_out(sig.s, 0);
        const char *in_mul[2] = {gate.s, shared.s};
        gb_node(b, "Mul", NULL, mul.s, 2, in_mul, 1);
        shared = gname_out(mul.s, 0);
    }
    gname add = gname_fmt("/model/layers.%d/moe/Add", L);
    const char *in_add[2] = {moe_out->s, shared.s};
    gb_node(b, "Add", NULL, add.s, 2, in_add, 1);
    *moe_out = gname_out(add.s, 0);
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

    gname probs, router_logits;
    if (router(b, m, input, &probs, &router_logits, err))
        return -1;
    /* Un-renormalised routing (Qwen norm_topk_prob=false: softmax over all experts, top-k,
     * no renormalisation). CPU QMoE renormalises the top-k whatever normalize_routing_weights
     * says, but given router_weights it weights by them [probed, SPEC §3]: pass
     * Softmax(logits) there. Everywhere else the op runs renormalised and its output is scaled
     * by the top-k probability mass (scale_by_topk_mass): CPU MoE with normalize_routing_weights
     * =0 returns zeros whenever ONNX Runtime 1.30 reuses its input buffer for the output
     * (MayInplace), which it does in a decoder graph [measured on the Qwen fixtures]. */
    bool router_weights = !m->normalize_routing && enc.weights != ENC_FLOAT && b->o->ep == EP_CPU;
    bool rescale = !m->normalize_routing && !router_weights;
    gname weights = {{0}};
    if (router_weights) {
        gname sm = gname_fmt("/model/layers.%d/moe/router/Softmax", L);
        const char *in[1] = {probs.s};
        graph_node *n = gb_node(b, "Softmax", NULL, sm.s, 1, in, 1);
        node_attr_int(n, "axis", -1);
        weights = gname_out(sm.s, 0);
    }

    gname w1, s1 = {{0}}, b1 = {{0}}, w2, s2 = {{0}}, b2 = {{0}}, g1 = {{0}}, g2 = {{0}};
    const char *wsuffix = enc.weights == ENC_FLOAT ? "weight" : "qweight";
    w1 = gname_fmt("model.layers.%d.moe.experts.gate_up_proj.%s", L, wsuffix);
    w2 = gname_fmt("model.layers.%d.moe.experts.down_proj.%s", L, wsuffix);
    if (gb_add_experts(b, w1.s, m->fc1, enc.weights, enc.bits, enc.block_size, err) ||
        gb_add_experts(b, w2.s, m->fc2, enc.weights, enc.bits, enc.block_size, err))
        return -1;
    if (enc.weights != ENC_FLOAT) {
        s1 = gname_fmt("model.layers.%d.moe.experts.gate_up_proj.scales", L);
        s2 = gname_fmt("model.layers.%d.moe.experts.down_proj.scales", L);
        if (gb_add_experts(b, s1.s, m->fc1, enc.scales, enc.bits, enc.block_size, err) ||
            gb_add_experts(b, s2.s, m->fc2, enc.scales, enc.bits, enc.block_size, err))
            return -1;
    }
    bool qdq_bias = b->o->qmoe_quantize_bias && enc.weights != ENC_FLOAT && !enc.fp4;
    if (m->fc1_bias) {
        int64_t d[2] = {E, 2 * I};
        b1 = gname_fmt("model.layers.%d.moe.experts.gate_up_proj.bias", L);
        if (qdq_bias ? gb_add_small_qdq(b, b1.s, m->fc1_bias, E, 2 * I, enc.bits, enc.block_size, err)
                     : gb_add_small(b, b1.s, 1, &m->fc1_bias, 0.0f, 2, d, err))
            return -1;
    }
    if (m->fc2_bias) {
        int64_t d[2] = {E, H};
        b2 = gname_fmt("model.layers.%d.moe.experts.down_proj.bias", L);
        if (qdq_bias ? gb_add_small_qdq(b, b2.s, m->fc2_bias, E, H, enc.bits, enc.block_size, err)
                     : gb_add_small(b, b2.s, 1, &m->fc2_bias, 0.0f, 2, d, err))
            return -1;
    }
    if (enc.fp4) {
        g1 = gname_fmt("model.layers.%d.moe.experts.gate_up_proj.global_scale", L);
        g2 = gname_fmt("model.layers.%d.moe.experts.down_proj.global_scale", L);
        if (add_global_scales(b, g1.s, E, err) || add_global_scales(b, g2.s, E, err))
            return -1;
    }

    gname node = gname_fmt("/model/layers.%d/moe/%s", L, enc.op);
    graph_node *n;
    if (enc.weights == ENC_FLOAT) {
        const char *in[6] = {input, probs.s, w1.s, b1.s, w2.s, b2.s};
        int n_in = m->fc2_bias ? 6 : 5;
        n = gb_node(b, "MoE", "com.microsoft", node.s, n_in, in, 1);
    } else {
        const char *in[17] = {input, probs.s, w1.s, s1.s, b1.s, w2.s, s2.s, b2.s, "", "", "",
                              "", "", "", weights.s, g1.s, g2.s};
        int n_in = enc.fp4 ? 17 : router_weights ? 15 : 8;
        n = gb_node(b, "QMoE", "com.microsoft", node.s, n_in, in, 1);
        node_attr_int(n, "expert_weight_bits", enc.bits);
        node_attr_int(n, "block_size", enc.block_size);
        if (enc.fp4)
            node_attr_string(n, "quant_type", "fp4");
        else
            node_attr_int(n, "weights_prepacked", enc.weights == ENC_INT_SM80 ? 1 : 0);
    }
    node_attr_int(n, "k", m->top_k);
    node_attr_string(n, "activation_type", "swiglu");
    node_attr_int(n, "swiglu_fusion", 1);
    if (m->swiglu_limit > 0)
        node_attr_float(n, "swiglu_limit", m->swiglu_limit);

    node_attr_float(n, "activation_alpha", m->alpha);
    node_attr_float(n, "activation_beta", m->beta);
    node_attr_int(n, "normalize_routing_weights", m->normalize_routing || rescale ? 1 : 0);
    *out = gname_out(node.s, 0);
    if (rescale)
        scale_by_topk_mass(b, m, router_logits.s, out);
    return m->shared ? add_shared_expert(b, m, input, out, err) : 0;
}
