/* Embedding lookup and RMSNorm blocks. */
#include "graph/blocks.h"

int gb_embedding(gb *b, const st_tensor *table, gname *out, m2o_err *err)
{
    if (b->o->exclude_embeds)
        return m2o_fail(err, "export options: exclude_embeds (inputs_embeds instead of "
                             "input_ids) is not supported yet; drop that option");
    if (gb_add_converted(b, "model.embed_tokens.weight", table, err))
        return -1;
    const char *node = "/model/embed_tokens/Gather";
    const char *in[2] = {"model.embed_tokens.weight", "input_ids"};
    gb_node(b, "Gather", NULL, node, 2, in, 1);
    *out = gname_out(node, 0);
    return 0;
}

static int add_norm_weight(gb *b, const char *weight_name, const st_tensor *w, float offset,
                           m2o_err *err)
{
    int64_t h = b->md->hidden_size;
    if (w->numel != h)
        return m2o_fail(err, "tensor %s: %lld elements, expected hidden_size %lld", w->name,
                        (long long)w->numel, (long long)h);
    return gb_add_small(b, weight_name, 1, &w, offset, 1, &h, err);
}

int gb_rmsnorm(gb *b, const char *node, const char *weight_name, const st_tensor *w,
               float offset, const char *input, gname *out, m2o_err *err)
{
    if (add_norm_weight(b, weight_name, w, offset, err))
        return -1;
    const char *in[2] = {input, weight_name};
    graph_node *n = gb_node(b, "SimplifiedLayerNormalization", NULL, node, 2, in, 1);
    node_attr_int(n, "axis", -1);
    node_attr_float(n, "epsilon", (float)b->md->rms_norm_eps);
    node_attr_int(n, "stash_type", 1);
    *out = gname_out(node, 0);
    return 0;
}

int gb_skip_rmsnorm(gb *b, const char *node, const char *weight_name, const st_tensor *w,
                    float offset, const char *input, const char *skip, gname *out,
                    gname *residual, m2o_err *err)
{
    if (add_norm_weight(b, weight_name, w, offset, err))
        return -1;
    const char *in[3] = {input, skip, weight_name};
    /* outputs 1 and 2 (mean, inv_std_var) are unused but named, so every output is unique */
    graph_node *n = gb_node(b, "SkipSimplifiedLayerNormalization", "com.microsoft", node, 3, in,
                            residual ? 4 : 1);
    node_attr_float(n, "epsilon", (float)b->md->rms_norm_eps);
    *out = gname_out(node, 0);
    if (residual)
        *residual = gname_out(node, 3);
    return 0;
}
