/* The MLP block of the Qwen MoE families (Qwen3-MoE, Qwen2-MoE, Qwen3.5-MoE), following
 * transformers' modeling_qwen3_moe.py / modeling_qwen2_moe.py:
 *
 *   MLP of a sparse layer (i ∉ mlp_only_layers and (i + 1) % decoder_sparse_step == 0):
 *     router mlp.gate [E, H] without bias; softmax over all experts → top-k → renormalised only
 *     with norm_topk_prob; experts down(silu(gate(x)) · up(x)) (plain SwiGLU: no clamp, alpha 1,
 *     beta 0); qwen2_moe adds sigmoid(x · shared_expert_gate^T) · shared_expert(x).
 *   MLP of a dense layer: mlp.{gate,up,down}_proj of intermediate_size.
 *
 * Expert layouts accepted (rows are output features, as nn.Linear stores them):
 *   per expert: mlp.experts.{j}.{gate,up}_proj.weight [I, H], mlp.experts.{j}.down_proj.weight [H, I]
 *   fused:      mlp.experts.gate_up_proj [E, 2I, H] (gate rows then up rows),
 *               mlp.experts.down_proj [E, H, I]
 * Both become gate/up-interleaved rows for QMoE/MoE swiglu_fusion=1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch/arch.h"
#include "arch/family.h"
#include "graph/blocks.h"

/* gate/up/down projections of a dense MLP or a shared expert */
typedef struct swiglu_mlp {
    linear_src gate, up, down;
} swiglu_mlp;

/* Everything one layer's MLP needs, kept off the stack (expert tables are large). */
typedef struct layer_mlp {
    expert_src fc1, fc2;
    swiglu_mlp dense;  /* dense layer, or the shared expert of a sparse one */
} layer_mlp;

static int load_fused_experts(gb *b, int L, const st_tensor *gate_up, layer_mlp *x, m2o_err *err)
{
    const model_desc *md = b->md;
    int64_t E = md->num_experts, H = md->hidden_size, I = md->moe_intermediate_size;
    int64_t s1[3] = {E, 2 * I, H}, s2[3] = {E, H, I};
    x->fc1.kind = x->fc2.kind = EXPERT_FUSED_NK;
    x->fc1.interleave = true; /* [gate; up] halves → interleaved rows */
    if (gb_tensorf(b, &x->fc1.t, err, true, 3, s1, "%s", gate_up->name) ||
        gb_tensorf(b, &x->fc2.t, err, true, 3, s2, "%s", x->fc2.what))
        return m2o_wrap(err, "layer %d fused experts", L);
    return 0;
}

static int load_per_expert(gb *b, int L, layer_mlp *x, m2o_err *err)
{
    const model_desc *md = b->md;
    const char *p = md->prefix;
    int64_t H = md->hidden_size, I = md->moe_intermediate_size;
    int64_t sgu[2] = {I, H}, sd[2] = {H, I};
    x->fc1.kind = x->fc2.kind = EXPERT_PER_EXPERT;
    for (int e = 0; e < md->num_experts; e++) {
        const char *ex = "%slayers.%d.mlp.experts.%d.%s_proj.weight";
        if (gb_tensorf(b, &x->fc1.per[e], err, true, 2, sgu, ex, p, L, e, "gate") ||
            gb_tensorf(b, &x->fc1.up[e], err, true, 2, sgu, ex, p, L, e, "up") ||
            gb_tensorf(b, &x->fc2.per[e], err, true, 2, sd, ex, p, L, e, "down"))
            /* "neither layout" only when there is no per-expert tensor at all; otherwise the
             * missing or misshapen tensor's own message says it */
            return e == 0 && !x->fc1.per[0]
                       ? m2o_wrap(err, "layer %d has neither fused experts (%s) nor per-expert "
                                       "weights", L, x->fc1.what)
                       : -1;
    }
    return 0;
}

static int load_experts(gb *b, int L, layer_mlp *x, m2o_err *err)
{
    const model_desc *md = b->md;
    int64_t E = md->num_experts, H = md->hidden_size, I = md->moe_intermediate_size;
    if (E > EXPERT_MAX)
        return m2o_fail(err, "config.json: num_experts %lld exceeds the supported %d", (long long)E,
                        EXPERT_MAX);
    x->fc1 = (expert_src){.E = E, .N = 2 * I, .K = H};
    x->fc2 = (expert_src){.E = E, .N = H, .K = I};
    snprintf(x->fc1.what, sizeof x->fc1.what, "%slayers.%d.mlp.experts.gate_up_proj", md->prefix,
             L);
    snprintf(x->fc2.what, sizeof x->fc2.what, "%slayers.%d.mlp.experts.down_proj", md->prefix, L);
    const st_tensor *gate_up = ckpt_find(b->ck, x->fc1.what);
    return gate_up ? load_fused_experts(b, L, gate_up, x, err) : load_per_expert(b, L, x, err);
}

/* mlp.{gate,up,down}_proj (dense layer) or mlp.shared_expert.* (which = "shared_expert."). */
static int load_mlp(gb *b, int L, const char *which, int64_t inter, swiglu_mlp *m, m2o_err *err)
{
    const model_desc *md = b->md;
    const char *p = md->prefix;
    int64_t H = md->hidden_size;
    int64_t sgu[2] = {inter, H}, sd[2] = {H, inter};
    memset(m, 0, sizeof *m);
    m->gate.n_parts = m->up.n_parts = m->down.n_parts = 1;
    const char *f = "%slayers.%d.mlp.%s%s_proj.weight";
    return gb_tensorf(b, &m->gate.w[0], err, true, 2, sgu, f, p, L, which, "gate") ||
                   gb_tensorf(b, &m->up.w[0], err, true, 2, sgu, f, p, L, which, "up") ||
                   gb_tensorf(b, &m->down.w[0], err, true, 2, sd, f, p, L, which, "down")
               ? -1
               : 0;
}

