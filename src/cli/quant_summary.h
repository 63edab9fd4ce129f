/* What `moe2onnx build` says about quantization error: the grouped summary it prints and the
 * per-tensor JSON of --quant-report (fields: README, "Quantization error"). */
#ifndef M2O_CLI_QUANT_SUMMARY_H
#define M2O_CLI_QUANT_SUMMARY_H

#include <stdio.h>

#include "common/err.h"
#include "onnx/quant_stats.h"

/* Per role: tensor count, mean and worst relative RMS error; then the worst 3 tensors. Nothing
 * when no tensor was quantized. report_path names the --quant-report file, or NULL. */
void quant_summary_print(const quant_stats_table *t, const char *report_path, FILE *f);

/* The --quant-report JSON, written to path.tmp and renamed over path. */
int quant_report_write(const char *path, const quant_stats_table *t, m2o_err *err);

/* Fails, naming the option, when path's folder does not exist or is not writable, so a bad
 * --quant-report is refused before a long conversion. */
int quant_report_check_path(const char *path, m2o_err *err);

#endif
