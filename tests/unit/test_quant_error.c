/* Quantization error sums (quant/qerr.c), the graph's registry (onnx/quant_stats.c), and their
 * agreement with verify's comparison (verify/compare.c), which reports the same numbers. */
#include "test.h"
#include "test_quant_rng.h"

#include "onnx/graph.h"
#include "onnx/quant_stats.h"
#include "quant/qerr.h"
#include "verify/compare.h"
#include "weights/qerr_track.h"

/* 2 x 4, blocks of 2, 4-bit symmetric (zero point 8), float32 scales; every value worked out by
 * hand: row 0 decodes to 1, -0.5 | 0, 3 (scales 0.5, 1), row 1 to 0.25, 0 | 2, (NaN skipped)
 * (scales 0.25, 2). Errors 0.25 at (0,2) and (1,0), the rest exact. */
static const float kW[8] = {1.0f, -0.5f, 0.25f, 3.0f, 0.0f, 0.0f, 2.0f, NAN};
static const float kScales[4] = {0.5f, 1.0f, 0.25f, 2.0f};
static const uint8_t kCodes[4] = {0x7A, 0xB8, 0x89, 0xD9};

static void check_hand_sums(const qerr_acc *a)
{
    CHECK_EQ(a->n, 7);
    CHECK_EQ(a->n_nonfinite, 1);
    CHECK(a->sum_err2 == 0.125);
    CHECK(a->sum_ref2 == 14.3125);
    CHECK(a->max_abs == 0.25);
    CHECK(qerr_rel_rms(a) == sqrt(0.125 / 14.3125));
}

TEST(blockwise_symmetric_exact_values)
{
    qb_params p = {.bits = 4, .block_size = 2, .symmetric = true, .scale_type = QSCALE_F32};
    qerr_acc a = {0};
    qerr_blockwise(kW, 2, 4, &p, kCodes, kScales, NULL, &a);
    check_hand_sums(&a);
}

TEST(blockwise_zero_points_exact_values)
{
    /* row 0's second block with zero point 5: codes 5, 8 decode to 0, 3 as before */
    qb_params p = {.bits = 4, .block_size = 2, .symmetric = false, .scale_type = QSCALE_F32};
    const uint8_t codes[4] = {0x7A, 0x85, 0x89, 0xD9}, zp[2] = {0x58, 0x88};
    qerr_acc a = {0};
    qerr_blockwise(kW, 2, 4, &p, codes, kScales, zp, &a);
    check_hand_sums(&a);
}

TEST(blockwise_float16_scales_round_like_verify)
{
    /* scale 0.1 is stored as float16 0.0999755859375: the decode uses the stored value */
    qb_params p = {.bits = 8, .block_size = 2, .symmetric = true, .scale_type = QSCALE_F16};
    const float w[2] = {1.0f, -0.1f};
    const uint16_t sc = 0x2E66; /* float16 nearest 0.1 */
    const uint8_t codes[2] = {128 + 10, 128 - 1};
    qerr_acc a = {0};
    qerr_blockwise(w, 1, 2, &p, codes, &sc, NULL, &a);
    double s = 0.0999755859375;
    double e0 = 1.0 - (double)(float)(10.0f * (float)s), e1 = (double)(float)(-(float)s) + 0.1f;
    CHECK(a.sum_err2 == e0 * e0 + e1 * e1);
    CHECK(a.max_abs == fmax(fabs(e0), fabs(e1)));
}

TEST(mxfp4_exact_values)
{
    /* one block, scale 2^0: 31 values 1.2 coded as 1.0 (code 2), one -6 coded exactly (15) */
    float w[32];
    uint8_t codes[16], scale = 127;
    for (int k = 0; k < 32; k++)
        w[k] = k == 1 ? -6.0f : 1.2f;
    for (int i = 0; i < 16; i++)
        codes[i] = i == 0 ? (uint8_t)(2 | 15 << 4) : 0x22;
    qerr_acc a = {0};
    qerr_mxfp4(w, 1, 32, codes, &scale, &a);
    double d = (double)1.2f - 1.0;
    CHECK_EQ(a.n, 32);
    CHECK(a.sum_err2 == 31 * (d * d));
    CHECK(a.sum_ref2 == 31 * ((double)1.2f * 1.2f) + 36.0);
    CHECK(a.max_abs == d);
}

