/* Private to src/onnx: packing the in-memory graph into a serialized ModelProto. */
#ifndef M2O_GRAPH_PROTO_H
#define M2O_GRAPH_PROTO_H

#include <stdbool.h>
#include <stdint.h>

#include "onnx/graph_internal.h"

#define GRAPH_INLINE UINT64_MAX

/* Where the writer put each initializer's bytes. */
typedef struct graph_proto_layout {
    const uint64_t *offsets;            /* per initializer: data file offset, or GRAPH_INLINE */
    const uint8_t *const *inline_data;  /* per initializer: bytes of inline streamed ones */
    const char *data_location;          /* external_data "location" (relative file name) */
    int64_t ir_version;
    const char *producer_name, *producer_version;
} graph_proto_layout;

/* True when any initializer, graph input/output or tensor attribute has this element type. */
bool graph_uses_elem_type(const graph *g, int elem_type);

/* Packs the ModelProto (opsets "" 21 and com.microsoft 1) into a new malloc'd buffer. */
int graph_pack_model(const graph *g, const graph_proto_layout *layout, uint8_t **out,
                     size_t *out_len, m2o_err *err);

#endif
