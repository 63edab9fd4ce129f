/* graph_write: streams initializers into the external data file, then writes model.onnx.
 *
 * Every initializer becomes one job per chunk (a static one is a single job whose "product" is
 * the graph's own copy). Jobs are produced on worker threads and committed in graph order by
 * the calling thread, which appends each external tensor at the next 64-byte boundary. Offsets
 * are therefore fixed by the graph alone, and the files are identical for any thread count. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/threadpool.h"
#include "onnx/graph_proto.h"

#define DATA_ALIGN 64

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
    size_t init;
    int64_t chunk;
} write_job;

typedef struct writer {
    graph *g;
    const graph_write_opts *o;
    char *data_path, *model_path;
    int data_fd;
    uint64_t pos;            /* bytes written to the data file so far */
    uint64_t *offsets;       /* per initializer: data file offset or GRAPH_INLINE */
    uint8_t **inline_data;   /* per initializer: assembled bytes of inline streamed ones */
    write_job *jobs;
    int64_t n_jobs;
    uint64_t bytes_done, bytes_total;
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

static int pad_to(writer *w, uint64_t offset, m2o_err *err)
{
    static const uint8_t zeros[DATA_ALIGN];
    size_t gap = (size_t)(offset - w->pos);
    if (gap && write_all(w->data_fd, zeros, gap, w->data_path, err))
        return -1;
    w->pos = offset;
    return 0;
}

static size_t job_bytes(const graph_init *in)
{
    return in->produce ? in->chunk_bytes : (size_t)in->nbytes;
}

static int produce_job(void *ctx, int64_t j, void **result, m2o_err *err)
{
    writer *w = ctx;
    graph_init *in = &w->g->inits[w->jobs[j].init];
    if (!in->produce) {
        *result = (void *)in->data; /* not owned: see discard_job */
        return 0;
    }
    int64_t chunk = w->jobs[j].chunk;
    uint8_t *buf = m2o_malloc(in->chunk_bytes, err);
    if (!buf)
        return m2o_wrap(err, "initializer %s chunk %lld", in->name, (long long)chunk);
    m2o_fail(err, "the producer failed without saying why");
    if (in->produce(in->ctx, chunk, buf, err)) {
        free(buf);
        return m2o_wrap(err, "initializer %s (chunk %lld of %lld)", in->name, (long long)chunk,
                        (long long)in->n_chunks);
    }
    *result = buf;
    return 0;
}

static void discard_job(void *ctx, int64_t j, void *result)
{
    writer *w = ctx;
    if (j >= 0 && w->g->inits[w->jobs[j].init].produce)
        free(result);
}

/* After the last chunk of a tensor: release its producer and report progress. */
static void finish_tensor(writer *w, graph_init *in)
{
    if (in->produce) {
        graph_init_release_ctx(in);
        in->consumed = true;
    }
    w->bytes_done += in->nbytes;
    if (w->o->progress)
        w->o->progress(w->o->progress_user, in->name, w->bytes_done, w->bytes_total);
}

static int commit_job(void *ctx, int64_t j, void *result, m2o_err *err)
{
    writer *w = ctx;
    size_t idx = w->jobs[j].init;
    int64_t chunk = w->jobs[j].chunk;
    graph_init *in = &w->g->inits[idx];
    size_t n = job_bytes(in);
    int rc = 0;
    if (w->o->cancelled && w->o->cancelled(w->o->progress_user)) {
        rc = m2o_fail(err, "cancelled while writing initializer %s; partial output removed",
                      in->name);
    } else if (w->offsets[idx] == GRAPH_INLINE) {
        /* Only streamed tensors get here with a copy to make; static ones are packed from the
         * graph's own bytes. */
        if (in->produce) {
            if (!w->inline_data[idx])
                w->inline_data[idx] = m2o_malloc((size_t)in->nbytes, err);
            if (!w->inline_data[idx])
                rc = m2o_wrap(err, "initializer %s", in->name);
            else if (n)
                memcpy(w->inline_data[idx] + (size_t)chunk * in->chunk_bytes, result, n);
        }
    } else {
        if (chunk == 0)
            rc = pad_to(w, w->offsets[idx], err);
        if (!rc && n)
            rc = write_all(w->data_fd, result, n, w->data_path, err);
        w->pos += n;
    }
    if (in->produce)
        free(result);
    if (!rc && (!in->produce || chunk == in->n_chunks - 1))
        finish_tensor(w, in);
    return rc;
}

