/* safetensors reader: the fixture checkpoints read back with the right names, shapes and values,
 * and every validation rule of docs/FORMATS.md §1 rejects a hand-made corrupt file with one line naming the
 * file, the tensor and the rule. */
#include <dirent.h>
#include <fcntl.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint/safetensors.h"
#include "common/half.h"
#include "test.h"

/* ---------- scratch directory, removed at exit ---------- */

static char g_tmp[64];

static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (!lstat(p, &st) && S_ISDIR(st.st_mode))
            remove_tree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static void cleanup_tmp(void) { remove_tree(g_tmp); }

static const char *tmp_path(const char *name)
{
    static char buf[4][512];
    static int k;
    if (!g_tmp[0]) {
        strcpy(g_tmp, "/tmp/m2o-test-st-XXXXXX");
        if (!mkdtemp(g_tmp)) {
            perror("mkdtemp");
            exit(1);
        }
        atexit(cleanup_tmp);
    }
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_tmp, name);
    return buf[k];
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) {
        perror(path);
        exit(1);
    }
    fclose(f);
}

/* A safetensors file: 8-byte length, the header text as given, data_len bytes of pattern. */
static void write_st(const char *path, const char *header, size_t data_len)
{
    size_t hl = strlen(header);
    size_t n = 8 + hl + data_len;
    uint8_t *b = malloc(n);
    uint64_t h = hl;
    memcpy(b, &h, 8);
    memcpy(b + 8, header, hl);
    for (size_t i = 0; i < data_len; i++)
        b[8 + hl + i] = (uint8_t)(i * 7 + 1);
    write_bytes(path, b, n);
    free(b);
}

static m2o_err g_err;

/* NULL when the file opens (and it is closed again), else the error line. */
static const char *open_error(const char *path)
{
    st_file *f = NULL;
    g_err.msg[0] = 0;
    if (st_file_open(path, &f, &g_err) == 0) {
        st_file_close(f);
        return NULL;
    }
    return g_err.msg;
}

static const char *st_error(const char *name, const char *header, size_t data_len)
{
    const char *p = tmp_path(name);
    write_st(p, header, data_len);
    return open_error(p);
}

static const char *ckpt_error(const char *dir)
{
    st_checkpoint *c = NULL;
    g_err.msg[0] = 0;
    if (ckpt_open(dir, &c, &g_err) == 0) {
        ckpt_close(c);
        return NULL;
    }
    return g_err.msg;
}

static char *fixture(const char *rel)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", test_fixtures_dir(), rel);
    return buf[k];
}

/* ---------- fixtures ---------- */

/* Expected values below were read once with python3 (struct.unpack of the stored bytes, bf16 =
 * high half of a float32); counts are len(header) without __metadata__. */

TEST(fixture_counts_every_checkpoint)
{
    static const struct { const char *dir; size_t n; uint64_t bytes; } want[] = {
        /* bytes = file size - 8 - header length (summed over shards for gpt-oss-tiny, equal to
         * the index's metadata.total_size 3020336) */
        {"gpt-oss-tiny", 41, 3020336},
        {"gpt-oss-bf16-tiny", 37, 7644520 - 8 - 3888},
        {"qwen3-moe-tiny", 69, 4475448 - 8 - 7728},
        {"qwen2-moe-tiny", 79, 5265584 - 8 - 8872},
        {"qwen3_5-moe-tiny", 160, 8972936 - 8 - 18064},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        st_checkpoint *c = NULL;
        int rc = ckpt_open(fixture(want[i].dir), &c, &g_err);
        CHECK_MSG(rc == 0, "%s: %s", want[i].dir, g_err.msg);
        CHECK_EQ(ckpt_count(c), want[i].n);
        CHECK_EQ(ckpt_total_bytes(c), want[i].bytes);
        /* name order, and every listed tensor is found by name */
        for (size_t k = 0; k < ckpt_count(c); k++) {
            const st_tensor *t = ckpt_tensor(c, k);
            CHECK(ckpt_find(c, t->name) == t);
            if (k)
                CHECK(strcmp(ckpt_tensor(c, k - 1)->name, t->name) < 0);
        }
        CHECK(ckpt_tensor(c, ckpt_count(c)) == NULL);
        CHECK(ckpt_find(c, "no.such.tensor") == NULL);
        ckpt_close(c);
    }
}

