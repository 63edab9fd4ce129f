// Runs an exported ONNX Runtime GenAI model folder (genai_config.json + model.onnx) in
// onnxruntime-node on the CPU, the way onnxruntime-genai drives it: prefill, then one-token decode
// steps with every present.* output fed back into its past_* input and attention_mask growing.
// Every graph input is discovered from the session, so extra state inputs (linear-attention
// conv/recurrent states) need no special casing. Batch size 1.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import ort from 'onnxruntime-node';

import { bf16ArrayToF32, f16ArrayToF32 } from './safetensors.mjs';

const fmtName = (pattern, i) => pattern.replace('%d', String(i));

// Pairs each state input with the output that carries its next value: first the names the genai
// config spells out per layer, then the rule "past_key_values.X" / "past.X" → "present.X".
function pairStates(stateInputs, outputNames, decoder) {
  const byPast = new Map();
  const inp = decoder.inputs ?? {}, out = decoder.outputs ?? {};
  const patterns = [
    [inp.past_key_names, out.present_key_names],
    [inp.past_value_names, out.present_value_names],
  ].filter(([a, b]) => a && b);
  for (let i = 0; i < (decoder.num_hidden_layers ?? 0); i++)
    for (const [p, q] of patterns) byPast.set(fmtName(p, i), fmtName(q, i));
  const outputs = new Set(outputNames);
  const pairs = [];
  for (const name of stateInputs) {
    let present = byPast.get(name);
    if (!present || !outputs.has(present)) {
      const m = /^(?:past_key_values|past)\.(.+)$/.exec(name);
      present = m ? `present.${m[1]}` : undefined;
    }
    if (!present || !outputs.has(present))
      throw new Error(`harness: graph input ${name} has no matching present output ` +
        `(outputs: ${outputNames.join(', ')})`);
    pairs.push({ past: name, present });
  }
  return pairs;
}

// Initial value of a state input from its declared shape: the first dimension is the batch (1),
// other symbolic dimensions are sequence lengths (0, so KV caches start empty), numbers stay.
// A sliding layer's KV cache (capacity > 0) is a fixed buffer of that many positions instead,
// fed back whole every step, as onnxruntime-genai allocates it.
function initialState(meta, capacity = 0) {
  if (!meta.isTensor) throw new Error(`harness: state input ${meta.name} is not a tensor`);
  const dims = meta.shape.map((d, i) => (i === 0 ? 1 : typeof d === 'number' && d >= 0 ? d : 0));
  if (capacity > 0) dims[2] = capacity;
  return zeros(meta.type, dims, meta.name);
}

// onnxruntime-genai's cache capacity for the layers decoder.sliding_window lists
// (src/models/windowed_kv_cache.cpp): window + slack, slack = cache_slack or the execution
// provider's default (16 on the CPU, 0 on CUDA), never more than max_length. Keyed by past name.
export const GENAI_CPU_CACHE_SLACK = 16;
function slidingCapacities(config, decoder, slack) {
  const sw = decoder.sliding_window;
  const caps = new Map();
  if (!sw || !(sw.window_size > 0)) return caps;
  const maxLength = config.search?.max_length ?? config.model?.context_length ?? Infinity;
  const s = slack ?? (sw.cache_slack > 0 ? sw.cache_slack : GENAI_CPU_CACHE_SLACK);
  const cap = Math.min(sw.window_size + s, maxLength);
  const inp = decoder.inputs ?? {};
  for (const L of sw.layers ?? [])
    for (const p of [inp.past_key_names, inp.past_value_names]) if (p) caps.set(fmtName(p, L), cap);
  return caps;
}

function zeros(type, dims, name) {
  const n = dims.reduce((a, b) => a * b, 1);
  const ctor = {
    float32: Float32Array, float16: Uint16Array, bfloat16: Uint16Array, int64: BigInt64Array,
    int32: Int32Array, uint8: Uint8Array, int8: Int8Array,
  }[type];
  if (!ctor) throw new Error(`harness: state input ${name} has unsupported type ${type}`);
  return new ort.Tensor(type, new ctor(n), dims);
}

function intTensor(type, values, dims) {
  if (type === 'int32') return new ort.Tensor('int32', Int32Array.from(values), dims);
  return new ort.Tensor('int64', BigInt64Array.from(values, (v) => BigInt(v)), dims);
}

// Float32 copy of a float output tensor whatever its element type.
export function tensorToF32(t) {
  switch (t.type) {
    case 'float32': return t.data;
    case 'float16': return t.data instanceof Uint16Array ? f16ArrayToF32(t.data) : Float32Array.from(t.data);
    case 'bfloat16': return bf16ArrayToF32(t.data);
    default: throw new Error(`harness: output of type ${t.type} is not a float tensor`);
  }
}

