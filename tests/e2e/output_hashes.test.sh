#!/usr/bin/env bash
# Output hashes: converts every fixture in every build mode and compares the SHA-256 of every
# file of every output folder with tests/output-hashes.sha256. A refactoring that must not change
# behaviour proves it here: the same checkpoint and options give the same bytes.
# When a change is meant to change outputs, regenerate the list with M2O_UPDATE_HASHES=1 and say
# why in the commit. Prints "ok"/"FAIL" per build and a final "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
export LC_ALL=C

BIN=${M2O_BIN:-build/moe2onnx}
LIST=tests/output-hashes.sha256
passed=0; failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/m2o-hashes.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

# name|fixture|arguments
BUILDS=()
for f in gpt-oss-tiny gpt-oss-bf16-tiny qwen3-moe-tiny qwen2-moe-tiny qwen3_5-moe-tiny; do
    # int4 with bfloat16 io exists for the models without a shared expert
    case $f in gpt-oss*|qwen3-moe*) BUILDS+=("$f/cuda-int4-bf16|$f|-p int4 -e cuda --extra_options use_cuda_bf16=true") ;; esac
    BUILDS+=("$f/cpu-fp32|$f|-p fp32 -e cpu"
             "$f/cpu-fp16|$f|-p fp16 -e cpu"
             "$f/cpu-int4|$f|-p int4 -e cpu"
             "$f/cpu-int4-acc0|$f|-p int4 -e cpu --extra_options int4_accuracy_level=0"
             "$f/cpu-int4-e64|$f|-p int4 -e cpu --extra_options qmoe_block_size=64 int4_block_size=64"
             "$f/cpu-int4-moe8-e128|$f|-p int4 -e cpu --extra_options moe_quant_type=int8 qmoe_block_size=128"
             "$f/cuda-fp16|$f|-p fp16 -e cuda"
             "$f/cuda-bf16|$f|-p bf16 -e cuda"
             "$f/cuda-int4|$f|-p int4 -e cuda"
             "$f/cuda-int4-raw-e32|$f|-p int4 -e cuda --extra_options qmoe_weights_prepacked=0 qmoe_block_size=32"
             "$f/cuda-int4-moe8|$f|-p int4 -e cuda --extra_options moe_quant_type=int8"
             "$f/cuda-mxfp4|$f|-p int4 -e cuda --extra_options moe_quant_type=mxfp4")
done
# The quantization methods and placements of docs/QUANTIZATION.md, on every family (recorded with
# the binary of f788397, before the scale search's AVX2 twin; the twin gives the same bytes).
for f in gpt-oss-tiny gpt-oss-bf16-tiny qwen3-moe-tiny qwen2-moe-tiny qwen3_5-moe-tiny; do
    BUILDS+=("$f/cpu-kquant|$f|-p int4 -e cpu --extra_options algo_config=k_quant"
             "$f/cpu-kquant-mixed|$f|-p int4 -e cpu --extra_options algo_config=k_quant_mixed"
             "$f/cpu-inc-rtn|$f|-p int4 -e cpu --extra_options algo_config=rtn"
             "$f/cpu-asym-uint4|$f|-p int4 -e cpu --extra_options is_symmetric=false moe_quant_type=uint4"
             "$f/cpu-search|$f|-p int4 -e cpu --extra_options scale_search=true"
             "$f/cpu-search-asym-uint8|$f|-p int4 -e cpu --extra_options scale_search=true is_symmetric=false moe_quant_type=uint8"
             "$f/cpu-int8-budget|$f|-p int4 -e cpu --extra_options int8_budget=10%"
             "$f/cpu-moe-per-channel|$f|-p int4 -e cpu --extra_options qmoe_block_size=0"
             "$f/cpu-mixed-presets|$f|-p int4 -e cpu --extra_options matmul_mixed_precision=last_matmul:int8,mixed_layers:int8")
done
for f in gpt-oss-tiny qwen3-moe-tiny; do
    BUILDS+=("$f/cuda-kquant|$f|-p int4 -e cuda --extra_options algo_config=k_quant"
             "$f/cuda-uint4-raw|$f|-p int4 -e cuda --extra_options moe_quant_type=uint4 qmoe_weights_prepacked=0"
             "$f/cuda-search|$f|-p int4 -e cuda --extra_options scale_search=true")
done
BUILDS+=('qwen3-moe-tiny/cpu-quant-config|qwen3-moe-tiny|-p int4 -e cpu --extra_options quant_config={"weights":{"type":"uint4","block_size":64}}')

actual=$tmp/actual
: >"$actual"
for b in "${BUILDS[@]}"; do
    IFS='|' read -r name fixture args <<<"$b"
    out=$tmp/out/${name//\//_}
    # shellcheck disable=SC2086 # args is a list of words
    if ! "$BIN" -q --threads 2 -i "tests/fixtures/$fixture" -o "$out" $args >"$tmp/log" 2>&1; then
        fail "$name: conversion failed: $(tail -n1 "$tmp/log")"
        continue
    fi
    (cd "$out" && find . -type f | sort | xargs sha256sum) | sed "s|  \./|  $name/|" >>"$actual"
    rm -rf "$out"
done

if [ "${M2O_UPDATE_HASHES:-0}" = 1 ]; then
    cp "$actual" "$LIST"
    echo "wrote $LIST ($(wc -l <"$LIST") files)"
fi
if [ ! -f "$LIST" ]; then
    fail "$LIST is missing (generate it with M2O_UPDATE_HASHES=1)"
else
    for b in "${BUILDS[@]}"; do
        name=${b%%|*}
        want=$(grep "  $name/" "$LIST"); got=$(grep "  $name/" "$actual")
        if [ -z "$got" ]; then continue; fi
        if [ "$want" = "$got" ]; then ok "$name: $(printf '%s\n' "$got" | wc -l) files identical"
        else fail "$name: $(diff <(printf '%s\n' "$want") <(printf '%s\n' "$got") | grep -c '^[<>]') lines differ"
             diff <(printf '%s\n' "$want") <(printf '%s\n' "$got") | grep '^[<>]' | head -n4 | sed 's/^/       /'
        fi
    done
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
