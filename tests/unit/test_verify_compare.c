/* verify's numeric core on hand-built matrices: a correct encoding passes with the error the
 * format predicts, and each known exporter bug fails and is recognised by its rearrangement. */
#include "test.h"

#include "common/half.h"
#include "onnx/graph.h"
#include "quant/quant.h"
#include "verify/compare.h"

/* Deterministic values in [-1, 1) (xorshift), some blocks with a positive anchor, some negative. */
static void fill(float *w, size_t n, uint32_t seed)
{
    uint32_t s = seed ? seed : 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        w[i] = (float)((double)s / 4294967296.0 * 2.0 - 1.0);
    }
}

enum { N = 64, K = 128, BS = 32, NB = K / BS };

typedef struct q4 {
    float w[N * K];
    uint8_t codes[N * K / 2];
    float scales[N * NB];
} q4;

static void make_q4(q4 *q, uint32_t seed)
{
    fill(q->w, N * K, seed);
    qb_params p = {.bits = 4, .block_size = BS, .symmetric = true, .scale_type = QSCALE_F32};
    m2o_err err;
    if (qb_quantize_ref(q->w, N, K, &p, q->codes, q->scales, NULL, &err))
        fprintf(stderr, "quantize: %s\n", err.msg);
}

static venc int4_enc(const uint8_t *codes, const float *scales)
{
    return (venc){.kind = VENC_INT, .elem_type = ONNX_FLOAT, .codes = codes, .scales = scales,
                  .bits = 4, .block_size = BS};
}

TEST(int4_good_encoding_passes_with_uniform_rounding_error)
{
    static q4 q;
    make_q4(&q, 7);
    venc e = int4_enc(q.codes, q.scales);
    vstats st;
    vstats_init(&st);
    m2o_err err;
    CHECK_EQ(venc_compare(q.w, N, K, &e, &st, &err), 0);
    CHECK_EQ(st.n, N * K);
    CHECK_EQ(st.n_over, 0);
    CHECK(st.max_ratio <= 1.0);
    /* uniform rounding in [-s/2, s/2] over |x| <= 8|s|: rel RMS of uniform data ~ 1/(8*sqrt(3))
     * relative to amax... measured on this seed: between 0.05 and 0.12, and below the bound */
    double rel = vstats_rel_rms(&st);
    CHECK_MSG(rel > 0.05 && rel < 0.12, "rel RMS %g", rel);
    CHECK(rel < vstats_rel_rms_bound(&st));
    /* every element within half a step except clamped top codes */
    double worst_interior = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++) {
            double y, b;
            venc_element(&e, K, n, k, q.w[n * K + k], &y, &b);
            double s = fabs(q.scales[n * NB + k / BS]);
            int c = k % 2 ? q.codes[(n * K + k) / 2] >> 4 : q.codes[(n * K + k) / 2] & 15;
            if (c != 15 && c != 0)
                worst_interior = fmax(worst_interior, fabs(y - q.w[n * K + k]) / s);
        }
    CHECK(worst_interior <= 0.5 + 1e-6);
}

TEST(abs_scales_fail_and_restored_signs_pass)
{
    static q4 q;
    make_q4(&q, 11);
    static float absd[N * NB], restored[N * NB];
    int positive_anchor_blocks = 0;
    for (int i = 0; i < N * NB; i++) {
        absd[i] = fabsf(q.scales[i]);
        positive_anchor_blocks += q.scales[i] < 0;
    }
    CHECK(positive_anchor_blocks > 10); /* the data has both signs of anchors */
    venc bad = int4_enc(q.codes, absd);
    vstats st;
    vstats_init(&st);
    CHECK_EQ(venc_compare(q.w, N, K, &bad, &st, NULL), 0);
    CHECK(st.n_over > N * K / 8);
    CHECK(vstats_rel_rms(&st) > 1.0); /* flipped blocks decode to about -x */
    static int8_t signs[N * NB];
    vx_anchor_scale_signs(q.w, N, K, BS, signs);
    for (int i = 0; i < N * NB; i++) {
        CHECK_EQ(signs[i], q.scales[i] < 0 ? -1 : 1); /* anchors predict ORT's scale signs */
        restored[i] = signs[i] < 0 ? -absd[i] : absd[i];
    }
    venc fixed = int4_enc(q.codes, restored);
    CHECK(venc_passes(q.w, N, K, &fixed));
}

