#include "graph/builder.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

gname gname_fmt(const char *fmt, ...)
{
    gname n;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(n.s, sizeof n.s, fmt, ap);
    va_end(ap);
    return n;
}

gname gname_out(const char *node, int k)
{
    return gname_fmt("%s/output_%d", node, k);
}

/* The quantization request of an export_opts built without options_validate: what -p says, with
 * the int4_* fields (symmetric MLAS int4, every MatMul role quantized). */
static void legacy_quant(export_opts *o)
{
    quant_config *q = &o->quant;
    bool int4 = o->precision == PREC_INT4;
    q->weights_type = int4 ? QTYPE_INT4 : QTYPE_NONE;
    q->block_size = o->int4_block_size;
    q->symmetric = true;
    q->method = QMETHOD_DEFAULT;
    q->accuracy_level = o->int4_accuracy_level;
    q->quantize_matmul = true;
    q->moe_type = !int4 ? QTYPE_NONE
                  : o->moe_quant_type == MOE_QUANT_MXFP4 ? QTYPE_MXFP4
                  : o->moe_quant_type == MOE_QUANT_INT8  ? QTYPE_INT8 : QTYPE_INT4;
    q->filled = true;
}

int gb_init(gb *b, graph *g, const model_desc *md, const st_checkpoint *ck, const export_opts *o,
            m2o_err *err)
{
    memset(b, 0, sizeof *b);
    b->g = g;
    b->md = md;
    b->ck = ck;
    b->o = o;
    b->q = *o;
    if (!o->quant.filled)
        legacy_quant(&b->q);
    b->io = o->io_dtype;
    if (ck && ckpt_count(ck) && !(b->used = m2o_calloc(ckpt_count(ck), sizeof *b->used, err)))
        return -1;
    if (b->io != ONNX_FLOAT && b->io != ONNX_FLOAT16 && b->io != ONNX_BFLOAT16)
        return m2o_fail(err, "export options: io dtype %d is not float32, float16 or bfloat16 "
                             "(the command line must resolve io_dtype)", b->io);
    return 0;
}

void gb_free(gb *b)
{
    for (int i = 0; i < b->n_consts; i++)
        free(b->consts[i]);
    free(b->consts);
    b->consts = NULL;
    b->n_consts = b->cap_consts = 0;
    free(b->used);
    b->used = NULL;
}

graph_node *gb_node(gb *b, const char *op, const char *domain, const char *name, int n_in,
                    const char *const *in, int n_out)
{
    gname outs[8];
    const char *out_p[8];
    if (n_out > 8)
        n_out = 8;
    for (int k = 0; k < n_out; k++) {
        outs[k] = gname_out(name, k);
        out_p[k] = outs[k].s;
    }
    return graph_add_node(b->g, op, domain, name, n_in, in, n_out, out_p);
}

/* Remembers a constant's name; false when it was already there. Allocation failure only means
 * the constant may be added twice, which graph_check reports by name. */
static bool remember_const(gb *b, const char *name)
{
    for (int i = 0; i < b->n_consts; i++)
        if (!strcmp(b->consts[i], name))
            return false;
    if (b->n_consts == b->cap_consts) {
        int cap = b->cap_consts ? 2 * b->cap_consts : 16;
        char **p = realloc(b->consts, (size_t)cap * sizeof *p);
        if (!p)
            return true;
        b->consts = p;
        b->cap_consts = cap;
    }
    char *copy = strdup(name);
    if (copy)
        b->consts[b->n_consts++] = copy;
    return true;
}

gname gb_const_i64(gb *b, int ndim, int n, const int64_t *vals)
{
    gname name;
    int off = snprintf(name.s, sizeof name.s, "/model/constants/INT64/%s", ndim ? "[" : "");
    for (int i = 0; i < n && off < (int)sizeof name.s; i++)
        off += snprintf(name.s + off, sizeof name.s - (size_t)off, "%s%lld", i ? ", " : "",
                        (long long)vals[i]);
    if (ndim && off < (int)sizeof name.s)
        snprintf(name.s + off, sizeof name.s - (size_t)off, "]");
    if (remember_const(b, name.s)) {
        int64_t dims[1] = {n};
        graph_add_initializer(b->g, name.s, ONNX_INT64, ndim ? 1 : 0, dims, vals,
                              (size_t)n * sizeof(int64_t));
    }
    return name;
}

gname gb_const_i64_scalar(gb *b, int64_t v)
{
    return gb_const_i64(b, 0, 1, &v);
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t off = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (off < n)
        snprintf(buf + off, n - off, "]");
}

int gb_tensor(const gb *b, const char *name, int ndim, const int64_t *shape, bool required,
              const st_tensor **out, m2o_err *err)
{
    *out = NULL;
    const st_tensor *t = ckpt_find(b->ck, name);
    if (!t) {
        if (!required)
            return 0;
        char want[160];
        shape_str(want, sizeof want, ndim, shape);
        return m2o_fail(err, "checkpoint: tensor %s %s is missing (the %s architecture needs "
                             "it; is this a complete %s checkpoint?)",
                        name, want, b->md->model_type, b->md->model_type);
    }
    long i = ckpt_index(b->ck, name);
    if (b->used && i >= 0)
        b->used[i] = true;
    return ckpt_expect(b->ck, name, ndim, shape, out, err);
}

int gb_tensorf(const gb *b, const st_tensor **out, m2o_err *err, bool required, int ndim,
               const int64_t *shape, const char *fmt, ...)
{
    char name[GNAME_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return gb_tensor(b, name, ndim, shape, required, out, err);
}

gname gb_cast(gb *b, const char *name, const char *x, int to)
{
    const char *in[1] = {x};
    node_attr_int(gb_node(b, "Cast", NULL, name, 1, in, 1), "to", to);
    return gname_out(name, 0);
}

size_t gb_io_size(const gb *b)
{
    return onnx_dtype_size(b->io);
}
