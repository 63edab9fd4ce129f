/* Quantization options: parsing, the JSON quant_config, ONNX Runtime's rules, and per-tensor
 * resolution (quant_options.h; docs/QUANTIZATION.md). */
#include "cli/quant_options.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "onnx/graph.h"
#include "onnx/ort_rules.h"

/* ---------- values ---------- */

int quant_parse_bool(const char *key, const char *v, bool *out, m2o_err *err)
{
    if (!strcmp(v, "true") || !strcmp(v, "True") || !strcmp(v, "1")) { *out = true; return 0; }
    if (!strcmp(v, "false") || !strcmp(v, "False") || !strcmp(v, "0")) { *out = false; return 0; }
    return m2o_fail(err, "extra option %s=%s: expected true, false, 1 or 0 (or True/False)", key, v);
}

static int parse_tri_bool(const char *key, const char *v, int *out, m2o_err *err)
{
    bool b;
    if (quant_parse_bool(key, v, &b, err)) return -1;
    *out = b;
    return 0;
}

/* scale_search: a boolean (MatMuls and int experts), or "experts" / "matmul" for one side only:
 * SEARCH_EXPERTS (2), SEARCH_MATMUL (3). */
enum { SEARCH_EXPERTS = 2, SEARCH_MATMUL = 3 };
static int parse_scale_search(const char *key, const char *v, int *out, m2o_err *err)
{
    if (!strcmp(v, "experts") || !strcmp(v, "matmul")) {
        *out = v[0] == 'e' ? SEARCH_EXPERTS : SEARCH_MATMUL;
        return 0;
    }
    bool b;
    if (quant_parse_bool(key, v, &b, NULL))
        return m2o_fail(err, "extra option %s=%s: allowed: true, false, experts, matmul", key, v);
    *out = b;
    return 0;
}

static int parse_long(const char *v, long *out)
{
    char *end;
    errno = 0;
    *out = strtol(v, &end, 10);
    return (errno || *end || end == v) ? -1 : 0;
}

static int parse_int_in(const char *key, const char *v, const int *allowed, int n_allowed,
                        const char *allowed_text, int *out, m2o_err *err)
{
    long x;
    if (parse_long(v, &x))
        return m2o_fail(err, "extra option %s=%s: not an integer; allowed: %s", key, v, allowed_text);
    for (int i = 0; i < n_allowed; i++)
        if (x == allowed[i]) { *out = (int)x; return 0; }
    return m2o_fail(err, "extra option %s=%s: allowed values are %s", key, v, allowed_text);
}

static qtype qtype_from_name(const char *s)
{
    if (!strcmp(s, "int4")) return QTYPE_INT4;
    if (!strcmp(s, "uint4")) return QTYPE_UINT4;
    if (!strcmp(s, "int8")) return QTYPE_INT8;
    if (!strcmp(s, "uint8")) return QTYPE_UINT8;
    if (!strcmp(s, "none") || !strcmp(s, "fp32") || !strcmp(s, "fp16") || !strcmp(s, "bf16"))
        return QTYPE_NONE;
    if (!strcmp(s, "mxfp4")) return QTYPE_MXFP4;
    return (qtype)-1;
}


static qpreset preset_from_name(const char *s)
{
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, qpreset_name((qpreset)i))) return (qpreset)i;
    return QPRESET_NONE;
}

void quant_flat_init(quant_flat *f)
{
    memset(f, 0, sizeof *f);
    f->block_size = f->accuracy_level = QUANT_UNSET;
    f->is_symmetric = f->op_matmul = f->op_gather = -1;
    f->use_8bits_moe = f->use_fp4_moe = -1;
    f->qmoe_block_size = f->qmoe_prepacked = f->mm_prepacked = QUANT_UNSET;
    f->use_qdq = f->scale_search = -1;
    f->int8_budget_percent = -1;
    f->int8_budget_bytes = -1;
    f->dense_type = -1;
}

/* ---------- one KEY=VALUE ---------- */

/* The builder's deprecated names (the int4_ prefix was dropped when they began to apply to int8). */
static const char *const ALIASES[][2] = {
    {"int4_block_size", "block_size"},
    {"int4_accuracy_level", "accuracy_level"},
    {"int4_is_symmetric", "is_symmetric"},
    {"int4_op_types_to_quantize", "op_types_to_quantize"},
    {"int4_nodes_to_exclude", "nodes_to_exclude"},
    {"int4_algo_config", "algo_config"},
};

/* Records which spelling set a field; both spellings of one option is an error. */
static int claim(const char **slot, const char *key, const char *name, m2o_err *err)
{
    if (*slot && strcmp(*slot, key))
        return m2o_fail(err, "extra options %s and %s both set %s; keep one (int4_%s is its deprecated name)",
                        *slot, key, name, name);
    *slot = key;
    return 0;
}

