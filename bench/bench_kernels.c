/* Kernel throughput on one expert matrix of two real models: gpt-oss-20b (N = 5760, K = 2880,
 * the fused gate_up projection) and Qwen3-30B-A3B (N = 1536, K = 2048, gate and up stacked).
 * For each kernel: MB/s of the reference, the scalar fallback of the optimized entry point, the
 * optimized path on one thread and on all CPUs; optimized / reference; optimized / memcpy of the
 * same number of bytes on this machine. Bytes counted = the float32 side for kernels that read
 * or write float32 (quantize, encode, decode, dequantize, conversions), the packed side for the
 * pure layout kernels. Also prints the MXFP4 encoding error of both scale rules on N(0,1) data.
 * Not a test: it asserts nothing except that every path produced the same bytes.
 *
 *   make bench && build/bench/bench_kernels [min_seconds_per_measurement]   */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "quant/quant.h"

static double g_min_seconds = 0.3;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct kctx kctx;
typedef int (*kernel_fn)(kctx *c);

/* Everything a kernel may need, allocated once per shape. */
struct kctx {
    int64_t N, K;
    int threads;
    float *w, *fout;
    uint8_t *codes, *codes2, *zp, *packed, *mx_codes, *mx_scales;
    void *scales;
    uint16_t *h16;
    qb_params p;
    int bits;
};

/* Best (smallest) time of repeated runs, repeating for at least g_min_seconds and 3 runs. */
static double best_seconds(kernel_fn fn, kctx *c)
{
    if (fn(c) != 0) { /* warm-up, also touches every output page */
        fprintf(stderr, "kernel failed\n");
        exit(1);
    }
    double best = 1e30, start = now();
    int runs = 0;
    while (runs < 3 || now() - start < g_min_seconds) {
        double t0 = now();
        fn(c);
        double t = now() - t0;
        best = t < best ? t : best;
        runs++;
    }
    return best;
}

static uint8_t *g_src, *g_dst;
static size_t g_copy_bytes;
static int k_memcpy(kctx *c)
{
    memcpy(g_dst, g_src, g_copy_bytes);
    return 0;
}

/* ---- kernels ---- */

static int k_qb_ref(kctx *c) { return qb_quantize_ref(c->w, c->N, c->K, &c->p, c->codes, c->scales, c->zp, NULL); }
static int k_qb(kctx *c) { return qb_quantize(c->w, c->N, c->K, &c->p, c->codes, c->scales, c->zp, NULL); }
static int k_qb_mt(kctx *c) { return qb_quantize_mt(c->w, c->N, c->K, &c->p, c->codes, c->scales, c->zp, c->threads, NULL); }
static int k_deq(kctx *c) { return qb_dequantize(c->codes, c->scales, c->zp, c->N, c->K, &c->p, c->fout, NULL); }
static int k_cut_ref(kctx *c) { return cutlass_sm80_pack_ref(c->codes, c->N, c->K, c->bits, c->packed, NULL); }
static int k_cut(kctx *c) { return cutlass_sm80_pack(c->codes, c->N, c->K, c->bits, c->packed, NULL); }
static int k_cut_mt(kctx *c) { return cutlass_sm80_pack_mt(c->codes, c->N, c->K, c->bits, c->packed, c->threads, NULL); }
static int k_cut_un(kctx *c) { return cutlass_sm80_unpack(c->packed, c->N, c->K, c->bits, c->codes2, NULL); }
static int k_fp4_ref(kctx *c) { return fp4_cuda_pack_ref(c->mx_codes, c->N, c->K, c->packed, NULL); }
static int k_fp4(kctx *c) { return fp4_cuda_pack(c->mx_codes, c->N, c->K, c->packed, NULL); }
static int k_fp4_un(kctx *c) { return fp4_cuda_unpack(c->packed, c->N, c->K, c->codes2, NULL); }
static int k_mxe_ref(kctx *c) { return mxfp4_encode_ref(c->w, c->N, c->K, c->mx_codes, c->mx_scales, NULL); }
static int k_mxe(kctx *c) { return mxfp4_encode(c->w, c->N, c->K, c->mx_codes, c->mx_scales, NULL); }
static int k_mxe_mt(kctx *c) { return mxfp4_encode_mt(c->w, c->N, c->K, c->mx_codes, c->mx_scales, c->threads, NULL); }
static int k_mxd_ref(kctx *c) { return mxfp4_decode_ref(c->mx_codes, c->mx_scales, c->N, c->K, c->fout, NULL); }
static int k_mxd(kctx *c) { return mxfp4_decode(c->mx_codes, c->mx_scales, c->N, c->K, c->fout, NULL); }
static int k_bf16(kctx *c) { convert_bf16_to_f32(c->h16, c->fout, (size_t)(c->N * c->K)); return 0; }
static int k_f32bf16(kctx *c) { convert_f32_to_bf16(c->w, c->h16, (size_t)(c->N * c->K)); return 0; }
static int k_transpose(kctx *c) { transpose_f32(c->w, c->N, c->K, c->fout); return 0; }

