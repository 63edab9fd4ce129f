/* The decoder layer skeleton and attention loader every family uses (arch/arch.h). */
#include <string.h>

#include "arch/arch.h"
#include "arch/family.h"

static int load_qkv(gb *b, int L, const attn_layout *lay, attn_desc *a, m2o_err *err)
{
    const model_desc *md = b->md;
    int64_t H = md->hidden_size, hd = md->head_dim;
    int64_t nq = md->num_heads * hd, nkv = md->num_kv_heads * hd;
    int64_t rows[3] = {lay->q_gate ? 2 * nq : nq, nkv, nkv};
    const char *proj[3] = {"q", "k", "v"};
    a->qkv.n_parts = 3;
    for (int i = 0; i < 3; i++) {
        int64_t sw[2] = {rows[i], H};
        if (gb_tensorf(b, &a->qkv.w[i], err, true, 2, sw, "%slayers.%d.self_attn.%s_proj.weight",
                       md->prefix, L, proj[i]) ||
            (lay->qkv_bias && gb_tensorf(b, &a->qkv.bias[i], err, true, 1, &rows[i],
                                         "%slayers.%d.self_attn.%s_proj.bias", md->prefix, L,
                                         proj[i])))
            return -1;
    }
    return 0;
}

static int load_output_and_norms(gb *b, int L, const attn_layout *lay, attn_desc *a,
                                 m2o_err *err)
{
    const model_desc *md = b->md;
    const char *p = md->prefix;
    int64_t H = md->hidden_size, hd = md->head_dim, nh = md->num_heads;
    int64_t so[2] = {H, nh * hd};
    a->o.n_parts = 1;
    return gb_tensorf(b, &a->o.w[0], err, true, 2, so, "%slayers.%d.self_attn.o_proj.weight", p,
                      L) ||
                   (lay->o_bias && gb_tensorf(b, &a->o.bias[0], err, true, 1, &H,
                                              "%slayers.%d.self_attn.o_proj.bias", p, L)) ||
                   (lay->sinks && gb_tensorf(b, &a->sinks, err, true, 1, &nh,
                                             "%slayers.%d.self_attn.sinks", p, L)) ||
                   (lay->qk_norm && gb_tensorf(b, &a->q_norm, err, true, 1, &hd,
                                               "%slayers.%d.self_attn.q_norm.weight", p, L)) ||
                   (lay->qk_norm && gb_tensorf(b, &a->k_norm, err, true, 1, &hd,
                                               "%slayers.%d.self_attn.k_norm.weight", p, L))
               ? -1
               : 0;
}

int arch_load_attention(gb *b, int L, const attn_layout *lay, attn_desc *a, m2o_err *err)
{
    const model_desc *md = b->md;
    memset(a, 0, sizeof *a);
    a->layer = L;
    a->q_gate = lay->q_gate;
    a->qk_norm_offset = md->norm_weight_offset;
    if (load_qkv(b, L, lay, a, err) || load_output_and_norms(b, L, lay, a, err))
        return -1;
    bool sliding = md->layer_type[L] == LAYER_SLIDING_ATTENTION;
    if (sliding && md->sliding_window < 1)
        return m2o_fail(err, "config.json: layer %d is sliding_attention but sliding_window is "
                             "%d", L, md->sliding_window);
    a->window = sliding ? md->sliding_window : 0;
    return 0;
}

int arch_attention_mixer(gb *b, int L, const attn_layout *lay, const char *input, gname *out,
                         m2o_err *err)
{
    attn_desc a;
    return arch_load_attention(b, L, lay, &a, err) || gb_attention(b, &a, input, out, err) ? -1 : 0;
}

/* input_layernorm: a plain RMSNorm in layer 0 (the residual starts as the embedding), a skip
 * norm that also adds the previous layer's output to the residual after it. */
static int input_norm(gb *b, int L, const st_tensor *w, gname *hidden, gname *residual,
                      gname *normed, m2o_err *err)
{
    float off = b->md->norm_weight_offset;
    gname wname = gname_fmt("model.layers.%d.input_layernorm.weight", L);
    if (L == 0) {
        gname node = gname_fmt("/model/layers.%d/input_layernorm/SimplifiedLayerNorm", L);
        *residual = *hidden;
        return gb_rmsnorm(b, node.s, wname.s, w, off, hidden->s, normed, err);
    }
    gname node = gname_fmt("/model/layers.%d/input_layernorm/SkipLayerNorm", L);
    gname prev = *residual;
    return gb_skip_rmsnorm(b, node.s, wname.s, w, off, hidden->s, prev.s, normed, residual, err);
}

int arch_decoder_layer(gb *b, int L, gname *hidden, gname *residual, arch_block_fn mixer,
                       arch_block_fn mlp, m2o_err *err)
{
    const model_desc *md = b->md;
    int64_t H = md->hidden_size;
    const st_tensor *ln1, *ln2;
    if (gb_tensorf(b, &ln1, err, true, 1, &H, "%slayers.%d.input_layernorm.weight", md->prefix,
                   L) ||
        gb_tensorf(b, &ln2, err, true, 1, &H, "%slayers.%d.post_attention_layernorm.weight",
                   md->prefix, L))
        return -1;
    gname normed, mixed;
    if (input_norm(b, L, ln1, hidden, residual, &normed, err) ||
        mixer(b, L, normed.s, &mixed, err))
        return -1;
    gname node = gname_fmt("/model/layers.%d/post_attention_layernorm/SkipLayerNorm", L);
    gname w = gname_fmt("model.layers.%d.post_attention_layernorm.weight", L);
    gname prev = *residual;
    if (gb_skip_rmsnorm(b, node.s, w.s, ln2, md->norm_weight_offset, mixed.s, prev.s, &normed,
                        residual, err))
        return -1;
    return mlp(b, L, normed.s, hidden, err);
}

int arch_check_common(const model_desc *md, m2o_err *err)
{
    if (md->num_layers < 1 || md->num_layers > MD_MAX_LAYERS)
        return m2o_fail(err, "config.json: num_hidden_layers %d out of range 1..%d",
                        md->num_layers, MD_MAX_LAYERS);
    if (md->num_heads < 1 || md->num_kv_heads < 1 || md->num_heads % md->num_kv_heads)
        return m2o_fail(err, "config.json: num_attention_heads %d must be a positive multiple "
                             "of num_key_value_heads %d", md->num_heads, md->num_kv_heads);
    return 0;
}
