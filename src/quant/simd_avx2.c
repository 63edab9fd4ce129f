/* AVX2 (+F16C) versions of the kernels. Each function carries a target attribute and is only
 * called after quant_use_avx2() said the CPU has those instructions. Every one must give the
 * same bytes as its scalar reference (the unit tests check it):
 *   - float steps are the reference's steps in the same order, without FMA (the target has no
 *     "fma", so the compiler cannot fuse v * r + zp);
 *   - roundf (half away from zero) of the clamped t >= 0 is trunc(t) plus 1 when
 *     t - trunc(t) >= 0.5; that difference is exact for every float;
 *   - block min/max may meet +0 and -0 in another order than the scalar scan; only an all-zero
 *     block can see the difference, and there the scalar scan's answer (the first element) is
 *     used. */
#include "quant/quant_internal.h"

#if M2O_HAVE_X86

#include <float.h>
#include <immintrin.h>
#include <pthread.h>
#include <math.h>
#include <string.h>

/* ---- small helpers ---- */

M2O_TARGET_AVX2 static inline float hmin8(__m256 v)
{
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    m = _mm_min_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

M2O_TARGET_AVX2 static inline float hmax8(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

/* Lanes that are NaN or ±inf. */
M2O_TARGET_AVX2 static inline __m256 non_finite_mask(__m256 v)
{
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 inf = _mm256_castsi256_ps(_mm256_set1_epi32(0x7f800000));
    return _mm256_cmp_ps(_mm256_and_ps(v, abs_mask), inf, _CMP_NLT_UQ);
}

/* Sixteen int32 codes (two vectors, values 0..255) to sixteen bytes in order. */
M2O_TARGET_AVX2 static inline __m128i codes16_to_bytes(__m256i a, __m256i b)
{
    __m128i a16 = _mm_packs_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    __m128i b16 = _mm_packs_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
    return _mm_packus_epi16(a16, b16);
}

/* Sixteen bytes holding 4-bit codes to eight bytes, even element in the low nibble. */
M2O_TARGET_AVX2 static inline __m128i nibble_pairs(__m128i bytes)
{
    __m128i x = _mm_or_si128(bytes, _mm_srli_epi16(bytes, 4));
    x = _mm_and_si128(x, _mm_set1_epi16(0x00ff));
    return _mm_packus_epi16(x, x);
}

/* clamp(roundf(t), 0, qmax) with NaN -> 0, like the scalar path. Clamping first changes nothing
 * (roundf is monotonic and 0, qmax are integers) and leaves t >= 0, where roundf(t) is
 * trunc(t) + (t - trunc(t) >= 0.5); that difference is exact. */
M2O_TARGET_AVX2 static inline __m256i round_clamp(__m256 t, __m256 qmax)
{
    t = _mm256_max_ps(t, _mm256_setzero_ps()); /* first operand NaN -> second (0) */
    t = _mm256_min_ps(t, qmax);
    __m256i i = _mm256_cvttps_epi32(t);
    __m256 frac = _mm256_sub_ps(t, _mm256_cvtepi32_ps(i));
    __m256 up = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    return _mm256_sub_epi32(i, _mm256_castps_si256(up)); /* mask is -1 where rounding up */
}

/* ---- blockwise integer quantization ---- */

/* r[i] = min (or max) over the 8 lanes of m[i], for 8 vectors at once. */
M2O_TARGET_AVX2 static inline __m256 hreduce8(const __m256 m[8], bool is_max)
{
#define M2O_RED(a, b) (is_max ? _mm256_max_ps((a), (b)) : _mm256_min_ps((a), (b)))
    __m256 a[4], b[2];
    for (int i = 0; i < 4; i++)
        a[i] = M2O_RED(_mm256_unpacklo_ps(m[2 * i], m[2 * i + 1]),
                       _mm256_unpackhi_ps(m[2 * i], m[2 * i + 1]));
    for (int i = 0; i < 2; i++)
        b[i] = M2O_RED(_mm256_shuffle_ps(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                       _mm256_shuffle_ps(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    return M2O_RED(_mm256_permute2f128_ps(b[0], b[1], 0x20),
                   _mm256_permute2f128_ps(b[0], b[1], 0x31));
#undef M2O_RED
}

/* The scale type's rounding of 8 scales: stores them at dst and returns the stored values as
 * float32 (what the codes are computed from). Same bits as qscale_store for finite input. */
M2O_TARGET_AVX2 static inline __m256 store_scales8(__m256 s, qscale_type t, void *dst)
{
    if (t == QSCALE_F16) {
        __m128i h = _mm256_cvtps_ph(s, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128((__m128i *)dst, h);
        return _mm256_cvtph_ps(h);
    }
    if (t == QSCALE_BF16) {
        /* round to nearest even on the top 16 bits (inputs are finite) */
        __m256i u = _mm256_castps_si256(s);
        __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
        __m256i r = _mm256_srli_epi32(
            _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
        __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(r),
                                          _mm256_extracti128_si256(r, 1));
        _mm_storeu_si128((__m128i *)dst, packed);
        return _mm256_castsi256_ps(_mm256_slli_epi32(r, 16));
    }
    _mm256_storeu_ps((float *)dst, s);
    return s;
}

/* Codes of one block of bs values from its reciprocal scale r and zero point z. */
M2O_TARGET_AVX2 static inline void quantize_block(const float *v, int bs, int bits, __m256 r,
                                                  __m256 z, __m256 qmax, uint8_t *dst)
{
    for (int i = 0; i < bs; i += 16) {
        __m256 t0 = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(v + i), r), z);
        __m256 t1 = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(v + i + 8), r), z);
        __m128i q = codes16_to_bytes(round_clamp(t0, qmax), round_clamp(t1, qmax));
        if (bits == 8)
            _mm_storeu_si128((__m128i *)(dst + i), q);
        else
            _mm_storel_epi64((__m128i *)(dst + i / 2), nibble_pairs(q));
    }
}

/* Symmetric quantization of blocks [g0, g1) of the matrix seen as one run of blocks (block g
 * is values g*bs.., scale g, codes g*bs*bits/8..), eight blocks at a time: their min/max
 * reductions, anchors, scale rounding and reciprocals are computed side by side in vectors.
 * Returns the first block of a group holding a non-finite value (the caller lets the
 * reference name it), or g1 when all is done. */
M2O_TARGET_AVX2 static int64_t qb_symmetric_groups(const float *w, int64_t g0, int64_t g1,
                                                   const qb_params *p, uint8_t *codes,
                                                   void *scales)
{
    const int bs = p->block_size, bits = p->bits;
    const size_t ssize = qscale_size(p->scale_type), cbytes = (size_t)bs * bits / 8;
    const __m256 qmax = _mm256_set1_ps((float)((1 << bits) - 1));
    const __m256 zp = _mm256_set1_ps((float)(1 << (bits - 1)));
    const __m256 inv_half = _mm256_set1_ps(-1.0f / (float)(1 << (bits - 1))); /* exact */
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    int64_t g = g0;
    for (; g + 8 <= g1; g += 8) {
        const float *v = w + g * bs;
        __m256 mn[8], mx[8], bad = zero;
        for (int j = 0; j < 8; j++) {
            const float *b = v + j * bs;
            __m256 x = _mm256_loadu_ps(b);
            mn[j] = mx[j] = x;
            bad = _mm256_or_ps(bad, non_finite_mask(x));
            for (int i = 8; i < bs; i += 8) {
                x = _mm256_loadu_ps(b + i);
                mn[j] = _mm256_min_ps(mn[j], x);
                mx[j] = _mm256_max_ps(mx[j], x);
                bad = _mm256_or_ps(bad, non_finite_mask(x));
            }
        }
        if (_mm256_movemask_ps(bad))
            return g;
        __m256 vmin = hreduce8(mn, false), vmax = hreduce8(mx, true);
        /* anchor = |max| > |min| ? max : min; -anchor / 2^(bits-1) is exact as a product */
        __m256 take_max = _mm256_cmp_ps(_mm256_and_ps(vmax, abs_mask),
                                        _mm256_and_ps(vmin, abs_mask), _CMP_GT_OQ);
        __m256 anchor = _mm256_blendv_ps(vmin, vmax, take_max);
        /* A block of zeros only: the scalar scan anchors on its first element's sign. */
        __m256 all_zero = _mm256_and_ps(_mm256_cmp_ps(vmin, zero, _CMP_EQ_OQ),
                                        _mm256_cmp_ps(vmax, zero, _CMP_EQ_OQ));
        int zmask = _mm256_movemask_ps(all_zero);
        if (zmask) {
            float a[8];
            _mm256_storeu_ps(a, anchor);
            for (int j = 0; j < 8; j++)
                if (zmask >> j & 1)
                    a[j] = v[j * bs];
            anchor = _mm256_loadu_ps(a);
        }
        __m256 scale = _mm256_mul_ps(anchor, inv_half);
        __m256 stored = store_scales8(scale, p->scale_type, (uint8_t *)scales + (size_t)g * ssize);
        __m256 nz = _mm256_cmp_ps(stored, zero, _CMP_NEQ_UQ);
        __m256 recip = _mm256_and_ps(_mm256_div_ps(one, stored), nz);
        float r[8];
        _mm256_storeu_ps(r, recip);
        for (int j = 0; j < 8; j++)
            quantize_block(v + j * bs, bs, bits, _mm256_set1_ps(r[j]), zp, qmax,
                           codes + (size_t)(g + j) * cbytes);
    }
    return g;
}

M2O_TARGET_AVX2 int qb_quantize_rows_avx2(const float *w, int64_t r0, int64_t r1, int64_t K,
                                          const qb_params *p, uint8_t *codes, void *scales,
                                          uint8_t *zero_points, m2o_err *err)
{
    if (p->symmetric && r1 > r0) {
        /* rows are contiguous, so their blocks are one run; leftovers (< 8 blocks, or a group
         * with a non-finite value) go through the per-block loop below, row by row */
        const int64_t blocks = K / p->block_size, g1 = r1 * blocks;
        int64_t g = qb_symmetric_groups(w, r0 * blocks, g1, p, codes, scales);
        int64_t first_row = g / blocks;
        if (first_row >= r1)
            return 0;
        r0 = first_row; /* redo from the start of that row: same bytes, simpler bookkeeping */
    }
    const int bs = p->block_size, bits = p->bits;
    const int64_t blocks = K / bs, row_bytes = K * bits / 8;
    const int64_t zrow_bytes = bits == 4 ? (blocks + 1) / 2 : blocks;
    const __m256 qmax = _mm256_set1_ps((float)((1 << bits) - 1));
    for (int64_t n = r0; n < r1; n++) {
        const float *wr = w + n * K;
        uint8_t *crow = codes + n * row_bytes;
        uint8_t *zrow = p->symmetric ? NULL : zero_points + n * zrow_bytes;
        if (zrow) /* pad nibble of an odd block count: 8, as ONNX Runtime leaves it */
            memset(zrow, bits == 4 ? 0x88 : 0, (size_t)zrow_bytes);
        for (int64_t b = 0; b < blocks; b++) {
            const float *v = wr + b * bs;
            __m256 vmin = _mm256_set1_ps(FLT_MAX), vmax = _mm256_set1_ps(-FLT_MAX);
            __m256 bad = _mm256_setzero_ps();
            for (int i = 0; i < bs; i += 8) {
                __m256 x = _mm256_loadu_ps(v + i);
                vmin = _mm256_min_ps(vmin, x);
                vmax = _mm256_max_ps(vmax, x);
                bad = _mm256_or_ps(bad, non_finite_mask(x));
            }
            if (_mm256_movemask_ps(bad)) /* let the reference name the bad element */
                return qb_quantize_rows_ref(w, n, n + 1, K, p, codes, scales, zero_points, err);
            float mn = hmin8(vmin), mx = hmax8(vmax);
            if (mn == 0.0f && mx == 0.0f)
                mn = mx = v[0];
            uint8_t zp;
            float scale = qb_block_params(mn, mx, p, &zp);
            float stored = qscale_store(scales, p->scale_type, n * blocks + b, scale);
            float recip = stored != 0.0f ? 1.0f / stored : 0.0f;
            if (zrow && bits == 8)
                zrow[b] = zp;
            else if (zrow)
                zrow[b / 2] = (uint8_t)(b % 2 ? (zrow[b / 2] & 0x0f) | (zp << 4)
                                              : (zrow[b / 2] & 0xf0) | zp);
            const __m256 r = _mm256_set1_ps(recip), z = _mm256_set1_ps((float)zp);
            uint8_t *dst = crow + b * bs * bits / 8;
            for (int i = 0; i < bs; i += 16) {
                __m256 t0 = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(v + i), r), z);
                __m256 t1 = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(v + i + 8), r), z);
                __m128i q = codes16_to_bytes(round_clamp(t0, qmax), round_clamp(t1, qmax));
                if (bits == 8)
                    _mm_storeu_si128((__m128i *)(dst + i), q);
                else
                    _mm_storel_epi64((__m128i *)(dst + i / 2), nibble_pairs(q));
            }
        }
    }
    return 0;
}

