// Runs the models written by tests/unit/test_graph_ort.c in ONNX Runtime and checks the numbers
// against values computed here from the same formulas, independently of the C writer.
// Usage: node writer_check.mjs DIR   (DIR holds basic/ and e8m0/)
import * as ort from 'onnxruntime-node';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.argv[2];
let passed = 0, failed = 0;
function check(name, cond, detail = '') {
  if (cond) { passed++; console.log(`ok   ${name}${detail ? ` (${detail})` : ''}`); }
  else { failed++; console.log(`FAIL ${name}${detail ? `: ${detail}` : ''}`); }
}

// The formulas of test_graph_ort.c, computed in float32 where the C side stores float32.
const K1 = 8, H = 32, N = 64, BS = 16, NB = H / BS;
const f32 = Math.fround;
const w1 = (k, n) => ((((k * 7 + n * 3) % 11) - 5) * 0.125);
const b1 = (n) => f32(f32(0.01 * n) - 0.1);
const gamma = (n) => f32(1 + f32(0.05 * (n % 4)));
const qCode = (n, k) => (n * 5 + k * 3) % 16;
const qScale = (n, blk) => f32(f32(0.02 * (1 + (n + blk) % 5)) * (n % 2 ? -1 : 1));

// Y = 0.5 · MatMulNBits(RMSNorm(X·W1 + B1) · gamma), dequantized weight (code - 8) · scale.
function expected(x, batch) {
  const y = new Float64Array(batch * N);
  for (let b = 0; b < batch; b++) {
    const h = new Float64Array(H);
    for (let n = 0; n < H; n++) {
      let s = 0;
      for (let k = 0; k < K1; k++) s += x[b * K1 + k] * w1(k, n);
      h[n] = s + b1(n);
    }
    const ms = h.reduce((a, v) => a + v * v, 0) / H;
    const inv = 1 / Math.sqrt(ms + 1e-5);
    for (let n = 0; n < H; n++) h[n] = h[n] * inv * gamma(n);
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < H; k++) s += h[k] * (qCode(n, k) - 8) * qScale(n, Math.floor(k / BS));
      y[b * N + n] = 0.5 * s;
    }
  }
  return y;
}

function maxRelErr(got, want) {
  let worst = 0;
  for (let i = 0; i < want.length; i++)
    worst = Math.max(worst, Math.abs(got[i] - want[i]) / Math.max(1, Math.abs(want[i])));
  return worst;
}

// The data file layout: W1 at offset 0, Bq at the next 64-byte boundary (1024), nothing else.
function checkDataFile(path) {
  const buf = readFileSync(path);
  check('basic data file is 2048 bytes (W1 at 0, Bq at 1024)', buf.length === 2048, `${buf.length} bytes`);
  if (buf.length !== 2048) return;
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
  let w1ok = true, bqok = true;
  for (let k = 0; k < K1; k++)
    for (let n = 0; n < H; n++)
      if (dv.getFloat32((k * H + n) * 4, true) !== f32(w1(k, n))) w1ok = false;
  for (let n = 0; n < N; n++)
    for (let k = 0; k < H; k += 2)
      if (buf[1024 + n * (H / 2) + k / 2] !== (qCode(n, k) | (qCode(n, k + 1) << 4))) bqok = false;
  check('W1 bytes in the data file equal the streamed values', w1ok);
  check('Bq bytes in the data file equal the hand-packed 4-bit codes', bqok);
}

async function checkBasic() {
  const model = join(dir, 'basic', 'model.onnx');
  checkDataFile(join(dir, 'basic', 'model.onnx.data'));
  let session;
  try {
    session = await ort.InferenceSession.create(model);
    check('basic model loads in ONNX Runtime', true);
  } catch (e) {
    check('basic model loads in ONNX Runtime', false, e.message);
    return;
  }
  for (const batch of [3, 1]) {
    const x = Float32Array.from({ length: batch * K1 }, (_, i) => Math.sin(1 + i));
    const out = await session.run({ X: new ort.Tensor('float32', x, [batch, K1]) });
    const y = out.Y;
    check(`basic batch ${batch}: output dims [${batch}, ${N}]`,
      y.dims.length === 2 && y.dims[0] === batch && y.dims[1] === N, `got [${y.dims}]`);
    const want = expected(x, batch);
    const err = maxRelErr(y.data, want);
    check(`basic batch ${batch}: Y matches independent computation within 1e-4`, err <= 1e-4,
      `max rel err ${err.toExponential(2)}, Y[0]=${y.data[0].toFixed(6)} want ${want[0].toFixed(6)}`);
  }
}

async function checkE8m0() {
  const model = join(dir, 'e8m0', 'model.onnx');
  const head = readFileSync(model).subarray(0, 2);
  // ir_version is field 1 (varint), packed first: bytes 0x08, 11.
  check('e8m0 model declares ir_version 11', head[0] === 0x08 && head[1] === 11, `bytes ${head[0]} ${head[1]}`);
  check('e8m0 model keeps a 4-byte tensor inline (empty data file)',
    statSync(join(dir, 'e8m0', 'model.onnx.data')).size === 0);
  try {
    const session = await ort.InferenceSession.create(model, { logSeverityLevel: 3 });
    const x = Float32Array.from([1.5, -2, 0.25, 8]);
    const out = await session.run({ X: new ort.Tensor('float32', x, [4]) });
    check('e8m0 model (FLOAT8E8M0 initializer, IR 11) loads and runs',
      Array.from(out.Y.data).every((v, i) => v === x[i]));
  } catch (e) {
    check('e8m0 model (FLOAT8E8M0 initializer, IR 11) loads and runs', false, e.message);
  }
}

try {
  await checkBasic();
  await checkE8m0();
} catch (e) {
  check('writer e2e checks ran to the end', false, e.stack);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
