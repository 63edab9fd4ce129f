#!/usr/bin/env bash
# Memcheck stage (`make valgrind`; also part of `make test`). Under Valgrind memcheck, where any
# invalid access or definite/indirect leak fails:
#   - every unit test binary of the plain build;
#   - real conversions of every fixture in tests/fixtures (CPU and CUDA layouts) and `verify` of
#     each result; a fixture whose architecture has no graph builder yet is reported as "skip"
#     (the plain binary says so), any other failure fails;
#   - the bad-input catalogue tests/e2e/errors.test.sh with the binary under memcheck
#     (tests/tools/valgrind-moe2onnx.sh), so every error path is leak-checked end to end.
# Ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
VG=(valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect
    --show-leak-kinds=definite,indirect --track-fds=no)
BIN=build/moe2onnx
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
    check "$(basename "$t")" "$t"
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ ! -x "$BIN" ]; then
    echo "FAIL $BIN is missing (run make)"; failed=$((failed + 1))
    echo "$passed passed, $failed failed"; exit 1
fi

# convert LABEL FIXTURE ARGS...: memcheck conversion into $tmp/LABEL, then memcheck verify of it.
convert() {
    local label=$1 fixture=$2; shift 2
    local out=$tmp/$label
    # Without memcheck first: an architecture with no builder yet is a skip, not a failure.
    if ! "$BIN" -q --threads 2 -i "tests/fixtures/$fixture" -o "$out" "$@" >"$tmp/plain.log" 2>&1; then
        if grep -q "no graph builder for this architecture yet" "$tmp/plain.log"; then
            echo "skip valgrind build $label: $(tail -n1 "$tmp/plain.log")"
        else
            echo "FAIL build $label (without valgrind): $(tail -n1 "$tmp/plain.log")"
            failed=$((failed + 1))
        fi
        rm -rf "$out"
        return
    fi
    rm -rf "$out"
    check "build $label" "$BIN" -q --threads 2 -i "tests/fixtures/$fixture" -o "$out" "$@"
    [ -d "$out" ] && check "verify $label" "$BIN" verify -i "tests/fixtures/$fixture" -o "$out"
    rm -rf "$out"
}

convert gpt-oss-tiny-int4-cpu gpt-oss-tiny -p int4 -e cpu
convert gpt-oss-tiny-mxfp4-cuda gpt-oss-tiny -p int4 -e cuda --extra_options moe_quant_type=mxfp4
convert gpt-oss-bf16-tiny-int4-cpu gpt-oss-bf16-tiny -p int4 -e cpu
convert gpt-oss-bf16-tiny-int8-cuda gpt-oss-bf16-tiny -p int4 -e cuda --extra_options moe_quant_type=int8
convert gpt-oss-bf16-tiny-fp32-cpu gpt-oss-bf16-tiny -p fp32 -e cpu
convert qwen2-moe-tiny-int4-cuda qwen2-moe-tiny -p int4 -e cuda
convert qwen3_5-moe-tiny-fp16-cuda qwen3_5-moe-tiny -p fp16 -e cuda
# every fixture (those above included, and any added later) at least once as int4 on CPU
for d in tests/fixtures/*/; do
    f=$(basename "$d")
    case $f in gpt-oss-tiny|gpt-oss-bf16-tiny) continue ;; esac
    [ -f "$d/config.json" ] || continue
    convert "$f-int4-cpu" "$f" -p int4 -e cpu
done

# Every error path of the catalogue, with the binary under memcheck (exit 99 = memcheck error).
mkdir -p "$tmp/vglogs"
log=$tmp/errors.log
M2O_VG_LOGDIR=$tmp/vglogs M2O_BIN=tests/tools/valgrind-moe2onnx.sh bash tests/e2e/errors.test.sh >"$log" 2>&1
rc=$?
if [ "$rc" -eq 0 ]; then
    echo "ok   valgrind errors catalogue ($(tail -n1 "$log"))"; passed=$((passed + 1))
else
    echo "FAIL valgrind errors catalogue"; grep -v '^ok' "$log" | sed 's/^/    /' | head -n 40
    for f in "$tmp"/vglogs/*; do [ -s "$f" ] && sed 's/^/    /' "$f" | head -n 40; done
    failed=$((failed + 1))
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
