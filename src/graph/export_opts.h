/* The resolved export configuration: what the command line and --extra_options asked for, after
 * validation and defaulting (cli/options.c fills it; arch/ and graph/ only read it). */
#ifndef M2O_EXPORT_OPTS_H
#define M2O_EXPORT_OPTS_H

#include <stdbool.h>

typedef enum precision { PREC_FP32, PREC_FP16, PREC_BF16, PREC_INT4 } precision;
typedef enum exec_provider { EP_CPU, EP_CUDA } exec_provider;
typedef enum moe_quant { MOE_QUANT_INT4, MOE_QUANT_INT8, MOE_QUANT_MXFP4 } moe_quant;

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
} export_opts;

#endif
