/* qwen3_moe / qwen2_moe graphs, checked where ONNX Runtime cannot run them here:
 *   CUDA int4/int8 exports (CUTLASS SM80 prepacked, float16 io): QMoE codes decoded back
 *   equal the raw codes of a CPU-layout export byte for byte, and so do the signed scales; the
 *   CUDA mxfp4 experts (encoded from BF16) are the MXFP4 encoding of the checkpoint's own
 *   floats, gate/up rows interleaved;
 *   QMoE attributes of plain SwiGLU (no clamp, alpha 1, beta 0, swiglu_fusion 1);
 *   routing per op: norm_topk_prob=false is router_weights = Softmax(logits) on QMoE (CPU and
 *   CUDA, int and fp4), the float MoE op renormalised and scaled by the top-k softmax mass;
 *   true is plain renormalisation;
 *   int4 builds keep the router and shared_expert_gate MatMuls float, quantize the shared expert;
 *   q/k norms carry the checkpoint's weights; qkv biases (qwen2) are the three biases stacked;
 *   every node name and produced value is unique (the shared expert's Muls included);
 *   broken checkpoints fail with the tensor named. */
#include <stdlib.h>
#include <string.h>

#include "arch/export.h"
#include "arch/model_desc.h"
#include "checkpoint/st_writer.h"
#include "graph/builder.h"
#include "common/half.h"
#include "onnx/model_reader.h"
#include "quant/quant.h"
#include "test.h"
#include "test_export.h"

enum { E = 8, H = 256, I = 128, S = 256, HD = 64, L_COUNT = 2 };

/* Exports of the fixtures are shared by the tests (each costs seconds under Valgrind): cached by
 * (fixture, options) and removed at exit. */
#define CACHE_MAX 24
static struct cached { char fixture[32]; export_opts o; exported x; } g_cache[CACHE_MAX];
static int g_cached;

static void drop_cache(void)
{
    for (int i = 0; i < g_cached; i++)
        exported_release(&g_cache[i].x);
    g_cached = 0;
}

/* Field by field: memcmp would read export_opts' padding bytes, which are never initialised. */
static bool same_opts(const export_opts *a, const export_opts *b)
{
    return a->precision == b->precision && a->ep == b->ep && a->io_dtype == b->io_dtype &&
           a->int4_block_size == b->int4_block_size &&
           a->int4_accuracy_level == b->int4_accuracy_level &&
           a->moe_quant_type == b->moe_quant_type && a->qmoe_block_size == b->qmoe_block_size &&
           a->qmoe_weights_prepacked == b->qmoe_weights_prepacked &&
           a->qmoe_quantize_bias == b->qmoe_quantize_bias && a->use_cuda_bf16 == b->use_cuda_bf16 &&
           a->allow_nonfinite == b->allow_nonfinite && a->exclude_lm_head == b->exclude_lm_head &&
           a->include_hidden_states == b->include_hidden_states && a->exclude_embeds == b->exclude_embeds;
}

static exported *export_fixture(const char *fixture, export_opts o)
{
    for (int i = 0; i < g_cached; i++)
        if (!strcmp(g_cache[i].fixture, fixture) && same_opts(&g_cache[i].o, &o))
            return &g_cache[i].x;
    if (g_cached == CACHE_MAX)
        return NULL;
    if (!g_cached)
        atexit(drop_cache);
    struct cached *c = &g_cache[g_cached];
    char src[512];
    m2o_err err = {{0}};
    snprintf(src, sizeof src, "%s/%s", test_fixtures_dir(), fixture);
    if (exported_convert(src, &o, &c->x, &err)) {
        fprintf(stderr, "export %s: %s\n", fixture, err.msg);
        exported_release(&c->x);
        return NULL;
    }
    snprintf(c->fixture, sizeof c->fixture, "%s", fixture);
    c->o = o;
    g_cached++;
    return &c->x;
}

static const void *init_data(exported *x, const char *name, int elem, int ndim, const int64_t *dims,
                             size_t *nbytes)
{
    const onnx_tensor *t = onnx_model_find_initializer(x->m, name);
    if (!t || onnx_tensor_elem_type(t) != elem || onnx_tensor_ndim(t) != ndim)
        return NULL;
    for (int i = 0; i < ndim; i++)
        if (onnx_tensor_dims(t)[i] != dims[i])
            return NULL;
    const void *d;
    m2o_err err = {{0}};
    if (onnx_model_tensor_data(x->m, t, &d, nbytes, &err))
        return NULL;
    return d;
}

