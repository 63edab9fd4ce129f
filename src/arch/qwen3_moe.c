/* Qwen3-MoE (Qwen3MoeForCausalLM), following transformers' modeling_qwen3_moe.py and
 * configuration_qwen3_moe.py:
 *
 *   RMSNorm → attention → RMSNorm → MLP, residuals around both.
 *   attention: q/k/v/o projections, q_norm / k_norm [head_dim] per head before RoPE, biases only
 *     with attention_bias (o_proj included); sliding windows only where layer_types says so.
 *   MLP: the Qwen MoE block (qwen_moe_shared.c), no shared expert. */
#include <stdio.h>

#include "arch/arch.h"
#include "arch/family.h"
#include "synth/synth_family.h"

static int mixer(gb *b, int L, const char *input, gname *out, m2o_err *err)
{
    bool bias = b->md->attention_bias;
    attn_layout lay = {.qkv_bias = bias, .o_bias = bias, .qk_norm = true};
    return arch_attention_mixer(b, L, &lay, input, out, err);
}

static int build_layer(gb *b, int L, gname *hidden, gname *residual, m2o_err *err)
{
    return arch_decoder_layer(b, L, hidden, residual, mixer, qwen_moe_build_mlp, err);
}

static int build_graph(gb *b, m2o_err *err)
{
    if (arch_check_common(b->md, err) || qwen_moe_check_mlp(b->md, err))
        return -1;
    return gb_decoder(b, NULL, 0.0f, build_layer, err);
}

/* ---- config.json ---- */

static const family_defaults k_defaults = {
    .rms_norm_eps = 1e-6, .max_position_embeddings = 32768, .rope_theta = 10000.0,
    .partial_rotary_factor = 1.0, .num_experts_key = "num_experts"};

static int parse_config(const cfg_src *s, model_desc *d)
{
    d->qk_norm = true;
    if (qwen_moe_parse_mlp(s, d) || cfg_get_bool(s, "attention_bias", false, &d->attention_bias) ||
        qwen_moe_parse_sliding_window(s, d))
        return -1;
    int rc = cfg_layer_types(s, d);
    if (rc < 0)
        return -1;
    if (rc == 1 && d->sliding_window > 0) /* transformers has no default placement for it */
        return m2o_fail(s->err, "%s: use_sliding_window is true but there is no layer_types "
                        "saying which layers slide — add layer_types to config.json", s->what);
    for (int i = 0; rc == 1 && i < d->num_layers; i++)
        d->layer_type[i] = LAYER_FULL_ATTENTION;
    return cfg_check_layer_types(s, d, LAYER_LINEAR_ATTENTION);
}

/* ---- synthetic checkpoints (moe2onnx synth): dimensions and token ids of the public configs
 * (docs/FORMATS.md §18); the tiny preset matches tests/fixtures/qwen3-moe-tiny ---- */

static const synth_preset k_presets[] = {
    {.name = "qwen3-30b-a3b",
     .about = "Qwen3-MoE: hidden 2048, 48 layers, 128 experts top-8 of width 768, BF16",
     .hidden = 2048, .intermediate = 6144, .moe_intermediate = 768,
     .layers = 48, .experts = 128, .top_k = 8, .heads = 32, .kv_heads = 4, .head_dim = 128,
     .vocab = 151936, .rope_theta = 1e6, .rms_eps = 1e-6, .max_position = 40960,
     .bos = 151643, .eos = 151645, .pad = -1, .gen_bos = 151643, .gen_pad = 151643,
     .gen_eos = {151645, 151643}, .n_gen_eos = 2, .do_sample = true, .gen_temperature = 0.6,
     .gen_top_k = 20, .gen_top_p = 0.95, .eos_text = "<|im_end|>", .pad_text = "<|endoftext|>",
     .specials = {{151643, "<|endoftext|>"}, {151644, "<|im_start|>"}, {151645, "<|im_end|>"}},
     .n_specials = 3},
    {.name = "qwen3-moe-tiny", .about = "Qwen3-MoE like tests/fixtures/qwen3-moe-tiny: hidden 256, 2 layers, 8 experts top-2",
     .hidden = 256, .intermediate = 512, .moe_intermediate = 128,
     .layers = 2, .experts = 8, .top_k = 2, .heads = 4, .kv_heads = 2, .head_dim = 64, .vocab = 512,
     .rope_theta = 10000.0, .rms_eps = 1e-6, .max_position = 32768, .tiny = true, .bos = -1,
     .eos = 2, .pad = 0, .gen_bos = -1, .gen_pad = 0, .gen_eos = {2}, .n_gen_eos = 1,
     .eos_text = "<|im_end|>", .pad_text = "<|endoftext|>",
     .specials = {{0, "<|endoftext|>"}, {1, "<|im_start|>"}, {2, "<|im_end|>"}},
     .n_specials = 3},
};

