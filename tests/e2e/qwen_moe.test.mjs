// Qwen3-MoE and Qwen2-MoE end to end: builds tests/fixtures/qwen3-moe-tiny (q/k norms,
// norm_topk_prob true) and qwen2-moe-tiny (q/k/v biases, shared expert with sigmoid gate,
// norm_topk_prob false) with the CLI, runs them in ONNX Runtime (onnxruntime-node, CPU) through
// genai_config.json, and compares every logits row: a full-prompt prefill and a 5-token prefill
// followed by one-token decode steps (present → past).
//
// 1. The independent float forward of qwen_moe_ref.mjs is checked against the fixtures'
//    transformers references first: float, and quantization-aware with linear layers and experts
//    quantized in blocks along K (the input features), which is how the fixtures'
//    reference-int4*.safetensors were made and what QMoE holds (~1e-6).
// 2. Exports vs the fixture files: fp32 vs reference.safetensors (max|Δ| ≤ 2e-3·max|ref| per
//    row); fp16 (cosine ≥ 0.9999, same argmax); int4 with int4_accuracy_level=0 and block 32
//    vs reference-int4.safetensors, expert blocks 64/128 vs reference-int4-e64/-e128, int8
//    experts vs reference-int4-moe8 (all 2e-3, int8 also the same argmax). A default int4 build
//    (accuracy level 4: int8 activations) must stay within cosine 0.95 of reference-int4.
// 3. Layouts and configs without fixtures (qwen_variants.mjs): fused experts
//    (gate_up_proj [E, 2I, H], down_proj [E, H, I]) and two shards + index must export
//    byte-identically to the fixture; dense layers from decoder_sparse_step / mlp_only_layers
//    and flipped norm_topk_prob must match the forward of step 1 (float and int4).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { checkLogits } from './lib/compare.mjs';
import { closeModel, openModel, runModel } from './lib/harness.mjs';
import { readSafetensors } from './lib/safetensors.mjs';
import { qwenMoeForward } from './qwen_moe_ref.mjs';
import { QWEN_VARIANTS } from './qwen_variants.mjs';

const FIXTURES = process.env.M2O_FIXTURES ?? 'tests/fixtures';
const BIN = process.env.M2O_BIN ?? 'build/moe2onnx';
const PREFILL = 5;
const Q_INT4 = { linearBits: 4, expertBits: 4, block: 32 };
const Q_MOE8 = { linearBits: 4, expertBits: 8, block: 32 };
const ACC0 = ['--extra_options', 'int4_accuracy_level=0', 'int4_block_size=32', 'qmoe_block_size=32'];
const ACC0_MOE8 = [...ACC0, 'moe_quant_type=int8'];
const ACC0_E = (b) => ['--extra_options', 'int4_accuracy_level=0', 'int4_block_size=32', `qmoe_block_size=${b}`];