/* Built on a zeroed struct: the export cache compares options with memcmp, padding included. */
static export_opts opts(precision p, exec_provider ep, moe_quant q, int block, int prepacked)
{
    export_opts o;
    memset(&o, 0, sizeof o);
    o.precision = p;
    o.ep = ep;
    o.io_dtype = ep == EP_CUDA ? ONNX_FLOAT16 : ONNX_FLOAT;
    o.int4_block_size = 32;
    o.moe_quant_type = q;
    o.qmoe_block_size = block;
    o.qmoe_weights_prepacked = prepacked;
    return o;
}

static const char *const FIXTURES[2] = {"qwen3-moe-tiny", "qwen2-moe-tiny"};
static const char *const PROJ[2] = {"gate_up_proj", "down_proj"};

/* Expert e of fc1 (p = 0: gate/up rows interleaved, [2I, H]) or fc2 (p = 1: [H, I]) as floats,
 * straight from the per-expert BF16 checkpoint tensors. */
static int expert_floats(const st_checkpoint *ck, int L, int64_t e, int p, float *out)
{
    char name[160];
    m2o_err err = {{0}};
    if (p == 1) {
        snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%lld.down_proj.weight", L, (long long)e);
        const st_tensor *t = ckpt_find(ck, name);
        return t ? st_read_f32(t, 0, (int64_t)H * I, out, &err) : -1;
    }
    float *half = malloc((size_t)I * H * sizeof(float));
    int rc = 0;
    for (int g = 0; g < 2 && !rc; g++) {
        snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%lld.%s_proj.weight", L, (long long)e,
                 g ? "up" : "gate");
        const st_tensor *t = ckpt_find(ck, name);
        rc = t ? st_read_f32(t, 0, (int64_t)I * H, half, &err) : -1;
        for (int64_t i = 0; i < I && !rc; i++)
            memcpy(out + (2 * i + g) * H, half + i * H, H * sizeof(float));
    }
    free(half);
    return rc;
}

/* Checks one QMoE/MoE node's SwiGLU and routing attributes. */
static int swiglu_attrs_ok(const onnx_node *n, int64_t normalize)
{
    int64_t v;
    float f;
    const char *s;
    if (!n || strcmp(onnx_node_domain(n), "com.microsoft")) return 0;
    if (!onnx_node_attr_int(n, "k", &v) || v != 2) return 0;
    if (!onnx_node_attr_string(n, "activation_type", &s) || strcmp(s, "swiglu")) return 0;
    if (!onnx_node_attr_int(n, "swiglu_fusion", &v) || v != 1) return 0;
    if (onnx_node_attr_float(n, "swiglu_limit", &f)) return 0; /* plain SwiGLU: no clamp */
    if (!onnx_node_attr_float(n, "activation_alpha", &f) || f != 1.0f) return 0;
    if (!onnx_node_attr_float(n, "activation_beta", &f) || f != 0.0f) return 0;
    if (!onnx_node_attr_int(n, "normalize_routing_weights", &v) || v != normalize) return 0;
    return 1;
}

