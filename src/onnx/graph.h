/* In-memory ONNX graph under construction, and its writer.
 *
 * The graph (nodes, attributes, inputs/outputs, initializer *descriptions*) is small and held in
 * memory. Large initializers are not: each is described by a producer callback that fills one
 * chunk at a time (e.g. one expert). graph_write() runs the producers on a thread pool and appends
 * their bytes to the external data file in a fixed order (each tensor at the next 64-byte
 * boundary), so the output is byte-identical whatever the thread count and resident memory is
 * bounded by the chunks in flight. The writer knows nothing about MoE. */
#ifndef M2O_GRAPH_H
#define M2O_GRAPH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* ONNX TensorProto.DataType values used here. */
enum {
    ONNX_FLOAT = 1, ONNX_UINT8 = 2, ONNX_INT8 = 3, ONNX_INT32 = 6, ONNX_INT64 = 7, ONNX_BOOL = 9,
    ONNX_FLOAT16 = 10, ONNX_BFLOAT16 = 16, ONNX_FLOAT8E8M0 = 24,
};
size_t onnx_dtype_size(int elem_type); /* bytes per element; 0 if unknown */
const char *onnx_dtype_name(int elem_type);

#define GRAPH_MAX_DIMS 8

typedef struct graph graph;
typedef struct graph_node graph_node;

graph *graph_new(const char *name);
void graph_free(graph *g);

/* A dimension is either fixed (dims[i] >= 0, dim_params NULL or dim_params[i] NULL) or symbolic
 * (dim_params[i] = "batch_size"). Strings are copied. */
void graph_add_input(graph *g, const char *name, int elem_type, int ndim, const int64_t *dims,
                     const char *const *dim_params);
void graph_add_output(graph *g, const char *name, int elem_type, int ndim, const int64_t *dims,
                      const char *const *dim_params);

/* Adds a node. inputs may contain "" for omitted optional inputs. domain NULL/"" = default ONNX
 * domain, "com.microsoft" for contrib ops. Names and strings are copied. */
graph_node *graph_add_node(graph *g, const char *op_type, const char *domain, const char *name,
                           int n_in, const char *const *inputs, int n_out,
                           const char *const *outputs);
void node_attr_int(graph_node *n, const char *name, int64_t v);
void node_attr_float(graph_node *n, const char *name, float v);
void node_attr_string(graph_node *n, const char *name, const char *v);
void node_attr_ints(graph_node *n, const char *name, int n_vals, const int64_t *vals);
void node_attr_floats(graph_node *n, const char *name, int n_vals, const float *vals);
/* A tensor attribute (e.g. Constant's `value`); data is copied. */
void node_attr_tensor(graph_node *n, const char *name, int elem_type, int ndim,
                      const int64_t *dims, const void *data, size_t nbytes);

/* Initializer whose bytes are known now (small tensors: norms, biases, rotary caches, shape
 * constants). Data is copied. The writer keeps it inline in model.onnx when below the external
 * threshold, else appends it to the data file. */
void graph_add_initializer(graph *g, const char *name, int elem_type, int ndim,
                           const int64_t *dims, const void *data, size_t nbytes);

/* Fills chunk `chunk` (0 <= chunk < n_chunks) of a streamed initializer into out, exactly
 * chunk_bytes bytes. Called from worker threads, possibly concurrently for different chunks of
 * the same tensor: it must only read shared state. */
typedef int (*init_producer_fn)(void *ctx, int64_t chunk, void *out, m2o_err *err);

/* Initializer produced at write time, n_chunks × chunk_bytes bytes in total, which must equal
 * the element count × element size of dims. ctx is owned by the graph from here on and released
 * with ctx_free (may be NULL) once the tensor is written or the graph is freed. */
void graph_add_streamed_initializer(graph *g, const char *name, int elem_type, int ndim,
                                    const int64_t *dims, int64_t n_chunks, size_t chunk_bytes,
                                    init_producer_fn produce, void *ctx, void (*ctx_free)(void *));

/* Several streamed initializers filled together (a "group"): one producer call per chunk fills
 * chunk `chunk` of every member, outs[i] holding members[i].chunk_bytes bytes. For tensors that
 * come out of one computation, e.g. an expert's quantized codes and their scales, so the work is
 * done once. Members are added in the order given, one after the other, and share n_chunks; the
 * writer places them exactly as it would place separate streamed initializers. The same rules
 * as graph_add_streamed_initializer apply (concurrent calls for different chunks, ctx owned by
 * the graph and released with ctx_free once the whole group is written). */
