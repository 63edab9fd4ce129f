/* The streaming safetensors writer and the synthetic checkpoint writer: exact header bytes,
 * chunked multi-threaded fills, error messages, value distributions, the tiny presets against the
 * real Hub-layout fixtures, full-size layouts (sparse, so no data is written), determinism. */
#include "test.h"

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arch/family.h"
#include "arch/model_desc.h"
#include "checkpoint/safetensors.h"
#include "checkpoint/st_writer.h"
#include "common/half.h"
#include "synth/synth.h"
#include "synth/synth_internal.h"

/* ---- helpers -------------------------------------------------------------------------------- */

/* test.h's CHECK_BYTES_EQ does not compile under -Wshadow (its n_ meets FAIL_AT's n_). */
static size_t first_difference(const void *a, const void *b, size_t n)
{
    const uint8_t *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i])
            return i;
    return SIZE_MAX;
}
#define CHECK_SAME_BYTES(a, b, n)                                                                 \
    do {                                                                                          \
        size_t at_ = first_difference((a), (b), (n));                                             \
        CHECK_MSG(at_ == SIZE_MAX, "%s and %s differ at byte %zu of %zu", #a, #b, at_, (size_t)(n)); \
    } while (0)

static void make_tmpdir(char *out, size_t cap)
{
    const char *base = getenv("TMPDIR");
    snprintf(out, cap, "%s/m2o_synth_XXXXXX", base && base[0] ? base : "/tmp");
    if (!mkdtemp(out))
        out[0] = 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void remove_tree(const char *dir)
{
    if (dir[0])
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static bool file_exists(const char *dir, const char *name)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc((size_t)n + 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    if (p) {
        p[n] = 0;
        *len = (size_t)n;
    }
    return p;
}

static cJSON *read_json(const char *dir, const char *name)
{
    char p[4200];
    size_t n;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    char *text = (char *)slurp(p, &n);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    return j;
}

static long long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* Header of one safetensors file (without the data), and its length N. */
static cJSON *read_header(const char *path, uint64_t *header_len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t le[8];
    cJSON *h = NULL;
    if (fread(le, 1, 8, f) == 8) {
        uint64_t n = 0;
        for (int i = 0; i < 8; i++)
            n |= (uint64_t)le[i] << (8 * i);
        char *text = n < (1u << 26) ? malloc(n + 1) : NULL;
        if (text && fread(text, 1, n, f) == n) {
            text[n] = 0;
            h = cJSON_ParseWithLength(text, n);
            *header_len = n;
        }
        free(text);
    }
    fclose(f);
    return h;
}

static int64_t json_i64(const cJSON *j) { return j ? (int64_t)cJSON_GetNumberValue(j) : -1; }

/* Checks one file's structure (N % 8 == 0, offsets tile the buffer in order of appearance,
 * 8 + N + buffer == size) and adds name → {dtype, shape, file, begin, end} to *layout. */
static void collect_file(const char *dir, const char *name, cJSON *layout, uint64_t *tensor_bytes)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    uint64_t n = 0;
    cJSON *h = read_header(path, &n);
    CHECK_MSG(h, "%.400s: unreadable header", path);
    CHECK_MSG(n % 8 == 0, "%.400s: header length %llu not a multiple of 8", path, (unsigned long long)n);
    uint64_t pos = 0;
    cJSON *t;
    cJSON_ArrayForEach(t, h) {
        if (!strcmp(t->string, "__metadata__"))
            continue;
        cJSON *off = cJSON_GetObjectItemCaseSensitive(t, "data_offsets");
        int64_t b = json_i64(cJSON_GetArrayItem(off, 0)), e = json_i64(cJSON_GetArrayItem(off, 1));
        CHECK_MSG(b == (int64_t)pos && e >= b, "%.400s: %.200s at [%lld, %lld), expected to start at %llu",
                  path, t->string, (long long)b, (long long)e, (unsigned long long)pos);
        pos = (uint64_t)e;
        CHECK_MSG(!cJSON_GetObjectItemCaseSensitive(layout, t->string), "tensor %s appears twice", t->string);
        cJSON *entry = cJSON_CreateObject();
        cJSON_AddItemToObject(entry, "dtype", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(t, "dtype"), 1));
        cJSON_AddItemToObject(entry, "shape", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(t, "shape"), 1));
        cJSON_AddStringToObject(entry, "file", name);
        cJSON_AddNumberToObject(entry, "begin", (double)(8 + n + (uint64_t)b));
        cJSON_AddNumberToObject(entry, "end", (double)(8 + n + (uint64_t)e));
        cJSON_AddItemToObject(layout, t->string, entry);
    }
    cJSON_Delete(h);
    CHECK_MSG(file_size(path) == (long long)(8 + n + pos), "%.400s: size %lld, header says %llu", path,
              file_size(path), (unsigned long long)(8 + n + pos));
    *tensor_bytes += pos;
}

/* Every model*.safetensors in dir, checked and merged into one name → entry object. */
static cJSON *collect_layout(const char *dir, int *nfiles, uint64_t *tensor_bytes)
{
    cJSON *layout = cJSON_CreateObject();
    DIR *d = opendir(dir);
    struct dirent *e;
    *nfiles = 0;
    *tensor_bytes = 0;
    while (d && (e = readdir(d)) && !g_failed_now) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "model", 5) || len < 12 || strcmp(e->d_name + len - 12, ".safetensors"))
            continue;
        collect_file(dir, e->d_name, layout, tensor_bytes);
        (*nfiles)++;
    }
    if (d)
        closedir(d);
    return layout;
}

/* Same tensor names, dtypes and shapes in both layouts. */
static void check_same_layout(const cJSON *got, const cJSON *want)
{
    CHECK_EQ(cJSON_GetArraySize(got), cJSON_GetArraySize(want));
    const cJSON *w;
    cJSON_ArrayForEach(w, want) {
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(got, w->string);
        CHECK_MSG(g, "tensor %s missing", w->string);
        CHECK_MSG(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(g, "dtype"), cJSON_GetObjectItemCaseSensitive(w, "dtype"), 1),
                  "%s: dtype differs", w->string);
        CHECK_MSG(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(g, "shape"), cJSON_GetObjectItemCaseSensitive(w, "shape"), 1),
                  "%s: shape differs", w->string);
    }
}

