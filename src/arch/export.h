/* Export pipeline for one checkpoint: model description + opened checkpoint + resolved options →
 * a complete ONNX Runtime GenAI folder (model.onnx, model.onnx.data, genai_config.json,
 * tokenizer files) written into out_dir. The caller (cli/) owns atomicity: out_dir is a
 * temporary directory that it renames into place only when this returns 0. */
#ifndef M2O_EXPORT_H
#define M2O_EXPORT_H

#include "arch/model_desc.h"
#include "checkpoint/safetensors.h"
#include "common/err.h"
#include "graph/export_opts.h"
#include "graph/int8_budget.h"
#include "onnx/graph.h"

/* Builds the decoder graph of md's family into g (no bytes are produced yet: expert and weight
 * initializers are streamed producers reading ck). Fails, naming the tensor, when a tensor the
 * architecture needs is missing or has the wrong shape/dtype. */
int arch_build_graph(const model_desc *md, const st_checkpoint *ck, const export_opts *o,
                     graph *g, m2o_err *err);
/* The same, and then every checkpoint tensor must have been read: one the architecture does not
 * use is refused, naming the first ones and the count, unless the architecture leaves it out on
 * purpose (multi-token-prediction head, vision tower, ...); those are counted in *skipped. */
int arch_build_graph_checked(const model_desc *md, const st_checkpoint *ck, const export_opts *o,
                             graph *g, size_t *skipped, m2o_err *err);

/* arch_build_graph_checked with int8_budget's pre-pass measuring on `threads` workers (<= 0: one
 * per CPU); *report (may be NULL) says what the budget decided (report->active false without one). */
int arch_build_graph_report(const model_desc *md, const st_checkpoint *ck, const export_opts *o, graph *g,
                            size_t *skipped, int threads, i8b_report *report, m2o_err *err);

/* Everything: arch_build_graph_checked, graph_write (with wo: threads, progress, cancellation),
 * genai_config.json, tokenizer files copied from ckpt_dir. */
int export_model(const char *ckpt_dir, const model_desc *md, const st_checkpoint *ck,
                 const export_opts *o, const char *out_dir, const graph_write_opts *wo,
                 m2o_err *err);
/* export_model that also reports how many checkpoint tensors were left out on purpose and what
 * int8_budget decided (either may be NULL). */
int export_model_stats(const char *ckpt_dir, const model_desc *md, const st_checkpoint *ck,
                       const export_opts *o, const char *out_dir, const graph_write_opts *wo,
                       size_t *skipped, i8b_report *budget, m2o_err *err);

#endif
