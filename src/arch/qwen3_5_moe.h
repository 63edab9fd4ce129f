/* Qwen3.5/3.6-MoE (qwen3_5_moe_text, and the text decoder of qwen3_5_moe vision-language
 * checkpoints): checkpoint tensors → descriptions of the shared blocks. Exposed for the tests,
 * which build single layers from the fixture. */
#ifndef M2O_ARCH_QWEN3_5_MOE_H
#define M2O_ARCH_QWEN3_5_MOE_H

#include "common/err.h"
#include "graph/builder.h"
#include "graph/linear_attention.h"

/* Layer L's Gated DeltaNet tensors ({prefix}layers.L.linear_attn.*) with shapes checked. */
int qwen3_5_linear_attn_desc(gb *b, int L, linear_attn_desc *d, m2o_err *err);

#endif
