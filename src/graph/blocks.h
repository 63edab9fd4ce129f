/* Decoder building blocks shared by every architecture. An architecture file (arch/, one file each) looks
 * up its checkpoint tensors, fills the small descriptors below and chains the blocks; the
 * blocks emit the nodes and initializers with onnxruntime-genai's names and conventions.
 *
 * Every block takes the name of its input value and returns the name of its output value. */
#ifndef M2O_GRAPH_BLOCKS_H
#define M2O_GRAPH_BLOCKS_H

#include <stdbool.h>

#include "graph/builder.h"
#include "graph/experts.h"
#include "graph/weights.h"

/* ---- graph interface (mask.c) ---- */

/* Inputs input_ids, attention_mask and past_key_values.{i}.key/.value [batch, kv_heads,
 * past_sequence_length, head_dim] for every layer with kv_layer[i] (NULL = all layers);
 * outputs logits (float32) and present.{i}.key/.value. */
void gb_decoder_io(gb *b, const bool *kv_layer);

/* seqlens_k = ReduceSum(attention_mask, 1) - 1 (int32), total_sequence_length =
 * Shape(attention_mask)[1] (int32), stored in b->seqlens_k / b->total_seq_len. */
void gb_attention_mask(gb *b);

/* ---- norms, embedding, linear layers (norm.c, linear.c) ---- */

/* Gather from the embedding table (io dtype, streamed); returns the hidden states. */
int gb_embedding(gb *b, const st_tensor *table, gname *out, m2o_err *err);

/* SimplifiedLayerNormalization (RMSNorm) with weight w (+ offset, for norms stored as w - 1). */
int gb_rmsnorm(gb *b, const char *node, const char *weight_name, const st_tensor *w,
               float offset, const char *input, gname *out, m2o_err *err);

/* SkipSimplifiedLayerNormalization: out = RMSNorm(input + skip); *residual (optional) receives
 * input + skip (output 3), the next residual stream. */
int gb_skip_rmsnorm(gb *b, const char *node, const char *weight_name, const st_tensor *w,
                    float offset, const char *input, const char *skip, gname *out,
                    gname *residual, m2o_err *err);

/* y = x W^T (+ bias). role and layer (graph/quant_resolve.h: "attn.qkv", "mlp.down", "router",
 * ...) decide through quant_resolve: MatMulNBits (4 or 8 bits, the resolved block size, accuracy
 * level and method, zero points where the method writes them), else a MatMul with the io-dtype
 * weight [K, N]. Names: node "{base}/MatMul" (or "{base}/MatMul_Q{bits}"), "{base}/Add";
 * initializers "{init}.MatMul.weight" (or the MatMulNBits ones, linear.c), "{init}.Add.bias".
 * base "/model/layers.0/attn/o_proj", init "model.layers.0.attn.o_proj". */
int gb_linear(gb *b, const char *base, const char *init, const linear_src *s, const char *role,
              int layer, const char *input, gname *out, m2o_err *err);

/* Final projection to the graph output "logits" (float32: cast when the io dtype is not);
 * quantized as quant_resolve says for role "lm_head". */
int gb_lm_head(gb *b, const linear_src *s, const char *input, m2o_err *err);

/* ---- attention (attention.c) ---- */

typedef struct attn_desc {
    int layer;
    linear_src qkv;         /* q, k, v projections stacked: packed QKV MatMul */
    linear_src o;
    const st_tensor *sinks; /* [num_heads] attention sink logits (gpt-oss), or NULL */
    /* Per-head RMSNorm weights [head_dim] applied to q and k before rotary (Qwen3), or NULL.
     * With them, q/k/v are three MatMuls and GQA takes separate query/key/value. */
    const st_tensor *q_norm, *k_norm;
    float qk_norm_offset;   /* added to the q_norm/k_norm weights (Qwen3.5 stores them as w - 1) */
    bool q_gate;            /* Qwen3.5 gated attention: q_proj gives, per head, head_dim query
                               rows then head_dim output-gate rows; the attention output is
                               multiplied by sigmoid(gate) before o_proj */
    int window;             /* sliding window in transformers' sense (a query sees itself and the
                               window - 1 keys before it); 0 = full attention */
} attn_desc;