/* ---- CUTLASS SM80 pack ---- */

/* Every 16-byte group of a packed 64-element run comes from the same 16-byte group of the
 * source run (the tile permutation and the in-word reorder both stay inside it), and so does
 * the inverse. So one in-lane byte shuffle per group does the 8-bit case; the 4-bit case picks
 * each output nibble from the source's low or high nibbles with two shuffles and a blend. */
typedef struct run_masks {
    __m256i idx8[2];            /* 8-bit: shuffle for bytes 0..31 and 32..63 of a run */
    __m256i lo_idx, lo_from_hi; /* 4-bit: output low nibbles */
    __m256i hi_idx, hi_from_hi; /* 4-bit: output high nibbles */
} run_masks;

static run_masks g_pack_masks, g_unpack_masks;
static pthread_once_t g_masks_once = PTHREAD_ONCE_INIT;

/* src4 / src8: output slot j of a run takes source element src[j]. */
static void masks_from_tables(const uint8_t *src4, const uint8_t *src8, run_masks *m)
{
    uint8_t idx8[64], lo[32], lo_h[32], hi[32], hi_h[32];
    for (int j = 0; j < 64; j++)
        idx8[j] = (uint8_t)(src8[j] % 16);
    for (int b = 0; b < 32; b++) {
        /* Output byte b = nibbles 2b (low) and 2b+1 (high); source nibble e is byte e/2 of the
         * run, its low half when e is even. Byte e/2 stays in b's 16-byte group. */
        lo[b] = (uint8_t)((src4[2 * b] / 2) % 16);
        lo_h[b] = src4[2 * b] % 2 ? 0xff : 0;
        hi[b] = (uint8_t)((src4[2 * b + 1] / 2) % 16);
        hi_h[b] = src4[2 * b + 1] % 2 ? 0xff : 0;
    }
    memcpy(&m->idx8[0], idx8, 32);
    memcpy(&m->idx8[1], idx8 + 32, 32);
    memcpy(&m->lo_idx, lo, 32);
    memcpy(&m->lo_from_hi, lo_h, 32);
    memcpy(&m->hi_idx, hi, 32);
    memcpy(&m->hi_from_hi, hi_h, 32);
}

