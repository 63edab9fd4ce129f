/* A model family is one file in src/arch/ that fills one `model_family` entry with M2O_FAMILY and
 * one name in FAMILY_LIST (families.c). The entry is everything the rest of the tool needs to know
 * about the family:
 *
 *   config     its model_type(s), defaults and the fields only it has (config.c reads the common
 *              ones and calls parse_config for the rest);
 *   checkpoint which checkpoint tensors it leaves out on purpose;
 *   graph      build_graph: checkpoint tensors → the shared blocks of graph/;
 *   genai      onnxruntime-genai's model.type for genai_config.json;
 *   verify     how its checkpoints store the experts (verify reads them with its own reader);
 *   synth      the synthetic-checkpoint presets that imitate it (src/synth/), or none.
 *
 * M2O_FAMILY takes every part as a positional argument, so an entry that misses one does not
 * compile ("macro M2O_FAMILY requires 11 arguments"); a family without synthetic presets says so
 * with FAMILY_NO_SYNTH. tests/unit/test_family.c checks every entry of the table. */
#ifndef M2O_ARCH_FAMILY_H
#define M2O_ARCH_FAMILY_H

#include <stdbool.h>
#include <stddef.h>

#include "arch/config_fields.h"
#include "arch/model_desc.h"
#include "common/err.h"

struct gb;
struct family_synth;

/* transformers' defaults for the fields every family has */
typedef struct family_defaults {
    int head_dim;                 /* 0: hidden_size / num_attention_heads */
    double rms_norm_eps;
    int max_position_embeddings;
    double rope_theta;
    double partial_rotary_factor;
    /* A config with no rope settings at all means gpt-oss's built-in YaRN (factor 32, original
     * context 4096, no truncation) rather than plain rotary. */
    bool builtin_yarn;
    const char *num_experts_key;  /* the key named when the expert count is missing */
} family_defaults;

/* How the family's checkpoints store experts, for verify's independent reader (verify/source.c):
 *   GPT_OSS  experts.{gate_up,down}_proj_blocks/_scales (MXFP4) or input-major fused [E, K, N];
 *   QWEN     fused experts.gate_up_proj [E, 2I, H] / down_proj [E, H, I] or per-expert tensors. */
typedef enum expert_naming { EXPERT_NAMING_GPT_OSS, EXPERT_NAMING_QWEN } expert_naming;

typedef struct model_family {
    const char *name;            /* for messages: "gpt-oss" */
    const char *model_type;      /* config.json model_type of the text model */
    /* model_type of the vision-language checkpoint whose text decoder this family exports (its
     * config under text_config, its tensors under model.language_model.), or NULL */
    const char *vl_model_type;
    const family_defaults *defaults;
    /* The family's own fields, after the common ones: which layers are sparse, its MLP widths,
     * attention layout and layer kinds, SwiGLU constants, norm offset. */
    int (*parse_config)(const cfg_src *s, model_desc *d);
    /* checkpoint tensors not exported on purpose: prefixes, or "*suffix" patterns; NULL-ended */
    const char *const *skipped_tensors;
    int (*build_graph)(struct gb *b, m2o_err *err);
    const char *genai_type;      /* onnxruntime-genai's model.type */
    expert_naming verify_experts;
    const struct family_synth *synth;
} model_family;

#define M2O_FAMILY(id, name_, model_type_, vl_model_type_, defaults_, parse_config_, skipped_,   \
                   build_graph_, genai_type_, verify_experts_, synth_)                           \
    const model_family family_##id = {                                                          \
        .name = name_, .model_type = model_type_, .vl_model_type = vl_model_type_,               \
        .defaults = defaults_, .parse_config = parse_config_, .skipped_tensors = skipped_,       \
        .build_graph = build_graph_, .genai_type = genai_type_,                                  \
        .verify_experts = verify_experts_, .synth = synth_}

/* For a family that no synthetic preset imitates. */
#define FAMILY_NO_SYNTH ((const struct family_synth *)0)
/* For a family whose checkpoints hold nothing it leaves out. */
extern const char *const family_no_skipped[];

/* The family whose model_type or vl_model_type is `model_type`, or NULL; *vl tells which. */
const model_family *family_find(const char *model_type, bool *vl);
/* Entry i of the table (NULL past the end), in FAMILY_LIST order. */
const model_family *family_at(int i);
/* "gpt_oss, qwen3_moe, ..." — every accepted model_type, for messages, into buf. */
void family_supported_types(char *buf, size_t len);

#endif
