#!/usr/bin/env bash
# ThreadSanitizer stage (part of `make test`, after `make tsan`): the unit tests that run the
# thread pool, the streaming writer and synth's writer threads, then threaded conversions of two
# fixtures and a threaded synth, all built with -fsanitize=thread. Any data race report fails
# (TSan's exit status 66). The other unit tests have no threads of their own and are left to the
# release and ASan stages, to keep the suite's time down.
set -uo pipefail
cd "$(dirname "$0")/.."
export TSAN_OPTIONS="exitcode=66 halt_on_error=0 ${TSAN_OPTIONS:-}"
B=build-tsan
passed=0; failed=0
ok()   { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }
check() { # LABEL COMMAND...: passes when the command exits 0 with no race report
    local label=$1; shift
    local out rc
    out=$("$@" 2>&1); rc=$?
    if [ "$rc" -eq 0 ] && ! grep -q "WARNING: ThreadSanitizer" <<<"$out"; then ok "$label"
    else fail "$label (exit $rc): $(grep -m3 -A6 "WARNING: ThreadSanitizer" <<<"$out" | head -c 1500)"; fi
}

if [ ! -x "$B/moe2onnx" ]; then fail "$B/moe2onnx is missing (run make tsan)"; echo "$passed passed, $failed failed"; exit 1; fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/m2o-tsan.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

for t in test_graph_pool test_convert_stream test_synth; do
    check "$t" "$B/tests/$t"
done
for f in qwen3-moe-tiny gpt-oss-tiny; do
    check "convert $f --threads 4" "$B/moe2onnx" -q --threads 4 -i "tests/fixtures/$f" -o "$tmp/$f" -p int4 -e cpu
done
check "synth --threads 4" "$B/moe2onnx" synth -q --preset qwen3-moe-tiny --threads 4 -o "$tmp/synth"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