static void build_masks(void)
{
    const uint8_t *s4 = cutlass_run_table(4), *s8 = cutlass_run_table(8);
    uint8_t inv4[64], inv8[64];
    for (int j = 0; j < 64; j++) {
        inv4[s4[j]] = (uint8_t)j;
        inv8[s8[j]] = (uint8_t)j;
    }
    masks_from_tables(s4, s8, &g_pack_masks);
    masks_from_tables(inv4, inv8, &g_unpack_masks);
}

/* Permutes one 64-element run from s to d. */
M2O_TARGET_AVX2 static inline void permute_run(const uint8_t *s, uint8_t *d, int bits,
                                               const run_masks *m)
{
    if (bits == 8) {
        __m256i a = _mm256_loadu_si256((const __m256i *)s);
        __m256i b = _mm256_loadu_si256((const __m256i *)(s + 32));
        _mm256_storeu_si256((__m256i *)d, _mm256_shuffle_epi8(a, m->idx8[0]));
        _mm256_storeu_si256((__m256i *)(d + 32), _mm256_shuffle_epi8(b, m->idx8[1]));
        return;
    }
    const __m256i m0f = _mm256_set1_epi8(0x0f);
    __m256i x = _mm256_loadu_si256((const __m256i *)s);
    __m256i lo = _mm256_and_si256(x, m0f);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), m0f);
    __m256i ol = _mm256_blendv_epi8(_mm256_shuffle_epi8(lo, m->lo_idx),
                                    _mm256_shuffle_epi8(hi, m->lo_idx), m->lo_from_hi);
    __m256i oh = _mm256_blendv_epi8(_mm256_shuffle_epi8(lo, m->hi_idx),
                                    _mm256_shuffle_epi8(hi, m->hi_idx), m->hi_from_hi);
    _mm256_storeu_si256((__m256i *)d, _mm256_or_si256(ol, _mm256_slli_epi16(oh, 4)));
}

