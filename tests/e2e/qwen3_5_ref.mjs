// Independent references for Qwen3.5-MoE, shared by the CPU e2e test (qwen3_5.test.mjs) and the
// CUDA suite (tests/cuda/suite.mjs): a float64 evaluation of the Gated DeltaNet layer and of the
// whole decoder (following transformers' modeling_qwen3_5_moe.py, with optional weight
// quantization exactly as ONNX Runtime's blockwise quantizer does it), the checkpoint layout
// variants the exporter accepts (vision-language nesting, fused experts, shards), and a random
// checkpoint with Qwen3.5-35B-A3B's attention widths.
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { encodeSafetensors } from './lib/safetensors.mjs';

// Deterministic inputs in [-2, 2).
export function lcg(seed) {
  let s = seed >>> 0;
  return () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return (s / 4294967296) * 4 - 2; };
}

// y [T, N] = x [T, K] · W^T, W [N, K] row-major.
export function linear(x, T, K, w, N) {
  const y = new Float64Array(T * N);
  for (let t = 0; t < T; t++)
    for (let n = 0; n < N; n++) {
      let acc = 0;
      for (let k = 0; k < K; k++) acc += x[t * K + k] * w[n * K + k];
      y[t * N + n] = acc;
    }
  return y;
}

export const sigmoid = (x) => 1 / (1 + Math.exp(-x));
export const softplus = (x) => (x > 20 ? x : Math.log1p(Math.exp(x)));

// transformers' Qwen3_5MoeGatedDeltaNet.forward for one sequence, continuing from `state`
// ({ conv: [C][K-1], rec: [nv][dk][dv] }, updated in place). Returns the [T, H] output.
export function gatedDeltaNet(cfg, W, x, T, state) {
  const H = cfg.hidden_size, nk = cfg.linear_num_key_heads, nv = cfg.linear_num_value_heads;
  const dk = cfg.linear_key_head_dim, dv = cfg.linear_value_head_dim, K = cfg.linear_conv_kernel_dim;
  const keyDim = nk * dk, valDim = nv * dv, C = 2 * keyDim + valDim, eps = cfg.rms_norm_eps;
  const qkv = linear(x, T, H, W.in_proj_qkv, C), z = linear(x, T, H, W.in_proj_z, valDim);
  const bl = linear(x, T, H, W.in_proj_b, nv), al = linear(x, T, H, W.in_proj_a, nv);
  // causal depthwise conv over [past state | new tokens], then SiLU
  const mixed = new Float64Array(T * C);
  for (let c = 0; c < C; c++) {
    const seq = [...state.conv[c]];
    for (let t = 0; t < T; t++) seq.push(qkv[t * C + c]);
    for (let t = 0; t < T; t++) {
      let acc = 0;
      for (let k = 0; k < K; k++) acc += W.conv[c * K + k] * seq[t + k];
      mixed[t * C + c] = acc * sigmoid(acc);
    }
    state.conv[c] = seq.slice(seq.length - (K - 1));
  }
  const out = new Float64Array(T * valDim);
  for (let t = 0; t < T; t++) {
    const row = mixed.subarray(t * C, (t + 1) * C);
    const head = (off, h) => {
      const v = Array.from(row.subarray(off + h * dk, off + (h + 1) * dk));
      const inv = 1 / Math.sqrt(v.reduce((a, e) => a + e * e, 0) + 1e-6);
      return v.map((e) => e * inv);
    };
    for (let h = 0; h < nv; h++) {
      const hk = Math.floor(h / (nv / nk)); // repeat_interleave: consecutive value heads share
      const q = head(0, hk).map((e) => e / Math.sqrt(dk)), k = head(keyDim, hk);
      const v = row.subarray(2 * keyDim + h * dv, 2 * keyDim + (h + 1) * dv);
      const beta = sigmoid(bl[t * nv + h]);
      const g = -Math.exp(W.A_log[h]) * softplus(al[t * nv + h] + W.dt_bias[h]);
      const S = state.rec[h], decay = Math.exp(g);
      for (let i = 0; i < dk; i++) for (let j = 0; j < dv; j++) S[i][j] *= decay;
      for (let j = 0; j < dv; j++) {
        let mem = 0;
        for (let i = 0; i < dk; i++) mem += S[i][j] * k[i];
        const delta = (v[j] - mem) * beta;
        for (let i = 0; i < dk; i++) S[i][j] += k[i] * delta;
      }
      const o = new Float64Array(dv);
      for (let j = 0; j < dv; j++) for (let i = 0; i < dk; i++) o[j] += S[i][j] * q[i];
      // gated RMSNorm: weight used as is, times silu(z)
      const ms = o.reduce((a, e) => a + e * e, 0) / dv, r = 1 / Math.sqrt(ms + eps);
      for (let j = 0; j < dv; j++) {
        const zz = z[t * valDim + h * dv + j];
        out[t * valDim + h * dv + j] = o[j] * r * W.norm[j] * zz * sigmoid(zz);
      }
    }
  }
  return linear(out, T, valDim, W.out_proj, H);
}

