/* k_quant: ONNX Runtime's k-quant weight-only quantizer (docs/FORMATS.md §4.10), the method
 * onnxruntime-genai's builder runs for `algo_config=k_quant` (KQuantWeightOnlyQuantConfig →
 * rtn_quantize(algorithm="k_quant") → quant_tensor_k_quant_cpu in ONNX Runtime's
 * quantization/neural_compressor/weight_only.py). Asymmetric: scale, uint8 zero point and codes
 * per block of `block_size` consecutive elements of a row (a column of W^T).
 *
 * Per block x[0..bs), every step in float32 in numpy's order, each operation rounded on its own
 * (contraction is switched off below):
 *   w_i = sqrt(sum(x^2) / bs) + |x_i|                 importance weights
 *   rmin, rmax = min, max;  sum_w = sum(w);  sum_x = sum(w x)
 *   iscale = rmin != rmax ? maxq / (rmax - rmin) : 1;  scale = 1 / iscale
 *   best = sum(w (scale q + rmin - x)^2),  q = clip(rint(iscale (x - rmin)), 0, maxq)
 *   for is in 0..19: factor = float32((-1 + 0.1 is) + maxq)   (Python double, then float32)
 *     iscale' = rmin != rmax ? factor / (rmax - rmin) : 1;  q' = clip(rint(iscale' (x - rmin)))
 *     least-squares fit of x ≈ s q' + m with weights w:
 *       sum_l = sum(w q'), sum_l2 = sum(w q' q'), sum_xl = sum(w q' x),
 *       D = sum_w sum_l2 - sum_l^2, s = (sum_w sum_xl - sum_x sum_l) / D,
 *       m = (sum_l2 sum_x - sum_l sum_xl) / D,  mad = sum(w (s q' + m - x)^2)
 *     if mad < best: best = mad, scale = s, rmin = m   ← rmin itself is replaced, so the
 *       following steps grid from the fitted minimum (ONNX Runtime does exactly this)
 *   zp = clip(rint(-rmin / scale), 0, maxq)  (float32)
 *   code_i = clip(rint(double(x_i) / double(scale) + zp), 0, maxq)  (float64)
 * rint rounds half to even (numpy's round). The stored scale is the float32 scale rounded to the
 * scale type *after* the codes were computed (numpy's astype at the end), unlike the MLAS
 * quantizer of §4, which quantizes with the stored scale.
 *
 * numpy's sums: np.sum(a, axis=1) over a contiguous float32 row is numpy's pairwise summation
 * (its add reduction, float32 accumulator): up to 128 elements, eight running sums over
 * i ≡ 0..7 (mod 8) combined as ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)), then the n % 8 leftovers
 * added in order; above 128, split at n/2 rounded down to a multiple of 8 and summed
 * recursively. np_sum_f32 below repeats that order, which decides the last bits of every sum
 * and so which step wins; a plain left-to-right loop gives different scales on many blocks.
 * One block per row (block_size == K) with N > 1 is the exception: ONNX Runtime hands the
 * function W^T transposed back, np.reshape(.., (-1, K)) then keeps that column-major view and
 * astype keeps its layout, so every np.sum runs down strided rows as a plain left-to-right sum
 * (numpy adds the rows elementwise, k after k); with N == 1 the row is contiguous again.
 * A constant block (rmin == rmax) keeps scale 1 and zp = clip(rint(-rmin)) (every fit divides
 * 0 by 0), as ONNX Runtime does. */
#include "quant/quant_internal.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { KQ_STEPS = 20 };

float kq_pairwise_sum(const float *a, int64_t n)
{
    if (n < 8) {
        float res = 0.0f;
        for (int64_t i = 0; i < n; i++)
            res += a[i];
        return res;
    }
    if (n <= 128) {
        float r[8];
        for (int j = 0; j < 8; j++)
            r[j] = a[j];
        int64_t i;
        for (i = 8; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++)
                r[j] += a[i + j];
        float res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++)
            res += a[i];
        return res;
    }
    int64_t n2 = n / 2;
    n2 -= n2 % 8;
    return kq_pairwise_sum(a, n2) + kq_pairwise_sum(a + n2, n - n2);
}

/* The order of numpy's sums over a non-contiguous row: one element after the other. */
static float sequential_sum(const float *a, int64_t n)
{
    float res = 0.0f;
    for (int64_t i = 0; i < n; i++)
        res += a[i];
    return res;
}

typedef float (*sum_fn)(const float *, int64_t);

/* numpy's clip(round(v), 0, maxq) in float32. */
static inline float clip_rint(float v, float maxq)
{
    float r = rintf(v);
    return r < 0.0f ? 0.0f : (r > maxq ? maxq : r);
}

