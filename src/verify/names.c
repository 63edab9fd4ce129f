#include "verify/names.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* module (one %d = layer, or none) -> checkpoint weights stacked along N, each with alternatives
 * separated by '|'. "{p}" is the text decoder's prefix ("model." or "model.language_model."),
 * "{L}" the layer; ".weight" is appended. */
typedef struct vname_rule {
    const char *module;
    vrole role;
    const char *parts[VLIN_MAX_PARTS];
} vname_rule;

static const vname_rule kRules[] = {
    {"/model/layers.%d/attn/qkv_proj", VROLE_LINEAR,
     {"{p}layers.{L}.self_attn.q_proj", "{p}layers.{L}.self_attn.k_proj",
      "{p}layers.{L}.self_attn.v_proj"}},
    {"/model/layers.%d/attn/q_proj", VROLE_LINEAR, {"{p}layers.{L}.self_attn.q_proj"}},
    {"/model/layers.%d/attn/k_proj", VROLE_LINEAR, {"{p}layers.{L}.self_attn.k_proj"}},
    {"/model/layers.%d/attn/v_proj", VROLE_LINEAR, {"{p}layers.{L}.self_attn.v_proj"}},
    {"/model/layers.%d/attn/o_proj", VROLE_LINEAR, {"{p}layers.{L}.self_attn.o_proj"}},
    {"/model/layers.%d/moe/router", VROLE_ROUTER,
     {"{p}layers.{L}.mlp.router|{p}layers.{L}.mlp.gate"}},
    {"/model/layers.%d/moe/shared_expert_gate", VROLE_KEEP_FLOAT,
     {"{p}layers.{L}.mlp.shared_expert_gate"}},
    {"/model/layers.%d/moe/shared_expert/gate_up_proj", VROLE_LINEAR,
     {"{p}layers.{L}.mlp.shared_expert.gate_proj", "{p}layers.{L}.mlp.shared_expert.up_proj"}},
    {"/model/layers.%d/moe/shared_expert/gate_proj", VROLE_LINEAR,
     {"{p}layers.{L}.mlp.shared_expert.gate_proj"}},
    {"/model/layers.%d/moe/shared_expert/up_proj", VROLE_LINEAR,
     {"{p}layers.{L}.mlp.shared_expert.up_proj"}},
    {"/model/layers.%d/moe/shared_expert/down_proj", VROLE_LINEAR,
     {"{p}layers.{L}.mlp.shared_expert.down_proj"}},
    /* graph/mlp.c gb_shared_expert's names (the layer's shared expert beside its moe/) */
    {"/model/layers.%d/shared_expert_gate", VROLE_KEEP_FLOAT,
     {"{p}layers.{L}.mlp.shared_expert_gate"}},
    {"/model/layers.%d/shared_expert/gate_proj", VROLE_LINEAR,
     {"{p}layers.{L}.mlp.shared_expert.gate_proj"}},
    {"/model/layers.%d/shared_expert/up_proj", VROLE_LINEAR,
     {"{p}layers.{L}.mlp.shared_expert.up_proj"}},
    {"/model/layers.%d/shared_expert/down_proj", VROLE_LINEAR,
     {"{p}layers.{L}.mlp.shared_expert.down_proj"}},
    {"/model/layers.%d/mlp/gate_up_proj", VROLE_LINEAR,
     {"{p}layers.{L}.mlp.gate_proj", "{p}layers.{L}.mlp.up_proj"}},
    {"/model/layers.%d/mlp/gate_proj", VROLE_LINEAR, {"{p}layers.{L}.mlp.gate_proj"}},
    {"/model/layers.%d/mlp/up_proj", VROLE_LINEAR, {"{p}layers.{L}.mlp.up_proj"}},
    {"/model/layers.%d/mlp/down_proj", VROLE_LINEAR, {"{p}layers.{L}.mlp.down_proj"}},
    {"/model/layers.%d/linear_attn/in_proj_qkv", VROLE_LINEAR,
     {"{p}layers.{L}.linear_attn.in_proj_qkv"}},
    {"/model/layers.%d/linear_attn/in_proj_z", VROLE_LINEAR,
     {"{p}layers.{L}.linear_attn.in_proj_z"}},
    /* in_proj_a/b stay float by default, but the linear_attn preset and overrides may quantize
     * them as onnxruntime-genai's builder does (docs/QUANTIZATION.md) */
    {"/model/layers.%d/linear_attn/in_proj_a", VROLE_LINEAR,
     {"{p}layers.{L}.linear_attn.in_proj_a"}},
    {"/model/layers.%d/linear_attn/in_proj_b", VROLE_LINEAR,
     {"{p}layers.{L}.linear_attn.in_proj_b"}},
    {"/model/layers.%d/linear_attn/out_proj", VROLE_LINEAR,
     {"{p}layers.{L}.linear_attn.out_proj"}},
    /* graph/linear_attention.c's names (onnxruntime-genai's builder: qkv/z/a/b_proj) */
    {"/model/layers.%d/linear_attn/qkv_proj", VROLE_LINEAR,
     {"{p}layers.{L}.linear_attn.in_proj_qkv"}},
    {"/model/layers.%d/linear_attn/z_proj", VROLE_LINEAR,
     {"{p}layers.{L}.linear_attn.in_proj_z"}},
    {"/model/layers.%d/linear_attn/a_proj", VROLE_LINEAR,
     {"{p}layers.{L}.linear_attn.in_proj_a"}},
    {"/model/layers.%d/linear_attn/b_proj", VROLE_LINEAR,
     {"{p}layers.{L}.linear_attn.in_proj_b"}},
    {"/lm_head", VROLE_LINEAR, {"lm_head|{p}embed_tokens"}},
};

