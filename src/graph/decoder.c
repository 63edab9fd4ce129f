/* The decoder skeleton every architecture shares: embedding → layers → final norm → lm_head,
 * with the graph interface, attention-mask subgraph and rotary caches set up first. An
 * architecture supplies only its layer builder. */
#include "graph/blocks.h"
#include "graph/rope.h"

int gb_decoder(gb *b, const bool *kv_layer, float norm_offset, gb_layer_fn build_layer, m2o_err *err)
{
    const model_desc *md = b->md;
    int64_t V = md->vocab_size, H = md->hidden_size;
    int64_t sv[2] = {V, H};
    const st_tensor *embed, *norm, *head;
    if (gb_tensorf(b, &embed, err, true, 2, sv, "%sembed_tokens.weight", md->prefix) ||
        gb_tensorf(b, &norm, err, true, 1, &H, "%snorm.weight", md->prefix))
        return -1;
    /* lm_head sits at the top level in both the text-only and the vision-language layout */
    if (md->tie_word_embeddings || b->o->exclude_lm_head)
        head = embed; /* unused when excluded */
    else if (gb_tensorf(b, &head, err, true, 2, sv, "lm_head.weight"))
        return -1;

    gb_decoder_io(b, kv_layer);
    gb_attention_mask(b);
    if (gb_rotary_caches(b, err))
        return -1;
    gname hidden, residual = {{0}};
    if (gb_embedding(b, embed, &hidden, err))
        return -1;
    for (int L = 0; L < md->num_layers; L++)
        if (build_layer(b, L, &hidden, &residual, err))
            return -1;

    gname node = gname_fmt("/model/layers.%d/final_norm_layernorm/SkipLayerNorm", md->num_layers);
    gname w = gname_fmt("model.layers.%d.final_norm_layernorm.weight", md->num_layers);
    gname normed;
    if (gb_skip_rmsnorm(b, node.s, w.s, norm, norm_offset, hidden.s, residual.s, &normed, NULL, err))
        return -1;
    if (b->o->exclude_lm_head || b->o->include_hidden_states) {
        const char *in[1] = {normed.s}, *out[1] = {"hidden_states"};
        graph_add_node(b->g, "Identity", NULL, "/model/hidden_states/Identity", 1, in, 1, out);
    }
    if (b->o->exclude_lm_head)
        return 0;
    linear_src lm = {.n_parts = 1, .w = {head}};
    return gb_lm_head(b, &lm, normed.s, err);
}
