/* safetensors reader, one file: the dtype table, the header parsed and every rule of
 * docs/FORMATS.md §1 checked (entries, metadata, data tiling), the file mapped. Tensor data
 * access is st_data.c, the shard index st_index.c, a checkpoint folder checkpoint_dir.c. */
#include "checkpoint/safetensors.h"
#include "checkpoint/st_internal.h"

#include <cJSON.h>
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

#include "common/half.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian and is read in place; a little-endian host is assumed"
#endif

/* JSON numbers arrive as doubles: integers are exact only up to 2^53. */
#define ST_MAX_EXACT_INT 9007199254740992.0

static const struct {
    const char *name;
    size_t size;
} k_dtypes[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 1},       [ST_U8] = {"U8", 1},           [ST_I8] = {"I8", 1},
    [ST_U16] = {"U16", 2},         [ST_I16] = {"I16", 2},         [ST_F16] = {"F16", 2},
    [ST_BF16] = {"BF16", 2},       [ST_U32] = {"U32", 4},         [ST_I32] = {"I32", 4},
    [ST_F32] = {"F32", 4},         [ST_U64] = {"U64", 8},         [ST_I64] = {"I64", 8},
    [ST_F64] = {"F64", 8},         [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_F8_E5M2] = {"F8_E5M2", 1},
    [ST_F8_E8M0] = {"F8_E8M0", 1},
};

const char *st_dtype_name(st_dtype dt)
{
    return (unsigned)dt < ST_DTYPE_COUNT ? k_dtypes[dt].name : "?";
}

size_t st_dtype_size(st_dtype dt)
{
    return (unsigned)dt < ST_DTYPE_COUNT ? k_dtypes[dt].size : 0;
}

static int dtype_from_name(const char *s, st_dtype *out)
{
    for (int i = 0; i < ST_DTYPE_COUNT; i++)
        if (!strcmp(s, k_dtypes[i].name)) {
            *out = (st_dtype)i;
            return 0;
        }
    return -1;
}


/* ---------- small helpers ---------- */

void st_format_shape(char *buf, size_t cap, const int64_t *shape, int ndim)
{
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
}

/* A JSON number that is a non-negative integer representable exactly. */
static bool json_uint(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j))
        return false;
    double v = j->valuedouble;
    if (!(v >= 0.0) || v > ST_MAX_EXACT_INT || v != floor(v))
        return false;
    *out = (uint64_t)v;
    return true;
}

/* Strict JSON text checks cJSON does not make: valid UTF-8, no raw control characters (JSON allows
 * none, and a raw NUL would cut names short), and no \u0000 escape (a C-string name would be
 * truncated there and could alias another tensor). Returns the offending offset or -1. */
static long long json_text_problem(const char *text, size_t len, const char **why)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c < 0x80) {
            if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
                *why = "a raw control character";
                return (long long)i;
            }
            if (c == '\\' && i + 1 < len) {
                if (s[i + 1] == 'u' && i + 5 < len && s[i + 2] == '0' && s[i + 3] == '0' &&
                    s[i + 4] == '0' && s[i + 5] == '0') {
                    *why = "an escaped NUL (\\u0000)";
                    return (long long)i;
                }
                i += 2;
                continue;
            }
            i++;
            continue;
        }
        size_t need;
        unsigned cp, min;
        if (c >= 0xc2 && c <= 0xdf) { need = 1; cp = c & 0x1f; min = 0x80; }
        else if (c >= 0xe0 && c <= 0xef) { need = 2; cp = c & 0x0f; min = 0x800; }
        else if (c >= 0xf0 && c <= 0xf4) { need = 3; cp = c & 0x07; min = 0x10000; }
        else { *why = "invalid UTF-8"; return (long long)i; }
        if (i + need >= len) { /* the sequence runs past the end */
            *why = "invalid UTF-8 (truncated sequence)";
            return (long long)i;
        }
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xc0) != 0x80) {
                *why = "invalid UTF-8";
                return (long long)i;
            }
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            *why = "invalid UTF-8 (overlong, surrogate or out-of-range code point)";
            return (long long)i;
        }
        i += need + 1;
    }
    return -1;
}

static bool is_json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Parses JSON text of exactly `len` bytes (trailing whitespace allowed, nothing else). On failure
 * fills err with "<what>: <noun> ..." and returns NULL. */
