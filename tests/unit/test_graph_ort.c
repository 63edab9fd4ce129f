/* Writes the small models that tests/e2e/writer.test.sh runs in ONNX Runtime.
 *
 * With M2O_ORT_DIR set, the models are written to $M2O_ORT_DIR/basic and $M2O_ORT_DIR/e8m0 and
 * left there for the e2e script. Without it they go to a temporary directory and are read back
 * here, so the binary is also an ordinary unit test.
 *
 * basic: Y = Mul(MatMulNBits(SimplifiedLayerNormalization(X·W1 + B1, gamma), Bq, scales), 0.5)
 *   W1   [8, 32] float, streamed in 4 chunks of 2 rows   -> external (1024 bytes)
 *   B1   [32] float                                      -> inline
 *   gamma[32] float                                      -> inline
 *   Bq   [64, 2, 8] uint8 4-bit codes, block 16          -> external (1024 bytes, static)
 *   scales [128] float                                   -> inline
 *   0.5 from a Constant node's tensor attribute.
 * The value formulas below are repeated independently in tests/e2e/lib/writer_check.mjs. */
#include "test.h"
#include "test_graph_util.h"

#include "onnx/graph.h"
#include "onnx/model_reader.h"

enum { K1 = 8, H = 32, N = 64, BS = 16, NB = H / BS };

static float w1_value(int k, int n) { return (float)(((k * 7 + n * 3) % 11) - 5) * 0.125f; }
static float b1_value(int n) { return 0.01f * (float)n - 0.1f; }
static float gamma_value(int n) { return 1.0f + 0.05f * (float)(n % 4); }
static int q_code(int n, int k) { return (n * 5 + k * 3) % 16; }
static float q_scale(int n, int blk) { return 0.02f * (float)(1 + (n + blk) % 5) * (n % 2 ? -1.f : 1.f); }

static int produce_w1(void *ctx, int64_t chunk, void *out, m2o_err *err)
{
    float *o = out;
    for (int r = 0; r < 2; r++)
        for (int n = 0; n < H; n++)
            o[r * H + n] = w1_value((int)chunk * 2 + r, n);
    return 0;
}

/* MatMulNBits B: [N, K/bs, bs/2], element k even in the low nibble. */
static void pack_codes(uint8_t *bq)
{
    for (int n = 0; n < N; n++)
        for (int k = 0; k < H; k += 2)
            bq[n * (H / 2) + k / 2] = (uint8_t)(q_code(n, k) | (q_code(n, k + 1) << 4));
}

static graph *build_basic(void)
{
    graph *g = graph_new("writer_e2e");
    const char *batch[] = {"batch"};
    graph_add_input(g, "X", ONNX_FLOAT, 2, (int64_t[]){-1, K1}, (const char *const[]){batch[0], NULL});
    graph_add_output(g, "Y", ONNX_FLOAT, 2, (int64_t[]){-1, N}, (const char *const[]){batch[0], NULL});

    graph_add_streamed_initializer(g, "W1", ONNX_FLOAT, 2, (int64_t[]){K1, H}, K1 / 2,
                                   2 * H * sizeof(float), produce_w1, NULL, NULL);
    float b1[H], gamma[H], scales[N * NB];
    for (int n = 0; n < H; n++) {
        b1[n] = b1_value(n);
        gamma[n] = gamma_value(n);
    }
    graph_add_initializer(g, "B1", ONNX_FLOAT, 1, (int64_t[]){H}, b1, sizeof b1);
    graph_add_initializer(g, "gamma", ONNX_FLOAT, 1, (int64_t[]){H}, gamma, sizeof gamma);
    uint8_t bq[N * H / 2];
    pack_codes(bq);
    graph_add_initializer(g, "Bq", ONNX_UINT8, 3, (int64_t[]){N, NB, BS / 2}, bq, sizeof bq);
    for (int n = 0; n < N; n++)
        for (int b = 0; b < NB; b++)
            scales[n * NB + b] = q_scale(n, b);
    graph_add_initializer(g, "scales", ONNX_FLOAT, 1, (int64_t[]){N * NB}, scales, sizeof scales);

    graph_add_node(g, "MatMul", "", "/mm", 2, (const char *[]){"X", "W1"}, 1, (const char *[]){"h1"});
    graph_add_node(g, "Add", "", "/add", 2, (const char *[]){"h1", "B1"}, 1, (const char *[]){"h2"});
    graph_node *ln = graph_add_node(g, "SimplifiedLayerNormalization", "", "/norm", 2,
                                    (const char *[]){"h2", "gamma"}, 1, (const char *[]){"h3"});
    node_attr_int(ln, "axis", -1);
    node_attr_float(ln, "epsilon", 1e-5f);
    graph_node *mnb = graph_add_node(g, "MatMulNBits", "com.microsoft", "/mnb", 3,
                                     (const char *[]){"h3", "Bq", "scales"}, 1,
                                     (const char *[]){"h4"});
    node_attr_int(mnb, "K", H);
    node_attr_int(mnb, "N", N);
    node_attr_int(mnb, "bits", 4);
    node_attr_int(mnb, "block_size", BS);
    float half = 0.5f;
    graph_node *c = graph_add_node(g, "Constant", "", "/half", 0, NULL, 1, (const char *[]){"half"});
    node_attr_tensor(c, "value", ONNX_FLOAT, 1, (int64_t[]){1}, &half, sizeof half);
    graph_add_node(g, "Mul", "", "/mul", 2, (const char *[]){"h4", "half"}, 1, (const char *[]){"Y"});
    return g;
}

