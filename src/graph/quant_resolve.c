/* Per tensor: what the quantization options make of one MatMul or expert tensor (graph/quant_resolve.h). */
#include "graph/quant_resolve.h"

#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <string.h>

#include "onnx/ort_rules.h"

int qtype_bits(qtype t)
{
    return t == QTYPE_INT8 || t == QTYPE_UINT8 ? 8 : t == QTYPE_NONE ? 0 : 4;
}

bool qtype_signed(qtype t) { return t != QTYPE_UINT4 && t != QTYPE_UINT8; }

static const char *const PRESET_NAMES[] = {"last_matmul", "mixed_layers", "linear_attn"};

const char *qpreset_name(qpreset p)
{
    return p >= 0 && p < (qpreset)(sizeof PRESET_NAMES / sizeof PRESET_NAMES[0]) ? PRESET_NAMES[p] : "?";
}

/* ---------- per-tensor resolution ---------- */

/* RK_DENSE_FLOAT: a MatMul moe2onnx keeps in float unless an override or preset names it
 * (Gated DeltaNet's in_proj_a/in_proj_b, one row per value head; the builder quantizes them). */
typedef enum role_kind { RK_DENSE, RK_DENSE_FLOAT, RK_GATHER, RK_NEVER, RK_EXPERTS } role_kind;

/* Every role, its builder node name ("%d" = layer) and how it is quantized. */
static const struct role_info { const char *role, *builder_name; role_kind kind; } ROLES[] = {
    {"embed", "/model/embed_tokens/Gather", RK_GATHER},
    {"lm_head", "/lm_head/MatMul", RK_DENSE},
    {"attn.qkv", "/model/layers.%d/attn/qkv_proj/MatMul", RK_DENSE},
    {"attn.q", "/model/layers.%d/attn/q_proj/MatMul", RK_DENSE},
    {"attn.k", "/model/layers.%d/attn/k_proj/MatMul", RK_DENSE},
    {"attn.v", "/model/layers.%d/attn/v_proj/MatMul", RK_DENSE},
    {"attn.o", "/model/layers.%d/attn/o_proj/MatMul", RK_DENSE},
    {"mlp.gate", "/model/layers.%d/mlp/gate_proj/MatMul", RK_DENSE},
    {"mlp.up", "/model/layers.%d/mlp/up_proj/MatMul", RK_DENSE},
    {"mlp.down", "/model/layers.%d/mlp/down_proj/MatMul", RK_DENSE},
    {"linear_attn.in_proj_qkv", "/model/layers.%d/linear_attn/in_proj_qkv/MatMul", RK_DENSE},
    {"linear_attn.in_proj_z", "/model/layers.%d/linear_attn/in_proj_z/MatMul", RK_DENSE},
    {"linear_attn.in_proj_a", "/model/layers.%d/linear_attn/in_proj_a/MatMul", RK_DENSE_FLOAT},
    {"linear_attn.in_proj_b", "/model/layers.%d/linear_attn/in_proj_b/MatMul", RK_DENSE_FLOAT},
    {"linear_attn.out_proj", "/model/layers.%d/linear_attn/out_proj/MatMul", RK_DENSE},
    {"shared_expert.gate", "/model/layers.%d/shared_expert/gate_proj/MatMul", RK_DENSE},
    {"shared_expert.up", "/model/layers.%d/shared_expert/up_proj/MatMul", RK_DENSE},
    {"shared_expert.down", "/model/layers.%d/shared_expert/down_proj/MatMul", RK_DENSE},
    {"shared_expert_gate", "/model/layers.%d/shared_expert_gate/MatMul", RK_NEVER},
    {"router", "", RK_NEVER},
    {"experts.fc1", "", RK_EXPERTS},
    {"experts.fc2", "", RK_EXPERTS},
};

