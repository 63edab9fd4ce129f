#include "arch/export.h"

#include <stdio.h>
#include <string.h>

#include "arch/family.h"
#include "graph/builder.h"
#include "onnx/genai_config.h"
#include "onnx/quant_stats.h"

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

static bool intentionally_skipped(const model_desc *md, const export_opts *o, const char *name)
{
    /* tied: the embedding is the LM head; a saved copy of it is redundant */
    if (md->tie_word_embeddings && !strcmp(name, "lm_head.weight"))
        return true;
    if (o->exclude_lm_head && !strcmp(name, "lm_head.weight")) /* extra option: no LM head */
        return true;
    /* the family's list: prefixes, or "*suffix" patterns */
    for (const char *const *skip = md->family->skipped_tensors; *skip; skip++)
        if ((*skip)[0] == '*' ? ends_with(name, *skip + 1) : !strncmp(name, *skip, strlen(*skip)))
            return true;
    return false;
}

/* A tensor no block read means the config does not describe the checkpoint (fewer layers, no
 * bias, ...): converting anyway gives a model that loads, passes verify and is wrong. */
static int check_unused(const gb *b, size_t *skipped, m2o_err *err)
{
    size_t n = ckpt_count(b->ck), unused = 0, known = 0;
    char first[3][160];
    for (size_t i = 0; i < n; i++) {
        if (b->used[i])
            continue;
        const char *name = ckpt_tensor(b->ck, i)->name;
        if (intentionally_skipped(b->md, b->o, name)) {
            known++;
        } else if (unused++ < 3) {
            snprintf(first[unused - 1], sizeof first[0], "%s", name);
        }
    }
    if (skipped)
        *skipped = known;
    if (!unused)
        return 0;
    return m2o_fail(err, "checkpoint: %zu tensor%s the %s architecture does not use with this config.json "
                         "(%s%s%s%s%s%s); the config does not describe the checkpoint (num_hidden_layers? "
                         "attention_bias?) — pass the config.json that came with it",
                    unused, unused == 1 ? "" : "s", b->md->model_type, first[0], unused > 1 ? ", " : "",
                    unused > 1 ? first[1] : "", unused > 2 ? ", " : "", unused > 2 ? first[2] : "",
                    unused > 3 ? ", ..." : "");
}

int arch_build_graph(const model_desc *md, const st_checkpoint *ck, const export_opts *o,
                     graph *g, m2o_err *err)
{
    return arch_build_graph_checked(md, ck, o, g, NULL, err);
}

/* One build; plan (int8_budget) is recorded into or applied, when given. */
static int build_once(const model_desc *md, const st_checkpoint *ck, const export_opts *o, graph *g,
                      size_t *skipped, i8b_plan *plan, m2o_err *err)
{
    gb b;
    if (gb_init(&b, g, md, ck, o, err))
        return -1;
    b.budget = plan;
    int rc = md->family->build_graph(&b, err);
    if (!rc && b.used && !(plan && plan->collecting))
        rc = check_unused(&b, skipped, err);
    gb_free(&b);
    return rc;
}

/* int8_budget: a first build into a scratch graph lists the MatMuls, the budget measures and
 * chooses (graph/int8_budget.h), the second build writes them. */
static int build_with_budget(const model_desc *md, const st_checkpoint *ck, const export_opts *o, graph *g,
                             size_t *skipped, int threads, i8b_report *report, m2o_err *err)
{
    i8b_plan plan = {.collecting = true};
    graph *scratch = graph_new("int8_budget_scan");
    if (!scratch)
        return m2o_fail(err, "out of memory creating the graph");
    int rc = build_once(md, ck, o, scratch, NULL, &plan, err);
    graph_free(scratch);
    wt_opts wo = {.io = o->io_dtype, .allow_nonfinite = o->allow_nonfinite};
    if (!rc)
        rc = i8b_decide(&plan, &o->quant, &wo, threads, err);
    plan.collecting = false;
    if (!rc)
        rc = build_once(md, ck, o, g, skipped, &plan, err);
    if (!rc && report)
        *report = plan.report;
    i8b_plan_free(&plan);
    return rc;
}

int arch_build_graph_report(const model_desc *md, const st_checkpoint *ck, const export_opts *o, graph *g,
                            size_t *skipped, int threads, i8b_report *report, m2o_err *err)
{
    if (report)
        memset(report, 0, sizeof *report);
    if (o->quant.filled && i8b_requested(&o->quant))
        return build_with_budget(md, ck, o, g, skipped, threads, report, err);
    return build_once(md, ck, o, g, skipped, NULL, err);
}

int arch_build_graph_checked(const model_desc *md, const st_checkpoint *ck, const export_opts *o,
                             graph *g, size_t *skipped, m2o_err *err)
{
    return arch_build_graph_report(md, ck, o, g, skipped, 0, NULL, err);
}

int export_model(const char *ckpt_dir, const model_desc *md, const st_checkpoint *ck,
                 const export_opts *o, const char *out_dir, const graph_write_opts *wo,
                 m2o_err *err)
{
    return export_model_stats(ckpt_dir, md, ck, o, out_dir, wo, NULL, NULL, err);
}

int export_model_stats(const char *ckpt_dir, const model_desc *md, const st_checkpoint *ck,
                       const export_opts *o, const char *out_dir, const graph_write_opts *wo,
                       size_t *skipped, i8b_report *budget, m2o_err *err)
{
    /* A missing or unsafe tokenizer is found before the conversion, not after it. */
    if (genai_check_tokenizer(ckpt_dir, err))
        return -1;
    graph *g = graph_new("main_graph");
    if (!g)
        return m2o_fail(err, "out of memory creating the graph");
    graph_enable_quant_stats(g, wo && wo->quant_stats); /* only measured when reported */
    int rc = arch_build_graph_report(md, ck, o, g, skipped, wo ? wo->threads : 0, budget, err);
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
