/* Weight error and conversion time of the blockwise quantization methods (issue 18):
 *   rtn       symmetric round-to-nearest, signed scales (the project default, ONNX Runtime's rule)
 *   search    symmetric, same format, error-minimizing scale per block (qb_quantize_search)
 *   asym      asymmetric round-to-nearest with zero points (ONNX Runtime's asymmetric rule)
 *   asym+s    asymmetric, scale and zero point searched
 *   inc-rtn   onnxruntime-genai's algo_config=rtn (ONNX Runtime's Neural Compressor RTN,
 *             symmetric 2·max|w|/(2^bits - 1) around an implicit zero point)
 *   k_quant   onnxruntime-genai's algo_config=k_quant (ONNX Runtime's k-quant: asymmetric,
 *             weighted least squares over 20 scales per block)
 * on full-width matrices of gpt-oss-20b (hidden 2880, expert width 2880, 64 query heads of 64)
 * and Qwen3-30B-A3B (hidden 2048, expert width 768, 32 query heads of 128): the fused expert
 * gate/up, the expert down projection and the attention query projection (a linear layer),
 * with normal and heavy-tailed (Student-t, nu = 3) values. Relative RMSE = ||W - deq|| / ||W||.
 * Every block is independent and the values are i.i.d., so `rows` rows of each matrix (the full
 * K, the full block structure) measure the whole matrix; time is per element on one thread and
 * is reported as a ratio to rtn measured in the same run.
 *
 *   make bench && build/bench/bench_quant_methods [rows_per_matrix (default 384)]   */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "quant/quant.h"

typedef struct matrix_kind {
    const char *model, *name;
    int64_t N, K; /* full shape (N reported only) */
} matrix_kind;

static const matrix_kind kMatrices[] = {
    {"gpt-oss-20b", "expert gate_up", 5760, 2880},
    {"gpt-oss-20b", "expert down", 2880, 2880},
    {"gpt-oss-20b", "linear q_proj", 4096, 2880},
    {"Qwen3-30B-A3B", "expert gate_up", 1536, 2048},
    {"Qwen3-30B-A3B", "expert down", 2048, 768},
    {"Qwen3-30B-A3B", "linear q_proj", 4096, 2048},
};

