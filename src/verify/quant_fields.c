/* The per-tensor quantization error fields of the verify report: each weight check's encoding
 * in the structured form the build's --quant-report uses (onnx/quant_stats.h), and the one
 * summary line of the table. */
#include <math.h>
#include <stdio.h>

#include "onnx/graph.h"
#include "verify/verify_internal.h"
#include "verify/weight_plan.h"

static qscale_type scale_type_of(int elem_type)
{
    return elem_type == ONNX_FLOAT16    ? QSCALE_F16
           : elem_type == ONNX_BFLOAT16 ? QSCALE_BF16
                                        : QSCALE_F32;
}

void vtensor_set_qfmt(vtensor *t, const vplan *p)
{
    qerr_format f = {.symmetric = true, .scale_type = scale_type_of(p->elem_type)};
    switch (p->layout) {
    case VL_FLOAT:
    case VL_FLOAT_KN:
        f.kind = QERR_FLOAT;
        f.bits = (int)onnx_dtype_size(p->elem_type) * 8;
        break;
    case VL_INT_RAW:
    case VL_INT_SM80:
        f.kind = QERR_INT;
        f.bits = p->bits;
        f.block_size = p->block_size;
        f.symmetric = p->zp == NULL;
        break;
    case VL_FP4_CUDA:
        f.kind = QERR_MXFP4;
        f.bits = 4;
        f.block_size = 32;
        break;
    }
    t->qfmt = f;
    t->has_qfmt = true;
}

void verify_print_error_summary(const verify_report *r, FILE *f)
{
    size_t n = 0, worst = 0;
    double sum = 0.0;
    for (size_t i = 0; i < r->n_tensors; i++) {
        const vtensor *t = &r->tensors[i];
        if (!t->has_qfmt || t->qfmt.kind == QERR_FLOAT)
            continue;
        double e = isfinite(t->rel_rms) ? t->rel_rms : INFINITY;
        if (!n || e > r->tensors[worst].rel_rms)
            worst = i;
        sum += e;
        n++;
    }
    if (n)
        fprintf(f, "quantization error: %zu quantized tensors, mean relative RMS %.3e, worst "
                   "%.3e (%s)\n",
                n, sum / (double)n, r->tensors[worst].rel_rms, r->tensors[worst].name);
}
