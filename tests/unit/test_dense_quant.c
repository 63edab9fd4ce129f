/* Dense MatMul quantization through the whole exporter (graph/linear.c asking quant_resolve):
 * for each method the qwen3-moe-tiny export holds the node and initializer names of
 * onnxruntime-genai's builder, the MatMulNBits attributes, a zero-point input exactly where the
 * method writes one, and initializer bytes equal to the quant kernel's output on the checkpoint
 * weights (lm_head [512, 256], layer 0 v_proj [128, 256]); presets and exclusions reach the
 * MatMuls they name. */
#include <stdlib.h>
#include <string.h>

#include "arch/export.h"
#include "arch/model_desc.h"
#include "cli/options.h"
#include "onnx/model_reader.h"
#include "quant/quant.h"
#include "test.h"
#include "test_export.h"

#define CHECK_STR_EQ(a, b) CHECK_MSG(!strcmp((a), (b)), "\"%s\" != \"%s\"", (a), (b))

/* Exports qwen3-moe-tiny (-p int4 -e cpu) with `extra` as --extra_options, through
 * options_validate and options_resolve as the command line does. */
static int export_with(const char *extra, exported *x, m2o_err *err)
{
    char src[512];
    snprintf(src, sizeof src, "%s/qwen3-moe-tiny", test_fixtures_dir());
    if (exported_prepare(src, x, err))
        return -1;
    /* extra: space-separated KEY=VALUE items, each its own argument as on the command line */
    char items[1024];
    snprintf(items, sizeof items, "%s", extra);
    char *argv[24] = {"-i", src, "-o", x->dir, "-p", "int4", "-e", "cpu", "--extra_options"};
    int argc = 9;
    for (char *tok = strtok(items, " "); tok && argc < 24; tok = strtok(NULL, " "))
        argv[argc++] = tok;
    if (argc == 9)
        argc = 8;
    build_args a;
    if (build_args_parse(argc, argv, &a, err) || options_validate(&a, &x->o, err) ||
        options_resolve(&a, &x->md, &x->o, err))
        return -1;
    return exported_write(src, x, err);
}

static const uint8_t *init_bytes(exported *x, const char *name, int elem, size_t *n)
{
    const onnx_tensor *t = onnx_model_find_initializer(x->m, name);
    const void *d = NULL;
    m2o_err err = {{0}};
    if (!t || onnx_tensor_elem_type(t) != elem || onnx_model_tensor_data(x->m, t, &d, n, &err))
        return NULL;
    return d;
}

/* What one MatMul should be. */
typedef struct want {
    const char *node, *w, *scales, *zp; /* zp NULL: three inputs */
    int bits;
    int method; /* 0 MLAS, 1 search, 2 INC RTN, 3 k_quant */
    bool symmetric;
} want;

