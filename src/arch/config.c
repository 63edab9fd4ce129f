/* config.json (+ generation_config.json) → model_desc: the fields every family has, RoPE, token
 * ids and generation defaults here; the family's own fields through its table entry
 * (family->parse_config, in src/arch/<family>.c). Defaults follow transformers'
 * configuration_*.py; fields that fix tensor shapes are required instead (a default sized for some
 * other model would only fail later, less clearly). */
#include "arch/model_desc.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arch/config_fields.h"
#include "arch/family.h"
#include "common/json_names.h"

#define MAX_CONFIG_BYTES (16u * 1024 * 1024)

const char *arch_name(const model_desc *d)
{
    return d->family ? d->family->name : "?";
}

/* ---------- token ids ---------- */

/* A token id: integer >= 0; explicit null means "none" (-1). Only touches *out when the key is
 * present, so generation_config.json can override config.json. */
static int get_token(const cfg_src *s, const char *key, bool null_overrides, int64_t *out)
{
    const cJSON *j = s->obj ? cJSON_GetObjectItemCaseSensitive(s->obj, key) : NULL;
    if (!j)
        return 0;
    if (cJSON_IsNull(j)) {
        if (null_overrides)
            *out = -1;
        return 0;
    }
    if (!cfg_json_integer(j, 0, 9007199254740992.0))
        return cfg_wrong_type(s, key, "a non-negative integer token id or null", j);
    *out = (int64_t)j->valuedouble;
    return 0;
}

/* eos_token_id: an id or a list of ids. */
static int get_eos(const cfg_src *s, bool null_overrides, model_desc *d)
{
    const cJSON *j = s->obj ? cJSON_GetObjectItemCaseSensitive(s->obj, "eos_token_id") : NULL;
    if (!j)
        return 0;
    if (cJSON_IsNull(j)) {
        if (null_overrides)
            d->n_eos = 0;
        return 0;
    }
    const cJSON *one = cJSON_IsArray(j) ? j->child : j;
    int n = 0;
    int64_t ids[MD_MAX_EOS];
    for (; one; one = cJSON_IsArray(j) ? one->next : NULL) {
        if (!cfg_json_integer(one, 0, 9007199254740992.0))
            return cfg_wrong_type(s, "eos_token_id", "a token id or a list of token ids", one);
        if (n == MD_MAX_EOS)
            return m2o_fail(s->err, "%s: \"%seos_token_id\" lists more than %d ids — this tool keeps "
                            "at most %d", s->what, s->scope, MD_MAX_EOS, MD_MAX_EOS);
        ids[n++] = (int64_t)one->valuedouble;
    }
    memset(d->eos_token_ids, 0, sizeof d->eos_token_ids);
    memcpy(d->eos_token_ids, ids, (size_t)n * sizeof ids[0]);
    d->n_eos = n;
    return 0;
}

/* ---------- RoPE ---------- */

/* YaRN's fields (rope_type "yarn" given in the config) with transformers' defaults. */
static int parse_yarn(const cfg_src *s, const cfg_src *rs, model_desc *d)
{
    if (cfg_get_int(rs, "original_max_position_embeddings", false, d->max_position_embeddings,
                    &d->rope_original_max_position))
        return -1;
    if (d->rope_original_max_position < 1)
        return m2o_fail(s->err, "%s: \"%soriginal_max_position_embeddings\" must be positive",
                        s->what, rs->scope);
    /* transformers: a missing factor is max_position_embeddings / original */
    double def_factor = (double)d->max_position_embeddings / d->rope_original_max_position;
    double bf, bs;
    if (cfg_get_double(rs, "factor", def_factor, &d->rope_factor) ||
        cfg_get_double(rs, "beta_fast", 0.0, &bf) || cfg_get_double(rs, "beta_slow", 0.0, &bs) ||
        cfg_get_bool(rs, "truncate", true, &d->yarn_truncate) ||
        cfg_get_double(rs, "attention_factor", 0.0, &d->yarn_attention_factor))
        return -1;
    /* `or 32` / `or 1` in transformers: 0 means the default too */
    d->yarn_beta_fast = bf != 0.0 ? bf : 32.0;
    d->yarn_beta_slow = bs != 0.0 ? bs : 1.0;
    return 0;
}

