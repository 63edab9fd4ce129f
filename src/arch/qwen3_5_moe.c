/* Qwen3.5/3.6-MoE (Qwen3_5MoeForCausalLM, and the text decoder of
 * Qwen3_5MoeForConditionalGeneration, whose tensors sit under model.language_model.; the vision
 * tower is not exported): which checkpoint tensors make which decoder blocks. */
#include "arch/qwen3_5_moe.h"

#include <stdio.h>
#include <string.h>

#include "arch/arch.h"
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
    memset(d, 0, sizeof *d);
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
        gb_tensorf(b, &d->norm_w, err, true, 1, &d->head_v_dim, "%slayers.%d.linear_attn.norm.weight",
                   p, L))
        return -1;
    return linear_attn_check(d, H, err);
}
