// Expert quantization variants end to end (issue 18; docs/QUANTIZATION.md "Experts"). Every MoE
// fixture is converted for the CPU (-p int4, int4_accuracy_level=0: float32 MatMulNBits compute)
// with each expert variant: int4 (the default), int8, uint4 and uint8 (MLAS asymmetric RTN with
// zero points, QMoE inputs 11-12), per-channel int4/int8 (qmoe_block_size=0: the builder's
// symmetric per-channel math, scales [E, N], no block_size attribute), and scale_search int4, int8
// and uint4. For each:
//   1. `moe2onnx verify` must PASS (it decodes codes, scales and zero points through the node's
//      attributes against the checkpoint, FORMATS §16);
//   2. ONNX Runtime (onnxruntime-node, CPU; a full prefill and a 5-token prefill + one-token
//      decode steps) against a reference, every row's max|Δ| / max|ref|:
//      - Qwen fixtures (qwen3-moe-tiny, qwen2-moe-tiny), round-to-nearest variants: against the
//        independent float64 forward of qwen_moe_ref.mjs with the linear layers int4 (block 32) and
//        the experts quantized and decoded by this file's own re-implementation of the variant
//        (expertQdq below: FORMATS §4 steps 3-9, §4.12). Floor 2e-3 (the e2e suite's floor for
//        an exact quantization; measured ~1e-6: float32 accumulation order). A wrong zero point,
//        a wrong scale sign or a wrong layout puts whole rows off (~1, zero_points.test.mjs).
//      - scale_search variants (no second implementation of the search here): the format is the
//        round-to-nearest one, whose decoding by ONNX Runtime the exact checks above prove, so what
//        is checked is (a) the search's guarantee on the exported bytes: verify's relative RMS
//        error of every expert tensor at most the round-to-nearest twin's (never worse per block),
//        and (b) the logits against the forward with FLOAT experts within the largest distance
//        any round-to-nearest variant of the fixture shows (per-channel int4's, the coarsest).
//        Not the twin's own distance: a router near-tie flips a top-k choice at some position
//        when the hidden state moves at all, so the logits distance is not monotone in the weight
//        error (measured: search-int8 on qwen3-moe-tiny lands with per-channel int8 at 2.3e-1,
//        int8 at 8.5e-3). The distance of each variant from the float-expert forward is printed:
//        the experts' own error.
//      - gpt-oss fixtures (gpt-oss-tiny: MXFP4 experts; gpt-oss-bf16-tiny: BF16), which have no
//        forward here: int4 and int8 against the fixtures' reference-int4 / reference-int4-moe8
//        (transformers with the experts quantized, floor 2e-3); every other variant within 3x of
//        int8's distance from reference-int4 (TOL_GPT: the gap between int4 and int8 experts is
//        the int4 experts' own error at model level; another 4-bit encoding differs from the int4
//        reference by at most its own error plus int4's, ~2x, and router near-ties add jumps;
//        measured at most 2.4x: gpt-oss-tiny uint4). Their decoding by ONNX Runtime is proven
//        exact on the Qwen fixtures (same QMoE op and encodings); here verify proves the bytes,
//        including the band-by-band path of input-major BF16 experts that these formats take.
// Prints each measured distance (BENCHMARKS.md) and "N passed, N failed".
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { rowMetrics, summarize } from './lib/compare.mjs';
import { closeModel, openModel, runModel } from './lib/harness.mjs';
import { readSafetensors } from './lib/safetensors.mjs';
import { qdqAsym, qdqRows, qwenMoeForward, roundHalfEven } from './qwen_moe_ref.mjs';

const FIXTURES = process.env.M2O_FIXTURES ?? 'tests/fixtures';
const BIN = process.env.M2O_BIN ?? 'build/moe2onnx';
const PREFILL = 5;
const EXACT = 2e-3;
const f32 = Math.fround;

