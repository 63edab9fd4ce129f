/* gpt-oss exports for CUDA, which cannot run here: each one is written, read back with the model
 * reader, and its QMoE initializers decoded through the inverse kernels —
 *   int4/int8 CUTLASS SM80 prepacked → unpacked codes equal the raw codes of a CPU-layout export
 *   with the same io dtype, byte for byte, and so do the raw CUDA codes and the signed scales;
 *   mxfp4 from the MXFP4 checkpoint → codes and scale bytes equal the checkpoint's exactly;
 *   mxfp4 from BF16 → the encoding of the checkpoint's own floats —
 * plus dtypes (float16 io, float32 logits, FLOAT8E8M0 scales) and the QMoE attributes of docs/FORMATS.md §11.5.
 * Also: every node name and value name is unique, and a duplicate is a build error. */
#include <stdlib.h>
#include <string.h>

#include "arch/export.h"
#include "arch/model_desc.h"
#include "common/half.h"
#include "onnx/model_reader.h"
#include "quant/quant.h"
#include "test.h"
#include "test_export.h"

static int export_fixture(const char *fixture, export_opts o, exported *x)
{
    char src[512];
    m2o_err err = {{0}};
    snprintf(src, sizeof src, "%s/%s", test_fixtures_dir(), fixture);
    if (exported_convert(src, &o, x, &err)) {
        fprintf(stderr, "export %s: %s\n", fixture, err.msg);
        return -1;
    }
    return 0;
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

static export_opts int_opts(exec_provider ep, moe_quant q, int block, int prepacked)
{
    export_opts o = {.precision = PREC_INT4, .ep = ep, .io_dtype = ONNX_FLOAT16,
                     .int4_block_size = 32, .int4_accuracy_level = 0, .moe_quant_type = q,
                     .qmoe_block_size = block, .qmoe_weights_prepacked = prepacked};
    return o;
}

static const char *const PROJ[2] = {"gate_up_proj", "down_proj"};

/* Checks one QMoE node's attributes. */
static int qmoe_attrs_ok(exported *x, int layer, int bits, int block, const char *quant_type,
                         int prepacked)
{
    char name[128];
    snprintf(name, sizeof name, "/model/layers.%d/moe/QMoE", layer);
    const onnx_node *n = onnx_model_find_node(x->m, name);
    int64_t v;
    float f;
    const char *s;
    if (!n || strcmp(onnx_node_domain(n), "com.microsoft"))
        return 0;
    if (!onnx_node_attr_int(n, "k", &v) || v != 2) return 0;
    if (!onnx_node_attr_string(n, "activation_type", &s) || strcmp(s, "swiglu")) return 0;
    if (!onnx_node_attr_int(n, "swiglu_fusion", &v) || v != 1) return 0;
    if (!onnx_node_attr_float(n, "swiglu_limit", &f) || f != 7.0f) return 0;
    if (!onnx_node_attr_float(n, "activation_alpha", &f) || f != 1.702f) return 0;
    if (!onnx_node_attr_float(n, "activation_beta", &f) || f != 1.0f) return 0;
    if (!onnx_node_attr_int(n, "normalize_routing_weights", &v) || v != 1) return 0;
    if (!onnx_node_attr_int(n, "expert_weight_bits", &v) || v != bits) return 0;
    if (!onnx_node_attr_int(n, "block_size", &v) || v != block) return 0;
    if (quant_type) {
        if (!onnx_node_attr_string(n, "quant_type", &s) || strcmp(s, quant_type)) return 0;
        if (onnx_node_input_count(n) != 17) return 0;
    } else if (!onnx_node_attr_int(n, "weights_prepacked", &v) || v != prepacked) {
        return 0;
    }
    return 1;
}

/* CUDA int export vs a CPU-layout export with the same io dtype and block: decoded codes and
 * scales equal byte for byte; scales keep both signs. */
static void check_cuda_int(moe_quant q, int bits, int block, int prepacked)
{
    exported cpu, cuda;
    CHECK(export_fixture("gpt-oss-tiny", int_opts(EP_CPU, q, block, 0), &cpu) == 0);
    CHECK(export_fixture("gpt-oss-tiny", int_opts(EP_CUDA, q, block, prepacked), &cuda) == 0);
    int64_t E = 8, H = 256, I = 256;
    for (int L = 0; L < 2; L++) {
        CHECK_MSG(qmoe_attrs_ok(&cuda, L, bits, block, NULL, prepacked),
                  "layer %d QMoE attributes differ from docs/FORMATS.md §11.5", L);
        for (int p = 0; p < 2; p++) {
            int64_t N = p ? H : 2 * I, K = p ? I : H;
            char wn[128], sn[128];
            snprintf(wn, sizeof wn, "model.layers.%d.moe.experts.%s.qweight", L, PROJ[p]);
            snprintf(sn, sizeof sn, "model.layers.%d.moe.experts.%s.scales", L, PROJ[p]);
            int64_t raw_dims[3] = {E, N, K * bits / 8}, packed_dims[3] = {E, K, N * bits / 8};
            int64_t sdims[3] = {E, N, K / block};
            size_t nb, nb2, sb, sb2;
            const uint8_t *raw = init_data(&cpu, wn, ONNX_UINT8, 3, raw_dims, &nb);
            const uint8_t *got = init_data(&cuda, wn, ONNX_UINT8, 3, prepacked ? packed_dims : raw_dims, &nb2);
            const uint16_t *s_cpu = init_data(&cpu, sn, ONNX_FLOAT16, 3, sdims, &sb);
            const uint16_t *s_cuda = init_data(&cuda, sn, ONNX_FLOAT16, 3, sdims, &sb2);
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
            size_t neg = 0, pos = 0;
            for (size_t i = 0; i < sb / 2; i++) {
                float v = f16_to_f32(s_cuda[i]);
                neg += v < 0;
                pos += v > 0;
            }
            CHECK_MSG(neg > 0 && pos > 0, "%s: %zu negative and %zu positive scales; symmetric "
                                          "scales must keep the anchor's sign", sn, neg, pos);
            char bn[128];
            int64_t bdims[2] = {E, N};
            snprintf(bn, sizeof bn, "model.layers.%d.moe.experts.%s.bias", L, PROJ[p]);
            CHECK_MSG(init_data(&cuda, bn, ONNX_FLOAT16, 2, bdims, &nb), "%s not float16 [E, N]", bn);
        }
    }
    const onnx_value *past = onnx_model_find_input(cuda.m, "past_key_values.1.value");
    const onnx_value *logits = onnx_model_find_output(cuda.m, "logits");
    CHECK(past && onnx_value_elem_type(past) == ONNX_FLOAT16);
    CHECK(logits && onnx_value_elem_type(logits) == ONNX_FLOAT);
    exported_release(&cpu);
    exported_release(&cuda);
}

TEST(cuda_int4_prepacked_decodes_to_cpu_codes)
{
    check_cuda_int(MOE_QUANT_INT4, 4, 128, 1);
}

TEST(cuda_int4_raw_equals_cpu_codes)
{
    check_cuda_int(MOE_QUANT_INT4, 4, 64, 0);
}

TEST(cuda_int8_prepacked_decodes_to_cpu_codes)
{
    check_cuda_int(MOE_QUANT_INT8, 8, 32, 1);
}

TEST(cuda_mxfp4_from_mxfp4_checkpoint_is_byte_exact_passthrough)
{
    exported x;
    CHECK(export_fixture("gpt-oss-tiny", int_opts(EP_CUDA, MOE_QUANT_MXFP4, 32, 0), &x) == 0);
    CHECK_EQ(onnx_model_ir_version(x.m), 11);
    int64_t E = 8, H = 256, I = 256;
    for (int L = 0; L < 2; L++) {
        CHECK_MSG(qmoe_attrs_ok(&x, L, 4, 32, "fp4", 0), "layer %d fp4 QMoE attributes", L);
        for (int p = 0; p < 2; p++) {
            int64_t N = p ? H : 2 * I, K = p ? I : H;
            char wn[128], sn[128], gn[128], bn[128], sc[128];
            snprintf(wn, sizeof wn, "model.layers.%d.moe.experts.%s.qweight", L, PROJ[p]);
            snprintf(sn, sizeof sn, "model.layers.%d.moe.experts.%s.scales", L, PROJ[p]);
            snprintf(gn, sizeof gn, "model.layers.%d.moe.experts.%s.global_scale", L, PROJ[p]);
            snprintf(bn, sizeof bn, "model.layers.%d.mlp.experts.%s_blocks", L, PROJ[p]);
            snprintf(sc, sizeof sc, "model.layers.%d.mlp.experts.%s_scales", L, PROJ[p]);
            int64_t wd[3] = {E, K, N / 2}, sd[3] = {E, N, K / 32}, gd[1] = {E};
            size_t nb, sb, gb;
            const uint8_t *w = init_data(&x, wn, ONNX_UINT8, 3, wd, &nb);
            const uint8_t *s = init_data(&x, sn, ONNX_FLOAT8E8M0, 3, sd, &sb);
            const float *g = init_data(&x, gn, ONNX_FLOAT, 1, gd, &gb);
            const st_tensor *blocks = ckpt_find(x.ck, bn), *scales = ckpt_find(x.ck, sc);
            CHECK_MSG(w && s && g && blocks && scales, "fp4 tensors of layer %d %s", L, PROJ[p]);
            size_t per = (size_t)(N * K / 2);
            uint8_t *codes = malloc(per);
            m2o_err err = {{0}};
            for (int64_t e = 0; e < E; e++) {
                CHECK(fp4_cuda_unpack(w + e * per, N, K, codes, &err) == 0);
                CHECK_BYTES_EQ(codes, blocks->data + e * per, per);
                CHECK_NEAR(g[e], 1.0, 0);
            }
            free(codes);
            CHECK_EQ(sb, scales->nbytes);
            CHECK_BYTES_EQ(s, scales->data, sb);
        }
    }
    exported_release(&x);
}

TEST(cuda_mxfp4_from_bf16_encodes_checkpoint_floats)
{
    exported x;
    CHECK(export_fixture("gpt-oss-bf16-tiny", int_opts(EP_CUDA, MOE_QUANT_MXFP4, 32, 0), &x) == 0);
    int64_t E = 8, H = 256, I = 256;
    for (int p = 0; p < 2; p++) {
        int64_t N = p ? H : 2 * I, K = p ? I : H;
        char wn[128], sn[128], tn[128];
        snprintf(wn, sizeof wn, "model.layers.1.moe.experts.%s.qweight", PROJ[p]);
        snprintf(sn, sizeof sn, "model.layers.1.moe.experts.%s.scales", PROJ[p]);
        snprintf(tn, sizeof tn, "model.layers.1.mlp.experts.%s", PROJ[p]);
        int64_t wd[3] = {E, K, N / 2}, sd[3] = {E, N, K / 32};
        size_t nb, sb;
        const uint8_t *w = init_data(&x, wn, ONNX_UINT8, 3, wd, &nb);
        const uint8_t *s = init_data(&x, sn, ONNX_FLOAT8E8M0, 3, sd, &sb);
        const st_tensor *t = ckpt_find(x.ck, tn); /* [E, K, N] input-major BF16 */
        CHECK(w && s && t && t->dtype == ST_BF16);
        float *f = malloc((size_t)(N * K) * sizeof(float));
        uint8_t *want_c = malloc((size_t)(N * K / 2)), *want_s = malloc((size_t)(N * K / 32));
        uint8_t *codes = malloc((size_t)(N * K / 2));
        m2o_err err = {{0}};
        for (int64_t e = 0; e < E; e += 3) {
            for (int64_t k = 0; k < K; k++)
                for (int64_t n = 0; n < N; n++) {
                    uint16_t bits;
                    memcpy(&bits, t->data + 2 * ((e * K + k) * N + n), 2);
                    f[n * K + k] = bf16_to_f32(bits);
                }
            CHECK(mxfp4_encode(f, N, K, want_c, want_s, &err) == 0);
            CHECK(fp4_cuda_unpack(w + e * (N * K / 2), N, K, codes, &err) == 0);
            CHECK_BYTES_EQ(codes, want_c, (size_t)(N * K / 2));
            CHECK_BYTES_EQ(s + e * (N * K / 32), want_s, (size_t)(N * K / 32));
        }
        free(f), free(want_c), free(want_s), free(codes);
    }
    exported_release(&x);
}

/* Node names, and values produced by nodes, are unique over the whole exported graph. */
TEST(exported_names_are_unique)
{
    exported x;
    export_opts o = int_opts(EP_CPU, MOE_QUANT_INT4, 32, 0);
    o.io_dtype = ONNX_FLOAT;
    CHECK(export_fixture("gpt-oss-tiny", o, &x) == 0);
    size_t n = onnx_model_node_count(x.m), n_vals = 0;
    const char **nodes = malloc(n * sizeof *nodes), **vals = malloc(8 * n * sizeof *vals);
    for (size_t i = 0; i < n; i++) {
        const onnx_node *nd = onnx_model_node(x.m, i);
        nodes[i] = onnx_node_name(nd);
        CHECK_MSG(nodes[i][0], "node %zu (%s) has no name", i, onnx_node_op(nd));
        for (size_t j = 0; j < onnx_node_output_count(nd) && n_vals < 8 * n; j++)
            vals[n_vals++] = onnx_node_output(nd, j);
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            CHECK_MSG(strcmp(nodes[i], nodes[j]), "two nodes named %s", nodes[i]);
    for (size_t i = 0; i < n_vals; i++)
        for (size_t j = i + 1; j < n_vals; j++)
            CHECK_MSG(strcmp(vals[i], vals[j]), "value %s produced twice", vals[i]);
    free(nodes);
    free(vals);
    /* the window rule and the sinks reach the attention nodes */
    const onnx_node *g0 = onnx_model_find_node(x.m, "/model/layers.0/attn/GroupQueryAttention");
    const onnx_node *g1 = onnx_model_find_node(x.m, "/model/layers.1/attn/GroupQueryAttention");
    int64_t w0, w1;
    CHECK(g0 && g1 && onnx_node_attr_int(g0, "local_window_size", &w0) &&
          onnx_node_attr_int(g1, "local_window_size", &w1));
    CHECK_EQ(w0, 4);
    CHECK_EQ(w1, -1);
    CHECK_EQ(onnx_node_input_count(g0), 12);
    CHECK(!strcmp(onnx_node_input(g0, 11), "model.layers.0.attn.sinks"));
    CHECK(onnx_model_find_node(x.m, "/model/layers.1/attn/qkv_proj/MatMul_Q4") != NULL);
    CHECK(onnx_model_find_node(x.m, "/model/layers.0/moe/router/MatMul") != NULL); /* float */
    exported_release(&x);
}

TEST(duplicate_name_is_a_build_error)
{
    char src[512];
    snprintf(src, sizeof src, "%s/gpt-oss-tiny", test_fixtures_dir());
    model_desc md;
    st_checkpoint *ck;
    m2o_err err = {{0}};
    CHECK(config_load(src, &md, &err) == 0 && ckpt_open(src, &ck, &err) == 0);
    export_opts o = {.precision = PREC_FP32, .ep = EP_CPU, .io_dtype = ONNX_FLOAT};
    graph *g = graph_new("g");
    CHECK(arch_build_graph(&md, ck, &o, g, &err) == 0);
    CHECK(graph_check(g, &err) == 0);
    const char *in[1] = {"input_ids"}, *out[1] = {"x"};
    graph_add_node(g, "Identity", NULL, "/model/layers.0/attn/GroupQueryAttention", 1, in, 1, out);
    CHECK(graph_check(g, &err) == -1);
    CHECK_STR_CONTAINS(err.msg, "/model/layers.0/attn/GroupQueryAttention");
    graph_free(g);
    ckpt_close(ck);
}

/* qmoe_quantize_bias rounds each expert bias row through the expert quantizer (what the fixtures'
 * reference-int4 files hold); without it the biases are the checkpoint's values exactly. */
TEST(expert_bias_rounding_is_opt_in)
{
    for (int bits = 4; bits <= 8; bits += 4) {
        for (int qdq = 0; qdq < 2; qdq++) {
            exported x;
            export_opts o = int_opts(EP_CPU, bits == 8 ? MOE_QUANT_INT8 : MOE_QUANT_INT4, 32, 0);
            o.io_dtype = ONNX_FLOAT;
            o.qmoe_quantize_bias = qdq;
            CHECK(export_fixture("gpt-oss-bf16-tiny", o, &x) == 0);
            int64_t E = 8, N = 512, dims[2] = {E, N};
            size_t nb;
            const float *got = init_data(&x, "model.layers.1.moe.experts.gate_up_proj.bias",
                                         ONNX_FLOAT, 2, dims, &nb);
            const st_tensor *t = ckpt_find(x.ck, "model.layers.1.mlp.experts.gate_up_proj_bias");
            CHECK(got && t);
            float *f = malloc((size_t)(E * N) * sizeof(float)), *want = malloc((size_t)(E * N) * sizeof(float));
            m2o_err err = {{0}};
            CHECK(st_read_f32(t, 0, E * N, f, &err) == 0);
            qb_params p = {.bits = bits, .block_size = 32, .symmetric = true, .scale_type = QSCALE_F32};
            uint8_t *c = malloc(qb_codes_bytes(E, N, &p));
            float *s = malloc(qb_scales_count(E, N, &p) * sizeof(float));
            CHECK(qb_quantize(f, E, N, &p, c, s, NULL, &err) == 0);
            CHECK(qb_dequantize(c, s, NULL, E, N, &p, want, &err) == 0);
            size_t differs = 0;
            for (int64_t i = 0; i < E * N; i++)
                differs += want[i] != f[i];
            CHECK(differs > 0); /* the rounding is visible on this checkpoint */
            CHECK_BYTES_EQ(got, qdq ? want : f, (size_t)(E * N) * sizeof(float));
            free(f), free(want), free(c), free(s);
            exported_release(&x);
        }
    }
}