static int parse_op_types(quant_flat *f, const char *key, const char *v, m2o_err *err)
{
    f->op_matmul = f->op_gather = 0;
    char buf[128];
    if (strlen(v) >= sizeof buf)
        return m2o_fail(err, "extra option %s=%s: allowed values are MatMul, Gather or MatMul/Gather", key, v);
    strcpy(buf, v);
    for (char *save = NULL, *t = strtok_r(buf, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        if (!strcmp(t, "MatMul")) f->op_matmul = 1;
        else if (!strcmp(t, "Gather")) f->op_gather = 1;
        else return m2o_fail(err, "extra option %s=%s: '%s' is not an op type; allowed: MatMul, Gather "
                                  "(separated by '/')", key, v, t);
    }
    return 0;
}

static int parse_excludes(quant_flat *f, const char *key, const char *v, m2o_err *err)
{
    const char *p = v;
    while (*p) {
        size_t n = strcspn(p, ",");
        if (n) {
            if (f->n_exclude == QUANT_MAX_OVERRIDES)
                return m2o_fail(err, "extra option %s: more than %d node names", key, QUANT_MAX_OVERRIDES);
            if (n >= sizeof f->exclude[0])
                return m2o_fail(err, "extra option %s: node name '%.*s' is too long", key, (int)n, p);
            memcpy(f->exclude[f->n_exclude], p, n);
            f->exclude[f->n_exclude++][n] = 0;
        }
        p += n + (p[n] == ',');
    }
    if (!f->n_exclude)
        return m2o_fail(err, "extra option %s: give node names separated by ',' (e.g. /lm_head/MatMul)", key);
    return 0;
}

/* One selector's type. An explicit matmul_mixed_precision entry replaces what a legacy
 * algo_config alias implied, in whichever order the two were given (the builder expands the
 * alias first and lets the explicit map update it). */
static void add_mixed(quant_flat *f, qpreset p, qtype t, bool explicit_entry)
{
    for (int i = 0; i < f->n_mixed; i++)
        if (f->mixed_preset[i] == p) {
            if (explicit_entry) f->mixed_type[i] = t;
            return;
        }
    f->mixed_preset[f->n_mixed] = p;
    f->mixed_type[f->n_mixed++] = t;
}

static int parse_algo(quant_flat *f, const char *key, const char *v, m2o_err *err)
{
    static const struct { const char *name; qmethod m; int presets; } ALGOS[] = {
        {"default", QMETHOD_DEFAULT, 0}, {"rtn", QMETHOD_RTN, 0}, {"k_quant", QMETHOD_K_QUANT, 0},
        {"rtn_last", QMETHOD_RTN, 1}, {"k_quant_last", QMETHOD_K_QUANT, 1},
        {"k_quant_mixed", QMETHOD_K_QUANT, 3}, {"k_quant_linear", QMETHOD_K_QUANT, 5},
    };
    for (size_t i = 0; i < sizeof ALGOS / sizeof ALGOS[0]; i++) {
        if (strcmp(v, ALGOS[i].name)) continue;
        f->algo_set = 1;
        f->method = ALGOS[i].m;
        snprintf(f->algo_value, sizeof f->algo_value, "%s", v);
        /* Legacy compound names: the base method plus int8 presets (bit 0 last_matmul, 1
         * mixed_layers, 2 linear_attn). matmul_mixed_precision, given too, wins per selector. */
        for (int b = 0; b < 3; b++)
            if (ALGOS[i].presets & (1 << b)) add_mixed(f, (qpreset)b, QTYPE_INT8, false);
        return 0;
    }
    return m2o_fail(err, "extra option %s=%s: allowed values are default, rtn, k_quant (and the legacy "
                         "rtn_last, k_quant_last, k_quant_mixed, k_quant_linear)", key, v);
}

static int parse_mixed(quant_flat *f, const char *key, const char *v, m2o_err *err)
{
    char buf[256];
    if (strlen(v) >= sizeof buf)
        return m2o_fail(err, "extra option %s: value too long", key);
    strcpy(buf, v);
    int n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save), n++) {
        char *colon = strchr(t, ':');
        if (!colon)
            return m2o_fail(err, "extra option %s: entry '%s' is not SELECTOR:TYPE (e.g. last_matmul:int8)", key, t);
        *colon = 0;
        qpreset p = preset_from_name(t);
        if (p == QPRESET_NONE)
            return m2o_fail(err, "extra option %s: selector '%s' is unknown; allowed: last_matmul, "
                                 "mixed_layers, linear_attn", key, t);
        qtype ty = qtype_from_name(colon + 1);
        if (ty != QTYPE_INT4 && ty != QTYPE_INT8)
            return m2o_fail(err, "extra option %s: type '%s' for %s is not supported; allowed: int4, int8",
                            key, colon + 1, t);
        add_mixed(f, p, ty, true);
    }
    if (!n)
        return m2o_fail(err, "extra option %s: give SELECTOR:TYPE pairs (e.g. last_matmul:int8)", key);
    return 0;
}

/* int8_budget=10% (of the dense int4 bytes) or a size: 500MB, 2GiB, 1000000B. */
static int parse_budget(quant_flat *f, const char *key, const char *v, m2o_err *err)
{
    static const struct { const char *suffix; double mult; } UNITS[] = {
        {"B", 1}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"KiB", 1024.0}, {"MiB", 1048576.0},
        {"GiB", 1073741824.0},
    };
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || !isfinite(x) || x < 0)
        return m2o_fail(err, "extra option %s=%s: expected a percentage (10%%) or a size (500MB, 2GiB)", key, v);
    snprintf(f->int8_budget_text, sizeof f->int8_budget_text, "%s", v);
    if (!strcmp(end, "%")) {
        if (x > 100)
            return m2o_fail(err, "extra option %s=%s: at most 100%% (every dense weight in int8)", key, v);
        f->int8_budget_percent = x;
        return 0;
    }
    for (size_t i = 0; i < sizeof UNITS / sizeof UNITS[0]; i++)
        if (!strcmp(end, UNITS[i].suffix)) {
            if (x * UNITS[i].mult > 9e18)
                return m2o_fail(err, "extra option %s=%s: larger than any model", key, v);
            f->int8_budget_bytes = (int64_t)(x * UNITS[i].mult);
            return 0;
        }
    return m2o_fail(err, "extra option %s=%s: give a unit: %% of the int4 dense weights, or B, KB, MB, GB, "
                         "KiB, MiB, GiB (e.g. int8_budget=10%% or int8_budget=500MB)", key, v);
}

