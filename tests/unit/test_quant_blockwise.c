/* Blockwise integer quantization beyond the golden cases: the reference and the optimized
 * kernels give identical bytes on random shapes and on the corner cases that decide bytes
 * (ties between a positive and a negative extreme, exact .5 after scaling, all-zero and signed
 * zero blocks, constant blocks, scales that round to 0 or overflow float16); hand-computed
 * codes for the rules of docs/FORMATS.md §4; quantize -> dequantize error bounds; invalid arguments. */
#include "test.h"
#include "test_quant_rng.h"

#include <float.h>

#include "common/half.h"
#include "quant/quant.h"
#include "test_quant_buf.h"


/* Fills W [N][K] with a mix chosen per block: Gaussian, constant, all +0, all -0, mixed ±0,
 * a tie between +m and -m, values that land exactly on .5 after scaling, a positive anchor,
 * tiny (subnormal) values, and huge values. */
static void fill_tricky(rng *r, float *w, int64_t N, int64_t K, int bs)
{
    for (int64_t n = 0; n < N; n++) {
        for (int64_t b = 0; b < K / bs; b++) {
            float *v = w + n * K + b * bs;
            int kind = (int)rng_below(r, 10);
            float mag = ldexpf(1.0f, (int)rng_below(r, 12) - 6);
            for (int i = 0; i < bs; i++) {
                float g = rng_gauss(r) * mag;
                switch (kind) {
                case 0: v[i] = g; break;
                case 1: v[i] = 0.375f * mag; break;
                case 2: v[i] = 0.0f; break;
                case 3: v[i] = -0.0f; break;
                case 4: v[i] = (i % 3) ? 0.0f : -0.0f; break;
                case 5: v[i] = i == 1 ? 4.0f * mag : i == bs - 1 ? -4.0f * mag : g; break;
                case 6: v[i] = i == 0 ? -8.0f : (float)(rng_below(r, 15) - 7) + 0.5f; break;
                case 7: v[i] = i == 2 ? 9.0f * mag : fabsf(g) * 0.5f; break;
                case 8: v[i] = g * 1e-39f; break;
                default: v[i] = g * 3e5f; break;
                }
            }
        }
    }
}

static const int kBlocks[] = {16, 32, 64, 128, 256};

TEST(reference_equals_optimized_on_random_shapes)
{
    rng r = {42};
    int combos = 0;
    for (int bits = 4; bits <= 8; bits += 4)
        for (int bi = 0; bi < 5; bi++)
            for (int sym = 0; sym < 2; sym++)
                for (int st = 0; st < 3; st++) {
                    qb_params p = {bits, kBlocks[bi], sym == 1, (qscale_type)st};
                    int64_t N = 1 + rng_below(&r, 9), K = p.block_size * (1 + rng_below(&r, 5));
                    float *w = malloc(sizeof(float) * (size_t)(N * K));
                    fill_tricky(&r, w, N, K, p.block_size);
                    qout a, b, c, d;
                    qout_alloc(&a, N, K, &p);
                    qout_alloc(&b, N, K, &p);
                    qout_alloc(&c, N, K, &p);
                    qout_alloc(&d, N, K, &p);
                    m2o_err err;
                    int ra = qb_quantize_ref(w, N, K, &p, a.codes, a.scales, a.zp, &err);
                    int rb = qb_quantize(w, N, K, &p, b.codes, b.scales, b.zp, &err);
                    int rc = qb_quantize_mt(w, N, K, &p, c.codes, c.scales, c.zp, 3, &err);
                    quant_force_scalar(true);
                    int rd = qb_quantize(w, N, K, &p, d.codes, d.scales, d.zp, &err);
                    quant_force_scalar(false);
                    bool same = qout_equal(&a, &b) && qout_equal(&a, &c) && qout_equal(&a, &d);
                    qout_free(&a);
                    qout_free(&b);
                    qout_free(&c);
                    qout_free(&d);
                    free(w);
                    CHECK_MSG(ra == 0 && rb == 0 && rc == 0 && rd == 0, "failed: %s", err.msg);
                    CHECK_MSG(same, "bits %d block %d %s scale type %d N %lld K %lld: reference "
                              "and optimized bytes differ", bits, p.block_size,
                              sym ? "symmetric" : "asymmetric", st, (long long)N, (long long)K);
                    combos++;
                }
    CHECK_EQ(combos, 60);
}

