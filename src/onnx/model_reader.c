/* model_reader: a thin, bounds-checked view over protobuf-c's unpacked ModelProto. The opaque
 * handle types are the protobuf structs themselves. */
#include "onnx/model_reader.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "onnx/graph.h"
#include "onnx/onnx.pb-c.h"

typedef struct mapped_file {
    char *location;
    const uint8_t *data; /* NULL for an empty file */
    size_t size;
} mapped_file;

struct onnx_model {
    char *path;
    char *dir;
    Onnx__ModelProto *proto;
    Onnx__GraphProto *graph;
    mapped_file *maps;
    size_t n_maps;
};

#define NODE(n) ((const Onnx__NodeProto *)(n))
#define VALUE(v) ((const Onnx__ValueInfoProto *)(v))
#define TENSOR(t) ((const Onnx__TensorProto *)(t))

static const char *nz(const char *s) { return s ? s : ""; }

/* ---- opening ---- */

static int read_file(const char *path, uint8_t **out, size_t *len, m2o_err *err)
{
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (fstat rejects it next) */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return m2o_fail(err, "cannot open ONNX model %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return m2o_fail(err, "ONNX model %s is not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = m2o_malloc(n, err);
    if (!buf) {
        close(fd);
        return -1;
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            free(buf);
            close(fd);
            return m2o_fail(err, "reading ONNX model %s: %s", path,
                            r < 0 ? strerror(errno) : "file shrank while reading");
        }
        got += (size_t)r;
    }
    close(fd);
    *out = buf;
    *len = n;
    return 0;
}

static char *dup_str(const char *s, size_t n, m2o_err *err)
{
    char *p = m2o_malloc(n + 1, err);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

/* STRING attributes are protobuf `bytes`, which protobuf-c unpacks without a terminator. Give
 * each one a NUL-terminated copy so accessors can hand out C strings. The unpack used the default
 * allocator (malloc/free), so free_unpacked releases the copies correctly. */
static int terminate_string_attrs(Onnx__GraphProto *g, m2o_err *err)
{
    for (size_t i = 0; i < g->n_node; i++)
        for (size_t j = 0; j < g->node[i]->n_attribute; j++) {
            Onnx__AttributeProto *a = g->node[i]->attribute[j];
            if (!a->has_s)
                continue;
            uint8_t *copy = m2o_malloc(a->s.len + 1, err);
            if (!copy)
                return -1;
            if (a->s.len)
                memcpy(copy, a->s.data, a->s.len);
            copy[a->s.len] = 0;
            free(a->s.data);
            a->s.data = copy;
        }
    return 0;
}

int onnx_model_open(const char *path, onnx_model **out, m2o_err *err)
{
    *out = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (read_file(path, &buf, &len, err))
        return -1;
    Onnx__ModelProto *proto = onnx__model_proto__unpack(NULL, len, buf);
    free(buf);
    if (!proto)
        return m2o_fail(err, "%s is not a valid ONNX ModelProto (protobuf parse failed); was it "
                        "written completely?", path);
    if (!proto->graph) {
        onnx__model_proto__free_unpacked(proto, NULL);
        return m2o_fail(err, "ONNX model %s has no graph", path);
    }
    if (terminate_string_attrs(proto->graph, err)) {
        onnx__model_proto__free_unpacked(proto, NULL);
        return m2o_wrap(err, "reading %s", path);
    }
    onnx_model *m = m2o_calloc(1, sizeof *m, err);
    const char *slash = strrchr(path, '/');
    if (m) {
        m->proto = proto;
        m->graph = proto->graph;
        m->path = dup_str(path, strlen(path), err);
        m->dir = slash ? dup_str(path, (size_t)(slash - path), err) : dup_str(".", 1, err);
    }
    if (!m || !m->path || !m->dir) {
        onnx_model_close(m);
        if (!m)
            onnx__model_proto__free_unpacked(proto, NULL);
        return -1;
    }
    *out = m;
    return 0;
}

void onnx_model_close(onnx_model *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_maps; i++) {
        if (m->maps[i].data)
            munmap((void *)m->maps[i].data, m->maps[i].size);
        free(m->maps[i].location);
    }
    free(m->maps);
    if (m->proto)
        onnx__model_proto__free_unpacked(m->proto, NULL);
    free(m->path);
    free(m->dir);
    free(m);
}

/* ---- model ---- */

int64_t onnx_model_ir_version(const onnx_model *m)
{
    return m->proto->has_ir_version ? m->proto->ir_version : 0;
}

int64_t onnx_model_opset(const onnx_model *m, const char *domain)
{
    for (size_t i = 0; i < m->proto->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *o = m->proto->opset_import[i];
        const char *d = nz(o->domain);
        bool match = strcmp(d, domain) == 0 ||
                     (!domain[0] && strcmp(d, "ai.onnx") == 0); /* both name the default */
        if (match)
            return o->has_version ? o->version : -1;
    }
    return -1;
}

