/* Reads an exported ONNX model back: the graph structure, attributes, value types and
 * initializer bytes (inline raw data, or external data through a read-only map of the data
 * file). Used by `verify` and by tests. Every pointer returned stays valid until
 * onnx_model_close(). */
#ifndef M2O_MODEL_READER_H
#define M2O_MODEL_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef struct onnx_model onnx_model;
typedef struct onnx_node onnx_node;     /* a NodeProto */
typedef struct onnx_value onnx_value;   /* a graph input/output (ValueInfoProto) */
typedef struct onnx_tensor onnx_tensor; /* an initializer or a tensor attribute (TensorProto) */

/* Loads path (external data files are looked up beside it, when first needed). */
int onnx_model_open(const char *path, onnx_model **out, m2o_err *err);
void onnx_model_close(onnx_model *m);

int64_t onnx_model_ir_version(const onnx_model *m);
/* Opset version imported for domain ("" = default ONNX domain), or -1 when not imported. */
int64_t onnx_model_opset(const onnx_model *m, const char *domain);
const char *onnx_model_producer(const onnx_model *m);   /* "" when absent */
const char *onnx_model_graph_name(const onnx_model *m); /* "" when absent */

/* Nodes, in graph order. */
size_t onnx_model_node_count(const onnx_model *m);
const onnx_node *onnx_model_node(const onnx_model *m, size_t i);
const onnx_node *onnx_model_find_node(const onnx_model *m, const char *name); /* NULL if none */

const char *onnx_node_name(const onnx_node *n);   /* "" when unnamed */
const char *onnx_node_op(const onnx_node *n);
const char *onnx_node_domain(const onnx_node *n); /* "" for the default domain */
size_t onnx_node_input_count(const onnx_node *n);
const char *onnx_node_input(const onnx_node *n, size_t i); /* "" = omitted optional input */
size_t onnx_node_output_count(const onnx_node *n);
const char *onnx_node_output(const onnx_node *n, size_t i);

/* Attributes by name. Each returns false when the attribute is absent or of another type. */
size_t onnx_node_attr_count(const onnx_node *n);
const char *onnx_node_attr_name(const onnx_node *n, size_t i);
bool onnx_node_attr_int(const onnx_node *n, const char *name, int64_t *v);
bool onnx_node_attr_float(const onnx_node *n, const char *name, float *v);
bool onnx_node_attr_string(const onnx_node *n, const char *name, const char **v); /* NUL-ended */
bool onnx_node_attr_ints(const onnx_node *n, const char *name, const int64_t **v, size_t *count);
bool onnx_node_attr_floats(const onnx_node *n, const char *name, const float **v, size_t *count);
bool onnx_node_attr_tensor(const onnx_node *n, const char *name, const onnx_tensor **v);

/* Graph inputs and outputs. */
size_t onnx_model_input_count(const onnx_model *m);
const onnx_value *onnx_model_input(const onnx_model *m, size_t i);
size_t onnx_model_output_count(const onnx_model *m);
const onnx_value *onnx_model_output(const onnx_model *m, size_t i);
const onnx_value *onnx_model_find_input(const onnx_model *m, const char *name);
const onnx_value *onnx_model_find_output(const onnx_model *m, const char *name);

const char *onnx_value_name(const onnx_value *v);
int onnx_value_elem_type(const onnx_value *v); /* 0 when not a tensor type */
int onnx_value_ndim(const onnx_value *v);      /* -1 when the shape is unknown */
/* Dimension i: its size, or -1 when symbolic (then onnx_value_dim_param names it) or unknown. */
int64_t onnx_value_dim(const onnx_value *v, int i);
const char *onnx_value_dim_param(const onnx_value *v, int i); /* NULL when fixed */

/* Initializers, in file order. */
size_t onnx_model_initializer_count(const onnx_model *m);
const onnx_tensor *onnx_model_initializer(const onnx_model *m, size_t i);
const onnx_tensor *onnx_model_find_initializer(const onnx_model *m, const char *name);

const char *onnx_tensor_name(const onnx_tensor *t);
int onnx_tensor_elem_type(const onnx_tensor *t);
int onnx_tensor_ndim(const onnx_tensor *t);
const int64_t *onnx_tensor_dims(const onnx_tensor *t);
/* True when the bytes live in an external data file; then location/offset/length describe them
 * (any pointer may be NULL). */
bool onnx_tensor_external(const onnx_tensor *t, const char **location, uint64_t *offset,
                          uint64_t *length);

/* The tensor's bytes: raw_data inline, typed float/int32/int64 fields for FLOAT/INT32/INT64, or
 * the external range mapped from the data file. Checks that the byte count matches the dims and
 * element type and that the external range lies inside its file; errors name the tensor. */
int onnx_model_tensor_data(onnx_model *m, const onnx_tensor *t, const void **data, size_t *nbytes,
                           m2o_err *err);

#endif