/* Rows [r0, r1): raw row n's run kt <-> packed run at ((n/I)*K*I + kt*64*I + (n%I)*64) elements. */
M2O_TARGET_AVX2 static void cutlass_rows_avx2(uint8_t *raw, int64_t r0, int64_t r1, int64_t K,
                                              int bits, uint8_t *packed, bool pack)
{
    pthread_once(&g_masks_once, build_masks);
    const run_masks m = pack ? g_pack_masks : g_unpack_masks;
    const int inter = bits == 4 ? 4 : 2;
    const int64_t row_bytes = K * bits / 8, runs = K / 64, run_bytes = 64 * bits / 8;
    for (int64_t n = r0; n < r1; n++) {
        uint8_t *row = raw + n * row_bytes;
        uint8_t *p = packed + ((n / inter) * (K * inter) + (n % inter) * 64) * bits / 8;
        for (int64_t kt = 0; kt < runs; kt++, p += inter * run_bytes) {
            if (pack)
                permute_run(row + kt * run_bytes, p, bits, &m);
            else
                permute_run(p, row + kt * run_bytes, bits, &m);
        }
    }
}

M2O_TARGET_AVX2 void cutlass_pack_rows_avx2(const uint8_t *raw, int64_t r0, int64_t r1,
                                            int64_t K, int bits, uint8_t *out)
{
    cutlass_rows_avx2((uint8_t *)raw, r0, r1, K, bits, out, true); /* raw is only read */
}

