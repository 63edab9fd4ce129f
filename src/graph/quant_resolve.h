/* Per-tensor quantization: given a tensor's role (attn.qkv, mlp.down, lm_head, experts.fc1, ...)
 * and layer, what the resolved options (export_opts.quant, filled by cli/quant_options.c) make of
 * it — float, int with its bits/symmetry/block/method, or MXFP4. The graph asks this for every
 * MatMul and expert tensor; docs/QUANTIZATION.md has the rules. */
#ifndef M2O_GRAPH_QUANT_RESOLVE_H
#define M2O_GRAPH_QUANT_RESOLVE_H

#include <stdbool.h>

#include "common/err.h"
#include "graph/export_opts.h"

/* Where a weight sits. role is one of:
 *   "embed", "lm_head",
 *   "attn.qkv", "attn.q", "attn.k", "attn.v", "attn.o",
 *   "mlp.gate", "mlp.up", "mlp.down"                       (a dense MLP),
 *   "linear_attn.in_proj_qkv", "linear_attn.in_proj_z", "linear_attn.in_proj_a",
 *   "linear_attn.in_proj_b", "linear_attn.out_proj"        (Gated DeltaNet),
 *   "shared_expert.gate", "shared_expert.up", "shared_expert.down", "shared_expert_gate",
 *   "router", "experts.fc1", "experts.fc2".
 * layer is the decoder layer (-1 for embed and lm_head); node_name the graph's node name (may be
 * NULL); matching also tries the builder's name for the role (quant_builder_node_name). */
typedef struct quant_site {
    const char *role;
    int layer;
    int num_layers;          /* decoder layers of the model (mixed_layers preset) */
    bool linear_attn_layer;  /* the layer is a linear-attention layer (linear_attn preset) */
    const char *node_name;
} quant_site;

typedef enum tq_kind { TQ_FLOAT, TQ_INT, TQ_MXFP4 } tq_kind;

typedef struct tensor_quant {
    tq_kind kind;
    int bits;               /* 4 or 8 for TQ_INT, 4 for TQ_MXFP4, 0 for TQ_FLOAT */
    bool symmetric;         /* false: unsigned storage with zero points (uint4/uint8) */
    int block_size;         /* along K; 0 = per channel */
    qmethod method;         /* dense: algo_config's base method; experts: QMETHOD_DEFAULT */
    bool scale_search;      /* moe2onnx's error-minimizing scales instead of plain rounding */
    int accuracy_level;     /* MatMulNBits attribute; -1 for experts and float */
    int prepacked;          /* MatMulNBits: 0 raw, 1 SM80, 2 SM90; QMoE: 0 raw, 1 CUTLASS SM80 */
    bool budget_candidate;  /* int8_budget may still upgrade it to 8 bits (measured later) */
    const char *why;        /* TQ_FLOAT: "float precision", "never quantized", "nodes_to_exclude",
                               "override", "op_types_to_quantize", "moe2onnx default"; else "default", "override",
                               "last_matmul", "mixed_layers", "linear_attn", "experts" */
} tensor_quant;

/* What the tensor at site becomes under o (after options_validate and options_resolve).
 * Returns -1 for an unknown role or a layer out of range. */
int quant_resolve(const export_opts *o, const quant_site *site, tensor_quant *out, m2o_err *err);

/* The builder's ONNX node name for a role ("/model/layers.3/attn/qkv_proj/MatMul",
 * "/lm_head/MatMul"); "" for roles the builder has no MatMul for. */
void quant_builder_node_name(const char *role, int layer, char *buf, int len);

/* Is role known? Accepts "family.*" when allow_family. */
bool quant_role_known(const char *role, bool allow_family);

/* bits of a weight type (0 for none); false for the unsigned (zero-point) types */
int qtype_bits(qtype t);
bool qtype_signed(qtype t);
/* "last_matmul", "mixed_layers", "linear_attn" */
const char *qpreset_name(qpreset p);

#endif