/* moe2onnx's asymmetric experts (not in the builder): uint4/uint8 = 4/8-bit codes with zero points. */
static bool parse_moe_unsigned(quant_flat *f, const char *v)
{
    bool u4 = !strcmp(v, "uint4"), u8 = !strcmp(v, "uint8");
    if (u4 || u8) {
        f->moe_quant_type = u8 ? MOE_QUANT_INT8 : MOE_QUANT_INT4;
        f->moe_unsigned = true;
    }
    return u4 || u8;
}

/* The options the builder and moe2onnx share for experts (kept exactly as before issue 18). */
static int parse_moe_option(quant_flat *f, const char *key, const char *v, m2o_err *err)
{
    static const int blocks[] = {16, 32, 64, 128, 256};
    static const int prepacked[] = {-1, 0, 1};
    if (!strcmp(key, "qmoe_block_size")) {
        long x;
        if (!parse_long(v, &x) && x <= 0) { f->qmoe_block_size = 0; return 0; } /* per channel */
        return parse_int_in(key, v, blocks, 5, "16, 32, 64, 128, 256 (and what the provider allows), "
                            "or 0 for per channel", &f->qmoe_block_size, err);
    }
    if (!strcmp(key, "qmoe_weights_prepacked"))
        return parse_int_in(key, v, prepacked, 3, "-1 (provider default), 0 (raw), 1 (prepacked)",
                            &f->qmoe_prepacked, err);
    if (!strcmp(key, "moe_quant_type")) {
        f->moe_quant_set = 1;
        if (!strcmp(v, "int4")) f->moe_quant_type = MOE_QUANT_INT4;
        else if (!strcmp(v, "int8")) f->moe_quant_type = MOE_QUANT_INT8;
        else if (!strcmp(v, "mxfp4")) f->moe_quant_type = MOE_QUANT_MXFP4;
        else if (parse_moe_unsigned(f, v)) return 0;
        else if (!strcmp(v, "nvfp4"))
            return m2o_fail(err, "extra option moe_quant_type=nvfp4: moe2onnx does not write NVFP4 experts; "
                                 "allowed values are int4, int8, uint4, uint8, mxfp4");
        else return m2o_fail(err, "extra option moe_quant_type=%s: allowed values are int4, int8, uint4, uint8, "
                                  "mxfp4", v);
        f->moe_unsigned = false;
        return 0;
    }
    if (!strcmp(key, "use_8bits_moe")) return parse_tri_bool(key, v, &f->use_8bits_moe, err);
    if (!strcmp(key, "use_fp4_moe")) return parse_tri_bool(key, v, &f->use_fp4_moe, err);
    return 1;
}

/* The current name for key, and in *spelled a string that outlives the call (claim keeps it). */
static const char *canonical_key(const char *key, const char **spelled)
{
    static const char *const NAMES[] = {"block_size", "accuracy_level", "is_symmetric", "op_types_to_quantize",
                                        "nodes_to_exclude", "algo_config"};
    for (size_t i = 0; i < sizeof ALIASES / sizeof ALIASES[0]; i++) {
        if (!strcmp(key, ALIASES[i][0])) { *spelled = ALIASES[i][0]; return ALIASES[i][1]; }
        if (!strcmp(key, NAMES[i])) { *spelled = NAMES[i]; return NAMES[i]; }
    }
    *spelled = NULL;
    return key;
}

static int parse_dense_option(quant_flat *f, const char *key, const char *v, m2o_err *err)
{
    const char *spelled;
    const char *name = canonical_key(key, &spelled);
    static const int blocks[] = {16, 32, 64, 128, 256};
    static const int levels[] = {0, 1, 2, 3, 4};
    static const int mm_prepacked[] = {0, 1, 2};
    if (!strcmp(name, "block_size")) {
        if (claim(&f->block_size_key, spelled, name, err)) return -1;
        if (!strcmp(v, "0") || !strcmp(v, "per_channel")) { f->block_size = 0; return 0; }
        return parse_int_in(key, v, blocks, 5, "16, 32, 64, 128, 256", &f->block_size, err);
    }
    if (!strcmp(name, "accuracy_level")) {
        if (claim(&f->accuracy_level_key, spelled, name, err)) return -1;
        return parse_int_in(key, v, levels, 5, "0, 1, 2, 3, 4", &f->accuracy_level, err);
    }
    if (!strcmp(name, "is_symmetric")) {
        if (claim(&f->is_symmetric_key, spelled, name, err)) return -1;
        return parse_tri_bool(key, v, &f->is_symmetric, err);
    }
    if (!strcmp(name, "op_types_to_quantize")) {
        if (claim(&f->op_types_key, spelled, name, err)) return -1;
        return parse_op_types(f, key, v, err);
    }
    if (!strcmp(name, "nodes_to_exclude")) {
        if (claim(&f->exclude_key, spelled, name, err)) return -1;
        return parse_excludes(f, key, v, err);
    }
    if (!strcmp(name, "algo_config")) {
        if (claim(&f->algo_key, spelled, name, err)) return -1;
        return parse_algo(f, key, v, err);
    }
    if (!strcmp(name, "matmul_mixed_precision")) return parse_mixed(f, key, v, err);
    if (!strcmp(name, "matmulnbits_weights_prepacked"))
        return parse_int_in(key, v, mm_prepacked, 3, "0 (raw), 1 (SM80), 2 (SM90)", &f->mm_prepacked, err);
    if (!strcmp(name, "use_qdq")) return parse_tri_bool(key, v, &f->use_qdq, err);
    if (!strcmp(name, "scale_search")) return parse_scale_search(key, v, &f->scale_search, err);
    if (!strcmp(name, "int8_budget")) return parse_budget(f, key, v, err);
    return 1;
}

