/* Graph builder and writer: round trip through model_reader, exact bytes, layout of the external
 * data, determinism over thread counts, bounded chunks in flight, failure cleanup and the
 * structural checks. */
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>

#include "test.h"
#include "test_graph_util.h"

#include "onnx/graph.h"
#include "onnx/model_reader.h"

/* ---- producers ---- */

/* Byte b of chunk c of a tensor seeded s: a pattern that differs per tensor, chunk and byte. */
static uint8_t pattern_byte(uint32_t seed, int64_t chunk, size_t b)
{
    uint32_t x = seed * 2654435761u ^ (uint32_t)chunk * 40503u ^ (uint32_t)b * 69069u;
    x ^= x >> 13;
    return (uint8_t)(x * 1274126177u >> 24);
}

typedef struct pattern_ctx {
    uint32_t seed;
    size_t chunk_bytes;
    int64_t fail_chunk; /* -1 = never fail */
    atomic_int *freed;  /* counts ctx_free calls */
} pattern_ctx;

static int produce_pattern(void *vctx, int64_t chunk, void *out, m2o_err *err)
{
    pattern_ctx *c = vctx;
    if (chunk == c->fail_chunk)
        return m2o_fail(err, "synthetic failure in chunk %lld", (long long)chunk);
    /* Uneven work per chunk so that workers finish out of order. */
    volatile uint32_t spin = 0;
    for (int i = 0; i < (int)((chunk * 7919) % 13) * 2000; i++)
        spin += (uint32_t)i;
    uint8_t *o = out;
    for (size_t b = 0; b < c->chunk_bytes; b++)
        o[b] = pattern_byte(c->seed, chunk, b);
    return 0;
}

static void free_pattern(void *vctx)
{
    pattern_ctx *c = vctx;
    if (c->freed)
        atomic_fetch_add(c->freed, 1);
    free(c);
}

static void add_pattern(graph *g, const char *name, int elem_type, int ndim, const int64_t *dims,
                        int64_t n_chunks, size_t chunk_bytes, uint32_t seed, int64_t fail_chunk,
                        atomic_int *freed)
{
    pattern_ctx *c = malloc(sizeof *c);
    *c = (pattern_ctx){seed, chunk_bytes, fail_chunk, freed};
    graph_add_streamed_initializer(g, name, elem_type, ndim, dims, n_chunks, chunk_bytes,
                                   produce_pattern, c, free_pattern);
}

static void expect_pattern(uint8_t *buf, uint32_t seed, int64_t n_chunks, size_t chunk_bytes)
{
    for (int64_t c = 0; c < n_chunks; c++)
        for (size_t b = 0; b < chunk_bytes; b++)
            buf[c * (int64_t)chunk_bytes + (int64_t)b] = pattern_byte(seed, c, b);
}

/* ---- a graph that uses every feature ---- */

static float g_small_f32[6] = {1.5f, -2.25f, 0.0f, 3.0e-8f, -7.0f, 65504.0f};
static int64_t g_shape_i64[3] = {1, -1, 2880};
static uint8_t g_big_static[16384]; /* source of static initializers */

static void fill_big_static(void)
{
    for (size_t i = 0; i < sizeof g_big_static; i++)
        g_big_static[i] = (uint8_t)(i * 31 + 7);
}

static graph *build_full(atomic_int *freed)
{
    fill_big_static();
    graph *g = graph_new("full");
    graph_add_input(g, "input_ids", ONNX_INT64, 2, (int64_t[]){-1, -1},
                    (const char *const[]){"batch_size", "sequence_length"});
    graph_add_input(g, "mask", ONNX_FLOAT16, 3, (int64_t[]){1, -1, 7},
                    (const char *const[]){NULL, "total", NULL});
    graph_add_output(g, "logits", ONNX_FLOAT, 3, (int64_t[]){-1, -1, 50},
                     (const char *const[]){"batch_size", "sequence_length", NULL});
    graph_add_output(g, "scalar_out", ONNX_INT64, 0, NULL, NULL);

    /* insertion order: inline, external streamed, inline streamed, external static, ... */
    graph_add_initializer(g, "small_f32", ONNX_FLOAT, 2, (int64_t[]){2, 3}, g_small_f32,
                          sizeof g_small_f32);
    add_pattern(g, "experts.w", ONNX_UINT8, 3, (int64_t[]){4, 10, 50}, 4, 500, 1, -1, freed);
    add_pattern(g, "small_streamed", ONNX_FLOAT16, 1, (int64_t[]){100}, 2, 100, 2, -1, freed);
    graph_add_initializer(g, "big_static", ONNX_UINT8, 1, (int64_t[]){3000}, g_big_static,
                          3000); /* ends off the 64-byte grid */
    graph_add_initializer(g, "shape", ONNX_INT64, 1, (int64_t[]){3}, g_shape_i64,
                          sizeof g_shape_i64);
    add_pattern(g, "bf16_w", ONNX_BFLOAT16, 2, (int64_t[]){33, 64}, 3, 33 * 64 * 2 / 3, 3, -1,
                freed); /* 3 chunks of 1408 bytes */
    add_pattern(g, "exactly_threshold", ONNX_INT8, 1, (int64_t[]){1024}, 1, 1024, 4, -1, freed);
    add_pattern(g, "below_threshold", ONNX_INT8, 1, (int64_t[]){1023}, 1, 1023, 5, -1, freed);

    graph_node *n = graph_add_node(g, "QMoE", "com.microsoft", "/model/layers.0/moe/QMoE", 5,
                                   (const char *const[]){"input_ids", "mask", "", "experts.w",
                                                         "small_streamed"},
                                   2, (const char *const[]){"moe_out", ""});
    node_attr_int(n, "k", 4);
    node_attr_float(n, "swiglu_limit", 7.0f);
    node_attr_string(n, "activation_type", "swiglu");
    node_attr_ints(n, "perm", 4, (int64_t[]){0, 2, 1, -3});
    node_attr_floats(n, "alphas", 2, (float[]){1.702f, -0.5f});
    int32_t tv[2] = {-5, 77};
    node_attr_tensor(n, "value", ONNX_INT32, 1, (int64_t[]){2}, tv, sizeof tv);
    graph_add_node(g, "MatMul", NULL, "/lm_head", 2,
                   (const char *const[]){"moe_out", "big_static"}, 1,
                   (const char *const[]){"logits"});
    graph_add_node(g, "Sum", "", "", 6,
                   (const char *const[]){"small_f32", "shape", "bf16_w", "exactly_threshold",
                                         "below_threshold", "logits"},
                   1, (const char *const[]){"scalar_out"});
    return g;
}