/* rope_type and its fields; builtin_yarn: the family's YaRN for a config without rope settings. */
static int parse_rope_type(const cfg_src *s, const cfg_src *rs, bool builtin_yarn, model_desc *d)
{
    const char *type = "default";
    if (cfg_field(rs, "rope_type") ? cfg_get_string(rs, "rope_type", "default", &type)
                                   : cfg_get_string(rs, "type", "default", &type))
        return -1;
    if (builtin_yarn)
        type = "yarn";
    d->rope_factor = 1.0;
    d->yarn_beta_fast = 32.0;
    d->yarn_beta_slow = 1.0;
    d->yarn_truncate = true;
    d->yarn_attention_factor = 0.0;
    d->rope_original_max_position = d->max_position_embeddings;
    if (!strcmp(type, "default")) {
        d->rope_type = ROPE_DEFAULT;
        return 0;
    }
    if (!strcmp(type, "linear")) {
        d->rope_type = ROPE_LINEAR;
        if (!cfg_field(rs, "factor"))
            return cfg_missing(rs, "factor");
        return cfg_get_double(rs, "factor", 1.0, &d->rope_factor);
    }
    if (strcmp(type, "yarn"))
        return m2o_fail(s->err, "%s: rope_type \"%s\" is not supported (supported: default, linear, "
                        "yarn)", s->what, type);
    d->rope_type = ROPE_YARN;
    if (!builtin_yarn)
        return parse_yarn(s, rs, d);
    d->rope_factor = 32.0;
    d->yarn_truncate = false;
    d->rope_original_max_position = 4096;
    return 0;
}

static int check_rope(const cfg_src *s, const model_desc *d)
{
    if (!(d->rope_theta > 0))
        return m2o_fail(s->err, "%s: rope_theta must be positive — fix config.json", s->what);
    if (!(d->partial_rotary_factor > 0 && d->partial_rotary_factor <= 1))
        return m2o_fail(s->err, "%s: partial_rotary_factor %g is outside (0, 1] — fix config.json",
                        s->what, d->partial_rotary_factor);
    int rot = (int)(d->head_dim * d->partial_rotary_factor);
    if (rot < 2 || rot % 2)
        return m2o_fail(s->err, "%s: head_dim %d × partial_rotary_factor %g gives %d rotary "
                        "dimensions, expected an even number ≥ 2 — fix config.json", s->what,
                        d->head_dim, d->partial_rotary_factor, rot);
    if (d->rope_type != ROPE_DEFAULT && !(d->rope_factor > 0))
        return m2o_fail(s->err, "%s: rope factor must be positive — fix config.json", s->what);
    return 0;
}

static int parse_rope(const cfg_src *s, model_desc *d)
{
    /* v5 style keeps everything in rope_parameters; Hub style has rope_theta / rope_scaling at
     * the top level. rope_parameters wins when both are present. */
    const char *rkey = cfg_field(s, "rope_parameters") ? "rope_parameters" : "rope_scaling";
    const cJSON *r = cfg_field(s, rkey);
    if (r && !cJSON_IsObject(r))
        return cfg_wrong_type(s, rkey, "an object", r);
    char scope[96];
    snprintf(scope, sizeof scope, "%s%s.", s->scope, rkey);
    cfg_src rs = {r, s->what, scope, s->err};
    if (cfg_check_unique_keys(&rs))
        return -1;
    for (const cJSON *e = r ? r->child : NULL; e; e = e->next)
        if (cJSON_IsObject(e))
            return m2o_fail(s->err, "%s: \"%s\" holds per-layer-type settings (\"%s\"), which %s "
                            "models do not use — fix config.json", s->what, rkey, e->string,
                            arch_name(d));
    const family_defaults *def = d->family->defaults;
    const cfg_src *theta_src = cfg_field(&rs, "rope_theta") ? &rs : s;
    const cfg_src *prf_src = cfg_field(&rs, "partial_rotary_factor") ? &rs : s;
    if (cfg_get_double(theta_src, "rope_theta", def->rope_theta, &d->rope_theta) ||
        cfg_get_double(prf_src, "partial_rotary_factor", def->partial_rotary_factor,
                       &d->partial_rotary_factor))
        return -1;
    /* gpt-oss without any rope settings gets transformers' built-in YaRN */
    if (parse_rope_type(s, &rs, def->builtin_yarn && !r, d))
        return -1;
    return check_rope(s, d);
}

