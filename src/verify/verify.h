/* `moe2onnx verify`: proves an exported folder correct against its checkpoint.
 *
 * Independently of the exporter, verify rebuilds every expert and linear weight the graph
 * quantizes (QMoE, MoE, MatMulNBits, and the float MatMuls it can name) from the checkpoint
 * tensors as float [N][K], decodes the ONNX bytes through the layout the node attributes and the
 * folder's provider declare (raw, CUTLASS SM80 prepacked, fp4 CUDA, E8M0 scales, zero points),
 * and checks every element against the error the declared format allows. A failing tensor is
 * diagnosed: the known corruptions (scales made positive, N/K swapped, gate/up not interleaved,
 * nibble order, CUTLASS layout left raw, fp4 transpose missing) are tried and named. Bounds come
 * from the checkpoint: a stored scale above what its checkpoint block implies fails. Every other
 * initializer is checked against the checkpoint or config.json (initializers.c; one no rule
 * knows fails), and so are graph invariants (unique names, topological order), genai_config.json
 * and the folder's tokenizer files. */
#ifndef M2O_VERIFY_H
#define M2O_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/err.h"
#include "quant/qerr.h"

/* Stable fault codes (the JSON report's "code"; tests match them). */
typedef enum vfault_code {
    VF_ERROR_BOUND,          /* decoded values exceed the format's error bound (no known cause) */
    VF_SCALES_ABS,           /* signed scales were made positive */
    VF_NK_SWAPPED,           /* N and K swapped (input-major weights not transposed) */
    VF_GATE_UP_ORDER,        /* fc1 gate/up rows not interleaved */
    VF_NIBBLE_ORDER,         /* 4-bit codes with high/low nibbles swapped */
    VF_CUTLASS_MISSING,      /* CUDA reads CUTLASS SM80 prepacked, bytes are raw */
    VF_CUTLASS_UNEXPECTED,   /* node reads raw, bytes are CUTLASS-prepacked */
    VF_FP4_TRANSPOSE,        /* fp4 CUDA nibble transpose missing */
    VF_PASSTHROUGH,          /* MXFP4 passthrough not bit-identical to the checkpoint */
    VF_SHAPE,                /* initializer shape/type differs from what the node implies */
    VF_MISSING,              /* an input the node needs is absent / not an initializer */
    VF_UNMATCHED,            /* quantized weight with no checkpoint source known */
    VF_DUPLICATE_NODE,       /* two nodes share a name */
    VF_DUPLICATE_VALUE,      /* a value is produced twice */
    VF_ROUTER_QUANTIZED,     /* router or shared_expert_gate goes through MatMulNBits */
    VF_QMOE_ATTR,            /* QMoE/MoE attribute inconsistent with config.json / provider */
    VF_GENAI_CONFIG,         /* genai_config.json inconsistent with the graph or config.json */
    VF_GRAPH,                /* other graph invariants (opsets, GQA heads, ...) */
    VF_VALUE,                /* a float/int64 initializer differs from what the checkpoint or
                              * config.json implies (embedding, norms, biases, sinks, rotary) */
    VF_UNCHECKED,            /* an initializer no check knows how to verify */
    VF_GRAPH_ORDER,          /* a node reads a value produced later or by no one (cycle) */
    VF_FILES,                /* a file the folder needs is missing or unreadable */
    VF_COUNT
} vfault_code;

const char *vfault_code_name(vfault_code c); /* "scales_abs", ... */

typedef struct vfault {
    vfault_code code;
    char where[256];  /* tensor or node name */
    char msg[768];    /* one line: what is wrong and how it shows */
} vfault;

/* One verified initializer (all experts of it together). */
typedef struct vtensor {
    char name[256];          /* the weight initializer */
    char node[256];          /* the node that reads it */
    char source[256];        /* checkpoint tensor(s) it came from (first one, "+N" more) */
    char format[64];         /* "int4 raw bs32", "int4 sm80 bs128", "mxfp4 passthrough", ... */
    int64_t elements;
    double rel_rms;          /* ||decoded - expected|| / ||expected|| */
    double rel_rms_bound;    /* the same norm of the per-element bounds: what the format allows */
    double max_abs;          /* largest |decoded - expected| */
    double max_ratio;        /* largest |error| / per-element bound (<= 1 passes) */
    bool bit_exact_required; /* MXFP4 passthrough */
    bool bit_exact;          /* every code and scale byte identical to the checkpoint */
    bool pass;
    bool has_qfmt;           /* qfmt describes the encoding (weight checks' rows) */
    qerr_format qfmt;        /* kind, bits, block, symmetric, scale type (verify/quant_fields.c) */
} vtensor;

typedef struct verify_report {
    char provider[8];        /* "cpu" or "cuda" (from genai_config.json) */
    char model_type[64];
    vtensor *tensors;
    size_t n_tensors, cap_tensors;
    vfault *faults;
    size_t n_faults, cap_faults;
    size_t n_checks;         /* graph/config invariants evaluated */
    size_t n_bit_exact;
    char **notes;            /* things verified only partially or not at all (not failures) */
    size_t n_notes, cap_notes;
} verify_report;

typedef struct verify_opts {
    int threads;             /* <= 0: all cores */
} verify_opts;

void verify_opts_init(verify_opts *o);
void verify_report_init(verify_report *r);
void verify_report_free(verify_report *r);

/* Runs every check of model_dir (model.onnx named by genai_config.json, its data file,
 * genai_config.json) against ckpt_dir. Returns 0 when the checks could run (the verdict is then
 * in r: verify_passed), -1 when they could not (unreadable files, unsupported model), with err. */
int verify_run(const char *ckpt_dir, const char *model_dir, const verify_opts *o,
               verify_report *r, m2o_err *err);

bool verify_passed(const verify_report *r);

/* The short table plus one verdict line; all_rows prints every tensor, else failing ones and the
 * worst of each format when there are many. */
void verify_print_table(const verify_report *r, bool all_rows, FILE *f);
/* The verdict line alone: "verify: PASS (N tensors, M bit-exact)" or "verify: FAIL: <first fault>". */
void verify_verdict_line(const verify_report *r, char *buf, size_t len);
/* Machine-readable report (cJSON text, caller frees), or NULL when out of memory. */
char *verify_report_json(const verify_report *r);

/* Recording (used by the checks; exposed for tests). */
void verify_add_fault(verify_report *r, vfault_code code, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void verify_add_note(verify_report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Index of the first fault with this code, or -1. */
int verify_find_fault(const verify_report *r, vfault_code code);

#endif
