// Checkpoint variants of the Qwen fixtures for layouts and configs that have no fixture of their
// own, written byte-deterministically so every run (and any other tool) sees the same files:
//   fusedExperts: per-expert experts.{j}.{gate,up,down}_proj.weight rewritten as
//     experts.gate_up_proj [E, 2I, H] (expert j's gate rows, then its up rows) and
//     experts.down_proj [E, H, I] — the same BF16 bits, only moved (docs/FORMATS.md §3);
//   denseLayers: the given layers turned into dense SwiGLU MLPs (their router, experts and
//     shared expert removed; mlp.{gate,up,down}_proj of intermediate_size added, uniform values
//     with the fixture's scale 1/sqrt(fan_in), from a fixed xorshift stream, rounded to BF16)
//     and config.json patched (decoder_sparse_step / mlp_only_layers) to make exactly those
//     layers dense;
//   configPatch: the same tensors with config.json fields changed (norm_topk_prob flipped);
//   sharded: the same tensors split over two files (layer 0 and the rest) with
//     model.safetensors.index.json.
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { encodeSafetensors, readSafetensors } from './lib/safetensors.mjs';

const bytesOf = (t) => new Uint8Array(t.raw.buffer, t.raw.byteOffset, t.raw.byteLength);

function copyOtherFiles(src, dst) {
  mkdirSync(dst, { recursive: true });
  for (const f of readdirSync(src))
    if (f !== 'model.safetensors' && f !== 'config.json' && !f.startsWith('reference')) copyFileSync(join(src, f), join(dst, f));
}

function readFixture(src) {
  const cfg = JSON.parse(readFileSync(join(src, 'config.json'), 'utf8'));
  const tensors = readSafetensors(join(src, 'model.safetensors'));
  for (const [name, t] of Object.entries(tensors))
    if (t.dtype !== 'BF16') throw new Error(`${src}: variant writer expects BF16 tensors, ${name} is ${t.dtype}`);
  return { cfg, tensors };
}

function write(dst, cfg, out) {
  writeFileSync(join(dst, 'config.json'), `${JSON.stringify(cfg, null, 2)}\n`);
  writeFileSync(join(dst, 'model.safetensors'), encodeSafetensors(out, { format: 'pt' }));
}

export function writeFusedExperts(src, dst) {
  const { cfg, tensors } = readFixture(src);
  copyOtherFiles(src, dst);
  const E = cfg.num_experts, I = cfg.moe_intermediate_size, H = cfg.hidden_size;
  const out = {};
  const done = new Set();
  for (const name of Object.keys(tensors)) {
    const m = /^(model\.layers\.\d+\.mlp\.experts)\.\d+\./.exec(name);
    if (!m) {
      out[name] = { dtype: 'BF16', shape: tensors[name].shape, bytes: bytesOf(tensors[name]) };
      continue;
    }
    const p = m[1];
    if (done.has(p)) continue;
    done.add(p);
    const gu = new Uint8Array(E * 2 * I * H * 2), dn = new Uint8Array(E * H * I * 2);
    for (let e = 0; e < E; e++) {
      gu.set(bytesOf(tensors[`${p}.${e}.gate_proj.weight`]), e * 2 * I * H * 2);
      gu.set(bytesOf(tensors[`${p}.${e}.up_proj.weight`]), (e * 2 * I * H + I * H) * 2);
      dn.set(bytesOf(tensors[`${p}.${e}.down_proj.weight`]), e * H * I * 2);
    }
    out[`${p}.gate_up_proj`] = { dtype: 'BF16', shape: [E, 2 * I, H], bytes: gu };
    out[`${p}.down_proj`] = { dtype: 'BF16', shape: [E, H, I], bytes: dn };
  }
  write(dst, cfg, out);
  return dst;
}

// xorshift32 → uniform [-a, a) → BF16 bits (round to nearest even)
function uniformBf16(n, a, state) {
  const bytes = new Uint8Array(n * 2), f = new Float32Array(1), u = new Uint32Array(f.buffer);
  for (let i = 0; i < n; i++) {
    state.s ^= state.s << 13; state.s >>>= 0;
    state.s ^= state.s >>> 17;
    state.s ^= state.s << 5; state.s >>>= 0;
    f[0] = ((state.s / 4294967296) * 2 - 1) * a;
    const b = (u[0] + 0x7fff + ((u[0] >>> 16) & 1)) >>> 16;
    bytes[2 * i] = b & 0xff;
    bytes[2 * i + 1] = b >>> 8;
  }
  return bytes;
}

