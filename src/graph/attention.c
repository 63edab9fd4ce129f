/* Attention block: packed QKV projection → GroupQueryAttention (rotary inside, KV cache,
 * optional sliding window and attention sinks) → output projection. */
#include "graph/blocks.h"

#include <math.h>

#include "onnx/genai_config.h"

int gqa_local_window_size(int window)
{
    /* Measured with ONNX Runtime 1.30 on the gpt-oss fixtures (windows 3 and 4 over 12 tokens,
     * prefill and decode): local_window_size = config sliding_window reproduces transformers to
     * 1e-6, while sliding_window - 1 diverges from the first position past the window. */
    return window > 0 ? window : -1;
}

/* RMSNorm over each head: [B, S, heads * hd] → [B, S, heads, hd] → norm → back. */
static int head_norm(gb *b, int L, const char *which, const st_tensor *w, float offset,
                     const char *input, gname *out, m2o_err *err)
{
    int64_t hd = b->md->head_dim;
    if (w->numel != hd)
        return m2o_fail(err, "tensor %s: %lld elements, expected head_dim %lld", w->name,
                        (long long)w->numel, (long long)hd);
    int64_t split[4] = {0, 0, -1, hd}, merge[3] = {0, 0, -1};
    gname c4 = gb_const_i64(b, 1, 4, split), c3 = gb_const_i64(b, 1, 3, merge);
    gname r1 = gname_fmt("/model/layers.%d/attn/%s_norm/Reshape_1", L, which);
    const char *in1[2] = {input, c4.s};
    gb_node(b, "Reshape", NULL, r1.s, 2, in1, 1);
    gname node = gname_fmt("/model/layers.%d/attn/%s_norm/SimplifiedLayerNorm", L, which);
    gname wname = gname_fmt("model.layers.%d.attn.%s_norm.layernorm.weight", L, which);
    gname normed;
    if (gb_add_small(b, wname.s, 1, &w, offset, 1, &hd, err))
        return -1;
    gname r1o = gname_out(r1.s, 0);
    const char *in2[2] = {r1o.s, wname.s};
    graph_node *n = gb_node(b, "SimplifiedLayerNormalization", NULL, node.s, 2, in2, 1);
    node_attr_int(n, "axis", -1);
    node_attr_float(n, "epsilon", (float)b->md->rms_norm_eps);
    node_attr_int(n, "stash_type", 1);
    normed = gname_out(node.s, 0);
    gname r2 = gname_fmt("/model/layers.%d/attn/%s_norm/Reshape_2", L, which);
    const char *in3[2] = {normed.s, c3.s};
    gb_node(b, "Reshape", NULL, r2.s, 2, in3, 1);
    *out = gname_out(r2.s, 0);
    return 0;
}

/* A gated q projection [B, S, heads * 2hd] → query [B, S, heads, hd] and the gate flattened
 * back to [B, S, heads * hd]. */
static void split_query_gate(gb *b, int L, const char *q, gname *query, gname *gate)
{
    const model_desc *md = b->md;
    int64_t hd = md->head_dim, heads[4] = {0, 0, md->num_heads, 2 * hd}, halves[2] = {hd, hd};
    int64_t flat[3] = {0, 0, -1};
    gname c4 = gb_const_i64(b, 1, 4, heads), c2 = gb_const_i64(b, 1, 2, halves);
    gname c3 = gb_const_i64(b, 1, 3, flat);
    gname r = gname_fmt("/model/layers.%d/attn/q_gate/Reshape", L);
    gname sp = gname_fmt("/model/layers.%d/attn/q_gate/Split", L);
    gname rg = gname_fmt("/model/layers.%d/attn/q_gate/Reshape_1", L);
    const char *in_r[2] = {q, c4.s};
    gb_node(b, "Reshape", NULL, r.s, 2, in_r, 1);
    gname r_out = gname_out(r.s, 0);
    const char *in_sp[2] = {r_out.s, c2.s};
    graph_node *n = gb_node(b, "Split", NULL, sp.s, 2, in_sp, 2);
    node_attr_int(n, "axis", -1);
    *query = gname_out(sp.s, 0);
    gname g4 = gname_out(sp.s, 1);
    const char *in_rg[2] = {g4.s, c3.s};
    gb_node(b, "Reshape", NULL, rg.s, 2, in_rg, 1);
    *gate = gname_out(rg.s, 0);
}

