#include "graph/weights.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/half.h"
#include "quant/quant.h"

#define CHUNK_TARGET_BYTES ((size_t)16 << 20)

int64_t linear_src_n(const linear_src *s)
{
    int64_t n = 0;
    for (int i = 0; i < s->n_parts; i++)
        n += s->w[i]->shape[0];
    return n;
}

int64_t linear_src_k(const linear_src *s)
{
    return s->w[0]->shape[1];
}

int tensor_read_f32(const st_tensor *t, int64_t first, int64_t count, float *out, m2o_err *err)
{
    if (first < 0 || count < 0 || first + count > t->numel)
        return m2o_fail(err, "tensor %s: elements [%lld, %lld) out of range (numel %lld)",
                        t->name, (long long)first, (long long)(first + count),
                        (long long)t->numel);
    const uint8_t *p = t->data + (size_t)first * st_dtype_size(t->dtype);
    /* The conversion kernels take aligned 16-bit arrays; a tensor at an odd offset (legal in
     * safetensors) goes through the reader's own element-wise path. */
    switch (t->dtype) {
    case ST_BF16:
        if (((uintptr_t)p & 1) == 0) {
            convert_bf16_to_f32((const uint16_t *)(const void *)p, out, (size_t)count);
            return 0;
        }
        break;
    case ST_F16:
        if (((uintptr_t)p & 1) == 0) {
            convert_f16_to_f32((const uint16_t *)(const void *)p, out, (size_t)count);
            return 0;
        }
        break;
    case ST_F32:
        memcpy(out, p, (size_t)count * sizeof(float));
        return 0;
    default:
        return m2o_fail(err, "tensor %s (%s): expected a BF16, F16 or F32 tensor", t->name,
                        st_dtype_name(t->dtype));
    }
    return st_read_f32(t, first, count, out, err);
}

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

int check_finite(const float *v, size_t n, int64_t first_index, const char *tensor, bool allow,
                 m2o_err *err)
{
    if (allow)
        return 0;
    int64_t i = f32_first_nonfinite(v, n);
    if (i < 0)
        return 0;
    return m2o_fail(err, "tensor %s: element %lld is %s; fix the checkpoint or pass "
                         "--allow-nonfinite to keep it",
                    tensor, (long long)(first_index + i), isnan(v[i]) ? "NaN" : "Inf");
}

int check_encodable(const float *v, size_t n, int64_t first_index, const char *tensor,
                    const char *format, m2o_err *err)
{
    int64_t i = f32_first_nonfinite(v, n);
    if (i < 0)
        return 0;
    return m2o_fail(err, "tensor %s: element %lld is %s, which %s cannot encode; fix the "
                         "checkpoint (--allow-nonfinite keeps NaN/Inf only in float "
                         "exports: -p fp32, fp16 or bf16)",
                    tensor, (long long)(first_index + i), isnan(v[i]) ? "NaN" : "Inf", format);
}

/* Smallest magnitude that rounds to Inf (round to nearest even): half an ulp above the largest
 * finite value. */
static double overflow_threshold(int dtype)
{
    return dtype == ONNX_FLOAT16 ? 65520.0 : dtype == ONNX_BFLOAT16 ? 0x1.fffp+127 : INFINITY;
}

static const char *overflow_type_text(int dtype)
{
    return dtype == ONNX_FLOAT16 ? "float16 (largest finite 65504)"
                                 : "bfloat16 (largest finite 3.39e38)";
}

int64_t first_overflow(const float *v, size_t n, int dtype)
{
    double lim = overflow_threshold(dtype);
    if (isinf(lim))
        return -1;
    for (size_t i = 0; i < n; i++)
        if (isfinite(v[i]) && fabs((double)v[i]) >= lim)
            return (int64_t)i;
    return -1;
}