static void check_matmul(exported *x, const char *ckpt_name, const want *w, int64_t accuracy)
{
    const onnx_node *n = onnx_model_find_node(x->m, w->node);
    CHECK_MSG(n != NULL, "node %s missing", w->node);
    if (!n)
        return;
    CHECK_STR_EQ(onnx_node_op(n), "MatMulNBits");
    CHECK_EQ((int)onnx_node_input_count(n), w->zp ? 4 : 3);
    CHECK_STR_EQ(onnx_node_input(n, 1), w->w);
    CHECK_STR_EQ(onnx_node_input(n, 2), w->scales);
    if (w->zp)
        CHECK_STR_EQ(onnx_node_input(n, 3), w->zp);
    const st_tensor *t = ckpt_find(x->ck, ckpt_name);
    CHECK(t != NULL);
    int64_t N = t->shape[0], K = t->shape[1], v = 0;
    CHECK(onnx_node_attr_int(n, "bits", &v) && v == w->bits);
    CHECK(onnx_node_attr_int(n, "block_size", &v) && v == 32);
    CHECK(onnx_node_attr_int(n, "K", &v) && v == K);
    CHECK(onnx_node_attr_int(n, "N", &v) && v == N);
    CHECK(onnx_node_attr_int(n, "accuracy_level", &v) && v == accuracy);
    /* the bytes: the kernel on the checkpoint's floats */
    qb_params p = {.bits = w->bits, .block_size = 32, .symmetric = w->symmetric, .scale_type = QSCALE_F32};
    float *f = malloc((size_t)(N * K) * sizeof(float));
    size_t cb = qb_codes_bytes(N, K, &p), sb = qb_scales_count(N, K, &p) * 4, zb = qb_zero_points_bytes(N, K, &p);
    uint8_t *codes = malloc(cb), *scales = malloc(sb), *zp = malloc(zb + 1);
    m2o_err err = {{0}};
    CHECK_EQ(st_read_f32(t, 0, N * K, f, &err), 0);
    int rc = w->method == 1 ? qb_quantize_search(f, N, K, &p, codes, scales, zp, &err)
             : w->method == 2 ? rtn_inc_quantize(f, N, K, &p, QSCALE_F32, codes, scales, zp, &err)
             : w->method == 3 ? kq_quantize(f, N, K, &p, codes, scales, zp, &err)
                              : qb_quantize(f, N, K, &p, codes, scales, zp, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    size_t n1 = 0, n2 = 0, n3 = 0;
    const uint8_t *c1 = init_bytes(x, w->w, ONNX_UINT8, &n1), *c2 = init_bytes(x, w->scales, ONNX_FLOAT, &n2);
    CHECK(c1 && n1 == cb && !memcmp(c1, codes, cb));
    CHECK(c2 && n2 == sb && !memcmp(c2, scales, sb));
    if (w->zp) {
        const uint8_t *c3 = init_bytes(x, w->zp, ONNX_UINT8, &n3);
        CHECK(c3 && n3 == zb && !memcmp(c3, zp, zb));
    }
    free(f);
    free(codes);
    free(scales);
    free(zp);
}

static const char *const V0 = "model.layers.0.self_attn.v_proj.weight";

TEST(default_int4_is_the_builders_symmetric_matmulnbits)
{
    exported x;
    m2o_err e = {{0}};
    CHECK_MSG(export_with("", &x, &e) == 0, "%s", e.msg);
    want w = {"/lm_head/MatMul_Q4", "lm_head.MatMul.weight_Q4", "lm_head.MatMul.weight_scales", NULL, 4, 0, true};
    check_matmul(&x, "lm_head.weight", &w, 4);
    exported_release(&x);
}

TEST(asymmetric_writes_uint8_zero_points_packed_per_row)
{
    exported x;
    m2o_err e = {{0}};
    CHECK_MSG(export_with("is_symmetric=false", &x, &e) == 0, "%s", e.msg);
    want w = {"/lm_head/MatMul_Q4", "lm_head.MatMul.weight_Q4", "lm_head.MatMul.weight_scales",
              "lm_head.MatMul.weight_zero_points", 4, 0, false};
    check_matmul(&x, "lm_head.weight", &w, 4);
    exported_release(&x);
}

TEST(rtn_is_inc_rtn_with_the_neural_compressor_names)
{
    exported x;
    m2o_err e = {{0}};
    CHECK_MSG(export_with("algo_config=rtn", &x, &e) == 0, "%s", e.msg);
    want w = {"/lm_head/MatMul_Q4", "lm_head.MatMul.weight_Q4G32", "lm_head.MatMul.weight_scale", NULL, 4, 2, true};
    check_matmul(&x, "lm_head.weight", &w, 4);
    exported_release(&x);
    CHECK_MSG(export_with("algo_config=rtn is_symmetric=false", &x, &e) == 0, "%s", e.msg);
    want wa = {"/lm_head/MatMul_Q4", "lm_head.MatMul.weight_Q4G32", "lm_head.MatMul.weight_scale",
               "lm_head.MatMul.weight_zp", 4, 2, false};
    check_matmul(&x, "lm_head.weight", &wa, 4);
    exported_release(&x);
}

TEST(k_quant_always_writes_zero_points)
{
    exported x;
    m2o_err e = {{0}};
    CHECK_MSG(export_with("algo_config=k_quant accuracy_level=1", &x, &e) == 0, "%s", e.msg);
    want w = {"/lm_head/MatMul_Q4", "lm_head.MatMul.weight_Q4G32", "lm_head.MatMul.weight_scale",
              "lm_head.MatMul.weight_zp", 4, 3, false};
    check_matmul(&x, "lm_head.weight", &w, 1);
    exported_release(&x);
}

TEST(scale_search_keeps_the_default_format)
{
    exported x;
    m2o_err e = {{0}};
    CHECK_MSG(export_with("scale_search=true", &x, &e) == 0, "%s", e.msg);
    want w = {"/lm_head/MatMul_Q4", "lm_head.MatMul.weight_Q4", "lm_head.MatMul.weight_scales", NULL, 4, 1, true};
    check_matmul(&x, "lm_head.weight", &w, 4);
    exported_release(&x);
}

TEST(int8_body_and_uint8)
{
    exported x;
    m2o_err e = {{0}};
    CHECK_MSG(export_with("quant_config={\"weights\":{\"type\":\"int8\"}}", &x, &e) == 0, "%s", e.msg);
    want w = {"/model/layers.0/attn/v_proj/MatMul_Q8", "model.layers.0.attn.v_proj.MatMul.weight_Q8",
              "model.layers.0.attn.v_proj.MatMul.weight_scales", NULL, 8, 0, true};
    check_matmul(&x, V0, &w, 4);
    exported_release(&x);
    CHECK_MSG(export_with("quant_config={\"weights\":{\"type\":\"uint8\",\"symmetric\":false}}", &x, &e) == 0,
              "%s", e.msg);
    want wu = {"/lm_head/MatMul_Q8", "lm_head.MatMul.weight_Q8", "lm_head.MatMul.weight_scales",
               "lm_head.MatMul.weight_zero_points", 8, 0, false};
    check_matmul(&x, "lm_head.weight", &wu, 4);
    exported_release(&x);
}

/* k_quant_mixed: the LM head and, of 2 layers, layer 0's v_proj in int8 (mixed_layers); the rest
 * stays 4-bit; the router and the embedding stay float. */
TEST(k_quant_mixed_places_int8_where_the_presets_say)
{
    exported x;
    m2o_err e = {{0}};
    CHECK_MSG(export_with("algo_config=k_quant_mixed", &x, &e) == 0, "%s", e.msg);
    want head = {"/lm_head/MatMul_Q8", "lm_head.MatMul.weight_Q8G32", "lm_head.MatMul.weight_scale",
                 "lm_head.MatMul.weight_zp", 8, 3, false};
    check_matmul(&x, "lm_head.weight", &head, 4);
    want v0 = {"/model/layers.0/attn/v_proj/MatMul_Q8", "model.layers.0.attn.v_proj.MatMul.weight_Q8G32",
               "model.layers.0.attn.v_proj.MatMul.weight_scale", "model.layers.0.attn.v_proj.MatMul.weight_zp",
               8, 3, false};
    check_matmul(&x, V0, &v0, 4);
    CHECK(onnx_model_find_node(x.m, "/model/layers.0/attn/q_proj/MatMul_Q4") != NULL);
    CHECK(onnx_model_find_node(x.m, "/model/layers.1/attn/v_proj/MatMul_Q4") != NULL);
    CHECK(onnx_model_find_node(x.m, "/model/layers.0/moe/router/MatMul") != NULL);
    exported_release(&x);
}

TEST(nodes_to_exclude_and_a_float_body_keep_float_matmuls)
{
    exported x;
    m2o_err e = {{0}};
    CHECK_MSG(export_with("nodes_to_exclude=/lm_head/MatMul,/model/layers.1/attn/o_proj/MatMul", &x, &e) == 0,
              "%s", e.msg);
    CHECK(onnx_model_find_node(x.m, "/lm_head/MatMul") != NULL);
    CHECK(onnx_model_find_node(x.m, "/lm_head/MatMul_Q4") == NULL);
    CHECK(onnx_model_find_node(x.m, "/model/layers.1/attn/o_proj/MatMul") != NULL);
    CHECK(onnx_model_find_node(x.m, "/model/layers.0/attn/o_proj/MatMul_Q4") != NULL);
    exported_release(&x);
    CHECK_MSG(export_with("quant_config={\"weights\":{\"type\":\"none\"}}", &x, &e) == 0, "%s", e.msg);
    CHECK(onnx_model_find_node(x.m, "/lm_head/MatMul") != NULL);
    CHECK(onnx_model_find_node(x.m, "/model/layers.0/attn/v_proj/MatMul") != NULL);
    CHECK(onnx_model_find_node(x.m, "/model/layers.0/moe/QMoE") != NULL);
    exported_release(&x);
}


