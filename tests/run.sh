#!/usr/bin/env bash
# Runs the whole test suite: unit tests (release and ASan/UBSan builds), the ThreadSanitizer
# stage (tests/tsan.sh), then the end-to-end
# tests that export fixtures and run them in ONNX Runtime. Ends with one "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0; failed=0; broken=()
run_binary() { # $1 = label, rest = command; adds the binary's own summary to the totals
    local label=$1; shift
    local out rc
    out=$("$@" 2>&1); rc=$?
    printf '%s\n' "$out" | sed "s|^|[$label] |"
    local line; line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n1)
    if [ -z "$line" ]; then
        failed=$((failed + 1)); broken+=("$label (exit $rc, no summary)")
        return
    fi
    local p f; p=${line%% passed*}; f=${line#*passed, }; f=${f%% failed*}
    passed=$((passed + p)); failed=$((failed + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then failed=$((failed + 1)); broken+=("$label (exit $rc)"); fi
}

for build in build build-asan; do
    for t in "$build"/tests/test_*; do
        [ -x "$t" ] || continue
        run_binary "$build/$(basename "$t")" "$t"
    done
done

# Data races: the threaded unit tests and conversions built with ThreadSanitizer (make tsan).
run_binary "tsan" bash tests/tsan.sh

for t in tests/e2e/*.test.sh tests/e2e/*.test.mjs; do
    [ -e "$t" ] || continue
    case "$t" in
        *.sh) run_binary "$t" bash "$t" ;;
        *.mjs) run_binary "$t" node "$t" ;;
    esac
done

# Fuzz stage: each libFuzzer harness for a bounded time under ASan/UBSan (FUZZ_SECONDS, default 20).
export FUZZ_SECONDS=${FUZZ_SECONDS:-20}
run_binary "fuzz" bash fuzz/run.sh

# Memcheck stage: plain build's unit tests and small conversions under Valgrind.
run_binary "valgrind" bash tests/valgrind.sh

for b in "${broken[@]}"; do echo "broken: $b"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
