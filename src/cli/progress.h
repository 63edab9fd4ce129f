/* Progress on a terminal (tensor, layer i/L, bytes, rate, ETA) and the one-line summary. */
#ifndef M2O_PROGRESS_H
#define M2O_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct progress {
    FILE *out;
    bool enabled;        /* not --quiet */
    bool terminal;       /* stderr is a terminal: redraw one line; else a plain line every few seconds */
    int num_layers;
    double start;        /* seconds, monotonic */
    double last_draw;
    double log_seconds;  /* between plain lines: $M2O_PROGRESS_SECONDS, else PROGRESS_LOG_SECONDS */
    int last_width;
} progress;

/* Seconds between the plain progress lines written when stderr is not a terminal (a log file,
 * CI); the environment variable M2O_PROGRESS_SECONDS overrides it. */
#define PROGRESS_LOG_SECONDS 5.0

double now_seconds(void);
void progress_init(progress *p, bool quiet, int num_layers);
/* graph_write_opts.progress callback. */
void progress_update(void *user, const char *tensor, uint64_t done, uint64_t total);
void progress_finish(progress *p);

/* Peak resident memory of this process in bytes: total (ru_maxrss, page-cache mappings
 * included) and anonymous (RssAnon high-water approximated by VmHWM - file pages when the
 * kernel does not report it). */
uint64_t peak_rss_bytes(void);
uint64_t peak_anon_bytes(void);

#endif