const char *onnx_model_producer(const onnx_model *m) { return nz(m->proto->producer_name); }
const char *onnx_model_graph_name(const onnx_model *m) { return nz(m->graph->name); }

/* ---- nodes ---- */

size_t onnx_model_node_count(const onnx_model *m) { return m->graph->n_node; }

const onnx_node *onnx_model_node(const onnx_model *m, size_t i)
{
    return i < m->graph->n_node ? (const onnx_node *)m->graph->node[i] : NULL;
}

const onnx_node *onnx_model_find_node(const onnx_model *m, const char *name)
{
    for (size_t i = 0; i < m->graph->n_node; i++)
        if (strcmp(nz(m->graph->node[i]->name), name) == 0)
            return (const onnx_node *)m->graph->node[i];
    return NULL;
}

const char *onnx_node_name(const onnx_node *n) { return nz(NODE(n)->name); }
const char *onnx_node_op(const onnx_node *n) { return nz(NODE(n)->op_type); }
const char *onnx_node_domain(const onnx_node *n) { return nz(NODE(n)->domain); }
size_t onnx_node_input_count(const onnx_node *n) { return NODE(n)->n_input; }
size_t onnx_node_output_count(const onnx_node *n) { return NODE(n)->n_output; }

const char *onnx_node_input(const onnx_node *n, size_t i)
{
    return i < NODE(n)->n_input ? nz(NODE(n)->input[i]) : NULL;
}

const char *onnx_node_output(const onnx_node *n, size_t i)
{
    return i < NODE(n)->n_output ? nz(NODE(n)->output[i]) : NULL;
}

size_t onnx_node_attr_count(const onnx_node *n) { return NODE(n)->n_attribute; }

const char *onnx_node_attr_name(const onnx_node *n, size_t i)
{
    return i < NODE(n)->n_attribute ? nz(NODE(n)->attribute[i]->name) : NULL;
}

static const Onnx__AttributeProto *find_attr(const onnx_node *n, const char *name,
                                             Onnx__AttributeProto__AttributeType type)
{
    for (size_t i = 0; i < NODE(n)->n_attribute; i++) {
        const Onnx__AttributeProto *a = NODE(n)->attribute[i];
        if (strcmp(nz(a->name), name) == 0)
            return a->has_type && a->type == type ? a : NULL;
    }
    return NULL;
}

bool onnx_node_attr_int(const onnx_node *n, const char *name, int64_t *v)
{
    const Onnx__AttributeProto *a = find_attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    if (a)
        *v = a->i;
    return a != NULL;
}

bool onnx_node_attr_float(const onnx_node *n, const char *name, float *v)
{
    const Onnx__AttributeProto *a =
        find_attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    if (a)
        *v = a->f;
    return a != NULL;
}

bool onnx_node_attr_string(const onnx_node *n, const char *name, const char **v)
{
    const Onnx__AttributeProto *a =
        find_attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
    /* Terminated at open; a string with an embedded NUL cannot be handed out as a C string. */
    if (!a || (a->s.len && memchr(a->s.data, 0, a->s.len)))
        return false;
    *v = a->s.len ? (const char *)a->s.data : "";
    return true;
}

bool onnx_node_attr_ints(const onnx_node *n, const char *name, const int64_t **v, size_t *count)
{
    const Onnx__AttributeProto *a = find_attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    if (a) {
        *v = a->ints;
        *count = a->n_ints;
    }
    return a != NULL;
}

bool onnx_node_attr_floats(const onnx_node *n, const char *name, const float **v, size_t *count)
{
    const Onnx__AttributeProto *a =
        find_attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS);
    if (a) {
        *v = a->floats;
        *count = a->n_floats;
    }
    return a != NULL;
}

bool onnx_node_attr_tensor(const onnx_node *n, const char *name, const onnx_tensor **v)
{
    const Onnx__AttributeProto *a =
        find_attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR);
    if (!a || !a->t)
        return false;
    *v = (const onnx_tensor *)a->t;
    return true;
}

/* ---- values ---- */

size_t onnx_model_input_count(const onnx_model *m) { return m->graph->n_input; }
size_t onnx_model_output_count(const onnx_model *m) { return m->graph->n_output; }

const onnx_value *onnx_model_input(const onnx_model *m, size_t i)
{
    return i < m->graph->n_input ? (const onnx_value *)m->graph->input[i] : NULL;
}

const onnx_value *onnx_model_output(const onnx_model *m, size_t i)
{
    return i < m->graph->n_output ? (const onnx_value *)m->graph->output[i] : NULL;
}

