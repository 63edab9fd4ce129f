/* The table of model families (arch/families.c): every entry complete, every model_type found,
 * and each family's config.json defaults reaching the description. */
#include <stdio.h>
#include <string.h>

#include "arch/family.h"
#include "synth/synth_family.h"
#include "test.h"

TEST(every_family_has_every_part)
{
    int n = 0;
    for (const model_family *f; (f = family_at(n)); n++) {
        CHECK_MSG(f->name && f->model_type && f->defaults && f->parse_config &&
                      f->skipped_tensors && f->build_graph && f->genai_type,
                  "family %d (%s) misses a part", n, f->model_type ? f->model_type : "?");
        CHECK_MSG(f->defaults->num_experts_key && f->defaults->rms_norm_eps > 0 &&
                      f->defaults->rope_theta > 0 && f->defaults->partial_rotary_factor > 0 &&
                      f->defaults->max_position_embeddings > 0,
                  "family %s: incomplete defaults", f->model_type);
        if (f->synth)
            CHECK_MSG(f->synth->n_presets > 0 && f->synth->plan_layer && f->synth->config_fields &&
                          f->synth->architecture,
                      "family %s: incomplete synth part", f->model_type);
    }
    CHECK_EQ(n, 4);
    CHECK(family_at(-1) == NULL && family_at(n) == NULL);
}

TEST(model_types_are_unique_and_found)
{
    for (int i = 0; family_at(i); i++) {
        const model_family *f = family_at(i);
        bool vl = true;
        CHECK(family_find(f->model_type, &vl) == f && !vl);
        if (f->vl_model_type)
            CHECK(family_find(f->vl_model_type, &vl) == f && vl);
        for (int j = 0; j < i; j++) {
            const model_family *g = family_at(j);
            CHECK_MSG(strcmp(f->model_type, g->model_type) &&
                          (!g->vl_model_type || strcmp(f->model_type, g->vl_model_type)),
                      "model_type %s claimed twice", f->model_type);
        }
    }
    CHECK(family_find("llama", NULL) == NULL);
    CHECK(family_find(NULL, NULL) == NULL);
    char list[256];
    family_supported_types(list, sizeof list);
    CHECK(!strcmp(list, "gpt_oss, qwen3_moe, qwen2_moe, qwen3_5_moe_text, qwen3_5_moe"));
    char small[12];
    family_supported_types(small, sizeof small); /* truncated, never overrun */
    CHECK(strlen(small) == sizeof small - 1);
}

/* A minimal config.json of each family: the family's defaults reach the description. */
TEST(family_defaults_reach_the_description)
{
    static const struct {
        const char *type;
        int head_dim;
        double eps, theta, prf;
        float norm_offset, beta;
    } k[] = {{"gpt_oss", 64, 1e-5, 150000.0, 1.0, 0.0f, 1.0f},
             {"qwen3_moe", 32, 1e-6, 10000.0, 1.0, 0.0f, 0.0f},
             {"qwen2_moe", 32, 1e-6, 10000.0, 1.0, 0.0f, 0.0f},
             {"qwen3_5_moe_text", 256, 1e-6, 10000.0, 0.25, 1.0f, 0.0f}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        char json[512];
        snprintf(json, sizeof json,
                 "{\"model_type\": \"%s\", \"hidden_size\": 128, \"num_hidden_layers\": 4, "
                 "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"vocab_size\": 64, "
                 "\"num_experts\": 4, \"num_experts_per_tok\": 2, \"intermediate_size\": 64, "
                 "\"moe_intermediate_size\": 32, \"attention_bias\": true, "
                 "\"shared_expert_intermediate_size\": 32}",
                 k[i].type);
        model_desc d;
        m2o_err e = {{0}};
        CHECK_MSG(config_parse(json, NULL, "config.json", &d, &e) == 0, "%s: %s", k[i].type, e.msg);
        CHECK(d.family == family_find(k[i].type, NULL));
        CHECK_EQ(d.head_dim, k[i].head_dim);
        CHECK_NEAR(d.rms_norm_eps, k[i].eps, 0);
        CHECK_NEAR(d.rope_theta, k[i].theta, 0);
        CHECK_NEAR(d.partial_rotary_factor, k[i].prf, 0);
        CHECK_NEAR(d.norm_weight_offset, k[i].norm_offset, 0);
        CHECK_NEAR(d.swiglu_beta, k[i].beta, 0);
        CHECK(!strcmp(arch_name(&d), d.family->name));
    }
}