/* Routing as transformers does it: softmax over all experts → top-k → renormalised only with
 * norm_topk_prob. Without it, QMoE gets router_weights = Softmax(logits) and
 * normalize_routing_weights=0: the CPU kernel renormalises unless given router_weights
 * [probed]; the CUDA kernel's own gating (softmax over all experts, renormalised only with the
 * attribute, per its source) gives the same weights whether or not it reads them. The float MoE
 * op has no router_weights input: gb_moe handles it. */
static int build_sparse_mlp(gb *b, int L, layer_mlp *x, const char *input, gname *out,
                            m2o_err *err)
{
    const model_desc *md = b->md;
    int64_t E = md->num_experts, H = md->hidden_size;
    bool qmoe = b->o->precision == PREC_INT4;
    moe_desc m = {.layer = L, .num_experts = E, .top_k = md->top_k, .hidden = H,
                  .inter = md->moe_intermediate_size, .fc1 = &x->fc1, .fc2 = &x->fc2,
                  .swiglu_limit = md->swiglu_limit, .alpha = md->swiglu_alpha,
                  .beta = md->swiglu_beta,
                  .normalize_routing = md->norm_topk_prob,
                  .router_weights = !md->norm_topk_prob && qmoe};
    int64_t sr[2] = {E, H}, sg[2] = {1, H};
    const st_tensor *shared_gate = NULL;
    m.router.n_parts = 1;
    if (load_experts(b, L, x, err) ||
        gb_tensorf(b, &m.router.w[0], err, true, 2, sr, "%slayers.%d.mlp.gate.weight", md->prefix,
                   L))
        return -1;
    bool shared = md->shared_expert_intermediate_size > 0;
    if (shared &&
        (load_mlp(b, L, "shared_expert.", md->shared_expert_intermediate_size, &x->dense, err) ||
         gb_tensorf(b, &shared_gate, err, true, 2, sg, "%slayers.%d.mlp.shared_expert_gate.weight",
                    md->prefix, L)))
        return -1;
    if (!shared)
        return gb_moe(b, &m, input, out, err);
    gname routed;
    return gb_moe(b, &m, input, &routed, err) ||
                   gb_shared_expert(b, L, shared_gate, &x->dense.gate, &x->dense.up,
                                    &x->dense.down, input, routed.s, out, err)
               ? -1
               : 0;
}

int qwen_moe_build_mlp(gb *b, int L, const char *input, gname *out, m2o_err *err)
{
    layer_mlp *x = calloc(1, sizeof *x);
    if (!x)
        return m2o_fail(err, "out of memory describing layer %d experts", L);
    int rc;
    if (b->md->sparse_layer[L]) {
        rc = build_sparse_mlp(b, L, x, input, out, err);
    } else {
        gname base = gname_fmt("/model/layers.%d/mlp", L);
        gname init = gname_fmt("model.layers.%d.mlp", L);
        swiglu_mlp *d = &x->dense;
        rc = load_mlp(b, L, "", b->md->intermediate_size, d, err);
        if (!rc)
            rc = gb_mlp_swiglu(b, base.s, init.s, &d->gate, &d->up, &d->down, "mlp", L,
                               input, out, err);
    }
    free(x);
    return rc;
}

int qwen_moe_check_mlp(const model_desc *md, m2o_err *err)
{
    const char *t = md->model_type;
    if (md->hidden_size < 1 || md->head_dim < 1 || md->vocab_size < 1)
        return m2o_fail(err, "config.json: %s needs positive hidden_size, head_dim and "
                             "vocab_size", t);
    bool any_sparse = false, any_dense = false;
    for (int i = 0; i < md->num_layers; i++) {
        any_sparse |= md->sparse_layer[i];
        any_dense |= !md->sparse_layer[i];
    }
    if (any_sparse && (md->num_experts < 1 || md->top_k < 1 || md->moe_intermediate_size < 1))
        return m2o_fail(err, "config.json: %s needs positive num_experts, num_experts_per_tok "
                             "and moe_intermediate_size", t);
    if (any_dense && md->intermediate_size < 1)
        return m2o_fail(err, "config.json: %s has dense layers (mlp_only_layers / "
                             "decoder_sparse_step) but no positive intermediate_size", t);
    return 0;
}

/* ---- config.json fields Qwen2-MoE and Qwen3-MoE share ---- */

int qwen_moe_parse_mlp(const cfg_src *s, model_desc *d)
{
    if (cfg_sparse_step_layers(s, d) ||
        cfg_get_size(s, "moe_intermediate_size", true, 0, &d->moe_intermediate_size) ||
        cfg_get_size(s, "intermediate_size", cfg_any_dense(d), 0, &d->intermediate_size) ||
        cfg_get_bool(s, "norm_topk_prob", false, &d->norm_topk_prob))
        return -1;
    qwen_plain_swiglu(d);
    return 0;
}

void qwen_plain_swiglu(model_desc *d)
{
    d->swiglu_limit = 0.0f; /* plain SwiGLU: no clamp, sigmoid gain 1, nothing added */
    d->swiglu_alpha = 1.0f;
    d->swiglu_beta = 0.0f;
}

int qwen_moe_parse_sliding_window(const cfg_src *s, model_desc *d)
{
    bool use;
    if (cfg_get_bool(s, "use_sliding_window", false, &use) ||
        (use && cfg_get_int(s, "sliding_window", false, 4096, &d->sliding_window)))
        return -1;
    if (d->sliding_window < 0)
        return m2o_fail(s->err, "%s: sliding_window is negative — fix config.json", s->what);
    return 0;
}
