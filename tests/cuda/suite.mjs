// The CUDA suite: every fixture (and the Qwen variants the CPU tests cover) converted in every
// build the CUDA provider runs, each run in ONNX Runtime's CUDA execution provider through its
// genai_config.json (a full prefill, and a 5-token prefill followed by one-token decode steps),
// compared row by row with the matching transformers reference. tests/cuda/run.sh runs it on the
// GPU machine and writes RESULTS.md; `M2O_CUDA_EP=cpu node tests/cuda/suite.mjs` runs, here, what
// needs no GPU (the CPU controls against their references, the layout checks, which only
// convert) to check the plumbing. Jobs run in parallel processes under a deadline (see "running").
//
// Router ties. These tiny random models have near-tied router scores; float16 arithmetic then
// picks another expert at some positions (transformers' own float16 does the same) and that
// row's logits move by ~1e-1. So each build also names its control: the same quantization built
// for the CPU with float32 arithmetic, run on the CPU provider with its router logits exposed as
// outputs (build/tools/onnx_poke expose). A position is excluded when, in any MoE layer, the gap
// between the k-th and (k+1)-th router logit is below TIE_UNITS unit roundoffs of the build's
// arithmetic times that position's largest |router logit|: 10 x 2^-11 (float16) ~ 4.9e-3,
// 10 x 2^-8 (bfloat16) ~ 3.9e-2. The router logits' own rounding error is a few unit roundoffs
// (the logits downstream move by ~1e-3 in float16), so no flip hides outside the excluded
// positions. Excluded positions are counted in every row,
// and the maximum over all positions is printed beside, so a real bug cannot hide behind a tie.
//
// Floors (max|Δ| / max|ref| per row, over clear positions): an export may be at most twice as
// far from the float32 reference as the original model itself, run by transformers on the same
// GPU in the same precision (tests/cuda/transformers_precision.py, over the same positions), and
// never further than a fixed floor allows when the original is closer:
//   float32 CPU control: 2e-3 (measures ~1e-6);
//   float16 arithmetic (fp16 io, int4/int8 QMoE with float16 io): 2e-3, the CPU suite's floor;
//   bfloat16 arithmetic (-p bf16, use_cuda_bf16): 1.6e-2 = 2e-3 x 8, the ratio of bfloat16's
//     unit roundoff (2^-8) to float16's (2^-11).
// Why the measured part: these random fixtures amplify rounding. transformers' own float16
// forward lands 1.5e-3 to 6.5e-3 from its float32 (gpt-oss, Qwen3, Qwen2) and 2.8e-2 for
// qwen3_5-moe-tiny, whose linear-attention heads cancel at token 0 (tests/e2e/qwen3_5.test.mjs
// explains it; ONNX Runtime's CPU float16 run of the same export shows the same 2.4e-2); its
// bfloat16 forward 1e-2 to 1.5e-2, and 2.3e-1 for qwen3_5. A fixed 2e-3 would fail correct
// exports of those models; a floor tied to the original model's own error in the same precision
// still fails a wrong layout or a wrong kernel (errors of order 1). The variants (generated from
// a fixture) take their fixture's measurement. Int4/int8 builds may also be twice as far from
// their references as the same checkpoint's float build of the same arithmetic (intFloor below
// says why).
// mxfp4: this ONNX Runtime build has no fp4 QMoE (it needs USE_FP4_QMOE), so those exports are
// loaded and run to record that error (any other error fails the row) and proven by
// `moe2onnx verify` (our independent decoder) instead.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { closeModel, openModel, runModel, tensorToF32 } from '../e2e/lib/harness.mjs';
import { readSafetensors } from '../e2e/lib/safetensors.mjs';
import ort from 'onnxruntime-node';
import { BIG, BIG_IDS, VARIANTS as QWEN3_5_LAYOUTS, forwardModel, makeBigCheckpoint, makeVariant } from '../e2e/qwen3_5_ref.mjs';
import { qwenMoeForward } from '../e2e/qwen_moe_ref.mjs';
import { QWEN_VARIANTS } from '../e2e/qwen_variants.mjs';
import { judge, topkMargins } from './ties.mjs';

const EP = process.env.M2O_CUDA_EP ?? 'cuda';
const BIN = process.env.M2O_BIN ?? 'build/moe2onnx';
const POKE = process.env.M2O_POKE ?? 'build/tools/onnx_poke';
const FIXTURES = 'tests/fixtures';
const PREFILL = 5;
const TIE_UNITS = 10;
const UNIT = { fp16: 2 ** -11, bf16: 2 ** -8, fp32: 2 ** -24 };
const FLOOR = { fp32: 2e-3, fp16: 2e-3, bf16: 2e-3 * 8 };
// transformers_precision.py's key for the 35B-A3B-width checkpoint (make_q35_big.mjs writes it).
const Q35_BIG = 'qwen3_5-35b-a3b-widths';
const TF = process.env.M2O_TF_PRECISION && existsSync(process.env.M2O_TF_PRECISION)
  ? JSON.parse(readFileSync(process.env.M2O_TF_PRECISION, 'utf8')) : null;
const FIXTURE_NAMES = ['gpt-oss-tiny', 'gpt-oss-bf16-tiny', 'qwen3-moe-tiny', 'qwen2-moe-tiny', 'qwen3_5-moe-tiny'];

