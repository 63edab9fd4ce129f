/* config.json → model_desc: each fixture's values, transformers' defaults per family, the v5 and
 * Hub styles giving identical descriptions, and one-line errors naming the file and field. */
#include <cJSON.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arch/family.h"
#include "arch/model_desc.h"
#include "test.h"

static m2o_err g_err;

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    size_t got = fread(b, 1, (size_t)n, f);
    b[got] = 0;
    fclose(f);
    return b;
}

static cJSON *fixture_config(const char *name)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s/config.json", test_fixtures_dir(), name);
    char *t = read_text(p);
    cJSON *j = t ? cJSON_Parse(t) : NULL;
    free(t);
    return j;
}

/* Parses a JSON tree as config.json text (and deletes it); returns config_parse's result. */
static int parse_tree(cJSON *root, const char *gen, model_desc *d)
{
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    g_err.msg[0] = 0;
    int rc = config_parse(text, gen, "m/config.json", d, &g_err);
    free(text);
    return rc;
}

static int parse_text(const char *text, model_desc *d)
{
    g_err.msg[0] = 0;
    return config_parse(text, NULL, "m/config.json", d, &g_err);
}

static void set_num(cJSON *o, const char *k, double v)
{
    cJSON_DeleteItemFromObjectCaseSensitive(o, k);
    cJSON_AddNumberToObject(o, k, v);
}

static void set_raw(cJSON *o, const char *k, const char *json)
{
    cJSON_DeleteItemFromObjectCaseSensitive(o, k);
    cJSON_AddItemToObject(o, k, cJSON_Parse(json));
}

static void del(cJSON *o, const char *k) { cJSON_DeleteItemFromObjectCaseSensitive(o, k); }

/* ---------- fixtures ---------- */

TEST(gpt_oss_tiny_fixture)
{
    model_desc d;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/gpt-oss-tiny", test_fixtures_dir());
    CHECK_MSG(config_load(dir, &d, &g_err) == 0, "%s", g_err.msg);
    CHECK(!strcmp(d.family->model_type, "gpt_oss") && !strcmp(d.model_type, "gpt_oss") && !strcmp(d.prefix, "model."));
    CHECK_EQ(d.hidden_size, 256);
    CHECK_EQ(d.intermediate_size, 256);
    CHECK_EQ(d.moe_intermediate_size, 256);
    CHECK_EQ(d.shared_expert_intermediate_size, 0);
    CHECK_EQ(d.num_layers, 2);
    CHECK_EQ(d.num_heads, 4);
    CHECK_EQ(d.num_kv_heads, 2);
    CHECK_EQ(d.head_dim, 64);
    CHECK_EQ(d.vocab_size, 512);
    CHECK_EQ(d.num_experts, 8);
    CHECK_EQ(d.top_k, 2);
    CHECK(d.norm_topk_prob && d.sparse_layer[0] && d.sparse_layer[1]);
    CHECK(d.layer_type[0] == LAYER_SLIDING_ATTENTION && d.layer_type[1] == LAYER_FULL_ATTENTION);
    CHECK_EQ(d.sliding_window, 4);
    CHECK_NEAR(d.rms_norm_eps, 1e-5, 0);
    CHECK(d.attention_bias && !d.qkv_bias && !d.qk_norm && !d.attn_output_gate && !d.tie_word_embeddings);
    CHECK_EQ(d.max_position_embeddings, 131072);
    CHECK_EQ(d.context_length, 131072);
    /* YaRN from rope_scaling */
    CHECK_NEAR(d.rope_theta, 150000.0, 0);
    CHECK(d.rope_type == ROPE_YARN);
    CHECK_NEAR(d.rope_factor, 32.0, 0);
    CHECK_NEAR(d.yarn_beta_fast, 32.0, 0);
    CHECK_NEAR(d.yarn_beta_slow, 1.0, 0);
    CHECK_EQ(d.rope_original_max_position, 4096);
    CHECK(!d.yarn_truncate);
    CHECK_NEAR(d.yarn_attention_factor, 0.0, 0);
    CHECK_NEAR(d.partial_rotary_factor, 1.0, 0);
    CHECK_NEAR(d.swiglu_limit, 7.0, 0);
    CHECK_NEAR(d.swiglu_alpha, 1.702f, 0);
    /* tokens: bos null, eos 1, pad 0; generation_config: do_sample false, rest defaults */
    CHECK_EQ(d.bos_token_id, -1);
    CHECK_EQ(d.n_eos, 1);
    CHECK_EQ(d.eos_token_ids[0], 1);
    CHECK_EQ(d.pad_token_id, 0);
    CHECK(!d.do_sample);
    CHECK_EQ(d.top_k_sampling, 50);
    CHECK_NEAR(d.top_p, 1.0, 0);
    CHECK_NEAR(d.temperature, 1.0, 0);

    snprintf(dir, sizeof dir, "%s/gpt-oss-bf16-tiny", test_fixtures_dir());
    CHECK_MSG(config_load(dir, &d, &g_err) == 0, "%s", g_err.msg);
    CHECK_EQ(d.sliding_window, 3);
    CHECK_EQ(d.num_experts, 8);
}

