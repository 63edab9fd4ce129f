/* MXFP4: decoding known codes and scales, exact round trips of representable values, the OCP
 * scale rule with its saturation, round-to-nearest-even ties, reference == optimized encoders
 * and decoders, and the quantization error on Gaussian data against the reference builder's
 * rule. */
#include "test.h"
#include "test_quant_rng.h"

#include "quant/quant.h"

static const float kE2M1[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};

static int code_at(const uint8_t *codes, int64_t i)
{
    return (codes[i / 2] >> (4 * (i % 2))) & 0xf;
}

TEST(decode_of_known_codes_and_scales)
{
    /* Row of 32: codes 0..15 then 15..0; one scale per row. */
    uint8_t codes[4 * 16], scales[4] = {127, 130, 0, 255};
    for (int r = 0; r < 4; r++)
        for (int j = 0; j < 16; j++) {
            int a = (2 * j) < 16 ? 2 * j : 31 - 2 * j, b = (2 * j + 1) < 16 ? 2 * j + 1 : 30 - 2 * j;
            codes[r * 16 + j] = (uint8_t)(a | b << 4);
        }
    float ref[128], opt[128];
    CHECK(mxfp4_decode_ref(codes, scales, 4, 32, ref, NULL) == 0);
    CHECK(mxfp4_decode(codes, scales, 4, 32, opt, NULL) == 0);
    CHECK_SAME_BYTES(ref, opt, sizeof ref);
    for (int k = 0; k < 32; k++) {
        int c = code_at(codes, k);
        CHECK_SAME_BYTES(&ref[k], &kE2M1[c], 4);                   /* scale 2^0, signed zero kept */
        CHECK(ref[32 + k] == kE2M1[c] * 8.0f);                     /* scale 2^3 */
        CHECK(ref[64 + k] == ldexpf(kE2M1[c], -127));              /* 2^-127, a subnormal, exact */
        CHECK(isnan(ref[96 + k]));                                  /* E8M0 255 is NaN */
    }
    CHECK(ref[64 + 7] == 6.0f * ldexpf(1.0f, -127) && ref[64 + 7] > 0);
}

TEST(encode_then_decode_is_exact_for_representable_values)
{
    rng r = {21};
    const int64_t N = 6, K = 128;
    float w[6 * 128], back[6 * 128], back2[6 * 128];
    uint8_t codes[6 * 64], scales[6 * 4], codes2[6 * 64], scales2[6 * 4];
    for (int64_t b = 0; b < N * K / 32; b++) {
        int e = (int)rng_below(&r, 60) - 30;
        for (int i = 0; i < 32; i++)
            w[b * 32 + i] = ldexpf(kE2M1[rng_below(&r, 16)], e);
        /* the block's largest magnitude must be 4 or 6 times 2^e for e to be recovered */
        w[b * 32 + rng_below(&r, 32)] = ldexpf(rng_below(&r, 2) ? 6.0f : -4.0f, e);
    }
    CHECK(mxfp4_encode_ref(w, N, K, codes, scales, NULL) == 0);
    CHECK(mxfp4_encode(w, N, K, codes2, scales2, NULL) == 0);
    CHECK_SAME_BYTES(codes, codes2, sizeof codes);
    CHECK_SAME_BYTES(scales, scales2, sizeof scales);
    CHECK(mxfp4_decode(codes, scales, N, K, back, NULL) == 0);
    CHECK(mxfp4_decode_ref(codes, scales, N, K, back2, NULL) == 0);
    for (int64_t i = 0; i < N * K; i++)
        CHECK_MSG(back[i] == w[i] && back2[i] == w[i], "element %lld: %g -> %g", (long long)i,
                  w[i], back[i]);
}

/* Encodes one block of 32 with both encoders (they must agree) and returns codes + scale byte. */
static void encode_block(const float *v, uint8_t codes[16], uint8_t *scale)
{
    uint8_t c2[16], s2;
    CHECK(mxfp4_encode_ref(v, 1, 32, codes, scale, NULL) == 0);
    CHECK(mxfp4_encode(v, 1, 32, c2, &s2, NULL) == 0);
    CHECK_SAME_BYTES(codes, c2, 16);
    CHECK_EQ(*scale, s2);
}

