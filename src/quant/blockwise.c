/* Blockwise integer quantization, byte-identical to ONNX Runtime's quantize_matmul_4bits /
 * quantize_matmul_8bits (MLAS BlockwiseQuantizer, column-wise over W^T = row-wise over our
 * W [N][K]). Every float step is kept in the order ONNX Runtime performs it:
 *   - min/max scanned with `v < min` / `v > max` from (FLT_MAX, -FLT_MAX);
 *   - symmetric: anchor = |max| > |min| ? max : min (a tie picks the negative one),
 *     scale = -anchor / 8 (4-bit) or / 128 (8-bit), zero point 8 / 128;
 *   - asymmetric: min = min(min, 0), max = max(max, 0), scale = (max - min) / 15 or / 255,
 *     zp = 0 - min / scale (min itself when scale is 0), clamped, then roundf;
 *   - the scale is rounded to its storage type first, and quantizing multiplies by the
 *     reciprocal of the *stored* scale (0 when it is 0): q = clamp(roundf(v * r + zp), 0, max)
 *     with a separate multiply and add (no fused multiply-add).
 * A fused multiply-add would round v * r + zp once instead of twice and change codes at
 * .5 boundaries, so contraction is switched off here whatever the build flags (-std=gnu11 with
 * -march=native would otherwise allow it). */
#include "quant/quant_internal.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <float.h>
#include <math.h>
#include <string.h>

size_t qscale_size(qscale_type t)
{
    return t == QSCALE_F32 ? 4 : 2;
}

size_t qb_codes_bytes(int64_t N, int64_t K, const qb_params *p)
{
    return (size_t)N * (size_t)K * (size_t)p->bits / 8;
}

/* Sizes are 0 for parameters qb_check rejects, so a caller that sizes buffers first never divides
 * by zero. */
size_t qb_scales_count(int64_t N, int64_t K, const qb_params *p)
{
    return p->block_size > 0 ? (size_t)N * (size_t)(K / p->block_size) : 0;
}

/* 4-bit zero points: two blocks per byte, so a row with an odd block count has a pad nibble. */
static int64_t zp_row_bytes(int64_t K, const qb_params *p)
{
    int64_t blocks = p->block_size > 0 ? K / p->block_size : 0;
    return p->bits == 4 ? (blocks + 1) / 2 : blocks;
}

size_t qb_zero_points_bytes(int64_t N, int64_t K, const qb_params *p)
{
    return p->symmetric ? 0 : (size_t)N * (size_t)zp_row_bytes(K, p);
}

int qb_check(int64_t N, int64_t K, const qb_params *p, m2o_err *err)
{
    if (!p)
        return m2o_fail(err, "blockwise quantization: qb_params is NULL");
    if (p->bits != 4 && p->bits != 8)
        return m2o_fail(err, "blockwise quantization: bits %d is not supported: use 4 or 8",
                        p->bits);
    int bs = p->block_size;
    if (bs != 16 && bs != 32 && bs != 64 && bs != 128 && bs != 256)
        return m2o_fail(err, "blockwise quantization: block_size %d is not supported: use 16, 32, "
                        "64, 128 or 256", bs);
    if (p->scale_type != QSCALE_F32 && p->scale_type != QSCALE_F16 &&
        p->scale_type != QSCALE_BF16)
        return m2o_fail(err, "blockwise quantization: scale_type %d is not one of float32, "
                        "float16, bfloat16", (int)p->scale_type);
    if (N <= 0)
        return m2o_fail(err, "blockwise quantization: N (rows) must be positive, got %lld",
                        (long long)N);
    if (K <= 0 || K % bs != 0)
        return m2o_fail(err, "blockwise quantization: K %lld is not a positive multiple of "
                        "block_size %d: pick a block size that divides K", (long long)K, bs);
    if (N > INT64_MAX / K / 4)
        return m2o_fail(err, "blockwise quantization: N %lld x K %lld is too large",
                        (long long)N, (long long)K);
    return 0;
}

static int check_buffers(const void *w, const void *codes, const void *scales,
                         const void *zero_points, const qb_params *p, m2o_err *err)
{
    if (!w || !codes || !scales)
        return m2o_fail(err, "blockwise quantization: %s buffer is NULL",
                        !w ? "weight" : !codes ? "codes" : "scales");
    if (!p->symmetric && !zero_points)
        return m2o_fail(err, "blockwise quantization: asymmetric quantization needs a "
                        "zero_points buffer");
    return 0;
}

float qb_block_params(float vmin, float vmax, const qb_params *p, uint8_t *zp)
{
    int qmax = (1 << p->bits) - 1;
    if (p->symmetric) {
        float anchor = fabsf(vmax) > fabsf(vmin) ? vmax : vmin;
        *zp = (uint8_t)(1 << (p->bits - 1));
        return -anchor / (float)(1 << (p->bits - 1));
    }
    /* std::min(min, 0.0f) / std::max(max, 0.0f): keep the first argument when equal. */
    vmin = 0.0f < vmin ? 0.0f : vmin;
    vmax = vmax < 0.0f ? 0.0f : vmax;
    float scale = (vmax - vmin) / (float)qmax;
    float zpf = vmin;
    if (scale != 0.0f)
        zpf = 0.0f - vmin / scale;
    if (zpf < 0.0f)
        *zp = 0;
    else if (zpf > (float)qmax)
        *zp = (uint8_t)qmax;
    else
        *zp = (uint8_t)roundf(zpf);
    return scale;
}

static void put_zero_point(uint8_t *zrow, int64_t b, int bits, uint8_t zp)
{
    qb_put_code(zrow, b, bits, zp); /* same packing as codes: even block in the low nibble */
}