int check_fits(const float *v, size_t n, int64_t first_index, const char *tensor, int dtype,
               m2o_err *err)
{
    int64_t i = first_overflow(v, n, dtype);
    if (i < 0)
        return 0;
    return m2o_fail(err, "tensor %s: element %lld is %g, which overflows %s and would be "
                         "written as Inf; export with %s",
                    tensor, (long long)(first_index + i), (double)v[i], overflow_type_text(dtype),
                    dtype == ONNX_FLOAT16 ? "-p bf16 or -p fp32" : "-p fp32");
}

int64_t first_nonfinite_scale(const void *scales, size_t n, int elem_type)
{
    const uint16_t *h = scales;
    for (size_t i = 0; i < n; i++) {
        bool bad = elem_type == ONNX_FLOAT16    ? (h[i] & 0x7c00) == 0x7c00
                   : elem_type == ONNX_BFLOAT16 ? (h[i] & 0x7f80) == 0x7f80
                                                : !isfinite(((const float *)scales)[i]);
        if (bad)
            return (int64_t)i;
    }
    return -1;
}

int scale_overflow_fail(const char *tensor, int64_t block_first, int block_size, int elem_type,
                        m2o_err *err)
{
    return m2o_fail(err, "tensor %s: the %d-value quantization block starting at element %lld "
                         "needs a scale that overflows %s and would be written as Inf; use %s",
                    tensor, block_size, (long long)block_first, overflow_type_text(elem_type),
                    elem_type == ONNX_FLOAT16
                        ? "--extra_options use_cuda_bf16=true (bfloat16 scales) or -e cpu "
                          "(float32 scales)"
                        : "-e cpu (float32 scales)");
}

const char *int_format_name(int bits)
{
    return bits == 8 ? "int8 quantization" : "int4 quantization";
}

