/* `moe2onnx verify -i CHECKPOINT -o MODEL_DIR [--json] [--all] [--threads N]`: exit 0 when the
 * folder is proven consistent with the checkpoint, 1 when a check fails (or cannot run), 2 on a
 * usage error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/subcommands.h"
#include "verify/verify.h"

static void verify_usage(FILE *f)
{
    fprintf(f,
            "usage: moe2onnx verify -i CHECKPOINT_DIR -o MODEL_DIR [--json] [--all] "
            "[--threads N]\n\n"
            "Decodes every QMoE, MoE and MatMulNBits weight of an exported folder through the\n"
            "layout its nodes declare and compares it with the checkpoint, element by element,\n"
            "against the error its format allows; checks graph invariants and genai_config.json.\n\n"
            "  -i, --input DIR    the checkpoint the folder was exported from\n"
            "  -o, --output DIR   the exported model folder\n"
            "  --json             print a machine-readable report instead of the table\n"
            "  --all              list every tensor in the table\n"
            "  --threads N        worker threads (default: all cores)\n"
            "exit status: 0 pass, 1 fail, 2 usage\n");
}

typedef enum args_result { ARGS_RUN, ARGS_HELP, ARGS_BAD } args_result;

static args_result usage_error(const char *msg, const char *arg)
{
    fprintf(stderr, "moe2onnx verify: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    verify_usage(stderr);
    return ARGS_BAD;
}

/* What the command line asks for. */
typedef struct verify_args {
    const char *in, *out;
    bool json, all;
    verify_opts o;
} verify_args;

/* Reads the command line into a; a usage error is printed here. */
static args_result parse_verify_args(int argc, char **argv, verify_args *a)
{
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        bool has_value = i + 1 < argc;
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            verify_usage(stdout);
            return ARGS_HELP;
        } else if (!strcmp(s, "--json")) {
            a->json = true;
        } else if (!strcmp(s, "--all")) {
            a->all = true;
        } else if (!strcmp(s, "-i") || !strcmp(s, "--input")) {
            if (!has_value)
                return usage_error("missing value after", s);
            a->in = argv[++i];
        } else if (!strcmp(s, "-o") || !strcmp(s, "--output")) {
            if (!has_value)
                return usage_error("missing value after", s);
            a->out = argv[++i];
        } else if (!strcmp(s, "--threads")) {
            char *end;
            long v = has_value ? strtol(argv[i + 1], &end, 10) : -1;
            if (!has_value || *end || v < 0 || v > 4096)
                return usage_error("--threads needs a number 0..4096", has_value ? argv[i + 1] : NULL);
            a->o.threads = (int)v;
            i++;
        } else {
            return usage_error("unknown argument", s);
        }
    }
    if (!a->in || !a->out)
        return usage_error("both -i CHECKPOINT_DIR and -o MODEL_DIR are required", NULL);
    return ARGS_RUN;
}

/* The report as a table (--all: every tensor) or as JSON; 1 when it cannot be printed. */
static int print_report(const verify_report *r, const verify_args *a)
{
    if (!a->json) {
        verify_print_table(r, a->all, stdout);
        return 0;
    }
    char *text = verify_report_json(r);
    if (!text) {
        fprintf(stderr, "moe2onnx verify: error: out of memory printing the report\n");
        return 1;
    }
    printf("%s\n", text);
    free(text);
    return 0;
}

int cmd_verify(int argc, char **argv)
{
    verify_args a = {0};
    verify_opts_init(&a.o);
    args_result parsed = parse_verify_args(argc, argv, &a);
    if (parsed != ARGS_RUN)
        return parsed == ARGS_HELP ? 0 : 2;

    verify_report r;
    verify_report_init(&r);
    m2o_err err = {{0}};
    if (verify_run(a.in, a.out, &a.o, &r, &err)) {
        verify_report_free(&r);
        fprintf(stderr, "moe2onnx verify: error: %s\n", err.msg);
        if (a.json)
            printf("{\"verdict\": \"ERROR\", \"error\": \"see stderr\"}\n");
        return 1;
    }
    bool pass = verify_passed(&r);
    int printed = print_report(&r, &a);
    verify_report_free(&r);
    return printed ? 1 : pass ? 0 : 1;
}
