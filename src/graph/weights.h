/* Initializers made from checkpoint tensors. Small ones (norms, biases, sinks) are converted now;
 * large ones are streamed: a producer reads a slice of the checkpoint through the map, converts
 * it and fills one chunk on the writer's thread pool, then releases the pages it read.
 *
 * A "linear source" is one nn.Linear weight [N, K] or several stacked along N (packed q/k/v). */
#ifndef M2O_GRAPH_WEIGHTS_H
#define M2O_GRAPH_WEIGHTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "checkpoint/safetensors.h"
#include "common/err.h"
#include "graph/builder.h"

#define LINEAR_MAX_PARTS 4

typedef struct linear_src {
    int n_parts;
    const st_tensor *w[LINEAR_MAX_PARTS];    /* [N_i, K] */
    const st_tensor *bias[LINEAR_MAX_PARTS]; /* [N_i] or NULL (all or none) */
} linear_src;

int64_t linear_src_n(const linear_src *s);
int64_t linear_src_k(const linear_src *s);

/* ---- element helpers (pure) ---- */

/* Elements [first, first + count) of a BF16/F16/F32 tensor as float32. */
int tensor_read_f32(const st_tensor *t, int64_t first, int64_t count, float *out, m2o_err *err);
/* float32 → io dtype (ONNX_FLOAT / FLOAT16 / BFLOAT16), round to nearest even. */
void f32_to_dtype(const float *src, void *dst, size_t n, int dtype);
/* Fails naming the tensor and element when a value is NaN/Inf (unless allowed). */
int check_finite(const float *v, size_t n, int64_t first_index, const char *tensor, bool allow,
                 m2o_err *err);
/* The same for values about to be encoded as `format` ("int4 quantization", "MXFP4", ...):
 * those codes have no NaN/Inf, so this fails whatever --allow-nonfinite says, and says so. */
int check_encodable(const float *v, size_t n, int64_t first_index, const char *tensor,
                    const char *format, m2o_err *err);
/* Index of the first finite value that rounds to +-Inf in dtype (float16 from 65520, bfloat16
 * from 3.3961e38), or -1. */
int64_t first_overflow(const float *v, size_t n, int dtype);
/* Fails naming the tensor and element when a finite value overflows dtype (it would be written
 * as Inf): --allow-nonfinite keeps NaN/Inf that the checkpoint holds, it never makes new ones. */
int check_fits(const float *v, size_t n, int64_t first_index, const char *tensor, int dtype,
               m2o_err *err);
/* Index of the first +-Inf/NaN among n block scales of `elem_type` (ONNX_FLOAT/16/BF16): the
 * quantizers only see finite values, so one is a scale that overflowed its type. -1 if none. */
int64_t first_nonfinite_scale(const void *scales, size_t n, int elem_type);
/* The message for such a scale: block_first is the block's first element in tensor. */
int scale_overflow_fail(const char *tensor, int64_t block_first, int block_size, int elem_type,
                        m2o_err *err);
/* The name of an integer expert/linear encoding for check_encodable's message. */
const char *int_format_name(int bits);
/* Fails naming the tensor, its file and dtype unless it is BF16, F16 or F32: streamed
 * initializers call this when they are added, so a wrong dtype stops the export before any
 * bytes are written rather than midway. */
int require_float(const st_tensor *t, m2o_err *err);
/* Largest divisor d of rows with d * row_bytes <= target (at least 1). */
int64_t chunk_rows(int64_t rows, size_t row_bytes, size_t target);

/* ---- initializers ---- */

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

/* MatMulNBits B [N, K/bs, bs*bits/8] uint8 and scales [N * K/bs] io dtype (symmetric, signed
 * scales, docs/FORMATS.md §4), streamed by output rows. */
int gb_add_nbits(gb *b, const char *codes_name, const char *scales_name, const linear_src *s,
                 int bits, int block_size, m2o_err *err);

#endif
