/* Writes the small MatMulNBits and QMoE models with zero points that
 * tests/e2e/zero_points.test.mjs runs in ONNX Runtime (docs/FORMATS.md §15 "zero points"), one
 * folder per case under DIR, and DIR/cases.json listing them. Every value comes from the integer
 * formulas below, repeated independently in the JavaScript test, which decodes the weights itself
 * ((code - zero point) · scale) and compares ONNX Runtime's output with a float64 reference.
 *
 *   x(m, k)        = (((31 m + 17 k) mod 29) - 14) / 16               MatMulNBits input [M, K]
 *   code(n, k)     = (7 n + 13 k + (n k mod 5)) mod 2^bits
 *   scale(n, b)    = (1 + (3 n + 5 b) mod 7) / 256, negated when n mod 3 == 0
 *   zp(n, b)       = (5 n + 11 b + 3) mod 2^bits
 * QMoE (E 4, H 64, expert width I 64 or 32, T 3 tokens, top-2, SwiGLU alpha 1 beta 0, interleaved
 * gate/up rows): expert e's row n of fc1 uses the formulas at n + 97 e, of fc2 at n + 97 e + 50;
 *   x(t, h) = (((13 t + 7 h) mod 23) - 11) / 32, router logit(t, e) = ((5 t + 3 e) mod 7) / 4.
 * Zero points are stored packed like FORMATS §4 step 8 (uint8; 4-bit two per byte, even block low,
 * rows padded to whole bytes), or for MatMulNBits also unpacked in the io dtype ("io"). Each
 * case records in cases.json what ONNX Runtime 1.30 does with it ("expect", see the test).
 *
 * usage: zp_models DIR */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/half.h"
#include "onnx/graph.h"

static int code_v(int64_t n, int64_t k, int bits) { return (int)((7 * n + 13 * k + (n * k) % 5) % (1 << bits)); }
static int zp_v(int64_t n, int64_t b, int bits) { return (int)((5 * n + 11 * b + 3) % (1 << bits)); }
static float scale_v(int64_t n, int64_t b)
{
    float s = (float)(1 + (3 * n + 5 * b) % 7) / 256.0f;
    return n % 3 == 0 ? -s : s;
}

/* Stores v at element i of an io-dtype buffer. */
static void put_io(void *buf, int f16, size_t i, float v)
{
    if (f16)
        ((uint16_t *)buf)[i] = f32_to_f16(v);
    else
        ((float *)buf)[i] = v;
}

static void put_packed(uint8_t *row, int64_t i, int bits, int v)
{
    if (bits == 8)
        row[i] = (uint8_t)v;
    else
        row[i / 2] = (uint8_t)(i % 2 ? (row[i / 2] & 0x0f) | (v << 4) : (row[i / 2] & 0xf0) | v);
}

/* Codes [rows][K·bits/8], scales [rows][K/bs] (io dtype), zero points packed [rows][zrow] or, when
 * zp_io, [rows][K/bs] io dtype; row r uses the formulas at n = r + n0. */
typedef struct qmat {
    uint8_t *codes, *zp;
    void *scales;
    size_t cb, sb, zb;
} qmat;

static void make_qmat(qmat *q, int64_t rows, int64_t K, int bits, int bs, int f16, int zp_io,
                      int64_t n0)
{
    int64_t kb = K / bs, zrow = bits == 4 ? (kb + 1) / 2 : kb, es = f16 ? 2 : 4;
    q->cb = (size_t)(rows * K * bits / 8);
    q->sb = (size_t)(rows * kb * es);
    q->zb = zp_io ? (size_t)(rows * kb * es) : (size_t)(rows * zrow);
    q->codes = calloc(q->cb, 1);
    q->scales = calloc(q->sb, 1);
    q->zp = calloc(q->zb, 1);
    if (!zp_io && bits == 4)
        memset(q->zp, 0x88, q->zb);
    for (int64_t r = 0; r < rows; r++) {
        int64_t n = r + n0;
        for (int64_t k = 0; k < K; k++)
            put_packed(q->codes + r * K * bits / 8, k, bits, code_v(n, k, bits));
        for (int64_t b = 0; b < kb; b++) {
            put_io(q->scales, f16, (size_t)(r * kb + b), scale_v(n, b));
            if (zp_io)
                put_io(q->zp, f16, (size_t)(r * kb + b), (float)zp_v(n, b, bits));
            else
                put_packed(q->zp + r * zrow, b, bits, zp_v(n, b, bits));
        }
    }
}

static void free_qmat(qmat *q)
{
    free(q->codes);
    free(q->scales);
    free(q->zp);
}

enum { M = 3, MNB_K = 384, MNB_N = 24, E = 4, H = 64, T = 3 };

