#include "cli/outdir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static int unlink_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(p) ? -1 : 0;
}

int remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    return nftw(path, unlink_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int mkdir_one(const char *p, bool *created, m2o_err *err)
{
    struct stat st;
    *created = false;
    if (mkdir(p, 0777) == 0) {
        *created = true;
        return 0;
    }
    if (errno == EEXIST && stat(p, &st) == 0 && S_ISDIR(st.st_mode))
        return 0;
    if (errno == EEXIST)
        return m2o_fail(err, "cannot create output folder %s: a file of that name exists", p);
    return m2o_fail(err, "cannot create output folder %s: %s", p, strerror(errno));
}

/* mkdir -p; top receives the first folder it created ("" when none), which a failed run
 * removes again with everything it created below it. */
static int mkdir_p(const char *path, char *top, size_t top_size, m2o_err *err)
{
    char buf[PATH_MAX];
    top[0] = 0;
    if ((size_t)snprintf(buf, sizeof buf, "%s", path) >= sizeof buf)
        return m2o_fail(err, "-o/--output: path too long");
    bool created;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir_one(buf, &created, err))
            return -1;
        if (created && !top[0])
            snprintf(top, top_size, "%s", buf);
        *p = '/';
    }
    if (mkdir_one(buf, &created, err))
        return -1;
    if (created && !top[0])
        snprintf(top, top_size, "%s", buf);
    return 0;
}

/* Removes the parent folders this run created, deepest first; only empty ones go. */
static void remove_created_parents(out_dir *od)
{
    if (!od->created_top[0])
        return;
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", od->parent);
    size_t top_len = strlen(od->created_top);
    while (strlen(buf) >= top_len && rmdir(buf) == 0) {
        char *slash = strrchr(buf, '/');
        if (!slash || strlen(buf) == top_len)
            break;
        *slash = 0;
    }
    od->created_top[0] = 0;
}

/* One conversion per output name at a time: an flock on ".<name>.moe2onnx-lock" beside it. The
 * kernel drops the lock when its holder dies, so a killed run never blocks the next. */
static int take_lock(out_dir *od, const char *base, m2o_err *err)
{
    if ((size_t)snprintf(od->lock_path, sizeof od->lock_path, "%s/.%s.moe2onnx-lock", od->parent, base) >=
        sizeof od->lock_path)
        return m2o_fail(err, "-o/--output: path too long");
    for (;;) {
        int fd = open(od->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0)
            return m2o_fail(err, "output folder %s is not writable (%s); choose a folder you can write to",
                            od->parent, strerror(errno));
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int e = errno;
            close(fd);
            if (e == EWOULDBLOCK)
                return m2o_fail(err, "another moe2onnx is writing %s/%s; wait for it to finish or choose "
                                     "another -o", od->parent, base);
            return m2o_fail(err, "cannot lock %s: %s", od->lock_path, strerror(e));
        }
        /* The holder before us may have unlinked the file after we opened it: lock the file
         * that is at the name now, or another run could lock a new one beside ours. */
        struct stat held, named;
        if (fstat(fd, &held) == 0 && stat(od->lock_path, &named) == 0 && held.st_ino == named.st_ino &&
            held.st_dev == named.st_dev) {
            od->lock_fd = fd;
            return 0;
        }
        close(fd);
    }
}

static void release_lock(out_dir *od)
{
    if (od->lock_fd < 0)
        return;
    unlink(od->lock_path); /* while still holding it, so no one locks a file that is going away */
    close(od->lock_fd);
    od->lock_fd = -1;
}

static void split_path(const char *path, char *parent, size_t plen, char *base, size_t blen)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    size_t n = strlen(tmp);
    while (n > 1 && tmp[n - 1] == '/') tmp[--n] = 0;
    char *slash = strrchr(tmp, '/');
    if (!slash) {
        snprintf(parent, plen, ".");
        snprintf(base, blen, "%s", tmp);
    } else if (slash == tmp) {
        snprintf(parent, plen, "/");
        snprintf(base, blen, "%s", slash + 1);
    } else {
        *slash = 0;
        snprintf(parent, plen, "%s", tmp);
        snprintf(base, blen, "%s", slash + 1);
    }
}

/* Files a model folder of ours may hold; anything else in an existing output folder is the
 * user's, and we refuse to delete it even with --overwrite. */
static bool is_model_file(const char *name)
{
    static const char *const known[] = {
        "model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json", "tokenizer_config.json",
        "special_tokens_map.json", "generation_config.json", "chat_template.jinja", "chat_template.json",
        "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json", NULL};
    for (int i = 0; known[i]; i++)
        if (!strcmp(name, known[i])) return true;
    return false;
}

static int inspect_existing(const char *path, bool overwrite, bool *replace, m2o_err *err)
{
    struct stat st;
    *replace = false;
    if (stat(path, &st) != 0)
        return 0;
    if (!S_ISDIR(st.st_mode))
        return m2o_fail(err, "-o/--output %s exists and is not a folder; choose another path", path);
    DIR *d = opendir(path);
    if (!d)
        return m2o_fail(err, "cannot read output folder %s: %s", path, strerror(errno));
    bool has_model = false, empty = true;
    char foreign[256] = "";
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        empty = false;
        if (!strcmp(e->d_name, "model.onnx") || !strcmp(e->d_name, "genai_config.json")) has_model = true;
        if (!is_model_file(e->d_name) && !foreign[0]) snprintf(foreign, sizeof foreign, "%s", e->d_name);
    }
    closedir(d);
    if (empty) {
        *replace = true;
        return 0;
    }
    if (foreign[0])
        return m2o_fail(err, "output folder %s holds files that are not part of a model (e.g. '%s'); "
                             "choose an empty or new folder", path, foreign);
    if (has_model && !overwrite)
        return m2o_fail(err, "output folder %s already contains a model; pass --overwrite to replace it", path);
    *replace = true;
    return 0;
}