TEST(swapped_nibbles_fail_and_swapping_back_passes)
{
    static q4 q;
    make_q4(&q, 13);
    static uint8_t swapped[N * K / 2], back[N * K / 2];
    vx_swap_nibbles(q.codes, sizeof swapped, swapped);
    venc bad = int4_enc(swapped, q.scales);
    CHECK(!venc_passes(q.w, N, K, &bad));
    vx_swap_nibbles(swapped, sizeof swapped, back);
    CHECK_BYTES_EQ(back, q.codes, sizeof back);
}

TEST(transposed_and_halves_rearrangements_are_what_the_bugs_write)
{
    /* an exporter that forgets the transpose of an input-major [K][N] source writes the
     * source bytes as they are: exactly vx_untransposed of the true [N][K] */
    static float src_kn[K * N], truth[N * K], alt[N * K];
    fill(src_kn, K * N, 3);
    transpose_f32(src_kn, K, N, truth);
    vx_untransposed(truth, N, K, alt);
    CHECK_BYTES_EQ(alt, src_kn, sizeof alt);
    /* quantizing the untransposed bytes fails against the truth, passes against alt */
    static uint8_t codes[N * K / 2];
    static float scales[N * NB];
    qb_params p = {.bits = 4, .block_size = BS, .symmetric = true, .scale_type = QSCALE_F32};
    CHECK_EQ(qb_quantize_ref(src_kn, N, K, &p, codes, scales, NULL, NULL), 0);
    venc e = int4_enc(codes, scales);
    CHECK(!venc_passes(truth, N, K, &e));
    CHECK(venc_passes(alt, N, K, &e));

    /* gate/up: interleaved rows 0,1,2,3 = g0,u0,g1,u1 -> halves g0,g1,...,u0,u1,... */
    float il[4 * 2] = {1, 1, 2, 2, 3, 3, 4, 4}, halves[8];
    vx_halves_from_interleaved(il, 4, 2, halves);
    float want[8] = {1, 1, 3, 3, 2, 2, 4, 4};
    CHECK_BYTES_EQ(halves, want, sizeof want);
}

TEST(float_bounds_accept_rounding_and_reject_one_ulp_more)
{
    float x[4] = {1.0f, 1.0f + 1.0f / 4096, -3.14159f, 1e-6f};
    uint16_t h[4];
    for (int i = 0; i < 4; i++)
        h[i] = f32_to_f16(x[i]);
    venc e = {.kind = VENC_FLOAT, .elem_type = ONNX_FLOAT16, .w = h};
    CHECK(venc_passes(x, 1, 4, &e));
    h[2] = (uint16_t)(h[2] + 1); /* one float16 ulp off */
    CHECK(!venc_passes(x, 1, 4, &e));
    /* a tie (1 + 2^-11 lies halfway between two float16 values): only the even one passes,
     * though both are within half an ulp */
    float tie[1] = {1.0f + 1.0f / 2048};
    uint16_t even = f32_to_f16(tie[0]), odd = (uint16_t)(even + 1);
    venc t = {.kind = VENC_FLOAT, .elem_type = ONNX_FLOAT16, .w = &even};
    CHECK_EQ(even, 0x3c00);
    CHECK(venc_passes(tie, 1, 1, &t));
    t.w = &odd;
    CHECK(!venc_passes(tie, 1, 1, &t));
    /* float32 storage of float32-representable values must be exact */
    float y[4];
    memcpy(y, x, sizeof y);
    venc f = {.kind = VENC_FLOAT, .elem_type = ONNX_FLOAT, .w = y};
    CHECK(venc_passes(x, 1, 4, &f));
    y[1] = nextafterf(y[1], 2.0f);
    CHECK(!venc_passes(x, 1, 4, &f));
}