/* Scratch for one block: importance weights, one product row, candidate codes. */
typedef struct kq_scratch {
    float *w, *t, *q;
    sum_fn sum; /* numpy's order for this layout */
} kq_scratch;

/* sum(w (s q + m - x)^2) with numpy's operation order ((s q) + m) - x. */
static float weighted_error(const float *x, const kq_scratch *s, int bs, float scale, float m)
{
    for (int i = 0; i < bs; i++) {
        float d = scale * s->q[i];
        d = d + m;
        d = d - x[i];
        s->t[i] = s->w[i] * (d * d);
    }
    return s->sum(s->t, bs);
}

/* One step of the search: codes for iscale, then the weighted least-squares (scale, min). */
static float fit_step(const float *x, const kq_scratch *s, int bs, float iscale, float rmin,
                      float maxq, float sum_w, float sum_x, float *scale, float *m)
{
    for (int i = 0; i < bs; i++)
        s->q[i] = clip_rint(iscale * (x[i] - rmin), maxq);
    for (int i = 0; i < bs; i++)
        s->t[i] = s->w[i] * s->q[i];
    float sum_l = s->sum(s->t, bs);
    for (int i = 0; i < bs; i++)
        s->t[i] = (s->w[i] * s->q[i]) * s->q[i];
    float sum_l2 = s->sum(s->t, bs);
    for (int i = 0; i < bs; i++)
        s->t[i] = (s->w[i] * s->q[i]) * x[i];
    float sum_xl = s->sum(s->t, bs);
    float D = sum_w * sum_l2 - sum_l * sum_l;
    *scale = (sum_w * sum_xl - sum_x * sum_l) / D;
    *m = (sum_l2 * sum_x - sum_l * sum_xl) / D;
    return weighted_error(x, s, bs, *scale, *m);
}

/* The block's float32 scale and zero point (see the file comment). */
static float kq_block_params(const float *x, int bs, int bits, const kq_scratch *s, uint8_t *zp)
{
    const int maxq_int = (1 << bits) - 1;
    const float maxq = (float)maxq_int;
    for (int i = 0; i < bs; i++)
        s->t[i] = x[i] * x[i];
    float av_x = sqrtf(s->sum(s->t, bs) / (float)bs);
    float rmin = x[0], rmax = x[0];
    for (int i = 0; i < bs; i++) {
        s->w[i] = av_x + fabsf(x[i]);
        rmin = x[i] < rmin ? x[i] : rmin;
        rmax = x[i] > rmax ? x[i] : rmax;
    }
    const float sum_w = s->sum(s->w, bs);
    for (int i = 0; i < bs; i++)
        s->t[i] = s->w[i] * x[i];
    const float sum_x = s->sum(s->t, bs);

    float iscale = rmin != rmax ? maxq / (rmax - rmin) : 1.0f;
    float scale = 1.0f / iscale;
    for (int i = 0; i < bs; i++)
        s->q[i] = clip_rint(iscale * (x[i] - rmin), maxq);
    float best = weighted_error(x, s, bs, scale, rmin);
    for (int is = 0; is < KQ_STEPS; is++) {
        float factor = (float)((-1.0 + 0.1 * (double)is) + (double)maxq_int);
        float step_iscale = rmin != rmax ? factor / (rmax - rmin) : 1.0f;
        float fit_scale, fit_min;
        float mad = fit_step(x, s, bs, step_iscale, rmin, maxq, sum_w, sum_x, &fit_scale,
                             &fit_min);
        if (mad < best) { /* NaN (D == 0) never wins */
            best = mad;
            scale = fit_scale;
            rmin = fit_min;
        }
    }
    float z = rintf(-rmin / scale);
    /* NaN (a zero scale) becomes 0, as numpy's float-to-uint8 cast does on x86. */
    *zp = !(z > 0.0f) ? 0 : (uint8_t)(z > maxq ? maxq : z);
    return scale;
}

/* Codes in float64 from the float32 scale: numpy divides the float32 data by the scale cast to
 * float64 and adds the zero point before rounding. */
static void kq_block_codes(const float *x, int bs, int bits, float scale, uint8_t zp,
                           uint8_t *crow, int64_t k0)
{
    const double maxq = (double)((1 << bits) - 1), ds = (double)scale, dz = (double)zp;
    for (int i = 0; i < bs; i++) {
        double t = rint((double)x[i] / ds + dz);
        uint8_t q = !(t > 0.0) ? 0 : (uint8_t)(t > maxq ? maxq : t);
        qb_put_code(crow, k0 + i, bits, q);
    }
}

