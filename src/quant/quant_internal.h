/* Shared pieces of the quant kernels that are not part of the public interface: CPU dispatch,
 * scale storage in the three scale types, and the AVX2 kernels (compiled with a target
 * attribute, called only after a runtime CPU check). */
#ifndef M2O_QUANT_INTERNAL_H
#define M2O_QUANT_INTERNAL_H

#include "quant/quant.h"

#include "common/half.h"

#if defined(__x86_64__) || defined(__i386__)
#define M2O_HAVE_X86 1
/* No "fma" on purpose: without it the compiler cannot fuse a multiply and an add, so the SIMD
 * code rounds exactly like the scalar reference (v * r, then + zp). */
#define M2O_TARGET_AVX2 __attribute__((target("avx2,f16c")))
#else
#define M2O_HAVE_X86 0
#endif

/* True when the AVX2 kernels may run (CPU has AVX2 + F16C and scalar is not forced). */
bool quant_use_avx2(void);

/* Rounds s to the scale type and stores it at index i; returns the stored value as float
 * (what the quantizer divides by, so float16 rounding happens before quantizing). */
static inline float qscale_store(void *scales, qscale_type t, int64_t i, float s)
{
    switch (t) {
    case QSCALE_F16: {
        uint16_t h = f32_to_f16(s);
        ((uint16_t *)scales)[i] = h;
        return f16_to_f32(h);
    }
    case QSCALE_BF16: {
        uint16_t h = f32_to_bf16(s);
        ((uint16_t *)scales)[i] = h;
        return bf16_to_f32(h);
    }
    default:
        ((float *)scales)[i] = s;
        return s;
    }
}

static inline float qscale_load(const void *scales, qscale_type t, int64_t i)
{
    switch (t) {
    case QSCALE_F16: return f16_to_f32(((const uint16_t *)scales)[i]);
    case QSCALE_BF16: return bf16_to_f32(((const uint16_t *)scales)[i]);
    default: return ((const float *)scales)[i];
    }
}

/* Code (or zero point) k of a row: a byte for 8 bits; for 4 bits, even k in the low nibble
 * (docs/FORMATS.md §4 step 7), the other nibble kept. */
static inline void qb_put_code(uint8_t *row, int64_t k, int bits, uint8_t q)
{
    if (bits == 8)
        row[k] = q;
    else if (k % 2 == 0)
        row[k / 2] = (uint8_t)((row[k / 2] & 0xf0) | q);
    else
        row[k / 2] = (uint8_t)((row[k / 2] & 0x0f) | (q << 4));
}

/* Code (or zero point) k of a row, as qb_put_code stores it. */
static inline int qb_get_code(const uint8_t *row, int64_t k, int bits)
{
    return bits == 8 ? row[k] : (k % 2 ? row[k / 2] >> 4 : row[k / 2] & 0xf);
}

/* Scale and zero point of one block from its min and max, exactly as ONNX Runtime's
 * range2scale / range2scalezp (docs/FORMATS.md §4). Returns the unrounded float scale. */
float qb_block_params(float vmin, float vmax, const qb_params *p, uint8_t *zp);

/* Rows [r0, r1) of the blockwise quantizer, arguments already checked. Pointers are the
 * whole-matrix buffers. Returns -1 with a message on a non-finite weight. */
int qb_quantize_rows_ref(const float *w, int64_t r0, int64_t r1, int64_t K, const qb_params *p,
                         uint8_t *codes, void *scales, uint8_t *zero_points, m2o_err *err);
/* The same rows through the AVX2 twin when the CPU has it (same bytes, same messages). */
int qb_quantize_rows(const float *w, int64_t r0, int64_t r1, int64_t K, const qb_params *p,
                     uint8_t *codes, void *scales, uint8_t *zero_points, m2o_err *err);
/* For a 64-element run of K: table[j] = which source element lands at output slot j. */
const uint8_t *cutlass_run_table(int bits);
int cutlass_pack_rows_scalar(const uint8_t *raw, int64_t r0, int64_t r1, int64_t K, int bits,
                             uint8_t *out);
int mxfp4_encode_rows_ref(const float *w, int64_t r0, int64_t r1, int64_t K, uint8_t *codes,
                          uint8_t *scales, m2o_err *err);
int mxfp4_check(const void *a, const void *b, const void *c, int64_t N, int64_t K, m2o_err *err);

#if M2O_HAVE_X86
int qb_quantize_rows_avx2(const float *w, int64_t r0, int64_t r1, int64_t K, const qb_params *p,
                          uint8_t *codes, void *scales, uint8_t *zero_points, m2o_err *err);
void cutlass_pack_rows_avx2(const uint8_t *raw, int64_t r0, int64_t r1, int64_t K, int bits,
                            uint8_t *out);
void cutlass_unpack_rows_avx2(const uint8_t *packed, int64_t r0, int64_t r1, int64_t K, int bits,
                              uint8_t *raw);
int mxfp4_encode_rows_avx2(const float *w, int64_t r0, int64_t r1, int64_t K, uint8_t *codes,
                           uint8_t *scales, m2o_err *err);
void mxfp4_decode_rows_avx2(const uint8_t *codes, const uint8_t *scales, int64_t r0, int64_t r1,
                            int64_t K, float *out);
void fp4_cuda_pack_avx2(const uint8_t *raw, int64_t N, int64_t K, uint8_t *out);
void transpose_f32_avx2(const float *src, int64_t rows, int64_t cols, float *dst);
int64_t f32_first_nonfinite_avx2(const float *v, size_t n);
void convert_bf16_to_f32_transposed_avx2(const uint16_t *src, int64_t ld_src, int64_t rows,
                                         int64_t cols, float *dst, int64_t ld_dst);
void convert_bf16_to_f32_avx2(const uint16_t *src, float *dst, size_t n);
void convert_f16_to_f32_avx2(const uint16_t *src, float *dst, size_t n);
void convert_f32_to_f16_avx2(const float *src, uint16_t *dst, size_t n);
void convert_f32_to_bf16_avx2(const float *src, uint16_t *dst, size_t n);
/* The scale search's scoring sums (search.c, search_sums_ref) for n candidates, and its codes of
 * one block at reciprocal scale r and zero point z (search.c, code_block). */
void search_sums_avx2(const float *v, int bs, float qmax, const float *r, const int *zp, int n,
                      float *vj, int32_t *jj);
void search_codes_avx2(const float *v, int bs, float r, float z, float qmax, uint8_t *q);
#endif

/* numpy's float32 pairwise summation of a[0, n) (np.sum over a contiguous row; kquant.c). */
float kq_pairwise_sum(const float *a, int64_t n);

/* Rows [r0, r1) of one blockwise quantization, the context quant_parallel_for hands to the row
 * functions of blockwise.c (RTN) and search.c (scale search). */
typedef struct qb_job {
    const float *w;
    int64_t K;
    const qb_params *p;
    uint8_t *codes;
    void *scales;
    uint8_t *zero_points;
} qb_job;

#endif
