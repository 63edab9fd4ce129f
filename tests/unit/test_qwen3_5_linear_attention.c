/* The Gated DeltaNet block on the qwen3_5-moe-tiny fixture's layer 0, alone in a graph
 * (input "hidden" [batch, seq, H] → output "output"): node wiring, attributes, state
 * inputs/outputs and the float32 constants it derives, read back from the written model.
 *
 * With M2O_ORT_DIR set, the single-layer models are also left in
 * $M2O_ORT_DIR/la{L}_{fp32,fp16,int4} for tests/e2e/qwen3_5.test.mjs, which runs them in ONNX
 * Runtime and compares with its own float64 evaluation of transformers' formulas on the fixture's
 * weights (prefill and decode). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arch/qwen3_5_moe.h"
#include "arch/model_desc.h"
#include "checkpoint/safetensors.h"
#include "graph/blocks.h"
#include "onnx/model_reader.h"
#include "test.h"
#include "test_graph_util.h"

static const char *FIXTURE = "qwen3_5-moe-tiny";

static export_opts opts_for(precision p, int io)
{
    export_opts o;
    memset(&o, 0, sizeof o);
    o.precision = p;
    o.ep = EP_CPU;
    o.io_dtype = io;
    o.int4_block_size = 32;
    o.int4_accuracy_level = 0;
    o.qmoe_block_size = 32;
    return o;
}

/* Writes layer L's block alone into dir. */
static int write_layer(const model_desc *md, const st_checkpoint *ck, const export_opts *o, int L,
                       const char *dir, m2o_err *err)
{
    graph *g = graph_new("qwen3_5_linear_attention");
    gb b;
    int rc = gb_init(&b, g, md, ck, o, err);
    if (!rc) {
        const char *dims[3] = {"batch_size", "sequence_length", NULL};
        int64_t d[3] = {-1, -1, md->hidden_size};
        graph_add_input(g, "hidden", o->io_dtype, 3, d, dims);
        graph_add_output(g, "output", o->io_dtype, 3, d, dims);
        linear_attn_desc la;
        gname out;
        rc = qwen3_5_linear_attn_desc(&b, L, &la, err);
        if (!rc)
            rc = gb_linear_attention(&b, &la, "hidden", &out, err);
        if (!rc) {
            const char *in[1] = {out.s}, *outs[1] = {"output"};
            graph_add_node(g, "Identity", NULL, "/output/Identity", 1, in, 1, outs);
            graph_write_opts wo;
            graph_write_opts_init(&wo);
            wo.threads = 1;
            rc = graph_write(g, dir, &wo, err);
        }
        gb_free(&b);
    }
    graph_free(g);
    return rc;
}

static int open_fixture(model_desc *md, st_checkpoint **ck, m2o_err *err)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", test_fixtures_dir(), FIXTURE);
    return config_load(dir, md, err) || ckpt_open(dir, ck, err) ? -1 : 0;
}

static const onnx_node *node_named(const onnx_model *m, const char *name)
{
    return onnx_model_find_node(m, name);
}

static float f32_at(onnx_model *m, const char *init, size_t i)
{
    const void *data = NULL;
    size_t n = 0;
    m2o_err err;
    const onnx_tensor *t = onnx_model_find_initializer(m, init);
    if (!t || onnx_model_tensor_data(m, t, &data, &n, &err) || (i + 1) * 4 > n)
        return NAN;
    return ((const float *)data)[i];
}

