/* Producers: what turns checkpoint bytes into the bytes of one chunk of an output initializer.
 * src/graph/ declares the initializers (names, shapes, element types) and asks this folder for
 * the producer it attaches; the writer (src/onnx/graph_write.c) runs it later, one job per chunk,
 * on its thread pool (docs/ARCHITECTURE.md, "Threading and streaming").
 *
 * Every constructor validates what it will read (dtypes, shapes the encoding needs) when it is
 * called, so a bad checkpoint stops the export before any bytes are written. */
#ifndef M2O_WEIGHTS_PRODUCER_H
#define M2O_WEIGHTS_PRODUCER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "checkpoint/safetensors.h"
#include "common/err.h"
#include "onnx/graph.h"
#include "quant/qerr.h"
#include "weights/sources.h"

/* One producer and its chunk plan. Exactly one of one/group/scatter is set:
 *   one:     n_chunks chunks of chunk_bytes[0] (graph_add_streamed_initializer);
 *   group:   n_chunks chunks filling two (or three) initializers, chunk_bytes[0], [1] (and [2])
 *            (graph_add_streamed_group);
 *   scatter: n_chunks jobs writing pieces of total_bytes (graph_add_scattered_initializer).
 * ctx belongs to whoever attaches the producer (free it with free_ctx). */
typedef struct wt_producer {
    init_producer_fn one;
    init_group_producer_fn group;
    init_scatter_fn scatter;
    void *ctx;
    void (*free_ctx)(void *ctx);
    int64_t n_chunks;
    size_t chunk_bytes[3];   /* group: weights, scales, zero points (when asymmetric) */
    uint64_t total_bytes;
    /* A quantizing producer measures its error per chunk into (*qerr)[chunk] when the attacher
     * points *qerr at slots (weights/qerr_track.h); qerr NULL: nothing to measure. */
    qerr_acc **qerr;
    qerr_format qerr_fmt;
} wt_producer;

/* Settings every producer shares: the float type of the output (the io dtype) and
 * --allow-nonfinite. */
typedef struct wt_opts {
    int io;
    bool allow_nonfinite;
} wt_opts;

/* float32 → dtype (ONNX_FLOAT / FLOAT16 / BFLOAT16), round to nearest even. */
void f32_to_dtype(const float *src, void *dst, size_t n, int dtype);
/* Largest divisor d of rows with d * row_bytes <= target (at least 1). */
int64_t chunk_rows(int64_t rows, size_t row_bytes, size_t target);

/* ---- small and converted tensors (small.c) ---- */

/* Concatenation of n_parts tensors (all elements, in order) + offset, converted to dtype: one
 * chunk of `total` elements (the sum of the parts' sizes, stored in *total). */
int wt_small(const st_tensor *const *parts, int n_parts, float offset, int dtype,
             bool allow_nonfinite, int64_t *total, wt_producer *p, m2o_err *err);
/* t [rows, cols] through symmetric blockwise quantization (blocks along cols) and back, in the
 * io dtype: the values a quantized model would see. Returns malloc'd bytes (rows x cols). */
void *wt_small_qdq(const st_tensor *t, int64_t rows, int64_t cols, int bits, int block_size,
                   int io, m2o_err *err);
/* -exp(t) in float32, as transformers computes Gated DeltaNet's A (A_log.float().exp()):
 * malloc'd, t->numel values. A finite A_log whose -exp() overflows is refused. */
float *wt_neg_exp_f32(const st_tensor *t, bool allow_nonfinite, m2o_err *err);
/* A whole tensor converted to the io dtype, in bands of rows of about 16 MiB (embeddings). */
int wt_converted(const st_tensor *t, const wt_opts *o, wt_producer *p, m2o_err *err);

/* ---- linear layers (linear.c) ---- */

/* The linear source transposed to [K, N] in the io dtype (MatMul weight): scattered jobs, each
 * a band of source rows written into its columns. */
int wt_linear_t(const linear_src *s, const wt_opts *o, wt_producer *p, m2o_err *err);
/* How a MatMulNBits weight is quantized (docs/FORMATS.md §4): the MLAS blockwise quantizer
 * (algo_config=default), moe2onnx's scale search (same format), ONNX Runtime's INC RTN
 * (algo_config=rtn, §4.11) or k_quant (§4.10, always with zero points). */
typedef enum wt_nbits_method {
    WT_NBITS_MLAS, WT_NBITS_SEARCH, WT_NBITS_INC_RTN, WT_NBITS_KQUANT
} wt_nbits_method;
typedef struct wt_nbits_spec {
    int bits;          /* 4 or 8 */
    int block_size;    /* 16..256 */
    bool symmetric;    /* false: unsigned codes with zero points */
    wt_nbits_method method;
} wt_nbits_spec;
/* Does the spec write a zero-point tensor? (asymmetric, or k_quant) */
bool wt_nbits_has_zero_points(const wt_nbits_spec *q);
/* MatMulNBits codes [N, K/bs, bs*bits/8], scales [N * K/bs] (io dtype) and, when
 * wt_nbits_has_zero_points, zero points uint8 [N * ceil(K/bs * bits / 8)] packed per row (§4
 * step 8): a group, each band of output rows quantized once for all of them. */
int wt_nbits(const linear_src *s, const wt_nbits_spec *spec, const wt_opts *o, wt_producer *p,
             m2o_err *err);

/* ---- rotary caches (rope_cache.c) ---- */

struct rope_params;
/* cos_cache (want_sin false) or sin_cache [len, rotary_dim/2] in dtype, docs/FORMATS.md §12:
 * chunks of rows of about 4 MiB. */
int wt_rope_cache(const struct rope_params *rp, int64_t len, int dtype, bool want_sin,
                  wt_producer *p, m2o_err *err);

#endif
