/* Expert producers. One job is one expert: its matrix is read in bands of rows (a few hundred
 * KiB of float32, so they stay in the core's cache), each band is encoded straight into the
 * output chunk(s) (expert_encode.c), and the expert's checkpoint pages are released as the bands
 * move on. A quantized encoding's codes and scales are one group, so every expert is quantized
 * once. An input-major expert (gpt-oss BF16, [K, N]) is read instead in panels of whole source
 * rows (64 or one block of K for every output row): blocks run along K, so a panel quantizes on
 * its own and is scattered to its columns, and the source is read sequentially. Everything
 * layout-specific goes through the expert_layout table (expert_layout.c). */
#include <stdlib.h>

#include "weights/experts_internal.h"
#include "weights/nonfinite.h"

/* Rows [n0, n0 + nr) of expert e as float32 [nr][K]; releases nothing. */
static int read_band(const expert_layout *L, const expert_src *s, int64_t e, int64_t n0,
                     int64_t nr, float *out, bool allow, m2o_err *err)
{
    if (L->halves(s, e) && (n0 % 2 || nr % 2))
        return m2o_fail(err, "%s: internal: interleaved band [%lld, +%lld) not even", s->what,
                        (long long)n0, (long long)nr);
    return L->read_band(s, e, n0, nr, out, allow, err);
}

/* Starts reading expert e's bytes (no-op past the end): a job asks for its own expert and the
 * next one, so the disk works ahead of the workers. */
static void read_ahead(const expert_layout *L, const expert_src *s, int64_t e)
{
    if (e >= 0 && e < s->E)
        L->read_ahead(s, e);
}

int expert_read_f32(const expert_src *s, int64_t e, float *out, float *tmp, m2o_err *err)
{
    (void)tmp;
    const expert_layout *L = expert_layout_of(s->kind);
    if (!L)
        return m2o_fail(err, "%s: unknown expert source kind", s->what);
    int64_t R = expert_band_rows(s->N, s->K);
    for (int64_t n0 = 0; n0 < s->N; n0 += R) {
        int64_t nr = s->N - n0 < R ? s->N - n0 : R;
        if (read_band(L, s, e, n0, nr, out + n0 * s->K, false, err))
            return -1;
    }
    L->release(s, e);
    return 0;
}

/* ---- naming refused values ---- */

/* The encoding values are read for, when it cannot hold NaN/Inf (NULL: float). */
static const char *format_name(expert_enc enc, int bits)
{
    if (enc == ENC_FLOAT)
        return NULL;
    return enc_is_fp4(enc) ? "MXFP4" : int_format_name(bits);
}

/* A piece read into w: `rows` x `cols` values, either a band (rows from `first`, all columns)
 * or a panel (all rows, columns from `first`). */
typedef struct piece {
    const float *w;
    int64_t rows, cols, first;
    bool panel;
} piece;

/* The checkpoint tensor and element behind value i of the piece. */
static const st_tensor *piece_element(const expert_layout *L, const expert_src *s, int64_t e,
                                      const piece *pc, int64_t i, int64_t *index)
{
    int64_t r = i / pc->cols, c = i % pc->cols;
    return L->element(s, e, pc->panel ? r : pc->first + r, pc->panel ? pc->first + c : c, index);
}

/* Names the first NaN/Inf of the piece by its tensor and element in the checkpoint, in err, as
 * the non-finite policy words it for `format` (NULL: a float output). False when all are
 * finite. The quantizers refuse such values too, but only know the band's row and column. */
static bool name_nonfinite(const expert_layout *L, const expert_src *s, int64_t e,
                           const piece *pc, const char *format, m2o_err *err)
{
    int64_t bad = f32_first_nonfinite(pc->w, (size_t)(pc->rows * pc->cols)), index;
    if (bad < 0)
        return false;
    const st_tensor *t = piece_element(L, s, e, pc, bad, &index);
    check_values(&pc->w[bad], 1, index, t->name, format, false, err);
    return true;
}

/* Converted values that overflow their type (float16 above 65504): a float output's elements, or
 * an int encoding's block scales (rounded to the io dtype). Names the checkpoint tensor and the
 * element (the block's first). The MXFP4 encoder's E8M0 scales reach 2^127: they cannot. */
