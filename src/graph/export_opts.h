/* The resolved export configuration: what the command line and --extra_options asked for, after
 * validation and defaulting (cli/options.c fills it; arch/ and graph/ only read it). */
#ifndef M2O_EXPORT_OPTS_H
#define M2O_EXPORT_OPTS_H

#include <stdbool.h>
#include <stdint.h>

typedef enum precision { PREC_FP32, PREC_FP16, PREC_BF16, PREC_INT4 } precision;
typedef enum exec_provider { EP_CPU, EP_CUDA } exec_provider;
typedef enum moe_quant { MOE_QUANT_INT4, MOE_QUANT_INT8, MOE_QUANT_MXFP4 } moe_quant;

/* ---- The quantization request (issue 18): onnxruntime-genai's builder surface, resolved ----
 * cli/quant_options.c fills it from --extra_options (flat names and their deprecated int4_
 * aliases) or from one JSON quant_config; quant_resolve (cli/quant_options.h) answers, per
 * tensor, what it becomes. docs/QUANTIZATION.md describes every option. */
typedef enum qtype { QTYPE_NONE, QTYPE_INT4, QTYPE_UINT4, QTYPE_INT8, QTYPE_UINT8, QTYPE_MXFP4 } qtype;
typedef enum qmethod { QMETHOD_DEFAULT, QMETHOD_RTN, QMETHOD_K_QUANT } qmethod;
/* matmul_mixed_precision selectors (the builder's node groups) */
typedef enum qpreset { QPRESET_NONE = -1, QPRESET_LAST_MATMUL, QPRESET_MIXED_LAYERS, QPRESET_LINEAR_ATTN } qpreset;

#define QUANT_MAX_OVERRIDES 64
#define QUANT_MAX_LAYERS 512 /* layer indices a "layers" match can name */

/* One override: every given key must match (AND); the first matching override decides. */
typedef struct quant_override {
    char name[192];        /* exact node name ("" = any) */
    char name_regex[192];  /* POSIX extended regex searched in the node name ("" = any) */
    char role[40];         /* a role ("attn.qkv") or a family ("attn.*"); "" = any */
    char op_type[16];      /* "MatMul" or "Gather"; "" = any */
    qpreset preset;        /* QPRESET_NONE = any */
    bool has_layers;
    uint64_t layers[QUANT_MAX_LAYERS / 64]; /* bit i: layer i */
    bool exclude;          /* keep the tensor in float */
    qtype type;            /* when !exclude */
} quant_override;

typedef struct quant_config {
    /* Dense weights (MatMulNBits). weights_type follows -p: INT4 for int4, NONE for floats. */
    qtype weights_type;
    int block_size;            /* 16..256 (power of two); 0 = per channel */
    bool symmetric;            /* false: uint4/uint8 storage with zero points */
    qmethod method;            /* algo_config's base method */
    int accuracy_level;        /* 0..4 */
    bool quantize_matmul;      /* op_types_to_quantize holds MatMul (default) */
    bool quantize_gather;      /* ... holds Gather: the embedding through GatherBlockQuantized */
    int n_overrides;           /* presets, nodes_to_exclude and JSON overrides, in match order */
    quant_override overrides[QUANT_MAX_OVERRIDES];
    /* Experts (QMoE). The resolved block/layout live in export_opts.qmoe_*. */
    qtype moe_type;            /* INT4, INT8, MXFP4; NONE with float precisions */
    bool moe_per_channel;      /* qmoe_block_size <= 0 was asked */
    /* Runtime layout */
    int matmulnbits_weights_prepacked; /* 0 raw, 1 SM80, 2 SM90 fpA_intB layout (CUDA) */
    bool use_qdq;              /* QDQ instead of MatMulNBits */
    /* moe2onnx additions (not in the builder) */
    bool scale_search;         /* int experts: error-minimizing scale search instead of plain rounding */
    bool scale_search_matmul;  /* MatMuls: the same (scale_search=true or =matmul) */
    double int8_budget_percent;/* < 0: unset; else extra bytes as % of the int4 dense bytes */
    int64_t int8_budget_bytes; /* < 0: unset; else extra bytes allowed */
    bool from_json;            /* came from quant_config=JSON */
    bool filled;               /* set by quant_config_build; false in an export_opts built by hand
                                  (tests), which the graph reads through the int4_* fields */
} quant_config;

typedef struct export_opts {
    precision precision;
    exec_provider ep;
    int io_dtype;               /* ONNX_FLOAT, ONNX_FLOAT16 or ONNX_BFLOAT16 (graph/ inputs, scales) */

    /* Linear layers (int4 only): MatMulNBits */
    int int4_block_size;        /* default 32 */
    int int4_accuracy_level;    /* default 4 on CPU, 0 otherwise */

    /* Experts (int4 precision only; float precisions use the MoE op) */
    moe_quant moe_quant_type;   /* int4 default */
    int qmoe_block_size;        /* resolved: never 0 after validation */
    int qmoe_weights_prepacked; /* resolved layout: 1 = CUTLASS SM80 (CUDA int default), 0 = raw */
    bool qmoe_quantize_bias;    /* int experts: round the expert biases through the same blockwise
                                   quantizer (rows = experts, blocks along N); default false keeps
                                   them exact, as onnxruntime-genai's builder does */

    bool use_cuda_bf16;
    bool allow_nonfinite;       /* pass NaN/Inf weights through instead of failing */
    /* As onnxruntime-genai's builder: exclude_lm_head drops the LM head and the graph outputs
     * "hidden_states" (the final norm's output, io dtype) instead of "logits";
     * include_hidden_states outputs "hidden_states" first and "logits" after it. */
    bool exclude_lm_head;
    bool include_hidden_states;
    bool exclude_embeds;

    /* The whole quantization request; the fields above stay the graph's current inputs.
     * Filled by options_validate only: an export_opts built by hand has it zeroed (QTYPE_NONE). */
    quant_config quant;
} export_opts;

#endif