static int write_graph(graph *g, const char *dir, int threads, m2o_err *err)
{
    graph_write_opts o;
    graph_write_opts_init(&o);
    o.threads = threads;
    return graph_write(g, dir, &o, err);
}

static bool bytes_of(onnx_model *m, const char *name, const void **data, size_t *n)
{
    const onnx_tensor *t = onnx_model_find_initializer(m, name);
    m2o_err err;
    return t && onnx_model_tensor_data(m, t, data, n, &err) == 0;
}

/* Checks one initializer's header and bytes. */
static void check_init(onnx_model *m, const char *name, int elem_type, int ndim,
                       const int64_t *dims, const void *want, size_t want_n, bool external)
{
    const onnx_tensor *t = onnx_model_find_initializer(m, name);
    CHECK_MSG(t != NULL, "initializer %s missing", name);
    CHECK_EQ(onnx_tensor_elem_type(t), elem_type);
    CHECK_EQ(onnx_tensor_ndim(t), ndim);
    for (int i = 0; i < ndim; i++)
        CHECK_EQ(onnx_tensor_dims(t)[i], dims[i]);
    CHECK_MSG(onnx_tensor_external(t, NULL, NULL, NULL) == external, "%s external != %d", name,
              external);
    const void *data = NULL;
    size_t n = 0;
    CHECK(bytes_of(m, name, &data, &n));
    CHECK_EQ(n, want_n);
    CHECK_BYTES_EQ(data, want, n);
}