/* Temporary folders of killed runs: ".<base>.moe2onnx-tmp-<pid>" whose process is gone. */
static void remove_stale_tmp(const char *parent, const char *base)
{
    DIR *d = opendir(parent);
    if (!d) return;
    char prefix[NAME_MAX + 32];
    snprintf(prefix, sizeof prefix, ".%s.moe2onnx-tmp-", base);
    size_t plen = strlen(prefix);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, prefix, plen)) continue;
        long pid = strtol(e->d_name + plen, NULL, 10);
        if (pid <= 0 || (kill((pid_t)pid, 0) == -1 && errno == ESRCH)) {
            char p[PATH_MAX];
            if ((size_t)snprintf(p, sizeof p, "%s/%s", parent, e->d_name) < sizeof p)
                remove_tree(p);
        }
    }
    closedir(d);
}

/* A symbolic link given as -o is followed: the model goes to (and --overwrite replaces) the
 * folder it points to, and the link stays. Renaming over the link itself would replace the
 * link with a folder and leave the old model where the link pointed. */
static int resolve_link(const char *given, char *out, size_t size, m2o_err *err)
{
    /* "link/" would make lstat follow the link: look at the name without trailing slashes */
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof path, "%s", given) >= sizeof path)
        return m2o_fail(err, "-o/--output: path too long");
    for (size_t n = strlen(path); n > 1 && path[n - 1] == '/'; n--)
        path[n - 1] = 0;
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISLNK(st.st_mode)) {
        if ((size_t)snprintf(out, size, "%s", path) >= size)
            return m2o_fail(err, "-o/--output: path too long");
        return 0;
    }
    char real[PATH_MAX];
    if (!realpath(path, real))
        return m2o_fail(err, "-o/--output %s is a symbolic link to a missing target (%s); create the "
                             "folder it points to or pass a folder", path, strerror(errno));
    if ((size_t)snprintf(out, size, "%s", real) >= size)
        return m2o_fail(err, "-o/--output: path too long");
    return 0;
}

static int prepare_locked(const char *path, bool overwrite, out_dir *od, const char *base, m2o_err *err)
{
    if (inspect_existing(path, overwrite, &od->replace, err))
        return -1;
    remove_stale_tmp(od->parent, base);
    if ((size_t)snprintf(od->final_path, sizeof od->final_path, "%s/%s", od->parent, base) >= sizeof od->final_path ||
        (size_t)snprintf(od->tmp_path, sizeof od->tmp_path, "%s/.%s.moe2onnx-tmp-%ld", od->parent, base,
                         (long)getpid()) >= sizeof od->tmp_path)
        return m2o_fail(err, "-o/--output: path too long");
    remove_tree(od->tmp_path);
    if (mkdir(od->tmp_path, 0777)) {
        od->tmp_path[0] = 0;
        return m2o_fail(err, "output folder %s is not writable (%s); choose a folder you can write to",
                        od->parent, strerror(errno));
    }
    return 0;
}

int outdir_prepare(const char *given, bool overwrite, out_dir *od, m2o_err *err)
{
    memset(od, 0, sizeof *od);
    od->lock_fd = -1;
    char path[PATH_MAX], base[NAME_MAX + 1];
    if (resolve_link(given, path, sizeof path, err))
        return -1;
    split_path(path, od->parent, sizeof od->parent, base, sizeof base);
    if (!base[0] || !strcmp(base, ".") || !strcmp(base, ".."))
        return m2o_fail(err, "-o/--output %s: name a folder, e.g. -o ./my-model", given);
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISDIR(st.st_mode)) /* before creating any parent folder */
        return m2o_fail(err, "-o/--output %s exists and is not a folder; choose another path", path);
    if (mkdir_p(od->parent, od->created_top, sizeof od->created_top, err) || take_lock(od, base, err) ||
        prepare_locked(path, overwrite, od, base, err)) {
        outdir_abort(od);
        return -1;
    }
    return 0;
}

/* Makes the rename durable: after a power loss the folder is either the new model or what was
 * there before. Best effort: some file systems refuse fsync on directories. */
static void sync_parent(const char *path)
{
    char parent[PATH_MAX], base[NAME_MAX + 1];
    split_path(path, parent, sizeof parent, base, sizeof base);
    int fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

int outdir_commit(out_dir *od, m2o_err *err)
{
    char old[PATH_MAX + 32];
    snprintf(old, sizeof old, "%s.moe2onnx-old-%ld", od->tmp_path, (long)getpid());
    struct stat st;
    bool had_old = od->replace && stat(od->final_path, &st) == 0;
    if (had_old && rename(od->final_path, old))
        return m2o_fail(err, "cannot move the old model in %s aside: %s", od->final_path, strerror(errno));
    if (rename(od->tmp_path, od->final_path)) {
        int e = errno;
        if (had_old) rename(old, od->final_path);
        return m2o_fail(err, "cannot rename %s to %s: %s", od->tmp_path, od->final_path, strerror(e));
    }
    od->created_top[0] = 0; /* they hold the model now */
    if (had_old)
        remove_tree(old);
    sync_parent(od->final_path);
    release_lock(od);
    return 0;
}

void outdir_abort(out_dir *od)
{
    if (od->tmp_path[0])
        remove_tree(od->tmp_path);
    release_lock(od);
    remove_created_parents(od);
}