/* ---------- common fields ---------- */

static int parse_experts(const cfg_src *s, model_desc *d)
{
    int a = 0, b = 0;
    if (cfg_get_size(s, "num_local_experts", false, 0, &a) || cfg_get_size(s, "num_experts", false, 0, &b))
        return -1;
    if (a && b && a != b)
        return m2o_fail(s->err, "%s: num_local_experts (%d) and num_experts (%d) disagree — fix "
                        "config.json", s->what, a, b);
    if (!a && !b)
        return cfg_missing(s, d->family->defaults->num_experts_key);
    d->num_experts = a ? a : b;
    /* gpt-oss's original config names it experts_per_token */
    const char *kkey = !cfg_field(s, "num_experts_per_tok") && cfg_field(s, "experts_per_token")
                           ? "experts_per_token" : "num_experts_per_tok";
    if (cfg_get_size(s, kkey, true, 0, &d->top_k))
        return -1;
    if (d->top_k > d->num_experts)
        return m2o_fail(s->err, "%s: %s (%d) exceeds the number of experts (%d) — fix config.json",
                        s->what, kkey, d->top_k, d->num_experts);
    return 0;
}

static int parse_common(const cfg_src *s, model_desc *d)
{
    const family_defaults *def = d->family->defaults;
    if (cfg_get_size(s, "hidden_size", true, 0, &d->hidden_size) ||
        cfg_get_size(s, "num_hidden_layers", true, 0, &d->num_layers) ||
        cfg_get_size(s, "num_attention_heads", true, 0, &d->num_heads) ||
        cfg_get_size(s, "num_key_value_heads", true, 0, &d->num_kv_heads) ||
        cfg_get_size(s, "vocab_size", true, 0, &d->vocab_size))
        return -1;
    if (d->num_layers > MD_MAX_LAYERS)
        return m2o_fail(s->err, "%s: num_hidden_layers is %d; this tool handles at most %d layers",
                        s->what, d->num_layers, MD_MAX_LAYERS);
    if (d->num_heads % d->num_kv_heads)
        return m2o_fail(s->err, "%s: num_attention_heads (%d) is not a multiple of "
                        "num_key_value_heads (%d) — fix config.json", s->what, d->num_heads,
                        d->num_kv_heads);
    /* transformers' head_dim default: the family's, or hidden / heads */
    int def_head = def->head_dim ? def->head_dim : d->hidden_size / d->num_heads;
    const cJSON *hd = cJSON_GetObjectItemCaseSensitive(s->obj, "head_dim");
    if (hd && cJSON_IsNull(hd)) /* explicit null: derived, as transformers' __post_init__ does */
        def_head = d->hidden_size / d->num_heads;
    if (cfg_get_size(s, "head_dim", false, def_head, &d->head_dim))
        return -1;
    if (d->head_dim < 1)
        return m2o_fail(s->err, "%s: head_dim cannot be derived (hidden_size %d / %d heads) — add "
                        "head_dim to config.json", s->what, d->hidden_size, d->num_heads);
    if (cfg_get_double(s, "rms_norm_eps", def->rms_norm_eps, &d->rms_norm_eps) ||
        cfg_get_int(s, "max_position_embeddings", false, def->max_position_embeddings,
                    &d->max_position_embeddings) ||
        cfg_get_bool(s, "tie_word_embeddings", false, &d->tie_word_embeddings))
        return -1;
    if (!(d->rms_norm_eps > 0))
        return m2o_fail(s->err, "%s: rms_norm_eps must be positive — fix config.json", s->what);
    if (d->max_position_embeddings < 1)
        return m2o_fail(s->err, "%s: max_position_embeddings must be positive — fix config.json",
                        s->what);
    d->context_length = d->max_position_embeddings;
    return parse_experts(s, d);
}