// ---- the expert encodings, re-implemented (decoded weights of W [N, K]) ----
// FORMATS §4.12 (the builder's per channel): scale max|w| / 2^(bits-1) (at least float32 eps),
// codes round-half-even(w / scale) clamped to [-2^(bits-1), 2^(bits-1) - 1].
function qdqPerChannel(w, N, K, bits) {
  const out = new Float32Array(w.length), half = 1 << (bits - 1);
  for (let n = 0; n < N; n++) {
    let amax = 0;
    for (let k = 0; k < K; k++) amax = Math.max(amax, Math.abs(w[n * K + k]));
    const s = Math.max(f32(amax / half), 2 ** -23);
    for (let k = 0; k < K; k++) {
      const q = Math.min(half - 1, Math.max(-half, roundHalfEven(f32(w[n * K + k] / s))));
      out[n * K + k] = f32(q * s);
    }
  }
  return out;
}

// name, extra options, the re-implemented encoding (null: scale search), its RTN twin
const VARIANTS = [
  ['int4', [], (w, N, K) => qdqRows(w, N, K, 4, 32)],
  ['int8', ['moe_quant_type=int8'], (w, N, K) => qdqRows(w, N, K, 8, 32)],
  ['uint4', ['moe_quant_type=uint4'], (w, N, K) => qdqAsym(w, N, K, 4, 32)],
  ['uint8', ['moe_quant_type=uint8'], (w, N, K) => qdqAsym(w, N, K, 8, 32)],
  ['per-channel-int4', ['qmoe_block_size=0'], (w, N, K) => qdqPerChannel(w, N, K, 4)],
  ['per-channel-int8', ['moe_quant_type=int8', 'qmoe_block_size=0'], (w, N, K) => qdqPerChannel(w, N, K, 8)],
  ['search-int4', ['scale_search=experts'], null, 'int4'],
  ['search-int8', ['moe_quant_type=int8', 'scale_search=experts'], null, 'int8'],
  ['search-uint4', ['moe_quant_type=uint4', 'scale_search=experts'], null, 'uint4'],
];
// gpt-oss: no forward here. int4/int8 must match the fixtures' quantized references exactly; the
// other variants must be within TOL_GPT x int8's distance from reference-int4 (int8 experts differ
// from that reference by the int4 experts' own error, which is what every variant also shows).
const TOL_GPT = 3;

let passed = 0, failed = 0;
function report(ok, name, line) {
  if (ok) passed++; else failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}: ${line}`);
}
const e2 = (x) => x.toExponential(2);

function run(args) {
  try {
    return { out: execFileSync(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString() };
  } catch (e) {
    return { err: `${BIN} ${args[0]} failed (exit ${e.status}): ${String(e.stderr ?? e.message).trim().split('\n').slice(-2).join(' | ')}` };
  }
}

// Worst row's max|Δ|/max|ref| of each run mode, for each reference given; Infinity if non-finite.
async function distances(out, ids, dims, refs) {
  const model = await openModel(out, { threads: 1 });
  try {
    const worst = refs.map(() => 0);
    for (const opts of [{}, { prefill: PREFILL }]) {
      const r = await runModel(model, ids, opts);
      refs.forEach((ref, i) => {
        const s = summarize(rowMetrics(r.logits, ref, dims[1], dims[2]));
        worst[i] = !s.finite || !Number.isFinite(s.ratio) ? Infinity : Math.max(worst[i], s.ratio);
      });
    }
    return worst;
  } finally {
    await closeModel(model);
  }
}

// Converts and verifies; returns verify's relative RMS error per expert tensor (null on failure).
function build(dir, out, opts, label) {
  const b = run(['-i', dir, '-o', out, '-e', 'cpu', '-p', 'int4', '-q', '--extra_options', 'int4_accuracy_level=0', ...opts]);
  if (b.err) { report(false, label, b.err); return null; }
  const v = run(['verify', '-i', dir, '-o', out]);
  report(!v.err && /verify: PASS/.test(v.out), `${label} verify`, v.err ?? v.out.trim().split('\n').pop());
  const rms = {};
  for (const line of (v.out ?? '').split('\n')) {
    const m = /^(\S*moe\.experts\.\S+)\s.*?\s([0-9.]+e[-+][0-9]+)\s+[0-9.]+e/.exec(line);
    if (m) rms[m[1]] = Number(m[2]);
  }
  return rms;
}

// scale_search's guarantee on the exported bytes: no expert tensor worse than round to nearest.
function checkSearchRms(label, rms, twinRms, twin) {
  const names = Object.keys(twinRms);
  const worse = names.filter((t) => !(rms[t] <= twinRms[t]));
  const ratio = Math.max(...names.map((t) => rms[t] / twinRms[t]));
  report(names.length > 0 && worse.length === 0, `${label} weights`, `relative RMS error of ${names.length} expert ` +
         `tensors at most ${twin}'s (worst ratio ${ratio.toFixed(4)})${worse.length ? `; worse: ${worse.join(', ')}` : ''}`);
}

