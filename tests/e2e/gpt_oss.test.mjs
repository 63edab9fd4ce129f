// gpt-oss end to end: builds each fixture (official MXFP4 layout and BF16 layout) with the CLI for
// every CPU precision, runs it in ONNX Runtime (onnxruntime-node, CPU) with the genai_config.json
// harness, and compares every logits row with the transformers reference of that precision
// (docs/FORMATS.md §17): a full-prompt prefill, and a 5-token prefill followed by one-token decode steps that
// feed present → past (which crosses the 3- and 4-token sliding windows).
//
// Floors: fp32 and int4 (int4_accuracy_level=0, linear block 32, expert blocks 32/64/128 against
// reference-int4 / -e64 / -e128) max|Δ| ≤ 2e-3 · max|ref| per row; int8 experts the same and the
// same argmax on every row. The references keep the expert biases in float, as the export does by
// default; qmoe_quantize_bias=1 (biases rounded through the experts' quantizer) must move the
// logits measurably away from them. Every case prints its measured numbers.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { checkLogits } from './lib/compare.mjs';
import { closeModel, openModel, runModel } from './lib/harness.mjs';
import { readSafetensors } from './lib/safetensors.mjs';

const FIXTURES = process.env.M2O_FIXTURES ?? 'tests/fixtures';
const BIN = process.env.M2O_BIN ?? 'build/moe2onnx';
const PREFILL = 5;

const CASES = [
  { name: 'fp32', args: ['-p', 'fp32'], ref: 'reference.safetensors', floor: { maxRel: 2e-3 } },
  // float16 io on CPU (MoE op, float16 KV cache): only float16 rounding separates it from fp32
  { name: 'fp16', args: ['-p', 'fp16'], ref: 'reference.safetensors', floor: { maxRel: 5e-3, minCos: 0.9999, sameArgmax: true } },
  { name: 'int4', args: ['-p', 'int4', '--extra_options', 'int4_accuracy_level=0'], ref: 'reference-int4.safetensors', floor: { maxRel: 2e-3 } },
  {
    name: 'int4-e64', args: ['-p', 'int4', '--extra_options', 'int4_accuracy_level=0', 'qmoe_block_size=64'],
    ref: 'reference-int4-e64.safetensors', floor: { maxRel: 2e-3 },
  },
  {
    name: 'int4-e128', args: ['-p', 'int4', '--extra_options', 'int4_accuracy_level=0', 'qmoe_block_size=128'],
    ref: 'reference-int4-e128.safetensors', floor: { maxRel: 2e-3 },
  },
  {
    name: 'int4-moe8', args: ['-p', 'int4', '--extra_options', 'int4_accuracy_level=0', 'moe_quant_type=int8'],
    ref: 'reference-int4-moe8.safetensors', floor: { maxRel: 2e-3, sameArgmax: true },
  },
  // Rounded biases are a different model: measured ~1e-2 from the float-bias reference. The floor
  // (worst row above 1e-3) fails if the option were ignored (the export would then match to ~1e-6).
  {
    name: 'int4-quantized-bias', args: ['-p', 'int4', '--extra_options', 'int4_accuracy_level=0', 'qmoe_quantize_bias=1'],
    ref: 'reference-int4.safetensors', floor: { minCos: 0.999, sameArgmax: true }, mustDiffer: 1e-3,
  },
];

