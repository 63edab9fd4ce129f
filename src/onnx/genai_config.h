/* genai_config.json (what onnxruntime-genai reads to run the folder, docs/FORMATS.md §14) and the tokenizer
 * files copied next to the model. */
#ifndef M2O_GENAI_CONFIG_H
#define M2O_GENAI_CONFIG_H

#include "arch/model_desc.h"
#include "common/err.h"
#include "graph/export_opts.h"

/* onnxruntime-genai's model.type of md's family ("gptoss", ...). */
const char *genai_model_type(const model_desc *md);

/* True when sliding layers get window-sized KV caches: genai_config.json's decoder.sliding_window
 * lists them and their GroupQueryAttention carries sliding_window_cache=1 (graph/attention.c
 * asks here, so the two always agree). CPU exports only, see genai_config.c. */
bool gqa_window_sized_cache(exec_provider ep);

/* The JSON text (caller frees), or NULL with err set. model_filename: "model.onnx". */
char *genai_config_json(const model_desc *md, const export_opts *o, const char *model_filename,
                        m2o_err *err);

/* Writes out_dir/genai_config.json. */
int genai_config_write(const char *out_dir, const model_desc *md, const export_opts *o,
                       const char *model_filename, m2o_err *err);

/* Checks the tokenizer files of ckpt_dir before anything is converted: tokenizer.json or
 * tokenizer.model must exist (a folder without a tokenizer cannot run), each file present must be
 * a regular file whose real path lies inside ckpt_dir or, for a Hugging Face cache snapshot, the
 * cache's blobs/ folder (a link elsewhere, e.g. to /etc/shadow, is refused), and the JSON files
 * must parse. */
int genai_check_tokenizer(const char *ckpt_dir, m2o_err *err);
/* Copies the tokenizer files present in ckpt_dir (tokenizer.json, tokenizer_config.json,
 * special_tokens_map.json, chat templates, vocab/merges files) into out_dir, checked as above;
 * each copy gets at most its source's permissions. */
int genai_copy_tokenizer(const char *ckpt_dir, const char *out_dir, m2o_err *err);

#endif
