/* Quantization error sums (quant/qerr.h). The decode of each element repeats verify's
 * (src/verify/compare.c) so the build's numbers and verify's are the same numbers. */
#include "quant/qerr.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "quant/qerr_internal.h"
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

void qerr_lanes_add(qerr_lanes *l, const float *x, const float *y, int64_t len)
{
    for (int64_t i = 0; i < len; i += QERR_LANES) {
        for (int j = 0; j < QERR_LANES; j++) {
            double xd = x[i + j], d = (double)y[i + j] - xd, a = fabs(d);
            l->e[j] += d * d;
            l->r[j] += xd * xd;
            l->m[j] = a > l->m[j] ? a : l->m[j];
        }
    }
}

/* Decoded values are gathered a piece at a time: whole blocks, or part of a long one. */
#define PIECE 256

/* Adds x[0, len) against its decoded y: through the lanes when every value is finite (the
 * encoders' output always is; x is checked here), else element by element. */
static void add_piece(qerr_acc *acc, qerr_lanes *l, const float *x, const float *y, int64_t len)
{
    uint32_t bad = 0;
    for (int64_t i = 0; i < len; i++) {
        uint32_t b;
        memcpy(&b, &x[i], 4);
        bad |= (uint32_t)((b & 0x7f800000u) == 0x7f800000u);
        memcpy(&b, &y[i], 4);
        bad |= (uint32_t)((b & 0x7f800000u) == 0x7f800000u);
    }
    if (bad || len % QERR_LANES) {
        for (int64_t i = 0; i < len; i++)
            add_element(acc, x[i], y[i]);
        return;
    }
    if (quant_use_avx2())
        qerr_lanes_add_avx2(l, x, y, len);
    else
        qerr_lanes_add(l, x, y, len);
    acc->n += len;
}

/* Folds the lanes into acc in a fixed order. */
static void fold(qerr_acc *acc, const qerr_lanes *l)
{
    acc->sum_err2 += ((l->e[0] + l->e[1]) + (l->e[2] + l->e[3])) +
                     ((l->e[4] + l->e[5]) + (l->e[6] + l->e[7]));
    acc->sum_ref2 += ((l->r[0] + l->r[1]) + (l->r[2] + l->r[3])) +
                     ((l->r[4] + l->r[5]) + (l->r[6] + l->r[7]));
    for (int j = 0; j < QERR_LANES; j++)
        if (l->m[j] > acc->max_abs)
            acc->max_abs = l->m[j];
}

static int zero_point(const qb_params *p, const uint8_t *zrow, int64_t b)
{
    if (p->symmetric || !zrow)
        return 1 << (p->bits - 1);
    return qb_get_code(zrow, b, p->bits);
}

/* y[k - k0] for k in [k0, k1) of one block: (float)(q - zp) * s, as verify decodes. */
static void decode_int(const uint8_t *row, int64_t k0, int64_t k1, int bits, int zp, float s,
                       float *y)
{
    if (bits == 4) {
        for (int64_t k = k0; k < k1; k++)
            y[k - k0] = (float)(((row[k >> 1] >> ((k & 1) << 2)) & 0xf) - zp) * s;
    } else if (bits == 8) {
        for (int64_t k = k0; k < k1; k++)
            y[k - k0] = (float)(row[k] - zp) * s;
    } else {
        for (int64_t k = k0; k < k1; k++)
            y[k - k0] = (float)(((row[k / 4] >> (2 * (k % 4))) & 3) - zp) * s;
    }
}

void qerr_blockwise(const float *w, int64_t N, int64_t K, const qb_params *p,
                    const uint8_t *codes, const void *scales, const uint8_t *zero_points,
                    qerr_acc *acc)
{
    int bits = p->bits, bs = p->block_size;
    int64_t nb = K / bs, zrow_bytes = bits == 8 ? nb : bits == 4 ? (nb + 1) / 2 : (nb + 3) / 4;
    float y[PIECE];
    qerr_lanes l;
    memset(&l, 0, sizeof l);
    bool fast = quant_use_avx2() && (bits == 4 || bits == 8) && bs % 8 == 0;
    for (int64_t n = 0; n < N; n++) {
        const uint8_t *row = codes + n * (K * bits / 8);
        const uint8_t *zrow = zero_points ? zero_points + n * zrow_bytes : NULL;
        for (int64_t b = 0; b < nb; b++) {
            float s = qscale_load(scales, p->scale_type, n * nb + b);
            int zp = zero_point(p, zrow, b);
            if (fast && isfinite(s) &&
                qerr_int_block_avx2(&l, w + n * K + b * bs, row + b * bs * bits / 8, bs, bits,
                                    zp, s)) {
                acc->n += bs;
                continue;
            }
            for (int64_t k0 = b * bs; k0 < (b + 1) * bs; k0 += PIECE) {
                int64_t k1 = k0 + PIECE < (b + 1) * bs ? k0 + PIECE : (b + 1) * bs;
                decode_int(row, k0, k1, bits, zp, s, y);
                add_piece(acc, &l, w + n * K + k0, y, k1 - k0);
            }
        }
    }
    fold(acc, &l);
}

void qerr_mxfp4(const float *w, int64_t N, int64_t K, const uint8_t *codes,
                const uint8_t *scales, qerr_acc *acc)
{
    float y[32];
    qerr_lanes l;
    memset(&l, 0, sizeof l);
    for (int64_t n = 0; n < N; n++) {
        for (int64_t b = 0; b < K / 32; b++) {
            uint8_t sb = scales[n * (K / 32) + b];
            /* E2M1 x 2^(e-127) is exact in float except at the extremes of e: decode in double
             * as verify does, then store (exactly, or NaN / rounded only when sb is 255 or
             * the value leaves float's range: those go element by element) */
            double scale = sb == 255 ? NAN : ldexp(1.0, (int)sb - 127);
            bool exact = sb != 255 && sb >= 2 && sb <= 252;
            for (int64_t k = b * 32; k < b * 32 + 32; k++) {
                uint8_t byte = codes[(n * K + k) / 2];
                int c = k % 2 ? byte >> 4 : byte & 0xf;
                double mag = kE2M1[c & 7] * scale;
                double v = c & 8 ? -mag : mag;
                if (exact)
                    y[k - b * 32] = (float)v;
                else
                    add_element(acc, w[n * K + k], v);
            }
            if (exact)
                add_piece(acc, &l, w + n * K + b * 32, y, 32);
        }
    }
    fold(acc, &l);
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
