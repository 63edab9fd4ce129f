/* Qwen3.5/3.6-MoE (Qwen3_5MoeForCausalLM, and the text decoder of
 * Qwen3_5MoeForConditionalGeneration, whose tensors sit under model.language_model.; the vision
 * tower is not exported): which checkpoint tensors make which decoder blocks, following
 * transformers' modeling_qwen3_5_moe.py.
 *
 * Per layer: RMSNorm → token mixer → RMSNorm → MoE, residuals around both. Every RMSNorm of the
 * decoder (input/post-attention/final norms, q_norm/k_norm) multiplies by (1 + w): the weights
 * are exported with the 1 added. The mixer is, per config.layer_types:
 *   linear_attention: Gated DeltaNet, linear_attn.{in_proj_qkv, in_proj_z, in_proj_b, in_proj_a,
 *     conv1d, A_log, dt_bias, norm, out_proj} → graph/linear_attention.h (conv and recurrent
 *     states instead of a KV cache);
 *   full_attention: self_attn.q_proj gives per head head_dim query rows then head_dim output-gate
 *     rows, q_norm/k_norm per head, rotary over the first partial_rotary_factor of each head,
 *     GQA, output times sigmoid(gate), o_proj (graph attention block with q_gate).
 * MoE: router mlp.gate, softmax → top-k → renormalised; per-expert or fused experts; shared
 * expert scaled by sigmoid(shared_expert_gate) — the Qwen MoE block of qwen_moe.c. */
#include "arch/qwen3_5_moe.h"

#include <stdio.h>
#include <string.h>

#include "arch/arch.h"
#include "graph/blocks.h"
#include "graph/rope.h"

static int linear_part(gb *b, linear_src *s, int64_t rows, int64_t cols, int L, const char *name,
                       m2o_err *err)
{
    int64_t shape[2] = {rows, cols};
    memset(s, 0, sizeof *s);
    s->n_parts = 1;
    return gb_tensorf(b, &s->w[0], err, true, 2, shape, "%slayers.%d.linear_attn.%s.weight",
                      b->md->prefix, L, name);
}

int qwen3_5_linear_attn_desc(gb *b, int L, linear_attn_desc *d, m2o_err *err)
{
    const model_desc *md = b->md;
    const char *p = md->prefix;
    *d = (linear_attn_desc){.layer = L, .num_k_heads = md->linear_num_key_heads,
                            .num_v_heads = md->linear_num_value_heads,
                            .head_k_dim = md->linear_key_head_dim,
                            .head_v_dim = md->linear_value_head_dim,
                            .conv_kernel = md->linear_conv_kernel_dim,
                            .norm_eps = (float)md->rms_norm_eps};
    if (linear_attn_check_dims(d, err))
        return -1;
    int64_t H = md->hidden_size, conv = linear_attn_conv_dim(d);
    int64_t nv = d->num_v_heads, vdim = nv * d->head_v_dim;
    int64_t conv_shape[3] = {conv, 1, d->conv_kernel};
    if (linear_part(b, &d->qkv, conv, H, L, "in_proj_qkv", err) ||
        linear_part(b, &d->z, vdim, H, L, "in_proj_z", err) ||
        linear_part(b, &d->b, nv, H, L, "in_proj_b", err) ||
        linear_part(b, &d->a, nv, H, L, "in_proj_a", err) ||
        linear_part(b, &d->out, H, vdim, L, "out_proj", err) ||
        gb_tensorf(b, &d->conv_w, err, true, 3, conv_shape, "%slayers.%d.linear_attn.conv1d.weight",
                   p, L) ||
        gb_tensorf(b, &d->conv_b, err, false, 1, &conv, "%slayers.%d.linear_attn.conv1d.bias", p,
                   L) ||
        gb_tensorf(b, &d->A_log, err, true, 1, &nv, "%slayers.%d.linear_attn.A_log", p, L) ||
        gb_tensorf(b, &d->dt_bias, err, true, 1, &nv, "%slayers.%d.linear_attn.dt_bias", p, L) ||
        gb_tensorf(b, &d->norm_w, err, true, 1, &d->head_v_dim,
                   "%slayers.%d.linear_attn.norm.weight", p, L))
        return -1;
    return linear_attn_check(d, H, err);
}

/* Full-attention layer: q_proj rows hold, per head, the query then its output gate (2 head_dim),
 * k/v plain; q_norm/k_norm stored as offsets from 1 like every Qwen3.5 RMSNorm. */
static int load_attention(gb *b, int L, attn_desc *a, m2o_err *err)
{
    const model_desc *md = b->md;
    const char *p = md->prefix;
    int64_t H = md->hidden_size, hd = md->head_dim;
    int64_t nq = md->num_heads * hd, nkv = md->num_kv_heads * hd;
    int64_t rows[3] = {md->attn_output_gate ? 2 * nq : nq, nkv, nkv};
    const char *proj[3] = {"q", "k", "v"};
    memset(a, 0, sizeof *a);
    a->layer = L;
    a->q_gate = md->attn_output_gate;
    a->qk_norm_offset = 1.0f;
    a->qkv.n_parts = 3;
    for (int i = 0; i < 3; i++) {
        int64_t sw[2] = {rows[i], H};
        if (gb_tensorf(b, &a->qkv.w[i], err, true, 2, sw, "%slayers.%d.self_attn.%s_proj.weight",
                       p, L, proj[i]) ||
            (md->attention_bias &&
             gb_tensorf(b, &a->qkv.bias[i], err, true, 1, &rows[i],
                        "%slayers.%d.self_attn.%s_proj.bias", p, L, proj[i])))
            return -1;
    }
    int64_t so[2] = {H, nq};
    a->o.n_parts = 1;
    return gb_tensorf(b, &a->o.w[0], err, true, 2, so, "%slayers.%d.self_attn.o_proj.weight", p,
                      L) ||
                   (md->attention_bias &&
                    gb_tensorf(b, &a->o.bias[0], err, true, 1, &H,
                               "%slayers.%d.self_attn.o_proj.bias", p, L)) ||
                   gb_tensorf(b, &a->q_norm, err, true, 1, &hd,
                              "%slayers.%d.self_attn.q_norm.weight", p, L) ||
                   gb_tensorf(b, &a->k_norm, err, true, 1, &hd,
                              "%slayers.%d.self_attn.k_norm.weight", p, L)
               ? -1
               : 0;
}

