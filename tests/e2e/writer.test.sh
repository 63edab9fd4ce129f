#!/usr/bin/env bash
# End-to-end check of the ONNX writer: build/tests/test_graph_ort writes small models (external
# streamed and static initializers, inline ones, a com.microsoft MatMulNBits with hand-packed
# 4-bit codes, an IR 11 model with a FLOAT8E8M0 tensor), then lib/writer_check.mjs runs them in
# onnxruntime-node and compares the outputs with values it computes itself.
# Prints "ok"/"FAIL" per check and a final "N passed, N failed" line.
set -uo pipefail
cd "$(dirname "$0")/../.."

passed=0; failed=0
ok()   { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }
finish() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit $?; }

bin=build/tests/test_graph_ort
tmp=$(mktemp -d "${TMPDIR:-/tmp}/m2o-writer-e2e.XXXXXX") || { fail "mktemp"; finish; }
trap 'rm -rf "$tmp"' EXIT

if [ ! -x "$bin" ]; then fail "$bin is missing (run make)"; finish; fi
if out=$(M2O_ORT_DIR=$tmp "$bin" write_ort_models 2>&1); then
    ok "writer program wrote the models"
else
    fail "writer program: $out"; finish
fi

if ! command -v node >/dev/null; then fail "node is not installed (scripts/setup.sh)"; finish; fi
out=$(node tests/e2e/lib/writer_check.mjs "$tmp" 2>&1); rc=$?
printf '%s\n' "$out" | grep -v -E '^[0-9]+ passed, [0-9]+ failed$'
summary=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -n1)
if [ -z "$summary" ]; then
    fail "writer_check.mjs ended without a summary (exit $rc)"
else
    p=${summary%% passed*}; f=${summary#*passed, }; f=${f%% failed*}
    passed=$((passed + p)); failed=$((failed + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then fail "writer_check.mjs exited $rc"; fi
fi
finish