/* e8m0: an IR 11 model holding a FLOAT8E8M0 initializer next to a trivial Identity. */
static graph *build_e8m0(void)
{
    graph *g = graph_new("writer_e2e_e8m0");
    graph_add_input(g, "X", ONNX_FLOAT, 1, (int64_t[]){4}, NULL);
    graph_add_output(g, "Y", ONNX_FLOAT, 1, (int64_t[]){4}, NULL);
    uint8_t scales[4] = {127, 128, 126, 130};
    graph_add_initializer(g, "e8m0_scales", ONNX_FLOAT8E8M0, 1, (int64_t[]){4}, scales, 4);
    graph_add_node(g, "Identity", "", "/id", 1, (const char *[]){"X"}, 1, (const char *[]){"Y"});
    return g;
}

static int write_to(graph *g, const char *dir, m2o_err *err)
{
    graph_write_opts o;
    graph_write_opts_init(&o);
    o.threads = 2;
    int rc = graph_write(g, dir, &o, err);
    graph_free(g);
    return rc;
}

/* Reads the basic model back and checks the parts ONNX Runtime depends on. */
static void check_basic(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    onnx_model *m;
    m2o_err err;
    CHECK_MSG(onnx_model_open(path, &m, &err) == 0, "%s", err.msg);
    CHECK_EQ(onnx_model_ir_version(m), 10);
    CHECK_EQ(onnx_model_opset(m, ""), 21);
    CHECK_EQ(onnx_model_opset(m, "com.microsoft"), 1);
    const onnx_tensor *w1 = onnx_model_find_initializer(m, "W1");
    const onnx_tensor *bq = onnx_model_find_initializer(m, "Bq");
    uint64_t off, len;
    int ok = w1 && bq && onnx_tensor_external(w1, NULL, &off, &len) && off == 0 && len == 1024 &&
             onnx_tensor_external(bq, NULL, &off, &len) && off == 1024 && len == 1024 &&
             !onnx_tensor_external(onnx_model_find_initializer(m, "B1"), NULL, NULL, NULL);
    const void *data = NULL;
    size_t n = 0;
    int rc = ok ? onnx_model_tensor_data(m, w1, &data, &n, &err) : -1;
    float w13 = rc == 0 ? ((const float *)data)[3 * H + 5] : 0;
    onnx_model_close(m);
    CHECK(ok);
    CHECK_MSG(rc == 0, "%s", err.msg);
    CHECK_EQ(n, K1 * H * 4);
    CHECK_NEAR(w13, w1_value(3, 5), 0);
}

TEST(write_ort_models)
{
    const char *out = getenv("M2O_ORT_DIR");
    char tmp[512], basic[600], e8m0[600];
    if (!out) {
        CHECK(make_temp_dir(tmp, sizeof tmp));
        out = tmp;
    }
    snprintf(basic, sizeof basic, "%s/basic", out);
    snprintf(e8m0, sizeof e8m0, "%s/e8m0", out);
    mkdir(basic, 0755);
    mkdir(e8m0, 0755);
    m2o_err err;
    int rc1 = write_to(build_basic(), basic, &err);
    CHECK_MSG(rc1 == 0, "%s", err.msg);
    int rc2 = write_to(build_e8m0(), e8m0, &err);
    CHECK_MSG(rc2 == 0, "%s", err.msg);
    check_basic(basic);
    if (out == tmp) {
        remove_temp_dir(basic);
        remove_temp_dir(e8m0);
        remove_temp_dir(tmp);
    }
}
