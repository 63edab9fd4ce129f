/* The table of model families. Adding a family: write src/arch/<family>.c with M2O_FAMILY and
 * add its id here. */
#include "arch/family.h"

#include <stdio.h>
#include <string.h>

#define FAMILY_LIST(X) X(gpt_oss) X(qwen3_moe) X(qwen2_moe) X(qwen3_5_moe)

#define DECLARE(id) extern const model_family family_##id;
FAMILY_LIST(DECLARE)
#undef DECLARE

#define ENTRY(id) &family_##id,
static const model_family *const k_families[] = {FAMILY_LIST(ENTRY) NULL};
#undef ENTRY

const char *const family_no_skipped[] = {NULL};

const model_family *family_at(int i)
{
    int n = (int)(sizeof k_families / sizeof k_families[0]) - 1;
    return i >= 0 && i < n ? k_families[i] : NULL;
}

const model_family *family_find(const char *model_type, bool *vl)
{
    for (int i = 0; model_type && k_families[i]; i++) {
        const model_family *f = k_families[i];
        bool is_vl = f->vl_model_type && !strcmp(model_type, f->vl_model_type);
        if (is_vl || !strcmp(model_type, f->model_type)) {
            if (vl)
                *vl = is_vl;
            return f;
        }
    }
    return NULL;
}

void family_supported_types(char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = 0;
    for (int i = 0; k_families[i] && n < len; i++) {
        const model_family *f = k_families[i];
        n += (size_t)snprintf(buf + n, len - n, "%s%s", i ? ", " : "", f->model_type);
        if (f->vl_model_type && n < len)
            n += (size_t)snprintf(buf + n, len - n, ", %s", f->vl_model_type);
    }
}
