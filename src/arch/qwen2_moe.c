/* Qwen2-MoE (Qwen2MoeForCausalLM), following transformers' modeling_qwen2_moe.py and
 * configuration_qwen2_moe.py:
 *
 *   RMSNorm → attention → RMSNorm → MLP, residuals around both.
 *   attention: q/k/v/o projections, q/k/v biases (qkv_bias), none on o_proj; without layer_types,
 *     use_sliding_window slides the even layers below max_window_layers.
 *   MLP: the Qwen MoE block (qwen_moe_shared.c) with its sigmoid-gated shared expert. */
#include "arch/arch.h"
#include "arch/family.h"

static int mixer(gb *b, int L, const char *input, gname *out, m2o_err *err)
{
    const model_desc *md = b->md;
    attn_layout lay = {.qkv_bias = md->qkv_bias || md->attention_bias,
                       .o_bias = md->attention_bias};
    return arch_attention_mixer(b, L, &lay, input, out, err);
}

static int build_layer(gb *b, int L, gname *hidden, gname *residual, m2o_err *err)
{
    return arch_decoder_layer(b, L, hidden, residual, mixer, qwen_moe_build_mlp, err);
}

static int build_graph(gb *b, m2o_err *err)
{
    const model_desc *md = b->md;
    if (arch_check_common(md, err) || qwen_moe_check_mlp(md, err))
        return -1;
    bool any_sparse = false;
    for (int i = 0; i < md->num_layers; i++)
        any_sparse |= md->sparse_layer[i];
    if (any_sparse && md->shared_expert_intermediate_size < 1)
        return m2o_fail(err, "config.json: qwen2_moe needs a positive "
                             "shared_expert_intermediate_size");
    return gb_decoder(b, NULL, 0.0f, build_layer, err);
}

/* ---- config.json ---- */

static const family_defaults k_defaults = {
    .rms_norm_eps = 1e-6, .max_position_embeddings = 32768, .rope_theta = 10000.0,
    .partial_rotary_factor = 1.0, .num_experts_key = "num_experts"};

static int parse_config(const cfg_src *s, model_desc *d)
{
    int max_window = 28;
    if (qwen_moe_parse_mlp(s, d) || cfg_get_bool(s, "qkv_bias", true, &d->qkv_bias) ||
        cfg_get_size(s, "shared_expert_intermediate_size", true, 0,
                     &d->shared_expert_intermediate_size) ||
        qwen_moe_parse_sliding_window(s, d))
        return -1;
    int rc = cfg_layer_types(s, d);
    if (rc < 0 || (rc == 1 && cfg_get_int(s, "max_window_layers", false, 28, &max_window)))
        return -1;
    for (int i = 0; rc == 1 && i < d->num_layers; i++)
        d->layer_type[i] = d->sliding_window > 0 && i % 2 == 0 && i < max_window
                               ? LAYER_SLIDING_ATTENTION
                               : LAYER_FULL_ATTENTION;
    return cfg_check_layer_types(s, d, LAYER_LINEAR_ATTENTION);
}

/* old checkpoints may hold rotary inv_freq buffers, computed from the config */
static const char *const k_skipped[] = {"*.rotary_emb.inv_freq", NULL};

M2O_FAMILY(qwen2_moe, "Qwen2-MoE", "qwen2_moe", NULL, &k_defaults, parse_config, k_skipped,
           build_graph, "qwen2", EXPERT_NAMING_QWEN, FAMILY_NO_SYNTH);
