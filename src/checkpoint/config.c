/* config.json (+ generation_config.json) → model_desc. Defaults follow transformers'
 * configuration_{gpt_oss,qwen3_moe,qwen2_moe,qwen3_5_moe}.py; fields that fix tensor shapes are
 * required instead (a default sized for some other model would only fail later, less clearly). */
#include "checkpoint/config.h"

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

#define SUPPORTED_TYPES "gpt_oss, qwen3_moe, qwen2_moe, qwen3_5_moe_text, qwen3_5_moe"
#define MAX_CONFIG_BYTES (16u * 1024 * 1024)

const char *arch_name(arch_kind a)
{
    switch (a) {
    case ARCH_GPT_OSS: return "gpt-oss";
    case ARCH_QWEN3_MOE: return "Qwen3-MoE";
    case ARCH_QWEN2_MOE: return "Qwen2-MoE";
    case ARCH_QWEN3_5_MOE: return "Qwen3.5-MoE";
    }
    return "?";
}

/* Where fields are read from, for error messages: file and key prefix ("text_config."). */
typedef struct src {
    const cJSON *obj;
    const char *what;
    const char *scope;
    m2o_err *err;
} src;

static const char *type_name(const cJSON *j)
{
    if (cJSON_IsNull(j)) return "null";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsArray(j)) return "an array";
    if (cJSON_IsObject(j)) return "an object";
    return "an unknown value";
}

/* The value of key, or NULL when absent or null: transformers treats None as "use the default". */
static const cJSON *field(const src *s, const char *key)
{
    const cJSON *j = s->obj ? cJSON_GetObjectItemCaseSensitive(s->obj, key) : NULL;
    return j && !cJSON_IsNull(j) ? j : NULL;
}

static int missing(const src *s, const char *key)
{
    return m2o_fail(s->err, "%s: required field \"%s%s\" is missing — every config.json of this "
                    "model family has it; pass the model's own config.json", s->what, s->scope, key);
}

