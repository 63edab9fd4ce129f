/* gpt-oss (GptOssForCausalLM): which checkpoint tensors make which decoder blocks.
 *
 * Per layer: RMSNorm → attention (q/k/v/o all biased, per-head sinks, sliding window on the
 * layers config.layer_types marks "sliding_attention") → RMSNorm → router (biased) → experts
 * with SwiGLU (limit 7, alpha 1.702, beta 1; gate/up rows interleaved), softmax over the top-k
 * logits. Experts come from either layout:
 *   official MXFP4: experts.{gate_up,down}_proj_blocks U8 [E, N, K/32, 16] + _scales U8 [E, N, K/32]
 *   BF16:           experts.gate_up_proj [E, H, 2I], experts.down_proj [E, I, H] (input-major)
 * both with experts.{gate_up,down}_proj_bias [E, N].
 * Config defaults follow transformers' configuration_gpt_oss.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch/arch.h"
#include "arch/family.h"
#include "synth/synth_family.h"
#include "graph/blocks.h"

static int load_experts(gb *b, int L, expert_src *fc1, expert_src *fc2, const st_tensor **b1,
                        const st_tensor **b2, m2o_err *err)
{
    const model_desc *md = b->md;
    const char *p = md->prefix;
    int64_t E = md->num_experts, H = md->hidden_size, I = md->intermediate_size;
    memset(fc1, 0, sizeof *fc1);
    memset(fc2, 0, sizeof *fc2);
    *fc1 = (expert_src){.E = E, .N = 2 * I, .K = H};
    *fc2 = (expert_src){.E = E, .N = H, .K = I};
    snprintf(fc1->what, sizeof fc1->what, "%slayers.%d.mlp.experts.gate_up_proj", p, L);
    snprintf(fc2->what, sizeof fc2->what, "%slayers.%d.mlp.experts.down_proj", p, L);

    const st_tensor *blocks = NULL;
    int64_t sb[4] = {E, 2 * I, H / 32, 16};
    if (gb_tensorf(b, &blocks, err, false, 4, sb, "%s_blocks", fc1->what))
        return -1;
    if (blocks) {
        if (H % 32 || I % 32)
            return m2o_fail(err, "%s_blocks: MXFP4 experts need hidden_size %lld and "
                                 "intermediate_size %lld to be multiples of 32",
                            fc1->what, (long long)H, (long long)I);
        int64_t ss1[3] = {E, 2 * I, H / 32}, sb2[4] = {E, H, I / 32, 16}, ss2[3] = {E, H, I / 32};
        fc1->kind = fc2->kind = EXPERT_MXFP4;
        fc1->t = blocks;
        if (gb_tensorf(b, &fc1->scales, err, true, 3, ss1, "%s_scales", fc1->what) ||
            gb_tensorf(b, &fc2->t, err, true, 4, sb2, "%s_blocks", fc2->what) ||
            gb_tensorf(b, &fc2->scales, err, true, 3, ss2, "%s_scales", fc2->what))
            return -1;
        const st_tensor *u8[4] = {fc1->t, fc1->scales, fc2->t, fc2->scales};
        for (int i = 0; i < 4; i++)
            if (u8[i]->dtype != ST_U8)
                return m2o_fail(err, "%s: tensor '%s' is %s, but MXFP4 blocks and scales are U8 "
                                     "— the checkpoint is corrupt; re-download it",
                                st_file_path(u8[i]->file), u8[i]->name,
                                st_dtype_name(u8[i]->dtype));
    } else {
        int64_t s1[3] = {E, H, 2 * I}, s2[3] = {E, I, H};
        fc1->kind = fc2->kind = EXPERT_FUSED_KN;
        if (gb_tensorf(b, &fc1->t, err, false, 3, s1, "%s", fc1->what))
            return -1;
        if (!fc1->t)
            return m2o_fail(err, "checkpoint: layer %d has neither MXFP4 experts (%s_blocks) nor "
                                 "BF16 experts (%s); is this a complete gpt_oss checkpoint?",
                            L, fc1->what, fc1->what);
        if (gb_tensorf(b, &fc2->t, err, true, 3, s2, "%s", fc2->what))
            return -1;
    }
    int64_t sbias1[2] = {E, 2 * I}, sbias2[2] = {E, H};
    if (gb_tensorf(b, b1, err, true, 2, sbias1, "%s_bias", fc1->what) ||
        gb_tensorf(b, b2, err, true, 2, sbias2, "%s_bias", fc2->what))
        return -1;
    return 0;
}

static const attn_layout k_attention = {.qkv_bias = true, .o_bias = true, .sinks = true};

static int mixer(gb *b, int L, const char *input, gname *out, m2o_err *err)
{
    return arch_attention_mixer(b, L, &k_attention, input, out, err);
}

/* Router (biased) → experts with the clamped SwiGLU, softmax over the top-k logits. */
static int moe(gb *b, int L, const char *input, gname *out, m2o_err *err)
{
    const model_desc *md = b->md;
    int64_t H = md->hidden_size, E = md->num_experts;
    /* expert sources are large (per-expert tensor tables): keep them off the stack */
    expert_src *fc = malloc(2 * sizeof *fc);
    if (!fc)
        return m2o_fail(err, "out of memory describing layer %d experts", L);
    moe_desc m = {.layer = L, .num_experts = E, .top_k = md->top_k, .hidden = H,
                  .inter = md->intermediate_size, .fc1 = &fc[0], .fc2 = &fc[1],
                  .swiglu_limit = md->swiglu_limit, .alpha = md->swiglu_alpha,
                  .beta = md->swiglu_beta, .normalize_routing = true};
    int64_t sr[2] = {E, H};
    m.router.n_parts = 1;
    int rc = load_experts(b, L, &fc[0], &fc[1], &m.fc1_bias, &m.fc2_bias, err);
    if (!rc)
        rc = gb_tensorf(b, &m.router.w[0], err, true, 2, sr, "%slayers.%d.mlp.router.weight",
                        md->prefix, L);
    if (!rc)
        rc = gb_tensorf(b, &m.router.bias[0], err, true, 1, &E, "%slayers.%d.mlp.router.bias",
                        md->prefix, L);
    if (!rc)
        rc = gb_moe(b, &m, input, out, err);
    free(fc);
    return rc;
}

