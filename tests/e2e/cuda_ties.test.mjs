// The CUDA suite's router-tie rule and row verdict (tests/cuda/ties.mjs), on exact cases, so the
// part of that GPU-only suite that decides what a row may ignore is checked by CI: a position is
// excluded only where the reference router's k-th and (k+1)-th logits are close in some MoE
// layer, an error at any other position fails the row, and a row with nothing left to compare
// fails too.
import assert from 'node:assert/strict';

import { judge, topkMargins } from '../cuda/ties.mjs';

let passed = 0, failed = 0;
function test(name, fn) {
  try {
    fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${(e.stack ?? String(e)).split('\n').slice(0, 3).join(' | ')}`);
  }
}

// Two MoE layers, T = 3 positions, E = 4 experts, top-2. Layer 0: position 1's 2nd and 3rd
// logits differ by 0.01 of its largest |logit|; layer 1: position 2's by 0.5 of it.
const LAYERS = [
  Float32Array.from([4, 2, 1, 0, /* t1 */ 2, 1, 0.98, -1, /* t2 */ 1, -1, -2, -4]),
  Float32Array.from([0, 1, 3, 2, /* t1 */ -2, 1, 0, 2, /* t2 */ 2, 0, 1, -1]),
];

test('topkMargins: smallest k-th minus (k+1)-th gap over layers, relative to the largest |logit|', () => {
  const m = topkMargins(LAYERS, 3, 2);
  // t0: layer 0 (2-1)/4, layer 1 (2-1)/3 → 0.25; t1: layer 0 (1-0.98)/2, layer 1 (1-0)/2 → 0.01;
  // t2: layer 0 (-1+2)/4 = 0.25, layer 1 (1-0)/2 = 0.5 → 0.25
  assert.deepEqual(m.map((x) => Number(x.toFixed(6))), [0.25, 0.01, 0.25]);
});

test('topkMargins: k = E has no (k+1)-th logit, so no tie; an all-zero row is never clear', () => {
  assert.deepEqual(topkMargins([Float32Array.from([1, 1])], 1, 2), [Infinity]);
  const z = topkMargins([Float32Array.from([0, 0, 0])], 1, 1);
  assert.ok(!(z[0] >= 0), `zero row margin ${z[0]} would pass a threshold`);
});

// Logits [1, T = 3, V = 4] and a copy with a given error at one position.
const REF = Float32Array.from([1, 2, 3, 4, -1, 0, 2, 1, 0.5, 0.25, -3, 2]);
const withError = (t, d) => { const g = Float32Array.from(REF); g[t * 4 + 1] += d; return g; };
const DIMS = [1, 3, 4];

test('judge: a large error at an excluded position is counted, not judged', () => {
  const v = judge(withError(1, 1), REF, DIMS, [true, false, true], 2e-3);
  assert.equal(v.ok, true);
  assert.equal(v.excluded, 1);
  assert.equal(v.maxrel, 0);
  assert.equal(v.all, 0.5); // 1 / max|ref| 2 of row 1, still reported
  assert.equal(v.argmax, '2/2');
});

test('judge: the same error at a clear position fails the row', () => {
  const v = judge(withError(2, 0.01), REF, DIMS, [true, false, true], 2e-3);
  assert.equal(v.ok, false);
  assert.ok(Math.abs(v.maxrel - 0.01 / 3) < 1e-7, `maxrel ${v.maxrel}`);
});

test('judge: within the floor passes; NaN at a clear position fails; nothing clear fails', () => {
  assert.equal(judge(withError(0, 4e-3), REF, DIMS, [true, true, true], 2e-3).ok, true); // 1e-3 of max|ref| 4
  // a NaN that is not the row's last value, and an Inf
  const nan = judge(withError(0, NaN), REF, DIMS, [true, true, true], 2e-3);
  assert.equal(nan.ok, false);
  assert.ok(Number.isNaN(nan.maxrel), `maxrel ${nan.maxrel}`);
  assert.equal(judge(withError(2, Infinity), REF, DIMS, [true, true, true], 2e-3).ok, false);
  assert.equal(judge(withError(1, NaN), REF, DIMS, [true, false, true], 2e-3).ok, true); // excluded: counted in all
  assert.equal(judge(Float32Array.from(REF), REF, DIMS, [false, false, false], 2e-3).ok, false);
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