TEST(roundtrip_full_graph)
{
    char dir[512], path[600];
    CHECK(make_temp_dir(dir, sizeof dir));
    atomic_int freed = 0;
    graph *g = build_full(&freed);
    CHECK_EQ(graph_node_count(g), 3);
    CHECK_EQ(graph_initializer_count(g), 8);
    CHECK_EQ(graph_initializer_bytes(g), 24 + 2000 + 200 + 3000 + 24 + 4224 + 1024 + 1023);
    m2o_err err;
    int rc = write_graph(g, dir, 3, &err);
    graph_free(g);
    CHECK_MSG(rc == 0, "%s", err.msg);
    CHECK_EQ(atomic_load(&freed), 5); /* every producer context released exactly once */

    snprintf(path, sizeof path, "%s/model.onnx", dir);
    onnx_model *m;
    CHECK_MSG(onnx_model_open(path, &m, &err) == 0, "%s", err.msg);
    CHECK_EQ(onnx_model_ir_version(m), 10);
    CHECK_EQ(onnx_model_opset(m, ""), 21);
    CHECK_EQ(onnx_model_opset(m, "com.microsoft"), 1);
    CHECK_EQ(onnx_model_opset(m, "ai.onnx.ml"), -1);
    CHECK(strcmp(onnx_model_producer(m), "moe2onnx") == 0);
    CHECK(strcmp(onnx_model_graph_name(m), "full") == 0);

    /* graph inputs/outputs */
    CHECK_EQ(onnx_model_input_count(m), 2);
    CHECK_EQ(onnx_model_output_count(m), 2);
    const onnx_value *ids = onnx_model_input(m, 0), *mask = onnx_model_find_input(m, "mask");
    CHECK(strcmp(onnx_value_name(ids), "input_ids") == 0);
    CHECK_EQ(onnx_value_elem_type(ids), ONNX_INT64);
    CHECK_EQ(onnx_value_ndim(ids), 2);
    CHECK(strcmp(onnx_value_dim_param(ids, 1), "sequence_length") == 0);
    CHECK_EQ(onnx_value_dim(ids, 1), -1);
    CHECK(mask != NULL);
    CHECK_EQ(onnx_value_elem_type(mask), ONNX_FLOAT16);
    CHECK_EQ(onnx_value_dim(mask, 0), 1);
    CHECK(onnx_value_dim_param(mask, 0) == NULL);
    CHECK(strcmp(onnx_value_dim_param(mask, 1), "total") == 0);
    CHECK_EQ(onnx_value_dim(mask, 2), 7);
    const onnx_value *logits = onnx_model_find_output(m, "logits");
    CHECK(logits && onnx_value_dim(logits, 2) == 50 && onnx_value_elem_type(logits) == ONNX_FLOAT);
    const onnx_value *sc = onnx_model_find_output(m, "scalar_out");
    CHECK(sc && onnx_value_ndim(sc) == 0);

    /* nodes and attributes */
    CHECK_EQ(onnx_model_node_count(m), 3);
    const onnx_node *q = onnx_model_find_node(m, "/model/layers.0/moe/QMoE");
    CHECK(q != NULL);
    CHECK(strcmp(onnx_node_op(q), "QMoE") == 0 && strcmp(onnx_node_domain(q), "com.microsoft") == 0);
    CHECK_EQ(onnx_node_input_count(q), 5);
    CHECK(strcmp(onnx_node_input(q, 2), "") == 0 && strcmp(onnx_node_input(q, 4), "small_streamed") == 0);
    CHECK_EQ(onnx_node_output_count(q), 2);
    CHECK(strcmp(onnx_node_output(q, 0), "moe_out") == 0 && strcmp(onnx_node_output(q, 1), "") == 0);
    CHECK_EQ(onnx_node_attr_count(q), 6);
    CHECK(strcmp(onnx_node_attr_name(q, 0), "k") == 0);
    int64_t k = 0;
    float f = 0;
    const char *s = NULL;
    const int64_t *ints;
    const float *floats;
    size_t cnt;
    CHECK(onnx_node_attr_int(q, "k", &k) && k == 4);
    CHECK(onnx_node_attr_float(q, "swiglu_limit", &f) && f == 7.0f);
    CHECK(onnx_node_attr_string(q, "activation_type", &s) && strcmp(s, "swiglu") == 0);
    CHECK(onnx_node_attr_ints(q, "perm", &ints, &cnt) && cnt == 4 && ints[1] == 2 && ints[3] == -3);
    CHECK(onnx_node_attr_floats(q, "alphas", &floats, &cnt) && cnt == 2 && floats[0] == 1.702f &&
          floats[1] == -0.5f);
    CHECK(!onnx_node_attr_int(q, "swiglu_limit", &k)); /* wrong type */
    CHECK(!onnx_node_attr_int(q, "missing", &k));
    const onnx_tensor *tv;
    const void *tdata;
    size_t tn;
    CHECK(onnx_node_attr_tensor(q, "value", &tv));
    CHECK_EQ(onnx_tensor_elem_type(tv), ONNX_INT32);
    CHECK(onnx_model_tensor_data(m, tv, &tdata, &tn, &err) == 0 && tn == 8);
    CHECK_EQ(((const int32_t *)tdata)[0], -5);
    CHECK_EQ(((const int32_t *)tdata)[1], 77);
    const onnx_node *mm = onnx_model_node(m, 1);
    CHECK(strcmp(onnx_node_op(mm), "MatMul") == 0 && strcmp(onnx_node_domain(mm), "") == 0);
    const onnx_node *sum = onnx_model_node(m, 2);
    CHECK(strcmp(onnx_node_name(sum), "") == 0 && onnx_node_input_count(sum) == 6);

    /* initializers: order, types, dims, bytes, inline vs external */
    CHECK_EQ(onnx_model_initializer_count(m), 8);
    CHECK(strcmp(onnx_tensor_name(onnx_model_initializer(m, 3)), "big_static") == 0);
    uint8_t want[4224];
    check_init(m, "small_f32", ONNX_FLOAT, 2, (int64_t[]){2, 3}, g_small_f32, 24, false);
    expect_pattern(want, 1, 4, 500);
    check_init(m, "experts.w", ONNX_UINT8, 3, (int64_t[]){4, 10, 50}, want, 2000, true);
    expect_pattern(want, 2, 2, 100);
    check_init(m, "small_streamed", ONNX_FLOAT16, 1, (int64_t[]){100}, want, 200, false);
    check_init(m, "big_static", ONNX_UINT8, 1, (int64_t[]){3000}, g_big_static, 3000, true);
    check_init(m, "shape", ONNX_INT64, 1, (int64_t[]){3}, g_shape_i64, 24, false);
    expect_pattern(want, 3, 3, 1408);
    check_init(m, "bf16_w", ONNX_BFLOAT16, 2, (int64_t[]){33, 64}, want, 4224, true);
    expect_pattern(want, 4, 1, 1024);
    check_init(m, "exactly_threshold", ONNX_INT8, 1, (int64_t[]){1024}, want, 1024, true);
    expect_pattern(want, 5, 1, 1023);
    check_init(m, "below_threshold", ONNX_INT8, 1, (int64_t[]){1023}, want, 1023, false);

    /* external layout: in insertion order, each at the next 64-byte boundary, no overlap */
    /* experts.w [0,2000) -> big_static at 2048 [2048,5048) -> bf16_w at 5056 [5056,9280) ->
     * exactly_threshold at 9280 [9280,10304). */
    const uint64_t expect_off[4] = {0, 2048, 5056, 9280};
    const char *ext[4] = {"experts.w", "big_static", "bf16_w", "exactly_threshold"};
    for (int i = 0; i < 4; i++) {
        const char *loc;
        uint64_t off, len;
        CHECK(onnx_tensor_external(onnx_model_find_initializer(m, ext[i]), &loc, &off, &len));
        CHECK(strcmp(loc, "model.onnx.data") == 0);
        CHECK_MSG(off % 64 == 0, "%s at %llu", ext[i], (unsigned long long)off);
        CHECK_EQ(off, expect_off[i]);
    }
    onnx_model_close(m);
    size_t data_len;
    unsigned char *data = read_whole(dir, "model.onnx.data", &data_len);
    CHECK(data != NULL);
    CHECK_EQ(data_len, 10304);
    /* padding between tensors is zero */
    int nonzero = 0;
    for (size_t i = 2000; i < 2048; i++)
        nonzero |= data[i];
    free(data);
    CHECK_EQ(nonzero, 0);
    remove_temp_dir(dir);
}