static int wrong_type(const src *s, const char *key, const char *want, const cJSON *j)
{
    return m2o_fail(s->err, "%s: field \"%s%s\" must be %s, found %s — fix config.json", s->what,
                    s->scope, key, want, type_name(j));
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Python's json keeps the last of duplicate keys and cJSON the first: refuse to guess. Sorted,
 * so a hostile file with many keys costs n log n, not n². */
static int check_unique_keys(const src *s)
{
    size_t n = 0;
    for (const cJSON *a = s->obj ? s->obj->child : NULL; a; a = a->next)
        n++;
    if (n < 2)
        return 0;
    const char **keys = malloc(n * sizeof *keys);
    if (!keys)
        return m2o_fail(s->err, "out of memory reading %s", s->what);
    n = 0;
    for (const cJSON *a = s->obj->child; a; a = a->next)
        keys[n++] = a->string;
    qsort(keys, n, sizeof *keys, cmp_key);
    int rc = 0;
    for (size_t i = 1; i < n && !rc; i++)
        if (!strcmp(keys[i - 1], keys[i]))
            rc = m2o_fail(s->err, "%s: key \"%s%s\" appears twice — fix config.json", s->what,
                          s->scope, keys[i]);
    free(keys);
    return rc;
}

static bool json_integer(const cJSON *j, double lo, double hi)
{
    return cJSON_IsNumber(j) && j->valuedouble == floor(j->valuedouble) && j->valuedouble >= lo &&
           j->valuedouble <= hi;
}

static int get_int(const src *s, const char *key, bool required, int def, int *out)
{
    const cJSON *j = field(s, key);
    if (!j) {
        *out = def;
        return required ? missing(s, key) : 0;
    }
    if (!json_integer(j, INT_MIN, INT_MAX))
        return wrong_type(s, key, "an integer", j);
    *out = (int)j->valuedouble;
    return 0;
}

/* A size: integer >= 1. */
static int get_size(const src *s, const char *key, bool required, int def, int *out)
{
    if (get_int(s, key, required, def, out))
        return -1;
    if (*out < 1 && field(s, key))
        return m2o_fail(s->err, "%s: field \"%s%s\" is %d, expected a positive integer — fix "
                        "config.json", s->what, s->scope, key, *out);
    return 0;
}

static int get_double(const src *s, const char *key, double def, double *out)
{
    const cJSON *j = field(s, key);
    *out = def;
    if (!j)
        return 0;
    if (!cJSON_IsNumber(j))
        return wrong_type(s, key, "a number", j);
    *out = j->valuedouble;
    return 0;
}

static int get_bool(const src *s, const char *key, bool def, bool *out)
{
    const cJSON *j = field(s, key);
    *out = def;
    if (!j)
        return 0;
    if (!cJSON_IsBool(j))
        return wrong_type(s, key, "true or false", j);
    *out = cJSON_IsTrue(j);
    return 0;
}

static int get_string(const src *s, const char *key, const char *def, const char **out)
{
    const cJSON *j = field(s, key);
    *out = def;
    if (!j)
        return 0;
    if (!cJSON_IsString(j))
        return wrong_type(s, key, "a string", j);
    *out = j->valuestring;
    return 0;
}

/* ---------- token ids ---------- */

/* A token id: integer >= 0; explicit null means "none" (-1). Only touches *out when the key is
 * present, so generation_config.json can override config.json. */
static int get_token(const src *s, const char *key, bool null_overrides, int64_t *out)
{
    const cJSON *j = s->obj ? cJSON_GetObjectItemCaseSensitive(s->obj, key) : NULL;
    if (!j)
        return 0;
    if (cJSON_IsNull(j)) {
        if (null_overrides)
            *out = -1;
        return 0;
    }
    if (!json_integer(j, 0, 9007199254740992.0))
        return wrong_type(s, key, "a non-negative integer token id or null", j);
    *out = (int64_t)j->valuedouble;
    return 0;
}

/* eos_token_id: an id or a list of ids. */
static int get_eos(const src *s, bool null_overrides, model_desc *d)
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
        if (!json_integer(one, 0, 9007199254740992.0))
            return wrong_type(s, "eos_token_id", "a token id or a list of token ids", one);
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

/* ---------- layers ---------- */

static int parse_layer_types(const src *s, model_desc *d)
{
    const cJSON *lt = field(s, "layer_types");
    if (!lt)
        return 1; /* caller applies the architecture's default */
    if (!cJSON_IsArray(lt))
        return wrong_type(s, "layer_types", "an array of layer type names", lt);
    int n = cJSON_GetArraySize(lt);
    if (n != d->num_layers)
        return m2o_fail(s->err, "%s: \"%slayer_types\" has %d entries but num_hidden_layers is %d — "
                        "fix config.json", s->what, s->scope, n, d->num_layers);
    int i = 0;
    for (const cJSON *e = lt->child; e; e = e->next, i++) {
        const char *t = cJSON_IsString(e) ? e->valuestring : "";
        /* "attention" / "mamba" are legacy spellings transformers still maps */
        if (!strcmp(t, "full_attention") || !strcmp(t, "attention"))
            d->layer_type[i] = LAYER_FULL_ATTENTION;
        else if (!strcmp(t, "sliding_attention"))
            d->layer_type[i] = LAYER_SLIDING_ATTENTION;
        else if (!strcmp(t, "linear_attention") || !strcmp(t, "mamba"))
            d->layer_type[i] = LAYER_LINEAR_ATTENTION;
        else
            return m2o_fail(s->err, "%s: \"%slayer_types\"[%d] is %s%s%s, expected full_attention, "
                            "sliding_attention or linear_attention", s->what, s->scope, i,
                            cJSON_IsString(e) ? "\"" : type_name(e), t, cJSON_IsString(e) ? "\"" : "");
    }
    return 0;
}

static int check_layer_types(const src *s, const model_desc *d)
{
    for (int i = 0; i < d->num_layers; i++) {
        layer_kind k = d->layer_type[i];
        bool ok = d->arch == ARCH_QWEN3_5_MOE ? k != LAYER_SLIDING_ATTENTION
                                              : k != LAYER_LINEAR_ATTENTION;
        if (!ok)
            return m2o_fail(s->err, "%s: layer %d is %s, which %s models do not have — fix "
                            "layer_types", s->what, i,
                            k == LAYER_LINEAR_ATTENTION ? "linear_attention" : "sliding_attention",
                            arch_name(d->arch));
        if (k == LAYER_SLIDING_ATTENTION && d->sliding_window <= 0)
            return m2o_fail(s->err, "%s: layer %d is sliding_attention but no sliding_window is set "
                            "— fix sliding_window or layer_types", s->what, i);
    }
    return 0;
}

/* Layer i is MoE iff i ∉ mlp_only_layers and (i + 1) % decoder_sparse_step == 0 (Qwen2/3-MoE). */
static int parse_sparse_layers(const src *s, model_desc *d)
{
    if (d->arch == ARCH_GPT_OSS || d->arch == ARCH_QWEN3_5_MOE) {
        for (int i = 0; i < d->num_layers; i++)
            d->sparse_layer[i] = true;
        return 0;
    }
    int step;
    if (get_int(s, "decoder_sparse_step", false, 1, &step))
        return -1;
    if (step < 1)
        return m2o_fail(s->err, "%s: \"decoder_sparse_step\" is %d, expected 1 or more — fix "
                        "config.json", s->what, step);
    for (int i = 0; i < d->num_layers; i++)
        d->sparse_layer[i] = (i + 1) % step == 0;
    const cJSON *only = field(s, "mlp_only_layers");
    if (only && !cJSON_IsArray(only))
        return wrong_type(s, "mlp_only_layers", "an array of layer indices", only);
    for (const cJSON *e = only ? only->child : NULL; e; e = e->next) {
        if (!json_integer(e, 0, d->num_layers - 1))
            return m2o_fail(s->err, "%s: \"mlp_only_layers\" holds %s, expected layer indices 0..%d — "
                            "fix config.json", s->what, cJSON_IsNumber(e) ? "an out-of-range index"
                            : type_name(e), d->num_layers - 1);
        d->sparse_layer[(int)e->valuedouble] = false;
    }
    return 0;
}

/* ---------- RoPE ---------- */

static int parse_rope(const src *s, model_desc *d, double def_theta, double def_prf)
{
    /* v5 style keeps everything in rope_parameters; Hub style has rope_theta / rope_scaling at
     * the top level. rope_parameters wins when both are present. */
    const char *rkey = field(s, "rope_parameters") ? "rope_parameters" : "rope_scaling";
    const cJSON *r = field(s, rkey);
    if (r && !cJSON_IsObject(r))
        return wrong_type(s, rkey, "an object", r);
    char scope[96];
    snprintf(scope, sizeof scope, "%s%s.", s->scope, rkey);
    src rs = {r, s->what, scope, s->err};
    if (check_unique_keys(&rs))
        return -1;
    for (const cJSON *e = r ? r->child : NULL; e; e = e->next)
        if (cJSON_IsObject(e))
            return m2o_fail(s->err, "%s: \"%s\" holds per-layer-type settings (\"%s\"), which %s "
                            "models do not use — fix config.json", s->what, rkey, e->string,
                            arch_name(d->arch));

    const src *theta_src = field(&rs, "rope_theta") ? &rs : s;
    if (get_double(theta_src, "rope_theta", def_theta, &d->rope_theta))
        return -1;
    const src *prf_src = field(&rs, "partial_rotary_factor") ? &rs : s;
    if (get_double(prf_src, "partial_rotary_factor", def_prf, &d->partial_rotary_factor))
        return -1;

    const char *type = "default";
    if (field(&rs, "rope_type") ? get_string(&rs, "rope_type", "default", &type)
                                : get_string(&rs, "type", "default", &type))
        return -1;
    /* gpt-oss without any rope settings gets transformers' built-in YaRN */
    bool gpt_oss_default = d->arch == ARCH_GPT_OSS && !r;
    if (gpt_oss_default)
        type = "yarn";

    d->rope_factor = 1.0;
    d->yarn_beta_fast = 32.0;
    d->yarn_beta_slow = 1.0;
    d->yarn_truncate = true;
    d->yarn_attention_factor = 0.0;
    d->rope_original_max_position = d->max_position_embeddings;
    if (!strcmp(type, "default")) {
        d->rope_type = ROPE_DEFAULT;
    } else if (!strcmp(type, "linear")) {
        d->rope_type = ROPE_LINEAR;
        if (!field(&rs, "factor"))
            return missing(&rs, "factor");
        if (get_double(&rs, "factor", 1.0, &d->rope_factor))
            return -1;
    } else if (!strcmp(type, "yarn")) {
        d->rope_type = ROPE_YARN;
        if (gpt_oss_default) {
            d->rope_factor = 32.0;
            d->yarn_truncate = false;
            d->rope_original_max_position = 4096;
        } else {
            if (get_int(&rs, "original_max_position_embeddings", false, d->max_position_embeddings,
                        &d->rope_original_max_position))
                return -1;
            if (d->rope_original_max_position < 1)
                return m2o_fail(s->err, "%s: \"%soriginal_max_position_embeddings\" must be positive",
                                s->what, scope);
            /* transformers: a missing factor is max_position_embeddings / original */
            double def_factor = (double)d->max_position_embeddings / d->rope_original_max_position;
            double bf, bs;
            if (get_double(&rs, "factor", def_factor, &d->rope_factor) ||
                get_double(&rs, "beta_fast", 0.0, &bf) || get_double(&rs, "beta_slow", 0.0, &bs) ||
                get_bool(&rs, "truncate", true, &d->yarn_truncate) ||
                get_double(&rs, "attention_factor", 0.0, &d->yarn_attention_factor))
                return -1;
            /* `or 32` / `or 1` in transformers: 0 means the default too */
            d->yarn_beta_fast = bf != 0.0 ? bf : 32.0;
            d->yarn_beta_slow = bs != 0.0 ? bs : 1.0;
        }
    } else {
        return m2o_fail(s->err, "%s: rope_type \"%s\" is not supported (supported: default, linear, "
                        "yarn)", s->what, type);
    }

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

/* ---------- per architecture ---------- */

static int parse_experts(const src *s, model_desc *d)
{
    int a = 0, b = 0;
    if (get_size(s, "num_local_experts", false, 0, &a) || get_size(s, "num_experts", false, 0, &b))
        return -1;
    if (a && b && a != b)
        return m2o_fail(s->err, "%s: num_local_experts (%d) and num_experts (%d) disagree — fix "
                        "config.json", s->what, a, b);
    if (!a && !b)
        return missing(s, d->arch == ARCH_GPT_OSS ? "num_local_experts" : "num_experts");
    d->num_experts = a ? a : b;
    /* gpt-oss's original config names it experts_per_token */
    const char *kkey = !field(s, "num_experts_per_tok") && field(s, "experts_per_token")
                           ? "experts_per_token" : "num_experts_per_tok";
    if (get_size(s, kkey, true, 0, &d->top_k))
        return -1;
    if (d->top_k > d->num_experts)
        return m2o_fail(s->err, "%s: %s (%d) exceeds the number of experts (%d) — fix config.json",
                        s->what, kkey, d->top_k, d->num_experts);
    return 0;
}

static bool any_dense(const model_desc *d)
{
    for (int i = 0; i < d->num_layers; i++)
        if (!d->sparse_layer[i])
            return true;
    return false;
}

static int parse_arch_fields(const src *s, model_desc *d)
{
    switch (d->arch) {
    case ARCH_GPT_OSS:
        if (get_size(s, "intermediate_size", true, 0, &d->intermediate_size) ||
            get_bool(s, "attention_bias", true, &d->attention_bias))
            return -1;
        d->moe_intermediate_size = d->intermediate_size;
        d->norm_topk_prob = true; /* softmax over the top-k logits = renormalised */
        double lim, alpha;
        if (get_double(s, "swiglu_limit", 7.0, &lim) || get_double(s, "swiglu_alpha", 1.702, &alpha))
            return -1;
        d->swiglu_limit = (float)lim;
        d->swiglu_alpha = (float)alpha;
        break;
    case ARCH_QWEN3_MOE:
    case ARCH_QWEN2_MOE:
        if (get_size(s, "moe_intermediate_size", true, 0, &d->moe_intermediate_size) ||
            get_size(s, "intermediate_size", any_dense(d), 0, &d->intermediate_size) ||
            get_bool(s, "norm_topk_prob", false, &d->norm_topk_prob))
            return -1;
        if (d->arch == ARCH_QWEN3_MOE) {
            d->qk_norm = true;
            if (get_bool(s, "attention_bias", false, &d->attention_bias))
                return -1;
        } else {
            if (get_bool(s, "qkv_bias", true, &d->qkv_bias) ||
                get_size(s, "shared_expert_intermediate_size", true, 0,
                         &d->shared_expert_intermediate_size))
                return -1;
        }
        break;
    case ARCH_QWEN3_5_MOE:
        d->qk_norm = true;
        d->norm_topk_prob = true; /* the Qwen3.5 router always renormalises */
        if (get_size(s, "moe_intermediate_size", true, 0, &d->moe_intermediate_size) ||
            get_size(s, "intermediate_size", false, 0, &d->intermediate_size) ||
            get_size(s, "shared_expert_intermediate_size", true, 0,
                     &d->shared_expert_intermediate_size) ||
            get_bool(s, "attention_bias", false, &d->attention_bias) ||
            get_bool(s, "attn_output_gate", true, &d->attn_output_gate) ||
            get_size(s, "linear_conv_kernel_dim", false, 4, &d->linear_conv_kernel_dim) ||
            get_size(s, "linear_key_head_dim", false, 128, &d->linear_key_head_dim) ||
            get_size(s, "linear_value_head_dim", false, 128, &d->linear_value_head_dim) ||
            get_size(s, "linear_num_key_heads", false, 16, &d->linear_num_key_heads) ||
            get_size(s, "linear_num_value_heads", false, 32, &d->linear_num_value_heads))
            return -1;
        break;
    }
    if (d->arch != ARCH_GPT_OSS) { /* plain SwiGLU: no clamp, sigmoid gain 1 */
        d->swiglu_limit = 0.0f;
        d->swiglu_alpha = 1.0f;
    }
    return 0;
}

/* Sliding window and the per-layer attention kinds, with each family's defaults. */
static int parse_attention_layout(const src *s, model_desc *d)
{
    if (d->arch == ARCH_GPT_OSS) {
        const cJSON *sw = cJSON_GetObjectItemCaseSensitive(s->obj, "sliding_window");
        if (sw && cJSON_IsNull(sw))
            d->sliding_window = 0;
        else if (get_int(s, "sliding_window", false, 128, &d->sliding_window))
            return -1;
    } else if (d->arch != ARCH_QWEN3_5_MOE) {
        bool use;
        if (get_bool(s, "use_sliding_window", false, &use) ||
            (use && get_int(s, "sliding_window", false, 4096, &d->sliding_window)))
            return -1;
    }
    if (d->sliding_window < 0)
        return m2o_fail(s->err, "%s: sliding_window is negative — fix config.json", s->what);

    int rc = parse_layer_types(s, d);
    if (rc < 0)
        return -1;
    if (rc == 1) { /* no layer_types: transformers' default for the family */
        int interval = 4, max_window = 28;
        if (d->arch == ARCH_QWEN3_5_MOE &&
            get_size(s, "full_attention_interval", false, 4, &interval))
            return -1;
        if (d->arch == ARCH_QWEN2_MOE && get_int(s, "max_window_layers", false, 28, &max_window))
            return -1;
        if (d->arch == ARCH_QWEN3_MOE && d->sliding_window > 0)
            return m2o_fail(s->err, "%s: use_sliding_window is true but there is no layer_types "
                            "saying which layers slide — add layer_types to config.json", s->what);
        for (int i = 0; i < d->num_layers; i++) {
            layer_kind k = LAYER_FULL_ATTENTION;
            if (d->arch == ARCH_GPT_OSS)
                k = i % 2 == 0 ? LAYER_SLIDING_ATTENTION : LAYER_FULL_ATTENTION;
            else if (d->arch == ARCH_QWEN3_5_MOE)
                k = (i + 1) % interval ? LAYER_LINEAR_ATTENTION : LAYER_FULL_ATTENTION;
            else if (d->arch == ARCH_QWEN2_MOE && d->sliding_window > 0 && i % 2 == 0 &&
                     i < max_window)
                k = LAYER_SLIDING_ATTENTION;
            d->layer_type[i] = k;
        }
    }
    return check_layer_types(s, d);
}

static int parse_common(const src *s, model_desc *d)
{
    bool oss = d->arch == ARCH_GPT_OSS;
    if (get_size(s, "hidden_size", true, 0, &d->hidden_size) ||
        get_size(s, "num_hidden_layers", true, 0, &d->num_layers) ||
        get_size(s, "num_attention_heads", true, 0, &d->num_heads) ||
        get_size(s, "num_key_value_heads", true, 0, &d->num_kv_heads) ||
        get_size(s, "vocab_size", true, 0, &d->vocab_size))
        return -1;
    if (d->num_layers > MD_MAX_LAYERS)
        return m2o_fail(s->err, "%s: num_hidden_layers is %d; this tool handles at most %d layers",
                        s->what, d->num_layers, MD_MAX_LAYERS);
    if (d->num_heads % d->num_kv_heads)
        return m2o_fail(s->err, "%s: num_attention_heads (%d) is not a multiple of "
                        "num_key_value_heads (%d) — fix config.json", s->what, d->num_heads,
                        d->num_kv_heads);
    /* transformers' head_dim defaults: gpt-oss 64, Qwen3.5 256, else hidden / heads */
    int def_head = oss ? 64 : d->arch == ARCH_QWEN3_5_MOE ? 256 : d->hidden_size / d->num_heads;
    const cJSON *hd = cJSON_GetObjectItemCaseSensitive(s->obj, "head_dim");
    if (hd && cJSON_IsNull(hd)) /* explicit null: derived, as transformers' __post_init__ does */
        def_head = d->hidden_size / d->num_heads;
    if (get_size(s, "head_dim", false, def_head, &d->head_dim))
        return -1;
    if (d->head_dim < 1)
        return m2o_fail(s->err, "%s: head_dim cannot be derived (hidden_size %d / %d heads) — add "
                        "head_dim to config.json", s->what, d->hidden_size, d->num_heads);
    if (get_double(s, "rms_norm_eps", oss ? 1e-5 : 1e-6, &d->rms_norm_eps) ||
        get_int(s, "max_position_embeddings", false, oss ? 131072 : 32768,
                &d->max_position_embeddings) ||
        get_bool(s, "tie_word_embeddings", false, &d->tie_word_embeddings))
        return -1;
    if (!(d->rms_norm_eps > 0))
        return m2o_fail(s->err, "%s: rms_norm_eps must be positive — fix config.json", s->what);
    if (d->max_position_embeddings < 1)
        return m2o_fail(s->err, "%s: max_position_embeddings must be positive — fix config.json",
                        s->what);
    d->context_length = d->max_position_embeddings;
    return parse_experts(s, d);
}

static int parse_tokens(const src *s, bool overrides, model_desc *d)
{
    return get_token(s, "bos_token_id", overrides, &d->bos_token_id) ||
           get_token(s, "pad_token_id", overrides, &d->pad_token_id) || get_eos(s, overrides, d)
               ? -1 : 0;
}

static int parse_config_root(const cJSON *root, const char *what, model_desc *d, m2o_err *err)
{
    src top = {root, what, "", err};
    if (!cJSON_IsObject(root))
        return m2o_fail(err, "%s: config is %s, expected a JSON object — pass the model's "
                        "config.json", what, type_name(root));
    if (check_unique_keys(&top))
        return -1;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!cJSON_IsString(mt))
        return m2o_fail(err, "%s: \"model_type\" is %s, expected one of the supported model types "
                        "(" SUPPORTED_TYPES ")", what, mt ? type_name(mt) : "missing");
    const char *t = mt->valuestring;
    src text = top;
    snprintf(d->prefix, sizeof d->prefix, "model.");
    if (!strcmp(t, "gpt_oss"))
        d->arch = ARCH_GPT_OSS;
    else if (!strcmp(t, "qwen3_moe"))
        d->arch = ARCH_QWEN3_MOE;
    else if (!strcmp(t, "qwen2_moe"))
        d->arch = ARCH_QWEN2_MOE;
    else if (!strcmp(t, "qwen3_5_moe_text"))
        d->arch = ARCH_QWEN3_5_MOE;
    else if (!strcmp(t, "qwen3_5_moe")) {
        /* vision-language checkpoint: the text decoder's config and tensors sit one level down */
        d->arch = ARCH_QWEN3_5_MOE;
        text.obj = cJSON_GetObjectItemCaseSensitive(root, "text_config");
        text.scope = "text_config.";
        if (!cJSON_IsObject(text.obj))
            return m2o_fail(err, "%s: model_type qwen3_5_moe needs a \"text_config\" object, found "
                            "%s — pass the model's own config.json", what,
                            text.obj ? type_name(text.obj) : "none");
        if (check_unique_keys(&text))
            return -1;
        snprintf(d->prefix, sizeof d->prefix, "model.language_model.");
    } else
        return m2o_fail(err, "%s: model_type \"%.60s\" is not supported (supported: " SUPPORTED_TYPES
                        ")", what, t);
    snprintf(d->model_type, sizeof d->model_type, "%s", t);

    if (parse_common(&text, d) || parse_sparse_layers(&text, d) || parse_arch_fields(&text, d) ||
        parse_attention_layout(&text, d) ||
        parse_rope(&text, d, d->arch == ARCH_GPT_OSS ? 150000.0 : 10000.0,
                   d->arch == ARCH_QWEN3_5_MOE ? 0.25 : 1.0))
        return -1;

    d->bos_token_id = d->pad_token_id = -1;
    if (parse_tokens(&text, true, d))
        return -1;
    if (text.obj != root) { /* VL: top-level values win over the text sub-config's */
        if (parse_tokens(&top, false, d) ||
            get_bool(&top, "tie_word_embeddings", d->tie_word_embeddings, &d->tie_word_embeddings))
            return -1;
    }
    return 0;
}

static int parse_generation(const cJSON *root, const char *what, model_desc *d, m2o_err *err)
{
    src g = {root, what, "", err};
    if (!cJSON_IsObject(root))
        return m2o_fail(err, "%s: generation config is %s, expected a JSON object — fix or remove "
                        "generation_config.json", what, type_name(root));
    if (check_unique_keys(&g) || parse_tokens(&g, false, d) ||
        get_bool(&g, "do_sample", d->do_sample, &d->do_sample) ||
        get_int(&g, "top_k", false, d->top_k_sampling, &d->top_k_sampling) ||
        get_double(&g, "top_p", d->top_p, &d->top_p) ||
        get_double(&g, "temperature", d->temperature, &d->temperature))
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
