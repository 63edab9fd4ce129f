#include "onnx/genai_config.h"

#include <cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arch/family.h"

const char *genai_model_type(const model_desc *md)
{
    return md->family->genai_type;
}

static cJSON *provider_options(const export_opts *o)
{
    cJSON *arr = cJSON_CreateArray();
    if (o->ep == EP_CUDA) {
        cJSON *entry = cJSON_CreateObject(), *cuda = cJSON_AddObjectToObject(entry, "cuda");
        cJSON_AddStringToObject(cuda, "enable_cuda_graph", "0");
        cJSON_AddStringToObject(cuda, "enable_skip_layer_norm_strict_mode", "1");
        cJSON_AddItemToArray(arr, entry);
    }
    return arr;
}

bool gqa_window_sized_cache(exec_provider ep)
{
    /* onnxruntime-genai sizes a listed sliding layer's cache window + 16 on the CPU and window on
     * CUDA, and the op then indexes it cache-relative. Measured on the CPU with ONNX Runtime 1.30
     * (tests/e2e/gpt_oss.test.mjs: window + 16 and exactly window, eviction inside the prompt,
     * 1e-6 of transformers). ONNX Runtime's CUDA kernel (1.29) also requires past and present to
     * be one buffer, which onnxruntime-genai binds but onnxruntime-node cannot, so no CUDA
     * export could be run by tests/cuda: CUDA exports keep full-length caches until one is. */
    return ep == EP_CPU;
}

/* Sliding-attention layers get window-sized KV caches in onnxruntime-genai (CPU: window + 16
 * positions; src/models/windowed_kv_cache.cpp) when this section lists them; their
 * GroupQueryAttention carries sliding_window_cache=1 to index such a cache (graph/attention.c;
 * gqa_window_sized_cache says why CUDA exports have neither yet). */
static void add_sliding_window(cJSON *dec, const model_desc *md, const export_opts *o)
{
    if (md->sliding_window < 1 || !gqa_window_sized_cache(o->ep))
        return;
    cJSON *layers = cJSON_CreateArray();
    for (int L = 0; L < md->num_layers; L++)
        if (md->layer_type[L] == LAYER_SLIDING_ATTENTION)
            cJSON_AddItemToArray(layers, cJSON_CreateNumber(L));
    if (cJSON_GetArraySize(layers) == 0) {
        cJSON_Delete(layers);
        return;
    }
    cJSON *sw = cJSON_AddObjectToObject(dec, "sliding_window");
    cJSON_AddNumberToObject(sw, "window_size", md->sliding_window);
    cJSON_AddBoolToObject(sw, "slide_key_value_cache", 0);
    cJSON_AddBoolToObject(sw, "slide_inputs", 0);
    cJSON_AddItemToObject(sw, "layers", layers);
    /* 0: the runtime's default slack for the execution provider */
    cJSON_AddNumberToObject(sw, "cache_slack", 0);
}

static void add_decoder(cJSON *model, const model_desc *md, const export_opts *o,
                        const char *model_filename)
{
    cJSON *dec = cJSON_AddObjectToObject(model, "decoder");
    cJSON *so = cJSON_AddObjectToObject(dec, "session_options");
    cJSON_AddStringToObject(so, "log_id", "onnxruntime-genai");
    cJSON_AddItemToObject(so, "provider_options", provider_options(o));
    cJSON_AddStringToObject(dec, "filename", model_filename);
    cJSON_AddNumberToObject(dec, "head_size", md->head_dim);
    cJSON_AddNumberToObject(dec, "hidden_size", md->hidden_size);
    cJSON *in = cJSON_AddObjectToObject(dec, "inputs");
    cJSON_AddStringToObject(in, "input_ids", "input_ids");
    cJSON_AddStringToObject(in, "attention_mask", "attention_mask");
    cJSON_AddStringToObject(in, "past_key_names", "past_key_values.%d.key");
    cJSON_AddStringToObject(in, "past_value_names", "past_key_values.%d.value");
    cJSON *out = cJSON_AddObjectToObject(dec, "outputs");
    if (o->exclude_lm_head || o->include_hidden_states)
        cJSON_AddStringToObject(out, "hidden_states", "hidden_states");
    if (!o->exclude_lm_head)
        cJSON_AddStringToObject(out, "logits", "logits");
    cJSON_AddStringToObject(out, "present_key_names", "present.%d.key");
    cJSON_AddStringToObject(out, "present_value_names", "present.%d.value");
    /* Linear-attention layers (Qwen3.5) carry past_key_values.{i}.conv_state/.recurrent_state:
     * onnxruntime-genai finds them by the graph's input names, deriving both templates from
     * past_key_names/present_key_names (src/models/recurrent_state.cpp). Its config parser
     * throws on keys it does not know, past_recurrent_names among them, so none is written. */
    cJSON_AddNumberToObject(dec, "num_attention_heads", md->num_heads);
    cJSON_AddNumberToObject(dec, "num_hidden_layers", md->num_layers);
    cJSON_AddNumberToObject(dec, "num_key_value_heads", md->num_kv_heads);
    add_sliding_window(dec, md, o);
}

