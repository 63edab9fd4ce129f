/* The verify report: recording faults, notes and tensor rows; the short table, the verdict line
 * and the JSON form. */
#include <cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx/quant_stats.h"
#include "verify/verify_internal.h"

static const char *const kFaultNames[VF_COUNT] = {
    [VF_ERROR_BOUND] = "error_bound",
    [VF_SCALES_ABS] = "scales_abs",
    [VF_NK_SWAPPED] = "nk_swapped",
    [VF_GATE_UP_ORDER] = "gate_up_not_interleaved",
    [VF_NIBBLE_ORDER] = "nibble_order",
    [VF_CUTLASS_MISSING] = "cutlass_layout_missing",
    [VF_CUTLASS_UNEXPECTED] = "cutlass_layout_unexpected",
    [VF_FP4_TRANSPOSE] = "fp4_transpose_missing",
    [VF_PASSTHROUGH] = "passthrough_differs",
    [VF_SHAPE] = "shape",
    [VF_MISSING] = "missing",
    [VF_UNMATCHED] = "unmatched",
    [VF_DUPLICATE_NODE] = "duplicate_node_name",
    [VF_DUPLICATE_VALUE] = "duplicate_value_name",
    [VF_ROUTER_QUANTIZED] = "router_quantized",
    [VF_QMOE_ATTR] = "qmoe_attribute",
    [VF_GENAI_CONFIG] = "genai_config",
    [VF_GRAPH] = "graph",
    [VF_VALUE] = "value_mismatch",
    [VF_UNCHECKED] = "unchecked_initializer",
    [VF_GRAPH_ORDER] = "graph_order",
    [VF_FILES] = "folder_files",
};

const char *vfault_code_name(vfault_code c)
{
    return c < VF_COUNT && kFaultNames[c] ? kFaultNames[c] : "unknown";
}

void verify_opts_init(verify_opts *o)
{
    memset(o, 0, sizeof *o);
}

void verify_report_init(verify_report *r)
{
    memset(r, 0, sizeof *r);
}

void verify_report_free(verify_report *r)
{
    free(r->tensors);
    free(r->faults);
    for (size_t i = 0; i < r->n_notes; i++)
        free(r->notes[i]);
    free(r->notes);
    memset(r, 0, sizeof *r);
}

/* Grows an array by one slot; false when out of memory (the entry is then dropped: a report
 * that cannot grow still fails through the faults already recorded or the caller's check). */
static bool grow(void **arr, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap)
        return true;
    size_t nc = *cap ? 2 * *cap : 16;
    void *p = realloc(*arr, nc * elem);
    if (!p)
        return false;
    *arr = p;
    *cap = nc;
    return true;
}

void verify_add_fault(verify_report *r, vfault_code code, const char *where, const char *fmt, ...)
{
    if (!grow((void **)&r->faults, &r->cap_faults, r->n_faults, sizeof *r->faults))
        return;
    vfault *f = &r->faults[r->n_faults++];
    f->code = code;
    snprintf(f->where, sizeof f->where, "%s", where ? where : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->msg, sizeof f->msg, fmt, ap);
    va_end(ap);
}

