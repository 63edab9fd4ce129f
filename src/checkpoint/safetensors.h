/* safetensors reader: memory-maps each file, validates it completely (SPEC §1), and follows
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

/* One mapped safetensors file. */
int st_file_open(const char *path, st_file **out, m2o_err *err);
void st_file_close(st_file *f);
const char *st_file_path(const st_file *f);
size_t st_file_count(const st_file *f);
const st_tensor *st_file_tensor(const st_file *f, size_t i);
const st_tensor *st_file_find(const st_file *f, const char *name);
/* __metadata__ value for key, or NULL. */
const char *st_file_metadata(const st_file *f, const char *key);

/* A whole checkpoint directory: model.safetensors.index.json when present (every shard it names
 * must exist and hold exactly the tensors mapped to it), else a single model.safetensors. */
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
 * so its page-cache pages stop counting as this process's resident memory. */
void st_release(const st_tensor *t, size_t offset, size_t len);

#endif
