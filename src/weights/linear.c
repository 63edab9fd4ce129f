/* Producers of linear-layer weights from a stacked linear source (docs/FORMATS.md §11.2): the
 * MatMul weight transposed to [K, N], and MatMulNBits codes and scales (§4). */
#include <stdlib.h>
#include <string.h>

#include "quant/quant.h"
#include "weights/nonfinite.h"
#include "weights/producer.h"
#include "weights/reader.h"

#define CHUNK_TARGET_BYTES ((size_t)16 << 20)
/* Elements per band of a MatMulNBits chunk: 256 KiB of float32, so a band stays in cache. */
#define PIECE_ELEMS ((int64_t)64 << 10)

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

static int require_float_parts(const linear_src *s, m2o_err *err)
{
    for (int i = 0; i < s->n_parts; i++)
        if (require_float(s->w[i], err))
            return -1;
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
    if (tensor_read_f32(w, lr * K, take * K, a->out, err) ||
        check_values(a->out, (size_t)(take * K), lr * K, w->name, a->quant, a->allow_nonfinite,
                     err))
        return -1;
    a->out += take * K;
    return 0;
}

static int ahead_part_rows(const st_tensor *w, int64_t lr, int64_t take, void *arg, m2o_err *err)
{
    (void)arg, (void)err;
    size_t row = (size_t)w->shape[1] * st_dtype_size(w->dtype);
    wt_read_ahead(w, (size_t)lr * row, (size_t)take * row);
    return 0;
}

