/* src/weights/: the per-layout expert tables and the non-finite policy. Every layout must name,
 * for any value it yields, the checkpoint element that value came from (the error messages and
 * verify's diagnosis rely on it); the policy must keep --allow-nonfinite's meaning. */
#include "test.h"

#include "weights/experts_internal.h"
#include "weights/nonfinite.h"
#include "weights/producer.h"
#include "quant/quant.h"

#include <stdlib.h>
#include <string.h>

/* An F32 tensor whose element i holds base + i. */
static st_tensor counting_tensor(const char *name, float *buf, int64_t n, float base)
{
    for (int64_t i = 0; i < n; i++)
        buf[i] = base + (float)i;
    return (st_tensor){.name = name, .dtype = ST_F32, .ndim = 1, .shape = {n}, .numel = n,
                       .data = (const uint8_t *)buf, .nbytes = (size_t)n * sizeof(float)};
}

/* Every value of every expert, as read by the layout, equals the element its table names. */
static int check_elements(const expert_src *s)
{
    const expert_layout *L = expert_layout_of(s->kind);
    float w[64 * 64];
    m2o_err err = {{0}};
    if (!L || s->N * s->K > 64 * 64)
        return -1;
    for (int64_t e = 0; e < s->E; e++) {
        if (expert_read_f32(s, e, w, NULL, &err))
            return -1;
        for (int64_t n = 0; n < s->N; n++)
            for (int64_t k = 0; k < s->K; k++) {
                int64_t index = -1;
                const st_tensor *t = L->element(s, e, n, k, &index);
                if (index < 0 || index >= t->numel ||
                    ((const float *)(const void *)t->data)[index] != w[n * s->K + k])
                    return -1;
            }
    }
    return 0;
}

TEST(fused_layouts_name_the_element_they_read)
{
    static float a[2 * 8 * 6];
    st_tensor t = counting_tensor("fused", a, 2 * 8 * 6, 0);
    expert_src kn = {.kind = EXPERT_FUSED_KN, .E = 2, .N = 8, .K = 6, .t = &t};
    expert_src nk = {.kind = EXPERT_FUSED_NK, .E = 2, .N = 8, .K = 6, .t = &t};
    CHECK_EQ(check_elements(&kn), 0);
    CHECK_EQ(check_elements(&nk), 0);
    nk.interleave = true;
    CHECK_EQ(check_elements(&nk), 0);
    CHECK(expert_layout_of(EXPERT_FUSED_NK)->halves(&nk, 0));
    CHECK(expert_layout_of(EXPERT_FUSED_KN)->read_panel != NULL);
    CHECK(expert_layout_of(EXPERT_FUSED_NK)->read_panel == NULL);
}

TEST(per_expert_layouts_name_the_element_they_read)
{
    static float whole[3][8 * 6], gate[3][4 * 6], up[3][4 * 6];
    st_tensor tw[3], tg[3], tu[3];
    static expert_src s, h; /* large: EXPERT_MAX pointers each */
    s = (expert_src){.kind = EXPERT_PER_EXPERT, .E = 3, .N = 8, .K = 6};
    h = s;
    for (int e = 0; e < 3; e++) {
        tw[e] = counting_tensor("whole", whole[e], 8 * 6, 1000.0f * (float)e);
        tg[e] = counting_tensor("gate", gate[e], 4 * 6, 1000.0f * (float)e + 100);
        tu[e] = counting_tensor("up", up[e], 4 * 6, 1000.0f * (float)e + 500);
        s.per[e] = &tw[e];
        h.per[e] = &tg[e];
        h.up[e] = &tu[e];
    }
    CHECK_EQ(check_elements(&s), 0);
    CHECK_EQ(check_elements(&h), 0);
    const expert_layout *L = expert_layout_of(EXPERT_PER_EXPERT);
    CHECK(!L->halves(&s, 1) && L->halves(&h, 1));
    /* row 3 of expert 2 with halves is up row 1: element 1 * 6 + 4 of up[2] */
    int64_t index;
    CHECK(L->element(&h, 2, 3, 4, &index) == &tu[2]);
    CHECK_EQ(index, 10);
}

