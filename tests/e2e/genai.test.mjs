// Every CPU export of every fixture read by onnxruntime-genai's own code: its config parser,
// model-type dispatch and sliding-window cache sizing, built from its sources by
// scripts/build_genai.sh into $M2O_GENAI_DIR (default /var/cache/moe2onnx/genai). Per export:
// genai_load_check accepts the folder, picks the text decoder, feeds every graph input, and
// sizes the KV caches: sliding layers window + 16 positions on the CPU and window on CUDA, the
// others context_length. Controls: the folder with a key the parser does not know, and with the
// vision-language type, must be refused. Then the export runs in ONNX Runtime with caches of
// exactly the sizes the runtime printed, prefill then greedy one-token decode steps; the tokens
// chosen must be the argmax of the reference logits, the logits within the CPU floors.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';

import { checkLogits } from './lib/compare.mjs';
import { closeModel, openModel, runModel } from './lib/harness.mjs';
import { readSafetensors } from './lib/safetensors.mjs';

const BIN = process.env.M2O_BIN ?? 'build/moe2onnx';
const FIXTURES = process.env.M2O_FIXTURES ?? 'tests/fixtures';
const CHECK = join(process.env.M2O_GENAI_DIR ?? '/var/cache/moe2onnx/genai', 'genai_load_check');
const FIXTURE_TYPES = {
  'gpt-oss-tiny': 'gptoss', 'gpt-oss-bf16-tiny': 'gptoss', 'qwen3-moe-tiny': 'qwen3',
  'qwen2-moe-tiny': 'qwen2', 'qwen3_5-moe-tiny': 'qwen3_5_moe_text',
};
const BUILDS = [
  { name: 'fp32', args: ['-p', 'fp32'], ref: 'reference.safetensors', floor: { maxRel: 2e-3 } },
  // float16: the floors of gpt_oss / qwen_moe / qwen3_5.test.mjs for the same export (FP16_FLOOR)
  { name: 'fp16', args: ['-p', 'fp16'], ref: 'reference.safetensors', floor: null },
  { name: 'int4', args: ['-p', 'int4', '--extra_options', 'int4_accuracy_level=0'], ref: 'reference-int4.safetensors', floor: { maxRel: 2e-3 } },
  { name: 'int4-moe8', args: ['-p', 'int4', '--extra_options', 'int4_accuracy_level=0', 'moe_quant_type=int8'], ref: 'reference-int4-moe8.safetensors', floor: { maxRel: 2e-3, sameArgmax: true } },
];
const FP16_FLOOR = {
  gptoss: { maxRel: 5e-3, minCos: 0.9999, sameArgmax: true }, qwen3: { minCos: 0.9999, sameArgmax: true },
  qwen2: { minCos: 0.9999, sameArgmax: true }, qwen3_5_moe_text: { minCos: 0.999, sameArgmax: true },
};
const CPU_SLACK = 16;

if (!existsSync(CHECK)) {
  console.log('skipped: onnxruntime-genai not built (run scripts/build_genai.sh SRC)');
  console.log('0 passed, 0 failed');
  process.exit(0);
}

