/* The small files of a synthetic checkpoint folder: config.json, generation_config.json,
 * tokenizer.json, tokenizer_config.json, and the folder itself. */
#include "synth/synth_internal.h"

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MARKER_NAME ".moe2onnx-synth"

static int mkdir_parents(const char *dir, m2o_err *err)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return m2o_fail(err, "output directory path is too long: %.100s...", dir);
    for (char *p = path + 1; ; p++) {
        if (*p != '/' && *p != 0)
            continue;
        char c = *p;
        *p = 0;
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return m2o_fail(err, "cannot create output directory %s: %s", path, strerror(errno));
        *p = c;
        if (!c)
            return 0;
    }
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* Files of an earlier run that a new run may not overwrite (a different shard count leaves
 * different names), so they go before anything is written. */
static bool is_stale_model_file(const char *name)
{
    return !strcmp(name, "model.safetensors") || !strcmp(name, "model.safetensors.index.json") ||
           (!strncmp(name, "model-", 6) && ends_with(name, ".safetensors")) ||
           ends_with(name, ".partial");
}

static int clear_earlier_output(const char *dir, m2o_err *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return m2o_fail(err, "cannot list output directory %s: %s", dir, strerror(errno));
    bool marker = false;
    char other[256] = "";
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (!strcmp(e->d_name, MARKER_NAME))
            marker = true;
        else if (!other[0])
            snprintf(other, sizeof other, "%s", e->d_name);
    }
    int rc = 0;
    if (other[0] && !marker)
        rc = m2o_fail(err, "output directory %s is not empty (it holds %s) and was not written by "
                      "synth; choose a new or empty directory", dir, other);
    rewinddir(d);
    while (!rc && marker && (e = readdir(d))) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (is_stale_model_file(e->d_name) && unlink(path) != 0)
            rc = m2o_fail(err, "cannot remove %s from an earlier synth run: %s", path, strerror(errno));
    }
    closedir(d);
    return rc;
}

int synth_prepare_dir(const char *dir, const char *marker_text, m2o_err *err)
{
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (errno != ENOENT)
            return m2o_fail(err, "cannot use output directory %s: %s", dir, strerror(errno));
        if (mkdir_parents(dir, err))
            return -1;
    } else if (!S_ISDIR(st.st_mode)) {
        return m2o_fail(err, "output path %s exists and is not a directory", dir);
    } else if (clear_earlier_output(dir, err)) {
        return -1;
    }
    return synth_write_text(dir, MARKER_NAME, marker_text, err);
}

int synth_write_text(const char *dir, const char *name, const char *text, m2o_err *err)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.partial", path);
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return m2o_fail(err, "cannot create %s: %s", tmp, strerror(errno));
    size_t n = strlen(text);
    bool ok = fwrite(text, 1, n, f) == n;
    int e = errno;
    if (fclose(f) != 0 && ok) {
        ok = false;
        e = errno;
    }
    if (!ok) {
        unlink(tmp);
        return m2o_fail(err, "writing %s: %s", path, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        return m2o_fail(err, "cannot rename %s to %s: %s", tmp, path, strerror(e));
    }
    return 0;
}

/* Prints j (2-space style is not needed by any reader; cJSON's tabs are valid JSON) and writes it. */
static int write_json(const char *dir, const char *name, cJSON *j, m2o_err *err)
{
    char *text = j ? cJSON_Print(j) : NULL;
    cJSON_Delete(j);
    if (!text)
        return m2o_fail(err, "out of memory building %s/%s", dir, name);
    size_t n = strlen(text);
    char *with_nl = realloc(text, n + 2);
    if (!with_nl) {
        free(text);
        return m2o_fail(err, "out of memory building %s/%s", dir, name);
    }
    memcpy(with_nl + n, "\n", 2);
    int rc = synth_write_text(dir, name, with_nl, err);
    free(with_nl);
    return rc;
}

static void add_id(cJSON *o, const char *key, int id)
{
    if (id < 0)
        cJSON_AddNullToObject(o, key);
    else
        cJSON_AddNumberToObject(o, key, id);
}

void synth_json_strings(cJSON *o, const char *key, const char *const *v, size_t n)
{
    cJSON *a = cJSON_AddArrayToObject(o, key);
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(v[i]));
}

