/* The whole Qwen3.5-MoE graph on the qwen3_5-moe-tiny fixture, written and read back:
 *   - the hybrid interface: KV caches only for the full-attention layer, conv/recurrent states
 *     for the linear-attention ones, and genai_config.json naming both;
 *   - the gated full-attention layer (query/gate split, sigmoid gate, q/k norms, partial rotary
 *     caches of rotary_dim / 2 = 8 columns) and the (1 + w) RMSNorm weights;
 *   - every CUDA build (fp16, bf16, int4 with fp16 or bf16 io, int8 and mxfp4 experts), which
 *     cannot run here: io dtypes, float32 states and linear-attention core behind Cast nodes,
 *     what is quantized (MatMulNBits) and what stays float (router, shared_expert_gate,
 *     in_proj_a/b), and the QMoE attributes of each expert encoding;
 *   - errors naming the tensor or config field. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arch/export.h"
#include "arch/model_desc.h"
#include "cli/options.h"
#include "weights/reader.h"
#include "common/half.h"
#include "onnx/model_reader.h"
#include "test.h"
#include "test_export.h"

static const char *FIXTURE = "qwen3_5-moe-tiny";

/* Exports the fixture with the command-line options -p precision -e ep [extras]. */
static int export_with(const char *prec, const char *ep, int n_extra, const char **extra,
                       exported *x, m2o_err *err)
{
    char src[512];
    snprintf(src, sizeof src, "%s/%s", test_fixtures_dir(), FIXTURE);
    build_args a = {.input = src, .output = "unused", .precision = prec, .ep = ep,
                    .n_extra = n_extra};
    for (int i = 0; i < n_extra; i++)
        a.extra[i] = extra[i];
    if (exported_prepare(src, x, err) || options_validate(&a, &x->o, err) ||
        options_resolve(&a, &x->md, &x->o, err))
        return -1;
    return exported_write(src, x, err);
}

static const onnx_node *node(exported *x, const char *fmt, int L)
{
    char name[256];
    snprintf(name, sizeof name, fmt, L);
    return onnx_model_find_node(x->m, name);
}

static int count_op(exported *x, const char *op)
{
    int n = 0;
    for (size_t i = 0; i < onnx_model_node_count(x->m); i++)
        n += !strcmp(onnx_node_op(onnx_model_node(x->m, i)), op);
    return n;
}

static int input_type(exported *x, const char *name)
{
    const onnx_value *v = onnx_model_find_input(x->m, name);
    return v ? onnx_value_elem_type(v) : -1;
}

/* Element i of a float / float16 / bfloat16 initializer as float; NAN when absent. */
static float init_at(exported *x, const char *name, size_t i)
{
    const onnx_tensor *t = onnx_model_find_initializer(x->m, name);
    const void *d;
    size_t n;
    m2o_err err = {{0}};
    if (!t || onnx_model_tensor_data(x->m, t, &d, &n, &err))
        return NAN;
    switch (onnx_tensor_elem_type(t)) {
    case ONNX_FLOAT: return i * 4 < n ? ((const float *)d)[i] : NAN;
    case ONNX_FLOAT16: return i * 2 < n ? f16_to_f32(((const uint16_t *)d)[i]) : NAN;
    case ONNX_BFLOAT16: return i * 2 < n ? bf16_to_f32(((const uint16_t *)d)[i]) : NAN;
    }
    return NAN;
}

static float ckpt_at(exported *x, const char *name, int64_t i)
{
    const st_tensor *t = ckpt_find(x->ck, name);
    float v;
    m2o_err err = {{0}};
    return t && !tensor_read_f32(t, i, 1, &v, &err) ? v : NAN;
}

