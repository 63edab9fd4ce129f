/* graph_check: the structural rules a model must meet before it is written. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx/graph_internal.h"

/* Open-addressing table from a name to who defined it (a description for error messages). */
typedef struct name_entry {
    const char *name;
    const char *kind;  /* "graph input", "initializer", "node" */
    const char *owner; /* node name for node outputs */
} name_entry;

typedef struct name_table {
    name_entry *slots;
    size_t mask;
} name_table;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int table_init(name_table *t, size_t expected, m2o_err *err)
{
    size_t cap = 64;
    while (cap < expected * 2)
        cap *= 2;
    t->slots = m2o_calloc(cap, sizeof *t->slots, err);
    t->mask = cap - 1;
    return t->slots ? 0 : -1;
}

/* Returns the entry for name: either the existing one or a fresh slot with name == NULL. */
static name_entry *table_find(const name_table *t, const char *name)
{
    for (size_t i = hash_str(name) & t->mask;; i = (i + 1) & t->mask)
        if (!t->slots[i].name || strcmp(t->slots[i].name, name) == 0)
            return &t->slots[i];
}

static void describe(const name_entry *e, char *buf, size_t n)
{
    if (e->owner)
        snprintf(buf, n, "%s %s", e->kind, e->owner);
    else
        snprintf(buf, n, "%s", e->kind);
}

/* Records a definition of value `name`; a second definition is the error. */
static int define_value(name_table *t, const char *name, const char *kind, const char *owner,
                        m2o_err *err)
{
    name_entry *e = table_find(t, name);
    if (e->name) {
        char first[300];
        describe(e, first, sizeof first);
        if (owner)
            return m2o_fail(err, "value \"%s\" is produced twice: by %s and by %s %s (every value "
                            "must have exactly one producer)", name, first, kind, owner);
        return m2o_fail(err, "value \"%s\" is defined twice: as %s and as %s (rename one)", name,
                        first, kind);
    }
    *e = (name_entry){name, kind, owner};
    return 0;
}

static int check_tensor_bytes(const char *what, const char *name, int elem_type, int ndim,
                              const int64_t *dims, uint64_t nbytes, m2o_err *err)
{
    size_t esize = onnx_dtype_size(elem_type);
    if (!esize)
        return m2o_fail(err, "%s %s: element type %d (%s) cannot be written", what, name,
                        elem_type, onnx_dtype_name(elem_type));
    int64_t numel = graph_numel(ndim, dims);
    if (numel < 0)
        return m2o_fail(err, "%s %s: dims are negative or overflow", what, name);
    if ((uint64_t)numel > UINT64_MAX / esize || (uint64_t)numel * esize != nbytes)
        return m2o_fail(err, "%s %s: %llu bytes given but its dims hold %lld %s elements = %llu "
                        "bytes", what, name, (unsigned long long)nbytes, (long long)numel,
                        onnx_dtype_name(elem_type), (unsigned long long)numel * esize);
    return 0;
}

static int check_initializers(const graph *g, m2o_err *err)
{
    for (size_t i = 0; i < g->n_inits; i++) {
        const graph_init *in = &g->inits[i];
        if (!in->name[0])
            return m2o_fail(err, "initializer #%zu has an empty name", i);
        const char *what = in->streamed ? "streamed initializer" : "initializer";
        if (in->streamed && in->consumed)
            return m2o_fail(err, "streamed initializer %s was already written and its producer "
                            "released; build the graph again to write it twice", in->name);
        if (check_tensor_bytes(what, in->name, in->elem_type, in->ndim, in->dims, in->nbytes, err))
            return -1;
    }
    return 0;
}

