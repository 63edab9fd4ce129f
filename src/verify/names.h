/* Where each weight of an exported graph comes from in the checkpoint: the one table that knows
 * the exporter's node names (onnxruntime-genai conventions, e.g. "/model/layers.0/attn/qkv_proj/
 * MatMul_Q4" reads q_proj, k_proj and v_proj stacked along N). Adjust the table in names.c when
 * the exporter's names change; a quantized weight that matches no rule fails verify (unmatched)
 * so a rename can never silently skip a check. */
#ifndef M2O_VERIFY_NAMES_H
#define M2O_VERIFY_NAMES_H

#include <stdbool.h>
#include <stddef.h>

#include "arch/model_desc.h"
#include "checkpoint/safetensors.h"
#include "verify/source.h"

typedef enum vrole {
    VROLE_LINEAR,      /* may be quantized (MatMulNBits) */
    VROLE_ROUTER,      /* must stay a float MatMul */
    VROLE_KEEP_FLOAT,  /* shared_expert_gate: must stay a float MatMul */
} vrole;

/* The module path of a node: its name without the last component ("/model/layers.0/attn/
 * qkv_proj/MatMul_Q4" -> "/model/layers.0/attn/qkv_proj"). */
void vnames_module(const char *node_name, char *buf, size_t len);

/* Layer index named in a node or initializer name ("layers.12" -> 12), or -1. */
int vnames_layer(const char *name);

/* Matches the module of a MatMul/MatMulNBits node. On a match: *role, and (when ck is given)
 * the checkpoint weight parts in *lin (n_parts = 0 when a part is missing from ck), and the
 * checkpoint names tried in `tried` for messages. Returns false when no rule matches. */
bool vnames_linear(const char *node_name, const model_desc *md, const st_checkpoint *ck,
                   vrole *role, vlinear *lin, char *tried, size_t tried_len);

#endif
