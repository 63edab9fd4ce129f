/* Quantization error of encoded weights against the float rows they were made from: the
 * per-tensor numbers the build summary, --quant-report and `verify --json` report
 * (docs/FORMATS.md §16.1). Pure: buffers in, sums out, no allocation.
 *
 * Decoding is verify's (src/verify/compare.c) operation for operation, so the two agree to the
 * rounding of the double sums: int y = (float)((q - zp) * (float)scale), MXFP4
 * y = E2M1(code) * 2^(e - 127). Non-finite source values are counted apart and not compared. */
#ifndef M2O_QUANT_QERR_H
#define M2O_QUANT_QERR_H

#include <stdint.h>

#include "quant/quant.h"

/* Sums over the elements of one chunk (or a whole tensor, after qerr_merge in chunk order). */
typedef struct qerr_acc {
    int64_t n;           /* finite elements compared */
    int64_t n_nonfinite; /* source elements that were NaN/Inf */
    double sum_err2;     /* sum of (decoded - source)^2 */
    double sum_ref2;     /* sum of source^2 */
    double max_abs;      /* largest |decoded - source| */
} qerr_acc;

/* The encoding a tensor's statistics are about. */
/* QERR_FLOAT: a float copy (verify compares those too); bits 32/16, scale_type its type. */
typedef enum qerr_kind { QERR_INT, QERR_MXFP4, QERR_FLOAT } qerr_kind;
typedef struct qerr_format {
    qerr_kind kind;
    int bits;        /* 2, 4, 8; MXFP4: 4 */
    int block_size;  /* MXFP4: 32 */
    bool symmetric;  /* false: zero points */
    qscale_type scale_type; /* INT only; MXFP4 scales are E8M0 */
} qerr_format;

/* Adds a into into (sums; the larger max). Merging in a fixed order gives fixed sums. */
void qerr_merge(qerr_acc *into, const qerr_acc *a);
/* sqrt(sum_err2 / sum_ref2); 0 when both are 0, +Inf when only the source is all zero. */
double qerr_rel_rms(const qerr_acc *a);

/* w [N][K] against blockwise codes [N][K*bits/8] (even k in the low nibble), scales [N][K/bs]
 * of p->scale_type and, unless p->symmetric, zero points (qb_quantize's layout). */
void qerr_blockwise(const float *w, int64_t N, int64_t K, const qb_params *p,
                    const uint8_t *codes, const void *scales, const uint8_t *zero_points,
                    qerr_acc *acc);
/* w [N][K] against MXFP4 codes [N][K/2] and E8M0 scales [N][K/32] (mxfp4_encode's layout). */
void qerr_mxfp4(const float *w, int64_t N, int64_t K, const uint8_t *codes,
                const uint8_t *scales, qerr_acc *acc);

/* "int4 bs32 sym f16 scales", "mxfp4 bs32": the format in words. */
void qerr_format_name(const qerr_format *f, char *buf, size_t len);

#endif