const ACC0 = ['int4_accuracy_level=0', 'int4_block_size=32'];
const CONTROL_ARGS = {
  fp32: ['-p', 'fp32', '-e', 'cpu'],
  'int4-e32': ['-p', 'int4', '-e', 'cpu', '--extra_options', ...ACC0, 'qmoe_block_size=32'],
  'int4-e64': ['-p', 'int4', '-e', 'cpu', '--extra_options', ...ACC0, 'qmoe_block_size=64'],
  'int4-e128': ['-p', 'int4', '-e', 'cpu', '--extra_options', ...ACC0, 'qmoe_block_size=128'],
  int8: ['-p', 'int4', '-e', 'cpu', '--extra_options', ...ACC0, 'moe_quant_type=int8', 'qmoe_block_size=32'],
};
const REF_FILE = {
  fp32: 'reference', 'int4-e32': 'reference-int4', 'int4-e64': 'reference-int4-e64',
  'int4-e128': 'reference-int4-e128', int8: 'reference-int4-moe8',
};

// The builds of one checkpoint whose hidden size H and expert width I are given.
function builds(H, I) {
  const cuda = (name, arith, control, extra, more = {}) =>
    ({ name, ep: 'cuda', arith, control, args: ['-p', 'int4', '-e', 'cuda', '--extra_options', ...ACC0, ...extra], ...more });
  const list = [
    { name: 'fp32 CPU (control)', ep: 'cpu', arith: 'fp32', control: 'fp32', args: CONTROL_ARGS.fp32 },
    { name: 'fp16', ep: 'cuda', arith: 'fp16', control: 'fp32', args: ['-p', 'fp16', '-e', 'cuda'] },
    { name: 'bf16', ep: 'cuda', arith: 'bf16', control: 'fp32', args: ['-p', 'bf16', '-e', 'cuda'] },
  ];
  for (const bs of [32, 64, 128]) {
    if (H % bs || I % bs) continue;
    list.push(cuda(`int4 block ${bs} prepacked`, 'fp16', `int4-e${bs}`, [`qmoe_block_size=${bs}`, 'qmoe_weights_prepacked=1']));
    list.push(cuda(`int4 block ${bs} raw`, 'fp16', `int4-e${bs}`, [`qmoe_block_size=${bs}`, 'qmoe_weights_prepacked=0']));
  }
  list.push(cuda('int8 experts block 32', 'fp16', 'int8', ['moe_quant_type=int8', 'qmoe_block_size=32']));
  list.push(cuda('int4 block 32 use_cuda_bf16', 'bf16', 'int4-e32', ['qmoe_block_size=32', 'use_cuda_bf16=true'],
                { refusedWhen: (cfg) => (cfg.text_config ?? cfg).shared_expert_intermediate_size > 0 }));
  list.push({ name: 'mxfp4 experts', ep: 'cuda', arith: 'fp16', mxfp4: true,
              args: ['-p', 'int4', '-e', 'cuda', '--extra_options', 'moe_quant_type=mxfp4'] });
  return list;
}

// Builds whose run this EP can do: all on the GPU machine; here, the CPU ones (the controls
// are built and judged in both cases; conversion-only checks run everywhere).
const runnable = (b) => EP === 'cuda' || b.ep === 'cpu';