static int parse_tokens(const cfg_src *s, bool overrides, model_desc *d)
{
    return get_token(s, "bos_token_id", overrides, &d->bos_token_id) ||
           get_token(s, "pad_token_id", overrides, &d->pad_token_id) || get_eos(s, overrides, d)
               ? -1 : 0;
}

/* The family of config.json's model_type; for a vision-language type, *text becomes its
 * text_config and the tensor prefix model.language_model. */
static int select_family(const cJSON *root, cfg_src *text, model_desc *d)
{
    char supported[256];
    family_supported_types(supported, sizeof supported);
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!cJSON_IsString(mt))
        return m2o_fail(text->err, "%s: \"model_type\" is %s, expected one of the supported model "
                        "types (%s)", text->what, mt ? json_type_name(mt) : "missing", supported);
    const char *t = mt->valuestring;
    bool vl = false;
    d->family = family_find(t, &vl);
    if (!d->family)
        return m2o_fail(text->err, "%s: model_type \"%.60s\" is not supported (supported: %s)",
                        text->what, t, supported);
    snprintf(d->model_type, sizeof d->model_type, "%s", t);
    snprintf(d->prefix, sizeof d->prefix, vl ? "model.language_model." : "model.");
    if (!vl)
        return 0;
    /* vision-language checkpoint: the text decoder's config and tensors sit one level down */
    text->obj = cJSON_GetObjectItemCaseSensitive(root, "text_config");
    text->scope = "text_config.";
    if (!cJSON_IsObject(text->obj))
        return m2o_fail(text->err, "%s: model_type %s needs a \"text_config\" object, found %s — "
                        "pass the model's own config.json", text->what, t,
                        text->obj ? json_type_name(text->obj) : "none");
    return cfg_check_unique_keys(text);
}

static int parse_config_root(const cJSON *root, const char *what, model_desc *d, m2o_err *err)
{
    cfg_src top = {root, what, "", err};
    if (!cJSON_IsObject(root))
        return m2o_fail(err, "%s: config is %s, expected a JSON object — pass the model's "
                        "config.json", what, json_type_name(root));
    if (cfg_check_unique_keys(&top))
        return -1;
    cfg_src text = top;
    if (select_family(root, &text, d))
        return -1;

    if (parse_common(&text, d) || d->family->parse_config(&text, d) || parse_rope(&text, d))
        return -1;

    d->bos_token_id = d->pad_token_id = -1;
    if (parse_tokens(&text, true, d))
        return -1;
    if (text.obj != root) { /* VL: top-level values win over the text sub-config's */
        if (parse_tokens(&top, false, d) ||
            cfg_get_bool(&top, "tie_word_embeddings", d->tie_word_embeddings, &d->tie_word_embeddings))
            return -1;
    }
    return 0;
}

static int parse_generation(const cJSON *root, const char *what, model_desc *d, m2o_err *err)
{
    cfg_src g = {root, what, "", err};
    if (!cJSON_IsObject(root))
        return m2o_fail(err, "%s: generation config is %s, expected a JSON object — fix or remove "
                        "generation_config.json", what, json_type_name(root));
    if (cfg_check_unique_keys(&g) || parse_tokens(&g, false, d) ||
        cfg_get_bool(&g, "do_sample", d->do_sample, &d->do_sample) ||
        cfg_get_int(&g, "top_k", false, d->top_k_sampling, &d->top_k_sampling) ||
        cfg_get_double(&g, "top_p", d->top_p, &d->top_p) ||
        cfg_get_double(&g, "temperature", d->temperature, &d->temperature))
        return -1;
    if (d->top_k_sampling < 0 || !(d->top_p >= 0 && d->top_p <= 1) || !(d->temperature >= 0))
        return m2o_fail(err, "%s: top_k must be ≥ 0, top_p within [0, 1] and temperature ≥ 0 — fix "
                        "generation_config.json", what);
    return 0;
}

