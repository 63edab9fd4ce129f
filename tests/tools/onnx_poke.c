/* Edits a COPY of an exported model in controlled ways: damage for verify's corruption table
 * (tests/e2e/verify.test.sh), and test-side views for the CUDA suite (tests/cuda/). Built as
 * build/tools/onnx_poke.
 *
 *   onnx_poke set MODEL.onnx INITIALIZER BYTE_OFFSET HEX...
 *       overwrites bytes of an initializer's data: in the external data file beside the model, or
 *       in its inline raw_data (then model.onnx is rewritten);
 *   onnx_poke rewire MODEL.onnx NODE INPUT_INDEX FROM_NODE
 *       makes input INPUT_INDEX of NODE read output 0 of FROM_NODE (a later node: a cycle);
 *   onnx_poke rename MODEL.onnx INITIALIZER NEW_NAME
 *       renames an initializer and every node input reading it (the graph stays consistent);
 *   onnx_poke expose MODEL.onnx OUT.onnx NODE_NAME_SUFFIX
 *       writes OUT.onnx (beside MODEL, sharing its external data) with output 0 of every node
 *       whose name ends in the suffix added as a float32 graph output (router logits);
 *   onnx_poke f32io MODEL.onnx OUT.onnx
 *       writes OUT.onnx whose bfloat16 graph inputs and outputs are float32, cast inside the
 *       graph (onnxruntime-node has no bfloat16 tensors);
 *   onnx_poke nbits MODEL.onnx
 *       prints "NODE BITS" for every MatMulNBits node, its "bits" attribute (int8_budget's test).
 * Exit 0 on success, 1 with one line on stderr otherwise. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx/onnx.pb-c.h"

static int die(const char *msg, const char *what)
{
    fprintf(stderr, "onnx_poke: %s%s%s\n", msg, what ? ": " : "", what ? what : "");
    return 1;
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static int save(const char *path, Onnx__ModelProto *m)
{
    size_t n = onnx__model_proto__get_packed_size(m);
    unsigned char *buf = malloc(n);
    if (!buf)
        return die("out of memory", NULL);
    onnx__model_proto__pack(m, buf);
    FILE *f = fopen(path, "wb");
    int rc = f && fwrite(buf, 1, n, f) == n ? 0 : 1;
    if (f && fclose(f))
        rc = 1;
    free(buf);
    return rc ? die("cannot write", path) : 0;
}

static const char *external(const Onnx__TensorProto *t, const char *key)
{
    for (size_t i = 0; i < t->n_external_data; i++)
        if (!strcmp(t->external_data[i]->key, key))
            return t->external_data[i]->value;
    return NULL;
}

static int set_bytes(const char *path, Onnx__ModelProto *m, int argc, char **argv)
{
    Onnx__GraphProto *g = m->graph;
    Onnx__TensorProto *t = NULL;
    for (size_t i = 0; i < g->n_initializer && !t; i++)
        if (!strcmp(g->initializer[i]->name, argv[3]))
            t = g->initializer[i];
    if (!t)
        return die("no such initializer", argv[3]);
    long off = strtol(argv[4], NULL, 0);
    int n = argc - 5;
    unsigned char bytes[64];
    for (int i = 0; i < n && i < 64; i++)
        bytes[i] = (unsigned char)strtoul(argv[5 + i], NULL, 16);
    const char *loc = external(t, "location");
    if (!loc) {
        if (off < 0 || (size_t)(off + n) > t->raw_data.len)
            return die("offset past the inline data of", argv[3]);
        memcpy(t->raw_data.data + off, bytes, (size_t)n);
        return save(path, m);
    }
    const char *base = external(t, "offset"), *len = external(t, "length");
    if (len && off + n > atol(len))
        return die("offset past the data of", argv[3]);
    char data_path[4096];
    const char *slash = strrchr(path, '/');
    snprintf(data_path, sizeof data_path, "%.*s%s", slash ? (int)(slash - path + 1) : 0, path, loc);
    FILE *f = fopen(data_path, "r+b");
    if (!f)
        return die("cannot open", data_path);
    int rc = fseek(f, (base ? atol(base) : 0) + off, SEEK_SET) ||
             fwrite(bytes, 1, (size_t)n, f) != (size_t)n;
    if (fclose(f))
        rc = 1;
    return rc ? die("cannot write", data_path) : 0;
}

static Onnx__NodeProto *node_named(Onnx__GraphProto *g, const char *name)
{
    for (size_t i = 0; i < g->n_node; i++)
        if (!strcmp(g->node[i]->name, name))
            return g->node[i];
    return NULL;
}

static int rewire(const char *path, Onnx__ModelProto *m, char **argv)
{
    Onnx__NodeProto *to = node_named(m->graph, argv[3]), *from = node_named(m->graph, argv[5]);
    size_t k = (size_t)atol(argv[4]);
    if (!to || !from || k >= to->n_input || from->n_output < 1)
        return die("no such node or input", argv[3]);
    to->input[k] = from->output[0]; /* freed with the message: leak the old string instead */
    return save(path, m);
}

