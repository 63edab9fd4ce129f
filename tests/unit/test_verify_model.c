/* verify end to end on model folders: good exports of every fixture pass; each known corruption
 * (scales made positive, gpt-oss experts N<->K, gate/up not interleaved, nibble order, CUTLASS
 * layout left raw, duplicated node name, router quantized) written into a copy of a good export
 * fails and is named.
 *
 * Good exports come from two places: a small exporter in this file (graph.h + quant.h, written
 * from docs/FORMATS.md §4-§11, emitting the exporter's names) for every fixture and layout, and the real
 * `moe2onnx` binary next to this test when it can export the fixture (then the same corruption
 * suite runs on its output too). */
#include "test.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "arch/family.h"
#include "arch/model_desc.h"
#include "checkpoint/safetensors.h"
#include "common/half.h"
#include "onnx/genai_config.h"
#include "onnx/graph.h"
#include "onnx/model_reader.h"
#include "onnx/onnx.pb-c.h"
#include "quant/quant.h"
#include "verify/source.h"
#include "verify/verify.h"

/* ------------------------------------------------------------------ small exporter */

typedef struct mini_opts {
    bool cuda;       /* io float16, CUTLASS SM80 int experts */
    bool quantize;   /* int4 linears + QMoE; else float MatMul + MoE */
    int moe_bits;    /* 4 or 8 */
    bool mxfp4;      /* QMoE fp4 (cuda) */
    int qmoe_bs;
} mini_opts;

typedef struct mini {
    graph *g;
    const model_desc *md;
    const st_checkpoint *ck;
    const mini_opts *o;
    int io;
    int n_nodes;
} mini;

static qscale_type qscale_of(int io)
{
    return io == ONNX_FLOAT16 ? QSCALE_F16 : QSCALE_F32;
}

static void to_io(const float *src, void *dst, size_t n, int io)
{
    if (io == ONNX_FLOAT16)
        convert_f32_to_f16(src, dst, n);
    else
        memcpy(dst, src, n * 4);
}

/* Rows of named checkpoint tensors stacked, as float [N][K]; NULL when one is missing. */
static float *read_stack(const mini *m, const char *const *names, int n, int64_t *N, int64_t *K)
{
    *N = 0;
    *K = 0;
    const st_tensor *t[4];
    for (int i = 0; i < n; i++) {
        t[i] = ckpt_find(m->ck, names[i]);
        if (!t[i])
            return NULL;
        *N += t[i]->shape[0];
        *K = t[i]->shape[1];
    }
    float *w = malloc((size_t)(*N * *K) * 4);
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        st_read_f32(t[i], 0, t[i]->numel, w + off, NULL);
        off += t[i]->numel;
    }
    return w;
}

/* A linear on value "h": MatMulNBits (int4 bs32) or MatMul [K, N]; output named `out` or
 * "{base}/MatMul_Q4/output_0" or "{base}/MatMul/output_0". */
static void mini_linear(mini *m, const char *base, const char *init, const char *const *names,
                        int n, bool quantize, const char *out)
{
    int64_t N = 0, K = 0;
    float *w = read_stack(m, names, n, &N, &K);
    if (!w)
        return;
    char node[256], o0[300], wn[256], sn[256];
    const char *in[3];
    if (quantize) {
        qb_params p = {.bits = 4, .block_size = 32, .symmetric = true, .scale_type = qscale_of(m->io)};
        size_t cb = qb_codes_bytes(N, K, &p), sc = qb_scales_count(N, K, &p);
        uint8_t *codes = malloc(cb);
        void *scales = malloc(sc * 4);
        qb_quantize(w, N, K, &p, codes, scales, NULL, NULL);
        snprintf(node, sizeof node, "%s/MatMul_Q4", base);
        snprintf(wn, sizeof wn, "%s.MatMul.weight_Q4", init);
        snprintf(sn, sizeof sn, "%s.MatMul.weight_scales", init);
        int64_t db[3] = {N, K / 32, 16}, ds[1] = {(int64_t)sc};
        graph_add_initializer(m->g, wn, ONNX_UINT8, 3, db, codes, cb);
        graph_add_initializer(m->g, sn, m->io, 1, ds, scales, sc * qscale_size(p.scale_type));
        free(codes);
        free(scales);
        snprintf(o0, sizeof o0, "%s/output_0", node);
        in[0] = "h";
        in[1] = wn;
        in[2] = sn;
        const char *outs[1] = {out ? out : o0};
        graph_node *nd = graph_add_node(m->g, "MatMulNBits", "com.microsoft", node, 3, in, 1, outs);
        node_attr_int(nd, "K", K);
        node_attr_int(nd, "N", N);
        node_attr_int(nd, "bits", 4);
        node_attr_int(nd, "block_size", 32);
    } else {
        float *t = malloc((size_t)(N * K) * 4);
        transpose_f32(w, N, K, t);
        void *buf = malloc((size_t)(N * K) * 4);
        to_io(t, buf, (size_t)(N * K), m->io);
        snprintf(node, sizeof node, "%s/MatMul", base);
        snprintf(wn, sizeof wn, "%s.MatMul.weight", init);
        int64_t d[2] = {K, N};
        graph_add_initializer(m->g, wn, m->io, 2, d, buf, (size_t)(N * K) * onnx_dtype_size(m->io));
        free(t);
        free(buf);
        snprintf(o0, sizeof o0, "%s/output_0", node);
        in[0] = "h";
        in[1] = wn;
        const char *outs[1] = {out ? out : o0};
        graph_add_node(m->g, "MatMul", NULL, node, 2, in, 1, outs);
    }
    free(w);
}

/* One expert encoding of all experts of src, concatenated. */
static void mini_experts(mini *m, const vexperts *src, const char *wname, const char *sname,
                         int enc_kind)
{
    int64_t E = src->E, N = src->N, K = src->K, nk = N * K;
    float *w = malloc((size_t)nk * 4), *tmp = malloc((size_t)nk * 4);
    int bits = m->o->moe_bits, bs = m->o->qmoe_bs;
    qb_params p = {.bits = bits, .block_size = bs, .symmetric = true, .scale_type = qscale_of(m->io)};
    size_t cb = enc_kind == 0   ? (size_t)nk * onnx_dtype_size(m->io)
                : enc_kind == 3 ? (size_t)nk / 2
                                : qb_codes_bytes(N, K, &p);
    size_t sb = enc_kind == 3   ? (size_t)nk / 32
                : enc_kind == 0 ? 0
                                : qb_scales_count(N, K, &p) * qscale_size(p.scale_type);
    uint8_t *all_w = malloc((size_t)E * cb), *all_s = malloc((size_t)E * sb + 1);
    uint8_t *raw = malloc((size_t)nk);
    for (int64_t e = 0; e < E; e++) {
        vexperts_read(src, e, w, tmp, NULL);
        uint8_t *ow = all_w + e * cb, *os = all_s + e * sb;
        if (enc_kind == 0) { /* float MoE */
            to_io(w, ow, (size_t)nk, m->io);
        } else if (enc_kind == 3) { /* MXFP4, fp4 CUDA layout; passthrough from MXFP4 sources */
            if (src->kind == VSRC_MXFP4) {
                const uint8_t *c, *s;
                vexperts_mxfp4(src, e, &c, &s);
                memcpy(raw, c, (size_t)nk / 2);
                memcpy(os, s, sb);
            } else {
                mxfp4_encode(w, N, K, raw, os, NULL);
            }
            fp4_cuda_pack(raw, N, K, ow, NULL);
        } else {
            qb_quantize(w, N, K, &p, enc_kind == 2 ? raw : ow, os, NULL, NULL);
            if (enc_kind == 2)
                cutlass_sm80_pack(raw, N, K, bits, ow, NULL);
        }
    }
    int64_t dw[3] = {E, N, K};
    int wt = enc_kind == 0 ? m->io : ONNX_UINT8;
    if (enc_kind == 1)
        dw[2] = K * bits / 8;
    else if (enc_kind == 2)
        dw[1] = K, dw[2] = N * bits / 8;
    else if (enc_kind == 3)
        dw[1] = K, dw[2] = N / 2;
    graph_add_initializer(m->g, wname, wt, 3, dw, all_w, (size_t)E * cb);
    if (enc_kind != 0) {
        int64_t ds[3] = {E, N, enc_kind == 3 ? K / 32 : K / bs};
        graph_add_initializer(m->g, sname, enc_kind == 3 ? ONNX_FLOAT8E8M0 : m->io, 3, ds, all_s,
                              (size_t)E * sb);
    }
    free(w);
    free(tmp);
    free(all_w);
    free(all_s);
    free(raw);
}

