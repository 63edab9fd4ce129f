#include "graph/rope.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "weights/producer.h"

/* transformers: find_correction_dim (float64, like Python's math module) */
static double correction_dim(double num_rotations, int dim, double base, double max_pos)
{
    return (dim * log(max_pos / (num_rotations * 2.0 * M_PI))) / (2.0 * log(base));
}

/* Finite rotary parameters can still give Inf frequencies (a tiny rope factor): the caches
 * would hold NaN, so the config is refused rather than exported. */
static int rope_check_finite(const rope_params *rp, m2o_err *err)
{
    for (int i = 0; i < rp->rotary_dim / 2; i++)
        if (!isfinite(rp->inv_freq[i]))
            return m2o_fail(err, "config.json: the rope_scaling parameters give an infinite "
                                 "rotary frequency (dimension %d), so cos_cache/sin_cache would "
                                 "hold NaN; fix rope_scaling (factor)", 2 * i);
    if (!isfinite(rp->attention_factor))
        return m2o_fail(err, "config.json: the YaRN attention factor is not finite; fix "
                             "rope_scaling");
    return 0;
}

/* YaRN's blend of interpolated and extrapolated frequencies (transformers'
 * _compute_yarn_parameters): the scalars computed with Python floats stay in double until they
 * meet a tensor, the tensor steps are float32. */
static int yarn_inv_freq(const model_desc *md, int dim, const float *pos_freqs, rope_params *rp,
                         m2o_err *err)
{
    double factor = md->rope_factor;
    if (!(factor > 0))
        return m2o_fail(err, "config.json: yarn rope_scaling factor %g must be positive", factor);
    double orig = md->rope_original_max_position > 0 ? md->rope_original_max_position
                                                     : md->max_position_embeddings;
    double attn = md->yarn_attention_factor;
    if (!(attn > 0))
        attn = factor <= 1 ? 1.0 : 0.1 * log(factor) + 1.0;
    rp->attention_factor = (float)attn;
    double beta_fast = md->yarn_beta_fast > 0 ? md->yarn_beta_fast : 32;
    double beta_slow = md->yarn_beta_slow > 0 ? md->yarn_beta_slow : 1;

    double low = correction_dim(beta_fast, dim, md->rope_theta, orig);
    double high = correction_dim(beta_slow, dim, md->rope_theta, orig);
    if (md->yarn_truncate) {
        low = floor(low);
        high = ceil(high);
    }
    if (low < 0)
        low = 0;
    if (high > dim - 1)
        high = dim - 1;
    if (low == high)
        high += 0.001; /* transformers: prevent singularity */
    float lo_f = (float)low, span_f = (float)(high - low), factor_f = (float)factor;
    for (int i = 0; i < dim / 2; i++) {
        float ramp = ((float)i - lo_f) / span_f;
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        float extra_factor = 1.0f - ramp;
        float extrapolation = 1.0f / pos_freqs[i];
        float interpolation = 1.0f / (factor_f * pos_freqs[i]);
        rp->inv_freq[i] = interpolation * (1.0f - extra_factor) + extrapolation * extra_factor;
    }
    return rope_check_finite(rp, err);
}

/* Every step below mirrors transformers' tensor arithmetic in float32. */
int rope_compute(const model_desc *md, rope_params *rp, m2o_err *err)
{
    memset(rp, 0, sizeof *rp);
    double prf = md->partial_rotary_factor > 0 ? md->partial_rotary_factor : 1.0;
    int dim = (int)(md->head_dim * prf);
    if (dim < 2 || dim % 2 || dim / 2 > ROPE_MAX_HALF)
        return m2o_fail(err, "config.json: rotary dimension %d (head_dim %d x "
                             "partial_rotary_factor %g) must be even and in 2..%d",
                        dim, md->head_dim, prf, 2 * ROPE_MAX_HALF);
    if (!(md->rope_theta > 0))
        return m2o_fail(err, "config.json: rope_theta %g must be positive", md->rope_theta);
    int half = dim / 2;
    rp->rotary_dim = dim;
    rp->attention_factor = 1.0f;

    float pos_freqs[ROPE_MAX_HALF];
    for (int i = 0; i < half; i++) {
        float expo = (float)(2 * i) / (float)dim;
        pos_freqs[i] = (float)pow(md->rope_theta, (double)expo);
        rp->inv_freq[i] = 1.0f / pos_freqs[i];
    }
    if (md->rope_type == ROPE_LINEAR) {
        if (!(md->rope_factor > 0))
            return m2o_fail(err, "config.json: linear rope_scaling factor %g must be positive",
                            md->rope_factor);
        for (int i = 0; i < half; i++)
            rp->inv_freq[i] = rp->inv_freq[i] / (float)md->rope_factor;
        return rope_check_finite(rp, err);
    }
    return md->rope_type == ROPE_YARN ? yarn_inv_freq(md, dim, pos_freqs, rp, err) : 0;
}

void rope_cache_rows(const rope_params *rp, int64_t p0, int64_t n, float *cos_out, float *sin_out)
{
    int half = rp->rotary_dim / 2;
    for (int64_t r = 0; r < n; r++) {
        float t = (float)(p0 + r);
        for (int i = 0; i < half; i++) {
            float f = t * rp->inv_freq[i];
            cos_out[r * half + i] = (float)cos((double)f) * rp->attention_factor;
            sin_out[r * half + i] = (float)sin((double)f) * rp->attention_factor;
        }
    }
}

int gb_rotary_caches(gb *b, m2o_err *err)
{
    rope_params rp;
    if (rope_compute(b->md, &rp, err))
        return -1;
    int64_t len = b->md->context_length;
    if (len < b->md->max_position_embeddings)
        len = b->md->max_position_embeddings;
    if (len < 1)
        return m2o_fail(err, "config.json: max_position_embeddings %d must be positive",
                        b->md->max_position_embeddings);
    int64_t dims[2] = {len, rp.rotary_dim / 2};
    for (int s = 0; s < 2; s++) {
        wt_producer p;
        if (wt_rope_cache(&rp, len, b->io, s, &p, err))
            return -1;
        graph_add_streamed_initializer(b->g, s ? "sin_cache" : "cos_cache", b->io, 2, dims,
                                       p.n_chunks, p.chunk_bytes[0], p.one, p.ctx, p.free_ctx);
    }
    b->cos_cache = gname_fmt("cos_cache");
    b->sin_cache = gname_fmt("sin_cache");
    return 0;
}