TEST(qwen3_moe_fixture)
{
    model_desc d;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/qwen3-moe-tiny", test_fixtures_dir());
    CHECK_MSG(config_load(dir, &d, &g_err) == 0, "%s", g_err.msg);
    CHECK(!strcmp(d.family->model_type, "qwen3_moe") && !strcmp(d.prefix, "model."));
    CHECK_EQ(d.hidden_size, 256);
    CHECK_EQ(d.intermediate_size, 512);
    CHECK_EQ(d.moe_intermediate_size, 128);
    CHECK_EQ(d.shared_expert_intermediate_size, 0);
    CHECK_EQ(d.num_experts, 8);
    CHECK_EQ(d.top_k, 2);
    CHECK(d.norm_topk_prob && d.qk_norm && !d.attention_bias && !d.qkv_bias);
    CHECK_EQ(d.head_dim, 64);
    CHECK(d.sparse_layer[0] && d.sparse_layer[1]);
    CHECK(d.layer_type[0] == LAYER_FULL_ATTENTION && d.layer_type[1] == LAYER_FULL_ATTENTION);
    CHECK_EQ(d.sliding_window, 0);
    CHECK(d.rope_type == ROPE_DEFAULT);
    CHECK_NEAR(d.rope_theta, 10000.0, 0);
    CHECK_NEAR(d.partial_rotary_factor, 1.0, 0);
    CHECK_NEAR(d.rms_norm_eps, 1e-6, 0);
    CHECK_EQ(d.max_position_embeddings, 32768);
    CHECK_NEAR(d.swiglu_limit, 0.0, 0);
    CHECK_NEAR(d.swiglu_alpha, 1.0, 0);
    CHECK(d.n_eos == 1 && d.eos_token_ids[0] == 2 && d.pad_token_id == 0 && d.bos_token_id == -1);
}

TEST(qwen2_moe_fixture)
{
    model_desc d;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/qwen2-moe-tiny", test_fixtures_dir());
    CHECK_MSG(config_load(dir, &d, &g_err) == 0, "%s", g_err.msg);
    CHECK(!strcmp(d.family->model_type, "qwen2_moe"));
    CHECK_EQ(d.shared_expert_intermediate_size, 256);
    CHECK_EQ(d.moe_intermediate_size, 128);
    CHECK_EQ(d.intermediate_size, 512);
    CHECK(d.qkv_bias && !d.attention_bias && !d.qk_norm && !d.norm_topk_prob);
    CHECK_EQ(d.head_dim, 64); /* no head_dim field: 256 / 4 */
    CHECK_EQ(d.num_experts, 8);
    CHECK_EQ(d.sliding_window, 0);
    CHECK(d.sparse_layer[0] && d.sparse_layer[1]);
    CHECK(d.layer_type[1] == LAYER_FULL_ATTENTION);
    CHECK(d.n_eos == 1 && d.eos_token_ids[0] == 2);
}