static void check_cuda_int(const char *fixture, moe_quant q, int bits, int block, int prepacked)
{
    exported *cpu, *cuda;
    export_opts oc = opts(PREC_INT4, EP_CPU, q, block, 0);
    oc.io_dtype = ONNX_FLOAT16;
    CHECK((cpu = export_fixture(fixture, oc)) != NULL);
    CHECK((cuda = export_fixture(fixture, opts(PREC_INT4, EP_CUDA, q, block, prepacked))) != NULL);
    for (int L = 0; L < L_COUNT; L++) {
        char nn[96];
        snprintf(nn, sizeof nn, "/model/layers.%d/moe/QMoE", L);
        const onnx_node *n = onnx_model_find_node(cuda->m, nn);
        int64_t v;
        /* norm_topk_prob=false (qwen2): router_weights = Softmax(logits), not renormalised */
        int64_t norm = !strcmp(fixture, "qwen3-moe-tiny");
        CHECK_MSG(swiglu_attrs_ok(n, norm), "%s %s: SwiGLU/routing attributes", fixture, nn);
        CHECK(onnx_node_attr_int(n, "expert_weight_bits", &v) && v == bits);
        CHECK(onnx_node_attr_int(n, "block_size", &v) && v == block);
        CHECK(onnx_node_attr_int(n, "weights_prepacked", &v) && v == prepacked);
        CHECK_EQ(onnx_node_input_count(n), norm ? 8 : 15);
        for (int p = 0; p < 2; p++) {
            int64_t N = p ? H : 2 * I, K = p ? I : H;
            char wn[128], sn[128];
            snprintf(wn, sizeof wn, "model.layers.%d.moe.experts.%s.qweight", L, PROJ[p]);
            snprintf(sn, sizeof sn, "model.layers.%d.moe.experts.%s.scales", L, PROJ[p]);
            int64_t raw_dims[3] = {E, N, K * bits / 8}, packed_dims[3] = {E, K, N * bits / 8};
            int64_t sdims[3] = {E, N, K / block};
            size_t nb, nb2, sb, sb2;
            const uint8_t *raw = init_data(cpu, wn, ONNX_UINT8, 3, raw_dims, &nb);
            const uint8_t *got = init_data(cuda, wn, ONNX_UINT8, 3, prepacked ? packed_dims : raw_dims, &nb2);
            const uint16_t *s_cpu = init_data(cpu, sn, ONNX_FLOAT16, 3, sdims, &sb);
            const uint16_t *s_cuda = init_data(cuda, sn, ONNX_FLOAT16, 3, sdims, &sb2);
            CHECK_MSG(raw && got && s_cpu && s_cuda, "%s / %s missing or of the wrong shape/dtype", wn, sn);
            CHECK_EQ(nb, nb2);
            size_t per = (size_t)(N * K * bits / 8);
            uint8_t *un = malloc(per);
            m2o_err err = {{0}};
            for (int64_t e = 0; e < E; e++) {
                const uint8_t *ge = got + e * per;
                if (prepacked) {
                    CHECK(cutlass_sm80_unpack(ge, N, K, bits, un, &err) == 0);
                    ge = un;
                }
                CHECK_BYTES_EQ(ge, raw + e * per, per);
            }
            free(un);
            CHECK_BYTES_EQ(s_cuda, s_cpu, sb);
            /* and the CPU codes are the checkpoint's expert 3 (read here independently, gate/up
             * interleaved) quantized along K with float16 scales */
            float *w = malloc((size_t)(N * K) * sizeof(float));
            uint8_t *codes = malloc(per);
            uint16_t *sc = malloc((size_t)(N * K / block) * 2);
            CHECK(expert_floats(cpu->ck, L, 3, p, w) == 0);
            qb_params qp = {.bits = bits, .block_size = block, .symmetric = true, .scale_type = QSCALE_F16};
            CHECK(qb_quantize(w, N, K, &qp, codes, sc, NULL, &err) == 0);
            CHECK_BYTES_EQ(raw + 3 * per, codes, per);
            CHECK_BYTES_EQ(s_cpu + 3 * N * (K / block), sc, (size_t)(N * K / block) * 2);
            free(w), free(codes), free(sc);
        }
    }
}

TEST(cuda_int4_prepacked_decodes_to_cpu_codes)
{
    for (int f = 0; f < 2; f++)
        check_cuda_int(FIXTURES[f], MOE_QUANT_INT4, 4, 64, 1);
}

TEST(cuda_int8_prepacked_decodes_to_cpu_codes)
{
    check_cuda_int("qwen2-moe-tiny", MOE_QUANT_INT8, 8, 32, 1);
}

