// Tests of the end-to-end helpers in tests/e2e/lib: the safetensors reader on the fixtures and on
// a file with known bytes, the logits comparison on synthetic arrays, and the ONNX Runtime harness
// on a hand-built toy decoder (KV caches for two layers plus a fixed-size extra state, float32
// and float16 io) whose logits are known in closed form.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { checkLogits } from './lib/compare.mjs';
import { runModel, openModel, closeModel } from './lib/harness.mjs';
import {
  encodeSafetensors, f16ToF32, f32ToF16, readSafetensors, readSafetensorsWithMetadata,
} from './lib/safetensors.mjs';

const FIXTURES = process.env.M2O_FIXTURES ?? 'tests/fixtures';
let passed = 0, failed = 0;
async function test(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${(e.stack ?? String(e)).split('\n').slice(0, 3).join(' | ')}`);
  }
}

// ---- safetensors -------------------------------------------------------------------------------

await test('safetensors_reads_fixture_references', () => {
  for (const fx of ['gpt-oss-tiny', 'gpt-oss-bf16-tiny', 'qwen3-moe-tiny', 'qwen2-moe-tiny', 'qwen3_5-moe-tiny']) {
    const cfg = JSON.parse(readFileSync(join(FIXTURES, fx, 'config.json'), 'utf8'));
    for (const file of ['reference.safetensors', 'reference-int4.safetensors']) {
      const r = readSafetensors(join(FIXTURES, fx, file));
      const T = r.input_ids.shape[1];
      assert.equal(r.input_ids.dtype, 'I64');
      assert.ok(r.input_ids.data instanceof BigInt64Array);
      assert.deepEqual(r.input_ids.shape, [1, T]);
      assert.ok(T >= 2);
      for (const id of r.input_ids.data) assert.ok(id >= 0n && id < BigInt(cfg.vocab_size));
      assert.equal(r.logits.dtype, 'F32');
      assert.deepEqual(r.logits.shape, [1, T, cfg.vocab_size], `${fx}/${file} logits shape`);
      assert.deepEqual(r.hidden_states.shape, [cfg.num_hidden_layers + 1, T, cfg.hidden_size]);
      let maxAbs = 0;
      for (const v of r.logits.data) {
        assert.ok(Number.isFinite(v), `${fx}/${file}: non-finite logit`);
        maxAbs = Math.max(maxAbs, Math.abs(v));
      }
      assert.ok(maxAbs > 0.01 && maxAbs < 1e4, `${fx}/${file}: max |logit| ${maxAbs}`);
    }
  }
});

await test('safetensors_decodes_every_dtype_exactly', () => {
  const dir = mkdtempSync(join(tmpdir(), 'm2o_st_'));
  try {
    const u16 = (...v) => new Uint8Array(new Uint16Array(v).buffer);
    const file = join(dir, 'x.safetensors');
    writeFileSync(file, encodeSafetensors({
      bf: { dtype: 'BF16', shape: [4], bytes: u16(0x3f80, 0xc000, 0x7f80, 0x0001) },
      h: { dtype: 'F16', shape: [2, 3], bytes: u16(0x3c00, 0x7bff, 0x0001, 0x8400, 0x7c00, 0x3555) },
      b: { dtype: 'U8', shape: [3], bytes: new Uint8Array([0, 127, 255]) },
      i: { dtype: 'I64', shape: [2], bytes: new Uint8Array(new BigInt64Array([-5n, 1n << 40n]).buffer) },
      f: { dtype: 'F32', shape: [1, 1], bytes: new Uint8Array(new Float32Array([-0.375]).buffer) },
    }, { format: 'pt' }));
    const { tensors: t, metadata } = readSafetensorsWithMetadata(file);
    assert.deepEqual(metadata, { format: 'pt' });
    assert.deepEqual(Array.from(t.bf.data), [1, -2, Infinity, 2 ** -133]);
    assert.deepEqual(t.h.shape, [2, 3]);
    assert.deepEqual(Array.from(t.h.data), [1, 65504, 2 ** -24, -(2 ** -14), Infinity, Math.fround(f16ToF32(0x3555))]);
    assert.ok(Math.abs(t.h.data[5] - 1 / 3) < 1e-4);
    assert.deepEqual(Array.from(t.h.raw), [0x3c00, 0x7bff, 0x0001, 0x8400, 0x7c00, 0x3555]);
    assert.deepEqual(Array.from(t.b.data), [0, 127, 255]);
    assert.deepEqual(Array.from(t.i.data), [-5n, 1n << 40n]);
    assert.deepEqual(Array.from(t.f.data), [-0.375]);
    // A hole between tensors is an error naming the file and tensor.
    const json = Buffer.from('{"a":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    writeFileSync(file, Buffer.concat([len, json, Buffer.alloc(3)]));
    assert.throws(() => readSafetensors(file), /x\.safetensors: tensor a starts at 1, expected 0/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

await test('f16_conversion_rounds_to_nearest_even', () => {
  const cases = [[1, 0x3c00], [65504, 0x7bff], [65520, 0x7c00], [2 ** -24, 0x0001], [2 ** -25, 0x0000],
    [3 * 2 ** -26, 0x0001], [3 * 2 ** -25, 0x0002], [5 * 2 ** -25, 0x0002], [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02], [-2, 0xc000], [NaN, 0x7e00],
    [2 ** -14, 0x0400], [2 ** -14 - 2 ** -25, 0x0400]];
  for (const [x, h] of cases) assert.equal(f32ToF16(x), h, `f32ToF16(${x})`);
  for (let h = 0; h < 0x7c00; h += 7) assert.equal(f32ToF16(f16ToF32(h)), h, `round trip of 0x${h.toString(16)}`);
});

// ---- compare -----------------------------------------------------------------------------------

function syntheticLogits(rows, vocab, seed) {
  const a = new Float32Array(rows * vocab);
  let s = seed;
  for (let i = 0; i < a.length; i++) { s = (s * 1103515245 + 12345) % 2147483648; a[i] = (s / 2147483648 - 0.5) * 8; }
  return a;
}

await test('compare_metrics_and_floors', () => {
  const T = 6, V = 50, ref = syntheticLogits(T, V, 7);
  const same = checkLogits(ref, ref, [1, T, V], { maxRel: 2e-3 });
  assert.ok(same.ok);
  assert.equal(same.summary.ratio, 0);
  assert.ok(Math.abs(same.summary.minCos - 1) < 1e-12);
  assert.equal(same.summary.argmaxAgree, T);
  assert.match(same.lines[0], /^ok logits \[1, 6, 50\]: max\|Δ\| 0, /);

  // Row 4 perturbed by 1e-3 of its max |ref|: passes 2e-3, fails 5e-4 naming only that row.
  const got = Float32Array.from(ref);
  let rowMax = 0;
  for (let j = 0; j < V; j++) rowMax = Math.max(rowMax, Math.abs(ref[4 * V + j]));
  got[4 * V + 3] += 1e-3 * rowMax;
  const loose = checkLogits(got, ref, [1, T, V], { maxRel: 2e-3 });
  assert.ok(loose.ok);
  assert.ok(Math.abs(loose.summary.ratio - 1e-3) < 1e-6, `ratio ${loose.summary.ratio}`);
  assert.equal(loose.summary.worstRatioRow, 4);
  const tight = checkLogits(got, ref, [1, T, V], { maxRel: 5e-4 });
  assert.ok(!tight.ok);
  assert.equal(tight.lines.length, 2);
  assert.match(tight.lines[1], /^  row 4: ratio 0\.00100 > 0\.0005/);

  // Cosine and argmax floors: scaling keeps the cosine, swapping the top two flips argmax.
  const scaled = ref.map((x) => 3 * x);
  assert.ok(checkLogits(scaled, ref, [T, V], { minCos: 0.9999, sameArgmax: true }).ok);
  assert.ok(!checkLogits(scaled, ref, [T, V], { maxRel: 0.5 }).ok);
  const flipped = Float32Array.from(ref);
  const r = 2, row = Array.from(ref.subarray(r * V, (r + 1) * V));
  const top = row.indexOf(Math.max(...row));
  flipped[r * V + top] = -10;
  const res = checkLogits(flipped, ref, [1, T, V], { minCos: 0.5, sameArgmax: true });
  assert.ok(!res.ok);
  assert.equal(res.summary.argmaxAgree, T - 1);
  assert.match(res.lines[1], new RegExp(`^  row 2: argmax \\d+ vs reference ${top}`));
  // A near-tie within argmaxTieTol is accepted.
  const second = row.map((x, j) => (j === top ? -Infinity : x)).reduce((b, x, j, a) => (x > a[b] ? j : b), 0);
  const tol = row[top] - row[second] + 1e-6;
  assert.ok(checkLogits(flipped, ref, [1, T, V], { sameArgmax: true }, { argmaxTieTol: tol }).ok);

  // NaN anywhere fails every floor.
  const nan = Float32Array.from(ref);
  nan[7] = NaN;
  const n = checkLogits(nan, ref, [1, T, V], { minCos: 0 });
  assert.ok(!n.ok);
  assert.match(n.lines[1], /row 0: non-finite values/);
  assert.ok(Number.isNaN(n.rows[0].ratio) && Number.isNaN(n.summary.ratio), 'a NaN that is not the row\'s last value makes its ratio NaN');
  assert.throws(() => checkLogits(ref.subarray(1), ref, [1, T, V], { maxRel: 1 }), /expected 6 x 50/);
});

// ---- a hand-built ONNX toy decoder -------------------------------------------------------------
// Minimal protobuf encoding of just the ModelProto fields used (numbers from onnx.proto).

const varint = (v) => {
  let x = BigInt.asUintN(64, BigInt(v));
  const out = [];
  do { let b = Number(x & 0x7fn); x >>= 7n; if (x) b |= 0x80; out.push(b); } while (x);
  return Buffer.from(out);
};
const key = (field, wire) => varint((field << 3) | wire);
const int = (field, v) => Buffer.concat([key(field, 0), varint(v)]);
const bytes = (field, b) => Buffer.concat([key(field, 2), varint(b.length), Buffer.from(b)]);
const str = (field, s) => bytes(field, Buffer.from(s, 'utf8'));
const msg = (field, ...parts) => bytes(field, Buffer.concat(parts));

const FLOAT = 1, INT64 = 7, FLOAT16 = 10;
const attrInt = (name, v) => msg(5, str(1, name), int(20, 2), int(3, v));
const node = (op, inputs, outputs, ...attrs) =>
  msg(1, ...inputs.map((i) => str(1, i)), ...outputs.map((o) => str(2, o)), str(3, `${op}_${outputs[0]}`), str(4, op), ...attrs);
const init = (name, type, dims, data) =>
  msg(5, ...dims.map((d) => int(1, d)), int(2, type), str(8, name), bytes(9, new Uint8Array(data.buffer)));
const valueInfo = (field, name, type, dims) =>
  msg(field, str(1, name), msg(2, msg(1, int(1, type), msg(2, ...dims.map((d) => msg(1, typeof d === 'number' ? int(1, d) : str(2, d)))))));

// logits[t] = W · (2.5 · Σ_{τ≤t} E[ids[τ]]): each layer i caches k = (i+1)·x and v = -(i+1)/2·x
// and adds the cumulative sum of k + v over the whole cache (the last `seq` rows, located with
// the attention_mask length); the extra state carries Σ x of earlier tokens in [b, 2, 3].
const V = 5, E = [0.5, -1, 1, 0.25, -0.5, 2, 1.5, 0.75, -2, 0.125], W = [1, 0, -1, 2, 0.5, 0.5, 1, -1, 0, 3];
function toyModel(io16) {
  const fl = io16 ? FLOAT16 : FLOAT;
  const nodes = [], inits = [], inputs = [], outputs = [];
  inputs.push(valueInfo(11, 'input_ids', INT64, ['batch_size', 'sequence_length']));
  inputs.push(valueInfo(11, 'attention_mask', INT64, ['batch_size', 'total_sequence_length']));
  inits.push(init('E', FLOAT, [V, 2], new Float32Array(E)), init('W', FLOAT, [2, V], new Float32Array(W)));
  inits.push(init('ax1', INT64, [1], new BigInt64Array([1n])), init('ax2', INT64, [1], new BigInt64Array([2n])));
  inits.push(init('c1', INT64, [], new BigInt64Array([1n])), init('c2', INT64, [], new BigInt64Array([2n])));
  inits.push(init('zero', INT64, [1], new BigInt64Array([0n])), init('one', INT64, [1], new BigInt64Array([1n])));
  inits.push(init('big', INT64, [1], new BigInt64Array([1n << 62n])));
  const cast = new Set();
  const asFloat = (name) => {
    if (!io16) return name;
    if (!cast.has(name)) nodes.push(node('Cast', [name], [`${name}_f`], attrInt('to', FLOAT)));
    cast.add(name);
    return `${name}_f`;
  };
  const asIo = (name, out) => nodes.push(io16 ? node('Cast', [name], [out], attrInt('to', FLOAT16)) : node('Identity', [name], [out]));
  nodes.push(node('Gather', ['E', 'input_ids'], ['x']), node('Unsqueeze', ['x', 'ax1'], ['x4']));
  const sums = [];
  for (let i = 0; i < 2; i++) {
    inits.push(init(`kc${i}`, FLOAT, [], new Float32Array([i + 1])), init(`vc${i}`, FLOAT, [], new Float32Array([-(i + 1) / 2])));
    for (const kv of ['key', 'value']) {
      inputs.push(valueInfo(11, `past_key_values.${i}.${kv}`, fl, ['batch_size', 1, 'past_sequence_length', 2]));
      outputs.push(valueInfo(12, `present.${i}.${kv}`, fl, ['batch_size', 1, 'total_sequence_length', 2]));
      nodes.push(node('Mul', ['x4', `${kv[0]}c${i}`], [`new_${kv}${i}`]));
      nodes.push(node('Concat', [asFloat(`past_key_values.${i}.${kv}`), `new_${kv}${i}`], [`cat_${kv}${i}`], attrInt('axis', 2)));
      asIo(`cat_${kv}${i}`, `present.${i}.${kv}`);
    }
    nodes.push(node('Add', [`cat_key${i}`, `cat_value${i}`], [`kv${i}`]), node('CumSum', [`kv${i}`, 'c2'], [`cs${i}`]));
    sums.push(`cs${i}`);
  }
  inputs.push(valueInfo(11, 'past_key_values.0.conv_state', fl, ['batch_size', 2, 3]));
  outputs.unshift(valueInfo(12, 'logits', fl, ['batch_size', 'sequence_length', V]));
  outputs.push(valueInfo(12, 'present.0.conv_state', fl, ['batch_size', 2, 3]));
  nodes.push(
    node('Add', sums, ['cs']),
    node('Shape', ['input_ids'], ['seq'], attrInt('start', 1), attrInt('end', 2)),
    node('Shape', ['attention_mask'], ['total'], attrInt('start', 1), attrInt('end', 2)),
    node('Sub', ['total', 'seq'], ['start']),
    node('Slice', ['cs', 'start', 'big', 'ax2'], ['cs_new']),
    node('Squeeze', ['cs_new', 'ax1'], ['h_cache']),
    node('Slice', [asFloat('past_key_values.0.conv_state'), 'zero', 'one', 'ax2'], ['s_prev3']),
    node('Transpose', ['s_prev3'], ['s_prev'], msg(5, str(1, 'perm'), int(20, 7), int(8, 0), int(8, 2), int(8, 1))),
    node('CumSum', ['x', 'c1'], ['cx']),
    node('Add', ['cx', 's_prev'], ['h_conv']),
    node('Add', ['h_cache', 'h_conv'], ['h']),
    node('MatMul', ['h', 'W'], ['logits_f']),
    node('ReduceSum', ['x', 'ax1'], ['sx'], attrInt('keepdims', 0)),
    node('Unsqueeze', ['sx', 'ax2'], ['sx3']),
    node('Add', [asFloat('past_key_values.0.conv_state'), 'sx3'], ['conv_next']),
  );
  asIo('logits_f', 'logits');
  asIo('conv_next', 'present.0.conv_state');
  const graph = msg(7, ...nodes, str(2, 'toy'), ...inits, ...inputs, ...outputs);
  return Buffer.concat([int(1, 10), msg(8, str(1, ''), int(2, 21)), str(2, 'moe2onnx-test'), graph]);
}

function toyReference(ids) {
  const out = new Float32Array(ids.length * V);
  let c0 = 0, c1 = 0;
  ids.forEach((id, t) => {
    c0 += E[2 * id];
    c1 += E[2 * id + 1];
    for (let j = 0; j < V; j++) out[t * V + j] = 2.5 * (c0 * W[j] + c1 * W[V + j]);
  });
  return out;
}

function writeToy(dir, io16) {
  writeFileSync(join(dir, 'model.onnx'), toyModel(io16));
  writeFileSync(join(dir, 'genai_config.json'), JSON.stringify({
    model: {
      type: 'toy', vocab_size: V, context_length: 64,
      decoder: {
        filename: 'model.onnx', head_size: 2, hidden_size: 2, num_attention_heads: 1, num_key_value_heads: 1,
        num_hidden_layers: 2, session_options: { log_id: 'toy', provider_options: [] },
        inputs: { input_ids: 'input_ids', attention_mask: 'attention_mask', past_key_names: 'past_key_values.%d.key', past_value_names: 'past_key_values.%d.value' },
        outputs: { logits: 'logits', present_key_names: 'present.%d.key', present_value_names: 'present.%d.value' },
      },
    },
  }));
}

const ids = [1, 4, 0, 3, 3, 2, 4, 1];

await test('harness_prefill_and_decode_match_the_closed_form', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'm2o_toy_'));
  try {
    writeToy(dir, false);
    const ref = toyReference(ids);
    const model = await openModel(dir);
    assert.deepEqual(model.states.map((s) => `${s.past}>${s.present}`), [
      'past_key_values.0.key>present.0.key', 'past_key_values.0.value>present.0.value',
      'past_key_values.1.key>present.1.key', 'past_key_values.1.value>present.1.value',
      'past_key_values.0.conv_state>present.0.conv_state']);
    const full = await runModel(model, ids);
    assert.deepEqual(full.dims, [1, ids.length, V]);
    assert.equal(full.runs, 1);
    const c = checkLogits(full.logits, ref, full.dims, { maxRel: 1e-6 });
    assert.ok(c.ok, c.lines.join('\n'));
    for (const p of [1, 3, ids.length - 1]) {
      const steps = [];
      const dec = await runModel(model, ids, { prefill: p, onStep: (s) => steps.push([s.past, s.tokens.length, s.results['present.1.value'].dims[2]]) });
      assert.equal(dec.runs, ids.length - p + 1);
      assert.deepEqual(steps[0], [0, p, p]);
      assert.deepEqual(steps.at(-1), [ids.length - 1, 1, ids.length]);
      const d = checkLogits(dec.logits, ref, dec.dims, { maxRel: 1e-6 });
      assert.ok(d.ok, `prefill ${p}: ${d.lines.join('\n')}`);
      assert.deepEqual(dec.states['past_key_values.0.key'].dims, [1, 1, ids.length, 2]);
      assert.deepEqual(dec.states['past_key_values.0.conv_state'].dims, [1, 2, 3]);
    }
    await closeModel(model);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

await test('harness_float16_io_and_missing_present_are_handled', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'm2o_toy16_'));
  try {
    writeToy(dir, true);
    const ref = toyReference(ids);
    const full = await runModel(dir, ids);
    const dec = await runModel(dir, ids, { prefill: 2 });
    assert.ok(full.logits instanceof Float32Array);
    for (const r of [full, dec]) {
      const c = checkLogits(r.logits, ref, r.dims, { maxRel: 2e-3, minCos: 0.99999, sameArgmax: true });
      assert.ok(c.ok, c.lines.join('\n'));
    }
    // A state input without a present output is reported by name.
    const cfg = JSON.parse(readFileSync(join(dir, 'genai_config.json'), 'utf8'));
    cfg.model.decoder.outputs.present_key_names = 'presentX.%d.key';
    writeFileSync(join(dir, 'genai_config.json'), JSON.stringify(cfg));
    await runModel(dir, ids); // falls back to the past → present naming rule
    writeFileSync(join(dir, 'model.onnx'), toyModel(true).toString('latin1').replaceAll('present.0.conv_state', 'present.0.conv_stats'), 'latin1');
    await assert.rejects(runModel(dir, ids), /graph input past_key_values\.0\.conv_state has no matching present output/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
