/* graph_write: streams initializers into the external data file, then writes model.onnx.
 *
 * Every external initializer gets its offset in the data file up front (each at the next 64-byte
 * boundary, in graph order), so its bytes have a fixed place before any is produced. Each job
 * (one chunk of a streamed initializer or group, or one static initializer) is produced on a
 * worker thread, which also writes its bytes at their place with pwrite; the calling thread then
 * commits jobs in graph order (progress, cancellation, copies of inline tensors, write-behind).
 * The files are therefore identical for any thread count, padding included (gaps are never
 * written and read back as zeros), and memory is bounded by the jobs in flight. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/threadpool.h"
#include "onnx/graph_proto.h"
#include "onnx/quant_stats.h"

#define DATA_ALIGN 64
/* Write-behind: writeback of the data file starts every WB_KICK bytes written; once more than
 * WB_KEEP bytes are under writeback, the oldest are waited for and dropped from the page cache,
 * so a model larger than RAM does not fill the cache with its own output (it would evict the
 * checkpoint being read) and the final fsync has little left to do. */
#define WB_KICK ((uint64_t)32 << 20)
#define WB_KEEP ((uint64_t)256 << 20)

void graph_write_opts_init(graph_write_opts *o)
{
    memset(o, 0, sizeof *o);
    o->model_filename = "model.onnx";
    o->data_filename = "model.onnx.data";
    o->threads = 0;
    o->external_threshold = 1024;
    o->ir_version = 0;
    o->producer_name = "moe2onnx";
    o->producer_version = "";
}

typedef struct write_job {
    size_t init; /* a static initializer, a single streamed one, or a group's first member */
    int64_t chunk;
} write_job;

typedef struct writer {
    graph *g;
    const graph_write_opts *o;
    char *data_path, *model_path;
    int data_fd;
    uint64_t data_end;       /* size of the data file */
    uint64_t *offsets;       /* per initializer: data file offset or GRAPH_INLINE */
    uint8_t **inline_data;   /* per initializer: assembled bytes of inline streamed ones */
    write_job *jobs;
    int64_t n_jobs;
    uint64_t bytes_done, bytes_total;
    atomic_uint_least64_t *scattered; /* per initializer: bytes its scatter jobs wrote */
    pthread_mutex_t write_mu; /* see locked_pwrite */
    uint64_t written_to;     /* every external byte below this offset is written */
    uint64_t wb_started, wb_dropped; /* write-behind marks, see WB_KICK */
} writer;

static int write_error(const char *path, int e, m2o_err *err)
{
    if (e == ENOSPC || e == EDQUOT)
        return m2o_fail(err, "writing %s: %s (disk full? free some space or choose another "
                        "output directory)", path, strerror(e));
    if (e == EFBIG)
        return m2o_fail(err, "writing %s: %s (a file size limit, see ulimit -f, or the file "
                        "system's largest file; raise the limit or choose another output "
                        "directory)", path, strerror(e));
    return m2o_fail(err, "writing %s: %s", path, strerror(e));
}

static int write_all(int fd, const void *buf, size_t n, const char *path, m2o_err *err)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return write_error(path, errno, err);
        }
        if (w == 0)
            return write_error(path, ENOSPC, err);
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int pwrite_all(int fd, const void *buf, size_t n, uint64_t offset, const char *path,
                      m2o_err *err)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)offset);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return write_error(path, errno, err);
        }
        if (w == 0)
            return write_error(path, ENOSPC, err);
        p += w;
        n -= (size_t)w;
        offset += (uint64_t)w;
    }
    return 0;
}

/* Number of initializers a job fills: a group's members, else 1. */
static int job_members(const graph_init *in)
{
    return in->group_n > 0 ? in->group_n : 1;
}

/* Buffered writes to one file are serialized by the kernel anyway (the inode lock); taking
 * our own lock first makes the other workers sleep instead of spinning on the kernel's, which
 * with small pieces burned more CPU than the copies (measured: fp16 gpt-oss-20b 7.9 -> 3.6 s). */
