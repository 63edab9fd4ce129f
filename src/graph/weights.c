/* Declarations of the initializers made from checkpoint tensors; what fills them is in
 * src/weights/. */
#include "graph/weights.h"
#include "weights/qerr_track.h"

#include <stdlib.h>

/* Tensors of at least this many bytes are read when the model is written, not held in the
 * graph (expert biases are E x N: megabytes per layer for gpt-oss-120b), so memory does not
 * grow with the number of layers. */
#define SMALL_STREAM_BYTES ((size_t)64 << 10)

wt_opts gb_weight_opts(const gb *b)
{
    return (wt_opts){.io = b->io, .allow_nonfinite = b->o->allow_nonfinite};
}

void gb_attach_streamed(gb *b, const char *name, int elem_type, int ndim, const int64_t *dims,
                        const wt_producer *p)
{
    if (p->scatter)
        graph_add_scattered_initializer(b->g, name, elem_type, ndim, dims, p->n_chunks,
                                        p->total_bytes, p->scatter, p->ctx, p->free_ctx);
    else
        graph_add_streamed_initializer(b->g, name, elem_type, ndim, dims, p->n_chunks,
                                       p->chunk_bytes[0], p->one, p->ctx, p->free_ctx);
}

static int add_small(gb *b, const char *name, int n_parts, const st_tensor *const *parts,
                     float offset, int dtype, int ndim, const int64_t *dims, m2o_err *err)
{
    int64_t total, want = 1;
    wt_producer p;
    if (n_parts < 1)
        return m2o_fail(err, "initializer %s: no source tensor", name);
    if (wt_small(parts, n_parts, offset, dtype, b->o->allow_nonfinite, &total, &p, err))
        return -1;
    for (int i = 0; i < ndim; i++)
        want *= dims[i];
    if (total != want) {
        p.free_ctx(p.ctx);
        return m2o_fail(err, "initializer %s: source tensors hold %lld elements, shape needs %lld",
                        name, (long long)total, (long long)want);
    }
    if (p.chunk_bytes[0] >= SMALL_STREAM_BYTES) {
        gb_attach_streamed(b, name, dtype, ndim, dims, &p);
        return 0;
    }
    /* small: its one chunk is made now and held in the graph */
    void *out = m2o_malloc(p.chunk_bytes[0] + 1, err);
    int rc = out ? p.one(p.ctx, 0, out, err) : -1;
    if (!rc)
        graph_add_initializer(b->g, name, dtype, ndim, dims, out, p.chunk_bytes[0]);
    free(out);
    p.free_ctx(p.ctx);
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

int gb_add_small_qdq(gb *b, const char *name, const st_tensor *t, int64_t rows, int64_t cols,
                     int bits, int block_size, m2o_err *err)
{
    void *out = wt_small_qdq(t, rows, cols, bits, block_size, b->io, err);
    if (!out)
        return -1;
    int64_t dims[2] = {rows, cols};
    graph_add_initializer(b->g, name, b->io, 2, dims, out, (size_t)(rows * cols) * gb_io_size(b));
    free(out);
    return 0;
}

int gb_add_converted(gb *b, const char *name, const st_tensor *t, m2o_err *err)
{
    wt_opts o = gb_weight_opts(b);
    wt_producer p;
    if (wt_converted(t, &o, &p, err))
        return -1;
    gb_attach_streamed(b, name, b->io, t->ndim, t->shape, &p);
    return 0;
}

int gb_add_linear_t(gb *b, const char *name, const linear_src *s, m2o_err *err)
{
    wt_opts o = gb_weight_opts(b);
    wt_producer p;
    if (wt_linear_t(s, &o, &p, err))
        return -1;
    int64_t dims[2] = {linear_src_k(s), linear_src_n(s)};
    gb_attach_streamed(b, name, b->io, 2, dims, &p);
    return 0;
}

int gb_add_nbits(gb *b, const char *codes_name, const char *scales_name, const char *zp_name,
                 const linear_src *s, const wt_nbits_spec *spec, m2o_err *err)
{
    wt_opts o = gb_weight_opts(b);
    wt_producer p;
    if (wt_nbits(s, spec, &o, &p, err))
        return -1;
    int64_t N = linear_src_n(s), K = linear_src_k(s), bs = spec->block_size;
    int64_t cdims[3] = {N, K / bs, bs * spec->bits / 8};
    int64_t sdims[1] = {N * (K / bs)};
    /* zero points per row: ceil(blocks * bits / 8) bytes (4-bit: two blocks a byte) */
    int64_t zdims[1] = {N * ((K / bs * spec->bits + 7) / 8)};
    graph_stream_member m[3] = {
        {.name = codes_name, .elem_type = ONNX_UINT8, .ndim = 3, .dims = cdims,
         .chunk_bytes = p.chunk_bytes[0]},
        {.name = scales_name, .elem_type = b->io, .ndim = 1, .dims = sdims,
         .chunk_bytes = p.chunk_bytes[1]},
        {.name = zp_name, .elem_type = ONNX_UINT8, .ndim = 1, .dims = zdims,
         .chunk_bytes = p.chunk_bytes[2]},
    };
    graph_add_streamed_group(b->g, wt_nbits_has_zero_points(spec) ? 3 : 2, m, p.n_chunks,
                             p.group, p.ctx, p.free_ctx);
    wt_track_quant_error(b->g, codes_name, &p);
    return 0;
}