TEST(hybrid_interface_and_genai_config)
{
    exported x;
    m2o_err err = {{0}};
    int rc = export_with("fp32", "cpu", 0, NULL, &x, &err);
    if (rc)
        exported_release(&x);
    CHECK_MSG(rc == 0, "%s", err.msg);
    /* KV cache for layer 3 only; states for 0..2, all float32 */
    int kv3 = input_type(&x, "past_key_values.3.key") == ONNX_FLOAT &&
              input_type(&x, "past_key_values.3.value") == ONNX_FLOAT &&
              onnx_model_find_output(x.m, "present.3.key") != NULL;
    int no_kv = 1, states = 1;
    char name[128];
    for (int L = 0; L < 3; L++) {
        snprintf(name, sizeof name, "past_key_values.%d.key", L);
        no_kv &= input_type(&x, name) == -1;
        snprintf(name, sizeof name, "past_key_values.%d.conv_state", L);
        states &= input_type(&x, name) == ONNX_FLOAT;
        snprintf(name, sizeof name, "past_key_values.%d.recurrent_state", L);
        states &= input_type(&x, name) == ONNX_FLOAT;
        snprintf(name, sizeof name, "present.%d.recurrent_state", L);
        states &= onnx_model_find_output(x.m, name) != NULL;
    }
    int no_state3 = input_type(&x, "past_key_values.3.conv_state") == -1;
    int n_la = count_op(&x, "LinearAttention"), n_conv = count_op(&x, "CausalConvWithState");
    int n_gqa = count_op(&x, "GroupQueryAttention");
    const char *g = x.genai;
    /* onnxruntime-genai derives the state names from the KV templates and throws on keys its
     * parser does not know (past_recurrent_names among them); the text decoder's type name */
    int names = !strstr(g, "conv_names") && !strstr(g, "recurrent_names") &&
                strstr(g, "\"past_key_names\":\t\"past_key_values.%d.key\"") &&
                strstr(g, "\"present_key_names\":\t\"present.%d.key\"") &&
                strstr(g, "\"type\":\t\"qwen3_5_moe_text\"");
    exported_release(&x);
    CHECK(kv3);
    CHECK(no_kv);
    CHECK(states);
    CHECK(no_state3);
    CHECK_EQ(n_la, 3);
    CHECK_EQ(n_conv, 3);
    CHECK_EQ(n_gqa, 1);
    CHECK(names);
}

TEST(gated_full_attention_and_norm_offsets)
{
    exported x;
    m2o_err err = {{0}};
    int rc = export_with("fp32", "cpu", 0, NULL, &x, &err);
    if (rc)
        exported_release(&x);
    CHECK_MSG(rc == 0, "%s", err.msg);
    const onnx_node *gqa = node(&x, "/model/layers.%d/attn/GroupQueryAttention", 3);
    const onnx_node *split = node(&x, "/model/layers.%d/attn/q_gate/Split", 3);
    const onnx_node *mul = node(&x, "/model/layers.%d/attn/output_gate/Mul", 3);
    const onnx_node *o_proj = node(&x, "/model/layers.%d/attn/o_proj/MatMul", 3);
    int64_t nh = 0, kvh = 0, rot = 0;
    float scale = 0;
    int gqa_ok = gqa && onnx_node_attr_int(gqa, "num_heads", &nh) &&
                 onnx_node_attr_int(gqa, "kv_num_heads", &kvh) &&
                 onnx_node_attr_int(gqa, "do_rotary", &rot) &&
                 onnx_node_attr_float(gqa, "scale", &scale);
    /* the gate multiplies GQA's output and feeds o_proj */
    int wired = split && mul && o_proj &&
                !strcmp(onnx_node_input(mul, 0), onnx_node_output(gqa, 0)) &&
                !strcmp(onnx_node_input(o_proj, 0), onnx_node_output(mul, 0));
    /* partial rotary: cos_cache [context, rotary_dim / 2] = [32768, 8] */
    const onnx_tensor *cos = gqa ? onnx_model_find_initializer(x.m, onnx_node_input(gqa, 7)) : NULL;
    int cos_ok = cos && onnx_tensor_ndim(cos) == 2 && onnx_tensor_dims(cos)[0] == 32768 &&
                 onnx_tensor_dims(cos)[1] == 8;
    /* (1 + w) for the decoder RMSNorms and q/k norms, w itself for the gated norm */
    float ln = init_at(&x, "model.layers.1.input_layernorm.weight", 7);
    float ln_ck = ckpt_at(&x, "model.layers.1.input_layernorm.weight", 7);
    float fin = init_at(&x, "model.layers.4.final_norm_layernorm.weight", 0);
    float fin_ck = ckpt_at(&x, "model.norm.weight", 0);
    float qn = init_at(&x, "model.layers.3.attn.q_norm.layernorm.weight", 5);
    float qn_ck = ckpt_at(&x, "model.layers.3.self_attn.q_norm.weight", 5);
    float kn = init_at(&x, "model.layers.3.attn.k_norm.layernorm.weight", 63);
    float kn_ck = ckpt_at(&x, "model.layers.3.self_attn.k_norm.weight", 63);
    float gn = init_at(&x, "model.layers.0.linear_attn.norm.weight", 3);
    float gn_ck = ckpt_at(&x, "model.layers.0.linear_attn.norm.weight", 3);
    exported_release(&x);
    CHECK(gqa_ok);
    CHECK_EQ(nh, 4);
    CHECK_EQ(kvh, 2);
    CHECK_EQ(rot, 1);
    CHECK_NEAR(scale, 0.125, 0);
    CHECK(wired);
    CHECK(cos_ok);
    CHECK_NEAR(ln, 1.0f + ln_ck, 0);
    CHECK_NEAR(fin, 1.0f + fin_ck, 0);
    CHECK_NEAR(qn, 1.0f + qn_ck, 0);
    CHECK_NEAR(kn, 1.0f + kn_ck, 0);
    CHECK_NEAR(gn, gn_ck, 0);
}

