/* Expert encodings (docs/FORMATS.md §8), fed band by band or panel by panel. Every encoding
 * works row by row, which is what makes bands exact:
 *   - blockwise int (§4) and MXFP4 (§7): rows are independent;
 *   - CUTLASS SM80 (§5): rows n..n+I-1 (I = 4 for 4-bit, 2 for 8-bit) land in one contiguous
 *     range, so a band of a multiple of I rows packs into its own slice of the output;
 *   - fp4 CUDA (§6) is a transpose of the whole expert: its raw codes are gathered first. */
#include <stdlib.h>
#include <string.h>

#include "weights/experts_internal.h"

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
        return (size_t)(N * (block_size > 0 ? K / block_size : 1)) * io;
    case ENC_INT_ZP: {
        int64_t nb = block_size > 0 ? K / block_size : 1;
        return (size_t)(N * (bits == 4 ? (nb + 1) / 2 : nb));
    }
    case ENC_FP4:
        return (size_t)(N * K / 2);
    case ENC_FP4_SCALES:
        return (size_t)(N * K / 32);
    }
    return 0;
}

qb_params expert_int_params(int bits, int block_size, int io_dtype)
{
    qb_params p = {.bits = bits, .block_size = block_size, .symmetric = true,
                   .scale_type = io_dtype == ONNX_FLOAT16    ? QSCALE_F16
                                 : io_dtype == ONNX_BFLOAT16 ? QSCALE_BF16
                                                             : QSCALE_F32};
    return p;
}

bool enc_is_fp4(expert_enc enc) { return enc == ENC_FP4 || enc == ENC_FP4_SCALES; }
bool enc_is_int(expert_enc enc)
{
    return enc == ENC_INT_RAW || enc == ENC_INT_SM80 || enc == ENC_INT_SCALES || enc == ENC_INT_ZP;
}

expert_enc expert_scales_enc(expert_enc weights)
{
    return enc_is_fp4(weights) ? ENC_FP4_SCALES : ENC_INT_SCALES;
}

expert_enc expert_weights_enc(expert_enc enc)
{
    return enc == ENC_INT_SCALES || enc == ENC_INT_ZP ? ENC_INT_RAW : enc == ENC_FP4_SCALES ? ENC_FP4 : enc;
}

static bool enc_quantized(expert_enc enc) { return enc_is_int(enc) || enc_is_fp4(enc); }

static size_t code_bytes(const expert_encoder *x, int64_t rows, int64_t cols)
{
    return enc_is_fp4(x->enc) ? (size_t)(rows * cols / 2) : qb_codes_bytes(rows, cols, &x->p);
}

size_t encoder_scale_bytes(const expert_encoder *x, int64_t rows, int64_t cols)
{
    if (enc_is_fp4(x->enc))
        return (size_t)(rows * cols / 32);
    if (x->f.block_size <= 0) /* per channel: one scale per row */
        return (size_t)rows * qscale_size(x->p.scale_type);
    return qb_scales_count(rows, cols, &x->p) * qscale_size(x->p.scale_type);
}

size_t encoder_zp_row_bytes(const expert_encoder *x)
{
    return x->f.asymmetric ? qb_zero_points_bytes(1, x->K, &x->p) : 0;
}

void encoder_free(expert_encoder *x)
{
    free(x->raw);
    free(x->band_raw);
    free(x->own_scales);
    free(x->own_zps);
    free(x->pcodes);
    free(x->pscales);
}

int encoder_init(expert_encoder *x, expert_enc enc, int64_t N, int64_t K, const expert_qfmt *f,
                 int io, void *weights, void *scales, void *zps, int64_t panel_cols, m2o_err *err)
{
    *x = (expert_encoder){.enc = enc, .N = N, .K = K, .io = io, .weights = weights,
                          .scales = scales, .zps = zps, .f = *f,
                          .p = expert_int_params(f->bits, f->block_size, io)};
    x->p.symmetric = !f->asymmetric;
    if (!enc_quantized(enc))
        return 0;
    bool ok = true;
    bool whole_raw = enc == ENC_FP4 || enc == ENC_FP4_SCALES || enc == ENC_INT_SCALES ||
                     enc == ENC_INT_ZP || (enc == ENC_INT_SM80 && panel_cols > 0);
    if (whole_raw)
        ok = (x->raw = m2o_malloc(code_bytes(x, N, K), err)) != NULL;
    else if (enc == ENC_INT_SM80)
        ok = (x->band_raw = m2o_malloc(code_bytes(x, expert_band_rows(N, K), K), err)) != NULL;
    if (ok && !scales)
        ok = (x->scales = x->own_scales = m2o_malloc(encoder_scale_bytes(x, N, K), err)) != NULL;
    if (ok && f->asymmetric && !zps)
        ok = (x->zps = x->own_zps = m2o_malloc((size_t)N * encoder_zp_row_bytes(x), err)) != NULL;
    if (ok && panel_cols > 0)
        ok = (x->pcodes = m2o_malloc(code_bytes(x, N, panel_cols), err)) != NULL &&
             (x->pscales = m2o_malloc(encoder_scale_bytes(x, N, panel_cols), err)) != NULL;
    if (!ok)
        encoder_free(x);
    return ok ? 0 : -1;
}

