/* Element conversions between float32 and the 16-bit float formats, and a float32 transpose,
 * used around the kernels (checkpoints hold BF16/F16; scales go out as F16/BF16). The AVX2
 * paths give the same bits as common/half.h for every non-NaN input; a NaN stays a NaN (F16C
 * keeps more of a NaN's payload than the scalar float16 converter). */
#include "quant/quant_internal.h"

#include <string.h>

void convert_bf16_to_f32(const uint16_t *src, float *dst, size_t n)
{
#if M2O_HAVE_X86
    if (quant_use_avx2()) {
        convert_bf16_to_f32_avx2(src, dst, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++)
        dst[i] = bf16_to_f32(src[i]);
}

void convert_f16_to_f32(const uint16_t *src, float *dst, size_t n)
{
#if M2O_HAVE_X86
    if (quant_use_avx2()) {
        convert_f16_to_f32_avx2(src, dst, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++)
        dst[i] = f16_to_f32(src[i]);
}

void convert_f32_to_f16(const float *src, uint16_t *dst, size_t n)
{
#if M2O_HAVE_X86
    if (quant_use_avx2()) {
        convert_f32_to_f16_avx2(src, dst, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++)
        dst[i] = f32_to_f16(src[i]);
}

void convert_f32_to_bf16(const float *src, uint16_t *dst, size_t n)
{
#if M2O_HAVE_X86
    if (quant_use_avx2()) {
        convert_f32_to_bf16_avx2(src, dst, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++)
        dst[i] = f32_to_bf16(src[i]);
}

/* Cache-blocked, so reads and writes both stay in L1 (a 32 x 32 tile is 4 KiB on each side);
 * the AVX2 path transposes 8 x 8 blocks in registers. */
void transpose_f32(const float *src, int64_t rows, int64_t cols, float *dst)
{
#if M2O_HAVE_X86
    if (quant_use_avx2()) {
        transpose_f32_avx2(src, rows, cols, dst);
        return;
    }
#endif
    const int64_t T = 32;
    for (int64_t r0 = 0; r0 < rows; r0 += T) {
        int64_t r1 = r0 + T < rows ? r0 + T : rows;
        for (int64_t c0 = 0; c0 < cols; c0 += T) {
            int64_t c1 = c0 + T < cols ? c0 + T : cols;
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++)
                    dst[c * rows + r] = src[r * cols + c];
        }
    }
}

void convert_bf16_to_f32_transposed(const uint16_t *src, int64_t ld_src, int64_t rows,
                                    int64_t cols, float *dst, int64_t ld_dst)
{
#if M2O_HAVE_X86
    if (quant_use_avx2()) {
        convert_bf16_to_f32_transposed_avx2(src, ld_src, rows, cols, dst, ld_dst);
        return;
    }
#endif
    const int64_t T = 32;
    for (int64_t r0 = 0; r0 < rows; r0 += T) {
        int64_t r1 = r0 + T < rows ? r0 + T : rows;
        for (int64_t c = 0; c < cols; c++)
            for (int64_t r = r0; r < r1; r++)
                dst[c * ld_dst + r] = bf16_to_f32(src[r * ld_src + c]);
    }
}

static bool nonfinite_bits(const float *v)
{
    uint32_t u;
    memcpy(&u, v, 4);
    return (u & 0x7f800000u) == 0x7f800000u;
}

int64_t f32_first_nonfinite(const float *v, size_t n)
{
#if M2O_HAVE_X86
    if (quant_use_avx2())
        return f32_first_nonfinite_avx2(v, n);
#endif
    for (size_t i = 0; i < n; i++)
        if (nonfinite_bits(v + i))
            return (int64_t)i;
    return -1;
}