TEST(mxfp4_bounds_follow_the_e2m1_grid)
{
    enum { MK = 64 };
    static float w[2 * MK], dec[2 * MK];
    static uint8_t codes[2 * MK / 2], scales[2 * MK / 32];
    fill(w, 2 * MK, 5);
    w[3] = 5.5f; /* block 0 amax -> e = floor(log2 5.5) - 2 = 0: 5.5 rounds to 6 (error 0.5) */
    CHECK_EQ(mxfp4_encode_ref(w, 2, MK, codes, scales, NULL), 0);
    venc e = {.kind = VENC_MXFP4, .codes = codes, .scales = scales};
    vstats st;
    vstats_init(&st);
    CHECK_EQ(venc_compare(w, 2, MK, &e, &st, NULL), 0);
    CHECK_EQ(st.n_over, 0);
    CHECK_EQ(mxfp4_decode(codes, scales, 2, MK, dec, NULL), 0);
    double y, b;
    venc_element(&e, MK, 0, 3, w[3], &y, &b);
    CHECK_NEAR(y, 6.0, 0);
    CHECK_NEAR(b, 2.5, 1e-5); /* saturation code: up to 2.5 steps of the block scale */
    CHECK_NEAR(y, dec[3], 0);
    /* a scale byte one too small halves every value of the block: far outside the grid */
    scales[0]--;
    CHECK(!venc_passes(w, 2, MK, &e));
}

TEST(int8_and_asymmetric_zero_points_decode)
{
    static float w[N * K];
    fill(w, N * K, 21);
    for (int i = 0; i < N * K; i++)
        w[i] = w[i] * 0.5f + 0.25f; /* mostly positive: zero points away from the middle */
    static uint8_t codes[N * K], zp[N * NB];
    static uint16_t scales[N * NB];
    qb_params p = {.bits = 8, .block_size = BS, .symmetric = false, .scale_type = QSCALE_F16};
    CHECK_EQ(qb_quantize_ref(w, N, K, &p, codes, scales, zp, NULL), 0);
    venc e = {.kind = VENC_INT, .elem_type = ONNX_FLOAT16, .codes = codes, .scales = scales,
              .zero_points = zp, .bits = 8, .block_size = BS};
    vstats st;
    vstats_init(&st);
    CHECK_EQ(venc_compare(w, N, K, &e, &st, NULL), 0);
    CHECK_EQ(st.n_over, 0);
    CHECK_MSG(vstats_rel_rms(&st) < 0.01, "int8 rel RMS %g", vstats_rel_rms(&st));
    e.zero_points = NULL; /* read as symmetric (zero point 128): wrong */
    CHECK(!venc_passes(w, N, K, &e));
}

TEST(cutlass_raw_mixup_is_detected_by_layout)
{
    static q4 q;
    make_q4(&q, 17);
    static uint8_t packed[N * K / 2], unpacked[N * K / 2];
    CHECK_EQ(cutlass_sm80_pack(q.codes, N, K, 4, packed, NULL), 0);
    venc as_raw = int4_enc(packed, q.scales); /* prepacked bytes read raw */
    CHECK(!venc_passes(q.w, N, K, &as_raw));
    CHECK_EQ(cutlass_sm80_unpack(packed, N, K, 4, unpacked, NULL), 0);
    venc ok = int4_enc(unpacked, q.scales);
    CHECK(venc_passes(q.w, N, K, &ok));
}

/* The bound comes from the checkpoint block, never from the stored scale: an Inf, NaN or
 * inflated scale fails however its codes decode. */