/* Assigns each initializer its place and lists the jobs in graph order. */
static int plan(writer *w, m2o_err *err)
{
    graph *g = w->g;
    w->offsets = m2o_calloc(g->n_inits, sizeof *w->offsets, err);
    w->inline_data = m2o_calloc(g->n_inits, sizeof *w->inline_data, err);
    if (!w->offsets || !w->inline_data)
        return -1;
    uint64_t end = 0;
    for (size_t i = 0; i < g->n_inits; i++) {
        const graph_init *in = &g->inits[i];
        w->n_jobs += in->produce ? in->n_chunks : 1;
        w->bytes_total += in->nbytes;
        if (in->nbytes < w->o->external_threshold) {
            w->offsets[i] = GRAPH_INLINE;
            continue;
        }
        w->offsets[i] = (end + DATA_ALIGN - 1) / DATA_ALIGN * DATA_ALIGN;
        end = w->offsets[i] + in->nbytes;
    }
    w->jobs = m2o_calloc((size_t)w->n_jobs, sizeof *w->jobs, err);
    if (!w->jobs)
        return -1;
    int64_t k = 0;
    for (size_t i = 0; i < g->n_inits; i++) {
        int64_t chunks = g->inits[i].produce ? g->inits[i].n_chunks : 1;
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

int graph_write(graph *g, const char *dir, const graph_write_opts *opts, m2o_err *err)
{
    graph_write_opts defaults;
    if (!opts) {
        graph_write_opts_init(&defaults);
        opts = &defaults;
    }
    if (check_file_name("model_filename", opts->model_filename, err) ||
        check_file_name("data_filename", opts->data_filename, err))
        return -1;
    if (strcmp(opts->model_filename, opts->data_filename) == 0)
        return m2o_fail(err, "graph_write: model and data file are both named \"%s\"",
                        opts->model_filename);
    if (graph_check(g, err))
        return -1;
    int64_t ir_version = 0;
    if (resolve_ir_version(g, opts->ir_version, &ir_version, err))
        return -1;

    writer w = {.g = g, .o = opts, .data_fd = -1};
    int threads = opts->threads > 0 ? opts->threads : m2o_cpu_count();
    bool created = false;
    int rc = -1;
    w.data_path = join_path(dir, opts->data_filename, err);
    w.model_path = w.data_path ? join_path(dir, opts->model_filename, err) : NULL;
    if (!w.model_path || plan(&w, err))
        goto done;
    w.data_fd = open_output(w.data_path, err);
    if (w.data_fd < 0)
        goto done;
    created = true;
    if (m2o_ordered_run(threads, 2 * threads, w.n_jobs, produce_job, commit_job, discard_job, &w,
                        err) ||
        sync_and_close(&w.data_fd, w.data_path, err) || write_model_file(&w, ir_version, err))
        goto done;
    sync_dir(dir);
    rc = 0;
done:
    if (w.data_fd >= 0)
        close(w.data_fd);
    if (rc && created) {
        unlink(w.data_path);
        unlink(w.model_path);
    }
    if (w.inline_data)
        for (size_t i = 0; i < g->n_inits; i++)
            free(w.inline_data[i]);
    free(w.inline_data);
    free(w.offsets);
    free(w.jobs);
    free(w.data_path);
    free(w.model_path);
    return rc;
}