TEST(fixture_qwen3_shapes_and_values)
{
    st_checkpoint *c = NULL;
    CHECK_MSG(ckpt_open(fixture("qwen3-moe-tiny"), &c, &g_err) == 0, "%s", g_err.msg);
    const st_tensor *t = ckpt_find(c, "model.embed_tokens.weight");
    CHECK(t && t->dtype == ST_BF16 && t->ndim == 2);
    CHECK_EQ(t->shape[0], 512);
    CHECK_EQ(t->shape[1], 256);
    CHECK_EQ(t->numel, 131072);
    CHECK_EQ(t->nbytes, 262144);
    CHECK_STR_CONTAINS(st_file_path(t->file), "qwen3-moe-tiny/model.safetensors");
    float v[3];
    CHECK(st_read_f32(t, 0, 3, v, &g_err) == 0);
    CHECK_NEAR(v[0], -0.51953125, 0);
    CHECK_NEAR(v[1], 0.458984375, 0);
    CHECK_NEAR(v[2], -0.65234375, 0);
    CHECK(st_read_f32(t, 131071, 1, v, &g_err) == 0);
    CHECK_NEAR(v[0], -0.65234375, 0);

    t = ckpt_find(c, "model.layers.1.mlp.experts.7.down_proj.weight");
    CHECK(t && t->ndim == 2 && t->shape[0] == 256 && t->shape[1] == 128);
    CHECK(st_read_f32(t, 12345, 1, v, &g_err) == 0);
    CHECK_NEAR(v[0], 0.0284423828125, 0);
    CHECK(st_read_f32(t, 32767, 1, v, &g_err) == 0);
    CHECK_NEAR(v[0], -0.01336669921875, 0);

    const st_tensor *q = NULL;
    int64_t want[1] = {64};
    CHECK(ckpt_expect(c, "model.layers.0.self_attn.q_norm.weight", 1, want, &q, &g_err) == 0);
    CHECK(st_read_f32(q, 63, 1, v, &g_err) == 0);
    CHECK_NEAR(v[0], 0.87890625, 0);
    CHECK(st_all_finite(q, NULL));
    ckpt_close(c);
}

TEST(fixture_gpt_oss_sharded_index)
{
    st_checkpoint *c = NULL;
    CHECK_MSG(ckpt_open(fixture("gpt-oss-tiny"), &c, &g_err) == 0, "%s", g_err.msg);
    /* layer 1 lives in the second shard, layer 0 in the first, as the index says */
    const st_tensor *b = ckpt_find(c, "model.layers.1.mlp.experts.gate_up_proj_blocks");
    CHECK(b && b->dtype == ST_U8 && b->ndim == 4);
    CHECK(b->shape[0] == 8 && b->shape[1] == 512 && b->shape[2] == 8 && b->shape[3] == 16);
    CHECK_STR_CONTAINS(st_file_path(b->file), "model-00002-of-00002.safetensors");
    CHECK_EQ(b->data[0], 73);
    CHECK_EQ(b->data[1], 244);
    CHECK_EQ(b->data[65535], 157);
    const st_tensor *s = ckpt_find(c, "model.layers.0.mlp.experts.down_proj_scales");
    CHECK(s && s->dtype == ST_U8 && s->ndim == 3 && s->shape[2] == 8);
    CHECK_STR_CONTAINS(st_file_path(s->file), "model-00001-of-00002.safetensors");
    CHECK_EQ(s->data[0], 122);
    CHECK_EQ(s->data[1], 121);
    CHECK_EQ(s->data[2], 122);
    const st_tensor *k = ckpt_find(c, "model.layers.1.self_attn.sinks");
    float v[4];
    CHECK(k && st_read_f32(k, 0, 4, v, &g_err) == 0);
    CHECK_NEAR(v[0], 0.234375, 0);
    CHECK_NEAR(v[1], 0.01104736328125, 0);
    CHECK_NEAR(v[2], 0.1162109375, 0);
    CHECK_NEAR(v[3], 0.953125, 0);
    /* U8 is not a float type */
    CHECK(st_read_f32(s, 0, 1, v, &g_err) == -1);
    CHECK_STR_CONTAINS(g_err.msg, "down_proj_scales' is U8, not a float type");
    CHECK(st_all_finite(s, NULL)); /* non-float dtypes are always finite */
    ckpt_close(c);
}

TEST(fixture_other_checkpoints_values)
{
    st_checkpoint *c = NULL;
    float v[4];
    CHECK_MSG(ckpt_open(fixture("gpt-oss-bf16-tiny"), &c, &g_err) == 0, "%s", g_err.msg);
    const st_tensor *t = ckpt_find(c, "model.layers.1.mlp.experts.gate_up_proj");
    CHECK(t && t->ndim == 3 && t->shape[0] == 8 && t->shape[1] == 256 && t->shape[2] == 512);
    CHECK(st_read_f32(t, 1048575, 1, v, &g_err) == 0);
    CHECK_NEAR(v[0], 0.06298828125, 0);
    ckpt_close(c);

    CHECK_MSG(ckpt_open(fixture("qwen2-moe-tiny"), &c, &g_err) == 0, "%s", g_err.msg);
    t = ckpt_find(c, "model.layers.0.mlp.shared_expert_gate.weight");
    CHECK(t && t->ndim == 2 && t->shape[0] == 1 && t->shape[1] == 256);
    CHECK(st_read_f32(t, 255, 1, v, &g_err) == 0);
    CHECK_NEAR(v[0], 0.0439453125, 0);
    ckpt_close(c);

    CHECK_MSG(ckpt_open(fixture("qwen3_5-moe-tiny"), &c, &g_err) == 0, "%s", g_err.msg);
    t = ckpt_find(c, "model.layers.0.linear_attn.A_log");
    CHECK(t && t->ndim == 1 && t->shape[0] == 4);
    CHECK(st_read_f32(t, 0, 4, v, &g_err) == 0);
    CHECK_NEAR(v[0], -0.0322265625, 0);
    CHECK_NEAR(v[1], 0.126953125, 0);
    CHECK_NEAR(v[2], 0.006317138671875, 0);
    CHECK_NEAR(v[3], 0.05517578125, 0);
    ckpt_close(c);
}

