/* The decoder-graph builder shared by every architecture: one context (graph, checkpoint,
 * resolved options, io dtype) plus the naming rules of onnxruntime-genai and the small helpers
 * every block needs (constants, node creation, checkpoint lookups with clear errors).
 *
 * Naming: a node called "/model/layers.0/attn/o_proj/MatMul" has outputs
 * "/model/layers.0/attn/o_proj/MatMul/output_0", ...; initializers use dotted names
 * ("model.layers.0.attn.o_proj.MatMul.weight"). graph_check() rejects any duplicate when the
 * graph is written, so a clash is a build error, never a runtime surprise. */
#ifndef M2O_GRAPH_BUILDER_H
#define M2O_GRAPH_BUILDER_H

#include <stdbool.h>
#include <stdint.h>

#include "arch/model_desc.h"
#include "checkpoint/safetensors.h"
#include "common/err.h"
#include "graph/export_opts.h"
#include "onnx/graph.h"

#define GNAME_MAX 256

/* A name held by value, so block functions can return names without ownership questions. */
typedef struct gname {
    char s[GNAME_MAX];
} gname;

gname gname_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "{node}/output_{k}" */
gname gname_out(const char *node, int k);

typedef struct gb {
    graph *g;
    const model_desc *md;
    const st_checkpoint *ck;
    const export_opts *o;
    /* o with its quant request filled: o->quant itself, or (an export_opts built by hand, without
     * options_validate) the int4 body the int4_* fields describe. quant_resolve reads this. */
    export_opts q;
    int io;                 /* io dtype: ONNX_FLOAT, ONNX_FLOAT16 or ONNX_BFLOAT16 */

    /* Values shared by all layers, set by gb_attention_mask() and gb_rotary_caches(). */
    gname seqlens_k, total_seq_len;
    gname cos_cache, sin_cache;

    /* Names of constants already added (each constant exists once). */
    char **consts;
    int n_consts, cap_consts;

    /* used[i]: checkpoint tensor ckpt_tensor(ck, i) was looked up by the builder. A tensor no
     * block reads means the config does not describe the checkpoint (arch_check_unused). */
    bool *used;

    /* int8_budget's plan (graph/int8_budget.h): NULL without a budget */
    struct i8b_plan *budget;
} gb;

int gb_init(gb *b, graph *g, const model_desc *md, const st_checkpoint *ck, const export_opts *o,
            m2o_err *err);
void gb_free(gb *b);

/* Adds a node whose outputs are "{name}/output_{k}". */
graph_node *gb_node(gb *b, const char *op, const char *domain, const char *name, int n_in,
                    const char *const *in, int n_out);

/* An int64 constant initializer named "/model/constants/INT64/[v0, v1]" (or ".../INT64/v" for a
 * scalar when ndim is 0), created on first use. Returns the name. */
gname gb_const_i64(gb *b, int ndim, int n, const int64_t *vals);
/* A Cast node named name from x to the ONNX element type to; returns its output. */
gname gb_cast(gb *b, const char *name, const char *x, int to);
gname gb_const_i64_scalar(gb *b, int64_t v);

/* Checkpoint lookup with shape check (-1 = any); NULL when absent and !required. Errors name the
 * tensor and the expected shape. A tensor found is marked used. */
int gb_tensor(const gb *b, const char *name, int ndim, const int64_t *shape, bool required,
              const st_tensor **out, m2o_err *err);
/* Same with a printf-style name. */
int gb_tensorf(const gb *b, const st_tensor **out, m2o_err *err, bool required, int ndim,
               const int64_t *shape, const char *fmt, ...) __attribute__((format(printf, 7, 8)));

/* Size in bytes of one io-dtype element. */
size_t gb_io_size(const gb *b);

#endif
