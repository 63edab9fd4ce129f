/* moe2onnx: command line entry. Subcommands: build (default), verify, synth. */
#include <limits.h>
#include <math.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "arch/export.h"
#include "cli/options.h"
#include "cli/outdir.h"
#include "cli/progress.h"
#include "cli/quant_summary.h"
#include "cli/sigbus.h"
#include "cli/subcommands.h"

#define M2O_VERSION "0.1.0"

static volatile sig_atomic_t g_interrupted;

static void on_signal(int sig)
{
    g_interrupted = sig; /* the exit status is 128 + sig, as the shell reports a signal death */
}

static bool interrupted(void *user)
{
    (void)user;
    return g_interrupted != 0;
}

static void install_signal_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

/* Samples RssAnon while the build runs: the kernel keeps no anonymous high-water mark. */
static atomic_bool g_sampling;
static void *anon_sampler(void *arg)
{
    (void)arg;
    struct timespec ts = {0, 20 * 1000 * 1000};
    while (atomic_load(&g_sampling)) {
        peak_anon_bytes();
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static int fail(const char *msg, int code)
{
    fprintf(stderr, "moe2onnx: error: %s\n", msg);
    return code;
}

/* Errors from inside the conversion name files in the hidden temporary folder, which is gone
 * by the time the user reads them: name the output folder instead. */
static void name_output_not_temp(m2o_err *err, const char *tmp_path, const char *output)
{
    char *at = strstr(err->msg, tmp_path);
    if (!at)
        return;
    char rest[sizeof err->msg];
    snprintf(rest, sizeof rest, "%s", at + strlen(tmp_path));
    *at = 0;
    size_t used = strlen(err->msg);
    snprintf(err->msg + used, sizeof err->msg - used, "%s%s", output, rest);
}

/* What int8_budget decided (graph/int8_budget.h), one line before the summary. */
static void print_budget(const i8b_report *r)
{
    if (!r->active)
        return;
    printf("moe2onnx: int8_budget: %.0f bytes", (double)r->budget);
    if (r->n_placed8)
        printf(" (%.0f already spent by %d MatMul%s placed at int8)", (double)r->placed8_bytes, r->n_placed8,
               r->n_placed8 == 1 ? "" : "s");
    if (!r->n_upgraded) {
        printf("; no MatMul upgraded: ");
        if (!r->next[0])
            printf("no int4 MatMul is left to upgrade\n");
        else
            printf("the first of %d candidates by error removed per byte, %s, needs %.0f bytes\n",
                   r->n_candidates, r->next, (double)r->next_extra);
        return;
    }
    double rel_before = r->sum_sq > 0 ? sqrt(r->sse_before / r->sum_sq) : 0;
    double rel_after = r->sum_sq > 0 ? sqrt(r->sse_after / r->sum_sq) : 0;
    printf("; %d of %d int4 MatMuls upgraded to int8 for %.0f bytes; their squared error %.4g -> %.4g "
           "(-%.1f%%; relative RMS %.4g -> %.4g); measured in %.2f s\n",
           r->n_upgraded, r->n_candidates, (double)r->spent, r->sse_before, r->sse_after,
           r->sse_before > 0 ? 100.0 * (1 - r->sse_after / r->sse_before) : 0, rel_before, rel_after, r->seconds);
}

/* The writer's settings for this run: threads, progress, Ctrl-C, and the error table when it
 * is shown or written (-q alone shows no error: nothing to measure then). */
static void writer_options(const build_args *a, progress *pr, quant_stats_table *qstats,
                           graph_write_opts *wo)
{
    graph_write_opts_init(wo);
    wo->threads = a->threads;
    wo->producer_version = M2O_VERSION;
    wo->progress = progress_update;
    wo->progress_user = pr;
    wo->progress_chunks = true;
    wo->cancelled = interrupted;
    if (!a->quiet || a->quant_report)
        wo->quant_stats = qstats;
}

/* The lines after a complete model: int8_budget's choice and the error table (unless -q), then
 * the one-line summary. */
static void print_summary(const build_args *a, const out_dir *od, const model_desc *md,
                          const st_checkpoint *ck, const progress *pr, size_t skipped,
                          const i8b_report *budget, const quant_stats_table *qstats)
{
    double secs = now_seconds() - pr->start;
    double in_gb = (double)ckpt_total_bytes(ck) / 1e9;
    char skip_note[96] = "";
    if (skipped) /* mtp head, vision tower: named in arch/export.c */
        snprintf(skip_note, sizeof skip_note, "; %zu checkpoint tensors left out on purpose", skipped);
    if (!a->quiet) {
        print_budget(budget);
        quant_summary_print(qstats, a->quant_report, stdout);
    }
    printf("moe2onnx: wrote %s (%s, %s) in %.2f s; input %.2f GB at %.2f GB/s; peak RSS %.0f MB "
           "(anonymous %.0f MB)%s\n",
           od->final_path, md->model_type, a->precision, secs, in_gb, secs > 0 ? in_gb / secs : 0,
           (double)peak_rss_bytes() / 1048576.0, (double)peak_anon_bytes() / 1048576.0, skip_note);
}

static int run_export(const build_args *a, const char *in_dir, const model_desc *md, const export_opts *o,
                      m2o_err *err)
{
    out_dir od;
    if (outdir_prepare(a->output, a->overwrite, &od, err))
        return -1;
    st_checkpoint *ck = NULL;
    if (ckpt_open(in_dir, &ck, err)) {
        outdir_abort(&od);
        return -1;
    }
    if (sigbus_guard_arm(ck, od.tmp_path, a->output, od.lock_path, od.parent, od.created_top, err)) {
        ckpt_close(ck);
        outdir_abort(&od);
        return -1;
    }
    progress pr;
    progress_init(&pr, a->quiet, md->num_layers);
    quant_stats_table qstats = {0};
    graph_write_opts wo;
    writer_options(a, &pr, &qstats, &wo);
    size_t skipped = 0;
    i8b_report budget;
    int rc = export_model_stats(in_dir, md, ck, o, od.tmp_path, &wo, &skipped, &budget, err);
    progress_finish(&pr);
    if (rc == 0 && g_interrupted)
        rc = m2o_fail(err, "interrupted");
    if (rc == 0)
        rc = outdir_commit(&od, err);
    if (rc) {
        outdir_abort(&od);
        name_output_not_temp(err, od.tmp_path, a->output);
        if (g_interrupted)
            m2o_fail(err, "interrupted; nothing was written to %s", a->output);
    } else {
        print_summary(a, &od, md, ck, &pr, skipped, &budget, &qstats);
    }
    if (!rc && a->quant_report)
        rc = quant_report_write(a->quant_report, &qstats, err);
    quant_stats_table_free(&qstats);
    sigbus_guard_disarm();
    ckpt_close(ck);
    return rc;
}

static int cmd_build(int argc, char **argv)
{
    m2o_err err = {{0}};
    build_args a;
    if (build_args_parse(argc, argv, &a, &err))
        return fail(err.msg, 2);
    if (a.help) {
        build_usage(stdout);
        return 0;
    }
    export_opts o;
    if (options_validate(&a, &o, &err))
        return fail(err.msg, 2);
    char in_dir[PATH_MAX];
    if (options_input_dir(&a, in_dir, sizeof in_dir, &err) ||
        (a.quant_report && quant_report_check_path(a.quant_report, &err)))
        return fail(err.msg, 2);
    model_desc md;
    if (config_load(in_dir, &md, &err) || options_check_model(&md, &err))
        return fail(err.msg, 1);
    if (options_resolve(&a, &md, &o, &err))
        return fail(err.msg, 2);

    install_signal_handlers();
    /* Every job mallocs and frees chunk and scratch buffers of a few MiB. By default glibc maps
     * each one afresh (above its mmap threshold) or trims it back, so every job page-faults and
     * zeroes its buffers again (measured: about a quarter of an expert's time). Keeping freed
     * memory in the heap reuses it; resident memory stays bounded by the jobs in flight. */
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    atomic_store(&g_sampling, true);
    pthread_t sampler;
    bool sampling = pthread_create(&sampler, NULL, anon_sampler, NULL) == 0;
    int rc = run_export(&a, in_dir, &md, &o, &err);
    atomic_store(&g_sampling, false);
    if (sampling)
        pthread_join(sampler, NULL);
    if (rc)
        return fail(err.msg, g_interrupted ? 128 + (int)g_interrupted : 1);
    return 0;
}

int main(int argc, char **argv)
{
    /* Past a file size limit (ulimit -f) the kernel sends SIGXFSZ, whose default action kills
     * the process with a core dump; ignored, the write fails with EFBIG and is reported. */
    signal(SIGXFSZ, SIG_IGN);
    /* stdout closed early (`moe2onnx ... | head -c0`): the summary line is lost, the model is not.
     * Ignored, SIGPIPE cannot turn a complete conversion into exit 141; the write just fails. */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        build_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        printf("moe2onnx %s\n", M2O_VERSION);
        return 0;
    }
    if (!strcmp(argv[1], "verify"))
        return cmd_verify(argc - 2, argv + 2);
    if (!strcmp(argv[1], "synth"))
        return cmd_synth(argc - 2, argv + 2);
    if (!strcmp(argv[1], "build"))
        return cmd_build(argc - 2, argv + 2);
    return cmd_build(argc - 1, argv + 1);
}