#define GRAPH_GROUP_MAX 4
typedef struct graph_stream_member {
    const char *name;
    int elem_type;
    int ndim;
    const int64_t *dims;
    size_t chunk_bytes;
} graph_stream_member;
typedef int (*init_group_producer_fn)(void *ctx, int64_t chunk, void *const *outs, m2o_err *err);
void graph_add_streamed_group(graph *g, int n_members, const graph_stream_member *members,
                              int64_t n_chunks, init_group_producer_fn produce, void *ctx,
                              void (*ctx_free)(void *));

/* A streamed initializer whose jobs each write scattered pieces of it, for tensors whose natural
 * unit of work is not a contiguous range of their bytes: a transpose (a band of source rows
 * becomes a band of columns) is made with each source byte read once and only that band in
 * memory. Job j (0 <= j < n_jobs, run concurrently like chunks) calls graph_sink_write for its
 * pieces, at byte offsets inside the tensor; the jobs together must write each of the nbytes
 * exactly once (the writer counts them and fails the write otherwise). ctx as for
 * graph_add_streamed_initializer. */
typedef struct graph_sink graph_sink;
int graph_sink_write(graph_sink *sink, uint64_t offset, const void *data, size_t len,
                     m2o_err *err);
typedef int (*init_scatter_fn)(void *ctx, int64_t job, graph_sink *sink, m2o_err *err);
void graph_add_scattered_initializer(graph *g, const char *name, int elem_type, int ndim,
                                     const int64_t *dims, int64_t n_jobs, uint64_t nbytes,
                                     init_scatter_fn produce, void *ctx,
                                     void (*ctx_free)(void *));

/* Checks the graph: first any problem met while building it (the add functions cannot fail:
 * out of memory, rank above GRAPH_MAX_DIMS, a streamed initializer without producer or chunks is
 * remembered and reported here), then: element types writable, byte counts of all initializers
 * equal to their dims (streamed: n_chunks × chunk_bytes), node names unique (unnamed nodes
 * allowed), attribute names unique per node, every value produced at most once (SSA), no name
 * both an initializer and a graph input, every node input produced by a node, an initializer or
 * a graph input (in any order), every graph output produced. The first problem is the error,
 * naming the node/value. */
int graph_check(const graph *g, m2o_err *err);

size_t graph_node_count(const graph *g);
size_t graph_initializer_count(const graph *g);
uint64_t graph_initializer_bytes(const graph *g);

typedef struct graph_write_opts {
    const char *model_filename;    /* "model.onnx" */
    const char *data_filename;     /* "model.onnx.data" */
    int threads;                   /* worker threads for producers; <= 0 = all cores */
    size_t external_threshold;     /* initializers of at least this many bytes go external (1024) */
    int64_t ir_version;            /* 0 = derive: 10, or 11 when a FLOAT8E8M0 tensor is present */
    const char *producer_name;     /* "moe2onnx" */
    const char *producer_version;
    /* Called after each tensor is committed (from the writing thread). May be NULL. */
    void (*progress)(void *user, const char *tensor, uint64_t bytes_done, uint64_t bytes_total);
    void *progress_user;
    /* Also call progress after every committed chunk of a streamed tensor (bytes_done then
     * counts the chunks written so far), so a large tensor (an embedding) moves the bar. */
    bool progress_chunks;
    /* Polled between chunks; when it returns true the write stops with an error. May be NULL. */
    bool (*cancelled)(void *user);
    /* When set, receives the quantization error of every measured tensor after a successful
     * write (onnx/quant_stats.h; free with quant_stats_table_free). */
    struct quant_stats_table *quant_stats;
} graph_write_opts;

void graph_write_opts_init(graph_write_opts *o);

/* Writes dir/model_filename and dir/data_filename (dir must exist; the data file is written even
 * when no tensor is external, then empty). Runs graph_check first. Both files are fsynced before
 * success. On failure (check, producer error prefixed with the tensor name, cancel, write error
 * naming the file) the partially written files in dir are removed. progress counts the bytes of
 * all initializers, inline ones included; cancelled receives progress_user. A streamed
 * initializer's producer context is released once the tensor is written, so a graph with streamed
 * initializers can be written only once. */
int graph_write(graph *g, const char *dir, const graph_write_opts *opts, m2o_err *err);

#endif
