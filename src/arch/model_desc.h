/* config.json (+ generation_config.json) → a typed model description: step 2 of the pipeline
 * ("describe the architecture"). Accepts both the Hub style (rope_theta / rope_scaling at top
 * level) and the transformers v5 style (rope_parameters), with defaults matching transformers.
 * What differs between families (their fields, defaults, layer kinds) comes from the family's
 * table entry (arch/family.h); this header is what every later stage reads. */
#ifndef M2O_MODEL_DESC_H
#define M2O_MODEL_DESC_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

#define MD_MAX_LAYERS 512
#define MD_MAX_EOS 8

struct model_family;

typedef enum layer_kind {
    LAYER_FULL_ATTENTION,
    LAYER_SLIDING_ATTENTION,
    LAYER_LINEAR_ATTENTION,
} layer_kind;

typedef enum rope_kind { ROPE_DEFAULT, ROPE_YARN, ROPE_LINEAR } rope_kind;

typedef struct model_desc {
    const struct model_family *family; /* the table entry of config.json's model_type */
    char model_type[64];
    /* Where the text decoder's tensors live: "model." or "model.language_model." (VL layout). */
    char prefix[64];

    int hidden_size;
    int intermediate_size;          /* dense MLP width (gpt-oss: expert width) */
    int moe_intermediate_size;      /* expert width (gpt-oss: = intermediate_size) */
    int shared_expert_intermediate_size; /* 0 when no shared expert */
    int num_layers;
    int num_heads;
    int num_kv_heads;
    int head_dim;
    int vocab_size;
    int num_experts;
    int top_k;
    bool norm_topk_prob;
    bool sparse_layer[MD_MAX_LAYERS];   /* layer i uses MoE (else dense SwiGLU MLP) */
    layer_kind layer_type[MD_MAX_LAYERS];

    double rms_norm_eps;
    bool attention_bias;            /* q/k/v/o biases (gpt-oss) */
    bool qkv_bias;                  /* q/k/v biases only (qwen2_moe) */
    bool qk_norm;                   /* per-head q_norm/k_norm (qwen3_moe, qwen3.5) */
    bool attn_output_gate;          /* qwen3.5 full attention: q_proj also yields a sigmoid gate */
    bool tie_word_embeddings;
    int sliding_window;             /* 0 = none */
    int max_position_embeddings;

    /* RoPE */
    double rope_theta;
    double partial_rotary_factor;   /* 1.0 unless set */
    rope_kind rope_type;
    double rope_factor;
    double yarn_beta_fast, yarn_beta_slow;
    int rope_original_max_position;
    bool yarn_truncate;             /* default true in transformers */
    double yarn_attention_factor;   /* 0 = derive (0.1 ln(factor) + 1) */

    /* gpt-oss SwiGLU */
    float swiglu_limit;             /* 7.0; 0 = no clamp (plain SwiGLU models) */
    float swiglu_alpha;             /* 1.702; 1.0 for plain SwiGLU models */
    float swiglu_beta;              /* added to the up projection: 1.0 gpt-oss, 0.0 plain SwiGLU */
    /* Added to every RMSNorm weight (decoder norms and q/k norms): Qwen3.5 stores w - 1 and
     * multiplies by 1 + w; 0 elsewhere. */
    float norm_weight_offset;

    /* Qwen3.5 linear attention (Gated DeltaNet) */
    int linear_conv_kernel_dim;
    int linear_key_head_dim;
    int linear_value_head_dim;
    int linear_num_key_heads;
    int linear_num_value_heads;

    /* token ids and generation defaults (generation_config.json overrides config.json) */
    int64_t bos_token_id;           /* -1 when null */
    int64_t eos_token_ids[MD_MAX_EOS];
    int n_eos;
    int64_t pad_token_id;           /* -1 when null */
    int context_length;             /* max_position_embeddings */
    bool do_sample;
    int top_k_sampling;             /* generation top_k, 50 default */
    double top_p;                   /* 1.0 */
    double temperature;             /* 1.0 */
} model_desc;

/* Reads DIR/config.json and, when present, DIR/generation_config.json. Unknown model_type → error
 * listing the supported ones. Missing required fields → error naming the field. */
int config_load(const char *dir, model_desc *out, m2o_err *err);

/* Same, from JSON text (generation_json may be NULL); `what` names the source in errors. */
int config_parse(const char *config_json, const char *generation_json, const char *what,
                 model_desc *out, m2o_err *err);

/* The family's name for messages ("gpt-oss", "Qwen3-MoE", ...). */
const char *arch_name(const model_desc *d);

#endif
