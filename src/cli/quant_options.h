/* The quantization options of `moe2onnx build` (issue 18): the names, values and meanings of
 * onnxruntime-genai's Python builder (its current names and its deprecated int4_ aliases), one
 * structured JSON quant_config beside them, and two moe2onnx additions (scale_search,
 * int8_budget). docs/QUANTIZATION.md is the reference for every option.
 *
 * Three steps, all before any output is written:
 *   quant_option_parse     one KEY=VALUE at a time into a quant_flat (syntax and ranges);
 *   quant_config_build     flat options or JSON → quant_config, refusing every combination
 *                          ONNX Runtime cannot run (and builder rules such as mxfp4 + asymmetric);
 *   quant_config_check_supported
 *                          refuses what this build cannot write yet (shrinks as the graph learns).
 * Then quant_resolve answers, per tensor, what it becomes. */
#ifndef M2O_QUANT_OPTIONS_H
#define M2O_QUANT_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "graph/export_opts.h"
#include "graph/quant_resolve.h"

#define QUANT_UNSET INT32_MIN

/* What --extra_options said about quantization, before defaults. Integers are QUANT_UNSET
 * when not given; each *_key remembers the spelling used (alias or current name) for messages. */
typedef struct quant_flat {
    int block_size, accuracy_level, is_symmetric;      /* is_symmetric: -1 unset, 0, 1 */
    const char *block_size_key, *accuracy_level_key, *is_symmetric_key;
    int op_matmul, op_gather;                          /* op_types_to_quantize: -1 unset */
    const char *op_types_key;
    int algo_set;                                      /* algo_config given */
    qmethod method;
    const char *algo_key;
    char algo_value[32];
    int n_mixed;                                       /* matmul_mixed_precision + algo aliases */
    qpreset mixed_preset[3];
    qtype mixed_type[3];
    int n_exclude;
    char exclude[QUANT_MAX_OVERRIDES][192];            /* nodes_to_exclude */
    const char *exclude_key;
    int moe_quant_set;                                 /* moe_quant_type given */
    moe_quant moe_resolved;                            /* set by quant_config_build */
    moe_quant moe_quant_type;                          /* bits; uint4/uint8 set moe_unsigned */
    bool moe_unsigned;                                 /* moe_quant_type=uint4|uint8 (zero points) */
    int use_8bits_moe, use_fp4_moe;                    /* -1 unset, else 0/1 */
    int qmoe_block_size;                               /* QUANT_UNSET, <= 0 per channel, else N */
    int qmoe_prepacked;                                /* QUANT_UNSET, else -1/0/1 */
    int mm_prepacked;                                  /* matmulnbits_weights_prepacked: QUANT_UNSET/0/1/2 */
    int use_qdq;                                       /* -1 unset */
    bool qmoe_quantize_bias;
    int scale_search;                                  /* -1 unset */
    double int8_budget_percent;                        /* < 0 unset */
    int64_t int8_budget_bytes;                         /* < 0 unset */
    char int8_budget_text[32];
    const char *json;                                  /* quant_config=VALUE (inline JSON or a path) */
    bool in_json;                                      /* parsing the JSON's fields now */
    int dense_type;                                    /* JSON weights.type: -1 unset, else qtype */
    bool moe_none;                                     /* JSON moe.type=none: float experts */
    int n_json_overrides;
    quant_override json_overrides[QUANT_MAX_OVERRIDES];
    int n_flat_quant;                                  /* flat quantization keys given (conflicts) */
    char first_flat_quant[64];
} quant_flat;

void quant_flat_init(quant_flat *f);

/* One --extra_options pair. Returns 1 when key is not a quantization option (the caller handles
 * it), 0 when parsed, -1 with a one-line message naming the option and the allowed values. */
int quant_option_parse(quant_flat *f, const char *key, const char *value, m2o_err *err);

/* Booleans as the builder accepts them: true/True/1, false/False/0. */
int quant_parse_bool(const char *key, const char *v, bool *out, m2o_err *err);

/* Flat options (or the JSON, which may not be combined with flat quantization keys) → q, with
 * defaults for precision p and provider ep, refusing combinations ONNX Runtime cannot run. */
int quant_config_build(quant_flat *f, precision p, exec_provider ep, int io_dtype, quant_config *q,
                       m2o_err *err);

/* Everything this build cannot write yet (the MatMuls take every value since graph/linear.c asks
 * quant_resolve; the embedding, QDQ, the CUDA prepack, int8_budget, per-channel and float experts
 * remain). One function so it shrinks, case by case, as the graph wiring lands. */
int quant_config_check_supported(const quant_config *q, m2o_err *err);

/* ---- Per-tensor resolution ---- */

#endif