/* A minimal model whose ModelProto bytes are encoded by hand here (protobuf wire format, fields
 * in number order), so the writer's field numbers and framing are checked independently. */
TEST(minimal_model_bytes_golden)
{
    graph *g = graph_new("g");
    graph_add_input(g, "X", ONNX_FLOAT, 1, (int64_t[]){2}, NULL);
    graph_add_output(g, "Y", ONNX_FLOAT, 1, (int64_t[]){2}, NULL);
    graph_add_node(g, "Identity", "", "/i", 1, (const char *const[]){"X"}, 1,
                   (const char *const[]){"Y"});
    char dir[512];
    CHECK(make_temp_dir(dir, sizeof dir));
    m2o_err err;
    int rc = write_graph(g, dir, 1, &err);
    graph_free(g);
    CHECK_MSG(rc == 0, "%s", err.msg);
    static const unsigned char want[] = {
        0x08, 0x0a,                                         /* ir_version 10 */
        0x12, 0x08, 'm', 'o', 'e', '2', 'o', 'n', 'n', 'x', /* producer_name */
        0x3a, 0x3b,                                         /* graph, 59 bytes */
        0x0a, 0x14,                                         /*  node, 20 bytes */
        0x0a, 0x01, 'X', 0x12, 0x01, 'Y', 0x1a, 0x02, '/', 'i',
        0x22, 0x08, 'I', 'd', 'e', 'n', 't', 'i', 't', 'y',
        0x12, 0x01, 'g',                                    /*  name */
        0x5a, 0x0f, 0x0a, 0x01, 'X', 0x12, 0x0a,            /*  input X: type */
        0x0a, 0x08, 0x08, 0x01, 0x12, 0x04, 0x0a, 0x02, 0x08, 0x02, /* float, shape [2] */
        0x62, 0x0f, 0x0a, 0x01, 'Y', 0x12, 0x0a,            /*  output Y */
        0x0a, 0x08, 0x08, 0x01, 0x12, 0x04, 0x0a, 0x02, 0x08, 0x02,
        0x42, 0x04, 0x0a, 0x00, 0x10, 0x15,                 /* opset "" 21 */
        0x42, 0x11, 0x0a, 0x0d, 'c', 'o', 'm', '.', 'm', 'i', 'c', 'r', 'o', 's', 'o', 'f', 't',
        0x10, 0x01,                                         /* opset com.microsoft 1 */
    };
    size_t n = 0;
    unsigned char *got = read_whole(dir, "model.onnx", &n);
    size_t dn = 99;
    unsigned char *d = read_whole(dir, "model.onnx.data", &dn);
    free(d);
    remove_temp_dir(dir);
    CHECK(got != NULL);
    CHECK_EQ(n, sizeof want);
    CHECK_BYTES_EQ(got, want, n);
    free(got);
    CHECK_EQ(dn, 0); /* no external tensors: empty data file */
}