static void mini_moe(mini *m, int L)
{
    const model_desc *md = m->md;
    const char *p = md->prefix;
    char b[256], n1[256], n2[256], init[256], names[2][256];
    /* router (+ bias) -> Reshape */
    snprintf(b, sizeof b, "/model/layers.%d/moe/router", L);
    snprintf(init, sizeof init, "model.layers.%d.moe.router", L);
    snprintf(names[0], sizeof names[0], "%slayers.%d.mlp.%s.weight", p, L,
             !strcmp(md->family->model_type, "gpt_oss") ? "router" : "gate");
    const char *nm[1] = {names[0]};
    mini_linear(m, b, init, nm, 1, false, NULL);
    char logits[300], probs[300], shape[256];
    snprintf(logits, sizeof logits, "%s/MatMul/output_0", b);
    snprintf(names[1], sizeof names[1], "%slayers.%d.mlp.router.bias", p, L);
    const st_tensor *rb = ckpt_find(m->ck, names[1]);
    if (rb) {
        float *bf = malloc((size_t)rb->numel * 4);
        void *bio = malloc((size_t)rb->numel * 4);
        st_read_f32(rb, 0, rb->numel, bf, NULL);
        to_io(bf, bio, (size_t)rb->numel, m->io);
        snprintf(n1, sizeof n1, "%s.Add.bias", init);
        graph_add_initializer(m->g, n1, m->io, 1, &rb->numel, bio,
                              (size_t)rb->numel * onnx_dtype_size(m->io));
        free(bf);
        free(bio);
        snprintf(n2, sizeof n2, "%s/Add", b);
        char o[300];
        snprintf(o, sizeof o, "%s/output_0", n2);
        const char *in[2] = {logits, n1}, *out[1] = {o};
        graph_add_node(m->g, "Add", NULL, n2, 2, in, 1, out);
        snprintf(logits, sizeof logits, "%s", o);
    }
    /* the exporter's shared int64 constant, named by its value (added once, in mini_export) */
    snprintf(shape, sizeof shape, "/model/constants/INT64/[-1, %d]", md->num_experts);
    snprintf(n2, sizeof n2, "%s/Reshape", b);
    snprintf(probs, sizeof probs, "%s/output_0", n2);
    const char *rin[2] = {logits, shape}, *rout[1] = {probs};
    graph_add_node(m->g, "Reshape", NULL, n2, 2, rin, 1, rout);

    /* experts */
    vexperts f1, f2;
    vexperts_find(m->ck, md, L, true, &f1, NULL);
    vexperts_find(m->ck, md, L, false, &f2, NULL);
    int enc = !m->o->quantize ? 0 : m->o->mxfp4 ? 3 : m->o->cuda ? 2 : 1;
    const char *suffix = enc == 0 ? "weight" : "qweight";
    char w1[256], s1[256], w2[256], s2[256], bias1[256] = "", bias2[256] = "";
    snprintf(w1, sizeof w1, "model.layers.%d.moe.experts.gate_up_proj.%s", L, suffix);
    snprintf(w2, sizeof w2, "model.layers.%d.moe.experts.down_proj.%s", L, suffix);
    snprintf(s1, sizeof s1, "model.layers.%d.moe.experts.gate_up_proj.scales", L);
    snprintf(s2, sizeof s2, "model.layers.%d.moe.experts.down_proj.scales", L);
    mini_experts(m, &f1, w1, s1, enc);
    mini_experts(m, &f2, w2, s2, enc);
    const char *bias_src[2] = {"gate_up_proj_bias", "down_proj_bias"};
    char *bias_dst[2] = {bias1, bias2};
    for (int i = 0; i < 2; i++) {
        snprintf(names[0], sizeof names[0], "%slayers.%d.mlp.experts.%s", p, L, bias_src[i]);
        const st_tensor *t = ckpt_find(m->ck, names[0]);
        if (!t)
            continue;
        float *bf = malloc((size_t)t->numel * 4);
        void *bio = malloc((size_t)t->numel * 4);
        st_read_f32(t, 0, t->numel, bf, NULL);
        to_io(bf, bio, (size_t)t->numel, m->io);
        snprintf(bias_dst[i], 256, "model.layers.%d.moe.experts.%s.bias", L,
                 i ? "down_proj" : "gate_up_proj");
        graph_add_initializer(m->g, bias_dst[i], m->io, 2, t->shape, bio,
                              (size_t)t->numel * onnx_dtype_size(m->io));
        free(bf);
        free(bio);
    }
    char g1[256] = "", g2[256] = "";
    if (enc == 3) {
        float ones[1024];
        int64_t E = md->num_experts;
        for (int i = 0; i < E; i++)
            ones[i] = 1.0f;
        snprintf(g1, sizeof g1, "model.layers.%d.moe.experts.gate_up_proj.global_scale", L);
        snprintf(g2, sizeof g2, "model.layers.%d.moe.experts.down_proj.global_scale", L);
        graph_add_initializer(m->g, g1, ONNX_FLOAT, 1, &E, ones, (size_t)E * 4);
        graph_add_initializer(m->g, g2, ONNX_FLOAT, 1, &E, ones, (size_t)E * 4);
    }
    char rw[300] = "";
    bool renorm = !strcmp(md->family->model_type, "gpt_oss") || md->norm_topk_prob;
    if (!renorm && enc) {
        char sm[256];
        snprintf(sm, sizeof sm, "%s/Softmax", b);
        snprintf(rw, sizeof rw, "%s/output_0", sm);
        const char *in[1] = {probs}, *out[1] = {rw};
        graph_node *n = graph_add_node(m->g, "Softmax", NULL, sm, 1, in, 1, out);
        node_attr_int(n, "axis", -1);
    }
    char node[256], out0[300];
    snprintf(node, sizeof node, "/model/layers.%d/moe/%s", L, enc ? "QMoE" : "MoE");
    snprintf(out0, sizeof out0, "%s/output_0", node);
    const char *outs[1] = {out0};
    graph_node *n;
    if (!enc) {
        const char *in[6] = {"h", probs, w1, bias1, w2, bias2};
        n = graph_add_node(m->g, "MoE", "com.microsoft", node, bias2[0] ? 6 : 5, in, 1, outs);
    } else {
        const char *in[17] = {"h", probs, w1, s1, bias1, w2, s2, bias2, "", "", "", "", "", "",
                              rw, g1, g2};
        int nin = enc == 3 ? 17 : rw[0] ? 15 : 8;
        n = graph_add_node(m->g, "QMoE", "com.microsoft", node, nin, in, 1, outs);
        node_attr_int(n, "expert_weight_bits", enc == 3 ? 4 : m->o->moe_bits);
        node_attr_int(n, "block_size", enc == 3 ? 32 : m->o->qmoe_bs);
        if (enc == 3)
            node_attr_string(n, "quant_type", "fp4");
        else
            node_attr_int(n, "weights_prepacked", enc == 2 ? 1 : 0);
    }
    node_attr_int(n, "k", md->top_k);
    node_attr_string(n, "activation_type", "swiglu");
    node_attr_int(n, "swiglu_fusion", 1);
    if (!strcmp(md->family->model_type, "gpt_oss")) {
        node_attr_float(n, "swiglu_limit", md->swiglu_limit);
        node_attr_float(n, "activation_alpha", md->swiglu_alpha);
        node_attr_float(n, "activation_beta", 1.0f);
    } else {
        node_attr_float(n, "activation_alpha", 1.0f);
        node_attr_float(n, "activation_beta", 0.0f);
    }
    node_attr_int(n, "normalize_routing_weights", renorm ? 1 : 0);
}

