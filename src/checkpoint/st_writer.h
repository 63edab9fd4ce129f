/* Streaming safetensors writer (format: docs/FORMATS.md §1.1). Tensors are declared first (name, dtype,
 * shape); st_writer_begin_data() then writes the 8-byte little-endian header length and the JSON
 * header (padded with spaces so the data buffer starts at a multiple of 8), with data_offsets
 * tiling the buffer in declaration order. The data then comes from plain writes in that order,
 * or from a producer callback run on worker threads over fixed-size chunks (per tensor, or over
 * the whole file at once, optionally with O_DIRECT), so memory stays bounded whatever the tensor
 * size. Output goes to "<path>.partial" and is renamed to <path> only by a successful
 * st_writer_finish(). */
#ifndef M2O_ST_WRITER_H
#define M2O_ST_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "checkpoint/safetensors.h" /* st_dtype, st_dtype_name, st_dtype_size */
#include "common/err.h"

typedef struct st_writer st_writer;

/* Produces bytes [offset, offset + len) of tensor `index` into buf. Called concurrently from
 * several threads on disjoint ranges, so its output must depend only on (index, offset, len).
 * Returns 0, or -1 with err filled. */
typedef int (*st_fill_fn)(void *ctx, size_t index, uint64_t offset, uint8_t *buf, size_t len,
                          m2o_err *err);

/* Starts a file; nothing is created on disk until st_writer_begin_data(). threads <= 0 means one
 * per online CPU. */
int st_writer_open(const char *path, int threads, st_writer **out, m2o_err *err);

/* Adds a "__metadata__" entry (string to string). Only before st_writer_begin_data(). */
int st_writer_metadata(st_writer *w, const char *key, const char *value, m2o_err *err);

/* Declares the next tensor of the data buffer. Names must be unique; shape entries >= 0. */
int st_writer_declare(st_writer *w, const char *name, st_dtype dtype, int ndim,
                      const int64_t *shape, m2o_err *err);

/* Creates the temporary file and writes the header. */
int st_writer_begin_data(st_writer *w, m2o_err *err);

/* Appends raw bytes to the data buffer (they may span tensor boundaries). */
int st_writer_write(st_writer *w, const void *data, size_t len, m2o_err *err);

/* Writes all of tensor `index`, which must be the next one (nothing of it written yet), by
 * calling fn on chunks of at most ST_WRITER_CHUNK bytes; each worker thread writes the chunks it
 * filled at their place in the file. */
#define ST_WRITER_CHUNK ((size_t)2 << 20)
int st_writer_fill(st_writer *w, size_t index, st_fill_fn fn, void *ctx, m2o_err *err);

/* Progress of st_writer_fill_all: file bytes done so far out of the file size. */
typedef void (*st_progress_fn)(void *ctx, uint64_t done, uint64_t total);

/* Asks st_writer_fill_all to write with O_DIRECT (no page cache: steady speed on busy machines,
 * no gigabytes of dirty pages). Call before st_writer_begin_data. File systems that refuse direct
 * I/O get ordinary writes. */
void st_writer_use_direct_io(st_writer *w);
bool st_writer_is_direct(const st_writer *w); /* after begin_data: direct I/O in effect */

/* Writes the whole data buffer (nothing of it written yet): the file is cut into windows of
 * ST_WRITER_CHUNK bytes, each built on a worker thread from the header and fn's pieces of the
 * tensors it crosses, and written with one positional write. progress (may be NULL) is called on
 * the caller's thread. */
int st_writer_fill_all(st_writer *w, st_fill_fn fn, void *ctx, st_progress_fn progress,
                       void *progress_ctx, m2o_err *err);

/* Advances over len bytes without writing them: they read back as zeros and take no disk space
 * on file systems with sparse files. */
int st_writer_skip(st_writer *w, uint64_t len, m2o_err *err);

/* Checks that every declared byte was written, closes and renames to the final path. The writer
 * is freed whatever the outcome; on failure the temporary file is removed. */
int st_writer_finish(st_writer *w, m2o_err *err);

/* Gives up: removes the temporary file and frees the writer. NULL is fine. */
void st_writer_abort(st_writer *w);

/* Sizes, valid after st_writer_begin_data(): header length N (multiple of 8), data buffer bytes,
 * and the file size 8 + N + data. */
uint64_t st_writer_header_len(const st_writer *w);
uint64_t st_writer_data_len(const st_writer *w);
uint64_t st_writer_file_size(const st_writer *w);
size_t st_writer_count(const st_writer *w);

#endif
