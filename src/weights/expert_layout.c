/* The expert source layouts (weights/sources.h, docs/FORMATS.md §3): one table of functions per
 * expert_src_kind, chosen once by expert_layout_of. Each yields an expert's rows (or, input-major,
 * panels of source rows) as float32, and knows where its bytes are for read-ahead,
 * release-behind and for naming the checkpoint element behind a refused value. */
#include <string.h>

#include "weights/experts_internal.h"
#include "weights/nonfinite.h"

int64_t expert_band_rows(int64_t N, int64_t K)
{
    int64_t r = ((int64_t)512 << 10) / (K * (int64_t)sizeof(float)) / 8 * 8;
    r = r < 8 ? 8 : r > 64 ? 64 : r;
    return r < N ? r : N;
}

/* ---- readers shared by the layouts ---- */

static int report_nonfinite(const st_tensor *t, int64_t index, float v, m2o_err *err)
{
    return check_finite(&v, 1, index, t->name, false, err);
}

/* Rows [r0, r0 + nr) of an [rows, K] tensor region starting at element `base`, as float32. */
static int read_nk_rows(const st_tensor *t, int64_t base, int64_t r0, int64_t nr, int64_t K,
                        float *out, bool allow, m2o_err *err)
{
    int64_t first = base + r0 * K;
    if (tensor_read_f32(t, first, nr * K, out, err))
        return -1;
    int64_t bad = allow ? -1 : f32_first_nonfinite(out, (size_t)(nr * K));
    return bad < 0 ? 0 : report_nonfinite(t, first + bad, out[bad], err);
}

/* Band rows [n0, n0 + nr) (n0, nr even) of a matrix whose gate rows come from g (rows
 * n0/2 ..) and up rows from u, interleaved: gate0, up0, gate1, up1, ... */
static int read_interleaved(const st_tensor *g, int64_t gbase, const st_tensor *u,
                            int64_t ubase, int64_t n0, int64_t nr, int64_t K, float *out,
                            bool allow, m2o_err *err)
{
    for (int64_t i = 0; i < nr / 2; i++) {
        int64_t h = n0 / 2 + i;
        if (read_nk_rows(g, gbase, h, 1, K, out + (2 * i) * K, allow, err) ||
            read_nk_rows(u, ubase, h, 1, K, out + (2 * i + 1) * K, allow, err))
            return -1;
    }
    return 0;
}

/* Elements [first, first + count) of t, as bytes: read-ahead and release of a whole expert. */
static void ahead_elems(const st_tensor *t, int64_t first, int64_t count)
{
    size_t es = st_dtype_size(t->dtype);
    wt_read_ahead(t, (size_t)first * es, (size_t)count * es);
}

static bool halves_fused(const expert_src *s, int64_t e)
{
    (void)e;
    return s->interleave;
}

/* ---- EXPERT_MXFP4: blocks [E, N, K/32, 16] + E8M0 scales [E, N, K/32] (FORMATS §7) ---- */

static int mxfp4_dtypes(const expert_src *s, m2o_err *err) { return (void)s, (void)err, 0; }

static int mxfp4_band(const expert_src *s, int64_t e, int64_t n0, int64_t nr, float *out,
                      bool allow, m2o_err *err)
{
    (void)allow; /* codes are finite; NaN comes only from scale byte 255, checked per expert */
    int64_t nk = s->N * s->K;
    if (mxfp4_decode(s->t->data + (size_t)((e * nk + n0 * s->K) / 2),
                     s->scales->data + (size_t)((e * nk + n0 * s->K) / 32), nr, s->K, out, err))
        return m2o_wrap(err, "decoding %s expert %lld", s->what, (long long)e);
    return 0;
}

static void mxfp4_ahead(const expert_src *s, int64_t e)
{
    int64_t nk = s->N * s->K;
    wt_read_ahead(s->t, (size_t)(e * nk / 2), (size_t)(nk / 2));
    wt_read_ahead(s->scales, (size_t)(e * nk / 32), (size_t)(nk / 32));
}