// docs/FORMATS.md §4 as ONNX Runtime does it: symmetric blockwise quantization (4 or 8 bits, blocks of 32)
// of an nn.Linear weight W [N, K], dequantized. axis 'k' (blocks along the input features of
// each output row) is what MatMulNBits and QMoE compute with; axis 'n' (blocks along the output
// features of each input column) is how the fixture's reference-int4*.safetensors quantized the
// experts (see part 2).
export function qdq(w, N, K, bits = 4, axis = 'k', bs = 32) {
  const out = new Float32Array(w.length), zp = bits === 4 ? 8 : 128, qmax = 2 * zp - 1;
  const [outer, inner, at] = axis === 'k' ? [N, K, (o, i) => o * K + i] : [K, N, (o, i) => i * K + o];
  for (let o = 0; o < outer; o++)
    for (let b = 0; b < inner; b += bs) {
      // ONNX Runtime's anchor: max if |max| > |min|, else min (a magnitude tie picks the negative)
      let lo = 0, hi = 0;
      for (let i = b; i < b + bs; i++) { lo = Math.min(lo, w[at(o, i)]); hi = Math.max(hi, w[at(o, i)]); }
      const anchor = Math.abs(hi) > Math.abs(lo) ? hi : lo;
      const scale = Math.fround(-anchor / zp), inv = scale ? Math.fround(1 / scale) : 0;
      for (let i = b; i < b + bs; i++) {
        const x = Math.fround(Math.fround(w[at(o, i)] * inv) + zp); // float32 like the C kernel
        const code = Math.min(qmax, Math.max(0, Math.sign(x) * Math.round(Math.abs(x)))); // roundf
        out[at(o, i)] = Math.fround((code - zp) * scale);
      }
    }
  return out;
}
export function quantizedLayer(W, cfg, bs = 32) {
  const H = cfg.hidden_size, vd = cfg.linear_num_value_heads * cfg.linear_value_head_dim;
  const C = 2 * cfg.linear_num_key_heads * cfg.linear_key_head_dim + vd;
  const q = (w, N, K) => qdq(w, N, K, 4, 'k', bs);
  // in_proj_a / in_proj_b stay float: they drive the decay and the update rate
  return { ...W, in_proj_qkv: q(W.in_proj_qkv, C, H), in_proj_z: q(W.in_proj_z, vd, H), out_proj: q(W.out_proj, H, vd) };
}

export function layerWeights(ck, L) {
  const get = (n) => {
    const t = ck[`model.layers.${L}.linear_attn.${n}`];
    if (!t) throw new Error(`fixture has no model.layers.${L}.linear_attn.${n}`);
    return t.data;
  };
  return {
    in_proj_qkv: get('in_proj_qkv.weight'), in_proj_z: get('in_proj_z.weight'),
    in_proj_b: get('in_proj_b.weight'), in_proj_a: get('in_proj_a.weight'),
    conv: get('conv1d.weight'), A_log: get('A_log'), dt_bias: get('dt_bias'),
    norm: get('norm.weight'), out_proj: get('out_proj.weight'),
  };
}

export function zeroState(cfg) {
  const C = 2 * cfg.linear_num_key_heads * cfg.linear_key_head_dim + cfg.linear_num_value_heads * cfg.linear_value_head_dim;
  return {
    conv: Array.from({ length: C }, () => new Array(cfg.linear_conv_kernel_dim - 1).fill(0)),
    rec: Array.from({ length: cfg.linear_num_value_heads }, () =>
      Array.from({ length: cfg.linear_key_head_dim }, () => new Float64Array(cfg.linear_value_head_dim))),
  };
}

