/* The tokenizer and chat-template files copied beside the model. They are read through whatever
 * links the checkpoint folder holds, so each one is resolved and must stay inside the checkpoint
 * (or, for a Hugging Face cache snapshot, the cache's blobs/ folder, where the snapshot's links
 * point): a link to /etc/shadow must not end up world-readable in a model folder. */
#include "onnx/genai_config.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const k_files[] = {
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "chat_template.jinja", "chat_template.json", "added_tokens.json",
    "tokenizer.model", "vocab.json", "merges.txt",
};
#define N_FILES (sizeof k_files / sizeof k_files[0])

/* The folders a tokenizer file may really live in. */
typedef struct roots {
    char ckpt[PATH_MAX];
    char blobs[PATH_MAX]; /* "" unless ckpt is <cache>/models--X/snapshots/<commit> */
} roots;

static void parent_of(char *path)
{
    char *slash = strrchr(path, '/');
    if (slash && slash != path) *slash = 0;
}

static int find_roots(const char *ckpt_dir, roots *r, m2o_err *err)
{
    if (!realpath(ckpt_dir, r->ckpt))
        return m2o_fail(err, "%s: %s", ckpt_dir, strerror(errno));
    char snapshots[PATH_MAX];
    snprintf(snapshots, sizeof snapshots, "%s", r->ckpt);
    parent_of(snapshots);
    const char *name = strrchr(snapshots, '/');
    r->blobs[0] = 0;
    if (name && !strcmp(name + 1, "snapshots")) {
        char repo[PATH_MAX];
        snprintf(repo, sizeof repo, "%s", snapshots);
        parent_of(repo);
        if ((size_t)snprintf(r->blobs, sizeof r->blobs, "%s/blobs", repo) >= sizeof r->blobs)
            r->blobs[0] = 0;
    }
    return 0;
}

static bool inside(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    return n && !strncmp(path, dir, n) && path[n] == '/';
}

static bool is_json_name(const char *name)
{
    size_t n = strlen(name);
    return n > 5 && !strcmp(name + n - 5, ".json");
}

/* A damaged JSON file would only fail when the model is first loaded: check it now. */
static int check_json(const char *path, const char *shown, m2o_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return m2o_fail(err, "cannot read %s: %s", shown, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *text = malloc(cap);
    size_t n;
    while (text && (n = fread(text + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            char *bigger = realloc(text, cap *= 2);
            if (!bigger) { free(text); text = NULL; }
            text = bigger;
        }
    }
    int bad_read = ferror(f);
    fclose(f);
    if (!text)
        return m2o_fail(err, "out of memory reading %s", shown);
    if (bad_read) {
        free(text);
        return m2o_fail(err, "cannot read %s", shown);
    }
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(text, len, &end, false);
    size_t at = end ? (size_t)(end - text) : 0;
    /* cJSON stops after the first value; the tokenizers library (serde_json) refuses anything but
     * whitespace after it, so "{...}{...}" or "{...}\0junk" would fail only at load time. */
    size_t tail = at;
    while (j && tail < len && strchr(" \t\r\n", text[tail]) && text[tail])
        tail++;
    free(text);
    if (!j)
        return m2o_fail(err, "%s is not valid JSON (error near byte %zu); re-download the tokenizer files",
                        shown, at);
    cJSON_Delete(j);
    if (tail < len)
        return m2o_fail(err, "%s is not valid JSON (data after the JSON value at byte %zu); re-download the "
                             "tokenizer files", shown, tail);
    return 0;
}

/* Resolves ckpt_dir/name into real (empty when the file is absent) and checks it. */
static int resolve_file(const roots *r, const char *ckpt_dir, const char *name, char *real, m2o_err *err)
{
    char path[PATH_MAX + 64];
    struct stat st;
    real[0] = 0;
    snprintf(path, sizeof path, "%s/%s", ckpt_dir, name);
    if (lstat(path, &st) != 0)
        return 0;
    if (!realpath(path, real))
        return m2o_fail(err, "%s is a link to a missing file (%s); put the tokenizer file itself there",
                        path, strerror(errno));
    if (stat(real, &st) != 0 || !S_ISREG(st.st_mode))
        return m2o_fail(err, "%s is not a regular file; put the tokenizer file itself there", path);
    if (!inside(real, r->ckpt) && !inside(real, r->blobs))
        return m2o_fail(err, "%s links to %s, outside the checkpoint folder%s; copy the real file into "
                             "the checkpoint folder", path, real,
                        r->blobs[0] ? " and the Hugging Face cache's blobs/" : "");
    if (is_json_name(name))
        return check_json(real, path, err);
    return 0;
}

int genai_check_tokenizer(const char *ckpt_dir, m2o_err *err)
{
    roots r;
    if (find_roots(ckpt_dir, &r, err))
        return -1;
    bool have_tokenizer = false;
    for (size_t i = 0; i < N_FILES; i++) {
        char real[PATH_MAX];
        if (resolve_file(&r, ckpt_dir, k_files[i], real, err))
            return -1;
        if (real[0] && (!strcmp(k_files[i], "tokenizer.json") || !strcmp(k_files[i], "tokenizer.model")))
            have_tokenizer = true;
    }
    if (!have_tokenizer)
        return m2o_fail(err, "%s: no tokenizer.json (or tokenizer.model); copy the tokenizer "
                             "files of the model into the checkpoint folder", ckpt_dir);
    return 0;
}

/* Copies src to a new dst with at most src's permission bits (the umask applies too). */
static int copy_file(const char *src, const char *dst, m2o_err *err)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (in < 0 || fstat(in, &st) != 0 || !S_ISREG(st.st_mode)) {
        int e = errno;
        if (in >= 0) close(in);
        return m2o_fail(err, "cannot read %s: %s", src, in >= 0 ? "not a regular file" : strerror(e));
    }
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, st.st_mode & 0666);
    if (out < 0) {
        int e = errno;
        close(in);
        return m2o_fail(err, "cannot create %s: %s", dst, strerror(e));
    }
    char buf[1 << 16];
    ssize_t n;
    int bad = 0;
    while (!bad && (n = read(in, buf, sizeof buf)) != 0)
        bad = n < 0 || write(out, buf, (size_t)n) != n;
    bad |= fsync(out) != 0; /* synced like the model files: the folder is renamed into place as complete */
    int e = errno;
    close(in);
    if (close(out) != 0 || bad)
        return m2o_fail(err, "cannot copy %s to %s: %s", src, dst, strerror(e ? e : errno));
    return 0;
}

int genai_copy_tokenizer(const char *ckpt_dir, const char *out_dir, m2o_err *err)
{
    /* Each file is resolved and checked again: it may have changed during the conversion. */
    roots r;
    if (find_roots(ckpt_dir, &r, err))
        return -1;
    for (size_t i = 0; i < N_FILES; i++) {
        char real[PATH_MAX], dst[PATH_MAX + 64];
        if (resolve_file(&r, ckpt_dir, k_files[i], real, err))
            return -1;
        if (!real[0])
            continue;
        snprintf(dst, sizeof dst, "%s/%s", out_dir, k_files[i]);
        if (copy_file(real, dst, err))
            return -1;
    }
    return 0;
}
