/* Every case in tests/fixtures/golden/ort-quant-golden.safetensors (ONNX Runtime 1.30's own
 * output) reproduced byte for byte by the reference and the optimized kernels, single- and
 * multi-threaded, and every layout undone by its inverse. The golden file is read by
 * test_golden_file.h. */
#include "test.h"

#include "common/half.h"
#include "quant/quant.h"
#include "test_golden_file.h"

static golden g_golden;

static const golden *load_golden(const char **why)
{
    return golden_open(&g_golden, "ort-quant-golden.safetensors", why, NULL);
}

/* ---- q* cases: blockwise quantization ---- */

typedef int (*quant_fn)(const float *, int64_t, int64_t, const qb_params *, uint8_t *, void *,
                        uint8_t *, m2o_err *);

static int quant_two_threads(const float *w, int64_t N, int64_t K, const qb_params *p,
                             uint8_t *codes, void *scales, uint8_t *zp, m2o_err *err)
{
    return qb_quantize_mt(w, N, K, p, codes, scales, zp, 2, err);
}

static int g_q_cases;

static void check_q_case(const golden *g, const char *name, const cJSON *c, quant_fn fn,
                         const char *fn_name)
{
    int64_t K = case_int(c, "K"), N = case_int(c, "N");
    const cJSON *sym = cJSON_GetObjectItemCaseSensitive(c, "symmetric");
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(c, "dtype");
    CHECK(cJSON_IsBool(sym) && cJSON_IsString(dt));
    bool f16 = strcmp(dt->valuestring, "float16") == 0;
    qb_params p = {case_int(c, "bits"), case_int(c, "block_size"), cJSON_IsTrue(sym),
                   f16 ? QSCALE_F16 : QSCALE_F32};
    gtensor w, packed, scales, zps = {0};
    CHECK_MSG(find_tensor(g, tname(name, "w"), &w) == 0, "%s: no .w", name);
    CHECK_MSG(find_tensor(g, tname(name, "packed"), &packed) == 0, "%s: no .packed", name);
    CHECK_MSG(find_tensor(g, tname(name, "scales"), &scales) == 0, "%s: no .scales", name);
    if (!p.symmetric)
        CHECK_MSG(find_tensor(g, tname(name, "zero_points"), &zps) == 0, "%s: no .zero_points",
                  name);
    CHECK_MSG(w.ndim == 2 && w.shape[0] == K && w.shape[1] == N, "%s: .w shape", name);

    /* Golden .w is W^T [K, N]; the kernels take W [N][K] in float32 (float16 widens exactly). */
    float *wt = malloc(sizeof(float) * (size_t)(N * K));
    float *wn = malloc(sizeof(float) * (size_t)(N * K));
    size_t cb = qb_codes_bytes(N, K, &p), sc = qb_scales_count(N, K, &p);
    size_t zb = qb_zero_points_bytes(N, K, &p);
    uint8_t *codes = malloc(cb), *zp = malloc(zb ? zb : 1);
    uint8_t *sbuf = malloc(sc * qscale_size(p.scale_type));
    if (f16) {
        uint16_t *h = malloc(w.nbytes);
        memcpy(h, w.data, w.nbytes);
        convert_f16_to_f32(h, wt, (size_t)(N * K));
        free(h);
    } else {
        memcpy(wt, w.data, w.nbytes);
    }
    transpose_f32(wt, K, N, wn);
    m2o_err err = {{0}};
    int rc = fn(wn, N, K, &p, codes, sbuf, zp, &err);
    bool ok_codes = rc == 0 && packed.nbytes == cb && memcmp(codes, packed.data, cb) == 0;
    bool ok_scales = rc == 0 && scales.nbytes == sc * qscale_size(p.scale_type) &&
                     memcmp(sbuf, scales.data, scales.nbytes) == 0;
    bool ok_zp = p.symmetric || (zps.nbytes == zb && memcmp(zp, zps.data, zb) == 0);
    size_t first = 0;
    if (rc == 0 && !ok_codes)
        while (first < cb && codes[first] == packed.data[first])
            first++;
    free(wt);
    free(wn);
    free(codes);
    free(zp);
    free(sbuf);
    CHECK_MSG(rc == 0, "%s via %s failed: %s", name, fn_name, err.msg);
    CHECK_MSG(ok_codes, "%s via %s: codes differ from ONNX Runtime at byte %zu", name, fn_name,
              first);
    CHECK_MSG(ok_scales, "%s via %s: scales differ from ONNX Runtime", name, fn_name);
    CHECK_MSG(ok_zp, "%s via %s: zero points differ from ONNX Runtime", name, fn_name);
    g_q_cases++;
}

static void run_q_cases(quant_fn fn, const char *fn_name, int *count)
{
    const char *why = NULL;
    const golden *g = load_golden(&why);
    CHECK_MSG(g, "%s", why);
    g_q_cases = 0;
    for (const cJSON *c = g->cases->child; c; c = c->next) {
        if (c->string[0] != 'q')
            continue;
        check_q_case(g, c->string, c, fn, fn_name);
        if (g_failed_now)
            return;
    }
    *count = g_q_cases;
}

TEST(golden_blockwise_reference)
{
    int n = 0;
    run_q_cases(qb_quantize_ref, "qb_quantize_ref", &n);
    if (g_failed_now)
        return;
    CHECK_EQ(n, 20);
}