static int locked_pwrite(writer *w, const void *buf, size_t n, uint64_t offset, m2o_err *err)
{
    pthread_mutex_lock(&w->write_mu);
    int rc = pwrite_all(w->data_fd, buf, n, offset, w->data_path, err);
    pthread_mutex_unlock(&w->write_mu);
    return rc;
}

struct graph_sink {
    writer *w;
    size_t idx;
    uint64_t written;
    bool write_failed; /* the error is the file's: reported as it is, like other writes */
};

int graph_sink_write(graph_sink *sink, uint64_t offset, const void *data, size_t len,
                     m2o_err *err)
{
    writer *w = sink->w;
    const graph_init *in = &w->g->inits[sink->idx];
    if (offset > in->nbytes || len > in->nbytes - offset)
        return m2o_fail(err, "initializer %s: piece [%llu, %llu) lies outside its %llu bytes",
                        in->name, (unsigned long long)offset,
                        (unsigned long long)(offset + len), (unsigned long long)in->nbytes);
    uint64_t at = w->offsets[sink->idx];
    if (at == GRAPH_INLINE) /* disjoint pieces: concurrent jobs never touch the same bytes */
        memcpy(w->inline_data[sink->idx] + offset, data, len);
    else if (len && locked_pwrite(w, data, len, at + offset, err)) {
        sink->write_failed = true;
        return -1;
    }
    sink->written += len;
    return 0;
}

static int produce_scatter_job(writer *w, size_t idx, int64_t job, m2o_err *err)
{
    graph_init *in = &w->g->inits[idx];
    graph_sink sink = {w, idx, 0, false};
    m2o_fail(err, "the producer failed without saying why");
    if (in->produce_scatter(in->ctx, job, &sink, err))
        return sink.write_failed ? -1
                                 : m2o_wrap(err, "initializer %s (chunk %lld of %lld)", in->name,
                                            (long long)job, (long long)in->n_chunks);
    atomic_fetch_add(&w->scattered[idx], sink.written);
    return 0;
}

/* Worker side: produce the chunk of every member, write the external ones at their place, and
 * hand the buffer to the commit only when an inline member needs a copy. */
static int produce_job(void *ctx, int64_t j, void **result, m2o_err *err)
{
    writer *w = ctx;
    size_t idx = w->jobs[j].init;
    graph_init *in = &w->g->inits[idx];
    *result = NULL;
    if (!in->streamed) {
        if (w->offsets[idx] == GRAPH_INLINE || !in->nbytes)
            return 0;
        /* a write error names the file and the fix, not the tensor (README.md, section Errors) */
        return locked_pwrite(w, in->data, (size_t)in->nbytes, w->offsets[idx], err);
    }
    int64_t chunk = w->jobs[j].chunk;
    if (in->produce_scatter)
        return produce_scatter_job(w, idx, chunk, err);
    int n = job_members(in);
    size_t total = 0;
    for (int m = 0; m < n; m++)
        total += in[m].chunk_bytes;
    uint8_t *buf = m2o_malloc(total ? total : 1, err);
    if (!buf)
        return m2o_wrap(err, "initializer %s chunk %lld", in->name, (long long)chunk);
    void *outs[GRAPH_GROUP_MAX];
    size_t pos = 0;
    for (int m = 0; m < n; m++) {
        outs[m] = buf + pos;
        pos += in[m].chunk_bytes;
    }
    m2o_fail(err, "the producer failed without saying why");
    int rc = in->produce ? in->produce(in->ctx, chunk, outs[0], err)
                         : in->produce_group(in->ctx, chunk, outs, err);
    if (rc) {
        free(buf);
        return m2o_wrap(err, "initializer %s (chunk %lld of %lld)", in->name, (long long)chunk,
                        (long long)in->n_chunks);
    }
    bool keep = false;
    for (int m = 0; m < n && !rc; m++) {
        uint64_t off = w->offsets[idx + (size_t)m];
        size_t cb = in[m].chunk_bytes;
        if (off == GRAPH_INLINE)
            keep = true;
        else if (cb)
            rc = locked_pwrite(w, outs[m], cb, off + (uint64_t)chunk * cb, err);
    }
    if (rc || !keep) {
        free(buf);
        buf = NULL;
    }
    *result = buf;
    return rc;
}