static int check_overflow(const expert_layout *L, const expert_src *s, int64_t e,
                          const expert_encoder *x, const piece *pc, m2o_err *err)
{
    int64_t index;
    if (x->enc == ENC_FLOAT) {
        int64_t big = first_overflow(pc->w, (size_t)(pc->rows * pc->cols), x->io);
        if (big < 0)
            return 0;
        const st_tensor *t = piece_element(L, s, e, pc, big, &index);
        return check_fits(pc->w + big, 1, index, t->name, x->io, err);
    }
    if (!enc_is_int(x->enc))
        return 0;
    int bs = x->f.block_size > 0 ? x->p.block_size : (int)pc->cols; /* per channel: one per row */
    int64_t nb = pc->cols / bs;
    const uint8_t *sc = pc->panel ? x->pscales
                                  : x->scales + encoder_scale_bytes(x, pc->first, x->K);
    int64_t bad = first_nonfinite_scale(sc, (size_t)(pc->rows * nb), x->io);
    if (bad < 0)
        return 0;
    /* the block's first value: row bad / nb, column (bad % nb) * bs of the piece */
    const st_tensor *t = piece_element(L, s, e, pc, bad / nb * pc->cols + bad % nb * bs, &index);
    return scale_overflow_fail(t->name, index, bs, x->io, err);
}

/* One band or panel was read: checks it where nothing else will (a float output refuses
 * NaN/Inf unless allowed; quantizers refuse them anyway, so only their failure is explained),
 * then encodes it. */
static int check_and_encode(const expert_layout *L, const expert_src *s, int64_t e,
                            expert_encoder *x, const piece *pc, bool allow_nonfinite,
                            const char *format, m2o_err *err)
{
    if (!format && !allow_nonfinite && name_nonfinite(L, s, e, pc, NULL, err))
        return -1;
    if (x->enc == ENC_FLOAT && check_overflow(L, s, e, x, pc, err))
        return -1;
    int rc = pc->panel ? encoder_panel(x, pc->w, pc->first, pc->cols, err)
                       : encoder_rows(x, pc->w, pc->first, pc->rows, err);
    if (rc && !(format && name_nonfinite(L, s, e, pc, format, err)))
        return m2o_wrap(err, "encoding %s expert %lld", s->what, (long long)e);
    if (!rc && x->enc != ENC_FLOAT)
        rc = check_overflow(L, s, e, x, pc, err);
    return rc;
}

/* ---- producing one expert ---- */

/* Columns per panel of an input-major expert: whole quantization blocks, at least 64 so
 * each source row contributes a full cache line. */
static int64_t panel_cols(int64_t K, int block_size)
{
    int64_t kp = block_size > 64 ? block_size : 64;
    return K % kp == 0 ? kp : 0;
}

/* Input-major expert e: panels of kp source rows, each read sequentially (converted and
 * transposed on the way), encoded and scattered to its columns. */
static int produce_panels(const expert_layout *L, const expert_src *s, int64_t e,
                          expert_encoder *x, int64_t kp, bool allow_nonfinite, m2o_err *err)
{
    int64_t N = s->N, K = s->K;
    float *panel = m2o_malloc((size_t)(N * kp) * sizeof(float), err);
    if (!panel)
        return -1;
    wt_reader rd;
    wt_reader_init(&rd);
    L->reader(s, e, &rd);
    const char *format = format_name(x->enc, x->p.bits);
    int rc = 0;
    for (int64_t k0 = 0; k0 < K && !rc; k0 += kp) {
        rc = L->read_panel(s, e, k0, kp, panel, err);
        wt_reader_done(&rd, k0 + kp);
        piece pc = {panel, N, kp, k0, true};
        if (!rc)
            rc = check_and_encode(L, s, e, x, &pc, allow_nonfinite, format, err);
    }
    free(panel);
    return rc;
}

/* Row-major expert e (MXFP4, [N, K] tensors): bands of whole rows, released as they go (an
 * input-major expert read in bands touches all its pages each band: released at the end). */
static int produce_bands(const expert_layout *L, const expert_src *s, int64_t e,
                         expert_encoder *x, bool allow_nonfinite, m2o_err *err)
{
    int64_t N = s->N, K = s->K, R = expert_band_rows(N, K);
    float *band = m2o_malloc((size_t)(R * K) * sizeof(float), err);
    if (!band)
        return -1;
    wt_reader rd;
    wt_reader_init(&rd);
    if (!L->read_panel)
        L->reader(s, e, &rd);
    const char *format = format_name(x->enc, x->p.bits);
    /* values checked once up front (MXFP4's scale bytes) are not checked band by band */
    int rc = L->check_expert ? L->check_expert(s, e, allow_nonfinite, format, err) : 0;
    bool allow = allow_nonfinite || L->check_expert != NULL;
    for (int64_t n0 = 0; n0 < N && !rc; n0 += R) {
        int64_t nr = N - n0 < R ? N - n0 : R;
        rc = read_band(L, s, e, n0, nr, band, true, err);
        piece pc = {band, nr, K, n0, false};
        if (!rc)
            rc = check_and_encode(L, s, e, x, &pc, allow, format, err);
        wt_reader_done(&rd, n0 + nr);
    }
    free(band);
    return rc;
}

