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

static int usage_error(const char *msg, const char *arg)
{
    fprintf(stderr, "moe2onnx verify: %s%s%s\n", msg, arg ? ": " : "", arg ? arg : "");
    verify_usage(stderr);
    return 2;
}

int cmd_verify(int argc, char **argv)
{
    const char *in = NULL, *out = NULL;
    bool json = false, all = false;
    verify_opts o;
    verify_opts_init(&o);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            verify_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--all")) {
            all = true;
        } else if (!strcmp(a, "-i") || !strcmp(a, "--input")) {
            if (!has_value)
                return usage_error("missing value after", a);
            in = argv[++i];
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (!has_value)
                return usage_error("missing value after", a);
            out = argv[++i];
        } else if (!strcmp(a, "--threads")) {
            char *end;
            long v = has_value ? strtol(argv[i + 1], &end, 10) : -1;
            if (!has_value || *end || v < 0 || v > 4096)
                return usage_error("--threads needs a number 0..4096", has_value ? argv[i + 1] : NULL);
            o.threads = (int)v;
            i++;
        } else {
            return usage_error("unknown argument", a);
        }
    }
    if (!in || !out)
        return usage_error("both -i CHECKPOINT_DIR and -o MODEL_DIR are required", NULL);

    verify_report r;
    verify_report_init(&r);
    m2o_err err = {{0}};
    if (verify_run(in, out, &o, &r, &err)) {
        verify_report_free(&r);
        fprintf(stderr, "moe2onnx verify: error: %s\n", err.msg);
        if (json)
            printf("{\"verdict\": \"ERROR\", \"error\": \"see stderr\"}\n");
        return 1;
    }
    bool pass = verify_passed(&r);
    if (json) {
        char *text = verify_report_json(&r);
        if (!text) {
            verify_report_free(&r);
            fprintf(stderr, "moe2onnx verify: error: out of memory printing the report\n");
            return 1;
        }
        printf("%s\n", text);
        free(text);
    } else {
        verify_print_table(&r, all, stdout);
    }
    verify_report_free(&r);
    return pass ? 0 : 1;
}