static void mini_layer(mini *m, int L)
{
    const model_desc *md = m->md;
    const char *p = md->prefix;
    char base[256], init[256], nm[4][256];
    bool q = m->o->quantize;
#define NAME(i, fmt) snprintf(nm[i], sizeof nm[i], "%slayers.%d." fmt ".weight", p, L)
    if (md->layer_type[L] == LAYER_LINEAR_ATTENTION) {
        static const char *const proj[5] = {"in_proj_qkv", "in_proj_z", "out_proj", "in_proj_a",
                                            "in_proj_b"};
        for (int i = 0; i < 5; i++) {
            snprintf(base, sizeof base, "/model/layers.%d/linear_attn/%s", L, proj[i]);
            snprintf(init, sizeof init, "model.layers.%d.linear_attn.%s", L, proj[i]);
            snprintf(nm[0], sizeof nm[0], "%slayers.%d.linear_attn.%s.weight", p, L, proj[i]);
            const char *n1[1] = {nm[0]};
            mini_linear(m, base, init, n1, 1, q && i < 3, NULL);
        }
    } else {
        NAME(0, "self_attn.q_proj");
        NAME(1, "self_attn.k_proj");
        NAME(2, "self_attn.v_proj");
        const char *qkv[3] = {nm[0], nm[1], nm[2]};
        snprintf(base, sizeof base, "/model/layers.%d/attn/qkv_proj", L);
        snprintf(init, sizeof init, "model.layers.%d.attn.qkv_proj", L);
        mini_linear(m, base, init, qkv, 3, q, NULL);
        char qkv_out[300], node[256], o0[300], pk[64], pv[64], rk[64], rv[64];
        snprintf(qkv_out, sizeof qkv_out, "%s/%s/output_0", base, q ? "MatMul_Q4" : "MatMul");
        snprintf(node, sizeof node, "/model/layers.%d/attn/GroupQueryAttention", L);
        snprintf(o0, sizeof o0, "%s/output_0", node);
        snprintf(pk, sizeof pk, "past_key_values.%d.key", L);
        snprintf(pv, sizeof pv, "past_key_values.%d.value", L);
        snprintf(rk, sizeof rk, "present.%d.key", L);
        snprintf(rv, sizeof rv, "present.%d.value", L);
        const char *in[5] = {qkv_out, "", "", pk, pv}, *out[3] = {o0, rk, rv};
        graph_node *n = graph_add_node(m->g, "GroupQueryAttention", "com.microsoft", node, 5, in,
                                       3, out);
        node_attr_int(n, "num_heads", md->num_heads);
        node_attr_int(n, "kv_num_heads", md->num_kv_heads);
        bool sliding = md->layer_type[L] == LAYER_SLIDING_ATTENTION;
        node_attr_int(n, "local_window_size", sliding ? md->sliding_window : -1);
        NAME(0, "self_attn.o_proj");
        const char *o[1] = {nm[0]};
        snprintf(base, sizeof base, "/model/layers.%d/attn/o_proj", L);
        snprintf(init, sizeof init, "model.layers.%d.attn.o_proj", L);
        mini_linear(m, base, init, o, 1, q, NULL);
    }
    if (md->shared_expert_intermediate_size > 0) {
        static const char *const proj[3] = {"gate_proj", "up_proj", "down_proj"};
        for (int i = 0; i < 3; i++) {
            snprintf(base, sizeof base, "/model/layers.%d/moe/shared_expert/%s", L, proj[i]);
            snprintf(init, sizeof init, "model.layers.%d.moe.shared_expert.%s", L, proj[i]);
            snprintf(nm[0], sizeof nm[0], "%slayers.%d.mlp.shared_expert.%s.weight", p, L, proj[i]);
            const char *n1[1] = {nm[0]};
            mini_linear(m, base, init, n1, 1, q, NULL);
        }
        NAME(0, "mlp.shared_expert_gate");
        const char *n1[1] = {nm[0]};
        snprintf(base, sizeof base, "/model/layers.%d/moe/shared_expert_gate", L);
        snprintf(init, sizeof init, "model.layers.%d.moe.shared_expert_gate", L);
        mini_linear(m, base, init, n1, 1, false, NULL);
    }
#undef NAME
    mini_moe(m, L);
}

static void add_kv_value(graph *g, bool input, const char *name, const model_desc *md)
{
    int64_t d[4] = {0, md->num_kv_heads, 0, md->head_dim};
    const char *dp[4] = {"batch_size", NULL, input ? "past_sequence_length" : "total_sequence_length",
                         NULL};
    if (input)
        graph_add_input(g, name, ONNX_FLOAT, 4, d, dp);
    else
        graph_add_output(g, name, ONNX_FLOAT, 4, d, dp);
}

