/* Symmetric per-channel quantization of QMoE experts, as onnxruntime-genai's builder does it
 * when qmoe_block_size <= 0 (docs/FORMATS.md §4.12): one positive scale per output row,
 * scale = max|w| / 2^(bits-1) (float32), raised to FLT_EPSILON when smaller (the builder's
 * torch.clamp(min=eps)); codes = clamp(round_half_even(w / scale), -2^(bits-1), 2^(bits-1) - 1)
 * + 2^(bits-1), a float32 division; the scale is rounded to its storage type only after the codes
 * were computed (the builder converts its float32 scales to float16 at the end). The negative
 * extreme maps exactly to code 0; the positive one clips to 2^bits - 1, a full step short. */
#include "quant/quant_internal.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <float.h>
#include <math.h>

int qc_check(int64_t N, int64_t K, int bits, m2o_err *err)
{
    if (bits != 4 && bits != 8)
        return m2o_fail(err, "per-channel quantization: bits %d is not supported: use 4 or 8", bits);
    if (N <= 0 || K <= 0 || (bits == 4 && K % 2))
        return m2o_fail(err, "per-channel quantization: [%lld, %lld] is not a matrix of whole "
                        "bytes (K must be even for 4 bits)", (long long)N, (long long)K);
    return 0;
}

/* The row's scale before storage: max|w| / 2^(bits-1), at least FLT_EPSILON. */
static int row_scale(const float *w, int64_t n, int64_t K, int bits, float *out, m2o_err *err)
{
    float amax = 0.0f;
    for (int64_t k = 0; k < K; k++) {
        if (!isfinite(w[k]))
            return m2o_fail(err, "per-channel quantization: weight at row %lld, column %lld is %s: "
                            "the checkpoint tensor holds non-finite values", (long long)n,
                            (long long)k, isnan(w[k]) ? "NaN" : "infinite");
        float a = fabsf(w[k]);
        amax = a > amax ? a : amax;
    }
    float s = amax / (float)(1 << (bits - 1));
    *out = s < FLT_EPSILON ? FLT_EPSILON : s;
    return 0;
}

int qc_quantize(const float *w, int64_t N, int64_t K, int bits, qscale_type scale_type,
                uint8_t *codes, void *scales, m2o_err *err)
{
    if (qc_check(N, K, bits, err))
        return -1;
    const float half = (float)(1 << (bits - 1));
    const int64_t row_bytes = K * bits / 8;
    for (int64_t n = 0; n < N; n++) {
        const float *wr = w + n * K;
        float s = 0.0f;
        if (row_scale(wr, n, K, bits, &s, err))
            return -1;
        uint8_t *crow = codes + n * row_bytes;
        for (int64_t k = 0; k < K; k++) {
            float q = rintf(wr[k] / s); /* round half to even, as torch.round */
            q = q < -half ? -half : q > half - 1.0f ? half - 1.0f : q;
            uint8_t u = (uint8_t)(int)(q + half);
            if (bits == 8)
                crow[k] = u;
            else if (k % 2 == 0)
                crow[k / 2] = u;
            else
                crow[k / 2] = (uint8_t)(crow[k / 2] | (u << 4));
        }
        qscale_store(scales, scale_type, n, s);
    }
    return 0;
}
