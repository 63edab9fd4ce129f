/* Pure comparison of an expected float matrix with an encoded one, element by element, against
 * the error the encoding allows (verify's numeric core; buffers in, statistics out).
 *
 * Per-element bounds, derived from the formats (docs/FORMATS.md §16):
 *   float (io dtype):  half an ulp of x's binade (2^floor(log2|x|) * u, u = 2^-24 / 2^-11 / 2^-8
 *                      for float32 / float16 / bfloat16: round to nearest), at least half the
 *                      smallest subnormal (float16); float32 must hold x exactly.
 *   int b-bit blockwise, stored scale s (after its own rounding), code q, zero point z:
 *                      interior codes |s| * (0.5 + 2^(b-1) * 2^-21)   (round to nearest, plus the
 *                      float32 multiply by 1/s), extreme codes 0 and 2^b - 1
 *                      |s| * (1 + 2^b * 1.01 * d) where d is the scale type's rounding (2^-24,
 *                      2^-11, 2^-8): the anchor of a symmetric block sits at code 0 and the
 *                      opposite extreme may clamp by up to one step, more when the stored scale
 *                      was rounded down. A zero scale demands exact zeros. Every int bound
 *                      adds 2^(b-1) times half the scale type's smallest subnormal (a subnormal
 *                      scale's own rounding); a scale of at most 2^-128, whose float32 reciprocal
 *                      overflows so the quantizer's codes saturate (ONNX Runtime's rule too),
 *                      allows |s| * 2^b: the whole range of a block of values below 2^-125.
 *   MXFP4 (E2M1 x 2^(e-127)): half the gap to the neighbouring grid values, by magnitude:
 *                      0, 0.5, 1, 1.5 -> 0.25; 2, 3 -> 0.5; 4 -> 1; 6 -> 2.5 (saturation: the
 *                      OCP rule leaves < 2, the reference builder's rounded exponent < 2.49),
 *                      times the block scale.
 * A decoded element may not exceed its bound by any amount: the bound already holds every
 * rounding the encoder is allowed to make. */
#ifndef M2O_VERIFY_COMPARE_H
#define M2O_VERIFY_COMPARE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef enum venc_kind { VENC_FLOAT, VENC_INT, VENC_MXFP4 } venc_kind;

/* One encoded [N][K] matrix in its canonical (raw) layout. */
typedef struct venc {
    venc_kind kind;
    int elem_type;              /* FLOAT: type of w; INT: type of scales (ONNX_FLOAT/16/BF16) */
    const void *w;              /* FLOAT: [N][K] */
    const uint8_t *codes;       /* INT: [N][K*bits/8], even k low nibble; MXFP4: [N][K/2] */
    const void *scales;         /* INT: [N][K/bs] of elem_type; MXFP4: [N][K/32] E8M0 bytes */
    const uint8_t *zero_points; /* INT asymmetric: 4-bit [N][ceil(nb/2)], 8-bit [N][nb]; or NULL */
    int bits, block_size;       /* INT */
    /* INT: the weight may come from any method moe2onnx writes for MatMulNBits (MLAS RTN, scale
     * search, INC RTN, k_quant: docs/FORMATS.md §16), not only the MLAS rounding of experts:
     * every code within half a step (plus the scale's rounding after the codes were chosen), an
     * extreme code may also hold a value clipped toward zero, and the scale ceiling is 1.5 times
     * the MLAS one. */
    bool any_method;
} venc;

typedef struct vstats {
    int64_t n;                  /* elements compared */
    int64_t n_nonfinite;        /* expected elements that were NaN/Inf (skipped) */
    double sum_err2, sum_ref2, sum_bound2;
    double max_abs, max_ratio;
    int64_t n_over;             /* elements over their bound */
    int64_t first_row, first_col;
    double first_expected, first_decoded, first_bound;
    double first_scale, first_scale_ceiling; /* first violation's block scale and the largest the
                                              * checkpoint block allows; ceiling 0: scale fine */
} vstats;

void vstats_init(vstats *s);
/* Adds s into `into`; the first violation stays into's when it has one. */
void vstats_merge(vstats *into, const vstats *s);
double vstats_rel_rms(const vstats *s);
double vstats_rel_rms_bound(const vstats *s);

/* Checks e's parameters for an [N][K] matrix (bits 2..8, K % block_size, K % 32 for MXFP4). */
int venc_check(const venc *e, int64_t N, int64_t K, m2o_err *err);

/* Compares expected [N][K] with e and accumulates into st (not reset). Pure. */
int venc_compare(const float *expected, int64_t N, int64_t K, const venc *e, vstats *st,
                 m2o_err *err);

/* The same statistics computed element by element through venc_element (slow; the reference
 * the tests hold venc_compare to). */
int venc_compare_ref(const float *expected, int64_t N, int64_t K, const venc *e, vstats *st,
                     m2o_err *err);

/* True when every element of e is within its bound of expected (stops at the first that is not):
 * the quick test for a hypothesis about what went wrong. */
bool venc_passes(const float *expected, int64_t N, int64_t K, const venc *e);

/* The decoded value of element (n, k), and its bound given the expected value (for tests and
 * messages). */
void venc_element(const venc *e, int64_t K, int64_t n, int64_t k, float expected, double *decoded,
                  double *bound);

/* ---- rearrangements used to name a fault: each gives what a known exporter bug would have
 * produced, so a pass against it identifies the bug ---- */

/* 4-bit codes with the two nibbles of every byte swapped. */
void vx_swap_nibbles(const uint8_t *in, size_t nbytes, uint8_t *out);
/* expected [N][K] with gate/up rows interleaved (even gate, odd up) → the [gate; up] halves an
 * exporter that forgot to interleave writes. N even. */
void vx_halves_from_interleaved(const float *in, int64_t N, int64_t K, float *out);
/* expected [N][K] → the same elements as an exporter that did not transpose an input-major
 * [K][N] source writes them: its transpose, read back as [N][K]. */
void vx_untransposed(const float *in, int64_t N, int64_t K, float *out);
/* Block scales as float32 (from ONNX_FLOAT/FLOAT16/BFLOAT16). */
void vx_scales_to_f32(const void *scales, int elem_type, size_t n, float *out);
/* For the "scales made positive" diagnosis: the sign each block's scale must have (-1, 0, +1)
 * under symmetric quantization of expected: the anchor maps to code 0, so scale =
 * -anchor / 2^(bits-1). The anchor is ONNX Runtime's: the block maximum when its magnitude is
 * strictly larger than the minimum's, else the minimum (docs/FORMATS.md §4, §19: a description
 * says "first on ties"; the runtime's code, which quant/ reproduces byte for byte, picks the
 * minimum). out: [N][K/bs]. */
/* Element i of a float32 / float16 / bfloat16 array as float. */
float vx_load_float(const void *p, int elem_type, size_t i);

void vx_anchor_scale_signs(const float *expected, int64_t N, int64_t K, int block_size,
                           int8_t *out);

/* Rounding unit of a float type: 2^-24 (float32), 2^-11 (float16), 2^-8 (bfloat16). */
double vx_type_unit(int elem_type);

#endif
