/* Error-minimizing blockwise quantization in the *same* formats as the RTN kernel (docs/FORMATS.md §4):
 * the run time only computes (q - zp) * scale, so any scale, zero point and codes are valid and
 * a better choice costs nothing when the model runs. Per block:
 *   1. the RTN result (qb_quantize_rows, the kernel's bytes) is the first candidate, so the
 *      search can never do worse than RTN on a block: a candidate replaces the current best only
 *      when its exact squared error (decoded exactly as qb_dequantize decodes it, with the scale
 *      already rounded to its storage type) is strictly lower;
 *   2. a grid of scales around the RTN one: symmetric tries both signs (the sign picks which end
 *      of [-2^(bits-1), 2^(bits-1) - 1] the anchor uses) times a grid of factors (see
 *      grid_factor; values past the end are clipped); asymmetric tries the same factors of the range with zero points
 *      that keep the minimum, keep the maximum, or centre the window (k_quant-style shrinking);
 *   3. each grid candidate is scored by its least-squares error: with codes fixed, the best scale
 *      is s* = sum(v j) / sum(j^2) (j = q - zp), leaving sum(v^2) - sum(v j)^2 / sum(j^2);
 *   4. the best-scoring candidate (symmetric: of each sign) is refined twice (scale = s*, codes re-rounded) and every step
 *      is checked exactly against the best so far.
 * Deterministic (fixed grid, fixed order, ties keep the earlier candidate) and row-independent,
 * so the multi-threaded entry gives the same bytes as one thread. The scoring of step 3 is where
 * the time goes; its AVX2 twin (search_avx2.c) scores eight candidates at once and gives the same
 * bytes (the unit tests compare both paths). */