TEST(e8m0_tensor_gives_ir11)
{
    char dir[512], path[600];
    CHECK(make_temp_dir(dir, sizeof dir));
    graph *g = graph_new("e8");
    graph_add_input(g, "X", ONNX_FLOAT, 1, (int64_t[]){4}, NULL);
    graph_add_output(g, "Y", ONNX_FLOAT, 1, (int64_t[]){4}, NULL);
    graph_add_node(g, "Identity", "", "id", 1, (const char *const[]){"X"}, 1,
                   (const char *const[]){"Y"});
    add_pattern(g, "scales", ONNX_FLOAT8E8M0, 2, (int64_t[]){64, 32}, 2, 1024, 9, -1, NULL);
    m2o_err err;
    graph_write_opts o;
    graph_write_opts_init(&o);
    o.ir_version = 10; /* too old for E8M0: refused, nothing written */
    int rc_old = graph_write(g, dir, &o, &err);
    bool none = !file_exists_in(dir, "model.onnx") && !file_exists_in(dir, "model.onnx.data");
    CHECK_EQ(rc_old, -1);
    CHECK_STR_CONTAINS(err.msg, "FLOAT8E8M0");
    CHECK(none);
    o.ir_version = 0;
    int rc = graph_write(g, dir, &o, &err);
    graph_free(g);
    CHECK_MSG(rc == 0, "%s", err.msg);
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    onnx_model *m;
    CHECK_MSG(onnx_model_open(path, &m, &err) == 0, "%s", err.msg);
    int64_t ir = onnx_model_ir_version(m);
    int et = onnx_tensor_elem_type(onnx_model_find_initializer(m, "scales"));
    onnx_model_close(m);
    remove_temp_dir(dir);
    CHECK_EQ(ir, 11);
    CHECK_EQ(et, 24);
}

TEST(explicit_ir_version_is_kept)
{
    char dir[512], path[600];
    CHECK(make_temp_dir(dir, sizeof dir));
    graph *g = graph_new("ir9");
    graph_add_input(g, "X", ONNX_FLOAT, 1, (int64_t[]){4}, NULL);
    graph_add_output(g, "X", ONNX_FLOAT, 1, (int64_t[]){4}, NULL);
    graph_write_opts o;
    graph_write_opts_init(&o);
    o.ir_version = 9;
    m2o_err err;
    int rc = graph_write(g, dir, &o, &err);
    graph_free(g);
    CHECK_MSG(rc == 0, "%s", err.msg);
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    onnx_model *m;
    CHECK_MSG(onnx_model_open(path, &m, &err) == 0, "%s", err.msg);
    int64_t ir = onnx_model_ir_version(m);
    onnx_model_close(m);
    remove_temp_dir(dir);
    CHECK_EQ(ir, 9);
}

/* ---- determinism and bounded memory ---- */

static graph *build_many(void)
{
    graph *g = graph_new("many");
    graph_add_input(g, "X", ONNX_FLOAT, 1, (int64_t[]){1}, NULL);
    graph_add_output(g, "X", ONNX_FLOAT, 1, (int64_t[]){1}, NULL);
    char name[64];
    for (int t = 0; t < 24; t++) {
        int64_t chunks = 1 + t % 7;
        size_t cb = (size_t)(97 + t * 131) * 4;
        snprintf(name, sizeof name, "layers.%d.w", t);
        add_pattern(g, name, ONNX_FLOAT, 2, (int64_t[]){chunks, (int64_t)cb / 4}, chunks, cb,
                    (uint32_t)t + 100, -1, NULL);
        if (t % 5 == 0) {
            snprintf(name, sizeof name, "layers.%d.b", t);
            graph_add_initializer(g, name, ONNX_UINT8, 1, (int64_t[]){(int64_t)cb}, g_big_static,
                                  cb);
        }
    }
    return g;
}

TEST(bytes_identical_for_any_thread_count)
{
    fill_big_static();
    int threads[4] = {1, 4, 0, 7};
    unsigned char *model[4] = {0}, *data[4] = {0};
    size_t model_n[4] = {0}, data_n[4] = {0};
    int rcs[4];
    m2o_err err = {{0}};
    for (int i = 0; i < 4; i++) {
        char dir[512];
        CHECK(make_temp_dir(dir, sizeof dir));
        graph *g = build_many();
        rcs[i] = write_graph(g, dir, threads[i], &err);
        graph_free(g);
        model[i] = read_whole(dir, "model.onnx", &model_n[i]);
        data[i] = read_whole(dir, "model.onnx.data", &data_n[i]);
        remove_temp_dir(dir);
    }
    for (int i = 0; i < 4; i++)
        CHECK_MSG(rcs[i] == 0, "threads %d: %s", threads[i], err.msg);
    CHECK(data_n[0] > 30000);
    for (int i = 1; i < 4; i++) {
        CHECK_EQ(model_n[i], model_n[0]);
        CHECK_EQ(data_n[i], data_n[0]);
        CHECK_BYTES_EQ(model[i], model[0], model_n[0]);
        CHECK_BYTES_EQ(data[i], data[0], data_n[0]);
    }
    for (int i = 0; i < 4; i++) {
        free(model[i]);
        free(data[i]);
    }
}

/* Counts chunk productions started and commits begun (the writer polls `cancelled` once per
 * chunk, just before committing it) to measure how many chunks are alive at once. */
typedef struct flight {
    atomic_int started, polled, max_alive;
} flight;

static flight g_flight;

static int produce_counted(void *ctx, int64_t chunk, void *out, m2o_err *err)
{
    int alive = atomic_fetch_add(&g_flight.started, 1) + 1 - atomic_load(&g_flight.polled);
    int prev = atomic_load(&g_flight.max_alive);
    while (alive > prev && !atomic_compare_exchange_weak(&g_flight.max_alive, &prev, alive))
        ;
    memset(out, (int)(chunk & 0xff), 256);
    return 0;
}

static bool poll_counted(void *user)
{
    atomic_fetch_add(&g_flight.polled, 1);
    return false;
}