int kq_check(int64_t N, int64_t K, const qb_params *p, m2o_err *err)
{
    if (!p)
        return m2o_fail(err, "k_quant: qb_params is NULL");
    if (p->bits != 4 && p->bits != 8)
        return m2o_fail(err, "k_quant: bits %d is not supported: use 4 or 8", p->bits);
    if (p->symmetric)
        return m2o_fail(err, "k_quant: the method is asymmetric (scales and zero points); "
                        "call it with symmetric = false");
    if (p->scale_type != QSCALE_F32 && p->scale_type != QSCALE_F16 &&
        p->scale_type != QSCALE_BF16)
        return m2o_fail(err, "k_quant: scale_type %d is not one of float32, float16, bfloat16",
                        (int)p->scale_type);
    int bs = p->block_size;
    if (N <= 0 || K <= 0)
        return m2o_fail(err, "k_quant: N %lld and K %lld must be positive", (long long)N,
                        (long long)K);
    if (bs < 2 || bs % 2 != 0 || K % bs != 0)
        return m2o_fail(err, "k_quant: block_size %d must be even and divide K %lld (K itself "
                        "for one block per row)", bs, (long long)K);
    if (N > INT64_MAX / K / 4)
        return m2o_fail(err, "k_quant: N %lld x K %lld is too large", (long long)N,
                        (long long)K);
    return 0;
}

static int kq_rows(const float *w, int64_t N, int64_t r0, int64_t r1, int64_t K,
                   const qb_params *p, uint8_t *codes, void *scales, uint8_t *zero_points,
                   m2o_err *err)
{
    const int bs = p->block_size, bits = p->bits;
    const int64_t blocks = K / bs, row_bytes = K * bits / 8;
    const int64_t zrow_bytes = bits == 4 ? (blocks + 1) / 2 : blocks;
    float *buf = m2o_calloc(3 * (size_t)bs, sizeof(float), err);
    if (!buf)
        return -1;
    kq_scratch s = {buf, buf + bs, buf + 2 * bs, kq_pairwise_sum};
    if (blocks == 1 && N > 1)
        s.sum = sequential_sum; /* see the file comment */
    int rc = 0;
    for (int64_t n = r0; n < r1 && rc == 0; n++) {
        const float *wr = w + n * K;
        int64_t bad = f32_first_nonfinite(wr, (size_t)K);
        if (bad >= 0) {
            rc = m2o_fail(err, "k_quant: weight at row %lld, column %lld is not finite: the "
                          "checkpoint tensor holds NaN or infinite values", (long long)n,
                          (long long)bad);
            break;
        }
        uint8_t *zrow = zero_points + n * zrow_bytes;
        memset(zrow, bits == 4 ? 0x88 : 0, (size_t)zrow_bytes); /* odd count: pad nibble 8 */
        for (int64_t b = 0; b < blocks; b++) {
            uint8_t zp;
            float scale = kq_block_params(wr + b * bs, bs, bits, &s, &zp);
            qscale_store(scales, p->scale_type, n * blocks + b, scale);
            qb_put_code(zrow, b, bits, zp);
            kq_block_codes(wr + b * bs, bs, bits, scale, zp, codes + n * row_bytes, b * bs);
        }
    }
    free(buf);
    return rc;
}

typedef struct kq_job {
    qb_job q;
    int64_t N; /* all rows: the sum order depends on it */
} kq_job;

static int kq_rows_job(void *ctx, int64_t r0, int64_t r1, m2o_err *err)
{
    const kq_job *j = ctx;
    return kq_rows(j->q.w, j->N, r0, r1, j->q.K, j->q.p, j->q.codes, j->q.scales,
                   j->q.zero_points, err);
}

int kq_quantize_mt(const float *w, int64_t N, int64_t K, const qb_params *p, uint8_t *codes,
                   void *scales, uint8_t *zero_points, int nthreads, m2o_err *err)
{
    if (kq_check(N, K, p, err))
        return -1;
    if (!w || !codes || !scales || !zero_points)
        return m2o_fail(err, "k_quant: %s buffer is NULL",
                        !w ? "weight" : !codes ? "codes" : !scales ? "scales" : "zero_points");
    kq_job j = {{w, K, p, codes, scales, zero_points}, N};
    return quant_parallel_for(N, 1, nthreads, kq_rows_job, &j, err);
}

int kq_quantize(const float *w, int64_t N, int64_t K, const qb_params *p, uint8_t *codes,
                void *scales, uint8_t *zero_points, m2o_err *err)
{
    return kq_quantize_mt(w, N, K, p, codes, scales, zero_points, 1, err);
}