static void discard_job(void *ctx, int64_t j, void *result)
{
    (void)ctx, (void)j;
    free(result);
}

/* After the last chunk of a tensor: release its producer and report progress. */
static void finish_tensor(writer *w, graph_init *in)
{
    if (in->streamed) {
        graph_init_release_ctx(in);
        in->consumed = true;
    }
    w->bytes_done += in->nbytes;
    if (w->o->progress)
        w->o->progress(w->o->progress_user, in->name, w->bytes_done, w->bytes_total);
}

/* Starts writeback of what is newly complete and drops old written ranges from the page cache.
 * Only advice: errors surface at the final fsync. */
static void write_behind(writer *w)
{
#ifdef SYNC_FILE_RANGE_WRITE
    if (w->written_to - w->wb_started >= WB_KICK) {
        sync_file_range(w->data_fd, (off_t)w->wb_started,
                        (off_t)(w->written_to - w->wb_started), SYNC_FILE_RANGE_WRITE);
        w->wb_started = w->written_to;
    }
    if (w->wb_started - w->wb_dropped > WB_KEEP) {
        uint64_t to = w->wb_started - WB_KEEP / 2, len = to - w->wb_dropped;
        sync_file_range(w->data_fd, (off_t)w->wb_dropped, (off_t)len,
                        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                            SYNC_FILE_RANGE_WAIT_AFTER);
        posix_fadvise(w->data_fd, (off_t)w->wb_dropped, (off_t)len, POSIX_FADV_DONTNEED);
        w->wb_dropped = to;
    }
#else
    (void)w;
#endif
}

/* Advances written_to past the bytes this job completed: the chunks of a group's first member
 * as they come, the other members (placed right after it) when the group's last chunk is in. */
static void advance_written(writer *w, size_t idx, int64_t chunk)
{
    const graph_init *in = &w->g->inits[idx];
    int n = job_members(in);
    bool last = !in->streamed || chunk == in->n_chunks - 1;
    for (int m = last ? n - 1 : 0; m >= 0; m--) {
        uint64_t off = w->offsets[idx + (size_t)m];
        if (off == GRAPH_INLINE)
            continue;
        uint64_t end = last ? off + in[m].nbytes
                            : off + (uint64_t)(chunk + 1) * in[m].chunk_bytes;
        if (end > w->written_to)
            w->written_to = end;
        break;
    }
    write_behind(w);
}

static int commit_job(void *ctx, int64_t j, void *result, m2o_err *err)
{
    writer *w = ctx;
    size_t idx = w->jobs[j].init;
    int64_t chunk = w->jobs[j].chunk;
    graph_init *in = &w->g->inits[idx];
    int n = job_members(in);
    int rc = 0;
    if (w->o->cancelled && w->o->cancelled(w->o->progress_user)) {
        rc = m2o_fail(err, "cancelled while writing initializer %s; partial output removed",
                      in->name);
    } else if (result) {
        /* Inline streamed members are assembled here; static inline ones are packed from the
         * graph's own bytes. */
        size_t pos = 0;
        for (int m = 0; m < n && !rc; m++) {
            size_t i = idx + (size_t)m, cb = in[m].chunk_bytes;
            if (w->offsets[i] == GRAPH_INLINE) {
                if (!w->inline_data[i])
                    w->inline_data[i] = m2o_malloc((size_t)in[m].nbytes ? (size_t)in[m].nbytes
                                                                        : 1, err);
                if (!w->inline_data[i])
                    rc = m2o_wrap(err, "initializer %s", in[m].name);
                else if (cb)
                    memcpy(w->inline_data[i] + (size_t)chunk * cb, (uint8_t *)result + pos, cb);
            }
            pos += cb;
        }
    }
    free(result);
    if (rc)
        return rc;
    if (in->produce_scatter && chunk == in->n_chunks - 1 &&
        atomic_load(&w->scattered[idx]) != in->nbytes)
        return m2o_fail(err, "initializer %s: its jobs wrote %llu of its %llu bytes (internal: "
                             "a scattered producer must write every byte once)",
                        in->name, (unsigned long long)atomic_load(&w->scattered[idx]),
                        (unsigned long long)in->nbytes);
    advance_written(w, idx, chunk);
    if (!in->streamed || chunk == in->n_chunks - 1) {
        for (int m = 0; m < n; m++)
            finish_tensor(w, &in[m]);
    } else if (w->o->progress && w->o->progress_chunks) {
        uint64_t partial = 0;
        for (int m = 0; m < n; m++)
            partial += (uint64_t)(chunk + 1) * in[m].chunk_bytes;
        if (in->produce_scatter)
            partial = in->nbytes / (uint64_t)in->n_chunks * (uint64_t)(chunk + 1);
        w->o->progress(w->o->progress_user, in->name, w->bytes_done + partial, w->bytes_total);
    }
    return 0;
}