static int write_genai(const char *dir, const model_desc *md, bool cuda)
{
    cJSON *root = cJSON_CreateObject(), *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", genai_model_type(md));
    cJSON_AddNumberToObject(model, "vocab_size", md->vocab_size);
    cJSON_AddNumberToObject(model, "context_length", md->context_length);
    cJSON *dec = cJSON_AddObjectToObject(model, "decoder");
    cJSON *so = cJSON_AddObjectToObject(dec, "session_options");
    cJSON *po = cJSON_AddArrayToObject(so, "provider_options");
    if (cuda) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddObjectToObject(e, "cuda");
        cJSON_AddItemToArray(po, e);
    }
    cJSON_AddStringToObject(dec, "filename", "model.onnx");
    cJSON_AddNumberToObject(dec, "head_size", md->head_dim);
    cJSON_AddNumberToObject(dec, "hidden_size", md->hidden_size);
    cJSON_AddNumberToObject(dec, "num_attention_heads", md->num_heads);
    cJSON_AddNumberToObject(dec, "num_key_value_heads", md->num_kv_heads);
    cJSON_AddNumberToObject(dec, "num_hidden_layers", md->num_layers);
    cJSON *in = cJSON_AddObjectToObject(dec, "inputs"), *out = cJSON_AddObjectToObject(dec, "outputs");
    cJSON_AddStringToObject(in, "input_ids", "input_ids");
    cJSON_AddStringToObject(in, "attention_mask", "attention_mask");
    cJSON_AddStringToObject(in, "past_key_names", "past_key_values.%d.key");
    cJSON_AddStringToObject(in, "past_value_names", "past_key_values.%d.value");
    cJSON_AddStringToObject(out, "logits", "logits");
    cJSON_AddStringToObject(out, "present_key_names", "present.%d.key");
    cJSON_AddStringToObject(out, "present_value_names", "present.%d.value");
    char *text = cJSON_Print(root), path[PATH_MAX];
    cJSON_Delete(root);
    snprintf(path, sizeof path, "%s/genai_config.json", dir);
    FILE *f = fopen(path, "w");
    int rc = f && fputs(text, f) >= 0 ? 0 : -1;
    if (f)
        fclose(f);
    free(text);
    return rc;
}

/* Writes a good export of fixture `fx` into dir. */
static int mini_export(const char *fx, const char *dir, const mini_opts *o, m2o_err *err)
{
    char ck_dir[PATH_MAX];
    snprintf(ck_dir, sizeof ck_dir, "%s/%s", test_fixtures_dir(), fx);
    model_desc *md = calloc(1, sizeof *md);
    st_checkpoint *ck = NULL;
    if (config_load(ck_dir, md, err) || ckpt_open(ck_dir, &ck, err)) {
        free(md);
        return -1;
    }
    mkdir(dir, 0755);
    mini m = {.g = graph_new("mini"), .md = md, .ck = ck, .o = o,
              .io = o->cuda ? ONNX_FLOAT16 : ONNX_FLOAT};
    int64_t d2[2] = {0, 0}, d3[3] = {0, 0, md->vocab_size};
    const char *bs[2] = {"batch_size", "sequence_length"},
               *bl[3] = {"batch_size", "sequence_length", NULL};
    graph_add_input(m.g, "input_ids", ONNX_INT64, 2, d2, bs);
    graph_add_input(m.g, "attention_mask", ONNX_INT64, 2, d2, bs);
    for (int L = 0; L < md->num_layers; L++) {
        if (md->layer_type[L] == LAYER_LINEAR_ATTENTION)
            continue;
        char nm[64];
        snprintf(nm, sizeof nm, "past_key_values.%d.key", L);
        add_kv_value(m.g, true, nm, md);
        snprintf(nm, sizeof nm, "past_key_values.%d.value", L);
        add_kv_value(m.g, true, nm, md);
    }
    graph_add_output(m.g, "logits", ONNX_FLOAT, 3, d3, bl);
    for (int L = 0; L < md->num_layers; L++) {
        if (md->layer_type[L] == LAYER_LINEAR_ATTENTION)
            continue;
        char nm[64];
        snprintf(nm, sizeof nm, "present.%d.key", L);
        add_kv_value(m.g, false, nm, md);
        snprintf(nm, sizeof nm, "present.%d.value", L);
        add_kv_value(m.g, false, nm, md);
    }
    /* every block reads "h": the weights are what verify looks at, not the data flow */
    const char *cin[1] = {"input_ids"}, *cout[1] = {"h"};
    graph_node *cast = graph_add_node(m.g, "Cast", NULL, "/model/h/Cast", 1, cin, 1, cout);
    node_attr_int(cast, "to", m.io);
    int64_t sv[2] = {-1, md->num_experts}, two = 2;
    char shape[64];
    snprintf(shape, sizeof shape, "/model/constants/INT64/[-1, %d]", md->num_experts);
    graph_add_initializer(m.g, shape, ONNX_INT64, 1, &two, sv, sizeof sv);
    for (int L = 0; L < md->num_layers; L++)
        mini_layer(&m, L);
    const char *lm[1] = {"lm_head.weight"};
    mini_linear(&m, "/lm_head", "lm_head", lm, 1, o->quantize, "logits");
    graph_write_opts wo;
    graph_write_opts_init(&wo);
    wo.threads = 1;
    int rc = graph_write(m.g, dir, &wo, err);
    if (!rc)
        rc = write_genai(dir, md, o->cuda);
    if (!rc) /* verify checks the folder's tokenizer files too */
        rc = genai_copy_tokenizer(ck_dir, dir, err);
    graph_free(m.g);
    ckpt_close(ck);
    free(md);
    return rc;
}

/* ------------------------------------------------------------------ folder helpers */

static void tmp_path(char *buf, size_t len, const char *tag)
{
    snprintf(buf, len, "/tmp/m2o_test_verify_%d_%s", (int)getpid(), tag);
}

static int copy_file(const char *src, const char *dst)
{
    FILE *in = fopen(src, "rb"), *out = in ? fopen(dst, "wb") : NULL;
    if (!in || !out) {
        if (in)
            fclose(in);
        return -1;
    }
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, n, out);
    fclose(in);
    return fclose(out);
}

