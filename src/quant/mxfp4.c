/* MXFP4 (OCP Microscaling v1.0, docs/FORMATS.md §7): E2M1 codes, blocks of 32 along K, one E8M0 scale
 * byte per block (value 2^(byte - 127); byte 255 is NaN).
 *
 * Encoding rule chosen: the OCP one. Per block, e = floor(log2(amax)) - 2, so the largest
 * magnitude scales into [4, 8); each value x / 2^e is rounded to the nearest E2M1 value with
 * ties to the even code (0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4,
 * 5 -> 4) and magnitudes above 6 saturate to 6. e is clamped to the E8M0 range [-127, 127]; an
 * all-zero block gets e = -127 (byte 0). A magnitude that rounds to 0 is stored as +0 (code 0).
 *
 * Why not the reference builder's rule (e = round(log2(amax / 6)), ties toward the smaller
 * magnitude): its scale may put amax up to 6·√2 ≈ 8.5, clipping the largest value of a block,
 * and its ties bias magnitudes down. Measured on seeded standard-normal data (256 x 2048, seed
 * 2024, tests/unit/test_quant_mxfp4.c): mean per-row relative RMS error sqrt(Σ(x-x̂)²/Σx²) is
 * 0.1149 with OCP + RNE against 0.1212 for the builder's rule (5% lower); bench_kernels prints
 * the same measure on the benchmark shapes (BENCHMARKS.md). The OCP rule is also what hardware
 * converters do (round to nearest even, saturating).
 *
 * The gpt-oss checkpoint is already MXFP4: its codes and scale bytes pass through unchanged. */
#include "quant/quant_internal.h"

#include <math.h>
#include <string.h>