M2O_TARGET_AVX2 void cutlass_unpack_rows_avx2(const uint8_t *packed, int64_t r0, int64_t r1,
                                              int64_t K, int bits, uint8_t *raw)
{
    cutlass_rows_avx2(raw, r0, r1, K, bits, (uint8_t *)packed, false); /* packed is only read */
}

/* ---- fp4 CUDA layout: nibble transpose [N][K/2] -> [K][N/2] ---- */

/* Scalar nibble transpose of rows [n0, n1) x columns [k0, k1) (all even). */
static void fp4_rect_scalar(const uint8_t *in, int64_t N, int64_t K, uint8_t *out, int64_t n0,
                            int64_t n1, int64_t k0, int64_t k1)
{
    const int64_t in_row = K / 2, out_row = N / 2;
    for (int64_t n = n0; n < n1; n += 2) {
        const uint8_t *a = in + n * in_row, *b = a + in_row;
        for (int64_t k = k0; k < k1; k += 2) {
            uint8_t x = a[k / 2], y = b[k / 2];
            out[k * out_row + n / 2] = (uint8_t)((x & 0x0f) | (y << 4));
            out[(k + 1) * out_row + n / 2] = (uint8_t)((x >> 4) | (y & 0xf0));
        }
    }
}

/* 16 x 16 byte transpose (rows r[0..15] in, r[i] becomes column i). */
M2O_TARGET_AVX2 static inline void transpose16x16(__m128i r[16])
{
    __m128i t[16];
    for (int i = 0; i < 8; i++) {
        t[i] = _mm_unpacklo_epi8(r[2 * i], r[2 * i + 1]);
        t[i + 8] = _mm_unpackhi_epi8(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm_unpacklo_epi16(t[2 * i], t[2 * i + 1]);
        r[i + 4] = _mm_unpackhi_epi16(t[2 * i], t[2 * i + 1]);
        r[i + 8] = _mm_unpacklo_epi16(t[8 + 2 * i], t[8 + 2 * i + 1]);
        r[i + 12] = _mm_unpackhi_epi16(t[8 + 2 * i], t[8 + 2 * i + 1]);
    }
    for (int g = 0; g < 4; g++) {
        for (int i = 0; i < 2; i++) {
            t[4 * g + i] = _mm_unpacklo_epi32(r[4 * g + 2 * i], r[4 * g + 2 * i + 1]);
            t[4 * g + i + 2] = _mm_unpackhi_epi32(r[4 * g + 2 * i], r[4 * g + 2 * i + 1]);
        }
    }
    /* t[4g + half + 2h]: rows 8*half..+7 of columns 4g + 2h and 4g + 2h + 1. */
    for (int g = 0; g < 4; g++) {
        for (int h = 0; h < 2; h++) {
            __m128i a = t[4 * g + 2 * h], b = t[4 * g + 2 * h + 1];
            r[4 * g + 2 * h] = _mm_unpacklo_epi64(a, b);
            r[4 * g + 2 * h + 1] = _mm_unpackhi_epi64(a, b);
        }
    }
}

/* Output bytes [k][p0 .. p0+15] for k in k0 .. k0+15, from row pairs p0 .. p0+15. */
M2O_TARGET_AVX2 static inline void fp4_tile16(const uint8_t *raw, int64_t in_row, int64_t out_row,
                                              int64_t p0, int64_t k0, uint8_t *out)
{
    const __m128i m0f = _mm_set1_epi8(0x0f), mf0 = _mm_set1_epi8((char)0xf0);
    __m128i r[16];
    for (int i = 0; i < 16; i++) {
        const uint8_t *a = raw + (2 * (p0 + i)) * in_row + k0 / 2;
        __m128i x = _mm_loadl_epi64((const __m128i *)a);
        __m128i y = _mm_loadl_epi64((const __m128i *)(a + in_row));
        __m128i ev = _mm_or_si128(_mm_and_si128(x, m0f), _mm_and_si128(_mm_slli_epi16(y, 4), mf0));
        __m128i od = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(x, 4), m0f), _mm_and_si128(y, mf0));
        r[i] = _mm_unpacklo_epi8(ev, od); /* byte j = output byte for k0 + j */
    }
    transpose16x16(r);
    for (int i = 0; i < 16; i++)
        _mm_storeu_si128((__m128i *)(out + (k0 + i) * out_row + p0), r[i]);
}