function convert(input, out, args) {
  try {
    execFileSync(BIN, ['-q', '-i', input, '-o', out, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    return null;
  } catch (e) {
    return `conversion failed (exit ${e.status}): ${String(e.stderr ?? e.message).trim().split('\n').pop()}`;
  }
}

function poke(...args) {
  execFileSync(POKE, args, { stdio: ['ignore', 'pipe', 'pipe'] });
}

const providers = (ep) => (ep === 'cuda' ? [{ name: 'cuda', deviceId: 0 }] : ['cpu']);

// Router logits of every MoE layer at every position of ids, from the control export on the CPU:
// an array (per layer) of Float32Array [T * E].
async function routerLogits(dir, ids, ep = 'cpu') {
  poke('expose', join(dir, 'model.onnx'), join(dir, 'model_routers.onnx'), '/moe/router/Reshape');
  const model = await openModel(dir, { filename: 'model_routers.onnx', sessionOptions: { executionProviders: providers(ep) } });
  try {
    const names = model.session.outputNames.filter((n) => n.endsWith('/moe/router/Reshape/output_0'));
    const layers = [];
    await runModel(model, ids, { onStep: ({ results }) => { for (const n of names) layers.push(tensorToF32(results[n])); } });
    return layers;
  } finally {
    await closeModel(model);
  }
}

const results = [];
function record(row) {
  results.push(row);
  // a job's child process keeps its rows on disk as it goes: a job stopped at the deadline keeps them
  if (process.env.M2O_CUDA_JOB_OUT) writeFileSync(process.env.M2O_CUDA_JOB_OUT, JSON.stringify(results));
  const r = row.runs?.map((x) => `${x.mode} maxrel ${fmt(x.maxrel)} (all ${fmt(x.all)}, ${x.excluded} excluded)`).join('; ');
  console.log(`${row.ok ? 'ok  ' : 'FAIL'} ${row.fixture} ${row.build} [${row.ep}]: ${row.note ?? r}`);
}
const fmt = (x) => (Number.isFinite(x) ? x.toExponential(2) : String(x));

// The floor of a build of `source` (a fixture name) over the clear positions: the fixed floor of
// its arithmetic, or twice transformers' own error in that precision where that is larger.
function floorOf(source, arith, clear) {
  const fixed = FLOOR[arith];
  const rows = arith === 'fp32' ? null : TF?.[source]?.[arith];
  if (!Array.isArray(rows)) return { floor: fixed, text: `${fixed}` };
  const noise = Math.max(...rows.filter((_, t) => clear[t]));
  return 2 * noise > fixed ? { floor: 2 * noise, text: `${fmt(2 * noise)} (2 x transformers ${fmt(noise)})` }
                           : { floor: fixed, text: `${fixed} (transformers ${fmt(noise)})` };
}

// KV caches as onnxruntime-genai gives them on CUDA (past_present_share_buffer): buffers of the
// whole sequence from the first step, so past and present have one shape. Needed by the float32
// view of a bfloat16 model: its past is a Cast output, which ONNX Runtime reuses in place for
// the present (GroupQueryAttention allows it) and refuses when the shapes differ.
function sharedKv(T) {
  return (meta) => {
    if (!/^past_key_values\.\d+\.(key|value)$/.test(meta.name)) return undefined;
    const dims = meta.shape.map((d, i) => (i === 0 ? 1 : i === 2 ? T : d));
    return new ort.Tensor(meta.type, new Float32Array(dims.reduce((a, x) => a * x, 1)), dims);
  };
}

// Builds moe2onnx must refuse here: int4 with bfloat16 io for models with a shared expert, which
// ONNX Runtime's CUDA provider computes wrongly (measured by this suite before the refusal: 5e-2
// to 4e-1 of max|logit|, 5 to 20 times transformers' own bfloat16 error).
function recordRefusal(fixture, b, err) {
  const ok = Boolean(err) && err.includes(b.args.find((a) => a.startsWith('use_cuda_bf16')).split('=')[0]);
  record({ fixture, build: b.name, ep: b.ep, ok, note: ok ? `refused at conversion, as it must be: ${err.replace(/^conversion failed \(exit \d+\): /, '')}` : `expected a refusal, got ${err ?? 'an export'}` });
}

// int4/int8 kernels (MatMulNBits, QMoE) add float16 rounding of their own on CUDA: measured,
// the int builds land 1.6 to 1.9 times as far from their quantization-aware references as the
// same checkpoint's float16 build from the float one, with no router tie involved (the
// 35B-A3B-width checkpoint: 1.3e-3 float16, 2.1e-3 to 2.5e-3 int4/int8). So an int build may be
// twice as far as that float build of the same arithmetic measured (which its own floor bounds);
// a wrong layout, scale or gate order moves the logits by 1e-1 or more.
function intFloor(b, base, floats) {
  const f = floats[b.arith];
  if (!b.name.startsWith('int') || !(f > 0) || 2 * f <= base.floor) return base;
  return { floor: 2 * f, text: `${fmt(2 * f)} (2 x the ${b.arith} build's ${fmt(f)})` };
}

// Runs one export (prefill and prefill+decode) against ref logits. floats: the worst maxrel of
// this checkpoint's float builds by arithmetic ({ fp16, bf16 }), filled here as they run.
async function runBuild(fixture, source, b, out, ref, ids, clear, floats = {}) {
  const { floor, text } = intFloor(b, floorOf(source, b.arith, clear), floats);
  const base = { fixture, build: b.name, ep: b.ep, floor: text };
  let file = 'model.onnx', initialState;
  if (b.arith === 'bf16') { // onnxruntime-node has no bfloat16 tensors: float32 graph io, cast inside
    poke('f32io', join(out, 'model.onnx'), join(out, 'model_f32io.onnx'));
    file = 'model_f32io.onnx';
    initialState = sharedKv(ids.length);
  }
  let model;
  try {
    model = await openModel(out, { filename: file, sessionOptions: { executionProviders: providers(b.ep) } });
  } catch (e) {
    return record({ ...base, ok: false, note: `load failed: ${String(e.message).split('\n')[0].slice(0, 300)}` });
  }
  try {
    const runs = [];
    for (const [mode, opts] of [['prefill', {}], [`prefill${PREFILL}+decode`, { prefill: PREFILL }]]) {
      const r = await runModel(model, ids, { ...opts, initialState });
      runs.push({ mode, ...judge(r.logits, ref, r.dims, clear, floor) });
    }
    record({ ...base, ok: runs.every((x) => x.ok), runs });
    if (b.name === b.arith && runs.every((x) => x.ok)) floats[b.arith] = Math.max(...runs.map((x) => x.maxrel));
  } catch (e) {
    record({ ...base, ok: false, note: `run failed: ${String(e.message).split('\n')[0].slice(0, 300)}` });
  } finally {
    await closeModel(model);
  }
}

async function mxfp4Row(fixture, b, input, out) {
  const base = { fixture, build: b.name, ep: b.ep, floor: null };
  // The expected failure is the missing fp4 kernel, at load or at the first run; any other error
  // (a graph ONNX Runtime refuses for another reason) is a FAIL, so a real bug cannot hide here.
  let load, loadOk = true;
  try {
    const m = await openModel(out, { sessionOptions: { executionProviders: providers(b.ep) } });
    try { await runModel(m, [1, 2, 3]); } finally { await closeModel(m); }
    load = 'loads and runs (this ONNX Runtime build has an fp4 QMoE: give this row a reference)';
  } catch (e) {
    const msg = String(e.message).split('\n')[0].slice(0, 200);
    loadOk = /USE_FP4_QMOE/.test(String(e.message));
    load = loadOk ? `not runnable: this ONNX Runtime build lacks fp4 QMoE (USE_FP4_QMOE): ${msg}` : `unexpected load/run error: ${msg}`;
  }
  let verdict;
  try {
    verdict = execFileSync(BIN, ['verify', '-i', input, '-o', out], { encoding: 'utf8' }).trim().split('\n').pop();
  } catch (e) {
    verdict = `verify exit ${e.status}: ${String(e.stdout ?? '').trim().split('\n').pop()}`;
  }
  record({ ...base, ok: loadOk && verdict.startsWith('verify: PASS'), note: `${load}; ${verdict}` });
}

// Controls of a checkpoint: router margins (and, for variants, reference logits) per quantization.
async function controls(work, tag, input, ids, k, which) {
  const out = {};
  for (const c of which) {
    const dir = join(work, `${tag}-control-${c}`);
    const err = convert(input, dir, CONTROL_ARGS[c]);
    if (err) throw new Error(`${tag} control ${c}: ${err}`);
    out[c] = { dir, margins: topkMargins(await routerLogits(dir, ids), ids.length, k) };
  }
  return out;
}

// The quantized CPU controls are exports in their own right: each is judged against its
// reference too (float32 arithmetic, every position clear), which also proves that a CUDA row
// and its control were given the same reference.
const CONTROL_NAME = {
  'int4-e32': 'int4 block 32', 'int4-e64': 'int4 block 64', 'int4-e128': 'int4 block 128', int8: 'int8 experts block 32',
};
async function controlRows(label, source, ctl, refOf, ids) {
  for (const [c, { dir }] of Object.entries(ctl)) {
    if (c === 'fp32') continue; // the fp32 control is one of the builds
    const b = { name: `${CONTROL_NAME[c]} CPU (control)`, ep: 'cpu', arith: 'fp32', control: c };
    await runBuild(label, source, b, dir, refOf(c), ids, ids.map(() => true));
  }
}

const topK = (cfg) => cfg.num_experts_per_tok ?? cfg.experts_per_token ?? cfg.text_config?.num_experts_per_tok;
const widths = (cfg) => {
  const c = cfg.text_config ?? cfg;
  return [c.hidden_size, c.moe_intermediate_size ?? c.intermediate_size];
};

async function fixtureRows(work, fixture) {
  const input = join(FIXTURES, fixture);
  const cfg = JSON.parse(readFileSync(join(input, 'config.json'), 'utf8'));
  const [H, I] = widths(cfg);
  const list = builds(H, I);
  const needed = [...new Set(list.filter((b) => b.control).map((b) => b.control))];
  const refs = Object.fromEntries(needed.map((c) => [c, readSafetensors(join(input, `${REF_FILE[c]}.safetensors`))]));
  const ids = Array.from(refs.fp32.input_ids.data, Number);
  const ctl = await controls(work, fixture, input, ids, topK(cfg), needed);
  const floats = {};
  for (const b of list.filter(runnable)) {
    const out = join(work, `${fixture}-${b.name.replace(/[^a-z0-9]+/gi, '_')}`);
    const err = convert(input, out, b.args);
    if (b.refusedWhen?.(cfg)) { recordRefusal(fixture, b, err); continue; }
    if (err) { record({ fixture, build: b.name, ep: b.ep, ok: false, note: err }); continue; }
    if (b.mxfp4) { await mxfp4Row(fixture, b, input, out); continue; }
    const tau = TIE_UNITS * UNIT[b.arith];
    const clear = ctl[b.control].margins.map((m) => m >= tau);
    await runBuild(fixture, fixture, b, out, refs[b.control].logits.data, ids, clear, floats);
    rmSync(out, { recursive: true, force: true });
  }
  await controlRows(fixture, fixture, ctl, (c) => refs[c].logits.data, ids);
}

// Variants with their own config: references from the independent forward pass of
// qwen_moe_ref.mjs (float, and int4 with the build's expert block); layouts that must export
// byte-identically: the CUDA export compared with the fixture's.
async function variantRows(work, v) {
  const src = join(FIXTURES, v.fixture), dir = join(work, v.name);
  v.write(src, dir);
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  const ids = Array.from(readSafetensors(join(src, 'reference.safetensors')).input_ids.data, Number);
  const [H, I] = widths(cfg);
  const list = builds(H, I).filter((b) => !b.mxfp4 && (b.control === 'fp32' || b.control?.startsWith('int4')));
  if (v.sameAs) {
    for (const b of list.filter((x) => x.ep === 'cuda' && !x.refusedWhen?.(cfg))) {
      const a = join(work, `${v.name}-x`), f = join(work, `${v.name}-f`);
      const err = convert(dir, a, b.args) ?? convert(src, f, b.args);
      const same = !err && ['model.onnx', 'model.onnx.data'].every((n) => readFileSync(join(a, n)).equals(readFileSync(join(f, n))));
      record({ fixture: v.name, build: b.name, ep: b.ep, ok: same, note: err ?? `export ${same ? 'byte-identical to' : 'DIFFERS from'} ${v.fixture}'s` });
      rmSync(a, { recursive: true, force: true });
      rmSync(f, { recursive: true, force: true });
    }
    return;
  }
  const tensors = readSafetensors(join(dir, 'model.safetensors'));
  const needed = [...new Set(list.map((b) => b.control))];
  const ctl = await controls(work, v.name, dir, ids, cfg.num_experts_per_tok, needed);
  const floats = {};
  const refs = new Map(); // reference logits per control quantization, computed once
  const refOf = (c) => {
    if (!refs.has(c)) {
      const bs = Number(/^int4-e(\d+)$/.exec(c)?.[1] ?? 0);
      const quant = bs ? { linearBits: 4, expertBits: 4, block: 32, expertBlock: bs } : null;
      refs.set(c, Float32Array.from(qwenMoeForward(tensors, cfg, ids, quant).logits));
    }
    return refs.get(c);
  };
  for (const b of list.filter(runnable)) {
    const ref = refOf(b.control);
    const out = join(work, `${v.name}-${b.name.replace(/[^a-z0-9]+/gi, '_')}`);
    const err = convert(dir, out, b.args);
    if (b.refusedWhen?.(cfg)) { recordRefusal(v.name, b, err); continue; }
    if (err) { record({ fixture: v.name, build: b.name, ep: b.ep, ok: false, note: err }); continue; }
    const clear = ctl[b.control].margins.map((m) => m >= TIE_UNITS * UNIT[b.arith]);
    await runBuild(`${v.name} (${v.what})`, v.fixture, b, out, ref, ids, clear, floats);
    rmSync(out, { recursive: true, force: true });
  }
  await controlRows(`${v.name} (${v.what})`, v.fixture, ctl, refOf, ids);
}

// Qwen3.5: the layouts the CPU test proves byte-identical (vision-language nesting, fused
// experts, shards) must stay byte-identical in every CUDA build; and a random checkpoint with
// Qwen3.5-35B-A3B's attention widths (16 query / 2 KV heads of 256, 64 rotary dimensions, the
// fused q/k-norm GroupQueryAttention at full size) runs against the float64 model of
// qwen3_5_ref.mjs (float, or quantized as the build is); transformers_precision.py measures the
// original model's own float16/bfloat16 error on it like on the fixtures (against its float32).
async function qwen35LayoutRows(work) {
  const fixture = 'qwen3_5-moe-tiny', src = join(FIXTURES, fixture);
  const cfg = JSON.parse(readFileSync(join(src, 'config.json'), 'utf8'));
  const cudaBuilds = builds(...widths(cfg)).filter((b) => b.ep === 'cuda' && !b.refusedWhen?.(cfg));
  for (const v of QWEN3_5_LAYOUTS) {
    const dir = join(work, `q35-${v.name}`);
    makeVariant(src, dir, cfg, v);
    for (const b of cudaBuilds) {
      const a = join(work, 'q35-x'), f = join(work, 'q35-f');
      const err = convert(dir, a, b.args) ?? convert(src, f, b.args);
      const same = !err && ['model.onnx', 'model.onnx.data', 'genai_config.json'].every((n) => readFileSync(join(a, n)).equals(readFileSync(join(f, n))));
      record({ fixture: `${fixture} ${v.name} layout`, build: b.name, ep: b.ep, ok: same,
               note: err ?? `export ${same ? 'byte-identical to' : 'DIFFERS from'} the fixture's` });
      rmSync(a, { recursive: true, force: true });
      rmSync(f, { recursive: true, force: true });
    }
  }
}

async function qwen35BigRows(work) {
  const src = join(FIXTURES, 'qwen3_5-moe-tiny');
  const dir = join(work, 'q35-big');
  const ck = makeBigCheckpoint(dir, BIG, src);
  const ids = BIG_IDS;
  const list = builds(...widths(BIG)).filter((b) => !b.mxfp4 && !b.refusedWhen?.(BIG) && (b.control === 'fp32' || b.control?.startsWith('int4') || b.control === 'int8'));
  const ctl = await controls(work, 'q35-big', dir, ids, BIG.num_experts_per_tok, [...new Set(list.map((b) => b.control))]);
  const refs = new Map(); // float64 logits per quantization
  const refOf = (c) => {
    if (refs.has(c)) return refs.get(c);
    const bs = Number(/^int4-e(\d+)$/.exec(c)?.[1] ?? 32);
    const q = c === 'fp32' ? undefined : { linear: 4, experts: c === 'int8' ? 8 : 4, block: 32, expertBlock: bs, axis: 'k' };
    refs.set(c, Float32Array.from(forwardModel(BIG, ck, ids, q)));
    return refs.get(c);
  };
  const floats = {};
  for (const b of list.filter(runnable)) {
    const ref = refOf(b.control);
    const out = join(work, `q35-big-${b.name.replace(/[^a-z0-9]+/gi, '_')}`);
    const err = convert(dir, out, b.args);
    if (err) { record({ fixture: 'qwen3_5 35B-A3B widths', build: b.name, ep: b.ep, ok: false, note: err }); continue; }
    const clear = ctl[b.control].margins.map((m) => m >= TIE_UNITS * UNIT[b.arith]);
    await runBuild('qwen3_5 35B-A3B widths (random)', Q35_BIG, b, out, ref, ids, clear, floats);
    rmSync(out, { recursive: true, force: true });
  }
  await controlRows('qwen3_5 35B-A3B widths (random)', Q35_BIG, ctl, refOf, ids);
}

// Quantization methods (issue 18). For each method, the CUDA export with raw expert weights
// (qmoe_weights_prepacked=0) is run on the CPU provider: the same file, float16 io, the CPU
// kernels (whose formats the CPU tests prove against float64 forward passes and `moe2onnx
// verify`). That is the reference for the same file on the CUDA provider and for the default
// (CUTLASS-prepacked) export, so only the arithmetic differs and the float16 floors apply (and
// twice this checkpoint's float16 build, as for every int row). What this proves is that ONNX
// Runtime's CUDA kernels read each format as its CPU kernels do. A method ONNX Runtime's CUDA
// provider cannot run must be refused at conversion: such a row passes only on a refusal
// naming the option (cudaRefused: the text the message must hold).
const METHOD_BASE = ['int4_accuracy_level=0'];
// M2O_METHOD_EP=cpu runs the method rows' "CUDA" runs on the CPU provider here, to check their
// plumbing without a GPU (every row must then agree exactly with its reference).
const METHOD_EP = process.env.M2O_METHOD_EP ?? 'cuda';
const METHODS = [
  { name: 'MatMulNBits asymmetric (zero points)', extra: ['is_symmetric=false', 'qmoe_block_size=32'] },
  { name: 'MatMulNBits k_quant', extra: ['algo_config=k_quant', 'qmoe_block_size=32'] },
  { name: 'MatMulNBits INC rtn', extra: ['algo_config=rtn', 'qmoe_block_size=32'] },
  { name: 'k_quant_mixed (int8 presets)', extra: ['algo_config=k_quant_mixed', 'qmoe_block_size=32'] },
  { name: 'scale_search (MatMul and experts)', extra: ['scale_search=true', 'qmoe_block_size=32'] },
  { name: 'experts uint4 (zero points)', extra: ['moe_quant_type=uint4', 'qmoe_block_size=32'] },
  { name: 'experts uint8 (zero points)', extra: ['moe_quant_type=uint8', 'qmoe_block_size=32'] },
  { name: 'experts int4 per-channel', extra: ['qmoe_block_size=0'] },
  { name: 'experts int8 per-channel', extra: ['moe_quant_type=int8', 'qmoe_block_size=0'] },
  { name: 'int8 MatMul body (quant_config)', json: { weights: { type: 'int8', accuracy_level: 0 }, moe: { block_size: 32 } } },
];
const METHOD_FIXTURES = ['qwen3-moe-tiny', 'qwen2-moe-tiny', 'gpt-oss-tiny', 'qwen3_5-moe-tiny'];
function methodArgs(m, raw) {
  const json = m.json && raw ? { ...m.json, moe: { ...m.json.moe, weights_prepacked: 0 } } : m.json;
  return ['-p', 'int4', '-e', 'cuda', '--extra_options',
          ...(json ? [`quant_config=${JSON.stringify(json)}`]
                   : [...METHOD_BASE, ...m.extra, ...(raw ? ['qmoe_weights_prepacked=0'] : [])])];
}

// The float16 build of a checkpoint against its float32 reference, measured (not recorded):
// the int rule's yardstick (intFloor).
async function fp16Yardstick(work, fixture, input, cfg, ids) {
  const floats = {}, f16 = join(work, `${fixture}-m-fp16`);
  if (convert(input, f16, ['-p', 'fp16', '-e', 'cuda'])) return floats;
  const fctl = await controls(work, `${fixture}-m`, input, ids, topK(cfg), ['fp32']);
  const clear = fctl.fp32.margins.map((x) => x >= TIE_UNITS * UNIT.fp16);
  const ref32 = readSafetensors(join(input, 'reference.safetensors')).logits.data;
  const before = results.length;
  await runBuild(fixture, fixture, { name: 'fp16', ep: 'cuda', arith: 'fp16', control: 'fp32' }, f16, ref32, ids, clear, floats);
  results.splice(before);
  rmSync(f16, { recursive: true, force: true });
  return floats;
}

// Per position, the largest router-logit difference between two runs of one export over the MoE
// layers, relative to the reference's largest |logit| there (got, ref: per layer [T * E]); and
// the same for the first MoE layer alone, which no router choice can have changed yet.
function routerDeviation(got, ref, T) {
  const dev = new Array(T).fill(0), first = new Array(T).fill(0);
  ref.forEach((r, l) => {
    const E = r.length / T;
    for (let t = 0; t < T; t++) {
      let scale = 0, d = 0;
      for (let e = 0; e < E; e++) { scale = Math.max(scale, Math.abs(r[t * E + e])); d = Math.max(d, Math.abs(got[l][t * E + e] - r[t * E + e])); }
      dev[t] = Math.max(dev[t], d / scale);
      if (l === 0) first[t] = d / scale;
    }
  });
  return { dev, first: Math.max(...first) };
}

// Router ties in the method rows. The CPU and CUDA runs of one file differ by their float16
// arithmetic, which these random models amplify (qwen3_5-moe-tiny's linear attention by 10x,
// see the top of this file): a router whose top-k gap at a position is smaller than twice the
// router-logit difference the two runs actually show there can pick other experts without any
// kernel being wrong, and every later position then sees a different history (attention and the
// linear-attention state are causal). So each run is compared over the positions before the
// first position where its routers actually chose other experts than the CPU's, if the gap
// there explains it (an unexplained choice fails the row), with the router logits of that very
// run (a prefill of 12 tokens and a prefill of 5 plus decode steps run different kernels and
// flip different ties); the rest are counted as excluded. The first MoE layer's routers,
// upstream of every choice, must agree within the row's floor at every position, and a row
// passes only when some run decided it, so a wrong kernel cannot hide behind this rule.
// (tests/cuda/bisect_methods.mjs shows the case that needs it: gpt-oss-tiny with int8 MatMuls
// flips position 0's experts in a 1-, 8-, 9- or 12-token prefill on CUDA and not in a 4- or
// 5-token one; qwen3-moe-tiny flips position 7 in a 5-token prefill only.)
async function runWithRouters(dir, ids, ep, opts) {
  poke('expose', join(dir, 'model.onnx'), join(dir, 'model_routers.onnx'), '/moe/router/Reshape');
  const model = await openModel(dir, { filename: 'model_routers.onnx', sessionOptions: { executionProviders: providers(ep) } });
  try {
    const names = model.session.outputNames.filter((n) => n.endsWith('/moe/router/Reshape/output_0'));
    const parts = names.map(() => []);
    const r = await runModel(model, ids, { ...opts, onStep: ({ results }) => names.forEach((n, l) => parts[l].push(tensorToF32(results[n]))) });
    const routers = parts.map((chunks) => {
      const all = new Float32Array(chunks.reduce((a, c) => a + c.length, 0));
      let o = 0;
      for (const c of chunks) { all.set(c, o); o += c.length; }
      return all;
    });
    return { logits: r.logits, dims: r.dims, routers };
  } finally {
    await closeModel(model);
  }
}

// The first position where a run's routers choose other experts than the reference's, in any
// MoE layer: { at } (-1 when none), explained when the reference's top-k gap there is below twice
// the router-logit difference the two runs show at that layer and position (arithmetic can flip
// it), else { at, unexplained } — a choice no rounding explains, which fails the row.
function firstFlip(got, ref, T, k) {
  for (let t = 0; t < T; t++) {
    for (let l = 0; l < ref.length; l++) {
      const E = ref[l].length / T;
      const r = Array.from(ref[l].subarray(t * E, (t + 1) * E)), g = Array.from(got[l].subarray(t * E, (t + 1) * E));
      const top = (v) => v.map((x, e) => [x, e]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, k).map((x) => x[1]).sort((a, b) => a - b).join();
      if (top(r) === top(g)) continue;
      const sorted = [...r].sort((a, b) => b - a);
      const scale = Math.max(Math.abs(sorted[0]), Math.abs(sorted[E - 1]));
      const gap = (sorted[k - 1] - sorted[k]) / scale;
      const dev = Math.max(...r.map((x, e) => Math.abs(g[e] - x))) / scale;
      return gap < 2 * dev ? { at: t } : { at: t, unexplained: `layer ${l} position ${t}: other experts chosen with a top-k gap ${fmt(gap)} above twice the router difference ${fmt(dev)}` };
    }
  }
  return { at: -1 };
}

async function methodRun(label, fixture, m, what, dir, ref, refRouters, ids, k, floats) {
  const b = { name: `int ${m.name}, ${what}`, ep: 'cuda', arith: 'fp16', control: 'cpu' };
  const runs = [];
  let floorText = '', firstWorst = 0, floorMin = Infinity;
  for (const [mode, opts] of [['prefill', {}], [`prefill${PREFILL}+decode`, { prefill: PREFILL }]]) {
    const got = await runWithRouters(dir, ids, METHOD_EP, opts);
    const { first } = routerDeviation(got.routers, refRouters, ids.length);
    const flip = firstFlip(got.routers, refRouters, ids.length, k);
    if (flip.unexplained)
      return record({ fixture: label, build: b.name, ep: 'cuda', ok: false, note: `${mode}: ${flip.unexplained}` });
    const clear = ids.map((_, t) => flip.at < 0 || t < flip.at);
    const { floor, text } = intFloor(b, floorOf(fixture, 'fp16', clear), floats);
    floorText = text;
    floorMin = Math.min(floorMin, floor);
    firstWorst = Math.max(firstWorst, first);
    const j = judge(got.logits, ref, got.dims, clear, floor);
    runs.push({ mode, ...j, ok: j.ok || !clear.some(Boolean), decided: clear.some(Boolean) });
  }
  if (!(firstWorst <= floorMin))
    return record({ fixture: label, build: b.name, ep: 'cuda', ok: false, note: `first MoE layer's router logits differ from the CPU run by ${fmt(firstWorst)} of max|logit| (floor ${fmt(floorMin)})` });
  record({ fixture: label, build: b.name, ep: 'cuda', floor: floorText, runs,
           ok: runs.every((x) => x.ok) && runs.some((x) => x.decided) });
}

async function methodRows(work, fixture) {
  const input = join(FIXTURES, fixture);
  const cfg = JSON.parse(readFileSync(join(input, 'config.json'), 'utf8'));
  const ids = Array.from(readSafetensors(join(input, 'reference.safetensors')).input_ids.data, Number);
  const floats = EP === 'cuda' ? await fp16Yardstick(work, fixture, input, cfg, ids) : {};
  for (const m of METHODS) {
    const rawDir = join(work, `${fixture}-m-raw`), preDir = join(work, `${fixture}-m-pre`);
    const label = `${fixture} [${m.name}]`;
    const rawErr = convert(input, rawDir, methodArgs(m, true));
    const preErr = convert(input, preDir, methodArgs(m, false));
    if (m.cudaRefused) { // known not to run on CUDA: the conversion must refuse it, naming the option
      const ok = Boolean(preErr) && preErr.includes(m.cudaRefused);
      record({ fixture: label, build: m.name, ep: 'cuda', ok, note: ok ? `refused at conversion, as it must be: ${preErr.replace(/^conversion failed \(exit \d+\): /, '')}` : `expected a refusal naming ${m.cudaRefused}, got ${preErr ?? 'an export'}` });
    } else if (rawErr || preErr) {
      record({ fixture: label, build: m.name, ep: 'cuda', ok: false, note: rawErr ?? preErr });
    } else {
      // the raw export on the CPU provider: reference logits and router logits
      const model = await openModel(rawDir, { sessionOptions: { executionProviders: ['cpu'] } });
      let ref;
      try { ref = (await runModel(model, ids)).logits; } finally { await closeModel(model); }
      const refRouters = await routerLogits(rawDir, ids, 'cpu');
      for (const [what, dir] of [['raw experts', rawDir], ['prepacked experts', preDir]])
        if (runnable({ ep: 'cuda' }) || METHOD_EP === 'cpu')
          await methodRun(label, fixture, m, what, dir, ref, refRouters, ids, topK(cfg), floats);
    }
    for (const d of [rawDir, preDir]) rmSync(d, { recursive: true, force: true });
  }
}

function header() {
  const sh = (cmd) => {
    try { return execFileSync('sh', ['-c', cmd], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() || 'unknown'; } catch { return 'unknown'; }
  };
  const ortDir = process.env.ORT_NODE_DIR ?? 'node_modules';
  let ver = 'unknown';
  try { ver = JSON.parse(readFileSync(join(ortDir, 'onnxruntime-node', 'package.json'), 'utf8')).version; } catch { /* absent */ }
  return [
    '# CUDA suite results', '',
    `- date: ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}`,
    `- ONNX Runtime: ${ver} (onnxruntime-node; ort.env.versions ${JSON.stringify(ort.env.versions ?? {})}; ` +
      `${EP === 'cuda' ? 'CUDA execution provider' : 'CPU execution provider only'})`,
    `- GPU: ${sh('nvidia-smi -L | head -1')}; driver ${sh('nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1')}, ` +
      `${sh("nvidia-smi | grep -o 'CUDA Version: [0-9.]*' | head -1")}`,
    `- moe2onnx: commit ${process.env.M2O_COMMIT ?? sh('git rev-parse --short HEAD 2>/dev/null')}`,
    '- command: `bash tests/cuda/run.sh` on the GPU machine (README, "CUDA suite")', '',
    'Each row: max|Δ|/max|ref| per logits row, worst row over the positions whose router top-k margin is clear',
    '(in brackets: worst over all positions, and how many positions were excluded as router ties); floors and the',
    'tie rule are explained at the top of tests/cuda/suite.mjs. "transformers" in the floor column is the original model run by',
    `transformers on the same GPU in the build's precision, measured over the same positions (${TF ? `transformers ${TF.transformers}, torch ${TF.torch}` : 'not measured: fixed floors'}).`, '',
    '| checkpoint | build | EP | prefill maxrel [all, excluded] | prefill5+decode maxrel [all, excluded] | min cos | argmax | floor | result |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
}

function tableRow(r) {
  if (!r.runs) return `| ${r.fixture} | ${r.build} | ${r.ep} | ${r.note.replace(/\|/g, '/')} | | | | ${r.floor ?? '–'} | ${r.ok ? 'pass' : 'FAIL'} |`;
  const cell = (x) => `${fmt(x.maxrel)} [${fmt(x.all)}, ${x.excluded}]`;
  const [p, d] = r.runs;
  return `| ${r.fixture} | ${r.build} | ${r.ep} | ${cell(p)} | ${cell(d)} | ${Math.min(p.minCos, d.minCos).toFixed(5)} | ${p.argmax}, ${d.argmax} | ${r.floor} | ${r.ok ? 'pass' : 'FAIL'} |`;
}

// ---- running: independent jobs (a fixture, a variant, ...) in parallel child processes ----
// Each job converts, runs and judges its own exports in its own temporary folder, so jobs share
// nothing but the GPU; M2O_CUDA_PARALLEL child processes (default: half the cores, at most 8)
// take them from a queue. The rows are merged in job order, so RESULTS.md does not depend on
// which job finished first. A child that dies leaves a FAIL row naming its exit status.
const JOBS = [
  ...FIXTURE_NAMES.map((f) => ({ id: f, run: (w) => fixtureRows(w, f) })),
  ...QWEN_VARIANTS.map((v) => ({ id: v.name, run: (w) => variantRows(w, v) })),
  { id: 'qwen3_5-moe-tiny layouts', run: qwen35LayoutRows, long: true },
  { id: 'qwen3_5 35B-A3B widths', run: qwen35BigRows, long: true },
  ...METHOD_FIXTURES.map((f) => ({ id: `${f} quantization methods`, run: (w) => methodRows(w, f) })),
];

async function runJobs(ids) {
  const work = mkdtempSync(join(tmpdir(), 'm2o-cuda-'));
  try {
    for (const job of JOBS.filter((j) => ids.includes(j.id))) {
      try { await job.run(work); } catch (e) { record({ fixture: job.id, build: '(all)', ep: EP, ok: false, note: String(e.stack ?? e).split('\n')[0] }); }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

// The device runs one command for at most 10 minutes and returns nothing from one it kills, so
// the suite keeps its own deadline (M2O_CUDA_DEADLINE_S seconds from its start, default 480):
// a job still running then is stopped and a job not started is not run, each a FAIL row, and
// RESULTS.md is still written.
const DEADLINE = Date.now() + 1000 * Number(process.env.M2O_CUDA_DEADLINE_S ?? 480);
const jobFail = (job, note) => [{ fixture: job.id, build: '(all)', ep: EP, ok: false, note }];

function runChild(job, dir) {
  const file = join(dir, `${JOBS.indexOf(job)}.json`);
  if (Date.now() >= DEADLINE) return Promise.resolve(jobFail(job, 'not run: the suite reached its deadline (M2O_CUDA_DEADLINE_S)'));
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url)], {
      env: { ...process.env, M2O_CUDA_JOB: job.id, M2O_CUDA_JOB_OUT: file }, stdio: ['ignore', 'inherit', 'inherit'],
    });
    let late = false;
    const timer = setTimeout(() => { late = true; child.kill('SIGKILL'); }, Math.max(0, DEADLINE - Date.now()));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      let rows = [];
      try { rows = JSON.parse(readFileSync(file, 'utf8')); } catch { /* no row recorded yet */ }
      if (late) rows.push(...jobFail(job, 'stopped unfinished at the suite\'s deadline (M2O_CUDA_DEADLINE_S)'));
      else if (code !== 0) rows.push(...jobFail(job, `job process ended (exit ${code ?? signal}) before finishing`));
      resolve(rows);
    });
  });
}

