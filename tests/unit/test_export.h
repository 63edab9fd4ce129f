/* One converted fixture for the graph tests: exported into a scratch folder with two writer
 * threads and read back with the model reader. Shared by the per-family graph tests so each
 * states only how its options are built. */
#ifndef M2O_TEST_EXPORT_H
#define M2O_TEST_EXPORT_H

#include <stdlib.h>
#include <string.h>

#include "arch/export.h"
#include "arch/model_desc.h"
#include "onnx/model_reader.h"
#include "test_graph_util.h"

typedef struct exported {
    char dir[512];
    onnx_model *m;
    model_desc md;
    st_checkpoint *ck;
    export_opts o;
    char *genai; /* genai_config.json text */
} exported;

/* Zeroes x, loads src's config into x->md, opens its checkpoint and makes x->dir, so that options
 * can be resolved against the model (and name x->dir) before exported_write. */
static inline int exported_prepare(const char *src, exported *x, m2o_err *err)
{
    memset(x, 0, sizeof *x);
    if (!make_temp_dir(x->dir, sizeof x->dir))
        return m2o_fail(err, "cannot make a temporary directory");
    return config_load(src, &x->md, err) || ckpt_open(src, &x->ck, err) ? -1 : 0;
}

/* Converts x->md / x->ck with x->o into x->dir, opens model.onnx and reads genai_config.json. */
static inline int exported_write(const char *src, exported *x, m2o_err *err)
{
    graph_write_opts wo;
    graph_write_opts_init(&wo);
    wo.threads = 2;
    char path[600];
    snprintf(path, sizeof path, "%s/model.onnx", x->dir);
    if (export_model(src, &x->md, x->ck, &x->o, x->dir, &wo, err) || onnx_model_open(path, &x->m, err))
        return -1;
    size_t n;
    x->genai = (char *)read_whole(x->dir, "genai_config.json", &n);
    return x->genai ? 0 : m2o_fail(err, "no genai_config.json written in %s", x->dir);
}

/* exported_prepare then exported_write with options o already resolved. */
static inline int exported_convert(const char *src, const export_opts *o, exported *x, m2o_err *err)
{
    if (exported_prepare(src, x, err))
        return -1;
    x->o = *o;
    return exported_write(src, x, err);
}

static inline void exported_release(exported *x)
{
    if (x->m)
        onnx_model_close(x->m);
    if (x->ck)
        ckpt_close(x->ck);
    if (x->dir[0])
        remove_temp_dir(x->dir);
    free(x->genai);
    memset(x, 0, sizeof *x);
}

#endif
