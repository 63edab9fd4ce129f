/* INC RTN: the `algo_config=rtn` method of onnxruntime-genai's builder (RTNWeightOnlyQuantConfig →
 * rtn_quantize(algorithm="RTN") → quant_tensor(data, bits, bs, scheme, dtype="uint") in ONNX
 * Runtime's quantization/neural_compressor/weight_only.py), docs/FORMATS.md §4.11. Per block of
 * bs elements of a row, maxq = 2^bits - 1 in both schemes (dtype "uint"):
 *   symmetric:  m = max(|min|, |max|); scale = m > 0 ? double(2 m) / maxq : 1; zp = 2^(bits-1)
 *               (implicit: no zero-point tensor)
 *   asymmetric: scale = min != max ? double(max - min) / maxq : 1, the difference taken in the
 *               weights' own type (float16 weights: rounded to float16);
 *               zp = clamp(rint((0 - min) / scale), 0, maxq) in float64
 *   codes = clamp(rint(double(x) / scale + zp), 0, maxq) in float64 (rint: half to even)
 * The scale is stored rounded once from float64 to the scale type (numpy's astype). Symmetric
 * blocks span [-8, 7] steps of 2m/15 (4-bit), so the positive extreme m lands on 15.5 → 15:
 * clipped by half a step (why the builder's docs call rtn less accurate than default). */
#include "quant/quant_internal.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <math.h>
#include <string.h>

/* float64 → float32 rounded to odd: a following round-to-nearest to a type of at most 22
 * significant bits (float16, bfloat16) then equals one direct rounding from float64. */
static float f64_to_f32_odd(double d)
{
    float f = (float)d;
    if ((double)f == d || !isfinite(f))
        return f;
    if (fabs((double)f) > fabs(d))
        f = nextafterf(f, 0.0f);
    return m2o_bits_f32(m2o_f32_bits(f) | 1u);
}

/* Stores double scale s at index i of the scale type, rounded once (numpy's astype). */
static void store_scale_f64(void *scales, qscale_type t, int64_t i, double s)
{
    if (t == QSCALE_F32)
        ((float *)scales)[i] = (float)s;
    else
        qscale_store(scales, t, i, f64_to_f32_odd(s));
}

static uint8_t clamp_code(double t, double maxq)
{
    t = rint(t);
    return !(t > 0.0) ? 0 : (uint8_t)(t > maxq ? maxq : t);
}

/* One block: its float64 scale and zero point. */
static double block_params(const float *x, int bs, const qb_params *p, qscale_type src,
                           double maxq, uint8_t *zp)
{
    float vmin = x[0], vmax = x[0];
    for (int i = 1; i < bs; i++) {
        vmin = x[i] < vmin ? x[i] : vmin;
        vmax = x[i] > vmax ? x[i] : vmax;
    }
    if (p->symmetric) {
        float m = fmaxf(fabsf(vmin), fabsf(vmax));
        *zp = (uint8_t)(1 << (p->bits - 1));
        /* 2 m in the weights' type is exact (a doubling) unless it overflows */
        return m > 0.0f ? (double)(m * 2.0f) / maxq : 1.0;
    }
    double scale = 1.0;
    if (vmin != vmax) {
        float range = vmax - vmin;
        if (src == QSCALE_F16)
            range = f16_to_f32(f32_to_f16(range));
        scale = (double)range / maxq;
    }
    *zp = clamp_code((0.0 - (double)vmin) / scale, maxq);
    return scale;
}

int rtn_inc_quantize(const float *w, int64_t N, int64_t K, const qb_params *p,
                     qscale_type source_type, uint8_t *codes, void *scales,
                     uint8_t *zero_points, m2o_err *err)
{
    if (kq_check(N, K, &(qb_params){p ? p->bits : 0, p ? p->block_size : 0, false,
                                    p ? p->scale_type : QSCALE_F32}, err))
        return -1;
    if (source_type != QSCALE_F32 && source_type != QSCALE_F16)
        return m2o_fail(err, "rtn (INC): source_type must be float32 or float16");
    if (!w || !codes || !scales || (!p->symmetric && !zero_points))
        return m2o_fail(err, "rtn (INC): a buffer is NULL");
    const int bs = p->block_size, bits = p->bits;
    const int64_t blocks = K / bs, row_bytes = K * bits / 8;
    const int64_t zrow_bytes = bits == 4 ? (blocks + 1) / 2 : blocks;
    const double maxq = (double)((1 << bits) - 1);
    for (int64_t n = 0; n < N; n++) {
        const float *wr = w + n * K;
        int64_t bad = f32_first_nonfinite(wr, (size_t)K);
        if (bad >= 0)
            return m2o_fail(err, "rtn (INC): weight at row %lld, column %lld is not finite",
                            (long long)n, (long long)bad);
        uint8_t *zrow = p->symmetric ? NULL : zero_points + n * zrow_bytes;
        if (zrow)
            memset(zrow, bits == 4 ? 0x88 : 0, (size_t)zrow_bytes);
        for (int64_t b = 0; b < blocks; b++) {
            const float *x = wr + b * bs;
            uint8_t zp;
            double scale = block_params(x, bs, p, source_type, maxq, &zp);
            store_scale_f64(scales, p->scale_type, n * blocks + b, scale);
            if (zrow)
                qb_put_code(zrow, b, bits, zp);
            for (int i = 0; i < bs; i++)
                qb_put_code(codes + n * row_bytes, b * bs + i, bits,
                         clamp_code((double)x[i] / scale + (double)zp, maxq));
        }
    }
    return 0;
}