static int build_layer(gb *b, int L, gname *hidden, gname *residual, m2o_err *err)
{
    return arch_decoder_layer(b, L, hidden, residual, mixer, moe, err);
}

static int build_graph(gb *b, m2o_err *err)
{
    const model_desc *md = b->md;
    if (arch_check_common(md, err))
        return -1;
    if (md->num_experts < 1 || md->top_k < 1 || md->hidden_size < 1 ||
        md->intermediate_size < 1 || md->head_dim < 1 || md->vocab_size < 1)
        return m2o_fail(err, "config.json: gpt-oss needs positive hidden_size, "
                             "intermediate_size, head_dim, vocab_size, num_local_experts and "
                             "num_experts_per_tok");
    return gb_decoder(b, NULL, 0.0f, build_layer, err);
}

/* ---- config.json ---- */

static const family_defaults k_defaults = {
    .head_dim = 64, .rms_norm_eps = 1e-5, .max_position_embeddings = 131072,
    .rope_theta = 150000.0, .partial_rotary_factor = 1.0, .builtin_yarn = true,
    .num_experts_key = "num_local_experts"};

/* sliding_window (null = none, default 128); without layer_types even layers slide */
static int parse_attention_layout(const cfg_src *s, model_desc *d)
{
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(s->obj, "sliding_window");
    if (sw && cJSON_IsNull(sw))
        d->sliding_window = 0;
    else if (cfg_get_int(s, "sliding_window", false, 128, &d->sliding_window))
        return -1;
    if (d->sliding_window < 0)
        return m2o_fail(s->err, "%s: sliding_window is negative — fix config.json", s->what);
    int rc = cfg_layer_types(s, d);
    if (rc < 0)
        return -1;
    for (int i = 0; rc == 1 && i < d->num_layers; i++)
        d->layer_type[i] = i % 2 == 0 ? LAYER_SLIDING_ATTENTION : LAYER_FULL_ATTENTION;
    return cfg_check_layer_types(s, d, LAYER_LINEAR_ATTENTION);
}

