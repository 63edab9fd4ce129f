/* What a model family (src/arch/<family>.c) supplies so `moe2onnx synth` can imitate it: its
 * presets (dimensions and token ids of the public configs, docs/FORMATS.md §18), the tensors of
 * one layer in the order transformers saves them, and its own config.json fields. */
#ifndef M2O_SYNTH_FAMILY_H
#define M2O_SYNTH_FAMILY_H

#include <cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "checkpoint/safetensors.h"

typedef struct synth_token {
    int id;
    const char *text;
} synth_token;

#define SYNTH_MAX_SPECIALS 8
#define SYNTH_MAX_EOS 4

typedef struct synth_preset {
    const char *name, *about;
    int hidden, intermediate, moe_intermediate;
    int layers, experts, top_k;
    int heads, kv_heads, head_dim, vocab;
    int sliding_window;             /* gpt-oss */
    double rope_theta, rms_eps;
    int max_position;
    bool zero_based_shards;         /* gpt-oss on the Hub: model-00000-of-00002 ... -00002-of-00002 */
    bool tiny;                      /* tokenizer ids like the fixtures: specials first, then bytes */
    int bos, eos, pad;              /* config.json; -1 = null */
    int gen_bos, gen_pad;           /* generation_config.json; -1 = absent */
    int gen_eos[SYNTH_MAX_EOS];     /* eos_token_id: a number when there is one, else a list */
    int n_gen_eos;
    bool do_sample;
    double gen_temperature, gen_top_p; /* 0 = absent */
    int gen_top_k;                  /* 0 = absent */
    const char *eos_text, *pad_text;
    synth_token specials[SYNTH_MAX_SPECIALS];
    int n_specials;
} synth_preset;

typedef enum synth_value_kind { SYNTH_BF16, SYNTH_MXFP4_BLOCKS, SYNTH_MXFP4_SCALES } synth_value_kind;
typedef enum synth_dist { SYNTH_DIST_WEIGHT, SYNTH_DIST_NORM, SYNTH_DIST_SINK, SYNTH_DIST_COUNT } synth_dist;

/* The tensor plan being built (synth.c). */
typedef struct synth_plan synth_plan;

typedef struct family_synth {
    const synth_preset *presets;
    int n_presets;
    const char *architecture;     /* config.json "architectures" */
    bool mxfp4;                   /* its checkpoints may hold MXFP4 experts (the default) */
    /* layer i's tensors, after the embedding and before the final norm and LM head */
    void (*plan_layer)(synth_plan *pl, int i);
    /* config.json fields beyond the ones every family has (synth_files.c writes those) */
    void (*config_fields)(cJSON *c, const synth_preset *p, int layers, bool mxfp4);
} family_synth;

/* ---- for plan_layer ---- */

const synth_preset *synth_plan_preset(const synth_plan *pl);
/* MXFP4 experts were asked for (else BF16). */
bool synth_plan_mxfp4(const synth_plan *pl);
/* Adds a tensor: BF16 values of distribution dist, or the U8 bytes of an MXFP4 kind. */
void synth_plan_add(synth_plan *pl, st_dtype dt, synth_value_kind kind, synth_dist dist, int ndim,
                    const int64_t *shape, const char *name);
/* input/post-attention norms and q/k/v/o (+ biases, + per-head q/k norms) of layer i */
void synth_plan_attention(synth_plan *pl, int i, bool biased, bool qk_norm);
/* A JSON array of strings under key. */
void synth_json_strings(cJSON *o, const char *key, const char *const *v, size_t n);

#define SYNTH_S(...) (const int64_t[]){__VA_ARGS__}
#define SYNTH_NDIM(...) (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t))
#define SYNTH_PLAN_BF16(pl, dist, name, ...)                                                     \
    synth_plan_add(pl, ST_BF16, SYNTH_BF16, SYNTH_DIST_##dist, SYNTH_NDIM(__VA_ARGS__),          \
                   SYNTH_S(__VA_ARGS__), name)
#define SYNTH_PLAN_U8(pl, kind, name, ...)                                                       \
    synth_plan_add(pl, ST_U8, SYNTH_##kind, SYNTH_DIST_WEIGHT, SYNTH_NDIM(__VA_ARGS__),          \
                   SYNTH_S(__VA_ARGS__), name)

#endif
