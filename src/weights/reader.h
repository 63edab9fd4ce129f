/* The one way producers read the checkpoint: through the read-only maps, asking the kernel for
 * the next bytes ahead of the workers (read-ahead) and dropping the pages behind them once
 * converted (release-behind), so resident memory does not grow with the model
 * (tests/e2e/memory.test.sh). Pages released stay in the page cache. */
#ifndef M2O_WEIGHTS_READER_H
#define M2O_WEIGHTS_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "checkpoint/safetensors.h"
#include "common/err.h"

/* Elements [first, first + count) of a BF16/F16/F32 tensor as float32. */
int tensor_read_f32(const st_tensor *t, int64_t first, int64_t count, float *out, m2o_err *err);

/* Fails naming the tensor, its file and dtype unless it is BF16, F16 or F32: producers call this
 * when they are made, so a wrong dtype stops the export before any bytes are written rather
 * than midway. */
int require_float(const st_tensor *t, m2o_err *err);

/* Read-ahead: starts reading bytes [offset, offset + len) of t from disk (no-op when cached). */
void wt_read_ahead(const st_tensor *t, size_t offset, size_t len);
/* Drops bytes [offset, offset + len) of t from this process's memory. */
void wt_release(const st_tensor *t, size_t offset, size_t len);
/* The same counted in elements of t. */
void wt_release_elems(const st_tensor *t, int64_t first, int64_t count);

/* Release-behind over up to two forward streams read unit by unit (a unit is a row, a source
 * row of a panel, or an element): codes + scales, gate + up halves, or one stream. */
#define WT_READER_STREAMS 2
typedef struct wt_reader {
    int n;
    const st_tensor *t[WT_READER_STREAMS];
    size_t base[WT_READER_STREAMS];     /* byte of unit 0 */
    size_t unit[WT_READER_STREAMS];     /* bytes per unit */
    size_t released[WT_READER_STREAMS]; /* pages before this byte are released */
} wt_reader;

void wt_reader_init(wt_reader *r);
/* Adds a stream of t whose unit 0 starts at byte base. */
void wt_reader_add(wt_reader *r, const st_tensor *t, size_t base, size_t unit_bytes);
/* Units [0, units_done) of every stream are finished: releases the whole pages before them. */
void wt_reader_done(wt_reader *r, int64_t units_done);

#endif
