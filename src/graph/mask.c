/* Graph inputs/outputs and the attention-mask subgraph that feeds GroupQueryAttention. */
#include "graph/blocks.h"

void gb_decoder_io(gb *b, const bool *kv_layer)
{
    const model_desc *md = b->md;
    const char *bs_seq[2] = {"batch_size", "sequence_length"};
    const char *bs_total[2] = {"batch_size", "total_sequence_length"};
    int64_t d2[2] = {-1, -1};
    graph_add_input(b->g, "input_ids", ONNX_INT64, 2, d2, bs_seq);
    graph_add_input(b->g, "attention_mask", ONNX_INT64, 2, d2, bs_total);

    const char *past[4] = {"batch_size", NULL, "past_sequence_length", NULL};
    const char *present[4] = {"batch_size", NULL, "total_sequence_length", NULL};
    int64_t kv[4] = {-1, md->num_kv_heads, -1, md->head_dim};
    for (int i = 0; i < md->num_layers; i++) {
        if (kv_layer && !kv_layer[i])
            continue;
        for (int v = 0; v < 2; v++) {
            gname n = gname_fmt("past_key_values.%d.%s", i, v ? "value" : "key");
            graph_add_input(b->g, n.s, b->io, 4, kv, past);
        }
    }
    const char *logit_dims[3] = {"batch_size", "sequence_length", NULL};
    int64_t ld[3] = {-1, -1, md->vocab_size}, hd[3] = {-1, -1, md->hidden_size};
    if (b->o->exclude_lm_head || b->o->include_hidden_states)
        graph_add_output(b->g, "hidden_states", b->io, 3, hd, logit_dims);
    if (!b->o->exclude_lm_head)
        graph_add_output(b->g, "logits", ONNX_FLOAT, 3, ld, logit_dims);
    for (int i = 0; i < md->num_layers; i++) {
        if (kv_layer && !kv_layer[i])
            continue;
        for (int v = 0; v < 2; v++) {
            gname n = gname_fmt("present.%d.%s", i, v ? "value" : "key");
            graph_add_output(b->g, n.s, b->io, 4, kv, present);
        }
    }
}

void gb_attention_mask(gb *b)
{
    const char *base = "/model/attn_mask_reformat/attn_mask_subgraph";
    int64_t one = 1;
    gname axes = gb_const_i64(b, 1, 1, &one);
    gname c1 = gb_const_i64_scalar(b, 1);

    gname rs = gname_fmt("%s/ReduceSum", base);
    const char *rs_in[2] = {"attention_mask", axes.s};
    graph_node *n = gb_node(b, "ReduceSum", NULL, rs.s, 2, rs_in, 1);
    node_attr_int(n, "keepdims", 0);

    gname sub = gname_fmt("%s/Sub", base), rs_out = gname_out(rs.s, 0);
    const char *sub_in[2] = {rs_out.s, c1.s};
    gb_node(b, "Sub", NULL, sub.s, 2, sub_in, 1);

    gname cast = gname_fmt("%s/Sub/Cast", base), sub_out = gname_out(sub.s, 0);
    const char *cast_in[1] = {sub_out.s};
    n = gb_node(b, "Cast", NULL, cast.s, 1, cast_in, 1);
    node_attr_int(n, "to", ONNX_INT32);
    b->seqlens_k = gname_out(cast.s, 0);

    gname shape = gname_fmt("%s/Shape", base);
    const char *shape_in[1] = {"attention_mask"};
    gb_node(b, "Shape", NULL, shape.s, 1, shape_in, 1);

    gname gather = gname_fmt("%s/Gather", base), shape_out = gname_out(shape.s, 0);
    const char *gather_in[2] = {shape_out.s, c1.s};
    n = gb_node(b, "Gather", NULL, gather.s, 2, gather_in, 1);
    node_attr_int(n, "axis", 0);

    gname cast2 = gname_fmt("%s/Gather/Cast", base), gather_out = gname_out(gather.s, 0);
    const char *cast2_in[1] = {gather_out.s};
    n = gb_node(b, "Cast", NULL, cast2.s, 1, cast2_in, 1);
    node_attr_int(n, "to", ONNX_INT32);
    b->total_seq_len = gname_out(cast2.s, 0);
}
