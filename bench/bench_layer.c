/* One MoE layer's experts through the converter's own expert path (expert_produce: read the
 * checkpoint layout in bands, bf16 -> float, quantize with float16 scales as for the CUDA io
 * dtype, CUTLASS SM80 pack), on a thread pool like the writer's, and the time it takes. This is
 * moe2onnx's side of the comparison with ONNX Runtime's Python path (bench/ort_python_layer.py:
 * quantize_matmul_4bits + the CUTLASS packer on float16 [K, N] weights);
 * bench/run_device_bench.sh runs both at one thread count and prints the ratio.
 *
 * usage: bench_layer gpt-oss-20b|qwen3-30b-a3b [threads] [bits] [block] [source] [repeats]
 *   source: bf16 (default; gpt-oss BF16 checkpoints store experts input-major [E, K, N],
 *           Qwen3 per expert [N, K] gate / up / down), or mxfp4 (gpt-oss official blocks)
 * The source tensors are filled once, in memory (not timed); every expert has its own data.
 * Prints the best of `repeats` runs (default 3). */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/progress.h"
#include "common/half.h"
#include "common/threadpool.h"
#include "weights/experts.h"
#include "onnx/graph.h"
#include "quant/quant.h"

typedef struct layer_shape {
    const char *name;
    int experts;
    int64_t hidden, inter; /* fc1: N = 2*inter, K = hidden; fc2: N = hidden, K = inter */
    bool per_expert;       /* Qwen: gate/up/down tensors per expert; gpt-oss: fused [E, K, N] */
} layer_shape;

static const layer_shape SHAPES[] = {
    {"gpt-oss-20b", 32, 2880, 2880, false},
    {"qwen3-30b-a3b", 128, 2048, 768, true},
};

typedef struct bench {
    const layer_shape *s;
    expert_src *src[2]; /* fc1, fc2 */
    expert_enc enc;
    int bits, block;
} bench;

static uint32_t g_seed = 1;
static uint16_t next_bf16(void)
{
    g_seed = g_seed * 1664525u + 1013904223u;
    float v = ((float)(g_seed >> 8) / 16777216.0f - 0.5f) * 0.04f;
    return f32_to_bf16(v);
}

static st_tensor *new_tensor(const char *name, st_dtype dt, int ndim, const int64_t *shape)
{
    st_tensor *t = calloc(1, sizeof *t);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= t->shape[i] = shape[i];
    size_t es = st_dtype_size(dt);
    uint8_t *data = malloc((size_t)n * es);
    if (!t || !data) {
        fprintf(stderr, "bench_layer: out of memory\n");
        exit(1);
    }
    if (dt == ST_BF16) {
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = next_bf16();
            memcpy(data + 2 * i, &h, 2);
        }
    } else { /* MXFP4 codes / scales: random codes, scales around 2^-6 */
        for (int64_t i = 0; i < n; i++) {
            g_seed = g_seed * 1664525u + 1013904223u;
            data[i] = strstr(name, "scales") ? (uint8_t)(121 + (g_seed >> 29)) : (uint8_t)(g_seed >> 24);
        }
    }
    *t = (st_tensor){.name = name, .dtype = dt, .ndim = ndim, .numel = n, .data = data,
                     .nbytes = (size_t)n * es};
    memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
    return t;
}