TEST(fixture_layer0_block_wiring_and_constants)
{
    model_desc md;
    st_checkpoint *ck;
    m2o_err err = {{0}};
    CHECK_MSG(open_fixture(&md, &ck, &err) == 0, "%s", err.msg);
    char dir[512];
    CHECK(make_temp_dir(dir, sizeof dir));
    export_opts o = opts_for(PREC_FP32, ONNX_FLOAT);
    int rc = write_layer(&md, ck, &o, 0, dir, &err);
    char path[600];
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    onnx_model *m = NULL;
    if (!rc)
        rc = onnx_model_open(path, &m, &err);
    remove_temp_dir(dir);
    if (rc)
        ckpt_close(ck);
    CHECK_MSG(rc == 0, "%s", err.msg);

    /* states: conv channels 2*2*32 + 4*32 = 256, kernel 4 → 3 columns; recurrent [4, 32, 32] */
    const onnx_value *cs = onnx_model_find_input(m, "past_key_values.0.conv_state");
    const onnx_value *rs = onnx_model_find_input(m, "past_key_values.0.recurrent_state");
    int ok = cs && rs && onnx_model_find_output(m, "present.0.conv_state") &&
             onnx_model_find_output(m, "present.0.recurrent_state");
    int shapes = ok && onnx_value_elem_type(cs) == 1 && onnx_value_ndim(cs) == 3 &&
                 !strcmp(onnx_value_dim_param(cs, 0), "batch_size") &&
                 onnx_value_dim(cs, 1) == 256 &&
                 onnx_value_dim(cs, 2) == 3 && onnx_value_elem_type(rs) == 1 &&
                 onnx_value_ndim(rs) == 4 && onnx_value_dim(rs, 1) == 4 &&
                 onnx_value_dim(rs, 2) == 32 && onnx_value_dim(rs, 3) == 32;

    const onnx_node *la = node_named(m, "/model/layers.0/linear_attn/LinearAttention");
    const onnx_node *cv = node_named(m, "/model/layers.0/linear_attn/conv1d/CausalConvWithState");
    int64_t qh = 0, kvh = 0;
    float scale = 0, l2eps = 0;
    const char *rule = "", *act = "";
    int strs = 0;
    int attrs = la && cv && onnx_node_attr_int(la, "q_num_heads", &qh) &&
                onnx_node_attr_int(la, "kv_num_heads", &kvh) &&
                onnx_node_attr_float(la, "scale", &scale) &&
                onnx_node_attr_string(la, "update_rule", &rule) &&
                onnx_node_attr_string(cv, "activation", &act) &&
                !strcmp(onnx_node_input(la, 3), "past_key_values.0.recurrent_state") &&
                !strcmp(onnx_node_output(la, 1), "present.0.recurrent_state") &&
                !strcmp(onnx_node_input(cv, 3), "past_key_values.0.conv_state") &&
                !strcmp(onnx_node_output(cv, 1), "present.0.conv_state");
    const onnx_node *l2 =
        node_named(m, "/model/layers.0/linear_attn/qk_l2norm/SimplifiedLayerNorm");
    int l2ok = l2 && onnx_node_attr_float(l2, "epsilon", &l2eps);
    strs = attrs && !strcmp(rule, "gated_delta") && !strcmp(act, "silu"); /* valid until close */

    /* derived float32 constants against the checkpoint's own values */
    const st_tensor *alog = ckpt_find(ck, "model.layers.0.linear_attn.A_log");
    float a[4];
    int ra = alog ? tensor_read_f32(alog, 0, 4, a, &err) : -1;
    float na1 = f32_at(m, "model.layers.0.linear_attn.neg_exp_A_log", 1);
    float l2w = f32_at(m, "model.layers.0.linear_attn.qk_l2norm.weight", 31);
    /* a and b projections stay plain float MatMuls; no cast nodes in a float32 graph */
    int plain = node_named(m, "/model/layers.0/linear_attn/a_proj/MatMul") &&
                node_named(m, "/model/layers.0/linear_attn/b_proj/MatMul") &&
                !node_named(m, "/model/layers.0/linear_attn/qkv_proj/Cast");
    onnx_model_close(m);
    ckpt_close(ck);
    CHECK(ok);
    CHECK(shapes);
    CHECK(attrs);
    CHECK_EQ(qh, 2);
    CHECK_EQ(kvh, 4);
    CHECK(strs);
    CHECK_NEAR(scale, 1.0 / sqrt(32.0), 1e-8);
    CHECK(l2ok);
    CHECK_NEAR(l2eps, 1e-6 / 32, 1e-13);
    CHECK_EQ(ra, 0);
    CHECK_NEAR(na1, -expf(a[1]), 0);
    CHECK_NEAR(l2w, 1.0 / sqrt(32.0), 1e-8);
    CHECK(plain);
}