static void add_search(cJSON *root, const model_desc *md)
{
    cJSON *s = cJSON_AddObjectToObject(root, "search");
    cJSON_AddNumberToObject(s, "diversity_penalty", 0.0);
    cJSON_AddBoolToObject(s, "do_sample", md->do_sample);
    cJSON_AddBoolToObject(s, "early_stopping", 1);
    cJSON_AddNumberToObject(s, "length_penalty", 1.0);
    cJSON_AddNumberToObject(s, "max_length", md->context_length);
    cJSON_AddNumberToObject(s, "min_length", 0);
    cJSON_AddNumberToObject(s, "no_repeat_ngram_size", 0);
    cJSON_AddNumberToObject(s, "num_beams", 1);
    cJSON_AddNumberToObject(s, "num_return_sequences", 1);
    /* GroupQueryAttention updates the cache in place when past and present share a buffer */
    cJSON_AddBoolToObject(s, "past_present_share_buffer", 1);
    cJSON_AddNumberToObject(s, "repetition_penalty", 1.0);
    cJSON_AddNumberToObject(s, "temperature", md->temperature);
    cJSON_AddNumberToObject(s, "top_k", md->top_k_sampling);
    cJSON_AddNumberToObject(s, "top_p", md->top_p);
}

char *genai_config_json(const model_desc *md, const export_opts *o, const char *model_filename,
                        m2o_err *err)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) {
        m2o_fail(err, "out of memory building genai_config.json");
        return NULL;
    }
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    /* A null bos_token_id (gpt-oss) is left out: onnxruntime-genai then uses its default. */
    if (md->bos_token_id >= 0)
        cJSON_AddNumberToObject(model, "bos_token_id", (double)md->bos_token_id);
    cJSON_AddNumberToObject(model, "context_length", md->context_length);
    add_decoder(model, md, o, model_filename);
    if (md->n_eos == 1) {
        cJSON_AddNumberToObject(model, "eos_token_id", (double)md->eos_token_ids[0]);
    } else if (md->n_eos > 1) {
        cJSON *eos = cJSON_AddArrayToObject(model, "eos_token_id");
        for (int i = 0; i < md->n_eos; i++)
            cJSON_AddItemToArray(eos, cJSON_CreateNumber((double)md->eos_token_ids[i]));
    }
    int64_t pad = md->pad_token_id >= 0 ? md->pad_token_id
                  : md->n_eos > 0       ? md->eos_token_ids[0]
                                        : -1;
    if (pad >= 0)
        cJSON_AddNumberToObject(model, "pad_token_id", (double)pad);
    cJSON_AddStringToObject(model, "type", genai_model_type(md));
    cJSON_AddNumberToObject(model, "vocab_size", md->vocab_size);
    add_search(root, md);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text)
        m2o_fail(err, "out of memory printing genai_config.json");
    return text;
}

static int write_text(const char *path, const char *text, m2o_err *err)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return m2o_fail(err, "cannot create %s: %s", path, strerror(errno));
    size_t n = strlen(text);
    /* synced like the model files: the folder is renamed into place as complete */
    int bad = fwrite(text, 1, n, f) != n || fputc('\n', f) == EOF || fflush(f) != 0 ||
              fsync(fileno(f)) != 0;
    if (fclose(f) != 0 || bad)
        return m2o_fail(err, "cannot write %s: %s (disk full?)", path, strerror(errno));
    return 0;
}

int genai_config_write(const char *out_dir, const model_desc *md, const export_opts *o,
                       const char *model_filename, m2o_err *err)
{
    char *text = genai_config_json(md, o, model_filename, err);
    if (!text)
        return -1;
    char path[4096];
    snprintf(path, sizeof path, "%s/genai_config.json", out_dir);
    int rc = write_text(path, text, err);
    free(text);
    return rc;
}
