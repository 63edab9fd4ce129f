#include "cli/progress.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void progress_init(progress *p, bool quiet, int num_layers)
{
    memset(p, 0, sizeof *p);
    p->out = stderr;
    p->enabled = !quiet;
    p->terminal = isatty(fileno(stderr));
    p->num_layers = num_layers;
    p->start = now_seconds();
    p->last_draw = p->start; /* a conversion shorter than the log interval logs no progress line */
    const char *every = getenv("M2O_PROGRESS_SECONDS");
    p->log_seconds = every && atof(every) > 0 ? atof(every) : PROGRESS_LOG_SECONDS;
}

static int layer_of(const char *tensor)
{
    const char *s = strstr(tensor, "layers.");
    return s ? atoi(s + 7) : -1;
}

/* Columns of the terminal on stderr: the kernel's window size, else $COLUMNS, else 80. */
static int terminal_width(int fd)
{
    struct winsize ws;
    if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    const char *env = getenv("COLUMNS");
    int cols = env ? atoi(env) : 0;
    return cols > 0 ? cols : 80;
}

/* Formats the status line without the tensor name; returns its length. */
static int format_status(const progress *p, const char *tensor, uint64_t done, uint64_t total, double t,
                         char *line, size_t size)
{
    double el = t - p->start, frac = total ? (double)done / (double)total : 1.0;
    double rate = el > 0 ? (double)done / el : 0;
    double eta = rate > 0 ? (double)(total - done) / rate : 0;
    char bar[26];
    int filled = (int)(frac * 24);
    for (int i = 0; i < 24; i++) bar[i] = i < filled ? '#' : '.';
    bar[24] = 0;
    int layer = layer_of(tensor);
    char where[48] = "";
    if (layer >= 0)
        snprintf(where, sizeof where, " layer %d/%d", layer + 1, p->num_layers);
    char eta_s[24] = "ETA --";
    if (el >= 0.5 && frac >= 0.01) /* the rate means nothing before that */
        snprintf(eta_s, sizeof eta_s, "ETA %.0fs", eta);
    return snprintf(line, size, "[%s] %3.0f%%%s %.2f/%.2f GB %.0f MB/s %s", bar, frac * 100, where,
                    (double)done / 1e9, (double)total / 1e9, rate / 1e6, eta_s);
}

/* A terminal line that wraps scrolls at every redraw: the line (tensor name last) is cut to one
 * column less than the terminal, so the cursor never reaches the last column. */
static void draw_terminal(progress *p, const char *tensor, const char *status)
{
    int cols = terminal_width(fileno(p->out)) - 1;
    char line[512];
    int w = snprintf(line, sizeof line, "%s %s", status, tensor);
    if (w > cols) w = cols;
    if (w >= (int)sizeof line) w = (int)sizeof line - 1;
    if (w < 0) w = 0;
    fprintf(p->out, "\r%.*s", w, line);
    if (w < p->last_width)
        fprintf(p->out, "%*s", p->last_width - w, "");
    p->last_width = w;
    fflush(p->out);
}

void progress_update(void *user, const char *tensor, uint64_t done, uint64_t total)
{
    progress *p = user;
    peak_anon_bytes(); /* sample the anonymous high-water mark at every tensor */
    if (!p->enabled)
        return;
    double t = now_seconds();
    /* A log (stderr not a terminal) gets one plain line every few seconds, not redraws. */
    double every = p->terminal ? 0.1 : p->log_seconds;
    if (t - p->last_draw < every && (p->terminal ? done < total : true))
        return;
    if (!p->terminal && done >= total)
        return; /* the summary line follows */
    p->last_draw = t;
    char status[256];
    format_status(p, tensor, done, total, t, status, sizeof status);
    if (p->terminal) {
        draw_terminal(p, tensor, status);
    } else {
        fprintf(p->out, "moe2onnx: %s %s\n", status, tensor);
        fflush(p->out);
    }
}

void progress_finish(progress *p)
{
    if (p->enabled && p->terminal && p->last_width) {
        fprintf(p->out, "\r%*s\r", p->last_width, "");
        fflush(p->out);
    }
}

uint64_t peak_rss_bytes(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)ru.ru_maxrss * 1024u;
}

/* The kernel reports the current RssAnon but no anonymous high-water mark, so the build samples
 * it (see peak_anon_sample); this returns the largest sample. */
static _Atomic uint64_t g_peak_anon; /* sampled by the writer threads and the sampler thread */

static uint64_t status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    uint64_t v = 0;
    size_t klen = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, klen)) {
            v = strtoull(line + klen, NULL, 10);
            break;
        }
    fclose(f);
    return v * 1024u;
}

uint64_t peak_anon_bytes(void)
{
    uint64_t cur = status_kb("RssAnon:");
    uint64_t seen = atomic_load(&g_peak_anon);
    while (cur > seen && !atomic_compare_exchange_weak(&g_peak_anon, &seen, cur)) {
    }
    return atomic_load(&g_peak_anon);
}
