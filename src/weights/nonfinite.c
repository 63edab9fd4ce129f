#include "weights/nonfinite.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "onnx/graph.h"
#include "quant/quant.h"

/* The advice every "cannot encode" message ends with: the option only helps float exports. */
#define ENCODED_ADVICE \
    "fix the checkpoint (--allow-nonfinite keeps NaN/Inf only in float exports: -p fp32, fp16 " \
    "or bf16)"

int check_finite(const float *v, size_t n, int64_t first_index, const char *tensor, bool allow,
                 m2o_err *err)
{
    if (allow)
        return 0;
    int64_t i = f32_first_nonfinite(v, n);
    if (i < 0)
        return 0;
    return m2o_fail(err, "tensor %s: element %lld is %s; fix the checkpoint or pass "
                         "--allow-nonfinite to keep it",
                    tensor, (long long)(first_index + i), isnan(v[i]) ? "NaN" : "Inf");
}

int check_encodable(const float *v, size_t n, int64_t first_index, const char *tensor,
                    const char *format, m2o_err *err)
{
    int64_t i = f32_first_nonfinite(v, n);
    if (i < 0)
        return 0;
    return m2o_fail(err, "tensor %s: element %lld is %s, which %s cannot encode; " ENCODED_ADVICE,
                    tensor, (long long)(first_index + i), isnan(v[i]) ? "NaN" : "Inf", format);
}

int check_values(const float *v, size_t n, int64_t first_index, const char *tensor,
                 const char *format, bool allow, m2o_err *err)
{
    return format ? check_encodable(v, n, first_index, tensor, format, err)
                  : check_finite(v, n, first_index, tensor, allow, err);
}

/* Smallest magnitude that rounds to Inf (round to nearest even): half an ulp above the largest
 * finite value. */
static double overflow_threshold(int dtype)
{
    return dtype == ONNX_FLOAT16 ? 65520.0 : dtype == ONNX_BFLOAT16 ? 0x1.fffp+127 : INFINITY;
}

static const char *overflow_type_text(int dtype)
{
    return dtype == ONNX_FLOAT16 ? "float16 (largest finite 65504)"
                                 : "bfloat16 (largest finite 3.39e38)";
}

int64_t first_overflow(const float *v, size_t n, int dtype)
{
    double lim = overflow_threshold(dtype);
    if (isinf(lim))
        return -1;
    for (size_t i = 0; i < n; i++)
        if (isfinite(v[i]) && fabs((double)v[i]) >= lim)
            return (int64_t)i;
    return -1;
}

int check_fits(const float *v, size_t n, int64_t first_index, const char *tensor, int dtype,
               m2o_err *err)
{
    int64_t i = first_overflow(v, n, dtype);
    if (i < 0)
        return 0;
    return m2o_fail(err, "tensor %s: element %lld is %g, which overflows %s and would be "
                         "written as Inf; export with %s",
                    tensor, (long long)(first_index + i), (double)v[i], overflow_type_text(dtype),
                    dtype == ONNX_FLOAT16 ? "-p bf16 or -p fp32" : "-p fp32");
}

int check_float_out(const float *v, size_t n, int64_t first_index, const char *tensor,
                    bool allow, int dtype, m2o_err *err)
{
    if (check_finite(v, n, first_index, tensor, allow, err))
        return -1;
    return check_fits(v, n, first_index, tensor, dtype, err);
}

int64_t first_nonfinite_scale(const void *scales, size_t n, int elem_type)
{
    const uint16_t *h = scales;
    for (size_t i = 0; i < n; i++) {
        bool bad = elem_type == ONNX_FLOAT16    ? (h[i] & 0x7c00) == 0x7c00
                   : elem_type == ONNX_BFLOAT16 ? (h[i] & 0x7f80) == 0x7f80
                                                : !isfinite(((const float *)scales)[i]);
        if (bad)
            return (int64_t)i;
    }
    return -1;
}

int scale_overflow_fail(const char *tensor, int64_t block_first, int block_size, int elem_type,
                        m2o_err *err)
{
    return m2o_fail(err, "tensor %s: the %d-value quantization block starting at element %lld "
                         "needs a scale that overflows %s and would be written as Inf; use %s",
                    tensor, block_size, (long long)block_first, overflow_type_text(elem_type),
                    elem_type == ONNX_FLOAT16
                        ? "--extra_options use_cuda_bf16=true (bfloat16 scales) or -e cpu "
                          "(float32 scales)"
                        : "-e cpu (float32 scales)");
}

int check_e8m0_scales(const uint8_t *scales, size_t n, int64_t byte_first, const char *tensor,
                      const char *format, bool allow, m2o_err *err)
{
    if (allow && !format)
        return 0;
    const uint8_t *bad = memchr(scales, 255, n);
    if (!bad)
        return 0;
    long long at = (long long)byte_first + (long long)(bad - scales);
    if (format)
        return m2o_fail(err, "tensor %s: byte %lld is 255, the E8M0 code for NaN, which %s "
                             "cannot encode; " ENCODED_ADVICE,
                        tensor, at, format);
    return m2o_fail(err, "tensor %s: byte %lld is 255, the E8M0 code for NaN; fix the checkpoint "
                         "or pass --allow-nonfinite to keep it", tensor, at);
}

const char *int_format_name(int bits)
{
    return bits == 8 ? "int8 quantization" : "int4 quantization";
}
