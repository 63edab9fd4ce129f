#include "graph/experts.h"

#include <stdlib.h>
#include <string.h>

#include "graph/weights.h"
#include "quant/quant.h"

static void release_elems(const st_tensor *t, int64_t first, int64_t count)
{
    size_t es = st_dtype_size(t->dtype);
    st_release(t, (size_t)first * es, (size_t)count * es);
}

/* rows [gate(h); up(h)] in src → interleaved gate0, up0, gate1, up1, ... in dst */
static void interleave_halves(const float *src, int64_t N, int64_t K, float *dst)
{
    int64_t h = N / 2;
    for (int64_t i = 0; i < h; i++) {
        memcpy(dst + (2 * i) * K, src + i * K, (size_t)K * sizeof(float));
        memcpy(dst + (2 * i + 1) * K, src + (h + i) * K, (size_t)K * sizeof(float));
    }
}

/* `quant` names the encoding the values are read for when it has no NaN/Inf (they always fail),
 * NULL for a float destination (they fail unless allowed). */
static int read_checked(const expert_src *s, const st_tensor *t, int64_t first, int64_t count,
                        float *out, bool allow, const char *quant, m2o_err *err)
{
    if (tensor_read_f32(t, first, count, out, err))
        return -1;
    if (quant ? check_encodable(out, (size_t)count, first, t->name, quant, err)
              : check_finite(out, (size_t)count, first, t->name, allow, err))
        return -1;
    release_elems(t, first, count);
    return 0;
}

/* MXFP4 codes are always finite; a scale byte of 255 is E8M0's NaN and makes its block NaN. */
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

static int expert_read_impl(const expert_src *s, int64_t e, float *out, float *tmp, bool allow,
                            const char *quant, m2o_err *err)
{
    int64_t N = s->N, K = s->K, nk = N * K;
    switch (s->kind) {
    case EXPERT_MXFP4: {
        const uint8_t *codes = s->t->data + (size_t)(e * nk / 2);
        const uint8_t *sc = s->scales->data + (size_t)(e * nk / 32);
        if (check_scales(s, e, allow, quant, err))
            return -1;
        if (mxfp4_decode(codes, sc, N, K, out, err))
            return m2o_wrap(err, "decoding %s expert %lld", s->what, (long long)e);
        st_release(s->t, (size_t)(e * nk / 2), (size_t)(nk / 2));
        st_release(s->scales, (size_t)(e * nk / 32), (size_t)(nk / 32));
        return 0;
    }
    case EXPERT_FUSED_KN:
        if (read_checked(s, s->t, e * nk, nk, tmp, allow, quant, err))
            return -1;
        transpose_f32(tmp, K, N, out);
        return 0;
    case EXPERT_FUSED_NK:
        if (read_checked(s, s->t, e * nk, nk, s->interleave ? tmp : out, allow, quant, err))
            return -1;
        if (s->interleave)
            interleave_halves(tmp, N, K, out);
        return 0;
    case EXPERT_PER_EXPERT:
        if (!s->up[e])
            return read_checked(s, s->per[e], 0, nk, out, allow, quant, err);
        if (read_checked(s, s->per[e], 0, nk / 2, tmp, allow, quant, err) ||
            read_checked(s, s->up[e], 0, nk / 2, tmp + nk / 2, allow, quant, err))
            return -1;
        interleave_halves(tmp, N, K, out);
        return 0;
    }
    return m2o_fail(err, "%s: unknown expert source kind", s->what);
}

int expert_read_f32(const expert_src *s, int64_t e, float *out, float *tmp, m2o_err *err)
{
    return expert_read_impl(s, e, out, tmp, false, NULL, err);
}

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

int expert_encode(const float *w, int64_t N, int64_t K, expert_enc enc, int bits, int block_size,
                  int io_dtype, void *out, m2o_err *err)
{
    if (enc == ENC_FLOAT) {
        f32_to_dtype(w, out, (size_t)(N * K), io_dtype);
        return 0;
    }
    uint8_t *codes = NULL;
    void *scales = NULL;
    int rc = -1;
    if (enc == ENC_FP4 || enc == ENC_FP4_SCALES) {
        codes = enc == ENC_FP4_SCALES ? m2o_malloc((size_t)(N * K / 2), err) : NULL;
        uint8_t *raw = enc == ENC_FP4 ? m2o_malloc((size_t)(N * K / 2), err) : codes;
        scales = enc == ENC_FP4 ? m2o_malloc((size_t)(N * K / 32), err) : out;
        if (raw && scales && !mxfp4_encode(w, N, K, raw, scales, err))
            rc = enc == ENC_FP4 ? fp4_cuda_pack(raw, N, K, out, err) : 0;
        if (enc == ENC_FP4) {
            free(raw);
            free(scales);
        } else {
            free(codes);
        }
        return rc;
    }
    qb_params p = int_params(bits, block_size, io_dtype);
    bool want_codes = enc != ENC_INT_SCALES;
    codes = (enc == ENC_INT_RAW) ? out : m2o_malloc(qb_codes_bytes(N, K, &p), err);
    scales = want_codes ? m2o_malloc(qb_scales_count(N, K, &p) * qscale_size(p.scale_type), err)
                        : out;
    if (codes && scales && !qb_quantize(w, N, K, &p, codes, scales, NULL, err))
        rc = enc == ENC_INT_SM80 ? cutlass_sm80_pack(codes, N, K, bits, out, err) : 0;
    if (enc != ENC_INT_RAW)
        free(codes);
    if (want_codes)
        free(scales);
    return rc;
}