/* Assigns each initializer its place and lists the jobs in graph order: one per chunk of a
 * single streamed initializer or group (members after the first have no jobs of their own), one
 * per static initializer. */
static int plan(writer *w, m2o_err *err)
{
    graph *g = w->g;
    w->offsets = m2o_calloc(g->n_inits, sizeof *w->offsets, err);
    w->inline_data = m2o_calloc(g->n_inits, sizeof *w->inline_data, err);
    w->scattered = m2o_calloc(g->n_inits, sizeof *w->scattered, err);
    if (!w->offsets || !w->inline_data || !w->scattered)
        return -1;
    for (size_t i = 0; i < g->n_inits; i++)
        atomic_init(&w->scattered[i], 0);
    uint64_t end = 0;
    for (size_t i = 0; i < g->n_inits; i++) {
        const graph_init *in = &g->inits[i];
        if (!in->streamed || in->leader == i)
            w->n_jobs += in->streamed ? in->n_chunks : 1;
        w->bytes_total += in->nbytes;
        if (in->nbytes < w->o->external_threshold) {
            w->offsets[i] = GRAPH_INLINE;
            /* scatter jobs write their pieces straight into it, concurrently */
            if (in->produce_scatter &&
                !(w->inline_data[i] = m2o_calloc(1, (size_t)in->nbytes + 1, err)))
                return -1;
            continue;
        }
        w->offsets[i] = (end + DATA_ALIGN - 1) / DATA_ALIGN * DATA_ALIGN;
        end = w->offsets[i] + in->nbytes;
    }
    w->data_end = end;
    w->jobs = m2o_calloc(w->n_jobs ? (size_t)w->n_jobs : 1, sizeof *w->jobs, err);
    if (!w->jobs)
        return -1;
    int64_t k = 0;
    for (size_t i = 0; i < g->n_inits; i++) {
        const graph_init *in = &g->inits[i];
        if (in->streamed && in->leader != i)
            continue;
        int64_t chunks = in->streamed ? in->n_chunks : 1;
        for (int64_t c = 0; c < chunks; c++)
            w->jobs[k++] = (write_job){i, c};
    }
    return 0;
}

static char *join_path(const char *dir, const char *name, m2o_err *err)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = m2o_malloc(n, err);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* A file name inside the output directory: the external data location must be relative. */
static int check_file_name(const char *what, const char *name, m2o_err *err)
{
    if (!name || !name[0] || strchr(name, '/') || strcmp(name, ".") == 0 ||
        strcmp(name, "..") == 0)
        return m2o_fail(err, "graph_write: %s \"%s\" must be a plain file name inside the output "
                        "directory", what, name ? name : "(null)");
    return 0;
}

static int sync_and_close(int *fd, const char *path, m2o_err *err)
{
    int rc = 0;
    if (fsync(*fd) != 0)
        rc = write_error(path, errno, err);
    if (close(*fd) != 0 && !rc)
        rc = write_error(path, errno, err);
    *fd = -1;
    return rc;
}

static int open_output(const char *path, m2o_err *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        m2o_fail(err, "creating %s: %s (does the output directory exist and is it writable?)",
                 path, strerror(errno));
    return fd;
}

static int resolve_ir_version(const graph *g, int64_t asked, int64_t *out, m2o_err *err)
{
    bool e8m0 = graph_uses_elem_type(g, ONNX_FLOAT8E8M0);
    if (asked == 0) {
        *out = e8m0 ? 11 : 10;
        return 0;
    }
    if (e8m0 && asked < 11)
        return m2o_fail(err, "graph %s has FLOAT8E8M0 tensors, which need ONNX IR version 11 or "
                        "later, but ir_version %lld was asked for", g->name, (long long)asked);
    *out = asked;
    return 0;
}