static const onnx_value *find_value(Onnx__ValueInfoProto **vals, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(nz(vals[i]->name), name) == 0)
            return (const onnx_value *)vals[i];
    return NULL;
}

const onnx_value *onnx_model_find_input(const onnx_model *m, const char *name)
{
    return find_value(m->graph->input, m->graph->n_input, name);
}

const onnx_value *onnx_model_find_output(const onnx_model *m, const char *name)
{
    return find_value(m->graph->output, m->graph->n_output, name);
}

const char *onnx_value_name(const onnx_value *v) { return nz(VALUE(v)->name); }

static const Onnx__TypeProto__Tensor *tensor_type(const onnx_value *v)
{
    const Onnx__TypeProto *tp = VALUE(v)->type;
    if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE)
        return NULL;
    return tp->tensor_type;
}

int onnx_value_elem_type(const onnx_value *v)
{
    const Onnx__TypeProto__Tensor *tt = tensor_type(v);
    return tt && tt->has_elem_type ? tt->elem_type : 0;
}

int onnx_value_ndim(const onnx_value *v)
{
    const Onnx__TypeProto__Tensor *tt = tensor_type(v);
    return tt && tt->shape ? (int)tt->shape->n_dim : -1;
}

static const Onnx__TensorShapeProto__Dimension *dim_at(const onnx_value *v, int i)
{
    const Onnx__TypeProto__Tensor *tt = tensor_type(v);
    if (!tt || !tt->shape || i < 0 || (size_t)i >= tt->shape->n_dim)
        return NULL;
    return tt->shape->dim[i];
}

int64_t onnx_value_dim(const onnx_value *v, int i)
{
    const Onnx__TensorShapeProto__Dimension *d = dim_at(v, i);
    return d && d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE
               ? d->dim_value : -1;
}

const char *onnx_value_dim_param(const onnx_value *v, int i)
{
    const Onnx__TensorShapeProto__Dimension *d = dim_at(v, i);
    return d && d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM
               ? nz(d->dim_param) : NULL;
}

/* ---- tensors ---- */

size_t onnx_model_initializer_count(const onnx_model *m) { return m->graph->n_initializer; }

const onnx_tensor *onnx_model_initializer(const onnx_model *m, size_t i)
{
    return i < m->graph->n_initializer ? (const onnx_tensor *)m->graph->initializer[i] : NULL;
}

const onnx_tensor *onnx_model_find_initializer(const onnx_model *m, const char *name)
{
    for (size_t i = 0; i < m->graph->n_initializer; i++)
        if (strcmp(nz(m->graph->initializer[i]->name), name) == 0)
            return (const onnx_tensor *)m->graph->initializer[i];
    return NULL;
}

const char *onnx_tensor_name(const onnx_tensor *t) { return nz(TENSOR(t)->name); }
int onnx_tensor_elem_type(const onnx_tensor *t) { return TENSOR(t)->data_type; }
int onnx_tensor_ndim(const onnx_tensor *t) { return (int)TENSOR(t)->n_dims; }
const int64_t *onnx_tensor_dims(const onnx_tensor *t) { return TENSOR(t)->dims; }

static const char *external_value(const onnx_tensor *t, const char *key)
{
    for (size_t i = 0; i < TENSOR(t)->n_external_data; i++) {
        const Onnx__StringStringEntryProto *e = TENSOR(t)->external_data[i];
        if (strcmp(nz(e->key), key) == 0)
            return nz(e->value);
    }
    return NULL;
}

/* Parses a decimal u64; false when absent or malformed. */
static bool parse_u64(const char *s, uint64_t *v)
{
    if (!s || !*s)
        return false;
    uint64_t x = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || x > (UINT64_MAX - 9) / 10)
            return false;
        x = x * 10 + (uint64_t)(*s - '0');
    }
    *v = x;
    return true;
}

bool onnx_tensor_external(const onnx_tensor *t, const char **location, uint64_t *offset,
                          uint64_t *length)
{
    if (!(TENSOR(t)->has_data_location &&
          TENSOR(t)->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL))
        return false;
    if (location)
        *location = external_value(t, "location");
    if (offset && !parse_u64(external_value(t, "offset"), offset))
        *offset = 0;
    if (length && !parse_u64(external_value(t, "length"), length))
        *length = UINT64_MAX; /* absent: up to the end of the file */
    return true;
}

