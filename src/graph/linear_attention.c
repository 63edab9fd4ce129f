/* Gated DeltaNet linear-attention block: see linear_attention.h for the math and the graph. */
#include "graph/linear_attention.h"

#include <math.h>
#include <stdlib.h>

#include "graph/blocks.h"

/* transformers' l2norm epsilon (added to the sum of squares) */
#define L2NORM_EPS 1e-6f

int64_t linear_attn_conv_dim(const linear_attn_desc *d)
{
    return 2 * d->num_k_heads * d->head_k_dim + d->num_v_heads * d->head_v_dim;
}

static int check_rows(const linear_src *s, const char *what, int64_t n, int64_t k, m2o_err *err)
{
    if (s->n_parts < 1 || !s->w[0])
        return m2o_fail(err, "linear attention: %s is missing", what);
    if (linear_src_n(s) != n || linear_src_k(s) != k)
        return m2o_fail(err, "tensor %s: shape [%lld, %lld], expected [%lld, %lld]", s->w[0]->name,
                        (long long)linear_src_n(s), (long long)linear_src_k(s), (long long)n,
                        (long long)k);
    return 0;
}

static int check_numel(const st_tensor *t, const char *what, int64_t n, m2o_err *err)
{
    if (!t)
        return m2o_fail(err, "linear attention: %s is missing", what);
    if (t->numel != n)
        return m2o_fail(err, "tensor %s: %lld elements, expected %lld", t->name,
                        (long long)t->numel, (long long)n);
    return 0;
}

int linear_attn_check_dims(const linear_attn_desc *d, m2o_err *err)
{
    int64_t nk = d->num_k_heads, nv = d->num_v_heads, dk = d->head_k_dim, dv = d->head_v_dim;
    if (nk < 1 || nv < 1 || nv % nk)
        return m2o_fail(err, "config.json: linear_num_value_heads %lld must be a positive "
                             "multiple of linear_num_key_heads %lld",
                        (long long)nv, (long long)nk);
    if (dk < 1 || dv < 1)
        return m2o_fail(err, "config.json: linear_key_head_dim %lld and linear_value_head_dim "
                             "%lld must be positive", (long long)dk, (long long)dv);
    if (d->conv_kernel < 2)
        return m2o_fail(err, "config.json: linear_conv_kernel_dim %lld must be at least 2",
                        (long long)d->conv_kernel);
    return 0;
}

int linear_attn_check(const linear_attn_desc *d, int64_t hidden, m2o_err *err)
{
    int64_t nv = d->num_v_heads, dv = d->head_v_dim;
    if (linear_attn_check_dims(d, err))
        return -1;
    int64_t conv = linear_attn_conv_dim(d);
    if (check_rows(&d->qkv, "in_proj_qkv", conv, hidden, err) ||
        check_rows(&d->z, "in_proj_z", nv * dv, hidden, err) ||
        check_rows(&d->b, "in_proj_b", nv, hidden, err) ||
        check_rows(&d->a, "in_proj_a", nv, hidden, err) ||
        check_rows(&d->out, "out_proj", hidden, nv * dv, err) ||
        check_numel(d->conv_w, "conv1d.weight", conv * d->conv_kernel, err) ||
        check_numel(d->A_log, "A_log", nv, err) || check_numel(d->dt_bias, "dt_bias", nv, err) ||
        check_numel(d->norm_w, "norm.weight", dv, err))
        return -1;
    if (d->conv_b && check_numel(d->conv_b, "conv1d.bias", conv, err))
        return -1;
    if (d->conv_w->ndim != 3 || d->conv_w->shape[1] != 1)
        return m2o_fail(err, "tensor %s: expected a depthwise conv weight [%lld, 1, %lld]",
                        d->conv_w->name, (long long)conv, (long long)d->conv_kernel);
    return 0;
}

/* ---- small node helpers; every node is named "{base}/{what}" ---- */

static gname node1(gb *b, const char *op, const char *domain, const char *base, const char *what,
                   int n_in, const char *const *in, graph_node **n)
{
    gname name = gname_fmt("%s/%s", base, what);
    graph_node *node = gb_node(b, op, domain, name.s, n_in, in, 1);
    if (n)
        *n = node;
    return gname_out(name.s, 0);
}

static gname unary(gb *b, const char *op, const char *base, const char *what, const char *x)
{
    const char *in[1] = {x};
    return node1(b, op, NULL, base, what, 1, in, NULL);
}