TEST(fixture_f32_i64_f16_and_metadata)
{
    st_file *f = NULL;
    float v[3];
    CHECK_MSG(st_file_open(fixture("qwen3-moe-tiny/reference.safetensors"), &f, &g_err) == 0, "%s",
              g_err.msg);
    const st_tensor *lg = st_file_find(f, "logits");
    CHECK(lg && lg->dtype == ST_F32 && lg->ndim == 3 && lg->shape[1] == 12 && lg->shape[2] == 512);
    CHECK(st_read_f32(lg, 0, 2, v, &g_err) == 0);
    CHECK_NEAR(v[0], 6.160302639007568, 1e-6);
    CHECK_NEAR(v[1], -5.285374641418457, 1e-6);
    CHECK(st_read_f32(lg, 511, 1, v, &g_err) == 0);
    CHECK_NEAR(v[0], 10.589264869689941, 1e-6);
    const st_tensor *ids = st_file_find(f, "input_ids");
    CHECK(ids && ids->dtype == ST_I64 && ids->shape[1] == 12);
    int64_t id[3];
    memcpy(id, ids->data, sizeof id);
    CHECK(id[0] == 81 && id[1] == 276 && id[2] == 207);
    CHECK(st_file_metadata(f, "format") == NULL);
    st_file_close(f);

    CHECK_MSG(st_file_open(fixture("golden/ort-quant-golden.safetensors"), &f, &g_err) == 0, "%s",
              g_err.msg);
    CHECK_EQ(st_file_count(f), 88);
    const st_tensor *s = st_file_find(f, "q0_f16.scales");
    CHECK(s && s->dtype == ST_F16 && s->shape[0] == 32 && s->shape[1] == 4);
    CHECK(st_read_f32(s, 1, 1, v, &g_err) == 0);
    CHECK_NEAR(v[0], -0.06982421875, 0);
    CHECK_STR_CONTAINS(st_file_metadata(f, "cases"), "\"q0_f32\": {\"K\": 64, \"N\": 32");
    st_file_close(f);

    CHECK_MSG(st_file_open(fixture("qwen3-moe-tiny/model.safetensors"), &f, &g_err) == 0, "%s",
              g_err.msg);
    CHECK(strcmp(st_file_metadata(f, "format"), "pt") == 0);
    CHECK_EQ(st_file_count(f), 69);
    st_file_close(f);
}

TEST(read_f32_range_checked)
{
    st_file *f = NULL;
    CHECK(st_file_open(fixture("qwen3-moe-tiny/model.safetensors"), &f, &g_err) == 0);
    const st_tensor *t = st_file_find(f, "model.layers.0.self_attn.q_norm.weight");
    float v[2];
    CHECK(st_read_f32(t, 63, 2, v, &g_err) == -1);
    CHECK_STR_CONTAINS(g_err.msg, "q_norm.weight': elements [63, 65) are outside its 64 elements");
    CHECK(st_read_f32(t, -1, 1, v, &g_err) == -1);
    CHECK(st_read_f32(t, 64, 0, v, &g_err) == 0);
    st_file_close(f);
}

TEST(all_finite_finds_first_bad_element)
{
    /* BF16 [4]: 1.0, -2.0, +inf, NaN → first bad at 2. F16 [3]: 1, 2, NaN → 2. F32 [2]: 0, -inf → 1 */
    uint16_t bf[4] = {0x3f80, 0xc000, 0x7f80, 0x7fc0};
    uint16_t hf[3] = {0x3c00, 0x4000, 0x7e00};
    float ff[2] = {0.0f, -INFINITY};
    uint8_t img[512];
    const char *hdr = "{\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[8,14]},"
                      "\"c\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[14,22]},"
                      "\"d\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[22,26]}}";
    uint64_t hl = strlen(hdr);
    memcpy(img, &hl, 8);
    memcpy(img + 8, hdr, hl);
    uint8_t *d = img + 8 + hl;
    memcpy(d, bf, 8);
    memcpy(d + 8, hf, 6);
    memcpy(d + 14, ff, 8);
    memcpy(d + 22, bf, 4);
    st_file *f = NULL;
    CHECK_MSG(st_file_parse(img, 8 + hl + 26, "mem", &f, &g_err) == 0, "%s", g_err.msg);
    int64_t bad = -1;
    CHECK(!st_all_finite(st_file_find(f, "a"), &bad));
    CHECK_EQ(bad, 2);
    CHECK(!st_all_finite(st_file_find(f, "b"), &bad));
    CHECK_EQ(bad, 2);
    CHECK(!st_all_finite(st_file_find(f, "c"), &bad));
    CHECK_EQ(bad, 1);
    CHECK(st_all_finite(st_file_find(f, "d"), &bad));
    float v[2];
    CHECK(st_read_f32(st_file_find(f, "d"), 0, 2, v, &g_err) == 0);
    CHECK(v[0] == 1.0f && v[1] == -2.0f);
    /* a heap image is not ours to madvise: release must leave it intact */
    st_release(st_file_find(f, "a"), 0, 8);
    CHECK(st_read_f32(st_file_find(f, "d"), 0, 2, v, &g_err) == 0 && v[1] == -2.0f);
    st_file_close(f);
}

