/* The expert formats of issue 18 (docs/FORMATS.md §4.12, §8): per-channel scales against a plain
 * reference of the builder's math and hand-computed bytes; zero points packed row by row (an odd
 * block count leaves a pad nibble in every row, not only the last); the expert encoder's codes,
 * scales and zero points equal the kernels' for uint, per-channel and scale-search formats; the
 * chunk sizes of the new encodings. */
#include "test.h"
#include "test_quant_rng.h"

#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "common/half.h"
#include "onnx/graph.h"
#include "quant/quant.h"
#include "weights/experts.h"

/* The builder's per-channel code for one row, written out plainly: codes unpacked. */
static float plain_per_channel(const float *w, int K, int bits, int *codes)
{
    float half = (float)(1 << (bits - 1)), amax = 0.0f;
    for (int k = 0; k < K; k++)
        amax = fabsf(w[k]) > amax ? fabsf(w[k]) : amax;
    float s = amax / half;
    if (s < FLT_EPSILON)
        s = FLT_EPSILON;
    for (int k = 0; k < K; k++) {
        float q = nearbyintf(w[k] / s);
        if (q < -half) q = -half;
        if (q > half - 1) q = half - 1;
        codes[k] = (int)q + (int)half;
    }
    return s;
}

static int code_at(const uint8_t *row, int k, int bits)
{
    return bits == 8 ? row[k] : k % 2 ? row[k / 2] >> 4 : row[k / 2] & 0xf;
}

TEST(per_channel_matches_the_builders_math_on_random_rows)
{
    enum { N = 6, K = 40 };
    static float w[N * K];
    rng r = {7};
    for (int i = 0; i < N * K; i++)
        w[i] = (float)((rng_unit(&r) - 0.5) * (i % 7 == 0 ? 3.0 : 0.2));
    for (int bits = 4; bits <= 8; bits += 4) {
        uint8_t codes[N * K];
        float scales[N];
        CHECK_EQ(qc_quantize(w, N, K, bits, QSCALE_F32, codes, scales, NULL), 0);
        for (int n = 0; n < N; n++) {
            int want[K];
            float s = plain_per_channel(w + n * K, K, bits, want);
            CHECK(scales[n] == s && s > 0.0f); /* positive, float32 exact */
            for (int k = 0; k < K; k++)
                CHECK_EQ(code_at(codes + n * K * bits / 8, k, bits), want[k]);
        }
    }
}

/* Hand-computed: scale 1/8; -1 → 0 exactly, +1 clips to 15, 0.5 → 12, ties to even (0.0625 is
 * half a step: code 8; 0.1875 is 1.5 steps: code 10), low nibble first. */
