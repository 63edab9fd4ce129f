/* Translation of the in-memory graph into protobuf-c's ModelProto structures. Everything is
 * allocated in a scratch arena that the caller releases after packing; tensor bytes are not
 * copied (raw_data points at the graph's own copies or the writer's inline buffers). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx/graph_proto.h"
#include "onnx/onnx.pb-c.h"

typedef struct pb {
    arena *a;
    const graph *g;
    const graph_proto_layout *layout;
} pb;

static void *zalloc(pb *b, size_t n)
{
    void *p = arena_alloc(b->a, n);
    if (p)
        memset(p, 0, n);
    return p;
}

/* protobuf-c wants mutable pointers; it never writes through them when packing. */
static char *mut(const char *s) { return (char *)s; }

static char *str_or_null(const char *s) { return s && s[0] ? mut(s) : NULL; }

static Onnx__StringStringEntryProto *entry(pb *b, const char *key, const char *value)
{
    Onnx__StringStringEntryProto *e = zalloc(b, sizeof *e);
    if (!e)
        return NULL;
    onnx__string_string_entry_proto__init(e);
    e->key = mut(key);
    e->value = mut(value);
    return e;
}

static char *u64_string(pb *b, uint64_t v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%" PRIu64, v);
    char *s = arena_alloc(b->a, (size_t)n + 1);
    if (s)
        memcpy(s, tmp, (size_t)n + 1);
    return s;
}

static Onnx__TensorProto *tensor_header(pb *b, const char *name, int elem_type, int ndim,
                                        const int64_t *dims)
{
    Onnx__TensorProto *t = zalloc(b, sizeof *t);
    if (!t)
        return NULL;
    onnx__tensor_proto__init(t);
    t->name = str_or_null(name);
    t->has_data_type = 1;
    t->data_type = elem_type;
    t->n_dims = (size_t)ndim;
    t->dims = (int64_t *)dims;
    return t;
}

static void set_raw(Onnx__TensorProto *t, const void *data, size_t nbytes)
{
    t->has_raw_data = 1;
    t->raw_data.len = nbytes;
    t->raw_data.data = (uint8_t *)data;
}

static Onnx__TensorProto *initializer_proto(pb *b, size_t i)
{
    const graph_init *in = &b->g->inits[i];
    Onnx__TensorProto *t = tensor_header(b, in->name, in->elem_type, in->ndim, in->dims);
    if (!t)
        return NULL;
    uint64_t offset = b->layout->offsets[i];
    if (offset == GRAPH_INLINE) {
        set_raw(t, in->streamed ? b->layout->inline_data[i] : in->data, (size_t)in->nbytes);
        return t;
    }
    Onnx__StringStringEntryProto **ext = zalloc(b, 3 * sizeof *ext);
    char *off = u64_string(b, offset), *len = u64_string(b, in->nbytes);
    if (!ext || !off || !len)
        return NULL;
    ext[0] = entry(b, "location", b->layout->data_location);
    ext[1] = entry(b, "offset", off);
    ext[2] = entry(b, "length", len);
    if (!ext[0] || !ext[1] || !ext[2])
        return NULL;
    t->n_external_data = 3;
    t->external_data = ext;
    t->has_data_location = 1;
    t->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    return t;
}

static Onnx__AttributeProto *attr_proto(pb *b, const graph_attr *ga)
{
    Onnx__AttributeProto *a = zalloc(b, sizeof *a);
    if (!a)
        return NULL;
    onnx__attribute_proto__init(a);
    a->name = mut(ga->name);
    a->has_type = 1;
    switch (ga->kind) {
    case ATTR_INT:
        a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
        a->has_i = 1;
        a->i = ga->i;
        break;
    case ATTR_FLOAT:
        a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
        a->has_f = 1;
        a->f = ga->f;
        break;
    case ATTR_STRING:
        a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
        a->has_s = 1;
        a->s.len = strlen(ga->s);
        a->s.data = (uint8_t *)mut(ga->s);
        break;
    case ATTR_INTS:
        a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
        a->n_ints = (size_t)ga->n_vals;
        a->ints = (int64_t *)ga->ints;
        break;
    case ATTR_FLOATS:
        a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS;
        a->n_floats = (size_t)ga->n_vals;
        a->floats = (float *)ga->floats;
        break;
    case ATTR_TENSOR:
        a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
        a->t = tensor_header(b, NULL, ga->t.elem_type, ga->t.ndim, ga->t.dims);
        if (!a->t)
            return NULL;
        set_raw(a->t, ga->t.data, ga->t.nbytes);
        break;
    }
    return a;
}

static Onnx__NodeProto *node_proto(pb *b, const graph_node *gn)
{
    Onnx__NodeProto *n = zalloc(b, sizeof *n);
    Onnx__AttributeProto **attrs = zalloc(b, sizeof *attrs * (size_t)(gn->n_attrs + 1));
    if (!n || !attrs)
        return NULL;
    onnx__node_proto__init(n);
    n->op_type = mut(gn->op_type);
    n->domain = str_or_null(gn->domain);
    n->name = str_or_null(gn->name);
    n->n_input = (size_t)gn->n_in;
    n->input = (char **)gn->inputs;
    n->n_output = (size_t)gn->n_out;
    n->output = (char **)gn->outputs;
    size_t k = 0;
    for (const graph_attr *ga = gn->attrs; ga; ga = ga->next)
        if (!(attrs[k++] = attr_proto(b, ga)))
            return NULL;
    n->n_attribute = k;
    n->attribute = attrs;
    return n;
}