static const float e2m1[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};

TEST(mxfp4_layout_names_the_nibble_it_decoded)
{
    enum { E = 2, N = 4, K = 64 };
    static uint8_t blocks[E * N * K / 2], scales[E * N * K / 32];
    for (size_t i = 0; i < sizeof blocks; i++)
        blocks[i] = (uint8_t)(i * 37 + 11);
    for (size_t i = 0; i < sizeof scales; i++)
        scales[i] = (uint8_t)(120 + i % 13);
    st_tensor tb = {.name = "blocks", .dtype = ST_U8, .ndim = 1, .shape = {sizeof blocks},
                    .numel = sizeof blocks, .data = blocks, .nbytes = sizeof blocks};
    st_tensor ts = {.name = "scales", .dtype = ST_U8, .ndim = 1, .shape = {sizeof scales},
                    .numel = sizeof scales, .data = scales, .nbytes = sizeof scales};
    expert_src s = {.kind = EXPERT_MXFP4, .E = E, .N = N, .K = K, .t = &tb, .scales = &ts};
    const expert_layout *L = expert_layout_of(EXPERT_MXFP4);
    float w[N * K];
    m2o_err err = {{0}};
    CHECK(L->check_expert && L->fp4_passthrough);
    CHECK_EQ(expert_read_f32(&s, 1, w, NULL, &err), 0);
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++) {
            int64_t i;
            CHECK(L->element(&s, 1, n, k, &i) == &tb);
            int code = i % 2 ? blocks[i / 2] >> 4 : blocks[i / 2] & 15;
            float want = ldexpf(e2m1[code], scales[i / 32] - 127);
            if (w[n * K + k] != want)
                FAIL_AT("[%lld][%lld] = %g, element %lld decodes to %g", (long long)n,
                        (long long)k, w[n * K + k], (long long)i, want);
        }
}