static void check_shape(const cJSON *layout, const char *name, const char *dtype, int ndim,
                        const int64_t *shape)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(layout, name);
    CHECK_MSG(t, "tensor %s missing", name);
    CHECK_MSG(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(t, "dtype")), dtype), "%s: dtype", name);
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(t, "shape");
    CHECK_MSG(cJSON_GetArraySize(s) == ndim, "%s: rank %d, expected %d", name, cJSON_GetArraySize(s), ndim);
    for (int d = 0; d < ndim; d++)
        CHECK_MSG(json_i64(cJSON_GetArrayItem(s, d)) == shape[d], "%s: dim %d is %lld, expected %lld",
                  name, d, (long long)json_i64(cJSON_GetArrayItem(s, d)), (long long)shape[d]);
}

static int synth_to(const char *preset, const char *dir, int layers, uint64_t shard, uint64_t seed,
                    int threads, bool sparse, m2o_err *err)
{
    synth_opts o = {.preset = preset, .out_dir = dir, .num_layers = layers, .shard_bytes = shard,
                    .seed = seed, .threads = threads, .sparse = sparse};
    return synth_write(&o, err);
}

/* ---- st_writer ------------------------------------------------------------------------------ */

TEST(st_writer_writes_exact_header_and_data)
{
    char dir[512], path[600];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    m2o_err err = {{0}};
    st_writer *w;
    CHECK(st_writer_open(path, 1, &w, &err) == 0);
    CHECK(st_writer_metadata(w, "format", "pt", &err) == 0);
    CHECK(st_writer_declare(w, "x.w", ST_F32, 2, (int64_t[]){2, 3}, &err) == 0);
    CHECK(st_writer_declare(w, "q\"b", ST_U8, 1, (int64_t[]){5}, &err) == 0);
    CHECK(st_writer_declare(w, "s", ST_BF16, 0, NULL, &err) == 0);
    CHECK(st_writer_begin_data(w, &err) == 0);
    float f[6] = {1, 2, 3, 4, 5, -6};
    uint8_t tail[7] = {9, 8, 7, 6, 5, 0x80, 0x3f}; /* 5 U8 then BF16 1.0 */
    CHECK(st_writer_write(w, f, sizeof f, &err) == 0);
    CHECK(st_writer_write(w, tail, sizeof tail, &err) == 0);
    CHECK_EQ(st_writer_data_len(w), 31);
    CHECK(st_writer_finish(w, &err) == 0);

    const char *json = "{\"__metadata__\":{\"format\":\"pt\"},"
                       "\"x.w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                       "\"q\\\"b\":{\"dtype\":\"U8\",\"shape\":[5],\"data_offsets\":[24,29]},"
                       "\"s\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[29,31]}}";
    size_t jn = strlen(json), padded = (jn + 7) / 8 * 8, len = 0;
    uint8_t want[512] = {0};
    for (int i = 0; i < 8; i++)
        want[i] = (uint8_t)(padded >> (8 * i));
    memcpy(want + 8, json, jn);
    memset(want + 8 + jn, ' ', padded - jn);
    memcpy(want + 8 + padded, f, sizeof f);
    memcpy(want + 8 + padded + sizeof f, tail, sizeof tail);
    uint8_t *got = slurp(path, &len);
    CHECK(got);
    CHECK_EQ(len, 8 + padded + 31);
    CHECK_SAME_BYTES(got, want, len);
    free(got);
    CHECK(!file_exists(dir, "a.safetensors.partial"));
    remove_tree(dir);
}

/* Bytes that depend only on (tensor, offset), as st_fill_fn requires. */
static uint8_t pattern(size_t index, uint64_t off) { return (uint8_t)(off * 131 + (off >> 13) + index * 7); }

static int fill_pattern(void *ctx, size_t index, uint64_t offset, uint8_t *buf, size_t len, m2o_err *err)
{
    (void)ctx, (void)err;
    for (size_t i = 0; i < len; i++)
        buf[i] = pattern(index, offset + i);
    return 0;
}

static int fill_fails(void *ctx, size_t index, uint64_t offset, uint8_t *buf, size_t len, m2o_err *err)
{
    (void)ctx, (void)index;
    if (offset >= ST_WRITER_CHUNK)
        return m2o_fail(err, "producer gave up at %llu", (unsigned long long)offset);
    memset(buf, 0, len); /* the chunks before the failure are written: define their bytes */
    return 0;
}

TEST(st_writer_threaded_fill_writes_every_chunk_in_place)
{
    char dir[512], path[600];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/big.safetensors", dir);
    m2o_err err = {{0}};
    st_writer *w;
    const int64_t big = 5 * (int64_t)ST_WRITER_CHUNK / 2 + 3, small = 1000;
    CHECK(st_writer_open(path, 3, &w, &err) == 0);
    CHECK(st_writer_declare(w, "small", ST_U8, 1, &small, &err) == 0);
    CHECK(st_writer_declare(w, "big", ST_U8, 1, &big, &err) == 0);
    CHECK(st_writer_declare(w, "empty", ST_F32, 2, (int64_t[]){0, 4}, &err) == 0);
    CHECK(st_writer_begin_data(w, &err) == 0);
    uint64_t data_at = 8 + st_writer_header_len(w);
    CHECK_MSG(st_writer_fill(w, 1, fill_pattern, NULL, &err) != 0, "out-of-order fill accepted");
    CHECK_STR_CONTAINS(err.msg, "out of order");
    for (size_t i = 0; i < 3; i++)
        CHECK_MSG(st_writer_fill(w, i, fill_pattern, NULL, &err) == 0, "%s", err.msg);
    CHECK(st_writer_finish(w, &err) == 0);
    size_t len = 0;
    uint8_t *got = slurp(path, &len);
    CHECK(got);
    CHECK_EQ(len, data_at + (uint64_t)(small + big));
    size_t bad = SIZE_MAX;
    for (int64_t i = 0; i < small && bad == SIZE_MAX; i++)
        if (got[data_at + i] != pattern(0, (uint64_t)i))
            bad = (size_t)i;
    for (int64_t i = 0; i < big && bad == SIZE_MAX; i++)
        if (got[data_at + small + i] != pattern(1, (uint64_t)i))
            bad = (size_t)(small + i);
    free(got);
    CHECK_MSG(bad == SIZE_MAX, "data byte %zu differs from the producer's", bad);
    remove_tree(dir);
}

/* The whole-file fill: windows cross the header and tensor boundaries (an empty tensor
 * included), through O_DIRECT and through the page cache, with several threads. */