TEST(producer_hook_per_channel_is_one_block_per_row)
{
    /* block_size 0 (per channel): the hand matrix's rows as single blocks of 4, both scales
     * 0.5: row 0 decodes 1, -0.5, 0 (0.25 rounds to q-8 = 0: error 0.25), 3; row 1 0, 0, 2,
     * (NaN skipped) */
    qb_params p = {.bits = 4, .block_size = 0, .symmetric = true, .scale_type = QSCALE_F32};
    const float scales[2] = {0.5f, 0.5f};
    const uint8_t codes[4] = {0x7A, 0xE8, 0x88, 0x0C};
    qerr_acc a = {0};
    wt_measure_encoded(false, &p, kW, 2, 4, codes, scales, NULL, &a);
    CHECK_EQ(a.n, 7);
    CHECK(a.sum_err2 == 0.0625 && a.max_abs == 0.25);
    CHECK(a.sum_ref2 == 14.3125);
}

TEST(rel_rms_edges_and_merge)
{
    qerr_acc z = {0}, only_err = {.n = 1, .sum_err2 = 1.0, .max_abs = 1.0};
    CHECK(qerr_rel_rms(&z) == 0.0);
    CHECK(isinf(qerr_rel_rms(&only_err)));
    qerr_acc a = {.n = 2, .n_nonfinite = 1, .sum_err2 = 1, .sum_ref2 = 4, .max_abs = 0.5};
    qerr_acc b = {.n = 3, .sum_err2 = 2, .sum_ref2 = 5, .max_abs = 0.75};
    qerr_merge(&a, &b);
    CHECK_EQ(a.n, 5);
    CHECK_EQ(a.n_nonfinite, 1);
    CHECK(a.sum_err2 == 3 && a.sum_ref2 == 9 && a.max_abs == 0.75);
    CHECK(qerr_rel_rms(&a) == sqrt(3.0 / 9.0));
}

/* The build's sums and verify's: the same decode and the same terms, summed in a different order
 * (eight lanes here, one running sum in verify): equal to about 1e-12 relative; the largest
 * error is the same double. */
static bool same_sum(double a, double b)
{
    return fabs(a - b) <= 1e-12 * fabs(b);
}

TEST(agrees_with_verify_compare)
{
    enum { N = 24, K = 128 };
    static float w[N * K];
    static uint8_t codes[N * K / 2], fp4_codes[N * K / 2], fp4_scales[N * K / 32];
    static uint16_t scales[N * K / 32];
    rng r = {12345};
    for (int i = 0; i < N * K; i++)
        w[i] = rng_gauss(&r) * 0.02f;
    qb_params p = {.bits = 4, .block_size = 32, .symmetric = true, .scale_type = QSCALE_F16};
    CHECK(qb_quantize(w, N, K, &p, codes, scales, NULL, NULL) == 0);
    qerr_acc a = {0};
    qerr_blockwise(w, N, K, &p, codes, scales, NULL, &a);
    venc v = {.kind = VENC_INT, .elem_type = ONNX_FLOAT16, .codes = codes, .scales = scales,
              .bits = 4, .block_size = 32};
    vstats st;
    vstats_init(&st);
    CHECK(venc_compare(w, N, K, &v, &st, NULL) == 0);
    CHECK(same_sum(a.sum_err2, st.sum_err2) && same_sum(a.sum_ref2, st.sum_ref2));
    CHECK(a.max_abs == st.max_abs && a.n == st.n);
    CHECK(a.sum_err2 > 0);

    CHECK(mxfp4_encode(w, N, K, fp4_codes, fp4_scales, NULL) == 0);
    qerr_acc m = {0};
    qerr_mxfp4(w, N, K, fp4_codes, fp4_scales, &m);
    venc vm = {.kind = VENC_MXFP4, .codes = fp4_codes, .scales = fp4_scales};
    vstats_init(&st);
    CHECK(venc_compare(w, N, K, &vm, &st, NULL) == 0);
    CHECK(same_sum(m.sum_err2, st.sum_err2) && same_sum(m.sum_ref2, st.sum_ref2));
    CHECK(m.max_abs == st.max_abs && m.n == st.n);
    CHECK(m.sum_err2 > a.sum_err2); /* int4 bs32 with float16 scales beats MXFP4 here */
}

