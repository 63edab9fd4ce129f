// Reads safetensors files (docs/FORMATS.md §1) for the end-to-end tests, plus the 16-bit float conversions
// the harness needs (Node 20 has no Float16Array). Node built-ins only.
import { readFileSync } from 'node:fs';

const F32_VIEW = new Float32Array(1);
const U32_VIEW = new Uint32Array(F32_VIEW.buffer);

export function bf16ToF32(h) {
  U32_VIEW[0] = (h & 0xffff) << 16;
  return F32_VIEW[0];
}

export function f16ToF32(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const man = h & 0x3ff;
  if (exp === 0) return sign * man * 2 ** -24;
  if (exp === 31) return man ? NaN : sign * Infinity;
  return sign * (1 + man / 1024) * 2 ** (exp - 15);
}

// float32 → binary16, round to nearest even (like numpy / ONNX Runtime).
export function f32ToF16(value) {
  F32_VIEW[0] = value;
  const x = U32_VIEW[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let man = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (man ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    man |= 0x800000;
    const shift = 14 - e;
    let half = man >>> shift;
    const rest = man & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rest > mid || (rest === mid && (half & 1))) half++;
    return sign | half;
  }
  let half = (e << 10) | (man >>> 13);
  const rest = man & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (half & 1))) half++;
  return sign | half;
}

export function f16ArrayToF32(u16) {
  const out = new Float32Array(u16.length);
  for (let i = 0; i < u16.length; i++) out[i] = f16ToF32(u16[i]);
  return out;
}

export function bf16ArrayToF32(u16) {
  const bits = new Uint32Array(u16.length);
  for (let i = 0; i < u16.length; i++) bits[i] = u16[i] << 16;
  return new Float32Array(bits.buffer);
}

export function f32ArrayToF16(f32) {
  const out = new Uint16Array(f32.length);
  for (let i = 0; i < f32.length; i++) out[i] = f32ToF16(f32[i]);
  return out;
}

// dtype → [bytes per element, typed array constructor of the stored bits]
const DTYPES = {
  BOOL: [1, Uint8Array], U8: [1, Uint8Array], I8: [1, Int8Array],
  U16: [2, Uint16Array], I16: [2, Int16Array], F16: [2, Uint16Array], BF16: [2, Uint16Array],
  U32: [4, Uint32Array], I32: [4, Int32Array], F32: [4, Float32Array],
  U64: [8, BigUint64Array], I64: [8, BigInt64Array], F64: [8, Float64Array],
  F8_E4M3: [1, Uint8Array], F8_E5M2: [1, Uint8Array], F8_E8M0: [1, Uint8Array],
};

// Reads the whole file: { tensors: {name: {dtype, shape, data, raw?}}, metadata }.
// data is a Float32Array for F16 and BF16 (raw keeps the Uint16Array bits), else the natural
// typed array (BigInt64Array for I64). Throws one line naming the file and tensor on any
// violation of the format.
export function readSafetensorsWithMetadata(path) {
  const buf = readFileSync(path);
  const fail = (msg) => { throw new Error(`${path}: ${msg}`); };
  if (buf.length < 8) fail('shorter than the 8-byte header length');
  const n = buf.readBigUInt64LE(0);
  if (n > BigInt(buf.length - 8)) fail(`header length ${n} exceeds the file`);
  const headerEnd = 8 + Number(n);
  let header;
  try {
    header = JSON.parse(buf.subarray(8, headerEnd).toString('utf8'));
  } catch (e) {
    fail(`header is not JSON (${e.message})`);
  }
  const metadata = header.__metadata__ ?? {};
  delete header.__metadata__;
  const dataLen = buf.length - headerEnd;
  const spans = [];
  const tensors = {};
  for (const [name, t] of Object.entries(header)) {
    const spec = DTYPES[t.dtype];
    if (!spec) fail(`tensor ${name} has unknown dtype ${t.dtype}`);
    const [size, Ctor] = spec;
    const numel = t.shape.reduce((a, b) => a * b, 1);
    const [begin, end] = t.data_offsets;
    if (!(begin >= 0 && end <= dataLen && end - begin === numel * size))
      fail(`tensor ${name}: data_offsets [${begin}, ${end}] do not fit ${t.dtype} ${JSON.stringify(t.shape)} in ${dataLen} data bytes`);
    spans.push([begin, end, name]);
    // Copy into a fresh buffer: views need element alignment the file does not promise.
    const bytes = buf.subarray(headerEnd + begin, headerEnd + end);
    const copy = new Uint8Array(bytes.length);
    copy.set(bytes);
    const bits = new Ctor(copy.buffer, 0, numel);
    const entry = { dtype: t.dtype, shape: t.shape.slice() };
    if (t.dtype === 'F16') Object.assign(entry, { data: f16ArrayToF32(bits), raw: bits });
    else if (t.dtype === 'BF16') Object.assign(entry, { data: bf16ArrayToF32(bits), raw: bits });
    else entry.data = bits;
    tensors[name] = entry;
  }
  spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let pos = 0;
  for (const [begin, end, name] of spans) {
    if (begin !== pos) fail(`tensor ${name} starts at ${begin}, expected ${pos} (holes or overlaps)`);
    pos = end;
  }
  if (pos !== dataLen) fail(`tensors cover ${pos} of ${dataLen} data bytes`);
  return { tensors, metadata };
}

// {name: {dtype, shape, data}} of one file.
export function readSafetensors(path) {
  return readSafetensorsWithMetadata(path).tensors;
}

// Builds a safetensors file image (Buffer) from {name: {dtype, shape, bytes: Uint8Array}}, in
// insertion order; for tests that need a file with known bytes.
export function encodeSafetensors(tensors, metadata) {
  const header = {};
  if (metadata) header.__metadata__ = metadata;
  let pos = 0;
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [pos, pos + t.bytes.length] };
    pos += t.bytes.length;
  }
  let json = JSON.stringify(header);
  while ((8 + Buffer.byteLength(json)) % 8) json += ' ';
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  return Buffer.concat([head, Buffer.from(json), ...Object.values(tensors).map((t) => Buffer.from(t.bytes))]);
}