TEST(nonfinite_policy_keeps_allow_nonfinite_semantics)
{
    float v[4] = {1, 2, 3, NAN};
    m2o_err err = {{0}};
    /* float destination: allowed keeps it, else refused naming the element */
    CHECK_EQ(check_values(v, 4, 10, "w", NULL, true, &err), 0);
    CHECK_EQ(check_values(v, 4, 10, "w", NULL, false, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "tensor w: element 13 is NaN; fix the checkpoint or pass "
                                "--allow-nonfinite to keep it");
    /* encoded destination: refused even when allowed */
    CHECK_EQ(check_values(v, 4, 0, "w", int_format_name(8), true, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "element 3 is NaN, which int8 quantization cannot encode");
    /* a finite value that would become Inf is never allowed */
    float big[2] = {1, 70000};
    CHECK_EQ(check_float_out(big, 2, 0, "w", true, ONNX_FLOAT16, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "element 1 is 70000, which overflows float16");
    CHECK_EQ(check_float_out(big, 2, 0, "w", false, ONNX_BFLOAT16, &err), 0);
    CHECK_EQ(first_overflow((float[]){65504, 65519.99f, 65520}, 3, ONNX_FLOAT16), 2);
}

TEST(e8m0_nan_scale_follows_the_same_policy)
{
    uint8_t sc[4] = {127, 3, 255, 255};
    m2o_err err = {{0}};
    CHECK_EQ(check_e8m0_scales(sc, 4, 100, "s", NULL, true, &err), 0);
    CHECK_EQ(check_e8m0_scales(sc, 4, 100, "s", NULL, false, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "tensor s: byte 102 is 255, the E8M0 code for NaN; fix the "
                                "checkpoint or pass --allow-nonfinite to keep it");
    CHECK_EQ(check_e8m0_scales(sc, 4, 0, "s", "MXFP4", true, &err), -1);
    CHECK_STR_CONTAINS(err.msg, "byte 2 is 255, the E8M0 code for NaN, which MXFP4 cannot encode");
    CHECK_EQ(check_e8m0_scales(sc, 2, 0, "s", "MXFP4", false, &err), 0);
}

/* MatMulNBits producer (weights/linear.c): for every method, chunk by chunk and band by band it
 * writes the bytes the kernel gives for the whole matrix at once — codes, scales and zero points
 * at their row offsets; k_quant's lone last row of a one-block-per-row matrix (a band of one)
 * summed as in the whole matrix (FORMATS §4.10). */
static void check_nbits_producer(int64_t N, int64_t K, int bits, int bs, bool sym, wt_nbits_method m)
{
    float *w = malloc((size_t)(N * K) * sizeof(float));
    uint32_t x = 12345;
    for (int64_t i = 0; i < N * K; i++) {
        x = x * 1664525u + 1013904223u;
        w[i] = ((float)(x >> 8) / 16777216.0f - 0.3f) * 0.05f;
    }
    st_tensor t = {.name = "w", .dtype = ST_F32, .ndim = 2, .shape = {N, K}, .numel = N * K,
                   .data = (const uint8_t *)w, .nbytes = (size_t)(N * K) * sizeof(float)};
    linear_src s = {.n_parts = 1, .w = {&t}};
    wt_nbits_spec spec = {.bits = bits, .block_size = bs, .symmetric = sym, .method = m};
    wt_opts o = {.io = ONNX_FLOAT};
    wt_producer p;
    m2o_err err = {{0}};
    CHECK_EQ(wt_nbits(&s, &spec, &o, &p, &err), 0);
    bool zp = wt_nbits_has_zero_points(&spec);
    qb_params q = {.bits = bits, .block_size = bs, .symmetric = !zp, .scale_type = QSCALE_F32};
    size_t cb = qb_codes_bytes(N, K, &q), sb = qb_scales_count(N, K, &q) * 4, zb = qb_zero_points_bytes(N, K, &q);
    uint8_t *want = calloc(cb + sb + zb + 1, 1), *got = calloc(cb + sb + zb + 1, 1);
    int rc = m == WT_NBITS_SEARCH    ? qb_quantize_search(w, N, K, &q, want, want + cb, want + cb + sb, &err)
             : m == WT_NBITS_INC_RTN ? rtn_inc_quantize(w, N, K, &q, QSCALE_F32, want, want + cb, want + cb + sb, &err)
             : m == WT_NBITS_KQUANT  ? kq_quantize(w, N, K, &q, want, want + cb, want + cb + sb, &err)
                                     : qb_quantize(w, N, K, &q, want, want + cb, want + cb + sb, &err);
    CHECK_MSG(rc == 0, "%s", err.msg);
    for (int64_t c = 0; c < p.n_chunks; c++) {
        void *outs[3] = {got + c * p.chunk_bytes[0], got + cb + c * p.chunk_bytes[1],
                         got + cb + sb + c * p.chunk_bytes[2]};
        CHECK_MSG(p.group(p.ctx, c, outs, &err) == 0, "%s", err.msg);
    }
    CHECK_EQ(p.chunk_bytes[2] * (size_t)p.n_chunks, zb);
    CHECK_MSG(!memcmp(want, got, cb + sb + zb), "method %d N %lld K %lld bits %d", (int)m, (long long)N,
              (long long)K, bits);
    p.free_ctx(p.ctx);
    free(want);
    free(got);
    free(w);
}

TEST(nbits_producer_bands_equal_the_whole_matrix_for_every_method)
{
    for (int m = WT_NBITS_MLAS; m <= WT_NBITS_KQUANT; m++) {
        check_nbits_producer(2049, 32, 4, 32, m != WT_NBITS_KQUANT, (wt_nbits_method)m);
        check_nbits_producer(701, 96, 4, 32, false, (wt_nbits_method)m);
        check_nbits_producer(701, 96, 8, 32, m == WT_NBITS_INC_RTN, (wt_nbits_method)m);
    }
}