TEST(cuda_mxfp4_from_bf16_encodes_checkpoint_floats)
{
    exported *x;
    CHECK((x = export_fixture("qwen2-moe-tiny", opts(PREC_INT4, EP_CUDA, MOE_QUANT_MXFP4, 32, 0))) != NULL);
    CHECK_EQ(onnx_model_ir_version(x->m), 11);
    const onnx_node *n = onnx_model_find_node(x->m, "/model/layers.1/moe/QMoE");
    const char *qt;
    CHECK(swiglu_attrs_ok(n, 0) && onnx_node_attr_string(n, "quant_type", &qt) && !strcmp(qt, "fp4"));
    CHECK_EQ(onnx_node_input_count(n), 17);
    CHECK(!strcmp(onnx_node_input(n, 14), "/model/layers.1/moe/router/Softmax/output_0"));
    for (int p = 0; p < 2; p++) {
        int64_t N = p ? H : 2 * I, K = p ? I : H;
        char wn[128], sn[128];
        snprintf(wn, sizeof wn, "model.layers.1.moe.experts.%s.qweight", PROJ[p]);
        snprintf(sn, sizeof sn, "model.layers.1.moe.experts.%s.scales", PROJ[p]);
        int64_t wd[3] = {E, K, N / 2}, sd[3] = {E, N, K / 32};
        size_t nb, sb;
        const uint8_t *w = init_data(x, wn, ONNX_UINT8, 3, wd, &nb);
        const uint8_t *s = init_data(x, sn, ONNX_FLOAT8E8M0, 3, sd, &sb);
        CHECK_MSG(w && s, "%s / %s missing or of the wrong shape/dtype", wn, sn);
        float *f = malloc((size_t)(N * K) * sizeof(float));
        uint8_t *want_c = malloc((size_t)(N * K / 2)), *want_s = malloc((size_t)(N * K / 32));
        uint8_t *codes = malloc((size_t)(N * K / 2));
        m2o_err err = {{0}};
        for (int64_t e = 0; e < E; e += 3) {
            CHECK(expert_floats(x->ck, 1, e, p, f) == 0);
            CHECK(mxfp4_encode(f, N, K, want_c, want_s, &err) == 0);
            CHECK(fp4_cuda_unpack(w + e * (N * K / 2), N, K, codes, &err) == 0);
            CHECK_BYTES_EQ(codes, want_c, (size_t)(N * K / 2));
            CHECK_BYTES_EQ(s + e * (N * K / 32), want_s, (size_t)(N * K / 32));
        }
        free(f), free(want_c), free(want_s), free(codes);
    }
}

/* norm_topk_prob=false (qwen2 fixture) on each op, and true (qwen3) for contrast. */
TEST(routing_per_provider)
{
    struct { const char *fx; precision p; exec_provider ep; const char *op; int64_t normalize;
             bool router_weights, mass; } c[] = {
        {"qwen2-moe-tiny", PREC_INT4, EP_CPU, "QMoE", 0, true, false},
        {"qwen2-moe-tiny", PREC_FP32, EP_CPU, "MoE", 1, false, true},
        {"qwen2-moe-tiny", PREC_FP16, EP_CUDA, "MoE", 1, false, true},
        {"qwen2-moe-tiny", PREC_INT4, EP_CUDA, "QMoE", 0, true, false},
        {"qwen3-moe-tiny", PREC_INT4, EP_CPU, "QMoE", 1, false, false},
        {"qwen3-moe-tiny", PREC_FP32, EP_CPU, "MoE", 1, false, false},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        exported *x;
        /* CUDA int4 as check_cuda_int exports it (shared) */
        int block = c[i].ep == EP_CUDA && c[i].p == PREC_INT4 ? 64 : 32;
        CHECK((x = export_fixture(c[i].fx, opts(c[i].p, c[i].ep, MOE_QUANT_INT4, block, c[i].ep == EP_CUDA))) != NULL);
        for (int L = 0; L < L_COUNT; L++) {
            char nn[96], sm[96], mul[96];
            snprintf(nn, sizeof nn, "/model/layers.%d/moe/%s", L, c[i].op);
            snprintf(sm, sizeof sm, "/model/layers.%d/moe/router/Softmax/output_0", L);
            snprintf(mul, sizeof mul, "/model/layers.%d/moe/topk_mass/Mul", L);
            const onnx_node *n = onnx_model_find_node(x->m, nn);
            CHECK_MSG(swiglu_attrs_ok(n, c[i].normalize), "case %zu %s: attributes", i, nn);
            bool rw = onnx_node_input_count(n) > 14 && !strcmp(onnx_node_input(n, 14), sm);
            CHECK_MSG(rw == c[i].router_weights, "case %zu %s: router_weights %s", i, nn,
                      rw ? "present" : "absent");
            const onnx_node *m = onnx_model_find_node(x->m, mul);
            CHECK_MSG((m != NULL) == c[i].mass, "case %zu: %s %s", i, mul, m ? "present" : "absent");
            if (m) { /* scales the op's output by ReduceSum(TopK(Softmax(logits), k)) */
                char out0[128];
                snprintf(out0, sizeof out0, "%s/output_0", nn);
                CHECK(!strcmp(onnx_node_input(m, 0), out0));
                snprintf(nn, sizeof nn, "/model/layers.%d/moe/topk_mass/TopK", L);
                const onnx_node *tk = onnx_model_find_node(x->m, nn);
                CHECK(tk && !strcmp(onnx_node_input(tk, 0),
                                    gname_fmt("/model/layers.%d/moe/topk_mass/Softmax/output_0", L).s));
            }
        }
    }
}

