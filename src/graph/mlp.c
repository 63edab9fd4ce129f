/* Dense SwiGLU MLP (Qwen dense layers, shared experts): down(silu(gate(x)) * up(x)). */
#include "graph/blocks.h"

static int check_mlp(const mlp_desc *m, m2o_err *err)
{
    int64_t I = linear_src_n(&m->gate), H = linear_src_k(&m->gate);
    if (linear_src_n(&m->up) != I || linear_src_k(&m->up) != H)
        return m2o_fail(err, "tensor %s: expected [%lld, %lld] like %s", m->up.w[0]->name,
                        (long long)I, (long long)H, m->gate.w[0]->name);
    if (linear_src_n(&m->down) != H || linear_src_k(&m->down) != I)
        return m2o_fail(err, "tensor %s: expected [%lld, %lld] (the transpose of %s)",
                        m->down.w[0]->name, (long long)H, (long long)I, m->gate.w[0]->name);
    return 0;
}

int gb_mlp(gb *b, const char *base, const char *init, const mlp_desc *m, bool quantize,
           const char *input, gname *out, m2o_err *err)
{
    if (check_mlp(m, err))
        return -1;
    gname gate, up, nb, ni;
    nb = gname_fmt("%s/gate_proj", base);
    ni = gname_fmt("%s.gate_proj", init);
    if (gb_linear(b, nb.s, ni.s, &m->gate, quantize, input, &gate, err))
        return -1;
    nb = gname_fmt("%s/up_proj", base);
    ni = gname_fmt("%s.up_proj", init);
    if (gb_linear(b, nb.s, ni.s, &m->up, quantize, input, &up, err))
        return -1;

    /* silu(g) = g * sigmoid(g): two standard ops every provider runs */
    gname sig = gname_fmt("%s/act_fn/Sigmoid", base), act = gname_fmt("%s/act_fn/Mul", base);
    const char *in_sig[1] = {gate.s};
    gb_node(b, "Sigmoid", NULL, sig.s, 1, in_sig, 1);
    gname sig_out = gname_out(sig.s, 0);
    const char *in_act[2] = {gate.s, sig_out.s};
    gb_node(b, "Mul", NULL, act.s, 2, in_act, 1);
    gname act_out = gname_out(act.s, 0);

    gname mul = gname_fmt("%s/Mul", base);
    const char *in_mul[2] = {act_out.s, up.s};
    gb_node(b, "Mul", NULL, mul.s, 2, in_mul, 1);
    gname mul_out = gname_out(mul.s, 0);

    nb = gname_fmt("%s/down_proj", base);
    ni = gname_fmt("%s.down_proj", init);
    return gb_linear(b, nb.s, ni.s, &m->down, quantize, mul_out.s, out, err);
}
