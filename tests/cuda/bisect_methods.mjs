// Localizes a method row of the CUDA suite that fails: the same export (raw experts) run on
// the CPU and CUDA providers, with some MatMuls kept float (nodes_to_exclude), printing the
// worst max|Δ|/max|ref| per variant. A diagnostic for the GPU machine, not a test:
//   node tests/cuda/bisect_methods.mjs   (after tests/cuda/run.sh's setup)
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closeModel, openModel, runModel } from '../e2e/lib/harness.mjs';
import { readSafetensors } from '../e2e/lib/safetensors.mjs';

const BIN = process.env.M2O_BIN ?? 'build/moe2onnx';
const work = mkdtempSync(join(tmpdir(), 'm2o-bisect-'));
const layers = (n, f) => Array.from({ length: n }, (_, i) => f(i)).flat();
const q35La = (p) => layers(3, (i) => [`/model/layers.${i}/linear_attn/${p}/MatMul`]);
const q35Attn = ['q_proj', 'k_proj', 'v_proj', 'o_proj'].map((p) => `/model/layers.3/attn/${p}/MatMul`);
const shared = layers(4, (i) => ['gate_proj', 'up_proj', 'down_proj'].map((p) => `/model/layers.${i}/shared_expert/${p}/MatMul`));
const CASES = [
  ['qwen3_5-moe-tiny', 'k_quant', ['algo_config=k_quant'], []],
  ['qwen3_5-moe-tiny', 'k_quant, lm_head float', ['algo_config=k_quant'], ['/lm_head/MatMul']],
  ['qwen3_5-moe-tiny', 'k_quant, linear_attn in_proj_qkv float', ['algo_config=k_quant'], q35La('in_proj_qkv')],
  ['qwen3_5-moe-tiny', 'k_quant, linear_attn in_proj_z float', ['algo_config=k_quant'], q35La('in_proj_z')],
  ['qwen3_5-moe-tiny', 'k_quant, linear_attn out_proj float', ['algo_config=k_quant'], q35La('out_proj')],
  ['qwen3_5-moe-tiny', 'k_quant, full attention float', ['algo_config=k_quant'], q35Attn],
  ['qwen3_5-moe-tiny', 'k_quant, shared experts float', ['algo_config=k_quant'], shared],
  ['qwen3_5-moe-tiny', 'uint4 experts', ['moe_quant_type=uint4'], []],
  ['gpt-oss-tiny', 'int8 body', ['matmul_mixed_precision=last_matmul:int8,mixed_layers:int8'], []],
];
const jsonInt8 = (exclude) => `quant_config=${JSON.stringify({ weights: { type: 'int8', accuracy_level: 0, overrides: exclude.map((n) => ({ match: { name: n }, exclude: true })) }, moe: { block_size: 32, weights_prepacked: 0 } })}`;
const G_INT8 = [
  ['gpt-oss-tiny', 'int8 body (JSON)', null, []],
  ['gpt-oss-tiny', 'int8 body, lm_head float', null, ['/lm_head/MatMul']],
  ['gpt-oss-tiny', 'int8 body, qkv float', null, layers(2, (i) => [`/model/layers.${i}/attn/qkv_proj/MatMul`])],
  ['gpt-oss-tiny', 'int8 body, o_proj float', null, layers(2, (i) => [`/model/layers.${i}/attn/o_proj/MatMul`])],
];

async function logits(dir, ids, ep) {
  const m = await openModel(dir, { sessionOptions: { executionProviders: [ep === 'cuda' ? { name: 'cuda', deviceId: 0 } : 'cpu'] } });
  try { return (await runModel(m, ids)).logits; } finally { await closeModel(m); }
}

for (const [fixture, name, extra, exclude] of process.env.M2O_BISECT_CASES === '0' ? [] : [...CASES, ...G_INT8]) {
  const input = join('tests/fixtures', fixture), out = join(work, 'x');
  const ids = Array.from(readSafetensors(join(input, 'reference.safetensors')).input_ids.data, Number);
  const opts = extra ? ['int4_accuracy_level=0', 'qmoe_block_size=32', 'qmoe_weights_prepacked=0', ...extra,
                        ...(exclude.length ? [`nodes_to_exclude=${exclude.join(',')}`] : [])]
                     : [jsonInt8(exclude)];
  try {
    execFileSync(BIN, ['-q', '-i', input, '-o', out, '-p', 'int4', '-e', 'cuda', '--extra_options', ...opts], { stdio: 'pipe' });
    const a = await logits(out, ids, 'cpu'), b = await logits(out, ids, process.env.M2O_BISECT_EP ?? 'cuda');
    const V = a.length / ids.length, rows = [];
    for (let t = 0; t < ids.length; t++) {
      let mx = 0, d = 0;
      for (let v = 0; v < V; v++) { mx = Math.max(mx, Math.abs(a[t * V + v])); d = Math.max(d, Math.abs(a[t * V + v] - b[t * V + v])); }
      rows.push(d / mx);
    }
    console.log(`${fixture} ${name}: worst ${Math.max(...rows).toExponential(2)} per position ${rows.map((x) => x.toExponential(1)).join(' ')}`);
  } catch (e) {
    console.log(`${fixture} ${name}: ${String(e.stderr ?? e.message).trim().split('\n').pop()}`);
  }
  rmSync(out, { recursive: true, force: true });
}
rmSync(work, { recursive: true, force: true });

// The int8 MatMul body of gpt-oss-tiny differs between the providers in a 12-token prefill but
// not in a 5-token one: the same export, prefills of several lengths on CUDA against the CPU's.
if (process.env.M2O_BISECT_PREFILL !== '0') {
  for (const fixture of ['gpt-oss-tiny', 'qwen3-moe-tiny']) {
    const input = join('tests/fixtures', fixture), out = mkdtempSync(join(tmpdir(), 'm2o-bisect-p-'));
    const ids = Array.from(readSafetensors(join(input, 'reference.safetensors')).input_ids.data, Number);
    execFileSync(BIN, ['-q', '-i', input, '-o', join(out, 'x'), '-p', 'int4', '-e', 'cuda', '--extra_options', jsonInt8([])], { stdio: 'pipe' });
    const cpu = await logits(join(out, 'x'), ids, 'cpu');
    const V = cpu.length / ids.length;
    const line = [];
    for (const p of [1, 4, 5, 8, 9, 12]) {
      const m = await openModel(join(out, 'x'), { sessionOptions: { executionProviders: [{ name: process.env.M2O_BISECT_EP ?? 'cuda', deviceId: 0 }] } });
      let g;
      try { g = (await runModel(m, ids, p < ids.length ? { prefill: p } : {})).logits; } finally { await closeModel(m); }
      let worst = 0, at = -1;
      for (let t = 0; t < ids.length; t++) {
        let mx = 0, d = 0;
        for (let v = 0; v < V; v++) { mx = Math.max(mx, Math.abs(cpu[t * V + v])); d = Math.max(d, Math.abs(cpu[t * V + v] - g[t * V + v])); }
        if (d / mx > worst) { worst = d / mx; at = t; }
      }
      line.push(`prefill ${p}: ${worst.toExponential(1)} at ${at}`);
    }
    console.log(`${fixture} int8 body (JSON) CUDA vs CPU: ${line.join('; ')}`);
    rmSync(out, { recursive: true, force: true });
  }
}
