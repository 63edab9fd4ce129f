/* verify_run: opens the checkpoint, config.json, genai_config.json and the model it names, then
 * runs the graph, genai_config and weight checks into the report. */
#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "verify/verify_internal.h"

static char *read_text(const char *path, m2o_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        m2o_fail(err, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? 2 * cap : 65536;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                m2o_fail(err, "out of memory reading %s", path);
                return NULL;
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, 4096, f);
        len += n;
        if (n < 4096)
            break;
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        m2o_fail(err, "cannot read %s", path);
        return NULL;
    }
    buf[len] = 0;
    return buf;
}

/* "cuda" when any provider_options entry names cuda, "cpu" when the list is empty or absent. */
static int provider_of(const cJSON *root, verify_report *r, bool *cuda, m2o_err *err)
{
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(root, "model"), "decoder");
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(dec, "session_options");
    const cJSON *po = cJSON_GetObjectItemCaseSensitive(so, "provider_options");
    *cuda = false;
    snprintf(r->provider, sizeof r->provider, "cpu");
    if (!po)
        return 0;
    if (!cJSON_IsArray(po))
        return m2o_fail(err, "genai_config.json: model.decoder.session_options.provider_options "
                             "is not an array");
    const cJSON *e;
    cJSON_ArrayForEach(e, po)
    {
        const cJSON *p = e->child;
        if (!cJSON_IsObject(e) || !p)
            continue;
        if (!strcmp(p->string, "cuda")) {
            *cuda = true;
            snprintf(r->provider, sizeof r->provider, "cuda");
        } else {
            verify_add_note(r, "provider \"%s\" in genai_config.json: QMoE layouts verified as "
                               "on CPU (raw)", p->string);
        }
    }
    return 0;
}

/* Tokenizer files the checkpoint has that the converter copies; onnxruntime-genai loads the
 * tokenizer from the model folder, so each must be there, identical. */
static const char *const kTokenizerFiles[] = {
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
    "chat_template.json", "added_tokens.json", "tokenizer.model", "vocab.json", "merges.txt",
};

/* 1 when both files are readable and byte-identical, 0 when they differ, -1 when `b` is
 * missing or unreadable. */
static int same_file(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int rc = fb ? 1 : -1;
    char x[65536], y[65536];
    while (fa && fb && rc == 1) {
        size_t na = fread(x, 1, sizeof x, fa), nb = fread(y, 1, sizeof y, fb);
        if (na != nb || memcmp(x, y, na))
            rc = 0;
        if (na < sizeof x)
            break;
    }
    if (fa)
        fclose(fa);
    if (fb)
        fclose(fb);
    return fa ? rc : 1; /* the checkpoint's copy vanished: nothing to compare */
}