static bool is_op(exported *x, const char *node, const char *op)
{
    const onnx_node *n = onnx_model_find_node(x->m, node);
    return n && !strcmp(onnx_node_op(n), op);
}

TEST(int4_keeps_router_and_shared_gate_float)
{
    exported *x;
    CHECK((x = export_fixture("qwen2-moe-tiny", opts(PREC_INT4, EP_CPU, MOE_QUANT_INT4, 32, 0))) != NULL);
    for (int L = 0; L < L_COUNT; L++) {
        char b[128];
#define NODE(...) (snprintf(b, sizeof b, __VA_ARGS__), b)
        CHECK(is_op(x, NODE("/model/layers.%d/moe/router/MatMul", L), "MatMul"));
        CHECK(is_op(x, NODE("/model/layers.%d/shared_expert_gate/MatMul", L), "MatMul"));
        CHECK(is_op(x, NODE("/model/layers.%d/shared_expert_gate/Sigmoid", L), "Sigmoid"));
        CHECK(is_op(x, NODE("/model/layers.%d/shared_expert_gate/Mul", L), "Mul"));
        CHECK(is_op(x, NODE("/model/layers.%d/moe_shared/Add", L), "Add"));
        const char *proj[3] = {"gate_proj", "up_proj", "down_proj"};
        for (int j = 0; j < 3; j++)
            CHECK_MSG(is_op(x, NODE("/model/layers.%d/shared_expert/%s/MatMul_Q4", L, proj[j]),
                            "MatMulNBits"), "%s not MatMulNBits", b);
        CHECK(is_op(x, NODE("/model/layers.%d/shared_expert/act_fn/Mul", L), "Mul"));
        CHECK(is_op(x, NODE("/model/layers.%d/shared_expert/Mul", L), "Mul"));
        CHECK(is_op(x, NODE("/model/layers.%d/attn/qkv_proj/MatMul_Q4", L), "MatMulNBits"));
        /* float weights of the gate: [H, 1] float32 equal to the checkpoint */
        int64_t gd[2] = {H, 1};
        size_t nb;
        const float *g = init_data(x, NODE("model.layers.%d.shared_expert_gate.MatMul.weight", L),
                                   ONNX_FLOAT, 2, gd, &nb);
        const st_tensor *t = ckpt_find(x->ck, NODE("model.layers.%d.mlp.shared_expert_gate.weight", L));
        CHECK(g && t);
        float want[H];
        m2o_err err = {{0}};
        CHECK(st_read_f32(t, 0, H, want, &err) == 0);
        CHECK_BYTES_EQ(g, want, sizeof want);
#undef NODE
    }
}

