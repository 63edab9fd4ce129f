/* AVX2 version of qerr_lanes_add (quant/qerr_internal.h): the same lanes, the same operations,
 * four at a time. Called only when quant_use_avx2(). */
#include <immintrin.h>
#include <stdbool.h>
#include <string.h>

#include "quant/qerr_internal.h"
#include "quant/quant_internal.h"

/* The eight lanes in registers: [0] lanes 0-3, [1] lanes 4-7. */
typedef struct lanes8 {
    __m256d e[2], r[2], m[2];
} lanes8;

M2O_TARGET_AVX2 static inline lanes8 lanes_load(const qerr_lanes *l)
{
    lanes8 v;
    for (int h = 0; h < 2; h++) {
        v.e[h] = _mm256_loadu_pd(l->e + 4 * h);
        v.r[h] = _mm256_loadu_pd(l->r + 4 * h);
        v.m[h] = _mm256_loadu_pd(l->m + 4 * h);
    }
    return v;
}

M2O_TARGET_AVX2 static inline void lanes_store(qerr_lanes *l, const lanes8 *v)
{
    for (int h = 0; h < 2; h++) {
        _mm256_storeu_pd(l->e + 4 * h, v->e[h]);
        _mm256_storeu_pd(l->r + 4 * h, v->r[h]);
        _mm256_storeu_pd(l->m + 4 * h, v->m[h]);
    }
}

/* Eight elements: x[j] and y[j] to lane j. */
M2O_TARGET_AVX2 static inline void lanes_step(lanes8 *v, __m256 x, __m256 y)
{
    const __m256d abs_mask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffLL));
    for (int h = 0; h < 2; h++) {
        __m256d xd = _mm256_cvtps_pd(h ? _mm256_extractf128_ps(x, 1) : _mm256_castps256_ps128(x));
        __m256d yd = _mm256_cvtps_pd(h ? _mm256_extractf128_ps(y, 1) : _mm256_castps256_ps128(y));
        __m256d d = _mm256_sub_pd(yd, xd);
        v->e[h] = _mm256_add_pd(v->e[h], _mm256_mul_pd(d, d));
        v->r[h] = _mm256_add_pd(v->r[h], _mm256_mul_pd(xd, xd));
        /* max(m, |d|) keeping m on ties, as the portable `a > m ? a : m` */
        v->m[h] = _mm256_max_pd(_mm256_and_pd(d, abs_mask), v->m[h]);
    }
}

M2O_TARGET_AVX2 void qerr_lanes_add_avx2(qerr_lanes *l, const float *x, const float *y,
                                         int64_t len)
{
    lanes8 v = lanes_load(l);
    for (int64_t i = 0; i < len; i += QERR_LANES)
        lanes_step(&v, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i));
    lanes_store(l, &v);
}

/* One block of bs values (bs % 8 == 0) of 4- or 8-bit codes starting at byte `codes`, decoded
 * as (float)(q - zp) * s and added to the lanes in qerr_lanes_add's order. False, with nothing
 * added, when x holds a NaN or Inf (the caller then goes element by element). */
M2O_TARGET_AVX2 bool qerr_int_block_avx2(qerr_lanes *l, const float *x, const uint8_t *codes,
                                         int64_t bs, int bits, int zp, float s)
{
    const __m256i expo = _mm256_set1_epi32(0x7f800000);
    __m256i any = _mm256_setzero_si256();
    for (int64_t i = 0; i < bs; i += 8) {
        __m256i b = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(const void *)(x + i)),
                                     expo);
        any = _mm256_or_si256(any, _mm256_cmpeq_epi32(b, expo));
    }
    if (!_mm256_testz_si256(any, any))
        return false;
    lanes8 v = lanes_load(l);
    const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    const __m256i zpv = _mm256_set1_epi32(zp), nib = _mm256_set1_epi32(0xf);
    const __m256 sv = _mm256_set1_ps(s);
    for (int64_t i = 0; i < bs; i += 8) {
        __m256i q;
        if (bits == 4) {
            uint32_t word;
            memcpy(&word, codes + i / 2, 4);
            q = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)word), shifts), nib);
        } else {
            q = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(codes + i)));
        }
        __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q, zpv)), sv);
        lanes_step(&v, _mm256_loadu_ps(x + i), y);
    }
    lanes_store(l, &v);
    return true;
}