static void check_folder_files(const char *ckpt_dir, const char *model_dir, verify_report *r)
{
    bool tokenizer = false;
    for (size_t i = 0; i < sizeof kTokenizerFiles / sizeof kTokenizerFiles[0]; i++) {
        char src[4096], dst[4096];
        snprintf(src, sizeof src, "%s/%s", ckpt_dir, kTokenizerFiles[i]);
        snprintf(dst, sizeof dst, "%s/%s", model_dir, kTokenizerFiles[i]);
        FILE *f = fopen(src, "rb");
        if (!f)
            continue;
        fclose(f);
        r->n_checks++;
        int same = same_file(src, dst);
        if (same < 0)
            verify_add_fault(r, VF_FILES, kTokenizerFiles[i],
                             "%s is missing from %s (the checkpoint has it; onnxruntime-genai "
                             "loads the tokenizer from the model folder)", kTokenizerFiles[i],
                             model_dir);
        else if (!same)
            verify_add_fault(r, VF_FILES, kTokenizerFiles[i],
                             "%s in %s differs from the checkpoint's copy", kTokenizerFiles[i],
                             model_dir);
        tokenizer |= same > 0 && (i == 0 || !strcmp(kTokenizerFiles[i], "tokenizer.model"));
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", model_dir);
    char *text = read_text(path, NULL);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    r->n_checks++;
    if (text && !j)
        verify_add_fault(r, VF_FILES, "tokenizer.json", "%s is not valid JSON", path);
    else if (!text && !tokenizer && verify_find_fault(r, VF_FILES) < 0)
        verify_add_fault(r, VF_FILES, "tokenizer.json",
                         "%s has no tokenizer.json (nor tokenizer.model): onnxruntime-genai "
                         "cannot load the model", model_dir);
    cJSON_Delete(j);
    free(text);
}

static int run_checks(const char *ckpt_dir, const char *model_dir, const verify_opts *o,
                      verify_report *r, model_desc *md, cJSON *genai, m2o_err *err)
{
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(genai, "model"), "decoder");
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(dec, "filename");
    const char *model_file = cJSON_IsString(fn) ? fn->valuestring : "model.onnx";
    if (strchr(model_file, '/') || !strcmp(model_file, "..") || !model_file[0])
        return m2o_fail(err, "genai_config.json: decoder.filename \"%s\" must be a file name "
                             "inside %s", model_file, model_dir);
    bool cuda;
    if (provider_of(genai, r, &cuda, err))
        return -1;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", model_dir, model_file);
    st_checkpoint *ck = NULL;
    onnx_model *m = NULL;
    if (ckpt_open(ckpt_dir, &ck, err))
        return -1;
    if (onnx_model_open(path, &m, err)) {
        ckpt_close(ck);
        return -1;
    }
    check_folder_files(ckpt_dir, model_dir, r);
    vctx c = {.md = md, .ck = ck, .m = m, .cuda = cuda, .o = o, .r = r};
    c.covered = m2o_calloc(onnx_model_initializer_count(m) + 1, sizeof *c.covered, err);
    int rc = c.covered ? vcheck_graph(&c, err) : -1;
    if (!rc)
        vcheck_graph_order(&c);
    if (!rc)
        rc = vcheck_genai(&c, genai, model_file, err);
    if (!rc)
        rc = vcheck_tensors(&c, err);
    if (!rc)
        rc = vcheck_initializers(&c, err);
    free(c.covered);
    onnx_model_close(m);
    ckpt_close(ck);
    return rc;
}

int verify_run(const char *ckpt_dir, const char *model_dir, const verify_opts *o,
               verify_report *r, m2o_err *err)
{
    model_desc *md = m2o_calloc(1, sizeof *md, err);
    if (!md)
        return -1;
    int rc = config_load(ckpt_dir, md, err);
    if (!rc)
        snprintf(r->model_type, sizeof r->model_type, "%s", md->model_type);
    char path[4096];
    snprintf(path, sizeof path, "%s/genai_config.json", model_dir);
    char *text = rc ? NULL : read_text(path, err);
    cJSON *genai = NULL;
    if (text) {
        genai = cJSON_Parse(text);
        if (!genai)
            rc = m2o_fail(err, "%s is not valid JSON (near byte %ld)", path,
                          cJSON_GetErrorPtr() ? (long)(cJSON_GetErrorPtr() - text) : -1L);
    } else {
        rc = -1;
    }
    if (!rc)
        rc = run_checks(ckpt_dir, model_dir, o, r, md, genai, err);
    cJSON_Delete(genai);
    free(text);
    free(md);
    return rc;
}

void vrelease_pages(const void *p, size_t len)
{
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0 || !p || !len)
        return;
    uintptr_t a = ((uintptr_t)p + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    uintptr_t b = ((uintptr_t)p + len) & ~((uintptr_t)page - 1);
    if (b > a)
        madvise((void *)a, b - a, MADV_DONTNEED);
}

int64_t vnumel(const onnx_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < onnx_tensor_ndim(t); i++)
        n *= onnx_tensor_dims(t)[i];
    return n;
}

vqmoe_attrs vqmoe_attrs_read(const onnx_node *n)
{
    vqmoe_attrs a = {.bits = 4, .block_size = 0, .prepacked = -1, .quant_type = "int"};
    if (!n)
        return a;
    onnx_node_attr_int(n, "expert_weight_bits", &a.bits);
    onnx_node_attr_int(n, "block_size", &a.block_size);
    onnx_node_attr_int(n, "weights_prepacked", &a.prepacked);
    onnx_node_attr_string(n, "quant_type", &a.quant_type);
    return a;
}