/* q/k norms (qwen3) and stacked q/k/v biases without an o_proj bias (qwen2), from the checkpoint. */
TEST(attention_norms_and_biases)
{
    exported *x;
    CHECK((x = export_fixture("qwen3-moe-tiny", opts(PREC_FP32, EP_CPU, MOE_QUANT_INT4, 32, 0))) != NULL);
    for (int L = 0; L < L_COUNT; L++)
        for (int k = 0; k < 2; k++) {
            const char *w = k ? "k" : "q";
            char node[128], init[128], ck[128], expect_in[160];
            snprintf(node, sizeof node, "/model/layers.%d/attn/%s_norm/SimplifiedLayerNorm", L, w);
            snprintf(init, sizeof init, "model.layers.%d.attn.%s_norm.layernorm.weight", L, w);
            snprintf(ck, sizeof ck, "model.layers.%d.self_attn.%s_norm.weight", L, w);
            const onnx_node *n = onnx_model_find_node(x->m, node);
            CHECK_MSG(n && !strcmp(onnx_node_input(n, 1), init), "%s", node);
            float eps;
            CHECK(onnx_node_attr_float(n, "epsilon", &eps) && eps == 1e-6f);
            int64_t d[1] = {HD};
            size_t nb;
            const float *got = init_data(x, init, ONNX_FLOAT, 1, d, &nb);
            float want[HD];
            m2o_err err = {{0}};
            CHECK(got && st_read_f32(ckpt_find(x->ck, ck), 0, HD, want, &err) == 0);
            CHECK_BYTES_EQ(got, want, sizeof want);
            /* GQA takes the normed q and k, and v straight from its projection */
            snprintf(node, sizeof node, "/model/layers.%d/attn/GroupQueryAttention", L);
            const onnx_node *g = onnx_model_find_node(x->m, node);
            snprintf(expect_in, sizeof expect_in, "/model/layers.%d/attn/%s_norm/Reshape_2/output_0", L, w);
            CHECK(g && !strcmp(onnx_node_input(g, (size_t)k), expect_in));
            snprintf(expect_in, sizeof expect_in, "/model/layers.%d/attn/v_proj/MatMul/output_0", L);
            CHECK(!strcmp(onnx_node_input(g, 2), expect_in));
        }
    CHECK(onnx_model_find_initializer(x->m, "model.layers.0.attn.q_proj.Add.bias") == NULL);
    CHECK(onnx_model_find_initializer(x->m, "model.layers.0.attn.o_proj.Add.bias") == NULL);

    CHECK((x = export_fixture("qwen2-moe-tiny", opts(PREC_FP32, EP_CPU, MOE_QUANT_INT4, 32, 0))) != NULL);
    int64_t d[1] = {S + 2 * 128};
    size_t nb;
    const float *bias = init_data(x, "model.layers.1.attn.qkv_proj.Add.bias", ONNX_FLOAT, 1, d, &nb);
    CHECK(bias);
    const char *part[3] = {"q", "k", "v"};
    int64_t off = 0, len[3] = {S, 128, 128};
    for (int j = 0; j < 3; j++) {
        char ck[128];
        float want[S];
        m2o_err err = {{0}};
        snprintf(ck, sizeof ck, "model.layers.1.self_attn.%s_proj.bias", part[j]);
        CHECK(st_read_f32(ckpt_find(x->ck, ck), 0, len[j], want, &err) == 0);
        CHECK_BYTES_EQ(bias + off, want, (size_t)len[j] * sizeof(float));
        off += len[j];
    }
    CHECK(onnx_model_find_initializer(x->m, "model.layers.1.attn.o_proj.Add.bias") == NULL);
    CHECK(onnx_model_find_node(x->m, "/model/layers.1/attn/q_norm/SimplifiedLayerNorm") == NULL);
}

/* Node names, and values produced by nodes, are unique over both graphs and precisions. */
TEST(exported_names_are_unique)
{
    precision ps[2] = {PREC_FP32, PREC_INT4};
    for (int f = 0; f < 2; f++)
        for (int p = 0; p < 2; p++) {
            exported *x;
            CHECK((x = export_fixture(FIXTURES[f], opts(ps[p], EP_CPU, MOE_QUANT_INT4, 32, 0))) != NULL);
            size_t n = onnx_model_node_count(x->m), n_vals = 0;
            const char **nodes = malloc(n * sizeof *nodes), **vals = malloc(8 * n * sizeof *vals);
            for (size_t i = 0; i < n; i++) {
                const onnx_node *nd = onnx_model_node(x->m, i);
                nodes[i] = onnx_node_name(nd);
                CHECK_MSG(nodes[i][0], "node %zu (%s) has no name", i, onnx_node_op(nd));
                for (size_t j = 0; j < onnx_node_output_count(nd) && n_vals < 8 * n; j++)
                    vals[n_vals++] = onnx_node_output(nd, j);
            }
            for (size_t i = 0; i < n; i++)
                for (size_t j = i + 1; j < n; j++)
                    CHECK_MSG(strcmp(nodes[i], nodes[j]), "%s: two nodes named %s", FIXTURES[f], nodes[i]);
            for (size_t i = 0; i < n_vals; i++)
                for (size_t j = i + 1; j < n_vals; j++)
                    CHECK_MSG(strcmp(vals[i], vals[j]), "%s: value %s produced twice", FIXTURES[f], vals[i]);
            free(nodes);
            free(vals);
        }
}

