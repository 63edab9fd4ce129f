/* model.safetensors.index.json: parsed, validated and looked up. */
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


static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const st_index_entry *)a)->tensor, ((const st_index_entry *)b)->tensor);
}

void st_index_free(st_index *ix)
{
    if (!ix)
        return;
    for (size_t i = 0; i < ix->n_shards; i++)
        free(ix->shards[i]);
    free(ix->shards);
    for (size_t i = 0; i < ix->n_entries; i++)
        free((char *)ix->entries[i].tensor);
    free(ix->entries);
    free(ix);
}

const st_index_entry *st_index_find(const st_index *ix, const char *tensor)
{
    st_index_entry key = {.tensor = tensor};
    return bsearch(&key, ix->entries, ix->n_entries, sizeof key, cmp_entry);
}

static bool plain_file_name(const char *s)
{
    return s[0] && strcmp(s, ".") && strcmp(s, "..") && !strchr(s, '/') && !strchr(s, '\\');
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Distinct shard names, sorted (n log n even for a hostile index naming a shard per tensor). */
static int collect_shards(st_index *ix, const char **names, size_t n, const char *what, m2o_err *err)
{
    qsort(names, n, sizeof *names, cmp_str_ptr);
    ix->shards = m2o_calloc(n, sizeof *ix->shards, err);
    if (!ix->shards)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (i && !strcmp(names[i - 1], names[i]))
            continue;
        if (!(ix->shards[ix->n_shards] = strdup(names[i])))
            return m2o_fail(err, "out of memory reading %s", what);
        ix->n_shards++;
    }
    return 0;
}

static int fill_index(st_index *ix, const cJSON *map, const char *what, m2o_err *err)
{
    size_t n = 0;
    for (const cJSON *e = map->child; e; e = e->next) {
        if (!cJSON_IsString(e))
            return m2o_fail(err, "%s: weight_map entry for tensor '%s' is %s, expected a shard file "
                            "name — the index is corrupt; re-download it", what, e->string,
                            json_type_name(e));
        if (!plain_file_name(e->valuestring))
            return m2o_fail(err, "%s: tensor '%s' maps to \"%.200s\", which is not a plain file name "
                            "in the checkpoint folder — the index is corrupt or unsafe", what,
                            e->string, e->valuestring);
        n++;
    }
    if (!n)
        return m2o_fail(err, "%s: weight_map is empty — the index is corrupt; re-download it", what);
    const char **names = m2o_malloc(n * sizeof *names, err);
    ix->entries = m2o_calloc(n, sizeof *ix->entries, err);
    if (!names || !ix->entries) {
        free(names);
        return -1;
    }
    size_t k = 0;
    for (const cJSON *e = map->child; e; e = e->next)
        names[k++] = e->valuestring;
    int rc = collect_shards(ix, names, n, what, err);
    free(names);
    if (rc)
        return -1;
    for (const cJSON *e = map->child; e; e = e->next) {
        st_index_entry *en = &ix->entries[ix->n_entries];
        const char *key = e->valuestring;
        char **hit = bsearch(&key, ix->shards, ix->n_shards, sizeof *ix->shards, cmp_str_ptr);
        en->shard = (size_t)(hit - ix->shards);
        if (!(en->tensor = strdup(e->string)))
            return m2o_fail(err, "out of memory reading %s", what);
        ix->n_entries++;
    }
    qsort(ix->entries, ix->n_entries, sizeof *ix->entries, cmp_entry);
    for (size_t i = 1; i < ix->n_entries; i++)
        if (!strcmp(ix->entries[i - 1].tensor, ix->entries[i].tensor))
            return m2o_fail(err, "%s: tensor '%s' appears twice in weight_map — the index is "
                            "corrupt; re-download it", what, ix->entries[i].tensor);
    return 0;
}

int st_index_parse(const char *json, size_t len, const char *what, st_index **out, m2o_err *err)
{
    *out = NULL;
    cJSON *root = st_parse_json_text(json, len, what, "shard index",
                                  "the index is corrupt; re-download it", err);
    if (!root)
        return -1;
    int rc = -1;
    st_index *ix = NULL;
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "metadata");
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(root))
        m2o_fail(err, "%s: shard index is %s, expected a JSON object with \"weight_map\" — the "
                 "index is corrupt; re-download it", what, json_type_name(root));
    else if (meta && !cJSON_IsObject(meta) && !cJSON_IsNull(meta))
        m2o_fail(err, "%s: \"metadata\" is %s, expected an object — the index is corrupt; "
                 "re-download it", what, json_type_name(meta));
    else if (!cJSON_IsObject(map))
        m2o_fail(err, "%s: \"weight_map\" is %s, expected an object of tensor → shard file — the "
                 "index is corrupt; re-download it", what, map ? json_type_name(map) : "missing");
    else if ((ix = m2o_calloc(1, sizeof *ix, err)) && !fill_index(ix, map, what, err))
        rc = 0;
    cJSON_Delete(root);
    if (rc) {
        st_index_free(ix);
        return -1;
    }
    *out = ix;
    return 0;
}
