// The CUDA suite's router-tie rule and row verdict (suite.mjs explains the thresholds), apart
// from the suite so that tests/e2e/cuda_ties.test.mjs can hold them to exact cases without a GPU.
import { rowMetrics } from '../e2e/lib/compare.mjs';

// Per position: the smallest top-k gap over the MoE layers (each a Float32Array [T * E] of router
// logits), relative to that layer's largest |logit| at the position. A zero row gives NaN, which
// no threshold accepts.
export function topkMargins(layers, T, k) {
  const margin = new Array(T).fill(Infinity);
  for (const l of layers) {
    const E = l.length / T;
    for (let t = 0; t < T; t++) {
      const row = Array.from(l.subarray(t * E, (t + 1) * E)).sort((a, b) => b - a);
      const scale = Math.max(Math.abs(row[0]), Math.abs(row[E - 1]));
      margin[t] = Math.min(margin[t], k < E ? (row[k - 1] - row[k]) / scale : Infinity);
    }
  }
  return margin;
}

// got vs ref logits [1, T, V] over the clear positions (clear[t] true): worst max|Δ|/max|ref|
// (maxrel) there and over all positions (all), excluded count, min cosine and argmax agreement
// there; ok when every clear row is finite, maxrel is within floor and at least one position is
// clear.
export function judge(got, ref, dims, clear, floor) {
  const [, T, V] = dims;
  const rows = rowMetrics(got, ref, T, V);
  const kept = rows.filter((r) => clear[r.row]);
  // a row with a NaN or an Inf in got is NaN here, whatever its ratio says (an Inf can leave
  // a finite-looking ratio only if ref has one too, but the flag is the rule)
  const worst = (rs) => (rs.some((r) => !r.finite || Number.isNaN(r.ratio)) ? NaN : Math.max(0, ...rs.map((r) => r.ratio)));
  const maxrel = worst(kept), all = worst(rows);
  return {
    maxrel, all, excluded: T - kept.length, ok: Number.isFinite(maxrel) && maxrel <= floor && kept.length > 0,
    minCos: Math.min(...kept.map((r) => r.cos)), argmax: `${kept.filter((r) => r.sameArgmax).length}/${kept.length}`,
  };
}