int quant_option_parse(quant_flat *f, const char *key, const char *v, m2o_err *err)
{
    if (!strcmp(key, "quant_config")) { f->json = v; return 0; }
    if (!strcmp(key, "qmoe_quantize_bias")) return quant_parse_bool(key, v, &f->qmoe_quantize_bias, err);
    int rc = parse_moe_option(f, key, v, err);
    if (rc == 1) rc = parse_dense_option(f, key, v, err);
    if (rc == 0 && !f->in_json) {
        if (!f->n_flat_quant++) snprintf(f->first_flat_quant, sizeof f->first_flat_quant, "%s", key);
    }
    return rc;
}

/* ---------- the JSON quant_config (the builder's QuantConfig schema) ---------- */

static int json_fail(m2o_err *err, const char *where)
{
    char inner[sizeof err->msg];
    snprintf(inner, sizeof inner, "%s", err->msg);
    return m2o_fail(err, "quant_config %s: %s", where, inner);
}

/* A scalar field goes through the flat parser under its flat name, so both surfaces share one
 * set of rules; a failure is reported with the JSON path in front. */
static int json_scalar(quant_flat *f, const cJSON *it, const char *where, const char *flat, m2o_err *err)
{
    char v[64];
    if (cJSON_IsBool(it)) snprintf(v, sizeof v, "%s", cJSON_IsTrue(it) ? "true" : "false");
    else if (cJSON_IsNumber(it)) {
        if (it->valuedouble != floor(it->valuedouble) || fabs(it->valuedouble) > 1e9)
            return m2o_fail(err, "quant_config %s: %g is not an integer", where, it->valuedouble);
        snprintf(v, sizeof v, "%d", (int)it->valuedouble);
    } else if (cJSON_IsString(it) && strlen(it->valuestring) < sizeof v) snprintf(v, sizeof v, "%s", it->valuestring);
    else return m2o_fail(err, "quant_config %s: expected a number, a string or true/false", where);
    if (quant_option_parse(f, flat, v, err)) return json_fail(err, where);
    return 0;
}

static int json_check_keys(const cJSON *obj, const char *where, const char *allowed, m2o_err *err)
{
    if (!cJSON_IsObject(obj))
        return m2o_fail(err, "quant_config %s: expected a JSON object", where);
    for (const cJSON *c = obj->child; c; c = c->next) {
        char pat[48];
        snprintf(pat, sizeof pat, ",%s,", c->string);
        char list[256];
        snprintf(list, sizeof list, ",%s,", allowed);
        if (!strstr(list, pat))
            return m2o_fail(err, "quant_config %s: unknown field '%s'; allowed: %s", where, c->string, allowed);
    }
    return 0;
}

static int json_string_field(const cJSON *m, const char *key, char *dst, size_t len, m2o_err *err)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(m, key);
    if (!it) return 0;
    if (!cJSON_IsString(it) || strlen(it->valuestring) >= len)
        return m2o_fail(err, "quant_config override match.%s: expected a string shorter than %zu", key, len);
    strcpy(dst, it->valuestring);
    return 0;
}

static int json_match_layers(const cJSON *m, quant_override *ov, m2o_err *err)
{
    const cJSON *ls = cJSON_GetObjectItemCaseSensitive(m, "layers");
    if (!ls) return 0;
    if (!cJSON_IsArray(ls) || !cJSON_GetArraySize(ls))
        return m2o_fail(err, "quant_config override match.layers: expected a non-empty list of layer indices");
    ov->has_layers = true;
    for (const cJSON *c = ls->child; c; c = c->next) {
        if (!cJSON_IsNumber(c) || c->valuedouble != floor(c->valuedouble) || c->valuedouble < 0 ||
            c->valuedouble >= QUANT_MAX_LAYERS)
            return m2o_fail(err, "quant_config override match.layers: %s is not a layer index 0..%d",
                            cJSON_IsNumber(c) ? "a value" : "an entry", QUANT_MAX_LAYERS - 1);
        int l = (int)c->valuedouble;
        ov->layers[l / 64] |= 1ull << (l % 64);
    }
    return 0;
}

static int json_match(const cJSON *m, quant_override *ov, m2o_err *err)
{
    if (json_check_keys(m, "override match", "name,name_regex,layers,role,op_type,preset", err)) return -1;
    if (!m->child) return m2o_fail(err, "quant_config override: 'match' must not be empty");
    char preset[32] = "";
    if (json_string_field(m, "name", ov->name, sizeof ov->name, err) ||
        json_string_field(m, "name_regex", ov->name_regex, sizeof ov->name_regex, err) ||
        json_string_field(m, "role", ov->role, sizeof ov->role, err) ||
        json_string_field(m, "op_type", ov->op_type, sizeof ov->op_type, err) ||
        json_string_field(m, "preset", preset, sizeof preset, err) || json_match_layers(m, ov, err))
        return -1;
    ov->preset = QPRESET_NONE;
    if (preset[0] && (ov->preset = preset_from_name(preset)) == QPRESET_NONE)
        return m2o_fail(err, "quant_config override match.preset '%s': allowed: last_matmul, mixed_layers, "
                             "linear_attn", preset);
    if (ov->role[0] && !quant_role_known(ov->role, true))
        return m2o_fail(err, "quant_config override match.role '%s' is unknown; roles are listed in "
                             "docs/QUANTIZATION.md (e.g. attn.qkv, attn.*, lm_head)", ov->role);
    if (ov->op_type[0] && strcmp(ov->op_type, "MatMul") && strcmp(ov->op_type, "Gather"))
        return m2o_fail(err, "quant_config override match.op_type '%s': allowed: MatMul, Gather", ov->op_type);
    regex_t re;
    if (ov->name_regex[0]) {
        if (regcomp(&re, ov->name_regex, REG_EXTENDED | REG_NOSUB))
            return m2o_fail(err, "quant_config override match.name_regex '%s' is not a POSIX extended "
                                 "regular expression", ov->name_regex);
        regfree(&re);
    }
    return 0;
}