static Onnx__ValueInfoProto *value_proto(pb *b, const graph_value *v)
{
    Onnx__ValueInfoProto *vi = zalloc(b, sizeof *vi);
    Onnx__TypeProto *tp = zalloc(b, sizeof *tp);
    Onnx__TypeProto__Tensor *tt = zalloc(b, sizeof *tt);
    Onnx__TensorShapeProto *shape = zalloc(b, sizeof *shape);
    Onnx__TensorShapeProto__Dimension *dims = zalloc(b, sizeof *dims * (size_t)(v->ndim + 1));
    Onnx__TensorShapeProto__Dimension **dimp = zalloc(b, sizeof *dimp * (size_t)(v->ndim + 1));
    if (!vi || !tp || !tt || !shape || !dims || !dimp)
        return NULL;
    onnx__value_info_proto__init(vi);
    onnx__type_proto__init(tp);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(shape);
    for (int i = 0; i < v->ndim; i++) {
        onnx__tensor_shape_proto__dimension__init(&dims[i]);
        if (v->dim_params[i]) {
            dims[i].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            dims[i].dim_param = mut(v->dim_params[i]);
        } else {
            dims[i].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            dims[i].dim_value = v->dims[i];
        }
        dimp[i] = &dims[i];
    }
    shape->n_dim = (size_t)v->ndim;
    shape->dim = dimp;
    tt->has_elem_type = 1;
    tt->elem_type = v->elem_type;
    tt->shape = shape;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    vi->name = mut(v->name);
    vi->type = tp;
    return vi;
}

static Onnx__OperatorSetIdProto *opset(pb *b, const char *domain, int64_t version)
{
    Onnx__OperatorSetIdProto *o = zalloc(b, sizeof *o);
    if (!o)
        return NULL;
    onnx__operator_set_id_proto__init(o);
    o->domain = mut(domain);
    o->has_version = 1;
    o->version = version;
    return o;
}

static int fill_graph(pb *b, Onnx__GraphProto *gp)
{
    const graph *g = b->g;
    onnx__graph_proto__init(gp);
    gp->name = mut(g->name);
    gp->node = zalloc(b, sizeof *gp->node * (g->n_nodes + 1));
    gp->initializer = zalloc(b, sizeof *gp->initializer * (g->n_inits + 1));
    gp->input = zalloc(b, sizeof *gp->input * (g->n_inputs + 1));
    gp->output = zalloc(b, sizeof *gp->output * (g->n_outputs + 1));
    if (!gp->node || !gp->initializer || !gp->input || !gp->output)
        return -1;
    for (size_t i = 0; i < g->n_nodes; i++)
        if (!(gp->node[i] = node_proto(b, g->nodes[i])))
            return -1;
    for (size_t i = 0; i < g->n_inits; i++)
        if (!(gp->initializer[i] = initializer_proto(b, i)))
            return -1;
    for (size_t i = 0; i < g->n_inputs; i++)
        if (!(gp->input[i] = value_proto(b, &g->inputs[i])))
            return -1;
    for (size_t i = 0; i < g->n_outputs; i++)
        if (!(gp->output[i] = value_proto(b, &g->outputs[i])))
            return -1;
    gp->n_node = g->n_nodes;
    gp->n_initializer = g->n_inits;
    gp->n_input = g->n_inputs;
    gp->n_output = g->n_outputs;
    return 0;
}

bool graph_uses_elem_type(const graph *g, int elem_type)
{
    for (size_t i = 0; i < g->n_inits; i++)
        if (g->inits[i].elem_type == elem_type)
            return true;
    for (size_t i = 0; i < g->n_inputs; i++)
        if (g->inputs[i].elem_type == elem_type)
            return true;
    for (size_t i = 0; i < g->n_outputs; i++)
        if (g->outputs[i].elem_type == elem_type)
            return true;
    for (size_t i = 0; i < g->n_nodes; i++)
        for (const graph_attr *a = g->nodes[i]->attrs; a; a = a->next)
            if (a->kind == ATTR_TENSOR && a->t.elem_type == elem_type)
                return true;
    return false;
}

int graph_pack_model(const graph *g, const graph_proto_layout *layout, uint8_t **out,
                     size_t *out_len, m2o_err *err)
{
    arena scratch = {0};
    pb b = {&scratch, g, layout};
    Onnx__ModelProto model;
    Onnx__GraphProto *gp = zalloc(&b, sizeof *gp);
    Onnx__OperatorSetIdProto *opsets[2] = {opset(&b, "", 21), opset(&b, "com.microsoft", 1)};
    int rc = -1;
    if (!gp || !opsets[0] || !opsets[1] || fill_graph(&b, gp)) {
        m2o_fail(err, "out of memory building the ModelProto of graph %s", g->name);
        goto done;
    }
    onnx__model_proto__init(&model);
    model.has_ir_version = 1;
    model.ir_version = layout->ir_version;
    model.n_opset_import = 2;
    model.opset_import = opsets;
    model.producer_name = str_or_null(layout->producer_name);
    model.producer_version = str_or_null(layout->producer_version);
    model.graph = gp;

    size_t len = onnx__model_proto__get_packed_size(&model);
    if (len > (size_t)INT32_MAX) {
        m2o_fail(err, "model proto of graph %s would be %zu bytes, over protobuf's 2 GiB limit; "
                 "lower external_threshold so more initializers go to the data file",
                 g->name, len);
        goto done;
    }
    uint8_t *buf = m2o_malloc(len, err);
    if (!buf)
        goto done;
    size_t packed = onnx__model_proto__pack(&model, buf);
    if (packed != len) {
        free(buf);
        m2o_fail(err, "protobuf packed %zu bytes of graph %s, expected %zu", packed, g->name, len);
        goto done;
    }
    *out = buf;
    *out_len = len;
    rc = 0;
done:
    arena_release(&scratch);
    return rc;
}
