/* What ONNX Runtime's kernels accept at run time, beyond what its shape inference checks at load.
 * A model that breaks one of these loads and then fails at its first run, so the converter
 * refuses it before writing anything, and verify checks the written graph against the same
 * rules. Each rule names where ONNX Runtime enforces it (docs/FORMATS.md §15 lists them). */
#ifndef M2O_ORT_RULES_H
#define M2O_ORT_RULES_H

#include <stdbool.h>
#include <stdint.h>

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

/* com.microsoft QMoE inputs by position (docs/FORMATS.md §11.5); 8-10 (fc3) and 13 (fc3 zero
 * points) are not used by the exporter; 11-12 only by uint4/uint8 experts. */
enum qmoe_input {
    QMOE_IN_INPUT = 0,
    QMOE_IN_ROUTER_PROBS = 1,
    QMOE_IN_FC1_WEIGHTS = 2,
    QMOE_IN_FC1_SCALES = 3,
    QMOE_IN_FC1_BIAS = 4,
    QMOE_IN_FC2_WEIGHTS = 5,
    QMOE_IN_FC2_SCALES = 6,
    QMOE_IN_FC2_BIAS = 7,
    QMOE_IN_FC1_ZERO_POINTS = 11, /* uint8 [E, N, ceil(blocks * bits / 8)] */
    QMOE_IN_FC2_ZERO_POINTS = 12,
    QMOE_IN_ROUTER_WEIGHTS = 14, /* when given, router_probs only select and these weigh */
    QMOE_IN_FC1_GLOBAL_SCALE = 15,
    QMOE_IN_FC2_GLOBAL_SCALE = 16,
    QMOE_N_INPUTS = 17
};

/* MXFP4 (quant_type fp4) blocks: always 32 along K. */
#define ORT_MXFP4_BLOCK 32
/* ONNX Runtime's CUDA QMoE int kernels need the hidden and expert widths to be multiples of it. */
#define ORT_QMOE_CUDA_WIDTH_MULTIPLE 64

/* Block sizes ONNX Runtime's QMoE kernels take for int4/int8 experts: CPU 16, 32, 64, 128;
 * CUDA 32, 64, 128. ort_qmoe_blocks_text gives the list for messages. */
bool ort_qmoe_block_ok(bool cuda, int block_size);
const char *ort_qmoe_blocks_text(bool cuda);

/* The int4/int8 QMoE rules for one layer's widths (hidden H, expert intermediate I): block size,
 * divisibility, and on CUDA widths multiple of ORT_QMOE_CUDA_WIDTH_MULTIPLE. */
int ort_qmoe_int_rule(bool cuda, int block_size, int64_t H, int64_t I, m2o_err *err);

/* Zero points (inputs 11-12, uint4/uint8 experts; docs/FORMATS.md §15): refused with per-channel
 * scales (block_size <= 0; ONNX Runtime's CUDA QMoE returns INVALID_ARGUMENT for row-wise zero
 * points, the CPU form is not written), and for 4 bits when fc1 (H / block) or fc2 (I / block)
 * has an odd block count per row: the CPU kernel runs it and computes it wrong
 * (tests/e2e/zero_points.test.mjs); the CUDA kernel's PrePack takes 2 x the packed bytes per row
 * as the block count (contrib_ops/cuda/moe/moe_quantization.cc, PrePackComputeBias), one too many. */
int ort_qmoe_zero_point_rule(bool cuda, int bits, int block_size, int64_t H, int64_t I, m2o_err *err);

#endif
