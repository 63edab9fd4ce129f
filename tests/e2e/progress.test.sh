#!/usr/bin/env bash
# The progress display (project issue 16, item 9): on a terminal, one line redrawn in place that
# never reaches the terminal's last column (a wrapped line scrolls at every redraw); with stderr
# not a terminal, a plain line every M2O_PROGRESS_SECONDS (default 5) and no carriage returns;
# nothing with -q. Plain bash + coreutils + script(1); prints "ok"/"FAIL" and "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
export LC_ALL=C
BIN=${M2O_BIN:-build/moe2onnx}
passed=0; failed=0
ok()   { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/m2o-progress.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

# gpt-oss-20b shapes with one layer, sparse: a conversion of a few seconds with no disk cost
"$BIN" synth --sparse -q --preset gpt-oss-20b --layers 1 -o "$tmp/big" >/dev/null 2>&1 || fail "synth"

M2O_PROGRESS_SECONDS=0.5 "$BIN" --threads 2 -i "$tmp/big" -o "$tmp/log" -p int4 -e cpu >/dev/null 2>"$tmp/stderr"
lines=$(grep -c '^moe2onnx: \[[#.]*\] *[0-9]*% ' "$tmp/stderr")
others=$(grep -vc '^moe2onnx: \[[#.]*\] *[0-9]*% ' "$tmp/stderr")
if [ "$lines" -ge 1 ] && [ "$others" -eq 0 ] && ! grep -q $'\r' "$tmp/stderr"; then
    ok "stderr not a terminal: $lines plain progress lines, no carriage return"
else
    fail "stderr not a terminal: $lines progress lines, $others other lines: $(head -c 400 "$tmp/stderr" | cat -A)"
fi

M2O_PROGRESS_SECONDS=0.5 "$BIN" -q --threads 2 -i "$tmp/big" -o "$tmp/quiet" -p int4 -e cpu >/dev/null 2>"$tmp/stderr"
if [ ! -s "$tmp/stderr" ]; then ok "-q: no progress lines"; else fail "-q: stderr $(head -c 300 "$tmp/stderr")"; fi

if command -v script >/dev/null; then
    # a 60-column pseudo-terminal: every redrawn line must fit in 59 columns
    script -qfec "stty cols 60; $BIN --threads 2 -i tests/fixtures/gpt-oss-tiny -o $tmp/tty -p int4 -e cpu >/dev/null" \
        /dev/null >"$tmp/tty.out" 2>&1
    drawn=$(tr '\r' '\n' <"$tmp/tty.out" | grep -c '^\[[#.]*\]')
    widest=$(tr '\r' '\n' <"$tmp/tty.out" | awk '{ if (length($0) > w) w = length($0) } END { print w + 0 }')
    if [ "$drawn" -ge 1 ] && [ "$widest" -le 59 ]; then
        ok "60-column terminal: $drawn redraws, widest line $widest columns"
    else
        fail "60-column terminal: $drawn redraws, widest line $widest columns (limit 59)"
    fi
else
    echo "skip terminal width: script(1) is not installed"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