static long rss_file_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "RssFile: %ld", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

TEST(release_drops_resident_pages_and_keeps_data)
{
    st_file *f = NULL;
    CHECK(st_file_open(fixture("gpt-oss-bf16-tiny/model.safetensors"), &f, &g_err) == 0);
    const st_tensor *t = st_file_find(f, "model.layers.1.mlp.experts.gate_up_proj"); /* 2 MiB */
    CHECK(t && t->nbytes == 2097152);
    volatile unsigned sum = 0;
    for (size_t i = 0; i < t->nbytes; i += 512)
        sum += t->data[i];
    long before = rss_file_kb();
    st_release(t, 0, t->nbytes);
    long after = rss_file_kb();
    if (before >= 0) /* /proc present: at least 1.5 MiB of the 2 MiB must leave RssFile */
        CHECK_MSG(before - after >= 1536, "RssFile %ld kB -> %ld kB", before, after);
    /* pages come back from the file on the next touch */
    float v[1];
    CHECK(st_read_f32(t, 1048575, 1, v, &g_err) == 0);
    CHECK_NEAR(v[0], 0.06298828125, 0);
    st_release(t, t->nbytes + 5, 10); /* out of range: no-op */
    st_release(t, 100, 1);            /* no whole page: no-op */
    CHECK(st_read_f32(t, 0, 1, v, &g_err) == 0);
    CHECK_NEAR(v[0], -0.048583984375, 0);
    st_file_close(f);
}

TEST(expect_reports_shape_mismatch)
{
    st_checkpoint *c = NULL;
    CHECK(ckpt_open(fixture("qwen3-moe-tiny"), &c, &g_err) == 0);
    const st_tensor *t = (const st_tensor *)1;
    int64_t any[2] = {-1, 256};
    CHECK(ckpt_expect(c, "model.embed_tokens.weight", 2, any, &t, &g_err) == 0 && t);
    int64_t wrong[2] = {512, 128};
    CHECK(ckpt_expect(c, "model.embed_tokens.weight", 2, wrong, &t, &g_err) == -1 && !t);
    CHECK_STR_CONTAINS(g_err.msg, "qwen3-moe-tiny/model.safetensors: tensor 'model.embed_tokens.weight' "
                                  "has shape [512, 256], expected [512, 128]");
    int64_t rank3[3] = {-1, -1, -1};
    CHECK(ckpt_expect(c, "model.embed_tokens.weight", 3, rank3, NULL, &g_err) == -1);
    CHECK_STR_CONTAINS(g_err.msg, "expected [*, *, *]");
    CHECK(ckpt_expect(c, "model.nope", 1, rank3, &t, &g_err) == -1 && !t);
    CHECK_STR_CONTAINS(g_err.msg, "has no tensor 'model.nope'");
    ckpt_close(c);
}

/* ---------- valid hand-made files ---------- */

TEST(valid_edge_cases_accepted)
{
    /* empty header, scalar (rank 0), zero-size tensors at shared offsets, padding spaces, header
     * order differing from data order, unknown extra entry keys ignored */
    CHECK(st_error("empty.st", "{}", 0) == NULL);
    CHECK(st_error("meta_only.st", "{\"__metadata__\":{\"a\":\"b\"}}   ", 0) == NULL);
    const char *hdr = "{\"z\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                      "\"e0\":{\"dtype\":\"F16\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
                      "\"e1\":{\"dtype\":\"I64\",\"shape\":[2,0],\"data_offsets\":[4,4]},"
                      "\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[4,7],\"extra\":1}}  \n ";
    const char *p = tmp_path("edge.st");
    write_st(p, hdr, 7);
    st_file *f = NULL;
    CHECK_MSG(st_file_open(p, &f, &g_err) == 0, "%s", g_err.msg);
    CHECK_EQ(st_file_count(f), 4);
    CHECK(strcmp(st_file_tensor(f, 0)->name, "a") == 0); /* name order */
    CHECK(strcmp(st_file_tensor(f, 3)->name, "z") == 0);
    const st_tensor *z = st_file_find(f, "z");
    CHECK(z->ndim == 0 && z->numel == 1 && z->nbytes == 4);
    CHECK(st_file_find(f, "e1")->numel == 0);
    CHECK_EQ(st_file_find(f, "a")->data[0], (uint8_t)(4 * 7 + 1));
    st_file_close(f);
    /* non-ASCII (valid UTF-8) tensor names are fine */
    CHECK(st_error("utf8.st", "{\"w\xc3\xa9ight\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
                   1) == NULL);
}

