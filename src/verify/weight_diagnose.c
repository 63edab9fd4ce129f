/* Naming the exporter bug behind a failing weight: each known bug (layout, signed scales made
 * positive, nibble order, gate/up halves, N and K swapped) is a cheap alternative decoding that
 * stops at the first element out of bounds; the one that makes the bytes pass is the cause. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx/graph.h"
#include "quant/quant.h"
#include "verify/weight_plan.h"

static void where_text(const vplan *p, int64_t e, int64_t row, int64_t col, char *buf,
                       size_t len)
{
    if (p->experts)
        snprintf(buf, len, "expert %lld row %lld col %lld", (long long)e, (long long)row,
                 (long long)col);
    else
        snprintf(buf, len, "row %lld col %lld", (long long)row, (long long)col);
}

void vdiagnose(const vplan *p, int64_t e, int64_t r0, int64_t nr, vscratch *s, const venc *v,
               const vstats *st, vjob_res *res)
{
    int64_t N = p->N, K = p->K;
    bool whole = r0 == 0 && nr == N;
    const uint8_t *w = p->w + (size_t)e * p->w_stride;
    venc alt;
    res->has_diag = true;
    char at[96];
    snprintf(at, sizeof at, "%s%lld", p->experts ? "expert " : "rows from ",
             (long long)(p->experts ? e : r0));

    /* 1. layout: the bytes are in the other layout than the one the runtime reads */
    if (p->layout == VL_INT_SM80) {
        alt = *v;
        alt.codes = w;
        if (venc_passes(s->exp, nr, K, &alt)) {
            res->diag = VF_CUTLASS_MISSING;
            snprintf(res->msg, sizeof res->msg,
                     "CUTLASS SM80 layout missing: the CUDA QMoE reads prepacked weights "
                     "(weights_prepacked=%d) but the bytes of %s are in the raw [N][K/pack] "
                     "layout", p->prepacked_attr, at);
            return;
        }
    }
    if (p->layout == VL_INT_RAW && whole && K % 64 == 0 && (p->bits == 4 || p->bits == 8) &&
        !cutlass_sm80_unpack(w, N, K, p->bits, s->alt_codes, NULL)) {
        alt = *v;
        alt.codes = s->alt_codes;
        if (venc_passes(s->exp, nr, K, &alt)) {
            res->diag = VF_CUTLASS_UNEXPECTED;
            snprintf(res->msg, sizeof res->msg,
                     "the bytes of %s are in the CUTLASS SM80 prepacked layout but the node "
                     "reads the raw layout (CPU, or weights_prepacked=0)", at);
            return;
        }
    }
    if (p->layout == VL_FP4_CUDA) {
        alt = *v;
        alt.codes = w;
        if (venc_passes(s->exp, nr, K, &alt)) {
            res->diag = VF_FP4_TRANSPOSE;
            snprintf(res->msg, sizeof res->msg,
                     "fp4 CUDA transpose missing: the bytes of %s are raw [N][K/2] MXFP4 codes, "
                     "the CUDA QMoE reads [K][N/2]", at);
            return;
        }
    }
    /* 2. scales made positive: restore each block's sign from its anchor */
    if (v->kind == VENC_INT && !v->zero_points) {
        int64_t nb = K / p->block_size, n_blocks = nr * nb, wrong = 0;
        vx_scales_to_f32(v->scales, v->elem_type, (size_t)n_blocks, s->scales_f32);
        vx_anchor_scale_signs(s->exp, nr, K, p->block_size, s->signs);
        bool all_nonneg = true;
        for (int64_t i = 0; i < n_blocks; i++)
            all_nonneg &= s->scales_f32[i] >= 0;
        for (int64_t i = 0; i < n_blocks && all_nonneg; i++) {
            if (s->signs[i] < 0) {
                s->scales_f32[i] = -s->scales_f32[i];
                wrong++;
            }
        }
        alt = *v;
        alt.scales = s->scales_f32;
        alt.elem_type = ONNX_FLOAT;
        if (all_nonneg && wrong > 0 && venc_passes(s->exp, nr, K, &alt)) {
            res->diag = VF_SCALES_ABS;
            snprintf(res->msg, sizeof res->msg,
                     "signed scales were made positive (abs): in %s, %lld of %lld blocks have a "
                     "positive anchor and need a negative scale (docs/FORMATS.md §4); with their signs "
                     "restored every element decodes within bounds",
                     at, (long long)wrong, (long long)n_blocks);
            return;
        }
    }
    /* 3. nibble order */
    if ((v->kind == VENC_INT && v->bits == 4) || v->kind == VENC_MXFP4) {
        size_t nbytes = (size_t)(nr * K / 2);
        alt = *v;
        alt.codes = s->alt_codes;
        if (p->layout == VL_FP4_CUDA) { /* swapped in the transposed bytes the file holds */
            vx_swap_nibbles(w, nbytes, s->codes);
            if (fp4_cuda_unpack(s->codes, N, K, s->alt_codes, NULL))
                alt.codes = v->codes;
        } else {
            vx_swap_nibbles(v->codes, nbytes, s->alt_codes);
        }
        if (venc_passes(s->exp, nr, K, &alt)) {
            res->diag = VF_NIBBLE_ORDER;
            snprintf(res->msg, sizeof res->msg,
                     "4-bit nibble order swapped in %s: element 2j must sit in the low nibble "
                     "of byte j, 2j+1 in the high nibble", at);
            return;
        }
    }
    /* 4. gate/up halves instead of interleaved rows */
    if (p->experts && p->fc1 && whole) {
        vx_halves_from_interleaved(s->exp, N, K, s->alt);
        if (venc_passes(s->alt, N, K, v)) {
            res->diag = VF_GATE_UP_ORDER;
            snprintf(res->msg, sizeof res->msg,
                     "gate/up rows not interleaved in %s: the rows hold [gate; up] halves, "
                     "swiglu_fusion=1 needs even rows gate and odd rows up", at);
            return;
        }
    }
    /* 5. N and K swapped: an input-major source written without its transpose */
    if (whole) {
        vx_untransposed(s->exp, N, K, s->alt);
        if (venc_passes(s->alt, N, K, v)) {
            res->diag = VF_NK_SWAPPED;
            snprintf(res->msg, sizeof res->msg,
                     "N and K swapped in %s: the bytes hold the [K][N] (input-major) source "
                     "without its transpose to [N][K]", at);
            return;
        }
    }
    char where[128];
    where_text(p, e, st->first_row + r0, st->first_col, where, sizeof where);
    res->diag = VF_ERROR_BOUND;
    if (st->first_scale_ceiling > 0) {
        snprintf(res->msg, sizeof res->msg,
                 "%lld of %lld elements exceed the format's error bound (first at %s: expected "
                 "%.6g, decoded %.6g): its block's scale %.6g exceeds the %.6g the checkpoint "
                 "block allows", (long long)st->n_over, (long long)st->n, where,
                 st->first_expected, st->first_decoded, st->first_scale,
                 st->first_scale_ceiling);
        return;
    }
    snprintf(res->msg, sizeof res->msg,
             "%lld of %lld elements exceed the format's error bound (first at %s: expected %.6g, "
             "decoded %.6g, bound %.3g); no known layout or scale bug explains it",
             (long long)st->n_over, (long long)st->n, where, st->first_expected,
             st->first_decoded, st->first_bound);
}
