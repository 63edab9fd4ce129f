/* The streaming conversion path: streamed groups in the writer (one producer call fills several
 * initializers and the files are those of separate initializers), the experts' band / panel
 * producers (byte-equal to the whole-matrix kernels on every source layout and encoding), the
 * names in non-finite errors, the page release that keeps resident memory flat (no checkpoint
 * page left mapped after a pass, fault-around and large folios included), and the vectorized
 * kernels added for it (symmetric quantizer groups, bf16 transposed conversion, finiteness scan)
 * against their definitions. */
#include "test.h"
#include "test_graph_util.h"
#include "test_quant_rng.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "checkpoint/safetensors.h"
#include "checkpoint/st_writer.h"
#include "common/half.h"
#include "weights/experts.h"
#include "onnx/graph.h"
#include "quant/quant.h"

/* ---- streamed groups in the writer ---- */

static uint8_t g_pad[1030];

static uint8_t member_byte(int member, int64_t chunk, size_t b)
{
    return (uint8_t)(member * 71 + chunk * 13 + (int64_t)b * 7 + (int64_t)(b >> 8));
}

typedef struct group_ctx {
    int n;
    size_t cb[3];
    int64_t fail_chunk;
    atomic_int calls;
} group_ctx;

static int produce_group(void *vctx, int64_t chunk, void *const *outs, m2o_err *err)
{
    group_ctx *c = vctx;
    atomic_fetch_add(&c->calls, 1);
    if (chunk == c->fail_chunk)
        return m2o_fail(err, "synthetic failure in chunk %lld", (long long)chunk);
    for (int m = 0; m < c->n; m++)
        for (size_t b = 0; b < c->cb[m]; b++)
            ((uint8_t *)outs[m])[b] = member_byte(m, chunk, b);
    return 0;
}

typedef struct single_ctx {
    int member;
    size_t cb;
} single_ctx;

static int produce_single(void *vctx, int64_t chunk, void *out, m2o_err *err)
{
    (void)err;
    const single_ctx *c = vctx;
    for (size_t b = 0; b < c->cb; b++)
        ((uint8_t *)out)[b] = member_byte(c->member, chunk, b);
    return 0;
}

/* Members: 4 chunks each of 3000 bytes (external), 200 bytes (800 in all: inline, below the
 * 1024-byte threshold) and 5000 bytes (external), around two static tensors. */
static const size_t kMemberBytes[3] = {3000, 200, 5000};

static graph *group_graph(bool as_group, group_ctx *gc, single_ctx sc[3])
{
    static uint8_t stat[1500];
    for (size_t i = 0; i < sizeof stat; i++)
        stat[i] = (uint8_t)(i * 5 + 1);
    graph *g = graph_new("group");
    graph_add_input(g, "X", ONNX_FLOAT, 1, (int64_t[]){1}, NULL);
    graph_add_output(g, "X", ONNX_FLOAT, 1, (int64_t[]){1}, NULL);
    graph_add_initializer(g, "before", ONNX_UINT8, 1, (int64_t[]){1500}, stat, 1500);
    const char *names[3] = {"codes", "scales", "extra"};
    int64_t dims[3][1];
    graph_stream_member m[3];
    for (int i = 0; i < 3; i++) {
        dims[i][0] = 4 * (int64_t)kMemberBytes[i];
        m[i] = (graph_stream_member){names[i], ONNX_UINT8, 1, dims[i], kMemberBytes[i]};
    }
    if (as_group) {
        gc->n = 3;
        memcpy(gc->cb, kMemberBytes, sizeof kMemberBytes);
        graph_add_streamed_group(g, 3, m, 4, produce_group, gc, NULL);
    } else {
        for (int i = 0; i < 3; i++) {
            sc[i] = (single_ctx){i, kMemberBytes[i]};
            graph_add_streamed_initializer(g, names[i], ONNX_UINT8, 1, dims[i], 4,
                                           kMemberBytes[i], produce_single, &sc[i], NULL);
        }
    }
    graph_add_initializer(g, "after", ONNX_UINT8, 1, (int64_t[]){1100}, stat, 1100);
    return g;
}

