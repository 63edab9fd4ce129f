/* The graph's quantization error registry (onnx/quant_stats.h). */
#include "onnx/quant_stats.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx/graph_internal.h"

struct graph_qstats {
    struct graph_qstats *next;
    char name[256];
    qerr_format fmt;
    int64_t n_chunks;
    qerr_acc slots[]; /* n_chunks */
};

void graph_enable_quant_stats(graph *g, bool on)
{
    g->qstats_on = on;
}

qerr_acc *graph_add_quant_stats(graph *g, const char *name, const qerr_format *fmt,
                                int64_t n_chunks)
{
    if (!g->qstats_on)
        return NULL;
    if (n_chunks < 1 || (size_t)n_chunks > SIZE_MAX / sizeof(qerr_acc) / 2) {
        g->qstats_incomplete = true;
        return NULL;
    }
    struct graph_qstats *e = calloc(1, sizeof *e + (size_t)n_chunks * sizeof(qerr_acc));
    if (!e) {
        g->qstats_incomplete = true;
        return NULL;
    }
    snprintf(e->name, sizeof e->name, "%s", name);
    e->fmt = *fmt;
    e->n_chunks = n_chunks;
    /* appended, so the table keeps the order the graph declared the tensors in */
    struct graph_qstats **at = &g->qstats;
    while (*at)
        at = &(*at)->next;
    *at = e;
    return e->slots;
}

int graph_quant_stats_collect(const graph *g, quant_stats_table *out, m2o_err *err)
{
    memset(out, 0, sizeof *out);
    out->incomplete = g->qstats_incomplete;
    size_t n = 0;
    for (const struct graph_qstats *e = g->qstats; e; e = e->next)
        n++;
    if (!n)
        return 0;
    out->t = m2o_calloc(n, sizeof *out->t, err);
    if (!out->t)
        return -1;
    for (const struct graph_qstats *e = g->qstats; e; e = e->next) {
        quant_tensor_stats *t = &out->t[out->n];
        memset(t, 0, sizeof *t);
        for (int64_t c = 0; c < e->n_chunks; c++)
            qerr_merge(&t->total, &e->slots[c]);
        if (t->total.n == 0)
            continue; /* nothing was quantized (MXFP4 passthrough) */
        snprintf(t->name, sizeof t->name, "%s", e->name);
        t->fmt = e->fmt;
        out->n++;
    }
    return 0;
}

void quant_stats_table_free(quant_stats_table *t)
{
    free(t->t);
    memset(t, 0, sizeof *t);
}

void graph_quant_stats_free(graph *g)
{
    struct graph_qstats *e = g->qstats;
    while (e) {
        struct graph_qstats *next = e->next;
        free(e);
        e = next;
    }
    g->qstats = NULL;
}

const char *quant_role(const char *name)
{
    if (strstr(name, ".experts.gate_up_proj") || strstr(name, ".experts.fc1"))
        return "experts fc1";
    if (strstr(name, ".experts.down_proj") || strstr(name, ".experts.fc2"))
        return "experts fc2";
    if (strstr(name, ".linear_attn"))
        return "linear attention";
    if (strstr(name, ".attn."))
        return "attention";
    if (strstr(name, ".shared_expert") || strstr(name, ".mlp."))
        return "MLP";
    if (!strncmp(name, "lm_head", 7))
        return "lm_head";
    return "other";
}

static void add_num(cJSON *o, const char *k, double v)
{
    if (isfinite(v))
        cJSON_AddNumberToObject(o, k, v);
    else
        cJSON_AddNullToObject(o, k);
}

void quant_entry_json(cJSON *o, const char *name, const qerr_format *fmt, const qerr_acc *acc)
{
    bool fp4 = fmt->kind == QERR_MXFP4;
    cJSON_AddStringToObject(o, "role", quant_role(name));
    cJSON_AddStringToObject(o, "kind", fp4 ? "mxfp4" : fmt->kind == QERR_FLOAT ? "float" : "int");
    cJSON_AddNumberToObject(o, "bits", fmt->bits);
    cJSON_AddNumberToObject(o, "block_size", fmt->block_size);
    cJSON_AddBoolToObject(o, "symmetric", fmt->symmetric);
    cJSON_AddStringToObject(o, "scale_type", fp4                               ? "e8m0"
                                             : fmt->scale_type == QSCALE_F16  ? "float16"
                                             : fmt->scale_type == QSCALE_BF16 ? "bfloat16"
                                                                              : "float32");
    if (!acc)
        return;
    cJSON_AddNumberToObject(o, "elements", (double)acc->n);
    add_num(o, "rel_rms", qerr_rel_rms(acc));
    add_num(o, "max_abs", acc->max_abs);
}
