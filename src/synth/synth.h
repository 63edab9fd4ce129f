/* Synthetic checkpoints: writes a Hugging Face Hub-layout checkpoint folder (sharded safetensors
 * + model.safetensors.index.json, config.json, generation_config.json, a small byte-level BPE
 * tokenizer.json + tokenizer_config.json) with the real tensor names, dtypes and shapes of a
 * known model (docs/FORMATS.md §3, §18) and deterministic random values, so full-size conversions can be run and
 * measured without downloading anything.
 *
 * Values: BF16 tensors are drawn from N(0, 0.02) (norm weights from 1 + N(0, 0.02), attention
 * sinks from N(0, 1)) through a 65536-entry quantile table, so they are always finite and
 * bounded by ~4.2 sigma; MXFP4 blocks are uniform random bytes and their scale bytes lie in
 * 118..124. Every 8-byte word of a tensor is a hash of (seed, tensor name, word index), so the
 * bytes do not depend on tensor order, sharding or thread count. */
#ifndef M2O_SYNTH_H
#define M2O_SYNTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/err.h"

/* transformers' default max_shard_size "5GB". */
#define SYNTH_DEFAULT_SHARD_BYTES 5000000000ull

typedef enum synth_experts {
    SYNTH_EXPERTS_PRESET = 0, /* the preset's own: MXFP4 for gpt-oss, per-expert BF16 for Qwen */
    SYNTH_EXPERTS_MXFP4,      /* gpt-oss only: *_blocks / *_scales U8 */
    SYNTH_EXPERTS_BF16,       /* gpt-oss: gate_up_proj [E, H, 2I] / down_proj [E, I, H]; Qwen: per expert */
} synth_experts;

/* Called on the calling thread while data is written (about every 2 MB) and after each shard:
 * the shard being written and the tensor bytes done so far out of the total over all shards. */
typedef void (*synth_progress_fn)(void *ctx, const char *file, uint64_t done, uint64_t total);

typedef struct synth_opts {
    const char *preset;       /* one of synth_preset_name(i) */
    const char *out_dir;      /* created if missing; if it exists it must be empty or an earlier
                                 synth output (marked by a .moe2onnx-synth file) */
    int num_layers;           /* 0 = the preset's */
    synth_experts experts;
    uint64_t shard_bytes;     /* largest shard's tensor bytes; 0 = SYNTH_DEFAULT_SHARD_BYTES.
                                 A tensor larger than this gets a shard of its own. */
    uint64_t seed;
    int threads;              /* 0 = one per online CPU */
    bool sparse;              /* real headers and file sizes, but tensor data left as holes that
                                 read back as zeros: for layout tests and I/O-free dry runs */
    bool cached_io;           /* write through the page cache instead of O_DIRECT (direct is the
                                 default: steady speed and no gigabytes of dirty pages; file
                                 systems without it, like tmpfs, get cached writes anyway) */
    synth_progress_fn progress;
    void *progress_ctx;
} synth_opts;

typedef struct synth_summary {
    int num_layers;
    int num_shards;           /* 1 = a single model.safetensors, no index */
    size_t num_tensors;
    uint64_t num_params;      /* elements, with MXFP4 counted as 2 per block byte (not scales) */
    uint64_t tensor_bytes;    /* = the index's metadata.total_size */
} synth_summary;

/* Presets (each family's, in src/arch/families.c order): "gpt-oss-20b", "gpt-oss-120b",
 * "gpt-oss-tiny", "qwen3-30b-a3b", "qwen3-moe-tiny". */
size_t synth_preset_count(void);
const char *synth_preset_name(size_t i);
const char *synth_preset_about(size_t i);   /* one line: dimensions */

/* Index of the preset called name, or -1 with an error listing the valid names. */
int synth_parse_preset(const char *name, m2o_err *err);

/* "mxfp4" / "bf16" / "preset" → value; anything else is an error naming the valid values. */
int synth_parse_experts(const char *s, synth_experts *out, m2o_err *err);

/* Prints one line per preset (name and dimensions) to f. */
void synth_usage(FILE *f);

/* Validates the options and says what synth_write would write, without touching the disk. */
int synth_describe(const synth_opts *o, synth_summary *out, m2o_err *err);

/* Writes the checkpoint folder. Every file goes through a temporary name and is renamed when
 * complete; errors name the file and the option to change. */
int synth_write(const synth_opts *o, m2o_err *err);

#endif