static const float kE2M1[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

int mxfp4_check(const void *a, const void *b, const void *c, int64_t N, int64_t K, m2o_err *err)
{
    if (N <= 0)
        return m2o_fail(err, "MXFP4: N (rows) must be positive, got %lld", (long long)N);
    if (K <= 0 || K % 32 != 0)
        return m2o_fail(err, "MXFP4: K %lld is not a positive multiple of the block size 32",
                        (long long)K);
    if (N > INT64_MAX / K / 4)
        return m2o_fail(err, "MXFP4: N %lld x K %lld is too large", (long long)N, (long long)K);
    if (!a || !b || !c)
        return m2o_fail(err, "MXFP4: %s buffer is NULL", !a ? "first" : !b ? "second" : "third");
    return 0;
}

/* ---- decode ---- */

static void decode_rows_ref(const uint8_t *codes, const uint8_t *scales, int64_t r0, int64_t r1,
                            int64_t K, float *out)
{
    for (int64_t n = r0; n < r1; n++) {
        for (int64_t k = 0; k < K; k++) {
            uint8_t byte = codes[(n * K + k) / 2];
            int c = k % 2 ? byte >> 4 : byte & 0xf;
            uint8_t s = scales[n * (K / 32) + k / 32];
            float mag = kE2M1[c & 7];
            out[n * K + k] = s == 255 ? NAN : ldexpf(c & 8 ? -mag : mag, (int)s - 127);
        }
    }
}

int mxfp4_decode_ref(const uint8_t *codes, const uint8_t *scales, int64_t N, int64_t K,
                     float *out, m2o_err *err)
{
    if (mxfp4_check(codes, scales, out, N, K, err))
        return -1;
    decode_rows_ref(codes, scales, 0, N, K, out);
    return 0;
}

int mxfp4_decode(const uint8_t *codes, const uint8_t *scales, int64_t N, int64_t K, float *out,
                 m2o_err *err)
{
    if (mxfp4_check(codes, scales, out, N, K, err))
        return -1;
#if M2O_HAVE_X86
    if (quant_use_avx2()) {
        mxfp4_decode_rows_avx2(codes, scales, 0, N, K, out);
        return 0;
    }
#endif
    decode_rows_ref(codes, scales, 0, N, K, out);
    return 0;
}

/* ---- encode (OCP rule, round to nearest even) ---- */

/* Nearest E2M1 magnitude code to a >= 0 (computed in double, exact for these values); a tie
 * goes to the even code; anything above 6 saturates to code 7. */
static int nearest_code_rne(double a)
{
    int best = 0;
    double best_d = a;
    for (int c = 1; c < 8; c++) {
        double d = fabs(a - (double)kE2M1[c]);
        if (d < best_d || (d == best_d && c % 2 == 0)) {
            best = c;
            best_d = d;
        }
    }
    return best;
}

/* Shared exponent of a block with largest magnitude amax (finite, >= 0). */
static int ocp_block_exponent(float amax)
{
    if (amax == 0.0f)
        return -127;
    int e = ilogbf(amax) - 2;
    return e < -127 ? -127 : (e > 127 ? 127 : e);
}

static int non_finite(float v, int64_t n, int64_t k, m2o_err *err)
{
    return m2o_fail(err, "MXFP4 encode: weight at row %lld, column %lld is %s: the checkpoint "
                    "tensor holds non-finite values", (long long)n, (long long)k,
                    isnan(v) ? "NaN" : "infinite");
}

static void put_nibble(uint8_t *codes, int64_t idx, int c)
{
    if (idx % 2)
        codes[idx / 2] = (uint8_t)((codes[idx / 2] & 0x0f) | (c << 4));
    else
        codes[idx / 2] = (uint8_t)((codes[idx / 2] & 0xf0) | c);
}

int mxfp4_encode_rows_ref(const float *w, int64_t r0, int64_t r1, int64_t K, uint8_t *codes,
                          uint8_t *scales, m2o_err *err)
{
    for (int64_t n = r0; n < r1; n++) {
        for (int64_t b = 0; b < K / 32; b++) {
            const float *v = w + n * K + b * 32;
            float amax = 0.0f;
            for (int i = 0; i < 32; i++) {
                if (!isfinite(v[i]))
                    return non_finite(v[i], n, b * 32 + i, err);
                if (fabsf(v[i]) > amax)
                    amax = fabsf(v[i]);
            }
            int e = ocp_block_exponent(amax);
            scales[n * (K / 32) + b] = (uint8_t)(e + 127);
            for (int i = 0; i < 32; i++) {
                float x = ldexpf(v[i], -e);
                int c = nearest_code_rne(fabs((double)x));
                if (c != 0 && x < 0.0f)
                    c |= 8;
                put_nibble(codes, n * K + b * 32 + i, c);
            }
        }
    }
    return 0;
}

int mxfp4_encode_ref(const float *w, int64_t N, int64_t K, uint8_t *codes, uint8_t *scales,
                     m2o_err *err)
{
    if (mxfp4_check(w, codes, scales, N, K, err))
        return -1;
    return mxfp4_encode_rows_ref(w, 0, N, K, codes, scales, err);
}

typedef struct enc_job {
    const float *w;
    int64_t K;
    uint8_t *codes, *scales;
} enc_job;

static int encode_rows(void *ctx, int64_t r0, int64_t r1, m2o_err *err)
{
    const enc_job *j = ctx;
#if M2O_HAVE_X86
    if (quant_use_avx2())
        return mxfp4_encode_rows_avx2(j->w, r0, r1, j->K, j->codes, j->scales, err);
#endif
    return mxfp4_encode_rows_ref(j->w, r0, r1, j->K, j->codes, j->scales, err);
}

int mxfp4_encode_mt(const float *w, int64_t N, int64_t K, uint8_t *codes, uint8_t *scales,
                    int nthreads, m2o_err *err)
{
    if (mxfp4_check(w, codes, scales, N, K, err))
        return -1;
    enc_job j = {w, K, codes, scales};
    return quant_parallel_for(N, 1, nthreads, encode_rows, &j, err);
}

int mxfp4_encode(const float *w, int64_t N, int64_t K, uint8_t *codes, uint8_t *scales,
                 m2o_err *err)
{
    return mxfp4_encode_mt(w, N, K, codes, scales, 1, err);
}

/* ---- the reference builder's rule, for comparison only ---- */

/* Nearest E2M1 magnitude code to a in [0, 6]; a tie goes to the smaller magnitude. */
static int nearest_code_down(double a)
{
    int best = 0;
    double best_d = a;
    for (int c = 1; c < 8; c++) {
        double d = fabs(a - (double)kE2M1[c]);
        if (d < best_d) {
            best = c;
            best_d = d;
        }
    }
    return best;
}

int mxfp4_encode_builder_rule(const float *w, int64_t N, int64_t K, uint8_t *codes,
                              uint8_t *scales, m2o_err *err)
{
    if (mxfp4_check(w, codes, scales, N, K, err))
        return -1;
    for (int64_t n = 0; n < N; n++) {
        for (int64_t b = 0; b < K / 32; b++) {
            const float *v = w + n * K + b * 32;
            float amax = 0.0f;
            for (int i = 0; i < 32; i++) {
                if (!isfinite(v[i]))
                    return non_finite(v[i], n, b * 32 + i, err);
                if (fabsf(v[i]) > amax)
                    amax = fabsf(v[i]);
            }
            int e = amax == 0.0f ? -127 : (int)nearbyint(log2((double)amax / 6.0));
            e = e < -127 ? -127 : (e > 127 ? 127 : e);
            scales[n * (K / 32) + b] = (uint8_t)(e + 127);
            for (int i = 0; i < 32; i++) {
                double x = ldexp((double)v[i], -e);
                double a = fabs(x) > 6.0 ? 6.0 : fabs(x);
                int c = nearest_code_down(a);
                if (c != 0 && x < 0.0)
                    c |= 8;
                put_nibble(codes, n * K + b * 32 + i, c);
            }
        }
    }
    return 0;
}

/* ---- gpt-oss passthrough into the QMoE fp4 (CUDA) layout ---- */

int mxfp4_repack_qmoe_fp4(const uint8_t *blocks, const uint8_t *scales, int64_t E, int64_t N,
                          int64_t K, uint8_t *out_weights, uint8_t *out_scales, m2o_err *err)
{
    if (E <= 0)
        return m2o_fail(err, "MXFP4 repack: E (experts) must be positive, got %lld",
                        (long long)E);
    if (mxfp4_check(blocks, scales, out_weights, N, K, err) ||
        mxfp4_check(blocks, scales, out_scales, N, K, err))
        return m2o_wrap(err, "MXFP4 repack");
    const size_t wbytes = (size_t)(N * K / 2), sbytes = (size_t)(N * (K / 32));
    for (int64_t e = 0; e < E; e++) {
        if (fp4_cuda_pack(blocks + (size_t)e * wbytes, N, K, out_weights + (size_t)e * wbytes, err))
            return m2o_wrap(err, "MXFP4 repack, expert %lld", (long long)e);
    }
    memcpy(out_scales, scales, sbytes * (size_t)E);
    return 0;
}
