/* Shared by the expert producer files of this folder: the per-layout table and the encoder. */
#ifndef M2O_WEIGHTS_EXPERTS_INTERNAL_H
#define M2O_WEIGHTS_EXPERTS_INTERNAL_H

#include "quant/quant.h"
#include "weights/experts.h"
#include "weights/qerr_track.h"
#include "weights/reader.h"

/* ---- source layouts (expert_layout.c) ---- */

/* How one expert_src_kind sits in the checkpoint, chosen once from the kind: every question a
 * producer asks about the layout goes through this table, so a new layout is one new table. */
typedef struct expert_layout {
    /* Fails unless every tensor the layout reads as floating point is BF16/F16/F32. */
    int (*check_dtypes)(const expert_src *s, m2o_err *err);
    /* True when expert e's rows come from [gate; up] halves (bands must then be even). */
    bool (*halves)(const expert_src *s, int64_t e);
    /* Rows [n0, n0 + nr) of expert e as float32 [nr][K]; NaN/Inf are named unless allow (the
     * caller then checks them). Releases nothing. */
    int (*read_band)(const expert_src *s, int64_t e, int64_t n0, int64_t nr, float *out,
                     bool allow, m2o_err *err);
    /* Input-major layouts only (else NULL): source rows [k0, k0 + kp) of expert e as float32
     * [N][kp], read sequentially. */
    int (*read_panel)(const expert_src *s, int64_t e, int64_t k0, int64_t kp, float *out,
                      m2o_err *err);
    /* Read-ahead of all of expert e's bytes; release of all of them. */
    void (*read_ahead)(const expert_src *s, int64_t e);
    void (*release)(const expert_src *s, int64_t e);
    /* The release-behind streams of a band-by-band (or panel-by-panel) read of expert e, whose
     * unit is one band row (or one source row of a panel). */
    void (*reader)(const expert_src *s, int64_t e, wt_reader *r);
    /* The checkpoint tensor and element holding element (n, k) of expert e's [N][K] matrix. */
    const st_tensor *(*element)(const expert_src *s, int64_t e, int64_t n, int64_t k,
                                int64_t *index);
    /* Layouts whose decoded values are NaN only through something checked once per expert
     * (MXFP4: a scale byte of 255), else NULL: fails naming it, for values decoded for
     * `format` (NULL: kept as float, refused unless allow). Bands are then not re-checked. */
    int (*check_expert)(const expert_src *s, int64_t e, bool allow, const char *format,
                        m2o_err *err);
    /* Layouts already in the MXFP4 op's encoding, else NULL: expert e's fp4 codes (weights,
     * or NULL) and E8M0 scales (scales, or NULL) without a decode. */
    int (*fp4_passthrough)(const expert_src *s, int64_t e, uint8_t *weights, uint8_t *scales,
                           bool allow, m2o_err *err);
} expert_layout;

const expert_layout *expert_layout_of(expert_src_kind kind);

/* Rows per band: a multiple of 8 (CUTLASS interleave, gate/up pairs, 8x8 transposes) whose
 * float32 band stays within about 512 KiB. */
int64_t expert_band_rows(int64_t N, int64_t K);

/* ---- encodings (expert_encode.c) ---- */

/* Where one expert's encoding goes: `weights` (float / codes, NULL when only scales are
 * wanted) and `scales` (NULL when not wanted), plus the scratch the pieces need. The expert
 * arrives either as bands of whole rows (encoder_rows) or, for an input-major source, as panels
 * of kp columns of every row (encoder_panel: blockwise int and MXFP4 blocks run along K, so a
 * panel of whole blocks quantizes on its own and is scattered to its columns). */
typedef struct expert_encoder {
    expert_enc enc; /* the weights' encoding, or a scales encoding when only scales are wanted */
    int64_t N, K;
    int io;
    qb_params p;
    expert_qfmt f;      /* block_size 0: per channel; asymmetric: zero points; search */
    uint8_t *weights;
    uint8_t *scales;
    uint8_t *zps;       /* asymmetric: zero points [N][zrow], else NULL */
    uint8_t *raw;       /* raw codes [N][K*bits/8] of the whole expert, when they are not the
                         * output as they are: fp4 (transposed at the end), CUTLASS from panels
                         * (packed at the end), codes dropped for a scales encoding */
    uint8_t *band_raw;  /* CUTLASS from bands: one band's raw codes, packed band by band */
    uint8_t *own_scales; /* scales when they are not wanted */
    uint8_t *own_zps;    /* zero points when they are not wanted */
    uint8_t *pcodes, *pscales; /* one panel's codes and scales before they are scattered */
    qerr_acc *qerr;     /* this expert's error sums, or NULL (weights/qerr_track.h) */
} expert_encoder;

bool enc_is_fp4(expert_enc enc);
bool enc_is_int(expert_enc enc);
qb_params expert_int_params(int bits, int block_size, int io_dtype);
/* panel_cols > 0: the expert will come as panels of that many columns, else as bands of rows. */
int encoder_init(expert_encoder *x, expert_enc enc, int64_t N, int64_t K, const expert_qfmt *f,
                 int io, void *weights, void *scales, void *zps, int64_t panel_cols, m2o_err *err);
void encoder_free(expert_encoder *x);
/* Rows [n0, n0 + nr) given as float32 [nr][K]. */
int encoder_rows(expert_encoder *x, const float *w, int64_t n0, int64_t nr, m2o_err *err);
/* Columns [k0, k0 + kp) of every row, given as float32 [N][kp]. */
int encoder_panel(expert_encoder *x, const float *w, int64_t k0, int64_t kp, m2o_err *err);
/* After the last band or panel: the whole-expert packings (fp4 transpose, CUTLASS from raw). */
int encoder_finish(expert_encoder *x, m2o_err *err);
/* The scales of rows [0, rows) of `cols` columns, in bytes (the offset of row `rows`). */
size_t encoder_scale_bytes(const expert_encoder *x, int64_t rows, int64_t cols);
/* Zero-point bytes of one row of K columns (0 when symmetric). */
size_t encoder_zp_row_bytes(const expert_encoder *x);

#endif
