#!/usr/bin/env bash
# Runs every unit test binary of the plain build, and real conversions of the small fixtures,
# under Valgrind memcheck: any invalid access or leak fails. Ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
VG=(valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect
    --show-leak-kinds=definite,indirect --track-fds=no)
passed=0; failed=0
check() { # $1 label, rest command
    local label=$1; shift
    local log; log=$(mktemp)
    if "${VG[@]}" "$@" >"$log" 2>&1; then
        echo "ok   valgrind $label"; passed=$((passed + 1))
    else
        echo "FAIL valgrind $label"; sed 's/^/    /' "$log" | tail -n 40; failed=$((failed + 1))
    fi
    rm -f "$log"
}
for t in build/tests/test_*; do
    [ -x "$t" ] || continue
    # The synthetic full-size writer test is I/O heavy; memcheck adds nothing there.
    check "$(basename "$t")" "$t"
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -x build/moe2onnx ]; then
    check "build gpt-oss-tiny int4 cpu" build/moe2onnx -q --threads 2 -i tests/fixtures/gpt-oss-tiny -o "$tmp/a" -p int4 -e cpu
    check "build qwen3-moe-tiny fp32 cpu" build/moe2onnx -q --threads 2 -i tests/fixtures/qwen3-moe-tiny -o "$tmp/b" -p fp32 -e cpu
    check "build gpt-oss-tiny mxfp4 cuda" build/moe2onnx -q --threads 2 -i tests/fixtures/gpt-oss-tiny -o "$tmp/c" -p int4 -e cuda --extra_options moe_quant_type=mxfp4
    check "verify gpt-oss-tiny int4 cpu" build/moe2onnx verify -i tests/fixtures/gpt-oss-tiny -o "$tmp/a"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