TEST(golden_blockwise_optimized)
{
    int n = 0;
    run_q_cases(qb_quantize, "qb_quantize", &n);
    if (g_failed_now)
        return;
    CHECK_EQ(n, 20);
    run_q_cases(quant_two_threads, "qb_quantize_mt(2)", &n);
    if (g_failed_now)
        return;
    CHECK_EQ(n, 20);
}

TEST(golden_blockwise_forced_scalar)
{
    int n = 0;
    quant_force_scalar(true);
    run_q_cases(qb_quantize, "qb_quantize (scalar)", &n);
    quant_force_scalar(false);
    if (g_failed_now)
        return;
    CHECK_EQ(n, 20);
}

/* ---- c* cases: CUTLASS SM80 prepack; f* cases: fp4 CUDA layout ---- */

typedef int (*layout_fn)(const uint8_t *, int64_t, int64_t, int, uint8_t *, m2o_err *);

static int fp4_pack_ref_b(const uint8_t *in, int64_t N, int64_t K, int bits, uint8_t *out,
                          m2o_err *err)
{
    return fp4_cuda_pack_ref(in, N, K, out, err);
}
static int fp4_pack_b(const uint8_t *in, int64_t N, int64_t K, int bits, uint8_t *out,
                      m2o_err *err)
{
    return fp4_cuda_pack(in, N, K, out, err);
}
static int fp4_unpack_b(const uint8_t *in, int64_t N, int64_t K, int bits, uint8_t *out,
                        m2o_err *err)
{
    return fp4_cuda_unpack(in, N, K, out, err);
}
static int cutlass_pack_2t(const uint8_t *in, int64_t N, int64_t K, int bits, uint8_t *out,
                           m2o_err *err)
{
    return cutlass_sm80_pack_mt(in, N, K, bits, out, 2, err);
}

static void check_layout_case(const golden *g, const char *name, const cJSON *c, layout_fn pack,
                              layout_fn unpack, const char *fn_name)
{
    int64_t N = case_int(c, "N"), K = case_int(c, "K");
    int bits = name[0] == 'f' ? 4 : case_int(c, "bits");
    gtensor in, out;
    CHECK_MSG(find_tensor(g, tname(name, "in"), &in) == 0, "%s: no .in", name);
    CHECK_MSG(find_tensor(g, tname(name, "out"), &out) == 0, "%s: no .out", name);
    CHECK_MSG(in.nbytes == (size_t)(N * K * bits / 8) && out.nbytes == in.nbytes,
              "%s: sizes %zu/%zu for N %lld K %lld", name, in.nbytes, out.nbytes, (long long)N,
              (long long)K);
    uint8_t *buf = malloc(out.nbytes), *back = malloc(in.nbytes);
    m2o_err err = {{0}};
    int rc = pack(in.data, N, K, bits, buf, &err);
    bool same = rc == 0 && memcmp(buf, out.data, out.nbytes) == 0;
    int rc2 = unpack(out.data, N, K, bits, back, &err);
    bool inverse = rc2 == 0 && memcmp(back, in.data, in.nbytes) == 0;
    free(buf);
    free(back);
    CHECK_MSG(rc == 0 && rc2 == 0, "%s via %s failed: %s", name, fn_name, err.msg);
    CHECK_MSG(same, "%s via %s: bytes differ from ONNX Runtime", name, fn_name);
    CHECK_MSG(inverse, "%s: unpack of ONNX Runtime's bytes does not give back .in", name);
}

static void run_layout_cases(char prefix, layout_fn pack, layout_fn unpack, const char *fn_name,
                             int *count)
{
    const char *why = NULL;
    const golden *g = load_golden(&why);
    CHECK_MSG(g, "%s", why);
    *count = 0;
    for (const cJSON *c = g->cases->child; c; c = c->next) {
        if (c->string[0] != prefix)
            continue;
        check_layout_case(g, c->string, c, pack, unpack, fn_name);
        if (g_failed_now)
            return;
        ++*count;
    }
}

TEST(golden_cutlass_sm80)
{
    int n = 0;
    run_layout_cases('c', cutlass_sm80_pack_ref, cutlass_sm80_unpack, "cutlass_sm80_pack_ref", &n);
    if (g_failed_now)
        return;
    CHECK_EQ(n, 7);
    run_layout_cases('c', cutlass_sm80_pack, cutlass_sm80_unpack, "cutlass_sm80_pack", &n);
    if (g_failed_now)
        return;
    run_layout_cases('c', cutlass_pack_2t, cutlass_sm80_unpack, "cutlass_sm80_pack_mt(2)", &n);
    if (g_failed_now)
        return;
    quant_force_scalar(true);
    run_layout_cases('c', cutlass_sm80_pack, cutlass_sm80_unpack, "cutlass_sm80_pack (scalar)",
                     &n);
    quant_force_scalar(false);
    if (g_failed_now)
        return;
    CHECK_EQ(n, 7);
}

TEST(golden_fp4_cuda)
{
    int n = 0;
    run_layout_cases('f', fp4_pack_ref_b, fp4_unpack_b, "fp4_cuda_pack_ref", &n);
    if (g_failed_now)
        return;
    CHECK_EQ(n, 4);
    run_layout_cases('f', fp4_pack_b, fp4_unpack_b, "fp4_cuda_pack", &n);
    if (g_failed_now)
        return;
    quant_force_scalar(true);
    run_layout_cases('f', fp4_pack_b, fp4_unpack_b, "fp4_cuda_pack (scalar)", &n);
    quant_force_scalar(false);
    if (g_failed_now)
        return;
    CHECK_EQ(n, 4);
}
