/* Verify's weight checks, shared by its three parts: planning which initializers to decode and
 * against which checkpoint source (weight_plan.c), running the comparisons as streamed jobs
 * (tensors.c), and naming the known exporter bug behind a failure (weight_diagnose.c). */
#ifndef M2O_VERIFY_WEIGHT_PLAN_H
#define M2O_VERIFY_WEIGHT_PLAN_H

#include "verify/compare.h"
#include "verify/source.h"
#include "verify/verify_internal.h"

/* Row chunk of a linear weight: bounded staging whatever the vocabulary size. */
#define LINEAR_CHUNK_ELEMS ((int64_t)1 << 22)

typedef enum vlayout {
    VL_FLOAT,     /* [E][N][K] float */
    VL_FLOAT_KN,  /* MatMul weight [K][N] float */
    VL_INT_RAW,   /* [E][N][K*bits/8] */
    VL_INT_SM80,  /* per expert, CUTLASS SM80 prepacked */
    VL_FP4_CUDA,  /* per expert [K][N/2] nibble-transposed MXFP4 codes */
} vlayout;

typedef struct vplan {
    size_t row; /* report tensor */
    bool experts, fc1;
    vexperts src;
    vlinear lin;
    int64_t E, N, K;
    vlayout layout;
    int bits, block_size;
    int elem_type;            /* float weights: their type; int: the scales' type */
    const uint8_t *w, *scales, *zp;
    size_t w_stride, s_stride, zp_stride; /* bytes per expert */
    size_t w_len, s_len, zp_len;          /* whole tensors (for page release) */
    bool passthrough;         /* MXFP4 checkpoint -> fp4: codes and scales must be identical */
    int prepacked_attr;
    int64_t rows_per_job, first_job, n_jobs;

    /* accumulated in job order */
    vstats st;
    int64_t diff_code_bytes, diff_scale_bytes, first_diff_expert;
    bool diagnosed;
    vfault_code diag;
    char diag_msg[640];
} vplan;

typedef struct vplans {
    vplan *p;
    size_t n, cap;
} vplans;

typedef struct vjob_res {
    size_t plan;
    vstats st;
    int64_t diff_codes, diff_scales;
    bool has_diag;
    vfault_code diag;
    char msg[640];
} vjob_res;

/* Scratch of one job. */
typedef struct vscratch {
    float *exp, *alt;      /* nr*K floats each */
    uint8_t *codes, *alt_codes;
    float *scales_f32;
    int8_t *signs;
    uint8_t *gather;       /* VL_FLOAT_KN: nr*K elements */
} vscratch;

/* One plan per checked initializer (QMoE/MoE experts, MatMulNBits and named float MatMul
 * weights), each with a report row; ps->p is allocated here (free it). */
int vplan_weights(vctx *c, vplans *ps, m2o_err *err);

/* The structured format of p's tensor, for the per-tensor error fields (quant_fields.c). */
void vtensor_set_qfmt(vtensor *t, const vplan *p);

/* Tries each known exporter bug against a failing unit (rows [r0, r0+nr) of expert e, expected
 * values in s->exp, v the encoding as declared); the first that explains the bytes is named in
 * res, else the error bound and its first element. */
void vdiagnose(const vplan *p, int64_t e, int64_t r0, int64_t nr, vscratch *s, const venc *v,
               const vstats *st, vjob_res *res);

#endif