TEST(streamed_group_writes_the_bytes_of_separate_initializers)
{
    unsigned char *model[3] = {0}, *data[3] = {0};
    size_t model_n[3] = {0}, data_n[3] = {0};
    int threads[3] = {1, 1, 3};
    bool grouped[3] = {false, true, true};
    int calls[3] = {0};
    for (int i = 0; i < 3; i++) {
        char dir[512];
        CHECK(make_temp_dir(dir, sizeof dir));
        group_ctx gc = {.fail_chunk = -1};
        single_ctx sc[3];
        graph *g = group_graph(grouped[i], &gc, sc);
        graph_write_opts o;
        graph_write_opts_init(&o);
        o.threads = threads[i];
        m2o_err err = {{0}};
        int rc = graph_write(g, dir, &o, &err);
        graph_free(g);
        model[i] = read_whole(dir, "model.onnx", &model_n[i]);
        data[i] = read_whole(dir, "model.onnx.data", &data_n[i]);
        remove_temp_dir(dir);
        calls[i] = atomic_load(&gc.calls);
        CHECK_MSG(rc == 0, "write %d: %s", i, err.msg);
    }
    /* before 1500 @0, codes 12000 @1536, extra 20000 @13568, after 1100 @33600 */
    CHECK_EQ(data_n[0], 33600 + 1100);
    CHECK_EQ(calls[1], 4); /* one call per chunk fills all three members */
    for (int i = 1; i < 3; i++) {
        CHECK_EQ(model_n[i], model_n[0]);
        CHECK_EQ(data_n[i], data_n[0]);
        CHECK_BYTES_EQ(model[i], model[0], model_n[0]);
        CHECK_BYTES_EQ(data[i], data[0], data_n[0]);
    }
    CHECK_EQ(data[2][1536 + 3000 * 2 + 17], member_byte(0, 2, 17));
    CHECK_EQ(data[2][13568 + 5000 * 3 + 4999], member_byte(2, 3, 4999));
    CHECK_EQ(data[2][1500], 0); /* alignment gap: never written, reads as zero */
    for (int i = 0; i < 3; i++) {
        free(model[i]);
        free(data[i]);
    }
}

TEST(streamed_group_failure_names_the_group_and_removes_the_files)
{
    char dir[512];
    CHECK(make_temp_dir(dir, sizeof dir));
    group_ctx gc = {.fail_chunk = 2};
    graph *g = group_graph(true, &gc, NULL);
    graph_write_opts o;
    graph_write_opts_init(&o);
    o.threads = 2;
    m2o_err err = {{0}};
    int rc = graph_write(g, dir, &o, &err);
    graph_free(g);
    bool any = file_exists_in(dir, "model.onnx") || file_exists_in(dir, "model.onnx.data");
    remove_temp_dir(dir);
    CHECK_EQ(rc, -1);
    CHECK_STR_CONTAINS(err.msg, "codes (chunk 2 of 4)");
    CHECK_STR_CONTAINS(err.msg, "synthetic failure in chunk 2");
    CHECK(!any);
}

/* A [R][C] byte matrix whose job j writes column band j (bands of 7 columns, the last shorter):
 * R pieces per job, as a transpose does. `skip` leaves one piece out, `stray` writes past the
 * end. */
typedef struct scatter_ctx {
    int64_t R, C;
    int skip, stray;
} scatter_ctx;

static uint8_t cell(int64_t r, int64_t c) { return (uint8_t)(r * 37 + c * 11 + 5); }

static int produce_bands(void *vctx, int64_t job, graph_sink *sink, m2o_err *err)
{
    const scatter_ctx *c = vctx;
    int64_t c0 = job * 7, w = c->C - c0 < 7 ? c->C - c0 : 7;
    uint8_t piece[7];
    for (int64_t r = 0; r < c->R; r++) {
        if (c->skip && job == 1 && r == 3)
            continue;
        for (int64_t i = 0; i < w; i++)
            piece[i] = cell(r, c0 + i);
        uint64_t at = (uint64_t)(r * c->C + c0);
        if (c->stray && job == 2 && r == c->R - 1)
            at = (uint64_t)(c->R * c->C - 3); /* 7 bytes from 3 before the end */
        if (graph_sink_write(sink, at, piece, (size_t)w, err))
            return -1;
    }
    return 0;
}

