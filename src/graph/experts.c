/* Expert producers. One job is one expert: its matrix is read in bands of rows (a few hundred
 * KiB of float32, so they stay in the core's cache), each band is encoded straight into the
 * output chunk(s), and the expert's checkpoint pages are released as the bands move on. A
 * quantized encoding's codes and scales are one group (graph_add_streamed_group), so every
 * expert is quantized once. Every encoding works row by row, which is what makes bands exact:
 *   - blockwise int and MXFP4: rows are independent;
 *   - CUTLASS SM80: rows n..n+I-1 (I = 4 for 4-bit, 2 for 8-bit) land in one contiguous range,
 *     so a band of a multiple of I rows packs into its own slice of the output;
 *   - fp4 CUDA is a transpose of the whole expert: its raw codes are gathered first.
 * An input-major expert (gpt-oss BF16, [K, N]) is read instead in panels of whole source rows
 * (64 or one block of K for every output row): blocks run along K, so a panel quantizes on its
 * own and is scattered to its columns, and the source is read sequentially. */
#include "graph/experts.h"

#include <stdlib.h>
#include <string.h>

#include "graph/weights.h"
#include "quant/quant.h"

/* ---- reading expert rows ---- */

/* Rows per band: a multiple of 8 (CUTLASS interleave, gate/up pairs, 8x8 transposes) whose
 * float32 band stays within about 512 KiB. */
static int64_t band_rows(int64_t N, int64_t K)
{
    int64_t r = ((int64_t)512 << 10) / (K * (int64_t)sizeof(float)) / 8 * 8;
    r = r < 8 ? 8 : r > 64 ? 64 : r;
    return r < N ? r : N;
}

static int64_t first_nonfinite(const float *v, int64_t n)
{
    return f32_first_nonfinite(v, (size_t)n);
}

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
    int64_t bad = allow ? -1 : first_nonfinite(out, nr * K);
    return bad < 0 ? 0 : report_nonfinite(t, first + bad, out[bad], err);
}

/* Expert e's [K, N] input-major block, columns [n0, n0 + nr), as float32 rows [nr][K]. */
static int read_kn_band(const expert_src *s, int64_t e, int64_t n0, int64_t nr, float *out,
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
        /* F16/F32 or an odd offset: row by row through the element reader */
        float row[64];
        for (int64_t k = 0; k < K; k++) {
            for (int64_t c = 0; c < nr; c += 64) {
                int64_t m = nr - c < 64 ? nr - c : 64;
                if (tensor_read_f32(t, base + k * N + n0 + c, m, row, err))
                    return -1;
                for (int64_t j = 0; j < m; j++)
                    out[(c + j) * K + k] = row[j];
            }
        }
    }
    int64_t bad = allow ? -1 : first_nonfinite(out, nr * K);
    if (bad < 0)
        return 0;
    int64_t n = n0 + bad / K, k = bad % K;
    return report_nonfinite(t, base + k * N + n, out[bad], err);
}

/* Source rows [k0, k0 + kp) of expert e's [K, N] input-major block as float32 [N][kp]: each
 * source row is read in order (sequential, unlike a band of N which touches every row). */
