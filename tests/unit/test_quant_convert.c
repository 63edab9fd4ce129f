/* Conversions and transpose: the dispatched (AVX2) converters give the bits of the scalar ones
 * in common/half.h for every 16-bit pattern and for float32 edge cases (ties, subnormals,
 * overflow, infinities); a NaN stays a NaN. */
#include "test.h"
#include "test_quant_rng.h"

#include "common/half.h"
#include "quant/quant.h"

static bool f32_same_or_both_nan(float a, float b)
{
    return (isnan(a) && isnan(b)) || m2o_f32_bits(a) == m2o_f32_bits(b);
}

static bool f16_is_nan(uint16_t h)
{
    return (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
}

static bool bf16_is_nan(uint16_t h)
{
    return (h & 0x7f80) == 0x7f80 && (h & 0x7f);
}

TEST(sixteen_bit_to_float32_for_every_pattern)
{
    /* 65536 + 3: an odd length exercises the scalar tail after the 8-wide loop. */
    const size_t n = 65539;
    uint16_t *h = malloc(n * 2);
    float *a = malloc(n * 4), *b = malloc(n * 4);
    for (size_t i = 0; i < n; i++)
        h[i] = (uint16_t)i;
    size_t bad_f16 = n, bad_bf16 = n;
    convert_f16_to_f32(h, a, n);
    for (size_t i = 0; i < n && bad_f16 == n; i++)
        if (!f32_same_or_both_nan(a[i], f16_to_f32(h[i])))
            bad_f16 = i;
    convert_bf16_to_f32(h, b, n);
    for (size_t i = 0; i < n && bad_bf16 == n; i++)
        if (m2o_f32_bits(b[i]) != m2o_f32_bits(bf16_to_f32(h[i])))
            bad_bf16 = i;
    free(h);
    free(a);
    free(b);
    CHECK_MSG(bad_f16 == n, "float16 pattern 0x%04zx converts differently", bad_f16);
    CHECK_MSG(bad_bf16 == n, "bfloat16 pattern 0x%04zx converts differently", bad_bf16);
}

TEST(float32_to_sixteen_bit_matches_scalar_rounding)
{
    rng r = {31};
    const size_t n = 200003;
    float *f = malloc(n * 4);
    uint16_t *h = malloc(n * 2), *bf = malloc(n * 2);
    /* random bit patterns, then hand-picked edges: ties, subnormal and overflow boundaries */
    for (size_t i = 0; i < n; i++)
        f[i] = m2o_bits_f32((uint32_t)rng_u64(&r));
    const uint32_t edges[] = {0x3f801000u, 0x3f803000u, 0x3f800fffu, 0x477fefffu, 0x477ff000u,
                              0x33000000u, 0x33000001u, 0x387fc000u, 0x38800000u, 0x7f800000u,
                              0xff800000u, 0x80000000u, 0x00000001u, 0x3f808000u, 0x3f818000u,
                              0x7f7fffffu, 0x7fc00000u, 0xffa00001u};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
        f[i * 7] = m2o_bits_f32(edges[i]);
    convert_f32_to_f16(f, h, n);
    convert_f32_to_bf16(f, bf, n);
    size_t bad_h = n, bad_b = n;
    for (size_t i = 0; i < n && (bad_h == n || bad_b == n); i++) {
        uint16_t sh = f32_to_f16(f[i]), sb = f32_to_bf16(f[i]);
        bool ok_h = isnan(f[i]) ? f16_is_nan(h[i]) : h[i] == sh;
        bool ok_b = isnan(f[i]) ? bf16_is_nan(bf[i]) && bf[i] == sb : bf[i] == sb;
        if (!ok_h && bad_h == n)
            bad_h = i;
        if (!ok_b && bad_b == n)
            bad_b = i;
    }
    uint32_t fh = bad_h < n ? m2o_f32_bits(f[bad_h]) : 0, fb = bad_b < n ? m2o_f32_bits(f[bad_b]) : 0;
    free(f);
    free(h);
    free(bf);
    CHECK_MSG(bad_h == n, "float32 0x%08x converts to float16 differently", fh);
    CHECK_MSG(bad_b == n, "float32 0x%08x converts to bfloat16 differently", fb);
}

TEST(transpose_matches_the_definition_on_both_paths)
{
    rng r = {32};
    const int64_t shapes[][2] = {{67, 45}, {8, 8}, {1, 13}, {130, 72}, {3, 200}};
    for (int s = 0; s < 5; s++) {
        const int64_t R = shapes[s][0], C = shapes[s][1];
        float *a = malloc(sizeof(float) * R * C), *t = malloc(sizeof(float) * R * C);
        float *u = malloc(sizeof(float) * R * C);
        for (int64_t i = 0; i < R * C; i++)
            a[i] = rng_gauss(&r);
        transpose_f32(a, R, C, t);
        quant_force_scalar(true);
        transpose_f32(a, R, C, u);
        quant_force_scalar(false);
        int64_t bad = -1;
        for (int64_t i = 0; i < R && bad < 0; i++)
            for (int64_t j = 0; j < C && bad < 0; j++)
                if (t[j * R + i] != a[i * C + j] || u[j * R + i] != a[i * C + j])
                    bad = i * C + j;
        free(a);
        free(t);
        free(u);
        CHECK_MSG(bad < 0, "%lld x %lld: element %lld misplaced", (long long)R, (long long)C,
                  (long long)bad);
    }
}

TEST(dispatch_name_reports_the_path)
{
    const char *name = quant_dispatch_name();
    CHECK(strcmp(name, "avx2") == 0 || strcmp(name, "scalar") == 0);
    quant_force_scalar(true);
    CHECK(strcmp(quant_dispatch_name(), "scalar") == 0);
    quant_force_scalar(false);
}