int qb_quantize_rows_ref(const float *w, int64_t r0, int64_t r1, int64_t K, const qb_params *p,
                         uint8_t *codes, void *scales, uint8_t *zero_points, m2o_err *err)
{
    const int bs = p->block_size, bits = p->bits;
    const int64_t blocks = K / bs, row_bytes = K * bits / 8, zrow_bytes = zp_row_bytes(K, p);
    const float qmax = (float)((1 << bits) - 1);
    for (int64_t n = r0; n < r1; n++) {
        const float *wr = w + n * K;
        uint8_t *crow = codes + n * row_bytes;
        uint8_t *zrow = zero_points ? zero_points + n * zrow_bytes : NULL;
        if (zrow && !p->symmetric) /* ONNX Runtime leaves 8 in the pad nibble of an odd count */
            memset(zrow, bits == 4 ? 0x88 : 0, (size_t)zrow_bytes);
        for (int64_t b = 0; b < blocks; b++) {
            const float *v = wr + b * bs;
            float vmin = FLT_MAX, vmax = -FLT_MAX;
            for (int i = 0; i < bs; i++) {
                if (!isfinite(v[i]))
                    return m2o_fail(err, "blockwise quantization: weight at row %lld, column %lld "
                                    "is %s: the checkpoint tensor holds non-finite values",
                                    (long long)n, (long long)(b * bs + i),
                                    isnan(v[i]) ? "NaN" : "infinite");
                if (v[i] < vmin)
                    vmin = v[i];
                if (v[i] > vmax)
                    vmax = v[i];
            }
            uint8_t zp;
            float scale = qb_block_params(vmin, vmax, p, &zp);
            float stored = qscale_store(scales, p->scale_type, n * blocks + b, scale);
            float recip = stored != 0.0f ? 1.0f / stored : 0.0f;
            if (!p->symmetric)
                put_zero_point(zrow, b, bits, zp);
            for (int i = 0; i < bs; i++) {
                float t = v[i] * recip;
                t = t + (float)zp;
                float q = roundf(t);
                /* NaN (0 times an infinite reciprocal of a subnormal scale) becomes 0, as the
                 * float-to-uint8 conversion of ONNX Runtime's x86 build makes it. */
                q = !(q > 0.0f) ? 0.0f : (q > qmax ? qmax : q);
                qb_put_code(crow, b * bs + i, bits, (uint8_t)q);
            }
        }
    }
    return 0;
}

int qb_quantize_ref(const float *w, int64_t N, int64_t K, const qb_params *p, uint8_t *codes,
                    void *scales, uint8_t *zero_points, m2o_err *err)
{
    if (qb_check(N, K, p, err) || check_buffers(w, codes, scales, zero_points, p, err))
        return -1;
    return qb_quantize_rows_ref(w, 0, N, K, p, codes, scales, zero_points, err);
}

int qb_quantize_rows(const float *w, int64_t r0, int64_t r1, int64_t K, const qb_params *p,
                     uint8_t *codes, void *scales, uint8_t *zero_points, m2o_err *err)
{
#if M2O_HAVE_X86
    if (quant_use_avx2())
        return qb_quantize_rows_avx2(w, r0, r1, K, p, codes, scales, zero_points, err);
#endif
    return qb_quantize_rows_ref(w, r0, r1, K, p, codes, scales, zero_points, err);
}

static int qb_rows(void *ctx, int64_t r0, int64_t r1, m2o_err *err)
{
    const qb_job *j = ctx;
    return qb_quantize_rows(j->w, r0, r1, j->K, j->p, j->codes, j->scales, j->zero_points, err);
}

int qb_quantize_mt(const float *w, int64_t N, int64_t K, const qb_params *p, uint8_t *codes,
                   void *scales, uint8_t *zero_points, int nthreads, m2o_err *err)
{
    if (qb_check(N, K, p, err) || check_buffers(w, codes, scales, zero_points, p, err))
        return -1;
    qb_job j = {w, K, p, codes, scales, zero_points};
    return quant_parallel_for(N, 1, nthreads, qb_rows, &j, err);
}

int qb_quantize(const float *w, int64_t N, int64_t K, const qb_params *p, uint8_t *codes,
                void *scales, uint8_t *zero_points, m2o_err *err)
{
    return qb_quantize_mt(w, N, K, p, codes, scales, zero_points, 1, err);
}

int qb_dequantize(const uint8_t *codes, const void *scales, const uint8_t *zero_points,
                  int64_t N, int64_t K, const qb_params *p, float *out, m2o_err *err)
{
    if (qb_check(N, K, p, err))
        return -1;
    if (!codes || !scales || !out || (!p->symmetric && !zero_points))
        return m2o_fail(err, "blockwise dequantization: %s buffer is NULL",
                        !codes ? "codes" : !scales ? "scales" : !out ? "output" : "zero_points");
    const int bs = p->block_size, bits = p->bits;
    const int64_t blocks = K / bs, row_bytes = K * bits / 8, zrow_bytes = zp_row_bytes(K, p);
    for (int64_t n = 0; n < N; n++) {
        const uint8_t *crow = codes + n * row_bytes;
        for (int64_t b = 0; b < blocks; b++) {
            float scale = qscale_load(scales, p->scale_type, n * blocks + b);
            int zp = 1 << (bits - 1);
            if (!p->symmetric)
                zp = qb_get_code(zero_points + n * zrow_bytes, b, bits);
            for (int64_t k = b * bs; k < (b + 1) * bs; k++)
                out[n * K + k] = (float)(qb_get_code(crow, k, bits) - zp) * scale;
        }
    }
    return 0;
}