static void large_case(const float *w, int64_t N, int64_t K, int bits)
{
    qb_params p = {bits, 32, bits == 4, QSCALE_F16};
    qout a, b;
    qout_alloc(&a, N, K, &p);
    qout_alloc(&b, N, K, &p);
    int ra = qb_quantize_ref(w, N, K, &p, a.codes, a.scales, a.zp, NULL);
    int rb = qb_quantize_mt(w, N, K, &p, b.codes, b.scales, b.zp, 2, NULL);
    bool same = ra == 0 && rb == 0 && qout_equal(&a, &b);
    qout_free(&a);
    qout_free(&b);
    CHECK_MSG(same, "%d-bit: reference and optimized differ", bits);
}

TEST(reference_equals_optimized_on_a_large_gaussian_matrix)
{
    rng r = {7};
    const int64_t N = 61, K = 1536;
    float *w = malloc(sizeof(float) * N * K);
    for (int64_t i = 0; i < N * K; i++)
        w[i] = rng_gauss(&r) * 0.02f;
    for (int bits = 4; bits <= 8 && !g_failed_now; bits += 4)
        large_case(w, N, K, bits);
    free(w);
}

/* One 16-element block through both kernels; returns the reference result in out. */
static void quantize_block16(const float *v, const qb_params *p, uint8_t codes[16], float *scale,
                             uint8_t *zp)
{
    uint8_t c1[16], c2[16], z1 = 0xee, z2 = 0xee;
    float s1 = 0.0f, s2 = 0.0f; /* a float16 scale fills only 2 of the 4 compared bytes */
    CHECK(qb_quantize_ref(v, 1, 16, p, c1, &s1, &z1, NULL) == 0);
    CHECK(qb_quantize(v, 1, 16, p, c2, &s2, &z2, NULL) == 0);
    size_t nb = (size_t)(16 * p->bits / 8);
    CHECK_SAME_BYTES(c1, c2, nb);
    CHECK_SAME_BYTES(&s1, &s2, 4);
    CHECK_EQ(z1, z2);
    for (int i = 0; i < 16; i++)
        codes[i] = p->bits == 8 ? c1[i] : (i % 2 ? c1[i / 2] >> 4 : c1[i / 2] & 0xf);
    *scale = s1;
    *zp = z1;
}

TEST(symmetric_scales_are_signed_and_the_anchor_maps_to_code_0)
{
    /* Positive anchor: scale = -anchor / 8 is negative; abs() of it would flip the block. */
    float v[16] = {1.0f, -0.5f, 4.0f, 0.25f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3.0f};
    qb_params p = {4, 16, true, QSCALE_F32};
    uint8_t c[16], zp;
    float s;
    quantize_block16(v, &p, c, &s, &zp);
    if (g_failed_now)
        return;
    CHECK_NEAR(s, -0.5, 0);
    CHECK_EQ(c[2], 0);  /* anchor 4 -> 4 * (1/-0.5) + 8 = 0 */
    CHECK_EQ(c[0], 6);  /* 1 -> -2 + 8 */
    CHECK_EQ(c[1], 9);  /* -0.5 -> 1 + 8 */
    CHECK_EQ(c[3], 8);  /* 0.25 -> -0.5 + 8 = 7.5 -> roundf 8 (half away from zero) */
    CHECK_EQ(c[15], 2); /* 3 -> -6 + 8 */
    /* 8-bit: scale = -anchor / 128. */
    qb_params p8 = {8, 16, true, QSCALE_F32};
    quantize_block16(v, &p8, c, &s, &zp);
    if (g_failed_now)
        return;
    CHECK_NEAR(s, -4.0 / 128.0, 0);
    CHECK_EQ(c[2], 0);
    CHECK_EQ(c[0], 96); /* 1 * -32 + 128 */
}

