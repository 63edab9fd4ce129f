/* Shared decoder blocks: YaRN rotary caches against independently computed numbers, the GQA
 * window rule, expert sources and encoders against the quant kernels and a hand decode of the
 * checkpoint bytes, genai_config.json fields, and option/dimension checks of the MoE block. */
#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "arch/model_desc.h"
#include "checkpoint/safetensors.h"
#include "common/half.h"
#include "arch/export.h"
#include "graph/blocks.h"
#include "graph/experts.h"
#include "graph/rope.h"
#include "onnx/genai_config.h"
#include "quant/quant.h"
#include "onnx/model_reader.h"
#include "test.h"
#include "test_graph_util.h"

static int load_fixture(const char *name, model_desc *md, st_checkpoint **ck)
{
    char dir[512];
    m2o_err err = {{0}};
    snprintf(dir, sizeof dir, "%s/%s", test_fixtures_dir(), name);
    if (config_load(dir, md, &err) || ckpt_open(dir, ck, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    return 0;
}

/* ---- rotary ---- */

/* Values computed separately (Python, float32 emulated step by step like transformers'
 * _compute_yarn_parameters with factor 32, beta 32/1, original 4096, theta 150000, dim 64,
 * truncate false: correction range [8.0928, 17.3980]). */
TEST(yarn_inv_freq_and_attention_factor_match_transformers)
{
    model_desc md;
    st_checkpoint *ck;
    CHECK(load_fixture("gpt-oss-tiny", &md, &ck) == 0);
    ckpt_close(ck);
    CHECK(md.rope_type == ROPE_YARN && !md.yarn_truncate);
    rope_params rp;
    m2o_err err = {{0}};
    CHECK(rope_compute(&md, &rp, &err) == 0);
    CHECK_EQ(rp.rotary_dim, 64);
    static const struct { int i; double v; } want[] = {
        {0, 1.0}, {1, 0.6890442967414856}, {5, 0.15532298386096954},
        {10, 0.019335001707077026}, {16, 0.0004564839182421565},
        {20, 1.818833698052913e-05}, {31, 3.023511396804679e-07},
    };
    for (size_t j = 0; j < sizeof want / sizeof want[0]; j++)
        CHECK_NEAR(rp.inv_freq[want[j].i], want[j].v, want[j].v * 2e-7);
    CHECK_NEAR(rp.attention_factor, 1.3465735902799727, 1e-7);
}

TEST(yarn_cos_sin_cache_rows_match_float32_reference)
{
    model_desc md;
    st_checkpoint *ck;
    CHECK(load_fixture("gpt-oss-tiny", &md, &ck) == 0);
    ckpt_close(ck);
    rope_params rp;
    m2o_err err = {{0}};
    CHECK(rope_compute(&md, &rp, &err) == 0);
    static const struct { int64_t t; int i; double c, s; } want[] = {
        {0, 0, 1.3465735912322998, 0.0},
        {1, 0, 0.7275567650794983, 1.133102536201477},
        {1, 5, 1.3303630352020264, 0.20831386744976044},
        {7, 5, 0.6260385513305664, 1.1921980381011963},
        {4095, 0, -0.0888415277004242, -1.3436397314071655},
        {4095, 31, 1.3465725183486938, 0.001667229924350977},
        /* position * inv_freq is rounded to float32 first, as in transformers: in double this
         * row would be cos 0.91949, not 0.92112 */
        {131071, 5, 0.9211241006851196, 0.982237696647644},
        {131071, 31, 1.345516324043274, 0.05335002765059471},
    };
    float c[32], s[32];
    for (size_t j = 0; j < sizeof want / sizeof want[0]; j++) {
        rope_cache_rows(&rp, want[j].t, 1, c, s);
        CHECK_NEAR(c[want[j].i], want[j].c, 2e-6);
        CHECK_NEAR(s[want[j].i], want[j].s, 2e-6);
    }
}

TEST(rope_default_and_linear_scaling)
{
    model_desc md;
    memset(&md, 0, sizeof md);
    md.head_dim = 128;
    md.partial_rotary_factor = 0.25; /* Qwen3.5: rotary over 32 of 128 dims */
    md.rope_theta = 10000;
    md.rope_type = ROPE_DEFAULT;
    rope_params rp;
    m2o_err err = {{0}};
    CHECK(rope_compute(&md, &rp, &err) == 0);
    CHECK_EQ(rp.rotary_dim, 32);
    CHECK_NEAR(rp.inv_freq[1], 1.0 / pow(10000.0, 2.0 / 32.0), 1e-7);
    CHECK_NEAR(rp.attention_factor, 1.0, 0);
    md.rope_type = ROPE_LINEAR;
    md.rope_factor = 4;
    CHECK(rope_compute(&md, &rp, &err) == 0);
    CHECK_NEAR(rp.inv_freq[1], 0.25 / pow(10000.0, 2.0 / 32.0), 1e-7);
    md.partial_rotary_factor = 0.3; /* 38.4 → 38 dims: fine; odd would fail */
    md.head_dim = 5;
    CHECK(rope_compute(&md, &rp, &err) == -1);
    CHECK_STR_CONTAINS(err.msg, "rotary dimension");
}

TEST(gqa_window_counts_like_transformers)
{
    /* measured on ONNX Runtime 1.30 by the e2e test (windows 3 and 4 over 12 tokens) */
    CHECK_EQ(gqa_local_window_size(4), 4);
    CHECK_EQ(gqa_local_window_size(128), 128);
    CHECK_EQ(gqa_local_window_size(0), -1);
}

/* ---- experts ---- */

static const float e2m1[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};

TEST(expert_source_mxfp4_decodes_checkpoint_bytes)
{
    model_desc md;
    st_checkpoint *ck;
    CHECK(load_fixture("gpt-oss-tiny", &md, &ck) == 0);
    const st_tensor *blocks = ckpt_find(ck, "model.layers.1.mlp.experts.gate_up_proj_blocks");
    const st_tensor *scales = ckpt_find(ck, "model.layers.1.mlp.experts.gate_up_proj_scales");
    CHECK(blocks && scales);
    int64_t E = 8, N = 512, K = 256, e = 5;
    expert_src src = {.kind = EXPERT_MXFP4, .E = E, .N = N, .K = K, .t = blocks, .scales = scales};
    float *w = malloc((size_t)(N * K) * sizeof(float)), *tmp = malloc((size_t)(N * K) * sizeof(float));
    m2o_err err = {{0}};
    CHECK(expert_read_f32(&src, e, w, tmp, &err) == 0);
    int bad = 0;
    for (int64_t n = 0; n < N && !bad; n++)
        for (int64_t k = 0; k < K; k++) {
            /* [E, N, K/32, 16]: byte j of a block holds k = 2j (low nibble), 2j + 1 (high) */
            uint8_t byte = blocks->data[((e * N + n) * (K / 32) + k / 32) * 16 + (k % 32) / 2];
            int code = k % 2 ? byte >> 4 : byte & 15;
            float want = ldexpf(e2m1[code], scales->data[(e * N + n) * (K / 32) + k / 32] - 127);
            if (w[n * K + k] != want) {
                bad = 1;
                FAIL_AT("expert %lld [%lld][%lld] = %g, hand decode %g", (long long)e,
                        (long long)n, (long long)k, w[n * K + k], want);
            }
        }
    free(w);
    free(tmp);
    ckpt_close(ck);
}

TEST(expert_source_bf16_input_major_is_transposed)
{
    model_desc md;
    st_checkpoint *ck;
    CHECK(load_fixture("gpt-oss-bf16-tiny", &md, &ck) == 0);
    const st_tensor *gu = ckpt_find(ck, "model.layers.0.mlp.experts.gate_up_proj");
    CHECK(gu && gu->dtype == ST_BF16);
    int64_t E = 8, H = 256, N = 512, e = 6;
    expert_src src = {.kind = EXPERT_FUSED_KN, .E = E, .N = N, .K = H, .t = gu};
    float *w = malloc((size_t)(N * H) * sizeof(float)), *tmp = malloc((size_t)(N * H) * sizeof(float));
    m2o_err err = {{0}};
    CHECK(expert_read_f32(&src, e, w, tmp, &err) == 0);
    for (int64_t n = 0; n < N; n += 37)
        for (int64_t k = 0; k < H; k += 13) {
            uint16_t bits;
            memcpy(&bits, gu->data + 2 * ((e * H + k) * N + n), 2);
            CHECK_NEAR(w[n * H + k], bf16_to_f32(bits), 0);
        }
    free(w);
    free(tmp);
    ckpt_close(ck);
}

TEST(expert_source_halves_are_interleaved_for_swiglu_fusion)
{
    /* [gate; up] halves (Qwen3.5 fused layout) come out gate0, up0, gate1, up1 */
    float data[2 * 4 * 3];
    for (int i = 0; i < 24; i++)
        data[i] = (float)i;
    st_tensor t = {.name = "fused", .dtype = ST_F32, .ndim = 3, .shape = {2, 4, 3}, .numel = 24,
                   .data = (const uint8_t *)data, .nbytes = sizeof data};
    expert_src src = {.kind = EXPERT_FUSED_NK, .E = 2, .N = 4, .K = 3, .t = &t, .interleave = true};
    float w[12], tmp[12];
    m2o_err err = {{0}};
    CHECK(expert_read_f32(&src, 1, w, tmp, &err) == 0);
    /* expert 1 rows: gate = rows 0,1 (values 12..17), up = rows 2,3 (18..23) */
    static const float want[12] = {12, 13, 14, 18, 19, 20, 15, 16, 17, 21, 22, 23};
    for (int i = 0; i < 12; i++)
        CHECK_NEAR(w[i], want[i], 0);
}

TEST(expert_encodings_equal_quant_kernels)
{
    int64_t N = 128, K = 256;
    float *w = malloc((size_t)(N * K) * sizeof(float));
    uint32_t s = 12345;
    for (int64_t i = 0; i < N * K; i++) {
        s = s * 1664525u + 1013904223u;
        w[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 0.2f;
    }
    m2o_err err = {{0}};
    for (int bits = 4; bits <= 8; bits += 4) {
        qb_params p = {.bits = bits, .block_size = 64, .symmetric = true, .scale_type = QSCALE_F16};
        size_t cb = qb_codes_bytes(N, K, &p), sc = qb_scales_count(N, K, &p) * 2;
        uint8_t *codes = malloc(cb), *packed = malloc(cb), *got = malloc(cb);
        uint16_t *scales = malloc(sc), *got_s = malloc(sc);
        CHECK(qb_quantize(w, N, K, &p, codes, scales, NULL, &err) == 0);
        CHECK(cutlass_sm80_pack(codes, N, K, bits, packed, &err) == 0);
        CHECK_EQ(expert_chunk_bytes(N, K, ENC_INT_RAW, bits, 64, ONNX_FLOAT16), cb);
        CHECK(expert_encode(w, N, K, ENC_INT_RAW, bits, 64, ONNX_FLOAT16, got, &err) == 0);
        CHECK_BYTES_EQ(got, codes, cb);
        CHECK(expert_encode(w, N, K, ENC_INT_SM80, bits, 64, ONNX_FLOAT16, got, &err) == 0);
        CHECK_BYTES_EQ(got, packed, cb);
        CHECK(expert_encode(w, N, K, ENC_INT_SCALES, bits, 64, ONNX_FLOAT16, got_s, &err) == 0);
        CHECK_BYTES_EQ(got_s, scales, sc);
        free(codes), free(packed), free(got), free(scales), free(got_s);
    }
    uint8_t *c = malloc((size_t)(N * K / 2)), *pk = malloc((size_t)(N * K / 2)),
            *got = malloc((size_t)(N * K / 2)), *sc = malloc((size_t)(N * K / 32));
    CHECK(mxfp4_encode(w, N, K, c, sc, &err) == 0);
    CHECK(fp4_cuda_pack(c, N, K, pk, &err) == 0);
    CHECK(expert_encode(w, N, K, ENC_FP4, 4, 32, ONNX_FLOAT16, got, &err) == 0);
    CHECK_BYTES_EQ(got, pk, (size_t)(N * K / 2));
    CHECK(expert_encode(w, N, K, ENC_FP4_SCALES, 4, 32, ONNX_FLOAT16, got, &err) == 0);
    CHECK_BYTES_EQ(got, sc, (size_t)(N * K / 32));
    free(c), free(pk), free(got), free(sc), free(w);
}

/* ---- genai_config.json ---- */

TEST(genai_config_has_spec_fields)
{
    model_desc md;
    st_checkpoint *ck;
    CHECK(load_fixture("gpt-oss-tiny", &md, &ck) == 0);
    ckpt_close(ck);
    export_opts o = {.precision = PREC_INT4, .ep = EP_CUDA, .io_dtype = ONNX_FLOAT16};
    m2o_err err = {{0}};
    char *text = genai_config_json(&md, &o, "model.onnx", &err);
    CHECK(text != NULL);
    cJSON *root = cJSON_Parse(text);
    free(text);
    CHECK(root != NULL);
    cJSON *model = cJSON_GetObjectItem(root, "model"), *dec = cJSON_GetObjectItem(model, "decoder");
    cJSON *search = cJSON_GetObjectItem(root, "search");
    CHECK(model && dec && search);
    CHECK(!strcmp(cJSON_GetObjectItem(model, "type")->valuestring, "gptoss"));
    CHECK_EQ(cJSON_GetObjectItem(model, "vocab_size")->valueint, 512);
    CHECK_EQ(cJSON_GetObjectItem(model, "context_length")->valueint, 131072);
    CHECK_EQ(cJSON_GetObjectItem(model, "eos_token_id")->valueint, 1);
    CHECK_EQ(cJSON_GetObjectItem(model, "pad_token_id")->valueint, 0);
    CHECK(cJSON_GetObjectItem(model, "bos_token_id") == NULL); /* null in config.json */
    CHECK_EQ(cJSON_GetObjectItem(dec, "head_size")->valueint, 64);
    CHECK_EQ(cJSON_GetObjectItem(dec, "hidden_size")->valueint, 256);
    CHECK_EQ(cJSON_GetObjectItem(dec, "num_attention_heads")->valueint, 4);
    CHECK_EQ(cJSON_GetObjectItem(dec, "num_key_value_heads")->valueint, 2);
    CHECK_EQ(cJSON_GetObjectItem(dec, "num_hidden_layers")->valueint, 2);
    CHECK(!strcmp(cJSON_GetObjectItem(dec, "filename")->valuestring, "model.onnx"));
    cJSON *in = cJSON_GetObjectItem(dec, "inputs"), *out = cJSON_GetObjectItem(dec, "outputs");
    CHECK(!strcmp(cJSON_GetObjectItem(in, "past_key_names")->valuestring, "past_key_values.%d.key"));
    CHECK(!strcmp(cJSON_GetObjectItem(in, "past_value_names")->valuestring, "past_key_values.%d.value"));
    CHECK(!strcmp(cJSON_GetObjectItem(out, "present_key_names")->valuestring, "present.%d.key"));
    CHECK(!strcmp(cJSON_GetObjectItem(out, "present_value_names")->valuestring, "present.%d.value"));
    CHECK(!strcmp(cJSON_GetObjectItem(out, "logits")->valuestring, "logits"));
    /* CUDA: full-length caches (graph/attention.c says why), no section for the runtime */
    CHECK(cJSON_GetObjectItem(dec, "sliding_window") == NULL);
    cJSON *po = cJSON_GetObjectItem(cJSON_GetObjectItem(dec, "session_options"), "provider_options");
    CHECK(cJSON_GetArraySize(po) == 1 && cJSON_GetObjectItem(cJSON_GetArrayItem(po, 0), "cuda"));
    CHECK(cJSON_IsFalse(cJSON_GetObjectItem(search, "do_sample")));
    CHECK_EQ(cJSON_GetObjectItem(search, "max_length")->valueint, 131072);
    CHECK_EQ(cJSON_GetObjectItem(search, "top_k")->valueint, md.top_k_sampling);
    cJSON_Delete(root);

    o.ep = EP_CPU;
    text = genai_config_json(&md, &o, "model.onnx", &err);
    root = cJSON_Parse(text);
    free(text);
    po = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(root, "model"),
                                                                     "decoder"), "session_options"),
                             "provider_options");
    CHECK(cJSON_IsArray(po) && cJSON_GetArraySize(po) == 0);
    /* CPU: the runtime sizes the sliding layers' caches to the window from this section */
    cJSON *sw = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(root, "model"), "decoder"),
                                    "sliding_window");
    CHECK(sw != NULL);
    if (sw) {
        CHECK_EQ(cJSON_GetObjectItem(sw, "window_size")->valueint, md.sliding_window);
        CHECK(cJSON_IsFalse(cJSON_GetObjectItem(sw, "slide_key_value_cache")));
        CHECK(cJSON_IsFalse(cJSON_GetObjectItem(sw, "slide_inputs")));
        CHECK_EQ(cJSON_GetObjectItem(sw, "cache_slack")->valueint, 0);
        cJSON *layers = cJSON_GetObjectItem(sw, "layers");
        int n_sliding = 0, listed_ok = 1;
        for (int L = 0; L < md.num_layers; L++)
            n_sliding += md.layer_type[L] == LAYER_SLIDING_ATTENTION;
        cJSON *it;
        cJSON_ArrayForEach(it, layers) listed_ok &= md.layer_type[it->valueint] == LAYER_SLIDING_ATTENTION;
        CHECK(n_sliding > 0);
        CHECK_EQ(cJSON_GetArraySize(layers), n_sliding);
        CHECK(listed_ok);
    }
    cJSON_Delete(root);
}

