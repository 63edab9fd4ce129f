/* CUTLASS fpA_intB SM80 prepacked weight layout (docs/FORMATS.md §5), the bytes ONNX Runtime's
 * pack_weights_for_cuda_mixed_gemm(q, N, K, bits, force_arch=80) produces. It composes three
 * steps: a row permutation of B inside 32-row (4-bit) / 16-row (8-bit) tiles, a column
 * interleave of 4 (4-bit) / 2 (8-bit) output columns in 64-element runs of K, and a reorder of
 * the elements inside each 32-bit word (the layout the GPU's fast int→half converter wants).
 * The reference follows the closed form element by element; the fast path uses the fact that
 * each 64-element run of one row lands, permuted, in one contiguous 64-element run. */
#include "quant/quant_internal.h"

#include <pthread.h>
#include <string.h>

static const uint8_t kPerm4[32] = {0, 1, 8,  9,  16, 17, 24, 25, 2, 3, 10, 11, 18, 19, 26, 27,
                                   4, 5, 12, 13, 20, 21, 28, 29, 6, 7, 14, 15, 22, 23, 30, 31};
static const uint8_t kPerm8[16] = {0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15};
static const uint8_t kByteSlot8[4] = {0, 2, 1, 3};

static int index_in_perm(const uint8_t *perm, int len, int v)
{
    for (int i = 0; i < len; i++)
        if (perm[i] == v)
            return i;
    return -1; /* unreachable: perm is a permutation of 0..len-1 */
}

/* Position (nibble index for 4-bit, byte index for 8-bit) of element (n, k) in the output. */
static int64_t cutlass_position(int64_t n, int64_t k, int64_t K, int bits)
{
    const int tile = bits == 4 ? 32 : 16, inter = bits == 4 ? 4 : 2;
    const uint8_t *perm = bits == 4 ? kPerm4 : kPerm8;
    int64_t kp = (k / tile) * tile + index_in_perm(perm, tile, (int)(k % tile));
    int64_t kt = kp / 64, kin = kp % 64;
    int64_t elem = (n / inter) * (K * inter) + kt * (64 * inter) + (n % inter) * 64 + kin;
    if (bits == 4) {
        int64_t word = elem / 8, i = elem % 8;
        int64_t d = i % 2 == 0 ? i / 2 : (i - 1) / 2 + 4;
        return word * 8 + d;
    }
    return (elem / 4) * 4 + kByteSlot8[elem % 4];
}

static int cutlass_check(const void *in, const void *out, int64_t N, int64_t K, int bits,
                         const char *what, m2o_err *err)
{
    if (bits != 4 && bits != 8)
        return m2o_fail(err, "%s: bits %d is not supported: use 4 or 8", what, bits);
    if (K <= 0 || K % 64 != 0)
        return m2o_fail(err, "%s: K %lld is not a positive multiple of 64, which the CUTLASS "
                        "SM80 layout needs: use the raw layout (weights_prepacked=0) for this "
                        "shape", what, (long long)K);
    int inter = bits == 4 ? 4 : 2;
    if (N <= 0 || N % inter != 0)
        return m2o_fail(err, "%s: N %lld is not a positive multiple of %d, which the %d-bit "
                        "CUTLASS SM80 column interleave needs", what, (long long)N, inter, bits);
    if (N > INT64_MAX / K / 2)
        return m2o_fail(err, "%s: N %lld x K %lld is too large", what, (long long)N,
                        (long long)K);
    if (!in || !out)
        return m2o_fail(err, "%s: %s buffer is NULL", what, !in ? "input" : "output");
    return 0;
}

int cutlass_sm80_pack_ref(const uint8_t *raw, int64_t N, int64_t K, int bits, uint8_t *out,
                          m2o_err *err)
{
    if (cutlass_check(raw, out, N, K, bits, "CUTLASS SM80 pack", err))
        return -1;
    memset(out, 0, (size_t)(N * K * bits / 8));
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++)
            qb_put_code(out, cutlass_position(n, k, K, bits), bits,
                        (uint8_t)qb_get_code(raw, n * K + k, bits));
    return 0;
}

/* Fast scalar path. For one row n and one 64-element run kt, source elements kt*64 .. +63 go to
 * the output run starting at element (n/I)*K*I + kt*64*I + (n%I)*64, permuted by a fixed table:
 * run_src[j] = which of the 64 source elements lands at output slot j. */
static uint8_t g_run_src4[64], g_run_src8[64];
static pthread_once_t g_tables_once = PTHREAD_ONCE_INIT;

