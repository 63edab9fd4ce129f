#include "verify/source.h"

#include <stdio.h>
#include <string.h>

#include "arch/family.h"
#include "quant/quant.h"

static const st_tensor *findf(const st_checkpoint *ck, char *buf, size_t len, const char *fmt,
                              const char *a, const char *b)
{
    snprintf(buf, len, fmt, a, b);
    return ckpt_find(ck, buf);
}

static int expect_shape(const st_tensor *t, int ndim, const int64_t *shape, m2o_err *err)
{
    bool ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = t->shape[i] == shape[i];
    if (ok)
        return 0;
    char got[96] = "", want[96] = "";
    for (int i = 0; i < t->ndim; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "",
                 (long long)t->shape[i]);
    for (int i = 0; i < ndim; i++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? ", " : "",
                 (long long)shape[i]);
    return m2o_fail(err, "checkpoint tensor %s is [%s], config.json implies [%s]", t->name, got,
                    want);
}

static int find_gpt_oss(const st_checkpoint *ck, vexperts *x, m2o_err *err)
{
    const char *proj = x->fc1 ? "gate_up_proj" : "down_proj";
    char name[256];
    const st_tensor *blocks = findf(ck, name, sizeof name, "%s.%s_blocks", x->prefix, proj);
    if (blocks) {
        int64_t sb[4] = {x->E, x->N, x->K / 32, 16}, ss[3] = {x->E, x->N, x->K / 32};
        x->kind = VSRC_MXFP4;
        x->t = blocks;
        x->scales = findf(ck, name, sizeof name, "%s.%s_scales", x->prefix, proj);
        if (!x->scales)
            return m2o_fail(err, "checkpoint has %s but not %s", blocks->name, name);
        if (x->K % 32 || blocks->dtype != ST_U8 || x->scales->dtype != ST_U8)
            return m2o_fail(err, "%s: MXFP4 blocks and scales must be U8 with K %lld a multiple "
                                 "of 32", blocks->name, (long long)x->K);
        snprintf(x->what, sizeof x->what, "%s", blocks->name);
        return expect_shape(blocks, 4, sb, err) || expect_shape(x->scales, 3, ss, err) ? -1 : 0;
    }
    x->t = findf(ck, name, sizeof name, "%s.%s", x->prefix, proj);
    if (!x->t)
        return m2o_fail(err, "checkpoint has neither %s.%s_blocks nor %s", x->prefix, proj, name);
    int64_t s[3] = {x->E, x->K, x->N};
    x->kind = VSRC_FUSED_KN;
    snprintf(x->what, sizeof x->what, "%s", x->t->name);
    return expect_shape(x->t, 3, s, err);
}

static int find_qwen(const st_checkpoint *ck, vexperts *x, m2o_err *err)
{
    const char *proj = x->fc1 ? "gate_up_proj" : "down_proj";
    char name[256];
    x->t = findf(ck, name, sizeof name, "%s.%s", x->prefix, proj);
    if (x->t) {
        int64_t s[3] = {x->E, x->N, x->K};
        x->kind = VSRC_FUSED_NK;
        snprintf(x->what, sizeof x->what, "%s", x->t->name);
        return expect_shape(x->t, 3, s, err);
    }
    x->kind = VSRC_PER_EXPERT;
    snprintf(x->what, sizeof x->what, "%s.{0..%lld}.%s.weight", x->prefix, (long long)x->E - 1,
             x->fc1 ? "{gate,up}_proj" : "down_proj");
    /* every expert's tensors must exist with the right shape: check them all up front */
    const char *parts[2] = {x->fc1 ? "gate_proj" : "down_proj", "up_proj"};
    int64_t rows = x->fc1 ? x->N / 2 : x->N;
    for (int64_t e = 0; e < x->E; e++) {
        for (int p = 0; p < (x->fc1 ? 2 : 1); p++) {
            snprintf(name, sizeof name, "%s.%lld.%s.weight", x->prefix, (long long)e, parts[p]);
            const st_tensor *t = ckpt_find(ck, name);
            int64_t s[2] = {rows, x->K};
            if (!t)
                return m2o_fail(err, "checkpoint has neither %s.%s nor %s", x->prefix, proj,
                                name);
            if (expect_shape(t, 2, s, err))
                return -1;
        }
    }
    return 0;
}

int vexperts_find(const st_checkpoint *ck, const model_desc *md, int layer, bool fc1,
                  vexperts *x, m2o_err *err)
{
    memset(x, 0, sizeof *x);
    int64_t H = md->hidden_size;
    int64_t I = md->moe_intermediate_size > 0 ? md->moe_intermediate_size : md->intermediate_size;
    x->ck = ck;
    x->fc1 = fc1;
    x->E = md->num_experts;
    x->N = fc1 ? 2 * I : H;
    x->K = fc1 ? H : I;
    snprintf(x->prefix, sizeof x->prefix, "%slayers.%d.mlp.experts", md->prefix, layer);
    if (md->family->verify_experts == EXPERT_NAMING_GPT_OSS)
        return find_gpt_oss(ck, x, err);
    return find_qwen(ck, x, err);
}