TEST(chunks_in_flight_are_bounded)
{
    char dir[512];
    CHECK(make_temp_dir(dir, sizeof dir));
    atomic_store(&g_flight.started, 0);
    atomic_store(&g_flight.polled, 0);
    atomic_store(&g_flight.max_alive, 0);
    graph *g = graph_new("flight");
    graph_add_input(g, "X", ONNX_FLOAT, 1, (int64_t[]){1}, NULL);
    graph_add_output(g, "X", ONNX_FLOAT, 1, (int64_t[]){1}, NULL);
    graph_add_streamed_initializer(g, "w", ONNX_UINT8, 2, (int64_t[]){400, 256}, 400, 256,
                                   produce_counted, NULL, NULL);
    graph_write_opts o;
    graph_write_opts_init(&o);
    o.threads = 4;
    o.cancelled = poll_counted;
    m2o_err err;
    int rc = graph_write(g, dir, &o, &err);
    graph_free(g);
    size_t n = 0;
    unsigned char *data = read_whole(dir, "model.onnx.data", &n);
    remove_temp_dir(dir);
    CHECK_MSG(rc == 0, "%s", err.msg);
    CHECK_EQ(atomic_load(&g_flight.started), 400);
    CHECK_EQ(atomic_load(&g_flight.polled), 400);
    /* window = 2 × threads: at most 8 chunks produced-or-producing and not yet committed */
    CHECK_MSG(atomic_load(&g_flight.max_alive) <= 8, "max alive %d",
              atomic_load(&g_flight.max_alive));
    CHECK(data && n == 400 * 256);
    CHECK_EQ(data[399 * 256], 399 & 0xff);
    free(data);
}

/* ---- failures ---- */

static void check_producer_failure(int threads)
{
    char dir[512];
    CHECK(make_temp_dir(dir, sizeof dir));
    atomic_int freed = 0;
    graph *g = graph_new("fail");
    graph_add_input(g, "X", ONNX_FLOAT, 1, (int64_t[]){1}, NULL);
    graph_add_output(g, "X", ONNX_FLOAT, 1, (int64_t[]){1}, NULL);
    add_pattern(g, "ok.w", ONNX_UINT8, 1, (int64_t[]){8 * 2048}, 8, 2048, 1, -1, &freed);
    add_pattern(g, "broken.w", ONNX_UINT8, 1, (int64_t[]){8 * 2048}, 8, 2048, 2, 5, &freed);
    add_pattern(g, "after.w", ONNX_UINT8, 1, (int64_t[]){8 * 2048}, 8, 2048, 3, -1, &freed);
    m2o_err err;
    int rc = write_graph(g, dir, threads, &err);
    bool model = file_exists_in(dir, "model.onnx"), data = file_exists_in(dir, "model.onnx.data");
    int freed_before = atomic_load(&freed);
    graph_free(g);
    remove_temp_dir(dir);
    CHECK_EQ(rc, -1);
    CHECK_STR_CONTAINS(err.msg, "broken.w");
    CHECK_STR_CONTAINS(err.msg, "synthetic failure in chunk 5");
    CHECK(!model && !data);
    CHECK_EQ(freed_before, 1);      /* ok.w was written completely */
    CHECK_EQ(atomic_load(&freed), 3); /* the rest released by graph_free, once each */
}

TEST(producer_failure_removes_files_1_thread) { check_producer_failure(1); }
TEST(producer_failure_removes_files_4_threads) { check_producer_failure(4); }

static int g_polls;
static bool cancel_after_3(void *user)
{
    (void)user;
    return ++g_polls > 3;
}

TEST(cancel_stops_and_removes_files)
{
    char dir[512];
    CHECK(make_temp_dir(dir, sizeof dir));
    graph *g = build_many();
    graph_write_opts o;
    graph_write_opts_init(&o);
    o.threads = 2;
    o.cancelled = cancel_after_3;
    g_polls = 0;
    m2o_err err;
    int rc = graph_write(g, dir, &o, &err);
    graph_free(g);
    bool any = file_exists_in(dir, "model.onnx") || file_exists_in(dir, "model.onnx.data");
    remove_temp_dir(dir);
    CHECK_EQ(rc, -1);
    CHECK_STR_CONTAINS(err.msg, "cancelled");
    CHECK_EQ(g_polls, 4);
    CHECK(!any);
}

typedef struct progress_log {
    int calls;
    char names[16][32];
    uint64_t done[16], total;
} progress_log;

static void log_progress(void *user, const char *tensor, uint64_t done, uint64_t total)
{
    progress_log *p = user;
    if (p->calls < 16) {
        snprintf(p->names[p->calls], sizeof p->names[0], "%s", tensor);
        p->done[p->calls] = done;
    }
    p->calls++;
    p->total = total;
}

