/* Helpers shared by the graph writer/reader tests: scratch directories and file checks. */
#ifndef M2O_TEST_GRAPH_UTIL_H
#define M2O_TEST_GRAPH_UTIL_H

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Makes a fresh empty directory under $TMPDIR (or /tmp) and writes its path into buf. Returns
 * false when it cannot be made. */
static inline bool make_temp_dir(char *buf, size_t n)
{
    const char *base = getenv("TMPDIR");
    snprintf(buf, n, "%s/m2o-graph-XXXXXX", base && base[0] ? base : "/tmp");
    return mkdtemp(buf) != NULL;
}

/* Removes a flat directory made by make_temp_dir (tests write no subdirectories there). */
static inline void remove_temp_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char path[4096];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
                unlink(path);
            }
        closedir(d);
    }
    rmdir(dir);
}

static inline bool file_exists_in(const char *dir, const char *name)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0;
}

/* Reads dir/name into a malloc'd buffer with a NUL after its len bytes (text files can be used
 * as strings); NULL when missing. */
static inline unsigned char *read_whole(const char *dir, const char *name, size_t *len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(n > 0 ? (size_t)n + 1 : 1);
    if (buf && n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf)
        buf[n > 0 ? n : 0] = 0;
    fclose(f);
    *len = n > 0 ? (size_t)n : 0;
    return buf;
}

#endif