static int json_override(const cJSON *o, quant_override *ov, m2o_err *err)
{
    if (json_check_keys(o, "override", "match,type,exclude", err)) return -1;
    memset(ov, 0, sizeof *ov);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "match");
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(o, "type");
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(o, "exclude");
    if (!m) return m2o_fail(err, "quant_config override: 'match' is missing");
    if (json_match(m, ov, err)) return -1;
    if (ex && !cJSON_IsBool(ex)) return m2o_fail(err, "quant_config override exclude: expected true or false");
    ov->exclude = ex && cJSON_IsTrue(ex);
    if (ov->exclude == (ty != NULL))
        return m2o_fail(err, "quant_config override: set either 'type' or 'exclude: true' (one of them)");
    if (ty) {
        qtype t = cJSON_IsString(ty) ? qtype_from_name(ty->valuestring) : (qtype)-1;
        if ((int)t < 0 || t == QTYPE_MXFP4)
            return m2o_fail(err, "quant_config override type: allowed for MatMul weights: int4, uint4, int8, "
                                 "uint8, none");
        ov->type = t;
    }
    return 0;
}

static int json_weights(quant_flat *f, const cJSON *w, m2o_err *err)
{
    if (json_check_keys(w, "weights", "type,block_size,symmetric,method,accuracy_level,op_types,overrides,"
                        "scale_search,int8_budget", err))
        return -1;
    static const char *const SCALARS[][2] = {
        {"block_size", "block_size"}, {"symmetric", "is_symmetric"}, {"method", "algo_config"},
        {"accuracy_level", "accuracy_level"}, {"scale_search", "scale_search"}, {"int8_budget", "int8_budget"},
    };
    for (size_t i = 0; i < sizeof SCALARS / sizeof SCALARS[0]; i++) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(w, SCALARS[i][0]);
        char where[48];
        snprintf(where, sizeof where, "weights.%s", SCALARS[i][0]);
        if (it && json_scalar(f, it, where, SCALARS[i][1], err)) return -1;
    }
    if (f->algo_set && f->n_mixed)
        return m2o_fail(err, "quant_config weights.method=%s: the structured config takes only default, rtn "
                             "or k_quant; give the int8 placement as overrides with a preset", f->algo_value);
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(w, "type");
    if (ty) {
        qtype t = cJSON_IsString(ty) ? qtype_from_name(ty->valuestring) : (qtype)-1;
        if ((int)t < 0 || t == QTYPE_MXFP4)
            return m2o_fail(err, "quant_config weights.type: allowed: int4, uint4, int8, uint8, none");
        f->dense_type = (int)t;
    }
    const cJSON *ops = cJSON_GetObjectItemCaseSensitive(w, "op_types");
    if (ops) {
        char joined[64] = "";
        if (!cJSON_IsArray(ops)) return m2o_fail(err, "quant_config weights.op_types: expected a list");
        for (const cJSON *c = ops->child; c; c = c->next) {
            if (!cJSON_IsString(c) || strlen(joined) + strlen(c->valuestring) + 2 > sizeof joined)
                return m2o_fail(err, "quant_config weights.op_types: allowed: MatMul, Gather");
            strcat(strcat(joined, joined[0] ? "/" : ""), c->valuestring);
        }
        if (quant_option_parse(f, "op_types_to_quantize", joined, err)) return json_fail(err, "weights.op_types");
    }
    const cJSON *ovs = cJSON_GetObjectItemCaseSensitive(w, "overrides");
    if (ovs && !cJSON_IsArray(ovs)) return m2o_fail(err, "quant_config weights.overrides: expected a list");
    for (const cJSON *c = ovs ? ovs->child : NULL; c; c = c->next) {
        if (f->n_json_overrides == QUANT_MAX_OVERRIDES)
            return m2o_fail(err, "quant_config weights.overrides: more than %d", QUANT_MAX_OVERRIDES);
        if (json_override(c, &f->json_overrides[f->n_json_overrides++], err)) return -1;
    }
    return 0;
}

static int json_moe(quant_flat *f, const cJSON *m, m2o_err *err)
{
    if (json_check_keys(m, "moe", "type,block_size,weights_prepacked", err)) return -1;
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(m, "type");
    if (ty && cJSON_IsString(ty) && !strcmp(ty->valuestring, "none")) f->moe_none = true;
    else if (ty && json_scalar(f, ty, "moe.type", "moe_quant_type", err)) return -1;
    const cJSON *bs = cJSON_GetObjectItemCaseSensitive(m, "block_size");
    if (bs && cJSON_IsString(bs) && !strcmp(bs->valuestring, "per_channel")) f->qmoe_block_size = 0;
    else if (bs && json_scalar(f, bs, "moe.block_size", "qmoe_block_size", err)) return -1;
    const cJSON *wp = cJSON_GetObjectItemCaseSensitive(m, "weights_prepacked");
    return wp ? json_scalar(f, wp, "moe.weights_prepacked", "qmoe_weights_prepacked", err) : 0;
}

