/* libFuzzer harness: the tokenizer files copied into a model folder (issue 16 item 3). Byte 0
 * picks where tokenizer.json really is (a plain file, a Hugging Face snapshot link into blobs/, a
 * link inside the checkpoint, a link outside, a dangling link, a folder), byte 1 its permission
 * bits, the rest its content. The check must accept exactly the plain files inside the checkpoint
 * or blobs/ whose content is one JSON value (whitespace around it only), and what it accepts is
 * copied byte for byte as a plain file with no more permission than the source. */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "onnx/genai_config.h"

#define REQUIRE(c) do { if (!(c)) { fprintf(stderr, "REQUIRE failed: %s\n", #c); abort(); } } while (0)

static char g_root[64], g_ckpt[256], g_blobs[256], g_outside[256], g_out[256];

static void path_join(char *buf, size_t n, const char *dir, const char *name)
{
    snprintf(buf, n, "%s/%s", dir, name);
}

static int remove_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static void remove_root(void)
{
    nftw(g_root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void setup(void)
{
    if (g_root[0])
        return;
    snprintf(g_root, sizeof g_root, "/tmp/m2o-fuzz-tok-XXXXXX");
    REQUIRE(mkdtemp(g_root));
    atexit(remove_root);
    char repo[200], snaps[220];
    path_join(repo, sizeof repo, g_root, "models--org--tiny");
    path_join(snaps, sizeof snaps, repo, "snapshots");
    path_join(g_ckpt, sizeof g_ckpt, snaps, "c0ffee");
    path_join(g_blobs, sizeof g_blobs, repo, "blobs");
    path_join(g_outside, sizeof g_outside, g_root, "outside");
    path_join(g_out, sizeof g_out, g_root, "out");
    const char *dirs[] = {repo, snaps, g_ckpt, g_blobs, g_outside, g_out};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
        REQUIRE(mkdir(dirs[i], 0755) == 0);
    char sub[300];
    path_join(sub, sizeof sub, g_ckpt, "sub");
    REQUIRE(mkdir(sub, 0755) == 0);
}

static void clear_dir(const char *dir)
{
    DIR *d = opendir(dir);
    REQUIRE(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, "sub"))
            continue;
        char p[512];
        path_join(p, sizeof p, dir, e->d_name);
        if (unlink(p) != 0)
            rmdir(p);
    }
    closedir(d);
}

static void write_file(const char *path, const uint8_t *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(len == 0 || write(fd, data, len) == (ssize_t)len);
    close(fd);
    REQUIRE(chmod(path, mode) == 0);
}

/* One JSON value, then only JSON whitespace. */
static int one_json_value(const uint8_t *data, size_t len)
{
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts((const char *)data, len, &end, 0);
    if (!j)
        return 0;
    cJSON_Delete(j);
    for (size_t i = (size_t)(end - (const char *)data); i < len; i++)
        if (data[i] != ' ' && data[i] != '\t' && data[i] != '\n' && data[i] != '\r')
            return 0;
    return 1;
}

enum { PLAIN, BLOB_LINK, INSIDE_LINK, OUTSIDE_LINK, DANGLING_LINK, FOLDER, N_KINDS };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    setup();
    const char *dirs[] = {g_ckpt, g_blobs, g_outside, g_out};
    for (size_t i = 0; i < 4; i++)
        clear_dir(dirs[i]);
    char sub[300];
    path_join(sub, sizeof sub, g_ckpt, "sub");
    clear_dir(sub);

    int kind = data[0] % N_KINDS;
    mode_t mode = 0400 | (data[1] & 0266);
    const uint8_t *text = data + 2;
    size_t len = size - 2;
    char link[300], real[300];
    path_join(link, sizeof link, g_ckpt, "tokenizer.json");
    switch (kind) {
    case PLAIN: snprintf(real, sizeof real, "%s", link); write_file(real, text, len, mode); break;
    case BLOB_LINK:
        path_join(real, sizeof real, g_blobs, "b1");
        write_file(real, text, len, mode);
        REQUIRE(symlink("../../blobs/b1", link) == 0);
        break;
    case INSIDE_LINK:
        path_join(real, sizeof real, sub, "real.json");
        write_file(real, text, len, mode);
        REQUIRE(symlink("sub/real.json", link) == 0);
        break;
    case OUTSIDE_LINK:
        path_join(real, sizeof real, g_outside, "secret");
        write_file(real, text, len, mode);
        REQUIRE(symlink(real, link) == 0);
        break;
    case DANGLING_LINK: REQUIRE(symlink("../../blobs/none", link) == 0); break;
    case FOLDER: REQUIRE(mkdir(link, 0755) == 0); break;
    }
    int allowed = (kind == PLAIN || kind == BLOB_LINK || kind == INSIDE_LINK) && one_json_value(text, len);

    m2o_err err = {{0}};
    int rc = genai_check_tokenizer(g_ckpt, &err);
    REQUIRE((rc == 0) == allowed);
    REQUIRE(rc == 0 || (memchr(err.msg, 0, sizeof err.msg) && err.msg[0]));
    if (rc)
        return 0;
    REQUIRE(genai_copy_tokenizer(g_ckpt, g_out, &err) == 0);
    char copy[300];
    path_join(copy, sizeof copy, g_out, "tokenizer.json");
    struct stat st;
    REQUIRE(lstat(copy, &st) == 0 && S_ISREG(st.st_mode) && (size_t)st.st_size == len);
    REQUIRE((st.st_mode & 0777 & ~mode) == 0); /* no permission the source lacks */
    uint8_t *back = malloc(len + 1);
    int fd = open(copy, O_RDONLY);
    REQUIRE(back && fd >= 0 && read(fd, back, len + 1) == (ssize_t)len);
    close(fd);
    REQUIRE(len == 0 || !memcmp(back, text, len));
    free(back);
    return 0;
}
