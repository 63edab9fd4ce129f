#include "checkpoint/st_writer.h"

#include "common/threadpool.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_WRITER_MAX_THREADS 16

typedef struct st_wtensor {
    char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t begin, end; /* data_offsets */
} st_wtensor;

typedef struct st_wmeta {
    char *key, *value;
} st_wmeta;

struct st_writer {
    char *path, *tmp_path;
    int fd;            /* -1 until begin_data */
    int dfd;           /* O_DIRECT descriptor of the same file, or -1 */
    bool want_direct;
    int threads;
    uint8_t *header;   /* the 8 + header_len header bytes, kept for st_writer_fill_all */
    st_wtensor *t;
    size_t count, cap;
    st_wmeta *meta;
    size_t nmeta;
    uint64_t header_len, data_len;
    uint64_t pos;      /* data bytes written or skipped so far */
};

static char *dup_str(const char *s, m2o_err *err)
{
    size_t n = strlen(s) + 1;
    char *d = m2o_malloc(n, err);
    if (d)
        memcpy(d, s, n);
    return d;
}

int st_writer_open(const char *path, int threads, st_writer **out, m2o_err *err)
{
    *out = NULL;
    st_writer *w = m2o_calloc(1, sizeof *w, err);
    if (!w)
        return -1;
    w->fd = -1;
    w->dfd = -1;
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    w->threads = threads > ST_WRITER_MAX_THREADS ? ST_WRITER_MAX_THREADS : threads;
    w->path = dup_str(path, err);
    w->tmp_path = w->path ? m2o_malloc(strlen(path) + sizeof ".partial", err) : NULL;
    if (!w->tmp_path) {
        st_writer_abort(w);
        return -1;
    }
    sprintf(w->tmp_path, "%s.partial", path);
    *out = w;
    return 0;
}

int st_writer_metadata(st_writer *w, const char *key, const char *value, m2o_err *err)
{
    if (w->fd >= 0)
        return m2o_fail(err, "%s: metadata \"%s\" added after the header was written", w->path, key);
    st_wmeta *m = realloc(w->meta, (w->nmeta + 1) * sizeof *m);
    if (!m)
        return m2o_fail(err, "%s: out of memory adding metadata", w->path);
    w->meta = m;
    m[w->nmeta].key = dup_str(key, err);
    m[w->nmeta].value = m[w->nmeta].key ? dup_str(value, err) : NULL;
    if (!m[w->nmeta].value) {
        free(m[w->nmeta].key);
        return -1;
    }
    w->nmeta++;
    return 0;
}

int st_writer_declare(st_writer *w, const char *name, st_dtype dtype, int ndim,
                      const int64_t *shape, m2o_err *err)
{
    if (w->fd >= 0)
        return m2o_fail(err, "%s: tensor %s declared after the header was written", w->path, name);
    if ((unsigned)dtype >= ST_DTYPE_COUNT)
        return m2o_fail(err, "%s: tensor %s has unknown dtype %d", w->path, name, (int)dtype);
    if (ndim < 0 || ndim > ST_MAX_DIMS)
        return m2o_fail(err, "%s: tensor %s has rank %d (0..%d supported)", w->path, name, ndim,
                        ST_MAX_DIMS);
    uint64_t nbytes = st_dtype_size(dtype);
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return m2o_fail(err, "%s: tensor %s has negative dimension %d", w->path, name, d);
        if (shape[d] && nbytes > UINT64_MAX / 2 / (uint64_t)shape[d])
            return m2o_fail(err, "%s: tensor %s is too large", w->path, name);
        nbytes *= (uint64_t)shape[d];
    }
    if (w->count == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        st_wtensor *t = realloc(w->t, cap * sizeof *t);
        if (!t)
            return m2o_fail(err, "%s: out of memory declaring tensor %s", w->path, name);
        w->t = t;
        w->cap = cap;
    }
    st_wtensor *t = &w->t[w->count];
    memset(t, 0, sizeof *t);
    if (!(t->name = dup_str(name, err)))
        return -1;
    t->dtype = dtype;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++)
        t->shape[d] = shape[d];
    t->begin = w->data_len;
    t->end = w->data_len + nbytes;
    w->data_len = t->end;
    w->count++;
    return 0;
}