/* One table row. ref/mt may be NULL (no such version); the scalar column runs `opt` with the
 * scalar path forced. `out`/`out_bytes` is hashed after each version to prove equal bytes. */
typedef struct row_spec {
    const char *name;
    kernel_fn ref, opt, mt;
    double bytes;
    const void *out;
    size_t out_bytes;
} row_spec;

static uint64_t fnv(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static void run_row(const row_spec *r, kctx *c)
{
    double mb = r->bytes / 1e6;
    g_copy_bytes = (size_t)r->bytes;
    double t_copy = best_seconds(k_memcpy, c);
    double t_ref = 0, t_scalar, t_opt, t_mt = 0;
    uint64_t h_ref = 0, h_scalar, h_opt, h_mt = 0;
    if (r->ref) {
        t_ref = best_seconds(r->ref, c);
        h_ref = fnv(r->out, r->out_bytes);
    }
    quant_force_scalar(true);
    t_scalar = best_seconds(r->opt, c);
    h_scalar = fnv(r->out, r->out_bytes);
    quant_force_scalar(false);
    t_opt = best_seconds(r->opt, c);
    h_opt = fnv(r->out, r->out_bytes);
    if (r->mt) {
        t_mt = best_seconds(r->mt, c);
        h_mt = fnv(r->out, r->out_bytes);
    }
    bool same = h_scalar == h_opt && (!r->ref || h_ref == h_opt) && (!r->mt || h_mt == h_opt);
    char ref_s[32] = "-", mt_s[32] = "-", ratio_s[32] = "-";
    if (r->ref) {
        snprintf(ref_s, sizeof ref_s, "%.0f", mb / t_ref);
        snprintf(ratio_s, sizeof ratio_s, "%.1fx", t_ref / t_opt);
    }
    if (r->mt)
        snprintf(mt_s, sizeof mt_s, "%.0f", mb / t_mt);
    printf("| %-34s | %8.1f | %8s | %8.0f | %8.0f | %8s | %7s | %6.3f | %8.0f |%s\n", r->name, mb,
           ref_s, mb / t_scalar, mb / t_opt, mt_s, ratio_s, t_copy / t_opt, mb / t_copy,
           same ? "" : " BYTES DIFFER");
    fflush(stdout);
    if (!same)
        exit(1);
}

static double mean_row_rel_rms(const float *w, const float *back, int64_t N, int64_t K)
{
    double total = 0;
    for (int64_t n = 0; n < N; n++) {
        double num = 0, den = 0;
        for (int64_t k = 0; k < K; k++) {
            double x = w[n * K + k], d = x - back[n * K + k];
            num += d * d;
            den += x * x;
        }
        total += sqrt(num / den);
    }
    return total / (double)N;
}

static uint64_t g_rng = 12345;
static double unit(void)
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(g_rng >> 11) * (1.0 / 9007199254740992.0);
}
static float gauss(void)
{
    double u = unit(), v = unit();
    return (float)(sqrt(-2.0 * log(u < 1e-300 ? 1e-300 : u)) * cos(6.283185307179586 * v));
}

