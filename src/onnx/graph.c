/* Graph construction: everything is copied into the graph's arena. The add functions cannot
 * return an error (the builder code stays readable), so the first problem met while building
 * (out of memory, too many dims, a bad chunk size) is remembered and reported by graph_check. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx/graph_internal.h"
#include "onnx/quant_stats.h"

/* ---- arena ---- */

#define ARENA_BLOCK (64u * 1024u)

struct arena_block {
    arena_block *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

static arena_block *block_new(size_t cap)
{
    arena_block *b = malloc(sizeof *b + cap);
    if (b) {
        b->next = NULL;
        b->used = 0;
        b->cap = cap;
    }
    return b;
}

void *arena_alloc(arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n == 0)
        n = 16;
    if (n > ARENA_BLOCK / 4) {
        /* A large copy gets its own block behind the current one, so the current block's
         * free space stays usable. */
        arena_block *b = block_new(n);
        if (!b)
            return NULL;
        b->used = n;
        if (a->head) {
            b->next = a->head->next;
            a->head->next = b;
        } else {
            a->head = b;
        }
        return b->data;
    }
    if (!a->head || a->head->cap - a->head->used < n) {
        arena_block *b = block_new(ARENA_BLOCK);
        if (!b)
            return NULL;
        b->next = a->head;
        a->head = b;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += n;
    return p;
}

void arena_release(arena *a)
{
    for (arena_block *b = a->head, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    a->head = NULL;
}

/* ---- element types ---- */

size_t onnx_dtype_size(int elem_type)
{
    switch (elem_type) {
    case 1: return 4;  /* FLOAT */
    case 2: return 1;  /* UINT8 */
    case 3: return 1;  /* INT8 */
    case 4: return 2;  /* UINT16 */
    case 5: return 2;  /* INT16 */
    case 6: return 4;  /* INT32 */
    case 7: return 8;  /* INT64 */
    case 9: return 1;  /* BOOL */
    case 10: return 2; /* FLOAT16 */
    case 11: return 8; /* DOUBLE */
    case 12: return 4; /* UINT32 */
    case 13: return 8; /* UINT64 */
    case 16: return 2; /* BFLOAT16 */
    case 17: case 18: case 19: case 20: return 1; /* FLOAT8E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ */
    case 24: return 1; /* FLOAT8E8M0 */
    default: return 0; /* STRING, complex, sub-byte types: not written by this tool */
    }
}

const char *onnx_dtype_name(int elem_type)
{
    switch (elem_type) {
    case 1: return "FLOAT";
    case 2: return "UINT8";
    case 3: return "INT8";
    case 4: return "UINT16";
    case 5: return "INT16";
    case 6: return "INT32";
    case 7: return "INT64";
    case 8: return "STRING";
    case 9: return "BOOL";
    case 10: return "FLOAT16";
    case 11: return "DOUBLE";
    case 12: return "UINT32";
    case 13: return "UINT64";
    case 16: return "BFLOAT16";
    case 17: return "FLOAT8E4M3FN";
    case 18: return "FLOAT8E4M3FNUZ";
    case 19: return "FLOAT8E5M2";
    case 20: return "FLOAT8E5M2FNUZ";
    case 21: return "UINT4";
    case 22: return "INT4";
    case 23: return "FLOAT4E2M1";
    case 24: return "FLOAT8E8M0";
    default: return "UNKNOWN";
    }
}

int64_t graph_numel(int ndim, const int64_t *dims)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (dims[i] < 0)
            return -1;
        if (dims[i] != 0 && n > INT64_MAX / dims[i])
            return -1;
        n *= dims[i];
    }
    return n;
}

/* ---- construction helpers ---- */

__attribute__((format(printf, 2, 3))) static void set_error(graph *g, const char *fmt, ...)
{
    if (!g || g->has_error)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->error, sizeof g->error, fmt, ap);
    va_end(ap);
    g->has_error = true;
}

static const char *safe(const char *s) { return s ? s : "(null)"; }

static const char *copy_str(graph *g, const char *s)
{
    if (!s)
        s = "";
    size_t n = strlen(s) + 1;
    char *p = arena_alloc(&g->a, n);
    if (!p) {
        set_error(g, "out of memory copying the name \"%.100s\"", s);
        return "";
    }
    memcpy(p, s, n);
    return p;
}

