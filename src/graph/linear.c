/* Linear layers: MatMul with a float weight, or MatMulNBits (4- or 8-bit blockwise, with zero
 * points where the method has them), plus bias. What each weight becomes is quant_resolve's
 * answer for its role and layer (docs/QUANTIZATION.md). */
#include "graph/blocks.h"

#include <stdbool.h>
#include <string.h>

#include "graph/int8_budget.h"
#include "graph/quant_resolve.h"
#include "graph/weights.h"

static int check_linear(const linear_src *s, m2o_err *err)
{
    if (s->n_parts < 1 || s->n_parts > LINEAR_MAX_PARTS)
        return m2o_fail(err, "linear layer with %d weight parts (1..%d)", s->n_parts,
                        LINEAR_MAX_PARTS);
    int64_t K = linear_src_k(s);
    bool has_bias = s->bias[0] != NULL;
    for (int i = 0; i < s->n_parts; i++) {
        if (s->w[i]->ndim != 2 || s->w[i]->shape[1] != K)
            return m2o_fail(err, "tensor %s: expected a [N, %lld] weight to stack with %s",
                            s->w[i]->name, (long long)K, s->w[0]->name);
        if ((s->bias[i] != NULL) != has_bias)
            return m2o_fail(err, "tensor %s: its bias is %s while %s's is not", s->w[i]->name,
                            has_bias ? "missing" : "present", s->w[0]->name);
        if (s->bias[i] && s->bias[i]->numel != s->w[i]->shape[0])
            return m2o_fail(err, "tensor %s: %lld elements, expected %lld (rows of %s)",
                            s->bias[i]->name, (long long)s->bias[i]->numel,
                            (long long)s->w[i]->shape[0], s->w[i]->name);
    }
    return 0;
}

/* The MatMulNBits weight as tq describes it. Names as onnxruntime-genai's builder leaves them
 * (ONNX Runtime's quantizers): the MLAS path (algo_config=default, and moe2onnx's scale search,
 * same format) "{w}_Q{bits}", "{w}_scales", "{w}_zero_points"; the Neural Compressor path (rtn,
 * k_quant) "{w}_Q{bits}G{bs}", "{w}_scale", "{w}_zp"; the node "{MatMul}_Q{bits}" either way. */
typedef struct nbits_names {
    gname w, scales, zp, node;
} nbits_names;

wt_nbits_spec gb_nbits_spec(const tensor_quant *t)
{
    wt_nbits_method m = t->method == QMETHOD_RTN       ? WT_NBITS_INC_RTN
                        : t->method == QMETHOD_K_QUANT ? WT_NBITS_KQUANT
                        : t->scale_search              ? WT_NBITS_SEARCH
                                                       : WT_NBITS_MLAS;
    return (wt_nbits_spec){.bits = t->bits, .block_size = t->block_size,
                           .symmetric = t->symmetric, .method = m};
}

static nbits_names nbits_names_of(const char *base, const char *init, const wt_nbits_spec *q)
{
    nbits_names n;
    bool inc = q->method == WT_NBITS_INC_RTN || q->method == WT_NBITS_KQUANT;
    if (inc) {
        n.w = gname_fmt("%s.MatMul.weight_Q%dG%d", init, q->bits, q->block_size);
        n.scales = gname_fmt("%s.MatMul.weight_scale", init);
        n.zp = gname_fmt("%s.MatMul.weight_zp", init);
    } else {
        n.w = gname_fmt("%s.MatMul.weight_Q%d", init, q->bits);
        n.scales = gname_fmt("%s.MatMul.weight_scales", init);
        n.zp = gname_fmt("%s.MatMul.weight_zero_points", init);
    }
    n.node = gname_fmt("%s/MatMul_Q%d", base, q->bits);
    return n;
}

/* MatMulNBits(input) into mm_out (NULL: the node's own output name, returned in *out). */
static int nbits_matmul(gb *b, const char *base, const char *init, const linear_src *s,
                        const tensor_quant *t, const char *input, const char *mm_out,
                        gname *out, m2o_err *err)
{
    wt_nbits_spec q = gb_nbits_spec(t);
    nbits_names nm = nbits_names_of(base, init, &q);
    if (gb_add_nbits(b, nm.w.s, nm.scales.s, nm.zp.s, s, &q, err))
        return -1;
    *out = mm_out ? gname_fmt("%s", mm_out) : gname_out(nm.node.s, 0);
    const char *in[4] = {input, nm.w.s, nm.scales.s, nm.zp.s};
    const char *outs[1] = {out->s};
    graph_node *n = graph_add_node(b->g, "MatMulNBits", "com.microsoft", nm.node.s,
                                   wt_nbits_has_zero_points(&q) ? 4 : 3, in, 1, outs);
    node_attr_int(n, "K", linear_src_k(s));
    node_attr_int(n, "N", linear_src_n(s));
    node_attr_int(n, "bits", q.bits);
    node_attr_int(n, "block_size", q.block_size);
    node_attr_int(n, "accuracy_level", t->accuracy_level);
    return 0;
}

