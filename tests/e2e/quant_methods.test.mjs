// Dense MatMul quantization methods end to end (docs/QUANTIZATION.md, issue 18): each fixture is
// converted with every MatMulNBits method moe2onnx writes, and for each export
//   1. `moe2onnx verify` must PASS: every MatMulNBits weight decodes, through the node's own
//      attributes (bits, block size, zero points), to the checkpoint within the bound of
//      docs/FORMATS.md §16 — the exactness check of the stored codes, scales and zero points;
//   2. ONNX Runtime (onnxruntime-node, CPU, accuracy_level=0: float32 compute) runs it, and its
//      logits are compared with the fixture's float32 transformers reference: the worst row's
//      max|Δ| / max|ref| is printed per method (BENCHMARKS.md takes these numbers) and must stay
//      within TOL_FACTOR times that of the default int4 build of the same fixture (measured in
//      the same run; the experts, int4 in every mode, are a large share of it). The int4 methods
//      differ from the default only in how each block's scale and zero point are chosen, all
//      within about one step per element, so a method that lands further than this from the
//      float model has a wrong decode, not a different rounding choice.
//   3. on the Qwen fixtures, the methods whose rounding is simple to restate (int8 body: MLAS
//      symmetric 8-bit, FORMATS §4; MLAS asymmetric 4- and 8-bit with zero points, §4 step 3;
//      INC RTN symmetric, §4.11) also against qwen_moe_ref.mjs's forward pass with the MatMuls
//      quantized and dequantized that way and int4 experts: 2e-3 of max|ref| per row, the floor
//      qwen_moe.test.mjs holds the int4 build to — ONNX Runtime's MatMulNBits, 8-bit and with
//      zero points, computes what the format says.
// 4. Flat options and their quant_config JSON equivalent must write byte-identical folders.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { checkLogits, rowMetrics, summarize } from './lib/compare.mjs';
import { runModel } from './lib/harness.mjs';
import { readSafetensors } from './lib/safetensors.mjs';
import { qdqAsym, qwenMoeForward, roundHalfEven } from './qwen_moe_ref.mjs';

const FIXTURES = process.env.M2O_FIXTURES ?? 'tests/fixtures';
const BIN = process.env.M2O_BIN ?? 'build/moe2onnx';
const TOL_FACTOR = 1.5;
const ACC0 = 'accuracy_level=0';

// [name, --extra_options items]
const MODES = [
  ['default', [ACC0]],
  ['is_symmetric=false', [ACC0, 'is_symmetric=false']],
  ['rtn', [ACC0, 'algo_config=rtn']],
  ['rtn asym', [ACC0, 'algo_config=rtn', 'is_symmetric=false']],
  ['k_quant', [ACC0, 'algo_config=k_quant']],
  ['scale_search=matmul', [ACC0, 'scale_search=matmul']],
  ['scale_search=matmul asym', [ACC0, 'scale_search=matmul', 'is_symmetric=false']],
  ['int8 body', ['quant_config={"weights":{"type":"int8","accuracy_level":0}}']],
  ['uint8 body', ['quant_config={"weights":{"type":"uint8","symmetric":false,"accuracy_level":0}}']],
  ['k_quant_mixed', [ACC0, 'algo_config=k_quant_mixed']],
  ['k_quant_linear', [ACC0, 'algo_config=k_quant_linear']],
  ['rtn_last', [ACC0, 'algo_config=rtn_last']],
];
// Flat options and the quant_config that says the same.
const EQUIVALENT = [
  [['is_symmetric=false', 'algo_config=k_quant', 'block_size=64'],
   ['quant_config={"weights":{"symmetric":false,"method":"k_quant","block_size":64}}']],
  [['algo_config=k_quant_mixed'],
   ['quant_config={"weights":{"method":"k_quant","overrides":[{"match":{"preset":"mixed_layers"},"type":"int8"},' +
    '{"match":{"preset":"last_matmul"},"type":"int8"}]}}']],
  [['scale_search=true', 'nodes_to_exclude=/lm_head/MatMul'],
   ['quant_config={"weights":{"scale_search":true,"overrides":[{"match":{"name":"/lm_head/MatMul"},"exclude":true}]}}']],
];
const f32 = Math.fround;
// INC RTN symmetric (FORMATS §4.11): scale 2·max|w| / (2^bits − 1) in float64, codes around
// 2^(bits−1) rounded half to even with that scale, stored scale float32.
function qdqIncSym(w, N, K, bits, bs) {
  const out = new Float32Array(w.length), qmax = (1 << bits) - 1, zp = 1 << (bits - 1);
  for (let o = 0; o < N * K; o += bs) {
    let amax = 0;
    for (let j = 0; j < bs; j++) amax = Math.max(amax, Math.abs(w[o + j]));
    const scale = amax === 0 ? 1 : (2 * amax) / qmax, stored = f32(scale);
    for (let j = 0; j < bs; j++) {
      const q = Math.min(qmax, Math.max(0, roundHalfEven(w[o + j] / scale + zp)));
      out[o + j] = f32((q - zp) * stored);
    }
  }
  return out;
}

