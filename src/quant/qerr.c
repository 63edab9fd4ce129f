/* Quantization error sums (quant/qerr.h). The decode of each element repeats verify's
 * (src/verify/compare.c) so the build's numbers and verify's are the same numbers. */
#include "quant/qerr.h"

#include <math.h>
#include <stdio.h>

#include "quant/quant_internal.h"

static const float kE2M1[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

void qerr_merge(qerr_acc *into, const qerr_acc *a)
{
    into->n += a->n;
    into->n_nonfinite += a->n_nonfinite;
    into->sum_err2 += a->sum_err2;
    into->sum_ref2 += a->sum_ref2;
    if (a->max_abs > into->max_abs)
        into->max_abs = a->max_abs;
}

double qerr_rel_rms(const qerr_acc *a)
{
    if (a->sum_ref2 > 0)
        return sqrt(a->sum_err2 / a->sum_ref2);
    return a->sum_err2 > 0 ? INFINITY : 0.0;
}

static inline void add_element(qerr_acc *acc, float x, double y)
{
    if (!isfinite(x)) {
        acc->n_nonfinite++;
        return;
    }
    double d = isfinite(y) ? fabs(y - (double)x) : INFINITY;
    acc->n++;
    acc->sum_err2 += d * d;
    acc->sum_ref2 += (double)x * x;
    if (d > acc->max_abs)
        acc->max_abs = d;
}

static int zero_point(const qb_params *p, const uint8_t *zrow, int64_t b)
{
    if (p->symmetric || !zrow)
        return 1 << (p->bits - 1);
    if (p->bits == 8)
        return zrow[b];
    return b % 2 ? zrow[b / 2] >> 4 : zrow[b / 2] & 0xf;
}

static int code_at(const uint8_t *row, int64_t k, int bits)
{
    if (bits == 4)
        return (row[k >> 1] >> ((k & 1) << 2)) & 0xf;
    if (bits == 8)
        return row[k];
    return (row[k / 4] >> (2 * (k % 4))) & 3;
}

void qerr_blockwise(const float *w, int64_t N, int64_t K, const qb_params *p,
                    const uint8_t *codes, const void *scales, const uint8_t *zero_points,
                    qerr_acc *acc)
{
    int bits = p->bits, bs = p->block_size;
    int64_t nb = K / bs, zrow_bytes = bits == 8 ? nb : bits == 4 ? (nb + 1) / 2 : (nb + 3) / 4;
    for (int64_t n = 0; n < N; n++) {
        const uint8_t *row = codes + n * (K * bits / 8);
        const uint8_t *zrow = zero_points ? zero_points + n * zrow_bytes : NULL;
        for (int64_t b = 0; b < nb; b++) {
            float s = qscale_load(scales, p->scale_type, n * nb + b);
            int zp = zero_point(p, zrow, b);
            for (int64_t k = b * bs; k < (b + 1) * bs; k++) {
                int q = code_at(row, k, bits);
                add_element(acc, w[n * K + k], (double)(float)((float)(q - zp) * s));
            }
        }
    }
}

void qerr_mxfp4(const float *w, int64_t N, int64_t K, const uint8_t *codes,
                const uint8_t *scales, qerr_acc *acc)
{
    for (int64_t n = 0; n < N; n++) {
        for (int64_t b = 0; b < K / 32; b++) {
            uint8_t sb = scales[n * (K / 32) + b];
            double scale = sb == 255 ? NAN : ldexp(1.0, (int)sb - 127);
            for (int64_t k = b * 32; k < b * 32 + 32; k++) {
                uint8_t byte = codes[(n * K + k) / 2];
                int c = k % 2 ? byte >> 4 : byte & 0xf;
                double mag = kE2M1[c & 7] * scale;
                add_element(acc, w[n * K + k], c & 8 ? -mag : mag);
            }
        }
    }
}

void qerr_format_name(const qerr_format *f, char *buf, size_t len)
{
    if (f->kind == QERR_FLOAT) {
        snprintf(buf, len, "%s", f->scale_type == QSCALE_F16    ? "float16"
                                 : f->scale_type == QSCALE_BF16 ? "bfloat16"
                                                                : "float32");
        return;
    }
    if (f->kind == QERR_MXFP4) {
        snprintf(buf, len, "mxfp4 bs32");
        return;
    }
    const char *st = f->scale_type == QSCALE_F16 ? "f16" : f->scale_type == QSCALE_BF16 ? "bf16"
                                                                                        : "f32";
    snprintf(buf, len, "int%d bs%d %s %s scales", f->bits, f->block_size,
             f->symmetric ? "sym" : "zp", st);
}
