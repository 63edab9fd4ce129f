/* Pure numeric kernels for every expert-weight encoding (docs/FORMATS.md §4–§8): buffers in, buffers out,
 * no I/O, no globals beyond the CPU-feature dispatch. Each kernel has a plain `_ref` version that
 * mirrors docs/FORMATS.md line by line and, where speed matters, an optimized version chosen at run time
 * that must give identical bytes. Every function validates its arguments and returns 0, or -1
 * with a message in err (nothing asserts or aborts).
 *
 * Conventions: a weight matrix is float32 [N][K] row-major, N = output features, K = input
 * features (the nn.Linear layout). Codes are packed along K. */
#ifndef M2O_QUANT_H
#define M2O_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* ---- Blockwise integer quantization (ONNX Runtime quantize_matmul_4bits/8bits, docs/FORMATS.md §4) ---- */

typedef enum qscale_type { QSCALE_F32, QSCALE_F16, QSCALE_BF16 } qscale_type;

typedef struct qb_params {
    int bits;               /* 4 or 8 */
    int block_size;         /* 16, 32, 64, 128 or 256 */
    bool symmetric;         /* true: signed scales, no zero points */
    qscale_type scale_type; /* scales are rounded to this type before quantizing */
} qb_params;

/* Output sizes for an [N][K] matrix. */
size_t qb_codes_bytes(int64_t N, int64_t K, const qb_params *p);       /* N*K*bits/8 */
size_t qb_scales_count(int64_t N, int64_t K, const qb_params *p);      /* N*K/bs */
size_t qb_zero_points_bytes(int64_t N, int64_t K, const qb_params *p); /* 0 when symmetric */
size_t qscale_size(qscale_type t);                                      /* 4 or 2 */

/* Checks p, N, K (K % block_size == 0, ...) with a message naming the bad value. */
int qb_check(int64_t N, int64_t K, const qb_params *p, m2o_err *err);

/* codes: [N][K/bs][bs*bits/8]; scales: [N][K/bs] of scale_type; zero_points (asymmetric only,
 * else may be NULL): 4-bit [N][ceil((K/bs)/2)] two per byte, even block in the low nibble (an
 * odd block count leaves 8 in the last high nibble, as ONNX Runtime does); 8-bit [N][K/bs].
 * A tie between the largest positive and negative magnitude anchors on the negative one. */
int qb_quantize_ref(const float *w, int64_t N, int64_t K, const qb_params *p,
                    uint8_t *codes, void *scales, uint8_t *zero_points, m2o_err *err);
int qb_quantize(const float *w, int64_t N, int64_t K, const qb_params *p,
                uint8_t *codes, void *scales, uint8_t *zero_points, m2o_err *err);
/* Same bytes as qb_quantize with the rows split over nthreads threads (<= 0: one per online CPU).
 * The blockwise and MXFP4 kernels work row by row, so E experts stored back to back are one call
 * with N = E * rows (CUTLASS too, its N being a multiple of 4; the fp4 CUDA layout is per
 * expert). Every quantizer refuses a non-finite weight, naming its row and column. */
int qb_quantize_mt(const float *w, int64_t N, int64_t K, const qb_params *p, uint8_t *codes,
                   void *scales, uint8_t *zero_points, int nthreads, m2o_err *err);
/* Inverse: (q - zp) * scale → float32 [N][K]. */
int qb_dequantize(const uint8_t *codes, const void *scales, const uint8_t *zero_points,
                  int64_t N, int64_t K, const qb_params *p, float *out, m2o_err *err);

/* ---- Per-channel symmetric (onnxruntime-genai's QMoE qmoe_block_size <= 0, src/quant/per_channel.c,
 * docs/FORMATS.md §4.12) ----
 * codes [N][K*bits/8] (code + 2^(bits-1), 4-bit even k in the low nibble); scales [N] of
 * scale_type, positive: max|w| / 2^(bits-1) (at least FLT_EPSILON), rounded to scale_type after the
 * codes were computed with the float32 value. A non-finite weight is refused. Decode: (q - 2^(bits-1))
 * * scale. */
int qc_check(int64_t N, int64_t K, int bits, m2o_err *err);
int qc_quantize(const float *w, int64_t N, int64_t K, int bits, qscale_type scale_type,
                uint8_t *codes, void *scales, m2o_err *err);

/* ---- Error-minimizing scale search (src/quant/search.c) ----
 * Same formats and sizes as qb_quantize (symmetric: signed scales, zero point 2^(bits-1);
 * asymmetric: scales + zero points), so nothing changes for ONNX Runtime; only the chosen
 * scale, zero point and codes of each block differ. Starts every block from the RTN bytes and
 * keeps them unless a candidate decodes with strictly lower squared error, so no block is ever
 * worse than RTN. Same bytes for any nthreads. */