TEST(progress_after_each_tensor_in_order)
{
    char dir[512];
    CHECK(make_temp_dir(dir, sizeof dir));
    graph *g = build_full(NULL);
    progress_log log = {0};
    graph_write_opts o;
    graph_write_opts_init(&o);
    o.threads = 4;
    o.progress = log_progress;
    o.progress_user = &log;
    m2o_err err;
    int rc = graph_write(g, dir, &o, &err);
    graph_free(g);
    remove_temp_dir(dir);
    CHECK_MSG(rc == 0, "%s", err.msg);
    CHECK_EQ(log.calls, 8);
    CHECK(strcmp(log.names[0], "small_f32") == 0 && strcmp(log.names[1], "experts.w") == 0 &&
          strcmp(log.names[7], "below_threshold") == 0);
    CHECK_EQ(log.done[0], 24);
    CHECK_EQ(log.done[1], 2024);
    CHECK_EQ(log.done[7], log.total);
    CHECK_EQ(log.total, 11519);
}

TEST(write_error_names_file_and_removes_partial_output)
{
    char dir[512];
    CHECK(make_temp_dir(dir, sizeof dir));
    graph *g = build_many();
    struct rlimit old, small;
    getrlimit(RLIMIT_FSIZE, &old);
    small = old;
    small.rlim_cur = 8192; /* the data file needs ~90 KB: writing past 8 KB fails with EFBIG */
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &small);
    m2o_err err;
    int rc = write_graph(g, dir, 2, &err);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, old_handler);
    graph_free(g);
    bool any = file_exists_in(dir, "model.onnx") || file_exists_in(dir, "model.onnx.data");
    remove_temp_dir(dir);
    CHECK_EQ(rc, -1);
    CHECK_STR_CONTAINS(err.msg, "model.onnx.data");
    CHECK_STR_CONTAINS(err.msg, "File too large");
    CHECK(!any);
}

TEST(missing_output_directory_is_reported)
{
    graph *g = build_many();
    m2o_err err;
    int rc = write_graph(g, "/nonexistent-m2o-dir/sub", 1, &err);
    graph_free(g);
    CHECK_EQ(rc, -1);
    CHECK_STR_CONTAINS(err.msg, "/nonexistent-m2o-dir/sub/model.onnx.data");
    CHECK_STR_CONTAINS(err.msg, "No such file or directory");
}

TEST(streamed_tensor_cannot_be_written_twice)
{
    char dir[512];
    CHECK(make_temp_dir(dir, sizeof dir));
    graph *g = build_many();
    m2o_err err;
    int rc1 = write_graph(g, dir, 2, &err);
    int rc2 = write_graph(g, dir, 2, &err);
    graph_free(g);
    remove_temp_dir(dir);
    CHECK_EQ(rc1, 0);
    CHECK_EQ(rc2, -1);
    CHECK_STR_CONTAINS(err.msg, "layers.0.w was already written");
}

TEST(bad_file_names_are_refused)
{
    graph *g = build_many();
    graph_write_opts o;
    graph_write_opts_init(&o);
    o.data_filename = "../escape.data";
    m2o_err err;
    int rc = graph_write(g, "/tmp", &o, &err);
    graph_free(g);
    CHECK_EQ(rc, -1);
    CHECK_STR_CONTAINS(err.msg, "data_filename \"../escape.data\"");
}

/* ---- graph_check ---- */

static graph *base_graph(void)
{
    graph *g = graph_new("chk");
    graph_add_input(g, "x", ONNX_FLOAT, 1, (int64_t[]){4}, NULL);
    graph_add_output(g, "y", ONNX_FLOAT, 1, (int64_t[]){4}, NULL);
    graph_add_initializer(g, "w", ONNX_FLOAT, 1, (int64_t[]){4}, g_small_f32, 16);
    graph_add_node(g, "Add", "", "/add", 2, (const char *const[]){"x", "w"}, 1,
                   (const char *const[]){"t"});
    graph_add_node(g, "Relu", "", "/relu", 1, (const char *const[]){"t"}, 1,
                   (const char *const[]){"y"});
    return g;
}

/* graph_check's message for g (freed), or "" when it passes. */
static const char *check_msg(graph *g)
{
    static m2o_err err;
    int rc = graph_check(g, &err);
    graph_free(g);
    return rc ? err.msg : "";
}

TEST(check_accepts_valid_graph)
{
    CHECK(strcmp(check_msg(base_graph()), "") == 0);
}

TEST(check_duplicate_node_name)
{
    graph *g = base_graph();
    graph_add_node(g, "Relu", "", "/relu", 1, (const char *const[]){"t"}, 1,
                   (const char *const[]){"z"});
    const char *m = check_msg(g);
    CHECK_STR_CONTAINS(m, "node name \"/relu\" is used twice");
}

TEST(check_undefined_input)
{
    graph *g = base_graph();
    graph_add_node(g, "Mul", "", "/mul", 2, (const char *const[]){"t", "nowhere"}, 1,
                   (const char *const[]){"z"});
    const char *m = check_msg(g);
    CHECK_STR_CONTAINS(m, "node /mul (Mul) input 1 \"nowhere\" is not produced");
}

TEST(check_value_produced_twice)
{
    graph *g = base_graph();
    graph_add_node(g, "Neg", "", "/neg", 1, (const char *const[]){"x"}, 1,
                   (const char *const[]){"t"});
    const char *m = check_msg(g);
    CHECK_STR_CONTAINS(m, "value \"t\" is produced twice: by node /add and by node /neg");
}