static void *copy_mem(graph *g, const void *src, size_t n, const char *what)
{
    void *p = arena_alloc(&g->a, n);
    if (!p) {
        set_error(g, "out of memory copying %zu bytes of %s", n, what);
        return NULL;
    }
    if (n)
        memcpy(p, src, n);
    return p;
}

/* Grows *arr (elements of size elem) so that index *n is valid; returns the new slot or NULL. */
static void *grow(graph *g, void **arr, size_t *n, size_t *cap, size_t elem)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        void *p = realloc(*arr, nc * elem);
        if (!p) {
            set_error(g, "out of memory growing the graph to %zu entries", nc);
            return NULL;
        }
        *arr = p;
        *cap = nc;
    }
    void *slot = (char *)*arr + (*n)++ * elem;
    memset(slot, 0, elem);
    return slot;
}

/* Copies dims into out; false (with the graph error set) when ndim is out of range. */
static bool copy_dims(graph *g, const char *what, const char *name, int ndim, const int64_t *dims,
                      int64_t *out)
{
    if (ndim < 0 || ndim > GRAPH_MAX_DIMS || (ndim > 0 && !dims)) {
        set_error(g, "%s %s: rank %d is outside 0..%d", what, safe(name), ndim, GRAPH_MAX_DIMS);
        return false;
    }
    for (int i = 0; i < ndim; i++)
        out[i] = dims[i];
    return true;
}

/* ---- public construction API ---- */

graph *graph_new(const char *name)
{
    graph *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->name = copy_str(g, name ? name : "main_graph");
    return g;
}

void graph_init_release_ctx(graph_init *in)
{
    if (in->ctx_free && in->ctx)
        in->ctx_free(in->ctx);
    in->ctx = NULL;
    in->ctx_free = NULL;
}

void graph_free(graph *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n_inits; i++)
        graph_init_release_ctx(&g->inits[i]);
    graph_quant_stats_free(g);
    free(g->nodes);
    free(g->inputs);
    free(g->outputs);
    free(g->inits);
    arena_release(&g->a);
    free(g);
}

static void add_value(graph *g, graph_value **arr, size_t *n, size_t *cap, const char *what,
                      const char *name, int elem_type, int ndim, const int64_t *dims,
                      const char *const *dim_params)
{
    graph_value *v = grow(g, (void **)arr, n, cap, sizeof *v);
    if (!v)
        return;
    v->name = copy_str(g, name);
    v->elem_type = elem_type;
    if (ndim < 0 || ndim > GRAPH_MAX_DIMS) {
        set_error(g, "%s %s: rank %d is outside 0..%d", what, safe(name), ndim, GRAPH_MAX_DIMS);
        return;
    }
    v->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        if (dim_params && dim_params[i]) {
            v->dim_params[i] = copy_str(g, dim_params[i]);
            v->dims[i] = -1;
        } else if (dims && dims[i] >= 0) {
            v->dims[i] = dims[i];
        } else {
            set_error(g, "%s %s: dim %d is neither a size nor a named parameter", what,
                      safe(name), i);
        }
    }
}

void graph_add_input(graph *g, const char *name, int elem_type, int ndim, const int64_t *dims,
                     const char *const *dim_params)
{
    add_value(g, &g->inputs, &g->n_inputs, &g->cap_inputs, "graph input", name, elem_type, ndim,
              dims, dim_params);
}

void graph_add_output(graph *g, const char *name, int elem_type, int ndim, const int64_t *dims,
                      const char *const *dim_params)
{
    add_value(g, &g->outputs, &g->n_outputs, &g->cap_outputs, "graph output", name, elem_type,
              ndim, dims, dim_params);
}

