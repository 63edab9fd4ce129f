#include "arch/export.h"

#include "arch/arch.h"
#include "graph/builder.h"
#include "onnx/genai_config.h"

int arch_build_graph(const model_desc *md, const st_checkpoint *ck, const export_opts *o,
                     graph *g, m2o_err *err)
{
    gb b;
    if (gb_init(&b, g, md, ck, o, err))
        return -1;
    int rc;
    switch (md->arch) {
    case ARCH_GPT_OSS:
        rc = gpt_oss_build_graph(&b, err);
        break;
    case ARCH_QWEN3_MOE:
    case ARCH_QWEN2_MOE:
        rc = qwen_moe_build_graph(&b, err);
        break;
    case ARCH_QWEN3_5_MOE:
        rc = qwen3_5_moe_build_graph(&b, err);
        break;
    default:
        rc = m2o_fail(err, "model_type %s: no graph builder for this architecture yet",
                      md->model_type);
        break;
    }
    gb_free(&b);
    return rc;
}

int export_model(const char *ckpt_dir, const model_desc *md, const st_checkpoint *ck,
                 const export_opts *o, const char *out_dir, const graph_write_opts *wo,
                 m2o_err *err)
{
    /* A missing or unsafe tokenizer is found before the conversion, not after it. */
    if (genai_check_tokenizer(ckpt_dir, err))
        return -1;
    graph *g = graph_new("main_graph");
    if (!g)
        return m2o_fail(err, "out of memory creating the graph");
    int rc = arch_build_graph(md, ck, o, g, err);
    if (!rc)
        rc = graph_write(g, out_dir, wo, err);
    graph_free(g);
    const char *model_file = wo && wo->model_filename ? wo->model_filename : "model.onnx";
    if (!rc)
        rc = genai_config_write(out_dir, md, o, model_file, err);
    if (!rc)
        rc = genai_copy_tokenizer(ckpt_dir, out_dir, err);
    return rc;
}
