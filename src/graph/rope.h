/* Rotary embedding caches for GroupQueryAttention (do_rotary=1): cos_cache / sin_cache
 * [context_length, rotary_dim/2], computed in float32 exactly as transformers'
 * ROPE_INIT_FUNCTIONS do (default, linear, YaRN incl. its attention factor), then rounded to the
 * io dtype. */
#ifndef M2O_GRAPH_ROPE_H
#define M2O_GRAPH_ROPE_H

#include <stdint.h>

#include "arch/model_desc.h"
#include "common/err.h"
#include "graph/builder.h"

#define ROPE_MAX_HALF 512

typedef struct rope_params {
    int rotary_dim;          /* head_dim * partial_rotary_factor (even) */
    float inv_freq[ROPE_MAX_HALF];
    float attention_factor;  /* multiplies cos and sin (YaRN mscale; 1 otherwise) */
} rope_params;

/* Pure: inv_freq and attention factor from the model description. */
int rope_compute(const model_desc *md, rope_params *out, m2o_err *err);

/* Pure: rows [p0, p0 + n) of the caches, float32 [n][rotary_dim/2]. */
void rope_cache_rows(const rope_params *rp, int64_t p0, int64_t n, float *cos_out, float *sin_out);

/* Adds cos_cache / sin_cache initializers (length md->context_length, at least
 * max_position_embeddings) and records their names in b. */
int gb_rotary_caches(gb *b, m2o_err *err);

#endif