/* One CUDA build: io dtype, float32 linear-attention core and states, quantization split. */
static void check_cuda(const char *prec, int n_extra, const char **extra, int io, int bits,
                       const char *quant_type)
{
    exported x;
    m2o_err err = {{0}};
    int rc = export_with(prec, "cuda", n_extra, extra, &x, &err);
    if (rc)
        exported_release(&x);
    CHECK_MSG(rc == 0, "-p %s -e cuda: %s", prec, err.msg);
    const onnx_value *logits = onnx_model_find_output(x.m, "logits");
    int io_ok = input_type(&x, "past_key_values.3.key") == io && logits &&
                onnx_value_elem_type(logits) == ONNX_FLOAT &&
                input_type(&x, "past_key_values.1.conv_state") == ONNX_FLOAT &&
                input_type(&x, "past_key_values.1.recurrent_state") == ONNX_FLOAT;
    const onnx_node *in_cast = node(&x, "/model/layers.%d/linear_attn/qkv_proj/Cast", 1);
    const onnx_node *out_cast = node(&x, "/model/layers.%d/linear_attn/norm/Cast", 1);
    int64_t to_in = 0, to_out = 0;
    int casts = in_cast && out_cast && onnx_node_attr_int(in_cast, "to", &to_in) &&
                onnx_node_attr_int(out_cast, "to", &to_out);
    int provider = strstr(x.genai, "\"cuda\"") != NULL;
    bool q4 = x.o.precision == PREC_INT4;
    /* quantized linear layers in int4 builds, plain MatMul for the gates and the router */
    const char *quantized[] = {"/model/layers.%d/linear_attn/qkv_proj/MatMul",
                               "/model/layers.%d/linear_attn/z_proj/MatMul",
                               "/model/layers.%d/linear_attn/out_proj/MatMul",
                               "/model/layers.%d/shared_expert/down_proj/MatMul"};
    const char *plain[] = {"/model/layers.%d/linear_attn/a_proj/MatMul",
                           "/model/layers.%d/linear_attn/b_proj/MatMul",
                           "/model/layers.%d/moe/router/MatMul",
                           "/model/layers.%d/shared_expert_gate/MatMul"};
    int split = 1;
    char name[256];
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "%s%s", quantized[i], q4 ? "_Q4" : "");
        const onnx_node *n = node(&x, name, 2);
        split &= n && !strcmp(onnx_node_op(n), q4 ? "MatMulNBits" : "MatMul");
        n = node(&x, plain[i], 2);
        split &= n && !strcmp(onnx_node_op(n), "MatMul");
    }
    const onnx_node *attn_q = node(&x, q4 ? "/model/layers.%d/attn/q_proj/MatMul_Q4"
                                          : "/model/layers.%d/attn/q_proj/MatMul", 3);
    const onnx_node *head =
        onnx_model_find_node(x.m, q4 ? "/lm_head/MatMul_Q4" : "/lm_head/MatMul");
    split &= attn_q && head;
    const onnx_node *moe = node(&x, "/model/layers.%d/moe/QMoE", 0);
    int64_t b = 0, pre = -5;
    const char *qt = NULL;
    int moe_ok = !q4 ? node(&x, "/model/layers.%d/moe/MoE", 0) != NULL
                     : moe && onnx_node_attr_int(moe, "expert_weight_bits", &b) && b == bits &&
                           (quant_type ? onnx_node_attr_string(moe, "quant_type", &qt) &&
                                             !strcmp(qt, quant_type)
                                       : onnx_node_attr_int(moe, "weights_prepacked", &pre) &&
                                             pre == 1);
    exported_release(&x);
    CHECK_MSG(io_ok, "-p %s: io dtype / float32 states", prec);
    CHECK_MSG(casts && to_in == ONNX_FLOAT && to_out == io, "-p %s: casts around the core", prec);
    CHECK(provider);
    CHECK_MSG(split, "-p %s: quantized / float linear layers", prec);
    CHECK_MSG(moe_ok, "-p %s: expert op attributes", prec);
}

