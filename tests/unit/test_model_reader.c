/* model_reader: reading back what graph_write produced, and refusing broken models with an
 * error that names the file or tensor. Broken models are made by editing a written ModelProto
 * with protobuf-c directly. */
#include "test.h"
#include "test_graph_util.h"

#include "onnx/graph.h"
#include "onnx/model_reader.h"
#include "onnx/onnx.pb-c.h"

static float g_w[300];

/* Writes X[4] + b -> t; MatMul-free: W (300 floats, external) is only an initializer here. */
static bool write_small(const char *dir)
{
    for (int i = 0; i < 300; i++)
        g_w[i] = (float)i * 0.25f - 3.0f;
    float b[4] = {1, 2, 3, 4};
    graph *g = graph_new("small");
    graph_add_input(g, "X", ONNX_FLOAT, 1, (int64_t[]){4}, NULL);
    graph_add_output(g, "Y", ONNX_FLOAT, 1, (int64_t[]){4}, NULL);
    graph_add_initializer(g, "W", ONNX_FLOAT, 2, (int64_t[]){3, 100}, g_w, sizeof g_w);
    graph_add_initializer(g, "b", ONNX_FLOAT, 1, (int64_t[]){4}, b, sizeof b);
    graph_node *n = graph_add_node(g, "Add", "", "/add", 2, (const char *const[]){"X", "b"}, 1,
                                   (const char *const[]){"Y"});
    node_attr_string(n, "note", "");
    m2o_err err;
    graph_write_opts o;
    graph_write_opts_init(&o);
    o.threads = 1;
    int rc = graph_write(g, dir, &o, &err);
    graph_free(g);
    return rc == 0;
}

/* Applies edit to dir/model.onnx in place. */
static bool edit_model(const char *dir, void (*edit)(Onnx__ModelProto *))
{
    size_t n;
    unsigned char *buf = read_whole(dir, "model.onnx", &n);
    if (!buf)
        return false;
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, n, buf);
    free(buf);
    if (!m)
        return false;
    edit(m);
    size_t len = onnx__model_proto__get_packed_size(m);
    uint8_t *out = malloc(len);
    onnx__model_proto__pack(m, out);
    onnx__model_proto__free_unpacked(m, NULL);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(out, 1, len, f) == len;
    if (f)
        fclose(f);
    free(out);
    return ok;
}

static Onnx__TensorProto *find_init(Onnx__ModelProto *m, const char *name)
{
    for (size_t i = 0; i < m->graph->n_initializer; i++)
        if (strcmp(m->graph->initializer[i]->name, name) == 0)
            return m->graph->initializer[i];
    return NULL;
}

static void set_ext(Onnx__ModelProto *m, const char *key, const char *value)
{
    Onnx__TensorProto *t = find_init(m, "W");
    for (size_t i = 0; i < t->n_external_data; i++)
        if (strcmp(t->external_data[i]->key, key) == 0) {
            free(t->external_data[i]->value);
            t->external_data[i]->value = strdup(value);
        }
}

static void edit_escape(Onnx__ModelProto *m) { set_ext(m, "location", "../model.onnx.data"); }
static void edit_offset(Onnx__ModelProto *m) { set_ext(m, "offset", "64"); }
static void edit_length(Onnx__ModelProto *m) { set_ext(m, "length", "1196"); }
static void edit_missing(Onnx__ModelProto *m) { set_ext(m, "location", "other.data"); }

/* Replaces b's raw_data with float_data, the typed storage other exporters use. */
static void edit_typed(Onnx__ModelProto *m)
{
    Onnx__TensorProto *t = find_init(m, "b");
    free(t->raw_data.data);
    t->raw_data.data = NULL;
    t->raw_data.len = 0;
    t->has_raw_data = 0;
    t->n_float_data = 4;
    t->float_data = malloc(4 * sizeof(float));
    for (int i = 0; i < 4; i++)
        t->float_data[i] = 10.0f + (float)i;
}

/* Opens dir/model.onnx and fetches initializer `name`; returns the rc and fills err. */
static int fetch(const char *dir, const char *name, float *first, m2o_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    onnx_model *m;
    if (onnx_model_open(path, &m, err))
        return -1;
    const void *data = NULL;
    size_t n = 0;
    int rc = onnx_model_tensor_data(m, onnx_model_find_initializer(m, name), &data, &n, err);
    if (rc == 0)
        *first = ((const float *)data)[n / sizeof(float) - 1];
    onnx_model_close(m);
    return rc;
}

TEST(reads_back_external_and_inline)
{
    char dir[512];
    CHECK(make_temp_dir(dir, sizeof dir));
    CHECK(write_small(dir));
    float last = 0, blast = 0;
    m2o_err err;
    int rc = fetch(dir, "W", &last, &err);
    int rc2 = fetch(dir, "b", &blast, &err);
    remove_temp_dir(dir);
    CHECK_MSG(rc == 0 && rc2 == 0, "%s", err.msg);
    CHECK_NEAR(last, 299 * 0.25 - 3.0, 0);
    CHECK_NEAR(blast, 4.0, 0);
}