let passed = 0, failed = 0;
function report(ok, name, lines) {
  if (ok) passed++; else failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}: ${lines[0]}`);
  for (const l of lines.slice(1)) console.log(`     ${l}`);
}
const note = (name, line) => console.log(`note ${name}: ${line}`);

function build(dir, args, out) {
  try {
    execFileSync(BIN, ['-i', dir, '-o', out, '-e', 'cpu', '-q', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    return null;
  } catch (e) {
    return `${BIN} failed (exit ${e.status}): ${String(e.stderr ?? e.message).trim()}`;
  }
}

function checkConfig(out, ckpt) {
  const cfg = JSON.parse(readFileSync(join(out, 'genai_config.json'), 'utf8'));
  const hf = JSON.parse(readFileSync(join(ckpt, 'config.json'), 'utf8'));
  const d = cfg.model.decoder;
  const want = {
    type: cfg.model.type === (hf.model_type === 'qwen3_moe' ? 'qwen3' : 'qwen2'),
    vocab: cfg.model.vocab_size === hf.vocab_size, layers: d.num_hidden_layers === hf.num_hidden_layers,
    heads: d.num_attention_heads === hf.num_attention_heads, kv_heads: d.num_key_value_heads === hf.num_key_value_heads,
    head_size: d.head_size === (hf.head_dim ?? hf.hidden_size / hf.num_attention_heads),
    hidden: d.hidden_size === hf.hidden_size, eos: cfg.model.eos_token_id === hf.eos_token_id,
    tokenizer: existsSync(join(out, 'tokenizer.json')) && existsSync(join(out, 'tokenizer_config.json')),
  };
  const bad = Object.entries(want).filter(([, v]) => !v).map(([k]) => k);
  return bad.length ? `genai_config.json/tokenizer mismatch: ${bad.join(', ')}` : null;
}

const loadCkpt = (dir) => ({
  tensors: readSafetensors(join(dir, 'model.safetensors')),
  cfg: JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')),
});
const forward = (ck, ids, quant) => Float32Array.from(qwenMoeForward(ck.tensors, ck.cfg, ids, quant).logits);

// Runs the model in both modes; checks each against every [label, ref, floor, asNote] given.
async function runChecks(label, out, ids, dims, checks) {
  const model = await openModel(out, { threads: 1 });
  try {
    for (const [mode, opts] of [['prefill', {}], [`prefill${PREFILL}+decode`, { prefill: PREFILL }]]) {
      const r = await runModel(model, ids, opts);
      for (const [what, ref, floor, asNote] of checks) {
        const v = checkLogits(r.logits, ref, r.dims ?? dims, floor, { label: 'logits' });
        if (asNote) {
          const line = v.lines[0].replace(/^(FAIL|ok) /, v.ok ? 'within the floor: ' : 'below the floor: ');
          note(`${label} ${mode} vs ${what}`, `${line}${asNote === true || v.ok ? '' : ` — ${asNote}`}`);
        }
        else {
          report(v.ok, `${label} ${mode} vs ${what}`, v.lines);
        }
      }
    }
  } finally {
    await closeModel(model);
  }
}

// ---- 1. the reference forward against transformers ----
function checkForward(fixture, ck) {
  const tight = { maxRel: 1e-5 };
  for (const [file, quant] of [['reference.safetensors', null],
    ['reference-int4.safetensors', Q_INT4], ['reference-int4-moe8.safetensors', Q_MOE8],
    ['reference-int4-e64.safetensors', { ...Q_INT4, expertBlock: 64 }],
    ['reference-int4-e128.safetensors', { ...Q_INT4, expertBlock: 128 }]]) {
    const ref = readSafetensors(join(FIXTURES, fixture, file));
    const ids = Array.from(ref.input_ids.data, Number);
    const r = qwenMoeForward(ck.tensors, ck.cfg, ids, quant);
    const v = checkLogits(Float32Array.from(r.logits), ref.logits.data, ref.logits.shape, tight);
    const [, T, H] = ref.hidden_states.shape;
    let worst = 0;
    for (let l = 0; l < r.hidden.length; l++)
      for (let i = 0; i < T * H; i++) worst = Math.max(worst, Math.abs(r.hidden[l][i] - ref.hidden_states.data[l * T * H + i]));
    const ok = v.ok && worst <= 1e-4;
    report(ok, `${fixture} reference forward${quant ? ` (${quant.expertBits}-bit experts, blocks of ${quant.expertBlock ?? 32} along K)` : ''} vs ${file}`,
           [`${v.lines[0]}; hidden states max|Δ| ${worst.toExponential(2)} (≤ 1e-4)`, ...v.lines.slice(1)]);
  }
}

// ---- 2. exports of the fixtures ----
async function checkFixture(work, fixture, ck) {
  const dir = join(FIXTURES, fixture);
  const refs = Object.fromEntries(['reference', 'reference-int4', 'reference-int4-moe8', 'reference-int4-e64', 'reference-int4-e128']
    .map((f) => [f, readSafetensors(join(dir, `${f}.safetensors`))]));
  const ids = Array.from(refs.reference.input_ids.data, Number), dims = refs.reference.logits.shape;
  const fix = (f) => refs[f].logits.data;
  const cases = [
    { name: 'fp32', args: ['-p', 'fp32'], checks: [['reference.safetensors', fix('reference'), { maxRel: 2e-3 }]] },
    { name: 'fp16', args: ['-p', 'fp16'], checks: [['reference.safetensors', fix('reference'), { minCos: 0.9999, sameArgmax: true }]] },
    { name: 'int4', args: ['-p', 'int4', ...ACC0], checks: [['reference-int4.safetensors', fix('reference-int4'), { maxRel: 2e-3 }]] },
    { name: 'int4-e64', args: ['-p', 'int4', ...ACC0_E(64)], checks: [['reference-int4-e64.safetensors', fix('reference-int4-e64'), { maxRel: 2e-3 }]] },
    { name: 'int4-e128', args: ['-p', 'int4', ...ACC0_E(128)], checks: [['reference-int4-e128.safetensors', fix('reference-int4-e128'), { maxRel: 2e-3 }]] },
    {
      name: 'int4-moe8', args: ['-p', 'int4', ...ACC0_MOE8],
      checks: [['reference-int4-moe8.safetensors', fix('reference-int4-moe8'), { maxRel: 2e-3, sameArgmax: true }]],
    },
    {
      name: 'int4-default', args: ['-p', 'int4'], checks: [
        ['reference-int4.safetensors', fix('reference-int4'), { minCos: 0.95 }],
        ['forward int4 (experts along K)', forward(ck, ids, Q_INT4), { minCos: 0.95 }, true]],
    },
  ];
  for (const c of cases) {
    const out = join(work, `${fixture}-${c.name}`);
    const err = build(dir, c.args, out) ?? checkConfig(out, dir);
    if (err) report(false, `${fixture} ${c.name} build`, [err]);
    else await runChecks(`${fixture} ${c.name}`, out, ids, dims, c.checks);
  }
}

// ---- 3. layouts and configs without fixtures ----
async function checkVariant(work, v) {
  const src = join(FIXTURES, v.fixture), dir = join(work, v.name);
  v.write(src, dir);
  const ids = Array.from(readSafetensors(join(src, 'reference.safetensors')).input_ids.data, Number);
  if (v.sameAs) { // the same model in another layout, so the same bytes
    for (const [name, args] of [['fp32', ['-p', 'fp32']], ['int4', ['-p', 'int4', ...ACC0]], ['int4-moe8', ['-p', 'int4', ...ACC0_MOE8]]]) {
      const a = join(work, `${v.name}-${name}`), b = join(work, `${v.fixture}-${name}`);
      const err = build(dir, args, a) ?? (existsSync(b) ? null : build(src, args, b));
      if (err) { report(false, `${v.name} ${name} build`, [err]); continue; }
      const same = (f) => readFileSync(join(a, f)).equals(readFileSync(join(b, f)));
      const bytes = readFileSync(join(a, 'model.onnx.data')).length;
      report(same('model.onnx') && same('model.onnx.data'), `${v.name} ${name} export = ${v.fixture} export`,
             [`model.onnx ${same('model.onnx') ? 'identical' : 'DIFFERS'}, model.onnx.data (${bytes} bytes) ${same('model.onnx.data') ? 'identical' : 'DIFFERS'}`]);
    }
    return;
  }
  const ck = { tensors: readSafetensors(join(dir, 'model.safetensors')), cfg: JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) };
  for (const [name, args, quant] of [['fp32', ['-p', 'fp32'], null], ['int4', ['-p', 'int4', ...ACC0], Q_INT4]]) {
    const out = join(work, `${v.name}-${name}`);
    const err = build(dir, args, out) ?? checkConfig(out, dir);
    if (err) { report(false, `${v.name} ${name} build`, [err]); continue; }
    await runChecks(`${v.name} (${v.what}) ${name}`, out, ids, null,
                    [[`forward ${name}`, forward(ck, ids, quant), { maxRel: 2e-3 }]]);
  }
}

const work = mkdtempSync(join(tmpdir(), 'm2o-qwen-'));
try {
  for (const fixture of ['qwen3-moe-tiny', 'qwen2-moe-tiny']) {
    const ck = loadCkpt(join(FIXTURES, fixture));
    checkForward(fixture, ck);
    await checkFixture(work, fixture, ck);
  }
  for (const v of QWEN_VARIANTS) await checkVariant(work, v);
} catch (e) {
  report(false, 'qwen_moe e2e', [String(e.stack ?? e).split('\n').slice(0, 3).join(' | ')]);
} finally {
  rmSync(work, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
