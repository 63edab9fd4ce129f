/* AVX2 twin of search_sums_ref (search.c): eight candidates in the eight lanes of a register, each
 * lane running the reference's steps for its candidate in the reference's element order, so every
 * float sum is the same float (no FMA in the target; clamping as the reference: max(t, 0) sends
 * NaN to 0 like `t > 0 ? t : 0`, min(t, qmax) is `t < qmax ? t : qmax`). Called only when
 * quant_use_avx2(). */
#include "quant/quant_internal.h"

#if M2O_HAVE_X86

#include <immintrin.h>

/* code_of for eight (r, z) pairs at once, minus the zero points: j = code - zp as int32. */
M2O_TARGET_AVX2 static inline __m256i codes_minus_zp(__m256 v, __m256 r, __m256 z, __m256i zp,
                                                     __m256 qmax)
{
    __m256 t = _mm256_add_ps(_mm256_mul_ps(v, r), z);
    t = _mm256_min_ps(_mm256_max_ps(t, _mm256_setzero_ps()), qmax);
    __m256i i = _mm256_cvttps_epi32(t);
    __m256 frac = _mm256_sub_ps(t, _mm256_cvtepi32_ps(i));
    __m256i up = _mm256_castps_si256(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ));
    i = _mm256_sub_epi32(i, up); /* the mask is -1 where rounding goes up */
    return _mm256_sub_epi32(i, zp);
}

/* Candidate lanes [c0, c0 + 8): reciprocals, zero points (int and float); lanes past n are
 * padded with r = 0, zp = 0, and their sums are not stored. */
typedef struct group8 {
    __m256 r, zf;
    __m256i zi;
    __m256 vj;
    __m256i jj;
} group8;

M2O_TARGET_AVX2 static inline group8 group_load(const float *r, const int *zp, int c0, int n)
{
    float rl[8] = {0};
    int32_t zl[8] = {0};
    for (int l = 0; l < 8 && c0 + l < n; l++) {
        rl[l] = r[c0 + l];
        zl[l] = zp[c0 + l];
    }
    group8 g;
    g.r = _mm256_loadu_ps(rl);
    g.zi = _mm256_loadu_si256((const __m256i *)zl);
    g.zf = _mm256_cvtepi32_ps(g.zi);
    g.vj = _mm256_setzero_ps();
    g.jj = _mm256_setzero_si256();
    return g;
}

/* One element x into every lane's sums: vj += x * j, jj += j * j. */
M2O_TARGET_AVX2 static inline void group_step(group8 *g, __m256 x, __m256 qmax)
{
    const __m256i j = codes_minus_zp(x, g->r, g->zf, g->zi, qmax);
    g->vj = _mm256_add_ps(g->vj, _mm256_mul_ps(x, _mm256_cvtepi32_ps(j)));
    g->jj = _mm256_add_epi32(g->jj, _mm256_mullo_epi32(j, j));
}

M2O_TARGET_AVX2 static inline void group_store(const group8 *g, int c0, int n, float *vj,
                                               int32_t *jj)
{
    float out_vj[8];
    int32_t out_jj[8];
    _mm256_storeu_ps(out_vj, g->vj);
    _mm256_storeu_si256((__m256i *)out_jj, g->jj);
    for (int l = 0; l < 8 && c0 + l < n; l++) {
        vj[c0 + l] = out_vj[l];
        jj[c0 + l] = out_jj[l];
    }
}

/* Two groups per pass over the block: each lane's float sum is one chain of dependent adds,
 * so a second independent group fills the time the first waits on its adds. */
M2O_TARGET_AVX2 void search_sums_avx2(const float *v, int bs, float qmax, const float *r, const int *zp, int n,
                      float *vj, int32_t *jj)
{
    const __m256 qv = _mm256_set1_ps(qmax);
    for (int c0 = 0; c0 < n; c0 += 16) {
        group8 a = group_load(r, zp, c0, n), b = group_load(r, zp, c0 + 8, n);
        for (int i = 0; i < bs; i++) {
            const __m256 x = _mm256_set1_ps(v[i]);
            group_step(&a, x, qv);
            group_step(&b, x, qv);
        }
        group_store(&a, c0, n, vj, jj);
        group_store(&b, c0 + 8, n, vj, jj);
    }
}

/* Codes of one block (bs a multiple of 8, as every block size is) at reciprocal r, zero point z. */
M2O_TARGET_AVX2 void search_codes_avx2(const float *v, int bs, float r, float z, float qmax, uint8_t *q)
{
    const __m256 rv = _mm256_set1_ps(r), zv = _mm256_set1_ps(z), qv = _mm256_set1_ps(qmax);
    const __m256i zero = _mm256_setzero_si256();
    for (int i = 0; i < bs; i += 8) {
        int32_t c[8];
        __m256i code = codes_minus_zp(_mm256_loadu_ps(v + i), rv, zv, zero, qv);
        _mm256_storeu_si256((__m256i *)c, code);
        for (int l = 0; l < 8; l++)
            q[i + l] = (uint8_t)c[l];
    }
}

#endif