TEST(ocp_scale_rule_and_saturation)
{
    float v[32] = {0};
    uint8_t c[16], s;
    /* amax 7 · 2^3 = 56: e = floor(log2 56) - 2 = 3; 56 / 8 = 7 lies in (6, 8) -> saturates to 6. */
    v[0] = 56.0f;
    v[1] = -63.0f / 8.0f * 8.0f; /* -63 -> -7.875 -> -6 */
    v[2] = 6.5f * 8.0f;          /* 6.5 -> 6 */
    v[3] = 8.0f;                 /* 1 -> code 2 */
    encode_block(v, c, &s);
    if (g_failed_now)
        return;
    CHECK_EQ(s, 127 + 3);
    CHECK_EQ(code_at(c, 0), 7);
    CHECK_EQ(code_at(c, 1), 15);
    CHECK_EQ(code_at(c, 2), 7);
    CHECK_EQ(code_at(c, 3), 2);
    /* amax exactly 4 · 2^-2 = 1: e = -2, maps to code 6 (4). */
    memset(v, 0, sizeof v);
    v[5] = -1.0f;
    encode_block(v, c, &s);
    if (g_failed_now)
        return;
    CHECK_EQ(s, 127 - 2);
    CHECK_EQ(code_at(c, 5), 8 | 6);
    /* All-zero block: e clamps to -127 (byte 0), codes 0; the range ends clamp too. */
    memset(v, 0, sizeof v);
    encode_block(v, c, &s);
    if (g_failed_now)
        return;
    CHECK_EQ(s, 0);
    for (int i = 0; i < 16; i++)
        CHECK_EQ(c[i], 0);
    v[0] = 3.0e38f; /* e = 127 - 2 = 125 */
    encode_block(v, c, &s);
    if (g_failed_now)
        return;
    CHECK_EQ(s, 127 + 125);
    v[0] = 1e-45f; /* smallest subnormal: floor(log2) = -149, clamped to e = -127 */
    encode_block(v, c, &s);
    if (g_failed_now)
        return;
    CHECK_EQ(s, 0);
    CHECK_EQ(code_at(c, 0), 0); /* 2^-149 / 2^-127 = 2^-22 rounds to 0 */
}

TEST(round_to_nearest_even_on_ties)
{
    /* amax 5 (e = floor(log2 5) - 2 = 0): each tie between neighbours goes to the even code. */
    const float ties[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, -0.25f, -0.75f, -5.0f,
                          0.26f, 1.24f, 4.0f};
    const int want[] = {0, 2, 2, 4, 4, 6, 6, 0, 8 | 2, 8 | 6, 1, 2, 6};
    /* The builder's rule on the same block: e = round(log2(5/6)) = 0 too, but every tie goes
     * to the smaller magnitude. */
    const int want_builder[] = {0, 1, 2, 3, 4, 5, 6, 0, 8 | 1, 8 | 6, 1, 2, 6};
    const int n = (int)(sizeof ties / sizeof ties[0]);
    float v[32] = {0};
    for (int i = 0; i < n; i++)
        v[i] = ties[i];
    uint8_t c[16], s, cb[16], sb;
    encode_block(v, c, &s);
    if (g_failed_now)
        return;
    CHECK(mxfp4_encode_builder_rule(v, 1, 32, cb, &sb, NULL) == 0);
    CHECK_EQ(s, 127);
    CHECK_EQ(sb, 127);
    for (int i = 0; i < n; i++) {
        CHECK_MSG(code_at(c, i) == want[i], "%g: code %d, expected %d", ties[i], code_at(c, i),
                  want[i]);
        CHECK_MSG(code_at(cb, i) == want_builder[i], "builder rule, %g: code %d, expected %d",
                  ties[i], code_at(cb, i), want_builder[i]);
    }
}

TEST(builder_rule_scale_can_clip_the_block_maximum)
{
    /* amax 4: OCP keeps e = 0 (4 -> code 6, exact); the builder takes e = round(log2(4/6)) = -1,
     * so 4 becomes 8 and is clipped to 6 (decoded 3), and 1.25 -> 2.5 ties down to 2. */
    float v[32] = {0};
    v[0] = 4.0f;
    v[1] = 1.25f;
    uint8_t c[16], s, cb[16], sb;
    encode_block(v, c, &s);
    if (g_failed_now)
        return;
    CHECK(mxfp4_encode_builder_rule(v, 1, 32, cb, &sb, NULL) == 0);
    CHECK_EQ(s, 127);
    CHECK_EQ(code_at(c, 0), 6);
    CHECK_EQ(sb, 126);
    CHECK_EQ(code_at(cb, 0), 7);
    CHECK_EQ(code_at(cb, 1), 4);
}

