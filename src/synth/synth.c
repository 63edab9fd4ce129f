/* Synthetic Hub-layout checkpoints: presets, the tensor plan, sharding and the shard files. */
#include "synth/synth.h"

#include <cJSON.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "arch/family.h"
#include "checkpoint/st_writer.h"
#include "synth/synth_internal.h"

#define SYNTH_MAX_LAYERS 512

/* ---- presets: every family's, in FAMILY_LIST order ------------------------------------------ */

/* Preset i over all families, and its family. */
static const synth_preset *preset_at(size_t i, const family_synth **fs)
{
    for (int f = 0; family_at(f); f++) {
        const family_synth *s = family_at(f)->synth;
        if (!s)
            continue;
        if (i < (size_t)s->n_presets) {
            if (fs)
                *fs = s;
            return &s->presets[i];
        }
        i -= (size_t)s->n_presets;
    }
    return NULL;
}

size_t synth_preset_count(void)
{
    size_t n = 0;
    while (preset_at(n, NULL))
        n++;
    return n;
}

#define NPRESETS synth_preset_count()

const synth_preset *synth_preset_at(size_t i) { return preset_at(i, NULL); }
const family_synth *synth_preset_family(size_t i)
{
    const family_synth *fs = NULL;
    return preset_at(i, &fs) ? fs : NULL;
}
const char *synth_preset_name(size_t i) { return i < NPRESETS ? synth_preset_at(i)->name : NULL; }
const char *synth_preset_about(size_t i) { return i < NPRESETS ? synth_preset_at(i)->about : NULL; }

int synth_parse_preset(const char *name, m2o_err *err)
{
    char list[256] = "";
    for (size_t i = 0; i < NPRESETS; i++) {
        if (name && !strcmp(name, synth_preset_at(i)->name))
            return (int)i;
        size_t n = strlen(list);
        snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "", synth_preset_at(i)->name);
    }
    return m2o_fail(err, "unknown synth preset \"%s\"; valid presets: %s", name ? name : "(none)", list);
}

int synth_parse_experts(const char *s, synth_experts *out, m2o_err *err)
{
    if (s && !strcmp(s, "mxfp4"))
        *out = SYNTH_EXPERTS_MXFP4;
    else if (s && !strcmp(s, "bf16"))
        *out = SYNTH_EXPERTS_BF16;
    else if (s && !strcmp(s, "preset"))
        *out = SYNTH_EXPERTS_PRESET;
    else
        return m2o_fail(err, "unknown expert format \"%s\"; valid: mxfp4, bf16, preset", s ? s : "(none)");
    return 0;
}

void synth_usage(FILE *f)
{
    for (size_t i = 0; i < NPRESETS; i++)
        fprintf(f, "  %-16s %s\n", synth_preset_at(i)->name, synth_preset_at(i)->about);
}

/* ---- the tensor plan ------------------------------------------------------------------------ */

typedef struct plan_tensor {
    char name[96];
    st_dtype dtype;
    int ndim;
    int64_t shape[4];
    synth_value_kind kind;
    synth_dist dist;
    uint64_t nbytes;
    int shard;
} plan_tensor;

typedef struct synth_plan {
    const synth_preset *preset;
    const family_synth *family;
    int layers;
    bool mxfp4;
    plan_tensor *t;
    size_t n, cap;
    bool oom;
    int nshards;
    uint64_t total_bytes, params;
} plan;

const synth_preset *synth_plan_preset(const synth_plan *pl) { return pl->preset; }
bool synth_plan_mxfp4(const synth_plan *pl) { return pl->mxfp4; }

void synth_plan_add(plan *pl, st_dtype dt, synth_value_kind kind, synth_dist dist, int ndim,
                    const int64_t *shape, const char *name)
{
    if (pl->oom)
        return;
    if (pl->n == pl->cap) {
        size_t cap = pl->cap ? 2 * pl->cap : 256;
        plan_tensor *t = realloc(pl->t, cap * sizeof *t);
        if (!t) {
            pl->oom = true;
            return;
        }
        pl->t = t;
        pl->cap = cap;
    }
    plan_tensor *t = &pl->t[pl->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dt;
    t->kind = kind;
    t->dist = dist;
    t->ndim = ndim;
    uint64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        t->shape[d] = shape[d];
        numel *= (uint64_t)shape[d];
    }
    t->nbytes = numel * (dt == ST_BF16 ? 2 : 1);
    pl->total_bytes += t->nbytes;
    pl->params += kind == SYNTH_MXFP4_BLOCKS ? 2 * numel : kind == SYNTH_BF16 ? numel : 0;
}

