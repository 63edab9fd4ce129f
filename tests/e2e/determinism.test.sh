#!/usr/bin/env bash
# The converter's output does not depend on the thread count: each fixture and a few synthetic
# checkpoints are converted with --threads 1, 2 and 7 (precisions and providers that take every
# expert path: CUTLASS int4, raw int4 with float32 scales, int8, float16 MoE, MXFP4), and
# model.onnx and model.onnx.data must be byte-identical across the three. Exports the converter
# cannot make yet are reported and skipped. Prints "ok"/"FAIL" per check and a final
# "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "$0")/../.."

passed=0; failed=0
ok()   { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }
finish() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit $?; }

bin=build/moe2onnx
fx=tests/fixtures
tmp=$(mktemp -d "${TMPDIR:-/tmp}/m2o-determinism.XXXXXX") || { fail "mktemp"; finish; }
trap 'rm -rf "$tmp"' EXIT
if [ ! -x "$bin" ]; then fail "$bin is missing (run make)"; finish; fi

# Synthetic checkpoints: more layers than the fixtures, MXFP4 and BF16 experts.
synth_ok=1
for s in "gpt-oss-tiny mxfp4" "gpt-oss-tiny bf16"; do
    set -- $s
    if ! "$bin" synth --preset "$1" --experts "$2" --layers 3 --seed 7 -q -o "$tmp/synth-$1-$2" \
         >"$tmp/log" 2>&1; then
        fail "synth $s: $(tail -n1 "$tmp/log")"; synth_ok=0
    fi
done
if "$bin" synth --preset qwen3-moe-tiny --layers 3 -q -o "$tmp/synth-qwen3-moe-tiny" \
     >"$tmp/log" 2>&1; then :; else echo "skip synth qwen3-moe-tiny: $(tail -n1 "$tmp/log")"; fi

checkpoints=("$fx/gpt-oss-tiny" "$fx/gpt-oss-bf16-tiny" "$fx/qwen3-moe-tiny" "$fx/qwen2-moe-tiny"
             "$tmp/synth-gpt-oss-tiny-mxfp4" "$tmp/synth-gpt-oss-tiny-bf16"
             "$tmp/synth-qwen3-moe-tiny")
cases=("int4 cuda" "int4 cpu" "int4 cuda moe_quant_type=int8" "fp16 cuda"
       "int4 cuda moe_quant_type=mxfp4")
compared=0
for ck in "${checkpoints[@]}"; do
    [ -d "$ck" ] || continue
    for case in "${cases[@]}"; do
        set -- $case
        extra=()
        [ $# -ge 3 ] && extra=(--extra_options "$3")
        label="$(basename "$ck") -p $1 -e $2${3:+ $3}"
        made=()
        for t in 1 2 7; do
            out="$tmp/out-$t"
            rm -rf "$out"
            if "$bin" -q --threads "$t" -i "$ck" -o "$out" -p "$1" -e "$2" "${extra[@]}" \
                 >"$tmp/log" 2>&1; then
                made+=("$t")
            else
                break
            fi
        done
        if [ "${#made[@]}" -eq 0 ]; then
            echo "skip $label: $(tail -n1 "$tmp/log")"
            continue
        fi
        if [ "${#made[@]}" -ne 3 ]; then
            fail "$label: threads 1 worked but --threads ${made[*]} did not: $(tail -n1 "$tmp/log")"
            continue
        fi
        same=1
        for t in 2 7; do
            for f in model.onnx model.onnx.data; do
                cmp -s "$tmp/out-1/$f" "$tmp/out-$t/$f" || { same=0; echo "  $f differs: threads 1 vs $t"; }
            done
        done
        size=$(stat -c %s "$tmp/out-1/model.onnx.data")
        if [ "$same" -eq 1 ] && [ "$size" -gt 0 ]; then
            ok "$label: threads 1, 2, 7 give identical model.onnx and model.onnx.data ($size bytes)"
            compared=$((compared + 1))
        else
            fail "$label: outputs differ across thread counts"
        fi
    done
done
[ "$synth_ok" -eq 1 ] && [ "$compared" -ge 20 ] && ok "$compared exports compared" \
    || fail "only $compared exports compared (expected at least 20)"
finish