TEST(check_node_output_shadows_initializer)
{
    graph *g = base_graph();
    graph_add_node(g, "Neg", "", "/neg", 1, (const char *const[]){"x"}, 1,
                   (const char *const[]){"w"});
    const char *m = check_msg(g);
    CHECK_STR_CONTAINS(m, "value \"w\" is produced twice: by initializer and by node /neg");
}

TEST(check_initializer_that_is_also_input)
{
    graph *g = base_graph();
    graph_add_initializer(g, "x", ONNX_FLOAT, 1, (int64_t[]){4}, g_small_f32, 16);
    const char *m = check_msg(g);
    CHECK_STR_CONTAINS(m, "value \"x\" is defined twice: as graph input and as initializer");
}

TEST(check_graph_output_not_produced)
{
    graph *g = base_graph();
    graph_add_output(g, "ghost", ONNX_FLOAT, 0, NULL, NULL);
    const char *m = check_msg(g);
    CHECK_STR_CONTAINS(m, "graph output \"ghost\" is not produced");
}

TEST(check_streamed_chunks_must_match_dims)
{
    graph *g = base_graph();
    add_pattern(g, "experts", ONNX_FLOAT16, 2, (int64_t[]){4, 100}, 4, 199, 1, -1, NULL);
    const char *m = check_msg(g);
    CHECK_STR_CONTAINS(m, "streamed initializer experts: 796 bytes given but its dims hold 400 "
                          "FLOAT16 elements = 800 bytes");
}

TEST(check_static_size_must_match_dims)
{
    graph *g = base_graph();
    graph_add_initializer(g, "short", ONNX_INT64, 1, (int64_t[]){3}, g_shape_i64, 16);
    const char *m = check_msg(g);
    CHECK_STR_CONTAINS(m, "initializer short: 16 bytes given");
}

TEST(check_attribute_set_twice)
{
    graph *g = base_graph();
    graph_node *n = graph_add_node(g, "Softmax", "", "/sm", 1, (const char *const[]){"t"}, 1,
                                   (const char *const[]){"z"});
    node_attr_int(n, "axis", -1);
    node_attr_int(n, "axis", 1);
    const char *m = check_msg(g);
    CHECK_STR_CONTAINS(m, "node /sm: attribute axis is set twice");
}

TEST(check_construction_error_is_reported)
{
    graph *g = base_graph();
    graph_add_initializer(g, "deep", ONNX_FLOAT, 9, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1},
                          g_small_f32, 4);
    add_pattern(g, "ignored", ONNX_FLOAT, 1, (int64_t[]){1}, 1, 4, 1, -1, NULL);
    const char *m = check_msg(g);
    CHECK_STR_CONTAINS(m, "initializer deep: rank 9 is outside 0..8");
}

TEST(check_unknown_element_type)
{
    graph *g = base_graph();
    graph_add_initializer(g, "strs", 8 /* STRING */, 1, (int64_t[]){1}, "a", 1);
    const char *m = check_msg(g);
    CHECK_STR_CONTAINS(m, "initializer strs: element type 8 (STRING) cannot be written");
}

TEST(check_names_many_nodes_fast)
{
    /* 20000 chained nodes: the checks use hash tables, so this stays in milliseconds. */
    graph *g = graph_new("chain");
    graph_add_input(g, "v0", ONNX_FLOAT, 1, (int64_t[]){1}, NULL);
    char in[32], out[32], name[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(in, sizeof in, "v%d", i);
        snprintf(out, sizeof out, "v%d", i + 1);
        snprintf(name, sizeof name, "/n%d", i);
        graph_add_node(g, "Relu", "", name, 1, (const char *const[]){in}, 1,
                       (const char *const[]){out});
    }
    graph_add_output(g, "v20000", ONNX_FLOAT, 1, (int64_t[]){1}, NULL);
    graph_add_node(g, "Relu", "", "/n777", 1, (const char *const[]){"v5"}, 1,
                   (const char *const[]){"extra"});
    const char *m = check_msg(g);
    CHECK_STR_CONTAINS(m, "node name \"/n777\" is used twice");
}

TEST(dtype_table)
{
    CHECK_EQ(onnx_dtype_size(ONNX_FLOAT), 4);
    CHECK_EQ(onnx_dtype_size(ONNX_FLOAT16), 2);
    CHECK_EQ(onnx_dtype_size(ONNX_BFLOAT16), 2);
    CHECK_EQ(onnx_dtype_size(ONNX_INT64), 8);
    CHECK_EQ(onnx_dtype_size(ONNX_UINT8), 1);
    CHECK_EQ(onnx_dtype_size(ONNX_FLOAT8E8M0), 1);
    CHECK_EQ(onnx_dtype_size(8), 0);
    CHECK_EQ(onnx_dtype_size(22), 0);
    CHECK(strcmp(onnx_dtype_name(ONNX_FLOAT8E8M0), "FLOAT8E8M0") == 0);
    CHECK(strcmp(onnx_dtype_name(ONNX_BFLOAT16), "BFLOAT16") == 0);
}