let passed = 0, failed = 0;
function report(ok, name, lines = []) {
  if (ok) passed++; else failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${lines.length ? ': ' + lines.join(' | ') : ''}`);
}

// genai_load_check's verdict on a folder: { ok, out, err }.
function runCheck(dir, namesFile) {
  try {
    return { ok: true, out: execFileSync(CHECK, [dir, namesFile], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }) };
  } catch (e) {
    return { ok: false, out: String(e.stdout ?? ''), err: String(e.stderr ?? e.message).trim() };
  }
}

// What onnxruntime-genai must report for this fixture's folder; null when it does.
function expectations(lines, hf, type) {
  const bad = [];
  const head = lines.find((l) => l.startsWith('type '));
  if (head !== `type ${type} model DecoderOnly_Model`) bad.push(`got "${head}", want type ${type} as DecoderOnly_Model`);
  const kinds = hf.layer_types ?? Array.from({ length: hf.num_hidden_layers }, () => 'full_attention');
  const kv = new Map(lines.filter((l) => l.startsWith('kv ')).map((l) => l.split(' ').slice(1).map(Number)).map(([L, c, g]) => [L, [c, g]]));
  const states = new Set(lines.filter((l) => l.startsWith('state ')).map((l) => Number(l.split(' ')[1])));
  kinds.forEach((k, L) => {
    if (k === 'linear_attention') {
      if (!states.has(L)) bad.push(`layer ${L}: conv/recurrent states not fed`);
      return;
    }
    const want = k === 'sliding_attention'
      ? [Math.min(hf.sliding_window + CPU_SLACK, hf.max_position_embeddings), hf.sliding_window]
      : [hf.max_position_embeddings, hf.max_position_embeddings];
    const got = kv.get(L);
    if (!got || got[0] !== want[0] || got[1] !== want[1])
      bad.push(`layer ${L} (${k}): KV cache ${got ? got.join('/') : 'none'} (cpu/cuda), want ${want.join('/')}`);
  });
  return bad.length ? bad.join('; ') : null;
}

// The same folder with genai_config.json edited by fn: onnxruntime-genai must refuse it.
function refusedWhen(dir, work, namesFile, label, fn) {
  const bad = join(work, `bad-${label}`);
  rmSync(bad, { recursive: true, force: true });
  execFileSync('mkdir', ['-p', bad]);
  for (const f of readdirSync(dir)) if (f !== 'model.onnx' && f !== 'model.onnx.data') copyFileSync(join(dir, f), join(bad, f));
  const cfg = JSON.parse(readFileSync(join(dir, 'genai_config.json'), 'utf8'));
  fn(cfg);
  writeFileSync(join(bad, 'genai_config.json'), JSON.stringify(cfg));
  return !runCheck(bad, namesFile).ok;
}

// Greedy generation the way the runtime drives it, with its cache sizes: prefill of the
// reference prompt's first PREFILL tokens, then one-token steps; every chosen token (argmax of the
// last row) must be the reference logits' argmax at that position.
const PREFILL = 5;
function argmax(a, o, n) {
  let b = 0;
  for (let i = 1; i < n; i++) if (a[o + i] > a[o + b]) b = i;
  return b;
}

const work = mkdtempSync(join(tmpdir(), 'm2o-genai-'));
try {
  for (const [fixture, type] of Object.entries(FIXTURE_TYPES)) {
    const hf = JSON.parse(readFileSync(join(FIXTURES, fixture, 'config.json'), 'utf8'));
    const text = hf.text_config ? { ...hf, ...hf.text_config } : hf;
    for (const b of BUILDS) {
      const label = `${fixture} ${b.name}`;
      const out = join(work, `${fixture}-${b.name}`);
      try {
        execFileSync(BIN, ['-i', join(FIXTURES, fixture), '-o', out, '-e', 'cpu', ...b.args], { stdio: ['ignore', 'pipe', 'pipe'] });
      } catch (e) {
        report(false, `${label} export`, [String(e.stderr ?? e.message).trim()]);
        continue;
      }
      const session = await ort.InferenceSession.create(join(out, 'model.onnx'));
      const namesFile = join(work, `${fixture}-${b.name}.names`);
      writeFileSync(namesFile, [...session.inputNames.map((n) => `in ${n}`), ...session.outputNames.map((n) => `out ${n}`)].join('\n') + '\n');
      await session.release();
      const r = runCheck(out, namesFile);
      const why = r.ok ? expectations(r.out.trim().split('\n'), text, type) : r.err;
      report(!why, `${label} loads in onnxruntime-genai`, why ? [why] : [r.out.trim().split('\n')[0]]);
      if (b.name === 'fp32') {
        const c1 = refusedWhen(out, work, namesFile, 'key', (cfg) => { cfg.model.decoder.inputs.past_recurrent_names = 'past_key_values.%d.recurrent_state'; });
        const c2 = refusedWhen(out, work, namesFile, 'type', (cfg) => { cfg.model.type = fixture.startsWith('qwen3_5') ? 'qwen3_5' : 'phi3v'; });
        report(c1 && c2, `${label} controls refused (unknown key, vision-language type)`, c1 && c2 ? [] : [`unknown key refused ${c1}, VLM type refused ${c2}`]);
      }
      // generation with the caches the runtime sizes for the CPU
      const ref = readSafetensors(join(FIXTURES, fixture, b.ref));
      const ids = Array.from(ref.input_ids.data, Number);
      const model = await openModel(out, { threads: 1 });
      try {
        const g = await runModel(model, ids, { prefill: PREFILL });
        const V = g.vocab, T = ids.length, rl = ref.logits.data;
        const wrong = [];
        for (let t = PREFILL - 1; t < T; t++) {
          const mine = argmax(g.logits, t * V, V), want = argmax(rl, t * V, V);
          if (mine !== want) wrong.push(`position ${t}: token ${mine}, reference argmax ${want}`);
        }
        const v = checkLogits(g.logits, rl, g.dims, b.floor ?? FP16_FLOOR[type], { label: 'logits' });
        const sized = model.states.filter((s) => s.capacity > 0).map((s) => `${s.past}:${g.states[s.past].dims[2]}`);
        report(!wrong.length && v.ok, `${label} greedy ${T - PREFILL + 1} tokens after a ${PREFILL}-token prefill`,
          [...wrong.slice(0, 3), ...v.lines, ...(sized.length ? [`window-sized caches ${sized.join(' ')}`] : [])]);
      } finally {
        await closeModel(model);
      }
    }
  }
} catch (e) {
  report(false, 'genai e2e', [String(e.stack ?? e).split('\n').slice(0, 3).join(' | ')]);
} finally {
  rmSync(work, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
