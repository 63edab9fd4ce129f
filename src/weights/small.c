/* Producers of tensors converted element by element: small tensors (norms, biases, sinks), the
 * quantize-dequantize of expert biases, and whole tensors streamed by rows (embeddings). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant/quant.h"
#include "weights/nonfinite.h"
#include "weights/producer.h"
#include "weights/reader.h"

/* Chunk size of the streamed converters: large enough that a chunk's fixed costs vanish, small
 * enough that 2 x threads chunks in flight stay a few hundred MiB. */
#define CHUNK_TARGET_BYTES ((size_t)16 << 20)

/* Elements per pass of the streamed converters: 256 KiB of float32 staging, so the read, the
 * check and the conversion of one piece all run in the core's cache. */
#define PIECE_ELEMS ((int64_t)64 << 10)

void f32_to_dtype(const float *src, void *dst, size_t n, int dtype)
{
    switch (dtype) {
    case ONNX_FLOAT16:
        convert_f32_to_f16(src, dst, n);
        break;
    case ONNX_BFLOAT16:
        convert_f32_to_bf16(src, dst, n);
        break;
    default:
        memcpy(dst, src, n * sizeof(float));
        break;
    }
}

int64_t chunk_rows(int64_t rows, size_t row_bytes, size_t target)
{
    int64_t best = 1;
    for (int64_t d = 1; d <= rows; d++) {
        if (rows % d)
            continue;
        if ((size_t)d * row_bytes > target)
            break;
        best = d;
    }
    return best;
}

static qscale_type qscale_of(int io)
{
    return io == ONNX_FLOAT16 ? QSCALE_F16 : io == ONNX_BFLOAT16 ? QSCALE_BF16 : QSCALE_F32;
}

/* ---- small tensors ---- */

typedef struct small_ctx {
    int n_parts;
    float offset;
    int dtype;
    bool allow_nonfinite;
    const st_tensor *parts[]; /* n_parts */
} small_ctx;

/* Concatenated parts (+ offset) converted to dtype into out; releases the pages read. The
 * offset is added before the overflow check: a norm stored as w - 1 overflows as w. */
static int convert_parts(const small_ctx *c, float *f, void *out, m2o_err *err)
{
    int64_t off = 0, total = 0;
    for (int i = 0; i < c->n_parts; i++) {
        const st_tensor *t = c->parts[i];
        if (tensor_read_f32(t, 0, t->numel, f + off, err) ||
            check_finite(f + off, (size_t)t->numel, 0, t->name, c->allow_nonfinite, err))
            return -1;
        wt_release(t, 0, t->nbytes);
        off += t->numel;
    }
    total = off;
    if (c->offset != 0.0f)
        for (int64_t i = 0; i < total; i++)
            f[i] += c->offset;
    for (int i = 0, at = 0; i < c->n_parts; at += (int)c->parts[i]->numel, i++)
        if (check_fits(f + at, (size_t)c->parts[i]->numel, 0, c->parts[i]->name, c->dtype, err))
            return -1;
    f32_to_dtype(f, out, (size_t)total, c->dtype);
    return 0;
}

static int produce_small(void *vctx, int64_t chunk, void *out, m2o_err *err)
{
    const small_ctx *c = vctx;
    (void)chunk;
    int64_t total = 0;
    for (int i = 0; i < c->n_parts; i++)
        total += c->parts[i]->numel;
    float *f = m2o_malloc((size_t)total * sizeof(float) + 1, err);
    if (!f)
        return -1;
    int rc = convert_parts(c, f, out, err);
    free(f);
    return rc;
}

int wt_small(const st_tensor *const *parts, int n_parts, float offset, int dtype,
             bool allow_nonfinite, int64_t *total, wt_producer *p, m2o_err *err)
{
    *total = 0;
    for (int i = 0; i < n_parts; i++) {
        if (require_float(parts[i], err))
            return -1;
        *total += parts[i]->numel;
    }
    small_ctx *c = m2o_malloc(sizeof *c + (size_t)n_parts * sizeof c->parts[0], err);
    if (!c)
        return -1;
    c->n_parts = n_parts;
    c->offset = offset;
    c->dtype = dtype;
    c->allow_nonfinite = allow_nonfinite;
    for (int i = 0; i < n_parts; i++)
        c->parts[i] = parts[i];
    *p = (wt_producer){.one = produce_small, .ctx = c, .free_ctx = free, .n_chunks = 1,
                       .chunk_bytes = {(size_t)*total * onnx_dtype_size(dtype)}};
    return 0;
}

/* ---- quantize-dequantize (QMoE expert biases) ---- */

/* f → codes/scales → d: NaN/Inf cannot be encoded, a scale may overflow the io dtype, and the
 * dequantized values may overflow it too (each named by its element). */
static int qdq_values(const st_tensor *t, int64_t rows, int64_t cols, const qb_params *p, int io,
                      float *f, float *d, uint8_t *codes, void *scales, m2o_err *err)
{
    size_t n = (size_t)(rows * cols);
    int rc = tensor_read_f32(t, 0, (int64_t)n, f, err);
    if (!rc)
        rc = check_encodable(f, n, 0, t->name, int_format_name(p->bits), err);
    if (!rc)
        rc = qb_quantize(f, rows, cols, p, codes, scales, NULL, err);
    int64_t bad = rc ? -1 : first_nonfinite_scale(scales, qb_scales_count(rows, cols, p), io);
    if (bad >= 0)
        rc = scale_overflow_fail(t->name, bad * p->block_size, p->block_size, io, err);
    if (!rc)
        rc = qb_dequantize(codes, scales, NULL, rows, cols, p, d, err);
    if (!rc)
        rc = check_fits(d, n, 0, t->name, io, err);
    return rc;
}

