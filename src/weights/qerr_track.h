/* Connects a quantizing producer to the graph's error registry (onnx/quant_stats.h): the
 * attacher of the initializer, which knows its name, registers it and hands the producer its
 * per-chunk slots. */
#ifndef M2O_WEIGHTS_QERR_TRACK_H
#define M2O_WEIGHTS_QERR_TRACK_H

#include "weights/producer.h"

/* Registers tensor `name` when p measures its error (p->qerr set), pointing p's slots at the
 * registry's. Call once, before the graph is written. */
void wt_track_quant_error(graph *g, const char *name, const wt_producer *p);

/* Adds the error of rows x cols source values w encoded as codes + scales (MXFP4 when fp4, else
 * blockwise int with p: zero points unless p->symmetric; p->block_size <= 0 means one block per
 * row, the per-channel format) to acc. */
void wt_measure_encoded(bool fp4, const qb_params *p, const float *w, int64_t rows, int64_t cols,
                        const uint8_t *codes, const void *scales, const uint8_t *zero_points,
                        qerr_acc *acc);

#endif
