/* gpt-oss (GptOssForCausalLM): which checkpoint tensors make which decoder blocks.
 *
 * Per layer: RMSNorm → attention (q/k/v/o all biased, per-head sinks, sliding window on the
 * layers config.layer_types marks "sliding_attention") → RMSNorm → router (biased) → experts
 * with SwiGLU (limit 7, alpha 1.702, beta 1; gate/up rows interleaved), softmax over the top-k
 * logits. Experts come from either layout:
 *   official MXFP4: experts.{gate_up,down}_proj_blocks U8 [E, N, K/32, 16] + _scales U8 [E, N, K/32]
 *   BF16:           experts.gate_up_proj [E, H, 2I], experts.down_proj [E, I, H] (input-major)
 * both with experts.{gate_up,down}_proj_bias [E, N]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch/arch.h"
#include "graph/blocks.h"
#include "graph/rope.h"

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

static int load_attention(gb *b, int L, attn_desc *a, m2o_err *err)
{
    const model_desc *md = b->md;
    const char *p = md->prefix;
    int64_t H = md->hidden_size, hd = md->head_dim;
    int64_t nq = md->num_heads * hd, nkv = md->num_kv_heads * hd;
    int64_t rows[3] = {nq, nkv, nkv};
    const char *proj[3] = {"q", "k", "v"};
    memset(a, 0, sizeof *a);
    a->layer = L;
    a->qkv.n_parts = 3;
    for (int i = 0; i < 3; i++) {
        int64_t sw[2] = {rows[i], H};
        if (gb_tensorf(b, &a->qkv.w[i], err, true, 2, sw, "%slayers.%d.self_attn.%s_proj.weight",
                       p, L, proj[i]) ||
            gb_tensorf(b, &a->qkv.bias[i], err, true, 1, &rows[i],
                       "%slayers.%d.self_attn.%s_proj.bias", p, L, proj[i]))
            return -1;
    }
    int64_t so[2] = {H, nq}, nh = md->num_heads;
    a->o.n_parts = 1;
    if (gb_tensorf(b, &a->o.w[0], err, true, 2, so, "%slayers.%d.self_attn.o_proj.weight", p, L) ||
        gb_tensorf(b, &a->o.bias[0], err, true, 1, &H, "%slayers.%d.self_attn.o_proj.bias", p, L) ||
        gb_tensorf(b, &a->sinks, err, true, 1, &nh, "%slayers.%d.self_attn.sinks", p, L))
        return -1;
    a->window = md->layer_type[L] == LAYER_SLIDING_ATTENTION ? md->sliding_window : 0;
    if (md->layer_type[L] == LAYER_SLIDING_ATTENTION && md->sliding_window < 1)
        return m2o_fail(err, "config.json: layer %d is sliding_attention but sliding_window is "
                             "%d", L, md->sliding_window);
    return 0;
}

static int build_layer(gb *b, int L, gname *hidden, gname *residual, m2o_err *err)
{
    const model_desc *md = b->md;
    const char *p = md->prefix;
    int64_t H = md->hidden_size, E = md->num_experts;
    const st_tensor *ln1, *ln2;
    if (gb_tensorf(b, &ln1, err, true, 1, &H, "%slayers.%d.input_layernorm.weight", p, L) ||
        gb_tensorf(b, &ln2, err, true, 1, &H, "%slayers.%d.post_attention_layernorm.weight", p, L))
        return -1;

    gname normed, node, w;
    w = gname_fmt("model.layers.%d.input_layernorm.weight", L);
    if (L == 0) {
        node = gname_fmt("/model/layers.%d/input_layernorm/SimplifiedLayerNorm", L);
        *residual = *hidden;
        if (gb_rmsnorm(b, node.s, w.s, ln1, 0.0f, hidden->s, &normed, err))
            return -1;
    } else {
        node = gname_fmt("/model/layers.%d/input_layernorm/SkipLayerNorm", L);
        gname prev = *residual;
        if (gb_skip_rmsnorm(b, node.s, w.s, ln1, 0.0f, hidden->s, prev.s, &normed, residual, err))
            return -1;
    }

    attn_desc a;
    gname attn_out;
    if (load_attention(b, L, &a, err) || gb_attention(b, &a, normed.s, &attn_out, err))
        return -1;

    node = gname_fmt("/model/layers.%d/post_attention_layernorm/SkipLayerNorm", L);
    w = gname_fmt("model.layers.%d.post_attention_layernorm.weight", L);
    gname prev = *residual;
    if (gb_skip_rmsnorm(b, node.s, w.s, ln2, 0.0f, attn_out.s, prev.s, &normed, residual, err))
        return -1;

    /* expert sources are large (per-expert tensor tables): keep them off the stack */
    expert_src *fc = malloc(2 * sizeof *fc);
    if (!fc)
        return m2o_fail(err, "out of memory describing layer %d experts", L);
    moe_desc m = {.layer = L, .num_experts = E, .top_k = md->top_k, .hidden = H,
                  .inter = md->intermediate_size, .fc1 = &fc[0], .fc2 = &fc[1],
                  .swiglu_limit = md->swiglu_limit, .alpha = md->swiglu_alpha, .beta = 1.0f,
                  .normalize_routing = true};
    int64_t sr[2] = {E, H};
    m.router.n_parts = 1;
    int rc = load_experts(b, L, &fc[0], &fc[1], &m.fc1_bias, &m.fc2_bias, err);
    if (!rc)
        rc = gb_tensorf(b, &m.router.w[0], err, true, 2, sr, "%slayers.%d.mlp.router.weight", p, L);
    if (!rc)
        rc = gb_tensorf(b, &m.router.bias[0], err, true, 1, &E, "%slayers.%d.mlp.router.bias", p,
                        L);
    if (!rc)
        rc = gb_moe(b, &m, normed.s, hidden, err);
    free(fc);
    return rc;
}

static int check_desc(const model_desc *md, m2o_err *err)
{
    if (md->num_layers < 1 || md->num_layers > MD_MAX_LAYERS)
        return m2o_fail(err, "config.json: num_hidden_layers %d out of range 1..%d",
                        md->num_layers, MD_MAX_LAYERS);
    if (md->num_heads < 1 || md->num_kv_heads < 1 || md->num_heads % md->num_kv_heads)
        return m2o_fail(err, "config.json: num_attention_heads %d must be a positive multiple "
                             "of num_key_value_heads %d", md->num_heads, md->num_kv_heads);
    if (md->num_experts < 1 || md->top_k < 1 || md->hidden_size < 1 ||
        md->intermediate_size < 1 || md->head_dim < 1 || md->vocab_size < 1)
        return m2o_fail(err, "config.json: gpt-oss needs positive hidden_size, "
                             "intermediate_size, head_dim, vocab_size, num_local_experts and "
                             "num_experts_per_tok");
    return 0;
}

int gpt_oss_build_graph(gb *b, m2o_err *err)
{
    const model_desc *md = b->md;
    if (check_desc(md, err))
        return -1;
    return gb_decoder(b, NULL, 0.0f, build_layer, err);
}