static void mxfp4_release(const expert_src *s, int64_t e)
{
    int64_t nk = s->N * s->K;
    wt_release(s->t, (size_t)(e * nk / 2), (size_t)(nk / 2));
    wt_release(s->scales, (size_t)(e * nk / 32), (size_t)(nk / 32));
}

static void mxfp4_reader(const expert_src *s, int64_t e, wt_reader *r)
{
    int64_t nk = s->N * s->K;
    wt_reader_add(r, s->t, (size_t)(e * nk / 2), (size_t)s->K / 2);
    wt_reader_add(r, s->scales, (size_t)(e * nk / 32), (size_t)s->K / 32);
}

static const st_tensor *mxfp4_element(const expert_src *s, int64_t e, int64_t n, int64_t k,
                                      int64_t *index)
{
    *index = (e * s->N + n) * s->K + k;
    return s->t;
}

/* A scale byte of 255 is E8M0's NaN and makes its block NaN; codes are always finite. */
static int mxfp4_check(const expert_src *s, int64_t e, bool allow, const char *format,
                       m2o_err *err)
{
    size_t n = (size_t)(s->N * s->K / 32);
    return check_e8m0_scales(s->scales->data + (size_t)e * n, n, (int64_t)((size_t)e * n),
                             s->scales->name, format, allow, err);
}

/* MXFP4 checkpoint → MXFP4 op: the codes are only transposed to the CUDA layout (FORMATS §6)
 * and the scale bytes copied. */
static int mxfp4_passthrough(const expert_src *s, int64_t e, uint8_t *weights, uint8_t *scales,
                             bool allow, m2o_err *err)
{
    int64_t nk = s->N * s->K;
    int rc = scales ? mxfp4_check(s, e, allow, NULL, err) : 0;
    if (!rc && weights)
        rc = fp4_cuda_pack(s->t->data + (size_t)(e * nk / 2), s->N, s->K, weights, err);
    if (!rc && scales)
        memcpy(scales, s->scales->data + (size_t)(e * nk / 32), (size_t)(nk / 32));
    mxfp4_release(s, e);
    return rc;
}

/* ---- one float tensor [E, ...]: FUSED_KN and FUSED_NK share dtypes, read-ahead, release ---- */

static int fused_dtypes(const expert_src *s, m2o_err *err) { return require_float(s->t, err); }

static void fused_ahead(const expert_src *s, int64_t e)
{
    ahead_elems(s->t, e * s->N * s->K, s->N * s->K);
}

static void fused_release(const expert_src *s, int64_t e)
{
    wt_release_elems(s->t, e * s->N * s->K, s->N * s->K);
}

/* ---- EXPERT_FUSED_KN: [E, K, N], input-major (gpt-oss BF16) ---- */

/* Expert e's [K, N] block, columns [n0, n0 + nr), as float32 rows [nr][K]. */
static int kn_band(const expert_src *s, int64_t e, int64_t n0, int64_t nr, float *out,
                   bool allow, m2o_err *err)
{
    const st_tensor *t = s->t;
    int64_t N = s->N, K = s->K, base = e * N * K;
    if (base + N * K > t->numel || e < 0)
        return m2o_fail(err, "tensor %s: expert %lld is out of range", t->name, (long long)e);
    const uint8_t *p = t->data + (size_t)(base + n0) * 2;
    if (t->dtype == ST_BF16 && ((uintptr_t)p & 1) == 0) {
        convert_bf16_to_f32_transposed((const uint16_t *)(const void *)p, N, K, nr, out, K);
    } else {
        float row[64]; /* F16/F32 or an odd offset: row by row through the element reader */
        for (int64_t k = 0; k < K; k++)
            for (int64_t c = 0; c < nr; c += 64) {
                int64_t m = nr - c < 64 ? nr - c : 64;
                if (tensor_read_f32(t, base + k * N + n0 + c, m, row, err))
                    return -1;
                for (int64_t j = 0; j < m; j++)
                    out[(c + j) * K + k] = row[j];
            }
    }
    int64_t bad = allow ? -1 : f32_first_nonfinite(out, (size_t)(nr * K));
    if (bad < 0)
        return 0;
    int64_t n = n0 + bad / K, k = bad % K;
    return report_nonfinite(t, base + k * N + n, out[bad], err);
}

