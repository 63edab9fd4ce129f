#!/usr/bin/env bash
# Conversion-time cost of each quantization method (issue 18), against the default (ONNX
# Runtime's symmetric round-to-nearest) measured in the same run: one-layer synthetic checkpoints
# at the real widths of gpt-oss-20b (BF16 experts, 32 of 2880 x 5760) and Qwen3-30B-A3B (128
# experts of 2048 x 1536), converted with -p int4 -e cpu and each method's options; best of
# --repeat runs each. Prints a Markdown table (seconds and ratio to the default) and the command.
#
# usage: bench/bench_methods.sh [--threads N] [--work DIR] [--repeat R] [--keep]
#   --work DIR   synthetic checkpoints (default bench-work/; ~2.8 GB + ~2.4 GB)
#   --keep       keep them for the next run
set -uo pipefail
cd "$(dirname "$0")/.."
threads=$(nproc); work=bench-work; repeat=2; keep=0
while [ $# -gt 0 ]; do
    case $1 in
        --threads) threads=$2; shift 2 ;;
        --work) work=$2; shift 2 ;;
        --repeat) repeat=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "bench_methods: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
bin=build/moe2onnx
[ -x "$bin" ] || { echo "bench_methods: $bin is missing: run make" >&2; exit 1; }
[ -d build/lib ] && export LD_LIBRARY_PATH="$PWD/build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p "$work" || exit 1
out=$(mktemp -d "${TMPDIR:-/tmp}/m2o-methods.XXXXXX") || exit 1
trap 'rm -rf "$out"; [ "$keep" = 1 ] || rm -rf "$work"/methods-*' EXIT
now() { date +%s.%N; }

ckpt() { # PRESET EXPERTS -> directory
    local dir="$work/methods-$1"
    [ -f "$dir/config.json" ] || "$bin" synth --preset "$1" --layers 1 --experts "$2" \
        --threads "$threads" -q -o "$dir" >&2 || { echo "bench_methods: synth $1 failed" >&2; exit 1; }
    echo "$dir"
}

# name|extra options
methods=(
    "default (RTN, symmetric)|"
    "is_symmetric=false (RTN, zero points)|is_symmetric=false"
    "algo_config=rtn (INC RTN)|algo_config=rtn"
    "algo_config=k_quant|algo_config=k_quant"
    "algo_config=k_quant_mixed|algo_config=k_quant_mixed"
    "scale_search=true (MatMul and experts)|scale_search=true"
    "moe_quant_type=int8|moe_quant_type=int8"
    "moe_quant_type=uint4 (expert zero points)|moe_quant_type=uint4"
    "qmoe_block_size=0 (per-channel experts)|qmoe_block_size=0"
)

time_one() { # DIR EXTRA -> best seconds, or "refused: message"
    local best="" t0 t1 dt
    for _ in $(seq "$repeat"); do
        rm -rf "$out/x"
        t0=$(now)
        # shellcheck disable=SC2086
        if ! "$bin" -q -i "$1" -o "$out/x" -p int4 -e cpu --threads "$threads" \
             ${2:+--extra_options $2} >"$out/log" 2>&1; then
            echo "failed: $(tail -n1 "$out/log")"; return
        fi
        t1=$(now)
        dt=$(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }")
        if [ -z "$best" ] || awk "BEGIN { exit !($dt < $best) }"; then best=$dt; fi
    done
    echo "$best"
}

echo "| checkpoint | method | seconds | × default |"
echo "|---|---|---|---|"
for preset in "gpt-oss-20b bf16" "qwen3-30b-a3b preset"; do
    set -- $preset
    dir=$(ckpt "$1" "$2") || exit 1
    cat "$dir"/*.safetensors > /dev/null   # warm page cache: every method reads the same bytes
    base=""
    for m in "${methods[@]}"; do
        name=${m%%|*}; extra=${m#*|}
        t=$(time_one "$dir" "$extra")
        case $t in
            failed*) echo "| $1 (1 layer) | $name | $t | |" ;;
            *) [ -z "$base" ] && base=$t
               echo "| $1 (1 layer) | $name | $t | $(awk "BEGIN { printf \"%.2f\", $t / $base }") |" ;;
        esac
    done
done
echo
echo "command: bench/bench_methods.sh --threads $threads --repeat $repeat ($(nproc) cores, $(uname -m))"
