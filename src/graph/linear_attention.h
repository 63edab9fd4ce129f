/* Gated DeltaNet linear-attention block (Qwen3-Next / Qwen3.5 "linear_attention" layers) on ONNX
 * Runtime's com.microsoft CausalConvWithState and LinearAttention (update_rule "gated_delta").
 *
 * The layer, as transformers computes it (modeling_qwen3_5_moe.py), for x [B, T, H]:
 *   qkv = causal depthwise conv1d(x W_qkv^T) over the channels [q | k | v], kernel K, SiLU
 *   q, k: [nk heads, dk] each, L2-normalised per head (x / sqrt(sum x^2 + 1e-6)), q scaled by
 *         1/sqrt(dk); value head h reads key/query head h / (nv / nk) (consecutive grouping)
 *   beta = sigmoid(x W_b^T), g = -exp(A_log) * softplus(x W_a^T + dt_bias)       [nv]
 *   per value head: S = exp(g) S;  S += k (beta (v - S^T k))^T;  o = S^T q      S: [dk, dv]
 *   o = RMSNorm_dv(o) * norm.weight * silu(x W_z^T)   (the weight is used as is, no +1 offset)
 *   out = o W_out^T
 *
 * Graph: the four projections run in the io dtype (in_proj_qkv, in_proj_z and out_proj are
 * MatMulNBits in int4 builds; in_proj_a and in_proj_b always stay float: they drive the decay and
 * the update rate of the recurrence). Everything between the projections runs in float32 —
 * the CPU kernels of both contrib ops are float-only and the CUDA LinearAttention has no bfloat16
 * — so the states are float32 on every provider, which also keeps the long-running recurrence
 * out of half precision:
 *   past_key_values.{i}.conv_state      [batch_size, 2 nk dk + nv dv, K - 1]  float32
 *   past_key_values.{i}.recurrent_state [batch_size, nv, dk, dv]              float32
 * and the matching present.{i}.conv_state / present.{i}.recurrent_state outputs (fixed sizes, so
 * a generation loop allocates them once and feeds each present back as the next past). A first
 * run takes zero states.
 *
 * The per-head L2 norm is SimplifiedLayerNormalization with epsilon 1e-6/dk and weight
 * 1/sqrt(dk): x / sqrt(mean x^2 + 1e-6/dk) / sqrt(dk) = x / sqrt(sum x^2 + 1e-6), exactly. The
 * query scale is LinearAttention's `scale` attribute (the output is linear in q). */
#ifndef M2O_GRAPH_LINEAR_ATTENTION_H
#define M2O_GRAPH_LINEAR_ATTENTION_H

#include "graph/builder.h"
#include "graph/weights.h"

typedef struct linear_attn_desc {
    int layer;
    int64_t num_k_heads, num_v_heads; /* nk, nv: nv a multiple of nk */
    int64_t head_k_dim, head_v_dim;   /* dk, dv */
    int64_t conv_kernel;              /* K >= 2 */
    float norm_eps;                   /* gated RMSNorm epsilon (config rms_norm_eps) */
    linear_src qkv;                   /* in_proj_qkv [2 nk dk + nv dv, H] */
    linear_src z;                     /* in_proj_z [nv dv, H] */
    linear_src b, a;                  /* in_proj_b, in_proj_a [nv, H]: never quantized */
    const st_tensor *conv_w;          /* conv1d.weight [conv_dim, 1, K] */
    const st_tensor *conv_b;          /* conv1d.bias [conv_dim] or NULL (Qwen: none) */
    const st_tensor *A_log, *dt_bias; /* [nv] */
    const st_tensor *norm_w;          /* norm.weight [dv] */
    linear_src out;                   /* out_proj [H, nv dv] */
} linear_attn_desc;

/* Channels of the causal conv: 2 nk dk + nv dv. */
int64_t linear_attn_conv_dim(const linear_attn_desc *d);

/* Checks the head counts and widths (config fields only). */
int linear_attn_check_dims(const linear_attn_desc *d, m2o_err *err);

/* Checks the description (head counts, tensor shapes), naming the tensor or config field. */
int linear_attn_check(const linear_attn_desc *d, int64_t hidden, m2o_err *err);

/* Adds the layer's state inputs/outputs and its nodes (under "/model/layers.{i}/linear_attn"),
 * from the normalised hidden states `input` [B, T, H] (io dtype) to *out [B, T, H] (io dtype). */
int gb_linear_attention(gb *b, const linear_attn_desc *d, const char *input, gname *out,
                        m2o_err *err);

#endif
