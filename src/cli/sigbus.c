#include "cli/sigbus.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct mapped_range {
    uintptr_t lo, hi; /* [lo, hi): the tensor data of one file */
    const char *path;
} mapped_range;

static mapped_range *g_ranges;
static size_t g_n_ranges;
static char g_tmp[PATH_MAX], g_final[PATH_MAX], g_lock[PATH_MAX];
static char g_parent[PATH_MAX]; /* the output's parent folder */
static size_t g_created_len;    /* length of the outermost folder this run created (a prefix of
                                   g_parent), 0 when it created none */
static bool g_tty; /* a progress line may be open on stderr: end it first */

static void put(const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, s, n);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/* The temporary folder holds only files (model.onnx, model.onnx.data, genai_config.json,
 * tokenizer files). The writer may still create one while we list, so retry a few times. */
static void remove_flat_dir(const char *dir)
{
    for (int attempt = 0; attempt < 4; attempt++) {
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            return;
        char buf[4096] __attribute__((aligned(8)));
        ssize_t n;
        while ((n = getdents64(fd, buf, sizeof buf)) > 0) {
            for (ssize_t off = 0; off < n;) {
                struct dirent64 *e = (struct dirent64 *)(void *)(buf + off);
                off += e->d_reclen;
                if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
                    unlinkat(fd, e->d_name, 0);
            }
        }
        close(fd);
        if (rmdir(dir) == 0)
            return;
    }
}

/* rmdir (async-signal-safe) of the parent folders this run created, innermost first, as
 * outdir_abort does: a failed run leaves no empty folders behind. */
static void remove_created_parents(void)
{
    if (!g_created_len)
        return;
    for (size_t n = strlen(g_parent); n >= g_created_len && rmdir(g_parent) == 0;) {
        while (n > 0 && g_parent[n - 1] != '/')
            n--;
        if (n <= 1)
            break;
        g_parent[--n] = 0;
    }
}

static void on_sigbus(int sig, siginfo_t *si, void *uctx)
{
    (void)sig, (void)uctx;
    uintptr_t a = (uintptr_t)si->si_addr;
    const char *path = "a checkpoint file";
    for (size_t i = 0; i < g_n_ranges; i++)
        if (a >= g_ranges[i].lo && a < g_ranges[i].hi)
            path = g_ranges[i].path;
    if (g_tty)
        put("\n");
    put("moe2onnx: error: ");
    put(path);
    put(": reading it failed during the conversion (the file shrank or the disk returned an I/O "
        "error after it was opened); nothing was written to ");
    put(g_final);
    put(" — check or re-download the file and run again\n");
    remove_flat_dir(g_tmp);
    if (g_lock[0])
        unlink(g_lock); /* the kernel drops the lock itself at exit; this removes its file */
    remove_created_parents();
    _exit(1);
}

static void add_range(const st_tensor *t)
{
    const char *path = st_file_path(t->file);
    uintptr_t lo = (uintptr_t)t->data, hi = lo + t->nbytes;
    for (size_t i = 0; i < g_n_ranges; i++)
        if (g_ranges[i].path == path) {
            if (lo < g_ranges[i].lo) g_ranges[i].lo = lo;
            if (hi > g_ranges[i].hi) g_ranges[i].hi = hi;
            return;
        }
    g_ranges[g_n_ranges++] = (mapped_range){lo, hi, path};
}

int sigbus_guard_arm(const st_checkpoint *ck, const char *tmp_dir, const char *final_dir,
                     const char *lock_file, const char *parent, const char *created_top, m2o_err *err)
{
    size_t n = ckpt_count(ck);
    g_ranges = m2o_calloc(n, sizeof *g_ranges, err);
    if (!g_ranges)
        return -1;
    g_n_ranges = 0;
    for (size_t i = 0; i < n; i++)
        add_range(ckpt_tensor(ck, i));
    snprintf(g_tmp, sizeof g_tmp, "%s", tmp_dir);
    snprintf(g_final, sizeof g_final, "%s", final_dir);
    snprintf(g_lock, sizeof g_lock, "%s", lock_file ? lock_file : "");
    snprintf(g_parent, sizeof g_parent, "%s", parent ? parent : "");
    g_created_len = created_top && created_top[0] && !strncmp(g_parent, created_top, strlen(created_top))
                        ? strlen(created_top) : 0;
    g_tty = isatty(STDERR_FILENO);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_RESETHAND; /* a fault inside the handler takes the default */
    sigfillset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, NULL))
        return m2o_fail(err, "cannot install the SIGBUS handler");
    return 0;
}

void sigbus_guard_disarm(void)
{
    signal(SIGBUS, SIG_DFL);
    free(g_ranges);
    g_ranges = NULL;
    g_n_ranges = 0;
}
