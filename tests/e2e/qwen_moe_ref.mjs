// An independent float forward pass of Qwen3-MoE / Qwen2-MoE (transformers' modeling_qwen3_moe.py
// and modeling_qwen2_moe.py, written out from their math, float64 accumulation over float32
// weights), for checkpoints that have no transformers reference: the fused-expert and dense-layer
// variants. It is itself checked against the fixtures' transformers references (per-layer hidden
// states and logits), float and quantization-aware, before any variant is judged with it.
//
// Optional quantization-aware mode: linear layers and experts pass through ONNX Runtime's
// symmetric blockwise quantizer and back (docs/FORMATS.md §4, float32 scales), as the fixtures'
// reference-int4*.safetensors files were made: they reproduce them to ~1e-6. One fact measured
// on those files: a block whose largest |value| occurs with both signs takes the NEGATIVE one as
// anchor (|max| > |min| ? max : min, as ONNX Runtime's quantizer and quant/blockwise.c do — not
// "the first one"). Experts are blocked along their input features K, as QMoE holds them.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { readSafetensors } from './lib/safetensors.mjs';

const f32 = Math.fround;

// ---- docs/FORMATS.md §4: blockwise quantize → dequantize of W [N, K] (blocks along K) ----
export function roundHalfAway(x) {
  return x < 0 ? -Math.floor(-x + 0.5) : Math.floor(x + 0.5);
}
export function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// MLAS asymmetric (§4 steps 3-5): range widened to include 0, scale (max - min) / qmax, zero
// point round(-min / scale) clamped, codes round(v / scale + zp) clamped; float32 steps.
export function qdqAsym(w, N, K, bits, bs) {
  const out = new Float32Array(w.length), qmax = (1 << bits) - 1;
  for (let o = 0; o < N * K; o += bs) {
    let vmin = 0, vmax = 0;
    for (let j = 0; j < bs; j++) { vmin = Math.min(vmin, w[o + j]); vmax = Math.max(vmax, w[o + j]); }
    const scale = f32(f32(vmax - vmin) / qmax);
    const z = scale === 0 ? vmin : f32(0 - f32(vmin / scale));
    const zp = z < 0 ? 0 : z > qmax ? qmax : roundHalfAway(z);
    const inv = scale !== 0 ? f32(1 / scale) : 0;
    for (let j = 0; j < bs; j++) {
      const q = Math.min(qmax, Math.max(0, roundHalfAway(f32(f32(w[o + j] * inv) + zp))));
      out[o + j] = f32((q - zp) * scale);
    }
  }
  return out;
}

// Symmetric with signed scales (§4 steps 1-2), the default.

export function qdqRows(w, N, K, bits, bs) {
  const out = new Float32Array(w.length);
  const zp = bits === 4 ? 8 : 128, qmax = bits === 4 ? 15 : 255, div = bits === 4 ? -8 : -128;
  for (let n = 0; n < N; n++) {
    for (let k0 = 0; k0 < K; k0 += bs) {
      const o = n * K + k0;
      let vmin = Infinity, vmax = -Infinity;
      for (let j = 0; j < bs; j++) {
        vmin = Math.min(vmin, w[o + j]);
        vmax = Math.max(vmax, w[o + j]);
      }
      const anchor = Math.abs(vmax) > Math.abs(vmin) ? vmax : vmin;
      const scale = f32(anchor / div);
      const inv = scale !== 0 ? f32(1 / scale) : 0;
      for (let j = 0; j < bs; j++) {
        const q = Math.min(qmax, Math.max(0, roundHalfAway(f32(f32(w[o + j] * inv) + zp))));
        out[o + j] = f32((q - zp) * scale);
      }
    }
  }
  return out;
}

export function qwenConfig(cfg) {
  const c = {
    type: cfg.model_type, H: cfg.hidden_size, layers: cfg.num_hidden_layers,
    nh: cfg.num_attention_heads, nkv: cfg.num_key_value_heads, V: cfg.vocab_size,
    eps: cfg.rms_norm_eps ?? 1e-6, theta: cfg.rope_theta ?? cfg.rope_parameters?.rope_theta ?? 10000,
    E: cfg.num_experts ?? cfg.num_local_experts, topk: cfg.num_experts_per_tok,
    normTopk: cfg.norm_topk_prob ?? false, I: cfg.moe_intermediate_size, dense: cfg.intermediate_size,
    shared: cfg.model_type === 'qwen2_moe' ? cfg.shared_expert_intermediate_size : 0,
    qkNorm: cfg.model_type === 'qwen3_moe',
    qkvBias: cfg.model_type === 'qwen2_moe' ? (cfg.qkv_bias ?? true) : !!cfg.attention_bias,
    oBias: cfg.model_type === 'qwen3_moe' && !!cfg.attention_bias,
    tie: !!cfg.tie_word_embeddings,
  };
  c.hd = cfg.head_dim ?? c.H / c.nh;
  const step = cfg.decoder_sparse_step ?? 1, only = cfg.mlp_only_layers ?? [];
  c.sparse = Array.from({ length: c.layers }, (_, i) => !only.includes(i) && c.E > 0 && (i + 1) % step === 0);
  return c;
}

