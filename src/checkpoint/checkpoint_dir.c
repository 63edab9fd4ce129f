/* A checkpoint folder: model.safetensors, or shards and their index, opened and cross-checked;
 * tensors looked up by name, with the read marks the converter's unused-tensor check needs. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint/st_internal.h"
#include "common/half.h"


struct st_checkpoint {
    char *dir;
    st_file **files;
    size_t n_files;
    const st_tensor **by_name;
    size_t n;
    uint64_t total_bytes;
};

static char *join_path(const char *dir, const char *name, m2o_err *err)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = m2o_malloc(n, err);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* 1 = regular file exists, 0 = absent, -1 = error (filled). */
static int file_exists(const char *path, m2o_err *err)
{
    struct stat st;
    if (stat(path, &st))
        return errno == ENOENT || errno == ENOTDIR ? 0 : m2o_fail(err, "%s: %s", path, strerror(errno));
    return S_ISREG(st.st_mode) ? 1 : m2o_fail(err, "%s: exists but is not a regular file — put "
                                                   "the downloaded file itself there", path);
}

static int read_text_file(const char *path, size_t limit, char **out, size_t *len, m2o_err *err)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return m2o_fail(err, "%s: cannot open: %s — check that the file exists and is readable",
                        path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            if (cap >= limit) {
                free(buf);
                fclose(fp);
                return m2o_fail(err, "%s: larger than %zu bytes — not a checkpoint index", path, limit);
            }
            cap = cap ? 2 * cap : 65536;
            char *nb = realloc(buf, cap + 1);
            if (!nb) {
                free(buf);
                fclose(fp);
                return m2o_fail(err, "out of memory reading %s", path);
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, fp);
        n += got;
        if (got == 0)
            break;
    }
    int bad = ferror(fp);
    fclose(fp);
    if (bad) {
        free(buf);
        return m2o_fail(err, "%s: read error", path);
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

static int cmp_tensor_ptr_name(const void *a, const void *b)
{
    return strcmp((*(const st_tensor *const *)a)->name, (*(const st_tensor *const *)b)->name);
}

/* Every shard must hold exactly the tensors the index maps to it. */
static int check_shards(const st_checkpoint *c, const st_index *ix, const char *ixpath, m2o_err *err)
{
    for (size_t i = 0; i < ix->n_entries; i++) {
        const st_index_entry *e = &ix->entries[i];
        if (!st_file_find(c->files[e->shard], e->tensor))
            return m2o_fail(err, "%s maps tensor '%s' to %s, which does not hold it — the index and "
                            "shards come from different downloads; re-download the checkpoint",
                            ixpath, e->tensor, ix->shards[e->shard]);
    }
    for (size_t s = 0; s < c->n_files; s++) {
        const st_file *f = c->files[s];
        for (size_t i = 0; i < f->n; i++) {
            const st_index_entry *e = st_index_find(ix, f->tensors[i].name);
            if (!e || e->shard != s)
                return m2o_fail(err, "%s holds tensor '%s', which %s %s %s — the index and shards "
                                "come from different downloads; re-download the checkpoint",
                                f->path, f->tensors[i].name, ixpath,
                                e ? "maps to another shard:" : "does not list",
                                e ? ix->shards[e->shard] : "at all");
        }
    }
    return 0;
}

static int open_sharded(st_checkpoint *c, const char *ixpath, m2o_err *err)
{
    char *text = NULL;
    size_t len = 0;
    if (read_text_file(ixpath, ST_MAX_INDEX_BYTES, &text, &len, err))
        return -1;
    st_index *ix;
    int rc = st_index_parse(text, len, ixpath, &ix, err);
    free(text);
    if (rc)
        return -1;
    rc = -1;
    c->files = m2o_calloc(ix->n_shards, sizeof *c->files, err);
    if (!c->files)
        goto out;
    for (size_t s = 0; s < ix->n_shards; s++) {
        char *p = join_path(c->dir, ix->shards[s], err);
        if (!p)
            goto out;
        int ex = file_exists(p, err);
        if (ex == 0)
            m2o_fail(err, "%s names shard '%s', which is missing from %s — download that shard "
                     "(or the whole checkpoint) again", ixpath, ix->shards[s], c->dir);
        int bad = ex != 1 || st_file_open(p, &c->files[s], err);
        free(p);
        if (bad)
            goto out;
        c->n_files++;
    }
    if (check_shards(c, ix, ixpath, err))
        goto out;
    c->by_name = m2o_malloc(ix->n_entries * sizeof *c->by_name, err);
    if (!c->by_name)
        goto out;
    for (size_t i = 0; i < ix->n_entries; i++) /* entries are name-sorted already */
        c->by_name[i] = st_file_find(c->files[ix->entries[i].shard], ix->entries[i].tensor);
    c->n = ix->n_entries;
    rc = 0;
out:
    st_index_free(ix);
    return rc;
}

static int open_single(st_checkpoint *c, const char *path, m2o_err *err)
{
    c->files = m2o_calloc(1, sizeof *c->files, err);
    if (!c->files || st_file_open(path, &c->files[0], err))
        return -1;
    c->n_files = 1;
    const st_file *f = c->files[0];
    c->by_name = m2o_malloc(f->n * sizeof *c->by_name, err);
    if (!c->by_name)
        return -1;
    for (size_t i = 0; i < f->n; i++)
        c->by_name[i] = &f->tensors[i];
    c->n = f->n;
    return 0;
}

static size_t count_safetensors_files(const char *dir)
{
    DIR *d = opendir(dir);
    size_t n = 0;
    if (!d)
        return 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t l = strlen(e->d_name);
        n += l > 12 && !strcmp(e->d_name + l - 12, ".safetensors");
    }
    closedir(d);
    return n;
}

