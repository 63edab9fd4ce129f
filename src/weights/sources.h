/* Where a weight lives in the checkpoint: the descriptors the architecture files fill (through
 * graph/blocks.h, which includes this header) and the producers in this folder read.
 *
 * A "linear source" is one nn.Linear weight [N, K] or several stacked along N (packed q/k/v).
 * An "expert source" is every expert's matrix of one MoE projection, in one of the checkpoint
 * layouts below. Every layout yields an expert's matrix as float32 [N][K] (nn.Linear layout:
 * rows are output features). For fc1 the rows are gate/up INTERLEAVED (even rows gate, odd rows
 * up), which is what QMoE/MoE with swiglu_fusion=1 expect (docs/FORMATS.md §8); sources stored as
 * [gate; up] halves set `interleave` and are reordered on the fly. */
#ifndef M2O_WEIGHTS_SOURCES_H
#define M2O_WEIGHTS_SOURCES_H

#include <stdbool.h>
#include <stdint.h>

#include "checkpoint/safetensors.h"

#define LINEAR_MAX_PARTS 4

typedef struct linear_src {
    int n_parts;
    const st_tensor *w[LINEAR_MAX_PARTS];    /* [N_i, K] */
    const st_tensor *bias[LINEAR_MAX_PARTS]; /* [N_i] or NULL (all or none) */
} linear_src;

int64_t linear_src_n(const linear_src *s);
int64_t linear_src_k(const linear_src *s);

typedef enum expert_src_kind {
    EXPERT_MXFP4,      /* blocks U8 [E, N, K/32, 16] + scales U8 [E, N, K/32] (gpt-oss official) */
    EXPERT_FUSED_KN,   /* one tensor [E, K, N], input-major (gpt-oss BF16 gate_up_proj/down_proj) */
    EXPERT_FUSED_NK,   /* one tensor [E, N, K] (Qwen3.5 fused experts.gate_up_proj/down_proj) */
    EXPERT_PER_EXPERT, /* E tensors [N, K] each, or E gate + E up tensors [N/2, K] (Qwen) */
} expert_src_kind;

#define EXPERT_MAX 1024
/* Size of expert_src.what: graph/experts.h checks that it equals GNAME_MAX (the graph's name
 * size), so the architecture files can format graph names into it. */
#define EXPERT_WHAT_MAX 256

typedef struct expert_src {
    expert_src_kind kind;
    int64_t E, N, K;
    const st_tensor *t;      /* MXFP4: blocks; FUSED_*: the tensor */
    const st_tensor *scales; /* MXFP4 only */
    /* PER_EXPERT: per[e] is expert e's [N, K] weight, or its gate half [N/2, K] when up[e] is
     * set (then up[e] is the up half and rows are interleaved). */
    const st_tensor *per[EXPERT_MAX];
    const st_tensor *up[EXPERT_MAX];
    bool interleave; /* FUSED_NK: rows are [gate; up] halves → emit interleaved */
    char what[EXPERT_WHAT_MAX]; /* for errors: e.g. "model.layers.0.mlp.experts.gate_up_proj" */
} expert_src;

/* True when the source's codes can pass through unchanged as MXFP4. */
static inline bool expert_src_is_mxfp4(const expert_src *s) { return s->kind == EXPERT_MXFP4; }

#endif
