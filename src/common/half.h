/* Scalar conversions between float32 and the 16-bit float formats (IEEE binary16, bfloat16).
 * float32 -> 16-bit rounds to nearest even, like numpy / PyTorch / ONNX Runtime. */
#ifndef M2O_HALF_H
#define M2O_HALF_H

#include <stdint.h>
#include <string.h>

static inline uint32_t m2o_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float m2o_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline float bf16_to_f32(uint16_t h) { return m2o_bits_f32((uint32_t)h << 16); }

static inline uint16_t f32_to_bf16(float f)
{
    uint32_t u = m2o_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it a quiet NaN */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

#endif
