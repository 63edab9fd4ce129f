/* Dense SwiGLU MLP and the shared expert with its sigmoid gate. */
#include "graph/blocks.h"

static gname op2(gb *b, const char *op, const char *node, const char *x, const char *y)
{
    const char *in[2] = {x, y};
    gb_node(b, op, NULL, node, y ? 2 : 1, in, 1);
    return gname_out(node, 0);
}

int gb_mlp_swiglu(gb *b, const char *base, const char *init, const linear_src *gate,
                  const linear_src *up, const linear_src *down, const char *role_family,
                  int layer, const char *input, gname *out, m2o_err *err)
{
    gname g, u, nb, ni;
    gname rg = gname_fmt("%s.gate", role_family), ru = gname_fmt("%s.up", role_family);
    gname rd = gname_fmt("%s.down", role_family);
    nb = gname_fmt("%s/gate_proj", base);
    ni = gname_fmt("%s.gate_proj", init);
    if (gb_linear(b, nb.s, ni.s, gate, rg.s, layer, input, &g, err))
        return -1;
    nb = gname_fmt("%s/up_proj", base);
    ni = gname_fmt("%s.up_proj", init);
    if (gb_linear(b, nb.s, ni.s, up, ru.s, layer, input, &u, err))
        return -1;
    /* silu(g) = g * sigmoid(g) */
    gname sig = op2(b, "Sigmoid", gname_fmt("%s/act_fn/Sigmoid", base).s, g.s, NULL);
    gname act = op2(b, "Mul", gname_fmt("%s/act_fn/Mul", base).s, g.s, sig.s);
    gname prod = op2(b, "Mul", gname_fmt("%s/Mul", base).s, act.s, u.s);
    nb = gname_fmt("%s/down_proj", base);
    ni = gname_fmt("%s.down_proj", init);
    return gb_linear(b, nb.s, ni.s, down, rd.s, layer, prod.s, out, err);
}

int gb_shared_expert(gb *b, int layer, const st_tensor *gate_w, const linear_src *gate,
                     const linear_src *up, const linear_src *down, const char *input,
                     const char *moe_out, gname *out, m2o_err *err)
{
    int64_t H = b->md->hidden_size;
    if (gate_w->ndim != 2 || gate_w->shape[0] != 1 || gate_w->shape[1] != H)
        return m2o_fail(err, "tensor %s: expected [1, %lld]", gate_w->name, (long long)H);
    gname base = gname_fmt("/model/layers.%d/shared_expert", layer);
    gname init = gname_fmt("model.layers.%d.shared_expert", layer);
    gname y, logit;
    if (gb_mlp_swiglu(b, base.s, init.s, gate, up, down, "shared_expert", layer, input, &y, err))
        return -1;
    linear_src g = {.n_parts = 1, .w = {gate_w}};
    gname gb_base = gname_fmt("/model/layers.%d/shared_expert_gate", layer);
    gname gb_init = gname_fmt("model.layers.%d.shared_expert_gate", layer);
    if (gb_linear(b, gb_base.s, gb_init.s, &g, "shared_expert_gate", layer, input, &logit, err))
        return -1;
    gname sig = op2(b, "Sigmoid", gname_fmt("%s/Sigmoid", gb_base.s).s, logit.s, NULL);
    gname gated = op2(b, "Mul", gname_fmt("%s/Mul", gb_base.s).s, sig.s, y.s);
    *out = op2(b, "Add", gname_fmt("/model/layers.%d/moe_shared/Add", layer).s, moe_out, gated.s);
    return 0;
}
