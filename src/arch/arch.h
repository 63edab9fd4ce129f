/* One builder per architecture: each describes its decoder with the shared blocks of graph/.
 * arch_build_graph (export.c) dispatches on model_desc.arch. */
#ifndef M2O_ARCH_H
#define M2O_ARCH_H

#include "common/err.h"
#include "graph/builder.h"

int gpt_oss_build_graph(gb *b, m2o_err *err);
/* qwen3_moe and qwen2_moe (qwen_moe.c) */
int qwen_moe_build_graph(gb *b, m2o_err *err);

#endif
