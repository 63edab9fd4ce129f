/* The one non-finite policy of the exporter: every
 * producer asks here whether a value may be written, and every refusal's message is made here.
 *   - NaN/Inf that the checkpoint holds fail unless --allow-nonfinite (`allow`) keeps them, and
 *     only for float outputs: integer and MXFP4 codes cannot hold them, so an encoded
 *     destination fails whatever the option says, and says so.
 *   - A finite value that the conversion would turn into Inf (float16 from 65520, bfloat16 from
 *     3.3961e38, or a block scale that overflows its type) always fails: the option keeps NaN/Inf
 *     the checkpoint holds, it never makes new ones.
 * The messages are the README's error catalogue (tests/e2e/errors.test.sh checks them). */
#ifndef M2O_WEIGHTS_NONFINITE_H
#define M2O_WEIGHTS_NONFINITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* Fails naming the tensor and element when a value is NaN/Inf (unless allowed). */
int check_finite(const float *v, size_t n, int64_t first_index, const char *tensor, bool allow,
                 m2o_err *err);
/* The same for values about to be encoded as `format` ("int4 quantization", "MXFP4", ...):
 * those codes have no NaN/Inf, so this fails whatever --allow-nonfinite says, and says so. */
int check_encodable(const float *v, size_t n, int64_t first_index, const char *tensor,
                    const char *format, m2o_err *err);
/* check_encodable when `format` is set (an encoded destination), else check_finite. */
int check_values(const float *v, size_t n, int64_t first_index, const char *tensor,
                 const char *format, bool allow, m2o_err *err);
/* Index of the first finite value that rounds to +-Inf in dtype (float16 from 65520, bfloat16
 * from 3.3961e38), or -1. */
int64_t first_overflow(const float *v, size_t n, int dtype);
/* Fails naming the tensor and element when a finite value overflows dtype (it would be written
 * as Inf). */
int check_fits(const float *v, size_t n, int64_t first_index, const char *tensor, int dtype,
               m2o_err *err);
/* check_finite then check_fits: a float destination of type dtype. */
int check_float_out(const float *v, size_t n, int64_t first_index, const char *tensor,
                    bool allow, int dtype, m2o_err *err);
/* Index of the first +-Inf/NaN among n block scales of `elem_type` (ONNX_FLOAT/16/BF16): the
 * quantizers only see finite values, so one is a scale that overflowed its type. -1 if none. */
int64_t first_nonfinite_scale(const void *scales, size_t n, int elem_type);
/* The message for such a scale: block_first is the block's first element in tensor. */
int scale_overflow_fail(const char *tensor, int64_t block_first, int block_size, int elem_type,
                        m2o_err *err);
/* MXFP4 checkpoint scales (E8M0, docs/FORMATS.md §7): byte 255 is NaN and makes its block NaN. Fails
 * naming the first such byte of scales[0, n) (byte_first: the index of scales[0] in tensor):
 * always when `format` names an encoding, else unless allowed. */
int check_e8m0_scales(const uint8_t *scales, size_t n, int64_t byte_first, const char *tensor,
                      const char *format, bool allow, m2o_err *err);
/* The name of an integer expert/linear encoding for check_encodable's message. */
const char *int_format_name(int bits);

#endif