static int read_f32(const st_tensor *t, int64_t first, int64_t count, float *out, m2o_err *err)
{
    if (st_read_f32(t, first, count, out, err))
        return m2o_wrap(err, "verify: reading %s", t->name);
    return 0;
}

/* rows [gate(h); up(h)] → interleaved gate0, up0, gate1, up1, ... */
static void interleave(const float *halves, int64_t N, int64_t K, float *out)
{
    int64_t h = N / 2;
    for (int64_t i = 0; i < h; i++) {
        memcpy(out + 2 * i * K, halves + i * K, (size_t)K * sizeof(float));
        memcpy(out + (2 * i + 1) * K, halves + (h + i) * K, (size_t)K * sizeof(float));
    }
}

static const st_tensor *per_expert(const vexperts *x, int64_t e, const char *proj)
{
    char name[256];
    snprintf(name, sizeof name, "%s.%lld.%s.weight", x->prefix, (long long)e, proj);
    return ckpt_find(x->ck, name);
}

int vexperts_read(const vexperts *x, int64_t e, float *out, float *tmp, m2o_err *err)
{
    int64_t N = x->N, K = x->K, nk = N * K;
    switch (x->kind) {
    case VSRC_MXFP4: {
        const uint8_t *codes, *scales;
        vexperts_mxfp4(x, e, &codes, &scales);
        if (mxfp4_decode(codes, scales, N, K, out, err))
            return m2o_wrap(err, "verify: decoding %s expert %lld", x->what, (long long)e);
        return 0;
    }
    case VSRC_FUSED_KN:
        if (read_f32(x->t, e * nk, nk, tmp, err))
            return -1;
        transpose_f32(tmp, K, N, out);
        return 0;
    case VSRC_FUSED_NK:
        if (read_f32(x->t, e * nk, nk, x->fc1 ? tmp : out, err))
            return -1;
        if (x->fc1)
            interleave(tmp, N, K, out);
        return 0;
    case VSRC_PER_EXPERT: {
        if (!x->fc1) {
            const st_tensor *d = per_expert(x, e, "down_proj");
            return d ? read_f32(d, 0, nk, out, err)
                     : m2o_fail(err, "verify: %s expert %lld missing", x->what, (long long)e);
        }
        const st_tensor *g = per_expert(x, e, "gate_proj"), *u = per_expert(x, e, "up_proj");
        if (!g || !u)
            return m2o_fail(err, "verify: %s expert %lld missing", x->what, (long long)e);
        if (read_f32(g, 0, nk / 2, tmp, err) || read_f32(u, 0, nk / 2, tmp + nk / 2, err))
            return -1;
        interleave(tmp, N, K, out);
        return 0;
    }
    }
    return m2o_fail(err, "verify: unknown expert source kind");
}

void vexperts_mxfp4(const vexperts *x, int64_t e, const uint8_t **codes, const uint8_t **scales)
{
    int64_t nk = x->N * x->K;
    *codes = x->t->data + (size_t)(e * nk / 2);
    *scales = x->scales->data + (size_t)(e * nk / 32);
}

static void release_elems(const st_tensor *t, int64_t first, int64_t count)
{
    size_t es = st_dtype_size(t->dtype);
    st_release(t, (size_t)first * es, (size_t)count * es);
}

void vexperts_release(const vexperts *x, int64_t e)
{
    int64_t nk = x->N * x->K;
    switch (x->kind) {
    case VSRC_MXFP4:
        st_release(x->t, (size_t)(e * nk / 2), (size_t)(nk / 2));
        st_release(x->scales, (size_t)(e * nk / 32), (size_t)(nk / 32));
        break;
    case VSRC_FUSED_KN:
    case VSRC_FUSED_NK:
        release_elems(x->t, e * nk, nk);
        break;
    case VSRC_PER_EXPERT: {
        const char *p[3] = {"gate_proj", "up_proj", "down_proj"};
        for (int i = x->fc1 ? 0 : 2; i < (x->fc1 ? 2 : 3); i++) {
            const st_tensor *t = per_expert(x, e, p[i]);
            if (t)
                release_elems(t, 0, t->numel);
        }
        break;
    }
    }
}

int vlinear_read_rows(const vlinear *l, int64_t r0, int64_t nr, float *out, m2o_err *err)
{
    int64_t base = 0, K = l->K;
    for (int i = 0; i < l->n_parts && nr > 0; i++) {
        int64_t n_i = l->w[i]->shape[0];
        if (r0 < base + n_i) {
            int64_t lr = r0 - base, take = n_i - lr < nr ? n_i - lr : nr;
            if (read_f32(l->w[i], lr * K, take * K, out, err))
                return -1;
            release_elems(l->w[i], lr * K, take * K);
            out += take * K;
            r0 += take;
            nr -= take;
        }
        base += n_i;
    }
    if (nr > 0)
        return m2o_fail(err, "verify: rows beyond the %lld of %s", (long long)l->N,
                        l->w[0]->name);
    return 0;
}