let passed = 0, failed = 0;
function report(ok, name, lines) {
  if (ok) passed++; else failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}: ${lines[0]}`);
  for (const l of lines.slice(1)) console.log(`     ${l}`);
}

function build(fixture, args, out) {
  try {
    execFileSync(BIN, ['-i', join(FIXTURES, fixture), '-o', out, '-e', 'cpu', ...args],
                 { stdio: ['ignore', 'pipe', 'pipe'] });
    return null;
  } catch (e) {
    return `${BIN} failed (exit ${e.status}): ${String(e.stderr ?? e.message).trim()}`;
  }
}

function checkConfig(dir, fixture) {
  const cfg = JSON.parse(readFileSync(join(dir, 'genai_config.json'), 'utf8'));
  const hf = JSON.parse(readFileSync(join(FIXTURES, fixture, 'config.json'), 'utf8'));
  const d = cfg.model.decoder;
  const want = {
    type: cfg.model.type === 'gptoss', vocab: cfg.model.vocab_size === hf.vocab_size,
    layers: d.num_hidden_layers === hf.num_hidden_layers, heads: d.num_attention_heads === hf.num_attention_heads,
    kv_heads: d.num_key_value_heads === hf.num_key_value_heads, head_size: d.head_size === hf.head_dim,
    hidden: d.hidden_size === hf.hidden_size, eos: cfg.model.eos_token_id === hf.eos_token_id,
    context: cfg.model.context_length === hf.max_position_embeddings,
    // onnxruntime-genai gives exactly these layers window-sized KV caches
    sliding_window: d.sliding_window?.window_size === hf.sliding_window &&
      JSON.stringify(d.sliding_window?.layers) ===
      JSON.stringify(hf.layer_types.flatMap((t, i) => (t === 'sliding_attention' ? [i] : []))),
    tokenizer: existsSync(join(dir, 'tokenizer.json')) && existsSync(join(dir, 'tokenizer_config.json')),
  };
  const bad = Object.entries(want).filter(([, v]) => !v).map(([k]) => k);
  return bad.length ? `genai_config.json/tokenizer mismatch: ${bad.join(', ')}` : null;
}

const work = mkdtempSync(join(tmpdir(), 'm2o-gptoss-'));
try {
  for (const fixture of ['gpt-oss-tiny', 'gpt-oss-bf16-tiny']) {
    for (const c of CASES) {
      const label = `${fixture} ${c.name}`;
      const out = join(work, `${fixture}-${c.name}`);
      const err = build(fixture, c.args, out) ?? checkConfig(out, fixture);
      if (err) {
        report(false, `${label} build`, [err]);
        continue;
      }
      const ref = readSafetensors(join(FIXTURES, fixture, c.ref));
      const ids = Array.from(ref.input_ids.data, Number);
      // The sliding layers' caches as onnxruntime-genai allocates them on the CPU (window + 16
      // positions: no eviction within the 12-token prompt) and exactly window-sized as on CUDA
      // (the oldest positions are evicted while the prompt runs).
      for (const slack of [undefined, 0]) {
        const model = await openModel(out, { threads: 1, cacheSlack: slack });
        const cache = slack === 0 ? ' window-sized cache' : '';
        try {
          for (const [mode, opts] of [['prefill', {}], [`prefill${PREFILL}+decode`, { prefill: PREFILL }]]) {
            const r = await runModel(model, ids, opts);
            const v = checkLogits(r.logits, ref.logits.data, r.dims, c.floor, { label: 'logits' });
            const differs = c.mustDiffer === undefined || v.summary.ratio > c.mustDiffer;
            const why = differs ? [] : [`  worst row ratio ${v.summary.ratio} ≤ ${c.mustDiffer}: the option changed nothing`];
            const sized = model.states.filter((st) => st.capacity > 0 && r.states[st.past].dims[2] !== st.capacity)
              .map((st) => `  ${st.present} has ${r.states[st.past].dims[2]} positions, the runtime allocates ${st.capacity}`);
            if (!model.states.some((st) => st.capacity > 0)) sized.push('  no sliding layer got a window-sized cache');
            report(v.ok && differs && !sized.length, `${label} ${mode}${cache}`, [...v.lines, ...why, ...sized]);
          }
        } finally {
          await closeModel(model);
        }
      }
    }
  }
} catch (e) {
  report(false, 'gpt_oss e2e', [String(e.stack ?? e).split('\n').slice(0, 3).join(' | ')]);
} finally {
  rmSync(work, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