TEST(qwen3_5_moe_fixture)
{
    model_desc d;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/qwen3_5-moe-tiny", test_fixtures_dir());
    CHECK_MSG(config_load(dir, &d, &g_err) == 0, "%s", g_err.msg);
    CHECK(!strcmp(d.family->model_type, "qwen3_5_moe_text") && !strcmp(d.model_type, "qwen3_5_moe_text"));
    CHECK(!strcmp(d.prefix, "model."));
    CHECK_EQ(d.num_layers, 4);
    CHECK(d.layer_type[0] == LAYER_LINEAR_ATTENTION && d.layer_type[1] == LAYER_LINEAR_ATTENTION &&
          d.layer_type[2] == LAYER_LINEAR_ATTENTION && d.layer_type[3] == LAYER_FULL_ATTENTION);
    for (int i = 0; i < 4; i++)
        CHECK(d.sparse_layer[i]);
    CHECK_NEAR(d.partial_rotary_factor, 0.25, 0);
    CHECK(d.rope_type == ROPE_DEFAULT);
    CHECK_NEAR(d.rope_theta, 10000.0, 0);
    CHECK_EQ(d.head_dim, 64);
    CHECK_EQ(d.moe_intermediate_size, 128);
    CHECK_EQ(d.shared_expert_intermediate_size, 128);
    CHECK_EQ(d.intermediate_size, 0);
    CHECK(d.qk_norm && d.attn_output_gate && d.norm_topk_prob && !d.attention_bias);
    CHECK_EQ(d.linear_conv_kernel_dim, 4);
    CHECK_EQ(d.linear_key_head_dim, 32);
    CHECK_EQ(d.linear_value_head_dim, 32);
    CHECK_EQ(d.linear_num_key_heads, 2);
    CHECK_EQ(d.linear_num_value_heads, 4);
    CHECK_EQ(d.num_experts, 8);
    CHECK_EQ(d.top_k, 2);
}

TEST(qwen3_5_vl_wrapper_reads_text_config)
{
    model_desc text, vl;
    cJSON *tc = fixture_config("qwen3_5-moe-tiny");
    CHECK(tc);
    CHECK(parse_tree(cJSON_Duplicate(tc, 1), NULL, &text) == 0);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model_type", "qwen3_5_moe");
    cJSON_AddItemToObject(root, "text_config", tc);
    cJSON_AddItemToObject(root, "vision_config", cJSON_Parse("{\"depth\": 27}"));
    cJSON_AddBoolToObject(root, "tie_word_embeddings", 1);
    CHECK_MSG(parse_tree(root, NULL, &vl) == 0, "%s", g_err.msg);
    CHECK(!strcmp(vl.prefix, "model.language_model.") && !strcmp(vl.model_type, "qwen3_5_moe"));
    CHECK(vl.tie_word_embeddings && !text.tie_word_embeddings);
    /* all else identical to the text-only model */
    vl.tie_word_embeddings = false;
    memcpy(vl.prefix, text.prefix, sizeof vl.prefix);
    memcpy(vl.model_type, text.model_type, sizeof vl.model_type);
    CHECK(memcmp(&vl, &text, sizeof vl) == 0);

    root = cJSON_Parse("{\"model_type\": \"qwen3_5_moe\", \"text_config\": {\"model_type\": \"qwen3_5_moe_text\"}}");
    CHECK(parse_tree(root, NULL, &vl) == -1);
    CHECK_STR_CONTAINS(g_err.msg, "m/config.json: required field \"text_config.hidden_size\" is missing");
    CHECK(parse_text("{\"model_type\": \"qwen3_5_moe\"}", &vl) == -1);
    CHECK_STR_CONTAINS(g_err.msg, "model_type qwen3_5_moe needs a \"text_config\" object");
}

/* ---------- v5 style = Hub style ---------- */