static graph *build_matmulnbits(int bits, int f16, int bs, int zp_io)
{
    int io = f16 ? ONNX_FLOAT16 : ONNX_FLOAT;
    int64_t kb = MNB_K / bs;
    graph *g = graph_new("zp_matmulnbits");
    graph_add_input(g, "X", io, 2, (int64_t[]){M, MNB_K}, NULL);
    graph_add_output(g, "Y", io, 2, (int64_t[]){M, MNB_N}, NULL);
    qmat q;
    make_qmat(&q, MNB_N, MNB_K, bits, bs, f16, zp_io, 0);
    graph_add_initializer(g, "B", ONNX_UINT8, 3, (int64_t[]){MNB_N, kb, bs * bits / 8}, q.codes,
                          q.cb);
    graph_add_initializer(g, "scales", io, 1, (int64_t[]){MNB_N * kb}, q.scales, q.sb);
    graph_add_initializer(g, "zero_points", zp_io ? io : ONNX_UINT8, 1,
                          (int64_t[]){zp_io ? MNB_N * kb : (int64_t)q.zb}, q.zp, q.zb);
    free_qmat(&q);
    graph_node *n = graph_add_node(g, "MatMulNBits", "com.microsoft", "/mnb", 4,
                                   (const char *[]){"X", "B", "scales", "zero_points"}, 1,
                                   (const char *[]){"Y"});
    node_attr_int(n, "K", MNB_K);
    node_attr_int(n, "N", MNB_N);
    node_attr_int(n, "bits", bits);
    node_attr_int(n, "block_size", bs);
    return g;
}

/* One QMoE weight input: all experts' codes / scales / zero points back to back. */
static void add_expert_weights(graph *g, const char *name, int64_t rows, int64_t K, int bits,
                               int bs, int f16, int64_t offset, int with_zp)
{
    int io = f16 ? ONNX_FLOAT16 : ONNX_FLOAT;
    int64_t kb = K / bs, zrow = bits == 4 ? (kb + 1) / 2 : kb;
    qmat all = {0}, q;
    for (int e = 0; e < E; e++) {
        make_qmat(&q, rows, K, bits, bs, f16, 0, 97 * e + offset);
        if (e == 0) {
            all.codes = malloc(q.cb * E);
            all.scales = malloc(q.sb * E);
            all.zp = malloc(q.zb * E);
        }
        memcpy(all.codes + e * q.cb, q.codes, q.cb);
        memcpy((char *)all.scales + e * q.sb, q.scales, q.sb);
        memcpy(all.zp + e * q.zb, q.zp, q.zb);
        all.cb = q.cb, all.sb = q.sb, all.zb = q.zb;
        free_qmat(&q);
    }
    char n1[64], n2[64], n3[64];
    snprintf(n1, sizeof n1, "%s.weight", name);
    snprintf(n2, sizeof n2, "%s.scales", name);
    snprintf(n3, sizeof n3, "%s.zero_points", name);
    graph_add_initializer(g, n1, ONNX_UINT8, 3, (int64_t[]){E, rows, K * bits / 8}, all.codes,
                          all.cb * E);
    graph_add_initializer(g, n2, io, 3, (int64_t[]){E, rows, kb}, all.scales, all.sb * E);
    if (with_zp)
        graph_add_initializer(g, n3, ONNX_UINT8, 3, (int64_t[]){E, rows, zrow}, all.zp,
                              all.zb * E);
    free_qmat(&all);
}

/* I = expert width; with_zp = 0 leaves inputs 11 and 12 empty (implicit zero point 2^(bits-1)). */
static graph *build_qmoe(int bits, int f16, int bs, int64_t I, int with_zp)
{
    int io = f16 ? ONNX_FLOAT16 : ONNX_FLOAT;
    graph *g = graph_new("zp_qmoe");
    graph_add_input(g, "X", io, 2, (int64_t[]){T, H}, NULL);
    graph_add_input(g, "router", io, 2, (int64_t[]){T, E}, NULL);
    graph_add_output(g, "Y", io, 2, (int64_t[]){T, H}, NULL);
    add_expert_weights(g, "fc1", 2 * I, H, bits, bs, f16, 0, with_zp);
    add_expert_weights(g, "fc2", H, I, bits, bs, f16, 50, with_zp);
    graph_node *n = graph_add_node(
        g, "QMoE", "com.microsoft", "/qmoe", 13,
        (const char *[]){"X", "router", "fc1.weight", "fc1.scales", "", "fc2.weight", "fc2.scales",
                         "", "", "", "", with_zp ? "fc1.zero_points" : "",
                         with_zp ? "fc2.zero_points" : ""},
        1, (const char *[]){"Y"});
    node_attr_int(n, "k", 2);
    node_attr_string(n, "activation_type", "swiglu");
    node_attr_int(n, "swiglu_fusion", 1);
    node_attr_float(n, "activation_alpha", 1.0f);
    node_attr_float(n, "activation_beta", 0.0f);
    node_attr_int(n, "normalize_routing_weights", 1);
    node_attr_int(n, "expert_weight_bits", bits);
    node_attr_int(n, "block_size", bs);
    node_attr_int(n, "weights_prepacked", 0); /* raw layout: CUDA reads it too (the CPU ignores it) */
    return g;
}