/* ---- broken checkpoints ---- */

/* Writes dir/model.safetensors with the fixture's tensors except `drop` (NULL = none), and
 * dir/config.json with `from` replaced by `to` (NULL = unchanged). */
static int write_variant(const char *fixture, const char *dir, const char *drop, const char *from,
                         const char *to)
{
    char src[512], path[700];
    m2o_err err = {{0}};
    snprintf(src, sizeof src, "%s/%s", test_fixtures_dir(), fixture);
    st_checkpoint *ck;
    if (ckpt_open(src, &ck, &err))
        return -1;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_writer *w;
    int rc = st_writer_open(path, 1, &w, &err);
    for (size_t i = 0; !rc && i < ckpt_count(ck); i++) {
        const st_tensor *t = ckpt_tensor(ck, i);
        if (!drop || strcmp(t->name, drop))
            rc = st_writer_declare(w, t->name, t->dtype, t->ndim, t->shape, &err);
    }
    rc = rc ? rc : st_writer_begin_data(w, &err);
    for (size_t i = 0; !rc && i < ckpt_count(ck); i++) {
        const st_tensor *t = ckpt_tensor(ck, i);
        if (!drop || strcmp(t->name, drop))
            rc = st_writer_write(w, t->data, t->nbytes, &err);
    }
    rc = rc ? (st_writer_abort(w), rc) : st_writer_finish(w, &err);
    ckpt_close(ck);
    const char *copy[3] = {"tokenizer.json", "tokenizer_config.json", "generation_config.json"};
    for (int i = 0; i < 3 && !rc; i++) {
        size_t n;
        unsigned char *b = read_whole(src, copy[i], &n);
        snprintf(path, sizeof path, "%s/%s", dir, copy[i]);
        FILE *f = b ? fopen(path, "wb") : NULL;
        rc = f && fwrite(b, 1, n, f) == n ? 0 : -1;
        if (f)
            fclose(f);
        free(b);
    }
    size_t len;
    unsigned char *raw = read_whole(src, "config.json", &len);
    char *cfg = raw ? calloc(1, len + 1) : NULL;
    if (cfg)
        memcpy(cfg, raw, len);
    free(raw);
    if (rc || !cfg)
        return free(cfg), -1;
    char *at = from ? strstr(cfg, from) : NULL;
    if (from && !at)
        return free(cfg), -1;
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (at)
        fprintf(f, "%.*s%s%s", (int)(at - cfg), cfg, to, at + strlen(from));
    else
        fputs(cfg, f);
    fclose(f);
    free(cfg);
    return 0;
}

static void expect_failure(const char *fixture, const char *drop, const char *from, const char *to,
                           const char *needle)
{
    char dir[512];
    CHECK(make_temp_dir(dir, sizeof dir));
    CHECK(write_variant(fixture, dir, drop, from, to) == 0);
    exported x;
    m2o_err err = {{0}};
    export_opts o = opts(PREC_FP32, EP_CPU, MOE_QUANT_INT4, 32, 0);
    int rc = exported_convert(dir, &o, &x, &err);
    char msg[sizeof err.msg];
    memcpy(msg, err.msg, sizeof msg);
    exported_release(&x);
    remove_temp_dir(dir);
    CHECK_MSG(rc == -1, "%s without %s exported", fixture, drop ? drop : "(config change)");
    CHECK_STR_CONTAINS(msg, needle);
}

TEST(missing_tensors_are_named)
{
    expect_failure("qwen3-moe-tiny", "model.layers.1.mlp.experts.5.up_proj.weight", NULL, NULL,
                   "model.layers.1.mlp.experts.5.up_proj.weight");
    expect_failure("qwen3-moe-tiny", "model.layers.0.self_attn.k_norm.weight", NULL, NULL,
                   "model.layers.0.self_attn.k_norm.weight");
    expect_failure("qwen2-moe-tiny", "model.layers.1.mlp.shared_expert_gate.weight", NULL, NULL,
                   "model.layers.1.mlp.shared_expert_gate.weight");
    expect_failure("qwen2-moe-tiny", "model.layers.0.self_attn.v_proj.bias", NULL, NULL,
                   "model.layers.0.self_attn.v_proj.bias");
    /* a dense layer by config, but the checkpoint still holds experts: its MLP weights missing */
    expect_failure("qwen3-moe-tiny", NULL, "\"mlp_only_layers\": []", "\"mlp_only_layers\": [1]",
                   "model.layers.1.mlp.gate_proj.weight");
    /* fewer experts in the checkpoint than the config says */
    expect_failure("qwen2-moe-tiny", NULL, "\"num_experts\": 8", "\"num_experts\": 9",
                   "model.layers.0.mlp.experts.8.gate_proj.weight");
}