static void remove_folder(const char *dir)
{
    static const char *const files[] = {"model.onnx", "model.onnx.data", "genai_config.json",
                                        "tokenizer.json", "tokenizer_config.json"};
    char p[PATH_MAX];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

static int copy_folder(const char *src, const char *dst)
{
    static const char *const files[] = {"model.onnx", "model.onnx.data", "genai_config.json"};
    remove_folder(dst);
    mkdir(dst, 0755);
    char a[PATH_MAX], b[PATH_MAX];
    for (int i = 0; i < 3; i++) {
        snprintf(a, sizeof a, "%s/%s", src, files[i]);
        snprintf(b, sizeof b, "%s/%s", dst, files[i]);
        if (copy_file(a, b))
            return -1;
    }
    return 0;
}

/* Layer-0 QMoE/MoE node facts read from a folder. */
typedef struct moe_info {
    char w1[256], s1[256], w2[256], s2[256], router_node[256];
    int64_t bits, bs, prepacked;
    int scale_type;
    bool found;
} moe_info;

static moe_info layer0_moe(const char *dir)
{
    moe_info mi;
    memset(&mi, 0, sizeof mi);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    onnx_model *m;
    if (onnx_model_open(path, &m, NULL))
        return mi;
    for (size_t i = 0; i < onnx_model_node_count(m); i++) {
        const onnx_node *n = onnx_model_node(m, i);
        const char *op = onnx_node_op(n), *name = onnx_node_name(n);
        if (strstr(name, "layers.0/") && (!strcmp(op, "QMoE") || !strcmp(op, "MoE"))) {
            bool q = !strcmp(op, "QMoE");
            snprintf(mi.w1, sizeof mi.w1, "%s", onnx_node_input(n, 2));
            snprintf(mi.w2, sizeof mi.w2, "%s", onnx_node_input(n, q ? 5 : 4));
            if (q) {
                snprintf(mi.s1, sizeof mi.s1, "%s", onnx_node_input(n, 3));
                snprintf(mi.s2, sizeof mi.s2, "%s", onnx_node_input(n, 6));
                const onnx_tensor *s = onnx_model_find_initializer(m, mi.s1);
                mi.scale_type = s ? onnx_tensor_elem_type(s) : 0;
            }
            mi.bits = 4;
            mi.prepacked = -1;
            onnx_node_attr_int(n, "expert_weight_bits", &mi.bits);
            onnx_node_attr_int(n, "block_size", &mi.bs);
            onnx_node_attr_int(n, "weights_prepacked", &mi.prepacked);
            mi.found = true;
        }
        if (strstr(name, "layers.0/") && strstr(name, "router") && !strcmp(op, "MatMul"))
            snprintf(mi.router_node, sizeof mi.router_node, "%s", name);
    }
    onnx_model_close(m);
    return mi;
}

/* Reads an external initializer's bytes from a folder, lets fn change them, writes them back. */
typedef void (*patch_fn)(uint8_t *bytes, size_t len, void *ctx);

static int patch_tensor(const char *dir, const char *name, patch_fn fn, void *ctx)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    onnx_model *m;
    if (onnx_model_open(path, &m, NULL))
        return -1;
    const onnx_tensor *t = onnx_model_find_initializer(m, name);
    const char *loc = NULL;
    uint64_t off = 0, len = 0;
    bool ext = t && onnx_tensor_external(t, &loc, &off, &len);
    char data[PATH_MAX];
    if (ext)
        snprintf(data, sizeof data, "%s/%s", dir, loc);
    onnx_model_close(m);
    if (!ext)
        return -1;
    uint8_t *buf = malloc(len);
    int fd = open(data, O_RDWR);
    int rc = fd >= 0 && pread(fd, buf, len, (off_t)off) == (ssize_t)len ? 0 : -1;
    if (!rc) {
        fn(buf, len, ctx);
        rc = pwrite(fd, buf, len, (off_t)off) == (ssize_t)len ? 0 : -1;
    }
    if (fd >= 0)
        close(fd);
    free(buf);
    return rc;
}

typedef void (*proto_fn)(Onnx__ModelProto *mp, void *ctx);

static int rewrite_model(const char *dir, proto_fn fn, void *ctx)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    Onnx__ModelProto *mp = onnx__model_proto__unpack(NULL, got, buf);
    free(buf);
    if (!mp)
        return -1;
    fn(mp, ctx);
    size_t sz = onnx__model_proto__get_packed_size(mp);
    buf = malloc(sz);
    onnx__model_proto__pack(mp, buf);
    onnx__model_proto__free_unpacked(mp, NULL);
    f = fopen(path, "wb");
    int rc = f && fwrite(buf, 1, sz, f) == sz ? 0 : -1;
    if (f)
        fclose(f);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------ corruptions */

static void abs_scales(uint8_t *b, size_t len, void *ctx)
{
    size_t es = (size_t)(intptr_t)ctx; /* 2 or 4 bytes per scale, little-endian: sign is the top bit */
    for (size_t i = es - 1; i < len; i += es)
        b[i] &= 0x7f;
}

static void swap_nibbles(uint8_t *b, size_t len, void *ctx)
{
    (void)ctx;
    for (size_t i = 0; i < len; i++)
        b[i] = (uint8_t)((b[i] >> 4) | (b[i] << 4));
}

/* Per expert, rows [g0, u0, g1, u1, ...] -> [g0, g1, ..., u0, u1, ...] for rows of row_bytes. */
typedef struct rows_ctx {
    int64_t E, N;
} rows_ctx;

static void deinterleave_rows(uint8_t *b, size_t len, void *ctx)
{
    rows_ctx *c = ctx;
    size_t per = len / (size_t)c->E, row = per / (size_t)c->N;
    uint8_t *tmp = malloc(per);
    for (int64_t e = 0; e < c->E; e++) {
        uint8_t *x = b + (size_t)e * per;
        for (int64_t i = 0; i < c->N / 2; i++) {
            memcpy(tmp + (size_t)i * row, x + (size_t)(2 * i) * row, row);
            memcpy(tmp + (size_t)(c->N / 2 + i) * row, x + (size_t)(2 * i + 1) * row, row);
        }
        memcpy(x, tmp, per);
    }
    free(tmp);
}

/* CUDA folder: SM80 bytes -> raw (what an exporter that skips the prepack writes). */
typedef struct sm80_ctx {
    int64_t E, N, K;
    int bits;
} sm80_ctx;

static void sm80_to_raw(uint8_t *b, size_t len, void *ctx)
{
    sm80_ctx *c = ctx;
    size_t per = len / (size_t)c->E;
    uint8_t *tmp = malloc(per);
    for (int64_t e = 0; e < c->E; e++) {
        cutlass_sm80_unpack(b + (size_t)e * per, c->N, c->K, c->bits, tmp, NULL);
        memcpy(b + (size_t)e * per, tmp, per);
    }
    free(tmp);
}

/* CUDA fp4 folder: [K][N/2] codes -> raw [N][K/2] (the fp4 CUDA transpose skipped). */
static void fp4_to_raw(uint8_t *b, size_t len, void *ctx)
{
    sm80_ctx *c = ctx;
    size_t per = len / (size_t)c->E;
    uint8_t *tmp = malloc(per);
    for (int64_t e = 0; e < c->E; e++) {
        fp4_cuda_unpack(b + (size_t)e * per, c->N, c->K, tmp, NULL);
        memcpy(b + (size_t)e * per, tmp, per);
    }
    free(tmp);
}

static void bump_first_byte(uint8_t *b, size_t len, void *ctx)
{
    (void)ctx;
    if (len)
        b[0] = (uint8_t)(b[0] + 1);
}

/* gpt-oss BF16 experts [E, K, N] read as [E, N, K] without the transpose, then encoded the way
 * the node declares (int raw, or float). */
typedef struct nk_ctx {
    const st_tensor *src;
    int64_t E, N, K;
    int bits, bs, scale_type; /* bits 0: float weights of scale_type */
    bool scales;              /* this pass writes the scales */
} nk_ctx;

static void untransposed_experts(uint8_t *b, size_t len, void *ctx)
{
    nk_ctx *c = ctx;
    int64_t nk = c->N * c->K;
    float *w = malloc((size_t)nk * 4);
    size_t per = len / (size_t)c->E;
    qb_params p = {.bits = c->bits, .block_size = c->bs, .symmetric = true,
                   .scale_type = c->scale_type == ONNX_FLOAT16 ? QSCALE_F16 : QSCALE_F32};
    uint8_t *codes = malloc((size_t)nk), *scales = malloc((size_t)nk * 4);
    for (int64_t e = 0; e < c->E; e++) {
        st_read_f32(c->src, e * nk, nk, w, NULL); /* the [K][N] bytes, taken as [N][K] */
        if (!c->bits) {
            to_io(w, b + (size_t)e * per, (size_t)nk, c->scale_type);
            continue;
        }
        qb_quantize(w, c->N, c->K, &p, codes, scales, NULL, NULL);
        memcpy(b + (size_t)e * per, c->scales ? scales : codes, per);
    }
    free(w);
    free(codes);
    free(scales);
}