static int write_model_file(writer *w, int64_t ir_version, m2o_err *err)
{
    graph_proto_layout layout = {
        .offsets = w->offsets,
        .inline_data = (const uint8_t *const *)w->inline_data,
        .data_location = w->o->data_filename,
        .ir_version = ir_version,
        .producer_name = w->o->producer_name,
        .producer_version = w->o->producer_version,
    };
    uint8_t *buf = NULL;
    size_t len = 0;
    if (graph_pack_model(w->g, &layout, &buf, &len, err))
        return -1;
    int fd = open_output(w->model_path, err);
    int rc = fd < 0 ? -1 : write_all(fd, buf, len, w->model_path, err);
    if (fd >= 0 && !rc)
        rc = sync_and_close(&fd, w->model_path, err);
    if (fd >= 0)
        close(fd);
    free(buf);
    return rc;
}

/* Makes the new directory entries durable too; failure here is not worth failing the export
 * over on file systems that refuse fsync on directories. */
static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

/* Both files are created inside dir, so their names must be plain and differ. */
static int check_file_names(const graph_write_opts *o, m2o_err *err)
{
    if (check_file_name("model_filename", o->model_filename, err) ||
        check_file_name("data_filename", o->data_filename, err))
        return -1;
    if (strcmp(o->model_filename, o->data_filename) == 0)
        return m2o_fail(err, "graph_write: model and data file are both named \"%s\"",
                        o->model_filename);
    return 0;
}

/* Creates the data file (*created then says a failure must remove it) and streams every
 * planned job into it on the ordered pool. */
static int write_data_file(writer *w, bool *created, m2o_err *err)
{
    int threads = w->o->threads > 0 ? w->o->threads : m2o_cpu_count();
    w->data_fd = open_output(w->data_path, err);
    if (w->data_fd < 0)
        return -1;
    *created = true;
    if (m2o_ordered_run(threads, 2 * threads, w->n_jobs, produce_job, commit_job, discard_job, w,
                        err))
        return -1;
    /* Gaps are never written: the size must still reach the end of the last tensor. */
    if (ftruncate(w->data_fd, (off_t)w->data_end) != 0)
        return write_error(w->data_path, errno, err);
    return sync_and_close(&w->data_fd, w->data_path, err);
}

static void writer_free(writer *w)
{
    if (w->inline_data)
        for (size_t i = 0; i < w->g->n_inits; i++)
            free(w->inline_data[i]);
    free(w->inline_data);
    free(w->scattered);
    free(w->offsets);
    free(w->jobs);
    free(w->data_path);
    free(w->model_path);
}

int graph_write(graph *g, const char *dir, const graph_write_opts *opts, m2o_err *err)
{
    graph_write_opts defaults;
    if (!opts) {
        graph_write_opts_init(&defaults);
        opts = &defaults;
    }
    if (check_file_names(opts, err) || graph_check(g, err))
        return -1;
    int64_t ir_version = 0;
    if (resolve_ir_version(g, opts->ir_version, &ir_version, err))
        return -1;

    writer w = {.g = g, .o = opts, .data_fd = -1, .write_mu = PTHREAD_MUTEX_INITIALIZER};
    bool created = false;
    int rc = -1;
    w.data_path = join_path(dir, opts->data_filename, err);
    w.model_path = w.data_path ? join_path(dir, opts->model_filename, err) : NULL;
    if (w.model_path && !plan(&w, err) && !write_data_file(&w, &created, err) &&
        !write_model_file(&w, ir_version, err)) {
        sync_dir(dir);
        rc = opts->quant_stats ? graph_quant_stats_collect(g, opts->quant_stats, err) : 0;
    }
    if (w.data_fd >= 0)
        close(w.data_fd);
    if (rc && created) { /* no partial output that looks valid */
        unlink(w.data_path);
        unlink(w.model_path);
    }
    writer_free(&w);
    return rc;
}