TEST(scale_bounds_come_from_the_checkpoint_block)
{
    static q4 q;
    make_q4(&q, 29);
    venc e = int4_enc(q.codes, q.scales);
    CHECK(venc_passes(q.w, N, K, &e));
    float keep = q.scales[5];
    q.scales[5] = INFINITY;
    vstats st;
    vstats_init(&st);
    CHECK_EQ(venc_compare(q.w, N, K, &e, &st, NULL), 0);
    CHECK_EQ(st.n_over, BS); /* every element of block 5 (row 1, block 1), nothing else */
    CHECK_EQ(st.first_row, 1);
    CHECK_EQ(st.first_col, BS);
    CHECK(isinf(st.first_scale) && st.first_scale_ceiling > 0);
    q.scales[5] = NAN;
    CHECK(!venc_passes(q.w, N, K, &e));
    /* a finite scale 1.01x the block's max|w|/8 (beyond the float32 rounding allowed) */
    float amax = 0;
    for (int k = BS; k < 2 * BS; k++)
        amax = fabsf(q.w[1 * K + k]) > amax ? fabsf(q.w[1 * K + k]) : amax;
    q.scales[5] = copysignf(amax / 8 * 1.01f, keep);
    vstats_init(&st);
    CHECK_EQ(venc_compare(q.w, N, K, &e, &st, NULL), 0);
    CHECK_EQ(st.n_over, BS);
    CHECK_NEAR(st.first_scale_ceiling, amax / 8.0, amax / 8.0 * 1e-6);
    q.scales[5] = keep;
    CHECK(venc_passes(q.w, N, K, &e));
}

TEST(mxfp4_nan_or_oversized_scale_fails_and_byte_0_passes)
{
    enum { MK = 64 };
    static float w[MK];
    static uint8_t codes[MK / 2], scales[MK / 32];
    fill(w, MK, 31);
    CHECK_EQ(mxfp4_encode_ref(w, 1, MK, codes, scales, NULL), 0);
    venc e = {.kind = VENC_MXFP4, .codes = codes, .scales = scales};
    CHECK(venc_passes(w, 1, MK, &e));
    uint8_t keep = scales[1];
    scales[1] = 255; /* E8M0 NaN */
    vstats st;
    vstats_init(&st);
    CHECK_EQ(venc_compare(w, 1, MK, &e, &st, NULL), 0);
    CHECK(st.n_over > 0);
    CHECK_EQ(st.first_col, 32);
    scales[1] = (uint8_t)(keep + 40); /* 2^40 times too large: capped at the block's ceiling */
    CHECK(!venc_passes(w, 1, MK, &e));
    scales[1] = keep;
    /* subnormal checkpoint values: the encoder's scale byte 0 (2^-127) is within bounds */
    for (int i = 0; i < MK; i++)
        w[i] = ldexpf(w[i], -140);
    CHECK_EQ(mxfp4_encode_ref(w, 1, MK, codes, scales, NULL), 0);
    CHECK_EQ(scales[0], 0);
    CHECK(venc_passes(w, 1, MK, &e));
}

TEST(fp16_subnormal_scales_and_values_pass)
{
    static q4 q;
    fill(q.w, N * K, 37);
    for (int i = 0; i < N * K; i++)
        q.w[i] = ldexpf(q.w[i], -18); /* scales ~2^-21: float16 subnormals */
    static uint16_t s16[N * NB];
    qb_params p = {.bits = 4, .block_size = BS, .symmetric = true, .scale_type = QSCALE_F16};
    CHECK_EQ(qb_quantize_ref(q.w, N, K, &p, q.codes, s16, NULL, NULL), 0);
    venc e = {.kind = VENC_INT, .elem_type = ONNX_FLOAT16, .codes = q.codes, .scales = s16,
              .bits = 4, .block_size = BS};
    CHECK(venc_passes(q.w, N, K, &e));
    /* float16 copies of subnormal float32 values: half an ulp of the smallest subnormal */
    float x[4] = {ldexpf(1.0f, -20), ldexpf(-3.0f, -24), ldexpf(1.0f, -26), 0.0f};
    uint16_t h[4];
    for (int i = 0; i < 4; i++)
        h[i] = f32_to_f16(x[i]);
    venc f = {.kind = VENC_FLOAT, .elem_type = ONNX_FLOAT16, .w = h};
    CHECK(venc_passes(x, 1, 4, &f));
    /* float32 scales of values near 2^-130 (int4 CPU): the scales are subnormal and their
     * reciprocal overflows, so the quantizer's codes saturate; no false FAIL */
    for (int i = 0; i < N * K; i++)
        q.w[i] = ldexpf(q.w[i], -112);
    for (int bits = 4; bits <= 8; bits += 4) {
        static uint8_t c8[N * K];
        qb_params p32 = {.bits = bits, .block_size = BS, .symmetric = true,
                         .scale_type = QSCALE_F32};
        CHECK_EQ(qb_quantize_ref(q.w, N, K, &p32, c8, q.scales, NULL, NULL), 0);
        venc e32 = {.kind = VENC_INT, .elem_type = ONNX_FLOAT, .codes = c8, .scales = q.scales,
                    .bits = bits, .block_size = BS};
        CHECK_MSG(venc_passes(q.w, N, K, &e32), "%d-bit float32 subnormal scales", bits);
        q.scales[0] = 1.0f; /* still bounded by the block: a normal scale there fails */
        CHECK(!venc_passes(q.w, N, K, &e32));
    }
}