typedef enum qb_method { QB_METHOD_RTN = 0, QB_METHOD_SEARCH = 1 } qb_method;
int qb_quantize_search(const float *w, int64_t N, int64_t K, const qb_params *p, uint8_t *codes,
                       void *scales, uint8_t *zero_points, m2o_err *err);
int qb_quantize_search_mt(const float *w, int64_t N, int64_t K, const qb_params *p,
                          uint8_t *codes, void *scales, uint8_t *zero_points, int nthreads,
                          m2o_err *err);
/* RTN (exactly qb_quantize_mt) or search, for callers that take the method as an option. */
int qb_quantize_method_mt(const float *w, int64_t N, int64_t K, const qb_params *p,
                          qb_method method, uint8_t *codes, void *scales, uint8_t *zero_points,
                          int nthreads, m2o_err *err);

/* ---- k_quant: ONNX Runtime's k-quant weight-only quantizer (src/quant/kquant.c, docs/FORMATS.md §4.10) ----
 * The `algo_config=k_quant` method of onnxruntime-genai's builder, reproduced bit for bit:
 * asymmetric (p->symmetric must be false), a weighted least-squares search over 20 scales per
 * block. Output formats and sizes are those of asymmetric qb_quantize (codes, scales of
 * p->scale_type, zero points packed as §4 step 8; qb_dequantize decodes them), except that
 * block_size may be any even divisor of K (K itself: one block per row, where ONNX Runtime sums
 * left to right, kquant.c says why). The codes are computed
 * with the float32 scale before it is rounded to the scale type, as ONNX Runtime does. Same bytes
 * for any nthreads; a non-finite weight is refused, naming its row and column. */
int kq_check(int64_t N, int64_t K, const qb_params *p, m2o_err *err);
int kq_quantize(const float *w, int64_t N, int64_t K, const qb_params *p, uint8_t *codes,
                void *scales, uint8_t *zero_points, m2o_err *err);
int kq_quantize_mt(const float *w, int64_t N, int64_t K, const qb_params *p, uint8_t *codes,
                   void *scales, uint8_t *zero_points, int nthreads, m2o_err *err);

/* ---- INC RTN: the builder's `algo_config=rtn` (src/quant/inc_rtn.c, docs/FORMATS.md §4.11) ----
 * ONNX Runtime's quant_tensor(..., dtype="uint") bit for bit: symmetric scale 2·max|w| / (2^bits - 1)
 * with the implicit zero point 2^(bits-1) (no zero-point tensor; p->symmetric), or asymmetric
 * (max - min) / (2^bits - 1) with zero points (the range not widened to include 0), all in float64,
 * scales rounded once to p->scale_type. source_type (QSCALE_F32 or QSCALE_F16) is the type the
 * weights had, in which ONNX Runtime takes max - min. Formats and block sizes as kq_quantize. */
int rtn_inc_quantize(const float *w, int64_t N, int64_t K, const qb_params *p,
                     qscale_type source_type, uint8_t *codes, void *scales,
                     uint8_t *zero_points, m2o_err *err);

/* Quantization error of a tensor against its source W [N][K], decoded with qb_dequantize. */
typedef struct qb_error {
    double sse;         /* sum of (w - deq)^2 */
    double sum_sq;      /* sum of w^2 */
    double max_abs_err; /* largest |w - deq| */
    int64_t count;      /* N * K */
} qb_error;
int qb_quant_error(const float *w, const uint8_t *codes, const void *scales,
                   const uint8_t *zero_points, int64_t N, int64_t K, const qb_params *p,
                   qb_error *out, m2o_err *err);
/* ||W - deq|| / ||W|| (0 for an exact all-zero tensor). */
double qb_relative_rmse(const qb_error *e);

/* ---- CUTLASS fpA_intB SM80 prepacked layout (docs/FORMATS.md §5) ---- */
/* raw: [N][K*bits/8] codes as produced by qb_quantize; out: N*K*bits/8 bytes. K % 64 == 0. */
int cutlass_sm80_pack_ref(const uint8_t *raw, int64_t N, int64_t K, int bits, uint8_t *out,
                          m2o_err *err);
int cutlass_sm80_pack(const uint8_t *raw, int64_t N, int64_t K, int bits, uint8_t *out,
                      m2o_err *err);
int cutlass_sm80_pack_mt(const uint8_t *raw, int64_t N, int64_t K, int bits, uint8_t *out,
                         int nthreads, m2o_err *err);
int cutlass_sm80_unpack(const uint8_t *packed, int64_t N, int64_t K, int bits, uint8_t *raw,
                        m2o_err *err);