/* Source rows [k0, k0 + kp) of expert e's [K, N] block as float32 [N][kp]: each source row is
 * read in order (sequential, unlike a band of N which touches every row). */
static int kn_panel(const expert_src *s, int64_t e, int64_t k0, int64_t kp, float *out,
                    m2o_err *err)
{
    const st_tensor *t = s->t;
    int64_t N = s->N, K = s->K, base = e * N * K;
    if (e < 0 || base + N * K > t->numel)
        return m2o_fail(err, "tensor %s: expert %lld is out of range", t->name, (long long)e);
    const uint8_t *p = t->data + (size_t)(base + k0 * N) * st_dtype_size(t->dtype);
    if (t->dtype == ST_BF16 && ((uintptr_t)p & 1) == 0) {
        convert_bf16_to_f32_transposed((const uint16_t *)(const void *)p, N, kp, N, out, kp);
        return 0;
    }
    float row[64]; /* F16/F32 or an odd offset: through the element reader */
    for (int64_t k = 0; k < kp; k++)
        for (int64_t c = 0; c < N; c += 64) {
            int64_t m = N - c < 64 ? N - c : 64;
            if (tensor_read_f32(t, base + (k0 + k) * N + c, m, row, err))
                return -1;
            for (int64_t j = 0; j < m; j++)
                out[(c + j) * kp + k] = row[j];
        }
    return 0;
}

/* Panels read whole source rows in order: released behind, one source row per unit. (Bands of
 * an input-major expert touch all its pages every time: released only at the end.) */
static void kn_reader(const expert_src *s, int64_t e, wt_reader *r)
{
    size_t es = st_dtype_size(s->t->dtype);
    wt_reader_add(r, s->t, (size_t)(e * s->N * s->K) * es, (size_t)s->N * es);
}

static const st_tensor *kn_element(const expert_src *s, int64_t e, int64_t n, int64_t k,
                                   int64_t *index)
{
    *index = (e * s->K + k) * s->N + n;
    return s->t;
}

/* ---- EXPERT_FUSED_NK: [E, N, K] (Qwen3.5), fc1 as [gate; up] halves when interleave ---- */

static int nk_band(const expert_src *s, int64_t e, int64_t n0, int64_t nr, float *out,
                   bool allow, m2o_err *err)
{
    int64_t N = s->N, K = s->K, nk = N * K;
    if (!s->interleave)
        return read_nk_rows(s->t, e * nk, n0, nr, K, out, allow, err);
    return read_interleaved(s->t, e * nk, s->t, e * nk + (N / 2) * K, n0, nr, K, out, allow, err);
}

static void nk_reader(const expert_src *s, int64_t e, wt_reader *r)
{
    int64_t N = s->N, K = s->K, nk = N * K;
    size_t es = st_dtype_size(s->t->dtype), row = (size_t)K * es;
    if (!s->interleave) {
        wt_reader_add(r, s->t, (size_t)(e * nk) * es, row);
        return;
    }
    /* gate rows n/2 and up rows N/2 + n/2 advance at half speed */
    wt_reader_add(r, s->t, (size_t)(e * nk) * es, row / 2);
    wt_reader_add(r, s->t, (size_t)(e * nk + (N / 2) * K) * es, row / 2);
}

static const st_tensor *nk_element(const expert_src *s, int64_t e, int64_t n, int64_t k,
                                   int64_t *index)
{
    bool halves = s->interleave;
    int64_t row = halves ? n / 2 : n;
    *index = (e * s->N + (halves && n % 2 ? s->N / 2 : 0) + row) * s->K + k;
    return s->t;
}

