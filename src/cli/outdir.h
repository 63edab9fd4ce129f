/* The output folder is built under a hidden temporary name beside it and renamed into place only
 * when everything succeeded, so a failed, interrupted or killed run never leaves a folder that
 * looks like a complete model. An existing model is replaced only with --overwrite. */
#ifndef M2O_OUTDIR_H
#define M2O_OUTDIR_H

#include <limits.h>
#include <stdbool.h>

#include "common/err.h"

typedef struct out_dir {
    char final_path[PATH_MAX];
    char tmp_path[PATH_MAX];
    char parent[PATH_MAX];
    char created_top[PATH_MAX]; /* first parent folder this run created; removed on failure */
    char lock_path[PATH_MAX];
    int lock_fd;                /* flock held from prepare to commit or abort */
    bool replace; /* final_path exists and will be replaced */
} out_dir;

/* Checks the destination, creates missing parents, locks the output name (a second run on the
 * same name is refused at once), creates the temporary folder, and removes temporary folders
 * left by earlier runs that were killed. A symbolic link given as the destination is followed. */
int outdir_prepare(const char *path, bool overwrite, out_dir *od, m2o_err *err);
/* Renames the temporary folder into place (the old model, if any, is removed afterwards). */
int outdir_commit(out_dir *od, m2o_err *err);
/* Removes the temporary folder and everything in it, the parent folders prepare created, and
 * the lock. */
void outdir_abort(out_dir *od);

/* rm -rf; returns 0 when path no longer exists. */
int remove_tree(const char *path);

#endif