/* ---------- one test per validation rule ---------- */

TEST(rule_file_shorter_than_length_field)
{
    const char *p = tmp_path("short.st");
    write_bytes(p, "\x05\0\0", 3);
    const char *e = open_error(p);
    CHECK_STR_CONTAINS(e, "short.st: file is 3 bytes, too short to hold the 8-byte header length");
    p = tmp_path("zero.st");
    write_bytes(p, "", 0);
    CHECK_STR_CONTAINS(open_error(p), "zero.st: file is 0 bytes");
}

TEST(rule_truncated_file)
{
    /* the real qwen3 fixture cut in half: the first tensor past the cut is named */
    FILE *in = fopen(fixture("qwen3-moe-tiny/model.safetensors"), "rb");
    CHECK(in);
    size_t n = 4475448 / 2;
    uint8_t *b = malloc(n);
    CHECK(fread(b, 1, n, in) == n);
    fclose(in);
    const char *p = tmp_path("trunc.safetensors");
    write_bytes(p, b, n);
    free(b);
    const char *e = open_error(p);
    /* (python3: first header entry whose end exceeds 2237724 - 8 - 7728 = 2229988) */
    CHECK_STR_CONTAINS(e, "trunc.safetensors: tensor 'model.layers.0.self_attn.o_proj.weight': data_offsets [2167936, 2299008]");
    CHECK_STR_CONTAINS(e, "run past the end of the 2229988-byte data buffer");
    CHECK_STR_CONTAINS(e, "re-download it");
}

TEST(rule_header_length_past_end_of_file)
{
    const char *p = tmp_path("hlen.st");
    uint8_t b[20] = {100}; /* claims 100 header bytes, has 12 */
    memcpy(b + 8, "{}          ", 12);
    write_bytes(p, b, sizeof b);
    CHECK_STR_CONTAINS(open_error(p), "hlen.st: header length 100 runs past the end of the file (20 bytes)");
}

