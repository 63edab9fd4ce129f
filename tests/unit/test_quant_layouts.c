/* CUTLASS SM80 and fp4 CUDA layouts on random shapes: reference, optimized (AVX2 and forced
 * scalar) and threaded packers agree byte for byte, and unpack(pack(x)) == x. Also the gpt-oss
 * MXFP4 repack into QMoE fp4 initializers, and the argument checks. */
#include "test.h"
#include "test_quant_rng.h"

#include "quant/quant.h"

static uint8_t *random_bytes(rng *r, size_t n)
{
    uint8_t *b = malloc(n);
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)rng_u64(r);
    return b;
}

static void check_cutlass_shape(rng *r, int64_t N, int64_t K, int bits)
{
    size_t n = (size_t)(N * K * bits / 8);
    uint8_t *raw = random_bytes(r, n), *a = malloc(n), *b = malloc(n), *c = malloc(n);
    uint8_t *d = malloc(n), *back = malloc(n), *back2 = malloc(n);
    int rc = cutlass_sm80_pack_ref(raw, N, K, bits, a, NULL);
    rc |= cutlass_sm80_pack(raw, N, K, bits, b, NULL);
    rc |= cutlass_sm80_pack_mt(raw, N, K, bits, c, 3, NULL);
    quant_force_scalar(true);
    rc |= cutlass_sm80_pack(raw, N, K, bits, d, NULL);
    rc |= cutlass_sm80_unpack(a, N, K, bits, back2, NULL);
    quant_force_scalar(false);
    rc |= cutlass_sm80_unpack(a, N, K, bits, back, NULL);
    bool same = memcmp(a, b, n) == 0 && memcmp(a, c, n) == 0 && memcmp(a, d, n) == 0;
    bool inverse = memcmp(raw, back, n) == 0 && memcmp(raw, back2, n) == 0;
    bool moved = memcmp(raw, a, n) != 0; /* the layout is not the identity */
    free(raw);
    free(a);
    free(b);
    free(c);
    free(d);
    free(back);
    free(back2);
    CHECK_MSG(rc == 0, "N %lld K %lld bits %d: a call failed", (long long)N, (long long)K, bits);
    CHECK_MSG(same, "N %lld K %lld bits %d: packers disagree", (long long)N, (long long)K, bits);
    CHECK_MSG(inverse, "N %lld K %lld bits %d: unpack(pack(x)) != x", (long long)N, (long long)K,
              bits);
    CHECK(moved);
}

TEST(cutlass_sm80_pack_paths_agree_and_unpack_inverts)
{
    rng r = {11};
    int shapes = 0;
    for (int i = 0; i < 24; i++) {
        int bits = i % 2 ? 8 : 4, inter = bits == 4 ? 4 : 2;
        int64_t N = inter * (1 + rng_below(&r, 40)), K = 64 * (1 + rng_below(&r, 9));
        check_cutlass_shape(&r, N, K, bits);
        if (g_failed_now)
            return;
        shapes++;
    }
    check_cutlass_shape(&r, 4, 64, 4); /* smallest shapes */
    check_cutlass_shape(&r, 2, 64, 8);
    CHECK_EQ(shapes, 24);
}

TEST(cutlass_sm80_element_positions_follow_the_closed_form)
{
    /* A single nonzero code at (n, k) must land where docs/FORMATS.md §5 says: 4-bit, n = 5, k = 40, K = 128:
     * kp = 32 + index_of(8 in perm4) = 32 + 2 = 34; kt = 0, kin = 34;
     * elem = (5/4)*(128*4) + 0 + (5%4)*64 + 34 = 610; word 76, i = 2 -> d = 1; nibble 609. */
    const int64_t N = 8, K = 128;
    uint8_t raw[8 * 64] = {0}, out[8 * 64];
    raw[(5 * K + 40) / 2] = 0x07; /* k = 40 is even: low nibble */
    CHECK(cutlass_sm80_pack(raw, N, K, 4, out, NULL) == 0);
    for (int i = 0; i < 8 * 64; i++) {
        uint8_t want = i == 609 / 2 ? 0x70 : 0; /* nibble 609 is odd: high half of byte 304 */
        CHECK_MSG(out[i] == want, "byte %d is 0x%02x, expected 0x%02x", i, out[i], want);
    }
    /* 8-bit, n = 3, k = 19, K = 64: kp = 16 + index_of(3 in perm8) = 16 + 5 = 21;
     * elem = (3/2)*(64*2) + 0 + 1*64 + 21 = 213; word 53, i = 1 -> byte 53*4 + 2 = 214. */
    uint8_t raw8[4 * 64] = {0}, out8[4 * 64];
    raw8[3 * 64 + 19] = 0xab;
    CHECK(cutlass_sm80_pack(raw8, 4, 64, 8, out8, NULL) == 0);
    for (int i = 0; i < 4 * 64; i++)
        CHECK_MSG(out8[i] == (i == 214 ? 0xab : 0), "byte %d is 0x%02x", i, out8[i]);
}

