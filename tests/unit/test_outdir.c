/* Output folder lifecycle: temporary name, atomic rename, refusal to clobber. */
#include "test.h"

#include <sys/stat.h>
#include <unistd.h>

#include "cli/outdir.h"

static void touch(const char *dir, const char *name)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (f) { fputs("x", f); fclose(f); }
}

static bool exists(const char *dir, const char *name)
{
    char p[4096];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &st) == 0;
}

static char g_root[256];
static const char *root(void)
{
    snprintf(g_root, sizeof g_root, "/tmp/m2o-outdir-XXXXXX");
    return mkdtemp(g_root);
}

TEST(new_folder_appears_only_on_commit)
{
    const char *r = root();
    CHECK(r);
    char out[512];
    snprintf(out, sizeof out, "%s/a/b/model", r);
    out_dir od;
    m2o_err e = {{0}};
    CHECK_EQ(outdir_prepare(out, false, &od, &e), 0);
    touch(od.tmp_path, "model.onnx");
    CHECK(!exists(out, "model.onnx"));
    CHECK_EQ(outdir_commit(&od, &e), 0);
    CHECK(exists(out, "model.onnx"));
    CHECK(!exists(od.tmp_path, ""));
    remove_tree(r);
}

TEST(abort_leaves_nothing)
{
    const char *r = root();
    char out[512];
    snprintf(out, sizeof out, "%s/model", r);
    out_dir od;
    m2o_err e = {{0}};
    CHECK_EQ(outdir_prepare(out, false, &od, &e), 0);
    touch(od.tmp_path, "model.onnx.data");
    outdir_abort(&od);
    CHECK(!exists(out, ""));
    CHECK(!exists(od.tmp_path, ""));
    remove_tree(r);
}

TEST(existing_model_needs_overwrite)
{
    const char *r = root();
    char out[512];
    snprintf(out, sizeof out, "%s/model", r);
    mkdir(out, 0777);
    touch(out, "model.onnx");
    touch(out, "genai_config.json");
    out_dir od;
    m2o_err e = {{0}};
    CHECK_EQ(outdir_prepare(out, false, &od, &e), -1);
    CHECK_STR_CONTAINS(e.msg, "already contains a model; pass --overwrite");
    CHECK_EQ(outdir_prepare(out, true, &od, &e), 0);
    touch(od.tmp_path, "model.onnx.data");
    CHECK_EQ(outdir_commit(&od, &e), 0);
    CHECK(exists(out, "model.onnx.data"));
    CHECK(!exists(out, "genai_config.json")); /* old model replaced whole */
    remove_tree(r);
}

TEST(foreign_files_are_never_deleted)
{
    const char *r = root();
    char out[512];
    snprintf(out, sizeof out, "%s/model", r);
    mkdir(out, 0777);
    touch(out, "thesis.tex");
    out_dir od;
    m2o_err e = {{0}};
    CHECK_EQ(outdir_prepare(out, true, &od, &e), -1);
    CHECK_STR_CONTAINS(e.msg, "'thesis.tex'");
    CHECK(exists(out, "thesis.tex"));
    remove_tree(r);
}

TEST(output_path_is_a_file)
{
    const char *r = root();
    touch(r, "file");
    char out[512];
    snprintf(out, sizeof out, "%s/file", r);
    out_dir od;
    m2o_err e = {{0}};
    CHECK_EQ(outdir_prepare(out, true, &od, &e), -1);
    CHECK_STR_CONTAINS(e.msg, "is not a folder");
    remove_tree(r);
}

TEST(stale_temporary_folders_are_removed)
{
    const char *r = root();
    char stale[512], out[512];
    /* pid 999999999 cannot exist (pid_max is at most 2^22) */
    snprintf(stale, sizeof stale, "%s/.model.moe2onnx-tmp-999999999", r);
    mkdir(stale, 0777);
    touch(stale, "model.onnx");
    snprintf(out, sizeof out, "%s/model", r);
    out_dir od;
    m2o_err e = {{0}};
    CHECK_EQ(outdir_prepare(out, false, &od, &e), 0);
    CHECK(!exists(stale, ""));
    outdir_abort(&od);
    remove_tree(r);
}

TEST(unwritable_parent_is_reported)
{
    if (geteuid() == 0) {
        /* root ignores permissions; use a path under a file instead */
        const char *r = root();
        touch(r, "f");
        char out[512];
        snprintf(out, sizeof out, "%s/f/model", r);
        out_dir od;
        m2o_err e = {{0}};
        CHECK_EQ(outdir_prepare(out, false, &od, &e), -1);
        CHECK_STR_CONTAINS(e.msg, "cannot create output folder");
        remove_tree(r);
        return;
    }
    const char *r = root();
    chmod(r, 0555);
    char out[512];
    snprintf(out, sizeof out, "%s/model", r);
    out_dir od;
    m2o_err e = {{0}};
    CHECK_EQ(outdir_prepare(out, false, &od, &e), -1);
    CHECK_STR_CONTAINS(e.msg, "not writable");
    chmod(r, 0755);
    remove_tree(r);
}

TEST(second_run_on_the_same_output_is_refused_at_once)
{
    const char *r = root();
    char out[512];
    snprintf(out, sizeof out, "%s/model", r);
    out_dir first, second;
    m2o_err e = {{0}};
    CHECK_EQ(outdir_prepare(out, false, &first, &e), 0);
    CHECK_EQ(outdir_prepare(out, false, &second, &e), -1);
    CHECK_STR_CONTAINS(e.msg, "another moe2onnx is writing");
    CHECK(exists(first.tmp_path, "")); /* the refusal touched nothing of the first run */
    CHECK_EQ(outdir_commit(&first, &e), 0);
    CHECK(!exists(r, ".model.moe2onnx-lock")); /* released and removed at the end */
    CHECK_EQ(outdir_prepare(out, true, &second, &e), 0);
    outdir_abort(&second);
    remove_tree(r);
}

TEST(symlinked_output_replaces_the_folder_it_points_to)
{
    const char *r = root();
    char target[512], link[512];
    snprintf(target, sizeof target, "%s/real", r);
    snprintf(link, sizeof link, "%s/link", r);
    mkdir(target, 0777);
    touch(target, "model.onnx");
    CHECK_EQ(symlink(target, link), 0);
    out_dir od;
    m2o_err e = {{0}};
    char link_slash[520];
    snprintf(link_slash, sizeof link_slash, "%s/", link); /* "link/" must not replace the link either */
    CHECK_EQ(outdir_prepare(link_slash, true, &od, &e), 0);
    touch(od.tmp_path, "genai_config.json");
    CHECK_EQ(outdir_commit(&od, &e), 0);
    struct stat st;
    CHECK(lstat(link, &st) == 0 && S_ISLNK(st.st_mode)); /* the link stays a link */
    CHECK(exists(target, "genai_config.json"));
    CHECK(!exists(target, "model.onnx"));
    remove_tree(r);
}

TEST(failed_run_removes_the_parent_folders_it_created)
{
    const char *r = root();
    char out[512], top[512];
    snprintf(top, sizeof top, "%s/a", r);
    snprintf(out, sizeof out, "%s/a/b/model", r);
    out_dir od;
    m2o_err e = {{0}};
    CHECK_EQ(outdir_prepare(out, false, &od, &e), 0);
    CHECK(exists(top, "b"));
    outdir_abort(&od);
    CHECK(!exists(top, ""));
    CHECK(exists(r, ""));
    remove_tree(r);
}
