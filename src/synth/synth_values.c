/* Deterministic random tensor bytes. Each 8-byte word of a tensor is mix(key + (w + 1) * gamma),
 * the splitmix64 output function applied to a counter, so any byte range can be produced on its
 * own (threads fill disjoint chunks) and the result never depends on chunking. */
#include "synth/synth_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/half.h"

#define GOLDEN_GAMMA 0x9e3779b97f4a7c15ull

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t synth_tensor_key(uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    return mix64(mix64(seed + GOLDEN_GAMMA) ^ h);
}

/* Standard normal quantile at p = (i + 0.5) / 65536 for the upper half, by Newton's method on
 * the upper tail Q(x) = erfc(x / sqrt 2) / 2 (the tail keeps precision near p = 1), each entry
 * starting from its neighbour. The lower half is the mirror image. */
static void normal_quantiles(float *z)
{
    const double inv_sqrt2 = 0.70710678118654752440, inv_sqrt_2pi = 0.39894228040143267794;
    double x = 0.0;
    for (int i = 32768; i < 65536; i++) {
        double q = (65535 - i + 0.5) / 65536.0; /* upper-tail probability */
        for (int it = 0; it < 60; it++) {
            double dx = (0.5 * erfc(x * inv_sqrt2) - q) / (inv_sqrt_2pi * exp(-0.5 * x * x));
            x += dx;
            if (fabs(dx) < 1e-12)
                break;
        }
        z[i] = (float)x;
        z[65535 - i] = (float)-x;
    }
}

int synth_tables_create(synth_tables **out, m2o_err *err)
{
    static const float mean[SYNTH_DIST_COUNT] = {[SYNTH_DIST_WEIGHT] = 0.0f, [SYNTH_DIST_NORM] = 1.0f,
                                                 [SYNTH_DIST_SINK] = 0.0f};
    static const float sigma[SYNTH_DIST_COUNT] = {[SYNTH_DIST_WEIGHT] = 0.02f,
                                                  [SYNTH_DIST_NORM] = 0.02f, [SYNTH_DIST_SINK] = 1.0f};
    *out = NULL;
    synth_tables *t = m2o_malloc(sizeof *t, err);
    float *z = m2o_malloc(65536 * sizeof *z, err);
    if (!t || !z) {
        free(t);
        free(z);
        return -1;
    }
    normal_quantiles(z);
    for (int d = 0; d < SYNTH_DIST_COUNT; d++)
        for (int i = 0; i < 65536; i++)
            t->bf16[d][i] = f32_to_bf16(mean[d] + sigma[d] * z[i]);
    free(z);
    *out = t;
    return 0;
}

static inline void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* E8M0 scale bytes 118..124 (2^-9 .. 2^-3): with E2M1 codes up to 6 this keeps dequantized
 * expert weights within about ±0.75, most of them near the 0.02 of the BF16 tensors. */
static inline uint8_t scale_byte(uint64_t r, int i)
{
    return (uint8_t)(118 + ((((r >> (8 * i)) & 0xff) * 7) >> 8));
}

static void word_bytes(const synth_values *v, uint64_t w, uint8_t *out)
{
    uint64_t r = mix64(v->key + (w + 1) * GOLDEN_GAMMA);
    switch (v->kind) {
    case SYNTH_BF16:
        for (int i = 0; i < 4; i++)
            put_u16(out + 2 * i, v->table[(r >> (16 * i)) & 0xffff]);
        break;
    case SYNTH_MXFP4_BLOCKS:
        put_u64(out, r);
        break;
    case SYNTH_MXFP4_SCALES:
        for (int i = 0; i < 8; i++)
            out[i] = scale_byte(r, i);
        break;
    }
}

/* The bulk path: whole words, one loop per kind so the switch stays out of the inner loop. */
static void fill_words(const synth_values *v, uint64_t w, uint8_t *buf, size_t nwords)
{
    uint64_t ctr = v->key + (w + 1) * GOLDEN_GAMMA;
    const uint16_t *tab = v->table;
    switch (v->kind) {
    case SYNTH_BF16:
        for (size_t i = 0; i < nwords; i++, ctr += GOLDEN_GAMMA) {
            uint64_t r = mix64(ctr);
            put_u16(buf + 8 * i, tab[r & 0xffff]);
            put_u16(buf + 8 * i + 2, tab[(r >> 16) & 0xffff]);
            put_u16(buf + 8 * i + 4, tab[(r >> 32) & 0xffff]);
            put_u16(buf + 8 * i + 6, tab[r >> 48]);
        }
        break;
    case SYNTH_MXFP4_BLOCKS:
        for (size_t i = 0; i < nwords; i++, ctr += GOLDEN_GAMMA)
            put_u64(buf + 8 * i, mix64(ctr));
        break;
    case SYNTH_MXFP4_SCALES:
        for (size_t i = 0; i < nwords; i++, ctr += GOLDEN_GAMMA) {
            uint64_t r = mix64(ctr);
            for (int b = 0; b < 8; b++)
                buf[8 * i + b] = scale_byte(r, b);
        }
        break;
    }
}

void synth_fill(const synth_values *v, uint64_t offset, uint8_t *buf, size_t len)
{
    uint64_t w = offset / 8;
    size_t head = (size_t)(offset % 8), done = 0;
    uint8_t tmp[8];
    if (head && len) {
        word_bytes(v, w++, tmp);
        done = 8 - head < len ? 8 - head : len;
        memcpy(buf, tmp + head, done);
    }
    size_t nwords = (len - done) / 8;
    fill_words(v, w, buf + done, nwords);
    done += nwords * 8;
    w += nwords;
    if (done < len) {
        word_bytes(v, w, tmp);
        memcpy(buf + done, tmp, len - done);
    }
}
