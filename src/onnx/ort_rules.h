/* What ONNX Runtime's kernels accept at run time, beyond what its shape inference checks at load.
 * A model that breaks one of these loads and then fails at its first run, so the converter
 * refuses it before writing anything, and verify checks the written graph against the same
 * rules. Each rule names where ONNX Runtime enforces it (docs/FORMATS.md §15 lists them). */
#ifndef M2O_ORT_RULES_H
#define M2O_ORT_RULES_H

#include "common/err.h"

/* GroupQueryAttention with rotary caches (group_query_attention_helper.h CheckInputs, every
 * provider): num_heads a multiple of kv_num_heads; head_size a multiple of 8, and with rotary
 * caches (rotary_dim > 0; 0 = none) a multiple of 16; the cos/sin cache
 * width (rotary_dim / 2) a multiple of 8 and at most head_size / 2, so rotary_dim is a multiple
 * of 16 no larger than head_size. On CUDA also num_heads ≤ 1024 (threads per block).
 * On failure err says which rule broke, for the caller to prefix with where. */
int ort_gqa_rule(int num_heads, int kv_num_heads, int head_size, int rotary_dim, m2o_err *err);

/* Largest num_heads ONNX Runtime's CUDA GroupQueryAttention launches (max threads per block). */
#define ORT_GQA_CUDA_MAX_HEADS 1024

#endif