TEST(rule_header_length_over_limit)
{
    /* a sparse 101 MB file whose length field claims a 100 MB + 1 header */
    const char *p = tmp_path("huge.st");
    int fd = open(p, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    CHECK(fd >= 0);
    uint64_t hl = 100ull * 1024 * 1024 + 1;
    CHECK(write(fd, &hl, 8) == 8);
    CHECK(ftruncate(fd, 101 * 1024 * 1024) == 0);
    close(fd);
    CHECK_STR_CONTAINS(open_error(p), "huge.st: header length 104857601 exceeds the 104857600-byte limit");
    unlink(p);
}

TEST(rule_header_not_utf8)
{
    CHECK_STR_CONTAINS(st_error("utf.st", "{\"a\xff\":{}}", 0), "utf.st: header holds invalid UTF-8 at byte 3");
    /* overlong encoding of '/' and a UTF-16 surrogate are invalid too */
    CHECK_STR_CONTAINS(st_error("utf2.st", "{\"\xc0\xaf\":1}", 0), "invalid UTF-8 at byte 2");
    CHECK_STR_CONTAINS(st_error("utf3.st", "{\"\xed\xa0\x80\":1}", 0), "surrogate");
    CHECK_STR_CONTAINS(st_error("utf4.st", "{\"\xe2\x82", 0), "truncated sequence");
    /* raw control characters and \u0000 would cut C-string names short */
    CHECK_STR_CONTAINS(st_error("ctl.st", "{\"a\x01\":1}", 0), "raw control character at byte 3");
    CHECK_STR_CONTAINS(st_error("nul.st", "{\"a\\u0000b\":1}", 0), "escaped NUL");
}

TEST(rule_header_not_json)
{
    CHECK_STR_CONTAINS(st_error("nj.st", "{\"a\": {\"dtype\": ", 0),
                       "nj.st: header is not valid JSON (error near byte");
    CHECK_STR_CONTAINS(st_error("nj2.st", "{} x", 0), "unexpected text after the top-level value at byte 3");
    CHECK_STR_CONTAINS(st_error("nj3.st", "", 0), "nj3.st: header is not valid JSON");
}

TEST(rule_header_not_object)
{
    CHECK_STR_CONTAINS(st_error("arr.st", "[1, 2]", 0), "arr.st: header is an array, not a JSON object");
    CHECK_STR_CONTAINS(st_error("str.st", "\"x\"", 0), "header is a string, not a JSON object");
}

TEST(rule_entry_shape_of_entry)
{
    CHECK_STR_CONTAINS(st_error("ent.st", "{\"w\": 5}", 0),
                       "ent.st: tensor 'w': header entry is a number, not an object");
    CHECK_STR_CONTAINS(st_error("ent2.st", "{\"w\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],"
                                           "\"data_offsets\":[0,1]}}", 1),
                       "tensor 'w': key \"dtype\" appears twice");
}

TEST(rule_unknown_dtype)
{
    CHECK_STR_CONTAINS(st_error("dt.st", "{\"w\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[0,1]}}", 1),
                       "dt.st: tensor 'w': unknown dtype \"F4\" (known: BOOL");
    CHECK_STR_CONTAINS(st_error("dt2.st", "{\"w\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
                       "tensor 'w': \"dtype\" is a number");
    CHECK_STR_CONTAINS(st_error("dt3.st", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
                       "tensor 'w': \"dtype\" is missing");
}

TEST(rule_bad_shape)
{
    CHECK_STR_CONTAINS(st_error("sh1.st", "{\"w\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0),
                       "sh1.st: tensor 'w': shape entry 0 is not a non-negative integer");
    CHECK_STR_CONTAINS(st_error("sh2.st", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,2.5],\"data_offsets\":[0,0]}}", 0),
                       "tensor 'w': shape entry 1 is not a non-negative integer");
    CHECK_STR_CONTAINS(st_error("sh3.st", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                                          "\"data_offsets\":[0,1]}}", 1),
                       "tensor 'w': shape has more than 8 dimensions");
    CHECK_STR_CONTAINS(st_error("sh4.st", "{\"w\":{\"dtype\":\"U8\",\"shape\":\"3\",\"data_offsets\":[0,3]}}", 3),
                       "tensor 'w': \"shape\" is a string, expected an array");
    CHECK_STR_CONTAINS(st_error("sh5.st", "{\"w\":{\"dtype\":\"U8\",\"shape\":[\"3\"],\"data_offsets\":[0,3]}}", 3),
                       "shape entry 0 is not a non-negative integer");
    /* element count overflowing 64 bits, and bytes overflowing */
    CHECK_STR_CONTAINS(st_error("sh6.st", "{\"w\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],"
                                          "\"data_offsets\":[0,0]}}", 0),
                       "tensor 'w': shape has more elements than fit in 64 bits");
    CHECK_STR_CONTAINS(st_error("sh7.st", "{\"w\":{\"dtype\":\"F64\",\"shape\":[4294967296,1073741824],"
                                          "\"data_offsets\":[0,0]}}", 0),
                       "tensor 'w': shape needs more bytes than fit");
}

TEST(rule_bad_data_offsets)
{
    CHECK_STR_CONTAINS(st_error("of1.st", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 2),
                       "of1.st: tensor 'w': \"data_offsets\" must be [begin, end]");
    CHECK_STR_CONTAINS(st_error("of2.st", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,0]}}", 1),
                       "tensor 'w': data_offsets [1, 0] end before they begin");
    CHECK_STR_CONTAINS(st_error("of3.st", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1),
                       "tensor 'w': \"data_offsets\" must be [begin, end] with non-negative integers, found nothing");
    CHECK_STR_CONTAINS(st_error("of4.st", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}", 1),
                       "\"data_offsets\" must be [begin, end]");
}

TEST(rule_offsets_with_gap)
{
    const char *e = st_error("gap.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                                       "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[6,10]}}", 10);
    CHECK_STR_CONTAINS(e, "gap.st: tensor 'b': data starts at byte 6 but tensor 'a' ends at byte 4 "
                          "— a 2-byte hole in the data buffer");
    e = st_error("gap0.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}", 6);
    CHECK_STR_CONTAINS(e, "tensor 'a': data starts at byte 2 but the data before it ends at byte 0 — a 2-byte hole");
}