static void replace_string(char **s, const char *v)
{
    if (*s && *s != protobuf_c_empty_string)
        free(*s);
    *s = strdup(v);
}

static void duplicate_node_name(Onnx__ModelProto *mp, void *ctx)
{
    (void)ctx;
    Onnx__GraphProto *g = mp->graph;
    /* give the second named node the first one's name */
    size_t first = SIZE_MAX;
    for (size_t i = 0; i < g->n_node; i++) {
        if (!g->node[i]->name || !g->node[i]->name[0])
            continue;
        if (first == SIZE_MAX) {
            first = i;
            continue;
        }
        replace_string(&g->node[i]->name, g->node[first]->name);
        return;
    }
}

static Onnx__AttributeProto *int_attr(const char *name, int64_t v)
{
    Onnx__AttributeProto *a = malloc(sizeof *a);
    onnx__attribute_proto__init(a);
    a->name = strdup(name);
    a->has_type = 1;
    a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    a->has_i = 1;
    a->i = v;
    return a;
}

static Onnx__TensorProto *raw_tensor(const char *name, int type, int ndim, const int64_t *dims,
                                     size_t nbytes)
{
    Onnx__TensorProto *t = malloc(sizeof *t);
    onnx__tensor_proto__init(t);
    t->name = strdup(name);
    t->has_data_type = 1;
    t->data_type = type;
    t->n_dims = (size_t)ndim;
    t->dims = malloc((size_t)ndim * sizeof *t->dims);
    memcpy(t->dims, dims, (size_t)ndim * sizeof *dims);
    t->has_raw_data = 1;
    t->raw_data.len = nbytes;
    t->raw_data.data = calloc(1, nbytes);
    return t;
}

/* The layer-0 router MatMul becomes a MatMulNBits over new int4 initializers. */
typedef struct router_ctx {
    const char *node;
    int64_t K, N;
} router_ctx;

static void quantize_router(Onnx__ModelProto *mp, void *ctx)
{
    router_ctx *c = ctx;
    Onnx__GraphProto *g = mp->graph;
    for (size_t i = 0; i < g->n_node; i++) {
        Onnx__NodeProto *n = g->node[i];
        if (!n->name || strcmp(n->name, c->node))
            continue;
        int64_t nb = c->K / 32, db[3] = {c->N, nb, 16}, ds[1] = {c->N * nb};
        g->initializer = realloc(g->initializer, (g->n_initializer + 2) * sizeof *g->initializer);
        g->initializer[g->n_initializer++] = raw_tensor("router_q4.B", ONNX_UINT8, 3, db,
                                                        (size_t)(c->N * nb * 16));
        g->initializer[g->n_initializer++] = raw_tensor("router_q4.scales", ONNX_FLOAT, 1, ds,
                                                        (size_t)(c->N * nb) * 4);
        replace_string(&n->op_type, "MatMulNBits");
        replace_string(&n->domain, "com.microsoft");
        replace_string(&n->input[1], "router_q4.B");
        n->input = realloc(n->input, 3 * sizeof *n->input);
        n->input[2] = strdup("router_q4.scales");
        n->n_input = 3;
        n->attribute = realloc(n->attribute, (n->n_attribute + 4) * sizeof *n->attribute);
        n->attribute[n->n_attribute++] = int_attr("K", c->K);
        n->attribute[n->n_attribute++] = int_attr("N", c->N);
        n->attribute[n->n_attribute++] = int_attr("bits", 4);
        n->attribute[n->n_attribute++] = int_attr("block_size", 32);
        return;
    }
}

/* ------------------------------------------------------------------ running verify */

static bool run_verify(const char *fx, const char *dir, verify_report *r)
{
    char ck_dir[PATH_MAX];
    snprintf(ck_dir, sizeof ck_dir, "%s/%s", test_fixtures_dir(), fx);
    verify_opts o;
    verify_opts_init(&o);
    o.threads = 2;
    verify_report_init(r);
    m2o_err err = {{0}};
    if (verify_run(ck_dir, dir, &o, r, &err)) {
        fprintf(stderr, "verify_run(%s): %s\n", dir, err.msg);
        return false;
    }
    return true;
}

/* verify fails, and the fault `code` is among its faults with `word` in its message. */
#define CHECK_NAMES_FAULT(fx, dir, code, word)                                                 \
    do {                                                                                     \
        verify_report r_;                                                                    \
        CHECK(run_verify(fx, dir, &r_));                                                     \
        int i_ = verify_find_fault(&r_, code);                                               \
        char line_[1200];                                                                    \
        verify_verdict_line(&r_, line_, sizeof line_);                                       \
        bool ok_ = !verify_passed(&r_) && i_ >= 0 && strstr(r_.faults[i_].msg, word);        \
        verify_report_free(&r_);                                                             \
        CHECK_MSG(ok_, "%s: expected fault %s naming \"%s\", got: %s", dir,                  \
                  vfault_code_name(code), word, line_);                                      \
    } while (0)

static void print_numbers(const char *what, const verify_report *r)
{
    for (size_t i = 0; i < r->n_tensors; i++) {
        const vtensor *t = &r->tensors[i];
        if (strstr(t->name, "experts") || strstr(t->name, "lm_head"))
            printf("  %-22s %-52s %-20s rel_rms %.4e (bound %.4e) max_abs %.4e%s\n", what,
                   t->name, t->format, t->rel_rms, t->rel_rms_bound, t->max_abs,
                   t->bit_exact ? " bit-exact" : "");
    }
}

/* Good export passes; rel RMS of int4 experts and linears in the range the format predicts. */
static void check_good(const char *fx, const char *dir, const char *what)
{
    verify_report r;
    CHECK(run_verify(fx, dir, &r));
    char line[1200];
    verify_verdict_line(&r, line, sizeof line);
    bool pass = verify_passed(&r);
    size_t n = r.n_tensors;
    print_numbers(what, &r);
    bool rms_ok = true;
    for (size_t i = 0; i < r.n_tensors; i++) {
        const vtensor *t = &r.tensors[i];
        if (strstr(t->format, "int4"))
            rms_ok &= t->rel_rms > 0.05 && t->rel_rms < 0.12; /* int4 of these weights: ~0.07-0.10 */
        else if (strstr(t->format, "int8"))
            rms_ok &= t->rel_rms > 0.001 && t->rel_rms < 0.01;
        else if (strstr(t->format, "fp32"))
            rms_ok &= t->rel_rms == 0;
        rms_ok &= t->max_ratio <= 1.0;
    }
    verify_report_free(&r);
    CHECK_MSG(pass, "%s: %s", dir, line);
    CHECK(n >= 5);
    CHECK(rms_ok);
}

