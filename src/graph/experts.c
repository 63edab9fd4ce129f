/* Declarations of the expert initializers; their producers are in src/weights/. */
#include "graph/experts.h"

#include "graph/weights.h"
#include "weights/qerr_track.h"

/* Declared shape and element type of one encoding's initializer (docs/FORMATS.md §8). */
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
        dims[2] = block_size > 0 ? K / block_size : 1; /* per channel: [E, N] (caller) */
        return b->io;
    case ENC_INT_ZP: {
        int64_t nb = K / block_size;
        dims[2] = bits == 4 ? (nb + 1) / 2 : nb;
        return ONNX_UINT8;
    }
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

int gb_add_experts(gb *b, const char *name, const expert_src *src, expert_enc enc, int bits,
                   int block_size, m2o_err *err)
{
    wt_opts o = gb_weight_opts(b);
    wt_producer p;
    if (wt_experts(src, enc, false, bits, block_size, &o, &p, err))
        return -1;
    int64_t dims[3];
    int elem = enc_shape(b, src, enc, bits, block_size, dims);
    gb_attach_streamed(b, name, elem, 3, dims, &p);
    wt_track_quant_error(b->g, name, &p);
    return 0;
}

int gb_add_experts_quantized(gb *b, const char *weights_name, const char *scales_name,
                             const expert_src *src, expert_enc enc, int bits, int block_size,
                             m2o_err *err)
{
    wt_opts o = gb_weight_opts(b);
    wt_producer p;
    if (wt_experts(src, enc, true, bits, block_size, &o, &p, err))
        return -1;
    int64_t wdims[3], sdims[3];
    expert_enc senc = expert_scales_enc(enc);
    graph_stream_member m[2] = {
        {.name = weights_name, .elem_type = enc_shape(b, src, enc, bits, block_size, wdims),
         .ndim = 3, .dims = wdims, .chunk_bytes = p.chunk_bytes[0]},
        {.name = scales_name, .elem_type = enc_shape(b, src, senc, bits, block_size, sdims),
         .ndim = 3, .dims = sdims, .chunk_bytes = p.chunk_bytes[1]},
    };
    graph_add_streamed_group(b->g, 2, m, p.n_chunks, p.group, p.ctx, p.free_ctx);
    wt_track_quant_error(b->g, weights_name, &p);
    return 0;
}

int gb_add_experts_int(gb *b, const char *weights_name, const char *scales_name, const char *zp_name,
                       const expert_src *src, expert_enc enc, const expert_qfmt *f, m2o_err *err)
{
    wt_opts o = gb_weight_opts(b);
    wt_producer p;
    if (wt_experts_fmt(src, enc, true, f, &o, &p, err))
        return -1;
    int64_t wdims[3], sdims[3], zdims[3];
    int bits = f->bits, bs = f->block_size;
    graph_stream_member m[3] = {
        {.name = weights_name, .elem_type = enc_shape(b, src, enc, bits, bs, wdims),
         .ndim = 3, .dims = wdims, .chunk_bytes = p.chunk_bytes[0]},
        /* per channel: scales [E, N], what ONNX Runtime's QMoE takes without a block_size */
        {.name = scales_name, .elem_type = enc_shape(b, src, ENC_INT_SCALES, bits, bs, sdims),
         .ndim = bs > 0 ? 3 : 2, .dims = sdims, .chunk_bytes = p.chunk_bytes[1]},
        {.name = zp_name, .elem_type = f->asymmetric ? enc_shape(b, src, ENC_INT_ZP, bits, bs, zdims) : 0,
         .ndim = 3, .dims = zdims, .chunk_bytes = p.chunk_bytes[2]},
    };
    graph_add_streamed_group(b->g, f->asymmetric ? 3 : 2, m, p.n_chunks, p.group, p.ctx, p.free_ctx);
    wt_track_quant_error(b->g, weights_name, &p);
    return 0;
}
