#!/usr/bin/env bash
# Issue 6's whole benchmark on one machine, at one thread count (default: all cores):
#   (b) one MoE layer of gpt-oss-20b (32 experts, 5760x2880 + 2880x2880) and of Qwen3-30B-A3B
#       (128 experts, 1536x2048 + 2048x768): quantize (float16 scales) + CUTLASS SM80 pack,
#       moe2onnx's expert path (build/bench/bench_layer, from BF16 in the checkpoint layouts)
#       against ONNX Runtime's Python path (bench/ort_python_layer.py: quantize_matmul_4bits +
#       cuda_quantizer's packer, as onnxruntime-genai's builder runs them), and the ratio
#       (target: moe2onnx >= 10x faster); skipped with a note when the onnxruntime Python
#       package is not importable;
#   (a) and (c) through bench/bench_convert.sh: conversion of a synthetic 2-layer gpt-oss-20b
#       checkpoint vs cat of its files, four cases, and peak memory for 2, 4 and 8 layers.
# Both sides get the same cores: everything runs under taskset -c 0..T-1, torch and BLAS pools
# get T threads (OMP_NUM_THREADS etc.), and CUDA_VISIBLE_DEVICES is empty so the PyTorch packer
# runs on the CPU like ONNX Runtime's quantizer.
#
# usage: bench/run_device_bench.sh [THREADS] [--work DIR] [--out DIR] [--skip-convert]
#   THREADS  cores and threads for both sides (default: all cores)
#   --work / --out: passed to bench_convert.sh (synthetic checkpoints / outputs; outputs go to
#            /dev/shm by default)
# About 4-5 minutes on 16 cores (most of it synthesizing ~20 GB of checkpoints and ONNX
# Runtime's Python packer); needs ~25 GB free under --work (default bench-work/) and python3
# with numpy, onnxruntime (and torch for its packer) for part (b).
set -uo pipefail
cd "$(dirname "$0")/.."

threads=$(nproc); conv_args=(); convert=1
while [ $# -gt 0 ]; do
    case $1 in
        --work|--out) conv_args+=("$1" "$2"); shift 2 ;;
        --skip-convert) convert=0; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        [0-9]*) threads=$1; shift ;;
        *) echo "run_device_bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ "$threads" -gt "$(nproc)" ]; then
    echo "run_device_bench: $threads threads asked, the machine has $(nproc) cores" >&2; exit 2
fi

echo "== build"
if ! make -j"$(nproc)" all bench >/tmp/m2o-make.$$ 2>&1; then
    if [ -x build/moe2onnx ] && [ -x build/bench/bench_layer ]; then
        echo "(make failed here: $(grep -m1 -iE 'error|not found' /tmp/m2o-make.$$); using the binaries already in build/)"
    else
        cat /tmp/m2o-make.$$ >&2; echo "run_device_bench: make failed and build/ has no binaries" >&2
        rm -f /tmp/m2o-make.$$; exit 1
    fi
fi
rm -f /tmp/m2o-make.$$
# A build made on another machine (this one lacking protobuf-c/cJSON headers) can bring the two
# shared libraries it links in build/lib (libprotobuf-c.so.1, libcjson.so.1).
[ -d build/lib ] && export LD_LIBRARY_PATH="$PWD/build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

pin=(taskset -c "0-$((threads - 1))")
export CUDA_VISIBLE_DEVICES=
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads
export NUMEXPR_NUM_THREADS=$threads
echo "== machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/^Mem:/ { print $2 " GiB" }'), $(uname -r); benchmark on $threads cores (${pin[*]})"

# seconds of a bench line: "...: 1.234 s (..."
secs_of() { sed -n 's/.*: \([0-9.]*\) s (.*/\1/p' <<<"$1" | tail -n1; }
experts_of() { sed -n 's/.* layer: \([0-9]*\) experts.*/\1/p' <<<"$1" | tail -n1; }

echo
echo "== (b) one MoE layer: quantize + CUTLASS pack, float16 scales, block 32, $threads threads"
have_ort=0
python3 -c "import numpy, onnxruntime" 2>/dev/null && have_ort=1
[ "$have_ort" -eq 1 ] || echo "(onnxruntime Python package not importable: ONNX Runtime side skipped)"
printf '| shape | moe2onnx s | ms/expert | ONNX Runtime Python s | ms/expert | ratio |\n|---|---:|---:|---:|---:|---:|\n' >/tmp/m2o-layer-table.$$
for shape in gpt-oss-20b qwen3-30b-a3b; do
    ours=$("${pin[@]}" build/bench/bench_layer "$shape" "$threads" 4 32 bf16 3 2>&1)
    echo "$ours"
    o_s=$(secs_of "$ours"); o_e=$(experts_of "$ours")
    p_s=""; p_e=""; ratio="-"
    if [ "$have_ort" -eq 1 ]; then
        theirs=$("${pin[@]}" python3 bench/ort_python_layer.py "$shape" 32 2>&1)
        echo "$theirs"
        p_s=$(secs_of "$theirs"); p_e=$(experts_of "$theirs")
    fi
    if [ -n "$o_s" ] && [ -n "$p_s" ]; then
        # per expert, in case the Python side was limited with max_experts
        ratio=$(awk "BEGIN { printf \"%.1fx\", ($p_s / $p_e) / ($o_s / $o_e) }")
        echo "ratio $shape: ONNX Runtime Python / moe2onnx = $ratio (target >= 10x)"
    fi
    o_ms=$( [ -n "$o_s" ] && awk "BEGIN { printf \"%.2f\", $o_s * 1000 / $o_e }" || echo -)
    p_ms=$( [ -n "$p_s" ] && awk "BEGIN { printf \"%.2f\", $p_s * 1000 / $p_e }" || echo -)
    echo "| $shape | ${o_s:--} | $o_ms | ${p_s:--} | $p_ms | $ratio |" >>/tmp/m2o-layer-table.$$
done
echo
cat /tmp/m2o-layer-table.$$; rm -f /tmp/m2o-layer-table.$$

if [ "$convert" -eq 1 ]; then
    echo
    echo "== (a) conversion vs cat, (c) peak memory by layers"
    bench/bench_convert.sh --threads "$threads" "${conv_args[@]}"
fi
