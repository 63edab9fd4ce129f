/* One builder per architecture: each describes its decoder with the shared blocks of graph/.
 * arch_build_graph (export.c) dispatches on model_desc.arch. */
#ifndef M2O_ARCH_H
#define M2O_ARCH_H

#include "common/err.h"
#include "graph/builder.h"

int gpt_oss_build_graph(gb *b, m2o_err *err);
/* qwen3_moe and qwen2_moe (qwen_moe.c) */
int qwen_moe_build_graph(gb *b, m2o_err *err);
/* Layer L's MLP as the Qwen MoE models build it (qwen_moe.c): router → experts (per-expert or
 * fused gate_up_proj layout) plus the sigmoid-gated shared expert when the config has one, or
 * the dense MLP of a non-sparse layer. Qwen3.5-MoE's MLP is the same block. */
int qwen_moe_build_mlp(gb *b, int L, const char *input, gname *out, m2o_err *err);
/* qwen3_5_moe_text and the text decoder of qwen3_5_moe (qwen3_5_moe.c) */
int qwen3_5_moe_build_graph(gb *b, m2o_err *err);

#endif