static gname binary(gb *b, const char *op, const char *base, const char *what, const char *x,
                    const char *y)
{
    const char *in[2] = {x, y};
    return node1(b, op, NULL, base, what, 2, in, NULL);
}

static gname cast(gb *b, const char *base, const char *what, const char *x, int to)
{
    graph_node *n;
    const char *in[1] = {x};
    gname out = node1(b, "Cast", NULL, base, what, 1, in, &n);
    node_attr_int(n, "to", to);
    return out;
}

/* x in the io dtype → float32 (no node when the io dtype is float32). */
static gname to_f32(gb *b, const char *base, const char *what, const gname *x)
{
    return b->io == ONNX_FLOAT ? *x : cast(b, base, what, x->s, ONNX_FLOAT);
}

static gname reshape(gb *b, const char *base, const char *what, const char *x, int n,
                     const int64_t *shape)
{
    gname s = gb_const_i64(b, 1, n, shape);
    return binary(b, "Reshape", base, what, x, s.s);
}

static gname transpose_bt(gb *b, const char *base, const char *what, const char *x)
{
    graph_node *n;
    const char *in[1] = {x};
    gname out = node1(b, "Transpose", NULL, base, what, 1, in, &n);
    int64_t perm[3] = {0, 2, 1};
    node_attr_ints(n, "perm", 3, perm);
    return out;
}

/* Split along the last axis into two parts of n0 and n1 channels. */
static void split2(gb *b, const char *base, const char *what, const char *x, int64_t n0,
                   int64_t n1, gname *out0, gname *out1)
{
    int64_t sizes[2] = {n0, n1};
    gname s = gb_const_i64(b, 1, 2, sizes);
    gname name = gname_fmt("%s/%s", base, what);
    const char *in[2] = {x, s.s};
    graph_node *n = gb_node(b, "Split", NULL, name.s, 2, in, 2);
    node_attr_int(n, "axis", -1);
    *out0 = gname_out(name.s, 0);
    *out1 = gname_out(name.s, 1);
}

/* SimplifiedLayerNormalization over the last axis of x (float32), with a float32 weight. */
static gname rmsnorm_f32(gb *b, const char *base, const char *what, const char *x,
                         const char *weight, float eps)
{
    graph_node *n;
    const char *in[2] = {x, weight};
    gname out = node1(b, "SimplifiedLayerNormalization", NULL, base, what, 2, in, &n);
    node_attr_int(n, "axis", -1);
    node_attr_float(n, "epsilon", eps);
    node_attr_int(n, "stash_type", 1);
    return out;
}

/* A float32 [n] initializer of one repeated value. */
static int add_f32_fill(gb *b, const char *name, int64_t n, float v, m2o_err *err)
{
    float *buf = m2o_malloc((size_t)n * sizeof(float), err);
    if (!buf)
        return -1;
    for (int64_t i = 0; i < n; i++)
        buf[i] = v;
    graph_add_initializer(b->g, name, ONNX_FLOAT, 1, &n, buf, (size_t)n * sizeof(float));
    free(buf);
    return 0;
}

/* -exp(A_log) in float32 (made by weights/small.c). */
static int add_neg_a(gb *b, const char *name, const st_tensor *a_log, m2o_err *err)
{
    int64_t n = a_log->numel;
    float *v = wt_neg_exp_f32(a_log, b->o->allow_nonfinite, err);
    if (!v)
        return -1;
    graph_add_initializer(b->g, name, ONNX_FLOAT, 1, &n, v, (size_t)n * sizeof(float));
    free(v);
    return 0;
}

static void add_state_io(gb *b, const linear_attn_desc *d)
{
    int L = d->layer;
    const char *batch[4] = {"batch_size", NULL, NULL, NULL};
    int64_t conv[3] = {-1, linear_attn_conv_dim(d), d->conv_kernel - 1};
    int64_t rec[4] = {-1, d->num_v_heads, d->head_k_dim, d->head_v_dim};
    gname n = gname_fmt("past_key_values.%d.conv_state", L);
    graph_add_input(b->g, n.s, ONNX_FLOAT, 3, conv, batch);
    n = gname_fmt("past_key_values.%d.recurrent_state", L);
    graph_add_input(b->g, n.s, ONNX_FLOAT, 4, rec, batch);
    n = gname_fmt("present.%d.conv_state", L);
    graph_add_output(b->g, n.s, ONNX_FLOAT, 3, conv, batch);
    n = gname_fmt("present.%d.recurrent_state", L);
    graph_add_output(b->g, n.s, ONNX_FLOAT, 4, rec, batch);
}