TEST(cuda_fp16_and_bf16)
{
    check_cuda("fp16", 0, NULL, ONNX_FLOAT16, 0, NULL);
    if (g_failed_now)
        return;
    check_cuda("bf16", 0, NULL, ONNX_BFLOAT16, 0, NULL);
}

TEST(cuda_int4_experts_int4_int8_mxfp4)
{
    const char *bf16[1] = {"use_cuda_bf16=true"}, *int8[1] = {"moe_quant_type=int8"};
    const char *fp4[1] = {"moe_quant_type=mxfp4"};
    check_cuda("int4", 0, NULL, ONNX_FLOAT16, 4, NULL);
    if (g_failed_now)
        return;
    /* int4 with bfloat16 io is refused for this shared-expert model (ONNX Runtime's CUDA
     * provider computes it wrongly, tests/cuda/RESULTS.md) */
    exported x;
    m2o_err err = {{0}};
    int rc = export_with("int4", "cuda", 1, bf16, &x, &err);
    exported_release(&x);
    CHECK(rc != 0);
    CHECK_STR_CONTAINS(err.msg, "use_cuda_bf16");
    check_cuda("int4", 1, int8, ONNX_FLOAT16, 8, NULL);
    if (g_failed_now)
        return;
    check_cuda("int4", 1, fp4, ONNX_FLOAT16, 4, "fp4");
}

TEST(errors_name_the_tensor_or_field)
{
    char src[512];
    snprintf(src, sizeof src, "%s/%s", test_fixtures_dir(), FIXTURE);
    model_desc md;
    st_checkpoint *ck = NULL;
    m2o_err err = {{0}};
    int rc = config_load(src, &md, &err) || ckpt_open(src, &ck, &err);
    if (rc && ck)
        ckpt_close(ck);
    CHECK_MSG(rc == 0, "%s", err.msg);
    export_opts o = {.precision = PREC_FP32, .ep = EP_CPU, .io_dtype = ONNX_FLOAT,
                     .int4_block_size = 32, .qmoe_block_size = 32};
    /* without the output gate, q_proj would have 256 rows: the stored 512 are named */
    model_desc no_gate = md;
    no_gate.attn_output_gate = false;
    graph *g = graph_new("x");
    int rc_gate = arch_build_graph(&no_gate, ck, &o, g, &err);
    graph_free(g);
    char msg_gate[512];
    snprintf(msg_gate, sizeof msg_gate, "%s", err.msg);
    /* a layer declared full attention where the checkpoint holds linear-attention tensors */
    model_desc swapped = md;
    swapped.layer_type[0] = LAYER_FULL_ATTENTION;
    g = graph_new("x");
    int rc_swap = arch_build_graph(&swapped, ck, &o, g, &err);
    graph_free(g);
    char msg_swap[512];
    snprintf(msg_swap, sizeof msg_swap, "%s", err.msg);
    /* a sliding-window layer is not a Qwen3.5 layer kind */
    model_desc sliding = md;
    sliding.layer_type[2] = LAYER_SLIDING_ATTENTION;
    g = graph_new("x");
    int rc_slide = arch_build_graph(&sliding, ck, &o, g, &err);
    graph_free(g);
    ckpt_close(ck);
    CHECK_EQ(rc_gate, -1);
    CHECK_STR_CONTAINS(msg_gate, "model.layers.3.self_attn.q_proj.weight");
    CHECK_EQ(rc_swap, -1);
    CHECK_STR_CONTAINS(msg_swap, "model.layers.0.self_attn.q_proj.weight");
    CHECK_EQ(rc_slide, -1);
    CHECK_STR_CONTAINS(err.msg, "layer_types[2]");
}