TEST(v5_style_equals_hub_style)
{
    model_desc hub, v5;
    /* gpt-oss: rope_theta + rope_scaling → rope_parameters */
    cJSON *a = fixture_config("gpt-oss-tiny");
    CHECK(parse_tree(cJSON_Duplicate(a, 1), NULL, &hub) == 0);
    cJSON *rp = cJSON_Duplicate(cJSON_GetObjectItem(a, "rope_scaling"), 1);
    cJSON_AddNumberToObject(rp, "rope_theta", 150000.0);
    del(a, "rope_scaling");
    del(a, "rope_theta");
    del(a, "experts_per_token");
    cJSON_AddItemToObject(a, "rope_parameters", rp);
    CHECK_MSG(parse_tree(a, NULL, &v5) == 0, "%s", g_err.msg);
    CHECK(memcmp(&hub, &v5, sizeof hub) == 0);
    CHECK(v5.rope_type == ROPE_YARN && v5.rope_original_max_position == 4096);

    /* qwen3: num_experts → num_local_experts, rope_parameters */
    a = fixture_config("qwen3-moe-tiny");
    CHECK(parse_tree(cJSON_Duplicate(a, 1), NULL, &hub) == 0);
    set_num(a, "num_local_experts", 8);
    del(a, "num_experts");
    del(a, "rope_theta");
    del(a, "rope_scaling");
    set_raw(a, "rope_parameters", "{\"rope_type\": \"default\", \"rope_theta\": 10000.0}");
    CHECK_MSG(parse_tree(a, NULL, &v5) == 0, "%s", g_err.msg);
    CHECK(memcmp(&hub, &v5, sizeof hub) == 0);

    /* qwen3.5: the fixture is v5 style; the Hub form keeps rope_theta and partial_rotary_factor on top */
    a = fixture_config("qwen3_5-moe-tiny");
    CHECK(parse_tree(cJSON_Duplicate(a, 1), NULL, &v5) == 0);
    del(a, "rope_parameters");
    set_num(a, "rope_theta", 10000.0);
    set_num(a, "partial_rotary_factor", 0.25);
    CHECK_MSG(parse_tree(a, NULL, &hub) == 0, "%s", g_err.msg);
    CHECK(memcmp(&hub, &v5, sizeof hub) == 0);

    /* qwen3 YaRN in both styles ("type" is the legacy spelling of "rope_type") */
    a = fixture_config("qwen3-moe-tiny");
    set_raw(a, "rope_scaling", "{\"type\": \"yarn\", \"factor\": 4.0, \"original_max_position_embeddings\": 8192}");
    CHECK_MSG(parse_tree(a, NULL, &hub) == 0, "%s", g_err.msg);
    a = fixture_config("qwen3-moe-tiny");
    del(a, "rope_theta");
    del(a, "rope_scaling");
    set_raw(a, "rope_parameters", "{\"rope_type\": \"yarn\", \"rope_theta\": 10000.0, \"factor\": 4.0, "
                                  "\"original_max_position_embeddings\": 8192}");
    CHECK_MSG(parse_tree(a, NULL, &v5) == 0, "%s", g_err.msg);
    CHECK(memcmp(&hub, &v5, sizeof hub) == 0);
    CHECK(hub.rope_type == ROPE_YARN && hub.rope_factor == 4.0 && hub.rope_original_max_position == 8192);
    CHECK(hub.yarn_truncate && hub.yarn_beta_fast == 32.0 && hub.yarn_beta_slow == 1.0);
}

/* ---------- defaults ---------- */

TEST(gpt_oss_defaults_match_transformers)
{
    model_desc d;
    CHECK_MSG(parse_text("{\"model_type\":\"gpt_oss\",\"hidden_size\":2880,\"num_hidden_layers\":5,"
                         "\"num_attention_heads\":64,\"num_key_value_heads\":8,\"vocab_size\":1000,"
                         "\"num_local_experts\":32,\"num_experts_per_tok\":4,\"intermediate_size\":2880}",
                         &d) == 0, "%s", g_err.msg);
    CHECK_EQ(d.head_dim, 64); /* not 2880 / 64 = 45 */
    CHECK_EQ(d.sliding_window, 128);
    for (int i = 0; i < 5; i++)
        CHECK(d.layer_type[i] == (i % 2 ? LAYER_FULL_ATTENTION : LAYER_SLIDING_ATTENTION));
    CHECK(d.rope_type == ROPE_YARN && d.rope_factor == 32.0 && d.rope_original_max_position == 4096);
    CHECK(!d.yarn_truncate && d.yarn_beta_fast == 32.0 && d.yarn_beta_slow == 1.0);
    CHECK_NEAR(d.rope_theta, 150000.0, 0);
    CHECK_NEAR(d.swiglu_limit, 7.0, 0);
    CHECK_NEAR(d.swiglu_alpha, 1.702f, 0);
    CHECK_NEAR(d.rms_norm_eps, 1e-5, 0);
    CHECK(d.attention_bias && !d.tie_word_embeddings);
    CHECK_EQ(d.max_position_embeddings, 131072);
    CHECK(d.bos_token_id == -1 && d.pad_token_id == -1 && d.n_eos == 0);
    CHECK(d.top_k_sampling == 50 && d.top_p == 1.0 && d.temperature == 1.0 && !d.do_sample);
}