TEST(accessors_handle_missing_and_out_of_range)
{
    char dir[512], path[600];
    CHECK(make_temp_dir(dir, sizeof dir));
    CHECK(write_small(dir));
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    onnx_model *m;
    m2o_err err;
    CHECK_MSG(onnx_model_open(path, &m, &err) == 0, "%s", err.msg);
    remove_temp_dir(dir); /* the model is in memory; W's data would now be unreadable */
    const onnx_node *n = onnx_model_node(m, 0);
    bool ok = n && !onnx_model_node(m, 1) && !onnx_model_find_node(m, "nope") &&
              !onnx_node_input(n, 2) && !onnx_node_output(n, 1) && !onnx_node_attr_name(n, 1) &&
              !onnx_model_input(m, 1) && !onnx_model_output(m, 1) &&
              !onnx_model_find_input(m, "Y") && !onnx_model_find_output(m, "X") &&
              !onnx_model_find_initializer(m, "X") && !onnx_model_initializer(m, 2) &&
              onnx_value_dim(onnx_model_input(m, 0), 5) == -1 &&
              !onnx_value_dim_param(onnx_model_input(m, 0), 0);
    const char *s = "unset";
    bool empty_string = onnx_node_attr_string(n, "note", &s) && strcmp(s, "") == 0;
    const void *data;
    size_t nb;
    int rc = onnx_model_tensor_data(m, onnx_model_find_initializer(m, "W"), &data, &nb, &err);
    onnx_model_close(m);
    CHECK(ok);
    CHECK(empty_string);
    CHECK_EQ(rc, -1);
    CHECK_STR_CONTAINS(err.msg, "initializer W: cannot open external data file model.onnx.data");
}

static void check_edit(void (*edit)(Onnx__ModelProto *), const char *tensor, const char *want)
{
    char dir[512];
    CHECK(make_temp_dir(dir, sizeof dir));
    CHECK(write_small(dir));
    CHECK(edit_model(dir, edit));
    float v = 0;
    m2o_err err;
    int rc = fetch(dir, tensor, &v, &err);
    remove_temp_dir(dir);
    CHECK_EQ(rc, -1);
    CHECK_STR_CONTAINS(err.msg, want);
}

TEST(external_range_past_end_names_tensor)
{
    /* 1200 bytes at offset 64 in a 1200-byte file */
    check_edit(edit_offset, "W", "initializer W: external range [64, +1200) runs past the end of "
                                 "model.onnx.data (1200 bytes)");
}

TEST(external_length_must_match_dims)
{
    check_edit(edit_length, "W", "initializer W: external length 1196 bytes but its dims and type "
                                 "need 1200");
}

TEST(external_location_outside_directory_refused)
{
    check_edit(edit_escape, "W", "initializer W: external data location \"../model.onnx.data\"");
}

TEST(external_file_missing_named)
{
    check_edit(edit_missing, "W", "cannot open external data file other.data");
}

TEST(truncated_data_file_detected)
{
    char dir[512], path[600];
    CHECK(make_temp_dir(dir, sizeof dir));
    CHECK(write_small(dir));
    snprintf(path, sizeof path, "%s/model.onnx.data", dir);
    CHECK(truncate(path, 1000) == 0);
    float v = 0;
    m2o_err err;
    int rc = fetch(dir, "W", &v, &err);
    remove_temp_dir(dir);
    CHECK_EQ(rc, -1);
    CHECK_STR_CONTAINS(err.msg, "initializer W: external range [0, +1200) runs past the end");
}

TEST(typed_float_data_is_read)
{
    char dir[512];
    CHECK(make_temp_dir(dir, sizeof dir));
    CHECK(write_small(dir));
    CHECK(edit_model(dir, edit_typed));
    float last = 0;
    m2o_err err;
    int rc = fetch(dir, "b", &last, &err);
    remove_temp_dir(dir);
    CHECK_MSG(rc == 0, "%s", err.msg);
    CHECK_NEAR(last, 13.0, 0);
}

TEST(garbage_and_missing_model_files)
{
    char dir[512], path[600];
    CHECK(make_temp_dir(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    fputs("\xff\xff\xff\xff not a protobuf", f);
    fclose(f);
    onnx_model *m = NULL;
    m2o_err err1, err2;
    int rc1 = onnx_model_open(path, &m, &err1);
    remove_temp_dir(dir);
    int rc2 = onnx_model_open(path, &m, &err2);
    CHECK_EQ(rc1, -1);
    CHECK_STR_CONTAINS(err1.msg, "is not a valid ONNX ModelProto");
    CHECK_STR_CONTAINS(err1.msg, path);
    CHECK_EQ(rc2, -1);
    CHECK_STR_CONTAINS(err2.msg, "cannot open ONNX model");
    CHECK(m == NULL);
}