/* "model.layers.{i}.<suffix>" in the caller's buffer nb. */
#define LAYER(suffix) (snprintf(nb, sizeof nb, "model.layers.%d." suffix, i), nb)

void synth_plan_attention(plan *pl, int i, bool biased, bool qk_norm)
{
    const synth_preset *p = pl->preset;
    int64_t H = p->hidden, Q = (int64_t)p->heads * p->head_dim, KV = (int64_t)p->kv_heads * p->head_dim;
    char nb[96];
    SYNTH_PLAN_BF16(pl, NORM, LAYER("input_layernorm.weight"), H);
    SYNTH_PLAN_BF16(pl, NORM, LAYER("post_attention_layernorm.weight"), H);
    SYNTH_PLAN_BF16(pl, WEIGHT, LAYER("self_attn.q_proj.weight"), Q, H);
    SYNTH_PLAN_BF16(pl, WEIGHT, LAYER("self_attn.k_proj.weight"), KV, H);
    SYNTH_PLAN_BF16(pl, WEIGHT, LAYER("self_attn.v_proj.weight"), KV, H);
    SYNTH_PLAN_BF16(pl, WEIGHT, LAYER("self_attn.o_proj.weight"), H, Q);
    if (biased) {
        SYNTH_PLAN_BF16(pl, WEIGHT, LAYER("self_attn.q_proj.bias"), Q);
        SYNTH_PLAN_BF16(pl, WEIGHT, LAYER("self_attn.k_proj.bias"), KV);
        SYNTH_PLAN_BF16(pl, WEIGHT, LAYER("self_attn.v_proj.bias"), KV);
        SYNTH_PLAN_BF16(pl, WEIGHT, LAYER("self_attn.o_proj.bias"), H);
    }
    if (qk_norm) {
        SYNTH_PLAN_BF16(pl, NORM, LAYER("self_attn.q_norm.weight"), (int64_t)p->head_dim);
        SYNTH_PLAN_BF16(pl, NORM, LAYER("self_attn.k_norm.weight"), (int64_t)p->head_dim);
    }
}

/* Module order, as transformers' save_pretrained walks the state dict when it cuts shards. */
static void plan_tensors(plan *pl)
{
    const synth_preset *p = pl->preset;
    int64_t H = p->hidden, V = p->vocab;
    SYNTH_PLAN_BF16(pl, WEIGHT, "model.embed_tokens.weight", V, H);
    for (int i = 0; i < pl->layers; i++)
        pl->family->plan_layer(pl, i);
    SYNTH_PLAN_BF16(pl, NORM, "model.norm.weight", H);
    SYNTH_PLAN_BF16(pl, WEIGHT, "lm_head.weight", V, H);
}

/* Greedy cut like transformers: start a new shard when the next tensor would overflow it. */
static void assign_shards(plan *pl, uint64_t shard_bytes)
{
    uint64_t cur = 0;
    int shard = 0;
    for (size_t k = 0; k < pl->n; k++) {
        if (cur > 0 && cur + pl->t[k].nbytes > shard_bytes) {
            shard++;
            cur = 0;
        }
        pl->t[k].shard = shard;
        cur += pl->t[k].nbytes;
    }
    pl->nshards = shard + 1;
}