// ---- weights: per-expert or fused layouts, both read as per-expert [N, K] rows ----
function weightSource(tensors, c) {
  const get = (name) => {
    const t = tensors[name];
    if (!t) throw new Error(`reference forward: tensor ${name} missing`);
    return t.data;
  };
  const has = (name) => name in tensors;
  const expert = (L, e, proj) => {
    const p = `model.layers.${L}.mlp.experts`;
    if (has(`${p}.${e}.${proj}_proj.weight`)) return get(`${p}.${e}.${proj}_proj.weight`);
    const I = c.I, H = c.H;
    if (proj === 'down') return get(`${p}.down_proj`).subarray(e * H * I, (e + 1) * H * I);
    const gu = get(`${p}.gate_up_proj`).subarray(e * 2 * I * H, (e + 1) * 2 * I * H);
    return proj === 'gate' ? gu.subarray(0, I * H) : gu.subarray(I * H);
  };
  return { get, has, expert };
}

// ---- math helpers (float64 accumulation) ----
function linear(x, T, K, w, N, bias) { // x [T, K], w [N, K] → [T, N]
  const y = new Float64Array(T * N);
  for (let t = 0; t < T; t++)
    for (let n = 0; n < N; n++) {
      let s = bias ? bias[n] : 0;
      const xo = t * K, wo = n * K;
      for (let k = 0; k < K; k++) s += x[xo + k] * w[wo + k];
      y[t * N + n] = s;
    }
  return y;
}

function rmsnorm(x, rows, D, w, eps) {
  const y = new Float64Array(rows * D);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let d = 0; d < D; d++) ss += x[r * D + d] ** 2;
    const inv = 1 / Math.sqrt(ss / D + eps);
    for (let d = 0; d < D; d++) y[r * D + d] = w[d] * x[r * D + d] * inv;
  }
  return y;
}

const silu = (v) => v / (1 + Math.exp(-v));

function swigluMlp(x, T, H, gate, up, down, I) {
  const g = linear(x, T, H, gate, I), u = linear(x, T, H, up, I);
  for (let i = 0; i < g.length; i++) g[i] = silu(g[i]) * u[i];
  return linear(g, T, I, down, H);
}

function rope(x, T, heads, hd, theta) { // in place, rotate-half, positions 0..T-1
  const half = hd / 2;
  for (let t = 0; t < T; t++)
    for (let i = 0; i < half; i++) {
      const invFreq = f32(1 / f32(theta ** f32((2 * i) / hd)));
      const a = f32(t * invFreq), cs = Math.cos(a), sn = Math.sin(a);
      for (let h = 0; h < heads; h++) {
        const o = (t * heads + h) * hd;
        const x1 = x[o + i], x2 = x[o + half + i];
        x[o + i] = x1 * cs - x2 * sn;
        x[o + half + i] = x2 * cs + x1 * sn;
      }
    }
}

function attention(x, T, c, W, L, q4) {
  const { H, nh, nkv, hd } = c, p = `model.layers.${L}.self_attn`;
  const b = (n) => (c.qkvBias ? W.get(`${p}.${n}_proj.bias`) : null);
  const q = linear(x, T, H, q4(W.get(`${p}.q_proj.weight`), nh * hd, H), nh * hd, b('q'));
  const k = linear(x, T, H, q4(W.get(`${p}.k_proj.weight`), nkv * hd, H), nkv * hd, b('k'));
  const v = linear(x, T, H, q4(W.get(`${p}.v_proj.weight`), nkv * hd, H), nkv * hd, b('v'));
  let qq = q, kk = k;
  if (c.qkNorm) {
    qq = rmsnorm(q, T * nh, hd, W.get(`${p}.q_norm.weight`), c.eps);
    kk = rmsnorm(k, T * nkv, hd, W.get(`${p}.k_norm.weight`), c.eps);
  }
  rope(qq, T, nh, hd, c.theta);
  rope(kk, T, nkv, hd, c.theta);
  const out = new Float64Array(T * nh * hd), group = nh / nkv, scale = 1 / Math.sqrt(hd);
  for (let h = 0; h < nh; h++) {
    const kh = Math.floor(h / group);
    for (let t = 0; t < T; t++) {
      const s = new Float64Array(t + 1);
      let mx = -Infinity;
      for (let j = 0; j <= t; j++) {
        let d = 0;
        for (let i = 0; i < hd; i++) d += qq[(t * nh + h) * hd + i] * kk[(j * nkv + kh) * hd + i];
        s[j] = d * scale;
        mx = Math.max(mx, s[j]);
      }
      let z = 0;
      for (let j = 0; j <= t; j++) z += (s[j] = Math.exp(s[j] - mx));
      for (let j = 0; j <= t; j++)
        for (let i = 0; i < hd; i++) out[(t * nh + h) * hd + i] += (s[j] / z) * v[(j * nkv + kh) * hd + i];
    }
  }
  const ob = c.oBias ? W.get(`${p}.o_proj.bias`) : null;
  return linear(out, T, nh * hd, q4(W.get(`${p}.o_proj.weight`), H, nh * hd), H, ob);
}