void *wt_small_qdq(const st_tensor *t, int64_t rows, int64_t cols, int bits, int block_size,
                   int io, m2o_err *err)
{
    qb_params p = {.bits = bits, .block_size = block_size, .symmetric = true,
                   .scale_type = qscale_of(io)};
    if (t->numel != rows * cols) {
        m2o_fail(err, "tensor %s: %lld elements, expected [%lld, %lld]", t->name,
                 (long long)t->numel, (long long)rows, (long long)cols);
        return NULL;
    }
    if (qb_check(rows, cols, &p, err)) {
        m2o_wrap(err, "quantizing %s", t->name);
        return NULL;
    }
    size_t n = (size_t)(rows * cols);
    float *f = m2o_malloc(n * sizeof(float), err), *d = m2o_malloc(n * sizeof(float), err);
    uint8_t *codes = m2o_malloc(qb_codes_bytes(rows, cols, &p), err);
    void *scales = m2o_malloc(qb_scales_count(rows, cols, &p) * qscale_size(p.scale_type), err);
    void *out = m2o_malloc(n * onnx_dtype_size(io), err);
    int rc = (f && d && codes && scales && out) ? 0 : -1;
    if (!rc)
        rc = qdq_values(t, rows, cols, &p, io, f, d, codes, scales, err);
    if (!rc)
        f32_to_dtype(d, out, n, io);
    free(f), free(d), free(codes), free(scales);
    if (rc) {
        free(out);
        return NULL;
    }
    return out;
}

/* ---- -exp(A_log) (Gated DeltaNet, docs/FORMATS.md §13) ---- */

float *wt_neg_exp_f32(const st_tensor *t, bool allow_nonfinite, m2o_err *err)
{
    int64_t n = t->numel;
    float *v = m2o_malloc((size_t)n * sizeof(float), err);
    if (!v)
        return NULL;
    int rc = require_float(t, err);
    if (!rc)
        rc = tensor_read_f32(t, 0, n, v, err);
    if (!rc)
        rc = check_finite(v, (size_t)n, 0, t->name, allow_nonfinite, err);
    for (int64_t i = 0; i < n && !rc; i++) {
        float a = v[i];
        v[i] = -expf(a);
        if (isinf(v[i]) && isfinite(a)) /* a finite A_log must not become -Inf */
            rc = m2o_fail(err, "tensor %s: element %lld is %g, whose -exp() overflows float32 "
                               "(A_log above 88.7); fix the checkpoint",
                          t->name, (long long)i, (double)a);
    }
    if (rc) {
        free(v);
        return NULL;
    }
    return v;
}

/* ---- whole tensor converted by rows ---- */

typedef struct convert_ctx {
    const st_tensor *t;
    int64_t rows_per_chunk, cols;
    int dtype;
    bool allow_nonfinite;
} convert_ctx;

static int produce_convert(void *vctx, int64_t chunk, void *out, m2o_err *err)
{
    const convert_ctx *c = vctx;
    int64_t first = chunk * c->rows_per_chunk * c->cols, n = c->rows_per_chunk * c->cols;
    float *f = m2o_malloc((size_t)(n < PIECE_ELEMS ? n : PIECE_ELEMS) * sizeof(float) + 1, err);
    if (!f)
        return -1;
    size_t es = st_dtype_size(c->t->dtype), os = onnx_dtype_size(c->dtype);
    wt_reader rd;
    wt_reader_init(&rd);
    wt_reader_add(&rd, c->t, (size_t)first * es, es);
    wt_read_ahead(c->t, (size_t)first * es, (size_t)(2 * n) * es); /* this chunk and the next */
    int rc = 0;
    for (int64_t i = 0; i < n && !rc; i += PIECE_ELEMS) {
        int64_t m = n - i < PIECE_ELEMS ? n - i : PIECE_ELEMS;
        rc = tensor_read_f32(c->t, first + i, m, f, err);
        if (!rc)
            rc = check_float_out(f, (size_t)m, first + i, c->t->name, c->allow_nonfinite,
                                 c->dtype, err);
        if (!rc)
            f32_to_dtype(f, (uint8_t *)out + (size_t)i * os, (size_t)m, c->dtype);
        wt_reader_done(&rd, i + m);
    }
    wt_release(c->t, (size_t)first * es, (size_t)n * es);
    free(f);
    return rc;
}

int wt_converted(const st_tensor *t, const wt_opts *o, wt_producer *p, m2o_err *err)
{
    if (t->ndim < 1)
        return m2o_fail(err, "tensor %s: expected at least one dimension", t->name);
    if (require_float(t, err))
        return -1;
    convert_ctx *c = m2o_calloc(1, sizeof *c, err);
    if (!c)
        return -1;
    int64_t rows = t->shape[0];
    c->t = t;
    c->cols = rows ? t->numel / rows : 0;
    c->dtype = o->io;
    c->allow_nonfinite = o->allow_nonfinite;
    size_t row_bytes = (size_t)c->cols * onnx_dtype_size(o->io);
    c->rows_per_chunk = chunk_rows(rows, row_bytes, CHUNK_TARGET_BYTES);
    *p = (wt_producer){.one = produce_convert, .ctx = c, .free_ctx = free,
                       .n_chunks = rows / c->rows_per_chunk,
                       .chunk_bytes = {(size_t)c->rows_per_chunk * row_bytes}};
    return 0;
}
