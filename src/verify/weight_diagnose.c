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

/* One failing unit under diagnosis: nr rows of one expert (or row band), decoded through v. */
typedef struct diag_unit {
    const vplan *p;
    int64_t nr;
    vscratch *s;
    const venc *v;
    const uint8_t *w; /* the expert's bytes as the file holds them */
    bool whole;       /* all N rows: the checks that move rows need them */
    char at[96];      /* "expert 3" / "rows from 128", for the messages */
} diag_unit;

/* Each check tries one known bug; true when it explains the bytes (res then names it). */
typedef bool (*diag_check)(const diag_unit *u, vjob_res *res);

/* Layout: the CUDA node reads SM80-prepacked bytes but the file holds the raw layout. */
static bool diag_cutlass_missing(const diag_unit *u, vjob_res *res)
{
    if (u->p->layout != VL_INT_SM80)
        return false;
    venc alt = *u->v;
    alt.codes = u->w;
    if (!venc_passes(u->s->exp, u->nr, u->p->K, &alt))
        return false;
    res->diag = VF_CUTLASS_MISSING;
    snprintf(res->msg, sizeof res->msg,
             "CUTLASS SM80 layout missing: the CUDA QMoE reads prepacked weights "
             "(weights_prepacked=%d) but the bytes of %s are in the raw [N][K/pack] "
             "layout", u->p->prepacked_attr, u->at);
    return true;
}

/* Layout: the node reads the raw layout but the file holds SM80-prepacked bytes. */
static bool diag_cutlass_unexpected(const diag_unit *u, vjob_res *res)
{
    const vplan *p = u->p;
    if (!(p->layout == VL_INT_RAW && u->whole && p->K % 64 == 0 &&
          (p->bits == 4 || p->bits == 8) &&
          !cutlass_sm80_unpack(u->w, p->N, p->K, p->bits, u->s->alt_codes, NULL)))
        return false;
    venc alt = *u->v;
    alt.codes = u->s->alt_codes;
    if (!venc_passes(u->s->exp, u->nr, p->K, &alt))
        return false;
    res->diag = VF_CUTLASS_UNEXPECTED;
    snprintf(res->msg, sizeof res->msg,
             "the bytes of %s are in the CUTLASS SM80 prepacked layout but the node "
             "reads the raw layout (CPU, or weights_prepacked=0)", u->at);
    return true;
}

/* Layout: fp4 codes written raw [N][K/2] where the CUDA QMoE reads them transposed. */
static bool diag_fp4_transpose(const diag_unit *u, vjob_res *res)
{
    if (u->p->layout != VL_FP4_CUDA)
        return false;
    venc alt = *u->v;
    alt.codes = u->w;
    if (!venc_passes(u->s->exp, u->nr, u->p->K, &alt))
        return false;
    res->diag = VF_FP4_TRANSPOSE;
    snprintf(res->msg, sizeof res->msg,
             "fp4 CUDA transpose missing: the bytes of %s are raw [N][K/2] MXFP4 codes, "
             "the CUDA QMoE reads [K][N/2]", u->at);
    return true;
}

/* Scales made positive: restore each block's sign from its anchor (FORMATS §4). */
static bool diag_scales_abs(const diag_unit *u, vjob_res *res)
{
    const venc *v = u->v;
    vscratch *s = u->s;
    int64_t K = u->p->K, bs = u->p->block_size;
    if (v->kind != VENC_INT || v->zero_points)
        return false;
    int64_t nb = K / bs, n_blocks = u->nr * nb, wrong = 0;
    vx_scales_to_f32(v->scales, v->elem_type, (size_t)n_blocks, s->scales_f32);
    vx_anchor_scale_signs(s->exp, u->nr, K, bs, s->signs);
    bool all_nonneg = true;
    for (int64_t i = 0; i < n_blocks; i++)
        all_nonneg &= s->scales_f32[i] >= 0;
    for (int64_t i = 0; i < n_blocks && all_nonneg; i++) {
        if (s->signs[i] < 0) {
            s->scales_f32[i] = -s->scales_f32[i];
            wrong++;
        }
    }
    venc alt = *v;
    alt.scales = s->scales_f32;
    alt.elem_type = ONNX_FLOAT;
    if (!(all_nonneg && wrong > 0 && venc_passes(s->exp, u->nr, K, &alt)))
        return false;
    res->diag = VF_SCALES_ABS;
    snprintf(res->msg, sizeof res->msg,
             "signed scales were made positive (abs): in %s, %lld of %lld blocks have a "
             "positive anchor and need a negative scale (docs/FORMATS.md §4); with their signs "
             "restored every element decodes within bounds",
             u->at, (long long)wrong, (long long)n_blocks);
    return true;
}

