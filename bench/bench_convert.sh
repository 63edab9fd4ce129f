#!/usr/bin/env bash
# Conversion benchmark (issue 6): in one run on one machine,
#   (a) conversion time of a synthetic 2-layer gpt-oss-20b checkpoint (real widths, 32 experts)
#       as a ratio of the time to read its files once from a warm page cache (cat > /dev/null),
#       for MXFP4 -> fp4 passthrough, MXFP4 -> int4 CUTLASS, BF16 -> int4 CUTLASS and
#       BF16 -> int4 raw (CPU layout);
#   (c) peak resident memory (ru_maxrss, mapped checkpoint pages included) and peak anonymous
#       memory (sampled RssAnon high-water) for 2, 4 and 8 layers (int4 CUTLASS from MXFP4);
# and prints both as Markdown tables with the exact commands.
#
# usage: bench/bench_convert.sh [--threads N] [--work DIR] [--out DIR] [--layers "2 4 8"]
#                               [--preset gpt-oss-20b] [--repeat R] [--keep] [--skip-memory]
#   --threads N   converter threads (default: all cores); with N below the core count, cat and
#                 the converter are both pinned to cores 0..N-1 with taskset
#   --work DIR    where the synthetic checkpoints go (default bench-work/ in the repository;
#                 about 9 GB for the 8-layer run, 5.6 GB + 3.3 GB for the 2-layer ones)
#   --out DIR     where outputs are written (default /dev/shm when it has room: a RAM file system,
#                 so the numbers are the converter's and not the disk's; a disk directory also
#                 times the fsync of the output)
#   --repeat R    best of R runs for cat and each conversion (default 3)
#   --keep        keep the synthetic checkpoints for the next run (they are reused when present)
# Needs build/moe2onnx (make). Prints progress on stderr, tables on stdout.
set -uo pipefail
cd "$(dirname "$0")/.."

threads=$(nproc); work=bench-work; out=""; layers="2 4 8"; preset=gpt-oss-20b; repeat=3
keep=0; memory=1
while [ $# -gt 0 ]; do
    case $1 in
        --threads) threads=$2; shift 2 ;;
        --work) work=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --layers) layers=$2; shift 2 ;;
        --preset) preset=$2; shift 2 ;;
        --repeat) repeat=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        --skip-memory) memory=0; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "bench_convert: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