static void build_run_tables(void)
{
    /* Element k of run 0 of row 0 lands at cutlass_position(0, k, 64, bits) (K = 64, n = 0). */
    for (int k = 0; k < 64; k++) {
        g_run_src4[cutlass_position(0, k, 64, 4)] = (uint8_t)k;
        g_run_src8[cutlass_position(0, k, 64, 8)] = (uint8_t)k;
    }
}

const uint8_t *cutlass_run_table(int bits)
{
    pthread_once(&g_tables_once, build_run_tables);
    return bits == 4 ? g_run_src4 : g_run_src8;
}

static int64_t run_offset_bytes(int64_t n, int64_t kt, int64_t K, int bits)
{
    const int inter = bits == 4 ? 4 : 2;
    int64_t elem = (n / inter) * (K * inter) + kt * (64 * inter) + (n % inter) * 64;
    return elem * bits / 8;
}

int cutlass_pack_rows_scalar(const uint8_t *raw, int64_t r0, int64_t r1, int64_t K, int bits,
                             uint8_t *out)
{
    const uint8_t *src_of = cutlass_run_table(bits);
    const int64_t row_bytes = K * bits / 8, runs = K / 64;
    for (int64_t n = r0; n < r1; n++) {
        const uint8_t *row = raw + n * row_bytes;
        for (int64_t kt = 0; kt < runs; kt++) {
            uint8_t *dst = out + run_offset_bytes(n, kt, K, bits);
            if (bits == 8) {
                const uint8_t *s = row + kt * 64;
                for (int j = 0; j < 64; j++)
                    dst[j] = s[src_of[j]];
            } else {
                const uint8_t *s = row + kt * 32;
                uint8_t v[64];
                for (int j = 0; j < 32; j++) {
                    v[2 * j] = s[j] & 0xf;
                    v[2 * j + 1] = s[j] >> 4;
                }
                for (int j = 0; j < 32; j++)
                    dst[j] = (uint8_t)(v[src_of[2 * j]] | (v[src_of[2 * j + 1]] << 4));
            }
        }
    }
    return 0;
}

/* Inverse of the run permutation: packed slot j goes back to source element table[j]. */
int cutlass_sm80_unpack(const uint8_t *packed, int64_t N, int64_t K, int bits, uint8_t *raw,
                        m2o_err *err)
{
    if (cutlass_check(packed, raw, N, K, bits, "CUTLASS SM80 unpack", err))
        return -1;
#if M2O_HAVE_X86
    if (quant_use_avx2()) {
        cutlass_unpack_rows_avx2(packed, 0, N, K, bits, raw);
        return 0;
    }
#endif
    const uint8_t *src_of = cutlass_run_table(bits);
    const int64_t row_bytes = K * bits / 8, runs = K / 64;
    for (int64_t n = 0; n < N; n++) {
        uint8_t *row = raw + n * row_bytes;
        for (int64_t kt = 0; kt < runs; kt++) {
            const uint8_t *src = packed + run_offset_bytes(n, kt, K, bits);
            if (bits == 8) {
                for (int j = 0; j < 64; j++)
                    row[kt * 64 + src_of[j]] = src[j];
                continue;
            }
            uint8_t v[64];
            for (int j = 0; j < 64; j++)
                v[src_of[j]] = (uint8_t)(j % 2 ? src[j / 2] >> 4 : src[j / 2] & 0xf);
            for (int j = 0; j < 32; j++)
                row[kt * 32 + j] = (uint8_t)(v[2 * j] | (v[2 * j + 1] << 4));
        }
    }
    return 0;
}

typedef struct pack_job {
    const uint8_t *raw;
    int64_t K;
    int bits;
    uint8_t *out;
} pack_job;

static int pack_rows(void *ctx, int64_t r0, int64_t r1, m2o_err *err)
{
    const pack_job *j = ctx;
#if M2O_HAVE_X86
    if (quant_use_avx2()) {
        cutlass_pack_rows_avx2(j->raw, r0, r1, j->K, j->bits, j->out);
        return 0;
    }
#endif
    return cutlass_pack_rows_scalar(j->raw, r0, r1, j->K, j->bits, j->out);
}

int cutlass_sm80_pack_mt(const uint8_t *raw, int64_t N, int64_t K, int bits, uint8_t *out,
                         int nthreads, m2o_err *err)
{
    if (cutlass_check(raw, out, N, K, bits, "CUTLASS SM80 pack", err))
        return -1;
    pack_job j = {raw, K, bits, out};
    return quant_parallel_for(N, 1, nthreads, pack_rows, &j, err);
}

int cutlass_sm80_pack(const uint8_t *raw, int64_t N, int64_t K, int bits, uint8_t *out,
                      m2o_err *err)
{
    return cutlass_sm80_pack_mt(raw, N, K, bits, out, 1, err);
}