/* 4-bit nibble order: the two elements of each byte swapped. */
static bool diag_nibble_order(const diag_unit *u, vjob_res *res)
{
    const venc *v = u->v;
    vscratch *s = u->s;
    int64_t N = u->p->N, K = u->p->K;
    if (!((v->kind == VENC_INT && v->bits == 4) || v->kind == VENC_MXFP4))
        return false;
    size_t nbytes = (size_t)(u->nr * K / 2);
    venc alt = *v;
    alt.codes = s->alt_codes;
    if (u->p->layout == VL_FP4_CUDA) { /* swapped in the transposed bytes the file holds */
        vx_swap_nibbles(u->w, nbytes, s->codes);
        if (fp4_cuda_unpack(s->codes, N, K, s->alt_codes, NULL))
            alt.codes = v->codes;
    } else {
        vx_swap_nibbles(v->codes, nbytes, s->alt_codes);
    }
    if (!venc_passes(s->exp, u->nr, K, &alt))
        return false;
    res->diag = VF_NIBBLE_ORDER;
    snprintf(res->msg, sizeof res->msg,
             "4-bit nibble order swapped in %s: element 2j must sit in the low nibble "
             "of byte j, 2j+1 in the high nibble", u->at);
    return true;
}

/* fc1 written as [gate; up] halves instead of interleaved rows. */
static bool diag_gate_up_halves(const diag_unit *u, vjob_res *res)
{
    int64_t N = u->p->N, K = u->p->K;
    if (!(u->p->experts && u->p->fc1 && u->whole))
        return false;
    vx_halves_from_interleaved(u->s->exp, N, K, u->s->alt);
    if (!venc_passes(u->s->alt, N, K, u->v))
        return false;
    res->diag = VF_GATE_UP_ORDER;
    snprintf(res->msg, sizeof res->msg,
             "gate/up rows not interleaved in %s: the rows hold [gate; up] halves, "
             "swiglu_fusion=1 needs even rows gate and odd rows up", u->at);
    return true;
}

/* N and K swapped: an input-major source written without its transpose. */
static bool diag_nk_swapped(const diag_unit *u, vjob_res *res)
{
    int64_t N = u->p->N, K = u->p->K;
    if (!u->whole)
        return false;
    vx_untransposed(u->s->exp, N, K, u->s->alt);
    if (!venc_passes(u->s->alt, N, K, u->v))
        return false;
    res->diag = VF_NK_SWAPPED;
    snprintf(res->msg, sizeof res->msg,
             "N and K swapped in %s: the bytes hold the [K][N] (input-major) source "
             "without its transpose to [N][K]", u->at);
    return true;
}

/* No known bug explains it: the error bound and its first element. */
static void diag_error_bound(const vplan *p, int64_t e, int64_t r0, const vstats *st,
                             vjob_res *res)
{
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

void vdiagnose(const vplan *p, int64_t e, int64_t r0, int64_t nr, vscratch *s, const venc *v,
               const vstats *st, vjob_res *res)
{
    /* the first check that explains the bytes names the bug, so this order is part of the
     * report; the checks reuse the scratch buffers one after another */
    static const diag_check checks[] = {diag_cutlass_missing, diag_cutlass_unexpected,
                                        diag_fp4_transpose,   diag_scales_abs,
                                        diag_nibble_order,    diag_gate_up_halves,
                                        diag_nk_swapped};
    diag_unit u = {.p = p, .nr = nr, .s = s, .v = v,
                   .w = p->w + (size_t)e * p->w_stride, .whole = r0 == 0 && nr == p->N};
    snprintf(u.at, sizeof u.at, "%s%lld", p->experts ? "expert " : "rows from ",
             (long long)(p->experts ? e : r0));
    res->has_diag = true;
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++)
        if (checks[i](&u, res))
            return;
    diag_error_bound(p, e, r0, st, res);
}