bin=build/moe2onnx
[ -x "$bin" ] || { echo "bench_convert: $bin is missing: run make" >&2; exit 1; }
mkdir -p "$work" || exit 1
if [ -z "$out" ]; then
    if [ -d /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR == 2 { print $4 }')" -gt $((8 << 20)) ]; then
        out=/dev/shm/m2o-bench-$$
    else
        out=$work/out
    fi
fi
mkdir -p "$out" || exit 1
trap 'rm -rf "$out/x"; [ "$out" = "/dev/shm/m2o-bench-$$" ] && rmdir "$out" 2>/dev/null' EXIT

pin=()
if [ "$threads" -lt "$(nproc)" ]; then pin=(taskset -c "0-$((threads - 1))"); fi
log() { echo "bench_convert: $*" >&2; }
now() { date +%s.%N; }

# synth NAME LAYERS EXPERTS: checkpoint directory on stdout, made once
synth() {
    local dir="$work/$1-$3-L$2"
    if [ ! -f "$dir/config.json" ]; then
        log "synthesizing $dir"
        "$bin" synth --preset "$1" --layers "$2" --experts "$3" --threads "$threads" -q -o "$dir" \
            >&2 || { log "synth failed"; exit 1; }
    fi
    echo "$dir"
}

input_bytes() { du -cb "$1"/*.safetensors | tail -n1 | cut -f1; }

# best of $repeat: seconds to read every safetensors file of $1 once, page cache warm
cat_time() {
    local best="" t0 t1 t
    cat "$1"/*.safetensors >/dev/null # warm the cache
    for _ in $(seq "$repeat"); do
        t0=$(now); "${pin[@]}" cat "$1"/*.safetensors >/dev/null; t1=$(now)
        t=$(echo "$t1 - $t0" | bc -l)
        if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best=$t; fi
    done
    printf '%.3f' "$best"
}

# convert DIR ARGS...: best wall time over $repeat runs (output removed before each, not timed),
# and the peak RSS / anonymous MB of that run, as "seconds rss anon"
convert() {
    local dir=$1; shift
    local best="" best_rss="" best_anon="" t0 t1 t line
    for _ in $(seq "$repeat"); do
        rm -rf "$out/x"; sync
        t0=$(now)
        line=$("${pin[@]}" "$bin" -q --threads "$threads" -i "$dir" -o "$out/x" "$@" 2>&1 | tail -n1)
        t1=$(now)
        [ -s "$out/x/model.onnx.data" ] || { log "conversion failed: $line"; echo "fail - -"; return; }
        t=$(echo "$t1 - $t0" | bc -l)
        local rss anon
        rss=$(printf '%s\n' "$line" | sed -n 's/.*peak RSS \([0-9]*\) MB.*/\1/p')
        anon=$(printf '%s\n' "$line" | sed -n 's/.*(anonymous \([0-9]*\) MB).*/\1/p')
        if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then
            best=$t; best_rss=$rss; best_anon=$anon
        fi
    done
    rm -rf "$out/x"
    printf '%.3f %s %s' "$best" "$best_rss" "$best_anon"
}

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
mem=$(free -g | awk '/^Mem:/ { print $2 " GiB" }')
fs=$(df -PT "$out" | awk 'NR == 2 { print $2 }')
machine="$(nproc) cores ($cpu), $mem, $(uname -r), output on $fs"
pinned=""; [ ${#pin[@]} -gt 0 ] && pinned="taskset -c 0-$((threads - 1)) "

mx=$(synth "$preset" 2 mxfp4) || exit 1
bf=$(synth "$preset" 2 bf16) || exit 1

echo "Machine: $machine; --threads $threads; best of $repeat runs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| case | input GB | cat s | conversion s | ratio | peak RSS MB | peak anon MB | command |"
echo "|---|---:|---:|---:|---:|---:|---:|---|"
cases=(
    "MXFP4 -> fp4 passthrough|$mx|-p int4 -e cuda --extra_options moe_quant_type=mxfp4"
    "MXFP4 -> int4 CUTLASS|$mx|-p int4 -e cuda"
    "BF16 -> int4 CUTLASS|$bf|-p int4 -e cuda"
    "BF16 -> int4 raw (CPU)|$bf|-p int4 -e cpu"
)
declare -A cat_s
for c in "${cases[@]}"; do
    IFS='|' read -r label dir args <<<"$c"
    [ -n "${cat_s[$dir]:-}" ] || { log "timing cat of $dir"; cat_s[$dir]=$(cat_time "$dir"); }
    log "converting: $label"
    read -r secs rss anon <<<"$(convert "$dir" $args)"
    gb=$(echo "scale=2; $(input_bytes "$dir") / 1000000000" | bc -l)
    ratio=$( [ "$secs" = fail ] && echo - || printf '%.1fx' "$(echo "$secs / ${cat_s[$dir]}" | bc -l)")
    echo "| $label | $gb | ${cat_s[$dir]} | $secs | $ratio | $rss | $anon | \`${pinned}$bin --threads $threads -i $dir -o OUT $args\` |"
done

if [ "$memory" -eq 1 ]; then
    echo
    echo "| layers | input GB | conversion s | peak RSS MB | peak anon MB | command |"
    echo "|---:|---:|---:|---:|---:|---|"
    for L in $layers; do
        dir=$(synth "$preset" "$L" mxfp4) || exit 1
        log "memory: $L layers"
        rsave=$repeat; repeat=1
        read -r secs rss anon <<<"$(convert "$dir" -p int4 -e cuda)"
        repeat=$rsave
        gb=$(echo "scale=2; $(input_bytes "$dir") / 1000000000" | bc -l)
        echo "| $L | $gb | $secs | $rss | $anon | \`${pinned}$bin --threads $threads -i $dir -o OUT -p int4 -e cuda\` |"
        [ "$keep" -eq 1 ] || [ "$L" -eq 2 ] || rm -rf "$dir"
    done
fi
[ "$keep" -eq 1 ] || rm -rf "$mx" "$bf"