static void check_fill_all(bool direct, int threads)
{
    char dir[512], path[600];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    m2o_err err = {{0}};
    st_writer *w;
    const int64_t n[4] = {1000, 0, 5 * (int64_t)ST_WRITER_CHUNK / 2 + 3, 7};
    const st_dtype dt[4] = {ST_U8, ST_F32, ST_U8, ST_BF16};
    const char *names[4] = {"a", "e", "big", "c"};
    CHECK(st_writer_open(path, threads, &w, &err) == 0);
    if (direct)
        st_writer_use_direct_io(w);
    for (int i = 0; i < 4; i++)
        CHECK(st_writer_declare(w, names[i], dt[i], 1, &n[i], &err) == 0);
    CHECK(st_writer_begin_data(w, &err) == 0);
    uint64_t data_at = 8 + st_writer_header_len(w), size = st_writer_file_size(w);
    CHECK_MSG(st_writer_fill_all(w, fill_pattern, NULL, NULL, NULL, &err) == 0, "%s", err.msg);
    CHECK(st_writer_finish(w, &err) == 0);
    size_t len = 0;
    uint8_t *got = slurp(path, &len);
    CHECK(got);
    CHECK_EQ(len, size);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)got[i] << (8 * i);
    CHECK_EQ(8 + hlen, data_at);
    CHECK(got[data_at - 1] == ' ' || got[data_at - 1] == '}');
    size_t bad = SIZE_MAX;
    uint64_t pos = data_at;
    for (int i = 0; i < 4 && bad == SIZE_MAX; i++) {
        uint64_t nbytes = (uint64_t)n[i] * (dt[i] == ST_BF16 ? 2 : dt[i] == ST_F32 ? 4 : 1);
        for (uint64_t k = 0; k < nbytes && bad == SIZE_MAX; k++)
            if (got[pos + k] != pattern((size_t)i, k))
                bad = (size_t)(pos + k);
        pos += nbytes;
    }
    free(got);
    CHECK_MSG(bad == SIZE_MAX, "file byte %zu differs from the producer's (direct %d)", bad, direct);
    remove_tree(dir);
}

TEST(st_writer_fill_all_direct_and_cached)
{
    check_fill_all(true, 3);
    check_fill_all(false, 2);
    check_fill_all(true, 1);
}

TEST(st_writer_reports_misuse_and_leaves_no_file)
{
    char dir[512], path[600];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/x.safetensors", dir);
    m2o_err err = {{0}};
    st_writer *w;
    int64_t four = 4;

    CHECK(st_writer_open(path, 2, &w, &err) == 0);
    CHECK(st_writer_declare(w, "a", ST_F32, 1, &four, &err) == 0);
    CHECK(st_writer_declare(w, "a", ST_F32, 1, &four, &err) == 0);
    CHECK(st_writer_begin_data(w, &err) != 0);
    CHECK_STR_CONTAINS(err.msg, "tensor a declared twice");
    st_writer_abort(w);

    CHECK(st_writer_open(path, 2, &w, &err) == 0);
    CHECK(st_writer_declare(w, "a", ST_F32, 1, &four, &err) == 0);
    CHECK(st_writer_declare(w, "b", ST_F32, 1, &four, &err) == 0);
    CHECK(st_writer_begin_data(w, &err) == 0);
    CHECK(st_writer_declare(w, "c", ST_F32, 1, &four, &err) != 0);
    uint8_t buf[40] = {0};
    CHECK(st_writer_write(w, buf, 20, &err) == 0);
    CHECK(st_writer_write(w, buf, 13, &err) != 0);
    CHECK_STR_CONTAINS(err.msg, "past the end");
    CHECK(st_writer_finish(w, &err) != 0);
    CHECK_STR_CONTAINS(err.msg, "only 20 of 32 data bytes written (tensor b is incomplete)");
    CHECK(!file_exists(dir, "x.safetensors"));
    CHECK(!file_exists(dir, "x.safetensors.partial"));

    /* A failing producer stops the fill with its own message and the tensor's name. */
    const int64_t big = 3 * (int64_t)ST_WRITER_CHUNK;
    CHECK(st_writer_open(path, 2, &w, &err) == 0);
    CHECK(st_writer_declare(w, "big", ST_U8, 1, &big, &err) == 0);
    CHECK(st_writer_begin_data(w, &err) == 0);
    CHECK(st_writer_fill(w, 0, fill_fails, NULL, &err) != 0);
    CHECK_STR_CONTAINS(err.msg, "tensor big: producer gave up at");
    st_writer_abort(w);
    CHECK(!file_exists(dir, "x.safetensors.partial"));

    char nodir[700];
    snprintf(nodir, sizeof nodir, "%s/missing/y.safetensors", dir);
    CHECK(st_writer_open(nodir, 1, &w, &err) == 0);
    CHECK(st_writer_begin_data(w, &err) != 0);
    CHECK_STR_CONTAINS(err.msg, "missing/y.safetensors.partial");
    st_writer_abort(w);
    remove_tree(dir);
}

/* A full disk and a file-size limit fail the same way in write(); the limit is testable. */
TEST(st_writer_write_error_names_the_file)
{
    char dir[512], path[600];
    make_tmpdir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/limited.safetensors", dir);
    struct rlimit old;
    CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0);
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = {.rlim_cur = 1 << 20, .rlim_max = old.rlim_max};
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    m2o_err err = {{0}};
    st_writer *w;
    const int64_t big = 3 * (int64_t)ST_WRITER_CHUNK;
    int rc = st_writer_open(path, 2, &w, &err);
    if (!rc && !(rc = st_writer_declare(w, "t", ST_U8, 1, &big, &err)) && !(rc = st_writer_begin_data(w, &err)))
        rc = st_writer_fill(w, 0, fill_pattern, NULL, &err);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, old_handler);
    CHECK(rc != 0);
    st_writer_abort(w);
    CHECK_STR_CONTAINS(err.msg, "tensor t: writing ");
    CHECK_STR_CONTAINS(err.msg, "limited.safetensors");
    CHECK_STR_CONTAINS(err.msg, strerror(EFBIG));
    CHECK(!file_exists(dir, "limited.safetensors.partial"));
    remove_tree(dir);
}

/* ---- values --------------------------------------------------------------------------------- */