static int parse_config(const cfg_src *s, model_desc *d)
{
    cfg_all_sparse(d);
    double lim, alpha;
    if (cfg_get_size(s, "intermediate_size", true, 0, &d->intermediate_size) ||
        cfg_get_bool(s, "attention_bias", true, &d->attention_bias) ||
        cfg_get_double(s, "swiglu_limit", 7.0, &lim) ||
        cfg_get_double(s, "swiglu_alpha", 1.702, &alpha))
        return -1;
    d->moe_intermediate_size = d->intermediate_size;
    d->norm_topk_prob = true; /* softmax over the top-k logits = renormalised */
    d->swiglu_limit = (float)lim;
    d->swiglu_alpha = (float)alpha;
    d->swiglu_beta = 1.0f;
    return parse_attention_layout(s, d);
}

/* old checkpoints may hold rotary inv_freq buffers, computed from the config */
static const char *const k_skipped[] = {"*.rotary_emb.inv_freq", NULL};

/* ---- synthetic checkpoints (moe2onnx synth): dimensions and token ids of the public configs
 * (docs/FORMATS.md §18); the tiny preset matches tests/fixtures/gpt-oss-tiny ---- */

#define GPT_OSS_TOKENS                                                                          \
    .bos = -1, .eos = 200002, .pad = 199999, .gen_bos = 199998, .gen_pad = 199999,              \
    .gen_eos = {200002, 199999, 200012}, .n_gen_eos = 3, .do_sample = true,                     \
    .eos_text = "<|return|>", .pad_text = "<|endoftext|>",                                      \
    .specials = {{199998, "<|startoftext|>"}, {199999, "<|endoftext|>"}, {200002, "<|return|>"}, \
                 {200005, "<|channel|>"}, {200006, "<|start|>"}, {200007, "<|end|>"},             \
                 {200008, "<|message|>"}, {200012, "<|call|>"}},                                 \
    .n_specials = 8

#define GPT_OSS_WIDTHS                                                                          \
    .hidden = 2880, .intermediate = 2880, .moe_intermediate = 2880,     \
    .top_k = 4, .heads = 64, .kv_heads = 8, .head_dim = 64, .vocab = 201088,                     \
    .sliding_window = 128, .rope_theta = 150000.0, .rms_eps = 1e-5, .max_position = 131072,      \
    .zero_based_shards = true

static const synth_preset k_presets[] = {
    {.name = "gpt-oss-20b", .about = "GptOss: hidden 2880, 24 layers, 32 experts top-4, MXFP4 experts",
     GPT_OSS_WIDTHS, .layers = 24, .experts = 32, GPT_OSS_TOKENS},
    {.name = "gpt-oss-120b", .about = "GptOss: hidden 2880, 36 layers, 128 experts top-4, MXFP4 experts",
     GPT_OSS_WIDTHS, .layers = 36, .experts = 128, GPT_OSS_TOKENS},
    {.name = "gpt-oss-tiny", .about = "GptOss like tests/fixtures/gpt-oss-tiny: hidden 256, 2 layers, 8 experts top-2",
     .hidden = 256, .intermediate = 256, .moe_intermediate = 256,
     .layers = 2, .experts = 8, .top_k = 2, .heads = 4, .kv_heads = 2, .head_dim = 64, .vocab = 512,
     .sliding_window = 4, .rope_theta = 150000.0, .rms_eps = 1e-5, .max_position = 131072,
     .tiny = true, .bos = -1, .eos = 1, .pad = 0, .gen_bos = -1, .gen_pad = 0, .gen_eos = {1},
     .n_gen_eos = 1, .eos_text = "<|return|>", .pad_text = "<|endoftext|>",
     .specials = {{0, "<|endoftext|>"}, {1, "<|return|>"}, {2, "<|start|>"}, {3, "<|end|>"},
                  {4, "<|message|>"}},
     .n_specials = 5},
};

/* "model.layers.{i}.<suffix>" in the caller's buffer nb. */
#define LAYER(suffix) (snprintf(nb, sizeof nb, "model.layers.%d." suffix, i), nb)