// Modes whose MatMuls the forward pass can restate: mode name → quant option of qwenMoeForward.
const RESTATED = {
  'int8 body': { linearBits: 8, expertBits: 4, block: 32 },
  'uint8 body': { expertBits: 4, block: 32, linearQdq: (w, N, K) => qdqAsym(w, N, K, 8, 32) },
  'is_symmetric=false': { expertBits: 4, block: 32, linearQdq: (w, N, K) => qdqAsym(w, N, K, 4, 32) },
  rtn: { expertBits: 4, block: 32, linearQdq: (w, N, K) => qdqIncSym(w, N, K, 4, 32) },
};

const FIXTURE_LIST = ['qwen3-moe-tiny', 'gpt-oss-tiny', 'qwen3_5-moe-tiny', 'qwen2-moe-tiny'];

let passed = 0, failed = 0;
function report(ok, name, line) {
  if (ok) passed++; else failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}: ${line}`);
}

function run(args) {
  try {
    return { out: execFileSync(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString(), err: null };
  } catch (e) {
    return { out: String(e.stdout ?? ''), err: `exit ${e.status}: ${String(e.stderr ?? e.message).trim()}` };
  }
}

const build = (src, out, extra) =>
  run(['-q', '--threads', '2', '-i', src, '-o', out, '-p', 'int4', '-e', 'cpu', '--extra_options', ...extra]).err;

function folderHash(dir) {
  const h = createHash('sha256');
  for (const f of readdirSync(dir).sort()) h.update(f).update(readFileSync(join(dir, f)));
  return h.digest('hex');
}

const tmp = mkdtempSync(join(tmpdir(), 'm2o-dense-'));
const measured = [];
try {
  for (const fixture of FIXTURE_LIST) {
    const src = join(FIXTURES, fixture);
    const ref = readSafetensors(join(src, 'reference.safetensors'));
    const ids = Array.from(ref.input_ids.data, Number);
    const [, T, V] = ref.logits.shape;
    let base = null;
    for (const [name, extra] of MODES) {
      const label = `${fixture} ${name}`;
      const out = join(tmp, `${fixture}-${name.replace(/[^a-z0-9]/gi, '_')}`);
      const err = build(src, out, extra);
      if (err) { report(false, label, `conversion failed: ${err}`); continue; }
      const v = run(['verify', '--threads', '2', '-i', src, '-o', out]);
      const verdict = v.out.trim().split('\n').pop();
      report(!v.err && verdict.startsWith('verify: PASS'), `${label} verify`, v.err ? `${verdict} (${v.err})` : verdict);
      const r = await runModel(out, ids);
      const s = summarize(rowMetrics(r.logits, ref.logits.data, T, V));
      if (name === 'default') base = s.ratio;
      measured.push([fixture, name, s.ratio, s.minCos]);
      const limit = base * TOL_FACTOR;
      report(s.finite && s.ratio <= limit, `${label} logits`,
             `max|Δ|/max|ref| ${s.ratio.toExponential(3)} (limit ${limit.toExponential(3)} = ${TOL_FACTOR} x default), ` +
             `min cos ${s.minCos.toFixed(6)}, argmax ${s.argmaxAgree}/${s.rows}`);
      if (RESTATED[name] && (fixture === 'qwen3-moe-tiny' || fixture === 'qwen2-moe-tiny')) {
        const cfg = JSON.parse(readFileSync(join(src, 'config.json'), 'utf8'));
        const fwd = qwenMoeForward(readSafetensors(join(src, 'model.safetensors')), cfg, ids, RESTATED[name]);
        const c = checkLogits(r.logits, Float32Array.from(fwd.logits), [1, T, V], { maxRel: 2e-3 });
        report(c.ok, `${label} vs forward with the same rounding`, c.lines[0]);
      }
      rmSync(out, { recursive: true, force: true });
    }
    if (fixture !== 'qwen3-moe-tiny') continue;
    for (const [flat, json] of EQUIVALENT) {
      const a = join(tmp, 'flat'), b = join(tmp, 'json');
      const ea = build(src, a, flat), eb = build(src, b, json);
      const same = !ea && !eb && folderHash(a) === folderHash(b);
      report(same, `${fixture} ${flat.join(' ')} == quant_config`, ea || eb || (same ? 'byte-identical folders' : 'folders differ'));
      rmSync(a, { recursive: true, force: true });
      rmSync(b, { recursive: true, force: true });
    }
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
console.log('\nlogits error vs the float32 reference (worst row max|Δ|/max|ref|; accuracy_level=0):');
for (const [f, m, ratio, cos] of measured) console.log(`  ${f.padEnd(18)} ${m.padEnd(20)} ${ratio.toExponential(3)}  cos ${cos.toFixed(6)}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