// ---------------------------------------------------------------------------------------------
// A float64 evaluation of the whole Qwen3.5-MoE decoder, following modeling_qwen3_5_moe.py, with
// optional weight quantization (q.linear: 0 or 4 bits for every quantized linear layer, along K,
// blocks of q.block; q.experts: 0, 4 or 8 bits along q.axis, blocks of q.expertBlock). Used to check that the fixture's references are
// reproduced (fp32 to ~1e-6) and as the quantization-aware reference of the int4 exports.

export function rmsOffset(x, w, eps) { // Qwen3_5MoeRMSNorm: x / rms(x) * (1 + w)
  const ms = x.reduce((a, v) => a + v * v, 0) / x.length, r = 1 / Math.sqrt(ms + eps);
  return Float64Array.from(x, (v, i) => v * r * (1 + w[i]));
}

export function rowsMap(x, T, H, f) {
  const out = [];
  for (let t = 0; t < T; t++) out.push(f(x.subarray(t * H, (t + 1) * H), t));
  const n = out[0].length, y = new Float64Array(T * n);
  out.forEach((r, t) => y.set(r, t * n));
  return y;
}

export function fullAttention(cfg, ck, L, x, T, qw) {
  const H = cfg.hidden_size, nh = cfg.num_attention_heads, nkv = cfg.num_key_value_heads, hd = cfg.head_dim;
  const w = (n) => ck[`model.layers.${L}.self_attn.${n}`].data, eps = cfg.rms_norm_eps;
  const qp = linear(x, T, H, qw(w('q_proj.weight'), 2 * nh * hd, H), 2 * nh * hd);
  const kp = linear(x, T, H, qw(w('k_proj.weight'), nkv * hd, H), nkv * hd);
  const vp = linear(x, T, H, qw(w('v_proj.weight'), nkv * hd, H), nkv * hd);
  const rope = cfg.rope_parameters ?? {}, theta = rope.rope_theta ?? 10000;
  const rd = Math.floor(hd * (rope.partial_rotary_factor ?? cfg.partial_rotary_factor ?? 1)), half = rd / 2;
  const rot = (v, t) => { // rotate-half over the first rd dims, the rest passes
    const o = Float64Array.from(v);
    for (let i = 0; i < half; i++) {
      const f = Math.fround(t * Math.fround(1 / Math.pow(theta, (2 * i) / rd)));
      const c = Math.cos(f), s = Math.sin(f);
      o[i] = v[i] * c - v[i + half] * s;
      o[i + half] = v[i + half] * c + v[i] * s;
    }
    return o;
  };
  const Q = [], G = [], K = [], V = [];
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < nh; h++) {
      const base = t * 2 * nh * hd + h * 2 * hd; // per head: query then gate
      Q.push(rot(rmsOffset(Array.from(qp.subarray(base, base + hd)), w('q_norm.weight'), eps), t));
      G.push(qp.subarray(base + hd, base + 2 * hd));
    }
    for (let h = 0; h < nkv; h++) {
      K.push(rot(rmsOffset(Array.from(kp.subarray((t * nkv + h) * hd, (t * nkv + h + 1) * hd)), w('k_norm.weight'), eps), t));
      V.push(vp.subarray((t * nkv + h) * hd, (t * nkv + h + 1) * hd));
    }
  }
  const att = new Float64Array(T * nh * hd), scale = 1 / Math.sqrt(hd);
  for (let t = 0; t < T; t++)
    for (let h = 0; h < nh; h++) {
      const g = Math.floor(h / (nh / nkv)), q = Q[t * nh + h];
      const sc = [];
      for (let j = 0; j <= t; j++) { let a = 0; for (let i = 0; i < hd; i++) a += q[i] * K[j * nkv + g][i]; sc.push(a * scale); }
      const m = Math.max(...sc), e = sc.map((v) => Math.exp(v - m)), z = e.reduce((a, b) => a + b);
      for (let i = 0; i < hd; i++) {
        let o = 0;
        for (let j = 0; j <= t; j++) o += (e[j] / z) * V[j * nkv + g][i];
        att[(t * nh + h) * hd + i] = o * sigmoid(G[t * nh + h][i]);
      }
    }
  return linear(att, T, nh * hd, qw(w('o_proj.weight'), H, nh * hd), H);
}

