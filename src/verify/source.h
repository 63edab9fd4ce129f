/* The checkpoint side of verify: each expert and linear weight rebuilt as float32 [N][K] from
 * the source tensors, following docs/FORMATS.md §3 directly (not the exporter's code):
 *   gpt-oss MXFP4  *_blocks U8 [E, N, K/32, 16] + *_scales U8 [E, N, K/32], decoded;
 *   gpt-oss BF16   gate_up_proj [E, H, 2I] / down_proj [E, I, H], input-major: transposed;
 *   Qwen fused     gate_up_proj [E, 2I, H] (gate then up) / down_proj [E, H, I];
 *   Qwen per expert experts.{j}.{gate,up,down}_proj.weight.
 * fc1 rows come out gate/up INTERLEAVED (even gate, odd up), as swiglu_fusion=1 requires; gpt-oss
 * stores them interleaved already, Qwen's halves are interleaved here. */
#ifndef M2O_VERIFY_SOURCE_H
#define M2O_VERIFY_SOURCE_H

#include <stdbool.h>
#include <stdint.h>

#include "arch/model_desc.h"
#include "checkpoint/safetensors.h"
#include "common/err.h"

typedef enum vsrc_kind {
    VSRC_MXFP4,      /* blocks + scales */
    VSRC_FUSED_KN,   /* one [E, K, N] tensor (gpt-oss BF16) */
    VSRC_FUSED_NK,   /* one [E, N, K] tensor; fc1 as [gate; up] halves (Qwen fused) */
    VSRC_PER_EXPERT, /* E tensors per projection (Qwen) */
} vsrc_kind;

typedef struct vexperts {
    vsrc_kind kind;
    bool fc1;
    int64_t E, N, K;
    const st_checkpoint *ck;
    const st_tensor *t;        /* MXFP4 blocks / fused tensor */
    const st_tensor *scales;   /* MXFP4 */
    char prefix[192];          /* "{p}layers.{L}.mlp.experts" */
    char what[224];            /* for messages: the source tensor name (or pattern) */
} vexperts;

/* Finds layer L's fc1 (gate_up) or fc2 (down) experts for md's architecture; E, N, K from md.
 * Errors name the tensors looked for. */
int vexperts_find(const st_checkpoint *ck, const model_desc *md, int layer, bool fc1,
                  vexperts *x, m2o_err *err);
/* Expert e as float32 [N][K] (fc1 interleaved). tmp: N*K floats of scratch. */
int vexperts_read(const vexperts *x, int64_t e, float *out, float *tmp, m2o_err *err);
/* MXFP4 sources: expert e's codes [N][K/2] and scale bytes [N][K/32] as stored. */
void vexperts_mxfp4(const vexperts *x, int64_t e, const uint8_t **codes, const uint8_t **scales);
/* Tells the kernel expert e's source pages will not be needed again. */
void vexperts_release(const vexperts *x, int64_t e);

#define VLIN_MAX_PARTS 4

/* One linear weight [N, K]: checkpoint tensors stacked along N. */
typedef struct vlinear {
    int n_parts;
    const st_tensor *w[VLIN_MAX_PARTS];
    int64_t N, K;
} vlinear;

/* Rows [r0, r0 + nr) of the stacked weight as float32 [nr][K]. */
int vlinear_read_rows(const vlinear *l, int64_t r0, int64_t nr, float *out, m2o_err *err);

#endif
