/* weights/qerr_track.h */
#include "weights/qerr_track.h"

#include "onnx/quant_stats.h"

void wt_track_quant_error(graph *g, const char *name, const wt_producer *p)
{
    if (p->qerr)
        *p->qerr = graph_add_quant_stats(g, name, &p->qerr_fmt, p->n_chunks);
}

void wt_measure_encoded(bool fp4, const qb_params *p, const float *w, int64_t rows, int64_t cols,
                        const uint8_t *codes, const void *scales, const uint8_t *zero_points,
                        qerr_acc *acc)
{
    if (fp4) {
        qerr_mxfp4(w, rows, cols, codes, scales, acc);
        return;
    }
    qb_params q = *p;
    if (q.block_size <= 0)
        q.block_size = (int)cols;
    qerr_blockwise(w, rows, cols, &q, codes, scales, q.symmetric ? NULL : zero_points, acc);
}