/* The AVX2 kernels and the portable lanes give the same bits (the same lanes, no FMA). */
TEST(avx2_and_portable_identical)
{
    enum { N = 8, K = 256 };
    static float w[N * K];
    static uint8_t codes[N * K];
    static float scales[N * K / 32];
    rng r = {777};
    for (int i = 0; i < N * K; i++)
        w[i] = rng_gauss(&r);
    w[100] = INFINITY; /* one block takes the element-by-element path */
    for (int bits = 4; bits <= 8; bits += 4) {
        qb_params p = {.bits = bits, .block_size = 32, .symmetric = true,
                       .scale_type = QSCALE_F32};
        for (int i = 0; i < N * K * bits / 8; i++)
            codes[i] = (uint8_t)rng_below(&r, 256);
        for (int i = 0; i < N * K / 32; i++)
            scales[i] = 0.1f + (float)i;
        qerr_acc fast = {0}, slow = {0};
        qerr_blockwise(w, N, K, &p, codes, scales, NULL, &fast);
        quant_force_scalar(true);
        qerr_blockwise(w, N, K, &p, codes, scales, NULL, &slow);
        quant_force_scalar(false);
        CHECK(fast.sum_err2 == slow.sum_err2 && fast.sum_ref2 == slow.sum_ref2);
        CHECK(fast.max_abs == slow.max_abs && fast.n == slow.n);
        CHECK_EQ(fast.n, N * K - 1);
        CHECK_EQ(fast.n_nonfinite, 1);
    }
}

TEST(registry_combines_chunks_in_order)
{
    graph *g = graph_new("g");
    qerr_format f0 = {QERR_INT, 4, 32, true, QSCALE_F16};
    CHECK(graph_add_quant_stats(g, "off", &f0, 3) == NULL); /* off until enabled */
    graph_enable_quant_stats(g, true);
    qerr_format f = {QERR_INT, 4, 32, true, QSCALE_F16};
    qerr_acc *s = graph_add_quant_stats(g, "model.layers.0.moe.experts.down_proj.qweight", &f, 3);
    qerr_acc *none = graph_add_quant_stats(g, "model.layers.0.moe.experts.gate_up_proj.qweight",
                                           &f, 2);
    CHECK(s && none);
    s[0] = (qerr_acc){.n = 4, .sum_err2 = 1, .sum_ref2 = 8, .max_abs = 0.5};
    s[2] = (qerr_acc){.n = 4, .sum_err2 = 3, .sum_ref2 = 8, .max_abs = 0.25};
    quant_stats_table t;
    CHECK(graph_quant_stats_collect(g, &t, NULL) == 0);
    CHECK_EQ(t.n, 1); /* the tensor whose chunks compared nothing is left out */
    CHECK(!strcmp(t.t[0].name, "model.layers.0.moe.experts.down_proj.qweight"));
    CHECK_EQ(t.t[0].total.n, 8);
    CHECK(qerr_rel_rms(&t.t[0].total) == 0.5 && t.t[0].total.max_abs == 0.5);
    CHECK(t.t[0].fmt.bits == 4 && t.t[0].fmt.block_size == 32 && !t.incomplete);
    quant_stats_table_free(&t);
    graph_free(g);
}

TEST(roles_from_names)
{
    CHECK(!strcmp(quant_role("model.layers.3.moe.experts.gate_up_proj.qweight"), "experts fc1"));
    CHECK(!strcmp(quant_role("model.layers.3.moe.experts.down_proj.qweight"), "experts fc2"));
    CHECK(!strcmp(quant_role("model.layers.3.attn.qkv_proj.MatMul.weight_Q4"), "attention"));
    CHECK(!strcmp(quant_role("model.layers.0.linear_attn.out_proj.MatMul.weight_Q4"),
                  "linear attention"));
    CHECK(!strcmp(quant_role("model.layers.2.shared_expert.down_proj.MatMul.weight_Q4"), "MLP"));
    CHECK(!strcmp(quant_role("lm_head.MatMul.weight_Q4"), "lm_head"));
    CHECK(!strcmp(quant_role("model.embed_tokens.weight"), "other"));
}