static int json_runtime(quant_flat *f, const cJSON *r, m2o_err *err)
{
    if (json_check_keys(r, "runtime", "use_qdq,matmulnbits_weights_prepacked", err)) return -1;
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(r, "use_qdq");
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(r, "matmulnbits_weights_prepacked");
    if (q && json_scalar(f, q, "runtime.use_qdq", "use_qdq", err)) return -1;
    return p ? json_scalar(f, p, "runtime.matmulnbits_weights_prepacked", "matmulnbits_weights_prepacked", err) : 0;
}

static const char *io_dtype_name(int io_dtype)
{
    return io_dtype == ONNX_FLOAT ? "fp32" : io_dtype == ONNX_BFLOAT16 ? "bf16" : "fp16";
}

static int json_top(quant_flat *f, const cJSON *root, int io_dtype, m2o_err *err)
{
    const cJSON *wrap = cJSON_GetObjectItemCaseSensitive(root, "quantization");
    if (cJSON_IsObject(wrap)) root = wrap;
    if (json_check_keys(root, "(top level)", "io_dtype,weights,moe,runtime", err)) return -1;
    const cJSON *io = cJSON_GetObjectItemCaseSensitive(root, "io_dtype");
    if (io && (!cJSON_IsString(io) || strcmp(io->valuestring, io_dtype_name(io_dtype))))
        return m2o_fail(err, "quant_config io_dtype=%s: this -p/-e (and use_cuda_bf16) gives %s inputs and "
                             "outputs; drop io_dtype or change -p/-e", cJSON_IsString(io) ? io->valuestring : "?",
                        io_dtype_name(io_dtype));
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(root, "weights");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "moe");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(root, "runtime");
    if ((w && json_weights(f, w, err)) || (m && json_moe(f, m, err)) || (r && json_runtime(f, r, err)))
        return -1;
    return 0;
}

/* quant_config=VALUE: inline JSON when it starts with '{', else a file holding it. */
static int load_json(quant_flat *f, int io_dtype, m2o_err *err)
{
    const char *v = f->json;
    while (*v == ' ' || *v == '\t') v++;
    char *text = NULL;
    if (*v != '{') {
        FILE *fp = fopen(v, "rb");
        if (!fp)
            return m2o_fail(err, "extra option quant_config=%s: cannot open: %s (give inline JSON starting "
                                 "with '{' or a readable file)", v, strerror(errno));
        text = calloc(1, 1 << 20);
        size_t n = text ? fread(text, 1, (1 << 20) - 1, fp) : 0;
        bool big = text && n == (1 << 20) - 1 && fgetc(fp) != EOF;
        fclose(fp);
        if (!text) return m2o_fail(err, "extra option quant_config: out of memory");
        if (big) { free(text); return m2o_fail(err, "extra option quant_config=%s: larger than 1 MiB", v); }
    }
    cJSON *root = cJSON_Parse(text ? text : v);
    free(text);
    if (!root)
        return m2o_fail(err, "extra option quant_config=%s: not valid JSON (near '%.20s')", f->json,
                        cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() : "");
    f->in_json = true;
    int rc = json_top(f, root, io_dtype, err);
    f->in_json = false;
    cJSON_Delete(root);
    return rc;
}

/* ---------- flat or JSON → quant_config ---------- */

/* moe_quant_type and its two legacy aliases must agree. */
static int resolve_moe_quant(const quant_flat *f, moe_quant *out, m2o_err *err)
{
    if (f->use_8bits_moe == 1 && f->use_fp4_moe == 1)
        return m2o_fail(err, "extra options use_8bits_moe=true and use_fp4_moe=true conflict: "
                             "MXFP4 experts are 4-bit; choose one (or moe_quant_type=int4|int8|mxfp4)");
    moe_quant alias = MOE_QUANT_INT4;
    bool alias_set = false;
    if (f->use_8bits_moe == 1) { alias = MOE_QUANT_INT8; alias_set = true; }
    if (f->use_fp4_moe == 1) { alias = MOE_QUANT_MXFP4; alias_set = true; }
    if (f->moe_quant_set && alias_set && alias != f->moe_quant_type)
        return m2o_fail(err, "extra option moe_quant_type contradicts use_8bits_moe/use_fp4_moe; "
                             "give only moe_quant_type=int4|int8|mxfp4");
    *out = f->moe_quant_set ? f->moe_quant_type : alias;
    return 0;
}

static quant_override *next_override(quant_config *q)
{
    quant_override *ov = &q->overrides[q->n_overrides++];
    memset(ov, 0, sizeof *ov);
    ov->preset = QPRESET_NONE;
    return ov;
}

/* Flat options become overrides the way the builder applies them: excluded nodes stay float in
 * every pass (first), then the presets, the later selector first (the builder lets a later
 * selector's bits replace an earlier one's for a node both select). */
static int flat_overrides(const quant_flat *f, quant_config *q, m2o_err *err)
{
    if (f->n_exclude + f->n_mixed > QUANT_MAX_OVERRIDES)
        return m2o_fail(err, "extra option nodes_to_exclude: more than %d entries", QUANT_MAX_OVERRIDES);
    for (int i = 0; i < f->n_exclude; i++) {
        quant_override *ov = next_override(q);
        snprintf(ov->name, sizeof ov->name, "%s", f->exclude[i]);
        ov->exclude = true;
    }
    for (int p = QPRESET_LINEAR_ATTN; p >= QPRESET_LAST_MATMUL; p--)
        for (int i = 0; i < f->n_mixed; i++)
            if (f->mixed_preset[i] == (qpreset)p) {
                quant_override *ov = next_override(q);
                ov->preset = (qpreset)p;
                ov->type = f->mixed_type[i];
            }
    return 0;
}