/* The split-off query [B, S, heads, hd] flattened to [B, S, heads * hd] before its head norm.
 * Not only GQA's input format: ONNX Runtime's GroupQueryAttentionPreNormFusion (level-2, CUDA
 * and WebGPU only) folds Reshape → SimplifiedLayerNormalization → Reshape → GQA into GQA and
 * feeds GQA the inner Reshape's input, assuming it is the 3-D projection. A 4-D query there
 * makes every CUDA session fail at load ("Inputs 0 (query) shall be 3 dimensions"). */
static gname flatten_heads(gb *b, int L, const char *query)
{
    int64_t flat[3] = {0, 0, -1};
    gname c3 = gb_const_i64(b, 1, 3, flat);
    gname r = gname_fmt("/model/layers.%d/attn/q_gate/Reshape_2", L);
    const char *in_r[2] = {query, c3.s};
    gb_node(b, "Reshape", NULL, r.s, 2, in_r, 1);
    return gname_out(r.s, 0);
}

/* attention output * Sigmoid(gate) */
static gname apply_output_gate(gb *b, int L, const char *attn, const char *gate)
{
    gname sig = gname_fmt("/model/layers.%d/attn/output_gate/Sigmoid", L);
    gname mul = gname_fmt("/model/layers.%d/attn/output_gate/Mul", L);
    const char *in_sig[1] = {gate};
    gb_node(b, "Sigmoid", NULL, sig.s, 1, in_sig, 1);
    gname sig_out = gname_out(sig.s, 0);
    const char *in_mul[2] = {attn, sig_out.s};
    gb_node(b, "Mul", NULL, mul.s, 2, in_mul, 1);
    return gname_out(mul.s, 0);
}

/* Separate q/k/v projections with per-head norms on q and k and the output gate split off a
 * gated q projection (GQA then takes three inputs). */
static int qk_normed_projections(gb *b, const attn_desc *a, const char *input,
                                 gname *query, gname *key, gname *value, gname *gate,
                                 m2o_err *err)
{
    static const char *const names[3] = {"q", "k", "v"};
    static const char *const roles[3] = {"attn.q", "attn.k", "attn.v"};
    gname outs[3];
    if (a->qkv.n_parts != 3)
        return m2o_fail(err, "layer %d: q/k norms need separate q, k and v projections", a->layer);
    for (int i = 0; i < 3; i++) {
        linear_src s = {.n_parts = 1, .w = {a->qkv.w[i]}, .bias = {a->qkv.bias[i]}};
        gname base = gname_fmt("/model/layers.%d/attn/%s_proj", a->layer, names[i]);
        gname init = gname_fmt("model.layers.%d.attn.%s_proj", a->layer, names[i]);
        if (gb_linear(b, base.s, init.s, &s, roles[i], a->layer, input, &outs[i], err))
            return -1;
    }
    *key = outs[1];
    *value = outs[2];
    gname q = outs[0];
    if (a->q_gate) {
        split_query_gate(b, a->layer, outs[0].s, &q, gate);
        q = flatten_heads(b, a->layer, q.s);
    }
    *query = q;
    if (a->q_norm &&
        head_norm(b, a->layer, "q", a->q_norm, a->qk_norm_offset, q.s, query, err))
        return -1;
    if (a->k_norm &&
        head_norm(b, a->layer, "k", a->k_norm, a->qk_norm_offset, outs[1].s, key, err))
        return -1;
    return 0;
}

/* The attention sinks initializer (gpt-oss), or an empty name. */
static int add_sinks(gb *b, const attn_desc *a, gname *sinks, m2o_err *err)
{
    *sinks = (gname){{0}};
    if (!a->sinks)
        return 0;
    int64_t nh = b->md->num_heads;
    if (a->sinks->numel != nh)
        return m2o_fail(err, "tensor %s: %lld elements, expected num_attention_heads %lld",
                        a->sinks->name, (long long)a->sinks->numel, (long long)nh);
    *sinks = gname_fmt("model.layers.%d.attn.sinks", a->layer);
    return gb_add_small(b, sinks->s, 1, &a->sinks, 0.0f, 1, &nh, err);
}