export function moe(cfg, ck, L, x, T, q) {
  const H = cfg.hidden_size, E = cfg.num_experts, I = cfg.moe_intermediate_size, S = cfg.shared_expert_intermediate_size;
  const w = (n) => ck[`model.layers.${L}.mlp.${n}`].data;
  const lq = (m, N, K) => (q.linear ? qdq(m, N, K, q.linear, 'k', q.block ?? 32) : m);
  const eq = (m, N, K) => (q.experts ? qdq(m, N, K, q.experts, q.axis, q.expertBlock ?? 32) : m);
  const ex = Array.from({ length: E }, (_, e) => ({
    g: eq(w(`experts.${e}.gate_proj.weight`), I, H), u: eq(w(`experts.${e}.up_proj.weight`), I, H),
    d: eq(w(`experts.${e}.down_proj.weight`), H, I),
  }));
  const sg = lq(w('shared_expert.gate_proj.weight'), S, H), su = lq(w('shared_expert.up_proj.weight'), S, H);
  const sd = lq(w('shared_expert.down_proj.weight'), H, S);
  const swiglu = (xx, g, u, d, n) => {
    const a = linear(xx, 1, H, g, n), b = linear(xx, 1, H, u, n);
    return linear(a.map((v, i) => v * sigmoid(v) * b[i]), 1, n, d, H);
  };
  return rowsMap(x, T, H, (xx) => {
    const lg = linear(xx, 1, H, w('gate.weight'), E), m = Math.max(...lg);
    const p = Array.from(lg, (v) => Math.exp(v - m)), z = p.reduce((a, b) => a + b);
    const top = [...p.keys()].sort((a, b) => p[b] - p[a]).slice(0, cfg.num_experts_per_tok);
    const wsum = top.reduce((a, e) => a + p[e] / z, 0);
    const y = new Float64Array(H);
    for (const e of top) {
      const o = swiglu(xx, ex[e].g, ex[e].u, ex[e].d, I);
      for (let h = 0; h < H; h++) y[h] += (p[e] / z / wsum) * o[h];
    }
    const so = swiglu(xx, sg, su, sd, S), gate = sigmoid(linear(xx, 1, H, w('shared_expert_gate.weight'), 1)[0]);
    for (let h = 0; h < H; h++) y[h] += gate * so[h];
    return y;
  });
}

// Logits [T, V] of the whole model for ids.
export function forwardModel(cfg, ck, ids, q = { linear: 0, experts: 0, axis: 'k' }) {
  const H = cfg.hidden_size, V = cfg.vocab_size, T = ids.length, eps = cfg.rms_norm_eps;
  const emb = ck['model.embed_tokens.weight'].data;
  let hidden = new Float64Array(T * H);
  ids.forEach((id, t) => hidden.set(emb.subarray(id * H, (id + 1) * H), t * H));
  const qw = (m, N, K) => (q.linear ? qdq(m, N, K, q.linear, 'k', q.block ?? 32) : m);
  for (let L = 0; L < cfg.num_hidden_layers; L++) {
    const ln = (n) => ck[`model.layers.${L}.${n}.weight`].data;
    const x = rowsMap(hidden, T, H, (r) => rmsOffset(r, ln('input_layernorm'), eps));
    const mixed = cfg.layer_types[L] === 'linear_attention'
      ? gatedDeltaNet(cfg, q.linear ? quantizedLayer(layerWeights(ck, L), cfg, q.block ?? 32) : layerWeights(ck, L), x, T, zeroState(cfg))
      : fullAttention(cfg, ck, L, x, T, qw);
    hidden = hidden.map((v, i) => v + mixed[i]);
    const x2 = rowsMap(hidden, T, H, (r) => rmsOffset(r, ln('post_attention_layernorm'), eps));
    const m = moe(cfg, ck, L, x2, T, q);
    hidden = hidden.map((v, i) => v + m[i]);
  }
  const normed = rowsMap(hidden, T, H, (r) => rmsOffset(r, ck['model.norm.weight'].data, eps));
  return Float32Array.from(linear(normed, T, H, qw(ck['lm_head.weight'].data, V, H), V));
}

export function rawTensors(path) {
  const buf = readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const base = 8 + n, out = {};
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    out[name] = { dtype: t.dtype, shape: t.shape, bytes: buf.subarray(base + t.data_offsets[0], base + t.data_offsets[1]) };
  }
  return { tensors: out, metadata: header.__metadata__ };
}