TEST(int4_quantizes_qkv_z_out_but_not_a_b)
{
    model_desc md;
    st_checkpoint *ck;
    m2o_err err = {{0}};
    CHECK_MSG(open_fixture(&md, &ck, &err) == 0, "%s", err.msg);
    char dir[512];
    CHECK(make_temp_dir(dir, sizeof dir));
    export_opts o = opts_for(PREC_INT4, ONNX_FLOAT);
    int rc = write_layer(&md, ck, &o, 1, dir, &err);
    ckpt_close(ck);
    char path[600];
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    onnx_model *m = NULL;
    if (!rc)
        rc = onnx_model_open(path, &m, &err);
    remove_temp_dir(dir);
    CHECK_MSG(rc == 0, "%s", err.msg);
    const char *q[3] = {"qkv_proj", "z_proj", "out_proj"}, *f[2] = {"a_proj", "b_proj"};
    int bad = 0;
    char name[128];
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "/model/layers.1/linear_attn/%s/MatMul_Q4", q[i]);
        const onnx_node *n = node_named(m, name);
        int64_t bs = 0;
        if (!n || strcmp(onnx_node_op(n), "MatMulNBits") ||
            !onnx_node_attr_int(n, "block_size", &bs) || bs != 32)
            bad |= 1 << i;
    }
    for (int i = 0; i < 2; i++) {
        snprintf(name, sizeof name, "/model/layers.1/linear_attn/%s/MatMul", f[i]);
        const onnx_node *n = node_named(m, name);
        if (!n || strcmp(onnx_node_op(n), "MatMul"))
            bad |= 8 << i;
    }
    onnx_model_close(m);
    CHECK_EQ(bad, 0);
}

TEST(fp16_io_casts_around_float32_core)
{
    model_desc md;
    st_checkpoint *ck;
    m2o_err err = {{0}};
    CHECK_MSG(open_fixture(&md, &ck, &err) == 0, "%s", err.msg);
    char dir[512];
    CHECK(make_temp_dir(dir, sizeof dir));
    export_opts o = opts_for(PREC_FP16, ONNX_FLOAT16);
    int rc = write_layer(&md, ck, &o, 2, dir, &err);
    ckpt_close(ck);
    char path[600];
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    onnx_model *m = NULL;
    if (!rc)
        rc = onnx_model_open(path, &m, &err);
    remove_temp_dir(dir);
    CHECK_MSG(rc == 0, "%s", err.msg);
    const char *casts[4] = {"qkv_proj/Cast", "a_proj/Cast", "b_proj/Cast", "z_proj/Cast"};
    int bad = 0;
    char name[128];
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "/model/layers.2/linear_attn/%s", casts[i]);
        const onnx_node *n = node_named(m, name);
        int64_t to = 0;
        if (!n || !onnx_node_attr_int(n, "to", &to) || to != 1)
            bad |= 1 << i;
    }
    const onnx_node *back = node_named(m, "/model/layers.2/linear_attn/norm/Cast");
    int64_t to = 0;
    int back_ok = back && onnx_node_attr_int(back, "to", &to) && to == 10;
    const onnx_value *rs = onnx_model_find_input(m, "past_key_values.2.recurrent_state");
    int state_f32 = rs && onnx_value_elem_type(rs) == 1;
    onnx_model_close(m);
    CHECK_EQ(bad, 0);
    CHECK(back_ok);
    CHECK(state_f32);
}