cJSON *st_parse_json_text(const char *text, size_t len, const char *what, const char *noun,
                              const char *fix, m2o_err *err)
{
    const char *why = NULL;
    long long bad = json_text_problem(text, len, &why);
    if (bad >= 0) {
        m2o_fail(err, "%s: %s holds %s at byte %lld — %s", what, noun, why, bad, fix);
        return NULL;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        long long at = end && end >= text && end <= text + len ? (long long)(end - text) : -1;
        m2o_fail(err, "%s: %s is not valid JSON (error near byte %lld) — %s", what, noun, at, fix);
        return NULL;
    }
    for (const char *p = end; p < text + len; p++)
        if (!is_json_space(*p)) {
            cJSON_Delete(root);
            m2o_fail(err, "%s: %s is not valid JSON (unexpected text after the top-level value "
                     "at byte %lld) — %s", what, noun, (long long)(p - text), fix);
            return NULL;
        }
    return root;
}

/* ---------- one file ---------- */

typedef struct span {
    uint64_t begin, end;
    size_t idx; /* into the name-sorted tensors */
} span;

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

static int cmp_meta_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

#define CORRUPT "the file is corrupt or truncated; re-download it"

/* Validates one header entry and fills t (name excluded) and its byte range. */
/* The entry's "dtype", "shape" and "data_offsets" members, each at most once (other keys are
 * ignored, as the reference reader does); a missing one is left NULL for its parser to name. */
static int entry_members(const cJSON *e, const char *what, const char *name, const cJSON **jdt,
                         const cJSON **jshape, const cJSON **joff, m2o_err *err)
{
    if (!cJSON_IsObject(e))
        return m2o_fail(err, "%s: tensor '%s': header entry is %s, not an object with dtype, "
                        "shape and data_offsets — " CORRUPT, what, name, json_type_name(e));
    *jdt = *jshape = *joff = NULL;
    for (const cJSON *f = e->child; f; f = f->next) {
        const cJSON **slot = !strcmp(f->string, "dtype") ? jdt
                           : !strcmp(f->string, "shape") ? jshape
                           : !strcmp(f->string, "data_offsets") ? joff : NULL;
        if (!slot)
            continue;
        if (*slot)
            return m2o_fail(err, "%s: tensor '%s': key \"%s\" appears twice in its entry — " CORRUPT,
                            what, name, f->string);
        *slot = f;
    }
    return 0;
}

static int parse_dtype(const cJSON *jdt, const char *what, const char *name, st_dtype *out,
                       m2o_err *err)
{
    if (!cJSON_IsString(jdt))
        return m2o_fail(err, "%s: tensor '%s': \"dtype\" is %s, expected a dtype name such as "
                        "\"BF16\" — " CORRUPT, what, name, jdt ? json_type_name(jdt) : "missing");
    if (dtype_from_name(jdt->valuestring, out))
        return m2o_fail(err, "%s: tensor '%s': unknown dtype \"%.40s\" (known: BOOL, U8, I8, U16, "
                        "I16, F16, BF16, U32, I32, F32, U64, I64, F64, F8_E4M3, F8_E5M2, F8_E8M0) — "
                        "the file uses a type this tool cannot read, or is corrupt",
                        what, name, jdt->valuestring);
    return 0;
}

/* Fills t's shape, ndim and numel; *need is the byte size they give t's dtype. Every product is
 * checked before it is formed: a hostile header must not overflow it. */
static int parse_shape(const cJSON *jshape, const char *what, const char *name, st_tensor *t,
                       uint64_t *need, m2o_err *err)
{
    if (!cJSON_IsArray(jshape))
        return m2o_fail(err, "%s: tensor '%s': \"shape\" is %s, expected an array of sizes — " CORRUPT,
                        what, name, jshape ? json_type_name(jshape) : "missing");
    int ndim = 0;
    uint64_t numel = 1;
    for (const cJSON *d = jshape->child; d; d = d->next) {
        if (ndim == ST_MAX_DIMS)
            return m2o_fail(err, "%s: tensor '%s': shape has more than %d dimensions — " CORRUPT,
                            what, name, ST_MAX_DIMS);
        uint64_t v;
        if (!json_uint(d, &v))
            return m2o_fail(err, "%s: tensor '%s': shape entry %d is not a non-negative integer — "
                            CORRUPT, what, name, ndim);
        if (v != 0 && numel > (uint64_t)INT64_MAX / v)
            return m2o_fail(err, "%s: tensor '%s': shape has more elements than fit in 64 bits — "
                            CORRUPT, what, name);
        numel *= v;
        t->shape[ndim++] = (int64_t)v;
    }
    t->ndim = ndim;
    t->numel = (int64_t)numel;
    size_t esize = k_dtypes[t->dtype].size;
    if (numel > (uint64_t)SIZE_MAX / esize || numel * esize > (uint64_t)INT64_MAX)
        return m2o_fail(err, "%s: tensor '%s': shape needs more bytes than fit in memory — " CORRUPT,
                        what, name);
    *need = numel * esize;
    return 0;
}