/* qkv [B, T, conv_dim] float32 → causal conv + SiLU → q, k (L2-normalised), v, all float32. */
static int conv_and_qk_norm(gb *b, const linear_attn_desc *d, const char *base, const char *init,
                            const gname *qkv, gname *q, gname *k, gname *v, m2o_err *err)
{
    int L = d->layer;
    int64_t conv_dim = linear_attn_conv_dim(d), K = d->conv_kernel;
    int64_t nk = d->num_k_heads, dk = d->head_k_dim, key_dim = nk * dk;

    gname w = gname_fmt("%s.conv1d.weight", init), bias = {{0}};
    int64_t wd[3] = {conv_dim, 1, K};
    if (gb_add_small_f32(b, w.s, 1, &d->conv_w, 3, wd, err))
        return -1;
    if (d->conv_b) {
        bias = gname_fmt("%s.conv1d.bias", init);
        if (gb_add_small_f32(b, bias.s, 1, &d->conv_b, 1, &conv_dim, err))
            return -1;
    }
    /* CausalConvWithState takes channels first: [B, C, T] */
    gname xt = transpose_bt(b, base, "conv1d/input/Transpose", qkv->s);
    gname past = gname_fmt("past_key_values.%d.conv_state", L);
    gname present = gname_fmt("present.%d.conv_state", L);
    gname node = gname_fmt("%s/conv1d/CausalConvWithState", base);
    gname y = gname_out(node.s, 0);
    const char *in[4] = {xt.s, w.s, bias.s, past.s};
    const char *outs[2] = {y.s, present.s};
    graph_node *n = graph_add_node(b->g, "CausalConvWithState", "com.microsoft", node.s, 4, in,
                                   2, outs);
    node_attr_int(n, "ndim", 1);
    node_attr_string(n, "activation", "silu");
    gname mixed = transpose_bt(b, base, "conv1d/output/Transpose", y.s);

    gname qk;
    split2(b, base, "qkv/Split", mixed.s, 2 * key_dim, conv_dim - 2 * key_dim, &qk, v);
    gname l2w = gname_fmt("%s.qk_l2norm.weight", init);
    if (add_f32_fill(b, l2w.s, dk, 1.0f / sqrtf((float)dk), err))
        return -1;
    int64_t heads[4] = {0, 0, 2 * nk, dk}, flat[3] = {0, 0, 2 * key_dim};
    gname qk4 = reshape(b, base, "qk_l2norm/Reshape", qk.s, 4, heads);
    gname nrm = rmsnorm_f32(b, base, "qk_l2norm/SimplifiedLayerNorm", qk4.s, l2w.s,
                            L2NORM_EPS / (float)dk);
    gname qk3 = reshape(b, base, "qk_l2norm/Reshape_1", nrm.s, 3, flat);
    split2(b, base, "qk/Split", qk3.s, key_dim, key_dim, q, k);
    return 0;
}

/* beta = sigmoid(b), decay = -exp(A_log) * softplus(a + dt_bias), float32 [B, T, nv]. */
static int gates(gb *b, const linear_attn_desc *d, const char *base, const char *init,
                 const char *input, gname *beta, gname *decay, m2o_err *err)
{
    gname bo, ao, nb = gname_fmt("%s/b_proj", base), ni = gname_fmt("%s.b_proj", init);
    if (gb_linear(b, nb.s, ni.s, &d->b, "linear_attn.in_proj_b", d->layer, input, &bo, err))
        return -1;
    nb = gname_fmt("%s/a_proj", base);
    ni = gname_fmt("%s.a_proj", init);
    if (gb_linear(b, nb.s, ni.s, &d->a, "linear_attn.in_proj_a", d->layer, input, &ao, err))
        return -1;
    gname bf = to_f32(b, base, "b_proj/Cast", &bo), af = to_f32(b, base, "a_proj/Cast", &ao);
    *beta = unary(b, "Sigmoid", base, "beta/Sigmoid", bf.s);

    gname dt = gname_fmt("%s.dt_bias", init), neg_a = gname_fmt("%s.neg_exp_A_log", init);
    int64_t nv = d->num_v_heads;
    if (gb_add_small_f32(b, dt.s, 1, &d->dt_bias, 1, &nv, err) ||
        add_neg_a(b, neg_a.s, d->A_log, err))
        return -1;
    gname shifted = binary(b, "Add", base, "decay/Add", af.s, dt.s);
    gname sp = unary(b, "Softplus", base, "decay/Softplus", shifted.s);
    *decay = binary(b, "Mul", base, "decay/Mul", sp.s, neg_a.s);
    return 0;
}

