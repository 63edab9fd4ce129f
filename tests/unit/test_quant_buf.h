/* Shared by the quant tests: the output buffers of one blockwise quantization (codes, scales,
 * zero points), filled with garbage first so unwritten bytes show, and their byte comparison.
 * Include after quant/quant.h. */
#ifndef M2O_TEST_QUANT_BUF_H
#define M2O_TEST_QUANT_BUF_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct qout {
    uint8_t *codes, *zp;
    void *scales;
    size_t cb, sb, zb;
} qout;

static inline void qout_alloc(qout *o, int64_t N, int64_t K, const qb_params *p)
{
    o->cb = qb_codes_bytes(N, K, p);
    o->sb = qb_scales_count(N, K, p) * qscale_size(p->scale_type);
    o->zb = qb_zero_points_bytes(N, K, p);
    o->codes = malloc(o->cb);
    o->scales = malloc(o->sb);
    o->zp = malloc(o->zb ? o->zb : 1);
    memset(o->codes, 0xa5, o->cb); /* garbage, so unwritten bytes would show */
    memset(o->scales, 0xa5, o->sb);
    memset(o->zp, 0xa5, o->zb ? o->zb : 1);
}

static inline void qout_free(qout *o)
{
    free(o->codes);
    free(o->scales);
    free(o->zp);
}

static inline bool qout_equal(const qout *a, const qout *b)
{
    return memcmp(a->codes, b->codes, a->cb) == 0 && memcmp(a->scales, b->scales, a->sb) == 0 &&
           memcmp(a->zp, b->zp, a->zb) == 0;
}

#endif
