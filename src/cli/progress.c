#include "cli/progress.h"

#include <stdlib.h>
#include <string.h>
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
    p->enabled = !quiet && isatty(fileno(stderr));
    p->num_layers = num_layers;
    p->start = now_seconds();
}

static int layer_of(const char *tensor)
{
    const char *s = strstr(tensor, "layers.");
    return s ? atoi(s + 7) : -1;
}

void progress_update(void *user, const char *tensor, uint64_t done, uint64_t total)
{
    progress *p = user;
    peak_anon_bytes(); /* sample the anonymous high-water mark at every tensor */
    if (!p->enabled)
        return;
    double t = now_seconds();
    if (done < total && t - p->last_draw < 0.1)
        return;
    p->last_draw = t;
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
    char name[48], eta_s[24] = "ETA --";
    snprintf(name, sizeof name, "%.44s", tensor);
    if (el >= 0.5 && frac >= 0.01) /* the rate means nothing before that */
        snprintf(eta_s, sizeof eta_s, "ETA %.0fs", eta);
    int w = fprintf(p->out, "\r[%s] %3.0f%%%s %.2f/%.2f GB %.0f MB/s %s %s", bar, frac * 100, where,
                    (double)done / 1e9, (double)total / 1e9, rate / 1e6, eta_s, name);
    if (w < p->last_width)
        fprintf(p->out, "%*s", p->last_width - w, "");
    p->last_width = w;
    fflush(p->out);
}

void progress_finish(progress *p)
{
    if (p->enabled && p->last_width) {
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
static uint64_t g_peak_anon;

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
    if (cur > g_peak_anon) g_peak_anon = cur;
    return g_peak_anon;
}