/* splitmix64 + Box-Muller, the generator of the unit tests (tests/unit/test_quant_rng.h). */
static uint64_t g_state = 20261204;
static uint64_t next_u64(void)
{
    uint64_t z = (g_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double unit(void)
{
    double u = (double)(next_u64() >> 11) * (1.0 / 9007199254740992.0);
    return u < 1e-300 ? 1e-300 : u;
}
static double gauss(void)
{
    return sqrt(-2.0 * log(unit())) * cos(6.283185307179586 * unit());
}
/* Student-t with 3 degrees of freedom: z / sqrt(chi2_3 / 3). */
static double student_t3(void)
{
    double a = gauss(), b = gauss(), c = gauss();
    return gauss() / sqrt((a * a + b * b + c * c) / 3.0);
}

static void fill(float *w, int64_t n, bool heavy)
{
    for (int64_t i = 0; i < n; i++)
        w[i] = (float)(0.02 * (heavy ? student_t3() : gauss()));
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct result {
    double rmse, seconds;
} result;

/* How a method fills the format: the qb_* methods, or the builder's two. */
typedef enum bench_method { BM_QB_RTN, BM_QB_SEARCH, BM_INC_RTN, BM_K_QUANT } bench_method;

static int quantize(const float *w, int64_t N, int64_t K, const qb_params *p, bench_method m,
                    uint8_t *codes, void *scales, uint8_t *zp, m2o_err *err)
{
    switch (m) {
    case BM_INC_RTN:
        return rtn_inc_quantize(w, N, K, p, QSCALE_F32, codes, scales, zp, err);
    case BM_K_QUANT:
        return kq_quantize(w, N, K, p, codes, scales, zp, err);
    default:
        return qb_quantize_method_mt(w, N, K, p, m == BM_QB_SEARCH ? QB_METHOD_SEARCH : QB_METHOD_RTN,
                                     codes, scales, zp, 1, err);
    }
}

static result run(const float *w, int64_t N, int64_t K, int bits, int bs, bool symmetric,
                  bench_method method)
{
    qb_params p = {.bits = bits, .block_size = bs, .symmetric = symmetric,
                   .scale_type = QSCALE_F16};
    uint8_t *codes = malloc(qb_codes_bytes(N, K, &p));
    void *scales = malloc(qb_scales_count(N, K, &p) * qscale_size(p.scale_type));
    size_t zb = qb_zero_points_bytes(N, K, &p);
    uint8_t *zp = malloc(zb ? zb : 1);
    m2o_err err = {{0}};
    result r = {0, 1e30};
    /* best of 3 for rtn (fast, noisy), one run for the searches (slow, steady) */
    for (int rep = 0; rep < (method == BM_QB_RTN ? 3 : 1); rep++) {
        double t0 = now();
        if (quantize(w, N, K, &p, method, codes, scales, zp, &err)) {
            fprintf(stderr, "bench_quant_methods: %s\n", err.msg);
            exit(1);
        }
        double t = now() - t0;
        r.seconds = t < r.seconds ? t : r.seconds;
    }
    qb_error e;
    if (qb_quant_error(w, codes, scales, zp, N, K, &p, &e, &err)) {
        fprintf(stderr, "bench_quant_methods: %s\n", err.msg);
        exit(1);
    }
    r.rmse = qb_relative_rmse(&e);
    free(codes);
    free(scales);
    free(zp);
    return r;
}

static double pct(double a, double base)
{
    return 100.0 * (a - base) / base;
}

int main(int argc, char **argv)
{
    int64_t rows = argc > 1 ? atoll(argv[1]) : 384;
    if (rows <= 0) {
        fprintf(stderr, "bench_quant_methods: rows_per_matrix must be positive\n");
        return 2;
    }
    const int bits_list[] = {4, 8}, bs_list[] = {32, 64, 128};
    printf("scales float16; relative RMSE; Δ vs rtn (same bits); time in ns per weight "
           "(and / rtn), one thread, %lld rows per matrix (%s rtn path)\n\n", (long long)rows,
           quant_dispatch_name());
    printf("| model | matrix [N, K] | values | bits | block | rtn | search | asym | asym+s | "
           "inc-rtn | k_quant | search Δ | asym Δ | asym+s Δ | inc-rtn Δ | k_quant Δ | rtn ns/w | "
           "search × | asym × | asym+s × | inc-rtn × | k_quant × |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    double t_start = now();
    for (size_t m = 0; m < sizeof kMatrices / sizeof kMatrices[0]; m++) {
        const matrix_kind *mk = &kMatrices[m];
        float *w = malloc(sizeof(float) * (size_t)(rows * mk->K));
        for (int heavy = 0; heavy < 2; heavy++) {
            fill(w, rows * mk->K, heavy);
            for (int bi = 0; bi < 2; bi++) {
                for (int si = 0; si < 3; si++) {
                    int bits = bits_list[bi], bs = bs_list[si];
                    if (mk->K % bs)
                        continue;
                    const double ns = 1e9 / (double)(rows * mk->K); /* per weight */
                    result r[6] = {
                        run(w, rows, mk->K, bits, bs, true, BM_QB_RTN),
                        run(w, rows, mk->K, bits, bs, true, BM_QB_SEARCH),
                        run(w, rows, mk->K, bits, bs, false, BM_QB_RTN),
                        run(w, rows, mk->K, bits, bs, false, BM_QB_SEARCH),
                        run(w, rows, mk->K, bits, bs, true, BM_INC_RTN),
                        run(w, rows, mk->K, bits, bs, false, BM_K_QUANT),
                    };
                    printf("| %s | %s [%lld, %lld] | %s | %d | %d |", mk->model, mk->name,
                           (long long)mk->N, (long long)mk->K, heavy ? "student-t3" : "normal",
                           bits, bs);
                    for (int k = 0; k < 6; k++)
                        printf(" %.5f |", r[k].rmse);
                    for (int k = 1; k < 6; k++)
                        printf(" %+.1f%% |", pct(r[k].rmse, r[0].rmse));
                    printf(" %.2f |", r[0].seconds * ns);
                    for (int k = 1; k < 6; k++)
                        printf(" %.0f |", r[k].seconds / r[0].seconds);
                    printf("\n");
                    fflush(stdout);
                }
            }
        }
        free(w);
    }
    printf("\ntotal %.1f s\n", now() - t_start);
    return 0;
}