/* expert_produce_fmt that adds the encoding's error to acc (NULL: not measured). */
static int produce_measured(const expert_src *s, int64_t e, expert_enc enc, const expert_qfmt *f,
                            int io_dtype, bool allow_nonfinite, void *weights, void *scales,
                            void *zero_points, qerr_acc *acc, m2o_err *err)
{
    const expert_layout *L = expert_layout_of(s->kind);
    if (!L)
        return m2o_fail(err, "%s: unknown expert source kind", s->what);
    read_ahead(L, s, e);
    read_ahead(L, s, e + 1);
    if (L->fp4_passthrough && enc_is_fp4(enc))
        return L->fp4_passthrough(s, e, weights, scales, allow_nonfinite, err);
    /* a scales encoding (weights NULL): quantized like the weights, codes dropped. Per-channel
     * rows span all of K and 4-bit zero points pack two blocks a byte, so those formats are
     * read in bands of whole rows even from an input-major source. */
    bool by_rows = enc_is_int(enc) && (f->block_size <= 0 || f->asymmetric);
    int64_t kp = L->read_panel && !by_rows ? panel_cols(s->K, enc_is_fp4(enc) ? 32 : f->block_size) : 0;
    expert_encoder x;
    if (encoder_init(&x, enc, s->N, s->K, f, io_dtype, weights, scales, zero_points, kp, err))
        return -1;
    x.qerr = acc;
    int rc = kp ? produce_panels(L, s, e, &x, kp, allow_nonfinite, err)
                : produce_bands(L, s, e, &x, allow_nonfinite, err);
    if (!rc && encoder_finish(&x, err))
        rc = m2o_wrap(err, "encoding %s expert %lld", s->what, (long long)e);
    L->release(s, e);
    encoder_free(&x);
    return rc;
}

int expert_produce_fmt(const expert_src *s, int64_t e, expert_enc enc, const expert_qfmt *f,
                       int io_dtype, bool allow_nonfinite, void *weights, void *scales,
                       void *zero_points, m2o_err *err)
{
    return produce_measured(s, e, enc, f, io_dtype, allow_nonfinite, weights, scales, zero_points,
                            NULL, err);
}

int expert_produce(const expert_src *s, int64_t e, expert_enc enc, int bits, int block_size,
                   int io_dtype, bool allow_nonfinite, void *weights, void *scales, m2o_err *err)
{
    expert_qfmt f = {.bits = bits, .block_size = block_size};
    return expert_produce_fmt(s, e, enc, &f, io_dtype, allow_nonfinite, weights, scales, NULL, err);
}

/* ---- the producer attached to an expert initializer ---- */

typedef struct experts_ctx {
    expert_src src;
    expert_enc enc;  /* weights encoding, or a scales/zero-point encoding for that tensor alone */
    expert_qfmt f;
    int io;
    bool allow_nonfinite;
    qerr_acc *qerr;  /* one error slot per expert, or NULL (weights/qerr_track.h) */
} experts_ctx;

static int produce_single(void *vctx, int64_t e, void *out, m2o_err *err)
{
    const experts_ctx *c = vctx;
    bool scales = c->enc == ENC_INT_SCALES || c->enc == ENC_FP4_SCALES, zp = c->enc == ENC_INT_ZP;
    return produce_measured(&c->src, e, c->enc, &c->f, c->io, c->allow_nonfinite,
                            scales || zp ? NULL : out, scales ? out : NULL, zp ? out : NULL,
                            c->qerr ? &c->qerr[e] : NULL, err);
}

/* weights, scales and (asymmetric) zero points of one expert from one quantization */
static int produce_group(void *vctx, int64_t e, void *const *outs, m2o_err *err)
{
    const experts_ctx *c = vctx;
    return produce_measured(&c->src, e, c->enc, &c->f, c->io, c->allow_nonfinite, outs[0],
                            outs[1], c->f.asymmetric ? outs[2] : NULL, c->qerr ? &c->qerr[e] : NULL,
                            err);
}