/* fc (0 = gate_up, 1 = down) of the layer in the checkpoint's layout. */
static expert_src *make_source(const layer_shape *s, int fc, bool mxfp4)
{
    int64_t E = s->experts, N = fc ? s->hidden : 2 * s->inter, K = fc ? s->inter : s->hidden;
    expert_src *src = calloc(1, sizeof *src);
    if (!src)
        exit(1);
    src->E = E, src->N = N, src->K = K;
    snprintf(src->what, sizeof src->what, "bench.%s", fc ? "down_proj" : "gate_up_proj");
    if (mxfp4) {
        src->kind = EXPERT_MXFP4;
        src->t = new_tensor("blocks", ST_U8, 4, (int64_t[]){E, N, K / 32, 16});
        src->scales = new_tensor("scales", ST_U8, 3, (int64_t[]){E, N, K / 32});
    } else if (!s->per_expert) {
        src->kind = EXPERT_FUSED_KN;
        src->t = new_tensor("fused", ST_BF16, 3, (int64_t[]){E, K, N});
    } else {
        src->kind = EXPERT_PER_EXPERT;
        for (int64_t e = 0; e < E; e++) {
            if (fc == 0) { /* gate and up halves [I, H] each, interleaved by the reader */
                src->per[e] = new_tensor("gate", ST_BF16, 2, (int64_t[]){N / 2, K});
                src->up[e] = new_tensor("up", ST_BF16, 2, (int64_t[]){N / 2, K});
            } else {
                src->per[e] = new_tensor("down", ST_BF16, 2, (int64_t[]){N, K});
            }
        }
    }
    return src;
}

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One job = one expert's fc1 and fc2 into fresh output buffers, as the writer does. */
static int expert_job(void *vctx, int64_t e, void **result, m2o_err *err)
{
    const bench *b = vctx;
    for (int fc = 0; fc < 2; fc++) {
        const expert_src *s = b->src[fc];
        size_t wb = expert_chunk_bytes(s->N, s->K, b->enc, b->bits, b->block, ONNX_FLOAT16);
        size_t sb = expert_chunk_bytes(s->N, s->K, ENC_INT_SCALES, b->bits, b->block, ONNX_FLOAT16);
        uint8_t *buf = m2o_malloc(wb + sb, err);
        if (!buf)
            return -1;
        int rc = expert_produce(s, e, b->enc, b->bits, b->block, ONNX_FLOAT16, false, buf,
                                buf + wb, err);
        free(buf);
        if (rc)
            return -1;
    }
    *result = NULL;
    return 0;
}

static int commit_job(void *ctx, int64_t job, void *result, m2o_err *err)
{
    (void)ctx, (void)job, (void)result, (void)err;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_layer gpt-oss-20b|qwen3-30b-a3b [threads] [bits] [block] "
                        "[bf16|mxfp4] [repeats]\n");
        return 2;
    }
    const layer_shape *s = NULL;
    for (size_t i = 0; i < sizeof SHAPES / sizeof SHAPES[0]; i++)
        if (!strcmp(argv[1], SHAPES[i].name))
            s = &SHAPES[i];
    if (!s) {
        fprintf(stderr, "bench_layer: unknown shape '%s'\n", argv[1]);
        return 2;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 0;
    int bits = argc > 3 ? atoi(argv[3]) : 4, block = argc > 4 ? atoi(argv[4]) : 32;
    const char *source = argc > 5 ? argv[5] : "bf16";
    int repeats = argc > 6 ? atoi(argv[6]) : 3;
    bool mxfp4 = !strcmp(source, "mxfp4");
    if ((!mxfp4 && strcmp(source, "bf16")) || (mxfp4 && s->per_expert)) {
        fprintf(stderr, "bench_layer: source '%s' is not available for %s (bf16%s)\n", source,
                s->name, s->per_expert ? "" : " or mxfp4");
        return 2;
    }
    /* as the converter does (src/cli/main.c): chunk and scratch buffers reused, not re-faulted */
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    bench b = {.s = s, .enc = ENC_INT_SM80, .bits = bits, .block = block};
    b.src[0] = make_source(s, 0, mxfp4);
    b.src[1] = make_source(s, 1, mxfp4);
    int t = threads > 0 ? threads : m2o_cpu_count();
    double best = 1e30, best_cpu = 1e30;
    for (int r = 0; r < (repeats > 0 ? repeats : 1); r++) {
        m2o_err err = {{0}};
        double t0 = now_seconds(), c0 = cpu_seconds();
        if (m2o_ordered_run(t, 0, s->experts, expert_job, commit_job, NULL, &b, &err)) {
            fprintf(stderr, "bench_layer: %s\n", err.msg);
            return 1;
        }
        double secs = now_seconds() - t0, cpu = cpu_seconds() - c0;
        best = secs < best ? secs : best;
        best_cpu = cpu < best_cpu ? cpu : best_cpu;
    }
    printf("moe2onnx %s layer: %d experts, %s -> int%d block %d, float16 scales, quantize+cutlass "
           "pack, %d threads (%s): %.3f s (%.2f ms/expert; cpu %.3f s)\n",
           s->name, s->experts, source, bits, block, t, quant_dispatch_name(), best,
           best * 1e3 / s->experts, best_cpu);
    return 0;
}