/* The GroupQueryAttention node over packed qkv (or query, key, value); returns its output. */
static gname gqa_node(gb *b, const attn_desc *a, const gname *qkv, const gname *key,
                      const gname *value, const gname *sinks)
{
    const model_desc *md = b->md;
    int L = a->layer;
    gname past_k = gname_fmt("past_key_values.%d.key", L);
    gname past_v = gname_fmt("past_key_values.%d.value", L);
    gname pres_k = gname_fmt("present.%d.key", L);
    gname pres_v = gname_fmt("present.%d.value", L);
    gname node = gname_fmt("/model/layers.%d/attn/GroupQueryAttention", L);
    gname o0 = gname_out(node.s, 0);
    const char *in[12] = {qkv->s, key->s, value->s, past_k.s, past_v.s, b->seqlens_k.s,
                          b->total_seq_len.s, b->cos_cache.s, b->sin_cache.s, "", "", sinks->s};
    const char *outs[3] = {o0.s, pres_k.s, pres_v.s};
    graph_node *n = graph_add_node(b->g, "GroupQueryAttention", "com.microsoft", node.s,
                                   a->sinks ? 12 : 9, in, 3, outs);
    node_attr_int(n, "num_heads", md->num_heads);
    node_attr_int(n, "kv_num_heads", md->num_kv_heads);
    node_attr_float(n, "scale", 1.0f / sqrtf((float)md->head_dim));
    node_attr_int(n, "do_rotary", 1);
    node_attr_int(n, "rotary_interleaved", 0);
    node_attr_int(n, "local_window_size", gqa_local_window_size(a->window));
    /* genai_config.json lists sliding layers under decoder.sliding_window, so onnxruntime-genai
     * gives them window-sized caches; the op indexes those cache-relative and evicts the oldest */
    if (a->window > 0 && gqa_window_sized_cache(b->o->ep))
        node_attr_int(n, "sliding_window_cache", 1);
    node_attr_float(n, "softcap", 0.0f);
    return o0;
}

int gb_attention(gb *b, const attn_desc *a, const char *input, gname *out, m2o_err *err)
{
    const model_desc *md = b->md;
    int L = a->layer;
    int q_rows = a->q_gate ? 2 : 1; /* a gated q_proj also yields the output gate */
    int64_t want_n = (int64_t)(q_rows * md->num_heads + 2 * md->num_kv_heads) * md->head_dim;
    if (linear_src_n(&a->qkv) != want_n)
        return m2o_fail(err, "layer %d: q/k/v projections give %lld rows, expected (%d x %d + 2 x "
                             "%d heads) x head_dim %d = %lld",
                        L, (long long)linear_src_n(&a->qkv), q_rows, md->num_heads,
                        md->num_kv_heads, md->head_dim, (long long)want_n);
    if (!b->seqlens_k.s[0] || !b->cos_cache.s[0])
        return m2o_fail(err, "internal: gb_attention needs gb_attention_mask and "
                             "gb_rotary_caches first");
    gname qkv, key = {{0}}, value = {{0}}, gate = {{0}}, sinks;
    if (a->q_norm || a->k_norm || a->q_gate) {
        if (qk_normed_projections(b, a, input, &qkv, &key, &value, &gate, err))
            return -1;
    } else {
        gname base = gname_fmt("/model/layers.%d/attn/qkv_proj", L);
        gname init = gname_fmt("model.layers.%d.attn.qkv_proj", L);
        if (gb_linear(b, base.s, init.s, &a->qkv, "attn.qkv", L, input, &qkv, err))
            return -1;
    }
    if (add_sinks(b, a, &sinks, err))
        return -1;
    gname o0 = gqa_node(b, a, &qkv, &key, &value, &sinks);
    gname attn = a->q_gate ? apply_output_gate(b, L, o0.s, gate.s) : o0;
    gname base = gname_fmt("/model/layers.%d/attn/o_proj", L);
    gname init = gname_fmt("model.layers.%d.attn.o_proj", L);
    return gb_linear(b, base.s, init.s, &a->o, "attn.o", L, attn.s, out, err);
}
