/* What the safetensors reader's parts share (safetensors.c: one file and its header;
 * st_data.c: tensor data access and page release; st_index.c: the shard index;
 * checkpoint_dir.c: a checkpoint folder). Not for use outside src/checkpoint/. */
#ifndef M2O_ST_INTERNAL_H
#define M2O_ST_INTERNAL_H

#include <cJSON.h>
#include <stdbool.h>

#include "checkpoint/safetensors.h"
#include "common/json_names.h"

/* Real headers are a few MB at most (~100k tensors); anything larger is garbage. */
#define ST_MAX_HEADER_BYTES (100ull * 1024 * 1024)
/* Index files are small JSON too; refuse to slurp something absurd. */
#define ST_MAX_INDEX_BYTES (256ull * 1024 * 1024)

struct st_file {
    char *path;
    const uint8_t *image; /* whole file: mapped, or the caller's buffer */
    size_t image_len;
    bool mapped;          /* we own a read-only map: munmap on close, madvise allowed */
    st_tensor *tensors;   /* sorted by name */
    size_t n;
    char *arena;          /* tensor names, metadata keys and values */
    const char **meta;    /* key0, value0, key1, value1, ... sorted by key */
    size_t n_meta;
};

/* "[2, 3]" into buf. */
void st_format_shape(char *buf, size_t cap, const int64_t *shape, int ndim);
/* Parses len bytes of JSON text (no NUL needed) naming `what` and `noun` in errors, with `fix`
 * as the advice; NULL on error. */
cJSON *st_parse_json_text(const char *text, size_t len, const char *what, const char *noun,
                          const char *fix, m2o_err *err);

#endif