function sparseMoe(x, T, c, W, L, q4, qe) {
  const { H, E, I, topk } = c, p = `model.layers.${L}.mlp`;
  const logits = linear(x, T, H, W.get(`${p}.gate.weight`), E);
  const out = new Float64Array(T * H);
  const experts = [];
  for (let e = 0; e < E; e++)
    experts.push([qe(W.expert(L, e, 'gate'), I, H), qe(W.expert(L, e, 'up'), I, H), qe(W.expert(L, e, 'down'), H, I)]);
  for (let t = 0; t < T; t++) {
    const row = Array.from(logits.subarray(t * E, (t + 1) * E));
    const mx = Math.max(...row), ex = row.map((v) => Math.exp(v - mx)), z = ex.reduce((a, b) => a + b, 0);
    const prob = ex.map((v) => v / z);
    const order = prob.map((v, e) => [v, e]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, topk);
    const sum = order.reduce((a, [v]) => a + v, 0);
    const xt = x.subarray(t * H, (t + 1) * H);
    for (const [v, e] of order) {
      const wgt = c.normTopk ? v / sum : v;
      const y = swigluMlp(xt, 1, H, experts[e][0], experts[e][1], experts[e][2], I);
      for (let h = 0; h < H; h++) out[t * H + h] += wgt * y[h];
    }
  }
  if (c.shared) {
    const s = c.shared, sp = `${p}.shared_expert`;
    const y = swigluMlp(x, T, H, q4(W.get(`${sp}.gate_proj.weight`), s, H), q4(W.get(`${sp}.up_proj.weight`), s, H),
                        q4(W.get(`${sp}.down_proj.weight`), H, s), s);
    const g = linear(x, T, H, W.get(`${p}.shared_expert_gate.weight`), 1);
    for (let t = 0; t < T; t++) {
      const sg = 1 / (1 + Math.exp(-g[t]));
      for (let h = 0; h < H; h++) out[t * H + h] += sg * y[t * H + h];
    }
  }
  return out;
}

// Forward over ids (one prompt). quant: null (float), or
// { linearBits: 4, expertBits: 4|8, block: 32 (linear layers), expertBlock: 32|64|128 (default block) },
// or with expertQdq: (w [N, K], N, K) → the experts' decoded weights (another expert encoding), and
// linearQdq: (w, N, K) → the linear layers' decoded weights (another MatMul encoding).
// Returns { logits: Float64Array [T, V], hidden: [Float64Array [T, H]] per layer boundary }.
export function qwenMoeForward(tensors, cfgJson, ids, quant = null) {
  const c = qwenConfig(cfgJson), W = weightSource(tensors, c), T = ids.length, H = c.H;
  const q4 = !quant ? (w) => w : quant.linearQdq ?? ((w, N, K) => qdqRows(w, N, K, quant.linearBits, quant.block));
  const qe = !quant ? (w) => w
    : quant.expertQdq ?? ((w, N, K) => qdqRows(w, N, K, quant.expertBits, quant.expertBlock ?? quant.block));
  const emb = W.get('model.embed_tokens.weight');
  let h = new Float64Array(T * H);
  for (let t = 0; t < T; t++) for (let d = 0; d < H; d++) h[t * H + d] = emb[ids[t] * H + d];
  const hidden = [h.slice()];
  for (let L = 0; L < c.layers; L++) {
    const p = `model.layers.${L}`;
    const a = attention(rmsnorm(h, T, H, W.get(`${p}.input_layernorm.weight`), c.eps), T, c, W, L, q4);
    for (let i = 0; i < h.length; i++) h[i] += a[i];
    const x = rmsnorm(h, T, H, W.get(`${p}.post_attention_layernorm.weight`), c.eps);
    const m = c.sparse[L]
      ? sparseMoe(x, T, c, W, L, q4, qe)
      : swigluMlp(x, T, H, q4(W.get(`${p}.mlp.gate_proj.weight`), c.dense, H),
                  q4(W.get(`${p}.mlp.up_proj.weight`), c.dense, H), q4(W.get(`${p}.mlp.down_proj.weight`), H, c.dense), c.dense);
    for (let i = 0; i < h.length; i++) h[i] += m[i];
    hidden.push(h.slice());
  }
  const normed = rmsnorm(h, T, H, W.get('model.norm.weight'), c.eps);
  const head = c.tie ? emb : W.get('lm_head.weight');
  const logits = linear(normed, T, H, quant ? q4(head, c.V, H) : head, c.V);
  hidden[hidden.length - 1] = normed;
  return { logits, hidden };
}

// Convenience: a checkpoint folder (single model.safetensors) + config.
export function qwenMoeForwardDir(dir, ids, quant = null) {
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  return qwenMoeForward(readSafetensors(join(dir, 'model.safetensors')), cfg, ids, quant);
}