#include "quant/quant_internal.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Scale factors tried around the RTN scale: 4-bit 1.10 down to 0.60 in steps of 0.02 (clipping
 * pays off when a level is coarse); 8-bit 1.05 down to 0.80 in steps of 0.01 (the best scale
 * is close to RTN's). */
enum { GRID_STEPS = 26, REFINE_ROUNDS = 2, MAX_BLOCK = 256, MAX_CANDIDATES = 3 * GRID_STEPS };

static float grid_factor(int bits, int i)
{
    return bits == 4 ? 1.10f - 0.02f * (float)i : 1.05f - 0.01f * (float)i;
}

typedef struct block_ctx {
    const float *v;
    int bs, bits;
    float qmax;
    qscale_type st;
} block_ctx;

/* A complete choice for one block: stored (already rounded) scale, zero point, codes. */
typedef struct choice {
    float scale;
    int zp;
    double sse;
    uint8_t q[MAX_BLOCK];
} choice;

/* The scale as its storage type holds it. */
static float round_scale(qscale_type t, float s)
{
    uint16_t h;
    float out;
    return qscale_store(t == QSCALE_F32 ? (void *)&out : (void *)&h, t, 0, s);
}

/* clamp(roundf(v * r + z), 0, qmax) with NaN -> 0, exactly as the RTN kernel rounds: t is
 * clamped first (roundf is monotonic, the bounds are integers), and for t >= 0 roundf(t) is
 * trunc(t) + (t - trunc(t) >= 0.5), that difference being exact. */
static inline int code_of(float v, float r, float z, float qmax)
{
    float t = v * r;
    t = t + z;
    t = t > 0.0f ? t : 0.0f;
    t = t < qmax ? t : qmax;
    int i = (int)t;
    return i + (t - (float)i >= 0.5f);
}

/* Squared error of codes q with scale s and zero point zp, decoded as qb_dequantize does. */
static double exact_sse(const block_ctx *b, const uint8_t *q, float s, int zp)
{
    double sse = 0.0;
    for (int i = 0; i < b->bs; i++) {
        float deq = (float)(q[i] - zp) * s;
        double d = (double)b->v[i] - (double)deq;
        sse += d * d;
    }
    return isfinite(sse) ? sse : HUGE_VAL;
}

/* A stored scale the format can use: not 0, finite, with a finite reciprocal. */
static bool scale_usable(float s)
{
    return s != 0.0f && isfinite(s) && isfinite(1.0f / s);
}

/* Codes of the block for stored scale s and zero point zp; returns false for a scale the
 * format cannot use (0, non-finite, or a non-finite reciprocal). */
static bool code_block(const block_ctx *b, float s, int zp, uint8_t *q)
{
    if (!scale_usable(s))
        return false;
    float r = 1.0f / s, z = (float)zp;
#if M2O_HAVE_X86
    if (quant_use_avx2()) {
        search_codes_avx2(b->v, b->bs, r, z, b->qmax, q);
        return true;
    }
#endif
    for (int i = 0; i < b->bs; i++)
        q[i] = (uint8_t)code_of(b->v[i], r, z, b->qmax);
    return true;
}

/* sum(v j) and sum(j^2) of each candidate c of n: reciprocal scale r[c] and zero point zp[c],
 * codes as code_of gives them, j = code - zp. Float sums in element order, one chain per
 * candidate, so the AVX2 twin (search_sums_avx2: eight candidates per register, each lane still
 * in element order) gives the same floats. */
static void search_sums_ref(const float *v, int bs, float qmax, const float *r, const int *zp,
                            int n, float *vj, int32_t *jj)
{
    for (int c = 0; c < n; c++) {
        float z = (float)zp[c], sum_vj = 0.0f;
        int32_t sum_jj = 0;
        for (int i = 0; i < bs; i++) {
            int j = code_of(v[i], r[c], z, qmax) - zp[c];
            sum_vj += v[i] * (float)j;
            sum_jj += j * j;
        }
        vj[c] = sum_vj;
        jj[c] = sum_jj;
    }
}

/* Least-squares scores of n raw scales s[] with zero points zp[]: sum(v j)^2 / sum(j^2), higher
 * is better (the error after the best rescaling is sum(v^2) minus it); -1 for a scale the format
 * cannot use. Float and int sums: they only rank candidates (the winner is then checked exactly
 * in double), and this is where the search spends its time. */
static void ls_scores(const block_ctx *b, const float *s, const int *zp, int n, double *score)
{
    float r[MAX_CANDIDATES], vj[MAX_CANDIDATES];
    int32_t jj[MAX_CANDIDATES];
    bool usable[MAX_CANDIDATES];
    for (int c = 0; c < n; c++) {
        float stored = round_scale(b->st, s[c]);
        usable[c] = scale_usable(stored);
        r[c] = usable[c] ? 1.0f / stored : 0.0f;
    }
#if M2O_HAVE_X86
    if (quant_use_avx2())
        search_sums_avx2(b->v, b->bs, b->qmax, r, zp, n, vj, jj);
    else
#endif
        search_sums_ref(b->v, b->bs, b->qmax, r, zp, n, vj, jj);
    for (int c = 0; c < n; c++)
        score[c] = usable[c] && jj[c] > 0 ? (double)vj[c] * vj[c] / jj[c] : -1.0;
}

/* The first candidate with the highest score (ties keep the earlier one), or -1 when none
 * scores above 0. */
static int best_candidate(const double *score, int n)
{
    int pick = -1;
    double top = -1.0;
    for (int c = 0; c < n; c++)
        if (score[c] > top) {
            top = score[c];
            pick = c;
        }
    return top > 0.0 ? pick : -1;
}

/* The least-squares scale of codes q at zero point zp, rounded to the storage type. */
static float ls_scale(const block_ctx *b, const uint8_t *q, int zp)
{
    double vj = 0.0, jj = 0.0;
    for (int i = 0; i < b->bs; i++) {
        int j = q[i] - zp;
        vj += (double)b->v[i] * j;
        jj += (double)j * j;
    }
    return jj > 0.0 ? round_scale(b->st, (float)(vj / jj)) : 0.0f;
}

/* Replaces *best by (q, s, zp) when that decodes with strictly lower squared error. */
static void offer(const block_ctx *b, choice *best, const uint8_t *q, float s, int zp)
{
    if (!isfinite(s))
        return;
    double sse = exact_sse(b, q, s, zp);
    if (sse < best->sse) {
        best->sse = sse;
        best->scale = s;
        best->zp = zp;
        memcpy(best->q, q, (size_t)b->bs);
    }
}

/* Offers candidate (s raw, zp) with its own codes, then refines it: keep the codes with their
 * least-squares scale, re-round the codes at that scale, repeat. */
static void offer_refined(const block_ctx *b, choice *best, float s, int zp)
{
    uint8_t q[MAX_BLOCK];
    s = round_scale(b->st, s);
    if (!code_block(b, s, zp, q))
        return;
    offer(b, best, q, s, zp);
    for (int round = 0; round < REFINE_ROUNDS; round++) {
        s = ls_scale(b, q, zp);
        offer(b, best, q, s, zp);
        if (!code_block(b, s, zp, q))
            return;
        offer(b, best, q, s, zp);
    }
}

/* Symmetric: zero point fixed at 2^(bits-1); scale s_rtn = -anchor / 2^(bits-1) sends the anchor
 * to code 0 (2^(bits-1) levels on its side); the opposite sign gives it 2^(bits-1) - 1. The best
 * of each sign is refined. */
static void search_symmetric(const block_ctx *b, choice *best, float s_rtn, int zp)
{
    const float other = -s_rtn * (float)zp / (float)(zp - 1);
    float s[2 * GRID_STEPS];
    int zps[2 * GRID_STEPS];
    double score[2 * GRID_STEPS];
    for (int sign = 0; sign < 2; sign++)
        for (int i = 0; i < GRID_STEPS; i++) {
            s[sign * GRID_STEPS + i] = (sign ? other : s_rtn) * grid_factor(b->bits, i);
            zps[sign * GRID_STEPS + i] = zp;
        }
    ls_scores(b, s, zps, 2 * GRID_STEPS, score);
    for (int sign = 0; sign < 2; sign++) {
        int pick = best_candidate(score + sign * GRID_STEPS, GRID_STEPS);
        if (pick >= 0)
            offer_refined(b, best, s[sign * GRID_STEPS + pick], zp);
    }
}

static int clamp_zp(float z, float qmax)
{
    z = roundf(z);
    return z < 0.0f ? 0 : z > qmax ? (int)qmax : (int)z;
}

/* Asymmetric: range [min(min,0), max(max,0)] shrunk by each grid factor, the window placed to
 * keep the minimum, keep the maximum, or centred (a zero point equal to an earlier one of the
 * same scale is not tried twice). */
static void search_asymmetric(const block_ctx *b, choice *best, float vmin, float vmax)
{
    vmin = vmin < 0.0f ? vmin : 0.0f;
    vmax = vmax > 0.0f ? vmax : 0.0f;
    const float range = vmax - vmin;
    float s[MAX_CANDIDATES];
    int zps[MAX_CANDIDATES], n = 0;
    double score[MAX_CANDIDATES];
    for (int i = 0; i < GRID_STEPS; i++) {
        float si = range * grid_factor(b->bits, i) / b->qmax;
        if (!(si > 0.0f))
            continue;
        const int z[3] = {clamp_zp(-vmin / si, b->qmax), clamp_zp(b->qmax - vmax / si, b->qmax),
                          clamp_zp(0.5f * (b->qmax - (vmin + vmax) / si), b->qmax)};
        for (int c = 0; c < 3; c++) {
            if ((c == 1 && z[1] == z[0]) || (c == 2 && (z[2] == z[0] || z[2] == z[1])))
                continue;
            s[n] = si;
            zps[n++] = z[c];
        }
    }
    ls_scores(b, s, zps, n, score);
    int pick = best_candidate(score, n);
    if (pick >= 0)
        offer_refined(b, best, s[pick], zps[pick]);
}

/* Block b of row n: start from the RTN bytes already written, search, write back the winner. */
static void search_block(const float *v, const qb_params *p, void *scales, int64_t sidx,
                         uint8_t *crow, int64_t k0, uint8_t *zrow, int64_t b)
{
    const int bits = p->bits, bs = p->block_size;
    const block_ctx ctx = {v, bs, bits, (float)((1 << bits) - 1), p->scale_type};
    choice best;
    best.scale = qscale_load(scales, p->scale_type, sidx);
    best.zp = p->symmetric ? 1 << (bits - 1) : qb_get_code(zrow, b, bits);
    for (int i = 0; i < bs; i++)
        best.q[i] = (uint8_t)qb_get_code(crow, k0 + i, bits);
    best.sse = exact_sse(&ctx, best.q, best.scale, best.zp);
    if (best.sse == 0.0)
        return; /* RTN is exact (all zeros, or values already on the grid) */
    const double rtn_sse = best.sse;
    float vmin = v[0], vmax = v[0];
    for (int i = 1; i < bs; i++) {
        vmin = v[i] < vmin ? v[i] : vmin;
        vmax = v[i] > vmax ? v[i] : vmax;
    }
    if (p->symmetric) {
        uint8_t zp;
        float s_rtn = qb_block_params(vmin, vmax, p, &zp);
        search_symmetric(&ctx, &best, s_rtn, zp);
    } else {
        search_asymmetric(&ctx, &best, vmin, vmax);
    }
    if (!(best.sse < rtn_sse))
        return;
    qscale_store(scales, p->scale_type, sidx, best.scale); /* already representable: exact */
    for (int i = 0; i < bs; i++)
        qb_put_code(crow, k0 + i, bits, best.q[i]);
    if (!p->symmetric)
        qb_put_code(zrow, b, bits, (uint8_t)best.zp);
}

static int search_rows(const float *w, int64_t r0, int64_t r1, int64_t K, const qb_params *p,
                       uint8_t *codes, void *scales, uint8_t *zero_points, m2o_err *err)
{
    /* RTN first: it refuses non-finite weights with the usual message and lays out every byte
     * (zero-point padding included) that the search may then improve block by block. */
    if (qb_quantize_rows(w, r0, r1, K, p, codes, scales, zero_points, err))
        return -1;
    const int bs = p->block_size;
    const int64_t blocks = K / bs, row_bytes = K * p->bits / 8;
    const int64_t zrow_bytes = p->bits == 4 ? (blocks + 1) / 2 : blocks;
    for (int64_t n = r0; n < r1; n++) {
        uint8_t *zrow = p->symmetric ? NULL : zero_points + n * zrow_bytes;
        for (int64_t b = 0; b < blocks; b++)
            search_block(w + n * K + b * bs, p, scales, n * blocks + b, codes + n * row_bytes,
                         b * bs, zrow, b);
    }
    return 0;
}

static int search_range(void *ctx, int64_t r0, int64_t r1, m2o_err *err)
{
    const qb_job *j = ctx;
    return search_rows(j->w, r0, r1, j->K, j->p, j->codes, j->scales, j->zero_points, err);
}

int qb_quantize_search_mt(const float *w, int64_t N, int64_t K, const qb_params *p,
                          uint8_t *codes, void *scales, uint8_t *zero_points, int nthreads,
                          m2o_err *err)
{
    if (qb_check(N, K, p, err))
        return -1;
    if (!w || !codes || !scales || (!p->symmetric && !zero_points))
        return m2o_fail(err, "blockwise quantization (search): %s buffer is NULL",
                        !w ? "weight" : !codes ? "codes" : !scales ? "scales" : "zero_points");
    qb_job j = {w, K, p, codes, scales, zero_points};
    return quant_parallel_for(N, 1, nthreads, search_range, &j, err);
}

int qb_quantize_search(const float *w, int64_t N, int64_t K, const qb_params *p, uint8_t *codes,
                       void *scales, uint8_t *zero_points, m2o_err *err)
{
    return qb_quantize_search_mt(w, N, K, p, codes, scales, zero_points, 1, err);
}

int qb_quantize_method_mt(const float *w, int64_t N, int64_t K, const qb_params *p,
                          qb_method method, uint8_t *codes, void *scales, uint8_t *zero_points,
                          int nthreads, m2o_err *err)
{
    if (method == QB_METHOD_RTN)
        return qb_quantize_mt(w, N, K, p, codes, scales, zero_points, nthreads, err);
    if (method == QB_METHOD_SEARCH)
        return qb_quantize_search_mt(w, N, K, p, codes, scales, zero_points, nthreads, err);
    return m2o_fail(err, "blockwise quantization: method %d is not one of rtn (0), search (1)",
                    (int)method);
}

int qb_quant_error(const float *w, const uint8_t *codes, const void *scales,
                   const uint8_t *zero_points, int64_t N, int64_t K, const qb_params *p,
                   qb_error *out, m2o_err *err)
{
    if (qb_check(N, K, p, err))
        return -1;
    if (!w || !codes || !scales || !out || (!p->symmetric && !zero_points))
        return m2o_fail(err, "blockwise quantization error: a buffer is NULL");
    const int64_t blocks = K / p->block_size, row_bytes = K * p->bits / 8;
    const int64_t zrow_bytes = p->bits == 4 ? (blocks + 1) / 2 : blocks;
    const size_t ssize = qscale_size(p->scale_type);
    float *row = m2o_calloc((size_t)K, sizeof *row, err);
    if (!row)
        return -1;
    *out = (qb_error){0};
    for (int64_t n = 0; n < N; n++) {
        const uint8_t *zrow = p->symmetric ? NULL : zero_points + n * zrow_bytes;
        if (qb_dequantize(codes + n * row_bytes, (const uint8_t *)scales + n * blocks * ssize,
                          zrow, 1, K, p, row, err)) {
            free(row);
            return -1;
        }
        for (int64_t k = 0; k < K; k++) {
            double x = w[n * K + k], d = x - (double)row[k];
            out->sse += d * d;
            out->sum_sq += x * x;
            out->max_abs_err = fabs(d) > out->max_abs_err ? fabs(d) : out->max_abs_err;
        }
    }
    out->count = N * K;
    free(row);
    return 0;
}

double qb_relative_rmse(const qb_error *e)
{
    return e->sum_sq > 0.0 ? sqrt(e->sse / e->sum_sq) : (e->sse > 0.0 ? HUGE_VAL : 0.0);
}
