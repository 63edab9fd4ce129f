/* safetensors reader: memory-maps each file, validates it completely (docs/FORMATS.md §1), and follows
 * model.safetensors.index.json across shards. Tensors are exposed as raw bytes in the map;
 * float tensors can be converted to float32 on request. Every violation is one error line naming
 * the file and tensor. */
#ifndef M2O_SAFETENSORS_H
#define M2O_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define ST_MAX_DIMS 8

typedef enum st_dtype {
    ST_BOOL, ST_U8, ST_I8, ST_U16, ST_I16, ST_F16, ST_BF16, ST_U32, ST_I32, ST_F32,
    ST_U64, ST_I64, ST_F64, ST_F8_E4M3, ST_F8_E5M2, ST_F8_E8M0,
    ST_DTYPE_COUNT
} st_dtype;

const char *st_dtype_name(st_dtype dt);   /* "BF16", ... */
size_t st_dtype_size(st_dtype dt);        /* bytes per element */

typedef struct st_file st_file;

typedef struct st_tensor {
    const char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    const uint8_t *data; /* points into the file's read-only map */
    size_t nbytes;
    const st_file *file;
} st_tensor;

/* One mapped safetensors file. Tensors are listed in name order (st_file_tensor), whatever the
 * header's order, so everything built from them is deterministic. */
int st_file_open(const char *path, st_file **out, m2o_err *err);
/* Parses and validates a whole safetensors file image held in memory (8-byte length, header, data
 * buffer). The buffer must outlive the st_file, which only points into it; `what` names it in
 * errors. st_file_open maps the file and calls this; the fuzzers call it directly. */
int st_file_parse(const uint8_t *buf, size_t len, const char *what, st_file **out, m2o_err *err);
void st_file_close(st_file *f);
const char *st_file_path(const st_file *f);
size_t st_file_count(const st_file *f);
const st_tensor *st_file_tensor(const st_file *f, size_t i);
const st_tensor *st_file_find(const st_file *f, const char *name);
/* __metadata__ value for key, or NULL. */
const char *st_file_metadata(const st_file *f, const char *key);

/* model.safetensors.index.json, parsed: {"metadata": {...}, "weight_map": {tensor: shard file}}.
 * Shard names must be plain file names (no directories); weight_map must not be empty or name a
 * tensor twice. Entries are sorted by tensor name, shards by file name. */
typedef struct st_index_entry {
    const char *tensor;
    size_t shard; /* index into shards[] */
} st_index_entry;
typedef struct st_index {
    char **shards;
    size_t n_shards;
    st_index_entry *entries;
    size_t n_entries;
} st_index;
int st_index_parse(const char *json, size_t len, const char *what, st_index **out, m2o_err *err);
void st_index_free(st_index *ix);
const st_index_entry *st_index_find(const st_index *ix, const char *tensor);

/* A whole checkpoint directory: model.safetensors.index.json when present (every shard it names
 * must exist and hold exactly the tensors mapped to it; a tensor found in a shard but not mapped to
 * that shard is an error, never silently used or ignored), else a single model.safetensors.
 * ckpt_tensor lists tensors in name order. */
typedef struct st_checkpoint st_checkpoint;
int ckpt_open(const char *dir, st_checkpoint **out, m2o_err *err);
void ckpt_close(st_checkpoint *c);
size_t ckpt_count(const st_checkpoint *c);
const st_tensor *ckpt_tensor(const st_checkpoint *c, size_t i);
const st_tensor *ckpt_find(const st_checkpoint *c, const char *name);
/* Total bytes of tensor data over all shards. */
uint64_t ckpt_total_bytes(const st_checkpoint *c);

/* Finds `name` and checks its rank and shape (a shape entry of -1 matches any size). Errors name
 * the tensor, its file, the expected and actual shape. */
int ckpt_expect(const st_checkpoint *c, const char *name, int ndim, const int64_t *shape,
                const st_tensor **out, m2o_err *err);

/* Converts elements [first, first + count) of a BF16/F16/F32 tensor to float32.
 * Any other dtype is an error naming the tensor. */
int st_read_f32(const st_tensor *t, int64_t first, int64_t count, float *out, m2o_err *err);

/* True when every element is finite (BF16/F16/F32; other dtypes are always finite). On false,
 * *bad_index receives the first non-finite element. */
bool st_all_finite(const st_tensor *t, int64_t *bad_index);

/* Tells the kernel the byte range [offset, offset + len) of the tensor will not be needed again,
 * so its page-cache pages stop counting as this process's resident memory. The range is widened
 * to whole 2 MiB windows of the file (see safetensors.c: the kernel maps pages around a fault),
 * so call it when a range is finished; neighbours still reading simply fault pages in again. */
void st_release(const st_tensor *t, size_t offset, size_t len);
/* Asks the kernel to start reading [offset, offset + len) of the tensor into the page cache now
 * (asynchronously, in large requests), so a job that will read it soon does not wait for the
 * disk page fault by page fault. Only advice: nothing is mapped and nothing fails. */
void st_prefetch(const st_tensor *t, size_t offset, size_t len);
/* For a reader moving forward through a tensor: releases from *released up to the last whole
 * window before byte pos (the window holding pos stays mapped) and advances *released. Start
 * with *released = the first byte read; finish with st_release of the whole range. */
void st_release_behind(const st_tensor *t, size_t *released, size_t pos);

#endif