int synth_write_config(const synth_preset *p, const family_synth *fs, int layers, bool mxfp4,
                       const char *dir, m2o_err *err)
{
    cJSON *c = cJSON_CreateObject();
    synth_json_strings(c, "architectures", &fs->architecture, 1);
    cJSON_AddNumberToObject(c, "attention_dropout", 0.0);
    add_id(c, "bos_token_id", p->bos);
    add_id(c, "eos_token_id", p->eos);
    cJSON_AddNumberToObject(c, "head_dim", p->head_dim);
    cJSON_AddStringToObject(c, "hidden_act", "silu");
    cJSON_AddNumberToObject(c, "hidden_size", p->hidden);
    cJSON_AddNumberToObject(c, "initializer_range", 0.02);
    cJSON_AddNumberToObject(c, "intermediate_size", p->intermediate);
    cJSON_AddNumberToObject(c, "max_position_embeddings", p->max_position);
    cJSON_AddNumberToObject(c, "num_attention_heads", p->heads);
    cJSON_AddNumberToObject(c, "num_experts_per_tok", p->top_k);
    cJSON_AddNumberToObject(c, "num_hidden_layers", layers);
    cJSON_AddNumberToObject(c, "num_key_value_heads", p->kv_heads);
    cJSON_AddBoolToObject(c, "output_router_logits", 0);
    add_id(c, "pad_token_id", p->pad);
    cJSON_AddNumberToObject(c, "rms_norm_eps", p->rms_eps);
    cJSON_AddNumberToObject(c, "rope_theta", p->rope_theta);
    cJSON_AddBoolToObject(c, "tie_word_embeddings", 0);
    cJSON_AddStringToObject(c, "torch_dtype", "bfloat16");
    cJSON_AddStringToObject(c, "transformers_version", "4.55.0");
    cJSON_AddBoolToObject(c, "use_cache", 1);
    cJSON_AddNumberToObject(c, "vocab_size", p->vocab);
    fs->config_fields(c, p, layers, mxfp4);
    return write_json(dir, "config.json", c, err);
}

int synth_write_generation_config(const synth_preset *p, const char *dir, m2o_err *err)
{
    cJSON *g = cJSON_CreateObject();
    if (p->gen_bos >= 0)
        cJSON_AddNumberToObject(g, "bos_token_id", p->gen_bos);
    cJSON_AddBoolToObject(g, "do_sample", p->do_sample);
    if (p->n_gen_eos == 1)
        cJSON_AddNumberToObject(g, "eos_token_id", p->gen_eos[0]);
    else
        cJSON_AddItemToObject(g, "eos_token_id", cJSON_CreateIntArray(p->gen_eos, p->n_gen_eos));
    if (p->gen_pad >= 0)
        cJSON_AddNumberToObject(g, "pad_token_id", p->gen_pad);
    if (p->gen_temperature > 0)
        cJSON_AddNumberToObject(g, "temperature", p->gen_temperature);
    if (p->gen_top_k > 0)
        cJSON_AddNumberToObject(g, "top_k", p->gen_top_k);
    if (p->gen_top_p > 0)
        cJSON_AddNumberToObject(g, "top_p", p->gen_top_p);
    return write_json(dir, "generation_config.json", g, err);
}

/* ---- tokenizer ---------------------------------------------------------------------------- */

/* The byte-level BPE alphabet: printable bytes stand for themselves, the other 68 bytes are
 * shifted to code points 256.. in byte order. order[k] is the byte with token rank k. */
static void byte_alphabet(int order[256], int codepoint[256])
{
    int k = 0, shifted = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int b = 0; b < 256; b++) {
            bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
            if (printable != (pass == 0))
                continue;
            order[k++] = b;
            codepoint[b] = printable ? b : 256 + shifted++;
        }
}

static void utf8(int cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else { /* all code points here are below 0x800 */
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        out[2] = 0;
    }
}

#define G "\xc4\xa0" /* U+0120, the byte-level stand-in for a space */
static const char *const k_merges[][2] = {
    {G, "t"}, {"h", "e"}, {"i", "n"}, {G "t", "he"}, {"e", "r"}, {"o", "n"}, {G, "a"}, {"r", "e"},
    {"a", "t"}, {"o", "r"}, {G, "s"}, {"e", "n"},
};
#undef G