// configPatch must make exactly `dense` the dense layers (checked against transformers' rule).
export function writeDenseLayers(src, dst, dense, configPatch, seed = 0x9e3779b9) {
  const { cfg, tensors } = readFixture(src);
  Object.assign(cfg, configPatch);
  const step = cfg.decoder_sparse_step ?? 1, only = cfg.mlp_only_layers ?? [];
  for (let i = 0; i < cfg.num_hidden_layers; i++) {
    const sparse = !only.includes(i) && (i + 1) % step === 0;
    if (sparse === dense.includes(i)) throw new Error(`config patch ${JSON.stringify(configPatch)} does not make exactly layers ${dense} dense`);
  }
  copyOtherFiles(src, dst);
  const H = cfg.hidden_size, D = cfg.intermediate_size, state = { s: seed >>> 0 };
  const out = {};
  for (const [name, t] of Object.entries(tensors)) {
    const m = /^model\.layers\.(\d+)\.mlp\./.exec(name);
    if (m && dense.includes(Number(m[1]))) continue;
    out[name] = { dtype: 'BF16', shape: t.shape, bytes: bytesOf(t) };
  }
  for (const L of dense) {
    const p = `model.layers.${L}.mlp`;
    out[`${p}.gate_proj.weight`] = { dtype: 'BF16', shape: [D, H], bytes: uniformBf16(D * H, Math.sqrt(3 / H), state) };
    out[`${p}.up_proj.weight`] = { dtype: 'BF16', shape: [D, H], bytes: uniformBf16(D * H, Math.sqrt(3 / H), state) };
    out[`${p}.down_proj.weight`] = { dtype: 'BF16', shape: [H, D], bytes: uniformBf16(H * D, Math.sqrt(3 / D), state) };
  }
  write(dst, cfg, out);
  return dst;
}

export function writeConfigPatch(src, dst, patch) {
  const { cfg, tensors } = readFixture(src);
  copyOtherFiles(src, dst);
  Object.assign(cfg, patch);
  const out = {};
  for (const [name, t] of Object.entries(tensors)) out[name] = { dtype: 'BF16', shape: t.shape, bytes: bytesOf(t) };
  write(dst, cfg, out);
  return dst;
}

export function writeSharded(src, dst) {
  const { cfg, tensors } = readFixture(src);
  copyOtherFiles(src, dst);
  writeFileSync(join(dst, 'config.json'), `${JSON.stringify(cfg, null, 2)}\n`);
  const files = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
  const shards = [{}, {}], weightMap = {};
  let total = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const i = name.startsWith('model.layers.0.') ? 0 : 1;
    shards[i][name] = { dtype: 'BF16', shape: t.shape, bytes: bytesOf(t) };
    weightMap[name] = files[i];
    total += t.raw.byteLength;
  }
  for (let i = 0; i < 2; i++) writeFileSync(join(dst, files[i]), encodeSafetensors(shards[i], { format: 'pt' }));
  writeFileSync(join(dst, 'model.safetensors.index.json'),
                `${JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2)}\n`);
  return dst;
}

// The variants the e2e test and the transformers reference files use (names = file stems).
// sameAs: exports must equal the fixture's byte for byte; else they are checked against the
// reference forward pass.
export const QWEN_VARIANTS = [
  { name: 'qwen3-moe-tiny-fused', fixture: 'qwen3-moe-tiny', sameAs: true, write: (s, d) => writeFusedExperts(s, d) },
  { name: 'qwen2-moe-tiny-fused', fixture: 'qwen2-moe-tiny', sameAs: true, write: (s, d) => writeFusedExperts(s, d) },
  { name: 'qwen3-moe-tiny-sharded', fixture: 'qwen3-moe-tiny', sameAs: true, write: (s, d) => writeSharded(s, d) },
  { name: 'qwen3-moe-tiny-no-norm-topk', fixture: 'qwen3-moe-tiny', what: 'norm_topk_prob false',
    write: (s, d) => writeConfigPatch(s, d, { norm_topk_prob: false }) },
  { name: 'qwen2-moe-tiny-norm-topk', fixture: 'qwen2-moe-tiny', what: 'norm_topk_prob true',
    write: (s, d) => writeConfigPatch(s, d, { norm_topk_prob: true }) },
  { name: 'qwen3-moe-tiny-dense0', fixture: 'qwen3-moe-tiny', what: 'layer 0 dense',
    write: (s, d) => writeDenseLayers(s, d, [0], { decoder_sparse_step: 2 }) },
  { name: 'qwen2-moe-tiny-dense1', fixture: 'qwen2-moe-tiny', what: 'layer 1 dense',
    write: (s, d) => writeDenseLayers(s, d, [1], { mlp_only_layers: [1] }) },
];