/* Equal, or both NaN (a NaN scale's bound). */
static bool same(double a, double b)
{
    return a == b || (a != a && b != b);
}

static bool same_stats(const vstats *a, const vstats *b)
{
    return a->n == b->n && a->n_nonfinite == b->n_nonfinite && same(a->sum_err2, b->sum_err2) &&
           same(a->sum_ref2, b->sum_ref2) && same(a->sum_bound2, b->sum_bound2) &&
           same(a->max_abs, b->max_abs) && same(a->max_ratio, b->max_ratio) &&
           a->n_over == b->n_over && a->first_row == b->first_row &&
           a->first_col == b->first_col && same(a->first_bound, b->first_bound) &&
           same(a->first_scale_ceiling, b->first_scale_ceiling);
}

static void check_fast_equals_ref(const float *x, int64_t n, int64_t k, const venc *e, int *bad)
{
    vstats a, b;
    vstats_init(&a);
    vstats_init(&b);
    if (venc_compare(x, n, k, e, &a, NULL) || venc_compare_ref(x, n, k, e, &b, NULL) ||
        !same_stats(&a, &b))
        (*bad)++;
}

/* venc_compare's block-at-a-time loops give exactly the element-wise reference's statistics:
 * good encodings, corrupted ones, subnormals, NaN/Inf in the checkpoint. */
TEST(fast_compare_matches_the_element_wise_reference)
{
    static q4 q;
    make_q4(&q, 41);
    q.w[77] = NAN;
    int bad = 0;
    venc e = int4_enc(q.codes, q.scales);
    check_fast_equals_ref(q.w, N, K, &e, &bad);
    q.scales[3] = INFINITY;
    q.scales[9] *= 3;
    q.codes[100] ^= 0x5a;
    check_fast_equals_ref(q.w, N, K, &e, &bad);
    CHECK_EQ(bad, 0);
    static uint8_t c8[N * K], zp[N * NB];
    static uint16_t s16[N * NB], h[N * K];
    static float w[N * K];
    fill(w, N * K, 43);
    qb_params p = {.bits = 8, .block_size = BS, .symmetric = false, .scale_type = QSCALE_BF16};
    CHECK_EQ(qb_quantize_ref(w, N, K, &p, c8, s16, zp, NULL), 0);
    venc e8 = {.kind = VENC_INT, .elem_type = ONNX_BFLOAT16, .codes = c8, .scales = s16,
               .zero_points = zp, .bits = 8, .block_size = BS};
    check_fast_equals_ref(w, N, K, &e8, &bad);
    for (int i = 0; i < N * K; i++)
        w[i] = ldexpf(w[i], i % 3 ? -20 : 3); /* float16 subnormals and normals */
    for (int i = 0; i < N * K; i++)
        h[i] = f32_to_f16(w[i]);
    h[5] ^= 1;
    venc f = {.kind = VENC_FLOAT, .elem_type = ONNX_FLOAT16, .w = h};
    check_fast_equals_ref(w, N, K, &f, &bad);
    static uint8_t codes[N * K / 2], scales[N * K / 32];
    fill(w, N * K, 47);
    CHECK_EQ(mxfp4_encode_ref(w, N, K, codes, scales, NULL), 0);
    venc m = {.kind = VENC_MXFP4, .codes = codes, .scales = scales};
    check_fast_equals_ref(w, N, K, &m, &bad);
    scales[2] = 255;
    scales[7] += 9;
    check_fast_equals_ref(w, N, K, &m, &bad);
    CHECK_EQ(bad, 0);
}