static cJSON *special_token(const synth_token *t)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", t->id);
    cJSON_AddStringToObject(o, "content", t->text);
    cJSON_AddBoolToObject(o, "single_word", 0);
    cJSON_AddBoolToObject(o, "lstrip", 0);
    cJSON_AddBoolToObject(o, "rstrip", 0);
    cJSON_AddBoolToObject(o, "normalized", 0);
    cJSON_AddBoolToObject(o, "special", 1);
    return o;
}

static cJSON *byte_level(bool add_prefix_space)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "ByteLevel");
    cJSON_AddBoolToObject(o, "add_prefix_space", add_prefix_space);
    cJSON_AddBoolToObject(o, "trim_offsets", 1);
    cJSON_AddBoolToObject(o, "use_regex", 1);
    return o;
}

/* Vocabulary: the special tokens at their ids, the 256 byte tokens from `first_byte_id` on, then
 * one token per merge. Tiny presets put the specials first, like the fixtures. */
static cJSON *bpe_model(const synth_preset *p)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "type", "BPE");
    cJSON_AddNullToObject(m, "dropout");
    cJSON_AddNullToObject(m, "unk_token");
    cJSON_AddNullToObject(m, "continuing_subword_prefix");
    cJSON_AddNullToObject(m, "end_of_word_suffix");
    cJSON_AddBoolToObject(m, "fuse_unk", 0);
    cJSON_AddBoolToObject(m, "byte_fallback", 0);
    cJSON_AddBoolToObject(m, "ignore_merges", 0);
    cJSON *vocab = cJSON_AddObjectToObject(m, "vocab");
    for (int i = 0; p->tiny && i < p->n_specials; i++)
        cJSON_AddNumberToObject(vocab, p->specials[i].text, p->specials[i].id);
    int order[256], cp[256], id = p->tiny ? p->n_specials : 0;
    byte_alphabet(order, cp);
    for (int k = 0; k < 256; k++) {
        char s[4];
        utf8(cp[order[k]], s);
        cJSON_AddNumberToObject(vocab, s, id++);
    }
    cJSON *merges = cJSON_AddArrayToObject(m, "merges");
    for (size_t i = 0; i < sizeof k_merges / sizeof k_merges[0]; i++) {
        char joined[32];
        snprintf(joined, sizeof joined, "%s%s", k_merges[i][0], k_merges[i][1]);
        cJSON_AddNumberToObject(vocab, joined, id++);
        cJSON_AddItemToArray(merges, cJSON_CreateStringArray(k_merges[i], 2));
    }
    for (int i = 0; !p->tiny && i < p->n_specials; i++)
        cJSON_AddNumberToObject(vocab, p->specials[i].text, p->specials[i].id);
    return m;
}

int synth_write_tokenizer(const synth_preset *p, const char *dir, m2o_err *err)
{
    cJSON *t = cJSON_CreateObject();
    cJSON_AddStringToObject(t, "version", "1.0");
    cJSON_AddNullToObject(t, "truncation");
    cJSON_AddNullToObject(t, "padding");
    cJSON *added = cJSON_AddArrayToObject(t, "added_tokens");
    for (int i = 0; i < p->n_specials; i++)
        cJSON_AddItemToArray(added, special_token(&p->specials[i]));
    cJSON_AddNullToObject(t, "normalizer");
    cJSON_AddItemToObject(t, "pre_tokenizer", byte_level(false));
    cJSON_AddNullToObject(t, "post_processor");
    cJSON_AddItemToObject(t, "decoder", byte_level(true));
    cJSON_AddItemToObject(t, "model", bpe_model(p));
    if (write_json(dir, "tokenizer.json", t, err))
        return -1;

    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "model_max_length", p->tiny ? 4096 : p->max_position);
    cJSON_AddStringToObject(c, "eos_token", p->eos_text);
    cJSON_AddStringToObject(c, "pad_token", p->pad_text);
    cJSON_AddStringToObject(c, "tokenizer_class", "PreTrainedTokenizerFast");
    return write_json(dir, "tokenizer_config.json", c, err);
}