static const struct role_info *find_role(const char *role)
{
    for (size_t i = 0; role && i < sizeof ROLES / sizeof ROLES[0]; i++)
        if (!strcmp(role, ROLES[i].role)) return &ROLES[i];
    return NULL;
}

/* "attn.*" names the family of roles "attn.<x>". */
static bool role_in_family(const char *role, const char *family)
{
    size_t n = strlen(family);
    if (n < 2 || strcmp(family + n - 2, ".*")) return false;
    return !strncmp(role, family, n - 1);
}

bool quant_role_known(const char *role, bool allow_family)
{
    if (find_role(role)) return true;
    if (!allow_family) return false;
    for (size_t i = 0; i < sizeof ROLES / sizeof ROLES[0]; i++)
        if (role_in_family(ROLES[i].role, role)) return true;
    return false;
}

void quant_builder_node_name(const char *role, int layer, char *buf, int len)
{
    const struct role_info *r = find_role(role);
    if (!r || !r->builder_name[0]) { if (len > 0) buf[0] = 0; return; }
    snprintf(buf, (size_t)len, r->builder_name, layer);
}

/* llama.cpp's choice, as the builder copies it: the first and last eighth of the layers and
 * every third layer in between. round() there is Python's (halves to even), hence rint. */
static bool mixed_layer(int i, int n)
{
    long r = lrint(n / 8.0);
    long m = ((i - r) % 3 + 3) % 3;
    return 8L * i < n || 8L * i >= 7L * n || m == 2;
}

static bool preset_selects(qpreset p, const quant_site *s)
{
    const char *r = s->role;
    switch (p) {
    case QPRESET_LAST_MATMUL: return !strcmp(r, "lm_head");
    case QPRESET_MIXED_LAYERS:
        return (!strcmp(r, "attn.qkv") || !strcmp(r, "attn.v") || !strcmp(r, "mlp.down")) &&
               mixed_layer(s->layer, s->num_layers);
    case QPRESET_LINEAR_ATTN:
        return role_in_family(r, "linear_attn.*") || (s->linear_attn_layer && role_in_family(r, "mlp.*"));
    default: return false;
    }
}

static bool name_matches(const quant_override *ov, const char *builder, const char *node)
{
    if (ov->name[0] && strcmp(ov->name, builder) && !(node && !strcmp(ov->name, node))) return false;
    if (!ov->name_regex[0]) return true;
    regex_t re;
    if (regcomp(&re, ov->name_regex, REG_EXTENDED | REG_NOSUB)) return false; /* checked at parse */
    bool hit = !regexec(&re, builder, 0, NULL, 0) || (node && !regexec(&re, node, 0, NULL, 0));
    regfree(&re);
    return hit;
}

static bool override_matches(const quant_override *ov, const quant_site *s, const struct role_info *ri,
                             const char *builder)
{
    if (ov->role[0] && strcmp(ov->role, s->role) && !role_in_family(s->role, ov->role)) return false;
    if (ov->op_type[0] && strcmp(ov->op_type, ri->kind == RK_GATHER ? "Gather" : "MatMul")) return false;
    if (ov->has_layers && (s->layer < 0 || !(ov->layers[s->layer / 64] >> (s->layer % 64) & 1))) return false;
    if (ov->preset != QPRESET_NONE && !preset_selects(ov->preset, s)) return false;
    return name_matches(ov, builder, s->node_name);
}

static void set_float(tensor_quant *t, const char *why)
{
    memset(t, 0, sizeof *t);
    t->kind = TQ_FLOAT;
    t->accuracy_level = -1;
    t->why = why;
}