/* MatMul (or MatMulNBits) [+ Add]; the last node's output is named final_out when given. */
static int linear_core(gb *b, const char *base, const char *init, const linear_src *s,
                       const tensor_quant *t, const char *input, const char *final_out,
                       gname *out, m2o_err *err)
{
    if (check_linear(s, err))
        return -1;
    int64_t N = linear_src_n(s);
    bool has_bias = s->bias[0] != NULL;
    const char *direct = final_out && !has_bias ? final_out : NULL;
    gname mm_out;
    if (t->kind == TQ_INT) {
        if (nbits_matmul(b, base, init, s, t, input, direct, &mm_out, err))
            return -1;
    } else {
        gname w = gname_fmt("%s.MatMul.weight", init);
        if (gb_add_linear_t(b, w.s, s, err))
            return -1;
        gname node = gname_fmt("%s/MatMul", base);
        mm_out = direct ? gname_fmt("%s", direct) : gname_out(node.s, 0);
        const char *in[2] = {input, w.s};
        const char *outs[1] = {mm_out.s};
        graph_add_node(b->g, "MatMul", NULL, node.s, 2, in, 1, outs);
    }
    if (!has_bias) {
        *out = mm_out;
        return 0;
    }
    gname bias = gname_fmt("%s.Add.bias", init);
    if (gb_add_small(b, bias.s, s->n_parts, s->bias, 0.0f, 1, &N, err))
        return -1;
    gname add = gname_fmt("%s/Add", base);
    gname add_out = final_out ? gname_fmt("%s", final_out) : gname_out(add.s, 0);
    const char *in[2] = {mm_out.s, bias.s};
    const char *outs[1] = {add_out.s};
    graph_add_node(b->g, "Add", NULL, add.s, 2, in, 1, outs);
    *out = add_out;
    return 0;
}

/* quant_resolve for one MatMul of the graph; MXFP4 is an expert encoding only. */
static int resolve_linear(const gb *b, const char *role, int layer, const char *base,
                          const linear_src *s, tensor_quant *t, m2o_err *err)
{
    int L = layer >= 0 ? layer : 0;
    gname node = gname_fmt("%s/MatMul", base);
    quant_site site = {.role = role, .layer = layer, .num_layers = b->md->num_layers,
                       .linear_attn_layer = b->md->layer_type[L] == LAYER_LINEAR_ATTENTION,
                       .node_name = node.s};
    if (quant_resolve(&b->q, &site, t, err) || (b->budget && i8b_on_matmul(b->budget, node.s, s, t, err)))
        return -1;
    if (t->kind == TQ_MXFP4)
        return m2o_fail(err, "internal: %s resolved to MXFP4, which only experts take", base);
    return 0;
}

int gb_linear(gb *b, const char *base, const char *init, const linear_src *s, const char *role,
              int layer, const char *input, gname *out, m2o_err *err)
{
    tensor_quant t;
    if (resolve_linear(b, role, layer, base, s, &t, err))
        return -1;
    return linear_core(b, base, init, s, &t, input, NULL, out, err);
}

int gb_lm_head(gb *b, const linear_src *s, const char *input, m2o_err *err)
{
    tensor_quant t;
    gname out;
    if (resolve_linear(b, "lm_head", -1, "/lm_head", s, &t, err))
        return -1;
    if (b->io == ONNX_FLOAT)
        return linear_core(b, "/lm_head", "lm_head", s, &t, input, "logits", &out, err);
    if (linear_core(b, "/lm_head", "lm_head", s, &t, input, NULL, &out, err))
        return -1;
    /* logits stay float32 whatever the io dtype, so sampling never sees rounded scores */
    const char *in[1] = {out.s};
    const char *outs[1] = {"logits"};
    graph_node *n = graph_add_node(b->g, "Cast", NULL, "/lm_head/Cast", 1, in, 1, outs);
    node_attr_int(n, "to", ONNX_FLOAT);
    return 0;
}
