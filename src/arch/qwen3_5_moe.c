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
 * expert scaled by sigmoid(shared_expert_gate) — the Qwen MoE block of qwen_moe_shared.c. */
#include "arch/qwen3_5_moe.h"

#include <stdio.h>
#include <string.h>

#include "arch/arch.h"
#include "arch/family.h"
#include "graph/blocks.h"

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

static int build_mixer(gb *b, int L, const char *input, gname *out, m2o_err *err)
{
    if (b->md->layer_type[L] == LAYER_LINEAR_ATTENTION) {
        linear_attn_desc d;
        if (qwen3_5_linear_attn_desc(b, L, &d, err))
            return -1;
        return gb_linear_attention(b, &d, input, out, err);
    }
    /* q_proj rows hold, per head, the query then its output gate (2 head_dim); q_norm/k_norm
     * stored as offsets from 1 like every Qwen3.5 RMSNorm (md->norm_weight_offset) */
    bool bias = b->md->attention_bias;
    attn_layout lay = {.qkv_bias = bias, .o_bias = bias, .qk_norm = true,
                       .q_gate = b->md->attn_output_gate};
    return arch_attention_mixer(b, L, &lay, input, out, err);
}

/* RMSNorm → token mixer → RMSNorm → MoE with shared expert (the Qwen MoE block); residuals ride
 * in the skip norms. */
static int build_layer(gb *b, int L, gname *hidden, gname *residual, m2o_err *err)
{
    return arch_decoder_layer(b, L, hidden, residual, build_mixer, qwen_moe_build_mlp, err);
}

static int check_desc(const model_desc *md, m2o_err *err)
{
    if (arch_check_common(md, err))
        return -1;
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

static int build_graph(gb *b, m2o_err *err)
{
    const model_desc *md = b->md;
    if (check_desc(md, err))
        return -1;
    bool kv_layer[MD_MAX_LAYERS];
    for (int i = 0; i < md->num_layers; i++)
        kv_layer[i] = md->layer_type[i] == LAYER_FULL_ATTENTION;
    /* Qwen3.5 RMSNorms scale by (1 + w) */
    return gb_decoder(b, kv_layer, md->norm_weight_offset, build_layer, err);
}

/* ---- config.json ---- */

static const family_defaults k_defaults = {
    .head_dim = 256, .rms_norm_eps = 1e-6, .max_position_embeddings = 32768,
    .rope_theta = 10000.0, .partial_rotary_factor = 0.25, .num_experts_key = "num_experts"};

static int parse_fields(const cfg_src *s, model_desc *d)
{
    return cfg_get_size(s, "moe_intermediate_size", true, 0, &d->moe_intermediate_size) ||
                   cfg_get_size(s, "intermediate_size", false, 0, &d->intermediate_size) ||
                   cfg_get_size(s, "shared_expert_intermediate_size", true, 0,
                                &d->shared_expert_intermediate_size) ||
                   cfg_get_bool(s, "attention_bias", false, &d->attention_bias) ||
                   cfg_get_bool(s, "attn_output_gate", true, &d->attn_output_gate) ||
                   cfg_get_size(s, "linear_conv_kernel_dim", false, 4, &d->linear_conv_kernel_dim) ||
                   cfg_get_size(s, "linear_key_head_dim", false, 128, &d->linear_key_head_dim) ||
                   cfg_get_size(s, "linear_value_head_dim", false, 128,
                                &d->linear_value_head_dim) ||
                   cfg_get_size(s, "linear_num_key_heads", false, 16, &d->linear_num_key_heads) ||
                   cfg_get_size(s, "linear_num_value_heads", false, 32,
                                &d->linear_num_value_heads)
               ? -1
               : 0;
}

static int parse_config(const cfg_src *s, model_desc *d)
{
    cfg_all_sparse(d);
    d->qk_norm = true;
    d->norm_topk_prob = true;      /* the Qwen3.5 router always renormalises */
    d->norm_weight_offset = 1.0f;  /* every RMSNorm weight is stored as w - 1 */
    if (parse_fields(s, d))
        return -1;
    qwen_plain_swiglu(d);
    int rc = cfg_layer_types(s, d), interval = 4;
    if (rc < 0 || (rc == 1 && cfg_get_size(s, "full_attention_interval", false, 4, &interval)))
        return -1;
    for (int i = 0; rc == 1 && i < d->num_layers; i++)
        d->layer_type[i] = (i + 1) % interval ? LAYER_LINEAR_ATTENTION : LAYER_FULL_ATTENTION;
    return cfg_check_layer_types(s, d, LAYER_SLIDING_ATTENTION);
}

/* the multi-token-prediction head (mtp.*) generation does not run, the vision tower of the
 * vision-language checkpoints, rotary inv_freq buffers of old checkpoints */
static const char *const k_skipped[] = {"mtp.", "model.visual.", "*.rotary_emb.inv_freq", NULL};

M2O_FAMILY(qwen3_5_moe, "Qwen3.5-MoE", "qwen3_5_moe_text", "qwen3_5_moe", &k_defaults,
           parse_config, k_skipped, build_graph,
           /* onnxruntime-genai's "qwen3_5" is the vision-language model (it opens
            * vision.filename); the text-only decoder is "qwen3_5_moe_text" */
           "qwen3_5_moe_text", EXPERT_NAMING_QWEN, FAMILY_NO_SYNTH);
