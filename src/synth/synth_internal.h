/* Pieces of the synthetic checkpoint writer shared by its files (not a public interface). */
#ifndef M2O_SYNTH_INTERNAL_H
#define M2O_SYNTH_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "synth/synth.h"
#include "synth/synth_family.h"

/* The preset of index i over all families' presets (synth.c), and the family that owns it. */
const synth_preset *synth_preset_at(size_t i);
const family_synth *synth_preset_family(size_t i);


/* ---- values (synth_values.c) ---- */


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

int synth_write_config(const synth_preset *p, const family_synth *fs, int layers, bool mxfp4,
                       const char *dir, m2o_err *err);
int synth_write_generation_config(const synth_preset *p, const char *dir, m2o_err *err);
int synth_write_tokenizer(const synth_preset *p, const char *dir, m2o_err *err);

#endif