/* Every corruption that applies to this export, each in its own copy. */
static void corruption_suite(const char *fx, const char *good, bool cuda)
{
    moe_info mi = layer0_moe(good);
    CHECK(mi.found);
    char bad[PATH_MAX];
    tmp_path(bad, sizeof bad, "bad");
    char ck_dir[PATH_MAX];
    snprintf(ck_dir, sizeof ck_dir, "%s/%s", test_fixtures_dir(), fx);
    model_desc md;
    CHECK_EQ(config_load(ck_dir, &md, NULL), 0);
    int64_t E = md.num_experts, H = md.hidden_size, I = md.moe_intermediate_size;
    bool int_experts = mi.s1[0] && mi.bits && (mi.scale_type == ONNX_FLOAT || mi.scale_type == ONNX_FLOAT16);
    bool raw = int_experts && !(cuda && mi.prepacked != 0);

    /* duplicated node name */
    CHECK_EQ(copy_folder(good, bad), 0);
    CHECK_EQ(rewrite_model(bad, duplicate_node_name, NULL), 0);
    CHECK_NAMES_FAULT(fx, bad, VF_DUPLICATE_NODE, "used twice");

    /* router quantized */
    CHECK(mi.router_node[0]);
    CHECK_EQ(copy_folder(good, bad), 0);
    router_ctx rc = {mi.router_node, H, E};
    CHECK_EQ(rewrite_model(bad, quantize_router, &rc), 0);
    CHECK_NAMES_FAULT(fx, bad, VF_ROUTER_QUANTIZED, "router");

    if (int_experts) {
        /* signed scales made positive */
        CHECK_EQ(copy_folder(good, bad), 0);
        intptr_t es = mi.scale_type == ONNX_FLOAT16 ? 2 : 4;
        CHECK_EQ(patch_tensor(bad, mi.s1, abs_scales, (void *)es), 0);
        CHECK_NAMES_FAULT(fx, bad, VF_SCALES_ABS, "made positive");
    }
    if (raw && mi.bits == 4) {
        /* nibble order */
        CHECK_EQ(copy_folder(good, bad), 0);
        CHECK_EQ(patch_tensor(bad, mi.w2, swap_nibbles, NULL), 0);
        CHECK_NAMES_FAULT(fx, bad, VF_NIBBLE_ORDER, "nibble");
    }
    if (raw) {
        /* gate/up halves: codes and scales rows permuted alike */
        CHECK_EQ(copy_folder(good, bad), 0);
        rows_ctx rw = {E, 2 * I};
        CHECK_EQ(patch_tensor(bad, mi.w1, deinterleave_rows, &rw), 0);
        CHECK_EQ(patch_tensor(bad, mi.s1, deinterleave_rows, &rw), 0);
        CHECK_NAMES_FAULT(fx, bad, VF_GATE_UP_ORDER, "interleaved");
    }
    if (int_experts && cuda && mi.prepacked != 0) {
        /* CUTLASS layout left raw */
        CHECK_EQ(copy_folder(good, bad), 0);
        sm80_ctx sc = {E, 2 * I, H, (int)mi.bits};
        CHECK_EQ(patch_tensor(bad, mi.w1, sm80_to_raw, &sc), 0);
        CHECK_NAMES_FAULT(fx, bad, VF_CUTLASS_MISSING, "CUTLASS");
    }
    char src_name[256];
    snprintf(src_name, sizeof src_name, "%slayers.0.mlp.experts.gate_up_proj", md.prefix);
    st_checkpoint *ck = NULL;
    CHECK_EQ(ckpt_open(ck_dir, &ck, NULL), 0);
    const st_tensor *kn = !strcmp(md.family->model_type, "gpt_oss") ? ckpt_find(ck, src_name) : NULL;
    if (kn && (raw || !mi.s1[0])) {
        /* gpt-oss BF16 experts [E, H, 2I] not transposed */
        CHECK_EQ(copy_folder(good, bad), 0);
        int io = cuda ? ONNX_FLOAT16 : ONNX_FLOAT;
        nk_ctx nc = {kn, E, 2 * I, H, mi.s1[0] ? (int)mi.bits : 0, (int)mi.bs,
                     mi.s1[0] ? mi.scale_type : io, false};
        int prc = patch_tensor(bad, mi.w1, untransposed_experts, &nc);
        nc.scales = true;
        if (!prc && mi.s1[0])
            prc = patch_tensor(bad, mi.s1, untransposed_experts, &nc);
        if (prc) {
            ckpt_close(ck);
            FAIL_AT("patching %s failed", mi.w1);
        }
        CHECK_NAMES_FAULT(fx, bad, VF_NK_SWAPPED, "N and K");
    }
    ckpt_close(ck);
    remove_folder(bad);
}

static void mini_case(const char *fx, const mini_opts *o, const char *what, bool corrupt)
{
    char dir[PATH_MAX];
    tmp_path(dir, sizeof dir, "good");
    remove_folder(dir);
    m2o_err err = {{0}};
    CHECK_MSG(mini_export(fx, dir, o, &err) == 0, "export %s: %s", fx, err.msg);
    check_good(fx, dir, what);
    if (corrupt)
        corruption_suite(fx, dir, o->cuda);
    remove_folder(dir);
}

static const mini_opts kCpuInt4 = {.quantize = true, .moe_bits = 4, .qmoe_bs = 32};
static const mini_opts kCpuInt8 = {.quantize = true, .moe_bits = 8, .qmoe_bs = 64};
static const mini_opts kCudaInt4 = {.cuda = true, .quantize = true, .moe_bits = 4, .qmoe_bs = 128};
static const mini_opts kCudaFp4 = {.cuda = true, .quantize = true, .moe_bits = 4, .mxfp4 = true};
static const mini_opts kCpuFloat = {.quantize = false};

TEST(gpt_oss_mxfp4_exports_pass_and_every_corruption_is_named)
{
    mini_case("gpt-oss-tiny", &kCpuInt4, "gpt-oss-tiny cpu int4", true);
    mini_case("gpt-oss-tiny", &kCudaInt4, "gpt-oss-tiny cuda int4", true);
    mini_case("gpt-oss-tiny", &kCudaFp4, "gpt-oss-tiny cuda mxfp4", false); /* see below */
}

TEST(gpt_oss_bf16_exports_pass_and_transposed_experts_are_named)
{
    mini_case("gpt-oss-bf16-tiny", &kCpuInt4, "gpt-oss-bf16 cpu int4", true);
    mini_case("gpt-oss-bf16-tiny", &kCpuFloat, "gpt-oss-bf16 cpu fp32", true);
    mini_case("gpt-oss-bf16-tiny", &kCpuInt8, "gpt-oss-bf16 cpu int8", false);
}

TEST(qwen_exports_pass_and_corruptions_are_named)
{
    mini_case("qwen3-moe-tiny", &kCpuInt4, "qwen3-moe cpu int4", true);
    mini_case("qwen2-moe-tiny", &kCpuInt4, "qwen2-moe cpu int4", false);
    mini_case("qwen2-moe-tiny", &kCudaInt4, "qwen2-moe cuda int4", false);
    mini_case("qwen3_5-moe-tiny", &kCpuInt4, "qwen3.5-moe cpu int4", true);
}