void vnames_module(const char *node_name, char *buf, size_t len)
{
    snprintf(buf, len, "%s", node_name);
    char *slash = strrchr(buf, '/');
    if (slash && slash != buf)
        *slash = 0;
}

int vnames_layer(const char *name)
{
    const char *p = strstr(name, "layers.");
    if (!p || !isdigit((unsigned char)p[7]))
        return -1;
    return atoi(p + 7);
}

/* Matches module against pattern (at most one %d); *layer = the number or -1. */
static bool match_module(const char *pattern, const char *module, int *layer)
{
    const char *d = strstr(pattern, "%d");
    *layer = -1;
    if (!d)
        return strcmp(pattern, module) == 0;
    size_t pre = (size_t)(d - pattern);
    if (strncmp(pattern, module, pre) || !isdigit((unsigned char)module[pre]))
        return false;
    char *end;
    long v = strtol(module + pre, &end, 10);
    if (strcmp(end, d + 2) || v < 0 || v > 1000000)
        return false;
    *layer = (int)v;
    return true;
}

/* One alternative with {p} and {L} substituted, plus ".weight". */
static void expand(const char *alt, size_t alt_len, const model_desc *md, int layer, char *out,
                   size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < alt_len && o + 1 < len;) {
        if (!strncmp(alt + i, "{p}", 3)) {
            o += (size_t)snprintf(out + o, len - o, "%s", md->prefix);
            i += 3;
        } else if (!strncmp(alt + i, "{L}", 3)) {
            o += (size_t)snprintf(out + o, len - o, "%d", layer);
            i += 3;
        } else {
            out[o++] = alt[i++];
        }
        if (o >= len)
            o = len - 1;
    }
    out[o] = 0;
    snprintf(out + o, len - o, ".weight");
}

static const st_tensor *resolve_part(const char *spec, const model_desc *md, int layer,
                                     const st_checkpoint *ck, char *tried, size_t tried_len)
{
    const char *s = spec;
    while (*s) {
        size_t n = strcspn(s, "|");
        char name[256];
        expand(s, n, md, layer, name, sizeof name);
        const st_tensor *t = ck ? ckpt_find(ck, name) : NULL;
        size_t used = strlen(tried);
        if (used + 1 < tried_len)
            snprintf(tried + used, tried_len - used, "%s%s", used ? ", " : "", name);
        if (t)
            return t;
        s += n;
        if (*s == '|')
            s++;
    }
    return NULL;
}

bool vnames_linear(const char *node_name, const model_desc *md, const st_checkpoint *ck,
                   vrole *role, vlinear *lin, char *tried, size_t tried_len)
{
    char module[256];
    vnames_module(node_name, module, sizeof module);
    if (tried_len)
        tried[0] = 0;
    for (size_t r = 0; r < sizeof kRules / sizeof kRules[0]; r++) {
        int layer;
        if (!match_module(kRules[r].module, module, &layer))
            continue;
        *role = kRules[r].role;
        if (lin) {
            memset(lin, 0, sizeof *lin);
            bool ok = true;
            for (int p = 0; p < VLIN_MAX_PARTS && kRules[r].parts[p]; p++) {
                const st_tensor *t = resolve_part(kRules[r].parts[p], md, layer, ck, tried,
                                                  tried_len);
                if (!t)
                    ok = false;
                lin->w[lin->n_parts++] = t;
            }
            if (!ok)
                lin->n_parts = 0;
        }
        return true;
    }
    return false;
}
