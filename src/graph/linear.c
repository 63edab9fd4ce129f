/* Linear layers: MatMul with a float weight, or MatMulNBits (int4 blockwise), plus bias. */
#include "graph/blocks.h"

#include <stdbool.h>

bool gb_quantize_linears(const gb *b)
{
    return b->o->precision == PREC_INT4;
}

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

/* MatMul (or MatMulNBits) [+ Add]; the last node's output is named final_out when given. */
static int linear_core(gb *b, const char *base, const char *init, const linear_src *s,
                       bool quantize, const char *input, const char *final_out, gname *out,
                       m2o_err *err)
{
    if (check_linear(s, err))
        return -1;
    int64_t N = linear_src_n(s), K = linear_src_k(s);
    bool has_bias = s->bias[0] != NULL;
    gname node, mm_out;
    graph_node *n;
    if (quantize) {
        int bs = b->o->int4_block_size;
        gname w = gname_fmt("%s.MatMul.weight_Q4", init);
        gname sc = gname_fmt("%s.MatMul.weight_scales", init);
        if (gb_add_nbits(b, w.s, sc.s, s, 4, bs, err))
            return -1;
        node = gname_fmt("%s/MatMul_Q4", base);
        mm_out = (final_out && !has_bias) ? gname_fmt("%s", final_out) : gname_out(node.s, 0);
        const char *in[3] = {input, w.s, sc.s};
        const char *outs[1] = {mm_out.s};
        n = graph_add_node(b->g, "MatMulNBits", "com.microsoft", node.s, 3, in, 1, outs);
        node_attr_int(n, "K", K);
        node_attr_int(n, "N", N);
        node_attr_int(n, "bits", 4);
        node_attr_int(n, "block_size", bs);
        node_attr_int(n, "accuracy_level", b->o->int4_accuracy_level);
    } else {
        gname w = gname_fmt("%s.MatMul.weight", init);
        if (gb_add_linear_t(b, w.s, s, err))
            return -1;
        node = gname_fmt("%s/MatMul", base);
        mm_out = (final_out && !has_bias) ? gname_fmt("%s", final_out) : gname_out(node.s, 0);
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

int gb_linear(gb *b, const char *base, const char *init, const linear_src *s, bool quantize,
              const char *input, gname *out, m2o_err *err)
{
    return linear_core(b, base, init, s, quantize, input, NULL, out, err);
}

int gb_lm_head(gb *b, const linear_src *s, bool quantize, const char *input, m2o_err *err)
{
    gname out;
    if (b->io == ONNX_FLOAT)
        return linear_core(b, "/lm_head", "lm_head", s, quantize, input, "logits", &out, err);
    if (linear_core(b, "/lm_head", "lm_head", s, quantize, input, NULL, &out, err))
        return -1;
    /* logits stay float32 whatever the io dtype, so sampling never sees rounded scores */
    const char *in[1] = {out.s};
    const char *outs[1] = {"logits"};
    graph_node *n = graph_add_node(b->g, "Cast", NULL, "/lm_head/Cast", 1, in, 1, outs);
    node_attr_int(n, "to", ONNX_FLOAT);
    return 0;
}
