// Logits comparison against a reference [1, T, V]: per-row metrics and a pass/fail verdict
// against a floor. Node built-ins only.

// Per-row metrics of got vs ref (flat arrays of rows × vocab numbers).
//   maxAbsDiff = max |got - ref|, maxAbsRef = max |ref|, ratio = maxAbsDiff / maxAbsRef,
//   cos = cosine similarity, argmax of each, sameArgmax (with ties: got's choice counts as the
//   same when ref scores it within argmaxTieTol of ref's best), finite = no NaN/Inf in got.
export function rowMetrics(got, ref, rows, vocab, { argmaxTieTol = 0 } = {}) {
  if (got.length !== rows * vocab || ref.length !== rows * vocab)
    throw new Error(`compare: got ${got.length} and reference ${ref.length} numbers, expected ${rows} x ${vocab}`);
  const out = [];
  for (let r = 0; r < rows; r++) {
    let maxAbsDiff = 0, maxAbsRef = 0, dot = 0, ng = 0, nr = 0, finite = true;
    let ag = 0, ar = 0;
    for (let j = 0, o = r * vocab; j < vocab; j++, o++) {
      const g = got[o], x = ref[o];
      if (!Number.isFinite(g)) finite = false;
      const d = Math.abs(g - x);
      if (Number.isNaN(d) || d > maxAbsDiff) maxAbsDiff = d; // NaN stays: no later d > NaN replaces it
      maxAbsRef = Math.max(maxAbsRef, Math.abs(x));
      dot += g * x;
      ng += g * g;
      nr += x * x;
      if (g > got[r * vocab + ag]) ag = j;
      if (x > ref[r * vocab + ar]) ar = j;
    }
    const cos = ng > 0 && nr > 0 ? dot / Math.sqrt(ng * nr) : ng === nr ? 1 : 0;
    const sameArgmax = ag === ar || ref[r * vocab + ag] >= ref[r * vocab + ar] - argmaxTieTol;
    out.push({
      row: r, maxAbsDiff, maxAbsRef, ratio: maxAbsRef > 0 ? maxAbsDiff / maxAbsRef : maxAbsDiff,
      cos: finite ? cos : NaN, argmaxGot: ag, argmaxRef: ar, sameArgmax: finite && sameArgmax, finite,
    });
  }
  return out;
}

// Summary over rows: worst ratio, smallest cosine, argmax agreement count.
export function summarize(rowsMetrics) {
  const s = {
    rows: rowsMetrics.length, maxAbsDiff: 0, maxAbsRef: 0, ratio: 0, minCos: 1, minCosRow: -1,
    worstRatioRow: -1, argmaxAgree: 0, finite: true,
  };
  for (const m of rowsMetrics) {
    s.maxAbsDiff = Math.max(s.maxAbsDiff, m.maxAbsDiff);
    s.maxAbsRef = Math.max(s.maxAbsRef, m.maxAbsRef);
    // a NaN, once taken, stays (no later comparison with NaN is true)
    if (Number.isNaN(m.ratio) || m.ratio > s.ratio) { s.ratio = m.ratio; s.worstRatioRow = m.row; }
    if (Number.isNaN(m.cos) || m.cos < s.minCos) { s.minCos = m.cos; s.minCosRow = m.row; }
    s.argmaxAgree += m.sameArgmax ? 1 : 0;
    s.finite &&= m.finite;
  }
  return s;
}

const fmt = (x) => (x === 0 ? '0' : Number.isFinite(x) ? x.toPrecision(3) : String(x));

// Judges got against ref. dims = [1, T, V] (or [T, V]). floor: any of
//   { maxRel }      every row's max|Δ| / max|ref| ≤ maxRel
//   { minCos }      every row's cosine ≥ minCos
//   { sameArgmax }  every row's argmax agrees (argmaxTieTol allows near-ties)
// Non-finite values always fail. Returns { ok, lines, summary, rows }: lines are human-readable,
// the first one the overall verdict, then one per failing row (at most maxRowLines).
export function checkLogits(got, ref, dims, floor, { label = 'logits', argmaxTieTol = 0, maxRowLines = 8 } = {}) {
  const vocab = dims[dims.length - 1];
  const rows = dims.slice(0, -1).reduce((a, b) => a * b, 1);
  const perRow = rowMetrics(got, ref, rows, vocab, { argmaxTieTol });
  const s = summarize(perRow);
  const rowFails = (m) => {
    const why = [];
    if (!m.finite) why.push('non-finite values');
    if (floor.maxRel !== undefined && !(m.ratio <= floor.maxRel)) why.push(`ratio ${fmt(m.ratio)} > ${floor.maxRel}`);
    if (floor.minCos !== undefined && !(m.cos >= floor.minCos)) why.push(`cos ${fmt(m.cos)} < ${floor.minCos}`);
    if (floor.sameArgmax && !m.sameArgmax) why.push(`argmax ${m.argmaxGot} vs reference ${m.argmaxRef}`);
    return why;
  };
  const failing = perRow.map((m) => [m, rowFails(m)]).filter(([, why]) => why.length);
  const ok = failing.length === 0 && rows > 0;
  const floorText = Object.entries(floor).map(([k, v]) => `${k} ${v}`).join(', ');
  const lines = [
    `${ok ? 'ok' : 'FAIL'} ${label} [${dims.join(', ')}]: max|Δ| ${fmt(s.maxAbsDiff)}, max|ref| ${fmt(s.maxAbsRef)}, ` +
      `ratio ${fmt(s.ratio)} (row ${s.worstRatioRow}), min cos ${fmt(s.minCos)} (row ${s.minCosRow}), ` +
      `argmax ${s.argmaxAgree}/${s.rows} (floor: ${floorText})`,
  ];
  for (const [m, why] of failing.slice(0, maxRowLines))
    lines.push(`  row ${m.row}: ${why.join('; ')} (max|Δ| ${fmt(m.maxAbsDiff)}, max|ref| ${fmt(m.maxAbsRef)})`);
  if (failing.length > maxRowLines) lines.push(`  ... ${failing.length - maxRowLines} more failing rows`);
  return { ok, lines, summary: s, rows: perRow };
}
