/* The inner sums of quant/qerr.c, in a portable and an AVX2 version that give identical bits:
 * element i of a piece goes to lane i % 8 (eight
 * independent chains, so the adds do not wait on each other), each lane sums (y - x)^2 and x^2 in double (a multiply
 * then an add, no FMA) and keeps its largest |y - x|; the lanes are folded only at the end. */
#ifndef M2O_QUANT_QERR_INTERNAL_H
#define M2O_QUANT_QERR_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#define QERR_LANES 8

typedef struct qerr_lanes {
    double e[QERR_LANES], r[QERR_LANES], m[QERR_LANES];
} qerr_lanes;

/* x, y: len finite floats, len a multiple of QERR_LANES. */
void qerr_lanes_add(qerr_lanes *l, const float *x, const float *y, int64_t len);
void qerr_lanes_add_avx2(qerr_lanes *l, const float *x, const float *y, int64_t len);
/* A whole block of 4- or 8-bit codes (bs % 8 == 0, s finite), decoded and added in the lanes'
 * order; false, adding nothing, when x holds a NaN or Inf. */
bool qerr_int_block_avx2(qerr_lanes *l, const float *x, const uint8_t *codes, int64_t bs,
                         int bits, int zp, float s);

#endif
