/* Quantization error statistics of a graph's initializers, measured while they are produced
 * (issue: per-tensor error in the build summary). The graph owns one entry per measured tensor:
 * n_chunks slots, one per producer chunk, each written only by the job producing that chunk, so
 * no locking is needed; after the write the slots are combined in chunk order, which makes the
 * totals the same for any thread count. */
#ifndef M2O_ONNX_QUANT_STATS_H
#define M2O_ONNX_QUANT_STATS_H

#include <stddef.h>

#include "common/err.h"
#include "onnx/graph.h"
#include "quant/qerr.h"

/* Turns measuring on for g (off by default: the sums cost about a third of an RTN quantization,
 * so only a caller that reports them asks). Call before the graph is built. */
void graph_enable_quant_stats(graph *g, bool on);

/* Registers tensor `name` encoded as fmt and returns its n_chunks zeroed slots (living as long
 * as g); NULL when measuring is off, or out of memory (the tensor is then not measured and the
 * table is marked incomplete). */
qerr_acc *graph_add_quant_stats(graph *g, const char *name, const qerr_format *fmt,
                                int64_t n_chunks);

/* One measured tensor, its slots combined. */
typedef struct quant_tensor_stats {
    char name[256];
    qerr_format fmt;
    qerr_acc total;
} quant_tensor_stats;

typedef struct quant_stats_table {
    quant_tensor_stats *t;  /* in registration order (graph order) */
    size_t n;
    bool incomplete;        /* a tensor could not be registered (out of memory) */
} quant_stats_table;

/* Combines every registered tensor's slots in chunk order into out (tensors with no element
 * compared, such as an MXFP4 passthrough, are left out). */
int graph_quant_stats_collect(const graph *g, quant_stats_table *out, m2o_err *err);
void quant_stats_table_free(quant_stats_table *t);

/* The role a tensor plays, from its initializer name (the names src/graph/ gives): "experts fc1",
 * "experts fc2", "attention", "linear attention", "MLP", "lm_head" or "other". */
const char *quant_role(const char *name);

/* Adds the fields every per-tensor error entry has (build --quant-report and verify --json):
 * "role", "kind" ("int" or "mxfp4"), "bits", "block_size", "symmetric" (false: zero points),
 * "scale_type" ("float32", "float16", "bfloat16", "e8m0"), and, with acc, "elements",
 * "rel_rms" and "max_abs" (null when not finite). */
struct cJSON;
void quant_entry_json(struct cJSON *o, const char *name, const qerr_format *fmt,
                      const qerr_acc *acc);

/* Frees g's registry (graph_free). */
void graph_quant_stats_free(graph *g);

#endif
