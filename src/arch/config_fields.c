/* config.json field readers and the layer helpers families share (config_fields.h). */
#include "arch/config_fields.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch/family.h"
#include "common/json_names.h"

/* The value of key, or NULL when absent or null: transformers treats None as "use the default". */
const cJSON *cfg_field(const cfg_src *s, const char *key)
{
    const cJSON *j = s->obj ? cJSON_GetObjectItemCaseSensitive(s->obj, key) : NULL;
    return j && !cJSON_IsNull(j) ? j : NULL;
}

int cfg_missing(const cfg_src *s, const char *key)
{
    return m2o_fail(s->err, "%s: required field \"%s%s\" is missing — every config.json of this "
                    "model family has it; pass the model's own config.json", s->what, s->scope, key);
}

int cfg_wrong_type(const cfg_src *s, const char *key, const char *want, const cJSON *j)
{
    return m2o_fail(s->err, "%s: field \"%s%s\" must be %s, found %s — fix config.json", s->what,
                    s->scope, key, want, json_type_name(j));
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Python's json keeps the last of duplicate keys and cJSON the first: refuse to guess. Sorted,
 * so a hostile file with many keys costs n log n, not n². */
int cfg_check_unique_keys(const cfg_src *s)
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

bool cfg_json_integer(const cJSON *j, double lo, double hi)
{
    return cJSON_IsNumber(j) && j->valuedouble == floor(j->valuedouble) && j->valuedouble >= lo &&
           j->valuedouble <= hi;
}

int cfg_get_int(const cfg_src *s, const char *key, bool required, int def, int *out)
{
    const cJSON *j = cfg_field(s, key);
    if (!j) {
        *out = def;
        return required ? cfg_missing(s, key) : 0;
    }
    if (!cfg_json_integer(j, INT_MIN, INT_MAX))
        return cfg_wrong_type(s, key, "an integer", j);
    *out = (int)j->valuedouble;
    return 0;
}

/* A size: integer >= 1. */
int cfg_get_size(const cfg_src *s, const char *key, bool required, int def, int *out)
{
    if (cfg_get_int(s, key, required, def, out))
        return -1;
    if (*out < 1 && cfg_field(s, key))
        return m2o_fail(s->err, "%s: field \"%s%s\" is %d, expected a positive integer — fix "
                        "config.json", s->what, s->scope, key, *out);
    return 0;
}

int cfg_get_double(const cfg_src *s, const char *key, double def, double *out)
{
    const cJSON *j = cfg_field(s, key);
    *out = def;
    if (!j)
        return 0;
    if (!cJSON_IsNumber(j))
        return cfg_wrong_type(s, key, "a number", j);
    *out = j->valuedouble;
    return 0;
}

int cfg_get_bool(const cfg_src *s, const char *key, bool def, bool *out)
{
    const cJSON *j = cfg_field(s, key);
    *out = def;
    if (!j)
        return 0;
    if (!cJSON_IsBool(j))
        return cfg_wrong_type(s, key, "true or false", j);
    *out = cJSON_IsTrue(j);
    return 0;
}

int cfg_get_string(const cfg_src *s, const char *key, const char *def, const char **out)
{
    const cJSON *j = cfg_field(s, key);
    *out = def;
    if (!j)
        return 0;
    if (!cJSON_IsString(j))
        return cfg_wrong_type(s, key, "a string", j);
    *out = j->valuestring;
    return 0;
}


/* ---------- layers ---------- */

int cfg_layer_types(const cfg_src *s, model_desc *d)
{
    const cJSON *lt = cfg_field(s, "layer_types");
    if (!lt)
        return 1; /* caller applies the architecture's default */
    if (!cJSON_IsArray(lt))
        return cfg_wrong_type(s, "layer_types", "an array of layer type names", lt);
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
                            cJSON_IsString(e) ? "\"" : json_type_name(e), t, cJSON_IsString(e) ? "\"" : "");
    }
    return 0;
}

int cfg_check_layer_types(const cfg_src *s, const model_desc *d, layer_kind forbidden)
{
    for (int i = 0; i < d->num_layers; i++) {
        layer_kind k = d->layer_type[i];
        if (k == forbidden)
            return m2o_fail(s->err, "%s: layer %d is %s, which %s models do not have — fix "
                            "layer_types", s->what, i,
                            k == LAYER_LINEAR_ATTENTION ? "linear_attention" : "sliding_attention",
                            arch_name(d));
        if (k == LAYER_SLIDING_ATTENTION && d->sliding_window <= 0)
            return m2o_fail(s->err, "%s: layer %d is sliding_attention but no sliding_window is set "
                            "— fix sliding_window or layer_types", s->what, i);
    }
    return 0;
}

/* Layer i is MoE iff i ∉ mlp_only_layers and (i + 1) % decoder_sparse_step == 0 (Qwen2/3-MoE). */
void cfg_all_sparse(model_desc *d)
{
    for (int i = 0; i < d->num_layers; i++)
        d->sparse_layer[i] = true;
}

int cfg_sparse_step_layers(const cfg_src *s, model_desc *d)
{
    int step;
    if (cfg_get_int(s, "decoder_sparse_step", false, 1, &step))
        return -1;
    if (step < 1)
        return m2o_fail(s->err, "%s: \"decoder_sparse_step\" is %d, expected 1 or more — fix "
                        "config.json", s->what, step);
    for (int i = 0; i < d->num_layers; i++)
        d->sparse_layer[i] = (i + 1) % step == 0;
    const cJSON *only = cfg_field(s, "mlp_only_layers");
    if (only && !cJSON_IsArray(only))
        return cfg_wrong_type(s, "mlp_only_layers", "an array of layer indices", only);
    for (const cJSON *e = only ? only->child : NULL; e; e = e->next) {
        if (!cfg_json_integer(e, 0, d->num_layers - 1))
            return m2o_fail(s->err, "%s: \"mlp_only_layers\" holds %s, expected layer indices 0..%d — "
                            "fix config.json", s->what, cJSON_IsNumber(e) ? "an out-of-range index"
                            : json_type_name(e), d->num_layers - 1);
        d->sparse_layer[(int)e->valuedouble] = false;
    }
    return 0;
}

bool cfg_any_dense(const model_desc *d)
{
    for (int i = 0; i < d->num_layers; i++)
        if (!d->sparse_layer[i])
            return true;
    return false;
}
