/* Expert weights: the streamed producers that turn one expert (one chunk) of an expert source
 * (weights/sources.h) into each encoding the MoE / QMoE ops take (docs/FORMATS.md §8): float
 * [E, N, K]; int raw [E, N, K/pack] + scales [E, N, K/bs]; int CUTLASS SM80 prepacked (declared
 * [E, K, N/pack], §5); fp4 [E, K, N/2] (§6) + E8M0 scales [E, N, K/32] (§7). */
#ifndef M2O_WEIGHTS_EXPERTS_H
#define M2O_WEIGHTS_EXPERTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "weights/producer.h"
#include "weights/sources.h"

typedef enum expert_enc {
    ENC_FLOAT,      /* [E, N, K] io dtype (MoE op) */
    ENC_INT_RAW,    /* QMoE int: codes [E, N, K*bits/8] */
    ENC_INT_SM80,   /* QMoE int: CUTLASS SM80 prepacked, declared [E, K, N*bits/8] */
    ENC_INT_SCALES, /* QMoE int: scales [E, N, K/bs] io dtype (signed) */
    ENC_FP4,        /* QMoE fp4: codes [E, K, N/2] (CUDA nibble transpose) */
    ENC_FP4_SCALES, /* QMoE fp4: E8M0 scales [E, N, K/32] */
    ENC_INT_ZP,     /* QMoE int, asymmetric: zero points [E, N, ceil(K/bs * bits/8)] uint8 */
} expert_enc;

/* How int experts are quantized (docs/FORMATS.md §4, §4.12, §8). The plain entry points below
 * take bits and block_size and mean symmetric RTN; the *_fmt ones take the whole format. */
typedef struct expert_qfmt {
    int bits;        /* 4 or 8 */
    int block_size;  /* 16..256 along K; 0 = per channel (the builder's symmetric math, §4.12) */
    bool asymmetric; /* uint4/uint8: MLAS asymmetric RTN with zero points (ENC_INT_ZP) */
    bool search;     /* scale_search: src/quant/search.c, same format, never worse per block */
} expert_qfmt;

/* The scales encoding that goes with a weights encoding, and back (ENC_FLOAT has none). */
expert_enc expert_scales_enc(expert_enc weights);
expert_enc expert_weights_enc(expert_enc enc);

/* The producer of encoding `enc` of every expert of src, one expert per chunk: with
 * with_scales, enc is a weights encoding (ENC_INT_RAW, ENC_INT_SM80 or ENC_FP4) and the
 * producer is a group filling the weights and their scales, so each expert is quantized once.
 * Checks the expert count, the source dtypes and the widths the encoding needs first. */
int wt_experts(const expert_src *src, expert_enc enc, bool with_scales, int bits, int block_size,
               const wt_opts *o, wt_producer *p, m2o_err *err);
/* The same for any int format: with_scales makes a group of weights, scales and, when
 * f->asymmetric, zero points (three chunk sizes). */
int wt_experts_fmt(const expert_src *src, expert_enc enc, bool with_scales, const expert_qfmt *f,
                   const wt_opts *o, wt_producer *p, m2o_err *err);

/* What the producers do for one expert: reads expert e of src in bands of rows and encodes it
 * into weights (enc's chunk, or NULL) and scales (the matching scales chunk, or NULL; with enc a
 * scales encoding, weights is NULL), then releases its checkpoint pages. io_dtype sets the float
 * / scale type. Shared with bench/bench_layer.c and the unit tests. */
int expert_produce(const expert_src *src, int64_t e, expert_enc enc, int bits, int block_size,
                   int io_dtype, bool allow_nonfinite, void *weights, void *scales, m2o_err *err);
/* The same for any int format; zero_points (asymmetric only, else NULL) is the ENC_INT_ZP chunk. */
int expert_produce_fmt(const expert_src *src, int64_t e, expert_enc enc, const expert_qfmt *f,
                       int io_dtype, bool allow_nonfinite, void *weights, void *scales,
                       void *zero_points, m2o_err *err);

/* Expert e as float32 [N][K]. tmp is not used (may be NULL). Releases the pages it read. */
int expert_read_f32(const expert_src *s, int64_t e, float *out, float *tmp, m2o_err *err);

/* Pure: one expert's bytes for an encoding, from its float [N][K] matrix (int encodings, fp4
 * encode) — shared by the producer and by tests. out has the chunk size of that encoding. */
int expert_encode(const float *w, int64_t N, int64_t K, expert_enc enc, int bits, int block_size,
                  int io_dtype, void *out, m2o_err *err);
int expert_encode_fmt(const float *w, int64_t N, int64_t K, expert_enc enc, const expert_qfmt *f,
                      int io_dtype, void *out, m2o_err *err);
/* block_size 0: per channel (scales [N]); ENC_INT_ZP: the zero points of that format. */
size_t expert_chunk_bytes(int64_t N, int64_t K, expert_enc enc, int bits, int block_size,
                          int io_dtype);

#endif