void verify_add_note(verify_report *r, const char *fmt, ...)
{
    if (!grow((void **)&r->notes, &r->cap_notes, r->n_notes, sizeof *r->notes))
        return;
    char buf[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char *s = strdup(buf);
    if (s)
        r->notes[r->n_notes++] = s;
}

int verify_find_fault(const verify_report *r, vfault_code code)
{
    for (size_t i = 0; i < r->n_faults; i++)
        if (r->faults[i].code == code)
            return (int)i;
    return -1;
}

size_t verify_add_tensor(verify_report *r, const vtensor *t)
{
    if (!grow((void **)&r->tensors, &r->cap_tensors, r->n_tensors, sizeof *r->tensors)) {
        verify_add_fault(r, VF_MISSING, t->name, "out of memory recording %s", t->name);
        return r->n_tensors ? r->n_tensors - 1 : 0;
    }
    r->tensors[r->n_tensors] = *t;
    return r->n_tensors++;
}

bool verify_passed(const verify_report *r)
{
    if (r->n_faults)
        return false;
    for (size_t i = 0; i < r->n_tensors; i++)
        if (!r->tensors[i].pass)
            return false;
    return true;
}

void verify_verdict_line(const verify_report *r, char *buf, size_t len)
{
    if (verify_passed(r)) {
        snprintf(buf, len, "verify: PASS (%zu tensors, %zu bit-exact, %zu graph checks)",
                 r->n_tensors, r->n_bit_exact, r->n_checks);
        return;
    }
    if (r->n_faults) {
        const vfault *f = &r->faults[0];
        snprintf(buf, len, "verify: FAIL: [%s] %s%s", vfault_code_name(f->code), f->msg,
                 r->n_faults > 1 ? " (and more, see above)" : "");
        return;
    }
    for (size_t i = 0; i < r->n_tensors; i++) {
        if (!r->tensors[i].pass) {
            snprintf(buf, len, "verify: FAIL: %s exceeds its %s bound", r->tensors[i].name,
                     r->tensors[i].format);
            return;
        }
    }
}

static void print_row(FILE *f, const vtensor *t)
{
    const char *verdict = !t->pass ? "FAIL" : t->bit_exact ? "exact" : "ok";
    fprintf(f, "%-58.58s %-22.22s %10.3e %10.3e %10.3e %6.3f  %s\n", t->name, t->format,
            t->rel_rms, t->rel_rms_bound, t->max_abs, t->max_ratio, verdict);
}

void verify_print_table(const verify_report *r, bool all_rows, FILE *f)
{
    if (r->n_tensors) {
        fprintf(f, "%-58s %-22s %10s %10s %10s %6s  %s\n", "tensor", "format", "rel RMS",
                "RMS bound", "max abs", "/bound", "verdict");
        bool few = all_rows || r->n_tensors <= 48;
        for (size_t i = 0; i < r->n_tensors; i++) {
            const vtensor *t = &r->tensors[i];
            bool worst = true; /* worst max_ratio of its format */
            for (size_t j = 0; j < r->n_tensors && !few && worst; j++)
                if (j != i && !strcmp(r->tensors[j].format, t->format) &&
                    (r->tensors[j].max_ratio > t->max_ratio ||
                     (r->tensors[j].max_ratio == t->max_ratio && j < i)))
                    worst = false;
            if (few || !t->pass || worst)
                print_row(f, t);
        }
        if (!few)
            fprintf(f, "(%zu tensors: failing ones and the worst of each format shown; --all "
                       "lists every one)\n", r->n_tensors);
    }
    for (size_t i = 0; i < r->n_notes; i++)
        fprintf(f, "note: %s\n", r->notes[i]);
    for (size_t i = 0; i < r->n_faults; i++)
        fprintf(f, "fault [%s]: %s\n", vfault_code_name(r->faults[i].code), r->faults[i].msg);
    verify_print_error_summary(r, f);
    char line[1200];
    verify_verdict_line(r, line, sizeof line);
    fprintf(f, "%s\n", line);
}

/* JSON numbers cannot be Inf/NaN: those become null. */
static void add_num(cJSON *o, const char *k, double v)
{
    if (isfinite(v))
        cJSON_AddNumberToObject(o, k, v);
    else
        cJSON_AddNullToObject(o, k);
}

char *verify_report_json(const verify_report *r)
{
    cJSON *root = cJSON_CreateObject();
    if (!root)
        return NULL;
    cJSON_AddStringToObject(root, "verdict", verify_passed(r) ? "PASS" : "FAIL");
    char line[1200];
    verify_verdict_line(r, line, sizeof line);
    cJSON_AddStringToObject(root, "summary", line);
    cJSON_AddStringToObject(root, "provider", r->provider);
    cJSON_AddStringToObject(root, "model_type", r->model_type);
    cJSON_AddNumberToObject(root, "graph_checks", (double)r->n_checks);
    cJSON_AddNumberToObject(root, "bit_exact", (double)r->n_bit_exact);
    cJSON *ts = cJSON_AddArrayToObject(root, "tensors");
    for (size_t i = 0; i < r->n_tensors; i++) {
        const vtensor *t = &r->tensors[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", t->name);
        cJSON_AddStringToObject(o, "node", t->node);
        cJSON_AddStringToObject(o, "source", t->source);
        cJSON_AddStringToObject(o, "format", t->format);
        cJSON_AddNumberToObject(o, "elements", (double)t->elements);
        add_num(o, "rel_rms", t->rel_rms);
        add_num(o, "rel_rms_bound", t->rel_rms_bound);
        add_num(o, "max_abs", t->max_abs);
        add_num(o, "max_error_over_bound", t->max_ratio);
        if (t->has_qfmt)
            quant_entry_json(o, t->name, &t->qfmt, NULL);
        if (t->bit_exact_required)
            cJSON_AddBoolToObject(o, "bit_exact", t->bit_exact);
        cJSON_AddBoolToObject(o, "pass", t->pass);
        cJSON_AddItemToArray(ts, o);
    }
    cJSON *fs = cJSON_AddArrayToObject(root, "faults");
    for (size_t i = 0; i < r->n_faults; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "code", vfault_code_name(r->faults[i].code));
        cJSON_AddStringToObject(o, "where", r->faults[i].where);
        cJSON_AddStringToObject(o, "message", r->faults[i].msg);
        cJSON_AddItemToArray(fs, o);
    }
    cJSON *ns = cJSON_AddArrayToObject(root, "notes");
    for (size_t i = 0; i < r->n_notes; i++)
        cJSON_AddItemToArray(ns, cJSON_CreateString(r->notes[i]));
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    return text;
}