/* Packed QKV (+bias) → GroupQueryAttention (rotary inside, caches from gb_rotary_caches) →
 * o_proj. With q_gate the q projection is viewed as [.., heads, 2 head_dim] and split into query
 * and gate (q/k/v are then three MatMuls, as with q/k norms); GQA's output is multiplied by
 * Sigmoid(gate). Rotary covers the first 2 x cos_cache-width dims of each head (partial rotary:
 * GQA rotates those, rotate-half, and passes the rest). Needs gb_attention_mask and
 * gb_rotary_caches first. */
int gb_attention(gb *b, const attn_desc *a, const char *input, gname *out, m2o_err *err);

/* GQA's local_window_size for a transformers sliding window (ONNX Runtime counts the keys
 * before the query; transformers counts the query too). */
int gqa_local_window_size(int window);

/* ---- MLPs (mlp.c) ---- */

/* Dense SwiGLU MLP: down(silu(gate(x)) * up(x)). Nodes under base ("/model/layers.0/mlp"),
 * initializers under init ("model.layers.0.mlp"): {base}/gate_proj, up_proj, down_proj.
 * role_family "mlp" or "shared_expert" (roles "{family}.gate/up/down" of layer). */
int gb_mlp_swiglu(gb *b, const char *base, const char *init, const linear_src *gate,
                  const linear_src *up, const linear_src *down, const char *role_family,
                  int layer, const char *input, gname *out, m2o_err *err);

/* Shared expert beside the routed experts (Qwen2-MoE, Qwen3.5-MoE):
 * out = moe_out + sigmoid(x Wg^T) * mlp(x), with gate [1, H] (never quantized) and the MLP under
 * "/model/layers.{i}/shared_expert". */
int gb_shared_expert(gb *b, int layer, const st_tensor *gate_w, const linear_src *gate,
                     const linear_src *up, const linear_src *down, const char *input,
                     const char *moe_out, gname *out, m2o_err *err);

/* ---- mixture of experts (moe.c) ---- */

typedef struct moe_desc {
    int layer;
    int64_t num_experts, top_k, hidden, inter;
    linear_src router;        /* [E, H] (+ bias); never quantized */
    const expert_src *fc1;    /* [2I, H] per expert, gate/up interleaved */
    const expert_src *fc2;    /* [H, I] per expert */
    const st_tensor *fc1_bias, *fc2_bias; /* [E, 2I], [E, H] or NULL */
    float swiglu_limit;       /* 0 = no clamp */
    float alpha, beta;        /* SwiGLU: G*sigmoid(alpha*G)*(L + beta) */
    bool normalize_routing;   /* softmax over the top-k logits only */
    bool router_weights;      /* pass Softmax(logits) over all experts as router_weights
                                 (norm_topk_prob=false) */
} moe_desc;

/* Router MatMul (+Add) → Reshape [-1, E] → MoE (float precisions) or QMoE (int4 precision, the
 * expert encoding of opts: int4/int8 raw or CUTLASS prepacked, or mxfp4). */
int gb_moe(gb *b, const moe_desc *m, const char *input, gname *out, m2o_err *err);

/* ---- the decoder skeleton (decoder.c) ---- */

/* Builds layer L: reads *hidden (and *residual, the skip input of its first norm), leaves the
 * layer's output and residual there. */
typedef int (*gb_layer_fn)(gb *b, int L, gname *hidden, gname *residual, m2o_err *err);

/* embed_tokens → build_layer for every layer → final RMSNorm (weight + norm_offset) → lm_head,
 * after the graph interface (past/present for layers with kv_layer[i], NULL = all), the
 * attention-mask subgraph and the rotary caches. */
int gb_decoder(gb *b, const bool *kv_layer, float norm_offset, gb_layer_fn build_layer, m2o_err *err);

#endif
