/* ONNX Runtime's run-time rules (onnx/ort_rules.h): the real models' shapes pass, and each
 * rule refuses the shape that ONNX Runtime's GroupQueryAttention refuses at its first run. */
#include "test.h"

#include "onnx/ort_rules.h"

TEST(real_model_attention_shapes_pass)
{
    m2o_err e;
    CHECK_EQ(ort_gqa_rule(64, 8, 64, 64, &e), 0);   /* gpt-oss-20b / -120b */
    CHECK_EQ(ort_gqa_rule(32, 4, 128, 128, &e), 0); /* Qwen3-30B-A3B */
    CHECK_EQ(ort_gqa_rule(16, 2, 256, 64, &e), 0);  /* Qwen3.5-35B-A3B: partial rotary 0.25 */
    CHECK_EQ(ort_gqa_rule(4, 2, 64, 16, &e), 0);    /* qwen3_5-moe-tiny */
}

TEST(rotary_width_must_be_a_multiple_of_16_within_the_head)
{
    m2o_err e;
    CHECK_EQ(ort_gqa_rule(4, 2, 32, 8, &e), -1); /* head_dim 32, factor 0.25: the case */
    CHECK_STR_CONTAINS(e.msg, "8 rotary dimensions");
    CHECK_EQ(ort_gqa_rule(4, 2, 64, 24, &e), -1);
    CHECK_EQ(ort_gqa_rule(4, 2, 64, 80, &e), -1);
    CHECK_EQ(ort_gqa_rule(4, 2, 64, 48, &e), 0);
}

TEST(head_size_and_head_counts)
{
    m2o_err e;
    CHECK_EQ(ort_gqa_rule(4, 2, 72, 64, &e), -1); /* a multiple of 8, not of 16 */
    CHECK_STR_CONTAINS(e.msg, "head_dim 72");
    CHECK_EQ(ort_gqa_rule(4, 2, 72, 0, &e), 0);   /* without rotary caches a multiple of 8 will do */
    CHECK_EQ(ort_gqa_rule(4, 2, 36, 0, &e), -1);
    CHECK_EQ(ort_gqa_rule(6, 4, 64, 64, &e), -1);
    CHECK_STR_CONTAINS(e.msg, "not a multiple of num_key_value_heads");
    CHECK_EQ(ort_gqa_rule(2048, 8, 64, 64, &e), -1);
    CHECK_EQ(ort_gqa_rule(1024, 8, 64, 64, &e), 0);
}


/* Zero points (uint4/uint8 experts): never with per-channel scales; 4-bit needs an even block
 * count per row in fc1 (H / block) and fc2 (I / block) on both providers; 8-bit any count. */
TEST(qmoe_zero_point_rule)
{
    m2o_err e = {{0}};
    CHECK_EQ(ort_qmoe_zero_point_rule(false, 4, 32, 256, 128, &e), 0);
    CHECK_EQ(ort_qmoe_zero_point_rule(true, 4, 64, 2880, 2880, &e), -1); /* 45 blocks a row */
    CHECK_STR_CONTAINS(e.msg, "CUDA");
    CHECK_EQ(ort_qmoe_zero_point_rule(false, 4, 128, 256, 128, &e), -1); /* fc2: 1 block */
    CHECK_STR_CONTAINS(e.msg, "computes wrongly");
    CHECK_EQ(ort_qmoe_zero_point_rule(false, 8, 128, 256, 128, &e), 0);
    CHECK_EQ(ort_qmoe_zero_point_rule(true, 8, 0, 256, 128, &e), -1);
    CHECK_STR_CONTAINS(e.msg, "per channel");
}