/* ---- MoE option/dimension checks ---- */

static int build_with(const char *fixture, export_opts o, m2o_err *err)
{
    model_desc md;
    st_checkpoint *ck;
    if (load_fixture(fixture, &md, &ck))
        return m2o_fail(err, "fixture");
    graph *g = graph_new("g");
    int rc = arch_build_graph(&md, ck, &o, g, err);
    if (!rc)
        rc = graph_check(g, err);
    graph_free(g);
    ckpt_close(ck);
    return rc;
}

TEST(moe_rejects_unrunnable_expert_options)
{
    export_opts o = {.precision = PREC_INT4, .ep = EP_CPU, .io_dtype = ONNX_FLOAT,
                     .int4_block_size = 32, .moe_quant_type = MOE_QUANT_MXFP4, .qmoe_block_size = 32};
    m2o_err err = {{0}};
    CHECK(build_with("gpt-oss-tiny", o, &err) == -1);
    CHECK_STR_CONTAINS(err.msg, "no fp4");
    o.moe_quant_type = MOE_QUANT_INT4;
    o.qmoe_block_size = 48;
    CHECK(build_with("gpt-oss-tiny", o, &err) == -1);
    CHECK_STR_CONTAINS(err.msg, "qmoe_block_size=48");
    o.ep = EP_CUDA;
    o.io_dtype = ONNX_FLOAT16;
    o.qmoe_block_size = 16;
    CHECK(build_with("gpt-oss-tiny", o, &err) == -1);
    CHECK_STR_CONTAINS(err.msg, "32, 64, 128");
    o.qmoe_block_size = 128;
    o.qmoe_weights_prepacked = 1;
    CHECK(build_with("gpt-oss-tiny", o, &err) == 0);
    o.io_dtype = ONNX_FLOAT;
    CHECK(build_with("gpt-oss-tiny", o, &err) == -1);
    CHECK_STR_CONTAINS(err.msg, "float16/bfloat16");
}

