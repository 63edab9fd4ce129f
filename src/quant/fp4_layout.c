/* fp4 CUDA MoE layout (docs/FORMATS.md §6), what pack_fp4_weights_for_cuda_moe_gemm(q, N, K) produces:
 * a plain transpose of 4-bit codes, raw [N][K/2] (low nibble = even k) to [K][N/2] (low nibble =
 * even n). The fast path works on 2 rows x 2 columns at a time (two input bytes give two output
 * bytes) and walks the matrix in tiles so both sides stay in cache. */
#include "quant/quant_internal.h"

static int fp4_check(const void *in, const void *out, int64_t N, int64_t K, const char *what,
                     m2o_err *err)
{
    if (N <= 0 || N % 2 != 0)
        return m2o_fail(err, "%s: N %lld is not a positive even number: the fp4 layout packs two "
                        "output rows per byte", what, (long long)N);
    if (K <= 0 || K % 2 != 0)
        return m2o_fail(err, "%s: K %lld is not a positive even number: codes are packed two per "
                        "byte along K", what, (long long)K);
    if (N > INT64_MAX / K)
        return m2o_fail(err, "%s: N %lld x K %lld is too large", what, (long long)N,
                        (long long)K);
    if (!in || !out)
        return m2o_fail(err, "%s: %s buffer is NULL", what, !in ? "input" : "output");
    return 0;
}

static int nib(const uint8_t *buf, int64_t idx)
{
    return idx % 2 ? buf[idx / 2] >> 4 : buf[idx / 2] & 0xf;
}

static void set_nib(uint8_t *buf, int64_t idx, int v)
{
    if (idx % 2)
        buf[idx / 2] = (uint8_t)((buf[idx / 2] & 0x0f) | (v << 4));
    else
        buf[idx / 2] = (uint8_t)((buf[idx / 2] & 0xf0) | v);
}

int fp4_cuda_pack_ref(const uint8_t *raw, int64_t N, int64_t K, uint8_t *out, m2o_err *err)
{
    if (fp4_check(raw, out, N, K, "fp4 CUDA pack", err))
        return -1;
    for (int64_t k = 0; k < K; k++)
        for (int64_t n = 0; n < N; n++)
            set_nib(out, k * N + n, nib(raw, n * K + k));
    return 0;
}

/* Tiled scalar nibble transpose of an [R][C] code matrix (R, C even) into [C][R]. */
static void nibble_transpose_tiled(const uint8_t *in, int64_t R, int64_t C, uint8_t *out)
{
    const int64_t in_row = C / 2, out_row = R / 2, T = 64;
    for (int64_t r0 = 0; r0 < R; r0 += T) {
        int64_t r1 = r0 + T < R ? r0 + T : R;
        for (int64_t c0 = 0; c0 < C; c0 += T) {
            int64_t c1 = c0 + T < C ? c0 + T : C;
            for (int64_t r = r0; r < r1; r += 2) {
                const uint8_t *a = in + r * in_row, *b = a + in_row;
                uint8_t *o = out + r / 2;
                for (int64_t c = c0; c < c1; c += 2) {
                    uint8_t x = a[c / 2], y = b[c / 2];
                    o[c * out_row] = (uint8_t)((x & 0x0f) | (y << 4));
                    o[(c + 1) * out_row] = (uint8_t)((x >> 4) | (y & 0xf0));
                }
            }
        }
    }
}

int fp4_cuda_pack(const uint8_t *raw, int64_t N, int64_t K, uint8_t *out, m2o_err *err)
{
    if (fp4_check(raw, out, N, K, "fp4 CUDA pack", err))
        return -1;
#if M2O_HAVE_X86
    if (quant_use_avx2()) {
        fp4_cuda_pack_avx2(raw, N, K, out);
        return 0;
    }
#endif
    nibble_transpose_tiled(raw, N, K, out);
    return 0;
}

int fp4_cuda_unpack(const uint8_t *packed, int64_t N, int64_t K, uint8_t *raw, m2o_err *err)
{
    if (fp4_check(packed, raw, N, K, "fp4 CUDA unpack", err))
        return -1;
    /* The inverse of the transpose [N][K] -> [K][N] is the same transpose of [K][N]. */
    return fp4_cuda_pack(packed, K, N, raw, err);
}