TEST(reference_equals_optimized_on_random_data)
{
    rng r = {22};
    const int64_t N = 37, K = 640;
    float *w = malloc(sizeof(float) * N * K), *d1 = malloc(sizeof(float) * N * K);
    float *d2 = malloc(sizeof(float) * N * K);
    uint8_t *c1 = malloc(N * K / 2), *c2 = malloc(N * K / 2), *c3 = malloc(N * K / 2);
    uint8_t *s1 = malloc(N * K / 32), *s2 = malloc(N * K / 32), *s3 = malloc(N * K / 32);
    for (int64_t b = 0; b < N * K / 32; b++) {
        int kind = (int)rng_below(&r, 6);
        float mag = ldexpf(1.0f, (int)rng_below(&r, 240) - 140);
        for (int i = 0; i < 32; i++) {
            float g = rng_gauss(&r);
            w[b * 32 + i] = kind == 0 ? 0.0f
                          : kind == 1 ? (float)(rng_below(&r, 17) - 8) * 0.25f /* ties */
                          : kind == 2 ? g * 1e-30f * 1e-9f                    /* subnormals */
                                      : g * mag;
        }
    }
    int rc = mxfp4_encode_ref(w, N, K, c1, s1, NULL);
    rc |= mxfp4_encode(w, N, K, c2, s2, NULL);
    rc |= mxfp4_encode_mt(w, N, K, c3, s3, 3, NULL);
    bool enc_same = memcmp(c1, c2, N * K / 2) == 0 && memcmp(c1, c3, N * K / 2) == 0 &&
                    memcmp(s1, s2, N * K / 32) == 0 && memcmp(s1, s3, N * K / 32) == 0;
    for (int64_t i = 0; i < N * K / 2; i++) /* random codes and scales (incl. 0 and 255) */
        c1[i] = (uint8_t)rng_u64(&r);
    for (int64_t i = 0; i < N * K / 32; i++)
        s1[i] = (uint8_t)rng_u64(&r);
    rc |= mxfp4_decode_ref(c1, s1, N, K, d1, NULL);
    rc |= mxfp4_decode(c1, s1, N, K, d2, NULL);
    bool dec_same = memcmp(d1, d2, sizeof(float) * N * K) == 0;
    free(w);
    free(d1);
    free(d2);
    free(c1);
    free(c2);
    free(c3);
    free(s1);
    free(s2);
    free(s3);
    CHECK(rc == 0);
    CHECK_MSG(enc_same, "encoders disagree");
    CHECK_MSG(dec_same, "decoders disagree");
}

/* Mean over rows of sqrt(sum (x - decode(encode(x)))^2 / sum x^2). */
static double mean_row_rel_rms(const float *w, const float *back, int64_t N, int64_t K)
{
    double total = 0;
    for (int64_t n = 0; n < N; n++) {
        double num = 0, den = 0;
        for (int64_t k = 0; k < K; k++) {
            double x = w[n * K + k], d = x - back[n * K + k];
            num += d * d;
            den += x * x;
        }
        total += sqrt(num / den);
    }
    return total / (double)N;
}

TEST(gaussian_error_of_ocp_rne_is_below_bound_and_below_builder_rule)
{
    rng r = {2024};
    const int64_t N = 256, K = 2048;
    float *w = malloc(sizeof(float) * N * K), *back = malloc(sizeof(float) * N * K);
    uint8_t *codes = malloc(N * K / 2), *scales = malloc(N * K / 32);
    for (int64_t i = 0; i < N * K; i++)
        w[i] = rng_gauss(&r);
    int rc = mxfp4_encode(w, N, K, codes, scales, NULL);
    rc |= mxfp4_decode(codes, scales, N, K, back, NULL);
    double ocp = mean_row_rel_rms(w, back, N, K);
    rc |= mxfp4_encode_builder_rule(w, N, K, codes, scales, NULL);
    rc |= mxfp4_decode(codes, scales, N, K, back, NULL);
    double builder = mean_row_rel_rms(w, back, N, K);
    free(w);
    free(back);
    free(codes);
    free(scales);
    printf("     MXFP4 mean relative RMS error on N(0,1), %lld x %lld, seed 2024: "
           "OCP+RNE %.4f, builder rule %.4f\n", (long long)N, (long long)K, ocp, builder);
    CHECK(rc == 0);
    CHECK_MSG(ocp < 0.12, "OCP+RNE relative RMS error %.4f is not below 0.12", ocp);
    CHECK_MSG(ocp < builder, "OCP+RNE %.4f is not better than the builder rule %.4f", ocp, builder);
}

TEST(mxfp4_arguments_are_checked)
{
    float w[64] = {0};
    uint8_t c[32], s[2];
    m2o_err err;
    CHECK_EQ(mxfp4_encode(w, 1, 48, c, s, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "K 48");
    CHECK_EQ(mxfp4_decode(c, s, 0, 32, w, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "N (rows)");
    CHECK_EQ(mxfp4_encode_ref(w, 1, 32, NULL, s, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "NULL");
    w[40] = INFINITY;
    CHECK_EQ(mxfp4_encode(w, 2, 32, c, s, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "row 1, column 8 is infinite");
    CHECK_EQ(mxfp4_encode_mt(w, 2, 32, c, s, 2, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "row 1, column 8 is infinite");
    w[40] = NAN;
    CHECK_EQ(mxfp4_encode_ref(w, 2, 32, c, s, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "row 1, column 8 is NaN");
}