/* Float MoE with un-renormalised routing (Qwen norm_topk_prob=false) must not reach ONNX
 * Runtime 1.30's normalize_routing_weights=0 kernel, whose output accumulates into a reused
 * buffer (measured: relative error 1.0 on qwen2-moe-tiny); the block renormalises and rescales
 * by the top-k mass of the full softmax instead. */
TEST(float_moe_without_renormalisation_rescales_by_topk_mass)
{
    enum { E = 4, H = 32, I = 32 };
    static float w1[E * 2 * I * H], w2[E * H * I], wr[E * H];
    for (int i = 0; i < E * 2 * I * H; i++) w1[i] = (float)(i % 7) * 0.01f;
    for (int i = 0; i < E * H * I; i++) w2[i] = (float)(i % 5) * 0.01f;
    for (int i = 0; i < E * H; i++) wr[i] = (float)(i % 3) * 0.1f;
    st_tensor t1 = {.name = "w1", .dtype = ST_F32, .ndim = 3, .shape = {E, 2 * I, H},
                    .numel = E * 2 * I * H, .data = (const uint8_t *)w1, .nbytes = sizeof w1};
    st_tensor t2 = {.name = "w2", .dtype = ST_F32, .ndim = 3, .shape = {E, H, I},
                    .numel = E * H * I, .data = (const uint8_t *)w2, .nbytes = sizeof w2};
    st_tensor tr = {.name = "router", .dtype = ST_F32, .ndim = 2, .shape = {E, H}, .numel = E * H,
                    .data = (const uint8_t *)wr, .nbytes = sizeof wr};
    expert_src fc1 = {.kind = EXPERT_FUSED_NK, .E = E, .N = 2 * I, .K = H, .t = &t1};
    expert_src fc2 = {.kind = EXPERT_FUSED_NK, .E = E, .N = H, .K = I, .t = &t2};
    model_desc md = {.hidden_size = H, .num_layers = 1};
    export_opts o = {.precision = PREC_FP32, .ep = EP_CPU, .io_dtype = ONNX_FLOAT};
    for (int normalize = 0; normalize < 2; normalize++) {
        graph *g = graph_new("g");
        gb b;
        m2o_err err = {{0}};
        CHECK(gb_init(&b, g, &md, NULL, &o, &err) == 0);
        int64_t d[3] = {-1, -1, H};
        const char *dp[3] = {"batch", "seq", NULL};
        graph_add_input(g, "x", ONNX_FLOAT, 3, d, dp);
        moe_desc m = {.layer = 0, .num_experts = E, .top_k = 2, .hidden = H, .inter = I,
                      .router = {.n_parts = 1, .w = {&tr}}, .fc1 = &fc1, .fc2 = &fc2,
                      .alpha = 1.0f, .normalize_routing = normalize};
        gname out;
        CHECK(gb_moe(&b, &m, "x", &out, &err) == 0);
        const char *want = normalize ? "/model/layers.0/moe/MoE/output_0"
                                     : "/model/layers.0/moe/topk_mass/Mul/output_0";
        CHECK_MSG(!strcmp(out.s, want), "output %s, expected %s", out.s, want);
        graph_add_output(g, out.s, ONNX_FLOAT, 3, d, dp);
        char dir[512], path[600];
        CHECK(make_temp_dir(dir, sizeof dir));
        graph_write_opts wo;
        graph_write_opts_init(&wo);
        CHECK(graph_write(g, dir, &wo, &err) == 0);
        gb_free(&b);
        graph_free(g);
        onnx_model *mr;
        snprintf(path, sizeof path, "%s/model.onnx", dir);
        CHECK(onnx_model_open(path, &mr, &err) == 0);
        const onnx_node *moe = onnx_model_find_node(mr, "/model/layers.0/moe/MoE");
        int64_t v = -1;
        CHECK(moe && onnx_node_attr_int(moe, "normalize_routing_weights", &v));
        CHECK_EQ(v, 1);
        CHECK_EQ(onnx_model_find_node(mr, "/model/layers.0/moe/topk_mass/TopK") != NULL, !normalize);
        onnx_model_close(mr);
        remove_temp_dir(dir);
    }
}
