// ONNX Runtime's CPU kernels with zero points (docs/FORMATS.md §15 "zero points"): MatMulNBits
// (4- and 8-bit; float32 and float16 io; blocks 16-128; zero points packed uint8 or unpacked in
// the io dtype) and QMoE with zero-point inputs 11 and 12 (uint8 [E, N, ceil(blocks·bits/8)];
// 4- and 8-bit, float32 and float16 io, blocks 16 and 32, raw layout, even and odd block counts).
// build/tools/zp_models writes the models from integer formulas (tests/tools/zp_models.c); this file repeats the formulas, decodes the weights itself as
// (code - zero point) * scale, computes each output in float64 and asserts the largest
// |ONNX Runtime - reference| relative to max|reference|:
//   float32 io: below 1e-5 (float32 accumulation over at most 384 products);
//   float16 io: below 2e-3 (inputs and weights are exact in float16; the output's own float16
//   rounding is 2^-11 = 4.9e-4 of its binade, the rest is float16 accumulation in the kernel).
// Prints "ok"/"FAIL" per case and "N passed, N failed".
import * as ort from 'onnxruntime-node';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const TOL = { f32: 1e-5, f16: 2e-3 };
let passed = 0, failed = 0;
function check(name, cond, detail) {
  if (cond) passed++; else failed++;
  console.log(`${cond ? 'ok  ' : 'FAIL'} ${name}${detail ? ` (${detail})` : ''}`);
}

// ---- the formulas of tests/tools/zp_models.c ----
const code = (n, k, bits) => (7 * n + 13 * k + ((n * k) % 5)) % (1 << bits);
const zp = (n, b, bits) => (5 * n + 11 * b + 3) % (1 << bits);
const scale = (n, b) => ((1 + ((3 * n + 5 * b) % 7)) / 256) * (n % 3 === 0 ? -1 : 1);
const xMnb = (m, k) => (((31 * m + 17 * k) % 29) - 14) / 16;
const xQmoe = (t, h) => (((13 * t + 7 * h) % 23) - 11) / 32;
const logit = (t, e) => ((5 * t + 3 * e) % 7) / 4;
// Weight element (n, k) of a matrix whose rows use the formulas at n + n0; without zero-point
// inputs the kernels use 2^(bits-1).
const weight = (n, k, bits, bs, n0 = 0, withZp = true) =>
  (code(n + n0, k, bits) - (withZp ? zp(n + n0, Math.floor(k / bs), bits) : 1 << (bits - 1))) *
  scale(n + n0, Math.floor(k / bs));

// float32 <-> float16 bits (inputs here are exact in float16; outputs are decoded).
function f16Bits(v) {
  const f = new Float32Array([v]), u = new Uint32Array(f.buffer)[0];
  const sign = (u >>> 16) & 0x8000, exp = ((u >>> 23) & 0xff) - 127 + 15, mant = u & 0x7fffff;
  if (v === 0) return sign;
  if (exp <= 0 || exp >= 31 || (mant & 0x1fff)) throw new Error(`${v} is not a normal float16`);
  return sign | (exp << 10) | (mant >>> 13);
}
function f16Value(h) {
  const e = (h >>> 10) & 0x1f, m = h & 0x3ff, s = h & 0x8000 ? -1 : 1;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}
function tensor(values, dims, f16) {
  return f16 ? new ort.Tensor('float16', Uint16Array.from(values, f16Bits), dims)
             : new ort.Tensor('float32', Float32Array.from(values), dims);
}
const outValues = (t, f16) => (f16 ? Array.from(t.data, f16Value) : Array.from(t.data));

function refMatMulNBits(c) {
  const y = [];
  for (let m = 0; m < c.M; m++)
    for (let n = 0; n < c.N; n++) {
      let s = 0;
      for (let k = 0; k < c.K; k++) s += xMnb(m, k) * weight(n, k, c.bits, c.block_size);
      y.push(s);
    }
  return y;
}

// QMoE as FORMATS §11.5: softmax over the top-k logits, fc1 rows interleaved gate/up, SwiGLU with
// alpha 1 and beta 0 (silu(gate) * up), fc2; expert e's rows at n + 97 e (fc1), n + 97 e + 50 (fc2).
function refQmoe(c) {
  const y = [];
  for (let t = 0; t < c.T; t++) {
    const lg = Array.from({ length: c.E }, (_, e) => logit(t, e));
    const order = lg.map((v, e) => [v, e]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, c.k);
    const z = order.reduce((a, [v]) => a + Math.exp(v - order[0][0]), 0);
    const out = new Array(c.H).fill(0);
    for (const [v, e] of order) {
      const w = Math.exp(v - order[0][0]) / z;
      const act = [];
      for (let i = 0; i < c.I; i++) {
        let g = 0, u = 0;
        for (let h = 0; h < c.H; h++) {
          g += xQmoe(t, h) * weight(2 * i, h, c.bits, c.block_size, 97 * e, c.zp);
          u += xQmoe(t, h) * weight(2 * i + 1, h, c.bits, c.block_size, 97 * e, c.zp);
        }
        act.push((g / (1 + Math.exp(-g))) * u);
      }
      for (let h = 0; h < c.H; h++) {
        let s = 0;
        for (let i = 0; i < c.I; i++) s += act[i] * weight(h, i, c.bits, c.block_size, 97 * e + 50, c.zp);
        out[h] += w * s;
      }
    }
    y.push(...out);
  }
  return y;
}

