/* The build's quantization error summary and --quant-report (cli/quant_summary.h). */
#include "cli/quant_summary.h"

#include <cJSON.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Roles in the order the summary lists them. */
static const char *const kRoles[] = {"experts fc1", "experts fc2", "attention",
                                     "linear attention", "MLP", "lm_head", "other"};
#define N_ROLES (sizeof kRoles / sizeof kRoles[0])
#define N_WORST 3

/* Index of the tensor with the largest relative RMS error not in skip[0, n_skip); ties go to
 * the earlier tensor, so the list is the same on every run. -1 when none is left. */
static long worst_excluding(const quant_stats_table *t, const long *skip, int n_skip)
{
    long best = -1;
    double best_e = -1.0;
    for (size_t i = 0; i < t->n; i++) {
        bool skipped = false;
        for (int j = 0; j < n_skip; j++)
            skipped = skipped || skip[j] == (long)i;
        double e = qerr_rel_rms(&t->t[i].total);
        if (e != e)
            e = INFINITY; /* a NaN error is the worst there is */
        if (!skipped && e > best_e) {
            best = (long)i;
            best_e = e;
        }
    }
    return best;
}

static void print_roles(const quant_stats_table *t, FILE *f)
{
    for (size_t r = 0; r < N_ROLES; r++) {
        size_t n = 0;
        double sum = 0.0, worst = 0.0;
        for (size_t i = 0; i < t->n; i++) {
            if (strcmp(quant_role(t->t[i].name), kRoles[r]))
                continue;
            double e = qerr_rel_rms(&t->t[i].total);
            n++;
            sum += e;
            worst = e > worst ? e : worst;
        }
        if (n)
            fprintf(f, "  %-17s %4zu tensor%s  mean %.3e  worst %.3e\n", kRoles[r], n,
                    n == 1 ? " " : "s", sum / (double)n, worst);
    }
}

void quant_summary_print(const quant_stats_table *t, const char *report_path, FILE *f)
{
    if (!t->n)
        return;
    fprintf(f, "quantization error (relative RMS per tensor, by role):\n");
    print_roles(t, f);
    long worst[N_WORST];
    int n = 0;
    for (; n < N_WORST; n++) {
        worst[n] = worst_excluding(t, worst, n);
        if (worst[n] < 0)
            break;
        const quant_tensor_stats *s = &t->t[worst[n]];
        char fmt[64];
        qerr_format_name(&s->fmt, fmt, sizeof fmt);
        fprintf(f, "  %s %s  %.3e  (max abs %.3g, %s)\n", n ? "     " : "worst", s->name,
                qerr_rel_rms(&s->total), s->total.max_abs, fmt);
    }
    if (t->incomplete)
        fprintf(f, "  (some tensors could not be measured: out of memory)\n");
    if (report_path)
        fprintf(f, "  every tensor: %s\n", report_path);
}

static char *report_text(const quant_stats_table *t)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *ts = root ? cJSON_AddArrayToObject(root, "tensors") : NULL;
    if (!ts) {
        cJSON_Delete(root);
        return NULL;
    }
    cJSON_AddBoolToObject(root, "complete", !t->incomplete);
    for (size_t i = 0; i < t->n; i++) {
        cJSON *o = cJSON_CreateObject();
        if (!o)
            break;
        const quant_tensor_stats *s = &t->t[i];
        char fmt[64];
        qerr_format_name(&s->fmt, fmt, sizeof fmt);
        cJSON_AddStringToObject(o, "name", s->name);
        cJSON_AddStringToObject(o, "format", fmt);
        quant_entry_json(o, s->name, &s->fmt, &s->total);
        cJSON_AddItemToArray(ts, o);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    return text;
}

int quant_report_write(const char *path, const quant_stats_table *t, m2o_err *err)
{
    char *text = report_text(t);
    if (!text)
        return m2o_fail(err, "--quant-report %s: out of memory", path);
    char tmp[PATH_MAX];
    int rc = 0;
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        rc = m2o_fail(err, "--quant-report %s: path too long", path);
    } else {
        FILE *f = fopen(tmp, "w");
        bool ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
        if (f && fclose(f) != 0)
            ok = false;
        if (!ok || rename(tmp, path) != 0) {
            rc = m2o_fail(err, "--quant-report %s: cannot write it (%s); the model was written",
                          path, strerror(errno));
            unlink(tmp);
        }
    }
    free(text);
    return rc;
}

int quant_report_check_path(const char *path, m2o_err *err)
{
    char copy[PATH_MAX];
    if (!*path || snprintf(copy, sizeof copy, "%s", path) >= (int)sizeof copy)
        return m2o_fail(err, "--quant-report '%s': not a usable file path", path);
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return m2o_fail(err, "--quant-report %s: is a folder; name a file", path);
    const char *dir = dirname(copy);
    if (access(dir, W_OK | X_OK) != 0)
        return m2o_fail(err, "--quant-report %s: folder %s is not writable (%s); name a file in "
                             "an existing folder", path, dir, strerror(errno));
    return 0;
}