/* "model.layers.{i}.<suffix>" in the caller's buffer nb. */
#define LAYER(suffix) (snprintf(nb, sizeof nb, "model.layers.%d." suffix, i), nb)

static void synth_layer(synth_plan *pl, int i)
{
    const synth_preset *p = synth_plan_preset(pl);
    int64_t H = p->hidden, I = p->moe_intermediate;
    char nb[96];
    synth_plan_attention(pl, i, false, true);
    SYNTH_PLAN_BF16(pl, WEIGHT, LAYER("mlp.gate.weight"), (int64_t)p->experts, H);
    for (int j = 0; j < p->experts; j++) {
        const char *names[3] = {"gate_proj", "up_proj", "down_proj"};
        for (int k = 0; k < 3; k++) {
            int64_t shape[2] = {k < 2 ? I : H, k < 2 ? H : I};
            snprintf(nb, sizeof nb, "model.layers.%d.mlp.experts.%d.%s.weight", i, j, names[k]);
            synth_plan_add(pl, ST_BF16, SYNTH_BF16, SYNTH_DIST_WEIGHT, 2, shape, nb);
        }
    }
}

static void synth_config_fields(cJSON *c, const synth_preset *p, int layers, bool mxfp4)
{
    (void)mxfp4; /* BF16 experts only */
    cJSON_AddBoolToObject(c, "attention_bias", 0);
    cJSON_AddNumberToObject(c, "decoder_sparse_step", 1);
    if (!p->tiny) /* the published config has it, the fixture does not */
        cJSON_AddNumberToObject(c, "max_window_layers", layers);
    cJSON_AddArrayToObject(c, "mlp_only_layers");
    cJSON_AddStringToObject(c, "model_type", "qwen3_moe");
    cJSON_AddNumberToObject(c, "moe_intermediate_size", p->moe_intermediate);
    cJSON_AddBoolToObject(c, "norm_topk_prob", 1);
    cJSON_AddNumberToObject(c, "num_experts", p->experts);
    cJSON_AddNullToObject(c, "rope_scaling");
    cJSON_AddNumberToObject(c, "router_aux_loss_coef", 0.001);
    cJSON_AddNullToObject(c, "sliding_window");
    cJSON_AddBoolToObject(c, "use_sliding_window", 0);
}

static const family_synth k_synth = {
    .presets = k_presets, .n_presets = (int)(sizeof k_presets / sizeof k_presets[0]),
    .architecture = "Qwen3MoeForCausalLM", .mxfp4 = false, .plan_layer = synth_layer,
    .config_fields = synth_config_fields};

/* old checkpoints may hold rotary inv_freq buffers, computed from the config */
static const char *const k_skipped[] = {"*.rotary_emb.inv_freq", NULL};

M2O_FAMILY(qwen3_moe, "Qwen3-MoE", "qwen3_moe", NULL, &k_defaults, parse_config, k_skipped,
           build_graph, "qwen3", EXPERT_NAMING_QWEN, &k_synth);
