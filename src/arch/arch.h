/* What the family files (src/arch/<family>.c) share: the decoder layer skeleton, the attention
 * loader, the Qwen MoE block, and the checks every description must pass before a graph is built.
 * Each family fills one table entry (arch/family.h); arch_build_graph (export.c) calls its
 * build_graph. */
#ifndef M2O_ARCH_H
#define M2O_ARCH_H

#include <stdbool.h>

#include "arch/config_fields.h"
#include "common/err.h"
#include "graph/blocks.h"
#include "graph/builder.h"

/* Which of the attention tensors a family's checkpoints carry. */
typedef struct attn_layout {
    bool qkv_bias;        /* self_attn.{q,k,v}_proj.bias */
    bool o_bias;          /* self_attn.o_proj.bias */
    bool sinks;           /* self_attn.sinks [num_heads] (gpt-oss) */
    bool qk_norm;         /* self_attn.{q,k}_norm.weight [head_dim] */
    bool q_gate;          /* q_proj holds, per head, the query then its output gate (Qwen3.5) */
} attn_layout;

/* Layer L's self_attn tensors ({prefix}layers.L.self_attn.*) with shapes checked, in the order
 * q, k, v (weight then bias), o, sinks, q_norm, k_norm; the sliding window from layer_types. */
int arch_load_attention(gb *b, int L, const attn_layout *lay, attn_desc *a, m2o_err *err);

/* The token mixer or the MLP of layer L: reads `input`, names its output in *out. */
typedef int (*arch_block_fn)(gb *b, int L, const char *input, gname *out, m2o_err *err);

/* One pre-norm decoder layer, as every supported family has it:
 *   RMSNorm (input_layernorm) → mixer → RMSNorm (post_attention_layernorm) → mlp,
 * residuals carried by the skip norms; norm weights plus md->norm_weight_offset. */
int arch_decoder_layer(gb *b, int L, gname *hidden, gname *residual, arch_block_fn mixer,
                       arch_block_fn mlp, m2o_err *err);

/* The mixer of a plain attention layer with the given layout. */
int arch_attention_mixer(gb *b, int L, const attn_layout *lay, const char *input, gname *out,
                         m2o_err *err);

/* Layer count and head counts (config.c checks them too; descriptions built by hand in tests
 * come here directly). */
int arch_check_common(const model_desc *md, m2o_err *err);

/* Layer L's MLP as the Qwen MoE models build it (qwen_moe_shared.c): router → experts (per-expert or
 * fused gate_up_proj layout) plus the sigmoid-gated shared expert when the config has one, or
 * the dense MLP of a non-sparse layer. Qwen2-MoE, Qwen3-MoE and Qwen3.5-MoE share it. */
int qwen_moe_build_mlp(gb *b, int L, const char *input, gname *out, m2o_err *err);
/* The description checks of the Qwen MoE MLP (widths for sparse and dense layers). */
int qwen_moe_check_mlp(const model_desc *md, m2o_err *err);

/* config.json, Qwen2/3-MoE: sparse layers (decoder_sparse_step, mlp_only_layers), expert and
 * dense widths, norm_topk_prob; plain SwiGLU constants. */
int qwen_moe_parse_mlp(const cfg_src *s, model_desc *d);
/* SwiGLU without clamp, alpha 1, beta 0 (every Qwen MoE family). */
void qwen_plain_swiglu(model_desc *d);
/* use_sliding_window → sliding_window (default 4096), Qwen2/3-MoE. */
int qwen_moe_parse_sliding_window(const cfg_src *s, model_desc *d);

#endif