/* ---- EXPERT_PER_EXPERT: per[e] [N, K], or gate per[e] + up up[e] [N/2, K] (Qwen) ---- */

static int per_dtypes(const expert_src *s, m2o_err *err)
{
    for (int64_t e = 0; e < s->E; e++)
        if (require_float(s->per[e], err) || (s->up[e] && require_float(s->up[e], err)))
            return -1;
    return 0;
}

static bool per_halves(const expert_src *s, int64_t e) { return s->interleave || s->up[e]; }

static int per_band(const expert_src *s, int64_t e, int64_t n0, int64_t nr, float *out,
                    bool allow, m2o_err *err)
{
    if (!s->up[e])
        return read_nk_rows(s->per[e], 0, n0, nr, s->K, out, allow, err);
    return read_interleaved(s->per[e], 0, s->up[e], 0, n0, nr, s->K, out, allow, err);
}

static void per_ahead(const expert_src *s, int64_t e)
{
    wt_read_ahead(s->per[e], 0, s->per[e]->nbytes);
    if (s->up[e])
        wt_read_ahead(s->up[e], 0, s->up[e]->nbytes);
}

static void per_release(const expert_src *s, int64_t e)
{
    wt_release_elems(s->per[e], 0, s->per[e]->numel);
    if (s->up[e])
        wt_release_elems(s->up[e], 0, s->up[e]->numel);
}

static void per_reader(const expert_src *s, int64_t e, wt_reader *r)
{
    size_t row = (size_t)s->K * st_dtype_size(s->per[e]->dtype);
    wt_reader_add(r, s->per[e], 0, s->up[e] ? row / 2 : row);
    if (s->up[e])
        wt_reader_add(r, s->up[e], 0, row / 2);
}

static const st_tensor *per_element(const expert_src *s, int64_t e, int64_t n, int64_t k,
                                    int64_t *index)
{
    bool halves = per_halves(s, e);
    *index = (halves ? n / 2 : n) * s->K + k;
    return halves && n % 2 ? s->up[e] : s->per[e];
}

/* ---- the tables ---- */

static const expert_layout LAYOUT_MXFP4 = {
    .check_dtypes = mxfp4_dtypes, .halves = halves_fused, .read_band = mxfp4_band,
    .read_ahead = mxfp4_ahead, .release = mxfp4_release, .reader = mxfp4_reader,
    .element = mxfp4_element, .check_expert = mxfp4_check, .fp4_passthrough = mxfp4_passthrough};
static const expert_layout LAYOUT_FUSED_KN = {
    .check_dtypes = fused_dtypes, .halves = halves_fused, .read_band = kn_band,
    .read_panel = kn_panel, .read_ahead = fused_ahead, .release = fused_release,
    .reader = kn_reader, .element = kn_element};
static const expert_layout LAYOUT_FUSED_NK = {
    .check_dtypes = fused_dtypes, .halves = halves_fused, .read_band = nk_band,
    .read_ahead = fused_ahead, .release = fused_release, .reader = nk_reader,
    .element = nk_element};
static const expert_layout LAYOUT_PER_EXPERT = {
    .check_dtypes = per_dtypes, .halves = per_halves, .read_band = per_band,
    .read_ahead = per_ahead, .release = per_release, .reader = per_reader,
    .element = per_element};

const expert_layout *expert_layout_of(expert_src_kind kind)
{
    switch (kind) {
    case EXPERT_MXFP4:
        return &LAYOUT_MXFP4;
    case EXPERT_FUSED_KN:
        return &LAYOUT_FUSED_KN;
    case EXPERT_FUSED_NK:
        return &LAYOUT_FUSED_NK;
    case EXPERT_PER_EXPERT:
        return &LAYOUT_PER_EXPERT;
    }
    return NULL;
}
