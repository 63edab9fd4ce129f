// Qwen3.5-MoE end to end, in two parts.
//
// 1. One Gated DeltaNet layer alone: build/tests/test_qwen3_5_linear_attention writes the
//    fixture's layers 0 and 1 as single-layer graphs (float32 and float16 io); ONNX Runtime runs
//    them (CausalConvWithState + LinearAttention) and every output is compared with a float64
//    evaluation of transformers' formulas written out below, on the fixture's weights: a 9-token
//    prefill, and a 3-token prefill followed by one-token decode steps that feed the conv and
//    recurrent states back.
// 2. The whole fixture (3 linear-attention + 1 gated full-attention layer, shared expert) built
//    with the CLI and compared with its transformers references (SPEC §8).
//
// Every case prints its measured numbers.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';

import { tensorToF32 } from './lib/harness.mjs';
import { f32ArrayToF16, readSafetensors } from './lib/safetensors.mjs';

const FIXTURES = process.env.M2O_FIXTURES ?? 'tests/fixtures';
const BUILD = process.env.M2O_BUILD ?? 'build';
const FIXTURE = 'qwen3_5-moe-tiny';

let passed = 0, failed = 0;
function report(ok, name, lines) {
  if (ok) passed++; else failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}: ${lines[0]}`);
  for (const l of lines.slice(1)) console.log(`     ${l}`);
}

// ---------------------------------------------------------------------------------------------
// Part 1: the linear-attention layer against a float64 reference

// Deterministic inputs in [-2, 2).
function lcg(seed) {
  let s = seed >>> 0;
  return () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return (s / 4294967296) * 4 - 2; };
}

// y [T, N] = x [T, K] · W^T, W [N, K] row-major.
function linear(x, T, K, w, N) {
  const y = new Float64Array(T * N);
  for (let t = 0; t < T; t++)
    for (let n = 0; n < N; n++) {
      let acc = 0;
      for (let k = 0; k < K; k++) acc += x[t * K + k] * w[n * K + k];
      y[t * N + n] = acc;
    }
  return y;
}

const sigmoid = (x) => 1 / (1 + Math.exp(-x));
const softplus = (x) => (x > 20 ? x : Math.log1p(Math.exp(x)));

// transformers' Qwen3_5MoeGatedDeltaNet.forward for one sequence, continuing from `state`
// ({ conv: [C][K-1], rec: [nv][dk][dv] }, updated in place). Returns the [T, H] output.
function gatedDeltaNet(cfg, W, x, T, state) {
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

function layerWeights(ck, L) {
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

function zeroState(cfg) {
  const C = 2 * cfg.linear_num_key_heads * cfg.linear_key_head_dim + cfg.linear_num_value_heads * cfg.linear_value_head_dim;
  return {
    conv: Array.from({ length: C }, () => new Array(cfg.linear_conv_kernel_dim - 1).fill(0)),
    rec: Array.from({ length: cfg.linear_num_value_heads }, () =>
      Array.from({ length: cfg.linear_key_head_dim }, () => new Float64Array(cfg.linear_value_head_dim))),
  };
}

// Runs the single-layer model over x [T, H] in chunks (first `prefill` tokens, then one at a time).
async function runLayer(session, half, x, T, H, prefill, cfg) {
  const C = 2 * cfg.linear_num_key_heads * cfg.linear_key_head_dim + cfg.linear_num_value_heads * cfg.linear_value_head_dim;
  const L = session.inputNames.find((n) => n.endsWith('.conv_state')).split('.')[1];
  let conv = new ort.Tensor('float32', new Float32Array(C * (cfg.linear_conv_kernel_dim - 1)), [1, C, cfg.linear_conv_kernel_dim - 1]);
  const recDims = [1, cfg.linear_num_value_heads, cfg.linear_key_head_dim, cfg.linear_value_head_dim];
  let rec = new ort.Tensor('float32', new Float32Array(recDims.reduce((a, b) => a * b)), recDims);
  const y = new Float32Array(T * H);
  for (let p = 0; p < T;) {
    const n = p === 0 ? prefill : 1;
    const chunk = Float32Array.from(x.subarray(p * H, (p + n) * H));
    const hidden = half ? new ort.Tensor('float16', f32ArrayToF16(chunk), [1, n, H]) : new ort.Tensor('float32', chunk, [1, n, H]);
    const r = await session.run({
      hidden, [`past_key_values.${L}.conv_state`]: conv, [`past_key_values.${L}.recurrent_state`]: rec,
    });
    y.set(tensorToF32(r.output), p * H);
    conv = r[`present.${L}.conv_state`];
    rec = r[`present.${L}.recurrent_state`];
    p += n;
  }
  return y;
}

function maxRel(got, ref) {
  let d = 0, m = 0, finite = true;
  for (let i = 0; i < ref.length; i++) {
    if (!Number.isFinite(got[i])) finite = false;
    d = Math.max(d, Math.abs(got[i] - ref[i]));
    m = Math.max(m, Math.abs(ref[i]));
  }
  return { ratio: finite ? d / m : Infinity, d, m };
}

async function partOne(work, cfg, ck) {
  try {
    execFileSync(join(BUILD, 'tests', 'test_qwen3_5_linear_attention'), ['write_ort_models'],
      { env: { ...process.env, M2O_ORT_DIR: work }, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    report(false, 'single-layer models', [`${BUILD}/tests/test_qwen3_5_linear_attention failed: ${String(e.stdout ?? e.message).trim()}`]);
    return;
  }
  const H = cfg.hidden_size, T = 9;
  for (const L of [0, 1]) {
    const W = layerWeights(ck, L);
    const rnd = lcg(1000 + L);
    // float16-representable inputs, so both models see the same values
    const x = f32ArrayToF16(Float32Array.from({ length: T * H }, rnd));
    const xf = Float32Array.from(x, (h) => {
      const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, f = h & 1023;
      return s * (e ? Math.pow(2, e - 15) * (1 + f / 1024) : Math.pow(2, -14) * (f / 1024));
    });
    const ref = gatedDeltaNet(cfg, W, xf, T, zeroState(cfg));
    for (const [half, floor] of [[false, 2e-5], [true, 2e-2]]) {
      const name = `layer ${L} linear attention ${half ? 'fp16' : 'fp32'}`;
      const session = await ort.InferenceSession.create(join(work, `la${L}_${half ? 'fp16' : 'fp32'}`, 'model.onnx'),
        { executionProviders: ['cpu'], intraOpNumThreads: 1, logSeverityLevel: 3 });
      try {
        for (const prefill of [T, 3]) {
          const got = await runLayer(session, half, xf, T, H, prefill, cfg);
          const r = maxRel(got, ref);
          report(r.ratio <= floor, `${name} ${prefill === T ? 'prefill' : 'prefill3+decode'}`,
            [`max|Δ| ${r.d.toExponential(3)} = ${r.ratio.toExponential(3)} · max|ref| ${r.m.toFixed(4)} (floor ${floor})`]);
        }
      } finally {
        await session.release();
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------

const work = mkdtempSync(join(tmpdir(), 'm2o-qwen3_5-'));
try {
  const cfg = JSON.parse((await import('node:fs')).readFileSync(join(FIXTURES, FIXTURE, 'config.json'), 'utf8'));
  const ck = readSafetensors(join(FIXTURES, FIXTURE, 'model.safetensors'));
  await partOne(work, cfg, ck);
} catch (e) {
  report(false, 'qwen3_5 e2e', [String(e.stack ?? e).split('\n').slice(0, 3).join(' | ')]);
} finally {
  rmSync(work, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