TEST(synth_fill_is_independent_of_chunking)
{
    synth_tables *tabs = NULL;
    m2o_err err;
    CHECK(synth_tables_create(&tabs, &err) == 0);
    const synth_value_kind kinds[3] = {SYNTH_BF16, SYNTH_MXFP4_BLOCKS, SYNTH_MXFP4_SCALES};
    enum { L = 10007 };
    static uint8_t whole[L], pieces[L];
    for (int k = 0; k < 3; k++) {
        synth_values v = {.kind = kinds[k], .table = tabs->bf16[SYNTH_DIST_WEIGHT],
                          .key = synth_tensor_key(42, "model.layers.0.x")};
        synth_fill(&v, 0, whole, L);
        const size_t sizes[] = {1, 3, 8, 13, 64, 1000, 5};
        size_t off = 0;
        for (int i = 0; off < L; i++) {
            size_t n = sizes[i % 7] < L - off ? sizes[i % 7] : L - off;
            synth_fill(&v, off, pieces + off, n);
            off += n;
        }
        CHECK_SAME_BYTES(pieces, whole, L);
        synth_values other = v;
        other.key = synth_tensor_key(43, "model.layers.0.x");
        synth_fill(&other, 0, pieces, L);
        int same = 0;
        for (int i = 0; i < L; i++)
            same += pieces[i] == whole[i];
        CHECK_MSG(same < L / 4, "seed 43 repeats %d of %d bytes of seed 42", same, L);
    }
    free(tabs);
}

static void check_bf16_stats(const synth_tables *tabs, synth_dist dist, double mean, double sd)
{
    enum { N = 1 << 20 };
    uint8_t *buf = malloc(2 * N);
    CHECK(buf);
    synth_values v = {.kind = SYNTH_BF16, .table = tabs->bf16[dist], .key = synth_tensor_key(1, "w")};
    synth_fill(&v, 0, buf, 2 * N);
    double s = 0, s2 = 0, maxdev = 0;
    bool finite = true;
    for (int i = 0; i < N; i++) {
        float x = bf16_to_f32((uint16_t)(buf[2 * i] | buf[2 * i + 1] << 8));
        finite &= isfinite(x) != 0;
        s += x;
        s2 += (double)x * x;
        maxdev = fmax(maxdev, fabs(x - mean));
    }
    free(buf);
    double m = s / N, sdev = sqrt(s2 / N - m * m);
    CHECK(finite);
    CHECK_NEAR(m, mean, 0.01 * sd + 1e-3 * fabs(mean));
    CHECK_NEAR(sdev, sd, 0.02 * sd);
    CHECK_MSG(maxdev <= 4.4 * sd && maxdev >= 3.5 * sd, "largest deviation %g for sigma %g", maxdev, sd);
}

TEST(synth_values_have_the_stated_distributions)
{
    synth_tables *tabs = NULL;
    m2o_err err;
    CHECK(synth_tables_create(&tabs, &err) == 0);
    check_bf16_stats(tabs, SYNTH_DIST_WEIGHT, 0.0, 0.02);
    check_bf16_stats(tabs, SYNTH_DIST_NORM, 1.0, 0.02);
    check_bf16_stats(tabs, SYNTH_DIST_SINK, 0.0, 1.0);
    free(tabs);
    if (g_failed_now)
        return;

    enum { N = 1 << 18 };
    static uint8_t b[N];
    long count[256] = {0}, nib[16] = {0};
    synth_values v = {.kind = SYNTH_MXFP4_SCALES, .key = synth_tensor_key(1, "s")};
    synth_fill(&v, 0, b, N);
    for (int i = 0; i < N; i++)
        count[b[i]]++;
    for (int s = 0; s < 256; s++) {
        if (s < 118 || s > 124)
            CHECK_MSG(count[s] == 0, "scale byte %d appears %ld times", s, count[s]);
        else
            CHECK_NEAR(count[s] / (double)N, 1.0 / 7, 0.01);
    }
    v.kind = SYNTH_MXFP4_BLOCKS;
    synth_fill(&v, 0, b, N);
    for (int i = 0; i < N; i++) {
        nib[b[i] & 15]++;
        nib[b[i] >> 4]++;
    }
    for (int c = 0; c < 16; c++)
        CHECK_NEAR(nib[c] / (2.0 * N), 1.0 / 16, 0.003);
}

/* ---- presets -------------------------------------------------------------------------------- */