TEST(per_channel_bytes_by_hand_and_corner_cases)
{
    const float w[8] = {-1.0f, 0.5f, 1.0f, 0.25f, 0.0625f, 0.1875f, -0.0625f, 0.0f};
    uint8_t codes[4];
    float s;
    CHECK_EQ(qc_quantize(w, 1, 8, 4, QSCALE_F32, codes, &s, NULL), 0);
    CHECK(s == 0.125f);
    const uint8_t want[4] = {0xC0, 0xAF, 0xA8, 0x88};
    CHECK_BYTES_EQ(codes, want, 4);
    /* an all-zero row: scale FLT_EPSILON (the builder's clamp), codes 8 */
    const float z[4] = {0, 0, 0, 0};
    CHECK_EQ(qc_quantize(z, 1, 4, 4, QSCALE_F32, codes, &s, NULL), 0);
    CHECK(s == FLT_EPSILON && codes[0] == 0x88 && codes[1] == 0x88);
    /* float16 scales are rounded after the codes were computed with the float32 scale */
    const float v[2] = {0.3f, -0.1f};
    uint16_t h;
    CHECK_EQ(qc_quantize(v, 1, 2, 8, QSCALE_F16, codes, &h, NULL), 0);
    CHECK(h == f32_to_f16(0.3f / 128.0f));
    CHECK_EQ(codes[0], 255); /* 0.3 / (0.3/128) = 128 clips to 127 → 255 */
    CHECK_EQ(codes[1], 128 + (int)nearbyintf(-0.1f / (0.3f / 128.0f)));
    m2o_err err = {{0}};
    const float bad[2] = {1.0f, NAN};
    CHECK_EQ(qc_quantize(bad, 1, 2, 4, QSCALE_F32, codes, &s, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "NaN");
    CHECK_EQ(qc_quantize(v, 1, 1, 4, QSCALE_F32, codes, &s, &err), -1); /* odd K, 4 bits */
}

/* Zero points of 3 blocks a row (4-bit): 2 bytes a row, the pad nibble (8) in each row's second
 * byte, what QMoE reads as [E, N, ceil(blocks/2)]; a flat packing would start row 1 mid-byte. */
TEST(zero_points_pack_per_row_with_a_pad_nibble_in_every_row)
{
    enum { N = 3, K = 96, BS = 32 };
    static float w[N * K];
    rng r = {11};
    for (int i = 0; i < N * K; i++)
        w[i] = (float)(rng_unit(&r) * 0.7 - 0.2 + 0.1 * (i / K)); /* zero points differ by row */
    expert_qfmt f = {.bits = 4, .block_size = BS, .asymmetric = true};
    size_t zb = expert_chunk_bytes(N, K, ENC_INT_ZP, 4, BS, ONNX_FLOAT);
    CHECK_EQ(zb, (size_t)(N * 2));
    uint8_t zps[N * 2], codes[N * K / 2], ref_codes[N * K / 2], ref_zps[N * 2];
    float scales[N * 3], ref_scales[N * 3];
    CHECK_EQ(expert_encode_fmt(w, N, K, ENC_INT_ZP, &f, ONNX_FLOAT, zps, NULL), 0);
    CHECK_EQ(expert_encode_fmt(w, N, K, ENC_INT_RAW, &f, ONNX_FLOAT, codes, NULL), 0);
    CHECK_EQ(expert_encode_fmt(w, N, K, ENC_INT_SCALES, &f, ONNX_FLOAT, scales, NULL), 0);
    qb_params p = {.bits = 4, .block_size = BS, .symmetric = false, .scale_type = QSCALE_F32};
    for (int n = 0; n < N; n++) { /* row by row, each its own matrix */
        CHECK_EQ(qb_quantize_ref(w + n * K, 1, K, &p, ref_codes + n * K / 2, ref_scales + n * 3,
                                 ref_zps + n * 2, NULL), 0);
        CHECK_EQ(zps[n * 2 + 1] >> 4, 8);
    }
    CHECK_BYTES_EQ(zps, ref_zps, sizeof zps);
    CHECK_BYTES_EQ(codes, ref_codes, sizeof codes);
    CHECK_BYTES_EQ(scales, ref_scales, sizeof scales);
    /* 8-bit: one byte a block, no padding */
    CHECK_EQ(expert_chunk_bytes(N, K, ENC_INT_ZP, 8, BS, ONNX_FLOAT), (size_t)(N * 3));
}

TEST(encoder_per_channel_and_search_equal_their_kernels)
{
    enum { N = 8, K = 64 };
    static float w[N * K];
    rng r = {5};
    for (int i = 0; i < N * K; i++)
        w[i] = (float)(rng_unit(&r) - 0.5);
    expert_qfmt pc = {.bits = 4, .block_size = 0};
    CHECK_EQ(expert_chunk_bytes(N, K, ENC_INT_SCALES, 4, 0, ONNX_FLOAT16), (size_t)(N * 2));
    uint8_t codes[N * K], ref_codes[N * K];
    uint16_t sc[N * K / 16], ref_sc[N * K / 16];
    CHECK_EQ(expert_encode_fmt(w, N, K, ENC_INT_RAW, &pc, ONNX_FLOAT16, codes, NULL), 0);
    CHECK_EQ(expert_encode_fmt(w, N, K, ENC_INT_SCALES, &pc, ONNX_FLOAT16, sc, NULL), 0);
    CHECK_EQ(qc_quantize(w, N, K, 4, QSCALE_F16, ref_codes, ref_sc, NULL), 0);
    CHECK_BYTES_EQ(codes, ref_codes, N * K / 2);
    CHECK_BYTES_EQ(sc, ref_sc, N * 2);
    expert_qfmt ss = {.bits = 8, .block_size = 16, .search = true};
    qb_params p = {.bits = 8, .block_size = 16, .symmetric = true, .scale_type = QSCALE_F16};
    CHECK_EQ(expert_encode_fmt(w, N, K, ENC_INT_RAW, &ss, ONNX_FLOAT16, codes, NULL), 0);
    CHECK_EQ(expert_encode_fmt(w, N, K, ENC_INT_SCALES, &ss, ONNX_FLOAT16, sc, NULL), 0);
    CHECK_EQ(qb_quantize_search(w, N, K, &p, ref_codes, ref_sc, NULL, NULL), 0);
    CHECK_BYTES_EQ(codes, ref_codes, N * K);
    CHECK_BYTES_EQ(sc, ref_sc, N * K / 16 * 2);
    /* and the search differs from plain rounding somewhere (it is on) */
    uint8_t rtn[N * K];
    uint16_t rtn_sc[N * K / 16];
    CHECK_EQ(qb_quantize(w, N, K, &p, rtn, rtn_sc, NULL, NULL), 0);
    CHECK(memcmp(rtn, codes, N * K) != 0);
}
