/* `moe2onnx synth`: write a synthetic Hub-layout checkpoint (real names and shapes, random
 * values) for benchmarks and the built-in example. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/progress.h"
#include "cli/subcommands.h"
#include "synth/synth.h"

static void synth_help(FILE *f)
{
    fputs("usage: moe2onnx synth --preset NAME -o DIR [--layers N] [--experts mxfp4|bf16]\n"
          "                      [--shard-gb G] [--seed S] [--threads N] [--sparse] [-q]\n"
          "Writes a checkpoint with the real tensor names, dtypes and shapes of a known model and\n"
          "deterministic random values. Presets:\n",
          f);
    synth_usage(f);
}

static int parse_u64(const char *opt, const char *v, unsigned long long max, unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || end == v || v[0] == '-' || x > max) {
        fprintf(stderr, "moe2onnx synth: error: %s '%s' is not an integer in 0..%llu\n", opt, v, max);
        return -1;
    }
    *out = x;
    return 0;
}

static void synth_progress(void *ctx, const char *file, uint64_t done, uint64_t total)
{
    (void)file;
    progress_update(ctx, "", done, total);
}

/* Interrupt handling: SIGINT/TERM/HUP are blocked in every thread and taken here, where it is
 * safe to list the output folder, so an interrupted synth leaves no .partial shard behind. */
static sigset_t g_stop_signals;
static const char *g_synth_dir;

static void remove_partial_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n > 8 && !strcmp(e->d_name + n - 8, ".partial")) {
            char path[4200];
            if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < sizeof path)
                unlink(path);
        }
    }
    closedir(d);
}

static void *interrupt_watcher(void *arg)
{
    (void)arg;
    int sig = 0;
    if (sigwait(&g_stop_signals, &sig) != 0)
        return NULL;
    remove_partial_files(g_synth_dir);
    if (isatty(STDERR_FILENO))
        fputs("\r\033[K", stderr); /* off the progress line */
    fprintf(stderr, "moe2onnx synth: error: interrupted; partial shards removed from %s\n", g_synth_dir);
    _exit(128 + sig); /* the exit status a signal death would give */
}

static void watch_interrupts(const char *dir)
{
    g_synth_dir = dir;
    sigemptyset(&g_stop_signals);
    sigaddset(&g_stop_signals, SIGINT);
    sigaddset(&g_stop_signals, SIGTERM);
    sigaddset(&g_stop_signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &g_stop_signals, NULL); /* before synth starts its threads */
    pthread_t t;
    if (pthread_create(&t, NULL, interrupt_watcher, NULL) == 0)
        pthread_detach(t);
    else
        pthread_sigmask(SIG_UNBLOCK, &g_stop_signals, NULL);
}

typedef enum args_result { ARGS_RUN, ARGS_HELP, ARGS_BAD } args_result;

/* Reads the command line into o; a usage error is printed here. Options take the next word as
 * their value, so "--layers -q" is a bad number, not a flag. */
static args_result parse_synth_args(int argc, char **argv, synth_opts *o, bool *quiet)
{
    m2o_err err = {{0}};
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        unsigned long long x;
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            synth_help(stdout);
            return ARGS_HELP;
        } else if (!strcmp(s, "-q") || !strcmp(s, "--quiet")) {
            *quiet = true;
        } else if (!strcmp(s, "--sparse")) {
            o->sparse = true;
        } else if (!v) {
            fprintf(stderr, "moe2onnx synth: error: %s needs a value (see moe2onnx synth --help)\n", s);
            return ARGS_BAD;
        } else if (!strcmp(s, "--preset")) {
            o->preset = v, i++;
        } else if (!strcmp(s, "-o") || !strcmp(s, "--output")) {
            o->out_dir = v, i++;
        } else if (!strcmp(s, "--layers")) {
            if (parse_u64(s, v, 512, &x)) return ARGS_BAD;
            o->num_layers = (int)x, i++;
        } else if (!strcmp(s, "--experts")) {
            if (synth_parse_experts(v, &o->experts, &err)) break;
            i++;
        } else if (!strcmp(s, "--shard-gb")) {
            if (parse_u64(s, v, 1000, &x)) return ARGS_BAD;
            o->shard_bytes = x * 1000000000ull, i++;
        } else if (!strcmp(s, "--seed")) {
            if (parse_u64(s, v, ~0ull, &x)) return ARGS_BAD;
            o->seed = x, i++;
        } else if (!strcmp(s, "--threads")) {
            if (parse_u64(s, v, 1024, &x)) return ARGS_BAD;
            o->threads = (int)x, i++;
        } else {
            fprintf(stderr, "moe2onnx synth: error: unknown argument '%s' (see moe2onnx synth --help)\n", s);
            return ARGS_BAD;
        }
    }
    if (err.msg[0]) {
        fprintf(stderr, "moe2onnx synth: error: %s\n", err.msg);
        return ARGS_BAD;
    }
    return ARGS_RUN;
}

int cmd_synth(int argc, char **argv)
{
    synth_opts o;
    memset(&o, 0, sizeof o);
    m2o_err err = {{0}};
    bool quiet = false;
    args_result a = parse_synth_args(argc, argv, &o, &quiet);
    if (a != ARGS_RUN)
        return a == ARGS_HELP ? 0 : 2;
    if (!o.preset || !o.out_dir) {
        fprintf(stderr, "moe2onnx synth: error: --preset NAME and -o DIR are required (see moe2onnx synth --help)\n");
        return 2;
    }
    if (synth_parse_preset(o.preset, &err) < 0) {
        fprintf(stderr, "moe2onnx synth: error: %s\n", err.msg);
        return 2;
    }
    watch_interrupts(o.out_dir);
    progress pr;
    progress_init(&pr, quiet, 0);
    o.progress = synth_progress;
    o.progress_ctx = &pr;
    synth_summary sum;
    int rc = synth_describe(&o, &sum, &err);
    if (rc == 0)
        rc = synth_write(&o, &err);
    progress_finish(&pr);
    if (rc) {
        fprintf(stderr, "moe2onnx synth: error: %s\n", err.msg);
        return 1;
    }
    double secs = now_seconds() - pr.start;
    printf("moe2onnx synth: wrote %s (%s, %d layers, %d shard%s, %.2f GB) in %.2f s\n", o.out_dir, o.preset,
           sum.num_layers, sum.num_shards, sum.num_shards == 1 ? "" : "s", (double)sum.tensor_bytes / 1e9, secs);
    return 0;
}