TEST(synth_presets_are_listed_and_validated)
{
    m2o_err err;
    CHECK_EQ(synth_preset_count(), 5);
    for (size_t i = 0; i < synth_preset_count(); i++)
        CHECK_EQ(synth_parse_preset(synth_preset_name(i), &err), (long long)i);
    CHECK(synth_parse_preset("gpt-oss-21b", &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "unknown synth preset \"gpt-oss-21b\"; valid presets: gpt-oss-20b, "
                                "gpt-oss-120b, gpt-oss-tiny, qwen3-30b-a3b, qwen3-moe-tiny");
    synth_experts ex;
    CHECK(synth_parse_experts("bf16", &ex, &err) == 0 && ex == SYNTH_EXPERTS_BF16);
    CHECK(synth_parse_experts("fp8", &ex, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "mxfp4, bf16");
    synth_summary s;
    synth_opts o = {.preset = "qwen3-30b-a3b", .out_dir = "/nonexistent", .experts = SYNTH_EXPERTS_MXFP4};
    CHECK(synth_describe(&o, &s, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "MXFP4 experts exist only for gpt-oss");
    o.experts = SYNTH_EXPERTS_PRESET;
    o.num_layers = -2;
    CHECK(synth_describe(&o, &s, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "--layers -2");
}

/* Parameter counts match the published totals: OpenAI's model card (20.91B / 116.83B) and
 * Qwen3-30B-A3B's 30,532,122,624; the byte totals follow from the dtypes. */
TEST(synth_full_size_presets_have_the_published_sizes)
{
    m2o_err err;
    synth_summary s;
    synth_opts o = {.preset = "gpt-oss-20b", .out_dir = "/x"};
    CHECK(synth_describe(&o, &s, &err) == 0);
    CHECK_EQ(s.num_params, 20914757184ll);
    CHECK_EQ(s.tensor_bytes, 13761264768ll);
    CHECK_EQ(s.num_layers, 24);
    CHECK_EQ(s.num_shards, 3);
    o.preset = "gpt-oss-120b";
    CHECK(synth_describe(&o, &s, &err) == 0);
    CHECK_EQ(s.num_params, 116829156672ll);
    CHECK_EQ(s.tensor_bytes, 65248815744ll);
    CHECK_EQ(s.num_shards, 15);
    o.experts = SYNTH_EXPERTS_BF16;
    CHECK(synth_describe(&o, &s, &err) == 0);
    CHECK_EQ(s.num_params, 116829156672ll);
    o.preset = "qwen3-30b-a3b";
    o.experts = SYNTH_EXPERTS_PRESET;
    CHECK(synth_describe(&o, &s, &err) == 0);
    CHECK_EQ(s.num_params, 30532122624ll);
    CHECK_EQ(s.tensor_bytes, 2 * 30532122624ll);
    CHECK_EQ(s.num_tensors, 3 + 48 * (9 + 128 * 3));
}

/* The tiny presets reproduce the fixtures' Hub layout exactly: tensor names, dtypes, shapes,
 * config.json, generation_config.json, tokenizer_config.json and the tokenizer's special and byte
 * token ids. */
static void check_tiny_against_fixture(const char *preset, const char *fixture)
{
    char dir[512], fx[512];
    make_tmpdir(dir, sizeof dir);
    snprintf(fx, sizeof fx, "%s/%s", test_fixtures_dir(), fixture);
    m2o_err err = {{0}};
    CHECK_MSG(synth_to(preset, dir, 0, 0, 3, 0, false, &err) == 0, "%s", err.msg);
    CHECK(file_exists(dir, "model.safetensors") && !file_exists(dir, "model.safetensors.index.json"));

    int nf_got, nf_want;
    uint64_t bytes_got, bytes_want;
    cJSON *got = collect_layout(dir, &nf_got, &bytes_got);
    cJSON *want = collect_layout(fx, &nf_want, &bytes_want);
    if (!g_failed_now)
        check_same_layout(got, want);
    cJSON_Delete(got);
    cJSON_Delete(want);
    if (g_failed_now)
        return;
    CHECK_EQ(bytes_got, bytes_want);

    const char *files[] = {"config.json", "generation_config.json", "tokenizer_config.json"};
    for (int f = 0; f < 3; f++) {
        cJSON *a = read_json(dir, files[f]), *b = read_json(fx, files[f]);
        bool same = a && b && cJSON_Compare(a, b, 1);
        char *pa = a ? cJSON_PrintUnformatted(a) : NULL;
        cJSON_Delete(a);
        cJSON_Delete(b);
        CHECK_MSG(same, "%s differs from the fixture's: %.300s", files[f], pa ? pa : "(unreadable)");
        free(pa);
    }

    cJSON *ta = read_json(dir, "tokenizer.json"), *tb = read_json(fx, "tokenizer.json");
    CHECK(ta && tb);
    CHECK(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(ta, "added_tokens"), cJSON_GetObjectItemCaseSensitive(tb, "added_tokens"), 1));
    const cJSON *va = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(ta, "model"), "vocab");
    const cJSON *vb = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(tb, "model"), "vocab");
    int n_added = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(ta, "added_tokens")), checked = 0;
    const cJSON *tok;
    cJSON_ArrayForEach(tok, va) {
        if (json_i64(tok) >= n_added + 256)
            continue;
        const cJSON *other = cJSON_GetObjectItemCaseSensitive(vb, tok->string);
        checked += other && json_i64(other) == json_i64(tok);
    }
    cJSON_Delete(ta);
    cJSON_Delete(tb);
    CHECK_EQ(checked, n_added + 256);
    remove_tree(dir);
}

TEST(synth_gpt_oss_tiny_matches_the_fixture_layout)
{
    check_tiny_against_fixture("gpt-oss-tiny", "gpt-oss-tiny");
}

TEST(synth_qwen3_moe_tiny_matches_the_fixture_layout)
{
    check_tiny_against_fixture("qwen3-moe-tiny", "qwen3-moe-tiny");
}

TEST(synth_gpt_oss_bf16_experts_match_the_bf16_fixture_layout)
{
    char dir[512], fx[512];
    make_tmpdir(dir, sizeof dir);
    snprintf(fx, sizeof fx, "%s/gpt-oss-bf16-tiny", test_fixtures_dir());
    synth_opts o = {.preset = "gpt-oss-tiny", .out_dir = dir, .experts = SYNTH_EXPERTS_BF16};
    m2o_err err = {{0}};
    CHECK_MSG(synth_write(&o, &err) == 0, "%s", err.msg);
    int nf;
    uint64_t b1, b2;
    cJSON *got = collect_layout(dir, &nf, &b1), *want = collect_layout(fx, &nf, &b2);
    if (!g_failed_now)
        check_same_layout(got, want);
    cJSON_Delete(got);
    cJSON_Delete(want);
    cJSON *cfg = read_json(dir, "config.json");
    CHECK(cfg && !cJSON_GetObjectItemCaseSensitive(cfg, "quantization_config"));
    cJSON_Delete(cfg);
    remove_tree(dir);
}

/* Values in a written tiny checkpoint, read back through the header offsets. */
TEST(synth_tiny_values_are_plausible)
{
    char dir[512], path[600];
    make_tmpdir(dir, sizeof dir);
    m2o_err err = {{0}};
    CHECK_MSG(synth_to("gpt-oss-tiny", dir, 0, 0, 11, 2, false, &err) == 0, "%s", err.msg);
    int nf;
    uint64_t total;
    cJSON *layout = collect_layout(dir, &nf, &total);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    size_t len;
    uint8_t *data = slurp(path, &len);
    CHECK(data);
    const cJSON *t;
    int checked = 0;
    cJSON_ArrayForEach(t, layout) {
        size_t b = (size_t)json_i64(cJSON_GetObjectItemCaseSensitive(t, "begin")), e = (size_t)json_i64(cJSON_GetObjectItemCaseSensitive(t, "end"));
        const char *dt = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(t, "dtype"));
        bool norm = strstr(t->string, "norm") != NULL, scales = strstr(t->string, "_scales") != NULL;
        for (size_t i = b; i < e && !g_failed_now; i += strcmp(dt, "BF16") ? 1 : 2) {
            if (!strcmp(dt, "BF16")) {
                float x = bf16_to_f32((uint16_t)(data[i] | data[i + 1] << 8));
                CHECK_MSG(isfinite(x) && fabsf(x - (norm ? 1.0f : 0.0f)) < (strstr(t->string, "sinks") ? 4.5f : 0.09f),
                          "%s holds %g", t->string, x);
            } else if (scales) {
                CHECK_MSG(data[i] >= 118 && data[i] <= 124, "%s holds scale byte %d", t->string, data[i]);
            }
        }
        checked++;
    }
    free(data);
    cJSON_Delete(layout);
    CHECK_EQ(checked, 41);
    remove_tree(dir);
}