M2O_TARGET_AVX2 void fp4_cuda_pack_avx2(const uint8_t *raw, int64_t N, int64_t K, uint8_t *out)
{
    /* Row pair p (rows 2p, 2p+1) gives output byte [k][p] = nibble k of row 2p (low) and of row
     * 2p+1 (high): build those bytes in k order for 16 pairs x 16 k, then transpose bytes.
     * Blocks of 256 pairs: each step down K writes 16 output rows x 256 bytes (whole lines)
     * while the 512 input rows' current lines stay in L1 for the next 7 steps. (Measured on
     * N = 5760, K = 2880: about 3x faster than finishing 128 k for all pairs first.) */
    const int64_t in_row = K / 2, out_row = N / 2;
    const int64_t P16 = out_row / 16 * 16, K16 = K / 16 * 16;
    for (int64_t pb = 0; pb < P16; pb += 256) {
        int64_t pe = pb + 256 < P16 ? pb + 256 : P16;
        for (int64_t k = 0; k < K16; k += 16)
            for (int64_t p0 = pb; p0 < pe; p0 += 16)
                fp4_tile16(raw, in_row, out_row, p0, k, out);
    }
    if (K16 < K)
        fp4_rect_scalar(raw, N, K, out, 0, 2 * P16, K16, K);
    if (2 * P16 < N)
        fp4_rect_scalar(raw, N, K, out, 2 * P16, N, 0, K);
}

/* ---- float32 transpose ---- */

M2O_TARGET_AVX2 static inline void transpose8x8(const float *src, int64_t ld_src, float *dst,
                                                int64_t ld_dst)
{
    __m256 r[8], t[8];
    for (int i = 0; i < 8; i++)
        r[i] = _mm256_loadu_ps(src + i * ld_src);
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        r[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; i++) {
        _mm256_storeu_ps(dst + i * ld_dst, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
        _mm256_storeu_ps(dst + (i + 4) * ld_dst, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
    }
}

M2O_TARGET_AVX2 void transpose_f32_avx2(const float *src, int64_t rows, int64_t cols, float *dst)
{
    const int64_t T = 64, R8 = rows / 8 * 8, C8 = cols / 8 * 8;
    for (int64_t r0 = 0; r0 < R8; r0 += T) {
        int64_t r1 = r0 + T < R8 ? r0 + T : R8;
        for (int64_t c0 = 0; c0 < C8; c0 += T) {
            int64_t c1 = c0 + T < C8 ? c0 + T : C8;
            for (int64_t r = r0; r < r1; r += 8)
                for (int64_t c = c0; c < c1; c += 8)
                    transpose8x8(src + r * cols + c, cols, dst + c * rows + r, rows);
        }
    }
    for (int64_t r = 0; r < rows; r++) /* right edge */
        for (int64_t c = C8; c < cols; c++)
            dst[c * rows + r] = src[r * cols + c];
    for (int64_t r = R8; r < rows; r++) /* bottom edge */
        for (int64_t c = 0; c < C8; c++)
            dst[c * rows + r] = src[r * cols + c];
}

/* 8 rows x 8 bfloat16 from src (row stride ld_src) to 8 rows x 8 floats of the transpose.
 * Named registers (no arrays) so nothing spills to the stack. */
M2O_TARGET_AVX2 static inline __attribute__((always_inline)) __m256 bf16x8_load(const uint16_t *p)
{
    __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
}

M2O_TARGET_AVX2 static inline __attribute__((always_inline)) void
bf16_transpose8x8(const uint16_t *src, int64_t ld_src, float *dst, int64_t ld_dst)
{
    __m256 r0 = bf16x8_load(src), r1 = bf16x8_load(src + ld_src);
    __m256 r2 = bf16x8_load(src + 2 * ld_src), r3 = bf16x8_load(src + 3 * ld_src);
    __m256 r4 = bf16x8_load(src + 4 * ld_src), r5 = bf16x8_load(src + 5 * ld_src);
    __m256 r6 = bf16x8_load(src + 6 * ld_src), r7 = bf16x8_load(src + 7 * ld_src);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    r0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    r1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    r2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    r3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    r4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    r5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    r6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    r7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(r0, r4, 0x20));
    _mm256_storeu_ps(dst + ld_dst, _mm256_permute2f128_ps(r1, r5, 0x20));
    _mm256_storeu_ps(dst + 2 * ld_dst, _mm256_permute2f128_ps(r2, r6, 0x20));
    _mm256_storeu_ps(dst + 3 * ld_dst, _mm256_permute2f128_ps(r3, r7, 0x20));
    _mm256_storeu_ps(dst + 4 * ld_dst, _mm256_permute2f128_ps(r0, r4, 0x31));
    _mm256_storeu_ps(dst + 5 * ld_dst, _mm256_permute2f128_ps(r1, r5, 0x31));
    _mm256_storeu_ps(dst + 6 * ld_dst, _mm256_permute2f128_ps(r2, r6, 0x31));
    _mm256_storeu_ps(dst + 7 * ld_dst, _mm256_permute2f128_ps(r3, r7, 0x31));
}

M2O_TARGET_AVX2 void convert_bf16_to_f32_transposed_avx2(const uint16_t *src, int64_t ld_src,
                                                         int64_t rows, int64_t cols, float *dst,
                                                         int64_t ld_dst)
{
    const int64_t R8 = rows / 8 * 8, C8 = cols / 8 * 8;
    for (int64_t r = 0; r < R8; r += 8) {
        const uint16_t *s8 = src + r * ld_src;
        for (int64_t c = 0; c < C8; c += 8) {
            if ((c & 31) == 0) /* these 8 source rows, 512 bytes ahead: 8 strided streams */
                for (int i = 0; i < 8; i++)
                    _mm_prefetch((const char *)(s8 + i * ld_src + c + 256), _MM_HINT_T0);
            bf16_transpose8x8(s8 + c, ld_src, dst + c * ld_dst + r, ld_dst);
        }
    }
    for (int64_t r = 0; r < rows; r++) /* right edge */
        for (int64_t c = C8; c < cols; c++)
            dst[c * ld_dst + r] = bf16_to_f32(src[r * ld_src + c]);
    for (int64_t r = R8; r < rows; r++) /* bottom edge */
        for (int64_t c = 0; c < C8; c++)
            dst[c * ld_dst + r] = bf16_to_f32(src[r * ld_src + c]);
}

/* ---- finiteness ---- */

M2O_TARGET_AVX2 int64_t f32_first_nonfinite_avx2(const float *v, size_t n)
{
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 bad = _mm256_or_ps(
            _mm256_or_ps(non_finite_mask(_mm256_loadu_ps(v + i)),
                         non_finite_mask(_mm256_loadu_ps(v + i + 8))),
            _mm256_or_ps(non_finite_mask(_mm256_loadu_ps(v + i + 16)),
                         non_finite_mask(_mm256_loadu_ps(v + i + 24))));
        if (_mm256_movemask_ps(bad))
            break; /* found in this run: the scalar loop below names the element */
    }
    for (; i < n; i++) {
        uint32_t u;
        memcpy(&u, v + i, 4);
        if ((u & 0x7f800000u) == 0x7f800000u)
            return (int64_t)i;
    }
    return -1;
}