/* Raw codes [N][K*bits/8] of the whole expert: the output itself for the raw int layout. */
static uint8_t *raw_codes(const expert_encoder *x)
{
    return x->enc == ENC_INT_RAW ? x->weights : x->raw;
}

/* rows x cols values → codes, scales and (asymmetric) zero points, by the format's method. */
static int quantize(const expert_encoder *x, const float *w, int64_t rows, int64_t cols,
                    uint8_t *codes, uint8_t *scales, uint8_t *zps, m2o_err *err)
{
    if (enc_is_fp4(x->enc))
        return mxfp4_encode(w, rows, cols, codes, scales, err);
    if (x->f.block_size <= 0)
        return qc_quantize(w, rows, cols, x->p.bits, x->p.scale_type, codes, scales, err);
    if (x->f.search)
        return qb_quantize_search(w, rows, cols, &x->p, codes, scales, zps, err);
    return qb_quantize(w, rows, cols, &x->p, codes, scales, zps, err);
}

int encoder_rows(expert_encoder *x, const float *w, int64_t n0, int64_t nr, m2o_err *err)
{
    int64_t K = x->K;
    if (x->enc == ENC_FLOAT) {
        f32_to_dtype(w, x->weights + (size_t)(n0 * K) * onnx_dtype_size(x->io), (size_t)(nr * K),
                     x->io);
        return 0;
    }
    size_t at = code_bytes(x, n0, K);
    uint8_t *codes = x->band_raw ? x->band_raw : raw_codes(x) + at;
    uint8_t *scales = x->scales + encoder_scale_bytes(x, n0, K);
    uint8_t *zps = x->zps ? x->zps + (size_t)n0 * encoder_zp_row_bytes(x) : NULL;
    if (quantize(x, w, nr, K, codes, scales, zps, err))
        return -1;
    if (x->qerr)
        wt_measure_encoded(enc_is_fp4(x->enc), &x->p, w, nr, K, codes, scales, zps, x->qerr);
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

int encoder_panel(expert_encoder *x, const float *w, int64_t k0, int64_t kp, m2o_err *err)
{
    int64_t N = x->N, K = x->K;
    if (x->enc == ENC_FLOAT) {
        size_t io = onnx_dtype_size(x->io);
        for (int64_t n = 0; n < N; n++)
            f32_to_dtype(w + n * kp, x->weights + (size_t)(n * K + k0) * io, (size_t)kp, x->io);
        return 0;
    }
    if (x->f.block_size <= 0 || x->f.asymmetric)
        return m2o_fail(err, "internal: per-channel and asymmetric experts are encoded by rows");
    if (quantize(x, w, N, kp, x->pcodes, x->pscales, NULL, err))
        return -1;
    if (x->qerr)
        wt_measure_encoded(enc_is_fp4(x->enc), &x->p, w, N, kp, x->pcodes, x->pscales, NULL,
                           x->qerr);
    size_t pc = code_bytes(x, 1, kp), ps = encoder_scale_bytes(x, 1, kp);
    size_t rc = code_bytes(x, 1, K), rs = encoder_scale_bytes(x, 1, K);
    size_t oc = code_bytes(x, 1, k0), os = encoder_scale_bytes(x, 1, k0);
    scatter_rows(raw_codes(x) + oc, rc, x->pcodes, pc, N);
    scatter_rows(x->scales + os, rs, x->pscales, ps, N);
    return 0;
}

int encoder_finish(expert_encoder *x, m2o_err *err)
{
    if (x->enc == ENC_FP4)
        return fp4_cuda_pack(x->raw, x->N, x->K, x->weights, err);
    if (x->enc == ENC_INT_SM80 && x->raw)
        return cutlass_sm80_pack(x->raw, x->N, x->K, x->p.bits, x->weights, err);
    return 0;
}

int expert_encode_fmt(const float *w, int64_t N, int64_t K, expert_enc enc, const expert_qfmt *f,
                      int io_dtype, void *out, m2o_err *err)
{
    bool scales_only = enc == ENC_INT_SCALES || enc == ENC_FP4_SCALES;
    bool zp_only = enc == ENC_INT_ZP;
    if (zp_only && !f->asymmetric)
        return m2o_fail(err, "internal: zero points of a symmetric format");
    expert_encoder x;
    if (encoder_init(&x, enc, N, K, f, io_dtype, scales_only || zp_only ? NULL : out,
                     scales_only ? out : NULL, zp_only ? out : NULL, 0, err))
        return -1;
    int64_t R = expert_band_rows(N, K);
    int rc = 0;
    for (int64_t n0 = 0; n0 < N && !rc; n0 += R)
        rc = encoder_rows(&x, w + n0 * K, n0, N - n0 < R ? N - n0 : R, err);
    if (!rc)
        rc = encoder_finish(&x, err);
    encoder_free(&x);
    return rc;
}

int expert_encode(const float *w, int64_t N, int64_t K, expert_enc enc, int bits, int block_size,
                  int io_dtype, void *out, m2o_err *err)
{
    expert_qfmt f = {.bits = bits, .block_size = block_size};
    return expert_encode_fmt(w, N, K, enc, &f, io_dtype, out, err);
}