TEST(mxfp4_passthrough_is_bit_exact_and_a_changed_scale_byte_is_not)
{
    char dir[PATH_MAX], bad[PATH_MAX];
    tmp_path(dir, sizeof dir, "fp4");
    tmp_path(bad, sizeof bad, "fp4bad");
    remove_folder(dir);
    CHECK_EQ(mini_export("gpt-oss-tiny", dir, &kCudaFp4, NULL), 0);
    verify_report r;
    CHECK(run_verify("gpt-oss-tiny", dir, &r));
    size_t exact = r.n_bit_exact;
    verify_report_free(&r);
    CHECK_EQ(exact, 4); /* fc1 and fc2 of both layers */
    moe_info mi = layer0_moe(dir);
    CHECK_EQ(copy_folder(dir, bad), 0);
    CHECK_EQ(patch_tensor(bad, mi.w1, swap_nibbles, NULL), 0);
    CHECK_NAMES_FAULT("gpt-oss-tiny", bad, VF_NIBBLE_ORDER, "nibble");
    /* the raw [N][K/2] codes where the CUDA layout is [K][N/2] */
    CHECK_EQ(copy_folder(dir, bad), 0);
    sm80_ctx fc = {8, 512, 256, 4}; /* gpt-oss-tiny fc1: E 8, N = 2I 512, K = H 256 */
    CHECK_EQ(patch_tensor(bad, mi.w1, fp4_to_raw, &fc), 0);
    CHECK_NAMES_FAULT("gpt-oss-tiny", bad, VF_FP4_TRANSPOSE, "transpose");
    /* one scale byte changed: still within the MXFP4 grid bound nowhere near, and not bit-exact */
    CHECK_EQ(copy_folder(dir, bad), 0);
    CHECK_EQ(patch_tensor(bad, mi.s2, bump_first_byte, NULL), 0);
    verify_report r2;
    CHECK(run_verify("gpt-oss-tiny", bad, &r2));
    bool failed = !verify_passed(&r2);
    size_t exact2 = r2.n_bit_exact;
    verify_report_free(&r2);
    CHECK(failed);
    CHECK_EQ(exact2, 3);
    remove_folder(bad);
    remove_folder(dir);
}

TEST(genai_config_and_attributes_are_checked_against_config_json)
{
    char dir[PATH_MAX], path[PATH_MAX];
    tmp_path(dir, sizeof dir, "cfg");
    remove_folder(dir);
    CHECK_EQ(mini_export("qwen3-moe-tiny", dir, &kCpuInt4, NULL), 0);
    snprintf(path, sizeof path, "%s/genai_config.json", dir);
    /* num_hidden_layers off by one, and a past_key_names pattern the graph does not have */
    FILE *f = fopen(path, "r");
    CHECK(f);
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    cJSON *root = cJSON_Parse(text);
    cJSON *dec = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "model"), "decoder");
    cJSON_ReplaceItemInObject(dec, "num_hidden_layers", cJSON_CreateNumber(3));
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(dec, "inputs"), "past_key_names",
                              cJSON_CreateString("past.%d.key"));
    char *out = cJSON_Print(root);
    cJSON_Delete(root);
    f = fopen(path, "w");
    fputs(out, f);
    fclose(f);
    free(out);
    verify_report r;
    CHECK(run_verify("qwen3-moe-tiny", dir, &r));
    int nf = 0;
    bool layers = false, past = false, unfed = false;
    for (size_t i = 0; i < r.n_faults; i++) {
        nf += r.faults[i].code == VF_GENAI_CONFIG;
        layers |= strstr(r.faults[i].msg, "num_hidden_layers is 3") != NULL;
        past |= strstr(r.faults[i].msg, "past.0.key") != NULL;
        /* and the graph's real past keys are now fed by nothing */
        unfed |= strstr(r.faults[i].msg, "graph input \"past_key_values.0.key\" is not named") !=
                 NULL;
    }
    verify_report_free(&r);
    CHECK_EQ(nf, 3);
    CHECK(layers && past && unfed);
    remove_folder(dir);
}

/* A sliding layer listed for a window-sized cache whose GroupQueryAttention would index it as a
 * whole-sequence cache (no sliding_window_cache=1, as the mini export writes it). */
TEST(window_sized_cache_needs_the_attention_attribute)
{
    char dir[PATH_MAX], path[PATH_MAX];
    tmp_path(dir, sizeof dir, "swc");
    remove_folder(dir);
    CHECK_EQ(mini_export("gpt-oss-tiny", dir, &kCpuInt4, NULL), 0);
    snprintf(path, sizeof path, "%s/genai_config.json", dir);
    FILE *f = fopen(path, "r");
    CHECK(f);
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    cJSON *root = cJSON_Parse(text);
    cJSON *dec = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "model"), "decoder");
    cJSON *sw = cJSON_AddObjectToObject(dec, "sliding_window");
    cJSON_AddNumberToObject(sw, "window_size", 4);
    cJSON *layers = cJSON_AddArrayToObject(sw, "layers");
    cJSON_AddItemToArray(layers, cJSON_CreateNumber(0));
    char *out = cJSON_Print(root);
    cJSON_Delete(root);
    f = fopen(path, "w");
    fputs(out, f);
    fclose(f);
    free(out);
    verify_report r;
    CHECK(run_verify("gpt-oss-tiny", dir, &r));
    bool named = false;
    for (size_t i = 0; i < r.n_faults; i++)
        named |= r.faults[i].code == VF_GENAI_CONFIG &&
                 strstr(r.faults[i].msg, "lists 0, whose GroupQueryAttention has no "
                                         "sliding_window_cache=1") != NULL;
    verify_report_free(&r);
    CHECK(named);
    remove_folder(dir);
}

/* ------------------------------------------------------------------ the real exporter */

/* build/tests/test_x -> build/moe2onnx */
static bool exporter_path(char *buf, size_t len)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return false;
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (!slash)
        return false;
    *slash = 0;
    snprintf(buf, len, "%s/../moe2onnx", self);
    return access(buf, X_OK) == 0;
}

static int run_exporter(const char *exe, const char *fx, const char *out, const char *prec,
                        const char *ep)
{
    char ck[PATH_MAX];
    snprintf(ck, sizeof ck, "%s/%s", test_fixtures_dir(), fx);
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        execl(exe, exe, "-i", ck, "-o", out, "-p", prec, "-e", ep, "-q", "--overwrite",
              "--threads", "2", (char *)NULL);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(real_exporter_output_passes_and_corruptions_are_named)
{
    static const char *const fixtures[] = {"gpt-oss-tiny", "gpt-oss-bf16-tiny", "qwen3-moe-tiny",
                                           "qwen2-moe-tiny", "qwen3_5-moe-tiny"};
    static const char *const eps[2][2] = {{"int4", "cpu"}, {"int4", "cuda"}};
    char exe[PATH_MAX];
    if (!exporter_path(exe, sizeof exe)) {
        printf("  (no moe2onnx binary beside the tests: real-export cases not run)\n");
        return;
    }
    int ran = 0;
    for (size_t f = 0; f < sizeof fixtures / sizeof fixtures[0]; f++) {
        for (int e = 0; e < 2; e++) {
            char dir[PATH_MAX], what[96];
            tmp_path(dir, sizeof dir, "real");
            remove_folder(dir);
            if (run_exporter(exe, fixtures[f], dir, eps[e][0], eps[e][1]) != 0) {
                printf("  (moe2onnx cannot export %s -p %s -e %s yet: not run)\n", fixtures[f],
                       eps[e][0], eps[e][1]);
                remove_folder(dir);
                continue;
            }
            snprintf(what, sizeof what, "real %s %s", fixtures[f], eps[e][1]);
            check_good(fixtures[f], dir, what);
            corruption_suite(fixtures[f], dir, e == 1);
            remove_folder(dir);
            if (g_failed_now)
                return;
            ran++;
        }
    }
    printf("  (%d real exports verified)\n", ran);
}