static void synth_layer(synth_plan *pl, int i)
{
    const synth_preset *p = synth_plan_preset(pl);
    int64_t H = p->hidden, I = p->intermediate, E = p->experts;
    char nb[96];
    synth_plan_attention(pl, i, true, false);
    SYNTH_PLAN_BF16(pl, SINK, LAYER("self_attn.sinks"), (int64_t)p->heads);
    SYNTH_PLAN_BF16(pl, WEIGHT, LAYER("mlp.router.weight"), E, H);
    SYNTH_PLAN_BF16(pl, WEIGHT, LAYER("mlp.router.bias"), E);
    SYNTH_PLAN_BF16(pl, WEIGHT, LAYER("mlp.experts.gate_up_proj_bias"), E, 2 * I);
    SYNTH_PLAN_BF16(pl, WEIGHT, LAYER("mlp.experts.down_proj_bias"), E, H);
    if (synth_plan_mxfp4(pl)) {
        SYNTH_PLAN_U8(pl, MXFP4_BLOCKS, LAYER("mlp.experts.gate_up_proj_blocks"), E, 2 * I, H / 32, 16);
        SYNTH_PLAN_U8(pl, MXFP4_SCALES, LAYER("mlp.experts.gate_up_proj_scales"), E, 2 * I, H / 32);
        SYNTH_PLAN_U8(pl, MXFP4_BLOCKS, LAYER("mlp.experts.down_proj_blocks"), E, H, I / 32, 16);
        SYNTH_PLAN_U8(pl, MXFP4_SCALES, LAYER("mlp.experts.down_proj_scales"), E, H, I / 32);
    } else {
        SYNTH_PLAN_BF16(pl, WEIGHT, LAYER("mlp.experts.gate_up_proj"), E, H, 2 * I);
        SYNTH_PLAN_BF16(pl, WEIGHT, LAYER("mlp.experts.down_proj"), E, I, H);
    }
}

static void synth_config_fields(cJSON *c, const synth_preset *p, int layers, bool mxfp4)
{
    cJSON_AddBoolToObject(c, "attention_bias", 1);
    cJSON_AddNumberToObject(c, "experts_per_token", p->top_k);
    cJSON_AddNumberToObject(c, "initial_context_length", 4096);
    cJSON *types = cJSON_AddArrayToObject(c, "layer_types");
    for (int i = 0; i < layers; i++)
        cJSON_AddItemToArray(types, cJSON_CreateString(i % 2 ? "full_attention" : "sliding_attention"));
    cJSON_AddStringToObject(c, "model_type", "gpt_oss");
    cJSON_AddNumberToObject(c, "num_local_experts", p->experts);
    if (mxfp4) {
        static const char *const keep[] = {"model.layers.*.self_attn", "model.layers.*.mlp.router",
                                           "model.embed_tokens", "lm_head"};
        cJSON *q = cJSON_AddObjectToObject(c, "quantization_config");
        synth_json_strings(q, "modules_to_not_convert", keep, sizeof keep / sizeof keep[0]);
        cJSON_AddStringToObject(q, "quant_method", "mxfp4");
    }
    cJSON *r = cJSON_AddObjectToObject(c, "rope_scaling");
    cJSON_AddNumberToObject(r, "beta_fast", 32.0);
    cJSON_AddNumberToObject(r, "beta_slow", 1.0);
    cJSON_AddNumberToObject(r, "factor", 32.0);
    cJSON_AddNumberToObject(r, "original_max_position_embeddings", 4096);
    cJSON_AddStringToObject(r, "rope_type", "yarn");
    cJSON_AddBoolToObject(r, "truncate", 0);
    cJSON_AddNumberToObject(c, "router_aux_loss_coef", p->tiny ? 0.001 : 0.9); /* as published */
    cJSON_AddNumberToObject(c, "sliding_window", p->sliding_window);
    cJSON_AddNumberToObject(c, "swiglu_limit", 7.0);
}

static const family_synth k_synth = {
    .presets = k_presets, .n_presets = (int)(sizeof k_presets / sizeof k_presets[0]),
    .architecture = "GptOssForCausalLM", .mxfp4 = true, .plan_layer = synth_layer,
    .config_fields = synth_config_fields};

M2O_FAMILY(gpt_oss, "gpt-oss", "gpt_oss", NULL, &k_defaults, parse_config, k_skipped,
           build_graph, "gptoss", EXPERT_NAMING_GPT_OSS, &k_synth);