static void fill_config(const quant_flat *f, precision p, exec_provider ep, moe_quant mq, quant_config *q)
{
    bool int4 = p == PREC_INT4;
    q->weights_type = !int4 ? QTYPE_NONE : f->dense_type >= 0 ? (qtype)f->dense_type : QTYPE_INT4;
    q->block_size = f->block_size != QUANT_UNSET ? f->block_size : 32;
    bool sym_type = qtype_signed(q->weights_type);
    q->symmetric = (f->is_symmetric != 0) && sym_type;
    q->method = f->algo_set ? f->method : QMETHOD_DEFAULT;
    q->accuracy_level = f->accuracy_level != QUANT_UNSET ? f->accuracy_level : (ep == EP_CPU ? 4 : 0);
    q->quantize_matmul = f->op_matmul != 0;
    q->quantize_gather = f->op_gather == 1;
    q->moe_type = !int4 || f->moe_none ? QTYPE_NONE
                : mq == MOE_QUANT_MXFP4 ? QTYPE_MXFP4 : mq == MOE_QUANT_INT8 ? QTYPE_INT8 : QTYPE_INT4;
    if (f->moe_unsigned && q->moe_type != QTYPE_NONE && q->moe_type != QTYPE_MXFP4)
        q->moe_type = q->moe_type == QTYPE_INT8 ? QTYPE_UINT8 : QTYPE_UINT4;
    q->moe_per_channel = f->qmoe_block_size == 0;
    q->matmulnbits_weights_prepacked = f->mm_prepacked != QUANT_UNSET ? f->mm_prepacked : 0;
    q->use_qdq = f->use_qdq == 1;
    q->scale_search = f->scale_search == 1 || f->scale_search == SEARCH_EXPERTS;
    q->scale_search_matmul = f->scale_search == 1 || f->scale_search == SEARCH_MATMUL;
    q->int8_budget_percent = f->int8_budget_percent;
    q->int8_budget_bytes = f->int8_budget_bytes;
    q->from_json = f->json != NULL;
    q->filled = true;
}

/* MatMulNBits rules (ONNX Runtime's contrib op and the fpA_intB prepack of its CUDA kernel). */
static int check_dense_rules(const quant_flat *f, const quant_config *q, exec_provider ep, m2o_err *err)
{
    const char *bk = f->block_size_key ? f->block_size_key : "block_size";
    if (q->weights_type != QTYPE_NONE && q->block_size == 0)
        return m2o_fail(err, "extra option %s=0 (per channel): ONNX Runtime's MatMulNBits needs a block of 16, "
                             "32, 64, 128 or 256; use %s=32 (per-channel applies to experts: qmoe_block_size=0)",
                        bk, bk);
    int pp = q->matmulnbits_weights_prepacked;
    if (!pp) return 0;
    if (ep != EP_CUDA)
        return m2o_fail(err, "extra option matmulnbits_weights_prepacked=%d: the fpA_intB layout is for ONNX "
                             "Runtime's CUDA MatMulNBits; use -e cuda or remove the option", pp);
    if (q->weights_type == QTYPE_NONE)
        return m2o_fail(err, "extra option matmulnbits_weights_prepacked=%d needs quantized MatMul weights "
                             "(-p int4)", pp);
    if (!q->symmetric)
        return m2o_fail(err, "extra option matmulnbits_weights_prepacked=%d: the fpA_intB layout holds "
                             "symmetric weights only; drop is_symmetric=false or the option", pp);
    bool ok = pp == 1 ? (q->block_size >= 32 && q->block_size <= 128) : (q->block_size == 64 || q->block_size == 128);
    if (!ok)
        return m2o_fail(err, "extra option matmulnbits_weights_prepacked=%d with %s=%d: the %s layout takes "
                             "blocks %s", pp, bk, q->block_size, pp == 1 ? "SM80" : "SM90",
                        pp == 1 ? "32, 64 or 128" : "64 or 128");
    return 0;
}

/* Non-default values that only mean something for quantized weights are refused with float
 * precisions (the builder ignores them there); a default value given explicitly is harmless. */
static int check_needs_int4(const quant_flat *f, precision p, m2o_err *err)
{
    if (p == PREC_INT4) return 0;
    const char *k = f->algo_set && f->method != QMETHOD_DEFAULT ? f->algo_key
                  : f->n_mixed ? "matmul_mixed_precision" : f->exclude_key ? f->exclude_key
                  : f->is_symmetric == 0 ? f->is_symmetric_key
                  : (f->op_gather == 1 || f->op_matmul == 0) ? f->op_types_key
                  : f->mm_prepacked > 0 ? "matmulnbits_weights_prepacked"
                  : f->scale_search >= 1 ? "scale_search"
                  : (f->int8_budget_percent > 0 || f->int8_budget_bytes > 0) ? "int8_budget"
                  : f->use_qdq == 1 ? "use_qdq" : f->dense_type > QTYPE_NONE ? "weights.type" : NULL;
    if (k)
        return m2o_fail(err, "extra option %s needs -p int4: with -p fp32/fp16/bf16 no weight is quantized", k);
    return 0;
}

