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