TEST(qwen3_5_defaults_match_transformers)
{
    model_desc d;
    const char *base = "{\"model_type\":\"qwen3_5_moe_text\",\"hidden_size\":2048,\"num_hidden_layers\":8,"
                       "\"num_attention_heads\":16,\"num_key_value_heads\":2,\"vocab_size\":1000,"
                       "\"num_experts\":256,\"num_experts_per_tok\":8,\"moe_intermediate_size\":512,"
                       "\"shared_expert_intermediate_size\":512%s}";
    char buf[1024];
    snprintf(buf, sizeof buf, base, "");
    CHECK_MSG(parse_text(buf, &d) == 0, "%s", g_err.msg);
    for (int i = 0; i < 8; i++)
        CHECK(d.layer_type[i] == (i % 4 == 3 ? LAYER_FULL_ATTENTION : LAYER_LINEAR_ATTENTION));
    CHECK_NEAR(d.partial_rotary_factor, 0.25, 0);
    CHECK_EQ(d.head_dim, 256);
    CHECK(d.linear_conv_kernel_dim == 4 && d.linear_key_head_dim == 128 && d.linear_value_head_dim == 128);
    CHECK(d.linear_num_key_heads == 16 && d.linear_num_value_heads == 32);
    CHECK(d.attn_output_gate && d.qk_norm && d.norm_topk_prob);
    CHECK_NEAR(d.rms_norm_eps, 1e-6, 0);
    snprintf(buf, sizeof buf, base, ",\"full_attention_interval\":2");
    CHECK_MSG(parse_text(buf, &d) == 0, "%s", g_err.msg);
    for (int i = 0; i < 8; i++)
        CHECK(d.layer_type[i] == (i % 2 ? LAYER_FULL_ATTENTION : LAYER_LINEAR_ATTENTION));
    snprintf(buf, sizeof buf, base, ",\"layer_types\":[\"linear_attention\",\"sliding_attention\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\"]");
    CHECK(parse_text(buf, &d) == -1);
    CHECK_STR_CONTAINS(g_err.msg, "\"layer_types\"[2] is \"a\", expected full_attention");
}

TEST(qwen_classic_defaults_and_sparse_step)
{
    model_desc d;
    /* 6 layers, step 2, layer 3 forced dense: sparse = 1, 5 only */
    const char *q3 = "{\"model_type\":\"qwen3_moe\",\"hidden_size\":512,\"num_hidden_layers\":6,"
                     "\"num_attention_heads\":8,\"num_key_value_heads\":4,\"vocab_size\":1000,"
                     "\"num_experts\":16,\"num_experts_per_tok\":4,\"moe_intermediate_size\":64,"
                     "\"decoder_sparse_step\":2,\"mlp_only_layers\":[3]%s}";
    char buf[1024];
    snprintf(buf, sizeof buf, q3, "");
    CHECK(parse_text(buf, &d) == -1); /* dense layers exist: intermediate_size is required */
    CHECK_STR_CONTAINS(g_err.msg, "m/config.json: required field \"intermediate_size\" is missing");
    snprintf(buf, sizeof buf, q3, ",\"intermediate_size\":1024");
    CHECK_MSG(parse_text(buf, &d) == 0, "%s", g_err.msg);
    static const bool want[6] = {false, true, false, false, false, true};
    for (int i = 0; i < 6; i++)
        CHECK_MSG(d.sparse_layer[i] == want[i], "layer %d", i);
    CHECK_EQ(d.head_dim, 64); /* 512 / 8 */
    CHECK(!d.norm_topk_prob && d.qk_norm);
    snprintf(buf, sizeof buf, q3, ",\"intermediate_size\":1024,\"mlp_only_layers\":[6]");
    CHECK(parse_text(buf, &d) == -1);
    CHECK_STR_CONTAINS(g_err.msg, "key \"mlp_only_layers\" appears twice");
    const char *q3b = "{\"model_type\":\"qwen3_moe\",\"hidden_size\":512,\"num_hidden_layers\":6,"
                      "\"num_attention_heads\":8,\"num_key_value_heads\":4,\"vocab_size\":1000,"
                      "\"num_experts\":16,\"num_experts_per_tok\":4,\"moe_intermediate_size\":64,"
                      "\"intermediate_size\":1024,%s}";
    snprintf(buf, sizeof buf, q3b, "\"mlp_only_layers\":[6]");
    CHECK(parse_text(buf, &d) == -1);
    CHECK_STR_CONTAINS(g_err.msg, "\"mlp_only_layers\" holds an out-of-range index, expected layer indices 0..5");
    snprintf(buf, sizeof buf, q3b, "\"decoder_sparse_step\":0");
    CHECK(parse_text(buf, &d) == -1);
    CHECK_STR_CONTAINS(g_err.msg, "\"decoder_sparse_step\" is 0, expected 1 or more");

    /* qwen2: qkv_bias defaults to true, shared expert required */
    const char *q2 = "{\"model_type\":\"qwen2_moe\",\"hidden_size\":512,\"num_hidden_layers\":2,"
                     "\"num_attention_heads\":8,\"num_key_value_heads\":8,\"vocab_size\":1000,"
                     "\"num_experts\":16,\"num_experts_per_tok\":4,\"moe_intermediate_size\":64%s}";
    snprintf(buf, sizeof buf, q2, "");
    CHECK(parse_text(buf, &d) == -1);
    CHECK_STR_CONTAINS(g_err.msg, "required field \"shared_expert_intermediate_size\" is missing");
    snprintf(buf, sizeof buf, q2, ",\"shared_expert_intermediate_size\":128");
    CHECK_MSG(parse_text(buf, &d) == 0, "%s", g_err.msg);
    CHECK(d.qkv_bias && !d.norm_topk_prob && d.shared_expert_intermediate_size == 128);
}