int require_float(const st_tensor *t, m2o_err *err)
{
    if (t->dtype == ST_BF16 || t->dtype == ST_F16 || t->dtype == ST_F32)
        return 0;
    return m2o_fail(err, "%s: tensor '%s' is %s, but it holds weights read as floating point "
                         "(BF16, F16 or F32) — the checkpoint is corrupt or not of this "
                         "architecture; re-download it",
                    st_file_path(t->file), t->name, st_dtype_name(t->dtype));
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

/* ---- small tensors ---- */

/* Tensors of at least this many bytes are read when the model is written, not held in the
 * graph (expert biases are E x N: megabytes per layer for gpt-oss-120b), so memory does not
 * grow with the number of layers. */
#define SMALL_STREAM_BYTES ((size_t)64 << 10)

typedef struct small_ctx {
    int n_parts;
    float offset;
    int dtype;
    bool allow_nonfinite;
    const st_tensor *parts[]; /* n_parts */
} small_ctx;

/* Concatenated parts (+ offset) converted to dtype into out; releases the pages read. */
static int convert_parts(const small_ctx *c, float *f, void *out, m2o_err *err)
{
    int64_t off = 0, total = 0;
    for (int i = 0; i < c->n_parts; i++) {
        const st_tensor *t = c->parts[i];
        if (tensor_read_f32(t, 0, t->numel, f + off, err) ||
            check_finite(f + off, (size_t)t->numel, 0, t->name, c->allow_nonfinite, err))
            return -1;
        st_release(t, 0, t->nbytes);
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

static int add_small(gb *b, const char *name, int n_parts, const st_tensor *const *parts,
                     float offset, int dtype, int ndim, const int64_t *dims, m2o_err *err)
{
    int64_t total = 0, want = 1;
    if (n_parts < 1)
        return m2o_fail(err, "initializer %s: no source tensor", name);
    for (int i = 0; i < n_parts; i++) {
        if (require_float(parts[i], err))
            return -1;
        total += parts[i]->numel;
    }
    for (int i = 0; i < ndim; i++)
        want *= dims[i];
    if (total != want)
        return m2o_fail(err, "initializer %s: source tensors hold %lld elements, shape needs %lld",
                        name, (long long)total, (long long)want);
    small_ctx *c = m2o_malloc(sizeof *c + (size_t)n_parts * sizeof c->parts[0], err);
    if (!c)
        return -1;
    c->n_parts = n_parts;
    c->offset = offset;
    c->dtype = dtype;
    c->allow_nonfinite = b->o->allow_nonfinite;
    for (int i = 0; i < n_parts; i++)
        c->parts[i] = parts[i];
    size_t nbytes = (size_t)total * onnx_dtype_size(dtype);
    if (nbytes >= SMALL_STREAM_BYTES) {
        graph_add_streamed_initializer(b->g, name, dtype, ndim, dims, 1, nbytes, produce_small,
                                       c, free);
        return 0;
    }
    float *f = m2o_malloc((size_t)total * sizeof(float) + 1, err);
    void *out = f ? m2o_malloc(nbytes + 1, err) : NULL;
    int rc = out ? convert_parts(c, f, out, err) : -1;
    if (!rc)
        graph_add_initializer(b->g, name, dtype, ndim, dims, out, nbytes);
    free(f);
    free(out);
    free(c);
    return rc;
}

int gb_add_small(gb *b, const char *name, int n_parts, const st_tensor *const *parts,
                 float offset, int ndim, const int64_t *dims, m2o_err *err)
{
    return add_small(b, name, n_parts, parts, offset, b->io, ndim, dims, err);
}

int gb_add_small_f32(gb *b, const char *name, int n_parts, const st_tensor *const *parts,
                     int ndim, const int64_t *dims, m2o_err *err)
{
    return add_small(b, name, n_parts, parts, 0.0f, ONNX_FLOAT, ndim, dims, err);
}

static qscale_type qscale_of(int io)
{
    return io == ONNX_FLOAT16 ? QSCALE_F16 : io == ONNX_BFLOAT16 ? QSCALE_BF16 : QSCALE_F32;
}

int gb_add_small_qdq(gb *b, const char *name, const st_tensor *t, int64_t rows, int64_t cols,
                     int bits, int block_size, m2o_err *err)
{
    qb_params p = {.bits = bits, .block_size = block_size, .symmetric = true,
                   .scale_type = qscale_of(b->io)};
    if (t->numel != rows * cols)
        return m2o_fail(err, "tensor %s: %lld elements, expected [%lld, %lld]", t->name,
                        (long long)t->numel, (long long)rows, (long long)cols);
    if (qb_check(rows, cols, &p, err))
        return m2o_wrap(err, "quantizing %s", t->name);
    size_t n = (size_t)(rows * cols);
    float *f = m2o_malloc(n * sizeof(float), err), *d = m2o_malloc(n * sizeof(float), err);
    uint8_t *codes = m2o_malloc(qb_codes_bytes(rows, cols, &p), err);
    void *scales = m2o_malloc(qb_scales_count(rows, cols, &p) * qscale_size(p.scale_type), err);
    void *out = m2o_malloc(n * gb_io_size(b), err);
    int rc = (f && d && codes && scales && out) ? 0 : -1;
    if (!rc)
        rc = tensor_read_f32(t, 0, (int64_t)n, f, err);
    if (!rc)
        rc = check_encodable(f, n, 0, t->name, int_format_name(bits), err);
    if (!rc)
        rc = qb_quantize(f, rows, cols, &p, codes, scales, NULL, err);
    int64_t bad = rc ? -1 : first_nonfinite_scale(scales, qb_scales_count(rows, cols, &p), b->io);
    if (bad >= 0)
        rc = scale_overflow_fail(t->name, bad * block_size, block_size, b->io, err);
    if (!rc)
        rc = qb_dequantize(codes, scales, NULL, rows, cols, &p, d, err);
    if (!rc)
        rc = check_fits(d, n, 0, t->name, b->io, err);
    if (!rc) {
        int64_t dims[2] = {rows, cols};
        f32_to_dtype(d, out, n, b->io);
        graph_add_initializer(b->g, name, b->io, 2, dims, out, n * gb_io_size(b));
    }
    free(f), free(d), free(codes), free(scales), free(out);
    return rc;
}

/* ---- streamed: whole tensor converted by rows ---- */

typedef struct convert_ctx {
    const st_tensor *t;
    int64_t rows_per_chunk, cols;
    int dtype;
    bool allow_nonfinite;
} convert_ctx;

/* Elements per pass of the streamed converters: 256 KiB of float32 staging, so the read, the
 * check and the conversion of one piece all run in the core's cache. */
#define PIECE_ELEMS ((int64_t)64 << 10)

static int produce_convert(void *vctx, int64_t chunk, void *out, m2o_err *err)
{
    const convert_ctx *c = vctx;
    int64_t first = chunk * c->rows_per_chunk * c->cols, n = c->rows_per_chunk * c->cols;
    float *f = m2o_malloc((size_t)(n < PIECE_ELEMS ? n : PIECE_ELEMS) * sizeof(float) + 1, err);
    if (!f)
        return -1;
    size_t es = st_dtype_size(c->t->dtype), os = onnx_dtype_size(c->dtype);
    size_t released = (size_t)first * es;
    st_prefetch(c->t, (size_t)first * es, (size_t)(2 * n) * es); /* this chunk and the next */
    int rc = 0;
    for (int64_t i = 0; i < n && !rc; i += PIECE_ELEMS) {
        int64_t m = n - i < PIECE_ELEMS ? n - i : PIECE_ELEMS;
        rc = tensor_read_f32(c->t, first + i, m, f, err);
        if (!rc)
            rc = check_finite(f, (size_t)m, first + i, c->t->name, c->allow_nonfinite, err);
        if (!rc)
            rc = check_fits(f, (size_t)m, first + i, c->t->name, c->dtype, err);
        if (!rc)
            f32_to_dtype(f, (uint8_t *)out + (size_t)i * os, (size_t)m, c->dtype);
        st_release_behind(c->t, &released, (size_t)(first + i + m) * es);
    }
    st_release(c->t, (size_t)first * es, (size_t)n * es);
    free(f);
    return rc;
}

int gb_add_converted(gb *b, const char *name, const st_tensor *t, m2o_err *err)
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
    c->dtype = b->io;
    c->allow_nonfinite = b->o->allow_nonfinite;
    size_t row_bytes = (size_t)c->cols * gb_io_size(b);
    c->rows_per_chunk = chunk_rows(rows, row_bytes, CHUNK_TARGET_BYTES);
    graph_add_streamed_initializer(b->g, name, b->io, t->ndim, t->shape,
                                   rows / c->rows_per_chunk, (size_t)c->rows_per_chunk * row_bytes,
                                   produce_convert, c, free);
    return 0;
}

/* ---- row access over a stacked linear source ---- */

/* Calls fn on each part's share of rows [r0, r0 + nr) of the stacked [N, K] source. */
typedef int (*part_rows_fn)(const st_tensor *w, int64_t first_row, int64_t rows, void *arg,
                            m2o_err *err);
static int for_part_rows(const linear_src *s, int64_t r0, int64_t nr, part_rows_fn fn, void *arg,
                         m2o_err *err)
{
    int64_t base = 0;
    for (int i = 0; i < s->n_parts && nr > 0; i++) {
        int64_t n_i = s->w[i]->shape[0];
        if (r0 < base + n_i) {
            int64_t lr = r0 - base, take = n_i - lr < nr ? n_i - lr : nr;
            if (fn(s->w[i], lr, take, arg, err))
                return -1;
            r0 += take;
            nr -= take;
        }
        base += n_i;
    }
    return 0;
}

typedef struct read_rows_arg {
    float *out;
    bool allow_nonfinite;
    const char *quant;
} read_rows_arg;

static int read_part_rows(const st_tensor *w, int64_t lr, int64_t take, void *varg, m2o_err *err)
{
    read_rows_arg *a = varg;
    int64_t K = w->shape[1];
    if (tensor_read_f32(w, lr * K, take * K, a->out, err))
        return -1;
    if (a->quant ? check_encodable(a->out, (size_t)(take * K), lr * K, w->name, a->quant, err)
                 : check_finite(a->out, (size_t)(take * K), lr * K, w->name, a->allow_nonfinite,
                                err))
        return -1;
    a->out += take * K;
    return 0;
}

static int prefetch_part_rows(const st_tensor *w, int64_t lr, int64_t take, void *arg,
                              m2o_err *err)
{
    (void)arg, (void)err;
    size_t row = (size_t)w->shape[1] * st_dtype_size(w->dtype);
    st_prefetch(w, (size_t)lr * row, (size_t)take * row);
    return 0;
}

static int release_part_rows(const st_tensor *w, int64_t lr, int64_t take, void *arg,
                             m2o_err *err)
{
    (void)arg, (void)err;
    size_t row = (size_t)w->shape[1] * st_dtype_size(w->dtype);
    st_release(w, (size_t)lr * row, (size_t)take * row);
    return 0;
}

/* Reads rows [r0, r0 + nr) of the stacked [N, K] source as float32. `quant` names the integer
 * encoding the rows are for (NaN/Inf always fail), or is NULL for a float destination. */
static int linear_read_rows(const linear_src *s, int64_t r0, int64_t nr, float *out,
                            bool allow_nonfinite, const char *quant, m2o_err *err)
{
    read_rows_arg a = {out, allow_nonfinite, quant};
    return for_part_rows(s, r0, nr, read_part_rows, &a, err);
}

/* Releases the pages of rows [r0, r0 + nr) once a job is done with them. */
static void linear_release_rows(const linear_src *s, int64_t r0, int64_t nr)
{
    for_part_rows(s, r0, nr, release_part_rows, NULL, NULL);
}

/* ---- streamed: MatMul weight [K, N] ---- */

/* The transpose of the stacked [N, K] source is made band by band: a job reads nb whole source
 * rows (contiguous: each source byte is read once, and only that band is mapped), transposes
 * them and writes K pieces of nb elements, one into each output row, through a scattered
 * initializer. A job never crosses two parts. */
#define LINEAR_T_STAGING_BYTES ((size_t)16 << 20)

typedef struct linear_t_ctx {
    linear_src s;
    int64_t N, K, band;
    int64_t first_job[LINEAR_MAX_PARTS + 1]; /* part p's bands are jobs [first_job[p], [p+1]) */
    int dtype;
    bool allow_nonfinite;
} linear_t_ctx;

/* Rows [n0, n0 + nb) of part w as float32 transposed: t[k * nb + r] = w[n0 + r][k]. */
static int read_band_t(const linear_t_ctx *c, const st_tensor *w, int64_t n0, int64_t nb,
                       float *t, float *row, m2o_err *err)
{
    const uint8_t *p = w->data + (size_t)(n0 * c->K) * st_dtype_size(w->dtype);
    if (w->dtype == ST_BF16 && ((uintptr_t)p & 1) == 0) {
        convert_bf16_to_f32_transposed((const uint16_t *)(const void *)p, c->K, nb, c->K, t, nb);
    } else {
        for (int64_t r = 0; r < nb; r++) {
            if (tensor_read_f32(w, (n0 + r) * c->K, c->K, row, err))
                return -1;
            for (int64_t k = 0; k < c->K; k++)
                t[k * nb + r] = row[k];
        }
    }
    int64_t big = first_overflow(t, (size_t)(c->K * nb), c->dtype);
    if (big >= 0)
        return check_fits(t + big, 1, (n0 + big % nb) * c->K + big / nb, w->name, c->dtype, err);
    if (c->allow_nonfinite)
        return 0;
    int64_t bad = f32_first_nonfinite(t, (size_t)(c->K * nb));
    if (bad < 0)
        return 0;
    int64_t k = bad / nb, r = bad % nb;
    return check_finite(t + bad, 1, (n0 + r) * c->K + k, w->name, false, err);
}

static int produce_linear_t(void *vctx, int64_t job, graph_sink *sink, m2o_err *err)
{
    const linear_t_ctx *c = vctx;
    int p = 0;
    while (job >= c->first_job[p + 1])
        p++;
    const st_tensor *w = c->s.w[p];
    int64_t n_global = 0;
    for (int i = 0; i < p; i++)
        n_global += c->s.w[i]->shape[0];
    int64_t n0 = (job - c->first_job[p]) * c->band;
    int64_t nb = w->shape[0] - n0 < c->band ? w->shape[0] - n0 : c->band;
    size_t io = onnx_dtype_size(c->dtype), row_bytes = (size_t)c->K * st_dtype_size(w->dtype);
    st_prefetch(w, (size_t)n0 * row_bytes, (size_t)(2 * nb) * row_bytes);
    float *t = m2o_malloc((size_t)(c->K * nb) * sizeof(float), err);
    float *row = m2o_malloc((size_t)c->K * sizeof(float), err);
    uint8_t *piece = m2o_malloc((size_t)nb * io, err);
    int rc = (t && row && piece) ? 0 : -1;
    if (!rc)
        rc = read_band_t(c, w, n0, nb, t, row, err);
    st_release(w, (size_t)n0 * row_bytes, (size_t)nb * row_bytes);
    for (int64_t k = 0; k < c->K && !rc; k++) {
        f32_to_dtype(t + k * nb, piece, (size_t)nb, c->dtype);
        rc = graph_sink_write(sink, (uint64_t)(k * c->N + n_global + n0) * io, piece,
                              (size_t)nb * io, err);
    }
    free(t);
    free(row);
    free(piece);
    return rc;
}

int gb_add_linear_t(gb *b, const char *name, const linear_src *s, m2o_err *err)
{
    for (int i = 0; i < s->n_parts; i++)
        if (require_float(s->w[i], err))
            return -1;
    linear_t_ctx *c = m2o_calloc(1, sizeof *c, err);
    if (!c)
        return -1;
    c->s = *s;
    c->N = linear_src_n(s);
    c->K = linear_src_k(s);
    c->dtype = b->io;
    c->allow_nonfinite = b->o->allow_nonfinite;
    /* rows per band: the float staging within LINEAR_T_STAGING_BYTES, a multiple of 8 (8x8
     * transposes) when there are that many */
    int64_t band = (int64_t)(LINEAR_T_STAGING_BYTES / ((size_t)c->K * sizeof(float)));
    c->band = band >= 8 ? band / 8 * 8 : 1;
    for (int p = 0; p < s->n_parts; p++)
        c->first_job[p + 1] = c->first_job[p] + (s->w[p]->shape[0] + c->band - 1) / c->band;
    int64_t dims[2] = {c->K, c->N};
    graph_add_scattered_initializer(b->g, name, b->io, 2, dims, c->first_job[s->n_parts],
                                    (uint64_t)(c->K * c->N) * gb_io_size(b), produce_linear_t, c,
                                    free);
    return 0;
}

/* ---- streamed: MatMulNBits codes and scales ---- */

typedef struct nbits_ctx {
    linear_src s;
    int64_t N, K, rows_per_chunk;
    qb_params p;
    bool allow_nonfinite;
} nbits_ctx;

/* Fails when a block scale of rows [r0, r0 + nr) overflowed its type, naming the checkpoint
 * part and element where the block starts. */
static int check_band_scales(const nbits_ctx *c, const uint8_t *scales, int64_t r0, int64_t nr,
                             m2o_err *err)
{
    int elem = c->p.scale_type == QSCALE_F16 ? ONNX_FLOAT16
               : c->p.scale_type == QSCALE_BF16 ? ONNX_BFLOAT16 : ONNX_FLOAT;
    int64_t nb = c->K / c->p.block_size;
    int64_t bad = first_nonfinite_scale(scales, (size_t)(nr * nb), elem);
    if (bad < 0)
        return 0;
    int64_t row = r0 + bad / nb;
    int i = 0;
    while (i + 1 < c->s.n_parts && row >= c->s.w[i]->shape[0])
        row -= c->s.w[i++]->shape[0];
    return scale_overflow_fail(c->s.w[i]->name, row * c->K + bad % nb * c->p.block_size,
                               c->p.block_size, elem, err);
}

/* Codes (outs[0]) and scales (outs[1]) of rows [r0, r0 + rows_per_chunk) from one quantization,
 * a cache-sized band of rows at a time. */
static int produce_nbits(void *vctx, int64_t chunk, void *const *outs, m2o_err *err)
{
    const nbits_ctx *c = vctx;
    int64_t nr = c->rows_per_chunk, r0 = chunk * nr, K = c->K;
    int64_t band = PIECE_ELEMS / K < 1 ? 1 : PIECE_ELEMS / K;
    band = band < nr ? band : nr;
    float *w = m2o_malloc((size_t)(band * K) * sizeof(float), err);
    if (!w)
        return -1;
    uint8_t *codes = outs[0], *scales = outs[1];
    size_t ss = qscale_size(c->p.scale_type);
    /* this chunk's rows and the next chunk's start reading from disk now */
    int64_t ahead = r0 + 2 * nr <= c->N ? 2 * nr : c->N - r0;
    for_part_rows(&c->s, r0, ahead, prefetch_part_rows, NULL, NULL);
    int rc = 0;
    for (int64_t i = 0; i < nr && !rc; i += band) {
        int64_t m = nr - i < band ? nr - i : band;
        /* the quantizer refuses non-finite weights itself; only then is the band read again
         * with the check, to name the tensor and element */
        rc = linear_read_rows(&c->s, r0 + i, m, w, true, NULL, err);
        if (!rc && qb_quantize(w, m, K, &c->p, codes + qb_codes_bytes(i, K, &c->p),
                               scales + qb_scales_count(i, K, &c->p) * ss, NULL, err)) {
            linear_read_rows(&c->s, r0 + i, m, w, false, int_format_name(c->p.bits), err);
            rc = -1;
        }
        if (!rc)
            rc = check_band_scales(c, scales + qb_scales_count(i, K, &c->p) * ss, r0 + i, m, err);
    }
    linear_release_rows(&c->s, r0, nr);
    free(w);
    return rc;
}

int gb_add_nbits(gb *b, const char *codes_name, const char *scales_name, const linear_src *s,
                 int bits, int block_size, m2o_err *err)
{
    qb_params p = {.bits = bits, .block_size = block_size, .symmetric = true,
                   .scale_type = qscale_of(b->io)};
    int64_t N = linear_src_n(s), K = linear_src_k(s);
    for (int i = 0; i < s->n_parts; i++)
        if (require_float(s->w[i], err))
            return -1;
    if (qb_check(N, K, &p, err))
        return m2o_wrap(err, "quantizing %s to MatMulNBits", s->w[0]->name);
    size_t code_row = qb_codes_bytes(1, K, &p);
    size_t scale_row = (size_t)(K / block_size) * gb_io_size(b);
    int64_t rpc = chunk_rows(N, code_row + scale_row, CHUNK_TARGET_BYTES);
    nbits_ctx *c = m2o_calloc(1, sizeof *c, err);
    if (!c)
        return -1;
    c->s = *s;
    c->N = N;
    c->K = K;
    c->p = p;
    c->rows_per_chunk = rpc;
    c->allow_nonfinite = b->o->allow_nonfinite;
    /* one group: each band of rows is quantized once for both tensors */
    int64_t cdims[3] = {N, K / block_size, (int64_t)block_size * bits / 8};
    int64_t sdims[1] = {N * (K / block_size)};
    graph_stream_member m[2] = {
        {.name = codes_name, .elem_type = ONNX_UINT8, .ndim = 3, .dims = cdims,
         .chunk_bytes = (size_t)rpc * code_row},
        {.name = scales_name, .elem_type = b->io, .ndim = 1, .dims = sdims,
         .chunk_bytes = (size_t)rpc * scale_row},
    };
    graph_add_streamed_group(b->g, 2, m, N / rpc, produce_nbits, c, free);
    return 0;
}
