/* Expert initializers: declares each encoding's tensor (shape, element type; docs/FORMATS.md §8)
 * and attaches the producer src/weights/experts.h makes for it. The expert sources and
 * encodings themselves are in weights/sources.h and weights/experts.h. */
#ifndef M2O_GRAPH_EXPERTS_H
#define M2O_GRAPH_EXPERTS_H

#include "common/err.h"
#include "graph/builder.h"
#include "weights/experts.h"
#include "weights/sources.h"

/* The architecture files format graph names into expert_src.what. */
_Static_assert(EXPERT_WHAT_MAX == GNAME_MAX, "expert_src.what must hold a graph name");

/* Adds the streamed initializer `name` holding encoding `enc` of all experts of src, one expert
 * per chunk. bits/block_size matter for the int encodings. */
int gb_add_experts(gb *b, const char *name, const expert_src *src, expert_enc enc, int bits,
                   int block_size, m2o_err *err);

/* The weights (enc = ENC_INT_RAW, ENC_INT_SM80 or ENC_FP4) and their scales as one streamed
 * group: each expert is read and quantized once for both. */
int gb_add_experts_quantized(gb *b, const char *weights_name, const char *scales_name,
                             const expert_src *src, expert_enc enc, int bits, int block_size,
                             m2o_err *err);

/* Any int format (per channel, zero points, scale search): weights, scales and, when
 * f->asymmetric, zero points (zp_name, uint8 [E, N, zero-point bytes per row]) as one group. */
int gb_add_experts_int(gb *b, const char *weights_name, const char *scales_name, const char *zp_name,
                       const expert_src *src, expert_enc enc, const expert_qfmt *f, m2o_err *err);

#endif