// Per-expert gate/up/down tensors of every layer → fused [E, 2I, H] and [E, H, I] (raw bytes).
export function fuseExperts(tensors, cfg) {
  const out = { ...tensors }, E = cfg.num_experts, I = cfg.moe_intermediate_size, H = cfg.hidden_size;
  for (let L = 0; L < cfg.num_hidden_layers; L++) {
    const p = `model.layers.${L}.mlp.experts`, gu = [], dn = [];
    for (let e = 0; e < E; e++) {
      for (const w of ['gate', 'up', 'down']) {
        const name = `${p}.${e}.${w}_proj.weight`;
        (w === 'down' ? dn : gu).push(out[name].bytes);
        delete out[name];
      }
    }
    const dtype = tensors[`${p}.0.gate_proj.weight`].dtype;
    out[`${p}.gate_up_proj`] = { dtype, shape: [E, 2 * I, H], bytes: Buffer.concat(gu) };
    out[`${p}.down_proj`] = { dtype, shape: [E, H, I], bytes: Buffer.concat(dn) };
  }
  return out;
}

export function makeVariant(src, dir, cfg, { vl = false, fused = false, shards = 1 }) {
  mkdirSync(dir, { recursive: true });
  const { tensors, metadata } = rawTensors(join(src, 'model.safetensors'));
  let t = fused ? fuseExperts(tensors, cfg) : tensors;
  if (vl) {
    const renamed = {};
    for (const [name, v] of Object.entries(t))
      renamed[name.startsWith('model.') ? `model.language_model.${name.slice(6)}` : name] = v;
    // a stand-in vision tower: present in the checkpoint, ignored by the export
    renamed['model.visual.patch_embed.proj.weight'] = { dtype: 'F32', shape: [4, 3], bytes: new Uint8Array(48).fill(7) };
    t = renamed;
  }
  const names = Object.keys(t);
  if (shards === 1) {
    writeFileSync(join(dir, 'model.safetensors'), encodeSafetensors(t, metadata));
  } else {
    const weightMap = {};
    for (let i = 0; i < shards; i++) {
      const file = `model-${String(i + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
      const part = Object.fromEntries(names.filter((_, j) => j % shards === i).map((n) => [n, t[n]]));
      for (const n of Object.keys(part)) weightMap[n] = file;
      writeFileSync(join(dir, file), encodeSafetensors(part, metadata));
    }
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  }
  let config = cfg;
  if (vl) {
    const text = { ...cfg };
    for (const k of ['architectures', 'transformers_version', 'torch_dtype']) delete text[k];
    config = {
      architectures: ['Qwen3_5MoeForConditionalGeneration'], model_type: 'qwen3_5_moe',
      text_config: text, vision_config: { model_type: 'qwen3_5_moe_vision', depth: 1, hidden_size: 4 },
      image_token_id: 500, video_token_id: 501, tie_word_embeddings: cfg.tie_word_embeddings,
      transformers_version: cfg.transformers_version,
    };
  }
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  for (const f of ['generation_config.json', 'tokenizer.json', 'tokenizer_config.json'])
    if (existsSync(join(src, f))) copyFileSync(join(src, f), join(dir, f));
}

export const VARIANTS = [
  { name: 'vl', vl: true }, { name: 'fused', fused: true },
  { name: 'vl-fused-sharded', vl: true, fused: true, shards: 2 },
];

// The prompt the e2e test and the CUDA suite run it on.
export const BIG_IDS = [5, 77, 3, 200, 41, 9];

export const BIG = {
  model_type: 'qwen3_5_moe_text', architectures: ['Qwen3_5MoeForCausalLM'], vocab_size: 256,
  hidden_size: 2048, num_hidden_layers: 2, num_attention_heads: 16, num_key_value_heads: 2, head_dim: 256,
  rms_norm_eps: 1e-6, max_position_embeddings: 64, tie_word_embeddings: false, attention_bias: false,
  rope_parameters: { rope_theta: 10000000, partial_rotary_factor: 0.25, rope_type: 'default' },
  linear_conv_kernel_dim: 4, linear_key_head_dim: 128, linear_value_head_dim: 128,
  linear_num_key_heads: 16, linear_num_value_heads: 32, moe_intermediate_size: 128,
  shared_expert_intermediate_size: 128, num_experts_per_tok: 2, num_experts: 4,
  layer_types: ['linear_attention', 'full_attention'], eos_token_id: 2, pad_token_id: 0,
};

// BF16 tensors with deterministic values in ±amp around base; returns { bytes, data (float32) }.
export function bf16Tensor(n, rnd, amp, base = 0) {
  const bits = new Uint16Array(n), data = new Float32Array(n), f = new Float32Array(1), u = new Uint32Array(f.buffer);
  for (let i = 0; i < n; i++) {
    f[0] = base + amp * rnd() / 2;
    bits[i] = (u[0] + 0x7fff + ((u[0] >>> 16) & 1)) >>> 16; // round to nearest even
    u[0] = bits[i] << 16;
    data[i] = f[0];
  }
  return { bytes: new Uint8Array(bits.buffer), data };
}

export function makeBigCheckpoint(dir, c, tokenizerDir) {
  mkdirSync(dir, { recursive: true });
  const rnd = lcg(35), H = c.hidden_size, t = {}, ck = {};
  const add = (name, shape, amp, base = 0) => {
    const v = bf16Tensor(shape.reduce((a, b) => a * b), rnd, amp, base);
    t[name] = { dtype: 'BF16', shape, bytes: v.bytes };
    ck[name] = { data: v.data };
  };
  const lin = (name, n, k) => add(name, [n, k], 2 / Math.sqrt(k));
  const kd = c.linear_num_key_heads * c.linear_key_head_dim, vd = c.linear_num_value_heads * c.linear_value_head_dim;
  const nh = c.num_attention_heads, hd = c.head_dim, nkv = c.num_key_value_heads, nv = c.linear_num_value_heads;
  add('model.embed_tokens.weight', [c.vocab_size, H], 2);
  for (let L = 0; L < c.num_hidden_layers; L++) {
    const p = `model.layers.${L}.`;
    add(`${p}input_layernorm.weight`, [H], 0.2);
    add(`${p}post_attention_layernorm.weight`, [H], 0.2);
    if (c.layer_types[L] === 'linear_attention') {
      lin(`${p}linear_attn.in_proj_qkv.weight`, 2 * kd + vd, H);
      lin(`${p}linear_attn.in_proj_z.weight`, vd, H);
      lin(`${p}linear_attn.in_proj_b.weight`, nv, H);
      lin(`${p}linear_attn.in_proj_a.weight`, nv, H);
      add(`${p}linear_attn.conv1d.weight`, [2 * kd + vd, 1, c.linear_conv_kernel_dim], 1);
      add(`${p}linear_attn.A_log`, [nv], 2, 1);
      add(`${p}linear_attn.dt_bias`, [nv], 1, 1);
      add(`${p}linear_attn.norm.weight`, [c.linear_value_head_dim], 0.4, 1);
      lin(`${p}linear_attn.out_proj.weight`, H, vd);
    } else {
      lin(`${p}self_attn.q_proj.weight`, 2 * nh * hd, H);
      lin(`${p}self_attn.k_proj.weight`, nkv * hd, H);
      lin(`${p}self_attn.v_proj.weight`, nkv * hd, H);
      lin(`${p}self_attn.o_proj.weight`, H, nh * hd);
      add(`${p}self_attn.q_norm.weight`, [hd], 0.2);
      add(`${p}self_attn.k_norm.weight`, [hd], 0.2);
    }
    lin(`${p}mlp.gate.weight`, c.num_experts, H);
    for (let e = 0; e < c.num_experts; e++) {
      lin(`${p}mlp.experts.${e}.gate_proj.weight`, c.moe_intermediate_size, H);
      lin(`${p}mlp.experts.${e}.up_proj.weight`, c.moe_intermediate_size, H);
      lin(`${p}mlp.experts.${e}.down_proj.weight`, H, c.moe_intermediate_size);
    }
    lin(`${p}mlp.shared_expert.gate_proj.weight`, c.shared_expert_intermediate_size, H);
    lin(`${p}mlp.shared_expert.up_proj.weight`, c.shared_expert_intermediate_size, H);
    lin(`${p}mlp.shared_expert.down_proj.weight`, H, c.shared_expert_intermediate_size);
    lin(`${p}mlp.shared_expert_gate.weight`, 1, H);
  }
  add('model.norm.weight', [H], 0.2);
  lin('lm_head.weight', c.vocab_size, H);
  writeFileSync(join(dir, 'model.safetensors'), encodeSafetensors(t, { format: 'pt' }));
  writeFileSync(join(dir, 'config.json'), JSON.stringify(c, null, 2));
  copyFileSync(join(tokenizerDir, 'tokenizer.json'), join(dir, 'tokenizer.json'));
  return ck;
}

