/* Private to src/onnx/graph*.c: the in-memory representation behind graph.h. */
#ifndef M2O_GRAPH_INTERNAL_H
#define M2O_GRAPH_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "onnx/graph.h"

/* Bump allocator: everything the graph describes (strings, nodes, attributes, small tensor
 * copies) lives here and is released at once by graph_free. */
typedef struct arena_block arena_block;
typedef struct arena {
    arena_block *head;
} arena;

void *arena_alloc(arena *a, size_t n); /* 16-byte aligned; NULL when out of memory */
void arena_release(arena *a);

typedef enum attr_kind {
    ATTR_INT, ATTR_FLOAT, ATTR_STRING, ATTR_INTS, ATTR_FLOATS, ATTR_TENSOR
} attr_kind;

typedef struct graph_tensor {
    int elem_type;
    int ndim;
    int64_t dims[GRAPH_MAX_DIMS];
    const void *data;
    size_t nbytes;
} graph_tensor;

typedef struct graph_attr {
    struct graph_attr *next;
    const char *name;
    attr_kind kind;
    int64_t i;
    float f;
    const char *s;
    int n_vals;
    const int64_t *ints;
    const float *floats;
    graph_tensor t;
} graph_attr;

struct graph_node {
    graph *g;
    const char *op_type, *domain, *name;
    int n_in, n_out;
    const char **inputs, **outputs;
    graph_attr *attrs, *attrs_tail;
    int n_attrs;
};

typedef struct graph_value {
    const char *name;
    int elem_type;
    int ndim;
    int64_t dims[GRAPH_MAX_DIMS];
    const char *dim_params[GRAPH_MAX_DIMS]; /* NULL = fixed dims[i] */
} graph_value;

typedef struct graph_init {
    const char *name;
    int elem_type;
    int ndim;
    int64_t dims[GRAPH_MAX_DIMS];
    uint64_t nbytes;        /* declared: n_chunks × chunk_bytes, or the copied data's size */
    const void *data;       /* static initializers; NULL when streamed */
    int64_t n_chunks;       /* streamed initializers; 0 when static */
    size_t chunk_bytes;
    init_producer_fn produce;             /* single streamed initializer */
    init_group_producer_fn produce_group; /* first member of a group */
    init_scatter_fn produce_scatter;      /* scattered: n_chunks jobs, chunk_bytes 0 */
    int group_n;            /* first member of a group: number of members; else 0 */
    size_t leader;          /* streamed: index of the initializer whose producer fills this one
                             * (itself unless it is a later member of a group) */
    void *ctx;
    void (*ctx_free)(void *);
    bool streamed;          /* bytes come from a producer at write time */
    bool consumed;          /* streamed: producer context already released by a write */
} graph_init;

#define GRAPH_ERR_LEN 512

struct graph {
    arena a;
    const char *name;
    graph_node **nodes;
    size_t n_nodes, cap_nodes;
    graph_value *inputs, *outputs;
    size_t n_inputs, cap_inputs, n_outputs, cap_outputs;
    graph_init *inits;
    size_t n_inits, cap_inits;
    bool has_error;          /* the first construction problem, reported by graph_check */
    char error[GRAPH_ERR_LEN];
    struct graph_qstats *qstats; /* quantization error registry (quant_stats.c) */
    bool qstats_incomplete;
    bool qstats_on;          /* measure at all (graph_enable_quant_stats; off by default) */
};

/* Element count of dims (1 for a scalar); -1 when a dim is negative or the count overflows. */
int64_t graph_numel(int ndim, const int64_t *dims);

/* Releases a streamed initializer's producer context (once). */
void graph_init_release_ctx(graph_init *in);

#endif
