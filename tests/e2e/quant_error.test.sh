#!/usr/bin/env bash
# Per-tensor quantization error (build summary, --quant-report, verify --json): for exports that
# quantize through each producer path (MatMulNBits, expert bands, input-major expert panels,
# CUTLASS SM80, MXFP4 encoding, expert and MatMulNBits zero points, per channel, k_quant, INC
# RTN, scale search, int8 MatMuls), the build's report must name the same tensors as verify's
# quantized entries, with the same format fields and the same rel_rms and max_abs within 1e-6
# relative; the report must be byte-identical with --threads 1 and 3; -q must leave only the
# one summary line, and the full output must show the grouped summary with the worst tensor.
# Prints "ok"/"FAIL" per check and a final "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "$0")/../.."

bin=build/moe2onnx
fx=tests/fixtures
passed=0; failed=0
ok()   { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }
finish() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit $?; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/m2o-qerr.XXXXXX") || { fail "mktemp"; finish; }
trap 'rm -rf "$tmp"' EXIT
[ -x "$bin" ] || { fail "$bin is missing (run make)"; finish; }
command -v node >/dev/null || { fail "node is not installed (scripts/setup.sh)"; finish; }

# compare REPORT VERIFY_JSON STDOUT: prints problems, nothing when the three agree
compare() {
    node -e '
const fs = require("fs");
const rep = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
const ver = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const out = fs.readFileSync(process.argv[3], "utf8");
const bad = [];
const byName = new Map(ver.tensors.map((t) => [t.name, t]));
if (!rep.complete) bad.push("report not complete");
if (rep.tensors.length === 0) bad.push("report lists no tensor");
const rel = (a, b) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-300);
for (const t of rep.tensors) {
    const v = byName.get(t.name);
    if (!v) { bad.push(`${t.name}: not in verify --json`); continue; }
    for (const k of ["role", "kind", "bits", "block_size", "symmetric", "scale_type", "elements"])
        if (t[k] !== v[k]) bad.push(`${t.name}: ${k} ${t[k]} vs verify ${v[k]}`);
    if (!(t.rel_rms > 0)) bad.push(`${t.name}: rel_rms ${t.rel_rms} is not positive`);
    if (!(rel(t.rel_rms, v.rel_rms) <= 1e-6)) bad.push(`${t.name}: rel_rms ${t.rel_rms} vs verify ${v.rel_rms}`);
    if (!(rel(t.max_abs, v.max_abs) <= 1e-6)) bad.push(`${t.name}: max_abs ${t.max_abs} vs verify ${v.max_abs}`);
}
const inRep = new Set(rep.tensors.map((t) => t.name));
for (const v of ver.tensors)
    if ((v.kind === "int" || v.kind === "mxfp4") && v.bit_exact === undefined && !inRep.has(v.name))
        bad.push(`${v.name}: quantized (verify) but missing from the report`);
let worst = rep.tensors[0];
for (const t of rep.tensors) if (t.rel_rms > worst.rel_rms) worst = t;
if (worst && !out.includes(`worst ${worst.name} `)) bad.push(`summary does not name the worst tensor ${worst.name}`);
if (!/^quantization error \(relative RMS per tensor, by role\):$/m.test(out)) bad.push("no summary header");
console.log(bad.join("\n"));
' "$1" "$2" "$3"
}

for case in "qwen3-moe-tiny int4 cpu" "gpt-oss-bf16-tiny int4 cpu" "gpt-oss-tiny int4 cuda" \
            "gpt-oss-bf16-tiny int4 cuda moe_quant_type=mxfp4" "qwen3_5-moe-tiny int4 cpu" \
            "qwen3-moe-tiny int4 cpu moe_quant_type=uint4" "gpt-oss-bf16-tiny int4 cpu moe_quant_type=uint8" \
            "qwen3-moe-tiny int4 cpu qmoe_block_size=0" "gpt-oss-bf16-tiny int4 cuda scale_search=true" \
            "qwen3-moe-tiny int4 cpu is_symmetric=false" "qwen3-moe-tiny int4 cpu algo_config=k_quant" \
            "qwen2-moe-tiny int4 cpu algo_config=rtn" "qwen2-moe-tiny int4 cpu scale_search=matmul" \
            "qwen3_5-moe-tiny int4 cpu algo_config=k_quant_mixed" \
            "qwen3-moe-tiny int4 cpu matmul_mixed_precision=last_matmul:int8"; do
    set -- $case
    name=$(echo "$case" | tr ' =' '__')
    extra=()
    [ $# -ge 4 ] && extra=(--extra_options "$4")
    if ! "$bin" --threads 1 -i "$fx/$1" -o "$tmp/$name.1" -p "$2" -e "$3" "${extra[@]}" \
            --quant-report "$tmp/$name.1.json" >"$tmp/$name.out" 2>"$tmp/$name.err" ||
       ! "$bin" -q --threads 3 -i "$fx/$1" -o "$tmp/$name.3" -p "$2" -e "$3" "${extra[@]}" \
            --quant-report "$tmp/$name.3.json" >"$tmp/$name.q" 2>&1; then
        fail "$case: export failed: $(tail -n1 "$tmp/$name.err")"
        continue
    fi
    cmp -s "$tmp/$name.1.json" "$tmp/$name.3.json" && ok "$case: report identical with --threads 1 and 3" ||
        fail "$case: report differs between --threads 1 and 3"
    [ "$(wc -l <"$tmp/$name.q")" -eq 1 ] && grep -q '^moe2onnx: wrote ' "$tmp/$name.q" &&
        ok "$case: -q prints only the summary line" ||
        fail "$case: -q printed: $(head -c 300 "$tmp/$name.q" | tr '\n' '|')"
    [ "$(tail -n1 "$tmp/$name.out" | cut -c1-16)" = "moe2onnx: wrote " ] &&
        ok "$case: the summary line stays last" || fail "$case: last line: $(tail -n1 "$tmp/$name.out")"
    "$bin" verify --json --threads 2 -i "$fx/$1" -o "$tmp/$name.1" >"$tmp/$name.verify.json" 2>&1
    problems=$(compare "$tmp/$name.1.json" "$tmp/$name.verify.json" "$tmp/$name.out" 2>&1)
    [ -z "$problems" ] && ok "$case: build and verify agree on every tensor's error" ||
        fail "$case: $(echo "$problems" | head -n 5 | tr '\n' '|')"
    rm -rf "$tmp/$name.1" "$tmp/$name.3"
done
finish