static int release_part_rows(const st_tensor *w, int64_t lr, int64_t take, void *arg,
                             m2o_err *err)
{
    (void)arg, (void)err;
    size_t row = (size_t)w->shape[1] * st_dtype_size(w->dtype);
    wt_release(w, (size_t)lr * row, (size_t)take * row);
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

/* ---- MatMul weight [K, N] ---- */

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

/* Rows [n0, n0 + nb) of part w as float32 transposed: t[k * nb + r] = w[n0 + r][k]. Overflow
 * is checked before NaN/Inf (element order within the band is transposed, so the first of
 * each kind is named). */
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

/* Job `job`'s part, its first row within the part, and the part's first row in the stack. */
static const st_tensor *job_band(const linear_t_ctx *c, int64_t job, int64_t *n0,
                                 int64_t *n_global)
{
    int p = 0;
    while (job >= c->first_job[p + 1])
        p++;
    *n_global = 0;
    for (int i = 0; i < p; i++)
        *n_global += c->s.w[i]->shape[0];
    *n0 = (job - c->first_job[p]) * c->band;
    return c->s.w[p];
}

static int produce_linear_t(void *vctx, int64_t job, graph_sink *sink, m2o_err *err)
{
    const linear_t_ctx *c = vctx;
    int64_t n0, n_global;
    const st_tensor *w = job_band(c, job, &n0, &n_global);
    int64_t nb = w->shape[0] - n0 < c->band ? w->shape[0] - n0 : c->band;
    size_t io = onnx_dtype_size(c->dtype), row_bytes = (size_t)c->K * st_dtype_size(w->dtype);
    wt_read_ahead(w, (size_t)n0 * row_bytes, (size_t)(2 * nb) * row_bytes);
    float *t = m2o_malloc((size_t)(c->K * nb) * sizeof(float), err);
    float *row = m2o_malloc((size_t)c->K * sizeof(float), err);
    uint8_t *piece = m2o_malloc((size_t)nb * io, err);
    int rc = (t && row && piece) ? 0 : -1;
    if (!rc)
        rc = read_band_t(c, w, n0, nb, t, row, err);
    wt_release(w, (size_t)n0 * row_bytes, (size_t)nb * row_bytes);
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

int wt_linear_t(const linear_src *s, const wt_opts *o, wt_producer *p, m2o_err *err)
{
    if (require_float_parts(s, err))
        return -1;
    linear_t_ctx *c = m2o_calloc(1, sizeof *c, err);
    if (!c)
        return -1;
    c->s = *s;
    c->N = linear_src_n(s);
    c->K = linear_src_k(s);
    c->dtype = o->io;
    c->allow_nonfinite = o->allow_nonfinite;
    /* rows per band: the float staging within LINEAR_T_STAGING_BYTES, a multiple of 8 (8x8
     * transposes) when there are that many */
    int64_t band = (int64_t)(LINEAR_T_STAGING_BYTES / ((size_t)c->K * sizeof(float)));
    c->band = band >= 8 ? band / 8 * 8 : 1;
    for (int i = 0; i < s->n_parts; i++)
        c->first_job[i + 1] = c->first_job[i] + (s->w[i]->shape[0] + c->band - 1) / c->band;
    *p = (wt_producer){.scatter = produce_linear_t, .ctx = c, .free_ctx = free,
                       .n_chunks = c->first_job[s->n_parts],
                       .total_bytes = (uint64_t)(c->K * c->N) * onnx_dtype_size(o->io)};
    return 0;
}

/* ---- MatMulNBits codes, scales and zero points ---- */

typedef struct nbits_ctx {
    linear_src s;
    int64_t N, K, rows_per_chunk;
    qb_params p;
    wt_nbits_method method;
    qscale_type source_type; /* INC RTN: the type ONNX Runtime takes max - min in (§4.11) */
    bool zero_points;
    bool allow_nonfinite;
    qerr_acc *qerr; /* per-chunk error slots, or NULL (weights/qerr_track.h) */
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

/* k_quant of a single row when the matrix has more: ONNX Runtime sums a one-block row of a
 * many-row matrix left to right, of a one-row matrix pairwise (FORMATS §4.10), so the row is
 * quantized beside a copy of itself and the first row's bytes kept. */
static int kquant_lone_row(const nbits_ctx *c, const float *w, uint8_t *codes, uint8_t *scales,
                           uint8_t *zp, m2o_err *err)
{
    size_t cb = qb_codes_bytes(1, c->K, &c->p), sb = qb_scales_count(1, c->K, &c->p) * qscale_size(c->p.scale_type);
    size_t zb = qb_zero_points_bytes(1, c->K, &c->p);
    float *w2 = m2o_malloc((size_t)(2 * c->K) * sizeof(float), err);
    uint8_t *out = m2o_malloc(2 * (cb + sb + zb), err);
    int rc = w2 && out ? 0 : -1;
    if (!rc) {
        memcpy(w2, w, (size_t)c->K * sizeof(float));
        memcpy(w2 + c->K, w, (size_t)c->K * sizeof(float));
        rc = kq_quantize(w2, 2, c->K, &c->p, out, out + 2 * cb, out + 2 * (cb + sb), err);
    }
    if (!rc) {
        memcpy(codes, out, cb);
        memcpy(scales, out + 2 * cb, sb);
        memcpy(zp, out + 2 * (cb + sb), zb);
    }
    free(w2);
    free(out);
    return rc;
}

/* m rows of w through the tensor's method; every kernel works row by row, so a band's bytes
 * are those of the whole matrix's rows. */
static int nbits_quantize(const nbits_ctx *c, const float *w, int64_t m, uint8_t *codes,
                          uint8_t *scales, uint8_t *zp, m2o_err *err)
{
    if (c->method == WT_NBITS_KQUANT && m == 1 && c->N > 1 && c->K == c->p.block_size)
        return kquant_lone_row(c, w, codes, scales, zp, err);
    switch (c->method) {
    case WT_NBITS_SEARCH:
        return qb_quantize_search(w, m, c->K, &c->p, codes, scales, zp, err);
    case WT_NBITS_INC_RTN:
        return rtn_inc_quantize(w, m, c->K, &c->p, c->source_type, codes, scales, zp, err);
    case WT_NBITS_KQUANT:
        return kq_quantize(w, m, c->K, &c->p, codes, scales, zp, err);
    case WT_NBITS_MLAS:
    default:
        return qb_quantize(w, m, c->K, &c->p, codes, scales, zp, err);
    }
}

/* Rows [r0, r0 + m) into their codes, scales (and zero points). The quantizer refuses
 * non-finite weights itself; only then is the band read again with the check, to name the
 * tensor and element. */
static int nbits_band(const nbits_ctx *c, int64_t r0, int64_t m, float *w, uint8_t *codes,
                      uint8_t *scales, uint8_t *zp, m2o_err *err)
{
    if (linear_read_rows(&c->s, r0, m, w, true, NULL, err))
        return -1;
    if (nbits_quantize(c, w, m, codes, scales, zp, err)) {
        linear_read_rows(&c->s, r0, m, w, false, int_format_name(c->p.bits), err);
        return -1;
    }
    return check_band_scales(c, scales, r0, m, err);
}

/* Codes (outs[0]), scales (outs[1]) and zero points (outs[2], when written) of rows
 * [r0, r0 + rows_per_chunk) from one quantization, a cache-sized band of rows at a time. */
static int produce_nbits(void *vctx, int64_t chunk, void *const *outs, m2o_err *err)
{
    const nbits_ctx *c = vctx;
    int64_t nr = c->rows_per_chunk, r0 = chunk * nr, K = c->K;
    int64_t band = PIECE_ELEMS / K < 1 ? 1 : PIECE_ELEMS / K;
    band = band < nr ? band : nr;
    float *w = m2o_malloc((size_t)(band * K) * sizeof(float), err);
    if (!w)
        return -1;
    uint8_t *codes = outs[0], *scales = outs[1], *zp = c->zero_points ? outs[2] : NULL;
    size_t ss = qscale_size(c->p.scale_type), zrow = qb_zero_points_bytes(1, K, &c->p);
    /* this chunk's rows and the next chunk's start reading from disk now */
    int64_t ahead = r0 + 2 * nr <= c->N ? 2 * nr : c->N - r0;
    for_part_rows(&c->s, r0, ahead, ahead_part_rows, NULL, NULL);
    int rc = 0;
    for (int64_t i = 0; i < nr && !rc; i += band) {
        int64_t m = nr - i < band ? nr - i : band;
        uint8_t *bc = codes + qb_codes_bytes(i, K, &c->p);
        uint8_t *bs = scales + qb_scales_count(i, K, &c->p) * ss;
        uint8_t *bz = zp ? zp + (size_t)i * zrow : NULL;
        rc = nbits_band(c, r0 + i, m, w, bc, bs, bz, err);
        if (!rc && c->qerr)
            qerr_blockwise(w, m, K, &c->p, bc, bs, bz, &c->qerr[chunk]);
    }
    for_part_rows(&c->s, r0, nr, release_part_rows, NULL, NULL);
    free(w);
    return rc;
}

bool wt_nbits_has_zero_points(const wt_nbits_spec *q)
{
    return !q->symmetric || q->method == WT_NBITS_KQUANT;
}

int wt_nbits(const linear_src *s, const wt_nbits_spec *spec, const wt_opts *o, wt_producer *p,
             m2o_err *err)
{
    bool zp = wt_nbits_has_zero_points(spec);
    qb_params q = {.bits = spec->bits, .block_size = spec->block_size, .symmetric = !zp,
                   .scale_type = o->io == ONNX_FLOAT16    ? QSCALE_F16
                                 : o->io == ONNX_BFLOAT16 ? QSCALE_BF16
                                                          : QSCALE_F32};
    int64_t N = linear_src_n(s), K = linear_src_k(s);
    if (require_float_parts(s, err))
        return -1;
    if (qb_check(N, K, &q, err))
        return m2o_wrap(err, "quantizing %s to MatMulNBits", s->w[0]->name);
    size_t code_row = qb_codes_bytes(1, K, &q);
    size_t scale_row = (size_t)(K / spec->block_size) * onnx_dtype_size(o->io);
    size_t zp_row = qb_zero_points_bytes(1, K, &q);
    int64_t rpc = chunk_rows(N, code_row + scale_row + zp_row, CHUNK_TARGET_BYTES);
    nbits_ctx *c = m2o_calloc(1, sizeof *c, err);
    if (!c)
        return -1;
    /* ONNX Runtime's INC RTN takes max - min in the weights' own type: the builder's model holds
     * them in the io dtype (float16 on CUDA); bfloat16 has no such path there, float32 is used */
    *c = (nbits_ctx){.s = *s, .N = N, .K = K, .rows_per_chunk = rpc, .p = q,
                     .method = spec->method, .zero_points = zp,
                     .source_type = o->io == ONNX_FLOAT16 ? QSCALE_F16 : QSCALE_F32,
                     .allow_nonfinite = o->allow_nonfinite};
    *p = (wt_producer){.group = produce_nbits, .ctx = c, .free_ctx = free, .n_chunks = N / rpc,
                       .chunk_bytes = {(size_t)rpc * code_row, (size_t)rpc * scale_row,
                                       (size_t)rpc * zp_row},
                       .qerr = &c->qerr,
                       .qerr_fmt = {QERR_INT, spec->bits, spec->block_size, !zp, q.scale_type}};
    return 0;
}