/* ---- MXFP4 ---- */

M2O_TARGET_AVX2 int mxfp4_encode_rows_avx2(const float *w, int64_t r0, int64_t r1, int64_t K,
                                           uint8_t *codes, uint8_t *scales, m2o_err *err)
{
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    /* Code = number of thresholds passed; > for ties going down, >= for ties going up (RNE). */
    const __m256 t1 = _mm256_set1_ps(0.25f), t2 = _mm256_set1_ps(0.75f);
    const __m256 t3 = _mm256_set1_ps(1.25f), t4 = _mm256_set1_ps(1.75f);
    const __m256 t5 = _mm256_set1_ps(2.5f), t6 = _mm256_set1_ps(3.5f);
    const __m256 t7 = _mm256_set1_ps(5.0f), zero = _mm256_setzero_ps();
    const __m256i eight = _mm256_set1_epi32(8);
    for (int64_t n = r0; n < r1; n++) {
        for (int64_t b = 0; b < K / 32; b++) {
            const float *v = w + n * K + b * 32;
            __m256 x[4], amax = zero, bad = zero;
            for (int i = 0; i < 4; i++) {
                x[i] = _mm256_loadu_ps(v + 8 * i);
                amax = _mm256_max_ps(amax, _mm256_and_ps(x[i], abs_mask));
                bad = _mm256_or_ps(bad, non_finite_mask(x[i]));
            }
            if (_mm256_movemask_ps(bad))
                return mxfp4_encode_rows_ref(w, n, n + 1, K, codes, scales, err);
            float am = hmax8(amax);
            int e = am == 0.0f ? -127 : ilogbf(am) - 2;
            e = e < -127 ? -127 : (e > 127 ? 127 : e);
            scales[n * (K / 32) + b] = (uint8_t)(e + 127);
            const __m256 inv = _mm256_set1_ps(ldexpf(1.0f, -e)); /* exact power of two */
            __m256i c[4];
            for (int i = 0; i < 4; i++) {
                __m256 s = _mm256_mul_ps(x[i], inv);
                __m256 a = _mm256_and_ps(s, abs_mask);
                __m256i m = _mm256_setzero_si256();
                m = _mm256_sub_epi32(m, _mm256_castps_si256(_mm256_cmp_ps(a, t1, _CMP_GT_OQ)));
                m = _mm256_sub_epi32(m, _mm256_castps_si256(_mm256_cmp_ps(a, t2, _CMP_GE_OQ)));
                m = _mm256_sub_epi32(m, _mm256_castps_si256(_mm256_cmp_ps(a, t3, _CMP_GT_OQ)));
                m = _mm256_sub_epi32(m, _mm256_castps_si256(_mm256_cmp_ps(a, t4, _CMP_GE_OQ)));
                m = _mm256_sub_epi32(m, _mm256_castps_si256(_mm256_cmp_ps(a, t5, _CMP_GT_OQ)));
                m = _mm256_sub_epi32(m, _mm256_castps_si256(_mm256_cmp_ps(a, t6, _CMP_GE_OQ)));
                m = _mm256_sub_epi32(m, _mm256_castps_si256(_mm256_cmp_ps(a, t7, _CMP_GT_OQ)));
                __m256i neg = _mm256_castps_si256(_mm256_cmp_ps(s, zero, _CMP_LT_OQ));
                __m256i nonzero = _mm256_xor_si256(_mm256_cmpeq_epi32(m, _mm256_setzero_si256()),
                                                   _mm256_set1_epi32(-1));
                c[i] = _mm256_or_si256(m, _mm256_and_si256(_mm256_and_si256(neg, nonzero), eight));
            }
            __m128i lo = nibble_pairs(codes16_to_bytes(c[0], c[1]));
            __m128i hi = nibble_pairs(codes16_to_bytes(c[2], c[3]));
            _mm_storeu_si128((__m128i *)(codes + (n * K + b * 32) / 2),
                             _mm_unpacklo_epi64(lo, hi));
        }
    }
    return 0;
}