/* o [B, T, nv dv] float32 → RMSNorm per value head * norm.weight * silu(z) → io dtype. */
static int gated_norm(gb *b, const linear_attn_desc *d, const char *base, const char *init,
                      const char *o, const gname *z, gname *out, m2o_err *err)
{
    int64_t nv = d->num_v_heads, dv = d->head_v_dim;
    gname w = gname_fmt("%s.norm.weight", init);
    if (gb_add_small_f32(b, w.s, 1, &d->norm_w, 1, &dv, err))
        return -1;
    int64_t heads[4] = {0, 0, nv, dv}, flat[3] = {0, 0, nv * dv};
    gname o4 = reshape(b, base, "norm/Reshape", o, 4, heads);
    gname nrm = rmsnorm_f32(b, base, "norm/SimplifiedLayerNorm", o4.s, w.s, d->norm_eps);
    gname o3 = reshape(b, base, "norm/Reshape_1", nrm.s, 3, flat);
    gname zf = to_f32(b, base, "z_proj/Cast", z);
    gname sig = unary(b, "Sigmoid", base, "norm/gate/Sigmoid", zf.s);
    gname silu = binary(b, "Mul", base, "norm/gate/Mul", zf.s, sig.s);
    gname gated = binary(b, "Mul", base, "norm/Mul", o3.s, silu.s);
    *out = b->io == ONNX_FLOAT ? gated : cast(b, base, "norm/Cast", gated.s, b->io);
    return 0;
}

int gb_linear_attention(gb *b, const linear_attn_desc *d, const char *input, gname *out,
                        m2o_err *err)
{
    int L = d->layer;
    if (linear_attn_check(d, b->md->hidden_size, err))
        return m2o_wrap(err, "layer %d (linear_attention)", L);
    gname base = gname_fmt("/model/layers.%d/linear_attn", L);
    gname init = gname_fmt("model.layers.%d.linear_attn", L);
    add_state_io(b, d);

    gname qkv, z, nb = gname_fmt("%s/qkv_proj", base.s), ni = gname_fmt("%s.qkv_proj", init.s);
    if (gb_linear(b, nb.s, ni.s, &d->qkv, "linear_attn.in_proj_qkv", L, input, &qkv, err))
        return -1;
    nb = gname_fmt("%s/z_proj", base.s);
    ni = gname_fmt("%s.z_proj", init.s);
    if (gb_linear(b, nb.s, ni.s, &d->z, "linear_attn.in_proj_z", L, input, &z, err))
        return -1;

    gname qkv_f = to_f32(b, base.s, "qkv_proj/Cast", &qkv), q, k, v, beta, decay;
    if (conv_and_qk_norm(b, d, base.s, init.s, &qkv_f, &q, &k, &v, err) ||
        gates(b, d, base.s, init.s, input, &beta, &decay, err))
        return -1;

    gname past = gname_fmt("past_key_values.%d.recurrent_state", L);
    gname present = gname_fmt("present.%d.recurrent_state", L);
    gname node = gname_fmt("%s/LinearAttention", base.s);
    gname o = gname_out(node.s, 0);
    const char *in[6] = {q.s, k.s, v.s, past.s, decay.s, beta.s};
    const char *outs[2] = {o.s, present.s};
    graph_node *n = graph_add_node(b->g, "LinearAttention", "com.microsoft", node.s, 6, in, 2,
                                   outs);
    node_attr_int(n, "q_num_heads", d->num_k_heads);
    node_attr_int(n, "kv_num_heads", d->num_v_heads);
    node_attr_string(n, "update_rule", "gated_delta");
    node_attr_float(n, "scale", 1.0f / sqrtf((float)d->head_k_dim));

    gname normed;
    if (gated_norm(b, d, base.s, init.s, o.s, &z, &normed, err))
        return -1;
    nb = gname_fmt("%s/out_proj", base.s);
    ni = gname_fmt("%s.out_proj", init.s);
    return gb_linear(b, nb.s, ni.s, &d->out, "linear_attn.out_proj", L, normed.s, out, err);
}