/* MatMulNBits from any method (venc.any_method, docs/FORMATS.md §16): every method moe2onnx
 * writes passes, clipping toward zero at an extreme code is allowed whatever its size, and the
 * bugs verify exists for still fail: abs()'d scales, a missing zero point, a wrong nibble order,
 * an interior code off by a step, a value pushed away from zero at an extreme code. */
TEST(any_method_bound_accepts_every_method_and_still_catches_the_bugs)
{
    static float w[N * K];
    static uint8_t codes[N * K], zp[N * NB], moved[N * K];
    static float scales[N * NB];
    int fails_tight = 0;
    for (int m = 0; m < 4; m++) {
        for (int bits = 4; bits <= 8; bits += 4) {
            fill(w, N * K, 51 + (uint32_t)m);
            for (int i = 0; i < N * K; i += 7)
                w[i] *= 6.0f; /* heavy tails: search and k_quant clip */
            for (int i = 0; i < BS; i++)
                w[i] = 0.5f + 0.01f * (float)i; /* one block of one sign: INC/k_quant clip it */
            bool sym = m == 1; /* search symmetric; the others asymmetric */
            qb_params p = {.bits = bits, .block_size = BS, .symmetric = sym, .scale_type = QSCALE_F32};
            m2o_err err = {{0}};
            int rc = m == 0 ? rtn_inc_quantize(w, N, K, &p, QSCALE_F32, codes, scales, zp, &err)
                     : m == 1 ? qb_quantize_search(w, N, K, &p, codes, scales, NULL, &err)
                     : m == 2 ? kq_quantize(w, N, K, &p, codes, scales, zp, &err)
                              : qb_quantize_search(w, N, K, &p, codes, scales, zp, &err);
            CHECK_MSG(rc == 0, "%s", err.msg);
            venc e = {.kind = VENC_INT, .elem_type = ONNX_FLOAT, .codes = codes, .scales = scales,
                      .zero_points = sym ? NULL : zp, .bits = bits, .block_size = BS, .any_method = true};
            CHECK_MSG(venc_passes(w, N, K, &e), "method %d bits %d", m, bits);
            int bad = 0;
            check_fast_equals_ref(w, N, K, &e, &bad);
            CHECK_EQ(bad, 0);
            venc tight = e;
            tight.any_method = false;
            fails_tight += !venc_passes(w, N, K, &tight);
            venc nozp = e;
            nozp.zero_points = sym ? zp : NULL;
            if (!sym)
                CHECK(!venc_passes(w, N, K, &nozp));
            if (bits == 4) {
                vx_swap_nibbles(codes, (size_t)(N * K / 2), moved);
                venc sw = e;
                sw.codes = moved;
                CHECK(!venc_passes(w, N, K, &sw));
            }
        }
    }
    CHECK(fails_tight > 0); /* the MLAS-only rule would refuse some of these exports */
    /* MLAS symmetric int4 (the default body): abs()'d scales fail under the loose rule too */
    static q4 q;
    make_q4(&q, 59);
    static float absd[N * NB];
    for (int i = 0; i < N * NB; i++)
        absd[i] = fabsf(q.scales[i]);
    venc good = int4_enc(q.codes, q.scales), bad = int4_enc(q.codes, absd);
    good.any_method = bad.any_method = true;
    CHECK(venc_passes(q.w, N, K, &good));
    CHECK(!venc_passes(q.w, N, K, &bad));
    /* an interior code one step off fails; an extreme code decoding away from zero fails */
    memcpy(moved, q.codes, sizeof q.codes);
    int interior = -1;
    for (int k = 0; k < 2 * K && interior < 0; k++) {
        int c = k % 2 ? moved[k / 2] >> 4 : moved[k / 2] & 15;
        if (c > 2 && c < 13 && interior < 0)
            interior = k;
    }
    CHECK(interior >= 0);
    moved[interior / 2] = (uint8_t)(moved[interior / 2] + (interior % 2 ? 0x10 : 0x01));
    venc off = int4_enc(moved, q.scales);
    off.any_method = true;
    CHECK(!venc_passes(q.w, N, K, &off));
    /* a value clipped toward zero at an extreme code passes; pushed outward it fails */
    static float w2[N * K];
    memcpy(w2, q.w, sizeof w2);
    int64_t at = -1;
    for (int64_t k = 0; k < N * K && at < 0; k++) {
        int c = k % 2 ? q.codes[k / 2] >> 4 : q.codes[k / 2] & 15;
        if ((c == 0 || c == 15) && q.w[k] != 0.0f)
            at = k;
    }
    CHECK(at >= 0);
    w2[at] = q.w[at] * 3.0f; /* the decoded value is now far inside it: a clip toward zero (the
                              * block's larger maximum only raises its scale ceiling) */
    CHECK(venc_passes(w2, N, K, &good));
    w2[at] = -q.w[at]; /* the decoded value is on the other side of zero: never a clip */
    CHECK(!venc_passes(w2, N, K, &good));
}