static int open_dir(st_checkpoint *c, m2o_err *err)
{
    struct stat st;
    if (stat(c->dir, &st))
        return m2o_fail(err, "%s: %s — pass the checkpoint folder that holds config.json and the "
                        "*.safetensors files", c->dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return m2o_fail(err, "%s: not a directory — pass the checkpoint folder that holds "
                        "config.json and the *.safetensors files", c->dir);
    char *ixpath = join_path(c->dir, "model.safetensors.index.json", err);
    char *single = join_path(c->dir, "model.safetensors", err);
    int rc = -1;
    if (ixpath && single) {
        int has_ix = file_exists(ixpath, err), has_single = has_ix ? 0 : file_exists(single, err);
        if (has_ix == 1)
            rc = open_sharded(c, ixpath, err);
        else if (has_single == 1)
            rc = open_single(c, single, err);
        else if (has_ix == 0 && has_single == 0) {
            size_t others = count_safetensors_files(c->dir);
            m2o_fail(err, "%s: holds neither model.safetensors.index.json nor model.safetensors%s — "
                     "pass a Hugging Face checkpoint folder%s", c->dir,
                     others ? " (other *.safetensors files are there)" : "",
                     others ? " and restore its model.safetensors.index.json" : "");
        }
    }
    free(ixpath);
    free(single);
    return rc;
}

int ckpt_open(const char *dir, st_checkpoint **out, m2o_err *err)
{
    *out = NULL;
    st_checkpoint *c = m2o_calloc(1, sizeof *c, err);
    if (!c)
        return -1;
    if (!(c->dir = strdup(dir)) || open_dir(c, err)) {
        if (!c->dir)
            m2o_fail(err, "out of memory opening %s", dir);
        ckpt_close(c);
        return -1;
    }
    for (size_t i = 0; i < c->n; i++)
        c->total_bytes += c->by_name[i]->nbytes;
    *out = c;
    return 0;
}

void ckpt_close(st_checkpoint *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_files; i++)
        st_file_close(c->files[i]);
    free(c->files);
    free(c->by_name);
    free(c->dir);
    free(c);
}

size_t ckpt_count(const st_checkpoint *c) { return c->n; }
uint64_t ckpt_total_bytes(const st_checkpoint *c) { return c->total_bytes; }

const st_tensor *ckpt_tensor(const st_checkpoint *c, size_t i)
{
    return i < c->n ? c->by_name[i] : NULL;
}

const st_tensor *ckpt_find(const st_checkpoint *c, const char *name)
{
    st_tensor key = {.name = name};
    const st_tensor *kp = &key;
    const st_tensor *const *hit = bsearch(&kp, c->by_name, c->n, sizeof *c->by_name,
                                          cmp_tensor_ptr_name);
    return hit ? *hit : NULL;
}

long ckpt_index(const st_checkpoint *c, const char *name)
{
    st_tensor key = {.name = name};
    const st_tensor *kp = &key;
    const st_tensor *const *hit = bsearch(&kp, c->by_name, c->n, sizeof *c->by_name,
                                          cmp_tensor_ptr_name);
    return hit ? (long)(hit - c->by_name) : -1;
}

int ckpt_expect(const st_checkpoint *c, const char *name, int ndim, const int64_t *shape,
                const st_tensor **out, m2o_err *err)
{
    const st_tensor *t = ckpt_find(c, name);
    if (out)
        *out = t;
    if (!t)
        return m2o_fail(err, "%s: checkpoint has no tensor '%s' — the checkpoint does not match its "
                        "config.json or is not a supported layout", c->dir, name);
    bool ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = shape[i] == -1 || shape[i] == t->shape[i];
    if (ok)
        return 0;
    char want[256], have[256];
    size_t n = (size_t)snprintf(want, sizeof want, "[");
    for (int i = 0; i < ndim && n < sizeof want; i++)
        n += (size_t)(shape[i] == -1 ? snprintf(want + n, sizeof want - n, "%s*", i ? ", " : "")
                                     : snprintf(want + n, sizeof want - n, "%s%lld", i ? ", " : "",
                                                (long long)shape[i]));
    if (n < sizeof want)
        snprintf(want + n, sizeof want - n, "]");
    st_format_shape(have, sizeof have, t->shape, t->ndim);
    if (out)
        *out = NULL;
    return m2o_fail(err, "%s: tensor '%s' has shape %s, expected %s — the checkpoint does not "
                    "match its config.json", st_file_path(t->file), name, have, want);
}
