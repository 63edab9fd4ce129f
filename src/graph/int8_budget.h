/* int8_budget (moe2onnx's addition, docs/QUANTIZATION.md "moe2onnx's additions"): which int4
 * MatMuls to write in int8 instead, chosen by measured error within a size budget.
 *
 * The graph is built twice. The first build (into a scratch graph, no bytes produced) only
 * records every MatMul quant_resolve answers for: the budget's candidates (int4 body MatMuls no
 * preset/override placed) and the MatMuls presets/overrides put at int8. i8b_decide then
 * quantizes each candidate at 4 and at 8 bits exactly as the writer would (same producer), sums
 * the squared reconstruction error of each and the bytes of each (codes + scales + zero
 * points), and upgrades greedily by error removed per extra byte. The second build asks the
 * plan (i8b_on_matmul) and writes the chosen MatMuls with 8 bits. */
#ifndef M2O_GRAPH_INT8_BUDGET_H
#define M2O_GRAPH_INT8_BUDGET_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "graph/export_opts.h"
#include "graph/quant_resolve.h"
#include "weights/producer.h"
#include "weights/sources.h"

/* ---- the selection alone (pure; unit-tested on hand-made costs) ---- */

typedef struct i8b_option {
    const char *name; /* ties in gain per byte go to the smaller name (strcmp) */
    double gain;      /* squared error removed by the upgrade (int4 error - int8 error) */
    int64_t extra;    /* bytes the upgrade adds (int8 bytes - int4 bytes), > 0 */
} i8b_option;

/* Marks take[i] for the options upgraded: in order of gain/extra (largest first, ties by name),
 * each while spent + extra <= budget; the first that does not fit ends the selection, and so
 * does an option that removes no error. Returns the number taken (-1: out of memory); *spent = their
 * extra bytes. */
int i8b_select(const i8b_option *opt, int n, int64_t budget, bool *take, int64_t *spent);

/* ---- the plan between the two builds ---- */

typedef struct i8b_matmul {
    char name[256];   /* the graph's node name "{base}/MatMul" */
    linear_src src;
    tensor_quant tq;  /* as quant_resolve answered */
    bool candidate;   /* tq.budget_candidate */
    int64_t bytes4, bytes8;
    double sse4, sse8, sum_sq;
    bool upgrade;
} i8b_matmul;

/* What was decided, for the build summary. */
typedef struct i8b_report {
    bool active;         /* an int8_budget was given */
    int n_candidates, n_upgraded, n_placed8;
    int64_t budget;      /* bytes allowed in all */
    int64_t placed8_bytes; /* extra bytes of the MatMuls presets/overrides put at int8 */
    int64_t spent;       /* extra bytes of the upgrades */
    char next[256];      /* the candidate that ended the selection ("" when all were taken) */
    int64_t next_extra;  /* its extra bytes */
    double sse_before, sse_after, sum_sq; /* over the candidates */
    double seconds;      /* the measuring pass */
} i8b_report;

typedef struct i8b_plan {
    bool collecting;     /* first build: record; second build: apply */
    i8b_matmul *mm;
    int n, cap;
    i8b_report report;
} i8b_plan;

/* Does q ask for a budget (a positive percentage or size)? */
bool i8b_requested(const quant_config *q);

/* The graph's hook, called for every MatMul after quant_resolve (graph/linear.c). */
int i8b_on_matmul(i8b_plan *p, const char *node, const linear_src *s, tensor_quant *t, m2o_err *err);

/* Measures every candidate on `threads` workers (<= 0: one per CPU), one tensor at a time per
 * worker, and marks the upgrades; fills p->report. */
int i8b_decide(i8b_plan *p, const quant_config *q, const wt_opts *wo, int threads, m2o_err *err);

void i8b_plan_free(i8b_plan *p);

/* The MatMulNBits spec a tensor_quant writes (graph/linear.c; the budget measures with it). */
wt_nbits_spec gb_nbits_spec(const tensor_quant *t);

#endif