TEST(symmetric_tie_between_extremes_picks_the_negative_one)
{
    /* ONNX Runtime: anchor = |max| > |min| ? max : min, so +3 / -3 anchors on -3. */
    float v[16] = {3.0f, 1.0f, -3.0f, 0.5f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    qb_params p = {4, 16, true, QSCALE_F32};
    uint8_t c[16], zp;
    float s;
    quantize_block16(v, &p, c, &s, &zp);
    if (g_failed_now)
        return;
    CHECK_NEAR(s, 0.375, 0); /* -(-3) / 8 */
    CHECK_EQ(c[2], 0);       /* -3 -> code 0 */
    CHECK_EQ(c[0], 15);      /* +3 -> 16 -> clamped to 15 */
}

TEST(exact_half_after_scaling_rounds_away_from_zero)
{
    /* anchor -8 -> scale 1, reciprocal 1: v + 8 is exact, so v = k + 0.5 is an exact tie. */
    float v[16] = {-8.0f, 0.5f, -0.5f, 1.5f, -1.5f, 2.5f, -6.5f, 6.5f, -7.5f, 0, 0, 0, 0, 0, 0, 0};
    const int want[9] = {0, 9, 8, 10, 7, 11, 2, 15, 1}; /* 8.5->9, 7.5->8, 9.5->10, 6.5->7 ... */
    qb_params p = {4, 16, true, QSCALE_F32};
    uint8_t c[16], zp;
    float s;
    quantize_block16(v, &p, c, &s, &zp);
    if (g_failed_now)
        return;
    CHECK_NEAR(s, 1.0, 0);
    for (int i = 0; i < 9; i++)
        CHECK_MSG(c[i] == want[i], "value %g: code %d, expected %d", v[i], c[i], want[i]);
}

TEST(asymmetric_scale_and_zero_point)
{
    /* min -1, max 2: scale = 3 / 15 = 0.2, zp = roundf(0 - (-1) / 0.2) = 5. */
    float v[16] = {-1.0f, 2.0f, 0.0f, 0.1f, 0.3f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    qb_params p = {4, 16, false, QSCALE_F32};
    uint8_t c[16], zp;
    float s;
    quantize_block16(v, &p, c, &s, &zp);
    if (g_failed_now)
        return;
    CHECK_NEAR(s, 3.0f / 15.0f, 0);
    CHECK_EQ(zp & 0xf, 5);
    CHECK_EQ(zp >> 4, 8); /* single block: the pad nibble is 8, as ONNX Runtime leaves it */
    CHECK_EQ(c[0], 0);
    CHECK_EQ(c[1], 15);
    CHECK_EQ(c[2], 5);
    /* All-positive block: min is raised to 0, zp 0. */
    float pos[16];
    for (int i = 0; i < 16; i++)
        pos[i] = 1.0f + (float)i;
    quantize_block16(pos, &p, c, &s, &zp);
    if (g_failed_now)
        return;
    CHECK_NEAR(s, 16.0f / 15.0f, 0);
    CHECK_EQ(zp & 0xf, 0);
    CHECK_EQ(c[15], 15);
}

TEST(float16_scale_is_rounded_before_quantizing)
{
    /* anchor -0.1: float32 scale 0.0125, float16 stores 0.012496948..; 0.043749 times the
     * reciprocal is 3.49992 with the float32 scale (code 11) but 3.50077 with the stored float16
     * one (code 12). ONNX Runtime quantizes with the stored value. */
    float v[16] = {-0.1f, 0.043749f, 0.0437f, -0.0187f, 0.03125f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    qb_params p = {4, 16, true, QSCALE_F16};
    uint8_t c1[8], c2[8];
    uint16_t s1, s2;
    CHECK(qb_quantize_ref(v, 1, 16, &p, c1, &s1, NULL, NULL) == 0);
    CHECK(qb_quantize(v, 1, 16, &p, c2, &s2, NULL, NULL) == 0);
    CHECK_SAME_BYTES(c1, c2, 8);
    CHECK_EQ(s1, s2);
    CHECK_EQ(s1, f32_to_f16(0.1f / 8.0f));
    CHECK_EQ(c1[0] >> 4, 12);
    float r32 = 1.0f / (0.1f / 8.0f), t32 = v[1] * r32;
    CHECK_EQ((int)roundf(t32 + 8.0f), 11); /* the float32 scale would have given 11 */
    float stored = f16_to_f32(s1), r = 1.0f / stored;
    for (int i = 0; i < 5; i++) {
        float t = v[i] * r;
        t = t + 8.0f;
        int want = (int)roundf(t);
        want = want < 0 ? 0 : want > 15 ? 15 : want;
        int got = i % 2 ? c1[i / 2] >> 4 : c1[i / 2] & 0xf;
        CHECK_MSG(got == want, "element %d: code %d, expected %d", i, got, want);
    }
}

TEST(zero_constant_and_degenerate_blocks)
{
    qb_params p = {4, 16, true, QSCALE_F32};
    float v[16] = {0};
    uint8_t c[16], zp;
    float s;
    quantize_block16(v, &p, c, &s, &zp); /* all +0: scale = -(+0)/8 = -0, every code 8 */
    if (g_failed_now)
        return;
    CHECK(s == 0.0f && signbit(s));
    for (int i = 0; i < 16; i++)
        CHECK_EQ(c[i], 8);
    for (int i = 0; i < 16; i++)
        v[i] = i == 0 ? -0.0f : 0.0f; /* first element decides the zero's sign */
    quantize_block16(v, &p, c, &s, &zp);
    if (g_failed_now)
        return;
    CHECK(s == 0.0f && !signbit(s));
    for (int i = 0; i < 16; i++)
        v[i] = i == 3 ? 0.0f : 1e-44f; /* a float32 subnormal scale: its reciprocal is inf */
    quantize_block16(v, &p, c, &s, &zp);
    if (g_failed_now)
        return;
    CHECK(s < 0.0f);
    CHECK_EQ(c[0], 0);  /* 1e-44 * -inf -> clamped to 0 */
    CHECK_EQ(c[3], 0);  /* 0 * inf is NaN -> 0 (not undefined behaviour) */
    qb_params a = {4, 16, false, QSCALE_F16};
    for (int i = 0; i < 16; i++)
        v[i] = -2.5f; /* constant negative block: min -2.5, max raised to 0 */
    quantize_block16(v, &a, c, &s, &zp);
    if (g_failed_now)
        return;
    CHECK_EQ(zp & 0xf, 15);
    CHECK_EQ(c[0], 0);
}

/* Dequantize error: an element inside the block's representable range is within |scale|/2
 * (plus float rounding); one outside is clamped to the nearest end, which is within |scale|. */
static void check_roundtrip(const qb_params *p, int64_t N, int64_t K, uint64_t seed)
{
    rng r = {seed};
    float *w = malloc(sizeof(float) * (size_t)(N * K)), *back = malloc(sizeof(float) * (size_t)(N * K));
    for (int64_t i = 0; i < N * K; i++)
        w[i] = rng_gauss(&r) * (float)(1 + i % 5);
    qout o;
    qout_alloc(&o, N, K, p);
    int rq = qb_quantize(w, N, K, p, o.codes, o.scales, o.zp, NULL);
    int rd = qb_dequantize(o.codes, o.scales, o.zp, N, K, p, back, NULL);
    double worst_inside = 0, worst_outside = 0;
    const int64_t blocks = K / p->block_size;
    const int qmax = (1 << p->bits) - 1;
    for (int64_t n = 0; rq == 0 && rd == 0 && n < N; n++) {
        for (int64_t k = 0; k < K; k++) {
            int64_t bi = n * blocks + k / p->block_size;
            float s = p->scale_type == QSCALE_F32 ? ((float *)o.scales)[bi]
                                                  : f16_to_f32(((uint16_t *)o.scales)[bi]);
            int zp = 1 << (p->bits - 1);
            if (!p->symmetric) {
                int64_t zrow = p->bits == 4 ? (blocks + 1) / 2 : blocks;
                uint8_t z = o.zp[n * zrow + (p->bits == 4 ? (k / p->block_size) / 2 : k / p->block_size)];
                zp = p->bits == 8 ? z : ((k / p->block_size) % 2 ? z >> 4 : z & 0xf);
            }
            double lo = (double)(0 - zp) * s, hi = (double)(qmax - zp) * s;
            if (lo > hi) {
                double t = lo;
                lo = hi;
                hi = t;
            }
            double v = w[n * K + k], e = fabs(back[n * K + k] - v) / fabs(s);
            if (v >= lo && v <= hi)
                worst_inside = e > worst_inside ? e : worst_inside;
            else
                worst_outside = e > worst_outside ? e : worst_outside;
        }
    }
    qout_free(&o);
    free(w);
    free(back);
    CHECK(rq == 0 && rd == 0);
    CHECK_MSG(worst_inside <= 0.5 + 1e-5, "%d-bit bs %d %s: error %.6f x scale inside the range",
              p->bits, p->block_size, p->symmetric ? "sym" : "asym", worst_inside);
    CHECK_MSG(worst_outside <= 1.0 + 1e-5, "%d-bit bs %d %s: error %.6f x scale when clamped",
              p->bits, p->block_size, p->symmetric ? "sym" : "asym", worst_outside);
}

TEST(quantize_dequantize_error_is_bounded_by_half_a_scale)
{
    for (int bits = 4; bits <= 8; bits += 4)
        for (int bi = 0; bi < 5; bi++)
            for (int sym = 0; sym < 2; sym++)
                for (int st = 0; st < 2; st++) {
                    qb_params p = {bits, kBlocks[bi], sym == 1, st ? QSCALE_F16 : QSCALE_F32};
                    check_roundtrip(&p, 13, kBlocks[bi] * 3, (uint64_t)(bits * 100 + bi * 10 + sym * 2 + st));
                    if (g_failed_now)
                        return;
                }
}

TEST(dequantize_inverts_codes_exactly)
{
    /* Codes -> values -> codes again is the identity when the values are representable. */
    rng r = {3};
    qb_params p = {4, 32, true, QSCALE_F32};
    const int64_t N = 5, K = 128;
    uint8_t codes[5 * 64], again[5 * 64];
    float scales[5 * 4], s2[5 * 4], w[5 * 128];
    for (int i = 0; i < 5 * 64; i++)
        codes[i] = (uint8_t)rng_u64(&r);
    for (int b = 0; b < 20; b++) {
        scales[b] = (b % 2 ? -1.0f : 1.0f) * ldexpf(1.0f, (int)rng_below(&r, 8) - 4);
        /* make code 0 (the anchor, -8·scale... ) present so the block's scale is recovered */
        int64_t n = b / 4, k0 = (b % 4) * 32;
        codes[(n * K + k0) / 2] = (uint8_t)(codes[(n * K + k0) / 2] & 0xf0);
    }
    CHECK(qb_dequantize(codes, scales, NULL, N, K, &p, w, NULL) == 0);
    CHECK(qb_quantize(w, N, K, &p, again, s2, NULL, NULL) == 0);
    CHECK_SAME_BYTES(scales, s2, sizeof scales);
    CHECK_SAME_BYTES(codes, again, sizeof codes);
}

TEST(invalid_arguments_return_an_error_naming_the_parameter)
{
    float w[64] = {0};
    uint8_t codes[64], zp[8];
    float scales[8];
    m2o_err err;
    qb_params p = {3, 32, true, QSCALE_F32};
    CHECK_EQ(qb_quantize(w, 1, 64, &p, codes, scales, NULL, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "bits 3");
    p = (qb_params){4, 48, true, QSCALE_F32};
    CHECK_EQ(qb_quantize_ref(w, 1, 48, &p, codes, scales, NULL, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "block_size 48");
    p = (qb_params){4, 32, true, QSCALE_F32};
    CHECK_EQ(qb_quantize(w, 1, 48, &p, codes, scales, NULL, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "K 48");
    CHECK_EQ(qb_quantize(w, 0, 64, &p, codes, scales, NULL, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "N (rows)");
    p = (qb_params){4, 32, true, (qscale_type)7};
    CHECK_EQ(qb_check(1, 64, &p, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "scale_type 7");
    p = (qb_params){8, 32, false, QSCALE_F32};
    CHECK_EQ(qb_quantize(w, 1, 64, &p, codes, scales, NULL, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "zero_points");
    CHECK_EQ(qb_quantize(NULL, 1, 64, &p, codes, scales, zp, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "weight buffer");
    CHECK_EQ(qb_dequantize(codes, scales, NULL, 1, 64, &p, w, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "zero_points");
    /* Non-finite weights are refused, by every path, naming row and column. */
    p = (qb_params){4, 32, true, QSCALE_F32};
    w[37] = NAN;
    CHECK_EQ(qb_quantize_ref(w, 2, 32, &p, codes, scales, NULL, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "row 1, column 5 is NaN");
    CHECK_EQ(qb_quantize(w, 2, 32, &p, codes, scales, NULL, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "row 1, column 5 is NaN");
    w[37] = -INFINITY;
    CHECK_EQ(qb_quantize_mt(w, 2, 32, &p, codes, scales, NULL, 2, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "row 1, column 5 is infinite");
}

TEST(sizes_of_invalid_params_are_zero_not_a_crash)
{
    qb_params p = {.bits = 4, .block_size = 0, .symmetric = false, .scale_type = QSCALE_F32};
    CHECK_EQ(qb_scales_count(8, 64, &p), 0);
    CHECK_EQ(qb_zero_points_bytes(8, 64, &p), 0);
    m2o_err e = {{0}};
    CHECK_EQ(qb_check(8, 64, &p, &e), -1);
    CHECK_STR_CONTAINS(e.msg, "block_size");
}