/* Same seed: identical bytes whatever the thread count or sharding; another seed: same header,
 * other data. */
TEST(synth_output_is_deterministic)
{
    char d1[512], d2[512], d3[512], d4[512], p1[600], p2[600];
    make_tmpdir(d1, sizeof d1);
    make_tmpdir(d2, sizeof d2);
    make_tmpdir(d3, sizeof d3);
    make_tmpdir(d4, sizeof d4);
    m2o_err err = {{0}};
    CHECK_MSG(synth_to("qwen3-moe-tiny", d1, 0, 0, 5, 1, false, &err) == 0, "%s", err.msg);
    CHECK_MSG(synth_to("qwen3-moe-tiny", d2, 0, 0, 5, 4, false, &err) == 0, "%s", err.msg);
    CHECK_MSG(synth_to("qwen3-moe-tiny", d3, 0, 0, 6, 2, false, &err) == 0, "%s", err.msg);
    CHECK_MSG(synth_to("qwen3-moe-tiny", d4, 0, 1000000, 5, 2, false, &err) == 0, "%s", err.msg);
    snprintf(p1, sizeof p1, "%s/model.safetensors", d1);
    size_t n1, n2, n3;
    uint8_t *a = slurp(p1, &n1);
    snprintf(p2, sizeof p2, "%s/model.safetensors", d2);
    uint8_t *b = slurp(p2, &n2);
    snprintf(p2, sizeof p2, "%s/model.safetensors", d3);
    uint8_t *c = slurp(p2, &n3);
    CHECK(a && b && c);
    CHECK_EQ(n1, n2);
    CHECK_EQ(n1, n3);
    CHECK_SAME_BYTES(a, b, n1);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)a[i] << (8 * i);
    CHECK_SAME_BYTES(a, c, 8 + hlen);
    size_t same = 0;
    for (size_t i = 8 + hlen; i < n1; i++)
        same += a[i] == c[i];
    CHECK_MSG(same < (n1 - 8 - hlen) / 8, "seed 6 repeats %zu data bytes of seed 5", same);

    /* Sharded at 1 MB: every tensor holds the bytes it has in the single file. */
    int nf1, nf4;
    uint64_t t1, t4;
    cJSON *l1 = collect_layout(d1, &nf1, &t1), *l4 = collect_layout(d4, &nf4, &t4);
    CHECK_EQ(nf1, 1);
    CHECK_EQ(nf4, 5);
    CHECK_EQ(t1, t4);
    const cJSON *e;
    int compared = 0;
    cJSON_ArrayForEach(e, l4) {
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(l1, e->string);
        char p[700];
        snprintf(p, sizeof p, "%s/%s", d4, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "file")));
        size_t n;
        uint8_t *shard = slurp(p, &n);
        size_t b4 = (size_t)json_i64(cJSON_GetObjectItemCaseSensitive(e, "begin")), b1 = (size_t)json_i64(cJSON_GetObjectItemCaseSensitive(s, "begin"));
        size_t len = (size_t)json_i64(cJSON_GetObjectItemCaseSensitive(e, "end")) - b4;
        bool same_bytes = shard && !memcmp(shard + b4, a + b1, len);
        free(shard);
        CHECK_MSG(same_bytes, "%s differs between the sharded and the single-file checkpoint", e->string);
        compared++;
    }
    CHECK_EQ(compared, 69);
    cJSON_Delete(l1);
    cJSON_Delete(l4);
    free(a);
    free(b);
    free(c);
    remove_tree(d1);
    remove_tree(d2);
    remove_tree(d3);
    remove_tree(d4);
}

typedef struct progress_log {
    int calls;
    uint64_t last, total;
    bool monotonic;
    char first_file[64];
} progress_log;

static void log_progress(void *ctx, const char *file, uint64_t done, uint64_t total)
{
    progress_log *p = ctx;
    if (!p->calls++)
        snprintf(p->first_file, sizeof p->first_file, "%s", file);
    p->monotonic &= done >= p->last;
    p->last = done;
    p->total = total;
}

TEST(synth_reports_progress_per_shard)
{
    char dir[512];
    make_tmpdir(dir, sizeof dir);
    progress_log log = {.monotonic = true};
    synth_opts o = {.preset = "gpt-oss-tiny", .out_dir = dir, .shard_bytes = 1000000,
                    .progress = log_progress, .progress_ctx = &log};
    m2o_err err = {{0}};
    CHECK_MSG(synth_write(&o, &err) == 0, "%s", err.msg);
    CHECK_MSG(log.calls >= 4, "%d progress calls for 4 shards", log.calls);
    CHECK(log.monotonic);
    CHECK_EQ(log.last, 3020336);
    CHECK_EQ(log.total, 3020336);
    CHECK_STR_CONTAINS(log.first_file, "model-00001-of-00004.safetensors");
    remove_tree(dir);
}

/* Full-size gpt-oss-20b, one layer, 200 MB shards, sparse (real headers and sizes, data holes):
 * the shard files, index and tensor shapes are exactly what a converter will see. */
