// exclude_lm_head / include_hidden_states with the meaning of onnxruntime-genai's builder:
// exclude_lm_head=true drops the LM head and the graph outputs hidden_states (the final norm's
// output) instead of logits; include_hidden_states=true outputs hidden_states beside logits.
// For each fixture, fp32 exports run in ONNX Runtime (onnxruntime-node, CPU, prefill of the
// reference prompt) and are compared:
//   - the graph's and genai_config's outputs are exactly the builder's;
//   - include_hidden_states logits equal the default export's logits;
//   - hidden_states from both options agree, and match the reference's last hidden state (the
//     final norm's output in transformers' output_hidden_states) at the fp32 logits floor.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { checkLogits } from './lib/compare.mjs';
import { closeModel, openModel, runModel, tensorToF32 } from './lib/harness.mjs';
import { readSafetensors } from './lib/safetensors.mjs';

const FIXTURES = process.env.M2O_FIXTURES ?? 'tests/fixtures';
const BIN = process.env.M2O_BIN ?? 'build/moe2onnx';
const FP32_FLOOR = { maxRel: 2e-3 }; // the fp32 logits floor of the other e2e tests

let passed = 0, failed = 0;
function report(ok, name, line) {
  if (ok) passed++; else failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}: ${line}`);
}

function build(ckpt, out, extra) {
  const args = ['-q', '-i', ckpt, '-o', out, '-p', 'fp32', '-e', 'cpu'];
  if (extra) args.push('--extra_options', extra);
  execFileSync(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
}

const maxAbsDiff = (a, b) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

async function outputsOf(dir) {
  const model = await openModel(dir);
  const names = [...model.session.outputNames];
  await closeModel(model);
  const cfg = JSON.parse(readFileSync(join(dir, 'genai_config.json'), 'utf8'));
  return { graph: names, config: Object.keys(cfg.model.decoder.outputs) };
}

async function fixture(name, tmp) {
  const ckpt = join(FIXTURES, name);
  const ref = readSafetensors(join(ckpt, 'reference.safetensors'));
  const ids = Array.from(ref.input_ids.data, Number);
  const [layersPlusOne, T, H] = ref.hidden_states.shape;
  const refLast = ref.hidden_states.data.subarray((layersPlusOne - 1) * T * H, layersPlusOne * T * H);
  const dirs = { plain: join(tmp, `${name}-plain`), incl: join(tmp, `${name}-incl`), excl: join(tmp, `${name}-excl`) };
  build(ckpt, dirs.plain);
  build(ckpt, dirs.incl, 'include_hidden_states=true');
  build(ckpt, dirs.excl, 'exclude_lm_head=true');

  const ex = await outputsOf(dirs.excl), inc = await outputsOf(dirs.incl);
  report(ex.graph[0] === 'hidden_states' && !ex.graph.includes('logits') && ex.config.includes('hidden_states') &&
    !ex.config.includes('logits'), `${name} exclude_lm_head outputs`,
    `graph [${ex.graph.slice(0, 2)}, ...], genai_config [${ex.config}]`);
  report(inc.graph[0] === 'hidden_states' && inc.graph[1] === 'logits' && inc.config.includes('hidden_states') &&
    inc.config.includes('logits'), `${name} include_hidden_states outputs`,
    `graph [${inc.graph.slice(0, 2)}, ...], genai_config [${inc.config}]`);

  const plain = await runModel(dirs.plain, ids);
  let hiddenIncl = null;
  const incl = await runModel(dirs.incl, ids, { onStep: ({ results }) => { hiddenIncl = tensorToF32(results.hidden_states); } });
  const d = maxAbsDiff(incl.logits, plain.logits);
  report(d === 0, `${name} include_hidden_states logits`, `max|Δ| ${d} against the default export`);

  const excl = await runModel(dirs.excl, ids); // rows are hidden_states here
  report(excl.vocab === H, `${name} exclude_lm_head hidden_states shape`, `[${excl.dims}], hidden_size ${H}`);
  const dh = maxAbsDiff(excl.logits, hiddenIncl);
  report(dh === 0, `${name} hidden_states of both options`, `max|Δ| ${dh}`);
  const c = checkLogits(excl.logits, refLast, [1, T, H], FP32_FLOOR, { label: 'hidden_states vs reference last hidden state' });
  report(c.ok, `${name} exclude_lm_head`, c.lines.join(' | '));
}

const tmp = mkdtempSync(join(tmpdir(), 'm2o-hidden-'));
try {
  for (const name of ['qwen3-moe-tiny', 'gpt-oss-tiny', 'qwen3_5-moe-tiny']) {
    try { await fixture(name, tmp); } catch (e) { report(false, name, String(e.stderr ?? e.message).trim()); }
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