async function runParallel(n) {
  const dir = mkdtempSync(join(tmpdir(), 'm2o-cuda-jobs-'));
  const rows = new Array(JOBS.length);
  // the Qwen3.5 jobs (the 35B-A3B-width checkpoint and its float64 references, and three
  // layouts converted twice per build) are the longest: started first, they do not end last
  const queue = [...JOBS.keys()].sort((a, b) => Number(Boolean(JOBS[b].long)) - Number(Boolean(JOBS[a].long)) || a - b);
  const worker = async () => {
    while (queue.length) {
      const i = queue.shift();
      rows[i] = await runChild(JOBS[i], dir);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, JOBS.length) }, worker));
  rmSync(dir, { recursive: true, force: true });
  results.push(...rows.flat());
}

const started = Date.now();
if (process.env.M2O_CUDA_JOB) { // a child: one job, rows to M2O_CUDA_JOB_OUT
  await runJobs([process.env.M2O_CUDA_JOB]);
  process.exit(0);
}
const parallel = Number(process.env.M2O_CUDA_PARALLEL ?? Math.max(1, Math.min(8, Math.floor(cpus().length / 2))));
if (parallel > 1) await runParallel(parallel);
else await runJobs(JOBS.map((j) => j.id));
const wall = Math.round((Date.now() - started) / 1000);
const passed = results.filter((r) => r.ok).length, failed = results.length - passed;
const lines = [...header(), ...results.map(tableRow), '', `${passed} passed, ${failed} failed (${wall} s, ${parallel} parallel jobs)`, ''];
const dest = process.env.M2O_RESULTS ?? (process.env.OUT ? join(process.env.OUT, 'RESULTS.md') : null);
if (dest) writeFileSync(dest, lines.join('\n'));
console.log(`${passed} passed, ${failed} failed (${wall} s, ${parallel} parallel jobs)`);
process.exit(failed ? 1 : 0);