static const char **copy_names(graph *g, int n, const char *const *names, const char *node,
                               const char *what)
{
    if (n < 0 || (n > 0 && !names)) {
        set_error(g, "node %s: bad %s list (count %d)", safe(node), what, n);
        return NULL;
    }
    const char **out = arena_alloc(&g->a, sizeof *out * (size_t)(n ? n : 1));
    if (!out) {
        set_error(g, "node %s: out of memory copying its %s", safe(node), what);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        out[i] = copy_str(g, names[i]);
    return out;
}

graph_node *graph_add_node(graph *g, const char *op_type, const char *domain, const char *name,
                           int n_in, const char *const *inputs, int n_out,
                           const char *const *outputs)
{
    graph_node *n = arena_alloc(&g->a, sizeof *n);
    graph_node **slot = n ? grow(g, (void **)&g->nodes, &g->n_nodes, &g->cap_nodes, sizeof *slot)
                          : NULL;
    if (!n || !slot) {
        set_error(g, "out of memory adding node %s", safe(name));
        return NULL;
    }
    memset(n, 0, sizeof *n);
    *slot = n;
    n->g = g;
    n->op_type = copy_str(g, op_type);
    n->domain = copy_str(g, domain);
    n->name = copy_str(g, name);
    n->inputs = copy_names(g, n_in, inputs, name, "inputs");
    n->n_in = n->inputs ? n_in : 0;
    n->outputs = copy_names(g, n_out, outputs, name, "outputs");
    n->n_out = n->outputs ? n_out : 0;
    return n;
}

static graph_attr *add_attr(graph_node *n, const char *name, attr_kind kind)
{
    if (!n) /* graph_add_node failed; the graph already holds that error */
        return NULL;
    graph_attr *a = arena_alloc(&n->g->a, sizeof *a);
    if (!a) {
        set_error(n->g, "node %s: out of memory adding attribute %s", n->name, safe(name));
        return NULL;
    }
    memset(a, 0, sizeof *a);
    a->name = copy_str(n->g, name);
    a->kind = kind;
    if (n->attrs_tail)
        n->attrs_tail->next = a;
    else
        n->attrs = a;
    n->attrs_tail = a;
    n->n_attrs++;
    return a;
}

void node_attr_int(graph_node *n, const char *name, int64_t v)
{
    graph_attr *a = add_attr(n, name, ATTR_INT);
    if (a)
        a->i = v;
}

void node_attr_float(graph_node *n, const char *name, float v)
{
    graph_attr *a = add_attr(n, name, ATTR_FLOAT);
    if (a)
        a->f = v;
}

void node_attr_string(graph_node *n, const char *name, const char *v)
{
    graph_attr *a = add_attr(n, name, ATTR_STRING);
    if (a)
        a->s = copy_str(n->g, v);
}

void node_attr_ints(graph_node *n, const char *name, int n_vals, const int64_t *vals)
{
    graph_attr *a = add_attr(n, name, ATTR_INTS);
    if (!a)
        return;
    if (n_vals < 0 || (n_vals > 0 && !vals)) {
        set_error(n->g, "node %s: attribute %s has a bad value list", n->name, a->name);
        return;
    }
    a->n_vals = n_vals;
    a->ints = copy_mem(n->g, vals, sizeof *vals * (size_t)n_vals, a->name);
}

void node_attr_floats(graph_node *n, const char *name, int n_vals, const float *vals)
{
    graph_attr *a = add_attr(n, name, ATTR_FLOATS);
    if (!a)
        return;
    if (n_vals < 0 || (n_vals > 0 && !vals)) {
        set_error(n->g, "node %s: attribute %s has a bad value list", n->name, a->name);
        return;
    }
    a->n_vals = n_vals;
    a->floats = copy_mem(n->g, vals, sizeof *vals * (size_t)n_vals, a->name);
}

void node_attr_tensor(graph_node *n, const char *name, int elem_type, int ndim,
                      const int64_t *dims, const void *data, size_t nbytes)
{
    graph_attr *a = add_attr(n, name, ATTR_TENSOR);
    if (!a)
        return;
    a->t.elem_type = elem_type;
    if (!copy_dims(n->g, "tensor attribute", a->name, ndim, dims, a->t.dims))
        return;
    a->t.ndim = ndim;
    if (nbytes && !data) {
        set_error(n->g, "node %s: tensor attribute %s has no data", n->name, a->name);
        return;
    }
    a->t.data = copy_mem(n->g, data, nbytes, a->name);
    a->t.nbytes = nbytes;
}

static graph_init *add_init(graph *g, const char *name, int elem_type, int ndim,
                            const int64_t *dims)
{
    graph_init *in = grow(g, (void **)&g->inits, &g->n_inits, &g->cap_inits, sizeof *in);
    if (!in)
        return NULL;
    in->name = copy_str(g, name);
    in->elem_type = elem_type;
    if (copy_dims(g, "initializer", name, ndim, dims, in->dims))
        in->ndim = ndim;
    return in;
}

void graph_add_initializer(graph *g, const char *name, int elem_type, int ndim,
                           const int64_t *dims, const void *data, size_t nbytes)
{
    graph_init *in = add_init(g, name, elem_type, ndim, dims);
    if (!in)
        return;
    if (nbytes && !data) {
        set_error(g, "initializer %s: no data given for %zu bytes", safe(name), nbytes);
        return;
    }
    in->data = copy_mem(g, data, nbytes, in->name);
    in->nbytes = nbytes;
}

/* Fills the streamed fields shared by single initializers and group members; false (error
 * remembered) when the chunk layout is unusable. */
static bool set_streamed(graph *g, graph_init *in, size_t leader, int64_t n_chunks,
                         size_t chunk_bytes)
{
    in->streamed = true;
    in->leader = leader;
    in->n_chunks = n_chunks;
    in->chunk_bytes = chunk_bytes;
    if (n_chunks < 1) {
        set_error(g, "streamed initializer %s: needs a producer and at least one chunk (got %lld)",
                  safe(in->name), (long long)n_chunks);
        return false;
    }
    if (chunk_bytes && (uint64_t)n_chunks > UINT64_MAX / chunk_bytes) {
        set_error(g, "streamed initializer %s: %lld chunks of %zu bytes overflow",
                  safe(in->name), (long long)n_chunks, chunk_bytes);
        return false;
    }
    in->nbytes = (uint64_t)n_chunks * chunk_bytes;
    return true;
}

void graph_add_streamed_initializer(graph *g, const char *name, int elem_type, int ndim,
                                    const int64_t *dims, int64_t n_chunks, size_t chunk_bytes,
                                    init_producer_fn produce, void *ctx, void (*ctx_free)(void *))
{
    graph_init *in = add_init(g, name, elem_type, ndim, dims);
    if (!in) {
        if (ctx && ctx_free)
            ctx_free(ctx);
        return;
    }
    in->produce = produce;
    in->ctx = ctx;
    in->ctx_free = ctx_free;
    if (!produce) {
        set_error(g, "streamed initializer %s: needs a producer and at least one chunk (got %lld)",
                  safe(name), (long long)n_chunks);
        return;
    }
    set_streamed(g, in, g->n_inits - 1, n_chunks, chunk_bytes);
}

void graph_add_scattered_initializer(graph *g, const char *name, int elem_type, int ndim,
                                     const int64_t *dims, int64_t n_jobs, uint64_t nbytes,
                                     init_scatter_fn produce, void *ctx,
                                     void (*ctx_free)(void *))
{
    graph_init *in = add_init(g, name, elem_type, ndim, dims);
    if (!in) {
        if (ctx && ctx_free)
            ctx_free(ctx);
        return;
    }
    in->produce_scatter = produce;
    in->ctx = ctx;
    in->ctx_free = ctx_free;
    in->streamed = true;
    in->leader = g->n_inits - 1;
    in->n_chunks = n_jobs;
    in->nbytes = nbytes;
    if (!produce || n_jobs < 1)
        set_error(g, "scattered initializer %s: needs a producer and at least one job (got %lld)",
                  safe(name), (long long)n_jobs);
}

void graph_add_streamed_group(graph *g, int n_members, const graph_stream_member *members,
                              int64_t n_chunks, init_group_producer_fn produce, void *ctx,
                              void (*ctx_free)(void *))
{
    if (n_members < 1 || n_members > GRAPH_GROUP_MAX || !members || !produce) {
        set_error(g, "streamed group of %d members%s: needs 1..%d members and a producer",
                  n_members, members && n_members > 0 ? "" : " (no member list)",
                  GRAPH_GROUP_MAX);
        if (ctx && ctx_free)
            ctx_free(ctx);
        return;
    }
    size_t leader = g->n_inits;
    for (int i = 0; i < n_members; i++) {
        const graph_stream_member *m = &members[i];
        graph_init *in = add_init(g, m->name, m->elem_type, m->ndim, m->dims);
        if (!in) {
            if (i == 0 && ctx && ctx_free)
                ctx_free(ctx);
            return;
        }
        if (i == 0) { /* the first member owns ctx from here on (graph_free releases it) */
            in->produce_group = produce;
            in->group_n = n_members;
            in->ctx = ctx;
            in->ctx_free = ctx_free;
        }
        if (!set_streamed(g, in, leader, n_chunks, m->chunk_bytes))
            return;
    }
}

size_t graph_node_count(const graph *g) { return g->n_nodes; }
size_t graph_initializer_count(const graph *g) { return g->n_inits; }

uint64_t graph_initializer_bytes(const graph *g)
{
    uint64_t total = 0;
    for (size_t i = 0; i < g->n_inits; i++)
        total += g->inits[i].nbytes;
    return total;
}