static void bench_shape(const char *model, int64_t N, int64_t K, int threads)
{
    size_t nk = (size_t)(N * K);
    kctx c = {.N = N, .K = K, .threads = threads};
    c.w = malloc(nk * 4);
    c.fout = malloc(nk * 4);
    c.codes = malloc(nk);
    c.codes2 = malloc(nk);
    c.packed = malloc(nk);
    c.zp = malloc(nk / 16);
    c.scales = malloc(nk / 16 * 4);
    c.mx_codes = malloc(nk / 2);
    c.mx_scales = malloc(nk / 32);
    c.h16 = malloc(nk * 2);
    g_src = malloc(nk * 4);
    g_dst = malloc(nk * 4);
    if (!c.w || !c.fout || !c.codes || !c.codes2 || !c.packed || !c.zp || !c.scales ||
        !c.mx_codes || !c.mx_scales || !c.h16 || !g_src || !g_dst) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < nk; i++)
        c.w[i] = gauss() * 0.02f;
    memset(g_src, 1, nk * 4);
    memset(g_dst, 2, nk * 4);
    convert_f32_to_bf16(c.w, c.h16, nk);

    printf("\n### %s expert, N = %lld, K = %lld (%zu elements)\n\n", model, (long long)N,
           (long long)K, nk);
    printf("| %-34s | %8s | %8s | %8s | %8s | %8s | %7s | %6s | %8s |\n", "kernel", "MB", "ref",
           "scalar", "opt 1T", "opt MT", "opt/ref", "opt/memcpy", "memcpy");
    printf("|%s|---------:|---------:|---------:|---------:|---------:|--------:|-------:|---------:|\n",
           "------------------------------------");
    const double f32 = 4.0 * (double)nk;
    const struct { int bits; bool sym; qscale_type st; const char *name; } qcfg[] = {
        {4, true, QSCALE_F16, "quantize int4 sym bs32, fp16 scales"},
        {4, false, QSCALE_F32, "quantize int4 asym bs32, fp32 scales"},
        {8, true, QSCALE_F16, "quantize int8 sym bs32, fp16 scales"},
    };
    for (int i = 0; i < 3; i++) {
        c.p = (qb_params){qcfg[i].bits, 32, qcfg[i].sym, qcfg[i].st};
        row_spec r = {qcfg[i].name, k_qb_ref, k_qb, k_qb_mt, f32, c.codes, nk * (size_t)qcfg[i].bits / 8};
        run_row(&r, &c);
    }
    c.p = (qb_params){4, 32, true, QSCALE_F16};
    qb_quantize(c.w, N, K, &c.p, c.codes, c.scales, c.zp, NULL);
    row_spec deq = {"dequantize int4 (scalar)", NULL, k_deq, NULL, f32, c.fout, nk * 4};
    run_row(&deq, &c);
    for (int bits = 4; bits <= 8; bits += 4) {
        c.bits = bits;
        c.p = (qb_params){bits, 32, true, QSCALE_F16};
        qb_quantize(c.w, N, K, &c.p, c.codes, c.scales, c.zp, NULL);
        row_spec r = {bits == 4 ? "CUTLASS SM80 pack int4" : "CUTLASS SM80 pack int8", k_cut_ref,
                      k_cut, k_cut_mt, (double)nk * bits / 8, c.packed, nk * (size_t)bits / 8};
        run_row(&r, &c);
        row_spec u = {bits == 4 ? "CUTLASS SM80 unpack int4" : "CUTLASS SM80 unpack int8",
                      NULL, k_cut_un, NULL, (double)nk * bits / 8, c.codes2, nk * (size_t)bits / 8};
        run_row(&u, &c);
    }
    row_spec rows[] = {
        {"MXFP4 encode (OCP, RNE)", k_mxe_ref, k_mxe, k_mxe_mt, f32, c.mx_codes, nk / 2},
        {"MXFP4 decode", k_mxd_ref, k_mxd, NULL, f32, c.fout, nk * 4},
        {"fp4 CUDA pack (nibble transpose)", k_fp4_ref, k_fp4, NULL, (double)nk / 2, c.packed, nk / 2},
        {"fp4 CUDA unpack", NULL, k_fp4_un, NULL, (double)nk / 2, c.codes2, nk / 2},
        {"bf16 -> f32", NULL, k_bf16, NULL, f32, c.fout, nk * 4},
        {"f32 -> bf16", NULL, k_f32bf16, NULL, f32, c.h16, nk * 2},
        {"transpose f32", NULL, k_transpose, NULL, f32, c.fout, nk * 4},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        run_row(&rows[i], &c);

    /* MXFP4 error of both rules on N(0,1) data of this shape. */
    for (size_t i = 0; i < nk; i++)
        c.w[i] = gauss();
    mxfp4_encode(c.w, N, K, c.mx_codes, c.mx_scales, NULL);
    mxfp4_decode(c.mx_codes, c.mx_scales, N, K, c.fout, NULL);
    double ocp = mean_row_rel_rms(c.w, c.fout, N, K);
    mxfp4_encode_builder_rule(c.w, N, K, c.mx_codes, c.mx_scales, NULL);
    mxfp4_decode(c.mx_codes, c.mx_scales, N, K, c.fout, NULL);
    double builder = mean_row_rel_rms(c.w, c.fout, N, K);
    printf("\nMXFP4 mean per-row relative RMS error on N(0,1) data of this shape: OCP+RNE %.4f, "
           "builder rule %.4f\n", ocp, builder);

    free(c.w);
    free(c.fout);
    free(c.codes);
    free(c.codes2);
    free(c.packed);
    free(c.zp);
    free(c.scales);
    free(c.mx_codes);
    free(c.mx_scales);
    free(c.h16);
    free(g_src);
    free(g_dst);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        g_min_seconds = atof(argv[1]);
    int threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    printf("bench_kernels: optimized path \"%s\", %d CPUs (the MT column uses all of them), "
           "best of >= %.2f s per measurement, MB = 10^6 bytes\n", quant_dispatch_name(), threads,
           g_min_seconds);
    bench_shape("gpt-oss-20b", 5760, 2880, threads);
    bench_shape("Qwen3-30B-A3B", 1536, 2048, threads);
    return 0;
}