/* Blocks written by scale_search (FORMATS §16): they exceed the round-to-nearest scale ceiling and
 * clip some elements by more than a step, and pass by the searched-block rules, through both the
 * reference and the fast path; a flipped scale sign or a zero point off by one in such a block
 * still fails (interior codes move by a step or more). Asymmetric 4-bit with zero points too. */
TEST(searched_blocks_pass_and_their_sign_or_zero_point_bugs_fail)
{
    for (int asym = 0; asym <= 1; asym++) {
        static float w[N * K], scales[N * NB];
        static uint8_t codes[N * K / 2], zps[N * NB / 2], bad_zps[N * NB / 2];
        fill(w, N * K, 23 + (uint32_t)asym);
        qb_params p = {.bits = 4, .block_size = BS, .symmetric = !asym, .scale_type = QSCALE_F32};
        CHECK_EQ(qb_quantize_search(w, N, K, &p, codes, scales, asym ? zps : NULL, NULL), 0);
        venc e = {.kind = VENC_INT, .elem_type = ONNX_FLOAT, .codes = codes, .scales = scales,
                  .zero_points = asym ? zps : NULL, .bits = 4, .block_size = BS};
        vstats st, ref;
        vstats_init(&st);
        vstats_init(&ref);
        CHECK_EQ(venc_compare(w, N, K, &e, &st, NULL), 0);
        CHECK_EQ(venc_compare_ref(w, N, K, &e, &ref, NULL), 0);
        CHECK_MSG(st.n_over == 0 && ref.n_over == 0, "asym %d: %lld / %lld over", asym,
                  (long long)st.n_over, (long long)ref.n_over);
        CHECK(venc_passes(w, N, K, &e));
        /* the strict bound alone would not hold: some block's scale is above its ceiling */
        qb_params q = p;
        static float rtn_scales[N * NB];
        static uint8_t rtn_codes[N * K / 2], rtn_zps[N * NB / 2];
        CHECK_EQ(qb_quantize_ref(w, N, K, &q, rtn_codes, rtn_scales, asym ? rtn_zps : NULL, NULL), 0);
        int above = 0;
        for (int i = 0; i < N * NB; i++)
            above += fabsf(scales[i]) > fabsf(rtn_scales[i]) * 1.0001f;
        CHECK(above > 0);
        if (!asym) {
            float keep = scales[9];
            scales[9] = -keep;
            CHECK(!venc_passes(w, N, K, &e));
            scales[9] = keep;
        } else {
            memcpy(bad_zps, zps, sizeof zps);
            bad_zps[4] = (uint8_t)((bad_zps[4] & 0xf0) | (((bad_zps[4] & 0xf) + 1) & 0xf));
            e.zero_points = bad_zps;
            CHECK(!venc_passes(w, N, K, &e));
        }
    }
}
