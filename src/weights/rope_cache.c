/* Producer of the rotary caches (docs/FORMATS.md §12): rows of cos or sin values computed from
 * the rotary parameters (graph/rope.c computes them, as transformers does). */
#include <stdlib.h>

#include "graph/rope.h"
#include "weights/producer.h"

/* Rows per chunk: about 4 MiB of cache per chunk. */
#define ROPE_CHUNK_BYTES ((size_t)4 << 20)

typedef struct rope_ctx {
    rope_params rp;
    int64_t rows_per_chunk;
    int dtype;
    int want_sin;
} rope_ctx;

static int produce_rope(void *vctx, int64_t chunk, void *out, m2o_err *err)
{
    const rope_ctx *c = vctx;
    int64_t n = c->rows_per_chunk * (c->rp.rotary_dim / 2);
    float *cs = m2o_malloc((size_t)(2 * n) * sizeof(float), err);
    if (!cs)
        return -1;
    rope_cache_rows(&c->rp, chunk * c->rows_per_chunk, c->rows_per_chunk, cs, cs + n);
    f32_to_dtype(c->want_sin ? cs + n : cs, out, (size_t)n, c->dtype);
    free(cs);
    return 0;
}

int wt_rope_cache(const struct rope_params *rp, int64_t len, int dtype, bool want_sin,
                  wt_producer *p, m2o_err *err)
{
    size_t row_bytes = (size_t)(rp->rotary_dim / 2) * onnx_dtype_size(dtype);
    int64_t rpc = chunk_rows(len, row_bytes, ROPE_CHUNK_BYTES);
    rope_ctx *c = m2o_malloc(sizeof *c, err);
    if (!c)
        return -1;
    c->rp = *rp;
    c->rows_per_chunk = rpc;
    c->dtype = dtype;
    c->want_sin = want_sin;
    *p = (wt_producer){.one = produce_rope, .ctx = c, .free_ctx = free, .n_chunks = len / rpc,
                       .chunk_bytes = {(size_t)rpc * row_bytes}};
    return 0;
}