static int build_plan(const synth_opts *o, plan *pl, m2o_err *err)
{
    memset(pl, 0, sizeof *pl);
    int idx = synth_parse_preset(o->preset, err);
    if (idx < 0)
        return -1;
    const synth_preset *p = synth_preset_at((size_t)idx);
    const family_synth *fs = synth_preset_family((size_t)idx);
    if (!o->out_dir || !o->out_dir[0])
        return m2o_fail(err, "synth: no output directory given");
    if (o->num_layers < 0 || o->num_layers > SYNTH_MAX_LAYERS)
        return m2o_fail(err, "synth: --layers %d is out of range (1..%d, 0 = the preset's %d)",
                        o->num_layers, SYNTH_MAX_LAYERS, p->layers);
    if (o->experts == SYNTH_EXPERTS_MXFP4 && !fs->mxfp4)
        return m2o_fail(err, "synth: MXFP4 experts exist only for gpt-oss presets; %s has BF16 "
                        "experts (use --experts bf16 or leave it out)", p->name);
    if ((unsigned)o->experts > SYNTH_EXPERTS_BF16)
        return m2o_fail(err, "synth: unknown expert format %d", (int)o->experts);
    pl->preset = p;
    pl->family = fs;
    pl->layers = o->num_layers ? o->num_layers : p->layers;
    pl->mxfp4 = fs->mxfp4 && o->experts != SYNTH_EXPERTS_BF16;
    plan_tensors(pl);
    if (pl->oom) {
        free(pl->t);
        return m2o_fail(err, "synth: out of memory planning %s", p->name);
    }
    assign_shards(pl, o->shard_bytes ? o->shard_bytes : SYNTH_DEFAULT_SHARD_BYTES);
    return 0;
}

int synth_describe(const synth_opts *o, synth_summary *out, m2o_err *err)
{
    plan pl;
    if (build_plan(o, &pl, err))
        return -1;
    *out = (synth_summary){.num_layers = pl.layers, .num_shards = pl.nshards, .num_tensors = pl.n,
                           .num_params = pl.params, .tensor_bytes = pl.total_bytes};
    free(pl.t);
    return 0;
}

/* ---- writing -------------------------------------------------------------------------------- */

static void shard_name(const plan *pl, int shard, char *out, size_t cap)
{
    if (pl->nshards == 1)
        snprintf(out, cap, "model.safetensors");
    else if (pl->preset->zero_based_shards)
        snprintf(out, cap, "model-%05d-of-%05d.safetensors", shard, pl->nshards - 1);
    else
        snprintf(out, cap, "model-%05d-of-%05d.safetensors", shard + 1, pl->nshards);
}

typedef struct shard_ctx {
    const plan *pl;
    const synth_tables *tables;
    uint64_t seed;
    const plan_tensor *const *order; /* declaration index → tensor */
} shard_ctx;

static int fill_tensor(void *ctx, size_t index, uint64_t offset, uint8_t *buf, size_t len,
                       m2o_err *err)
{
    const shard_ctx *c = ctx;
    const plan_tensor *t = c->order[index];
    synth_values v = {.kind = t->kind, .table = c->tables->bf16[t->dist],
                      .key = synth_tensor_key(c->seed, t->name)};
    synth_fill(&v, offset, buf, len);
    return 0;
}

/* Within a file: wider dtypes first, then by name (the order safetensors' own writer uses). */
static int cmp_in_shard(const void *a, const void *b)
{
    const plan_tensor *x = *(const plan_tensor *const *)a, *y = *(const plan_tensor *const *)b;
    size_t wx = x->dtype == ST_BF16 ? 2 : 1, wy = y->dtype == ST_BF16 ? 2 : 1;
    if (wx != wy)
        return wx > wy ? -1 : 1;
    return strcmp(x->name, y->name);
}

typedef struct shard_progress {
    const synth_opts *o;
    const char *file;
    uint64_t base, total, header;  /* tensor bytes before this shard; all; this shard's header */
} shard_progress;

/* st_writer counts file bytes; synth reports tensor bytes over all shards. */
static void report_shard_progress(void *ctx, uint64_t done, uint64_t total)
{
    const shard_progress *p = ctx;
    uint64_t data = done > p->header ? done - p->header : 0;
    (void)total;
    p->o->progress(p->o->progress_ctx, p->file, p->base + data, p->total);
}