/* ---- header JSON ---------------------------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_json_string(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            sb_put(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, (const char *)&c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static void sb_tensor_entry(sbuf *b, const st_wtensor *t)
{
    char num[64];
    sb_json_string(b, t->name);
    sb_puts(b, ":{\"dtype\":\"");
    sb_puts(b, st_dtype_name(t->dtype));
    sb_puts(b, "\",\"shape\":[");
    for (int d = 0; d < t->ndim; d++) {
        snprintf(num, sizeof num, "%s%" PRId64, d ? "," : "", t->shape[d]);
        sb_puts(b, num);
    }
    snprintf(num, sizeof num, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", t->begin, t->end);
    sb_puts(b, num);
}

/* The header: 8-byte length, then JSON padded with spaces to a multiple of 8. */
static int build_header(const st_writer *w, sbuf *b, m2o_err *err)
{
    sb_put(b, "\0\0\0\0\0\0\0\0", 8);
    sb_puts(b, "{");
    if (w->nmeta) {
        sb_puts(b, "\"__metadata__\":{");
        for (size_t i = 0; i < w->nmeta; i++) {
            if (i)
                sb_puts(b, ",");
            sb_json_string(b, w->meta[i].key);
            sb_puts(b, ":");
            sb_json_string(b, w->meta[i].value);
        }
        sb_puts(b, "}");
    }
    for (size_t i = 0; i < w->count; i++) {
        if (i || w->nmeta)
            sb_puts(b, ",");
        sb_tensor_entry(b, &w->t[i]);
    }
    sb_puts(b, "}");
    while (b->len % 8)
        sb_puts(b, " ");
    if (b->oom)
        return m2o_fail(err, "%s: out of memory building the header", w->path);
    uint64_t n = b->len - 8;
    for (int i = 0; i < 8; i++)
        b->p[i] = (char)(n >> (8 * i) & 0xff);
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int check_unique_names(const st_writer *w, m2o_err *err)
{
    if (w->count < 2)
        return 0;
    char **names = m2o_malloc(w->count * sizeof *names, err);
    if (!names)
        return -1;
    for (size_t i = 0; i < w->count; i++)
        names[i] = w->t[i].name;
    qsort(names, w->count, sizeof *names, cmp_names);
    int rc = 0;
    for (size_t i = 1; i < w->count && !rc; i++)
        if (!strcmp(names[i - 1], names[i]))
            rc = m2o_fail(err, "%s: tensor %s declared twice", w->path, names[i]);
    free(names);
    return rc;
}

/* ---- raw output ----------------------------------------------------------------------------- */

static int write_fail(const st_writer *w, int errnum, uint64_t want, m2o_err *err)
{
    const char *hint = errnum == ENOSPC || errnum == EDQUOT
                           ? "; free disk space or write somewhere else"
                           : "";
    return m2o_fail(err, "writing %s (%" PRIu64 " bytes to go): %s%s", w->path, want,
                    strerror(errnum), hint);
}

/* Writes len bytes at file offset `at`. Positional writes let the fill workers write their own
 * chunks in parallel: the copy into the page cache costs as much CPU as making the bytes. */
static int write_at(const st_writer *w, const void *data, size_t len, uint64_t at, m2o_err *err)
{
    const uint8_t *p = data;
    while (len) {
        ssize_t n = pwrite(w->fd, p, len > ((size_t)1 << 30) ? (size_t)1 << 30 : len, (off_t)at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return write_fail(w, errno, len, err);
        if (n == 0)
            return write_fail(w, EIO, len, err);
        p += n;
        len -= (size_t)n;
        at += (uint64_t)n;
    }
    return 0;
}

/* File offset of data buffer position pos. */
static uint64_t data_at(const st_writer *w, uint64_t pos) { return 8 + w->header_len + pos; }

int st_writer_begin_data(st_writer *w, m2o_err *err)
{
    if (w->fd >= 0)
        return m2o_fail(err, "%s: header written twice", w->path);
    if (check_unique_names(w, err))
        return -1;
    sbuf b = {0};
    if (build_header(w, &b, err)) {
        free(b.p);
        return -1;
    }
    w->header_len = b.len - 8;
    w->header = (uint8_t *)b.p;
    w->fd = open(w->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0)
        return m2o_fail(err, "cannot create %s: %s", w->tmp_path, strerror(errno));
    /* File systems without O_DIRECT (tmpfs) refuse it here: stay with the page cache. */
    if (w->want_direct)
        w->dfd = open(w->tmp_path, O_WRONLY | O_DIRECT | O_CLOEXEC);
    return write_at(w, w->header, 8 + w->header_len, 0, err);
}

static const char *tensor_at(const st_writer *w, uint64_t pos)
{
    for (size_t i = 0; i < w->count; i++)
        if (pos >= w->t[i].begin && pos < w->t[i].end)
            return w->t[i].name;
    return "(none)";
}

static int check_room(const st_writer *w, uint64_t len, m2o_err *err)
{
    if (w->fd < 0)
        return m2o_fail(err, "%s: data written before st_writer_begin_data", w->path);
    if (len > w->data_len - w->pos)
        return m2o_fail(err, "%s: %" PRIu64 " bytes written past the end of the declared data "
                        "(%" PRIu64 " bytes)", w->path, len - (w->data_len - w->pos), w->data_len);
    return 0;
}

int st_writer_write(st_writer *w, const void *data, size_t len, m2o_err *err)
{
    if (check_room(w, len, err) || write_at(w, data, len, data_at(w, w->pos), err))
        return -1;
    w->pos += len;
    return 0;
}

int st_writer_skip(st_writer *w, uint64_t len, m2o_err *err)
{
    if (check_room(w, len, err))
        return -1;
    w->pos += len; /* st_writer_finish sets the file size, so trailing holes exist too */
    return 0;
}

/* ---- threaded fill -------------------------------------------------------------------------- */

/* Workers (the caller's thread among them) claim chunks in order, fill them into their own
 * buffer and write them at their place in the file. */
typedef struct fill_job {
    st_writer *w;
    size_t index;
    st_fill_fn fn;
    void *ctx;
    uint64_t nbytes, at;  /* tensor size and its file offset */
    size_t nchunks, next_claim;
    bool failed;
    m2o_err err;
    pthread_mutex_t mu;
} fill_job;

static int fill_chunk(fill_job *j, size_t c, uint8_t *buf, m2o_err *err)
{
    uint64_t off = (uint64_t)c * ST_WRITER_CHUNK;
    size_t len = (size_t)(j->nbytes - off < ST_WRITER_CHUNK ? j->nbytes - off : ST_WRITER_CHUNK);
    if (j->fn(j->ctx, j->index, off, buf, len, err))
        return -1;
    return write_at(j->w, buf, len, j->at + off, err);
}

static void fill_worker(void *arg)
{
    fill_job *j = arg;
    m2o_err e = {{0}};
    uint8_t *buf = m2o_malloc(ST_WRITER_CHUNK, &e);
    pthread_mutex_lock(&j->mu);
    if (!buf) {
        if (!j->failed)
            j->err = e;
        j->failed = true;
    }
    while (!j->failed && j->next_claim < j->nchunks) {
        size_t c = j->next_claim++;
        pthread_mutex_unlock(&j->mu);
        int rc = fill_chunk(j, c, buf, &e);
        pthread_mutex_lock(&j->mu);
        if (rc && !j->failed) {
            j->failed = true;
            j->err = e;
        }
    }
    pthread_mutex_unlock(&j->mu);
    free(buf);
}

static int fill_tensor_chunks(st_writer *w, size_t index, st_fill_fn fn, void *ctx, m2o_err *err)
{
    const st_wtensor *t = &w->t[index];
    fill_job j = {.w = w, .index = index, .fn = fn, .ctx = ctx, .nbytes = t->end - t->begin,
                  .at = data_at(w, t->begin)};
    j.nchunks = (size_t)((j.nbytes + ST_WRITER_CHUNK - 1) / ST_WRITER_CHUNK);
    int workers = w->threads < (int)j.nchunks ? w->threads : (int)j.nchunks;
    pthread_mutex_init(&j.mu, NULL);
    m2o_run_workers(workers, fill_worker, &j);
    pthread_mutex_destroy(&j.mu);
    if (j.failed && err)
        *err = j.err;
    return j.failed ? -1 : 0;
}

int st_writer_fill(st_writer *w, size_t index, st_fill_fn fn, void *ctx, m2o_err *err)
{
    if (index >= w->count)
        return m2o_fail(err, "%s: st_writer_fill of tensor %zu, only %zu declared", w->path, index,
                        w->count);
    const st_wtensor *t = &w->t[index];
    if (w->fd < 0 || w->pos != t->begin)
        return m2o_fail(err, "%s: tensor %s filled out of order (data position %" PRIu64
                        ", tensor starts at %" PRIu64 ")", w->path, t->name, w->pos, t->begin);
    if (t->end == t->begin) /* empty tensors have nothing to fill */
        return 0;
    if (fill_tensor_chunks(w, index, fn, ctx, err))
        return m2o_wrap(err, "tensor %s", t->name);
    w->pos = t->end;
    return 0;
}

/* ---- whole-file fill ----------------------------------------------------------------------- */

/* The file is cut into windows of ST_WRITER_CHUNK bytes at fixed file offsets; each worker builds
 * whole windows (header bytes, then pieces of every tensor the window crosses) and writes them
 * with one pwrite, through O_DIRECT when available: aligned offsets and lengths are what direct
 * I/O needs, and it keeps gigabytes of synthetic data out of the page cache. */
#define ST_DIRECT_ALIGN 4096

typedef struct window_job {
    st_writer *w;
    st_fill_fn fn;
    void *ctx;
    size_t nwindows, next_claim, windows_done;
    bool failed;
    m2o_err err;
    pthread_mutex_t mu;
    pthread_t caller;
    st_progress_fn progress;
    void *progress_ctx;
} window_job;

/* First tensor whose data ends after data position pos (tensors tile the buffer in order). */
static size_t first_tensor_ending_after(const st_writer *w, uint64_t pos)
{
    size_t lo = 0, hi = w->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (w->t[mid].end <= pos)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int build_window(window_job *j, uint64_t start, size_t len, uint8_t *buf, m2o_err *err)
{
    const st_writer *w = j->w;
    uint64_t hb = 8 + w->header_len, end = start + len;
    if (start < hb)
        memcpy(buf, w->header + start, (size_t)((end < hb ? end : hb) - start));
    uint64_t d0 = start > hb ? start - hb : 0, d1 = end - hb;
    for (size_t i = first_tensor_ending_after(w, d0); end > hb && i < w->count && w->t[i].begin < d1; i++) {
        const st_wtensor *t = &w->t[i];
        uint64_t a = t->begin > d0 ? t->begin : d0, b = t->end < d1 ? t->end : d1;
        if (b > a && j->fn(j->ctx, i, a - t->begin, buf + (hb + a - start), (size_t)(b - a), err))
            return m2o_wrap(err, "tensor %s", t->name);
    }
    return 0;
}

/* Direct write of the window rounded up to the alignment (st_writer_finish truncates the tail);
 * a refusal (EINVAL: stricter alignment, or no direct I/O after all) falls back to the cache. */
static int write_window(const st_writer *w, uint8_t *buf, size_t len, uint64_t start, m2o_err *err)
{
    if (w->dfd >= 0) {
        size_t padded = (len + ST_DIRECT_ALIGN - 1) / ST_DIRECT_ALIGN * ST_DIRECT_ALIGN;
        memset(buf + len, 0, padded - len);
        ssize_t n;
        do
            n = pwrite(w->dfd, buf, padded, (off_t)start);
        while (n < 0 && errno == EINTR);
        if (n == (ssize_t)padded)
            return 0;
        if (n >= 0 || errno != EINVAL)
            return write_fail(w, n < 0 ? errno : EIO, len, err);
    }
    return write_at(w, buf, len, start, err);
}

static void window_worker(void *arg)
{
    window_job *j = arg;
    const st_writer *w = j->w;
    uint64_t file_end = st_writer_file_size(w);
    bool is_caller = pthread_equal(pthread_self(), j->caller);
    m2o_err e = {{0}};
    void *mem = NULL;
    if (posix_memalign(&mem, ST_DIRECT_ALIGN, ST_WRITER_CHUNK) != 0)
        mem = NULL;
    pthread_mutex_lock(&j->mu);
    if (!mem && !j->failed) {
        j->failed = true;
        m2o_fail(&j->err, "writing %s: out of memory for a %zu-byte buffer", w->path, ST_WRITER_CHUNK);
    }
    while (!j->failed && j->next_claim < j->nwindows) {
        size_t k = j->next_claim++;
        pthread_mutex_unlock(&j->mu);
        uint64_t start = (uint64_t)k * ST_WRITER_CHUNK;
        size_t len = (size_t)(file_end - start < ST_WRITER_CHUNK ? file_end - start : ST_WRITER_CHUNK);
        int rc = build_window(j, start, len, mem, &e);
        if (!rc)
            rc = write_window(w, mem, len, start, &e);
        pthread_mutex_lock(&j->mu);
        if (rc && !j->failed) {
            j->failed = true;
            j->err = e;
        }
        j->windows_done++;
        if (is_caller && j->progress && !j->failed) {
            uint64_t done = (uint64_t)j->windows_done * ST_WRITER_CHUNK;
            uint64_t total = st_writer_file_size(w);
            pthread_mutex_unlock(&j->mu);
            j->progress(j->progress_ctx, done < total ? done : total, total);
            pthread_mutex_lock(&j->mu);
        }
    }
    pthread_mutex_unlock(&j->mu);
    free(mem);
}

void st_writer_use_direct_io(st_writer *w) { w->want_direct = true; }

int st_writer_fill_all(st_writer *w, st_fill_fn fn, void *ctx, st_progress_fn progress,
                       void *progress_ctx, m2o_err *err)
{
    if (w->fd < 0 || w->pos != 0)
        return m2o_fail(err, "%s: st_writer_fill_all needs a fresh file (header written, no data)",
                        w->path);
    window_job j = {.w = w, .fn = fn, .ctx = ctx, .caller = pthread_self(), .progress = progress,
                    .progress_ctx = progress_ctx};
    j.nwindows = (size_t)((st_writer_file_size(w) + ST_WRITER_CHUNK - 1) / ST_WRITER_CHUNK);
    int workers = w->threads < (int)j.nwindows ? w->threads : (int)j.nwindows;
    pthread_mutex_init(&j.mu, NULL);
    m2o_run_workers(workers, window_worker, &j);
    pthread_mutex_destroy(&j.mu);
    if (j.failed) {
        if (err)
            *err = j.err;
        return -1;
    }
    w->pos = w->data_len;
    return 0;
}

bool st_writer_is_direct(const st_writer *w) { return w->dfd >= 0; }

/* ---- end ------------------------------------------------------------------------------------ */

static void free_writer(st_writer *w)
{
    for (size_t i = 0; i < w->count; i++)
        free(w->t[i].name);
    for (size_t i = 0; i < w->nmeta; i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    free(w->t);
    free(w->meta);
    free(w->header);
    free(w->path);
    free(w->tmp_path);
    free(w);
}

int st_writer_finish(st_writer *w, m2o_err *err)
{
    int rc = 0;
    if (w->fd < 0)
        rc = m2o_fail(err, "%s: finished before the header was written", w->path);
    else if (w->pos != w->data_len)
        rc = m2o_fail(err, "%s: only %" PRIu64 " of %" PRIu64 " data bytes written (tensor %s is "
                      "incomplete)", w->path, w->pos, w->data_len, tensor_at(w, w->pos));
    /* A trailing st_writer_skip leaves the file short: extend it to its full size. */
    else if (ftruncate(w->fd, (off_t)st_writer_file_size(w)) != 0)
        rc = write_fail(w, errno, 0, err);
    if (w->dfd >= 0 && close(w->dfd) != 0 && !rc)
        rc = write_fail(w, errno, 0, err);
    if (w->fd >= 0 && close(w->fd) != 0 && !rc)
        rc = write_fail(w, errno, 0, err);
    w->fd = w->dfd = -1;
    if (!rc && rename(w->tmp_path, w->path) != 0)
        rc = m2o_fail(err, "cannot rename %s to %s: %s", w->tmp_path, w->path, strerror(errno));
    if (rc)
        unlink(w->tmp_path);
    free_writer(w);
    return rc;
}

void st_writer_abort(st_writer *w)
{
    if (!w)
        return;
    if (w->dfd >= 0)
        close(w->dfd);
    if (w->fd >= 0) {
        close(w->fd);
        unlink(w->tmp_path);
    }
    free_writer(w);
}

uint64_t st_writer_header_len(const st_writer *w) { return w->header_len; }
uint64_t st_writer_data_len(const st_writer *w) { return w->data_len; }
uint64_t st_writer_file_size(const st_writer *w) { return 8 + w->header_len + w->data_len; }
size_t st_writer_count(const st_writer *w) { return w->count; }