// Opens a model folder: { dir, config, session, names, states, inputTypes }.
// opts: threads (intra-op, default 1 for reproducible timings), sessionOptions (merged over the
// defaults), filename (instead of decoder.filename), cacheSlack (positions beyond the window in
// the sliding layers' caches instead of the runtime's CPU default; 0 = exactly the window).
export async function openModel(modelDir, opts = {}) {
  const config = JSON.parse(readFileSync(join(modelDir, 'genai_config.json'), 'utf8'));
  const decoder = config?.model?.decoder;
  if (!decoder) throw new Error(`${modelDir}/genai_config.json: no model.decoder section`);
  const file = opts.filename ?? decoder.filename ?? 'model.onnx';
  const session = await ort.InferenceSession.create(join(modelDir, file), {
    executionProviders: ['cpu'], intraOpNumThreads: opts.threads ?? 1, interOpNumThreads: 1,
    graphOptimizationLevel: 'all', logSeverityLevel: 3, ...(opts.sessionOptions ?? {}),
  });
  const inp = decoder.inputs ?? {}, out = decoder.outputs ?? {};
  const names = {
    inputIds: inp.input_ids ?? 'input_ids', attentionMask: inp.attention_mask ?? 'attention_mask',
    // an exclude_lm_head=true export has no logits: its rows are the final hidden states
    positionIds: inp.position_ids ?? 'position_ids',
    logits: out.logits ?? (out.hidden_states && !('logits' in out) ? out.hidden_states : 'logits'),
  };
  const meta = new Map(session.inputMetadata.map((m) => [m.name, m]));
  if (!meta.has(names.inputIds)) throw new Error(`${file}: no ${names.inputIds} input`);
  if (!session.outputNames.includes(names.logits)) throw new Error(`${file}: no ${names.logits} output`);
  const plain = new Set([names.inputIds, names.attentionMask, names.positionIds]);
  const stateNames = session.inputNames.filter((n) => !plain.has(n));
  const states = pairStates(stateNames, session.outputNames, decoder);
  const caps = slidingCapacities(config, decoder, opts.cacheSlack);
  for (const s of states) {
    s.meta = meta.get(s.past);
    s.capacity = caps.get(s.past) ?? 0;
  }
  const typeOf = (n) => meta.get(n)?.type ?? 'int64';
  return {
    dir: modelDir, config, session, names, states,
    inputTypes: { ids: typeOf(names.inputIds), mask: typeOf(names.attentionMask), pos: typeOf(names.positionIds) },
    has: (n) => meta.has(n),
  };
}

export async function closeModel(model) {
  await model.session.release();
}

// One session run over `ids` (numbers) after `past` tokens, with the current state tensors.
async function step(model, ids, past, stateValues) {
  const { names, inputTypes } = model;
  const feeds = { [names.inputIds]: intTensor(inputTypes.ids, ids, [1, ids.length]) };
  if (model.has(names.attentionMask))
    feeds[names.attentionMask] = intTensor(inputTypes.mask, new Array(past + ids.length).fill(1), [1, past + ids.length]);
  if (model.has(names.positionIds))
    feeds[names.positionIds] = intTensor(inputTypes.pos, ids.map((_, i) => past + i), [1, ids.length]);
  model.states.forEach((s, i) => { feeds[s.past] = stateValues[i]; });
  const results = await model.session.run(feeds);
  const logits = results[names.logits];
  const next = model.states.map((s) => results[s.present]);
  return { logits, next, results };
}

// Runs inputIds (array of numbers) through the model.
//   opts.prefill: tokens in the first run (default: all of them); each later token is one
//     decode step feeding present → past. Rows from all runs are concatenated.
//   opts.initialState(meta) → ort.Tensor | undefined: override a state input's first value.
//   opts.onStep({ step, past, tokens, results }): called after every run (shapes, timings).
//   opts.threads / sessionOptions / filename: passed to openModel when modelOrDir is a path.
// Returns { logits: Float32Array of T × V, dims: [1, T, V], vocab, runs, states } where states
// are the final present tensors by past name.
export async function runModel(modelOrDir, inputIds, opts = {}) {
  const own = typeof modelOrDir === 'string';
  const model = own ? await openModel(modelOrDir, opts) : modelOrDir;
  try {
    const ids = Array.from(inputIds, Number);
    const T = ids.length;
    const first = Math.min(opts.prefill ?? T, T);
    if (!(first >= 1)) throw new Error(`harness: prefill must be at least 1 token (got ${opts.prefill})`);
    let states = model.states.map((s) => opts.initialState?.(s.meta) ?? initialState(s.meta, s.capacity));
    const chunks = [];
    let vocab = 0, runs = 0;
    for (let past = 0; past < T; ) {
      const tokens = ids.slice(past, past === 0 ? first : past + 1);
      const { logits, next, results } = await step(model, tokens, past, states);
      const dims = logits.dims;
      if (dims.length !== 3 || dims[0] !== 1 || dims[1] !== tokens.length)
        throw new Error(`harness: logits shape [${dims}] after ${past} tokens, expected [1, ${tokens.length}, V]`);
      vocab = dims[2];
      chunks.push(tensorToF32(logits));
      runs++;
      opts.onStep?.({ step: runs - 1, past, tokens, results });
      states = next;
      past += tokens.length;
    }
    const all = new Float32Array(T * vocab);
    let o = 0;
    for (const c of chunks) { all.set(c, o); o += c.length; }
    const finalStates = Object.fromEntries(model.states.map((s, i) => [s.past, states[i]]));
    return { logits: all, dims: [1, T, vocab], vocab, runs, states: finalStates };
  } finally {
    if (own) await closeModel(model);
  }
}
