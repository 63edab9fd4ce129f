/* Pieces of the synthetic checkpoint writer shared by its files (not a public interface). */
#ifndef M2O_SYNTH_INTERNAL_H
#define M2O_SYNTH_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "synth/synth.h"

typedef enum synth_family { SYNTH_GPT_OSS, SYNTH_QWEN3_MOE } synth_family;

typedef struct synth_token {
    int id;
    const char *text;
} synth_token;

#define SYNTH_MAX_SPECIALS 8
#define SYNTH_MAX_EOS 4

typedef struct synth_preset {
    const char *name, *about;
    synth_family family;
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

const synth_preset *synth_preset_at(size_t i);

/* ---- values (synth_values.c) ---- */

typedef enum synth_value_kind { SYNTH_BF16, SYNTH_MXFP4_BLOCKS, SYNTH_MXFP4_SCALES } synth_value_kind;
typedef enum synth_dist { SYNTH_DIST_WEIGHT, SYNTH_DIST_NORM, SYNTH_DIST_SINK, SYNTH_DIST_COUNT } synth_dist;

/* BF16 bit patterns of the 65536 quantiles of each distribution. */
typedef struct synth_tables {
    uint16_t bf16[SYNTH_DIST_COUNT][65536];
} synth_tables;

int synth_tables_create(synth_tables **out, m2o_err *err);

typedef struct synth_values {
    synth_value_kind kind;
    const uint16_t *table;  /* SYNTH_BF16 only */
    uint64_t key;           /* from the seed and the tensor name */
} synth_values;

uint64_t synth_tensor_key(uint64_t seed, const char *name);

/* Bytes [offset, offset + len) of the tensor described by v. Pure: same arguments, same bytes. */
void synth_fill(const synth_values *v, uint64_t offset, uint8_t *buf, size_t len);

/* ---- folder and small files (synth_files.c) ---- */

/* Creates dir (and parents) or checks that it is empty or an earlier synth output, in which case
 * its model*.safetensors and index are removed. Then writes the marker file. */
int synth_prepare_dir(const char *dir, const char *marker_text, m2o_err *err);

/* Writes dir/name through a temporary file. */
int synth_write_text(const char *dir, const char *name, const char *text, m2o_err *err);

int synth_write_config(const synth_preset *p, int layers, bool mxfp4, const char *dir, m2o_err *err);
int synth_write_generation_config(const synth_preset *p, const char *dir, m2o_err *err);
int synth_write_tokenizer(const synth_preset *p, const char *dir, m2o_err *err);

#endif