/* "data_offsets" [begin, end]: inside the data buffer and exactly the need bytes of t. */
static int parse_offsets(const cJSON *joff, const char *what, const char *name, const st_tensor *t,
                         uint64_t need, size_t data_len, uint64_t *begin, uint64_t *end,
                         m2o_err *err)
{
    uint64_t b = 0, en = 0;
    if (!cJSON_IsArray(joff) || cJSON_GetArraySize(joff) != 2 || !json_uint(joff->child, &b) ||
        !json_uint(joff->child->next, &en))
        return m2o_fail(err, "%s: tensor '%s': \"data_offsets\" must be [begin, end] with "
                        "non-negative integers, found %s — " CORRUPT, what, name,
                        joff ? json_type_name(joff) : "nothing");
    if (b > en)
        return m2o_fail(err, "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin — "
                        CORRUPT, what, name, (unsigned long long)b, (unsigned long long)en);
    if (en > data_len)
        return m2o_fail(err, "%s: tensor '%s': data_offsets [%llu, %llu] run past the end of the "
                        "%zu-byte data buffer — " CORRUPT, what, name, (unsigned long long)b,
                        (unsigned long long)en, data_len);
    if (en - b != need) {
        char sh[256];
        st_format_shape(sh, sizeof sh, t->shape, t->ndim);
        return m2o_fail(err, "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but %s %s "
                        "needs %llu — " CORRUPT, what, name, (unsigned long long)b,
                        (unsigned long long)en, (unsigned long long)(en - b), k_dtypes[t->dtype].name,
                        sh, (unsigned long long)need);
    }
    *begin = b;
    *end = en;
    return 0;
}

/* One header entry (FORMATS §1), checked in the order of its members' messages. */
static int parse_entry(const cJSON *e, const char *what, const char *name, size_t data_len,
                       st_tensor *t, uint64_t *begin, uint64_t *end, m2o_err *err)
{
    const cJSON *jdt = NULL, *jshape = NULL, *joff = NULL;
    uint64_t need = 0;
    if (entry_members(e, what, name, &jdt, &jshape, &joff, err) ||
        parse_dtype(jdt, what, name, &t->dtype, err) ||
        parse_shape(jshape, what, name, t, &need, err) ||
        parse_offsets(joff, what, name, t, need, data_len, begin, end, err))
        return -1;
    t->nbytes = (size_t)need;
    return 0;
}

static int parse_metadata(const cJSON *m, const char *what, m2o_err *err)
{
    if (!cJSON_IsObject(m))
        return m2o_fail(err, "%s: __metadata__ is %s, expected an object of strings — " CORRUPT,
                        what, json_type_name(m));
    for (const cJSON *kv = m->child; kv; kv = kv->next) {
        if (!cJSON_IsString(kv))
            return m2o_fail(err, "%s: __metadata__ key '%s' holds %s, expected a string — " CORRUPT,
                            what, kv->string, json_type_name(kv));
    }
    return 0;
}

/* Every byte of the data buffer belongs to exactly one tensor: sorted by begin, each tensor must
 * start where the previous one ended, and the last must end at the end of the buffer. */