static int build_mixer(gb *b, int L, const char *input, gname *out, m2o_err *err)
{
    if (b->md->layer_type[L] == LAYER_LINEAR_ATTENTION) {
        linear_attn_desc d;
        if (qwen3_5_linear_attn_desc(b, L, &d, err))
            return -1;
        return gb_linear_attention(b, &d, input, out, err);
    }
    attn_desc a;
    return load_attention(b, L, &a, err) || gb_attention(b, &a, input, out, err) ? -1 : 0;
}

/* RMSNorm → token mixer → RMSNorm → MoE with shared expert; residuals ride in the skip norms.
 * Every Qwen3.5 RMSNorm weight is stored as w - 1 (transformers multiplies by 1 + w). */
static int build_layer(gb *b, int L, gname *hidden, gname *residual, m2o_err *err)
{
    const model_desc *md = b->md;
    const char *p = md->prefix;
    int64_t H = md->hidden_size;
    const st_tensor *ln1, *ln2;
    if (gb_tensorf(b, &ln1, err, true, 1, &H, "%slayers.%d.input_layernorm.weight", p, L) ||
        gb_tensorf(b, &ln2, err, true, 1, &H, "%slayers.%d.post_attention_layernorm.weight", p, L))
        return -1;
    gname normed, mixed, prev = *residual;
    gname w = gname_fmt("model.layers.%d.input_layernorm.weight", L);
    if (L == 0) {
        gname node = gname_fmt("/model/layers.%d/input_layernorm/SimplifiedLayerNorm", L);
        *residual = *hidden;
        if (gb_rmsnorm(b, node.s, w.s, ln1, 1.0f, hidden->s, &normed, err))
            return -1;
    } else {
        gname node = gname_fmt("/model/layers.%d/input_layernorm/SkipLayerNorm", L);
        if (gb_skip_rmsnorm(b, node.s, w.s, ln1, 1.0f, hidden->s, prev.s, &normed, residual, err))
            return -1;
    }
    if (build_mixer(b, L, normed.s, &mixed, err))
        return -1;
    gname node = gname_fmt("/model/layers.%d/post_attention_layernorm/SkipLayerNorm", L);
    w = gname_fmt("model.layers.%d.post_attention_layernorm.weight", L);
    prev = *residual;
    if (gb_skip_rmsnorm(b, node.s, w.s, ln2, 1.0f, mixed.s, prev.s, &normed, residual, err))
        return -1;
    /* router → experts + sigmoid-gated shared expert, the Qwen MoE block (qwen_moe.c) */
    return qwen_moe_build_mlp(b, L, normed.s, hidden, err);
}

static int check_desc(const model_desc *md, m2o_err *err)
{
    if (md->num_layers < 1 || md->num_layers > MD_MAX_LAYERS)
        return m2o_fail(err, "config.json: num_hidden_layers %d out of range 1..%d",
                        md->num_layers, MD_MAX_LAYERS);
    if (md->num_heads < 1 || md->num_kv_heads < 1 || md->num_heads % md->num_kv_heads)
        return m2o_fail(err, "config.json: num_attention_heads %d must be a positive multiple "
                             "of num_key_value_heads %d", md->num_heads, md->num_kv_heads);
    if (md->num_experts < 1 || md->top_k < 1 || md->top_k > md->num_experts ||
        md->moe_intermediate_size < 1 || md->hidden_size < 1 || md->head_dim < 1 ||
        md->vocab_size < 1)
        return m2o_fail(err, "config.json: Qwen3.5-MoE needs positive hidden_size, head_dim, "
                             "vocab_size, moe_intermediate_size, num_experts and "
                             "num_experts_per_tok <= num_experts");
    for (int i = 0; i < md->num_layers; i++)
        if (md->layer_type[i] != LAYER_LINEAR_ATTENTION &&
            md->layer_type[i] != LAYER_FULL_ATTENTION)
            return m2o_fail(err, "config.json: layer_types[%d] must be linear_attention or "
                                 "full_attention for Qwen3.5-MoE", i);
    return 0;
}

int qwen3_5_moe_build_graph(gb *b, m2o_err *err)
{
    const model_desc *md = b->md;
    if (check_desc(md, err))
        return -1;
    bool kv_layer[MD_MAX_LAYERS];
    for (int i = 0; i < md->num_layers; i++)
        kv_layer[i] = md->layer_type[i] == LAYER_FULL_ATTENTION;
    /* Qwen3.5 RMSNorms scale by (1 + w) */
    return gb_decoder(b, kv_layer, 1.0f, build_layer, err);
}