static int write_shard(const synth_opts *o, const plan *pl, const synth_tables *tables, int shard,
                       const plan_tensor **order, uint64_t *done, m2o_err *err)
{
    size_t n = 0;
    for (size_t k = 0; k < pl->n; k++)
        if (pl->t[k].shard == shard)
            order[n++] = &pl->t[k];
    qsort(order, n, sizeof *order, cmp_in_shard);

    char name[64], path[4200];
    shard_name(pl, shard, name, sizeof name);
    snprintf(path, sizeof path, "%s/%s", o->out_dir, name);
    st_writer *w;
    if (st_writer_open(path, o->threads, &w, err))
        return -1;
    if (!o->cached_io)
        st_writer_use_direct_io(w);
    int rc = st_writer_metadata(w, "format", "pt", err);
    for (size_t k = 0; k < n && !rc; k++)
        rc = st_writer_declare(w, order[k]->name, order[k]->dtype, order[k]->ndim, order[k]->shape, err);
    if (!rc)
        rc = st_writer_begin_data(w, err);
    shard_ctx ctx = {.pl = pl, .tables = tables, .seed = o->seed, .order = order};
    shard_progress prog = {.o = o, .file = name, .base = *done, .total = pl->total_bytes,
                           .header = 8 + st_writer_header_len(w)};
    if (!rc && !o->sparse)
        rc = st_writer_fill_all(w, fill_tensor, &ctx, o->progress ? report_shard_progress : NULL, &prog, err);
    if (!rc && o->sparse)
        rc = st_writer_skip(w, st_writer_data_len(w), err);
    if (rc) {
        st_writer_abort(w);
        return -1;
    }
    *done += st_writer_data_len(w);
    if (o->progress)
        o->progress(o->progress_ctx, name, *done, pl->total_bytes);
    return st_writer_finish(w, err);
}

static int cmp_plan_names(const void *a, const void *b)
{
    return strcmp((*(const plan_tensor *const *)a)->name, (*(const plan_tensor *const *)b)->name);
}

static int write_index(const synth_opts *o, const plan *pl, m2o_err *err)
{
    const plan_tensor **sorted = m2o_malloc(pl->n * sizeof *sorted, err);
    if (!sorted)
        return -1;
    for (size_t k = 0; k < pl->n; k++)
        sorted[k] = &pl->t[k];
    qsort(sorted, pl->n, sizeof *sorted, cmp_plan_names);
    cJSON *j = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(j, "metadata");
    cJSON_AddNumberToObject(meta, "total_size", (double)pl->total_bytes); /* exact below 2^53 */
    cJSON *map = cJSON_AddObjectToObject(j, "weight_map");
    for (size_t k = 0; k < pl->n; k++) {
        char name[64];
        shard_name(pl, sorted[k]->shard, name, sizeof name);
        cJSON_AddStringToObject(map, sorted[k]->name, name);
    }
    free(sorted);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text)
        return m2o_fail(err, "out of memory building %s/model.safetensors.index.json", o->out_dir);
    int rc = synth_write_text(o->out_dir, "model.safetensors.index.json", text, err);
    free(text);
    return rc;
}

static int write_small_files(const synth_opts *o, const plan *pl, m2o_err *err)
{
    char marker[256];
    snprintf(marker, sizeof marker, "written by moe2onnx synth: preset %s, %d layers, %s experts, "
             "seed %" PRIu64 "%s\n", pl->preset->name, pl->layers, pl->mxfp4 ? "mxfp4" : "bf16",
             o->seed, o->sparse ? ", sparse (all tensor data zero)" : "");
    if (synth_prepare_dir(o->out_dir, marker, err) ||
        synth_write_config(pl->preset, pl->family, pl->layers, pl->mxfp4, o->out_dir, err) ||
        synth_write_generation_config(pl->preset, o->out_dir, err) ||
        synth_write_tokenizer(pl->preset, o->out_dir, err))
        return -1;
    return pl->nshards > 1 ? write_index(o, pl, err) : 0;
}

int synth_write(const synth_opts *o, m2o_err *err)
{
    plan pl;
    if (build_plan(o, &pl, err))
        return -1;
    synth_tables *tables = NULL;
    const plan_tensor **order = m2o_malloc(pl.n * sizeof *order, err);
    int rc = order ? 0 : -1;
    if (!rc)
        rc = write_small_files(o, &pl, err);
    if (!rc && !o->sparse)
        rc = synth_tables_create(&tables, err);
    uint64_t done = 0;
    for (int s = 0; s < pl.nshards && !rc; s++)
        rc = write_shard(o, &pl, tables, s, order, &done, err);
    free(tables);
    free(order);
    free(pl.t);
    return rc;
}