async function qwenFixture(fx, tmp) {
  const dir = join(FIXTURES, fx);
  const ref = readSafetensors(join(dir, 'reference.safetensors'));
  const tensors = readSafetensors(join(dir, 'model.safetensors'));
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  const ids = Array.from(ref.input_ids.data, Number), dims = ref.logits.shape;
  const fwd = (expertQdq) => Float32Array.from(qwenMoeForward(tensors, cfg, ids, { linearBits: 4, block: 32, expertQdq }).logits);
  const floatExperts = fwd((w) => w);
  const rtnDistance = {}, rtnRms = {};
  for (const [name, opts, qdq, twin] of VARIANTS) {
    const label = `${fx} ${name}`, out = join(tmp, `${fx}-${name}`);
    const rms = build(dir, out, opts, label);
    if (!rms) continue;
    const refs = qdq ? [fwd(qdq), floatExperts] : [floatExperts];
    const d = await distances(out, ids, dims, refs);
    if (qdq) {
      rtnDistance[name] = d[1];
      rtnRms[name] = rms;
      report(d[0] <= EXACT, `${label} logits`, `max|Δ|/max|ref| ${e2(d[0])} vs the forward with this encoding ` +
             `(≤ ${EXACT}); experts' own error (vs float experts) ${e2(d[1])}`);
    } else {
      checkSearchRms(label, rms, rtnRms[twin], twin);
      const tol = Math.max(...Object.values(rtnDistance));
      report(d[0] <= tol, `${label} logits`, `max|Δ|/max|ref| ${e2(d[0])} vs the forward with float experts ` +
             `(≤ ${e2(tol)}, the largest round-to-nearest variant's; ${twin}: ${e2(rtnDistance[twin])})`);
    }
    rmSync(out, { recursive: true, force: true });
  }
}

async function gptFixture(fx, tmp) {
  const dir = join(FIXTURES, fx);
  const ref4 = readSafetensors(join(dir, 'reference-int4.safetensors'));
  const ref8 = readSafetensors(join(dir, 'reference-int4-moe8.safetensors'));
  const ids = Array.from(ref4.input_ids.data, Number), dims = ref4.logits.shape;
  let int8Distance = null;
  const rtnRms = {};
  for (const [name, opts, qdq, twin] of VARIANTS) {
    const label = `${fx} ${name}`, out = join(tmp, `${fx}-${name}`);
    const rms = build(dir, out, opts, label);
    if (!rms) continue;
    if (qdq) rtnRms[name] = rms;
    else checkSearchRms(label, rms, rtnRms[twin], twin);
    const [d4, d8] = await distances(out, ids, dims, [ref4.logits.data, ref8.logits.data]);
    if (name === 'int4') {
      report(d4 <= EXACT, `${label} logits`, `max|Δ|/max|ref| ${e2(d4)} vs reference-int4 (≤ ${EXACT})`);
    } else if (name === 'int8') {
      int8Distance = d4;
      report(d8 <= EXACT, `${label} logits`, `max|Δ|/max|ref| ${e2(d8)} vs reference-int4-moe8 (≤ ${EXACT}); ` +
             `${e2(d4)} vs reference-int4`);
    } else {
      const tol = TOL_GPT * int8Distance;
      report(d4 <= tol, `${label} logits`, `max|Δ|/max|ref| ${e2(d4)} vs reference-int4 (≤ ${TOL_GPT} x int8's ${e2(int8Distance)})`);
    }
    rmSync(out, { recursive: true, force: true });
  }
}

const tmp = mkdtempSync(join(tmpdir(), 'm2o-experts-'));
try {
  for (const fx of ['qwen3-moe-tiny', 'qwen2-moe-tiny']) await qwenFixture(fx, tmp);
  for (const fx of ['gpt-oss-tiny', 'gpt-oss-bf16-tiny']) await gptFixture(fx, tmp);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