static void check_fp4_shape(rng *r, int64_t N, int64_t K)
{
    size_t n = (size_t)(N * K / 2);
    uint8_t *raw = random_bytes(r, n), *a = malloc(n), *b = malloc(n), *c = malloc(n);
    uint8_t *back = malloc(n);
    int rc = fp4_cuda_pack_ref(raw, N, K, a, NULL);
    rc |= fp4_cuda_pack(raw, N, K, b, NULL);
    quant_force_scalar(true);
    rc |= fp4_cuda_pack(raw, N, K, c, NULL);
    quant_force_scalar(false);
    rc |= fp4_cuda_unpack(a, N, K, back, NULL);
    bool same = memcmp(a, b, n) == 0 && memcmp(a, c, n) == 0, inverse = memcmp(raw, back, n) == 0;
    /* Spot-check the definition: nibble (k, n) of the output is nibble (n, k) of the input. */
    bool def = true;
    for (int t = 0; t < 64; t++) {
        int64_t nn = rng_below(r, N), kk = rng_below(r, K);
        int in = (raw[(nn * K + kk) / 2] >> (4 * (kk % 2))) & 0xf;
        int out = (a[(kk * N + nn) / 2] >> (4 * (nn % 2))) & 0xf;
        def = def && in == out;
    }
    free(raw);
    free(a);
    free(b);
    free(c);
    free(back);
    CHECK_MSG(rc == 0, "N %lld K %lld: a call failed", (long long)N, (long long)K);
    CHECK_MSG(same, "N %lld K %lld: packers disagree", (long long)N, (long long)K);
    CHECK_MSG(inverse, "N %lld K %lld: unpack(pack(x)) != x", (long long)N, (long long)K);
    CHECK_MSG(def, "N %lld K %lld: not a nibble transpose", (long long)N, (long long)K);
}

TEST(fp4_cuda_pack_paths_agree_and_unpack_inverts)
{
    rng r = {12};
    for (int i = 0; i < 30; i++) {
        /* Even sizes, many not multiples of the 32 x 16 SIMD tile, to cover the edge loops. */
        int64_t N = 2 * (1 + rng_below(&r, 80)), K = 2 * (1 + rng_below(&r, 150));
        check_fp4_shape(&r, N, K);
        if (g_failed_now)
            return;
    }
    check_fp4_shape(&r, 2, 2);
    check_fp4_shape(&r, 64, 32);
    check_fp4_shape(&r, 2880 / 10 * 2, 96);
}

TEST(gpt_oss_mxfp4_repack_is_lossless)
{
    rng r = {13};
    const int64_t E = 3, N = 96, K = 64;
    const size_t wb = (size_t)(N * K / 2), sb = (size_t)(N * K / 32);
    uint8_t *blocks = random_bytes(&r, E * wb), *scales = random_bytes(&r, E * sb);
    uint8_t *ow = malloc(E * wb), *os = malloc(E * sb), *back = malloc(wb);
    float *v1 = malloc(sizeof(float) * N * K), *v2 = malloc(sizeof(float) * N * K);
    int rc = mxfp4_repack_qmoe_fp4(blocks, scales, E, N, K, ow, os, NULL);
    bool ok = rc == 0 && memcmp(scales, os, E * sb) == 0;
    for (int64_t e = 0; ok && e < E; e++) {
        ok = fp4_cuda_unpack(ow + e * wb, N, K, back, NULL) == 0 &&
             memcmp(back, blocks + e * wb, wb) == 0;
        /* the values decoded from the repacked expert are the checkpoint's values */
        ok = ok && mxfp4_decode_ref(back, os + e * sb, N, K, v1, NULL) == 0 &&
             mxfp4_decode_ref(blocks + e * wb, scales + e * sb, N, K, v2, NULL) == 0 &&
             memcmp(v1, v2, sizeof(float) * N * K) == 0;
    }
    free(blocks);
    free(scales);
    free(ow);
    free(os);
    free(back);
    free(v1);
    free(v2);
    CHECK(ok);
}

TEST(layout_arguments_are_checked)
{
    uint8_t in[4096] = {0}, out[4096];
    m2o_err err;
    CHECK_EQ(cutlass_sm80_pack(in, 4, 96, 4, out, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "K 96 is not a positive multiple of 64");
    CHECK_EQ(cutlass_sm80_pack_ref(in, 6, 64, 4, out, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "N 6 is not a positive multiple of 4");
    CHECK_EQ(cutlass_sm80_pack(in, 3, 64, 8, out, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "N 3 is not a positive multiple of 2");
    CHECK_EQ(cutlass_sm80_unpack(in, 4, 64, 2, out, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "bits 2");
    CHECK_EQ(cutlass_sm80_pack(NULL, 4, 64, 4, out, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "input buffer is NULL");
    CHECK_EQ(fp4_cuda_pack(in, 3, 64, out, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "N 3");
    CHECK_EQ(fp4_cuda_unpack(in, 4, 7, out, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "K 7");
    CHECK_EQ(mxfp4_repack_qmoe_fp4(in, in, 0, 4, 32, out, out, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "E (experts)");
    CHECK_EQ(mxfp4_repack_qmoe_fp4(in, in, 1, 4, 48, out, out, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "K 48");
    CHECK_EQ(quant_parallel_for(10, 0, 2, NULL, NULL, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "quant_parallel_for");
}

static int fail_on_chunk_with_7(void *ctx, int64_t b, int64_t e, m2o_err *err)
{
    int *calls = ctx;
    __atomic_add_fetch(calls, 1, __ATOMIC_RELAXED);
    if (b <= 7 && 7 < e)
        return m2o_fail(err, "chunk [%lld, %lld) failed", (long long)b, (long long)e);
    return 0;
}

TEST(parallel_for_covers_the_range_and_reports_a_failing_chunk)
{
    int calls = 0;
    m2o_err err;
    CHECK_EQ(quant_parallel_for(20, 4, 3, fail_on_chunk_with_7, &calls, &err), -1);
    CHECK_EQ(calls, 3);
    CHECK_STR_CONTAINS(err.msg, "chunk [0, 8) failed"); /* 5 units of 4 over 3 threads: 2,2,1 */
    calls = 0;
    CHECK_EQ(quant_parallel_for(5, 1, 8, fail_on_chunk_with_7, &calls, &err), 0);
    CHECK_EQ(calls, 5);
}