static cJSON *parse_json(const char *text, const char *what, m2o_err *err)
{
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(text, &end, 1);
    if (!j)
        m2o_fail(err, "%s: not valid JSON (error near byte %lld) — fix or re-download the file", what,
                 end && end >= text ? (long long)(end - text) : -1LL);
    return j;
}

static int parse_all(const char *config_json, const char *what, const char *generation_json,
                     const char *gen_what, model_desc *out, m2o_err *err)
{
    memset(out, 0, sizeof *out);
    cJSON *root = parse_json(config_json, what, err);
    if (!root)
        return -1;
    int rc = parse_config_root(root, what, out, err);
    cJSON_Delete(root);
    if (rc)
        return -1;
    out->do_sample = false;
    out->top_k_sampling = 50;
    out->top_p = 1.0;
    out->temperature = 1.0;
    if (generation_json) {
        cJSON *g = parse_json(generation_json, gen_what, err);
        if (!g)
            return -1;
        rc = parse_generation(g, gen_what, out, err);
        cJSON_Delete(g);
    }
    return rc;
}

int config_parse(const char *config_json, const char *generation_json, const char *what,
                 model_desc *out, m2o_err *err)
{
    return parse_all(config_json, what, generation_json, "generation_config.json", out, err);
}

/* 0 = read, 1 = absent (only when optional), -1 = error. */
static int read_json_file(const char *path, bool optional, char **out, m2o_err *err)
{
    *out = NULL;
    /* O_NONBLOCK: opening a FIFO must not wait forever for a writer; fstat then rejects it. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (optional && errno == ENOENT)
            return 1;
        return m2o_fail(err, "%s: cannot open: %s — pass the checkpoint folder that holds config.json",
                        path, strerror(errno));
    }
    struct stat st;
    FILE *f = NULL;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
        f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return m2o_fail(err, "%s: not a regular file — pass the checkpoint folder that holds "
                             "config.json", path);
    }
    char *buf = malloc(MAX_CONFIG_BYTES + 1);
    size_t n = buf ? fread(buf, 1, MAX_CONFIG_BYTES + 1, f) : 0;
    int bad = !buf || ferror(f);
    fclose(f);
    if (bad || n > MAX_CONFIG_BYTES) {
        free(buf);
        return m2o_fail(err, "%s: %s", path, bad ? "read error" : "larger than 16 MB — not a config file");
    }
    if (memchr(buf, 0, n)) {
        free(buf);
        return m2o_fail(err, "%s: holds a NUL byte — not a JSON config file", path);
    }
    buf[n] = 0;
    *out = buf;
    return 0;
}

int config_load(const char *dir, model_desc *out, m2o_err *err)
{
    size_t n = strlen(dir) + 32;
    char *cpath = malloc(n), *gpath = malloc(n);
    char *ctext = NULL, *gtext = NULL;
    int rc = -1;
    if (!cpath || !gpath) {
        m2o_fail(err, "out of memory");
        goto out;
    }
    snprintf(cpath, n, "%s/config.json", dir);
    snprintf(gpath, n, "%s/generation_config.json", dir);
    if (read_json_file(cpath, false, &ctext, err) || read_json_file(gpath, true, &gtext, err) < 0)
        goto out;
    rc = parse_all(ctext, cpath, gtext, gpath, out, err);
out:
    free(ctext);
    free(gtext);
    free(cpath);
    free(gpath);
    return rc;
}