static int write_scatter(scatter_ctx *sc, int threads, unsigned char **data, size_t *n,
                         m2o_err *err)
{
    char dir[512];
    if (!make_temp_dir(dir, sizeof dir))
        return -1;
    graph *g = graph_new("scatter");
    graph_add_input(g, "X", ONNX_FLOAT, 1, (int64_t[]){1}, NULL);
    graph_add_output(g, "X", ONNX_FLOAT, 1, (int64_t[]){1}, NULL);
    graph_add_initializer(g, "pad", ONNX_UINT8, 1, (int64_t[]){1030}, g_pad, 1030);
    graph_add_scattered_initializer(g, "m", ONNX_UINT8, 2, (int64_t[]){sc->R, sc->C},
                                    (sc->C + 6) / 7, (uint64_t)(sc->R * sc->C), produce_bands,
                                    sc, NULL);
    graph_write_opts o;
    graph_write_opts_init(&o);
    o.threads = threads;
    int rc = graph_write(g, dir, &o, err);
    graph_free(g);
    *data = read_whole(dir, "model.onnx.data", n);
    remove_temp_dir(dir);
    return rc;
}

TEST(scattered_initializer_gets_every_piece_at_its_place)
{
    memset(g_pad, 0x77, sizeof g_pad);
    for (int threads = 1; threads <= 3 && !g_failed_now; threads += 2) {
        scatter_ctx sc = {.R = 40, .C = 45}; /* 1800 bytes: external, after the 1030 of pad */
        unsigned char *data = NULL;
        size_t n = 0;
        m2o_err err = {{0}};
        int rc = write_scatter(&sc, threads, &data, &n, &err);
        CHECK_MSG(rc == 0, "%s", err.msg);
        CHECK_EQ(n, 1088 + 1800);
        bool same = true;
        for (int64_t r = 0; r < 40; r++)
            for (int64_t c = 0; c < 45; c++)
                same = same && data[1088 + r * 45 + c] == cell(r, c);
        free(data);
        CHECK_MSG(same, "threads %d: a piece is not where its job put it", threads);
    }
    scatter_ctx gap = {.R = 40, .C = 45, .skip = 1}, past = {.R = 40, .C = 45, .stray = 1};
    unsigned char *data = NULL;
    size_t n = 0;
    m2o_err err = {{0}};
    CHECK_EQ(write_scatter(&gap, 2, &data, &n, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "initializer m: its jobs wrote 1793 of its 1800 bytes");
    CHECK(data == NULL);
    CHECK_EQ(write_scatter(&past, 2, &data, &n, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "lies outside its 1800 bytes");
    CHECK(data == NULL);
}

/* ---- expert producers against the whole-matrix kernels ---- */

typedef struct test_src {
    expert_src src;
    st_tensor t[2 * 4 + 2];
    void *buf[2 * 4 + 2];
    int n_t;
} test_src;

static st_tensor *src_tensor(test_src *ts, const char *name, st_dtype dt, int ndim,
                             const int64_t *shape, rng *r)
{
    st_tensor *t = &ts->t[ts->n_t];
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    size_t es = st_dtype_size(dt);
    uint8_t *data = malloc((size_t)n * es);
    ts->buf[ts->n_t++] = data;
    for (int64_t i = 0; i < n; i++) {
        float v = rng_gauss(r) * 0.05f;
        if (dt == ST_BF16) {
            uint16_t h = f32_to_bf16(v);
            memcpy(data + 2 * i, &h, 2);
        } else if (dt == ST_F32) {
            memcpy(data + 4 * i, &v, 4);
        } else { /* U8: MXFP4 codes, or scales near 2^-4 */
            data[i] = strstr(name, "scales") ? (uint8_t)(119 + rng_below(r, 8))
                                             : (uint8_t)rng_below(r, 256);
        }
    }
    *t = (st_tensor){.name = name, .dtype = dt, .ndim = ndim, .numel = n, .data = data,
                     .nbytes = (size_t)n * es};
    memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
    return t;
}

static void free_src(test_src *ts)
{
    for (int i = 0; i < ts->n_t; i++)
        free(ts->buf[i]);
}

enum { SRC_KN_BF16, SRC_NK_F32_HALVES, SRC_PER_EXPERT_BF16, SRC_MXFP4, SRC_COUNT };
static const char *const kSrcNames[SRC_COUNT] = {"KN bf16", "NK f32 halves", "per-expert bf16",
                                                 "MXFP4"};

/* E experts of [N][K]: N = 136 (not a multiple of the band height), K = 384 (6 panels). */
static void make_src(int kind, test_src *ts, rng *r)
{
    memset(ts, 0, sizeof *ts);
    const int64_t E = 2, N = 136, K = 384;
    expert_src *s = &ts->src;
    s->E = E, s->N = N, s->K = K;
    snprintf(s->what, sizeof s->what, "test.%s", kSrcNames[kind]);
    switch (kind) {
    case SRC_KN_BF16:
        s->kind = EXPERT_FUSED_KN;
        s->t = src_tensor(ts, "kn", ST_BF16, 3, (int64_t[]){E, K, N}, r);
        break;
    case SRC_NK_F32_HALVES:
        s->kind = EXPERT_FUSED_NK;
        s->interleave = true;
        s->t = src_tensor(ts, "nk", ST_F32, 3, (int64_t[]){E, N, K}, r);
        break;
    case SRC_PER_EXPERT_BF16:
        s->kind = EXPERT_PER_EXPERT;
        for (int64_t e = 0; e < E; e++) {
            s->per[e] = src_tensor(ts, "gate", ST_BF16, 2, (int64_t[]){N / 2, K}, r);
            s->up[e] = src_tensor(ts, "up", ST_BF16, 2, (int64_t[]){N / 2, K}, r);
        }
        break;
    default:
        s->kind = EXPERT_MXFP4;
        s->t = src_tensor(ts, "blocks", ST_U8, 4, (int64_t[]){E, N, K / 32, 16}, r);
        s->scales = src_tensor(ts, "scales", ST_U8, 3, (int64_t[]){E, N, K / 32}, r);
        break;
    }
}

static float bf16_at(const st_tensor *t, int64_t i)
{
    uint16_t h;
    memcpy(&h, t->data + 2 * i, 2);
    return bf16_to_f32(h);
}

/* Expert e as float [N][K], straight from the layout's definition (docs/FORMATS.md §3), not through the
 * readers under test. */
static void reference_matrix(int kind, const expert_src *s, int64_t e, float *w)
{
    int64_t N = s->N, K = s->K;
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++) {
            float v;
            int64_t h = n / 2;
            switch (kind) {
            case SRC_KN_BF16:
                v = bf16_at(s->t, (e * K + k) * N + n);
                break;
            case SRC_NK_F32_HALVES: {
                int64_t row = (n % 2 ? N / 2 : 0) + h;
                memcpy(&v, s->t->data + 4 * ((e * N + row) * K + k), 4);
                break;
            }
            case SRC_PER_EXPERT_BF16:
                v = bf16_at(n % 2 ? s->up[e] : s->per[e], h * K + k);
                break;
            default: {
                static const float e2m1[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
                uint8_t byte = s->t->data[(e * N * K + n * K + k) / 2];
                int code = k % 2 ? byte >> 4 : byte & 15;
                int sc = s->scales->data[(e * N * K + n * K + k) / 32];
                v = ldexpf(code & 8 ? -e2m1[code & 7] : e2m1[code & 7], sc - 127);
                break;
            }
            }
            w[n * K + k] = v;
        }
}

typedef struct enc_case {
    expert_enc enc;
    int bits, block;
} enc_case;

/* Weights and scales of one encoding from the quant kernels on the whole matrix. */
static int reference_encoding(const float *w, int64_t N, int64_t K, enc_case c, uint8_t *wout,
                              uint8_t *sout, m2o_err *err)
{
    if (c.enc == ENC_FLOAT) {
        convert_f32_to_f16(w, (uint16_t *)(void *)wout, (size_t)(N * K));
        return 0;
    }
    uint8_t *raw = malloc((size_t)(N * K));
    int rc;
    if (c.enc == ENC_FP4) {
        rc = mxfp4_encode(w, N, K, raw, sout, err);
        if (!rc)
            rc = fp4_cuda_pack(raw, N, K, wout, err);
    } else {
        qb_params p = {c.bits, c.block, true, QSCALE_F16};
        rc = qb_quantize(w, N, K, &p, c.enc == ENC_INT_RAW ? wout : raw, sout, NULL, err);
        if (!rc && c.enc == ENC_INT_SM80)
            rc = cutlass_sm80_pack(raw, N, K, c.bits, wout, err);
    }
    free(raw);
    return rc;
}

TEST(expert_producer_equals_whole_matrix_kernels_on_every_layout)
{
    static const enc_case cases[] = {
        {ENC_FLOAT, 4, 32},    {ENC_INT_RAW, 4, 32},  {ENC_INT_SM80, 4, 32},
        {ENC_INT_SM80, 4, 64}, {ENC_INT_SM80, 8, 32}, {ENC_INT_SM80, 4, 128},
        {ENC_INT_RAW, 8, 128}, {ENC_FP4, 4, 32},
    };
    rng r = {99};
    int checked = 0;
    for (int kind = 0; kind < SRC_COUNT; kind++) {
        test_src ts;
        make_src(kind, &ts, &r);
        const expert_src *s = &ts.src;
        int64_t N = s->N, K = s->K;
        float *w = malloc(sizeof(float) * (size_t)(N * K));
        size_t wmax = (size_t)(N * K) * 2, smax = (size_t)(N * K / 16) * 2;
        uint8_t *want_w = malloc(wmax), *want_s = malloc(smax), *got_w = malloc(wmax),
                *got_s = malloc(smax);
        for (size_t ci = 0; ci < sizeof cases / sizeof cases[0] && !g_failed_now; ci++) {
            enc_case c = cases[ci];
            expert_enc senc = c.enc == ENC_FP4 ? ENC_FP4_SCALES : ENC_INT_SCALES;
            size_t wb = expert_chunk_bytes(N, K, c.enc, c.bits, c.block, ONNX_FLOAT16);
            size_t sb = c.enc == ENC_FLOAT ? 0
                                           : expert_chunk_bytes(N, K, senc, c.bits, c.block,
                                                                ONNX_FLOAT16);
            for (int64_t e = 0; e < s->E && !g_failed_now; e++) {
                m2o_err err = {{0}};
                reference_matrix(kind, s, e, w);
                if (kind == SRC_MXFP4 && c.enc == ENC_FP4) { /* lossless: codes pass through */
                    CHECK(fp4_cuda_pack(s->t->data + e * N * K / 2, N, K, want_w, &err) == 0);
                    memcpy(want_s, s->scales->data + e * N * K / 32, (size_t)(N * K / 32));
                } else {
                    CHECK_MSG(reference_encoding(w, N, K, c, want_w, want_s, &err) == 0, "%s",
                              err.msg);
                }
                memset(got_w, 0xa5, wmax);
                memset(got_s, 0xa5, smax);
                int rc = expert_produce(s, e, c.enc, c.bits, c.block, ONNX_FLOAT16, false, got_w,
                                        sb ? got_s : NULL, &err);
                CHECK_MSG(rc == 0, "%s enc %d: %s", kSrcNames[kind], (int)c.enc, err.msg);
                CHECK_MSG(memcmp(got_w, want_w, wb) == 0,
                          "%s, encoding %d (%d-bit, block %d), expert %lld: weights differ",
                          kSrcNames[kind], (int)c.enc, c.bits, c.block, (long long)e);
                CHECK_MSG(memcmp(got_s, want_s, sb) == 0,
                          "%s, encoding %d (%d-bit, block %d), expert %lld: scales differ",
                          kSrcNames[kind], (int)c.enc, c.bits, c.block, (long long)e);
                /* a scales-only call gives the same scales */
                if (sb) {
                    memset(got_s, 0x5a, smax);
                    CHECK(expert_produce(s, e, senc, c.bits, c.block, ONNX_FLOAT16, false, NULL,
                                         got_s, &err) == 0);
                    CHECK_BYTES_EQ(got_s, want_s, sb);
                }
                checked++;
            }
        }
        free(w), free(want_w), free(want_s), free(got_w), free(got_s);
        free_src(&ts);
    }
    CHECK_EQ(checked, SRC_COUNT * 8 * 2);
}

TEST(nonfinite_expert_value_is_named_in_the_checkpoint)
{
    rng r = {5};
    test_src ts;
    make_src(SRC_KN_BF16, &ts, &r);
    expert_src *s = &ts.src;
    int64_t N = s->N, K = s->K, at = (1 * K + 70) * N + 5; /* expert 1, k 70, n 5 */
    uint16_t nan = 0x7fc0;
    memcpy((uint8_t *)ts.buf[0] + 2 * at, &nan, 2);
    uint8_t *out = malloc((size_t)(N * K) * 2), *sc = malloc((size_t)(N * K));
    m2o_err err = {{0}};
    char want[64];
    snprintf(want, sizeof want, "tensor kn: element %lld is NaN", (long long)at);
    CHECK_EQ(expert_produce(s, 1, ENC_INT_SM80, 4, 32, ONNX_FLOAT16, false, out, sc, &err), -1);
    CHECK_STR_CONTAINS(err.msg, want);
    CHECK_EQ(expert_produce(s, 1, ENC_FLOAT, 4, 32, ONNX_FLOAT16, false, out, NULL, &err), -1);
    CHECK_STR_CONTAINS(err.msg, want);
    CHECK_EQ(expert_produce(s, 1, ENC_FLOAT, 4, 32, ONNX_FLOAT16, true, out, NULL, &err), 0);
    CHECK_EQ(expert_produce(s, 0, ENC_INT_SM80, 4, 32, ONNX_FLOAT16, false, out, sc, &err), 0);
    free(out), free(sc);
    free_src(&ts);
}

/* ---- page release ---- */

/* Pages of [p, p + len) mapped in this process (/proc/self/pagemap bit 63). */
static int64_t mapped_pages(const uint8_t *p, size_t len)
{
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)(page - 1), b = (uintptr_t)p + len;
    int fd = open("/proc/self/pagemap", O_RDONLY);
    if (fd < 0)
        return -1;
    int64_t present = 0;
    for (uintptr_t v = a; v < b; v += (uintptr_t)page) {
        uint64_t entry = 0;
        if (pread(fd, &entry, 8, (off_t)(v / (uintptr_t)page * 8)) != 8) {
            present = -1;
            break;
        }
        present += (int64_t)(entry >> 63);
    }
    close(fd);
    return present;
}

static int fill_u8(void *ctx, size_t index, uint64_t offset, uint8_t *buf, size_t len,
                   m2o_err *err)
{
    (void)ctx, (void)index, (void)err;
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)((offset + i) * 29 + 3);
    return 0;
}