/* ---------- errors ---------- */

TEST(unknown_model_type_lists_supported)
{
    model_desc d;
    CHECK(parse_text("{\"model_type\": \"llama\", \"hidden_size\": 8}", &d) == -1);
    CHECK_STR_CONTAINS(g_err.msg, "m/config.json: model_type \"llama\" is not supported (supported: "
                                  "gpt_oss, qwen3_moe, qwen2_moe, qwen3_5_moe_text, qwen3_5_moe)");
    CHECK(parse_text("{\"hidden_size\": 8}", &d) == -1);
    CHECK_STR_CONTAINS(g_err.msg, "\"model_type\" is missing, expected one of the supported model types "
                                  "(gpt_oss, qwen3_moe");
    CHECK(parse_text("[1]", &d) == -1);
    CHECK_STR_CONTAINS(g_err.msg, "config is an array, expected a JSON object");
    CHECK(parse_text("{\"model_type\": \"gpt_oss\",", &d) == -1);
    CHECK_STR_CONTAINS(g_err.msg, "m/config.json: not valid JSON");
    CHECK(parse_text("{} trailing", &d) == -1);
    CHECK_STR_CONTAINS(g_err.msg, "not valid JSON");
}

TEST(missing_required_field_is_named)
{
    static const struct { const char *fixture, *field; } cases[] = {
        {"gpt-oss-tiny", "hidden_size"},       {"gpt-oss-tiny", "num_hidden_layers"},
        {"gpt-oss-tiny", "num_attention_heads"}, {"gpt-oss-tiny", "vocab_size"},
        {"gpt-oss-tiny", "intermediate_size"}, {"gpt-oss-tiny", "num_key_value_heads"},
        {"qwen3-moe-tiny", "num_experts"},     {"qwen3-moe-tiny", "moe_intermediate_size"},
        {"qwen3-moe-tiny", "num_experts_per_tok"}, {"qwen2-moe-tiny", "shared_expert_intermediate_size"},
        {"qwen3_5-moe-tiny", "moe_intermediate_size"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        model_desc d;
        cJSON *a = fixture_config(cases[i].fixture);
        del(a, cases[i].field);
        if (!strcmp(cases[i].field, "num_experts_per_tok"))
            del(a, "experts_per_token");
        CHECK(parse_tree(a, NULL, &d) == -1);
        char want[256];
        snprintf(want, sizeof want, "m/config.json: required field \"%s\" is missing", cases[i].field);
        CHECK_STR_CONTAINS(g_err.msg, want);
    }
    /* gpt-oss: experts count under either name; null counts as missing */
    model_desc d;
    cJSON *a = fixture_config("gpt-oss-tiny");
    set_raw(a, "num_local_experts", "null");
    CHECK(parse_tree(a, NULL, &d) == -1);
    CHECK_STR_CONTAINS(g_err.msg, "required field \"num_local_experts\" is missing");
}

TEST(wrong_json_type_is_named)
{
    static const struct { const char *field, *value, *want; } cases[] = {
        {"hidden_size", "\"256\"", "field \"hidden_size\" must be an integer, found a string"},
        {"num_attention_heads", "4.5", "field \"num_attention_heads\" must be an integer, found a number"},
        {"tie_word_embeddings", "\"no\"", "field \"tie_word_embeddings\" must be true or false, found a string"},
        {"rope_scaling", "5", "field \"rope_scaling\" must be an object, found a number"},
        {"rms_norm_eps", "[1]", "field \"rms_norm_eps\" must be a number, found an array"},
        {"eos_token_id", "\"1\"", "field \"eos_token_id\" must be a token id or a list of token ids, found a string"},
        {"bos_token_id", "-3", "field \"bos_token_id\" must be a non-negative integer token id or null"},
        {"layer_types", "{}", "field \"layer_types\" must be an array of layer type names, found an object"},
        {"hidden_size", "0", "field \"hidden_size\" is 0, expected a positive integer"},
        {"swiglu_limit", "true", "field \"swiglu_limit\" must be a number, found a boolean"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        model_desc d;
        cJSON *a = fixture_config("gpt-oss-tiny");
        set_raw(a, cases[i].field, cases[i].value);
        CHECK(parse_tree(a, NULL, &d) == -1);
        CHECK_STR_CONTAINS(g_err.msg, "m/config.json: ");
        CHECK_STR_CONTAINS(g_err.msg, cases[i].want);
    }
    model_desc d;
    cJSON *a = fixture_config("gpt-oss-tiny");
    set_raw(a, "rope_scaling", "{\"rope_type\":\"yarn\",\"factor\":\"32\"}");
    CHECK(parse_tree(a, NULL, &d) == -1);
    CHECK_STR_CONTAINS(g_err.msg, "field \"rope_scaling.factor\" must be a number, found a string");
}

TEST(inconsistent_values_rejected)
{
    static const struct { const char *field, *value, *want; } cases[] = {
        {"num_hidden_layers", "513", "num_hidden_layers is 513; this tool handles at most 512 layers"},
        {"num_key_value_heads", "3", "num_attention_heads (4) is not a multiple of num_key_value_heads (3)"},
        {"num_experts_per_tok", "9", "num_experts_per_tok (9) exceeds the number of experts (8)"},
        {"layer_types", "[\"full_attention\"]", "\"layer_types\" has 1 entries but num_hidden_layers is 2"},
        {"layer_types", "[\"linear_attention\",\"full_attention\"]", "layer 0 is linear_attention, which gpt-oss models do not have"},
        {"sliding_window", "null", "layer 0 is sliding_attention but no sliding_window is set"},
        {"rope_scaling", "{\"rope_type\":\"dynamic\",\"factor\":2}", "rope_type \"dynamic\" is not supported (supported: default, linear, yarn)"},
        {"rope_scaling", "{\"rope_type\":\"linear\"}", "required field \"rope_scaling.factor\" is missing"},
        {"num_experts", "4", "num_local_experts (8) and num_experts (4) disagree"},
        {"rope_parameters", "{\"full_attention\":{\"rope_theta\":1}}", "per-layer-type settings"},
        {"head_dim", "3", "head_dim 3 × partial_rotary_factor 1 gives 3 rotary dimensions"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        model_desc d;
        cJSON *a = fixture_config("gpt-oss-tiny");
        set_raw(a, cases[i].field, cases[i].value);
        CHECK(parse_tree(a, NULL, &d) == -1);
        CHECK_STR_CONTAINS(g_err.msg, "m/config.json: ");
        CHECK_STR_CONTAINS(g_err.msg, cases[i].want);
    }
    model_desc d;
    CHECK(parse_text("{\"model_type\":\"gpt_oss\",\"model_type\":\"qwen3_moe\"}", &d) == -1);
    CHECK_STR_CONTAINS(g_err.msg, "key \"model_type\" appears twice");
    /* qwen3 with a sliding window but no layer_types: refuse to guess which layers slide */
    cJSON *a = fixture_config("qwen3-moe-tiny");
    set_raw(a, "use_sliding_window", "true");
    set_raw(a, "sliding_window", "64");
    CHECK(parse_tree(a, NULL, &d) == -1);
    CHECK_STR_CONTAINS(g_err.msg, "use_sliding_window is true but there is no layer_types");
    /* yarn without factor: max_position_embeddings / original */
    a = fixture_config("qwen3-moe-tiny");
    set_raw(a, "rope_scaling", "{\"rope_type\":\"yarn\",\"original_max_position_embeddings\":8192,\"beta_fast\":0}");
    CHECK_MSG(parse_tree(a, NULL, &d) == 0, "%s", g_err.msg);
    CHECK_NEAR(d.rope_factor, 4.0, 0);
    CHECK_NEAR(d.yarn_beta_fast, 32.0, 0);
}

TEST(generation_config_overrides)
{
    model_desc d;
    cJSON *a = fixture_config("qwen3-moe-tiny");
    CHECK_MSG(parse_tree(a, "{\"bos_token_id\": 5, \"eos_token_id\": [2, 7, 9], \"pad_token_id\": 3,"
                            "\"do_sample\": true, \"top_k\": 20, \"top_p\": 0.8, \"temperature\": 0.7}",
                         &d) == 0, "%s", g_err.msg);
    CHECK_EQ(d.bos_token_id, 5);
    CHECK_EQ(d.n_eos, 3);
    CHECK(d.eos_token_ids[0] == 2 && d.eos_token_ids[1] == 7 && d.eos_token_ids[2] == 9);
    CHECK_EQ(d.pad_token_id, 3);
    CHECK(d.do_sample);
    CHECK_EQ(d.top_k_sampling, 20);
    CHECK_NEAR(d.top_p, 0.8, 0);
    CHECK_NEAR(d.temperature, 0.7, 0);
    /* eos as one int; absent keys and nulls keep config.json's values */
    a = fixture_config("qwen3-moe-tiny");
    CHECK(parse_tree(a, "{\"eos_token_id\": 11, \"pad_token_id\": null}", &d) == 0);
    CHECK(d.n_eos == 1 && d.eos_token_ids[0] == 11 && d.pad_token_id == 0 && d.bos_token_id == -1);
    /* config.json may list several eos ids too */
    a = fixture_config("qwen3-moe-tiny");
    set_raw(a, "eos_token_id", "[4, 5]");
    CHECK(parse_tree(a, "{}", &d) == 0);
    CHECK(d.n_eos == 2 && d.eos_token_ids[1] == 5);
    /* errors name generation_config.json */
    a = fixture_config("qwen3-moe-tiny");
    CHECK(parse_tree(a, "{\"top_p\": \"high\"}", &d) == -1);
    CHECK_STR_CONTAINS(g_err.msg, "generation_config.json: field \"top_p\" must be a number, found a string");
    a = fixture_config("qwen3-moe-tiny");
    CHECK(parse_tree(a, "{\"eos_token_id\": [1,2,3,4,5,6,7,8,9]}", &d) == -1);
    CHECK_STR_CONTAINS(g_err.msg, "generation_config.json: \"eos_token_id\" lists more than 8 ids");
    a = fixture_config("qwen3-moe-tiny");
    CHECK(parse_tree(a, "{\"top_p\": 2}", &d) == -1);
    CHECK_STR_CONTAINS(g_err.msg, "top_p within [0, 1]");
    a = fixture_config("qwen3-moe-tiny");
    CHECK(parse_tree(a, "nope", &d) == -1);
    CHECK_STR_CONTAINS(g_err.msg, "generation_config.json: not valid JSON");
}

TEST(load_reports_missing_and_broken_files)
{
    model_desc d;
    char dir[] = "/tmp/m2o-test-cfg-XXXXXX";
    CHECK(mkdtemp(dir));
    char p[256], g[256];
    snprintf(p, sizeof p, "%s/config.json", dir);
    snprintf(g, sizeof g, "%s/generation_config.json", dir);
    CHECK(config_load(dir, &d, &g_err) == -1);
    CHECK_STR_CONTAINS(g_err.msg, "/config.json: cannot open: No such file or directory");
    char src[512];
    snprintf(src, sizeof src, "%s/qwen2-moe-tiny/config.json", test_fixtures_dir());
    char *text = read_text(src);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
    free(text);
    CHECK_MSG(config_load(dir, &d, &g_err) == 0, "%s", g_err.msg); /* generation config optional */
    CHECK(!strcmp(d.family->model_type, "qwen2_moe") && d.n_eos == 1 && d.eos_token_ids[0] == 2);
    f = fopen(g, "w");
    fputs("{\"eos_token_id\": ", f);
    fclose(f);
    int rc = config_load(dir, &d, &g_err);
    unlink(g);
    unlink(p);
    rmdir(dir);
    CHECK(rc == -1);
    CHECK_STR_CONTAINS(g_err.msg, "/generation_config.json: not valid JSON");
}