TEST(synth_gpt_oss_20b_layout_sharded_like_the_hub)
{
    char dir[512];
    make_tmpdir(dir, sizeof dir);
    m2o_err err = {{0}};
    CHECK_MSG(synth_to("gpt-oss-20b", dir, 1, 200000000, 1, 0, true, &err) == 0, "%s", err.msg);
    synth_opts o = {.preset = "gpt-oss-20b", .out_dir = dir, .num_layers = 1, .shard_bytes = 200000000};
    synth_summary s;
    CHECK(synth_describe(&o, &s, &err) == 0);

    int nfiles;
    uint64_t total;
    cJSON *layout = collect_layout(dir, &nfiles, &total);
    cJSON *index = read_json(dir, "model.safetensors.index.json");
    CHECK(layout && index);
    CHECK_EQ(nfiles, s.num_shards);
    /* embed | layer 0's small tensors | gate_up blocks | gate_up scales, down blocks and scales,
     * model.norm | lm_head */
    CHECK_EQ(s.num_shards, 5);
    CHECK_EQ(total, s.tensor_bytes);
    CHECK_EQ(json_i64(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(index, "metadata"), "total_size")), (long long)total);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(index, "weight_map");
    CHECK_EQ(cJSON_GetArraySize(map), cJSON_GetArraySize(layout));
    CHECK_EQ(cJSON_GetArraySize(layout), 3 + 19);
    const cJSON *m;
    cJSON_ArrayForEach(m, map) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(layout, m->string);
        CHECK_MSG(t && !strcmp(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(t, "file")), cJSON_GetStringValue(m)),
                  "index maps %s to %s, which does not hold it", m->string, cJSON_GetStringValue(m));
    }
    /* Hub naming of gpt-oss: numbered from 0, "of" the last number. */
    CHECK(file_exists(dir, "model-00000-of-00004.safetensors"));
    CHECK(file_exists(dir, "model-00004-of-00004.safetensors"));

    check_shape(layout, "model.embed_tokens.weight", "BF16", 2, (int64_t[]){201088, 2880});
    check_shape(layout, "lm_head.weight", "BF16", 2, (int64_t[]){201088, 2880});
    check_shape(layout, "model.norm.weight", "BF16", 1, (int64_t[]){2880});
    check_shape(layout, "model.layers.0.self_attn.q_proj.weight", "BF16", 2, (int64_t[]){4096, 2880});
    check_shape(layout, "model.layers.0.self_attn.k_proj.weight", "BF16", 2, (int64_t[]){512, 2880});
    check_shape(layout, "model.layers.0.self_attn.o_proj.weight", "BF16", 2, (int64_t[]){2880, 4096});
    check_shape(layout, "model.layers.0.self_attn.v_proj.bias", "BF16", 1, (int64_t[]){512});
    check_shape(layout, "model.layers.0.self_attn.sinks", "BF16", 1, (int64_t[]){64});
    check_shape(layout, "model.layers.0.mlp.router.weight", "BF16", 2, (int64_t[]){32, 2880});
    check_shape(layout, "model.layers.0.mlp.router.bias", "BF16", 1, (int64_t[]){32});
    check_shape(layout, "model.layers.0.mlp.experts.gate_up_proj_blocks", "U8", 4, (int64_t[]){32, 5760, 90, 16});
    check_shape(layout, "model.layers.0.mlp.experts.gate_up_proj_scales", "U8", 3, (int64_t[]){32, 5760, 90});
    check_shape(layout, "model.layers.0.mlp.experts.gate_up_proj_bias", "BF16", 2, (int64_t[]){32, 5760});
    check_shape(layout, "model.layers.0.mlp.experts.down_proj_blocks", "U8", 4, (int64_t[]){32, 2880, 90, 16});
    check_shape(layout, "model.layers.0.mlp.experts.down_proj_scales", "U8", 3, (int64_t[]){32, 2880, 90});
    check_shape(layout, "model.layers.0.mlp.experts.down_proj_bias", "BF16", 2, (int64_t[]){32, 2880});
    cJSON_Delete(layout);
    cJSON_Delete(index);

    cJSON *cfg = read_json(dir, "config.json");
    CHECK(cfg);
    CHECK_EQ(json_i64(cJSON_GetObjectItemCaseSensitive(cfg, "num_hidden_layers")), 1);
    CHECK_EQ(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(cfg, "layer_types")), 1);
    CHECK_EQ(json_i64(cJSON_GetObjectItemCaseSensitive(cfg, "vocab_size")), 201088);
    CHECK_EQ(json_i64(cJSON_GetObjectItemCaseSensitive(cfg, "sliding_window")), 128);
    CHECK_EQ(json_i64(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(cfg, "rope_scaling"), "factor")), 32);
    CHECK_STR_CONTAINS(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(cfg, "quantization_config"), "quant_method")), "mxfp4");
    cJSON_Delete(cfg);

    /* Token ids in config.json exist in tokenizer.json at those ids. */
    cJSON *tok = read_json(dir, "tokenizer.json");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(tok, "model"), "vocab");
    CHECK_EQ(json_i64(cJSON_GetObjectItemCaseSensitive(vocab, "<|return|>")), 200002);
    CHECK_EQ(json_i64(cJSON_GetObjectItemCaseSensitive(vocab, "<|endoftext|>")), 199999);
    cJSON_Delete(tok);
    remove_tree(dir);
}

TEST(synth_qwen3_30b_layout_has_per_expert_tensors)
{
    char dir[512];
    make_tmpdir(dir, sizeof dir);
    m2o_err err = {{0}};
    CHECK_MSG(synth_to("qwen3-30b-a3b", dir, 1, 0, 1, 0, true, &err) == 0, "%s", err.msg);
    int nfiles;
    uint64_t total;
    cJSON *layout = collect_layout(dir, &nfiles, &total);
    CHECK_EQ(nfiles, 1);
    CHECK(file_exists(dir, "model.safetensors"));
    CHECK_EQ(cJSON_GetArraySize(layout), 3 + 9 + 128 * 3);
    check_shape(layout, "model.layers.0.mlp.gate.weight", "BF16", 2, (int64_t[]){128, 2048});
    check_shape(layout, "model.layers.0.mlp.experts.127.gate_proj.weight", "BF16", 2, (int64_t[]){768, 2048});
    check_shape(layout, "model.layers.0.mlp.experts.0.up_proj.weight", "BF16", 2, (int64_t[]){768, 2048});
    check_shape(layout, "model.layers.0.mlp.experts.5.down_proj.weight", "BF16", 2, (int64_t[]){2048, 768});
    check_shape(layout, "model.layers.0.self_attn.q_proj.weight", "BF16", 2, (int64_t[]){4096, 2048});
    check_shape(layout, "model.layers.0.self_attn.k_proj.weight", "BF16", 2, (int64_t[]){512, 2048});
    check_shape(layout, "model.layers.0.self_attn.q_norm.weight", "BF16", 1, (int64_t[]){128});
    check_shape(layout, "model.embed_tokens.weight", "BF16", 2, (int64_t[]){151936, 2048});
    CHECK(!cJSON_GetObjectItemCaseSensitive(layout, "model.layers.0.self_attn.q_proj.bias"));
    cJSON_Delete(layout);
    cJSON *cfg = read_json(dir, "config.json");
    CHECK(cfg);
    CHECK_EQ(json_i64(cJSON_GetObjectItemCaseSensitive(cfg, "num_experts")), 128);
    CHECK_EQ(json_i64(cJSON_GetObjectItemCaseSensitive(cfg, "moe_intermediate_size")), 768);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cfg, "norm_topk_prob")));
    cJSON_Delete(cfg);
    remove_tree(dir);
}

