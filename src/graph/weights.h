/* Initializers made from checkpoint tensors: this file declares them (name, shape, element
 * type) and attaches the producer that src/weights/ makes for them. Small ones (norms, biases,
 * sinks) are converted now; large ones are streamed: the writer runs their producer chunk by
 * chunk on its thread pool. */
#ifndef M2O_GRAPH_WEIGHTS_H
#define M2O_GRAPH_WEIGHTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "checkpoint/safetensors.h"
#include "common/err.h"
#include "graph/builder.h"
#include "weights/nonfinite.h"
#include "weights/producer.h"
#include "weights/reader.h"
#include "weights/sources.h"

/* The producer settings of this export (io dtype, --allow-nonfinite). */
wt_opts gb_weight_opts(const gb *b);

/* Attaches producer p (one or scatter) to a new streamed initializer `name` of that shape. */
void gb_attach_streamed(gb *b, const char *name, int elem_type, int ndim, const int64_t *dims,
                        const wt_producer *p);

/* Concatenation of small tensors (all elements, in order) converted to the io dtype, plus
 * `offset` added to every element (RMSNorm weights stored as w - 1). */
int gb_add_small(gb *b, const char *name, int n_parts, const st_tensor *const *parts,
                 float offset, int ndim, const int64_t *dims, m2o_err *err);
/* Same to float32 regardless of the io dtype (QMoE global scales, anything the op wants fp32). */
int gb_add_small_f32(gb *b, const char *name, int n_parts, const st_tensor *const *parts,
                     int ndim, const int64_t *dims, m2o_err *err);

/* A [rows, cols] tensor passed through symmetric blockwise quantization (blocks along cols) and
 * back, in the io dtype: the values a quantized model would see. */
int gb_add_small_qdq(gb *b, const char *name, const st_tensor *t, int64_t rows, int64_t cols,
                     int bits, int block_size, m2o_err *err);

/* A whole [rows, cols] tensor converted to the io dtype, streamed by rows (embeddings). */
int gb_add_converted(gb *b, const char *name, const st_tensor *t, m2o_err *err);

/* MatMul weight: the linear source transposed to [K, N] in the io dtype, streamed by K rows. */
int gb_add_linear_t(gb *b, const char *name, const linear_src *s, m2o_err *err);

/* MatMulNBits B [N, K/bs, bs*bits/8] uint8, scales [N * K/bs] io dtype and, when the spec has
 * them, zero points uint8 [N * ceil(K/bs * bits/8)] (docs/FORMATS.md §4), streamed by output
 * rows. zp_name is ignored when the spec writes no zero points. */
int gb_add_nbits(gb *b, const char *codes_name, const char *scales_name, const char *zp_name,
                 const linear_src *s, const wt_nbits_spec *spec, m2o_err *err);

#endif