function feeds(c) {
  if (c.op === 'MatMulNBits') {
    const x = [];
    for (let m = 0; m < c.M; m++) for (let k = 0; k < c.K; k++) x.push(xMnb(m, k));
    return { X: tensor(x, [c.M, c.K], c.f16) };
  }
  const x = [], r = [];
  for (let t = 0; t < c.T; t++) {
    for (let h = 0; h < c.H; h++) x.push(xQmoe(t, h));
    for (let e = 0; e < c.E; e++) r.push(logit(t, e));
  }
  return { X: tensor(x, [c.T, c.H], c.f16), router: tensor(r, [c.T, c.E], c.f16) };
}

// Each case states what ONNX Runtime 1.30 does with it (cases.json "expect"): "exact" (within
// the tolerance above), "refused" (the 8-bit kernel's run-time refusal of io-dtype zero points),
// or "wrong" (runs, but max|diff| above half of max|ref|: 4-bit QMoE zero points of a matrix
// with an odd block count per row).
const REFUSAL = 'Only 2b and 4b quantization is supported for unpacked compute';
// M2O_ZP_EP=cuda (the GPU machine, tests/cuda/run.sh): the same models on ONNX Runtime's CUDA
// provider; each case's outcome there is printed ("probe"), as docs/FORMATS.md §15 records it.
const EP = process.env.M2O_ZP_EP ?? 'cpu';

async function probeCase(dir, c, ref) {
  try {
    const s = await ort.InferenceSession.create(join(dir, c.name, 'model.onnx'),
                                                { executionProviders: [EP], logSeverityLevel: 4 });
    const got = outValues((await s.run(feeds(c))).Y, c.f16);
    await s.release();
    const maxRef = Math.max(...ref.map(Math.abs));
    let worst = 0;
    for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(got[i] - ref[i]));
    console.log(`probe ${EP} ${c.name}: runs; max|diff| ${(worst / maxRef).toExponential(2)} of max|ref|`);
  } catch (e) {
    console.log(`probe ${EP} ${c.name}: refused: ${String(e.message).split('\n')[0].slice(0, 200)}`);
  }
}

async function runCase(dir, c) {
  const ref = c.op === 'MatMulNBits' ? refMatMulNBits(c) : refQmoe(c);
  if (EP !== 'cpu') return probeCase(dir, c, ref);
  let got;
  try {
    const s = await ort.InferenceSession.create(join(dir, c.name, 'model.onnx'),
                                                { intraOpNumThreads: 1, logSeverityLevel: 4 });
    got = outValues((await s.run(feeds(c))).Y, c.f16);
    await s.release();
  } catch (e) {
    const msg = String(e.message).split('\n')[0];
    check(`${c.name} ${c.expect}`, c.expect === 'refused' && msg.includes(REFUSAL),
          `ONNX Runtime refused it: ${msg.slice(msg.lastIndexOf(']') + 1).trim()}`);
    return;
  }
  const maxRef = Math.max(...ref.map(Math.abs));
  let worst = 0;
  for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(got[i] - ref[i]));
  const rel = worst / maxRef, tol = TOL[c.f16 ? 'f16' : 'f32'];
  const ok = got.length === ref.length &&
             (c.expect === 'exact' ? rel < tol : c.expect === 'wrong' ? rel > 0.5 : false);
  check(`${c.name} ${c.expect}`, ok, `runs; max|diff| ${worst.toExponential(2)} = ` +
        `${rel.toExponential(2)} of max|ref| ${maxRef.toPrecision(3)}` +
        (c.expect === 'exact' ? `, limit ${tol}` : c.expect === 'wrong' ? ', expected > 0.5' : ''));
}

const tool = process.env.M2O_ZP_MODELS || 'build/tools/zp_models';
const dir = mkdtempSync(join(tmpdir(), 'm2o-zp-'));
try {
  execFileSync(tool, [dir], { stdio: ['ignore', 'inherit', 'inherit'] });
  const cases = JSON.parse(readFileSync(join(dir, 'cases.json'), 'utf8'));
  check('zp_models wrote 44 cases', cases.length === 44, `${cases.length}`);
  for (const c of cases) await runCase(dir, c);
} catch (e) {
  check(`${tool} ran`, false, String(e.message).split('\n')[0]);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed ? 1 : 0;