/* A working variant written by the same helper exports, so the failures above are the drops. */
TEST(variant_writer_round_trip_exports)
{
    char dir[512];
    CHECK(make_temp_dir(dir, sizeof dir));
    CHECK(write_variant("qwen2-moe-tiny", dir, NULL, NULL, NULL) == 0);
    exported x;
    m2o_err err = {{0}};
    export_opts o = opts(PREC_FP32, EP_CPU, MOE_QUANT_INT4, 32, 0);
    int rc = exported_convert(dir, &o, &x, &err);
    exported_release(&x);
    remove_temp_dir(dir);
    CHECK_MSG(rc == 0, "%s", err.msg);
}

/* bfloat16 io on CUDA (-p bf16, and int4 with use_cuda_bf16): inputs and caches in bfloat16,
 * logits float32. The experts run in float16 (ONNX Runtime's CUDA MoE and QMoE are wrong in
 * bfloat16, graph/moe.c): each float weight is the checkpoint's BF16 value rounded to float16,
 * QMoE scales are float16, and the expert node sits between casts to float16 and back. */
TEST(cuda_bf16_dtypes)
{
    export_opts o = opts(PREC_BF16, EP_CUDA, MOE_QUANT_INT4, 32, 1);
    o.io_dtype = ONNX_BFLOAT16;
    exported *x;
    CHECK((x = export_fixture("qwen3-moe-tiny", o)) != NULL);
    const onnx_value *past = onnx_model_find_input(x->m, "past_key_values.0.key");
    const onnx_value *logits = onnx_model_find_output(x->m, "logits");
    CHECK(past && onnx_value_elem_type(past) == ONNX_BFLOAT16);
    CHECK(logits && onnx_value_elem_type(logits) == ONNX_FLOAT);
    int64_t d[3] = {E, 2 * I, H};
    size_t nb;
    const uint16_t *w = init_data(x, "model.layers.1.moe.experts.gate_up_proj.weight", ONNX_FLOAT16, 3, d, &nb);
    const st_tensor *up = ckpt_find(x->ck, "model.layers.1.mlp.experts.5.up_proj.weight");
    CHECK(w && up && up->dtype == ST_BF16);
    int64_t bad = 0;
    for (int64_t i = 0; i < I; i++) /* expert 5, row 2i + 1 = up row i */
        for (int64_t k = 0; k < H; k++) {
            uint16_t src;
            memcpy(&src, up->data + (i * H + k) * 2, 2);
            bad += w[(5 * 2 * I + 2 * i + 1) * H + k] != f32_to_f16(bf16_to_f32(src));
        }
    CHECK(bad == 0);
    const onnx_node *moe = onnx_model_find_node(x->m, "/model/layers.1/moe/MoE");
    const onnx_node *back = onnx_model_find_node(x->m, "/model/layers.1/moe/output/Cast");
    CHECK(moe && back && !strcmp(onnx_node_input(moe, 0), "/model/layers.1/moe/input/Cast/output_0"));
    CHECK(back && !strcmp(onnx_node_input(back, 0), onnx_node_output(moe, 0)));

    o = opts(PREC_INT4, EP_CUDA, MOE_QUANT_INT4, 64, 1);
    o.io_dtype = ONNX_BFLOAT16;
    o.use_cuda_bf16 = true;
    CHECK((x = export_fixture("qwen3-moe-tiny", o)) != NULL);
    int64_t sd[3] = {E, H, I / 64};
    CHECK(init_data(x, "model.layers.0.moe.experts.down_proj.scales", ONNX_FLOAT16, 3, sd, &nb));
    const onnx_node *n = onnx_model_find_node(x->m, "/model/layers.0/moe/QMoE");
    CHECK(swiglu_attrs_ok(n, 1) && onnx_node_input_count(n) == 8);
}