static int check_tiling(const st_file *f, const uint8_t *data, size_t data_len, m2o_err *err)
{
    span *sp = m2o_malloc(f->n * sizeof *sp, err);
    if (!sp)
        return -1;
    for (size_t i = 0; i < f->n; i++) {
        uint64_t b = (uint64_t)(f->tensors[i].data - data);
        sp[i] = (span){b, b + f->tensors[i].nbytes, i};
    }
    qsort(sp, f->n, sizeof *sp, cmp_span);
    uint64_t cursor = 0;
    const char *prev = NULL;
    int rc = 0;
    for (size_t i = 0; i < f->n && !rc; i++) {
        const char *name = f->tensors[sp[i].idx].name;
        if (sp[i].begin > cursor)
            rc = m2o_fail(err, "%s: tensor '%s': data starts at byte %llu but %s%s%s ends at byte "
                          "%llu — a %llu-byte hole in the data buffer; " CORRUPT, f->path, name,
                          (unsigned long long)sp[i].begin, prev ? "tensor '" : "the data before it",
                          prev ? prev : "", prev ? "'" : "", (unsigned long long)cursor,
                          (unsigned long long)(sp[i].begin - cursor));
        else if (sp[i].begin < cursor)
            rc = m2o_fail(err, "%s: tensor '%s': data_offsets [%llu, %llu] overlap tensor '%s', "
                          "which ends at byte %llu — " CORRUPT, f->path, name,
                          (unsigned long long)sp[i].begin, (unsigned long long)sp[i].end,
                          prev ? prev : "?", (unsigned long long)cursor);
        cursor = sp[i].end;
        prev = name;
    }
    if (!rc && cursor != data_len)
        rc = m2o_fail(err, "%s: the data buffer holds %zu bytes but the tensors cover only %llu — "
                      "%llu trailing bytes belong to no tensor (8 + header + data must equal the "
                      "file size); " CORRUPT, f->path, data_len, (unsigned long long)cursor,
                      (unsigned long long)(data_len - cursor));
    free(sp);
    return rc;
}

/* First pass over the header: checks __metadata__ (*meta, at most one) and counts the tensors,
 * the metadata pairs and the arena bytes their strings take, so one allocation each holds them. */
static int count_header(st_file *f, const cJSON *root, const cJSON **meta, size_t *arena_len,
                        m2o_err *err)
{
    *meta = NULL;
    *arena_len = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) {
            if (*meta)
                return m2o_fail(err, "%s: __metadata__ appears twice in the header — " CORRUPT, f->path);
            if (parse_metadata(e, f->path, err))
                return -1;
            *meta = e;
            for (const cJSON *kv = e->child; kv; kv = kv->next) {
                *arena_len += strlen(kv->string) + strlen(kv->valuestring) + 2;
                f->n_meta++;
            }
            continue;
        }
        *arena_len += strlen(e->string) + 1;
        f->n++;
    }
    return 0;
}

static char *arena_copy(char **w, const char *s)
{
    size_t nl = strlen(s) + 1;
    char *at = memcpy(*w, s, nl);
    *w += nl;
    return at;
}

/* Second pass: each entry parsed into f->tensors, names and metadata copied into the arena. */
static int fill_file(st_file *f, const cJSON *root, const cJSON *meta, const uint8_t *data,
                     size_t data_len, m2o_err *err)
{
    char *w = f->arena;
    size_t i = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (e == meta)
            continue;
        st_tensor *t = &f->tensors[i++];
        uint64_t b = 0, en = 0;
        if (parse_entry(e, f->path, e->string, data_len, t, &b, &en, err))
            return -1;
        t->name = arena_copy(&w, e->string);
        t->data = data + b;
        t->file = f;
    }
    size_t m = 0;
    for (const cJSON *kv = meta ? meta->child : NULL; kv; kv = kv->next) {
        f->meta[m++] = arena_copy(&w, kv->string);
        f->meta[m++] = arena_copy(&w, kv->valuestring);
    }
    return 0;
}

/* Sorted, so duplicates are neighbours: linear, not quadratic, in hostile headers. */
static int sort_and_reject_duplicates(st_file *f, m2o_err *err)
{
    qsort(f->meta, f->n_meta, 2 * sizeof *f->meta, cmp_meta_key);
    for (size_t k = 1; k < f->n_meta; k++)
        if (!strcmp(f->meta[2 * k - 2], f->meta[2 * k]))
            return m2o_fail(err, "%s: __metadata__ key '%s' appears twice — " CORRUPT, f->path,
                            f->meta[2 * k]);
    qsort(f->tensors, f->n, sizeof *f->tensors, cmp_tensor_name);
    for (size_t k = 1; k < f->n; k++)
        if (!strcmp(f->tensors[k - 1].name, f->tensors[k].name))
            return m2o_fail(err, "%s: tensor '%s' appears twice in the header — " CORRUPT, f->path,
                            f->tensors[k].name);
    return 0;
}