static void resolve_experts(const export_opts *o, tensor_quant *t)
{
    const quant_config *q = &o->quant;
    if (o->precision != PREC_INT4) { set_float(t, "float precision"); return; }
    if (q->moe_type == QTYPE_NONE) { set_float(t, "override"); return; }
    memset(t, 0, sizeof *t);
    t->why = "experts";
    t->accuracy_level = -1;
    t->symmetric = q->moe_type != QTYPE_UINT4 && q->moe_type != QTYPE_UINT8;
    t->bits = q->moe_type == QTYPE_INT8 || q->moe_type == QTYPE_UINT8 ? 8 : 4;
    t->kind = q->moe_type == QTYPE_MXFP4 ? TQ_MXFP4 : TQ_INT;
    t->block_size = q->moe_type == QTYPE_MXFP4 ? ORT_MXFP4_BLOCK : q->moe_per_channel ? 0 : o->qmoe_block_size;
    t->prepacked = o->qmoe_weights_prepacked;
    t->scale_search = q->scale_search && t->kind == TQ_INT;
}

static const char *preset_why(qpreset p)
{
    return p == QPRESET_NONE ? "override" : PRESET_NAMES[p];
}

/* A MatMul or Gather weight: the first matching override, else the body type. */
static void resolve_dense(const quant_config *q, const quant_site *s, const struct role_info *ri, tensor_quant *t)
{
    if (q->weights_type == QTYPE_NONE) { set_float(t, "float precision"); return; }
    if (ri->kind == RK_GATHER ? !q->quantize_gather : !q->quantize_matmul) {
        set_float(t, "op_types_to_quantize");
        return;
    }
    char builder[256];
    quant_builder_node_name(s->role, s->layer, builder, sizeof builder);
    qtype type = q->weights_type;
    const char *why = "default";
    for (int i = 0; i < q->n_overrides; i++) {
        const quant_override *ov = &q->overrides[i];
        if (!override_matches(ov, s, ri, builder)) continue;
        if (ov->exclude) { set_float(t, q->from_json ? "override" : "nodes_to_exclude"); return; }
        if (ov->type == QTYPE_NONE) { set_float(t, "override"); return; }
        type = ov->type;
        why = preset_why(ov->preset);
        break;
    }
    if (ri->kind == RK_DENSE_FLOAT && !strcmp(why, "default")) { set_float(t, "moe2onnx default"); return; }
    memset(t, 0, sizeof *t);
    t->kind = TQ_INT;
    t->why = why;
    t->bits = ri->kind == RK_GATHER ? 4 : qtype_bits(type); /* GatherBlockQuantized is 4-bit only */
    t->symmetric = q->symmetric && qtype_signed(type);
    t->block_size = q->block_size;
    t->method = q->method;
    t->scale_search = q->scale_search_matmul;
    t->accuracy_level = ri->kind == RK_GATHER ? -1 : q->accuracy_level;
    t->prepacked = ri->kind != RK_GATHER && t->symmetric ? q->matmulnbits_weights_prepacked : 0;
    t->budget_candidate = ri->kind == RK_DENSE && t->bits == 4 && !strcmp(why, "default") &&
                          (q->int8_budget_percent > 0 || q->int8_budget_bytes > 0);
}

int quant_resolve(const export_opts *o, const quant_site *s, tensor_quant *out, m2o_err *err)
{
    const struct role_info *ri = find_role(s->role);
    if (!ri)
        return m2o_fail(err, "quant_resolve: unknown role '%s' (the roles are listed in quant_options.h)",
                        s->role ? s->role : "(null)");
    bool global = !strcmp(s->role, "embed") || !strcmp(s->role, "lm_head");
    if (global ? s->layer != -1 : (s->layer < 0 || s->layer >= s->num_layers || s->layer >= QUANT_MAX_LAYERS))
        return m2o_fail(err, "quant_resolve: role %s with layer %d of %d: %s", s->role, s->layer, s->num_layers,
                        global ? "this role has no layer (pass -1)" : "layer out of range");
    if (ri->kind == RK_NEVER) { set_float(out, "never quantized"); return 0; }
    if (ri->kind == RK_EXPERTS) { resolve_experts(o, out); return 0; }
    resolve_dense(&o->quant, s, ri, out);
    return 0;
}