/* Reads [a, b) of t through the map in 96 KiB pieces, releasing behind, then the whole range:
 * what one job of the converter does. Returns a checksum so the reads are not optimized away. */
static uint64_t read_job(const st_tensor *t, size_t a, size_t b)
{
    uint64_t sum = 0;
    size_t released = a;
    for (size_t i = a; i < b; i += 96 << 10) {
        size_t e = i + (96 << 10) < b ? i + (96 << 10) : b;
        for (size_t j = i; j < e; j += 512)
            sum += t->data[j];
        st_release_behind(t, &released, e);
    }
    st_release(t, a, b - a);
    return sum;
}

TEST(released_ranges_leave_no_checkpoint_page_mapped)
{
    char dir[512], path[600];
    CHECK(make_temp_dir(dir, sizeof dir));
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    const int64_t nbytes = (int64_t)13 << 20; /* 13 MiB: jobs cut it off any page grid */
    st_writer *sw;
    m2o_err err = {{0}};
    int rc = st_writer_open(path, 2, &sw, &err);
    if (!rc)
        rc = st_writer_declare(sw, "a.small", ST_U8, 1, (int64_t[]){1000}, &err);
    if (!rc)
        rc = st_writer_declare(sw, "b.big", ST_U8, 1, (int64_t[]){nbytes}, &err);
    if (!rc)
        rc = st_writer_begin_data(sw, &err);
    if (!rc)
        rc = st_writer_fill(sw, 0, fill_u8, NULL, &err);
    if (!rc)
        rc = st_writer_fill(sw, 1, fill_u8, NULL, &err);
    if (!rc)
        rc = st_writer_finish(sw, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    st_file *f;
    CHECK_MSG(st_file_open(path, &f, &err) == 0, "%s", err.msg);
    const st_tensor *t = st_file_find(f, "b.big");
    CHECK(t && t->nbytes == (size_t)nbytes);
    /* Jobs of odd sizes in an interleaved order, as worker threads finish them: each job's
     * first read maps pages of the job before it (fault-around, large folios). */
    size_t cuts[] = {0, 1234567, 3000001, 4194304 + 77, 7777777, 9999999, 12345678,
                     (size_t)nbytes};
    int order[] = {1, 0, 3, 2, 4, 6, 5};
    uint64_t sum = 0;
    for (int i = 0; i < 7; i++)
        sum += read_job(t, cuts[order[i]], cuts[order[i] + 1]);
    int64_t left = mapped_pages(t->data, t->nbytes);
    /* the same jobs with releases rounded inward to pages (the old rule) leave pages behind:
     * proof that this test sees what it is meant to see */
    long page = sysconf(_SC_PAGESIZE);
    for (int i = 0; i < 7; i++) {
        size_t a = cuts[order[i]], b = cuts[order[i] + 1];
        for (size_t j = a; j < b; j += 512)
            sum += t->data[j];
        uintptr_t s0 = ((uintptr_t)(t->data + a) + (uintptr_t)page - 1) & ~(uintptr_t)(page - 1);
        uintptr_t s1 = (uintptr_t)(t->data + b) & ~(uintptr_t)(page - 1);
        if (s1 > s0)
            madvise((void *)s0, s1 - s0, MADV_DONTNEED);
    }
    int64_t left_inward = mapped_pages(t->data, t->nbytes);
    st_file_close(f);
    unlink(path);
    remove_temp_dir(dir);
    CHECK(sum != 0);
    CHECK_MSG(left == 0, "%lld checkpoint pages still mapped after every range was released",
              (long long)left);
    CHECK_MSG(left_inward > 0, "inward rounding left no page behind (%lld)",
              (long long)left_inward);
}

/* ---- kernels ---- */

TEST(bf16_transposed_conversion_and_finiteness_scan_match_their_definitions)
{
    rng r = {11};
    const int64_t rows = 29, cols = 45, ld_src = 50, ld_dst = 33;
    uint16_t *src = malloc(sizeof(uint16_t) * (size_t)(rows * ld_src));
    float *a = malloc(sizeof(float) * (size_t)(cols * ld_dst));
    float *b = malloc(sizeof(float) * (size_t)(cols * ld_dst));
    for (int64_t i = 0; i < rows * ld_src; i++)
        src[i] = (uint16_t)rng_u64(&r);
    for (int scalar = 0; scalar < 2 && !g_failed_now; scalar++) {
        quant_force_scalar(scalar == 1);
        for (int64_t i = 0; i < cols * ld_dst; i++)
            a[i] = b[i] = -1.0f;
        convert_bf16_to_f32_transposed(src, ld_src, rows, cols, a, ld_dst);
        for (int64_t rr = 0; rr < rows; rr++)
            for (int64_t c = 0; c < cols; c++)
                b[c * ld_dst + rr] = bf16_to_f32(src[rr * ld_src + c]);
        CHECK_BYTES_EQ(a, b, sizeof(float) * (size_t)(cols * ld_dst));
    }
    free(src), free(a), free(b);
    float v[300];
    for (int scalar = 0; scalar < 2 && !g_failed_now; scalar++) {
        quant_force_scalar(scalar == 1);
        for (int pos = -1; pos < 300 && !g_failed_now; pos += 7) {
            for (int i = 0; i < 300; i++)
                v[i] = (float)i * 1e30f; /* large but finite */
            if (pos >= 0)
                v[pos] = pos % 2 ? INFINITY : -NAN;
            CHECK_EQ(f32_first_nonfinite(v, 300), pos);
            if (pos >= 0) { /* a second bad value after the first changes nothing */
                v[299] = NAN;
                CHECK_EQ(f32_first_nonfinite(v, 300), pos);
            }
        }
    }
    quant_force_scalar(false);
}

/* Blocks chosen per block: Gaussian, all ±0, ties between extremes, subnormal and huge. */
static void fill_blocks(rng *r, float *w, int64_t n, int bs)
{
    for (int64_t b = 0; b < n / bs; b++) {
        int kind = (int)rng_below(r, 7);
        float mag = ldexpf(1.0f, (int)rng_below(r, 16) - 8);
        for (int i = 0; i < bs; i++) {
            float g = rng_gauss(r) * mag, *v = &w[b * bs + i];
            switch (kind) {
            case 0: *v = i == 0 ? -0.0f : 0.0f; break;
            case 1: *v = i == 0 ? 0.0f : -0.0f; break;
            case 2: *v = i == 3 ? 2 * mag : i == bs - 2 ? -2 * mag : g; break;
            case 3: *v = g * 1e-40f; break;
            case 4: *v = g * 1e35f; break;
            default: *v = g; break;
            }
        }
    }
}

TEST(symmetric_quantizer_groups_equal_the_reference_on_many_blocks)
{
    rng r = {2024};
    const int64_t N = 37, K = 512;
    float *w = malloc(sizeof(float) * (size_t)(N * K));
    size_t cmax = (size_t)(N * K), smax = (size_t)(N * K / 16) * 4;
    uint8_t *c1 = malloc(cmax), *c2 = malloc(cmax), *s1 = malloc(smax), *s2 = malloc(smax);
    static const int blocks[] = {16, 32, 64, 128, 256};
    for (int bits = 4; bits <= 8 && !g_failed_now; bits += 4)
        for (int bi = 0; bi < 5 && !g_failed_now; bi++)
            for (int st = 0; st < 3 && !g_failed_now; st++) {
                qb_params p = {bits, blocks[bi], true, (qscale_type)st};
                fill_blocks(&r, w, N * K, p.block_size);
                m2o_err e1 = {{0}}, e2 = {{0}};
                memset(c1, 0, cmax), memset(c2, 0, cmax), memset(s1, 0, smax), memset(s2, 0, smax);
                CHECK(qb_quantize_ref(w, N, K, &p, c1, s1, NULL, &e1) == 0);
                CHECK(qb_quantize(w, N, K, &p, c2, s2, NULL, &e2) == 0);
                CHECK_MSG(memcmp(c1, c2, qb_codes_bytes(N, K, &p)) == 0 &&
                              memcmp(s1, s2, qb_scales_count(N, K, &p) * qscale_size(p.scale_type)) == 0,
                          "%d-bit block %d scale type %d: optimized bytes differ", bits,
                          p.block_size, st);
                /* a non-finite value deep in the matrix: same error as the reference */
                w[(N - 3) * K + 77] = NAN;
                CHECK(qb_quantize_ref(w, N, K, &p, c1, s1, NULL, &e1) == -1);
                CHECK(qb_quantize(w, N, K, &p, c2, s2, NULL, &e2) == -1);
                CHECK_MSG(strcmp(e1.msg, e2.msg) == 0, "errors differ: \"%s\" vs \"%s\"", e1.msg,
                          e2.msg);
            }
    free(w), free(c1), free(c2), free(s1), free(s2);
}