static int build_file(st_file *f, const cJSON *root, const uint8_t *data, size_t data_len,
                      m2o_err *err)
{
    const cJSON *meta;
    size_t arena_len;
    if (count_header(f, root, &meta, &arena_len, err))
        return -1;
    f->tensors = m2o_calloc(f->n, sizeof *f->tensors, err);
    f->arena = m2o_malloc(arena_len, err);
    f->meta = m2o_calloc(2 * f->n_meta, sizeof *f->meta, err);
    if (!f->tensors || !f->arena || !f->meta)
        return -1;
    if (fill_file(f, root, meta, data, data_len, err) || sort_and_reject_duplicates(f, err))
        return -1;
    return check_tiling(f, data, data_len, err);
}

int st_file_parse(const uint8_t *buf, size_t len, const char *what, st_file **out, m2o_err *err)
{
    *out = NULL;
    if (len < 8)
        return m2o_fail(err, "%s: file is %zu bytes, too short to hold the 8-byte header length — "
                        CORRUPT, what, len);
    uint64_t hlen;
    memcpy(&hlen, buf, 8);
    if (hlen > len - 8)
        return m2o_fail(err, "%s: header length %llu runs past the end of the file (%zu bytes) — "
                        "the file is truncated or not a safetensors file; re-download it", what,
                        (unsigned long long)hlen, len);
    if (hlen > ST_MAX_HEADER_BYTES)
        return m2o_fail(err, "%s: header length %llu exceeds the %llu-byte limit — this is not a "
                        "safetensors file, or it is corrupt", what, (unsigned long long)hlen,
                        ST_MAX_HEADER_BYTES);
    cJSON *root = st_parse_json_text((const char *)buf + 8, (size_t)hlen, what, "header",
                                  "the file is corrupt or not a safetensors file", err);
    if (!root)
        return -1;
    if (!cJSON_IsObject(root)) {
        m2o_fail(err, "%s: header is %s, not a JSON object of tensors — the file is corrupt or not "
                 "a safetensors file", what, json_type_name(root));
        cJSON_Delete(root);
        return -1;
    }
    st_file *f = m2o_calloc(1, sizeof *f, err);
    if (!f || !(f->path = strdup(what))) {
        free(f);
        cJSON_Delete(root);
        return m2o_fail(err, "out of memory opening %s", what);
    }
    f->image = buf;
    f->image_len = len;
    const uint8_t *data = buf + 8 + hlen;
    int rc = build_file(f, root, data, len - 8 - (size_t)hlen, err);
    cJSON_Delete(root);
    if (rc) {
        st_file_close(f);
        return -1;
    }
    *out = f;
    return 0;
}

int st_file_open(const char *path, st_file **out, m2o_err *err)
{
    *out = NULL;
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (fstat rejects it next) */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return m2o_fail(err, "%s: cannot open: %s — check that the file exists and is readable",
                        path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        return m2o_fail(err, "%s: not a regular file — pass a .safetensors file", path);
    }
    size_t len = (size_t)st.st_size;
    if (len < 8) { /* mmap cannot map an empty file; the parser words the error */
        uint8_t small[8] = {0};
        ssize_t got = read(fd, small, len);
        close(fd);
        st_file *f;
        return st_file_parse(small, got > 0 ? (size_t)got : 0, path, &f, err);
    }
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED)
        return m2o_fail(err, "%s: cannot map %zu bytes: %s", path, len, strerror(map_errno));
    if (st_file_parse(map, len, path, out, err)) {
        munmap(map, len);
        return -1;
    }
    (*out)->mapped = true;
    return 0;
}

void st_file_close(st_file *f)
{
    if (!f)
        return;
    if (f->mapped)
        munmap((void *)f->image, f->image_len);
    free(f->tensors);
    free(f->arena);
    free(f->meta);
    free(f->path);
    free(f);
}

const char *st_file_path(const st_file *f) { return f->path; }
size_t st_file_count(const st_file *f) { return f->n; }

const st_tensor *st_file_tensor(const st_file *f, size_t i)
{
    return i < f->n ? &f->tensors[i] : NULL;
}

const st_tensor *st_file_find(const st_file *f, const char *name)
{
    st_tensor key = {.name = name};
    return bsearch(&key, f->tensors, f->n, sizeof *f->tensors, cmp_tensor_name);
}

const char *st_file_metadata(const st_file *f, const char *key)
{
    const char *const *hit = bsearch(&key, f->meta, f->n_meta, 2 * sizeof *f->meta, cmp_meta_key);
    return hit ? hit[1] : NULL;
}