static int check_rules(const quant_flat *f, const quant_config *q, precision p, exec_provider ep, m2o_err *err)
{
    if (check_needs_int4(f, p, err) || check_dense_rules(f, q, ep, err)) return -1;
    if (q->moe_type == QTYPE_MXFP4 && f->is_symmetric == 0)
        return m2o_fail(err, "moe_quant_type=mxfp4 with %s=false: as onnxruntime-genai's builder, MXFP4 experts "
                             "need the symmetric int4 build; drop one of them", f->is_symmetric_key);
    if (f->dense_type >= 0 && f->is_symmetric == 1 && !qtype_signed((qtype)f->dense_type))
        return m2o_fail(err, "quant_config weights.type=uint%d with symmetric=true: uint types are the "
                             "asymmetric ones; use int%d or symmetric=false", qtype_bits((qtype)f->dense_type),
                        qtype_bits((qtype)f->dense_type));
    if (q->scale_search_matmul && q->method != QMETHOD_DEFAULT && q->weights_type != QTYPE_NONE) {
        static const char *const METHOD[] = {"default", "rtn", "k_quant"};
        /* the search replaces the MLAS rounding of algo_config=default; rtn and k_quant choose
         * their own scales, so the MatMuls would silently ignore it */
        if (f->json)
            return m2o_fail(err, "quant_config weights.scale_search=true with weights.method=%s: the search "
                                 "refines the default method's scales; drop one of them, or search the "
                                 "experts only (\"experts\")", METHOD[q->method]);
        return m2o_fail(err, "extra options scale_search=true and %s=%s: the search refines the default "
                             "method's scales (rtn and k_quant choose their own); drop one of them, or "
                             "scale_search=experts",
                        f->algo_key ? f->algo_key : "algo_config", f->algo_value);
    }
    if (q->int8_budget_percent > 0 || q->int8_budget_bytes > 0) {
        if (qtype_bits(q->weights_type) != 4)
            return m2o_fail(err, "extra option int8_budget=%s upgrades int4 MatMul weights to int8; the dense "
                                 "weights here are not int4", f->int8_budget_text);
    }
    return 0;
}

int quant_config_build(quant_flat *f, precision p, exec_provider ep, int io_dtype, quant_config *q, m2o_err *err)
{
    memset(q, 0, sizeof *q);
    if (f->json) {
        if (f->n_flat_quant)
            return m2o_fail(err, "extra options quant_config and %s both set quantization; put everything in "
                                 "quant_config or use the flat options only", f->first_flat_quant);
        if (load_json(f, io_dtype, err)) return -1;
    }
    moe_quant mq = MOE_QUANT_INT4;
    if (resolve_moe_quant(f, &mq, err)) return -1;
    f->moe_resolved = mq;
    fill_config(f, p, ep, mq, q);
    if (f->json) {
        memcpy(q->overrides, f->json_overrides, sizeof q->overrides[0] * (size_t)f->n_json_overrides);
        q->n_overrides = f->n_json_overrides;
    } else if (flat_overrides(f, q, err)) {
        return -1;
    }
    return check_rules(f, q, p, ep, err);
}

/* ---------- what this build cannot write yet ---------- */

/* What the expert side writes (issue 18): per-channel int experts (symmetric round to nearest,
 * the builder's math), uint4/uint8 experts with zero points, scale_search for int experts. The
 * combinations the kernels cannot do are refused here; the dims rules (odd 4-bit zero-point
 * blocks on the CPU) come with the model (options_resolve). */
static int check_experts_supported(const quant_config *q, m2o_err *err)
{
    bool uint = q->moe_type == QTYPE_UINT4 || q->moe_type == QTYPE_UINT8;
    if (q->moe_per_channel && q->scale_search)
        return m2o_fail(err, "extra options qmoe_block_size=0 (per channel) and scale_search=true: the scale "
                             "search works on blocks of at most 256; give a qmoe_block_size or drop scale_search");
    if (q->moe_per_channel && uint)
        return m2o_fail(err, "moe_quant_type=uint%d with qmoe_block_size=0 (per channel): ONNX Runtime's CUDA "
                             "QMoE refuses zero points with per-channel scales and moe2onnx does not write them "
                             "for the CPU; use a block size, or moe_quant_type=int%d",
                        qtype_bits(q->moe_type), qtype_bits(q->moe_type));
    return 0;
}

int quant_config_check_supported(const quant_config *q, m2o_err *err)
{
    if (check_experts_supported(q, err))
        return -1;
    static const char *const TAIL = "not yet supported by this build (docs/QUANTIZATION.md); remove it";
    /* Written for MatMuls (graph/linear.c): int4/uint4/int8/uint8 bodies or none beside quantized
     * experts, every algo_config (base methods and legacy values), presets, nodes_to_exclude, JSON
     * overrides, scale_search, int8_budget (graph/int8_budget.c). What follows is not written yet. */
    if (q->weights_type != QTYPE_NONE && q->moe_type == QTYPE_NONE)
        return m2o_fail(err, "quant_config moe.type=none (float experts beside quantized MatMul weights): %s", TAIL);
    if (q->weights_type != QTYPE_NONE && (!q->quantize_matmul || q->quantize_gather))
        return m2o_fail(err, "extra option op_types_to_quantize (other than MatMul): %s", TAIL);
    for (int i = 0; i < q->n_overrides; i++) {
        const quant_override *ov = &q->overrides[i];
        if (!ov->exclude && (!strcmp(ov->op_type, "Gather") || !strcmp(ov->role, "embed") ||
                             !strcmp(ov->name, "/model/embed_tokens/Gather")))
            return m2o_fail(err, "quant_config weights.overrides[%d] quantizes the embedding (Gather as "
                                 "GatherBlockQuantized): %s", i, TAIL);
    }
    if (q->matmulnbits_weights_prepacked)
        return m2o_fail(err, "extra option matmulnbits_weights_prepacked=%d: %s", q->matmulnbits_weights_prepacked, TAIL);
    if (q->use_qdq)
        return m2o_fail(err, "extra option use_qdq=true (QDQ instead of MatMulNBits): %s", TAIL);
    return 0;
}