M2O_TARGET_AVX2 void mxfp4_decode_rows_avx2(const uint8_t *codes, const uint8_t *scales,
                                            int64_t r0, int64_t r1, int64_t K, float *out)
{
    const __m256 table = _mm256_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f);
    const __m128i m0f = _mm_set1_epi8(0x0f);
    const __m256i seven = _mm256_set1_epi32(7), eight = _mm256_set1_epi32(8);
    for (int64_t n = r0; n < r1; n++) {
        for (int64_t b = 0; b < K / 32; b++) {
            uint8_t s = scales[n * (K / 32) + b];
            /* 2^(s-127) as float bits: normal for s >= 1, 2^-127 is the subnormal 0x00400000. */
            uint32_t bits = s == 255 ? 0x7fc00000u : s == 0 ? 0x00400000u : (uint32_t)s << 23;
            const __m256 sc = _mm256_castsi256_ps(_mm256_set1_epi32((int)bits));
            __m128i packed = _mm_loadu_si128((const __m128i *)(codes + (n * K + b * 32) / 2));
            __m128i lo = _mm_and_si128(packed, m0f);
            __m128i hi = _mm_and_si128(_mm_srli_epi16(packed, 4), m0f);
            __m128i seq[2] = {_mm_unpacklo_epi8(lo, hi), _mm_unpackhi_epi8(lo, hi)};
            float *dst = out + n * K + b * 32;
            for (int h = 0; h < 2; h++) {
                __m128i part[2] = {seq[h], _mm_srli_si128(seq[h], 8)};
                for (int q = 0; q < 2; q++) {
                    __m256i c = _mm256_cvtepu8_epi32(part[q]);
                    __m256 mag = _mm256_permutevar8x32_ps(table, _mm256_and_si256(c, seven));
                    __m256i sign = _mm256_slli_epi32(_mm256_and_si256(c, eight), 28);
                    __m256 val = _mm256_xor_ps(mag, _mm256_castsi256_ps(sign));
                    _mm256_storeu_ps(dst + 16 * h + 8 * q, _mm256_mul_ps(val, sc));
                }
            }
        }
    }
}

/* ---- conversions ---- */

M2O_TARGET_AVX2 void convert_bf16_to_f32_avx2(const uint16_t *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
    }
    for (; i < n; i++)
        dst[i] = bf16_to_f32(src[i]);
}

M2O_TARGET_AVX2 void convert_f16_to_f32_avx2(const uint16_t *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++)
        dst[i] = f16_to_f32(src[i]);
}

M2O_TARGET_AVX2 void convert_f32_to_f16_avx2(const float *src, uint16_t *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128((__m128i *)(dst + i), h);
    }
    for (; i < n; i++)
        dst[i] = f32_to_f16(src[i]);
}

M2O_TARGET_AVX2 void convert_f32_to_bf16_avx2(const float *src, uint16_t *dst, size_t n)
{
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1);
    const __m256i quiet = _mm256_set1_epi32(0x40);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i u = _mm256_loadu_si256((const __m256i *)(src + i));
        __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
        __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
        __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(bias, lsb)), 16);
        __m256i nan = _mm256_or_si256(_mm256_srli_epi32(u, 16), quiet);
        __m256i r = _mm256_blendv_epi8(rounded, nan, is_nan);
        __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
        _mm_storeu_si128((__m128i *)(dst + i), packed);
    }
    for (; i < n; i++)
        dst[i] = f32_to_bf16(src[i]);
}

#endif