/* The widths encoding `enc` (a weights encoding) needs of an [N, K] expert. */
static int check_widths(const expert_src *src, expert_enc enc, const expert_qfmt *f, int io,
                        m2o_err *err)
{
    int bits = f->bits, block_size = f->block_size;
    int64_t N = src->N, K = src->K;
    if (enc_is_fp4(enc)) {
        if (K % 32 || N % 2)
            return m2o_fail(err, "%s: MXFP4 needs the input width %lld to be a multiple of 32 "
                                 "and the output width %lld even",
                            src->what, (long long)K, (long long)N);
    } else if (enc != ENC_FLOAT) {
        qb_params p = expert_int_params(bits, block_size, io);
        if (block_size <= 0 ? qc_check(N, K, bits, err) : qb_check(N, K, &p, err))
            return m2o_wrap(err, "quantizing %s for QMoE", src->what);
        if (block_size <= 0 && (f->asymmetric || f->search))
            return m2o_fail(err, "%s: per-channel experts are symmetric round-to-nearest only",
                            src->what);
        if (enc == ENC_INT_SM80 && K % 64)
            return m2o_fail(err, "%s: the CUTLASS SM80 layout needs the input width %lld to be "
                                 "a multiple of 64; use qmoe_weights_prepacked=0",
                            src->what, (long long)K);
        if (enc == ENC_INT_SM80 && N % (bits == 4 ? 4 : 2))
            return m2o_fail(err, "%s: the CUTLASS SM80 layout needs the output width %lld to "
                                 "be a multiple of %d",
                            src->what, (long long)N, bits == 4 ? 4 : 2);
    }
    return 0;
}

/* Everything a producer of `enc` will rely on, checked before any bytes are written. */
static int check_source(const expert_layout *L, const expert_src *src, expert_enc enc,
                        const expert_qfmt *f, int io, m2o_err *err)
{
    if (src->E < 1 || src->E > EXPERT_MAX)
        return m2o_fail(err, "%s: %lld experts (supported: 1..%d)", src->what,
                        (long long)src->E, EXPERT_MAX);
    if (!L)
        return m2o_fail(err, "%s: unknown expert source kind", src->what);
    if (L->check_dtypes(src, err) || check_widths(src, enc, f, io, err))
        return -1;
    bool halves = false;
    for (int64_t e = 0; e < src->E; e++)
        halves = halves || L->halves(src, e);
    if (halves && src->N % 2)
        return m2o_fail(err, "%s: gate/up halves need an even output width, got %lld", src->what,
                        (long long)src->N);
    return 0;
}

int wt_experts_fmt(const expert_src *src, expert_enc enc, bool with_scales, const expert_qfmt *f,
                   const wt_opts *o, wt_producer *p, m2o_err *err)
{
    if (with_scales && enc != ENC_INT_RAW && enc != ENC_INT_SM80 && enc != ENC_FP4)
        return m2o_fail(err, "%s: internal: encoding %d has no scales", src->what, (int)enc);
    if (f->asymmetric && (!enc_is_int(enc) || f->block_size <= 0))
        return m2o_fail(err, "%s: internal: zero points need blockwise int experts", src->what);
    if (check_source(expert_layout_of(src->kind), src, expert_weights_enc(enc), f, o->io, err))
        return -1;
    experts_ctx *c = m2o_malloc(sizeof *c, err);
    if (!c)
        return -1;
    *c = (experts_ctx){.src = *src, .enc = enc, .f = *f, .io = o->io,
                       .allow_nonfinite = o->allow_nonfinite};
    int64_t N = src->N, K = src->K;
    int bits = f->bits, bs = f->block_size;
    *p = (wt_producer){.ctx = c, .free_ctx = free, .n_chunks = src->E,
                       .chunk_bytes = {expert_chunk_bytes(N, K, enc, bits, bs, o->io)}};
    if (with_scales) {
        p->group = produce_group;
        p->chunk_bytes[1] = expert_chunk_bytes(N, K, expert_scales_enc(enc), bits, bs, o->io);
        if (f->asymmetric)
            p->chunk_bytes[2] = expert_chunk_bytes(N, K, ENC_INT_ZP, bits, bs, o->io);
    } else {
        p->one = produce_single;
    }
    if (enc == ENC_INT_RAW || enc == ENC_INT_SM80 || enc == ENC_FP4) { /* not scales alone */
        bool fp4 = enc_is_fp4(enc);
        p->qerr = &c->qerr; /* per channel: one block of K, as verify reports it */
        p->qerr_fmt = (qerr_format){fp4 ? QERR_MXFP4 : QERR_INT, fp4 ? 4 : bits,
                                    fp4 ? 32 : bs > 0 ? bs : (int)K, fp4 || !f->asymmetric,
                                    expert_int_params(bits, bs, o->io).scale_type};
    }
    return 0;
}

int wt_experts(const expert_src *src, expert_enc enc, bool with_scales, int bits, int block_size,
               const wt_opts *o, wt_producer *p, m2o_err *err)
{
    expert_qfmt f = {.bits = bits, .block_size = block_size};
    return wt_experts_fmt(src, enc, with_scales, &f, o, p, err);
}
