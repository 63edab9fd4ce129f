/* Quantize + CUTLASS-pack every expert of one MoE layer, as the converter does, and print the
 * time. This is moe2onnx's side of the comparison with ONNX Runtime's Python path
 * (bench/ort_python_layer.py runs quantize_matmul_4bits + _pack_weights_for_cuda_mixed_gemm on
 * the same shapes); bench/run_device_bench.sh runs both on one machine at one thread count.
 *
 * usage: bench_layer gpt-oss-20b|qwen3-30b-a3b [threads] [bits] [block]
 * Input is float32 [N][K] per expert, filled once (not timed), shared by all experts so the
 * benchmark measures the kernels, not page faults. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/progress.h"
#include "common/threadpool.h"
#include "quant/quant.h"

typedef struct layer_shape {
    const char *name;
    int experts;
    int64_t hidden, inter; /* fc1: N = 2*inter, K = hidden; fc2: N = hidden, K = inter */
} layer_shape;

static const layer_shape SHAPES[] = {
    {"gpt-oss-20b", 32, 2880, 2880},
    {"qwen3-30b-a3b", 128, 2048, 768},
};

typedef struct job_ctx {
    const layer_shape *s;
    const float *fc1, *fc2;
    qb_params p;
} job_ctx;

/* One job = one expert's fc1 and fc2: quantize then pack, results dropped (sizes only). */
static int expert_job(void *vctx, int64_t job, void **result, m2o_err *err)
{
    const job_ctx *c = vctx;
    const float *w[2] = {c->fc1, c->fc2};
    int64_t N[2] = {2 * c->s->inter, c->s->hidden}, K[2] = {c->s->hidden, c->s->inter};
    size_t bytes = 0;
    for (int m = 0; m < 2; m++) {
        size_t cb = qb_codes_bytes(N[m], K[m], &c->p);
        uint8_t *codes = malloc(cb), *packed = malloc(cb);
        float *scales = malloc(qb_scales_count(N[m], K[m], &c->p) * sizeof(float));
        int rc = codes && packed && scales ? 0 : m2o_fail(err, "out of memory");
        if (!rc) rc = qb_quantize(w[m], N[m], K[m], &c->p, codes, scales, NULL, err);
        if (!rc) rc = cutlass_sm80_pack(codes, N[m], K[m], c->p.bits, packed, err);
        bytes += cb;
        free(codes), free(packed), free(scales);
        if (rc) return -1;
    }
    (void)job;
    *result = (void *)(uintptr_t)bytes;
    return 0;
}

static int commit_job(void *ctx, int64_t job, void *result, m2o_err *err)
{
    (void)ctx, (void)job, (void)result, (void)err;
    return 0;
}

static void fill(float *w, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        w[i] = ((float)(seed >> 8) / 16777216.0f - 0.5f) * 0.04f;
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_layer gpt-oss-20b|qwen3-30b-a3b [threads] [bits] [block]\n");
        return 2;
    }
    const layer_shape *s = NULL;
    for (size_t i = 0; i < sizeof SHAPES / sizeof SHAPES[0]; i++)
        if (!strcmp(argv[1], SHAPES[i].name)) s = &SHAPES[i];
    if (!s) {
        fprintf(stderr, "bench_layer: unknown shape '%s'\n", argv[1]);
        return 2;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 0;
    job_ctx c = {.s = s, .p = {.bits = argc > 3 ? atoi(argv[3]) : 4, .block_size = argc > 4 ? atoi(argv[4]) : 32,
                               .symmetric = true, .scale_type = QSCALE_F16}};
    size_t n1 = (size_t)(2 * s->inter * s->hidden), n2 = (size_t)(s->hidden * s->inter);
    float *fc1 = malloc(n1 * sizeof(float)), *fc2 = malloc(n2 * sizeof(float));
    if (!fc1 || !fc2) return 1;
    fill(fc1, n1, 1), fill(fc2, n2, 2);
    c.fc1 = fc1, c.fc2 = fc2;
    m2o_err err = {{0}};
    int t = threads > 0 ? threads : m2o_cpu_count();
    double t0 = now_seconds();
    if (m2o_ordered_run(t, 0, s->experts, expert_job, commit_job, NULL, &c, &err)) {
        fprintf(stderr, "bench_layer: %s\n", err.msg);
        return 1;
    }
    double secs = now_seconds() - t0;
    printf("moe2onnx %s layer: %d experts, int%d block %d, quantize+cutlass pack, %d threads (%s): %.3f s "
           "(%.2f ms/expert)\n",
           s->name, s->experts, c.p.bits, c.p.block_size, t, quant_dispatch_name(), secs, secs * 1e3 / s->experts);
    free(fc1), free(fc2);
    return 0;
}