TEST(rule_overlapping_offsets)
{
    const char *e = st_error("ovl.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[6],\"data_offsets\":[0,6]},"
                                       "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", 8);
    CHECK_STR_CONTAINS(e, "ovl.st: tensor 'b': data_offsets [4, 8] overlap tensor 'a', which ends at byte 6");
    /* two tensors claiming the very same bytes */
    e = st_error("ovl2.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                            "\"b\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    CHECK_STR_CONTAINS(e, "overlap tensor 'a'");
}

TEST(rule_offsets_past_buffer)
{
    const char *e = st_error("past.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                                        "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", 6);
    CHECK_STR_CONTAINS(e, "past.st: tensor 'b': data_offsets [4, 8] run past the end of the 6-byte data buffer");
}

TEST(rule_shape_times_dtype_must_equal_byte_length)
{
    const char *e = st_error("model.safetensors", "{\"x\":{\"dtype\":\"BF16\",\"shape\":[3,4],"
                                                  "\"data_offsets\":[0,10]}}", 10);
    CHECK_STR_CONTAINS(e, "model.safetensors: tensor 'x': data_offsets [0, 10] hold 10 bytes but BF16 [3, 4] "
                          "needs 24 — the file is corrupt or truncated; re-download it");
}

TEST(rule_trailing_bytes)
{
    const char *e = st_error("trail.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 9);
    CHECK_STR_CONTAINS(e, "trail.st: the data buffer holds 9 bytes but the tensors cover only 4 — 5 trailing bytes");
    CHECK_STR_CONTAINS(st_error("trail2.st", "{}", 3), "holds 3 bytes but the tensors cover only 0");
}

TEST(rule_duplicate_names)
{
    const char *e = st_error("dup.st", "{\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                                       "\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}", 4);
    CHECK_STR_CONTAINS(e, "dup.st: tensor 'w' appears twice in the header");
    e = st_error("dupm.st", "{\"__metadata__\":{},\"__metadata__\":{}}", 0);
    CHECK_STR_CONTAINS(e, "__metadata__ appears twice");
}

TEST(rule_bad_metadata)
{
    CHECK_STR_CONTAINS(st_error("md1.st", "{\"__metadata__\":[\"a\"]}", 0),
                       "md1.st: __metadata__ is an array, expected an object of strings");
    CHECK_STR_CONTAINS(st_error("md2.st", "{\"__metadata__\":{\"format\":\"pt\",\"n\":3}}", 0),
                       "md2.st: __metadata__ key 'n' holds a number, expected a string");
    CHECK_STR_CONTAINS(st_error("md3.st", "{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0),
                       "__metadata__ key 'k' appears twice");
}

/* ---------- checkpoint directories ---------- */

static const char *make_dir(const char *name)
{
    const char *d = tmp_path(name);
    mkdir(d, 0755);
    return d;
}

static void write_in(const char *dir, const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    write_bytes(p, text, strlen(text));
}

static void write_st_in(const char *dir, const char *name, const char *header, size_t data_len)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    write_st(p, header, data_len);
}

#define HDR_A "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}"
#define HDR_B "{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}"
#define HDR_BC "{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}," \
               "\"c\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[2,3]}}"

TEST(ckpt_sharded_hand_made_ok)
{
    const char *d = make_dir("okshard");
    write_st_in(d, "s0.safetensors", HDR_A, 2);
    write_st_in(d, "s1.safetensors", HDR_BC, 3);
    write_in(d, "model.safetensors.index.json",
             "{\"metadata\":{\"total_size\":5},\"weight_map\":{\"c\":\"s1.safetensors\","
             "\"a\":\"s0.safetensors\",\"b\":\"s1.safetensors\"}}");
    st_checkpoint *c = NULL;
    CHECK_MSG(ckpt_open(d, &c, &g_err) == 0, "%s", g_err.msg);
    CHECK_EQ(ckpt_count(c), 3);
    CHECK_EQ(ckpt_total_bytes(c), 5);
    CHECK(strcmp(ckpt_tensor(c, 0)->name, "a") == 0 && strcmp(ckpt_tensor(c, 2)->name, "c") == 0);
    CHECK_STR_CONTAINS(st_file_path(ckpt_find(c, "c")->file), "okshard/s1.safetensors");
    ckpt_close(c);
}

TEST(ckpt_index_names_missing_shard)
{
    const char *d = make_dir("missing");
    write_st_in(d, "s0.safetensors", HDR_A, 2);
    write_in(d, "model.safetensors.index.json",
             "{\"weight_map\":{\"a\":\"s0.safetensors\",\"b\":\"s1.safetensors\"}}");
    const char *e = ckpt_error(d);
    CHECK_STR_CONTAINS(e, "missing/model.safetensors.index.json names shard 's1.safetensors', which is "
                          "missing from");
    CHECK_STR_CONTAINS(e, "download that shard");
}

TEST(ckpt_index_maps_tensor_absent_from_shard)
{
    const char *d = make_dir("absent");
    write_st_in(d, "s0.safetensors", HDR_A, 2);
    write_st_in(d, "s1.safetensors", HDR_B, 2);
    write_in(d, "model.safetensors.index.json",
             "{\"weight_map\":{\"a\":\"s0.safetensors\",\"b\":\"s1.safetensors\",\"q\":\"s1.safetensors\"}}");
    const char *e = ckpt_error(d);
    CHECK_STR_CONTAINS(e, "absent/model.safetensors.index.json maps tensor 'q' to s1.safetensors, which "
                          "does not hold it");
}

TEST(ckpt_shard_holds_unmapped_tensor)
{
    const char *d = make_dir("unmapped");
    write_st_in(d, "s0.safetensors", HDR_A, 2);
    write_st_in(d, "s1.safetensors", HDR_BC, 3);
    write_in(d, "model.safetensors.index.json",
             "{\"weight_map\":{\"a\":\"s0.safetensors\",\"b\":\"s1.safetensors\"}}");
    const char *e = ckpt_error(d);
    CHECK_STR_CONTAINS(e, "unmapped/s1.safetensors holds tensor 'c', which ");
    CHECK_STR_CONTAINS(e, "does not list at all");
    /* a tensor present in two shards: the one it is not mapped to is reported */
    const char *d2 = make_dir("twice");
    write_st_in(d2, "s0.safetensors", HDR_A, 2);
    write_st_in(d2, "s1.safetensors", HDR_A, 2);
    write_in(d2, "model.safetensors.index.json", "{\"weight_map\":{\"a\":\"s0.safetensors\",\"z\":\"s1.safetensors\"}}");
    e = ckpt_error(d2);
    CHECK_STR_CONTAINS(e, "index.json maps tensor 'z' to s1.safetensors, which does not hold it");
    write_in(d2, "model.safetensors.index.json", "{\"weight_map\":{\"a\":\"s0.safetensors\",\"b\":\"s1.safetensors\"}}");
    e = ckpt_error(d2);
    CHECK_STR_CONTAINS(e, "twice/model.safetensors.index.json maps tensor 'b' to s1.safetensors");
}

TEST(ckpt_index_itself_malformed)
{
    const char *d = make_dir("badindex");
    write_st_in(d, "s0.safetensors", HDR_A, 2);
    write_in(d, "model.safetensors.index.json", "{\"metadata\":{}}");
    CHECK_STR_CONTAINS(ckpt_error(d), "index.json: \"weight_map\" is missing, expected an object");
    write_in(d, "model.safetensors.index.json", "{\"weight_map\":{\"a\":3}}");
    CHECK_STR_CONTAINS(ckpt_error(d), "weight_map entry for tensor 'a' is a number");
    write_in(d, "model.safetensors.index.json", "{\"weight_map\":{\"a\":\"../s0.safetensors\"}}");
    CHECK_STR_CONTAINS(ckpt_error(d), "tensor 'a' maps to \"../s0.safetensors\", which is not a plain file name");
    write_in(d, "model.safetensors.index.json", "{\"weight_map\":{}}");
    CHECK_STR_CONTAINS(ckpt_error(d), "weight_map is empty");
    write_in(d, "model.safetensors.index.json",
             "{\"weight_map\":{\"a\":\"s0.safetensors\",\"a\":\"s0.safetensors\"}}");
    CHECK_STR_CONTAINS(ckpt_error(d), "tensor 'a' appears twice in weight_map");
    write_in(d, "model.safetensors.index.json", "{\"weight_map\":{\"a\":\"s0.safetensors\"},");
    CHECK_STR_CONTAINS(ckpt_error(d), "index.json: shard index is not valid JSON");
    write_in(d, "model.safetensors.index.json", "[]");
    CHECK_STR_CONTAINS(ckpt_error(d), "shard index is an array, expected a JSON object");
    write_in(d, "model.safetensors.index.json", "{\"metadata\":7,\"weight_map\":{\"a\":\"s0.safetensors\"}}");
    CHECK_STR_CONTAINS(ckpt_error(d), "\"metadata\" is a number, expected an object");
    /* a corrupt shard is reported by its own path */
    write_in(d, "model.safetensors.index.json", "{\"weight_map\":{\"a\":\"s0.safetensors\"}}");
    CHECK(ckpt_error(d) == NULL);
    write_in(d, "s0.safetensors", "garbage!garbage");
    CHECK_STR_CONTAINS(ckpt_error(d), "badindex/s0.safetensors: header length");
}

TEST(ckpt_directory_without_weights)
{
    const char *d = make_dir("empty");
    CHECK_STR_CONTAINS(ckpt_error(d), "empty: holds neither model.safetensors.index.json nor model.safetensors");
    write_st_in(d, "model-00001-of-00002.safetensors", HDR_A, 2);
    CHECK_STR_CONTAINS(ckpt_error(d), "other *.safetensors files are there");
    CHECK_STR_CONTAINS(ckpt_error(tmp_path("does-not-exist")), "does-not-exist: No such file or directory");
    write_in(d, "plain", "x");
    char p[512];
    snprintf(p, sizeof p, "%s/plain", d);
    CHECK_STR_CONTAINS(ckpt_error(p), "plain: not a directory");
    /* single-file checkpoints are found without an index */
    write_st_in(d, "model.safetensors", HDR_BC, 3);
    st_checkpoint *c = NULL;
    CHECK_MSG(ckpt_open(d, &c, &g_err) == 0, "%s", g_err.msg);
    CHECK_EQ(ckpt_count(c), 2);
    ckpt_close(c);
}

TEST(index_parse_in_memory)
{
    const char *j = "{\"metadata\":null,\"weight_map\":{\"z\":\"b.safetensors\",\"m\":\"a.safetensors\","
                    "\"a\":\"b.safetensors\"}}  \n";
    st_index *ix = NULL;
    CHECK_MSG(st_index_parse(j, strlen(j), "ix", &ix, &g_err) == 0, "%s", g_err.msg);
    CHECK_EQ(ix->n_shards, 2);
    CHECK(!strcmp(ix->shards[0], "a.safetensors") && !strcmp(ix->shards[1], "b.safetensors"));
    CHECK_EQ(ix->n_entries, 3);
    CHECK(!strcmp(ix->entries[0].tensor, "a") && ix->entries[0].shard == 1);
    CHECK(!strcmp(ix->entries[1].tensor, "m") && ix->entries[1].shard == 0);
    CHECK(st_index_find(ix, "z") == &ix->entries[2] && st_index_find(ix, "q") == NULL);
    st_index_free(ix);
    /* the length bounds the text: a prefix that is not a complete object is refused */
    CHECK(st_index_parse(j, 20, "ix", &ix, &g_err) == -1 && ix == NULL);
    CHECK_STR_CONTAINS(g_err.msg, "ix: shard index is not valid JSON");
}