TEST(synth_output_directory_rules)
{
    char dir[512], sub[600], foreign[600], readme[700];
    make_tmpdir(dir, sizeof dir);
    m2o_err err = {{0}};
    /* Missing parents are created. */
    snprintf(sub, sizeof sub, "%s/a/b", dir);
    CHECK_MSG(synth_to("gpt-oss-tiny", sub, 0, 1000000, 1, 0, false, &err) == 0, "%s", err.msg);
    CHECK(file_exists(sub, "model-00001-of-00004.safetensors"));
    CHECK(file_exists(sub, "model.safetensors.index.json"));
    /* Writing again over an earlier synth output replaces its shards. */
    CHECK_MSG(synth_to("gpt-oss-tiny", sub, 0, 0, 1, 0, false, &err) == 0, "%s", err.msg);
    CHECK(file_exists(sub, "model.safetensors"));
    CHECK(!file_exists(sub, "model.safetensors.index.json"));
    CHECK(!file_exists(sub, "model-00001-of-00004.safetensors"));
    /* A directory holding anything else is refused, and left alone. */
    snprintf(foreign, sizeof foreign, "%s/real", dir);
    mkdir(foreign, 0755);
    snprintf(readme, sizeof readme, "%s/README.md", foreign);
    FILE *f = fopen(readme, "w");
    CHECK(f);
    fclose(f);
    CHECK(synth_to("gpt-oss-tiny", foreign, 0, 0, 1, 0, false, &err) != 0);
    CHECK_STR_CONTAINS(err.msg, "is not empty (it holds README.md)");
    CHECK(!file_exists(foreign, "config.json"));
    remove_tree(dir);
}

/* ---- read back through the project's own reader and config loader -------------------------- */

TEST(synth_checkpoints_open_in_the_reader_with_their_config)
{
    char dir[512];
    make_tmpdir(dir, sizeof dir);
    m2o_err err = {{0}};
    st_checkpoint *c = NULL;
    model_desc md;

    /* Tiny, real data: full validation, every value finite, norm weights near 1. */
    CHECK_MSG(synth_to("gpt-oss-tiny", dir, 0, 1000000, 9, 2, false, &err) == 0, "%s", err.msg);
    CHECK_MSG(ckpt_open(dir, &c, &err) == 0, "%s", err.msg);
    CHECK_EQ(ckpt_count(c), 41);
    CHECK_EQ(ckpt_total_bytes(c), 3020336);
    for (size_t i = 0; i < ckpt_count(c); i++) {
        int64_t bad = -1;
        CHECK_MSG(st_all_finite(ckpt_tensor(c, i), &bad), "%s: element %lld not finite",
                  ckpt_tensor(c, i)->name, (long long)bad);
    }
    const st_tensor *t = NULL;
    CHECK_MSG(ckpt_expect(c, "model.layers.1.mlp.experts.down_proj_scales", 3, (int64_t[]){8, 256, 8}, &t, &err) == 0, "%s", err.msg);
    float norm[256];
    CHECK(ckpt_expect(c, "model.norm.weight", 1, (int64_t[]){256}, &t, &err) == 0);
    CHECK(st_read_f32(t, 0, 256, norm, &err) == 0);
    for (int i = 0; i < 256; i++)
        CHECK_MSG(fabsf(norm[i] - 1.0f) < 0.09f, "model.norm.weight[%d] = %g", i, norm[i]);
    ckpt_close(c);
    c = NULL;
    CHECK_MSG(config_load(dir, &md, &err) == 0, "%s", err.msg);
    CHECK(!strcmp(md.family->model_type, "gpt_oss"));
    CHECK_EQ(md.num_experts, 8);

    /* Full-size gpt-oss-20b, 2 layers, zero-based shards, sparse. */
    CHECK_MSG(synth_to("gpt-oss-20b", dir, 2, 200000000, 1, 0, true, &err) == 0, "%s", err.msg);
    CHECK_MSG(ckpt_open(dir, &c, &err) == 0, "%s", err.msg);
    CHECK_EQ(ckpt_count(c), 3 + 2 * 19);
    CHECK(ckpt_expect(c, "model.layers.1.mlp.experts.gate_up_proj_blocks", 4, (int64_t[]){32, 5760, 90, 16}, &t, &err) == 0);
    ckpt_close(c);
    c = NULL;
    CHECK_MSG(config_load(dir, &md, &err) == 0, "%s", err.msg);
    CHECK_EQ(md.hidden_size, 2880);
    CHECK_EQ(md.num_layers, 2);
    CHECK_EQ(md.num_heads, 64);
    CHECK_EQ(md.num_kv_heads, 8);
    CHECK_EQ(md.head_dim, 64);
    CHECK_EQ(md.vocab_size, 201088);
    CHECK_EQ(md.num_experts, 32);
    CHECK_EQ(md.top_k, 4);
    CHECK_EQ(md.sliding_window, 128);
    CHECK_EQ(md.layer_type[0], LAYER_SLIDING_ATTENTION);
    CHECK_EQ(md.layer_type[1], LAYER_FULL_ATTENTION);
    CHECK_EQ(md.rope_type, ROPE_YARN);
    CHECK_NEAR(md.rope_factor, 32.0, 0);
    CHECK_NEAR(md.rope_theta, 150000.0, 0);
    CHECK_EQ(md.rope_original_max_position, 4096);
    CHECK_EQ(md.n_eos, 3);
    CHECK_EQ(md.eos_token_ids[0], 200002);
    CHECK_EQ(md.pad_token_id, 199999);

    /* Full-size Qwen3-30B-A3B, 1 layer, sparse. */
    CHECK_MSG(synth_to("qwen3-30b-a3b", dir, 1, 0, 1, 0, true, &err) == 0, "%s", err.msg);
    CHECK_MSG(ckpt_open(dir, &c, &err) == 0, "%s", err.msg);
    CHECK_EQ(ckpt_count(c), 3 + 9 + 128 * 3);
    ckpt_close(c);
    CHECK_MSG(config_load(dir, &md, &err) == 0, "%s", err.msg);
    CHECK(!strcmp(md.family->model_type, "qwen3_moe"));
    CHECK_EQ(md.hidden_size, 2048);
    CHECK_EQ(md.moe_intermediate_size, 768);
    CHECK_EQ(md.num_experts, 128);
    CHECK_EQ(md.top_k, 8);
    CHECK(md.norm_topk_prob && md.qk_norm && !md.attention_bias && md.sparse_layer[0]);
    CHECK_EQ(md.head_dim, 128);
    CHECK_NEAR(md.rms_norm_eps, 1e-6, 0);
    remove_tree(dir);
}