TEST(missing_and_misshapen_tensors_are_named)
{
    model_desc md;
    st_checkpoint *ck;
    m2o_err err = {{0}};
    CHECK_MSG(open_fixture(&md, &ck, &err) == 0, "%s", err.msg);
    graph *g = graph_new("x");
    gb b;
    export_opts o = opts_for(PREC_FP32, ONNX_FLOAT);
    linear_attn_desc la;
    int rc_init = gb_init(&b, g, &md, ck, &o, &err);
    /* layer 3 is the full-attention layer: it has no linear_attn tensors */
    int rc3 = qwen3_5_linear_attn_desc(&b, 3, &la, &err);
    char msg3[512];
    snprintf(msg3, sizeof msg3, "%s", err.msg);
    /* wrong head split: 3 key heads cannot group 4 value heads */
    md.linear_num_key_heads = 3;
    int rc_heads = qwen3_5_linear_attn_desc(&b, 0, &la, &err);
    char msg_heads[512];
    snprintf(msg_heads, sizeof msg_heads, "%s", err.msg);
    /* a value head width that disagrees with the stored norm weight */
    md.linear_num_key_heads = 2;
    md.linear_value_head_dim = 16;
    md.linear_num_value_heads = 8;
    int rc_norm = qwen3_5_linear_attn_desc(&b, 0, &la, &err);
    gb_free(&b);
    graph_free(g);
    ckpt_close(ck);
    CHECK_EQ(rc_init, 0);
    CHECK_EQ(rc3, -1);
    CHECK_STR_CONTAINS(msg3, "model.layers.3.linear_attn.in_proj_qkv.weight");
    CHECK_EQ(rc_heads, -1);
    CHECK_STR_CONTAINS(msg_heads, "linear_num_key_heads");
    CHECK_EQ(rc_norm, -1);
    CHECK_STR_CONTAINS(err.msg, "model.layers.0.linear_attn.");
}

/* The single-layer models of tests/e2e/qwen3_5.test.mjs: into $M2O_ORT_DIR when set (left there
 * for the e2e test), else into a temporary directory, where each is read back: three kinds for
 * layers 0 and 1, each with its state inputs. */
TEST(write_ort_models)
{
    const char *out = getenv("M2O_ORT_DIR");
    char tmp[512];
    if (!out) {
        CHECK(make_temp_dir(tmp, sizeof tmp));
        out = tmp;
    }
    model_desc md;
    st_checkpoint *ck;
    m2o_err err = {{0}};
    CHECK_MSG(open_fixture(&md, &ck, &err) == 0, "%s", err.msg);
    static const struct { const char *name; precision p; int io; } kinds[3] = {
        {"fp32", PREC_FP32, ONNX_FLOAT}, {"fp16", PREC_FP16, ONNX_FLOAT16},
        {"int4", PREC_INT4, ONNX_FLOAT}};
    int rc = 0, read_back = 0;
    for (int L = 0; L < 2 && !rc; L++)
        for (int k = 0; k < 3 && !rc; k++) {
            char dir[600], path[700], state[64];
            snprintf(dir, sizeof dir, "%s/la%d_%s", out, L, kinds[k].name);
            mkdir(dir, 0755);
            export_opts o = opts_for(kinds[k].p, kinds[k].io);
            rc = write_layer(&md, ck, &o, L, dir, &err);
            snprintf(path, sizeof path, "%s/model.onnx", dir);
            onnx_model *m = NULL;
            if (!rc && out == tmp && !onnx_model_open(path, &m, &err)) {
                snprintf(state, sizeof state, "past_key_values.%d.recurrent_state", L);
                const onnx_value *hidden = onnx_model_find_input(m, "hidden");
                read_back += onnx_model_find_input(m, state) != NULL && hidden &&
                             onnx_value_elem_type(hidden) == kinds[k].io;
                onnx_model_close(m);
            }
            if (out == tmp)
                remove_temp_dir(dir);
        }
    ckpt_close(ck);
    if (out == tmp)
        remove_temp_dir(tmp);
    CHECK_MSG(rc == 0, "%s", err.msg);
    if (out == tmp)
        CHECK_EQ(read_back, 6);
}
