#include "onnx/ort_rules.h"

int ort_gqa_rule(int num_heads, int kv_num_heads, int head_size, int rotary_dim, m2o_err *err)
{
    if (kv_num_heads <= 0 || num_heads % kv_num_heads)
        return m2o_fail(err, "num_attention_heads %d is not a multiple of num_key_value_heads %d, "
                        "which GroupQueryAttention requires", num_heads, kv_num_heads);
    if (num_heads > ORT_GQA_CUDA_MAX_HEADS)
        return m2o_fail(err, "num_attention_heads %d exceeds the %d GroupQueryAttention allows on CUDA",
                        num_heads, ORT_GQA_CUDA_MAX_HEADS);
    if (head_size % 8)
        return m2o_fail(err, "head_dim %d is not a multiple of 8, which GroupQueryAttention "
                        "requires", head_size);
    if (rotary_dim == 0) /* no rotary caches */
        return 0;
    if (head_size % 16)
        return m2o_fail(err, "head_dim %d is not a multiple of 16, which GroupQueryAttention with "
                        "rotary embedding requires", head_size);
    if (rotary_dim % 16 || rotary_dim > head_size)
        return m2o_fail(err, "%d rotary dimensions: GroupQueryAttention rotates a multiple of 16 "
                        "dimensions, at most head_dim %d (its cos/sin caches must be a multiple of 8 "
                        "wide), so ONNX Runtime would refuse the model at its first run",
                        rotary_dim, head_size);
    return 0;
}

static const int qmoe_cpu_blocks[] = {16, 32, 64, 128}, qmoe_cuda_blocks[] = {32, 64, 128};

bool ort_qmoe_block_ok(bool cuda, int block_size)
{
    const int *list = cuda ? qmoe_cuda_blocks : qmoe_cpu_blocks;
    int n = cuda ? 3 : 4;
    for (int i = 0; i < n; i++)
        if (block_size == list[i])
            return true;
    return false;
}

const char *ort_qmoe_blocks_text(bool cuda)
{
    return cuda ? "32, 64, 128" : "16, 32, 64, 128";
}

int ort_qmoe_int_rule(bool cuda, int block_size, int64_t H, int64_t I, m2o_err *err)
{
    if (!ort_qmoe_block_ok(cuda, block_size))
        return m2o_fail(err, "qmoe_block_size=%d is not supported by ONNX Runtime's %s QMoE (allowed: %s)",
                        block_size, cuda ? "CUDA" : "CPU", ort_qmoe_blocks_text(cuda));
    if (H % block_size || I % block_size)
        return m2o_fail(err, "qmoe_block_size=%d does not divide hidden_size %lld and expert intermediate "
                        "size %lld; pick a block size that divides both",
                        block_size, (long long)H, (long long)I);
    if (cuda && (H % ORT_QMOE_CUDA_WIDTH_MULTIPLE || I % ORT_QMOE_CUDA_WIDTH_MULTIPLE))
        return m2o_fail(err, "ONNX Runtime's CUDA QMoE needs hidden_size %lld and expert intermediate "
                        "size %lld to be multiples of %d",
                        (long long)H, (long long)I, ORT_QMOE_CUDA_WIDTH_MULTIPLE);
    return 0;
}

int ort_qmoe_zero_point_rule(bool cuda, int bits, int block_size, int64_t H, int64_t I, m2o_err *err)
{
    if (block_size <= 0)
        return m2o_fail(err, "moe_quant_type=uint%d with qmoe_block_size=0 (per channel): ONNX Runtime's CUDA "
                        "QMoE refuses zero points with per-channel scales and moe2onnx does not write them "
                        "for the CPU; use a block size, or moe_quant_type=int%d", bits, bits);
    if (bits == 4 && ((H / block_size) % 2 || (I / block_size) % 2))
        return m2o_fail(err, "moe_quant_type=uint4 with qmoe_block_size=%d: hidden_size %lld / %d or expert "
                        "intermediate size %lld / %d is an odd block count per row, which ONNX Runtime's %s "
                        "QMoE %s with 4-bit zero points; pick a block size giving even counts, or "
                        "moe_quant_type=uint8 or int4",
                        block_size, (long long)H, block_size, (long long)I, block_size, cuda ? "CUDA" : "CPU",
                        cuda ? "reads as twice the packed bytes per row (a pad block too many)"
                             : "runs but computes wrongly");
    return 0;
}