static int write_case(const char *dir, const char *name, graph *g, FILE *manifest, int *first,
                      const char *params)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "zp_models: cannot create %s: %s\n", path, strerror(errno));
        graph_free(g);
        return -1;
    }
    graph_write_opts o;
    graph_write_opts_init(&o);
    o.threads = 1;
    m2o_err err = {{0}};
    int rc = graph_write(g, path, &o, &err);
    graph_free(g);
    if (rc) {
        fprintf(stderr, "zp_models: %s: %s\n", name, err.msg);
        return -1;
    }
    fprintf(manifest, "%s\n  {\"name\": \"%s\", %s}", *first ? "" : ",", name, params);
    *first = 0;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: zp_models DIR\n");
        return 2;
    }
    char path[4096], params[256], name[64];
    snprintf(path, sizeof path, "%s/cases.json", argv[1]);
    FILE *manifest = fopen(path, "w");
    if (!manifest) {
        fprintf(stderr, "zp_models: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    fprintf(manifest, "[");
    int first = 1, rc = 0;
    static const int blocks[] = {16, 32, 64, 128};
    for (int bits = 4; bits <= 8 && !rc; bits += 4)
        for (int f16 = 0; f16 <= 1 && !rc; f16++)
            for (int b = 0; b < 4 && !rc; b++)
                for (int zp_io = 0; zp_io <= 1 && !rc; zp_io++) {
                    snprintf(name, sizeof name, "mnb_b%d_%s_bs%d_%s", bits, f16 ? "f16" : "f32",
                             blocks[b], zp_io ? "io" : "u8");
                    snprintf(params, sizeof params, "\"op\": \"MatMulNBits\", \"bits\": %d, "
                             "\"f16\": %s, \"block_size\": %d, \"zp_io\": %s, \"M\": %d, "
                             "\"K\": %d, \"N\": %d, \"expect\": \"%s\"", bits,
                             f16 ? "true" : "false", blocks[b], zp_io ? "true" : "false", M,
                             MNB_K, MNB_N, bits == 8 && zp_io ? "refused" : "exact");
                    rc = write_case(argv[1], name, build_matmulnbits(bits, f16, blocks[b], zp_io),
                                    manifest, &first, params);
                }
    /* Every block count even (I = 64), then fc2 with one block per row (I = 32, block 32). */
    static const struct { int bits, f16, bs, I, zp; const char *expect; } qm[] = {
        {4, 0, 16, 64, 1, "exact"}, {4, 0, 32, 64, 1, "exact"}, {4, 1, 16, 64, 1, "exact"},
        {4, 1, 32, 64, 1, "exact"}, {8, 0, 16, 64, 1, "exact"}, {8, 0, 32, 64, 1, "exact"},
        {8, 1, 16, 64, 1, "exact"}, {8, 1, 32, 64, 1, "exact"}, {4, 0, 32, 32, 1, "wrong"},
        {4, 0, 32, 32, 0, "exact"}, {4, 1, 32, 32, 1, "wrong"}, {8, 0, 32, 32, 1, "exact"},
    };
    for (size_t i = 0; i < sizeof qm / sizeof qm[0] && !rc; i++) {
        snprintf(name, sizeof name, "qmoe_b%d_%s_bs%d_i%d%s", qm[i].bits, qm[i].f16 ? "f16" : "f32",
                 qm[i].bs, qm[i].I, qm[i].zp ? "" : "_nozp");
        snprintf(params, sizeof params, "\"op\": \"QMoE\", \"bits\": %d, \"f16\": %s, "
                 "\"block_size\": %d, \"zp\": %s, \"E\": %d, \"H\": %d, \"I\": %d, \"T\": %d, "
                 "\"k\": 2, \"expect\": \"%s\"", qm[i].bits, qm[i].f16 ? "true" : "false", qm[i].bs,
                 qm[i].zp ? "true" : "false", E, H, qm[i].I, T, qm[i].expect);
        rc = write_case(argv[1], name, build_qmoe(qm[i].bits, qm[i].f16, qm[i].bs, qm[i].I,
                                                  qm[i].zp),
                        manifest, &first, params);
    }
    fprintf(manifest, "\n]\n");
    if (fclose(manifest) != 0 || rc) {
        fprintf(stderr, "zp_models: failed; %s is incomplete\n", path);
        return 1;
    }
    return 0;
}
