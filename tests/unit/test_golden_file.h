/* A golden safetensors file of tests/fixtures/golden (docs/FORMATS.md §17) read by a small
 * self-contained parser (8-byte header length, JSON header, data), so the golden tests do not
 * depend on src/checkpoint. `__metadata__.cases` is a JSON string: case name -> parameters.
 * Include after test.h. */
#ifndef M2O_TEST_GOLDEN_FILE_H
#define M2O_TEST_GOLDEN_FILE_H

#include <cJSON.h>
#include <errno.h>
#include <stdbool.h>

typedef struct golden {
    uint8_t *file;
    size_t size;
    const uint8_t *data; /* start of the data buffer */
    cJSON *header;
    cJSON *cases;
} golden;

typedef struct gtensor {
    const char *dtype;
    int64_t shape[4];
    int ndim;
    const uint8_t *data;
    size_t nbytes;
} gtensor;

/* Loads tests/fixtures/golden/<file> into *gp once (gp->header set afterwards); returns NULL
 * with a reason in *why when it cannot. *missing (may be NULL) tells an absent file apart. */
static const golden *golden_open(golden *gp, const char *file, const char **why,
                                 bool *missing)
{
    if (gp->header)
        return gp;
    char path[512];
    snprintf(path, sizeof path, "%s/golden/%s", test_fixtures_dir(), file);
    FILE *f = fopen(path, "rb");
    if (missing)
        *missing = !f && errno == ENOENT;
    if (!f) {
        *why = "cannot open golden file";
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)size);
    if (!buf || size < 8 || fread(buf, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        free(buf);
        *why = "cannot read golden file";
        return NULL;
    }
    fclose(f);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | buf[i];
    if (hlen > (uint64_t)size - 8) {
        free(buf);
        *why = "golden header length past end of file";
        return NULL;
    }
    cJSON *h = cJSON_ParseWithLength((const char *)buf + 8, (size_t)hlen);
    cJSON *meta = h ? cJSON_GetObjectItemCaseSensitive(h, "__metadata__") : NULL;
    cJSON *cases_str = meta ? cJSON_GetObjectItemCaseSensitive(meta, "cases") : NULL;
    cJSON *cases = cJSON_IsString(cases_str) ? cJSON_Parse(cases_str->valuestring) : NULL;
    if (!cases) {
        cJSON_Delete(h);
        free(buf);
        *why = "golden header or __metadata__.cases is not valid JSON";
        return NULL;
    }
    *gp = (golden){buf, (size_t)size, buf + 8 + hlen, h, cases};
    return gp;
}

static int find_tensor(const golden *g, const char *name, gtensor *t)
{
    cJSON *e = cJSON_GetObjectItemCaseSensitive(g->header, name);
    cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(shape) || cJSON_GetArraySize(off) != 2)
        return -1;
    t->dtype = dt->valuestring;
    t->ndim = cJSON_GetArraySize(shape);
    if (t->ndim > 4)
        return -1;
    for (int i = 0; i < t->ndim; i++)
        t->shape[i] = (int64_t)cJSON_GetArrayItem(shape, i)->valuedouble;
    size_t b = (size_t)cJSON_GetArrayItem(off, 0)->valuedouble;
    size_t en = (size_t)cJSON_GetArrayItem(off, 1)->valuedouble;
    if (b > en || (size_t)(g->data - g->file) + en > g->size)
        return -1;
    t->data = g->data + b;
    t->nbytes = en - b;
    return 0;
}

static int case_int(const cJSON *c, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, key);
    return cJSON_IsNumber(v) ? v->valueint : -1;
}

static char g_name[128];
static const char *tname(const char *cas, const char *suffix)
{
    snprintf(g_name, sizeof g_name, "%s.%s", cas, suffix);
    return g_name;
}

#endif