static int rename_init(const char *path, Onnx__ModelProto *m, char **argv)
{
    Onnx__GraphProto *g = m->graph;
    bool found = false;
    for (size_t i = 0; i < g->n_initializer; i++)
        if (!strcmp(g->initializer[i]->name, argv[3])) {
            g->initializer[i]->name = argv[4]; /* aliased, like rewire's */
            found = true;
        }
    for (size_t i = 0; i < g->n_node; i++)
        for (size_t j = 0; j < g->node[i]->n_input; j++)
            if (!strcmp(g->node[i]->input[j], argv[3]))
                g->node[i]->input[j] = argv[4];
    return found ? save(path, m) : die("no such initializer", argv[3]);
}

static Onnx__ValueInfoProto *float_value(const char *name)
{
    Onnx__TypeProto__Tensor *tt = calloc(1, sizeof *tt);
    Onnx__TypeProto *tp = calloc(1, sizeof *tp);
    Onnx__ValueInfoProto *v = calloc(1, sizeof *v);
    onnx__type_proto__tensor__init(tt);
    onnx__type_proto__init(tp);
    onnx__value_info_proto__init(v);
    tt->has_elem_type = 1;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    v->name = strdup(name);
    v->type = tp;
    return v;
}

static void add_output(Onnx__GraphProto *g, Onnx__ValueInfoProto *v)
{
    g->output = realloc(g->output, (g->n_output + 1) * sizeof *g->output);
    g->output[g->n_output++] = v;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* The model's io dtype: that of its KV-cache inputs (float32 when it has none). */
static int io_elem_type(const Onnx__GraphProto *g)
{
    for (size_t i = 0; i < g->n_input; i++) {
        const Onnx__ValueInfoProto *v = g->input[i];
        if (!strncmp(v->name, "past_key_values.", 16) && v->type && v->type->tensor_type)
            return v->type->tensor_type->elem_type;
    }
    return ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
}

static int expose(Onnx__ModelProto *m, char **argv)
{
    Onnx__GraphProto *g = m->graph;
    int n = 0, type = io_elem_type(g); /* the exposed values are activations: io dtype */
    for (size_t i = 0; i < g->n_node; i++)
        if (ends_with(g->node[i]->name, argv[4]) && g->node[i]->n_output) {
            Onnx__ValueInfoProto *v = float_value(g->node[i]->output[0]);
            v->type->tensor_type->elem_type = type;
            add_output(g, v);
            n++;
        }
    return n ? save(argv[3], m) : die("no node name ends in", argv[4]);
}

static Onnx__NodeProto *cast_node(const char *name, const char *from, const char *to, int type)
{
    Onnx__NodeProto *n = calloc(1, sizeof *n);
    Onnx__AttributeProto *a = calloc(1, sizeof *a);
    onnx__node_proto__init(n);
    onnx__attribute_proto__init(a);
    a->name = strdup("to");
    a->has_type = 1;
    a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    a->has_i = 1;
    a->i = type;
    n->name = strdup(name);
    n->op_type = strdup("Cast");
    n->n_input = n->n_output = n->n_attribute = 1;
    n->input = malloc(sizeof *n->input);
    n->output = malloc(sizeof *n->output);
    n->attribute = malloc(sizeof *n->attribute);
    n->input[0] = strdup(from);
    n->output[0] = strdup(to);
    n->attribute[0] = a;
    return n;
}

static bool is_bf16(const Onnx__ValueInfoProto *v)
{
    return v->type && v->type->tensor_type &&
           v->type->tensor_type->elem_type == ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16;
}

/* Every node input (and, for outputs, node output) called old now reads renamed. */
static void rename_value(Onnx__GraphProto *g, const char *old, const char *renamed)
{
    for (size_t i = 0; i < g->n_node; i++) {
        for (size_t j = 0; j < g->node[i]->n_input; j++)
            if (!strcmp(g->node[i]->input[j], old))
                g->node[i]->input[j] = strdup(renamed);
        for (size_t j = 0; j < g->node[i]->n_output; j++)
            if (!strcmp(g->node[i]->output[j], old))
                g->node[i]->output[j] = strdup(renamed);
    }
}

/* bfloat16 graph inputs become float32 inputs cast to bfloat16 first; bfloat16 outputs are
 * cast to float32 last. The casts are exact (float32 holds every bfloat16). */
static int f32io(Onnx__ModelProto *m, char **argv)
{
    Onnx__GraphProto *g = m->graph;
    size_t n_in = 0, n_out = 0;
    Onnx__NodeProto **first = calloc(g->n_input + 1, sizeof *first);
    Onnx__NodeProto **last = calloc(g->n_output + 1, sizeof *last);
    char inner[4096];
    for (size_t i = 0; i < g->n_input; i++)
        if (is_bf16(g->input[i])) {
            snprintf(inner, sizeof inner, "%s/bf16", g->input[i]->name);
            rename_value(g, g->input[i]->name, inner);
            first[n_in++] = cast_node(inner, g->input[i]->name, inner,
                                      ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16);
            g->input[i]->type->tensor_type->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
        }
    for (size_t i = 0; i < g->n_output; i++)
        if (is_bf16(g->output[i])) {
            snprintf(inner, sizeof inner, "%s/bf16", g->output[i]->name);
            rename_value(g, g->output[i]->name, inner);
            last[n_out++] = cast_node(inner, inner, g->output[i]->name,
                                      ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
            g->output[i]->type->tensor_type->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
        }
    Onnx__NodeProto **nodes = malloc((g->n_node + n_in + n_out) * sizeof *nodes);
    memcpy(nodes, first, n_in * sizeof *nodes);
    memcpy(nodes + n_in, g->node, g->n_node * sizeof *nodes);
    memcpy(nodes + n_in + g->n_node, last, n_out * sizeof *nodes);
    g->node = nodes;
    g->n_node += n_in + n_out;
    return n_in + n_out ? save(argv[3], m) : die("no bfloat16 graph input or output in", argv[2]);
}

static int list_nbits(const Onnx__ModelProto *m)
{
    for (size_t i = 0; i < m->graph->n_node; i++) {
        const Onnx__NodeProto *n = m->graph->node[i];
        if (strcmp(n->op_type, "MatMulNBits"))
            continue;
        for (size_t a = 0; a < n->n_attribute; a++)
            if (!strcmp(n->attribute[a]->name, "bits"))
                printf("%s %lld\n", n->name, (long long)n->attribute[a]->i);
    }
    return 0;
}

int main(int argc, char **argv)
{
    bool rename = argc == 5 && !strcmp(argv[1], "rename");
    bool view = (argc == 5 && !strcmp(argv[1], "expose")) || (argc == 4 && !strcmp(argv[1], "f32io"));
    bool nbits = argc == 3 && !strcmp(argv[1], "nbits");
    if (!rename && !view && !nbits && (argc < 6 || (strcmp(argv[1], "set") && strcmp(argv[1], "rewire"))))
        return die("usage: onnx_poke set MODEL INIT OFFSET HEX... | rewire MODEL NODE K FROM | "
                   "rename MODEL INIT NEW | expose MODEL OUT SUFFIX | f32io MODEL OUT | nbits MODEL", NULL);
    size_t len;
    unsigned char *buf = slurp(argv[2], &len);
    Onnx__ModelProto *m = buf ? onnx__model_proto__unpack(NULL, len, buf) : NULL;
    if (!m || !m->graph)
        return die("cannot read the model", argv[2]);
    int rc = nbits                   ? list_nbits(m)
             : view                    ? (argv[1][0] == 'e' ? expose(m, argv) : f32io(m, argv))
             : rename                ? rename_init(argv[2], m, argv)
             : !strcmp(argv[1], "set") ? set_bytes(argv[2], m, argc, argv)
                                       : rewire(argv[2], m, argv);
    free(buf);
    return rc; /* the unpacked message is left to exit: rewire aliased one of its strings */
}
