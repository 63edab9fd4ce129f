/* Command-line options of `moe2onnx build`, mirroring onnxruntime-genai's builder so its users
 * can switch, plus moe2onnx's own (--threads, --quiet, --overwrite, --allow-nonfinite).
 * Validation happens in two steps, both before any output is written: options_validate checks
 * values and combinations that need no model; options_resolve adds the checks and defaults that
 * depend on the model's dimensions. */
#ifndef M2O_OPTIONS_H
#define M2O_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "arch/model_desc.h"
#include "common/err.h"
#include "graph/export_opts.h"

#define CLI_MAX_EXTRA 64

typedef struct build_args {
    const char *input;      /* -i: checkpoint directory */
    const char *output;     /* -o: output model folder */
    const char *model_name; /* -m: Hugging Face name, resolved in the local cache */
    const char *cache_dir;  /* -c */
    const char *precision;  /* -p */
    const char *ep;         /* -e */
    int n_extra;
    const char *extra[CLI_MAX_EXTRA]; /* KEY=VALUE */
    int threads;            /* 0 = all cores */
    bool quiet;
    const char *quant_report; /* --quant-report FILE: per-tensor quantization error (JSON) */
    bool overwrite;
    bool allow_nonfinite;
    bool help;
} build_args;

/* Parses argv (after the subcommand). Returns 0, or -1 with a one-line message. */
int build_args_parse(int argc, char **argv, build_args *a, m2o_err *err);

/* Option values and combinations that need no model. Fills o with everything that can be known
 * without the model; dims-dependent fields are finished by options_resolve. */
int options_validate(const build_args *a, export_opts *o, m2o_err *err);

/* Dims-dependent checks and defaults (block sizes vs hidden/intermediate sizes, CUTLASS K % 64). */
int options_resolve(const build_args *a, const model_desc *md, export_opts *o, m2o_err *err);

/* The model itself against ONNX Runtime's run-time rules (onnx/ort_rules.h) that no option can
 * change: a config ONNX Runtime would refuse at its first run is a bad input. */
int options_check_model(const model_desc *md, m2o_err *err);

/* The checkpoint directory: -i, or -m resolved in the Hugging Face cache (-c or $HF_HOME/hub or
 * ~/.cache/huggingface/hub). Writes into buf. */
int options_input_dir(const build_args *a, char *buf, size_t len, m2o_err *err);

void build_usage(FILE *f);

#endif
