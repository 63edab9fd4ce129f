/* Shared by the parts of verify: the open inputs and the report being filled. */
#ifndef M2O_VERIFY_INTERNAL_H
#define M2O_VERIFY_INTERNAL_H

#include <cJSON.h>

#include "arch/model_desc.h"
#include "checkpoint/safetensors.h"
#include "onnx/model_reader.h"
#include "verify/verify.h"

typedef struct vctx {
    const model_desc *md;
    const st_checkpoint *ck;
    onnx_model *m;
    bool cuda;               /* the folder targets CUDA (genai_config provider_options) */
    const verify_opts *o;
    verify_report *r;
    bool *covered;           /* per initializer: verified (or faulted) by a node's weight check */
} vctx;

/* Graph invariants (invariants.c): names, router not quantized, QMoE/MoE attributes, GQA. */
/* Drops the pages of [p, p + len) from this process (they are re-read if touched again). */
void vrelease_pages(const void *p, size_t len);
/* Number of elements of an initializer. */
int64_t vnumel(const onnx_tensor *t);
/* A QMoE node's quantization attributes as the node declares them, ONNX Runtime's defaults where
 * one is absent: expert_weight_bits 4, block_size 0 (one scale per row), quant_type "int",
 * weights_prepacked -1 (all of them for n NULL: a float MoE node, whose attributes are not read). */
typedef struct vqmoe_attrs {
    int64_t bits, block_size, prepacked;
    const char *quant_type;
} vqmoe_attrs;
vqmoe_attrs vqmoe_attrs_read(const onnx_node *n);

int vcheck_graph(vctx *c, m2o_err *err);
/* genai_config.json against the graph and config.json (invariants.c). */
int vcheck_genai(vctx *c, const cJSON *root, const char *model_filename, m2o_err *err);
/* Every QMoE / MoE / MatMulNBits / named MatMul weight against the checkpoint (tensors.c). */
int vcheck_tensors(vctx *c, m2o_err *err);

/* Every initializer the weight checks did not cover, against the checkpoint / config.json; an
 * initializer no rule knows is a fault (initializers.c). */
int vcheck_initializers(vctx *c, m2o_err *err);
/* Records that t is verified by the weight checks. */
void vmark_initializer(vctx *c, const onnx_tensor *t);
/* Graph well-formedness: every node input produced by an earlier node, a graph input or an
 * initializer (topological order, hence no cycle) (invariants.c). */
void vcheck_graph_order(vctx *c);

/* One line: the quantized tensors' mean and worst relative RMS error (quant_fields.c). */
void verify_print_error_summary(const verify_report *r, FILE *f);

/* Adds a tensor row; returns its index. */
size_t verify_add_tensor(verify_report *r, const vtensor *t);

#endif