static int map_location(onnx_model *m, const char *location, const mapped_file **out,
                        m2o_err *err)
{
    for (size_t i = 0; i < m->n_maps; i++)
        if (strcmp(m->maps[i].location, location) == 0) {
            *out = &m->maps[i];
            return 0;
        }
    mapped_file *grown = realloc(m->maps, (m->n_maps + 1) * sizeof *grown);
    if (!grown)
        return m2o_fail(err, "out of memory mapping %s", location);
    m->maps = grown;
    size_t n = strlen(m->dir) + strlen(location) + 2;
    char *path = m2o_malloc(n, err);
    if (!path)
        return -1;
    snprintf(path, n, "%s/%s", m->dir, location);
    /* O_NONBLOCK: opening a FIFO must not wait for a writer */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        free(path);
        return m2o_fail(err, "cannot open external data file %s: %s", location, strerror(e));
    }
    mapped_file mf = {.size = (size_t)st.st_size};
    if (mf.size) {
        void *p = mmap(NULL, mf.size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            free(path);
            return m2o_fail(err, "cannot map external data file %s: %s", location, strerror(e));
        }
        mf.data = p;
    }
    close(fd);
    free(path);
    mf.location = dup_str(location, strlen(location), err);
    if (!mf.location) {
        if (mf.data)
            munmap((void *)mf.data, mf.size);
        return -1;
    }
    m->maps[m->n_maps] = mf;
    *out = &m->maps[m->n_maps++];
    return 0;
}

/* The location must name a file beside the model, never a path out of its directory. */
static bool safe_location(const char *loc)
{
    if (!loc || !loc[0] || loc[0] == '/')
        return false;
    for (const char *p = loc; *p;) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 2 && p[0] == '.' && p[1] == '.')
            return false;
        p += len + (end ? 1 : 0);
    }
    return true;
}

static int external_data(onnx_model *m, const onnx_tensor *t, uint64_t expected,
                         const void **data, size_t *nbytes, m2o_err *err)
{
    const char *name = onnx_tensor_name(t), *loc;
    uint64_t off, len;
    onnx_tensor_external(t, &loc, &off, &len);
    if (!safe_location(loc))
        return m2o_fail(err, "initializer %s: external data location \"%s\" is not a file name "
                        "relative to the model's directory", name, nz(loc));
    const mapped_file *mf = NULL;
    if (map_location(m, loc, &mf, err))
        return m2o_wrap(err, "initializer %s", name);
    if (len == UINT64_MAX)
        len = off <= mf->size ? mf->size - off : 0;
    if (off > mf->size || len > mf->size - off)
        return m2o_fail(err, "initializer %s: external range [%llu, +%llu) runs past the end of "
                        "%s (%zu bytes); the data file is truncated or belongs to another model",
                        name, (unsigned long long)off, (unsigned long long)len, loc, mf->size);
    if (len != expected)
        return m2o_fail(err, "initializer %s: external length %llu bytes but its dims and type "
                        "need %llu", name, (unsigned long long)len,
                        (unsigned long long)expected);
    *data = mf->data ? mf->data + off : (const void *)"";
    *nbytes = (size_t)len;
    return 0;
}

int onnx_model_tensor_data(onnx_model *m, const onnx_tensor *t, const void **data, size_t *nbytes,
                           m2o_err *err)
{
    const Onnx__TensorProto *tp = TENSOR(t);
    const char *name = onnx_tensor_name(t);
    size_t esize = onnx_dtype_size(tp->data_type);
    if (!esize)
        return m2o_fail(err, "initializer %s: element type %d (%s) is not supported", name,
                        tp->data_type, onnx_dtype_name(tp->data_type));
    uint64_t numel = 1;
    for (size_t i = 0; i < tp->n_dims; i++) {
        if (tp->dims[i] < 0 || (tp->dims[i] && numel > UINT64_MAX / 16 / (uint64_t)tp->dims[i]))
            return m2o_fail(err, "initializer %s: dims are negative or overflow", name);
        numel *= (uint64_t)tp->dims[i];
    }
    uint64_t expected = numel * esize;
    if (onnx_tensor_external(t, NULL, NULL, NULL))
        return external_data(m, t, expected, data, nbytes, err);

    const void *p = NULL;
    uint64_t have = 0;
    if (tp->has_raw_data) {
        p = tp->raw_data.data;
        have = tp->raw_data.len;
    } else if (tp->data_type == ONNX_FLOAT) {
        p = tp->float_data;
        have = tp->n_float_data * sizeof(float);
    } else if (tp->data_type == ONNX_INT64) {
        p = tp->int64_data;
        have = tp->n_int64_data * sizeof(int64_t);
    } else if (tp->data_type == ONNX_INT32) {
        p = tp->int32_data;
        have = tp->n_int32_data * sizeof(int32_t);
    } else if (expected) {
        return m2o_fail(err, "initializer %s: %s data is stored in a typed field this reader does "
                        "not decode (only raw_data or external data)", name,
                        onnx_dtype_name(tp->data_type));
    }
    if (have != expected)
        return m2o_fail(err, "initializer %s holds %llu bytes but its dims and type need %llu",
                        name, (unsigned long long)have, (unsigned long long)expected);
    *data = p ? p : (const void *)"";
    *nbytes = (size_t)have;
    return 0;
}
