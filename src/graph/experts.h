/* Expert weights: where each expert's matrix comes from in the checkpoint, and the streamed
 * producers that turn one expert (one chunk) into each encoding the MoE / QMoE ops take
 * (docs/FORMATS.md §8): float [E, N, K]; int raw [E, N, K/pack] + scales [E, N, K/bs]; int CUTLASS SM80
 * prepacked (declared [E, K, N/pack]); fp4 [E, K, N/2] + E8M0 scales [E, N, K/32].
 *
 * Every source yields the expert's matrix as float32 [N][K] (nn.Linear layout: rows are output
 * features). For fc1 the rows are gate/up INTERLEAVED (even rows gate, odd rows up), which is
 * what QMoE/MoE with swiglu_fusion=1 expect; sources stored as [gate; up] halves set
 * `interleave` and are reordered on the fly. */
#ifndef M2O_GRAPH_EXPERTS_H
#define M2O_GRAPH_EXPERTS_H

#include <stdbool.h>
#include <stdint.h>

#include "checkpoint/safetensors.h"
#include "common/err.h"
#include "graph/builder.h"

typedef enum expert_src_kind {
    EXPERT_MXFP4,      /* blocks U8 [E, N, K/32, 16] + scales U8 [E, N, K/32] (gpt-oss official) */
    EXPERT_FUSED_KN,   /* one tensor [E, K, N], input-major (gpt-oss BF16 gate_up_proj/down_proj) */
    EXPERT_FUSED_NK,   /* one tensor [E, N, K] (Qwen3.5 fused experts.gate_up_proj/down_proj) */
    EXPERT_PER_EXPERT, /* E tensors [N, K] each, or E gate + E up tensors [N/2, K] (Qwen) */
} expert_src_kind;

#define EXPERT_MAX 1024

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
    char what[GNAME_MAX]; /* for errors: e.g. "model.layers.0.mlp.experts.gate_up_proj" */
} expert_src;

/* Expert e as float32 [N][K]. tmp is not used (may be NULL). Releases the pages it read. */
int expert_read_f32(const expert_src *s, int64_t e, float *out, float *tmp, m2o_err *err);

/* True when the source's codes can pass through unchanged as MXFP4. */
static inline bool expert_src_is_mxfp4(const expert_src *s) { return s->kind == EXPERT_MXFP4; }

typedef enum expert_enc {
    ENC_FLOAT,      /* [E, N, K] io dtype (MoE op) */
    ENC_INT_RAW,    /* QMoE int: codes [E, N, K*bits/8] */
    ENC_INT_SM80,   /* QMoE int: CUTLASS SM80 prepacked, declared [E, K, N*bits/8] */
    ENC_INT_SCALES, /* QMoE int: scales [E, N, K/bs] io dtype (signed) */
    ENC_FP4,        /* QMoE fp4: codes [E, K, N/2] (CUDA nibble transpose) */
    ENC_FP4_SCALES, /* QMoE fp4: E8M0 scales [E, N, K/32] */
} expert_enc;

/* Adds the streamed initializer `name` holding encoding `enc` of all experts of src, one expert
 * per chunk. bits/block_size matter for the int encodings. */
int gb_add_experts(gb *b, const char *name, const expert_src *src, expert_enc enc, int bits,
                   int block_size, m2o_err *err);

/* The weights (enc = ENC_INT_RAW, ENC_INT_SM80 or ENC_FP4) and their scales as one streamed
 * group: each expert is read and quantized once for both. */
int gb_add_experts_quantized(gb *b, const char *weights_name, const char *scales_name,
                             const expert_src *src, expert_enc enc, int bits, int block_size,
                             m2o_err *err);

/* What the streamed producers do for one expert: reads expert e of src in bands of rows and
 * encodes it into weights (enc's chunk, or NULL) and scales (the matching scales chunk, or NULL;
 * with enc a scales encoding, weights is NULL), then releases its checkpoint pages. io_dtype
 * sets the float / scale type. Shared by gb_add_experts* and bench/bench_layer.c. */
int expert_produce(const expert_src *src, int64_t e, expert_enc enc, int bits, int block_size,
                   int io_dtype, bool allow_nonfinite, void *weights, void *scales, m2o_err *err);

/* Pure: one expert's bytes for an encoding, from its float [N][K] matrix (int encodings, fp4
 * encode) — shared by the producer and by tests. out has the chunk size of that encoding. */
int expert_encode(const float *w, int64_t N, int64_t K, expert_enc enc, int bits, int block_size,
                  int io_dtype, void *out, m2o_err *err);
size_t expert_chunk_bytes(int64_t N, int64_t K, expert_enc enc, int bits, int block_size,
                          int io_dtype);

#endif