typedef struct experts_ctx {
    expert_src src;
    expert_enc enc;
    int bits, block_size, io;
    bool allow_nonfinite;
} experts_ctx;

/* MXFP4 checkpoint → MXFP4 op: the codes and scale bytes pass through (no decode/encode). */
static int produce_fp4_passthrough(const experts_ctx *c, int64_t e, void *out, m2o_err *err)
{
    const expert_src *s = &c->src;
    int64_t nk = s->N * s->K;
    int rc;
    if (c->enc == ENC_FP4) {
        rc = fp4_cuda_pack(s->t->data + (size_t)(e * nk / 2), s->N, s->K, out, err);
        st_release(s->t, (size_t)(e * nk / 2), (size_t)(nk / 2));
    } else {
        if (check_scales(s, e, c->allow_nonfinite, NULL, err))
            return -1;
        memcpy(out, s->scales->data + (size_t)(e * nk / 32), (size_t)(nk / 32));
        st_release(s->scales, (size_t)(e * nk / 32), (size_t)(nk / 32));
        rc = 0;
    }
    return rc;
}

/* The encoding experts are read for, when it cannot hold NaN/Inf (NULL: float). */
static const char *expert_format_name(const experts_ctx *c)
{
    if (c->enc == ENC_FLOAT)
        return NULL;
    if (c->enc == ENC_FP4 || c->enc == ENC_FP4_SCALES)
        return "MXFP4";
    return int_format_name(c->bits);
}

static int produce_experts(void *vctx, int64_t e, void *out, m2o_err *err)
{
    const experts_ctx *c = vctx;
    const expert_src *s = &c->src;
    if (expert_src_is_mxfp4(s) && (c->enc == ENC_FP4 || c->enc == ENC_FP4_SCALES))
        return produce_fp4_passthrough(c, e, out, err);
    size_t nk = (size_t)(s->N * s->K);
    float *w = m2o_malloc(nk * sizeof(float), err);
    float *tmp = m2o_malloc(nk * sizeof(float), err);
    int rc = (w && tmp) ? 0 : -1;
    if (!rc)
        rc = expert_read_impl(s, e, w, tmp, c->allow_nonfinite, expert_format_name(c), err);
    free(tmp);
    if (!rc && expert_encode(w, s->N, s->K, c->enc, c->bits, c->block_size, c->io, out, err))
        rc = m2o_wrap(err, "encoding %s expert %lld", s->what, (long long)e);
    free(w);
    return rc;
}

int gb_add_experts(gb *b, const char *name, const expert_src *src, expert_enc enc, int bits,
                   int block_size, m2o_err *err)
{
    int64_t E = src->E, N = src->N, K = src->K;
    if (E < 1 || E > EXPERT_MAX)
        return m2o_fail(err, "%s: %lld experts (supported: 1..%d)", src->what, (long long)E,
                        EXPERT_MAX);
    if (src->kind == EXPERT_FUSED_KN || src->kind == EXPERT_FUSED_NK) {
        if (require_float(src->t, err))
            return -1;
    } else if (src->kind == EXPERT_PER_EXPERT) {
        for (int64_t e = 0; e < E; e++)
            if (require_float(src->per[e], err) || (src->up[e] && require_float(src->up[e], err)))
                return -1;
    }
    if (enc == ENC_FP4 || enc == ENC_FP4_SCALES) {
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
    }
    experts_ctx *c = m2o_malloc(sizeof *c, err);
    if (!c)
        return -1;
    c->src = *src;
    c->enc = enc;
    c->bits = bits;
    c->block_size = block_size;
    c->io = b->io;
    c->allow_nonfinite = b->o->allow_nonfinite;

    int elem = ONNX_UINT8;
    int64_t dims[3] = {E, N, K};
    switch (enc) {
    case ENC_FLOAT:
        elem = b->io;
        break;
    case ENC_INT_RAW:
        dims[2] = K * bits / 8;
        break;
    case ENC_INT_SM80:
        dims[1] = K;
        dims[2] = N * bits / 8;
        break;
    case ENC_INT_SCALES:
        elem = b->io;
        dims[2] = K / block_size;
        break;
    case ENC_FP4:
        dims[1] = K;
        dims[2] = N / 2;
        break;
    case ENC_FP4_SCALES:
        elem = ONNX_FLOAT8E8M0;
        dims[2] = K / 32;
        break;
    }
    graph_add_streamed_initializer(b->g, name, elem, 3, dims, E,
                                   expert_chunk_bytes(N, K, enc, bits, block_size, b->io),
                                   produce_experts, c, free);
    return 0;
}
