#!/usr/bin/env bash
# Builds the libFuzzer harnesses (make fuzz) and runs each for FUZZ_SECONDS (default 20) over its
# committed seed corpus fuzz/corpus/<harness>/. New inputs go to build-fuzz/corpus/<harness>/ so the
# committed seeds stay small; crashes land in build-fuzz/crashes/. Exits non-zero if any harness
# found a crash. Usage: bash fuzz/run.sh [harness ...]   (default: all fuzz/fuzz_*.c)
set -uo pipefail
cd "$(dirname "$0")/.."

secs=${FUZZ_SECONDS:-20}
make -s fuzz || exit 2

harnesses=("$@")
if [ ${#harnesses[@]} -eq 0 ]; then
    for f in fuzz/fuzz_*.c; do harnesses+=("$(basename "$f" .c)"); done
fi

dict_for() {
    case "$1" in
        fuzz_config|fuzz_tokenizer) echo fuzz/config.dict ;;
        *) echo fuzz/safetensors.dict ;;
    esac
}

failed=()
for h in "${harnesses[@]}"; do
    work=build-fuzz/corpus/$h
    mkdir -p "$work" build-fuzz/crashes
    echo "== $h: ${secs}s"
    if ! "build-fuzz/$h" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
            -dict="$(dict_for "$h")" -artifact_prefix="build-fuzz/crashes/$h-" -print_final_stats=1 \
            "$work" "fuzz/corpus/$h" 2>"build-fuzz/$h.log"; then
        failed+=("$h")
        tail -n 40 "build-fuzz/$h.log"
        echo "FAIL $h"
    else
        grep -E "^(stat::number_of_executed_units|stat::new_units_added)|DONE" "build-fuzz/$h.log" | tail -n 3
        echo "ok   $h (${secs}s, no crash)"
    fi
done

echo "$(( ${#harnesses[@]} - ${#failed[@]} )) passed, ${#failed[@]} failed"
if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzz: crashes in ${failed[*]} (inputs under build-fuzz/crashes/)"
    exit 1
fi