static int read_kn_panel(const expert_src *s, int64_t e, int64_t k0, int64_t kp, float *out,
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

/* Rows [n0, n0 + nr) of expert e as float32 [nr][K]; releases nothing. */
static int expert_read_band(const expert_src *s, int64_t e, int64_t n0, int64_t nr, float *out,
                            bool allow, m2o_err *err)
{
    int64_t N = s->N, K = s->K, nk = N * K;
    if (s->interleave || (s->kind == EXPERT_PER_EXPERT && s->up[e])) {
        if (n0 % 2 || nr % 2)
            return m2o_fail(err, "%s: internal: interleaved band [%lld, +%lld) not even",
                            s->what, (long long)n0, (long long)nr);
    }
    switch (s->kind) {
    case EXPERT_MXFP4:
        if (mxfp4_decode(s->t->data + (size_t)((e * nk + n0 * K) / 2),
                         s->scales->data + (size_t)((e * nk + n0 * K) / 32), nr, K, out, err))
            return m2o_wrap(err, "decoding %s expert %lld", s->what, (long long)e);
        return 0;
    case EXPERT_FUSED_KN:
        return read_kn_band(s, e, n0, nr, out, allow, err);
    case EXPERT_FUSED_NK:
        if (!s->interleave)
            return read_nk_rows(s->t, e * nk, n0, nr, K, out, allow, err);
        return read_interleaved(s->t, e * nk, s->t, e * nk + (N / 2) * K, n0, nr, K, out, allow,
                                err);
    case EXPERT_PER_EXPERT:
        if (!s->up[e])
            return read_nk_rows(s->per[e], 0, n0, nr, K, out, allow, err);
        return read_interleaved(s->per[e], 0, s->up[e], 0, n0, nr, K, out, allow, err);
    }
    return m2o_fail(err, "%s: unknown expert source kind", s->what);
}

static void release_elems(const st_tensor *t, int64_t first, int64_t count)
{
    size_t es = st_dtype_size(t->dtype);
    st_release(t, (size_t)first * es, (size_t)count * es);
}

/* Starts reading expert e's checkpoint bytes from disk (no-op when cached or e is past the end):
 * a job asks for its own expert and the next one, so the disk works ahead of the workers. */
static void expert_prefetch(const expert_src *s, int64_t e)
{
    if (e < 0 || e >= s->E)
        return;
    int64_t nk = s->N * s->K;
    switch (s->kind) {
    case EXPERT_MXFP4:
        st_prefetch(s->t, (size_t)(e * nk / 2), (size_t)(nk / 2));
        st_prefetch(s->scales, (size_t)(e * nk / 32), (size_t)(nk / 32));
        break;
    case EXPERT_FUSED_KN:
    case EXPERT_FUSED_NK: {
        size_t es = st_dtype_size(s->t->dtype);
        st_prefetch(s->t, (size_t)(e * nk) * es, (size_t)nk * es);
        break;
    }
    case EXPERT_PER_EXPERT:
        st_prefetch(s->per[e], 0, s->per[e]->nbytes);
        if (s->up[e])
            st_prefetch(s->up[e], 0, s->up[e]->nbytes);
        break;
    }
}

/* Drops expert e's checkpoint pages from this process's memory (they stay in the page cache). */
static void expert_release(const expert_src *s, int64_t e)
{
    int64_t nk = s->N * s->K;
    switch (s->kind) {
    case EXPERT_MXFP4:
        st_release(s->t, (size_t)(e * nk / 2), (size_t)(nk / 2));
        st_release(s->scales, (size_t)(e * nk / 32), (size_t)(nk / 32));
        break;
    case EXPERT_FUSED_KN:
    case EXPERT_FUSED_NK:
        release_elems(s->t, e * nk, nk);
        break;
    case EXPERT_PER_EXPERT:
        release_elems(s->per[e], 0, s->per[e]->numel);
        if (s->up[e])
            release_elems(s->up[e], 0, s->up[e]->numel);
        break;
    }
}

/* Release cursors of the (up to two) forward streams a band-by-band read of expert e goes
 * through: codes + scales (MXFP4), gate + up rows (halves), or one stream. An input-major
 * (KN) expert touches all its pages in every band, so it is released only at the end. */
typedef struct expert_cursor {
    const st_tensor *t[2];
    size_t base[2], row_bytes[2], released[2];
} expert_cursor;

static void expert_cursor_init(const expert_src *s, int64_t e, expert_cursor *c)
{
    int64_t N = s->N, K = s->K, nk = N * K;
    memset(c, 0, sizeof *c);
    switch (s->kind) {
    case EXPERT_MXFP4:
        *c = (expert_cursor){{s->t, s->scales}, {(size_t)(e * nk / 2), (size_t)(e * nk / 32)},
                             {(size_t)K / 2, (size_t)K / 32}, {0, 0}};
        break;
    case EXPERT_FUSED_NK: {
        size_t es = st_dtype_size(s->t->dtype), row = (size_t)K * es;
        if (s->interleave) /* gate rows n/2 and up rows N/2 + n/2 advance at half speed */
            *c = (expert_cursor){{s->t, s->t}, {(size_t)(e * nk) * es,
                                                (size_t)(e * nk + (N / 2) * K) * es},
                                 {row / 2, row / 2}, {0, 0}};
        else
            *c = (expert_cursor){{s->t, NULL}, {(size_t)(e * nk) * es, 0}, {row, 0}, {0, 0}};
        break;
    }
    case EXPERT_PER_EXPERT: {
        size_t row = (size_t)K * st_dtype_size(s->per[e]->dtype);
        if (s->up[e])
            *c = (expert_cursor){{s->per[e], s->up[e]}, {0, 0}, {row / 2, row / 2}, {0, 0}};
        else
            *c = (expert_cursor){{s->per[e], NULL}, {0, 0}, {row, 0}, {0, 0}};
        break;
    }
    case EXPERT_FUSED_KN:
        break;
    }
    for (int i = 0; i < 2; i++)
        c->released[i] = c->base[i];
}

/* Rows [0, n_done) of the expert are finished. */
static void expert_release_behind(expert_cursor *c, int64_t n_done)
{
    for (int i = 0; i < 2; i++)
        if (c->t[i])
            st_release_behind(c->t[i], &c->released[i],
                              c->base[i] + (size_t)n_done * c->row_bytes[i]);
}

int expert_read_f32(const expert_src *s, int64_t e, float *out, float *tmp, m2o_err *err)
{
    (void)tmp;
    int64_t R = band_rows(s->N, s->K);
    for (int64_t n0 = 0; n0 < s->N; n0 += R) {
        int64_t nr = s->N - n0 < R ? s->N - n0 : R;
        if (expert_read_band(s, e, n0, nr, out + n0 * s->K, false, err))
            return -1;
    }
    expert_release(s, e);
    return 0;
}

/* ---- encoding bands ---- */

size_t expert_chunk_bytes(int64_t N, int64_t K, expert_enc enc, int bits, int block_size,
                          int io_dtype)
{
    size_t io = onnx_dtype_size(io_dtype);
    switch (enc) {
    case ENC_FLOAT:
        return (size_t)(N * K) * io;
    case ENC_INT_RAW:
    case ENC_INT_SM80:
        return (size_t)(N * K * bits / 8);
    case ENC_INT_SCALES:
        return (size_t)(N * (K / block_size)) * io;
    case ENC_FP4:
        return (size_t)(N * K / 2);
    case ENC_FP4_SCALES:
        return (size_t)(N * K / 32);
    }
    return 0;
}

static qb_params int_params(int bits, int block_size, int io_dtype)
{
    qb_params p = {.bits = bits, .block_size = block_size, .symmetric = true,
                   .scale_type = io_dtype == ONNX_FLOAT16    ? QSCALE_F16
                                 : io_dtype == ONNX_BFLOAT16 ? QSCALE_BF16
                                                             : QSCALE_F32};
    return p;
}

static bool enc_is_fp4(expert_enc enc) { return enc == ENC_FP4 || enc == ENC_FP4_SCALES; }
static bool enc_is_int(expert_enc enc)
{
    return enc == ENC_INT_RAW || enc == ENC_INT_SM80 || enc == ENC_INT_SCALES;
}

/* Where one expert's encoding goes: `weights` (float / codes, NULL when only scales are
 * wanted) and `scales` (NULL when not wanted), plus the scratch the pieces need. The expert
 * arrives either as bands of whole rows (encode_rows) or, for an input-major source, as panels
 * of kp columns of every row (encode_panel: blockwise int and MXFP4 blocks run along K, so a
 * panel of whole blocks quantizes on its own and is scattered to its columns). */
typedef struct expert_encoder {
    expert_enc enc; /* the weights' encoding, or a scales encoding when only scales are wanted */
    int64_t N, K;
    int io;
    qb_params p;
    uint8_t *weights;
    uint8_t *scales;
    uint8_t *raw;       /* raw codes [N][K*bits/8] of the whole expert, when they are not the
                         * output as they are: fp4 (transposed at the end), CUTLASS from panels
                         * (packed at the end), codes dropped for a scales encoding */
    uint8_t *band_raw;  /* CUTLASS from bands: one band's raw codes, packed band by band */
    uint8_t *own_scales; /* scales when they are not wanted */
    uint8_t *pcodes, *pscales; /* one panel's codes and scales before they are scattered */
} expert_encoder;

static bool enc_quantized(expert_enc enc) { return enc_is_int(enc) || enc_is_fp4(enc); }

static size_t code_bytes(const expert_encoder *x, int64_t rows, int64_t cols)
{
    return enc_is_fp4(x->enc) ? (size_t)(rows * cols / 2) : qb_codes_bytes(rows, cols, &x->p);
}

static size_t scale_bytes(const expert_encoder *x, int64_t rows, int64_t cols)
{
    return enc_is_fp4(x->enc) ? (size_t)(rows * cols / 32)
                              : qb_scales_count(rows, cols, &x->p) * qscale_size(x->p.scale_type);
}

static void encoder_free(expert_encoder *x)
{
    free(x->raw);
    free(x->band_raw);
    free(x->own_scales);
    free(x->pcodes);
    free(x->pscales);
}

/* panel_cols > 0: the expert will come as panels of that many columns, else as bands of rows. */
static int encoder_init(expert_encoder *x, expert_enc enc, int64_t N, int64_t K, int bits,
                        int block_size, int io, void *weights, void *scales, int64_t panel_cols,
                        m2o_err *err)
{
    *x = (expert_encoder){.enc = enc, .N = N, .K = K, .io = io, .weights = weights,
                          .scales = scales, .p = int_params(bits, block_size, io)};
    if (!enc_quantized(enc))
        return 0;
    bool ok = true;
    bool whole_raw = enc == ENC_FP4 || enc == ENC_FP4_SCALES || enc == ENC_INT_SCALES ||
                     (enc == ENC_INT_SM80 && panel_cols > 0);
    if (whole_raw)
        ok = (x->raw = m2o_malloc(code_bytes(x, N, K), err)) != NULL;
    else if (enc == ENC_INT_SM80)
        ok = (x->band_raw = m2o_malloc(code_bytes(x, band_rows(N, K), K), err)) != NULL;
    if (ok && !scales)
        ok = (x->scales = x->own_scales = m2o_malloc(scale_bytes(x, N, K), err)) != NULL;
    if (ok && panel_cols > 0)
        ok = (x->pcodes = m2o_malloc(code_bytes(x, N, panel_cols), err)) != NULL &&
             (x->pscales = m2o_malloc(scale_bytes(x, N, panel_cols), err)) != NULL;
    if (!ok)
        encoder_free(x);
    return ok ? 0 : -1;
}

/* Raw codes [N][K*bits/8] of the whole expert: the output itself for the raw int layout. */
static uint8_t *raw_codes(const expert_encoder *x)
{
    return x->enc == ENC_INT_RAW ? x->weights : x->raw;
}

static int quantize(const expert_encoder *x, const float *w, int64_t rows, int64_t cols,
                    uint8_t *codes, uint8_t *scales, m2o_err *err)
{
    if (enc_is_fp4(x->enc))
        return mxfp4_encode(w, rows, cols, codes, scales, err);
    return qb_quantize(w, rows, cols, &x->p, codes, scales, NULL, err);
}

/* Rows [n0, n0 + nr) given as float32 [nr][K]. */
static int encode_rows(expert_encoder *x, const float *w, int64_t n0, int64_t nr, m2o_err *err)
{
    int64_t K = x->K;
    if (x->enc == ENC_FLOAT) {
        f32_to_dtype(w, x->weights + (size_t)(n0 * K) * onnx_dtype_size(x->io), (size_t)(nr * K),
                     x->io);
        return 0;
    }
    size_t at = code_bytes(x, n0, K);
    uint8_t *codes = x->band_raw ? x->band_raw : raw_codes(x) + at;
    if (quantize(x, w, nr, K, codes, x->scales + scale_bytes(x, n0, K), err))
        return -1;
    if (x->band_raw) /* CUTLASS: rows n..n+I-1 pack into their own slice */
        return cutlass_sm80_pack(codes, nr, K, x->p.bits, x->weights + at, err);
    return 0;
}

/* rows pieces of n bytes from src (back to back) to dst (stride dst_stride): the few bytes a
 * panel gives each row. Common sizes get a fixed-size copy the compiler turns into moves (a
 * memcpy call per row would cost more than the copy). */
#define SCATTER_CASE(bytes)                                                                   \
    case bytes:                                                                               \
        for (int64_t r = 0; r < rows; r++)                                                    \
            memcpy(dst + (size_t)r * dst_stride, src + (size_t)r * (bytes), (bytes));        \
        return;
static void scatter_rows(uint8_t *dst, size_t dst_stride, const uint8_t *src, size_t n,
                         int64_t rows)
{
    switch (n) {
        SCATTER_CASE(2)
        SCATTER_CASE(4)
        SCATTER_CASE(8)
        SCATTER_CASE(16)
        SCATTER_CASE(32)
        SCATTER_CASE(64)
        SCATTER_CASE(128)
    default:
        for (int64_t r = 0; r < rows; r++)
            memcpy(dst + (size_t)r * dst_stride, src + (size_t)r * n, n);
    }
}
#undef SCATTER_CASE

/* Columns [k0, k0 + kp) of every row, given as float32 [N][kp]. */
static int encode_panel(expert_encoder *x, const float *w, int64_t k0, int64_t kp, m2o_err *err)
{
    int64_t N = x->N, K = x->K;
    if (x->enc == ENC_FLOAT) {
        size_t io = onnx_dtype_size(x->io);
        for (int64_t n = 0; n < N; n++)
            f32_to_dtype(w + n * kp, x->weights + (size_t)(n * K + k0) * io, (size_t)kp, x->io);
        return 0;
    }
    if (quantize(x, w, N, kp, x->pcodes, x->pscales, err))
        return -1;
    size_t pc = code_bytes(x, 1, kp), ps = scale_bytes(x, 1, kp);
    size_t rc = code_bytes(x, 1, K), rs = scale_bytes(x, 1, K);
    size_t oc = code_bytes(x, 1, k0), os = scale_bytes(x, 1, k0);
    scatter_rows(raw_codes(x) + oc, rc, x->pcodes, pc, N);
    scatter_rows(x->scales + os, rs, x->pscales, ps, N);
    return 0;
}

static int encode_finish(expert_encoder *x, m2o_err *err)
{
    if (x->enc == ENC_FP4)
        return fp4_cuda_pack(x->raw, x->N, x->K, x->weights, err);
    if (x->enc == ENC_INT_SM80 && x->raw)
        return cutlass_sm80_pack(x->raw, x->N, x->K, x->p.bits, x->weights, err);
    return 0;
}

int expert_encode(const float *w, int64_t N, int64_t K, expert_enc enc, int bits, int block_size,
                  int io_dtype, void *out, m2o_err *err)
{
    bool scales_only = enc == ENC_INT_SCALES || enc == ENC_FP4_SCALES;
    expert_encoder x;
    if (encoder_init(&x, enc, N, K, bits, block_size, io_dtype, scales_only ? NULL : out,
                     scales_only ? out : NULL, 0, err))
        return -1;
    int64_t R = band_rows(N, K);
    int rc = 0;
    for (int64_t n0 = 0; n0 < N && !rc; n0 += R)
        rc = encode_rows(&x, w + n0 * K, n0, N - n0 < R ? N - n0 : R, err);
    if (!rc)
        rc = encode_finish(&x, err);
    encoder_free(&x);
    return rc;
}

/* ---- streamed producers ---- */

typedef struct experts_ctx {
    expert_src src;
    expert_enc enc;  /* weights encoding, or a scales encoding for a scales-only tensor */
    int bits, block_size, io;
    bool allow_nonfinite;
} experts_ctx;

/* MXFP4 codes are always finite; a scale byte of 255 is E8M0's NaN and makes its block NaN.
 * `quant` names the encoding the values are decoded for (NaN always fails), NULL when they go
 * out as they are or as float (they fail unless allowed). */
static int check_scales(const expert_src *s, int64_t e, bool allow, const char *quant,
                        m2o_err *err)
{
    if (allow && !quant)
        return 0;
    size_t n = (size_t)(s->N * s->K / 32);
    const uint8_t *sc = s->scales->data + (size_t)e * n;
    const uint8_t *bad = memchr(sc, 255, n);
    if (!bad)
        return 0;
    long long at = (long long)((size_t)e * n + (size_t)(bad - sc));
    if (quant)
        return m2o_fail(err, "tensor %s: byte %lld is 255, the E8M0 code for NaN, which %s "
                             "cannot encode; fix the checkpoint (--allow-nonfinite keeps NaN/Inf "
                             "only in float exports: -p fp32, fp16 or bf16)",
                        s->scales->name, at, quant);
    return m2o_fail(err, "tensor %s: byte %lld is 255, the E8M0 code for NaN; fix the checkpoint "
                         "or pass --allow-nonfinite to keep it", s->scales->name, at);
}

/* The encoding values are read for, when it cannot hold NaN/Inf (NULL: float). */
static const char *format_name(expert_enc enc, int bits)
{
    if (enc == ENC_FLOAT)
        return NULL;
    return enc_is_fp4(enc) ? "MXFP4" : int_format_name(bits);
}

/* MXFP4 checkpoint → MXFP4 op: the codes and scale bytes pass through (no decode/encode). */
static int produce_fp4_passthrough(const expert_src *s, int64_t e, uint8_t *weights,
                                   uint8_t *scales, bool allow_nonfinite, m2o_err *err)
{
    int64_t nk = s->N * s->K;
    int rc = scales ? check_scales(s, e, allow_nonfinite, NULL, err) : 0;
    if (!rc && weights)
        rc = fp4_cuda_pack(s->t->data + (size_t)(e * nk / 2), s->N, s->K, weights, err);
    if (!rc && scales)
        memcpy(scales, s->scales->data + (size_t)(e * nk / 32), (size_t)(nk / 32));
    expert_release(s, e);
    return rc;
}

/* Columns per panel of an input-major expert: whole quantization blocks, at least 64 so
 * each source row contributes a full cache line. */
static int64_t panel_cols(int64_t K, int block_size)
{
    int64_t kp = block_size > 64 ? block_size : 64;
    return K % kp == 0 ? kp : 0;
}

/* The checkpoint tensor and element holding element (n, k) of expert e's [N][K] matrix. */
static const st_tensor *source_element(const expert_src *s, int64_t e, int64_t n, int64_t k,
                                       int64_t *index)
{
    int64_t N = s->N, K = s->K;
    bool halves = s->interleave || (s->kind == EXPERT_PER_EXPERT && s->up[e]);
    int64_t row = halves ? n / 2 : n;
    switch (s->kind) {
    case EXPERT_FUSED_KN:
        *index = (e * K + k) * N + n;
        return s->t;
    case EXPERT_FUSED_NK:
        *index = (e * N + (halves && n % 2 ? N / 2 : 0) + row) * K + k;
        return s->t;
    case EXPERT_PER_EXPERT:
        *index = row * K + k;
        return halves && n % 2 ? s->up[e] : s->per[e];
    case EXPERT_MXFP4:
        break;
    }
    *index = (e * N + n) * K + k;
    return s->t;
}

/* Names the first NaN/Inf among these float values (rows x cols: the band's rows from `first`,
 * or the panel's columns from `first`) by its tensor and element in the checkpoint, in err, as
 * check_finite (float output, `format` NULL) or check_encodable would. False when all are
 * finite. The quantizers refuse such values too, but only know the band's row and column. */
static bool name_nonfinite(const expert_src *s, int64_t e, const float *w, int64_t rows,
                           int64_t cols, bool panel, int64_t first, const char *format,
                           m2o_err *err)
{
    int64_t bad = first_nonfinite(w, rows * cols);
    if (bad < 0)
        return false;
    int64_t r = bad / cols, c = bad % cols, index;
    const st_tensor *t = source_element(s, e, panel ? r : first + r, panel ? first + c : c, &index);
    float v = w[bad];
    if (format)
        check_encodable(&v, 1, index, t->name, format, err);
    else
        check_finite(&v, 1, index, t->name, false, err);
    return true;
}

/* Converted values that overflow their type (float16 above 65504): a float output's elements, or
 * an int encoding's block scales (rounded to the io dtype). Names the checkpoint tensor and the
 * element (the block's first). The MXFP4 encoder's E8M0 scales reach 2^127: they cannot. */
static int check_overflow(const expert_src *s, int64_t e, const expert_encoder *x, const float *w,
                          int64_t rows, int64_t cols, bool panel, int64_t first, m2o_err *err)
{
    int64_t index, r, c;
    if (x->enc == ENC_FLOAT) {
        int64_t big = first_overflow(w, (size_t)(rows * cols), x->io);
        if (big < 0)
            return 0;
        r = big / cols, c = big % cols;
        const st_tensor *t = source_element(s, e, panel ? r : first + r, panel ? first + c : c,
                                            &index);
        return check_fits(w + big, 1, index, t->name, x->io, err);
    }
    if (!enc_is_int(x->enc))
        return 0;
    int bs = x->p.block_size;
    int64_t nb = cols / bs;
    const uint8_t *sc = panel ? x->pscales : x->scales + scale_bytes(x, first, x->K);
    int64_t bad = first_nonfinite_scale(sc, (size_t)(rows * nb), x->io);
    if (bad < 0)
        return 0;
    r = bad / nb, c = bad % nb * bs;
    const st_tensor *t = source_element(s, e, panel ? r : first + r, panel ? first + c : c, &index);
    return scale_overflow_fail(t->name, index, bs, x->io, err);
}

/* One band or panel was read into w: checks it where nothing else will (a float output refuses
 * NaN/Inf unless allowed; quantizers refuse them anyway, so only their failure is explained),
 * then encodes it. */
static int check_and_encode(const expert_src *s, int64_t e, expert_encoder *x, const float *w,
                            int64_t rows, int64_t cols, bool panel, int64_t first,
                            bool allow_nonfinite, const char *format, m2o_err *err)
{
    if (!format && !allow_nonfinite && name_nonfinite(s, e, w, rows, cols, panel, first, NULL, err))
        return -1;
    if (x->enc == ENC_FLOAT && check_overflow(s, e, x, w, rows, cols, panel, first, err))
        return -1;
    int rc = panel ? encode_panel(x, w, first, cols, err) : encode_rows(x, w, first, rows, err);
    if (rc && !(format && name_nonfinite(s, e, w, rows, cols, panel, first, format, err)))
        return m2o_wrap(err, "encoding %s expert %lld", s->what, (long long)e);
    if (!rc && x->enc != ENC_FLOAT)
        rc = check_overflow(s, e, x, w, rows, cols, panel, first, err);
    return rc;
}

/* Input-major expert e: panels of kp source rows, each read sequentially (converted and
 * transposed on the way), encoded and scattered to its columns. */
static int produce_panels(const expert_src *s, int64_t e, expert_encoder *x, int64_t kp,
                          bool allow_nonfinite, m2o_err *err)
{
    int64_t N = s->N, K = s->K;
    float *panel = m2o_malloc((size_t)(N * kp) * sizeof(float), err);
    if (!panel)
        return -1;
    size_t es = st_dtype_size(s->t->dtype), released = (size_t)(e * N * K) * es;
    const char *format = format_name(x->enc, x->p.bits);
    int rc = 0;
    for (int64_t k0 = 0; k0 < K && !rc; k0 += kp) {
        rc = read_kn_panel(s, e, k0, kp, panel, err);
        st_release_behind(s->t, &released, (size_t)((e * K + k0 + kp) * N) * es);
        if (!rc)
            rc = check_and_encode(s, e, x, panel, N, kp, true, k0, allow_nonfinite, format, err);
    }
    free(panel);
    return rc;
}

/* Row-major expert e (MXFP4, [N, K] tensors): bands of whole rows, released as they go. */
static int produce_bands(const expert_src *s, int64_t e, expert_encoder *x, bool allow_nonfinite,
                         m2o_err *err)
{
    int64_t N = s->N, K = s->K, R = band_rows(N, K);
    float *band = m2o_malloc((size_t)(R * K) * sizeof(float), err);
    if (!band)
        return -1;
    expert_cursor cur;
    expert_cursor_init(s, e, &cur);
    const char *format = format_name(x->enc, x->p.bits);
    /* MXFP4 values are finite unless a scale byte is 255, checked once up front */
    int rc = expert_src_is_mxfp4(s) ? check_scales(s, e, allow_nonfinite, format, err) : 0;
    bool allow = allow_nonfinite || expert_src_is_mxfp4(s);
    for (int64_t n0 = 0; n0 < N && !rc; n0 += R) {
        int64_t nr = N - n0 < R ? N - n0 : R;
        rc = expert_read_band(s, e, n0, nr, band, true, err);
        if (!rc)
            rc = check_and_encode(s, e, x, band, nr, K, false, n0, allow, format, err);
        expert_release_behind(&cur, n0 + nr);
    }
    free(band);
    return rc;
}

int expert_produce(const expert_src *s, int64_t e, expert_enc enc, int bits, int block_size,
                   int io_dtype, bool allow_nonfinite, void *weights, void *scales, m2o_err *err)
{
    expert_prefetch(s, e);
    expert_prefetch(s, e + 1);
    if (expert_src_is_mxfp4(s) && enc_is_fp4(enc))
        return produce_fp4_passthrough(s, e, weights, scales, allow_nonfinite, err);
    /* a scales encoding (weights NULL): quantized like the weights, codes dropped */
    int64_t kp = s->kind == EXPERT_FUSED_KN ? panel_cols(s->K, enc_is_fp4(enc) ? 32 : block_size)
                                            : 0;
    expert_encoder x;
    if (encoder_init(&x, enc, s->N, s->K, bits, block_size, io_dtype, weights, scales, kp, err))
        return -1;
    int rc = kp ? produce_panels(s, e, &x, kp, allow_nonfinite, err)
                : produce_bands(s, e, &x, allow_nonfinite, err);
    if (!rc && encode_finish(&x, err))
        rc = m2o_wrap(err, "encoding %s expert %lld", s->what, (long long)e);
    expert_release(s, e);
    encoder_free(&x);
    return rc;
}

static int produce_single(void *vctx, int64_t e, void *out, m2o_err *err)
{
    const experts_ctx *c = vctx;
    bool scales = c->enc == ENC_INT_SCALES || c->enc == ENC_FP4_SCALES;
    return expert_produce(&c->src, e, c->enc, c->bits, c->block_size, c->io, c->allow_nonfinite,
                          scales ? NULL : out, scales ? out : NULL, err);
}

static int produce_pair(void *vctx, int64_t e, void *const *outs, m2o_err *err)
{
    const experts_ctx *c = vctx;
    return expert_produce(&c->src, e, c->enc, c->bits, c->block_size, c->io, c->allow_nonfinite,
                          outs[0], outs[1], err);
}

/* ---- registering the initializers ---- */

static int check_encoding(const gb *b, const expert_src *src, expert_enc enc, int bits,
                          int block_size, m2o_err *err)
{
    int64_t E = src->E, N = src->N, K = src->K;
    if (E < 1 || E > EXPERT_MAX)
        return m2o_fail(err, "%s: %lld experts (supported: 1..%d)", src->what, (long long)E,
                        EXPERT_MAX);
    /* a wrong dtype stops the export before any bytes are written, not midway */
    if (src->kind == EXPERT_FUSED_KN || src->kind == EXPERT_FUSED_NK) {
        if (require_float(src->t, err))
            return -1;
    } else if (src->kind == EXPERT_PER_EXPERT) {
        for (int64_t e = 0; e < E; e++)
            if (require_float(src->per[e], err) || (src->up[e] && require_float(src->up[e], err)))
                return -1;
    }
    if (enc_is_fp4(enc)) {
        if (K % 32 || N % 2)
            return m2o_fail(err, "%s: MXFP4 needs the input width %lld to be a multiple of 32 "
                                 "and the output width %lld even",
                            src->what, (long long)K, (long long)N);
    } else if (enc != ENC_FLOAT) {
        qb_params p = int_params(bits, block_size, b->io);
        if (qb_check(N, K, &p, err))
            return m2o_wrap(err, "quantizing %s for QMoE", src->what);
        if (enc == ENC_INT_SM80 && K % 64)
            return m2o_fail(err, "%s: the CUTLASS SM80 layout needs the input width %lld to be "
                                 "a multiple of 64; use qmoe_weights_prepacked=0",
                            src->what, (long long)K);
        if (enc == ENC_INT_SM80 && N % (bits == 4 ? 4 : 2))
            return m2o_fail(err, "%s: the CUTLASS SM80 layout needs the output width %lld to "
                                 "be a multiple of %d",
                            src->what, (long long)N, bits == 4 ? 4 : 2);
    }
    bool halves = src->interleave;
    for (int64_t e = 0; e < E && src->kind == EXPERT_PER_EXPERT; e++)
        halves = halves || src->up[e];
    if (halves && N % 2)
        return m2o_fail(err, "%s: gate/up halves need an even output width, got %lld", src->what,
                        (long long)N);
    return 0;
}

/* Declared shape and element type of one encoding's initializer. */
static int enc_shape(const gb *b, const expert_src *src, expert_enc enc, int bits,
                     int block_size, int64_t dims[3])
{
    int64_t E = src->E, N = src->N, K = src->K;
    dims[0] = E, dims[1] = N, dims[2] = K;
    switch (enc) {
    case ENC_FLOAT:
        return b->io;
    case ENC_INT_RAW:
        dims[2] = K * bits / 8;
        return ONNX_UINT8;
    case ENC_INT_SM80:
        dims[1] = K;
        dims[2] = N * bits / 8;
        return ONNX_UINT8;
    case ENC_INT_SCALES:
        dims[2] = K / block_size;
        return b->io;
    case ENC_FP4:
        dims[1] = K;
        dims[2] = N / 2;
        return ONNX_UINT8;
    case ENC_FP4_SCALES:
        dims[2] = K / 32;
        return ONNX_FLOAT8E8M0;
    }
    return ONNX_UINT8;
}

static experts_ctx *new_ctx(const gb *b, const expert_src *src, expert_enc enc, int bits,
                            int block_size, m2o_err *err)
{
    experts_ctx *c = m2o_malloc(sizeof *c, err);
    if (!c)
        return NULL;
    c->src = *src;
    c->enc = enc;
    c->bits = bits;
    c->block_size = block_size;
    c->io = b->io;
    c->allow_nonfinite = b->o->allow_nonfinite;
    return c;
}

/* The weights encoding a scales encoding belongs to (for the shape checks). */
static expert_enc weights_of(expert_enc enc)
{
    return enc == ENC_INT_SCALES ? ENC_INT_RAW : enc == ENC_FP4_SCALES ? ENC_FP4 : enc;
}

int gb_add_experts(gb *b, const char *name, const expert_src *src, expert_enc enc, int bits,
                   int block_size, m2o_err *err)
{
    if (check_encoding(b, src, weights_of(enc), bits, block_size, err))
        return -1;
    experts_ctx *c = new_ctx(b, src, enc, bits, block_size, err);
    if (!c)
        return -1;
    int64_t dims[3];
    int elem = enc_shape(b, src, enc, bits, block_size, dims);
    graph_add_streamed_initializer(b->g, name, elem, 3, dims, src->E,
                                   expert_chunk_bytes(src->N, src->K, enc, bits, block_size, b->io),
                                   produce_single, c, free);
    return 0;
}

int gb_add_experts_quantized(gb *b, const char *weights_name, const char *scales_name,
                             const expert_src *src, expert_enc enc, int bits, int block_size,
                             m2o_err *err)
{
    if (enc != ENC_INT_RAW && enc != ENC_INT_SM80 && enc != ENC_FP4)
        return m2o_fail(err, "%s: internal: encoding %d has no scales", src->what, (int)enc);
    if (check_encoding(b, src, enc, bits, block_size, err))
        return -1;
    experts_ctx *c = new_ctx(b, src, enc, bits, block_size, err);
    if (!c)
        return -1;
    expert_enc senc = enc == ENC_FP4 ? ENC_FP4_SCALES : ENC_INT_SCALES;
    int64_t wdims[3], sdims[3];
    graph_stream_member m[2] = {
        {.name = weights_name, .elem_type = enc_shape(b, src, enc, bits, block_size, wdims),
         .ndim = 3, .dims = wdims,
         .chunk_bytes = expert_chunk_bytes(src->N, src->K, enc, bits, block_size, b->io)},
        {.name = scales_name, .elem_type = enc_shape(b, src, senc, bits, block_size, sdims),
         .ndim = 3, .dims = sdims,
         .chunk_bytes = expert_chunk_bytes(src->N, src->K, senc, bits, block_size, b->io)},
    };
    graph_add_streamed_group(b->g, 2, m, src->E, produce_pair, c, free);
    return 0;
}
