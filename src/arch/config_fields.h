/* Reading config.json fields with the error messages every family shares: one line naming the
 * file, the key (with its scope, e.g. "text_config.") and what was expected. Used by config.c for
 * the common fields and by each family's parse_config for its own. */
#ifndef M2O_ARCH_CONFIG_FIELDS_H
#define M2O_ARCH_CONFIG_FIELDS_H

#include <cJSON.h>
#include <stdbool.h>

#include "arch/model_desc.h"
#include "common/err.h"

/* Where fields are read from, for error messages: file and key prefix ("text_config."). */
typedef struct cfg_src {
    const cJSON *obj;
    const char *what;
    const char *scope;
    m2o_err *err;
} cfg_src;

/* The value of key, or NULL when absent or null: transformers treats None as "use the default". */
const cJSON *cfg_field(const cfg_src *s, const char *key);
int cfg_missing(const cfg_src *s, const char *key);
int cfg_wrong_type(const cfg_src *s, const char *key, const char *want, const cJSON *j);
/* Fails on a key that appears twice (Python keeps the last, cJSON the first). */
int cfg_check_unique_keys(const cfg_src *s);
bool cfg_json_integer(const cJSON *j, double lo, double hi);

/* Each: absent or null → def (an error naming the key when required); wrong type → error. */
int cfg_get_int(const cfg_src *s, const char *key, bool required, int def, int *out);
/* An integer >= 1. */
int cfg_get_size(const cfg_src *s, const char *key, bool required, int def, int *out);
int cfg_get_double(const cfg_src *s, const char *key, double def, double *out);
int cfg_get_bool(const cfg_src *s, const char *key, bool def, bool *out);
int cfg_get_string(const cfg_src *s, const char *key, const char *def, const char **out);

/* ---- layer helpers for parse_config ---- */

/* layer_types into d->layer_type; returns 1 (nothing set) when the config has none, so the
 * family applies its default. */
int cfg_layer_types(const cfg_src *s, model_desc *d);
/* Every layer's kind is one the family has (`forbidden` is the one it lacks) and sliding layers
 * have a window. */
int cfg_check_layer_types(const cfg_src *s, const model_desc *d, layer_kind forbidden);
/* Every layer has experts. */
void cfg_all_sparse(model_desc *d);
/* Qwen2/3-MoE: layer i has experts iff i ∉ mlp_only_layers and (i + 1) % decoder_sparse_step == 0. */
int cfg_sparse_step_layers(const cfg_src *s, model_desc *d);
/* True when some layer has a dense MLP. */
bool cfg_any_dense(const model_desc *d);

#endif
