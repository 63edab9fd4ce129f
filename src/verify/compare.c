#include "verify/compare.h"

#include <math.h>
#include <string.h>

#include "common/half.h"
#include "onnx/graph.h"
#include "quant/quant.h"

/* A scale whose float32 reciprocal overflows (|s| <= 2^-128): the quantizer's codes saturate. */
static bool tiny_scale(float s)
{
    return s != 0.0f && isinf(1.0f / s);
}

static const float kE2M1[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
/* Half the gap to the neighbouring E2M1 magnitudes (6: saturation, see compare.h). */
static const double kE2M1HalfGap[8] = {0.25, 0.25, 0.25, 0.25, 0.5, 0.5, 1.0, 2.5};

void vstats_init(vstats *s)
{
    memset(s, 0, sizeof *s);
    s->first_row = s->first_col = -1;
}

void vstats_merge(vstats *into, const vstats *s)
{
    if (into->n_over == 0 && s->n_over > 0) {
        into->first_row = s->first_row;
        into->first_col = s->first_col;
        into->first_expected = s->first_expected;
        into->first_decoded = s->first_decoded;
        into->first_bound = s->first_bound;
        into->first_scale = s->first_scale;
        into->first_scale_ceiling = s->first_scale_ceiling;
    }
    into->n += s->n;
    into->n_nonfinite += s->n_nonfinite;
    into->sum_err2 += s->sum_err2;
    into->sum_ref2 += s->sum_ref2;
    into->sum_bound2 += s->sum_bound2;
    into->n_over += s->n_over;
    if (s->max_abs > into->max_abs)
        into->max_abs = s->max_abs;
    if (s->max_ratio > into->max_ratio)
        into->max_ratio = s->max_ratio;
}

double vstats_rel_rms(const vstats *s)
{
    if (s->sum_ref2 > 0)
        return sqrt(s->sum_err2 / s->sum_ref2);
    return s->sum_err2 > 0 ? INFINITY : 0.0;
}

double vstats_rel_rms_bound(const vstats *s)
{
    if (s->sum_ref2 > 0)
        return sqrt(s->sum_bound2 / s->sum_ref2);
    return s->sum_bound2 > 0 ? INFINITY : 0.0;
}

double vx_type_unit(int elem_type)
{
    switch (elem_type) {
    case ONNX_FLOAT16:
        return ldexp(1.0, -11);
    case ONNX_BFLOAT16:
        return ldexp(1.0, -8);
    default:
        return ldexp(1.0, -24);
    }
}

/* Half the smallest positive subnormal: what round-to-nearest may lose near zero. */
static double type_floor(int elem_type)
{
    switch (elem_type) {
    case ONNX_FLOAT16:
        return ldexp(1.0, -25);
    case ONNX_BFLOAT16:
        return ldexp(1.0, -134);
    default:
        return ldexp(1.0, -150);
    }
}

float vx_load_float(const void *p, int elem_type, size_t i)
{
    uint16_t h;
    switch (elem_type) {
    case ONNX_FLOAT16:
        memcpy(&h, (const uint8_t *)p + 2 * i, 2);
        return f16_to_f32(h);
    case ONNX_BFLOAT16:
        memcpy(&h, (const uint8_t *)p + 2 * i, 2);
        return bf16_to_f32(h);
    default: {
        float f;
        memcpy(&f, (const uint8_t *)p + 4 * i, 4);
        return f;
    }
    }
}

void vx_scales_to_f32(const void *scales, int elem_type, size_t n, float *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = vx_load_float(scales, elem_type, i);
}

int venc_check(const venc *e, int64_t N, int64_t K, m2o_err *err)
{
    if (N <= 0 || K <= 0)
        return m2o_fail(err, "verify: empty matrix [%lld, %lld]", (long long)N, (long long)K);
    switch (e->kind) {
    case VENC_FLOAT:
        if (!e->w || !onnx_dtype_size(e->elem_type))
            return m2o_fail(err, "verify: float weights need data of a float type");
        return 0;
    case VENC_INT:
        if (e->bits != 4 && e->bits != 8 && e->bits != 2)
            return m2o_fail(err, "verify: %d-bit codes are not supported (2, 4 or 8)", e->bits);
        if (e->block_size <= 0 || K % e->block_size || (e->block_size * e->bits) % 8)
            return m2o_fail(err, "verify: block size %d does not divide K %lld", e->block_size,
                            (long long)K);
        if (!e->codes || !e->scales)
            return m2o_fail(err, "verify: int weights need codes and scales");
        return 0;
    case VENC_MXFP4:
        if (K % 32 || !e->codes || !e->scales)
            return m2o_fail(err, "verify: MXFP4 needs K %lld a multiple of 32, codes and scales",
                            (long long)K);
        return 0;
    }
    return m2o_fail(err, "verify: unknown encoding");
}

static int int_code(const uint8_t *row, int64_t k, int bits)
{
    if (bits == 8)
        return row[k];
    if (bits == 4)
        return k % 2 ? row[k / 2] >> 4 : row[k / 2] & 0xf;
    return (row[k / 4] >> (2 * (k % 4))) & 3;
}

static int int_zero_point(const venc *e, int64_t K, int64_t n, int64_t b)
{
    if (!e->zero_points)
        return 1 << (e->bits - 1);
    int64_t nb = K / e->block_size;
    if (e->bits == 8)
        return e->zero_points[n * nb + b];
    int64_t row = (nb + 1) / 2;
    uint8_t z = e->zero_points[n * row + b / 2];
    return b % 2 ? z >> 4 : z & 0xf;
}

/* Scale ceiling factor and element rule for venc.any_method (docs/FORMATS.md §16). Measured on
 * seeded Gaussian, heavy-tailed and uniform blocks of 16-256, 4 and 8 bits, float32 and float16
 * scales: the largest stored scale over the MLAS ceiling is 1.07 (INC RTN symmetric, 16/15 by
 * its formula), 1.11 (k_quant), 1.38 (scale search, 4-bit symmetric, blocks of 16). */
#define ANY_METHOD_CEILING 1.5

/* x was clipped at the edge of its block's grid: every method's grid holds 0 (the zero point is a
 * code), so a clipped value decodes to the edge between 0 and x, same sign (or 0), smaller. */
static inline bool clipped_toward_zero(double x, double y)
{
    return (y == 0.0 || (x > 0.0) == (y > 0.0)) && fabs(y) < fabs(x);
}

/* The any-method relative bound of every code: half a step, the scale's rounding to its type
 * after the codes were computed (k_quant and INC RTN round the codes with the unrounded scale:
 * up to 2^bits steps times the type's unit), and the float32 multiply by 1/s. */
static inline double any_method_rel(int bits, double d)
{
    return 0.5 + ldexp(1.01 * d, bits) + ldexp(1.0, bits - 1 - 21);
}

void venc_element(const venc *e, int64_t K, int64_t n, int64_t k, float expected, double *decoded,
                  double *bound)
{
    switch (e->kind) {
    case VENC_FLOAT: {
        *decoded = vx_load_float(e->w, e->elem_type, (size_t)(n * K + k));
        /* half an ulp of expected's binade: |x| = m 2^ex, m in [0.5, 1) */
        double b = 0.0;
        if (expected != 0.0f) {
            int ex;
            frexp(fabs((double)expected), &ex);
            b = ldexp(vx_type_unit(e->elem_type), ex - 1);
        }
        *bound = b > type_floor(e->elem_type) ? b : type_floor(e->elem_type);
        if (e->elem_type == ONNX_FLOAT)
            *bound = b; /* float32 holds every expected value exactly */
        return;
    }
    case VENC_INT: {
        int64_t nb = K / e->block_size, b = k / e->block_size;
        int bits = e->bits, qmax = (1 << bits) - 1;
        const uint8_t *row = e->codes + n * (K * bits / 8);
        int q = int_code(row, k, bits), zp = int_zero_point(e, K, n, b);
        double s = vx_load_float(e->scales, e->elem_type, (size_t)(n * nb + b));
        *decoded = (double)(float)((float)(q - zp) * (float)s);
        double d = e->elem_type == ONNX_FLOAT ? ldexp(1.0, -24) : vx_type_unit(e->elem_type);
        bool extreme = q == 0 || q == qmax;
        double rel = e->any_method ? any_method_rel(bits, d)
                     : extreme     ? 1.0 + ldexp(1.01 * d, bits)
                                   : 0.5 + ldexp(1.0, bits - 1 - 21);
        if (tiny_scale((float)s)) /* 1/s overflows float32: codes saturate (see compare.h) */
            rel = ldexp(1.0 + ldexp(1.0, -20), bits);
        /* the same floor a rounded-to-zero (or subnormal) scale leaves, in code units */
        *bound = fabs(s) * rel + ldexp(type_floor(e->elem_type), bits - 1);
        if (e->any_method && extreme && clipped_toward_zero(expected, *decoded) &&
            fabs(*decoded - expected) > *bound)
            *bound = fabs(*decoded - expected);
        return;
    }
    case VENC_MXFP4: {
        const uint8_t *sc = e->scales;
        uint8_t byte = e->codes[(n * K + k) / 2];
        int c = k % 2 ? byte >> 4 : byte & 0xf;
        uint8_t sb = sc[n * (K / 32) + k / 32];
        double scale = sb == 255 ? NAN : ldexp(1.0, (int)sb - 127);
        double mag = kE2M1[c & 7] * scale;
        *decoded = c & 8 ? -mag : mag;
        *bound = kE2M1HalfGap[c & 7] * scale * (1.0 + 1e-6);
        return;
    }
    }
    *decoded = NAN;
    *bound = 0;
}

/* ---- bounds from the checkpoint: a stored scale is only trusted up to what the expected block
 * implies, so an Inf, NaN or inflated scale cannot widen its own bound ---- */

/* Largest |stored scale| a block of expected values allows, or -1 when any scale passes (an
 * MXFP4 block of zeros: its codes decode to 0 whatever the scale).
 *   int symmetric:  max|x| / 2^(bits-1), asymmetric: (max(x, 0) - min(x, 0)) / (2^bits - 1)
 *                   (quant/blockwise.c's rules), times (1 + 2u) for the scale's rounding to its
 *                   type, plus that type's half subnormal;
 *   MXFP4:          2^(floor(log2 max|x|) - 1): the OCP rule gives 2^(floor - 2), a rounded
 *                   exponent at most 2^(floor - 1); never below 2^-127 (scale byte 0). */
static double block_scale_ceiling(const venc *e, const float *x, int64_t len)
{
    float lo = 0.0f, hi = 0.0f;
    for (int64_t i = 0; i < len; i++) {
        uint32_t b;
        memcpy(&b, &x[i], 4);
        /* NaN or Inf: not compared, no part of the bound (branch-free, so it vectorizes) */
        float v = (b & 0x7f800000u) == 0x7f800000u ? 0.0f : x[i];
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    double vmin = lo, vmax = hi, amax = -vmin > vmax ? -vmin : vmax;
    if (e->kind == VENC_MXFP4) {
        if (amax == 0.0)
            return -1.0;
        int ex;
        frexp(amax, &ex); /* amax = m 2^ex, m in [0.5, 1): floor(log2 amax) = ex - 1 */
        double c = ldexp(1.0, ex - 2);
        return c > ldexp(1.0, -127) ? c : ldexp(1.0, -127);
    }
    double ref = e->zero_points ? (vmax - vmin) / (double)((1 << e->bits) - 1)
                                : amax / (double)(1 << (e->bits - 1));
    if (e->any_method)
        ref *= ANY_METHOD_CEILING;
    return ref * (1.0 + 2.0 * vx_type_unit(e->elem_type)) + type_floor(e->elem_type);
}

static double stored_scale(const venc *e, int64_t K, int64_t n, int64_t k)
{
    if (e->kind == VENC_MXFP4) {
        uint8_t sb = ((const uint8_t *)e->scales)[n * (K / 32) + k / 32];
        return sb == 255 ? NAN : ldexp(1.0, (int)sb - 127);
    }
    return fabs((double)vx_load_float(e->scales, e->elem_type,
                                   (size_t)(n * (K / e->block_size) + k / e->block_size)));
}

static int64_t scale_block(const venc *e, int64_t K)
{
    return e->kind == VENC_MXFP4 ? 32 : e->kind == VENC_INT ? e->block_size : K;
}

/* Decoded value and bound of (n, k) with the block's scale ceiling applied: a scale above it
 * (or not a number) puts every element of an int block out of bounds; MXFP4 bounds are capped at
 * the ceiling, so a passthrough block whose codes decode exactly still passes. */
/* A float copy must be x rounded to nearest even in its type, not merely within half an ulp
 * (both neighbours of a tie are). x finite. */
static bool float_exact(float x, double y, int type)
{
    if (y == (double)x)
        return true; /* x is representable: its rounding is itself */
    double r = type == ONNX_FLOAT16    ? f16_to_f32(f32_to_f16(x))
               : type == ONNX_BFLOAT16 ? bf16_to_f32(f32_to_bf16(x))
                                       : x;
    return y == r;
}

static void element_checked(const venc *e, int64_t K, int64_t n, int64_t k, float x,
                            double ceiling, double *y, double *bound, bool *scale_bad,
                            double *scale)
{
    venc_element(e, K, n, k, x, y, bound);
    *scale_bad = false;
    if (e->kind == VENC_FLOAT) {
        *scale_bad = !float_exact(x, *y, e->elem_type);
        return;
    }
    if (ceiling < 0)
        return;
    double s = stored_scale(e, K, n, k);
    *scale = s;
    if (e->kind == VENC_MXFP4) {
        if (!(s <= ceiling) && s == s)
            *bound *= ceiling / s;
        return;
    }
    *scale_bad = !(s <= ceiling);
}

/* ---- blocks written by scale_search (docs/FORMATS.md §16) ----
 * The search (quant/search.c) keeps a block's codes round-to-nearest for its stored scale and zero
 * point, but picks that scale for the least squared error, so it may exceed the round-to-nearest
 * ceiling (grid up to 1.10x, the other sign's 2^(b-1)/(2^(b-1)-1)) and clip elements at the extreme
 * codes by more than a step. Such a block fails the strict bound above and is judged again:
 *   - interior codes: within half a step of the stored scale (as round to nearest);
 *   - extreme codes: the element lies beyond its code or within half a step inside it (clipped:
 *     code 0 means x/s + zp <= 0.5, code 2^b-1 means >= 2^b - 1.5), never inside by more;
 *   - the block's squared error (decoded exactly as ONNX Runtime does) is at most that of the
 *     round-to-nearest encoding of the same checkpoint block (the search's own guarantee).
 * A scale with the wrong sign, a wrong zero point or a wrong layout moves interior codes by a step
 * or more and fails the first rule; an inflated scale with codes not fitted to it fails the third.
 * Blockwise int only (per-channel experts have no search). The round-to-nearest twin is quant/'s
 * encoder: this bound trusts it, the strict bound (which every RTN export meets) does not. */
static bool searched_block_ok(const venc *e, const float *x, int64_t K, int64_t n, int64_t b)
{
    int bs = e->block_size, bits = e->bits, qmax = (1 << bits) - 1;
    if (e->kind != VENC_INT || bs < 16 || bs > 256 || (bs & (bs - 1)))
        return false;
    qb_params p = {.bits = bits, .block_size = bs, .symmetric = e->zero_points == NULL,
                   .scale_type = e->elem_type == ONNX_FLOAT16    ? QSCALE_F16
                                 : e->elem_type == ONNX_BFLOAT16 ? QSCALE_BF16
                                                                 : QSCALE_F32};
    uint8_t codes[256], zps[2] = {0, 0};
    float rs[1];
    uint16_t rh[1];
    void *rscale = p.scale_type == QSCALE_F32 ? (void *)rs : (void *)rh;
    if (qb_quantize_ref(x, 1, bs, &p, codes, rscale, zps, NULL))
        return false; /* a non-finite element */
    int64_t nb = K / bs;
    const uint8_t *row = e->codes + n * (K * bits / 8);
    float s = vx_load_float(e->scales, e->elem_type, (size_t)(n * nb + b));
    float rsv = vx_load_float(rscale, e->elem_type, 0);
    int zp = int_zero_point(e, K, n, b), rzp = p.symmetric ? 1 << (bits - 1) : (bits == 4 ? zps[0] & 0xf : zps[0]);
    double half = 0.5 + ldexp(1.0, bits - 1 - 21), sse = 0.0, sse_rtn = 0.0;
    if (!isfinite(s))
        return false;
    for (int i = 0; i < bs; i++) {
        int64_t k = b * bs + i;
        int q = int_code(row, k, bits), rq = int_code(codes, i, bits);
        double y = (double)(float)((float)(q - zp) * s), ry = (double)(float)((float)(rq - rzp) * rsv);
        double d = (double)x[i] - y, t = s != 0.0f ? d / (double)s : 0.0; /* code units */
        if (s != 0.0f && ((q != 0 && q != qmax && fabs(t) > half) || (q == 0 && t > half) ||
                          (q == qmax && t < -half)))
            return false;
        sse += d * d;
        sse_rtn += ((double)x[i] - ry) * ((double)x[i] - ry);
    }
    return sse <= sse_rtn;
}

/* Does element (n, k)'s strict check fail anywhere in its block? (the reference paths) */
static bool int_block_strict_fails(const venc *e, const float *x, int64_t K, int64_t n, int64_t b,
                                   double ceiling)
{
    int bs = e->block_size;
    double s = stored_scale(e, K, n, b * bs);
    if (ceiling >= 0 && !(s <= ceiling))
        return true;
    for (int64_t k = b * bs; k < (b + 1) * bs; k++) {
        double y, bound;
        if (!isfinite(x[n * K + k]))
            continue;
        venc_element(e, K, n, k, x[n * K + k], &y, &bound);
        if (!isfinite(y) || !(fabs(y - (double)x[n * K + k]) <= bound))
            return true;
    }
    return false;
}

/* A block that fails the strict bound but meets the scale_search rules above. */
static bool int_block_searched(const venc *e, const float *x, int64_t K, int64_t n, int64_t b,
                               double ceiling)
{
    return e->kind == VENC_INT && int_block_strict_fails(e, x, K, n, b, ceiling) &&
           searched_block_ok(e, x + n * K + b * e->block_size, K, n, b);
}

/* A searched block's element: its strict bound, widened to its own error where clipping put it
 * beyond (the rules of searched_block_ok hold for it); the scale is not held to the ceiling. */
static void searched_element(double y, float x, double *bound, bool *scale_bad)
{
    double d = fabs(y - (double)x);
    *bound = d > *bound ? d : *bound;
    *scale_bad = false;
}

bool venc_passes(const float *expected, int64_t N, int64_t K, const venc *e)
{
    if (venc_check(e, N, K, NULL))
        return false;
    int64_t bs = scale_block(e, K);
    double ceiling = -1.0;
    bool searched = false;
    for (int64_t n = 0; n < N; n++) {
        for (int64_t k = 0; k < K; k++) {
            float x = expected[n * K + k];
            if (k % bs == 0 && e->kind != VENC_FLOAT) {
                ceiling = block_scale_ceiling(e, expected + n * K + k, bs);
                searched = int_block_searched(e, expected, K, n, k / bs, ceiling);
            }
            if (!isfinite(x))
                continue;
            double y, bound;
            double y_scale = 0.0;
            bool scale_bad;
            element_checked(e, K, n, k, x, ceiling, &y, &bound, &scale_bad, &y_scale);
            if (searched)
                searched_element(y, x, &bound, &scale_bad);
            if (scale_bad || !isfinite(y) || !(fabs(y - (double)x) <= bound))
                return false;
        }
    }
    return true;
}

static inline void record_element(vstats *st, int64_t n, int64_t k, float x, double y,
                                  double bound, bool scale_bad, double scale, double ceiling)
{
    double d = isfinite(y) ? fabs(y - (double)x) : INFINITY;
    st->n++;
    st->sum_err2 += d * d;
    st->sum_ref2 += (double)x * x;
    st->sum_bound2 += bound * bound;
    if (d > st->max_abs)
        st->max_abs = d;
    /* the common case, without a division: well inside the bound and below the largest ratio
     * seen (the margin keeps the rounded quotient below it too) */
    if (!scale_bad && d < bound * st->max_ratio * 0.999999 && d <= bound)
        return;
    /* NaN-safe: a NaN bound (E8M0 NaN scale) or an Inf over an Inf bound is a violation */
    double ratio = scale_bad ? INFINITY : d == 0 ? 0 : bound > 0 ? d / bound : INFINITY;
    if (ratio != ratio)
        ratio = INFINITY;
    if (ratio > st->max_ratio)
        st->max_ratio = ratio;
    if (!(ratio <= 1.0)) {
        if (st->n_over == 0) {
            st->first_row = n;
            st->first_col = k;
            st->first_expected = x;
            st->first_decoded = y;
            st->first_bound = bound;
            st->first_scale = scale;
            st->first_scale_ceiling = scale_bad ? ceiling : 0.0;
        }
        st->n_over++;
    }
}

int venc_compare_ref(const float *expected, int64_t N, int64_t K, const venc *e, vstats *st,
                     m2o_err *err)
{
    if (venc_check(e, N, K, err))
        return -1;
    int64_t bs = scale_block(e, K);
    double ceiling = -1.0;
    bool searched = false;
    for (int64_t n = 0; n < N; n++) {
        for (int64_t k = 0; k < K; k++) {
            float x = expected[n * K + k];
            if (k % bs == 0 && e->kind != VENC_FLOAT) {
                ceiling = block_scale_ceiling(e, expected + n * K + k, bs);
                searched = int_block_searched(e, expected, K, n, k / bs, ceiling);
            }
            if (!isfinite(x)) {
                st->n_nonfinite++;
                continue;
            }
            double y, bound;
            double scale = 0.0;
            bool scale_bad;
            element_checked(e, K, n, k, x, ceiling, &y, &bound, &scale_bad, &scale);
            if (searched)
                searched_element(y, x, &bound, &scale_bad);
            record_element(st, n, k, x, y, bound, scale_bad, scale, ceiling);
        }
    }
    return 0;
}

void vx_swap_nibbles(const uint8_t *in, size_t nbytes, uint8_t *out)
{
    for (size_t i = 0; i < nbytes; i++)
        out[i] = (uint8_t)((in[i] >> 4) | (in[i] << 4));
}

void vx_halves_from_interleaved(const float *in, int64_t N, int64_t K, float *out)
{
    int64_t h = N / 2;
    for (int64_t i = 0; i < h; i++) {
        memcpy(out + i * K, in + (2 * i) * K, (size_t)K * sizeof(float));
        memcpy(out + (h + i) * K, in + (2 * i + 1) * K, (size_t)K * sizeof(float));
    }
}

void vx_untransposed(const float *in, int64_t N, int64_t K, float *out)
{
    /* out, flat, is in^T [K][N] */
    for (int64_t k = 0; k < K; k++)
        for (int64_t n = 0; n < N; n++)
            out[k * N + n] = in[n * K + k];
}

void vx_anchor_scale_signs(const float *expected, int64_t N, int64_t K, int block_size,
                           int8_t *out)
{
    int64_t nb = K / block_size;
    for (int64_t n = 0; n < N; n++) {
        for (int64_t b = 0; b < nb; b++) {
            const float *blk = expected + n * K + b * block_size;
            float vmin = blk[0], vmax = blk[0];
            for (int i = 1; i < block_size; i++) {
                vmin = blk[i] < vmin ? blk[i] : vmin;
                vmax = blk[i] > vmax ? blk[i] : vmax;
            }
            /* ONNX Runtime's rule: the maximum only when strictly larger in magnitude */
            float anchor = fabsf(vmax) > fabsf(vmin) ? vmax : vmin;
            out[n * nb + b] = (int8_t)(anchor > 0 ? -1 : anchor < 0 ? 1 : 0);
        }
    }
}

/* ---- the fast path: the same arithmetic as venc_element + element_checked, with everything
 * that is constant over a block (scale, zero point, ceiling, bounds) computed once ---- */

/* 2^e for the exponents a float32 can have, and a little beyond. */
static double pow2_of(int e)
{
    static double table[400];
    static bool ready; /* racy first fill writes the same values: harmless */
    if (!ready) {
        for (int i = 0; i < 400; i++)
            table[i] = ldexp(1.0, i - 200);
        ready = true;
    }
    return table[e + 200];
}

static void compare_float_rows(const float *x, int64_t N, int64_t K, const venc *e, vstats *st)
{
    double unit = vx_type_unit(e->elem_type), fl = type_floor(e->elem_type);
    bool f32 = e->elem_type == ONNX_FLOAT;
    for (int64_t n = 0; n < N; n++) {
        for (int64_t k = 0; k < K; k++) {
            float xv = x[n * K + k];
            if (!isfinite(xv)) {
                st->n_nonfinite++;
                continue;
            }
            double y = vx_load_float(e->w, e->elem_type, (size_t)(n * K + k)), b = 0.0;
            if (xv != 0.0f) {
                uint32_t bits;
                memcpy(&bits, &xv, 4);
                int E = (int)((bits >> 23) & 0xff);
                if (E) { /* normal: |x| = 1.f 2^(E-127) */
                    b = unit * pow2_of(E - 127);
                } else {
                    int ex;
                    frexp(fabs((double)xv), &ex);
                    b = ldexp(unit, ex - 1);
                }
            }
            double bound = f32 ? b : (b > fl ? b : fl);
            record_element(st, n, k, xv, y, bound, !float_exact(xv, y, e->elem_type), 0.0, -1.0);
        }
    }
}

/* The fast path's bound of one int element (venc_element's rule with the block constants). */
static inline double int_element_bound(const venc *e, int q, int qmax, float x, double y,
                                       double b_ext, double b_int)
{
    bool extreme = q == 0 || q == qmax;
    double bound = extreme ? b_ext : b_int;
    if (e->any_method && extreme && clipped_toward_zero(x, y) && fabs(y - (double)x) > bound)
        bound = fabs(y - (double)x);
    return bound;
}

static void compare_int_rows(const float *x, int64_t N, int64_t K, const venc *e, vstats *st)
{
    int bits = e->bits, bs = e->block_size, qmax = (1 << bits) - 1;
    int64_t nb = K / bs;
    bool f32 = e->elem_type == ONNX_FLOAT;
    double d = f32 ? ldexp(1.0, -24) : vx_type_unit(e->elem_type);
    double rel_ext = 1.0 + ldexp(1.01 * d, bits), rel_int = 0.5 + ldexp(1.0, bits - 1 - 21);
    if (e->any_method)
        rel_ext = rel_int = any_method_rel(bits, d);
    double rel_tiny = ldexp(1.0 + ldexp(1.0, -20), bits);
    double fl = ldexp(type_floor(e->elem_type), bits - 1);
    for (int64_t n = 0; n < N; n++) {
        const uint8_t *row = e->codes + n * (K * bits / 8);
        for (int64_t b = 0; b < nb; b++) {
            const float *xb = x + n * K + b * bs;
            double ceiling = block_scale_ceiling(e, xb, bs);
            float s = vx_load_float(e->scales, e->elem_type, (size_t)(n * nb + b));
            double sa = fabs((double)s);
            bool bad = ceiling >= 0 && !(sa <= ceiling);
            int zp = int_zero_point(e, K, n, b);
            bool tiny = tiny_scale(s);
            double b_ext = sa * (tiny ? rel_tiny : rel_ext) + fl;
            double b_int = sa * (tiny ? rel_tiny : rel_int) + fl;
            bool fails = bad; /* the strict bound first; a failing block may be a searched one */
            for (int64_t k = b * bs; k < (b + 1) * bs && !fails; k++) {
                int q = int_code(row, k, bits);
                double y = (double)(float)((float)(q - zp) * s);
                fails = isfinite(x[n * K + k]) &&
                        !(fabs(y - (double)x[n * K + k]) <= int_element_bound(e, q, qmax, x[n * K + k], y, b_ext, b_int));
            }
            bool searched = fails && searched_block_ok(e, xb, K, n, b);
            for (int64_t k = b * bs; k < (b + 1) * bs; k++) {
                float xv = x[n * K + k];
                if (!isfinite(xv)) {
                    st->n_nonfinite++;
                    continue;
                }
                int q = bits == 4 ? (row[k >> 1] >> ((k & 1) << 2)) & 0xf : int_code(row, k, bits);
                double y = (double)(float)((float)(q - zp) * s);
                double bound = int_element_bound(e, q, qmax, xv, y, b_ext, b_int);
                bool sbad = bad;
                if (searched)
                    searched_element(y, xv, &bound, &sbad);
                record_element(st, n, k, xv, y, bound, sbad, sa, ceiling);
            }
        }
    }
}

static void compare_mxfp4_rows(const float *x, int64_t N, int64_t K, const venc *e, vstats *st)
{
    const uint8_t *sc = e->scales;
    for (int64_t n = 0; n < N; n++) {
        for (int64_t b = 0; b < K / 32; b++) {
            const float *xb = x + n * K + b * 32;
            double ceiling = block_scale_ceiling(e, xb, 32);
            uint8_t sb = sc[n * (K / 32) + b];
            double scale = sb == 255 ? NAN : ldexp(1.0, (int)sb - 127);
            double cap = ceiling >= 0 && !(scale <= ceiling) && scale == scale ? ceiling / scale
                                                                                : 1.0;
            for (int64_t k = b * 32; k < b * 32 + 32; k++) {
                float xv = x[n * K + k];
                if (!isfinite(xv)) {
                    st->n_nonfinite++;
                    continue;
                }
                uint8_t byte = e->codes[(n * K + k) / 2];
                int c = k % 2 ? byte >> 4 : byte & 0xf;
                double mag = kE2M1[c & 7] * scale;
                double bound = kE2M1HalfGap[c & 7] * scale * (1.0 + 1e-6) * cap;
                record_element(st, n, k, xv, c & 8 ? -mag : mag, bound, false, scale, ceiling);
            }
        }
    }
}

int venc_compare(const float *expected, int64_t N, int64_t K, const venc *e, vstats *st,
                 m2o_err *err)
{
    if (venc_check(e, N, K, err))
        return -1;
    switch (e->kind) {
    case VENC_FLOAT:
        compare_float_rows(expected, N, K, e, st);
        break;
    case VENC_INT:
        compare_int_rows(expected, N, K, e, st);
        break;
    case VENC_MXFP4:
        compare_mxfp4_rows(expected, N, K, e, st);
        break;
    }
    return 0;
}