/* ---- fp4 CUDA MoE layout (docs/FORMATS.md §6): nibble transpose [N][K/2] -> [K][N/2] ---- */
int fp4_cuda_pack_ref(const uint8_t *raw, int64_t N, int64_t K, uint8_t *out, m2o_err *err);
int fp4_cuda_pack(const uint8_t *raw, int64_t N, int64_t K, uint8_t *out, m2o_err *err);
int fp4_cuda_unpack(const uint8_t *packed, int64_t N, int64_t K, uint8_t *raw, m2o_err *err);

/* ---- MXFP4 (OCP MX v1.0, docs/FORMATS.md §7) ---- */
/* codes: [N][K/2] (low nibble = even k), scales: [N][K/32] E8M0 bytes. A gpt-oss checkpoint's
 * `*_blocks` [N, K/32, 16] are exactly these codes and `*_scales` exactly these scales, so the
 * passthrough path copies them unchanged. */
int mxfp4_decode_ref(const uint8_t *codes, const uint8_t *scales, int64_t N, int64_t K, float *out,
                     m2o_err *err);
int mxfp4_decode(const uint8_t *codes, const uint8_t *scales, int64_t N, int64_t K, float *out,
                 m2o_err *err);
/* OCP rule: e = floor(log2(amax)) - 2, round to nearest representable, ties to even code. */
int mxfp4_encode_ref(const float *w, int64_t N, int64_t K, uint8_t *codes, uint8_t *scales,
                     m2o_err *err);
int mxfp4_encode(const float *w, int64_t N, int64_t K, uint8_t *codes, uint8_t *scales,
                 m2o_err *err);
int mxfp4_encode_mt(const float *w, int64_t N, int64_t K, uint8_t *codes, uint8_t *scales,
                    int nthreads, m2o_err *err);
/* The reference builder's rule, kept only to measure what the OCP rule changes (see mxfp4.c):
 * e = round(log2(amax / 6)), values clamped to ±6, ties toward the smaller magnitude. */
int mxfp4_encode_builder_rule(const float *w, int64_t N, int64_t K, uint8_t *codes,
                              uint8_t *scales, m2o_err *err);
/* gpt-oss `*_blocks` [E, N, K/32, 16] + `*_scales` [E, N, K/32] → QMoE fp4 (CUDA) initializers:
 * weights [E, K, N/2] (fp4_cuda_pack per expert) and scales [E, N, K/32] (the same bytes).
 * Lossless: no value is decoded. */
int mxfp4_repack_qmoe_fp4(const uint8_t *blocks, const uint8_t *scales, int64_t E, int64_t N,
                          int64_t K, uint8_t *out_weights, uint8_t *out_scales, m2o_err *err);

/* ---- Conversions used around the kernels ---- */
void convert_bf16_to_f32(const uint16_t *src, float *dst, size_t n);
void convert_f16_to_f32(const uint16_t *src, float *dst, size_t n);
void convert_f32_to_f16(const float *src, uint16_t *dst, size_t n);
void convert_f32_to_bf16(const float *src, uint16_t *dst, size_t n);
/* Index of the first NaN or infinity in v[0, n), or -1 when every value is finite. */
int64_t f32_first_nonfinite(const float *v, size_t n);
/* dst[c][r] = src[r][c] for a rows x cols float matrix. */
void transpose_f32(const float *src, int64_t rows, int64_t cols, float *dst);
/* Converts and transposes a rows x cols block of a bfloat16 matrix in one pass:
 * dst[c * ld_dst + r] = src[r * ld_src + c] as float32 (an input-major [K, N] weight read as
 * [N][K] rows, a band of N at a time). */
void convert_bf16_to_f32_transposed(const uint16_t *src, int64_t ld_src, int64_t rows,
                                    int64_t cols, float *dst, int64_t ld_dst);

/* Name of the optimized code path chosen at run time ("avx2", "scalar"), for benchmarks. */
const char *quant_dispatch_name(void);
/* Tests and benchmarks only: true forces the optimized entry points onto the scalar path. */
void quant_force_scalar(bool on);

/* Runs fn(ctx, begin, end) over [0, count) split into contiguous chunks (multiples of `align`)
 * on up to nthreads threads (<= 0: one per online CPU); a chunk whose thread cannot start runs on
 * the caller. Returns 0, or -1 with the message of the first failing chunk (or of bad
 * arguments / out of memory) in err. */
typedef int (*quant_range_fn)(void *ctx, int64_t begin, int64_t end, m2o_err *err);
int quant_parallel_for(int64_t count, int64_t align, int nthreads, quant_range_fn fn, void *ctx,
                       m2o_err *err);

#endif