static int check_node_shapes(const graph_node *n, m2o_err *err)
{
    if (!n->op_type[0])
        return m2o_fail(err, "node %s has no op_type", n->name);
    for (const graph_attr *a = n->attrs; a; a = a->next) {
        if (!a->name[0])
            return m2o_fail(err, "node %s: an attribute has an empty name", n->name);
        for (const graph_attr *b = a->next; b; b = b->next)
            if (strcmp(a->name, b->name) == 0)
                return m2o_fail(err, "node %s: attribute %s is set twice", n->name, a->name);
        if (a->kind == ATTR_TENSOR &&
            check_tensor_bytes("tensor attribute", a->name, a->t.elem_type, a->t.ndim, a->t.dims,
                               a->t.nbytes, err))
            return m2o_wrap(err, "node %s", n->name);
    }
    return 0;
}

static int check_unique_node_names(const graph *g, m2o_err *err)
{
    name_table t;
    if (table_init(&t, g->n_nodes, err))
        return -1;
    int rc = 0;
    for (size_t i = 0; i < g->n_nodes && !rc; i++) {
        const graph_node *n = g->nodes[i];
        if (!n->name[0]) /* ONNX allows unnamed nodes; they cannot collide */
            continue;
        name_entry *e = table_find(&t, n->name);
        if (e->name)
            rc = m2o_fail(err, "node name \"%s\" is used twice (op %s and op %s); node names must "
                          "be unique", n->name, e->kind, n->op_type);
        else
            *e = (name_entry){n->name, n->op_type, NULL};
    }
    free(t.slots);
    return rc;
}

static int check_values(const graph *g, m2o_err *err)
{
    name_table t;
    size_t expected = g->n_inputs + g->n_inits;
    for (size_t i = 0; i < g->n_nodes; i++)
        expected += (size_t)g->nodes[i]->n_out;
    if (table_init(&t, expected, err))
        return -1;
    int rc = 0;
    for (size_t i = 0; i < g->n_inputs && !rc; i++)
        rc = define_value(&t, g->inputs[i].name, "graph input", NULL, err);
    for (size_t i = 0; i < g->n_inits && !rc; i++)
        rc = define_value(&t, g->inits[i].name, "initializer", NULL, err);
    for (size_t i = 0; i < g->n_nodes && !rc; i++) {
        const graph_node *n = g->nodes[i];
        for (int j = 0; j < n->n_out && !rc; j++)
            if (n->outputs[j][0]) /* "" = optional output not produced */
                rc = define_value(&t, n->outputs[j], "node", n->name, err);
    }
    for (size_t i = 0; i < g->n_nodes && !rc; i++) {
        const graph_node *n = g->nodes[i];
        for (int j = 0; j < n->n_in && !rc; j++)
            if (n->inputs[j][0] && !table_find(&t, n->inputs[j])->name)
                rc = m2o_fail(err, "node %s (%s) input %d \"%s\" is not produced by any node, "
                              "initializer or graph input", n->name, n->op_type, j, n->inputs[j]);
    }
    for (size_t i = 0; i < g->n_outputs && !rc; i++) {
        const char *name = g->outputs[i].name;
        if (!table_find(&t, name)->name)
            rc = m2o_fail(err, "graph output \"%s\" is not produced by any node", name);
        for (size_t k = 0; k < i && !rc; k++)
            if (strcmp(g->outputs[k].name, name) == 0)
                rc = m2o_fail(err, "graph output \"%s\" is listed twice", name);
    }
    free(t.slots);
    return rc;
}

int graph_check(const graph *g, m2o_err *err)
{
    if (!g)
        return m2o_fail(err, "no graph (graph_new ran out of memory)");
    if (g->has_error)
        return m2o_fail(err, "while building graph %s: %s", g->name, g->error);
    for (size_t i = 0; i < g->n_inputs; i++)
        if (!g->inputs[i].name[0])
            return m2o_fail(err, "graph input #%zu has an empty name", i);
    for (size_t i = 0; i < g->n_outputs; i++)
        if (!g->outputs[i].name[0])
            return m2o_fail(err, "graph output #%zu has an empty name", i);
    if (check_initializers(g, err))
        return -1;
    for (size_t i = 0; i < g->n_nodes; i++)
        if (check_node_shapes(g->nodes[i], err))
            return -1;
    if (check_unique_node_names(g, err))
        return -1;
    return check_values(g, err);
}
