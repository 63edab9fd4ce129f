/* Every case of tests/fixtures/golden/ort-kquant-golden.safetensors (ONNX Runtime 1.30's own
 * k_quant and INC-RTN output, made by tests/cuda/make_kquant_goldens.py; layout docs/FORMATS.md
 * §17) reproduced byte for byte: k* cases by kq_quantize (one and three threads), r* cases by
 * rtn_inc_quantize. Skips, saying so, only while the file is absent. */
#include "test.h"

#include "common/half.h"
#include "quant/quant.h"
#include "test_golden_file.h"

#define KQ_GOLDEN "ort-kquant-golden.safetensors"

static golden g_kq;

/* .w is W^T [K, N] in the case's dtype; the kernels take W [N][K] float32 (float16 widens
 * exactly). */
static float *weights_nk(const gtensor *t, int64_t K, int64_t N, bool f16)
{
    float *w = malloc(sizeof(float) * (size_t)(N * K));
    for (int64_t k = 0; k < K; k++)
        for (int64_t n = 0; n < N; n++) {
            size_t i = (size_t)(k * N + n);
            uint16_t h;
            float v;
            if (f16) {
                memcpy(&h, t->data + 2 * i, 2);
                v = f16_to_f32(h);
            } else {
                memcpy(&v, t->data + 4 * i, 4);
            }
            w[n * K + k] = v;
        }
    return w;
}

static int run_case(const cJSON *c, const float *w, int64_t N, int64_t K, const qb_params *p,
                    bool f16, int threads, uint8_t *codes, void *scales, uint8_t *zp,
                    m2o_err *err)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(c, "method");
    if (strcmp(m->valuestring, "k_quant") == 0)
        return kq_quantize_mt(w, N, K, p, codes, scales, zp, threads, err);
    return rtn_inc_quantize(w, N, K, p, f16 ? QSCALE_F16 : QSCALE_F32, codes, scales, zp, err);
}

static void check_case(const golden *g, const char *name, const cJSON *c)
{
    int64_t K = case_int(c, "K"), N = case_int(c, "N");
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(c, "dtype");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(c, "method");
    CHECK_MSG(cJSON_IsString(dt) && cJSON_IsString(m), "%s: no dtype or method", name);
    bool f16 = strcmp(dt->valuestring, "float16") == 0;
    bool sym = strcmp(m->valuestring, "rtn") == 0;
    qb_params p = {case_int(c, "bits"), case_int(c, "block_size"), sym,
                   f16 ? QSCALE_F16 : QSCALE_F32};
    gtensor wt, packed, scales, zps = {0};
    CHECK_MSG(find_tensor(g, tname(name, "w"), &wt) == 0, "%s: no .w", name);
    CHECK_MSG(find_tensor(g, tname(name, "packed"), &packed) == 0, "%s: no .packed", name);
    CHECK_MSG(find_tensor(g, tname(name, "scales"), &scales) == 0, "%s: no .scales", name);
    bool has_zp = find_tensor(g, tname(name, "zero_points"), &zps) == 0;
    CHECK_MSG(has_zp == !sym, "%s: zero points %s, expected %s", name, has_zp ? "present" : "absent",
              sym ? "none" : "some");
    CHECK_MSG(wt.ndim == 2 && wt.shape[0] == K && wt.shape[1] == N &&
              wt.nbytes == (size_t)(K * N) * (f16 ? 2 : 4), "%s: .w shape", name);
    size_t cb = qb_codes_bytes(N, K, &p), sb = qb_scales_count(N, K, &p) * qscale_size(p.scale_type);
    size_t zb = qb_zero_points_bytes(N, K, &p);
    CHECK_MSG(packed.nbytes == cb && scales.nbytes == sb && (!has_zp || zps.nbytes == zb),
              "%s: golden sizes %zu/%zu/%zu, kernel sizes %zu/%zu/%zu", name, packed.nbytes,
              scales.nbytes, has_zp ? zps.nbytes : 0, cb, sb, zb);
    float *w = weights_nk(&wt, K, N, f16);
    uint8_t *codes = malloc(cb), *zp = malloc(zb ? zb : 1), *sbuf = malloc(sb);
    m2o_err err = {{0}};
    for (int threads = 1; threads <= 3 && !g_failed_now; threads += 2) {
        memset(codes, 0xa5, cb);
        memset(sbuf, 0xa5, sb);
        int rc = run_case(c, w, N, K, &p, f16, threads, codes, sbuf, zp, &err);
        if (rc == 0 && memcmp(codes, packed.data, cb) == 0 && memcmp(sbuf, scales.data, sb) == 0 &&
            (!has_zp || memcmp(zp, zps.data, zb) == 0))
            continue;
        free(w);
        free(codes);
        free(zp);
        free(sbuf);
        CHECK_MSG(rc == 0, "%s: %s", name, err.msg);
        FAIL_AT("%s (%s, %d-bit, block %d, %s, %d thread(s)): bytes differ from ONNX Runtime's",
                name, m->valuestring, p.bits, p.block_size, dt->valuestring, threads);
    }
    free(w);
    free(codes);
    free(zp);
    free(sbuf);
}

TEST(golden_kquant_and_inc_rtn)
{
    const char *why = NULL;
    bool missing = false;
    const golden *g = golden_open(&g_kq, KQ_GOLDEN, &why, &missing);
    if (!g && missing) {
        printf("  SKIP: tests/fixtures/golden/" KQ_GOLDEN " is absent: make it on the GPU machine "
               "with tests/cuda/make_kquant_goldens.py (docs/FORMATS.md §17) and commit it\n");
        return;
    }
    CHECK_MSG(g, "%s: %s", KQ_GOLDEN, why);
    int kq = 0, rtn = 0;
    for (const cJSON *c = g->cases->child; c; c = c->next) {
        check_case(g, c->string, c);
        if (g_failed_now)
            return;
        *(c->string[0] == 'k' ? &kq : &rtn) += 1;
    }
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(g->header, "__metadata__");
    cJSON *ver = cJSON_GetObjectItemCaseSensitive(meta, "onnxruntime");
    printf("  %d k_quant and %d INC-RTN cases byte-identical (onnxruntime %s)\n", kq, rtn,
           cJSON_IsString(ver) ? ver->valuestring : "?");
    CHECK_MSG(kq >= 10 && rtn >= 4, "only %d k_quant / %d rtn cases in the golden file", kq, rtn);
}
